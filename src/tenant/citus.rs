//! The kind of server the tenants live on, and what differs on a Citus coordinator: how a
//! tenant's transaction starts (its schema made a distributed schema), how its statements are
//! sent (one by one), which migrations can run, and where each tenant lives. Commands hold a
//! `Backend` and call it at these points; they do not ask "is this Citus?" themselves.
//! docs/citus.md describes the behaviour.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use deadpool_postgres::GenericClient;

use crate::domain::citus_rules::{self, Needs};
use crate::domain::exit::bad_input;
use crate::domain::migration_set::MigrationSet;
use crate::domain::names::{quote_ident, RESTORE_PREFIX};
use crate::pg::connect::PgContext;
use crate::pg::txn::{Step, Tx};
use crate::tenant::citus_schema::{distribute_quietly, SchemaOps};

/// Plain PostgreSQL, or a Citus coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Plain,
    Citus(Citus),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citus {
    /// `[citus] distribute`: new tenant schemas become distributed schemas.
    pub distribute: bool,
    /// The migrations create triggers (checked safe by `Backend::check_migrations`).
    pub triggers: bool,
}

/// What a tenant transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `create`: the schema is made in this transaction.
    Create,
    /// Migrations (or other changes) to an existing tenant.
    Change,
}

/// Whether the database has the citus extension, and if so whether this node is the
/// coordinator (its group is 0) and which node is (`host:port`, from the metadata the
/// coordinator synced to its workers).
const DETECT: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')";
const NODE_ROLE: &str = "SELECT (SELECT groupid FROM pg_catalog.pg_dist_local_group) = 0, \
        (SELECT nodename || ':' || nodeport FROM pg_catalog.pg_dist_node \
          WHERE groupid = 0 AND noderole = 'primary' LIMIT 1)";

/// Each distributed schema's node(s), `host:port`, in one read of Citus's metadata tables
/// (not the `citus_shards` view, which asks every node for every shard's size). A schema
/// without tables has no shard yet, so no node.
const NODES: &str = "SELECT ns.nspname::text, \
        pg_catalog.string_agg(DISTINCT n.nodename || ':' || n.nodeport, ',') \
      FROM pg_catalog.pg_dist_schema ds \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = ds.schemaid \
      LEFT JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid \
      LEFT JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid \
      LEFT JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid \
      LEFT JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid \
     GROUP BY 1";

/// Run on every node (`run_command_on_all_nodes`): the size (tables, indexes, TOAST: what
/// Citus's `citus_shard_sizes()` gives) of each distributed schema's shard placed on THIS
/// node, as one JSON array of `[shardid, bytes]`. Not `citus_shard_sizes()` itself: a worker
/// it cannot reach counts 0 bytes there, with no error, while `run_command_on_all_nodes`
/// says for each node whether it answered. One round trip to each node, in parallel, and a
/// size read per shard there (about 25 ms for 50 tenants of 9 tables, 250 ms for 300, on the
/// test machine: docs/citus.md).
const SHARD_SIZES_ON_NODE: &str = "SELECT coalesce(pg_catalog.json_agg(\
        pg_catalog.json_build_array(sh.shardid, pg_catalog.pg_total_relation_size(c.oid))), \
        '[]')::text \
      FROM pg_catalog.pg_dist_schema ds \
      JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid \
      JOIN pg_catalog.pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid \
      JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = sh.shardid \
       AND pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group) \
      JOIN pg_catalog.pg_class c \
        ON c.oid = pg_catalog.to_regclass(pg_catalog.shard_name(sh.logicalrelid, sh.shardid))";

/// Sends `SHARD_SIZES_ON_NODE` (`$1`) to every active primary node (the coordinator too,
/// which can hold shards): each node's name and group, whether it answered, and its answer
/// or error.
const SIZES_ON_ALL_NODES: &str = "SELECT coalesce(n.nodename || ':' || n.nodeport, \
        r.nodeid::text), n.groupid, r.success, r.result \
      FROM pg_catalog.run_command_on_all_nodes($1) r \
      LEFT JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid";

/// Each distributed schema's shards and the node group of each placement (the
/// coordinator's metadata): a schema's size is known only when every group holding one of
/// its shards answered.
const PLACEMENTS: &str = "SELECT ns.nspname::text, s.shardid, pl.groupid \
      FROM pg_catalog.pg_dist_schema ds \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = ds.schemaid \
      JOIN pg_catalog.pg_dist_partition p ON p.colocationid = ds.colocationid \
      JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid \
      JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid";

/// The active primary worker nodes that take shards, `host:port`.
const WORKERS: &str = "SELECT nodename || ':' || nodeport FROM pg_catalog.pg_dist_node \
     WHERE isactive AND noderole = 'primary' AND shouldhaveshards AND groupid <> 0 ORDER BY 1";

