//! `tenantctl rebalance`: Citus's rebalancer moves whole tenant schemas between the worker
//! nodes (a background job on the coordinator); this starts it and follows it to the end.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::RebalanceArgs;
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::fleet::signals::{interrupted, Signals};
use crate::output::progress::Steps;
use crate::output::{count, print_json};

/// How often the job's progress is read.
const POLL: Duration = Duration::from_millis(300);

#[derive(Serialize)]
struct Report {
    /// Citus's background job, null when nothing had to move.
    job_id: Option<i64>,
    /// Citus's shard transfer mode of the moves: `block_writes` (default) or `auto` (--online).
    transfer_mode: &'static str,
    /// `finished`, `failed`, `cancelled`, or `started` (--no-wait), `balanced` (nothing to do).
    state: String,
    moves: usize,
    /// Tenants per node after the run (`host:port`).
    nodes: BTreeMap<String, usize>,
    errors: Vec<String>,
}

pub async fn run(s: &Session, args: &RebalanceArgs) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let backend = s.backend();
    if !backend.is_citus() {
        return Err(bad_input(format!(
            "rebalance moves tenants between the worker nodes of a Citus cluster, and {} has \
             no citus extension; nothing was moved",
            s.target.describe()
        )));
    }
    // Listened for before the job starts: from then on Ctrl-C stops the following only.
    let mut signals = Signals::listen()?;
    // block_writes unless --online: Citus's `auto` loses writes committed just before the
    // switch when the workers commit asynchronously (docs/citus-auto-move-report.md).
    let mode = if args.online { "auto" } else { "block_writes" };
    let Some(job) = backend.start_rebalance(&conn, mode).await? else {
        return finish(s, &conn, None, mode, "balanced", 0, Vec::new()).await;
    };
    if args.no_wait {
        let st = backend.rebalance_state(&conn, job).await?;
        crate::errln!(
            "rebalance: job {job} started ({}); follow it with SELECT * FROM citus_rebalance_status()",
            count(st.total, "move")
        );
        return finish(s, &conn, Some(job), mode, "started", st.total, Vec::new()).await;
    }
    let steps = Steps::new("rebalance", "moves", s.json());
    let st = loop {
        let st = backend.rebalance_state(&conn, job).await?;
        steps.set(st.done, st.total);
        if st.ended() {
            break st;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            sig = signals.recv() => {
                steps.finish();
                return Ok(interrupted(
                    s.json(),
                    &format!(
                        "rebalance: {sig}: stopped following job {job}, which goes on in the \
                         background (SELECT * FROM citus_rebalance_status(); stop it with \
                         SELECT citus_rebalance_stop())"
                    ),
                ));
            }
        }
    };
    steps.finish();
    let errors = match st.state.as_str() {
        "finished" => Vec::new(),
        _ => backend.rebalance_errors(&conn, job).await?,
    };
    finish(s, &conn, Some(job), mode, &st.state, st.done, errors).await
}

/// Reports the run with the tenants per node, and returns the exit code.
async fn finish(
    s: &Session,
    conn: &deadpool_postgres::Object,
    job_id: Option<i64>,
    transfer_mode: &'static str,
    state: &str,
    moves: usize,
    errors: Vec<String>,
) -> Result<u8> {
    let mut nodes: BTreeMap<String, usize> = BTreeMap::new();
    for node in s.backend().nodes(conn).await?.into_values() {
        *nodes.entry(node).or_default() += 1;
    }
    let failed = !matches!(state, "finished" | "balanced" | "started");
    if s.json() {
        print_json(&Report {
            job_id,
            transfer_mode,
            state: state.to_string(),
            moves,
            nodes,
            errors,
        });
    } else {
        let what = match (state, job_id) {
            ("balanced", _) => "nothing to move".to_string(),
            (_, Some(job)) => format!(
                "job {job} {state}: {} ({transfer_mode})",
                count(moves, "move")
            ),
            (_, None) => state.to_string(),
        };
        let per_node: Vec<String> = nodes.iter().map(|(n, c)| format!("{n} {c}")).collect();
        crate::outln!(
            "rebalance: {what}; tenants per node: {}",
            if per_node.is_empty() {
                "none".to_string()
            } else {
                per_node.join(", ")
            }
        );
        for e in &errors {
            crate::errln!("error: {e}");
        }
    }
    Ok(if failed { FAILED } else { OK })
}
