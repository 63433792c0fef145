//! Restoring a dump tenantctl did not make: each trick is refused (exit 2) before anything
//! runs, and nothing changes; Ctrl-C and SIGTERM during a restore leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A record beside `file` that matches it, as anyone can write (it is not signed).
fn write_record(file: &Path, slug: &str, schema: &str, version: i64) {
    let record = serde_json::json!({
        "format": "tenantctl-backup/1", "slug": slug, "schema": schema, "display_name": null,
        "version": version, "role": null,
        "file": file.file_name().unwrap().to_string_lossy(), "sha256": sha256(file),
        "created_at": "2026-01-01T00:00:00Z", "server_major": 15, "pg_dump": "pg_dump (PostgreSQL) 15"
    });
    let mut json = file.as_os_str().to_owned();
    json.push(".json");
    std::fs::write(PathBuf::from(json), record.to_string()).unwrap();
}

/// A dump made by hand: `sql` run on a database of its own, then `pg_dump -Fc` with
/// `dump_args`, and a matching record claiming tenant acme.
fn crafted(db: &TestDb, label: &str, sql: &str, dump_args: &[&str]) -> PathBuf {
    let name = format!("{}_{label}", db.name);
    let admin = admin_url();
    query(&admin, &format!("DROP DATABASE IF EXISTS \"{name}\""));
    query(&admin, &format!("CREATE DATABASE \"{name}\""));
    let url = replace_dbname(&admin, &name);
    query(&url, sql);
    let file = db.dir.join(format!("{label}.dump"));
    let ok = Command::new("pg_dump")
        .args(["-Fc", "-f", path_str(&file)])
        .args(dump_args)
        .arg(&url)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pg_dump of the crafted schema");
    query(&admin, &format!("DROP DATABASE \"{name}\" WITH (FORCE)"));
    write_record(&file, "acme", "tenant_acme", 0);
    file
}

/// A checksum of every row of every table of a schema.
fn data_checksum(db: &TestDb, schema: &str) -> String {
    db.query(&format!(
        "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1"
    ))
    .iter()
    .map(|t| {
        let t = t[0].clone().unwrap();
        db.scalar(&format!(
            "SELECT '{t}:' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{schema}\".\"{t}\" x"
        ))
    })
    .collect::<Vec<_>>()
    .join(",")
}

/// Runs tenantctl and returns its output and process id (the restore names its scratch
/// database and role after it).
fn run_tracked(db: &TestDb, args: &[&str]) -> (Run, u32) {
    let child = spawn_tenantctl(db, args);
    let pid = child.id();
    (Run::from(child.wait_with_output().unwrap()), pid)
}

/// Scratch databases, restore roles and staging schemas left by the tenantctl process `pid`.
fn leftovers(db: &TestDb, pid: u32) -> Vec<String> {
    let like = format!("tenantctl\\_restore\\_{pid}\\_%");
    let mut left: Vec<String> = db
        .query(&format!(
            "SELECT 'database ' || datname FROM pg_database WHERE datname LIKE '{like}' \
             UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE '{like}' \
             UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'tenantctl_restore_{pid}'"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    left.sort();
    left
}

/// Everything a refused restore must leave alone.
struct World {
    snapshot: String,
    acme: String,
    globex: String,
    roles: String,
}

fn world(db: &TestDb, evil_role: &str) -> World {
    World {
        snapshot: db.snapshot(),
        acme: data_checksum(db, "tenant_acme"),
        globex: data_checksum(db, "tenant_globex"),
        roles: db.scalar(&format!(
            "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles \
              WHERE rolname = '{evil_role}' OR rolname LIKE 'app\\_{}'",
            db.name
        )),
    }
}

fn assert_unchanged(db: &TestDb, before: &World, evil_role: &str, pid: u32) {
    let after = world(db, evil_role);
    assert_eq!(
        after.snapshot, before.snapshot,
        "schemas or registry changed"
    );
    assert_eq!(after.acme, before.acme, "acme's rows changed");
    assert_eq!(after.globex, before.globex, "globex's rows changed");
    assert_eq!(after.roles, before.roles, "roles changed");
    assert_eq!(leftovers(db, pid), Vec::<String>::new());
}

/// Drops a role a failed test may have let a crafted dump create (roles are cluster-wide).
struct DropRole(String);
impl Drop for DropRole {
    fn drop(&mut self) {
        let _ = try_query(
            &admin_url(),
            &format!("DROP OWNED BY \"{0}\"; DROP ROLE \"{0}\"", self.0),
        );
    }
}

fn seeded(label: &str) -> TestDb {
    let db = TestDb::new(label);
    db.run(&["create", "acme", "globex"]).expect(0);
    for (schema, who) in [("tenant_acme", "acme"), ("tenant_globex", "globex")] {
        db.query(&format!(
            "INSERT INTO \"{schema}\".employees (email, full_name) VALUES ('{who}@example.org', '{who} one')"
        ));
    }
    db
}

#[test]
fn a_check_constraint_calling_a_function_that_creates_a_role_is_refused() {
    let db = seeded("evilcheck");
    let evil = format!("evil_{}", db.name);
    let _cleanup = DropRole(evil.clone());
    // The function is harmless while the dump is made and where no registry exists (the
    // scratch database); in the real database it makes a login role that is a member of
    // the restoring role, and rewrites another tenant's registry row.
    let dump = crafted(
        &db,
        "check",
        &format!(
            "CREATE SCHEMA tenant_acme;
             CREATE FUNCTION tenant_acme.ok(x integer) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN true; END $$;
             CREATE TABLE tenant_acme.notes (x integer CONSTRAINT notes_ok CHECK (tenant_acme.ok(x)));
             INSERT INTO tenant_acme.notes VALUES (1);
             CREATE OR REPLACE FUNCTION tenant_acme.ok(x integer) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               IF to_regclass('public.tenants') IS NOT NULL THEN
                 CREATE ROLE \"{evil}\" LOGIN PASSWORD 'pwned';
                 EXECUTE format('GRANT %I TO %I', current_user, '{evil}');
                 UPDATE public.tenants SET display_name = 'pwned' WHERE slug = 'globex';
               END IF;
               RETURN true;
             END $$;"
        ),
        &["-n", "tenant_acme"],
    );
    let before = world(&db, &evil);
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&dump), "--yes"]);
    r.expect(2)
        .mentions("refusing to restore")
        .mentions("CREATE FUNCTION tenant_acme.ok")
        .mentions("no file of the migrations folder defines")
        .mentions("nothing was changed");
    assert_unchanged(&db, &before, &evil, pid);
}

