//! What a tenant migration may hold when its schema is a Citus distributed schema: the
//! statements Citus cannot run there, found in the files before any tenant is touched.
//! Pure: no database. (docs/citus.md lists the rules and why.)
//!
//! Checked here, from the statements' shape (strings and function bodies are opaque):
//! - a trigger's function must not resolve names through the search_path: it runs on the
//!   worker, where the search_path is not the tenant's. It must be created by these
//!   migrations with a pinned `SET search_path` (in its definition or a later
//!   `ALTER FUNCTION ... SET search_path`), or be a `pg_catalog` function;
//! - `ALTER TABLE ... ADD COLUMN` of a serial type, an identity, or a `nextval()` default,
//!   and `ALTER COLUMN ... ADD GENERATED ... AS IDENTITY`: Citus refuses them on a table
//!   whose metadata is synced to the workers;
//! - `ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY` (which only a `-- no-transaction`
//!   file can hold): Citus 13 refuses it ("currently unsupported"). The other statements of
//!   such files pass the same rules as any migration's.
//!
//! Foreign keys to a schema-qualified table (outside the tenant's schema) are collected, not
//! refused: whether the table is a Citus reference table is known only on the server
//! (`tenant::citus` checks them before any tenant is touched).

use std::collections::BTreeMap;

use crate::domain::sql_split::{self, Piece, Statement};

/// A statement Citus cannot run, with where it is and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub file: String,
    pub line: usize,
    /// The statement's first line, shortened.
    pub statement: String,
    pub rule: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migration {} line {} (`{}`) cannot run in a Citus distributed schema: {}",
            self.file, self.line, self.statement, self.rule
        )
    }
}

/// A foreign key to a table outside the tenant's schema (`REFERENCES schema.table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideReference {
    pub file: String,
    pub line: usize,
    pub statement: String,
    pub schema: String,
    pub table: String,
}

/// What the files need from a Citus transaction, once they passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some file creates a trigger (all of them checked safe): the transaction needs
    /// `citus.enable_unsafe_triggers`.
    pub triggers: bool,
    pub outside_references: Vec<OutsideReference>,
}

/// Checks `files` (name, SQL), in order; the first statement Citus cannot run is refused.
pub fn check(files: &[(String, String)]) -> Result<Needs, Refusal> {
    let mut needs = Needs::default();
    // Each function the files define, by name: whether its search_path is pinned.
    let mut functions: BTreeMap<String, bool> = BTreeMap::new();
    // Functions some trigger runs: redefining one unpinned would break its trigger.
    let mut trigger_functions: BTreeMap<String, ()> = BTreeMap::new();
    for (file, sql) in files {
        let statements = match sql_split::split(sql) {
            Ok(s) => s,
            // The migration runner reports unreadable files; nothing to check here.
            Err(_) => continue,
        };
        for st in &statements {
            let refuse = |rule: String| Refusal {
                file: file.clone(),
                line: st.line,
                statement: excerpt(st),
                rule,
            };
            let p = st.pieces();
            match shape(&p) {
                Shape::Function { name, pinned } => {
                    if !pinned && trigger_functions.contains_key(&name) {
                        return Err(refuse(format!(
                            "it redefines {name}(), which a trigger runs, without a pinned \
                             search_path; {PIN_ADVICE}"
                        )));
                    }
                    functions.insert(name, pinned);
                }
                Shape::AlterFunction { name, pinned } => {
                    if let Some(p) = pinned {
                        if !p && trigger_functions.contains_key(&name) {
                            return Err(refuse(format!(
                                "it resets the search_path of {name}(), which a trigger runs; \
                                 {PIN_ADVICE}"
                            )));
                        }
                        functions.insert(name, p);
                    }
                }
                Shape::Trigger { function } => {
                    needs.triggers = true;
                    let (schema, name) = function;
                    if schema.as_deref() == Some("pg_catalog") {
                        continue;
                    }
                    match functions.get(&name) {
                        Some(true) => {
                            trigger_functions.insert(name, ());
                        }
                        Some(false) => {
                            return Err(refuse(format!(
                                "its function {name}() resolves names through the search_path, \
                                 and a trigger runs on the worker node, where the search_path is \
                                 not the tenant's; {PIN_ADVICE}"
                            )))
                        }
                        None => {
                            return Err(refuse(format!(
                                "its function {name}() is not created by these migrations, so \
                                 tenantctl cannot tell whether it resolves names through the \
                                 search_path (a trigger runs on the worker node, where the \
                                 search_path is not the tenant's); create the function in a \
                                 tenant migration with {PIN}"
                            )))
                        }
                    }
                }
                Shape::AlterTable => {
                    if let Some(rule) = added_sequence_column(&p)
                        .or_else(|| added_unnamed_check(&p))
                        .or_else(|| detached_concurrently(&p))
                    {
                        return Err(refuse(rule));
                    }
                }
                Shape::Other => {}
            }
            for (schema, table) in qualified_references(&p) {
                needs.outside_references.push(OutsideReference {
                    file: file.clone(),
                    line: st.line,
                    statement: excerpt(st),
                    schema,
                    table,
                });
            }
        }
    }
    Ok(needs)
}

