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
    pub tx: &'a mut Transaction<'b>,
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
        self.tx.batch_execute(&queries.join("\n;\n")).await?;
        Ok(queries.len())
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_> {
    /// The history read, as one simple query (no prepare round trip). Values arrive as text;
    /// a hand-edited row must not crash the run, so unparsable fields become values that
    /// fail refinery's verification instead (version -1, checksum 0).
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let messages = self.tx.simple_query(query).await?;
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
