//! `tenantctl migrate`: bring tenants to the latest (or target) version, concurrently.
//!
//! The registry is read once. A tenant whose registry version and migrations fingerprint
//! already match the files is answered from there without visiting its schema, so a no-op
//! run over thousands of tenants is one query. Every other tenant is migrated in one
//! transaction holding its advisory lock (see `apply`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;

use crate::apply::{self, apply_pending, read_histories, ApplyError, History};
use crate::cli::MigrateArgs;
use crate::fleet::{self, Interrupt, Job};
use crate::migration_set::{MigrationSet, Plan};
use crate::no_transaction;
use crate::outcome::{Outcome, TenantOutcome};
use crate::progress::Progress;
use crate::registry::{self, Tenant};
use crate::session::{now_epoch, select_tenants, Session};
use crate::txn::Tx;

use super::report;

struct Visit(Tenant);

impl Job for Visit {
    fn slug(&self) -> &str {
        &self.0.slug
    }
    fn schema(&self) -> &str {
        &self.0.schema
    }
    fn start_version(&self) -> i64 {
        self.0.version
    }
}

struct Shared {
    pool: Pool,
    set: MigrationSet,
    target: i64,
    lock_timeout_ms: Option<u64>,
}

pub async fn run(s: &Session, args: &MigrateArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let target = set.resolve_target(args.target)?;
    let concurrency = s.concurrency();
    let (pool, conn) = s.connect(concurrency + 1).await?;
    let concurrency = s.fit_concurrency(&conn, concurrency).await?;
    let tenants = select_tenants(&conn, &args.slugs, "nothing was migrated").await?;
    drop(conn);

    let mut outcomes = Vec::new();
    let mut visits = Vec::new();
    for t in tenants {
        match triage(&t, &set, target) {
            Some(o) => outcomes.push(o),
            None => visits.push(Visit(t)),
        }
    }
    let shared = Arc::new(Shared {
        pool,
        set,
        target,
        lock_timeout_ms: args.lock_timeout,
    });
    if args.dry_run {
        outcomes.extend(dry_run(&shared, visits).await?);
    } else {
        record_missing_schemas(&shared.pool, &outcomes).await;
        let interrupt = Interrupt::listen();
        let progress = Progress::new("migrate", visits.len(), s.json());
        let canary = args.canary.map_or(0, |n| n as usize).min(visits.len());
        let rest = visits.split_off(canary);
        let mut ran = Vec::new();
        let phase = |jobs| {
            run_phase(
                shared.clone(),
                jobs,
                concurrency,
                args.fail_fast,
                &interrupt,
                &progress,
            )
        };
        if canary > 0 {
            progress.note(&format!("migrate: canary: {canary} tenants first"));
            ran = phase(visits).await;
        }
        let canary_failed = ran.iter().any(|o| o.outcome == Outcome::Failed);
        if canary_failed || interrupt.is_set() {
            let why = if canary_failed {
                "not started: a canary tenant failed"
            } else {
                "not started: interrupted"
            };
            ran.extend(
                rest.iter()
                    .map(|j| TenantOutcome::skipped(j.slug(), j.schema(), j.start_version(), why)),
            );
        } else {
            ran.extend(phase(rest).await);
        }
        progress.finish();
        outcomes.extend(ran);
        outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
        report::print("migrate", s, &outcomes, target);
        return Ok(report::exit_code(&outcomes, &interrupt));
    }
    outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
    report::print("migrate --dry-run", s, &outcomes, target);
    Ok(report::exit_code(&outcomes, &Interrupt::default()))
}

/// Decides from the registry alone when a tenant needs no visit.
fn triage(t: &Tenant, set: &MigrationSet, target: i64) -> Option<TenantOutcome> {
    if t.state == "dropping" {
        return Some(TenantOutcome::skipped(
            &t.slug,
            &t.schema,
            t.version,
            "it is being dropped",
        ));
    }
    if !t.schema_exists {
        let msg = format!("schema {} is missing from the database", t.schema);
        return Some(TenantOutcome::failed(&t.slug, &t.schema, t.version, msg));
    }
    let current = t.state == "active"
        && t.version >= target
        && t.digest.as_deref() == set.digest_at(t.version);
    current.then(|| TenantOutcome::new(&t.slug, &t.schema, Outcome::UpToDate, t.version, t.version))
}

/// Registered tenants without a schema are recorded as failed, not silently skipped.
async fn record_missing_schemas(pool: &Pool, outcomes: &[TenantOutcome]) {
    let missing: Vec<&TenantOutcome> = outcomes
        .iter()
        .filter(|o| o.outcome == Outcome::Failed)
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Ok(c) = pool.get().await {
        for o in missing {
            let _ = registry::record_failure(
                &c,
                &o.slug,
                o.error.as_deref().unwrap_or(""),
                None,
                now_epoch(),
            )
            .await;
        }
    }
}

