//! tenantctl's own SQL against hostile objects, the example audit trail, and `grant`,
//! against a real server.

mod common;

use std::path::PathBuf;

use common::*;

/// The example migrations without V7 (the audit hardening), as tenants had them before it.
fn migrations_before_v7(db: &TestDb) -> PathBuf {
    let dir = db.migrations_with("before-v7", &[]);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("V7__") {
            std::fs::remove_file(p).unwrap();
        }
    }
    dir
}

#[test]
fn functions_planted_in_a_writable_public_never_run_as_tenantctl() {
    let db = TestDb::new("planted");
    let (intruder, intruder_url) = db.role("intruder");
    // PostgreSQL 14 and older (and databases upgraded from them) let every role create in
    // public. Each function planted there matches a call of tenantctl's better than the
    // built-in one does (bigint[] against anyarray, name against text), and records that it
    // ran, and as whom.
    db.query("GRANT CREATE ON SCHEMA public TO PUBLIC");
    try_query(
        &intruder_url,
        "CREATE TABLE public.trap_log (fn text, ran_as text); \
         GRANT INSERT ON public.trap_log TO PUBLIC; \
         CREATE FUNCTION public.cardinality(bigint[]) RETURNS integer LANGUAGE sql AS \
           $$ INSERT INTO public.trap_log VALUES ('cardinality', current_user); SELECT 0 $$; \
         CREATE FUNCTION public.left(name, integer) RETURNS text LANGUAGE sql AS \
           $$ INSERT INTO public.trap_log VALUES ('left', current_user); SELECT ''::text $$;",
    )
    .unwrap();

    db.run(&["create", "acme", "globex"]).expect(0);
    let dir = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    db.run_with(&dir, &["migrate"]).expect(0);
    db.query("ALTER TABLE tenant_globex.x RENAME TO y");
    // A failure is recorded too (the failed attempt's timestamps).
    let bad = db.migrations_with(
        "bad",
        &[
            ("V8__x.sql", "CREATE TABLE x (id int);"),
            ("V9__y.sql", "ALTER TABLE x ADD COLUMN n int;"),
        ],
    );
    db.run_with(&bad, &["migrate", "globex"]).expect(1);
    db.run_with(&bad, &["status"]).expect(0);
    db.run(&["list"]).expect(0);
    let r = db.run_with(&bad, &["verify", "--format", "json"]);
    r.expect(1);
    // The registry's own function resolves names in pg_catalog only, whatever the caller's path.
    assert_eq!(
        db.query(
            "SELECT p.oid::regprocedure::text, array_to_string(proconfig, ';') FROM pg_proc p \
              WHERE proname = 'tenantctl_enter'"
        ),
        vec![vec![
            Some("tenantctl_enter(integer,text,text,bigint,text)".to_string()),
            Some("search_path=pg_catalog, pg_temp".to_string())
        ]]
    );
    assert_eq!(
        db.query("SELECT fn, ran_as FROM public.trap_log"),
        Vec::<Vec<Option<String>>>::new(),
        "a planted function ran"
    );
    // verify names the hole itself.
    let doc = r.json();
    let public_create: Vec<&serde_json::Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "public_create")
        .collect();
    assert_eq!(public_create.len(), 1, "{doc:#}");
    assert_eq!(public_create[0]["schema"], "public");
    assert!(
        public_create[0]["detail"]
            .as_str()
            .unwrap()
            .contains("PUBLIC holds CREATE on schema public"),
        "{doc:#}"
    );
    // A role of its own is named, PUBLIC's grant gone or not.
    db.query(&format!(
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT CREATE ON SCHEMA public TO \"{intruder}\""
    ));
    db.run(&["verify", "acme"])
        .expect(1)
        .mentions("public_create")
        .mentions(&format!("{intruder} holds CREATE on schema public"));
}

/// An application session: a temporary table named audit_log, then a change of an employee.
/// Returns the rows that landed in the temporary table.
fn insert_beside_a_temp_audit_log(app_url: &str, schema: &str, email: &str) -> String {
    let rows = try_query(
        app_url,
        &format!(
            "SET search_path TO \"{schema}\"; \
             CREATE TEMP TABLE audit_log (actor text, action text, entity text, entity_id bigint, detail jsonb); \
             INSERT INTO employees (email, full_name) VALUES ('{email}', 'Someone'); \
             SELECT count(*) FROM pg_temp.audit_log;"
        ),
    )
    .unwrap();
    rows[0][0].clone().unwrap()
}

