//! Tenant slugs, schema names, and the one function that quotes identifiers.
//!
//! Every identifier that reaches SQL goes through [`quote_ident`]; nothing else in the
//! project builds a quoted name. Slugs are checked here before any statement is sent.

use std::fmt;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1). Longer names are silently truncated by
/// the server, which could make two tenants share a schema, so they are refused instead.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// How `restore` names what it makes for itself (its scratch database and role, and the
/// schema a replacing copy is staged in), followed by its process id: nothing else is
/// ever called so, which is what lets a failed restore's leftovers be dropped whole.
pub const RESTORE_PREFIX: &str = "tenantctl_restore_";

/// Why a slug or schema name was refused. The text is what the operator sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

const SLUG_RULE: &str =
    "a slug is 1 or more of a-z, 0-9, '-' and '_', starting with a letter or a digit";

/// Double-quotes an identifier for SQL, doubling any embedded quote (libpq's rules).
/// This is the only place the project quotes identifiers.
pub fn quote_ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// The search_path of a tenant's migration transaction: its schema, then `pg_temp`. Listed
/// last, `pg_temp` cannot shadow the tenant's tables (unlisted, it is searched first), and a
/// migration's `SET search_path FROM CURRENT` captures this safe form.
pub fn tenant_search_path(schema: &str) -> String {
    format!("{}, pg_temp", quote_ident(schema))
}

/// The names in a search_path as PostgreSQL stores it (`"tenant_a-b", public`): quoted
/// names unquoted, unquoted ones folded to lower case as the server does.
pub fn split_search_path(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                    '"' => break,
                    c => name.push(c),
                }
            }
            while chars.next_if(|c| *c != ',').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                name.push(c.to_ascii_lowercase());
            }
            name = name.trim_end().to_string();
        }
        if !name.is_empty() {
            names.push(name);
        }
        if chars.next().is_none() {
            return names;
        }
    }
}

/// A function's pinned search_path for its schema's new name: each `from` becomes `to`,
/// the rest is kept in order, and `pg_temp` is put last (when it is not listed, temporary
/// tables are searched first and could stand in for the tenant's).
pub fn repin_search_path(value: &str, from: &str, to: &str) -> String {
    let mut parts: Vec<String> = split_search_path(value)
        .into_iter()
        .filter(|n| n != "pg_temp")
        .map(|n| quote_ident(if n == from { to } else { &n }))
        .collect();
    parts.push("pg_temp".to_string());
    parts.join(", ")
}

/// Checks a slug against the contract's rule and returns it unchanged when valid.
pub fn validate_slug(slug: &str) -> Result<&str, NameError> {
    let mut chars = slug.chars();
    let Some(first) = chars.next() else {
        return Err(NameError(format!(
            "invalid tenant slug '': it is empty; {SLUG_RULE}"
        )));
    };
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError(format!(
            "invalid tenant slug {}: it starts with {}; {SLUG_RULE}",
            show(slug),
            show_char(first)
        )));
    }
    if let Some(bad) = slug
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(NameError(format!(
            "invalid tenant slug {}: it contains {}; {SLUG_RULE}",
            show(slug),
            show_char(bad)
        )));
    }
    Ok(slug)
}

/// Builds and checks the schema name `<prefix><slug>` for an already valid slug.
pub fn schema_name(prefix: &str, slug: &str) -> Result<String, NameError> {
    let name = format!("{prefix}{slug}");
    check_schema_name(&name)?;
    Ok(name)
}

/// Refuses schema names PostgreSQL would truncate or reserves for itself.
pub fn check_schema_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(NameError(format!(
            "schema name {} is {} bytes; PostgreSQL allows at most {MAX_IDENTIFIER_BYTES} \
             (it would silently truncate it), so use a shorter slug or schema_prefix",
            show(name),
            name.len()
        )));
    }
    if name.starts_with("pg_") || name == "information_schema" || name == "public" {
        return Err(NameError(format!(
            "schema name {} is reserved by PostgreSQL; choose another slug or schema_prefix",
            show(name)
        )));
    }
    Ok(())
}

