//! The whole command surface. Help, the man page and shell completions are generated from
//! these definitions, so each flag is documented here and nowhere else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::names;

#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    about = "Schema-per-tenant PostgreSQL: a tenant registry, quoted tenant schemas with grants, \
             and migrations applied to every tenant concurrently.",
    after_help = "Exit codes: 0 success; 1 something failed (a tenant, the server, status --check, \
                  verify findings); 2 bad input, nothing changed; 130 interrupted by Ctrl-C."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// tenants.toml to read (default: ./tenants.toml when present).
    #[arg(long, global = true, env = "TENANTCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostgreSQL connection string (postgres://user@host:port/db or 'host=... dbname=...').
    /// Without it: [database] url from tenants.toml, then libpq's PGHOST, PGPORT, PGUSER,
    /// PGPASSWORD, PGDATABASE, PGSSLMODE, ~/.pgpass and libpq's defaults (the local socket).
    /// Prefer the environment or ~/.pgpass over the flag for passwords: command lines are
    /// visible to other users.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Folder of tenant migrations named V<version>__<name>.sql (default: ./migrations).
    #[arg(long, global = true, env = "TENANTCTL_MIGRATIONS", value_name = "DIR")]
    pub migrations: Option<PathBuf>,

    /// Output: text (tables, progress on a terminal) or json (one document on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Seconds to keep trying to reach the server before giving up (default 5); also how
    /// long migrate waits for a server that went away mid-run before it stops.
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout: Option<u64>,

    /// How long to wait for a lock before giving up, e.g. 500ms, 5s, 1m; the error names
    /// the session holding it. For backup, drop, restore and registry upgrades (the
    /// implicit init of every command): a tenant's lock, its tables (pg_dump's
    /// --lock-wait-timeout too), the registry's tables; default 1m. For migrate: a tenant's lock held by anything but another tenantctl
    /// (which it waits for) and the application's locks on the tenant's tables; that
    /// tenant fails and the fleet goes on; default: wait.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub lock_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade the tenant registry (public.tenants and friends). Idempotent;
    /// every other command does it when the registry is missing.
    Init,

    /// Register tenants, create their schemas, apply the grants and run every migration.
    /// A tenant is created completely or not at all.
    Create(CreateArgs),

    /// Bring tenants (all when none is named) to the latest or --target version.
    Migrate(MigrateArgs),

    /// One row per tenant: state, version, pending migrations, last error.
    Status(StatusArgs),

    /// Destroy tenants' schemas and everything in them, leaving a record of the drop.
    Drop(DropArgs),

    /// The registered tenants, one a line: slug, schema, state.
    List,

    /// Dump one tenant's schema (pg_dump custom format), with its registry row and version
    /// recorded beside it in FILE.json, and print the dump's SHA-256.
    Backup(BackupArgs),

    /// Replace one tenant's schema with a backup, or restore it as a new tenant with --as.
    /// No other tenant is touched; grants are re-applied; migrate brings it current.
    Restore(RestoreArgs),

    /// Audit isolation and drift: missing or foreign-owned schemas and objects, privileges
    /// beyond the configured ones (tables, columns, default privileges, role memberships, the
    /// registry, CREATE on public), missing grants, SECURITY DEFINER functions, views reading
    /// other schemas, unregistered tenant schemas, registry versions that disagree with the
    /// schemas' history, changed migration files. Exit 1 on any finding.
    Verify(VerifyArgs),

    /// Where an application reaches a tenant: its state, server, database, schema and role,
    /// and the statements that enter it per transaction.
    ///
    /// The pattern behind those statements is docs/application-routing.md. Reads only.
    /// Exit 0 when requests may be routed to it (active, or migrating: each tenant's
    /// migration is one transaction); 1 when it is registered but must not be served
    /// (provisioning, failed, dropping, or any later state), with its route and state still
    /// printed; 2 when no such tenant is registered.
    Route(RouteArgs),
    /// Re-apply the configured grants ([tenants] app_role, per-tenant roles) to tenants (all
    /// when none is named): schema USAGE, default privileges, and the data privileges on every
    /// table and sequence the data role holds nothing on. For tenants created before app_role
    /// was set. Adds only; one transaction per tenant, under its lock.
    Grant(GrantArgs),

    /// Take over schemas another tool made (django-tenants, apartment, a script, refinery's
    /// CLI): register them as tenants at the version their own refinery history says, or at
    /// --baseline V. Each schema's structure is first compared with what the migration files
    /// build at that version; one that differs is refused with the differences, unless
    /// --accept-drift. The configured grants are applied. One transaction per schema, under
    /// its lock; a schema already registered is left alone. Exit 1 when any is refused.
    Adopt(AdoptArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) to stdout.
    Man,
}

