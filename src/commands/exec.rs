//! `tenantctl exec`: the same SQL in many tenants, one transaction each, concurrently,
//! recorded in the registry (public.tenant_exec_runs, tenant_exec_results).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use deadpool_postgres::Pool;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cli::{ExecArgs, Format};
use crate::commands::session::{select_tenants, Session};
use crate::domain::exit::{bad_input, code_for, BAD_INPUT, FAILED, INTERRUPTED, OK};
use crate::domain::migration_set::check_sql;
use crate::fleet::{self, Interrupt, Job};
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::output::{count, print_json, table};
use crate::registry::{exec_runs, Tenant};
use crate::tenant::citus::Backend;
use crate::tenant::exec::{self, Commit, TenantResult};

/// The SQL of a run, checked, and how it is named in the audit record.
struct Script {
    /// The file as given, or `-c`.
    source: String,
    sql: String,
    sha256: String,
}

fn load_script(args: &ExecArgs) -> Result<Script> {
    let (source, sql) = match (&args.file, &args.command) {
        (Some(path), _) => {
            let sql = std::fs::read_to_string(path).map_err(|e| {
                bad_input(format!(
                    "cannot read {}: {e}; nothing was run",
                    path.display()
                ))
            })?;
            (path.display().to_string(), sql)
        }
        (None, Some(sql)) => ("-c".to_string(), sql.clone()),
        (None, None) => return Err(bad_input("give the SQL with --file FILE or -c 'SQL'")),
    };
    check_sql(&sql).map_err(|why| {
        let what = if source == "-c" {
            "the SQL of -c".to_string()
        } else {
            source.clone()
        };
        bad_input(format!("{what} {why}; nothing was run"))
    })?;
    let sha256 = format!("{:x}", Sha256::digest(sql.as_bytes()));
    Ok(Script {
        source,
        sql,
        sha256,
    })
}

struct Shared {
    /// Home's pool: the registry, and the tenants in its own database.
    pool: Pool,
    home_database: String,
    /// A pool per other server and database where tenants live, with what that place is
    /// (`Session::backend_at`), or why it cannot be reached.
    places: HashMap<(String, String), Result<(Pool, Backend), String>>,
    sql: String,
    run_id: i64,
    dry_run: bool,
    lock_timeout: Option<Duration>,
    /// Home's backend: how a tenant transaction there starts and sends its statements
    /// (each other place has its own, in `places`).
    backend: Backend,
    /// What the SQL did in each tenant that got through, by slug.
    results: Mutex<HashMap<String, TenantResult>>,
}

