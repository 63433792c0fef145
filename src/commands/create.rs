//! `tenantctl create`: register, create the schema, grant, migrate: all in one
//! transaction per tenant, so a tenant exists completely or not at all.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;

use crate::cli::CreateArgs;
use crate::commands::session::{dedup, now_epoch, Session};
use crate::domain::exit::bad_input;
use crate::domain::migration_set::MigrationSet;
use crate::domain::names::quote_ident;
use crate::domain::settings::HOME_SERVER;
use crate::fleet::{self, Interrupt, Job};
use crate::output::listed;
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::pg::connect::{self, Target};
use crate::pg::txn::{Step, Tx};
use crate::registry::{self, locks, Placement};
use crate::tenant::apply::{self, apply_pending, ApplyError, History};
use crate::tenant::citus::{Backend, Work};
use crate::tenant::grants;
use crate::tenant::no_transaction;
use crate::tenant::placement;
use crate::tenant::seed::Seed;

use super::report;

struct NewTenant {
    slug: String,
    schema: String,
    display: Option<String>,
}

impl Job for NewTenant {
    fn slug(&self) -> &str {
        &self.slug
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn start_version(&self) -> i64 {
        0
    }
}

struct Shared {
    /// Connections to home (the registry, and the schemas of tenants created there).
    pool: Pool,
    /// Set when the tenants are created elsewhere than the registry's database.
    elsewhere: Option<Elsewhere>,
    set: MigrationSet,
    app_role: Option<String>,
    /// With per-tenant roles: the server's major version (it decides the GRANT form).
    tenant_roles: Option<i32>,
    if_not_exists: bool,
    /// `--seed` or `[tenants] seed`, run in each tenant after its migrations.
    seed: Option<Seed>,
    /// `--label`s, the same for every tenant of the run.
    labels: std::collections::BTreeMap<String, String>,
    /// Plain PostgreSQL or a Citus coordinator, where the tenants go (home, or
    /// `elsewhere`): how a tenant's transaction starts.
    backend: Backend,
}

/// Where the tenants of a `create --server NAME` / `--own-database` go.
struct Elsewhere {
    server: String,
    /// The server's own database (its url's): where the schemas go without --own-database,
    /// and where `CREATE DATABASE` runs with it.
    target: Target,
    pool: Pool,
    own_database: bool,
    /// What the tenants' database is: the server's (a Citus coordinator, say), or plain
    /// PostgreSQL for a database of their own (made without the citus extension).
    backend: Backend,
}

impl Elsewhere {
    fn placement(&self, job: &NewTenant) -> Placement {
        Placement {
            server: self.server.clone(),
            database: if self.own_database {
                job.schema.clone()
            } else {
                self.target
                    .config
                    .get_dbname()
                    .unwrap_or_default()
                    .to_string()
            },
        }
    }
}

pub async fn run(s: &Session, args: &CreateArgs) -> Result<u8> {
    let slugs = dedup(&args.slugs);
    if args.name.is_some() && slugs.len() > 1 {
        // One display name for several tenants is surely a mistake, and pairing several
        // --name flags with slugs by position would be one waiting to happen.
        return Err(bad_input(format!(
            "--name applies to a single tenant, and {} were given; nothing was created \
             (create each named tenant on its own: tenantctl create SLUG --name NAME)",
            slugs.len()
        )));
    }
    let schemas = s.schemas_for(&slugs)?;
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let shared_set = s.shared_set()?;
    let seed = load_seed(s, args, &set)?;
    let concurrency = s.concurrency().min(slugs.len().max(1));
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| s.settings.default_server.clone());
    if !s.servers.knows(&server) {
        return Err(bad_input(format!(
            "unknown server '{}' (configured: {}); nothing was created",
            server.escape_debug(),
            s.servers.names().join(", ")
        )));
    }
    let at_home = server == HOME_SERVER && !args.own_database;
    if !at_home && no_transaction::first_stop(&set, set.latest()) != set.latest() {
        return Err(bad_input(
            "the migrations hold a file that runs alone (-- no-transaction), which create \
             cannot yet run on another server or in a tenant's own database; nothing was created",
        ));
    }
    let (pool, conn) = s.connect(concurrency + 1).await?;
    let concurrency = s.fit_concurrency(&conn, concurrency, false).await?;
    let elsewhere = match at_home {
        true => None,
        false => Some(prepare_elsewhere(s, &server, args.own_database, concurrency).await?),
    };
    // Where the tenants go is Citus (home, or a [servers.NAME] coordinator): what the
    // migrations hold that a distributed schema cannot run, and per-tenant roles, refused
    // before anything else.
    let place = elsewhere.as_ref().map_or(s.backend(), |e| &e.backend);
    let (backend, needs) = place.check_migrations(&set, set.latest())?;
    backend.check_tenant_roles(s.settings.per_tenant_roles)?;
    let app_role = s.check_app_role(&conn).await?;
    finish_crashed(s, &conn, &slugs).await?;
    let registered = precheck(&conn, &slugs, &schemas, args.if_not_exists, at_home).await?;
    // Roles and the tenant's place are checked where the tenants will live.
    let place_conn = match &elsewhere {
        Some(e) => Some(e.pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let checked = place_conn.as_ref().unwrap_or(&conn);
    if let Some(e) = &elsewhere {
        precheck_elsewhere(s, checked, e, &slugs, &schemas, &registered).await?;
    }
    let tenant_roles = check_tenant_roles(s, checked, &schemas, &registered, &slugs).await?;
    if let Some(sh) = &shared_set {
        // A tenant's migrations may reference the shared tables: those come first, on home
        // and on the server the tenants go to.
        let mut places = vec![&conn];
        places.extend(place_conn.as_ref());
        for c in places {
            let r = super::migrate::apply_shared(c, sh, s.lock_timeout).await;
            if let Some(e) = &r.error {
                anyhow::bail!(
                    "the shared migrations in schema {} failed, so no tenant was created: {e}",
                    r.schema
                );
            }
        }
    }
    // After the shared migrations, which may create the reference tables it looks for.
    backend.check_on_server(checked, &needs).await?;
    if let Some(role) = &app_role {
        registry::grant_read(&conn, role).await?;
    }
    drop(place_conn);
    drop(conn);

    let mut outcomes = Vec::new();
    let mut jobs = Vec::new();
    for (slug, schema) in slugs.into_iter().zip(schemas) {
        if registered.contains(&slug) {
            outcomes.push(TenantOutcome::skipped(&slug, &schema, 0, "already exists"));
        } else {
            jobs.push(NewTenant {
                slug,
                schema,
                display: args.name.clone(),
            });
        }
    }
    let shared = Arc::new(Shared {
        pool,
        elsewhere,
        set,
        app_role,
        tenant_roles,
        if_not_exists: args.if_not_exists,
        seed,
        labels: args.labels.iter().cloned().collect(),
        backend,
    });
    let budget = fleet::Budget::from_flags(false, args.max_failures, jobs.len());
    let progress = Progress::new("create", jobs.len(), s.json());
    let interrupt = Interrupt::listen();
    outcomes.extend(
        fleet::run_budgeted(jobs, concurrency, &budget, &interrupt, &progress, |job| {
            let shared = shared.clone();
            async move { create_one(&shared, job).await }
        })
        .await,
    );
    progress.finish();
    report::print("create", s, None, &outcomes, shared.set.latest());
    Ok(report::exit_code(&outcomes, &interrupt))
}

/// `--seed`, else `[tenants] seed`: read and checked (exit 2 before anything changes). A
/// seed runs in the creating transaction, after the migrations, so a folder with a file
/// that must run outside a transaction (`-- no-transaction`) cannot have one.
fn load_seed(s: &Session, args: &CreateArgs, set: &MigrationSet) -> Result<Option<Seed>> {
    let Some(path) = args.seed.as_ref().or(s.settings.seed.as_ref()) else {
        return Ok(None);
    };
    let seed = Seed::load(path)?;
    if let Some(m) = set.next_no_transaction(0, set.latest()) {
        return Err(bad_input(format!(
            "seed file {} runs in the transaction that creates the tenant, after all of its \
             migrations, but migration {m} must run outside a transaction \
             (`-- no-transaction`); create the tenants without the seed and load it with \
             tenantctl exec; nothing was created",
            seed.name
        )));
    }
    Ok(Some(seed))
}

/// Refuses (exit 2, nothing changed) tenants that exist unless --if-not-exists, and schemas
/// that exist without a registry row. Returns the slugs already registered.
async fn precheck(
    conn: &deadpool_postgres::Object,
    slugs: &[String],
    schemas: &[String],
    if_not_exists: bool,
    at_home: bool,
) -> Result<Vec<String>> {
    let registered: Vec<String> = registry::some(conn, slugs)
        .await?
        .into_iter()
        .map(|t| t.slug)
        .collect();
    if !registered.is_empty() && !if_not_exists {
        let exist = if registered.len() == 1 {
            "exists"
        } else {
            "exist"
        };
        return Err(bad_input(format!(
            "{} already {exist}; nothing was created (use --if-not-exists to skip existing tenants)",
            listed("tenant", &registered),
        )));
    }
    if !at_home {
        // The schemas are looked for where they will be made (precheck_elsewhere).
        return Ok(registered);
    }
    let orphans: Vec<String> = registry::existing_schemas(conn, schemas)
        .await?
        .into_iter()
        .filter(|schema| {
            let i = schemas
                .iter()
                .position(|x| x == schema)
                .expect("schema from our list");
            !registered.contains(&slugs[i])
        })
        .collect();
    if !orphans.is_empty() {
        let (exist, them) = if orphans.len() == 1 {
            ("exists", "it")
        } else {
            ("exist", "them")
        };
        return Err(bad_input(format!(
            "{} already {exist} but no tenant is registered for {them}; nothing was created \
             (drop or rename {them} first)",
            listed("schema", &orphans),
        )));
    }
    Ok(registered)
}

/// Removes what a create elsewhere that never finished left behind (its tenant still
/// `provisioning` on another server or in its own database, and nobody holding its lock:
/// its creator is gone), so this run creates the tenant anew. A row whose lock is held
/// belongs to a create still running, and is left alone (the precheck then refuses it).
async fn finish_crashed(
    s: &Session,
    conn: &deadpool_postgres::Object,
    slugs: &[String],
) -> Result<()> {
    let home_db = s.home_database().to_string();
    let crashed: Vec<registry::Tenant> = registry::some(conn, slugs)
        .await?
        .into_iter()
        .filter(|t| t.state == "provisioning" && !t.is_home(&home_db))
        .filter(|t| s.servers.knows(&t.server))
        .collect();
    for t in crashed {
        if !locks::try_hold_tenant(conn, &t.schema)
            .await
            .context("cannot take a tenant's lock")?
        {
            continue;
        }
        let cleaned = remove_remains(s, conn, &t).await;
        let _ = locks::release_tenant(conn, &t.schema).await;
        cleaned.with_context(|| {
            format!(
                "tenant {} was left `provisioning` on server {} by a create that did not \
                 finish, and its remains could not be removed; nothing was created",
                t.slug, t.server
            )
        })?;
        crate::errln!(
            "note: tenant {} was left `provisioning` on server {} by a create that did not \
             finish; what it made was removed, and it is created anew",
            t.slug,
            t.server
        );
    }
    Ok(())
}

/// Drops a crashed creation's database (its own, named like its schema) or its schema and
/// role, then its registry row.
async fn remove_remains(
    s: &Session,
    home: &deadpool_postgres::Object,
    t: &registry::Tenant,
) -> Result<()> {
    let target = s.servers.target(&t.server)?;
    let pool = connect::pool(&target, 1)?;
    let admin = connect::first_connection(&pool, &target).await?;
    let own_database = t.database == t.schema;
    if own_database {
        placement::drop_database(&admin, &t.database).await?;
        if let Some(role) = &t.role {
            placement::drop_role(&admin, role).await?;
        }
    } else {
        let in_db = connect::pool(&s.servers.target_db(&t.server, &t.database)?, 1)?;
        let c = in_db.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        placement::drop_schema(&c, &t.schema, t.role.as_deref()).await?;
    }
    registry::unregister_provisioning(home, &t.slug).await
}

/// Connects to the server the tenants go to: an unreachable server, or a password variable
/// that is not set, fails the command before anything is changed.
async fn prepare_elsewhere(
    s: &Session,
    server: &str,
    own_database: bool,
    concurrency: usize,
) -> Result<Elsewhere> {
    let target = s.servers.target(server)?;
    let pool = connect::pool(&target, concurrency)?;
    let first = connect::first_connection(&pool, &target)
        .await
        .with_context(|| format!("cannot reach server {server}; nothing was created"))?;
    let database = target.config.get_dbname().unwrap_or_default().to_string();
    // A Citus worker is refused here, naming its coordinator.
    s.detect_place(server, &database, &first).await?;
    let backend = match own_database {
        true => Backend::Plain,
        false => s.backend_at(server, &database),
    };
    drop(first);
    Ok(Elsewhere {
        server: server.to_string(),
        target,
        pool,
        own_database,
        backend,
    })
}

/// Refuses (exit 2, nothing changed) a schema, or with --own-database a database, that
/// already exists on the target server, and a missing application role there (roles
/// belong to each server).
async fn precheck_elsewhere(
    s: &Session,
    conn: &deadpool_postgres::Object,
    e: &Elsewhere,
    slugs: &[String],
    schemas: &[String],
    registered: &[String],
) -> Result<()> {
    let new: Vec<String> = slugs
        .iter()
        .zip(schemas)
        .filter(|(slug, _)| !registered.contains(slug))
        .map(|(_, schema)| schema.clone())
        .collect();
    let (taken, what) = if e.own_database {
        (placement::existing_databases(conn, &new).await?, "database")
    } else {
        (registry::existing_schemas(conn, &new).await?, "schema")
    };
    if !taken.is_empty() {
        return Err(bad_input(format!(
            "{} already on server {}; nothing was created (drop or rename it first)",
            listed(what, &taken),
            e.server
        )));
    }
    if let Some(role) = &s.settings.app_role {
        if !registry::role_exists(conn, role).await? {
            return Err(bad_input(format!(
                "application role '{role}' does not exist on server {} (roles belong to each \
                 server); create it there (CREATE ROLE \"{role}\" LOGIN); nothing was created",
                e.server
            )));
        }
    }
    Ok(())
}

/// With per-tenant roles: the application role must not inherit them (PostgreSQL 15 has
/// no per-grant INHERIT), and no new tenant's role may exist already (roles are shared by
/// every database of the cluster). Returns the server's major version when enabled.
async fn check_tenant_roles(
    s: &Session,
    conn: &deadpool_postgres::Object,
    schemas: &[String],
    registered: &[String],
    slugs: &[String],
) -> Result<Option<i32>> {
    let (true, Some(app)) = (s.settings.per_tenant_roles, s.settings.app_role.as_deref()) else {
        return Ok(None);
    };
    let major = crate::commands::session::check_app_role_noinherit(conn, app).await?;
    for (slug, role) in slugs.iter().zip(schemas) {
        if !registered.contains(slug) && registry::role_exists(conn, role).await? {
            return Err(bad_input(format!(
                "role '{role}' for tenant {slug} already exists (roles are shared by every database \
                 of the cluster); nothing was created (use another schema_prefix)"
            )));
        }
    }
    Ok(Some(major))
}

async fn create_one(shared: &Shared, job: NewTenant) -> TenantOutcome {
    let started = Instant::now();
    let epoch = now_epoch();
    let client = match shared.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return TenantOutcome::failed(&job.slug, &job.schema, 0, format!("no connection: {e}"))
        }
    };
    let provisioned = match &shared.elsewhere {
        Some(e) => provision_elsewhere(&client, shared, e, &job).await,
        None => provision(&client, shared, &job).await,
    };
    match provisioned {
        Ok(Some(version))
            if shared
                .set
                .next_no_transaction(version, shared.set.latest())
                .is_some() =>
        {
            finish_alone(&client, shared, &job, version, started, epoch).await
        }
        Ok(Some(version)) => created(shared, &job, version).took(started.elapsed()),
        Ok(None) => TenantOutcome::skipped(
            &job.slug,
            &job.schema,
            0,
            "already exists (created concurrently)",
        ),
        Err(e) => {
            let msg = format!("{e}; nothing was created");
            if let Some(m) = e.failed_migration() {
                let _ = registry::record_failed_attempt(&client, &job.slug, &msg, &m, epoch).await;
            }
            TenantOutcome::failed(&job.slug, &job.schema, 0, msg).took(started.elapsed())
        }
    }
}

