//! `tenantctl suspend SLUG [--reason TEXT]` and `tenantctl resume SLUG`.
//!
//! Suspending revokes every privilege on the tenant's schema held by a role other than its
//! owner (the application role, or the tenant's own role with per_tenant_roles): without
//! USAGE on the schema nothing in it can be reached, and no row is touched. What was revoked
//! is recorded in `public.tenant_suspensions`, so resume grants back exactly that. Both run
//! in one transaction under the tenant's lock, so they never overlap a migration of it.

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::{ResumeArgs, SuspendArgs};
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, OK};
use crate::output::{escape_line, print_json};
use crate::pg::connect::PgContext;
use crate::registry::{self, SchemaGrant};
use crate::tenant::apply::locked_transaction;
use crate::tenant::grants;

pub async fn suspend(s: &Session, args: &SuspendArgs) -> Result<u8> {
    let (_pool, mut conn) = s.connect(1).await?;
    let t = one_tenant(&conn, &args.slug, "nothing was suspended").await?;
    s.refuse_elsewhere(std::slice::from_ref(&t), "suspend")?;
    if !matches!(t.state.as_str(), "active" | "failed") {
        return Err(bad_input(format!(
            "tenant {} is {}; only an active or failed tenant can be suspended; nothing was changed",
            t.slug, t.state
        )));
    }
    let (tx, exists) = locked_transaction(&mut conn, &t.slug, &t.schema, s.lock_deadline()).await?;
    if !exists {
        bail!(
            "tenant {}'s schema {} is missing from the database; nothing was suspended",
            t.slug,
            t.schema
        );
    }
    let revoked = registry::schema_grants(&tx, &t.schema).await?;
    let mut grantees: Vec<&str> = revoked.iter().map(|g| g.grantee.as_str()).collect();
    grantees.dedup();
    tx.batch_execute(&grants::revoke_schema(&t.schema, &grantees))
        .await
        .pg_context("cannot revoke the privileges on the tenant's schema")?;
    registry::record_suspend(&tx, &t.slug, args.reason.as_deref(), &revoked).await?;
    tx.commit()
        .await
        .pg_context("cannot commit the suspension")?;
    report(s, "suspended", &t.slug, &revoked);
    Ok(OK)
}

pub async fn resume(s: &Session, args: &ResumeArgs) -> Result<u8> {
    let (_pool, mut conn) = s.connect(1).await?;
    let t = one_tenant(&conn, &args.slug, "nothing was resumed").await?;
    s.refuse_elsewhere(std::slice::from_ref(&t), "resume")?;
    if t.state != "suspended" {
        return Err(bad_input(format!(
            "tenant {} is {}, not suspended; nothing was changed",
            t.slug, t.state
        )));
    }
    let (tx, _) = locked_transaction(&mut conn, &t.slug, &t.schema, s.lock_deadline()).await?;
    let Some(revoked) = registry::open_suspension(&tx, &t.slug).await? else {
        bail!(
            "tenant {} is suspended but public.tenant_suspensions has no open record of what \
             was revoked; grant the access back by hand (tenantctl grant) and set its state; \
             nothing was changed",
            t.slug
        );
    };
    let mut sql = String::new();
    for g in &revoked {
        match grants::grant_schema(&t.schema, &g.grantee, &g.privilege, g.grantable) {
            Some(stmt) => sql.push_str(&stmt),
            None => bail!(
                "the suspension record of tenant {} holds an unknown privilege '{}'; nothing was \
                 changed",
                t.slug,
                g.privilege
            ),
        }
    }
    tx.batch_execute(&sql)
        .await
        .pg_context("cannot grant the privileges on the tenant's schema back")?;
    let state = registry::record_resume(&tx, &t.slug).await?;
    tx.commit().await.pg_context("cannot commit the resume")?;
    report(s, &state, &t.slug, &revoked);
    Ok(OK)
}

async fn one_tenant(
    conn: &deadpool_postgres::Object,
    slug: &str,
    nothing: &str,
) -> Result<registry::Tenant> {
    registry::some(conn, &[slug.to_string()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            bad_input(format!(
                "unknown tenant {slug}; {nothing} (see tenantctl list)"
            ))
        })
}

fn report(s: &Session, state: &str, slug: &str, grants: &[SchemaGrant]) {
    if s.json() {
        print_json(&json!({"slug": slug, "state": state, "schema_privileges": grants}));
        return;
    }
    let what: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "{} on the schema for {}",
                g.privilege,
                escape_line(&g.grantee)
            )
        })
        .collect();
    let what = if what.is_empty() {
        "no role but the owner had privileges on its schema".to_string()
    } else if state == "suspended" {
        format!("revoked {}", what.join(", "))
    } else {
        format!("granted back {}", what.join(", "))
    };
    crate::outln!("tenant {slug} is {state}: {what}");
}
