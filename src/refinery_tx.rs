//! refinery's driver traits, implemented for a transaction that tenantctl already opened.
//!
//! refinery's own tokio-postgres driver commits after every migration (or, grouped, hides
//! which migration failed). Running its ungrouped runner through this adapter gives both:
//! every statement lands in the caller's single transaction, and a failure still names
//! the migration. Commit or rollback stays with the caller.

use refinery::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::Transaction;

pub struct InTransaction<'a, 'b> {
    pub tx: &'a mut Transaction<'b>,
}

impl AsyncTransaction for InTransaction<'_, '_> {
    type Error = tokio_postgres::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for q in queries {
            self.tx.batch_execute(q).await?;
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_> {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.tx.query(query, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                let applied_on: String = row.get(2);
                let checksum: String = row.get(3);
                Migration::applied(
                    row.get(0),
                    row.get(1),
                    // refinery writes RFC 3339; a hand-edited row must not crash the run.
                    OffsetDateTime::parse(&applied_on, &Rfc3339)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    checksum.parse().unwrap_or(0),
                )
            })
            .collect())
    }
}

impl AsyncMigrate for InTransaction<'_, '_> {}
