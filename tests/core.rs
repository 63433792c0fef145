//! Registry, create, drop, list, status and configuration against a real server.

mod common;

use common::*;

#[test]
fn create_builds_a_complete_tenant() {
    let db = TestDb::new("create");
    db.run(&["create", "acme", "st-marys", "--name", "ignored"])
        .expect(2)
        .mentions("--name applies to a single tenant");
    db.run(&["create", "st-marys", "--name", "St Mary's Clinic"])
        .expect(0)
        .mentions("applied");
    db.run(&["create", "acme"]).expect(0);

    assert_eq!(db.tenant_schemas(), vec!["tenant_acme", "tenant_st-marys"]);
    let row =
        db.query("SELECT state, version, display_name FROM public.tenants WHERE slug = 'st-marys'");
    assert_eq!(
        row[0],
        vec![
            Some("active".into()),
            Some("7".into()),
            Some("St Mary's Clinic".into())
        ]
    );
    // refinery's history lives inside the tenant schema, one row per migration.
    assert_eq!(
        db.scalar("SELECT count(*) FROM \"tenant_st-marys\".refinery_schema_history"),
        "7"
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('\"tenant_st-marys\".employees') IS NOT NULL"),
        "t"
    );
    // Nothing landed in public but the registry.
    let public = db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
    let public: Vec<String> = public.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(
        public,
        vec![
            "tenant_drops",
            "tenant_exec_results",
            "tenant_exec_runs",
            "tenant_migrations",
            "tenant_moves",
            "tenant_suspensions",
            "tenantctl_registry_history",
            "tenants"
        ]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE slug = 'acme' AND outcome = 'applied'"), "7");

    let list = db.run(&["list"]);
    list.expect(0);
    assert_eq!(
        list.stdout,
        "acme\ttenant_acme\tactive\nst-marys\ttenant_st-marys\tactive\n"
    );
}

#[test]
fn init_is_idempotent_and_implicit() {
    let db = TestDb::new("init");
    db.run(&["list"]).expect(0);
    assert_eq!(
        db.scalar("SELECT to_regclass('public.tenants') IS NOT NULL"),
        "t"
    );
    db.run(&["init"]).expect(0).mentions(&format!(
        "registry is current (version {})",
        tenantctl::registry::expected_version()
    ));
    let json = db.run(&["init", "--format", "json"]);
    json.expect(0);
    assert_eq!(
        json.json()["registry_version"],
        tenantctl::registry::expected_version()
    );
    // Concurrent first use queues on the registry lock instead of failing.
    let db2 = TestDb::new("init2");
    let children: Vec<_> = (0..4)
        .map(|_| db2.cmd().arg("init").output().unwrap())
        .collect();
    for c in children {
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
}

#[test]
fn invalid_slugs_are_refused_before_the_server_is_touched() {
    let db = TestDb::new("slugs");
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    let long = "a".repeat(64 - "tenant_".len());
    for (slug, why) in [
        ("Acme", "upper-case"),
        ("ac me", "a space"),
        ("x'; DROP SCHEMA public CASCADE; --", "contains"),
        ("", "empty"),
        ("clínica", "non-ASCII"),
        ("-acme", "starts with"),
        (long.as_str(), "64 bytes"),
    ] {
        let r = db.run(&["create", "--", slug]);
        r.expect(2).mentions(why);
        assert!(
            r.all().contains("a-z, 0-9") || why == "64 bytes",
            "{slug:?}: {}",
            r.all()
        );
        assert_eq!(db.snapshot(), before, "{slug:?} changed the database");
    }
    // Even an unreachable server is never contacted for an invalid slug.
    let r = db
        .cmd()
        .args(["create", "Bad"])
        .env("DATABASE_URL", "postgres://x:y@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    // A 63-byte schema name is fine.
    let ok = "a".repeat(63 - "tenant_".len());
    db.run(&["create", &ok]).expect(0);
}

#[test]
fn reserved_schema_names_are_refused() {
    let db = TestDb::new("reserved");
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    let cfg = db.config("[tenants]\nschema_prefix = \"\"\n");
    for slug in ["public", "pg_catalog2", "information_schema"] {
        db.run(&["--config", path_str(&cfg), "create", slug])
            .expect(2)
            .mentions("reserved");
        assert_eq!(db.snapshot(), before);
    }
    let cfg = db.config("[tenants]\nschema_prefix = \"pg_\"\n");
    db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(2)
        .mentions("reserved");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn duplicate_create_is_refused_unless_if_not_exists() {
    let db = TestDb::new("dup");
    db.run(&["create", "acme"]).expect(0);
    let before = db.snapshot();
    db.run(&["create", "acme", "globex"])
        .expect(2)
        .mentions("tenant acme already exists")
        .mentions("--if-not-exists");
    assert_eq!(
        db.snapshot(),
        before,
        "nothing may be created, not even globex"
    );
    let r = db.run(&[
        "create",
        "acme",
        "globex",
        "--if-not-exists",
        "--format",
        "json",
    ]);
    r.expect(0);
    let doc = r.json();
    let outcomes: Vec<(String, String)> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap().into(),
                t["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("acme".into(), "skipped".into()),
            ("globex".into(), "applied".into())
        ]
    );
    // A schema that exists without a registry row is not adopted silently.
    db.query("CREATE SCHEMA tenant_orphan");
    let before = db.snapshot();
    db.run(&["create", "orphan"])
        .expect(2)
        .mentions("schema tenant_orphan already exists");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn a_failing_migration_leaves_nothing_behind() {
    let db = TestDb::new("createfail");
    let dir = db.migrations_with(
        "broken",
        &[(
            "V8__broken.sql",
            "ALTER TABLE no_such_table ADD COLUMN x int;",
        )],
    );
    let r = db.run_with(&dir, &["create", "acme"]);
    r.expect(1)
        .mentions("acme")
        .mentions("V8__broken")
        .mentions("relation \"no_such_table\" does not exist");
    assert!(db.tenant_schemas().is_empty(), "no half-made schema");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants"),
        "0",
        "no misleading registry row"
    );
    // The attempt itself is on record.
    assert_eq!(
        db.scalar(
            "SELECT version || ':' || outcome FROM public.tenant_migrations WHERE slug = 'acme'"
        ),
        "8:failed"
    );
}

#[test]
fn drop_needs_confirmation_and_leaves_a_record() {
    let db = TestDb::new("drop");
    db.run(&["create", "acme", "globex"]).expect(0);
    let before = db.snapshot();
    db.run(&["drop", "acme"])
        .expect(2)
        .mentions("--yes")
        .mentions("not a terminal");
    assert_eq!(db.snapshot(), before);
    db.run(&["drop", "nobody", "--yes"])
        .expect(2)
        .mentions("unknown tenant nobody");
    db.run(&["drop", "acme", "nobody", "--yes"]).expect(2);
    assert_eq!(
        db.snapshot(),
        before,
        "an unknown slug stops the whole drop"
    );

    db.run(&["drop", "acme", "nobody", "--yes", "--if-exists"])
        .expect(0)
        .mentions("dropped acme");
    assert_eq!(db.tenant_schemas(), vec!["tenant_globex"]);
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE slug = 'acme'"),
        "0"
    );
    let record = db.query("SELECT schema_name, dropped_by, schema_existed, dropped_at <= now() FROM public.tenant_drops WHERE slug = 'acme'");
    assert_eq!(
        record[0],
        vec![
            Some("tenant_acme".into()),
            Some("postgres".into()),
            Some("t".into()),
            Some("t".into())
        ]
    );
    // A tenant whose schema vanished can still be dropped, and the record says so.
    db.query("DROP SCHEMA tenant_globex CASCADE");
    db.run(&["drop", "globex", "--yes"]).expect(0);
    assert_eq!(
        db.scalar("SELECT schema_existed FROM public.tenant_drops WHERE slug = 'globex'"),
        "f"
    );
}

#[test]
fn unreachable_server_fails_with_exit_1_and_no_password() {
    let db = TestDb::new("unreach");
    let r = db
        .cmd()
        .args(["status", "--connect-timeout", "1"])
        .env(
            "DATABASE_URL",
            "postgres://ops:Sup3r-S3cret@127.0.0.1:1/fleet",
        )
        .output()
        .unwrap();
    let r = Run::from(r);
    r.expect(1)
        .mentions("cannot connect to PostgreSQL at ops@127.0.0.1:1/fleet");
    assert!(!r.all().contains("Sup3r-S3cret"), "{}", r.all());
    // A wrong password against the real server: exit 1, and the password is not echoed.
    let (_role, url) = db.role("app");
    let wrong = url.replacen(":pw_", ":wrongpw_", 1);
    let r = Run::from(
        db.cmd()
            .arg("list")
            .env("DATABASE_URL", &wrong)
            .output()
            .unwrap(),
    );
    r.expect(1).mentions("password authentication failed");
    assert!(!r.all().contains("wrongpw_"), "{}", r.all());
    // The JSON error document carries no password either.
    let r = Run::from(
        db.cmd()
            .args(["list", "--format", "json", "--connect-timeout", "1"])
            .env(
                "DATABASE_URL",
                "postgres://ops:Sup3r-S3cret@127.0.0.1:1/fleet",
            )
            .output()
            .unwrap(),
    );
    r.expect(1);
    assert_eq!(r.json()["exit_code"], 1);
    assert!(!r.all().contains("Sup3r-S3cret"));
}

#[test]
fn malformed_config_names_the_line_and_key_and_changes_nothing() {
    let db = TestDb::new("config");
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    let cfg = db.config("[migrations]\ndir = \"migrations\"\n[tenants]\nschema_prefx = \"x_\"\n");
    db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(2)
        .mentions("line 4")
        .mentions("schema_prefx");
    let cfg = db.config("[database]\nurl = \"postgres://unterminated\n");
    db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(2)
        .mentions("line 2");
    db.run(&["--config", "/nonexistent/tenants.toml", "list"])
        .expect(2)
        .mentions("cannot read config file");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let db = TestDb::new("cfgmerge");
    // tenants.toml in the working folder is picked up; its relative dir resolves against it.
    std::fs::create_dir_all(db.dir.join("m")).unwrap();
    std::fs::write(db.dir.join("m/V1__one.sql"), "CREATE TABLE one (id int);").unwrap();
    db.config("[migrations]\ndir = \"m\"\n[tenants]\nschema_prefix = \"clinic_\"\n");
    let r = db
        .cmd()
        .env_remove("TENANTCTL_MIGRATIONS")
        .args(["create", "acme"])
        .output()
        .unwrap();
    Run::from(r).expect(0);
    assert_eq!(
        db.scalar("SELECT schema_name || ':' || version FROM public.tenants"),
        "clinic_acme:1"
    );
    // The environment beats the file: TENANTCTL_MIGRATIONS points at the example migrations.
    db.run(&["create", "globex"]).expect(0);
    assert_eq!(
        db.scalar("SELECT version FROM public.tenants WHERE slug = 'globex'"),
        "7"
    );
}

#[test]
fn grants_give_the_app_role_data_access_and_nothing_more() {
    let db = TestDb::new("grants");
    let (role, app_url) = db.role("app");
    let (_other, other_url) = db.role("other");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{role}\"\n"));
    db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(0);
    let c = |sql: &str| try_query(&app_url, sql);

    c("INSERT INTO tenant_acme.departments (name) VALUES ('ops')").unwrap();
    c("INSERT INTO tenant_acme.employees (email, full_name) VALUES ('a@b.example', 'A B')")
        .unwrap();
    assert_eq!(
        c("SELECT count(*) FROM tenant_acme.employees").unwrap()[0][0].as_deref(),
        Some("1")
    );
    c("UPDATE tenant_acme.employees SET full_name = 'C'").unwrap();
    c("DELETE FROM tenant_acme.wellness_logs").unwrap();
    // The app may read the tenant list to route requests, never change it.
    assert_eq!(
        c("SELECT slug FROM public.tenants").unwrap()[0][0].as_deref(),
        Some("acme")
    );
    for denied in [
        "CREATE TABLE tenant_acme.sneaky (id int)",
        "INSERT INTO public.tenants (slug, schema_name) VALUES ('x', 'tenant_x')",
        "UPDATE public.tenants SET state = 'failed'",
        "DELETE FROM public.tenant_drops",
        "SELECT * FROM public.tenant_migrations",
        "SELECT last_error FROM public.tenants",
        "INSERT INTO tenant_acme.refinery_schema_history VALUES (99, 'x', 'x', 'x')",
        "DROP TABLE tenant_acme.employees",
    ] {
        let err = c(denied).expect_err(denied);
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{denied}: {err}"
        );
    }
    // A table added by a later migration is covered by the default privileges.
    let dir = db.migrations_with("next", &[("V8__later.sql", "CREATE TABLE later (id int);")]);
    db.run(&[
        "--config",
        path_str(&cfg),
        "--migrations",
        path_str(&dir),
        "migrate",
    ])
    .expect(0);
    c("INSERT INTO tenant_acme.later VALUES (1)").unwrap();
    // PUBLIC (any other role) gets nothing on the tenant schema.
    let err = try_query(&other_url, "SELECT * FROM tenant_acme.employees").unwrap_err();
    assert!(
        err.contains("permission denied for schema tenant_acme"),
        "{err}"
    );
    assert_eq!(
        db.scalar("SELECT has_schema_privilege('public', 'tenant_acme', 'USAGE')"),
        "f"
    );
}

