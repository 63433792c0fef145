//! `backup -l SELECTOR --output-dir DIR` (issue 14): a backup of each tenant a selector
//! picks, every file checked before any is written, a failure saying which tenants were
//! backed up.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// The file names in `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// acme and initech in ring beta, globex not.
fn three(label: &str) -> TestDb {
    let db = TestDb::new(label);
    db.run(&["create", "acme", "initech", "--label", "ring=beta"])
        .expect(0);
    db.run(&["create", "globex"]).expect(0);
    db
}

#[test]
fn a_selector_backs_up_exactly_the_tenants_it_picks() {
    let db = three("bsel_pick");
    let dir = db.dir.join("beta");
    let run = db.run(&[
        "backup",
        "-l",
        "ring=beta",
        "--output-dir",
        path_str(&dir),
        "--create-dir",
    ]);
    run.expect(0)
        .mentions("backup of acme (schema tenant_acme, version 7) written to")
        .mentions("backup of initech")
        .mentions("backup: 2 tenants written to");
    assert!(!run.stdout.contains("globex"), "{}", run.stdout);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let names = files(&dir);
    assert_eq!(names.len(), 4, "{names:?}");
    for (name, slug) in names.iter().zip(["acme", "acme", "initech", "initech"]) {
        assert!(name.starts_with(&format!("{slug}-")), "{names:?}");
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // Each record names its tenant; the dump restores as that tenant.
    let dump = dir.join(&names[0]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(&names[1])).unwrap()).unwrap();
    assert_eq!(record["slug"], "acme");
    db.run(&["restore", "acme", path_str(&dump), "--as", "acme-copy"])
        .expect(0);

    // JSON: the folder and each tenant's record, in slug order.
    let dir2 = db.dir.join("beta-json");
    std::fs::create_dir(&dir2).unwrap();
    let run = db.run(&[
        "backup",
        "--selector",
        "ring in (beta),!missing",
        "--output-dir",
        path_str(&dir2),
        "--format",
        "json",
    ]);
    let doc = run.expect(0).json();
    assert_eq!(doc["output_dir"], path_str(&dir2));
    let slugs: Vec<&str> = doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "initech"]);
    let first = &doc["backups"][0];
    assert!(dir2.join(first["file"].as_str().unwrap()).exists());
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);

    // One named tenant into a folder, as before into a file.
    let dir3 = db.dir.join("one");
    db.run(&[
        "backup",
        "globex",
        "--output-dir",
        path_str(&dir3),
        "--create-dir",
    ])
    .expect(0)
    .mentions("backup of globex");
    assert_eq!(files(&dir3).len(), 2);
}

#[test]
fn bad_backup_selections_are_refused_and_write_nothing() {
    let db = three("bsel_bad");
    let dir = db.dir.join("out");
    std::fs::create_dir(&dir).unwrap();
    let d = path_str(&dir).to_string();
    let before = db.snapshot();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["backup", "-l", "ring in (beta", "--output-dir", &d],
            "unbalanced parentheses",
        ),
        (
            vec!["backup", "-l", "ring=none", "--output-dir", &d],
            "selector 'ring=none' matched no tenant; no backup was written",
        ),
        (
            vec!["backup", "acme", "-l", "ring=beta", "--output-dir", &d],
            "name a tenant or give -l/--selector, not both; no backup was written",
        ),
        (
            vec!["backup", "-l", "ring=beta"],
            "with -l/--selector give --output-dir DIR",
        ),
        (
            vec!["backup", "-l", "ring=beta", "-o", "x.dump"],
            "-o/--output names one file; with -l/--selector give --output-dir DIR",
        ),
        (
            vec!["backup", "-l", "ring=beta", "--output-dir", "missing"],
            "does not exist; create it (mode 0700) or pass --create-dir; no backup was written",
        ),
        (
            vec!["backup", "-l", "ring=beta", "--output-dir", "x.dump"],
            "x.dump is not a folder",
        ),
        (vec!["backup"], "SLUG"),
    ];
    std::fs::write(db.dir.join("x.dump"), "not a folder").unwrap();
    for (args, message) in &cases {
        let run = db.run(args);
        run.expect(2).mentions(message);
        let json = db.run(&[&args[..], &["--format", "json"]].concat());
        assert_eq!(json.expect(2).json()["exit_code"], 2, "{args:?}");
        assert_eq!(files(&dir), Vec::<String>::new(), "{args:?}");
        assert!(!db.dir.join("missing").exists());
        assert_eq!(db.snapshot(), before, "{args:?}");
    }
}

