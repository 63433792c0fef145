//! `tenantctl restore SLUG FILE [--as NEW_SLUG] [--yes]`: replace one tenant's schema with a
//! backup (or restore it as a new tenant), touching no other tenant.
//!
//! A dump is code, and this one may not be ours. Before anything runs, its table of
//! contents and the SQL it would execute are checked (`dump_policy`): one tenant schema,
//! nothing outside it, no SECURITY DEFINER, no other schema named, only function bodies the
//! migrations folder defines. The tenant is the dump's schema, not what the `.json` says.
//!
//! pg_restore cannot rename a schema, and rewriting dump text could alter patient data, so
//! the dump is loaded into a private scratch database, renamed there, dumped again and
//! loaded into this database under a staging name. Both loads run exactly the checked
//! statements (`dump_load`), as a temporary NOLOGIN role made for this restore that owns
//! nothing but the schema it loads, cannot create roles and has no access to the registry
//! or any other schema. One transaction then swaps the copy in: the old schema is dropped,
//! the staged one renamed and handed to tenantctl's role, grants applied, the registry
//! updated. The role and the scratch database are removed on success, error, Ctrl-C and
//! SIGTERM; the rows never touch the local disk.
//!
//! On a Citus coordinator (`Backend`) the staged copy stays a local schema of the
//! coordinator (the NOLOGIN role could not reach a worker), and the swap distributes it, in
//! the same transaction; the workers' sequences are then moved past the restored rows
//! (docs/citus.md, "Restore").

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::commands::session::{confirm_by_typing, Session};
use crate::domain::dump_policy::{self, Policy};
use crate::domain::exit::bad_input;
use crate::domain::migration_set::MigrationSet;
use crate::domain::names::{self, quote_ident, RESTORE_PREFIX};
use crate::fleet::signals::{self, Signals};
use crate::pg::connect::{self, PgContext, Target};
use crate::pg::dump::{self, Metadata, Tool};
use crate::pg::dump_load;
use crate::registry::{self, Tenant};
use crate::tenant::apply::{history_table, locked_transaction};
use crate::tenant::citus::Backend;
use crate::tenant::grants;

/// Where a restore goes, decided before anything changes.
struct Plan {
    slug: String,
    schema: String,
    /// The tenant being replaced, when restoring in place over a registered tenant.
    existing: Option<Tenant>,
    /// The schema name used while the restored copy is loaded next to the live one.
    staging: String,
    /// The role given the tenant's data privileges, and whether it must be created.
    data_role: Option<String>,
    create_role: bool,
    /// The application role (a new tenant role is granted to it).
    app_role: Option<String>,
}

/// What the dump holds, read from the dump itself.
struct Dumped {
    /// The dump's one schema, and the tenant it belongs to.
    schema: String,
    /// The checked statements of its schema sections (before and after the rows).
    pre_data: String,
    post_data: String,
}

/// Everything the stages need.
struct Ctx<'a> {
    file: &'a Path,
    pg_restore: &'a Tool,
    pg_dump: &'a Tool,
    dumped: &'a Dumped,
    plan: &'a Plan,
    bodies: &'a std::collections::HashSet<String>,
    schemas: &'a [String],
    record: &'a Metadata,
    major: i32,
    /// Where the tenant lives: the scratch database, the staged copy and the swap are made
    /// on this server, in this database (home's own for a tenant at home or a new one).
    place: &'a Target,
    database: &'a str,
    /// The backend of the database the copy is staged in (Citus: home only, for now).
    backend: &'a Backend,
}

/// A tenant that lives elsewhere than the registry's database, and a connection there.
struct Far {
    server: String,
    database: String,
    target: Target,
    _pool: deadpool_postgres::Pool,
    conn: deadpool_postgres::Object,
}

