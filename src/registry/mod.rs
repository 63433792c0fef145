//! The registry: `public.tenants`, `public.tenant_migrations` and `public.tenant_drops`.
//! Every statement that reads or writes them lives in this module.
//!
//! The registry's own layout is versioned by embedded migrations (run by refinery into
//! `public.tenantctl_registry_history`), so changing it is itself a migration.
//!
//! Every function, table and view named here is schema-qualified (`pg_catalog.now()`), on
//! top of the session's search_path (`pg_catalog, pg_temp`, see `connect`): an object
//! planted in a schema others can create in must never be what tenantctl calls.

pub mod exec_runs;
pub mod locks;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::pg::connect::PgContext;
use anyhow::{bail, Result};
use deadpool_postgres::{GenericClient, Object, Transaction};
use refinery::{Migration, Runner};
use tokio_postgres::Row;

use crate::domain::migration_set::AppliedMigration;
use crate::domain::names::{quote_ident, tenant_search_path};
use crate::domain::selector::{Requirement, Selector};
use crate::pg::refinery_tx::Queued;
use crate::pg::txn::{Sql, Step, StepError, Tx};
use crate::registry::locks::LOCK_CLASS;

const HISTORY: &str = "public.tenantctl_registry_history";

/// The registry's tables, all in `public` (for `verify`'s audit of who may touch them).
pub const TABLES: &[&str] = &[
    "tenants",
    "tenant_migrations",
    "tenant_drops",
    "tenant_suspensions",
    "tenantctl_registry_history",
    "tenant_exec_runs",
    "tenant_exec_results",
    "tenant_moves",
];

/// The columns of `public.tenants` the application role may read, to route requests: not
/// `last_error`, whose PostgreSQL details can quote another tenant's rows.
pub const ROUTING_COLUMNS: &[&str] = &[
    "slug",
    "schema_name",
    "display_name",
    "state",
    "role_name",
    "updated_at",
    "server_name",
    "database_name",
];

/// The registry's migrations, oldest first. Append; never edit one that has shipped.
const REGISTRY_MIGRATIONS: &[(&str, &str)] = &[
    ("V1__registry", include_str!("sql/V1__registry.sql")),
    ("V2__tenant_roles", include_str!("sql/V2__tenant_roles.sql")),
    (
        "V3__drop_archives",
        include_str!("sql/V3__drop_archives.sql"),
    ),
    ("V4__fast_path", include_str!("sql/V4__fast_path.sql")),
    (
        "V5__pinned_search_path",
        include_str!("sql/V5__pinned_search_path.sql"),
    ),
    ("V6__placements", include_str!("sql/V6__placements.sql")),
    ("V7__exec_runs", include_str!("sql/V7__exec_runs.sql")),
    (
        "V8__labels_suspend",
        include_str!("sql/V8__labels_suspend.sql"),
    ),
    ("V9__adopted", include_str!("sql/V9__adopted.sql")),
    (
        "V10__tenant_moves",
        include_str!("sql/V10__tenant_moves.sql"),
    ),
    ("V11__node_moves", include_str!("sql/V11__node_moves.sql")),
    (
        "V12__rebalance_moves",
        include_str!("sql/V12__rebalance_moves.sql"),
    ),
];

fn registry_migrations() -> Vec<Migration> {
    REGISTRY_MIGRATIONS
        .iter()
        .map(|(name, sql)| {
            Migration::unapplied(name, sql).expect("embedded registry migration names are valid")
        })
        .collect()
}

/// Runs a statement through the connection's prepared-statement cache: one round trip
/// instead of two (parse, then execute) for the statements run once per tenant.
async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = c.prepare_cached(sql).await?;
    c.execute(&stmt, params).await
}

/// The registry version this build expects: its highest migration (versions are assigned
/// to changes as they are planned, so a number may be missing until its change lands).
pub fn expected_version() -> i64 {
    registry_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The registry version installed in the database (0 when there is no registry).
pub async fn installed_version(client: &impl GenericClient) -> Result<i64> {
    let present: bool = client
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&HISTORY])
        .await
        .pg_context("cannot look for the tenant registry")?
        .get(0);
    if !present {
        return Ok(0);
    }
    let sql = format!("SELECT coalesce(pg_catalog.max(version), 0)::bigint FROM {HISTORY}");
    Ok(client
        .query_one(&sql, &[])
        .await
        .pg_context("cannot read the registry version")?
        .get(0))
}

/// Installs or upgrades the registry when it is behind; a no-op otherwise. Safe when
/// several tenantctl processes start at once (they queue on an advisory lock).
/// Gives up after `deadline` when the registry stays locked (by an application transaction
/// on `public.tenants`, say), naming who holds it. Returns the versions (before, after).
pub async fn ensure(client: &mut Object, deadline: Duration) -> Result<(i64, i64)> {
    let before = installed_version(&*client).await?;
    let expected = expected_version();
    if before > expected {
        bail!(
            "the tenant registry is at version {before}, newer than this tenantctl knows ({expected}); \
             upgrade tenantctl"
        );
    }
    if before == expected {
        return Ok((before, before));
    }
    let started = Instant::now();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match upgrade(client, left.min(UPGRADE_TRY)).await {
            Ok(()) => return Ok((before, expected)),
            Err(Upgrade::Failed(e)) => return Err(e),
            Err(Upgrade::Locked) if deadline.saturating_sub(started.elapsed()) > UPGRADE_PAUSE => {
                tokio::time::sleep(UPGRADE_PAUSE).await;
            }
            Err(Upgrade::Locked) => return Err(upgrade_locked(client, before, deadline).await),
        }
    }
}

/// The longest one attempt of a registry upgrade waits for a lock. A DDL statement waiting
/// for a lock on `public.tenants` makes every later query on it (the application routing
/// requests) queue behind it, so it waits in short attempts with pauses between them,
/// until the deadline.
const UPGRADE_TRY: Duration = Duration::from_secs(1);
const UPGRADE_PAUSE: Duration = Duration::from_millis(500);

enum Upgrade {
    /// A lock was not granted within the attempt's lock_timeout; nothing was changed.
    Locked,
    Failed(anyhow::Error),
}