#[test]
fn a_missing_app_role_is_bad_input() {
    let db = TestDb::new("norole");
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    let cfg = db.config("[tenants]\napp_role = \"no_such_role_xyz\"\n");
    db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(2)
        .mentions("role 'no_such_role_xyz' does not exist");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn status_reports_every_tenant_and_check_gates() {
    let db = TestDb::new("status");
    db.run(&["create", "acme", "globex"]).expect(0);
    db.run(&["status", "--check"])
        .expect(0)
        .mentions("2 tenants, latest version 7, 0 not active");
    let r = db.run(&["status", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["latest_version"], 7);
    let t = &doc["tenants"][0];
    assert_eq!(
        (
            t["slug"].as_str(),
            t["schema"].as_str(),
            t["state"].as_str()
        ),
        (Some("acme"), Some("tenant_acme"), Some("active"))
    );
    assert_eq!(
        (t["version"].as_i64(), t["pending"].as_i64()),
        (Some(7), Some(0))
    );
    assert!(t["last_error"].is_null() && t["migrated_at"].is_string());
    db.run(&["status", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody");
    // A newer migration makes every tenant pending: --check fails the gate.
    let dir = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    let r = db.run_with(&dir, &["status", "--check", "--format", "json"]);
    r.expect(1);
    assert_eq!(r.json()["tenants"][1]["pending"], 1);
    // A registered tenant whose schema is gone is reported, not a crash.
    db.query("DROP SCHEMA tenant_globex CASCADE");
    db.run(&["status"]).expect(0).mentions("schema missing");
    db.run(&["status", "--check"]).expect(1);
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let db = TestDb::new("docs");
    db.run(&["completions", "bash"])
        .expect(0)
        .mentions("--if-not-exists");
    db.run(&["man"]).expect(0).mentions("DATABASE_URL");
    db.run(&["--help"]).expect(0).mentions("Exit codes");
    db.run(&["frobnicate"]).expect(2);
}

#[test]
fn per_tenant_roles_confine_the_application_to_the_tenant_it_set_role_to() {
    let db = TestDb::new("ptr");
    let (app, app_url) = db.role("app");
    // Roles are shared by the whole cluster: a prefix of this test's own keeps them apart.
    let p = format!("{}_", db.name);
    let cfg = db.config(&format!(
        "[tenants]\nschema_prefix = \"{p}\"\napp_role = \"{app}\"\nper_tenant_roles = true\n"
    ));
    let cfg = path_str(&cfg);

    // On PostgreSQL 15 an INHERIT application role would hold every tenant's privileges.
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    db.run(&["--config", cfg, "create", "acme"])
        .expect(2)
        .mentions("NOINHERIT");
    assert_eq!(db.snapshot(), before);
    query(&admin_url(), &format!("ALTER ROLE \"{app}\" NOINHERIT"));
    db.run(&["--config", cfg, "create", "acme", "globex"])
        .expect(0);
    db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");

    let (acme, globex) = (format!("\"{p}acme\""), format!("\"{p}globex\""));
    let c = |sql: &str| try_query(&app_url, sql);
    // Without SET ROLE the application reaches no tenant at all.
    let err = c(&format!("SELECT count(*) FROM {acme}.employees")).unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    // As acme's role: acme's data, and nothing of globex's, by name or by search_path.
    c(&format!("SET ROLE {acme}; INSERT INTO {acme}.departments (name) VALUES ('ops'); SELECT * FROM {acme}.departments")).unwrap();
    for denied in [
        format!("SET ROLE {acme}; SELECT * FROM {globex}.employees"),
        format!("SET ROLE {acme}; SET search_path TO {globex}; SELECT * FROM employees"),
        format!("SET ROLE {acme}; CREATE TABLE {acme}.sneaky (id int)"),
        format!("SET ROLE {acme}; UPDATE public.tenants SET state = 'failed'"),
    ] {
        let err = c(&denied).expect_err(&denied);
        // A schema without USAGE is skipped when search_path is resolved: "does not exist".
        assert!(
            err.contains("permission denied") || err.contains("does not exist"),
            "{denied}: {err}"
        );
    }
    // Drop removes the tenant's role too, and the record names it.
    db.run(&["--config", cfg, "drop", "acme", "--yes"])
        .expect(0);
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{p}acme'"
        )),
        "0"
    );
    assert_eq!(
        db.scalar("SELECT role_name FROM public.tenant_drops WHERE slug = 'acme'"),
        format!("{p}acme")
    );
}

#[test]
fn verify_finds_isolation_breaches_and_drift() {
    let db = TestDb::new("verify");
    let (app, _) = db.role("app");
    let (other, _) = db.role("other");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run(&["--config", cfg, "create", "acme", "globex", "initech"])
        .expect(0);
    db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("3 tenants checked, 0 findings");

    db.query(&format!(
        "GRANT SELECT ON tenant_acme.employees TO PUBLIC; \
         GRANT CREATE ON SCHEMA tenant_acme TO \"{app}\"; \
         GRANT SELECT ON tenant_acme.refinery_schema_history TO \"{app}\"; \
         ALTER SCHEMA tenant_initech OWNER TO \"{other}\"; \
         CREATE SCHEMA tenant_rogue; \
         UPDATE public.tenants SET version = 5 WHERE slug = 'globex'; \
         UPDATE tenant_globex.refinery_schema_history SET checksum = '1' WHERE version = 2;"
    ));
    let r = db.run(&["--config", cfg, "verify", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    let found: Vec<String> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{}",
                f["kind"].as_str().unwrap(),
                f["schema"].as_str().unwrap(),
                f["detail"].as_str().unwrap()
            )
        })
        .collect();
    let has = |kind: &str, schema: &str, detail: &str| {
        assert!(
            found
                .iter()
                .any(|f| f.starts_with(&format!("{kind}:{schema}:")) && f.contains(detail)),
            "missing {kind} on {schema} ({detail}) in {found:#?}"
        )
    };
    has(
        "unexpected_privilege",
        "tenant_acme",
        "PUBLIC holds SELECT on employees",
    );
    has(
        "unexpected_privilege",
        "tenant_acme",
        "holds CREATE on the schema",
    );
    has(
        "unexpected_privilege",
        "tenant_acme",
        "holds SELECT on refinery_schema_history",
    );
    has("wrong_owner", "tenant_initech", &other);
    has("unregistered_schema", "tenant_rogue", "no registry row");
    has(
        "version_mismatch",
        "tenant_globex",
        "registry says version 5",
    );
    has("diverged", "tenant_globex", "V2__consents");
    assert_eq!(found.len(), 7, "{found:#?}");
    // Naming tenants audits only those; a missing schema is a finding, not a crash.
    db.query("DROP SCHEMA tenant_initech CASCADE");
    db.run(&["--config", cfg, "verify", "initech"])
        .expect(1)
        .mentions("schema_missing")
        .mentions("1 tenant checked");
    db.run(&["--config", cfg, "verify", "nobody"]).expect(2);
}

