//! Tenants on a `[servers.NAME]` that is itself a Citus coordinator (docs/citus.md,
//! "Tenants on other servers"): home is a plain PostgreSQL database holding the registry,
//! server `c` a Citus coordinator's database with two workers (scripts/with-citus.sh).
//! Each place's backend is its own: tenants created there are distributed schemas, their
//! migrations and exec go one statement at a time, list and status show their node, the
//! Citus rules are checked before anything changes, and a worker is refused.

mod common;

use common::citus::{home_and_citus, CitusDb};
use common::*;

/// The coordinator's `host:port`, as Citus names it.
fn coordinator(c: &CitusDb) -> String {
    let port =
        c.db.url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
    format!("127.0.0.1:{port}")
}

/// V8: a multi-statement file with DDL on distributed tables (a column added, filled and
/// indexed) and a new table with a foreign key and the audit trigger.
const V8: &str = "ALTER TABLE wellness_logs ADD COLUMN resting_heart_rate integer;\n\
UPDATE wellness_logs SET resting_heart_rate = 60;\n\
CREATE INDEX wellness_logs_rhr_idx ON wellness_logs (resting_heart_rate);\n\
CREATE TABLE badges (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    \
employee_id bigint NOT NULL REFERENCES employees (id),\n    name text NOT NULL\n);\n\
CREATE TRIGGER badges_audit AFTER INSERT OR UPDATE OR DELETE ON badges\n    \
FOR EACH ROW EXECUTE FUNCTION audit_row_change();\n";

/// How many of `schema`'s tables Citus distributed, and on how many nodes their shards are.
fn distributed_tables(c: &CitusDb, schema: &str) -> (String, String) {
    let row = c.db.query(&format!(
        "SELECT count(*), count(DISTINCT (nodename, nodeport)) FROM citus_shards \
          WHERE table_name::text LIKE '{schema}.%'"
    ));
    (row[0][0].clone().unwrap(), row[0][1].clone().unwrap())
}

#[test]
fn tenants_created_on_a_citus_server_are_distributed_and_migrate_exec_list_status_work_there() {
    let (home, c) = home_and_citus("cs_create", "");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "a1", "a2", "--server", "c"])
        .expect(0)
        .mentions("2 applied");
    // Distributed schemas (pg_dist_schema) on the coordinator, every table on one worker.
    assert_eq!(
        c.db.scalar(
            "SELECT string_agg(schemaid::regnamespace::text, ',' ORDER BY 1) FROM pg_dist_schema"
        ),
        "tenant_a1,tenant_a2"
    );
    for schema in ["tenant_a1", "tenant_a2"] {
        assert_eq!(
            distributed_tables(&c, schema),
            ("9".into(), "1".into()),
            "{schema}"
        );
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT count(*) FROM {schema}.refinery_schema_history"
            )),
            "7"
        );
    }
    // The example's audit trigger fires on the worker, into the tenant's audit_log.
    c.db.query(
        "INSERT INTO tenant_a1.employees (email, full_name) VALUES ('a@example.org', 'A B')",
    );
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM tenant_a1.audit_log WHERE action = 'insert'"),
        "1"
    );
    assert_eq!(home.tenant_schemas(), vec!["tenant_h1"]);

    // A later multi-statement migration with DDL applies there (and at home).
    let dir = home.migrations_with("v8", &[("V8__badges.sql", V8)]);
    home.run_with(&dir, &["migrate"])
        .expect(0)
        .mentions("3 applied");
    for schema in ["tenant_a1", "tenant_a2"] {
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT count(*) FROM {schema}.refinery_schema_history WHERE version = 8"
            )),
            "1"
        );
        assert_eq!(distributed_tables(&c, schema).0, "10", "{schema}");
    }
    assert_eq!(
        home.scalar("SELECT string_agg(version::text, ',' ORDER BY slug) FROM public.tenants"),
        "8,8,8"
    );

    // exec: several statements with DDL among them, in each tenant on the Citus server.
    home.run(&[
        "exec",
        "-c",
        "CREATE INDEX departments_cost_center_idx ON departments (cost_center);\n\
         INSERT INTO departments (name) VALUES ('Cardiology');\n\
         UPDATE departments SET cost_center = 'cc'",
    ])
    .expect(0)
    .mentions("3 done, 0 failed");
    for schema in ["tenant_a1", "tenant_a2"] {
        assert_eq!(
            c.db.scalar(&format!(
                "SELECT string_agg(name || ':' || cost_center, ',') FROM {schema}.departments"
            )),
            "Cardiology:cc"
        );
    }

    // list and status show each tenant's node on the Citus server, none at home.
    let nodes = c.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let list = home.run(&["list", "--format", "json"]);
    list.expect(0);
    let status = home.run(&["status", "--format", "json"]);
    status.expect(0);
    for doc in [list.json(), status.json()] {
        for t in doc["tenants"].as_array().unwrap() {
            let schema = t["schema"].as_str().unwrap();
            let want = nodes.get(schema).map(|n| serde_json::json!(n));
            assert_eq!(t["node"], want.unwrap_or(serde_json::Value::Null), "{t}");
        }
    }
    let text = home.run(&["list"]);
    text.expect(0);
    assert!(
        text.stdout
            .contains(&format!("a1\ttenant_a1\tactive\t{}\n", nodes["tenant_a1"])),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("h1\ttenant_h1\tactive\t\n"));
    // verify audits the Citus server's tenants as distributed schemas: nothing to report.
    home.run_with(&dir, &["verify"])
        .expect(0)
        .mentions("0 findings");
}

