//! `migrate` and the catalog reads across servers (docs/placements.md): `--dry-run`,
//! `--waves`, `--canary` and failure budgets over tenants wherever they live, files that
//! run alone (`-- no-transaction`) on another server, `usage` and `verify --structure`
//! reading each server's catalog, and servers that cannot be reached. Needs the second
//! cluster that scripts/with-postgres.sh starts (TENANTCTL_TEST_SECOND_URL).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

/// A home database with `[servers.eu]` pointing at a fresh database on the second server.
fn two_servers(label: &str) -> (TestDb, SecondDb) {
    let db = TestDb::new(label);
    let second = SecondDb::new(label);
    db.config(&second.server_toml("eu"));
    (db, second)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `[servers.eu]` and a `[servers.gone]` nobody answers for, with a tenant `g1` registered
/// there at `version` (a row only: its server does not exist).
fn add_a_server_that_is_gone(db: &TestDb, second: &SecondDb, version: i64) {
    db.config(&format!(
        "{}[servers.gone]\nurl = \"postgres://postgres@127.0.0.1:{}/postgres\"\n",
        second.server_toml("eu"),
        closed_port()
    ));
    db.query(&format!(
        "INSERT INTO public.tenants (slug, schema_name, state, version, server_name, database_name) \
         VALUES ('g1', 'tenant_g1', 'active', {version}, 'gone', 'postgres')"
    ));
}

/// slug -> row of the report's `tenants` array.
fn by_slug(doc: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["slug"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

fn migrations_of(row: &serde_json::Value) -> Vec<String> {
    row["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

fn history_count(second: &SecondDb, schema: &str) -> String {
    second.scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".refinery_schema_history"
    ))
}

fn versions(db: &TestDb) -> String {
    db.scalar(
        "SELECT string_agg(slug || ':' || version || ':' || state, ',' ORDER BY slug) \
         FROM public.tenants",
    )
}

const V8: (&str, &str) = ("V8__more.sql", "CREATE TABLE more (id int);");
const V9: (&str, &str) = ("V9__again.sql", "CREATE TABLE again (id int);");

#[test]
fn dry_run_reads_each_far_tenants_history_where_it_lives_and_changes_nothing() {
    let (db, second) = two_servers("pm_dry");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "e2", "--server", "eu"]).expect(0);
    // e2 is at V8 on its server while its row says 7 (a crash between the two commits):
    // only its history where it lives can tell the dry run that V8 is there.
    let v8 = db.migrations_with("v8", &[V8]);
    db.run_with(&v8, &["migrate", "e2"]).expect(0);
    db.query("UPDATE public.tenants SET version = 7, migrations_digest = NULL WHERE slug = 'e2'");
    let v9 = db.migrations_with("v9", &[V8, V9]);
    let before = db.snapshot();
    let far_before = (
        history_count(&second, "tenant_e1"),
        history_count(&second, "tenant_e2"),
    );

    let r = db.run_with(&v9, &["migrate", "--dry-run", "--format", "json"]);
    r.expect(0);
    let rows = by_slug(&r.json());
    assert_eq!(migrations_of(&rows["h1"]), ["V8__more", "V9__again"]);
    assert_eq!(migrations_of(&rows["e1"]), ["V8__more", "V9__again"]);
    assert_eq!(migrations_of(&rows["e2"]), ["V9__again"], "{}", r.stdout);
    for e in ["e1", "e2"] {
        assert_eq!(rows[e]["to_version"], 9, "{}", rows[e]);
        assert!(
            rows[e]["note"].as_str().unwrap().contains("on server eu"),
            "{}",
            rows[e]
        );
    }
    let text = db.run_with(&v9, &["migrate", "--dry-run"]);
    text.expect(0).mentions("would apply V9__again (server eu)");
    assert_eq!(db.snapshot(), before);
    assert_eq!(
        (
            history_count(&second, "tenant_e1"),
            history_count(&second, "tenant_e2")
        ),
        far_before
    );
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_e1\".again') IS NULL"),
        "t"
    );

    // A server that cannot be reached fails its tenants, naming it (exit 1); still
    // nothing is changed, not even their rows.
    add_a_server_that_is_gone(&db, &second, 7);
    let before = db.snapshot();
    let r = db.run_with(
        &v9,
        &[
            "--connect-timeout",
            "1",
            "migrate",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    r.expect(1);
    let rows = by_slug(&r.json());
    assert_eq!(rows["g1"]["outcome"], "failed");
    assert!(
        rows["g1"]["error"]
            .as_str()
            .unwrap()
            .contains("server gone (database postgres) cannot be reached"),
        "{}",
        rows["g1"]
    );
    assert_eq!(migrations_of(&rows["e1"]), ["V8__more", "V9__again"]);
    assert_eq!(db.snapshot(), before);
}

#[test]
fn waves_span_servers_and_a_failing_wave_stops_the_next() {
    let (db, second) = two_servers("pm_waves");
    db.run(&["create", "c1", "--label", "ring=canary"])
        .expect(0);
    db.run(&["create", "b1", "--server", "eu", "--label", "ring=beta"])
        .expect(0);
    db.run(&["create", "b2", "--label", "ring=beta"]).expect(0);
    db.run(&["create", "s1"]).expect(0);
    db.run(&["create", "s2", "--server", "eu"]).expect(0);
    let dir = db.migrations_with(
        "next",
        &[(
            "V8__x.sql",
            "DO $$ BEGIN IF current_schema() = 'tenant_b1' THEN RAISE EXCEPTION 'boom in b1'; \
             END IF; END $$; CREATE TABLE x (id int);",
        )],
    );
    let version = |slug: &str| {
        db.scalar(&format!(
            "SELECT version FROM public.tenants WHERE slug = '{slug}'"
        ))
    };
    // b1 (on eu) fails: the wave stops, and neither s1 (home) nor s2 (eu) is started.
    let r = db.run_with(
        &dir,
        &[
            "migrate",
            "--waves",
            "ring=canary",
            "ring=beta",
            "*",
            "--format",
            "json",
        ],
    );
    r.expect(1);
    let doc = r.json();
    let waves: Vec<(String, String, u64)> = doc["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["selector"].as_str().unwrap().to_string(),
                w["status"].as_str().unwrap().to_string(),
                w["failed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        waves,
        [
            ("ring=canary".into(), "completed".into(), 0),
            ("ring=beta".into(), "stopped".into(), 1),
            ("*".into(), "not_started".into(), 0),
        ],
        "{doc}"
    );
    assert_eq!(doc["stopped"]["wave"], 2);
    let rows = by_slug(&doc);
    assert!(
        rows["b1"]["error"].as_str().unwrap().contains("boom in b1")
            && rows["b1"]["error"]
                .as_str()
                .unwrap()
                .ends_with("(server eu)"),
        "{}",
        rows["b1"]
    );
    assert_eq!(rows["s2"]["outcome"], "skipped", "{}", rows["s2"]);
    assert!(
        rows["s2"]["error"]
            .as_str()
            .unwrap()
            .contains("the rollout stopped at wave 2"),
        "{}",
        rows["s2"]
    );
    assert_eq!(
        ["c1", "b1", "s1", "s2"].map(version),
        ["8", "7", "7", "7"],
        "{doc}"
    );
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_s2\".x') IS NULL"),
        "t"
    );

    // With a budget of one the rollout goes on past b1, through both servers.
    db.run_with(
        &dir,
        &[
            "migrate",
            "--waves",
            "ring=canary",
            "ring=beta",
            "*",
            "--max-failures",
            "1",
        ],
    )
    .expect(1)
    .mentions("wave 3 (*): 2 tenants, 0 failed, completed");
    assert_eq!(
        ["c1", "b1", "b2", "s1", "s2"].map(version),
        ["8", "7", "8", "8", "8"]
    );
    assert_eq!(history_count(&second, "tenant_s2"), "8");
}

