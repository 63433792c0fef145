//! `tenantctl rebalance` as a coordinated operation (issue #12, docs/citus.md): the tenants
//! Citus's rebalancer moves are locked before its job starts (a held lock makes it wait, then
//! fail at the deadline with nothing started), each lock is let go once that tenant's move
//! ended, and each move is recorded in public.tenant_moves. Needs the Citus cluster
//! (scripts/with-citus.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use common::citus::CitusDb;
use common::{at_eight, create_tenants, psql_session, spawn_tenantctl, wait_until, Run};

const LIMIT: Duration = Duration::from_secs(180);

/// Four tenants created on the first worker, then the second worker added: a rebalance
/// moves some of them there.
fn unbalanced(label: &str) -> CitusDb {
    let c = CitusDb::with_workers(label, 1);
    create_tenants(&c.db, 4);
    c.add_worker(1);
    c
}

/// A psql session that ran `sql`, kept open until `release`.
fn session(c: &CitusDb, sql: &str) -> Child {
    let mut s = psql_session(&c.db);
    let stdin = s.stdin.as_mut().unwrap();
    stdin.write_all(sql.as_bytes()).unwrap();
    stdin.flush().unwrap();
    s
}

fn release(mut s: Child) {
    drop(s.stdin.take());
    s.wait().unwrap();
}

/// tenant_moves, one line per move: `slug from_node to_node mode job`.
fn recorded(c: &CitusDb) -> BTreeMap<String, String> {
    c.db.query(
        "SELECT slug, concat_ws(' ', from_node, to_node, transfer_mode, rebalance_job, \
                from_server, to_server, from_database = to_database) \
           FROM public.tenant_moves ORDER BY id",
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect()
}

fn jobs(c: &CitusDb) -> String {
    c.db.scalar("SELECT count(*) FROM pg_dist_background_job")
}

#[test]
fn rebalance_records_each_move_and_reports_each_tenant_in_json() {
    let c = unbalanced("rebal_records");
    let [first, second] = [c.worker_nodes()[0].clone(), c.worker_nodes()[1].clone()];
    let run = c.db.run(&["rebalance", "--format", "json"]);
    run.expect(0);
    let report = run.json();
    let keys: BTreeSet<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "server",
            "database",
            "job_id",
            "transfer_mode",
            "state",
            "moves",
            "tenant_locks",
            "tenants",
            "nodes",
            "errors"
        ]
        .into_iter()
        .collect(),
        "{report}"
    );
    assert_eq!(report["state"], "finished", "{report}");
    assert_eq!(report["tenant_locks"], true, "{report}");
    assert_eq!(
        (report["server"].as_str(), report["database"].as_str()),
        (Some("home"), Some(c.db.name.as_str())),
        "{report}"
    );
    let job = report["job_id"].as_i64().unwrap();
    // The tenants the report says moved are those Citus now places on the new worker.
    let moved: BTreeSet<String> = c
        .nodes()
        .into_iter()
        .filter(|(_, node)| *node == second)
        .map(|(schema, _)| schema)
        .collect();
    assert!(!moved.is_empty());
    let tenants = report["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), moved.len(), "{report}");
    assert_eq!(
        report["moves"].as_u64(),
        Some(moved.len() as u64),
        "{report}"
    );
    let records = recorded(&c);
    for t in tenants {
        let fields: BTreeSet<&str> = t.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            fields,
            [
                "slug",
                "schema",
                "from",
                "to",
                "tables",
                "outcome",
                "move_id",
                "duration_ms",
                "error"
            ]
            .into_iter()
            .collect(),
            "{t}"
        );
        let slug = t["slug"].as_str().unwrap();
        assert!(moved.contains(t["schema"].as_str().unwrap()), "{t}");
        assert_eq!(
            (t["from"].as_str(), t["to"].as_str(), t["outcome"].as_str()),
            (Some(first.as_str()), Some(second.as_str()), Some("moved")),
            "{t}"
        );
        assert_eq!(t["tables"], 9, "{t}");
        assert!(t["duration_ms"].is_u64() && t["error"].is_null(), "{t}");
        // Recorded as move --node records, with the job: same server and database, the nodes.
        assert_eq!(
            records.get(slug).map(String::as_str),
            Some(format!("{first} {second} block_writes {job} home home t").as_str()),
            "{records:?}"
        );
        let id = t["move_id"].as_i64().unwrap();
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT slug || ' ' || tables || ' ' || (writes_stopped_ms = duration_ms) \
                   FROM public.tenant_moves WHERE id = {id}"
            )),
            format!("{slug} 9 true")
        );
    }
    assert_eq!(records.len(), moved.len(), "{records:?}");
}

