//! `tenantctl usage` on a Citus coordinator: a distributed tenant's tables there are empty
//! shells (their rows live in shards on the workers), so the coordinator's catalog gives
//! their definitions' size and no rows or writes. The backend replaces those numbers with
//! the shards', read on every node in one fan-out. docs/citus.md describes the behaviour.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use deadpool_postgres::GenericClient;

use crate::pg::connect::PgContext;
use crate::registry::{Usage, USAGE_SUMS};
use crate::tenant::citus::Backend;

/// Run on every node (`run_command_on_all_nodes`): per distributed schema, the sums `usage`
/// reads on plain PostgreSQL (`USAGE_SUMS`: sizes, reltuples, n_tup_ins + n_tup_upd +
/// n_tup_del, scans) over the shards placed on THIS node, as one JSON array of
/// `[schema, total, table, index, toast, rows, writes, scans]`. The shards come from Citus's
/// metadata (every node has it), not from their names; a shard counts only on the node of
/// its placement, so an old copy a move left for cleanup is not counted twice. Citus's own
/// connections see the shards in pg_class, which it hides from other applications. As on
/// plain PostgreSQL only tables count (a partitioned table's shard holds no rows itself:
/// its partitions' shards do).
fn node_query() -> String {
    format!(
        "SELECT coalesce(pg_catalog.json_agg(u.a), '[]')::text FROM (\
         SELECT pg_catalog.json_build_array(n.nspname::text, {USAGE_SUMS}) AS a \
           FROM pg_catalog.pg_dist_schema ds \
           JOIN pg_catalog.pg_namespace n ON n.oid = ds.schemaid \
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

/// Sends `node_query` to every node of the cluster at once (the coordinator too, which can
/// hold shards) and names each node that answered with an error.
const ON_ALL_NODES: &str = "SELECT coalesce(n.nodename || ':' || n.nodeport, r.nodeid::text), \
        r.success, r.result \
      FROM pg_catalog.run_command_on_all_nodes($1) r \
      LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid";

/// The numbers of one schema's shards, in `Usage`'s order (total, table, index, toast,
/// rows, writes, scans).
type Sums = [i64; 7];

impl Backend {
    /// How many rows `usage`'s catalog query may stop at: `top` on plain PostgreSQL; all on
    /// Citus, where `shard_usage` replaces the coordinator's numbers after the query and so
    /// changes which tenants are the largest.
    pub fn usage_top(&self, top: Option<i64>) -> Option<i64> {
        if self.is_citus() {
            None
        } else {
            top
        }
    }

    /// On a Citus coordinator, gives each row of `rows` whose schema is a distributed schema
    /// the numbers of its shards (zero without any: no table yet) instead of the
    /// coordinator's empty shells; rows of local schemas keep theirs. Two queries, whatever
    /// the number of tenants: one fans out to every node at once. Nothing on plain
    /// PostgreSQL.
    pub async fn shard_usage(&self, conn: &impl GenericClient, rows: &mut [Usage]) -> Result<()> {
        if !self.is_citus() || rows.is_empty() {
            return Ok(());
        }
        let schemas: Vec<String> = rows.iter().map(|u| u.schema.clone()).collect();
        let distributed = self.distributed(conn, &schemas).await?;
        if distributed.is_empty() {
            return Ok(());
        }
        let shards = read_nodes(conn).await?;
        replace(rows, &distributed, &shards);
        Ok(())
    }
}

/// Each distributed schema's sums over the shards of every node.
async fn read_nodes(conn: &impl GenericClient) -> Result<BTreeMap<String, Sums>> {
    let answers = conn
        .query(ON_ALL_NODES, &[&node_query()])
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

/// One node's answer to `node_query`: `[[schema, total, ..., scans], ...]`.
fn parse_node(json: &str) -> Result<Vec<(String, Sums)>> {
    let rows: Vec<(String, i64, i64, i64, i64, i64, i64, i64)> =
        serde_json::from_str(json).context("not the expected JSON of per-schema sums")?;
    Ok(rows
        .into_iter()
        .map(|(schema, a, b, c, d, e, f, g)| (schema, [a, b, c, d, e, f, g]))
        .collect())
}

/// The shards' numbers for the rows of distributed schemas.
fn replace(rows: &mut [Usage], distributed: &BTreeSet<String>, shards: &BTreeMap<String, Sums>) {
    for u in rows.iter_mut().filter(|u| distributed.contains(&u.schema)) {
        let s = shards.get(&u.schema).copied().unwrap_or_default();
        [
            u.total_bytes,
            u.table_bytes,
            u.index_bytes,
            u.toast_bytes,
            u.rows_estimate,
            u.writes,
            u.scans,
        ] = s;
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
            table_bytes: 1,
            index_bytes: 1,
            toast_bytes: 1,
            rows_estimate: 0,
            writes: 0,
            scans: 3,
            server: "home".to_string(),
            database: "d".to_string(),
        }
    }

    #[test]
    fn distributed_rows_take_the_shards_numbers_and_local_ones_keep_theirs() {
        let json = r#"[["tenant_a", 100, 60, 40, 8, 5, 7, 2]]"#;
        let shards: BTreeMap<String, Sums> = parse_node(json).unwrap().into_iter().collect();
        let distributed = BTreeSet::from(["tenant_a".to_string(), "tenant_empty".to_string()]);
        let mut rows = vec![
            row("tenant_a", 248),
            row("tenant_empty", 0),
            row("local", 500),
        ];
        replace(&mut rows, &distributed, &shards);
        assert_eq!(
            (rows[0].total_bytes, rows[0].rows_estimate, rows[0].writes),
            (100, 5, 7)
        );
        assert_eq!((rows[1].total_bytes, rows[1].scans), (0, 0));
        assert_eq!((rows[2].total_bytes, rows[2].scans), (500, 3));
        assert!(parse_node("[]").unwrap().is_empty());
        assert!(parse_node(r#"[["x", "1"]]"#).is_err());
    }

    #[test]
    fn only_plain_postgresql_may_stop_the_catalog_query_at_top() {
        assert_eq!(Backend::Plain.usage_top(Some(3)), Some(3));
        let citus = Backend::Citus(crate::tenant::citus::Citus {
            distribute: true,
            triggers: false,
        });
        assert_eq!(citus.usage_top(Some(3)), None);
    }
}
