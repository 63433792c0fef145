//! `tenantctl backup SLUG [-o FILE]`: a consistent custom-format dump of one tenant's schema,
//! its registry row and version recorded beside it, and the dump's SHA-256.
//! `backup -l SEL --output-dir DIR`: the same for each tenant a selector picks, in turn.
//!
//! The dump and its record hold health data: both are created 0600, with O_EXCL and
//! O_NOFOLLOW, under a temporary name in the destination folder, and get their final names
//! only when complete; a failure, a lock wait that runs out or Ctrl-C leaves neither.

use crate::pg::connect::PgContext;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::BackupArgs;
use crate::commands::session::Session;
use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::domain::selector::Selector;
use crate::fleet::signals::{self, Signals};
use crate::pg::connect::Target;
use crate::pg::dump::{self, Metadata, Tool};
use crate::pg::outfile::{self, PendingFile};
use crate::registry;
use crate::tenant::apply::locked_transaction;

pub async fn run(s: &Session, args: &BackupArgs) -> Result<u8> {
    let slug = match (&args.slug, &args.select.selector) {
        (Some(_), Some(_)) => {
            return Err(bad_input(
                "name a tenant or give -l/--selector, not both; no backup was written",
            ))
        }
        (None, Some(sel)) => return run_selected(s, args, sel).await,
        (Some(slug), None) => slug,
        (None, None) => return Err(bad_input("name a tenant to back up, or give -l/--selector")),
    };
    let file = match (&args.output, &args.output_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => {
            let create = check_folder(dir, args.create_dir)?;
            let file = default_file(dir, slug);
            if create {
                outfile::create_private_dir(dir)?;
            }
            file
        }
        (None, None) => default_file(Path::new("."), slug),
    };
    // Before anything is changed, the registry included.
    check_destination(&file)?;
    let (_pool, mut conn) = s.connect(1).await?;
    let lock_wait = s.lock_deadline();
    let mut signals = Signals::listen()?;
    let m = tokio::select! {
        r = backup_tenant(s, &mut conn, slug, &file, lock_wait) => r?,
        sig = signals.recv() => {
            let msg = format!("interrupted by {sig}: the backup was stopped and no file was left");
            return Ok(signals::interrupted(s.json(), &msg));
        }
    };
    if s.json() {
        crate::output::print_json(&json!(m));
    } else {
        crate::outln!(
            "backup of {} (schema {}, version {}) written to {}\nmetadata: {}\nsha256: {}",
            m.slug,
            m.schema,
            m.version,
            file.display(),
            dump::metadata_path(&file).display(),
            m.sha256
        );
    }
    Ok(0)
}

/// `backup -l SEL --output-dir DIR`: every tenant the selector picks, one after the other,
/// each under its lock, into DIR. Every file name is checked before the first is written;
/// the first failure stops the run and says which tenants were backed up.
async fn run_selected(s: &Session, args: &BackupArgs, sel: &Selector) -> Result<u8> {
    if args.output.is_some() {
        return Err(bad_input(
            "-o/--output names one file; with -l/--selector give --output-dir DIR (one dump \
             per tenant in it); no backup was written",
        ));
    }
    let Some(dir) = &args.output_dir else {
        return Err(bad_input(
            "with -l/--selector give --output-dir DIR: each tenant's dump is written there \
             (--create-dir to create it); no backup was written",
        ));
    };
    let create = check_folder(dir, args.create_dir)?;
    let (_pool, mut conn) = s.connect(1).await?;
    let tenants = registry::selected(&conn, sel).await?;
    if tenants.is_empty() {
        return Err(bad_input(format!(
            "selector '{sel}' matched no tenant; no backup was written (see tenantctl list)"
        )));
    }
    let files: Vec<(String, PathBuf)> = tenants
        .iter()
        .map(|t| (t.slug.clone(), default_file(dir, &t.slug)))
        .collect();
    if !create {
        for (_, file) in &files {
            check_destination(file)?;
        }
    }
    if create {
        outfile::create_private_dir(dir)?;
    }
    let lock_wait = s.lock_deadline();
    let done = RefCell::new(Vec::new());
    let mut signals = Signals::listen()?;
    tokio::select! {
        r = back_up_each(s, &mut conn, &files, lock_wait, &done) => r?,
        sig = signals.recv() => {
            let msg = format!(
                "interrupted by {sig}: {}; the backup in progress was stopped and left no file",
                backed_up(&done.borrow(), files.len())
            );
            return Ok(signals::interrupted(s.json(), &msg));
        }
    };
    let done = done.into_inner();
    if s.json() {
        crate::output::print_json(
            &json!({ "output_dir": dir.display().to_string(), "backups": done }),
        );
    } else {
        crate::outln!(
            "backup: {} written to {}",
            crate::output::count(done.len(), "tenant"),
            dir.display()
        );
    }
    Ok(0)
}