const PIN: &str = "`SET search_path = pg_catalog, pg_temp` (and schema-qualified names, or \
                   TG_TABLE_SCHEMA) or `SET search_path FROM CURRENT`";
const PIN_ADVICE: &str = "pin it in the function's definition with `SET search_path = \
                          pg_catalog, pg_temp` (naming tables through TG_TABLE_SCHEMA) or `SET \
                          search_path FROM CURRENT`, or with ALTER FUNCTION ... SET search_path";

/// The statement's first line, at most 80 characters.
fn excerpt(st: &Statement<'_>) -> String {
    let first = st.text.lines().next().unwrap_or_default().trim();
    if first.chars().count() > 80 {
        format!("{}...", first.chars().take(77).collect::<String>())
    } else {
        first.to_string()
    }
}

enum Shape {
    /// `CREATE [OR REPLACE] FUNCTION | PROCEDURE name`.
    Function {
        name: String,
        pinned: bool,
    },
    /// `ALTER FUNCTION name ... SET search_path` (Some(true)) or `RESET search_path | ALL`
    /// (Some(false)); None for anything else.
    AlterFunction {
        name: String,
        pinned: Option<bool>,
    },
    /// `CREATE [OR REPLACE] [CONSTRAINT] TRIGGER ... EXECUTE FUNCTION | PROCEDURE [schema.]name`.
    Trigger {
        function: (Option<String>, String),
    },
    AlterTable,
    Other,
}

