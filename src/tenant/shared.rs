//! Shared migrations: tables every tenant shares (plans, users, lookup tables tenants'
//! tables reference), kept in one schema of their own (`[migrations] shared_schema`,
//! default `public`) with their own refinery history table there.
//!
//! They are applied to a server once, before any tenant's, in one transaction holding the
//! fleet-wide `locks::SHARED_MIGRATIONS` lock, through the same `apply_pending` as a
//! tenant's migrations: the same checksum and divergence rules, the same error messages.
//! `apply` is the one call a command makes per server (the home server first).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use deadpool_postgres::Object;

use crate::domain::exit::bad_input;
use crate::domain::migration_set::{AppliedMigration, MigrationSet, Plan};
use crate::domain::names::quote_ident;
use crate::pg::txn::{Step, Tx};
use crate::registry::locks::{self, SHARED_MIGRATIONS};
use crate::tenant::apply::{self, apply_pending, read_histories, ApplyError, History};
use tokio_postgres::error::SqlState;

/// The shared migrations of a run: their folder's files and the schema they go in.
#[derive(Debug, Clone)]
pub struct SharedSet {
    pub schema: String,
    pub set: MigrationSet,
}

/// What applying the shared migrations did.
#[derive(Debug, Clone)]
pub struct SharedApplied {
    /// The shared version after the run (0 when none was ever applied).
    pub version: i64,
    pub migrations: Vec<AppliedMigration>,
}

/// Where a server's shared migrations stand, read without changing anything.
#[derive(Debug, Clone)]
pub struct SharedState {
    /// The highest applied version (0 for none).
    pub version: i64,
    /// What a run would apply (empty when current), or why it would refuse.
    pub plan: Plan,
}

impl SharedSet {
    /// Loads `dir` with the same checks as the tenants' folder (`MigrationSet::load`). Refuses
    /// a folder inside the tenants' one (its files would be applied to every tenant too)
    /// and `-- no-transaction` files (shared migrations are one transaction).
    pub fn load(dir: &Path, schema: &str, tenant_dir: &Path) -> Result<SharedSet> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
        let (shared, tenants) = (canon(dir), canon(tenant_dir));
        if shared.starts_with(&tenants) || tenants.starts_with(&shared) {
            return Err(bad_input(format!(
                "[migrations] shared_dir {} and the tenants' migrations folder {} overlap, so \
                 the same files would be applied to every tenant and to the shared schema; \
                 keep them in separate folders",
                dir.display(),
                tenant_dir.display()
            )));
        }
        let set =
            MigrationSet::load(dir).map_err(|e| bad_input(format!("shared migrations: {e}")))?;
        if let Some(m) = set
            .migrations
            .iter()
            .find(|m| set.is_no_transaction(m.version() as i64))
        {
            return Err(bad_input(format!(
                "shared migration {m} starts with `-- no-transaction`, but shared migrations \
                 are applied together in one transaction; remove that line (or run that \
                 statement by hand); nothing was changed"
            )));
        }
        Ok(SharedSet {
            schema: schema.to_string(),
            set,
        })
    }

    /// The schema and its history table, for messages: `public (refinery_schema_history)`.
    pub fn describe(&self) -> String {
        format!("shared schema {}", self.schema)
    }
}

/// Applies the pending shared migrations to the server `client` is connected to, in one
/// transaction: the fleet-wide lock (waiting at most `lock_timeout`, when given), the
/// schema (created when missing), the history read and check, every pending migration,
/// COMMIT. On an error nothing is committed; the error names the migration.
pub async fn apply(
    client: &Object,
    shared: &SharedSet,
    lock_timeout: Option<Duration>,
) -> Result<SharedApplied, ApplyError> {
    let mut tx = Tx::begin(client);
    // The deadline first, so that it bounds the wait for the fleet-wide lock too.
    let (mark, params) = locks::mark(lock_timeout);
    tx.queue_prepared(Step::LockTimeout, mark, params).await?;
    tx.queue_prepared(
        Step::Lock,
        "SELECT pg_catalog.pg_advisory_xact_lock($1::bigint)",
        vec![Box::new(SHARED_MIGRATIONS)],
    )
    .await?;
    tx.queue(
        Step::Sql("cannot create the shared schema"),
        format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&shared.schema)
        ),
    );
    // Sent on its own (one more round trip, once per run) so that a lock wait that ends at
    // the deadline is told as what it is.
    if let Err(e) = tx.flush().await {
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) && e.step == Step::Lock {
            return Err(ApplyError::Locked(format!(
                "the shared migrations' lock was not granted within {} (--lock-timeout): \
                 another tenantctl is applying them, or a session holds advisory lock {}; \
                 try again when it is done",
                lock_timeout.map_or("the server's lock_timeout".to_string(), |d| {
                    locks::describe_duration(d)
                }),
                SHARED_MIGRATIONS
            )));
        }
        return Err(e.into());
    }
    let applied = apply_pending(
        &mut tx,
        &shared.schema,
        &shared.set,
        shared.set.latest(),
        lock_timeout,
        History::Read,
    )
    .await?;
    apply::commit(&mut tx, &applied).await?;
    Ok(SharedApplied {
        version: applied.version,
        migrations: applied.migrations,
    })
}

/// Reads the server's shared history and plans against the files; changes nothing.
pub async fn state(conn: &mut Object, shared: &SharedSet) -> Result<SharedState> {
    let history = read_histories(conn, &[shared.schema.as_str()])
        .await?
        .pop()
        .unwrap_or_default();
    let version = history.iter().map(|m| m.version).max().unwrap_or(0);
    let plan = shared.set.plan(&history, shared.set.latest());
    Ok(SharedState { version, plan })
}

impl SharedState {
    /// Pending migrations (0 when refused: see `diverged`).
    pub fn pending(&self) -> usize {
        match &self.plan {
            Plan::Apply(p) => p.len(),
            Plan::Diverged(_) => 0,
        }
    }

    pub fn diverged(&self) -> Option<&str> {
        match &self.plan {
            Plan::Diverged(why) => Some(why),
            Plan::Apply(_) => None,
        }
    }
}
