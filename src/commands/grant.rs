//! `tenantctl grant [SLUG...]`: re-applies the configured grants to tenants (all when none
//! is named). For tenants the application cannot reach, typically those created before
//! `[tenants] app_role` was set: `verify` reports them as `missing_grant`.
//!
//! It only adds: schema USAGE, the default privileges, the tenant role and its membership
//! (per-tenant roles), and the data privileges on each table and sequence the data role
//! holds nothing on. What a migration narrowed on purpose (the example V7 leaves INSERT only
//! on audit_log) is left alone, and privileges held beyond the configured ones are for
//! `verify` to report, not for this command to guess about.

use anyhow::Result;
use serde::Serialize;

use crate::cli::GrantArgs;
use crate::commands::session::{check_app_role_noinherit, select_tenants, Session};
use crate::domain::exit::{bad_input, FAILED, OK};
use crate::output::{count as count_of, escape_line, print_json};
use crate::pg::connect::PgContext;
use crate::registry::{self, Tenant};
use crate::tenant::adopt;
use crate::tenant::apply::locked_transaction;
use crate::tenant::audit;

#[derive(Serialize)]
struct Granted {
    slug: String,
    schema: String,
    /// The role given the data privileges (the application role, or the tenant's own).
    data_role: String,
    /// "granted", "failed" or "skipped".
    outcome: &'static str,
    /// Tables and sequences that had no privilege for the data role and got them now.
    tables: Vec<String>,
    sequences: Vec<String>,
    error: Option<String>,
}

pub async fn run(s: &Session, args: &GrantArgs) -> Result<u8> {
    let Some(app) = s.settings.app_role.clone() else {
        return Err(bad_input(format!(
            "no application role is configured ([tenants] app_role in {}), so there are no \
             grants to apply; nothing was changed",
            s.settings.describe_config()
        )));
    };
    let (_pool, mut conn) = s.connect(1).await?;
    s.check_app_role(&conn).await?;
    let tenants = select_tenants(&conn, &args.slugs, "nothing was granted").await?;
    let home_db = s.home_database().to_string();
    let major = if tenants.iter().any(|t| t.role.is_some()) {
        check_app_role_noinherit(&conn, &app).await?
    } else {
        registry::server_major(&conn).await?
    };
    registry::grant_read(&conn, &app).await?;
    let mut results = Vec::new();
    for t in &tenants {
        let g = if t.is_home(&home_db) {
            grant_one(s, &mut conn, t, &app, major).await
        } else {
            grant_far(s, t, &app).await
        };
        results.push(g);
    }
    print(s, &app, &results);
    Ok(if results.iter().any(|r| r.outcome == "failed") {
        FAILED
    } else {
        OK
    })
}

/// `grant_one` for a tenant elsewhere: on its server and database, where its roles live
/// (the application role must exist there, NOINHERIT there with per-tenant roles on 15).
async fn grant_far(s: &Session, t: &Tenant, app: &str) -> Granted {
    let reached = async {
        let target = s.servers.target_db(&t.server, &t.database)?;
        let pool = crate::pg::connect::pool(&target, 1)?;
        let conn = crate::pg::connect::first_connection(&pool, &target).await?;
        if !registry::role_exists(&conn, app).await? {
            anyhow::bail!(
                "application role '{app}' does not exist on server {}; create it there \
                 (CREATE ROLE \"{app}\" LOGIN)",
                t.server
            );
        }
        let major = match t.role {
            Some(_) => check_app_role_noinherit(&conn, app).await?,
            None => registry::server_major(&conn).await?,
        };
        anyhow::Ok((pool, conn, major))
    }
    .await;
    match reached {
        Ok((_pool, mut conn, major)) => grant_one(s, &mut conn, t, app, major).await,
        Err(e) => Granted {
            slug: t.slug.clone(),
            schema: t.schema.clone(),
            data_role: s.data_role(t).unwrap_or(app).to_string(),
            outcome: "failed",
            tables: Vec::new(),
            sequences: Vec::new(),
            error: Some(format!(
                "on server {} (database {}): {e:#}; nothing was granted on it",
                t.server, t.database
            )),
        },
    }
}

async fn grant_one(
    s: &Session,
    conn: &mut deadpool_postgres::Object,
    t: &Tenant,
    app: &str,
    major: i32,
) -> Granted {
    let data_role = s.data_role(t).unwrap_or(app).to_string();
    let mut g = Granted {
        slug: t.slug.clone(),
        schema: t.schema.clone(),
        data_role: data_role.clone(),
        outcome: "granted",
        tables: Vec::new(),
        sequences: Vec::new(),
        error: None,
    };
    if t.state == "dropping" {
        g.outcome = "skipped";
        g.error = Some("being dropped; run tenantctl drop to finish it".into());
        return g;
    }
    if t.state == "suspended" {
        // Granting would undo the suspension behind its record's back.
        g.outcome = "skipped";
        g.error = Some("suspended; tenantctl resume gives its access back".into());
        return g;
    }
    match apply_grants(conn, t, app, &data_role, major, s.lock_deadline()).await {
        Ok(missing) => {
            g.tables = missing.tables;
            g.sequences = missing.sequences;
        }
        Err(e) => {
            g.outcome = "failed";
            g.error = Some(format!("{e:#}; nothing was granted on it"));
        }
    }
    g
}

/// One transaction under the tenant's lock (no migration runs meanwhile, so the tables
/// listed are all there are). Returns what was filled in.
async fn apply_grants(
    conn: &mut deadpool_postgres::Object,
    t: &Tenant,
    app: &str,
    data_role: &str,
    major: i32,
    deadline: std::time::Duration,
) -> Result<audit::Ungranted> {
    let (tx, exists) = locked_transaction(conn, &t.slug, &t.schema, deadline).await?;
    if !exists {
        anyhow::bail!("its schema {} is missing from the database", t.schema);
    }
    let missing =
        adopt::apply_grants(&tx, &t.schema, t.role.as_deref(), app, data_role, major).await?;
    tx.commit().await.pg_context("cannot commit the grants")?;
    Ok(missing)
}

#[derive(Serialize)]
struct Document<'a> {
    app_role: &'a str,
    tenants: &'a [Granted],
}

fn print(s: &Session, app: &str, results: &[Granted]) {
    if s.json() {
        print_json(&Document {
            app_role: app,
            tenants: results,
        });
        return;
    }
    for r in results {
        match (&r.error, r.outcome) {
            (Some(e), outcome) => {
                crate::outln!("{} ({}): {outcome}: {}", r.slug, r.schema, escape_line(e))
            }
            (None, _) => crate::outln!(
                "{} ({}): granted to {}; filled in {} tables and {} sequences that had no grant",
                r.slug,
                r.schema,
                r.data_role,
                r.tables.len(),
                r.sequences.len()
            ),
        }
    }
    let n = |o: &str| results.iter().filter(|r| r.outcome == o).count();
    crate::outln!(
        "grant: {}: {} granted, {} failed, {} skipped",
        count_of(results.len(), "tenant"),
        n("granted"),
        n("failed"),
        n("skipped")
    );
}
