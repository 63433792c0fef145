//! `tenantctl adopt` (taking over fleets other tools made) and `verify --structure`
//! (structural drift), against a real server.

mod common;

use common::*;
use tenantctl::domain::migration_set::MigrationSet;

/// Builds `schema` the way a hand-written loop does: the example migrations' SQL up to
/// `upto`, run in the schema, and no history table.
fn plain_sql_tenant(db: &TestDb, schema: &str, upto: i64) {
    let set = MigrationSet::load(&repo().join("migrations")).unwrap();
    // The search_path tenantctl runs migrations with (V5 pins it with FROM CURRENT).
    let mut sql = format!("CREATE SCHEMA \"{schema}\"; SET search_path = \"{schema}\", pg_temp;\n");
    for m in set.migrations.iter().filter(|m| m.version() as i64 <= upto) {
        sql.push_str(m.sql().unwrap());
        sql.push_str(";\n");
    }
    sql.push_str("RESET search_path;");
    db.query(&sql);
}

/// Adds refinery's own history table to `schema` with the rows refinery's CLI writes for
/// V1..`upto` (version, name, applied_on as RFC 3339 text, checksum as text).
fn refinery_history(db: &TestDb, schema: &str, upto: i64) {
    let set = MigrationSet::load(&repo().join("migrations")).unwrap();
    let mut sql = format!(
        "CREATE TABLE \"{schema}\".refinery_schema_history( version int4 PRIMARY KEY, \
         name VARCHAR(255), applied_on VARCHAR(255), checksum VARCHAR(255));\n"
    );
    for m in set.migrations.iter().filter(|m| m.version() as i64 <= upto) {
        sql.push_str(&format!(
            "INSERT INTO \"{schema}\".refinery_schema_history VALUES ({}, '{}', \
             '2024-03-01T10:00:00Z', '{}');\n",
            m.version(),
            m.name(),
            m.checksum()
        ));
    }
    db.query(&sql);
}

fn registered(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.query("SELECT slug, schema_name, state, version::text FROM public.tenants ORDER BY slug")
}

fn row(slug: &str, schema: &str, state: &str, version: &str) -> Vec<Option<String>> {
    [slug, schema, state, version]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect()
}

#[test]
fn a_fleet_made_by_plain_sql_is_adopted_with_a_baseline_and_migrates() {
    let db = TestDb::new("adoptplain");
    db.run(&["init"]).expect(0);
    plain_sql_tenant(&db, "tenant_north", 3);
    plain_sql_tenant(&db, "tenant_south", 3);

    // Without a history nor --baseline the version is unknown: refused, nothing changed.
    let before = db.snapshot();
    db.run(&["adopt", "--all"])
        .expect(1)
        .mentions("north (tenant_north): refused: it has no migration history")
        .mentions("adopt it with --baseline V");
    assert_eq!(db.snapshot(), before);
    assert!(registered(&db).is_empty());

    // The dry run says what would happen and changes nothing.
    db.run(&["adopt", "--all", "--baseline", "3", "--dry-run"])
        .expect(0)
        .mentions("north (tenant_north): would adopt at version 3 (--baseline")
        .mentions("adopt: 2 schemas: 2 would be adopted, 0 unchanged, 0 refused, 0 failed");
    assert_eq!(db.snapshot(), before);

    db.run(&["adopt", "--all", "--baseline", "3"])
        .expect(0)
        .mentions("adopt: 2 schemas: 2 adopted, 0 unchanged, 0 refused, 0 failed");
    assert_eq!(
        registered(&db),
        vec![
            row("north", "tenant_north", "active", "3"),
            row("south", "tenant_south", "active", "3")
        ]
    );
    // The history refinery would have written, and the record that it was not run.
    let set = MigrationSet::load(&repo().join("migrations")).unwrap();
    let history = db.query(
        "SELECT version::text, name, checksum FROM tenant_north.refinery_schema_history ORDER BY 1",
    );
    let expected: Vec<Vec<Option<String>>> = set
        .migrations
        .iter()
        .take(3)
        .map(|m| {
            vec![
                Some(m.version().to_string()),
                Some(m.name().to_string()),
                Some(m.checksum().to_string()),
            ]
        })
        .collect();
    assert_eq!(history, expected);
    assert_eq!(
        db.scalar(
            "SELECT string_agg(DISTINCT outcome, ',') || ' ' || count(*) \
               FROM public.tenant_migrations WHERE slug = 'north'"
        ),
        "baselined 3"
    );

    // Adopting again is a no-op.
    let adopted = db.snapshot();
    db.run(&["adopt", "north", "south", "--baseline", "3"])
        .expect(0)
        .mentions("north (tenant_north): already registered; nothing to do")
        .mentions("0 adopted, 2 unchanged");
    assert_eq!(db.snapshot(), adopted);

    db.run(&["migrate"])
        .expect(0)
        .mentions("migrate: 2 tenants: 2 applied");
    db.run(&["verify", "--structure"])
        .expect(0)
        .mentions("verify: 2 tenants checked, 0 findings");
}

