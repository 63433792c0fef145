//! `tenantctl psql SLUG`: psql inside one tenant, the password never on a command line
//! (real server, the binary, the real psql).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn psql_runs_in_the_tenants_schema_and_passes_its_exit_code_on() {
    let db = TestDb::new("psql_schema");
    db.run(&["create", "acme", "st-marys"]).expect(0);
    let r = db.run(&[
        "psql",
        "st-marys",
        "--",
        "-X",
        "-A",
        "-t",
        "-c",
        "select current_schema()",
    ]);
    r.expect(0);
    assert_eq!(r.stdout, "tenant_st-marys\n");
    // Without `--` too; unqualified names are the tenant's tables.
    db.query("INSERT INTO tenant_acme.departments (name) VALUES ('one')");
    let r = db.run(&[
        "psql",
        "acme",
        "-X",
        "-A",
        "-t",
        "-c",
        "select count(*) from departments",
    ]);
    r.expect(0);
    assert_eq!(r.stdout, "1\n");
    std::fs::write(db.dir.join("q.sql"), "select name from departments;\n").unwrap();
    let r = db.run(&["psql", "acme", "--", "-X", "-A", "-t", "-f", "q.sql"]);
    r.expect(0);
    assert_eq!(r.stdout, "one\n");
    // psql's own exit code: 1 for a failed -c, 3 for a failed script with ON_ERROR_STOP.
    db.run(&["psql", "acme", "--", "-X", "-c", "select 1/0"])
        .expect(1)
        .mentions("division by zero");
    std::fs::write(db.dir.join("bad.sql"), "select 1/0;\n").unwrap();
    db.run(&[
        "psql",
        "acme",
        "--",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        "bad.sql",
    ])
    .expect(3);
}

#[test]
fn with_per_tenant_roles_psql_runs_as_the_tenants_role() {
    let db = TestDb::new("psql_role");
    let (app, _) = db.role("app");
    db.query(&format!("ALTER ROLE \"{app}\" NOINHERIT"));
    let p = format!("{}_", db.name);
    db.config(&format!(
        "[tenants]\nschema_prefix = \"{p}\"\napp_role = \"{app}\"\nper_tenant_roles = true\n"
    ));
    db.run(&["create", "acme"]).expect(0);
    let r = db.run(&[
        "psql",
        "acme",
        "--",
        "-X",
        "-A",
        "-t",
        "-c",
        "select current_user || ' ' || current_schema()",
    ]);
    r.expect(0);
    assert_eq!(r.stdout, format!("{p}acme {p}acme\n"));
}

/// The pid of a process whose parent is `parent` and whose name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid: Option<u32> = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) && comm.ends_with(&format!("({name}")) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn the_password_never_reaches_psqls_command_line() {
    let Some(password) = admin_password() else {
        panic!("the test server has a password (with-postgres.sh sets one)");
    };
    let db = TestDb::new("psql_secret");
    db.run(&["create", "acme"]).expect(0);
    let child = db
        .cmd()
        .args(["psql", "acme", "--", "-X", "-c", "select pg_sleep(2)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let cmdline_of = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\0', " ")
    };
    // tenantctl first runs `psql --version` to find it; the session is the one with -c.
    let (psql, cmdline) = loop {
        if let Some(pid) = child_named(child.id(), "psql") {
            let cmdline = cmdline_of(pid);
            if cmdline.contains("pg_sleep") {
                break (pid, cmdline);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "psql never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !cmdline.contains(&password),
        "password on the command line: {cmdline}"
    );
    // It went through the environment instead, which only the same user can read.
    let environ = std::fs::read(format!("/proc/{psql}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains(&format!("PGPASSWORD={password}")));
    finish_within(child, Duration::from_secs(30)).expect(0);
}

#[test]
fn without_psql_or_with_an_unknown_tenant_it_is_refused() {
    let db = TestDb::new("psql_missing");
    db.run(&["create", "acme"]).expect(0);
    let r = Run::from(
        db.cmd()
            .env("TENANTCTL_PSQL", "/nonexistent/psql")
            .args(["psql", "acme", "--", "-c", "select 1"])
            .output()
            .unwrap(),
    );
    r.expect(2).mentions("cannot find psql");
    db.run(&["psql", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody");
}
