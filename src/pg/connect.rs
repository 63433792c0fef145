//! Turning settings into a PostgreSQL connection the way libpq would: a URL or keyword
//! string (`conninfo`), the `PG*` variables filling what it leaves out, libpq's defaults
//! (the local socket, the effective user's account name), the password file (`pgpass`),
//! TLS per `sslmode` but never on a Unix socket, a clean pool, and a first connect that
//! retries with a bounded backoff while the server cannot be reached. The password never
//! reaches a message.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::domain::exit::bad_input;
use crate::domain::settings::Settings;
use crate::pg::conninfo::{self, Params};
use crate::pg::pgpass::{self, Passfile};
use crate::pg::tls::{self, HandshakeError, MakeTls, Roots};

pub use crate::pg::tls::SslMode;

/// The socket folder of Debian's libpq (upstream's default is /tmp).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Each keyword tenantctl resolves itself and the libpq variable that fills it in.
pub const ENV_FOR: [(&str, &str); 10] = [
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("dbname", "PGDATABASE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("application_name", "PGAPPNAME"),
];

/// Who runs tenantctl, for libpq's defaults.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// The effective user ID's account name: the default user (libpq does not read $USER).
    pub user: Option<String>,
    /// `$HOME`, else the account's home: where `.pgpass` and `.postgresql/root.crt` live.
    pub home: Option<PathBuf>,
}

impl Local {
    pub fn current() -> Local {
        let account = effective_account();
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| account.as_ref().map(|a| a.1.clone()));
        Local {
            user: account.map(|a| a.0),
            home,
        }
    }
}

/// The name and home folder of the effective user ID's account (libpq's pg_get_user_name).
#[cfg(unix)]
fn effective_account() -> Option<(String, PathBuf)> {
    use std::ffi::{CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: geteuid cannot fail. getpwuid_r writes only into `pwd` and `buf`, which live
    // until the strings are copied out below; `result` is null unless an entry was found.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        loop {
            let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 || result.is_null() {
                return None;
            }
            break;
        }
        let name = CStr::from_ptr(pwd.pw_name).to_str().ok()?.to_string();
        let home = OsStr::from_bytes(CStr::from_ptr(pwd.pw_dir).to_bytes());
        Some((name, PathBuf::from(home)))
    }
}

#[cfg(not(unix))]
fn effective_account() -> Option<(String, PathBuf)> {
    let name = std::env::var("USERNAME").ok()?;
    let home = std::env::var_os("USERPROFILE").map(PathBuf::from)?;
    Some((name, home))
}

/// One server address to try, in the order given (libpq tries each until one connects).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// A host name or a socket folder; `None` when only `hostaddr` was given.
    pub host: Option<Host>,
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    /// The host as the password file names it (libpq: `localhost` for the default socket).
    pass_host: String,
}

impl Endpoint {
    pub fn is_socket(&self) -> bool {
        matches!(self.host, Some(Host::Unix(_))) && self.hostaddr.is_none()
    }

    fn name(&self) -> String {
        match (&self.host, self.hostaddr) {
            (Some(Host::Tcp(h)), _) => h.clone(),
            (Some(Host::Unix(p)), _) => p.display().to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => "?".into(),
        }
    }

    fn is_local(&self) -> bool {
        let loopback = |s: &str| s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match (&self.host, self.hostaddr) {
            (_, Some(addr)) => addr.is_loopback(),
            (Some(Host::Unix(_)), None) => true,
            (Some(Host::Tcp(name)), None) => name == "localhost" || loopback(name),
            (None, None) => false,
        }
    }
}

/// Everything needed to open connections, already merged from all sources. Its Debug
/// shows no password (tokio-postgres redacts it, `Passfile` shows its path only).
#[derive(Debug, Clone)]
pub struct Target {
    /// User, database, password when one was given, every host and port: for readers
    /// (messages, pg_dump's environment). Connections are made per `endpoints`.
    pub config: Config,
    pub endpoints: Vec<Endpoint>,
    pub ssl_mode: SslMode,
    /// `sslrootcert` as given (a path, or `system`).
    pub ssl_root_cert: Option<PathBuf>,
    /// The trust for TLS connections; `None` when no endpoint will use TLS.
    pub roots: Option<Roots>,
    /// The password file, consulted only when no password was given.
    pub passfile: Option<Passfile>,
    /// The config without hosts, from which each endpoint's config is made.
    base: Config,
}

