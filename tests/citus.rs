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
fn backup_and_drop_work_and_move_to_an_unreachable_server_changes_nothing() {
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
    // move --to out of the coordinator (tests/citus_move_to.rs): a server that cannot be
    // reached fails it before anything changes.
    c.db.config("[servers.eu]\nurl = \"postgres://nobody@127.0.0.1:1/x\"\n");
    c.db.run(&["move", "t000", "--to", "eu"])
        .expect(1)
        .mentions("cannot reach server eu")
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
    // block_writes by default (Citus's own default is auto): every move of the job says so.
    assert_eq!(report["transfer_mode"], "block_writes", "{report}");
    let job = report["job_id"].as_i64().unwrap();
    let commands = c.db.scalar(&format!(
        "SELECT string_agg(command, ' | ' ORDER BY task_id) FROM pg_dist_background_task \
         WHERE job_id = {job}"
    ));
    assert!(
        commands.contains("citus_move_shard_placement"),
        "{commands}"
    );
    assert_eq!(
        c.db.scalar(&format!(
            "SELECT count(*) FROM pg_dist_background_task WHERE job_id = {job} \
             AND command NOT LIKE '%''block_writes'')'"
        )),
        "0",
        "{commands}"
    );
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
fn status_summary_counts_tenants_per_node() {
    // Above 50 tenants text status is a summary; on Citus it says how many each node holds.
    let c = CitusDb::with_workers("status_per_node", 1);
    create_tenants(&c.db, 51);
    let node = c.worker_nodes()[0].clone();
    c.db.run(&["status"])
        .expect(0)
        .mentions("by state:")
        .mentions(&format!("by node:    {node}: 51\n"));
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

/// Restore state that must not outlive a restore: scratch databases, restore roles and
/// staging schemas, on the coordinator and on every worker (Citus copies roles and
/// distributed schemas to the workers).
fn restore_leftovers(c: &CitusDb) -> Vec<String> {
    let mut left = Vec::new();
    for url in std::iter::once(&c.db.url).chain(&c.workers) {
        for row in query(
            url,
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'tenantctl\\_restore%' \
             UNION ALL SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'tenantctl\\_restore%' \
             UNION ALL SELECT nspname::text FROM pg_namespace \
                        WHERE nspname LIKE 'tenantctl\\_restore%'",
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

/// An application writing to tenant acme through the coordinator in a loop, as the
/// application role, keeping the ids of the inserts that committed.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    committed: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    thread: std::thread::JoinHandle<()>,
}

fn start_writer(url: String) -> Writer {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let (s, c) = (stop.clone(), committed.clone());
    let thread = std::thread::spawn(move || {
        let mut next = 0i64;
        while !s.load(Ordering::SeqCst) {
            next += 1;
            let sql = format!(
                "INSERT INTO tenant_acme.audit_log (actor, action, entity, entity_id) \
                 VALUES ('writer', 'insert', 'probe', {next})"
            );
            match common::try_query(&url, &sql) {
                Ok(_) => c.lock().unwrap().push(next),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    Writer {
        stop,
        committed,
        thread,
    }
}

impl Writer {
    fn wait_for(&self, n: usize) {
        let t = std::time::Instant::now();
        while self.committed.lock().unwrap().len() < n {
            assert!(t.elapsed().as_secs() < 60, "the writer is stuck");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[test]
fn move_node_moves_a_tenant_to_the_other_worker_under_a_concurrent_writer_and_records_it() {
    let c = CitusDb::new("move_node");
    let app = format!("app_{}", c.db.name);
    // Created on the coordinator, Citus creates the role on the workers too.
    c.db.query(&format!("CREATE ROLE \"{app}\" LOGIN"));
    c.db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    c.db.run(&["create", "acme"]).expect(0);
    let from = c.nodes()["tenant_acme"].clone();
    let to = c.worker_nodes().into_iter().find(|w| *w != from).unwrap();
    // --dry-run says what would happen and changes nothing.
    let before = c.db.snapshot();
    c.db.run(&["move", "acme", "--node", &to, "--dry-run"])
        .expect(0)
        .mentions(&format!(
            "would move tenant acme (schema tenant_acme) from node {from} to node {to}"
        ))
        .mentions("block_writes: writes wait for the move, reads go on")
        .mentions("nothing was changed");
    assert_eq!(c.nodes()["tenant_acme"], from);
    assert_eq!(c.db.snapshot(), before);

    let app_url = c.db.url.replacen("postgres@", &format!("{app}@"), 1);
    let writer = start_writer(app_url);
    writer.wait_for(20);
    let run =
        c.db.run(&["move", "acme", "--node", &to, "--format", "json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["from"]["node"], from.as_str(), "{report}");
    assert_eq!(report["to"]["node"], to.as_str(), "{report}");
    assert_eq!(report["to"]["server"], "home", "{report}");
    assert_eq!(report["transfer_mode"], "block_writes", "{report}");
    assert_eq!(report["tables"], 9, "{report}");
    let after_move = writer.committed.lock().unwrap().len();
    writer.wait_for(after_move + 20);
    writer.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.thread.join().unwrap();
    assert_eq!(c.nodes()["tenant_acme"], to);
    let (tables, nodes) = shard_nodes(&c, "tenant_acme");
    assert_eq!((tables, nodes.len()), (9, 1));

    // Every committed insert is there, exactly once.
    let committed = writer.committed.lock().unwrap().clone();
    let found: Vec<i64> =
        c.db.query(
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

    // Back, with logical replication as asked (--online): text output, both moves recorded.
    c.db.run(&["move", "acme", "--node", &from, "--online"])
        .expect(0)
        .mentions(&format!(
            "moved tenant acme (schema tenant_acme) from node {to} to node {from}"
        ))
        .mentions("auto, as asked (--online)");
    assert_eq!(c.nodes()["tenant_acme"], from);
    let records = c.db.query(
        "SELECT from_server, to_server, from_database = current_database(), \
                to_database = current_database(), from_node, to_node, transfer_mode, tables \
           FROM public.tenant_moves WHERE slug = 'acme' ORDER BY id",
    );
    let row = |r: &Vec<Option<String>>| r.iter().map(|v| v.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(records.len(), 2);
    assert_eq!(
        row(&records[0]),
        [
            "home",
            "home",
            "t",
            "t",
            from.as_str(),
            to.as_str(),
            "block_writes",
            "9"
        ]
    );
    assert_eq!(
        row(&records[1]),
        [
            "home",
            "home",
            "t",
            "t",
            to.as_str(),
            from.as_str(),
            "auto",
            "9"
        ]
    );
    assert_eq!(
        c.db.scalar("SELECT state FROM public.tenants WHERE slug = 'acme'"),
        "active"
    );
}

#[test]
fn move_node_and_distribute_refuse_what_they_cannot_do_and_change_nothing() {
    let c = CitusDb::new("move_node_refused");
    let local = c.db.dir.join("local.toml");
    std::fs::write(&local, "[citus]\ndistribute = false\n").unwrap();
    c.db.run(&["create", "acme"]).expect(0);
    c.db.run(&["--config", path_str(&local), "create", "plain"])
        .expect(0);
    c.db.run(&["create", "idle"]).expect(0);
    c.db.query("UPDATE public.tenants SET state = 'suspended' WHERE slug = 'idle'");
    let here = c.nodes()["tenant_acme"].clone();
    let other = c.worker_nodes().into_iter().find(|w| *w != here).unwrap();
    let before = (c.db.snapshot(), c.nodes());
    let refused = |args: &[&str], pieces: &[&str]| {
        let run = c.db.run(args);
        run.expect(2);
        for p in pieces {
            run.mentions(p);
        }
        assert_eq!((c.db.snapshot(), c.nodes()), before, "{args:?}");
    };
    refused(
        &["move", "acme", "--node", "127.0.0.1:1"],
        &[
            "127.0.0.1:1 is not an active worker node",
            &other,
            "nothing was changed",
        ],
    );
    let coordinator = format!(
        "127.0.0.1:{}",
        c.db.url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    );
    refused(
        &["move", "acme", "--node", &coordinator],
        &["is not an active worker node"],
    );
    refused(
        &["move", "acme", "--node", &here],
        &[
            &format!("tenant acme already lives on node {here}"),
            "nothing was changed",
        ],
    );
    refused(
        &["move", "plain", "--node", &other],
        &[
            "tenant plain is not distributed",
            "tenantctl distribute plain",
            "nothing was changed",
        ],
    );
    refused(
        &["move", "idle", "--node", &other],
        &[
            "tenant idle is suspended",
            "only an active tenant can be moved",
        ],
    );
    refused(
        &["move", "nobody", "--node", &other],
        &["unknown tenant nobody"],
    );
    refused(
        &["move", "acme", "--node", &other, "--to", "home"],
        &["cannot be used with"],
    );
    refused(&["move", "acme"], &["--node"]);
    refused(
        &["move", "acme", "--to", "home", "--online"],
        &["cannot be used with"],
    );
    refused(
        &["distribute", "nobody"],
        &["unknown tenant nobody", "nothing was distributed"],
    );
    assert!(c.db.scalar("SELECT count(*) FROM public.tenant_moves") == "0");

    // Another session holds the tenant's lock (as a migrate or backup would): the move
    // waits for it, then gives up naming the holder, and nothing moves.
    let mut holder = {
        use std::io::Write;
        let mut s = common::psql_session(&c.db);
        let stdin = s.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "SELECT pg_advisory_lock({}, hashtext('tenant_acme'));",
            tenantctl::registry::locks::LOCK_CLASS
        )
        .unwrap();
        stdin.flush().unwrap();
        s
    };
    let pid = common::wait_for_tenant_lock_holder(&c.db, "tenant_acme");
    c.db.run(&["--lock-timeout", "1s", "move", "acme", "--node", &other])
        .expect(1)
        .mentions(&format!("pid {pid}"))
        .mentions("cannot move tenant acme; nothing was changed");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!((c.db.snapshot(), c.nodes()), before);
    // The move holds the tenant's lock while citus_schema_move runs.
    let mover = common::spawn_tenantctl(&c.db, &["move", "acme", "--node", &other]);
    let pid = common::wait_for_tenant_lock_holder(&c.db, "tenant_acme");
    let mut seen = false;
    for _ in 0..200 {
        let q = c.db.scalar(&format!(
            "SELECT query FROM pg_stat_activity WHERE pid = {pid}"
        ));
        if q.contains("citus_schema_move") {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    common::finish_within(mover, std::time::Duration::from_secs(60)).expect(0);
    assert!(
        seen,
        "citus_schema_move did not run in the session holding the lock"
    );
    assert_eq!(c.nodes()["tenant_acme"], other);

    // On plain PostgreSQL both are refused before any tenant is looked at.
    let plain = common::TestDb::new("move_node_plain");
    for args in [&["move", "acme", "--node", &other][..], &["distribute"][..]] {
        plain
            .run(args)
            .expect(2)
            .mentions("works on a Citus coordinator")
            .mentions("has no citus extension")
            .mentions("nothing was changed");
    }
}

#[test]
fn distribute_makes_local_tenants_distributed_keeping_their_rows_and_audit_trail() {
    let c = CitusDb::new("distribute");
    let local = c.db.dir.join("local.toml");
    std::fs::write(&local, "[citus]\ndistribute = false\n").unwrap();
    for slug in ["alpha", "beta"] {
        c.db.run(&["--config", path_str(&local), "create", slug])
            .expect(0);
        // The audit trigger logs each insert and update.
        c.db.query(&format!(
            "INSERT INTO tenant_{slug}.departments (name) VALUES ('Cardiology'); \
             INSERT INTO tenant_{slug}.employees (email, full_name, department_id) \
               SELECT 'e' || i || '@x.org', 'E ' || i, 1 FROM generate_series(1, 30) i; \
             UPDATE tenant_{slug}.employees SET full_name = 'F' WHERE id <= 5"
        ));
    }
    c.db.run(&["create", "gamma"]).expect(0);
    let counts = |slug: &str| {
        c.db.query(&format!(
            "SELECT (SELECT count(*) FROM tenant_{slug}.employees), \
                    (SELECT count(*) FROM tenant_{slug}.audit_log), \
                    (SELECT count(*) FROM tenant_{slug}.departments)"
        ))
    };
    assert_eq!(
        counts("alpha")[0],
        [Some("30".into()), Some("35".into()), Some("1".into())]
    );
    c.db.run(&["verify"])
        .expect(1)
        .mentions("not_distributed")
        .mentions("tenantctl distribute alpha");

    let run = c.db.run(&["distribute", "--format", "json"]);
    run.expect(0);
    let report = run.json();
    let by_slug = |slug: &str| {
        report["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .unwrap()
            .clone()
    };
    for slug in ["alpha", "beta"] {
        let t = by_slug(slug);
        assert_eq!(t["outcome"], "distributed", "{report}");
        assert_eq!(t["tables"], 9, "{report}");
        let schema = format!("tenant_{slug}");
        // Rows kept, audit rows not logged again.
        assert_eq!(
            counts(slug)[0],
            [Some("30".into()), Some("35".into()), Some("1".into())]
        );
        // Every table on one worker, the one reported; the coordinator's copy emptied.
        let (tables, nodes) = shard_nodes(&c, &schema);
        assert_eq!((tables, nodes.len()), (9, 1), "{schema}");
        assert_eq!(t["node"].as_str(), nodes.iter().next().map(String::as_str));
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT count(*) FROM pg_dist_partition p JOIN pg_class r ON r.oid = p.logicalrelid \
                  JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = '{schema}'"
            )),
            "9"
        );
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT sum(pg_relation_size(r.oid)) FROM pg_class r JOIN pg_namespace n \
                  ON n.oid = r.relnamespace WHERE n.nspname = '{schema}' AND r.relkind = 'r'"
            )),
            "0",
            "{schema}: the coordinator still holds rows"
        );
    }
    assert_eq!(by_slug("gamma")["outcome"], "skipped");
    assert_eq!(by_slug("gamma")["error"], "already distributed");
    // The trigger works again, on the worker.
    c.db.query("INSERT INTO tenant_alpha.employees (email, full_name) VALUES ('n@x.org', 'N')");
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_alpha.audit_log"),
        "36"
    );
    c.db.run(&["verify"]).expect(0).mentions("0 findings");
    c.db.run(&["distribute", "alpha"])
        .expect(0)
        .mentions("alpha (tenant_alpha): skipped: already distributed")
        .mentions("distribute: 1 tenant: 0 distributed, 0 failed, 1 skipped");
}

#[test]
fn ctrl_c_during_move_node_cancels_citus_schema_move_and_leaves_the_tenant_where_it_was() {
    let c = CitusDb::new("move_node_int");
    c.db.run(&["create", "acme"]).expect(0);
    // Enough rows for the move to take a while.
    c.db.query(
        "INSERT INTO tenant_acme.departments (name, cost_center) \
         SELECT 'd' || i, repeat('x', 200) FROM generate_series(1, 200000) i",
    );
    let from = c.nodes()["tenant_acme"].clone();
    let to = c.worker_nodes().into_iter().find(|w| *w != from).unwrap();
    let mover = common::spawn_tenantctl(&c.db, &["move", "acme", "--node", &to, "--online"]);
    let pid = common::wait_for_tenant_lock_holder(&c.db, "tenant_acme");
    for _ in 0..500 {
        let q = c.db.scalar(&format!(
            "SELECT query FROM pg_stat_activity WHERE pid = {pid}"
        ));
        if q.contains("citus_schema_move") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe {
        libc::kill(mover.id() as i32, libc::SIGINT);
    }
    common::finish_within(mover, std::time::Duration::from_secs(60))
        .expect(130)
        .mentions("interrupted by SIGINT: citus_schema_move was cancelled")
        .mentions(&format!("tenant acme stays on node {from}"));
    assert_eq!(c.nodes()["tenant_acme"], from);
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_acme.departments"),
        "200000"
    );
    assert_eq!(c.db.scalar("SELECT count(*) FROM public.tenant_moves"), "0");
    // What Citus left on the target is recorded for cleanup, and goes.
    c.db.query("CALL citus_cleanup_orphaned_resources()");
    assert_eq!(c.db.scalar("SELECT count(*) FROM pg_dist_cleanup"), "0");
    // The lock was let go, and the tenant can move.
    c.db.run(&["move", "acme", "--node", &to]).expect(0);
    assert_eq!(c.nodes()["tenant_acme"], to);
}

/// Each tenant's departments as `name:cost_center` (cost_center `-` when NULL), by name.
fn departments(c: &CitusDb, schema: &str) -> Vec<String> {
    c.db.query(&format!(
        "SELECT name || ':' || coalesce(cost_center, '-') FROM \"{schema}\".departments ORDER BY 1"
    ))
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect()
}

#[test]
fn exec_runs_several_statements_in_distributed_tenants_by_c_and_by_file() {
    let c = CitusDb::new("exec");
    create_tenants(&c.db, 2);
    let sql = "INSERT INTO departments (name) VALUES ('Cardiology');\n\
               UPDATE departments SET cost_center = 'cc-' || name;\n\
               INSERT INTO departments (name) VALUES ('Radiology')";
    c.db.run(&["exec", "-c", sql])
        .expect(0)
        .mentions("2 done, 0 failed");
    for schema in c.db.tenant_schemas() {
        assert_eq!(
            departments(&c, &schema),
            vec!["Cardiology:cc-Cardiology", "Radiology:-"],
            "{schema}"
        );
    }
    // A file with DDL among the statements, and rows of the last one in the report.
    std::fs::write(
        c.db.dir.join("fix.sql"),
        "CREATE INDEX departments_cost_center_idx ON departments (cost_center);\n\
         UPDATE departments SET cost_center = 'all' WHERE cost_center IS NULL;\n\
         DELETE FROM departments WHERE name = 'Cardiology';\n\
         SELECT name, cost_center FROM departments ORDER BY name;\n",
    )
    .unwrap();
    let r =
        c.db.run(&["exec", "--file", "fix.sql", "t001", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    assert_eq!(doc["summary"]["done"], 1, "{doc}");
    assert_eq!(doc["tenants"][0]["rows_affected"], 2, "{doc}");
    assert_eq!(
        departments(&c, "tenant_t000"),
        vec!["Cardiology:cc-Cardiology", "Radiology:-"]
    );
    assert_eq!(departments(&c, "tenant_t001"), vec!["Radiology:all"]);
    assert_eq!(
        c.db.scalar(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'departments_cost_center_idx'"
        ),
        "1"
    );
    // A failing statement after the DDL rolls the tenant back whole, on its worker too.
    let r = c.db.run(&[
        "exec",
        "-c",
        "CREATE INDEX departments_name_idx ON departments (name);\n\
         UPDATE departments SET cost_center = 'half';\n\
         SELECT 1 / 0",
        "t000",
    ]);
    r.expect(1).mentions("division by zero");
    assert_eq!(
        departments(&c, "tenant_t000"),
        vec!["Cardiology:cc-Cardiology", "Radiology:-"]
    );
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'departments_name_idx'"),
        "0"
    );
}

#[test]
fn grant_gives_the_application_role_distributed_tenants_it_cannot_reach() {
    let c = CitusDb::new("grant");
    create_tenants(&c.db, 2);
    // Roles are cluster-wide (Citus creates it on the workers too): one for this test.
    let app = format!("app_{}", c.db.name);
    c.db.query(&format!("CREATE ROLE \"{app}\" LOGIN NOINHERIT"));
    let cfg = c.db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    c.db.run(&["--config", cfg, "verify"])
        .expect(1)
        .mentions("missing_grant");
    let r = c.db.run(&["--config", cfg, "grant", "--format", "json"]);
    r.expect(0);
    for t in r.json()["tenants"].as_array().unwrap() {
        assert_eq!(t["outcome"], "granted", "{t}");
        // One GRANT per table, sent together: more than one statement.
        assert!(t["tables"].as_array().unwrap().len() > 1, "{t}");
    }
    c.db.run(&["--config", cfg, "verify"])
        .expect(0)
        .mentions("0 findings");
    for schema in c.db.tenant_schemas() {
        // Granted on the coordinator and on the tenant's shards: the role reads the rows.
        let readable = c.db.scalar(&format!(
            "SET ROLE \"{app}\"; SELECT count(*) FROM \"{schema}\".departments"
        ));
        assert_eq!(readable, "0", "{schema}");
    }
    // Best effort: the cluster is thrown away after the tests.
    let _ = common::try_query(
        &c.db.url,
        &format!("DROP OWNED BY \"{app}\"; DROP ROLE \"{app}\""),
    );
}

#[test]
fn two_migrate_runs_at_once_apply_each_migration_once() {
    let c = CitusDb::new("two_migrates");
    create_tenants(&c.db, 4);
    let v9 = "CREATE TABLE shifts (id bigint PRIMARY KEY, employee_id bigint REFERENCES employees (id));\n\
              INSERT INTO shifts VALUES (1, NULL);\n";
    let dir =
        c.db.migrations_with("v9", &[("V8__heart_rate.sql", V8), ("V9__shifts.sql", v9)]);
    let a = common::spawn_migrate(&c.db, &dir, "2");
    let b = common::spawn_migrate(&c.db, &dir, "2");
    let limit = std::time::Duration::from_secs(180);
    let (a, b) = (
        common::finish_within(a, limit),
        common::finish_within(b, limit),
    );
    a.expect(0);
    b.expect(0);
    // Each tenant was migrated by one of the runs; the other found it up to date.
    let applied = |r: &common::Run| -> usize {
        let all = r.all();
        let line = all.lines().find(|l| l.contains(" applied, ")).unwrap();
        let before = line.split(" applied, ").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(applied(&a) + applied(&b), 4, "{}\n{}", a.all(), b.all());
    assert_eq!(at_eight(&c.db), (4, 4));
    for schema in c.db.tenant_schemas() {
        let history = c.db.scalar(&format!(
            "SELECT string_agg(version::text, ',' ORDER BY version) \
               FROM \"{schema}\".refinery_schema_history"
        ));
        assert_eq!(history, "1,2,3,4,5,6,7,8,9", "{schema}");
        assert_eq!(
            c.db.scalar(&format!("SELECT count(*) FROM \"{schema}\".shifts")),
            "1",
            "{schema}"
        );
    }
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM public.tenants WHERE version = 9 AND state = 'active'"),
        "4"
    );
}

#[test]
fn migrate_target_stops_at_that_version_and_a_later_run_goes_on() {
    let c = CitusDb::new("target");
    create_tenants(&c.db, 2);
    let v9 = "CREATE TABLE shifts (id bigint PRIMARY KEY);\n";
    let dir =
        c.db.migrations_with("v9", &[("V8__heart_rate.sql", V8), ("V9__shifts.sql", v9)]);
    let versions = || {
        c.db.scalar("SELECT string_agg(version::text, ',' ORDER BY slug) FROM public.tenants")
    };
    c.db.run_with(&dir, &["migrate", "--target", "8"])
        .expect(0)
        .mentions("2 applied");
    assert_eq!(versions(), "8,8");
    assert_eq!(at_eight(&c.db), (2, 2));
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'shifts'"),
        "0"
    );
    c.db.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("2 applied");
    assert_eq!(versions(), "9,9");
    for schema in c.db.tenant_schemas() {
        let (tables, nodes) = shard_nodes(&c, &schema);
        assert_eq!((tables, nodes.len()), (11, 1), "{schema}");
    }
}
