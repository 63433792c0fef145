//! SQL text split into statements, and what a statement does to the session running it.
//! Pure: no database.
//!
//! The splitter follows PostgreSQL's lexer (and psql's rules for where a statement ends):
//! `--` and nested `/* */` comments, `'...'` strings with `''`, `E'...'` strings with
//! backslash escapes, `"quoted identifiers"`, dollar quotes `$$` / `$tag$` (not `$1`),
//! parentheses, and `BEGIN ATOMIC ... END` bodies of `CREATE FUNCTION` / `CREATE PROCEDURE`.
//! A `;` inside any of these does not end a statement.
//!
//! The classifier looks at a statement's leading keywords (case-insensitive, comments
//! skipped) and reports what a migration runner must know: transaction control, changes to
//! the session's search_path or role, and statements PostgreSQL refuses inside a
//! transaction block. Inside a `DO` block's body it looks, best effort, for the same
//! session changes and for `COMMIT` / `ROLLBACK`.

use std::ops::Range;

/// One statement of a SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From the statement's first token to its last: no leading comment, no `;`.
    pub text: &'a str,
    /// Where `text` lies in the whole input, in bytes.
    pub range: Range<usize>,
    /// The 1-based line of the statement's first token.
    pub line: usize,
    tokens: Vec<Token>,
    lines: LineIndex,
}

/// A text the splitter cannot read: an unterminated string, identifier, comment or dollar
/// quote. PostgreSQL would refuse it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    /// The 1-based line where the unterminated element starts.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for SplitError {}

/// Splits `sql` into its statements, in order. Empty statements (`;;`, or only comments)
/// are left out, so a text of comments and whitespace has none.
pub fn split(sql: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let lines = LineIndex::new(sql);
    let tokens = lex(sql, 0..sql.len()).map_err(|(at, message)| SplitError {
        line: lines.line_of(at),
        message,
    })?;
    let mut out = Vec::new();
    let mut current: Vec<Token> = Vec::new();
    let mut ends = Ends::default();
    for token in tokens {
        if token.kind == Kind::Semicolon && ends.at_top_level() {
            push_statement(sql, &lines, std::mem::take(&mut current), &mut out);
            ends = Ends::default();
            continue;
        }
        ends.see(sql, &token);
        current.push(token);
    }
    push_statement(sql, &lines, current, &mut out);
    Ok(out)
}

fn push_statement<'a>(
    sql: &'a str,
    lines: &LineIndex,
    tokens: Vec<Token>,
    out: &mut Vec<Statement<'a>>,
) {
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return;
    };
    let range = first.span.start..last.span.end;
    out.push(Statement {
        text: &sql[range.clone()],
        line: lines.line_of(range.start),
        range,
        tokens,
        lines: lines.clone(),
    });
}

/// psql's rule for a `;` that does not end the statement: inside parentheses, or inside
/// the `BEGIN ... END` of a `CREATE [OR REPLACE] FUNCTION | PROCEDURE` (SQL-standard
/// bodies, `BEGIN ATOMIC`), where `CASE ... END` nests too.
#[derive(Default)]
struct Ends {
    parens: usize,
    begins: usize,
    /// The statement's leading words, lower-cased (up to four): the run of words it starts
    /// with, closed by the first token that is not a word.
    leading: Vec<String>,
    run_closed: bool,
}

impl Ends {
    fn at_top_level(&self) -> bool {
        self.parens == 0 && self.begins == 0
    }

    fn see(&mut self, sql: &str, t: &Token) {
        match t.kind {
            Kind::Open => self.parens += 1,
            Kind::Close => self.parens = self.parens.saturating_sub(1),
            Kind::Word => {
                let word = sql[t.span.clone()].to_ascii_lowercase();
                if !self.run_closed && self.leading.len() < 4 {
                    self.leading.push(word.clone());
                }
                if self.parens == 0 && is_routine(&self.leading) {
                    match word.as_str() {
                        "begin" => self.begins += 1,
                        "case" if self.begins > 0 => self.begins += 1,
                        "end" => self.begins = self.begins.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        if t.kind != Kind::Word {
            self.run_closed = true;
        }
    }
}

/// Whether leading words start `CREATE [OR REPLACE] FUNCTION | PROCEDURE`.
fn is_routine(leading: &[String]) -> bool {
    let w: Vec<&str> = leading.iter().take(4).map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["create", "function" | "procedure", ..]
            | ["create", "or", "replace", "function" | "procedure", ..]
    )
}

/// Why a statement matters to a migration runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `PREPARE TRANSACTION`, `SET TRANSACTION`...:
    /// it would end, nest or change the transaction the runner owns.
    TransactionControl,
    /// `SET search_path`, `SET ROLE`, `SET SESSION AUTHORIZATION`, their `RESET`s,
    /// `RESET ALL`, `DISCARD ALL`, `set_config('search_path', ...)`: the statements after it
    /// would run in another schema or as another role.
    SessionState,
    /// PostgreSQL refuses it inside a transaction block (`CREATE INDEX CONCURRENTLY`,
    /// `VACUUM`, ...).
    NoTransactionBlock,
    /// `COMMIT` or `ROLLBACK` inside a `DO` block: PostgreSQL refuses it when the block runs
    /// inside a transaction block ("invalid transaction termination"), and allows it when
    /// the block runs on its own.
    ProcedureTransactionControl,
}

/// One thing found in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// The form found, as PostgreSQL's documentation names it: `COMMIT`,
    /// `SET search_path`, `CREATE INDEX CONCURRENTLY`.
    pub what: String,
    /// The 1-based line where it starts (inside a `DO` body: the line of the statement
    /// there, when the body is dollar-quoted).
    pub line: usize,
}

impl Statement<'_> {
    /// The statement's leading keywords, lower-cased: the unbroken run of unquoted words
    /// it starts with, up to `n` (`CREATE UNIQUE INDEX CONCURRENTLY` gives
    /// `["create", "unique", "index", "concurrently"]`).
    pub fn leading_keywords(&self, n: usize) -> Vec<String> {
        self.tokens
            .iter()
            .take_while(|t| t.kind == Kind::Word)
            .take(n)
            .map(|t| self.word_at(t))
            .collect()
    }

