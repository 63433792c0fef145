//! `tenantctl init`: install or upgrade the registry.

use anyhow::Result;
use serde_json::json;

use crate::commands::session::Session;
use crate::registry;

pub async fn run(s: &Session) -> Result<u8> {
    let pool = crate::pg::connect::pool(&s.target, 1)?;
    let mut conn = crate::pg::connect::first_connection(&pool, &s.target).await?;
    let (before, after) = registry::ensure(&mut conn, s.lock_deadline()).await?;
    let app_role = s.check_app_role(&conn).await?;
    if let Some(role) = &app_role {
        registry::grant_read(&conn, role).await?;
    }
    if s.json() {
        crate::output::print_json(
            &json!({"registry_version_before": before, "registry_version": after}),
        );
    } else if before == after {
        crate::outln!(
            "registry is current (version {after}) in {}",
            s.target.describe()
        );
    } else if before == 0 {
        crate::outln!(
            "registry installed (version {after}) in {}",
            s.target.describe()
        );
    } else {
        crate::outln!(
            "registry upgraded from version {before} to {after} in {}",
            s.target.describe()
        );
    }
    Ok(0)
}
