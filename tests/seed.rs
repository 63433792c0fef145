//! Seed data on create (`[tenants] seed`, `create --seed FILE`): run in each new tenant's
//! creating transaction after its migrations (real server).

mod common;

use common::*;

const SEED: &str = "-- the tenant's first departments\n\
    INSERT INTO departments (name, cost_center)\n\
    VALUES (coalesce(nullif(current_setting('tenantctl.display_name'), ''), 'General'),\n\
            current_setting('tenantctl.slug'));\n\
    INSERT INTO departments (name) VALUES (current_setting('tenantctl.schema'));\n";

fn departments(db: &TestDb, schema: &str) -> Vec<Vec<Option<String>>> {
    db.query(&format!(
        "SELECT name, cost_center FROM \"{schema}\".departments ORDER BY id"
    ))
}

#[test]
fn the_seed_runs_in_each_new_tenant_with_its_slug_schema_and_name() {
    let db = TestDb::new("seed_rows");
    std::fs::write(db.dir.join("seed.sql"), SEED).unwrap();
    db.config("[tenants]\nseed = \"seed.sql\"\n");
    db.run(&["create", "acme", "b-2"]).expect(0);
    db.run(&["create", "north", "--name", "Northwind Health"])
        .expect(0);
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        departments(&db, "tenant_acme"),
        vec![vec![s("General"), s("acme")], vec![s("tenant_acme"), None]]
    );
    assert_eq!(departments(&db, "tenant_b-2")[0][1], s("b-2"));
    assert_eq!(
        departments(&db, "tenant_north")[0][0],
        s("Northwind Health")
    );
    // --seed beats [tenants] seed.
    std::fs::write(
        db.dir.join("other.sql"),
        "INSERT INTO departments (name) VALUES ('other');",
    )
    .unwrap();
    db.run(&["create", "zeta", "--seed", "other.sql"]).expect(0);
    assert_eq!(
        departments(&db, "tenant_zeta"),
        vec![vec![s("other"), None]]
    );
    // The session that ran the seed was reset: the registry row is complete.
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE state = 'active' AND version = 7"),
        "4"
    );
}

#[test]
fn a_failing_seed_leaves_nothing_behind() {
    let db = TestDb::new("seed_fail");
    db.run(&["create", "keep"]).expect(0);
    std::fs::write(
        db.dir.join("seed.sql"),
        "INSERT INTO departments (name) VALUES ('ok');\nINSERT INTO no_such_table VALUES (1);\n",
    )
    .unwrap();
    let before = db.snapshot();
    let r = db.run(&["create", "acme", "beta", "--seed", "seed.sql"]);
    r.expect(1)
        .mentions("seed")
        .mentions("relation \"no_such_table\" does not exist")
        .mentions("nothing was created");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn a_seed_with_forbidden_statements_is_refused_before_anything_changes() {
    let db = TestDb::new("seed_bad");
    let before = db.snapshot();
    for (sql, needle) in [
        (
            "INSERT INTO departments (name) VALUES ('x');\nCOMMIT;\n",
            "line 2",
        ),
        ("SET search_path TO public;\nSELECT 1;\n", "line 1"),
        ("SET ROLE postgres;\n", "line 1"),
        ("-- no-transaction\nSELECT 1;\n", "line 1"),
        ("-- nothing\n", "no SQL statement"),
    ] {
        std::fs::write(db.dir.join("seed.sql"), sql).unwrap();
        let r = db.run(&["create", "acme", "--seed", "seed.sql"]);
        r.expect(2).mentions("seed.sql").mentions(needle);
    }
    db.run(&["create", "acme", "--seed", "missing.sql"])
        .expect(2)
        .mentions("cannot read seed file");
    // The seed runs in the creating transaction: not with a `-- no-transaction` migration.
    std::fs::write(db.dir.join("seed.sql"), "SELECT 1;").unwrap();
    let dir = db.migrations_with(
        "alone",
        &[(
            "V8__idx.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY e_idx ON employees (email);",
        )],
    );
    db.run_with(&dir, &["create", "acme", "--seed", "seed.sql"])
        .expect(2)
        .mentions("V8__idx");
    assert_eq!(db.snapshot(), before);
}
