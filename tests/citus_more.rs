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
        serde_json::json!({"server": "home", "node": w1, "tenants": 3, "bytes": on_w1}),
        serde_json::json!({"server": "home", "node": w2, "tenants": 0, "bytes": 0}),
    ];
    nodes.sort_by_key(|n| n["node"].as_str().unwrap().to_string());
    nodes.push(serde_json::json!({"server": null, "node": null, "tenants": 1, "bytes": 0}));
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
    // Prometheus: the same per node, by label.
    let metrics =
        c.db.run(&["status", "--sizes", "--format", "prometheus"])
            .expect(0)
            .stdout
            .clone();
    for line in [
        format!("tenantctl_node_tenants{{node=\"{w1}\",server=\"home\"}} 3"),
        format!("tenantctl_node_tenant_bytes{{node=\"{w1}\",server=\"home\"}} {on_w1}"),
        format!("tenantctl_node_tenant_bytes{{node=\"{w2}\",server=\"home\"}} 0"),
        "tenantctl_node_tenants{node=\"\",server=\"\"} 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
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
        serde_json::json!({"server": "home", "node": w1, "tenants": 1, "bytes": shards["tenant_t001"]})
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
    let run = db.run(&["status", "--sizes", "--format", "prometheus"]);
    run.expect(2).mentions("no citus extension");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(db.snapshot(), before);
}

/// V8: an ordinary migration (DDL among DML: Citus refuses it in one multi-statement
/// query). V9: a `-- no-transaction` file building indexes concurrently;
/// its unique index fails where `cost_center` has duplicates (written so a rerun can start
/// it again: IF NOT EXISTS, and the invalid index a failed build leaves dropped first).
const V8_FLOOR: &str = "ALTER TABLE departments ADD COLUMN floor integer;\n\
UPDATE departments SET floor = 1;\n\
CREATE INDEX departments_created_idx ON departments (created_at);\n\
UPDATE departments SET floor = 2 WHERE cost_center IS NULL;\n";
const V9_CONCURRENTLY: &str = "-- no-transaction\n\
CREATE INDEX CONCURRENTLY IF NOT EXISTS departments_floor_idx ON departments (floor);\n\
DROP INDEX CONCURRENTLY IF EXISTS departments_cost_center_key;\n\
CREATE UNIQUE INDEX CONCURRENTLY departments_cost_center_key ON departments (cost_center);\n";

/// Whether `schema`'s shard of index `index` exists, valid, on the worker holding it.
fn valid_index_on_worker(c: &CitusDb, schema: &str, index: &str) -> bool {
    let node = c.nodes()[schema].clone();
    let worker = &c.workers[c.worker_nodes().iter().position(|w| *w == node).unwrap()];
    let rows = common::query(
        worker,
        // Citus hides shards from pg_class unless asked.
        &format!(
            "SET citus.override_table_visibility = off; \
             SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = '{schema}' AND c.relname LIKE '{index}\\_%'"
        ),
    );
    rows.len() == 1 && rows[0][0].as_deref() == Some("t")
}

