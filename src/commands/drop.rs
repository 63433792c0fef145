//! `tenantctl drop`: destroy tenant schemas, leaving a record of each destruction in
//! public.tenant_drops (when, by which role).

use crate::pg::connect::PgContext;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::DropArgs;
use crate::commands::backup;
use crate::commands::session::{confirm_by_typing, dedup, lookup, Session};
use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::fleet::signals::{self, Signals};
use crate::pg::outfile;
use crate::registry::{self, Tenant};
use crate::tenant::apply::locked_transaction;
use crate::tenant::grants;
use crate::tenant::placement;

pub async fn run(s: &Session, args: &DropArgs) -> Result<u8> {
    let slugs = dedup(&args.slugs);
    let tty = std::io::stdin().is_terminal();
    if !args.yes && !tty {
        return Err(bad_input(
            "refusing to drop without --yes: stdin is not a terminal, so nobody can confirm; nothing was dropped",
        ));
    }
    // Archive paths are checked before anything is changed (the registry included).
    let archive = match &args.archive {
        Some(dir) => Some(plan_archive(dir, args.create_dir, &slugs)?),
        None => None,
    };
    let (_pool, mut conn) = s.connect(1).await?;
    let (found, unknown) = lookup(&conn, &slugs).await?;
    // A tenant elsewhere on a server tenants.toml does not name (or whose password variable
    // is unset) is bad input, found before anything is marked.
    for t in found.iter().filter(|t| !s.at_home(t)) {
        s.servers.target_db(&t.server, &t.database)?;
    }
    if !unknown.is_empty() && !args.if_exists {
        return Err(bad_input(format!(
            "unknown tenant {}; nothing was dropped (see tenantctl list, or pass --if-exists)",
            unknown.join(", ")
        )));
    }
    if !args.yes {
        for t in &found {
            confirm_by_typing(
                &t.slug,
                &format!(
                    "destroy schema {} and every row of tenant {}",
                    t.schema, t.slug
                ),
            )?;
        }
    }
    let mut signals = Signals::listen()?;
    // Every archive is written before anything is dropped: a failed backup stops the command.
    let archives = match &archive {
        Some(plan) => {
            let lock_wait = s.lock_deadline();
            tokio::select! {
                r = archive_all(s, &mut conn, plan, &found, lock_wait) => r?,
                sig = signals.recv() => {
                    let msg = format!("interrupted by {sig}: nothing was dropped and no archive was left");
                    return Ok(signals::interrupted(s.json(), &msg));
                }
            }
        }
        None => vec![None; found.len()],
    };
    let mut dropped = Vec::new();
    for (t, archive) in found.iter().zip(&archives) {
        // A tenant being dropped finishes; none starts after Ctrl-C or SIGTERM.
        if let Some(sig) = signals.received() {
            let msg = format!(
                "interrupted by {sig}: dropped {} of {} tenants ({}); run drop again for the rest",
                dropped.len(),
                found.len(),
                dropped.join(", ")
            );
            return Ok(signals::interrupted(s.json(), &msg));
        }
        let archive = archive.as_ref().map(|(f, h)| (f.as_str(), h.as_str()));
        if s.at_home(t) {
            drop_one(&mut conn, t, archive, s.lock_deadline()).await?;
        } else {
            drop_elsewhere(s, &mut conn, t, archive).await?;
        }
        if !s.json() {
            if s.at_home(t) {
                crate::outln!("dropped {} (schema {})", t.slug, t.schema);
            } else {
                crate::outln!(
                    "dropped {} (schema {}, database {} on server {})",
                    t.slug,
                    t.schema,
                    t.database,
                    t.server
                );
            }
        }
        dropped.push(t.slug.as_str());
    }
    if s.json() {
        crate::output::print_json(&json!({ "dropped": dropped, "not_found": unknown }));
    } else {
        for u in &unknown {
            crate::outln!("{u}: not registered, nothing to drop");
        }
    }
    Ok(0)
}

/// Where `drop --archive` writes each tenant's backup.
struct ArchivePlan {
    dir: PathBuf,
    /// The folder is missing and --create-dir asked for it.
    create: bool,
    files: Vec<(String, PathBuf)>,
}

