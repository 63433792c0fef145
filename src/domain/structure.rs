//! A tenant schema's structure as the catalog describes it, and the differences between two
//! of them (a tenant's and the reference its migration files build). Pure logic: the catalog
//! is read in `tenant::structure`.
//!
//! Everything schema-specific is normalised away before the comparison: the schema's own
//! name inside definitions (`nextval('tenant_x.employees_id_seq'::regclass)`, `REFERENCES
//! tenant_x.departments(id)`, a function's pinned `search_path=tenant_x`) and OIDs (never
//! read). Object names are compared as they are: migrations name them the same in every
//! schema.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the catalog says about one object of a schema. Objects are keyed by their kind and
/// name (a column or constraint by table and name, a function by its identity arguments).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A table, partitioned table, view, materialized view or foreign table.
    Table(String),
    Column(String, String),
    Index(String),
    Constraint(String, String),
    Sequence(String),
    /// name(identity arguments)
    Function(String),
    Trigger(String, String),
}

/// The attributes compared for an object. Columns compare type, nullability and default
/// each on their own (their own finding kinds); everything else compares one definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    /// A column's type (`format_type`), else the object's whole normalised definition.
    pub definition: String,
    /// Columns: NOT NULL.
    pub not_null: bool,
    /// Columns: the default expression (identity and generated columns say so here).
    pub default: Option<String>,
}

/// One schema's structure.
pub type Structure = BTreeMap<Key, Attrs>;

/// One structural difference, as `verify --structure` and `adopt` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// A stable identifier: see `KINDS`.
    pub kind: &'static str,
    /// The object: `employees`, `employees.email`, `employees_email_lower_key`, ...
    pub object: String,
    /// What the files build and what the schema has, in words.
    pub detail: String,
}

/// Every kind of finding the comparison reports (docs/switching.md documents them).
pub const KINDS: &[&str] = &[
    "missing_table",
    "extra_table",
    "table_changed",
    "missing_column",
    "extra_column",
    "type_changed",
    "nullability_changed",
    "default_changed",
    "missing_index",
    "extra_index",
    "index_changed",
    "missing_constraint",
    "extra_constraint",
    "constraint_changed",
    "missing_sequence",
    "extra_sequence",
    "sequence_changed",
    "missing_function",
    "extra_function",
    "function_changed",
    "missing_trigger",
    "extra_trigger",
    "trigger_changed",
];

impl Key {
    fn noun(&self) -> &'static str {
        match self {
            Key::Table(_) => "table",
            Key::Column(..) => "column",
            Key::Index(_) => "index",
            Key::Constraint(..) => "constraint",
            Key::Sequence(_) => "sequence",
            Key::Function(_) => "function",
            Key::Trigger(..) => "trigger",
        }
    }

    /// The object as an operator names it.
    pub fn object(&self) -> String {
        match self {
            Key::Table(n) | Key::Index(n) | Key::Sequence(n) | Key::Function(n) => n.clone(),
            Key::Column(t, c) => format!("{t}.{c}"),
            Key::Constraint(t, c) | Key::Trigger(t, c) => format!("{c} on {t}"),
        }
    }

    /// The table an object belongs to, when it belongs to one.
    fn table(&self) -> Option<&str> {
        match self {
            Key::Column(t, _) | Key::Constraint(t, _) | Key::Trigger(t, _) => Some(t),
            _ => None,
        }
    }

    fn kind(&self, what: &str) -> &'static str {
        let noun = self.noun();
        let name = if what == "changed" {
            format!("{noun}_changed")
        } else {
            format!("{what}_{noun}")
        };
        KINDS
            .iter()
            .find(|k| **k == name)
            .copied()
            .expect("every noun has its missing/extra/changed kinds")
    }
}

/// Replaces the schema's own name in a definition: `"tenant_x".` or `tenant_x.` before an
/// object name is dropped (as if the schema were on the search_path), and any other mention
/// (a pinned `search_path=tenant_x`, quoted or not) becomes `@schema`. PostgreSQL prints a
/// name quoted only when it must, but a stored setting keeps the form it was given, so both
/// forms are replaced.
pub fn normalise(text: &str, schema: &str) -> String {
    if schema.is_empty() {
        return text.to_string();
    }
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    let mut out = text
        .replace(&format!("{quoted}."), "")
        .replace(&quoted, "@schema");
    if is_plain_identifier(schema) {
        out = replace_word(&out, &format!("{schema}."), "");
        out = replace_word(&out, schema, "@schema");
    }
    out
}

