//! `tenantctl migrate`: bring tenants to the latest (or target) version, concurrently.
//!
//! The registry is read once. A tenant whose registry version and migrations fingerprint
//! already match the files is answered from there without visiting its schema, so a no-op
//! run over thousands of tenants is one query. Every other tenant is migrated in one
//! transaction holding its advisory lock (see `apply`).

use crate::tenant::citus::{Backend, Work};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deadpool_postgres::Pool;

use crate::cli::MigrateArgs;
use crate::commands::session::{now_epoch, pick_tenants, Session};
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::domain::migration_set::{AppliedMigration, MigrationSet, Plan};
use crate::domain::selector::{self, Selector};
use crate::fleet::outage::Outage;
use crate::fleet::{self, Interrupt, Job};
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::pg::connect::{self, PgContext};
use crate::pg::txn::Tx;
use crate::registry::locks;
use crate::registry::{self, Tenant};
use crate::tenant::apply::{self, apply_pending, read_histories, ApplyError, History};
use crate::tenant::no_transaction;
use crate::tenant::shared::{self, SharedSet};

use super::report::{self, SharedReport};
use super::{migrate_far, migrate_noop};

struct Shared {
    pool: Pool,
    /// Plain PostgreSQL or a Citus coordinator: how a tenant's transaction starts.
    backend: Backend,
    set: MigrationSet,
    target: i64,
    lock_timeout: Option<Duration>,
    /// Whether another `migrate` run was live when this one read the registry: a tenant
    /// it marked `migrating` is then not one left by an interrupted run.
    other_runs: bool,
    outage: Outage,
    progress: Arc<Progress>,
    /// Where the tenants elsewhere live (`migrate_far`), and the registry's own database.
    places: migrate_far::Places,
    home_db: String,
}

impl Shared {
    /// Waits for the server after an attempt that began at `epoch` found it gone.
    async fn wait_for_server(&self, epoch: u64, why: &str) -> bool {
        self.outage
            .wait(&self.pool, epoch, why, |msg| {
                self.progress.note(&format!("migrate: {msg}"))
            })
            .await
    }
}