/// A tenant created at `version`, with every migration of the folder applied to it.
fn created(shared: &Shared, job: &NewTenant, version: i64) -> TenantOutcome {
    let mut o = TenantOutcome::new(&job.slug, &job.schema, Outcome::Applied, 0, version);
    o.migrations = shared
        .set
        .migrations
        .iter()
        .map(|m| m.to_string())
        .collect();
    o
}

/// The migrations from the first one that runs alone (`-- no-transaction`) on, after the
/// creating transaction committed the tenant `provisioning` at `version`: as `migrate`
/// runs them (see `no_transaction`); the last step marks the tenant `active`. A failure
/// leaves it registered, `failed` at the version reached, with its error, for `migrate`.
async fn finish_alone(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    job: &NewTenant,
    version: i64,
    started: Instant,
    epoch: f64,
) -> TenantOutcome {
    let run = no_transaction::TenantRun {
        slug: &job.slug,
        schema: &job.schema,
        set: &shared.set,
        target: shared.set.latest(),
        lock_timeout: None,
        home: None,
        backend: &shared.backend,
    };
    match no_transaction::run(client, &run, no_transaction::Start::Registry(version)).await {
        Ok(reached) => created(shared, job, reached.version).took(started.elapsed()),
        Err(stopped) => {
            let msg = format!(
                "{stopped}; the tenant was created and left `failed` at version {}: run \
                 `tenantctl migrate {}` once the cause is fixed",
                stopped.reached.version, job.slug
            );
            let failed = stopped.error.failed_migration();
            let _ = registry::record_failure(client, &job.slug, &msg, failed, epoch).await;
            let mut o = TenantOutcome::failed(&job.slug, &job.schema, 0, msg);
            o.to_version = stopped.reached.version;
            o.took(started.elapsed())
        }
    }
}

