//! Applying pending migrations to one tenant schema, inside a transaction the caller owns.
//!
//! The caller's transaction holds the tenant's advisory lock, a transaction-local
//! search_path and every pending migration, so a tenant moves from its old version to its
//! new one in a single commit, or not at all (error, kill -9, server restart).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Transaction};
use refinery::error::Kind;
use refinery::{Runner, Target};

use crate::domain::migration_set::{AppliedMigration, MigrationSet};
use crate::domain::names::{quote_ident, tenant_search_path};
use crate::pg::connect::{describe_pg_error, PgContext};
use crate::pg::pipeline::Params;
use crate::pg::refinery_tx::{Known, Queued};
use crate::pg::txn::{Step, StepError, Tx, RESET_SESSION};
use crate::registry::locks::{self, LOCK_CLASS};
use tokio_postgres::error::SqlState;

/// The history table refinery keeps inside each tenant schema.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

#[derive(Debug, Clone)]
pub struct Applied {
    pub migrations: Vec<AppliedMigration>,
    /// The tenant's version after the run.
    pub version: i64,
    /// Whether the history came from the registry rather than the table (`History::Registry`).
    from_registry: bool,
}

#[derive(Debug, Clone)]
pub enum ApplyError {
    SchemaMissing,
    /// The history differs from the files; the message names the migration.
    Diverged(String),
    /// One migration's SQL failed; everything in the transaction is rolled back.
    MigrationFailed {
        version: i64,
        name: String,
        checksum: u64,
        error: String,
    },
    /// The registry no longer says what the run read, or the history holds a version the
    /// registry did not know: the tenant must be decided again from its history table
    /// (`History::Read`). Never reported to the user as such.
    Stale,
    /// The tenant's registry row already exists (`create` racing another `create`).
    AlreadyRegistered,
    /// The tenant's own lock was not granted before the deadline (`lock_timeout`); the
    /// caller looks up who holds it (`locks::tenant_lock_holders`).
    TenantLocked(PgFailure),
    /// The tenant's lock is held by another session: the message names it.
    Locked(String),
    /// The server or the connection went away (`connect::is_server_gone`): nothing of the
    /// transaction was committed, and the tenant can be tried again once the server is back.
    ServerGone(PgFailure),
    /// Any other PostgreSQL error outside the migrations' own SQL.
    Database(PgFailure),
    /// refinery refused the run for a reason of its own.
    Refinery(String),
    /// tenantctl stopped this tenant for a reason the message states (the tenant was
    /// dropped or changed during the run).
    Refused(String),
}

/// A PostgreSQL error with what was being done, kept typed (its SQLSTATE, whether the
/// connection closed) rather than turned into a string.
#[derive(Debug, Clone)]
pub struct PgFailure {
    /// What was being done ("cannot lock the tenant schema"); may be empty.
    pub what: String,
    pub source: Arc<tokio_postgres::Error>,
}

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.what.is_empty() {
            write!(f, "{}: ", self.what)?;
        }
        f.write_str(&describe_pg_error(&self.source))
    }
}

impl std::error::Error for PgFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::SchemaMissing => f.write_str("its schema is missing from the database"),
            ApplyError::Diverged(why) => write!(f, "refused: {why}; nothing was applied"),
            ApplyError::MigrationFailed {
                version,
                name,
                error,
                ..
            } => {
                write!(f, "migration V{version}__{name} failed: {error}")
            }
            ApplyError::Stale => f.write_str("the tenant changed during the run"),
            ApplyError::AlreadyRegistered => f.write_str("already exists (created concurrently)"),
            ApplyError::Locked(why) | ApplyError::Refinery(why) | ApplyError::Refused(why) => {
                f.write_str(why)
            }
            ApplyError::TenantLocked(e) | ApplyError::ServerGone(e) | ApplyError::Database(e) => {
                write!(f, "{e}")
            }
        }
    }
}

impl ApplyError {
    /// The migration a failure is attributed to, for the status table.
    pub fn failed_migration(&self) -> Option<crate::registry::FailedMigration<'_>> {
        match self {
            ApplyError::MigrationFailed {
                version,
                name,
                checksum,
                ..
            } => Some(crate::registry::FailedMigration {
                version: *version,
                name,
                checksum: *checksum,
            }),
            _ => None,
        }
    }
}

impl From<StepError> for ApplyError {
    fn from(e: StepError) -> Self {
        step_error(&e)
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::pg("", e)
    }
}

