//! Tenants on more than one server (docs/placements.md): `[servers.NAME]`, the placement
//! columns of the registry, `create --server NAME [--own-database]`, and the commands that
//! do not reach other servers yet refusing to. Needs the second cluster that
//! scripts/with-postgres.sh starts (TENANTCTL_TEST_SECOND_URL).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

static SLUGS: AtomicUsize = AtomicUsize::new(0);

/// A slug no other test of any process uses: a tenant's own database is named like its
/// schema, and databases are shared by the whole cluster.
fn unique_slug(label: &str) -> String {
    let n = SLUGS.fetch_add(1, Ordering::SeqCst);
    format!("{label}-{}-{n}", std::process::id())
}

/// A home database with `[servers.eu]` pointing at a fresh database on the second server.
fn two_servers(label: &str) -> (TestDb, SecondDb) {
    let db = TestDb::new(label);
    let second = SecondDb::new(label);
    db.config(&second.server_toml("eu"));
    (db, second)
}

fn row(db: &TestDb, slug: &str) -> Vec<Option<String>> {
    db.query(&format!(
        "SELECT state, version::text, server_name, database_name FROM public.tenants WHERE slug = '{slug}'"
    ))
    .pop()
    .unwrap_or_default()
}

#[test]
fn create_on_another_server_puts_the_schema_there_and_the_row_at_home() {
    let (db, second) = two_servers("place_create");
    db.run(&["create", "acme"]).expect(0);
    db.run(&["create", "eu-clinic", "--server", "eu"])
        .expect(0)
        .mentions("applied");

    // The schema, its history and its tables on the second server, none of it at home.
    assert_eq!(
        second.scalar("SELECT count(*) FROM \"tenant_eu-clinic\".refinery_schema_history"),
        "7"
    );
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_eu-clinic\".employees') IS NOT NULL"),
        "t"
    );
    assert_eq!(db.tenant_schemas(), vec!["tenant_acme"]);
    // The row at home, with its placement; existing tenants live at home.
    assert_eq!(
        row(&db, "eu-clinic"),
        vec![
            Some("active".into()),
            Some("7".into()),
            Some("eu".into()),
            Some(second.name.clone())
        ]
    );
    assert_eq!(
        row(&db, "acme"),
        vec![
            Some("active".into()),
            Some("7".into()),
            Some("home".into()),
            Some(db.name.clone())
        ]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE slug = 'eu-clinic' AND outcome = 'applied'"),
        "7"
    );

    // route names the real place, status looks for the schema where it lives.
    let route = db.run(&["route", "eu-clinic", "--format", "json"]);
    route.expect(0);
    let doc: serde_json::Value = serde_json::from_str(&route.stdout).unwrap();
    assert_eq!(doc["server"], "eu");
    assert_eq!(doc["database"], second.name.as_str());
    assert_eq!(doc["schema"], "tenant_eu-clinic");
    let status = db.run(&["status", "--check"]);
    status.expect(0);
    assert!(
        !status.stdout.contains("schema missing"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("eu"), "{}", status.stdout);
    let list = db.run(&["list", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&list.expect(0).stdout).unwrap();
    assert_eq!(doc["tenants"][1]["server"], "eu");

    // Its schema gone from the second server: status says so, where it lives.
    second.query("DROP SCHEMA \"tenant_eu-clinic\" CASCADE");
    db.run(&["status", "--check"])
        .expect(1)
        .mentions("schema missing");
}

#[test]
fn default_server_decides_where_new_tenants_go() {
    let db = TestDb::new("place_default");
    let second = SecondDb::new("place_default");
    db.config(&format!(
        "[tenants]\ndefault_server = \"eu\"\n{}",
        second.server_toml("eu")
    ));
    db.run(&["create", "here-by-default"]).expect(0);
    assert_eq!(row(&db, "here-by-default")[2].as_deref(), Some("eu"));
    assert!(db.tenant_schemas().is_empty());
    db.run(&["create", "at-home", "--server", "home"]).expect(0);
    assert_eq!(db.tenant_schemas(), vec!["tenant_at-home"]);
}

#[test]
fn create_with_own_database_gives_the_tenant_a_database_there() {
    let (db, second) = two_servers("place_own");
    let slug = unique_slug("own");
    let schema = second.own_database(&format!("tenant_{slug}"));
    db.run(&["create", &slug, "--server", "eu", "--own-database"])
        .expect(0);
    assert!(second.database_exists(&schema));
    let own = second.url_of(&schema);
    assert_eq!(
        scalar(
            &own,
            &format!("SELECT count(*) FROM \"{schema}\".refinery_schema_history")
        ),
        "7"
    );
    let r = row(&db, &slug);
    assert_eq!(r[0].as_deref(), Some("active"));
    assert_eq!(r[2].as_deref(), Some("eu"));
    assert_eq!(r[3].as_deref(), Some(schema.as_str()));
    let route = db.run(&["route", &slug]);
    route.expect(0).mentions(&format!("database {schema}"));
    db.run(&["status", "--check"]).expect(0);
}

#[test]
fn own_database_on_home_too() {
    let db = TestDb::new("place_own_home");
    let slug = unique_slug("ownhome");
    let schema = format!("tenant_{slug}");
    let r = db.run(&["create", &slug, "--own-database"]);
    let cleanup = || {
        query(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS \"{schema}\" WITH (FORCE)"),
        )
    };
    if r.code != 0 {
        cleanup();
    }
    r.expect(0);
    let own = replace_dbname(&admin_url(), &schema);
    assert_eq!(
        scalar(
            &own,
            &format!("SELECT count(*) FROM \"{schema}\".refinery_schema_history")
        ),
        "7"
    );
    assert!(db.tenant_schemas().is_empty());
    assert_eq!(
        row(&db, &slug)[2..],
        [Some("home".into()), Some(schema.clone())]
    );
    cleanup();
}