    fn word_at(&self, t: &Token) -> String {
        self.source(t).to_ascii_lowercase()
    }

    /// The token's text (`self.text` starts at `self.range.start` of the whole input).
    fn source(&self, t: &Token) -> &str {
        let base = self.range.start;
        &self.text[t.span.start - base..t.span.end - base]
    }

    /// Everything this statement does that a migration runner must know, in order.
    pub fn findings(&self) -> Vec<Finding> {
        let view = View {
            tokens: &self.tokens,
            text: self.text,
            base: self.range.start,
        };
        let mut out = Vec::new();
        if let Some((rule, what)) = leading_form(&view) {
            out.push(Finding {
                rule,
                what,
                line: self.line,
            });
        }
        if view.is_routine_definition() {
            // A function's body runs when the function is called, not now.
            return out;
        }
        for what in view.session_calls() {
            out.push(Finding {
                rule: Rule::SessionState,
                what,
                line: self.line,
            });
        }
        if view.word(0).as_deref() == Some("do") {
            out.extend(self.do_body_findings(&view));
        }
        out
    }

    /// Looks into a `DO` block's body (best effort: the body is procedural code).
    fn do_body_findings(&self, view: &View<'_>) -> Vec<Finding> {
        let Some(body) = view.tokens.iter().find(|t| t.kind.is_literal()) else {
            return Vec::new();
        };
        let (text, base, line_of): (String, usize, Box<dyn Fn(usize) -> usize>) = match &body.kind {
            Kind::Dollar { body } => (
                self.text[body.start - self.range.start..body.end - self.range.start].to_string(),
                body.start,
                Box::new(|at| self.lines.line_of(at)),
            ),
            Kind::Str { extended } => {
                let raw = view.slice(body.span.clone());
                let line = self.lines.line_of(body.span.start);
                (string_value(raw, *extended), 0, Box::new(move |_| line))
            }
            _ => return Vec::new(),
        };
        let Ok(tokens) = lex(&text, 0..text.len()) else {
            return Vec::new();
        };
        let inner = View {
            tokens: &tokens,
            text: &text,
            base: 0,
        };
        let mut out = Vec::new();
        for start in inner.procedural_statement_starts() {
            let sub = inner.from(start);
            let at = line_of(base + tokens[start].span.start);
            match leading_form(&sub) {
                Some((Rule::TransactionControl, what)) if is_commit_or_rollback(&what) => {
                    out.push(Finding {
                        rule: Rule::ProcedureTransactionControl,
                        what: format!("{what} inside a DO block"),
                        line: at,
                    })
                }
                Some((Rule::SessionState, what)) => out.push(Finding {
                    rule: Rule::SessionState,
                    what: format!("{what} inside a DO block"),
                    line: at,
                }),
                _ => {}
            }
        }
        for what in inner.session_calls() {
            out.push(Finding {
                rule: Rule::SessionState,
                what: format!("{what} inside a DO block"),
                line: line_of(base),
            });
        }
        out
    }
}

/// A statement's token as rules over its shape read it (`domain::citus_rules`): strings and
/// dollar-quoted bodies are opaque, so nothing inside them is taken for a keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// An unquoted word, lower-cased.
    Word(String),
    /// A quoted identifier's name.
    Name(String),
    /// A string or dollar-quoted literal (its content left out).
    Literal,
    Open,
    Close,
    /// Anything else (operators, numbers, `.`, `,`), as written.
    Other(String),
}

impl Piece {
    /// The identifier this piece names (a word lower-cased, or a quoted name).
    pub fn ident(&self) -> Option<&str> {
        match self {
            Piece::Word(w) | Piece::Name(w) => Some(w),
            _ => None,
        }
    }

    pub fn is_word(&self, w: &str) -> bool {
        matches!(self, Piece::Word(x) if x == w)
    }
}

impl Statement<'_> {
    /// The statement's tokens as `Piece`s, in order.
    pub fn pieces(&self) -> Vec<Piece> {
        let view = View {
            tokens: &self.tokens,
            text: self.text,
            base: self.range.start,
        };
        (0..self.tokens.len())
            .map(|i| match &self.tokens[i].kind {
                Kind::Word => Piece::Word(view.word(i).unwrap_or_default()),
                Kind::QuotedIdent => Piece::Name(view.name(i).unwrap_or_default()),
                Kind::Str { .. } | Kind::Dollar { .. } => Piece::Literal,
                Kind::Open => Piece::Open,
                Kind::Close => Piece::Close,
                Kind::Param | Kind::Semicolon | Kind::Other => {
                    Piece::Other(view.slice(self.tokens[i].span.clone()).to_string())
                }
            })
            .collect()
    }
}

