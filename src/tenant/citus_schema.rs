//! What only a Citus coordinator does to one tenant's schema: move it to another worker node
//! (`move SLUG --node`, `citus_schema_move`) and make a local schema a distributed one
//! (`distribute`, `citus_schema_distribute`). `Backend::schema_ops` hands out `SchemaOps`
//! on Citus only; docs/citus.md describes the behaviour.

use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::{GenericClient, Object};

use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::pg::connect::PgContext;
use crate::registry::Tenant;
use crate::tenant::apply::locked_transaction;

/// Proof that the backend is a Citus coordinator (`Backend::schema_ops`).
#[derive(Debug, Clone, Copy)]
pub struct SchemaOps(pub(crate) ());

/// Schema `$1`: whether it is a distributed schema, its node(s) (`host:port`, comma
/// separated; none while it has no table), its distributed tables. No row: no such schema.
const PLACE: &str = "SELECT ds.colocationid IS NOT NULL, \
        pg_catalog.string_agg(DISTINCT n.nodename || ':' || n.nodeport, ','), \
        count(DISTINCT p.logicalrelid)::int \
      FROM pg_catalog.pg_namespace ns \
      LEFT JOIN pg_catalog.pg_dist_schema ds ON ds.schemaid = ns.oid \
      LEFT JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid \
      LEFT JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid \
      LEFT JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid \
      LEFT JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid \
     WHERE ns.nspname = $1 GROUP BY ds.colocationid";

/// The active primary worker nodes that take shards, `host:port`.
const WORKERS: &str = "SELECT nodename || ':' || nodeport FROM pg_catalog.pg_dist_node \
     WHERE isactive AND noderole = 'primary' AND shouldhaveshards AND groupid <> 0 ORDER BY 1";

/// For each worker: its `synchronous_commit` (as a new session of this role there sees it),
/// then `|` and the roles and databases whose settings there turn it off (`off`, or any
/// spelling PostgreSQL takes for it: `false`, `no`, `0`, in any case). With it off, a
/// commit returns before its WAL is written, and Citus's logical-replication move (`auto`)
/// catches up only to the source's WAL write position: such commits, made just before its
/// switch, are lost (docs/citus.md, docs/citus-auto-move-report.md).
const WORKER_COMMIT_MODES: &str = "SELECT nodename || ':' || nodeport, success, result \
      FROM pg_catalog.run_command_on_workers($q$SELECT \
        pg_catalog.current_setting('synchronous_commit') || '|' || coalesce(( \
          SELECT pg_catalog.string_agg(coalesce('role ' || r.rolname, 'every role') || ' in ' \
                 || coalesce('database ' || d.datname, 'every database'), ', ') \
            FROM pg_catalog.pg_db_role_setting s \
            LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
            LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase \
           WHERE EXISTS (SELECT 1 FROM pg_catalog.unnest(s.setconfig) AS c \
                          WHERE pg_catalog.lower(pg_catalog.split_part(c, '=', 1)) \
                                = 'synchronous_commit' \
                            AND pg_catalog.lower(pg_catalog.btrim(pg_catalog.substr(c, \
                                  pg_catalog.strpos(c, '=') + 1), ' ''')) \
                                IN ('off', 'false', 'no', '0'))), '')$q$) ORDER BY 1";

/// Tables of schema `$1` logical replication cannot move while writes go on: no primary
/// key and no replica identity (FULL, or an index).
const NO_IDENTITY: &str = "SELECT c.relname::text FROM pg_catalog.pg_class c \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace \
     WHERE ns.nspname = $1 AND c.relkind = 'r' AND NOT ( \
           c.relreplident = 'f' \
        OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                                              WHERE i.indrelid = c.oid AND i.indisprimary)) \
        OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                                              WHERE i.indrelid = c.oid AND i.indisreplident))) \
     ORDER BY 1";

/// The size of schema `$1`'s distributed tables, shards included (asks their node).
const SIZE: &str =
    "SELECT coalesce(sum(pg_catalog.citus_total_relation_size(p.logicalrelid)), 0)::bigint \
      FROM pg_catalog.pg_dist_partition p JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace WHERE ns.nspname = $1";

/// Moves schema `$1` to node `$2`:`$3` in mode `$4`. Not in a transaction block.
const MOVE: &str = "SELECT pg_catalog.citus_schema_move(\
        (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)::regnamespace, \
        $2, $3, $4::text::citus.shard_transfer_mode)::text";

