//! What every database command starts with: merged settings, a connection pool, and a
//! registry that is installed and current.

use anyhow::Result;
use deadpool_postgres::{Object, Pool};

use crate::cli::{Format, Global};
use crate::connect::{self, Target};
use crate::exit::bad_input;
use crate::names;
use crate::registry;
use crate::settings::{self, Overrides, Settings};

pub struct Session {
    pub settings: Settings,
    pub target: Target,
    pub format: Format,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

impl Session {
    /// Merges the settings and resolves the connection; opens nothing yet.
    pub fn new(global: &Global, concurrency: Option<u16>) -> Result<Session> {
        let overrides = Overrides {
            config: global.config.clone().filter(|p| !p.as_os_str().is_empty()),
            database_url: non_empty(global.database_url.clone()),
            migrations: global
                .migrations
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            concurrency: concurrency.map(usize::from),
            connect_timeout: global.connect_timeout,
        };
        let settings = settings::load(overrides)?;
        let target = connect::resolve(&settings, &settings::pg_env(), &connect::os_user())?;
        Ok(Session {
            settings,
            target,
            format: global.format,
        })
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    pub fn concurrency(&self) -> usize {
        settings::concurrency_or_default(&self.settings)
    }

    /// The schema names of `slugs`, refusing names PostgreSQL would truncate or reserves.
    pub fn schemas_for(&self, slugs: &[String]) -> Result<Vec<String>> {
        slugs
            .iter()
            .map(|s| {
                names::schema_name(&self.settings.schema_prefix, s)
                    .map_err(|e| bad_input(e.to_string()))
            })
            .collect()
    }

    /// A pool of `size` connections and one connection from it, with the registry current.
    pub async fn connect(&self, size: usize) -> Result<(Pool, Object)> {
        let pool = connect::pool(&self.target, size)?;
        let mut conn = connect::first_connection(&pool, &self.target).await?;
        registry::ensure(&mut conn).await?;
        Ok((pool, conn))
    }

    /// The concurrency the server can take: `wanted`, or fewer when the server lacks free
    /// connections (two are left for everyone else). Says so on stderr when it cuts.
    pub async fn fit_concurrency(&self, conn: &Object, wanted: usize) -> Result<usize> {
        const LEAVE_FREE: i64 = 2;
        // Our own connection is already counted as used, and will be reused by the run.
        let room = connect::free_connection_slots(conn).await? + 1 - LEAVE_FREE;
        if room < 1 {
            anyhow::bail!(
                "the server at {} has no free connections (max_connections is reached); \
                 close idle sessions or raise max_connections",
                self.target.describe()
            );
        }
        let fit = wanted.min(room as usize);
        if fit < wanted {
            eprintln!(
                "note: the server has room for {fit} more connections, so tenantctl runs {fit} \
                 tenants at a time instead of {wanted}"
            );
        }
        Ok(fit)
    }

    /// Fails with exit 2 when a configured application role does not exist.
    pub async fn check_app_role(&self, conn: &Object) -> Result<Option<String>> {
        let Some(role) = self.settings.app_role.clone() else {
            return Ok(None);
        };
        if !registry::role_exists(conn, &role).await? {
            return Err(bad_input(format!(
                "application role '{role}' does not exist; create it (CREATE ROLE \"{role}\" LOGIN) \
                 or change [tenants] app_role in {}",
                self.settings.describe_config()
            )));
        }
        Ok(Some(role))
    }
}

/// Removes repeated slugs, keeping the first occurrence.
pub fn dedup(slugs: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    slugs
        .iter()
        .filter(|s| seen.insert(s.as_str()))
        .cloned()
        .collect()
}
