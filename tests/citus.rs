//! tenantctl on a Citus coordinator with two workers (scripts/with-citus.sh; `make test`
//! starts them): tenants are distributed schemas spread over the workers, migrations run in
//! them with every guarantee, and what Citus cannot run is refused before anything changes.
//! docs/citus.md describes the behaviour.

mod common;

use std::collections::BTreeSet;

use common::citus::CitusDb;
use common::{at_eight, create_tenants, path_str, query};

/// V8 of `at_eight`: a column added, filled and indexed, and a new table with a foreign key
/// inside the schema and an audit trigger (the example's pinned function).
const V8: &str = "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate integer;\n\
UPDATE wellness_logs SET resting_heart_rate = 60;\n\
CREATE INDEX wellness_logs_rhr_idx ON wellness_logs (resting_heart_rate);\n\
CREATE TABLE badges (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    \
employee_id bigint NOT NULL REFERENCES employees (id),\n    name text NOT NULL\n);\n\
CREATE TRIGGER badges_audit AFTER INSERT OR UPDATE OR DELETE ON badges\n    \
FOR EACH ROW EXECUTE FUNCTION audit_row_change();\n";

/// How many tables `schema` has, and the nodes (`host:port`) their shards are on; asserts
/// that every table of the schema is distributed (has a shard).
fn shard_nodes(c: &CitusDb, schema: &str) -> (usize, BTreeSet<String>) {
    let rows = c.db.query(&format!(
        "SELECT table_name::text, nodename || ':' || nodeport FROM citus_shards \
          WHERE table_name::text LIKE '{schema}.%'"
    ));
    let tables = rows.len();
    let local = c.db.scalar(&format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'"
    ));
    assert_eq!(
        tables.to_string(),
        local,
        "{schema}: not every table is distributed"
    );
    let nodes = rows.into_iter().map(|r| r[1].clone().unwrap()).collect();
    (tables, nodes)
}

#[test]
fn create_spreads_tenants_over_both_workers_and_list_and_status_show_each_tenants_node() {
    let c = CitusDb::new("spread");
    create_tenants(&c.db, 4);
    let schemas = c.db.tenant_schemas();
    assert_eq!(schemas.len(), 4);
    // Every tenant is a distributed schema, its tables all on one worker; together the tenants use both workers.
    let distributed =
        c.db.scalar("SELECT count(*) FROM citus_schemas WHERE schema_name::text LIKE 'tenant\\_%'");
    assert_eq!(distributed, "4");
    let mut used = BTreeSet::new();
    let mut placed = std::collections::BTreeMap::new();
    for schema in &schemas {
        let (tables, nodes) = shard_nodes(&c, schema);
        // The example's eight tables and the migration history.
        assert_eq!(tables, 9, "{schema}");
        assert_eq!(nodes.len(), 1, "{schema} is split over {nodes:?}");
        let node = nodes.into_iter().next().unwrap();
        used.insert(node.clone());
        placed.insert(schema.clone(), node);
    }
    let workers: BTreeSet<String> = c.worker_nodes().into_iter().collect();
    assert_eq!(
        used, workers,
        "the tenants are not spread over both workers"
    );
    // The data really lives on the worker: the shard of employees is there, not on the
    // coordinator.
    let (schema, node) = placed.iter().next().unwrap();
    let worker = &c.workers[c.worker_nodes().iter().position(|w| w == node).unwrap()];
    let shards_there = query(
        worker,
        // Citus hides shards from pg_class unless asked.
        &format!(
            "SET citus.override_table_visibility = off; \
             SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = '{schema}' AND c.relname LIKE 'employees\\_%' AND c.relkind = 'r'"
        ),
    );
    assert_eq!(shards_there[0][0].as_deref(), Some("1"));

    // list and status, in JSON and text, show the same node for each tenant.
    let list = c.db.run(&["list", "--format", "json"]).expect(0).json();
    let status = c.db.run(&["status", "--format", "json"]).expect(0).json();
    for doc in [&list, &status] {
        for t in doc["tenants"].as_array().unwrap() {
            let schema = t["schema"].as_str().unwrap();
            assert_eq!(t["node"].as_str(), Some(placed[schema].as_str()), "{t}");
        }
    }
    let text = c.db.run(&["list"]);
    text.expect(0);
    for line in text.stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[3], placed[fields[1]], "{line}");
    }
    let status_text = c.db.run(&["status"]);
    status_text.expect(0);
    assert!(
        status_text.stdout.contains(" node "),
        "{}",
        status_text.stdout
    );
    for (schema, node) in &placed {
        let row = status_text
            .stdout
            .lines()
            .find(|l| l.contains(schema.as_str()))
            .unwrap();
        assert!(row.contains(node.as_str()), "{row}");
    }

    // verify finds nothing wrong with distributed tenants.
    c.db.run(&["verify"]).expect(0).mentions("0 findings");

    // The example's audit trigger fires on the worker and writes to the tenant's audit_log.
    c.db.query(&format!(
        "INSERT INTO \"{schema}\".employees (email, full_name) VALUES ('a@example.org', 'A B')"
    ));
    let audited = c.db.scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".audit_log WHERE action = 'insert'"
    ));
    assert_eq!(audited, "1");
}