#[test]
fn a_fleet_with_refinerys_own_history_is_adopted_at_its_version() {
    let db = TestDb::new("adopthist");
    db.run(&["init"]).expect(0);
    plain_sql_tenant(&db, "tenant_east", 5);
    refinery_history(&db, "tenant_east", 5);
    plain_sql_tenant(&db, "tenant_west", 4);
    refinery_history(&db, "tenant_west", 4);
    // A history whose checksum no longer matches the file: refused, naming the migration.
    plain_sql_tenant(&db, "tenant_odd", 2);
    refinery_history(&db, "tenant_odd", 2);
    db.query("UPDATE tenant_odd.refinery_schema_history SET checksum = '42' WHERE version = 2");

    let before = db.snapshot();
    // --baseline disagreeing with a history is refused too.
    db.run(&["adopt", "east", "--baseline", "3"])
        .expect(1)
        .mentions("its migration history says version 5, not --baseline 3");
    assert_eq!(db.snapshot(), before);

    let r = db.run(&["adopt", "--all", "--format", "json"]);
    r.expect(1);
    let doc = r.json();
    let by = |slug: &str| {
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .unwrap()
            .clone()
    };
    assert_eq!(by("east")["outcome"], "adopted");
    assert_eq!(by("east")["version"], 5);
    assert_eq!(by("east")["source"], "history");
    assert_eq!(by("west")["version"], 4);
    assert_eq!(by("odd")["outcome"], "refused");
    let why = by("odd")["error"].as_str().unwrap().to_string();
    assert!(
        why.contains("V2__consents") && why.contains("checksum"),
        "{why}"
    );
    assert_eq!(
        registered(&db),
        vec![
            row("east", "tenant_east", "active", "5"),
            row("west", "tenant_west", "active", "4")
        ]
    );
    // Its history stays what refinery wrote; the registry records it as adopted.
    assert_eq!(
        db.scalar("SELECT applied_on FROM tenant_east.refinery_schema_history WHERE version = 1"),
        "2024-03-01T10:00:00Z"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_migrations WHERE slug = 'east' AND outcome = 'adopted'"),
        "5"
    );
    db.run(&["migrate"])
        .expect(0)
        .mentions("migrate: 2 tenants: 2 applied");
    assert_eq!(
        db.scalar("SELECT max(version) FROM tenant_west.refinery_schema_history"),
        "7"
    );
}

#[test]
fn a_hand_edited_schema_is_refused_with_its_differences_unless_drift_is_accepted() {
    let db = TestDb::new("adoptdrift");
    db.run(&["init"]).expect(0);
    plain_sql_tenant(&db, "tenant_clean", 7);
    plain_sql_tenant(&db, "tenant_edited", 7);
    db.query(
        "ALTER TABLE tenant_edited.employees DROP COLUMN hired_on; \
         CREATE INDEX incident_42 ON tenant_edited.consents (purpose);",
    );
    // A schema with the prefix whose rest is no valid slug: refused with the slug rule.
    db.query("CREATE SCHEMA \"tenant_Upper\"");

    db.run(&["adopt", "--all", "--baseline", "7"])
        .expect(1)
        .mentions("clean (tenant_clean): adopted at version 7")
        .mentions("edited (tenant_edited): refused: its structure differs from what the migration files build at version 7 (2 differences)")
        .mentions("missing_column employees.hired_on")
        .mentions("extra_index incident_42")
        .mentions("Upper (tenant_Upper): refused: its name gives no valid tenant slug")
        .mentions("starting with a letter or a digit");
    assert_eq!(
        registered(&db),
        vec![row("clean", "tenant_clean", "active", "7")]
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('tenant_edited.refinery_schema_history') IS NULL"),
        "t",
        "the refused schema was left as it was"
    );

    let r = db.run(&[
        "adopt",
        "edited",
        "--baseline",
        "7",
        "--accept-drift",
        "--format",
        "json",
    ]);
    r.expect(0);
    let t = &r.json()["tenants"][0];
    assert_eq!(t["outcome"], "adopted");
    let kinds: Vec<&str> = t["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["missing_column", "extra_index"]);
    db.run(&["adopt", "edited", "--baseline", "7"])
        .expect(0)
        .mentions("already registered");
    // The drift it was adopted with is what verify --structure reports, nothing else.
    let r = db.run(&[
        "verify",
        "--structure",
        "clean",
        "edited",
        "--format",
        "json",
    ]);
    r.expect(1);
    let found: Vec<(String, String)> = r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["slug"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("edited".to_string(), "extra_index".to_string()),
            ("edited".to_string(), "missing_column".to_string())
        ]
    );
}