pub async fn run(s: &Session, args: &RestoreArgs) -> Result<u8> {
    let m = check_record(args)?;
    let pg_restore = dump::find_tool("pg_restore")?;
    let schema = read_toc(s, &pg_restore, args, &m).await?;
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let latest = set.latest();
    if m.version > latest {
        return Err(bad_input(format!(
            "the backup is at version {}, newer than the migrations folder {} knows (latest {latest}); \
             restore it with the migrations it was made with",
            m.version,
            s.settings.migrations_dir.display()
        )));
    }
    let pg_dump = dump::find_tool("pg_dump")?;
    let (_pool, mut conn) = s.connect(1).await?;
    let plan = plan(s, &conn, args).await?;
    let mut far = match plan.existing.as_ref().filter(|t| !s.at_home(t)) {
        Some(t) => Some(reach(s, t).await?),
        None => None,
    };
    // What the tenant's database is (home, or the place where it lives, detected by
    // `reach`): a Citus coordinator distributes the restored schema.
    let backend = match &far {
        Some(f) => s.backend_at(&f.server, &f.database),
        None => s.backend().clone(),
    };
    // A tenant role is NOLOGIN: on a distributed schema every query as it would fail.
    backend.check_tenant_roles(plan.create_role)?;
    // Everything below the registry happens where the tenant lives.
    let work: &deadpool_postgres::Object = far.as_ref().map_or(&conn, |f| &f.conn);
    let major = registry::server_major(work).await?;
    for (tool, name) in [(&pg_dump, "pg_dump"), (&pg_restore, "pg_restore")] {
        dump::check_not_older(tool, name, major).map_err(|e| bad_input(format!("{e:#}")))?;
    }
    if far.is_some() {
        let server = plan.existing.as_ref().map_or("", |t| t.server.as_str());
        s.check_app_role(work).await.with_context(|| {
            format!(
                "on server {server}, where tenant {} lives; nothing was changed",
                plan.slug
            )
        })?;
    }
    let bodies = dump_policy::migration_bodies(set.migrations.iter().filter_map(|m| m.sql()));
    let schemas = registry::schema_names(work).await?;
    let dumped = read_sql(&pg_restore, &args.file, schema, &bodies, &schemas).await?;
    if plan.existing.is_some() && !args.yes {
        confirm_by_typing(
            &plan.slug,
            &format!("replace every row of tenant {} with the backup", plan.slug),
        )?;
    }
    let home_db = s.home_database().to_string();
    let (place, database) = match &far {
        Some(f) => (f.target.clone(), f.database.clone()),
        None => (s.target.clone(), home_db),
    };
    let ctx = Ctx {
        file: &args.file,
        pg_restore: &pg_restore,
        pg_dump: &pg_dump,
        dumped: &dumped,
        plan: &plan,
        bodies: &bodies,
        schemas: &schemas,
        record: &m,
        major,
        place: &place,
        database: &database,
        backend: &backend,
    };
    // Listened for only now: before, Ctrl-C simply ends the process (nothing exists yet).
    let mut signals = Signals::listen()?;
    let sandbox = Sandbox::new();
    let work: &deadpool_postgres::Object = far.as_ref().map_or(&conn, |f| &f.conn);
    let staged = tokio::select! {
        r = stage(&ctx, work, &sandbox) => Some(r),
        _ = signals.recv() => None,
    };
    let version = match staged {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            sandbox.remove(&place, true).await;
            if let Some(sig) = signals.received() {
                return Ok(interrupted(s, sig, &plan));
            }
            return Err(e.context(format!(
                "restore of tenant {} failed; the tenant was not changed",
                plan.slug
            )));
        }
        None => {
            sandbox.remove(&place, true).await;
            let sig = signals.received().unwrap_or("a signal");
            return Ok(interrupted(s, sig, &plan));
        }
    };
    // The swap is one short transaction and is not interrupted: a signal now waits for it.
    let swapped = match far.as_mut() {
        None => swap(
            &mut conn,
            &plan,
            &m,
            version,
            &sandbox.role,
            major,
            s.lock_deadline(),
            (&backend, true),
        )
        .await
        .map(|()| None),
        Some(f) => {
            swap_elsewhere(
                &mut conn,
                f,
                &plan,
                &m,
                version,
                &sandbox.role,
                major,
                s.lock_deadline(),
                &backend,
            )
            .await
        }
    };
    if let Ok(Some(unrecorded)) = swapped {
        sandbox.remove(&place, false).await;
        return Err(unrecorded);
    }
    if let Err(e) = swapped {
        sandbox.remove(&place, true).await;
        drop_stray_worker_schema(&backend, &place, &plan.staging).await;
        return Err(e.context(format!(
            "restore of tenant {} failed; the tenant was not changed",
            plan.slug
        )));
    }
    sandbox.remove(&place, false).await;
    let work: &deadpool_postgres::Object = far.as_ref().map_or(&conn, |f| &f.conn);
    if let Err(e) = backend.sync_worker_sequences(work, &plan.schema).await {
        return Err(e.context(format!(
            "tenant {} was restored and is distributed, but rows that triggers add on its \
             worker may collide with restored ones; run the same restore again, or set \
             the worker's sequences past the restored values by hand (docs/citus.md)",
            plan.slug
        )));
    }
    report(s, args, &plan, version, latest);
    Ok(0)
}

