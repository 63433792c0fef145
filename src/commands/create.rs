//! `tenantctl create`: register, create the schema, grant, migrate: all in one
//! transaction per tenant, so a tenant exists completely or not at all.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use deadpool_postgres::Pool;

use crate::cli::CreateArgs;
use crate::commands::session::{dedup, now_epoch, Session};
use crate::domain::exit::bad_input;
use crate::domain::migration_set::MigrationSet;
use crate::domain::names::quote_ident;
use crate::fleet::{self, Interrupt, Job};
use crate::output::listed;
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::pg::txn::{Step, Tx};
use crate::registry;
use crate::tenant::apply::{self, apply_pending, ApplyError, History};
use crate::tenant::grants;
use crate::tenant::no_transaction;

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
    pool: Pool,
    set: MigrationSet,
    app_role: Option<String>,
    /// With per-tenant roles: the server's major version (it decides the GRANT form).
    tenant_roles: Option<i32>,
    if_not_exists: bool,
    /// `--label`s, the same for every tenant of the run.
    labels: std::collections::BTreeMap<String, String>,
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
    let concurrency = s.concurrency().min(slugs.len().max(1));
    let (pool, conn) = s.connect(concurrency + 1).await?;
    let concurrency = s.fit_concurrency(&conn, concurrency, false).await?;
    let app_role = s.check_app_role(&conn).await?;
    let registered = precheck(&conn, &slugs, &schemas, args.if_not_exists).await?;
    let tenant_roles = check_tenant_roles(s, &conn, &schemas, &registered, &slugs).await?;
    if let Some(role) = &app_role {
        registry::grant_read(&conn, role).await?;
    }
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
        set,
        app_role,
        tenant_roles,
        if_not_exists: args.if_not_exists,
        labels: args.labels.iter().cloned().collect(),
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
    report::print("create", s, &outcomes, shared.set.latest());
    Ok(report::exit_code(&outcomes, &interrupt))
}

/// Refuses (exit 2, nothing changed) tenants that exist unless --if-not-exists, and schemas
/// that exist without a registry row. Returns the slugs already registered.
async fn precheck(
    conn: &deadpool_postgres::Object,
    slugs: &[String],
    schemas: &[String],
    if_not_exists: bool,
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
    match provision(&client, shared, &job).await {
        Ok(Some(version))
            if shared
                .set
                .next_no_transaction(version, shared.set.latest())
                .is_some() =>
        {
            finish_alone(&client, shared, &job, version, started, epoch).await
        }
        Ok(Some(version)) => {
            let mut o = TenantOutcome::new(&job.slug, &job.schema, Outcome::Applied, 0, version);
            o.migrations = shared
                .set
                .migrations
                .iter()
                .map(|m| m.to_string())
                .collect();
            o.took(started.elapsed())
        }
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
    };
    match no_transaction::run(client, &run, no_transaction::Start::Registry(version)).await {
        Ok(reached) => {
            let mut o =
                TenantOutcome::new(&job.slug, &job.schema, Outcome::Applied, 0, reached.version);
            o.migrations = shared
                .set
                .migrations
                .iter()
                .map(|m| m.to_string())
                .collect();
            o.took(started.elapsed())
        }
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