impl Target {
    /// `user@host:port/db` (hosts separated by commas), for messages. Never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.name(), e.port))
            .collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or("?"),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("?")
        )
    }

    /// The password for `endpoint`: the one given, else the password file's.
    fn password_for(&self, endpoint: &Endpoint, config: &Config) -> Option<String> {
        if let Some(pw) = config.get_password() {
            return Some(String::from_utf8_lossy(pw).into_owned());
        }
        self.passfile.as_ref()?.lookup(&pgpass::Key {
            host: &endpoint.pass_host,
            port: endpoint.port,
            dbname: config.get_dbname().unwrap_or_default(),
            user: config.get_user().unwrap_or_default(),
        })
    }

    /// The password file, when it supplied the password for some endpoint (for libpq's
    /// note after a rejected password).
    fn password_file_used(&self) -> Option<&Path> {
        let file = self.passfile.as_ref()?;
        let used = self.config.get_password().is_none()
            && self
                .endpoints
                .iter()
                .any(|e| self.password_for(e, &self.base).is_some());
        used.then_some(file.path.as_path())
    }
}

/// Resolves the connection: flag or DATABASE_URL (PG* fill what it leaves out, as libpq
/// does), else tenants.toml's url (PG* override it: env beats file), else PG* and libpq
/// defaults. `env` holds the PG* variables that are set and not empty.
pub fn resolve(settings: &Settings, env: &BTreeMap<&str, String>, local: &Local) -> Result<Target> {
    let src = Sources::new(settings, env)?;
    let base = base_config(&src, settings, local)?;
    let endpoints = endpoints(src.get("host"), src.get("hostaddr"), src.get("port"))?;
    let ssl_root_cert = src.get("sslrootcert").map(PathBuf::from);
    let ssl_mode = ssl_mode(src.get("sslmode"), ssl_root_cert.as_deref())?;
    let roots = tls_roots(ssl_mode, &endpoints, ssl_root_cert.as_deref(), local)?;
    let passfile = password_file(&src, &base, local);
    Ok(Target {
        config: with_hosts(&base, &endpoints),
        endpoints,
        ssl_mode,
        ssl_root_cert,
        roots,
        passfile,
        base,
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

/// Where a keyword's value comes from: the connection string, then its `PG*` variable
/// (the other way round for tenants.toml's url). Empty values count as unset.
struct Sources<'a> {
    given: Params,
    env: &'a BTreeMap<&'a str, String>,
    env_wins: bool,
}

impl<'a> Sources<'a> {
    fn new(settings: &Settings, env: &'a BTreeMap<&'a str, String>) -> Result<Sources<'a>> {
        let given = match &settings.database_url {
            Some(s) => conninfo::parse(s).map_err(|e| invalid_string(&e))?,
            None => Params::new(),
        };
        Ok(Sources {
            given,
            env,
            env_wins: settings.url_from_file || settings.database_url.is_none(),
        })
    }

    fn get(&self, key: &str) -> Option<String> {
        let from_string = self.given.get(key).filter(|v| !v.is_empty()).cloned();
        let var = ENV_FOR.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let from_env = var
            .and_then(|v| self.env.get(v))
            .filter(|v| !v.is_empty())
            .cloned();
        if self.env_wins {
            from_env.or(from_string)
        } else {
            from_string.or(from_env)
        }
    }
}

/// User (the account name by default), database (the user's name by default), password,
/// application name and timeout, on top of the keywords tokio-postgres takes as they are.
fn base_config(src: &Sources, settings: &Settings, local: &Local) -> Result<Config> {
    let mut base = passed_on_config(&src.given)?;
    let user = src
        .get("user")
        .or_else(|| local.user.clone())
        .ok_or_else(|| {
            bad_input(
                "cannot tell which user to connect as: the effective user ID has no account name; \
             set PGUSER or user in the connection string",
            )
        })?;
    base.user(&user);
    base.dbname(src.get("dbname").as_deref().unwrap_or(&user));
    if let Some(pw) = src.get("password") {
        base.password(pw);
    }
    base.application_name(
        src.get("application_name")
            .as_deref()
            .unwrap_or("tenantctl"),
    );
    // --connect-timeout, not the string's connect_timeout: it is also the retry budget.
    base.connect_timeout(Duration::from_secs(settings.connect_timeout_secs.max(1)));
    pin_search_path(&mut base);
    Ok(base)
}

/// The TLS trust, decided (and a missing root certificate refused) only when some endpoint
/// will use TLS: never for Unix sockets or with sslmode=disable.
fn tls_roots(
    mode: SslMode,
    endpoints: &[Endpoint],
    explicit: Option<&Path>,
    local: &Local,
) -> Result<Option<Roots>> {
    if mode == SslMode::Disable || endpoints.iter().all(Endpoint::is_socket) {
        return Ok(None);
    }
    let default = local.home.as_ref().map(|h| h.join(".postgresql/root.crt"));
    tls::roots_for(mode, explicit, default.as_deref()).map(Some)
}

/// The password file, read when no password was given: `passfile`, `PGPASSFILE`, else
/// `~/.pgpass`.
fn password_file(src: &Sources, base: &Config, local: &Local) -> Option<Passfile> {
    if base.get_password().is_some() {
        return None;
    }
    let path = src
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| local.home.as_ref().map(|h| h.join(".pgpass")))?;
    Passfile::load(&path)
}

