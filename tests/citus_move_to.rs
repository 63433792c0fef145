//! `move SLUG --to NAME` into and out of a Citus coordinator (docs/placements.md "move",
//! docs/citus.md "Moving a tenant into or out of a Citus server"): home is a plain
//! PostgreSQL database holding the registry, server `c` a Citus coordinator's database with
//! two workers (scripts/with-citus.sh). A tenant moved in arrives as a distributed schema on
//! a worker, all or nothing; moved out, its rows come from the workers through the
//! coordinator, which blocks the application's writes while it is copied.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::citus::{home_and_citus, CitusDb};
use common::*;

static SLUGS: AtomicUsize = AtomicUsize::new(0);

/// A slug unique to this run (tenant roles are cluster-wide).
fn unique_slug(label: &str) -> String {
    let n = SLUGS.fetch_add(1, Ordering::SeqCst);
    format!("{label}-{}-{n}", std::process::id())
}

/// Rows in every table of the example, with the audit trail the trigger wrote.
fn fill(url: &str, schema: &str) {
    query(
        url,
        &format!(
            "SET search_path = \"{schema}\"; \
             INSERT INTO departments (name, cost_center) SELECT 'dep ' || i, 'cc' || i FROM generate_series(1, 20) i; \
             INSERT INTO employees (email, full_name, department_id) \
                 SELECT 'e' || i || '@x.org', 'Employee ' || i, 1 + i % 20 FROM generate_series(1, 60) i; \
             DELETE FROM employees WHERE id % 7 = 0; \
             INSERT INTO wellness_logs (employee_id, logged_on, steps, notes) \
                 SELECT id, date '2026-01-01' + (id % 30)::int, id * 10, E'tab\\there, quote '' and \\\\ back' \
                   FROM employees;"
        ),
    );
}

/// What the tenant holds, compared before and after a move: each table's rows in order,
/// and the sequences' positions (read through the coordinator on Citus).
fn contents(url: &str, schema: &str) -> String {
    let mut out = String::new();
    for (table, key) in [
        ("departments", "id"),
        ("employees", "id"),
        ("wellness_logs", "employee_id, logged_on"),
        ("audit_log", "id"),
        ("refinery_schema_history", "version"),
    ] {
        out.push_str(&format!(
            "{table}: {:?}\n",
            query(
                url,
                &format!("SELECT md5(string_agg(t::text, '|' ORDER BY {key})), count(*) FROM \"{schema}\".{table} t")
            )
        ));
    }
    out.push_str(&format!(
        "{:?}",
        query(
            url,
            &format!(
                "SELECT sequencename, last_value FROM pg_sequences \
                  WHERE schemaname = '{schema}' ORDER BY 1"
            )
        )
    ));
    out
}

/// How many of `schema`'s tables Citus distributed, and on how many nodes their shards are.
fn distributed_tables(c: &CitusDb, schema: &str) -> (String, String) {
    let row = c.db.query(&format!(
        "SELECT count(*), count(DISTINCT (nodename, nodeport)) FROM citus_shards \
          WHERE table_name::text LIKE '{schema}.%'"
    ));
    (row[0][0].clone().unwrap(), row[0][1].clone().unwrap())
}

/// Schemas of the move (the tenant's, or one set aside or left over by tenantctl) on the
/// coordinator and on each worker, and the distributed schemas.
fn leftovers(c: &CitusDb, schema: &str) -> Vec<String> {
    let names = format!(
        "SELECT nspname FROM pg_namespace WHERE nspname = '{schema}' \
            OR nspname LIKE 'tenantctl\\_%' ORDER BY 1"
    );
    let mut found = Vec::new();
    for url in std::iter::once(&c.db.url).chain(&c.workers) {
        for r in query(url, &names) {
            found.push(format!("{url}: {}", r[0].clone().unwrap()));
        }
    }
    for r in
        c.db.query("SELECT schemaid::regnamespace::text FROM pg_dist_schema")
    {
        found.push(format!("distributed: {}", r[0].clone().unwrap()));
    }
    found
}

