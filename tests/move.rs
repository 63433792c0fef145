//! `tenantctl move SLUG --to NAME [--own-database] [--dry-run]` (docs/placements.md): a
//! tenant relocated between two real clusters and between databases of one, with nothing
//! lost under a concurrent writer; failures and Ctrl-C halfway leaving it where it was;
//! bad input changing nothing. Needs the second cluster scripts/with-postgres.sh starts.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

static SLUGS: AtomicUsize = AtomicUsize::new(0);

/// A slug no other test of any process uses: a tenant's own database is named like its
/// schema, and databases (and roles) are shared by the whole cluster.
fn unique_slug(label: &str) -> String {
    let n = SLUGS.fetch_add(1, Ordering::SeqCst);
    format!("{label}-{}-{n}", std::process::id())
}

/// A home database with `[servers.eu]` pointing at a fresh database on the second server,
/// and `extra` tenants.toml lines.
fn two_servers(label: &str, extra: &str) -> (TestDb, SecondDb) {
    let db = TestDb::new(label);
    let second = SecondDb::new(label);
    db.config(&format!("{extra}\n{}", second.server_toml("eu")));
    (db, second)
}

fn placement(db: &TestDb, slug: &str) -> (String, String) {
    let r = db.query(&format!(
        "SELECT server_name, database_name FROM public.tenants WHERE slug = '{slug}'"
    ));
    (r[0][0].clone().unwrap(), r[0][1].clone().unwrap())
}

/// Rows in three tables (one with a trigger writing a fourth), sequences advanced.
fn fill(url: &str, schema: &str) {
    query(
        url,
        &format!(
            "SET search_path = \"{schema}\"; \
             INSERT INTO departments (name, cost_center) SELECT 'dep ' || i, 'cc' || i FROM generate_series(1, 40) i; \
             INSERT INTO employees (email, full_name, department_id) \
                 SELECT 'e' || i || '@x.org', 'Employee ' || i, 1 + i % 40 FROM generate_series(1, 200) i; \
             DELETE FROM employees WHERE id % 7 = 0; \
             INSERT INTO wellness_logs (employee_id, logged_on, steps, notes) \
                 SELECT id, date '2026-01-01' + (id % 30)::int, id * 10, E'tab\\there, quote '' and \\\\ back' \
                   FROM employees;"
        ),
    );
}

/// Everything a copy must carry: every row of every table (as text, ordered), every
/// sequence's position, the migration history.
fn contents(url: &str, schema: &str) -> String {
    query(
        url,
        &format!(
            "SELECT string_agg(t, E'\\n' ORDER BY t) FROM ( \
               SELECT 'departments ' || d::text AS t FROM \"{schema}\".departments d \
               UNION ALL SELECT 'employees ' || e::text FROM \"{schema}\".employees e \
               UNION ALL SELECT 'wellness ' || w::text FROM \"{schema}\".wellness_logs w \
               UNION ALL SELECT 'audit ' || a::text FROM \"{schema}\".audit_log a \
               UNION ALL SELECT 'history ' || h::text FROM \"{schema}\".refinery_schema_history h \
               UNION ALL SELECT 'seq ' || s.sequencename || ' ' || coalesce(s.last_value, 0) \
                 FROM pg_sequences s WHERE s.schemaname = '{schema}') x"
        ),
    )[0][0]
        .clone()
        .unwrap_or_default()
}

fn schema_count(url: &str, schema: &str) -> String {
    scalar(
        url,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"),
    )
}

