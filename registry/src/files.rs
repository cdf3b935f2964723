//! Writing files so that a crash never leaves half of one: through a temporary file beside
//! it, synced, renamed over the target, and the directory synced. The one place node, hub and
//! the command line write keys, tokens and other small files from.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The files of `dir` whose name ends in `.extension`, sorted by path: how node and CLI find
/// the documents they keep (card directories, governance folders).
pub fn list_with_extension(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == extension) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `path` with `.tmp` appended to its file name.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `contents` to `path` atomically: readers see the old file or the new one, never a
/// part; a crash leaves the old one. `mode` (unix permission bits) applies to the new file.
///
/// A leftover temporary file (from a crash, or planted with a wider mode or as a link) is
/// removed first and the temporary is created anew (`create_new`), so the file never inherits
/// that leftover's mode or follows its link.
pub fn write_atomic_with_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    sync_parent(path)
}

/// [`write_atomic_with_mode`] readable only by the owner (0600): keys and token files.
pub fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_atomic_with_mode(path, contents, 0o600)
}

/// Syncs the directory holding `path`, so a rename into it survives a crash.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_by_extension_in_order_and_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        for name in ["b.cbor", "a.cbor", "c.json", "d.cbor.tmp"] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        let listed = list_with_extension(dir.path(), "cbor").expect("list");
        assert_eq!(
            listed,
            [dir.path().join("a.cbor"), dir.path().join("b.cbor")]
        );
        let missing = list_with_extension(&dir.path().join("nope"), "cbor").unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_secret_is_written_0600_through_a_fresh_temporary() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.key");
        // A leftover temporary with a wide mode, as a crash or an attacker would leave it.
        std::fs::write(temporary_path(&path), b"old").expect("leftover");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                temporary_path(&path),
                std::fs::Permissions::from_mode(0o666),
            )
            .expect("chmod");
        }
        write_secret(&path, b"secret").expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        assert!(!temporary_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Replacing keeps the mode and the new contents.
        write_secret(&path, b"again").expect("rewritten");
        assert_eq!(std::fs::read(&path).expect("read"), b"again");
    }
}