/// The coordinator's schemas, and every worker's.
fn everywhere(c: &CitusDb) -> Vec<String> {
    std::iter::once(&c.db.url)
        .chain(&c.workers)
        .map(|u| {
            scalar(
                u,
                "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace",
            )
        })
        .collect()
}

const V8: &str = "ALTER TABLE departments ADD COLUMN floor integer;\n\
UPDATE departments SET floor = 3;\n\
CREATE INDEX departments_floor_idx ON departments (floor);\n";

#[test]
fn a_tenant_moves_into_a_citus_server_as_a_distributed_schema_and_back_home() {
    let (home, c) = home_and_citus("cm_there", "");
    home.run(&["create", "h1"]).expect(0);
    fill(&home.url, "tenant_h1");
    let before = contents(&home.url, "tenant_h1");
    let (snapshot, c_before) = (home.snapshot(), everywhere(&c));
    home.run(&["move", "h1", "--to", "c", "--dry-run"])
        .expect(0)
        .mentions("would move tenant h1 (schema tenant_h1) from server home")
        .mentions("nothing was changed");
    assert_eq!((home.snapshot(), everywhere(&c)), (snapshot, c_before));

    home.run(&["move", "h1", "--to", "c"])
        .expect(0)
        .mentions("moved tenant h1 (schema tenant_h1) from server home")
        .mentions("to server c (database");
    // A distributed schema on one worker, with the same rows and sequences.
    assert_eq!(
        c.db.scalar("SELECT string_agg(schemaid::regnamespace::text, ',') FROM pg_dist_schema"),
        "tenant_h1"
    );
    assert_eq!(
        distributed_tables(&c, "tenant_h1"),
        ("9".into(), "1".into())
    );
    let node = c.nodes().get("tenant_h1").cloned().unwrap();
    assert!(c.worker_nodes().contains(&node), "{node}");
    assert_eq!(contents(&c.db.url, "tenant_h1"), before);
    // The coordinator's local copy of the rows was freed (the shards hold them).
    assert_eq!(
        c.db.scalar(
            "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c \
              JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'tenant_h1' AND c.relkind = 'r'"
        ),
        "0"
    );
    // The registry points at c, the move is recorded, the old schema is gone.
    assert_eq!(
        home.scalar("SELECT server_name FROM public.tenants WHERE slug = 'h1'"),
        "c"
    );
    assert_eq!(
        home.scalar(
            "SELECT from_server || '>' || to_server || ' ' || rows FROM public.tenant_moves"
        ),
        format!(
            "home>c {}",
            c.db.scalar(
                "SELECT (SELECT count(*) FROM tenant_h1.departments) \
                      + (SELECT count(*) FROM tenant_h1.employees) \
                      + (SELECT count(*) FROM tenant_h1.wellness_logs) \
                      + (SELECT count(*) FROM tenant_h1.audit_log) \
                      + (SELECT count(*) FROM tenant_h1.refinery_schema_history)"
            )
        )
    );
    assert_eq!(
        home.scalar(
            "SELECT count(*) FROM pg_namespace \
              WHERE nspname = 'tenant_h1' OR nspname LIKE 'tenantctl\\_%'"
        ),
        "0"
    );
    // Writable there: the audit trigger fires once per new row (not for the copied ones),
    // and the next ids follow the copied ones.
    let audits = c.db.scalar("SELECT count(*) FROM tenant_h1.audit_log");
    c.db.query("INSERT INTO tenant_h1.employees (email, full_name) VALUES ('new@x.org', 'New')");
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_h1.audit_log"),
        (audits.parse::<i64>().unwrap() + 1).to_string()
    );
    assert_eq!(
        c.db.scalar("SELECT id FROM tenant_h1.employees WHERE email = 'new@x.org'"),
        "61"
    );

    // A later migration applies there.
    let dir = home.migrations_with("v8", &[("V8__floor.sql", V8)]);
    home.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("1 applied");
    assert_eq!(
        c.db.scalar("SELECT string_agg(DISTINCT floor::text, ',') FROM tenant_h1.departments"),
        "3"
    );
    assert_eq!(
        home.scalar("SELECT version FROM public.tenants WHERE slug = 'h1'"),
        "8"
    );

    // And back home: the same rows, writable, nothing left on the Citus nodes.
    let there = contents(&c.db.url, "tenant_h1");
    home.run_with(&dir, &["move", "h1", "--to", "home"])
        .expect(0)
        .mentions("from server c (database");
    assert_eq!(contents(&home.url, "tenant_h1"), there);
    home.query("INSERT INTO tenant_h1.departments (name) VALUES ('after')");
    assert_eq!(
        home.scalar("SELECT server_name FROM public.tenants WHERE slug = 'h1'"),
        "home"
    );
    assert_eq!(leftovers(&c, "tenant_h1"), Vec::<String>::new());
    home.run_with(&dir, &["verify"]).expect(0);
}

