//! `tenantctl drop`: destroy tenant schemas, leaving a record of each destruction in
//! public.tenant_drops (when, by which role).

use crate::pg::connect::PgContext;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::DropArgs;
use crate::commands::backup;
use crate::commands::session::{confirm_by_typing, dedup, lookup, Session};
use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::registry::{self, Tenant};
use crate::tenant::apply::locked_transaction;
use crate::tenant::grants;

pub async fn run(s: &Session, args: &DropArgs) -> Result<u8> {
    let slugs = dedup(&args.slugs);
    let tty = std::io::stdin().is_terminal();
    if !args.yes && !tty {
        return Err(bad_input(
            "refusing to drop without --yes: stdin is not a terminal, so nobody can confirm; nothing was dropped",
        ));
    }
    let (_pool, mut conn) = s.connect(1).await?;
    let (found, unknown) = lookup(&conn, &slugs).await?;
    if !unknown.is_empty() && !args.if_exists {
        return Err(bad_input(format!(
            "unknown {}; nothing was dropped (see tenantctl list, or pass --if-exists)",
            crate::output::listed("tenant", &unknown)
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
    // Every archive is written before anything is dropped: a failed backup stops the command.
    let mut archives = Vec::new();
    if let Some(dir) = &args.archive {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create archive folder {}", dir.display()))?;
        for t in &found {
            let file = backup::default_file(dir, &t.slug);
            let m = backup::backup_tenant(s, &mut conn, &t.slug, &file)
                .await
                .with_context(|| {
                    format!("cannot archive tenant {}; nothing was dropped", t.slug)
                })?;
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
    } else {
        archives.resize(found.len(), None);
    }
    let mut dropped = Vec::new();
    for (t, archive) in found.iter().zip(&archives) {
        drop_one(
            &mut conn,
            t,
            archive.as_ref().map(|(f, h)| (f.as_str(), h.as_str())),
            s.lock_deadline(),
        )
        .await?;
        if !s.json() {
            crate::outln!("dropped {} (schema {})", t.slug, t.schema);
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
