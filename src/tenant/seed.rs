//! Seed data: SQL run in a new tenant's schema after its migrations, inside the transaction
//! that creates it, so a failing seed means the tenant is not created at all.

use std::path::Path;

use anyhow::Result;

use crate::domain::exit::bad_input;
use crate::domain::migration_set::check_sql;
use crate::domain::names::tenant_search_path;
use crate::pg::txn::{Step, StepError, Tx, RESET_SESSION};

/// A seed file, read and checked.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The file, as given (for messages).
    pub name: String,
    pub sql: String,
}

/// What the seed can read with `current_setting('tenantctl.…')`, set for the transaction
/// only, from bind parameters; and the tenant's schema (then pg_temp) as its search_path
/// (the migrations' search_path was reset after them).
const ENTER_SEED: &str = "SELECT pg_catalog.set_config('tenantctl.slug', $1, true), \
        pg_catalog.set_config('tenantctl.schema', $2, true), \
        pg_catalog.set_config('tenantctl.display_name', $3, true), \
        pg_catalog.set_config('search_path', $4, true)";

impl Seed {
    /// Reads `path` and applies the statement checks of a migration file (no transaction
    /// control, no SET search_path or ROLE): bad input, exit 2, naming the file and line.
    pub fn load(path: &Path) -> Result<Seed> {
        let sql = std::fs::read_to_string(path).map_err(|e| {
            bad_input(format!(
                "cannot read seed file {}: {e}; nothing was created",
                path.display()
            ))
        })?;
        check_sql(&sql).map_err(|why| {
            bad_input(format!(
                "seed file {} {why}; nothing was created",
                path.display()
            ))
        })?;
        Ok(Seed {
            name: path.display().to_string(),
            sql,
        })
    }

    /// Queues the seed in `tx` for tenant `slug` in `schema`, then resets the session, so
    /// what follows (the registry update) runs with the connection's own settings.
    pub async fn queue(
        &self,
        tx: &mut Tx<'_>,
        slug: &str,
        schema: &str,
        display_name: Option<&str>,
    ) -> Result<(), StepError> {
        tx.queue_prepared(
            Step::Sql("cannot prepare the seed"),
            ENTER_SEED,
            vec![
                Box::new(slug.to_string()),
                Box::new(schema.to_string()),
                Box::new(display_name.unwrap_or_default().to_string()),
                Box::new(tenant_search_path(schema)),
            ],
        )
        .await?;
        // The newline keeps a trailing `--` comment from swallowing what follows.
        tx.queue(Step::Sql("the seed failed"), format!("{}\n", self.sql));
        tx.queue(Step::Reset, RESET_SESSION);
        Ok(())
    }
}
