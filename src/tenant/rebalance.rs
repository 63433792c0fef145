//! What `tenantctl rebalance` does around Citus's rebalancer (docs/citus.md): the tenants a
//! job moves are locked (each tenant's lock, for the session, as every tenantctl
//! transaction of that tenant takes it) before the job starts, each lock is let go as soon
//! as that tenant's move ended, and each finished move is recorded in public.tenant_moves.
//!
//! The coordinator is home's database or a `[servers.NAME]`'s (`Place`): the locks are
//! taken there, where the tenants live (the key every tenantctl transaction of them takes
//! there), while the registry (slugs, records) is home's.
//!
//! The job is started in a transaction: Citus's background executor sees it only at COMMIT,
//! so the job's own moves are checked against the locks held first, and a job that would
//! move a tenant tenantctl could not lock is rolled back (never started).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deadpool_postgres::Object;
use serde::Serialize;

use crate::pg::connect::PgContext;
use crate::registry::{self, locks, MoveRecord, NodeMoveRecord, Placement};
use crate::tenant::citus::{Backend, SchemaMoveTask};

/// How many times a job whose moves differ from the plan is rolled back and tried again
/// (after locking the tenants it added) before giving up.
const ATTEMPTS: usize = 3;

/// One tenant a rebalance job moves, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantMove {
    /// Null for a distributed schema that is not a registered tenant.
    pub slug: Option<String>,
    pub schema: String,
    /// Nodes, `host:port`.
    pub from: String,
    pub to: String,
    pub tables: i32,
    /// `moving` (not ended yet), `moved`, `failed` (the tenant stays on `from`),
    /// `not_moved` (cancelled, or never run because the job failed), `scheduled`
    /// (`--no-wait`: Citus moves it after tenantctl exited).
    pub outcome: &'static str,
    /// The `public.tenant_moves` row of the move, once recorded.
    pub move_id: Option<i64>,
    /// From when tenantctl saw the move running to when it saw it done (polled).
    pub duration_ms: Option<u64>,
    /// Citus's error for a failed move.
    pub error: Option<String>,
}

/// Where a rebalance runs: `conn`, the rebalance's session on the Citus coordinator (its
/// database holds the tenants it moves, and their locks); `home`, a session on the
/// registry's database (the same one when home is the coordinator); `placement`, the
/// coordinator's server and database, as the registry names the place of its tenants.
pub struct Place<'a> {
    pub conn: &'a Object,
    pub home: &'a Object,
    pub placement: Placement,
}

/// Tenants' locks held by this session (by schema), and their slugs for messages.
#[derive(Default)]
struct Held {
    schemas: BTreeSet<String>,
    slugs: BTreeMap<String, String>,
}

impl Held {
    fn name<'a>(&'a self, schema: &'a str) -> &'a str {
        self.slugs.get(schema).map_or(schema, String::as_str)
    }

    /// Learns the slugs of `schemas` from home's registry: the tenants living at `at`
    /// (a schema of that name elsewhere is another tenant).
    async fn learn(&mut self, home: &Object, schemas: &[String], at: &Placement) -> Result<()> {
        for t in registry::by_schemas(home, schemas).await? {
            if (&t.server, &t.database) == (&at.server, &at.database) {
                self.slugs.insert(t.schema.clone(), t.slug.clone());
            }
        }
        Ok(())
    }

    /// Takes the lock of each of `schemas` not held yet, waiting at most `deadline` for each
    /// (as a migrate waits for each tenant's); stops when `stop` is set (Ctrl-C).
    async fn take(
        &mut self,
        conn: &Object,
        schemas: &[String],
        deadline: Duration,
        stop: &AtomicBool,
    ) -> Result<()> {
        for schema in schemas {
            if self.schemas.contains(schema) {
                continue;
            }
            stopped(stop)?;
            let slug = self.name(schema).to_string();
            locks::hold_tenant_within(conn, &slug, schema, deadline).await?;
            self.schemas.insert(schema.clone());
        }
        Ok(())
    }