#[test]
fn rebalance_text_names_each_moved_tenant_and_its_record() {
    let c = unbalanced("rebal_text");
    let run = c.db.run(&["rebalance"]);
    run.expect(0)
        .mentions("moved tenant t00")
        .mentions(&format!(
            "from node {} to node {}, recorded (move ",
            c.worker_nodes()[0],
            c.worker_nodes()[1]
        ))
        .mentions("rebalance: job ");
}

/// A psql session holding every tenant's lock, and its pid.
fn hold_all_tenant_locks(c: &CitusDb) -> (Child, String) {
    let class = tenantctl::registry::locks::LOCK_CLASS;
    let mut sql = String::new();
    for schema in c.db.tenant_schemas() {
        sql.push_str(&format!(
            "SELECT pg_advisory_lock({class}, hashtext('{schema}'));\n"
        ));
    }
    let holder = session(c, &sql);
    let mut pid = String::new();
    wait_until("the psql session holds the four tenants' locks", || {
        pid = c.db.scalar(&format!(
            "SELECT min(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND objsubid = 2 AND classid = {class}::bigint::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             HAVING count(*) = 4"
        ));
        !pid.is_empty()
    });
    (holder, pid)
}

#[test]
fn a_held_tenant_lock_makes_rebalance_wait_then_fail_at_the_deadline_with_nothing_started() {
    let c = unbalanced("rebal_locked");
    let before = c.nodes();
    let (holder, pid) = hold_all_tenant_locks(&c);
    let started = Instant::now();
    let run = c.db.run(&["--lock-timeout", "1500", "rebalance"]);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it did not wait"
    );
    run.expect(1)
        .mentions(
            "cannot start the rebalance; no job was started and nothing was moved: tenant t00",
        )
        .mentions(&format!(
            " is locked by pid {pid} (role postgres, application 'psql', for "
        ))
        .mentions(
            "waited 1.5 s (--lock-timeout); wait for it or end it with pg_terminate_backend(",
        );
    assert_eq!(jobs(&c), "0", "a rebalance job was started");
    assert_eq!(c.nodes(), before);
    assert!(recorded(&c).is_empty());
    // JSON: the same error, exit 1.
    let run =
        c.db.run(&["--lock-timeout", "500", "rebalance", "--format", "json"]);
    run.expect(1)
        .mentions("no job was started and nothing was moved");
    assert_eq!(jobs(&c), "0");

    // With the lock let go while it waits, the rebalance goes on.
    let waiting = spawn_tenantctl(&c.db, &["--lock-timeout", "60000", "rebalance"]);
    wait_until("the rebalance waits for a tenant's lock", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == "1"
    });
    assert_eq!(jobs(&c), "0", "the job started before the locks were taken");
    release(holder);
    let run = common::finish_within(waiting, LIMIT);
    run.expect(0).mentions("recorded (move ");
    assert_ne!(c.nodes(), before);
    assert!(!recorded(&c).is_empty());
}