impl ApplyError {
    /// A PostgreSQL error while doing `what`: `ServerGone` when the server went away,
    /// `Database` otherwise.
    pub fn pg(what: &str, e: tokio_postgres::Error) -> Self {
        let failure = PgFailure {
            what: what.to_string(),
            source: Arc::new(e),
        };
        if crate::pg::connect::is_server_gone(&failure.source) {
            ApplyError::ServerGone(failure)
        } else {
            ApplyError::Database(failure)
        }
    }
}

/// `"schema".refinery_schema_history`, pinned so a missing schema fails loudly instead of
/// letting the history land wherever search_path points.
pub fn history_table(schema: &str) -> String {
    format!("{}.{HISTORY_TABLE}", quote_ident(schema))
}

/// Waits for the tenant's lock (`$1`, `$2`) and points search_path at its schema (`$3`,
/// `names::tenant_search_path`: the schema, then pg_temp), for this transaction only; says
/// whether the schema exists.
pub(crate) const ENTER_TENANT: &str =
    "SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))::text, \
        pg_catalog.set_config('search_path', $3, true), \
        EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $2)";

pub(crate) fn enter_params(schema: &str) -> Params {
    vec![
        Box::new(LOCK_CLASS),
        Box::new(schema.to_string()),
        Box::new(tenant_search_path(schema)),
    ]
}

/// Takes the tenant's lock (see `ENTER_TENANT`), marked as tenantctl's and waiting at most
/// `deadline` (which then holds for every lock wait of the transaction). Returns whether
/// the schema exists.
async fn enter_tenant(
    tx: &Transaction<'_>,
    schema: &str,
    deadline: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let (mark, params) = locks::mark(Some(deadline));
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| &**p as _).collect();
    tx.execute(mark, &refs).await?;
    let stmt = tx.prepare_cached(ENTER_TENANT).await?;
    let row = tx
        .query_one(&stmt, &[&LOCK_CLASS, &schema, &tenant_search_path(schema)])
        .await?;
    Ok(row.get(2))
}

/// A new transaction on `conn` that already holds tenant `slug`'s lock (see `enter_tenant`),
/// and whether the schema exists. For work on one tenant that must not overlap a migration
/// of it: backup, drop, restore. Every lock wait in it ends after `deadline`; when the
/// tenant's own lock is not granted by then, the error names who holds it.
pub async fn locked_transaction<'a>(
    conn: &'a mut Object,
    slug: &str,
    schema: &str,
    deadline: Duration,
) -> anyhow::Result<(Transaction<'a>, bool)> {
    let tx = conn
        .transaction()
        .await
        .pg_context("cannot start a transaction")?;
    // A savepoint, so that after a lock timeout the same transaction can still ask who
    // holds the lock.
    tx.batch_execute("SAVEPOINT tenantctl_lock")
        .await
        .pg_context("cannot start a transaction")?;
    match enter_tenant(&tx, schema, deadline).await {
        Ok(exists) => Ok((tx, exists)),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT tenantctl_lock")
                .await
                .pg_context("cannot roll back to before the tenant's lock")?;
            let holders = locks::tenant_lock_holders(&tx, schema)
                .await
                .pg_context("cannot look up who holds the tenant's lock")?;
            Err(anyhow::anyhow!(locks::tenant_locked_message(
                slug,
                &holders,
                Some(deadline)
            )))
        }
        Err(e) => Err(e).with_pg_context(|| format!("cannot lock tenant schema {schema}")),
    }
}

/// Where a tenant's applied history comes from.
#[derive(Debug, Clone, Copy)]
pub enum History<'a> {
    /// Read from the tenant's history table and verified by refinery against the files:
    /// a round trip before the migrations can be sent.
    Read,
    /// A schema created in this transaction: no history yet, and no table for it.
    New,
    /// What the registry says: the tenant is at `version`, and `digest` (which the caller
    /// has compared with the files) proves the applied files are these up to `version`.
    /// The registry and the history table are only ever changed together, in the tenant's
    /// transaction, so no read is needed; `registry::enter_unchanged` re-checks the row as
    /// it takes the tenant's lock, and if another process moved the tenant meanwhile the
    /// transaction fails with `ApplyError::Stale` before anything is applied.
    Registry {
        slug: &'a str,
        version: i64,
        digest: &'a str,
    },
}