/// A node move, checked before anything changes.
#[derive(Debug, Clone)]
pub struct NodeMove {
    pub slug: String,
    pub schema: String,
    /// `host:port` where it is, and where it goes.
    pub from: String,
    pub to: String,
    pub tables: usize,
    /// `block_writes` (the default), or `auto` (logical replication: writes go on) when
    /// asked for (`--online`) and possible.
    pub mode: &'static str,
    /// Why `block_writes` although `--online` was given: the tables without primary key or
    /// replica identity (empty otherwise).
    pub unkeyed: Vec<String>,
}

/// Splits `host:port`.
fn host_port(node: &str) -> Option<(&str, i32)> {
    let (host, port) = node.rsplit_once(':')?;
    let port: i32 = port.parse().ok().filter(|p| (1..=65535).contains(p))?;
    (!host.is_empty()).then_some((host, port))
}

impl SchemaOps {
    /// Whether `schema` is a distributed schema, and its node (`None`: local, or no table).
    async fn place(
        &self,
        conn: &impl GenericClient,
        schema: &str,
    ) -> Result<(bool, Option<String>, usize)> {
        let row = conn
            .query_opt(PLACE, &[&schema])
            .await
            .pg_context("cannot read where Citus placed the tenant")?;
        Ok(match row {
            None => (false, None, 0),
            Some(r) => (r.get(0), r.get(1), r.get::<_, i32>(2).max(0) as usize),
        })
    }

