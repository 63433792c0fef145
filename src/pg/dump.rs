//! Running pg_dump and pg_restore for one tenant schema, and the metadata file written
//! beside each dump. The connection reaches them through PG* variables, never the command
//! line (which other users can read), and the password never reaches output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::config::Host;

use crate::domain::exit::bad_input;
use crate::pg::connect::Target;

pub const FORMAT: &str = "tenantctl-backup/1";

/// What is recorded beside a dump (`<dump>.json`): which tenant, at which version, and the
/// dump's SHA-256, so a restore can refuse a truncated, corrupt or foreign file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub format: String,
    pub slug: String,
    pub schema: String,
    pub display_name: Option<String>,
    pub version: i64,
    pub role: Option<String>,
    pub file: String,
    pub sha256: String,
    pub created_at: String,
    pub server_major: i32,
    pub pg_dump: String,
    /// The server (`home` or a `[servers.NAME]`) and database the tenant was dumped from.
    /// Absent from records written before tenants could live elsewhere; restore does not
    /// need them (a tenant is restored where its registry row says it lives now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

pub fn metadata_path(dump: &Path) -> PathBuf {
    let mut p = dump.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// Writes the record beside the dump: 0600, never over an existing file or through a link.
pub fn write_metadata(dump: &Path, m: &Metadata) -> Result<crate::pg::outfile::Placed> {
    use std::io::Write;
    let path = metadata_path(dump);
    let pending = crate::pg::outfile::PendingFile::create(&path)?;
    pending
        .file()
        .write_all((serde_json::to_string_pretty(m)? + "\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    pending.persist()
}

pub fn read_metadata(dump: &Path) -> Result<Metadata> {
    let path = metadata_path(dump);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad_input(format!(
            "cannot read {} ({e}); tenantctl backup writes it beside every dump and restore needs it",
            path.display()
        ))
    })?;
    let m: Metadata = serde_json::from_str(&text).map_err(|e| {
        bad_input(format!(
            "{} is not a tenantctl backup record: {e}",
            path.display()
        ))
    })?;
    if m.format != FORMAT {
        return Err(bad_input(format!(
            "{} has format '{}', this tenantctl reads '{FORMAT}'",
            path.display(),
            m.format
        )));
    }
    Ok(m)
}

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A PostgreSQL client program (pg_dump, pg_restore) and its major version.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
    pub major: i32,
}

/// Finds `name`: `$TENANTCTL_<NAME>` if set, else the newest of Debian's
/// /usr/lib/postgresql/*/bin and PATH.
pub fn find_tool(name: &str) -> Result<Tool> {
    let var = format!("TENANTCTL_{}", name.to_uppercase().replace('-', "_"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    } else {
        if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
            candidates.extend(
                dirs.filter_map(|d| d.ok())
                    .map(|d| d.path().join("bin").join(name)),
            );
        }
        candidates.push(PathBuf::from(name));
    }
    // On a tie the first wins: Debian's /usr/lib/postgresql/N/bin/X, not the pg_wrapper
    // script on PATH, which costs a Perl start (about 0.2 s) per run.
    candidates
        .into_iter()
        .filter_map(|p| probe(&p).ok())
        .rev()
        .max_by_key(|t| t.major)
        .ok_or_else(|| {
            anyhow!("cannot find {name}; install Debian's postgresql-client package or set {var}")
        })
}

fn probe(path: &Path) -> Result<Tool> {
    let out = Command::new(path).arg("--version").output()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_major(&version).ok_or_else(|| anyhow!("unrecognised version '{version}'"))?;
    Ok(Tool {
        path: path.to_path_buf(),
        version,
        major,
    })
}

/// `pg_dump (PostgreSQL) 15.18 (Debian ...)` → 15; `9.6.24` → 9.
pub fn parse_major(version: &str) -> Option<i32> {
    let number = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = number.split('.');
    let first: i32 = parts.next()?.parse().ok()?;
    Some(first)
}

