//! A node's data directory and the files in it: keys, the block store, and files written
//! atomically (through [`meridian_registry::files`]). Used by the daemon and by the command
//! line alike; it imports neither.

use std::path::Path;

use anyhow::{Context as _, Result};
use meridian_registry::keys::Keypair;
use meridian_registry::store::SledStore;

/// Loads a key file, naming the file on error.
pub fn load_key(path: &Path) -> Result<Keypair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    Keypair::from_key_file(&text).with_context(|| format!("key file {}", path.display()))
}

/// Writes a file readable only by its owner (0600 on unix), replacing it atomically
/// ([`meridian_registry::files::write_secret`]).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    meridian_registry::files::write_secret(path, contents)
}

/// Writes `bytes` to `path` atomically (through a synced temporary file renamed over it, the
/// directory synced), readable by all (0644); the error names the file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    meridian_registry::files::write_atomic_with_mode(path, bytes, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// Opens the sled store under a data directory, creating it if needed.
pub fn open_store(data: &Path) -> Result<SledStore> {
    let dir = data.join("store");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    SledStore::open(&dir).with_context(|| format!("opening store {}", dir.display()))
}
