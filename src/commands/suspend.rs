//! `tenantctl suspend SLUG [--reason TEXT]` and `tenantctl resume SLUG`.
//!
//! Suspending revokes every privilege on the tenant's schema held by a role other than its
//! owner (the application role, or the tenant's own role with per_tenant_roles): without
//! USAGE on the schema nothing in it can be reached, and no row is touched. What was revoked
//! is recorded in `public.tenant_suspensions`, so resume grants back exactly that. Both run
//! in one transaction under the tenant's lock, so they never overlap a migration of it.

use anyhow::{anyhow, bail, Context, Result};
use deadpool_postgres::Object;
use serde_json::json;

use crate::cli::{ResumeArgs, SuspendArgs};
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, OK};
use crate::output::{escape_line, print_json};
use crate::pg::connect::PgContext;
use crate::registry::{self, SchemaGrant, Tenant};
use crate::tenant::apply::locked_transaction;
use crate::tenant::grants;

pub async fn suspend(s: &Session, args: &SuspendArgs) -> Result<u8> {
    let (_pool, mut conn) = s.connect(1).await?;
    let t = one_tenant(&conn, &args.slug, "nothing was suspended").await?;
    if !matches!(t.state.as_str(), "active" | "failed") {
        return Err(bad_input(format!(
            "tenant {} is {}; only an active or failed tenant can be suspended; nothing was changed",
            t.slug, t.state
        )));
    }
    let revoked = if s.at_home(&t) {
        suspend_at_home(s, &mut conn, &t, args.reason.as_deref()).await?
    } else {
        suspend_elsewhere(s, &mut conn, &t, args.reason.as_deref()).await?
    };
    report(s, "suspended", &t.slug, &revoked);
    Ok(OK)
}

async fn suspend_at_home(
    s: &Session,
    conn: &mut Object,
    t: &Tenant,
    reason: Option<&str>,
) -> Result<Vec<SchemaGrant>> {
    let (tx, exists) = locked_transaction(conn, &t.slug, &t.schema, s.lock_deadline()).await?;
    let revoked = revoke_all(&tx, t, exists).await?;
    registry::record_suspend(&tx, &t.slug, reason, &revoked).await?;
    tx.commit()
        .await
        .pg_context("cannot commit the suspension")?;
    Ok(revoked)
}

/// A tenant elsewhere: the privileges are revoked on its server, under its lock there, and
/// the suspension recorded on home. Home commits first: should its server then fail to
/// commit, the record says more than was done, and `resume` (granting back what is already
/// granted) puts it right; the other order could lose what was revoked.
async fn suspend_elsewhere(
    s: &Session,
    home: &mut Object,
    t: &Tenant,
    reason: Option<&str>,
) -> Result<Vec<SchemaGrant>> {
    let (_pool, mut far) = s
        .connect_place(&t.server, &t.database, 1)
        .await
        .context("nothing was suspended")?;
    let (tx, exists) = locked_transaction(&mut far, &t.slug, &t.schema, s.lock_deadline()).await?;
    let revoked = revoke_all(&tx, t, exists).await?;
    let home_tx = home
        .transaction()
        .await
        .pg_context("cannot start a transaction on home")?;
    registry::record_suspend(&home_tx, &t.slug, reason, &revoked).await?;
    home_tx
        .commit()
        .await
        .pg_context("cannot commit the suspension on home; nothing was suspended")?;
    tx.commit().await.with_pg_context(|| {
        format!(
            "the registry on home records tenant {} suspended, but server {} did not commit \
             the revoke, so its access is unchanged; run tenantctl resume {} and suspend it again",
            t.slug, t.server, t.slug
        )
    })?;
    Ok(revoked)
}