fn words(p: &[Piece], n: usize) -> Vec<&str> {
    p.iter()
        .take(n)
        .map_while(|x| match x {
            Piece::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

fn shape(p: &[Piece]) -> Shape {
    let lead = words(p, 4);
    let after_create = match lead.as_slice() {
        ["create", "or", "replace", rest @ ..] => rest,
        ["create", rest @ ..] => rest,
        ["alter", "function" | "procedure", ..] => {
            let (_, name, next) = qualified_name(p, 2);
            let rest: Vec<&Piece> = p.iter().skip(next).collect();
            let pinned = set_search_path_at_top(&rest)
                .then_some(true)
                .or_else(|| resets_search_path(&rest).then_some(false));
            return Shape::AlterFunction {
                name: name.unwrap_or_default(),
                pinned,
            };
        }
        ["alter", "table", ..] => return Shape::AlterTable,
        _ => return Shape::Other,
    };
    match after_create.first().copied() {
        Some("function" | "procedure") => {
            let at = lead.len() - after_create.len() + 1;
            let (_, name, _) = qualified_name(p, at);
            let all: Vec<&Piece> = p.iter().collect();
            Shape::Function {
                name: name.unwrap_or_default(),
                pinned: set_search_path_at_top(&all),
            }
        }
        Some("trigger" | "constraint") => {
            let Some(i) = p.windows(2).position(|w| {
                w[0].is_word("execute") && (w[1].is_word("function") || w[1].is_word("procedure"))
            }) else {
                return Shape::Other;
            };
            let (schema, name, _) = qualified_name(p, i + 2);
            Shape::Trigger {
                function: (schema, name.unwrap_or_default()),
            }
        }
        _ => Shape::Other,
    }
}

/// `[schema.]name` starting at `i`: (schema, name, the index after it).
fn qualified_name(p: &[Piece], i: usize) -> (Option<String>, Option<String>, usize) {
    let first = p.get(i).and_then(Piece::ident).map(str::to_string);
    if matches!(p.get(i + 1), Some(Piece::Other(d)) if d == ".") {
        let second = p.get(i + 2).and_then(Piece::ident).map(str::to_string);
        return (first, second, i + 3);
    }
    (None, first, i + 1)
}

/// `SET search_path` outside parentheses (a routine's option, not inside its body, which is
/// a literal).
fn set_search_path_at_top(p: &[&Piece]) -> bool {
    let mut depth = 0usize;
    for (i, x) in p.iter().enumerate() {
        match x {
            Piece::Open => depth += 1,
            Piece::Close => depth = depth.saturating_sub(1),
            Piece::Word(w)
                if w == "set"
                    && depth == 0
                    && p.get(i + 1).is_some_and(|n| n.is_word("search_path")) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

fn resets_search_path(p: &[&Piece]) -> bool {
    p.windows(2)
        .any(|w| w[0].is_word("reset") && (w[1].is_word("search_path") || w[1].is_word("all")))
}

/// In an `ALTER TABLE`, an added column whose values come from a sequence, or an identity
/// added to a column: the rule it breaks.
fn added_sequence_column(p: &[Piece]) -> Option<String> {
    const SERIALS: [&str; 6] = [
        "serial",
        "bigserial",
        "smallserial",
        "serial4",
        "serial8",
        "serial2",
    ];
    for action in top_level_actions(p) {
        let w: Vec<&str> = action
            .iter()
            .filter_map(|x| match x {
                Piece::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        let generated_identity = w.contains(&"generated") && w.contains(&"identity");
        if w.first() == Some(&"alter") && generated_identity && w.contains(&"add") {
            return Some(
                "Citus cannot add an identity to a column of a distributed table; create the \
                 table with the identity column instead"
                    .into(),
            );
        }
        if w.first() != Some(&"add") {
            continue;
        }
        let mut i = 1;
        if w.get(i) == Some(&"column") {
            i += 1;
        }
        if w.get(i..i + 3) == Some(&["if", "not", "exists"]) {
            i += 3;
        }
        let constraint = [
            "constraint",
            "primary",
            "unique",
            "check",
            "foreign",
            "exclude",
        ];
        if w.get(i).is_some_and(|x| constraint.contains(x)) {
            continue;
        }
        // The column's type is the word after its name (a quoted name is not a word).
        let type_word = action
            .iter()
            .skip(1)
            .skip_while(|x| {
                x.is_word("column") || x.is_word("if") || x.is_word("not") || x.is_word("exists")
            })
            .nth(1)
            .and_then(|x| match x {
                Piece::Word(t) => Some(t.as_str()),
                _ => None,
            });
        let serial = type_word.is_some_and(|t| SERIALS.contains(&t));
        let nextval = w.contains(&"nextval");
        if serial || generated_identity || nextval {
            let what = if serial {
                "a serial column"
            } else if generated_identity {
                "an identity column"
            } else {
                "a column with a nextval() default"
            };
            return Some(format!(
                "Citus cannot add {what} to an existing distributed table (citusdata/citus#4721); \
                 add a plain column (bigint), then in a separate statement create a sequence \
                 and `ALTER COLUMN ... SET DEFAULT nextval(...)`"
            ));
        }
    }
    None
}

/// In an `ALTER TABLE`, a column added with a `CHECK` that has no `CONSTRAINT name`: Citus
/// 13 refuses it ("all constraints in Citus must have explicit names"; tested: an unnamed
/// inline UNIQUE or REFERENCES is accepted, a named CHECK too).
fn added_unnamed_check(p: &[Piece]) -> Option<String> {
    for action in top_level_actions(p) {
        if !action.first().is_some_and(|x| x.is_word("add")) {
            continue;
        }
        // `ADD CHECK (...)` / `ADD CONSTRAINT ...` add a table constraint, which Citus names.
        if action.get(1).is_some_and(|x| {
            [
                "constraint",
                "check",
                "unique",
                "primary",
                "foreign",
                "exclude",
            ]
            .iter()
            .any(|w| x.is_word(w))
        }) {
            continue;
        }
        let mut depth = 0usize;
        for (k, x) in action.iter().enumerate() {
            match x {
                Piece::Open => depth += 1,
                Piece::Close => depth = depth.saturating_sub(1),
                _ if depth == 0 && x.is_word("check") => {
                    let named = k >= 2 && action[k - 2].is_word("constraint");
                    if !named {
                        return Some(
                            "Citus cannot add a column with an unnamed CHECK constraint in one \
                             statement (all constraints in Citus must have explicit names); \
                             name it (`ADD COLUMN c int CONSTRAINT c_positive CHECK (c > 0)`), \
                             or add the column, then `ALTER TABLE ... ADD CONSTRAINT name \
                             CHECK (...)`"
                                .into(),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// An `ALTER TABLE`'s actions: what follows the table name, split at top-level commas.
fn top_level_actions(p: &[Piece]) -> Vec<Vec<Piece>> {
    // Skip `ALTER TABLE [IF EXISTS] [ONLY] name [*]`.
    let mut i = 2;
    while p
        .get(i)
        .is_some_and(|x| x.is_word("if") || x.is_word("exists") || x.is_word("only"))
    {
        i += 1;
    }
    let (_, _, next) = qualified_name(p, i);
    let mut out = vec![Vec::new()];
    let mut depth = 0usize;
    for x in p.iter().skip(next) {
        match x {
            Piece::Open => depth += 1,
            Piece::Close => depth = depth.saturating_sub(1),
            Piece::Other(c) if c == "," && depth == 0 => {
                out.push(Vec::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("one action at least").push(x.clone());
    }
    out
}

/// In an `ALTER TABLE`, `DETACH PARTITION ... CONCURRENTLY`: Citus 13 refuses it on a
/// distributed table ("ALTER TABLE .. DETACH PARTITION .. CONCURRENTLY commands are currently
/// unsupported", tested).
fn detached_concurrently(p: &[Piece]) -> Option<String> {
    let detached = top_level_actions(p).into_iter().any(|action| {
        action.first().is_some_and(|x| x.is_word("detach"))
            && action.iter().any(|x| x.is_word("concurrently"))
    });
    detached.then(|| {
        "Citus cannot detach a partition concurrently (DETACH PARTITION ... CONCURRENTLY is \
         unsupported on a distributed table); detach it without CONCURRENTLY in an ordinary \
         migration (it locks the partitioned table meanwhile)"
            .into()
    })
}

/// `REFERENCES schema.table`: foreign keys to a table outside the tenant's schema (an
/// unqualified name resolves in the tenant's schema only).
fn qualified_references(p: &[Piece]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, x) in p.iter().enumerate() {
        if !x.is_word("references") {
            continue;
        }
        if let (Some(schema), Some(table), _) = qualified_name(p, i + 1) {
            out.push((schema, table));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, s)| (f.to_string(), s.to_string()))
            .collect()
    }

    fn example_migrations() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort_by_key(|n| n[1..n.find("__").unwrap()].parse::<u32>().unwrap());
        names
            .into_iter()
            .map(|n| {
                let sql = std::fs::read_to_string(dir.join(&n)).unwrap();
                (n, sql)
            })
            .collect()
    }

    #[test]
    fn the_example_migrations_pass_and_need_triggers() {
        let needs = check(&example_migrations()).unwrap();
        assert!(needs.triggers);
        assert!(needs.outside_references.is_empty());
    }

    #[test]
    fn a_trigger_on_an_unpinned_function_is_refused_naming_file_line_and_rule() {
        let f = files(&[(
            "V1__t.sql",
            "CREATE TABLE t (id int);\nCREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO log VALUES (1); RETURN NULL; END $$;\nCREATE TRIGGER t_f AFTER INSERT ON t\n FOR EACH ROW EXECUTE FUNCTION f();",
        )]);
        let r = check(&f).unwrap_err();
        assert_eq!((r.file.as_str(), r.line), ("V1__t.sql", 3));
        assert_eq!(r.statement, "CREATE TRIGGER t_f AFTER INSERT ON t");
        assert!(
            r.rule
                .contains("f() resolves names through the search_path"),
            "{r}"
        );
    }

    #[test]
    fn pinned_functions_pass_and_set_search_path_inside_the_body_does_not_count() {
        let pinned = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;\nCREATE TRIGGER a AFTER INSERT ON t FOR EACH ROW EXECUTE PROCEDURE f();";
        assert!(check(&files(&[("V1__a.sql", pinned)])).unwrap().triggers);
        let altered = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;\nALTER FUNCTION f() SET search_path FROM CURRENT;\nCREATE TRIGGER a AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();";
        assert!(check(&files(&[("V1__a.sql", altered)])).is_ok());
        let in_body = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN SET search_path = x; RETURN NULL; END $$;\nCREATE TRIGGER a AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();";
        assert!(check(&files(&[("V1__a.sql", in_body)])).is_err());
        let builtin = "CREATE TRIGGER a BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger();";
        assert!(check(&files(&[("V1__a.sql", builtin)])).is_ok());
        let unknown =
            "CREATE TRIGGER a BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION public.stamp();";
        let r = check(&files(&[("V1__a.sql", unknown)])).unwrap_err();
        assert!(
            r.rule
                .contains("stamp() is not created by these migrations"),
            "{r}"
        );
    }

    #[test]
    fn redefining_a_trigger_function_unpinned_in_a_later_file_is_refused() {
        let v1 = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ BEGIN RETURN NULL; END $$;\nCREATE TRIGGER a AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();";
        let v2 = "-- later\nCREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;";
        let r = check(&files(&[("V1__a.sql", v1), ("V2__b.sql", v2)])).unwrap_err();
        assert_eq!((r.file.as_str(), r.line), ("V2__b.sql", 2));
        assert!(r.rule.contains("redefines f()"), "{r}");
    }

    #[test]
    fn added_serial_identity_and_nextval_columns_are_refused() {
        for sql in [
            "ALTER TABLE t ADD COLUMN n bigserial",
            "ALTER TABLE t ADD n serial NOT NULL",
            "ALTER TABLE IF EXISTS t ADD COLUMN IF NOT EXISTS n bigint GENERATED ALWAYS AS IDENTITY",
            "alter table t add column a int, add column n bigint default nextval('s')",
            "ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY",
        ] {
            let r = check(&files(&[("V9__x.sql", sql)])).unwrap_err();
            assert!(r.rule.contains("Citus cannot add"), "{sql}: {r}");
        }
        for sql in [
            "ALTER TABLE t ADD COLUMN note text DEFAULT 'serial'",
            "ALTER TABLE t ADD COLUMN n bigint",
            "ALTER TABLE t ALTER COLUMN n SET DEFAULT nextval('s')",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (n > 0)",
            "ALTER TABLE t ADD COLUMN \"serial\" text",
            "CREATE TABLE x (id bigserial PRIMARY KEY)",
        ] {
            assert!(check(&files(&[("V9__x.sql", sql)])).is_ok(), "{sql}");
        }
    }

    #[test]
    fn a_column_added_with_an_unnamed_check_is_refused() {
        for sql in [
            "ALTER TABLE t ADD COLUMN c int CHECK (c > 0)",
            "alter table t add c int default 1 check (c > 0)",
            "ALTER TABLE t ADD COLUMN a int, ADD COLUMN b int NOT NULL CHECK (b <> 0)",
        ] {
            let r = check(&files(&[("V9__x.sql", sql)])).unwrap_err();
            assert!(r.rule.contains("unnamed CHECK"), "{sql}: {r}");
        }
        for sql in [
            "ALTER TABLE t ADD COLUMN c int CONSTRAINT c_pos CHECK (c > 0)",
            "ALTER TABLE t ADD COLUMN c int CONSTRAINT \"C pos\" CHECK (c > 0)",
            "ALTER TABLE t ADD CHECK (x > 0)",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0)",
            "ALTER TABLE t ADD COLUMN c int UNIQUE",
            "ALTER TABLE t ADD COLUMN c int DEFAULT check_me(1)",
            "CREATE TABLE x (c int CHECK (c > 0))",
        ] {
            assert!(check(&files(&[("V9__x.sql", sql)])).is_ok(), "{sql}");
        }
    }

    #[test]
    fn qualified_foreign_keys_are_collected_for_the_server_check() {
        let sql = "CREATE TABLE a (id int, plan_id int REFERENCES public.plans (id), b_id int REFERENCES b);\nALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES \"Shared\".\"Codes\"(id);";
        let needs = check(&files(&[("V8__fk.sql", sql)])).unwrap();
        let refs: Vec<(String, String, usize)> = needs
            .outside_references
            .iter()
            .map(|r| (r.schema.clone(), r.table.clone(), r.line))
            .collect();
        assert_eq!(
            refs,
            vec![
                ("public".into(), "plans".into(), 1),
                ("Shared".into(), "Codes".into(), 2)
            ]
        );
    }

    #[test]
    fn no_transaction_files_pass_the_same_rules_and_detach_concurrently_is_refused() {
        let cic = "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\
                   DROP INDEX CONCURRENTLY IF EXISTS j;\nREINDEX TABLE CONCURRENTLY t;";
        assert_eq!(check(&files(&[("V8__idx.sql", cic)])), Ok(Needs::default()));
        let serial = "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\
                      ALTER TABLE t ADD COLUMN n bigserial;";
        let r = check(&files(&[("V8__idx.sql", serial)])).unwrap_err();
        assert_eq!((r.file.as_str(), r.line), ("V8__idx.sql", 3), "{r}");
        let detach = "-- no-transaction\nALTER TABLE ONLY m.parted\n  \
                      DETACH PARTITION parted_2026 CONCURRENTLY;";
        let r = check(&files(&[("V9__detach.sql", detach)])).unwrap_err();
        assert_eq!(r.line, 2, "{r}");
        assert!(r.rule.contains("detach a partition concurrently"), "{r}");
        // Without CONCURRENTLY, in a transaction: not this rule's business.
        let plain = "ALTER TABLE parted DETACH PARTITION parted_2026;";
        assert!(check(&files(&[("V9__detach.sql", plain)])).is_ok());
    }
}
