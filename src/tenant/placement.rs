//! A tenant's home elsewhere than the registry's database: its own database on a server,
//! and taking it away again when a create fails there (docs/placements.md).

use anyhow::Result;
use deadpool_postgres::GenericClient;

use crate::domain::names::quote_ident;
use crate::pg::connect::PgContext;

/// Whether database `name` exists on the server `client` is connected to.
pub async fn database_exists(client: &impl GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .pg_context("cannot look up the databases of the server")?
        .get(0))
}

/// Which of `names` are existing databases on the server.
pub async fn existing_databases(
    client: &impl GenericClient,
    names: &[String],
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE datname = ANY($1)",
            &[&names],
        )
        .await
        .pg_context("cannot look up the databases of the server")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Creates the tenant's own database. `CREATE DATABASE` cannot run in a transaction, so
/// whoever calls this must drop it again when the rest of the creation fails.
pub async fn create_database(client: &impl GenericClient, name: &str) -> Result<()> {
    client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
        .with_pg_context(|| format!("cannot create database {name}"))
}

/// Drops the tenant's own database, closing any session still in it.
pub async fn drop_database(client: &impl GenericClient, name: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .with_pg_context(|| format!("cannot drop database {name}"))
}

/// Drops a tenant's own role (after its database is gone: roles belong to the server).
pub async fn drop_role(client: &impl GenericClient, role: &str) -> Result<()> {
    client
        .batch_execute(&crate::tenant::grants::drop_tenant_role(role))
        .await
        .with_pg_context(|| format!("cannot drop role {role}"))
}

/// Drops what a failed creation may have committed in a shared database: the schema and the
/// tenant's own role. Only for a schema the registry reserved for this creation.
pub async fn drop_schema(
    client: &impl GenericClient,
    schema: &str,
    role: Option<&str>,
) -> Result<()> {
    let mut sql = format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", quote_ident(schema));
    if let Some(role) = role {
        sql.push_str(&crate::tenant::grants::drop_tenant_role(role));
    }
    client
        .batch_execute(&sql)
        .await
        .with_pg_context(|| format!("cannot drop schema {schema}"))
}