fn is_commit_or_rollback(what: &str) -> bool {
    what == "COMMIT" || what == "ROLLBACK"
}

/// Tokens of one statement (or of the rest of one), with the text they point into.
struct View<'a> {
    tokens: &'a [Token],
    text: &'a str,
    /// The offset of `text` in the coordinates of the tokens' spans.
    base: usize,
}

impl<'a> View<'a> {
    fn slice(&self, span: Range<usize>) -> &'a str {
        &self.text[span.start - self.base..span.end - self.base]
    }

    fn from(&self, start: usize) -> View<'a> {
        View {
            tokens: &self.tokens[start..],
            text: self.text,
            base: self.base,
        }
    }

    /// The i-th token, lower-cased, when it is an unquoted word.
    fn word(&self, i: usize) -> Option<String> {
        let t = self.tokens.get(i)?;
        (t.kind == Kind::Word).then(|| self.slice(t.span.clone()).to_ascii_lowercase())
    }

    /// The i-th token as a name: a word lower-cased, or a quoted identifier's content.
    fn name(&self, i: usize) -> Option<String> {
        let t = self.tokens.get(i)?;
        match t.kind {
            Kind::Word => Some(self.slice(t.span.clone()).to_ascii_lowercase()),
            Kind::QuotedIdent => {
                let raw = self.slice(t.span.clone());
                let inner = raw.strip_prefix("U&").unwrap_or(raw);
                Some(inner[1..inner.len() - 1].replace("\"\"", "\""))
            }
            _ => None,
        }
    }

    fn words(&self) -> Vec<String> {
        (0..self.tokens.len())
            .filter_map(|i| self.word(i))
            .collect()
    }

    fn is_routine_definition(&self) -> bool {
        is_routine(&(0..4).map_while(|i| self.word(i)).collect::<Vec<_>>())
    }

    /// Calls that change the session's search_path or role: `set_config('search_path', ...)`,
    /// `set_config('role', ...)`, `set_config('session_authorization', ...)`.
    fn session_calls(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.tokens.len() {
            if self.name(i).as_deref() != Some("set_config")
                || self.tokens.get(i + 1).map(|t| &t.kind) != Some(&Kind::Open)
            {
                continue;
            }
            let Some(arg) = self.tokens.get(i + 2) else {
                continue;
            };
            let Kind::Str { extended } = arg.kind else {
                continue;
            };
            let setting = string_value(self.slice(arg.span.clone()), extended).to_lowercase();
            if matches!(
                setting.as_str(),
                "search_path" | "role" | "session_authorization"
            ) {
                out.push(format!("set_config('{setting}', ...)"));
            }
        }
        out
    }

    /// Where statements start in procedural (PL/pgSQL) code: at the start, after `;`, and
    /// after the words that open a block or a branch.
    fn procedural_statement_starts(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at_start = true;
        for (i, t) in self.tokens.iter().enumerate() {
            if at_start && t.kind == Kind::Word {
                out.push(i);
            }
            at_start = match t.kind {
                Kind::Semicolon => true,
                Kind::Word => matches!(
                    self.word(i).as_deref(),
                    Some("begin" | "then" | "else" | "loop")
                ),
                _ => false,
            };
        }
        out
    }
}

/// What the statement's leading keywords say it is, when that matters.
fn leading_form(v: &View<'_>) -> Option<(Rule, String)> {
    use Rule::*;
    let w = |i: usize| v.word(i).unwrap_or_default();
    let tc = |what: &str| Some((TransactionControl, what.to_string()));
    match w(0).as_str() {
        "begin" => tc("BEGIN"),
        "start" if w(1) == "transaction" => tc("START TRANSACTION"),
        "commit" if w(1) == "prepared" => tc("COMMIT PREPARED"),
        "commit" => tc("COMMIT"),
        "end" => tc("END"),
        "abort" => tc("ABORT"),
        "rollback" if w(1) == "prepared" => tc("ROLLBACK PREPARED"),
        "rollback" if w(1) == "to" || (w(1) == "work" || w(1) == "transaction") && w(2) == "to" => {
            tc("ROLLBACK TO SAVEPOINT")
        }
        "rollback" => tc("ROLLBACK"),
        "savepoint" => tc("SAVEPOINT"),
        "release" => tc("RELEASE SAVEPOINT"),
        "prepare" if w(1) == "transaction" => tc("PREPARE TRANSACTION"),
        "set" => set_form(v),
        "reset" => reset_form(v),
        "discard" if w(1) == "all" => Some((SessionState, "DISCARD ALL".into())),
        _ => no_transaction_block_form(v).map(|what| (NoTransactionBlock, what)),
    }
}

/// `SET [SESSION | LOCAL] {search_path | SCHEMA | ROLE | SESSION AUTHORIZATION | TRANSACTION}`.
fn set_form(v: &View<'_>) -> Option<(Rule, String)> {
    let mut i = 1;
    loop {
        match (v.word(i).as_deref(), v.word(i + 1).as_deref()) {
            (Some("session"), Some("authorization")) => {
                return Some((Rule::SessionState, "SET SESSION AUTHORIZATION".into()))
            }
            (Some("session" | "local"), _) => i += 1,
            _ => break,
        }
    }
    match v.name(i).as_deref() {
        Some("search_path" | "schema") => Some((Rule::SessionState, "SET search_path".into())),
        Some("role") => Some((Rule::SessionState, "SET ROLE".into())),
        Some("transaction") if v.word(i).is_some() => {
            Some((Rule::TransactionControl, "SET TRANSACTION".into()))
        }
        _ => None,
    }
}

