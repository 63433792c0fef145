//! `tenantctl distribute [SLUG...]`: on a Citus coordinator, makes local tenant schemas
//! (created before Citus, or with `[citus] distribute = false`) distributed schemas on a
//! worker, one transaction per tenant under its lock (`tenant::citus_schema::distribute`).
//! Tenants already distributed, elsewhere or not active are skipped (docs/citus.md).

use anyhow::Result;
use serde::Serialize;

use crate::cli::DistributeArgs;
use crate::commands::session::{select_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::output::{count as count_of, escape_line, print_json};
use crate::registry::Tenant;
use crate::tenant::citus_schema::SchemaOps;

#[derive(Serialize)]
struct Distributed {
    slug: String,
    schema: String,
    /// "distributed", "failed" or "skipped".
    outcome: &'static str,
    /// Its distributed tables, and the worker node (`host:port`) Citus put them on.
    tables: usize,
    node: Option<String>,
    /// Why it failed or was skipped.
    error: Option<String>,
}

pub async fn run(s: &Session, args: &DistributeArgs) -> Result<u8> {
    let (_pool, mut conn) = s.connect(1).await?;
    let ops = s.backend().schema_ops("distribute", &s.target.describe())?;
    let tenants = select_tenants(&conn, &args.slugs, "nothing was distributed").await?;
    let mut results = Vec::new();
    for t in &tenants {
        results.push(one(s, &ops, &mut conn, t).await);
    }
    print(s, &results);
    Ok(if results.iter().any(|r| r.outcome == "failed") {
        FAILED
    } else {
        OK
    })
}

async fn one(
    s: &Session,
    ops: &SchemaOps,
    conn: &mut deadpool_postgres::Object,
    t: &Tenant,
) -> Distributed {
    let mut d = Distributed {
        slug: t.slug.clone(),
        schema: t.schema.clone(),
        outcome: "skipped",
        tables: 0,
        node: None,
        error: None,
    };
    let skip = if !t.is_home(s.home_database()) {
        Some(format!(
            "lives on server {} (database {}), not on this coordinator",
            t.server, t.database
        ))
    } else if t.state != "active" {
        Some(format!("is {}, not active", t.state))
    } else {
        match ops.is_distributed(&*conn, &t.schema).await {
            Ok(true) => {
                d.node = ops.node_of(&*conn, &t.schema).await.ok().flatten();
                Some("already distributed".to_string())
            }
            Ok(false) => None,
            Err(e) => Some(format!("{e:#}")),
        }
    };
    if let Some(why) = skip {
        d.error = Some(why);
        return d;
    }
    match ops.distribute(conn, t, s.lock_deadline()).await {
        Ok((tables, node)) => {
            d.outcome = "distributed";
            d.tables = tables;
            d.node = node;
        }
        Err(e) => {
            d.outcome = "failed";
            d.error = Some(format!("{e:#}; it stays a local schema, unchanged"));
        }
    }
    d
}

#[derive(Serialize)]
struct Document<'a> {
    tenants: &'a [Distributed],
}

fn print(s: &Session, results: &[Distributed]) {
    if s.json() {
        print_json(&Document { tenants: results });
        return;
    }
    for r in results {
        match (&r.error, r.outcome) {
            (Some(e), outcome) => {
                crate::outln!("{} ({}): {outcome}: {}", r.slug, r.schema, escape_line(e))
            }
            (None, _) => crate::outln!(
                "{} ({}): distributed: {} on node {}",
                r.slug,
                r.schema,
                count_of(r.tables, "table"),
                r.node.as_deref().unwrap_or("(none)")
            ),
        }
    }
    let n = |o: &str| results.iter().filter(|r| r.outcome == o).count();
    crate::outln!(
        "distribute: {}: {} distributed, {} failed, {} skipped",
        count_of(results.len(), "tenant"),
        n("distributed"),
        n("failed"),
        n("skipped")
    );
}