/// One attempt at the upgrade, in one transaction whose lock waits end after `try_for`.
async fn upgrade(client: &mut Object, try_for: Duration) -> Result<(), Upgrade> {
    // The lock is taken first in the flight; the history read waits for it on the server.
    let mut tx = Tx::begin(client);
    tx.queue(
        Step::Sql("cannot lock the registry for its upgrade"),
        format!(
            "SELECT set_config('lock_timeout', '{}', true); \
             SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0)",
            crate::registry::locks::lock_timeout_value(try_for)
        ),
    );
    let mut runner = Runner::new(&registry_migrations());
    runner.set_migration_table_name(HISTORY);
    if let Err(e) = runner.run_async(&mut Queued::new(&mut tx)).await {
        let step = match e.kind() {
            refinery::error::Kind::Connection(_, src) => src.downcast_ref::<StepError>(),
            _ => None,
        };
        return Err(match step {
            Some(se) if is_lock_timeout(se) => Upgrade::Locked,
            _ => Upgrade::Failed(
                anyhow::anyhow!("{}", crate::pg::refinery_tx::describe_refinery(&e))
                    .context("cannot install the tenant registry"),
            ),
        });
    }
    tx.commit().await.map_err(|e| {
        if is_lock_timeout(&e) {
            Upgrade::Locked
        } else {
            Upgrade::Failed(anyhow::Error::new(e).context("cannot install the tenant registry"))
        }
    })
}

fn is_lock_timeout(e: &StepError) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// The error for an upgrade that found the registry locked until the deadline.
async fn upgrade_locked(client: &Object, before: i64, deadline: Duration) -> anyhow::Error {
    let what = if before == 0 {
        "cannot install the tenant registry".to_string()
    } else {
        format!(
            "cannot upgrade the tenant registry from version {before} to {}",
            expected_version()
        )
    };
    let waited = crate::registry::locks::describe_duration(deadline);
    match crate::registry::locks::registry_lock_holders(client).await {
        Ok(holders) if !holders.is_empty() => anyhow::anyhow!(
            "{what}: its tables stayed locked for {waited} (--lock-timeout) by {}; end that \
             transaction (pg_terminate_backend({})) or try again later; the registry was not changed",
            crate::registry::locks::describe_holders(&holders),
            holders[0].pid
        ),
        _ => anyhow::anyhow!(
            "{what}: its tables stayed locked for {waited} (--lock-timeout); try again later; \
             the registry was not changed"
        ),
    }
}

/// Lets the application role read the tenant list (to route requests to a schema): the
/// `ROUTING_COLUMNS` only, not `last_error`, whose PostgreSQL details can quote another
/// tenant's rows. `updated_at` lets a routing cache notice a change
/// (docs/application-routing.md). Nothing else of the registry.
pub async fn grant_read(client: &impl GenericClient, app_role: &str) -> Result<()> {
    let role = quote_ident(app_role);
    let columns: Vec<String> = ROUTING_COLUMNS.iter().map(|c| quote_ident(c)).collect();
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {role}; \
             REVOKE SELECT ON public.tenants FROM {role}; \
             GRANT SELECT ({}) ON public.tenants TO {role};",
            columns.join(", ")
        ))
        .await
        .with_pg_context(|| {
            format!("cannot grant read access on public.tenants to role {app_role}")
        })
}

/// One registry row, with whether its schema exists.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub slug: String,
    pub schema: String,
    pub display_name: Option<String>,
    pub state: String,
    pub version: i64,
    pub digest: Option<String>,
    pub last_error: Option<String>,
    pub migrated_at: Option<String>,
    pub schema_exists: bool,
    /// The tenant's own role, when it was created with per_tenant_roles.
    pub role: Option<String>,
    /// The server it lives on (`home`: the registry's own) and the database there holding
    /// its schema (registry V6).
    pub server: String,
    pub database: String,
    /// Its labels (registry V8), by key.
    pub labels: BTreeMap<String, String>,
}

impl Tenant {
    /// Whether the tenant lives in the registry's own database, where `schema_exists` was
    /// answered (for any other place the caller asks the tenant's server).
    pub fn is_home(&self, home_database: &str) -> bool {
        self.server == crate::domain::settings::HOME_SERVER && self.database == home_database
    }
}

const SELECT_TENANTS: &str = "SELECT t.slug, t.schema_name, t.display_name, t.state, t.version, \
        t.migrations_digest, t.last_error, \
        pg_catalog.to_char(t.migrated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
        (t.server_name = 'home' AND t.database_name = pg_catalog.current_database() \
         AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = t.schema_name)), \
        t.role_name, \
        t.server_name, t.database_name, t.labels::text \
    FROM public.tenants t";

fn tenant(r: &Row) -> Tenant {
    Tenant {
        slug: r.get(0),
        schema: r.get(1),
        display_name: r.get(2),
        state: r.get(3),
        version: r.get(4),
        digest: r.get(5),
        last_error: r.get(6),
        migrated_at: r.get(7),
        schema_exists: r.get(8),
        role: r.get(9),
        server: r.get(10),
        database: r.get(11),
        labels: parse_labels(r.get(12)),
    }
}

/// The labels column as a map; a value that is not a string (written by hand) is shown as
/// its JSON text rather than dropped.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tenants a selector picks, by slug, in one query however large the fleet: the
/// selector becomes a WHERE clause of fixed fragments with every key and value bound.
pub async fn selected(client: &impl GenericClient, sel: &Selector) -> Result<Vec<Tenant>> {
    let (clause, params) = selector_sql(sel);
    let refs = as_refs(&params);
    let rows = client
        .query(
            &format!("{SELECT_TENANTS} WHERE {clause} ORDER BY t.slug"),
            &refs,
        )
        .await
        .with_pg_context(|| format!("cannot select tenants by '{sel}' from the registry"))?;
    Ok(rows.iter().map(tenant).collect())
}