fn invalid_string(why: &str) -> anyhow::Error {
    bad_input(format!(
        "the connection string is not valid ({why}); expected postgres://user@host:port/dbname \
         or 'host=... dbname=...' (the string itself is not shown, it may hold a password)"
    ))
}

/// The keywords tenantctl does not resolve itself (options, keepalives, ...), parsed and
/// checked by tokio-postgres.
fn passed_on_config(given: &Params) -> Result<Config> {
    let passed: Vec<(&str, &str)> = given
        .iter()
        .filter(|(k, _)| conninfo::passed_on(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if passed.is_empty() {
        return Ok(Config::new());
    }
    Config::from_str(&conninfo::to_keywords(passed)).map_err(|e| invalid_string(&e.to_string()))
}

/// sslmode, libpq 16's way: `prefer` by default, `verify-full` by default with
/// `sslrootcert=system`, which refuses any weaker mode.
fn ssl_mode(given: Option<String>, root: Option<&Path>) -> Result<SslMode> {
    let system = root == Some(Path::new("system"));
    let mode = match given {
        Some(m) => m.parse()?,
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(bad_input(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\"): \
             any host can get a certificate the system trusts, so only the host name check protects",
            mode.as_str()
        )));
    }
    Ok(mode)
}

/// The endpoints of comma-separated `host`, `hostaddr` and `port` lists, as libpq pairs
/// them: one port for all hosts or one per host; an empty host is the default socket.
fn endpoints(
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<String>,
) -> Result<Vec<Endpoint>> {
    let split = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|s| s.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default()
    };
    let (hosts, addrs, ports) = (split(&host), split(&hostaddr), split(&port));
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(bad_input(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        )));
    }
    let n = hosts.len().max(addrs.len()).max(1);
    if ports.len() > 1 && ports.len() != n {
        return Err(bad_input(format!(
            "could not match {} port numbers to {n} hosts",
            ports.len()
        )));
    }
    (0..n)
        .map(|i| {
            let port = ports.get(i).or(ports.first()).map(String::as_str);
            endpoint(
                hosts.get(i).map(String::as_str),
                addrs.get(i).map(String::as_str),
                port,
            )
        })
        .collect()
}

fn endpoint(host: Option<&str>, hostaddr: Option<&str>, port: Option<&str>) -> Result<Endpoint> {
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            bad_input(format!(
                "invalid port \"{p}\": expected a number from 1 to 65535"
            ))
        })?,
        None => 5432,
    };
    let hostaddr = match hostaddr.filter(|a| !a.is_empty()) {
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            bad_input(format!(
                "invalid hostaddr \"{a}\": expected an IPv4 or IPv6 address"
            ))
        })?),
        None => None,
    };
    let (host, pass_host) = match host.filter(|h| !h.is_empty()) {
        Some(dir) if dir.starts_with('/') => {
            let pass = if dir == DEFAULT_SOCKET_DIR {
                "localhost"
            } else {
                dir
            };
            (Some(Host::Unix(dir.into())), pass.to_string())
        }
        Some(name) => (Some(Host::Tcp(name.into())), name.to_string()),
        None => match hostaddr {
            Some(a) => (None, a.to_string()),
            None => (
                Some(Host::Unix(default_socket_dir(port))),
                "localhost".into(),
            ),
        },
    };
    Ok(Endpoint {
        host,
        hostaddr,
        port,
        pass_host,
    })
}