impl<'a> History<'a> {
    /// `Registry` when the registry's fingerprint matches the files at its version (and a
    /// migration was applied, so the history table exists); otherwise `Read`.
    pub fn for_tenant(t: &'a crate::registry::Tenant, set: &MigrationSet) -> History<'a> {
        match (t.digest.as_deref(), set.digest_at(t.version)) {
            (Some(digest), Some(files)) if t.version > 0 && digest == files => History::Registry {
                slug: &t.slug,
                version: t.version,
                digest,
            },
            _ => History::Read,
        }
    }

    /// The history handed to refinery instead of a read of the table (`None`: read it).
    fn known(&self, set: &MigrationSet) -> Option<Known> {
        match *self {
            History::Read => None,
            History::New => Some(Known {
                applied: Vec::new(),
                table_exists: false,
            }),
            History::Registry { version, .. } => Some(Known {
                applied: set.applied_up_to(version),
                table_exists: true,
            }),
        }
    }
}

/// Plans every migration above the tenant's version up to `target` and queues them on `tx`,
/// followed by `RESET_SESSION`, to be sent with `commit`. With `History::Read`, one flight
/// first sends what `tx` holds so far, the tenant's lock and search_path, and the history
/// read; otherwise nothing is sent before `commit`. On an error `tx` is rolled back.
pub async fn apply_pending(
    tx: &mut Tx<'_>,
    schema: &str,
    set: &MigrationSet,
    target: i64,
    lock_timeout: Option<Duration>,
    history: History<'_>,
) -> Result<Applied, ApplyError> {
    // Marks the transaction as tenantctl's, and sets its deadline before the tenant's lock:
    // a wait for that lock ends too (`ApplyError::TenantLocked`), and the caller decides
    // from its holder whether to wait again (another tenantctl) or give up (anyone else).
    let (mark, params) = locks::mark(lock_timeout);
    tx.queue_prepared(Step::LockTimeout, mark, params).await?;
    match history {
        History::Registry {
            slug,
            version,
            digest,
        } => {
            let enter = crate::registry::enter_unchanged(slug, schema, version, digest);
            tx.queue_sql(enter).await?;
        }
        History::Read | History::New => {
            tx.queue_prepared(Step::Lock, ENTER_TENANT, enter_params(schema))
                .await?
        }
    }
    let table = history_table(schema);
    let mut runner = Runner::new(&set.migrations).set_target(if target >= set.latest() {
        Target::Latest
    } else {
        Target::Version(target as i32)
    });
    runner.set_migration_table_name(&table);
    let mut adapter = Queued::with_history(tx, history.known(set));
    let result = runner.run_async(&mut adapter).await;
    let latest_applied = adapter.latest_applied();
    let unsent_ddl = adapter.unsent_history_ddl();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            tx.rollback().await;
            return Err(refinery_error(e, set));
        }
    };
    let migrations: Vec<AppliedMigration> = report
        .applied_migrations()
        .iter()
        .map(AppliedMigration::from)
        .collect();
    if let Some(m) = migrations.iter().find(|m| set.is_no_transaction(m.version)) {
        // Never inside a transaction: the caller plans around such files (see
        // `no_transaction`), so this only happens when the tenant moved back meanwhile.
        tx.rollback().await;
        return Err(ApplyError::Refused(format!(
            "migration {m} must run alone, outside a transaction (its first line is \
             `-- no-transaction`), but came up inside this tenant's transaction because the \
             tenant changed during the run; nothing was applied: run the command again"
        )));
    }
    let version = migrations.last().map_or(latest_applied, |m| m.version);
    if let Some(ddl) = unsent_ddl {
        // A new schema with nothing to apply still gets its (empty) history table.
        tx.queue(Step::History, ddl);
    }
    if !migrations.is_empty() {
        tx.queue(Step::Reset, RESET_SESSION);
    }
    Ok(Applied {
        migrations,
        version,
        from_registry: matches!(history, History::Registry { .. }),
    })
}

/// Sends the queued migrations (and whatever the caller queued after them) with `COMMIT`.
/// A failure names the migration that failed; nothing is committed then.
pub async fn commit(tx: &mut Tx<'_>, applied: &Applied) -> Result<(), ApplyError> {
    tx.commit().await.map_err(|e| match e.step {
        // The server went away mid-flight: not this migration's fault.
        _ if crate::pg::connect::is_server_gone(&e.source) => step_error(&e),
        Step::Migration(_) if applied.from_registry && history_collision(&e) => ApplyError::Stale,
        Step::Migration(n) => match applied.migrations.get(n) {
            Some(m) => ApplyError::MigrationFailed {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum,
                error: e.cause(),
            },
            None => step_error(&e),
        },
        _ => step_error(&e),
    })
}

