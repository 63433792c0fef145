//! Files that hold tenant data (dumps, their records): created 0600 with O_EXCL and
//! O_NOFOLLOW under a temporary name in the destination folder, and linked to their final
//! name only when complete, so a failure, Ctrl-C or a planted symlink never leaves a
//! partial file, overwrites another file, or writes where a link points.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::domain::exit::bad_input;

/// Refuses (exit 2) a destination that exists (a dangling symlink included) or whose folder
/// does not exist. Called before anything is changed.
pub fn check_new_path(path: &Path, what: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(bad_input(format!(
                "{} is a symbolic link; tenantctl does not write {what} through links, choose another file",
                path.display()
            )))
        }
        Ok(_) => {
            return Err(bad_input(format!(
                "{} already exists; tenantctl never overwrites {what}, choose another file",
                path.display()
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(bad_input(format!("cannot check {}: {e}", path.display())));
        }
    }
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "folder {} does not exist; create it first",
            dir.display()
        )));
    }
    Ok(())
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` (and missing parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| bad_input(format!("cannot create folder {}: {e}", dir.display())))
}

/// Opens a new file: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A file being written under a temporary name beside `dest`; removed when dropped
/// unless `persist` moved it to `dest`.
pub struct PendingFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    done: bool,
}

impl PendingFile {
    pub fn create(dest: &Path) -> Result<PendingFile> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = folder_of(dest).join(format!(
            ".{name}.tenantctl-{}-{stamp}.tmp",
            std::process::id()
        ));
        let file = create_new(&tmp).map_err(|e| {
            bad_input(format!(
                "cannot create a file in {}: {e}",
                folder_of(dest).display()
            ))
        })?;
        Ok(PendingFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            done: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the file to disk and gives it its final name, refusing to replace anything
    /// there (link(2) fails on an existing name, a symlink included). Returns a guard that
    /// removes the final file too unless told to keep it.
    pub fn persist(mut self) -> Result<Placed> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        match std::fs::hard_link(&self.tmp, &self.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(bad_input(format!(
                    "{} appeared while tenantctl was writing it; nothing was overwritten",
                    self.dest.display()
                )));
            }
            // A file system without hard links: rename, after checking again.
            Err(_) => {
                check_new_path(&self.dest, "the file")?;
                std::fs::rename(&self.tmp, &self.dest)
                    .with_context(|| format!("cannot create {}", self.dest.display()))?;
            }
        }
        let _ = std::fs::remove_file(&self.tmp);
        self.done = true;
        Ok(Placed {
            path: self.dest.clone(),
            keep: false,
        })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A file in its final place that is removed when dropped, unless `keep` is called: the
/// dump is kept only once its record is written too.
pub struct Placed {
    path: PathBuf,
    keep: bool,
}

impl Placed {
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tenantctl-outfile-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_are_private_and_appear_only_when_complete() {
        let d = scratch("ok");
        let dest = d.join("a.dump");
        let p = PendingFile::create(&dest).unwrap();
        (&p.file).write_all(b"x").unwrap();
        assert!(!dest.exists());
        let mode = std::fs::metadata(p.temp_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        p.persist().unwrap().keep();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary file left"
        );
        // Dropped before completion: neither the temporary nor the final file stays.
        let gone = d.join("gone.dump");
        let p = PendingFile::create(&gone).unwrap();
        drop(p);
        let placed = PendingFile::create(&gone).unwrap().persist().unwrap();
        drop(placed);
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "nothing left of gone.dump"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn links_and_existing_files_are_refused() {
        let d = scratch("link");
        let link = d.join("l.dump");
        std::os::unix::fs::symlink(d.join("elsewhere"), &link).unwrap();
        let err = check_new_path(&link, "backups").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!d.join("elsewhere").exists());
        std::fs::write(d.join("e"), "x").unwrap();
        assert!(check_new_path(&d.join("e"), "backups")
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        assert!(check_new_path(&d.join("missing/x"), "backups")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        // A link planted where the final name goes after the check: linking refuses it.
        let p = PendingFile::create(&link).unwrap();
        assert!(p.persist().is_err());
        assert!(!d.join("elsewhere").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn folders_are_private() {
        let d = scratch("dir");
        let sub = d.join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(
            std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
