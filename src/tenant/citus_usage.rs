//! `tenantctl usage` on a Citus coordinator: a distributed tenant's tables there are empty
//! shells (their rows live in shards on the workers), so the coordinator's catalog gives
//! their definitions' size and no rows or writes. The backend leaves those tables out of the
//! catalog query and adds the shards' numbers, read on every node in one fan-out.
//! docs/citus.md describes the behaviour.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use deadpool_postgres::GenericClient;

use crate::pg::connect::PgContext;
use crate::registry::{Usage, UsageCatalog, USAGE_SUMS};
use crate::tenant::citus::Backend;

/// Run on every node (`run_command_on_all_nodes`): per distributed schema among those the
/// coordinator fills in for `%L` (`format`'s quoted literal of a text array), the sums `usage`
/// reads on plain PostgreSQL (`USAGE_SUMS`: sizes, reltuples, n_tup_ins + n_tup_upd +
/// n_tup_del, scans) over the shards placed on THIS node, as one JSON array of
/// `[schema, [total, table, index, toast, rows, writes, scans]]`. The shards come from Citus's
/// metadata (every node has it), not from their names; a shard counts only on the node of
/// its placement, so an old copy a move left for cleanup is not counted twice. Citus's own
/// connections see the shards in pg_class, which it hides from other applications. As on
/// plain PostgreSQL only tables count (a partitioned table's shard holds no rows itself:
/// its partitions' shards do).
fn node_query() -> String {
    format!(
        "SELECT coalesce(pg_catalog.json_agg(u.a), '[]')::text FROM (\
         SELECT pg_catalog.json_build_array(n.nspname::text, \
                  pg_catalog.json_build_array({USAGE_SUMS})) AS a \
           FROM pg_catalog.pg_dist_schema ds \
           JOIN pg_catalog.pg_namespace n ON n.oid = ds.schemaid AND n.nspname = ANY (%L) \
           JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid \
           JOIN pg_catalog.pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid \
           JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = sh.shardid \
            AND pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group) \
           JOIN pg_catalog.pg_class c \
             ON c.oid = pg_catalog.to_regclass(pg_catalog.shard_name(sh.logicalrelid, sh.shardid)) \
            AND c.relkind IN ('r', 'm') \
           LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid \
          GROUP BY n.nspname) u"
    )
}

/// Sends `node_query` (`$1`), for the schemas `$2`, to every node of the cluster at once
/// (the coordinator too, which can hold shards) and names each node that answered with an
/// error.
const ON_ALL_NODES: &str = "SELECT coalesce(n.nodename || ':' || n.nodeport, r.nodeid::text), \
        r.success, r.result \
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format($1, $2::text[])) r \
      LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid";

/// The numbers of one schema's shards, in `Usage`'s order (total, table, index, toast,
/// rows, writes, scans).
type Sums = [i64; 7];

/// The coordinator's tables whose numbers `shard_usage` reads on the nodes: those of the
/// distributed schemas (the same set `node_query` sums the shards of).
const DISTRIBUTED_TABLE: &str = "c.oid IN (SELECT p.logicalrelid::pg_catalog.oid \
      FROM pg_catalog.pg_dist_partition p \
      JOIN pg_catalog.pg_dist_schema ds ON ds.colocationid = p.colocationid)";

impl Backend {
    /// How `usage`'s catalog query reads on this backend. On Citus it leaves out the
    /// distributed schemas' tables (empty shells on the coordinator, their sizing the
    /// query's main cost), which `shard_usage` adds from the shards afterwards, so the query
    /// cannot stop at `top`: it does not know yet which tenants are the largest.
    pub fn usage_catalog(&self, top: Option<i64>) -> UsageCatalog<'static> {
        if self.is_citus() {
            UsageCatalog {
                top: None,
                skip: Some(DISTRIBUTED_TABLE),
            }
        } else {
            UsageCatalog { top, skip: None }
        }
    }

    /// On a Citus coordinator, adds to each row of `rows` (read by the catalog query of
    /// `usage_catalog`) the numbers of its schema's shards, read on every node in one
    /// fan-out whatever the number of tenants (only their shards are sized); local schemas
    /// have none. Nothing on plain PostgreSQL.
    pub async fn shard_usage(&self, conn: &impl GenericClient, rows: &mut [Usage]) -> Result<()> {
        if !self.is_citus() || rows.is_empty() {
            return Ok(());
        }
        let schemas: Vec<&str> = rows.iter().map(|u| u.schema.as_str()).collect();
        let shards = read_nodes(conn, &schemas).await?;
        add(rows, &shards);
        Ok(())
    }
}

