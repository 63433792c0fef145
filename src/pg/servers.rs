//! The servers tenants live on: `home` (the one tenantctl connects to, holding the registry)
//! and each `[servers.NAME]` of tenants.toml. Commands ask for "the target of this server
//! and database" here instead of assuming one connection; see docs/placements.md.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::domain::exit::bad_input;
use crate::domain::settings::{ServerSection, Settings, HOME_SERVER};
use crate::pg::connect::{self, Local, Target};
use crate::pg::conninfo;

/// Every server a command may reach, resolved lazily: a `[servers.NAME]` whose password
/// variable is unset only fails the commands that need that server.
#[derive(Debug, Clone)]
pub struct Servers {
    home: Target,
    others: BTreeMap<String, ServerSection>,
    settings: Settings,
    local: Local,
}

impl Servers {
    pub fn new(home: Target, settings: &Settings, local: Local) -> Servers {
        Servers {
            home,
            others: settings.servers.clone(),
            settings: settings.clone(),
            local,
        }
    }

    /// `home` first, then the configured servers by name.
    pub fn names(&self) -> Vec<String> {
        crate::domain::settings::server_names(&self.others)
    }

    /// Whether `name` is `home` or a configured server.
    pub fn knows(&self, name: &str) -> bool {
        name == HOME_SERVER || self.others.contains_key(name)
    }

    /// The connection to `name`'s own database (the one its url names).
    pub fn target(&self, name: &str) -> Result<Target> {
        if name == HOME_SERVER {
            return Ok(self.home.clone());
        }
        let section = self.others.get(name).ok_or_else(|| {
            bad_input(format!(
                "unknown server '{}' (configured: {}); add a [servers.NAME] table to {}",
                name.escape_debug(),
                self.names().join(", "),
                self.settings.describe_config()
            ))
        })?;
        resolve_other(name, section, &self.settings, &self.local)
    }

    /// The connection to database `database` of server `name`.
    pub fn target_db(&self, name: &str, database: &str) -> Result<Target> {
        let target = self.target(name)?;
        if target.config.get_dbname() == Some(database) {
            return Ok(target);
        }
        Ok(target.with_dbname(database))
    }
}

/// A `[servers.NAME]`: its url as written (the PG* variables describe `home` and fill in
/// nothing here), with the password from the variable `password_env` names. A password in
/// the url itself is refused: tenants.toml is not a place for secrets.
fn resolve_other(
    name: &str,
    section: &ServerSection,
    settings: &Settings,
    local: &Local,
) -> Result<Target> {
    let params = conninfo::parse(&section.url)
        .map_err(|e| bad_input(format!("[servers.{name}] url: {e}")))?;
    if params.contains_key("password") {
        return Err(bad_input(format!(
            "[servers.{name}] url holds a password; remove it and name the environment \
             variable that holds it with password_env"
        )));
    }
    let mut env = BTreeMap::new();
    if let Some(var) = &section.password_env {
        match std::env::var(var).ok().filter(|v| !v.is_empty()) {
            Some(pw) => {
                env.insert("PGPASSWORD", pw);
            }
            None => {
                return Err(bad_input(format!(
                    "the environment variable {var} (password_env of [servers.{name}]) is not \
                     set; export it with the password of server {name}"
                )))
            }
        }
    }
    let mut own = settings.clone();
    own.database_url = Some(section.url.clone());
    own.url_from_file = false;
    connect::resolve(&own, &env, local)
}
