//! `tenantctl move SLUG --node HOST:PORT [--block-writes] [--dry-run]`: on the Citus
//! coordinator where the tenant lives (home, or a `[servers.NAME]`), moves its distributed
//! schema to another worker node with citus_schema_move, holding the tenant's lock on that
//! coordinator throughout (no migrate, backup or other move of it meanwhile), and records
//! it in public.tenant_moves on home. The checks
//! and the move are `tenant::citus_schema`'s (docs/citus.md).

use std::time::Instant;

use anyhow::{Context, Result};
use deadpool_postgres::Object;
use serde_json::json;

use crate::cli::MoveArgs;
use crate::commands::relocate::check_state;
use crate::commands::session::Session;
use crate::domain::exit::bad_input;
use crate::fleet::signals::{self, Signals};
use crate::output::{count, escape};
use crate::pg::connect;
use crate::registry::{self, locks, MoveRecord, NodeMoveRecord, Placement, Tenant};
use crate::tenant::citus_schema::{NodeMove, SchemaOps};

pub async fn run(s: &Session, args: &MoveArgs, node: &str) -> Result<u8> {
    s.schemas_for(std::slice::from_ref(&args.slug))?;
    // Two sessions where the tenant lives: the move's, and one to cancel it on Ctrl-C.
    let (home_pool, home) = s.connect(2).await?;
    if s.servers.names().len() == 1 {
        // Plain PostgreSQL and no other server: refused before any tenant is looked at.
        s.backend()
            .schema_ops("move --node", &s.target.describe())?;
    }
    let t = tenant(&home, &args.slug).await?;
    let place = Placement {
        server: t.server.clone(),
        database: t.database.clone(),
    };
    let at = format!("server {} (database {})", place.server, place.database);
    let (pool, conn) = match s.at_home(&t) {
        true => (home_pool, None),
        false => {
            let (pool, conn) = s.connect_place(&place.server, &place.database, 2).await?;
            (pool, Some(conn))
        }
    };
    let work = conn.as_ref().unwrap_or(&home);
    let ops = s
        .backend_at(&place.server, &place.database)
        .schema_ops("move --node", &at)?;
    if args.dry_run {
        let m = ops.plan_move(work, &t, node, args.online).await?;
        return dry_run(s, &ops, work, &m, &place).await;
    }
    // The tenant's lock where it lives, as every tenant transaction there takes it.
    locks::hold_tenant_within(work, &t.slug, &t.schema, s.lock_deadline())
        .await
        .with_context(|| format!("cannot move tenant {}; nothing was changed", t.slug))?;
    // Marked as tenantctl's: a migrate meeting the lock waits for the move instead of
    // failing the tenant at its --lock-timeout.
    let _ = locks::mark_session(work).await;
    let at_place = At {
        home: &home,
        work,
        place: &place,
    };
    let result = locked(s, &ops, &pool, &at_place, &t.slug, node, args.online).await;
    let _ = locks::release_tenant(work, &t.schema).await;
    let _ = locks::unmark_session(work).await;
    result
}

/// Where a node move runs: home (the registry), the tenant's place (a Citus coordinator's
/// database: home's or a `[servers.NAME]`'s) and a session there.
struct At<'a> {
    home: &'a Object,
    work: &'a Object,
    place: &'a Placement,
}

/// The tenant, checked: known and `active`.
async fn tenant(home: &Object, slug: &str) -> Result<Tenant> {
    let t = registry::some(home, &[slug.to_string()])
        .await?
        .pop()
        .ok_or_else(|| {
            bad_input(format!(
                "unknown tenant {slug}; nothing was changed (see tenantctl list)"
            ))
        })?;
    check_state(&t)?;
    Ok(t)
}

/// Under the tenant's lock: the checks again (the tenant may have changed while the lock
/// was awaited), then the move and its record.
async fn locked(
    s: &Session,
    ops: &SchemaOps,
    pool: &deadpool_postgres::Pool,
    at: &At<'_>,
    slug: &str,
    node: &str,
    online: bool,
) -> Result<u8> {
    let t = tenant(at.home, slug).await?;
    if (t.server.as_str(), t.database.as_str()) != (&at.place.server, &at.place.database) {
        return Err(bad_input(format!(
            "tenant {slug} was moved to server {} (database {}) while this command waited \
             for it; nothing was changed (run it again)",
            t.server, t.database
        )));
    }
    let m = ops.plan_move(at.work, &t, node, online).await?;
    let canceller = pool
        .get()
        .await
        .context("cannot open a second session to the coordinator; nothing was changed")?;
    let pid = connect::backend_pid(at.work).await?;
    let mut signals = Signals::listen()?;
    let started = Instant::now();
    let moving = ops.run_move(at.work, &m);
    tokio::pin!(moving);
    let outcome = tokio::select! {
        r = &mut moving => r.map(|_| None),
        sig = signals.recv() => {
            // citus_schema_move is one statement: cancelled, it rolls back and the tenant
            // stays where it was (docs/citus.md). It may also have finished meanwhile.
            connect::cancel_backend(&canceller, pid).await;
            match moving.await {
                Ok(()) => Ok(None),
                Err(_) => Ok(Some(sig)),
            }
        }
    };
    let duration = started.elapsed();
    match outcome {
        Ok(Some(sig)) => {
            let now = ops.node_of(&canceller, &m.schema).await.ok().flatten();
            let msg = format!(
                "interrupted by {sig}: citus_schema_move was cancelled; tenant {} stays on \
                 node {} and writable (Citus drops the partial copy on {} itself)",
                m.slug,
                now.unwrap_or_else(|| m.from.clone()),
                m.to
            );
            Ok(signals::interrupted(s.json(), &msg))
        }
        Err(e) => Err(e.context(format!(
            "the move failed; tenant {} stays on node {}",
            m.slug, m.from
        ))),
        Ok(None) => {
            let warning = record(at, &m, duration.as_millis() as i64)
                .await
                .err()
                .map(|e| format!("{e:#}; the tenant did move to node {}", m.to));
            Ok(report(s, &m, at.place, duration.as_millis(), warning))
        }
    }
}

