//! What every database command starts with: merged settings, a connection pool, and a
//! registry that is installed and current.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::{Object, Pool};

use crate::cli::{Format, Global};
use crate::domain::exit::bad_input;
use crate::domain::names;
use crate::domain::selector::Selector;
use crate::domain::settings::{self, Overrides, Settings, HOME_SERVER};
use crate::output::{count, listed, plural};
use crate::pg::connect::{self, Target};
use crate::pg::servers::Servers;
use crate::registry::{self, Tenant};
use crate::tenant::citus::Backend;
use crate::tenant::shared::SharedSet;

pub struct Session {
    pub settings: Settings,
    pub target: Target,
    /// `home` (`target`) and the configured `[servers.NAME]`.
    pub servers: Servers,
    pub format: Format,
    /// `--lock-timeout`, when given.
    pub lock_timeout: Option<Duration>,
    /// What `connect` found the server to be (plain PostgreSQL until then).
    backend: std::sync::OnceLock<Backend>,
    /// What each other place (server, database) is, detected on its first connection
    /// (`detect_place`, which `open_place` and `connect_place` call): the backend belongs
    /// to the place a tenant lives in, not to home.
    places: std::sync::Mutex<BTreeMap<(String, String), Backend>>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

impl Session {
    /// Merges the settings and resolves the connection; opens nothing yet.
    pub fn new(global: &Global, concurrency: Option<u16>) -> Result<Session> {
        let overrides = Overrides {
            config: global.config.clone().filter(|p| !p.as_os_str().is_empty()),
            database_url: non_empty(global.database_url.clone()),
            migrations: global
                .migrations
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            concurrency: concurrency.map(usize::from),
            connect_timeout: global.connect_timeout,
        };
        let settings = settings::load(overrides)?;
        let local = connect::Local::current();
        let target = connect::resolve(&settings, &settings::pg_env(), &local)?;
        let servers = Servers::new(target.clone(), &settings, local);
        Ok(Session {
            settings,
            target,
            servers,
            format: global.format,
            lock_timeout: global.lock_timeout.map(Duration::from_millis),
            backend: std::sync::OnceLock::new(),
            places: Default::default(),
        })
    }

    /// How long backup, drop, restore and registry upgrades wait for a lock: `--lock-timeout`,
    /// else `locks::DEFAULT_DEADLINE`.
    pub fn lock_deadline(&self) -> Duration {
        self.lock_timeout
            .unwrap_or(crate::registry::locks::DEFAULT_DEADLINE)
    }