/// Checks a schema prefix from the configuration: the same characters as a slug, or empty.
pub fn validate_prefix(prefix: &str) -> Result<(), NameError> {
    if prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(NameError(format!(
            "schema_prefix {} may only hold a-z, 0-9, '-' and '_'",
            show(prefix)
        )))
    }
}

/// Shows a user-supplied string safely in a message: quoted, control characters escaped.
fn show(s: &str) -> String {
    format!("'{}'", s.escape_debug())
}

fn show_char(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        c if c.is_ascii_uppercase() => format!("upper-case '{c}'"),
        c if !c.is_ascii() => format!("non-ASCII '{}'", c.escape_debug()),
        c => format!("'{}'", c.escape_debug()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_identifier_and_doubles_quotes() {
        assert_eq!(quote_ident("tenant_acme"), "\"tenant_acme\"");
        assert_eq!(quote_ident("tenant_a-b"), "\"tenant_a-b\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn accepts_contract_slugs() {
        for ok in ["acme", "a", "0", "9lives", "st-mary_s", "a--b", "a__"] {
            assert_eq!(validate_slug(ok), Ok(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_the_rule() {
        for bad in [
            "",
            "Acme",
            "ac me",
            "-acme",
            "_acme",
            "acme;",
            "x'; DROP SCHEMA public CASCADE; --",
            "clínica",
            "a\"b",
            "a.b",
            "a\nb",
            "a\0b",
        ] {
            let err = validate_slug(bad).unwrap_err().to_string();
            assert!(err.contains("a-z, 0-9"), "{bad:?}: {err}");
            assert!(!err.contains('\n') && !err.contains('\0'), "{bad:?}: {err}");
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(validate_slug("Acme")
            .unwrap_err()
            .0
            .contains("upper-case 'A'"));
        assert!(validate_slug("a b").unwrap_err().0.contains("a space"));
        assert!(validate_slug("é").unwrap_err().0.contains("non-ASCII"));
    }

    #[test]
    fn schema_names_are_limited_to_63_bytes() {
        let slug63 = "a".repeat(63 - "tenant_".len());
        assert_eq!(schema_name("tenant_", &slug63).unwrap().len(), 63);
        let err = schema_name("tenant_", &format!("{slug63}b")).unwrap_err();
        assert!(err.0.contains("64 bytes"), "{err}");
    }

    #[test]
    fn reserved_schema_names_are_refused() {
        for bad in ["public", "pg_x", "information_schema"] {
            assert!(schema_name("", bad).is_err(), "{bad}");
        }
        assert!(schema_name("pg_", "x").is_err());
        assert!(schema_name("tenant_", "public").is_ok());
    }

    #[test]
    fn search_paths_are_split_as_postgresql_stores_them() {
        assert_eq!(
            split_search_path("\"tenant_a-b\", Public ,pg_temp"),
            ["tenant_a-b", "public", "pg_temp"]
        );
        assert_eq!(
            split_search_path("\"we\"\"ird, x\", \"$user\""),
            ["we\"ird, x", "$user"]
        );
        assert!(split_search_path("\"\"").is_empty());
    }

    #[test]
    fn repinned_search_paths_keep_pg_temp_last() {
        assert_eq!(
            repin_search_path("tenant_acme", "tenant_acme", "tenant_acme-copy"),
            "\"tenant_acme-copy\", pg_temp"
        );
        assert_eq!(
            repin_search_path("pg_temp, tenant_acme, public", "tenant_acme", "t2"),
            "\"t2\", \"public\", pg_temp"
        );
        // A function that names no tenant schema keeps its path.
        assert_eq!(
            repin_search_path("pg_catalog, pg_temp", "tenant_acme", "t2"),
            "\"pg_catalog\", pg_temp"
        );
        assert_eq!(tenant_search_path("tenant_a-b"), "\"tenant_a-b\", pg_temp");
    }

    #[test]
    fn prefixes_follow_slug_characters() {
        assert!(validate_prefix("tenant_").is_ok());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("Tenant").is_err());
        assert!(validate_prefix("t\"").is_err());
    }
}
