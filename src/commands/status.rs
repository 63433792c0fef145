//! `tenantctl status`: one row per tenant, answered from the registry (one query, however
//! many tenants), with pending counts from the migrations folder.

use anyhow::Result;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::commands::session::{select_tenants, Session};
use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::MigrationSet;
use crate::output::{count, print_json, table};
use crate::registry::Tenant;
use crate::tenant::shared::{self, SharedSet};

pub async fn run(s: &Session, args: &StatusArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let latest = set.latest();
    let shared_set = s.shared_set()?;
    let (_pool, mut conn) = s.connect(1).await?;
    let mut tenants = select_tenants(&conn, &args.slugs, "nothing was shown").await?;
    let unreachable = s.check_schemas_elsewhere(&mut tenants).await;
    let shared = match &shared_set {
        Some(sh) => Some(shared_row(&mut conn, sh).await?),
        None => None,
    };
    // The shared schema fails --check when it has pending migrations or a diverged history.
    let shared_behind = shared
        .as_ref()
        .is_some_and(|r| r.pending > 0 || r.error.is_some());
    // Not at the folder's latest version: behind it, or ahead of it (the folder lacks
    // migrations the tenant has: an older release's folder). Either fails --check.
    let behind = |t: &Tenant| t.state != "active" || t.version != latest || !t.schema_exists;
    if s.json() {
        let tenants = tenants
            .iter()
            .map(|t| Row {
                slug: &t.slug,
                schema: &t.schema,
                state: &t.state,
                server: &t.server,
                database: &t.database,
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
            shared: shared.as_ref(),
            tenants,
        });
    } else {
        if let Some(r) = &shared {
            crate::outln!("{}", crate::output::escape_line(&r.line()));
        }
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
    for e in &unreachable {
        crate::errln!("error: {e}");
    }
    Ok(
        if !unreachable.is_empty() || (args.check && (shared_behind || tenants.iter().any(behind)))
        {
            FAILED
        } else {
            OK
        },
    )
}

#[derive(Serialize)]
struct Document<'a> {
    latest_version: i64,
    /// Present only when shared migrations are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<&'a SharedRow>,
    tenants: Vec<Row<'a>>,
}

/// One tenant of `status --format json`, in the contract's order.
#[derive(Serialize)]
struct Row<'a> {
    slug: &'a str,
    schema: &'a str,
    state: &'a str,
    /// Where it lives (docs/placements.md): `home` and the registry's database, or not.
    server: &'a str,
    database: &'a str,
    version: i64,
    pending: usize,
    last_error: Option<&'a str>,
    migrated_at: Option<&'a str>,
    schema_exists: bool,
    /// At a version above the folder's latest (the folder lacks what the tenant has).
    ahead: bool,
}

/// The shared schema's line of `status` (`shared` in its JSON document).
#[derive(Serialize)]
struct SharedRow {
    schema: String,
    version: i64,
    latest_version: i64,
    pending: usize,
    /// Why the next migrate would refuse it (its history differs from the files).
    error: Option<String>,
}

impl SharedRow {
    fn line(&self) -> String {
        let head = format!(
            "shared schema {}: version {}, latest {}, {} pending",
            self.schema, self.version, self.latest_version, self.pending
        );
        match &self.error {
            Some(e) => format!("{head}; refused: {e}"),
            None => head,
        }
    }
}

async fn shared_row(conn: &mut deadpool_postgres::Object, sh: &SharedSet) -> Result<SharedRow> {
    let st = shared::state(conn, sh).await?;
    Ok(SharedRow {
        schema: sh.schema.clone(),
        version: st.version,
        latest_version: sh.set.latest(),
        pending: st.pending(),
        error: st.diverged().map(str::to_string),
    })
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
        "server",
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
            x.server.clone(),
            x.version.to_string(),
            pending,
            x.migrated_at.clone().unwrap_or_default(),
            x.last_error.clone().unwrap_or_default(),
        ]);
    }
    crate::outln!("{t}");
}
