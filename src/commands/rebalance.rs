//! `tenantctl rebalance`: Citus's rebalancer moves whole tenant schemas between the worker
//! nodes (a background job on the coordinator); this starts it under the moving tenants'
//! locks and follows it to the end, recording each move (`tenant::rebalance`). The
//! coordinator is home's, or with `--server NAME` that server's own database: the locks are
//! taken there, the registry read and written on home.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::{Object, Pool};
use serde::Serialize;

use crate::cli::RebalanceArgs;
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::domain::settings::HOME_SERVER;
use crate::fleet::signals::{interrupted, Signals};
use crate::output::progress::Steps;
use crate::output::{count, escape, escape_line, print_json};
use crate::pg::connect;
use crate::registry::Placement;
use crate::tenant::citus::Backend;
use crate::tenant::rebalance::{self, Place, Rebalance, TenantMove};

/// How often the job's progress is read.
const POLL: Duration = Duration::from_millis(300);

#[derive(Serialize)]
struct Report {
    /// The coordinator rebalanced: `home`, or the [servers.NAME] of `--server`, and its
    /// database.
    server: String,
    database: String,
    /// Citus's background job, null when nothing had to move.
    job_id: Option<i64>,
    /// Citus's shard transfer mode of the moves: `block_writes` (default) or `auto` (--online).
    transfer_mode: &'static str,
    /// `finished`, `failed`, `cancelled`, or `started` (--no-wait), `balanced` (nothing to do).
    state: String,
    moves: usize,
    /// Whether tenantctl held each moving tenant's lock until its move ended (false with
    /// --no-wait: the moves run after tenantctl exited, unlocked and unrecorded).
    tenant_locks: bool,
    /// Each tenant the job moves (`tenant::rebalance::TenantMove`).
    tenants: Vec<TenantMove>,
    /// Tenants per node after the run (`host:port`).
    nodes: BTreeMap<String, usize>,
    errors: Vec<String>,
}

pub async fn run(s: &Session, args: &RebalanceArgs) -> Result<u8> {
    // Two sessions: the rebalance's, and one to cancel its wait for a lock on Ctrl-C.
    let (home_pool, home) = s.connect(2).await?;
    let far = match args.server.as_deref().filter(|n| *n != HOME_SERVER) {
        Some(name) => Some(connect_server(s, name).await?),
        None => None,
    };
    let (pool, conn, placement) = match &far {
        Some((pool, conn, placement)) => (pool, conn, placement.clone()),
        None => (&home_pool, &home, home_placement(s)),
    };
    let backend = s.backend_at(&placement.server, &placement.database);
    let describe = describe(s, &placement);
    if !backend.is_citus() {
        return Err(bad_input(format!(
            "rebalance moves tenants between the worker nodes of a Citus cluster, and \
             {describe} has no citus extension; nothing was moved{}",
            if far.is_none() && s.servers.names().len() > 1 {
                " (--server NAME rebalances the Citus coordinator of a [servers.NAME])"
            } else {
                ""
            }
        )));
    }
    let c = Coordinator {
        pool,
        at: Place {
            conn,
            home: &home,
            placement,
        },
        backend,
    };
    // Listened for before the locks are taken: Ctrl-C then stops taking them (nothing
    // started); once the job started it stops the following only.
    let mut signals = Signals::listen()?;
    // block_writes unless --online: Citus's `auto` loses writes committed just before the
    // switch when the workers commit asynchronously (docs/citus-auto-move-report.md).
    let mode = if args.online { "auto" } else { "block_writes" };
    if args.online {
        c.backend
            .schema_ops("rebalance", &describe)?
            .check_online(conn)
            .await?;
    }
    let mut job = match start(s, &c, &mut signals, mode).await? {
        Ok(Some(job)) => job,
        Ok(None) => return finish(s, &c, report(None, mode, "balanced", 0, true)).await,
        Err(interrupted) => return Ok(interrupted),
    };
    if args.no_wait {
        return no_wait(s, &c, job, mode).await;
    }
    follow(s, &c, &mut signals, &mut job, mode).await
}