#[test]
fn a_failing_create_elsewhere_leaves_no_schema_no_database_and_no_row() {
    let (db, second) = two_servers("place_fail");
    db.run(&["init"]).expect(0);
    let dir = db.migrations_with("bad", &[("V8__breaks.sql", "SELECT 1/0;")]);
    let before = db.snapshot();
    db.run_with(&dir, &["create", "broken", "--server", "eu"])
        .expect(1)
        .mentions("V8__breaks")
        .mentions("nothing was created");
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_broken'"),
        "0"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenants"), "0");

    // With its own database: CREATE DATABASE committed on its own, and is dropped again.
    let slug = unique_slug("ownfail");
    let schema = second.own_database(&format!("tenant_{slug}"));
    db.run_with(&dir, &["create", &slug, "--server", "eu", "--own-database"])
        .expect(1)
        .mentions("nothing was created");
    assert!(!second.database_exists(&schema));
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenants"), "0");
    // Only the failed attempts were recorded (as for a create at home).
    let _ = before;
    db.run(&["create", "broken", "--server", "eu"]).expect(0);
}

#[test]
fn bad_placement_input_is_refused_and_changes_nothing() {
    let (db, second) = two_servers("place_bad");
    db.run(&["create", "acme"]).expect(0);
    let before = db.snapshot();
    let second_before = second.scalar("SELECT count(*) FROM pg_namespace");

    db.run(&["create", "x", "--server", "mars"])
        .expect(2)
        .mentions("unknown server 'mars'")
        .mentions("home, eu");
    // A schema of that name on the target already.
    second.query("CREATE SCHEMA \"tenant_taken\"");
    db.run(&["create", "taken", "--server", "eu"])
        .expect(2)
        .mentions("schema tenant_taken already on server eu");
    second.query("DROP SCHEMA \"tenant_taken\"");
    // The slug is registered (at home): refused like any existing tenant.
    db.run(&["create", "acme", "--server", "eu"])
        .expect(2)
        .mentions("already exists");
    assert_eq!(db.snapshot(), before);

    let bad_configs = [
        ("[servers.eu]\nurl = \"postgres://h/db\"\npasswd = \"x\"\n", "passwd"),
        ("[tenants]\ndefault_server = \"mars\"\n", "default_server 'mars'"),
        ("[servers.home]\nurl = \"postgres://h/db\"\n", "[servers.home]"),
        (
            "[servers.eu]\nurl = \"postgres://u:secret@h/db\"\n",
            "holds a password",
        ),
        (
            "[servers.eu]\nurl = \"postgres://u@h/db\"\npassword_env = \"TENANTCTL_TEST_UNSET_VAR\"\n",
            "TENANTCTL_TEST_UNSET_VAR",
        ),
    ];
    for (config, says) in bad_configs {
        db.config(config);
        let r = db.run(&["create", "y", "--server", "eu"]);
        r.expect(2).mentions(says);
        assert!(!r.all().contains("secret"), "{}", r.all());
    }
    assert_eq!(db.snapshot(), before);
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace"),
        second_before
    );
}