/// `RESET {search_path | ROLE | SESSION AUTHORIZATION | ALL}`.
fn reset_form(v: &View<'_>) -> Option<(Rule, String)> {
    let what = match (v.name(1).as_deref(), v.word(2).as_deref()) {
        (Some("search_path"), _) => "RESET search_path",
        (Some("role"), _) => "RESET ROLE",
        (Some("session"), Some("authorization")) => "RESET SESSION AUTHORIZATION",
        (Some("all"), _) => "RESET ALL",
        _ => return None,
    };
    Some((Rule::SessionState, what.into()))
}

/// The statements PostgreSQL 15 refuses inside a transaction block
/// (`PreventInTransactionBlock`), by their leading keywords.
fn no_transaction_block_form(v: &View<'_>) -> Option<String> {
    let w = |i: usize| v.word(i).unwrap_or_default();
    let words = v.words();
    let has = |word: &str| words.iter().any(|x| x == word);
    let what = match (w(0).as_str(), w(1).as_str()) {
        ("vacuum", _) => "VACUUM",
        ("cluster", _) if !cluster_names_a_table(v) => "CLUSTER without a table",
        ("reindex", _) => return reindex_form(v),
        ("create", "index") if w(2) == "concurrently" => "CREATE INDEX CONCURRENTLY",
        ("create", "unique") if w(2) == "index" && w(3) == "concurrently" => {
            "CREATE INDEX CONCURRENTLY"
        }
        ("drop", "index") if w(2) == "concurrently" => "DROP INDEX CONCURRENTLY",
        ("create" | "drop", "database") => {
            return Some(format!("{} DATABASE", w(0).to_uppercase()))
        }
        ("create" | "drop", "tablespace") => {
            return Some(format!("{} TABLESPACE", w(0).to_uppercase()))
        }
        ("create" | "drop", "subscription") => {
            return Some(format!("{} SUBSCRIPTION", w(0).to_uppercase()))
        }
        ("alter", "subscription") if has("refresh") || has("publication") => {
            "ALTER SUBSCRIPTION ... PUBLICATION / REFRESH"
        }
        ("alter", "system") => "ALTER SYSTEM",
        ("alter", "database") if w(3) == "set" && w(4) == "tablespace" => {
            "ALTER DATABASE ... SET TABLESPACE"
        }
        ("alter", "table") if has("detach") && has("concurrently") => {
            "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"
        }
        _ => return None,
    };
    Some(what.to_string())
}

