//! Turning settings into a PostgreSQL connection: libpq-style parameters (tokio-postgres
//! reads no `PG*` variables itself), TLS per `sslmode`, a clean pool, and a first connect
//! that retries with a bounded backoff. The password never reaches a message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::Config;

use crate::exit::bad_input;
use crate::settings::Settings;
use crate::tls::MakeTls;

/// libpq's sslmode values. tokio-postgres knows only disable/prefer/require, so what each
/// mode checks is decided by tenantctl's TLS connector (`tls::connector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(bad_input(format!(
                "invalid sslmode '{other}': use disable, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }
}

/// Everything needed to open connections, already merged from all sources.
pub struct Target {
    pub config: Config,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<PathBuf>,
}

impl Target {
    /// `user@host:port/db`, for messages. Never holds the password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{}:{}/{}",
            self.config.get_user().unwrap_or("?"),
            host,
            port,
            self.config.get_dbname().unwrap_or("?")
        )
    }
}

/// The libpq parameters tokio-postgres does not parse, lifted out of a connection string.
#[derive(Debug, Default, PartialEq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Removes sslmode/sslrootcert from a URL's query string (tokio-postgres rejects
/// verify-ca, verify-full and sslrootcert) and returns them separately.
fn split_tls_params(url: &str) -> (String, TlsParams) {
    let mut tls = TlsParams::default();
    if !url.contains("://") {
        return split_keyword_tls_params(url);
    }
    let Some((head, query)) = url.split_once('?') else {
        return (url.to_string(), tls);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => tls.sslmode = Some(percent_decode(v)),
            "sslrootcert" => tls.sslrootcert = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    (rest, tls)
}

/// The same for a keyword string (`host=db sslmode=verify-full`). Values of these two keys
/// are taken as single words; quoted values are left to tokio-postgres's parser.
fn split_keyword_tls_params(conninfo: &str) -> (String, TlsParams) {
    let mut tls = TlsParams::default();
    let mut kept = Vec::new();
    let mut words = conninfo.split_whitespace().peekable();
    while let Some(word) = words.next() {
        // Accept `key=value`, and `key = value` as libpq does.
        let (key, value) = match word.split_once('=') {
            Some((k, v)) if !v.is_empty() => (k, v.to_string()),
            Some((k, _)) => (k, words.next().unwrap_or_default().to_string()),
            None if words.peek() == Some(&"=") => {
                words.next();
                (word, words.next().unwrap_or_default().to_string())
            }
            None => ("", String::new()),
        };
        match key {
            "sslmode" => tls.sslmode = Some(value),
            "sslrootcert" => tls.sslrootcert = Some(value),
            _ => kept.push(word),
        }
    }
    (kept.join(" "), tls)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves the connection: flag or DATABASE_URL (PG* fill what it leaves out, as libpq
/// does), else tenants.toml's url (PG* override it: env beats file), else PG* and libpq
/// defaults. `env` holds the PG* variables; `os_user` is the fallback user name.
pub fn resolve(settings: &Settings, env: &BTreeMap<&str, String>, os_user: &str) -> Result<Target> {
    let (url, tls) = match &settings.database_url {
        Some(u) => split_tls_params(u),
        None => (String::new(), TlsParams::default()),
    };
    let parsed = if url.is_empty() {
        Config::new()
    } else {
        Config::from_str(&url).map_err(|e| {
            bad_input(format!(
                "the connection string is not valid ({e}); expected postgres://user@host:port/dbname \
                 or 'host=... dbname=...' (the string itself is not shown, it may hold a password)"
            ))
        })?
    };
    let env_wins = settings.url_from_file || settings.database_url.is_none();
    let pick = |from_url: Option<String>, var: &str| -> Option<String> {
        let from_env = env.get(var).cloned();
        if env_wins {
            from_env.or(from_url)
        } else {
            from_url.or(from_env)
        }
    };

    let mut cfg = Config::new();
    let url_host = parsed.get_hosts().first().map(|h| match h {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    });
    let host = pick(url_host, "PGHOST").unwrap_or_else(default_socket_dir);
    for h in host.split(',') {
        if h.starts_with('/') {
            cfg.host_path(h);
        } else {
            cfg.host(h);
        }
    }
    let url_port = parsed.get_ports().first().map(|p| p.to_string());
    let port = pick(url_port, "PGPORT").unwrap_or_else(|| "5432".into());
    cfg.port(
        port.parse()
            .map_err(|_| bad_input(format!("invalid port '{port}'")))?,
    );
    let user = pick(parsed.get_user().map(str::to_string), "PGUSER")
        .unwrap_or_else(|| os_user.to_string());
    cfg.user(&user);
    let url_password = parsed
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    if let Some(pw) = pick(url_password, "PGPASSWORD") {
        cfg.password(pw);
    }
    let dbname =
        pick(parsed.get_dbname().map(str::to_string), "PGDATABASE").unwrap_or_else(|| user.clone());
    cfg.dbname(&dbname);
    if let Some(opts) = parsed.get_options() {
        cfg.options(opts);
    }
    let app = pick(
        parsed.get_application_name().map(str::to_string),
        "PGAPPNAME",
    );
    cfg.application_name(app.as_deref().unwrap_or("tenantctl"));
    cfg.connect_timeout(Duration::from_secs(settings.connect_timeout_secs.max(1)));
    cfg.keepalives(true);

    let ssl_mode: SslMode = pick(tls.sslmode, "PGSSLMODE")
        .as_deref()
        .unwrap_or("prefer")
        .parse()?;
    let root = pick(tls.sslrootcert, "PGSSLROOTCERT");
    cfg.ssl_mode(match ssl_mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    pin_search_path(&mut cfg);
    Ok(Target {
        config: cfg,
        ssl_mode,
        ssl_root_cert: root.map(PathBuf::from),
    })
}

/// The search_path every tenantctl session starts with. Sent as a startup option, so it is
/// also what `RESET ALL` returns to. `public` is not on it: where roles other than the owner
/// may create there (PostgreSQL 14 and older, or databases upgraded from them), a function
/// planted in `public` that matches a call better than the built-in one (`cardinality(bigint[])`
/// against `cardinality(anyarray)`) would otherwise run with tenantctl's rights. `pg_temp`
/// comes last so no temporary table can stand in for a catalog or registry table.
const SESSION_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Appends `-c search_path=...` to the connection's options (after any the user gave, so it
/// wins). Tenant transactions still point their own search_path at the tenant's schema.
fn pin_search_path(cfg: &mut Config) {
    let pin = format!("-c search_path={}", SESSION_SEARCH_PATH.replace(' ', ""));
    let options = match cfg.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {pin}"),
        _ => pin,
    };
    cfg.options(&options);
}

fn default_socket_dir() -> String {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).join(".s.PGSQL.5432").exists())
        .unwrap_or("/var/run/postgresql")
        .to_string()
}

/// The TLS connector for the target's sslmode (see `tls`).
pub fn tls_connector(target: &Target) -> Result<MakeTls> {
    crate::tls::connector(target.ssl_mode, target.ssl_root_cert.as_deref())
}

/// A pool of `size` connections, handed out again without a round trip (only a closed
/// connection is replaced). That is safe because the only SQL tenantctl did not write,
/// the migrations, runs in a `txn::Tx` that resets the session before it commits (see
/// `txn::RESET_SESSION`), and a transaction left open is rolled back before its connection
/// is reused; so no tenant's session state reaches the next task.
pub fn pool(target: &Target, size: usize) -> Result<Pool> {
    let mgr = Manager::from_config(
        target.config.clone(),
        tls_connector(target)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = target.config.get_connect_timeout().copied();
    Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(timeout.map(|t| t + Duration::from_secs(5)))
        .build()
        .context("cannot build the connection pool")
}

/// A single connection to another database of the same server (for restore's scratch
/// database), with the same credentials and TLS settings.
pub async fn connect_db(target: &Target, dbname: &str) -> Result<tokio_postgres::Client> {
    let mut cfg = target.config.clone();
    cfg.dbname(dbname);
    let (client, connection) = cfg.connect(tls_connector(target)?).await.map_err(|e| {
        anyhow!(
            "cannot connect to database {dbname}: {}",
            describe_pg_error(&e)
        )
    })?;
    tokio::spawn(connection);
    Ok(client)
}

/// The first connection, retried with a bounded backoff while the server is unreachable
/// (it may be starting); an authentication or missing-database error fails at once.
pub async fn first_connection(pool: &Pool, target: &Target) -> Result<Object> {
    let budget = target
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match pool.get().await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let retryable = is_unreachable(&e);
                if !retryable || started.elapsed() + delay > budget {
                    return Err(connect_error(&e, target));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn is_unreachable(e: &deadpool_postgres::PoolError) -> bool {
    match e {
        // A certificate that fails verification will not pass on a retry.
        deadpool_postgres::PoolError::Backend(pe) => {
            pe.as_db_error().is_none() && !describe_pg_error(pe).contains("TLS")
        }
        deadpool_postgres::PoolError::Timeout(_) => true,
        _ => false,
    }
}

/// The message for a failed connect: where, as whom, why, and what to check.
pub fn connect_error(e: &deadpool_postgres::PoolError, target: &Target) -> anyhow::Error {
    let why = match e {
        deadpool_postgres::PoolError::Backend(pe) => describe_pg_error(pe),
        deadpool_postgres::PoolError::Timeout(_) => "timed out".to_string(),
        other => other.to_string(),
    };
    anyhow!(
        "cannot connect to PostgreSQL at {}: {why}; check --database-url, DATABASE_URL, \
         the PG* variables or [database] url",
        target.describe()
    )
}

/// A tokio-postgres error as one readable line: the server's message and SQLSTATE when
/// there is one, else the chain of causes (its own Display is only "db error").
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        if db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE {
            s.push_str("; another session holds a lock on this tenant's tables (retry later or raise --lock-timeout)");
        }
        return s;
    }
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// Connections the server can still accept from ordinary roles (max_connections minus the
/// reserved slots minus the sessions already open, ours included).
pub async fn free_connection_slots(client: &tokio_postgres::Client) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::bigint \
                  - current_setting('superuser_reserved_connections')::bigint \
                  - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
            &[],
        )
        .await
        .context("cannot read the server's connection limits")?;
    Ok(row.get(0))
}

/// Whether the server runs on this machine (a Unix socket or a loopback address).
pub fn is_local(target: &Target) -> bool {
    target.config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// `.context()` for tokio-postgres results that shows the server's message and SQLSTATE
/// instead of tokio-postgres's bare "db error".
pub trait PgContext<T> {
    fn pg_context<C>(self, context: C) -> Result<T>
    where
        C: std::fmt::Display + Send + Sync + 'static;
    fn with_pg_context<C, F>(self, context: F) -> Result<T>
    where
        C: std::fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C;
}

impl<T> PgContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn pg_context<C>(self, context: C) -> Result<T>
    where
        C: std::fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|e| anyhow!(describe_pg_error(&e)).context(context))
    }
    fn with_pg_context<C, F>(self, context: F) -> Result<T>
    where
        C: std::fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| anyhow!(describe_pg_error(&e)).context(context()))
    }
}

