//! The migrations folder: loading, validating and planning. Pure logic, no database.
//!
//! refinery parses names and computes checksums, but silently skips files whose names do
//! not match and accepts duplicate versions, so the folder is listed and checked here first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use refinery::Migration;

use crate::domain::exit::bad_input;
use crate::domain::sql_split::{self, Finding, Rule};

/// The first line that makes a migration run on its own, outside a transaction (sqlx's
/// convention).
pub const NO_TRANSACTION: &str = "-- no-transaction";

/// The migrations of one run, sorted by version, with the fingerprint of each prefix.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
    /// digests[i] is the fingerprint of migrations[..=i].
    digests: Vec<String>,
    /// The versions whose file starts with `NO_TRANSACTION`.
    no_transaction: BTreeSet<i64>,
}

/// One applied migration as the tenant's history table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub checksum: u64,
}

impl From<&Migration> for AppliedMigration {
    /// The history row a migration file leaves once it has run.
    fn from(m: &Migration) -> Self {
        AppliedMigration {
            version: m.version() as i64,
            name: m.name().to_string(),
            checksum: m.checksum(),
        }
    }
}

impl std::fmt::Display for AppliedMigration {
    /// refinery's own form, `V<version>__<name>`, as in the file name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// What a run would do to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Pending migrations, in order (empty when current).
    Apply(Vec<(i64, String)>),
    /// The history differs from the files: nothing may be applied.
    Diverged(String),
}

impl MigrationSet {
    /// The history of a schema migrated from these files up to `version`.
    pub fn history_up_to(&self, version: i64) -> Vec<AppliedMigration> {
        self.migrations
            .iter()
            .filter(|m| m.version() as i64 <= version)
            .map(AppliedMigration::from)
            .collect()
    }

    /// Loads `V<version>__<name>.sql` files from `dir` (recursively, like refinery).
    /// Any other `.sql` file, a duplicate version or an unreadable file is an error.
    pub fn load(dir: &Path) -> Result<MigrationSet> {
        let mut files = Vec::new();
        collect_sql_files(dir, &mut files)?;
        let mut migrations: Vec<Migration> = Vec::new();
        let mut seen: BTreeMap<i64, PathBuf> = BTreeMap::new();
        for path in files {
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let stem = check_file_name(file_name)
                .map_err(|why| bad_input(format!("migration file {} {why}", path.display())))?;
            let sql = std::fs::read_to_string(&path).map_err(|e| {
                bad_input(format!(
                    "cannot read migration file {}: {e}",
                    path.display()
                ))
            })?;
            check_contents(&sql).map_err(|why| bad_input(format!("{} {why}", path.display())))?;
            let m = Migration::unapplied(stem, &sql)
                .map_err(|e| bad_input(format!("migration file {}: {e}", path.display())))?;
            if let Some(other) = seen.insert(m.version() as i64, path.clone()) {
                return Err(bad_input(format!(
                    "migration files {} and {} share version {}; versions must be unique",
                    other.display(),
                    path.display(),
                    m.version()
                )));
            }
            migrations.push(m);
        }
        migrations.sort_by_key(|m| m.version());
        Ok(Self::from_migrations(dir.to_path_buf(), migrations))
    }

    pub fn from_migrations(dir: PathBuf, migrations: Vec<Migration>) -> MigrationSet {
        let mut acc = Fnv::new();
        let digests = migrations
            .iter()
            .map(|m| {
                acc.write(format!("{}:{}:{};", m.version(), m.name(), m.checksum()).as_bytes());
                acc.hex()
            })
            .collect();
        let no_transaction = migrations
            .iter()
            .filter(|m| m.sql().is_some_and(is_no_transaction))
            .map(|m| m.version() as i64)
            .collect();
        MigrationSet {
            dir,
            migrations,
            digests,
            no_transaction,
        }
    }

    /// Whether the migration `version` runs on its own, outside a transaction.
    pub fn is_no_transaction(&self, version: i64) -> bool {
        self.no_transaction.contains(&version)
    }

    /// The first migration above `version`, up to `target`, that runs outside a transaction.
    pub fn next_no_transaction(&self, version: i64, target: i64) -> Option<&Migration> {
        if version >= target {
            return None;
        }
        let v = *self.no_transaction.range(version + 1..=target).next()?;
        self.find(v)
    }

    /// The highest migration version below `version` (0 when there is none).
    pub fn version_before(&self, version: i64) -> i64 {
        self.migrations
            .iter()
            .map(|m| m.version() as i64)
            .filter(|v| *v < version)
            .max()
            .unwrap_or(0)
    }

