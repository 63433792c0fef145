//! `tenantctl distribute [SLUG...]`: on a Citus coordinator, makes local tenant schemas
//! (created before Citus, or with `[citus] distribute = false`) distributed schemas on a
//! worker, one transaction per tenant under its lock (`tenant::citus_schema::distribute`).
//! Each tenant is distributed where it lives: home, or a `[servers.NAME]` that is a Citus
//! coordinator (the place's backend). Tenants already distributed, on a place without
//! Citus or not active are skipped (docs/citus.md).

use std::collections::btree_map::{BTreeMap, Entry};

use anyhow::Result;
use deadpool_postgres::{Object, Pool};
use serde::Serialize;

use crate::cli::DistributeArgs;
use crate::commands::session::{select_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::settings::HOME_SERVER;
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

/// A connection to each place the selected tenants live at, by (server, database).
type Places = BTreeMap<(String, String), (Pool, Object)>;

pub async fn run(s: &Session, args: &DistributeArgs) -> Result<u8> {
    let (pool, conn) = s.connect(1).await?;
    if s.servers.names().len() == 1 {
        // Plain PostgreSQL and no other server: refused before any tenant is looked at.
        s.backend().schema_ops("distribute", &s.target.describe())?;
    }
    let tenants = select_tenants(&conn, &args.slugs, "nothing was distributed").await?;
    let mut places = open_places(s, &tenants).await?;
    places.insert(
        (HOME_SERVER.to_string(), s.home_database().to_string()),
        (pool, conn),
    );
    if !places
        .keys()
        .any(|(sv, db)| s.backend_at(sv, db).is_citus())
    {
        s.backend().schema_ops("distribute", &s.target.describe())?;
    }
    let mut results = Vec::new();
    for t in &tenants {
        results.push(at_place(s, &mut places, t).await);
    }
    print(s, &results);
    Ok(if results.iter().any(|r| r.outcome == "failed") {
        FAILED
    } else {
        OK
    })
}

/// The places other than home the tenants live at, each opened once and its backend
/// detected, before any tenant changes: an unknown server, an unset password or a Citus
/// worker is bad input (exit 2), a server that does not answer an error naming it.
async fn open_places(s: &Session, tenants: &[Tenant]) -> Result<Places> {
    let mut places = Places::new();
    for t in tenants.iter().filter(|t| !s.at_home(t)) {
        let key = (t.server.clone(), t.database.clone());
        if let Entry::Vacant(e) = places.entry(key) {
            e.insert(s.connect_place(&t.server, &t.database, 1).await?);
        }
    }
    Ok(places)
}

/// One tenant where it lives, skipped when that place is not a Citus coordinator.
async fn at_place(s: &Session, places: &mut Places, t: &Tenant) -> Distributed {
    let at = format!("server {} (database {})", t.server, t.database);
    let ops = s
        .backend_at(&t.server, &t.database)
        .schema_ops("distribute", &at);
    let conn = places
        .get_mut(&(t.server.clone(), t.database.clone()))
        .map(|(_, c)| c);
    match (ops, conn) {
        (Ok(ops), Some(conn)) => one(s, &ops, conn, t).await,
        (Err(_), _) => skipped(t, format!("lives on {at}, which has no citus extension")),
        (_, None) => skipped(t, format!("{at} was not opened")),
    }
}

fn skipped(t: &Tenant, why: String) -> Distributed {
    Distributed {
        slug: t.slug.clone(),
        schema: t.schema.clone(),
        outcome: "skipped",
        tables: 0,
        node: None,
        error: Some(why),
    }
}

/// One tenant, on `conn` to the Citus coordinator's database where it lives.
async fn one(s: &Session, ops: &SchemaOps, conn: &mut Object, t: &Tenant) -> Distributed {
    let mut d = skipped(t, String::new());
    d.error = None;
    let skip = if t.state != "active" {
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