/// Refuses a client program older than the server: it could not read the server's catalog.
pub fn check_not_older(tool: &Tool, name: &str, server_major: i32) -> Result<()> {
    if tool.major < server_major {
        bail!(
            "{name} {} ({}) is older than the server (PostgreSQL {server_major}) and cannot dump it reliably; \
             install postgresql-client-{server_major} or set TENANTCTL_{}",
            tool.major,
            tool.path.display(),
            name.to_uppercase().replace('-', "_")
        );
    }
    Ok(())
}

/// A command for a client program, connected through PG* variables to `dbname`.
pub fn command(tool: &Tool, target: &Target, dbname: &str) -> Command {
    let c = &target.config;
    let mut cmd = Command::new(&tool.path);
    for var in ["PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGHOSTADDR"] {
        cmd.env_remove(var);
    }
    if let Some(host) = c.get_hosts().first() {
        cmd.env(
            "PGHOST",
            match host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            },
        );
    }
    cmd.env(
        "PGPORT",
        c.get_ports().first().copied().unwrap_or(5432).to_string(),
    );
    if let Some(u) = c.get_user() {
        cmd.env("PGUSER", u);
    }
    match c.get_password() {
        Some(pw) => cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned()),
        None => cmd.env_remove("PGPASSWORD"),
    };
    // Without a password, libpq in the tool reads the same password file tenantctl read.
    if let Some(file) = &target.passfile {
        cmd.env("PGPASSFILE", &file.path);
    }
    cmd.env("PGDATABASE", dbname);
    cmd.env("PGAPPNAME", "tenantctl");
    cmd.env("PGSSLMODE", target.ssl_mode.as_str());
    match &target.ssl_root_cert {
        Some(p) => cmd.env("PGSSLROOTCERT", p),
        None => cmd.env_remove("PGSSLROOTCERT"),
    };
    cmd
}

/// Runs a client program with its output going to `out` (a file tenantctl created); its
/// stderr becomes the error. The program is killed if the caller stops waiting (Ctrl-C).
pub async fn run_to_file(cmd: Command, out: &std::fs::File, what: String) -> Result<()> {
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(
            out.try_clone()
                .context("cannot hand the output file to the client program")?,
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let done = child
        .wait_with_output()
        .await
        .with_context(|| format!("{what} failed"))?;
    if done.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&done.stderr);
    bail!("{what} failed: {}", stderr.trim());
}

/// The table of contents of a dump (`pg_restore --list`), of the entries in `schema` only
/// when given (pg_restore's own exact test of an entry's schema). A file pg_restore cannot
/// read is refused (exit 2).
pub async fn list(restore: &Tool, file: &Path, schema: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(&restore.path);
    cmd.arg("--list");
    if let Some(s) = schema {
        cmd.arg("--schema").arg(s);
    }
    cmd.arg(file);
    crate::pg::dump_load::text_of(cmd, &format!("pg_restore --list {}", file.display()))
        .await
        .map_err(|e| {
            bad_input(format!(
                "{} is not a readable dump ({e:#}); nothing was changed",
                file.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17beta1"), None);
        assert_eq!(parse_major("nonsense"), None);
    }

    #[test]
    fn older_tools_are_refused() {
        let t = Tool {
            path: "pg_dump".into(),
            version: String::new(),
            major: 14,
        };
        let err = check_not_older(&t, "pg_dump", 15).unwrap_err().to_string();
        assert!(
            err.contains("older than the server (PostgreSQL 15)"),
            "{err}"
        );
        assert!(check_not_older(&t, "pg_dump", 14).is_ok());
        assert!(check_not_older(&t, "pg_dump", 13).is_ok());
    }

    #[test]
    fn metadata_sits_beside_the_dump() {
        assert_eq!(
            metadata_path(Path::new("/b/acme.dump")),
            PathBuf::from("/b/acme.dump.json")
        );
    }
}