/// The tenant schemas a rebalance job moves, from its tasks' shards.
fn job_schemas(c: &CitusDb) -> BTreeSet<String> {
    c.db.query(
        "SELECT DISTINCT n.nspname::text FROM pg_dist_background_task t \
           JOIN pg_dist_shard s \
             ON s.shardid = substring(t.command FROM 'citus_move_shard_placement\\((\\d+),')::bigint \
           JOIN pg_class r ON r.oid = s.logicalrelid \
           JOIN pg_namespace n ON n.oid = r.relnamespace",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

fn version_of(c: &CitusDb, schema: &str) -> String {
    c.db.scalar(&format!(
        "SELECT version FROM public.tenants WHERE schema_name = '{schema}'"
    ))
}

/// V8: a column (for `at_eight`) and the time the migration ran.
const V8: &str = "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate integer;\n\
CREATE TABLE migrated (id int PRIMARY KEY, at timestamptz NOT NULL);\n\
INSERT INTO migrated VALUES (1, clock_timestamp());\n";

#[test]
fn a_migrate_during_a_rebalance_waits_for_each_moving_tenant_and_fails_none() {
    let c = unbalanced("rebal_migrate");
    let dir = c.db.migrations_with("v8", &[("V8__marker.sql", V8)]);
    // Held from psql: the rebalance cannot record a finished move, so it keeps the moving
    // tenants' locks (it lets each go only once its move is recorded) while Citus's job
    // finishes. The rebalance is stopped there, deterministically, whatever the timing.
    let records = session(
        &c,
        "BEGIN; LOCK TABLE public.tenant_moves IN EXCLUSIVE MODE;\n",
    );
    wait_until("the psql session locks tenant_moves", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
              WHERE r.relname = 'tenant_moves' AND l.mode = 'ExclusiveLock' AND l.granted",
        ) == "1"
    });
    let rebalance = spawn_tenantctl(&c.db, &["rebalance", "--format", "json"]);
    wait_until(
        "Citus's job finished and the rebalance waits to record a move",
        || {
            c.db.scalar("SELECT count(*) FROM pg_dist_background_job WHERE state = 'finished'")
                == "1"
                && c.db.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO public.tenant_moves%'",
                ) == "1"
        },
    );
    let moving = job_schemas(&c);
    assert!(!moving.is_empty() && moving.len() < 4, "{moving:?}");
    let staying: Vec<String> =
        c.db.tenant_schemas()
            .into_iter()
            .filter(|s| !moving.contains(s))
            .collect();
    // With a deadline shorter than the wait: behind the rebalance (a tenantctl) migrate
    // keeps waiting instead of failing the tenant.
    let migrate = spawn_tenantctl(
        &c.db,
        &[
            "--migrations",
            common::path_str(&dir),
            "--lock-timeout",
            "500",
            "migrate",
            "--concurrency",
            "4",
        ],
    );
    // The tenants that do not move are migrated at once; the moving ones wait for their
    // locks, which the rebalance still holds.
    wait_until("the tenants that do not move are migrated", || {
        staying.iter().all(|s| version_of(&c, s) == "8")
    });
    wait_until("migrate waits for the moving tenants' locks", || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND objsubid = 2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ) == moving.len().to_string()
    });
    for schema in &moving {
        assert_eq!(
            version_of(&c, schema),
            "7",
            "{schema} was migrated during its move"
        );
    }
    release(records);
    let rebalance = common::finish_within(rebalance, LIMIT);
    let migrate = common::finish_within(migrate, LIMIT);
    rebalance.expect(0);
    migrate.expect(0).mentions("4 applied");
    assert_eq!(at_eight(&c.db), (4, 4));
    // Each moving tenant was migrated after its move was recorded.
    for schema in &moving {
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT (SELECT at FROM \"{schema}\".migrated) > m.moved_at \
                   FROM public.tenant_moves m WHERE m.schema_name = '{schema}'"
            )),
            "t",
            "{schema}"
        );
    }
    let report = rebalance.json();
    assert_eq!(report["tenants"].as_array().unwrap().len(), moving.len());
}

#[test]
fn no_wait_starts_the_job_without_holding_locks_or_recording_and_says_so() {
    let c = unbalanced("rebal_nowait");
    let run = c.db.run(&["rebalance", "--no-wait", "--format", "json"]);
    run.expect(0)
        .mentions("--no-wait: tenantctl does not hold the moving tenants' locks")
        .mentions("does not record the moves in public.tenant_moves");
    let report = run.json();
    assert_eq!(report["state"], "started", "{report}");
    assert_eq!(report["tenant_locks"], false, "{report}");
    let tenants = report["tenants"].as_array().unwrap();
    assert!(!tenants.is_empty(), "{report}");
    for t in tenants {
        assert_eq!(t["outcome"], "scheduled", "{t}");
        assert!(t["move_id"].is_null(), "{t}");
    }
    // The job goes on after tenantctl exited; its moves are not recorded.
    c.db.query("SELECT citus_rebalance_wait()");
    assert_eq!(
        c.db.scalar("SELECT state FROM pg_dist_background_job"),
        "finished"
    );
    assert!(recorded(&c).is_empty());
    let run: Run = c.db.run(&["rebalance"]);
    run.expect(0).mentions("nothing to move");
}