/// Refuses (exit 2) a missing archive folder (unless it is to be created), a path that is
/// not a folder, and archive files that exist already.
fn plan_archive(dir: &Path, create_dir: bool, slugs: &[String]) -> Result<ArchivePlan> {
    let missing = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => false,
        Ok(_) => {
            return Err(bad_input(format!(
                "archive folder {} is not a folder; nothing was dropped",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(bad_input(format!(
                "cannot use archive folder {}: {e}; nothing was dropped",
                dir.display()
            )))
        }
    };
    if missing && !create_dir {
        return Err(bad_input(format!(
            "archive folder {} does not exist; create it (mode 0700) or pass --create-dir; \
             nothing was dropped",
            dir.display()
        )));
    }
    let files = slugs
        .iter()
        .map(|slug| (slug.clone(), backup::default_file(dir, slug)))
        .collect::<Vec<_>>();
    if !missing {
        for (_, f) in &files {
            backup::check_destination(f)?;
        }
    }
    Ok(ArchivePlan {
        dir: dir.to_path_buf(),
        create: missing,
        files,
    })
}

/// Backs every tenant up into the archive folder; the file name and SHA-256 of each.
async fn archive_all(
    s: &Session,
    conn: &mut deadpool_postgres::Object,
    plan: &ArchivePlan,
    found: &[Tenant],
    deadline: Duration,
) -> Result<Vec<Option<(String, String)>>> {
    if plan.create {
        outfile::create_private_dir(&plan.dir)?;
    }
    let mut archives = Vec::new();
    for t in found {
        let file = plan
            .files
            .iter()
            .find(|(slug, _)| slug == &t.slug)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| backup::default_file(&plan.dir, &t.slug));
        let m = backup::backup_tenant(s, conn, &t.slug, &file, deadline)
            .await
            .with_context(|| format!("cannot archive tenant {}; nothing was dropped", t.slug))?;
        if !s.json() {
            crate::outln!(
                "archived {} to {} (sha256 {})",
                t.slug,
                file.display(),
                m.sha256
            );
        }
        archives.push(Some((file.display().to_string(), m.sha256)));
    }
    Ok(archives)
}

/// Tables dropped per transaction before the schema itself. Each drop locks the table and its
/// indexes, TOAST and sequences until commit; the shared lock table holds only
/// max_locks_per_transaction (default 64) x max_connections entries, so a schema with
/// thousands of tables cannot go in one `DROP SCHEMA ... CASCADE`.
const TABLES_PER_BATCH: i64 = 100;

/// Marks the tenant `dropping` (visible at once, so migrate leaves it alone and a rerun
/// finishes an interrupted drop), empties a large schema in batches, then drops the schema
/// and records it in one transaction.
async fn drop_one(
    conn: &mut deadpool_postgres::Object,
    t: &Tenant,
    archive: Option<(&str, &str)>,
    deadline: Duration,
) -> Result<()> {
    // Marked under the tenant's lock: a migration in flight finishes first, and none starts
    // after (migrate leaves `dropping` tenants alone).
    let (tx, _) = locked_transaction(conn, &t.slug, &t.schema, deadline)
        .await
        .with_context(|| format!("cannot drop tenant {}; it was not changed", t.slug))?;
    registry::set_state(&tx, &t.slug, "dropping").await?;
    tx.commit()
        .await
        .with_pg_context(|| format!("cannot mark tenant {} dropping", t.slug))?;
    while drop_table_batch(conn, t, deadline).await? {}
    let (tx, existed) = locked_transaction(conn, &t.slug, &t.schema, deadline)
        .await
        .with_context(|| rerun_hint(t))?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(&t.schema)
    ))
    .await
    .with_pg_context(|| rerun_hint(t))?;
    if let Some(role) = &t.role {
        tx.batch_execute(&grants::drop_tenant_role(role))
            .await
            .with_pg_context(|| format!("cannot drop role {role} of tenant {}", t.slug))?;
    }
    registry::record_drop(&tx, &t.slug, existed, archive).await?;
    tx.commit().await.with_pg_context(|| rerun_hint(t))?;
    Ok(())
}

