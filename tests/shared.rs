//! Shared migrations (`[migrations] shared_dir`): applied once per server, before any
//! tenant's, in one transaction; a failure leaves every tenant untouched (real server).

mod common;

use std::path::PathBuf;

use common::*;

const PLANS: (&str, &str) = (
    "V1__plans.sql",
    "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);\n\
     INSERT INTO plans VALUES (1, 'basic');",
);

/// A tenant migration that references the shared table.
const TENANT_V8: (&str, &str) = (
    "V8__plan.sql",
    "ALTER TABLE wellness_logs ADD COLUMN plan_id int REFERENCES public.plans (id);",
);

/// Writes the shared migrations folder and a tenants.toml pointing at it (picked up from
/// the test's folder, where tenantctl runs).
fn shared(db: &TestDb, files: &[(&str, &str)], schema: Option<&str>) -> PathBuf {
    let dir = db.dir.join("shared");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
    let schema = schema
        .map(|s| format!("shared_schema = \"{s}\"\n"))
        .unwrap_or_default();
    db.config(&format!("[migrations]\nshared_dir = \"shared\"\n{schema}"));
    dir
}

/// Tenants t000.. created at version 7 before any shared migration was configured.
fn fleet(db: &TestDb, n: usize) {
    create_tenants(db, n);
}

fn plan_columns(db: &TestDb) -> String {
    db.scalar(
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
          WHERE c.relname = 'wellness_logs' AND a.attname = 'plan_id'",
    )
}

