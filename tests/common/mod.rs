//! Test harness: a fresh database per test on the server `make test` started
//! (scripts/with-postgres.sh exports its DATABASE_URL), and the real tenantctl binary.
#![allow(dead_code)]

pub mod citus;
pub mod pgbouncer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The server's admin URL. Tests need a real PostgreSQL: run them through `make test`.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect(
            "integration tests need a PostgreSQL server: run `make test` (it starts one), \
         or set DATABASE_URL to a superuser connection of a disposable server",
        )
}

/// Runs SQL through the simple-query protocol and returns every row as text.
pub fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    try_query(url, sql).unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
}

pub fn try_query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let msgs = client.simple_query(sql).await.map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        })?;
        drop(client);
        let _ = task.await;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    })
}

/// The first column of the first row.
pub fn scalar(url: &str, sql: &str) -> String {
    query(url, sql)
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default()
}

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub dir: PathBuf,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t_{}_{}_{}", label.replace('-', "_"), std::process::id(), n);
        let admin = admin_url();
        query(&admin, &format!("CREATE DATABASE \"{name}\""));
        let url = replace_dbname(&admin, &name);
        let dir = std::env::temp_dir().join(format!("tenantctl-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDb { name, url, dir }
    }

    /// A tenantctl command against this database, run in an empty folder (so no
    /// tenants.toml is picked up) with the repository's example migrations.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
        let ours = ["DATABASE_URL", "TENANTCTL_CONFIG", "TENANTCTL_MIGRATIONS"];
        for var in ours
            .iter()
            .chain(tenantctl::domain::settings::PG_VARS.iter())
        {
            c.env_remove(var);
        }
        if let Some(pw) = second_admin_url().as_deref().and_then(password_of) {
            c.env(SECOND_PASSWORD_ENV, pw);
        }
        c.env("DATABASE_URL", &self.url)
            .env("TENANTCTL_MIGRATIONS", repo().join("migrations"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        c
    }

    /// Runs tenantctl with `args` and returns its output.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("tenantctl runs"))
    }

    /// Runs tenantctl with `--migrations dir` before `args`.
    pub fn run_with(&self, migrations: impl AsRef<Path>, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.arg("--migrations").arg(migrations.as_ref()).args(args);
        Run::from(c.output().expect("tenantctl runs"))
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        query(&self.url, sql)
    }

    pub fn scalar(&self, sql: &str) -> String {
        scalar(&self.url, sql)
    }

    /// Everything a failed command must leave alone: the schemas, and the registry's rows.
    pub fn snapshot(&self) -> String {
        let mut s = format!(
            "{:?}",
            self.query("SELECT nspname FROM pg_namespace ORDER BY 1")
        );
        for t in ["tenants", "tenant_migrations", "tenant_drops"] {
            let exists = self.scalar(&format!("SELECT to_regclass('public.{t}') IS NOT NULL"));
            if exists == "t" {
                s.push_str(&format!(
                    "{:?}",
                    self.query(&format!("SELECT * FROM public.{t} ORDER BY 1"))
                ));
            }
        }
        s
    }

    /// A copy of the example migrations plus `extra` files, in a folder of this test's.
    pub fn migrations_with(&self, label: &str, extra: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(repo().join("migrations")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        for (name, sql) in extra {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        dir
    }

    /// Writes a tenants.toml into this test's folder and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.join("tenants.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A login role unique to this test (roles are cluster-wide), with a password.
    pub fn role(&self, label: &str) -> (String, String) {
        let role = format!("{}_{}", label, self.name);
        let password = format!("pw_{}", self.name);
        query(&admin_url(), &format!("DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"));
        let url = admin_url();
        let (scheme_and_creds, rest) = url.split_once('@').unwrap();
        let scheme = &scheme_and_creds[..scheme_and_creds.find("//").unwrap() + 2];
        let host_and_db = replace_dbname(&format!("{scheme}x@{rest}"), &self.name);
        (
            role.clone(),
            host_and_db.replacen("x@", &format!("{role}:{password}@"), 1),
        )
    }

    /// Schemas created for tenants (those starting with the default prefix).
    pub fn tenant_schemas(&self) -> Vec<String> {
        self.query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%' ORDER BY 1")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = try_query(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn replace_dbname(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').expect("URL with a database name");
    format!("{}/{}{}", &base[..cut], db, query)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A finished tenantctl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    /// Every tenantctl run of every test passes through here, so every error path the tests
    /// reach is checked for the server's password.
    fn from(o: Output) -> Run {
        let run = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        if let Some(pw) = admin_password() {
            assert!(
                !run.all().contains(&pw),
                "the server password leaked into the output:\n{}",
                run.all()
            );
        }
        run
    }
}

/// The variable every tenantctl run of the tests gets the second server's password in, for
/// `password_env` of a `[servers.NAME]` table.
pub const SECOND_PASSWORD_ENV: &str = "TENANTCTL_TEST_SECOND_PASSWORD";

/// The second server's admin URL (scripts/with-postgres.sh starts it), if there is one.
pub fn second_admin_url() -> Option<String> {
    std::env::var("TENANTCTL_TEST_SECOND_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn password_of(url: &str) -> Option<String> {
    let creds = url.split("//").nth(1)?.split('@').next()?;
    creds.split_once(':').map(|(_, pw)| pw.to_string())
}

/// `url` without its password (for tenants.toml, which must not hold one).
pub fn without_password(url: &str) -> String {
    match password_of(url) {
        Some(pw) => url.replacen(&format!(":{pw}@"), "@", 1),
        None => url.to_string(),
    }
}

/// A database of its own for one test on the SECOND server, dropped at the end, with the
/// databases the test names through `own_database` (tenants' own databases).
pub struct SecondDb {
    pub name: String,
    pub url: String,
    own: std::sync::Mutex<Vec<String>>,
}

impl SecondDb {
    pub fn new(label: &str) -> SecondDb {
        let admin = second_admin_url().expect(
            "tests of placements need a second PostgreSQL server: run them through \
             scripts/with-postgres.sh (it exports TENANTCTL_TEST_SECOND_URL)",
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("s_{}_{}_{}", label.replace('-', "_"), std::process::id(), n);
        query(&admin, &format!("CREATE DATABASE \"{name}\""));
        let url = replace_dbname(&admin, &name);
        SecondDb {
            name,
            url,
            own: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A `[servers.NAME]` table for this database (the password comes from the environment).
    pub fn server_toml(&self, server: &str) -> String {
        format!(
            "[servers.{server}]\nurl = \"{}\"\npassword_env = \"{SECOND_PASSWORD_ENV}\"\n",
            without_password(&self.url)
        )
    }

    /// Remembers a database the test makes tenantctl create on this server, to drop it.
    pub fn own_database(&self, name: &str) -> String {
        self.own.lock().unwrap().push(name.to_string());
        name.to_string()
    }

    /// The URL of another database of this server.
    pub fn url_of(&self, db: &str) -> String {
        replace_dbname(&self.url, db)
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        query(&self.url, sql)
    }

    pub fn scalar(&self, sql: &str) -> String {
        scalar(&self.url, sql)
    }

    /// Whether database `name` exists on this server.
    pub fn database_exists(&self, name: &str) -> bool {
        self.scalar(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        )) == "1"
    }
}

impl Drop for SecondDb {
    fn drop(&mut self) {
        let Some(admin) = second_admin_url() else {
            return;
        };
        let own = self.own.lock().unwrap().clone();
        for db in own.iter().chain(std::iter::once(&self.name)) {
            let _ = try_query(
                &admin,
                &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
            );
        }
    }
}

/// The password in the admin URL (random per test server), if it has one.
pub fn admin_password() -> Option<String> {
    let url = admin_url();
    let creds = url.split("//").nth(1)?.split('@').next()?;
    creds
        .split_once(':')
        .map(|(_, pw)| pw.to_string())
        .filter(|pw| pw.len() >= 8)
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn mentions(&self, needle: &str) -> &Run {
        assert!(
            self.all().contains(needle),
            "output lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Creates tenants t000, t001, ... with the example migrations (version 7).
pub fn create_tenants(db: &TestDb, n: usize) {
    let slugs: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let mut args = vec!["create", "--concurrency", "8"];
    args.extend(slugs.iter().map(String::as_str));
    db.run(&args).expect(0);
}

/// Over every tenant schema: (history rows at version 8, schemas with the V8 column
/// `wellness_logs.resting_heart_rate`). Asserts that no schema is half-migrated and that no
/// migration was recorded twice.
pub fn at_eight(db: &TestDb) -> (usize, usize) {
    let rows = db.query(
        "SELECT n.nspname, \
                (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                  WHERE c.relnamespace = n.oid AND c.relname = 'wellness_logs' AND a.attname = 'resting_heart_rate') \
           FROM pg_namespace n WHERE n.nspname LIKE 'tenant\\_%'",
    );
    let (mut history, mut column) = (0, 0);
    for r in rows {
        let schema = r[0].clone().unwrap();
        let h: usize = db
            .scalar(&format!(
                "SELECT count(*) FROM \"{schema}\".refinery_schema_history WHERE version = 8"
            ))
            .parse()
            .unwrap();
        let c: usize = r[1].clone().unwrap().parse().unwrap();
        assert!(h <= 1, "{schema} has {h} history rows for version 7");
        assert_eq!(h, c, "{schema}: history and schema disagree (half-applied)");
        history += h;
        column += c;
    }
    (history, column)
}

/// A psql session on the test's database that runs what the test writes to its stdin, for
/// holding locks or transactions open while tenantctl runs.
pub fn psql_session(db: &TestDb) -> Child {
    Command::new("psql")
        .args([db.url.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql starts (make test puts it on PATH)")
}

/// tenantctl started in the background with `args`, its output captured.
pub fn spawn_tenantctl(db: &TestDb, args: &[&str]) -> Child {
    db.cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenantctl starts")
}

/// `tenantctl migrate` started in the background, its output captured.
pub fn spawn_migrate(db: &TestDb, migrations: &Path, concurrency: &str) -> Child {
    let dir = path_str(migrations);
    spawn_tenantctl(
        db,
        &["--migrations", dir, "migrate", "--concurrency", concurrency],
    )
}

/// Waits for a tenantctl started in the background, at most `limit`: a run that hangs is
/// killed and the test fails, instead of hanging the suite.
pub fn finish_within(mut child: Child, limit: std::time::Duration) -> Run {
    let started = std::time::Instant::now();
    while child
        .try_wait()
        .expect("tenantctl can be waited for")
        .is_none()
    {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = Run::from(child.wait_with_output().unwrap());
            panic!(
                "tenantctl did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                out.stdout, out.stderr
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

/// Waits until a session other than tenantctl's holds tenant `schema`'s advisory lock, and
/// returns that session's pid. In this test's database only: pg_locks shows every
/// database's, and parallel tests use the same schema names.
pub fn wait_for_tenant_lock_holder(db: &TestDb, schema: &str) -> String {
    for _ in 0..200 {
        let pid = db.scalar(&format!(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND classid = {}::bigint::oid \
               AND objid = (hashtext('{schema}')::bigint & 4294967295)::oid",
            tenantctl::registry::locks::LOCK_CLASS
        ));
        if !pid.is_empty() {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nobody took the lock of {schema}");
}

/// Polls `what` until it is true, at most a minute; `why` names what never happened.
pub fn wait_until(why: &str, mut what: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !what() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "never: {why}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
