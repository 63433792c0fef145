//! `migrate` for tenants that live elsewhere than the registry's database (another server,
//! or a database of their own; docs/placements.md). The registry row lives on home and the
//! schema elsewhere, so they cannot commit together: each tenant's migrations and history
//! commit in one transaction where it lives (its lock held there), then its row on home is
//! updated. The history is always read first (never vouched for by the registry), so a row
//! left behind by a crash between the two commits is put right by the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::commands::session::{now_epoch, Session};
use crate::domain::migration_set::MigrationSet;
use crate::fleet::{self, Interrupt};
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::pg::connect;
use crate::pg::txn::Tx;
use crate::registry::{self, Tenant};
use crate::tenant::apply::{self, apply_pending, ApplyError, History};
use crate::tenant::no_transaction;
use crate::tenant::shared::SharedSet;

/// What every tenant of one run needs.
pub struct Run<'a> {
    pub home: Pool,
    pub set: Arc<MigrationSet>,
    pub target: i64,
    pub lock_timeout: Option<Duration>,
    pub concurrency: usize,
    pub fail_fast: bool,
    pub interrupt: &'a Interrupt,
    pub progress: &'a Progress,
}

/// Migrates `tenants` (all elsewhere, none answered from the registry), one pool per server
/// and database, each with the run's concurrency. A server that cannot be reached fails
/// its own tenants, with its name; the others go on.
pub async fn run(s: &Session, run: &Run<'_>, tenants: Vec<Tenant>) -> Vec<TenantOutcome> {
    let mut places: Vec<(String, String)> = tenants
        .iter()
        .map(|t| (t.server.clone(), t.database.clone()))
        .collect();
    places.sort();
    places.dedup();
    let mut outcomes = Vec::new();
    let mut tenants = tenants;
    for (server, database) in places {
        let (here, rest): (Vec<Tenant>, Vec<Tenant>) = tenants
            .into_iter()
            .partition(|t| t.server == server && t.database == database);
        tenants = rest;
        if run.interrupt.is_set() {
            outcomes.extend(here.iter().map(|t| {
                TenantOutcome::skipped(&t.slug, &t.schema, t.version, "not started: interrupted")
            }));
            continue;
        }
        let ready = pool_for(s, &server, &database, run.concurrency.min(here.len()))
            .await
            .map_err(|e| unreachable(&server, &database, &e));
        match ready {
            Ok(pool) => outcomes.extend(run_place(run, &server, pool, here).await),
            Err(msg) => {
                for t in here {
                    let o = TenantOutcome::failed(&t.slug, &t.schema, t.version, msg.clone());
                    run.progress.finish_one(&o);
                    if let Ok(c) = run.home.get().await {
                        let _ =
                            registry::record_failure(&c, &t.slug, &msg, None, now_epoch()).await;
                    }
                    outcomes.push(o);
                }
            }
        }
    }
    outcomes
}

fn unreachable(server: &str, database: &str, e: &anyhow::Error) -> String {
    format!("server {server} (database {database}) cannot be reached: {e:#}; nothing was applied")
}

/// The shared migrations at every place other than home where `tenants` live, before any
/// tenant is migrated, even one with nothing of its own to apply: its tables may reference
/// them. Returns the places where they failed, with why; their tenants must not be migrated.
pub async fn shared_everywhere(
    s: &Session,
    sh: &SharedSet,
    lock_timeout: Option<Duration>,
    tenants: &[Tenant],
) -> BTreeMap<(String, String), String> {
    let places: BTreeSet<(String, String)> = tenants
        .iter()
        .map(|t| (t.server.clone(), t.database.clone()))
        .collect();
    let mut failed = BTreeMap::new();
    for (server, database) in places {
        let result = match pool_for(s, &server, &database, 1).await {
            Ok(pool) => shared_at(&pool, sh, lock_timeout, &server, &database).await,
            Err(e) => Err(unreachable(&server, &database, &e)),
        };
        if let Err(why) = result {
            failed.insert((server, database), why);
        }
    }
    failed
}

async fn shared_at(
    pool: &Pool,
    sh: &SharedSet,
    lock_timeout: Option<Duration>,
    server: &str,
    database: &str,
) -> Result<(), String> {
    let conn = pool
        .get()
        .await
        .map_err(|e| format!("server {server} (database {database}): {e}; nothing was applied"))?;
    let r = super::migrate::apply_shared(&conn, sh, lock_timeout).await;
    match r.error {
        None => Ok(()),
        Some(e) => Err(format!(
            "the shared migrations in schema {} failed on server {server} (database \
             {database}): {e}; nothing was applied to its tenants",
            r.schema
        )),
    }
}