type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// The WHERE clause (over `public.tenants t`) and its parameters for a selector. Equality
/// uses containment (`@>`), which the labels' GIN index serves; `!=` and `notin` hold for a
/// tenant without the key, as in Kubernetes.
pub fn selector_sql(sel: &Selector) -> (String, Vec<Param>) {
    let mut params: Vec<Param> = Vec::new();
    let mut parts = vec!["true".to_string()];
    let mut bind = |p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    let one = |k: &str, v: &str| serde_json::json!({ k: v }).to_string();
    for r in &sel.requirements {
        parts.push(match r {
            Requirement::Equals(k, v) => {
                format!("t.labels @> ({}::text)::jsonb", bind(Box::new(one(k, v))))
            }
            Requirement::NotEquals(k, v) => {
                format!(
                    "NOT (t.labels @> ({}::text)::jsonb)",
                    bind(Box::new(one(k, v)))
                )
            }
            Requirement::In(k, vs) => {
                let (k, vs) = (bind(Box::new(k.clone())), bind(Box::new(vs.clone())));
                format!("(t.labels ->> {k}::text) = ANY({vs}::text[])")
            }
            Requirement::NotIn(k, vs) => {
                let (k, vs) = (bind(Box::new(k.clone())), bind(Box::new(vs.clone())));
                format!("NOT coalesce((t.labels ->> {k}::text) = ANY({vs}::text[]), false)")
            }
            Requirement::Exists(k) => {
                format!(
                    "pg_catalog.jsonb_exists(t.labels, {}::text)",
                    bind(Box::new(k.clone()))
                )
            }
            Requirement::NotExists(k) => format!(
                "NOT pg_catalog.jsonb_exists(t.labels, {}::text)",
                bind(Box::new(k.clone()))
            ),
        });
    }
    (parts.join(" AND "), params)
}

/// Applies label edits to one tenant in one statement: removals, then the new values.
/// Returns the tenant's labels after, or None when no such tenant is registered.
pub async fn edit_labels(
    client: &impl GenericClient,
    slug: &str,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<Option<BTreeMap<String, String>>> {
    let set = serde_json::to_string(set).expect("a map of strings serializes");
    let row = client
        .query_opt(
            "UPDATE public.tenants SET labels = (labels - $2::text[]) || ($3::text)::jsonb \
              WHERE slug = $1 RETURNING labels::text",
            &[&slug, &remove, &set],
        )
        .await
        .with_pg_context(|| format!("cannot change the labels of tenant {slug}"))?;
    Ok(row.map(|r| parse_labels(r.get(0))))
}

/// Every registered tenant, by slug.
pub async fn all(client: &impl GenericClient) -> Result<Vec<Tenant>> {
    let rows = client
        .query(&format!("{SELECT_TENANTS} ORDER BY t.slug"), &[])
        .await
        .pg_context("cannot read the tenant registry")?;
    Ok(rows.iter().map(tenant).collect())
}

/// The registered tenants among `slugs`, by slug.
pub async fn some(client: &impl GenericClient, slugs: &[String]) -> Result<Vec<Tenant>> {
    let rows = client
        .query(
            &format!("{SELECT_TENANTS} WHERE t.slug = ANY($1) ORDER BY t.slug"),
            &[&slugs],
        )
        .await
        .pg_context("cannot read the tenant registry")?;
    Ok(rows.iter().map(tenant).collect())
}

/// The registered tenants whose schema is one of `schemas`.
pub async fn by_schemas(client: &impl GenericClient, schemas: &[String]) -> Result<Vec<Tenant>> {
    let rows = client
        .query(
            &format!("{SELECT_TENANTS} WHERE t.schema_name = ANY($1) ORDER BY t.slug"),
            &[&schemas],
        )
        .await
        .pg_context("cannot read the tenant registry")?;
    Ok(rows.iter().map(tenant).collect())
}

/// Which of `schemas` already exist in the database.
pub async fn existing_schemas(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .pg_context("cannot look up existing schemas")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The name of every schema of the database (a restore refuses a dump that names any of
/// them but its own).
pub async fn schema_names(client: &impl GenericClient) -> Result<Vec<String>> {
    let rows = client
        .query("SELECT nspname::text FROM pg_namespace ORDER BY 1", &[])
        .await
        .pg_context("cannot list the schemas of the database")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether a role inherits the privileges of roles granted to it (rolinherit).
pub async fn role_inherits(client: &impl GenericClient, role: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT rolinherit FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .pg_context("cannot look up roles")?
        .get(0))
}

/// The server's major version number (15 for 15.x).
pub async fn server_major(client: &impl GenericClient) -> Result<i32> {
    let v: String = client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')",
            &[],
        )
        .await
        .pg_context("cannot read the server version")?
        .get(0);
    Ok(v.parse::<i32>().unwrap_or(0) / 10_000)
}

/// Whether a role exists.
pub async fn role_exists(client: &impl GenericClient, role: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .await
        .pg_context("cannot look up roles")?
        .get(0))
}

/// The SQLSTATE `public.tenantctl_enter` raises (registry V4, V5).
pub const EXPECT_FAILED: &str = "TC001";

/// Takes the tenant's lock, then fails the transaction (`EXPECT_FAILED`) unless the
/// tenant's row still says `version` with `digest` and is not being dropped, and its schema
/// exists; beside it, sets the transaction's search_path to the schema (then `pg_temp`).
/// What it checks cannot change before the commit, since every writer of it holds the same
/// lock. If the check fails the statement fails, so which of the two runs first is moot.
pub fn enter_unchanged(slug: &str, schema: &str, version: i64, digest: &str) -> Sql {
    Sql {
        step: Step::Guard,
        text: "SELECT public.tenantctl_enter($1, $2, $3, $4, $5), \
                      pg_catalog.set_config('search_path', $6, true)",
        params: vec![
            Box::new(LOCK_CLASS),
            Box::new(slug.to_string()),
            Box::new(schema.to_string()),
            Box::new(version),
            Box::new(digest.to_string()),
            Box::new(tenant_search_path(schema)),
        ],
    }
}

/// Registers a tenant being created, in the creating transaction. Fails with a unique
/// violation when the slug (or schema) is already registered, waiting first for a
/// concurrent creator of the same tenant to finish.
pub fn insert_provisioning(
    slug: &str,
    schema: &str,
    display: Option<&str>,
    role: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Sql {
    let labels = serde_json::to_string(labels).expect("a map of strings serializes");
    Sql {
        step: Step::Register,
        text: "INSERT INTO public.tenants (slug, schema_name, display_name, state, role_name, labels) \
               VALUES ($1, $2, $3, 'provisioning', $4, ($5::text)::jsonb)",
        params: vec![
            Box::new(slug.to_string()),
            Box::new(schema.to_string()),
            Box::new(display.map(str::to_string)),
            Box::new(role.map(str::to_string)),
            Box::new(labels),
        ],
    }
}

/// Where a tenant is created: a server and a database on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub server: String,
    pub database: String,
}

/// Registers a tenant to be created elsewhere than the registry's own database, committed
/// on its own (`provisioning`) before its schema is made on `at`: see `create`'s
/// `provision_elsewhere` for why. Fails with a unique violation when the slug is taken.
pub async fn register_elsewhere(
    client: &impl GenericClient,
    slug: &str,
    schema: &str,
    display: Option<&str>,
    role: Option<&str>,
    at: &Placement,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO public.tenants \
                 (slug, schema_name, display_name, state, role_name, server_name, database_name) \
             VALUES ($1, $2, $3, 'provisioning', $4, $5, $6)",
            &[&slug, &schema, &display, &role, &at.server, &at.database],
        )
        .await
        .map(|_| ())
}

