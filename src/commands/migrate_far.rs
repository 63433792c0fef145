//! `migrate` for tenants that live elsewhere than the registry's database (another server,
//! or a database of their own; docs/placements.md). The registry row lives on home and the
//! schema elsewhere, so they cannot commit together: each tenant's migrations and history
//! commit in one transaction where it lives (its lock held there), then its row on home is
//! updated. The history is always read first (never vouched for by the registry), so a row
//! left behind by a crash between the two commits is put right by the next run.
//!
//! These tenants run in the same fleet as home's (`migrate::run_phase`: canaries, waves and
//! budgets span the servers); this module gives each its place's pool and outage wait, runs
//! files that run alone through `tenant::no_transaction` with the registry on home, and
//! reads histories where they live for `--dry-run`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Object, Pool};

use crate::commands::session::{now_epoch, Session};
use crate::domain::citus_rules::Needs;
use crate::domain::exit::{code_for, BAD_INPUT};
use crate::domain::migration_set::{AppliedMigration, MigrationSet};
use crate::fleet::outage::Outage;
use crate::output::outcome::{Outcome, TenantOutcome};
use crate::output::progress::Progress;
use crate::pg::connect;
use crate::pg::txn::Tx;
use crate::registry::{self, Tenant};
use crate::tenant::apply::{self, apply_pending, read_histories, ApplyError, History};
use crate::tenant::citus::{Backend, Work};
use crate::tenant::no_transaction;
use crate::tenant::shared::SharedSet;

/// The pools of the places (server and database) where the tenants of one run live
/// elsewhere, opened once before the run, each the size of the run's concurrency: the
/// concurrency rule holds per server. A place that cannot be reached holds why, naming it.
#[derive(Default)]
pub struct Places {
    pools: BTreeMap<(String, String), Result<Place, String>>,
}

/// One server and database elsewhere: its pool, its backend (plain PostgreSQL or a Citus
/// coordinator, ready for the run's migrations), and the run's view of its availability
/// (the outage wait, as for home: `fleet::outage`).
pub struct Place {
    pool: Pool,
    backend: Backend,
    /// What the server must confirm before any tenant there (`check_on_server`).
    needs: Needs,
    outage: Outage,
}

impl Places {
    /// Opens a pool at every place where `tenants` live (home tenants are left out), each
    /// place's backend detected as it opens. Refused (exit 2, before anything changes): bad
    /// input about a place (a Citus worker, an unknown server, an unset password variable)
    /// and migrations up to `target` that a Citus place cannot run. A place that does not
    /// answer fails its own tenants only.
    pub async fn open(
        s: &Session,
        tenants: &[Tenant],
        size: usize,
        set: &MigrationSet,
        target: i64,
    ) -> anyhow::Result<Places> {
        let home_db = s.home_database().to_string();
        let places: BTreeSet<(String, String)> = tenants
            .iter()
            .filter(|t| !t.is_home(&home_db))
            .map(|t| (t.server.clone(), t.database.clone()))
            .collect();
        let mut pools = BTreeMap::new();
        for (server, database) in places {
            let place = match pool_for(s, &server, &database, size).await {
                Ok(pool) => {
                    let at = s.backend_at(&server, &database);
                    let (backend, needs) = at.check_migrations(set, target)?;
                    Ok(Place {
                        pool,
                        backend,
                        needs,
                        outage: Outage::new(s.connect_budget()),
                    })
                }
                Err(e) if code_for(&e) == BAD_INPUT => return Err(e),
                Err(e) => Err(unreachable(&server, &database, &e)),
            };
            pools.insert((server, database), place);
        }
        Ok(Places { pools })
    }

    /// The server side of the Citus rules at each Citus place (foreign keys to tables
    /// outside the tenant's schema), after the shared migrations ran there: exit 2 before
    /// any tenant is touched. A place that cannot answer is left to fail its tenants.
    pub async fn check_on_server(&self) -> anyhow::Result<()> {
        for place in self.pools.values().filter_map(|p| p.as_ref().ok()) {
            if let Ok(conn) = place.pool.get().await {
                place.backend.check_on_server(&conn, &place.needs).await?;
            }
        }
        Ok(())
    }

