//! Locks that must not hang a command: a tenant's advisory lock held by a session that is
//! not tenantctl, and a registry upgrade behind an application transaction. Each wait ends
//! by its deadline with the holder named, and nothing is changed; two tenantctl runs still
//! queue behind each other.

mod common;

use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

const V8: (&str, &str) = (
    "V8__heart_rate.sql",
    "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;",
);

/// Long enough for any run here; a hanging one fails the test instead of the suite.
const LIMIT: Duration = Duration::from_secs(60);

/// A psql session holding tenant `schema`'s lock, as any role may; and its pid.
fn hold_tenant_lock(db: &TestDb, schema: &str) -> (Child, String) {
    let mut holder = psql_session(db);
    let stdin = holder.stdin.as_mut().unwrap();
    stdin
        .write_all(
            format!(
                "SELECT pg_advisory_lock({}, hashtext('{schema}'));\n",
                tenantctl::registry::locks::LOCK_CLASS
            )
            .as_bytes(),
        )
        .unwrap();
    stdin.flush().unwrap();
    let pid = wait_for_tenant_lock_holder(db, schema);
    (holder, pid)
}

/// Ends a psql session (closing its input ends it, and its locks with it).
fn release(mut session: Child) {
    drop(session.stdin.take());
    session.wait().unwrap();
}

fn names_the_holder(r: &Run, pid: &str) {
    r.mentions(&format!(
        "tenant beta is locked by pid {pid} (role postgres, application 'psql', for "
    ))
    .mentions(&format!("pg_terminate_backend({pid})"));
}

#[test]
fn a_tenant_lock_held_by_another_session_ends_each_command_by_its_deadline() {
    let db = TestDb::new("foreignlock");
    db.run(&["create", "alpha", "beta"]).expect(0);
    let dump = db.dir.join("beta.dump");
    db.run(&["backup", "beta", "-o", path_str(&dump)]).expect(0);
    let (holder, pid) = hold_tenant_lock(&db, "tenant_beta");

    let before = db.snapshot();
    let not_written = db.dir.join("beta-again.dump");
    for args in [
        ["backup", "beta", "-o", path_str(&not_written)].as_slice(),
        ["drop", "beta", "--yes"].as_slice(),
        ["restore", "beta", path_str(&dump), "--yes"].as_slice(),
    ] {
        let started = Instant::now();
        let mut with_deadline = vec!["--lock-timeout", "2s"];
        with_deadline.extend_from_slice(args);
        let r = finish_within(spawn_tenantctl(&db, &with_deadline), LIMIT);
        r.expect(1);
        names_the_holder(&r, &pid);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(db.snapshot(), before, "{args:?} changed the database");
    }
    assert!(!not_written.exists());

    // migrate: the locked tenant fails with its holder named, the rest of the fleet goes on.
    let dir = db.migrations_with("v7", &[V8]);
    let migrate = ["--migrations", path_str(&dir), "migrate"];
    let mut args = migrate.to_vec();
    args.extend(["--lock-timeout", "2s"]);
    let r = finish_within(spawn_tenantctl(&db, &args), LIMIT);
    r.expect(1)
        .mentions("1 applied, 0 up to date, 1 failed")
        .mentions("waited 2 s (--lock-timeout)");
    names_the_holder(&r, &pid);
    assert_eq!(
        db.scalar("SELECT version FROM public.tenants WHERE slug = 'beta'"),
        "7"
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'tenant_beta.wellness_logs'::regclass \
              AND attname = 'resting_heart_rate'"
        ),
        "0"
    );

    release(holder);
    db.run(&migrate)
        .expect(0)
        .mentions("1 applied, 1 up to date");
}