/// The staged copy's schema Citus left on the workers when the swap rolled back, dropped
/// on a connection of its own once the sandbox (the coordinator's staged copy with it) is
/// gone; what cannot be dropped is named for the operator.
async fn drop_stray_worker_schema(backend: &Backend, place: &Target, staging: &str) {
    let dropped = match fresh_connection(place).await {
        Ok(conn) => backend.drop_stray_worker_schema(&conn, staging).await,
        Err(e) => Err(e),
    };
    match dropped {
        Ok(left) => {
            for l in left {
                crate::errln!("warning: cannot drop the empty {l}; drop it by hand");
            }
        }
        Err(e) => crate::errln!(
            "warning: {e:#}; drop the empty schema {staging} on the workers by hand if it is there"
        ),
    }
}

fn report(s: &Session, args: &RestoreArgs, plan: &Plan, version: i64, latest: i64) {
    if s.json() {
        crate::output::print_json(
            &json!({"slug": plan.slug, "schema": plan.schema, "version": version, "from": args.file, "latest_version": latest}),
        );
    } else {
        crate::outln!(
            "restored tenant {} (schema {}) to version {} from {}{}",
            plan.slug,
            plan.schema,
            version,
            args.file.display(),
            if version < latest {
                format!(
                    "; run tenantctl migrate {} to bring it to version {latest}",
                    plan.slug
                )
            } else {
                String::new()
            }
        );
    }
}

fn interrupted(s: &Session, sig: &str, plan: &Plan) -> u8 {
    let msg = format!(
        "interrupted by {sig}: the restore was stopped, its scratch database and role removed; \
         tenant {} was not changed",
        plan.slug
    );
    signals::interrupted(s.json(), &msg)
}

/// The record beside the dump must exist and match the dump's SHA-256 (a truncated or
/// corrupt file). It is not signed, so nothing else in it is trusted.
fn check_record(args: &RestoreArgs) -> Result<Metadata> {
    let m = dump::read_metadata(&args.file)?;
    let sha = dump::sha256_file(&args.file).map_err(|e| bad_input(format!("{e:#}")))?;
    if sha != m.sha256 {
        return Err(bad_input(format!(
            "{} does not match the SHA-256 recorded when it was made (truncated or corrupt); nothing was changed",
            args.file.display()
        )));
    }
    Ok(m)
}

/// Reads the table of contents: the one tenant schema, nothing outside it. The tenant is
/// that schema's, and the record and the command line must agree with it.
async fn read_toc(s: &Session, tool: &Tool, args: &RestoreArgs, m: &Metadata) -> Result<String> {
    let file = args.file.display().to_string();
    let refuse = |why: String| {
        bad_input(format!(
            "refusing to restore {file}: {why}; nothing was changed"
        ))
    };
    let all = dump::list(tool, &args.file, None).await?;
    let schema = dump_policy::dumped_schema(&all).map_err(refuse)?;
    let prefix = &s.settings.schema_prefix;
    let slug = schema
        .strip_prefix(prefix.as_str())
        .filter(|slug| names::schema_name(prefix, slug).ok().as_ref() == Some(&schema))
        .filter(|slug| names::validate_slug(slug).is_ok())
        .ok_or_else(|| {
            refuse(format!(
                "its schema {schema} is not a tenant schema (schema_prefix '{prefix}')"
            ))
        })?
        .to_string();
    let inside = dump::list(tool, &args.file, Some(&schema)).await?;
    dump_policy::check_toc(&all, &inside, &schema).map_err(refuse)?;
    if m.slug != slug || m.schema != schema {
        return Err(refuse(format!(
            "its record {} says tenant {} (schema {}) but the dump holds schema {schema} of tenant \
             {slug}, so the record does not belong to this dump",
            dump::metadata_path(&args.file).display(),
            m.slug,
            m.schema
        )));
    }
    if slug != args.slug {
        return Err(bad_input(format!(
            "{file} is a backup of tenant {slug}, not {}; to restore it under another slug run \
             tenantctl restore {slug} {file} --as {}",
            args.slug, args.slug
        )));
    }
    Ok(schema)
}