/// An existing file for the second tenant picked stops the run before the first tenant's
/// backup is written.
#[test]
fn every_file_is_checked_before_any_is_written() {
    let db = three("bsel_exists");
    let dir = db.dir.join("out");
    std::fs::create_dir(&dir).unwrap();
    // The names the run may choose for initech (the UTC second is in them).
    let now = time::OffsetDateTime::now_utc();
    for s in -2..60 {
        let t = now + time::Duration::seconds(s);
        let name = format!(
            "initech-{:04}{:02}{:02}T{:02}{:02}{:02}Z.dump",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        std::fs::write(dir.join(name), "someone else's").unwrap();
    }
    let taken = files(&dir);
    let before = db.snapshot();
    db.run(&["backup", "-l", "ring=beta", "--output-dir", path_str(&dir)])
        .expect(2)
        .mentions("already exists; tenantctl never overwrites backups");
    assert_eq!(files(&dir), taken, "no acme backup was written");
    assert_eq!(db.snapshot(), before);
}

/// A tenant that cannot be backed up stops the run; the message names those backed up, whose
/// files stay, and no later tenant is started.
#[test]
fn a_failure_stops_the_run_and_says_which_tenants_were_backed_up() {
    let db = three("bsel_fail");
    db.run(&["create", "hooli", "--label", "ring=beta"])
        .expect(0);
    db.query("DROP SCHEMA tenant_hooli CASCADE");
    db.run(&["label", "acme", "ring=beta"]).expect(0);
    db.run(&["label", "globex", "ring=beta"]).expect(0);
    let dir = db.dir.join("out");
    std::fs::create_dir(&dir).unwrap();
    let run = db.run(&["backup", "-l", "ring=beta", "--output-dir", path_str(&dir)]);
    run.expect(1)
        .mentions(
            "cannot back up tenant hooli; backed up 2 of 4 (acme, globex; their files are kept)",
        )
        .mentions("the schema tenant_hooli of tenant hooli is missing");
    let names = files(&dir);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.starts_with("acme-") || n.starts_with("globex-")));
}

#[test]
fn a_selector_backs_up_tenants_wherever_they_live() {
    let db = TestDb::new("bsel_far");
    let second = SecondDb::new("bsel_far");
    db.config(&second.server_toml("eu"));
    db.run(&["create", "acme", "--label", "ring=beta"])
        .expect(0);
    db.run(&[
        "create",
        "faraway",
        "--server",
        "eu",
        "--label",
        "ring=beta",
    ])
    .expect(0);
    db.run(&["create", "globex"]).expect(0);
    let dir = db.dir.join("beta");
    let run = db.run(&[
        "backup",
        "-l",
        "ring=beta",
        "--output-dir",
        path_str(&dir),
        "--create-dir",
        "--format",
        "json",
    ]);
    let doc = run.expect(0).json();
    let backups = doc["backups"].as_array().unwrap();
    let placed: Vec<(String, String)> = backups
        .iter()
        .map(|b| {
            (
                b["slug"].as_str().unwrap().to_string(),
                b["server"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        vec![
            ("acme".to_string(), "home".to_string()),
            ("faraway".to_string(), "eu".to_string())
        ],
        "{doc}"
    );
    // The far tenant's dump holds its schema, taken from the second server.
    let far = files(&dir)
        .into_iter()
        .find(|n| n.starts_with("faraway-") && n.ends_with(".dump"))
        .unwrap();
    let listing = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(dir.join(&far))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("tenant_faraway"), "{listing}");
    assert_eq!(files(&dir).len(), 4);
}
