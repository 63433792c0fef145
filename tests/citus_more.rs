//! More of tenantctl on a Citus coordinator (issue #12): `status --sizes` (the tenants'
//! size per worker node) and `-- no-transaction` migration files in distributed schemas.
//! Needs the cluster of scripts/with-citus.sh (`make test` starts it). docs/citus.md
//! describes the behaviour.

mod common;

use std::collections::BTreeMap;

use common::citus::CitusDb;
use common::{create_tenants, path_str};

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

#[test]
fn status_sizes_gives_each_nodes_tenants_and_bytes_as_the_shards_sum_them() {
    // Three tenants on the first worker; the second is added afterwards and holds none.
    let c = CitusDb::with_workers("sizes", 1);
    create_tenants(&c.db, 3);
    let local = c.db.dir.join("local.toml");
    std::fs::write(&local, "[citus]\ndistribute = false\n").unwrap();
    c.db.run(&["--config", path_str(&local), "create", "plain"])
        .expect(0);
    c.add_worker(1);
    let [w1, w2]: [String; 2] = c.worker_nodes().try_into().unwrap();
    // t000 grows; VACUUM so that autovacuum adds no map to its shard between the reads.
    c.db.query(
        "INSERT INTO tenant_t000.departments (name) SELECT 'dept ' || g \
           FROM generate_series(1, 3000) g",
    );
    c.db.query("VACUUM ANALYZE tenant_t000.departments");
    let shards = shard_bytes(&c);
    let doc =
        c.db.run(&["status", "--sizes", "--format", "json"])
            .expect(0)
            .json();
    let tenants = doc["tenants"].as_array().unwrap();
    let bytes = |slug: &str| tenants.iter().find(|t| t["slug"] == slug).unwrap()["bytes"].clone();
    for i in 0..3 {
        let schema = format!("tenant_t{i:03}");
        assert_eq!(bytes(&format!("t{i:03}")), shards[&schema], "{schema}");
    }
    assert!(bytes("t000").as_i64() > bytes("t001").as_i64(), "{doc}");
    // A local schema has no shard: no node, no size read.
    assert_eq!(bytes("plain"), serde_json::Value::Null);
    let on_w1: i64 = (0..3).map(|i| shards[&format!("tenant_t{i:03}")]).sum();
    assert!(on_w1 > 0);
    // The nodes in order of `host:port`, then the tenants without one.
    let mut nodes = vec![
        serde_json::json!({"node": w1, "tenants": 3, "bytes": on_w1}),
        serde_json::json!({"node": w2, "tenants": 0, "bytes": 0}),
    ];
    nodes.sort_by_key(|n| n["node"].as_str().unwrap().to_string());
    nodes.push(serde_json::json!({"node": null, "tenants": 1, "bytes": 0}));
    assert_eq!(doc["nodes"], serde_json::Value::Array(nodes));
    // Text: a line of tenants and size per node, the empty worker too.
    let text = c.db.run(&["status", "--sizes"]).expect(0).all();
    let line = text
        .lines()
        .find(|l| l.starts_with("by node: "))
        .unwrap_or_else(|| panic!("no by node line: {text}"));
    assert!(line.contains(&format!("{w1}: 3 (")), "{line}");
    assert!(line.contains(&format!("{w2}: 0 (0 bytes)")), "{line}");
    assert!(line.ends_with(", no node: 1 (0 bytes)"), "{line}");
    // The named tenants only.
    let one =
        c.db.run(&["status", "--sizes", "--format", "json", "t001"])
            .expect(0)
            .json();
    let on = |node: &str| {
        let nodes = one["nodes"].as_array().unwrap();
        nodes.iter().find(|n| n["node"] == node).unwrap().clone()
    };
    assert_eq!(
        on(&w1),
        serde_json::json!({"node": w1, "tenants": 1, "bytes": shards["tenant_t001"]})
    );
    assert_eq!(on(&w2)["tenants"], 0);
    // Without the flag, no size is read.
    let json = c.db.run(&["status", "--format", "json"]).expect(0).json();
    assert!(json.get("nodes").is_none() && json["tenants"][0].get("bytes").is_none());
    let text = c.db.run(&["status"]).expect(0).all();
    assert!(!text.contains("by node"), "{text}");
}

#[test]
fn status_sizes_on_plain_postgresql_is_refused_pointing_at_usage() {
    let db = common::TestDb::new("sizes_plain");
    db.run(&["create", "acme"]).expect(0);
    let before = db.snapshot();
    let run = db.run(&["status", "--sizes"]);
    run.expect(2)
        .mentions("no citus extension")
        .mentions("tenantctl usage")
        .mentions("nothing was shown");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    db.run(&["status", "--sizes", "--format", "prometheus"])
        .expect(2)
        .mentions("--sizes is not offered with --format prometheus");
    assert_eq!(db.snapshot(), before);
}