/// The policy for SQL whose objects live in `own`: every other schema of this database is
/// out of bounds.
fn policy<'a>(
    own: Vec<String>,
    schemas: &[String],
    bodies: &'a std::collections::HashSet<String>,
) -> Policy<'a> {
    let others = schemas
        .iter()
        .filter(|n| !own.contains(n) && n.as_str() != "pg_catalog")
        .cloned()
        .collect();
    Policy {
        own,
        others,
        bodies,
    }
}

/// Prints (without executing anything) the SQL of the dump's schema sections and checks it.
async fn read_sql(
    tool: &Tool,
    file: &Path,
    schema: String,
    bodies: &std::collections::HashSet<String>,
    schemas: &[String],
) -> Result<Dumped> {
    let p = policy(vec![schema.clone()], schemas, bodies);
    let shown = file.display().to_string();
    let mut sections = Vec::new();
    for section in ["pre-data", "post-data"] {
        let text = dump_load::text_of(
            restore_command(tool, file, &schema, section),
            &format!("pg_restore --section={section} {shown}"),
        )
        .await
        .map_err(|e| {
            bad_input(format!(
                "{shown} is not a readable dump ({e:#}); nothing was changed"
            ))
        })?;
        sections.push(dump_load::checked(&text, &p, &shown)?);
    }
    let post_data = sections.pop().unwrap_or_default();
    let pre_data = sections.pop().unwrap_or_default();
    Ok(Dumped {
        schema,
        pre_data,
        post_data,
    })
}

/// `pg_restore` printing one section of the dump's schema to stdout (it connects nowhere).
fn restore_command(tool: &Tool, file: &Path, schema: &str, section: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(&tool.path);
    // Owners and privileges are not restored: a dump of another tenant would otherwise bring
    // that tenant's grants along. tenantctl applies this tenant's grants itself.
    cmd.arg(format!("--section={section}"))
        .arg("--schema")
        .arg(schema)
        .args(["--no-owner", "--no-privileges", "--file", "-"])
        .arg(file);
    cmd
}

/// `pg_dump` printing one section of the scratch copy to stdout.
fn scratch_dump_command(ctx: &Ctx, scratch: &str, section: &str) -> std::process::Command {
    let mut cmd = dump::command(ctx.pg_dump, ctx.place, scratch);
    cmd.arg(format!("--section={section}"))
        .arg("--schema")
        .arg(quote_ident(&ctx.plan.staging))
        .args(["--no-owner", "--no-privileges"]);
    cmd
}

async fn plan(s: &Session, conn: &deadpool_postgres::Object, args: &RestoreArgs) -> Result<Plan> {
    let slug = args.as_slug.clone().unwrap_or_else(|| args.slug.clone());
    let schema = s.schemas_for(std::slice::from_ref(&slug))?.remove(0);
    let existing = registry::some(conn, std::slice::from_ref(&slug))
        .await?
        .pop();
    if args.as_slug.is_some() && existing.is_some() {
        return Err(bad_input(format!(
            "tenant {slug} already exists; --as needs a new slug"
        )));
    }
    if existing.is_none()
        && !registry::existing_schemas(conn, std::slice::from_ref(&schema))
            .await?
            .is_empty()
    {
        return Err(bad_input(format!(
            "schema {schema} already exists but no tenant is registered for it; nothing was changed"
        )));
    }
    // A tenant elsewhere needs the application role on its own server (checked there).
    let app_role = match &existing {
        Some(t) if !s.at_home(t) => s.settings.app_role.clone(),
        _ => s.check_app_role(conn).await?,
    };
    let (data_role, create_role) = match (&existing, s.settings.per_tenant_roles) {
        (Some(t), _) if t.role.is_some() => (t.role.clone(), false),
        (None, true) => (Some(schema.clone()), true),
        _ => (app_role.clone(), false),
    };
    if create_role {
        if registry::role_exists(conn, &schema).await? {
            return Err(bad_input(format!(
                "role '{schema}' already exists; nothing was changed"
            )));
        }
        if let Some(app) = &app_role {
            crate::commands::session::check_app_role_noinherit(conn, app).await?;
        }
    }
    let staging = if existing.is_some() {
        format!("{RESTORE_PREFIX}{}", std::process::id())
    } else {
        schema.clone()
    };
    Ok(Plan {
        slug,
        schema,
        existing,
        staging,
        data_role,
        create_role,
        app_role,
    })
}