/// One move of a tenant (`tenantctl move`), as `public.tenant_moves` records it.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    pub slug: String,
    pub schema: String,
    pub from: Placement,
    pub to: Placement,
    pub tables: i32,
    pub rows: i64,
    pub writes_stopped_ms: i64,
    pub duration_ms: i64,
    /// A move between Citus worker nodes (`move --node`): from and to `host:port`, and
    /// citus_schema_move's mode (registry V11).
    pub nodes: Option<NodeMoveRecord>,
}

#[derive(Debug, Clone)]
pub struct NodeMoveRecord {
    pub from: String,
    pub to: String,
    pub mode: String,
}

/// Switches the tenant's placement from `m.from` to `m.to` and records the move, in the
/// caller's transaction (the one that commits the switch). Fails, changing nothing, when
/// the row no longer says the tenant is `active` at `m.from` (it changed meanwhile).
/// Returns the id of the `tenant_moves` row.
pub async fn record_move(client: &impl GenericClient, m: &MoveRecord) -> Result<i64> {
    let switched = client
        .execute(
            "UPDATE public.tenants SET server_name = $4, database_name = $5, \
                    updated_at = pg_catalog.now() \
              WHERE slug = $1 AND server_name = $2 AND database_name = $3 AND state = 'active'",
            &[
                &m.slug,
                &m.from.server,
                &m.from.database,
                &m.to.server,
                &m.to.database,
            ],
        )
        .await
        .with_pg_context(|| format!("cannot switch tenant {} to its new place", m.slug))?;
    if switched != 1 {
        bail!(
            "tenant {} is no longer registered `active` on server {} (database {}): it changed \
             while it was copied",
            m.slug,
            m.from.server,
            m.from.database
        );
    }
    insert_move(client, m, None).await
}

/// Records a move between Citus worker nodes (`move --node`, or `rebalance` job `job`):
/// the `tenant_moves` row alone, since the tenant's server and database stay. Its state is
/// not checked: a `migrate` waiting for the move's lock has marked it `migrating`, and the
/// move (which Citus made already) must still be recorded. Returns the row's id.
pub async fn record_node_move(
    client: &impl GenericClient,
    m: &MoveRecord,
    job: Option<i64>,
) -> Result<i64> {
    insert_move(client, m, job).await
}

/// The `tenant_moves` row of `m`; `job` is the rebalance job that made it (registry V12).
async fn insert_move(client: &impl GenericClient, m: &MoveRecord, job: Option<i64>) -> Result<i64> {
    let row = client
        .query_one(
            "INSERT INTO public.tenant_moves (slug, schema_name, from_server, from_database, \
                    to_server, to_database, tables, rows, writes_stopped_ms, duration_ms, \
                    from_node, to_node, transfer_mode, rebalance_job) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
            &[
                &m.slug,
                &m.schema,
                &m.from.server,
                &m.from.database,
                &m.to.server,
                &m.to.database,
                &m.tables,
                &m.rows,
                &m.writes_stopped_ms,
                &m.duration_ms,
                &m.nodes.as_ref().map(|n| n.from.as_str()),
                &m.nodes.as_ref().map(|n| n.to.as_str()),
                &m.nodes.as_ref().map(|n| n.mode.as_str()),
                &job,
            ],
        )
        .await
        .with_pg_context(|| format!("cannot record the move of tenant {}", m.slug))?;
    Ok(row.get(0))
}

/// Writes the final timings of a move into its record, once the source has let the
/// application's writes go (the switch records them as they were at the switch).
pub async fn finish_move_record(
    client: &impl GenericClient,
    id: i64,
    writes_stopped_ms: i64,
    duration_ms: i64,
) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenant_moves SET writes_stopped_ms = $2, duration_ms = $3 WHERE id = $1",
            &[&id, &writes_stopped_ms, &duration_ms],
        )
        .await
        .pg_context("cannot record the timings of the move")?;
    Ok(())
}

/// Removes the row of a tenant whose creation elsewhere failed (still `provisioning`).
pub async fn unregister_provisioning(client: &impl GenericClient, slug: &str) -> Result<()> {
    client
        .execute(
            "DELETE FROM public.tenants WHERE slug = $1 AND state = 'provisioning'",
            &[&slug],
        )
        .await
        .with_pg_context(|| format!("cannot remove the registry row of tenant {slug}"))?;
    Ok(())
}

/// Marks the tenant active at `version` and records each applied migration, in the same
/// transaction as the migrations themselves.
pub fn record_success(
    slug: &str,
    version: i64,
    digest: Option<&str>,
    applied: &[AppliedMigration],
) -> Sql {
    record_step(slug, version, digest, applied, true)
}

/// Like `record_success`, for one step of a run that goes in several transactions (a
/// migration that runs without one splits the run): unless it is the `last` step, the
/// tenant keeps its state (`migrating`, or `provisioning` during a create) and its last
/// error, so it is not shown `active` before the run is over.
pub fn record_step(
    slug: &str,
    version: i64,
    digest: Option<&str>,
    applied: &[AppliedMigration],
    last: bool,
) -> Sql {
    let versions: Vec<i64> = applied.iter().map(|m| m.version).collect();
    let names: Vec<String> = applied.iter().map(|m| m.name.clone()).collect();
    let checksums: Vec<String> = applied.iter().map(|m| m.checksum.to_string()).collect();
    Sql {
        step: Step::Sql("cannot record the migration in the registry"),
        text: "WITH t AS (UPDATE public.tenants SET \
                    state = CASE WHEN $7 AND state <> 'suspended' THEN 'active' ELSE state END, \
                    version = $2, migrations_digest = $3, \
                    last_error = CASE WHEN $7 THEN NULL ELSE last_error END, \
                    updated_at = pg_catalog.now(), \
                    migrated_at = CASE WHEN pg_catalog.cardinality($4::bigint[]) > 0 \
                                       THEN pg_catalog.now() ELSE migrated_at END \
                    WHERE slug = $1 AND state <> 'dropping') \
         INSERT INTO public.tenant_migrations (slug, version, name, checksum, outcome, started_at, finished_at) \
         SELECT $1, v, n, c, 'applied', pg_catalog.now(), pg_catalog.clock_timestamp() \
           FROM ROWS FROM (pg_catalog.unnest($4::bigint[]), pg_catalog.unnest($5::text[]), \
                           pg_catalog.unnest($6::text[])) AS a(v, n, c)",
        params: vec![
            Box::new(slug.to_string()),
            Box::new(version),
            Box::new(digest.map(str::to_string)),
            Box::new(versions),
            Box::new(names),
            Box::new(checksums),
            Box::new(last),
        ],
    }
}