#[test]
fn a_tenant_moves_to_another_server_with_everything_and_back() {
    let (db, second) = two_servers("move_there", "");
    db.run(&["create", "acme", "other"]).expect(0);
    fill(&db.url, "tenant_acme");
    let before = contents(&db.url, "tenant_acme");
    assert!(before.contains("wellness "), "{before}");

    let moved = db.run(&["move", "acme", "--to", "eu", "--format", "json"]);
    let doc = moved.expect(0).json();
    assert_eq!(doc["slug"], "acme");
    assert_eq!(doc["from"]["server"], "home");
    assert_eq!(doc["to"]["server"], "eu");
    assert_eq!(doc["to"]["database"], second.name.as_str());
    let rows = doc["rows"].as_i64().unwrap();
    assert!(rows > 400, "{doc}");
    assert!(doc["writes_stopped_ms"].as_i64().is_some() && doc["duration_ms"].as_i64().is_some());

    // Everything at the new place, nothing left at the old one, the registry switched.
    assert_eq!(contents(&second.url, "tenant_acme"), before);
    assert_eq!(schema_count(&db.url, "tenant_acme"), "0");
    assert_eq!(placement(&db, "acme"), ("eu".into(), second.name.clone()));
    assert_eq!(placement(&db, "other"), ("home".into(), db.name.clone()));
    assert_eq!(
        db.scalar(
            "SELECT from_server || '/' || from_database || '>' || to_server || '/' || to_database \
                    || ':' || rows || ':' || (moved_by = session_user) || ':' || (writes_stopped_ms >= 0) \
               FROM public.tenant_moves WHERE slug = 'acme'"
        ),
        format!("home/{}>eu/{}:{rows}:true:true", db.name, second.name)
    );
    // The copy is a working tenant: its sequences go on where they were, migrate reaches
    // it, the audit trigger still fires.
    second.query(
        "INSERT INTO tenant_acme.departments (name) VALUES ('after the move'); \
         INSERT INTO tenant_acme.employees (email, full_name) VALUES ('n@x.org', 'New')",
    );
    assert_eq!(
        second.scalar("SELECT max(id) FROM tenant_acme.departments"),
        "41"
    );
    db.run(&["status", "--check"]).expect(0);

    // And back home, the rows written over there included.
    let there = contents(&second.url, "tenant_acme");
    db.run(&["move", "acme", "--to", "home"])
        .expect(0)
        .mentions("moved tenant acme (schema tenant_acme) from server eu");
    assert_eq!(contents(&db.url, "tenant_acme"), there);
    assert_eq!(schema_count(&second.url, "tenant_acme"), "0");
    assert_eq!(placement(&db, "acme"), ("home".into(), db.name.clone()));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_moves WHERE slug = 'acme'"),
        "2"
    );
    db.run(&["verify"]).expect(0);
}