/// What `status --sizes` reads on a Citus coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Each distributed schema's bytes, by schema; `None` when a node holding one of its
    /// shards did not answer (its size is unknown, not 0).
    pub schemas: BTreeMap<String, Option<i64>>,
    /// Every worker taking shards (`host:port`), those without a tenant too.
    pub workers: Vec<String>,
    /// The nodes that did not answer (`host:port`, or the group when no active node has
    /// it), each with why.
    pub unreachable: Vec<(String, String)>,
}

/// One node's answer to `SIZES_ON_ALL_NODES`: name, group, answered, answer or error.
pub(crate) type NodeAnswer = (String, Option<i32>, bool, Option<String>);

/// Each schema's bytes (`None`: unknown), and each node that did not answer, with why.
type Combined = (BTreeMap<String, Option<i64>>, Vec<(String, String)>);

/// The schemas' sizes from the nodes' answers and the placements (schema, shard, group):
/// a shard placed on several nodes counts once (its largest copy, as Citus's
/// `citus_shards` view); a schema with a shard in a group that did not answer gets `None`.
/// A shard its node did not find counts 0, as with `citus_shard_sizes()`.
pub(crate) fn combine_sizes(
    answers: &[NodeAnswer],
    placements: &[(String, i64, i32)],
) -> Result<Combined> {
    use std::collections::BTreeSet;
    let mut shard_bytes: BTreeMap<i64, i64> = BTreeMap::new();
    let mut answered = BTreeSet::new();
    let mut unreachable = Vec::new();
    for (node, group, ok, result) in answers {
        let result = result.as_deref().unwrap_or_default();
        if !ok {
            unreachable.push((node.clone(), result.to_string()));
            continue;
        }
        let shards: Vec<(i64, i64)> = serde_json::from_str(result)
            .with_context(|| format!("Citus node {node} answered the size query oddly"))?;
        for (shard, bytes) in shards {
            let b = shard_bytes.entry(shard).or_default();
            *b = (*b).max(bytes);
        }
        answered.extend(*group);
    }
    let mut shards: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    let mut unasked = BTreeSet::new();
    for (schema, shard, group) in placements {
        shards.entry(schema.clone()).or_default().insert(*shard);
        if !answered.contains(group) {
            unknown.insert(schema.clone());
            let failed = answers.iter().any(|a| a.1 == Some(*group) && !a.2);
            if !failed {
                unasked.insert(*group);
            }
        }
    }
    for g in unasked {
        unreachable.push((
            format!("group {g}"),
            "no active primary node of this group was asked".to_string(),
        ));
    }
    let schemas = shards
        .into_iter()
        .map(|(schema, ids)| {
            let bytes = ids
                .iter()
                .map(|id| shard_bytes.get(id).copied().unwrap_or(0));
            let size = (!unknown.contains(&schema)).then(|| bytes.sum());
            (schema, size)
        })
        .collect();
    Ok((schemas, unreachable))
}

/// Starts Citus's rebalancer as a background job in transfer mode `$1` (`block_writes` or
/// `auto`): its id, or NULL when nothing is to move.
const REBALANCE_START: &str = "SELECT pg_catalog.citus_rebalance_start(\
        shard_transfer_mode := $1::text::citus.shard_transfer_mode)";

/// A rebalance job's state, and its finished and total moves (tasks).
const REBALANCE_STATUS: &str = "SELECT state::text, \
        coalesce((details -> 'task_state_counts' ->> 'done')::int, 0), \
        (SELECT coalesce(sum(value::int), 0)::int \
           FROM pg_catalog.jsonb_each_text(details -> 'task_state_counts')) \
      FROM pg_catalog.citus_rebalance_status() WHERE job_id = $1";

/// The errors of a rebalance job's failed moves.
const REBALANCE_ERRORS: &str =
    "SELECT coalesce(message, status::text) FROM pg_catalog.pg_dist_background_task \
     WHERE job_id = $1 AND status IN ('error', 'cancelled') ORDER BY task_id";

/// The distributed schemas Citus's rebalancer would move now (its plan, the same strategy
/// and threshold `citus_rebalance_start` uses), by the colocation group of each planned
/// shard.
const REBALANCE_PLAN: &str = "SELECT DISTINCT ns.nspname::text \
      FROM pg_catalog.get_rebalance_table_shards_plan() pl \
      JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = pl.table_name \
      JOIN pg_catalog.pg_dist_schema ds ON ds.colocationid = p.colocationid \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = ds.schemaid ORDER BY 1";