/// What a restore makes before the swap: a role and a scratch database, both named for
/// this process, and the server sessions working in them.
struct Sandbox {
    role: String,
    scratch: String,
    sessions: Arc<Mutex<Vec<i32>>>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let name = format!("{RESTORE_PREFIX}{}_{}", std::process::id(), nanos());
        Sandbox {
            role: name.clone(),
            scratch: name,
            sessions: Arc::default(),
        }
    }

    /// Remembers a session of this restore, so that an interrupted one can be ended.
    async fn track(&self, client: &tokio_postgres::Client) -> Result<()> {
        let pid: i32 = client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await
            .pg_context("cannot read the session's process id")?
            .get(0);
        if let Ok(mut v) = self.sessions.lock() {
            v.push(pid);
        }
        Ok(())
    }

    /// Removes the scratch database and the role with whatever it still owns (a staged
    /// copy never swapped in), on a connection of its own: the restore's sessions may be
    /// in the middle of a statement. With `end_sessions`, those are ended first, so that an
    /// uncommitted load rolls back. Failures are reported, not raised: the restore's own
    /// outcome is what the operator needs.
    async fn remove(&self, place: &Target, end_sessions: bool) {
        let client = match fresh_connection(place).await {
            Ok(c) => c,
            Err(e) => {
                crate::errln!(
                    "warning: cannot clean up after the restore ({e:#}); drop database {} and role {} by hand",
                    self.scratch, self.role
                );
                return;
            }
        };
        let pids: Vec<i32> = self.sessions.lock().map(|v| v.clone()).unwrap_or_default();
        if end_sessions && !pids.is_empty() {
            let _ = client
                .execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid, 5000) \
                       FROM pg_catalog.unnest($1::int[]) AS pid \
                      WHERE pid <> pg_catalog.pg_backend_pid()",
                    &[&pids],
                )
                .await;
        }
        if let Err(e) = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.scratch)
            ))
            .await
        {
            crate::errln!(
                "warning: cannot drop the restore's scratch database {}: {}; drop it by hand",
                self.scratch,
                connect::describe_pg_error(&e)
            );
        }
        match registry::role_exists(&client, &self.role).await {
            Ok(true) => {
                if let Err(e) = client
                    .batch_execute(&grants::drop_restore_role(&self.role))
                    .await
                {
                    crate::errln!(
                        "warning: cannot drop the restore's role {}: {}; drop it by hand",
                        self.role,
                        connect::describe_pg_error(&e)
                    );
                }
            }
            Ok(false) => {}
            Err(e) => crate::errln!("warning: {e:#}"),
        }
    }
}

/// A connection of its own to the database where the tenant lives (not the command's,
/// which may be busy).
async fn fresh_connection(place: &Target) -> Result<deadpool_postgres::Object> {
    let pool = connect::pool(place, 1)?;
    connect::first_connection(&pool, place).await
}

/// A connection where tenant `t` lives; a server that cannot be reached fails the restore
/// (exit 1) before anything is changed.
async fn reach(s: &Session, t: &Tenant) -> Result<Far> {
    let target = s.servers.target_db(&t.server, &t.database)?;
    let (pool, conn) = s
        .connect_place(&t.server, &t.database, 1)
        .await
        .with_context(|| {
            format!(
                "restore of tenant {} failed; the tenant was not changed",
                t.slug
            )
        })?;
    Ok(Far {
        server: t.server.clone(),
        database: t.database.clone(),
        target,
        _pool: pool,
        conn,
    })
}

