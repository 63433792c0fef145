//! Migrations that run alone, outside a transaction (files whose first line is
//! `-- no-transaction`), and the tenant runs that hold one.
//!
//! Such a run goes in steps, each committed on its own: the transactional migrations before
//! the file in one transaction, as every run does (`apply::apply_pending`); then the file
//! alone; then the next ones. Each step holds the tenant's advisory lock at session level:
//! the same key as the transaction-level lock every other run takes, so the two exclude
//! each other. It is taken by polling (`pg_try_advisory_lock`), never by waiting: a
//! statement waiting for a lock holds a snapshot, and `CREATE INDEX CONCURRENTLY` waits for
//! every older snapshot to end, so a session waiting for the lock of a tenant whose index
//! is being built concurrently would deadlock with that build. (The transaction of a step
//! then takes the lock again, which a session holding it always gets at once.)
//!
//! The file alone runs on the connection of the tenant's run:
//! 1. the tenant's lock, as above;
//! 2. under it, the registry row (still there, not being dropped) and the history read
//!    and checked against the files: the file must be the next one pending (another
//!    process may have applied it meanwhile);
//! 3. search_path (the tenant's schema only) and `--lock-timeout` set for the session, and
//!    on Citus the backend's settings (`Backend::session_prologue`);
//! 4. each statement sent on its own: `CREATE INDEX CONCURRENTLY` refuses even the implicit
//!    transaction of a multi-statement query;
//! 5. the session reset (but for the lock), then one transaction writing the history row,
//!    the registry row and the status row;
//! 6. the session reset again, which releases the lock; on every path.
//!
//! A failure in step 4 leaves the statements before it applied (each committed on its
//! own), and the tenant at its previous version with the error recorded; the next run
//! starts the file again from its first statement (README: "What a migration file may
//! hold").

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use refinery::Migration;
use time::format_description::well_known::Rfc3339;

use crate::domain::migration_set::{AppliedMigration, MigrationSet, Plan};
use crate::domain::names::tenant_search_path;
use crate::domain::sql_split;
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::pg::connect::{describe_pg_error, describe_pool_error};
use crate::pg::txn::{Sql, Step, Tx, RESET_SESSION};
use crate::registry::locks::LOCK_CLASS;
use crate::registry::{self, Tenant};
use crate::tenant::apply::{self, apply_pending, history_table, read_history, ApplyError, History};
use crate::tenant::citus::{Backend, Work};

/// `txn::RESET_SESSION` without `pg_catalog.pg_advisory_unlock_all()`: undoes what the file set for
/// the session (a `SET` of its own, a temp table) before the history and registry are
/// written, while the tenant's lock is still held.
const RESET_KEEPING_LOCK: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES";

/// Takes the tenant's lock (`$1`, `pg_catalog.hashtext($2)`) for the session when it is free: held
/// across the statements of a file that commit one by one. Says whether it was taken.
const TRY_LOCK_SESSION: &str =
    "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))";

/// How long to wait between two attempts at a tenant's lock, at first and at most.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(500);

/// Points the session's search_path at the tenant's schema (`$1`, quoted) and nothing
/// else, and sets lock_timeout to `$2` (unchanged when NULL).
const ENTER_SESSION: &str = "SELECT pg_catalog.set_config('search_path', $1, false), \
    pg_catalog.set_config('lock_timeout', coalesce($2::text, pg_catalog.current_setting('lock_timeout')), false)";

/// One tenant's run.
pub struct TenantRun<'a> {
    pub slug: &'a str,
    pub schema: &'a str,
    pub set: &'a MigrationSet,
    pub target: i64,
    pub lock_timeout: Option<Duration>,
    /// The registry's pool when the tenant lives elsewhere (another server, or a database
    /// of its own): the client then reaches the tenant only, so each step commits where the
    /// tenant lives (its lock held there) and its registry row is written on home after
    /// (behind it, never ahead, as `migrate` elsewhere). `None`: the client reaches both,
    /// and they commit together.
    pub home: Option<&'a Pool>,
    /// Where the tenant's schema is (Citus or plain PostgreSQL): how each transaction
    /// starts and how the file's session is prepared.
    pub backend: &'a Backend,
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The registry vouches for the tenant's history up to this version (its fingerprint
    /// matches the files), and its row says so.
    Registry(i64),
    /// The history is read first.
    Unknown,
}