pub async fn run(s: &Session, args: &MigrateArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let target = set.resolve_target(args.target)?;
    let shared_set = s.shared_set()?;
    let concurrency = s.concurrency();
    let (pool, mut conn) = s.connect(concurrency + 1).await?;
    // On Citus: what the migrations hold that a distributed schema cannot run, refused
    // before any tenant is touched.
    let (backend, needs) = s.backend().check_migrations(&set, target)?;
    // The first connection is kept for the run's mark (see `locks::RUN_MARK`).
    let concurrency = s.fit_concurrency(&conn, concurrency, !args.dry_run).await?;
    // Nothing to visit (the usual run): answered from a streamed read (migrate_noop.rs).
    let noop = migrate_noop::Run {
        s,
        args,
        set: &set,
        target,
        shared_set: shared_set.as_ref(),
    };
    if let Some(code) = migrate_noop::run(&noop, &mut conn).await? {
        return Ok(code);
    }
    let tenants = pick_tenants(
        &conn,
        &args.slugs,
        args.select.selector.as_ref(),
        "nothing was migrated",
    )
    .await?;
    check_waves(args)?;
    let (tenants, unmatched) = in_some_wave(tenants, &args.waves);
    refuse_ahead(&tenants, &set)?;
    let home_db = s.home_database().to_string();
    // The places elsewhere that tenants to visit live at, opened before anything changes:
    // each one's backend is detected, so a Citus worker there, or migrations a Citus
    // coordinator there cannot run, are refused first (exit 2).
    let far_visits: Vec<Tenant> = tenants
        .iter()
        .filter(|t| !t.is_home(&home_db) && visited_elsewhere(t, &set, target))
        .cloned()
        .collect();
    let size = if args.dry_run { 1 } else { concurrency };
    let places = migrate_far::Places::open(s, &far_visits, size, &set, target).await?;
    // Shared migrations first, once: tenants' migrations may reference what they create.
    let shared_report = match &shared_set {
        Some(sh) if args.dry_run => Some(shared_plan(&mut conn, sh).await?),
        Some(sh) => {
            let r = apply_shared(&conn, sh, s.lock_timeout).await;
            if r.outcome == "failed" {
                return Ok(refuse_tenants_after_shared(s, &r, &tenants, target));
            }
            Some(r)
        }
        None => None,
    };
    let shared_report = shared_report.as_ref();
    // After the shared migrations, which may create the reference tables it looks for.
    backend.check_on_server(&conn, &needs).await?;
    // The shared migrations at every other place holding tenants, before those tenants.
    let shared_failed = match &shared_set {
        Some(sh) if !args.dry_run && tenants.iter().any(|t| !t.is_home(&home_db)) => {
            let far: Vec<Tenant> = tenants
                .iter()
                .filter(|t| !t.is_home(&home_db))
                .cloned()
                .collect();
            migrate_far::shared_everywhere(s, sh, s.lock_timeout, &far).await
        }
        _ => Default::default(),
    };
    // As at home, after the shared migrations of each place.
    places.check_on_server().await?;
    let mut outcomes = Vec::new();
    let mut visits = Vec::new();
    for mut t in tenants {
        if !t.is_home(&home_db) {
            // Elsewhere: its schema is looked for where it lives, by its visit.
            t.schema_exists = true;
            if let Some(why) = shared_failed.get(&(t.server.clone(), t.database.clone())) {
                let _ = registry::record_failure(&conn, &t.slug, why, None, now_epoch()).await;
                outcomes.push(TenantOutcome::failed(
                    &t.slug,
                    &t.schema,
                    t.version,
                    why.clone(),
                ));
                continue;
            }
        }
        match triage(&t, &set, target) {
            Some(o) => outcomes.push(o),
            None => visits.push(t),
        }
    }
    // One fleet wherever its tenants live: the servers take turns in the order of the run
    // (canaries, waves and failure budgets span them), each place with a pool of the run's
    // concurrency, so the runner keeps that many tenants in flight per place.
    let mut visits = interleave_places(visits);
    let home_visited = usize::from(visits.iter().any(|t| t.is_home(&home_db)));
    let concurrency = concurrency * (home_visited + places.len()).max(1);
    // A run that will mark tenants says so first (its connection holds the mark until the
    // run ends), then looks for other live runs: read after the registry, so a tenant seen
    // `migrating` was marked by one of them, or by a run that is gone.
    let other_runs = if args.dry_run || visits.is_empty() {
        Vec::new()
    } else {
        locks::mark_run(&conn)
            .await
            .pg_context("cannot mark this run as live")?;
        if visits.iter().any(|v| v.state == "migrating") {
            locks::other_runs(&conn)
                .await
                .pg_context("cannot look for other migrate runs")?
        } else {
            Vec::new()
        }
    };
    let run_mark = (!args.dry_run).then_some(conn);
    let progress = Arc::new(Progress::new(
        "migrate",
        if args.dry_run { 0 } else { visits.len() },
        s.json(),
    ));
    if !other_runs.is_empty() {
        progress.note(&format!(
            "migrate: another tenantctl migrate is running (backend pid {}); tenants it marked \
             migrating are taken by whichever run reaches them first",
            other_runs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let shared = Arc::new(Shared {
        pool,
        backend,
        set,
        target,
        lock_timeout: s.lock_timeout,
        other_runs: !other_runs.is_empty(),
        outage: Outage::new(s.connect_budget()),
        progress: progress.clone(),
        places,
        home_db: home_db.clone(),
    });
    if args.dry_run {
        let (home, far): (Vec<Tenant>, Vec<Tenant>) =
            visits.into_iter().partition(|t| t.is_home(&home_db));
        outcomes.extend(dry_run(&shared, home).await?);
        let plan = |t: &Tenant, h| plan_outcome(&shared.set, shared.target, t, h);
        outcomes.extend(migrate_far::dry_run(&shared.places, far, plan).await);
    } else {
        record_missing_schemas(&shared.pool, &outcomes).await;
        let interrupt = Interrupt::listen();
        if !args.waves.is_empty() {
            let (ran, mut waves) =
                run_waves(&shared, visits, args, concurrency, &interrupt, &progress).await;
            waves.unmatched = unmatched;
            progress.finish();
            drop(run_mark);
            outcomes.extend(ran);
            outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
            report::print_waves("migrate", s, shared_report, &outcomes, target, &waves);
            return Ok(run_exit(s, &shared, &outcomes, &interrupt));
        }
        let canary = args.canary.map_or(0, |n| n as usize).min(visits.len());
        let budget = fleet::Budget::from_flags(args.fail_fast, args.max_failures, visits.len());
        let rest = visits.split_off(canary);
        let mut ran = Vec::new();
        let phase = |jobs| {
            run_phase(
                shared.clone(),
                jobs,
                concurrency,
                &budget,
                &interrupt,
                &progress,
            )
        };
        if canary > 0 {
            progress.note(&format!(
                "migrate: canary: {} first",
                crate::output::count(canary, "tenant")
            ));
            ran = phase(visits).await;
        }
        let canary_failed = ran.iter().any(|o| o.outcome == Outcome::Failed);
        if canary_failed || interrupt.is_set() || shared.outage.gone() {
            let why = if canary_failed {
                "not started: a canary tenant failed"
            } else if interrupt.is_set() {
                "not started: interrupted"
            } else {
                NOT_STARTED_GONE
            };
            ran.extend(
                rest.iter()
                    .map(|j| TenantOutcome::skipped(j.slug(), j.schema(), j.start_version(), why)),
            );
        } else {
            ran.extend(phase(rest).await);
        }
        progress.finish();
        drop(run_mark);
        outcomes.extend(ran);
        outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
        report::print("migrate", s, shared_report, &outcomes, target);
        return Ok(run_exit(s, &shared, &outcomes, &interrupt));
    }
    outcomes.sort_by(|a, b| a.slug.cmp(&b.slug));
    report::print("migrate --dry-run", s, shared_report, &outcomes, target);
    let code = report::exit_code(&outcomes, &Interrupt::default());
    Ok(match shared_report {
        Some(r) if r.outcome == "failed" => FAILED,
        _ => code,
    })
}

/// Applies the pending shared migrations (see `tenant::shared::apply`), as a report.
pub(super) async fn apply_shared(
    conn: &deadpool_postgres::Object,
    sh: &SharedSet,
    lock_timeout: Option<Duration>,
) -> SharedReport {
    match shared::apply(conn, sh, lock_timeout).await {
        Ok(a) => SharedReport {
            schema: sh.schema.clone(),
            outcome: if a.migrations.is_empty() {
                "up_to_date"
            } else {
                "applied"
            },
            version: a.version,
            migrations: a.migrations.iter().map(ToString::to_string).collect(),
            error: None,
        },
        Err(e) => SharedReport {
            schema: sh.schema.clone(),
            outcome: "failed",
            version: 0,
            migrations: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// What a run would apply to the shared schema; a diverged history is reported failed.
pub(super) async fn shared_plan(
    conn: &mut deadpool_postgres::Object,
    sh: &SharedSet,
) -> Result<SharedReport> {
    let st = shared::state(conn, sh).await?;
    let (outcome, migrations, error) = match &st.plan {
        Plan::Diverged(why) => ("failed", Vec::new(), Some(format!("refused: {why}"))),
        Plan::Apply(p) if p.is_empty() => ("up_to_date", Vec::new(), None),
        Plan::Apply(p) => (
            "pending",
            p.iter().map(|(v, n)| format!("V{v}__{n}")).collect(),
            None,
        ),
    };
    Ok(SharedReport {
        schema: sh.schema.clone(),
        outcome,
        version: st.version,
        migrations,
        error,
    })
}

/// The shared migrations failed: no tenant is started; each is reported skipped. Exit 1.
pub(super) fn refuse_tenants_after_shared(
    s: &Session,
    r: &SharedReport,
    tenants: &[Tenant],
    target: i64,
) -> u8 {
    let outcomes: Vec<TenantOutcome> = tenants
        .iter()
        .map(|t| {
            TenantOutcome::skipped(
                &t.slug,
                &t.schema,
                t.version,
                "not started: the shared migrations failed",
            )
        })
        .collect();
    report::print("migrate", s, Some(r), &outcomes, target);
    FAILED
}

/// Why a tenant was not started once the server stayed away for the whole connect timeout.
const NOT_STARTED_GONE: &str = "not started: the server went away";

/// The closing line of a run the server left: what was not done, and what to do.
/// The exit code of a run that ran, saying so when the server went away.
fn run_exit(s: &Session, shared: &Shared, outcomes: &[TenantOutcome], interrupt: &Interrupt) -> u8 {
    let code = report::exit_code(outcomes, interrupt);
    if shared.outage.gone() {
        crate::errln!("{}", gone_summary(s, &shared.outage, outcomes));
        return if code == OK { FAILED } else { code };
    }
    code
}

/// Refuses (exit 2) --waves beside what also picks tenants or phases, and a '*' wave that
/// is not the last (the waves after it could hold no tenant).
fn check_waves(args: &MigrateArgs) -> Result<()> {
    if args.waves.is_empty() {
        return Ok(());
    }
    if !args.slugs.is_empty() || args.select.selector.is_some() || args.canary.is_some() {
        return Err(bad_input(
            "--waves picks the tenants and their order itself: give it without SLUG \
             arguments, -l or --canary; nothing was migrated",
        ));
    }
    let last = args.waves.len() - 1;
    if let Some(i) = args.waves[..last]
        .iter()
        .position(|w| w.requirements.is_empty())
    {
        return Err(bad_input(format!(
            "wave {} is '*' (every tenant left), so the waves after it could hold no tenant: \
             '*' may only be the last wave; nothing was migrated",
            i + 1
        )));
    }
    Ok(())
}

/// The tenants some wave matches (all when there are no waves), and how many none did.
fn in_some_wave(tenants: Vec<Tenant>, waves: &[Selector]) -> (Vec<Tenant>, usize) {
    if waves.is_empty() {
        return (tenants, 0);
    }
    let total = tenants.len();
    let kept: Vec<Tenant> = tenants
        .into_iter()
        .filter(|t| wave_of(t, waves).is_some())
        .collect();
    let unmatched = total - kept.len();
    (kept, unmatched)
}

/// The first wave whose selector the tenant's labels match.
fn wave_of(t: &Tenant, waves: &[Selector]) -> Option<usize> {
    waves.iter().position(|w| selector::matches(w, &t.labels))
}

/// Runs the visits wave by wave. The failure budget (--max-failures over all the visits,
/// default 0) is shared by the waves: a wave starts only while the failures so far are
/// within it, and inside a wave no tenant starts once they exceed it.
async fn run_waves(
    shared: &Arc<Shared>,
    visits: Vec<Tenant>,
    args: &MigrateArgs,
    concurrency: usize,
    interrupt: &Interrupt,
    progress: &Arc<Progress>,
) -> (Vec<TenantOutcome>, report::Waves) {
    let allowed = if args.fail_fast {
        0
    } else {
        args.max_failures.map_or(0, |m| m.allowed(visits.len()))
    };
    let mut by_wave: Vec<Vec<Tenant>> = args.waves.iter().map(|_| Vec::new()).collect();
    for v in visits {
        if let Some(i) = wave_of(&v, &args.waves) {
            by_wave[i].push(v);
        }
    }
    let budget_text = match args.max_failures {
        Some(m) if !args.fail_fast => format!("--max-failures {m}"),
        _ => "no failure allowed without --max-failures".to_string(),
    };
    let mut report = report::Waves::default();
    let mut ran = Vec::new();
    let mut failed = 0;
    let mut stop: Option<String> = None;
    for (i, jobs) in by_wave.into_iter().enumerate() {
        let sel = &args.waves[i];
        if let Some(why) = &stop {
            report.waves.push(report::Wave {
                wave: i + 1,
                selector: sel.text.clone(),
                tenants: jobs.len(),
                failed: 0,
                status: "not_started",
            });
            ran.extend(jobs.iter().map(|j| {
                TenantOutcome::skipped(j.slug(), j.schema(), j.start_version(), why.clone())
            }));
            continue;
        }
        progress.note(&format!(
            "migrate: wave {} ({sel}): {}",
            i + 1,
            crate::output::count(jobs.len(), "tenant")
        ));
        let budget = fleet::Budget::new(
            allowed - failed,
            format!(
                "not started: more than {} failed by wave {} ({sel}) ({budget_text})",
                crate::output::count(allowed, "tenant"),
                i + 1
            ),
        );
        let tenants = jobs.len();
        let out = run_phase(
            shared.clone(),
            jobs,
            concurrency,
            &budget,
            interrupt,
            progress,
        )
        .await;
        let f = out.iter().filter(|o| o.outcome == Outcome::Failed).count();
        failed += f;
        let reason = if failed > allowed {
            Some(format!(
                "{} failed, more than the failure budget of {allowed} ({budget_text})",
                crate::output::count(failed, "tenant")
            ))
        } else if interrupt.is_set() {
            Some("interrupted".to_string())
        } else if shared.outage.gone() {
            Some("the server went away".to_string())
        } else {
            None
        };
        report.waves.push(report::Wave {
            wave: i + 1,
            selector: sel.text.clone(),
            tenants,
            failed: f,
            status: if reason.is_some() {
                "stopped"
            } else {
                "completed"
            },
        });
        if let Some(reason) = reason {
            stop = Some(format!(
                "not started: the rollout stopped at wave {} ({sel}): {reason}",
                i + 1
            ));
            report.stopped = Some(report::Stopped {
                wave: i + 1,
                selector: sel.text.clone(),
                reason,
            });
        }
        ran.extend(out);
    }
    (ran, report)
}

fn gone_summary(s: &Session, outage: &Outage, outcomes: &[TenantOutcome]) -> String {
    let unfinished = outcomes
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed | Outcome::Skipped))
        .count();
    format!(
        "error: the server at {} went away and did not come back within {} s (--connect-timeout); \
         {unfinished} tenants were not migrated (nothing of theirs was applied). Those the \
         registry still shows as migrating are taken up by the next run: run tenantctl migrate \
         again once the server is back",
        s.target.describe(),
        outage.budget().as_secs()
    )
}

/// Refuses the run (exit 2, before anything changes) when tenants are at a version the
/// folder does not have: the folder of an older release (a rolled-back deploy), or an
/// empty one. Those tenants are healthy; visiting them would only fail them one by one.
/// The registry knows every tenant's version, so this takes no visit.
fn refuse_ahead(tenants: &[Tenant], set: &MigrationSet) -> Result<()> {
    let latest = set.latest();
    let ahead: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.state != "dropping" && t.version > latest)
        .collect();
    if ahead.is_empty() {
        return Ok(());
    }
    let mut versions: Vec<i64> = ahead.iter().map(|t| t.version).collect();
    versions.sort_unstable();
    versions.dedup();
    let missing = match versions.as_slice() {
        [v] => format!("V{v} is missing"),
        many => format!(
            "{} are missing",
            and_list(many.iter().map(|v| format!("V{v}")))
        ),
    };
    let folder = if latest == 0 {
        format!("{} (it has no migrations)", set.dir.display())
    } else {
        format!("{} (its latest is V{latest})", set.dir.display())
    };
    let n = ahead.len();
    Err(bad_input(format!(
        "{n} tenant{} ahead of this migrations folder: {missing} from {folder}; ahead: {}. \
         Is this an older release's folder? Migrate with the folder of the release that \
         applied {}; nothing was changed",
        if n == 1 { " is" } else { "s are" },
        and_list(ahead.iter().map(|t| t.slug.clone())),
        if n == 1 { "it" } else { "them" },
    )))
}

/// "a, b, c and 4 more" (at most 5 named).
fn and_list(items: impl ExactSizeIterator<Item = String>) -> String {
    const SHOWN: usize = 5;
    let n = items.len();
    let shown: Vec<String> = items.take(SHOWN).collect();
    match n {
        0 => String::new(),
        1 => shown[0].clone(),
        _ if n <= SHOWN => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
        _ => format!("{} and {} more", shown.join(", "), n - SHOWN),
    }
}

/// Decides from the registry alone when a tenant needs no visit.
pub(super) fn triage(t: &Tenant, set: &MigrationSet, target: i64) -> Option<TenantOutcome> {
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
    // A suspended tenant is kept current like an active one (it stays suspended).
    let settled = t.state == "active" || (t.state == "suspended" && t.last_error.is_none());
    let current = settled && t.version >= target && t.digest.as_deref() == set.digest_at(t.version);
    current.then(|| TenantOutcome::new(&t.slug, &t.schema, Outcome::UpToDate, t.version, t.version))
}

/// Whether a tenant elsewhere will be visited: the registry cannot answer for it (its
/// schema is looked for where it lives, by the visit).
fn visited_elsewhere(t: &Tenant, set: &MigrationSet, target: i64) -> bool {
    let seen = Tenant {
        schema_exists: true,
        ..t.clone()
    };
    triage(&seen, set, target).is_none()
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
    jobs: Vec<Tenant>,
    concurrency: usize,
    budget: &fleet::Budget,
    interrupt: &Interrupt,
    progress: &Progress,
) -> Vec<TenantOutcome> {
    // Nothing to mark: a no-op run stays one registry query.
    if jobs.is_empty() {
        return Vec::new();
    }
    let slugs: Vec<String> = jobs.iter().map(|j| j.slug.clone()).collect();
    let before: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.slug.clone(), j.state.clone()))
        .collect();
    if let Ok(c) = shared.pool.get().await {
        // If this fails the server is gone, and every tenant will say so below.
        let _ = registry::mark_migrating(&c, &slugs).await;
    }
    let outcomes = fleet::run_budgeted(jobs, concurrency, budget, interrupt, progress, |j| {
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

/// How many times one tenant waits for the server before it gives up (a server that keeps
/// going away and coming back).
const MAX_SERVER_WAITS: u32 = 3;

async fn migrate_job(shared: Arc<Shared>, t: Tenant) -> TenantOutcome {
    if !t.is_home(&shared.home_db) {
        // Its row is on home: with home gone for good, it is not started either.
        if shared.outage.gone() {
            return TenantOutcome::skipped(&t.slug, &t.schema, t.version, NOT_STARTED_GONE);
        }
        let sh = &*shared;
        let run = migrate_far::Run {
            home: &sh.pool,
            places: &sh.places,
            set: &sh.set,
            target: sh.target,
            lock_timeout: sh.lock_timeout,
            progress: &sh.progress,
        };
        return migrate_far::migrate_tenant(&run, &t).await;
    }
    let started = Instant::now();
    let epoch = now_epoch();
    // Left `migrating` by a run that is gone (none other is live): its transaction rolled
    // back, so the tenant is simply migrated again.
    let interrupted = t.state == "migrating" && !shared.other_runs;
    // Whether a transaction of this tenant was cut by the server going away: it rolled
    // back, and the tenant is tried once more when the server is back.
    let mut cut: Option<String> = None;
    let mut waits = 0;
    loop {
        if shared.outage.gone() {
            return match cut {
                Some(why) => cut_outcome(&t, &why),
                None => TenantOutcome::skipped(&t.slug, &t.schema, t.version, NOT_STARTED_GONE),
            }
            .took(started.elapsed());
        }
        let seen = shared.outage.epoch();
        let client = match shared.pool.get().await {
            Ok(c) => c,
            Err(e) if connect::is_pool_error_server_gone(&e) && waits < MAX_SERVER_WAITS => {
                waits += 1;
                shared
                    .wait_for_server(seen, &connect::describe_pool_error(&e))
                    .await;
                continue;
            }
            Err(e) => {
                let msg = format!("no connection: {}", connect::describe_pool_error(&e));
                return TenantOutcome::failed(&t.slug, &t.schema, t.version, msg);
            }
        };
        if let Some(start) = no_transaction::needed(&t, &shared.set, shared.target) {
            let run = no_transaction::TenantRun {
                slug: &t.slug,
                schema: &t.schema,
                set: &shared.set,
                target: shared.target,
                lock_timeout: shared.lock_timeout,
                home: None,
                backend: &shared.backend,
            };
            return no_transaction::migrate_tenant(&client, &run, &t, start, started, epoch).await;
        }
        match migrate_tenant(&client, &shared, &t).await {
            Ok((version, applied)) => {
                let kind = if applied.is_empty() {
                    Outcome::UpToDate
                } else {
                    Outcome::Applied
                };
                let mut o = TenantOutcome::new(&t.slug, &t.schema, kind, t.version, version);
                o.migrations = applied;
                if cut.is_some() {
                    o.note = Some("tried again after the server came back".into());
                } else if interrupted {
                    o.note = Some("recovered from an interrupted run".into());
                }
                return o.took(started.elapsed());
            }
            Err(ApplyError::ServerGone(f)) => {
                drop(client);
                let why = f.to_string();
                if cut.is_some() || waits >= MAX_SERVER_WAITS {
                    return cut_outcome(&t, &why).took(started.elapsed());
                }
                waits += 1;
                cut = Some(why.clone());
                shared.wait_for_server(seen, &why).await;
            }
            Err(e) => {
                if matches!(e, ApplyError::SchemaMissing) {
                    if let Some(o) = migrate_far::moved_meanwhile(&client, &t).await {
                        return o.took(started.elapsed());
                    }
                }
                let failed = e.failed_migration();
                let msg = e.to_string();
                let _ = registry::record_failure(&client, &t.slug, &msg, failed, epoch).await;
                return TenantOutcome::failed(&t.slug, &t.schema, t.version, msg)
                    .took(started.elapsed());
            }
        }
    }
}

/// A tenant whose transaction the server cut, and that could not be tried again.
fn cut_outcome(t: &Tenant, why: &str) -> TenantOutcome {
    TenantOutcome::failed(
        &t.slug,
        &t.schema,
        t.version,
        format!("the server went away during its transaction ({why}); it rolled back, nothing was applied"),
    )
}

/// One tenant's migration and registry update, committed together. When the registry
/// vouches for the tenant's history, that is one flight (lock, check, migrations, registry
/// update, COMMIT); when it does not, or the tenant changed since the registry was read
/// (another tenantctl migrated it), the history is read first, in a flight of its own.
/// With `--lock-timeout`, a wait for the tenant's lock ends then: behind another tenantctl
/// it starts again (two runs queue, they never fail because of each other), behind any
/// other session the tenant fails with that session named.
async fn migrate_tenant(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    t: &Tenant,
) -> Result<(i64, Vec<String>), ApplyError> {
    let mut history = History::for_tenant(t, &shared.set);
    // Deadlines passed with nobody holding the tenant's lock any more: something else it
    // needed stayed locked (the registry row, say); give up after a few.
    let mut unheld = 0;
    loop {
        match attempt(client, shared, t, history).await {
            Err(ApplyError::Stale) if !matches!(history, History::Read) => history = History::Read,
            Err(ApplyError::TenantLocked(e)) => {
                let holders = locks::tenant_lock_holders(client, &t.schema).await?;
                if holders.is_empty() {
                    unheld += 1;
                    if unheld >= 3 {
                        return Err(ApplyError::TenantLocked(e));
                    }
                } else if holders.iter().all(|h| !h.tenantctl) {
                    return Err(ApplyError::Locked(locks::tenant_locked_message(
                        &t.slug,
                        &holders,
                        shared.lock_timeout,
                    )));
                }
            }
            other => return other,
        }
    }
}

async fn attempt(
    client: &deadpool_postgres::Object,
    shared: &Shared,
    t: &Tenant,
    history: History<'_>,
) -> Result<(i64, Vec<String>), ApplyError> {
    let mut tx = Tx::begin(client);
    shared.backend.begin(&mut tx, Work::Change);
    let applied = apply_pending(
        &mut tx,
        &t.schema,
        &shared.set,
        shared.target,
        shared.lock_timeout,
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
async fn dry_run(shared: &Shared, visits: Vec<Tenant>) -> Result<Vec<TenantOutcome>> {
    let mut conn = shared
        .pool
        .get()
        .await
        .context("cannot get a connection for the dry run")?;
    let schemas: Vec<&str> = visits.iter().map(|v| v.schema.as_str()).collect();
    let histories = read_histories(&mut conn, &schemas).await?;
    Ok(visits
        .iter()
        .zip(histories)
        .map(|(t, history)| plan_outcome(&shared.set, shared.target, t, history))
        .collect())
}

/// What a run would do to a tenant whose history is `history`: nothing (up to date), the
/// migrations it would apply (reported skipped, with them), or a refusal (failed).
fn plan_outcome(
    set: &MigrationSet,
    target: i64,
    t: &Tenant,
    history: Vec<AppliedMigration>,
) -> TenantOutcome {
    match set.plan(&history, target) {
        Plan::Apply(p) if p.is_empty() => {
            TenantOutcome::new(&t.slug, &t.schema, Outcome::UpToDate, t.version, t.version)
        }
        Plan::Apply(p) => {
            let names: Vec<String> = p.iter().map(|(v, n)| format!("V{v}__{n}")).collect();
            let shown: Vec<String> = p.iter().map(|(v, n)| set.describe(*v, n)).collect();
            let why = format!("dry run: would apply {}", shown.join(", "));
            let mut o = TenantOutcome::skipped(&t.slug, &t.schema, t.version, why);
            o.to_version = p.last().map_or(t.version, |(v, _)| *v);
            o.migrations = names;
            o
        }
        Plan::Diverged(why) => {
            TenantOutcome::failed(&t.slug, &t.schema, t.version, format!("refused: {why}"))
        }
    }
}

/// The tenants to visit with the places (server and database) they live at taking turns,
/// in the order each place is first seen, each place's own order kept. A fleet on one
/// place keeps its order exactly.
fn interleave_places(visits: Vec<Tenant>) -> Vec<Tenant> {
    let mut queues: Vec<((String, String), std::collections::VecDeque<Tenant>)> = Vec::new();
    for t in visits {
        let place = (t.server.clone(), t.database.clone());
        match queues.iter_mut().find(|(p, _)| *p == place) {
            Some((_, q)) => q.push_back(t),
            None => queues.push((place, std::collections::VecDeque::from([t]))),
        }
    }
    if queues.len() == 1 {
        return queues.pop().map(|(_, q)| q.into()).unwrap_or_default();
    }
    let mut out = Vec::new();
    while queues.iter().any(|(_, q)| !q.is_empty()) {
        for (_, q) in &mut queues {
            out.extend(q.pop_front());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(slug: &str, state: &str, version: i64) -> Tenant {
        Tenant {
            slug: slug.into(),
            schema: format!("tenant_{slug}"),
            display_name: None,
            state: state.into(),
            version,
            digest: None,
            last_error: None,
            migrated_at: None,
            schema_exists: true,
            role: None,
            server: "home".into(),
            database: "db".into(),
            labels: Default::default(),
        }
    }

    fn folder(latest: i32) -> MigrationSet {
        let ms = (1..=latest)
            .map(|v| refinery::Migration::unapplied(&format!("V{v}__m{v}"), "SELECT 1").unwrap())
            .collect();
        MigrationSet::from_migrations("m".into(), ms)
    }

    #[test]
    fn a_folder_behind_any_tenant_refuses_the_run_naming_versions_and_slugs() {
        let at = |v| tenant("a", "active", v);
        assert!(refuse_ahead(&[at(6)], &folder(6)).is_ok());
        assert!(refuse_ahead(&[tenant("gone", "dropping", 9)], &folder(6)).is_ok());
        let fleet = [
            tenant("a", "active", 7),
            tenant("b", "failed", 8),
            tenant("c", "active", 6),
        ];
        let e = refuse_ahead(&fleet, &folder(6)).unwrap_err();
        assert_eq!(
            crate::domain::exit::code_for(&e),
            crate::domain::exit::BAD_INPUT
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "2 tenants are ahead of this migrations folder: V7 and V8 are missing from m \
                 (its latest is V6); ahead: a and b."
            ),
            "{msg}"
        );
        let msg = refuse_ahead(&fleet, &folder(0)).unwrap_err().to_string();
        assert!(
            msg.contains("3 tenants") && msg.contains("(it has no migrations)"),
            "{msg}"
        );
    }

    #[test]
    fn lists_name_five_at_most() {
        let l = |n: usize| {
            and_list(
                (0..n)
                    .map(|i| format!("t{i}"))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        };
        assert_eq!(l(1), "t0");
        assert_eq!(l(2), "t0 and t1");
        assert_eq!(l(5), "t0, t1, t2, t3 and t4");
        assert_eq!(l(7), "t0, t1, t2, t3, t4 and 2 more");
    }
}