/// Backs each tenant up to its file, in order, printing a line per tenant (text); the
/// metadata of each backed up goes into `done`. Stops at the first failure.
async fn back_up_each(
    s: &Session,
    conn: &mut deadpool_postgres::Object,
    files: &[(String, PathBuf)],
    deadline: std::time::Duration,
    done: &RefCell<Vec<Metadata>>,
) -> Result<()> {
    for (slug, file) in files {
        let m = backup_tenant(s, conn, slug, file, deadline)
            .await
            .with_context(|| {
                format!(
                    "cannot back up tenant {slug}; {} (the rest were not started)",
                    backed_up(&done.borrow(), files.len())
                )
            })?;
        if !s.json() {
            crate::outln!(
                "backup of {} (schema {}, version {}) written to {} (sha256 {})",
                crate::output::escape_line(&m.slug),
                m.schema,
                m.version,
                file.display(),
                m.sha256
            );
        }
        done.borrow_mut().push(m);
    }
    Ok(())
}

/// `backed up 2 of 5 tenants: acme, globex` (their files are kept).
fn backed_up(done: &[Metadata], total: usize) -> String {
    if done.is_empty() {
        return format!("no tenant of {total} was backed up");
    }
    let slugs: Vec<&str> = done.iter().map(|m| m.slug.as_str()).collect();
    format!(
        "backed up {} of {total} ({}; their files are kept)",
        done.len(),
        slugs.join(", ")
    )
}

/// Refuses (exit 2) a path that is not a folder, and a missing folder unless `create`;
/// whether the folder is to be created.
fn check_folder(dir: &Path, create: bool) -> Result<bool> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(bad_input(format!(
            "{} is not a folder; no backup was written",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(bad_input(format!(
            "folder {} does not exist; create it (mode 0700) or pass --create-dir; no backup \
             was written",
            dir.display()
        ))),
        Err(e) => Err(bad_input(format!(
            "cannot use folder {}: {e}; no backup was written",
            dir.display()
        ))),
    }
}

/// `<dir>/<slug>-<UTC timestamp>.dump`.
pub fn default_file(dir: &Path, slug: &str) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc();
    dir.join(format!(
        "{slug}-{:04}{:02}{:02}T{:02}{:02}{:02}Z.dump",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    ))
}

/// Refuses (exit 2) a dump file or record that exists (a symbolic link included) or whose
/// folder is missing.
pub fn check_destination(file: &Path) -> Result<()> {
    outfile::check_new_path(file, "backups")?;
    outfile::check_new_path(&dump::metadata_path(file), "backup records")
}

/// Dumps one tenant to `file` (refusing to overwrite), holding the tenant's lock where it
/// lives (home, another server, its own database) so no migration changes it meanwhile,
/// and writes the metadata beside it, naming the server and database it came from.
pub async fn backup_tenant(
    s: &Session,
    conn: &mut deadpool_postgres::Object,
    slug: &str,
    file: &Path,
    deadline: std::time::Duration,
) -> Result<Metadata> {
    check_destination(file)?;
    let Some(found) = registry::some(&*conn, &[slug.to_string()]).await?.pop() else {
        return Err(bad_input(format!(
            "unknown tenant {slug} (see tenantctl list)"
        )));
    };
    let pending = PendingFile::create(file)?;
    let pg_dump = dump::find_tool("pg_dump")?;
    let dumped = if s.at_home(&found) {
        dump_at_home(s, conn, &pg_dump, slug, &found.schema, &pending, deadline).await?
    } else {
        dump_elsewhere(s, &pg_dump, found, &pending, deadline).await?
    };
    let sha256 = dump::sha256_file(pending.temp_path())?;
    let placed = pending.persist()?;
    let t = dumped.tenant;
    let m = Metadata {
        format: dump::FORMAT.into(),
        slug: t.slug.clone(),
        schema: t.schema.clone(),
        display_name: t.display_name.clone(),
        version: dumped.version,
        role: t.role.clone(),
        file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        server_major: dumped.server_major,
        pg_dump: pg_dump.version.clone(),
        server: Some(t.server.clone()),
        database: Some(t.database.clone()),
    };
    // The dump is kept only with its record.
    dump::write_metadata(file, &m)?.keep();
    placed.keep();
    Ok(m)
}

/// What a dump was made of: the tenant's row, its version and its server's major version.
struct Dumped {
    tenant: registry::Tenant,
    version: i64,
    server_major: i32,
}

