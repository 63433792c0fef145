//! The password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), with libpq's rules:
//! lines `hostname:port:database:username:password`, `*` matching anything, `\` escaping
//! `:` and `\`, `#` starting a comment, the first matching line winning. A file that group
//! or others may read or write is ignored with libpq's warning.

use std::path::{Path, PathBuf};

/// A password file that passed libpq's checks, read once.
#[derive(Clone)]
pub struct Passfile {
    pub path: PathBuf,
    lines: Vec<String>,
}

/// The path only: the lines hold passwords.
impl std::fmt::Debug for Passfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passfile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What to look a password up for: one host of the connection.
pub struct Key<'a> {
    /// The host as libpq names it for this file: a host name, an IP address, a socket
    /// folder, or `localhost` for the default socket folder.
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

impl Passfile {
    /// Reads `path` as libpq does: a missing file is silently no file; one that is not a
    /// plain file, or that group or others can access, is ignored with a warning on
    /// stderr (libpq's words); one that cannot be read is ignored too.
    pub fn load(path: &Path) -> Option<Passfile> {
        match Self::check(path) {
            Ok(Some(p)) => Some(p),
            Ok(None) => None,
            Err(warning) => {
                crate::errln!("WARNING: {warning}");
                None
            }
        }
    }

    /// `Ok(None)`: no file. `Err`: the warning to print.
    fn check(path: &Path) -> Result<Option<Passfile>, String> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Err(format!(
                "password file \"{}\" is not a plain file",
                path.display()
            ));
        }
        if insecure(&meta) {
            return Err(format!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                path.display()
            ));
        }
        let text = std::fs::read(path)
            .map_err(|e| format!("password file \"{}\" cannot be read: {e}", path.display()))?;
        Ok(Some(Passfile::from_text(
            path,
            &String::from_utf8_lossy(&text),
        )))
    }

    pub fn from_text(path: &Path, text: &str) -> Passfile {
        Passfile {
            path: path.to_path_buf(),
            lines: text
                .lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect(),
        }
    }

    /// The password of the first line matching `key`; libpq looks nothing up without a
    /// database or user name.
    pub fn lookup(&self, key: &Key) -> Option<String> {
        if key.dbname.is_empty() || key.user.is_empty() {
            return None;
        }
        let port = key.port.to_string();
        let wanted = [key.host, port.as_str(), key.dbname, key.user];
        self.lines.iter().find_map(|line| match_line(line, &wanted))
    }
}

#[cfg(unix)]
fn insecure(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn insecure(_: &std::fs::Metadata) -> bool {
    false
}

/// The password when the four fields of `line` match `wanted`, libpq's pwdfMatchesString:
/// a field that is exactly `*` matches anything, else it must equal the value once its
/// backslash escapes are undone.
fn match_line(line: &str, wanted: &[&str; 4]) -> Option<String> {
    let mut rest = line;
    for value in wanted {
        rest = match_field(rest, value)?;
    }
    // The password ends at the next unescaped ':' (libpq ignores what follows).
    let mut password = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => password.push(next),
                None => password.push('\\'),
            },
            c => password.push(c),
        }
    }
    Some(password)
}

/// Matches one field at the start of `s`; returns what follows its ':'.
fn match_field<'a>(s: &'a str, value: &str) -> Option<&'a str> {
    if let Some(rest) = s.strip_prefix("*:") {
        return Some(rest);
    }
    let mut field = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => field.extend(chars.next().map(|(_, c)| c)),
            ':' => return (field == value).then(|| &s[i + 1..]),
            c => field.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Passfile {
        Passfile::from_text(Path::new("/p"), text)
    }

    fn key<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port,
            dbname,
            user,
        }
    }

    #[test]
    fn first_matching_line_wins_and_stars_match_anything() {
        let f = file(
            "# comment\n\ndb1:5432:app:alice:one\n*:5432:*:alice:two\n*:*:*:*:three\nlate:5432:app:alice:four\n",
        );
        assert_eq!(f.lookup(&key("db1", 5432, "app", "alice")).unwrap(), "one");
        assert_eq!(f.lookup(&key("db2", 5432, "app", "alice")).unwrap(), "two");
        assert_eq!(f.lookup(&key("late", 5432, "app", "alice")).unwrap(), "two");
        assert_eq!(f.lookup(&key("db1", 6000, "app", "bob")).unwrap(), "three");
    }

    #[test]
    fn fields_must_match_whole() {
        let f = file("db:5432:app:alice:pw\n");
        assert!(f.lookup(&key("db", 54321, "app", "alice")).is_none());
        assert!(f.lookup(&key("d", 5432, "app", "alice")).is_none());
        assert!(f.lookup(&key("db", 5432, "app", "alic")).is_none());
        assert!(f.lookup(&key("db", 5432, "apps", "alice")).is_none());
        // libpq looks nothing up without a database or a user.
        assert!(file("*:*:*:*:pw").lookup(&key("h", 1, "", "u")).is_none());
    }

    #[test]
    fn backslash_escapes_colons_and_backslashes() {
        let f = file("/run/pg\\:x:5432:d\\\\b:u:p\\:w\\\\d:ignored\n");
        assert_eq!(
            f.lookup(&key("/run/pg:x", 5432, "d\\b", "u")).unwrap(),
            "p:w\\d"
        );
        // A `*` that is escaped or part of a longer field is literal.
        let f = file("\\*:5432:d:u:star\n*x:5432:d:u:starx\n");
        assert_eq!(f.lookup(&key("*", 5432, "d", "u")).unwrap(), "star");
        assert!(f.lookup(&key("h", 5432, "d", "u")).is_none());
    }

    #[test]
    fn crlf_lines_and_short_lines() {
        let f = file("h:5432:d:u\r\nh:5432:d:u:pw\r\n");
        assert_eq!(f.lookup(&key("h", 5432, "d", "u")).unwrap(), "pw");
    }

    #[cfg(unix)]
    #[test]
    fn files_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tenantctl-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Passfile::check(&path).unwrap_err();
        assert!(err.contains("has group or world access"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Passfile::check(&path).unwrap().is_some());
        assert!(Passfile::check(&dir.join("missing")).unwrap().is_none());
        assert!(Passfile::check(&dir)
            .unwrap_err()
            .contains("not a plain file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