#[test]
fn two_creates_of_one_tenant_at_once_leave_it_healthy() {
    let db = TestDb::new("createrace");
    db.run(&["init"]).expect(0);
    // Both pass the "not registered yet" check; the loser then waits on the winner's row.
    let spawn = || db.cmd().args(["create", "acme"]).output();
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(spawn);
        let b = sc.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert!(codes == [0, 1] || codes == [0, 2], "{a:?}\n{b:?}");
    // The loser must not mark the winner's tenant failed.
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'acme'"),
        "active:7"
    );
    assert_eq!(db.tenant_schemas(), vec!["tenant_acme"]);
}

#[test]
fn usage_errors_are_json_documents_with_format_json() {
    let db = TestDb::new("jsonusage");
    let r = db.run(&["--format", "json", "create", "Bad"]);
    r.expect(2);
    let doc = r.json();
    assert_eq!(doc["exit_code"], 2);
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("invalid tenant slug"),
        "{doc}"
    );
    db.run(&["--format", "json", "--help"])
        .expect(0)
        .mentions("Usage");
}

/// `verify --format json`'s findings as `kind:schema:detail` lines.
fn findings(r: &Run) -> Vec<String> {
    r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{}",
                f["kind"].as_str().unwrap(),
                f["schema"].as_str().unwrap(),
                f["detail"].as_str().unwrap()
            )
        })
        .collect()
}

