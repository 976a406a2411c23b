//! Deployment archives: checked before anything is written, then unpacked
//! into a temporary directory beside the app's code (same filesystem) and
//! renamed into place only once complete. A refused or failed unpack leaves
//! nothing behind.

use std::io::{Cursor, Read, Write};
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
    #[error("archive entry '{0}' unpacks to more than its declared size")]
    SizeMismatch(String),
    #[error("archive entry '{0}' could not be read: {1}")]
    Corrupt(String, String),
    /// Writing the unpacked code failed (the service's disk, not the archive).
    #[error("the app's code could not be written: {0}")]
    Io(String),
}

/// Name prefix of the temporary directories archives unpack into.
pub const UNPACKING_PREFIX: &str = ".unpacking-";

/// The marker written last into a complete unpacked version.
pub const COMPLETE_MARKER: &str = ".complete";

/// Code unpacked into a temporary directory: moved into place by
/// [`Unpacked::install`], removed (with everything in it) when dropped
/// otherwise.
#[derive(Debug)]
pub struct Unpacked {
    dir: PathBuf,
    installed: bool,
}

impl Unpacked {
    /// Renames the unpacked code to `target` (replacing a stale directory
    /// there), creating `target`'s parent. `target` must be on the same
    /// filesystem as the temporary directory.
    pub fn install(mut self, target: &Path) -> Result<(), ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::remove_dir_all(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::rename(&self.dir, target).map_err(io)?;
        self.installed = true;
        Ok(())
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes temporary unpacking directories (and uploads) left under `root`
/// by a process that died while unpacking; how many.
pub fn sweep_unpacking(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(UNPACKING_PREFIX)
        })
        .filter(|e| {
            let path = e.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).is_ok()
            } else {
                std::fs::remove_file(path).is_ok()
            }
        })
        .count()
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

    /// The raw zip, taken.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Unpacks into a fresh temporary directory under `parent` (created if
    /// needed; on the filesystem the code will live on), with the
    /// [`COMPLETE_MARKER`] written last. On any failure the directory is
    /// gone again.
    pub fn unpack_temp(&self, parent: &Path) -> Result<Unpacked, ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
        std::fs::create_dir_all(parent).map_err(io)?;
        let dir = parent.join(format!(
            "{UNPACKING_PREFIX}{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir).map_err(io)?;
        let unpacked = Unpacked {
            dir,
            installed: false,
        };
        self.unpack(&unpacked.dir)?;
        std::fs::write(unpacked.dir.join(COMPLETE_MARKER), b"").map_err(io)?;
        Ok(unpacked)
    }

    /// Unpacks into `dir` (which exists). Sizes are counted while reading:
    /// an entry cannot unpack past its declared size, nor the archive past
    /// the limit.
    fn unpack(&self, dir: &Path) -> Result<(), ArchiveError> {
        let io = |e: std::io::Error| ArchiveError::Io(e.to_string());
        let mut zip = ZipArchive::new(Cursor::new(&self.bytes))
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let mut budget = MAX_UNZIPPED;
        let mut buffer = vec![0u8; 64 * 1024];
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
            let name = entry.name().to_owned();
            let target = dir.join(safe_path(&name)?);
            if entry.is_dir() {
                std::fs::create_dir_all(&target).map_err(io)?;
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let declared = entry.size();
            let mut out = std::fs::File::create(&target).map_err(io)?;
            let mut written = 0u64;
            loop {
                let read = entry
                    .read(&mut buffer)
                    .map_err(|e| ArchiveError::Corrupt(name.clone(), e.to_string()))?;
                if read == 0 {
                    break;
                }
                written += read as u64;
                if written > declared {
                    return Err(ArchiveError::SizeMismatch(name));
                }
                if written > budget {
                    return Err(ArchiveError::TooLargeUnzipped);
                }
                out.write_all(&buffer[..read]).map_err(io)?;
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
        let target = dir.path().join("app/v1");
        archive
            .unpack_temp(dir.path())
            .unwrap()
            .install(&target)
            .unwrap();
        assert_eq!(std::fs::read(target.join("src/api/main.js")).unwrap(), b"x");
        assert!(target.join(COMPLETE_MARKER).exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the installed app: {left:?}");
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

    /// A zip whose central directory says `declared` bytes for its one
    /// entry while its data inflates to `real` bytes of zeros.
    pub fn lying_zip(declared: u32, real: usize) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            zip.start_file("index.js", SimpleFileOptions::default())
                .unwrap();
            zip.write_all(&vec![0u8; real]).unwrap();
            zip.finish().unwrap();
        }
        let mut bytes = out.into_inner();
        // Local header: uncompressed size at offset 22; central directory
        // header (signature PK\x01\x02): uncompressed size at offset 24.
        bytes[22..26].copy_from_slice(&declared.to_le_bytes());
        let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        bytes[central + 24..central + 28].copy_from_slice(&declared.to_le_bytes());
        bytes
    }

    #[test]
    fn an_entry_lying_about_its_size_is_refused_and_nothing_is_left() {
        let archive = Archive::check(lying_zip(100, 10 * 1024 * 1024)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = archive.unpack_temp(dir.path()).unwrap_err();
        assert_eq!(err, ArchiveError::SizeMismatch("index.js".into()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_data_is_refused_and_nothing_is_left() {
        let mut bytes = zip_of(&[("index.js", &[7u8; 4096])]);
        // The compressed data starts after the 30-byte local header and the name.
        for b in &mut bytes[38..48] {
            *b ^= 0x5a;
        }
        let archive = Archive::check(bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = archive.unpack_temp(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Corrupt(..) | ArchiveError::SizeMismatch(_)
            ),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn leftovers_of_a_crash_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".unpacking-x/a")).unwrap();
        std::fs::create_dir_all(dir.path().join("app/v1")).unwrap();
        assert_eq!(sweep_unpacking(dir.path()), 1);
        assert!(dir.path().join("app/v1").exists());
    }
}