#[test]
fn a_security_definer_function_is_refused() {
    let db = seeded("evildefiner");
    let dump = crafted(
        &db,
        "definer",
        "SET check_function_bodies = off;
         CREATE SCHEMA tenant_acme;
         CREATE FUNCTION tenant_acme.peek() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
             AS $$ SELECT email FROM tenant_globex.employees $$;",
        &["-n", "tenant_acme"],
    );
    let before = world(&db, "none");
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&dump), "--yes"]);
    r.expect(2)
        .mentions("CREATE FUNCTION tenant_acme.peek()")
        .mentions("SECURITY DEFINER")
        .mentions("nothing was changed");
    assert_unchanged(&db, &before, "none", pid);
}

#[test]
fn a_view_of_another_tenants_schema_is_refused() {
    let db = seeded("evilview");
    let dump = crafted(
        &db,
        "view",
        "CREATE SCHEMA tenant_globex;
         CREATE TABLE tenant_globex.employees (email text);
         CREATE SCHEMA tenant_acme;
         CREATE VIEW tenant_acme.staff AS SELECT email FROM tenant_globex.employees;",
        &["-n", "tenant_acme"],
    );
    let before = world(&db, "none");
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&dump), "--yes"]);
    r.expect(2)
        .mentions("CREATE VIEW tenant_acme.staff")
        .mentions("refers to schema tenant_globex");
    assert_unchanged(&db, &before, "none", pid);
}

#[test]
fn entries_outside_the_tenants_schema_are_refused() {
    let db = seeded("evilout");
    // A second schema in the dump.
    let two = crafted(
        &db,
        "two",
        "CREATE SCHEMA tenant_acme; CREATE TABLE tenant_acme.t (x int);
         CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        &["-n", "tenant_acme", "-n", "public"],
    );
    // One schema, and an entry that belongs to none.
    let ext = crafted(
        &db,
        "ext",
        "CREATE SCHEMA tenant_acme; CREATE TABLE tenant_acme.t (x int);
         CREATE EXTENSION pg_trgm;",
        &["-n", "tenant_acme", "-e", "pg_trgm"],
    );
    let before = world(&db, "none");
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&two), "--yes"]);
    r.expect(2)
        .mentions("holds 2 schemas")
        .mentions("nothing was changed");
    assert_unchanged(&db, &before, "none", pid);
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&ext), "--yes"]);
    r.expect(2)
        .mentions("EXTENSION - pg_trgm")
        .mentions("outside the tenant's schema");
    assert_unchanged(&db, &before, "none", pid);
}