/// The migration a failure is attributed to, for the status table.
pub struct FailedMigration<'a> {
    pub version: i64,
    pub name: &'a str,
    pub checksum: u64,
}

/// Records a failure after the tenant's transaction rolled back: the tenant becomes `failed`
/// with the error (a `dropping` tenant stays so), and the migration it is attributed to, if
/// any, gets a `failed` row in the status table.
pub async fn record_failure(
    client: &impl GenericClient,
    slug: &str,
    error: &str,
    migration: Option<FailedMigration<'_>>,
    started_epoch: f64,
) -> Result<()> {
    exec(
        client,
        "UPDATE public.tenants SET state = CASE WHEN state = 'suspended' THEN state ELSE 'failed' END, \
                last_error = $2, updated_at = pg_catalog.now() \
          WHERE slug = $1 AND state <> 'dropping'",
        &[&slug, &error],
    )
    .await
    .pg_context("cannot record the failure in the registry")?;
    match migration {
        Some(m) => record_failed_attempt(client, slug, error, &m, started_epoch).await,
        None => Ok(()),
    }
}

/// Marks the tenants a run is about to migrate, in one statement, visible at once. A
/// suspended tenant is migrated but stays `suspended` throughout (and `record_success`,
/// `record_failure` keep it so): it must not look routable.
pub async fn mark_migrating(client: &impl GenericClient, slugs: &[String]) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenants SET state = 'migrating', updated_at = pg_catalog.now() \
             WHERE slug = ANY($1) AND state NOT IN ('dropping', 'suspended')",
            &[&slugs],
        )
        .await
        .pg_context("cannot mark tenants migrating")?;
    Ok(())
}

/// Gives tenants a run marked but never started their previous state back.
pub async fn restore_states(
    client: &impl GenericClient,
    slugs: &[String],
    states: &[String],
) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenants t SET state = u.state, updated_at = pg_catalog.now() \
               FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS u(slug, state) \
              WHERE t.slug = u.slug AND t.state = 'migrating'",
            &[&slugs, &states],
        )
        .await
        .pg_context("cannot restore the state of tenants that were not started")?;
    Ok(())
}

/// Records a failed create attempt in the status table only. The tenant's own row was rolled
/// back with everything else, or (a concurrent create won) belongs to someone else's tenant.
pub async fn record_failed_attempt(
    client: &impl GenericClient,
    slug: &str,
    error: &str,
    migration: &FailedMigration<'_>,
    started_epoch: f64,
) -> Result<()> {
    let checksum = migration.checksum.to_string();
    exec(
        client,
        "INSERT INTO public.tenant_migrations (slug, version, name, checksum, outcome, error, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, 'failed', $5, pg_catalog.to_timestamp($6::float8), pg_catalog.clock_timestamp())",
        &[&slug, &migration.version, &migration.name, &checksum, &error, &started_epoch],
    )
    .await
    .pg_context("cannot record the failed attempt in the registry")?;
    Ok(())
}

/// Sets a tenant's state (`drop` marks `dropping` with it, under the tenant's lock).
pub async fn set_state(client: &impl GenericClient, slug: &str, state: &str) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenants SET state = $2, updated_at = pg_catalog.now() WHERE slug = $1",
            &[&slug, &state],
        )
        .await
        .with_pg_context(|| format!("cannot mark tenant {slug} {state}"))?;
    Ok(())
}

/// Registers a restored tenant (or updates the replaced one) as `active` at the backup's
/// version. The fingerprint is cleared so the next migrate verifies its history in full.
pub async fn record_restore(
    tx: &Transaction<'_>,
    slug: &str,
    schema: &str,
    display: Option<&str>,
    version: i64,
    role: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO public.tenants (slug, schema_name, display_name, state, version, role_name) \
         VALUES ($1, $2, $3, 'active', $4, $5) \
         ON CONFLICT (slug) DO UPDATE SET state = 'active', version = EXCLUDED.version, \
             migrations_digest = NULL, last_error = NULL, updated_at = pg_catalog.now()",
        &[&slug, &schema, &display, &version, &role],
    )
    .await
    .pg_context("cannot record the restore in the registry")?;
    Ok(())
}

/// Whether another tenant than `slug` on server `server` is registered with role `role`
/// (roles belong to a server: the role of a tenant being dropped stays while one does).
pub async fn role_used_by_others(
    client: &impl GenericClient,
    server: &str,
    role: &str,
    slug: &str,
) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM public.tenants \
              WHERE server_name = $1 AND role_name = $2 AND slug <> $3)",
            &[&server, &role, &slug],
        )
        .await
        .with_pg_context(|| format!("cannot look up which tenants use role {role}"))?
        .get(0))
}

/// Clears a tenant's fingerprint, so that the next migrate reads its history where it
/// lives instead of trusting its row (before a restore elsewhere, whose row on home is
/// written after its server commits).
pub async fn forget_digest(client: &impl GenericClient, slug: &str) -> Result<()> {
    client
        .execute(
            "UPDATE public.tenants SET migrations_digest = NULL, updated_at = pg_catalog.now() \
              WHERE slug = $1",
            &[&slug],
        )
        .await
        .with_pg_context(|| format!("cannot clear the fingerprint of tenant {slug}"))?;
    Ok(())
}

/// Removes the tenant from the registry and records its destruction (when, by which role),
/// in the dropping transaction. Its rows in `public.tenant_migrations` go too: their errors
/// can quote the tenant's data, and only the record of the destruction may outlive it.
pub async fn record_drop(
    tx: &Transaction<'_>,
    slug: &str,
    schema_existed: bool,
    archive: Option<(&str, &str)>,
) -> Result<()> {
    let (file, sha) = (archive.map(|a| a.0), archive.map(|a| a.1));
    tx.execute(
        "WITH gone AS (DELETE FROM public.tenants WHERE slug = $1 \
                       RETURNING slug, schema_name, display_name, version, role_name) \
         INSERT INTO public.tenant_drops \
             (slug, schema_name, display_name, version, schema_existed, role_name, archive_file, archive_sha256) \
         SELECT slug, schema_name, display_name, version, $2, role_name, $3, $4 FROM gone",
        &[&slug, &schema_existed, &file, &sha],
    )
    .await
    .pg_context("cannot record the drop in the registry")?;
    tx.execute(
        "DELETE FROM public.tenant_migrations WHERE slug = $1",
        &[&slug],
    )
    .await
    .pg_context("cannot purge the dropped tenant's migration history from the registry")?;
    Ok(())
}

