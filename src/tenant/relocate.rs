//! Moving one tenant to another server or database (`tenantctl move`, docs/placements.md).
//!
//! The steps, each tenant's lock held throughout (on home for the session, and in the
//! transactions at the source and at the target):
//! 1. `stage`: a transaction at the source takes the tenant's lock and
//!    `LOCK TABLE ... IN EXCLUSIVE MODE` on every table of its schema: the application's
//!    writes wait (reads go on). pg_dump copies the schema into ONE transaction at the
//!    target (its tables, rows, sequences, indexes, triggers, the data role's privileges),
//!    and both sides are fingerprinted (`copy_check`) before anything commits. A difference
//!    aborts the move.
//! 2. `finish`: the source schema is renamed aside (uncommitted), the copy commits, the
//!    registry switches in one home transaction with the move's record, then the source
//!    transaction commits: the waiting writers fail on the vanished tables and find the
//!    tenant at its new place. The old copy is then dropped.
//!
//! Anything before the switch is undone by `undo`: the sessions of the move are ended (so
//! their transactions roll back and the writes go on at the source) and whatever was
//! committed at the target (a database, a copy) is dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deadpool_postgres::{GenericClient, Object, Transaction};
use tokio_postgres::error::SqlState;

use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::pg::connect::{self, PgContext, Target};
use crate::pg::dump::{self, Tool};
use crate::pg::dump_load;
use crate::registry::{self, locks, MoveRecord, Placement};
use crate::tenant::apply::locked_transaction;
use crate::tenant::citus::Backend;
use crate::tenant::copy_check::{self, Fingerprint};
use crate::tenant::{grants, placement};

/// One end of a move: a server, a database on it, and how to reach both.
#[derive(Debug, Clone)]
pub struct Place {
    pub server: String,
    pub database: String,
    /// The database holding (or to hold) the tenant's schema.
    pub target: Target,
    /// The server's own database (its url's): where databases are created and dropped.
    pub server_target: Target,
}

impl Place {
    pub fn placement(&self) -> Placement {
        Placement {
            server: self.server.clone(),
            database: self.database.clone(),
        }
    }

    pub fn describe(&self) -> String {
        format!("server {} (database {})", self.server, self.database)
    }
}

/// Which end of the move is the registry's own database: the switch then commits in that
/// end's transaction, and that transaction's lock is the tenant's lock on home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeIs {
    Source,
    Target,
    Apart,
}

/// The tenant's own role, to be created at the target (another cluster).
#[derive(Debug, Clone)]
pub struct NewRole {
    pub role: String,
    pub app_role: Option<String>,
    pub server_major: i32,
}

/// A move, decided and checked before anything changes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub slug: String,
    pub schema: String,
    pub from: Place,
    pub to: Place,
    /// The source is a database of the tenant's own, dropped after the move.
    pub from_own_database: bool,
    /// The target is a database of the tenant's own, created by the move.
    pub to_own_database: bool,
    pub home: HomeIs,
    /// The role holding the tenant's data privileges (its own, or the application role).
    pub data_role: Option<String>,
    pub create_role: Option<NewRole>,
    /// The tenant's own role, dropped at the source once the tenant no longer lives on
    /// that cluster.
    pub drop_source_role: Option<String>,
    pub deadline: Duration,
    pub pg_dump: Tool,
    /// The target's backend: on a Citus coordinator the copy becomes a distributed schema
    /// before it is verified (plain PostgreSQL for a database the move creates).
    pub to_backend: Backend,
}

/// What a finished move did.
#[derive(Debug, Clone)]
pub struct Moved {
    pub tables: usize,
    pub rows: i64,
    pub writes_stopped: Duration,
    pub duration: Duration,
    /// What could not be cleaned up after the switch, with what to do.
    pub warnings: Vec<String>,
}

/// What a move has made so far, for `undo`.
#[derive(Debug, Default)]
pub struct Made {
    inner: Mutex<MadeInner>,
}

#[derive(Debug, Default, Clone)]
struct MadeInner {
    source_pids: Vec<i32>,
    target_pids: Vec<i32>,
    database: bool,
    target_committed: bool,
    switched: bool,
}

impl Made {
    fn edit(&self, f: impl FnOnce(&mut MadeInner)) {
        if let Ok(mut m) = self.inner.lock() {
            f(&mut m);
        }
    }

