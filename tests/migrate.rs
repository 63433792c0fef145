//! Fleet migrations against a real server: atomic per tenant, locked, resumable.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const V8: (&str, &str) = (
    "V8__heart_rate.sql",
    "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;\n\
     CREATE INDEX wellness_logs_heart_rate_idx ON wellness_logs (resting_heart_rate);",
);

#[test]
fn fifty_tenants_move_from_seven_to_eight() {
    let db = TestDb::new("fifty");
    create_tenants(&db, 50);
    let dir = db.migrations_with("v8", &[V8]);
    let r = db.run_with(&dir, &["migrate", "--concurrency", "4"]);
    r.expect(0).mentions("50 applied");
    assert_eq!(at_eight(&db), (50, 50));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'active' AND version = 8"),
        "50"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE version = 8 AND outcome = 'applied'"), "50");
    // Nothing pending: nothing changes, exit 0, and no schema is visited.
    let before = db.snapshot();
    let r = db.run_with(&dir, &["migrate", "--format", "json"]);
    r.expect(0);
    assert_eq!(r.json()["summary"]["up_to_date"], 50);
    assert_eq!(db.snapshot(), before);
    // Without a terminal: a line per tenant, no control characters anywhere.
    assert!(!r.all().contains('\u{1b}') && !r.all().contains('\r'));
}