fn assert_has(found: &[String], kind: &str, schema: &str, detail: &str) {
    assert!(
        found
            .iter()
            .any(|f| f.starts_with(&format!("{kind}:{schema}:")) && f.contains(detail)),
        "missing {kind} on {schema} ({detail}) in {found:#?}"
    );
}

#[test]
fn verify_finds_breaches_of_privileges_ownership_and_reach() {
    let db = TestDb::new("verifyreach");
    let (app, _) = db.role("app");
    let (other, _) = db.role("other");
    // Created before app_role was set: the application cannot reach it.
    db.run(&["create", "legacy"]).expect(0);
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run(&[
        "--config", cfg, "create", "acme", "globex", "initech", "clean",
    ])
    .expect(0);
    db.run(&[
        "--config", cfg, "verify", "acme", "globex", "initech", "clean",
    ])
    .expect(0)
    .mentions("4 tenants checked, 0 findings");

    db.query(&format!(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA tenant_acme GRANT SELECT ON TABLES TO PUBLIC; \
         GRANT SELECT (email) ON tenant_acme.employees TO \"{other}\"; \
         ALTER TABLE tenant_globex.programs OWNER TO \"{app}\"; \
         CREATE FUNCTION tenant_globex.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER \
             AS 'SELECT count(*) FROM tenant_acme.employees'; \
         CREATE VIEW tenant_initech.leak AS SELECT email FROM tenant_acme.employees; \
         GRANT UPDATE ON public.tenants TO \"{app}\"; \
         GRANT SELECT ON public.tenant_migrations TO \"{other}\"; \
         ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;"
    ));
    let r = db.run(&["--config", cfg, "verify", "--format", "json"]);
    r.expect(1);
    let found = findings(&r);
    assert_has(
        &found,
        "unexpected_default_privilege",
        "tenant_acme",
        "give PUBLIC SELECT on tables",
    );
    assert_has(
        &found,
        "unexpected_column_privilege",
        "tenant_acme",
        &format!("{other} holds SELECT on column employees.email"),
    );
    assert_has(
        &found,
        "wrong_object_owner",
        "tenant_globex",
        &format!("table programs is owned by '{app}'"),
    );
    assert_has(
        &found,
        "security_definer",
        "tenant_globex",
        "tenant_globex.peek() is SECURITY DEFINER",
    );
    assert_has(
        &found,
        "cross_schema_view",
        "tenant_initech",
        "view leak reads tenant_acme.employees",
    );
    assert_has(
        &found,
        "registry_privilege",
        "public",
        &format!("{app} holds UPDATE on public.tenants"),
    );
    assert_has(
        &found,
        "registry_privilege",
        "public",
        &format!("{other} holds SELECT on public.tenant_migrations"),
    );
    // Every table the registry's owner creates, in any schema, tenant schemas included.
    assert_has(
        &found,
        "unexpected_default_privilege",
        "",
        &format!(
            "give PUBLIC SELECT on tables that {} creates in every schema",
            db.scalar("SELECT current_user")
        ),
    );
    assert_has(
        &found,
        "missing_grant",
        "tenant_legacy",
        "run tenantctl grant legacy",
    );
    assert!(
        !found.iter().any(|f| f.contains("tenant_clean")),
        "a clean tenant has no finding: {found:#?}"
    );
    assert_eq!(found.len(), 9, "{found:#?}");
    // The kinds are the first column of the text table too.
    db.run(&["--config", cfg, "verify", "globex"])
        .expect(1)
        .mentions("wrong_object_owner")
        .mentions("security_definer");
}