    fn get(&self) -> MadeInner {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether the registry now places the tenant at the target: nothing may be undone.
    pub fn switched(&self) -> bool {
        self.get().switched
    }
}

/// A connection of its own to `target` (its pool goes with it, so dropping it closes it).
async fn connect_to(target: &Target) -> Result<Object> {
    let pool = connect::pool(target, 1)?;
    connect::first_connection(&pool, target).await
}

/// Whether two sessions are on the same cluster: `a`'s backend is seen by `b` with the
/// same start time. Roles belong to a cluster, so this decides whether the tenant's role
/// moves with it. Unknown (another role's session hidden) counts as another cluster,
/// whose checks then refuse rather than touch a role of the same name.
pub async fn same_cluster(a: &impl GenericClient, b: &impl GenericClient) -> Result<bool> {
    let row = a
        .query_one(
            "SELECT pg_catalog.pg_backend_pid(), backend_start::text \
               FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .pg_context("cannot read the session's start")?;
    let (pid, start): (i32, Option<String>) = (row.get(0), row.get(1));
    let Some(start) = start else {
        return Ok(false);
    };
    Ok(b.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity \
                         WHERE pid = $1 AND backend_start::text = $2)",
        &[&pid, &start],
    )
    .await
    .pg_context("cannot compare the servers")?
    .get(0))
}

/// Refuses (exit 2, nothing changed) a target that already holds the tenant's schema or
/// database, or lacks the application role, or already has a role named like the
/// tenant's when that must be created there. `admin` is on the target server.
pub async fn check_target(p: &Plan, admin: &Object, app_role: Option<&str>) -> Result<()> {
    let at = format!("server {}", p.to.server);
    if p.to_own_database {
        if placement::database_exists(admin, &p.to.database).await? {
            return Err(bad_input(format!(
                "database {} already exists on {at}; nothing was changed (drop or rename it \
                 first, or move the tenant without --own-database)",
                p.to.database
            )));
        }
    } else {
        let conn = connect_to(&p.to.target).await?;
        let found = registry::existing_schemas(&conn, std::slice::from_ref(&p.schema)).await?;
        if !found.is_empty() {
            return Err(bad_input(format!(
                "schema {} already exists in database {} on {at}; nothing was changed (if \
                 it is left over from a move that did not finish, drop it there first)",
                p.schema, p.to.database
            )));
        }
    }
    if let Some(app) = app_role {
        if !registry::role_exists(admin, app).await? {
            return Err(bad_input(format!(
                "application role '{app}' does not exist on {at} (roles belong to each \
                 server); create it there (CREATE ROLE \"{app}\" LOGIN); nothing was changed"
            )));
        }
    }
    if let Some(r) = &p.create_role {
        if registry::role_exists(admin, &r.role).await? {
            return Err(bad_input(format!(
                "role '{}' already exists on {at}, and tenant {}'s own role would be created \
                 there; nothing was changed (drop it there first if it is left over from an \
                 earlier move)",
                r.role, p.slug
            )));
        }
    }
    Ok(())
}

/// Step 0, after which `undo` is needed: connections to the source and the target, the
/// target's own database created first when asked for.
pub async fn open(p: &Plan, made: &Made) -> Result<(Object, Object)> {
    let source = connect_to(&p.from.target)
        .await
        .with_context(|| format!("cannot reach the tenant at {}", p.from.describe()))?;
    let pid = connect::backend_pid(&source).await?;
    made.edit(|m| m.source_pids.push(pid));
    if p.to_own_database {
        let admin = connect_to(&p.to.server_target).await?;
        // Recorded first: should the command stop during CREATE DATABASE, undo drops it.
        made.edit(|m| m.database = true);
        placement::create_database(&admin, &p.to.database).await?;
    }
    let target = connect_to(&p.to.target)
        .await
        .with_context(|| format!("cannot reach {}", p.to.describe()))?;
    let pid = connect::backend_pid(&target).await?;
    made.edit(|m| m.target_pids.push(pid));
    Ok((source, target))
}

/// The copy, made and verified, with both transactions still open.
pub struct Staged<'a> {
    source: Transaction<'a>,
    target: Transaction<'a>,
    fingerprint: Fingerprint,
    writes_stopped_at: Instant,
}