#[test]
fn the_example_migrations_and_a_later_migration_apply_to_distributed_schemas() {
    let c = CitusDb::new("later");
    create_tenants(&c.db, 3);
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM public.tenants WHERE version = 7 AND state = 'active'"),
        "3"
    );
    let dir = c.db.migrations_with("v8", &[("V8__heart_rate.sql", V8)]);
    let run = c.db.run_with(&dir, &["migrate"]);
    run.expect(0).mentions("3 applied");
    assert_eq!(at_eight(&c.db), (3, 3));
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8 AND state = 'active'"),
        "3"
    );
    // The new table is distributed with its tenant, on the tenant's node, and its trigger
    // works there.
    for schema in c.db.tenant_schemas() {
        let (tables, nodes) = shard_nodes(&c, &schema);
        assert_eq!((tables, nodes.len()), (10, 1), "{schema}");
        c.db.query(&format!(
            "SET search_path = \"{schema}\"; \
             INSERT INTO employees (email, full_name) VALUES ('b@example.org', 'B C'); \
             INSERT INTO badges (employee_id, name) SELECT id, 'first aid' FROM employees"
        ));
        let audited = c.db.scalar(&format!(
            "SELECT count(*) FROM \"{schema}\".audit_log WHERE action = 'insert'"
        ));
        assert_eq!(audited, "2", "{schema}");
    }
    // Again: nothing to do, answered from the registry.
    c.db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("3 up to date");
}

#[test]
fn a_failing_migration_on_one_tenant_leaves_it_whole_and_the_others_migrated() {
    let c = CitusDb::new("isolation");
    create_tenants(&c.db, 3);
    // The column is added first, then one tenant fails: its whole transaction must go.
    let v8 = "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate integer;\n\
              DO $$ BEGIN IF current_schema() = 'tenant_t001' THEN \
              RAISE EXCEPTION 'refusing tenant_t001 on purpose'; END IF; END $$;\n";
    let dir = c.db.migrations_with("v8", &[("V8__heart_rate.sql", v8)]);
    let run = c.db.run_with(&dir, &["migrate"]);
    run.expect(1)
        .mentions("refusing tenant_t001 on purpose")
        .mentions("2 applied");
    assert_eq!(at_eight(&c.db), (2, 2));
    let rows =
        c.db.query("SELECT slug, version::text, state FROM public.tenants ORDER BY slug");
    let rows: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows[0], ("t000".into(), "8".into(), "active".into()));
    assert_eq!(rows[1], ("t001".into(), "7".into(), "failed".into()));
    assert_eq!(rows[2], ("t002".into(), "8".into(), "active".into()));
    // The failed tenant's data still works (its schema is whole and still distributed).
    let (tables, nodes) = shard_nodes(&c, "tenant_t001");
    assert_eq!((tables, nodes.len()), (9, 1));
}