#[test]
fn the_audit_trail_reaches_the_tenant_only_and_the_data_role_cannot_erase_it() {
    let db = TestDb::new("audit");
    let (app, app_url) = db.role("app");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run_with(
        migrations_before_v7(&db),
        &["--config", cfg, "create", "old"],
    )
    .expect(0);
    // What V5 captured when tenantctl pointed migrations at the bare schema.
    db.query("ALTER FUNCTION tenant_old.audit_row_change() SET search_path = tenant_old");
    let audited = |schema: &str| {
        db.scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".audit_log WHERE entity = 'employees'"
        ))
    };
    assert_eq!(
        insert_beside_a_temp_audit_log(&app_url, "tenant_old", "a@example.org"),
        "1",
        "before V7, the session's temporary table got the audit row"
    );
    assert_eq!(audited("tenant_old"), "0");

    db.run(&["--config", cfg, "migrate"]).expect(0);
    db.run(&["--config", cfg, "create", "new"]).expect(0);
    for schema in ["tenant_old", "tenant_new"] {
        let before: i64 = audited(schema).parse().unwrap();
        assert_eq!(
            insert_beside_a_temp_audit_log(&app_url, schema, "b@example.org"),
            "0",
            "{schema}: the temporary table got an audit row"
        );
        assert_eq!(
            audited(schema).parse::<i64>().unwrap(),
            before + 1,
            "{schema}"
        );
        // INSERT only: the trail can be added to through the trigger, not read or erased.
        for denied in [
            format!("DELETE FROM \"{schema}\".audit_log"),
            format!("UPDATE \"{schema}\".audit_log SET actor = 'nobody'"),
            format!("TRUNCATE \"{schema}\".audit_log"),
            format!("SELECT count(*) FROM \"{schema}\".audit_log"),
        ] {
            let err = try_query(&app_url, &denied).expect_err(&denied);
            assert!(err.contains("permission denied"), "{denied}: {err}");
        }
        // Even with DELETE handed back (a restore re-applies the data privileges to every
        // table), row-level security leaves the rows alone.
        db.query(&format!(
            "GRANT SELECT, DELETE ON \"{schema}\".audit_log TO \"{app}\""
        ));
        let rows = try_query(
            &app_url,
            &format!(
                "DELETE FROM \"{schema}\".audit_log; SELECT count(*) FROM \"{schema}\".audit_log"
            ),
        )
        .unwrap();
        assert_eq!(rows[0][0].as_deref(), Some("0"), "the app sees no rows");
        assert_eq!(
            audited(schema).parse::<i64>().unwrap(),
            before + 1,
            "{schema}"
        );
        db.query(&format!(
            "REVOKE SELECT, DELETE ON \"{schema}\".audit_log FROM \"{app}\""
        ));
    }
    // `grant` fills in what a role lacks; it does not hand DELETE back.
    db.run(&["--config", cfg, "grant"]).expect(0);
    assert_eq!(
        db.scalar(&format!(
            "SELECT has_table_privilege('{app}', 'tenant_new.audit_log', 'DELETE')::text \
             || has_table_privilege('{app}', 'tenant_new.audit_log', 'INSERT')::text"
        )),
        "falsetrue"
    );
    db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");
    // A function a migration pins with SET search_path FROM CURRENT gets pg_temp last.
    let dir = db.migrations_with(
        "pinned",
        &[(
            "V8__pinned.sql",
            "CREATE FUNCTION pinned() RETURNS int LANGUAGE sql SET search_path FROM CURRENT \
             AS 'SELECT 1';",
        )],
    );
    db.run_with(&dir, &["--config", cfg, "migrate"]).expect(0);
    assert_eq!(
        db.scalar(
            "SELECT array_to_string(proconfig, ';') FROM pg_proc WHERE oid = 'tenant_new.pinned()'::regprocedure"
        ),
        "search_path=\"tenant_new\", pg_temp"
    );
}

