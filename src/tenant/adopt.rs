//! Taking over a schema another tool made: its baseline history, and the configured grants
//! (shared with `tenantctl grant`). Inside a transaction the caller opened under the
//! tenant's lock.

use anyhow::Result;
use deadpool_postgres::Transaction;

use crate::domain::migration_set::AppliedMigration;
use crate::pg::connect::PgContext;
use crate::registry;
use crate::tenant::apply::history_table;
use crate::tenant::{audit, grants};

/// Writes the history rows of `migrations` into the schema's refinery history table
/// (created as refinery creates it when missing), as refinery writes them: version, name,
/// applied_on (RFC 3339, now), checksum. For `adopt --baseline`: the operator says the
/// schema is at that version; nothing is run.
pub async fn write_baseline(
    tx: &Transaction<'_>,
    schema: &str,
    migrations: &[AppliedMigration],
) -> Result<()> {
    let table = history_table(schema);
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table}( \
             version int4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255), \
             checksum VARCHAR(255))"
    ))
    .await
    .with_pg_context(|| format!("cannot create the migration history of {schema}"))?;
    let applied_on = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let versions: Vec<i32> = migrations.iter().map(|m| m.version as i32).collect();
    let names: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
    let checksums: Vec<String> = migrations.iter().map(|m| m.checksum.to_string()).collect();
    tx.execute(
        &format!(
            "INSERT INTO {table} (version, name, applied_on, checksum) \
             SELECT v, n, $4, c FROM ROWS FROM (pg_catalog.unnest($1::int4[]), \
                  pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[])) AS a(v, n, c)"
        ),
        &[&versions, &names, &checksums, &applied_on],
    )
    .await
    .with_pg_context(|| format!("cannot write the baseline history of {schema}"))?;
    Ok(())
}

/// Applies the configured grants to `schema`: its tenant role (`tenant_role`, created when
/// missing) with the application role as a SET ROLE member, schema USAGE, the default
/// privileges, the data privileges on every table and sequence `data_role` holds nothing
/// on, and no privilege on the migration history. Adds only. Returns what was filled in.
pub async fn apply_grants(
    tx: &Transaction<'_>,
    schema: &str,
    tenant_role: Option<&str>,
    app: &str,
    data_role: &str,
    major: i32,
) -> Result<audit::Ungranted> {
    let mut sql = String::new();
    if let Some(role) = tenant_role {
        if registry::role_exists(tx, role).await? {
            sql.push_str(&grants::membership(role, app, major));
        } else {
            sql.push_str(&grants::create_tenant_role(role, app, major));
        }
    }
    sql.push_str(&grants::before_migrations(schema, Some(data_role)));
    tx.batch_execute(&sql)
        .await
        .pg_context("cannot grant on the schema")?;
    let pair = (schema.to_string(), data_role.to_string());
    let missing = audit::ungranted(tx, &[pair]).await?.remove(0);
    let mut sql = grants::fill_in(schema, data_role, &missing.tables, &missing.sequences);
    if audit::has_history(tx, schema).await? {
        sql.push_str(&grants::revoke_history(schema, data_role));
    }
    tx.batch_execute(&sql)
        .await
        .pg_context("cannot grant on the tenant's tables")?;
    Ok(missing)
}