/// Loads the dump into this database as `plan.staging`, by way of a scratch database, as
/// the restore role. Returns the tenant's version, read from the dump's own history.
async fn stage(ctx: &Ctx<'_>, conn: &deadpool_postgres::Object, sb: &Sandbox) -> Result<i64> {
    sb.track(conn).await?;
    conn.batch_execute(&grants::create_restore_role(&sb.role, ctx.major))
        .await
        .pg_context(
            "cannot create the role the restore runs as (tenantctl's role needs CREATEROLE)",
        )?;
    conn.batch_execute(&format!("CREATE DATABASE {}", quote_ident(&sb.scratch)))
        .await
        .pg_context("cannot create a scratch database for the restore (the role needs CREATEDB)")?;
    // The scratch copy holds a tenant's rows: nobody else may connect to it.
    conn.batch_execute(&format!(
        "REVOKE ALL ON DATABASE {} FROM PUBLIC",
        quote_ident(&sb.scratch)
    ))
    .await
    .pg_context("cannot make the scratch database private")?;
    let version = load_scratch(ctx, sb).await?;
    if version != ctx.record.version {
        return Err(bad_input(format!(
            "refusing to restore {}: its migration history is at version {version} but its record \
             says {}, so the record does not belong to this dump; nothing was changed",
            ctx.file.display(),
            ctx.record.version
        )));
    }
    load_staging(ctx, sb).await?;
    conn.batch_execute(&format!(
        "DROP DATABASE {} WITH (FORCE)",
        quote_ident(&sb.scratch)
    ))
    .await
    .pg_context("cannot drop the restore's scratch database")?;
    Ok(version)
}

/// The dump, loaded into the scratch database as the restore role, renamed to the staging
/// name, its pinned search_paths re-pointed at the tenant's final schema.
async fn load_scratch(ctx: &Ctx<'_>, sb: &Sandbox) -> Result<i64> {
    let schema = &ctx.dumped.schema;
    let mut client = connect::connect_db(ctx.place, &sb.scratch).await?;
    sb.track(&client).await?;
    let tx = client
        .transaction()
        .await
        .pg_context("cannot start the scratch load")?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA {} AUTHORIZATION {r}; SET LOCAL ROLE {r}",
        quote_ident(schema),
        r = quote_ident(&sb.role)
    ))
    .await
    .pg_context("cannot prepare the scratch database")?;
    dump_load::run_sql(&tx, &ctx.dumped.pre_data, "the dump's tables").await?;
    let mut rows = std::process::Command::new(&ctx.pg_restore.path);
    rows.args(["--section=data", "--schema"])
        .arg(schema)
        .args(["--no-owner", "--no-privileges", "--file", "-"])
        .arg(ctx.file);
    dump_load::load_data(&tx, rows, schema, "pg_restore of the dump's rows").await?;
    dump_load::run_sql(
        &tx,
        &ctx.dumped.post_data,
        "the dump's indexes, constraints and triggers",
    )
    .await?;
    rename_in(&tx, &sb.role, schema, &ctx.plan.staging, &ctx.plan.schema).await?;
    let version = history_version(&tx, &ctx.plan.staging).await?;
    tx.commit()
        .await
        .pg_context("cannot commit the scratch load")?;
    Ok(version)
}

/// The scratch copy, dumped and loaded into this database under the staging name, as the
/// restore role, through the same checks.
async fn load_staging(ctx: &Ctx<'_>, sb: &Sandbox) -> Result<()> {
    let staging = &ctx.plan.staging;
    let mut own = vec![staging.clone()];
    if ctx.plan.schema != *staging {
        own.push(ctx.plan.schema.clone());
    }
    let p = policy(own, ctx.schemas, ctx.bodies);
    let what = "the scratch copy";
    let mut sections = Vec::new();
    for section in ["pre-data", "post-data"] {
        let text = dump_load::text_of(
            scratch_dump_command(ctx, &sb.scratch, section),
            &format!("pg_dump --section={section} of {what}"),
        )
        .await?;
        sections.push(dump_load::checked(&text, &p, what)?);
    }
    let mut client = connect::connect_db(ctx.place, ctx.database).await?;
    sb.track(&client).await?;
    let tx = client
        .transaction()
        .await
        .pg_context("cannot start loading the restored copy")?;
    if let Some(sql) = ctx.backend.restore_staging_sql() {
        tx.batch_execute(sql)
            .await
            .pg_context("cannot keep the staged copy on the coordinator")?;
    }
    tx.batch_execute(&format!(
        "CREATE SCHEMA {} AUTHORIZATION {r}; SET LOCAL ROLE {r}",
        quote_ident(staging),
        r = quote_ident(&sb.role)
    ))
    .await
    .pg_context("cannot create the staging schema")?;
    dump_load::run_sql(&tx, &sections[0], "the tables").await?;
    dump_load::load_data(
        &tx,
        scratch_dump_command(ctx, &sb.scratch, "data"),
        staging,
        "pg_dump of the scratch copy's rows",
    )
    .await?;
    dump_load::run_sql(&tx, &sections[1], "the indexes, constraints and triggers").await?;
    tx.commit()
        .await
        .pg_context("cannot commit the restored copy")
}