/// libpq's default host: Debian's socket folder. tenantctl also takes /tmp (upstream
/// PostgreSQL's default) when the server's socket is there and not in the Debian folder.
fn default_socket_dir(port: u16) -> PathBuf {
    let socket = format!(".s.PGSQL.{port}");
    [DEFAULT_SOCKET_DIR, "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join(&socket).exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR))
}

/// `base` with every endpoint's host, address and port (for the readers of `Target::config`).
fn with_hosts(base: &Config, endpoints: &[Endpoint]) -> Config {
    let mut cfg = base.clone();
    for e in endpoints {
        match &e.host {
            Some(Host::Tcp(h)) => cfg.host(h),
            Some(Host::Unix(p)) => cfg.host_path(p),
            None => &mut cfg,
        };
        if let Some(a) = e.hostaddr {
            cfg.hostaddr(a);
        }
        cfg.port(e.port);
    }
    cfg
}

/// Opens connections as libpq does: each endpoint in turn; a Unix socket without TLS
/// whatever the sslmode; over TCP, `allow` tries plaintext first and TLS when the server
/// refuses, `prefer` tries TLS first and plaintext when the handshake fails, and the other
/// modes require TLS (checked as `Target::roots` says).
#[derive(Clone)]
pub struct Connector {
    target: Target,
    tls: Option<MakeTls>,
}

type Opened = (Client, JoinHandle<()>);

impl Connector {
    /// Loads the TLS trust once (only when some endpoint will use TLS).
    pub fn new(target: &Target) -> Result<Connector> {
        let tls = match &target.roots {
            Some(roots) => Some(tls::connector(target.ssl_mode, roots)?),
            None => None,
        };
        Ok(Connector {
            target: target.clone(),
            tls,
        })
    }

    /// A connection to the first endpoint that accepts one; else the last endpoint's error.
    pub async fn open(&self) -> Result<Opened, tokio_postgres::Error> {
        let mut last = None;
        for endpoint in &self.target.endpoints {
            match self.open_endpoint(endpoint).await {
                Ok(opened) => return Ok(opened),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("a target has at least one endpoint"))
    }

    async fn open_endpoint(&self, endpoint: &Endpoint) -> Result<Opened, tokio_postgres::Error> {
        let cfg = self.config_for(endpoint);
        let tls = match &self.tls {
            Some(tls) if !endpoint.is_socket() => tls.clone(),
            _ => return plain(cfg).await,
        };
        match self.target.ssl_mode {
            SslMode::Disable => plain(cfg).await,
            SslMode::Allow => match plain(cfg.clone()).await {
                // libpq retries with TLS when the server refused the plaintext session.
                Err(e) if e.as_db_error().is_some() => {
                    encrypted(cfg, PgSslMode::Require, tls).await
                }
                other => other,
            },
            SslMode::Prefer => match encrypted(cfg.clone(), PgSslMode::Prefer, tls).await {
                // libpq retries without TLS when the handshake failed.
                Err(e) if is_handshake_failure(&e) => plain(cfg).await,
                other => other,
            },
            _ => encrypted(cfg, PgSslMode::Require, tls).await,
        }
    }

    fn config_for(&self, endpoint: &Endpoint) -> Config {
        let mut cfg = with_hosts(&self.target.base, std::slice::from_ref(endpoint));
        if let Some(pw) = self.target.password_for(endpoint, &cfg) {
            cfg.password(pw);
        }
        cfg
    }
}

async fn plain(mut cfg: Config) -> Result<Opened, tokio_postgres::Error> {
    cfg.ssl_mode(PgSslMode::Disable);
    let (client, connection) = cfg.connect(NoTls).await?;
    Ok((client, tokio::spawn(async move { drop(connection.await) })))
}

async fn encrypted(
    mut cfg: Config,
    mode: PgSslMode,
    tls: MakeTls,
) -> Result<Opened, tokio_postgres::Error> {
    cfg.ssl_mode(mode);
    let (client, connection) = cfg.connect(tls).await?;
    Ok((client, tokio::spawn(async move { drop(connection.await) })))
}

fn is_handshake_failure(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<HandshakeError>())
}

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        _: &Config,
    ) -> Pin<Box<dyn Future<Output = Result<Opened, tokio_postgres::Error>> + Send + '_>> {
        Box::pin(self.open())
    }
}

/// A pool of `size` connections, handed out again without a round trip (only a closed
/// connection is replaced). That is safe because the only SQL tenantctl did not write,
/// the migrations, runs in a `txn::Tx` that resets the session before it commits (see
/// `txn::RESET_SESSION`), and a transaction left open is rolled back before its connection
/// is reused; so no tenant's session state reaches the next task.
pub fn pool(target: &Target, size: usize) -> Result<Pool> {
    let mgr = Manager::from_connect(
        target.config.clone(),
        Connector::new(target)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = target.base.get_connect_timeout().copied();
    Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(timeout.map(|t| t + Duration::from_secs(5)))
        .build()
        .context("cannot build the connection pool")
}

impl Target {
    /// The same server, credentials and TLS, for database `dbname` (a tenant's own database).
    pub fn with_dbname(&self, dbname: &str) -> Target {
        let mut other = self.clone();
        other.base.dbname(dbname);
        other.config.dbname(dbname);
        other
    }
}

/// A single connection to another database of the same server (for restore's scratch
/// database), with the same credentials and TLS settings.
pub async fn connect_db(target: &Target, dbname: &str) -> Result<Client> {
    let mut other = target.clone();
    other.base.dbname(dbname);
    other.config.dbname(dbname);
    let (client, _connection) = Connector::new(&other)?.open().await.map_err(|e| {
        anyhow!(
            "cannot connect to database {dbname}: {}",
            describe_pg_error(&e)
        )
    })?;
    Ok(client)
}

/// The first connection, retried with a bounded backoff (100 ms doubling to 1 s) for the
/// connect timeout while the server cannot be reached or is not accepting connections yet;
/// any other failure (authentication, a missing database, a certificate) is final at once.
pub async fn first_connection(pool: &Pool, target: &Target) -> Result<Object> {
    let budget = target
        .base
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match pool.get().await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let error = ConnectError::new(e, target);
                if error.failure() == Failure::Refused || started.elapsed() + delay > budget {
                    return Err(error.into());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Whether `e` means the server (or the way to it) is gone, rather than that a statement
/// failed: the connection closed, an I/O error on the socket, or a SQLSTATE of class 08
/// (connection exception) or 57P01-57P03 (admin or crash shutdown, cannot connect now).
/// The same decision `connect` makes when it retries a connection: one classification.
pub fn is_server_gone(e: &tokio_postgres::Error) -> bool {
    Failure::of(e) == Failure::Unreachable
}

/// The same for a connection the pool could not hand out: the server refused or did not
/// answer. Authentication and TLS failures are not outages; they fail at once.
pub fn is_pool_error_server_gone(e: &PoolError) -> bool {
    Failure::of_pool(e) == Failure::Unreachable
}

/// A pool error as one line, with the server's message rather than "db error".
pub fn describe_pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Backend(pe) => describe_pg_error(pe),
        PoolError::Timeout(_) => "timed out".to_string(),
        other => other.to_string(),
    }
}

/// Whether a failed connection may succeed when tried again soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server cannot be reached, went away, or is not accepting connections yet
    /// (starting up, shutting down, in recovery): worth retrying.
    Unreachable,
    /// The server or the client said no (authentication, a missing database, a
    /// certificate, a configuration): retrying gives the same answer.
    Refused,
}

