//! PgBouncer in transaction pooling mode in front of the test server, for the tests of the
//! application routing pattern (docs/application-routing.md). It listens on loopback only,
//! on a free port, runs as an unprivileged user (PgBouncer refuses root; as root we run it
//! as `postgres`, the user the test server runs as), and is stopped when the guard drops,
//! whatever the test's outcome.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{admin_url, query, TestDb};

/// A running PgBouncer; killed and its folder removed on drop.
pub struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

/// One database entry of the pooler: `alias` leads to the test's database through at most
/// `pool_size` server connections.
pub struct Pool<'a> {
    pub alias: &'a str,
    pub pool_size: u32,
}

impl Pgbouncer {
    /// Starts PgBouncer in front of `db` for the login roles `users`, whose SCRAM secrets
    /// (read from pg_authid) make its auth_file: clients log in with their own passwords and
    /// PgBouncer logs in to the server with the same SCRAM keys.
    pub fn start(db: &TestDb, users: &[&str], pools: &[Pool]) -> Pgbouncer {
        let bin = binary();
        let dir = db.dir.join("pgbouncer");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("userlist.txt"), auth_file(users)).unwrap();
        let as_root = is_root();
        // Bound-then-released ports can be taken in between: try a few.
        for _ in 0..3 {
            let port = free_port();
            std::fs::write(dir.join("pgbouncer.ini"), config(db, &dir, port, pools)).unwrap();
            let _ = std::fs::remove_file(dir.join("pgbouncer.log"));
            if as_root {
                hand_over_to_postgres(&dir);
            }
            // setpriv execs PgBouncer in its place: as `postgres` when we are root, and
            // killed with the test's thread even if the test binary itself is killed.
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL"]);
            if as_root {
                cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
            }
            let child = cmd
                .arg("--")
                .arg(&bin)
                .arg(dir.join("pgbouncer.ini"))
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut bouncer = Pgbouncer {
                child,
                dir: dir.clone(),
                port,
            };
            if bouncer.wait_ready() {
                return bouncer;
            }
            // Exited (most likely the port was taken meanwhile); the guard cleans up.
        }
        panic!(
            "pgbouncer did not start; its log:\n{}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        );
    }

    /// A connection string through the pooler to `alias` as `user`.
    pub fn url(&self, alias: &str, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{alias}",
            self.port
        )
    }

    /// PgBouncer's log so far, for a failing assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// True once the port accepts connections; false when the process exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pgbouncer did not listen within 15 s; its log:\n{}",
            self.log()
        );
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        // The child is PgBouncer itself (setpriv execs it), so this stops it for sure.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pgbouncer binary: $TENANTCTL_TEST_PGBOUNCER, PATH, or Debian's /usr/sbin/pgbouncer.
fn binary() -> PathBuf {
    let candidates = std::env::var_os("TENANTCTL_TEST_PGBOUNCER")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.join("pgbouncer")),
        )
        .chain([PathBuf::from("/usr/sbin/pgbouncer")]);
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "pgbouncer is not installed: run scripts/need-pgbouncer.sh as root (make test does), \
         or apt-get install pgbouncer"
    );
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn hand_over_to_postgres(dir: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("chown runs")
        .success();
    assert!(ok, "cannot hand {} to the postgres user", dir.display());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `"user" "SCRAM-SHA-256$..."` lines from pg_authid (the server stores SCRAM secrets).
fn auth_file(users: &[&str]) -> String {
    let mut text = String::new();
    for user in users {
        let secret = query(
            &admin_url(),
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"),
        )
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_else(|| panic!("role {user} has no password"));
        assert!(secret.starts_with("SCRAM-SHA-256$"), "{user}: {secret}");
        text.push_str(&format!("\"{user}\" \"{secret}\"\n"));
    }
    text
}

/// The server's host and port, from the admin URL (postgres://u:p@HOST:PORT/db).
fn server_address() -> (String, String) {
    let url = admin_url();
    let after_at = url.rsplit_once('@').expect("admin URL with credentials").1;
    let hostport = after_at.split('/').next().unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (host.to_string(), port.to_string())
}

fn config(db: &TestDb, dir: &Path, port: u16, pools: &[Pool]) -> String {
    let (host, server_port) = server_address();
    let mut ini = String::from("[databases]\n");
    for p in pools {
        ini.push_str(&format!(
            "{} = host={host} port={server_port} dbname={} pool_size={}\n",
            p.alias, db.name, p.pool_size
        ));
    }
    ini.push_str(&format!(
        "[pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         max_client_conn = 200\n\
         server_tls_sslmode = disable\n\
         ignore_startup_parameters = extra_float_digits\n\
         logfile = {dir}/pgbouncer.log\n",
        dir = dir.display()
    ));
    ini
}