/// Runs one phase (the canary, or the rest). Its tenants are marked `migrating` in one
/// statement first, so status shows the run and a killed run is recognised afterwards;
/// the ones that never start (fail-fast, Ctrl-C) get their previous state back.
async fn run_phase(
    shared: Arc<Shared>,
    jobs: Vec<Visit>,
    concurrency: usize,
    fail_fast: bool,
    interrupt: &Interrupt,
    progress: &Progress,
) -> Vec<TenantOutcome> {
    let slugs: Vec<String> = jobs.iter().map(|j| j.0.slug.clone()).collect();
    let before: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.0.slug.clone(), j.0.state.clone()))
        .collect();
    if let Ok(c) = shared.pool.get().await {
        // If this fails the server is gone, and every tenant will say so below.
        let _ = registry::mark_migrating(&c, &slugs).await;
    }
    let outcomes = fleet::run(jobs, concurrency, fail_fast, interrupt, progress, |j| {
        migrate_job(shared.clone(), j)
    })
    .await;
    let unstarted: Vec<&(String, String)> = before
        .iter()
        .filter(|(slug, _)| {
            outcomes
                .iter()
                .any(|o| &o.slug == slug && o.outcome == Outcome::Skipped)
        })
        .collect();
    if !unstarted.is_empty() {
        if let Ok(c) = shared.pool.get().await {
            let (slugs, states): (Vec<String>, Vec<String>) =
                unstarted.into_iter().cloned().unzip();
            let _ = registry::restore_states(&c, &slugs, &states).await;
        }
    }
    outcomes
}

async fn migrate_job(shared: Arc<Shared>, job: Visit) -> TenantOutcome {
    let t = job.0;
    let started = Instant::now();
    let epoch = now_epoch();
    let client = match shared.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            return TenantOutcome::failed(
                &t.slug,
                &t.schema,
                t.version,
                format!("no connection: {e}"),
            )
        }
    };
    if let Some(start) = no_transaction::needed(&t, &shared.set, shared.target) {
        let run = no_transaction::TenantRun {
            slug: &t.slug,
            schema: &t.schema,
            set: &shared.set,
            target: shared.target,
            lock_timeout_ms: shared.lock_timeout_ms,
        };
        return no_transaction::migrate_tenant(&client, &run, &t, start, started, epoch).await;
    }
    // Left `migrating` by a run that was killed: its transaction rolled back, so the
    // tenant is simply migrated again.
    let interrupted = t.state == "migrating";
    match migrate_tenant(&client, &shared, &t).await {
        Ok((version, applied)) => {
            let kind = if applied.is_empty() {
                Outcome::UpToDate
            } else {
                Outcome::Applied
            };
            let mut o = TenantOutcome::new(&t.slug, &t.schema, kind, t.version, version);
            o.migrations = applied;
            if interrupted {
                o.note = Some("recovered from an interrupted run".into());
            }
            o.took(started.elapsed())
        }
        Err(e) => {
            let failed = e.failed_migration();
            let msg = e.to_string();
            let _ = registry::record_failure(&client, &t.slug, &msg, failed, epoch).await;
            TenantOutcome::failed(&t.slug, &t.schema, t.version, msg).took(started.elapsed())
        }
    }
}

/// One tenant's migration and registry update, committed together. When the registry
/// vouches for the tenant's history, that is one flight (lock, check, migrations, registry
/// update, COMMIT); when it does not, or the tenant changed since the registry was read
/// (another tenantctl migrated it), the history is read first, in a flight of its own.
async fn migrate_tenant(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    t: &Tenant,
) -> Result<(i64, Vec<String>), ApplyError> {
    match attempt(client, shared, t, History::for_tenant(t, &shared.set)).await {
        Err(ApplyError::Stale) => attempt(client, shared, t, History::Read).await,
        other => other,
    }
}

async fn attempt(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    t: &Tenant,
    history: History<'_>,
) -> Result<(i64, Vec<String>), ApplyError> {
    let mut tx = Tx::begin(client);
    let applied = apply_pending(
        &mut tx,
        &t.schema,
        &shared.set,
        shared.target,
        shared.lock_timeout_ms,
        history,
    )
    .await?;
    let digest = shared.set.digest_at(applied.version);
    tx.queue_sql(registry::record_success(
        &t.slug,
        applied.version,
        digest,
        &applied.migrations,
    ))
    .await?;
    apply::commit(&mut tx, &applied).await?;
    Ok((
        applied.version,
        applied.migrations.iter().map(ToString::to_string).collect(),
    ))
}

/// Reads every visited tenant's history in one read-only snapshot and reports what a run
/// would apply to each; changes nothing.
async fn dry_run(shared: &Shared, visits: Vec<Visit>) -> Result<Vec<TenantOutcome>> {
    let mut conn = shared
        .pool
        .get()
        .await
        .context("cannot get a connection for the dry run")?;
    let schemas: Vec<&str> = visits.iter().map(|v| v.0.schema.as_str()).collect();
    let histories = read_histories(&mut conn, &schemas).await?;
    Ok(visits
        .iter()
        .zip(histories)
        .map(
            |(Visit(t), history)| match shared.set.plan(&history, shared.target) {
                Plan::Apply(p) if p.is_empty() => {
                    TenantOutcome::new(&t.slug, &t.schema, Outcome::UpToDate, t.version, t.version)
                }
                Plan::Apply(p) => {
                    let names: Vec<String> = p.iter().map(|(v, n)| format!("V{v}__{n}")).collect();
                    let shown: Vec<String> =
                        p.iter().map(|(v, n)| shared.set.describe(*v, n)).collect();
                    let why = format!("dry run: would apply {}", shown.join(", "));
                    let mut o = TenantOutcome::skipped(&t.slug, &t.schema, t.version, why);
                    o.to_version = p.last().map_or(t.version, |(v, _)| *v);
                    o.migrations = names;
                    o
                }
                Plan::Diverged(why) => {
                    TenantOutcome::failed(&t.slug, &t.schema, t.version, format!("refused: {why}"))
                }
            },
        )
        .collect())
}