/// The move's row in public.tenant_moves: server and database stay (the tenant's place, a
/// coordinator's database); the nodes and the mode are V11's columns. Citus reports no row
/// count (0); the application's writes waited the whole move in block_writes mode, and only
/// for the final catch-up in auto mode (not measured: 0).
async fn record(at: &At<'_>, m: &NodeMove, duration_ms: i64) -> Result<()> {
    let (home, place) = (at.home, at.place.clone());
    let rec = MoveRecord {
        slug: m.slug.clone(),
        schema: m.schema.clone(),
        from: place.clone(),
        to: place,
        tables: m.tables as i32,
        rows: 0,
        writes_stopped_ms: if m.mode == "block_writes" {
            duration_ms
        } else {
            0
        },
        duration_ms,
        nodes: Some(NodeMoveRecord {
            from: m.from.clone(),
            to: m.to.clone(),
            mode: m.mode.to_string(),
        }),
    };
    registry::record_node_move(home, &rec, None)
        .await
        .map(|_| ())
}

fn node_json(place: &Placement, node: &str) -> serde_json::Value {
    json!({"server": place.server, "database": place.database, "node": node})
}

/// Why the mode, for the operator.
fn mode_reason(m: &NodeMove) -> String {
    match (m.mode, m.unkeyed.is_empty()) {
        ("auto", _) => "auto, as asked (--online): logical replication, writes go on".to_string(),
        (_, true) => "block_writes: writes wait for the move, reads go on".to_string(),
        (_, false) => format!(
            "block_writes: writes wait for the move, although --online was given, because {} \
             no primary key or replica identity",
            match m.unkeyed.len() {
                1 => format!("table {} has", escape(&m.unkeyed[0])),
                _ => format!(
                    "tables {} have",
                    m.unkeyed
                        .iter()
                        .map(|t| escape(t))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        ),
    }
}

async fn dry_run(
    s: &Session,
    ops: &SchemaOps,
    work: &Object,
    m: &NodeMove,
    place: &Placement,
) -> Result<u8> {
    let bytes = ops.size(work, &m.schema).await?;
    if s.json() {
        crate::output::print_json(&json!({
            "dry_run": true, "slug": m.slug, "schema": m.schema,
            "from": node_json(place, &m.from), "to": node_json(place, &m.to),
            "tables": m.tables, "bytes": bytes, "transfer_mode": m.mode,
            "unkeyed_tables": m.unkeyed,
        }));
        return Ok(0);
    }
    crate::outln!(
        "would move tenant {} (schema {}) from node {} to node {} with citus_schema_move ({}): \
         {}, {} kB; nothing was changed",
        m.slug,
        escape(&m.schema),
        m.from,
        m.to,
        mode_reason(m),
        count(m.tables, "table"),
        bytes / 1024
    );
    Ok(0)
}

fn report(
    s: &Session,
    m: &NodeMove,
    place: &Placement,
    took_ms: u128,
    warning: Option<String>,
) -> u8 {
    if let Some(w) = &warning {
        crate::errln!("warning: {w}");
    }
    let stopped_ms = if m.mode == "block_writes" { took_ms } else { 0 };
    if s.json() {
        crate::output::print_json(&json!({
            "slug": m.slug, "schema": m.schema,
            "from": node_json(place, &m.from), "to": node_json(place, &m.to),
            "tables": m.tables, "transfer_mode": m.mode,
            "writes_stopped_ms": stopped_ms, "duration_ms": took_ms,
            "warnings": warning.iter().collect::<Vec<_>>(),
        }));
    } else {
        crate::outln!(
            "moved tenant {} (schema {}) from node {} to node {} with citus_schema_move ({}): \
             {}; took {took_ms} ms",
            m.slug,
            escape(&m.schema),
            m.from,
            m.to,
            mode_reason(m),
            count(m.tables, "table"),
        );
    }
    match warning {
        None => 0,
        Some(_) => crate::domain::exit::FAILED,
    }
}