/// The highest version in the restored schema's own history (0 without one).
pub(crate) async fn history_version(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<i64> {
    let table = history_table(schema);
    let present: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .pg_context("cannot look for the restored migration history")?
        .get(0);
    if !present {
        return Ok(0);
    }
    Ok(tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::bigint FROM {table}"),
            &[],
        )
        .await
        .pg_context("cannot read the restored migration history")?
        .get(0))
}

/// Renames the schema in the scratch database and points every function that pins a
/// search_path at the tenant's final schema (else a tenant restored under a new slug would
/// keep writing into the schema it was copied from). Only the old schema's name is replaced
/// in each path, and `pg_temp` is kept last (`names::repin_search_path`), so a function
/// pinned safely (`pg_catalog, pg_temp`) stays so.
async fn rename_in(
    tx: &tokio_postgres::Transaction<'_>,
    role: &str,
    from: &str,
    to: &str,
    final_schema: &str,
) -> Result<()> {
    if from != to {
        // Renaming needs CREATE on the database, which only tenantctl's role has; the
        // restore role is back in charge for the rest.
        tx.batch_execute(&format!(
            "RESET ROLE; ALTER SCHEMA {} RENAME TO {}; SET LOCAL ROLE {}",
            quote_ident(from),
            quote_ident(to),
            quote_ident(role)
        ))
        .await
        .pg_context("cannot rename the restored schema")?;
    }
    let pinned = tx
        .query(
            "SELECT p.oid::pg_catalog.regprocedure::text, pg_catalog.substr(cfg, 13) \
               FROM pg_catalog.pg_proc p \
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace, \
                    pg_catalog.unnest(p.proconfig) AS cfg \
              WHERE n.nspname = $1 AND pg_catalog.starts_with(cfg, 'search_path=')",
            &[&to],
        )
        .await
        .pg_context("cannot list functions with a pinned search_path")?;
    for row in pinned {
        // regprocedure's text is PostgreSQL's own quoted, schema-qualified signature.
        let function: String = row.get(0);
        let path = names::repin_search_path(row.get(1), from, final_schema);
        tx.batch_execute(&format!(
            "ALTER FUNCTION {function} SET search_path = {path}"
        ))
        .await
        .with_pg_context(|| format!("cannot re-pin the search_path of {function}"))?;
    }
    Ok(())
}

/// A tenant elsewhere: its fingerprint is cleared on home first, then the swap commits where
/// it lives, then its row on home is updated. Should home fail after the swap, the row
/// lags behind the schema without a fingerprint, so the next migrate reads the history
/// where the tenant lives and records its version.
#[allow(clippy::too_many_arguments)]
async fn swap_elsewhere(
    home: &mut deadpool_postgres::Object,
    far: &mut Far,
    plan: &Plan,
    m: &Metadata,
    version: i64,
    restore_role: &str,
    major: i32,
    deadline: std::time::Duration,
    backend: &Backend,
) -> Result<Option<anyhow::Error>> {
    registry::forget_digest(&*home, &plan.slug).await?;
    swap(
        &mut far.conn,
        plan,
        m,
        version,
        restore_role,
        major,
        deadline,
        (backend, false),
    )
    .await
    .with_context(|| format!("on server {} (database {})", far.server, far.database))?;
    // The tenant is restored now: a failure on home is reported, not undone.
    Ok(record_on_home(home, plan, m, version).await.err().map(|e| {
        e.context(format!(
            "tenant {} was restored on server {}, but the registry on home could not record \
             it; run tenantctl migrate {} to record its version",
            plan.slug, far.server, plan.slug
        ))
    }))
}

