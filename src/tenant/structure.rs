//! Reading tenant schemas' structure from the catalog, and building the reference a version
//! of the migration files makes, for `verify --structure` and `adopt`.
//!
//! Scale: each kind of object is read for every schema at once (one query per kind, not per
//! tenant), and each distinct version's reference is built once, in a scratch schema inside
//! a transaction that is always rolled back: whatever happens (an error, Ctrl-C, kill -9, the
//! server restarting), the scratch schema never outlives the run.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use deadpool_postgres::{GenericClient, Object};

use crate::domain::migration_set::MigrationSet;
use crate::domain::names::tenant_search_path;
use crate::domain::structure::{normalise, Attrs, Key, Structure};
use crate::pg::connect::PgContext;
use crate::tenant::apply::HISTORY_TABLE;

/// The structures of the tenant `schemas`, and of the reference at each of `versions`.
pub struct Compared {
    pub schemas: BTreeMap<String, Structure>,
    pub references: BTreeMap<i64, Structure>,
}

/// Builds the reference of each version in `versions` (V1..V of `set`, each in its own
/// scratch schema) and reads it with `schemas`, in one read-only-in-effect transaction that
/// is rolled back afterwards. Fails when the files cannot be built (a migration fails on
/// an empty schema, or must run outside a transaction).
pub async fn compare_with_files(
    conn: &mut Object,
    set: &MigrationSet,
    versions: &BTreeSet<i64>,
    schemas: &[String],
) -> Result<Compared> {
    let tx = conn
        .transaction()
        .await
        .pg_context("cannot start a transaction")?;
    let pid: i32 = tx
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .pg_context("cannot start a transaction")?
        .get(0);
    let mut scratch = BTreeMap::new();
    for v in versions {
        let name = format!("tenantctl_reference_{pid}_v{v}");
        build_reference(&tx, set, *v, &name).await?;
        scratch.insert(name, *v);
    }
    let mut all: Vec<String> = schemas.to_vec();
    all.extend(scratch.keys().cloned());
    let mut read = read(&tx, &all).await?;
    // Rolled back, never committed: the scratch schemas vanish with it.
    tx.rollback()
        .await
        .pg_context("cannot roll back the reference schemas")?;
    let references = scratch
        .into_iter()
        .map(|(name, v)| (v, read.remove(&name).unwrap_or_default()))
        .collect();
    Ok(Compared {
        schemas: read,
        references,
    })
}

/// Runs the migrations up to `version` in the new schema `name`, as a tenant's would run.
async fn build_reference(
    tx: &deadpool_postgres::Transaction<'_>,
    set: &MigrationSet,
    version: i64,
    name: &str,
) -> Result<()> {
    tx.batch_execute(&format!(
        "CREATE SCHEMA {}",
        crate::domain::names::quote_ident(name)
    ))
    .await
    .with_pg_context(|| format!("cannot create the scratch schema {name} for the reference"))?;
    tx.query_one(
        "SELECT pg_catalog.set_config('search_path', $1, true)",
        &[&tenant_search_path(name)],
    )
    .await
    .pg_context("cannot point search_path at the reference schema")?;
    for m in set
        .migrations
        .iter()
        .filter(|m| m.version() as i64 <= version)
    {
        if set.is_no_transaction(m.version() as i64) {
            bail!(
                "cannot build the reference structure at version {version}: migration {m} runs \
                 outside a transaction (-- no-transaction), and the reference is built inside \
                 one so that it never outlives the run; compare tenants at other versions"
            );
        }
        tx.batch_execute(m.sql().unwrap_or_default())
            .await
            .with_pg_context(|| {
                format!(
                    "cannot build the reference structure at version {version}: migration {m} \
                     fails on an empty schema"
                )
            })?;
    }
    tx.query_one(
        "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)",
        &[],
    )
    .await
    .pg_context("cannot reset search_path after the reference")?;
    Ok(())
}

