//! What a migration file may hold: refused before any tenant is touched, and files whose
//! first line is `-- no-transaction`, which run alone, outside a transaction (real server).

mod common;

use common::*;

/// Everything a refused run must leave alone: the schemas and registry rows (`snapshot`),
/// and every tenant's history table.
fn everything(db: &TestDb) -> String {
    let mut s = db.snapshot();
    for schema in db.tenant_schemas() {
        s.push_str(&format!(
            "{:?}",
            db.query(&format!(
                "SELECT version, name, checksum FROM \"{schema}\".refinery_schema_history ORDER BY 1"
            ))
        ));
    }
    s
}

/// Whether tenant schema `schema` has index `name`, and whether it is valid.
fn index(db: &TestDb, schema: &str, name: &str) -> Option<bool> {
    db.query(&format!(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
          WHERE c.relnamespace = '\"{schema}\"'::regnamespace AND c.relname = '{name}'"
    ))
    .first()
    .map(|r| r[0].as_deref() == Some("t"))
}

fn history_versions(db: &TestDb, schema: &str) -> String {
    db.scalar(&format!(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM \"{schema}\".refinery_schema_history"
    ))
}

#[test]
fn files_with_forbidden_statements_are_refused_before_any_tenant_is_touched() {
    let db = TestDb::new("refused");
    create_tenants(&db, 3);
    let before = everything(&db);
    let cases: &[(&str, &str, &str)] = &[
        (
            "V8__commits.sql",
            "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);\n",
            "line 2: COMMIT ends",
        ),
        (
            "V8__begins.sql",
            "-- a header\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
            "line 2: BEGIN opens",
        ),
        (
            "V8__path.sql",
            "CREATE TABLE a (id int);\n\nSET search_path = public;\nCREATE TABLE b (id int);\n",
            "line 3: SET search_path",
        ),
        (
            "V8__role.sql",
            "SET ROLE postgres;\nCREATE TABLE a (id int);\n",
            "line 1: SET ROLE",
        ),
        (
            "V8__auth.sql",
            "CREATE TABLE a (id int);\nset session authorization default;\n",
            "line 2: SET SESSION AUTHORIZATION",
        ),
        (
            "V8__cic.sql",
            "ALTER TABLE wellness_logs ADD COLUMN pulse int;\n\
             CREATE INDEX CONCURRENTLY wellness_logs_pulse_idx ON wellness_logs (pulse);\n",
            "line 2: CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
        ),
        ("V8__vacuum.sql", "VACUUM ANALYZE wellness_logs;\n", "line 1: VACUUM"),
        (
            "V8__do_commit.sql",
            "DO $$\nBEGIN\n  CREATE TABLE a (id int);\n  COMMIT;\nEND\n$$;\n",
            "line 4: COMMIT inside a DO block",
        ),
        (
            "V8__alone_path.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON wellness_logs (steps);\nSET search_path = public;\n",
            "line 3: SET search_path",
        ),
        (
            "V8__empty.sql",
            "-- nothing yet\n/* to do; */\n\n",
            "holds no SQL statement",
        ),
        ("V0__zero.sql", "CREATE TABLE a (id int);", "versions start at 1"),
    ];
    for (file, sql, needle) in cases {
        let dir = db.migrations_with(&file.replace(".sql", ""), &[(file, sql)]);
        for args in [
            &["migrate"][..],
            &["migrate", "--dry-run"],
            &["create", "newco"],
            &["status"],
        ] {
            let r = db.run_with(&dir, args);
            r.expect(2).mentions(file).mentions(needle);
        }
        let r = db.run_with(&dir, &["--format", "json", "migrate"]);
        r.expect(2);
        assert_eq!(r.json()["exit_code"], 2);
        assert!(r.json()["error"].as_str().unwrap().contains(file));
        assert_eq!(everything(&db), before, "{file}: nothing may change");
    }
}

#[test]
fn semicolons_inside_bodies_strings_and_comments_are_not_statement_ends() {
    // The same text runs once inside a transaction (V8) and once statement by statement
    // (V9, alone): a `;` cut in the wrong place would fail the second.
    let body = "CREATE FUNCTION note_{n}(t text) RETURNS text LANGUAGE plpgsql AS $fn$\n\
                BEGIN\n  -- COMMIT; here is a comment\n  RETURN 'BEGIN; ' || t || E' \\'; COMMIT;';\nEND\n$fn$;\n\
                /* SET search_path = public; ROLLBACK; */\n\
                CREATE TABLE \"odd;name_{n}\" (\"col;1\" text DEFAULT 'a;b', c2 text);\n\
                COMMENT ON TABLE \"odd;name_{n}\" IS $c$ a; b; VACUUM; $c$;\n\
                SELECT 1 -- trailing; comment\n;\n";
    let db = TestDb::new("semicolons");
    create_tenants(&db, 2);
    let v7 = body.replace("{n}", "7");
    let v8 = format!(
        "-- no-transaction\n{}CREATE INDEX CONCURRENTLY odd_idx ON \"odd;name_8\" (\"col;1\");\n",
        body.replace("{n}", "8")
    );
    let dir = db.migrations_with(
        "tricky",
        &[
            ("V8__tricky.sql", v7.as_str()),
            ("V9__tricky_alone.sql", v8.as_str()),
        ],
    );
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("2 applied");
    for schema in ["tenant_t000", "tenant_t001"] {
        assert_eq!(
            db.scalar(&format!("SELECT \"{schema}\".note_8('x')")),
            "BEGIN; x '; COMMIT;"
        );
        assert_eq!(
            db.scalar(&format!(
                "SELECT obj_description('\"{schema}\".\"odd;name_7\"'::regclass)"
            )),
            " a; b; VACUUM; "
        );
        assert_eq!(index(&db, schema, "odd_idx"), Some(true));
    }
}