#[test]
fn shared_migrations_are_applied_once_before_the_tenants() {
    let db = TestDb::new("shared_once");
    fleet(&db, 3);
    shared(&db, &[PLANS], None);
    let dir = db.migrations_with("v8", &[TENANT_V8]);
    let r = db.run_with(&dir, &["migrate"]);
    r.expect(0)
        .mentions("shared schema public: applied V1__plans; now at version 1")
        .mentions("3 applied");
    // The tenants' V8 references public.plans: it could only apply after the shared V1.
    assert_eq!(plan_columns(&db), "3");
    assert_eq!(
        db.scalar("SELECT string_agg(version::text, ',') FROM public.refinery_schema_history"),
        "1"
    );
    // Again: nothing to apply, the shared rows are not inserted twice.
    let r = db.run_with(&dir, &["migrate", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["shared"]["outcome"], "up_to_date");
    assert_eq!(doc["shared"]["version"], 1);
    assert_eq!(db.scalar("SELECT count(*) FROM public.plans"), "1");
    // A new tenant gets the shared tables first too (here: already there) and V8.
    db.run_with(&dir, &["create", "late"]).expect(0);
    assert_eq!(plan_columns(&db), "4");
}

#[test]
fn create_applies_pending_shared_migrations_in_a_schema_of_their_own() {
    let db = TestDb::new("shared_create");
    shared(
        &db,
        &[(
            "V1__plans.sql",
            "CREATE TABLE plans (id int PRIMARY KEY); INSERT INTO plans VALUES (1);",
        )],
        Some("common"),
    );
    let dir = db.migrations_with(
        "v8",
        &[(
            "V8__plan.sql",
            "ALTER TABLE wellness_logs ADD COLUMN plan_id int REFERENCES common.plans (id);",
        )],
    );
    db.run_with(&dir, &["create", "acme"]).expect(0);
    assert_eq!(plan_columns(&db), "1");
    assert_eq!(
        db.scalar("SELECT count(*) FROM common.refinery_schema_history"),
        "1"
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('public.refinery_schema_history') IS NULL"),
        "t"
    );
}

#[test]
fn a_failing_shared_migration_leaves_every_tenant_untouched() {
    let db = TestDb::new("shared_fail");
    fleet(&db, 3);
    shared(&db, &[PLANS, ("V2__broken.sql", "SELECT 1 / 0;")], None);
    let dir = db.migrations_with("v8", &[TENANT_V8]);
    let before = db.snapshot();
    let r = db.run_with(&dir, &["migrate"]);
    r.expect(1)
        .mentions("V2__broken")
        .mentions("division by zero")
        .mentions("no tenant was touched");
    assert_eq!(db.snapshot(), before);
    assert_eq!(plan_columns(&db), "0");
    // One transaction: V1 rolled back with V2, the history table with them.
    assert_eq!(db.scalar("SELECT to_regclass('public.plans') IS NULL"), "t");
    assert_eq!(
        db.scalar("SELECT to_regclass('public.refinery_schema_history') IS NULL"),
        "t"
    );
    let r = db.run_with(&dir, &["migrate", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    assert_eq!(doc["shared"]["outcome"], "failed");
    assert_eq!(doc["summary"]["skipped"], 3, "{doc}");
    // create refuses too, creating nothing.
    let r = db.run_with(&dir, &["create", "late"]);
    r.expect(1).mentions("no tenant was created");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn an_edited_applied_shared_file_is_refused_by_name() {
    let db = TestDb::new("shared_edit");
    fleet(&db, 2);
    let sdir = shared(&db, &[PLANS], None);
    db.run(&["migrate"]).expect(0);
    std::fs::write(
        sdir.join("V1__plans.sql"),
        "CREATE TABLE plans (id bigint PRIMARY KEY);",
    )
    .unwrap();
    let dir = db.migrations_with("v8", &[TENANT_V8]);
    let before = db.snapshot();
    let r = db.run_with(&dir, &["migrate"]);
    r.expect(1).mentions("V1__plans").mentions("checksum");
    assert_eq!(db.snapshot(), before);
    assert_eq!(plan_columns(&db), "0");
    let r = db.run(&["status", "--check"]);
    r.expect(1).mentions("refused").mentions("V1__plans");
    let r = db.run_with(&dir, &["migrate", "--dry-run"]);
    r.expect(1).mentions("V1__plans");
}

#[test]
fn status_and_dry_run_show_the_shared_version_and_check_gates_on_it() {
    let db = TestDb::new("shared_status");
    fleet(&db, 2);
    shared(&db, &[PLANS], None);
    let r = db.run(&["status", "--check"]);
    r.expect(1)
        .mentions("shared schema public: version 0, latest 1, 1 pending");
    let r = db.run(&["status", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["shared"]["pending"], 1);
    assert_eq!(doc["shared"]["version"], 0);
    let before = db.snapshot();
    let r = db.run(&["migrate", "--dry-run"]);
    r.expect(0)
        .mentions("shared schema public: at version 0; would apply V1__plans");
    assert_eq!(db.snapshot(), before);
    assert_eq!(db.scalar("SELECT to_regclass('public.plans') IS NULL"), "t");
    db.run(&["migrate"]).expect(0);
    let r = db.run(&["status", "--check", "--format", "json"]);
    r.expect(0);
    assert_eq!(r.json()["shared"]["version"], 1);
    assert_eq!(r.json()["shared"]["pending"], 0);
}

#[test]
fn bad_shared_folders_are_refused_before_anything_changes() {
    let db = TestDb::new("shared_bad");
    fleet(&db, 1);
    let before = db.snapshot();
    shared(
        &db,
        &[("V1__plans.sql", "CREATE TABLE plans (id int);\nCOMMIT;")],
        None,
    );
    let r = db.run(&["migrate"]);
    r.expect(2).mentions("V1__plans.sql").mentions("line 2");
    let r = db.run(&["create", "other"]);
    r.expect(2).mentions("V1__plans.sql");
    shared(
        &db,
        &[(
            "V1__plans.sql",
            "-- no-transaction\nCREATE TABLE plans (id int);",
        )],
        None,
    );
    db.run(&["migrate"]).expect(2).mentions("one transaction");
    shared(&db, &[PLANS], Some("tenant_shared"));
    db.run(&["migrate"])
        .expect(2)
        .mentions("starts with the tenant schema prefix");
    // A shared folder inside the tenants' folder would be applied to every tenant too.
    let tenants = db.migrations_with("nested", &[]);
    std::fs::create_dir_all(tenants.join("shared")).unwrap();
    db.config(&format!(
        "[migrations]\nshared_dir = \"{}\"\n",
        path_str(&tenants.join("shared"))
    ));
    db.run_with(&tenants, &["migrate"])
        .expect(2)
        .mentions("overlap");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn shared_migrations_wait_for_the_fleet_wide_lock() {
    use std::io::Write;
    let db = TestDb::new("shared_lock");
    fleet(&db, 1);
    shared(&db, &[PLANS], None);
    let mut holder = psql_session(&db);
    writeln!(
        holder.stdin.as_mut().unwrap(),
        "BEGIN; SELECT pg_advisory_xact_lock({});",
        tenantctl::registry::locks::SHARED_MIGRATIONS
    )
    .unwrap();
    holder.stdin.as_mut().unwrap().flush().unwrap();
    // Wait until the holder has it.
    let held = || {
        db.scalar(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND objsubid = 1 AND objid = ({}::bigint & 4294967295)::oid",
            tenantctl::registry::locks::SHARED_MIGRATIONS
        ))
    };
    for _ in 0..200 {
        if held() == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let before = db.snapshot();
    db.run(&["--lock-timeout", "300ms", "migrate"])
        .expect(1)
        .mentions("shared migrations' lock was not granted");
    assert_eq!(db.snapshot(), before);
    assert_eq!(db.scalar("SELECT to_regclass('public.plans') IS NULL"), "t");
    drop(holder.stdin.take());
    let _ = holder.wait();
    db.run(&["migrate"]).expect(0).mentions("applied V1__plans");
}
