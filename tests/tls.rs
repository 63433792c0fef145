//! TLS modes against the test server (ssl = on, a CA made by scripts/with-postgres.sh, a
//! server certificate for "localhost" only, and a database that refuses plaintext).

mod common;

use common::*;

fn tls_db_url(host: &str, extra: &str) -> String {
    let admin = admin_url();
    let _ = try_query(&admin, "CREATE DATABASE tls_only");
    let port = std::env::var("TENANTCTL_TEST_PG_PORT").unwrap();
    let creds = admin.split("//").nth(1).unwrap().split('@').next().unwrap();
    format!("postgres://{creds}@{host}:{port}/tls_only{extra}")
}

/// The test's own database over TCP, as the admin.
fn db_url(db: &TestDb, host: &str, extra: &str) -> String {
    let port = std::env::var("TENANTCTL_TEST_PG_PORT").unwrap();
    let admin = admin_url();
    let creds = admin.split("//").nth(1).unwrap().split('@').next().unwrap();
    format!("postgres://{creds}@{host}:{port}/{}{extra}", db.name)
}

/// `tenantctl list` with HOME in the test's folder (so that only the test decides whether
/// there is a ~/.postgresql/root.crt).
fn run_with(db: &TestDb, url: &str, env: &[(&str, &str)]) -> Run {
    let home = db.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut c = db.cmd();
    c.args(["list", "--connect-timeout", "2"])
        .env("DATABASE_URL", url)
        .env("HOME", &home);
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().unwrap())
}

