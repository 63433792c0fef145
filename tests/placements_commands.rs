//! drop, backup, restore, exec, suspend and resume for tenants that live elsewhere than the
//! registry's database: on another server, or in a database of their own there
//! (docs/placements.md). Needs the second cluster that scripts/with-postgres.sh starts
//! (TENANTCTL_TEST_SECOND_URL).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

static SLUGS: AtomicUsize = AtomicUsize::new(0);

/// Held by the tests that restore onto the second server: they check that no restore left
/// its scratch database or role there, which any restore in flight on that cluster has.
static RESTORES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn restores_alone() -> std::sync::MutexGuard<'static, ()> {
    RESTORES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A slug no other test of any process uses: a tenant's own database and role are named
/// like its schema, and both are shared by the whole cluster.
fn unique_slug(label: &str) -> String {
    let n = SLUGS.fetch_add(1, Ordering::SeqCst);
    format!("{label}-{}-{n}", std::process::id())
}

/// A port nothing listens on: bind one, then let it go.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A checksum of every row of every table of a schema, read through `url`.
fn data_checksum(url: &str, schema: &str) -> String {
    let tables = query(
        url,
        &format!(
            "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' \
              AND tablename <> 'refinery_schema_history' ORDER BY 1"
        ),
    );
    assert!(!tables.is_empty(), "no tables in {schema}");
    tables
        .iter()
        .map(|t| {
            let t = t[0].clone().unwrap();
            scalar(
                url,
                &format!(
                    "SELECT '{t}:' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) \
                       FROM \"{schema}\".\"{t}\" x"
                ),
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn seed(url: &str, schema: &str, who: &str) {
    query(
        url,
        &format!(
            "SET search_path TO \"{schema}\"; \
             INSERT INTO departments (name) VALUES ('{who} ops'); \
             INSERT INTO employees (email, full_name) VALUES ('{who}@example.org', '{who} one'), \
                 ('{who}2@example.org', '{who} two');"
        ),
    );
}

/// A login role with a password on both servers (roles belong to each cluster), NOINHERIT
/// (per-tenant roles need it); returns its name and its URL for `second_db` there.
fn app_role_everywhere(second: &SecondDb, second_db: &str) -> (String, String) {
    let role = format!("app_{}", second.name);
    let password = format!("pw_{}", second.name);
    let create = format!(
        "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN NOINHERIT PASSWORD '{password}'"
    );
    query(&admin_url(), &create);
    second.query(&create);
    let url = second.url_of(second_db);
    let (scheme, rest) = url.split_once("//").unwrap();
    let (_, host_and_db) = rest.split_once('@').unwrap();
    (
        role.clone(),
        format!("{scheme}//{role}:{password}@{host_and_db}"),
    )
}

fn row(db: &TestDb, slug: &str) -> String {
    db.scalar(&format!(
        "SELECT state || ':' || version || ':' || server_name FROM public.tenants WHERE slug = '{slug}'"
    ))
}

/// The restore's scratch databases and roles left on the second server (none, after any
/// restore, successful or not).
fn restore_leftovers(second: &SecondDb) -> String {
    second.scalar(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'tenantctl\\_restore%') \
              + (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenantctl\\_restore%')",
    )
}

#[test]
fn backup_and_restore_a_tenant_on_the_second_server() {
    let _alone = restores_alone();
    let db = TestDb::new("far_restore");
    let second = SecondDb::new("far_restore");
    let (app, app_url) = app_role_everywhere(&second, &second.name);
    db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\n{}",
        second.server_toml("eu")
    ));
    db.run(&["create", "far", "--server", "eu"]).expect(0);
    db.run(&["create", "near"]).expect(0);
    seed(&second.url, "tenant_far", "far");
    let backed_up = data_checksum(&second.url, "tenant_far");

    let file = db.dir.join("far.dump");
    let r = db.run(&["backup", "far", "-o", path_str(&file), "--format", "json"]);
    let doc = r.expect(0).json();
    assert_eq!(doc["server"], "eu");
    assert_eq!(doc["database"], second.name.as_str());
    assert_eq!(doc["version"], 7);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(db.dir.join("far.dump.json")).unwrap())
            .unwrap();
    assert_eq!(
        (meta["server"].as_str(), meta["database"].as_str()),
        (Some("eu"), Some(second.name.as_str()))
    );

    // Damaged after the backup; restored where it lives, with its history and grants there.
    second.query(
        "SET search_path TO tenant_far; DELETE FROM employees; \
         INSERT INTO departments (name) VALUES ('after backup')",
    );
    assert_ne!(data_checksum(&second.url, "tenant_far"), backed_up);
    let home_before = db.tenant_schemas();
    db.run(&["restore", "far", path_str(&file), "--yes"])
        .expect(0)
        .mentions("restored tenant far");
    assert_eq!(data_checksum(&second.url, "tenant_far"), backed_up);
    assert_eq!(
        second.scalar("SELECT count(*) FROM tenant_far.refinery_schema_history"),
        "7"
    );
    assert_eq!(row(&db, "far"), "active:7:eu");
    assert_eq!(db.tenant_schemas(), home_before, "nothing restored at home");
    assert_eq!(
        scalar(&app_url, "SELECT count(*) FROM tenant_far.employees"),
        "2",
        "the application role reaches the restored tenant on its server"
    );
    assert_eq!(restore_leftovers(&second), "0");
    // Its fingerprint was cleared: the next migrate reads its history there.
    assert_eq!(
        db.scalar("SELECT migrations_digest IS NULL FROM public.tenants WHERE slug = 'far'"),
        "t"
    );
    db.run(&["migrate", "far"]).expect(0);

    // --as: a new tenant, at home, with the same rows.
    db.run(&["restore", "far", path_str(&file), "--as", "far-copy"])
        .expect(0);
    assert_eq!(row(&db, "far-copy"), "active:7:home");
    assert_eq!(data_checksum(&db.url, "tenant_far-copy"), backed_up);
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_far-copy'"),
        "0"
    );

    // An older record, without server and database, still restores.
    let mut old = meta.clone();
    old.as_object_mut().unwrap().remove("server");
    old.as_object_mut().unwrap().remove("database");
    std::fs::write(
        db.dir.join("far.dump.json"),
        serde_json::to_string_pretty(&old).unwrap(),
    )
    .unwrap();
    db.run(&["restore", "far", path_str(&file), "--yes"])
        .expect(0);
    assert_eq!(data_checksum(&second.url, "tenant_far"), backed_up);
}

