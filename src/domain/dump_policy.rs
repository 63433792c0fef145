//! What a dump may hold before `restore` lets any of it run. Pure logic, no database.
//!
//! A dump is code: its definitions run as whoever restores it, and its views and
//! `SECURITY DEFINER` functions keep running as their owner afterwards. A dump tenantctl did
//! not make (or one edited at rest) could create roles, rewrite the registry or read another
//! tenant. So before anything is restored:
//! - the table of contents (`pg_restore -l`) must hold exactly one schema, a tenant's, and
//!   nothing outside it; the tenant is taken from that schema, never from the `.json`;
//! - the SQL that would run (`pg_restore -f -` of the schema sections, which executes
//!   nothing) is read statement by statement: only the kinds of statement pg_dump writes for
//!   a schema's own objects, no `SECURITY DEFINER`, no other schema named, no built-in that
//!   runs SQL given as text or reaches files, settings or other sessions, and no function
//!   body that the migrations folder does not define. A function body is opaque text that
//!   cannot be checked for what it does; the migrations folder is the code the operator
//!   already trusts, so only those bodies are accepted.
//!
//! The restore then executes exactly the statements checked here (see `dump_load`).

use std::collections::{BTreeSet, HashSet};

/// A piece of SQL text, as PostgreSQL's lexer would cut it (with standard_conforming_strings
/// on, which the dump's preamble sets and this module requires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An unquoted identifier or key word, ASCII-lower-cased as PostgreSQL folds it.
    Word(String),
    /// A "quoted identifier", unescaped.
    Ident(String),
    /// A string constant's content ('...', E'...', $tag$...$tag$, U&'...', B'...', X'...').
    Str(String),
    Num(String),
    /// A positional parameter ($1).
    Param,
    /// Any other character (punctuation and operator characters, one at a time).
    Punct(char),
    /// A psql backslash command on a line of its own (pg_dump writes `\restrict KEY`).
    Meta(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Cuts SQL text into tokens, skipping white space and comments. Refuses what it cannot
/// read with certainty (an unterminated string or comment).
pub fn lex(text: &str) -> Result<Vec<Token>, String> {
    let b = text.as_bytes();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| chars.get(i).map(|c| c.1);
    let pos = |i: usize| chars.get(i).map_or(b.len(), |c| c.0);
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < n {
        let c = chars[i].1;
        let start = pos(i);
        if c == '\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let was_line_start = line_start;
        line_start = false;
        if c == '-' && at(i + 1) == Some('-') {
            while i < n && chars[i].1 != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && at(i + 1) == Some('*') {
            let mut depth = 0;
            loop {
                match (at(i), at(i + 1)) {
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    (Some(_), _) => i += 1,
                    (None, _) => return Err("an unterminated /* comment".into()),
                }
            }
            continue;
        }
        if c == '\\' && was_line_start {
            let s = i;
            while i < n && chars[i].1 != '\n' {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Meta(text[pos(s)..pos(i)].to_string()),
                start,
                end: pos(i),
            });
            continue;
        }
        // String constants, with their optional one-letter (or U&) prefix.
        let (prefix_len, escapes) = match (c, at(i + 1), at(i + 2)) {
            ('\'', _, _) => (0, false),
            ('e' | 'E', Some('\''), _) => (1, true),
            ('b' | 'B' | 'x' | 'X' | 'n' | 'N', Some('\''), _) => (1, false),
            ('u' | 'U', Some('&'), Some('\'')) => (2, false),
            _ => (usize::MAX, false),
        };
        if prefix_len != usize::MAX {
            i += prefix_len + 1;
            let mut content = String::new();
            loop {
                match at(i) {
                    None => return Err("an unterminated string constant".into()),
                    Some('\\') if escapes => {
                        if let Some(next) = at(i + 1) {
                            content.push(next);
                        }
                        i += 2;
                    }
                    Some('\'') if at(i + 1) == Some('\'') => {
                        content.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        content.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(content),
                start,
                end: pos(i),
            });
            continue;
        }
        // Quoted identifiers (also U&"...").
        let quote_at = if c == '"' {
            Some(i)
        } else if matches!(c, 'u' | 'U') && at(i + 1) == Some('&') && at(i + 2) == Some('"') {
            Some(i + 2)
        } else {
            None
        };
        if let Some(q) = quote_at {
            i = q + 1;
            let mut name = String::new();
            loop {
                match at(i) {
                    None => return Err("an unterminated quoted identifier".into()),
                    Some('"') if at(i + 1) == Some('"') => {
                        name.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        name.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Ident(name),
                start,
                end: pos(i),
            });
            continue;
        }
        if c == '$' {
            if at(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                i += 1;
                while at(i).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Param,
                    start,
                    end: pos(i),
                });
                continue;
            }
            // $tag$ ... $tag$, the tag empty or an identifier without '$'.
            let mut j = i + 1;
            while at(j).is_some_and(|d| is_ident_char(d) && d != '$') {
                j += 1;
            }
            let tag_ok =
                at(j) == Some('$') && (j == i + 1 || at(i + 1).is_some_and(is_ident_start));
            if tag_ok {
                let tag = &text[start..pos(j + 1)];
                let body_start = pos(j + 1);
                let Some(rel) = text[body_start..].find(tag) else {
                    return Err("an unterminated dollar-quoted string".into());
                };
                let body_end = body_start + rel;
                out.push(Token {
                    tok: Tok::Str(text[body_start..body_end].to_string()),
                    start,
                    end: body_end + tag.len(),
                });
                let end = body_end + tag.len();
                while i < n && pos(i) < end {
                    i += 1;
                }
                continue;
            }
        }
        if is_ident_start(c) {
            let s = i;
            while at(i).is_some_and(is_ident_char) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Word(text[pos(s)..pos(i)].to_ascii_lowercase()),
                start,
                end: pos(i),
            });
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let s = i;
            while at(i).is_some_and(|d| d.is_ascii_alphanumeric() || d == '.' || d == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Num(text[pos(s)..pos(i)].to_string()),
                start,
                end: pos(i),
            });
            continue;
        }
        out.push(Token {
            tok: Tok::Punct(c),
            start,
            end: pos(i + 1),
        });
        i += 1;
    }
    Ok(out)
}

