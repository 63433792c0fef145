//! Files holding health data: backup and drop --archive write private files, never through
//! a link or over another file, never leave a partial file, and do not hang behind an
//! application's lock; drop keeps only the record of the destruction.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn backups_and_archives_are_private() {
    let db = TestDb::new("filemodes");
    db.run(&["create", "acme", "globex"]).expect(0);
    let file = db.dir.join("acme.dump");
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
    assert_eq!(mode(&file), 0o600, "the dump");
    assert_eq!(mode(&db.dir.join("acme.dump.json")), 0o600, "its record");

    let archive = db.dir.join("archive/nested");
    db.run(&[
        "drop",
        "globex",
        "--yes",
        "--archive",
        path_str(&archive),
        "--create-dir",
    ])
    .expect(0)
    .mentions("archived globex");
    assert_eq!(mode(&archive), 0o700, "the archive folder");
    assert_eq!(
        mode(&db.dir.join("archive")),
        0o700,
        "its parent, created too"
    );
    let names = files_in(&archive);
    assert_eq!(names.len(), 2, "{names:?}");
    for n in names {
        assert_eq!(mode(&archive.join(&n)), 0o600, "{n}");
    }
}

#[test]
fn planted_links_and_existing_records_are_refused_before_anything_is_written() {
    let db = TestDb::new("filelinks");
    db.run(&["create", "acme"]).expect(0);
    let before = db.snapshot();
    // A dangling link where the dump goes would have pg_dump write wherever it points.
    let target = db.dir.join("attacker-owned.dump");
    let link = db.dir.join("link.dump");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    db.run(&["backup", "acme", "-o", path_str(&link)])
        .expect(2)
        .mentions("is a symbolic link");
    assert!(!target.exists(), "the dump was written through the link");

    // A link where the record goes would overwrite another file with the JSON.
    let victim = db.dir.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let file = db.dir.join("acme.dump");
    std::os::unix::fs::symlink(&victim, db.dir.join("acme.dump.json")).unwrap();
    db.run(&["backup", "acme", "-o", path_str(&file)])
        .expect(2)
        .mentions("acme.dump.json is a symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!file.exists());

    // An existing record (of another backup) is not overwritten either.
    let other = db.dir.join("other.dump");
    std::fs::write(db.dir.join("other.dump.json"), "{}").unwrap();
    db.run(&["backup", "acme", "-o", path_str(&other)])
        .expect(2)
        .mentions("other.dump.json already exists");
    assert!(!other.exists());
    assert_eq!(
        std::fs::read_to_string(db.dir.join("other.dump.json")).unwrap(),
        "{}"
    );

    // A folder that does not exist.
    db.run(&[
        "backup",
        "acme",
        "-o",
        path_str(&db.dir.join("missing/acme.dump")),
    ])
    .expect(2)
    .mentions("does not exist");
    assert_eq!(db.snapshot(), before);
    assert_eq!(
        files_in(&db.dir),
        vec![
            "acme.dump.json",
            "link.dump",
            "other.dump.json",
            "victim.txt"
        ]
    );
}

#[test]
fn a_missing_archive_folder_is_bad_input_and_nothing_is_dropped() {
    let db = TestDb::new("filearchive");
    db.run(&["create", "acme", "globex"]).expect(0);
    let before = db.snapshot();
    let missing = db.dir.join("archive");
    db.run(&["drop", "acme", "--yes", "--archive", path_str(&missing)])
        .expect(2)
        .mentions("does not exist")
        .mentions("--create-dir")
        .mentions("nothing was dropped");
    assert!(!missing.exists());
    let not_a_dir = db.dir.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    db.run(&["drop", "acme", "--yes", "--archive", path_str(&not_a_dir)])
        .expect(2)
        .mentions("is not a folder");
    assert_eq!(db.snapshot(), before);
}

/// The application holds an ACCESS EXCLUSIVE lock on one of acme's tables.
fn hold_lock(db: &TestDb) -> std::process::Child {
    let mut holder = psql_session(db);
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(
            b"BEGIN; LOCK TABLE tenant_acme.employees IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);\n",
        )
        .unwrap();
    let started = Instant::now();
    while db.scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
          WHERE c.relname = 'employees' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    ) != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the lock was never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    holder
}

#[test]
fn a_backup_behind_an_application_lock_gives_up_and_leaves_no_file() {
    let db = TestDb::new("filelock");
    db.run(&["create", "acme", "globex"]).expect(0);
    let mut holder = hold_lock(&db);
    let file = db.dir.join("acme.dump");
    let started = Instant::now();
    db.run(&[
        "backup",
        "acme",
        "-o",
        path_str(&file),
        "--lock-timeout",
        "1s",
    ])
    .expect(1)
    .mentions("locked for more than 1 s");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "backup must end by its deadline"
    );
    assert!(files_in(&db.dir).is_empty(), "{:?}", files_in(&db.dir));

    let before = db.snapshot();
    let archive = db.dir.join("archive");
    std::fs::create_dir(&archive).unwrap();
    db.run(&[
        "drop",
        "acme",
        "--yes",
        "--archive",
        path_str(&archive),
        "--lock-timeout",
        "1s",
    ])
    .expect(1)
    .mentions("nothing was dropped");
    assert!(files_in(&archive).is_empty(), "{:?}", files_in(&archive));
    assert_eq!(db.snapshot(), before);
    // The application lets go (its session ends); nothing blocks the rerun.
    db.query(
        "SELECT pg_terminate_backend(l.pid, 10000) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
          WHERE c.relname = 'employees' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    db.run(&["backup", "acme", "-o", path_str(&file)]).expect(0);
}

#[test]
fn drop_purges_the_tenants_migration_history_and_keeps_the_record() {
    let db = TestDb::new("droppurge");
    db.run(&["create", "acme", "globex"]).expect(0);
    let count = |slug: &str| {
        db.scalar(&format!(
            "SELECT count(*) FROM public.tenant_migrations WHERE slug = '{slug}'"
        ))
    };
    assert_eq!(count("acme"), "7");
    db.run(&["drop", "acme", "--yes"]).expect(0);
    assert_eq!(count("acme"), "0");
    assert_eq!(count("globex"), "7");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_drops WHERE slug = 'acme'"),
        "1"
    );
}
