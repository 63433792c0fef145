//! Catalog inspection for `tenantctl verify` (and `grant`): who may do what in tenant
//! schemas and on the registry, who owns what, and what a tenant's objects can reach.
//! Every catalog, function and cast here is schema-qualified, like all of tenantctl's SQL.

use crate::pg::connect::PgContext;
use anyhow::Result;
use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::registry;
use crate::tenant::apply::HISTORY_TABLE;
use crate::tenant::grants::{SEQUENCE_PRIVILEGES, TABLE_PRIVILEGES};

/// One thing an auditor should look at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The tenant's slug, when the finding belongs to a registered tenant.
    pub slug: Option<String>,
    pub schema: String,
    /// A stable identifier: schema_missing, unregistered_schema, wrong_owner,
    /// wrong_object_owner, unexpected_privilege, unexpected_column_privilege,
    /// unexpected_default_privilege, unexpected_membership, missing_grant, security_definer,
    /// cross_schema_view, registry_privilege, public_create, app_role_inherits,
    /// version_mismatch, diverged; with `verify --structure`, the kinds of
    /// `domain::structure::KINDS` (missing_column, extra_index, ...).
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
               FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
              WHERE n.nspname = ANY($1) AND a.grantee <> n.nspowner \
             UNION ALL \
             SELECT n.nspname::text, c.relkind::text, c.relname::text, \
                    coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type \
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
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
        "r" | "p" | "v" | "m" | "f" => TABLE_PRIVILEGES.contains(&p),
        "S" => SEQUENCE_PRIVILEGES.contains(&p),
        _ => false,
    }
}

/// A privilege on one column (`GRANT SELECT (email) ON employees TO ...`).
#[derive(Debug, Clone)]
pub struct ColumnGrant {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub grantee: String,
    pub privilege: String,
}

/// Every column privilege in `schemas` held by anyone but the table's owner. tenantctl
/// grants none: table privileges cover the data role.
pub async fn column_grants(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<ColumnGrant>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, \
                    coalesce(r.rolname::text, 'PUBLIC'), x.privilege_type \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped \
                AND x.grantee <> c.relowner \
              ORDER BY 1, 2, 3, 4, 5",
            &[&schemas],
        )
        .await
        .pg_context("cannot read the column privileges of tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| ColumnGrant {
            schema: r.get(0),
            table: r.get(1),
            column: r.get(2),
            grantee: r.get(3),
            privilege: r.get(4),
        })
        .collect())
}

/// One entry of `ALTER DEFAULT PRIVILEGES`: what `grantee` gets on objects of `objtype`
/// ("r" tables, "S" sequences, "f" functions, "T" types, "n" schemas) that `creator` makes
/// in `schema` ("" for every schema).
#[derive(Debug, Clone)]
pub struct DefaultGrant {
    pub schema: String,
    pub creator: String,
    pub objtype: String,
    pub grantee: String,
    pub privilege: String,
}

/// The default privileges set in `schemas` by any role, and those the registry's owner
/// set for tables and sequences in every schema (they reach tenant schemas too). The
/// creator's privileges on its own objects are left out.
pub async fn default_grants(
    client: &impl GenericClient,
    schemas: &[String],
    owner: &str,
) -> Result<Vec<DefaultGrant>> {
    let rows = client
        .query(
            "SELECT coalesce(n.nspname::text, ''), pg_catalog.pg_get_userbyid(d.defaclrole)::text, \
                    d.defaclobjtype::text, coalesce(r.rolname::text, 'PUBLIC'), x.privilege_type \
               FROM pg_catalog.pg_default_acl d \
               LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace \
               CROSS JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE x.grantee <> d.defaclrole \
                AND (n.nspname = ANY($1) \
                     OR d.defaclnamespace = 0 AND d.defaclobjtype IN ('r', 'S') \
                        AND d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)) \
              ORDER BY 1, 2, 3, 4, 5",
            &[&schemas, &owner],
        )
        .await
        .pg_context("cannot read the default privileges of tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| DefaultGrant {
            schema: r.get(0),
            creator: r.get(1),
            objtype: r.get(2),
            grantee: r.get(3),
            privilege: r.get(4),
        })
        .collect())
}

/// Whether a default privilege is one tenantctl sets: in the tenant's schema, for objects
/// the registry's owner creates, the data privileges for the data role.
pub fn is_expected_default(g: &DefaultGrant, owner: &str, data_role: Option<&str>) -> bool {
    !g.schema.is_empty()
        && g.creator == owner
        && data_role == Some(g.grantee.as_str())
        && match g.objtype.as_str() {
            "r" => TABLE_PRIVILEGES.contains(&g.privilege.as_str()),
            "S" => SEQUENCE_PRIVILEGES.contains(&g.privilege.as_str()),
            _ => false,
        }
}