#[test]
fn a_server_that_cannot_be_reached_fails_create_naming_it() {
    let db = TestDb::new("place_down");
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    db.config(&format!(
        "[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n"
    ));
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    db.run(&["--connect-timeout", "1", "create", "x", "--server", "gone"])
        .expect(1)
        .mentions("cannot reach server gone");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn servers_lists_each_server_with_its_answer_and_tenants() {
    let db = TestDb::new("place_servers");
    let second = SecondDb::new("place_servers");
    db.config(&second.server_toml("eu"));
    db.run(&["create", "a", "b"]).expect(0);
    db.run(&["create", "c", "--server", "eu"]).expect(0);
    let r = db.run(&["servers", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.expect(0).stdout).unwrap();
    let servers = doc["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{doc}");
    assert_eq!(servers[0]["name"], "home");
    assert_eq!(servers[0]["tenants"], 2);
    assert_eq!(servers[1]["name"], "eu");
    assert_eq!(servers[1]["tenants"], 1);
    for s in servers {
        assert_eq!(s["reachable"], true, "{s}");
        assert!(s["version"].as_str().unwrap().starts_with(char::is_numeric));
        assert!(s["free_connections"].as_i64().unwrap() > 0);
    }

    // A server on a closed port: named, the others still answer, exit 1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    db.config(&format!(
        "{}[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n",
        second.server_toml("eu")
    ));
    let r = db.run(&["--connect-timeout", "1", "servers"]);
    r.expect(1).mentions("server gone does not answer");
    assert!(
        r.stdout.contains("home") && r.stdout.contains("eu"),
        "{}",
        r.stdout
    );

    // Tenants placed on a server tenants.toml no longer names are shown, not hidden.
    db.config("");
    let r = db.run(&["servers", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&r.expect(1).stdout).unwrap();
    assert_eq!(doc["servers"][1]["name"], "eu");
    assert_eq!(doc["servers"][1]["configured"], false);
    assert_eq!(doc["servers"][1]["tenants"], 1);
}

#[test]
fn a_rerun_finishes_a_create_elsewhere_that_crashed_half_way() {
    let (db, second) = two_servers("place_crash");
    db.run(&["create", "half", "--server", "eu"]).expect(0);
    // As if tenantctl died after the schema committed on eu, before the row became active.
    db.query("UPDATE public.tenants SET state = 'provisioning' WHERE slug = 'half'");
    second.query("CREATE TABLE \"tenant_half\".leftover (id int)");

    // While another session holds the tenant's lock (a create still running), it is left alone.
    let holder = std::process::Command::new("psql")
        .arg(&db.url)
        .args([
            "-c",
            &format!(
                "SELECT pg_advisory_lock({}, hashtext('tenant_half')); SELECT pg_sleep(4)",
                tenantctl::registry::locks::LOCK_CLASS
            ),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    db.run(&["create", "half", "--server", "eu"])
        .expect(2)
        .mentions("already exists");
    let mut holder = holder;
    holder.wait().unwrap();

    let r = db.run(&["create", "half", "--server", "eu"]);
    r.expect(0).mentions("created anew");
    assert_eq!(row(&db, "half")[0].as_deref(), Some("active"));
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_half\".leftover') IS NULL"),
        "t"
    );
    assert_eq!(
        second.scalar("SELECT count(*) FROM \"tenant_half\".refinery_schema_history"),
        "7"
    );
}

#[test]
fn migrate_spans_servers_and_a_server_down_fails_only_its_tenants() {
    let (db, second) = two_servers("place_migrate");
    db.run(&["create", "h1", "h2"]).expect(0);
    db.run(&["create", "e1", "e2", "--server", "eu"]).expect(0);
    let v8 = db.migrations_with("v8", &[("V8__more.sql", "CREATE TABLE more (id int);")]);
    let r = db.run_with(&v8, &["migrate", "--format", "json"]);
    r.expect(0);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(r.stdout.contains("on server eu"), "{}", r.stdout);
    assert_eq!(doc["summary"]["applied"], 4, "{doc}");
    assert_eq!(
        db.scalar("SELECT string_agg(slug || ':' || version || ':' || state, ',' ORDER BY slug) FROM public.tenants"),
        "e1:8:active,e2:8:active,h1:8:active,h2:8:active"
    );
    for e in ["e1", "e2"] {
        assert_eq!(
            second.scalar(&format!(
                "SELECT count(*) FROM \"tenant_{e}\".refinery_schema_history"
            )),
            "8"
        );
        assert_eq!(
            second.scalar(&format!(
                "SELECT to_regclass('\"tenant_{e}\".more') IS NOT NULL"
            )),
            "t"
        );
    }
    // Again: answered from the registry, nothing visited.
    db.run_with(&v8, &["migrate"])
        .expect(0)
        .mentions("4 up to date");

    // The registry row behind its schema (a crash between the two commits): the next run
    // reads the history where the tenant lives, applies nothing twice, and records it.
    db.query("UPDATE public.tenants SET version = 7, migrations_digest = NULL WHERE slug = 'e1'");
    db.run_with(&v8, &["migrate", "e1"]).expect(0);
    assert_eq!(
        db.scalar("SELECT version FROM public.tenants WHERE slug = 'e1'"),
        "8"
    );
    assert_eq!(
        second.scalar("SELECT count(*) FROM \"tenant_e1\".refinery_schema_history"),
        "8"
    );

    // A server that cannot be reached fails only its own tenants, naming it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    db.config(&format!(
        "{}[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n",
        second.server_toml("eu")
    ));
    db.query(
        "INSERT INTO public.tenants (slug, schema_name, state, version, server_name, database_name) \
         VALUES ('g1', 'tenant_g1', 'active', 8, 'gone', 'postgres')",
    );
    let v9 = db.migrations_with(
        "v9",
        &[
            ("V8__more.sql", "CREATE TABLE more (id int);"),
            ("V9__again.sql", "CREATE TABLE again (id int);"),
        ],
    );
    let r = db.run_with(&v9, &["--connect-timeout", "1", "migrate"]);
    r.expect(1).mentions("server gone");
    assert_eq!(
        db.scalar("SELECT string_agg(slug || ':' || version || ':' || state, ',' ORDER BY slug) FROM public.tenants"),
        "e1:9:active,e2:9:active,g1:8:failed,h1:9:active,h2:9:active"
    );
    assert!(db
        .scalar("SELECT last_error FROM public.tenants WHERE slug = 'g1'")
        .contains("server gone"));

    // A migration failing on the far server fails that tenant, rolled back there.
    let bad = db.migrations_with(
        "bad",
        &[
            ("V8__more.sql", "CREATE TABLE more (id int);"),
            ("V9__again.sql", "CREATE TABLE again (id int);"),
            ("V10__breaks.sql", "CREATE TABLE half (id int); SELECT 1/0;"),
        ],
    );
    db.run_with(&bad, &["migrate", "e1"])
        .expect(1)
        .mentions("V10__breaks");
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_e1\".half') IS NULL"),
        "t"
    );
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'e1'"),
        "failed:9"
    );
}

