//! Write tokens: one bearer token per organisation, stored hashed in `DATA/tokens.json`.
//!
//! A JSON file rather than the sled store, because sled locks its directory while the node runs
//! and an operator must be able to create or revoke a token then. The file is replaced atomically
//! and re-read by the node when it changes. A token is shown once, when created.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The token file under the data directory.
pub const TOKENS_FILE: &str = "tokens.json";
/// Prefix of every token, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "mrd_";

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// One stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short public id, for listing and revoking.
    pub id: String,
    /// The organisation it may write for.
    pub org: String,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// Unix seconds it was created.
    pub created_at: i64,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// An admin token: posts governance documents, never publishes agents.
    #[serde(default)]
    pub admin: bool,
}

fn hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn read_file(path: &Path) -> Result<Vec<TokenRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a token file", path.display()))
}

fn write_file(path: &Path, records: &[TokenRecord]) -> Result<()> {
    let text = serde_json::to_string_pretty(records)?;
    crate::data::write_secret_file(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates a token for `org`, or an admin token when `org` is `None`; returns the token (shown
/// once) and its record.
pub fn create(data: &Path, org: Option<&str>, now: i64) -> Result<(String, TokenRecord)> {
    if let Some(org) = org {
        meridian_registry::manifest::check_name("org", org).map_err(|e| anyhow!(e))?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("no randomness available: {e}"))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let path = data.join(TOKENS_FILE);
    let mut records = read_file(&path)?;
    let record = TokenRecord {
        id: hash(&token)[..12].to_owned(),
        org: org.unwrap_or_default().to_owned(),
        hash: hash(&token),
        created_at: now,
        revoked: false,
        admin: org.is_none(),
    };
    records.push(record.clone());
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    write_file(&path, &records)?;
    Ok((token, record))
}

/// Every token record.
pub fn list(data: &Path) -> Result<Vec<TokenRecord>> {
    read_file(&data.join(TOKENS_FILE))
}

/// Revokes the token with `id`.
pub fn revoke(data: &Path, id: &str) -> Result<TokenRecord> {
    let path = data.join(TOKENS_FILE);
    let mut records = read_file(&path)?;
    let record = records
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| anyhow!("no token with id `{id}` in {}", path.display()))?;
    record.revoked = true;
    let revoked = record.clone();
    write_file(&path, &records)?;
    Ok(revoked)
}

/// The running node's view of the token file, re-read when the file changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<TokenRecord>)>,
}

impl TokenStore {
    /// Watches `DATA/tokens.json`.
    pub fn new(data: &Path) -> Self {
        Self {
            path: data.join(TOKENS_FILE),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The record of a valid, unrevoked bearer token.
    pub fn lookup(&self, token: &str) -> Result<Option<TokenRecord>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| anyhow!("token cache lock poisoned"))?;
        if cache.0 != modified || modified.is_none() {
            *cache = (modified, read_file(&self.path)?);
        }
        let wanted = hash(token);
        Ok(cache
            .1
            .iter()
            .find(|r| !r.revoked && constant_time_eq(r.hash.as_bytes(), wanted.as_bytes()))
            .cloned())
    }

    /// The organisation a bearer token may publish for (admin tokens publish for none).
    pub fn org_for(&self, token: &str) -> Result<Option<String>> {
        Ok(self.lookup(token)?.filter(|r| !r.admin).map(|r| r.org))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
