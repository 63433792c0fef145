//! Faults against a real server: restart mid-run, a server that stays away, a long
//! transaction holding a lock, Ctrl-C, too few connections, and a drop bigger than the lock
//! table. These tests restart or stop the shared server, so they run one at a time (and
//! cargo runs test binaries one after another).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const SLOW_V8: (&str, &str) = (
    "V8__slow.sql",
    "SELECT pg_sleep(0.1);\nALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;",
);

fn as_server_user(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn restart_server() {
    pg_ctl(&["restart", "-m", "fast"]);
}

fn pg_ctl(args: &[&str]) {
    let bin = std::env::var("TENANTCTL_TEST_PG_BIN").expect("run through make test");
    let data = std::env::var("TENANTCTL_TEST_PG_DATA").unwrap();
    let log = std::path::Path::new(&data)
        .parent()
        .unwrap()
        .join("server.log");
    let status = as_server_user(&format!("{bin}/pg_ctl"))
        .args(args)
        .args(["-w", "-D", &data, "-l", log.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {args:?} failed");
}

/// The shared server, stopped until this is dropped (even when the test fails).
struct StoppedServer;

impl StoppedServer {
    fn stop() -> StoppedServer {
        pg_ctl(&["stop", "-m", "fast"]);
        StoppedServer
    }
}

impl Drop for StoppedServer {
    fn drop(&mut self) {
        pg_ctl(&["start"]);
    }
}

/// Waits until `n` tenants are at version 7: the run is under way.
fn wait_for_progress(db: &TestDb, n: usize) {
    for _ in 0..400 {
        let done: usize = db
            .scalar("SELECT count(*) FROM public.tenants WHERE version = 8")
            .parse()
            .unwrap();
        if done >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the run never got going");
}

/// migrate in the background with the slow V8, two tenants at a time, JSON on stdout.
fn spawn_slow_migrate(
    db: &TestDb,
    dir: &std::path::Path,
    connect_timeout: &str,
) -> std::process::Child {
    spawn_tenantctl(
        db,
        &[
            "--format",
            "json",
            "--migrations",
            path_str(dir),
            "--connect-timeout",
            connect_timeout,
            "migrate",
            "--concurrency",
            "2",
        ],
    )
}

#[test]
fn a_server_restart_mid_run_is_waited_for_and_the_run_completes() {
    let _g = serial();
    let db = TestDb::new("restart");
    create_tenants(&db, 40);
    let dir = db.migrations_with("slow", &[SLOW_V8]);
    let child = spawn_slow_migrate(&db, &dir, "60");
    wait_for_progress(&db, 2);
    restart_server();
    let out = finish_within(child, Duration::from_secs(120));
    out.expect(0)
        .mentions("the server went away")
        .mentions("the server is back");
    let summary = &out.json()["summary"];
    assert_eq!(
        (summary["failed"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(0)),
        "{}",
        out.all()
    );
    assert_eq!(at_eight(&db), (40, 40));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state <> 'active' OR version <> 8"),
        "0"
    );
}

#[test]
fn a_server_that_stays_away_ends_the_run_by_the_connect_timeout() {
    let _g = serial();
    let db = TestDb::new("gone");
    create_tenants(&db, 40);
    let dir = db.migrations_with("slow", &[SLOW_V8]);
    let child = spawn_slow_migrate(&db, &dir, "2");
    wait_for_progress(&db, 2);
    let server = StoppedServer::stop();
    let stopped = Instant::now();
    let out = finish_within(child, Duration::from_secs(60));
    let took = stopped.elapsed();
    out.expect(1)
        .mentions("did not come back within 2 s (--connect-timeout)");
    assert!(
        took < Duration::from_secs(20),
        "the run took {took:?} to give up"
    );
    let doc = out.json();
    let tenants = doc["tenants"].as_array().unwrap();
    let (mut applied, mut skipped, mut cut) = (0, 0, 0);
    for t in tenants {
        match t["outcome"].as_str().unwrap() {
            "applied" => applied += 1,
            "skipped" => {
                assert_eq!(t["error"], "not started: the server went away");
                skipped += 1
            }
            "failed" => {
                let e = t["error"].as_str().unwrap();
                assert!(e.contains("rolled back, nothing was applied"), "{e}");
                cut += 1
            }
            other => panic!("{other}: {t}"),
        }
    }
    assert!(skipped > 0 && applied + skipped + cut == 40, "{doc}");
    drop(server);
    // Nothing half-applied; the next run finishes what this one could not.
    assert_eq!(at_eight(&db).0, applied);
    db.run_with(&dir, &["migrate"]).expect(0);
    assert_eq!(at_eight(&db), (40, 40));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state <> 'active'"),
        "0"
    );
}

#[test]
fn a_long_transaction_fails_only_its_tenant_with_lock_timeout() {
    let _g = serial();
    let db = TestDb::new("locktimeout");
    create_tenants(&db, 4);
    // The application holds a read lock on one tenant's table in an open transaction.
    let mut holder = psql_session(&db);
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"BEGIN; LOCK TABLE tenant_t001.wellness_logs IN ACCESS SHARE MODE; SELECT pg_sleep(60);\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let dir = db.migrations_with("v8", &[SLOW_V8]);
    let started = Instant::now();
    let r = db.run_with(&dir, &["migrate", "--lock-timeout", "500ms"]);
    r.expect(1)
        .mentions("t001")
        .mentions("lock timeout")
        .mentions("3 applied, 0 up to date, 1 failed");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run must not hang behind the lock"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    db.run_with(&dir, &["migrate"]).expect(0);
    assert_eq!(at_eight(&db).0, 4);
}

#[test]
fn ctrl_c_finishes_tenants_in_flight_and_exits_130() {
    let _g = serial();
    let db = TestDb::new("sigint");
    create_tenants(&db, 30);
    let dir = db.migrations_with("slow", &[SLOW_V8]);
    let child = spawn_migrate(&db, &dir, "2");
    // Once a tenant is done the run is under way: interrupt it then, however slow the
    // machine is today.
    for _ in 0..400 {
        if db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8") != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    out.expect(130)
        .mentions("interrupted")
        .mentions("migrate: 30 tenants");
    let done = at_eight(&db).0;
    assert!(done > 0 && done < 30, "{done} tenants done");
    // In-flight tenants committed; nothing was left marked migrating.
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'migrating'"),
        "0"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8"),
        done.to_string()
    );
    db.run_with(&dir, &["migrate"]).expect(0);
}

#[test]
fn concurrency_beyond_the_servers_connections_is_limited_not_fatal() {
    let _g = serial();
    let db = TestDb::new("conns");
    create_tenants(&db, 3);
    let dir = db.migrations_with("v8", &[SLOW_V8]);
    db.run_with(&dir, &["migrate", "--concurrency", "500"])
        .expect(0)
        .mentions("tenants at a time instead of 500");
}

#[test]
fn dropping_a_tenant_with_three_thousand_tables_fits_the_default_lock_table() {
    let _g = serial();
    let db = TestDb::new("bigdrop");
    assert_eq!(db.scalar("SHOW max_locks_per_transaction"), "64");
    db.run(&["create", "big"]).expect(0);
    for batch in 0..15 {
        db.query(&format!(
            "DO $$ BEGIN FOR i IN {} .. {} LOOP \
               EXECUTE format('CREATE TABLE tenant_big.t%s (id int PRIMARY KEY, note text)', i); \
             END LOOP; END $$",
            batch * 200,
            batch * 200 + 199
        ));
    }
    // The premise: one DROP SCHEMA ... CASCADE of this tenant exhausts the shared lock table.
    let plain = try_query(&db.url, "BEGIN; DROP SCHEMA tenant_big CASCADE; ROLLBACK;");
    let err = plain.expect_err("a single-transaction drop should run out of lock slots");
    assert!(err.contains("out of shared memory"), "{err}");
    db.run(&["drop", "big", "--yes"]).expect(0);
    assert!(db.tenant_schemas().is_empty());
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_drops WHERE slug = 'big'"),
        "1"
    );
}
