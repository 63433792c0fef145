//! Connecting like libpq: the Unix socket in every form and sslmode, PG* variables filling
//! what a URL leaves out, the password file, the default user, and the retry while the
//! server is not accepting connections yet (on a throwaway cluster of this test's own).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn socket_dir() -> String {
    std::env::var("TENANTCTL_TEST_PG_SOCKET").expect("run through make test")
}

fn port() -> String {
    std::env::var("TENANTCTL_TEST_PG_PORT").expect("run through make test")
}

/// The admin password of the test server (its TCP logins use SCRAM).
fn admin_pw() -> String {
    admin_password().expect("the test server's URL has a password")
}

/// Every byte but unreserved ones percent-encoded, as a socket folder must be in a URL host.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// tenantctl with no DATABASE_URL (the harness clears the PG* variables) and a HOME of
/// its own, so that no ~/.pgpass or ~/.postgresql/root.crt of the machine plays a part.
fn bare(db: &TestDb, env: &[(&str, &str)]) -> Command {
    let home = db.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut c = db.cmd();
    c.env_remove("DATABASE_URL").env("HOME", &home);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run_bare(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Run {
    Run::from(bare(db, env).args(args).output().unwrap())
}

#[test]
fn the_unix_socket_connects_in_every_form_and_sslmode_without_tls() {
    let db = TestDb::new("socket");
    let (dir, port) = (socket_dir(), port());
    // (connection string, PG* variables): each way of naming the socket folder.
    type Form<'a> = (Option<String>, Vec<(&'a str, &'a str)>);
    let forms: Vec<Form> = vec![
        (None, vec![("PGHOST", &dir), ("PGPORT", &port)]),
        (
            Some(format!("host={dir} port={port} dbname={}", db.name)),
            vec![],
        ),
        (
            Some(format!(
                "postgres://postgres@{}:{port}/{}",
                encode(&dir),
                db.name
            )),
            vec![],
        ),
        (
            Some(format!("postgres:///{}?host={dir}&port={port}", db.name)),
            vec![],
        ),
    ];
    // No password anywhere: TCP logins need one, so success means the socket was used.
    // verify-ca/verify-full without any root certificate, and require, succeed only
    // because no TLS is attempted on a socket (the server offers none there).
    for (url, env) in &forms {
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let mut env = env.clone();
            env.extend([
                ("PGSSLMODE", mode),
                ("PGUSER", "postgres"),
                ("PGDATABASE", db.name.as_str()),
            ]);
            let mut args = vec!["list", "--connect-timeout", "2"];
            if let Some(u) = url {
                args.extend(["--database-url", u]);
            }
            let r = run_bare(&db, &env, &args);
            assert_eq!(r.code, 0, "{url:?} {env:?}:\n{}", r.all());
        }
    }
    assert_eq!(
        db.scalar("SELECT to_regclass('public.tenants') IS NOT NULL"),
        "t"
    );
}

#[test]
fn the_default_user_is_the_effective_users_account_not_dollar_user() {
    let db = TestDb::new("defuser");
    let account = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    // A role named like the account that runs the tests (superuser in this throwaway
    // cluster, so that it may install the registry).
    query(
        &admin_url(),
        &format!(
            "DO $$ BEGIN CREATE ROLE \"{account}\" LOGIN SUPERUSER; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ),
    );
    let (dir, port) = (socket_dir(), port());
    let env = [
        ("PGHOST", dir.as_str()),
        ("PGPORT", port.as_str()),
        ("PGDATABASE", db.name.as_str()),
        ("USER", "somebody-else"),
        ("LOGNAME", "somebody-else"),
    ];
    run_bare(&db, &env, &["list"]).expect(0);
    // And the database defaults to the user name: not this test's database, so the
    // message names the account twice.
    let without_db = [env[0], env[1], env[3], env[4]];
    let r = run_bare(&db, &without_db, &["list", "--connect-timeout", "1"]);
    r.expect(1)
        .mentions(&format!("{account}@{dir}:{port}/{account}"));
    assert!(!r.all().contains("somebody-else"), "{}", r.all());
}

#[test]
fn pg_variables_fill_what_a_url_leaves_out() {
    let db = TestDb::new("pgfill");
    let (port, pw, name) = (port(), admin_pw(), db.name.clone());
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        // No port in the URL: PGPORT, not 5432.
        (
            format!("postgres://postgres:{pw}@127.0.0.1/{name}"),
            vec![("PGPORT", &port)],
        ),
        // No user, or an empty one: PGUSER.
        (
            format!("postgres://:{pw}@127.0.0.1:{port}/{name}"),
            vec![("PGUSER", "postgres")],
        ),
        (
            format!("postgres://127.0.0.1:{port}/{name}"),
            vec![("PGUSER", "postgres"), ("PGPASSWORD", &pw)],
        ),
        // No host: PGHOST.
        (
            format!("postgres://postgres:{pw}@:{port}/{name}"),
            vec![("PGHOST", "127.0.0.1")],
        ),
        (
            format!("postgres:///{name}"),
            vec![
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", &port),
                ("PGUSER", "postgres"),
                ("PGPASSWORD", &pw),
            ],
        ),
    ];
    for (url, env) in &cases {
        let r = run_bare(
            &db,
            env,
            &["list", "--connect-timeout", "2", "--database-url", url],
        );
        assert_eq!(r.code, 0, "{env:?}:\n{}", r.all());
    }
}

/// A role whose password needs the password file's escapes (`:` and `\`).
fn escaped_role(db: &TestDb) -> (String, String) {
    let role = format!("pp_{}", db.name);
    let password = format!("se:cr\\et_{}", db.name);
    query(
        &admin_url(),
        &format!(
            "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"
        ),
    );
    (role, password)
}

fn write_private(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_password_file_supplies_the_password_like_libpq() {
    let db = TestDb::new("pgpass");
    let (role, password) = escaped_role(&db);
    // The registry, installed by the admin and readable by the role, so `list` succeeds.
    db.run(&["init"]).expect(0);
    db.query(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\""
    ));
    let port = port();
    let url = format!("postgres://{role}@127.0.0.1:{port}/{}", db.name);
    let line = format!(
        "# tenantctl test\nother:{port}:*:*:wrong\n127.0.0.1:{port}:{}:{role}:{}\n",
        db.name,
        password.replace('\\', "\\\\").replace(':', "\\:")
    );
    let list = |env: &[(&str, &str)]| {
        let r = run_bare(
            &db,
            env,
            &["list", "--connect-timeout", "1", "--database-url", &url],
        );
        assert!(!r.all().contains(&password), "{}", r.all());
        r
    };
    // No password anywhere: the server asks for one (exit 1).
    list(&[]).expect(1).mentions("password missing");

    // PGPASSFILE, mode 0600, the password behind escapes.
    let file = db.dir.join("pgpass");
    write_private(&file, &line, 0o600);
    let file_s = path_str(&file).to_string();
    list(&[("PGPASSFILE", &file_s)]).expect(0);

    // ~/.pgpass in HOME, with a `*` host.
    let home = db.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let star = format!(
        "*:{port}:*:{role}:{}\n",
        password.replace('\\', "\\\\").replace(':', "\\:")
    );
    write_private(&home.join(".pgpass"), &star, 0o600);
    list(&[]).expect(0);

    // A file group or others can read is ignored, with libpq's warning.
    write_private(&file, &line, 0o640);
    list(&[("PGPASSFILE", &file_s)])
        .expect(1)
        .mentions(&format!(
            "WARNING: password file \"{file_s}\" has group or world access; permissions should be u=rw (0600) or less"
        ))
        .mentions("password missing");

    // A wrong password from the file: libpq's note says where it came from.
    write_private(&file, &format!("*:*:*:*:wrong\n{line}"), 0o600);
    list(&[("PGPASSFILE", &file_s)])
        .expect(1)
        .mentions("password authentication failed")
        .mentions(&format!("password retrieved from file \"{file_s}\""));
    // A password given in the environment wins over the file.
    list(&[("PGPASSFILE", &file_s), ("PGPASSWORD", &password)]).expect(0);
    write_private(&file, "*:*:*:*:wrong\n", 0o600);
    list(&[("PGPASSFILE", &file_s), ("PGPASSWORD", &password)]).expect(0);
}

#[test]
fn a_passfile_keyword_reaches_pg_dump_too() {
    let db = TestDb::new("passkw");
    let file = db.dir.join("pgpass");
    write_private(
        &file,
        &format!("127.0.0.1:{}:*:postgres:{}\n", port(), admin_pw()),
        0o600,
    );
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?passfile={}",
        port(),
        db.name,
        encode(path_str(&file))
    );
    let run = |args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend(args);
        run_bare(&db, &[], &all)
    };
    run(&["create", "acme"]).expect(0);
    let dump = db.dir.join("acme.dump");
    run(&["backup", "acme", "-o", path_str(&dump)]).expect(0);
    assert!(dump.exists());
}