/// The default privileges tenantctl sets for `data_role` in `schema` that are missing.
pub fn missing_defaults(
    defaults: &[DefaultGrant],
    schema: &str,
    owner: &str,
    data_role: &str,
) -> Vec<String> {
    let wanted = TABLE_PRIVILEGES
        .iter()
        .map(|p| ("r", "tables", *p))
        .chain(SEQUENCE_PRIVILEGES.iter().map(|p| ("S", "sequences", *p)));
    wanted
        .filter(|(objtype, _, privilege)| {
            !defaults.iter().any(|g| {
                g.schema == schema
                    && g.creator == owner
                    && g.grantee == data_role
                    && g.objtype == *objtype
                    && g.privilege == *privilege
            })
        })
        .map(|(_, what, privilege)| format!("{privilege} on {what}"))
        .collect()
}

/// An object in a tenant schema and its owner.
#[derive(Debug, Clone)]
pub struct Owned {
    pub schema: String,
    /// "table", "view", "function", "type", ...
    pub kind: String,
    pub name: String,
    pub owner: String,
}

/// Objects in `schemas` owned by a role other than `owner`: relations, functions, types,
/// operators and the rest of what a schema can hold (indexes and the sequences of identity
/// or serial columns always belong to their table's owner and are not listed apart). Their owner may alter, drop or
/// re-grant them behind tenantctl's back, and migrations run as `owner` cannot alter them.
pub async fn foreign_owned(
    client: &impl GenericClient,
    schemas: &[String],
    owner: &str,
) -> Result<Vec<Owned>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, o.kind, o.name, pg_catalog.pg_get_userbyid(o.owner)::text \
               FROM ( \
                 SELECT c.relnamespace AS ns, CASE c.relkind WHEN 'r' THEN 'table' \
                        WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' \
                        WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' \
                        ELSE 'type' END AS kind, \
                        c.relname::text AS name, c.relowner AS owner FROM pg_catalog.pg_class c \
                  WHERE c.relkind NOT IN ('i', 'I', 't') \
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                                       AND d.objid = c.oid AND d.deptype IN ('a', 'i')) \
                 UNION ALL SELECT p.pronamespace, 'function', \
                        p.oid::pg_catalog.regprocedure::text, p.proowner FROM pg_catalog.pg_proc p \
                 UNION ALL SELECT t.typnamespace, 'type', t.typname::text, t.typowner \
                   FROM pg_catalog.pg_type t WHERE t.typrelid = 0 \
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid) \
                 UNION ALL SELECT o.oprnamespace, 'operator', o.oid::pg_catalog.regoperator::text, \
                        o.oprowner FROM pg_catalog.pg_operator o \
                 UNION ALL SELECT c.collnamespace, 'collation', c.collname::text, c.collowner \
                   FROM pg_catalog.pg_collation c \
                 UNION ALL SELECT c.connamespace, 'conversion', c.conname::text, c.conowner \
                   FROM pg_catalog.pg_conversion c \
                 UNION ALL SELECT c.opcnamespace, 'operator class', c.opcname::text, c.opcowner \
                   FROM pg_catalog.pg_opclass c \
                 UNION ALL SELECT f.opfnamespace, 'operator family', f.opfname::text, f.opfowner \
                   FROM pg_catalog.pg_opfamily f \
                 UNION ALL SELECT c.cfgnamespace, 'text search configuration', c.cfgname::text, \
                        c.cfgowner FROM pg_catalog.pg_ts_config c \
                 UNION ALL SELECT d.dictnamespace, 'text search dictionary', d.dictname::text, \
                        d.dictowner FROM pg_catalog.pg_ts_dict d \
                 UNION ALL SELECT s.stxnamespace, 'statistics object', s.stxname::text, s.stxowner \
                   FROM pg_catalog.pg_statistic_ext s \
               ) o JOIN pg_catalog.pg_namespace n ON n.oid = o.ns \
              WHERE n.nspname = ANY($1) \
                AND o.owner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2) \
              ORDER BY 1, 2, 3",
            &[&schemas, &owner],
        )
        .await
        .pg_context("cannot read the owners of objects in tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| Owned {
            schema: r.get(0),
            kind: r.get(1),
            name: r.get(2),
            owner: r.get(3),
        })
        .collect())
}