#[test]
fn a_canary_on_another_server_holds_back_the_home_tenants() {
    let (db, second) = two_servers("pm_canary");
    // The fleet in registry order: a1 (eu) first, then h1 and h2 at home.
    db.run(&["create", "a1", "--server", "eu"]).expect(0);
    db.run(&["create", "h1", "h2"]).expect(0);
    let dir = db.migrations_with(
        "next",
        &[(
            "V8__x.sql",
            "DO $$ BEGIN IF current_schema() = 'tenant_a1' THEN RAISE EXCEPTION 'boom in a1'; \
             END IF; END $$; CREATE TABLE x (id int);",
        )],
    );
    let r = db.run_with(&dir, &["migrate", "--canary", "1", "--format", "json"]);
    r.expect(1);
    let rows = by_slug(&r.json());
    assert_eq!(rows["a1"]["outcome"], "failed", "{}", r.all());
    for h in ["h1", "h2"] {
        assert_eq!(rows[h]["outcome"], "skipped", "{}", r.all());
        assert!(
            rows[h]["error"]
                .as_str()
                .unwrap()
                .contains("a canary tenant failed"),
            "{}",
            rows[h]
        );
    }
    assert_eq!(versions(&db), "a1:7:failed,h1:7:active,h2:7:active");
    assert_eq!(history_count(&second, "tenant_a1"), "7");
}