/// The moves of rebalance job `$1` that move a distributed schema: task, status, schema,
/// from and to node (`host:port`), and the schema's tables. Citus writes each task's
/// command as `SELECT pg_catalog.citus_move_shard_placement(shard,from_node_id,to_node_id,
/// mode)` (operations/shard_rebalancer.c); the shard's colocation group is the schema's.
/// Other tasks (copying reference tables to a new node, moving shards of tables that are
/// not in a distributed schema) move no tenant.
const REBALANCE_MOVES: &str = "SELECT t.task_id, t.status::text, ns.nspname::text, \
        src.nodename || ':' || src.nodeport, dst.nodename || ':' || dst.nodeport, \
        (SELECT count(*) FROM pg_catalog.pg_dist_partition cp \
          WHERE cp.colocationid = ds.colocationid)::int, t.message \
      FROM pg_catalog.pg_dist_background_task t \
      CROSS JOIN LATERAL pg_catalog.regexp_match(t.command, \
            'citus_move_shard_placement\\((\\d+),(\\d+),(\\d+),') m \
      JOIN pg_catalog.pg_dist_shard s ON s.shardid = m[1]::bigint \
      JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = s.logicalrelid \
      JOIN pg_catalog.pg_dist_schema ds ON ds.colocationid = p.colocationid \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = ds.schemaid \
      JOIN pg_catalog.pg_dist_node src ON src.nodeid = m[2]::int \
      JOIN pg_catalog.pg_dist_node dst ON dst.nodeid = m[3]::int \
     WHERE t.job_id = $1 ORDER BY t.task_id";

/// One task of a rebalance job that moves a tenant schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMoveTask {
    pub task_id: i64,
    /// Citus's `citus_task_status`: blocked, runnable, running, cancelling, done, error,
    /// unscheduled, cancelled.
    pub status: String,
    pub schema: String,
    pub from: String,
    pub to: String,
    pub tables: i32,
    /// Citus's message (the error of a failed move).
    pub message: String,
}

impl SchemaMoveTask {
    /// Whether Citus is done with it: it will not run (again).
    pub fn ended(&self) -> bool {
        matches!(
            self.status.as_str(),
            "done" | "error" | "cancelled" | "unscheduled"
        )
    }
}

/// Where a Citus rebalance job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceState {
    /// Citus's `citus_job_status`: scheduled, running, finished, cancelling, cancelled,
    /// failing, failed.
    pub state: String,
    pub done: usize,
    pub total: usize,
}

impl RebalanceState {
    pub fn ended(&self) -> bool {
        matches!(self.state.as_str(), "finished" | "cancelled" | "failed")
    }
}

/// Which of the schemas `$1` are Citus distributed schemas.
const DISTRIBUTED: &str = "SELECT ns.nspname::text FROM pg_catalog.pg_dist_schema ds \
      JOIN pg_catalog.pg_namespace ns ON ns.oid = ds.schemaid WHERE ns.nspname = ANY($1)";

/// Run on each worker by `sync_worker_sequences` for schema `{schema}` (a tenant schema
/// name, validated, its quotes doubled): each sequence owned by a column of the schema is
/// set to the column's highest value within this worker's range of the sequence (from its
/// start, 2^48 values) when that is past its last value. Within the range, not the column's
/// highest overall: a tenant moved between nodes has rows from several workers' ranges, and
/// the highest of them lies in one worker's range only.
const WORKER_SEQUENCES: &str = "DO $tenantctl$ DECLARE r record; m bigint; BEGIN \
    FOR r IN SELECT d.objid AS seq, d.refobjid::pg_catalog.regclass AS tbl, a.attname, \
                    s.seqstart \
               FROM pg_catalog.pg_depend d \
               JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid \
               JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
               JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
               JOIN pg_catalog.pg_attribute a \
                 ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                AND d.deptype IN ('a', 'i') AND n.nspname = '{schema}' LOOP \
      EXECUTE pg_catalog.format('SELECT max(%1$I)::bigint FROM %2$s \
                                  WHERE %1$I >= $1 AND %1$I - $1 < (1::bigint << 48)', \
                                r.attname, r.tbl) INTO m USING r.seqstart; \
      IF m > coalesce(pg_catalog.pg_sequence_last_value(r.seq), 0) THEN \
        PERFORM pg_catalog.setval(r.seq, m); \
      END IF; \
    END LOOP; END $tenantctl$";

/// Whether `$1` (`schema.table`) exists, and is a Citus reference table.
const REFERENCE_TABLE: &str = "SELECT pg_catalog.to_regclass($1) IS NOT NULL, EXISTS (\
        SELECT 1 FROM pg_catalog.pg_dist_partition \
         WHERE logicalrelid = pg_catalog.to_regclass($1) AND partmethod = 'n' AND repmodel = 't')";

impl Backend {
    /// What `conn`'s database is. A Citus worker node is refused (exit 2): tenantctl works
    /// through the coordinator, which the message names when the worker knows it.
    pub async fn detect(conn: &impl GenericClient, distribute: bool, at: &str) -> Result<Backend> {
        let citus: bool = conn
            .query_one(DETECT, &[])
            .await
            .pg_context("cannot look for the citus extension")?
            .get(0);
        if !citus {
            return Ok(Backend::Plain);
        }
        let row = conn
            .query_one(NODE_ROLE, &[])
            .await
            .pg_context("cannot read which Citus node this is")?;
        let (coordinator, known): (Option<bool>, Option<String>) = (row.get(0), row.get(1));
        if coordinator == Some(false) {
            let hint = match known {
                Some(c) => format!("connect to the coordinator, {c}, with the same database"),
                None => "connect to the cluster's coordinator".to_string(),
            };
            return Err(bad_input(format!(
                "{at} is a Citus worker node; tenantctl works through the coordinator (a \
                 worker holds only shards of the tenants, and changes made there bypass \
                 Citus): {hint}; nothing was changed"
            )));
        }
        Ok(Backend::Citus(Citus {
            distribute,
            triggers: false,
        }))
    }