/// Statements, each the tokens up to and including its `;`; a psql command is one of its own.
pub fn statements(tokens: &[Token]) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut s = 0;
    for (i, t) in tokens.iter().enumerate() {
        let end = match t.tok {
            Tok::Punct(';') => Some(i + 1),
            Tok::Meta(_) if s == i => Some(i + 1),
            _ => None,
        };
        if let Some(e) = end {
            out.push(&tokens[s..e]);
            s = e;
        }
    }
    if s < tokens.len() {
        out.push(&tokens[s..]);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The table of contents

/// Entry kinds (pg_restore's "desc") a tenant's schema may hold. Anything else (rules,
/// large objects, foreign tables, extensions, casts, operators, event triggers, ...) is
/// refused: migrations of a tenant schema do not make them and each is a way to run code
/// or reach outside the schema.
const KINDS: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "SEQUENCE OWNED BY",
    "CHECK CONSTRAINT",
    "MATERIALIZED VIEW",
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "TABLE ATTACH",
    "SEQUENCE SET",
    "ROW SECURITY",
    "DEFAULT ACL",
    "TABLE DATA",
    "CONSTRAINT",
    "STATISTICS",
    "PROCEDURE",
    "SEQUENCE",
    "FUNCTION",
    "TRIGGER",
    "COMMENT",
    "DEFAULT",
    "DOMAIN",
    "POLICY",
    "INDEX",
    "TABLE",
    "TYPE",
    "VIEW",
    "ACL",
];

/// One line of `pg_restore -l`: `<id>; <tableoid> <oid> <kind> <schema or -> <name> <owner>`.
fn entry(line: &str) -> Option<(u32, &str)> {
    let (id, rest) = line.split_once("; ")?;
    let id: u32 = id.trim().parse().ok()?;
    let mut parts = rest.splitn(3, ' ');
    parts.next()?;
    parts.next()?;
    Some((id, parts.next()?))
}

fn entries(list: &str) -> Vec<(u32, &str, &str)> {
    list.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| entry(l).map(|(id, rest)| (id, rest, l)))
        .collect()
}

/// The schema of a tenant backup: the one `SCHEMA` entry of the table of contents.
pub fn dumped_schema(list: &str) -> Result<String, String> {
    let schemas: Vec<&str> = entries(list)
        .into_iter()
        .filter_map(|(_, rest, _)| rest.strip_prefix("SCHEMA - "))
        .map(|r| r.split(' ').next().unwrap_or_default())
        .collect();
    match schemas.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err("it holds no schema, so it is not a backup of a tenant".into()),
        many => Err(format!(
            "it holds {} schemas ({}); a tenant backup holds exactly one",
            many.len(),
            many.join(", ")
        )),
    }
}