/// Whether PostgreSQL reads `name` unquoted as itself: lower-case letters, digits, `_`, `$`,
/// not starting with a digit or `$`.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

/// Replaces `from` in `text` where it is not part of a longer identifier (the characters
/// around it are not letters, digits, `_` or `$`).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().last().or_else(|| out.chars().last());
        let after = rest[i + from.len()..].chars().next();
        let starts_word = !from.starts_with(ident) || !before.is_some_and(ident);
        let ends_word = !from.ends_with(ident) || !after.is_some_and(ident);
        out.push_str(&rest[..i]);
        if starts_word && ends_word {
            out.push_str(to);
        } else {
            out.push_str(from);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The differences of `actual` from `reference` (what the migration files build), in the
/// order of `Key`. A missing or extra table is reported once, not with each of its columns,
/// constraints and triggers.
pub fn diff(reference: &Structure, actual: &Structure) -> Vec<Drift> {
    let mut out = Vec::new();
    let table_gone = |s: &Structure, k: &Key| {
        k.table()
            .is_some_and(|t| !s.contains_key(&Key::Table(t.to_string())))
    };
    for (key, want) in reference {
        match actual.get(key) {
            None if table_gone(actual, key) => {}
            None => out.push(Drift {
                kind: key.kind("missing"),
                object: key.object(),
                detail: format!(
                    "the migration files create {} {}; the schema lacks it",
                    key.noun(),
                    key.object()
                ),
            }),
            Some(have) => out.extend(changed(key, want, have)),
        }
    }
    for key in actual.keys() {
        if !reference.contains_key(key) && !table_gone(reference, key) {
            out.push(Drift {
                kind: key.kind("extra"),
                object: key.object(),
                detail: format!(
                    "{} {} is not created by the migration files",
                    key.noun(),
                    key.object()
                ),
            });
        }
    }
    out.sort_by(|a, b| (&a.object, a.kind).cmp(&(&b.object, b.kind)));
    out
}

/// The differences of one object present on both sides.
fn changed(key: &Key, want: &Attrs, have: &Attrs) -> Vec<Drift> {
    let mut out = Vec::new();
    let object = key.object();
    let shown = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".to_string());
    if let Key::Column(..) = key {
        if want.definition != have.definition {
            out.push(Drift {
                kind: "type_changed",
                object: object.clone(),
                detail: format!(
                    "type is {}, the migration files make it {}",
                    have.definition, want.definition
                ),
            });
        }
        if want.not_null != have.not_null {
            let says = |n: bool| if n { "NOT NULL" } else { "nullable" };
            out.push(Drift {
                kind: "nullability_changed",
                object: object.clone(),
                detail: format!(
                    "{}, the migration files make it {}",
                    says(have.not_null),
                    says(want.not_null)
                ),
            });
        }
        if want.default != have.default {
            out.push(Drift {
                kind: "default_changed",
                object,
                detail: format!(
                    "default is {}, the migration files make it {}",
                    shown(&have.default),
                    shown(&want.default)
                ),
            });
        }
        return out;
    }
    if want.definition != have.definition {
        let detail = if let Key::Function(_) = key {
            // A function's whole text is too long to show twice; `\sf` shows it.
            "its definition (result, language, settings or body) differs from the one the \
             migration files create"
                .to_string()
        } else {
            format!(
                "defined as `{}`, the migration files define it as `{}`",
                have.definition, want.definition
            )
        };
        out.push(Drift {
            kind: key.kind("changed"),
            object,
            detail,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: &str, not_null: bool, default: Option<&str>) -> Attrs {
        Attrs {
            definition: ty.into(),
            not_null,
            default: default.map(str::to_string),
        }
    }

    fn def(d: &str) -> Attrs {
        Attrs {
            definition: d.into(),
            ..Attrs::default()
        }
    }

    fn reference() -> Structure {
        let mut s = Structure::new();
        s.insert(Key::Table("employees".into()), def("r"));
        s.insert(
            Key::Column("employees".into(), "id".into()),
            col("bigint", true, Some("identity always")),
        );
        s.insert(
            Key::Column("employees".into(), "email".into()),
            col("text", true, None),
        );
        s.insert(
            Key::Column("employees".into(), "active".into()),
            col("boolean", true, Some("true")),
        );
        s.insert(
            Key::Index("employees_email_lower_key".into()),
            def("CREATE UNIQUE INDEX employees_email_lower_key ON employees USING btree (lower(email))"),
        );
        s.insert(
            Key::Constraint("employees".into(), "employees_pkey".into()),
            def("PRIMARY KEY (id)"),
        );
        s.insert(Key::Function("f()".into()), def("trigger plpgsql ..."));
        s
    }

    fn kinds(d: &[Drift]) -> Vec<(&str, &str)> {
        d.iter().map(|d| (d.kind, d.object.as_str())).collect()
    }

    #[test]
    fn the_same_structure_has_no_drift() {
        assert!(diff(&reference(), &reference()).is_empty());
    }

    #[test]
    fn each_change_has_its_kind() {
        let mut s = reference();
        s.remove(&Key::Column("employees".into(), "email".into()));
        s.insert(
            Key::Column("employees".into(), "active".into()),
            col("boolean", true, Some("false")),
        );
        s.insert(
            Key::Column("employees".into(), "id".into()),
            col("integer", false, Some("identity always")),
        );
        s.insert(
            Key::Index("employees_hot_idx".into()),
            def("CREATE INDEX employees_hot_idx ON employees USING btree (active)"),
        );
        s.remove(&Key::Function("f()".into()));
        s.insert(
            Key::Constraint("employees".into(), "employees_pkey".into()),
            def("PRIMARY KEY (id, email)"),
        );
        let drift = diff(&reference(), &s);
        let found: std::collections::BTreeSet<(&str, &str)> = kinds(&drift).into_iter().collect();
        let want: std::collections::BTreeSet<(&str, &str)> = [
            ("missing_column", "employees.email"),
            ("type_changed", "employees.id"),
            ("nullability_changed", "employees.id"),
            ("default_changed", "employees.active"),
            ("extra_index", "employees_hot_idx"),
            ("constraint_changed", "employees_pkey on employees"),
            ("missing_function", "f()"),
        ]
        .into_iter()
        .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn a_missing_table_is_one_finding_not_one_per_column() {
        let mut s = reference();
        s.retain(|k, _| k.table().is_none() && *k != Key::Table("employees".into()));
        let d = diff(&reference(), &s);
        assert_eq!(kinds(&d), vec![("missing_table", "employees")]);
        let d = diff(&s, &reference());
        assert_eq!(kinds(&d), vec![("extra_table", "employees")]);
    }

    #[test]
    fn the_schema_name_is_normalised_away() {
        assert_eq!(
            normalise("nextval('tenant_a.employees_id_seq'::regclass)", "tenant_a"),
            "nextval('employees_id_seq'::regclass)"
        );
        assert_eq!(
            normalise(
                "FOREIGN KEY (d) REFERENCES \"tenant_a-b\".departments(id)",
                "tenant_a-b"
            ),
            "FOREIGN KEY (d) REFERENCES departments(id)"
        );
        assert_eq!(
            normalise("search_path=tenant_a", "tenant_a"),
            "search_path=@schema"
        );
        assert_eq!(
            normalise("search_path=tenant_a, pg_temp", "tenant_a"),
            "search_path=@schema, pg_temp"
        );
        assert_eq!(normalise("data.x = a.y", "a"), "data.x = y");
        // A stored setting keeps the quotes it was given, needed or not.
        assert_eq!(
            normalise("SET search_path TO '\"tenant_a\", pg_temp'", "tenant_a"),
            "SET search_path TO '@schema, pg_temp'"
        );
        assert_eq!(
            normalise("SET search_path TO '\"tenant_a-b\", pg_temp'", "tenant_a-b"),
            "SET search_path TO '@schema, pg_temp'"
        );
        // Another schema's name is kept: that is drift.
        assert_eq!(
            normalise("REFERENCES tenant_ab.departments(id)", "tenant_a"),
            "REFERENCES tenant_ab.departments(id)"
        );
    }

    #[test]
    fn every_kind_is_listed() {
        for noun in [
            "table",
            "column",
            "index",
            "constraint",
            "sequence",
            "function",
            "trigger",
        ] {
            for what in ["missing", "extra"] {
                assert!(KINDS.contains(&format!("{what}_{noun}").as_str()));
            }
        }
    }
}