    pub fn is_citus(&self) -> bool {
        matches!(self, Backend::Citus(_))
    }

    /// Whether new tenant schemas are made distributed schemas.
    pub fn distributes(&self) -> bool {
        matches!(self, Backend::Citus(c) if c.distribute)
    }

    /// Refuses (exit 2) migrations Citus cannot run in a distributed schema, naming file,
    /// statement and rule, and returns the backend ready for them. Statements that need the
    /// server to decide (foreign keys to other schemas) are checked by `check_on_server`.
    pub fn check_migrations(&self, set: &MigrationSet, upto: i64) -> Result<(Backend, Needs)> {
        let Backend::Citus(c) = self else {
            return Ok((Backend::Plain, Needs::default()));
        };
        if !c.distribute {
            return Ok((self.clone(), Needs::default()));
        }
        let files: Vec<(String, String)> = set
            .migrations
            .iter()
            .filter(|m| i64::from(m.version()) <= upto)
            .map(|m| {
                (
                    format!("V{}__{}.sql", m.version(), m.name()),
                    m.sql().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let needs = citus_rules::check(&files).map_err(|r| {
            bad_input(format!(
                "{r}; nothing was changed (docs/citus.md lists what Citus cannot run)"
            ))
        })?;
        let ready = Backend::Citus(Citus {
            triggers: needs.triggers,
            ..c.clone()
        });
        Ok((ready, needs))
    }

    /// The server side of `check_migrations`: every table a foreign key reaches outside the
    /// tenant's schema must be a Citus reference table (a distributed schema's table can
    /// reference only those). Exit 2, before any tenant is touched.
    pub async fn check_on_server(&self, conn: &impl GenericClient, needs: &Needs) -> Result<()> {
        if !self.distributes() {
            return Ok(());
        }
        for r in &needs.outside_references {
            let name = format!(
                "{}.{}",
                crate::domain::names::quote_ident(&r.schema),
                crate::domain::names::quote_ident(&r.table)
            );
            let row = conn
                .query_one(REFERENCE_TABLE, &[&name])
                .await
                .pg_context("cannot check a foreign key's table")?;
            let (exists, reference): (bool, bool) = (row.get(0), row.get(1));
            if !reference {
                let why = if exists {
                    "is not a Citus reference table"
                } else {
                    "does not exist (yet)"
                };
                return Err(bad_input(format!(
                    "migration {} line {} (`{}`) cannot run in a Citus distributed schema: its \
                     foreign key references {name}, which {why}; a tenant table can reference \
                     only tables of its own schema or reference tables (SELECT \
                     create_reference_table('{}') in a shared migration); nothing was changed",
                    r.file,
                    r.line,
                    r.statement,
                    name.replace('\'', "''")
                )));
            }
        }
        Ok(())
    }

    /// Per-tenant roles cannot work on a distributed schema: Citus reaches the workers as
    /// the current role, and a tenant's role is NOLOGIN. Exit 2 at create.
    pub fn check_tenant_roles(&self, per_tenant_roles: bool) -> Result<()> {
        if per_tenant_roles && self.distributes() {
            return Err(bad_input(
                "[tenants] per_tenant_roles does not work on Citus: Citus opens its \
                 connections to the worker nodes as the current role, and a tenant's role is \
                 NOLOGIN, so every query after SET ROLE to it would fail on the worker (and \
                 moving the tenant too: citusdata/citus#7719); turn per_tenant_roles off and \
                 rely on app_role with schema grants, or set [citus] distribute = false to \
                 keep the tenants on the coordinator; nothing was created",
            ));
        }
        Ok(())
    }

    /// On Citus, the restored copy is staged in a local schema of the coordinator by the
    /// restore's NOLOGIN role: Citus's DDL propagation is turned off for that load, so none
    /// of its statements reaches a worker (where that role could not log in). Run right
    /// after the staging load's `BEGIN`; `None` on plain PostgreSQL.
    pub fn restore_staging_sql(&self) -> Option<&'static str> {
        self.is_citus().then_some(
            "SET LOCAL citus.enable_ddl_propagation = off; \
             SET LOCAL citus.enable_schema_based_sharding = off",
        )
    }

    /// Keeps the schemas this transaction creates local on a Citus coordinator (a copy
    /// distributed later by `distribute_copy`), even where the database turns
    /// `citus.enable_schema_based_sharding` on for every session: a schema distributed as
    /// it is created could not be loaded locally, nor distributed again. Nothing on plain
    /// PostgreSQL.
    pub async fn keep_schemas_local(&self, tx: &impl GenericClient) -> Result<()> {
        if self.is_citus() {
            tx.batch_execute("SET LOCAL citus.enable_schema_based_sharding = off")
                .await
                .pg_context("cannot keep the copy's schema local while it loads")?;
        }
        Ok(())
    }

    /// `sql` kept on the coordinator (Citus's DDL propagation off around it, on again
    /// after): the restore's `REASSIGN OWNED` of its staged copy, a local schema the
    /// workers never had. Citus 13.2 propagating that statement crashes the coordinator
    /// (signal 11, found by this restore's tests). `sql` unchanged on plain PostgreSQL.
    pub fn on_coordinator_only(&self, sql: &str) -> String {
        if !self.is_citus() {
            return sql.to_string();
        }
        format!(
            "SET LOCAL citus.enable_ddl_propagation = off;\n{sql}\
             SET LOCAL citus.enable_ddl_propagation = on;\n"
        )
    }

    /// Moves the workers' sequences of restored schema `schema` past the restored rows.
    /// Each worker draws a distributed table's sequence values from its own range
    /// (`groupid << 48` on), for rows that triggers add there (the example's audit trail);
    /// a freshly distributed copy starts that range again, and restored rows drawn from the
    /// same worker's range would collide with the next ones. Run after the swap committed
    /// (the workers' sequences exist only then), on each worker, for each sequence owned by
    /// a column of the schema, only when the column's highest value lies in that worker's
    /// range. Nothing on plain PostgreSQL or with `[citus] distribute = false`.
    pub async fn sync_worker_sequences(
        &self,
        conn: &impl GenericClient,
        schema: &str,
    ) -> Result<()> {
        if !self.distributes() {
            return Ok(());
        }
        let command = WORKER_SEQUENCES.replace("{schema}", &schema.replace('\'', "''"));
        let rows = conn
            .query(
                "SELECT nodename || ':' || nodeport, success, result \
                   FROM pg_catalog.run_command_on_workers($1)",
                &[&command],
            )
            .await
            .pg_context(
                "cannot reach the workers to move their sequences past the restored rows",
            )?;
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, String>(2)))
            .collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "cannot move the workers' sequences past the restored rows ({})",
                failed.join("; ")
            );
        }
        Ok(())
    }

    /// After a restore's swap rolled back: drops schema `schema` (the staged copy's name)
    /// from every worker when the coordinator has none of that name. `citus_schema_distribute`
    /// of a schema that exists on the coordinator only creates it on the workers outside the
    /// transaction (Citus 13.2.2), with objects it creates ahead of the distribution, so
    /// the rollback leaves them there. A staging name of restore's own (`tenantctl_restore_`
    /// and its process id: nothing else is ever called so) is dropped with CASCADE; a new
    /// tenant's own name only when empty. Returns what could not be dropped, for the
    /// operator to drop by hand.
    pub async fn drop_stray_worker_schema(
        &self,
        conn: &impl GenericClient,
        schema: &str,
    ) -> Result<Vec<String>> {
        if !self.distributes() {
            return Ok(Vec::new());
        }
        let on_coordinator: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .pg_context("cannot look for the staged copy's schema")?
            .get(0);
        if on_coordinator {
            return Ok(Vec::new());
        }
        let cascade = match schema.starts_with(RESTORE_PREFIX) {
            true => " CASCADE",
            false => "",
        };
        let command = format!("DROP SCHEMA IF EXISTS {}{cascade}", quote_ident(schema));
        let rows = conn
            .query(
                "SELECT nodename || ':' || nodeport, success, result \
                   FROM pg_catalog.run_command_on_workers($1)",
                &[&command],
            )
            .await
            .pg_context("cannot reach the workers to drop the staged copy's schema")?;
        Ok(rows
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .map(|r| {
                format!(
                    "schema {schema} on worker {}: {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(2)
                )
            })
            .collect())
    }

    /// Starts the restore's swap transaction: its shard commands sequential (the replaced
    /// distributed schema is dropped in the same transaction as the copy is distributed),
    /// and the restored tables' triggers allowed on a distributed table.
    pub async fn begin_restore_swap(&self, tx: &impl GenericClient) -> Result<()> {
        if self.distributes() {
            tx.batch_execute(
                "SET LOCAL citus.multi_shard_modify_mode = 'sequential'; \
                 SET LOCAL citus.enable_unsafe_triggers = on",
            )
            .await
            .pg_context("cannot prepare the restore's transaction for Citus")?;
        }
        Ok(())
    }

    /// Makes the restored schema a distributed schema with its rows, in the swap's
    /// transaction, as tenantctl's own role. Citus fires user triggers on the rows it copies
    /// to the worker (an audit trigger would log every row again), so the enabled ones are
    /// disabled around it and set back as they were; then the coordinator's local copy of
    /// the rows is emptied (the shards hold them). Nothing on plain PostgreSQL or with
    /// `[citus] distribute = false`.
    pub async fn distribute_restored(&self, tx: &impl GenericClient, schema: &str) -> Result<()> {
        if !self.distributes() {
            return Ok(());
        }
        distribute_quietly(tx, schema)
            .await
            .with_context(|| format!("cannot make the restored schema {schema} distributed"))?;
        Ok(())
    }

    /// `move --to` into this database: right after the copy's transaction created the
    /// tenant's schema. On Citus the rest of the copy is loaded as a local schema of the
    /// coordinator, as restore stages its copy (`restore_staging_sql`): pg_dump's statements
    /// (identity columns added by `ALTER TABLE`, several statements per query) run on local
    /// tables, and none reaches a worker before `distribute_copy`. The schema itself is
    /// created before, with DDL propagation on, so that Citus creates it on the workers in
    /// this transaction: a schema it never saw is created there by `citus_schema_distribute`
    /// outside the transaction, and a rollback left it behind on every worker (Citus
    /// 13.2.2, found by tests/citus_move_to.rs).
    pub async fn begin_copy(&self, tx: &impl GenericClient) -> Result<()> {
        if let Some(sql) = self.restore_staging_sql() {
            tx.batch_execute(sql)
                .await
                .pg_context("cannot keep the copy on the coordinator while it loads")?;
        }
        Ok(())
    }

    /// `move --to` into this database, once the copy is loaded (`begin_copy`): DDL
    /// propagation on again, then the copy made a distributed schema with its rows as
    /// restore does (`begin_restore_swap`, `distribute_restored`: user triggers off around
    /// `citus_schema_distribute`, the coordinator's local rows freed), all in the copy's
    /// uncommitted transaction, so that a failure leaves nothing on any node. With
    /// `[citus] distribute = false` the copy stays a local schema; nothing on plain
    /// PostgreSQL.
    pub async fn distribute_copy(&self, tx: &impl GenericClient, schema: &str) -> Result<()> {
        if !self.is_citus() {
            return Ok(());
        }
        tx.batch_execute("SET LOCAL citus.enable_ddl_propagation = on")
            .await
            .pg_context("cannot let Citus propagate the copy to its workers")?;
        self.begin_restore_swap(tx).await?;
        self.distribute_restored(tx, schema).await
    }

    /// `move --to` into this database of tenant `slug`, which has its own role (`role`):
    /// refused (exit 2) where tenants are distributed, for the reason `check_tenant_roles`
    /// gives. `at` names the place.
    pub fn check_moved_role(&self, slug: &str, role: Option<&str>, at: &str) -> Result<()> {
        let Some(role) = role.filter(|_| self.distributes()) else {
            return Ok(());
        };
        Err(bad_input(format!(
            "tenant {slug} has its own role ({role}, [tenants] per_tenant_roles), and {at} is \
             a Citus coordinator that distributes tenants: Citus opens its connections to the \
             worker nodes as the current role, and a tenant's role is NOLOGIN, so every query \
             as that role would fail on the worker; nothing was changed (move it to a plain \
             PostgreSQL server, or into a database of its own there with --own-database)"
        )))
    }

    /// What only Citus does to a tenant's schema (`move --node`, `distribute`): refused
    /// (exit 2, nothing changed) on plain PostgreSQL, `at` naming the database.
    pub fn schema_ops(&self, what: &str, at: &str) -> Result<SchemaOps> {
        if !self.is_citus() {
            return Err(bad_input(format!(
                "{what} works on a Citus coordinator, and {at} has no citus extension; \
                 nothing was changed"
            )));
        }
        Ok(SchemaOps(()))
    }

    /// Starts a tenant transaction on this backend: right after `BEGIN`. On Citus the
    /// statements go one by one; the transaction runs its shard commands sequentially (a
    /// CREATE SCHEMA after a parallel multi-shard command would fail); a new schema becomes
    /// a distributed schema; and triggers (checked safe) are allowed.
    pub fn begin(&self, tx: &mut Tx<'_>, work: Work) {
        let Some(sql) = self.prologue(work) else {
            return;
        };
        tx.split_statements();
        tx.queue(Step::Sql("cannot prepare the transaction for Citus"), sql);
    }

    /// What a tenant transaction sends right after `BEGIN` on this backend (`begin`), for a
    /// transaction that is not a `Tx` (exec's simple queries); `None` on plain PostgreSQL.
    /// Send it with `statements`.
    pub fn prologue(&self, work: Work) -> Option<String> {
        self.settings("SET LOCAL", work)
    }

    /// The settings of `prologue` for the session, for a `-- no-transaction` file whose
    /// statements each commit on their own (a `SET LOCAL` would end with the first): sent
    /// with `statements` before the file, undone by the session's `RESET ALL` after it.
    /// `None` on plain PostgreSQL.
    pub fn session_prologue(&self) -> Option<String> {
        self.settings("SET", Work::Change)
    }

    /// Citus's settings for a tenant's statements, each as `{set} name = value`: shard
    /// commands sequential (a CREATE SCHEMA after a parallel multi-shard command would
    /// fail), a new schema made a distributed schema, triggers (checked safe) allowed.
    fn settings(&self, set: &str, work: Work) -> Option<String> {
        let Backend::Citus(c) = self else {
            return None;
        };
        let mut sql = format!("{set} citus.multi_shard_modify_mode = 'sequential'");
        // `[citus] distribute` decides, whatever the database's default.
        if work == Work::Create {
            let on = if c.distribute { "on" } else { "off" };
            sql.push_str(&format!(
                ";\n{set} citus.enable_schema_based_sharding = {on}"
            ));
        }
        if c.triggers {
            sql.push_str(&format!(";\n{set} citus.enable_unsafe_triggers = on"));
        }
        Some(sql)
    }

    /// `sql` as this backend takes it in a simple query: whole on plain PostgreSQL; on
    /// Citus one statement each (as `Tx::split_statements` does for `begin`'s
    /// transactions), since DDL on a distributed table within a multi-statement query fails
    /// ("cannot insert multiple commands into a prepared statement"). A text the splitter
    /// cannot read goes whole, for the server to report.
    pub fn statements<'a>(&self, sql: &'a str) -> Vec<&'a str> {
        if !self.is_citus() {
            return vec![sql];
        }
        match crate::domain::sql_split::split(sql) {
            Ok(statements) if statements.len() > 1 => statements.iter().map(|st| st.text).collect(),
            _ => vec![sql],
        }
    }

    /// Starts Citus's rebalancer, its moves in transfer mode `mode` (`block_writes`, or
    /// `auto` for logical replication): the job's id, `None` when the nodes are balanced
    /// already.
    pub async fn start_rebalance(
        &self,
        conn: &impl GenericClient,
        mode: &str,
    ) -> Result<Option<i64>> {
        let row = conn
            .query_one(REBALANCE_START, &[&mode])
            .await
            .pg_context("cannot start the Citus rebalancer")?;
        Ok(row.get(0))
    }

    /// The distributed schemas Citus's rebalancer would move now (`get_rebalance_table_shards_plan`).
    pub async fn rebalance_plan(&self, conn: &impl GenericClient) -> Result<Vec<String>> {
        let rows = conn
            .query(REBALANCE_PLAN, &[])
            .await
            .pg_context("cannot read the Citus rebalancer's plan")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The tasks of rebalance job `job` that move a tenant schema, in task order.
    pub async fn rebalance_moves(
        &self,
        conn: &impl GenericClient,
        job: i64,
    ) -> Result<Vec<SchemaMoveTask>> {
        let rows = conn
            .query(REBALANCE_MOVES, &[&job])
            .await
            .pg_context("cannot read the rebalance job's moves")?;
        Ok(rows
            .iter()
            .map(|r| SchemaMoveTask {
                task_id: r.get(0),
                status: r.get(1),
                schema: r.get(2),
                from: r.get(3),
                to: r.get(4),
                tables: r.get(5),
                message: r.get(6),
            })
            .collect())
    }

    /// Where rebalance job `job` is.
    pub async fn rebalance_state(
        &self,
        conn: &impl GenericClient,
        job: i64,
    ) -> Result<RebalanceState> {
        let row = conn
            .query_opt(REBALANCE_STATUS, &[&job])
            .await
            .pg_context("cannot read the rebalance's progress")?
            .ok_or_else(|| anyhow::anyhow!("Citus no longer knows rebalance job {job}"))?;
        Ok(RebalanceState {
            state: row.get(0),
            done: row.get::<_, i32>(1).max(0) as usize,
            total: row.get::<_, i32>(2).max(0) as usize,
        })
    }

    /// The errors of rebalance job `job`'s failed moves, as Citus recorded them.
    pub async fn rebalance_errors(
        &self,
        conn: &impl GenericClient,
        job: i64,
    ) -> Result<Vec<String>> {
        let rows = conn
            .query(REBALANCE_ERRORS, &[&job])
            .await
            .pg_context("cannot read the rebalance's errors")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Which of `schemas` are distributed schemas (empty on plain PostgreSQL).
    pub async fn distributed(
        &self,
        conn: &impl GenericClient,
        schemas: &[String],
    ) -> Result<std::collections::BTreeSet<String>> {
        if !self.is_citus() {
            return Ok(Default::default());
        }
        let rows = conn
            .query(DISTRIBUTED, &[&schemas])
            .await
            .pg_context("cannot read which schemas Citus distributes")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Each distributed schema's size and the workers (`status --sizes`), in three queries
    /// whatever the number of tenants (one of them a fan-out to every node); a node that
    /// does not answer is in `unreachable`, and the schemas with a shard there have no size. Refused (exit 2) on plain PostgreSQL, `at` naming the
    /// database: `tenantctl usage` gives each schema's size there.
    pub async fn sizes(&self, conn: &impl GenericClient, at: &str) -> Result<Sizes> {
        if !self.is_citus() {
            return Err(bad_input(format!(
                "status --sizes reads the tenants' sizes per Citus worker node, and {at} has \
                 no citus extension; nothing was shown (tenantctl usage gives each tenant's \
                 size on plain PostgreSQL)"
            )));
        }
        let answers: Vec<NodeAnswer> = conn
            .query(SIZES_ON_ALL_NODES, &[&SHARD_SIZES_ON_NODE])
            .await
            .pg_context("cannot ask the Citus nodes for the tenants' sizes")?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let placements: Vec<(String, i64, i32)> = conn
            .query(PLACEMENTS, &[])
            .await
            .pg_context("cannot read where Citus placed the tenants' shards")?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let (schemas, unreachable) = combine_sizes(&answers, &placements)?;
        let workers = conn
            .query(WORKERS, &[])
            .await
            .pg_context("cannot read the Citus worker nodes")?;
        let workers = workers.iter().map(|r| r.get(0)).collect();
        Ok(Sizes {
            schemas,
            workers,
            unreachable,
        })
    }

    /// Each distributed tenant schema's node (`host:port`), by schema, in one query; empty
    /// on plain PostgreSQL.
    pub async fn nodes(&self, conn: &impl GenericClient) -> Result<BTreeMap<String, String>> {
        if !self.is_citus() {
            return Ok(BTreeMap::new());
        }
        let rows = conn
            .query(NODES, &[])
            .await
            .pg_context("cannot read where Citus placed the tenants")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let node: Option<String> = r.get(1);
                node.map(|n| (r.get(0), n))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_with_a_shard_on_a_node_that_did_not_answer_has_no_size() {
        let answers: Vec<NodeAnswer> = vec![
            ("c:1".into(), Some(0), true, Some("[]".into())),
            (
                "w1:1".into(),
                Some(1),
                true,
                Some("[[10, 100], [11, 50], [30, 7]]".into()),
            ),
            (
                "w2:1".into(),
                Some(2),
                false,
                Some("failed to connect".into()),
            ),
        ];
        let placements = vec![
            ("a".to_string(), 10, 1),
            ("a".to_string(), 11, 1),
            ("b".to_string(), 20, 2),
            // Placed on both: known on w1, but w2's copy cannot be checked.
            ("c".to_string(), 30, 1),
            ("c".to_string(), 30, 2),
            // A shard w1 did not find counts 0; group 3 was not asked at all.
            ("d".to_string(), 40, 1),
            ("e".to_string(), 50, 3),
        ];
        let (schemas, down) = combine_sizes(&answers, &placements).unwrap();
        assert_eq!(schemas["a"], Some(150));
        assert_eq!(schemas["b"], None);
        assert_eq!(schemas["c"], None);
        assert_eq!(schemas["d"], Some(0));
        assert_eq!(schemas["e"], None);
        assert_eq!(
            down,
            vec![
                ("w2:1".to_string(), "failed to connect".to_string()),
                (
                    "group 3".to_string(),
                    "no active primary node of this group was asked".to_string()
                )
            ]
        );
        let odd = vec![("w1:1".into(), Some(1), true, Some("oops".into()))];
        assert!(combine_sizes(&odd, &[]).is_err());
    }

    #[test]
    fn citus_gets_one_statement_at_a_time_and_plain_postgresql_the_whole_text() {
        let sql = "CREATE INDEX i ON t (a);\nUPDATE t SET b = 'x;y';\nSELECT 1";
        assert_eq!(Backend::Plain.statements(sql), vec![sql]);
        let citus = Backend::Citus(Citus {
            distribute: true,
            triggers: false,
        });
        assert_eq!(
            citus.statements(sql),
            vec![
                "CREATE INDEX i ON t (a)",
                "UPDATE t SET b = 'x;y'",
                "SELECT 1"
            ]
        );
        // One statement, or a text the splitter cannot read, goes whole.
        assert_eq!(citus.statements("SELECT 1;"), vec!["SELECT 1;"]);
        assert_eq!(
            citus.statements("SELECT 'a; SELECT 2"),
            vec!["SELECT 'a; SELECT 2"]
        );
        // exec's transactions: sequential shard commands, no new distributed schema.
        assert_eq!(
            citus.prologue(Work::Change).as_deref(),
            Some("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
        );
        assert_eq!(Backend::Plain.prologue(Work::Change), None);
        // A -- no-transaction file's session: the same settings, for the session.
        let triggers = Backend::Citus(Citus {
            distribute: true,
            triggers: true,
        });
        assert_eq!(
            triggers.session_prologue().as_deref(),
            Some(
                "SET citus.multi_shard_modify_mode = 'sequential';\n\
                 SET citus.enable_unsafe_triggers = on"
            )
        );
        assert_eq!(Backend::Plain.session_prologue(), None);
    }
}
