//! `tenantctl status`: one row per tenant, answered from the registry (one query, however
//! many tenants), with pending counts from the migrations folder.

use anyhow::Result;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::commands::session::{pick_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::MigrationSet;
use crate::output::{count, print_json, table};
use crate::registry::Tenant;

pub async fn run(s: &Session, args: &StatusArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let latest = set.latest();
    let (_pool, conn) = s.connect(1).await?;
    let tenants = pick_tenants(
        &conn,
        &args.slugs,
        args.select.selector.as_ref(),
        "nothing was shown",
    )
    .await?;
    // Not at the folder's latest version: behind it, or ahead of it (the folder lacks
    // migrations the tenant has: an older release's folder). Either fails --check.
    // A suspended tenant at the latest version is current: not serving is deliberate.
    let settled =
        |t: &Tenant| t.state == "active" || (t.state == "suspended" && t.last_error.is_none());
    let behind = |t: &Tenant| !settled(t) || t.version != latest || !t.schema_exists;
    if s.json() {
        let tenants = tenants
            .iter()
            .map(|t| Row {
                slug: &t.slug,
                schema: &t.schema,
                state: &t.state,
                version: t.version,
                pending: set.pending_count(t.version, latest),
                last_error: t.last_error.as_deref(),
                migrated_at: t.migrated_at.as_deref(),
                schema_exists: t.schema_exists,
                ahead: ahead(t, latest),
            })
            .collect();
        print_json(&Document {
            latest_version: latest,
            tenants,
        });
    } else {
        print_table(&tenants, &set, latest);
        let n = tenants.iter().filter(|t| behind(t)).count();
        let n_ahead = tenants.iter().filter(|t| ahead(t, latest)).count();
        let ahead_note = if n_ahead > 0 {
            format!(
                " ({n_ahead} ahead of the migrations folder {}: it lacks their versions; \
                 is it an older release's folder?)",
                set.dir.display()
            )
        } else {
            String::new()
        };
        crate::outln!(
            "{}, latest version {latest}, {n} not active at the latest version{ahead_note}",
            count(tenants.len(), "tenant")
        );
    }
    Ok(if args.check && tenants.iter().any(behind) {
        FAILED
    } else {
        OK
    })
}

#[derive(Serialize)]
struct Document<'a> {
    latest_version: i64,
    tenants: Vec<Row<'a>>,
}

/// One tenant of `status --format json`, in the contract's order.
#[derive(Serialize)]
struct Row<'a> {
    slug: &'a str,
    schema: &'a str,
    state: &'a str,
    version: i64,
    pending: usize,
    last_error: Option<&'a str>,
    migrated_at: Option<&'a str>,
    schema_exists: bool,
    /// At a version above the folder's latest (the folder lacks what the tenant has).
    ahead: bool,
}

/// Whether the tenant is at a version the migrations folder does not reach.
fn ahead(t: &Tenant, latest: i64) -> bool {
    t.version > latest
}

fn print_table(tenants: &[Tenant], set: &MigrationSet, latest: i64) {
    if tenants.is_empty() {
        return;
    }
    let mut t = table(vec![
        "tenant",
        "schema",
        "state",
        "version",
        "pending",
        "migrated at",
        "last error",
    ]);
    for x in tenants {
        let state = if x.schema_exists {
            x.state.clone()
        } else {
            format!("{} (schema missing)", x.state)
        };
        let pending = if ahead(x, latest) {
            "ahead".to_string()
        } else {
            set.pending_count(x.version, latest).to_string()
        };
        t.add_row(vec![
            x.slug.clone(),
            x.schema.clone(),
            state,
            x.version.to_string(),
            pending,
            x.migrated_at.clone().unwrap_or_default(),
            x.last_error.clone().unwrap_or_default(),
        ]);
    }
    crate::outln!("{t}");
}
