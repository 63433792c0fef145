//! The whole command surface. Help, the man page and shell completions are generated from
//! these definitions, so each flag is documented here and nowhere else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::budget::{self, MaxFailures};
use crate::domain::names;
use crate::domain::selector::{self, LabelEdit, Selector};

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

    /// Output: text (tables, progress on a terminal) or json (one document on stdout);
    /// csv for exec only (its combined result rows on stdout, the report on stderr).
    /// junit (JUnit XML, one testcase per tenant) for create, migrate, exec and verify;
    /// prometheus (text exposition format, for node_exporter's textfile collector) for
    /// status and usage. With GITHUB_ACTIONS=true, failed tenants are also written to stderr
    /// as ::error:: annotations.
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
    /// Only for exec: the combined result rows, `tenant` first; any other command refuses it.
    Csv,
    Junit,
    Prometheus,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Prometheus => "prometheus",
            Format::Csv => "csv",
        }
    }
}

impl Command {
    /// The command's name, for messages.
    pub fn name(&self) -> String {
        format!("{self:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// The formats beyond text and json this command writes.
    pub fn extra_formats(&self) -> &'static [Format] {
        match self {
            Command::Create(_) | Command::Migrate(_) | Command::Verify(_) => &[Format::Junit],
            Command::Status(_) | Command::Usage(_) => &[Format::Prometheus],
            Command::Exec(_) => &[Format::Csv, Format::Junit],
            _ => &[],
        }
    }
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
    List(ListArgs),

    /// Set (key=value) or remove (key-) labels of a tenant, for selectors (-l) and rollout
    /// rings. Keys and values follow Kubernetes' rules (docs/rollout-and-operations.md).
    Label(LabelArgs),

    /// Per tenant: disk size (tables, indexes, TOAST), estimated rows, writes and scans
    /// since the statistics were reset; largest first. One catalog query per server.
    Usage(UsageArgs),

    /// Take the application's access to a tenant away without touching its data: its state
    /// becomes suspended and every privilege on its schema held by a role other than the
    /// owner is revoked and recorded, so resume gives exactly those back.
    Suspend(SuspendArgs),

    /// End a tenant's suspension: grant back exactly the schema privileges suspend revoked,
    /// and make it active again.
    Resume(ResumeArgs),

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

    /// Move one tenant, with nothing lost, to another server (--to NAME: its url's database)
    /// or to a database of its own there (--own-database). The application's writes to it
    /// wait while it is copied (reads go on); the copy is verified (rows, checksums,
    /// sequences, migration history) before the registry switches; then the old copy is
    /// removed. A failure or Ctrl-C before the switch leaves the tenant where it was.
    /// Every move is recorded in public.tenant_moves. See docs/placements.md. On a Citus
    /// coordinator, --node HOST:PORT moves it to another worker node instead
    /// (citus_schema_move, docs/citus.md).
    Move(MoveArgs),
    /// Each server tenants may live on (home, and every [servers.NAME] of tenants.toml):
    /// whether it answers, its PostgreSQL version, the tenants the registry places on it
    /// and its free connections. Exit 1 when any server does not answer. See
    /// docs/placements.md.
    Servers,
    /// On a Citus coordinator (home's, or --server NAME's): start Citus's rebalancer
    /// (citus_rebalance_start), which moves whole tenant schemas between the worker nodes
    /// until they hold about as much each, and follow it to the end: a bar on a terminal, a line per finished move otherwise; then
    /// each moved tenant and the tenants per node. The tenants it moves are locked first
    /// (waiting at most --lock-timeout for each, else exit 1 with no job started), so no
    /// migrate, exec, backup or move of one runs during its move; each lock is let go when
    /// that move ended, and each move is recorded in public.tenant_moves. Moves use
    /// block_writes: the application's writes to a moving tenant wait for its move, reads go
    /// on (--online for logical replication). Exit 1 when the rebalance fails or is
    /// cancelled; Ctrl-C stops following it, not the rebalance (exit 130). See docs/citus.md.
    Rebalance(RebalanceArgs),
    /// On a Citus coordinator: make local tenant schemas (created before Citus, or with
    /// [citus] distribute = false) distributed schemas on a worker (citus_schema_distribute),
    /// all of them when none is named. One transaction per tenant under its lock, its
    /// triggers disabled meanwhile (so an audit trigger does not log every row again); the
    /// coordinator's local copy is emptied. Tenants already distributed are skipped. Exit 1
    /// when any fails. See docs/citus.md.
    Distribute(DistributeArgs),
    /// Re-apply the configured grants ([tenants] app_role, per-tenant roles) to tenants (all
    /// when none is named): schema USAGE, default privileges, and the data privileges on every
    /// table and sequence the data role holds nothing on. For tenants created before app_role
    /// was set. Adds only; one transaction per tenant, under its lock.
    Grant(GrantArgs),

    /// Run SQL (--file or -c) in tenants (all when none is named): in each tenant's schema,
    /// one transaction per tenant holding its lock, concurrently. Rows affected per tenant
    /// in the report; rows a query returns come back as one result with a `tenant` column
    /// first. Every run is recorded in public.tenant_exec_runs / tenant_exec_results.
    Exec(ExecArgs),

    /// Start psql inside one tenant: its database, its schema (then pg_temp) as search_path,
    /// and its role when tenants have their own roles; the password through the
    /// environment, never the command line. Arguments after the slug (or after `--`) are
    /// psql's own, e.g. -c 'SQL' or -f FILE; psql's exit code is tenantctl's.
    Psql(PsqlArgs),
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

    /// The server to create them on: `home` (the one tenantctl connects to, holding the
    /// registry) or a [servers.NAME] of tenants.toml (default: [tenants] default_server,
    /// else home). See docs/placements.md.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,

    /// Give each tenant a database of its own on that server (named like its schema),
    /// holding its schema, migrations and grants.
    #[arg(long)]
    pub own_database: bool,

    /// Tenants created at once (default: [migrations] concurrency, else 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,

    /// SQL file run in each new tenant's schema after its migrations, inside its creating
    /// transaction (default: [tenants] seed). It reads the tenant from
    /// current_setting('tenantctl.slug'), 'tenantctl.schema' and 'tenantctl.display_name'
    /// (empty without --name). If it fails, the tenant is not created.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,

    /// Start no new tenant once more than N tenants (or N% of them) have failed; the rest
    /// are reported skipped.
    #[arg(long, value_name = "N|N%", value_parser = budget::parse)]
    pub max_failures: Option<MaxFailures>,

    /// A label for every tenant created (repeatable): key=value, Kubernetes' rules.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = selector::parse_label)]
    pub labels: Vec<(String, String)>,
}

/// The `-l/--selector` flag: which tenants, by their labels, instead of naming them.
#[derive(Debug, Args)]
pub struct SelectorArg {
    /// Only the tenants whose labels match, Kubernetes' grammar: ring=beta, plan!=free,
    /// region in (eu,us), tier notin (free), canary, !legacy; commas mean AND. Picked in one
    /// registry query. Not with SLUG arguments.
    #[arg(short = 'l', long, value_name = "SELECTOR", value_parser = selector::parse)]
    pub selector: Option<Selector>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Tenants to migrate (default: every registered tenant).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    #[command(flatten)]
    pub select: SelectorArg,

