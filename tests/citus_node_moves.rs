//! Moves between Citus worker nodes beside other work (docs/citus.md): `move --node` holds
//! the tenant's lock as tenantctl's, so a `migrate` that meets it keeps waiting for the move,
//! even past its --lock-timeout, instead of failing the tenant; and logical-replication
//! moves (`--online`) are refused where a worker may commit asynchronously. Needs the Citus
//! cluster (scripts/with-citus.sh).

mod common;

use std::io::Write;
use std::time::Duration;

use common::citus::{with_port, worker_ports, CitusDb};
use common::{psql_session, spawn_tenantctl, wait_until};

const V8: &str = "CREATE TABLE after_move (id int PRIMARY KEY);";

#[test]
fn a_migrate_meeting_a_node_move_waits_for_it_past_its_lock_timeout() {
    let c = CitusDb::new("move_lock");
    c.db.run(&["create", "acme"]).expect(0);
    let from = c.nodes()["tenant_acme"].clone();
    let to = c.worker_nodes().into_iter().find(|w| *w != from).unwrap();
    let dir = c.db.migrations_with("v8", &[("V8__after_move.sql", V8)]);
    // Held from psql: a lock on one of the tenant's tables, so the move, holding the
    // tenant's lock, waits in citus_schema_move for as long as this session lasts.
    let mut holder = psql_session(&c.db);
    let stdin = holder.stdin.as_mut().unwrap();
    stdin
        .write_all(b"BEGIN; LOCK TABLE tenant_acme.employees IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    stdin.flush().unwrap();
    wait_until("psql locks the tenant's table", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
              WHERE r.relname = 'employees' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == "1"
    });
    let mover = spawn_tenantctl(&c.db, &["move", "acme", "--node", &to]);
    wait_until("the move waits for the table", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND wait_event_type = 'Lock' AND query LIKE '%citus_schema_move%'",
        ) == "1"
    });
    let migrate = spawn_tenantctl(
        &c.db,
        &[
            "--migrations",
            common::path_str(&dir),
            "--lock-timeout",
            "300",
            "migrate",
        ],
    );
    wait_until("migrate waits for the tenant's lock", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND objsubid = 2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == "1"
    });
    // Well past migrate's --lock-timeout: it still waits (the tenant `migrating`), the
    // tenant is not failed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        c.db.scalar("SELECT state || ' ' || version FROM public.tenants WHERE slug = 'acme'"),
        "migrating 7"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    common::finish_within(mover, Duration::from_secs(120)).expect(0);
    common::finish_within(migrate, Duration::from_secs(120))
        .expect(0)
        .mentions("1 applied");
    assert_eq!(c.nodes()["tenant_acme"], to);
    assert_eq!(
        c.db.scalar("SELECT version FROM public.tenants WHERE slug = 'acme'"),
        "8"
    );
}

#[test]
fn online_moves_are_refused_where_a_worker_commits_asynchronously() {
    let c = CitusDb::new("online_async");
    c.db.run(&["create", "acme"]).expect(0);
    let from = c.nodes()["tenant_acme"].clone();
    let to = c.worker_nodes().into_iter().find(|w| *w != from).unwrap();
    let role = format!("app_{}", c.db.name);
    c.db.query(&format!("CREATE ROLE \"{role}\" LOGIN"));
    // Set on each worker directly, for this test's database only: the role's commits there
    // return before their WAL is written. Spelled `FALSE` on one worker (PostgreSQL takes
    // it for off, and stores it as written).
    for (port, off) in worker_ports().into_iter().zip(["off", "FALSE"]) {
        common::query(
            &with_port(&c.db.url, port),
            &format!(
                "ALTER ROLE \"{role}\" IN DATABASE \"{}\" SET synchronous_commit = {off}",
                c.db.name
            ),
        );
    }
    let before = c.db.snapshot();
    let why = format!(
        "turns synchronous_commit off for role {role} in database {}",
        c.db.name
    );
    for args in [
        vec!["move", "acme", "--node", &to, "--online"],
        vec!["move", "acme", "--node", &to, "--online", "--dry-run"],
        vec!["rebalance", "--online"],
    ] {
        let run = c.db.run(&args);
        run.expect(2)
            .mentions("--online is not safe on this cluster")
            .mentions("nothing was changed")
            .mentions("Move without --online");
        for w in c.worker_nodes() {
            run.mentions(&format!("worker {w} {why}"));
        }
    }
    assert_eq!(c.nodes()["tenant_acme"], from);
    assert_eq!(c.db.snapshot(), before);
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM pg_dist_background_job"),
        "0"
    );
    // Blocking writes is safe whatever the workers do.
    c.db.run(&["move", "acme", "--node", &to]).expect(0);
    assert_eq!(c.nodes()["tenant_acme"], to);
}

#[test]
fn online_moves_are_refused_when_a_worker_cannot_be_asked() {
    let c = CitusDb::new("online_unasked");
    c.db.run(&["create", "acme"]).expect(0);
    let from = c.nodes()["tenant_acme"].clone();
    let to = c.worker_nodes().into_iter().find(|w| *w != from).unwrap();
    let port = to.rsplit(':').next().unwrap().to_string();
    let node_id = c.db.scalar(&format!(
        "SELECT nodeid FROM pg_dist_node WHERE nodeport = {port}"
    ));
    // In this test's database only (Citus's metadata there): the target worker, the one
    // acme is not on, does not answer.
    c.db.query(&format!(
        "SELECT citus_update_node({node_id}, '127.0.0.1', 1)"
    ));
    let before = c.db.snapshot();
    c.db.run(&["move", "acme", "--node", "127.0.0.1:1", "--online"])
        .expect(2)
        .mentions("--online is not safe on this cluster")
        .mentions("worker 127.0.0.1:1 could not be asked its synchronous_commit")
        .mentions("nothing was changed");
    assert_eq!(c.db.snapshot(), before);
    assert_eq!(c.nodes()["tenant_acme"], from);
    c.db.query(&format!(
        "SELECT citus_update_node({node_id}, '127.0.0.1', {port})"
    ));
}
