//! `tenantctl usage [SLUG...] [-l SELECTOR] [--top N]`: per tenant, the disk its schema
//! takes (tables, indexes, TOAST), its estimated rows, and its write and scan activity since
//! the statistics were reset; largest first. One catalog query per server, whatever the
//! number of tenants (`registry::usage`); on a Citus coordinator, one more that asks every
//! node for the distributed tenants' shards (`Backend::shard_usage`).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{Format, UsageArgs};
use crate::commands::session::{lookup, Session};
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::output::{count, listed, print_json, size, table};
use crate::registry::{self, Pick, Tenant, Usage};

pub async fn run(s: &Session, args: &UsageArgs) -> Result<u8> {
    let (_pool, conn) = s.connect(1).await?;
    if args.select.selector.is_some() && !args.slugs.is_empty() {
        return Err(bad_input(
            "name tenants or give -l/--selector, not both; nothing was shown",
        ));
    }
    if !args.slugs.is_empty() {
        let (_, unknown) = lookup(&conn, &args.slugs).await?;
        if !unknown.is_empty() {
            return Err(bad_input(format!(
                "unknown {}; nothing was shown (see tenantctl list)",
                listed("tenant", &unknown)
            )));
        }
    }
    let pick = || {
        args.select
            .selector
            .as_ref()
            .map_or(Pick::All, Pick::Selected)
    };
    let top = args.top.map(i64::from);
    let backend = s.backend();
    let mut rows = registry::usage(&conn, pick(), &args.slugs, backend.usage_catalog(top)).await?;
    backend.shard_usage(&conn, &mut rows).await?;
    let far = registry::elsewhere(&conn, pick(), &args.slugs).await?;
    let unreached = usage_elsewhere(s, far, top, &mut rows).await;
    rows.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then(a.slug.cmp(&b.slug)));
    if let Some(top) = args.top {
        rows.truncate(top as usize);
    }
    if s.format == Format::Prometheus {
        print_prometheus(&rows);
    } else if s.json() {
        print_json(&Document { tenants: &rows });
    } else {
        print_table(&rows);
    }
    for e in &unreached {
        crate::errln!("error: {e}");
    }
    Ok(if unreached.is_empty() { OK } else { FAILED })
}

/// Adds to `rows` the usage of the tenants elsewhere (`far`): one catalog query per server
/// and database where they live, each at most `top` rows. Returns, for each place that
/// could not be read, why, naming it (its tenants are left out of `rows`).
async fn usage_elsewhere(
    s: &Session,
    far: Vec<Tenant>,
    top: Option<i64>,
    rows: &mut Vec<Usage>,
) -> Vec<String> {
    let mut places: BTreeMap<(String, String), Vec<Tenant>> = BTreeMap::new();
    for t in far {
        places
            .entry((t.server.clone(), t.database.clone()))
            .or_default()
            .push(t);
    }
    let mut errors = Vec::new();
    for ((server, database), tenants) in places {
        match usage_at(s, &server, &database, &tenants, top).await {
            Ok(found) => rows.extend(found),
            Err(e) => errors.push(format!(
                "cannot read the usage of {} on server {server} (database {database}): {e:#}; \
                 they are not shown",
                count(tenants.len(), "tenant")
            )),
        }
    }
    errors
}

/// The usage of `tenants`, all living in `database` on `server`, read there by that place's
/// backend.
async fn usage_at(
    s: &Session,
    server: &str,
    database: &str,
    tenants: &[Tenant],
    top: Option<i64>,
) -> Result<Vec<Usage>> {
    let (_pool, conn) = s.open_place(server, database, 1).await?;
    let backend = s.backend_at(server, database);
    let mut rows = registry::usage_at(&conn, tenants, backend.usage_catalog(top)).await?;
    backend.shard_usage(&conn, &mut rows).await?;
    Ok(rows)
}

#[derive(Serialize)]
struct Document<'a> {
    tenants: &'a [Usage],
}

/// Per tenant: its size by kind, estimated rows, and the write and scan counters, labelled
/// with the tenant and the server it lives on.
fn print_prometheus(rows: &[Usage]) {
    use crate::output::prometheus::{header, sample};
    crate::outln!(
        "{}",
        header(
            "tenantctl_tenant_size_bytes",
            "gauge",
            "Disk used by each tenant's tables: total, tables (with TOAST), indexes, TOAST."
        )
    );
    for u in rows {
        for (kind, v) in [
            ("total", u.total_bytes),
            ("table", u.table_bytes),
            ("index", u.index_bytes),
            ("toast", u.toast_bytes),
        ] {
            crate::outln!(
                "{}",
                sample(
                    "tenantctl_tenant_size_bytes",
                    &[("tenant", &u.slug), ("server", &u.server), ("kind", kind)],
                    v
                )
            );
        }
    }
    for (name, kind, help, get) in [
        (
            "tenantctl_tenant_rows_estimate",
            "gauge",
            "The planner's estimate of each tenant's rows.",
            (|u: &Usage| u.rows_estimate) as fn(&Usage) -> i64,
        ),
        (
            "tenantctl_tenant_writes_total",
            "counter",
            "Rows inserted, updated and deleted since the statistics were reset.",
            |u: &Usage| u.writes,
        ),
        (
            "tenantctl_tenant_scans_total",
            "counter",
            "Sequential and index scans since the statistics were reset.",
            |u: &Usage| u.scans,
        ),
    ] {
        crate::outln!("{}", header(name, kind, help));
        for u in rows {
            let labels = [("tenant", u.slug.as_str()), ("server", u.server.as_str())];
            crate::outln!("{}", sample(name, &labels, get(u)));
        }
    }
}

fn print_table(rows: &[Usage]) {
    if !rows.is_empty() {
        let mut t = table(vec![
            "tenant",
            "schema",
            "server",
            "total",
            "tables",
            "indexes",
            "toast",
            "rows (est.)",
            "writes",
            "scans",
        ]);
        for u in rows {
            t.add_row(vec![
                u.slug.clone(),
                u.schema.clone(),
                u.server.clone(),
                size(u.total_bytes),
                size(u.table_bytes),
                size(u.index_bytes),
                size(u.toast_bytes),
                u.rows_estimate.to_string(),
                u.writes.to_string(),
                u.scans.to_string(),
            ]);
        }
        crate::outln!("{t}");
    }
    let total: i64 = rows.iter().map(|u| u.total_bytes).sum();
    crate::outln!("{}, {} in all", count(rows.len(), "tenant"), size(total));
}