    /// How many places elsewhere the run reaches.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// The place where `t` lives, or why it cannot be used.
    fn place(&self, t: &Tenant) -> Result<&Place, String> {
        match self.pools.get(&(t.server.clone(), t.database.clone())) {
            Some(Ok(place)) => Ok(place),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!(
                "server {} (database {}) was not opened for this run; nothing was applied",
                t.server, t.database
            )),
        }
    }
}

/// What every tenant elsewhere of one run needs.
pub struct Run<'a> {
    pub home: &'a Pool,
    pub places: &'a Places,
    pub set: &'a MigrationSet,
    pub target: i64,
    pub lock_timeout: Option<Duration>,
    pub progress: &'a Progress,
}

/// Migrates one tenant that lives elsewhere: where it lives, then its row on home. Its
/// outcome names the server; a server that cannot be reached fails it, recorded on home.
pub async fn migrate_tenant(run: &Run<'_>, t: &Tenant) -> TenantOutcome {
    let o = match run.places.place(t) {
        Ok(place) => migrate_one(run, place, t).await,
        Err(msg) => {
            if let Ok(c) = run.home.get().await {
                let _ = registry::record_failure(&c, &t.slug, &msg, None, now_epoch()).await;
            }
            TenantOutcome::failed(&t.slug, &t.schema, t.version, msg)
        }
    };
    placed(o, &t.server)
}

/// What `migrate --dry-run` reports for tenants elsewhere: each place's histories read in
/// one read-only pass where they live, planned as at home (`plan`); nothing is changed,
/// not even on home. A place that cannot be reached fails its tenants, naming it.
pub async fn dry_run(
    places: &Places,
    tenants: Vec<Tenant>,
    plan: impl Fn(&Tenant, Vec<AppliedMigration>) -> TenantOutcome,
) -> Vec<TenantOutcome> {
    let mut outcomes = Vec::with_capacity(tenants.len());
    let mut tenants = tenants;
    for ((server, database), pool) in &places.pools {
        let (here, rest): (Vec<Tenant>, Vec<Tenant>) = tenants
            .into_iter()
            .partition(|t| &t.server == server && &t.database == database);
        tenants = rest;
        let histories = match pool {
            Ok(place) => read_place(&place.pool, &here, server, database).await,
            Err(why) => Err(why.clone()),
        };
        match histories {
            Ok(histories) => outcomes.extend(
                here.iter()
                    .zip(histories)
                    .map(|(t, h)| placed(plan(t, h), server)),
            ),
            Err(why) => outcomes.extend(here.iter().map(|t| {
                placed(
                    TenantOutcome::failed(&t.slug, &t.schema, t.version, why.clone()),
                    server,
                )
            })),
        }
    }
    outcomes
}

/// The histories of `tenants` at one place, in one read-only snapshot.
async fn read_place(
    pool: &Pool,
    tenants: &[Tenant],
    server: &str,
    database: &str,
) -> Result<Vec<Vec<AppliedMigration>>, String> {
    let why = |e: &dyn std::fmt::Display| {
        format!("cannot read the histories on server {server} (database {database}): {e}")
    };
    let mut conn = pool
        .get()
        .await
        .map_err(|e| why(&connect::describe_pool_error(&e)))?;
    let schemas: Vec<&str> = tenants.iter().map(|t| t.schema.as_str()).collect();
    read_histories(&mut conn, &schemas)
        .await
        .map_err(|e| why(&format!("{e:#}")))
}

/// The outcome of a tenant elsewhere, saying so: the note names its server, and so does
/// the end of its error.
fn placed(mut o: TenantOutcome, server: &str) -> TenantOutcome {
    let place = format!("on server {server}");
    o.note = Some(match o.note.take() {
        Some(n) => format!("{n}; {place}"),
        None => place,
    });
    if let Some(e) = o.error.take() {
        o.error = Some(format!("{e} (server {server})"));
    }
    o
}

fn unreachable(server: &str, database: &str, e: &anyhow::Error) -> String {
    format!("server {server} (database {database}) cannot be reached: {e:#}; nothing was applied")
}

