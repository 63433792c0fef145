//! Applying pending migrations to one tenant schema, inside a transaction the caller owns.
//!
//! The caller's transaction holds the tenant's advisory lock, a transaction-local
//! search_path and every pending migration, so a tenant moves from its old version to its
//! new one in a single commit, or not at all (error, kill -9, server restart).

use deadpool_postgres::{Object, Transaction};
use refinery::error::Kind;
use refinery::{Runner, Target};

use crate::connect::{describe_pg_error, PgContext};
use crate::migration_set::{AppliedMigration, MigrationSet};
use crate::names::quote_ident;
use crate::refinery_tx::InTransaction;

/// The first key of tenantctl's two-key advisory locks ("tntc"); the second is
/// `hashtext(schema)`. A hash collision only makes two tenants wait for each other.
pub const LOCK_CLASS: i32 = 0x746e_7463;

/// The history table refinery keeps inside each tenant schema.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

#[derive(Debug, Clone)]
pub struct Applied {
    pub migrations: Vec<AppliedMigration>,
    /// The tenant's version after the run.
    pub version: i64,
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
    /// Anything else (connection lost, lock trouble): the message says what.
    Database(String),
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
            ApplyError::Database(why) => f.write_str(why),
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

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Database(describe_pg_error(&e))
    }
}

/// `"schema".refinery_schema_history`, pinned so a missing schema fails loudly instead of
/// letting the history land wherever search_path points.
pub fn history_table(schema: &str) -> String {
    format!("{}.{HISTORY_TABLE}", quote_ident(schema))
}

/// Waits for the tenant's lock and points search_path at its schema (and nothing else) for
/// this transaction only. Returns whether the schema exists.
async fn enter_tenant(tx: &Transaction<'_>, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))::text, \
                    set_config('search_path', $3, true), \
                    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $2)",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&LOCK_CLASS, &schema, &quote_ident(schema)])
        .await?;
    Ok(row.get(2))
}

/// A new transaction on `conn` that already holds the tenant's lock (see `enter_tenant`),
/// and whether the schema exists. For work on one tenant that must not overlap a migration
/// of it: backup, drop, restore.
pub async fn locked_transaction<'a>(
    conn: &'a mut Object,
    schema: &str,
) -> anyhow::Result<(Transaction<'a>, bool)> {
    let tx = conn
        .transaction()
        .await
        .pg_context("cannot start a transaction")?;
    let exists = enter_tenant(&tx, schema)
        .await
        .with_pg_context(|| format!("cannot lock tenant schema {schema}"))?;
    Ok((tx, exists))
}

/// Applies every migration above the tenant's version up to `target`, within `tx`.
pub async fn apply_pending(
    tx: &mut Transaction<'_>,
    schema: &str,
    set: &MigrationSet,
    target: i64,
    lock_timeout_ms: Option<u64>,
) -> Result<Applied, ApplyError> {
    if !enter_tenant(tx, schema).await? {
        return Err(ApplyError::SchemaMissing);
    }
    // Only after the tenant's own lock is held: a second tenantctl waiting for that lock must
    // wait, not time out; the timeout is for the application's locks on the tenant's tables.
    if let Some(ms) = lock_timeout_ms {
        tx.execute(
            "SELECT set_config('lock_timeout', $1, true)",
            &[&format!("{ms}ms")],
        )
        .await?;
    }
    let table = history_table(schema);
    let mut runner = Runner::new(&set.migrations).set_target(if target >= set.latest() {
        Target::Latest
    } else {
        Target::Version(target as i32)
    });
    runner.set_migration_table_name(&table);
    let mut adapter = InTransaction::new(tx);
    let result = runner.run_async(&mut adapter).await;
    let report = result.map_err(|e| refinery_error(e, set))?;
    adapter.flush().await?;
    let migrations: Vec<AppliedMigration> = report
        .applied_migrations()
        .iter()
        .map(|m| AppliedMigration {
            version: m.version() as i64,
            name: m.name().to_string(),
            checksum: m.checksum(),
        })
        .collect();
    let version = match migrations.last() {
        Some(m) => m.version,
        None => current_version(tx, schema).await?,
    };
    Ok(Applied {
        migrations,
        version,
    })
}

/// The highest version in the tenant's history table (0 when there is none).
pub async fn current_version(
    tx: &Transaction<'_>,
    schema: &str,
) -> Result<i64, tokio_postgres::Error> {
    let sql = format!(
        "SELECT coalesce(max(version), 0)::bigint FROM {}",
        history_table(schema)
    );
    Ok(tx.query_one(&sql, &[]).await?.get(0))
}

/// The tenant's applied history, read without creating anything.
async fn read_history(
    tx: &Transaction<'_>,
    schema: &str,
) -> Result<Option<Vec<AppliedMigration>>, tokio_postgres::Error> {
    let table = history_table(schema);
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
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

/// The applied histories of many schemas (empty when a schema has none), read in one
/// read-only snapshot so they agree with each other; for plans (dry run) and audits (verify).
pub async fn read_histories(
    conn: &mut Object,
    schemas: &[&str],
) -> anyhow::Result<Vec<Vec<AppliedMigration>>> {
    let tx = conn
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .pg_context("cannot start a read-only transaction")?;
    let mut out = Vec::with_capacity(schemas.len());
    for schema in schemas {
        let history = read_history(&tx, schema)
            .await
            .with_pg_context(|| format!("cannot read the migration history of {schema}"))?;
        out.push(history.unwrap_or_default());
    }
    Ok(out)
}

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
        Kind::Connection(msg, src) => {
            let cause = match src.downcast_ref::<tokio_postgres::Error>() {
                Some(pe) => describe_pg_error(pe),
                None => src.to_string(),
            };
            match msg
                .strip_prefix("error applying migration ")
                .and_then(|n| find_by_display(set, n))
            {
                Some(m) => ApplyError::MigrationFailed {
                    version: m.version() as i64,
                    name: m.name().to_string(),
                    checksum: m.checksum(),
                    error: cause,
                },
                None => ApplyError::Database(format!("{msg}: {cause}")),
            }
        }
        other => ApplyError::Database(other.to_string()),
    }
}

fn find_by_display<'a>(set: &'a MigrationSet, shown: &str) -> Option<&'a refinery::Migration> {
    set.migrations.iter().find(|m| m.to_string() == shown)
}

/// A refinery error as one line, with the server's message rather than "db error".
pub fn describe_refinery(e: &refinery::Error) -> String {
    match e.kind() {
        Kind::Connection(msg, src) => match src.downcast_ref::<tokio_postgres::Error>() {
            Some(pe) => format!("{msg}: {}", describe_pg_error(pe)),
            None => format!("{msg}: {src}"),
        },
        other => other.to_string(),
    }
}