#[test]
fn verify_finds_tenant_roles_granted_to_other_roles() {
    let db = TestDb::new("verifyroles");
    let (app, _) = db.role("app");
    let (other, _) = db.role("other");
    query(&admin_url(), &format!("ALTER ROLE \"{app}\" NOINHERIT"));
    let p = format!("{}_", db.name);
    let cfg = db.config(&format!(
        "[tenants]\nschema_prefix = \"{p}\"\napp_role = \"{app}\"\nper_tenant_roles = true\n"
    ));
    let cfg = path_str(&cfg);
    db.run(&["--config", cfg, "create", "acme", "globex", "clean"])
        .expect(0);
    db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");
    let (acme, globex) = (format!("{p}acme"), format!("{p}globex"));
    query(
        &admin_url(),
        &format!("GRANT \"{acme}\" TO \"{globex}\"; GRANT \"{acme}\" TO \"{other}\";"),
    );
    let r = db.run(&["--config", cfg, "verify", "--format", "json"]);
    r.expect(1);
    let found = findings(&r);
    assert_has(
        &found,
        "unexpected_membership",
        &acme,
        &format!("role '{other}' is a member of tenant role '{acme}'"),
    );
    assert_has(
        &found,
        "unexpected_membership",
        &acme,
        &format!("role '{globex}' is a member of tenant role '{acme}'"),
    );
    assert_has(
        &found,
        "unexpected_membership",
        &globex,
        &format!("tenant role '{globex}' is a member of role '{acme}' (tenant acme's role)"),
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    // The application role losing its membership is a missing grant that `grant` restores.
    query(
        &admin_url(),
        &format!(
            "REVOKE \"{acme}\" FROM \"{globex}\", \"{other}\"; REVOKE \"{acme}\" FROM \"{app}\";"
        ),
    );
    let r = db.run(&["--config", cfg, "verify", "--format", "json"]);
    r.expect(1);
    let found = findings(&r);
    assert_has(&found, "missing_grant", &acme, "cannot SET ROLE to it");
    assert_eq!(found.len(), 1, "{found:#?}");
    db.run(&["--config", cfg, "grant", "acme"]).expect(0);
    db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");
    // Roles are cluster-wide: this test's own go with it.
    db.run(&["--config", cfg, "drop", "acme", "globex", "clean", "--yes"])
        .expect(0);
}
