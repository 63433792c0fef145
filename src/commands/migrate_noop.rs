//! A `migrate` that has nothing to visit, answered from one streamed registry read.
//!
//! Most runs of `migrate` (each deploy's CI step) find every tenant current. Such a run is
//! answered here without holding the fleet in memory: the registry is read as a stream, in
//! the byte order of the slugs (the full run's report order), and each tenant is decided
//! as it arrives, exactly as the full run decides it (`migrate::triage`). Only counts are
//! kept, with the first rows (for the short text table) and the tenants that failed or were
//! skipped. The JSON report opens with the counts, so its rows are set aside in an unnamed
//! temporary file (`output::JsonSpool`) and copied out behind them. Output and exit code
//! are those of the full run (tests/streaming.rs compares them).
//!
//! The first tenant that needs a visit, or that the full run would refuse or treat apart
//! (ahead of the folder; elsewhere in a dry run or with shared migrations), ends the read
//! before anything is changed, and the full run (migrate.rs) takes over, reading the
//! registry again. So do named tenants, `--waves` and `--format junit`.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use deadpool_postgres::Object;

use crate::cli::{Format, MigrateArgs};
use crate::commands::session::{now_epoch, pick_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::MigrationSet;
use crate::output::outcome::{self, Outcome, Summary, TenantOutcome, FULL_TABLE_LIMIT};
use crate::output::JsonSpool;
use crate::registry::{self, Pick, Tenant};
use crate::tenant::shared::SharedSet;

use super::migrate::{apply_shared, shared_plan, triage};
use super::report;

/// What the run works from.
pub(super) struct Run<'a> {
    pub s: &'a Session,
    pub args: &'a MigrateArgs,
    pub set: &'a MigrationSet,
    pub target: i64,
    pub shared_set: Option<&'a SharedSet>,
}

/// Answers the run when no tenant needs a visit: Some(exit code) once its report is
/// printed, None (nothing changed, nothing printed) when the full run must do it.
pub(super) async fn run(r: &Run<'_>, conn: &mut Object) -> Result<Option<u8>> {
    let args = r.args;
    if !args.slugs.is_empty() || !args.waves.is_empty() || r.s.format == Format::Junit {
        return Ok(None);
    }
    let pick = args
        .select
        .selector
        .as_ref()
        .map_or(Pick::All, Pick::Selected);
    let home_db = r.s.home_database().to_string();
    let decide = |t: &Tenant| decide(r, &home_db, t);
    // The JSON report opens with the counts: its rows wait in a spool, not in memory.
    let mut spool =
        match r.s.json() {
            true => Some(JsonSpool::new().context(
                "cannot create a temporary file for the JSON report (in TMPDIR or /tmp)",
            )?),
            false => None,
        };
    let Some(kept) = tally(conn, pick, &decide, spool.as_mut()).await? else {
        return Ok(None);
    };
    let dry = args.dry_run;
    let verb = if dry { "migrate --dry-run" } else { "migrate" };
    let shared = match r.shared_set {
        Some(sh) if dry => Some(shared_plan(conn, sh).await?),
        Some(sh) => Some(apply_shared(conn, sh, r.s.lock_timeout).await),
        None => None,
    };
    let shared_failed = shared.as_ref().is_some_and(|x| x.outcome == "failed");
    if let (Some(x), true) = (&shared, shared_failed && !dry) {
        // As the full run: no tenant is started, each is reported skipped (every row is
        // held here; this is a failure, not the daily no-op).
        let tenants = pick_tenants(conn, &[], args.select.selector.as_ref(), "").await?;
        return Ok(Some(super::migrate::refuse_tenants_after_shared(
            r.s, x, &tenants, r.target,
        )));
    }
    if !dry {
        record_missing_schemas(conn, &kept.notable).await;
    }
    report::annotate(verb, &kept.notable);
    match spool {
        Some(spool) => {
            let mut doc = report::begin_run_document(verb, r.target, kept.summary, shared.as_ref());
            doc.items_from(spool)
                .context("cannot read back the JSON report's temporary file")?;
            doc.end();
        }
        None => {
            if let Some(x) = &shared {
                crate::outln!("{}", crate::output::escape_line(&x.line()));
            }
            let rows: Vec<&TenantOutcome> = if kept.n <= FULL_TABLE_LIMIT {
                kept.first.iter().collect()
            } else {
                kept.notable.iter().collect()
            };
            outcome::print_text_of(verb, kept.n, kept.summary, &rows);
        }
    }
    Ok(Some(if kept.summary.failed > 0 || shared_failed {
        FAILED
    } else {
        OK
    }))
}

/// Registered tenants without a schema are recorded as failed, as the full run records them
/// (`migrate::record_missing_schemas`), on the run's own connection.
async fn record_missing_schemas(conn: &Object, notable: &[TenantOutcome]) {
    for o in notable.iter().filter(|o| o.outcome == Outcome::Failed) {
        let why = o.error.as_deref().unwrap_or("");
        let _ = registry::record_failure(conn, &o.slug, why, None, now_epoch()).await;
    }
}

/// The outcome of a tenant that needs no visit, as the full run reports it; None when the
/// full run must take the tenant (and so the whole run).
fn decide(r: &Run<'_>, home_db: &str, t: &Tenant) -> Option<TenantOutcome> {
    // Refused by the full run (`refuse_ahead`, exit 2).
    if t.state != "dropping" && t.version > r.set.latest() {
        return None;
    }
    if t.is_home(home_db) {
        return triage(t, r.set, r.target);
    }
    // A dry run refuses tenants elsewhere; shared migrations are applied where they live
    // first. Otherwise, as in the full run, their schema is looked for only there, when
    // they are visited, so the registry answers for them here.
    if r.args.dry_run || r.shared_set.is_some() {
        return None;
    }
    let mut far = t.clone();
    far.schema_exists = true;
    triage(&far, r.set, r.target)
}

/// What the read keeps: bounded by the tenants that need attention, not the fleet.
struct Kept {
    n: usize,
    summary: Summary,
    /// The first outcomes, while they may all be shown (text only).
    first: Vec<TenantOutcome>,
    /// Failed and skipped tenants, by slug.
    notable: Vec<TenantOutcome>,
}

/// Decides every tenant as it arrives (each outcome into `spool` for JSON); None as soon as
/// one needs the full run.
async fn tally(
    conn: &Object,
    pick: Pick<'_>,
    decide: &impl Fn(&Tenant) -> Option<TenantOutcome>,
    mut spool: Option<&mut JsonSpool>,
) -> Result<Option<Kept>> {
    let mut kept = Kept {
        n: 0,
        summary: Summary::default(),
        first: Vec::new(),
        notable: Vec::new(),
    };
    let mut spooled = Ok(());
    let complete = registry::for_each_tenant_by_bytes(conn, pick, |t| {
        let Some(o) = decide(&t) else {
            return ControlFlow::Break(());
        };
        kept.n += 1;
        kept.summary.add(o.outcome);
        match spool.as_mut() {
            Some(spool) => {
                spooled = spool.item(&o);
                if spooled.is_err() {
                    return ControlFlow::Break(());
                }
            }
            None if kept.first.len() <= FULL_TABLE_LIMIT => kept.first.push(o.clone()),
            None => {}
        }
        if outcome::needs_attention(&o) {
            kept.notable.push(o);
        }
        ControlFlow::Continue(())
    })
    .await?;
    spooled.context("cannot write the JSON report's temporary file")?;
    Ok(complete.then_some(kept))
}