/// Runs `args` with the migrations `dir` and checks the refusal: exit 2, the message's
/// pieces, and nothing changed.
fn refused(c: &CitusDb, dir: &std::path::Path, args: &[&str], pieces: &[&str]) {
    let before = c.db.snapshot();
    let run = c.db.run_with(dir, args);
    run.expect(2);
    for p in pieces {
        run.mentions(p);
    }
    run.mentions("nothing was");
    assert_eq!(c.db.snapshot(), before, "{args:?} changed something");
}

#[test]
fn a_migration_citus_cannot_run_is_refused_before_any_tenant_is_touched() {
    let c = CitusDb::new("refuse");
    create_tenants(&c.db, 2);
    // A trigger whose function resolves audit_log through the search_path: on the worker
    // it would not find it.
    let unpinned = "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);\n\
        CREATE FUNCTION log_note() RETURNS trigger LANGUAGE plpgsql AS $$\n\
        BEGIN INSERT INTO audit_log (actor, action) VALUES ('x', 'note'); RETURN NULL; END $$;\n\
        CREATE TRIGGER notes_log AFTER INSERT ON notes\n    FOR EACH ROW EXECUTE FUNCTION log_note();\n";
    let dir =
        c.db.migrations_with("unpinned", &[("V8__notes.sql", unpinned)]);
    refused(
        &c,
        &dir,
        &["migrate"],
        &[
            "migration V8__notes.sql line 4",
            "CREATE TRIGGER notes_log AFTER INSERT ON notes",
            "log_note() resolves names through the search_path",
        ],
    );
    // The same files at create: no tenant is made.
    refused(
        &c,
        &dir,
        &["create", "newcomer"],
        &["V8__notes.sql line 4", "nothing was"],
    );
    // A serial column added to an existing table.
    let serial = "ALTER TABLE employees ADD COLUMN badge_no bigserial;\n";
    let dir = c.db.migrations_with("serial", &[("V8__badge.sql", serial)]);
    refused(
        &c,
        &dir,
        &["migrate"],
        &[
            "V8__badge.sql line 1",
            "ALTER TABLE employees ADD COLUMN badge_no bigserial",
            "Citus cannot add a serial column",
        ],
    );
    // A foreign key to a shared table that is not a reference table: checked on the server.
    c.db.query("CREATE TABLE public.plans (id int PRIMARY KEY)");
    let fk =
        "-- V8\n\nALTER TABLE employees ADD COLUMN plan_id int REFERENCES public.plans (id);\n";
    let dir = c.db.migrations_with("fk", &[("V8__plans.sql", fk)]);
    refused(
        &c,
        &dir,
        &["migrate"],
        &[
            "V8__plans.sql line 3",
            "\"public\".\"plans\", which is not a Citus reference table",
            "create_reference_table",
        ],
    );
    // Made a reference table, the same migration runs.
    c.db.query("SELECT create_reference_table('public.plans')");
    c.db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("2 applied");
}

#[test]
fn a_command_sent_to_a_worker_is_refused_naming_the_coordinator() {
    let c = CitusDb::new("worker");
    let coordinator_port =
        c.db.url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
    for args in [vec!["list"], vec!["create", "acme"], vec!["migrate"]] {
        let out =
            c.db.cmd()
                .env("DATABASE_URL", &c.workers[0])
                .args(&args)
                .output()
                .unwrap();
        common::Run::from(out)
            .expect(2)
            .mentions("is a Citus worker node")
            .mentions(&format!(
                "connect to the coordinator, 127.0.0.1:{coordinator_port}"
            ))
            .mentions("nothing was changed");
    }
    // Nothing was installed on the worker (no registry).
    let registry = query(
        &c.workers[0],
        "SELECT count(*) FROM pg_class WHERE relname = 'tenants' AND relnamespace = 'public'::regnamespace",
    );
    assert_eq!(registry[0][0].as_deref(), Some("0"));
}

