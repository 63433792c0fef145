//! Printing the result of a create or migrate run, as text or as one JSON document.

use serde::Serialize;

use crate::commands::session::Session;
use crate::domain::exit::{FAILED, INTERRUPTED, OK};
use crate::fleet::Interrupt;
use crate::output::outcome::{self, Outcome, Summary, TenantOutcome};
use crate::output::{count, escape_line, print_json};

#[derive(Serialize)]
struct RunDocument<'a> {
    command: &'a str,
    target_version: i64,
    summary: Summary,
    tenants: &'a [TenantOutcome],
}

/// How a `migrate --waves` rollout went, wave by wave.
#[derive(Debug, Default, Serialize)]
pub struct Waves {
    pub waves: Vec<Wave>,
    /// Which wave stopped the rollout and why; None when every wave ran.
    pub stopped: Option<Stopped>,
    /// Tenants no wave's selector matched: left alone.
    pub unmatched: usize,
}

#[derive(Debug, Serialize)]
pub struct Wave {
    /// 1 for the first.
    pub wave: usize,
    pub selector: String,
    /// Tenants of the wave the run visited (those already current are not counted).
    pub tenants: usize,
    pub failed: usize,
    /// completed, stopped (the rollout stopped in or after it) or not_started.
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Stopped {
    pub wave: usize,
    pub selector: String,
    pub reason: String,
}

#[derive(Serialize)]
struct WavesDocument<'a> {
    command: &'a str,
    target_version: i64,
    summary: Summary,
    waves: &'a [Wave],
    stopped: &'a Option<Stopped>,
    unmatched: usize,
    tenants: &'a [TenantOutcome],
}

/// `print` for a rollout in waves: the usual report, then each wave and what stopped it.
pub fn print_waves(verb: &str, s: &Session, outcomes: &[TenantOutcome], target: i64, w: &Waves) {
    if s.json() {
        print_json(&WavesDocument {
            command: verb,
            target_version: target,
            summary: Summary::of(outcomes),
            waves: &w.waves,
            stopped: &w.stopped,
            unmatched: w.unmatched,
            tenants: outcomes,
        });
        return;
    }
    outcome::print_text(verb, outcomes);
    for x in &w.waves {
        crate::outln!(
            "wave {} ({}): {}, {} failed, {}",
            x.wave,
            escape_line(&x.selector),
            count(x.tenants, "tenant"),
            x.failed,
            x.status.replace('_', " ")
        );
    }
    if w.unmatched > 0 {
        crate::outln!(
            "{} matched no wave and {} left alone",
            count(w.unmatched, "tenant"),
            if w.unmatched == 1 { "was" } else { "were" }
        );
    }
    if let Some(st) = &w.stopped {
        crate::outln!(
            "rollout stopped at wave {} ({}): {}",
            st.wave,
            escape_line(&st.selector),
            st.reason
        );
    }
}

pub fn print(verb: &str, s: &Session, outcomes: &[TenantOutcome], target: i64) {
    if s.json() {
        print_json(&RunDocument {
            command: verb,
            target_version: target,
            summary: Summary::of(outcomes),
            tenants: outcomes,
        });
    } else {
        outcome::print_text(verb, outcomes);
    }
}

/// 130 after Ctrl-C, 1 when any tenant failed, else 0.
pub fn exit_code(outcomes: &[TenantOutcome], interrupt: &Interrupt) -> u8 {
    if interrupt.is_set() {
        INTERRUPTED
    } else if outcomes.iter().any(|o| o.outcome == Outcome::Failed) {
        FAILED
    } else {
        OK
    }
}