    /// Stop at this migration version instead of the latest.
    #[arg(long, value_name = "VERSION")]
    pub target: Option<i64>,

    /// Print each tenant's pending migrations and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Start no new tenant after the first failure (the same as --max-failures 0).
    #[arg(long, conflicts_with = "max_failures")]
    pub fail_fast: bool,

    /// Start no new tenant once more than N tenants (or N% of the run's) have failed;
    /// those in flight finish, the rest are reported skipped.
    #[arg(long, value_name = "N|N%", value_parser = budget::parse)]
    pub max_failures: Option<MaxFailures>,

    /// Migrate N tenants first; go on to the rest only if all of them succeeded.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canary: Option<u32>,

    /// Tenants migrated at once (default: [migrations] concurrency, else 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,

    /// Roll out in waves: an ordered list of selectors, e.g. --waves 'ring=canary'
    /// 'ring=beta' '*'. A tenant belongs to the first wave it matches ('*', last only: every
    /// tenant left); tenants in no wave are left alone. A wave starts only when the previous
    /// ones stayed within the failure budget (--max-failures, default 0). Not with SLUG
    /// arguments, -l or --canary.
    #[arg(long, value_name = "SELECTOR", num_args = 1.., value_parser = selector::parse)]
    pub waves: Vec<Selector>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("sql").required(true).args(["file", "command"])))]
pub struct ExecArgs {
    /// Tenants to run in (default: every registered tenant that is active).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    /// File of SQL to run; the statement checks of a migration file apply (no transaction
    /// control, no SET search_path or SET ROLE).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// SQL to run, given on the command line (the same checks as --file).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: Option<String>,

    /// Run it in each tenant and roll back: report what it would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Start no new tenant after the first failure.
    #[arg(long)]
    pub fail_fast: bool,

    /// Run in N tenants first; go on to the rest only if all of them succeeded.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canary: Option<u32>,

    /// Tenants run at once (default: [migrations] concurrency, else 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: Option<u16>,
}

#[derive(Debug, Args)]
pub struct PsqlArgs {
    /// The tenant to enter.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// psql's own arguments (-c SQL, -f FILE, -X, -A ...), passed on as they are. tenantctl's
    /// flags go before SLUG.
    #[arg(
        value_name = "PSQL-ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
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

    #[command(flatten)]
    pub select: SelectorArg,

    /// Exit 1 when any tenant is not active at the latest version (a CI gate).
    #[arg(long)]
    pub check: bool,

    /// Text: list every tenant, row by row as the registry returns them. Without it, more
    /// than 50 tenants are shown as a summary: tenants per version and per state (and per
    /// worker node on a Citus coordinator), the oldest pending, failures grouped by error
    /// (top 5, with example slugs).
    #[arg(long)]
    pub all: bool,

