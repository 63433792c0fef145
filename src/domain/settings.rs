//! Settings: the command line beats the environment, which beats tenants.toml, which beats
//! the defaults. This module only merges values; it opens no connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::domain::exit::bad_input;
use crate::domain::names;

/// The default concurrency against a remote server (see Session::concurrency for the rule
/// and the README's Performance section for the measurement).
pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_PREFIX: &str = "tenant_";
pub const DEFAULT_CONFIG: &str = "tenants.toml";
pub const DEFAULT_MIGRATIONS: &str = "migrations";
/// Where shared migrations go when `[migrations] shared_schema` is not set.
pub const DEFAULT_SHARED_SCHEMA: &str = "public";

/// tenants.toml, as written by the operator. Unknown keys are errors that name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub migrations: MigrationsSection,
    #[serde(default)]
    pub tenants: TenantsSection,
    /// `[servers.NAME]`: the other PostgreSQL servers tenants may live on (docs/placements.md).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSection>,
    /// `[citus]`: how tenants are made on a Citus coordinator (docs/citus.md).
    #[serde(default)]
    pub citus: CitusSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitusSection {
    /// New tenant schemas become Citus distributed schemas (default true).
    pub distribute: Option<bool>,
}

/// One `[servers.NAME]` table: where the server is, and which environment variable holds
/// its password (never the file itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub url: String,
    pub password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
    pub connect_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationsSection {
    pub dir: Option<PathBuf>,
    pub concurrency: Option<usize>,
    /// Folder of shared migrations (tables every tenant shares), applied once per server
    /// before any tenant's.
    pub shared_dir: Option<PathBuf>,
    /// The schema the shared migrations run in (default `public`).
    pub shared_schema: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsSection {
    pub schema_prefix: Option<String>,
    pub app_role: Option<String>,
    pub per_tenant_roles: Option<bool>,
    /// SQL run in each new tenant after its migrations (`create`), relative to the file.
    pub seed: Option<PathBuf>,
    pub default_server: Option<String>,
}

/// What the command line and the environment supplied (None when absent or empty).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub database_url: Option<String>,
    pub migrations: Option<PathBuf>,
    pub concurrency: Option<usize>,
    pub connect_timeout: Option<u64>,
}

/// The merged settings every command works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    /// The connection string from the flag, DATABASE_URL or tenants.toml, if any.
    pub database_url: Option<String>,
    /// Whether `database_url` came from tenants.toml (then PG* variables override it).
    pub url_from_file: bool,
    pub migrations_dir: PathBuf,
    pub concurrency: Option<usize>,
    pub connect_timeout_secs: u64,
    pub schema_prefix: String,
    pub app_role: Option<String>,
    /// Each tenant gets a NOLOGIN role (named like its schema) holding its data privileges;
    /// the application reaches a tenant only by `SET ROLE`.
    pub per_tenant_roles: bool,
    /// `[tenants] seed`, resolved against the config file's folder.
    pub seed: Option<PathBuf>,
    /// `[migrations] shared_dir` (resolved against the config file's folder), when set.
    pub shared_dir: Option<PathBuf>,
    /// `[migrations] shared_schema`, checked (see `check_shared_schema`).
    pub shared_schema: String,
    /// The configured other servers, by name (never `home`).
    pub servers: BTreeMap<String, ServerSection>,
    /// Where `create` puts tenants without `--server` (`home` by default).
    pub default_server: String,
    /// `[citus] distribute`: on a Citus coordinator, new tenant schemas are distributed.
    pub citus_distribute: bool,
}