/// Step 1: stops the writes at the source, copies the schema into the target's
/// transaction and compares both sides. Nothing is committed anywhere.
pub async fn stage<'a>(
    p: &Plan,
    source: &'a mut Object,
    target: &'a mut Object,
) -> Result<Staged<'a>> {
    let (src, exists) = locked_transaction(source, &p.slug, &p.schema, p.deadline).await?;
    if !exists {
        bail!(
            "the schema {} of tenant {} is missing at {}; nothing was moved",
            p.schema,
            p.slug,
            p.from.describe()
        );
    }
    let tables = copy_check::tables(&src, &p.schema).await?;
    let writes_stopped_at = Instant::now();
    stop_writes(&src, p, &tables).await?;
    let (dst, _) = locked_transaction(target, &p.slug, &p.schema, p.deadline).await?;
    load_copy(p, &dst).await?;
    p.to_backend
        .distribute_copy(&dst, &p.schema)
        .await
        .with_context(|| format!("cannot distribute the copy at {}", p.to.describe()))?;
    grant_data_role(p, &src, &dst).await?;
    let (at_source, at_target) = tokio::try_join!(
        copy_check::fingerprint(&src, &p.schema),
        copy_check::fingerprint(&dst, &p.schema)
    )?;
    let differences = at_source.differences(&at_target);
    if !differences.is_empty() {
        bail!(
            "the copy of tenant {} at {} differs from its source: {}; nothing was changed",
            p.slug,
            p.to.describe(),
            differences.join("; ")
        );
    }
    Ok(Staged {
        source: src,
        target: dst,
        fingerprint: at_source,
        writes_stopped_at,
    })
}

/// `LOCK TABLE ... IN EXCLUSIVE MODE` on every table: INSERT, UPDATE and DELETE wait
/// (writers in flight are waited out first), reads go on. Within the deadline, or an error
/// naming who holds the tables.
async fn stop_writes(tx: &Transaction<'_>, p: &Plan, tables: &[String]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let s = quote_ident(&p.schema);
    let list: Vec<String> = tables
        .iter()
        .map(|t| format!("{s}.{}", quote_ident(t)))
        .collect();
    tx.batch_execute("SAVEPOINT tenantctl_stop_writes")
        .await
        .pg_context("cannot stop the application's writes")?;
    let locked = tx
        .batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", list.join(", ")))
        .await;
    match locked {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT tenantctl_stop_writes")
                .await
                .pg_context("cannot roll back to before the table locks")?;
            let holders = locks::table_lock_holders(tx, &p.schema).await?;
            bail!(
                "the application's writes to tenant {} could not be stopped within {} \
                 (--lock-timeout): its tables are held by {}; nothing was changed (retry when \
                 they finish, or raise --lock-timeout)",
                p.slug,
                locks::describe_duration(p.deadline),
                match holders.is_empty() {
                    true => "sessions that have let go since".to_string(),
                    false => locks::describe_holders(&holders),
                }
            )
        }
        Err(e) => Err(e).pg_context("cannot stop the application's writes"),
    }
}

/// The tenant's own role (another cluster), its schema, rows and post-data objects from
/// pg_dump of the source.
async fn load_copy(p: &Plan, dst: &Transaction<'_>) -> Result<()> {
    if let Some(r) = &p.create_role {
        let ddl = match &r.app_role {
            Some(app) => grants::create_tenant_role(&r.role, app, r.server_major),
            None => format!("CREATE ROLE {} NOLOGIN;\n", quote_ident(&r.role)),
        };
        dst.batch_execute(&ddl)
            .await
            .with_pg_context(|| format!("cannot create role {} at the target", r.role))?;
    }
    // The schema first, by itself: on Citus before the backend keeps the rest of the load
    // on the coordinator (`begin_copy`), and local (distributed by `distribute_copy`).
    p.to_backend.keep_schemas_local(dst).await?;
    dst.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(&p.schema)))
        .await
        .pg_context("cannot create the tenant's schema at the target")?;
    p.to_backend.begin_copy(dst).await?;
    let pre = without_create_schema(&dump_section(p, "pre-data").await?, &p.schema);
    dst.batch_execute(&pre)
        .await
        .pg_context("cannot create the tenant's tables at the target")?;
    let what = format!("pg_dump of the rows of tenant {}", p.slug);
    dump_load::load_data(dst, dump_command(p, "data"), &p.schema, &what).await?;
    let post = dump_section(p, "post-data").await?;
    dst.batch_execute(&post)
        .await
        .pg_context("cannot create the tenant's indexes, constraints and triggers at the target")
}