/// The tenant's whole creation, in one transaction sent in one flight: the registry row,
/// the schema, grants, lock, the migrations (the new schema has no history to read), grants,
/// registry update and COMMIT. `None` when the slug was registered by someone else in the
/// meantime (the registry insert waits for that creator's commit, then fails).
async fn provision(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    job: &NewTenant,
) -> Result<Option<i64>, ApplyError> {
    // The role that gets the tenant's data privileges, and the DDL creating it if it is new.
    let (data_role, role_ddl, tenant_role) = match (&shared.app_role, shared.tenant_roles) {
        (Some(app), Some(major)) => (
            Some(job.schema.as_str()),
            grants::create_tenant_role(&job.schema, app, major),
            Some(job.schema.as_str()),
        ),
        (app, _) => (app.as_deref(), String::new(), None),
    };
    let mut tx = Tx::begin(client);
    shared.backend.begin(&mut tx, Work::Create);
    tx.queue_sql(registry::insert_provisioning(
        &job.slug,
        &job.schema,
        job.display.as_deref(),
        tenant_role,
        &shared.labels,
    ))
    .await?;
    tx.queue(
        Step::Sql("cannot create the schema"),
        format!(
            "{role_ddl}CREATE SCHEMA {};\n{}",
            quote_ident(&job.schema),
            grants::before_migrations(&job.schema, data_role)
        ),
    );
    // Everything, unless a migration must run alone: then what comes before it (and the
    // tenant stays `provisioning` until `finish_alone` is done).
    let latest = shared.set.latest();
    let stop = no_transaction::first_stop(&shared.set, latest);
    let applied =
        apply_pending(&mut tx, &job.schema, &shared.set, stop, None, History::New).await?;
    if let Some(seed) = &shared.seed {
        seed.queue(&mut tx, &job.slug, &job.schema, job.display.as_deref())
            .await?;
    }
    let after = grants::after_create(&job.schema, data_role);
    if !after.is_empty() {
        tx.queue(Step::Sql("cannot apply the grants"), after);
    }
    tx.queue_sql(registry::record_step(
        &job.slug,
        applied.version,
        shared.set.digest_at(applied.version),
        &applied.migrations,
        stop == latest,
    ))
    .await?;
    match apply::commit(&mut tx, &applied).await {
        Ok(()) => Ok(Some(applied.version)),
        Err(ApplyError::AlreadyRegistered) if shared.if_not_exists => Ok(None),
        Err(e) => Err(e),
    }
}