#[test]
fn per_tenant_roles_are_refused_on_citus_saying_why() {
    let c = CitusDb::new("roles");
    c.db.run(&["init"]).expect(0);
    let cfg =
        c.db.config("[tenants]\napp_role = \"app_roles\"\nper_tenant_roles = true\n");
    let before = c.db.snapshot();
    let run = c.db.run(&["--config", path_str(&cfg), "create", "acme"]);
    run.expect(2)
        .mentions("per_tenant_roles does not work on Citus")
        .mentions("NOLOGIN")
        .mentions("citusdata/citus#7719")
        .mentions("nothing was created");
    assert_eq!(c.db.snapshot(), before);
}

#[test]
fn with_distribute_off_tenants_stay_local_on_the_coordinator() {
    let c = CitusDb::new("local");
    // Not tenants.toml, which every run in the test's folder would read.
    let cfg = c.db.dir.join("local.toml");
    std::fs::write(&cfg, "[citus]\ndistribute = false\n").unwrap();
    c.db.run(&["--config", path_str(&cfg), "create", "acme"])
        .expect(0);
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM citus_schemas WHERE schema_name::text = 'tenant_acme'"),
        "0"
    );
    let list =
        c.db.run(&["--config", path_str(&cfg), "list", "--format", "json"])
            .expect(0)
            .json();
    assert!(list["tenants"][0]["node"].is_null(), "{list}");
    // Where tenants are to be distributed (the default), verify finds the local one.
    let run = c.db.run(&["verify"]);
    run.expect(1)
        .mentions("not_distributed")
        .mentions("local schema on the Citus coordinator");
    c.db.run(&["--config", path_str(&cfg), "verify"]).expect(0);
    // An unknown key of [citus] is refused like any other.
    let bad =
        c.db.config("[citus]\ndistribute = false\nshard_count = 4\n");
    c.db.run(&["--config", path_str(&bad), "list"])
        .expect(2)
        .mentions("shard_count");
}

#[test]
fn backup_and_drop_work_and_move_to_is_refused_before_anything_changes() {
    let c = CitusDb::new("backup");
    create_tenants(&c.db, 2);
    c.db.query("INSERT INTO tenant_t000.departments (name) VALUES ('Cardiology'), ('Radiology')");
    let file = c.db.dir.join("t000.dump");
    c.db.run(&["backup", "t000", "-o", path_str(&file)])
        .expect(0);
    // The coordinator's dump holds the rows, which live on a worker.
    let listing = std::process::Command::new("pg_restore")
        .args(["-f", "-", "--data-only", "-t", "departments"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("Radiology"));
    // (restore: restore_brings_a_distributed_tenant_back_distributed_with_rows_history_and_grants)
    let before = c.db.snapshot();
    // move --to would copy a distributed schema into a plain one: refused, nothing changed.
    c.db.config("[servers.eu]\nurl = \"postgres://nobody@127.0.0.1:1/x\"\n");
    c.db.run(&["move", "t000", "--to", "eu"])
        .expect(2)
        .mentions("move --to does not work on a Citus coordinator yet")
        .mentions("nothing was changed");
    assert_eq!(c.db.snapshot(), before);
    // Drop removes the distributed schema and its shards on the worker.
    c.db.run(&["drop", "t001", "--yes"]).expect(0);
    assert_eq!(shard_nodes(&c, "tenant_t001").0, 0);
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM citus_schemas WHERE schema_name::text = 'tenant_t001'"),
        "0"
    );
}