/// A failure outside the migrations' own SQL, by its type: the server gone, the tenant's
/// lock not granted in time, a missing schema, or anything else.
fn step_error(e: &StepError) -> ApplyError {
    if crate::pg::connect::is_server_gone(&e.source) {
        // Whichever step it cut, the cause is all there is to say.
        return ApplyError::ServerGone(PgFailure {
            what: String::new(),
            source: e.source.clone(),
        });
    }
    let failure = PgFailure {
        what: e.what().to_string(),
        source: e.source.clone(),
    };
    match (e.step, e.code()) {
        (Step::History, Some(&SqlState::UNDEFINED_SCHEMA)) => ApplyError::SchemaMissing,
        (Step::Guard, Some(code)) if code.code() == crate::registry::EXPECT_FAILED => {
            ApplyError::Stale
        }
        (Step::Guard | Step::Lock, Some(&SqlState::LOCK_NOT_AVAILABLE)) => {
            ApplyError::TenantLocked(failure)
        }
        (Step::Register, Some(&SqlState::UNIQUE_VIOLATION)) => ApplyError::AlreadyRegistered,
        _ => ApplyError::Database(failure),
    }
}

/// A history insert that collides with an existing row: the history holds a version the
/// registry did not know of (only possible when they were edited behind tenantctl's back).
fn history_collision(e: &StepError) -> bool {
    let db = e.source.as_db_error();
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && db.and_then(|d| d.table()) == Some(HISTORY_TABLE)
}

/// The tenant's applied history, read without creating anything.
pub(crate) async fn read_history(
    tx: &impl GenericClient,
    schema: &str,
) -> Result<Option<Vec<AppliedMigration>>, tokio_postgres::Error> {
    let table = history_table(schema);
    let exists: bool = tx
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = tx
        .query(
            &format!("SELECT version::bigint, name, checksum FROM {table} ORDER BY version"),
            &[],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|r| AppliedMigration {
                version: r.get(0),
                name: r.get::<_, Option<String>>(1).unwrap_or_default(),
                checksum: r
                    .get::<_, Option<String>>(2)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
            })
            .collect(),
    ))
}

/// The applied histories of many schemas (empty when a schema has none), for plans (dry
/// run) and audits (verify). Read in read-only snapshots of `HISTORY_BATCH` schemas each: a
/// transaction keeps a lock on every table it read until it ends, and one lock per tenant
/// overflows the server's lock table (max_locks_per_transaction x max_connections, 6,400 by
/// default) long before 10,000 tenants.
pub async fn read_histories(
    conn: &mut Object,
    schemas: &[&str],
) -> anyhow::Result<Vec<Vec<AppliedMigration>>> {
    let mut out = Vec::with_capacity(schemas.len());
    for batch in schemas.chunks(HISTORY_BATCH) {
        let tx = conn
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await
            .pg_context("cannot start a read-only transaction")?;
        for schema in batch {
            let history = read_history(&tx, schema)
                .await
                .with_pg_context(|| format!("cannot read the migration history of {schema}"))?;
            out.push(history.unwrap_or_default());
        }
        tx.commit()
            .await
            .pg_context("cannot end a read-only transaction")?;
    }
    Ok(out)
}

/// How many tenants' histories one transaction reads (see `read_histories`).
const HISTORY_BATCH: usize = 500;

fn refinery_error(e: refinery::Error, set: &MigrationSet) -> ApplyError {
    match e.kind() {
        Kind::DivergentVersion(applied, file) => ApplyError::Diverged(format!(
            "applied migration {applied} differs from the file {file} (its checksum changed)"
        )),
        Kind::MissingVersion(m) if set.find(m.version() as i64).is_none() => {
            ApplyError::Diverged(format!(
                "applied migration {m} is missing from {}",
                set.dir.display()
            ))
        }
        Kind::MissingVersion(m) => ApplyError::Diverged(format!(
            "migration {m} was never applied but a later version already is"
        )),
        // Every error of `Queued` is a `StepError` (its history read; queuing a migration
        // cannot fail): a migration's own failure surfaces at `commit`, by its step.
        // refinery wraps the history read twice ("error getting current schema version"
        // around "error getting applied migrations"), so the `StepError` is looked for
        // through the wrappers: a schema missing there is `SchemaMissing`, a server gone
        // is `ServerGone`.
        Kind::Connection(msg, src) => match step_error_within(&**src) {
            Some(e) => step_error(e),
            None => ApplyError::Refinery(format!("{msg}: {src}")),
        },
        other => ApplyError::Refinery(other.to_string()),
    }
}

/// The `StepError` a refinery error was made of, through refinery's own wrappers.
fn step_error_within<'a>(
    mut e: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a StepError> {
    loop {
        if let Some(step) = e.downcast_ref::<StepError>() {
            return Some(step);
        }
        match e.downcast_ref::<refinery::Error>().map(|r| r.kind()) {
            Some(Kind::Connection(_, inner)) => e = &**inner,
            _ => return None,
        }
    }
}