/// Revokes every privilege on the tenant's schema held by a role other than its owner, in
/// `tx` (which holds the tenant's lock); returns what was revoked.
async fn revoke_all(
    tx: &deadpool_postgres::Transaction<'_>,
    t: &Tenant,
    exists: bool,
) -> Result<Vec<SchemaGrant>> {
    if !exists {
        bail!(
            "tenant {}'s schema {} is missing from {}; nothing was suspended",
            t.slug,
            t.schema,
            place(t)
        );
    }
    let revoked = registry::schema_grants(tx, &t.schema).await?;
    let mut grantees: Vec<&str> = revoked.iter().map(|g| g.grantee.as_str()).collect();
    grantees.dedup();
    tx.batch_execute(&grants::revoke_schema(&t.schema, &grantees))
        .await
        .pg_context("cannot revoke the privileges on the tenant's schema")?;
    Ok(revoked)
}

/// Where a tenant lives, for messages.
fn place(t: &Tenant) -> String {
    format!("database {} of server {}", t.database, t.server)
}

pub async fn resume(s: &Session, args: &ResumeArgs) -> Result<u8> {
    let (_pool, mut conn) = s.connect(1).await?;
    let t = one_tenant(&conn, &args.slug, "nothing was resumed").await?;
    if t.state != "suspended" {
        return Err(bad_input(format!(
            "tenant {} is {}, not suspended; nothing was changed",
            t.slug, t.state
        )));
    }
    let (state, revoked) = if s.at_home(&t) {
        let (tx, _) = locked_transaction(&mut conn, &t.slug, &t.schema, s.lock_deadline()).await?;
        let revoked = suspension_of(&tx, &t).await?;
        tx.batch_execute(&grant_back_sql(&t, &revoked)?)
            .await
            .pg_context("cannot grant the privileges on the tenant's schema back")?;
        let state = registry::record_resume(&tx, &t.slug).await?;
        tx.commit().await.pg_context("cannot commit the resume")?;
        (state, revoked)
    } else {
        resume_elsewhere(s, &mut conn, &t).await?
    };
    report(s, &state, &t.slug, &revoked);
    Ok(OK)
}

/// A tenant elsewhere: the privileges are granted back on its server, under its lock there,
/// then the suspension is closed on home. Should home fail after its server committed, the
/// tenant is reachable again but still shown suspended; running resume again grants
/// (already granted) privileges once more and closes the record.
async fn resume_elsewhere(
    s: &Session,
    home: &mut Object,
    t: &Tenant,
) -> Result<(String, Vec<SchemaGrant>)> {
    let (_pool, mut far) = s
        .connect_place(&t.server, &t.database, 1)
        .await
        .context("nothing was resumed")?;
    let home_tx = home
        .transaction()
        .await
        .pg_context("cannot start a transaction on home")?;
    let revoked = suspension_of(&home_tx, t).await?;
    let sql = grant_back_sql(t, &revoked)?;
    let (tx, exists) = locked_transaction(&mut far, &t.slug, &t.schema, s.lock_deadline()).await?;
    if !exists {
        bail!(
            "tenant {}'s schema {} is missing from {}; nothing was resumed",
            t.slug,
            t.schema,
            place(t)
        );
    }
    tx.batch_execute(&sql)
        .await
        .pg_context("cannot grant the privileges on the tenant's schema back")?;
    let state = registry::record_resume(&home_tx, &t.slug).await?;
    tx.commit().await.with_pg_context(|| {
        format!(
            "cannot commit the resume on server {}; nothing was resumed",
            t.server
        )
    })?;
    home_tx.commit().await.with_pg_context(|| {
        format!(
            "tenant {} can be reached again on server {}, but the registry on home could not \
             record it; run tenantctl resume {} again",
            t.slug, t.server, t.slug
        )
    })?;
    Ok((state, revoked))
}

/// What the tenant's open suspension revoked (read with FOR UPDATE in `tx`).
async fn suspension_of(
    tx: &deadpool_postgres::Transaction<'_>,
    t: &Tenant,
) -> Result<Vec<SchemaGrant>> {
    registry::open_suspension(tx, &t.slug)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "tenant {} is suspended but public.tenant_suspensions has no open record of what \
             was revoked; grant the access back by hand (tenantctl grant) and set its state; \
             nothing was changed",
                t.slug
            )
        })
}

/// The statements granting back what a suspension revoked.
fn grant_back_sql(t: &Tenant, revoked: &[SchemaGrant]) -> Result<String> {
    let mut sql = String::new();
    for g in revoked {
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
    Ok(sql)
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