/// A tenant created elsewhere than the registry's database. The registry (on home) and the
/// schema (on another server, or in the tenant's own database) cannot share a transaction,
/// so: (1) the row is committed `provisioning` on home, with the tenant's lock held for
/// the session; (2) the database (--own-database) is created, then schema, grants,
/// migrations and history in one transaction there; (3) the row is marked `active` with
/// its migrations on home. A failure after (1) drops whatever (2) made and then the row,
/// so nothing is left. A crash between (1) and the end leaves the row `provisioning`
/// and maybe the schema: a rerun of the same create finds the row, takes the lock
/// (nobody holds it: its creator is gone), removes both and creates the tenant anew.
async fn provision_elsewhere(
    home: &deadpool_postgres::Object,
    shared: &Shared,
    e: &Elsewhere,
    job: &NewTenant,
) -> Result<Option<i64>, ApplyError> {
    let at = e.placement(job);
    let role = shared.tenant_roles.map(|_| job.schema.as_str());
    match locks::try_hold_tenant(home, &job.schema).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApplyError::Locked(format!(
                "tenant {} is being created or changed by another session; nothing was created",
                job.slug
            )))
        }
        Err(err) => return Err(ApplyError::pg("cannot take the tenant's lock", err)),
    }
    let result = register_and_build(home, shared, e, job, &at, role).await;
    let _ = locks::release_tenant(home, &job.schema).await;
    result
}

