//! Printing the result of a create or migrate run, as text or as one JSON document.

use serde::Serialize;

use crate::cli::Format;
use crate::commands::session::Session;
use crate::domain::exit::{FAILED, INTERRUPTED, OK};
use crate::fleet::Interrupt;
use crate::output::junit;
use crate::output::outcome::{self, Outcome, Summary, TenantOutcome};
use crate::output::{count, escape_line, print_json, JsonStream, Stdout};

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

/// The fields of [`RunDocument`] before its `tenants`, for a report written as a stream.
#[derive(Serialize)]
struct RunHead<'a> {
    command: &'a str,
    target_version: i64,
    summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<&'a SharedReport>,
}

/// Begins the JSON report of a run whose counts are known before its tenants are read
/// again: the same document as [`print`] writes, each tenant then added with `item`.
pub fn begin_run_document(
    verb: &str,
    target: i64,
    summary: Summary,
    shared: Option<&SharedReport>,
) -> JsonStream<std::io::BufWriter<Stdout>> {
    JsonStream::stdout(
        &RunHead {
            command: verb,
            target_version: target,
            summary,
            shared,
        },
        "tenants",
    )
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
    pub fn line(&self) -> String {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<&'a SharedReport>,
    waves: &'a [Wave],
    stopped: &'a Option<Stopped>,
    unmatched: usize,
    tenants: &'a [TenantOutcome],
}

/// `print` for a rollout in waves: the usual report, then each wave and what stopped it.
pub fn print_waves(
    verb: &str,
    s: &Session,
    shared: Option<&SharedReport>,
    outcomes: &[TenantOutcome],
    target: i64,
    w: &Waves,
) {
    if s.format == Format::Junit {
        return print(verb, s, shared, outcomes, target);
    }
    annotate(verb, outcomes);
    if s.json() {
        print_json(&WavesDocument {
            command: verb,
            target_version: target,
            summary: Summary::of(outcomes),
            shared,
            waves: &w.waves,
            stopped: &w.stopped,
            unmatched: w.unmatched,
            tenants: outcomes,
        });
        return;
    }
    if let Some(r) = shared {
        crate::outln!("{}", escape_line(&r.line()));
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

pub fn print(
    verb: &str,
    s: &Session,
    shared: Option<&SharedReport>,
    outcomes: &[TenantOutcome],
    target: i64,
) {
    annotate(verb, outcomes);
    if s.format == Format::Junit {
        print_junit(verb, outcomes);
    } else if s.json() {
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

/// The run as one JUnit document on stdout: a testcase per tenant.
pub fn print_junit(verb: &str, outcomes: &[TenantOutcome]) {
    crate::outln!(
        "{}",
        junit::document(&format!("tenantctl {verb}"), &cases(verb, outcomes))
    );
}

/// One JUnit testcase per tenant: failed ones carry their error, skipped ones why.
fn cases(verb: &str, outcomes: &[TenantOutcome]) -> Vec<junit::Case> {
    outcomes
        .iter()
        .map(|o| junit::Case {
            name: o.slug.clone(),
            classname: format!("tenantctl.{}", verb.split(' ').next().unwrap_or(verb)),
            seconds: o.duration_ms as f64 / 1000.0,
            failure: (o.outcome == Outcome::Failed)
                .then(|| o.error.clone().unwrap_or_else(|| "failed".into())),
            skipped: (o.outcome == Outcome::Skipped).then(|| {
                o.note
                    .clone()
                    .or_else(|| o.error.clone())
                    .unwrap_or_default()
            }),
        })
        .collect()
}

/// On GitHub Actions, an ::error:: annotation per failed tenant, on stderr (stdout keeps
/// its one document).
pub fn annotate(verb: &str, outcomes: &[TenantOutcome]) {
    if !junit::on_github_actions() {
        return;
    }
    for o in outcomes.iter().filter(|o| o.outcome == Outcome::Failed) {
        crate::errln!(
            "{}",
            junit::github_error(
                &format!("tenantctl {verb}: {}", o.slug),
                &format!(
                    "tenant {} failed: {}",
                    o.slug,
                    o.error.as_deref().unwrap_or("failed")
                )
            )
        );
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