impl Failure {
    /// Decided from the error's kinds: the server's SQLSTATE, the I/O error, a closed
    /// connection, or our TLS handshake's error. Never from message text.
    pub fn of(e: &tokio_postgres::Error) -> Failure {
        if let Some(db) = e.as_db_error() {
            return Failure::of_sqlstate(db.code());
        }
        if e.is_closed() {
            return Failure::Unreachable;
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return Failure::of_io(io.kind());
            }
            source = s.source();
        }
        Failure::Refused
    }

    /// Class 08 (connection exception) and the server's "not now" codes of class 57:
    /// starting up, shutting down or in recovery (57P03), shut down by an administrator
    /// (57P01) or after a crash (57P02).
    pub fn of_sqlstate(code: &SqlState) -> Failure {
        let retry = code.code().starts_with("08")
            || [
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
            ]
            .contains(code);
        if retry {
            Failure::Unreachable
        } else {
            Failure::Refused
        }
    }

    /// Nobody listening yet (refused, no socket file), the connection dropped, or no route
    /// or answer in time. Permission and name-resolution errors are final.
    pub fn of_io(kind: std::io::ErrorKind) -> Failure {
        use std::io::ErrorKind::*;
        match kind {
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            | UnexpectedEof | TimedOut | NotFound | AddrNotAvailable | HostUnreachable
            | NetworkUnreachable | NetworkDown | Interrupted => Failure::Unreachable,
            _ => Failure::Refused,
        }
    }

    pub fn of_pool(e: &PoolError) -> Failure {
        match e {
            PoolError::Backend(pe) => Failure::of(pe),
            // The pool's create timeout: a server that accepted TCP but never answered.
            PoolError::Timeout(_) => Failure::Unreachable,
            _ => Failure::Refused,
        }
    }
}

/// A connection that could not be made: where, why (the error kept as it came), and
/// whether trying again may help. Its message is one line that names the target (never the
/// password) and says what to check.
#[derive(Debug)]
pub struct ConnectError {
    target: String,
    failure: Failure,
    source: PoolError,
    /// libpq's note when a password from the password file was rejected.
    password_file: Option<PathBuf>,
}

impl ConnectError {
    pub fn new(source: PoolError, target: &Target) -> ConnectError {
        let rejected_password = matches!(&source, PoolError::Backend(e)
            if e.code() == Some(&SqlState::INVALID_PASSWORD));
        ConnectError {
            target: target.describe(),
            failure: Failure::of_pool(&source),
            password_file: target
                .password_file_used()
                .filter(|_| rejected_password)
                .map(Path::to_path_buf),
            source,
        }
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The error as tokio-postgres or the pool reported it.
    pub fn cause(&self) -> &PoolError {
        &self.source
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match &self.source {
            PoolError::Backend(pe) => describe_pg_error(pe),
            PoolError::Timeout(_) => "timed out".to_string(),
            other => other.to_string(),
        };
        write!(f, "cannot connect to PostgreSQL at {}: {why}", self.target)?;
        if let Some(file) = &self.password_file {
            write!(f, " (password retrieved from file \"{}\")", file.display())?;
        }
        f.write_str("; check --database-url, DATABASE_URL, the PG* variables or [database] url")
    }
}

/// The cause is part of the message (described with its SQLSTATE, which the error's own
/// chain would not show) and kept in `cause()`; not repeated as a source, so an error
/// printed with its chain does not say it twice.
impl std::error::Error for ConnectError {}

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

/// The server's version as it reports it (`server_version`, e.g. `15.8 (Debian 15.8-1)`).
pub async fn server_version(client: &tokio_postgres::Client) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_catalog.current_setting('server_version')", &[])
        .await
        .context("cannot read the server's version")?
        .get(0))
}

