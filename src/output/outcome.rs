//! What happened to each tenant in a create or migrate run, and how it is shown.

use std::time::Duration;

use serde::Serialize;

use crate::output::{count, escape_line, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    UpToDate,
    Failed,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::UpToDate => "up_to_date",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub slug: String,
    pub schema: String,
    pub outcome: Outcome,
    pub from_version: i64,
    pub to_version: i64,
    /// Migrations applied (or, in a dry run, that would be).
    pub migrations: Vec<String>,
    pub error: Option<String>,
    /// Something worth knowing about a tenant that did not fail (e.g. recovered).
    pub note: Option<String>,
    pub duration_ms: u64,
}

impl TenantOutcome {
    pub fn new(slug: &str, schema: &str, outcome: Outcome, from: i64, to: i64) -> Self {
        TenantOutcome {
            slug: slug.to_string(),
            schema: schema.to_string(),
            outcome,
            from_version: from,
            to_version: to,
            migrations: Vec::new(),
            error: None,
            note: None,
            duration_ms: 0,
        }
    }

    pub fn failed(slug: &str, schema: &str, from: i64, error: impl Into<String>) -> Self {
        let mut o = Self::new(slug, schema, Outcome::Failed, from, from);
        o.error = Some(error.into());
        o
    }

    pub fn skipped(slug: &str, schema: &str, from: i64, why: impl Into<String>) -> Self {
        let mut o = Self::new(slug, schema, Outcome::Skipped, from, from);
        o.error = Some(why.into());
        o
    }

    pub fn took(mut self, d: Duration) -> Self {
        self.duration_ms = d.as_millis() as u64;
        self
    }

    /// One line for logs: `acme: applied 6 -> 7 (12 ms)`. Escaped: errors quote the server.
    pub fn line(&self) -> String {
        let line = match self.outcome {
            Outcome::Applied => format!(
                "{}: applied {} -> {} ({} ms){}",
                self.slug,
                self.from_version,
                self.to_version,
                self.duration_ms,
                self.note
                    .as_ref()
                    .map(|n| format!("; {n}"))
                    .unwrap_or_default()
            ),
            Outcome::UpToDate => format!("{}: up to date at {}", self.slug, self.to_version),
            Outcome::Failed => format!(
                "{}: FAILED: {}",
                self.slug,
                self.error.as_deref().unwrap_or("")
            ),
            Outcome::Skipped => format!(
                "{}: skipped: {}",
                self.slug,
                self.error.as_deref().unwrap_or("")
            ),
        };
        escape_line(&line).into_owned()
    }
}

/// Counts per outcome.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Summary {
    pub applied: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn of(outcomes: &[TenantOutcome]) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            s.add(o.outcome);
        }
        s
    }

    /// Counts one more tenant.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Applied => self.applied += 1,
            Outcome::UpToDate => self.up_to_date += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }
}

/// Tables longer than this show only the tenants that need attention.
pub const FULL_TABLE_LIMIT: usize = 50;

/// The text summary of a run: a table (all tenants when few, else only the ones that did
/// not succeed), then one line of counts.
pub fn print_text(verb: &str, outcomes: &[TenantOutcome]) {
    let rows: Vec<&TenantOutcome> = if outcomes.len() <= FULL_TABLE_LIMIT {
        outcomes.iter().collect()
    } else {
        outcomes.iter().filter(|o| needs_attention(o)).collect()
    };
    print_text_of(verb, outcomes.len(), Summary::of(outcomes), &rows);
}

/// Whether a tenant's row is shown in the table of a run over many tenants.
pub fn needs_attention(o: &TenantOutcome) -> bool {
    matches!(o.outcome, Outcome::Failed | Outcome::Skipped)
}

/// [`print_text`] from what a streamed run kept: how many tenants, their counts, and the
/// rows of its table (every tenant up to [`FULL_TABLE_LIMIT`], else those that need
/// attention), in slug order; the failed ones among them close the report.
pub fn print_text_of(verb: &str, total: usize, summary: Summary, rows: &[&TenantOutcome]) {
    if !rows.is_empty() {
        let mut t = table(vec![
            "tenant", "schema", "outcome", "from", "to", "ms", "error",
        ]);
        for o in rows {
            t.add_row(vec![
                o.slug.clone(),
                o.schema.clone(),
                o.outcome.as_str().to_string(),
                o.from_version.to_string(),
                o.to_version.to_string(),
                o.duration_ms.to_string(),
                o.error
                    .clone()
                    .or_else(|| o.note.clone())
                    .unwrap_or_default(),
            ]);
        }
        crate::outln!("{t}");
    }
    crate::outln!(
        "{verb}: {}: {} applied, {} up to date, {} failed, {} skipped",
        count(total, "tenant"),
        summary.applied,
        summary.up_to_date,
        summary.failed,
        summary.skipped
    );
    for o in rows.iter().filter(|o| o.outcome == Outcome::Failed) {
        crate::outln!("failed: {}", o.line());
    }
}