#[test]
fn a_failure_after_citus_distributed_the_copy_leaves_the_tenant_at_home_and_nothing_on_citus() {
    let (home, c) = home_and_citus("cm_fail_in", "");
    home.run(&["create", "h1"]).expect(0);
    fill(&home.url, "tenant_h1");
    let before = home.snapshot();
    let rows = contents(&home.url, "tenant_h1");
    let c_before = everywhere(&c);
    // Fails the move's transaction on the coordinator once the copy is a distributed
    // schema: the first ALTER TABLE then (turning the audit triggers back on).
    c.db.query(
        "CREATE FUNCTION public.fail_after_distribute() RETURNS event_trigger \
           LANGUAGE plpgsql AS $f$ BEGIN \
             IF tg_tag = 'ALTER TABLE' AND EXISTS (SELECT 1 FROM pg_dist_schema) THEN \
               RAISE EXCEPTION 'injected failure after distributing'; \
             END IF; END $f$; \
         CREATE EVENT TRIGGER fail_after_distribute ON ddl_command_start \
           EXECUTE FUNCTION public.fail_after_distribute()",
    );
    let run = home.run(&["move", "h1", "--to", "c"]);
    run.expect(1)
        .mentions("injected failure after distributing")
        .mentions("tenant h1 stays at server home")
        .mentions("nothing was left at the target");
    assert_eq!(home.snapshot(), before);
    assert_eq!(contents(&home.url, "tenant_h1"), rows);
    home.query("INSERT INTO tenant_h1.departments (name) VALUES ('still writable')");
    assert_eq!(everywhere(&c), c_before, "{}", run.stderr);
    assert_eq!(leftovers(&c, "tenant_h1"), Vec::<String>::new());
    // Without the fault the same move goes through.
    c.db.query("DROP EVENT TRIGGER fail_after_distribute");
    home.run(&["move", "h1", "--to", "c"]).expect(0);
    assert_eq!(
        distributed_tables(&c, "tenant_h1"),
        ("9".into(), "1".into())
    );
}

#[test]
fn a_failure_at_home_leaves_the_tenant_distributed_and_writable_on_citus() {
    let (home, c) = home_and_citus("cm_fail_out", "");
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    fill(&c.db.url, "tenant_a1");
    let before = home.snapshot();
    let rows = contents(&c.db.url, "tenant_a1");
    let c_before = everywhere(&c);
    // Fails the copy at home, after its tables and rows were loaded (the post-data part:
    // the triggers), while the writes on Citus are stopped.
    home.query(
        "CREATE FUNCTION public.fail_at_trigger() RETURNS event_trigger \
           LANGUAGE plpgsql AS $f$ BEGIN \
             IF tg_tag = 'CREATE TRIGGER' THEN \
               RAISE EXCEPTION 'injected failure at home'; \
             END IF; END $f$; \
         CREATE EVENT TRIGGER fail_at_trigger ON ddl_command_start \
           EXECUTE FUNCTION public.fail_at_trigger()",
    );
    home.run(&["move", "a1", "--to", "home"])
        .expect(1)
        .mentions("injected failure at home")
        .mentions("tenant a1 stays at server c (database");
    assert_eq!(home.snapshot(), before);
    assert_eq!(everywhere(&c), c_before);
    assert_eq!(contents(&c.db.url, "tenant_a1"), rows);
    assert_eq!(
        distributed_tables(&c, "tenant_a1"),
        ("9".into(), "1".into())
    );
    c.db.query("INSERT INTO tenant_a1.departments (name) VALUES ('still writable')");
    home.query("DROP EVENT TRIGGER fail_at_trigger");
    home.run(&["move", "a1", "--to", "home"]).expect(0);
    assert_eq!(leftovers(&c, "tenant_a1"), Vec::<String>::new());
}