#[test]
fn one_sabotaged_tenant_fails_alone_and_recovers() {
    let db = TestDb::new("sabotage");
    create_tenants(&db, 6);
    db.query("ALTER TABLE tenant_t002.wellness_logs RENAME TO wellness_logs_moved");
    let dir = db.migrations_with("v8", &[V8]);
    let r = db.run_with(&dir, &["migrate"]);
    r.expect(1)
        .mentions("t002")
        .mentions("V8__heart_rate")
        .mentions("relation \"wellness_logs\" does not exist")
        .mentions("5 applied, 0 up to date, 1 failed");
    assert!(
        !r.all().contains('\u{1b}'),
        "no escape characters without a TTY"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8"),
        "5"
    );
    let row = db.query("SELECT state, version, last_error FROM public.tenants WHERE slug = 't002'");
    assert_eq!(row[0][0].as_deref(), Some("failed"));
    assert_eq!(row[0][1].as_deref(), Some("7"));
    assert!(row[0][2].as_deref().unwrap().contains("V8__heart_rate"));
    assert_eq!(
        db.scalar("SELECT outcome || ':' || version FROM public.tenant_migrations WHERE slug = 't002' AND version = 8"),
        "failed:8"
    );
    let status = db.run_with(&dir, &["status", "--format", "json"]);
    let doc = status.json();
    let t2 = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "t002")
        .unwrap()
        .clone();
    assert_eq!(
        (t2["state"].as_str(), t2["pending"].as_i64()),
        (Some("failed"), Some(1))
    );
    assert!(t2["last_error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    db.run_with(&dir, &["status", "--check"]).expect(1);

    db.query("ALTER TABLE tenant_t002.wellness_logs_moved RENAME TO wellness_logs");
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("1 applied, 5 up to date");
    db.run_with(&dir, &["status", "--check"]).expect(0);
    assert_eq!(at_eight(&db), (6, 6));
}

#[test]
fn two_processes_at_once_never_collide() {
    let db = TestDb::new("twoproc");
    create_tenants(&db, 20);
    let dir = db.migrations_with("v8", &[V8]);
    let (a, b) = (spawn_migrate(&db, &dir, "4"), spawn_migrate(&db, &dir, "4"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(at_eight(&db), (20, 20));
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE version = 8 AND outcome = 'applied'"), "20");
}

#[test]
fn kill_dash_nine_leaves_every_tenant_whole_and_the_next_run_finishes() {
    let db = TestDb::new("kill9");
    create_tenants(&db, 40);
    // A slow migration so the kill lands mid-run.
    let slow = (
        "V8__slow.sql",
        "SELECT pg_sleep(0.1);\nALTER TABLE wellness_logs ADD COLUMN resting_heart_rate smallint;",
    );
    let dir = db.migrations_with("slow", &[slow]);
    let mut child = spawn_migrate(&db, &dir, "2");
    // Once a tenant is done the run has marked the others: kill it then, however slow the
    // machine is today.
    for _ in 0..400 {
        if db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8") != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (done, _) = at_eight(&db); // asserts: no schema is half-migrated
    assert!(done < 40, "the kill should land mid-run ({done} done)");
    let stuck = db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'migrating'");
    assert_ne!(stuck, "0", "the killed run left tenants marked migrating");

    let r = db.run_with(&dir, &["migrate", "--concurrency", "4"]);
    r.expect(0).mentions("recovered from an interrupted run");
    assert_eq!(at_eight(&db), (40, 40));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state <> 'active' OR version <> 8"),
        "0"
    );
}

#[test]
fn diverged_history_is_refused_by_name() {
    let db = TestDb::new("diverge");
    create_tenants(&db, 2);
    // V3 edited after it was applied: refused, and V8 is not applied either.
    let dir = db.migrations_with("edited", &[V8]);
    let v3 = dir.join("V3__wellness_logs.sql");
    let text = std::fs::read_to_string(&v3).unwrap();
    std::fs::write(&v3, format!("{text}\n-- edited after release\n")).unwrap();
    let r = db.run_with(&dir, &["migrate", "t000"]);
    r.expect(1)
        .mentions("t000")
        .mentions("V3__wellness_logs")
        .mentions("checksum");
    assert_eq!(at_eight(&db), (0, 0));
    assert_eq!(
        db.scalar("SELECT state FROM public.tenants WHERE slug = 't000'"),
        "failed"
    );
    // The dry run sees the same divergence without changing anything.
    db.run_with(&dir, &["migrate", "--dry-run", "t001"])
        .expect(1)
        .mentions("V3__wellness_logs");

    // An applied file that is gone: refused by name.
    let dir = db.migrations_with("gone", &[V8]);
    std::fs::remove_file(dir.join("V2__consents.sql")).unwrap();
    db.run_with(&dir, &["migrate", "t001"])
        .expect(1)
        .mentions("V2__consents")
        .mentions("missing");
    assert_eq!(at_eight(&db), (0, 0));
}

#[test]
fn a_failing_canary_leaves_the_rest_untouched() {
    let db = TestDb::new("canary");
    create_tenants(&db, 8);
    db.query("ALTER TABLE tenant_t000.wellness_logs RENAME TO moved");
    let dir = db.migrations_with("v8", &[V8]);
    let before: Vec<_> = db.query("SELECT slug, state, version, updated_at FROM public.tenants WHERE slug >= 't002' ORDER BY 1");
    let r = db.run_with(&dir, &["migrate", "--canary", "2", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    assert_eq!(doc["summary"]["failed"], 1);
    assert_eq!(doc["summary"]["applied"], 1);
    assert_eq!(doc["summary"]["skipped"], 6);
    let after: Vec<_> = db.query("SELECT slug, state, version, updated_at FROM public.tenants WHERE slug >= 't002' ORDER BY 1");
    assert_eq!(
        before, after,
        "tenants after the canary must not be touched"
    );
    db.query("ALTER TABLE tenant_t000.moved RENAME TO wellness_logs");
    db.run_with(&dir, &["migrate", "--canary", "2"])
        .expect(0)
        .mentions("7 applied");
}

#[test]
fn target_dry_run_and_fail_fast() {
    let db = TestDb::new("flags");
    create_tenants(&db, 4);
    let v9 = ("V9__more.sql", "CREATE TABLE more_things (id int);");
    let dir = db.migrations_with("v9", &[V8, v9]);
    let m = path_str(&dir);

    let before = db.snapshot();
    let r = db.run_with(m, &["migrate", "--dry-run"]);
    r.expect(0).mentions("V8__heart_rate").mentions("V9__more");
    assert_eq!(db.snapshot(), before, "a dry run changes nothing");
    let r = db.run_with(m, &["migrate", "--dry-run", "--format", "json"]);
    assert_eq!(
        r.json()["tenants"][0]["migrations"],
        serde_json::json!(["V8__heart_rate", "V9__more"])
    );

    db.run_with(m, &["migrate", "--target", "10"])
        .expect(2)
        .mentions("--target 10 is not a migration")
        .mentions("latest is 9");
    db.run_with(m, &["migrate", "--target", "8", "t000"])
        .expect(0);
    assert_eq!(
        db.scalar("SELECT version FROM public.tenants WHERE slug = 't000'"),
        "8"
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('tenant_t000.more_things') IS NULL"),
        "t"
    );

    // --fail-fast with one at a time: the first failure stops the run.
    db.query("ALTER TABLE tenant_t001.wellness_logs RENAME TO moved");
    let r = db.run_with(
        m,
        &[
            "migrate",
            "--fail-fast",
            "--concurrency",
            "1",
            "--format",
            "json",
        ],
    );
    r.expect(1);
    let doc = r.json();
    let outcome = |slug: &str| {
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome("t000"), "applied");
    assert_eq!(outcome("t001"), "failed");
    assert_eq!(outcome("t002"), "skipped");
    assert_eq!(outcome("t003"), "skipped");
    assert_eq!(
        db.scalar("SELECT version FROM public.tenants WHERE slug = 't003'"),
        "7"
    );
    db.run_with(m, &["migrate", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody");
}

#[test]
fn session_state_set_by_a_migration_does_not_leak_to_the_next_tenant() {
    let db = TestDb::new("leak");
    create_tenants(&db, 5);
    // A plain SET inside a transaction outlives its commit. Had it leaked through the pool,
    // the next tenant's registry update would fail in a read-only transaction. (A SET of
    // search_path or role is refused before any tenant is touched: tests/migration_files.rs.)
    let leaky = (
        "V8__leaky.sql",
        "CREATE TABLE leak_probe (id int);\nSET default_transaction_read_only = on;",
    );
    let dir = db.migrations_with("leaky", &[leaky]);
    db.run_with(&dir, &["migrate", "--concurrency", "1"])
        .expect(0)
        .mentions("5 applied");
    assert_eq!(db.scalar("SELECT count(*) FROM pg_class WHERE relname = 'leak_probe' AND relnamespace = 'public'::regnamespace"), "0");
}

#[test]
fn a_failure_among_several_pending_migrations_names_the_first_and_applies_none() {
    // A tenant's pending migrations go to the server together, so the ones after a failing
    // migration are sent too (and fail as "transaction is aborted"); the report must name
    // the one that really failed, and nothing of any of them may stay.
    let db = TestDb::new("midfail");
    create_tenants(&db, 3);
    let dir = db.migrations_with(
        "mid",
        &[
            ("V8__fine.sql", "CREATE TABLE fine_one (id int);"),
            (
                "V9__broken.sql",
                "ALTER TABLE no_such_table ADD COLUMN x int;",
            ),
            ("V10__after.sql", "CREATE TABLE fine_two (id int);"),
        ],
    );
    let r = db.run_with(&dir, &["migrate", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    let tenants = doc["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 3);
    for t in tenants {
        assert_eq!(t["outcome"], "failed", "{t}");
        let error = t["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("V9__broken") && error.contains("\"no_such_table\" does not exist"),
            "the first failure is named: {error}"
        );
        assert!(
            !error.contains("aborted"),
            "not the follow-on error: {error}"
        );
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_class WHERE relname IN ('fine_one', 'fine_two')"),
        "0",
        "V8 rolled back with V9, V10 never applied"
    );
    assert_eq!(
        db.scalar(
            "SELECT string_agg(DISTINCT version || ':' || outcome, ',') FROM public.tenant_migrations WHERE version > 7"
        ),
        "9:failed"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'failed' AND version = 7"),
        "3"
    );
    // Fixing the file lets the next run apply all three.
    let fixed = db.migrations_with(
        "fixed",
        &[
            ("V8__fine.sql", "CREATE TABLE fine_one (id int);"),
            ("V9__broken.sql", "CREATE TABLE fixed_now (id int);"),
            ("V10__after.sql", "CREATE TABLE fine_two (id int);"),
        ],
    );
    db.run_with(&fixed, &["migrate"])
        .expect(0)
        .mentions("3 applied");
}

#[test]
fn a_registered_tenant_without_a_schema_is_reported_not_a_crash() {
    let db = TestDb::new("noschema");
    create_tenants(&db, 3);
    db.query("DROP SCHEMA tenant_t001 CASCADE");
    let dir = db.migrations_with("v8", &[V8]);
    let r = db.run_with(&dir, &["migrate"]);
    r.expect(1)
        .mentions("schema tenant_t001 is missing")
        .mentions("2 applied");
    assert_eq!(
        db.scalar("SELECT state FROM public.tenants WHERE slug = 't001'"),
        "failed"
    );
}

#[test]
fn a_folder_behind_the_fleet_is_refused_whole_and_status_says_ahead() {
    // A rolled-back deploy runs migrate with the previous release's folder (V1..V7) while
    // the fleet is at V8: every tenant is healthy, none may be touched or marked failed.
    let db = TestDb::new("ahead");
    create_tenants(&db, 7);
    let dir = db.migrations_with("v8", &[V8]);
    db.run_with(&dir, &["migrate"]).expect(0);
    let before = db.snapshot();
    let r = db.run(&["migrate"]);
    r.expect(2)
        .mentions("7 tenants are ahead of this migrations folder: V8 is missing from")
        .mentions("(its latest is V7)")
        .mentions("t000, t001, t002, t003, t004 and 2 more")
        .mentions("nothing was changed");
    assert_eq!(db.snapshot(), before);
    let r = db.run(&["migrate", "t003", "--dry-run", "--format", "json"]);
    r.expect(2);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("1 tenant is ahead of this migrations folder: V8 is missing"));
    let empty = db.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    db.run_with(&empty, &["migrate"])
        .expect(2)
        .mentions("(it has no migrations)");
    assert_eq!(db.snapshot(), before);

    // status says so, in text and JSON, and --check fails: the fleet is not at this
    // folder's latest version.
    let r = db.run(&["status", "t000"]);
    r.expect(0)
        .mentions("ahead")
        .mentions("1 ahead of the migrations folder");
    let doc = db.run(&["status", "--format", "json"]).json();
    assert!(doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["ahead"] == true && t["state"] == "active" && t["pending"] == 0));
    db.run(&["status", "--check"]).expect(1);
    let doc = db.run_with(&dir, &["status", "--format", "json"]).json();
    assert_eq!(doc["tenants"][0]["ahead"], false);
    db.run_with(&dir, &["status", "--check"]).expect(0);
    assert_eq!(db.snapshot(), before);
}

#[test]
fn json_status_agrees_with_the_registry() {
    let db = TestDb::new("json");
    create_tenants(&db, 3);
    let r = db.run(&["status", "--format", "json"]);
    let doc = r.json();
    let rows =
        db.query("SELECT slug, schema_name, state, version FROM public.tenants ORDER BY slug");
    let tenants = doc["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), rows.len());
    for (t, row) in tenants.iter().zip(rows) {
        assert_eq!(t["slug"].as_str(), row[0].as_deref());
        assert_eq!(t["schema"].as_str(), row[1].as_deref());
        assert_eq!(t["state"].as_str(), row[2].as_deref());
        assert_eq!(
            t["version"].as_i64().map(|v| v.to_string()).as_deref(),
            row[3].as_deref()
        );
    }
    // create's JSON document: one per run, outcome and versions per tenant.
    let r = db.run(&["create", "newco", "--format", "json"]);
    let doc = r.json();
    let t = &doc["tenants"][0];
    assert_eq!(
        (
            t["outcome"].as_str(),
            t["from_version"].as_i64(),
            t["to_version"].as_i64()
        ),
        (Some("applied"), Some(0), Some(7))
    );
    assert!(t["duration_ms"].is_u64());
}

/// Waits until `n` sessions wait for an advisory lock (tenantctl blocked on a tenant's lock).
fn wait_for_lock_waiters(db: &TestDb, n: usize) {
    for _ in 0..200 {
        let waiting: usize = db
            .scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            .parse()
            .unwrap();
        if waiting >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{n} sessions never waited for the tenant's lock");
}

#[test]
fn a_tenant_migrated_by_another_process_meanwhile_is_decided_again_from_its_history() {
    // Both runs read the registry (t000 at version 7) before either can take t000's lock,
    // so the second one to get the lock finds the registry moved under it. It must read the
    // history then, find nothing pending, and succeed without applying V8 a second time.
    let db = TestDb::new("stale");
    create_tenants(&db, 1);
    let dir = db.migrations_with("v8", &[V8]);
    let mut holder = psql_session(&db);
    let stdin = holder.stdin.as_mut().unwrap();
    stdin
        .write_all(
            format!(
                "SELECT pg_advisory_lock({}, hashtext('tenant_t000'));\n",
                tenantctl::registry::locks::LOCK_CLASS
            )
            .as_bytes(),
        )
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let args = [
        "--format",
        "json",
        "--migrations",
        path_str(&dir),
        "migrate",
    ];
    let runs = [spawn_tenantctl(&db, &args), spawn_tenantctl(&db, &args)];
    wait_for_lock_waiters(&db, 2);
    stdin
        .write_all(b"SELECT pg_advisory_unlock_all();\n\\q\n")
        .unwrap();
    holder.wait().unwrap();
    let mut outcomes: Vec<String> = runs
        .into_iter()
        .map(|c| {
            let r = Run::from(c.wait_with_output().unwrap());
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
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE version = 8 AND outcome = 'applied'"), "1");
}

#[test]
fn a_registry_behind_its_history_is_caught_up_from_the_history() {
    // The registry says version 7 (with the fingerprint of V1..V7) but the history already
    // holds V8, as after a hand edit. V8 here can run twice without error, so the only thing
    // that stops a second application is the history's primary key; the run must then read
    // the history, find nothing pending and put the registry right.
    let db = TestDb::new("behind");
    create_tenants(&db, 1);
    let digest7 = db.scalar("SELECT migrations_digest FROM public.tenants WHERE slug = 't000'");
    let again = (
        "V8__again.sql",
        "CREATE TABLE IF NOT EXISTS notes (id int);",
    );
    let dir = db.migrations_with("again", &[again]);
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("1 applied");
    db.query(&format!(
        "UPDATE public.tenants SET version = 7, migrations_digest = '{digest7}' WHERE slug = 't000'"
    ));
    let r = db.run_with(&dir, &["migrate", "--format", "json"]);
    r.expect(0);
    assert_eq!(r.json()["tenants"][0]["outcome"], "up_to_date");
    assert_eq!(
        db.scalar("SELECT count(*) FROM tenant_t000.refinery_schema_history WHERE version = 8"),
        "1"
    );
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 't000'"),
        "active:8"
    );
}