#[test]
fn a_run_with_a_lock_timeout_still_waits_for_another_tenantctl() {
    // The first run holds the tenant's lock for longer than the second run's deadline; the
    // second must queue behind it, not fail (two runs never fail because of each other).
    let db = TestDb::new("queue");
    create_tenants(&db, 1);
    let slow = (
        "V8__slow.sql",
        "SELECT pg_sleep(3);\nALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;",
    );
    let dir = db.migrations_with("slow", &[slow]);
    let args = [
        "--format",
        "json",
        "--migrations",
        path_str(&dir),
        "migrate",
        "--lock-timeout",
        "500ms",
    ];
    let first = spawn_tenantctl(&db, &args);
    wait_for_tenant_lock_holder(&db, "tenant_t000");
    let second = spawn_tenantctl(&db, &args);
    let mut outcomes: Vec<String> = [first, second]
        .into_iter()
        .map(|c| {
            let r = finish_within(c, LIMIT);
            r.expect(0);
            r.json()["tenants"][0]["outcome"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "up_to_date"]);
    assert_eq!(at_eight(&db), (1, 1));
}

#[test]
fn a_run_waiting_behind_a_live_run_does_not_call_its_tenants_interrupted() {
    let db = TestDb::new("liverun");
    create_tenants(&db, 1);
    let slow = (
        "V8__slow.sql",
        "SELECT pg_sleep(2);\nALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;",
    );
    let dir = db.migrations_with("slow", &[slow]);
    let args = ["--migrations", path_str(&dir), "migrate"];
    let first = spawn_tenantctl(&db, &args);
    // The first run has marked t000 migrating and is applying V7 under its lock.
    wait_for_tenant_lock_holder(&db, "tenant_t000");
    assert_eq!(
        db.scalar("SELECT state FROM public.tenants WHERE slug = 't000'"),
        "migrating"
    );
    let second = spawn_tenantctl(&db, &args);
    let (first, second) = (finish_within(first, LIMIT), finish_within(second, LIMIT));
    for r in [&first, &second] {
        r.expect(0);
        assert!(
            !r.all().contains("interrupted"),
            "a live run's tenant is not an interrupted one:\n{}",
            r.all()
        );
    }
    second.mentions("another tenantctl migrate is running");
    assert_eq!(at_eight(&db), (1, 1));
}

#[test]
fn a_registry_upgrade_behind_an_application_transaction_ends_by_its_deadline() {
    let db = TestDb::new("upgradelock");
    db.run(&["init"]).expect(0);
    // The registry as version 1 left it, as before an upgrade of tenantctl: version 2 adds a
    // column to public.tenants, which needs an ACCESS EXCLUSIVE lock on it.
    db.query(
        "ALTER TABLE public.tenants DROP COLUMN role_name, DROP COLUMN server_name, \
             DROP COLUMN database_name, RESET (fillfactor); \
         ALTER TABLE public.tenant_drops DROP COLUMN role_name, DROP COLUMN archive_file, \
             DROP COLUMN archive_sha256; \
         DROP FUNCTION public.tenantctl_enter(integer, text, text, bigint, text); \
         DROP TABLE public.tenant_exec_results, public.tenant_exec_runs; \
         ALTER TABLE public.tenants DROP COLUMN labels, DROP CONSTRAINT tenants_state_check, \
             ADD CONSTRAINT tenants_state_check CHECK (state IN \
                 ('provisioning', 'active', 'migrating', 'failed', 'dropping')); \
         DROP TABLE public.tenant_suspensions; \
         DROP TABLE public.tenant_moves; \
         DELETE FROM public.tenantctl_registry_history WHERE version > 1;",
    );
    let before = db.snapshot();
    // The application reads the tenant list in a transaction it keeps open.
    let mut app = psql_session(&db);
    let stdin = app.stdin.as_mut().unwrap();
    stdin
        .write_all(b"BEGIN; SELECT count(*) FROM public.tenants;\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut pid = String::new();
    for _ in 0..200 {
        pid = db.scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
               AND application_name = 'psql' AND state = 'idle in transaction'",
        );
        if !pid.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pid.is_empty(),
        "the application's transaction never started"
    );

    let started = Instant::now();
    let init = spawn_tenantctl(&db, &["init", "--lock-timeout", "8s"]);
    // Meanwhile the application's other sessions still read the tenant list: the upgrade
    // waits in short attempts, so they queue behind it for a moment, not for its deadline.
    std::thread::sleep(Duration::from_millis(1500));
    let read = Instant::now();
    let r = try_query(
        &db.url,
        "SET statement_timeout = '6s'; SELECT count(*) FROM public.tenants",
    );
    let read_took = read.elapsed();
    assert!(r.is_ok(), "the application's read failed: {r:?}");
    assert!(
        read_took < Duration::from_secs(3),
        "the application's read waited {read_took:?} behind the upgrade"
    );

    let r = finish_within(init, LIMIT);
    r.expect(1)
        .mentions(&format!(
            "cannot upgrade the tenant registry from version 1 to {}",
            tenantctl::registry::expected_version()
        ))
        .mentions(&format!(
            "pid {pid} (role postgres, application 'psql', for "
        ))
        .mentions(&format!("pg_terminate_backend({pid})"))
        .mentions("the registry was not changed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(20),
        "init took {took:?} with an 8 s deadline"
    );
    assert_eq!(db.snapshot(), before);
    assert_eq!(
        db.scalar("SELECT max(version) FROM public.tenantctl_registry_history"),
        "1"
    );

    release(app);
    db.run(&["init"]).expect(0).mentions(&format!(
        "registry upgraded from version 1 to {}",
        tenantctl::registry::expected_version()
    ));
}
