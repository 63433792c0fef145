//! `tenantctl exec` in one tenant: its SQL in one transaction holding the tenant's lock
//! (so never during that tenant's migration), with the tenant's schema as search_path.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::SimpleQueryMessage;

use crate::pg::connect::describe_pg_error;
use crate::pg::txn::RESET_SESSION;
use crate::registry::exec_runs::RECORD_RESULT;
use crate::registry::locks;
use crate::tenant::apply::{enter_params, ENTER_TENANT};
use crate::tenant::citus::{Backend, Work};

/// What the SQL did in one tenant.
#[derive(Debug, Clone, Default)]
pub struct TenantResult {
    /// The sum of the counts of the statements that return no rows (INSERT, UPDATE,
    /// DELETE, MERGE, ...); statements returning rows (SELECT, ... RETURNING) are not counted.
    pub rows_affected: i64,
    /// The rows of the last statement that returned rows, and its column names.
    pub columns: Vec<String>,
    pub rows: Rows,
    /// Whether any statement returned rows (a query with no rows still has columns).
    pub returned_rows: bool,
}

/// How one tenant's run ends.
pub enum Commit {
    /// Commit, recording `done` for run `run_id` in the same transaction.
    Record { run_id: i64 },
    /// Commit without a record: a tenant elsewhere than the registry's database, whose
    /// outcome is recorded on home after its own server committed.
    Plain,
    /// Roll back (a dry run).
    RollBack,
}

/// Runs `sql` in tenant `slug` (schema `schema`): its lock (marked as tenantctl's, waiting
/// at most `lock_timeout` when given), its schema then pg_temp as search_path, the SQL
/// (sent as `backend` needs it: on Citus, after its prologue, one statement at a time),
/// a reset of whatever session state it set, then commit or roll back per `end`. The
/// error is a sentence for the operator; nothing was committed then.
pub async fn run(
    client: &mut Object,
    backend: &Backend,
    slug: &str,
    schema: &str,
    sql: &str,
    lock_timeout: Option<Duration>,
    end: Commit,
) -> Result<TenantResult, String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("cannot begin a transaction: {}", describe_pg_error(&e)))?;
    let (mark, params) = locks::mark(lock_timeout);
    tx.execute(mark, &refs(&params))
        .await
        .map_err(|e| format!("cannot set the lock deadline: {}", describe_pg_error(&e)))?;
    let params = enter_params(schema);
    let entered = tx.query_one(ENTER_TENANT, &refs(&params)).await;
    let exists: bool = match entered {
        Ok(row) => row.get(2),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            drop(tx);
            let holders = locks::tenant_lock_holders(&*client, schema)
                .await
                .unwrap_or_default();
            return Err(locks::tenant_locked_message(slug, &holders, lock_timeout));
        }
        Err(e) => return Err(format!("cannot lock the tenant: {}", describe_pg_error(&e))),
    };
    if !exists {
        return Err(format!("schema {schema} is missing from the database"));
    }
    if let Some(prologue) = backend.prologue(Work::Change) {
        for st in backend.statements(&prologue) {
            tx.batch_execute(st).await.map_err(|e| {
                format!(
                    "cannot prepare the transaction for Citus: {}",
                    describe_pg_error(&e)
                )
            })?;
        }
    }
    let mut messages = Vec::new();
    for st in backend.statements(sql) {
        let replies = tx
            .simple_query(st)
            .await
            .map_err(|e| format!("{}; rolled back, nothing changed", describe_pg_error(&e)))?;
        messages.extend(replies);
    }
    let result = collect(messages);
    tx.batch_execute(RESET_SESSION).await.map_err(|e| {
        format!(
            "cannot reset the session after the SQL: {}; rolled back",
            describe_pg_error(&e)
        )
    })?;
    match end {
        Commit::RollBack => {
            tx.rollback()
                .await
                .map_err(|e| format!("cannot roll back: {}", describe_pg_error(&e)))?;
        }
        Commit::Plain => {
            tx.commit().await.map_err(|e| {
                format!("COMMIT failed: {}; nothing changed", describe_pg_error(&e))
            })?;
        }
        Commit::Record { run_id } => {
            let no_error: Option<&str> = None;
            tx.execute(
                RECORD_RESULT,
                &[&run_id, &slug, &"done", &result.rows_affected, &no_error],
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot record the outcome in the registry: {}; rolled back",
                    describe_pg_error(&e)
                )
            })?;
            tx.commit().await.map_err(|e| {
                format!("COMMIT failed: {}; nothing changed", describe_pg_error(&e))
            })?;
        }
    }
    Ok(result)
}

fn refs(params: &crate::pg::pipeline::Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as _).collect()
}

/// Rows as the simple-query protocol gives them: text, or NULL.
type Rows = Vec<Vec<Option<String>>>;

/// Rows affected and the last returned rows, from the simple-query protocol's messages.
fn collect(messages: Vec<SimpleQueryMessage>) -> TenantResult {
    let mut out = TenantResult::default();
    let mut current: Option<(Vec<String>, Rows)> = None;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                current = Some((cols.iter().map(|c| c.name().to_string()).collect(), vec![]));
            }
            SimpleQueryMessage::Row(r) => {
                if let Some((_, rows)) = current.as_mut() {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
            }
            SimpleQueryMessage::CommandComplete(n) => match current.take() {
                Some((columns, rows)) => {
                    out.columns = columns;
                    out.rows = rows;
                    out.returned_rows = true;
                }
                None => out.rows_affected += n as i64,
            },
            _ => {}
        }
    }
    out
}
