//! `tenantctl exec`: SQL in many tenants, one transaction each, under the tenant's lock,
//! recorded in the registry (real server, the binary).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

/// Tenants t000.. with one department each, named `d<i>`.
fn fleet(db: &TestDb, n: usize) {
    create_tenants(db, n);
    for i in 0..n {
        db.query(&format!(
            "INSERT INTO tenant_t{i:03}.departments (name) VALUES ('d{i}')"
        ));
    }
}

fn cost_centers(db: &TestDb, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            db.scalar(&format!(
                "SELECT coalesce(string_agg(coalesce(cost_center, '-'), ',' ORDER BY id), '') \
                   FROM tenant_t{i:03}.departments"
            ))
        })
        .collect()
}

/// (slug, outcome, rows_affected) of every recorded tenant of the latest run.
fn audit(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.query(
        "SELECT slug, outcome, rows_affected::text FROM public.tenant_exec_results \
          WHERE run_id = (SELECT max(id) FROM public.tenant_exec_runs) ORDER BY slug",
    )
}

fn row(v: &[&str]) -> Vec<Option<String>> {
    v.iter()
        .map(|s| (!s.is_empty()).then(|| s.to_string()))
        .collect()
}

#[test]
fn exec_changes_exactly_the_named_tenants_and_records_the_run() {
    let db = TestDb::new("exec_named");
    fleet(&db, 4);
    let sql = "UPDATE departments SET cost_center = 'fixed'";
    let r = db.run(&["exec", "-c", sql, "t001", "t002"]);
    r.expect(0).mentions("2 done, 0 failed");
    assert_eq!(cost_centers(&db, 4), vec!["-", "fixed", "fixed", "-"]);
    assert_eq!(
        audit(&db),
        vec![row(&["t001", "done", "1"]), row(&["t002", "done", "1"])]
    );
    // Which tenants got this fix? By the SQL's SHA-256.
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(sql.as_bytes()))
    };
    let got = db.query(&format!(
        "SELECT res.slug, r.source, r.run_by, r.dry_run::text \
           FROM public.tenant_exec_runs r JOIN public.tenant_exec_results res ON res.run_id = r.id \
          WHERE r.sha256 = '{sha}' AND res.outcome = 'done' ORDER BY 1"
    ));
    assert_eq!(
        got,
        vec![
            row(&["t001", "-c", "postgres", "false"]),
            row(&["t002", "-c", "postgres", "false"])
        ]
    );
    // A file, in every tenant by default; rows affected per tenant in the JSON report.
    std::fs::write(
        db.dir.join("fix.sql"),
        "UPDATE departments SET cost_center = 'all';\nINSERT INTO departments (name) VALUES ('new');\n",
    )
    .unwrap();
    let r = db.run(&["exec", "--file", "fix.sql", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["summary"]["done"], 4);
    assert_eq!(doc["source"], "fix.sql");
    assert_eq!(doc["tenants"][0]["rows_affected"], 2);
    assert_eq!(cost_centers(&db, 4)[3], "all,-");
}

#[test]
fn one_failing_tenant_keeps_its_rows_and_the_others_are_done() {
    let db = TestDb::new("exec_fail");
    fleet(&db, 3);
    db.query("INSERT INTO tenant_t001.departments (name) VALUES ('dup')");
    let sql = "UPDATE departments SET cost_center = 'fixed';\n\
               INSERT INTO departments (name) VALUES ('dup');";
    let r = db.run(&["exec", "-c", sql]);
    r.expect(1)
        .mentions("t001")
        .mentions("duplicate key value")
        .mentions("2 done, 1 failed");
    assert_eq!(cost_centers(&db, 3), vec!["fixed,-", "-,-", "fixed,-"]);
    let a = audit(&db);
    assert_eq!(a[1][..2], row(&["t001", "failed"])[..]);
    assert_eq!(a.len(), 3);
    // --canary 1: t000 goes first; when it fails the rest is not started.
    db.query("INSERT INTO tenant_t000.departments (name) VALUES ('canary')");
    let sql = "UPDATE departments SET cost_center = 'second';\n\
               INSERT INTO departments (name) VALUES ('canary');";
    let r = db.run(&["exec", "--canary", "1", "-c", sql]);
    r.expect(1).mentions("a canary tenant failed");
    assert_eq!(cost_centers(&db, 3), vec!["fixed,-,-", "-,-", "fixed,-"]);
    let r = db.run(&["exec", "--fail-fast", "--concurrency", "1", "-c", sql]);
    r.expect(1).mentions("an earlier tenant failed");
    assert_eq!(cost_centers(&db, 3), vec!["fixed,-,-", "-,-", "fixed,-"]);
}

#[test]
fn a_dry_run_reports_what_it_would_change_and_changes_nothing() {
    let db = TestDb::new("exec_dry");
    fleet(&db, 2);
    let before = cost_centers(&db, 2);
    let r = db.run(&[
        "exec",
        "--dry-run",
        "--format",
        "json",
        "-c",
        "DELETE FROM departments",
    ]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["summary"]["rolled_back"], 2);
    assert_eq!(doc["tenants"][1]["rows_affected"], 1);
    assert_eq!(cost_centers(&db, 2), before);
    assert_eq!(
        audit(&db),
        vec![
            row(&["t000", "rolled_back", "1"]),
            row(&["t001", "rolled_back", "1"])
        ]
    );
    db.run(&["exec", "--dry-run", "-c", "DELETE FROM departments"])
        .expect(0)
        .mentions("2 rolled back");
}