fn slug(s: &str) -> Result<String, String> {
    names::validate_slug(s)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Tenant slugs: a-z, 0-9, '-' and '_', starting with a letter or digit.
    #[arg(required = true, value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Display name stored in the registry (only with a single slug).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Skip tenants that are already registered instead of refusing the command.
    #[arg(long)]
    pub if_not_exists: bool,

    /// Tenants created at once (default: [migrations] concurrency, else 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Tenants to migrate (default: every registered tenant).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Stop at this migration version instead of the latest.
    #[arg(long, value_name = "VERSION")]
    pub target: Option<i64>,

    /// Print each tenant's pending migrations and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Start no new tenant after the first failure.
    #[arg(long)]
    pub fail_fast: bool,

    /// Migrate N tenants first; go on to the rest only if all of them succeeded.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canary: Option<u32>,

    /// Tenants migrated at once (default: [migrations] concurrency, else 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,
}

/// `250ms`, `5s`, `2m` or a bare number of milliseconds, as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 5s or 1m"))?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        _ => return Err(format!("'{s}' is not a duration like 500ms, 5s or 1m")),
    };
    // PostgreSQL's lock_timeout is an int of milliseconds (about 24.8 days at most).
    match n.checked_mul(factor) {
        Some(ms) if ms > 0 && ms <= i32::MAX as u64 => Ok(ms),
        _ => Err(format!("'{s}' must be between 1ms and a few days")),
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Tenants to show (default: all).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Exit 1 when any tenant is not active at the latest version (a CI gate).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The tenant to back up.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// Dump file to write (default: ./<slug>-<UTC time>.dump), and FILE.json beside it;
    /// both created 0600, never over an existing file or through a symbolic link.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The tenant the backup was made of.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// The dump written by tenantctl backup (its FILE.json must sit beside it).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Restore as a new tenant with this slug instead of replacing SLUG.
    #[arg(long = "as", value_name = "NEW_SLUG", value_parser = slug)]
    pub as_slug: Option<String>,

    /// Replace an existing tenant without asking (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Tenants to audit (default: all, plus schemas with the tenant prefix and no registry row).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Also compare each tenant's tables, columns, indexes, constraints, sequences, functions
    /// and triggers with what the migration files build at its version (built in a scratch
    /// schema, rolled back afterwards); each difference is a finding such as missing_column
    /// or extra_index (docs/switching.md lists them).
    #[arg(long)]
    pub structure: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["slugs", "all"])))]
pub struct AdoptArgs {
    /// Tenants to adopt by slug: the schema is [tenants] schema_prefix + SLUG.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Adopt every schema whose name starts with the schema prefix and that no tenant is
    /// registered for; its slug is the rest of the name (refused, with the reason, when that
    /// is not a valid slug).
    #[arg(long)]
    pub all: bool,

    /// For schemas without a refinery history (refinery_schema_history): they are at this
    /// migration version. Writes the history rows of V1..V and records them as baselined,
    /// not run. A schema with a history is adopted at the version it says.
    #[arg(long, value_name = "V")]
    pub baseline: Option<i64>,

    /// Adopt schemas whose structure differs from what the migration files build at their
    /// version (the differences are still listed).
    #[arg(long)]
    pub accept_drift: bool,

    /// Print what would be adopted, at which version, and why not; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Tenants to grant on (default: every registered tenant).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DropArgs {
    /// Tenants to destroy.
    #[arg(required = true, value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Treat unknown tenants as already dropped instead of refusing the command.
    #[arg(long)]
    pub if_exists: bool,

    /// Back each tenant up into this folder first (see backup); refuse to drop any tenant
    /// if a backup fails. The drop record keeps the archive's file name and SHA-256.
    /// The folder must exist unless --create-dir is given.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,

    /// Create the --archive folder (mode 0700) when it does not exist.
    #[arg(long, requires = "archive")]
    pub create_dir: bool,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The tenant to route to.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_surface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("5s"), Ok(5000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("5 hours").is_err());
        assert!(parse_duration_ms("s").is_err());
    }

    #[test]
    fn invalid_slugs_are_usage_errors() {
        let err = Cli::try_parse_from(["tenantctl", "create", "Acme"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("a-z, 0-9"), "{err}");
    }
}
