//! Printing the result of a create or migrate run, as text or as one JSON document.

use serde::Serialize;

use crate::commands::session::Session;
use crate::domain::exit::{FAILED, INTERRUPTED, OK};
use crate::fleet::Interrupt;
use crate::output::outcome::{self, Outcome, Summary, TenantOutcome};
use crate::output::print_json;

#[derive(Serialize)]
struct RunDocument<'a> {
    command: &'a str,
    target_version: i64,
    summary: Summary,
    tenants: &'a [TenantOutcome],
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
