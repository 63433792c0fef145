//! `tenantctl restore SLUG FILE [--as NEW_SLUG] [--yes]`: replace one tenant's schema with a
//! backup (or restore it as a new tenant), touching no other tenant.
//!
//! pg_restore cannot rename a schema, and rewriting dump text could alter patient data, so
//! the dump is restored into a scratch database, renamed there, dumped again and restored
//! into this database under a staging name. One transaction then swaps it in: the old
//! schema is dropped, the staged one renamed, grants applied, the registry updated.

use crate::pg::connect::PgContext;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::cli::RestoreArgs;
use crate::commands::session::{confirm_by_typing, Session};
use crate::domain::exit::bad_input;
use crate::domain::migration_set::MigrationSet;
use crate::domain::names::{self, quote_ident};
use crate::pg::connect;
use crate::pg::dump::{self, Metadata, Tool};
use crate::registry::{self, Tenant};
use crate::tenant::apply::locked_transaction;
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

pub async fn run(s: &Session, args: &RestoreArgs) -> Result<u8> {
    let m = check_dump(s, args)?;
    let pg_restore = dump::find_tool("pg_restore")?;
    dump::check_archive(&pg_restore, &args.file).await?;
    let pg_dump = dump::find_tool("pg_dump")?;
    let (_pool, mut conn) = s.connect(1).await?;
    let major = registry::server_major(&conn).await?;
    for (tool, name) in [(&pg_dump, "pg_dump"), (&pg_restore, "pg_restore")] {
        dump::check_not_older(tool, name, major).map_err(|e| bad_input(format!("{e:#}")))?;
    }
    let plan = plan(s, &conn, args).await?;
    if plan.existing.is_some() && !args.yes {
        confirm_by_typing(
            &plan.slug,
            &format!("replace every row of tenant {} with the backup", plan.slug),
        )?;
    }
    if let Err(e) = stage(
        s,
        &conn,
        &pg_dump,
        &pg_restore,
        &args.file,
        &m.schema,
        &plan,
    )
    .await
    {
        if plan.existing.is_some() {
            let _ = conn
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&plan.staging)
                ))
                .await;
        }
        return Err(e.context(format!(
            "restore of tenant {} failed; the tenant was not changed",
            plan.slug
        )));
    }
    if let Err(e) = swap(&mut conn, &plan, &m, major, s.lock_deadline()).await {
        // The swap rolled back; the staged copy is not registered and must not linger.
        let drop_staged = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&plan.staging)
        );
        let _ = conn.batch_execute(&drop_staged).await;
        return Err(e.context(format!(
            "restore of tenant {} failed; the tenant was not changed",
            plan.slug
        )));
    }
    let latest = MigrationSet::load(&s.settings.migrations_dir)?.latest();
    if s.json() {
        crate::output::print_json(
            &json!({"slug": plan.slug, "schema": plan.schema, "version": m.version, "from": args.file, "latest_version": latest}),
        );
    } else {
        crate::outln!(
            "restored tenant {} (schema {}) to version {} from {}{}",
            plan.slug,
            plan.schema,
            m.version,
            args.file.display(),
            if m.version < latest {
                format!(
                    "; run tenantctl migrate {} to bring it to version {latest}",
                    plan.slug
                )
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}

/// The dump must match its recorded SHA-256, be of the named tenant, and not be newer than
/// the migrations folder.
fn check_dump(s: &Session, args: &RestoreArgs) -> Result<Metadata> {
    let m = dump::read_metadata(&args.file)?;
    let sha = dump::sha256_file(&args.file).map_err(|e| bad_input(format!("{e:#}")))?;
    if sha != m.sha256 {
        return Err(bad_input(format!(
            "{} does not match the SHA-256 recorded when it was made (truncated or corrupt); nothing was changed",
            args.file.display()
        )));
    }
    if m.slug != args.slug {
        return Err(bad_input(format!(
            "{} is a backup of tenant {}, not {}; to restore it under another slug run \
             tenantctl restore {} {} --as {}",
            args.file.display(),
            m.slug,
            args.slug,
            m.slug,
            args.file.display(),
            args.slug
        )));
    }
    let latest = MigrationSet::load(&s.settings.migrations_dir)?.latest();
    if m.version > latest {
        return Err(bad_input(format!(
            "the backup is at version {}, newer than the migrations folder {} knows (latest {latest}); \
             restore it with the migrations it was made with",
            m.version,
            s.settings.migrations_dir.display()
        )));
    }
    Ok(m)
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
    let app_role = s.check_app_role(conn).await?;
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
        format!("tenantctl_restore_{}", std::process::id())
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

/// Loads the dump into this database as `plan.staging`, by way of a scratch database.
async fn stage(
    s: &Session,
    conn: &deadpool_postgres::Object,
    pg_dump: &Tool,
    pg_restore: &Tool,
    file: &Path,
    dumped_schema: &str,
    plan: &Plan,
) -> Result<()> {
    let scratch = format!("tenantctl_restore_{}_{}", std::process::id(), nanos());
    conn.batch_execute(&format!("CREATE DATABASE {}", quote_ident(&scratch)))
        .await
        .pg_context("cannot create a scratch database for the restore (the role needs CREATEDB)")?;
    let restaged = std::env::temp_dir().join(format!("{scratch}.dump"));
    let result = async {
        restore_into(pg_restore, s, &scratch, file).await?;
        rename_in(s, &scratch, dumped_schema, &plan.staging, &plan.schema).await?;
        let mut cmd = dump::command(pg_dump, &s.target, &scratch);
        cmd.args(["--format=custom", "--schema"])
            .arg(quote_ident(&plan.staging))
            .arg("--file")
            .arg(&restaged);
        dump::run(cmd, "pg_dump of the scratch copy".into()).await?;
        let db = s.target.config.get_dbname().unwrap_or_default().to_string();
        restore_into(pg_restore, s, &db, &restaged).await
    }
    .await;
    let _ = std::fs::remove_file(&restaged);
    let _ = conn
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&scratch)
        ))
        .await;
    result
}

