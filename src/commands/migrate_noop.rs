//! A `migrate` that has nothing to visit, answered from one streamed registry read.
//!
//! Most runs of `migrate` (each deploy's CI step) find every tenant current. Such a run is
//! answered here without holding the fleet in memory: the registry is read as a stream
//! inside one read-only snapshot, in the byte order of the slugs (the full run's report
//! order), and each tenant is decided as it arrives, exactly as the
//! full run decides it (`migrate::triage`). Only counts are kept, with the first rows (for
//! the short text table) and the tenants that failed or were skipped. The JSON report is
//! written by a second read of the same snapshot, each tenant decided again as it arrives,
//! so its rows agree with its counts. Its output and exit code are those of the full run.
//!
//! The first tenant that needs a visit, or that the full run would refuse or treat apart
//! (ahead of the folder; elsewhere in a dry run or with shared migrations), ends the read
//! before anything is changed, and the full run (migrate.rs) takes over, reading the
//! registry again. So do named tenants, `--waves` and `--format junit`.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use deadpool_postgres::{Object, Pool};

use crate::cli::{Format, MigrateArgs};
use crate::commands::session::{pick_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::MigrationSet;
use crate::output::outcome::{self, Summary, TenantOutcome, FULL_TABLE_LIMIT};
use crate::registry::{self, Pick, Tenant};
use crate::tenant::shared::SharedSet;

use super::migrate::{apply_shared, record_missing_schemas, shared_plan, triage};
use super::report;

/// What the run works from.
pub(super) struct Run<'a> {
    pub s: &'a Session,
    pub args: &'a MigrateArgs,
    pub set: &'a MigrationSet,
    pub target: i64,
    pub shared_set: Option<&'a SharedSet>,
    pub pool: &'a Pool,
}

/// Answers the run when no tenant needs a visit: Some(exit code) once its report is
/// printed, None (nothing changed, nothing printed) when the full run must do it.
pub(super) async fn run(r: &Run<'_>, conn: &mut Object) -> Result<Option<u8>> {
    let args = r.args;
    if !args.slugs.is_empty() || !args.waves.is_empty() || r.s.format == Format::Junit {
        return Ok(None);
    }
    let reader = r
        .pool
        .get()
        .await
        .context("cannot open a connection to read the tenant registry")?;
    registry::begin_snapshot(&reader).await?;
    let answer = answer(r, conn, &reader).await;
    // Read-only: ending it changes nothing, whatever happened in between.
    let ended = registry::end_snapshot(&reader).await;
    let answer = answer?;
    ended?;
    Ok(answer)
}

async fn answer(r: &Run<'_>, conn: &mut Object, reader: &Object) -> Result<Option<u8>> {
    let pick = r
        .args
        .select
        .selector
        .as_ref()
        .map_or(Pick::All, Pick::Selected);
    let home_db = r.s.home_database().to_string();
    let decide = |t: &Tenant| decide(r, &home_db, t);
    let Some(kept) = tally(reader, pick, r.s.json(), &decide).await? else {
        return Ok(None);
    };
    let dry = r.args.dry_run;
    let verb = if dry { "migrate --dry-run" } else { "migrate" };
    let shared = match r.shared_set {
        Some(sh) if dry => Some(shared_plan(conn, sh).await?),
        Some(sh) => Some(apply_shared(conn, sh, r.s.lock_timeout).await),
        None => None,
    };
    let shared_failed = shared.as_ref().is_some_and(|x| x.outcome == "failed");
    if shared_failed && !dry {
        // As the full run: no tenant is started, each is reported skipped (every row is
        // held here; this is a failure, not the daily no-op).
        let tenants = pick_tenants(reader, &[], r.args.select.selector.as_ref(), "").await?;
        let x = shared.as_ref().expect("shared report");
        return Ok(Some(super::migrate::refuse_tenants_after_shared(
            r.s, x, &tenants, r.target,
        )));
    }
    if !dry {
        record_missing_schemas(r.pool, &kept.notable).await;
    }
    report::annotate(verb, &kept.notable);
    if r.s.json() {
        let mut doc = report::begin_run_document(verb, r.target, kept.summary, shared.as_ref());
        registry::for_each_tenant_by_bytes(reader, pick, |t| {
            // The same snapshot as the tally: every tenant is decided as it was there.
            // (It cannot decide otherwise; were it to, the tenant is shown not started.)
            let o = decide(&t).unwrap_or_else(|| {
                TenantOutcome::skipped(&t.slug, &t.schema, t.version, "not started")
            });
            doc.item(&o);
            ControlFlow::Continue(())
        })
        .await?;
        doc.end();
    } else {
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
    Ok(Some(if kept.summary.failed > 0 || shared_failed {
        FAILED
    } else {
        OK
    }))
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

/// What the first read keeps: bounded by the tenants that need attention, not the fleet.
struct Kept {
    n: usize,
    summary: Summary,
    /// The first outcomes, while they may all be shown (text only).
    first: Vec<TenantOutcome>,
    /// Failed and skipped tenants, by slug.
    notable: Vec<TenantOutcome>,
}

/// Decides every tenant as it arrives; None as soon as one needs the full run.
async fn tally(
    reader: &Object,
    pick: Pick<'_>,
    json: bool,
    decide: &impl Fn(&Tenant) -> Option<TenantOutcome>,
) -> Result<Option<Kept>> {
    let mut kept = Kept {
        n: 0,
        summary: Summary::default(),
        first: Vec::new(),
        notable: Vec::new(),
    };
    let complete = registry::for_each_tenant_by_bytes(reader, pick, |t| {
        let Some(o) = decide(&t) else {
            return ControlFlow::Break(());
        };
        kept.n += 1;
        kept.summary.add(o.outcome);
        if !json && kept.first.len() <= FULL_TABLE_LIMIT {
            kept.first.push(o.clone());
        }
        if outcome::needs_attention(&o) {
            kept.notable.push(o);
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok(complete.then_some(kept))
}