#[test]
fn a_citus_worker_configured_as_a_server_is_refused_naming_its_coordinator() {
    let (home, c) = home_and_citus("cs_worker", "");
    home.run(&["create", "h1"]).expect(0);
    home.config(&format!("[servers.w]\nurl = \"{}\"\n", c.workers[0]));
    let before = home.snapshot();
    let worker_before = query(
        &c.workers[0],
        "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace",
    );
    for args in [
        vec!["create", "x1", "--server", "w"],
        vec!["create", "x2", "--server", "w", "--own-database"],
    ] {
        home.run(&args)
            .expect(2)
            .mentions("server w (database")
            .mentions("is a Citus worker node")
            .mentions(&format!("connect to the coordinator, {}", coordinator(&c)))
            .mentions("nothing was changed");
        assert_eq!(home.snapshot(), before, "{args:?}");
    }
    assert_eq!(
        query(
            &c.workers[0],
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace"
        ),
        worker_before
    );
    let x2 = query(
        &c.workers[0],
        "SELECT count(*) FROM pg_database WHERE datname = 'tenant_x2'",
    );
    assert_eq!(x2[0][0].as_deref(), Some("0"));
    // A registry row placing a tenant on the worker (a server renamed, say): exec and
    // migrate refuse before anything runs (exec audits nothing).
    home.query(&format!(
        "UPDATE public.tenants SET server_name = 'w', database_name = '{}' WHERE slug = 'h1'",
        c.db.name
    ));
    let before = home.snapshot();
    // (migrate visits it only with something to apply.)
    let v8 = home.migrations_with("v8", &[("V8__x.sql", "CREATE TABLE x (id int);\n")]);
    for args in [
        vec!["exec", "-c", "SELECT 1"],
        vec!["--migrations", path_str(&v8), "migrate"],
    ] {
        home.run(&args)
            .expect(2)
            .mentions("is a Citus worker node")
            .mentions(&format!("connect to the coordinator, {}", coordinator(&c)));
        assert_eq!(home.snapshot(), before, "{args:?}");
    }
    assert_eq!(
        home.scalar("SELECT count(*) FROM public.tenant_exec_runs"),
        "0"
    );
}

#[test]
fn migrations_a_citus_server_cannot_run_are_refused_before_any_tenant_is_touched() {
    let (home, c) = home_and_citus("cs_rules", "");
    home.run(&["create", "h1"]).expect(0);
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    let serial = "ALTER TABLE employees ADD COLUMN badge_no bigserial;\n";
    let dir = home.migrations_with("serial", &[("V8__badge.sql", serial)]);
    let before = home.snapshot();
    let history = "SELECT count(*) FROM tenant_a1.refinery_schema_history";
    for args in [vec!["migrate"], vec!["create", "a2", "--server", "c"]] {
        home.run_with(&dir, &args)
            .expect(2)
            .mentions("V8__badge.sql line 1")
            .mentions("Citus cannot add a serial column")
            .mentions("nothing was");
        assert_eq!(home.snapshot(), before, "{args:?}");
        assert_eq!(c.db.scalar(history), "7", "{args:?}");
        assert_eq!(
            c.db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_a2'"),
            "0"
        );
    }
    // Tenants elsewhere than the Citus server are not held to its rules.
    home.run_with(&dir, &["create", "h2"]).expect(0);
    // Per-tenant roles cannot work on a distributed schema: refused there as at home.
    let cfg = home.config(&format!(
        "[servers.c]\nurl = \"{}\"\n[tenants]\napp_role = \"app\"\nper_tenant_roles = true\n",
        c.db.url
    ));
    home.run(&["--config", path_str(&cfg), "create", "a3", "--server", "c"])
        .expect(2)
        .mentions("per_tenant_roles does not work on Citus")
        .mentions("nothing was created");
    assert_eq!(
        c.db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_a3'"),
        "0"
    );
}

#[test]
fn restore_of_a_tenant_on_a_citus_server_brings_it_back_distributed_there() {
    let (home, c) = home_and_citus("cs_restore", "");
    // The restore's temporary role must not be copied to a worker by another test's node.
    let _no_node_added = common::citus::no_node_added();
    home.run(&["create", "a1", "--server", "c"]).expect(0);
    c.db.query(
        "INSERT INTO tenant_a1.departments (name) VALUES ('Cardiology'), ('Radiology'); \
         INSERT INTO tenant_a1.employees (email, full_name) VALUES ('a@x', 'Ada')",
    );
    let file = home.dir.join("a1.dump");
    home.run(&["backup", "a1", "-o", path_str(&file)]).expect(0);
    c.db.query(
        "DELETE FROM tenant_a1.departments; \
         INSERT INTO tenant_a1.departments (name) VALUES ('Wrong')",
    );
    home.run(&["restore", "a1", path_str(&file), "--yes"])
        .expect(0)
        .mentions("restored tenant a1");
    assert_eq!(
        c.db.scalar("SELECT string_agg(name, ',' ORDER BY name) FROM tenant_a1.departments"),
        "Cardiology,Radiology"
    );
    // Distributed again, every table on one worker; the audit trail as it was.
    assert_eq!(
        c.db.scalar(
            "SELECT count(*) FROM pg_dist_schema WHERE schemaid = 'tenant_a1'::regnamespace"
        ),
        "1"
    );
    assert_eq!(
        distributed_tables(&c, "tenant_a1"),
        ("9".into(), "1".into())
    );
    assert_eq!(c.db.scalar("SELECT count(*) FROM tenant_a1.audit_log"), "1");
    // Rows added after it by the trigger on the worker do not collide with restored ones.
    c.db.query("INSERT INTO tenant_a1.employees (email, full_name) VALUES ('b@x', 'Bea')");
    assert_eq!(c.db.scalar("SELECT count(*) FROM tenant_a1.audit_log"), "2");
    assert_eq!(
        home.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'a1'"),
        "active:7"
    );
}
