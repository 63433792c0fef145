//! `tenantctl usage` on a Citus coordinator (issue #12): a distributed tenant's bytes, rows
//! and writes come from its shards on the workers, not from the coordinator's empty tables;
//! a local tenant keeps the plain answer. Needs the cluster of scripts/with-citus.sh
//! (`make test` starts it). docs/citus.md describes the behaviour.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::citus::CitusDb;
use common::{create_tenants, path_str, TestDb};

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

/// The tables of `schema`, as the coordinator lists them.
fn tables(c: &CitusDb, schema: &str) -> Vec<String> {
    c.db.query(&format!(
        "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

/// VACUUM ANALYZE of every table of `schema` (Citus runs it on the shards), one statement
/// a query: exact row estimates for these small tables, and no map for autovacuum to add
/// between two size reads. Returns the rows the schema holds, counted.
fn vacuum_and_count(c: &CitusDb, schema: &str) -> i64 {
    let mut rows = 0;
    for t in tables(c, schema) {
        c.db.query(&format!("VACUUM ANALYZE {schema}.{t}"));
        rows +=
            c.db.scalar(&format!("SELECT count(*) FROM {schema}.{t}"))
                .parse::<i64>()
                .unwrap();
    }
    rows
}

/// Adds `n` departments to `schema` and renames the first `updated` of them (no trigger on
/// departments: one write a row inserted or updated). Each statement in a session of its
/// own: when it ends, its connections to the workers end too, and those flush their
/// statistics.
fn write(c: &CitusDb, schema: &str, n: usize, updated: usize) {
    c.db.query(&format!(
        "INSERT INTO {schema}.departments (name) SELECT 'dept ' || g FROM generate_series(1, {n}) g"
    ));
    c.db.query(&format!(
        "UPDATE {schema}.departments SET cost_center = 'cc' WHERE id <= {updated}"
    ));
}

/// `usage --format json`'s tenants by slug, once every tenant of `writes` shows that many
/// writes: the workers' statistics reach the shared counters a moment after the sessions
/// that wrote end. Gives up after 30 s and returns what it saw last (the caller's
/// assertions then fail saying what differs).
fn usage_once_flushed(
    db: &TestDb,
    writes: &BTreeMap<&str, i64>,
) -> BTreeMap<String, serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = db.run(&["usage", "--format", "json"]).expect(0).json();
        let by_slug: BTreeMap<String, serde_json::Value> = doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["slug"].as_str().unwrap().to_string(), t.clone()))
            .collect();
        let flushed = writes
            .iter()
            .all(|(slug, w)| by_slug.get(*slug).map(|t| t["writes"].as_i64()) == Some(Some(*w)));
        if flushed || Instant::now() > deadline {
            return by_slug;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn usage_on_a_citus_coordinator_reads_distributed_tenants_from_their_shards() {
    let c = CitusDb::new("usage");
    create_tenants(&c.db, 2);
    let local = c.db.dir.join("local.toml");
    std::fs::write(&local, "[citus]\ndistribute = false\n").unwrap();
    c.db.run(&["--config", path_str(&local), "create", "plain"])
        .expect(0);
    write(&c, "tenant_t000", 3000, 5);
    write(&c, "tenant_t001", 40, 7);
    write(&c, "tenant_plain", 10, 2);
    // Every write here is an insert (the migrations' history rows too) or one of the
    // updates: the writes are the rows counted plus the updates.
    let rows: BTreeMap<&str, i64> = [("t000", "tenant_t000"), ("t001", "tenant_t001")]
        .into_iter()
        .chain([("plain", "tenant_plain")])
        .map(|(slug, schema)| (slug, vacuum_and_count(&c, schema)))
        .collect();
    assert_eq!((rows["t000"], rows["t001"]), (3007, 47));
    let updated = BTreeMap::from([("t000", 5), ("t001", 7), ("plain", 2)]);
    let writes: BTreeMap<&str, i64> = rows.iter().map(|(s, r)| (*s, r + updated[s])).collect();
    let usage = usage_once_flushed(&c.db, &writes);
    let shards = shard_bytes(&c);
    for (slug, schema) in [("t000", "tenant_t000"), ("t001", "tenant_t001")] {
        let u = &usage[slug];
        assert_eq!(u["total_bytes"], shards[schema], "{slug}: {u}");
        assert_eq!(
            u["table_bytes"].as_i64().unwrap() + u["index_bytes"].as_i64().unwrap(),
            shards[schema],
            "{slug}: {u}"
        );
        assert_eq!(u["rows_estimate"], rows[slug], "{slug}: {u}");
        assert_eq!(u["writes"], writes[slug], "{slug}: {u}");
        assert!(u["scans"].as_i64().unwrap() > 0, "{slug}: {u}");
    }
    // The local tenant: the coordinator's own catalog, as on plain PostgreSQL.
    let plain = &usage["plain"];
    let catalog = c.db.scalar(
        "SELECT sum(pg_total_relation_size(oid)) FROM pg_class \
          WHERE relnamespace = 'tenant_plain'::regnamespace AND relkind IN ('r', 'm')",
    );
    assert_eq!(plain["total_bytes"].to_string(), catalog, "{plain}");
    assert_eq!(plain["rows_estimate"], rows["plain"], "{plain}");
    assert_eq!(plain["writes"], writes["plain"], "{plain}");
    // The JSON fields are those of plain PostgreSQL.
    let mut keys: Vec<&str> = usage["t000"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "database",
            "index_bytes",
            "rows_estimate",
            "scans",
            "schema",
            "server",
            "slug",
            "table_bytes",
            "toast_bytes",
            "total_bytes",
            "writes"
        ]
    );
}

#[test]
fn usage_top_on_citus_picks_the_largest_by_their_shards() {
    // The coordinator's shells of a distributed tenant are smaller than a local tenant's
    // tables, whatever the shards hold: --top must not pick by them.
    let c = CitusDb::new("usage_top");
    create_tenants(&c.db, 2);
    let local = c.db.dir.join("local.toml");
    std::fs::write(&local, "[citus]\ndistribute = false\n").unwrap();
    c.db.run(&["--config", path_str(&local), "create", "plain"])
        .expect(0);
    write(&c, "tenant_t001", 3000, 0);
    vacuum_and_count(&c, "tenant_t001");
    let doc =
        c.db.run(&["usage", "--top", "1", "--format", "json"])
            .expect(0)
            .json();
    let top = &doc["tenants"];
    assert_eq!(top.as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(top[0]["slug"], "t001", "{doc}");
    assert_eq!(
        top[0]["total_bytes"],
        shard_bytes(&c)["tenant_t001"],
        "{doc}"
    );
    // Text and prometheus: the same numbers, prometheus labelled with the server.
    let text = c.db.run(&["usage", "--top", "1"]).expect(0).all();
    assert!(text.contains("t001") && !text.contains("plain"), "{text}");
    let prom =
        c.db.run(&["usage", "--format", "prometheus"])
            .expect(0)
            .all();
    let total = top[0]["total_bytes"].as_i64().unwrap();
    assert!(
        prom.contains(&format!(
            "tenantctl_tenant_size_bytes{{tenant=\"t001\",server=\"home\",kind=\"total\"}} {total}"
        )),
        "{prom}"
    );
    // A materialized view of a distributed schema stays on the coordinator, with rows: it
    // counts, with the shards.
    write(&c, "tenant_t000", 50, 0);
    vacuum_and_count(&c, "tenant_t000");
    c.db.query(
        "CREATE MATERIALIZED VIEW tenant_t000.names AS SELECT name FROM tenant_t000.departments",
    );
    let view: i64 =
        c.db.scalar("SELECT pg_total_relation_size('tenant_t000.names')")
            .parse()
            .unwrap();
    assert!(view > 0);
    let doc =
        c.db.run(&["usage", "t000", "--format", "json"])
            .expect(0)
            .json();
    assert_eq!(
        doc["tenants"][0]["total_bytes"],
        shard_bytes(&c)["tenant_t000"] + view,
        "{doc}"
    );
}

#[test]
fn usage_of_tenants_on_another_server_that_is_a_citus_coordinator_reads_their_shards() {
    let home = TestDb::new("usage_far");
    let c = CitusDb::new("usage_far");
    c.serve_as_c(&home, "");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "far", "--server", "c"]).expect(0);
    write(&c, "tenant_far", 500, 3);
    let rows = vacuum_and_count(&c, "tenant_far");
    assert_eq!(rows, 507);
    let usage = usage_once_flushed(&home, &BTreeMap::from([("far", rows + 3)]));
    let far = &usage["far"];
    assert_eq!(far["server"], "c", "{far}");
    assert_eq!(far["total_bytes"], shard_bytes(&c)["tenant_far"], "{far}");
    assert_eq!(far["rows_estimate"], rows, "{far}");
    assert_eq!(far["writes"], rows + 3, "{far}");
    // Home is plain PostgreSQL: its tenant keeps its catalog's numbers.
    let catalog = home.scalar(
        "SELECT sum(pg_total_relation_size(oid)) FROM pg_class \
          WHERE relnamespace = 'tenant_h1'::regnamespace AND relkind IN ('r', 'm')",
    );
    assert_eq!(usage["h1"]["total_bytes"].to_string(), catalog);
}

#[test]
fn usage_when_a_citus_node_cannot_be_reached_names_it_and_shows_nothing() {
    let c = CitusDb::new("usage_down");
    create_tenants(&c.db, 2);
    // The second worker's port changed in this database's metadata to one nobody listens
    // on: as if the node were down.
    let node = c.db.scalar(&format!(
        "SELECT nodeid FROM pg_dist_node WHERE nodeport = {}",
        common::citus::worker_ports()[1]
    ));
    c.db.query(&format!("SELECT citus_update_node({node}, '127.0.0.1', 1)"));
    let before = c.db.snapshot();
    let run = c.db.run(&["usage"]);
    run.expect(1).mentions(
        "cannot read the tenants' shards' usage on Citus node 127.0.0.1:1: failed to connect \
         to 127.0.0.1:1; check that the node is up",
    );
    assert_eq!(run.stdout, "", "no partial table");
    assert_eq!(c.db.snapshot(), before);
}