#[test]
fn a_tenant_in_its_own_database_backs_up_restores_and_drops_with_an_archive() {
    let _alone = restores_alone();
    let db = TestDb::new("far_own");
    let second = SecondDb::new("far_own");
    db.config(&second.server_toml("eu"));
    let slug = unique_slug("own");
    let schema = second.own_database(&format!("tenant_{slug}"));
    db.run(&["create", &slug, "--server", "eu", "--own-database"])
        .expect(0);
    let own = second.url_of(&schema);
    seed(&own, &schema, "own");
    let backed_up = data_checksum(&own, &schema);

    let file = db.dir.join("own.dump");
    db.run(&["backup", &slug, "-o", path_str(&file)]).expect(0);
    query(&own, &format!("DELETE FROM \"{schema}\".employees"));
    db.run(&["restore", &slug, path_str(&file), "--yes"])
        .expect(0);
    assert_eq!(data_checksum(&own, &schema), backed_up);
    assert_eq!(
        scalar(
            &own,
            &format!("SELECT count(*) FROM \"{schema}\".refinery_schema_history")
        ),
        "7"
    );
    assert_eq!(restore_leftovers(&second), "0");

    // drop --archive: backed up from its database, then the database dropped on its server.
    let archive = db.dir.join("archive");
    db.run(&[
        "drop",
        &slug,
        "--yes",
        "--archive",
        path_str(&archive),
        "--create-dir",
    ])
    .expect(0)
    .mentions("archived")
    .mentions("server eu");
    assert!(!second.database_exists(&schema));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants"),
        "0",
        "the row is gone from home"
    );
    let recorded = db.query(&format!(
        "SELECT schema_existed::text, archive_file, archive_sha256 FROM public.tenant_drops \
          WHERE slug = '{slug}'"
    ));
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0][0].as_deref(), Some("true"));
    let archived = std::path::PathBuf::from(recorded[0][1].clone().unwrap());
    assert!(archived.exists(), "{}", archived.display());
    // The archive restores the tenant (a new one now: at home).
    db.run(&["restore", &slug, path_str(&archived)]).expect(0);
    assert_eq!(row(&db, &slug), "active:7:home");
    assert_eq!(data_checksum(&db.url, &schema), backed_up);
}

