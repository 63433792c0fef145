//! Running one piece of work per tenant, `concurrency` at a time.
//!
//! Stops starting new tenants after a failure when asked (`--fail-fast`, canaries) or on
//! Ctrl-C; tenants already started finish (commit or roll back) either way, and the ones
//! never started are reported as skipped.

pub mod outage;
pub mod signals;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use crate::domain::budget::MaxFailures;
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::registry::Tenant;

/// Set by the Ctrl-C handler: start no new tenant.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Listens for Ctrl-C (SIGINT) in the background.
    pub fn listen() -> Interrupt {
        let flag = Interrupt::default();
        let f = flag.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                f.0.store(true, Ordering::SeqCst);
                crate::errln!("interrupted: finishing the tenants in flight, starting no new one");
            }
        });
        flag
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A unit of work: which tenant, and the version it starts from.
pub trait Job: Send + 'static {
    fn slug(&self) -> &str;
    fn schema(&self) -> &str;
    fn start_version(&self) -> i64;
}

/// A registered tenant is the job of every fleet command that visits existing tenants.
impl Job for Tenant {
    fn slug(&self) -> &str {
        &self.slug
    }
    fn schema(&self) -> &str {
        &self.schema
    }
    fn start_version(&self) -> i64 {
        self.version
    }
}

/// How many failures a run tolerates before it starts no new tenant, and how the tenants
/// never started are described.
#[derive(Debug, Clone)]
pub struct Budget {
    /// None: no limit; Some(n): the (n+1)th failure stops the run.
    allowed: Option<usize>,
    why: String,
}

impl Budget {
    /// Every tenant runs, whatever fails.
    pub fn unlimited() -> Budget {
        Budget {
            allowed: None,
            why: String::new(),
        }
    }

    /// At most `allowed` failures; `why` describes the tenants not started after.
    pub fn new(allowed: usize, why: String) -> Budget {
        Budget {
            allowed: Some(allowed),
            why,
        }
    }

    /// `--fail-fast`: the budget of zero.
    pub fn fail_fast() -> Budget {
        Budget {
            allowed: Some(0),
            why: "not started: an earlier tenant failed".into(),
        }
    }

    /// `--max-failures`, for a run over `total` tenants.
    pub fn max_failures(max: MaxFailures, total: usize) -> Budget {
        let allowed = max.allowed(total);
        Budget {
            allowed: Some(allowed),
            why: format!(
                "not started: more than {} failed (--max-failures {max})",
                crate::output::count(allowed, "tenant")
            ),
        }
    }

    /// The budget chosen by the flags (they exclude each other).
    pub fn from_flags(fail_fast: bool, max: Option<MaxFailures>, total: usize) -> Budget {
        match (fail_fast, max) {
            (true, _) => Budget::fail_fast(),
            (false, Some(m)) => Budget::max_failures(m, total),
            (false, None) => Budget::unlimited(),
        }
    }

    /// Whether `failures` failures exceed it.
    pub fn exceeded(&self, failures: usize) -> bool {
        self.allowed.is_some_and(|a| failures > a)
    }

    /// Why a tenant was not started once it was exceeded.
    pub fn why(&self) -> &str {
        &self.why
    }
}

/// Runs `work` for each job, at most `concurrency` at once, in the order given.
/// Outcomes come back in the jobs' order.
pub async fn run<J, F, Fut>(
    jobs: Vec<J>,
    concurrency: usize,
    stop_on_failure: bool,
    interrupt: &Interrupt,
    progress: &Progress,
    work: F,
) -> Vec<TenantOutcome>
where
    J: Job,
    F: Fn(J) -> Fut,
    Fut: Future<Output = TenantOutcome> + Send + 'static,
{
    let budget = if stop_on_failure {
        Budget::fail_fast()
    } else {
        Budget::unlimited()
    };
    run_budgeted(jobs, concurrency, &budget, interrupt, progress, work).await
}

/// Like `run`, starting no new tenant once the failures exceed `budget`.
pub async fn run_budgeted<J, F, Fut>(
    jobs: Vec<J>,
    concurrency: usize,
    budget: &Budget,
    interrupt: &Interrupt,
    progress: &Progress,
    work: F,
) -> Vec<TenantOutcome>
where
    J: Job,
    F: Fn(J) -> Fut,
    Fut: Future<Output = TenantOutcome> + Send + 'static,
{
    let total = jobs.len();
    let mut results: Vec<Option<TenantOutcome>> = vec![None; total];
    let mut queue = jobs.into_iter().enumerate();
    let mut running = JoinSet::new();
    let mut stop = false;
    let mut failures = 0;
    loop {
        while !stop && running.len() < concurrency.max(1) && !interrupt.is_set() {
            let Some((i, job)) = queue.next() else { break };
            let fut = work(job);
            running.spawn(async move {
                let t = Instant::now();
                let o = fut.await;
                let took = t.elapsed();
                (i, if o.duration_ms == 0 { o.took(took) } else { o })
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, outcome) = joined.expect("a tenant task panicked");
        progress.finish_one(&outcome);
        if outcome.outcome == Outcome::Failed {
            failures += 1;
            stop = stop || budget.exceeded(failures);
        }
        results[i] = Some(outcome);
    }
    let why = if interrupt.is_set() {
        "not started: interrupted"
    } else {
        budget.why()
    };
    for (i, job) in queue {
        results[i] = Some(TenantOutcome::skipped(
            job.slug(),
            job.schema(),
            job.start_version(),
            why,
        ));
    }
    results
        .into_iter()
        .map(|o| o.expect("every job has an outcome"))
        .collect()
}