#[test]
fn sslmodes_follow_libpq() {
    let db = TestDb::new("tls");
    let ca = std::env::var("TENANTCTL_TEST_CA").expect("run through make test");
    let password = admin_url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();

    // Plaintext is refused by this database, so a success below means TLS was used.
    let r = run_with(&db, &tls_db_url("127.0.0.1", "?sslmode=disable"), &[]);
    r.expect(1).mentions("no encryption");
    assert!(!r.all().contains(&password));
    run_with(&db, &tls_db_url("127.0.0.1", "?sslmode=require"), &[]).expect(0);
    run_with(&db, &tls_db_url("127.0.0.1", ""), &[]).expect(0); // prefer
                                                                // PGSSLMODE applies when the URL says nothing.
    run_with(
        &db,
        &tls_db_url("127.0.0.1", ""),
        &[("PGSSLMODE", "disable")],
    )
    .expect(1)
    .mentions("no encryption");

    // verify-full: the chain against sslrootcert, and the host name.
    run_with(
        &db,
        &tls_db_url(
            "localhost",
            &format!("?sslmode=verify-full&sslrootcert={ca}"),
        ),
        &[],
    )
    .expect(0);
    let r = run_with(
        &db,
        &tls_db_url(
            "127.0.0.1",
            &format!("?sslmode=verify-full&sslrootcert={ca}"),
        ),
        &[],
    );
    r.expect(1)
        .mentions("cannot connect")
        .mentions("certificate");
    assert!(
        r.all().contains("hostname") || r.all().contains("IP address"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains(&password));
    // verify-ca checks the chain only, so the IP address is accepted.
    run_with(
        &db,
        &tls_db_url("127.0.0.1", &format!("?sslmode=verify-ca&sslrootcert={ca}")),
        &[],
    )
    .expect(0);
    // PGSSLROOTCERT is honoured.
    run_with(
        &db,
        &tls_db_url("localhost", "?sslmode=verify-full"),
        &[("PGSSLROOTCERT", &ca)],
    )
    .expect(0);
    // allow: plaintext first, then TLS when the server refuses plaintext (as here).
    run_with(&db, &tls_db_url("127.0.0.1", "?sslmode=allow"), &[]).expect(0);
    run_with(&db, &tls_db_url("localhost", "?sslmode=bogus"), &[])
        .expect(2)
        .mentions("invalid sslmode 'bogus'");
}

#[test]
fn scram_channel_binding_works_over_our_tls() {
    // The test server authenticates TCP connections with SCRAM; with channel binding
    // required, the login only succeeds when the TLS stream hands tokio-postgres the hash
    // of the server's certificate (tls-server-end-point).
    use tenantctl::pg::connect::SslMode;
    let mut cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let tls =
        tenantctl::pg::tls::connector(SslMode::Require, &tenantctl::pg::tls::Roots::Unchecked)
            .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ssl = rt.block_on(async {
        let (client, conn) = cfg.connect(tls).await.expect("SCRAM-SHA-256-PLUS login");
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    });
    assert!(ssl);
}

/// A CA of its own, unrelated to the test server's.
fn other_ca(db: &TestDb) -> String {
    let key = db.dir.join("other-ca.key");
    let crt = db.dir.join("other-ca.crt");
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout", path_str(&key), "-out"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    path_str(&crt).to_string()
}

fn install_home_root(db: &TestDb, ca: &str) {
    let dir = db.dir.join("home/.postgresql");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(ca, dir.join("root.crt")).unwrap();
}

#[test]
fn verify_modes_without_a_root_certificate_are_refused_before_connecting() {
    let db = TestDb::new("tlsnoroot");
    let before = db.snapshot();
    for (mode, host) in [("verify-ca", "127.0.0.1"), ("verify-full", "localhost")] {
        let home_root = db.dir.join("home/.postgresql/root.crt");
        run_with(&db, &db_url(&db, host, &format!("?sslmode={mode}")), &[])
            .expect(2)
            .mentions(&format!(
                "root certificate file \"{}\" does not exist",
                home_root.display()
            ))
            .mentions("sslrootcert=system");
    }
    // The system's roots must be asked for; then only verify-full is allowed (libpq 16).
    run_with(
        &db,
        &db_url(&db, "localhost", "?sslmode=verify-ca&sslrootcert=system"),
        &[],
    )
    .expect(2)
    .mentions("weak sslmode \"verify-ca\" may not be used with sslrootcert=system");
    assert_eq!(db.snapshot(), before, "nothing may change on bad input");
    // sslrootcert=system alone means verify-full against the system's CAs, which do not
    // know the test server's CA.
    run_with(&db, &db_url(&db, "localhost", "?sslrootcert=system"), &[])
        .expect(1)
        .mentions("certificate failed verification");
    // ~/.postgresql/root.crt is the default root certificate, as in libpq.
    let ca = std::env::var("TENANTCTL_TEST_CA").expect("run through make test");
    install_home_root(&db, &ca);
    run_with(&db, &db_url(&db, "localhost", "?sslmode=verify-full"), &[]).expect(0);
}

#[test]
fn a_root_certificate_makes_require_check_the_chain() {
    let db = TestDb::new("tlsrequire");
    let ca = std::env::var("TENANTCTL_TEST_CA").expect("run through make test");
    let other = other_ca(&db);
    // require with a root certificate checks the chain (as verify-ca), not the name.
    run_with(
        &db,
        &db_url(
            &db,
            "127.0.0.1",
            &format!("?sslmode=require&sslrootcert={other}"),
        ),
        &[],
    )
    .expect(1)
    .mentions("certificate failed verification");
    run_with(
        &db,
        &db_url(
            &db,
            "127.0.0.1",
            &format!("?sslmode=require&sslrootcert={ca}"),
        ),
        &[],
    )
    .expect(0);
    // The same with the root certificate in ~/.postgresql/root.crt.
    install_home_root(&db, &other);
    run_with(&db, &db_url(&db, "127.0.0.1", "?sslmode=require"), &[])
        .expect(1)
        .mentions("certificate failed verification");
    // prefer falls back to plaintext when the check fails, as libpq does: accepted by
    // this database, refused by the one that requires TLS.
    run_with(&db, &db_url(&db, "127.0.0.1", "?sslmode=prefer"), &[]).expect(0);
    run_with(&db, &tls_db_url("127.0.0.1", "?sslmode=prefer"), &[])
        .expect(1)
        .mentions("no encryption");
    // A named root certificate that does not exist is refused, whatever the mode.
    run_with(
        &db,
        &db_url(
            &db,
            "127.0.0.1",
            "?sslmode=require&sslrootcert=%2Fnonexistent.crt",
        ),
        &[],
    )
    .expect(2)
    .mentions("root certificate file \"/nonexistent.crt\" does not exist");
}