/// Waits until tenantctl's session in `database` at `url` waits for a lock (the move's copy,
/// waiting for the tenant's lock at the target after it stopped the writes at the source).
fn move_waiting(url: &str, database: &str, child: &mut std::process::Child) {
    let started = Instant::now();
    loop {
        let seen = scalar(
            url,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' \
                   AND application_name = 'tenantctl' AND wait_event_type = 'Lock'"
            ),
        );
        if seen != "0" {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the move ended ({status}) before it waited");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the move never waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn moving_out_of_citus_blocks_writes_through_the_coordinator_until_the_switch() {
    let (home, c) = home_and_citus("cm_writes", "");
    home.run(&["create", "big", "--server", "c"]).expect(0);
    fill(&c.db.url, "tenant_big");
    let rows = contents(&c.db.url, "tenant_big");
    // Another session holds the tenant's lock at home, the target: the move stops the
    // writes on Citus, then waits for that lock, its writes stopped meanwhile.
    let mut holder = {
        use std::io::Write;
        let mut s = psql_session(&home);
        let stdin = s.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "SELECT pg_advisory_lock({}, hashtext('tenant_big'));",
            tenantctl::registry::locks::LOCK_CLASS
        )
        .unwrap();
        stdin.flush().unwrap();
        s
    };
    wait_for_tenant_lock_holder(&home, "tenant_big");
    let mut child = spawn_tenantctl(&home, &["move", "big", "--to", "home"]);
    move_waiting(&home.url, &home.name, &mut child);
    // A writer through the coordinator waits for the move's table locks: with a lock
    // timeout it gives up instead of committing into the copy's source. Citus propagates
    // the LOCK to the workers' copies of the tables: a writer connected to a worker waits
    // too.
    for url in std::iter::once(&c.db.url).chain(&c.workers) {
        let blocked = try_query(
            url,
            "SET lock_timeout = '300ms'; \
             INSERT INTO tenant_big.departments (name) VALUES ('during the move')",
        );
        assert!(
            blocked.as_ref().is_err_and(|e| e.contains("lock timeout")),
            "{url}: {blocked:?}"
        );
    }
    // Reads go on.
    assert!(try_query(&c.db.url, "SELECT count(*) FROM tenant_big.employees").is_ok());
    let _ = holder.kill();
    let _ = holder.wait();
    finish_within(child, Duration::from_secs(120)).expect(0);
    assert_eq!(contents(&home.url, "tenant_big"), rows);
    assert_eq!(leftovers(&c, "tenant_big"), Vec::<String>::new());
}

