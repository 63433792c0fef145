//! refinery's driver traits, implemented over a transaction that tenantctl already opened.
//!
//! refinery's own tokio-postgres driver commits after every migration (or, grouped, hides
//! which migration failed). Running its ungrouped runner through this adapter gives both:
//! every statement lands in the caller's single transaction, and a failure still names the
//! migration. It also saves round trips: refinery's statements are queued on the `Tx`
//! rather than sent one by one. The history read goes out with whatever the caller queued
//! before it (BEGIN, the tenant's lock); the migrations wait for the caller's `commit`, and
//! a failure among them is reported by its `Step::Migration(n)`. Commit or rollback stays
//! with the caller. When the caller already knows the history (`Queued::with_history`), nothing is
//! read at all, and the whole transaction can leave in one flight.

use refinery::error::Kind;
use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::SimpleQueryMessage;

use crate::pg::pipeline::Reply;
use crate::pg::txn::{Step, StepError, Tx};

pub struct Queued<'t, 'c> {
    tx: &'t mut Tx<'c>,
    /// refinery's `CREATE TABLE IF NOT EXISTS <history>`, held back to travel with the
    /// history read that always follows it.
    deferred: Option<String>,
    /// Migrations queued so far.
    queued: usize,
    /// The highest version in the history, as read.
    latest_applied: i64,
    /// The history, when the caller knows it (see `Queued::with_history`).
    known: Option<Known>,
}

/// A history the caller vouches for, handed to refinery instead of reading the table.
pub struct Known {
    pub applied: Vec<Migration>,
    /// Whether the history table already exists. When it does not (a schema created in this
    /// transaction), refinery's `CREATE TABLE` goes out with the first migration.
    pub table_exists: bool,
}

impl<'t, 'c> Queued<'t, 'c> {
    pub fn new(tx: &'t mut Tx<'c>) -> Self {
        Queued {
            tx,
            deferred: None,
            queued: 0,
            latest_applied: 0,
            known: None,
        }
    }

    /// Like `new`, but with `Some(known)` refinery is given that history instead of the
    /// table's rows.
    pub fn with_history(tx: &'t mut Tx<'c>, known: Option<Known>) -> Self {
        Queued {
            known,
            ..Queued::new(tx)
        }
    }

    /// refinery's `CREATE TABLE IF NOT EXISTS <history>` when nothing has sent it yet (a
    /// known history with no migration to apply). The caller decides whether it is needed.
    pub fn unsent_history_ddl(&mut self) -> Option<String> {
        self.deferred.take()
    }

    /// The highest version the history held before this run (0 for none).
    pub fn latest_applied(&self) -> i64 {
        self.latest_applied
    }

    fn with_deferred(&mut self, sql: &str) -> String {
        match self.deferred.take() {
            Some(first) => format!("{first};\n{sql}"),
            None => sql.to_string(),
        }
    }
}

impl AsyncTransaction for Queued<'_, '_> {
    type Error = StepError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let queries: Vec<&str> = queries.collect();
        if let [only] = queries.as_slice() {
            if self.deferred.is_none()
                && only.trim_start().starts_with("CREATE TABLE IF NOT EXISTS")
            {
                self.deferred = Some(only.to_string());
                return Ok(1);
            }
        }
        // A migration and its history INSERT, as one simple query. The newline keeps a
        // trailing `--` comment from swallowing the `;`.
        let sql = self.with_deferred(&queries.join("\n;\n"));
        self.tx.queue(Step::Migration(self.queued), sql);
        self.queued += 1;
        Ok(queries.len())
    }
}

impl AsyncQuery<Vec<Migration>> for Queued<'_, '_> {
    /// The history read, as one simple query sent with everything queued before it. Values
    /// arrive as text; a hand-edited row must not crash the run, so unparsable fields become
    /// values that fail refinery's verification instead (version -1, checksum 0).
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        if let Some(known) = self.known.take() {
            if known.table_exists {
                self.deferred = None;
            }
            self.latest_applied = latest(&known.applied);
            return Ok(known.applied);
        }
        let sql = self.with_deferred(query);
        self.tx.queue_query(Step::History, sql);
        let replies = self.tx.flush().await?;
        let rows = replies
            .into_iter()
            .find_map(|(step, reply)| match (step, reply) {
                (Step::History, Reply::Rows(rows)) => Some(rows),
                _ => None,
            });
        let migrations: Vec<Migration> = rows
            .unwrap_or_default()
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .map(|row| {
                let field = |i: usize| row.get(i).unwrap_or_default();
                Migration::applied(
                    field(0).parse().unwrap_or(-1),
                    field(1).to_string(),
                    OffsetDateTime::parse(field(2), &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    field(3).parse().unwrap_or(0),
                )
            })
            .collect();
        self.latest_applied = latest(&migrations);
        Ok(migrations)
    }
}

fn latest(migrations: &[Migration]) -> i64 {
    migrations
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

impl AsyncMigrate for Queued<'_, '_> {}

/// A refinery error as one line, with the server's message rather than "db error".
pub fn describe_refinery(e: &refinery::Error) -> String {
    match e.kind() {
        Kind::Connection(msg, src) => match src.downcast_ref::<StepError>() {
            Some(se) => se.to_string(),
            None => format!("{msg}: {src}"),
        },
        other => other.to_string(),
    }
}