/// What a run committed.
#[derive(Debug, Clone, Default)]
pub struct Reached {
    /// The tenant's version when the run ended.
    pub version: i64,
    /// The migrations applied, in order.
    pub applied: Vec<AppliedMigration>,
}

impl Reached {
    pub fn names(&self) -> Vec<String> {
        self.applied.iter().map(ToString::to_string).collect()
    }
}

/// A run that stopped: why, and what it had committed before.
#[derive(Debug)]
pub struct Stopped {
    pub error: ApplyError,
    pub reached: Reached,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.reached.applied.is_empty() {
            write!(
                f,
                " (applied before it and kept: {}; the tenant is at version {})",
                self.reached.names().join(", "),
                self.reached.version
            )?;
        }
        Ok(())
    }
}

/// When a tenant's run holds a migration that runs alone, where the run starts. Decided
/// from what the registry vouches for, else from no history at all, so that such a
/// migration never reaches a run that applies everything in one transaction.
pub fn needed(t: &Tenant, set: &MigrationSet, target: i64) -> Option<Start> {
    let start = match History::for_tenant(t, set) {
        History::Registry { version, .. } => Start::Registry(version),
        _ => Start::Unknown,
    };
    let from = match start {
        Start::Registry(v) => v,
        Start::Unknown => 0,
    };
    set.next_no_transaction(from, target).map(|_| start)
}

/// The version before the first migration that runs alone (up to `target`), or `target`:
/// what `create` applies in its one transaction.
pub fn first_stop(set: &MigrationSet, target: i64) -> i64 {
    set.next_no_transaction(0, target)
        .map_or(target, |m| set.version_before(m.version() as i64))
}

/// `migrate` for one tenant whose run holds a migration that runs alone: the run, its
/// outcome, and a failure recorded in the registry.
pub async fn migrate_tenant(
    client: &Object,
    run: &TenantRun<'_>,
    t: &Tenant,
    start: Start,
    started: Instant,
    started_epoch: f64,
) -> TenantOutcome {
    match self::run(client, run, start).await {
        Ok(reached) => {
            let kind = if reached.applied.is_empty() {
                Outcome::UpToDate
            } else {
                Outcome::Applied
            };
            let mut o = TenantOutcome::new(&t.slug, &t.schema, kind, t.version, reached.version);
            o.migrations = reached.names();
            if t.state == "migrating" {
                o.note = Some("recovered from an interrupted run".into());
            }
            o.took(started.elapsed())
        }
        Err(stopped) => {
            let msg = stopped.to_string();
            let failed = stopped.error.failed_migration();
            match run.home {
                None => {
                    let _ = registry::record_failure(client, &t.slug, &msg, failed, started_epoch)
                        .await;
                }
                Some(home) => {
                    if let Ok(c) = home.get().await {
                        let _ = registry::record_failure(&c, &t.slug, &msg, failed, started_epoch)
                            .await;
                    }
                }
            }
            let mut o = TenantOutcome::failed(&t.slug, &t.schema, t.version, msg);
            if !stopped.reached.applied.is_empty() {
                o.to_version = stopped.reached.version;
                o.migrations = stopped.reached.names();
            }
            o.took(started.elapsed())
        }
    }
}

