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
    /// Present only when shared migrations are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<&'a SharedReport>,
    tenants: &'a [TenantOutcome],
}

/// What a run did (or, dry, would do) to the shared schema: `shared` in the JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct SharedReport {
    pub schema: String,
    /// `applied`, `up_to_date`, `pending` (dry run) or `failed`.
    pub outcome: &'static str,
    /// The shared version after the run (before it, in a dry run; 0 when it failed).
    pub version: i64,
    /// Applied (or, dry, pending) migrations, `V<version>__<name>`.
    pub migrations: Vec<String>,
    pub error: Option<String>,
}

impl SharedReport {
    fn line(&self) -> String {
        let schema = &self.schema;
        match self.outcome {
            "applied" => format!(
                "shared schema {schema}: applied {}; now at version {}",
                self.migrations.join(", "),
                self.version
            ),
            "pending" => format!(
                "shared schema {schema}: at version {}; would apply {}",
                self.version,
                self.migrations.join(", ")
            ),
            "failed" => format!(
                "shared schema {schema}: FAILED: {}; no tenant was touched",
                self.error.as_deref().unwrap_or("")
            ),
            _ => format!(
                "shared schema {schema}: up to date at version {}",
                self.version
            ),
        }
    }
}

pub fn print(
    verb: &str,
    s: &Session,
    shared: Option<&SharedReport>,
    outcomes: &[TenantOutcome],
    target: i64,
) {
    if s.json() {
        print_json(&RunDocument {
            command: verb,
            target_version: target,
            summary: Summary::of(outcomes),
            shared,
            tenants: outcomes,
        });
    } else {
        if let Some(r) = shared {
            crate::outln!("{}", crate::output::escape_line(&r.line()));
        }
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