#[test]
fn query_results_come_back_combined_with_the_tenant_first() {
    let db = TestDb::new("exec_query");
    fleet(&db, 2);
    db.query("UPDATE tenant_t001.departments SET cost_center = 'a,\"b\"'");
    let sql = "SELECT name, cost_center FROM departments ORDER BY name";
    let r = db.run(&["exec", "-c", sql]);
    r.expect(0)
        .mentions("tenant")
        .mentions("cost_center")
        .mentions("t001");
    let r = db.run(&["exec", "--format", "json", "-c", sql]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(
        doc["columns"],
        serde_json::json!(["tenant", "name", "cost_center"])
    );
    assert_eq!(
        doc["rows"],
        serde_json::json!([["t000", "d0", null], ["t001", "d1", "a,\"b\""]])
    );
    assert_eq!(doc["tenants"][0]["rows_returned"], 1);
    let r = db.run(&["exec", "--format", "csv", "-c", sql]);
    r.expect(0);
    assert_eq!(
        r.stdout,
        "tenant,name,cost_center\r\nt000,d0,\r\nt001,d1,\"a,\"\"b\"\"\"\r\n"
    );
    assert!(r.stderr.contains("2 done"), "{}", r.stderr);
}

#[test]
fn exec_waits_for_a_migration_holding_the_tenants_lock() {
    let db = TestDb::new("exec_waits");
    fleet(&db, 1);
    // A migration that holds the tenant's lock for a while, then adds the column exec uses.
    let dir = db.migrations_with(
        "v8",
        &[(
            "V8__region.sql",
            "SELECT pg_sleep(2);\nALTER TABLE departments ADD COLUMN region text;",
        )],
    );
    let migrate = spawn_migrate(&db, &dir, "1");
    wait_for_tenant_lock_holder(&db, "tenant_t000");
    let r = db.run(&["exec", "-c", "UPDATE departments SET region = 'eu'"]);
    r.expect(0).mentions("1 done");
    finish_within(migrate, Duration::from_secs(30)).expect(0);
    assert_eq!(
        db.scalar("SELECT region FROM tenant_t000.departments"),
        "eu"
    );
}

#[test]
fn exec_waits_for_any_holder_of_the_tenants_lock() {
    let db = TestDb::new("exec_holder");
    fleet(&db, 1);
    let mut holder = psql_session(&db);
    let stdin = holder.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "BEGIN; SELECT pg_advisory_xact_lock({}, hashtext('tenant_t000'));",
        tenantctl::registry::locks::LOCK_CLASS
    )
    .unwrap();
    stdin.flush().unwrap();
    wait_for_tenant_lock_holder(&db, "tenant_t000");
    let exec = spawn_tenantctl(
        &db,
        &["exec", "-c", "UPDATE departments SET cost_center = 'x'"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        cost_centers(&db, 1),
        vec!["-"],
        "exec ran under another's lock"
    );
    writeln!(holder.stdin.as_mut().unwrap(), "COMMIT;").unwrap();
    drop(holder.stdin.take());
    finish_within(exec, Duration::from_secs(30)).expect(0);
    let _ = holder.wait();
    assert_eq!(cost_centers(&db, 1), vec!["x"]);
    // With --lock-timeout, a holder that stays makes that tenant fail, naming it.
    let mut holder = psql_session(&db);
    writeln!(
        holder.stdin.as_mut().unwrap(),
        "BEGIN; SELECT pg_advisory_xact_lock({}, hashtext('tenant_t000'));",
        tenantctl::registry::locks::LOCK_CLASS
    )
    .unwrap();
    holder.stdin.as_mut().unwrap().flush().unwrap();
    let pid = wait_for_tenant_lock_holder(&db, "tenant_t000");
    let r = db.run(&[
        "--lock-timeout",
        "300ms",
        "exec",
        "-c",
        "UPDATE departments SET cost_center = 'y'",
    ]);
    r.expect(1)
        .mentions(&format!("pg_terminate_backend({pid})"));
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert_eq!(cost_centers(&db, 1), vec!["x"]);
}

#[test]
fn bad_sql_and_bad_flags_are_refused_before_anything_runs() {
    let db = TestDb::new("exec_bad");
    fleet(&db, 1);
    db.run(&["exec", "-c", "SELECT 1"]).expect(0);
    let before = format!("{}{:?}", db.snapshot(), audit(&db));
    for (sql, needle) in [
        ("UPDATE departments SET name = 'x';\nCOMMIT;", "line 2"),
        ("SET search_path TO public", "line 1"),
        ("SET ROLE postgres", "line 1"),
        ("", "no SQL statement"),
    ] {
        db.run(&["exec", "-c", sql])
            .expect(2)
            .mentions("the SQL of -c")
            .mentions(needle);
    }
    db.run(&["exec", "--file", "missing.sql"])
        .expect(2)
        .mentions("cannot read");
    db.run(&["exec", "-c", "SELECT 1", "nobody"])
        .expect(2)
        .mentions("unknown tenant");
    db.run(&["exec"]).expect(2);
    db.run(&["exec", "-c", "SELECT 1", "--file", "x.sql"])
        .expect(2);
    db.run(&["--format", "csv", "status"])
        .expect(2)
        .mentions("--format csv is written by exec");
    assert_eq!(format!("{}{:?}", db.snapshot(), audit(&db)), before);
    assert_eq!(cost_centers(&db, 1), vec!["-"]);
}
