//! `tenantctl status --sizes` on a Citus coordinator when a worker cannot be reached
//! (issue #12): Citus's `citus_shard_sizes()` counts that worker's shards as 0 bytes with no
//! error; status must instead name the worker, leave its tenants' sizes unknown (null), not
//! claim 0 bytes for it, exit 1, and still show the rest. Needs the cluster of
//! scripts/with-citus.sh. docs/citus.md describes the behaviour.

mod common;

use std::collections::BTreeMap;

use common::citus::{worker_ports, CitusDb};
use common::create_tenants;

/// Bytes of each tenant schema's shards, by schema, as Citus's `citus_shards` view gives
/// them (it asks the workers).
fn shard_bytes(c: &CitusDb) -> BTreeMap<String, i64> {
    c.db.query(
        "SELECT split_part(table_name::text, '.', 1), sum(shard_size)::bigint FROM citus_shards \
          WHERE citus_table_type = 'schema' GROUP BY 1",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap(),
            r[1].clone().unwrap().parse().unwrap(),
        )
    })
    .collect()
}

/// Points worker `i`'s entry in this test database's Citus metadata at `port` (1: nobody
/// listens there, as if the worker were down). Only this database's metadata (and its
/// copies on the workers, in the same database) changes: other tests are not affected.
fn point_worker_at(c: &CitusDb, node_id: &str, port: u16) {
    c.db.query(&format!(
        "SELECT citus_update_node({node_id}, '127.0.0.1', {port})"
    ));
}

#[test]
fn status_sizes_with_a_worker_down_names_it_and_leaves_its_sizes_unknown() {
    let c = CitusDb::new("down_worker");
    create_tenants(&c.db, 6);
    let [w1, w2]: [String; 2] = c.worker_nodes()[..2].to_vec().try_into().unwrap();
    let placed = c.nodes();
    let slugs_on = |node: &str| -> Vec<String> {
        placed
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(s, _)| s.trim_start_matches("tenant_").to_string())
            .collect()
    };
    let (on_w1, on_w2) = (slugs_on(&w1), slugs_on(&w2));
    assert!(
        !on_w1.is_empty() && !on_w2.is_empty(),
        "tenants on both workers: {placed:?}"
    );
    let shards = shard_bytes(&c);
    let port = worker_ports()[1];
    let node_id = c.db.scalar(&format!(
        "SELECT nodeid FROM pg_dist_node WHERE nodeport = {port}"
    ));
    point_worker_at(&c, &node_id, 1);
    let down = "127.0.0.1:1";
    let before = c.db.snapshot();

    // JSON: the reachable worker's tenants with their bytes, the down one's null.
    let run = c.db.run(&["status", "--sizes", "--format", "json"]);
    run.expect(1).mentions(&format!(
        "cannot read the tenants' sizes on Citus node {down} (server home): failed to connect"
    ));
    run.mentions("check that the node is up");
    let doc = run.json();
    let tenants = doc["tenants"].as_array().unwrap();
    let tenant = |slug: &str| tenants.iter().find(|t| t["slug"] == slug).unwrap().clone();
    for slug in &on_w1 {
        assert_eq!(
            tenant(slug)["bytes"],
            shards[&format!("tenant_{slug}")],
            "{slug}"
        );
    }
    for slug in &on_w2 {
        let t = tenant(slug);
        assert_eq!(t["node"], down, "{t}");
        assert_eq!(t["bytes"], serde_json::Value::Null, "not 0: {t}");
    }
    let nodes = doc["nodes"].as_array().unwrap();
    let node = |n: &str| nodes.iter().find(|x| x["node"] == n).unwrap().clone();
    let w1_bytes: i64 = on_w1.iter().map(|s| shards[&format!("tenant_{s}")]).sum();
    assert_eq!(node(&w1)["bytes"], w1_bytes, "{doc}");
    assert_eq!(node(down)["tenants"], on_w2.len(), "{doc}");
    assert_eq!(node(down)["bytes"], serde_json::Value::Null, "{doc}");

    // Text: the down worker's size shown as unknown, the other's given.
    let run = c.db.run(&["status", "--sizes"]);
    run.expect(1).mentions(&format!("Citus node {down}"));
    let text = run.all();
    let line = text
        .lines()
        .find(|l| l.starts_with("by node: "))
        .unwrap_or_else(|| panic!("no by node line: {text}"));
    assert!(
        line.contains(&format!("{down}: {} (size unknown)", on_w2.len())),
        "{line}"
    );
    assert!(line.contains(&format!("{w1}: {} (", on_w1.len())), "{line}");

    // Prometheus: no bytes sample for the down worker (not 0).
    let run = c.db.run(&["status", "--sizes", "--format", "prometheus"]);
    run.expect(1).mentions(&format!("Citus node {down}"));
    assert!(
        run.stdout.lines().any(|l| l
            == format!(
                "tenantctl_node_tenants{{node=\"{down}\",server=\"home\"}} {}",
                on_w2.len()
            )),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout
            .lines()
            .any(|l| l.starts_with(&format!("tenantctl_node_tenant_bytes{{node=\"{down}\""))),
        "{}",
        run.stdout
    );
    assert_eq!(c.db.snapshot(), before, "status changes nothing");

    // The worker back: every size given again, exit 0.
    point_worker_at(&c, &node_id, port);
    let doc =
        c.db.run(&["status", "--sizes", "--format", "json"])
            .expect(0)
            .json();
    assert!(
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["bytes"].is_i64()),
        "{doc}"
    );
}