    /// `V<version>__<name>`, marked when it runs outside a transaction (for plans).
    pub fn describe(&self, version: i64, name: &str) -> String {
        if self.is_no_transaction(version) {
            format!("V{version}__{name} (alone, without a transaction)")
        } else {
            format!("V{version}__{name}")
        }
    }

    /// The highest version in the folder (0 when it is empty).
    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version() as i64)
    }

    /// The version a run aims at: `target` if given (it must exist), else the latest.
    pub fn resolve_target(&self, target: Option<i64>) -> Result<i64> {
        match target {
            None => Ok(self.latest()),
            Some(0) => Ok(0),
            Some(v) if self.migrations.iter().any(|m| m.version() as i64 == v) => Ok(v),
            Some(v) => Err(bad_input(format!(
                "--target {v} is not a migration in {} (latest is {})",
                self.dir.display(),
                self.latest()
            ))),
        }
    }

    /// The fingerprint of every migration up to and including `version`: equal fingerprints
    /// mean the tenant's applied history matches these files, so it need not be visited.
    pub fn digest_at(&self, version: i64) -> Option<&str> {
        if version == 0 {
            return Some("0");
        }
        let idx = self
            .migrations
            .iter()
            .rposition(|m| m.version() as i64 <= version)?;
        (self.migrations[idx].version() as i64 == version).then(|| self.digests[idx].as_str())
    }

    /// How many migrations lie above `version`, up to `target`.
    pub fn pending_count(&self, version: i64, target: i64) -> usize {
        self.migrations
            .iter()
            .filter(|m| (m.version() as i64) > version && (m.version() as i64) <= target)
            .count()
    }

    /// The history a tenant at `version` has when it was migrated from these files: each
    /// migration up to `version`, as refinery reads it back from a history table.
    pub fn applied_up_to(&self, version: i64) -> Vec<Migration> {
        self.migrations
            .iter()
            .filter(|m| m.version() as i64 <= version)
            .map(|m| {
                Migration::applied(
                    m.version(),
                    m.name().to_string(),
                    time::OffsetDateTime::UNIX_EPOCH,
                    m.checksum(),
                )
            })
            .collect()
    }

    pub fn find(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .iter()
            .find(|m| m.version() as i64 == version)
    }

    /// Compares a tenant's history with the files, as refinery does before applying: every
    /// applied migration must exist with the same checksum, and no file may sit below the
    /// applied maximum without having been applied.
    pub fn plan(&self, applied: &[AppliedMigration], target: i64) -> Plan {
        for a in applied {
            match self.find(a.version) {
                None => {
                    return Plan::Diverged(format!(
                        "applied migration {a} is missing from {}",
                        self.dir.display()
                    ))
                }
                Some(m) if m.checksum() != a.checksum || m.name() != a.name => {
                    return Plan::Diverged(format!(
                        "applied migration {a} differs from the file {m} (its checksum changed)"
                    ))
                }
                Some(_) => {}
            }
        }
        let current = applied.iter().map(|a| a.version).max().unwrap_or(0);
        if let Some(m) = self.migrations.iter().find(|m| {
            (m.version() as i64) < current
                && !applied.iter().any(|a| a.version == m.version() as i64)
        }) {
            return Plan::Diverged(format!(
                "migration {m} was never applied but the tenant is already at version {current}"
            ));
        }
        Plan::Apply(
            self.migrations
                .iter()
                .filter(|m| (m.version() as i64) > current && (m.version() as i64) <= target)
                .map(|m| (m.version() as i64, m.name().to_string()))
                .collect(),
        )
    }
}

/// Returns the file stem when the name is `V<digits>__<word chars>.sql`.
fn check_file_name(name: &str) -> std::result::Result<&str, String> {
    let rule = "must be named V<version>__<name>.sql (capital V, two underscores, name of a-z, A-Z, 0-9, _)";
    let stem = name.strip_suffix(".sql").ok_or_else(|| rule.to_string())?;
    let rest = stem
        .strip_prefix('V')
        .ok_or_else(|| format!("{rule}; unversioned or lower-case prefixes are not supported"))?;
    let (version, label) = rest.split_once("__").ok_or_else(|| rule.to_string())?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{rule}; the version must be a whole number"));
    }
    match version.parse::<i32>() {
        Err(_) => {
            return Err(format!(
                "{rule}; version {version} is larger than 2147483647"
            ))
        }
        Ok(0) => {
            return Err(format!(
                "{rule}; versions start at 1 (version 0 is a tenant with no migration applied)"
            ))
        }
        Ok(_) => {}
    }
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(rule.to_string());
    }
    Ok(stem)
}