    /// Takes without waiting the locks of `schemas` not held yet; returns those busy.
    async fn try_take(&mut self, conn: &Object, schemas: &[String]) -> Result<Vec<String>> {
        let mut busy = Vec::new();
        for schema in schemas {
            if self.schemas.contains(schema) {
                continue;
            }
            if locks::try_hold_tenant(conn, schema)
                .await
                .pg_context("cannot take a tenant's lock")?
            {
                self.schemas.insert(schema.clone());
            } else {
                busy.push(schema.clone());
            }
        }
        Ok(busy)
    }

    async fn release(&mut self, conn: &Object, schema: &str) -> Result<()> {
        if self.schemas.remove(schema) {
            locks::release_tenant(conn, schema)
                .await
                .with_pg_context(|| {
                    format!("cannot let go of tenant {}'s lock", self.name(schema))
                })?;
        }
        Ok(())
    }

    async fn release_all(&mut self, conn: &Object) {
        for schema in std::mem::take(&mut self.schemas) {
            let _ = locks::release_tenant(conn, &schema).await;
        }
        let _ = locks::unmark_session(conn).await;
    }
}

/// A rebalance job tenantctl started and follows, holding the locks of the tenants whose
/// moves have not ended.
pub struct Rebalance {
    pub job: i64,
    mode: &'static str,
    /// The coordinator's server and database, recorded as each move's place.
    placement: Placement,
    held: Held,
    tenants: BTreeMap<String, TenantMove>,
    running_since: BTreeMap<String, Instant>,
    last_poll: Instant,
    /// Moves done but not recorded, and locks not let go: said at the end, exit 1.
    pub warnings: Vec<String>,
}

/// Locks the tenants Citus's rebalancer plans to move (waiting at most `deadline` for each),
/// then starts the job (transfer mode `mode`) if its moves are all locked. `None` when
/// nothing is to move. On error no job was started and no lock is held. `stop` (Ctrl-C)
/// ends it before the next lock wait or the start; the caller cancels a wait under way.
pub async fn start(
    at: &Place<'_>,
    backend: &Backend,
    mode: &'static str,
    deadline: Duration,
    stop: &AtomicBool,
) -> Result<Option<Rebalance>> {
    let conn = at.conn;
    let mut held = Held::default();
    let started = start_locked(at, backend, mode, deadline, stop, &mut held).await;
    match started {
        Ok(Some((job, moves))) => {
            let mut r = Rebalance {
                job,
                mode,
                placement: at.placement.clone(),
                held,
                tenants: BTreeMap::new(),
                running_since: BTreeMap::new(),
                last_poll: Instant::now(),
                warnings: Vec::new(),
            };
            // The job is committed now: a lock that cannot be let go is a warning (the
            // session ends with the command and takes it along), not a failure to start.
            if let Err(e) = r.let_go_of_others(conn, &moves).await {
                r.warnings.push(format!(
                    "{e:#}; tenants the job does not move stay locked until tenantctl exits"
                ));
            }
            r.note(&moves, Instant::now());
            Ok(Some(r))
        }
        Ok(None) => {
            held.release_all(conn).await;
            Ok(None)
        }
        Err(e) => {
            held.release_all(conn).await;
            Err(e.context("cannot start the rebalance; no job was started and nothing was moved"))
        }
    }
}

async fn start_locked(
    at: &Place<'_>,
    backend: &Backend,
    mode: &'static str,
    deadline: Duration,
    stop: &AtomicBool,
    held: &mut Held,
) -> Result<Option<(i64, Vec<SchemaMoveTask>)>> {
    let conn = at.conn;
    locks::mark_session(conn)
        .await
        .pg_context("cannot mark the session as tenantctl's")?;
    let mut wanted = backend.rebalance_plan(conn).await?;
    for _ in 0..ATTEMPTS {
        held.learn(at.home, &wanted, &at.placement).await?;
        held.take(conn, &wanted, deadline, stop).await?;
        stopped(stop)?;
        conn.batch_execute("BEGIN")
            .await
            .pg_context("cannot start the rebalance's transaction")?;
        let attempt = start_in_transaction(at, backend, mode, held).await;
        let end = match &attempt {
            Ok(Attempt::Started(..)) | Ok(Attempt::Balanced) => "COMMIT",
            _ => "ROLLBACK",
        };
        conn.batch_execute(end)
            .await
            .pg_context("cannot end the rebalance's transaction")?;
        match attempt? {
            Attempt::Started(job, moves) => return Ok(Some((job, moves))),
            Attempt::Balanced => return Ok(None),
            Attempt::Busy(busy) => wanted = busy,
        }
    }
    anyhow::bail!(
        "Citus's rebalancer chose other tenants each time tenantctl had locked the ones it \
         chose ({ATTEMPTS} times): tenants are being created or moved meanwhile; run \
         tenantctl rebalance again"
    )
}