#[test]
fn a_no_transaction_file_builds_an_index_concurrently_in_every_tenant() {
    let db = TestDb::new("alone");
    create_tenants(&db, 4);
    let dir = db.migrations_with(
        "alone",
        &[
            (
                "V8__pulse.sql",
                "ALTER TABLE wellness_logs ADD COLUMN pulse smallint;",
            ),
            (
                "V9__pulse_idx.sql",
                "-- no-transaction\n\
                 DROP INDEX CONCURRENTLY IF EXISTS wellness_logs_pulse_idx;\n\
                 CREATE INDEX CONCURRENTLY wellness_logs_pulse_idx ON wellness_logs (pulse);\n",
            ),
            ("V10__after.sql", "CREATE TABLE after_alone (id int);"),
        ],
    );
    let before = everything(&db);
    db.run_with(&dir, &["migrate", "--dry-run"])
        .expect(0)
        .mentions("V8__pulse, V9__pulse_idx (alone, without a transaction), V10__after");
    assert_eq!(everything(&db), before, "a dry run changes nothing");

    let r = db.run_with(&dir, &["migrate", "--concurrency", "2", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["summary"]["applied"], 4);
    for t in doc["tenants"].as_array().unwrap() {
        assert_eq!(
            (t["from_version"].as_i64(), t["to_version"].as_i64()),
            (Some(7), Some(10))
        );
        assert_eq!(
            t["migrations"],
            serde_json::json!(["V8__pulse", "V9__pulse_idx", "V10__after"])
        );
    }
    for schema in db.tenant_schemas() {
        assert_eq!(index(&db, &schema, "wellness_logs_pulse_idx"), Some(true));
        assert_eq!(history_versions(&db, &schema), "1,2,3,4,5,6,7,8,9,10");
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_class WHERE relname = 'wellness_logs_pulse_idx' AND relnamespace = 'public'::regnamespace"),
        "0"
    );
    assert_eq!(
        db.scalar(
            "SELECT string_agg(version || ':' || n, ',' ORDER BY version) FROM \
             (SELECT version, count(*) AS n FROM public.tenant_migrations \
               WHERE version > 7 AND outcome = 'applied' GROUP BY version) x"
        ),
        "8:4,9:4,10:4",
        "recorded once per tenant"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'active' AND version = 10 AND last_error IS NULL"),
        "4"
    );
    db.run_with(&dir, &["status", "--check"]).expect(0);
    // Nothing pending: nothing changes.
    let done = everything(&db);
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("4 up to date");
    assert_eq!(everything(&db), done);
    db.run_with(&dir, &["verify"]).expect(0);
}

#[test]
fn a_no_transaction_file_that_fails_in_one_tenant_leaves_it_at_its_previous_version() {
    let db = TestDb::new("alonefail");
    create_tenants(&db, 4);
    // Two employees of t001 share a name: the unique index cannot be built there.
    db.query(
        "INSERT INTO tenant_t001.employees (email, full_name) VALUES \
         ('a@x.org', 'Sam Lee'), ('b@x.org', 'Sam Lee')",
    );
    let dir = db.migrations_with(
        "unique",
        &[(
            "V8__unique_names.sql",
            "-- no-transaction\n\
             DROP INDEX CONCURRENTLY IF EXISTS employees_full_name_key;\n\
             CREATE UNIQUE INDEX CONCURRENTLY employees_full_name_key ON employees (full_name);\n",
        )],
    );
    let r = db.run_with(&dir, &["migrate", "--concurrency", "1"]);
    r.expect(1)
        .mentions("t001")
        .mentions("V8__unique_names")
        .mentions("line 3")
        .mentions("could not create unique index")
        .mentions("INVALID index")
        .mentions("3 applied, 0 up to date, 1 failed");
    let row = db.query("SELECT state, version, last_error FROM public.tenants WHERE slug = 't001'");
    assert_eq!(row[0][0].as_deref(), Some("failed"));
    assert_eq!(row[0][1].as_deref(), Some("7"));
    assert!(row[0][2].as_deref().unwrap().contains("V8__unique_names"));
    assert_eq!(history_versions(&db, "tenant_t001"), "1,2,3,4,5,6,7");
    assert_eq!(
        db.scalar(
            "SELECT outcome FROM public.tenant_migrations WHERE slug = 't001' AND version = 8"
        ),
        "failed"
    );
    // What PostgreSQL leaves behind a failed CREATE INDEX CONCURRENTLY (README).
    assert_eq!(
        index(&db, "tenant_t001", "employees_full_name_key"),
        Some(false)
    );
    for t in ["tenant_t000", "tenant_t002", "tenant_t003"] {
        assert_eq!(history_versions(&db, t), "1,2,3,4,5,6,7,8");
        assert_eq!(index(&db, t, "employees_full_name_key"), Some(true));
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'active' AND version = 8"),
        "3"
    );
    // The lock and the session were released: another run gets to t001 at once.
    db.query("DELETE FROM tenant_t001.employees WHERE email = 'b@x.org'");
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("1 applied, 3 up to date");
    assert_eq!(history_versions(&db, "tenant_t001"), "1,2,3,4,5,6,7,8");
    assert_eq!(
        index(&db, "tenant_t001", "employees_full_name_key"),
        Some(true)
    );
    db.run_with(&dir, &["status", "--check"]).expect(0);
}

#[test]
fn session_settings_of_a_no_transaction_file_reach_neither_its_record_nor_the_next_tenant() {
    // Without the reset before the history is written, that write would run read-only and
    // fail; without the reset after, the next tenant on the connection would too.
    let db = TestDb::new("aloneleak");
    create_tenants(&db, 3);
    let dir = db.migrations_with(
        "leaky",
        &[
            (
                "V8__leaky.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY steps_idx ON wellness_logs (steps);\n\
                 SET default_transaction_read_only = on;\n",
            ),
            ("V9__after.sql", "CREATE TABLE after_leak (id int);"),
        ],
    );
    db.run_with(&dir, &["migrate", "--concurrency", "1"])
        .expect(0)
        .mentions("3 applied");
    for schema in db.tenant_schemas() {
        assert_eq!(history_versions(&db, &schema), "1,2,3,4,5,6,7,8,9");
    }
}

#[test]
fn two_runs_at_once_never_apply_a_no_transaction_file_twice() {
    let db = TestDb::new("alonetwo");
    create_tenants(&db, 12);
    let dir = db.migrations_with(
        "two",
        &[
            (
                "V8__idx.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY steps_idx ON wellness_logs (steps);\n",
            ),
            ("V9__after.sql", "CREATE TABLE after_two (id int);"),
        ],
    );
    let runs = [spawn_migrate(&db, &dir, "3"), spawn_migrate(&db, &dir, "3")];
    for child in runs {
        Run::from(child.wait_with_output().unwrap()).expect(0);
    }
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM public.tenant_migrations WHERE version = 8 AND outcome = 'applied'"
        ),
        "12"
    );
    for schema in db.tenant_schemas() {
        assert_eq!(history_versions(&db, &schema), "1,2,3,4,5,6,7,8,9");
        assert_eq!(index(&db, &schema, "steps_idx"), Some(true));
    }
}