#[test]
fn adopted_tenants_get_the_configured_grants() {
    let db = TestDb::new("adoptgrant");
    let (app, _) = db.role("app");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run(&["--config", cfg, "init"]).expect(0);
    plain_sql_tenant(&db, "tenant_legacy", 7);
    db.query("GRANT USAGE ON SCHEMA tenant_legacy TO PUBLIC");
    db.run(&["--config", cfg, "adopt", "legacy", "--baseline", "7"])
        .expect(0);
    assert_eq!(
        db.scalar(&format!(
            "SELECT has_table_privilege('{app}', 'tenant_legacy.employees', 'SELECT') \
                AND has_schema_privilege('{app}', 'tenant_legacy', 'USAGE') \
                AND NOT has_table_privilege('{app}', 'tenant_legacy.refinery_schema_history', 'SELECT') \
                AND NOT has_schema_privilege('public', 'tenant_legacy', 'USAGE')"
        )),
        "t"
    );
    // What verify expects of a tenant tenantctl made, it finds in the adopted one.
    db.run(&["--config", cfg, "verify", "--structure"])
        .expect(0)
        .mentions("0 findings");
}

#[test]
fn bad_adopt_input_is_refused_and_changes_nothing() {
    let db = TestDb::new("adoptbad");
    db.run(&["init"]).expect(0);
    plain_sql_tenant(&db, "tenant_one", 2);
    let before = db.snapshot();
    db.run(&["adopt", "one", "--baseline", "99"])
        .expect(2)
        .mentions("--baseline 99 is not a migration in")
        .mentions("nothing was adopted");
    db.run(&["adopt", "one", "ghost", "--baseline", "2"])
        .expect(2)
        .mentions("schema tenant_ghost does not exist; nothing was adopted");
    db.run(&["adopt"]).expect(2).mentions("--all");
    db.run(&["adopt", "one", "--all"]).expect(2);
    db.run(&["adopt", "One"]).expect(2).mentions("a-z, 0-9");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn verify_structure_reports_each_hand_change_with_its_kind_and_nothing_else() {
    let db = TestDb::new("structure");
    db.run(&["create", "alpha", "bravo", "charlie", "delta-x"])
        .expect(0);
    db.run(&["verify", "--structure"])
        .expect(0)
        .mentions("verify: 4 tenants checked, 0 findings");
    db.query(
        "CREATE INDEX incident_137 ON tenant_alpha.wellness_logs (steps); \
         ALTER TABLE tenant_bravo.employees DROP COLUMN hired_on; \
         ALTER TABLE \"tenant_delta-x\".programs ALTER COLUMN active SET DEFAULT false;",
    );
    // Without --structure verify does not look at the structure.
    db.run(&["verify"]).expect(0);
    let r = db.run(&["verify", "--structure", "--format", "json"]);
    r.expect(1);
    let found: Vec<(String, String, String)> = r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["slug"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("alpha", "extra_index")
    );
    assert!(found[0].2.starts_with("incident_137"), "{}", found[0].2);
    assert_eq!(
        (found[1].0.as_str(), found[1].1.as_str()),
        ("bravo", "missing_column")
    );
    assert!(
        found[1].2.starts_with("employees.hired_on"),
        "{}",
        found[1].2
    );
    assert_eq!(
        (found[2].0.as_str(), found[2].1.as_str()),
        ("delta-x", "default_changed")
    );
    assert!(
        found[2]
            .2
            .contains("default is false, the migration files make it true"),
        "{}",
        found[2].2
    );
    // The references were built in scratch schemas that are gone.
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenantctl_reference%'"),
        "0"
    );
    db.run(&["verify", "--structure"])
        .expect(1)
        .mentions("extra_index")
        .mentions("verify: 4 tenants checked, 3 findings");
}

#[test]
fn a_reference_that_cannot_be_built_leaves_no_scratch_schema() {
    let db = TestDb::new("structfail");
    // V8 refuses to run outside a tenant schema: every tenant takes it, the reference cannot.
    let dir = db.migrations_with(
        "guarded",
        &[(
            "V8__guarded.sql",
            "DO $$ BEGIN IF left(current_schema(), 7) <> 'tenant_' THEN \
             RAISE EXCEPTION 'only in tenant schemas'; END IF; END $$;",
        )],
    );
    db.run_with(&dir, &["create", "acme"]).expect(0);
    db.run_with(&dir, &["verify", "--structure"])
        .expect(1)
        .mentions("cannot build the reference structure at version 8")
        .mentions("V8__guarded");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenantctl_reference%'"),
        "0"
    );
}