/// An error once `stop` is set.
fn stopped(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

enum Attempt {
    Started(i64, Vec<SchemaMoveTask>),
    Balanced,
    /// The job would move these tenants, whose locks others hold: rolled back.
    Busy(Vec<String>),
}

/// In the transaction: starts the job, and checks that tenantctl holds the lock of every
/// tenant it moves (taking, without waiting, those the plan did not name).
async fn start_in_transaction(
    at: &Place<'_>,
    backend: &Backend,
    mode: &str,
    held: &mut Held,
) -> Result<Attempt> {
    let conn = at.conn;
    let Some(job) = backend.start_rebalance(conn, mode).await? else {
        return Ok(Attempt::Balanced);
    };
    let moves = backend.rebalance_moves(conn, job).await?;
    let schemas: Vec<String> = moves
        .iter()
        .map(|m| m.schema.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    held.learn(at.home, &schemas, &at.placement).await?;
    let busy = held.try_take(conn, &schemas).await?;
    if busy.is_empty() {
        Ok(Attempt::Started(job, moves))
    } else {
        Ok(Attempt::Busy(busy))
    }
}

impl Rebalance {
    /// Lets go of tenants that were planned but that the job does not move.
    async fn let_go_of_others(&mut self, conn: &Object, moves: &[SchemaMoveTask]) -> Result<()> {
        let moving: BTreeSet<&str> = moves.iter().map(|m| m.schema.as_str()).collect();
        let others: Vec<String> = self
            .held
            .schemas
            .iter()
            .filter(|s| !moving.contains(s.as_str()))
            .cloned()
            .collect();
        for schema in others {
            self.held.release(conn, &schema).await?;
        }
        Ok(())
    }

    /// Updates each tenant's entry from the job's tasks, seen at `now`; returns the schemas
    /// whose moves ended since the last look.
    fn note(&mut self, tasks: &[SchemaMoveTask], now: Instant) -> Vec<String> {
        let mut by_schema: BTreeMap<&str, Vec<&SchemaMoveTask>> = BTreeMap::new();
        for t in tasks {
            by_schema.entry(t.schema.as_str()).or_default().push(t);
        }
        let mut ended = Vec::new();
        for (schema, tasks) in by_schema {
            let last = tasks[tasks.len() - 1];
            let entry = self
                .tenants
                .entry(schema.to_string())
                .or_insert_with(|| TenantMove {
                    slug: self.held.slugs.get(schema).cloned(),
                    schema: schema.to_string(),
                    from: tasks[0].from.clone(),
                    to: last.to.clone(),
                    tables: last.tables,
                    outcome: "moving",
                    move_id: None,
                    duration_ms: None,
                    error: None,
                });
            if tasks.iter().any(|t| t.status == "running") {
                self.running_since.entry(schema.to_string()).or_insert(now);
            }
            if entry.outcome != "moving" || !tasks.iter().all(|t| t.ended()) {
                continue;
            }
            entry.outcome = outcome(&tasks);
            entry.error = tasks
                .iter()
                .find(|t| t.status == "error")
                .map(|t| t.message.clone());
            let since = self.running_since.get(schema).unwrap_or(&self.last_poll);
            entry.duration_ms = Some(now.saturating_duration_since(*since).as_millis() as u64);
            ended.push(schema.to_string());
        }
        self.last_poll = now;
        ended
    }

    /// Reads the job's moves; records each that ended since the last look (when it moved
    /// the tenant) on home and lets go of its lock on the coordinator.
    pub async fn poll(&mut self, at: &Place<'_>, backend: &Backend) -> Result<()> {
        let tasks = backend.rebalance_moves(at.conn, self.job).await?;
        for schema in self.note(&tasks, Instant::now()) {
            self.record(at.home, &schema).await;
            if let Err(e) = self.held.release(at.conn, &schema).await {
                self.warnings.push(format!("{e:#}"));
            }
        }
        Ok(())
    }

    /// The `tenant_moves` row of a finished move, on home (`home`): as `move --node` writes
    /// it, the coordinator's server and database as both places, with the job.
    async fn record(&mut self, home: &Object, schema: &str) {
        let Some(t) = self.tenants.get_mut(schema) else {
            return;
        };
        let (Some(slug), "moved") = (t.slug.clone(), t.outcome) else {
            return;
        };
        let took = t.duration_ms.unwrap_or(0) as i64;
        let place = self.placement.clone();
        let rec = MoveRecord {
            slug,
            schema: schema.to_string(),
            from: place.clone(),
            to: place,
            tables: t.tables,
            rows: 0,
            writes_stopped_ms: if self.mode == "block_writes" { took } else { 0 },
            duration_ms: took,
            nodes: Some(NodeMoveRecord {
                from: t.from.clone(),
                to: t.to.clone(),
                mode: self.mode.to_string(),
            }),
        };
        match registry::record_node_move(home, &rec, Some(self.job))
            .await
            .with_context(|| {
                format!(
                    "tenant {} moved to node {}, but the move could not be recorded in \
                     public.tenant_moves",
                    rec.slug, t.to
                )
            }) {
            Ok(id) => t.move_id = Some(id),
            Err(e) => self.warnings.push(format!("{e:#}")),
        }
    }

    /// Lets go of every lock still held (the job ended, or tenantctl stops following it).
    pub async fn release_all(&mut self, conn: &Object) {
        self.held.release_all(conn).await;
    }

    /// Lets go of every lock at once, for `--no-wait`: the moves are `scheduled`.
    pub async fn leave(&mut self, conn: &Object) {
        self.release_all(conn).await;
        for t in self.tenants.values_mut() {
            t.outcome = "scheduled";
        }
    }

    /// The tenants of the job, by schema.
    pub fn tenants(&self) -> Vec<TenantMove> {
        self.tenants.values().cloned().collect()
    }
}

/// A tenant's outcome once all its tasks ended.
fn outcome(tasks: &[&SchemaMoveTask]) -> &'static str {
    if tasks.iter().all(|t| t.status == "done") {
        "moved"
    } else if tasks.iter().any(|t| t.status == "error") {
        "failed"
    } else {
        "not_moved"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, status: &str, schema: &str) -> SchemaMoveTask {
        SchemaMoveTask {
            task_id: id,
            status: status.to_string(),
            schema: schema.to_string(),
            from: "a:1".to_string(),
            to: "b:2".to_string(),
            tables: 9,
            message: format!("{schema} broke"),
        }
    }

    fn rebalance() -> Rebalance {
        let mut held = Held::default();
        held.slugs.insert("tenant_x".into(), "x".into());
        Rebalance {
            job: 1,
            mode: "block_writes",
            placement: Placement {
                server: "home".into(),
                database: "db".into(),
            },
            held,
            tenants: BTreeMap::new(),
            running_since: BTreeMap::new(),
            last_poll: Instant::now(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn each_tenant_ends_once_when_all_its_tasks_ended() {
        let mut r = rebalance();
        let t0 = Instant::now();
        let ended = r.note(
            &[task(1, "running", "tenant_x"), task(2, "runnable", "s2")],
            t0,
        );
        assert!(ended.is_empty());
        let t1 = t0 + Duration::from_millis(700);
        let ended = r.note(&[task(1, "done", "tenant_x"), task(2, "error", "s2")], t1);
        assert_eq!(ended, vec!["s2".to_string(), "tenant_x".to_string()]);
        let x = &r.tenants["tenant_x"];
        assert_eq!((x.slug.as_deref(), x.outcome), (Some("x"), "moved"));
        assert_eq!(x.duration_ms, Some(700));
        let s2 = &r.tenants["s2"];
        assert_eq!((s2.slug.as_deref(), s2.outcome), (None, "failed"));
        assert_eq!(s2.error.as_deref(), Some("s2 broke"));
        // Seen ended again: not reported (nor recorded) twice.
        assert!(r
            .note(&[task(1, "done", "tenant_x"), task(2, "error", "s2")], t1)
            .is_empty());
        assert_eq!(
            outcome(&[&task(3, "cancelled", "s"), &task(4, "done", "s")]),
            "not_moved"
        );
    }
}