/// Whether the server runs on this machine (Unix sockets or loopback addresses only).
pub fn is_local(target: &Target) -> bool {
    target.endpoints.iter().all(Endpoint::is_local)
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

/// The process id of `client`'s server session: what another session names to cancel or
/// end it.
pub async fn backend_pid(client: &impl deadpool_postgres::GenericClient) -> Result<i32> {
    Ok(client
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .pg_context("cannot read the session's process id")?
        .get(0))
}

/// Cancels the statement session `pid` runs, from `other`, another session. Best effort:
/// the statement may have ended meanwhile, and the caller learns the outcome from it.
pub async fn cancel_backend(other: &impl deadpool_postgres::GenericClient, pid: i32) {
    let _ = other
        .query_one("SELECT pg_catalog.pg_cancel_backend($1::integer)", &[&pid])
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::settings::{merge, FileConfig, Overrides};

    fn settings(url: Option<&str>, from_file: bool) -> Settings {
        let mut s = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        s.database_url = url.map(str::to_string);
        s.url_from_file = from_file;
        s
    }

    fn env(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    /// A user without a home: no password file or root certificate is read.
    fn os(user: &str) -> Local {
        Local {
            user: Some(user.into()),
            home: None,
        }
    }

    fn resolve_with(url: Option<&str>, vars: &[(&'static str, &str)]) -> Result<Target> {
        resolve(&settings(url, false), &env(vars), &os("os"))
    }

    #[test]
    fn url_beats_pg_variables_which_fill_the_gaps() {
        let t = resolve_with(
            Some("postgres://alice@db1:6000/app"),
            &[("PGHOST", "other"), ("PGPASSWORD", "pw"), ("PGPORT", "7")],
        )
        .unwrap();
        assert_eq!(t.describe(), "alice@db1:6000/app");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn pg_variables_fill_what_a_url_leaves_out() {
        let vars = [("PGPORT", "6543"), ("PGUSER", "bob"), ("PGHOST", "db9")];
        let t = resolve_with(Some("postgres://u:p@127.0.0.1/app"), &vars).unwrap();
        assert_eq!(t.describe(), "u@127.0.0.1:6543/app");
        let t = resolve_with(Some("postgres://:p@127.0.0.1:5/app"), &vars).unwrap();
        assert_eq!(t.describe(), "bob@127.0.0.1:5/app");
        let t = resolve_with(Some("postgres://u@:5/app"), &vars).unwrap();
        assert_eq!(t.describe(), "u@db9:5/app");
        let t = resolve_with(Some("postgres:///app"), &vars).unwrap();
        assert_eq!(t.describe(), "bob@db9:6543/app");
    }

    #[test]
    fn pg_variables_beat_the_config_file_url() {
        let s = settings(Some("postgres://alice@db1:6000/app"), true);
        let vars = env(&[("PGHOST", "db2"), ("PGDATABASE", "other")]);
        let t = resolve(&s, &vars, &os("os")).unwrap();
        assert_eq!(t.describe(), "alice@db2:6000/other");
    }

    #[test]
    fn libpq_defaults_without_anything() {
        let t = resolve_with(None, &[("PGHOST", "h"), ("PGUSER", "bob")]).unwrap();
        assert_eq!(t.describe(), "bob@h:5432/bob");
        let t = resolve(
            &settings(None, false),
            &env(&[("PGHOST", "h")]),
            &os("carol"),
        )
        .unwrap();
        assert_eq!(t.describe(), "carol@h:5432/carol");
        // No host at all: a Unix socket folder, so no TLS whatever the sslmode.
        let t = resolve_with(None, &[("PGSSLMODE", "verify-full")]).unwrap();
        assert!(t.endpoints[0].is_socket() && t.roots.is_none());
        assert_eq!(t.endpoints[0].pass_host, "localhost");
        let no_user = Local::default();
        let e = resolve(&settings(None, false), &env(&[]), &no_user).unwrap_err();
        assert_eq!(crate::domain::exit::code_for(&e), 2);
        assert!(format!("{e:#}").contains("PGUSER"), "{e:#}");
    }

    #[test]
    fn socket_folders_in_every_form_never_use_tls() {
        for (url, vars) in [
            (None, vec![("PGHOST", "/run/pg"), ("PGPORT", "5499")]),
            (Some("host=/run/pg port=5499"), vec![]),
            (Some("postgres://u@%2Frun%2Fpg:5499/db"), vec![]),
            (Some("postgres:///db?host=/run/pg&port=5499"), vec![]),
        ] {
            for mode in [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ] {
                let mut vars = vars.clone();
                vars.push(("PGSSLMODE", mode));
                let t = resolve_with(url, &vars).unwrap();
                assert_eq!(t.endpoints.len(), 1);
                assert!(t.endpoints[0].is_socket(), "{url:?} {mode}");
                assert_eq!(t.endpoints[0].port, 5499);
                assert_eq!(t.endpoints[0].pass_host, "/run/pg");
                assert!(t.roots.is_none(), "{url:?} {mode}: no TLS on a socket");
            }
        }
        let t = resolve_with(Some("host=/var/run/postgresql"), &[]).unwrap();
        assert_eq!(t.endpoints[0].pass_host, "localhost");
    }

    #[test]
    fn host_lists_pair_with_ports_like_libpq() {
        let t = resolve_with(Some("postgres://a,b:6000,/d"), &[("PGPORT", "7000")]).unwrap();
        let ports: Vec<u16> = t.endpoints.iter().map(|e| e.port).collect();
        // The URL names the ports ("", 6000, ""), so PGPORT does not apply; empty is 5432.
        assert_eq!(ports, [5432, 6000, 5432]);
        assert!(t.endpoints[2].is_socket());
        assert!(!is_local(&t));
        let t = resolve_with(Some("host=a,b port=6000"), &[]).unwrap();
        assert!(t.endpoints.iter().all(|e| e.port == 6000));
        let e = resolve_with(Some("host=a,b,c port=1,2"), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("could not match 2 port numbers to 3 hosts"));
        let e = resolve_with(Some("host=a port=x"), &[]).unwrap_err();
        assert_eq!(crate::domain::exit::code_for(&e), 2);
        let t = resolve_with(Some("hostaddr=127.0.0.1 host=db.example"), &[]).unwrap();
        assert!(is_local(&t));
        assert_eq!(t.endpoints[0].pass_host, "db.example");
    }

    #[test]
    fn libpq_only_tls_parameters_are_lifted_out() {
        let t = resolve_with(
            Some(
                "postgres://u:secret@h/db?sslmode=require&sslrootcert=%2Fca.pem&application_name=x",
            ),
            &[],
        );
        // require with a root file that does not exist: refused, not silently unchecked.
        assert_eq!(crate::domain::exit::code_for(&t.err().unwrap()), 2);
        let t = resolve_with(
            Some("postgres://u:secret@h/db?sslmode=disable&application_name=x"),
            &[],
        )
        .unwrap();
        assert_eq!(t.ssl_mode, SslMode::Disable);
        assert_eq!(t.config.get_application_name(), Some("x"));
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let e = resolve_with(Some(&format!("host=h sslmode={mode}")), &[]).unwrap_err();
            assert_eq!(crate::domain::exit::code_for(&e), 2);
            assert!(format!("{e:#}").contains("sslrootcert=system"), "{e:#}");
        }
        let home = Local {
            user: Some("u".into()),
            home: Some("/nonexistent-home".into()),
        };
        let e = resolve(
            &settings(Some("host=h sslmode=verify-ca"), false),
            &env(&[]),
            &home,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains(
                "root certificate file \"/nonexistent-home/.postgresql/root.crt\" does not exist"
            ),
            "{e:#}"
        );
        // Without a root file, prefer and require check nothing (libpq's behaviour).
        let t = resolve(
            &settings(Some("host=h sslmode=require"), false),
            &env(&[]),
            &home,
        )
        .unwrap();
        assert_eq!(t.roots, Some(Roots::Unchecked));
    }

    #[test]
    fn sslrootcert_system_means_verify_full() {
        let t = resolve_with(Some("host=h sslrootcert=system"), &[]).unwrap();
        assert_eq!(
            (t.ssl_mode, t.roots),
            (SslMode::VerifyFull, Some(Roots::System))
        );
        for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
            let e = resolve_with(
                Some(&format!("host=h sslrootcert=system sslmode={weak}")),
                &[],
            )
            .unwrap_err();
            assert_eq!(crate::domain::exit::code_for(&e), 2);
            assert!(
                format!("{e:#}").contains(&format!("weak sslmode \"{weak}\"")),
                "{e:#}"
            );
        }
    }

    #[test]
    fn a_bad_connection_string_never_shows_the_password() {
        for url in [
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2@h/db?sslmode=bogus",
            "postgres://u:hunter2@h/db?keepalives=bogus",
            "postgres://u:hunter2@h/db?bogus=1",
        ] {
            let e = resolve_with(Some(url), &[]).err().unwrap();
            let text = format!("{e:#}");
            assert!(!text.contains("hunter2"), "{text}");
            assert_eq!(crate::domain::exit::code_for(&e), 2, "{text}");
        }
    }

    #[test]
    fn keyword_strings_keep_their_sslmode() {
        let t = resolve_with(Some("host=db dbname=app user=u sslmode=require"), &[]).unwrap();
        assert_eq!(
            (t.ssl_mode, t.describe()),
            (SslMode::Require, "u@db:5432/app".to_string())
        );
        let t = resolve_with(
            Some("host=db dbname=app sslmode = verify-full sslrootcert=/"),
            &[],
        )
        .unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/")));
    }

    #[test]
    fn pgsslrootcert_comes_from_the_same_environment_as_the_rest() {
        let t = resolve_with(
            Some("postgres://u@h/db?sslmode=verify-full"),
            &[("PGSSLROOTCERT", "/")],
        )
        .unwrap();
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/")));
        let t = resolve_with(
            Some("postgres://u@h/db?sslrootcert=%2Fusr"),
            &[("PGSSLROOTCERT", "/")],
        )
        .unwrap();
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/usr")));
    }

    #[test]
    fn passed_on_keywords_reach_tokio_postgres() {
        let t = resolve_with(
            Some("postgres://h/d?options=-c%20statement_timeout%3D5s&target_session_attrs=read-write"),
            &[],
        )
        .unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c statement_timeout=5s -c search_path=pg_catalog,pg_temp")
        );
        assert_eq!(
            t.config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn every_session_starts_with_a_search_path_without_public() {
        let t = resolve_with(Some("postgres://u@h/db?options=-c%20work_mem%3D64MB"), &[]).unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c work_mem=64MB -c search_path=pg_catalog,pg_temp")
        );
        let t = resolve_with(None, &[]).unwrap();
        assert_eq!(
            t.config.get_options(),
            Some("-c search_path=pg_catalog,pg_temp")
        );
    }

    #[test]
    fn the_password_file_fills_a_missing_password_per_endpoint() {
        let mut t = resolve_with(
            Some("postgres://alice@db1:6000,%2Fvar%2Frun%2Fpostgresql:6000/app"),
            &[],
        )
        .unwrap();
        t.passfile = Some(Passfile::from_text(
            Path::new("/p"),
            "db1:6000:app:alice:one\nlocalhost:6000:*:alice:two\n",
        ));
        let pw: Vec<_> = t
            .endpoints
            .iter()
            .map(|e| {
                Connector::new(&t)
                    .unwrap()
                    .config_for(e)
                    .get_password()
                    .map(<[u8]>::to_vec)
            })
            .collect();
        assert_eq!(pw, [Some(b"one".to_vec()), Some(b"two".to_vec())]);
        assert_eq!(t.password_file_used(), Some(Path::new("/p")));
        // A password given anywhere wins over the file.
        let mut t = resolve_with(
            Some("postgres://alice@db1:6000/app"),
            &[("PGPASSWORD", "env")],
        )
        .unwrap();
        t.passfile = Some(Passfile::from_text(Path::new("/p"), "*:*:*:*:file\n"));
        let cfg = Connector::new(&t).unwrap().config_for(&t.endpoints[0]);
        assert_eq!(cfg.get_password(), Some(&b"env"[..]));
        assert_eq!(t.password_file_used(), None);
    }

    #[test]
    fn every_resolved_variable_is_cleared_by_the_harness() {
        for (_, var) in ENV_FOR {
            assert!(crate::domain::settings::PG_VARS.contains(&var), "{var}");
        }
    }

    #[test]
    fn what_is_worth_retrying() {
        use std::io::ErrorKind;
        assert_eq!(
            Failure::of_sqlstate(&SqlState::CANNOT_CONNECT_NOW),
            Failure::Unreachable
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::ADMIN_SHUTDOWN),
            Failure::Unreachable
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::CONNECTION_FAILURE),
            Failure::Unreachable
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::INVALID_PASSWORD),
            Failure::Refused
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::INVALID_CATALOG_NAME),
            Failure::Refused
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::TOO_MANY_CONNECTIONS),
            Failure::Refused
        );
        assert_eq!(
            Failure::of_sqlstate(&SqlState::QUERY_CANCELED),
            Failure::Refused
        );
        assert_eq!(
            Failure::of_io(ErrorKind::ConnectionRefused),
            Failure::Unreachable
        );
        assert_eq!(Failure::of_io(ErrorKind::NotFound), Failure::Unreachable);
        assert_eq!(Failure::of_io(ErrorKind::TimedOut), Failure::Unreachable);
        assert_eq!(
            Failure::of_io(ErrorKind::PermissionDenied),
            Failure::Refused
        );
        assert_eq!(Failure::of_io(ErrorKind::Other), Failure::Refused);
    }
}
