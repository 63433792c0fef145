//! Where each tenant lives on Citus, for `list` and `status`: its worker node
//! (`host:port`), read from the coordinator that holds it: home, and every other place
//! (`[servers.NAME]`, database) that is one. One query of Citus's metadata per coordinator,
//! for all of its tenants; with `status --sizes`, one size query more per coordinator
//! (`Backend::sizes`), so each tenant's bytes come from where it lives.

use std::collections::BTreeMap;

use anyhow::Result;
use deadpool_postgres::Object;

use crate::commands::session::Session;
use crate::domain::settings::HOME_SERVER;
use crate::registry::{self, Pick, Tenant};
use crate::tenant::citus::Sizes;

/// Each distributed tenant schema's node (and with sizes its bytes), by the place it lives
/// at: a schema of the same name on two servers is two entries.
#[derive(Debug, Default)]
pub struct Nodes {
    home_database: String,
    home: Place,
    elsewhere: BTreeMap<(String, String), Place>,
    /// Sizes were asked for (`status --sizes`).
    sizes: bool,
}

/// What one coordinator said: each schema's node, and with sizes the bytes and workers.
#[derive(Debug, Default)]
struct Place {
    nodes: BTreeMap<String, String>,
    sizes: Option<Sizes>,
}

impl Nodes {
    /// The nodes of the tenants `pick` returns (with `slugs` when named), or `None` when
    /// neither home nor any place they live at is a Citus coordinator (then `list` and
    /// `status` show no node at all). With `sizes`, each coordinator's sizes too, and
    /// refused (exit 2, nothing shown) when none is one. A place that cannot be read leaves
    /// its tenants without a node (and size); the second value says why, naming it.
    pub async fn read(
        s: &Session,
        conn: &Object,
        pick: Pick<'_>,
        slugs: &[String],
        sizes: bool,
    ) -> Result<(Option<Nodes>, Vec<String>)> {
        let mut citus = s.backend().is_citus();
        let mut nodes = Nodes {
            home_database: s.home_database().to_string(),
            home: Place {
                nodes: s.backend().nodes(conn).await?,
                sizes: None,
            },
            sizes,
            ..Nodes::default()
        };
        let mut errors = Vec::new();
        if sizes && citus {
            let found = s.backend().sizes(conn, &s.target.describe()).await?;
            errors.extend(unreachable(HOME_SERVER, &found));
            nodes.home.sizes = Some(found);
        }
        for (server, database) in registry::places_elsewhere(conn, pick, slugs).await? {
            match place_at(s, &server, &database, sizes).await {
                Ok(Some(found)) => {
                    citus = true;
                    if let Some(z) = &found.sizes {
                        errors.extend(unreachable(&server, z));
                    }
                    nodes.elsewhere.insert((server, database), found);
                }
                Ok(None) => {}
                Err(e) => errors.push(format!(
                    "cannot read where the tenants on server {server} (database {database}) \
                     live{}: {e:#}; their node is left empty",
                    if sizes { " and their sizes" } else { "" }
                )),
            }
        }
        // A place that could not be read may be a coordinator: its tenants are shown,
        // without a size, rather than the whole command refused.
        if sizes && !citus && errors.is_empty() {
            // No coordinator anywhere: home's backend refuses, with its message.
            s.backend().sizes(conn, &s.target.describe()).await?;
        }
        Ok((
            (citus || (sizes && !errors.is_empty())).then_some(nodes),
            errors,
        ))
    }

    /// The place tenant `t` lives at.
    fn place(&self, t: &Tenant) -> Option<&Place> {
        match t.is_home(&self.home_database) {
            true => Some(&self.home),
            false => self.elsewhere.get(&(t.server.clone(), t.database.clone())),
        }
    }

    /// The node of tenant `t`, where it lives.
    pub fn get(&self, t: &Tenant) -> Option<&str> {
        self.place(t)?.nodes.get(&t.schema).map(String::as_str)
    }

    /// With sizes: `Some` with the bytes of tenant `t`'s shards where it lives (`None`: no
    /// shard, its place could not be read, or a node holding a shard did not answer);
    /// without, `None`.
    pub fn bytes(&self, t: &Tenant) -> Option<Option<i64>> {
        self.sizes.then(|| {
            let sizes = self.place(t)?.sizes.as_ref()?;
            sizes.schemas.get(&t.schema).copied().flatten()
        })
    }

    /// What tenant `t` adds to its node's bytes: its shards' bytes, 0 when it has none (or
    /// lives where no size was read: no node either, and a place that could not be read is
    /// named), `None` when a node holding one of its shards did not answer: the node's sum
    /// is then unknown too, never short.
    pub fn node_bytes(&self, t: &Tenant) -> Option<i64> {
        let sizes = self.place(t).and_then(|p| p.sizes.as_ref());
        match sizes.and_then(|z| z.schemas.get(&t.schema)) {
            Some(bytes) => *bytes,
            None => Some(0),
        }
    }

    /// The workers (server, `host:port`) that did not answer the size query.
    pub fn unreachable_workers(&self) -> Vec<(String, String)> {
        let home = std::iter::once((HOME_SERVER, &self.home));
        let far = self.elsewhere.iter().map(|((s, _), p)| (s.as_str(), p));
        home.chain(far)
            .filter_map(|(server, p)| Some((server, p.sizes.as_ref()?)))
            .flat_map(|(server, z)| {
                z.unreachable
                    .iter()
                    .map(|(n, _)| (server.to_string(), n.clone()))
            })
            .collect()
    }

    /// Whether sizes were read (`status --sizes`).
    pub fn has_sizes(&self) -> bool {
        self.sizes
    }

    /// Every worker taking shards of each coordinator read, with its server (`home` for
    /// home's): `(server, host:port)`.
    pub fn workers(&self) -> Vec<(String, String)> {
        let home = std::iter::once((HOME_SERVER, &self.home));
        let far = self.elsewhere.iter().map(|((s, _), p)| (s.as_str(), p));
        home.chain(far)
            .filter_map(|(server, p)| Some((server, p.sizes.as_ref()?)))
            .flat_map(|(server, z)| z.workers.iter().map(|w| (server.to_string(), w.clone())))
            .collect()
    }
}

/// The error of each node of `server`'s coordinator that did not answer the size query:
/// naming it, and what to do.
fn unreachable(server: &str, sizes: &Sizes) -> Vec<String> {
    sizes
        .unreachable
        .iter()
        .map(|(node, why)| {
            format!(
                "cannot read the tenants' sizes on Citus node {node} (server {server}): {}; \
                 the sizes of its tenants are left unknown (null) and its total is not shown; \
                 check that the node is up (SELECT * FROM citus_check_cluster_node_health()) \
                 and run tenantctl status --sizes again",
                why.trim()
            )
        })
        .collect()
}

/// The nodes (and with `sizes` the sizes) of the tenants of one place; `None` when it is
/// not Citus.
async fn place_at(s: &Session, server: &str, database: &str, sizes: bool) -> Result<Option<Place>> {
    let (_pool, conn) = s.connect_place(server, database, 1).await?;
    let backend = s.backend_at(server, database);
    if !backend.is_citus() {
        return Ok(None);
    }
    let at = format!("server {server} (database {database})");
    Ok(Some(Place {
        nodes: backend.nodes(&conn).await?,
        sizes: match sizes {
            true => Some(backend.sizes(&conn, &at).await?),
            false => None,
        },
    }))
}