    /// How long migrate waits for a server that went away mid-run: the connect timeout.
    pub fn connect_budget(&self) -> Duration {
        Duration::from_secs(self.settings.connect_timeout_secs.max(1))
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// --concurrency or [migrations] concurrency, else a default from measurement: tenant
    /// DDL is bound by the server's CPU (on 2 cores, 2 and 4 sessions tie, 8 is slower, 1
    /// is half as fast), so a local server gets one session per core (at least 2), and a
    /// remote one, whose cores SQL cannot see, gets 4 to hide network latency. Either way
    /// fit_concurrency then caps it by the server's free connections.
    pub fn concurrency(&self) -> usize {
        self.settings.concurrency.unwrap_or_else(|| {
            if connect::is_local(&self.target) {
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .max(2)
            } else {
                settings::DEFAULT_CONCURRENCY
            }
        })
    }

    /// The schema names of `slugs`, refusing names PostgreSQL would truncate or reserves.
    pub fn schemas_for(&self, slugs: &[String]) -> Result<Vec<String>> {
        slugs
            .iter()
            .map(|s| {
                names::schema_name(&self.settings.schema_prefix, s)
                    .map_err(|e| bad_input(e.to_string()))
            })
            .collect()
    }

    /// The shared migrations (`[migrations] shared_dir`), loaded and checked; `None` when
    /// none are configured.
    pub fn shared_set(&self) -> Result<Option<SharedSet>> {
        let Some(dir) = &self.settings.shared_dir else {
            return Ok(None);
        };
        SharedSet::load(
            dir,
            &self.settings.shared_schema,
            &self.settings.migrations_dir,
        )
        .map(Some)
    }

    /// A pool of `size` connections and one connection from it, with the registry current.
    pub async fn connect(&self, size: usize) -> Result<(Pool, Object)> {
        let pool = connect::pool(&self.target, size)?;
        let mut conn = connect::first_connection(&pool, &self.target).await?;
        // Before the registry: nothing is installed on a Citus worker node.
        let backend = Backend::detect(
            &conn,
            self.settings.citus_distribute,
            &self.target.describe(),
        )
        .await?;
        let _ = self.backend.set(backend);
        registry::ensure(&mut conn, self.lock_deadline()).await?;
        Ok((pool, conn))
    }

    /// The server's kind (plain PostgreSQL or a Citus coordinator), as `connect` found it.
    pub fn backend(&self) -> &Backend {
        static PLAIN: Backend = Backend::Plain;
        self.backend.get().unwrap_or(&PLAIN)
    }

    /// The concurrency the server can take: `wanted`, or fewer when the server lacks free
    /// connections (two are left for everyone else). `keeps_conn`: the command keeps `conn`
    /// for itself during the run instead of handing it to a worker (migrate's run mark).
    /// Says so on stderr when it cuts.
    pub async fn fit_concurrency(
        &self,
        conn: &Object,
        wanted: usize,
        keeps_conn: bool,
    ) -> Result<usize> {
        const LEAVE_FREE: i64 = 2;
        // Our own connection is already counted as used; unless kept, a worker reuses it.
        let reused = if keeps_conn { 0 } else { 1 };
        let room = connect::free_connection_slots(conn).await? + reused - LEAVE_FREE;
        if room < 1 {
            anyhow::bail!(
                "the server at {} has no free connections (max_connections is reached); \
                 close idle sessions or raise max_connections",
                self.target.describe()
            );
        }
        let fit = wanted.min(room as usize);
        if fit < wanted {
            crate::errln!(
                "note: the server has room for {fit} more {}, so tenantctl runs {} at a time \
                 instead of {wanted}",
                plural(fit, "connection"),
                count(fit, "tenant")
            );
        }
        Ok(fit)
    }

    /// The database holding the registry (on `home`).
    pub fn home_database(&self) -> &str {
        self.target.config.get_dbname().unwrap_or_default()
    }

    /// Answers `schema_exists` for the tenants that live elsewhere than the registry's
    /// database, asking each of their servers (one connection per database). A server that
    /// cannot be reached leaves its tenants' answer `false`; the returned errors name it.
    pub async fn check_schemas_elsewhere(&self, tenants: &mut [Tenant]) -> Vec<String> {
        let home_db = self.home_database().to_string();
        let mut places: Vec<(String, String)> = tenants
            .iter()
            .filter(|t| !t.is_home(&home_db))
            .map(|t| (t.server.clone(), t.database.clone()))
            .collect();
        places.sort();
        places.dedup();
        let mut errors = Vec::new();
        for (server, database) in places {
            let schemas: Vec<String> = tenants
                .iter()
                .filter(|t| t.server == server && t.database == database)
                .map(|t| t.schema.clone())
                .collect();
            match self.schemas_at(&server, &database, &schemas).await {
                Ok(found) => {
                    for t in tenants
                        .iter_mut()
                        .filter(|t| t.server == server && t.database == database)
                    {
                        t.schema_exists = found.contains(&t.schema);
                    }
                }
                Err(e) => errors.push(format!(
                    "cannot check the tenants on server {server} (database {database}): {e:#}"
                )),
            }
        }
        errors
    }

    /// Which of `schemas` exist in database `database` of server `server`.
    async fn schemas_at(
        &self,
        server: &str,
        database: &str,
        schemas: &[String],
    ) -> Result<Vec<String>> {
        let (_pool, conn) = self.open_place(server, database, 1).await?;
        registry::existing_schemas(&conn, schemas).await
    }

    /// Whether tenant `t` lives in the registry's own database.
    pub fn at_home(&self, t: &Tenant) -> bool {
        t.is_home(self.home_database())
    }

    /// A pool of `size` connections to database `database` of server `server`, and one
    /// connection from it, the place's backend detected (`detect_place`). An unknown
    /// server, an unset password variable or a Citus worker is bad input (exit 2); a server
    /// that does not answer is an error naming it (exit 1).
    pub async fn connect_place(
        &self,
        server: &str,
        database: &str,
        size: usize,
    ) -> Result<(Pool, Object)> {
        let target = self.servers.target_db(server, database)?;
        let (pool, conn) = Self::open_target(&target, size)
            .await
            .with_context(|| format!("cannot reach server {server} (database {database})"))?;
        self.detect_place(server, database, &conn).await?;
        Ok((pool, conn))
    }

    /// [`Session::connect_place`] for callers whose errors name the place themselves.
    pub async fn open_place(
        &self,
        server: &str,
        database: &str,
        size: usize,
    ) -> Result<(Pool, Object)> {
        let target = self.servers.target_db(server, database)?;
        let (pool, conn) = Self::open_target(&target, size).await?;
        self.detect_place(server, database, &conn).await?;
        Ok((pool, conn))
    }

    /// Finds out, once per place, what database `database` of server `server` is (plain
    /// PostgreSQL or a Citus coordinator; one query on `conn`, a connection there), for
    /// `backend_at`. A Citus worker is refused (exit 2), naming its coordinator: tenants
    /// made there would bypass Citus. Home's own database is `connect`'s.
    pub async fn detect_place(&self, server: &str, database: &str, conn: &Object) -> Result<()> {
        let key = (server.to_string(), database.to_string());
        if self.is_home_place(server, database) || self.known_place(&key).is_some() {
            return Ok(());
        }
        let at = format!("server {server} (database {database})");
        let backend = Backend::detect(conn, self.settings.citus_distribute, &at).await?;
        self.lock_places().insert(key, backend);
        Ok(())
    }

    /// The backend of the place (server, database): home's for the registry's database,
    /// what `detect_place` found for the others (plain PostgreSQL for a place no
    /// connection has been opened to).
    pub fn backend_at(&self, server: &str, database: &str) -> Backend {
        if self.is_home_place(server, database) {
            return self.backend().clone();
        }
        self.known_place(&(server.to_string(), database.to_string()))
            .unwrap_or_default()
    }

    fn is_home_place(&self, server: &str, database: &str) -> bool {
        server == HOME_SERVER && database == self.home_database()
    }

    fn known_place(&self, key: &(String, String)) -> Option<Backend> {
        self.lock_places().get(key).cloned()
    }

    fn lock_places(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Backend>> {
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn open_target(target: &Target, size: usize) -> Result<(Pool, Object)> {
        let pool = connect::pool(target, size)?;
        let conn = connect::first_connection(&pool, target).await?;
        Ok((pool, conn))
    }

    /// The role that holds a tenant's data privileges: its own role when it was created with
    /// per-tenant roles, else the configured application role (none without one).
    pub fn data_role<'a>(&'a self, t: &'a Tenant) -> Option<&'a str> {
        t.role.as_deref().or(self.settings.app_role.as_deref())
    }

    /// Fails with exit 2 when a configured application role does not exist.
    pub async fn check_app_role(&self, conn: &Object) -> Result<Option<String>> {
        let Some(role) = self.settings.app_role.clone() else {
            return Ok(None);
        };
        if !registry::role_exists(conn, &role).await? {
            return Err(bad_input(format!(
                "application role '{role}' does not exist; create it (CREATE ROLE \"{role}\" LOGIN) \
                 or change [tenants] app_role in {}",
                self.settings.describe_config()
            )));
        }
        Ok(Some(role))
    }
}

/// The registered tenants among `slugs` (repeats ignored), and the slugs nobody registered.
pub async fn lookup(conn: &Object, slugs: &[String]) -> Result<(Vec<Tenant>, Vec<String>)> {
    let slugs = dedup(slugs);
    let found = registry::some(conn, &slugs).await?;
    let unknown = slugs
        .into_iter()
        .filter(|x| !found.iter().any(|t| &t.slug == x))
        .collect();
    Ok((found, unknown))
}

/// The named tenants, or every tenant when none is named. Unknown slugs are refused all
/// together (exit 2); `nothing` says what was therefore not done.
pub async fn select_tenants(conn: &Object, slugs: &[String], nothing: &str) -> Result<Vec<Tenant>> {
    if slugs.is_empty() {
        return registry::all(conn).await;
    }
    let (found, unknown) = lookup(conn, slugs).await?;
    if !unknown.is_empty() {
        return Err(bad_input(format!(
            "unknown {}; {nothing} (see tenantctl list)",
            listed("tenant", &unknown)
        )));
    }
    Ok(found)
}

/// The tenants a command works on: those named, or those `selector` picks (one registry
/// query), or every tenant. Naming slugs and giving a selector is bad input.
pub async fn pick_tenants(
    conn: &Object,
    slugs: &[String],
    selector: Option<&Selector>,
    nothing: &str,
) -> Result<Vec<Tenant>> {
    match selector {
        Some(_) if !slugs.is_empty() => Err(bad_input(format!(
            "name tenants or give -l/--selector, not both; {nothing}"
        ))),
        Some(sel) => registry::selected(conn, sel).await,
        None => select_tenants(conn, slugs, nothing).await,
    }
}

/// Removes repeated slugs, keeping the first occurrence.
pub fn dedup(slugs: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    slugs
        .iter()
        .filter(|s| seen.insert(s.as_str()))
        .cloned()
        .collect()
}

/// With per-tenant roles the application role must not inherit them: PostgreSQL 16+ says so
/// per grant, but on 15 inheritance is an attribute of the member, so an INHERIT role would
/// hold every tenant's privileges without SET ROLE. Returns the server's major version.
pub async fn check_app_role_noinherit(conn: &Object, app: &str) -> Result<i32> {
    let major = registry::server_major(conn).await?;
    if major < 16 && registry::role_inherits(conn, app).await? {
        return Err(bad_input(format!(
            "application role '{app}' inherits the privileges of roles granted to it, so with \
             per_tenant_roles it would reach every tenant without SET ROLE; on PostgreSQL {major} \
             run ALTER ROLE \"{app}\" NOINHERIT first"
        )));
    }
    Ok(major)
}

/// Asks the operator to type `slug` before something destructive; refuses without a terminal.
pub fn confirm_by_typing(slug: &str, what: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return Err(bad_input(format!(
            "refusing to {what} without --yes: stdin is not a terminal, so nobody can confirm; nothing was changed"
        )));
    }
    crate::errprint!("This will {what}. Type the slug '{slug}' to confirm: ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    if answer.trim() != slug {
        return Err(bad_input(format!(
            "confirmation did not match '{slug}'; nothing was changed"
        )));
    }
    Ok(())
}

/// Seconds since the Unix epoch, for timestamps recorded after a transaction rolled back.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