/// The data role's privileges at the target as they are at the source, one statement at
/// a time where the target's backend needs it (after `distribute_copy`, so that Citus
/// grants on the shards too).
async fn grant_data_role(p: &Plan, src: &Transaction<'_>, dst: &Transaction<'_>) -> Result<()> {
    let mut sql = grants::before_migrations(&p.schema, p.data_role.as_deref());
    if let Some(role) = &p.data_role {
        sql.push_str(&copy_check::privileges_of(src, &p.schema, role).await?);
    }
    for statement in p.to_backend.statements(&sql) {
        dst.batch_execute(statement)
            .await
            .pg_context("cannot grant the data role its privileges at the target")?;
    }
    Ok(())
}

/// pg_dump of one section of the tenant's schema at the source, without owners and
/// privileges (the target's objects belong to tenantctl's role there; privileges are
/// copied for the data role by `load_copy`).
fn dump_command(p: &Plan, section: &str) -> std::process::Command {
    let mut cmd = dump::command(&p.pg_dump, &p.from.target, &p.from.database);
    cmd.arg(format!("--section={section}"))
        .arg("--schema")
        .arg(quote_ident(&p.schema))
        .args(["--no-owner", "--no-privileges"])
        .arg(format!(
            "--lock-wait-timeout={}",
            p.deadline.as_millis().max(1)
        ));
    cmd
}

async fn dump_section(p: &Plan, section: &str) -> Result<String> {
    let what = format!("pg_dump --section={section} of tenant {}", p.slug);
    let text = dump_load::text_of(dump_command(p, section), &what).await?;
    Ok(without_psql_commands(&text))
}

/// The SQL pg_dump printed, without the psql commands recent versions put around it
/// (`\restrict KEY`, `\unrestrict KEY`), which the server would not understand. The text
/// is the tenant's own schema read from its own database by tenantctl, so it is run as it
/// is, not checked like a dump handed to `restore`.
fn without_psql_commands(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// pg_dump's pre-data without its `CREATE SCHEMA` of the tenant's schema (the only one
/// of a `--schema` dump, made by `load_copy` already): the first line creating it, quoted
/// by pg_dump's rule (only when needed) or always.
fn without_create_schema(text: &str, schema: &str) -> String {
    let lines = [
        format!("CREATE SCHEMA {schema};"),
        format!("CREATE SCHEMA {};", quote_ident(schema)),
    ];
    match text.lines().position(|l| lines.iter().any(|c| c == l)) {
        Some(at) => text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, l)| format!("{l}\n"))
            .collect(),
        None => text.to_string(),
    }
}

/// A name for the old copy once set aside, unique to this move.
fn retired_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!("tenantctl_moved_{}_{nanos}", std::process::id())
}

/// Step 2: sets the source aside, commits the copy, switches the registry, lets the
/// source go, removes the old copy. Before the switch an error means the caller must
/// `undo`; after it (`made.switched()`), the move stands and the error says what is left.
pub async fn finish(
    p: &Plan,
    home: &mut Object,
    st: Staged<'_>,
    made: &Made,
    started: Instant,
) -> Result<Moved> {
    let Staged {
        source,
        target,
        fingerprint,
        writes_stopped_at,
    } = st;
    let clock = Clock {
        started,
        writes_stopped_at,
    };
    let retired = retired_name();
    source
        .batch_execute(&format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote_ident(&p.schema),
            quote_ident(&retired)
        ))
        .await
        .pg_context("cannot set the source schema aside")?;
    let mut record = MoveRecord {
        slug: p.slug.clone(),
        schema: p.schema.clone(),
        from: p.from.placement(),
        to: p.to.placement(),
        tables: fingerprint.tables.len() as i32,
        rows: fingerprint.rows(),
        writes_stopped_ms: 0,
        duration_ms: 0,
        nodes: None,
    };
    let record_id = switch(p, home, &source, target, made, &mut record, &clock).await?;
    let (writes_stopped, mut warnings) = let_go(p, source, made, &retired, &clock).await?;
    warnings.extend(worker_sequences(p).await.err().map(|e| format!("{e:#}")));
    let duration = started.elapsed();
    let _ = registry::finish_move_record(
        &*home,
        record_id,
        writes_stopped.as_millis() as i64,
        duration.as_millis() as i64,
    )
    .await;
    Ok(Moved {
        tables: record.tables as usize,
        rows: record.rows,
        writes_stopped,
        duration,
        warnings,
    })
}