#[test]
fn move_to_citus_dry_run_and_refusals_change_nothing() {
    let slug = unique_slug("own");
    let app = format!("app_{}", slug.replace('-', "_"));
    query(
        &admin_url(),
        &format!("CREATE ROLE \"{app}\" LOGIN NOINHERIT"),
    );
    let (home, c) = home_and_citus(
        "cm_refuse",
        &format!("[tenants]\napp_role = \"{app}\"\nper_tenant_roles = true"),
    );
    home.run(&["create", &slug]).expect(0);
    let schema = format!("tenant_{slug}");
    let before = home.snapshot();
    let c_before = everywhere(&c);
    // A tenant with its own role cannot be distributed: refused before anything changes,
    // --dry-run too.
    for dry in [true, false] {
        let mut args = vec!["move", slug.as_str(), "--to", "c"];
        args.extend(dry.then_some("--dry-run"));
        home.run(&args)
            .expect(2)
            .mentions(&format!("tenant {slug} has its own role"))
            .mentions("is a Citus coordinator that distributes tenants")
            .mentions("nothing was changed");
    }
    // A worker named as the server is refused, naming its coordinator.
    let worker = &c.workers[0];
    home.config(&format!(
        "[tenants]\napp_role = \"{app}\"\nper_tenant_roles = true\n\
         [servers.c]\nurl = \"{}\"\n[servers.w]\nurl = \"{worker}\"\n",
        c.db.url
    ));
    home.run(&["move", &slug, "--to", "w"])
        .expect(2)
        .mentions("is a Citus worker node")
        .mentions("nothing was changed");
    assert_eq!(home.snapshot(), before);
    assert_eq!(everywhere(&c), c_before);
    assert_eq!(
        home.scalar(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"
        )),
        "1"
    );
    home.run(&["drop", &slug, "--yes"]).expect(0);
    let _ = try_query(&admin_url(), &format!("DROP ROLE IF EXISTS \"{app}\""));
}

#[test]
fn a_tenant_on_citus_moves_out_with_dry_run_first() {
    let (home, c) = home_and_citus("cm_dry_out", "");
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    fill(&c.db.url, "tenant_a1");
    let before = home.snapshot();
    let c_before = everywhere(&c);
    let dry = home.run(&[
        "move",
        "a1",
        "--to",
        "home",
        "--dry-run",
        "--format",
        "json",
    ]);
    dry.expect(0);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(dry.json()["from"]["server"], "c");
    // Estimates read the coordinator's catalog, where distributed tables are empty shells.
    assert_eq!(dry.json()["estimated_rows"], 0);
    assert_eq!(home.snapshot(), before);
    assert_eq!(everywhere(&c), c_before);
    let rows = contents(&c.db.url, "tenant_a1");
    home.run(&["move", "a1", "--to", "home"]).expect(0);
    assert_eq!(contents(&home.url, "tenant_a1"), rows);
    assert_eq!(leftovers(&c, "tenant_a1"), Vec::<String>::new());
}

#[test]
fn on_a_citus_home_a_tenant_moves_to_a_plain_server_and_back_distributed() {
    let c = CitusDb::new("cm_home");
    let second = SecondDb::new("cm_home");
    c.db.config(&second.server_toml("eu"));
    c.db.run(&["create", "t1"]).expect(0);
    fill(&c.db.url, "tenant_t1");
    let rows = contents(&c.db.url, "tenant_t1");
    c.db.run(&["move", "t1", "--to", "eu"])
        .expect(0)
        .mentions("to server eu (database");
    assert_eq!(contents(&second.url, "tenant_t1"), rows);
    assert_eq!(leftovers(&c, "tenant_t1"), Vec::<String>::new());
    second.query("INSERT INTO tenant_t1.departments (name) VALUES ('on eu')");
    // Audit rows as each worker's trigger writes them, from its range of the sequence
    // (group << 48 on; the first ones are there already, from the worker the tenant was
    // on): whichever worker the tenant comes back to, the start of its range is taken.
    second.query(
        "INSERT INTO tenant_t1.audit_log (id, actor, action) OVERRIDING SYSTEM VALUE \
         SELECT (g::bigint << 48) + i, 'worker', 'insert' \
           FROM generate_series(1, 2) g, generate_series(1, 5) i ON CONFLICT DO NOTHING",
    );
    let there = contents(&second.url, "tenant_t1");
    // Back home, the switch committing with the copy: distributed again.
    c.db.run(&["move", "t1", "--to", "home"]).expect(0);
    assert_eq!(contents(&c.db.url, "tenant_t1"), there);
    assert_eq!(
        distributed_tables(&c, "tenant_t1"),
        ("9".into(), "1".into())
    );
    // The audit rows written on a worker (from its range of the sequence) came back: the
    // workers' sequences were moved past them, so new audit rows do not collide.
    for i in 0..3 {
        c.db.query(&format!(
            "INSERT INTO tenant_t1.employees (email, full_name) VALUES ('back{i}@x.org', 'B')"
        ));
    }
    assert_eq!(
        c.db.scalar(
            "SELECT count(*) FROM tenant_t1.audit_log \
              WHERE entity LIKE 'employees%' AND entity_id > 60"
        ),
        "3"
    );
    assert_eq!(
        c.db.scalar("SELECT to_server FROM public.tenant_moves ORDER BY id DESC LIMIT 1"),
        "home"
    );
    assert_eq!(
        second.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_t1'"),
        "0"
    );
    c.db.run(&["verify"]).expect(0);
}

