//! Output: a closed pipe ends a command quietly, untrusted text is escaped, counts agree
//! with their nouns, and the README's tour runs as written.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Runs tenantctl with its stdout's reader gone before it writes a byte (as when `head`
/// has already exited): every write to stdout gets EPIPE, whatever the output's size.
fn run_stdout_closed(db: &TestDb, args: &[&str]) -> Run {
    let mut child = db
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenantctl starts");
    drop(child.stdout.take());
    Run::from(child.wait_with_output().expect("tenantctl ends"))
}

/// `tenantctl ARGS | head -1` in a real shell: the first line, tenantctl's own exit code
/// (PIPESTATUS) and its stderr.
fn head_one(db: &TestDb, args: &[&str]) -> (String, Run) {
    let err = db.dir.join(format!("head-{}.err", args.join("_")));
    let tenantctl = db.cmd();
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(r#"err=$1; shift; "$@" 2>"$err" | head -1; exit "${PIPESTATUS[0]}""#)
        .arg("head_one")
        .arg(&err)
        .arg(tenantctl.get_program())
        .args(args)
        .current_dir(&db.dir)
        .stdin(Stdio::null());
    // tenantctl's environment, as TestDb::cmd sets it (and removes what it removes).
    for (k, v) in tenantctl.get_envs() {
        match v {
            Some(v) => bash.env(k, v),
            None => bash.env_remove(k),
        };
    }
    let out = bash.output().expect("bash runs");
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    (first, run)
}

/// Registry rows for `n` tenants, written directly: `status` and `list` read only the
/// registry, and creating thousands of real tenants would take a minute.
fn register_many(db: &TestDb, n: usize) {
    db.run(&["init"]).expect(0);
    db.query(&format!(
        "INSERT INTO public.tenants (slug, schema_name, state, version) \
         SELECT 'bulk-' || lpad(i::text, 5, '0'), 'tenant_bulk-' || lpad(i::text, 5, '0'), 'active', 7 \
           FROM generate_series(1, {n}) i"
    ));
}

fn assert_quiet_success(r: &Run, what: &str) {
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, ""),
        "{what} with stdout closed: exit code and stderr"
    );
}

#[test]
fn head_one_of_a_listing_larger_than_the_pipe_exits_0_with_nothing_on_stderr() {
    let db = TestDb::new("headone");
    register_many(&db, 4000);
    for args in [
        &["list"][..],
        // Over 50 tenants plain status is a summary; --all streams every row.
        &["status", "--all"],
        &["list", "--format", "json"],
        &["status", "--format", "json"],
    ] {
        // More than a pipe buffer (64 KiB), so the pipe really closes while tenantctl writes.
        let full = db.run(args);
        full.expect(0);
        assert!(full.stdout.len() > 64 * 1024, "{args:?} printed too little");
        let (first, r) = head_one(&db, args);
        assert_quiet_success(&r, &format!("{args:?} | head -1"));
        assert_eq!(
            first,
            full.stdout.lines().next().unwrap().to_string() + "\n"
        );
    }
}