#[test]
fn create_runs_a_no_transaction_file_after_its_transaction() {
    let db = TestDb::new("alonecreate");
    let dir = db.migrations_with(
        "create",
        &[
            (
                "V8__idx.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY steps_idx ON wellness_logs (steps);\n",
            ),
            ("V9__after.sql", "CREATE TABLE after_create (id int);"),
        ],
    );
    let r = db.run_with(&dir, &["create", "acme", "--format", "json"]);
    r.expect(0);
    assert_eq!(r.json()["tenants"][0]["to_version"], 9);
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'acme'"),
        "active:9"
    );
    assert_eq!(history_versions(&db, "tenant_acme"), "1,2,3,4,5,6,7,8,9");
    assert_eq!(index(&db, "tenant_acme", "steps_idx"), Some(true));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE slug = 'acme' AND outcome = 'applied'"),
        "9"
    );

    // A file that fails after the creating transaction committed: the tenant stays,
    // `failed` at the version before it, with its error; `migrate` finishes it.
    let broken = db.migrations_with(
        "broken",
        &[(
            "V8__idx.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY steps_idx ON no_such_table (steps);\n",
        )],
    );
    let r = db.run_with(&broken, &["create", "globex"]);
    r.expect(1)
        .mentions("globex")
        .mentions("V8__idx")
        .mentions("\"no_such_table\" does not exist")
        .mentions("tenantctl migrate globex");
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'globex'"),
        "failed:7"
    );
    assert_eq!(history_versions(&db, "tenant_globex"), "1,2,3,4,5,6,7");
    let fixed = db.migrations_with(
        "fixed",
        &[(
            "V8__idx.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY steps_idx ON wellness_logs (steps);\n",
        )],
    );
    db.run_with(&fixed, &["migrate", "globex"])
        .expect(0)
        .mentions("1 applied");
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'globex'"),
        "active:8"
    );
    assert_eq!(index(&db, "tenant_globex", "steps_idx"), Some(true));
}