/// What `record_adoption` registers.
pub struct Adoption<'a> {
    pub slug: &'a str,
    pub schema: &'a str,
    pub version: i64,
    pub digest: Option<&'a str>,
    /// The tenant's own role (per_tenant_roles).
    pub role: Option<&'a str>,
    pub history: &'a [AppliedMigration],
    /// "adopted" or "baselined".
    pub outcome: &'a str,
}

/// Registers a schema that `tenantctl adopt` takes over, `active` at `version` with the
/// fingerprint of the files up to it (so `migrate` takes the fast path from then on), and
/// records each migration of its history as `outcome` ('adopted': read from the schema's
/// own history; 'baselined': declared with --baseline, never run). In the adopting
/// transaction, under the tenant's lock; fails with a unique violation when the slug or the
/// schema is registered meanwhile.
pub async fn record_adoption(tx: &Transaction<'_>, a: &Adoption<'_>) -> Result<()> {
    let (slug, schema, history) = (a.slug, a.schema, a.history);
    tx.execute(
        "INSERT INTO public.tenants (slug, schema_name, state, version, migrations_digest, role_name) \
         VALUES ($1, $2, 'active', $3, $4, $5)",
        &[&slug, &schema, &a.version, &a.digest, &a.role],
    )
    .await
    .with_pg_context(|| format!("cannot register schema {schema} as tenant {slug}"))?;
    let versions: Vec<i64> = history.iter().map(|m| m.version).collect();
    let names: Vec<String> = history.iter().map(|m| m.name.clone()).collect();
    let checksums: Vec<String> = history.iter().map(|m| m.checksum.to_string()).collect();
    tx.execute(
        "INSERT INTO public.tenant_migrations (slug, version, name, checksum, outcome, started_at, finished_at) \
         SELECT $1, v, n, c, $5, pg_catalog.now(), pg_catalog.clock_timestamp() \
           FROM ROWS FROM (pg_catalog.unnest($2::bigint[]), pg_catalog.unnest($3::text[]), \
                           pg_catalog.unnest($4::text[])) AS a(v, n, c)",
        &[&slug, &versions, &names, &checksums, &a.outcome],
    )
    .await
    .pg_context("cannot record the adopted history in the registry")?;
    Ok(())
}

/// Where an application reaches one tenant: what `tenantctl route` prints.
#[derive(Debug, Clone)]
pub struct Route {
    pub slug: String,
    pub state: String,
    /// The server the tenant lives on (`home`: the registry's own; else a `[servers.NAME]`).
    pub server: String,
    /// The database on that server holding the tenant's schema.
    pub database: String,
    pub schema: String,
    /// The tenant's own role (per_tenant_roles), which the application must SET LOCAL ROLE to.
    pub role: Option<String>,
}

/// The route to tenant `slug`, or None when no tenant of that slug is registered: its
/// placement as its registry row records it (registry V6).
pub async fn route(client: &impl GenericClient, slug: &str) -> Result<Option<Route>> {
    let row = client
        .query_opt(
            "SELECT t.slug, t.state, t.server_name, t.database_name, t.schema_name, \
                    t.role_name \
               FROM public.tenants t WHERE t.slug = $1",
            &[&slug],
        )
        .await
        .with_pg_context(|| format!("cannot read tenant {slug} from the registry"))?;
    Ok(row.map(|r| Route {
        slug: r.get(0),
        state: r.get(1),
        server: r.get(2),
        database: r.get(3),
        schema: r.get(4),
        role: r.get(5),
    }))
}

/// How many tenants the registry places on each server, by server name.
pub async fn tenants_per_server(client: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT t.server_name, pg_catalog.count(*) FROM public.tenants t \
              GROUP BY t.server_name ORDER BY t.server_name",
            &[],
        )
        .await
        .pg_context("cannot count the tenants per server in the registry")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// When the last tenant of this slug was dropped (UTC, ISO 8601), if one ever was.
pub async fn last_dropped_at(client: &impl GenericClient, slug: &str) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "SELECT to_char(max(dropped_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
               FROM public.tenant_drops WHERE slug = $1",
            &[&slug],
        )
        .await
        .with_pg_context(|| format!("cannot read the drop record of tenant {slug}"))?
        .get(0))
}

/// One privilege on a schema held by a role other than its owner (`PUBLIC` for everyone),
/// as suspend revokes and records it and resume grants it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaGrant {
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

/// Every privilege on `schema` held by a role other than its owner, from its ACL.
pub async fn schema_grants(client: &impl GenericClient, schema: &str) -> Result<Vec<SchemaGrant>> {
    let rows = client
        .query(
            "SELECT coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type, a.is_grantable \
               FROM pg_catalog.pg_namespace n \
              CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
              WHERE n.nspname = $1 AND a.grantee <> n.nspowner \
              ORDER BY 1, 2",
            &[&schema],
        )
        .await
        .with_pg_context(|| format!("cannot read the privileges on schema {schema}"))?;
    Ok(rows
        .iter()
        .map(|r| SchemaGrant {
            grantee: r.get(0),
            privilege: r.get(1),
            grantable: r.get(2),
        })
        .collect())
}

/// Records a suspension and marks the tenant `suspended`, in the suspending transaction.
pub async fn record_suspend(
    tx: &Transaction<'_>,
    slug: &str,
    reason: Option<&str>,
    revoked: &[SchemaGrant],
) -> Result<()> {
    let revoked = serde_json::to_string(revoked).expect("grants serialize");
    tx.execute(
        "INSERT INTO public.tenant_suspensions (slug, reason, revoked) \
         VALUES ($1, $2, ($3::text)::jsonb)",
        &[&slug, &reason, &revoked],
    )
    .await
    .pg_context("cannot record the suspension in the registry")?;
    tx.execute(
        "UPDATE public.tenants SET state = 'suspended', updated_at = pg_catalog.now() \
          WHERE slug = $1",
        &[&slug],
    )
    .await
    .pg_context("cannot mark the tenant suspended")?;
    Ok(())
}