#[test]
fn rebalance_spreads_tenants_onto_a_new_worker_and_keeps_their_rows() {
    let c = CitusDb::with_workers("rebalance", 1);
    create_tenants(&c.db, 4);
    for i in 0..4 {
        c.db.query(&format!(
            "INSERT INTO tenant_t00{i}.departments (name) VALUES ('dept {i}')"
        ));
    }
    let first = c.worker_nodes()[0].clone();
    let per_node = |c: &CitusDb| -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for schema in c.db.tenant_schemas() {
            let (_, nodes) = shard_nodes(c, &schema);
            assert_eq!(nodes.len(), 1, "{schema}: {nodes:?}");
            *m.entry(nodes.into_iter().next().unwrap()).or_default() += 1;
        }
        m
    };
    assert_eq!(per_node(&c), [(first.clone(), 4)].into_iter().collect());
    c.add_worker(1);
    let run = c.db.run(&["rebalance", "--format", "json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["state"], "finished", "{report}");
    let moves = report["moves"].as_u64().unwrap();
    assert!(moves >= 1, "{report}");
    let after = per_node(&c);
    assert_eq!(after.len(), 2, "still on one node: {after:?}");
    assert_eq!(after.values().sum::<usize>(), 4);
    // The report's tenants per node are Citus's.
    for (node, n) in &after {
        assert_eq!(report["nodes"][node].as_u64(), Some(*n as u64), "{report}");
    }
    // Every tenant kept its row, and list shows where each one is now.
    for i in 0..4 {
        assert_eq!(
            c.db.scalar(&format!("SELECT name FROM tenant_t00{i}.departments")),
            format!("dept {i}")
        );
    }
    let list = c.db.run(&["list", "--format", "json"]).json();
    let listed: BTreeSet<String> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 2);
    // Balanced now: nothing to move.
    c.db.run(&["rebalance"])
        .expect(0)
        .mentions("rebalance: nothing to move; tenants per node:");
}

#[test]
fn rebalance_on_plain_postgresql_is_refused() {
    let db = common::TestDb::new("rebalance_plain");
    let run = db.run(&["rebalance"]);
    run.expect(2)
        .mentions("has no citus extension")
        .mentions("nothing was moved");
}

/// Roles and databases are the cluster's, not the test database's: the restore tests run
/// one at a time, so that one sees no other's scratch database or role.
static RESTORES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Restore state that must not outlive a restore: scratch databases and restore roles, on
/// the coordinator and on every worker (Citus copies roles to the workers).
fn restore_leftovers(c: &CitusDb) -> Vec<String> {
    let mut left = Vec::new();
    for url in std::iter::once(&c.db.url).chain(&c.workers) {
        for row in query(
            url,
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'tenantctl\\_restore%' \
             UNION ALL SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'tenantctl\\_restore%'",
        ) {
            left.push(row[0].clone().unwrap());
        }
    }
    left
}

