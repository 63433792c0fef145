//! `status --sizes` with tenants on a `[servers.NAME]` that is a Citus coordinator
//! (docs/citus.md, "Size per node"): home is a plain PostgreSQL database holding the
//! registry, server `c` a Citus coordinator's database with two workers
//! (scripts/with-citus.sh). Each coordinator the tenants live on is asked for their sizes;
//! `--sizes` is refused only when none is one.

mod common;

use std::collections::BTreeMap;

use common::citus::{home_and_citus, CitusDb};

/// Bytes of each tenant schema's shards on `c`, by schema, as `citus_shards` gives them.
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
fn status_sizes_reads_the_tenants_on_a_citus_server_from_its_coordinator() {
    let (home, c) = home_and_citus("fs_sizes", "");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "a1", "a2", "--server", "c"]).expect(0);
    // a1 grows; VACUUM so that autovacuum adds no map to its shard between the reads.
    c.db.query(
        "INSERT INTO tenant_a1.departments (name) SELECT 'dept ' || g \
           FROM generate_series(1, 3000) g",
    );
    c.db.query("VACUUM ANALYZE tenant_a1.departments");
    let shards = shard_bytes(&c);
    let placed = c.nodes();
    let mut workers = c.worker_nodes();
    workers.sort();
    assert_eq!(placed.len(), 2, "{placed:?}");

    let doc = home
        .run(&["status", "--sizes", "--format", "json"])
        .expect(0)
        .json();
    let tenants = doc["tenants"].as_array().unwrap();
    let tenant = |slug: &str| tenants.iter().find(|t| t["slug"] == slug).unwrap().clone();
    for slug in ["a1", "a2"] {
        let schema = format!("tenant_{slug}");
        assert_eq!(tenant(slug)["bytes"], shards[&schema], "{schema}");
        assert_eq!(tenant(slug)["node"], placed[&schema].as_str(), "{schema}");
    }
    assert!(tenant("a1")["bytes"].as_i64() > tenant("a2")["bytes"].as_i64());
    // Home is plain: no node, no size.
    assert_eq!(tenant("h1")["bytes"], serde_json::Value::Null);
    // Each of c's workers, with c's tenants on it and their bytes; then h1 without a node.
    let on = |w: &str| -> (usize, i64) {
        let mine: Vec<&String> = placed
            .iter()
            .filter(|(_, n)| *n == w)
            .map(|(s, _)| s)
            .collect();
        (mine.len(), mine.iter().map(|s| shards[*s]).sum())
    };
    let mut want: Vec<serde_json::Value> = workers
        .iter()
        .map(|w| {
            let (n, bytes) = on(w);
            serde_json::json!({"server": "c", "node": w, "tenants": n, "bytes": bytes})
        })
        .collect();
    want.push(serde_json::json!({"server": null, "node": null, "tenants": 1, "bytes": 0}));
    assert_eq!(doc["nodes"], serde_json::Value::Array(want), "{doc}");

    // Text: c's workers named with their server.
    let text = home.run(&["status", "--sizes"]).expect(0).all();
    let line = text
        .lines()
        .find(|l| l.starts_with("by node: "))
        .unwrap_or_else(|| panic!("no by node line: {text}"));
    for w in &workers {
        let (n, _) = on(w);
        assert!(line.contains(&format!("{w} (c): {n} (")), "{line}");
    }
    assert!(line.ends_with(", no node: 1 (0 bytes)"), "{line}");

    // Prometheus: by node and server.
    let metrics = home
        .run(&["status", "--sizes", "--format", "prometheus"])
        .expect(0)
        .stdout
        .clone();
    for w in &workers {
        let (n, bytes) = on(w);
        for line in [
            format!("tenantctl_node_tenants{{node=\"{w}\",server=\"c\"}} {n}"),
            format!("tenantctl_node_tenant_bytes{{node=\"{w}\",server=\"c\"}} {bytes}"),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} missing:\n{metrics}"
            );
        }
    }

    // One tenant named: its bytes, and only it counted.
    let one = home
        .run(&["status", "--sizes", "--format", "json", "a2"])
        .expect(0)
        .json();
    assert_eq!(one["tenants"][0]["bytes"], shards["tenant_a2"]);
    let counted: i64 = one["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["tenants"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 1, "{one}");
}

#[test]
fn status_sizes_is_refused_when_no_picked_tenant_lives_on_a_citus_coordinator() {
    let (home, _c) = home_and_citus("fs_refused", "");
    home.run(&["create", "h1", "h2"]).expect(0);
    let before = home.snapshot();
    for args in [
        &["status", "--sizes"][..],
        &["status", "--sizes", "--format", "json"],
        &["status", "--sizes", "--format", "prometheus"],
    ] {
        let run = home.run(args);
        run.expect(2)
            .mentions("no citus extension")
            .mentions("tenantctl usage")
            .mentions("nothing was shown");
        assert!(
            run.stdout.is_empty() || run.json()["exit_code"] == 2,
            "{}",
            run.stdout
        );
        assert_eq!(home.snapshot(), before);
    }
    // With a tenant on c, naming only home's is still refused.
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    let before_named = home.snapshot();
    let run = home.run(&["status", "--sizes", "h1"]);
    run.expect(2).mentions("no citus extension");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(home.snapshot(), before_named);
    assert_ne!(before, before_named);
}

#[test]
fn status_sizes_names_a_citus_server_that_cannot_be_read_and_shows_the_rest() {
    let (home, _c) = home_and_citus("fs_gone", "");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    // c's coordinator goes away (a port nothing listens on).
    home.config("[servers.c]\nurl = \"postgres://postgres@127.0.0.1:1/postgres\"\n");
    let run = home.run(&[
        "--connect-timeout",
        "1",
        "status",
        "--sizes",
        "--format",
        "json",
    ]);
    run.expect(1)
        .mentions("server c (database")
        .mentions("their sizes");
    let doc = run.json();
    let tenants = doc["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2, "{doc}");
    for t in tenants {
        assert_eq!(t["bytes"], serde_json::Value::Null, "{t}");
    }
}