/// The open suspension of a tenant: what it revoked. None when it has none.
pub async fn open_suspension(
    client: &impl GenericClient,
    slug: &str,
) -> Result<Option<Vec<SchemaGrant>>> {
    let row = client
        .query_opt(
            "SELECT revoked::text FROM public.tenant_suspensions \
              WHERE slug = $1 AND resumed_at IS NULL FOR UPDATE",
            &[&slug],
        )
        .await
        .with_pg_context(|| format!("cannot read the suspension of tenant {slug}"))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(serde_json::from_str(r.get(0)).map_err(|e| {
            anyhow::anyhow!("the suspension record of tenant {slug} is not readable: {e}")
        })?)),
    }
}

/// Closes a tenant's suspension (who resumed it, when) and gives it its state back:
/// `failed` when its last migration failed, else `active`.
pub async fn record_resume(tx: &Transaction<'_>, slug: &str) -> Result<String> {
    tx.execute(
        "UPDATE public.tenant_suspensions SET resumed_at = pg_catalog.now(), \
                resumed_by = current_user \
          WHERE slug = $1 AND resumed_at IS NULL",
        &[&slug],
    )
    .await
    .pg_context("cannot record the resume in the registry")?;
    Ok(tx
        .query_one(
            "UPDATE public.tenants SET updated_at = pg_catalog.now(), \
                    state = CASE WHEN last_error IS NULL THEN 'active' ELSE 'failed' END \
              WHERE slug = $1 RETURNING state",
            &[&slug],
        )
        .await
        .pg_context("cannot mark the tenant resumed")?
        .get(0))
}

/// Which tenants a streamed read returns.
#[derive(Clone, Copy)]
pub enum Pick<'a> {
    All,
    Selected(&'a Selector),
}