#[test]
fn restore_brings_a_distributed_tenant_back_distributed_with_rows_history_and_grants() {
    let _one_at_a_time = RESTORES.lock().unwrap_or_else(|e| e.into_inner());
    let c = CitusDb::new("restore");
    let _no_node_added = common::citus::no_node_added();
    // The application role, on every node (Citus copies it to the workers).
    let app = format!("app_{}", c.db.name);
    c.db.query(&format!("CREATE ROLE \"{app}\" LOGIN"));
    let cfg = c.db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    c.db.run(&["--config", cfg, "create", "t000", "t001"])
        .expect(0);
    c.db.query(
        "INSERT INTO tenant_t000.departments (name) VALUES ('Cardiology'), ('Radiology');
         INSERT INTO tenant_t000.employees (email, full_name) VALUES ('a@x', 'Ada')",
    );
    let audit = "SELECT count(*) FROM tenant_t000.audit_log";
    let audited = c.db.scalar(audit);
    assert_eq!(
        audited, "1",
        "the example's audit trigger logs the employee"
    );
    let file = c.db.dir.join("t000.dump");
    c.db.run(&["--config", cfg, "backup", "t000", "-o", path_str(&file)])
        .expect(0);
    // The tenant changes after the backup; the restore brings back the backed-up rows.
    c.db.query(
        "DELETE FROM tenant_t000.departments; \
         INSERT INTO tenant_t000.departments (name) VALUES ('Wrong')",
    );
    let other = c.db.scalar("SELECT count(*) FROM tenant_t001.departments");
    let run =
        c.db.run(&["--config", cfg, "restore", "t000", path_str(&file), "--yes"]);
    run.expect(0).mentions("restored tenant t000");
    let restored = |schema: &str| {
        // Rows, and the audit trail as it was: the triggers did not fire on Citus's copy.
        assert_eq!(
            c.db.query(&format!("SELECT name FROM {schema}.departments ORDER BY 1")),
            vec![
                vec![Some("Cardiology".to_string())],
                vec![Some("Radiology".to_string())]
            ],
            "{schema}"
        );
        assert_eq!(
            c.db.scalar(&format!("SELECT count(*) FROM {schema}.audit_log")),
            audited
        );
        // The migration history came back with the tables.
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT max(version) FROM {schema}.refinery_schema_history"
            )),
            "7"
        );
        // A distributed schema again, every table on one worker.
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT count(*) FROM pg_dist_schema WHERE schemaid = '{schema}'::regnamespace"
            )),
            "1",
            "{schema} is not a distributed schema"
        );
        let (tables, nodes) = shard_nodes(&c, schema);
        assert_eq!(tables, 9, "{schema}");
        assert_eq!(nodes.len(), 1, "{schema}: {nodes:?}");
        // The coordinator kept no copy of the rows (Citus leaves it unless truncated).
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c \
                  WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind = 'r'"
            )),
            "0",
            "{schema}: rows left on the coordinator"
        );
        // The application's grants, and not on the history.
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT has_table_privilege('{app}', '{schema}.departments', 'SELECT, INSERT') \
                    AND NOT has_table_privilege('{app}', '{schema}.refinery_schema_history', 'SELECT') \
                    AND has_schema_privilege('{app}', '{schema}', 'USAGE')"
            )),
            "t",
            "{schema}: grants"
        );
        // The identity sequence goes on after the restored rows, and the trigger fires again.
        c.db.query(&format!(
            "INSERT INTO {schema}.departments (name) VALUES ('New'); \
             INSERT INTO {schema}.employees (email, full_name) VALUES ('b@x', 'Bo')"
        ));
        assert_eq!(
            c.db.scalar(&format!("SELECT count(*) FROM {schema}.audit_log")),
            "2",
            "{schema}: the audit trigger does not fire after the restore"
        );
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT count(DISTINCT id) FROM {schema}.departments"
            )),
            "3"
        );
    };
    restored("tenant_t000");
    let listed =
        c.db.run(&["--config", cfg, "list", "--format", "json"])
            .json();
    let t000 = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slug"] == "t000")
        .unwrap()
        .clone();
    assert!(t000["node"].is_string(), "{t000}");
    assert_eq!(
        c.db.scalar("SELECT state || ' ' || version FROM public.tenants WHERE slug = 't000'"),
        "active 7"
    );
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_t001.departments"),
        other
    );
    assert_eq!(
        restore_leftovers(&c),
        Vec::<String>::new(),
        "{}",
        run.stderr
    );

    // --as: the same backup as a new tenant, distributed too; t000 is left alone.
    c.db.run(&[
        "--config",
        cfg,
        "restore",
        "t000",
        path_str(&file),
        "--as",
        "t009",
    ])
    .expect(0)
    .mentions("restored tenant t009");
    restored("tenant_t009");
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_t000.departments"),
        "3"
    );
    assert_eq!(restore_leftovers(&c), Vec::<String>::new());
}