/// Whether a migration's text starts with the `-- no-transaction` line.
pub fn is_no_transaction(sql: &str) -> bool {
    sql.lines().next().map(str::trim_end) == Some(NO_TRANSACTION)
}

/// The checks of a migration file that runs in a transaction, for SQL that is not a
/// migration file (a seed file, `exec`'s SQL): at least one statement, no transaction
/// control, no change of search_path or role, nothing PostgreSQL refuses in a transaction
/// block. The error starts with the line it is about.
pub fn check_sql(sql: &str) -> std::result::Result<(), String> {
    if is_no_transaction(sql) {
        return Err(format!(
            "line 1: `{NO_TRANSACTION}` means nothing here: this SQL always runs inside a \
             transaction; remove that line"
        ));
    }
    check_contents(sql)
}

/// Checks what a migration file holds, before any tenant is touched: at least one
/// statement; no transaction control and no change of search_path or role anywhere; and,
/// unless the file runs on its own (`-- no-transaction`), nothing PostgreSQL refuses inside
/// a transaction block. The error starts with the line it is about.
fn check_contents(sql: &str) -> std::result::Result<(), String> {
    let alone = is_no_transaction(sql);
    if !alone {
        check_marker_lookalike(sql)?;
    }
    let statements = sql_split::split(sql).map_err(|e| {
        format!(
            "line {}: {}; PostgreSQL could not read this file either",
            e.line, e.message
        )
    })?;
    if statements.is_empty() {
        return Err(
            "holds no SQL statement (only comments or whitespace); write the migration, or \
             delete the file if it is not needed"
                .to_string(),
        );
    }
    let refused = statements
        .iter()
        .flat_map(|s| s.findings())
        .find(|f| refused_in(f, alone));
    match refused {
        Some(f) => Err(format!("line {}: {}", f.line, refusal(&f, sql))),
        None => Ok(()),
    }
}

/// Transaction control and session changes are refused in every file; what cannot run in
/// a transaction block only where it would (not in a `-- no-transaction` file).
fn refused_in(f: &Finding, alone: bool) -> bool {
    match f.rule {
        Rule::TransactionControl | Rule::SessionState => true,
        Rule::NoTransactionBlock | Rule::ProcedureTransactionControl => !alone,
    }
}

/// Why a finding is refused, and what to do instead.
fn refusal(f: &Finding, sql: &str) -> String {
    let what = &f.what;
    let each_commits = format!(
        "each tenant's pending migrations run in one transaction, and in a file whose first \
         line is `{NO_TRANSACTION}` each statement commits on its own"
    );
    match f.rule {
        Rule::TransactionControl if what.starts_with("BEGIN") || what.starts_with("START") => {
            format!(
                "{what} opens a transaction inside tenantctl's per-tenant transaction; remove it \
                 ({each_commits})"
            )
        }
        Rule::TransactionControl => format!(
            "{what} ends or changes tenantctl's per-tenant transaction half way, releasing the \
             tenant's lock and search_path; remove it ({each_commits})"
        ),
        Rule::SessionState if moves_search_path(what) => format!(
            "{what} would move the statements after it out of the tenant's schema (unqualified \
             names would land elsewhere); remove it: tenantctl points search_path at the \
             tenant's schema itself"
        ),
        Rule::SessionState => format!(
            "{what} would run the statements after it as another role; remove it (migrations \
             run as the role tenantctl connects as, which owns the tenant schemas)"
        ),
        Rule::NoTransactionBlock | Rule::ProcedureTransactionControl => {
            let misplaced = sql.lines().skip(1).any(|l| l.trim_end() == NO_TRANSACTION);
            let hint = if misplaced {
                format!(" (the `{NO_TRANSACTION}` line of this file counts only as its first line)")
            } else {
                String::new()
            };
            format!(
                "{what} cannot run inside a transaction block, and each tenant's pending \
                 migrations run in one; put it in a file of its own whose first line is \
                 `{NO_TRANSACTION}` (it then runs alone, outside a transaction, under the \
                 tenant's lock){hint}"
            )
        }
    }
}

/// `SET search_path`, its RESET and set_config, `RESET ALL`, `DISCARD ALL` (as opposed to
/// a change of role).
fn moves_search_path(what: &str) -> bool {
    what.contains("search_path") || what.contains(" ALL")
}

