//! Hostile input, by property: every string is either refused by the slug rules or becomes
//! a schema whose name, read back from pg_namespace, is exactly the expected one.

mod common;

use common::*;
use proptest::prelude::*;
use tenantctl::domain::names::{quote_ident, schema_name, validate_slug};

/// Strings near the rules (slug characters plus quotes, spaces, separators, upper case,
/// non-ASCII), and arbitrary Unicode.
fn candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_\\-\"'; .A-Z\\\\$\u{e9}\u{0}]{0,70}",
        any::<String>(),
        "[a-z0-9][a-z0-9_-]{0,62}",
    ]
}

const CASES: u32 = 48;

/// Through the real binary: exit 2 and nothing created, or exactly `tenant_<slug>`.
#[test]
fn create_either_refuses_or_makes_exactly_the_expected_schema() {
    // One database for every case (they run one after another), owned by this test so
    // that it is dropped when the test ends, passed or failed.
    let db = TestDb::new("hostile");
    db.run(&["init"]).expect(0);
    proptest!(ProptestConfig::with_cases(CASES), |(s in candidates())| {
        let before = db.scalar("SELECT count(*) FROM pg_namespace");
        // A NUL cannot be passed in argv; the rules reject it anyway (unit-tested).
        prop_assume!(!s.contains('\0'));
        let r = db.run(&["create", "--if-not-exists", "--", &s]);
        let expected = validate_slug(&s).ok().and_then(|slug| schema_name("tenant_", slug).ok());
        match expected {
            None => {
                prop_assert_eq!(r.code, 2, "{:?} should be refused: {}", s, r.all());
                prop_assert_eq!(db.scalar("SELECT count(*) FROM pg_namespace"), before);
            }
            Some(schema) => {
                prop_assert_eq!(r.code, 0, "{:?} should be created: {}", s, r.all());
                let found = db.query(&format!(
                    "SELECT nspname FROM pg_namespace WHERE nspname = '{}'", schema.replace('\'', "''")));
                prop_assert_eq!(found.len(), 1);
                prop_assert_eq!(found[0][0].as_deref(), Some(schema.as_str()));
                let registered = db.scalar(&format!("SELECT schema_name FROM public.tenants WHERE slug = '{s}'"));
                prop_assert_eq!(registered, schema);
            }
        }
    });
    assert_dropped_when_done(db);
}

/// The one quoting function, on any identifier PostgreSQL can hold: the schema's name
/// read back is exactly the input, so no input can escape the quotes.
#[test]
fn quote_ident_round_trips_any_identifier() {
    let db = TestDb::new("quoting");
    proptest!(ProptestConfig::with_cases(CASES), |(s in "[^\u{0}]{1,20}")| {
        prop_assume!(s.len() <= 63);
        let created = try_query(&db.url, &format!("CREATE SCHEMA {}", quote_ident(&s)));
        prop_assert!(created.is_ok(), "{:?}: {:?}", s, created);
        let count = db.scalar(&format!(
            "SELECT count(*) FROM pg_namespace WHERE nspname = {}",
            postgres_protocol::escape::escape_literal(&s)));
        prop_assert_eq!(count, "1", "{:?} was not created under its exact name", s);
        query(&db.url, &format!("DROP SCHEMA {}", quote_ident(&s)));
    });
    assert_dropped_when_done(db);
}

/// Drops the test's database and checks it is gone from the server: a property test's
/// database must not outlive its run (statics, whose Drop never runs, left them behind).
fn assert_dropped_when_done(db: TestDb) {
    let name = db.name.clone();
    drop(db);
    let left = scalar(
        &admin_url(),
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    );
    assert_eq!(left, "0", "database {name} was left behind");
}