#[test]
fn own_databases_at_home_and_on_the_second_server_and_back_to_shared() {
    let (db, second) = two_servers("move_own", "");
    let slug = unique_slug("own");
    let schema = format!("tenant_{slug}");
    db.run(&["create", &slug]).expect(0);
    fill(&db.url, &schema);
    let before = contents(&db.url, &schema);
    let home_own = replace_dbname(&db.url, &schema);

    // A database of its own at home.
    db.run(&["move", &slug, "--to", "home", "--own-database"])
        .expect(0);
    let result = std::panic::catch_unwind(|| {
        assert_eq!(contents(&home_own, &schema), before);
        assert_eq!(schema_count(&db.url, &schema), "0");
        assert_eq!(placement(&db, &slug), ("home".into(), schema.clone()));

        // From there to a database of its own on the second server.
        second.own_database(&schema);
        db.run(&["move", &slug, "--to", "eu", "--own-database"])
            .expect(0);
        assert_eq!(contents(&second.url_of(&schema), &schema), before);
        assert_eq!(placement(&db, &slug), ("eu".into(), schema.clone()));
        assert_eq!(
            scalar(
                &admin_url(),
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{schema}'")
            ),
            "0",
            "the old own database is dropped"
        );

        // And into the second server's shared database.
        db.run(&["move", &slug, "--to", "eu"]).expect(0);
        assert_eq!(contents(&second.url, &schema), before);
        assert!(!second.database_exists(&schema));
        assert_eq!(placement(&db, &slug), ("eu".into(), second.name.clone()));
    });
    let _ = try_query(
        &admin_url(),
        &format!("DROP DATABASE IF EXISTS \"{schema}\" WITH (FORCE)"),
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn per_tenant_roles_move_with_the_tenant_between_clusters() {
    let slug = unique_slug("roles");
    let role = format!("tenant_{slug}");
    let label = format!("app_{}", slug.replace('-', "_"));
    let (db, second) = two_servers(
        "move_roles",
        &format!("[tenants]\napp_role = \"{label}\"\nper_tenant_roles = true"),
    );
    query(
        &admin_url(),
        &format!("CREATE ROLE \"{label}\" LOGIN NOINHERIT"),
    );
    second.query(&format!("CREATE ROLE \"{label}\" LOGIN NOINHERIT"));
    db.run(&["create", &slug]).expect(0);
    db.run(&["move", &slug, "--to", "eu"]).expect(0);
    let has = |url: &str, who: &str, table: &str, privilege: &str| {
        scalar(
            url,
            &format!("SELECT has_table_privilege('{who}', '\"{role}\".{table}', '{privilege}')"),
        )
    };
    // The tenant's role was made over there with the same privileges (audit_log stays
    // INSERT only, the history out of reach), and dropped at home.
    assert_eq!(has(&second.url, &role, "employees", "DELETE"), "t");
    assert_eq!(has(&second.url, &role, "audit_log", "INSERT"), "t");
    assert_eq!(has(&second.url, &role, "audit_log", "SELECT"), "f");
    assert_eq!(
        has(&second.url, &role, "refinery_schema_history", "SELECT"),
        "f"
    );
    assert_eq!(
        second.scalar(&format!(
            "SELECT pg_has_role('{label}', '{role}', 'MEMBER')"
        )),
        "t"
    );
    assert_eq!(
        scalar(
            &admin_url(),
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")
        ),
        "0"
    );
    db.run(&["move", &slug, "--to", "home"]).expect(0);
    assert_eq!(has(&db.url, &role, "audit_log", "SELECT"), "f");
    assert_eq!(has(&db.url, &role, "employees", "UPDATE"), "t");
    assert_eq!(
        second.scalar(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        )),
        "0"
    );
    let _ = try_query(
        &admin_url(),
        &format!("DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\""),
    );
}

#[test]
fn dry_run_says_what_it_would_move_and_changes_nothing() {
    let (db, second) = two_servers("move_dry", "");
    db.run(&["create", "acme"]).expect(0);
    fill(&db.url, "tenant_acme");
    db.query("ANALYZE tenant_acme.employees");
    let before = db.snapshot();
    db.run(&["move", "acme", "--to", "eu", "--dry-run"])
        .expect(0)
        .mentions("would move tenant acme (schema tenant_acme) from server home")
        .mentions(&format!("to server eu (database {})", second.name))
        .mentions("employees: about 172 rows");
    let doc = db
        .run(&[
            "move",
            "acme",
            "--to",
            "eu",
            "--own-database",
            "--dry-run",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["to"]["database"], "tenant_acme");
    assert!(doc["tables"].as_array().unwrap().len() >= 7, "{doc}");
    assert_eq!(db.snapshot(), before);
    assert_eq!(schema_count(&second.url, "tenant_acme"), "0");
    assert!(!second.database_exists("tenant_acme"));
}

/// Bad input: exit 2, the message, and neither server changed.
fn refused(db: &TestDb, second: &SecondDb, args: &[&str], message: &str) {
    let before = (
        db.snapshot(),
        second.query("SELECT nspname FROM pg_namespace ORDER BY 1"),
    );
    db.run(args)
        .expect(2)
        .mentions(message)
        .mentions("nothing was changed");
    let after = (
        db.snapshot(),
        second.query("SELECT nspname FROM pg_namespace ORDER BY 1"),
    );
    assert_eq!(after, before, "{args:?} changed something");
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_moves"), "0");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (db, second) = two_servers("move_bad", "");
    db.run(&["create", "acme", "taken", "paused", "broken"])
        .expect(0);
    fill(&db.url, "tenant_acme");
    refused(
        &db,
        &second,
        &["move", "ghost", "--to", "eu"],
        "unknown tenant ghost",
    );
    refused(
        &db,
        &second,
        &["move", "acme", "--to", "mars"],
        "unknown server 'mars'",
    );
    refused(
        &db,
        &second,
        &["move", "acme", "--to", "home"],
        &format!(
            "tenant acme already lives on server home (database {})",
            db.name
        ),
    );
    second.query("CREATE SCHEMA tenant_taken");
    refused(
        &db,
        &second,
        &["move", "taken", "--to", "eu"],
        &format!(
            "schema tenant_taken already exists in database {} on server eu",
            second.name
        ),
    );
    db.run(&["suspend", "paused"]).expect(0);
    refused(
        &db,
        &second,
        &["move", "paused", "--to", "eu"],
        "tenant paused is suspended, and only an active tenant can be moved",
    );
    db.query("UPDATE public.tenants SET state = 'failed' WHERE slug = 'broken'");
    refused(
        &db,
        &second,
        &["move", "broken", "--to", "eu"],
        "tenant broken is failed",
    );
    let before = db.snapshot();
    db.run(&["move", "Bad!", "--to", "eu"])
        .expect(2)
        .mentions("slug");
    assert_eq!(db.snapshot(), before);

    // An own database that exists already on the target; and asking for the own database
    // the tenant already has.
    let slug = unique_slug("owned");
    let schema = format!("tenant_{slug}");
    second.own_database(&schema);
    second.query(&format!("CREATE DATABASE \"{schema}\""));
    db.run(&["create", &slug]).expect(0);
    refused(
        &db,
        &second,
        &["move", &slug, "--to", "eu", "--own-database"],
        &format!("database {schema} already exists on server eu"),
    );
    second.query(&format!("DROP DATABASE \"{schema}\""));
    db.run(&["move", &slug, "--to", "eu", "--own-database"])
        .expect(0);
    let moves = db.scalar("SELECT count(*) FROM public.tenant_moves");
    let before = db.snapshot();
    db.run(&["move", &slug, "--to", "eu", "--own-database"])
        .expect(2)
        .mentions(&format!(
            "already has its own database ({schema}) on server eu"
        ));
    assert_eq!(db.snapshot(), before);
    assert_eq!(db.scalar("SELECT count(*) FROM public.tenant_moves"), moves);
}

#[test]
fn the_application_role_missing_at_the_target_is_refused() {
    let label = format!("app_{}", unique_slug("r").replace('-', "_"));
    let (db, second) = two_servers("move_norole", &format!("[tenants]\napp_role = \"{label}\""));
    query(&admin_url(), &format!("CREATE ROLE \"{label}\" LOGIN"));
    db.run(&["create", "acme"]).expect(0);
    refused(
        &db,
        &second,
        &["move", "acme", "--to", "eu"],
        &format!("application role '{label}' does not exist on server eu"),
    );
}

#[test]
fn writes_that_cannot_be_stopped_in_time_name_the_holder_and_change_nothing() {
    let (db, second) = two_servers("move_held", "");
    db.run(&["create", "acme"]).expect(0);
    let before = db.snapshot();
    // The application is in the middle of a write it does not finish.
    let mut app = psql_session(&db);
    {
        use std::io::Write;
        let stdin = app.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN; INSERT INTO tenant_acme.departments (name) VALUES ('held');\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    let mut pid = String::new();
    for _ in 0..200 {
        pid = db.scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
               AND application_name = 'psql' AND state = 'idle in transaction'",
        );
        if !pid.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid.is_empty());
    db.run(&["--lock-timeout", "1s", "move", "acme", "--to", "eu"])
        .expect(1)
        .mentions("could not be stopped within 1 s")
        .mentions(&format!("pid {pid}"))
        .mentions("stays at server home");
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(db.snapshot(), before);
    assert_eq!(schema_count(&second.url, "tenant_acme"), "0");
}

/// Another session holds tenant `schema`'s lock on home (as a running migrate, backup or
/// move would); returns that psql session.
fn hold_lock(db: &TestDb, schema: &str) -> std::process::Child {
    use std::io::Write;
    let mut s = psql_session(db);
    let stdin = s.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "SELECT pg_advisory_lock({}, hashtext('{schema}'));",
        tenantctl::registry::locks::LOCK_CLASS
    )
    .unwrap();
    stdin.flush().unwrap();
    wait_for_tenant_lock_holder(db, schema);
    s
}

#[test]
fn a_move_waits_for_the_tenants_lock_and_names_its_holder() {
    let (db, second) = two_servers("move_locked", "");
    let slug = unique_slug("locked");
    let schema = format!("tenant_{slug}");
    db.run(&["create", "acme"]).expect(0);
    db.run(&["create", &slug, "--server", "eu"]).expect(0);
    // A tenant at home: the lock is taken in the source's transaction there.
    let mut holder = hold_lock(&db, "tenant_acme");
    let before = db.snapshot();
    db.run(&["--lock-timeout", "1s", "move", "acme", "--to", "eu"])
        .expect(1)
        .mentions("tenant acme is locked by pid")
        .mentions("stays at server home");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(db.snapshot(), before);
    assert_eq!(schema_count(&second.url, "tenant_acme"), "0");
    // A tenant elsewhere moving elsewhere: the lock on home is a session lock.
    second.own_database(&schema);
    let mut holder = hold_lock(&db, &schema);
    db.run(&[
        "--lock-timeout",
        "1s",
        "move",
        &slug,
        "--to",
        "eu",
        "--own-database",
    ])
    .expect(1)
    .mentions(&format!("cannot move tenant {slug}; nothing was changed"))
    .mentions(&format!("tenant {slug} is locked by pid"));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(db.snapshot(), before);
    assert!(!second.database_exists(&schema));
    // Once the lock is free the same moves go through.
    db.run(&["move", &slug, "--to", "eu", "--own-database"])
        .expect(0);
    db.run(&["move", "acme", "--to", "eu"]).expect(0);
}

/// `url` with another user and password.
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("//").unwrap();
    let (_, host) = rest.split_once('@').unwrap();
    format!("{scheme}//{user}:{password}@{host}")
}

