//! A transaction sent in a few pipelined flights instead of one round trip per statement.
//!
//! `BEGIN` and the statements queued after it wait until something needs an answer (the
//! migration history, a row count) or until `commit`; then they go out together. Each
//! request is labelled with a `Step`, so the first failure can be named precisely even
//! though the requests after it were already sent (they fail as "current transaction is
//! aborted", and `COMMIT` then rolls back).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};

use deadpool_postgres::ClientWrapper;

use crate::pg::connect::describe_pg_error;
use crate::pg::pipeline::{Params, Pipeline, Reply};

/// What a request of a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Begin,
    /// A statement queued by the caller; the text says what it does, for the error message
    /// ("cannot create the schema").
    Sql(&'static str),
    /// The tenant's registry row, inserted by `create`.
    Register,
    /// The tenant's advisory lock and search_path.
    Lock,
    /// The tenant's lock with the check that the registry still says what the run read,
    /// and its search_path (`public.tenantctl_enter`).
    Guard,
    /// tenantctl's mark on the transaction and, with a deadline, its lock_timeout; sent
    /// before the tenant's lock (`locks::mark`).
    LockTimeout,
    /// The migration history table (created if missing) and its rows.
    History,
    /// The n-th pending migration with its history row, counting from 0.
    Migration(usize),
    /// `RESET_SESSION`, after the migrations.
    Reset,
    Commit,
}

/// Undoes whatever session state a migration may have set (SET, SET ROLE, LISTEN, cursors,
/// temp tables, session advisory locks): the statements of deadpool's `RecyclingMethod::Clean`.
/// Sent inside the transaction, after the migrations, so that it takes effect with the
/// COMMIT (or fails the tenant before anything is committed), and so that the registry
/// statements after it run with the connection's own search_path and role. Connections
/// therefore go back to the pool clean, and the pool does not clean them again.
pub const RESET_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// A failed request: which step, and the server's error (shared, so that errors built
/// from it keep the typed source: its SQLSTATE, whether the connection closed).
#[derive(Debug, Clone)]
pub struct StepError {
    pub step: Step,
    pub source: Arc<tokio_postgres::Error>,
}

impl StepError {
    /// The server's message and SQLSTATE, without the step.
    pub fn cause(&self) -> String {
        describe_pg_error(&self.source)
    }

    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.source.code()
    }

    /// What the failed step was doing, as the start of a sentence.
    pub fn what(&self) -> &'static str {
        match self.step {
            Step::Begin => "cannot start a transaction",
            Step::Sql(what) => what,
            Step::Register => "cannot register the tenant",
            Step::Lock => "cannot lock the tenant schema",
            Step::Guard => "the tenant changed during the run",
            Step::LockTimeout => "cannot set the tenant's lock deadline",
            Step::History => "cannot read the migration history",
            Step::Migration(_) => "a migration failed",
            Step::Reset => "cannot reset the session after the migrations",
            Step::Commit => "cannot commit",
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what(), self.cause())
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A statement for the connection's prepared-statement cache, with its bind parameters and
/// the step it is (which names it in an error message).
pub struct Sql {
    pub step: Step,
    pub text: &'static str,
    pub params: Params,
}

/// An open transaction on a pooled connection.
///
/// Dropped while still open (an early return, a panic), it queues `ROLLBACK` on the
/// connection before the connection can go back to the pool, as tokio-postgres's own
/// `Transaction` does, so the next borrower never lands inside this transaction.
pub struct Tx<'c> {
    client: &'c ClientWrapper,
    pipeline: Pipeline<Step>,
    state: State,
    /// Send each statement of a queued text as a query of its own (`split_statements`).
    split: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// `BEGIN` is queued, not sent: the server has no transaction yet.
    Queued,
    Open,
    Ended,
}

impl<'c> Tx<'c> {
    /// Starts a transaction; `BEGIN` travels with the first flight.
    pub fn begin(client: &'c ClientWrapper) -> Self {
        let mut pipeline = Pipeline::default();
        pipeline.batch(Step::Begin, "BEGIN");
        Tx {
            client,
            pipeline,
            state: State::Queued,
            split: false,
        }
    }

    /// From now on, a text of several statements queued on this transaction goes out as
    /// one query per statement (same step), still in the same flight. A Citus coordinator
    /// needs it: DDL on a distributed table sent within a multi-statement query fails
    /// ("cannot insert multiple commands into a prepared statement").
    pub fn split_statements(&mut self) {
        self.split = true;
    }