/// A first line that looks like the marker but is not it (`--no-transaction`,
/// `-- No Transaction`): the operator meant it, and the file would run in a transaction.
fn check_marker_lookalike(sql: &str) -> std::result::Result<(), String> {
    let first = sql.lines().next().unwrap_or_default().trim();
    let Some(comment) = first.strip_prefix("--") else {
        return Ok(());
    };
    let squashed: String = comment
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    if squashed == "notransaction" {
        return Err(format!(
            "line 1: `{first}` is not the marker `{NO_TRANSACTION}`; write it exactly so (the file \
             then runs alone, outside a transaction), or remove the line"
        ));
    }
    Ok(())
}

fn collect_sql_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        bad_input(format!(
            "cannot read migrations folder {}: {e}; set --migrations, TENANTCTL_MIGRATIONS or [migrations] dir",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_sql_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql")) {
            out.push(p);
        }
    }
    Ok(())
}

/// FNV-1a, 64 bit: a stable fingerprint (std's hasher may change between Rust releases).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> MigrationSet {
        let ms = files
            .iter()
            .map(|(n, sql)| Migration::unapplied(n, sql).unwrap())
            .collect();
        MigrationSet::from_migrations(PathBuf::from("m"), ms)
    }

    fn applied(s: &MigrationSet, upto: i64) -> Vec<AppliedMigration> {
        s.history_up_to(upto)
    }

    #[test]
    fn file_names_follow_refinery_and_nothing_is_skipped_silently() {
        assert_eq!(check_file_name("V1__employees.sql"), Ok("V1__employees"));
        assert_eq!(
            check_file_name("V006__zero_padded.sql"),
            Ok("V006__zero_padded")
        );
        for bad in [
            "v1__lower.sql",
            "V1_one.sql",
            "V1__with-dash.sql",
            "U2__x.sql",
            "V__x.sql",
            "V1.5__x.sql",
            "V99999999999__x.sql",
            "V1__.sql",
            "V0__zero.sql",
            "V000__zero.sql",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_pending_and_target() {
        let s = set(&[("V1__a", "a"), ("V2__b", "b"), ("V3__c", "c")]);
        assert_eq!(
            s.plan(&applied(&s, 1), 3),
            Plan::Apply(vec![(2, "b".into()), (3, "c".into())])
        );
        assert_eq!(
            s.plan(&applied(&s, 1), 2),
            Plan::Apply(vec![(2, "b".into())])
        );
        assert_eq!(s.plan(&applied(&s, 3), 3), Plan::Apply(vec![]));
        assert_eq!(s.pending_count(1, 3), 2);
    }

    #[test]
    fn refuses_changed_and_missing_migrations_by_name() {
        let s = set(&[("V1__a", "a"), ("V2__b", "b")]);
        let changed = set(&[("V1__a", "a changed"), ("V2__b", "b")]);
        match changed.plan(&applied(&s, 2), 2) {
            Plan::Diverged(why) => {
                assert!(why.contains("V1__a") && why.contains("checksum"), "{why}")
            }
            p => panic!("{p:?}"),
        }
        let gone = set(&[("V2__b", "b")]);
        match gone.plan(&applied(&s, 2), 2) {
            Plan::Diverged(why) => {
                assert!(why.contains("V1__a") && why.contains("missing"), "{why}")
            }
            p => panic!("{p:?}"),
        }
        let gap = set(&[("V1__a", "a"), ("V2__b", "b"), ("V3__c", "c")]);
        let mut hist = applied(&gap, 3);
        hist.remove(1);
        assert!(matches!(gap.plan(&hist, 3), Plan::Diverged(w) if w.contains("V2__b")));
    }

    #[test]
    fn digests_change_with_any_applied_file() {
        let s = set(&[("V1__a", "a"), ("V2__b", "b")]);
        let t = set(&[("V1__a", "a "), ("V2__b", "b")]);
        assert_eq!(s.digest_at(0), Some("0"));
        assert_ne!(s.digest_at(1), t.digest_at(1));
        assert_ne!(s.digest_at(2), t.digest_at(2));
        assert_eq!(
            s.digest_at(2),
            set(&[("V1__a", "a"), ("V2__b", "b"), ("V3__c", "c")]).digest_at(2)
        );
        assert_eq!(s.digest_at(5), None);
    }

    #[test]
    fn the_example_migrations_pass_the_checks() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let set = MigrationSet::load(&dir).unwrap();
        assert_eq!(set.latest(), 7);
        assert!((1..=7).all(|v| !set.is_no_transaction(v)));
    }

    #[test]
    fn refused_contents_name_the_line_and_the_rule() {
        for (sql, line, needle) in [
            (
                "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);",
                2,
                "COMMIT ends",
            ),
            ("BEGIN;\nCREATE TABLE a (id int);", 1, "BEGIN opens"),
            (
                "-- x\n\nSET search_path = public;",
                3,
                "SET search_path would move",
            ),
            ("SET ROLE admin;", 1, "SET ROLE would run"),
            ("SET SESSION AUTHORIZATION bob;", 1, "another role"),
            (
                "CREATE INDEX CONCURRENTLY i ON t (x);",
                1,
                "cannot run inside a transaction block",
            ),
            ("SELECT 1;\nVACUUM t;", 2, "VACUUM cannot run"),
            (
                "DO $$ BEGIN COMMIT; END $$;",
                1,
                "COMMIT inside a DO block cannot run",
            ),
            ("SELECT 'open", 1, "unterminated quoted string"),
        ] {
            let why = check_contents(sql).unwrap_err();
            assert!(why.starts_with(&format!("line {line}: ")), "{sql}: {why}");
            assert!(why.contains(needle), "{sql}: {why}");
        }
        let why = check_contents("-- x\n-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);")
            .unwrap_err();
        assert!(why.contains("counts only as its first line"), "{why}");
    }

    #[test]
    fn empty_files_and_marker_lookalikes_are_refused() {
        for sql in [
            "",
            "  \n",
            "-- only a comment\n/* and another; */\n",
            "-- no-transaction\n",
        ] {
            let why = check_contents(sql).unwrap_err();
            assert!(why.contains("holds no SQL statement"), "{sql:?}: {why}");
        }
        for first in ["--no-transaction", "-- No Transaction", "-- no_transaction"] {
            let why = check_contents(&format!("{first}\nVACUUM;")).unwrap_err();
            assert!(
                why.starts_with("line 1: ") && why.contains("is not the marker"),
                "{why}"
            );
        }
    }

    #[test]
    fn a_no_transaction_file_may_hold_what_a_transaction_cannot() {
        let alone = "-- no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS i;\n\
                     CREATE INDEX CONCURRENTLY i ON t (x);\nVACUUM t;\n\
                     DO $$ BEGIN COMMIT; END $$;\n";
        assert_eq!(check_contents(alone), Ok(()));
        assert!(is_no_transaction(alone));
        assert!(is_no_transaction("-- no-transaction  \r\nVACUUM"));
        // Transaction control and session changes stay refused there.
        for bad in ["COMMIT;", "SET search_path = x;", "SET ROLE x;", "BEGIN;"] {
            let sql = format!("-- no-transaction\nSELECT 1;\n{bad}");
            let why = check_contents(&sql).unwrap_err();
            assert!(why.starts_with("line 3: "), "{why}");
        }
        // Semicolons inside bodies, strings and comments are not statement ends.
        let tricky = "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$\n\
                      BEGIN RETURN 'COMMIT; BEGIN'; END $$;\n\
                      -- COMMIT;\n/* SET ROLE x; */ SELECT E'\\'; COMMIT';";
        assert_eq!(check_contents(tricky), Ok(()));
    }

    #[test]
    fn no_transaction_files_split_the_plan() {
        let s = set(&[
            ("V1__a", "a"),
            ("V2__b", "-- no-transaction\nb"),
            ("V4__c", "c"),
            ("V7__d", "-- no-transaction\nd"),
        ]);
        assert!(s.is_no_transaction(2) && s.is_no_transaction(7) && !s.is_no_transaction(4));
        assert_eq!(s.next_no_transaction(0, 7).map(|m| m.version()), Some(2));
        assert_eq!(s.next_no_transaction(2, 7).map(|m| m.version()), Some(7));
        assert_eq!(s.next_no_transaction(2, 6).map(|m| m.version()), None);
        assert_eq!(s.next_no_transaction(7, 7).map(|m| m.version()), None);
        assert_eq!(s.next_no_transaction(9, 7).map(|m| m.version()), None);
        assert_eq!(s.version_before(7), 4);
        assert_eq!(s.version_before(1), 0);
        assert_eq!(s.describe(2, "b"), "V2__b (alone, without a transaction)");
        assert_eq!(s.describe(4, "c"), "V4__c");
    }

    #[test]
    fn targets_must_exist() {
        let s = set(&[("V1__a", "a"), ("V3__c", "c")]);
        assert_eq!(s.resolve_target(None).unwrap(), 3);
        assert_eq!(s.resolve_target(Some(1)).unwrap(), 1);
        assert!(s.resolve_target(Some(2)).is_err());
    }
}
