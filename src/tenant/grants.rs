//! The privileges of a tenant schema. The owner is the role tenantctl connects as; one "data
//! role" gets data access only (no CREATE, no migration history), and PUBLIC gets nothing.
//! The data role is the application role, or with per-tenant roles the tenant's own NOLOGIN
//! role, which the application reaches only through `SET ROLE`.

use crate::domain::names::quote_ident;
use crate::tenant::apply::history_table;

/// Statements run right after `CREATE SCHEMA`, before the migrations, so that default
/// privileges already cover the tables and sequences the migrations create.
pub fn before_migrations(schema: &str, app_role: Option<&str>) -> String {
    let s = quote_ident(schema);
    let mut sql = format!("REVOKE ALL ON SCHEMA {s} FROM PUBLIC;\n");
    if let Some(role) = app_role {
        let r = quote_ident(role);
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA {s} TO {r};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r};\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r};\n"
        ));
    }
    sql
}

/// The data privileges on tables, as granted by default privileges and `fill_in`.
pub const TABLE_PRIVILEGES: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
/// The data privileges on sequences.
pub const SEQUENCE_PRIVILEGES: &[&str] = &["USAGE", "SELECT"];

/// Statements run after a restore, whose tables carry no privileges at all: every table and
/// sequence gets the data privileges, and the migration history is taken away from the
/// application (it must not mark migrations applied).
pub fn after_migrations(schema: &str, app_role: Option<&str>) -> String {
    let Some(role) = app_role else {
        return String::new();
    };
    let s = quote_ident(schema);
    let r = quote_ident(role);
    format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};\n\
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r};\n\
         REVOKE ALL ON {h} FROM {r};\n",
        h = history_table(schema)
    )
}

/// Statements run after a new tenant's migrations. The default privileges set before them
/// already covered every table and sequence they created, and what a migration narrowed on
/// purpose (the example V7 leaves the data role INSERT only on audit_log) must stay so; only
/// the migration history, which they covered too, is taken away from the data role.
pub fn after_create(schema: &str, data_role: Option<&str>) -> String {
    match data_role {
        Some(role) => revoke_history(schema, role),
        None => String::new(),
    }
}

/// Takes the migration history away from the data role.
pub fn revoke_history(schema: &str, role: &str) -> String {
    format!(
        "REVOKE ALL ON {} FROM {};\n",
        history_table(schema),
        quote_ident(role)
    )
}

/// Grants the data privileges on the named tables and sequences of `schema` (those the data
/// role holds nothing on: `audit::ungranted`), leaving alone whatever it already holds.
pub fn fill_in(schema: &str, role: &str, tables: &[String], sequences: &[String]) -> String {
    let (s, r) = (quote_ident(schema), quote_ident(role));
    let mut sql = String::new();
    for t in tables {
        sql.push_str(&format!(
            "GRANT {} ON TABLE {s}.{} TO {r};\n",
            TABLE_PRIVILEGES.join(", "),
            quote_ident(t)
        ));
    }
    for q in sequences {
        sql.push_str(&format!(
            "GRANT {} ON SEQUENCE {s}.{} TO {r};\n",
            SEQUENCE_PRIVILEGES.join(", "),
            quote_ident(q)
        ));
    }
    sql
}

/// Creates the tenant's NOLOGIN role and makes the application role a member that can
/// `SET ROLE` to it without inheriting its privileges (see `membership`).
pub fn create_tenant_role(role: &str, app_role: &str, server_major: i32) -> String {
    format!(
        "CREATE ROLE {} NOLOGIN;\n{}",
        quote_ident(role),
        membership(role, app_role, server_major)
    )
}

/// Makes the application role a member of the tenant's role that can `SET ROLE` to it
/// without inheriting its privileges. PostgreSQL 16 says so per grant; on 15 inheritance is
/// an attribute of the member, so the application role must be NOINHERIT (checked before
/// anything is granted). Granting it again changes nothing.
pub fn membership(role: &str, app_role: &str, server_major: i32) -> String {
    let r = quote_ident(role);
    let a = quote_ident(app_role);
    if server_major >= 16 {
        format!("GRANT {r} TO {a} WITH INHERIT FALSE, SET TRUE;\n")
    } else {
        format!("GRANT {r} TO {a};\n")
    }
}

