//! The privileges of a tenant schema. The owner is the role tenantctl connects as; the
//! configured application role gets data access only (no CREATE, no registry writes), and
//! PUBLIC gets nothing.

use crate::apply::history_table;
use crate::names::quote_ident;

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

/// Statements run after the migrations: cover anything default privileges missed, and take
/// the migration history away from the application (it must not mark migrations applied).
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
    fn without_an_app_role_only_public_is_revoked() {
        assert_eq!(
            before_migrations("t", None),
            "REVOKE ALL ON SCHEMA \"t\" FROM PUBLIC;\n"
        );
        assert_eq!(after_migrations("t", None), "");
    }
}
