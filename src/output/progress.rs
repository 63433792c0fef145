//! Progress of work over many tenants, on stderr.
//!
//! On a terminal: an indicatif bar (done/total, failures, rate, ETA) with failures printed
//! above it. Without one: no control characters at all; a line per finished tenant for
//! small runs, a periodic count for large ones, and every failure as it happens.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::output::count;
use crate::output::outcome::{Outcome, TenantOutcome};

/// Runs up to this size print a line per tenant when there is no terminal.
const LINE_PER_TENANT_LIMIT: usize = 100;
const COUNT_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    verb: &'static str,
    total: usize,
    per_tenant_lines: bool,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    last_count: Mutex<Instant>,
}

impl Progress {
    /// `quiet` hides everything but failures (JSON output keeps stderr for errors only).
    pub fn new(verb: &'static str, total: usize, quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (tty && !quiet && total > 1).then(|| {
            let pb = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} {rate} ETA {eta}",
                )
                .expect("valid progress template")
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} tenants/s", s.per_sec());
                })
                .progress_chars("=> "),
            );
            pb.set_prefix(verb);
            pb.set_message("0 failed");
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        });
        Progress {
            bar,
            verb,
            total,
            per_tenant_lines: !tty && !quiet && total <= LINE_PER_TENANT_LIMIT,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
            last_count: Mutex::new(Instant::now()),
        }
    }

    /// Records one finished tenant.
    pub fn finish_one(&self, o: &TenantOutcome) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed =
            self.failed.load(Ordering::Relaxed) + usize::from(o.outcome == Outcome::Failed);
        if o.outcome == Outcome::Failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        match &self.bar {
            Some(pb) => {
                if o.outcome == Outcome::Failed {
                    // suspend() prints above the bar; ProgressBar::println is dropped when hidden.
                    pb.suspend(|| crate::errln!("{}", o.line()));
                }
                pb.set_message(format!("{failed} failed"));
                pb.inc(1);
            }
            None if self.per_tenant_lines || o.outcome == Outcome::Failed => {
                crate::errln!("{}", o.line())
            }
            None => self.maybe_count(done, failed),
        }
    }

    fn maybe_count(&self, done: usize, failed: usize) {
        let mut last = self.last_count.lock().expect("progress lock");
        if last.elapsed() >= COUNT_EVERY {
            *last = Instant::now();
            crate::errln!(
                "{}: {done}/{} done, {failed} failed, {:.0}s elapsed",
                self.verb,
                count(self.total, "tenant"),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a note above the bar (or as a line without one).
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(pb) => pb.suspend(|| crate::errln!("{msg}")),
            None => crate::errln!("{msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

/// Progress of one job counted in steps that are not tenants (the moves of a Citus
/// rebalance): a bar on a terminal, else a line each time the count changes.
pub struct Steps {
    bar: Option<ProgressBar>,
    verb: &'static str,
    unit: &'static str,
    quiet: bool,
    last: Mutex<(usize, usize)>,
}

impl Steps {
    pub fn new(verb: &'static str, unit: &'static str, quiet: bool) -> Steps {
        let bar = (std::io::stderr().is_terminal() && !quiet).then(|| {
            let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} {elapsed}",
                )
                .expect("valid progress template")
                .progress_chars("=> "),
            );
            pb.set_prefix(verb);
            pb.set_message(unit);
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        });
        Steps {
            bar,
            verb,
            unit,
            quiet,
            last: Mutex::new((0, 0)),
        }
    }

    /// `done` of `total` steps are finished.
    pub fn set(&self, done: usize, total: usize) {
        let mut last = self.last.lock().expect("progress lock");
        if *last == (done, total) {
            return;
        }
        *last = (done, total);
        match &self.bar {
            Some(pb) => {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
            None if !self.quiet => {
                crate::errln!("{}: {done}/{total} {} done", self.verb, self.unit)
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