/// `CLUSTER [VERBOSE] [(options)]` alone reclusters every table (and cannot run in a
/// transaction block); `CLUSTER name ...` names one.
fn cluster_names_a_table(v: &View<'_>) -> bool {
    let mut depth = 0usize;
    for (i, t) in v.tokens.iter().enumerate().skip(1) {
        match t.kind {
            Kind::Open => depth += 1,
            Kind::Close => depth = depth.saturating_sub(1),
            Kind::Word if depth == 0 && v.word(i).as_deref() == Some("verbose") => {}
            Kind::Word | Kind::QuotedIdent if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// `REINDEX [(options)] {INDEX | TABLE | SCHEMA | DATABASE | SYSTEM} [CONCURRENTLY] name`:
/// CONCURRENTLY (as a word or an option) and the SCHEMA, DATABASE and SYSTEM forms.
fn reindex_form(v: &View<'_>) -> Option<String> {
    if v.words().iter().any(|w| w == "concurrently") {
        return Some("REINDEX CONCURRENTLY".into());
    }
    let mut depth = 0usize;
    for (i, t) in v.tokens.iter().enumerate().skip(1) {
        match t.kind {
            Kind::Open => depth += 1,
            Kind::Close => depth = depth.saturating_sub(1),
            Kind::Word if depth == 0 => {
                let kind = v.word(i).unwrap_or_default();
                return matches!(kind.as_str(), "schema" | "database" | "system")
                    .then(|| format!("REINDEX {}", kind.to_uppercase()));
            }
            _ => {}
        }
    }
    None
}

/// A string literal's value: `''` is a quote; in `E'...'` strings a backslash escapes the
/// next character (`\n`, `\t` and the like are decoded; numeric escapes are kept as written).
fn string_value(raw: &str, extended: bool) -> String {
    let start = raw.find('\'').map_or(0, |i| i + 1);
    let inner = &raw[start..raw.len().saturating_sub(1).max(start)];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\\' if extended => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some(other) => out.push(other),
                None => {}
            },
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The lexer.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// `"..."` or `U&"..."`.
    QuotedIdent,
    /// `'...'`, `E'...'` (extended: backslash escapes), `B'...'`, `X'...'`, `N'...'`, `U&'...'`.
    Str {
        extended: bool,
    },
    /// `$tag$...$tag$`; `body` is the text between the delimiters.
    Dollar {
        body: Range<usize>,
    },
    /// `$1`.
    Param,
    Semicolon,
    Open,
    Close,
    /// Anything else: numbers, operators, punctuation.
    Other,
}

impl Kind {
    fn is_literal(&self) -> bool {
        matches!(self, Kind::Str { .. } | Kind::Dollar { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    kind: Kind,
    /// In bytes, in the coordinates of the text given to `split`.
    span: Range<usize>,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The tokens of `src[range]` (comments and whitespace dropped). An error carries the
/// offset where the unterminated element starts.
fn lex(src: &str, range: Range<usize>) -> Result<Vec<Token>, (usize, String)> {
    let b = src.as_bytes();
    let end = range.end;
    let mut i = range.start;
    let mut out = Vec::new();
    while i < end {
        let c = b[i];
        let next = b.get(i + 1).copied().filter(|_| i + 1 < end);
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                i = b[i..end]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(end, |p| i + p + 1);
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = block_comment_end(b, i, end)
                    .ok_or((start, "unterminated /* comment".to_string()))?;
                continue;
            }
            b'\'' => {
                i = quoted_end(b, i, end, b'\'', false)
                    .ok_or((start, "unterminated quoted string".to_string()))?;
                Kind::Str { extended: false }
            }
            b'"' => {
                i = quoted_end(b, i, end, b'"', false)
                    .ok_or((start, "unterminated quoted identifier".to_string()))?;
                Kind::QuotedIdent
            }
            b'e' | b'E' if next == Some(b'\'') => {
                i = quoted_end(b, i + 1, end, b'\'', true)
                    .ok_or((start, "unterminated quoted string".to_string()))?;
                Kind::Str { extended: true }
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                i = quoted_end(b, i + 1, end, b'\'', false)
                    .ok_or((start, "unterminated quoted string".to_string()))?;
                Kind::Str { extended: false }
            }
            b'u' | b'U'
                if next == Some(b'&')
                    && matches!(b.get(i + 2), Some(b'\'' | b'"'))
                    && i + 2 < end =>
            {
                let quote = b[i + 2];
                i = quoted_end(b, i + 2, end, quote, false).ok_or((
                    start,
                    "unterminated quoted string or identifier".to_string(),
                ))?;
                if quote == b'"' {
                    Kind::QuotedIdent
                } else {
                    Kind::Str { extended: false }
                }
            }
            b'$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                i += 1;
                while i < end && b[i].is_ascii_digit() {
                    i += 1;
                }
                Kind::Param
            }
            b'$' => match dollar_tag(b, i, end) {
                Some(tag_end) => {
                    let tag = &b[i..tag_end];
                    let close = find(b, tag, tag_end, end).ok_or_else(|| {
                        (
                            start,
                            format!(
                                "unterminated dollar-quoted string {}",
                                String::from_utf8_lossy(tag)
                            ),
                        )
                    })?;
                    i = close + tag.len();
                    Kind::Dollar {
                        body: tag_end..close,
                    }
                }
                None => {
                    i += 1;
                    Kind::Other
                }
            },
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            c if is_ident_start(c) => {
                while i < end && is_ident_cont(b[i]) {
                    i += 1;
                }
                Kind::Word
            }
            c if c.is_ascii_digit() => {
                while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                Kind::Other
            }
            _ => {
                i += 1;
                Kind::Other
            }
        };
        out.push(Token {
            kind,
            span: start..i,
        });
    }
    Ok(out)
}

/// The end (exclusive) of a `/* */` comment starting at `i`, nested ones included.
fn block_comment_end(b: &[u8], mut i: usize, end: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i + 1 < end {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of a literal opened by `quote` at `i`: a doubled quote stands for
/// itself, and with `backslash` a backslash escapes the next byte.
fn quoted_end(b: &[u8], i: usize, end: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < end {
        match b[j] {
            b'\\' if backslash => j += 2,
            c if c == quote => {
                if j + 1 < end && b[j + 1] == quote {
                    j += 2;
                } else {
                    return Some(j + 1);
                }
            }
            _ => j += 1,
        }
    }
    None
}

/// When a dollar-quote delimiter (`$$` or `$tag$`) starts at `i`, the end of it.
fn dollar_tag(b: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < end && is_ident_start(b[j]) {
        j += 1;
        while j < end && is_ident_cont(b[j]) && b[j] != b'$' {
            j += 1;
        }
    }
    (j < end && b[j] == b'$').then_some(j + 1)
}

fn find(b: &[u8], needle: &[u8], from: usize, end: usize) -> Option<usize> {
    b[from..end]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Line numbers from byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LineIndex {
    /// The offset of each `\n`.
    newlines: std::sync::Arc<Vec<usize>>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        LineIndex {
            newlines: std::sync::Arc::new(newlines),
        }
    }

    /// The 1-based line of byte `at`.
    fn line_of(&self, at: usize) -> usize {
        self.newlines.partition_point(|&n| n < at) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn a_no_break_space_is_not_whitespace_to_postgresql() {
        // The proptest found "\u{a0}": PostgreSQL reads it as part of an identifier, so it
        // is a statement (which the server rejects), not blank text to skip.
        assert_eq!(texts("\u{a0}"), vec!["\u{a0}"]);
        assert_eq!(texts(" select 1;\u{a0}"), vec!["select 1", "\u{a0}"]);
    }

    fn found(sql: &str) -> Vec<(Rule, String, usize)> {
        split(sql)
            .unwrap()
            .iter()
            .flat_map(|s| s.findings())
            .map(|f| (f.rule, f.what, f.line))
            .collect()
    }

    fn first(sql: &str) -> Option<(Rule, String)> {
        found(sql).into_iter().next().map(|(r, w, _)| (r, w))
    }

    #[test]
    fn splits_on_top_level_semicolons_with_lines_and_ranges() {
        let sql = "-- header\nCREATE TABLE a (id int);\n\n/* two\n lines */ INSERT INTO a VALUES (1)  ;\nSELECT 1";
        let s = split(sql).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].text, "CREATE TABLE a (id int)");
        assert_eq!(s[0].line, 2);
        assert_eq!(s[1].text, "INSERT INTO a VALUES (1)");
        assert_eq!(s[1].line, 5);
        assert_eq!(s[2].text, "SELECT 1");
        assert_eq!(s[2].line, 6);
        for st in &s {
            assert_eq!(&sql[st.range.clone()], st.text);
        }
    }

    #[test]
    fn semicolons_inside_literals_comments_and_bodies_do_not_split() {
        let cases = [
            "SELECT 'a;b', 'it''s; fine'",
            "SELECT E'a\\';b', e'\\\\'",
            "SELECT \"we;ird\"\"name\" FROM t",
            "SELECT 1 -- not; the end\n + 1",
            "SELECT 1 /* outer ; /* inner ; */ still ; */ + 1",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN '$$;'; END $body$",
            "DO $do$ BEGIN PERFORM 1; END $do$",
            "SELECT U&'d\\0061t;' , U&\"x;\"",
            "SELECT B'1010', X'1F', N'n;'",
            "SELECT (1; 2)",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END",
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END",
        ];
        for sql in cases {
            assert_eq!(
                texts(&format!("{sql};\nSELECT 2;")),
                [sql, "SELECT 2"],
                "{sql}"
            );
        }
    }

    #[test]
    fn dollar_parameters_and_identifiers_are_not_dollar_quotes() {
        assert_eq!(
            texts("PREPARE p AS SELECT $1; SELECT a$b$c FROM t; SELECT 2"),
            ["PREPARE p AS SELECT $1", "SELECT a$b$c FROM t", "SELECT 2"]
        );
        // A lone $ (an operator character) is not a quote either.
        assert_eq!(texts("SELECT 1 $ 2; SELECT 3").len(), 2);
    }

    #[test]
    fn only_comments_and_whitespace_hold_no_statement() {
        assert!(texts("").is_empty());
        assert!(texts("  \n-- nothing\n/* still nothing; */\n;;\n").is_empty());
    }

    #[test]
    fn unterminated_elements_are_reported_with_their_line() {
        for (sql, line, what) in [
            ("SELECT 1;\nSELECT 'open", 2, "quoted string"),
            (
                "SELECT 1;\n\nSELECT $x$ body",
                3,
                "dollar-quoted string $x$",
            ),
            ("/* a /* b */", 1, "comment"),
            ("SELECT \"x", 1, "quoted identifier"),
            ("SELECT E'\\'", 1, "quoted string"),
        ] {
            let e = split(sql).unwrap_err();
            assert_eq!(e.line, line, "{sql}");
            assert!(e.message.contains(what), "{sql}: {}", e.message);
        }
    }

    #[test]
    fn transaction_control_is_found_at_statement_start_in_any_case() {
        use Rule::TransactionControl as TC;
        for (sql, what) in [
            ("BEGIN", "BEGIN"),
            ("begin work", "BEGIN"),
            ("Begin Transaction Isolation Level Serializable", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("COMMIT", "COMMIT"),
            ("commit and chain", "COMMIT"),
            ("END", "END"),
            ("ROLLBACK", "ROLLBACK"),
            ("ABORT", "ABORT"),
            ("SAVEPOINT s", "SAVEPOINT"),
            ("RELEASE SAVEPOINT s", "RELEASE SAVEPOINT"),
            ("release s", "RELEASE SAVEPOINT"),
            ("ROLLBACK TO SAVEPOINT s", "ROLLBACK TO SAVEPOINT"),
            ("rollback work to s", "ROLLBACK TO SAVEPOINT"),
            ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
            ("COMMIT PREPARED 'x'", "COMMIT PREPARED"),
            ("ROLLBACK PREPARED 'x'", "ROLLBACK PREPARED"),
            ("SET TRANSACTION READ ONLY", "SET TRANSACTION"),
            ("/* lead */ -- in\n  commit", "COMMIT"),
        ] {
            assert_eq!(first(sql), Some((TC, what.to_string())), "{sql}");
        }
        // Not transaction control: a prepared statement, a column named like a keyword,
        // the word inside a literal.
        for sql in [
            "PREPARE p AS SELECT 1",
            "SELECT 1 AS \"commit\"",
            "INSERT INTO log VALUES ('COMMIT; BEGIN')",
            "UPDATE t SET begin = 1",
        ] {
            assert_eq!(first(sql), None, "{sql}");
        }
    }

    #[test]
    fn session_changes_are_found() {
        use Rule::SessionState as S;
        for (sql, what) in [
            ("SET search_path = public", "SET search_path"),
            ("set SEARCH_PATH to x, y", "SET search_path"),
            ("SET LOCAL search_path = x", "SET search_path"),
            ("SET SESSION search_path = x", "SET search_path"),
            ("SET \"search_path\" = x", "SET search_path"),
            ("SET SCHEMA 'x'", "SET search_path"),
            ("SET ROLE admin", "SET ROLE"),
            ("set local role none", "SET ROLE"),
            ("SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION"),
            (
                "SET SESSION SESSION AUTHORIZATION DEFAULT",
                "SET SESSION AUTHORIZATION",
            ),
            (
                "SET LOCAL SESSION AUTHORIZATION bob",
                "SET SESSION AUTHORIZATION",
            ),
            ("RESET search_path", "RESET search_path"),
            ("RESET ROLE", "RESET ROLE"),
            ("RESET SESSION AUTHORIZATION", "RESET SESSION AUTHORIZATION"),
            ("RESET ALL", "RESET ALL"),
            ("DISCARD ALL", "DISCARD ALL"),
            (
                "SELECT set_config('search_path', 'x', false)",
                "set_config('search_path', ...)",
            ),
            (
                "select pg_catalog.SET_CONFIG ( 'Search_Path' , 'x', true)",
                "set_config('search_path', ...)",
            ),
            (
                "SELECT set_config(E'role', 'x', true)",
                "set_config('role', ...)",
            ),
        ] {
            assert_eq!(first(sql), Some((S, what.to_string())), "{sql}");
        }
        for sql in [
            "SET statement_timeout = 0",
            "SET LOCAL lock_timeout = '1s'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "UPDATE employees SET role = 'admin'",
            "ALTER ROLE app SET search_path = x",
            "ALTER FUNCTION f() SET search_path = x",
            "SELECT set_config('app.actor', 'x', true)",
            "SELECT current_setting('search_path')",
            "DISCARD TEMP",
            // A function's body runs when it is called, not while the migration runs.
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT set_config('search_path', 'x', true) $$",
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN SET search_path = x; COMMIT; END $$",
        ] {
            assert_eq!(first(sql), None, "{sql}");
        }
    }

    #[test]
    fn statements_refused_in_a_transaction_block_are_found() {
        use Rule::NoTransactionBlock as N;
        for (sql, what) in [
            (
                "CREATE INDEX CONCURRENTLY i ON t (x)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "create unique index concurrently if not exists i on t (x)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "CREATE INDEX CONCURRENTLY ON t (x)",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "DROP INDEX CONCURRENTLY IF EXISTS i",
                "DROP INDEX CONCURRENTLY",
            ),
            ("REINDEX TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
            (
                "REINDEX (CONCURRENTLY, VERBOSE) INDEX i",
                "REINDEX CONCURRENTLY",
            ),
            ("REINDEX SCHEMA s", "REINDEX SCHEMA"),
            ("REINDEX (VERBOSE) DATABASE d", "REINDEX DATABASE"),
            ("REINDEX SYSTEM", "REINDEX SYSTEM"),
            ("VACUUM", "VACUUM"),
            ("vacuum (analyze) t", "VACUUM"),
            ("CLUSTER", "CLUSTER without a table"),
            ("CLUSTER VERBOSE", "CLUSTER without a table"),
            ("CLUSTER (VERBOSE)", "CLUSTER without a table"),
            ("CREATE DATABASE d", "CREATE DATABASE"),
            ("DROP DATABASE IF EXISTS d", "DROP DATABASE"),
            ("CREATE TABLESPACE ts LOCATION '/x'", "CREATE TABLESPACE"),
            ("DROP TABLESPACE ts", "DROP TABLESPACE"),
            ("ALTER SYSTEM SET work_mem = '4MB'", "ALTER SYSTEM"),
            (
                "ALTER DATABASE d SET TABLESPACE ts",
                "ALTER DATABASE ... SET TABLESPACE",
            ),
            (
                "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
                "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY",
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p",
                "CREATE SUBSCRIPTION",
            ),
            ("DROP SUBSCRIPTION s", "DROP SUBSCRIPTION"),
            (
                "ALTER SUBSCRIPTION s REFRESH PUBLICATION",
                "ALTER SUBSCRIPTION ... PUBLICATION / REFRESH",
            ),
        ] {
            assert_eq!(first(sql), Some((N, what.to_string())), "{sql}");
        }
        for sql in [
            "CREATE INDEX i ON t (x)",
            "CREATE INDEX concurrently_idx ON t (x)",
            "DROP INDEX i",
            "REINDEX TABLE t",
            "ANALYZE t",
            "CLUSTER t USING t_pkey",
            "CLUSTER VERBOSE t",
            "ALTER DATABASE d SET work_mem = '4MB'",
            "ALTER TABLE p DETACH PARTITION c",
            "ALTER SUBSCRIPTION s DISABLE",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY mv",
            "ALTER TYPE mood ADD VALUE 'great'",
            "SELECT 'VACUUM'",
        ] {
            assert_eq!(first(sql), None, "{sql}");
        }
    }

    #[test]
    fn do_blocks_are_looked_into() {
        use Rule::*;
        let sql = "SELECT 1;\nDO $$\nBEGIN\n  INSERT INTO t VALUES (1);\n  COMMIT;\nEND\n$$;";
        assert_eq!(
            found(sql),
            [(
                ProcedureTransactionControl,
                "COMMIT inside a DO block".to_string(),
                5
            )]
        );
        let sql = "DO LANGUAGE plpgsql $x$ BEGIN IF true THEN ROLLBACK; END IF; END $x$";
        assert_eq!(
            first(sql),
            Some((
                ProcedureTransactionControl,
                "ROLLBACK inside a DO block".into()
            ))
        );
        let sql = "DO $$\nDECLARE n int;\nBEGIN\nSET LOCAL search_path = public;\nEND $$";
        assert_eq!(
            found(sql),
            [(SessionState, "SET search_path inside a DO block".into(), 4)]
        );
        let sql = "DO $$ BEGIN PERFORM set_config('role', 'x', true); END $$";
        assert_eq!(
            first(sql),
            Some((
                SessionState,
                "set_config('role', ...) inside a DO block".into()
            ))
        );
        // A body given as a string literal, quotes doubled.
        let sql = "DO 'BEGIN PERFORM set_config(''search_path'', ''x'', true); END'";
        assert_eq!(
            first(sql),
            Some((
                SessionState,
                "set_config('search_path', ...) inside a DO block".into()
            ))
        );
        // Ordinary procedural code: an UPDATE that sets a column named role, a BEGIN block,
        // the words in strings and comments.
        for sql in [
            "DO $$ BEGIN UPDATE t SET role = 'x'; END $$",
            "DO $$ BEGIN RAISE NOTICE 'COMMIT;'; -- ROLLBACK\nEND $$",
            "DO $$ BEGIN FOR i IN 1..3 LOOP PERFORM i; END LOOP; END $$",
        ] {
            assert_eq!(first(sql), None, "{sql}");
        }
    }

    #[test]
    fn leading_keywords_skip_comments() {
        let s = split("/* x */ -- y\nCreate Unique Index Concurrently i ON t (x)").unwrap();
        assert_eq!(
            s[0].leading_keywords(4),
            ["create", "unique", "index", "concurrently"]
        );
        assert_eq!(s[0].leading_keywords(2), ["create", "unique"]);
    }

    /// Pieces of SQL that hold a `;` (or other traps) the splitter must not cut at.
    fn fragment() -> impl Strategy<Value = String> {
        let body = "[a-z ;'\"$\\\\\n-]{0,12}";
        prop_oneof![
            "[a-z_][a-z0-9_]{0,6}",
            "[0-9]{1,4}",
            "\\$[1-9]",
            body.prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            body.prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
            body.prop_map(|s| format!("\"{}x\"", s.replace('"', "\"\""))),
            ("[a-z]{0,3}", "[a-z ;'\"\n-]{0,12}").prop_map(|(tag, s)| format!("${tag}${s}${tag}$")),
            "[a-z ;'\"$]{0,12}".prop_map(|s| format!("-- {s}\n")),
            "[a-z ;'\"$]{0,12}".prop_map(|s| format!("/* {s} /* {s} */ {s} */")),
            "[a-z ;]{0,8}".prop_map(|s| format!("({s})")),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        proptest::collection::vec(fragment(), 0..6)
            .prop_map(|parts| format!("SELECT {} end_word", parts.join(" ")))
    }

    proptest! {
        #[test]
        fn statements_joined_by_semicolons_split_back_into_themselves(
            stmts in proptest::collection::vec(statement(), 1..6),
            seps in proptest::collection::vec("[ \n]{0,2};[ \n]{0,2}(-- c\n)?", 6),
        ) {
            let mut sql = String::new();
            for (i, s) in stmts.iter().enumerate() {
                sql.push_str(s);
                sql.push_str(&seps[i]);
            }
            let got = split(&sql).unwrap();
            let got_texts: Vec<&str> = got.iter().map(|s| s.text).collect();
            let want: Vec<&str> = stmts.iter().map(String::as_str).collect();
            prop_assert_eq!(got_texts, want);
            for s in &got {
                prop_assert_eq!(s.line, sql[..s.range.start].matches('\n').count() + 1);
                prop_assert!(s.findings().is_empty(), "{:?}", s.findings());
            }
        }

        #[test]
        fn any_text_splits_without_panicking_into_ordered_slices(sql in "\\PC{0,80}") {
            if let Ok(stmts) = split(&sql) {
                let mut end = 0;
                for s in &stmts {
                    prop_assert!(s.range.start >= end);
                    prop_assert_eq!(&sql[s.range.clone()], s.text);
                    // PostgreSQL's whitespace is ASCII only: a no-break space is part of a
                    // (malformed) statement, so Rust's Unicode trim would be the wrong test.
                    prop_assert!(!s.text.trim_matches(|c: char| c.is_ascii_whitespace()).is_empty());
                    let _ = s.findings();
                    end = s.range.end;
                }
            }
        }

        #[test]
        fn keywords_match_in_any_case(mask in proptest::collection::vec(any::<bool>(), 24)) {
            let flip = |w: &str| -> String {
                w.chars().zip(mask.iter().cycle()).map(|(c, up)| {
                    if *up { c.to_ascii_uppercase() } else { c }
                }).collect()
            };
            prop_assert_eq!(
                first(&flip("commit")).map(|f| f.0),
                Some(Rule::TransactionControl)
            );
            prop_assert_eq!(
                first(&format!("{} {}", flip("set"), flip("search_path = x"))).map(|f| f.0),
                Some(Rule::SessionState)
            );
            prop_assert_eq!(
                first(&flip("create index concurrently i on t (x)")).map(|f| f.0),
                Some(Rule::NoTransactionBlock)
            );
        }
    }
}