#[test]
fn a_restore_failing_after_citus_distributed_the_copy_leaves_the_tenant_as_it_was() {
    let _one_at_a_time = RESTORES.lock().unwrap_or_else(|e| e.into_inner());
    let c = CitusDb::new("restore_fail");
    let _no_node_added = common::citus::no_node_added();
    create_tenants(&c.db, 1);
    c.db.query("INSERT INTO tenant_t000.departments (name) VALUES ('Cardiology')");
    let file = c.db.dir.join("t000.dump");
    c.db.run(&["backup", "t000", "-o", path_str(&file)])
        .expect(0);
    c.db.query("INSERT INTO tenant_t000.departments (name) VALUES ('Later')");
    // Fails the swap after citus_schema_distribute made the staged copy a distributed
    // schema: the first ALTER TABLE once a tenantctl_restore_* schema is distributed, in the
    // restore's transaction (turning the audit triggers back on).
    c.db.query(
        "CREATE FUNCTION public.fail_after_distribute() RETURNS event_trigger \
           LANGUAGE plpgsql AS $f$ BEGIN \
             IF tg_tag = 'ALTER TABLE' \
                AND current_setting('citus.enable_unsafe_triggers') = 'on' \
                AND EXISTS (SELECT 1 FROM pg_dist_schema d \
                               JOIN pg_namespace n ON n.oid = d.schemaid \
                              WHERE n.nspname LIKE 'tenantctl\\_restore\\_%') THEN \
               RAISE EXCEPTION 'injected failure after distributing'; \
             END IF; END $f$; \
         CREATE EVENT TRIGGER fail_after_distribute ON ddl_command_start \
           EXECUTE FUNCTION public.fail_after_distribute()",
    );
    let before = c.db.snapshot();
    let rows = "SELECT string_agg(name, ',' ORDER BY name) FROM tenant_t000.departments";
    let run = c.db.run(&["restore", "t000", path_str(&file), "--yes"]);
    run.expect(1)
        .mentions("injected failure after distributing")
        .mentions("the tenant was not changed");
    // The old schema, distributed, with its rows; the registry as it was; nothing left over.
    assert_eq!(c.db.snapshot(), before);
    assert_eq!(c.db.scalar(rows), "Cardiology,Later");
    assert_eq!(shard_nodes(&c, "tenant_t000").0, 9);
    assert_eq!(
        restore_leftovers(&c),
        Vec::<String>::new(),
        "{}",
        run.stderr
    );
    // Without the fault, the same restore goes through.
    c.db.query("DROP EVENT TRIGGER fail_after_distribute");
    c.db.run(&["restore", "t000", path_str(&file), "--yes"])
        .expect(0);
    assert_eq!(c.db.scalar(rows), "Cardiology");
    assert_eq!(shard_nodes(&c, "tenant_t000").0, 9);
    assert_eq!(restore_leftovers(&c), Vec::<String>::new());
}

#[test]
fn restore_as_a_new_tenant_with_per_tenant_roles_is_refused_on_citus_before_anything_changes() {
    let _one_at_a_time = RESTORES.lock().unwrap_or_else(|e| e.into_inner());
    let c = CitusDb::new("restore_roles");
    let _no_node_added = common::citus::no_node_added();
    create_tenants(&c.db, 1);
    let file = c.db.dir.join("t000.dump");
    c.db.run(&["backup", "t000", "-o", path_str(&file)])
        .expect(0);
    let app = format!("app_{}", c.db.name);
    c.db.query(&format!("CREATE ROLE \"{app}\" LOGIN NOINHERIT"));
    let cfg = c.db.config(&format!(
        "[tenants]\napp_role = \"{app}\"\nper_tenant_roles = true\n"
    ));
    let before = c.db.snapshot();
    c.db.run(&[
        "--config",
        path_str(&cfg),
        "restore",
        "t000",
        path_str(&file),
        "--as",
        "t001",
    ])
    .expect(2)
    .mentions("per_tenant_roles does not work on Citus")
    .mentions("NOLOGIN");
    assert_eq!(c.db.snapshot(), before);
    assert_eq!(restore_leftovers(&c), Vec::<String>::new());
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'tenant_t001'"),
        "0"
    );
}