async fn record_on_home(
    home: &mut deadpool_postgres::Object,
    plan: &Plan,
    m: &Metadata,
    version: i64,
) -> Result<()> {
    let tx = home
        .transaction()
        .await
        .pg_context("cannot start a transaction on home")?;
    record(&tx, plan, m, version).await?;
    tx.commit().await.pg_context("cannot commit on home")
}

/// One transaction: drop the replaced schema, rename the staged one, take it over from the
/// restore role, distribute it (on a Citus coordinator that distributes tenants), grant,
/// and register when `registry_here` (the registry is in this database); `backend` is the
/// database's.
#[allow(clippy::too_many_arguments)]
async fn swap(
    conn: &mut deadpool_postgres::Object,
    plan: &Plan,
    m: &Metadata,
    version: i64,
    restore_role: &str,
    major: i32,
    deadline: std::time::Duration,
    (backend, registry_here): (&Backend, bool),
) -> Result<()> {
    let (tx, _) = locked_transaction(conn, &plan.slug, &plan.schema, deadline).await?;
    backend.begin_restore_swap(&tx).await?;
    // The staged copy is tenantctl's before anything else: on Citus, distributing it
    // recreates its objects on a worker with their owner.
    run_one_by_one(
        &tx,
        &backend.on_coordinator_only(&grants::take_over_restored(restore_role)),
        backend,
        "cannot take the restored schema over from the restore's role",
    )
    .await?;
    // Distributed under its staging name, before the replaced schema is dropped (Citus
    // cannot distribute a schema in the transaction that dropped a distributed one of the
    // same name: its workers no longer have it), and before the grants, so that Citus
    // grants on the shards too.
    backend.distribute_restored(&tx, &plan.staging).await?;
    let mut sql = String::new();
    if plan.existing.is_some() {
        sql.push_str(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE;\nALTER SCHEMA {} RENAME TO {s};\n",
            quote_ident(&plan.staging),
            s = quote_ident(&plan.schema)
        ));
    }
    if let (true, Some(role), Some(app)) = (
        plan.create_role,
        plan.data_role.as_deref(),
        plan.app_role.as_deref(),
    ) {
        sql.push_str(&grants::create_tenant_role(role, app, major));
    }
    run_one_by_one(&tx, &sql, backend, "cannot swap the restored schema in").await?;
    let mut sql = String::new();
    sql.push_str(&grants::before_migrations(
        &plan.schema,
        plan.data_role.as_deref(),
    ));
    sql.push_str(&grants::after_migrations(
        &plan.schema,
        plan.data_role.as_deref(),
    ));
    run_one_by_one(&tx, &sql, backend, "cannot grant on the restored schema").await?;
    if registry_here {
        record(&tx, plan, m, version).await?;
    }
    tx.commit().await.pg_context("cannot commit the restore")?;
    Ok(())
}

/// Runs tenantctl's own statements: one by one on Citus, which refuses DDL on distributed
/// tables inside a multi-statement query (and whose coordinator crashed on the swap's
/// DROP SCHEMA, ALTER SCHEMA and REASSIGN OWNED sent as one).
async fn run_one_by_one(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    backend: &Backend,
    what: &'static str,
) -> Result<()> {
    if !backend.is_citus() {
        return tx.batch_execute(sql).await.pg_context(what);
    }
    let statements = crate::domain::sql_split::split(sql)
        .map_err(|e| anyhow::anyhow!("{what}: cannot split tenantctl's own statements: {e}"))?;
    for statement in statements {
        tx.batch_execute(statement.text).await.pg_context(what)?;
    }
    Ok(())
}

/// The restored tenant's row: active at the restored version.
async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    plan: &Plan,
    m: &Metadata,
    version: i64,
) -> Result<()> {
    let display = plan
        .existing
        .as_ref()
        .and_then(|t| t.display_name.clone())
        .or_else(|| m.display_name.clone());
    let role = if plan.create_role {
        plan.data_role.clone()
    } else {
        plan.existing.as_ref().and_then(|t| t.role.clone())
    };
    registry::record_restore(
        tx,
        &plan.slug,
        &plan.schema,
        display.as_deref(),
        version,
        role.as_deref(),
    )
    .await
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000)
        .unwrap_or(0)
}