async fn restore_into(pg_restore: &Tool, s: &Session, db: &str, file: &Path) -> Result<()> {
    let mut cmd = dump::command(pg_restore, &s.target, db);
    // Owners and privileges are not restored: a dump of another tenant would otherwise bring
    // that tenant's grants along. tenantctl applies this tenant's grants itself.
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--dbname",
        db,
    ])
    .arg(file);
    dump::run(cmd, format!("pg_restore of {}", file.display())).await
}

/// Renames the schema in the scratch database and points every function that pins a
/// search_path at the tenant's final schema (else a tenant restored under a new slug would
/// keep writing into the schema it was copied from). Only the old schema's name is replaced
/// in each path, and `pg_temp` is kept last (`names::repin_search_path`), so a function
/// pinned safely (`pg_catalog, pg_temp`) stays so.
async fn rename_in(s: &Session, db: &str, from: &str, to: &str, final_schema: &str) -> Result<()> {
    let client = connect::connect_db(&s.target, db).await?;
    if from != to {
        client
            .batch_execute(&format!(
                "ALTER SCHEMA {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            ))
            .await
            .pg_context("cannot rename the restored schema")?;
    }
    let pinned = client
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
        client
            .batch_execute(&format!(
                "ALTER FUNCTION {function} SET search_path = {path}"
            ))
            .await
            .with_pg_context(|| format!("cannot re-pin the search_path of {function}"))?;
    }
    Ok(())
}

/// One transaction: drop the replaced schema, rename the staged one, grant, register.
async fn swap(
    conn: &mut deadpool_postgres::Object,
    plan: &Plan,
    m: &Metadata,
    major: i32,
    deadline: std::time::Duration,
) -> Result<()> {
    let (tx, _) = locked_transaction(conn, &plan.slug, &plan.schema, deadline).await?;
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
    sql.push_str(&grants::before_migrations(
        &plan.schema,
        plan.data_role.as_deref(),
    ));
    sql.push_str(&grants::after_migrations(
        &plan.schema,
        plan.data_role.as_deref(),
    ));
    tx.batch_execute(&sql)
        .await
        .pg_context("cannot swap the restored schema in")?;
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
        &tx,
        &plan.slug,
        &plan.schema,
        display.as_deref(),
        m.version,
        role.as_deref(),
    )
    .await?;
    tx.commit().await.pg_context("cannot commit the restore")?;
    Ok(())
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000)
        .unwrap_or(0)
}