    /// Queues statements (no parameters, no rows wanted).
    pub fn queue(&mut self, step: Step, sql: impl Into<String>) {
        let sql = sql.into();
        match self.pieces(&sql) {
            Some(statements) => {
                for st in statements {
                    self.pipeline.batch(step, st);
                }
            }
            None => self.pipeline.batch(step, sql),
        }
    }

    /// Queues a simple query whose rows the next flight returns (with `split_statements`,
    /// the rows of its last statement).
    pub fn queue_query(&mut self, step: Step, sql: impl Into<String>) {
        let sql = sql.into();
        match self.pieces(&sql) {
            Some(mut statements) if !statements.is_empty() => {
                let last = statements.pop().expect("not empty");
                for st in statements {
                    self.pipeline.batch(step, st);
                }
                self.pipeline.query(step, last);
            }
            _ => self.pipeline.query(step, sql),
        }
    }

    /// The statements of `sql` when they must go one by one; `None` to send it whole (not
    /// splitting, one statement, or a text the splitter cannot read: the server then
    /// reports the error itself).
    fn pieces(&self, sql: &str) -> Option<Vec<String>> {
        if !self.split {
            return None;
        }
        let statements = crate::domain::sql_split::split(sql).ok()?;
        if statements.len() < 2 {
            return None;
        }
        Some(statements.iter().map(|s| s.text.to_string()).collect())
    }

    /// Queues a prepared statement. Preparing costs a round trip the first time a
    /// connection sees the statement, never again.
    pub async fn queue_prepared(
        &mut self,
        step: Step,
        text: &str,
        params: Params,
    ) -> Result<(), StepError> {
        match self.client.prepare_cached(text).await {
            Ok(stmt) => {
                self.pipeline.execute(step, stmt, params);
                Ok(())
            }
            Err(source) => {
                let source = Arc::new(source);
                Err(self.fail(StepError { step, source }).await)
            }
        }
    }

    /// Queues a statement from `Sql`, labelled with its step.
    pub async fn queue_sql(&mut self, sql: Sql) -> Result<(), StepError> {
        self.queue_prepared(sql.step, sql.text, sql.params).await
    }

    /// Sends everything queued and returns the replies. On the first failure the
    /// transaction is rolled back and ended, and that failure is returned.
    pub async fn flush(&mut self) -> Result<Vec<(Step, Reply)>, StepError> {
        self.state = State::Open;
        let replies = self.pipeline.send(self.client).await;
        match first_failure(replies) {
            Ok(replies) => Ok(replies),
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// Sends everything queued, then `COMMIT`. Any failure means nothing was committed.
    pub async fn commit(&mut self) -> Result<(), StepError> {
        self.pipeline.batch(Step::Commit, "COMMIT");
        let replies = self.pipeline.send(self.client).await;
        // COMMIT ends the transaction either way: after an earlier failure it rolls back.
        self.state = State::Ended;
        let result = first_failure(replies).map(|_| ());
        if result.is_err() {
            // The rollback undid the rest of what a failed migration set, but not session
            // advisory locks; a failure here means the connection is gone.
            let _ = self
                .client
                .batch_execute("SELECT pg_catalog.pg_advisory_unlock_all()")
                .await;
        }
        result
    }

    /// Rolls back, forgetting anything still queued.
    pub async fn rollback(&mut self) {
        self.pipeline.clear();
        if std::mem::replace(&mut self.state, State::Ended) == State::Open {
            // A failure here means the connection is gone, and the server rolls back.
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
    }

    async fn fail(&mut self, e: StepError) -> StepError {
        self.rollback().await;
        e
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.state != State::Open {
            return;
        }
        // Polling once writes the request to the connection's queue, ahead of anything the
        // next borrower sends; the reply is not needed.
        let mut rollback = std::pin::pin!(self.client.batch_execute("ROLLBACK"));
        let _ = rollback
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
    }
}

fn first_failure(
    replies: Vec<(Step, Result<Reply, tokio_postgres::Error>)>,
) -> Result<Vec<(Step, Reply)>, StepError> {
    replies
        .into_iter()
        .map(|(step, r)| {
            r.map(|reply| (step, reply)).map_err(|source| StepError {
                step,
                source: Arc::new(source),
            })
        })
        .collect()
}