/// Refuses a shared schema name tenantctl could not keep apart from the tenants' schemas or
/// PostgreSQL's own: lower-case letters, digits and `_`, not `pg_*` or `information_schema`,
/// and not starting with the tenant schema prefix.
pub fn check_shared_schema(name: &str, prefix: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if name.is_empty()
        || name.len() > names::MAX_IDENTIFIER_BYTES
        || !name.chars().all(allowed)
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "[migrations] shared_schema '{}' must be 1 to {} of a-z, 0-9 and '_', not starting with a digit",
            name.escape_debug(),
            names::MAX_IDENTIFIER_BYTES
        ));
    }
    if name.starts_with("pg_") || name == "information_schema" {
        return Err(format!(
            "[migrations] shared_schema '{name}' is reserved by PostgreSQL; choose another name"
        ));
    }
    if !prefix.is_empty() && name.starts_with(prefix) {
        return Err(format!(
            "[migrations] shared_schema '{name}' starts with the tenant schema prefix '{prefix}', so it could be taken for a tenant's schema; choose a name without it"
        ));
    }
    Ok(())
}

/// The name of the server holding the registry: the one tenantctl connects to.
pub const HOME_SERVER: &str = "home";

/// Refuses a server name that is not a-z, 0-9, '-' and '_' (1 to 63 characters, starting
/// with a letter), since it is shown in tables and stored in the registry.
pub fn validate_server_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "server name '{}' must start with a-z and hold only a-z, 0-9, '-' and '_' (at most 63)",
            name.escape_debug()
        ))
    }
}

/// Checks the `[servers]` tables and `[tenants] default_server` (exit 2 on any mistake).
fn check_servers(servers: &BTreeMap<String, ServerSection>, default_server: &str) -> Result<()> {
    for (name, server) in servers {
        validate_server_name(name).map_err(|e| bad_input(format!("[servers.{name}] {e}")))?;
        if name == HOME_SERVER {
            return Err(bad_input(format!(
                "[servers.{HOME_SERVER}]: '{HOME_SERVER}' is the server tenantctl connects to \
                 ([database] url), which holds the registry; give the other server another name"
            )));
        }
        if server.url.trim().is_empty() {
            return Err(bad_input(format!("[servers.{name}] url is empty")));
        }
        if let Some(var) = &server.password_env {
            if var.trim().is_empty() {
                return Err(bad_input(format!(
                    "[servers.{name}] password_env is empty: name the environment variable \
                     holding the password"
                )));
            }
        }
    }
    if default_server != HOME_SERVER && !servers.contains_key(default_server) {
        return Err(bad_input(format!(
            "[tenants] default_server '{}' is not a configured server (configured: {})",
            default_server.escape_debug(),
            server_names(servers).join(", ")
        )));
    }
    Ok(())
}

/// `home` and every configured server's name.
pub fn server_names(servers: &BTreeMap<String, ServerSection>) -> Vec<String> {
    std::iter::once(HOME_SERVER.to_string())
        .chain(servers.keys().cloned())
        .collect()
}

/// Reads tenants.toml (when there is one) and merges it under the overrides.
pub fn load(overrides: Overrides) -> Result<Settings> {
    let explicit = overrides.config.clone();
    let path = match explicit {
        Some(p) => Some(p),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()),
    };
    let file = match &path {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let base = path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    merge(overrides, file, path, base)
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("cannot read config file {}: {e}", path.display())))?;
    parse_file(&text).map_err(|msg| bad_input(format!("config file {}: {msg}", path.display())))
}

/// Parses tenants.toml text; the error names the line and, for a typo, the key.
pub fn parse_file(text: &str) -> std::result::Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim().to_string();
        match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        }
    })
}