/// The role a restore runs as: it can log in nowhere, create nothing outside the schema
/// tenantctl gives it, create no role and read no other schema or the registry. tenantctl's
/// role becomes a member so that it can `SET ROLE` to it and take its objects over.
pub fn create_restore_role(role: &str, server_major: i32) -> String {
    let r = quote_ident(role);
    let grant = if server_major >= 16 {
        format!("GRANT {r} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE;\n")
    } else {
        format!("GRANT {r} TO CURRENT_USER;\n")
    };
    format!(
        "CREATE ROLE {r} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;\n{grant}"
    )
}

/// Gives everything the restore role made in this database to tenantctl's role.
pub fn take_over_restored(role: &str) -> String {
    format!("REASSIGN OWNED BY {} TO CURRENT_USER;\n", quote_ident(role))
}

/// Removes the restore role with whatever it still owns in this database (a staged copy
/// that was never swapped in).
pub fn drop_restore_role(role: &str) -> String {
    let r = quote_ident(role);
    format!("DROP OWNED BY {r};\nDROP ROLE {r};\n")
}

/// Removes a tenant's role, after its schema (and with it every privilege) is gone.
pub fn drop_tenant_role(role: &str) -> String {
    format!("DROP ROLE IF EXISTS {};\n", quote_ident(role))
}

/// A schema privilege's grantee as SQL: a quoted role, or the keyword PUBLIC.
fn grantee_sql(grantee: &str) -> String {
    if grantee == "PUBLIC" {
        "PUBLIC".to_string()
    } else {
        quote_ident(grantee)
    }
}

/// Revokes every privilege on the schema from each grantee (suspend). Without USAGE on the
/// schema nothing in it can be reached, whatever the tables' own grants say, so those are
/// left alone and the data is untouched.
pub fn revoke_schema(schema: &str, grantees: &[&str]) -> String {
    let s = quote_ident(schema);
    grantees
        .iter()
        .map(|g| format!("REVOKE ALL ON SCHEMA {s} FROM {};\n", grantee_sql(g)))
        .collect()
}

/// Grants one schema privilege back (resume). `privilege` is USAGE or CREATE, as read from
/// the schema's ACL by the registry; anything else is refused, never spliced into SQL.
pub fn grant_schema(
    schema: &str,
    grantee: &str,
    privilege: &str,
    grantable: bool,
) -> Option<String> {
    let privilege = match privilege {
        "USAGE" => "USAGE",
        "CREATE" => "CREATE",
        _ => return None,
    };
    Some(format!(
        "GRANT {privilege} ON SCHEMA {} TO {}{};\n",
        quote_ident(schema),
        grantee_sql(grantee),
        if grantable { " WITH GRANT OPTION" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_is_quoted() {
        let sql = before_migrations("tenant_a-b", Some("app\"x"));
        assert!(
            sql.contains("SCHEMA \"tenant_a-b\" TO \"app\"\"x\""),
            "{sql}"
        );
        let sql = after_migrations("tenant_a-b", Some("app"));
        assert!(
            sql.contains("REVOKE ALL ON \"tenant_a-b\".refinery_schema_history FROM \"app\""),
            "{sql}"
        );
    }

    #[test]
    fn tenant_roles_are_set_role_only() {
        let pg16 = create_tenant_role("tenant_a-b", "app", 16);
        assert!(
            pg16.contains("GRANT \"tenant_a-b\" TO \"app\" WITH INHERIT FALSE, SET TRUE"),
            "{pg16}"
        );
        let pg15 = create_tenant_role("tenant_a-b", "app", 15);
        assert!(
            pg15.contains("CREATE ROLE \"tenant_a-b\" NOLOGIN") && !pg15.contains("INHERIT"),
            "{pg15}"
        );
    }

    #[test]
    fn without_an_app_role_only_public_is_revoked() {
        assert_eq!(
            before_migrations("t", None),
            "REVOKE ALL ON SCHEMA \"t\" FROM PUBLIC;\n"
        );
        assert_eq!(after_migrations("t", None), "");
        assert_eq!(after_create("t", None), "");
    }

    #[test]
    fn a_new_tenant_keeps_what_its_migrations_narrowed() {
        // Default privileges covered the tables; nothing is granted again after migrating.
        let sql = after_create("tenant_a-b", Some("app"));
        assert_eq!(
            sql,
            "REVOKE ALL ON \"tenant_a-b\".refinery_schema_history FROM \"app\";\n"
        );
        let sql = fill_in("t", "app", &["we\"ird".into()], &["s_id_seq".into()]);
        assert!(
            sql.contains(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE \"t\".\"we\"\"ird\" TO \"app\""
            ) && sql.contains("GRANT USAGE, SELECT ON SEQUENCE \"t\".\"s_id_seq\" TO \"app\""),
            "{sql}"
        );
    }
}