/// The Citus coordinator rebalanced (home's database, or a `[servers.NAME]`'s), its
/// sessions and its backend.
struct Coordinator<'a> {
    /// Sessions to the coordinator, for cancelling a lock wait on Ctrl-C.
    pool: &'a Pool,
    at: Place<'a>,
    backend: Backend,
}

fn home_placement(s: &Session) -> Placement {
    Placement {
        server: HOME_SERVER.to_string(),
        database: s.home_database().to_string(),
    }
}

fn describe(s: &Session, p: &Placement) -> String {
    if p == &home_placement(s) {
        s.target.describe()
    } else {
        format!("server {} (database {})", p.server, p.database)
    }
}

/// `--server NAME`: two sessions on that server's own database (its url's), the place the
/// registry names for the tenants created there. An unknown server is bad input (exit 2).
async fn connect_server(s: &Session, name: &str) -> Result<(Pool, Object, Placement)> {
    let target = s
        .servers
        .target(name)
        .context("rebalance --server: nothing was moved")?;
    let database = target.config.get_dbname().unwrap_or_default().to_string();
    let (pool, conn) = s.connect_place(name, &database, 2).await?;
    let placement = Placement {
        server: name.to_string(),
        database,
    };
    Ok((pool, conn, placement))
}

/// Starts the job under the moving tenants' locks (`None`: nothing to move). Ctrl-C
/// meanwhile stops taking them and cancels a wait under way: `Err` holds the exit code.
async fn start(
    s: &Session,
    c: &Coordinator<'_>,
    signals: &mut Signals,
    mode: &'static str,
) -> Result<Result<Option<Rebalance>, u8>> {
    let conn = c.at.conn;
    let pid = connect::backend_pid(conn).await?;
    let stop = AtomicBool::new(false);
    let deadline = s.lock_deadline();
    let starting = rebalance::start(&c.at, &c.backend, mode, deadline, &stop);
    tokio::pin!(starting);
    let sig = tokio::select! {
        r = &mut starting => return Ok(Ok(r?)),
        sig = signals.recv() => sig,
    };
    stop.store(true, Ordering::SeqCst);
    // Sent again until the start gives up: a cancel that lands between two statements of a
    // lock wait is dropped by the server, and the next wait would run to its deadline.
    let started = loop {
        cancel(c.pool, pid).await;
        tokio::select! {
            r = &mut starting => break r,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    Ok(Err(match started {
        // The job had started as the signal came.
        Ok(Some(mut job)) => stopped_following(s, c, &mut job, sig).await,
        _ => interrupted(
            s.json(),
            &format!(
                "rebalance: {sig} while taking the moving tenants' locks: no job was started \
                 and nothing was moved"
            ),
        ),
    }))
}

/// `--no-wait`: the process ends now, so it cannot hold the tenants' locks while Citus
/// moves them, nor record the moves; it says so.
async fn no_wait(
    s: &Session,
    c: &Coordinator<'_>,
    mut job: Rebalance,
    mode: &'static str,
) -> Result<u8> {
    let conn = c.at.conn;
    let st = c.backend.rebalance_state(conn, job.job).await?;
    job.leave(conn).await;
    crate::errln!(
        "rebalance: job {} started ({}); --no-wait: tenantctl does not hold the moving \
         tenants' locks while Citus moves them (a migrate, exec or backup of one may run \
         during its move) and does not record the moves in public.tenant_moves; follow it with \
         SELECT * FROM citus_rebalance_status()",
        job.job,
        count(st.total, "move")
    );
    let mut report = report(Some(job.job), mode, "started", st.total, false);
    report.tenants = job.tenants();
    finish(s, c, report).await
}

/// Follows the job to its end, recording each move and letting go of its tenant's lock as
/// it ends.
async fn follow(
    s: &Session,
    c: &Coordinator<'_>,
    signals: &mut Signals,
    job: &mut Rebalance,
    mode: &'static str,
) -> Result<u8> {
    let (backend, conn) = (&c.backend, c.at.conn);
    let steps = Steps::new("rebalance", "moves", s.json());
    let st = loop {
        let st = backend.rebalance_state(conn, job.job).await?;
        job.poll(&c.at, backend).await?;
        steps.set(st.done, st.total);
        if st.ended() {
            break st;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            sig = signals.recv() => {
                steps.finish();
                return Ok(stopped_following(s, c, job, sig).await);
            }
        }
    };
    steps.finish();
    job.release_all(conn).await;
    let mut report = report(Some(job.job), mode, &st.state, st.done, true);
    if st.state != "finished" {
        report.errors = backend.rebalance_errors(conn, job.job).await?;
    }
    report.errors.append(&mut job.warnings);
    report.tenants = job.tenants();
    finish(s, c, report).await
}

/// Ctrl-C once the job started: its locks go, the job goes on.
async fn stopped_following(s: &Session, c: &Coordinator<'_>, job: &mut Rebalance, sig: &str) -> u8 {
    job.release_all(c.at.conn).await;
    interrupted(
        s.json(),
        &format!(
            "rebalance: {sig}: stopped following job {}, which goes on in the background \
             without the tenants' locks, its further moves not recorded in \
             public.tenant_moves (SELECT * FROM citus_rebalance_status(); stop it with \
             SELECT citus_rebalance_stop())",
            job.job
        ),
    )
}

/// Cancels the statement `conn` runs (a wait for a tenant's lock), from another session.
async fn cancel(pool: &Pool, pid: i32) {
    if let Ok(other) = pool.get().await {
        connect::cancel_backend(&other, pid).await;
    }
}

fn report(
    job_id: Option<i64>,
    transfer_mode: &'static str,
    state: &str,
    moves: usize,
    tenant_locks: bool,
) -> Report {
    Report {
        server: String::new(),
        database: String::new(),
        job_id,
        transfer_mode,
        state: state.to_string(),
        moves,
        tenant_locks,
        tenants: Vec::new(),
        nodes: BTreeMap::new(),
        errors: Vec::new(),
    }
}

/// Reports the run with the tenants per node, and returns the exit code: 1 when the job
/// failed or was cancelled, or a move could not be recorded.
async fn finish(s: &Session, c: &Coordinator<'_>, mut report: Report) -> Result<u8> {
    report.server = c.at.placement.server.clone();
    report.database = c.at.placement.database.clone();
    for node in c.backend.nodes(c.at.conn).await?.into_values() {
        *report.nodes.entry(node).or_default() += 1;
    }
    let failed = !matches!(report.state.as_str(), "finished" | "balanced" | "started")
        || !report.errors.is_empty();
    if s.json() {
        print_json(&report);
    } else {
        print_text(&report);
    }
    Ok(if failed { FAILED } else { OK })
}

fn print_text(r: &Report) {
    for t in &r.tenants {
        crate::outln!("{}", tenant_line(t));
    }
    let mut what = match (r.state.as_str(), r.job_id) {
        ("balanced", _) => "nothing to move".to_string(),
        (state, Some(job)) => format!(
            "job {job} {state}: {} ({})",
            count(r.moves, "move"),
            r.transfer_mode
        ),
        (state, None) => state.to_string(),
    };
    let per_node: Vec<String> = r.nodes.iter().map(|(n, c)| format!("{n} {c}")).collect();
    if r.server != HOME_SERVER {
        what = format!(
            "server {} (database {}): {what}",
            r.server,
            escape(&r.database)
        );
    }
    crate::outln!(
        "rebalance: {what}; tenants per node: {}",
        if per_node.is_empty() {
            "none".to_string()
        } else {
            per_node.join(", ")
        }
    );
    for e in &r.errors {
        crate::errln!("error: {e}");
    }
}

/// `moved tenant acme (schema tenant_acme) from node A to node B, recorded (move 7)`.
fn tenant_line(t: &TenantMove) -> String {
    let who = match &t.slug {
        Some(slug) => format!("tenant {slug} (schema {})", escape(&t.schema)),
        None => format!("schema {} (not a registered tenant)", escape(&t.schema)),
    };
    let how = match (t.outcome, t.move_id) {
        ("moved", Some(id)) => format!(", recorded (move {id})"),
        ("failed", _) => format!(": {}", escape_line(t.error.as_deref().unwrap_or("failed"))),
        _ => String::new(),
    };
    let verb = match t.outcome {
        "moved" => "moved",
        "scheduled" => "will move",
        "failed" => "failed to move",
        _ => "did not move",
    };
    format!("{verb} {who} from node {} to node {}{how}", t.from, t.to)
}