    /// Checks a move of `t` to `node` (exit 2 for each refusal, nothing changed) and decides
    /// its mode: `block_writes` unless `online`. Logical replication (`auto`) lost writes
    /// that arrived at the switch in our tests (docs/citus.md), so it is asked for, never
    /// the default.
    pub async fn plan_move(
        &self,
        conn: &impl GenericClient,
        t: &Tenant,
        node: &str,
        online: bool,
    ) -> Result<NodeMove> {
        let workers: Vec<String> = conn
            .query(WORKERS, &[])
            .await
            .pg_context("cannot read Citus's worker nodes")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if host_port(node).is_none() || !workers.iter().any(|w| w == node) {
            return Err(bad_input(format!(
                "{} is not an active worker node of this Citus cluster (active workers: {}); \
                 nothing was changed (name the node as pg_dist_node does, host:port)",
                node.escape_debug(),
                if workers.is_empty() {
                    "none".to_string()
                } else {
                    workers.join(", ")
                }
            )));
        }
        let (distributed, from, tables) = self.place(conn, &t.schema).await?;
        let from = match (distributed, from) {
            (true, Some(from)) if !from.contains(',') => from,
            (true, Some(split)) => {
                return Err(bad_input(format!(
                    "tenant {}'s tables are on several nodes ({split}), which a distributed \
                     schema should never be; nothing was changed (look at citus_shards)",
                    t.slug
                )))
            }
            (true, None) => {
                return Err(bad_input(format!(
                    "tenant {} has no table yet, so Citus has not placed it on a node; nothing \
                     was changed",
                    t.slug
                )))
            }
            (false, _) => {
                return Err(bad_input(format!(
                    "tenant {} is not distributed: its schema {} is a local schema on the \
                     coordinator; nothing was changed (run tenantctl distribute {} first)",
                    t.slug, t.schema, t.slug
                )))
            }
        };
        if from == node {
            return Err(bad_input(format!(
                "tenant {} already lives on node {node}; nothing was changed",
                t.slug
            )));
        }
        let unkeyed: Vec<String> = match online {
            false => Vec::new(),
            true => conn
                .query(NO_IDENTITY, &[&t.schema])
                .await
                .pg_context("cannot read the tenant's tables' replica identities")?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        let mode = if online && unkeyed.is_empty() {
            "auto"
        } else {
            "block_writes"
        };
        if mode == "auto" {
            self.check_online(conn).await?;
        }
        Ok(NodeMove {
            slug: t.slug.clone(),
            schema: t.schema.clone(),
            from,
            to: node.to_string(),
            tables,
            mode,
            unkeyed,
        })
    }

    /// Refuses (exit 2) logical-replication moves on a cluster where a worker may commit with
    /// `synchronous_commit = off`: Citus loses writes committed there just before its switch
    /// (reproduced: scripts/citus-auto-move-repro.sh). A worker that cannot be asked is
    /// refused too: the move would be a bet.
    pub async fn check_online(&self, conn: &impl GenericClient) -> Result<()> {
        let rows = conn
            .query(WORKER_COMMIT_MODES, &[])
            .await
            .pg_context("cannot read the workers' synchronous_commit")?;
        let unsafe_on: Vec<String> = rows
            .iter()
            .filter_map(|r| async_commit(r.get(0), r.get(1), r.get(2)))
            .collect();
        if unsafe_on.is_empty() {
            return Ok(());
        }
        Err(bad_input(format!(
            "--online is not safe on this cluster: {}; Citus's logical-replication move \
             (auto) loses writes committed with synchronous_commit = off just before its \
             switch (docs/citus.md); nothing was changed. Move without --online (block_writes: \
             writes wait, nothing is lost), or set synchronous_commit to on or local on the \
             workers",
            unsafe_on.join("; ")
        )))
    }

    /// The size of the tenant's tables, shards included, in bytes.
    pub async fn size(&self, conn: &impl GenericClient, schema: &str) -> Result<i64> {
        Ok(conn
            .query_one(SIZE, &[&schema])
            .await
            .pg_context("cannot read the tenant's size")?
            .get(0))
    }

    /// Runs the move on `conn`, outside any transaction block (citus_schema_move refuses
    /// one). It is one statement: it either moved the schema, or failed and left it on its
    /// node (Citus drops the partial copy on the target, see docs/citus.md).
    pub async fn run_move(&self, conn: &Object, m: &NodeMove) -> Result<()> {
        let (host, port) = host_port(&m.to).context("a checked node is host:port")?;
        conn.query_one(MOVE, &[&m.schema, &host, &port, &m.mode])
            .await
            .with_pg_context(|| {
                format!(
                    "citus_schema_move of tenant {} to node {} failed",
                    m.slug, m.to
                )
            })?;
        Ok(())
    }

    /// The tenant's node now (`None` when unknown).
    pub async fn node_of(&self, conn: &impl GenericClient, schema: &str) -> Result<Option<String>> {
        Ok(self.place(conn, schema).await?.1)
    }

    /// Whether `schema` is a distributed schema.
    pub async fn is_distributed(&self, conn: &impl GenericClient, schema: &str) -> Result<bool> {
        Ok(self.place(conn, schema).await?.0)
    }

    /// Makes tenant `t`'s local schema a distributed schema, in one transaction under its
    /// lock: its enabled user triggers disabled around `citus_schema_distribute` (Citus
    /// fires them on the rows it copies: an audit trigger would log every row again) and
    /// restored as they were, then the coordinator's local copy of each table emptied.
    /// Returns its tables and node.
    pub async fn distribute(
        &self,
        conn: &mut Object,
        t: &Tenant,
        deadline: Duration,
    ) -> Result<(usize, Option<String>)> {
        let (tx, exists) = locked_transaction(conn, &t.slug, &t.schema, deadline).await?;
        if !exists {
            anyhow::bail!("its schema {} is missing from the database", t.schema);
        }
        if self.is_distributed(&tx, &t.schema).await? {
            anyhow::bail!("it was distributed meanwhile");
        }
        // Triggers on distributed tables, and changing their state, need this (docs/citus.md).
        tx.batch_execute(
            "SET LOCAL citus.multi_shard_modify_mode = 'sequential'; \
             SET LOCAL citus.enable_unsafe_triggers = on",
        )
        .await
        .pg_context("cannot prepare the transaction for Citus")?;
        let tables = distribute_quietly(&tx, &t.schema).await?;
        let node = self.node_of(&tx, &t.schema).await?;
        tx.commit()
            .await
            .pg_context("cannot commit the distribution")?;
        Ok((tables, node))
    }
}

/// Makes local schema `schema` a distributed schema in the caller's transaction (which
/// allows triggers on distributed tables, `citus.enable_unsafe_triggers`): its enabled
/// user triggers disabled around `citus_schema_distribute` (Citus fires them on the rows it
/// copies to the worker: an audit trigger would log every row again) and set back as they
/// were, then the coordinator's local copy of the rows emptied (the shards hold them).
/// Returns how many tables it has. `distribute`, restore's swap and `move --to` into Citus
/// all go through here.
pub(crate) async fn distribute_quietly(tx: &impl GenericClient, schema: &str) -> Result<usize> {
    let triggers: Vec<(String, String, String)> = tx
        .query(ENABLED_TRIGGERS, &[&schema])
        .await
        .pg_context("cannot list the tables' triggers")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (table, name, _) in &triggers {
        // regclass's text is PostgreSQL's own quoted, schema-qualified name.
        tx.batch_execute(&format!(
            "ALTER TABLE {table} DISABLE TRIGGER {}",
            quote_ident(name)
        ))
        .await
        .with_pg_context(|| format!("cannot disable trigger {name} on {table}"))?;
    }
    tx.execute(
        "SELECT pg_catalog.citus_schema_distribute($1::text::regnamespace)",
        &[&quote_ident(schema)],
    )
    .await
    .with_pg_context(|| format!("citus_schema_distribute of schema {schema} failed"))?;
    for (table, name, state) in &triggers {
        // Back as it was: origin (O), always (A) or replica (R).
        let how = match state.as_str() {
            "A" => "ALWAYS ",
            "R" => "REPLICA ",
            _ => "",
        };
        tx.batch_execute(&format!(
            "ALTER TABLE {table} ENABLE {how}TRIGGER {}",
            quote_ident(name)
        ))
        .await
        .with_pg_context(|| format!("cannot enable trigger {name} on {table} again"))?;
    }
    let tables = tx
        .execute(TRUNCATE_LOCAL, &[&schema])
        .await
        .with_pg_context(|| format!("cannot free the coordinator's copy of {schema}'s rows"))?;
    Ok(tables as usize)
}

/// The enabled user triggers of schema `$1`'s tables: table (regclass text), trigger, and
/// how it fires (`tgenabled`: O origin, A always, R replica).
const ENABLED_TRIGGERS: &str = "SELECT t.tgrelid::pg_catalog.regclass::text, t.tgname::text, \
        t.tgenabled::text \
      FROM pg_catalog.pg_trigger t \
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
     ORDER BY 1, 2";

/// Empties the coordinator's local copy of each table of distributed schema `$1` (the rows
/// live in the shards), a row per table.
const TRUNCATE_LOCAL: &str =
    "SELECT pg_catalog.truncate_local_data_after_distributing_table(c.oid) \
       FROM pg_catalog.pg_class c \
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition";

/// Why worker `node` may commit asynchronously (its `run_command_on_workers` answer), or
/// `None` when it cannot.
fn async_commit(node: String, success: bool, result: String) -> Option<String> {
    if !success {
        return Some(format!(
            "worker {node} could not be asked its synchronous_commit ({result})"
        ));
    }
    let (setting, overrides) = result.split_once('|').unwrap_or((result.as_str(), ""));
    match (setting == "off", overrides.is_empty()) {
        (false, true) => None,
        (true, true) => Some(format!("worker {node} has synchronous_commit = off")),
        (false, false) => Some(format!(
            "worker {node} turns synchronous_commit off for {overrides}"
        )),
        (true, false) => Some(format!(
            "worker {node} has synchronous_commit = off, and turns it off for {overrides}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{async_commit, host_port};

    #[test]
    fn only_workers_that_may_commit_asynchronously_are_named() {
        let w = || "w:1".to_string();
        assert_eq!(async_commit(w(), true, "on|".into()), None);
        assert_eq!(async_commit(w(), true, "local|".into()), None);
        assert_eq!(
            async_commit(w(), true, "off|".into()).unwrap(),
            "worker w:1 has synchronous_commit = off"
        );
        assert_eq!(
            async_commit(w(), true, "on|role app in every database".into()).unwrap(),
            "worker w:1 turns synchronous_commit off for role app in every database"
        );
        assert!(async_commit(w(), false, "connection refused".into())
            .unwrap()
            .contains("could not be asked"));
    }

    #[test]
    fn a_node_is_host_and_port() {
        assert_eq!(host_port("10.0.0.5:5432"), Some(("10.0.0.5", 5432)));
        assert_eq!(host_port("worker-1:6432"), Some(("worker-1", 6432)));
        assert_eq!(host_port("worker-1"), None);
        assert_eq!(host_port(":5432"), None);
        assert_eq!(host_port("w:0"), None);
        assert_eq!(host_port("w:x"), None);
    }
}