#[test]
fn grant_reaches_tenants_created_before_app_role_was_set() {
    let db = TestDb::new("grant");
    let (app, app_url) = db.role("app");
    db.run(&["create", "legacy", "other"]).expect(0);
    // Bad input changes nothing: no app_role configured.
    let acl = "SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname LIKE 'tenant%' \
               UNION ALL SELECT relname, relacl::text FROM pg_class \
                WHERE relnamespace = 'tenant_legacy'::regnamespace \
               UNION ALL SELECT 'defaults', count(*)::text FROM pg_default_acl \
               UNION ALL SELECT attname, attacl::text FROM pg_attribute \
                WHERE attrelid = 'public.tenants'::regclass ORDER BY 1, 2";
    let before = (db.snapshot(), db.query(acl));
    db.run(&["grant", "legacy"])
        .expect(2)
        .mentions("no application role is configured");
    assert_eq!((db.snapshot(), db.query(acl)), before);
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    let r = db.run(&["--config", cfg, "verify", "--format", "json"]);
    r.expect(1);
    let found = r.json()["findings"].clone();
    let missing: Vec<&serde_json::Value> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "missing_grant")
        .collect();
    assert_eq!(missing.len(), 3, "{found:#}"); // two tenants and the registry
    let legacy = missing
        .iter()
        .find(|f| f["slug"] == "legacy")
        .expect("legacy is reported");
    let detail = legacy["detail"].as_str().unwrap();
    assert!(
        detail.contains("USAGE on the schema")
            && detail.contains("employees")
            && detail.contains("run tenantctl grant legacy"),
        "{detail}"
    );
    let err = try_query(&app_url, "SELECT count(*) FROM tenant_legacy.employees").unwrap_err();
    assert!(err.contains("permission denied"), "{err}");

    // Bad input changes nothing: an unknown tenant.
    let before = (db.snapshot(), db.query(acl));
    db.run(&["--config", cfg, "grant", "legacy", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody");
    assert_eq!((db.snapshot(), db.query(acl)), before);

    let r = db.run(&["--config", cfg, "--format", "json", "grant", "legacy"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["tenants"][0]["outcome"], "granted");
    assert_eq!(doc["tenants"][0]["data_role"], app.as_str());
    assert!(
        doc["tenants"][0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "employees"),
        "{doc}"
    );
    // The application reaches legacy now: data yes, history and DDL no.
    try_query(
        &app_url,
        "INSERT INTO tenant_legacy.employees (email, full_name) VALUES ('a@example.org', 'A'); \
         SELECT count(*) FROM tenant_legacy.employees",
    )
    .unwrap();
    for denied in [
        "SELECT * FROM tenant_legacy.refinery_schema_history",
        "CREATE TABLE tenant_legacy.sneaky (id int)",
        "SELECT last_error FROM public.tenants",
    ] {
        let err = try_query(&app_url, denied).expect_err(denied);
        assert!(err.contains("permission denied"), "{denied}: {err}");
    }
    // audit_log had no grant either, so it got the data privileges like every table; its
    // row-level security policy still keeps the trail append-only for the application.
    let trail = "SELECT count(*) FROM tenant_legacy.audit_log";
    let before = db.scalar(trail);
    assert_ne!(before, "0");
    try_query(&app_url, "DELETE FROM tenant_legacy.audit_log").unwrap();
    assert_eq!(db.scalar(trail), before);
    db.run(&["--config", cfg, "verify", "legacy"])
        .expect(0)
        .mentions("0 findings");
    // Tables that later migrations add are covered by the default privileges it set.
    let dir = db.migrations_with("next", &[("V8__later.sql", "CREATE TABLE later (id int);")]);
    db.run_with(&dir, &["--config", cfg, "migrate"]).expect(0);
    try_query(&app_url, "INSERT INTO tenant_legacy.later VALUES (1)").unwrap();
    // All tenants, again: idempotent, nothing left to fill in for legacy.
    let r = db.run(&["--config", cfg, "grant"]);
    r.expect(0).mentions("2 tenants: 2 granted, 0 failed");
    db.run_with(&dir, &["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");
    // A tenant whose schema is gone fails alone (exit 1), the others are granted.
    db.query("DROP SCHEMA tenant_other CASCADE");
    db.run(&["--config", cfg, "grant"])
        .expect(1)
        .mentions("schema tenant_other is missing")
        .mentions("1 granted, 1 failed");
}

#[test]
fn functions_in_a_tenant_schema_never_stand_in_for_the_ones_tenantctl_calls() {
    let db = TestDb::new("shadow");
    // A migration defines a function that matches a call of tenantctl's registry SQL better
    // than the built-in one does.
    let dir = db.migrations_with(
        "shadow",
        &[(
            "V8__shadow.sql",
            "CREATE TABLE shadow_log (fn text);\n\
             CREATE FUNCTION cardinality(bigint[]) RETURNS integer LANGUAGE sql AS \
             $$ INSERT INTO shadow_log VALUES ('cardinality'); SELECT 0 $$;",
        )],
    );
    db.run_with(&dir, &["create", "acme"]).expect(0);
    // Without its fingerprint the next run reads the history, finds nothing pending, and
    // records that inside the tenant's transaction, with the tenant's search_path.
    db.query("UPDATE public.tenants SET migrations_digest = NULL");
    db.run_with(&dir, &["migrate", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(
        db.scalar("SELECT count(*) FROM tenant_acme.shadow_log"),
        "0",
        "the tenant's cardinality(bigint[]) ran in place of pg_catalog's"
    );
}