/// `SECURITY DEFINER` functions in `schemas`: (schema, signature, owner). They run with
/// their owner's rights whoever calls them.
pub async fn security_definers(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<(String, String, String)>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, p.oid::pg_catalog.regprocedure::text, \
                    pg_catalog.pg_get_userbyid(p.proowner)::text \
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
              WHERE n.nspname = ANY($1) AND p.prosecdef ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .pg_context("cannot read the functions of tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Views and materialized views in `schemas` that read tables or call functions of another
/// schema (pg_catalog and information_schema aside): (schema, view, what it reads). A view
/// runs with its owner's rights, so whoever may read it reads that too.
pub async fn cross_schema_views(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<(String, String, String)>> {
    let rows = client
        .query(
            "SELECT DISTINCT vn.nspname::text, v.relname::text, \
                    coalesce(rc.oid::pg_catalog.regclass::text, rp.oid::pg_catalog.regprocedure::text) \
               FROM pg_catalog.pg_class v \
               JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace \
               JOIN pg_catalog.pg_rewrite w ON w.ev_class = v.oid \
               JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                                          AND d.objid = w.oid \
               LEFT JOIN pg_catalog.pg_class rc \
                      ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND rc.oid = d.refobjid \
               LEFT JOIN pg_catalog.pg_proc rp \
                      ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND rp.oid = d.refobjid \
               JOIN pg_catalog.pg_namespace rn ON rn.oid = coalesce(rc.relnamespace, rp.pronamespace) \
              WHERE vn.nspname = ANY($1) AND v.relkind IN ('v', 'm') AND rn.oid <> vn.oid \
                AND rn.nspname NOT IN ('pg_catalog', 'information_schema') \
              ORDER BY 1, 2, 3",
            &[&schemas],
        )
        .await
        .pg_context("cannot read the dependencies of views in tenant schemas")?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A role membership that involves a tenant's own role.
#[derive(Debug, Clone)]
pub struct Membership {
    pub tenant_role: String,
    pub other: String,
    /// `other` is a member of the tenant role (else the tenant role is a member of `other`).
    pub other_is_member: bool,
    pub admin: bool,
    /// The member inherits the privileges (PostgreSQL 16+, per grant; false on 15).
    pub inherit: bool,
}

/// Every membership in or of the tenant roles `roles`.
pub async fn memberships(
    client: &impl GenericClient,
    roles: &[String],
    server_major: i32,
) -> Result<Vec<Membership>> {
    let inherit = if server_major >= 16 {
        "am.inherit_option"
    } else {
        "false"
    };
    let rows = client
        .query(
            &format!(
                "SELECT r.rolname::text, m.rolname::text, true, am.admin_option, {inherit} \
                   FROM pg_catalog.pg_auth_members am \
                   JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
                   JOIN pg_catalog.pg_roles m ON m.oid = am.member \
                  WHERE r.rolname = ANY($1) \
                 UNION ALL \
                 SELECT m.rolname::text, r.rolname::text, false, am.admin_option, {inherit} \
                   FROM pg_catalog.pg_auth_members am \
                   JOIN pg_catalog.pg_roles r ON r.oid = am.roleid \
                   JOIN pg_catalog.pg_roles m ON m.oid = am.member \
                  WHERE m.rolname = ANY($1) \
                 ORDER BY 1, 2"
            ),
            &[&roles],
        )
        .await
        .pg_context("cannot read the memberships of tenant roles")?;
    Ok(rows
        .iter()
        .map(|r| Membership {
            tenant_role: r.get(0),
            other: r.get(1),
            other_is_member: r.get(2),
            admin: r.get(3),
            inherit: r.get(4),
        })
        .collect())
}

/// Tables, views and sequences of a tenant schema on which its data role holds no
/// privilege at all (the migration history aside): missed by default privileges, e.g.
/// because the tenant was created before `app_role` was set.
#[derive(Debug, Clone, Default)]
pub struct Ungranted {
    pub tables: Vec<String>,
    pub sequences: Vec<String>,
}

/// `Ungranted` for each (schema, data role) pair, in order.
pub async fn ungranted(
    client: &impl GenericClient,
    pairs: &[(String, String)],
) -> Result<Vec<Ungranted>> {
    let schemas: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let roles: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let rows = client
        .query(
            "SELECT t.schema, c.relname::text, c.relkind = 'S' \
               FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) \
                    AS t(schema, role) \
               JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema \
               JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relname <> $3 \
                AND NOT EXISTS ( \
                    SELECT 1 FROM pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault( \
                                      CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", \
                                      c.relowner))) x \
                      JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
                     WHERE r.rolname = t.role) \
              ORDER BY 1, 2",
            &[&schemas, &roles, &HISTORY_TABLE],
        )
        .await
        .pg_context("cannot read which objects of tenant schemas lack grants")?;
    let mut out = vec![Ungranted::default(); pairs.len()];
    for r in rows {
        let schema: &str = r.get(0);
        let Some(i) = pairs.iter().position(|p| p.0 == schema) else {
            continue;
        };
        let name: String = r.get(1);
        if r.get::<_, bool>(2) {
            out[i].sequences.push(name);
        } else {
            out[i].tables.push(name);
        }
    }
    Ok(out)
}

