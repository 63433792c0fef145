//! `tenantctl list`: slug, schema, state; one tenant a line.

use anyhow::Result;
use serde::Serialize;

use crate::commands::session::Session;
use crate::output::{escape_line, print_json};
use crate::registry;

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
                server: &t.server,
                database: &t.database,
            })
            .collect();
        print_json(&Document { tenants });
    } else {
        // Fields come from the registry: escaped, so a tab or newline cannot shift columns.
        for t in &tenants {
            crate::outln!(
                "{}\t{}\t{}",
                escape_line(&t.slug),
                escape_line(&t.schema),
                escape_line(&t.state)
            );
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
    server: &'a str,
    database: &'a str,
}
