//! Deployment archives: checked before anything is written, then unpacked
//! into the app's own directory and nowhere else.

use std::io::{Cursor, Read};
use std::path::{Component, Path, PathBuf};

use zip::ZipArchive;

/// Largest zipped archive (Lambda's direct-upload limit).
pub const MAX_ZIPPED: usize = 50 * 1024 * 1024;
/// Largest unzipped size (Lambda's limit).
pub const MAX_UNZIPPED: u64 = 250 * 1024 * 1024;
/// Most entries in one archive.
const MAX_ENTRIES: usize = 20_000;

/// Why an archive is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive is empty")]
    Empty,
    #[error("archive is larger than 50 MB zipped")]
    TooLarge,
    #[error("archive unpacks to more than 250 MB")]
    TooLargeUnzipped,
    #[error("archive is not a valid zip file: {0}")]
    NotZip(String),
    #[error("archive entry '{0}' has an absolute path or '..'")]
    UnsafePath(String),
    #[error("archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("archive does not contain the handler's file: expected one of {0}")]
    MissingHandler(String),
    #[error("archive could not be unpacked: {0}")]
    Io(String),
}

/// The relative path of an entry, refusing absolute paths and `..`.
fn safe_path(name: &str) -> Result<PathBuf, ArchiveError> {
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafePath(name.to_owned())),
        }
    }
    if name.contains('\\') || name.contains('\0') {
        return Err(ArchiveError::UnsafePath(name.to_owned()));
    }
    Ok(clean)
}

/// A checked archive: every entry's path is safe and the declared sizes fit.
#[derive(Debug)]
pub struct Archive {
    bytes: Vec<u8>,
    files: Vec<PathBuf>,
}

impl Archive {
    /// Checks `bytes` without writing anything.
    pub fn check(bytes: Vec<u8>) -> Result<Self, ArchiveError> {
        if bytes.is_empty() {
            return Err(ArchiveError::Empty);
        }
        if bytes.len() > MAX_ZIPPED {
            return Err(ArchiveError::TooLarge);
        }
        let mut zip = ZipArchive::new(Cursor::new(&bytes))
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        if zip.is_empty() {
            return Err(ArchiveError::Empty);
        }
        if zip.len() > MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries);
        }
        let mut declared = 0u64;
        let mut files = Vec::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
            let path = safe_path(entry.name())?;
            declared = declared.saturating_add(entry.size());
            if declared > MAX_UNZIPPED {
                return Err(ArchiveError::TooLargeUnzipped);
            }
            if !entry.is_dir() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(ArchiveError::Empty);
        }
        Ok(Self { bytes, files })
    }

    /// Whether the archive holds `path` (relative, `/`-separated).
    pub fn contains(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == Path::new(path))
    }

    /// The raw zip.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Unpacks into `dir` (created). Sizes are counted while reading, so an
    /// entry that lies about its size cannot unpack past the limit.
    pub fn unpack(&self, dir: &Path) -> Result<(), ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
        let mut zip = ZipArchive::new(Cursor::new(&self.bytes))
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut budget = MAX_UNZIPPED;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
            let target = dir.join(safe_path(entry.name())?);
            if entry.is_dir() {
                std::fs::create_dir_all(&target).map_err(io)?;
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let mut out = std::fs::File::create(&target).map_err(io)?;
            let written =
                std::io::copy(&mut (&mut entry).take(budget + 1), &mut out).map_err(io)?;
            if written > budget {
                return Err(ArchiveError::TooLargeUnzipped);
            }
            budget -= written;
            #[cfg(unix)]
            if let Some(mode) = entry.unix_mode() {
                use std::os::unix::fs::PermissionsExt;
                // Keep the executable bits (a `bootstrap` must run); nothing else.
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod tests {
    use std::io::Write;

    use zip::write::SimpleFileOptions;

    use super::*;

    /// Builds a zip from `(name, content)` pairs.
    pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            for (name, content) in files {
                zip.start_file(*name, SimpleFileOptions::default().unix_permissions(0o755))
                    .unwrap();
                zip.write_all(content).unwrap();
            }
            zip.finish().unwrap();
        }
        out.into_inner()
    }

    #[test]
    fn accepts_and_unpacks_a_normal_archive() {
        let archive = Archive::check(zip_of(&[
            ("index.js", b"exports.handler=1"),
            ("src/api/main.js", b"x"),
        ]))
        .unwrap();
        assert!(archive.contains("index.js") && archive.contains("src/api/main.js"));
        let dir = tempfile::tempdir().unwrap();
        archive.unpack(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("src/api/main.js")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn refuses_unsafe_paths_without_writing() {
        for name in ["../evil.js", "/etc/evil", "a/../../evil", "a\\..\\evil"] {
            let err = Archive::check(zip_of(&[(name, b"x")])).unwrap_err();
            assert!(
                matches!(err, ArchiveError::UnsafePath(_)),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn refuses_empty_and_garbage() {
        assert_eq!(Archive::check(Vec::new()).unwrap_err(), ArchiveError::Empty);
        assert!(matches!(
            Archive::check(b"not a zip".to_vec()).unwrap_err(),
            ArchiveError::NotZip(_)
        ));
        assert_eq!(
            Archive::check(zip_of(&[])).unwrap_err(),
            ArchiveError::Empty
        );
    }

    #[test]
    fn refuses_a_zip_bomb_by_its_declared_size() {
        // 300 MB of zeros compresses to about 300 KB.
        let mut out = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            zip.start_file("zeros", SimpleFileOptions::default().large_file(true))
                .unwrap();
            let chunk = vec![0u8; 1024 * 1024];
            for _ in 0..300 {
                zip.write_all(&chunk).unwrap();
            }
            zip.finish().unwrap();
        }
        let bytes = out.into_inner();
        assert!(bytes.len() < 2 * 1024 * 1024);
        assert_eq!(
            Archive::check(bytes).unwrap_err(),
            ArchiveError::TooLargeUnzipped
        );
    }
}
