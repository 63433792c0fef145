//! Reaching a tenant from Rust with tokio-postgres, safe behind PgBouncer's transaction
//! pooling and behind any connection pool. docs/application-routing.md shows this file in
//! full; tests/routing.rs runs it through a real PgBouncer and keeps the two identical.
//!
//!   cargo run --example route_tenant -- 'postgres://app:PASSWORD@127.0.0.1:6432/wellness' acme

use std::collections::HashMap;
use std::io::Write;
use std::time::SystemTime;

use tokio_postgres::{Client, Error, NoTls, Transaction};

/// Where a tenant lives, as the registry says (what `tenantctl route SLUG` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub schema: String,
    /// The tenant's own role (with `per_tenant_roles`), else None.
    pub role: Option<String>,
    pub state: String,
}

impl Route {
    /// Whether requests may go to this tenant. An allowlist, so that a state added later
    /// (such as `suspended`) is refused by this code too.
    pub fn servable(&self) -> bool {
        matches!(self.state.as_str(), "active" | "migrating")
    }
}

/// The routing table, slug → route, in one read of the registry. `query_typed` sends an
/// unnamed statement: no prepared statement is left on a server connection the pooler shares.
pub async fn load_routes(client: &Client) -> Result<HashMap<String, Route>, Error> {
    let rows = client
        .query_typed(
            "SELECT slug, schema_name, role_name, state FROM public.tenants",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let route = Route {
                schema: r.get(1),
                role: r.get(2),
                state: r.get(3),
            };
            (r.get(0), route)
        })
        .collect())
}

/// Changes whenever a tenant is created, dropped or changes state: poll it every few seconds
/// and reload the routes when it differs. `updated_at` is the writer's transaction start, so
/// a change that committed late can hide behind a newer one: reload every few minutes anyway.
pub async fn registry_version(client: &Client) -> Result<(i64, Option<SystemTime>), Error> {
    let row = client
        .query_typed_one("SELECT count(*), max(updated_at) FROM public.tenants", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Opens a transaction inside the tenant. Both settings are LOCAL: they end with COMMIT or
/// ROLLBACK, so the connection goes back to the pool carrying nothing of this tenant, and a
/// setting some other client left on it is overridden for this whole transaction.
pub async fn tenant_transaction<'c>(
    client: &'c mut Client,
    route: &Route,
) -> Result<Transaction<'c>, Error> {
    let tx = client.transaction().await?; // BEGIN: SET LOCAL outside one would do nothing
    let mut enter = format!("SET LOCAL search_path = {}", quote_ident(&route.schema));
    if let Some(role) = &route.role {
        enter.push_str(&format!("; SET LOCAL ROLE {}", quote_ident(role)));
    }
    tx.batch_execute(&enter).await?;
    Ok(tx)
}

/// A double-quoted identifier: tenant schemas may hold `-`, which SQL cannot take bare.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One request for tenant `slug`: find its route, then work inside it in one transaction.
pub async fn count_employees(
    client: &mut Client,
    routes: &HashMap<String, Route>,
    slug: &str,
) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let route = match routes.get(slug) {
        Some(route) if route.servable() => route,
        Some(route) => return Err(format!("tenant {slug} is {}", route.state).into()),
        None => return Err(format!("unknown tenant {slug}").into()),
    };
    let tx = tenant_transaction(client, route).await?;
    let row = tx
        .query_typed_one("SELECT count(*) FROM employees", &[])
        .await?;
    tx.commit().await?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(slug)) = (args.next(), args.next()) else {
        return Err("usage: route_tenant DATABASE_URL SLUG".into());
    };
    // NoTls keeps the example short; use a TLS connector (postgres-openssl) in production.
    let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    let routes = load_routes(&client).await?;
    let n = count_employees(&mut client, &routes, &slug).await?;
    writeln!(std::io::stdout(), "{slug}: {n} employees")?;
    Ok(())
}
