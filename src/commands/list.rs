//! `tenantctl list`: slug, schema, state; one tenant a line.

use anyhow::Result;
use serde_json::json;

use crate::registry;
use crate::session::Session;

pub async fn run(s: &Session) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let tenants = registry::all(&conn).await?;
    if s.json() {
        let rows: Vec<_> = tenants
            .iter()
            .map(|t| json!({"slug": t.slug, "schema": t.schema, "state": t.state}))
            .collect();
        println!("{}", json!({ "tenants": rows }));
    } else {
        for t in &tenants {
            println!("{}\t{}\t{}", t.slug, t.schema, t.state);
        }
    }
    Ok(0)
}
