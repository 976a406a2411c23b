//! Whether the files the store has open are still the ones a restart would
//! read, and still writable.
//!
//! An open SQLite connection keeps writing into its file after the file was
//! removed or replaced (the data then vanishes at the next start), and into
//! its WAL after the database file was made read-only (the next start cannot
//! open it for writing). So before a write is acknowledged the store checks
//! that the database file and its WAL at their paths are the files (device
//! and inode) opened at start, and that they can still be written
//! (`access(W_OK)`, which also sees `chattr +i` and read-only mounts, for
//! root too). The files are never opened here: closing any descriptor of a
//! SQLite file drops the process's POSIX locks on it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::anyhow;

use crate::store::StoreError;

/// One file the store has open: its path and what it was at start.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    identity: (u64, u64),
}

/// The database file and its WAL, as opened at start.
#[derive(Debug, Clone, Default)]
pub struct FileGuard {
    files: Vec<Watched>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn writable(path: &Path) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    match unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

impl FileGuard {
    /// Records the database at `db` and its WAL (`<db>-wal`, when it exists).
    /// An in-memory database (empty path or `:memory:`) has nothing to watch.
    pub fn record(db: &Path) -> Result<Self, StoreError> {
        if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
            return Ok(Self::default());
        }
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let mut files = Vec::new();
        for (path, required) in [(db.to_owned(), true), (PathBuf::from(wal), false)] {
            match identity(&path) {
                Ok(identity) => files.push(Watched { path, identity }),
                Err(_) if !required => {}
                Err(err) => return Err(StoreError::Other(err.into())),
            }
        }
        Ok(Self { files })
    }

    /// `Unavailable` unless every watched file is still the one opened at
    /// start and writable.
    pub fn check(&self) -> Result<(), StoreError> {
        for file in &self.files {
            match identity(&file.path) {
                Ok(now) if now == file.identity => {}
                Ok(_) => return Err(unavailable(&file.path, "was replaced")),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(unavailable(&file.path, "was removed"));
                }
                Err(err) => return Err(unavailable(&file.path, &err.to_string())),
            }
            if let Err(err) = writable(&file.path) {
                return Err(unavailable(
                    &file.path,
                    &format!("cannot be written ({err})"),
                ));
            }
        }
        Ok(())
    }
}

impl crate::store::sql::WriteGuard for FileGuard {
    fn check(&self) -> Result<(), StoreError> {
        FileGuard::check(self)
    }
}

fn unavailable(path: &Path, what: &str) -> StoreError {
    StoreError::Unavailable(anyhow!(
        "the database file {} {what} while the service runs",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(&db, b"one").unwrap();
        std::fs::write(dir.path().join("x.db-wal"), b"wal").unwrap();
        // Held open, as SQLite holds them: their inode numbers are not reused.
        let _open = [
            std::fs::File::open(&db).unwrap(),
            std::fs::File::open(dir.path().join("x.db-wal")).unwrap(),
        ];
        let guard = FileGuard::record(&db).unwrap();
        assert_eq!(guard.files.len(), 2);
        guard.check().unwrap();
        std::fs::remove_file(dir.path().join("x.db-wal")).unwrap();
        let cause = |err| match err {
            Err(StoreError::Unavailable(cause)) => cause.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(cause(guard.check()).ends_with("-wal was removed while the service runs"));
        std::fs::write(dir.path().join("x.db-wal"), b"new").unwrap();
        assert!(cause(guard.check()).contains("-wal was replaced"));
        assert!(FileGuard::record(Path::new(":memory:"))
            .unwrap()
            .check()
            .is_ok());
    }
}
