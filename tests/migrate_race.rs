//! `migrate` racing `move` (docs/placements.md, "A race"): a migrate that read a tenant's
//! place before a move switched it, and reaches the old place after, finds the schema gone
//! there. The tenant moved and is fine: it is reported `skipped`, naming where it went,
//! and its row is not marked `failed`. Needs the second cluster scripts/with-postgres.sh
//! starts.
//!
//! A real move cannot be slotted into that window from a test: it takes the same lock the
//! waiting migrate waits for. So the test holds the tenant's lock where it lives (as the
//! move's source transaction does), lets migrate wait for it, then does what a move's
//! switch does: renames the schema aside there and points the registry row at another
//! place, and lets go.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

use tenantctl::registry::locks::LOCK_CLASS;

/// A psql session on `url` holding tenant `schema`'s lock, as a move's source would.
fn hold_lock(url: &str, schema: &str) -> Child {
    let mut s = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql starts (make test puts it on PATH)");
    let stdin = s.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "SELECT pg_advisory_lock({LOCK_CLASS}, hashtext('{schema}'));"
    )
    .unwrap();
    stdin.flush().unwrap();
    s
}

/// Waits until some session of `url`'s database waits for tenant `schema`'s lock.
fn wait_for_waiter(url: &str, schema: &str) {
    for _ in 0..400 {
        let n = scalar(
            url,
            &format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND classid = {LOCK_CLASS}::bigint::oid \
                   AND objid = (hashtext('{schema}')::bigint & 4294967295)::oid"
            ),
        );
        if n != "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nobody waited for the lock of {schema}");
}

/// The move's switch, done by the session holding the lock: the schema renamed aside
/// where it was, then the lock let go (and the session ended).
fn switch_and_release(mut holder: Child, schema: &str) {
    let stdin = holder.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "ALTER SCHEMA \"{schema}\" RENAME TO \"{schema}_moved\";\n\
         SELECT pg_advisory_unlock({LOCK_CLASS}, hashtext('{schema}'));"
    )
    .unwrap();
    drop(holder.stdin.take());
    assert!(
        holder.wait().unwrap().success(),
        "the switch by hand failed"
    );
}

#[test]
fn a_tenant_moved_while_migrate_waited_is_skipped_not_failed() {
    let db = TestDb::new("migrate_race");
    let second = SecondDb::new("migrate_race");
    db.config(&second.server_toml("eu"));
    db.run(&["create", "acme"]).expect(0);
    db.run(&["create", "faraway", "--server", "eu"]).expect(0);
    let dir = db.migrations_with("v8", &[("V8__race.sql", "CREATE TABLE raced (id int);")]);
    let home_db = db.scalar("SELECT current_database()");

    // Both tenants' locks held where they live; migrate reads the registry, then waits.
    let at_home = hold_lock(&db.url, "tenant_acme");
    let far = hold_lock(&second.url, "tenant_faraway");
    wait_for_tenant_lock_holder(&db, "tenant_acme");
    let run = spawn_tenantctl(
        &db,
        &[
            "--migrations",
            path_str(&dir),
            "migrate",
            "--concurrency",
            "2",
            "--format",
            "json",
        ],
    );
    wait_for_waiter(&db.url, "tenant_acme");
    wait_for_waiter(&second.url, "tenant_faraway");

    // The switches: acme goes to eu, faraway comes home.
    db.query(&format!(
        "UPDATE public.tenants SET server_name = 'eu', database_name = '{}' WHERE slug = 'acme'; \
         UPDATE public.tenants SET server_name = 'home', database_name = '{home_db}' \
          WHERE slug = 'faraway'",
        second.name
    ));
    switch_and_release(at_home, "tenant_acme");
    switch_and_release(far, "tenant_faraway");

    let out = finish_within(run, Duration::from_secs(60));
    out.expect(0);
    let doc = out.json();
    let rows: std::collections::BTreeMap<String, serde_json::Value> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["slug"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    for (slug, from, to) in [("acme", "home", "eu"), ("faraway", "eu", "home")] {
        let row = &rows[slug];
        assert_eq!(row["outcome"], "skipped", "{row}");
        let why = row["error"].as_str().unwrap();
        assert!(
            why.contains(&format!("moved from server {from}"))
                && why.contains(&format!("to server {to}"))
                && why.contains("run migrate again"),
            "{why}"
        );
    }
    // Neither is marked failed: both are as they were before the run, at their new place.
    assert_eq!(
        db.query("SELECT slug, state, version::text, last_error FROM public.tenants ORDER BY slug"),
        vec![
            vec![
                Some("acme".into()),
                Some("active".into()),
                Some("7".into()),
                None
            ],
            vec![
                Some("faraway".into()),
                Some("active".into()),
                Some("7".into()),
                None
            ],
        ]
    );
}
