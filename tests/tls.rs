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

fn run_with(db: &TestDb, url: &str, env: &[(&str, &str)]) -> Run {
    let mut c = db.cmd();
    c.args(["list", "--connect-timeout", "2"])
        .env("DATABASE_URL", url);
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
    // PGSSLROOTCERT is honoured; without any root the system store does not know our CA.
    run_with(
        &db,
        &tls_db_url("localhost", "?sslmode=verify-full"),
        &[("PGSSLROOTCERT", &ca)],
    )
    .expect(0);
    run_with(&db, &tls_db_url("localhost", "?sslmode=verify-full"), &[])
        .expect(1)
        .mentions("certificate");
    run_with(&db, &tls_db_url("localhost", "?sslmode=bogus"), &[])
        .expect(2)
        .mentions("invalid sslmode 'bogus'");
}

#[test]
fn scram_channel_binding_works_over_our_tls() {
    // The test server authenticates TCP connections with SCRAM; with channel binding
    // required, the login only succeeds when the TLS stream hands tokio-postgres the hash
    // of the server's certificate (tls-server-end-point).
    use tenantctl::connect::SslMode;
    let mut cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let tls = tenantctl::tls::connector(SslMode::Require, None).unwrap();
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