/// Calls `each` for every tenant `pick` returns, by slug, as the rows arrive: the rows are
/// never all in memory at once (tokio-postgres hands them over with backpressure), so a
/// command that only aggregates or prints them runs in the same memory at any fleet size.
pub async fn for_each_tenant(
    client: &tokio_postgres::Client,
    pick: Pick<'_>,
    mut each: impl FnMut(Tenant),
) -> Result<()> {
    stream_tenants(client, pick, "", |t| {
        each(t);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(())
}

/// [`for_each_tenant`] in the byte order of the slugs (the order a run's report sorts its
/// tenants in, whatever the database's collation), which `each` may stop early; whether
/// every row was seen.
pub async fn for_each_tenant_by_bytes(
    client: &tokio_postgres::Client,
    pick: Pick<'_>,
    each: impl FnMut(Tenant) -> ControlFlow<()>,
) -> Result<bool> {
    stream_tenants(client, pick, " COLLATE \"C\"", each).await
}

async fn stream_tenants(
    client: &tokio_postgres::Client,
    pick: Pick<'_>,
    collate: &str,
    mut each: impl FnMut(Tenant) -> ControlFlow<()>,
) -> Result<bool> {
    use futures_util::StreamExt;
    let (clause, params) = pick_sql(pick);
    let refs = as_refs(&params);
    let sql = format!("{SELECT_TENANTS} WHERE {clause} ORDER BY t.slug{collate}");
    // The planner's cost for the whole registry crosses PostgreSQL's JIT thresholds at a few
    // ten thousand tenants, and compiling this plain read took 0.27 s (0.88 s sorted by
    // bytes) of a 0.5 s query at 100,000; it runs once, so compiling never pays. Off for
    // this session (a read of the registry; tenants' work runs on other sessions).
    client
        .batch_execute("SET jit = off")
        .await
        .pg_context("cannot read the tenant registry")?;
    let rows = client
        .query_raw(sql.as_str(), refs)
        .await
        .pg_context("cannot read the tenant registry")?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.next().await {
        if each(tenant(&row.pg_context("cannot read the tenant registry")?)).is_break() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// [`pick_sql`], narrowed to `slugs` when any are named.
fn pick_with_slugs(pick: Pick<'_>, slugs: &[String]) -> (String, Vec<Param>) {
    let (mut clause, mut params) = pick_sql(pick);
    if !slugs.is_empty() {
        params.push(Box::new(slugs.to_vec()));
        clause = format!("{clause} AND t.slug = ANY(${}::text[])", params.len());
    }
    (clause, params)
}

/// Bound parameters as tokio-postgres takes them.
fn as_refs(params: &[Param]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as _).collect()
}

fn pick_sql(pick: Pick<'_>) -> (String, Vec<Param>) {
    match pick {
        Pick::All => ("true".to_string(), Vec::new()),
        Pick::Selected(sel) => selector_sql(sel),
    }
}

/// Begins a read-only transaction on one snapshot: two reads of the registry inside it
/// (one to count or to find the tenants elsewhere, one to write the rows) see the same
/// tenants in the same state, whatever commits meanwhile. Kept only as long as a read-only
/// command runs (it holds back vacuum's horizon while open). Ended by [`end_snapshot`].
pub async fn begin_snapshot(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .pg_context("cannot begin a read-only transaction to read the tenant registry")
}

/// Ends the transaction of [`begin_snapshot`] (it changed nothing).
pub async fn end_snapshot(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute("COMMIT")
        .await
        .pg_context("cannot end the read-only transaction on the tenant registry")
}

/// What one tenant's schema holds and how busy it is (`tenantctl usage`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub slug: String,
    pub schema: String,
    /// Tables and materialized views with their indexes and TOAST (pg_total_relation_size).
    pub total_bytes: i64,
    /// Of which the tables themselves with their TOAST (pg_table_size).
    pub table_bytes: i64,
    /// Of which their indexes (pg_indexes_size).
    pub index_bytes: i64,
    /// Of which TOAST (out-of-line values), indexes included.
    pub toast_bytes: i64,
    /// The planner's estimate (pg_class.reltuples), as of the last ANALYZE or VACUUM.
    pub rows_estimate: i64,
    /// Rows inserted, updated and deleted since the statistics were reset.
    pub writes: i64,
    /// Sequential and index scans since the statistics were reset.
    pub scans: i64,
    /// Where the tenant lives: its server (`home`, or a `[servers.NAME]`) and database.
    pub server: String,
    pub database: String,
}

/// The sums of one schema's tables (`usage`), in the order of the columns both usage
/// queries select after the slug, schema, server and database (and the Citus backend's
/// query of the shards, `tenant::citus_usage`): `c` a table's pg_class row, `s` its
/// pg_stat_user_tables row.
pub const USAGE_SUMS: &str = "coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint, \
    coalesce(sum(pg_catalog.pg_table_size(c.oid)), 0)::bigint, \
    coalesce(sum(pg_catalog.pg_indexes_size(c.oid)), 0)::bigint, \
    coalesce(sum(CASE WHEN c.reltoastrelid <> 0 \
        THEN pg_catalog.pg_total_relation_size(c.reltoastrelid) END), 0)::bigint, \
    coalesce(sum(GREATEST(c.reltuples, 0)), 0)::bigint, \
    coalesce(sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del), 0)::bigint, \
    coalesce(sum(s.seq_scan + coalesce(s.idx_scan, 0)), 0)::bigint";

/// The tables of the schema `n.nspname` names, with their statistics, but those `skip`
/// (a condition on `c`) leaves out.
fn usage_joins(skip: Option<&str>) -> String {
    let skip = skip
        .map(|cond| format!(" AND NOT ({cond})"))
        .unwrap_or_default();
    format!(
        "LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'm'){skip} \
         LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid"
    )
}

/// How `usage`'s catalog query reads; the backend of the place decides
/// (`Backend::usage_catalog`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageCatalog<'a> {
    /// At most this many rows, the largest.
    pub top: Option<i64>,
    /// A condition on a table's pg_class row `c`: the tables left out of the sums, because
    /// their numbers are read elsewhere (a Citus coordinator's distributed tables, whose
    /// rows live in shards on the workers).
    pub skip: Option<&'a str>,
}

fn usage_row(r: &Row) -> Usage {
    Usage {
        slug: r.get(0),
        schema: r.get(1),
        server: r.get(2),
        database: r.get(3),
        total_bytes: r.get(4),
        table_bytes: r.get(5),
        index_bytes: r.get(6),
        toast_bytes: r.get(7),
        rows_estimate: r.get(8),
        writes: r.get(9),
        scans: r.get(10),
    }
}

/// Usage of the tenants `pick` returns (with `slugs` when named), largest first, at most
/// `how.top`: ONE catalog query for the whole server, grouped by schema, never one per
/// tenant.
pub async fn usage(
    client: &impl GenericClient,
    pick: Pick<'_>,
    slugs: &[String],
    how: UsageCatalog<'_>,
) -> Result<Vec<Usage>> {
    let (clause, mut params) = pick_with_slugs(pick, slugs);
    params.push(Box::new(how.top));
    let joins = usage_joins(how.skip);
    let limit = params.len();
    let refs = as_refs(&params);
    // Tenants elsewhere are not in this database's catalog: `usage_at` reads them there.
    let sql = format!(
        "SELECT t.slug, t.schema_name, t.server_name, t.database_name, {USAGE_SUMS} \
           FROM public.tenants t \
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name \
           {joins} \
          WHERE {clause} AND {HOME_ROW} \
          GROUP BY t.slug, t.schema_name, t.server_name, t.database_name \
          ORDER BY 5 DESC, t.slug \
          LIMIT ${limit}::bigint"
    );
    let rows = client
        .query(&sql, &refs)
        .await
        .pg_context("cannot read the tenants' sizes from the catalog")?;
    Ok(rows.iter().map(usage_row).collect())
}

/// A registry row of a tenant living in the registry's own database (on home).
const HOME_ROW: &str =
    "(t.server_name = 'home' AND t.database_name = pg_catalog.current_database())";

/// The tenants `pick` returns (with `slugs` when named) that live elsewhere than the
/// registry's database, by slug: where `usage` must read their catalog, and what a streamed
/// `status` checks where they live before it writes them.
pub async fn elsewhere(
    client: &impl GenericClient,
    pick: Pick<'_>,
    slugs: &[String],
) -> Result<Vec<Tenant>> {
    let (clause, params) = pick_with_slugs(pick, slugs);
    let refs = as_refs(&params);
    let rows = client
        .query(
            &format!("{SELECT_TENANTS} WHERE {clause} AND NOT {HOME_ROW} ORDER BY t.slug"),
            &refs,
        )
        .await
        .pg_context("cannot read the tenant registry")?;
    Ok(rows.iter().map(tenant).collect())
}

/// The places (server, database) other than the registry's database where the tenants
/// `pick` returns (with `slugs` when named) live: where `list` and `status` read what
/// each place knows of its tenants (their Citus nodes).
pub async fn places_elsewhere(
    client: &impl GenericClient,
    pick: Pick<'_>,
    slugs: &[String],
) -> Result<Vec<(String, String)>> {
    let (clause, params) = pick_with_slugs(pick, slugs);
    let refs = as_refs(&params);
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT t.server_name, t.database_name FROM public.tenants t \
                  WHERE {clause} AND NOT {HOME_ROW} ORDER BY 1, 2"
            ),
            &refs,
        )
        .await
        .pg_context("cannot read the tenant registry")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `usage` of `tenants` (all living in the database `client` reaches, elsewhere than the
/// registry), largest first, at most `how.top`: ONE catalog query for all of them.
pub async fn usage_at(
    client: &impl GenericClient,
    tenants: &[Tenant],
    how: UsageCatalog<'_>,
) -> Result<Vec<Usage>> {
    let slugs: Vec<&str> = tenants.iter().map(|t| t.slug.as_str()).collect();
    let schemas: Vec<&str> = tenants.iter().map(|t| t.schema.as_str()).collect();
    let servers: Vec<&str> = tenants.iter().map(|t| t.server.as_str()).collect();
    let databases: Vec<&str> = tenants.iter().map(|t| t.database.as_str()).collect();
    let joins = usage_joins(how.skip);
    let sql = format!(
        "SELECT t.slug, t.schema_name, t.server_name, t.database_name, {USAGE_SUMS} \
           FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), \
                           pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[])) \
                AS t(slug, schema_name, server_name, database_name) \
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name \
           {joins} \
          GROUP BY t.slug, t.schema_name, t.server_name, t.database_name \
          ORDER BY 5 DESC, t.slug \
          LIMIT $5::bigint"
    );
    let rows = client
        .query(&sql, &[&slugs, &schemas, &servers, &databases, &how.top])
        .await
        .pg_context("cannot read the tenants' sizes from the catalog")?;
    Ok(rows.iter().map(usage_row).collect())
}