/// A PostgreSQL cluster of this test's own, on a Unix socket only, for states the shared
/// server must not be put in. Stopped and deleted on drop.
struct Cluster {
    dir: PathBuf,
    bin: String,
    port: u16,
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: then the server runs as `postgres`.
fn as_server_user(program: &str) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]).current_dir("/");
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// initdb into a folder of its own; the server listens on a Unix socket in that folder
    /// only (or where `extra_conf` says instead).
    fn init(label: &str, extra_conf: &str) -> Cluster {
        let bin = std::env::var("TENANTCTL_TEST_PG_BIN").expect("run through make test");
        let dir = std::env::temp_dir().join(format!("tenantctl-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if as_root() {
            let ok = Command::new("chown")
                .args(["postgres:", path_str(&dir)])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
        };
        let data = cluster.data();
        let out = as_server_user(&format!("{}/initdb", cluster.bin))
            .args(["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = format!(
            "listen_addresses = ''\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n{extra_conf}\n",
            cluster.port,
            path_str(&cluster.dir)
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{data}/postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        cluster
    }

    fn data(&self) -> String {
        format!("{}/data", path_str(&self.dir))
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = format!("{}/server.log", path_str(&self.dir));
        let out = as_server_user(&format!("{}/pg_ctl", self.bin))
            .args(["-D", &self.data(), "-l", &log, "-w"])
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// tenantctl against this cluster's socket, as postgres (trusted locally).
    fn tenantctl(&self, db: &TestDb, args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut c = bare(
            db,
            &[
                ("PGHOST", path_str(&self.dir)),
                ("PGPORT", &port),
                ("PGUSER", "postgres"),
                ("PGDATABASE", "postgres"),
            ],
        );
        c.args(args);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if Path::new(&format!("{}/postmaster.pid", self.data())).exists() {
            let _ = as_server_user(&format!("{}/pg_ctl", self.bin))
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_server_not_accepting_connections_yet_is_retried_within_the_connect_timeout() {
    let db = TestDb::new("startup");
    // A standby with hot_standby off answers every login with SQLSTATE 57P03 ("the
    // database system is not accepting connections") until it is promoted: the state of
    // a server starting up, for as long as the test needs.
    let cluster = Cluster::init("startup", "hot_standby = off");
    std::fs::write(format!("{}/standby.signal", cluster.data()), "").unwrap();
    cluster.pg_ctl(&["start"]);

    // Within a short budget it gives up, naming the server's answer.
    let r = Run::from(
        cluster
            .tenantctl(&db, &["list", "--connect-timeout", "1"])
            .output()
            .unwrap(),
    );
    r.expect(1)
        .mentions("not accepting connections")
        .mentions("57P03");

    // Promoted while tenantctl retries: it connects and succeeds.
    let started = Instant::now();
    let mut child = cluster
        .tenantctl(&db, &["list", "--connect-timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let early = child.try_wait().unwrap();
    cluster.pg_ctl(&["promote"]);
    let out = Run::from(child.wait_with_output().unwrap());
    assert!(
        early.is_none(),
        "tenantctl gave up on 57P03 instead of retrying:\n{}",
        out.all()
    );
    out.expect(0);
    assert!(started.elapsed() < Duration::from_secs(25));
}

#[test]
fn sudo_u_postgres_tenantctl_list_works_through_the_default_socket() {
    let debian = Path::new("/var/run/postgresql");
    assert!(
        debian.is_dir(),
        "Debian's postgresql package makes /var/run/postgresql (make test installs it)"
    );
    // A server with a socket in libpq's default folder too (on a free port, so that it
    // meets no other server there).
    let cluster = Cluster::init(
        "sudolist",
        "unix_socket_directories = '/var/run/postgresql'",
    );
    cluster.pg_ctl(&["start"]);
    let port = cluster.port.to_string();
    // Run as the server's own account, as `sudo -u postgres tenantctl list` would: no host,
    // no user, no database given; sslmode require is ignored on the socket, as by libpq.
    let mut c = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_tenantctl")]);
        c
    } else {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
        c.env("PGUSER", "postgres");
        c
    };
    for var in ["DATABASE_URL", "TENANTCTL_CONFIG"]
        .iter()
        .chain(tenantctl::domain::settings::PG_VARS.iter())
    {
        c.env_remove(var);
    }
    let r = Run::from(
        c.args(["list", "--connect-timeout", "2"])
            .env("PGPORT", &port)
            .env("PGSSLMODE", "require")
            .env("TENANTCTL_MIGRATIONS", repo().join("migrations"))
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    r.expect(0);
    let registry = Command::new(format!("{}/psql", cluster.bin))
        .args([
            "-h",
            "/var/run/postgresql",
            "-p",
            &port,
            "-U",
            "postgres",
            "-XtAc",
        ])
        .arg("SELECT to_regclass('public.tenants') IS NOT NULL")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&registry.stdout).trim(), "t");
}