#[test]
fn the_tenant_comes_from_the_dump_not_from_its_record() {
    let db = seeded("evilrecord");
    let file = db.dir.join("acme.dump");
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
    // The record now claims the dump is globex's: restoring "globex" would replace
    // globex's rows with acme's.
    let json = db.dir.join("acme.dump.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    m["slug"] = "globex".into();
    std::fs::write(&json, m.to_string()).unwrap();
    let before = world(&db, "none");
    let (r, pid) = run_tracked(&db, &["restore", "globex", path_str(&file), "--yes"]);
    r.expect(2)
        .mentions("says tenant globex")
        .mentions("holds schema tenant_acme")
        .mentions("does not belong to this dump");
    assert_unchanged(&db, &before, "none", pid);
}

/// Starts a restore of a large tenant, waits for its scratch database, sends `signal` to
/// the tenantctl process alone, and checks that nothing is left and nothing changed.
fn interrupt_a_restore(signal: &str) {
    let db = seeded(&format!("restore{}", signal.to_lowercase()));
    db.query(
        "INSERT INTO tenant_acme.audit_log (actor, action, detail) \
         SELECT 'tester', 'insert', jsonb_build_object('n', i, 'pad', repeat('x', 200)) \
           FROM generate_series(1, 300000) AS i",
    );
    let file = db.dir.join("acme.dump");
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
    db.query("DELETE FROM tenant_acme.employees");
    let before = world(&db, "none");
    let tmp = db.dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let child = db
        .cmd()
        .args(["restore", "acme", path_str(&file), "--yes"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while !leftovers(&db, pid)
        .iter()
        .any(|l| l.starts_with("database"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the restore never made its scratch database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    let r = Run::from(child.wait_with_output().unwrap());
    r.expect(130)
        .mentions(&format!("interrupted by SIG{signal}"))
        .mentions("tenant acme was not changed");
    assert_unchanged(&db, &before, "none", pid);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a temporary file was left"
    );
}

#[test]
fn ctrl_c_during_a_restore_leaves_no_scratch_database_role_or_file() {
    interrupt_a_restore("INT");
}

#[test]
fn sigterm_during_a_restore_leaves_no_scratch_database_role_or_file() {
    interrupt_a_restore("TERM");
}

#[test]
fn a_restore_leaves_no_role_or_scratch_database_and_hands_everything_to_the_owner() {
    let db = seeded("restorerole");
    let file = db.dir.join("acme.dump");
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
    let (r, pid) = run_tracked(&db, &["restore", "acme", path_str(&file), "--yes"]);
    r.expect(0);
    assert_eq!(leftovers(&db, pid), Vec::<String>::new());
    // Everything restored belongs to tenantctl's role, as after create.
    assert_eq!(
        db.scalar(
            "SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner)::text, ',') FROM pg_class c \
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tenant_acme'"
        ),
        "postgres"
    );
    assert_eq!(
        db.scalar(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'tenant_acme'"
        ),
        "postgres"
    );
    db.run(&["verify"]).expect(0);
}

#[test]
fn code_the_migrations_define_runs_during_a_restore_as_a_role_that_cannot_touch_the_registry() {
    // A function the migrations folder itself defines (so the checks accept it), called by
    // a CHECK constraint while the rows are loaded, tries to rewrite another tenant's
    // registry row and to make a role: the restore role may do neither.
    let db = TestDb::new("restorebackstop");
    let evil = format!("evil_{}", db.name);
    let _cleanup = DropRole(evil.clone());
    let dir = db.migrations_with(
        "probe",
        &[(
            "V8__probe.sql",
            &format!(
                "CREATE FUNCTION probe(x integer) RETURNS boolean LANGUAGE plpgsql AS $$
                 BEGIN
                   IF to_regclass('public.tenants') IS NOT NULL
                      AND current_setting('app.probe', true) IS DISTINCT FROM 'off' THEN
                     UPDATE public.tenants SET display_name = 'pwned' WHERE slug = 'globex';
                     CREATE ROLE \"{evil}\" LOGIN;
                   END IF;
                   RETURN true;
                 END $$;
                 CREATE TABLE probes (x integer CHECK (probe(x)));"
            ),
        )],
    );
    db.run_with(&dir, &["create", "acme", "globex"]).expect(0);
    db.query("SET app.probe = 'off'; INSERT INTO tenant_acme.probes VALUES (1)");
    let file = db.dir.join("acme.dump");
    db.run_with(&dir, &["backup", "acme", "-o", path_str(&file)])
        .expect(0);
    let before = world(&db, &evil);
    // Under a loaded machine the restore has once failed earlier, at its pg_dump of the
    // scratch copy with an empty error (noted for investigation): every attempt must leave
    // everything unchanged, and one of at most three must reach the probe and be refused.
    let mut refused = false;
    for _ in 0..3 {
        let child = db
            .cmd()
            .args([
                "--migrations",
                path_str(&dir),
                "restore",
                "acme",
                path_str(&file),
                "--yes",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let r = Run::from(child.wait_with_output().unwrap());
        r.expect(1).mentions("the tenant was not changed");
        assert_unchanged(&db, &before, &evil, pid);
        if r.stderr.contains("permission denied for table tenants") {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "no restore reached the probe's write to the registry"
    );
}