/// The versions in `schema`'s migration history.
fn history(c: &CitusDb, schema: &str) -> Vec<String> {
    c.db.query(&format!(
        "SELECT version::text FROM \"{schema}\".refinery_schema_history ORDER BY version"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

#[test]
fn no_transaction_files_build_indexes_concurrently_in_distributed_schemas() {
    let c = CitusDb::new("notx");
    create_tenants(&c.db, 3);
    c.db.query(
        "INSERT INTO tenant_t001.departments (name, cost_center) \
         VALUES ('a', 'dup'), ('b', 'dup')",
    );
    let dir = c.db.migrations_with(
        "notx",
        &[
            ("V8__floor.sql", V8_FLOOR),
            ("V9__concurrently.sql", V9_CONCURRENTLY),
        ],
    );
    let first = c.db.run_with(&dir, &["migrate"]);
    first.expect(1);
    let version = |slug: &str| {
        c.db.scalar(&format!(
            "SELECT version || ' ' || state FROM public.tenants WHERE slug = '{slug}'"
        ))
    };
    let upto9: Vec<String> = (1..=9).map(|v| v.to_string()).collect();
    for slug in ["t000", "t002"] {
        let schema = format!("tenant_{slug}");
        assert_eq!(version(slug), "9 active", "{}", first.all());
        assert_eq!(history(&c, &schema), upto9, "{schema}");
        for index in ["departments_floor_idx", "departments_cost_center_key"] {
            assert!(
                valid_index_on_worker(&c, &schema, index),
                "{schema} {index}"
            );
        }
    }
    // t001: V8 committed, V9 failed on its duplicates: at version 8, the error recorded.
    assert_eq!(version("t001"), "8 failed");
    assert_eq!(history(&c, "tenant_t001"), upto9[..8].to_vec());
    let error = c.db.scalar(
        "SELECT error FROM public.tenant_migrations \
          WHERE slug = 't001' AND version = 9 AND outcome = 'failed'",
    );
    assert!(
        error.contains("line 4") && error.contains("is duplicated"),
        "{error}"
    );
    assert!(
        error.contains("DROP INDEX CONCURRENTLY IF EXISTS"),
        "{error}"
    );
    // The duplicate gone, a rerun starts the file again and completes.
    c.db.query("DELETE FROM tenant_t001.departments WHERE name = 'b'");
    c.db.run_with(&dir, &["migrate"]).expect(0);
    assert_eq!(version("t001"), "9 active");
    assert_eq!(history(&c, "tenant_t001"), upto9);
    assert!(valid_index_on_worker(
        &c,
        "tenant_t001",
        "departments_cost_center_key"
    ));
    // create runs the file too, after the creating transaction.
    c.db.run_with(&dir, &["create", "t003"]).expect(0);
    assert_eq!(version("t003"), "9 active");
    assert_eq!(history(&c, "tenant_t003"), upto9);
    assert!(valid_index_on_worker(
        &c,
        "tenant_t003",
        "departments_floor_idx"
    ));
}

#[test]
fn a_no_transaction_file_may_create_a_checked_trigger_on_citus() {
    let c = CitusDb::new("notx_trigger");
    create_tenants(&c.db, 2);
    let v8 = "-- no-transaction\n\
CREATE FUNCTION departments_upper() RETURNS trigger LANGUAGE plpgsql\n\
SET search_path = pg_catalog, pg_temp AS $$\n\
BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;\n\
CREATE TRIGGER departments_upper BEFORE INSERT ON departments\n\
FOR EACH ROW EXECUTE FUNCTION departments_upper();\n";
    let dir = c.db.migrations_with("trigger", &[("V8__upper.sql", v8)]);
    c.db.run_with(&dir, &["migrate"]).expect(0);
    c.db.query("INSERT INTO tenant_t000.departments (name) VALUES ('oncology')");
    assert_eq!(
        c.db.scalar("SELECT name FROM tenant_t000.departments WHERE name ILIKE 'oncology'"),
        "ONCOLOGY"
    );
    assert_eq!(c.db.scalar("SELECT min(version) FROM public.tenants"), "8");
}

#[test]
fn detach_partition_concurrently_is_refused_on_citus_before_any_tenant_is_touched() {
    let c = CitusDb::new("notx_detach");
    create_tenants(&c.db, 1);
    let v8 = "CREATE TABLE readings (id bigint, at date) PARTITION BY RANGE (at);\n\
CREATE TABLE readings_2026 PARTITION OF readings\n    \
FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');\n";
    let v9 = "-- no-transaction\n\
CREATE INDEX CONCURRENTLY IF NOT EXISTS readings_2026_at ON readings_2026 (at);\n\
ALTER TABLE readings\n    DETACH PARTITION readings_2026 CONCURRENTLY;\n";
    let dir = c.db.migrations_with(
        "detach",
        &[("V8__readings.sql", v8), ("V9__detach.sql", v9)],
    );
    let before = c.db.snapshot();
    c.db.run_with(&dir, &["migrate"])
        .expect(2)
        .mentions("migration V9__detach.sql line 3 (`ALTER TABLE readings`)")
        .mentions("Citus cannot detach a partition concurrently")
        .mentions("nothing was changed");
    assert_eq!(c.db.snapshot(), before);
}