#[test]
fn per_tenant_roles_are_made_on_the_tenants_server() {
    let db = TestDb::new("place_roles");
    let second = SecondDb::new("place_roles");
    let app = format!("app_{}", second.name);
    let slug = unique_slug("roles");
    let role = format!("tenant_{slug}");
    db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\nper_tenant_roles = true\n{}",
        second.server_toml("eu")
    ));
    // The application role exists at home only: refused, nothing made.
    query(
        &admin_url(),
        &format!("CREATE ROLE \"{app}\" LOGIN NOINHERIT"),
    );
    db.run(&["create", &slug, "--server", "eu"])
        .expect(2)
        .mentions("does not exist on server eu");
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenants"), "0");
    second.query(&format!("CREATE ROLE \"{app}\" LOGIN NOINHERIT"));

    // A failing create takes its role away again on the server it was made on.
    let bad = db.migrations_with("bad", &[("V8__breaks.sql", "SELECT 1/0;")]);
    db.run_with(&bad, &["create", &slug, "--server", "eu"])
        .expect(1);
    assert_eq!(
        second.scalar(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        )),
        "0"
    );

    db.run(&["create", &slug, "--server", "eu"]).expect(0);
    assert_eq!(
        second.scalar(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        )),
        "1"
    );
    assert_eq!(
        scalar(
            &admin_url(),
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")
        ),
        "0",
        "the tenant's role belongs on its server, not at home"
    );
    // The tenant's role holds its data privileges there; the app role only by SET ROLE.
    assert_eq!(
        second.scalar(&format!(
            "SELECT has_table_privilege('{role}', '\"{role}\".employees', 'SELECT')::text || \
                    has_table_privilege('{app}', '\"{role}\".employees', 'SELECT')::text"
        )),
        "truefalse"
    );
    let route = db.run(&["route", &slug, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&route.expect(0).stdout).unwrap();
    assert_eq!(doc["role"], role.as_str());
    assert_eq!(doc["server"], "eu");

    // grant repairs a missing grant where the tenant lives.
    second.query(&format!(
        "REVOKE ALL ON \"{role}\".employees FROM \"{role}\"; \
         CREATE TABLE \"{role}\".made_by_hand (id int)"
    ));
    db.run(&["grant", &slug])
        .expect(0)
        .mentions("filled in 1 tables");
    assert_eq!(
        second.scalar(&format!(
            "SELECT has_table_privilege('{role}', '\"{role}\".employees', 'SELECT')::text || \
                    has_table_privilege('{role}', '\"{role}\".made_by_hand', 'SELECT')::text"
        )),
        "truetrue"
    );
    // Its server gone from the roles' point of view: that tenant fails, named.
    second.query(&format!("DROP OWNED BY \"{app}\"; DROP ROLE \"{app}\""));
    db.run(&["grant", &slug])
        .expect(1)
        .mentions("does not exist on server eu");
}