async fn pool_for(s: &Session, server: &str, database: &str, size: usize) -> anyhow::Result<Pool> {
    let target = s.servers.target_db(server, database)?;
    let pool = connect::pool(&target, size.max(1))?;
    drop(connect::first_connection(&pool, &target).await?);
    Ok(pool)
}

async fn run_place(
    run: &Run<'_>,
    server: &str,
    pool: Pool,
    here: Vec<Tenant>,
) -> Vec<TenantOutcome> {
    let jobs: Vec<Tenant> = here;
    let shared = Arc::new((
        run.home.clone(),
        pool,
        run.set.clone(),
        run.target,
        run.lock_timeout,
        server.to_string(),
    ));
    fleet::run(
        jobs,
        run.concurrency,
        run.fail_fast,
        run.interrupt,
        run.progress,
        |j| {
            let shared = shared.clone();
            async move {
                let (home, pool, set, target, lock_timeout, server) = &*shared;
                let mut o = migrate_one(home, pool, set, *target, *lock_timeout, &j).await;
                let place = format!("on server {server}");
                o.note = Some(match o.note.take() {
                    Some(n) => format!("{n}; {place}"),
                    None => place,
                });
                if let Some(e) = o.error.take() {
                    o.error = Some(format!("{e} (server {server})"));
                }
                o
            }
        },
    )
    .await
}

async fn migrate_one(
    home: &Pool,
    pool: &Pool,
    set: &MigrationSet,
    target: i64,
    lock_timeout: Option<Duration>,
    t: &Tenant,
) -> TenantOutcome {
    let started = Instant::now();
    let epoch = now_epoch();
    if no_transaction::needed(t, set, target).is_some() {
        let msg = "a migration that runs alone (-- no-transaction) cannot yet be applied to a \
                   tenant on another server; nothing was applied";
        return TenantOutcome::failed(&t.slug, &t.schema, t.version, msg);
    }
    let result = apply_far(home, pool, set, target, lock_timeout, t).await;
    match result {
        Ok(applied) => {
            let kind = if applied.migrations.is_empty() {
                Outcome::UpToDate
            } else {
                Outcome::Applied
            };
            let mut o = TenantOutcome::new(&t.slug, &t.schema, kind, t.version, applied.version);
            o.migrations = applied.migrations.iter().map(|m| m.to_string()).collect();
            o.took(started.elapsed())
        }
        Err(e) => {
            let msg = e.to_string();
            if let Ok(c) = home.get().await {
                let _ =
                    registry::record_failure(&c, &t.slug, &msg, e.failed_migration(), epoch).await;
            }
            TenantOutcome::failed(&t.slug, &t.schema, t.version, msg).took(started.elapsed())
        }
    }
}

/// The tenant's migrations and history in one transaction where it lives, then its
/// registry row on home. Should the second step fail (or tenantctl die between them), the
/// tenant's schema is ahead of its row; the next run reads its history, applies nothing
/// and records the version it found.
async fn apply_far(
    home: &Pool,
    pool: &Pool,
    set: &MigrationSet,
    target: i64,
    lock_timeout: Option<Duration>,
    t: &Tenant,
) -> Result<apply::Applied, ApplyError> {
    let client = pool.get().await.map_err(|e| {
        ApplyError::Refused(format!(
            "no connection: {}",
            connect::describe_pool_error(&e)
        ))
    })?;
    let applied = {
        let mut tx = Tx::begin(&client);
        let applied =
            apply_pending(&mut tx, &t.schema, set, target, lock_timeout, History::Read).await?;
        apply::commit(&mut tx, &applied).await?;
        applied
    };
    drop(client);
    let home = home.get().await.map_err(|e| {
        ApplyError::Refused(format!(
            "its migrations were committed on its server, but the registry on home could not be \
             reached to record them ({}); the next migrate records them",
            connect::describe_pool_error(&e)
        ))
    })?;
    let mut tx = Tx::begin(&home);
    tx.queue_sql(registry::record_success(
        &t.slug,
        applied.version,
        set.digest_at(applied.version),
        &applied.migrations,
    ))
    .await?;
    tx.commit().await?;
    Ok(applied)
}