async fn register_and_build(
    home: &deadpool_postgres::Object,
    shared: &Shared,
    e: &Elsewhere,
    job: &NewTenant,
    at: &Placement,
    role: Option<&str>,
) -> Result<Option<i64>, ApplyError> {
    let display = job.display.as_deref();
    if let Err(err) =
        registry::register_elsewhere(home, &job.slug, &job.schema, display, role, at).await
    {
        if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return match shared.if_not_exists {
                true => Ok(None),
                false => Err(ApplyError::AlreadyRegistered),
            };
        }
        return Err(ApplyError::pg("cannot register the tenant", err));
    }
    if !shared.labels.is_empty() {
        registry::edit_labels(home, &job.slug, &shared.labels, &[])
            .await
            .map_err(|err| ApplyError::Refused(format!("cannot label the tenant: {err:#}")))?;
    }
    let built = match build_elsewhere(shared, e, job).await {
        Ok(applied) => mark_created(home, shared, job, &applied).await,
        Err(err) => Err(err),
    };
    match built {
        Ok(version) => Ok(Some(version)),
        Err(err) => Err(undo_elsewhere(home, e, job, role, err).await),
    }
}

/// Steps (2) of `provision_elsewhere`: the tenant's own database when asked for, then its
/// schema, grants, migrations and history in one transaction on the target.
async fn build_elsewhere(
    shared: &Shared,
    e: &Elsewhere,
    job: &NewTenant,
) -> Result<apply::Applied, ApplyError> {
    let own_pool;
    let client = if e.own_database {
        let admin = e.pool.get().await.map_err(|err| {
            ApplyError::Refused(format!("no connection to server {}: {err}", e.server))
        })?;
        placement::create_database(&admin, &job.schema)
            .await
            .map_err(|err| ApplyError::Refused(format!("{err:#}")))?;
        drop(admin);
        own_pool = connect::pool(&e.target.with_dbname(&job.schema), 1)
            .map_err(|err| ApplyError::Refused(format!("{err:#}")))?;
        own_pool.get().await.map_err(|err| {
            ApplyError::Refused(format!(
                "cannot connect to the new database {} on server {}: {err}",
                job.schema, e.server
            ))
        })?
    } else {
        e.pool.get().await.map_err(|err| {
            ApplyError::Refused(format!("no connection to server {}: {err}", e.server))
        })?
    };
    let (data_role, role_ddl) = match (&shared.app_role, shared.tenant_roles) {
        (Some(app), Some(major)) => (
            Some(job.schema.as_str()),
            grants::create_tenant_role(&job.schema, app, major),
        ),
        (app, _) => (app.as_deref(), String::new()),
    };
    let mut tx = Tx::begin(&client);
    shared.backend.begin(&mut tx, Work::Create);
    tx.queue(
        Step::Sql("cannot create the schema"),
        format!(
            "{role_ddl}CREATE SCHEMA {};\n{}",
            quote_ident(&job.schema),
            grants::before_migrations(&job.schema, data_role)
        ),
    );
    let latest = shared.set.latest();
    let applied = apply_pending(
        &mut tx,
        &job.schema,
        &shared.set,
        latest,
        None,
        History::New,
    )
    .await?;
    if let Some(seed) = &shared.seed {
        seed.queue(&mut tx, &job.slug, &job.schema, job.display.as_deref())
            .await?;
    }
    let after = grants::after_create(&job.schema, data_role);
    if !after.is_empty() {
        tx.queue(Step::Sql("cannot apply the grants"), after);
    }
    apply::commit(&mut tx, &applied).await?;
    Ok(applied)
}