/// Merges overrides > file > defaults. `base` is the config file's folder, against which
/// relative paths in the file resolve.
pub fn merge(
    o: Overrides,
    file: FileConfig,
    config_file: Option<PathBuf>,
    base: Option<PathBuf>,
) -> Result<Settings> {
    let resolve = |p: PathBuf| match &base {
        Some(b) if p.is_relative() && !b.as_os_str().is_empty() => b.join(p),
        _ => p,
    };
    let file_url = file.database.url.filter(|u| !u.trim().is_empty());
    let url_from_file = o.database_url.is_none() && file_url.is_some();
    let prefix = file
        .tenants
        .schema_prefix
        .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    names::validate_prefix(&prefix).map_err(|e| bad_input(format!("[tenants] {e}")))?;
    let concurrency = o.concurrency.or(file.migrations.concurrency);
    if concurrency == Some(0) {
        return Err(bad_input("concurrency must be at least 1"));
    }
    let app_role = file.tenants.app_role.filter(|r| !r.is_empty());
    let per_tenant_roles = file.tenants.per_tenant_roles.unwrap_or(false);
    let shared_schema = file
        .migrations
        .shared_schema
        .unwrap_or_else(|| DEFAULT_SHARED_SCHEMA.to_string());
    check_shared_schema(&shared_schema, &prefix).map_err(bad_input)?;
    let default_server = file
        .tenants
        .default_server
        .unwrap_or_else(|| HOME_SERVER.to_string());
    check_servers(&file.servers, &default_server)?;
    if per_tenant_roles && app_role.is_none() {
        return Err(bad_input(
            "[tenants] per_tenant_roles needs [tenants] app_role: the role that will SET ROLE to each tenant's role",
        ));
    }
    Ok(Settings {
        config_file,
        database_url: o.database_url.or(file_url),
        url_from_file,
        migrations_dir: o
            .migrations
            .or_else(|| file.migrations.dir.map(resolve))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MIGRATIONS)),
        shared_dir: file.migrations.shared_dir.map(resolve),
        seed: file.tenants.seed.map(resolve),
        shared_schema,
        concurrency,
        connect_timeout_secs: o
            .connect_timeout
            .or(file.database.connect_timeout)
            .unwrap_or(5),
        schema_prefix: prefix,
        app_role,
        per_tenant_roles,
        servers: file.servers,
        default_server,
        citus_distribute: file.citus.distribute.unwrap_or(true),
    })
}

/// The libpq variables tenantctl honours (tokio-postgres reads none of them itself);
/// `connect::ENV_FOR` says which keyword each fills.
pub const PG_VARS: [&str; 10] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
];

/// The PG_VARS that are set and not empty, read once from the process environment.
pub fn pg_env() -> BTreeMap<&'static str, String> {
    PG_VARS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect()
}