/// An application writing to tenant acme in a loop, as the application role, routing by
/// the registry before every attempt, and keeping the ids of the inserts that committed.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<i64>>>,
    failures: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

fn start_writer(home: String, places: Vec<(String, String)>) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let (s, c, f) = (stop.clone(), committed.clone(), failures.clone());
    let thread = std::thread::spawn(move || {
        let mut next = 0i64;
        while !s.load(Ordering::SeqCst) {
            next += 1;
            let route = try_query(
                &home,
                "SELECT server_name FROM public.tenants WHERE slug = 'acme'",
            );
            let Some(url) = route.ok().and_then(|r| {
                let server = r[0][0].clone()?;
                places
                    .iter()
                    .find(|(n, _)| *n == server)
                    .map(|(_, u)| u.clone())
            }) else {
                f.fetch_add(1, Ordering::SeqCst);
                continue;
            };
            let sql = format!(
                "SET statement_timeout = '30s'; BEGIN; SET LOCAL search_path = tenant_acme; \
                 INSERT INTO audit_log (actor, action, entity, entity_id) \
                 VALUES ('writer', 'insert', 'probe', {next}); COMMIT;"
            );
            match try_query(&url, &sql) {
                Ok(_) => c.lock().unwrap().push(next),
                Err(_) => {
                    f.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    });
    Writer {
        stop,
        committed,
        failures,
        thread,
    }
}

#[test]
fn a_move_under_a_concurrent_writer_loses_and_duplicates_nothing() {
    let label = format!("app_{}", unique_slug("w").replace('-', "_"));
    let (db, second) = two_servers("move_writer", &format!("[tenants]\napp_role = \"{label}\""));
    let pw = "writer-pw-1";
    query(
        &admin_url(),
        &format!("CREATE ROLE \"{label}\" LOGIN PASSWORD '{pw}'"),
    );
    second.query(&format!("CREATE ROLE \"{label}\" LOGIN PASSWORD '{pw}'"));
    db.run(&["create", "acme"]).expect(0);
    fill(&db.url, "tenant_acme");
    let home_app = as_user(&db.url, &label, pw);
    let places = vec![
        ("home".to_string(), home_app.clone()),
        ("eu".to_string(), as_user(&second.url, &label, pw)),
    ];
    let writer = start_writer(home_app, places);
    let wait_for = |n: usize| {
        let t = Instant::now();
        while writer.committed.lock().unwrap().len() < n {
            assert!(t.elapsed() < Duration::from_secs(60), "the writer is stuck");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(20);
    db.run(&["move", "acme", "--to", "eu"]).expect(0);
    let after_first = writer.committed.lock().unwrap().len();
    wait_for(after_first + 20);
    db.run(&["move", "acme", "--to", "home"]).expect(0);
    let after_second = writer.committed.lock().unwrap().len();
    wait_for(after_second + 20);
    writer.stop.store(true, Ordering::SeqCst);
    writer.thread.join().unwrap();

    let committed = writer.committed.lock().unwrap().clone();
    let found: Vec<i64> = db
        .query(
            "SELECT entity_id FROM tenant_acme.audit_log WHERE entity = 'probe' ORDER BY entity_id",
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap().parse().unwrap())
        .collect();
    let mut unique = found.clone();
    unique.dedup();
    assert_eq!(unique, found, "a row arrived twice");
    for id in &committed {
        assert!(found.contains(id), "committed insert {id} was lost");
    }
    // The writer did meet the moves: its inserts waiting at the switch failed and were
    // sent again to the new place.
    assert!(writer.failures.load(Ordering::SeqCst) >= 1);
    assert_eq!(schema_count(&second.url, "tenant_acme"), "0");
}

/// A tenant with 300,000 rows (about 70 MB), to give a test time to stop the move halfway.
fn big_tenant(db: &TestDb, slug: &str) {
    db.run(&["create", slug]).expect(0);
    db.query(&format!(
        "INSERT INTO \"tenant_{slug}\".departments (name, cost_center) \
         SELECT 'd' || i, repeat('x', 200) FROM generate_series(1, 300000) i"
    ));
}

/// Waits until tenantctl's COPY runs at the target, and returns its pid there.
fn copy_running(url: &str, database: &str, child: &mut std::process::Child) -> String {
    let started = Instant::now();
    loop {
        let pid = scalar(
            url,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' \
                   AND application_name = 'tenantctl' AND query LIKE 'COPY %' LIMIT 1"
            ),
        );
        if !pid.is_empty() {
            return pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the move ended ({status}) before its copy was seen");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no COPY seen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The tenant is where it was, with its rows, writable at once; nothing at the target.
fn left_intact(db: &TestDb, second: &SecondDb, slug: &str, before: &str) {
    let schema = format!("tenant_{slug}");
    assert_eq!(db.snapshot(), before);
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM \"{schema}\".departments")),
        "300000"
    );
    db.query(&format!(
        "SET lock_timeout = '2s'; INSERT INTO \"{schema}\".departments (name) VALUES ('still writable')"
    ));
    assert_eq!(schema_count(&second.url, &schema), "0");
    assert!(!second.database_exists(&schema));
    assert_eq!(
        second.scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantctl' \
               AND datname IN ('{}', '{schema}')",
            second.name
        )),
        "0"
    );
    db.run(&["status", "--check"]).expect(0);
}

#[test]
fn ctrl_c_during_the_copy_leaves_the_tenant_where_it_was() {
    let (db, second) = two_servers("move_sigint", "");
    big_tenant(&db, "big");
    let before = db.snapshot();
    let mut child = spawn_tenantctl(&db, &["move", "big", "--to", "eu"]);
    copy_running(&second.url, &second.name, &mut child);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    finish_within(child, Duration::from_secs(60))
        .expect(130)
        .mentions("interrupted by SIGINT")
        .mentions("tenant big stays at server home");
    left_intact(&db, &second, "big", &before);
}

#[test]
fn the_target_going_away_during_the_copy_leaves_the_tenant_and_no_database() {
    let (db, second) = two_servers("move_killed", "");
    let slug = unique_slug("killed");
    big_tenant(&db, &slug);
    let own = second.own_database(&format!("tenant_{slug}"));
    let before = db.snapshot();
    let mut child = spawn_tenantctl(&db, &["move", &slug, "--to", "eu", "--own-database"]);
    let pid = copy_running(&second.url, &own, &mut child);
    second.query(&format!("SELECT pg_terminate_backend({pid})"));
    finish_within(child, Duration::from_secs(60))
        .expect(1)
        .mentions("the move failed")
        .mentions(&format!("tenant {slug} stays at server home"));
    left_intact(&db, &second, &slug, &before);
}