/// The shared migrations at every place other than home where `tenants` live, before any
/// tenant is migrated, even one with nothing of its own to apply: its tables may reference
/// them. Returns the places where they failed, with why; their tenants must not be migrated.
pub async fn shared_everywhere(
    s: &Session,
    sh: &SharedSet,
    lock_timeout: Option<Duration>,
    tenants: &[Tenant],
) -> BTreeMap<(String, String), String> {
    let places: BTreeSet<(String, String)> = tenants
        .iter()
        .map(|t| (t.server.clone(), t.database.clone()))
        .collect();
    let mut failed = BTreeMap::new();
    for (server, database) in places {
        let result = match pool_for(s, &server, &database, 1).await {
            Ok(pool) => shared_at(&pool, sh, lock_timeout, &server, &database).await,
            Err(e) => Err(unreachable(&server, &database, &e)),
        };
        if let Err(why) = result {
            failed.insert((server, database), why);
        }
    }
    failed
}

async fn shared_at(
    pool: &Pool,
    sh: &SharedSet,
    lock_timeout: Option<Duration>,
    server: &str,
    database: &str,
) -> Result<(), String> {
    let conn = pool
        .get()
        .await
        .map_err(|e| format!("server {server} (database {database}): {e}; nothing was applied"))?;
    let r = super::migrate::apply_shared(&conn, sh, lock_timeout).await;
    match r.error {
        None => Ok(()),
        Some(e) => Err(format!(
            "the shared migrations in schema {} failed on server {server} (database \
             {database}): {e}; nothing was applied to its tenants",
            r.schema
        )),
    }
}

async fn pool_for(s: &Session, server: &str, database: &str, size: usize) -> anyhow::Result<Pool> {
    Ok(s.open_place(server, database, size.max(1)).await?.0)
}

/// How many times one tenant waits for its server before it gives up (a server that keeps
/// going away and coming back), as at home.
const MAX_SERVER_WAITS: u32 = 3;

async fn migrate_one(run: &Run<'_>, place: &Place, t: &Tenant) -> TenantOutcome {
    let started = Instant::now();
    let epoch = now_epoch();
    // The row may be behind the schema, never ahead: a file that runs alone after the row's
    // version may be pending; none before it can be.
    if run.set.next_no_transaction(t.version, run.target).is_some() {
        return alone_far(run, place, t, started, epoch).await;
    }
    // Whether a transaction of this tenant was cut by its server going away: it rolled
    // back there, and the tenant is tried again once the server is back.
    let mut cut: Option<String> = None;
    let mut waits = 0;
    let result = loop {
        if place.outage.gone() {
            let why = match &cut {
                Some(why) => format!(
                    "its server went away during its transaction ({why}) and did not come back \
                     within {} s; it rolled back, nothing was applied",
                    place.outage.budget().as_secs()
                ),
                None => format!(
                    "not started: its server went away and did not come back within {} s",
                    place.outage.budget().as_secs()
                ),
            };
            break Err(ApplyError::Refused(why));
        }
        let seen = place.outage.epoch();
        let gone = match place.pool.get().await {
            Ok(client) => match apply_far(run, place, &client, t).await {
                Err(ApplyError::ServerGone(f)) if waits < MAX_SERVER_WAITS => f.to_string(),
                other => break other,
            },
            Err(e) if connect::is_pool_error_server_gone(&e) && waits < MAX_SERVER_WAITS => {
                connect::describe_pool_error(&e)
            }
            Err(e) => {
                break Err(ApplyError::Refused(format!(
                    "no connection: {}",
                    connect::describe_pool_error(&e)
                )))
            }
        };
        waits += 1;
        cut = Some(gone.clone());
        let server = &t.server;
        place
            .outage
            .wait(&place.pool, seen, &gone, |m| {
                run.progress.note(&format!("migrate: server {server}: {m}"))
            })
            .await;
    };
    match result {
        Ok(applied) => {
            let kind = if applied.migrations.is_empty() {
                Outcome::UpToDate
            } else {
                Outcome::Applied
            };
            let mut o = TenantOutcome::new(&t.slug, &t.schema, kind, t.version, applied.version);
            o.migrations = applied.migrations.iter().map(|m| m.to_string()).collect();
            if cut.is_some() {
                o.note = Some("tried again after the server came back".into());
            }
            o.took(started.elapsed())
        }
        Err(e) => {
            let msg = e.to_string();
            if let Ok(c) = run.home.get().await {
                if matches!(e, ApplyError::SchemaMissing) {
                    if let Some(o) = moved_meanwhile(&c, t).await {
                        return o.took(started.elapsed());
                    }
                }
                let _ =
                    registry::record_failure(&c, &t.slug, &msg, e.failed_migration(), epoch).await;
            }
            TenantOutcome::failed(&t.slug, &t.schema, t.version, msg).took(started.elapsed())
        }
    }
}