#[test]
fn verify_audits_every_server() {
    let (db, second) = two_servers("place_verify");
    db.run(&["create", "h"]).expect(0);
    db.run(&["create", "far", "--server", "eu"]).expect(0);
    db.run(&["verify"])
        .expect(0)
        .mentions("2 tenants checked, 0 findings");

    // An unregistered schema on the second server, a privilege granted by hand there, and
    // a registry row behind its schema's history: each found there, naming the server.
    second.query("CREATE SCHEMA tenant_rogue; GRANT USAGE ON SCHEMA \"tenant_far\" TO PUBLIC");
    db.query("UPDATE public.tenants SET version = 6 WHERE slug = 'far'");
    let r = db.run(&["verify", "--format", "json"]);
    r.expect(1);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kinds: Vec<String> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["kind"].as_str().unwrap(),
                f["schema"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "unregistered_schema:tenant_rogue",
        "version_mismatch:tenant_far",
    ] {
        assert!(kinds.iter().any(|k| k == want), "{want} not in {kinds:?}");
    }
    assert!(
        r.stdout
            .contains(&format!("(server eu, database {})", second.name)),
        "{}",
        r.stdout
    );
    assert_eq!(
        kinds.iter().filter(|k| k.ends_with(":tenant_h")).count(),
        0,
        "{kinds:?}"
    );

    // A server that cannot be reached is a finding that names it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    db.config(&format!(
        "{}[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n",
        second.server_toml("eu")
    ));
    db.run(&["--connect-timeout", "1", "verify"])
        .expect(1)
        .mentions("server_not_audited")
        .mentions("server gone");
}

