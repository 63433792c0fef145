//! Where each tenant lives on Citus, for `list` and `status`: its worker node
//! (`host:port`), read from the coordinator that holds it: home, and every other place
//! (`[servers.NAME]`, database) that is one. One query of Citus's metadata per coordinator,
//! for all of its tenants.

use std::collections::BTreeMap;

use anyhow::Result;
use deadpool_postgres::Object;

use crate::commands::session::Session;
use crate::registry::{self, Pick, Tenant};

/// Each distributed tenant schema's node, by the place it lives at.
#[derive(Debug, Default)]
pub struct Nodes {
    home_database: String,
    home: BTreeMap<String, String>,
    elsewhere: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl Nodes {
    /// The nodes of the tenants `pick` returns (with `slugs` when named), or `None` when
    /// neither home nor any place they live at is a Citus coordinator (then `list` and
    /// `status` show no node at all). A place that cannot be read leaves its tenants
    /// without a node; the second value says why, naming it.
    pub async fn read(
        s: &Session,
        conn: &Object,
        pick: Pick<'_>,
        slugs: &[String],
    ) -> Result<(Option<Nodes>, Vec<String>)> {
        let mut citus = s.backend().is_citus();
        let mut nodes = Nodes {
            home_database: s.home_database().to_string(),
            home: s.backend().nodes(conn).await?,
            ..Nodes::default()
        };
        let mut errors = Vec::new();
        for (server, database) in registry::places_elsewhere(conn, pick, slugs).await? {
            match nodes_at(s, &server, &database).await {
                Ok(Some(found)) => {
                    citus = true;
                    nodes.elsewhere.insert((server, database), found);
                }
                Ok(None) => {}
                Err(e) => errors.push(format!(
                    "cannot read where the tenants on server {server} (database {database}) \
                     live: {e:#}; their node is left empty"
                )),
            }
        }
        Ok((citus.then_some(nodes), errors))
    }

    /// The node of tenant `t`, where it lives.
    pub fn get(&self, t: &Tenant) -> Option<&str> {
        let place = match t.is_home(&self.home_database) {
            true => Some(&self.home),
            false => self.elsewhere.get(&(t.server.clone(), t.database.clone())),
        };
        place?.get(&t.schema).map(String::as_str)
    }
}

/// The nodes Citus placed the tenants of one place on; `None` when it is not Citus.
async fn nodes_at(
    s: &Session,
    server: &str,
    database: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let (_pool, conn) = s.connect_place(server, database, 1).await?;
    let backend = s.backend_at(server, database);
    if !backend.is_citus() {
        return Ok(None);
    }
    Ok(Some(backend.nodes(&conn).await?))
}