#[test]
fn own_database_on_a_citus_server_is_plain_postgresql() {
    let (home, c) = home_and_citus("cm_own", "");
    let slug = unique_slug("own");
    let schema = format!("tenant_{slug}");
    home.run(&["create", &slug]).expect(0);
    fill(&home.url, &schema);
    let rows = contents(&home.url, &schema);
    home.run(&["move", &slug, "--to", "c", "--own-database"])
        .expect(0)
        .mentions(&format!("to server c (database {schema})"));
    // A database of its own on the coordinator, made without the citus extension: the
    // tenant is a plain schema there, on no worker.
    let own = replace_dbname(&c.db.url, &schema);
    assert_eq!(contents(&own, &schema), rows);
    assert_eq!(
        scalar(
            &own,
            "SELECT count(*) FROM pg_extension WHERE extname = 'citus'"
        ),
        "0"
    );
    assert_eq!(leftovers(&c, &schema), Vec::<String>::new());
    home.run(&["move", &slug, "--to", "home"]).expect(0);
    assert_eq!(contents(&home.url, &schema), rows);
    assert_eq!(
        c.db.scalar(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{schema}'"
        )),
        "0"
    );
}

#[test]
fn distribute_and_move_node_work_for_tenants_on_a_citus_server() {
    let (home, c) = home_and_citus("cm_far_ops", "[citus]\ndistribute = false");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    fill(&c.db.url, "tenant_a1");
    let rows = contents(&c.db.url, "tenant_a1");
    assert_eq!(c.db.scalar("SELECT count(*) FROM pg_dist_schema"), "0");
    home.config(&format!("[servers.c]\nurl = \"{}\"\n", c.db.url));

    // distribute: on c, where a1 lives; h1 lives at home, plain PostgreSQL: skipped.
    let run = home.run(&["distribute", "--format", "json"]);
    run.expect(0);
    let doc = run.json();
    let outcome = |slug: &str| {
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .cloned()
            .unwrap()
    };
    assert_eq!(outcome("a1")["outcome"], "distributed", "{doc}");
    assert_eq!(outcome("h1")["outcome"], "skipped");
    assert!(outcome("h1")["error"]
        .as_str()
        .unwrap()
        .contains("which has no citus extension"));
    assert_eq!(
        distributed_tables(&c, "tenant_a1"),
        ("9".into(), "1".into())
    );
    assert_eq!(contents(&c.db.url, "tenant_a1"), rows);

    // move --node: between c's workers, recorded on home with c's place.
    let from = c.nodes()["tenant_a1"].clone();
    let other = c.worker_nodes().into_iter().find(|n| *n != from).unwrap();
    let before = home.snapshot();
    home.run(&["move", "a1", "--node", &other, "--dry-run"])
        .expect(0)
        .mentions(&format!(
            "would move tenant a1 (schema tenant_a1) from node {from}"
        ));
    assert_eq!(home.snapshot(), before);
    home.run(&["move", "a1", "--node", &other])
        .expect(0)
        .mentions(&format!("to node {other}"));
    assert_eq!(c.nodes()["tenant_a1"], other);
    assert_eq!(contents(&c.db.url, "tenant_a1"), rows);
    assert_eq!(
        home.scalar(
            "SELECT from_server || '>' || to_server || ' ' || from_node || '>' || to_node \
               FROM public.tenant_moves"
        ),
        format!("c>c {from}>{other}")
    );
    // A tenant at home, plain PostgreSQL: refused, nothing changed.
    let before = home.snapshot();
    home.run(&["move", "h1", "--node", &other])
        .expect(2)
        .mentions("has no citus extension")
        .mentions("nothing was changed");
    assert_eq!(home.snapshot(), before);
}

