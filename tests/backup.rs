//! Backup, restore and archive-on-drop against a real server.

mod common;

use std::path::Path;

use common::*;

/// A checksum of every row of every table of a schema.
fn data_checksum(db: &TestDb, schema: &str) -> String {
    let tables = db.query(&format!(
        "SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' AND tablename <> 'refinery_schema_history' ORDER BY 1"
    ));
    tables
        .iter()
        .map(|t| {
            let t = t[0].clone().unwrap();
            db.scalar(&format!(
                "SELECT '{t}:' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{schema}\".\"{t}\" x"
            ))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn seed(db: &TestDb, schema: &str, who: &str) {
    db.query(&format!(
        "SET search_path TO \"{schema}\"; \
         INSERT INTO departments (name) VALUES ('{who} ops'); \
         INSERT INTO employees (email, full_name) VALUES ('{who}@example.org', '{who} one'), ('{who}2@example.org', '{who} two'); \
         INSERT INTO mood_checkins (employee_id, checked_in_at, mood, energy) SELECT id, now(), 4, 3 FROM employees;"
    ));
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn restore_brings_back_one_tenant_and_leaves_the_others_untouched() {
    let db = TestDb::new("restore");
    let (app, app_url) = db.role("app");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run(&["--config", cfg, "create", "acme", "globex", "initech"])
        .expect(0);
    for (schema, who) in [
        ("tenant_acme", "acme"),
        ("tenant_globex", "globex"),
        ("tenant_initech", "initech"),
    ] {
        seed(&db, schema, who);
    }
    let backed_up = data_checksum(&db, "tenant_acme");
    let file = db.dir.join("acme.dump");
    let r = db.run(&["--config", cfg, "backup", "acme", "-o", path_str(&file)]);
    r.expect(0).mentions("version 7").mentions(&sha256(&file));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(db.dir.join("acme.dump.json")).unwrap())
            .unwrap();
    assert_eq!(
        (meta["slug"].as_str(), meta["version"].as_i64()),
        (Some("acme"), Some(7))
    );
    assert_eq!(meta["sha256"].as_str().unwrap(), sha256(&file));
    db.run(&["--config", cfg, "backup", "acme", "-o", path_str(&file)])
        .expect(2)
        .mentions("already exists");

    // Damage acme after the backup; note everyone else's data.
    db.query("SET search_path TO tenant_acme; DELETE FROM mood_checkins; DELETE FROM employees; INSERT INTO departments (name) VALUES ('after backup');");
    assert_ne!(data_checksum(&db, "tenant_acme"), backed_up);
    let others = (
        data_checksum(&db, "tenant_globex"),
        data_checksum(&db, "tenant_initech"),
    );

    db.run(&["--config", cfg, "restore", "acme", path_str(&file)])
        .expect(2)
        .mentions("--yes");
    db.run(&["--config", cfg, "restore", "acme", path_str(&file), "--yes"])
        .expect(0)
        .mentions("restored tenant acme");
    assert_eq!(
        data_checksum(&db, "tenant_acme"),
        backed_up,
        "acme's rows are the backed-up ones"
    );
    assert_eq!(
        (
            data_checksum(&db, "tenant_globex"),
            data_checksum(&db, "tenant_initech")
        ),
        others,
        "other tenants unchanged"
    );
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'acme'"),
        "active:7"
    );
    // Grants are back, and the restored tenant migrates like any other.
    assert_eq!(
        try_query(&app_url, "SELECT count(*) FROM tenant_acme.employees").unwrap()[0][0].as_deref(),
        Some("2")
    );
    db.run(&["--config", cfg, "verify"]).expect(0);
    let dir = db.migrations_with(
        "v8",
        &[("V8__x.sql", "ALTER TABLE employees ADD COLUMN badge text;")],
    );
    db.run(&[
        "--config",
        cfg,
        "--migrations",
        path_str(&dir),
        "migrate",
        "acme",
    ])
    .expect(0)
    .mentions("1 applied");
}

#[test]
fn restore_as_a_new_tenant_keeps_it_in_its_own_schema() {
    let db = TestDb::new("restoreas");
    // A function the migrations define (restore accepts no other code), then pinned to the
    // tenant's schema alone (pg_temp then comes first).
    let dir = db.migrations_with(
        "pinned",
        &[(
            "V8__pinned.sql",
            "CREATE FUNCTION pinned() RETURNS int LANGUAGE sql AS 'SELECT 1';",
        )],
    );
    db.run_with(&dir, &["create", "acme"]).expect(0);
    seed(&db, "tenant_acme", "acme");
    db.query("ALTER FUNCTION tenant_acme.pinned() SET search_path = tenant_acme");
    let file = db.dir.join("acme.dump");
    db.run_with(&dir, &["backup", "acme", "-o", path_str(&file)])
        .expect(0);
    db.run_with(
        &dir,
        &["restore", "acme", path_str(&file), "--as", "acme-copy"],
    )
    .expect(0);
    assert_eq!(
        data_checksum(&db, "tenant_acme-copy"),
        data_checksum(&db, "tenant_acme")
    );
    assert_eq!(
        db.scalar("SELECT state || ':' || version FROM public.tenants WHERE slug = 'acme-copy'"),
        "active:8"
    );
    // The audit trigger pins its search_path: it must write into the copy, not into acme.
    let audit = |schema: &str| {
        db.scalar(&format!("SELECT count(*) FROM \"{schema}\".audit_log WHERE entity = 'employees' AND action = 'insert'"))
    };
    let (acme_before, copy_before) = (audit("tenant_acme"), audit("tenant_acme-copy"));
    db.query("INSERT INTO \"tenant_acme-copy\".employees (email, full_name) VALUES ('new@example.org', 'New')");
    assert_eq!(
        audit("tenant_acme"),
        acme_before,
        "the copy's trigger wrote into acme"
    );
    assert_eq!(
        audit("tenant_acme-copy").parse::<i64>().unwrap(),
        copy_before.parse::<i64>().unwrap() + 1
    );
    // Re-pinned to the copy with pg_temp last; a path naming no tenant schema is kept.
    let pinned = |f: &str| {
        db.scalar(&format!(
            "SELECT array_to_string(proconfig, ';') FROM pg_proc \
              WHERE oid = '\"tenant_acme-copy\".{f}()'::regprocedure"
        ))
    };
    assert_eq!(
        pinned("pinned"),
        "search_path=\"tenant_acme-copy\", pg_temp"
    );
    assert_eq!(
        pinned("audit_row_change"),
        "search_path=pg_catalog, pg_temp"
    );
    db.run_with(
        &dir,
        &["restore", "acme", path_str(&file), "--as", "acme-copy"],
    )
    .expect(2)
    .mentions("already exists");
}

#[test]
fn damaged_foreign_or_too_new_dumps_are_refused_and_nothing_changes() {
    let db = TestDb::new("badrestore");
    db.run(&["create", "acme", "globex"]).expect(0);
    let file = db.dir.join("acme.dump");
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
    let meta = std::fs::read_to_string(db.dir.join("acme.dump.json")).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let before = db.snapshot();

    let truncated = db.dir.join("truncated.dump");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(db.dir.join("truncated.dump.json"), &meta).unwrap();
    db.run(&["restore", "acme", path_str(&truncated), "--yes"])
        .expect(2)
        .mentions("SHA-256");

    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let corrupt = db.dir.join("corrupt.dump");
    std::fs::write(&corrupt, &flipped).unwrap();
    std::fs::write(db.dir.join("corrupt.dump.json"), &meta).unwrap();
    db.run(&["restore", "acme", path_str(&corrupt), "--yes"])
        .expect(2)
        .mentions("truncated or corrupt");

    // A truncated archive whose record was rewritten to match is still caught by pg_restore.
    let forged = db.dir.join("forged.dump");
    std::fs::write(&forged, &bytes[..bytes.len() / 3]).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&meta).unwrap();
    m["sha256"] = serde_json::Value::String(sha256(&forged));
    std::fs::write(db.dir.join("forged.dump.json"), m.to_string()).unwrap();
    db.run(&["restore", "acme", path_str(&forged), "--yes"])
        .expect(2)
        .mentions("not a readable dump");

    db.run(&["restore", "globex", path_str(&file), "--yes"])
        .expect(2)
        .mentions("is a backup of tenant acme");
    std::fs::remove_file(db.dir.join("acme.dump.json")).unwrap();
    db.run(&["restore", "acme", path_str(&file), "--yes"])
        .expect(2)
        .mentions("acme.dump.json");
    assert_eq!(db.snapshot(), before);

    // A backup made at version 8 cannot be restored with a folder that stops at 7.
    let dir = db.migrations_with("v8", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    db.run_with(&dir, &["migrate", "globex"]).expect(0);
    let newer = db.dir.join("globex.dump");
    db.run(&["backup", "globex", "-o", path_str(&newer)])
        .expect(0);
    let before = db.snapshot();
    db.run(&["restore", "globex", path_str(&newer), "--yes"])
        .expect(2)
        .mentions("newer than the migrations folder");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn an_old_pg_dump_is_refused() {
    let db = TestDb::new("olddump");
    db.run(&["create", "acme"]).expect(0);
    let fake = db.dir.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", path_str(&fake)])
        .status()
        .unwrap();
    let r = db
        .cmd()
        .args(["backup", "acme"])
        .env("TENANTCTL_PG_DUMP", &fake)
        .output()
        .unwrap();
    Run::from(r)
        .expect(2)
        .mentions("pg_dump 9")
        .mentions("older than the server (PostgreSQL 15)");
}

#[test]
fn drop_archive_keeps_a_verifiable_copy_or_drops_nothing() {
    let db = TestDb::new("archive");
    db.run(&["create", "acme", "globex"]).expect(0);
    // An archive folder that cannot be created: bad input, nothing is dropped.
    let not_a_dir = db.dir.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    db.run(&[
        "drop",
        "acme",
        "--yes",
        "--archive",
        path_str(&not_a_dir),
        "--create-dir",
    ])
    .expect(2)
    .mentions("archive");
    assert_eq!(db.tenant_schemas(), vec!["tenant_acme", "tenant_globex"]);

    let dir = db.dir.join("archive");
    db.run(&[
        "drop",
        "acme",
        "--yes",
        "--archive",
        path_str(&dir),
        "--create-dir",
    ])
    .expect(0)
    .mentions("archived acme");
    let row = db
        .query("SELECT archive_file, archive_sha256 FROM public.tenant_drops WHERE slug = 'acme'");
    let (file, sha) = (row[0][0].clone().unwrap(), row[0][1].clone().unwrap());
    assert!(Path::new(&file).exists(), "{file}");
    assert_eq!(sha256(Path::new(&file)), sha);
    assert_eq!(db.tenant_schemas(), vec!["tenant_globex"]);
    // The archive restores the dropped tenant.
    db.run(&["restore", "acme", &file]).expect(0);
    assert_eq!(db.tenant_schemas(), vec!["tenant_acme", "tenant_globex"]);
}