#[test]
fn drop_on_the_second_server_takes_its_schema_and_role_there_and_records_it_at_home() {
    let db = TestDb::new("far_drop");
    let second = SecondDb::new("far_drop");
    let (app, _) = app_role_everywhere(&second, &second.name);
    db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\nper_tenant_roles = true\n{}",
        second.server_toml("eu")
    ));
    let slug = unique_slug("gone");
    let role = format!("tenant_{slug}");
    db.run(&["create", &slug, "--server", "eu"]).expect(0);
    db.run(&["create", "stays", "--server", "eu"]).expect(0);
    let role_there = || {
        second.scalar(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        ))
    };
    assert_eq!(role_there(), "1");
    // Another tenant there registered with the same role keeps it alive.
    db.query(&format!(
        "INSERT INTO public.tenants (slug, schema_name, state, version, server_name, database_name, role_name) \
         VALUES ('twin', 'tenant_twin', 'active', 7, 'eu', '{}', '{role}')",
        second.name
    ));
    db.run(&["drop", &slug, "--yes"])
        .expect(0)
        .mentions("server eu");
    assert_eq!(
        role_there(),
        "1",
        "the role of another tenant there was dropped"
    );
    db.run(&["drop", "twin", "--yes"]).expect(0);
    assert_eq!(
        second.scalar(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{role}'"
        )),
        "0"
    );
    assert_eq!(role_there(), "0");
    assert_eq!(
        db.scalar(&format!(
            "SELECT schema_existed::text || ':' || role_name FROM public.tenant_drops WHERE slug = '{slug}'"
        )),
        format!("true:{role}")
    );
    assert_eq!(
        db.scalar("SELECT string_agg(slug, ',') FROM public.tenants"),
        "stays"
    );
    assert_eq!(
        second.scalar("SELECT count(*) FROM \"tenant_stays\".refinery_schema_history"),
        "7",
        "the other tenant there is untouched"
    );
}

#[test]
fn drop_with_its_server_unreachable_names_it_and_a_rerun_finishes() {
    let db = TestDb::new("far_drop_down");
    let second = SecondDb::new("far_drop_down");
    db.config(&second.server_toml("eu"));
    db.run(&["create", "far", "--server", "eu"]).expect(0);
    db.config(&format!(
        "[servers.eu]\nurl = \"postgres://postgres@127.0.0.1:{}/{}\"\n",
        closed_port(),
        second.name
    ));
    db.run(&["--connect-timeout", "1", "drop", "far", "--yes"])
        .expect(1)
        .mentions("server eu")
        .mentions("run drop again");
    assert_eq!(row(&db, "far"), "dropping:7:eu");
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_far'"),
        "1"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_drops"), "0");

    // Config fixed: the rerun finishes.
    db.config(&second.server_toml("eu"));
    db.run(&["drop", "far", "--yes"]).expect(0);
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_far'"),
        "0"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenants"), "0");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_drops WHERE slug = 'far'"),
        "1"
    );
}

#[test]
fn exec_runs_each_tenant_where_it_lives_and_a_server_down_fails_only_its_tenants() {
    let db = TestDb::new("far_exec");
    let second = SecondDb::new("far_exec");
    db.config(&second.server_toml("eu"));
    let own = unique_slug("xo");
    let own_db = second.own_database(&format!("tenant_{own}"));
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "--server", "eu"]).expect(0);
    db.run(&["create", &own, "--server", "eu", "--own-database"])
        .expect(0);
    let sql = |n: u8| {
        format!("INSERT INTO departments (name) VALUES ('from exec {n}'); SELECT count(*) AS n FROM departments")
    };
    let r = db.run(&["exec", "-c", &sql(1), "--format", "json"]);
    let doc = r.expect(0).json();
    assert_eq!(doc["summary"]["done"], 3, "{doc}");
    let count = |url: &str, schema: &str| {
        scalar(
            url,
            &format!("SELECT count(*) FROM \"{schema}\".departments WHERE name LIKE 'from exec%'"),
        )
    };
    assert_eq!(count(&db.url, "tenant_h1"), "1");
    assert_eq!(count(&second.url, "tenant_e1"), "1");
    assert_eq!(count(&second.url_of(&own_db), &own_db), "1");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_exec_results WHERE outcome = 'done'"),
        "3",
        "audited on home"
    );

    // A server on a closed port: its tenant fails, named; the others run; exit 1.
    db.config(&format!(
        "{}[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{}/postgres\"\n",
        second.server_toml("eu"),
        closed_port()
    ));
    db.query(
        "INSERT INTO public.tenants (slug, schema_name, state, version, server_name, database_name) \
         VALUES ('g1', 'tenant_g1', 'active', 7, 'gone', 'postgres')",
    );
    let r = db.run(&[
        "--connect-timeout",
        "1",
        "exec",
        "-c",
        &sql(2),
        "--format",
        "json",
    ]);
    let doc = r.expect(1).json();
    assert_eq!(doc["summary"]["done"], 3, "{doc}");
    assert_eq!(doc["summary"]["failed"], 1, "{doc}");
    let g1 = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "g1")
        .unwrap();
    assert!(
        g1["error"].as_str().unwrap().contains("server gone"),
        "{g1}"
    );
    assert_eq!(count(&second.url, "tenant_e1"), "2");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_exec_results WHERE slug = 'g1' AND outcome = 'failed'"),
        "1"
    );
}

