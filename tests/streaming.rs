//! Streamed fleet reads (issue 14): `status`, `list` and a no-op `migrate` write their
//! JSON documents as the registry rows arrive, so their memory does not grow with the
//! fleet, and say exactly what they said when they held every row. Needs the second
//! cluster that scripts/with-postgres.sh starts (a tenant elsewhere).

mod common;

use std::process::Command;

use common::*;

/// A registry of `n` tenants filled by SQL (as scripts/fleet-measure.sh does), each current
/// at version 7 with an empty schema, on top of one tenant made by tenantctl.
fn fleet(db: &TestDb, n: usize) {
    db.run(&["create", "seed0"]).expect(0);
    db.query(&format!(
        "INSERT INTO public.tenants (slug, schema_name, state, version, migrations_digest) \
         SELECT 'f' || i, 'tenant_f' || i, 'active', 7, \
                (SELECT migrations_digest FROM public.tenants WHERE slug = 'seed0') \
           FROM generate_series(1, {n}) i; \
         DO $$ BEGIN FOR i IN 1..{n} LOOP \
           EXECUTE format('CREATE SCHEMA %I', 'tenant_f' || i); END LOOP; END $$;"
    ));
}

/// The peak resident memory of one tenantctl run, in KiB (by GNU time, as
/// scripts/fleet-measure.sh measures it), and the run's stdout.
fn peak_kib(db: &TestDb, args: &[&str]) -> (u64, String) {
    let report = db.dir.join("time.txt");
    let c = db.cmd();
    let program = c.get_program().to_owned();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(program)
        .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed
        .current_dir(&db.dir)
        .stdin(std::process::Stdio::null());
    let run = Run::from(timed.output().expect("/usr/bin/time runs tenantctl"));
    run.expect(0);
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text.trim().lines().last().unwrap().trim().parse().unwrap();
    (kib, run.stdout)
}

/// 1.2 KiB a tenant was the cost of holding the rows (docs/performance.md): 24,000 more
/// tenants would add about 28 MiB. Streamed, the peak stays within a few MiB.
#[test]
fn json_and_no_op_migrate_do_not_grow_with_the_fleet() {
    if !std::path::Path::new("/usr/bin/time").exists() {
        panic!("this test measures memory with /usr/bin/time (Debian's `time` package)");
    }
    let small = TestDb::new("stream_small");
    let large = TestDb::new("stream_large");
    fleet(&small, 1_000);
    fleet(&large, 25_000);
    let mut grows = Vec::new();
    for args in [
        &["status", "--format", "json"][..],
        &["list", "--format", "json"],
        &["migrate", "--format", "json"],
        &["migrate", "--dry-run", "--format", "json"],
        &["migrate"],
    ] {
        let (s, out_s) = peak_kib(&small, args);
        let (l, out_l) = peak_kib(&large, args);
        // Both did the whole work: every tenant is in the larger document.
        if args.contains(&"json") {
            let n = |out: &str| {
                serde_json::from_str::<serde_json::Value>(out).unwrap()["tenants"]
                    .as_array()
                    .unwrap()
                    .len()
            };
            assert_eq!((n(&out_s), n(&out_l)), (1_001, 25_001), "{args:?}");
        } else {
            assert!(
                out_l.contains("25001 tenants: 0 applied, 25001 up to date"),
                "{out_l}"
            );
        }
        if l >= s + 8 * 1024 {
            grows.push(format!(
                "tenantctl {args:?} took {l} KiB at 25,001 tenants against {s} KiB at 1,001"
            ));
        }
    }
    assert!(
        grows.is_empty(),
        "memory grows with the fleet:\n{}",
        grows.join("\n")
    );
}

