//! `tenantctl rebalance --server NAME` (docs/citus.md, "rebalance"): home is a plain
//! PostgreSQL database holding the registry, server `c` a Citus coordinator's database
//! (scripts/with-citus.sh) whose tenants were created on its first worker before the second
//! was added. The rebalance runs on c's coordinator: the moving tenants' locks are taken
//! there (where the tenants live), the moves recorded on home naming server c. Refusals:
//! a plain home without --server, a plain or unknown --server (exit 2, nothing changed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use common::citus::CitusDb;
use common::*;

/// A plain home with `[servers.c]` = a Citus coordinator's database (one worker active),
/// four tenants created there through home, then the second worker added.
fn home_and_unbalanced_citus(label: &str) -> (TestDb, CitusDb) {
    let home = TestDb::new(label);
    let c = CitusDb::with_workers(label, 1);
    c.serve_as_c(&home, "");
    home.run(&["create", "t000", "t001", "t002", "t003", "--server", "c"])
        .expect(0);
    c.add_worker(1);
    (home, c)
}

/// Home's tenant_moves, one line per move by slug: `from_node to_node mode job from_server
/// to_server from_database to_database`.
fn recorded(home: &TestDb) -> BTreeMap<String, String> {
    home.query(
        "SELECT slug, concat_ws(' ', from_node, to_node, transfer_mode, rebalance_job, \
                from_server, to_server, from_database, to_database) \
           FROM public.tenant_moves ORDER BY id",
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect()
}

fn jobs(c: &CitusDb) -> String {
    c.db.scalar("SELECT count(*) FROM pg_dist_background_job")
}

#[test]
fn rebalance_server_moves_the_tenants_of_that_citus_server_and_records_them_on_home() {
    let (home, c) = home_and_unbalanced_citus("far_rebal");
    let [first, second] = [c.worker_nodes()[0].clone(), c.worker_nodes()[1].clone()];
    let run = home.run(&["rebalance", "--server", "c", "--format", "json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["state"], "finished", "{report}");
    assert_eq!(report["tenant_locks"], true, "{report}");
    assert_eq!(
        (report["server"].as_str(), report["database"].as_str()),
        (Some("c"), Some(c.db.name.as_str())),
        "{report}"
    );
    let job = report["job_id"].as_i64().unwrap();
    let moved: BTreeSet<String> = c
        .nodes()
        .into_iter()
        .filter(|(_, node)| *node == second)
        .map(|(schema, _)| schema)
        .collect();
    assert!(!moved.is_empty(), "nothing moved: {report}");
    let tenants = report["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), moved.len(), "{report}");
    let records = recorded(&home);
    for t in tenants {
        // A registered tenant of c (its slug known through home's registry), moved, recorded.
        let slug = t["slug"].as_str().unwrap_or_else(|| panic!("no slug: {t}"));
        assert!(moved.contains(t["schema"].as_str().unwrap()), "{t}");
        assert_eq!(
            (t["from"].as_str(), t["to"].as_str(), t["outcome"].as_str()),
            (Some(first.as_str()), Some(second.as_str()), Some("moved")),
            "{t}"
        );
        assert!(t["move_id"].is_i64(), "{t}");
        assert_eq!(
            records.get(slug).map(String::as_str),
            Some(
                format!(
                    "{first} {second} block_writes {job} c c {} {}",
                    c.db.name, c.db.name
                )
                .as_str()
            ),
            "{records:?}"
        );
    }
    assert_eq!(records.len(), moved.len(), "{records:?}");
    // The tenants per node are c's, and home's registry still places them on c.
    assert_eq!(
        report["nodes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        4,
        "{report}"
    );
    assert_eq!(
        home.scalar("SELECT count(*) FROM public.tenants WHERE server_name = 'c'"),
        "4"
    );
    // Nothing of the registry was written on the coordinator.
    assert_eq!(
        c.db.scalar("SELECT to_regclass('public.tenant_moves') IS NULL"),
        "t"
    );
}

/// A psql session on c's coordinator holding every tenant's lock (kept until dropped).
fn hold_all_tenant_locks(c: &CitusDb) -> Child {
    let class = tenantctl::registry::locks::LOCK_CLASS;
    let mut sql = String::new();
    for schema in c.db.tenant_schemas() {
        sql.push_str(&format!(
            "SELECT pg_advisory_lock({class}, hashtext('{schema}'));\n"
        ));
    }
    let mut holder = psql_session(&c.db);
    let stdin = holder.stdin.as_mut().unwrap();
    stdin.write_all(sql.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while c.db.scalar(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND classid = {class}::bigint::oid \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )) != "4"
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "locks never held"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    holder
}

#[test]
fn rebalance_server_takes_the_tenants_locks_on_that_coordinator() {
    let (home, c) = home_and_unbalanced_citus("far_rebal_lock");
    let before = c.nodes();
    let mut holder = hold_all_tenant_locks(&c);
    home.run(&["--lock-timeout", "800", "rebalance", "--server", "c"])
        .expect(1)
        .mentions(
            "cannot start the rebalance; no job was started and nothing was moved: tenant t00",
        );
    assert_eq!(jobs(&c), "0", "a rebalance job was started");
    assert_eq!(c.nodes(), before);
    assert!(recorded(&home).is_empty());
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

#[test]
fn rebalance_without_server_on_a_plain_home_is_refused_and_names_server() {
    let (home, c) = home_and_unbalanced_citus("far_rebal_home");
    let before = (home.snapshot(), c.nodes());
    home.run(&["rebalance"])
        .expect(2)
        .mentions("has no citus extension; nothing was moved")
        .mentions("--server NAME rebalances the Citus coordinator of a [servers.NAME]");
    assert_eq!((home.snapshot(), c.nodes()), before);
    assert_eq!(jobs(&c), "0");
}

#[test]
fn rebalance_server_naming_a_plain_or_unknown_server_is_refused() {
    let home = TestDb::new("far_rebal_plain");
    let p = SecondDb::new("far_rebal_plain");
    home.config(&p.server_toml("p"));
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "p1", "--server", "p"]).expect(0);
    let before = (
        home.snapshot(),
        p.scalar("SELECT count(*) FROM pg_namespace"),
    );
    home.run(&["rebalance", "--server", "p"])
        .expect(2)
        .mentions(&format!(
            "server p (database {}) has no citus extension; nothing was moved",
            p.name
        ));
    home.run(&["rebalance", "--server", "nope"])
        .expect(2)
        .mentions("rebalance --server: nothing was moved: unknown server 'nope'");
    assert_eq!(
        (
            home.snapshot(),
            p.scalar("SELECT count(*) FROM pg_namespace")
        ),
        before
    );
}