/// A tenant in the registry's own database: its lock and its row in one transaction.
async fn dump_at_home(
    s: &Session,
    conn: &mut deadpool_postgres::Object,
    pg_dump: &Tool,
    slug: &str,
    schema: &str,
    pending: &PendingFile,
    deadline: std::time::Duration,
) -> Result<Dumped> {
    let server_major = registry::server_major(&*conn).await?;
    dump::check_not_older(pg_dump, "pg_dump", server_major)
        .map_err(|e| bad_input(format!("{e:#}")))?;
    let (tx, exists) = locked_transaction(conn, slug, schema, deadline)
        .await
        .with_context(|| format!("no backup of tenant {slug} was written"))?;
    if !exists {
        anyhow::bail!(
            "the schema {schema} of tenant {slug} is missing; there is nothing to back up"
        );
    }
    // The row as of the lock: a migration that committed while we waited changed it.
    let t = registry::some(&tx, &[slug.to_string()])
        .await?
        .pop()
        .ok_or_else(|| {
            anyhow::anyhow!("tenant {slug} was dropped while the backup waited for it")
        })?;
    let dbname = s.home_database().to_string();
    let cmd = dump_command(pg_dump, &s.target, &dbname, &t.schema, deadline);
    dump_under_lock(tx, cmd, pending, slug, deadline).await?;
    Ok(Dumped {
        version: t.version,
        tenant: t,
        server_major,
    })
}

/// A tenant on another server or in a database of its own: its lock is taken where it
/// lives, and its version read from its own history there (the row on home may lag behind
/// a migration that committed on its server).
async fn dump_elsewhere(
    s: &Session,
    pg_dump: &Tool,
    t: registry::Tenant,
    pending: &PendingFile,
    deadline: std::time::Duration,
) -> Result<Dumped> {
    let target = s.servers.target_db(&t.server, &t.database)?;
    let (_pool, mut conn) = s
        .connect_place(&t.server, &t.database, 1)
        .await
        .with_context(|| format!("no backup of tenant {} was written", t.slug))?;
    let server_major = registry::server_major(&conn).await?;
    dump::check_not_older(pg_dump, "pg_dump", server_major)
        .map_err(|e| bad_input(format!("{e:#}")))?;
    let (tx, exists) = locked_transaction(&mut conn, &t.slug, &t.schema, deadline)
        .await
        .with_context(|| {
            format!(
                "no backup of tenant {} was written (server {})",
                t.slug, t.server
            )
        })?;
    if !exists {
        anyhow::bail!(
            "the schema {} of tenant {} is missing from database {} of server {}; there is \
             nothing to back up",
            t.schema,
            t.slug,
            t.database,
            t.server
        );
    }
    let version = crate::commands::restore::history_version(&tx, &t.schema).await?;
    let cmd = dump_command(pg_dump, &target, &t.database, &t.schema, deadline);
    dump_under_lock(tx, cmd, pending, &t.slug, deadline).await?;
    Ok(Dumped {
        tenant: t,
        version,
        server_major,
    })
}

/// pg_dump of one schema, in custom format.
fn dump_command(
    pg_dump: &Tool,
    target: &Target,
    dbname: &str,
    schema: &str,
    deadline: std::time::Duration,
) -> std::process::Command {
    let mut cmd = dump::command(pg_dump, target, dbname);
    // The pattern is quoted by the one quoting function: an exact, case-sensitive name.
    cmd.args(["--format=custom", "--schema"])
        .arg(quote_ident(schema))
        .arg(format!("--lock-wait-timeout={}", deadline.as_millis()));
    cmd
}

/// Runs pg_dump into `pending` while `tx` holds the tenant's lock, then releases it.
async fn dump_under_lock(
    tx: deadpool_postgres::Transaction<'_>,
    cmd: std::process::Command,
    pending: &PendingFile,
    slug: &str,
    deadline: std::time::Duration,
) -> Result<()> {
    let result = dump::run_to_file(cmd, pending.file(), format!("pg_dump of tenant {slug}")).await;
    tx.commit()
        .await
        .pg_context("cannot release the tenant's lock")?;
    if let Err(e) = result {
        // pg_dump enforces --lock-wait-timeout as a statement timeout on its LOCK TABLE.
        if format!("{e:#}").contains("Query was: LOCK TABLE") {
            return Err(e.context(format!(
                "the application kept a table of tenant {slug} locked for more than {} \
                 (--lock-timeout); no backup was written, retry when the lock is released \
                 or raise --lock-timeout",
                crate::registry::locks::describe_duration(deadline)
            )));
        }
        return Err(e);
    }
    Ok(())
}