/// Step (3) of `provision_elsewhere`: the row on home becomes `active` with its migrations.
async fn mark_created(
    home: &deadpool_postgres::Object,
    shared: &Shared,
    job: &NewTenant,
    applied: &apply::Applied,
) -> Result<i64, ApplyError> {
    let mut tx = Tx::begin(home);
    tx.queue_sql(registry::record_step(
        &job.slug,
        applied.version,
        shared.set.digest_at(applied.version),
        &applied.migrations,
        true,
    ))
    .await?;
    tx.commit().await?;
    Ok(applied.version)
}

/// Takes away what a failed creation elsewhere made (the database, or the schema and the
/// tenant's role), then its registry row. When that cleanup fails too, the row stays
/// `provisioning` and the error says how a rerun finishes it.
async fn undo_elsewhere(
    home: &deadpool_postgres::Object,
    e: &Elsewhere,
    job: &NewTenant,
    role: Option<&str>,
    cause: ApplyError,
) -> ApplyError {
    let cleaned = async {
        let admin = e
            .pool
            .get()
            .await
            .map_err(|err| anyhow::anyhow!("no connection to server {}: {err}", e.server))?;
        if e.own_database {
            placement::drop_database(&admin, &job.schema).await?;
            if let Some(role) = role {
                placement::drop_role(&admin, role).await?;
            }
        } else {
            placement::drop_schema(&admin, &job.schema, role).await?;
        }
        registry::unregister_provisioning(home, &job.slug).await
    }
    .await;
    match cleaned {
        Ok(()) => cause,
        Err(err) => ApplyError::Refused(format!(
            "{cause}; and its cleanup failed too ({err:#}): tenant {} stays registered \
             `provisioning` on server {}: run the same tenantctl create again to remove what \
             was made and create it anew",
            job.slug, e.server
        )),
    }
}