/// Whether the tenant schema has its migration history table.
pub async fn has_history(client: &impl GenericClient, schema: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[&crate::tenant::apply::history_table(schema)],
        )
        .await
        .pg_context("cannot look for the migration history table")?
        .get(0))
}

/// A privilege on a registry table, one of its columns or sequences, or `tenantctl_enter`.
#[derive(Debug, Clone)]
pub struct RegistryGrant {
    /// The table, sequence or function.
    pub object: String,
    pub column: Option<String>,
    pub grantee: String,
    pub privilege: String,
}

/// Every privilege on the registry held by a role other than the object's owner.
pub async fn registry_grants(client: &impl GenericClient) -> Result<Vec<RegistryGrant>> {
    let rows = client
        .query(
            "WITH reg AS ( \
                 SELECT c.oid FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = 'public' AND c.relname = ANY($1)), \
             objs AS ( \
                 SELECT oid FROM reg \
                 UNION SELECT d.objid FROM pg_catalog.pg_depend d \
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                    AND d.refobjid IN (SELECT oid FROM reg) AND d.deptype IN ('a', 'i')) \
             SELECT c.relname::text, NULL::text, coalesce(r.rolname::text, 'PUBLIC'), x.privilege_type \
               FROM pg_catalog.pg_class c JOIN objs ON objs.oid = c.oid \
               CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE x.grantee <> c.relowner \
             UNION ALL \
             SELECT c.relname::text, a.attname::text, coalesce(r.rolname::text, 'PUBLIC'), x.privilege_type \
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
               JOIN reg ON reg.oid = c.oid \
               CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE a.attnum > 0 AND NOT a.attisdropped AND x.grantee <> c.relowner \
             UNION ALL \
             SELECT p.oid::pg_catalog.regprocedure::text, NULL, coalesce(r.rolname::text, 'PUBLIC'), \
                    x.privilege_type \
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
               CROSS JOIN LATERAL pg_catalog.aclexplode( \
                   coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE n.nspname = 'public' AND p.proname = 'tenantctl_enter' AND x.grantee <> p.proowner \
             ORDER BY 1, 2, 3, 4",
            &[&registry::TABLES],
        )
        .await
        .pg_context("cannot read the privileges on the tenant registry")?;
    Ok(rows
        .iter()
        .map(|r| RegistryGrant {
            object: r.get(0),
            column: r.get(1),
            grantee: r.get(2),
            privilege: r.get(3),
        })
        .collect())
}

/// Whether a registry privilege is the one tenantctl gives the application role: SELECT
/// on the routing columns of public.tenants.
pub fn is_expected_registry(g: &RegistryGrant, app_role: Option<&str>) -> bool {
    app_role == Some(g.grantee.as_str())
        && g.object == "tenants"
        && g.privilege == "SELECT"
        && g.column
            .as_deref()
            .is_some_and(|c| registry::ROUTING_COLUMNS.contains(&c))
}

/// Roles other than the schema's owner and the registry's owner that may CREATE in
/// `public`, the registry's schema: (schema, grantee). Where they can, they can plant
/// functions and tables that shadow what other roles' unqualified SQL calls.
pub async fn public_creators(client: &impl GenericClient) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, coalesce(r.rolname::text, 'PUBLIC') \
               FROM pg_catalog.pg_namespace n \
               CROSS JOIN LATERAL pg_catalog.aclexplode( \
                   coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) x \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = x.grantee \
              WHERE n.nspname = 'public' AND x.privilege_type = 'CREATE' \
                AND x.grantee <> n.nspowner \
                AND x.grantee <> (SELECT relowner FROM pg_catalog.pg_class \
                                   WHERE oid = 'public.tenants'::pg_catalog.regclass) \
              ORDER BY 2",
            &[],
        )
        .await
        .pg_context("cannot read the privileges on schema public")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Schema owners, by schema name.
pub async fn owners(
    client: &impl GenericClient,
    schemas: &[String],
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT nspname::text, pg_catalog.pg_get_userbyid(nspowner)::text \
               FROM pg_catalog.pg_namespace WHERE nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .pg_context("cannot read schema owners")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The role that owns the registry: tenant schemas are expected to belong to it.
pub async fn registry_owner(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class \
              WHERE oid = 'public.tenants'::pg_catalog.regclass",
            &[],
        )
        .await
        .pg_context("cannot read the owner of public.tenants")?
        .get(0))
}

/// The role this session is connected as (on a server other than home, the one that made
/// the tenant objects there).
pub async fn connected_role(client: &impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await
        .pg_context("cannot read the connected role")?
        .get(0))
}

/// Schemas whose name starts with `prefix` (matched literally, not as a LIKE pattern).
pub async fn schemas_with_prefix(client: &impl GenericClient, prefix: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace \
              WHERE pg_catalog.left(nspname::text, pg_catalog.length($1::text)) = $1::text ORDER BY 1",
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