/// The structure of each of `schemas` that exists (the migration history table aside):
/// one query per kind of object for all of them.
pub async fn read(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<BTreeMap<String, Structure>> {
    let mut out: BTreeMap<String, Structure> = BTreeMap::new();
    for (what, sql) in QUERIES {
        let rows = client
            .query(*sql, &[&schemas, &HISTORY_TABLE])
            .await
            .with_pg_context(|| format!("cannot read the {what} of tenant schemas"))?;
        for r in rows {
            let schema: String = r.get(0);
            let quoted = schema.as_str(); // the name normalise() takes out of definitions
            let n = |i: usize| -> String { r.get(i) };
            let (key, attrs) = match *what {
                "tables" => (Key::Table(n(1)), plain(normalise(&n(2), quoted))),
                "columns" => (
                    Key::Column(n(1), n(2)),
                    Attrs {
                        definition: n(3),
                        not_null: r.get(4),
                        default: r.get::<_, Option<String>>(5).map(|d| normalise(&d, quoted)),
                    },
                ),
                "indexes" => (Key::Index(n(1)), plain(normalise(&n(2), quoted))),
                "constraints" => (Key::Constraint(n(1), n(2)), plain(normalise(&n(3), quoted))),
                "sequences" => (Key::Sequence(n(1)), plain(n(2))),
                "functions" => (
                    Key::Function(n(1)),
                    plain(fingerprint(&normalise(&n(2), quoted))),
                ),
                _ => (Key::Trigger(n(1), n(2)), plain(normalise(&n(3), quoted))),
            };
            out.entry(schema).or_default().insert(key, attrs);
        }
    }
    for s in schemas {
        out.entry(s.clone()).or_default();
    }
    Ok(out)
}

/// A function's whole definition is kilobytes, held for every tenant at once; only whether
/// it differs is reported, so a hash of it is kept (both sides are hashed by this process).
fn fingerprint(definition: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    definition.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn plain(definition: String) -> Attrs {
    Attrs {
        definition,
        ..Attrs::default()
    }
}

/// Every query takes the schemas ($1) and the history table's name ($2), and returns the
/// schema first.
const QUERIES: &[(&str, &str)] = &[
    (
        "tables",
        "SELECT n.nspname::text, c.relname::text, \
                CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' \
                     WHEN 'f' THEN 'foreign table' \
                     WHEN 'v' THEN 'view AS ' || pg_catalog.pg_get_viewdef(c.oid) \
                     ELSE 'materialized view AS ' || pg_catalog.pg_get_viewdef(c.oid) END \
                || CASE WHEN c.relrowsecurity THEN ' with row level security' ELSE '' END \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> $2",
    ),
    (
        "columns",
        "SELECT n.nspname::text, c.relname::text, \
                a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                CASE WHEN a.attidentity = 'a' THEN 'GENERATED ALWAYS AS IDENTITY' \
                     WHEN a.attidentity = 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' \
                     WHEN a.attgenerated = 's' \
                     THEN 'GENERATED ALWAYS AS (' || pg_catalog.pg_get_expr(d.adbin, d.adrelid) || ') STORED' \
                     ELSE pg_catalog.pg_get_expr(d.adbin, d.adrelid) END \
           FROM pg_catalog.pg_attribute a \
           JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
          WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> $2 \
            AND a.attnum > 0 AND NOT a.attisdropped",
    ),
    (
        "indexes",
        "SELECT n.nspname::text, i.relname::text, \
                pg_catalog.pg_get_indexdef(i.oid) \
           FROM pg_catalog.pg_index x \
           JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
           JOIN pg_catalog.pg_class c ON c.oid = x.indrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace \
          WHERE n.nspname = ANY($1) AND c.relname <> $2",
    ),
    (
        "constraints",
        "SELECT n.nspname::text, c.relname::text, \
                k.conname::text, pg_catalog.pg_get_constraintdef(k.oid) \
           FROM pg_catalog.pg_constraint k \
           JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = ANY($1) AND c.relname <> $2 AND k.contype <> 'n'",
    ),
    (
        "sequences",
        "SELECT n.nspname::text, c.relname::text, \
                pg_catalog.format_type(s.seqtypid, NULL) || ' increment ' || s.seqincrement \
                || ' minvalue ' || s.seqmin || ' maxvalue ' || s.seqmax || ' start ' || s.seqstart \
                || ' cache ' || s.seqcache || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END \
           FROM pg_catalog.pg_sequence s \
           JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = ANY($1) AND c.relname <> $2",
    ),
    (
        "functions",
        "SELECT n.nspname::text, \
                p.proname::text || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', \
                pg_catalog.pg_get_functiondef(p.oid) \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
          WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p') AND p.proname <> $2",
    ),
    (
        "triggers",
        "SELECT n.nspname::text, c.relname::text, \
                t.tgname::text, pg_catalog.pg_get_triggerdef(t.oid) \
           FROM pg_catalog.pg_trigger t \
           JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = ANY($1) AND c.relname <> $2 AND NOT t.tgisinternal",
    ),
];