/// The elsewhere-tenants of `status --format json` are checked where they live before their
/// rows are written, and the document keeps its shape and its slug order.
#[test]
fn streamed_status_and_list_keep_their_documents() {
    let db = TestDb::new("stream_docs");
    let second = SecondDb::new("stream_docs");
    db.config(&second.server_toml("eu"));
    let eu = format!("eu-{}", std::process::id());
    let eu_gone = format!("eu-gone-{}", std::process::id());
    db.run(&["create", "acme", "zeta", "--label", "ring=beta"])
        .expect(0);
    db.run(&["create", "omega"]).expect(0);
    db.run(&[
        "create",
        &eu,
        &eu_gone,
        "--server",
        "eu",
        "--label",
        "ring=beta",
    ])
    .expect(0);
    second.query(&format!("DROP SCHEMA \"tenant_{eu_gone}\" CASCADE"));
    db.query("DROP SCHEMA tenant_zeta CASCADE");

    let run = db.run(&["status", "--format", "json"]);
    run.expect(0);
    assert!(
        run.stdout
            .starts_with("{\"latest_version\":7,\"tenants\":[{\"slug\":\"acme\",\"schema\":"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches('\n').count(),
        1,
        "one line, one document"
    );
    let doc = run.json();
    let rows = doc["tenants"].as_array().unwrap();
    let seen: Vec<(&str, bool, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["slug"].as_str().unwrap(),
                r["schema_exists"].as_bool().unwrap(),
                r["server"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("acme", true, "home"),
            (eu.as_str(), true, "eu"),
            (eu_gone.as_str(), false, "eu"),
            ("omega", true, "home"),
            ("zeta", false, "home"),
        ]
    );
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        11,
        "slug, schema, state, server, database, version, pending, last_error, migrated_at, \
         schema_exists, ahead: {keys:?}"
    );

    // A selector streams only what it picks; named tenants are answered the same way.
    let picked = db.run(&["status", "-l", "ring=beta", "--format", "json"]);
    let named = db.run(&["status", "acme", "zeta", &eu, &eu_gone, "--format", "json"]);
    assert_eq!(picked.expect(0).stdout, named.expect(0).stdout);

    let list = db.run(&["list", "--format", "json"]);
    list.expect(0);
    assert!(
        list.stdout.starts_with(
            "{\"tenants\":[{\"slug\":\"acme\",\"schema\":\"tenant_acme\",\"state\":\"active\",\
             \"server\":\"home\""
        ),
        "{}",
        list.stdout
    );
    let slugs: Vec<String> = list.json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        slugs,
        vec![
            "acme".to_string(),
            eu,
            eu_gone,
            "omega".into(),
            "zeta".into()
        ]
    );
    let empty = db.run(&["list", "-l", "ring=none", "--format", "json"]);
    assert_eq!(empty.expect(0).stdout, "{\"tenants\":[]}\n");
}

/// A no-op `migrate` over the fleet (streamed) says exactly what the full run says when every
/// tenant is named (named tenants take the full run): the same counts, rows and exit code,
/// with failed (schema missing), skipped (being dropped), suspended and elsewhere tenants,
/// over more tenants than the text table shows.
#[test]
fn a_streamed_no_op_migrate_reports_what_the_full_run_reports() {
    let db = TestDb::new("stream_noop");
    let second = SecondDb::new("stream_noop");
    db.config(&second.server_toml("eu"));
    let eu = format!("eu-noop-{}", std::process::id());
    db.run(&["create", &eu, "--server", "eu", "--label", "placed=eu"])
        .expect(0);
    fleet(&db, 60);
    db.query(
        "DROP SCHEMA tenant_f7; \
         UPDATE public.tenants SET state = 'dropping' WHERE slug = 'f12'; \
         UPDATE public.tenants SET state = 'suspended' WHERE slug = 'f13'",
    );
    let slugs = |sql: &str| -> Vec<String> {
        let mut s: Vec<String> = db
            .query(sql)
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        s.sort();
        s
    };
    let all = slugs("SELECT slug FROM public.tenants");
    // A dry run refuses tenants elsewhere: it is compared over the home ones.
    let home = slugs("SELECT slug FROM public.tenants WHERE server_name = 'home'");
    for (picked, named, extra) in [
        (&[][..], &all, &[][..]),
        (&["-l", "!placed"][..], &home, &["--dry-run"][..]),
    ] {
        for format in ["text", "json"] {
            let mut args = vec!["migrate", "--format", format];
            args.extend_from_slice(extra);
            let streamed = db.run(&[&args[..], picked].concat());
            args.extend(named.iter().map(String::as_str));
            let full = db.run(&args);
            assert_eq!(streamed.code, 1, "{}", streamed.all());
            assert_eq!(
                (streamed.code, &streamed.stdout, &streamed.stderr),
                (full.code, &full.stdout, &full.stderr),
                "{args:?}"
            );
            if format == "json" {
                assert_eq!(
                    streamed.json()["summary"],
                    serde_json::json!({"applied": 0, "up_to_date": named.len() - 2,
                                       "failed": 1, "skipped": 1})
                );
            } else {
                streamed.mentions(&format!(
                    "{} tenants: 0 applied, {} up to date, 1 failed, 1 skipped",
                    named.len(),
                    named.len() - 2
                ));
            }
        }
    }
    // The streamed run recorded the missing schema as the full run does.
    assert_eq!(
        db.scalar("SELECT state FROM public.tenants WHERE slug = 'f7'"),
        "failed"
    );
    // With one session (a pool of two connections) too.
    db.query("UPDATE public.tenants SET state = 'active', last_error = NULL WHERE slug = 'f7'");
    let child = spawn_tenantctl(&db, &["migrate", "--concurrency", "1"]);
    finish_within(child, std::time::Duration::from_secs(60))
        .expect(1)
        .mentions("0 applied, 60 up to date, 1 failed, 1 skipped");
    assert_eq!(
        db.scalar("SELECT state FROM public.tenants WHERE slug = 'f7'"),
        "failed"
    );
}
