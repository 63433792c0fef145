//! `tenantctl list`: slug, schema, state; one tenant a line. Text and JSON are both written
//! as the registry rows arrive, so memory does not grow with the fleet.

use anyhow::Result;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::commands::nodes::Nodes;
use crate::commands::session::Session;
use crate::output::{escape_line, JsonStream};
use crate::registry::{self, Pick};

pub async fn run(s: &Session, args: &ListArgs) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    let selector = args.select.selector.as_ref();
    let pick = selector.map_or(Pick::All, Pick::Selected);
    // On Citus (home, or a server tenants live on), where each tenant lives: one query per
    // coordinator for all of its tenants.
    let (nodes, unread) = Nodes::read(s, &conn, pick, &[], false).await?;
    for why in unread {
        crate::errln!("note: {why}");
    }
    let node_of = |t: &registry::Tenant| nodes.as_ref().map(|n| n.get(t));
    if s.json() {
        // Streamed too: each row is written as it arrives, inside one document.
        let mut doc = JsonStream::stdout(&Empty {}, "tenants");
        registry::for_each_tenant(&conn, pick, |t| {
            doc.item(&Row {
                slug: &t.slug,
                schema: &t.schema,
                state: &t.state,
                server: &t.server,
                database: &t.database,
                node: node_of(&t),
                labels: &t.labels,
            })
        })
        .await?;
        doc.end();
        return Ok(0);
    }
    // Streamed: one line per row as the registry returns it, in the same memory at any
    // fleet size. Fields are escaped, so a tab or newline cannot shift columns.
    registry::for_each_tenant(&conn, pick, |t| {
        // On Citus a fourth field: the tenant's node (empty when it has none).
        let node = match node_of(&t) {
            Some(node) => format!("\t{}", escape_line(node.unwrap_or_default())),
            None => String::new(),
        };
        crate::outln!(
            "{}\t{}\t{}{}",
            escape_line(&t.slug),
            escape_line(&t.schema),
            escape_line(&t.state),
            node
        );
    })
    .await?;
    Ok(0)
}

/// The document's fields before its `tenants` array: none.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Row<'a> {
    slug: &'a str,
    schema: &'a str,
    state: &'a str,
    server: &'a str,
    database: &'a str,
    /// On a Citus coordinator only: the node holding the tenant's schema (null when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Option<&'a str>>,
    labels: &'a std::collections::BTreeMap<String, String>,
}