/// Brings the tenant to `run.target` in steps: the transactional migrations before a file
/// that runs alone in one transaction, that file alone, and so on. Every step commits with
/// the tenant's history, registry row and status rows; only the last marks it `active`.
pub async fn run(client: &Object, run: &TenantRun<'_>, start: Start) -> Result<Reached, Stopped> {
    let mut reached = Reached::default();
    let stop = |error: ApplyError, reached: &Reached| Stopped {
        error,
        reached: reached.clone(),
    };
    // `version` is where the tenant is known to be; `in_sync`, whether its registry row
    // says so with a fingerprint (then a step needs no history read first).
    let (mut version, mut in_sync) = match start {
        Start::Registry(v) => (v, true),
        Start::Unknown => (
            current_version(client, run)
                .await
                .map_err(|e| stop(e, &reached))?,
            false,
        ),
    };
    reached.version = version;
    // Each turn moves the tenant on, unless another process moved it meanwhile; the bound
    // only stops a run that keeps losing that race.
    for _ in 0..2 * run.set.migrations.len() + 4 {
        let Some(next) = run.set.next_no_transaction(version, run.target) else {
            let (v, applied) = locked_batch(client, run, run.target, version, in_sync, true)
                .await
                .map_err(|e| stop(e, &reached))?;
            reached.version = v;
            reached.applied.extend(applied);
            return Ok(reached);
        };
        let alone_version = next.version() as i64;
        let before = run.set.version_before(alone_version);
        if before > version {
            let (v, applied) = locked_batch(client, run, before, version, in_sync, false)
                .await
                .map_err(|e| stop(e, &reached))?;
            (version, in_sync) = (v, true);
            reached.version = v;
            reached.applied.extend(applied);
            continue;
        }
        let last = run.set.pending_count(alone_version, run.target) == 0;
        match alone(client, run, next, last)
            .await
            .map_err(|e| stop(e, &reached))?
        {
            Alone::Applied(m) => {
                (version, in_sync) = (alone_version, true);
                reached.version = version;
                reached.applied.push(m);
                if last {
                    return Ok(reached);
                }
            }
            Alone::Elsewhere(v) => {
                (version, in_sync) = (v, false);
                reached.version = v;
            }
        }
    }
    Err(stop(
        ApplyError::Refused(
            "the tenant kept changing while this run migrated it (another tenantctl?); run the \
             command again"
                .into(),
        ),
        &reached,
    ))
}

/// The tenant's version by its history table, which must agree with the files.
async fn current_version(client: &Object, run: &TenantRun<'_>) -> Result<i64, ApplyError> {
    let history = read_history(client, run.schema).await?.unwrap_or_default();
    match run.set.plan(&history, run.target) {
        Plan::Diverged(why) => Err(ApplyError::Diverged(why)),
        Plan::Apply(_) => Ok(history.iter().map(|a| a.version).max().unwrap_or(0)),
    }
}

/// `batch` under the tenant's session lock.
async fn locked_batch(
    client: &Object,
    run: &TenantRun<'_>,
    stop: i64,
    version: i64,
    in_sync: bool,
    last: bool,
) -> Result<(i64, Vec<AppliedMigration>), ApplyError> {
    lock(client, run.schema).await?;
    let result = batch(client, run, stop, version, in_sync, last).await;
    release(client).await;
    result
}