/// When the move started, and when the writes were stopped.
struct Clock {
    started: Instant,
    writes_stopped_at: Instant,
}

impl Clock {
    fn stamp(&self, record: &mut MoveRecord) {
        record.writes_stopped_ms = self.writes_stopped_at.elapsed().as_millis() as i64;
        record.duration_ms = self.started.elapsed().as_millis() as i64;
    }
}

/// Commits the copy and switches the registry where home is: in the copy's transaction,
/// in one of its own on home, or (home the source) in the source's, committed by `let_go`.
/// Returns the id of the move's record.
async fn switch(
    p: &Plan,
    home: &mut Object,
    source: &Transaction<'_>,
    target: Transaction<'_>,
    made: &Made,
    record: &mut MoveRecord,
    clock: &Clock,
) -> Result<i64> {
    clock.stamp(record);
    let mut id = None;
    if p.home == HomeIs::Target {
        id = Some(registry::record_move(&target, record).await?);
    }
    target
        .commit()
        .await
        .pg_context("cannot commit the copy at the target")?;
    made.edit(|m| m.target_committed = true);
    let id = match (p.home, id) {
        (HomeIs::Target, Some(id)) => id,
        (HomeIs::Source, _) => registry::record_move(source, record).await?,
        _ => switch_at_home(home, record).await?,
    };
    if p.home != HomeIs::Source {
        made.edit(|m| m.switched = true);
    }
    Ok(id)
}

/// Commits the source's transaction: the waiting writers are let go (and fail on the
/// vanished schema), then the old copy is removed. Returns how long the writes were
/// stopped, and what could not be cleaned up. Fails only when home is the source and its
/// commit (the switch) fails.
async fn let_go(
    p: &Plan,
    source: Transaction<'_>,
    made: &Made,
    retired: &str,
    clock: &Clock,
) -> Result<(Duration, Vec<String>)> {
    let released = source.commit().await;
    let writes_stopped = clock.writes_stopped_at.elapsed();
    let mut warnings = Vec::new();
    match released {
        Ok(()) => {
            made.edit(|m| m.switched = true);
            warnings.extend(
                remove_source(p, retired)
                    .await
                    .err()
                    .map(|e| format!("{e:#}")),
            );
        }
        Err(e) if p.home == HomeIs::Source => {
            return Err(e).pg_context("cannot commit the switch of the tenant at home");
        }
        Err(e) => warnings.push(format!(
            "the tenant lives at {} now, but its old schema at {} could not be let go ({}); \
             drop schema {} there once no application writes to it",
            p.to.describe(),
            p.from.describe(),
            connect::describe_pg_error(&e),
            p.schema
        )),
    }
    Ok((writes_stopped, warnings))
}

/// On a Citus target, once the copy committed: each worker's sequences past the copied
/// rows drawn from its range (`Backend::sync_worker_sequences`, as after a restore). An
/// error is a sentence saying the move stands and what to do.
async fn worker_sequences(p: &Plan) -> Result<()> {
    if !p.to_backend.distributes() {
        return Ok(());
    }
    let moved = || {
        format!(
            "tenant {} was moved to {} and is distributed there, but rows that triggers add \
             on its worker may collide with copied ones; set the worker's sequences past the \
             copied values by hand (docs/citus.md, Restore, step 4)",
            p.slug,
            p.to.describe()
        )
    };
    let conn = connect_to(&p.to.target).await.with_context(moved)?;
    p.to_backend
        .sync_worker_sequences(&conn, &p.schema)
        .await
        .with_context(moved)
}

/// The switch in a transaction of its own on home (neither end is the registry's database).
async fn switch_at_home(home: &mut Object, record: &MoveRecord) -> Result<i64> {
    let tx = home
        .transaction()
        .await
        .pg_context("cannot start the switch at home")?;
    let id = registry::record_move(&tx, record).await?;
    tx.commit()
        .await
        .pg_context("cannot commit the switch at home")?;
    Ok(id)
}