/// Checks the table of contents: `all` is `pg_restore -l`, `inside` is `pg_restore -l -n
/// SCHEMA` (pg_restore's own exact test of which entries belong to the schema). Every entry
/// must be inside the schema and of a known kind, except the schema itself and its ACL or
/// comment (none of which is restored).
pub fn check_toc(all: &str, inside: &str, schema: &str) -> Result<(), String> {
    let inside_ids: HashSet<u32> = entries(inside).into_iter().map(|e| e.0).collect();
    let allowed_outside = [
        format!("SCHEMA - {schema} "),
        format!("ACL - SCHEMA {schema} "),
        format!("COMMENT - SCHEMA {schema} "),
    ];
    for (id, rest, line) in entries(all) {
        if !inside_ids.contains(&id) {
            if allowed_outside.iter().any(|a| rest.starts_with(a.as_str())) {
                continue;
            }
            return Err(format!(
                "entry '{line}' is outside the tenant's schema {schema}"
            ));
        }
        if !KINDS
            .iter()
            .any(|k| rest.starts_with(&format!("{k} {schema} ")))
        {
            return Err(format!(
                "entry '{line}' is of a kind a tenant's migrations do not create"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The SQL that would run

/// What the SQL of a dump is checked against.
pub struct Policy<'a> {
    /// The schemas the dump's objects live in (and may name).
    pub own: Vec<String>,
    /// Every other schema of the database the tenant goes into.
    pub others: BTreeSet<String>,
    /// The string constants of the migrations folder: the function bodies it defines.
    pub bodies: &'a HashSet<String>,
}

/// Schemas that exist in every database and are never the dump's own.
const ALWAYS_OTHER: &[&str] = &["public", "information_schema"];

/// Built-in functions that run SQL passed as text (so can reach any table), read or write
/// files and large objects, change settings for later statements, or reach other
/// databases. Names starting with `pg_` are refused as well (catalogs like pg_authid,
/// pg_read_file, pg_terminate_backend, ...), except the `pg_catalog` qualifier itself.
const DANGEROUS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "set_config",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_open",
    "dblink_send_query",
    "lo_import",
    "lo_export",
    "lo_get",
    "lo_put",
    "lo_open",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_from_bytea",
    "loread",
    "lowrite",
];

/// Settings a dump's preamble sets (pg_dump writes these). Any other `SET` (a role, a
/// session authorization, a search_path) is refused.
const SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "client_encoding",
    "standard_conforming_strings",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_tablespace",
    "default_table_access_method",
];

fn words(stmt: &[Token]) -> Vec<&str> {
    stmt.iter()
        .map_while(|t| match &t.tok {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

fn name_of(t: &Token) -> Option<&str> {
    match &t.tok {
        Tok::Word(w) | Tok::Ident(w) => Some(w),
        _ => None,
    }
}

/// The start of a statement, for messages (DDL only: data never passes through here).
fn show(text: &str, stmt: &[Token]) -> String {
    let (Some(first), Some(last)) = (stmt.first(), stmt.last()) else {
        return String::new();
    };
    let s = text[first.start..last.end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() > 90 {
        format!("{}...", s.chars().take(90).collect::<String>())
    } else {
        s
    }
}

/// What to do with one checked statement.
enum Verdict {
    Run,
    /// `CREATE SCHEMA <own>`: tenantctl creates the schema itself, owned by the restore role.
    Skip,
}

/// Checks the SQL text `pg_restore -f -` (or `pg_dump`) printed for a dump's schema
/// sections, and returns the statements to execute: exactly the checked text, without the
/// psql commands pg_dump adds and without `CREATE SCHEMA` of the dump's own schema.
pub fn check_sql(text: &str, policy: &Policy) -> Result<String, String> {
    let tokens = lex(text).map_err(|e| format!("its SQL has {e}"))?;
    let mut run = String::new();
    for stmt in statements(&tokens) {
        let what = show(text, stmt);
        match check_statement(stmt, policy).map_err(|why| format!("'{what}' {why}"))? {
            Verdict::Run => {
                run.push_str(&text[stmt[0].start..stmt[stmt.len() - 1].end]);
                run.push('\n');
            }
            Verdict::Skip => {}
        }
    }
    Ok(run)
}

fn is_search_path_preamble(stmt: &[Token]) -> bool {
    let expect = [
        Tok::Word("select".into()),
        Tok::Word("pg_catalog".into()),
        Tok::Punct('.'),
        Tok::Word("set_config".into()),
        Tok::Punct('('),
        Tok::Str("search_path".into()),
        Tok::Punct(','),
        Tok::Str(String::new()),
        Tok::Punct(','),
        Tok::Word("false".into()),
        Tok::Punct(')'),
        Tok::Punct(';'),
    ];
    stmt.len() == expect.len() && stmt.iter().zip(expect.iter()).all(|(t, e)| &t.tok == e)
}

fn check_statement(stmt: &[Token], policy: &Policy) -> Result<Verdict, String> {
    if let [Token {
        tok: Tok::Meta(m), ..
    }] = stmt
    {
        let mut parts = m.split_whitespace();
        let ok = matches!(parts.next(), Some("\\restrict" | "\\unrestrict"))
            && parts
                .next()
                .is_some_and(|k| k.chars().all(|c| c.is_ascii_alphanumeric()))
            && parts.next().is_none();
        return if ok {
            Ok(Verdict::Skip)
        } else {
            Err("is a psql command, not SQL".into())
        };
    }
    if stmt.iter().any(|t| matches!(t.tok, Tok::Meta(_))) {
        return Err("holds a psql command".into());
    }
    if !matches!(stmt.last().map(|t| &t.tok), Some(Tok::Punct(';'))) {
        return Err("is not a complete statement".into());
    }
    if is_search_path_preamble(stmt) {
        return Ok(Verdict::Run);
    }
    let w = words(stmt);
    let verdict = match w.as_slice() {
        ["set", name, ..] => {
            check_setting(name, stmt)?;
            Verdict::Run
        }
        ["create", "schema", ..] => {
            let own = stmt.len() == 4
                && name_of(&stmt[2]).is_some_and(|n| policy.own.iter().any(|o| o == n));
            if !own {
                return Err("creates a schema other than the tenant's".into());
            }
            Verdict::Skip
        }
        ["create", rest @ ..] => {
            let rest = match rest {
                ["or", "replace", r @ ..] => r,
                r => r,
            };
            match rest {
                ["function" | "procedure", ..] => check_function(stmt, policy)?,
                ["table" | "sequence" | "index" | "view" | "type" | "domain" | "trigger"
                | "policy" | "statistics", ..]
                | ["unlogged", "table", ..]
                | ["unique", "index", ..]
                | ["materialized", "view", ..]
                | ["constraint", "trigger", ..] => {}
                _ => return Err("is not a statement tenantctl restores".into()),
            }
            Verdict::Run
        }
        ["alter", "table" | "sequence" | "index" | "domain", ..]
        | ["alter", "materialized", "view", ..] => {
            if pair(stmt, "set", "schema") {
                return Err("moves an object to another schema".into());
            }
            Verdict::Run
        }
        ["comment", "on", ..] | ["refresh", "materialized", "view", ..] => Verdict::Run,
        _ => return Err("is not a statement tenantctl restores".into()),
    };
    check_tokens(stmt, policy, body_index(stmt))?;
    Ok(verdict)
}

fn pair(stmt: &[Token], a: &str, b: &str) -> bool {
    stmt.windows(2)
        .any(|p| matches!((&p[0].tok, &p[1].tok), (Tok::Word(x), Tok::Word(y)) if x == a && y == b))
}

fn check_setting(name: &str, stmt: &[Token]) -> Result<(), String> {
    if !SETTINGS.contains(&name) {
        return Err(format!("sets {name}, which a dump has no reason to set"));
    }
    let value = stmt.get(3).map(|t| t.tok.clone());
    let value_is = |v: &str| match &value {
        Some(Tok::Word(x)) | Some(Tok::Str(x)) => x.eq_ignore_ascii_case(v),
        _ => false,
    };
    if name == "standard_conforming_strings" && !value_is("on") {
        return Err("turns standard_conforming_strings off".into());
    }
    if name == "client_encoding" && !value_is("UTF8") {
        return Err("uses a client encoding other than UTF8; tenantctl restores UTF8 dumps".into());
    }
    Ok(())
}

/// The index of a function's body string (`AS '...'`), when the statement defines one.
fn body_index(stmt: &[Token]) -> Option<usize> {
    let w = words(stmt);
    let is_function = matches!(
        w.as_slice(),
        ["create", "function" | "procedure", ..]
            | ["create", "or", "replace", "function" | "procedure", ..]
    );
    if !is_function {
        return None;
    }
    stmt.windows(2)
        .position(|p| {
            matches!(&p[0].tok, Tok::Word(a) if a == "as") && matches!(p[1].tok, Tok::Str(_))
        })
        .map(|i| i + 1)
}

fn check_function(stmt: &[Token], policy: &Policy) -> Result<(), String> {
    if pair(stmt, "security", "definer") {
        return Err(
            "is SECURITY DEFINER: it would run with its owner's privileges for whoever calls it"
                .into(),
        );
    }
    let language = stmt
        .windows(2)
        .find_map(|p| match (&p[0].tok, &p[1].tok) {
            (Tok::Word(l), Tok::Word(v)) | (Tok::Word(l), Tok::Str(v)) if l == "language" => {
                Some(v.to_ascii_lowercase())
            }
            _ => None,
        })
        .ok_or("names no language")?;
    if language != "plpgsql" && language != "sql" {
        return Err(format!(
            "is written in {language}; tenantctl restores only plpgsql and sql functions"
        ));
    }
    for (i, t) in stmt.iter().enumerate() {
        if matches!(&t.tok, Tok::Word(s) if s == "set") {
            check_function_setting(&stmt[i + 1..], policy)?;
        }
    }
    if let Some(b) = body_index(stmt) {
        if matches!(stmt.get(b + 1).map(|t| &t.tok), Some(Tok::Punct(','))) {
            return Err("names an object file".into());
        }
        let Tok::Str(body) = &stmt[b].tok else {
            unreachable!()
        };
        if !policy.bodies.contains(body) {
            return Err(
                "has a body that no file of the migrations folder defines; tenantctl \
                 restores only functions whose code is in the migrations folder"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `SET search_path TO 'own'` is the one setting a function may pin.
fn check_function_setting(after: &[Token], policy: &Policy) -> Result<(), String> {
    let Some(name) = after.first().and_then(name_of) else {
        return Err("sets something tenantctl cannot read".into());
    };
    if name != "search_path" {
        return Err(format!("sets {name} for its calls"));
    }
    let mut values = Vec::new();
    for t in after.iter().skip(1) {
        match &t.tok {
            Tok::Word(w) if w == "to" && values.is_empty() => {}
            Tok::Punct('=') if values.is_empty() => {}
            Tok::Punct(',') => {}
            Tok::Str(s) => values.extend(s.split(',').map(|v| v.trim().to_string())),
            Tok::Ident(s) => values.push(s.clone()),
            _ => break,
        }
    }
    if values.is_empty() {
        return Err("sets a search_path tenantctl cannot read".into());
    }
    let last = values.len() - 1;
    for (i, v) in values.into_iter().enumerate() {
        let unquoted = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .map(|x| x.replace("\"\"", "\""))
            .unwrap_or_else(|| v.to_ascii_lowercase());
        // pg_temp last is the safe pin (example migration V7): searched after everything
        // else, no temporary table can stand in for the tenant's. Anywhere else it could.
        let safe_temp = unquoted == "pg_temp" && i == last;
        if unquoted != "pg_catalog" && !safe_temp && !policy.own.contains(&unquoted) {
            return Err(format!(
                "pins its search_path to {v}, outside the tenant's schema"
            ));
        }
    }
    Ok(())
}

/// Checks every name a statement uses (the function body at `body`, if any, was checked
/// against the migrations folder instead).
fn check_tokens(stmt: &[Token], policy: &Policy, body: Option<usize>) -> Result<(), String> {
    if pair(stmt, "security", "definer") {
        return Err("makes a function SECURITY DEFINER".into());
    }
    if pair(stmt, "owner", "to") {
        return Err("changes an owner".into());
    }
    let other = |n: &str| policy.others.contains(n) || ALWAYS_OTHER.contains(&n);
    for (i, t) in stmt.iter().enumerate() {
        if Some(i) == body {
            continue;
        }
        match &t.tok {
            Tok::Word(n) | Tok::Ident(n) => {
                if policy.own.iter().any(|o| o == n) {
                    continue;
                }
                if other(n) {
                    return Err(format!("refers to schema {n}, outside the tenant's"));
                }
                if n.starts_with("pg_") && n != "pg_catalog" {
                    return Err(format!(
                        "uses {n}, a system catalog or function outside a tenant's data"
                    ));
                }
                if DANGEROUS.contains(&n.as_str()) {
                    return Err(format!(
                        "calls {n}, which reaches beyond the tenant's schema"
                    ));
                }
            }
            Tok::Str(s) => {
                if let Some(o) = qualifiers(s).into_iter().find(|q| other(q)) {
                    return Err(format!("names an object of schema {o} in a string"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The names written right before a `.` in a string (`'public.tenants'::regclass`), as
/// PostgreSQL would read them: unquoted ones lower-cased, quoted ones exact.
fn qualifiers(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' && chars.get(i + 1) == Some(&'"') {
                    name.push('"');
                    i += 2;
                } else if chars[i] == '"' {
                    break;
                } else {
                    name.push(chars[i]);
                    i += 1;
                }
            }
            if chars.get(i + 1) == Some(&'.') {
                out.push(name);
            }
            word.clear();
        } else if is_ident_char(c) {
            word.push(c);
        } else {
            if c == '.' && !word.is_empty() {
                out.push(word.to_ascii_lowercase());
            }
            word.clear();
        }
        i += 1;
    }
    out
}

/// The string constants of the migration files: every function body they define.
pub fn migration_bodies<'a>(sqls: impl Iterator<Item = &'a str>) -> HashSet<String> {
    sqls.filter_map(|sql| lex(sql).ok())
        .flatten()
        .filter_map(|t| match t.tok {
            Tok::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The data section

/// One line of the data section outside a COPY block.
#[derive(Debug, PartialEq, Eq)]
pub enum DataLine {
    /// A comment, a blank line, the preamble, a psql command: nothing to run.
    Skip,
    /// `COPY schema.table (columns) FROM stdin;`: the rows follow, up to `\.`.
    Copy {
        table: String,
        columns: Option<Vec<String>>,
    },
    /// `SELECT pg_catalog.setval('schema.sequence', value, is_called);`
    SetVal {
        sequence: String,
        value: i64,
        called: bool,
    },
}

/// Reads one line of the data section (pg_dump writes each of these statements on one
/// line). tenantctl runs its own COPY and setval built from what is read here, so nothing
/// of the line itself is executed; a line it does not recognise refuses the restore.
pub fn data_line(line: &str, schema: &str) -> Result<DataLine, String> {
    let tokens = lex(line).map_err(|e| format!("its data section has {e}"))?;
    if tokens.is_empty() {
        return Ok(DataLine::Skip);
    }
    let shown = || {
        let s: String = line.chars().take(60).collect();
        format!("its data section holds '{s}', which is not a statement pg_dump writes there")
    };
    if let [Token {
        tok: Tok::Meta(_), ..
    }] = tokens.as_slice()
    {
        return Ok(DataLine::Skip);
    }
    if is_search_path_preamble(&tokens) {
        return Ok(DataLine::Skip);
    }
    let w = words(&tokens);
    match w.as_slice() {
        ["set", name, ..] if SETTINGS.contains(name) => {
            check_setting(name, &tokens)?;
            Ok(DataLine::Skip)
        }
        ["copy", ..] => copy_line(&tokens, schema).ok_or_else(shown),
        ["select", "pg_catalog", ..] => setval_line(&tokens, schema).ok_or_else(shown),
        _ => Err(shown()),
    }
}

/// `schema.name` at `t`, when the schema is `schema`; returns the name and the next index.
fn qualified(t: &[Token], i: usize, schema: &str) -> Option<(String, usize)> {
    let s = name_of(t.get(i)?)?;
    if s != schema || t.get(i + 1)?.tok != Tok::Punct('.') {
        return None;
    }
    Some((name_of(t.get(i + 2)?)?.to_string(), i + 3))
}

fn copy_line(t: &[Token], schema: &str) -> Option<DataLine> {
    let (table, mut i) = qualified(t, 1, schema)?;
    let mut columns = None;
    if t.get(i)?.tok == Tok::Punct('(') {
        let mut cols = Vec::new();
        i += 1;
        loop {
            cols.push(name_of(t.get(i)?)?.to_string());
            match t.get(i + 1)?.tok {
                Tok::Punct(',') => i += 2,
                Tok::Punct(')') => {
                    i += 2;
                    break;
                }
                _ => return None,
            }
        }
        columns = Some(cols);
    }
    let tail: Vec<&Tok> = t[i..].iter().map(|x| &x.tok).collect();
    let expect = [
        Tok::Word("from".into()),
        Tok::Word("stdin".into()),
        Tok::Punct(';'),
    ];
    (tail.len() == 3 && tail.iter().zip(expect.iter()).all(|(a, b)| *a == b))
        .then_some(DataLine::Copy { table, columns })
}

fn setval_line(t: &[Token], schema: &str) -> Option<DataLine> {
    let toks: Vec<&Tok> = t.iter().map(|x| &x.tok).collect();
    let head = [
        Tok::Word("select".into()),
        Tok::Word("pg_catalog".into()),
        Tok::Punct('.'),
        Tok::Word("setval".into()),
        Tok::Punct('('),
    ];
    if toks.len() < head.len() || !toks.iter().zip(head.iter()).all(|(a, b)| *a == b) {
        return None;
    }
    let rest = &toks[head.len()..];
    let (Tok::Str(name), Tok::Punct(','), rest) = (rest.first()?, rest.get(1)?, &rest[2..]) else {
        return None;
    };
    let (negative, rest) = match rest.first()? {
        Tok::Punct('-') => (true, &rest[1..]),
        _ => (false, rest),
    };
    let [Tok::Num(v), Tok::Punct(','), Tok::Word(called), Tok::Punct(')'), Tok::Punct(';')] = rest
    else {
        return None;
    };
    let mut value: i64 = v.parse().ok()?;
    if negative {
        value = -value;
    }
    let called = match called.as_str() {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    let inner = lex(name).ok()?;
    let (sequence, end) = qualified(&inner, 0, schema)?;
    (end == inner.len()).then_some(DataLine::SetVal {
        sequence,
        value,
        called,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_like_postgres() {
        assert_eq!(
            toks(
                "SELECT 'a''b', E'c\\'d', $x$ e'f $x$, \"G\"\"h\" -- no\n/* /* nested */ */ x$y$;"
            ),
            vec![
                Tok::Word("select".into()),
                Tok::Str("a'b".into()),
                Tok::Punct(','),
                Tok::Str("c'd".into()),
                Tok::Punct(','),
                Tok::Str(" e'f ".into()),
                Tok::Punct(','),
                Tok::Ident("G\"h".into()),
                Tok::Word("x$y$".into()),
                Tok::Punct(';'),
            ]
        );
        assert_eq!(
            toks("a--b\nc"),
            vec![Tok::Word("a".into()), Tok::Word("c".into())]
        );
        assert_eq!(toks("$1"), vec![Tok::Param]);
        assert!(lex("'open").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("$$ open").is_err());
        // A backslash command only at the start of a line.
        assert_eq!(
            toks("\\restrict abc\nSET x = 1;"),
            vec![
                Tok::Meta("\\restrict abc".into()),
                Tok::Word("set".into()),
                Tok::Word("x".into()),
                Tok::Punct('='),
                Tok::Num("1".into()),
                Tok::Punct(';'),
            ]
        );
    }

    const LIST: &str = ";\n; Archive created at 2026\n;\n\
        6; 2615 16436 SCHEMA - tenant_acme postgres\n\
        269; 1255 16544 FUNCTION tenant_acme audit_row_change() postgres\n\
        235; 1259 16534 TABLE tenant_acme audit_log postgres\n\
        3514; 0 16534 TABLE DATA tenant_acme audit_log postgres\n";

    #[test]
    fn the_tenant_comes_from_the_schema_entry() {
        assert_eq!(dumped_schema(LIST).unwrap(), "tenant_acme");
        let two = format!("{LIST}7; 2615 1 SCHEMA - public postgres\n");
        assert!(dumped_schema(&two).unwrap_err().contains("2 schemas"));
        assert!(dumped_schema(";\n").unwrap_err().contains("no schema"));
    }

    #[test]
    fn entries_outside_the_schema_or_of_odd_kinds_are_refused() {
        let inside: String = LIST
            .lines()
            .filter(|l| l.contains(" tenant_acme ") && !l.contains("SCHEMA -"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(check_toc(LIST, &inside, "tenant_acme").is_ok());
        let outside = format!("{LIST}8; 1255 1 FUNCTION public evil() postgres\n");
        let err = check_toc(&outside, &inside, "tenant_acme").unwrap_err();
        assert!(
            err.contains("FUNCTION public evil()") && err.contains("outside"),
            "{err}"
        );
        let rule = format!("{LIST}9; 2618 1 RULE tenant_acme t r postgres\n");
        let inside_rule = format!("{inside}\n9; 2618 1 RULE tenant_acme t r postgres\n");
        let err = check_toc(&rule, &inside_rule, "tenant_acme").unwrap_err();
        assert!(err.contains("of a kind"), "{err}");
    }

    fn policy(bodies: &HashSet<String>) -> Policy<'_> {
        Policy {
            own: vec!["tenant_acme".into()],
            others: ["tenant_globex".to_string()].into_iter().collect(),
            bodies,
        }
    }

    #[test]
    fn legitimate_ddl_passes_and_is_returned_without_psql_commands() {
        let bodies = migration_bodies(["CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN RETURN NULL; END;\n$$;"].into_iter());
        let sql = "\\restrict K1\nSET statement_timeout = 0;\nSET standard_conforming_strings = on;\n\
            SELECT pg_catalog.set_config('search_path', '', false);\n\
            CREATE SCHEMA tenant_acme;\n\
            CREATE FUNCTION tenant_acme.f() RETURNS trigger\n    LANGUAGE plpgsql\n    SET search_path TO 'tenant_acme'\n    AS $$\nBEGIN RETURN NULL; END;\n$$;\n\
            CREATE TABLE tenant_acme.t (id bigint NOT NULL, p text, CONSTRAINT c CHECK ((p = ANY (ARRAY['a'::text]))));\n\
            ALTER TABLE tenant_acme.t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME tenant_acme.t_id_seq START WITH 1);\n\
            CREATE TRIGGER tr AFTER INSERT ON tenant_acme.t FOR EACH ROW EXECUTE FUNCTION tenant_acme.f();\n\
            \\unrestrict K1\n";
        let run = check_sql(sql, &policy(&bodies)).unwrap();
        assert!(
            !run.contains("restrict") && !run.contains("CREATE SCHEMA"),
            "{run}"
        );
        assert!(run.contains("CREATE TRIGGER tr"), "{run}");
    }

    #[test]
    fn tricks_are_refused() {
        let bodies = HashSet::new();
        let p = policy(&bodies);
        let refused = |sql: &str, why: &str| {
            let err = check_sql(sql, &p).unwrap_err();
            assert!(err.contains(why), "{sql}: {err}");
        };
        refused(
            "CREATE FUNCTION tenant_acme.f(x integer) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN CREATE ROLE x; RETURN true; END$$;",
            "no file of the migrations folder",
        );
        refused(
            "CREATE FUNCTION tenant_acme.f() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$SELECT 1$$;",
            "SECURITY DEFINER",
        );
        refused(
            "CREATE VIEW tenant_acme.v AS SELECT e.email FROM tenant_globex.employees e;",
            "schema tenant_globex",
        );
        refused(
            "CREATE VIEW tenant_acme.v AS SELECT rolpassword FROM pg_authid;",
            "pg_authid",
        );
        refused(
            "CREATE VIEW tenant_acme.v AS SELECT query_to_xml('select 1', true, true, '');",
            "query_to_xml",
        );
        refused(
            "CREATE TABLE tenant_acme.t (id integer REFERENCES public.tenants(id));",
            "schema public",
        );
        refused(
            "CREATE TABLE tenant_acme.t (r regclass DEFAULT 'public.tenants'::regclass);",
            "schema public in a string",
        );
        refused("SET ROLE postgres;", "sets role");
        refused("SET standard_conforming_strings = off;", "off");
        refused("RESET ROLE;", "not a statement");
        refused(
            "GRANT ALL ON SCHEMA tenant_acme TO PUBLIC;",
            "not a statement",
        );
        refused("CREATE ROLE x;", "not a statement");
        refused("CREATE SCHEMA tenant_globex;", "other than the tenant's");
        refused(
            "CREATE RULE r AS ON INSERT TO tenant_acme.t DO ALSO NOTIFY x;",
            "not a statement",
        );
        refused("ALTER TABLE tenant_acme.t OWNER TO postgres;", "owner");
        refused("SELECT 1;", "not a statement");
        refused("\\! rm -rf /\n", "psql command");
        refused(
            "CREATE TABLE tenant_acme.t (x int\n\\! rm -rf /\n);",
            "psql command",
        );
        refused(
            "CREATE FUNCTION tenant_acme.f() RETURNS void LANGUAGE plpgsql SET search_path TO 'public' AS $$x$$;",
            "search_path to public",
        );
        // pg_temp first would let a temporary table stand in for the tenant's; last is safe.
        refused(
            "CREATE FUNCTION tenant_acme.f() RETURNS void LANGUAGE plpgsql SET search_path TO 'pg_temp', 'tenant_acme' AS $$x$$;",
            "search_path to pg_temp",
        );
        refused(
            "CREATE FUNCTION tenant_acme.f() RETURNS void LANGUAGE c AS 'lib', 'sym';",
            "written in c",
        );
    }

    #[test]
    fn qualified_names_in_strings() {
        assert_eq!(qualifiers("public.tenants"), vec!["public"]);
        assert_eq!(
            qualifiers("x Public.T, \"Tenant-B\".t"),
            vec!["public", "Tenant-B"]
        );
        assert!(qualifiers("it's public").is_empty());
    }

    #[test]
    fn data_lines() {
        let s = "tenant_acme";
        assert_eq!(data_line("-- Data for Name: t", s), Ok(DataLine::Skip));
        assert_eq!(
            data_line("SET client_encoding = 'UTF8';", s),
            Ok(DataLine::Skip)
        );
        assert_eq!(
            data_line("COPY tenant_acme.employees (id, \"user\") FROM stdin;", s),
            Ok(DataLine::Copy {
                table: "employees".into(),
                columns: Some(vec!["id".into(), "user".into()])
            })
        );
        assert_eq!(
            data_line(
                "SELECT pg_catalog.setval('tenant_acme.t_id_seq', 42, true);",
                s
            ),
            Ok(DataLine::SetVal {
                sequence: "t_id_seq".into(),
                value: 42,
                called: true
            })
        );
        assert!(data_line("COPY tenant_globex.employees (id) FROM stdin;", s).is_err());
        assert!(data_line("COPY tenant_acme.t (id) FROM stdin; CREATE ROLE x;", s).is_err());
        assert!(data_line("SELECT pg_catalog.setval('public.s', 1, true);", s).is_err());
        assert!(data_line("CREATE ROLE x;", s).is_err());
        assert!(data_line("SET ROLE postgres;", s).is_err());
    }
}