#[test]
fn shared_migrations_reach_every_server_before_its_tenants() {
    let db = TestDb::new("place_shared");
    let second = SecondDb::new("place_shared");
    let shared = db.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(
        shared.join("V1__plans.sql"),
        "CREATE TABLE plans (id int PRIMARY KEY, name text);",
    )
    .unwrap();
    db.config(&format!(
        "[migrations]\nshared_dir = \"shared\"\n{}",
        second.server_toml("eu")
    ));
    // create: home first, then the server the tenant goes to; its migrations may use them.
    db.run(&["create", "eu-clinic", "--server", "eu"]).expect(0);
    assert_eq!(
        db.scalar("SELECT to_regclass('public.plans') IS NOT NULL"),
        "t"
    );
    assert_eq!(
        second.scalar("SELECT to_regclass('public.plans') IS NOT NULL"),
        "t"
    );
    // migrate: a new shared migration reaches the far server before its tenants, once.
    std::fs::write(
        shared.join("V2__tiers.sql"),
        "ALTER TABLE plans ADD COLUMN tier int;",
    )
    .unwrap();
    let next = db.migrations_with(
        "next",
        &[(
            "V8__plan_ref.sql",
            "ALTER TABLE employees ADD COLUMN plan_tier int;",
        )],
    );
    db.run_with(&next, &["migrate"]).expect(0);
    for side in [
        db.scalar("SELECT max(version) FROM public.refinery_schema_history"),
        second.scalar("SELECT max(version) FROM public.refinery_schema_history"),
    ] {
        assert_eq!(side, "2");
    }
    // A shared migration that fails on the far server fails its tenants, nothing applied.
    second.scalar("CREATE TABLE public.blocker (id int)");
    std::fs::write(
        shared.join("V3__blocker.sql"),
        "CREATE TABLE blocker (id int);",
    )
    .unwrap();
    let r = db.run_with(&next, &["migrate"]);
    // Home has no blocker: its shared V3 applies; the far server refuses it.
    r.expect(1)
        .mentions("failed on server eu")
        .mentions("nothing was applied to its tenants");
    assert_eq!(
        second.scalar("SELECT max(version) FROM public.refinery_schema_history"),
        "2"
    );
}

#[test]
fn create_elsewhere_gets_its_labels_and_its_seed_like_a_tenant_at_home() {
    let (db, second) = two_servers("place_seed");
    let seed = db.dir.join("seed.sql");
    std::fs::write(
        &seed,
        "INSERT INTO employees (email, full_name) \
         VALUES (current_setting('tenantctl.slug') || '@example.org', 'Seeded');",
    )
    .unwrap();
    let seed = seed.to_str().unwrap();
    db.run(&[
        "create",
        "eu-seeded",
        "--server",
        "eu",
        "--label",
        "ring=beta",
        "--seed",
        seed,
    ])
    .expect(0);
    assert_eq!(
        second.scalar("SELECT email FROM \"tenant_eu-seeded\".employees"),
        "eu-seeded@example.org"
    );
    assert_eq!(
        db.scalar("SELECT labels ->> 'ring' FROM public.tenants WHERE slug = 'eu-seeded'"),
        "beta"
    );
    // psql and exec reach the tenant where it lives.
    db.run(&[
        "psql",
        "eu-seeded",
        "--",
        "-At",
        "-c",
        "SELECT current_schema() || ':' || count(*) FROM employees",
    ])
    .expect(0)
    .mentions("tenant_eu-seeded:1");
    db.run(&["exec", "-c", "SELECT count(*) AS seeded FROM employees"])
        .expect(0)
        .mentions("1 done");
    assert_eq!(
        second.scalar("SELECT count(*) FROM \"tenant_eu-seeded\".employees"),
        "1"
    );
    // A failing seed elsewhere creates nothing there and registers nothing at home.
    let bad = db.dir.join("bad.sql");
    std::fs::write(&bad, "INSERT INTO no_such_table VALUES (1);").unwrap();
    db.run(&[
        "create",
        "eu-bad",
        "--server",
        "eu",
        "--seed",
        bad.to_str().unwrap(),
    ])
    .expect(1)
    .mentions("no_such_table");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE slug = 'eu-bad'"),
        "0"
    );
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_eu-bad'"),
        "0"
    );
}