#[test]
fn every_command_ends_quietly_when_nobody_reads_its_output() {
    let db = TestDb::new("epipe");
    db.run(&["create", "acme", "globex", "initech"]).expect(0);
    for args in [
        &["list"][..],
        &["list", "--format", "json"],
        &["status"],
        &["status", "--format", "json"],
        &["status", "--check"],
        &["verify"],
        &["verify", "--format", "json"],
        &["migrate"],
        &["migrate", "--format", "json"],
        &["init"],
        &["init", "--format", "json"],
        &["completions", "bash"],
        &["man"],
        &["--help"],
    ] {
        assert_quiet_success(&run_stdout_closed(&db, args), &format!("{args:?}"));
    }
    // The work goes on when nobody reads the report: every tenant is created or dropped,
    // not only the ones before the first write.
    let r = run_stdout_closed(&db, &["create", "--format", "json", "one", "two"]);
    assert_quiet_success(&r, "create");
    let r = run_stdout_closed(&db, &["drop", "--yes", "acme", "globex", "one"]);
    assert_quiet_success(&r, "drop");
    assert_eq!(db.tenant_schemas(), vec!["tenant_initech", "tenant_two"]);
    // A failure still says so: the exit code does not depend on the reader.
    let r = run_stdout_closed(&db, &["status", "nobody"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown tenant nobody"), "{}", r.stderr);
}

#[test]
fn a_migration_run_with_stdout_and_stderr_closed_finishes_every_tenant() {
    let db = TestDb::new("epipe2");
    create_tenants(&db, 6);
    let next = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    // `migrate 2>&1 | head -1`: the per-tenant progress lines on stderr meet a closed pipe.
    let mut child = db
        .cmd()
        .arg("--migrations")
        .arg(&next)
        .args(["migrate", "--concurrency", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenantctl starts");
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().expect("tenantctl ends");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenants WHERE version = 8 AND state = 'active'"),
        "6"
    );
}

#[test]
fn a_write_error_other_than_a_closed_pipe_fails_the_run() {
    let db = TestDb::new("devfull");
    db.run(&["create", "acme"]).expect(0);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = db.cmd().arg("list").stdout(full).output().unwrap();
    let r = Run::from(out);
    r.expect(1)
        .mentions("error: cannot write the output to stdout: No space left on device");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// What a terminal would obey: C0 controls but newline (and tab, which `list` uses as its
/// separator), DEL and C1 controls.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect()
}

fn assert_no_raw_controls(r: &Run, what: &str) {
    assert_eq!(
        (raw_controls(&r.stdout), raw_controls(&r.stderr)),
        (vec![], vec![]),
        "{what}: raw control characters\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout.escape_debug(),
        r.stderr.escape_debug()
    );
}

/// A terminal title sequence, a BEL and a C1 CSI, as tenant data may carry them.
const HOSTILE_SQL: &str = r"E'\x1b]0;pwned\x07\u009b31m'";
const HOSTILE_RAW: &str = "\x1b]0;pwned\x07\u{9b}31m";
const HOSTILE_SHOWN: &str = r"\x1b]0;pwned\x07\u{9b}31m";

#[test]
fn server_messages_quoting_escape_sequences_are_shown_escaped() {
    let db = TestDb::new("escapes");
    db.run(&["create", "acme", "globex"]).expect(0);
    // A unique violation whose detail quotes the hostile value.
    let dup = db.migrations_with(
        "dup",
        &[(
            "V8__dup.sql",
            &format!(
                "CREATE TABLE u (name text UNIQUE);\nINSERT INTO u VALUES ({HOSTILE_SQL}), ({HOSTILE_SQL});\n"
            ),
        )],
    );
    let r = db.run_with(&dup, &["migrate", "acme"]);
    r.expect(1).mentions("duplicate key value");
    assert_no_raw_controls(&r, "migrate");
    // In the table, in the failure line on stdout, in the progress line on stderr.
    assert!(r.stdout.matches(HOSTILE_SHOWN).count() >= 2, "{}", r.stdout);
    assert!(r.stderr.contains(HOSTILE_SHOWN), "{}", r.stderr);

    // last_error, read back from the registry by status.
    let r = db.run_with(&dup, &["status"]);
    r.expect(0).mentions(HOSTILE_SHOWN);
    assert_no_raw_controls(&r, "status");
    // JSON carries the exact text, every control character escaped by JSON's own rules.
    let r = db.run_with(&dup, &["status", "--format", "json"]);
    assert_no_raw_controls(&r, "status --format json");
    let last_error = r.json()["tenants"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last_error.contains(HOSTILE_RAW), "{last_error:?}");

    // A migration that raises the hostile text, during create.
    let raise = db.migrations_with(
        "raise",
        &[(
            "V8__raise.sql",
            &format!("DO $$ BEGIN RAISE EXCEPTION '%', {HOSTILE_SQL}; END $$;\n"),
        )],
    );
    let r = db.run_with(&raise, &["create", "initech"]);
    r.expect(1).mentions(HOSTILE_SHOWN);
    assert_no_raw_controls(&r, "create");
    let r = db.run_with(&raise, &["create", "--format", "json", "initech"]);
    assert_no_raw_controls(&r, "create --format json");

    // A table name (anyone with CREATE can choose one) quoted in a verify finding.
    db.query(r#"CREATE TABLE tenant_globex.U&"\001b]0;t\0007" (); GRANT SELECT ON tenant_globex.U&"\001b]0;t\0007" TO PUBLIC"#);
    let r = db.run(&["verify", "globex"]);
    r.expect(1).mentions(r"\x1b]0;t\x07");
    assert_no_raw_controls(&r, "verify");

    // A registry row edited by hand (schema_name has no character rule): list and status.
    db.query(&format!(
        "INSERT INTO public.tenants (slug, schema_name, state) VALUES ('odd', {}, 'active')",
        HOSTILE_SQL.replacen("E'", "E'tenant_", 1)
    ));
    for args in [&["list"][..], &["status", "odd"]] {
        let r = db.run(args);
        r.expect(0).mentions(&format!("tenant_{HOSTILE_SHOWN}"));
        assert_no_raw_controls(&r, &format!("{args:?}"));
    }

    // An error that ends the whole command, on stderr and in its JSON document.
    let dir = format!("/nonexistent/{HOSTILE_RAW}");
    let r = db.run_with(&dir, &["status"]);
    assert_ne!(r.code, 0);
    r.mentions(HOSTILE_SHOWN);
    assert_no_raw_controls(&r, "an error of the whole command");
    let r = db.run_with(&dir, &["status", "--format", "json"]);
    assert_no_raw_controls(&r, "an error of the whole command, as JSON");
    assert!(r.json()["error"].as_str().unwrap().contains(HOSTILE_RAW));
}

#[test]
fn counts_agree_with_their_nouns() {
    let db = TestDb::new("plurals");
    db.run(&["status"])
        .expect(0)
        .mentions("0 tenants, latest version 7");
    db.run(&["create", "acme"])
        .expect(0)
        .mentions("create: 1 tenant: 1 applied, 0 up to date, 0 failed, 0 skipped");
    db.run(&["status"])
        .expect(0)
        .mentions("1 tenant, latest version 7, 0 not active");
    db.run(&["verify"])
        .expect(0)
        .mentions("verify: 1 tenant checked, 0 findings");
    db.run(&["create", "globex"]).expect(0);
    db.query("CREATE SCHEMA tenant_lost1; CREATE SCHEMA tenant_lost2");
    db.run(&["verify"])
        .expect(1)
        .mentions("verify: 2 tenants checked, 2 findings");
    db.query("DROP SCHEMA tenant_lost2");
    db.run(&["verify"])
        .expect(1)
        .mentions("verify: 2 tenants checked, 1 finding\n");
    db.query("DROP SCHEMA tenant_lost1");
    db.run(&["migrate"])
        .expect(0)
        .mentions("migrate: 2 tenants: 0 applied, 2 up to date");
    let next = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    db.run_with(&next, &["migrate", "--canary", "1"])
        .expect(0)
        .mentions("migrate: canary: 1 tenant first");
    db.run(&["create", "acme", "globex"])
        .expect(2)
        .mentions("tenants acme, globex already exist; nothing was created");
    db.run(&["status", "nobody", "noone"])
        .expect(2)
        .mentions("unknown tenants nobody, noone;");
    db.run(&["status", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody;");
}

/// Every `tenantctl create` line of the README's tour runs as written.
#[test]
fn the_readme_tour_creates_run_as_written() {
    let db = TestDb::new("tour");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tour = readme
        .split("## A short tour")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has a tour");
    let creates: Vec<Vec<String>> = tour
        .lines()
        .filter_map(|l| l.strip_prefix("tenantctl create "))
        .map(|l| shell_words(l.split(" #").next().unwrap()))
        .collect();
    assert!(!creates.is_empty(), "the tour creates no tenant");
    let before = db.snapshot();
    for words in &creates {
        let mut args = vec!["create"];
        args.extend(words.iter().map(String::as_str));
        db.run(&args).expect(0);
    }
    assert_ne!(db.snapshot(), before);
    // A display name given in the tour is the one stored (the tour names the slug first).
    for words in &creates {
        if let Some(i) = words.iter().position(|w| w == "--name") {
            let stored = db.scalar(&format!(
                "SELECT display_name FROM public.tenants WHERE slug = '{}'",
                words[0]
            ));
            assert_eq!(stored, words[i + 1]);
        }
    }
}

#[test]
fn name_with_several_slugs_is_refused_and_changes_nothing() {
    let db = TestDb::new("namemany");
    db.run(&["init"]).expect(0);
    let before = db.snapshot();
    db.run(&["create", "acme", "globex", "--name", "Acme"])
        .expect(2)
        .mentions("--name applies to a single tenant, and 2 were given; nothing was created")
        .mentions("tenantctl create SLUG --name NAME");
    assert_eq!(db.snapshot(), before);
}

/// Words of a command line as a shell splits them: blanks separate, double or single
/// quotes group (enough for the README's examples).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}
