//! Catalog inspection for `tenantctl verify`: who may do what in tenant schemas, and
//! whether each schema's history agrees with the registry and the migration files.

use crate::connect::PgContext;
use anyhow::Result;
use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::apply::HISTORY_TABLE;

/// One thing an auditor should look at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The tenant's slug, when the finding belongs to a registered tenant.
    pub slug: Option<String>,
    pub schema: String,
    /// A stable identifier: schema_missing, unregistered_schema, wrong_owner,
    /// unexpected_privilege, app_role_inherits, version_mismatch, diverged.
    pub kind: &'static str,
    pub detail: String,
}

/// One privilege held on a tenant schema or on an object in it.
#[derive(Debug, Clone)]
pub struct Grant {
    pub schema: String,
    /// "schema", or pg_class.relkind of the object ("r" table, "S" sequence, "v" view, ...).
    pub kind: String,
    pub object: String,
    /// The role holding it, or "PUBLIC".
    pub grantee: String,
    pub privilege: String,
}

/// Every privilege granted on `schemas` and their relations to anyone but the object's owner.
pub async fn grants(client: &impl GenericClient, schemas: &[String]) -> Result<Vec<Grant>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, 'schema', n.nspname::text, \
                    coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type \
               FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a \
               LEFT JOIN pg_roles r ON r.oid = a.grantee \
              WHERE n.nspname = ANY($1) AND a.grantee <> n.nspowner \
             UNION ALL \
             SELECT n.nspname::text, c.relkind::text, c.relname::text, \
                    coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               CROSS JOIN LATERAL aclexplode(c.relacl) a \
               LEFT JOIN pg_roles r ON r.oid = a.grantee \
              WHERE n.nspname = ANY($1) AND a.grantee <> c.relowner \
             ORDER BY 1, 3, 4, 5",
            &[&schemas],
        )
        .await
        .pg_context("cannot read the privileges of tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| Grant {
            schema: r.get(0),
            kind: r.get(1),
            object: r.get(2),
            grantee: r.get(3),
            privilege: r.get(4),
        })
        .collect())
}

/// Whether `grant` is one tenantctl gives to the data role (the application role, or the
/// tenant's own role): USAGE on the schema, DML on tables, USAGE/SELECT on sequences,
/// never anything on the migration history.
pub fn is_expected(grant: &Grant, data_role: Option<&str>) -> bool {
    if data_role != Some(grant.grantee.as_str())
        || grant.object == HISTORY_TABLE && grant.kind != "schema"
    {
        return false;
    }
    let p = grant.privilege.as_str();
    match grant.kind.as_str() {
        "schema" => p == "USAGE",
        "r" | "p" | "v" | "m" | "f" => matches!(p, "SELECT" | "INSERT" | "UPDATE" | "DELETE"),
        "S" => matches!(p, "USAGE" | "SELECT"),
        _ => false,
    }
}

/// Schema owners, by schema name.
pub async fn owners(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT nspname::text, pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .pg_context("cannot read schema owners")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The role that owns the registry: tenant schemas are expected to belong to it.
pub async fn registry_owner(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = 'public.tenants'::regclass", &[])
        .await
        .pg_context("cannot read the owner of public.tenants")?
        .get(0))
}

/// Schemas whose name starts with `prefix` (matched literally, not as a LIKE pattern).
pub async fn schemas_with_prefix(client: &impl GenericClient, prefix: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE left(nspname, length($1)) = $1 ORDER BY 1",
            &[&prefix],
        )
        .await
        .pg_context("cannot list schemas")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(kind: &str, object: &str, grantee: &str, privilege: &str) -> Grant {
        Grant {
            schema: "s".into(),
            kind: kind.into(),
            object: object.into(),
            grantee: grantee.into(),
            privilege: privilege.into(),
        }
    }

    #[test]
    fn only_the_configured_data_privileges_are_expected() {
        let app = Some("app");
        assert!(is_expected(&g("schema", "s", "app", "USAGE"), app));
        assert!(is_expected(&g("r", "employees", "app", "DELETE"), app));
        assert!(is_expected(
            &g("S", "employees_id_seq", "app", "USAGE"),
            app
        ));
        assert!(!is_expected(&g("schema", "s", "app", "CREATE"), app));
        assert!(!is_expected(&g("r", "employees", "app", "TRUNCATE"), app));
        assert!(!is_expected(&g("r", "employees", "PUBLIC", "SELECT"), app));
        assert!(!is_expected(
            &g("r", "employees", "intruder", "SELECT"),
            app
        ));
        assert!(!is_expected(&g("r", HISTORY_TABLE, "app", "SELECT"), app));
        assert!(!is_expected(&g("schema", "s", "app", "USAGE"), None));
    }
}