impl Settings {
    /// Describes where the config came from, for error messages.
    pub fn describe_config(&self) -> String {
        match &self.config_file {
            Some(p) => p.display().to_string(),
            None => "no config file".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        parse_file(text).unwrap()
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = file("[migrations]\ndir = \"db/m\"\nconcurrency = 3\n[database]\nurl = \"postgres://f/db\"\n");
        let o = Overrides {
            database_url: Some("postgres://flag/db".into()),
            concurrency: Some(7),
            ..Default::default()
        };
        let s = merge(o, f, None, Some(PathBuf::from("/etc/t"))).unwrap();
        assert_eq!(s.database_url.as_deref(), Some("postgres://flag/db"));
        assert!(!s.url_from_file);
        assert_eq!(s.concurrency, Some(7));
        assert_eq!(s.migrations_dir, PathBuf::from("/etc/t/db/m"));
    }

    #[test]
    fn file_beats_default_and_paths_resolve_against_its_folder() {
        let f = file("[database]\nurl = \"postgres://f/db\"\n[migrations]\ndir = \"m\"\n[tenants]\nschema_prefix = \"clinic_\"\napp_role = \"app\"\n");
        let s = merge(Overrides::default(), f, None, Some(PathBuf::from("conf"))).unwrap();
        assert_eq!(s.database_url.as_deref(), Some("postgres://f/db"));
        assert!(s.url_from_file);
        assert_eq!(s.migrations_dir, PathBuf::from("conf/m"));
        assert_eq!(s.schema_prefix, "clinic_");
        assert_eq!(s.app_role.as_deref(), Some("app"));
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let s = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        assert_eq!(s.migrations_dir, PathBuf::from("migrations"));
        assert_eq!(s.schema_prefix, "tenant_");
        assert_eq!(s.concurrency, None);
        assert!(s.app_role.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            parse_file("[migrations]\ndir = \"m\"\n[tenants]\nschema_prefx = \"x\"\n").unwrap_err();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("schema_prefx"), "{err}");
    }

    #[test]
    fn citus_section_defaults_to_distributing_and_names_unknown_keys() {
        let on = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        assert!(on.citus_distribute);
        let off = merge(
            Overrides::default(),
            file("[citus]\ndistribute = false\n"),
            None,
            None,
        )
        .unwrap();
        assert!(!off.citus_distribute);
        let err = parse_file("[citus]\ndistribute = true\nshards = 4\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("shards"), "{err}");
        let err = parse_file("[citus]\ndistribute = \"yes\"\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn malformed_file_names_the_line() {
        let err = parse_file("[database]\nurl = \"postgres://x\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
    }

    #[test]
    fn servers_are_read_and_checked() {
        let f = file("[servers.eu-2]\nurl = \"postgres://u@h/db\"\npassword_env = \"EU2_PW\"\n[tenants]\ndefault_server = \"eu-2\"\n");
        let s = merge(Overrides::default(), f, None, None).unwrap();
        assert_eq!(s.default_server, "eu-2");
        assert_eq!(s.servers["eu-2"].password_env.as_deref(), Some("EU2_PW"));
        let defaults = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        assert_eq!(defaults.default_server, HOME_SERVER);
        for bad in [
            "[tenants]\ndefault_server = \"nowhere\"\n",
            "[servers.home]\nurl = \"postgres://h/db\"\n",
            "[servers.Bad]\nurl = \"postgres://h/db\"\n",
            "[servers.x]\nurl = \"\"\n",
            "[servers.x]\nurl = \"postgres://h/db\"\npassword_env = \"\"\n",
        ] {
            let e = merge(Overrides::default(), file(bad), None, None).unwrap_err();
            assert_eq!(crate::domain::exit::code_for(&e), 2, "{bad}");
        }
        let err =
            parse_file("[servers.x]\nurl = \"postgres://h/db\"\npassword = \"s\"\n").unwrap_err();
        assert!(err.contains("password"), "{err}");
    }

    #[test]
    fn bad_prefix_and_zero_concurrency_are_bad_input() {
        let f = file("[tenants]\nschema_prefix = \"Bad\"\n");
        let e = merge(Overrides::default(), f, None, None).unwrap_err();
        assert_eq!(crate::domain::exit::code_for(&e), 2);
        let f = file("[migrations]\nconcurrency = 0\n");
        let e = merge(Overrides::default(), f, None, None).unwrap_err();
        assert_eq!(crate::domain::exit::code_for(&e), 2);
    }

    #[test]
    fn shared_migrations_resolve_against_the_file_and_their_schema_is_checked() {
        let f = file("[migrations]\nshared_dir = \"shared\"\nshared_schema = \"common\"\n");
        let s = merge(Overrides::default(), f, None, Some(PathBuf::from("conf"))).unwrap();
        assert_eq!(s.shared_dir, Some(PathBuf::from("conf/shared")));
        let f = file("[tenants]\nseed = \"seed.sql\"\n");
        let seeded = merge(Overrides::default(), f, None, Some(PathBuf::from("conf"))).unwrap();
        assert_eq!(seeded.seed, Some(PathBuf::from("conf/seed.sql")));
        assert_eq!(s.shared_schema, "common");
        let s = merge(Overrides::default(), FileConfig::default(), None, None).unwrap();
        assert_eq!((s.shared_dir, s.shared_schema.as_str()), (None, "public"));
        for bad in [
            "pg_x",
            "Common",
            "tenant_shared",
            "a-b",
            "",
            "information_schema",
        ] {
            let f = file(&format!("[migrations]\nshared_schema = \"{bad}\"\n"));
            let e = merge(Overrides::default(), f, None, None).unwrap_err();
            assert_eq!(crate::domain::exit::code_for(&e), 2, "{bad}");
        }
    }
}