/// Each of `schemas` that is distributed: its sums over the shards of every node.
async fn read_nodes(conn: &impl GenericClient, schemas: &[&str]) -> Result<BTreeMap<String, Sums>> {
    let answers = conn
        .query(ON_ALL_NODES, &[&node_query(), &schemas])
        .await
        .pg_context("cannot ask the Citus nodes for the tenants' shards' usage")?;
    let mut sums: BTreeMap<String, Sums> = BTreeMap::new();
    for a in &answers {
        let (node, ok, result): (String, bool, Option<String>) = (a.get(0), a.get(1), a.get(2));
        let result = result.unwrap_or_default();
        if !ok {
            anyhow::bail!(
                "cannot read the tenants' shards' usage on Citus node {node}: {result}; \
                 check that the node is up (SELECT * FROM citus_check_cluster_node_health())"
            );
        }
        for (schema, s) in parse_node(&result)
            .with_context(|| format!("Citus node {node} answered the usage query oddly"))?
        {
            let total = sums.entry(schema).or_default();
            for (t, v) in total.iter_mut().zip(s) {
                *t += v;
            }
        }
    }
    Ok(sums)
}

/// One node's answer to `node_query`: `[[schema, [total, ..., scans]], ...]`.
fn parse_node(json: &str) -> Result<Vec<(String, Sums)>> {
    serde_json::from_str(json).context("not the expected JSON of per-schema sums")
}

/// Adds each schema's shards' numbers to its row.
fn add(rows: &mut [Usage], shards: &BTreeMap<String, Sums>) {
    for u in rows.iter_mut() {
        let Some(s) = shards.get(&u.schema) else {
            continue;
        };
        for (field, v) in [
            &mut u.total_bytes,
            &mut u.table_bytes,
            &mut u.index_bytes,
            &mut u.toast_bytes,
            &mut u.rows_estimate,
            &mut u.writes,
            &mut u.scans,
        ]
        .into_iter()
        .zip(s)
        {
            *field += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(schema: &str, total: i64) -> Usage {
        Usage {
            slug: schema.to_string(),
            schema: schema.to_string(),
            total_bytes: total,
            table_bytes: total,
            index_bytes: 0,
            toast_bytes: 0,
            rows_estimate: 0,
            writes: 0,
            scans: 3,
            server: "home".to_string(),
            database: "d".to_string(),
        }
    }

    #[test]
    fn rows_get_their_schemas_shards_added_and_local_schemas_keep_theirs() {
        let json = r#"[["tenant_a", [100, 60, 40, 8, 5, 7, 2]]]"#;
        let shards: BTreeMap<String, Sums> = parse_node(json).unwrap().into_iter().collect();
        // tenant_a: a materialized view of 16 bytes on the coordinator, its tables' shards.
        let mut rows = vec![row("tenant_a", 16), row("local", 500)];
        add(&mut rows, &shards);
        let a = &rows[0];
        assert_eq!(
            [a.total_bytes, a.table_bytes, a.index_bytes, a.toast_bytes],
            [116, 76, 40, 8]
        );
        assert_eq!([a.rows_estimate, a.writes, a.scans], [5, 7, 5]);
        assert_eq!((rows[1].total_bytes, rows[1].scans), (500, 3));
        assert!(parse_node("[]").unwrap().is_empty());
        assert!(parse_node(r#"[["x", [1, 2]]]"#).is_err());
    }

    #[test]
    fn the_node_query_has_one_placeholder_for_format() {
        // Any other % would be read by format() on the coordinator.
        assert_eq!(node_query().matches('%').count(), 1);
        assert!(node_query().contains("ANY (%L)"));
    }

    #[test]
    fn only_plain_postgresql_reads_every_table_and_stops_at_top() {
        let plain = Backend::Plain.usage_catalog(Some(3));
        assert_eq!((plain.top, plain.skip), (Some(3), None));
        let citus = Backend::Citus(crate::tenant::citus::Citus {
            distribute: true,
            triggers: false,
        })
        .usage_catalog(Some(3));
        assert_eq!((citus.top, citus.skip), (None, Some(DISTRIBUTED_TABLE)));
    }
}
