//! Zipping a directory for a deploy: every file under it but `.git` and
//! what `.orchestratorignore` (`.gitignore` syntax) lists, with each file's
//! mode (a `bootstrap` stays executable) and a fixed timestamp, so the same
//! files make the same archive.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::CliError;

/// The ignore file a directory may hold.
pub const IGNORE_FILE: &str = ".orchestratorignore";

/// An archive ready to upload.
pub struct Packed {
    /// Shared, so an upload streams it without copying it.
    pub bytes: bytes::Bytes,
    pub files: usize,
    /// Symbolic links left out (the service unpacks regular files only).
    pub links_skipped: usize,
    pub sha256: String,
}

/// `path`: a directory to zip, or a zip archive taken as it is.
pub fn pack(path: &Path) -> Result<Packed, CliError> {
    let meta = std::fs::metadata(path).map_err(CliError::io(format!("{}", path.display())))?;
    if meta.is_dir() {
        return zip_dir(path);
    }
    let bytes = std::fs::read(path).map_err(CliError::io(format!("reading {}", path.display())))?;
    if !bytes.starts_with(b"PK") {
        return Err(CliError::Usage(format!(
            "{} is neither a directory nor a zip archive",
            path.display()
        )));
    }
    Ok(finish(bytes, 0, 0))
}

fn finish(bytes: Vec<u8>, files: usize, links_skipped: usize) -> Packed {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Packed {
        bytes: bytes.into(),
        files,
        links_skipped,
        sha256,
    }
}

fn zip_dir(dir: &Path) -> Result<Packed, CliError> {
    let walk = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(|entry| entry.file_name() != ".git")
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let (mut files, mut links) = (0, 0);
    let mut buffer = Vec::new();
    for entry in walk {
        let entry =
            entry.map_err(|e| CliError::Usage(format!("reading {}: {e}", dir.display())))?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            links += 1;
            continue;
        }
        if !kind.is_file() || entry.file_name() == IGNORE_FILE {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let name = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let mode = file_mode(entry.path());
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(mode);
        buffer.clear();
        std::fs::File::open(entry.path())
            .and_then(|mut file| file.read_to_end(&mut buffer))
            .map_err(CliError::io(format!("reading {}", entry.path().display())))?;
        zip.start_file(name, options)
            .and_then(|()| zip.write_all(&buffer).map_err(Into::into))
            .map_err(|e| CliError::Usage(format!("zipping {}: {e}", entry.path().display())))?;
        files += 1;
    }
    if files == 0 {
        return Err(CliError::Usage(format!(
            "{} holds no files to deploy",
            dir.display()
        )));
    }
    let bytes = zip
        .finish()
        .map_err(|e| CliError::Usage(format!("zipping {}: {e}", dir.display())))?
        .into_inner();
    Ok(finish(bytes, files, links))
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> u32 {
    0o644
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packed: &Packed) -> Vec<String> {
        let archive = zip::ZipArchive::new(std::io::Cursor::new(&packed.bytes)).expect("a zip");
        archive.file_names().map(str::to_owned).collect::<Vec<_>>()
    }

    #[test]
    fn zips_all_but_git_and_what_the_ignore_file_lists() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/objects")).expect("mkdir");
        std::fs::write(root.join(".git/HEAD"), "ref").expect("write");
        std::fs::create_dir_all(root.join("lib")).expect("mkdir");
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        std::fs::write(root.join("index.mjs"), "export const handler = 1").expect("write");
        std::fs::write(root.join("lib/util.mjs"), "x").expect("write");
        std::fs::write(root.join("tmp/scratch"), "x").expect("write");
        std::fs::write(root.join("notes.log"), "x").expect("write");
        std::fs::write(root.join(".env"), "x").expect("write");
        std::fs::write(root.join(IGNORE_FILE), "tmp/\n*.log\n").expect("write");
        let packed = pack(root).expect("packed");
        let mut got = names(&packed);
        got.sort();
        assert_eq!(got, [".env", "index.mjs", "lib/util.mjs"]);
        assert_eq!(packed.files, 3);
        // The same files make the same archive.
        assert_eq!(pack(root).expect("packed").sha256, packed.sha256);
        std::fs::write(root.join("notes2.log"), "ignored").expect("write");
        assert_eq!(pack(root).expect("packed").sha256, packed.sha256);
        std::fs::write(root.join("index.mjs"), "changed").expect("write");
        assert_ne!(pack(root).expect("packed").sha256, packed.sha256);
    }

    #[cfg(unix)]
    #[test]
    fn keeps_the_executable_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let bootstrap = dir.path().join("bootstrap");
        std::fs::write(&bootstrap, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let packed = pack(dir.path()).expect("packed");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&packed.bytes)).expect("zip");
        let file = archive.by_name("bootstrap").expect("entry");
        assert_eq!(file.unix_mode().map(|m| m & 0o777), Some(0o755));
    }

    #[test]
    fn refuses_an_empty_directory_and_a_file_that_is_not_a_zip() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(pack(dir.path()), Err(CliError::Usage(_))));
        let file = dir.path().join("x.txt");
        std::fs::write(&file, "hello").expect("write");
        assert!(matches!(pack(&file), Err(CliError::Usage(_))));
        assert!(matches!(
            pack(&dir.path().join("missing")),
            Err(CliError::Io { .. })
        ));
    }
}