/// Drops a tenant that lives elsewhere than the registry's database. Its row and its schema
/// cannot go in one transaction, so: the row is marked `dropping` on home (under the
/// tenant's lock there, which a create elsewhere holds while it runs); the schema is
/// dropped where it lives, under its lock there and in batches as at home, or its own
/// database dropped; its own role is dropped on its server unless another tenant there
/// uses it; then the drop is recorded on home. A failure anywhere leaves the tenant marked
/// `dropping`, and running drop again finishes (everything is dropped IF EXISTS).
async fn drop_elsewhere(
    s: &Session,
    home: &mut deadpool_postgres::Object,
    t: &Tenant,
    archive: Option<(&str, &str)>,
) -> Result<()> {
    let deadline = s.lock_deadline();
    let (tx, _) = locked_transaction(home, &t.slug, &t.schema, deadline)
        .await
        .with_context(|| format!("cannot drop tenant {}; it was not changed", t.slug))?;
    registry::set_state(&tx, &t.slug, "dropping").await?;
    tx.commit()
        .await
        .with_pg_context(|| format!("cannot mark tenant {} dropping", t.slug))?;
    let existed = if t.database == t.schema {
        drop_own_database(s, t).await
    } else {
        drop_schema_there(s, t).await
    }
    .with_context(|| rerun_hint_far(t))?;
    if let Some(role) = &t.role {
        if !registry::role_used_by_others(&*home, &t.server, role, &t.slug).await? {
            let (_pool, admin) = s
                .connect_place(&t.server, server_database(s, t)?.as_str(), 1)
                .await
                .with_context(|| rerun_hint_far(t))?;
            placement::drop_role(&admin, role)
                .await
                .with_context(|| rerun_hint_far(t))?;
        }
    }
    let tx = home
        .transaction()
        .await
        .with_pg_context(|| rerun_hint_far(t))?;
    registry::record_drop(&tx, &t.slug, existed, archive).await?;
    tx.commit().await.with_pg_context(|| rerun_hint_far(t))?;
    Ok(())
}

/// The tenant's schema, dropped in the database where it lives; whether it existed.
async fn drop_schema_there(s: &Session, t: &Tenant) -> Result<bool> {
    let deadline = s.lock_deadline();
    let (_pool, mut conn) = s.connect_place(&t.server, &t.database, 1).await?;
    while drop_table_batch(&mut conn, t, deadline).await? {}
    let (tx, existed) = locked_transaction(&mut conn, &t.slug, &t.schema, deadline).await?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(&t.schema)
    ))
    .await
    .pg_context("cannot drop the schema")?;
    tx.commit().await.pg_context("cannot drop the schema")?;
    Ok(existed)
}

/// The tenant's own database, dropped `WITH (FORCE)`; whether it existed. A migration of
/// the tenant in flight finishes first (its lock is taken in the database, then let go:
/// migrate leaves `dropping` tenants alone, and FORCE ends any session still there).
async fn drop_own_database(s: &Session, t: &Tenant) -> Result<bool> {
    let own = server_database(s, t)?;
    let (_pool, admin) = s.connect_place(&t.server, &own, 1).await?;
    if !placement::database_exists(&admin, &t.database).await? {
        return Ok(false);
    }
    {
        let (_pool, mut conn) = s.connect_place(&t.server, &t.database, 1).await?;
        let (tx, _) = locked_transaction(&mut conn, &t.slug, &t.schema, s.lock_deadline()).await?;
        tx.commit()
            .await
            .pg_context("cannot release the tenant's lock")?;
    }
    placement::drop_database(&admin, &t.database).await?;
    Ok(true)
}

/// The database a server's url names (where tenantctl connects to drop a database or a role).
fn server_database(s: &Session, t: &Tenant) -> Result<String> {
    let target = s.servers.target(&t.server)?;
    Ok(target.config.get_dbname().unwrap_or_default().to_string())
}

fn rerun_hint_far(t: &Tenant) -> String {
    format!(
        "cannot drop tenant {} on server {} (database {}); it stays marked dropping, run drop \
         again to finish",
        t.slug, t.server, t.database
    )
}

/// Drops up to TABLES_PER_BATCH tables of a schema that has more than that, in a committed
/// transaction of its own. Returns whether it dropped anything.
async fn drop_table_batch(
    conn: &mut deadpool_postgres::Object,
    t: &Tenant,
    deadline: Duration,
) -> Result<bool> {
    let (tx, _) = locked_transaction(conn, &t.slug, &t.schema, deadline)
        .await
        .with_context(|| rerun_hint(t))?;
    let rows = tx
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition \
              ORDER BY c.relname LIMIT $2::bigint + 1",
            &[&t.schema, &TABLES_PER_BATCH],
        )
        .await
        .pg_context("cannot list the tenant's tables")?;
    if (rows.len() as i64) <= TABLES_PER_BATCH {
        return Ok(false); // small enough for the final DROP SCHEMA
    }
    let schema = quote_ident(&t.schema);
    let tables: Vec<String> = rows
        .iter()
        .take(TABLES_PER_BATCH as usize)
        .map(|r| format!("{schema}.{}", quote_ident(r.get::<_, &str>(0))))
        .collect();
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {} CASCADE",
        tables.join(", ")
    ))
    .await
    .with_pg_context(|| rerun_hint(t))?;
    tx.commit().await.with_pg_context(|| rerun_hint(t))?;
    Ok(true)
}

fn rerun_hint(t: &Tenant) -> String {
    format!(
        "cannot drop schema {} of tenant {}; it stays marked dropping, run drop again to finish",
        t.schema, t.slug
    )
}
