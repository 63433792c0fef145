//! `tenantctl list`: slug, schema, state; one tenant a line.

use anyhow::Result;
use serde::Serialize;

use crate::registry;
use crate::session::Session;

pub async fn run(s: &Session) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let tenants = registry::all(&conn).await?;
    if s.json() {
        let tenants = tenants
            .iter()
            .map(|t| Row {
                slug: &t.slug,
                schema: &t.schema,
                state: &t.state,
            })
            .collect();
        super::report::print_json(&Document { tenants });
    } else {
        for t in &tenants {
            println!("{}\t{}\t{}", t.slug, t.schema, t.state);
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct Document<'a> {
    tenants: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    slug: &'a str,
    schema: &'a str,
    state: &'a str,
}
