//! Rollout and operations: labels, selectors, suspend and resume
//! (docs/rollout-and-operations.md).

mod common;

use common::*;

fn slugs_of(doc: &serde_json::Value) -> Vec<String> {
    doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_string())
        .collect()
}

fn listed(db: &TestDb, sel: &str) -> Vec<String> {
    slugs_of(
        &db.run(&["list", "-l", sel, "--format", "json"])
            .expect(0)
            .json(),
    )
}

#[test]
fn labels_and_selectors_pick_tenants_for_list_status_and_migrate() {
    let db = TestDb::new("selectors");
    db.run(&["create", "alpha", "--label", "plan=pro"])
        .expect(0);
    db.run(&[
        "create",
        "beta",
        "gamma",
        "--label",
        "ring=beta",
        "--label",
        "plan=free",
    ])
    .expect(0);
    db.run(&["label", "gamma", "plan=pro", "example.com/region=eu"])
        .expect(0)
        .mentions("gamma: example.com/region=eu,plan=pro,ring=beta");
    db.run(&["label", "beta", "plan-", "tier="]).expect(0);
    assert_eq!(
        db.scalar("SELECT labels::text FROM public.tenants WHERE slug = 'beta'"),
        r#"{"ring": "beta", "tier": ""}"#
    );

    assert_eq!(listed(&db, "ring=beta,plan!=free"), ["beta", "gamma"]);
    assert_eq!(listed(&db, "ring==beta,plan=pro"), ["gamma"]);
    assert_eq!(listed(&db, "plan in (pro, enterprise)"), ["alpha", "gamma"]);
    assert_eq!(listed(&db, "plan notin (pro)"), ["beta"]);
    assert_eq!(listed(&db, "!ring"), ["alpha"]);
    assert_eq!(listed(&db, "tier"), ["beta"]);
    assert_eq!(listed(&db, "example.com/region=eu"), ["gamma"]);
    assert!(listed(&db, "ring=alpha").is_empty());
    let doc = db
        .run(&["status", "-l", "ring=beta", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(slugs_of(&doc), ["beta", "gamma"]);

    // migrate -l brings only the selected tenants to V8.
    let dir = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    db.run_with(&dir, &["migrate", "--selector", "plan=pro"])
        .expect(0);
    assert_eq!(
        db.query("SELECT slug, version FROM public.tenants ORDER BY slug"),
        vec![
            vec![Some("alpha".into()), Some("8".into())],
            vec![Some("beta".into()), Some("7".into())],
            vec![Some("gamma".into()), Some("8".into())],
        ]
    );
}

#[test]
fn bad_labels_and_selectors_are_refused_and_change_nothing() {
    let db = TestDb::new("badlabels");
    db.run(&["create", "acme", "--label", "ring=beta"])
        .expect(0);
    let before = db.snapshot();
    db.run(&["label", "acme", "ring=a b"])
        .expect(2)
        .mentions("label value 'a b'");
    db.run(&["label", "acme", "bad_=x"])
        .expect(2)
        .mentions("label key 'bad_'");
    db.run(&["label", "acme", "ring"])
        .expect(2)
        .mentions("key=value to set");
    db.run(&["label", "nobody", "ring=x"])
        .expect(2)
        .mentions("unknown tenant nobody");
    db.run(&["create", "other", "--label", "ring-"])
        .expect(2)
        .mentions("write key=value");
    db.run(&["list", "-l", "ring in (a"])
        .expect(2)
        .mentions("unbalanced parentheses");
    db.run(&["status", "-l", "ring=x;DROP"])
        .expect(2)
        .mentions("invalid value");
    db.run(&["migrate", "acme", "-l", "ring=beta"])
        .expect(2)
        .mentions("name tenants or give -l/--selector, not both");
    assert_eq!(db.snapshot(), before);
}

/// The application reads one of the tenant's rows through its own login role.
fn app_reads(url: &str) -> Result<String, String> {
    try_query(
        url,
        "SELECT count(*)::text FROM tenant_acme.departments WHERE name = 'kept'",
    )
    .map(|rows| rows[0][0].clone().unwrap())
}

#[test]
fn suspend_takes_the_applications_access_away_and_resume_gives_exactly_it_back() {
    let db = TestDb::new("suspend");
    let (app, app_url) = db.role("app");
    let cfg = db.config(&format!("[tenants]\napp_role = \"{app}\"\n"));
    let cfg = path_str(&cfg);
    db.run(&["--config", cfg, "create", "acme", "other"])
        .expect(0);
    db.query("INSERT INTO tenant_acme.departments (name) VALUES ('kept')");
    // One privilege beyond the configured ones, to see resume restore it as it was.
    db.query(&format!(
        "GRANT CREATE ON SCHEMA tenant_acme TO \"{app}\" WITH GRANT OPTION"
    ));
    let acl = || db.scalar("SELECT nspacl::text FROM pg_namespace WHERE nspname = 'tenant_acme'");
    let acl_before = acl();
    let data =
        || db.scalar("SELECT string_agg(name, ',' ORDER BY name) FROM tenant_acme.departments");
    assert_eq!(app_reads(&app_url), Ok("1".into()));

    db.run(&[
        "--config",
        cfg,
        "suspend",
        "acme",
        "--reason",
        "unpaid invoice",
    ])
    .expect(0)
    .mentions("tenant acme is suspended");
    let refused = app_reads(&app_url).unwrap_err();
    assert!(
        refused.contains("permission denied for schema tenant_acme"),
        "{refused}"
    );
    assert_eq!(
        db.query("SELECT state FROM public.tenants ORDER BY slug"),
        vec![vec![Some("suspended".into())], vec![Some("active".into())]]
    );
    assert_eq!(
        db.scalar(
            "SELECT reason || '/' || (suspended_by = current_user) FROM public.tenant_suspensions"
        ),
        "unpaid invoice/true"
    );
    db.run(&["route", "acme"])
        .expect(1)
        .mentions("it is suspended");
    db.run(&["--config", cfg, "verify", "acme"]).expect(0);
    // Suspending twice is bad input and changes nothing.
    let before = db.snapshot();
    db.run(&["--config", cfg, "suspend", "acme"])
        .expect(2)
        .mentions("only an active or failed");
    db.run(&["--config", cfg, "resume", "other"])
        .expect(2)
        .mentions("not suspended");
    assert_eq!(db.snapshot(), before);

    // migrate keeps it current, and suspended.
    let dir = db.migrations_with("next", &[("V8__x.sql", "CREATE TABLE x (id int);")]);
    db.run_with(&dir, &["--config", cfg, "migrate"]).expect(0);
    assert_eq!(
        db.scalar("SELECT state || ' ' || version FROM public.tenants WHERE slug = 'acme'"),
        "suspended 8"
    );
    db.run_with(&dir, &["--config", cfg, "status", "--check"])
        .expect(0);
    // A privilege given back by hand behind the suspension's back is a finding.
    db.query(&format!("GRANT USAGE ON SCHEMA tenant_acme TO \"{app}\""));
    db.run_with(&dir, &["--config", cfg, "verify", "acme"])
        .expect(1)
        .mentions("suspended_reachable");
    db.query(&format!(
        "REVOKE USAGE ON SCHEMA tenant_acme FROM \"{app}\""
    ));

    db.run(&["--config", cfg, "resume", "acme"])
        .expect(0)
        .mentions("tenant acme is active");
    assert_eq!(
        acl(),
        acl_before,
        "exactly the previous privileges are back"
    );
    assert_eq!(app_reads(&app_url), Ok("1".into()));
    assert_eq!(data(), "kept");
    assert_eq!(
        db.scalar("SELECT count(*) FROM public.tenant_suspensions WHERE resumed_at IS NOT NULL"),
        "1"
    );
    db.run(&["route", "acme"]).expect(0);
}

fn outcomes(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["outcome"].as_str().unwrap().to_string(),
                t["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn max_failures_stops_starting_tenants_once_the_budget_is_spent() {
    let db = TestDb::new("budget");
    db.run(&["create", "t1", "t2", "t3", "t4", "t5"]).expect(0);
    let bad = db.migrations_with("bad", &[("V8__bad.sql", "SELECT 1/0;")]);
    for budget in ["2", "40%"] {
        let r = db.run_with(
            &bad,
            &[
                "migrate",
                "--max-failures",
                budget,
                "--concurrency",
                "1",
                "--format",
                "json",
            ],
        );
        r.expect(1);
        let got = outcomes(&r.json());
        let failed = got.iter().filter(|(o, _)| o == "failed").count();
        let skipped: Vec<&(String, String)> = got.iter().filter(|(o, _)| o == "skipped").collect();
        assert_eq!((failed, skipped.len()), (3, 2), "{budget}: {got:?}");
        assert!(
            skipped[0].1.contains(&format!(
                "more than 2 tenants failed (--max-failures {budget})"
            )),
            "{got:?}"
        );
    }
    // Skipped tenants keep their state; nothing of V8 anywhere.
    assert_eq!(db.scalar("SELECT max(version) FROM public.tenants"), "7");
    // create knows the budget too.
    let r = db.run_with(
        &bad,
        &[
            "create",
            "n1",
            "n2",
            "n3",
            "n4",
            "--max-failures",
            "1",
            "--concurrency",
            "1",
            "--format",
            "json",
        ],
    );
    r.expect(1);
    let got = outcomes(&r.json());
    assert_eq!(
        got.iter().filter(|(o, _)| o == "skipped").count(),
        2,
        "{got:?}"
    );

    let before = db.snapshot();
    db.run(&["migrate", "--fail-fast", "--max-failures", "1"])
        .expect(2)
        .mentions("cannot be used with");
    db.run(&["migrate", "--max-failures", "1.5"])
        .expect(2)
        .mentions("not a failure budget");
    assert_eq!(db.snapshot(), before);
}

#[test]
fn waves_roll_out_in_order_and_the_report_names_the_wave_that_stopped() {
    let db = TestDb::new("waves");
    db.run(&["create", "c1", "--label", "ring=canary"])
        .expect(0);
    db.run(&["create", "b1", "b2", "--label", "ring=beta"])
        .expect(0);
    db.run(&["create", "s1", "s2"]).expect(0);
    let dir = db.migrations_with(
        "next",
        &[(
            "V8__x.sql",
            "DO $$ BEGIN IF current_schema() = 'tenant_b1' THEN RAISE EXCEPTION 'boom in b1'; \
             END IF; END $$; CREATE TABLE x (id int);",
        )],
    );
    let version = |slug: &str| {
        db.scalar(&format!(
            "SELECT version FROM public.tenants WHERE slug = '{slug}'"
        ))
    };

    let before = db.snapshot();
    db.run_with(&dir, &["migrate", "--waves", "*", "ring=beta"])
        .expect(2)
        .mentions("'*' may only be the last wave");
    db.run_with(&dir, &["migrate", "c1", "--waves", "ring=beta"])
        .expect(2)
        .mentions("without SLUG arguments");
    assert_eq!(db.snapshot(), before);

    // No failure is allowed by default: b1 fails, b2 and the last wave never start.
    let r = db.run_with(
        &dir,
        &[
            "migrate",
            "--waves",
            "ring=canary",
            "ring=beta",
            "*",
            "--concurrency",
            "1",
            "--format",
            "json",
        ],
    );
    r.expect(1);
    let doc = r.json();
    let waves: Vec<(String, String, u64)> = doc["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["selector"].as_str().unwrap().to_string(),
                w["status"].as_str().unwrap().to_string(),
                w["failed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        waves,
        [
            ("ring=canary".into(), "completed".into(), 0),
            ("ring=beta".into(), "stopped".into(), 1),
            ("*".into(), "not_started".into(), 0),
        ]
    );
    assert_eq!(doc["stopped"]["wave"], 2);
    let reason = doc["stopped"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 tenant failed, more than the failure budget of 0"),
        "{reason}"
    );
    assert_eq!(
        ["c1", "b1", "b2", "s1", "s2"].map(version),
        ["8", "7", "7", "7", "7"]
    );

    // A budget of one lets the rollout go on past b1; the text report shows each wave.
    let r = db.run_with(
        &dir,
        &[
            "migrate",
            "--waves",
            "ring=canary",
            "ring=beta",
            "*",
            "--max-failures",
            "1",
            "--concurrency",
            "1",
        ],
    );
    r.expect(1)
        .mentions("wave 2 (ring=beta): 2 tenants, 1 failed, completed")
        .mentions("wave 3 (*): 2 tenants, 0 failed, completed");
    assert_eq!(
        ["c1", "b1", "b2", "s1", "s2"].map(version),
        ["8", "7", "8", "8", "8"]
    );

    // Tenants in no wave are left alone, and said so.
    db.run_with(&dir, &["migrate", "--waves", "ring=canary"])
        .expect(0)
        .mentions("4 tenants matched no wave and were left alone");
    assert_eq!(version("b1"), "7");
}

#[test]
fn status_over_a_large_fleet_opens_with_a_summary_and_all_lists_every_row() {
    let db = TestDb::new("fleetview");
    db.run(&["init"]).expect(0);
    // A registry filled by SQL: status reads the registry only (schemas show as missing).
    db.query(
        "INSERT INTO public.tenants (slug, schema_name, state, version, last_error) \
         SELECT 't' || lpad(i::text, 3, '0'), 'tenant_t' || lpad(i::text, 3, '0'), \
                CASE WHEN i <= 8 THEN 'failed' ELSE 'active' END, \
                CASE WHEN i <= 10 THEN 5 ELSE 7 END, \
                CASE WHEN i <= 5 THEN 'relation \"x\" already exists' \
                     WHEN i <= 8 THEN E'deadlock detected\\nDETAIL: t' || i END \
           FROM generate_series(1, 60) i",
    );
    let r = db.run(&["status"]);
    r.expect(0)
        .mentions("by version: 7: 50, 5: 10")
        .mentions("by state:   active: 52, failed: 8")
        .mentions("oldest pending: t001 at version 5 (2 pending)")
        .mentions("failures by error (2 distinct):")
        .mentions("       5  relation \"x\" already exists  (e.g. t001, t002, t003)")
        .mentions("       3  deadlock detected  (e.g. t006, t007, t008)")
        .mentions("60 tenants, latest version 7, 60 not active at the latest version");
    assert!(!r.all().contains("t060"), "no rows without --all");
    let all = db.run(&["status", "--all"]);
    all.expect(0);
    let rows = all.all().lines().filter(|l| l.starts_with('t')).count();
    assert_eq!(rows, 61, "a header and every tenant:\n{}", all.all());
    // A selector narrows the streamed view; few tenants get the table.
    db.query(
        "UPDATE public.tenants SET labels = '{\"ring\": \"beta\"}' WHERE slug IN ('t001', 't060')",
    );
    db.run(&["status", "-l", "ring=beta"])
        .expect(0)
        .mentions("t060")
        .mentions("2 tenants, latest version 7");
    db.run(&["status", "--check"]).expect(1);
}

#[test]
fn usage_matches_the_catalog_and_sorts_by_size() {
    let db = TestDb::new("usage");
    db.run(&["create", "acme", "globex", "initech"]).expect(0);
    db.run(&["label", "initech", "ring=beta"]).expect(0);
    db.query(
        "INSERT INTO tenant_acme.employees (email, full_name) \
         SELECT 'e' || i || '@example.org', repeat('x', 3000) || i FROM generate_series(1, 2000) i; \
         ANALYZE tenant_acme.employees",
    );
    let r = db.run(&["usage", "--format", "json"]);
    r.expect(0);
    let doc = r.json();
    let rows = doc["tenants"].as_array().unwrap();
    assert_eq!(rows[0]["slug"], "acme", "largest first");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let schema = row["schema"].as_str().unwrap();
        let total = db.scalar(&format!(
            "SELECT sum(pg_total_relation_size(oid)) FROM pg_class \
              WHERE relnamespace = '\"{schema}\"'::regnamespace AND relkind IN ('r', 'm')"
        ));
        assert_eq!(row["total_bytes"].to_string(), total, "{schema}");
        let parts = row["table_bytes"].as_i64().unwrap() + row["index_bytes"].as_i64().unwrap();
        assert_eq!(parts, row["total_bytes"].as_i64().unwrap(), "{schema}");
    }
    assert!(
        rows[0]["toast_bytes"].as_i64().unwrap() > 0,
        "wide rows went to TOAST"
    );
    assert_eq!(rows[0]["rows_estimate"], 2000);
    assert!(rows[0]["writes"].as_i64().unwrap() >= 2000);
    let top = db
        .run(&["usage", "--top", "1", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(slugs_of(&top), ["acme"]);
    let sel = db
        .run(&["usage", "-l", "ring=beta", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(slugs_of(&sel), ["initech"]);
    db.run(&["usage", "acme", "globex"])
        .expect(0)
        .mentions("2 tenants");
    db.run(&["usage", "nobody"])
        .expect(2)
        .mentions("unknown tenant nobody");
}

/// What a CI tool's parser reads in a report (tests/fixtures/check_report.py, with the
/// Debian packages `make test` installs: scripts/need-report-checkers.sh).
fn parsed(db: &TestDb, kind: &str, report: &str) -> serde_json::Value {
    let file = db.dir.join(format!("report.{kind}"));
    std::fs::write(&file, report).unwrap();
    let fixtures = repo().join("tests/fixtures");
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = std::process::Command::new(python)
        .arg(fixtures.join("check_report.py"))
        .arg(kind)
        .arg(&file)
        .arg(fixtures.join("junit.xsd"))
        .output()
        .expect("python3 runs (scripts/need-report-checkers.sh installs its packages)");
    assert!(
        out.status.success(),
        "{kind} report does not parse: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn junit_reports_validate_and_carry_each_failed_tenants_error() {
    let db = TestDb::new("junit");
    let r = db.run(&["create", "acme", "b1", "--format", "junit"]);
    r.expect(0);
    let doc = parsed(&db, "junit", &r.stdout);
    assert_eq!(
        (doc["tests"].as_u64(), doc["failures"].as_u64()),
        (Some(2), Some(0))
    );
    let dir = db.migrations_with(
        "next",
        &[(
            "V8__x.sql",
            "DO $$ BEGIN IF current_schema() = 'tenant_b1' THEN RAISE EXCEPTION 'boom <in> b1'; \
             END IF; END $$;",
        )],
    );
    let mut c = db.cmd();
    c.env("GITHUB_ACTIONS", "true")
        .arg("--migrations")
        .arg(&dir)
        .args(["migrate", "--format", "junit"]);
    let r = Run::from(c.output().unwrap());
    r.expect(1)
        .mentions("::error title=tenantctl migrate%3A b1::tenant b1 failed: ");
    let doc = parsed(&db, "junit", &r.stdout);
    assert_eq!(doc["failures"], 1);
    assert!(doc["cases"]["acme"]["failure"].is_null());
    let failure = doc["cases"]["b1"]["failure"].as_str().unwrap();
    assert!(failure.contains("boom <in> b1"), "{failure}");
    // Without GITHUB_ACTIONS, no annotation.
    let r = db.run_with(&dir, &["migrate", "--format", "junit"]);
    assert!(!r.stderr.contains("::error"), "{}", r.stderr);

    // verify: the tenant with a finding fails, the clean one passes.
    db.query("GRANT CREATE ON SCHEMA tenant_acme TO PUBLIC");
    let r = db.run(&["verify", "--format", "junit"]);
    r.expect(1);
    let doc = parsed(&db, "junit", &r.stdout);
    let failure = doc["cases"]["acme"]["failure"].as_str().unwrap();
    assert!(failure.contains("unexpected_privilege"), "{failure}");
    assert!(doc["cases"]["b1"]["failure"].is_null(), "{doc}");
    assert!(doc["cases"]["(database)"].is_object());

    // exec: a testcase per tenant, the failing one carrying its error.
    let r = db.run(&[
        "exec",
        "-c",
        "DO $$ BEGIN IF current_schema() = 'tenant_b1' THEN RAISE EXCEPTION 'exec <fails> in b1'; END IF; END $$",
        "--format",
        "junit",
    ]);
    r.expect(1);
    let doc = parsed(&db, "junit", &r.stdout);
    assert!(doc["cases"]["acme"]["failure"].is_null(), "{doc}");
    let failure = doc["cases"]["b1"]["failure"].as_str().unwrap();
    assert!(failure.contains("exec <fails> in b1"), "{failure}");
}

#[test]
fn prometheus_reports_parse_and_count_the_fleet() {
    let db = TestDb::new("prometheus");
    db.run(&["create", "acme", "globex", "initech"]).expect(0);
    db.query("UPDATE public.tenants SET version = 6, state = 'failed' WHERE slug = 'initech'");
    let r = db.run(&["status", "--format", "prometheus"]);
    r.expect(0);
    let m = parsed(&db, "prometheus", &r.stdout);
    assert_eq!(m["tenantctl_tenants"]["type"], "gauge");
    let samples = &m["tenantctl_tenants"]["samples"];
    assert_eq!(
        samples,
        &serde_json::json!([
            ["tenantctl_tenants", {"version": "6", "state": "failed"}, 1.0],
            ["tenantctl_tenants", {"version": "7", "state": "active"}, 2.0]
        ])
    );
    assert_eq!(
        m["tenantctl_tenant_version"]["samples"][1][1]["tenant"],
        "globex"
    );
    assert_eq!(m["tenantctl_tenant_version"]["samples"][2][2], 6.0);
    assert_eq!(m["tenantctl_latest_version"]["samples"][0][2], 7.0);
    assert_eq!(m["tenantctl_tenants_not_current"]["samples"][0][2], 1.0);
    db.run(&["status", "--format", "prometheus", "--check"])
        .expect(1);

    let r = db.run(&["usage", "--format", "prometheus"]);
    r.expect(0);
    let m = parsed(&db, "prometheus", &r.stdout);
    let total = db.scalar(
        "SELECT sum(pg_total_relation_size(oid)) FROM pg_class \
          WHERE relnamespace = 'tenant_acme'::regnamespace AND relkind IN ('r', 'm')",
    );
    let acme_total = m["tenantctl_tenant_size_bytes"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[1]["tenant"] == "acme" && s[1]["kind"] == "total")
        .unwrap()[2]
        .as_f64()
        .unwrap();
    assert_eq!(acme_total.to_string(), total);
    assert_eq!(m["tenantctl_tenant_writes"]["type"], "counter");

    // A format the command does not write is bad input, and nothing changes.
    let before = db.snapshot();
    db.run(&["migrate", "--format", "prometheus"])
        .expect(2)
        .mentions("--format prometheus is written by status and usage, not by migrate, which writes text or json or junit");
    db.run(&["status", "--format", "junit"])
        .expect(2)
        .mentions("not by status, which writes text or json or prometheus");
    db.run(&["drop", "acme", "--yes", "--format", "junit"])
        .expect(2);
    assert_eq!(db.snapshot(), before);
}

#[test]
fn verify_audits_only_the_selected_tenants() {
    let db = TestDb::new("verifysel");
    db.run(&["create", "acme", "--label", "ring=beta"])
        .expect(0);
    db.run(&["create", "globex"]).expect(0);
    db.query("GRANT CREATE ON SCHEMA tenant_globex TO PUBLIC");
    db.run(&["verify", "-l", "ring=beta"])
        .expect(0)
        .mentions("1 tenant checked");
    db.run(&["verify"]).expect(1).mentions("tenant_globex");
}