    /// On a Citus coordinator: the tenants' size per worker node (tables, indexes, TOAST of
    /// their shards), and each tenant's in JSON (`bytes`). One query, which asks every
    /// worker for its shards' sizes: about 25 ms for 50 tenants, 250 ms for 300, so not
    /// read without this flag (docs/citus.md). Text prints a `by node:` line with tenants
    /// and size per node, workers without a tenant too; prometheus the gauges
    /// `tenantctl_node_tenants` and `tenantctl_node_tenant_bytes` by `node`. Exit 2 on plain
    /// PostgreSQL (`tenantctl usage` gives each tenant's size there).
    #[arg(long)]
    pub sizes: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The tenant to back up (or -l to back up every tenant a selector picks).
    #[arg(value_name = "SLUG", value_parser = slug, required_unless_present = "selector")]
    pub slug: Option<String>,

    /// Back up each tenant the selector picks, one after the other, into --output-dir (see
    /// -l of migrate for the grammar). Not with SLUG or -o.
    #[command(flatten)]
    pub select: SelectorArg,

    /// Dump file to write (default: ./<slug>-<UTC time>.dump), and FILE.json beside it;
    /// both created 0600, never over an existing file or through a symbolic link.
    #[arg(short, long, value_name = "FILE", conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,

    /// Folder to write each tenant's <slug>-<UTC time>.dump and its .json in (required
    /// with -l; with SLUG instead of -o). It must exist unless --create-dir is given.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Create the --output-dir folder (mode 0700) when it does not exist.
    #[arg(long, requires = "output_dir")]
    pub create_dir: bool,
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

    /// With a selector, only the tenants it picks are audited (and unregistered schemas
    /// are not looked for, as with SLUG arguments).
    #[command(flatten)]
    pub select: SelectorArg,

    /// Also compare each tenant's tables, columns, indexes, constraints, sequences, functions
    /// and triggers with what the migration files build at its version (built in a scratch
    /// schema, rolled back afterwards); each difference is a finding such as missing_column
    /// or extra_index (docs/switching.md lists them).
    #[arg(long)]
    pub structure: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: SelectorArg,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Tenants to show (default: all).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,

    #[command(flatten)]
    pub select: SelectorArg,

    /// Only the N largest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// The tenant to label.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// key=value sets a label, key- removes it; applied in order, all in one statement.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-", value_parser = selector::parse_label_edit)]
    pub edits: Vec<LabelEdit>,
}

#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The tenant to suspend.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// Why, recorded in public.tenant_suspensions with who suspended it.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The suspended tenant to give its access back.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,
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
pub struct DistributeArgs {
    /// Tenants to distribute (default: every tenant).
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slugs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// Start the rebalance and return at once (follow it with
    /// `SELECT * FROM citus_rebalance_status()`). It still waits for the moving tenants'
    /// running work before the start, but its moves then run without the tenants' locks and
    /// are not recorded in public.tenant_moves (tenantctl has exited).
    #[arg(long)]
    pub no_wait: bool,

    /// Let writes go on during the moves (Citus's `auto` transfer mode, logical
    /// replication; every table needs a primary key or replica identity, the nodes
    /// `wal_level = logical`). Default `block_writes`, as `move --node`: Citus's `auto` can
    /// lose writes committed just before a switch when the workers commit with
    /// `synchronous_commit = off`, so it is refused (exit 2) when a worker does. See
    /// docs/citus.md first.
    #[arg(long)]
    pub online: bool,

    /// Rebalance the Citus coordinator of this server (a [servers.NAME] of tenants.toml,
    /// or `home`): its own database, the one its url names, where the tenants created with
    /// `--server NAME` live. The moving tenants' locks are taken there; each move is
    /// recorded on home naming that server and database. Default: home. A server that is
    /// unknown or not a Citus coordinator is refused (exit 2, nothing moved).
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The tenant to route to.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,
}

/// Exactly one of --to and --node.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["to", "node"])))]
pub struct MoveArgs {
    /// The tenant to move.
    #[arg(value_name = "SLUG", value_parser = slug)]
    pub slug: String,

    /// The server to move it to: `home` or a [servers.NAME] of tenants.toml. Without
    /// --own-database the tenant goes into that server's own database (its url's).
    #[arg(long = "to", value_name = "NAME")]
    pub to: Option<String>,

    /// On a Citus coordinator: the worker node (`host:port`, as pg_dist_node names it) to
    /// move the tenant's distributed schema to, with citus_schema_move, under the tenant's
    /// lock. The application's writes wait for the move (block_writes); reads go on. See
    /// docs/citus.md.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "own_database")]
    pub node: Option<String>,

    /// With --node: let writes go on during the move (citus_schema_move's logical
    /// replication, `auto`), when every table has a primary key or replica identity. Citus
    /// can then lose writes committed just before the switch when the workers commit with
    /// `synchronous_commit = off`, so it is refused (exit 2) when a worker does: see
    /// docs/citus.md first.
    #[arg(long, conflicts_with = "to")]
    pub online: bool,

    /// Give the tenant a database of its own on that server, named like its schema,
    /// created by the move (and dropped again if the move fails).
    #[arg(long)]
    pub own_database: bool,

    /// Say what would be moved (from, to, schema, database, tables, estimated rows and
    /// size) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
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