#[test]
fn suspend_and_resume_a_tenant_on_the_second_server() {
    let db = TestDb::new("far_suspend");
    let second = SecondDb::new("far_suspend");
    let (app, app_url) = app_role_everywhere(&second, &second.name);
    db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\n{}",
        second.server_toml("eu")
    ));
    db.run(&["create", "far", "--server", "eu"]).expect(0);
    seed(&second.url, "tenant_far", "far");
    let before = data_checksum(&second.url, "tenant_far");
    let read = || try_query(&app_url, "SELECT count(*) FROM tenant_far.employees");
    assert!(read().is_ok());

    db.run(&["suspend", "far", "--reason", "unpaid"])
        .expect(0)
        .mentions("suspended");
    let refused = read().unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    assert_eq!(row(&db, "far"), "suspended:7:eu");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_suspensions WHERE slug = 'far' AND resumed_at IS NULL"),
        "1"
    );
    // Suspended twice: bad input, nothing changed.
    let snapshot = db.snapshot();
    db.run(&["suspend", "far"])
        .expect(2)
        .mentions("is suspended");
    assert_eq!(db.snapshot(), snapshot);

    db.run(&["resume", "far"]).expect(0).mentions("active");
    assert_eq!(read().unwrap()[0][0].as_deref(), Some("2"));
    assert_eq!(row(&db, "far"), "active:7:eu");
    assert_eq!(data_checksum(&second.url, "tenant_far"), before);
}

#[test]
fn a_tenant_on_a_server_tenants_toml_does_not_name_is_bad_input_and_nothing_changes() {
    let _alone = restores_alone();
    let db = TestDb::new("far_bad");
    let second = SecondDb::new("far_bad");
    db.config(&second.server_toml("eu"));
    db.run(&["create", "far", "--server", "eu"]).expect(0);
    let file = db.dir.join("far.dump");
    db.run(&["backup", "far", "-o", path_str(&file)]).expect(0);
    // The application role exists at home only: restoring where the tenant lives is refused.
    let app = format!("app_{}", second.name);
    query(
        &admin_url(),
        &format!("DROP ROLE IF EXISTS \"{app}\"; CREATE ROLE \"{app}\""),
    );
    db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\n{}",
        second.server_toml("eu")
    ));
    let before = db.snapshot();
    db.run(&["restore", "far", path_str(&file), "--yes"])
        .expect(2)
        .mentions("does not exist")
        .mentions("on server eu");
    assert_eq!(db.snapshot(), before);
    assert_eq!(restore_leftovers(&second), "0");
    db.config(&second.server_toml("eu"));
    // A new slug that is taken, with --as: refused.
    db.run(&["restore", "far", path_str(&file), "--as", "far"])
        .expect(2)
        .mentions("already exists");

    // The row now names a server the configuration lacks.
    db.query("UPDATE public.tenants SET server_name = 'nowhere' WHERE slug = 'far'");
    let before = format!(
        "{}{}",
        db.snapshot(),
        db.scalar("SELECT count(*) FROM public.tenant_exec_runs")
    );
    let second_before =
        second.scalar("SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace");
    let other = db.dir.join("other.dump");
    for args in [
        vec!["drop", "far", "--yes"],
        vec!["backup", "far", "-o", path_str(&other)],
        vec!["restore", "far", path_str(&file), "--yes"],
        vec!["exec", "-c", "SELECT 1"],
        vec!["suspend", "far"],
    ] {
        db.run(&args).expect(2).mentions("unknown server 'nowhere'");
        let after = format!(
            "{}{}",
            db.snapshot(),
            db.scalar("SELECT count(*) FROM public.tenant_exec_runs")
        );
        assert_eq!(after, before, "{args:?}");
    }
    assert!(!other.exists());
    assert_eq!(
        second.scalar("SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace"),
        second_before
    );
    assert_eq!(restore_leftovers(&second), "0");
}