/// The OS user name, libpq's default user.
pub fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "postgres".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{merge, FileConfig, Overrides};

    fn settings(url: Option<&str>, from_file: bool) -> Settings {
        let mut s = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        s.database_url = url.map(str::to_string);
        s.url_from_file = from_file;
        s
    }

    fn env(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn url_beats_pg_variables_which_fill_the_gaps() {
        let s = settings(Some("postgres://alice@db1:6000/app"), false);
        let t = resolve(
            &s,
            &env(&[("PGHOST", "other"), ("PGPASSWORD", "pw"), ("PGPORT", "7")]),
            "os",
        )
        .unwrap();
        assert_eq!(t.describe(), "alice@db1:6000/app");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn pg_variables_beat_the_config_file_url() {
        let s = settings(Some("postgres://alice@db1:6000/app"), true);
        let t = resolve(
            &s,
            &env(&[("PGHOST", "db2"), ("PGDATABASE", "other")]),
            "os",
        )
        .unwrap();
        assert_eq!(t.describe(), "alice@db2:6000/other");
    }

    #[test]
    fn libpq_defaults_without_anything() {
        let s = settings(None, false);
        let t = resolve(&s, &env(&[("PGHOST", "h"), ("PGUSER", "bob")]), "os").unwrap();
        assert_eq!(t.describe(), "bob@h:5432/bob");
        let t = resolve(&s, &env(&[("PGHOST", "h")]), "carol").unwrap();
        assert_eq!(t.describe(), "carol@h:5432/carol");
    }

    #[test]
    fn libpq_only_tls_parameters_are_lifted_out() {
        let s = settings(Some("postgres://u:secret@h/db?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x"), false);
        let t = resolve(&s, &env(&[]), "os").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(t.config.get_application_name(), Some("x"));
    }

    #[test]
    fn a_bad_connection_string_never_shows_the_password() {
        let s = settings(Some("postgres://u:hunter2@h:notaport/db"), false);
        let err = format!("{:#}", resolve(&s, &env(&[]), "os").err().unwrap());
        assert!(!err.contains("hunter2"), "{err}");
        let s = settings(Some("postgres://u:hunter2@h/db?sslmode=bogus"), false);
        let err = format!("{:#}", resolve(&s, &env(&[]), "os").err().unwrap());
        assert!(!err.contains("hunter2") && err.contains("sslmode"), "{err}");
    }

    #[test]
    fn keyword_strings_keep_their_sslmode() {
        let s = settings(Some("host=db dbname=app user=u sslmode=require"), false);
        let t = resolve(&s, &env(&[]), "os").unwrap();
        assert_eq!(
            (t.ssl_mode, t.describe()),
            (SslMode::Require, "u@db:5432/app".to_string())
        );
        let s = settings(
            Some("host=db dbname=app sslmode = verify-full sslrootcert=/ca.pem"),
            false,
        );
        let t = resolve(&s, &env(&[]), "os").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn pgsslrootcert_comes_from_the_same_environment_as_the_rest() {
        let s = settings(Some("postgres://u@h/db?sslmode=verify-full"), false);
        let t = resolve(&s, &env(&[("PGSSLROOTCERT", "/env-ca.pem")]), "os").unwrap();
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/env-ca.pem")));
        let s = settings(Some("postgres://u@h/db?sslrootcert=%2Furl-ca.pem"), false);
        let t = resolve(&s, &env(&[("PGSSLROOTCERT", "/env-ca.pem")]), "os").unwrap();
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/url-ca.pem")));
    }

    #[test]
    fn every_session_starts_with_a_search_path_without_public() {
        let s = settings(
            Some("postgres://u@h/db?options=-c%20work_mem%3D64MB"),
            false,
        );
        let t = resolve(&s, &env(&[]), "os").unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c work_mem=64MB -c search_path=pg_catalog,pg_temp")
        );
        let t = resolve(&settings(None, false), &env(&[]), "os").unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c search_path=pg_catalog,pg_temp")
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Ftmp%2Fca.pem"), "/tmp/ca.pem");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