#[test]
fn the_move_s_session_killed_while_citus_distributes_leaves_nothing_on_any_node() {
    let (home, c) = home_and_citus("cm_kill", "");
    home.run(&["create", "h1"]).expect(0);
    fill(&home.url, "tenant_h1");
    let before = home.snapshot();
    let rows = contents(&home.url, "tenant_h1");
    let c_before = everywhere(&c);
    // citus_schema_distribute records the new colocation group: a session holding that
    // catalog stops the move there, its copy loaded and its schema sent to the workers.
    let mut holder = {
        use std::io::Write;
        let mut s = psql_session(&c.db);
        let stdin = s.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE pg_catalog.pg_dist_colocation IN ACCESS EXCLUSIVE MODE;"
        )
        .unwrap();
        stdin.flush().unwrap();
        s
    };
    let mut child = spawn_tenantctl(&home, &["move", "h1", "--to", "c"]);
    move_waiting(&c.db.url, &c.db.name, &mut child);
    let waiting = format!(
        "FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'tenantctl' \
            AND wait_event_type = 'Lock'",
        c.db.name
    );
    assert!(c
        .db
        .scalar(&format!("SELECT query {waiting}"))
        .contains("citus_schema_distribute"));
    assert_eq!(
        c.db.scalar(&format!(
            "SELECT count(pg_terminate_backend(pid)) {waiting}"
        )),
        "1"
    );
    let run = finish_within(child, Duration::from_secs(60));
    let _ = holder.kill();
    let _ = holder.wait();
    run.expect(1).mentions("tenant h1 stays at server home");
    assert_eq!(home.snapshot(), before);
    assert_eq!(contents(&home.url, "tenant_h1"), rows);
    home.query("INSERT INTO tenant_h1.departments (name) VALUES ('still writable')");
    // The workers' part of the transaction ends with the coordinator's session.
    let started = Instant::now();
    while everywhere(&c) != c_before && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(everywhere(&c), c_before, "{}", run.stderr);
    assert_eq!(leftovers(&c, "tenant_h1"), Vec::<String>::new());
}

#[test]
fn a_database_that_distributes_every_new_schema_still_takes_moves_in_and_local_creates() {
    let (home, c) = home_and_citus("cm_shard_on", "");
    // The way schema-based sharding is often switched on: for every session of the
    // database. tenantctl's copies and local tenants must stay local until it says.
    c.db.query(&format!(
        "ALTER DATABASE \"{}\" SET citus.enable_schema_based_sharding = on",
        c.db.name
    ));
    home.run(&["create", "h1"]).expect(0);
    fill(&home.url, "tenant_h1");
    let before = contents(&home.url, "tenant_h1");
    home.run(&["move", "h1", "--to", "c"]).expect(0);
    assert_eq!(
        distributed_tables(&c, "tenant_h1"),
        ("9".into(), "1".into())
    );
    assert_eq!(contents(&c.db.url, "tenant_h1"), before);
    // With `[citus] distribute = false`, a tenant created there stays a local schema.
    c.db.config("[citus]\ndistribute = false\n");
    c.db.run(&["create", "local1"]).expect(0);
    assert_eq!(
        c.db.scalar(
            "SELECT count(*) FROM pg_dist_schema WHERE schemaid::regnamespace::text = 'tenant_local1'"
        ),
        "0"
    );
}