#[test]
fn ctrl_c_while_rebalance_waits_for_a_lock_starts_no_job_and_ends_the_wait() {
    let c = unbalanced("rebal_int");
    let (holder, _) = hold_all_tenant_locks(&c);
    let waiting = spawn_tenantctl(&c.db, &["rebalance"]);
    let waits = || {
        c.db.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    };
    wait_until("the rebalance waits for a tenant's lock", || waits() == "1");
    unsafe {
        libc::kill(waiting.id() as i32, libc::SIGINT);
    }
    common::finish_within(waiting, Duration::from_secs(20))
        .expect(130)
        .mentions(
            "rebalance: SIGINT while taking the moving tenants' locks: no job was started and \
             nothing was moved",
        );
    // The wait was cancelled on the server too (not left until its 60 s deadline).
    let started = Instant::now();
    while waits() != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the wait goes on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    release(holder);
    assert_eq!(jobs(&c), "0");
    assert!(recorded(&c).is_empty());
}

/// A psql session holding tenant `schema`'s lock.
fn hold_tenant_lock(c: &CitusDb, schema: &str) -> Child {
    let class = tenantctl::registry::locks::LOCK_CLASS;
    let s = session(
        c,
        &format!("SELECT pg_advisory_lock({class}, hashtext('{schema}'));\n"),
    );
    common::wait_for_tenant_lock_holder(&c.db, schema);
    s
}

/// Whether some session waits for tenant `schema`'s lock.
fn waits_for(c: &CitusDb, schema: &str) -> bool {
    c.db.scalar(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
           AND objsubid = 2 AND classid = {}::bigint::oid \
           AND objid = (hashtext('{schema}')::bigint & 4294967295)::oid \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        tenantctl::registry::locks::LOCK_CLASS
    )) == "1"
}

fn plan(c: &CitusDb) -> BTreeSet<String> {
    c.db.query(
        "SELECT DISTINCT split_part(table_name::text, '.', 1) \
           FROM get_rebalance_table_shards_plan()",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

#[test]
fn a_job_moving_a_tenant_the_plan_did_not_name_is_not_started_until_that_tenant_is_locked() {
    let c = unbalanced("rebal_race");
    let planned = plan(&c);
    assert_eq!(planned.len(), 2, "{planned:?}");
    let first = planned.first().unwrap().clone();
    let other =
        c.db.tenant_schemas()
            .into_iter()
            .rfind(|s| !planned.contains(s))
            .unwrap();
    // The rebalance reads that plan, then waits for the first planned tenant's lock.
    let held = hold_tenant_lock(&c, &first);
    let rebalance = spawn_tenantctl(&c.db, &["rebalance", "--format", "json"]);
    wait_until("the rebalance waits for the first planned tenant", || {
        waits_for(&c, &first)
    });
    // Meanwhile another tenant grows: Citus's rebalancer now moves it instead; and it is
    // locked.
    c.db.query(&format!(
        "INSERT INTO \"{other}\".departments (name, cost_center) \
         SELECT 'd' || i, repeat('x', 200) FROM generate_series(1, 200000) i"
    ));
    assert_eq!(plan(&c), [other.clone()].into());
    let other_held = hold_tenant_lock(&c, &other);
    release(held);
    // The job started with the planned tenants locked would move the other one: it was
    // rolled back, and the rebalance waits for that tenant's lock, with no job.
    wait_until("the rebalance waits for the tenant the job moves", || {
        waits_for(&c, &other)
    });
    assert_eq!(
        jobs(&c),
        "0",
        "a job started moving a tenant tenantctl had not locked"
    );
    release(other_held);
    let run = common::finish_within(rebalance, LIMIT);
    run.expect(0);
    let report = run.json();
    let moved: Vec<&str> = report["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["schema"].as_str().unwrap())
        .collect();
    assert_eq!(moved, [other.as_str()], "{report}");
    let slug = other.trim_start_matches("tenant_").to_string();
    assert_eq!(
        recorded(&c).keys().cloned().collect::<Vec<_>>(),
        [slug],
        "{report}"
    );
    assert_eq!(jobs(&c), "1");
}
