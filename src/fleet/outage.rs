//! Telling "the server went away" from "this tenant failed", and waiting for the server to
//! come back instead of failing every tenant left in a run.
//!
//! The classification reads the error's type (a closed connection, an I/O error, the
//! SQLSTATE), never its text: a restart, a crash or a failover ends every session at once,
//! and what each session's transaction did is rolled back by the server, so the tenants it
//! cut can simply be tried again once the server answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::pg::connect::is_pool_error_server_gone;

/// A run's view of the server's availability, shared by its tenants. The first tenant that
/// finds the server gone waits for it (up to `budget`, the connect timeout); the others
/// wait for that verdict instead of each starting a wait of its own.
pub struct Outage {
    budget: Duration,
    /// Counts finished waits; a tenant that started before the latest one knows the server
    /// was seen back (or given up on) since, and need not wait again.
    epoch: AtomicU64,
    gone: AtomicBool,
    waiting: tokio::sync::Mutex<()>,
}

impl Outage {
    pub fn new(budget: Duration) -> Outage {
        Outage {
            budget,
            epoch: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            waiting: tokio::sync::Mutex::new(()),
        }
    }

    /// Taken before an attempt, and handed to `wait` when the attempt finds the server gone.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether the server stayed away for the whole budget: start no new tenant.
    pub fn gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Waits until the server accepts a connection from `pool` again, or the budget runs
    /// out. `seen` is the epoch taken before the failed attempt; `why` says what happened,
    /// and `note` tells the operator. Returns whether the server is back.
    pub async fn wait(&self, pool: &Pool, seen: u64, why: &str, note: impl Fn(&str)) -> bool {
        let _one_at_a_time = self.waiting.lock().await;
        if self.epoch() > seen {
            return !self.gone();
        }
        if self.gone() {
            return false;
        }
        note(&format!(
            "the server went away ({why}); waiting up to {} s for it to come back",
            self.budget.as_secs()
        ));
        let started = Instant::now();
        let back = probe(pool, self.budget).await;
        if back {
            note(&format!(
                "the server is back after {:.1} s; going on (tenants whose transaction it cut \
                 are tried once more)",
                started.elapsed().as_secs_f64()
            ));
        } else {
            note(&format!(
                "the server did not come back within {} s; starting no new tenant",
                self.budget.as_secs()
            ));
            self.gone.store(true, Ordering::SeqCst);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        back
    }
}

/// Asks the pool for a connection with a bounded backoff (100 ms doubling to 1 s) until one
/// comes or `budget` runs out. Any answer but an outage (a password refused after the
/// restart) ends the wait too: the tenants then fail with that error.
async fn probe(pool: &Pool, budget: Duration) -> bool {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match pool.get().await {
            Ok(_) => return true,
            Err(e) if !is_pool_error_server_gone(&e) => return true,
            Err(_) if started.elapsed() + delay > budget => return false,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}