/// Drops the old copy (set aside as `retired`), or the tenant's old database, and its own
/// role at the source when the tenant left that cluster.
async fn remove_source(p: &Plan, retired: &str) -> Result<()> {
    let left = || {
        format!(
            "the tenant was moved, but its old copy at {} could not be removed",
            p.from.describe()
        )
    };
    if p.from_own_database {
        let admin = connect_to(&p.from.server_target).await.with_context(left)?;
        placement::drop_database(&admin, &p.from.database)
            .await
            .with_context(|| format!("{}: drop database {} there", left(), p.from.database))?;
    } else {
        let conn = connect_to(&p.from.target).await.with_context(left)?;
        conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", quote_ident(retired)))
            .await
            .with_pg_context(|| format!("{}: drop schema {retired} there", left()))?;
    }
    if let Some(role) = &p.drop_source_role {
        let admin = connect_to(&p.from.server_target).await.with_context(left)?;
        placement::drop_role(&admin, role)
            .await
            .with_context(|| format!("{}: drop role {role} there", left()))?;
    }
    Ok(())
}

/// Takes back everything a move made before its switch: its sessions are ended (their
/// transactions roll back, and the application's writes go on at the source), then the
/// copy committed at the target, or the database created there, is dropped. Returns what
/// could not be cleaned up, as sentences.
pub async fn undo(p: &Plan, made: &Made) -> Vec<String> {
    let m = made.get();
    let mut left = Vec::new();
    for (place, pids) in [(&p.from, &m.source_pids), (&p.to, &m.target_pids)] {
        if let Err(e) = end_sessions(&place.server_target, pids).await {
            left.push(format!(
                "cannot end the move's sessions on server {}: {e:#}",
                place.server
            ));
        }
    }
    if m.switched || !(m.database || m.target_committed) {
        return left;
    }
    if let Err(e) = drop_target_copy(p, m.database).await {
        left.push(format!(
            "the copy at {} could not be removed ({e:#}); drop {} there by hand",
            p.to.describe(),
            match m.database {
                true => format!("database {}", p.to.database),
                false => format!("schema {}", p.schema),
            }
        ));
    }
    left
}

async fn end_sessions(server: &Target, pids: &[i32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let c = connect_to(server).await?;
    c.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid, 5000) \
           FROM pg_catalog.unnest($1::int[]) AS pid \
          WHERE pid <> pg_catalog.pg_backend_pid()",
        &[&pids],
    )
    .await
    .pg_context("cannot end the move's sessions")?;
    Ok(())
}

async fn drop_target_copy(p: &Plan, database: bool) -> Result<()> {
    let role = p.create_role.as_ref().map(|r| r.role.as_str());
    let admin = connect_to(&p.to.server_target).await?;
    if database {
        placement::drop_database(&admin, &p.to.database).await?;
        if let Some(role) = role {
            placement::drop_role(&admin, role).await?;
        }
        return Ok(());
    }
    let conn = connect_to(&p.to.target).await?;
    placement::drop_schema(&conn, &p.schema, role).await
}

/// Fails unless pg_dump can read the source server.
pub fn check_pg_dump(tool: &Tool, server_major: i32) -> Result<()> {
    dump::check_not_older(tool, "pg_dump", server_major).map_err(|e| bad_input(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_commands_are_left_out_of_the_dump() {
        let text =
            "\\restrict abc123\nSET x = 1;\nCREATE TABLE \"t\" (a int);\n\\unrestrict abc123\n";
        assert_eq!(
            without_psql_commands(text),
            "SET x = 1;\nCREATE TABLE \"t\" (a int);\n"
        );
    }

    #[test]
    fn the_dump_s_create_schema_is_left_out_once() {
        let text = "SET x = 1;\nCREATE SCHEMA tenant_a;\nCREATE TABLE tenant_a.t (a int);\n";
        assert_eq!(
            without_create_schema(text, "tenant_a"),
            "SET x = 1;\nCREATE TABLE tenant_a.t (a int);\n"
        );
        let quoted = "CREATE SCHEMA \"tenant-b\";\nCREATE SCHEMA \"tenant-b\";\n";
        assert_eq!(
            without_create_schema(quoted, "tenant-b"),
            "CREATE SCHEMA \"tenant-b\";\n"
        );
        assert_eq!(without_create_schema("SELECT 1;\n", "x"), "SELECT 1;\n");
    }

    #[test]
    fn retired_names_fit_an_identifier() {
        let n = retired_name();
        assert!(n.len() <= 63 && n.starts_with("tenantctl_moved_"), "{n}");
    }
}