/// A tenant whose schema was missing where this run looked for it, re-read from the
/// registry on `home`: if its row now names another place, `tenantctl move` switched it
/// after this run read the registry (while the run waited for its lock at the old place,
/// which the move held). It is fine there, so it is reported `skipped` and its row is not
/// marked `failed`. `None` when it did not move (or the registry cannot say): a failure.
pub(super) async fn moved_meanwhile(
    home: &impl GenericClient,
    t: &Tenant,
) -> Option<TenantOutcome> {
    let now = registry::some(home, std::slice::from_ref(&t.slug))
        .await
        .ok()?
        .into_iter()
        .next()?;
    if now.server == t.server && now.database == t.database {
        return None;
    }
    let why = format!(
        "moved from server {} (database {}) to server {} (database {}) while this run \
         waited for it; nothing was applied: run migrate again to migrate it there",
        t.server, t.database, now.server, now.database
    );
    Some(TenantOutcome::skipped(&t.slug, &t.schema, t.version, why))
}

/// A run holding a migration that runs alone (`-- no-transaction`), as at home
/// (`tenant::no_transaction`), on a connection where the tenant lives: each step under the
/// tenant's lock there, its registry row written on home after each step's commit.
async fn alone_far(
    run: &Run<'_>,
    place: &Place,
    t: &Tenant,
    started: Instant,
    epoch: f64,
) -> TenantOutcome {
    let home = run.home;
    let client = match place.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("no connection: {}", connect::describe_pool_error(&e));
            if let Ok(c) = home.get().await {
                let _ = registry::record_failure(&c, &t.slug, &msg, None, epoch).await;
            }
            return TenantOutcome::failed(&t.slug, &t.schema, t.version, msg);
        }
    };
    let alone = no_transaction::TenantRun {
        slug: &t.slug,
        schema: &t.schema,
        set: run.set,
        target: run.target,
        lock_timeout: run.lock_timeout,
        home: Some(home),
        // The place's own: a Citus coordinator elsewhere gets its statements one by one.
        backend: &place.backend,
    };
    let start = no_transaction::Start::Unknown;
    no_transaction::migrate_tenant(&client, &alone, t, start, started, epoch).await
}

/// The tenant's migrations and history in one transaction where it lives, then its
/// registry row on home. Should the second step fail (or tenantctl die between them), the
/// tenant's schema is ahead of its row; the next run reads its history, applies nothing
/// and records the version it found.
async fn apply_far(
    run: &Run<'_>,
    place: &Place,
    client: &Object,
    t: &Tenant,
) -> Result<apply::Applied, ApplyError> {
    let set = run.set;
    let applied = {
        let mut tx = Tx::begin(client);
        // On a Citus coordinator: one statement at a time, shard commands sequential.
        place.backend.begin(&mut tx, Work::Change);
        let applied = apply_pending(
            &mut tx,
            &t.schema,
            set,
            run.target,
            run.lock_timeout,
            History::Read,
        )
        .await?;
        apply::commit(&mut tx, &applied).await?;
        applied
    };
    let step = registry::record_success(
        &t.slug,
        applied.version,
        set.digest_at(applied.version),
        &applied.migrations,
    );
    no_transaction::record_at_home(run.home, step).await?;
    Ok(applied)
}