/// Takes the tenant's lock for the session, polling until it is free (see the header).
async fn lock(client: &Object, schema: &str) -> Result<(), ApplyError> {
    let stmt = client.prepare_cached(TRY_LOCK_SESSION).await?;
    let mut pause = POLL_FIRST;
    loop {
        let taken: bool = client
            .query_one(&stmt, &[&LOCK_CLASS, &schema])
            .await
            .map_err(|e| ApplyError::pg("cannot lock the tenant schema", e))?
            .get(0);
        if taken {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The pending transactional migrations up to `stop`, in one transaction with their
/// registry row (see `apply::apply_pending`); decided again from the history table when
/// the registry turns out to have moved.
async fn batch(
    client: &Object,
    run: &TenantRun<'_>,
    stop: i64,
    version: i64,
    in_sync: bool,
    last: bool,
) -> Result<(i64, Vec<AppliedMigration>), ApplyError> {
    // Elsewhere the registry is not in the tenant's transaction to vouch for anything.
    let vouched = (in_sync && run.home.is_none())
        .then(|| run.set.digest_at(version))
        .flatten()
        .filter(|_| version > 0);
    let history = match vouched {
        Some(digest) => History::Registry {
            slug: run.slug,
            version,
            digest,
        },
        None => History::Read,
    };
    match one_transaction(client, run, stop, history, last).await {
        Err(ApplyError::Stale) => one_transaction(client, run, stop, History::Read, last).await,
        other => other,
    }
}

async fn one_transaction(
    client: &Object,
    run: &TenantRun<'_>,
    stop: i64,
    history: History<'_>,
    last: bool,
) -> Result<(i64, Vec<AppliedMigration>), ApplyError> {
    let mut tx = Tx::begin(client);
    run.backend.begin(&mut tx, Work::Change);
    let applied = apply_pending(
        &mut tx,
        run.schema,
        run.set,
        stop,
        run.lock_timeout,
        history,
    )
    .await?;
    let digest = run.set.digest_at(applied.version);
    let step = registry::record_step(run.slug, applied.version, digest, &applied.migrations, last);
    match run.home {
        None => {
            tx.queue_sql(step).await?;
            apply::commit(&mut tx, &applied).await?;
        }
        Some(home) => {
            apply::commit(&mut tx, &applied).await?;
            record_at_home(home, step).await?;
        }
    }
    Ok((applied.version, applied.migrations))
}

/// Writes `step` (a registry row update) on home, in a transaction of its own, after the
/// tenant's own commit where it lives.
pub async fn record_at_home(home: &Pool, step: Sql) -> Result<(), ApplyError> {
    let home = home.get().await.map_err(|e| {
        ApplyError::Refused(format!(
            "its migrations were committed on its server, but the registry on home could not be \
             reached to record them ({}); the next migrate records them",
            describe_pool_error(&e)
        ))
    })?;
    let mut tx = Tx::begin(&home);
    tx.queue_sql(step).await?;
    tx.commit().await?;
    Ok(())
}

/// What running a file alone came to.
enum Alone {
    Applied(AppliedMigration),
    /// The file is not the next one pending: the history says the tenant is at this
    /// version (another process moved it).
    Elsewhere(i64),
}

/// Runs migration `m` alone, under the tenant's session lock (see the module's header);
/// the session is reset and the lock released on every path.
async fn alone(
    client: &Object,
    run: &TenantRun<'_>,
    m: &Migration,
    last: bool,
) -> Result<Alone, ApplyError> {
    lock(client, run.schema).await?;
    let result = alone_locked(client, run, m, last).await;
    release(client).await;
    result
}

/// Resets the session, which releases the tenant's lock. When that fails on a connection
/// that is still open, the connection is ended, so that the pool replaces it rather than
/// hand a session holding the lock or the tenant's search_path to the next tenant.
async fn release(client: &Object) {
    if client.batch_execute(RESET_SESSION).await.is_err() && !client.is_closed() {
        let _ = client
            .batch_execute("SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())")
            .await;
    }
}

async fn alone_locked(
    client: &Object,
    run: &TenantRun<'_>,
    m: &Migration,
    last: bool,
) -> Result<Alone, ApplyError> {
    let version = m.version() as i64;
    check_registered(client, run).await?;
    let history = read_history(client, run.schema).await?.unwrap_or_default();
    match run.set.plan(&history, run.target) {
        Plan::Diverged(why) => return Err(ApplyError::Diverged(why)),
        Plan::Apply(p) if p.first().map(|(v, _)| *v) == Some(version) => {}
        Plan::Apply(_) => {
            let current = history.iter().map(|a| a.version).max().unwrap_or(0);
            return Ok(Alone::Elsewhere(current));
        }
    }
    let timeout = run.lock_timeout.map(|d| format!("{}ms", d.as_millis()));
    let enter = client.prepare_cached(ENTER_SESSION).await?;
    client
        .execute(&enter, &[&tenant_search_path(run.schema), &timeout])
        .await?;
    if let Some(sql) = run.backend.session_prologue() {
        for st in run.backend.statements(&sql) {
            client.batch_execute(st).await?;
        }
    }
    run_statements(client, m).await?;
    client.batch_execute(RESET_KEEPING_LOCK).await?;
    let applied = AppliedMigration {
        version,
        name: m.name().to_string(),
        checksum: m.checksum(),
    };
    record(client, run, m, &applied, last).await?;
    Ok(Alone::Applied(applied))
}

/// The tenant must still be registered, not being dropped, with its schema.
async fn check_registered(client: &Object, run: &TenantRun<'_>) -> Result<(), ApplyError> {
    let slugs = [run.slug.to_string()];
    let unreadable =
        |e: anyhow::Error| ApplyError::Refused(format!("cannot read its registry row: {e:#}"));
    let mut rows = match run.home {
        None => registry::some(client, &slugs).await.map_err(unreadable)?,
        Some(home) => {
            let c = home.get().await.map_err(|e| {
                ApplyError::Refused(format!(
                    "cannot reach the registry on home: {}",
                    describe_pool_error(&e)
                ))
            })?;
            registry::some(&c, &slugs).await.map_err(unreadable)?
        }
    };
    // Elsewhere, the registry's database cannot see the schema: look where it lives.
    if let (Some(_), Some(t)) = (run.home, rows.first_mut()) {
        let schema = [run.schema.to_string()];
        t.schema_exists = !registry::existing_schemas(client, &schema)
            .await
            .map_err(|e| ApplyError::Refused(format!("cannot look for its schema: {e:#}")))?
            .is_empty();
    }
    match rows.first() {
        None => Err(ApplyError::Refused(
            "it is no longer registered (dropped during the run)".into(),
        )),
        Some(t) if t.state == "dropping" => Err(ApplyError::Refused("it is being dropped".into())),
        Some(t) if !t.schema_exists => Err(ApplyError::SchemaMissing),
        Some(_) => Ok(()),
    }
}

/// Sends each statement of the file on its own; a failure names its line, and what the
/// statements before it left behind.
async fn run_statements(client: &Object, m: &Migration) -> Result<(), ApplyError> {
    let sql = m.sql().unwrap_or_default();
    let statements = sql_split::split(sql).map_err(|e| failed(m, e.to_string()))?;
    for (done, stmt) in statements.iter().enumerate() {
        if let Err(e) = client.batch_execute(stmt.text).await {
            let mut why = format!("line {}: {}", stmt.line, describe_pg_error(&e));
            if done > 0 {
                why.push_str(&format!(
                    "; the {done} statement(s) before it stayed applied (this file runs \
                     outside a transaction)"
                ));
            }
            let words = stmt.leading_keywords(4);
            if words.first().is_some_and(|w| w == "create")
                && words.iter().any(|w| w == "concurrently")
            {
                why.push_str(
                    "; a failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind, \
                     which the next run must drop first (DROP INDEX CONCURRENTLY IF EXISTS)",
                );
            }
            return Err(failed(m, why));
        }
    }
    Ok(())
}

fn failed(m: &Migration, error: String) -> ApplyError {
    ApplyError::MigrationFailed {
        version: m.version() as i64,
        name: m.name().to_string(),
        checksum: m.checksum(),
        error,
    }
}

/// The history row, the registry row and the status row, in one transaction.
async fn record(
    client: &Object,
    run: &TenantRun<'_>,
    m: &Migration,
    applied: &AppliedMigration,
    last: bool,
) -> Result<(), ApplyError> {
    let insert = format!(
        "INSERT INTO {} (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)",
        history_table(run.schema)
    );
    let applied_on = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut tx = Tx::begin(client);
    run.backend.begin(&mut tx, Work::Change);
    tx.queue_prepared(
        Step::Sql("cannot write the migration history"),
        &insert,
        vec![
            Box::new(m.version()),
            Box::new(m.name().to_string()),
            Box::new(applied_on),
            Box::new(m.checksum().to_string()),
        ],
    )
    .await?;
    let step = registry::record_step(
        run.slug,
        applied.version,
        run.set.digest_at(applied.version),
        std::slice::from_ref(applied),
        last,
    );
    let (here, after) = match run.home {
        None => (Some(step), None),
        Some(home) => (None, Some((home, step))),
    };
    let result = match here {
        Some(step) => match tx.queue_sql(step).await {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        },
        None => tx.commit().await,
    };
    // The statement names this tenant's table: keep it out of the connection's cache.
    client.statement_cache.remove(&insert, &[]);
    result?;
    match after {
        Some((home, step)) => record_at_home(home, step).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_before_the_history_write_keeps_only_the_lock() {
        assert_eq!(
            RESET_SESSION.replace(" SELECT pg_catalog.pg_advisory_unlock_all();", ""),
            RESET_KEEPING_LOCK
        );
    }

    #[test]
    fn create_stops_before_the_first_file_that_runs_alone() {
        let m = |n: &str, sql: &str| Migration::unapplied(n, sql).unwrap();
        let set = MigrationSet::from_migrations(
            "m".into(),
            vec![
                m("V1__a", "a"),
                m("V2__b", "b"),
                m("V5__c", "-- no-transaction\nc"),
                m("V6__d", "d"),
            ],
        );
        assert_eq!(first_stop(&set, 6), 2);
        assert_eq!(first_stop(&set, 2), 2);
        let alone_first = MigrationSet::from_migrations(
            "m".into(),
            vec![m("V1__a", "-- no-transaction\na"), m("V2__b", "b")],
        );
        assert_eq!(first_stop(&alone_first, 2), 0);
    }
}
