//! refinery's driver traits, implemented for a transaction that tenantctl already opened.
//!
//! refinery's own tokio-postgres driver commits after every migration (or, grouped, hides
//! which migration failed). Running its ungrouped runner through this adapter gives both:
//! every statement lands in the caller's single transaction, and a failure still names
//! the migration. Commit or rollback stays with the caller.

use deadpool_postgres::Transaction;
use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::SimpleQueryMessage;

pub struct InTransaction<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    /// refinery's `CREATE TABLE IF NOT EXISTS <history>`, held back to travel with the
    /// history read that always follows it: one round trip instead of two per tenant.
    deferred: Option<String>,
}

impl<'a, 'b> InTransaction<'a, 'b> {
    pub fn new(tx: &'a mut Transaction<'b>) -> Self {
        InTransaction { tx, deferred: None }
    }

    /// Sends anything still held back. Call after refinery's run, before commit.
    pub async fn flush(&mut self) -> Result<(), tokio_postgres::Error> {
        match self.deferred.take() {
            Some(sql) => self.tx.batch_execute(&sql).await,
            None => Ok(()),
        }
    }

    fn with_deferred(&mut self, sql: &str) -> String {
        match self.deferred.take() {
            Some(first) => format!("{first};\n{sql}"),
            None => sql.to_string(),
        }
    }
}

impl AsyncTransaction for InTransaction<'_, '_> {
    type Error = tokio_postgres::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        // refinery passes a migration and its history INSERT; both go in one simple-query
        // round trip. The newline keeps a trailing `--` comment from swallowing the `;`.
        let queries: Vec<&str> = queries.collect();
        if let [only] = queries.as_slice() {
            if self.deferred.is_none()
                && only.trim_start().starts_with("CREATE TABLE IF NOT EXISTS")
            {
                self.deferred = Some(only.to_string());
                return Ok(1);
            }
        }
        let sql = self.with_deferred(&queries.join("\n;\n"));
        self.tx.batch_execute(&sql).await?;
        Ok(queries.len())
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_> {
    /// The history read, as one simple query (no prepare round trip). Values arrive as text;
    /// a hand-edited row must not crash the run, so unparsable fields become values that
    /// fail refinery's verification instead (version -1, checksum 0).
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let sql = self.with_deferred(query);
        let messages = self.tx.simple_query(&sql).await?;
        Ok(messages
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
            .collect())
    }
}

impl AsyncMigrate for InTransaction<'_, '_> {}