pub async fn run(s: &Session, args: &ExecArgs) -> Result<u8> {
    let script = load_script(args)?;
    let concurrency = s.concurrency();
    let (pool, conn) = s.connect(concurrency + 1).await?;
    let concurrency = s.fit_concurrency(&conn, concurrency, false).await?;
    let tenants = select_tenants(&conn, &args.slugs, "nothing was run").await?;
    // An unknown server, an unset password variable or a Citus worker is bad input found
    // before anything runs (or is audited).
    let places = far_pools(s, &tenants, concurrency).await?;
    let run_id = exec_runs::start(
        &conn,
        &script.source,
        &script.sha256,
        &script.sql,
        args.dry_run,
    )
    .await?;
    let mut outcomes = Vec::new();
    let mut jobs = Vec::new();
    for t in tenants {
        match triage(&t, s.at_home(&t)) {
            Some(o) => outcomes.push(o),
            None => jobs.push(t),
        }
    }
    let shared = Arc::new(Shared {
        pool,
        home_database: s.home_database().to_string(),
        places,
        sql: script.sql.clone(),
        run_id,
        dry_run: args.dry_run,
        lock_timeout: s.lock_timeout,
        backend: s.backend().clone(),
        results: Mutex::new(HashMap::new()),
    });
    // The bar on a terminal; without one the report at the end says it all.
    let quiet = s.format != Format::Text || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = Progress::new("exec", jobs.len(), quiet);
    let interrupt = Interrupt::listen();
    let canary = args.canary.map_or(0, |n| n as usize).min(jobs.len());
    let rest = jobs.split_off(canary);
    let phase = |jobs| {
        let shared = shared.clone();
        fleet::run(
            jobs,
            concurrency,
            args.fail_fast,
            &interrupt,
            &progress,
            move |j| exec_job(shared.clone(), j),
        )
    };
    let mut ran = Vec::new();
    if canary > 0 {
        ran = phase(jobs).await;
    }
    if ran.iter().any(|o| o.outcome == Outcome::Failed) || interrupt.is_set() {
        let why = if interrupt.is_set() {
            "not started: interrupted"
        } else {
            "not started: a canary tenant failed"
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
    let results = std::mem::take(&mut *shared.results.lock().unwrap_or_else(|p| p.into_inner()));
    record_the_rest(&conn, run_id, &outcomes, args.dry_run, &results).await;
    let _ = exec_runs::finish(&conn, run_id).await;
    let report = Report::new(&script, run_id, args.dry_run, &outcomes, &results);
    super::report::annotate("exec", &outcomes);
    match s.format {
        Format::Json => print_json(&report),
        Format::Csv => report.print_csv(),
        Format::Junit => super::report::print_junit("exec", &outcomes),
        // Refused before anything ran (commands::check_format).
        Format::Text | Format::Prometheus => report.print_text(),
    }
    Ok(if interrupt.is_set() {
        INTERRUPTED
    } else if outcomes.iter().any(|o| o.outcome == Outcome::Failed) {
        FAILED
    } else {
        OK
    })
}

/// A pool for each other server and database where `tenants` live (at most `concurrency`
/// connections, fewer for few tenants) with its backend, or why it cannot be reached: that
/// place's tenants fail, the others run.
async fn far_pools(
    s: &Session,
    tenants: &[Tenant],
    concurrency: usize,
) -> Result<HashMap<(String, String), Result<(Pool, Backend), String>>> {
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for t in tenants
        .iter()
        .filter(|t| !s.at_home(t) && t.state != "dropping")
    {
        *count
            .entry((t.server.clone(), t.database.clone()))
            .or_default() += 1;
    }
    let mut places = HashMap::new();
    for ((server, database), n) in count {
        // Bad input about a place (a Citus worker, an unknown server, an unset password
        // variable) refuses the run before anything runs, as migrate does; a server that
        // does not answer fails its own tenants only.
        let pool = match s
            .connect_place(&server, &database, concurrency.min(n))
            .await
        {
            Ok((pool, _conn)) => Ok((pool, s.backend_at(&server, &database))),
            Err(e) if code_for(&e) == BAD_INPUT => return Err(e),
            Err(e) => Err(format!("{e:#}; nothing was run")),
        };
        places.insert((server, database), pool);
    }
    Ok(places)
}

/// Tenants decided without a visit: being dropped (skipped), schema missing at home
/// (failed; elsewhere it is found missing where the tenant lives).
fn triage(t: &Tenant, at_home: bool) -> Option<TenantOutcome> {
    if t.state == "dropping" {
        return Some(TenantOutcome::skipped(
            &t.slug,
            &t.schema,
            t.version,
            "it is being dropped",
        ));
    }
    (at_home && !t.schema_exists).then(|| {
        TenantOutcome::failed(
            &t.slug,
            &t.schema,
            t.version,
            format!("schema {} is missing from the database", t.schema),
        )
    })
}

async fn exec_job(shared: Arc<Shared>, t: Tenant) -> TenantOutcome {
    if t.is_home(&shared.home_database) {
        return exec_in(&shared, (&shared.pool, &shared.backend), &t, false).await;
    }
    let place = (t.server.clone(), t.database.clone());
    let mut o = match shared.places.get(&place) {
        Some(Ok((pool, backend))) => exec_in(&shared, (pool, backend), &t, true).await,
        Some(Err(why)) => TenantOutcome::failed(&t.slug, &t.schema, t.version, why.clone()),
        None => TenantOutcome::failed(&t.slug, &t.schema, t.version, "no pool for its server"),
    };
    let server = format!("server {}", t.server);
    o.error = o.error.take().map(|e| match e.contains(&server) {
        true => e,
        false => format!("{e} ({server})"),
    });
    o
}

/// Runs the SQL in one tenant with a connection from `pool`, as its place's `backend`
/// takes it. Elsewhere (`far`), the tenant's transaction commits on its server and its
/// `done` is recorded on home after.
async fn exec_in(
    shared: &Shared,
    (pool, backend): (&Pool, &Backend),
    t: &Tenant,
    far: bool,
) -> TenantOutcome {
    let mut client = match pool.get().await {
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
    let end = match (shared.dry_run, far) {
        (true, _) => Commit::RollBack,
        (false, true) => Commit::Plain,
        (false, false) => Commit::Record {
            run_id: shared.run_id,
        },
    };
    match exec::run(
        &mut client,
        backend,
        &t.slug,
        &t.schema,
        &shared.sql,
        shared.lock_timeout,
        end,
    )
    .await
    {
        Ok(result) => {
            let mut o =
                TenantOutcome::new(&t.slug, &t.schema, Outcome::Applied, t.version, t.version);
            if far && !shared.dry_run {
                o.error = record_done_on_home(shared, t, &result).await;
            }
            shared
                .results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(t.slug.clone(), result);
            o
        }
        Err(msg) => TenantOutcome::failed(&t.slug, &t.schema, t.version, msg),
    }
}

/// Records `done` on home for a tenant whose SQL committed elsewhere; says why not when
/// the registry cannot be written (the SQL did commit).
async fn record_done_on_home(shared: &Shared, t: &Tenant, r: &TenantResult) -> Option<String> {
    let recorded = match shared.pool.get().await {
        Ok(c) => exec_runs::record(
            &c,
            shared.run_id,
            &t.slug,
            "done",
            Some(r.rows_affected),
            None,
        )
        .await
        .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.to_string()),
    };
    recorded.err().map(|e| {
        format!("committed on its server, but its outcome could not be recorded on home: {e}")
    })
}

/// The outcome of each tenant whose record was not written in its own transaction (failed,
/// skipped, dry run). Best effort: a failure here does not change what happened.
async fn record_the_rest(
    conn: &deadpool_postgres::Object,
    run_id: i64,
    outcomes: &[TenantOutcome],
    dry_run: bool,
    results: &HashMap<String, TenantResult>,
) {
    for o in outcomes {
        let (outcome, rows) = match o.outcome {
            Outcome::Failed => ("failed", None),
            Outcome::Skipped => ("skipped", None),
            _ if dry_run => ("rolled_back", results.get(&o.slug).map(|r| r.rows_affected)),
            // Committed tenants recorded `done` in their own transaction.
            _ => continue,
        };
        let _ = exec_runs::record(conn, run_id, &o.slug, outcome, rows, o.error.as_deref()).await;
    }
}

/// The run's report: per tenant, and the rows the SQL returned, combined.
#[derive(Serialize)]
struct Report<'a> {
    command: &'static str,
    run_id: i64,
    source: &'a str,
    sha256: &'a str,
    dry_run: bool,
    summary: ExecSummary,
    tenants: Vec<ExecTenant<'a>>,
    /// `tenant`, then the columns of the SQL's last statement that returned rows; empty
    /// when none did.
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

#[derive(Serialize, Default)]
struct ExecSummary {
    done: usize,
    rolled_back: usize,
    failed: usize,
    skipped: usize,
}

#[derive(Serialize)]
struct ExecTenant<'a> {
    slug: &'a str,
    schema: &'a str,
    /// `done`, `rolled_back` (dry run), `failed` or `skipped`.
    outcome: &'static str,
    /// Rows the SQL's INSERT/UPDATE/DELETE/... statements affected (None: not run).
    rows_affected: Option<i64>,
    /// Rows its last row-returning statement returned.
    rows_returned: Option<usize>,
    error: Option<String>,
    duration_ms: u64,
}

impl<'a> Report<'a> {
    fn new(
        script: &'a Script,
        run_id: i64,
        dry_run: bool,
        outcomes: &'a [TenantOutcome],
        results: &HashMap<String, TenantResult>,
    ) -> Report<'a> {
        let mut summary = ExecSummary::default();
        let mut columns: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        let mut tenants = Vec::new();
        for o in outcomes {
            let result = results.get(&o.slug);
            let outcome = match (o.outcome, dry_run) {
                (Outcome::Failed, _) => "failed",
                (Outcome::Skipped, _) => "skipped",
                (_, true) => "rolled_back",
                (_, false) => "done",
            };
            let mut error = o.error.clone();
            if let Some(r) = result.filter(|r| r.returned_rows) {
                let cols = columns.get_or_insert_with(|| r.columns.clone());
                if *cols == r.columns {
                    rows.extend(r.rows.iter().map(|row| {
                        let mut full = vec![Some(o.slug.clone())];
                        full.extend(row.iter().cloned());
                        full
                    }));
                } else {
                    // Possible only when tenants' schemas differ (SELECT * over drift).
                    error = Some(format!(
                        "its result has other columns ({}) than the first tenant's, so its \
                         rows are not in the combined result",
                        r.columns.join(", ")
                    ));
                }
            }
            match outcome {
                "done" => summary.done += 1,
                "rolled_back" => summary.rolled_back += 1,
                "failed" => summary.failed += 1,
                _ => summary.skipped += 1,
            }
            tenants.push(ExecTenant {
                slug: &o.slug,
                schema: &o.schema,
                outcome,
                rows_affected: result.map(|r| r.rows_affected),
                rows_returned: result.filter(|r| r.returned_rows).map(|r| r.rows.len()),
                error,
                duration_ms: o.duration_ms,
            });
        }
        let columns = match columns {
            Some(c) => std::iter::once("tenant".to_string()).chain(c).collect(),
            None => Vec::new(),
        };
        Report {
            command: "exec",
            run_id,
            source: &script.source,
            sha256: &script.sha256,
            dry_run,
            summary,
            tenants,
            columns,
            rows,
        }
    }

    fn print_results_table(&self) {
        if self.columns.is_empty() {
            return;
        }
        let mut t = table(self.columns.iter().map(String::as_str).collect());
        for row in &self.rows {
            t.add_row(row.iter().map(|v| v.clone().unwrap_or_default()).collect());
        }
        crate::outln!("{t}");
    }

    fn print_text(&self) {
        self.print_results_table();
        let mut t = table(vec!["tenant", "outcome", "rows affected", "ms", "error"]);
        for x in &self.tenants {
            t.add_row(vec![
                x.slug.to_string(),
                x.outcome.replace('_', " "),
                x.rows_affected.map(|n| n.to_string()).unwrap_or_default(),
                x.duration_ms.to_string(),
                x.error.clone().unwrap_or_default(),
            ]);
        }
        if !self.tenants.is_empty() {
            crate::outln!("{t}");
        }
        crate::outln!("{}", self.summary_line());
    }

    /// The combined rows on stdout; the report, a line per tenant, on stderr.
    fn print_csv(&self) {
        if !self.columns.is_empty() {
            crate::output::write_stdout(&crate::output::csv::record(
                self.columns.iter().map(|c| Some(c.as_str())),
            ));
            for row in &self.rows {
                crate::output::write_stdout(&crate::output::csv::record(
                    row.iter().map(|v| v.as_deref()),
                ));
            }
        }
        for x in &self.tenants {
            let rows = x
                .rows_affected
                .map(|n| format!(", {n} rows affected"))
                .unwrap_or_default();
            let error = x
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            crate::errln!("{}: {}{rows}{error}", x.slug, x.outcome.replace('_', " "));
        }
        crate::errln!("{}", self.summary_line());
    }

    fn summary_line(&self) -> String {
        let s = &self.summary;
        let verb = if self.dry_run {
            "exec --dry-run"
        } else {
            "exec"
        };
        let first = if self.dry_run {
            format!("{} rolled back", s.rolled_back)
        } else {
            format!("{} done", s.done)
        };
        format!(
            "{verb}: {}: {first}, {} failed, {} skipped (run {} of {}, sha256 {})",
            count(self.tenants.len(), "tenant"),
            s.failed,
            s.skipped,
            self.run_id,
            crate::output::escape_line(self.source),
            &self.sha256[..12]
        )
    }
}
