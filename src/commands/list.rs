//! `tenantctl list`: slug, schema, state; one tenant a line.

use anyhow::Result;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::commands::session::{pick_tenants, Session};
use crate::output::{escape_line, print_json};

pub async fn run(s: &Session, args: &ListArgs) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let tenants = pick_tenants(
        &conn,
        &[],
        args.select.selector.as_ref(),
        "nothing was listed",
    )
    .await?;
    if s.json() {
        let tenants = tenants
            .iter()
            .map(|t| Row {
                slug: &t.slug,
                schema: &t.schema,
                state: &t.state,
                labels: &t.labels,
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
    labels: &'a std::collections::BTreeMap<String, String>,
}