#[test]
fn a_file_that_runs_alone_is_applied_on_the_tenants_server_under_its_lock_there() {
    let (db, second) = two_servers("pm_alone");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "--server", "eu"]).expect(0);
    let dir = db.migrations_with(
        "alone",
        &[
            (
                "V8__index.sql",
                "-- no-transaction\n\
                 CREATE INDEX CONCURRENTLY departments_name_idx ON departments (name);",
            ),
            V9,
        ],
    );
    // The tenant's lock held where it lives: the run waits for it.
    let mut holder = std::process::Command::new("psql")
        .args([second.url.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql starts");
    {
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "SELECT pg_advisory_lock({}, hashtext('tenant_e1'));",
            tenantctl::registry::locks::LOCK_CLASS
        )
        .unwrap();
        stdin.flush().unwrap();
    }
    for _ in 0..200 {
        let held =
            second.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted");
        if held != "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = spawn_tenantctl(&db, &["--migrations", path_str(&dir), "migrate", "e1"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_e1\".departments_name_idx') IS NULL"),
        "t",
        "the index was built while another session held the tenant's lock there"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let r = finish_within(child, Duration::from_secs(60));
    r.expect(0).mentions("on server eu");
    assert_eq!(
        second.scalar(
            "SELECT indisvalid FROM pg_index \
              WHERE indexrelid = '\"tenant_e1\".departments_name_idx'::regclass"
        ),
        "t"
    );
    assert_eq!(history_count(&second, "tenant_e1"), "9");
    assert_eq!(
        second.scalar("SELECT to_regclass('\"tenant_e1\".again') IS NOT NULL"),
        "t"
    );
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'e1'"),
        "active:9"
    );
    assert_eq!(
        db.scalar(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM public.tenant_migrations \
              WHERE slug = 'e1' AND version >= 8 AND outcome = 'applied'"
        ),
        "8,9"
    );
    // Home did not get the index, nor the history of e1.
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_e1'"),
        "0"
    );
    // The whole fleet: h1 at home goes the same way; nothing left to do after.
    db.run_with(&dir, &["migrate"]).expect(0);
    assert_eq!(versions(&db), "e1:9:active,h1:9:active");
    db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("2 up to date");

    // A file that fails on the far server: the tenant is failed on home with the error,
    // the statements before it stay applied (as at home).
    let bad = db.migrations_with(
        "alone_bad",
        &[
            (
                "V8__index.sql",
                "-- no-transaction\n\
                 CREATE INDEX CONCURRENTLY departments_name_idx ON departments (name);",
            ),
            V9,
            (
                "V10__breaks.sql",
                "-- no-transaction\nCREATE TABLE half (id int);\nSELECT 1/0;",
            ),
        ],
    );
    db.run_with(&bad, &["migrate", "e1"])
        .expect(1)
        .mentions("V10__breaks")
        .mentions("(server eu)");
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'e1'"),
        "failed:9"
    );
    assert_eq!(history_count(&second, "tenant_e1"), "9");
}

#[test]
fn usage_reads_each_servers_catalog_and_names_the_server() {
    let (db, second) = two_servers("pm_usage");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "e2", "--server", "eu"]).expect(0);
    second.query(
        "INSERT INTO \"tenant_e1\".employees (email, full_name) \
         SELECT 'e' || i || '@example.org', repeat('x', 3000) || i FROM generate_series(1, 2000) i; \
         ANALYZE \"tenant_e1\".employees",
    );
    let r = db.run(&["usage", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    let rows = doc["tenants"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{doc}");
    assert_eq!(rows[0]["slug"], "e1", "largest first: {doc}");
    for row in rows {
        let schema = row["schema"].as_str().unwrap();
        let far = row["slug"] != "h1";
        assert_eq!(row["server"], if far { "eu" } else { "home" }, "{row}");
        let sql = format!(
            "SELECT sum(pg_total_relation_size(oid)) FROM pg_class \
              WHERE relnamespace = '\"{schema}\"'::regnamespace AND relkind IN ('r', 'm')"
        );
        let total = if far {
            second.scalar(&sql)
        } else {
            db.scalar(&sql)
        };
        assert_eq!(row["total_bytes"].to_string(), total, "{schema}");
    }
    assert_eq!(rows[0]["rows_estimate"], 2000);
    assert!(rows[0]["writes"].as_i64().unwrap() >= 2000);
    // --top spans the servers; the text table names each tenant's server.
    let top = db
        .run(&["usage", "--top", "1", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(top["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(top["tenants"][0]["slug"], "e1");
    db.run(&["usage", "e2", "h1"])
        .expect(0)
        .mentions("tenant_e2   eu ")
        .mentions("tenant_h1   home ")
        .mentions("2 tenants");

    // A server that cannot be reached is named (exit 1); the rest is shown.
    add_a_server_that_is_gone(&db, &second, 7);
    let r = db.run(&["--connect-timeout", "1", "usage", "--format", "json"]);
    r.expect(1).mentions("on server gone (database postgres)");
    assert_eq!(r.json()["tenants"].as_array().unwrap().len(), 3);
}

#[test]
fn verify_structure_finds_drift_on_the_second_server() {
    let (db, second) = two_servers("pm_structure");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "e2", "--server", "eu"]).expect(0);
    db.run(&["verify", "--structure"]).expect(0);
    second.query("ALTER TABLE \"tenant_e2\".employees ADD COLUMN nickname text");
    let r = db.run(&["verify", "--structure", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    let findings = doc["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{doc}");
    for f in findings {
        assert_eq!(f["slug"], "e2", "{doc}");
        let detail = f["detail"].as_str().unwrap();
        assert!(detail.contains("nickname"), "{detail}");
        assert!(detail.contains("(server eu, database "), "{detail}");
    }

    // A server that cannot be reached: a finding naming it, exit 1.
    second.query("ALTER TABLE \"tenant_e2\".employees DROP COLUMN nickname");
    add_a_server_that_is_gone(&db, &second, 7);
    let r = db.run(&[
        "--connect-timeout",
        "1",
        "verify",
        "--structure",
        "g1",
        "e1",
        "--format",
        "json",
    ]);
    r.expect(1);
    let doc = r.json();
    let kinds: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["server_not_audited"], "{doc}");
    assert!(doc["findings"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("server gone"));
}

#[test]
fn a_no_op_migrate_over_two_servers_reads_the_registry_once_and_contacts_no_server() {
    let (db, second) = two_servers("pm_noop");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "--server", "eu"]).expect(0);
    // Every statement writing the registry, counted (statement-level: even one that
    // changes no row).
    db.query(
        "CREATE TABLE public.registry_writes (n int); \
         CREATE FUNCTION public.count_write() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO public.registry_writes VALUES (1); RETURN NULL; END $$; \
         CREATE TRIGGER count_write AFTER INSERT OR UPDATE OR DELETE ON public.tenants \
           FOR EACH STATEMENT EXECUTE FUNCTION public.count_write()",
    );
    // The far tenant's server on a closed port: a no-op run must not need it.
    add_a_server_that_is_gone(&db, &second, 7);
    db.query("UPDATE public.tenants SET migrations_digest = (SELECT migrations_digest FROM public.tenants WHERE slug = 'h1') WHERE slug = 'g1'");
    db.query("DELETE FROM public.registry_writes");
    db.run(&["--connect-timeout", "1", "migrate"])
        .expect(0)
        .mentions("3 up to date");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.registry_writes"),
        "0"
    );
}

#[test]
fn a_far_transaction_cut_by_its_server_is_tried_again_when_the_server_answers() {
    let (db, second) = two_servers("pm_outage");
    db.run(&["create", "h1"]).expect(0);
    db.run(&["create", "e1", "--server", "eu"]).expect(0);
    let dir = db.migrations_with(
        "slow",
        &[(
            "V8__slow.sql",
            "SELECT pg_sleep(CASE WHEN current_schema() = 'tenant_e1' THEN 3 ELSE 0 END);\n\
             CREATE TABLE slow (id int);",
        )],
    );
    let child = spawn_tenantctl(&db, &["--migrations", path_str(&dir), "migrate"]);
    // The far tenant's session, sleeping inside its transaction, is ended as a restart or a
    // failover would end it (SQLSTATE 57P01).
    let mut ended = false;
    for _ in 0..200 {
        let n = second.scalar(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE datname = '{}' AND query LIKE '%pg_sleep(CASE%' AND pid <> pg_backend_pid()",
            second.name
        ));
        if n != "0" {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ended, "the far tenant's transaction was never seen");
    let r = finish_within(child, Duration::from_secs(60));
    r.expect(0)
        .mentions("tried again after the server came back")
        .mentions("server eu: the server went away");
    assert_eq!(versions(&db), "e1:8:active,h1:8:active");
    assert_eq!(history_count(&second, "tenant_e1"), "8");
}
