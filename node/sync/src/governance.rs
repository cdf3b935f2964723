//! One node's governance state: the trusted root and its history, attestations, key
//! rotations, the policy in force, registration requests, and (with
//! `governance.require_key_log`) key-log proofs and the key-set documents waiting for theirs.
//!
//! Documents arrive as DAG-CBOR blocks (from an admin, a peer or a hub), are verified against
//! the trusted root, and are kept under `DATA/governance/` so a restart knows them again. The
//! node's HTTP endpoints, its mesh and the simulations all go through this one type; the sync
//! engine reaches it through [`crate::engine::GovernanceHooks`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use meridian_governance::accept::{GovernanceView, Rejection, accept};
use meridian_governance::attestation::{
    Attestation, AttestationSet, KeyRotation, Registration, Subject,
};
use meridian_governance::keylog::{KeyLogProof, KeyLogTrust, key_document_id};
use meridian_governance::policy::{PolicyBundle, PolicyState};
use meridian_governance::root::{ExpiryCheck, RootDocument, TrustedRoot};
use meridian_registry::keys::PublicKey;
use meridian_registry::manifest::Manifest;

/// Why a governance document or request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// No trust root is configured (`governance.root`): governance is off.
    #[error("this node has no trust root (set governance.root)")]
    NotConfigured,
    /// A key-log proof came to a node that does not require the key log.
    #[error("this node does not require the key log (governance.require_key_log)")]
    KeyLogOff,
    /// The document does not verify, does not follow what is in force, or is stale.
    #[error("{0}")]
    Refused(String),
    /// A held document is not a key-set document (a bug, not an input problem).
    #[error("not a key document")]
    NotAKeyDocument,
    /// The state's lock is poisoned.
    #[error("governance lock poisoned")]
    Poisoned,
    /// [`Governance::add_registration`]: this many organisations already wait for review.
    #[error("{0} organisations are already waiting for review; try later")]
    RegistrationsFull(usize),
    /// Keeping the document on disk failed.
    #[error("keeping {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading the configured root or the stored documents at load failed.
    #[error("{0}")]
    Load(String),
}

fn refused(error: impl std::fmt::Display) -> GovernanceError {
    GovernanceError::Refused(error.to_string())
}

/// Writes `name` under `dir` atomically (readable by all), creating `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), GovernanceError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| meridian_registry::files::write_atomic_with_mode(&path, bytes, 0o644))
        .map_err(|source| GovernanceError::Io { path, source })
}

/// Where governance documents are kept under the data directory.
pub const GOVERNANCE_DIR: &str = "governance";

/// Root versions a node passes on to peers (the newest ones): a peer that many versions behind
/// can follow the chain from what the mesh tells it; one further behind needs the chain from an
/// admin or a hub.
pub const ROOT_HISTORY_MAX: usize = 64;

struct Inner {
    root: Option<TrustedRoot>,
    /// The root versions this node trusted, oldest first (the configured one, then each
    /// accepted successor), at most [`ROOT_HISTORY_MAX`]: a peer behind by several versions
    /// needs every one in between.
    root_history: Vec<Vec<u8>>,
    attestations: AttestationSet,
    policy: PolicyState,
    registrations: BTreeMap<String, Registration>,
    /// Key-set documents proven in the key log (with `governance.require_key_log`).
    proven: std::collections::HashSet<meridian_registry::Cid>,
    /// Key-set documents held until their key-log proof arrives, in arrival order.
    unlogged: Vec<Vec<u8>>,
}

impl Inner {
    /// No governance yet (off until a root is trusted).
    fn empty() -> Self {
        Self {
            root: None,
            root_history: Vec::new(),
            attestations: AttestationSet::new(),
            policy: PolicyState::new(),
            registrations: BTreeMap::new(),
            proven: std::collections::HashSet::new(),
            unlogged: Vec::new(),
        }
    }

    /// The stored key-log proofs that verify under `trust`, and the key-set documents still
    /// waiting for theirs.
    fn load_key_log(&mut self, dir: &Path, trust: &KeyLogTrust) {
        for path in files_with(&dir.join(KEY_PROOFS_DIR), "proof") {
            let proof = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| KeyLogProof::parse(&t).ok());
            match proof.map(|p| (p.verify(trust), p.document)) {
                Some((Ok(_), document)) => {
                    self.proven.insert(document);
                }
                _ => {
                    tracing::warn!(file = %path.display(), "ignoring a stored key-log proof that does not verify")
                }
            }
        }
        for path in cbor_files(&dir.join(UNLOGGED_DIR)) {
            if let Ok(block) = std::fs::read(&path) {
                self.unlogged.push(block);
            }
        }
    }

    /// The configured root, walked forward through the newer versions received earlier
    /// (oldest first), and fresh at `now`.
    fn load_root(
        &mut self,
        dir: &Path,
        root_file: &Path,
        now: i64,
    ) -> Result<TrustedRoot, GovernanceError> {
        let load = |what: &dyn std::fmt::Display| {
            GovernanceError::Load(format!(
                "config governance.root: {}: {what}",
                root_file.display()
            ))
        };
        let bytes = std::fs::read(root_file).map_err(|e| load(&e))?;
        let root = RootDocument::decode(&bytes).map_err(|e| load(&e))?;
        let mut trusted = TrustedRoot::bootstrap(root, now, ExpiryCheck::AllowExpiredForRecovery)
            .map_err(|e| load(&e))?;
        self.root_history.push(trusted.current().to_block());
        let mut newer: Vec<RootDocument> = cbor_files(&dir.join("roots"))
            .iter()
            .filter_map(|p| {
                std::fs::read(p)
                    .ok()
                    .and_then(|b| RootDocument::decode(&b).ok())
            })
            .filter(|r| r.body.version > trusted.current().body.version)
            .collect();
        newer.sort_by_key(|r| r.body.version);
        for next in newer {
            let version = next.body.version;
            let block = next.to_block();
            match trusted.update(next) {
                Ok(()) => self.remember_root(block),
                Err(error) => tracing::warn!(version, %error, "ignoring a stored root version"),
            }
        }
        trusted
            .check_fresh(now, ExpiryCheck::Enforce)
            .map_err(|e| load(&e))?;
        Ok(trusted)
    }

    /// The stored policies, attestations and key rotations (in the order they were applied),
    /// each checked again under `trusted`; with the key log required, key-set documents
    /// without a proof are held until it comes.
    fn load_documents(&mut self, dir: &Path, trusted: &TrustedRoot, key_log: bool, now: i64) {
        for path in cbor_files(&dir.join("policy")) {
            if let Some(bundle) = std::fs::read(&path)
                .ok()
                .and_then(|b| PolicyBundle::decode(&b).ok())
                && let Err(error) = self.policy.offer(bundle, trusted, now)
            {
                tracing::warn!(file = %path.display(), %error, "ignoring a stored policy");
            }
        }
        // Rotations were kept in the order they were applied (file names count up).
        for folder in ["attestations", "rotations"] {
            for path in cbor_files(&dir.join(folder)) {
                let Ok(block) = std::fs::read(&path) else {
                    continue;
                };
                if key_log && needs_key_log_proof(&block, &self.proven) {
                    // Trusted before the key log was required: held until proven.
                    self.unlogged.push(block);
                    continue;
                }
                let applied = if let Ok(attestation) = Attestation::decode(&block) {
                    self.attestations
                        .add(attestation, trusted, now)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else if let Ok(rotation) = KeyRotation::decode(&block) {
                    self.attestations
                        .apply_rotation(&rotation, now)
                        .map_err(|e| e.to_string())
                } else {
                    Ok(())
                };
                if let Err(error) = applied {
                    tracing::warn!(file = %path.display(), %error, "ignoring a stored governance document");
                }
            }
        }
    }

    /// The registration requests waiting for review that still verify.
    fn load_registrations(&mut self, dir: &Path) {
        for path in cbor_files(&dir.join("registrations")) {
            if let Some(registration) = std::fs::read(&path)
                .ok()
                .and_then(|b| Registration::decode_and_verify(&b).ok())
            {
                self.registrations
                    .insert(registration.document.id().to_string(), registration);
            }
        }
    }

    /// Records a root version just trusted, dropping the oldest past [`ROOT_HISTORY_MAX`].
    fn remember_root(&mut self, block: Vec<u8>) {
        self.root_history.push(block);
        if self.root_history.len() > ROOT_HISTORY_MAX {
            let excess = self.root_history.len() - ROOT_HISTORY_MAX;
            self.root_history.drain(..excess);
        }
    }
}

/// Governance as one node sees it.
pub struct Governance {
    dir: PathBuf,
    inner: RwLock<Inner>,
    /// With `governance.require_key_log`: who vouches for the key log.
    key_log: Option<KeyLogTrust>,
    /// Every organisation's [`key_history`], read from the directory on first ask after a
    /// change (the console asks on every agent page; reading every document each time would
    /// let any reader make the node read the whole directory per request).
    histories: std::sync::Mutex<Option<KeyHistories>>,
}

/// Key histories by organisation.
type KeyHistories = std::collections::HashMap<String, Vec<KeyHistoryEntry>>;

/// The `.cbor` documents of a governance folder (none when the folder does not exist yet).
fn cbor_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "cbor")
}

impl Governance {
    /// Loads governance from `root_file` (none: governance is off) and `DATA/governance/`.
    pub fn load(data: &Path, root_file: Option<&Path>, now: i64) -> Result<Self, GovernanceError> {
        Self::load_with_key_log(data, root_file, None, now)
    }

    /// [`Governance::load`] with `governance.require_key_log`: organisation keys count only
    /// from documents proven in the key log `key_log` vouches for.
    pub fn load_with_key_log(
        data: &Path,
        root_file: Option<&Path>,
        key_log: Option<KeyLogTrust>,
        now: i64,
    ) -> Result<Self, GovernanceError> {
        let dir = data.join(GOVERNANCE_DIR);
        let mut inner = Inner::empty();
        if let Some(trust) = &key_log {
            inner.load_key_log(&dir, trust);
        }
        if let Some(root_file) = root_file {
            let trusted = inner.load_root(&dir, root_file, now)?;
            inner.load_documents(&dir, &trusted, key_log.is_some(), now);
            inner.root = Some(trusted);
        }
        inner.load_registrations(&dir);
        Ok(Self {
            dir,
            inner: RwLock::new(inner),
            key_log,
            histories: std::sync::Mutex::new(None),
        })
    }

    /// Whether a key-set document waits for its key-log proof (`governance.require_key_log`).
    pub fn awaiting_key_log(&self, document: &meridian_registry::Cid) -> bool {
        self.inner.read().is_ok_and(|inner| {
            inner
                .unlogged
                .iter()
                .any(|b| key_document_id(b).is_some_and(|(id, _)| id == *document))
        })
    }

    /// Holds `block` until its key-log proof arrives, when the key log is required and it is
    /// an unproven key-set document; true when held. Checked like any document first (`check`
    /// verifies it under the root), so nothing unverifiable is kept.
    fn hold_unlogged(
        &self,
        inner: &mut Inner,
        block: &[u8],
        check: impl FnOnce(&TrustedRoot) -> Result<(), GovernanceError>,
    ) -> Result<bool, GovernanceError> {
        if self.key_log.is_none() || !needs_key_log_proof(block, &inner.proven) {
            return Ok(false);
        }
        let root = inner.root.as_ref().ok_or(GovernanceError::NotConfigured)?;
        check(root)?;
        let (id, _) = key_document_id(block).ok_or(GovernanceError::NotAKeyDocument)?;
        if !inner.unlogged.iter().any(|b| b == block) {
            self.persist(UNLOGGED_DIR, &id.to_string(), block)?;
            inner.unlogged.push(block.to_vec());
        }
        Ok(true)
    }

    /// Takes a key-log proof (`meridian checkpoint prove-document`): checks it against the
    /// configured log key and witnesses, keeps it, and applies the documents it (and proofs
    /// before it) let through. Returns the proven document and whether anything was applied.
    pub fn apply_key_proof(
        &self,
        text: &str,
        now: i64,
    ) -> Result<(meridian_registry::Cid, bool), GovernanceError> {
        let trust = self.key_log.as_ref().ok_or(GovernanceError::KeyLogOff)?;
        let proof = KeyLogProof::parse(text).map_err(refused)?;
        proof.verify(trust).map_err(refused)?;
        let document = proof.document;
        let mut inner = self.write()?;
        self.persist_text(KEY_PROOFS_DIR, &document.to_string(), "proof", text)?;
        inner.proven.insert(document);
        let applied = self.drain_unlogged(&mut inner, now)?;
        Ok((document, applied))
    }

    /// Applies every held document that no longer needs a proof, in arrival order, again
    /// until nothing more applies (a rotation may need the one before it). True if any did.
    fn drain_unlogged(&self, inner: &mut Inner, now: i64) -> Result<bool, GovernanceError> {
        let mut applied_any = false;
        loop {
            let position = inner
                .unlogged
                .iter()
                .position(|b| !needs_key_log_proof(b, &inner.proven) && applicable(inner, b, now));
            let Some(position) = position else {
                return Ok(applied_any);
            };
            let block = inner.unlogged.remove(position);
            let Some((id, _)) = key_document_id(&block) else {
                continue;
            };
            let root = inner.root.clone().ok_or(GovernanceError::NotConfigured)?;
            if let Ok(attestation) = Attestation::decode(&block) {
                let id = inner
                    .attestations
                    .add(attestation, &root, now)
                    .map_err(refused)?;
                self.persist("attestations", &id.to_string(), &block)?;
            } else if let Ok(rotation) = KeyRotation::decode(&block) {
                inner
                    .attestations
                    .apply_rotation(&rotation, now)
                    .map_err(refused)?;
                let index = inner.attestations.rotations().len();
                self.persist("rotations", &format!("{index:08}"), &block)?;
            }
            let _ = std::fs::remove_file(self.dir.join(UNLOGGED_DIR).join(format!("{id}.cbor")));
            self.forget_histories();
            applied_any = true;
        }
    }

    fn persist_text(
        &self,
        folder: &str,
        name: &str,
        extension: &str,
        text: &str,
    ) -> Result<(), GovernanceError> {
        let dir = self.dir.join(folder);
        write(&dir, &format!("{name}.{extension}"), text.as_bytes())?;
        self.forget_histories();
        Ok(())
    }

    /// Drops the cached key histories after the directory changed (called once the file is
    /// written, so a history read before the change is never kept after it).
    fn forget_histories(&self) {
        if let Ok(mut cached) = self.histories.lock() {
            *cached = None;
        }
    }

    /// The version of the root in force (`None` when governance is off).
    pub fn root_version(&self) -> Option<u64> {
        let inner = self.inner.read().ok()?;
        inner.root.as_ref().map(|r| r.current().body.version)
    }

    /// Whether organisation key documents take effect only once proven in the key log
    /// (`governance.require_key_log`).
    pub fn key_log_required(&self) -> bool {
        self.key_log.is_some()
    }

    /// Whether a trust root is configured (and so the acceptance rule applies).
    pub fn enabled(&self) -> bool {
        self.inner.read().is_ok_and(|i| i.root.is_some())
    }

    /// Runs the acceptance rule; `Ok` when governance is off. Fails closed: a poisoned lock or
    /// a publisher that is not a did:key keeps the manifest out.
    pub fn accept(
        &self,
        manifest: &Manifest,
        publisher: &str,
        now: i64,
    ) -> Result<(), Vec<Rejection>> {
        let Ok(inner) = self.inner.read() else {
            return Err(vec![Rejection::Unavailable {
                reason: "the governance state's lock is poisoned".to_owned(),
            }]);
        };
        if inner.root.is_none() {
            return Ok(());
        }
        let Ok(publisher) = PublicKey::from_did(publisher) else {
            return Err(vec![Rejection::PublisherInvalid {
                publisher: publisher.to_owned(),
            }]);
        };
        let view = GovernanceView {
            attestations: &inner.attestations,
            policy: inner.policy.current(),
        };
        accept(view, manifest, &publisher, now)
    }

    /// The federation's ARD registries the policy in force lists (empty without one).
    pub fn registries(&self) -> Vec<String> {
        self.inner
            .read()
            .ok()
            .and_then(|inner| inner.policy.current().map(|p| p.body.registries.clone()))
            .unwrap_or_default()
    }

    /// The policy's rate tier for an organisation's calls, if governance sets one: requests
    /// per second and burst.
    pub fn org_rate(&self, org: &str) -> Option<(u32, u32)> {
        let inner = self.inner.read().ok()?;
        let tier = inner.policy.current()?.org_tier(org)?;
        Some((tier.requests_per_second, tier.burst))
    }

    /// The domain an organisation is bound to at `now` (its `org.domain` attestation, while
    /// it is verified), or `None`.
    pub fn org_domain(&self, org: &str, now: i64) -> Option<String> {
        self.inner.read().ok()?.attestations.org_domain(org, now)
    }

    /// The organisation's current key set (and threshold) at `now`, while it is verified.
    pub fn org_key_set(
        &self,
        org: &str,
        now: i64,
    ) -> Option<meridian_governance::document::KeySet> {
        self.inner.read().ok()?.attestations.org_key_set(org, now)
    }

    /// The unrevoked attestations about an organisation: (kind, id).
    pub fn org_attestation_kinds(&self, org: &str) -> Vec<(String, String)> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let subject = Subject::Org(org.to_owned());
        inner
            .attestations
            .about(&subject)
            .filter(|(_, _, revoked)| !revoked)
            .map(|(id, a, _)| (a.body.kind.clone(), id.to_string()))
            .collect()
    }

    /// Ids of the unrevoked attestations about an organisation.
    pub fn org_attestations(&self, org: &str) -> Vec<String> {
        self.org_attestation_kinds(org)
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    /// Verifies the next root version against the one in force, and keeps it. Returns its
    /// version.
    pub fn apply_root(
        &self,
        next: RootDocument,
        block: &[u8],
        now: i64,
    ) -> Result<u64, GovernanceError> {
        let version = next.body.version;
        let mut inner = self.write()?;
        let root = inner.root.as_mut().ok_or(GovernanceError::NotConfigured)?;
        let mut candidate = root.clone();
        candidate.update(next).map_err(refused)?;
        candidate
            .check_fresh(now, ExpiryCheck::Enforce)
            .map_err(refused)?;
        self.persist("roots", &format!("{version:08}"), block)?;
        *root = candidate;
        inner.remember_root(block.to_vec());
        Ok(version)
    }

    /// Offers a policy bundle; true when it replaced the one in force (and was kept).
    pub fn apply_policy(
        &self,
        bundle: PolicyBundle,
        block: &[u8],
        now: i64,
    ) -> Result<bool, GovernanceError> {
        let version = bundle.body.version;
        let mut inner = self.write()?;
        let Inner { root, policy, .. } = &mut *inner;
        let root = root.as_ref().ok_or(GovernanceError::NotConfigured)?;
        let changed = policy.offer(bundle, root, now).map_err(refused)?;
        if changed {
            self.persist("policy", &format!("{version:08}"), block)?;
        }
        Ok(changed)
    }

    /// Verifies an attestation (or revocation) under the root, adds and keeps it. Returns its id.
    pub fn apply_attestation(
        &self,
        attestation: Attestation,
        block: &[u8],
        now: i64,
    ) -> Result<meridian_registry::Cid, GovernanceError> {
        let mut inner = self.write()?;
        let id = attestation.id();
        let check = |root: &TrustedRoot| attestation.verify(root, now, 300).map_err(refused);
        if self.hold_unlogged(&mut inner, block, check)? {
            return Ok(id);
        }
        let Inner {
            root, attestations, ..
        } = &mut *inner;
        let root = root.as_ref().ok_or(GovernanceError::NotConfigured)?;
        let id = attestations.add(attestation, root, now).map_err(refused)?;
        self.persist("attestations", &id.to_string(), block)?;
        Ok(id)
    }

    /// Applies an organisation's key rotation (a link of its key chain, checked against its
    /// current key set) and keeps it, numbered in the order applied. Returns the organisation.
    pub fn apply_rotation(
        &self,
        rotation: KeyRotation,
        block: &[u8],
        now: i64,
    ) -> Result<String, GovernanceError> {
        let mut inner = self.write()?;
        inner.root.as_ref().ok_or(GovernanceError::NotConfigured)?;
        // Held rotations are checked when their proof arrives (they may need the ones before).
        if self.hold_unlogged(&mut inner, block, |_| Ok(()))? {
            return Ok(rotation.org);
        }
        inner
            .attestations
            .apply_rotation(&rotation, now)
            .map_err(refused)?;
        let index = inner.attestations.rotations().len();
        self.persist("rotations", &format!("{index:08}"), block)?;
        Ok(rotation.org)
    }

    /// A read view of the state, held until dropped (keep it short: writers wait).
    pub fn view(&self) -> Result<GovernanceRead<'_>, GovernanceError> {
        self.inner
            .read()
            .map(GovernanceRead)
            .map_err(|_| GovernanceError::Poisoned)
    }

    /// Keeps an organisation's registration request (already decoded and verified) for
    /// review. One request per organisation (the newest replaces the older) and at most
    /// `pending_max` organisations waiting, since anyone may ask.
    pub fn add_registration(
        &self,
        registration: Registration,
        block: &[u8],
        pending_max: usize,
    ) -> Result<String, GovernanceError> {
        let id = registration.document.id().to_string();
        let mut inner = self.write()?;
        let older: Vec<String> = inner
            .registrations
            .iter()
            .filter(|(_, r)| r.org == registration.org)
            .map(|(id, _)| id.clone())
            .collect();
        if older.is_empty() && inner.registrations.len() >= pending_max {
            return Err(GovernanceError::RegistrationsFull(pending_max));
        }
        self.persist("registrations", &id, block)?;
        for old in older.iter().filter(|old| **old != id) {
            inner.registrations.remove(old);
            let file = self.dir.join("registrations").join(format!("{old}.cbor"));
            if let Err(error) = std::fs::remove_file(&file)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %file.display(), %error, "could not remove a replaced registration request");
            }
        }
        inner.registrations.insert(id.clone(), registration);
        Ok(id)
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Inner>, GovernanceError> {
        self.inner.write().map_err(|_| GovernanceError::Poisoned)
    }

    /// A governance document from a peer (root version, policy bundle or attestation), applied
    /// through the same checks as the admin endpoints: the sync engine's hook.
    pub fn offer_document(&self, block: &[u8], now: i64) -> crate::engine::GovernanceOutcome {
        use crate::engine::GovernanceOutcome as Outcome;
        let refused = |error: GovernanceError| Outcome::Refused(error.to_string());
        let root_version = match self.inner.read() {
            Ok(inner) => match &inner.root {
                Some(root) => root.current().body.version,
                None => return Outcome::Refused("governance is off on this node".into()),
            },
            Err(_) => return Outcome::Refused("governance lock poisoned".into()),
        };
        if let Ok(next) = RootDocument::decode(block) {
            if next.body.version <= root_version {
                return Outcome::Known;
            }
            return self
                .apply_root(next, block, now)
                .map_or_else(refused, |_| Outcome::New);
        }
        if let Ok(bundle) = PolicyBundle::decode(block) {
            return match self.apply_policy(bundle, block, now) {
                Ok(true) => Outcome::New,
                Ok(false) => Outcome::Known,
                Err(error) => refused(error),
            };
        }
        if let Ok(attestation) = Attestation::decode(block) {
            let id = attestation.id();
            let known = self
                .inner
                .read()
                .is_ok_and(|inner| inner.attestations.contains(&id));
            if known {
                return Outcome::Known;
            }
            return self
                .apply_attestation(attestation, block, now)
                .map_or_else(refused, |_| Outcome::New);
        }
        if let Ok(rotation) = KeyRotation::decode(block) {
            let known = self.inner.read().is_ok_and(|inner| {
                inner
                    .attestations
                    .rotations()
                    .iter()
                    .any(|r| r.document.id() == rotation.document.id())
            });
            if known {
                return Outcome::Known;
            }
            return self
                .apply_rotation(rotation, block, now)
                .map_or_else(refused, |_| Outcome::New);
        }
        Outcome::Malformed("not a root, policy bundle, attestation or key rotation".into())
    }

    /// Every document a peer needs to reach this node's governance state: the root versions
    /// (oldest first, up to [`ROOT_HISTORY_MAX`] of them, so a peer several versions behind
    /// can follow the chain), the policy, the attestations and the key rotations.
    pub fn documents(&self) -> Vec<Vec<u8>> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        if inner.root.is_none() {
            return Vec::new();
        }
        let mut documents = inner.root_history.clone();
        documents.extend(inner.policy.current().map(|p| p.to_block()));
        documents.extend(inner.attestations.all().map(|(_, a)| a.to_block()));
        // Key rotations last and in the order applied: each needs the verification and the
        // rotations before it.
        documents.extend(inner.attestations.rotations().iter().map(|r| r.to_block()));
        documents
    }

    /// The URL the policy's hub directory gives for a region's hub (its `http` entry, else
    /// `http://` + its address).
    pub fn hub_url(&self, region: &str) -> Option<String> {
        let inner = self.inner.read().ok()?;
        inner.policy.current()?.hub(region).map(|h| h.http_url())
    }

    /// The regions the policy's hub directory lists (empty without a policy).
    pub fn hub_regions(&self) -> Vec<String> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .policy
            .current()
            .map(|p| p.body.hubs.iter().map(|h| h.region.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether this node mirrors a publisher: not when the policy denies its node key.
    pub fn publisher_allowed(&self, did: &str) -> bool {
        let Ok(inner) = self.inner.read() else {
            return true;
        };
        inner
            .policy
            .current()
            .is_none_or(|p| !p.body.deny_node_keys.iter().any(|d| d == did))
    }

    fn persist(&self, folder: &str, name: &str, bytes: &[u8]) -> Result<(), GovernanceError> {
        let dir = self.dir.join(folder);
        write(&dir, &format!("{name}.cbor"), bytes)?;
        self.forget_histories();
        Ok(())
    }
}

/// A read view of a node's governance state ([`Governance::view`]).
pub struct GovernanceRead<'a>(std::sync::RwLockReadGuard<'a, Inner>);

impl GovernanceRead<'_> {
    /// The trusted root, when governance is on.
    pub fn root(&self) -> Option<&TrustedRoot> {
        self.0.root.as_ref()
    }

    /// The attestations, revocations and key rotations applied.
    pub fn attestations(&self) -> &AttestationSet {
        &self.0.attestations
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<&PolicyBundle> {
        self.0.policy.current()
    }

    /// Registration requests waiting for review, by id.
    pub fn registrations(&self) -> &BTreeMap<String, Registration> {
        &self.0.registrations
    }

    /// The root versions trusted so far, oldest first (at most [`ROOT_HISTORY_MAX`]).
    pub fn root_history(&self) -> &[Vec<u8>] {
        &self.0.root_history
    }
}

/// Where key-log proofs are kept under the governance directory.
pub const KEY_PROOFS_DIR: &str = "key-proofs";
/// Where key-set documents wait for their proof.
pub const UNLOGGED_DIR: &str = "unlogged";

/// One document of an organisation's key history, as [`key_history`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistoryEntry {
    /// The document's id.
    pub document: meridian_registry::Cid,
    /// What it changed: `org.verified: keys [...]`, `rotation: added [...], removed [...]` or
    /// `key.revoked: DID`.
    pub change: String,
    /// `in force`, or `awaiting its key-log proof`.
    pub state: &'static str,
    /// Its key-log position, `(leaf index, tree size)`, when a proof of it is held.
    pub log: Option<(u64, u64)>,
}

/// The key documents about `org` under a node's governance directory `dir` (its
/// `org.verified` attestations, rotations and key revocations, those in force then those
/// waiting for a key-log proof), with their key-log positions. What `meridian org keys` prints
/// and the console's agent page shows.
pub fn key_history(dir: &Path, org: &str) -> Vec<KeyHistoryEntry> {
    key_histories(dir).remove(org).unwrap_or_default()
}

/// [`key_history`] of every organisation, read in one pass over `dir`.
fn key_histories(dir: &Path) -> KeyHistories {
    use meridian_governance::checkpoint::Checkpoint;
    let mut positions = std::collections::HashMap::new();
    for path in files_with(&dir.join(KEY_PROOFS_DIR), "proof") {
        if let Some(proof) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| KeyLogProof::parse(&t).ok())
        {
            let size = Checkpoint::parse_body(&proof.note.body).map_or(0, |c| c.size);
            positions.insert(proof.document, (proof.index, size));
        }
    }
    let mut histories = KeyHistories::new();
    for (folder, state) in [
        ("attestations", "in force"),
        ("rotations", "in force"),
        (UNLOGGED_DIR, "awaiting its key-log proof"),
    ] {
        for path in cbor_files(&dir.join(folder)) {
            let Ok(block) = std::fs::read(&path) else {
                continue;
            };
            let Some((id, org)) = key_document_id(&block) else {
                continue;
            };
            let Some(change) = key_change(&block) else {
                continue;
            };
            histories.entry(org).or_default().push(KeyHistoryEntry {
                document: id,
                change,
                state,
                log: positions.get(&id).copied(),
            });
        }
    }
    histories
}

/// What a key document changes, in words; `None` for a block that is not one.
fn key_change(block: &[u8]) -> Option<String> {
    use meridian_registry::cbor::Value;
    let dids = |keys: &[PublicKey]| {
        keys.iter()
            .map(PublicKey::to_did)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Ok(rotation) = KeyRotation::decode(block) {
        return Some(format!(
            "rotation: added [{}], removed [{}]",
            dids(&rotation.add),
            dids(&rotation.remove)
        ));
    }
    let attestation = Attestation::decode(block).ok()?;
    Some(match &attestation.body.subject {
        meridian_governance::attestation::Subject::Key(key) => {
            format!("key.revoked: {}", key.to_did())
        }
        _ => {
            let keys = match attestation.body.claims.get("keys") {
                Some(Value::Array(keys)) => keys
                    .iter()
                    .filter_map(|k| match k {
                        Value::Text(t) => Some(t.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            format!("org.verified: keys [{keys}]")
        }
    })
}

impl Governance {
    /// [`key_history`] of `org` in this node's governance directory, from a cache that every
    /// write to the directory clears.
    pub fn key_history(&self, org: &str) -> Vec<KeyHistoryEntry> {
        let Ok(mut cached) = self.histories.lock() else {
            return key_history(&self.dir, org);
        };
        let histories = cached.get_or_insert_with(|| key_histories(&self.dir));
        histories.get(org).cloned().unwrap_or_default()
    }
}

/// Whether `block` is a key-set document that adds trust (an `org.verified` attestation or
/// a key rotation) without a proof in `proven`. A `key.revoked` only takes trust away, so it
/// never waits.
fn needs_key_log_proof(
    block: &[u8],
    proven: &std::collections::HashSet<meridian_registry::Cid>,
) -> bool {
    let adds_trust = Attestation::decode(block)
        .is_ok_and(|a| a.body.kind == meridian_governance::attestation::KIND_ORG_VERIFIED)
        || KeyRotation::decode(block).is_ok();
    adds_trust && key_document_id(block).is_some_and(|(id, _)| !proven.contains(&id))
}

/// Whether a held document can be applied now (a rotation must name the current key set).
fn applicable(inner: &Inner, block: &[u8], now: i64) -> bool {
    match KeyRotation::decode(block) {
        Ok(rotation) => {
            let mut trial = inner.attestations.clone();
            trial.apply_rotation(&rotation, now).is_ok()
        }
        Err(_) => true,
    }
}

/// The files of a governance folder with `extension` (none when it does not exist yet).
fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    meridian_registry::files::list_with_extension(dir, extension).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use meridian_governance::document::KeySet;
    use meridian_governance::root::{RoleName, RootBody, RootDocument};
    use meridian_registry::keys::Keypair;

    use super::*;
    use crate::engine::GovernanceOutcome;

    const NOW: i64 = 1_800_000_000;

    fn key(tag: u8) -> Keypair {
        Keypair::from_secret(&[tag; 32])
    }

    /// Root version `version`, its root role held by key `version`, signed by the previous
    /// version's root key and its own (as a rotation must be).
    fn root(version: u64) -> Vec<u8> {
        let one = |key: Keypair| KeySet {
            keys: vec![key.public()],
            threshold: 1,
        };
        let roles = BTreeMap::from([
            (RoleName::Root, one(key(version as u8))),
            (RoleName::Attest, one(key(200))),
            (RoleName::Policy, one(key(201))),
            (RoleName::Witness, one(key(202))),
        ]);
        let mut document = RootDocument::new(RootBody {
            version,
            created_at: NOW - 60,
            expires_at: NOW + 86_400,
            roles,
        })
        .unwrap();
        if version > 1 {
            document.sign(&key(version as u8 - 1));
        }
        document.sign(&key(version as u8));
        document.to_block()
    }

    fn load(data: &Path, root_file: &Path) -> Governance {
        Governance::load(data, Some(root_file), NOW).unwrap()
    }

    fn version(governance: &Governance) -> u64 {
        let inner = governance.inner.read().unwrap();
        inner.root.as_ref().unwrap().current().body.version
    }

    #[test]
    fn a_peer_several_root_versions_behind_follows_the_chain_it_is_handed() {
        let dir = tempfile::tempdir().unwrap();
        let root_file = dir.path().join("root.1.cbor");
        std::fs::write(&root_file, root(1)).unwrap();
        let ahead = load(&dir.path().join("ahead"), &root_file);
        for v in 2..=4 {
            assert_eq!(ahead.offer_document(&root(v), NOW), GovernanceOutcome::New);
        }
        assert_eq!(version(&ahead), 4);

        // A node still on version 1 cannot take version 4 alone (it skips versions) ...
        let behind = load(&dir.path().join("behind"), &root_file);
        assert!(matches!(
            behind.offer_document(&root(4), NOW),
            GovernanceOutcome::Refused(_)
        ));
        // ... but what the node ahead hands its peers carries every version in between, oldest
        // first.
        let documents = ahead.documents();
        assert_eq!(documents[..4], [root(1), root(2), root(3), root(4)]);
        for document in &documents {
            behind.offer_document(document, NOW);
        }
        assert_eq!(version(&behind), 4);

        // After a restart the node ahead still hands on the whole chain.
        drop(ahead);
        let restarted = load(&dir.path().join("ahead"), &root_file);
        assert_eq!(
            restarted.documents()[..4],
            [root(1), root(2), root(3), root(4)]
        );
    }

    /// An `org.verified` attestation of `org` with key `k`, signed by the attest key.
    fn verified(org: &str, k: u8) -> Vec<u8> {
        use meridian_registry::cbor::Value;
        let claims = BTreeMap::from([(
            "keys".to_owned(),
            Value::Array(vec![Value::Text(key(k).public().to_did())]),
        )]);
        let mut attestation = Attestation::new(
            meridian_governance::attestation::Subject::Org(org.to_owned()),
            meridian_governance::attestation::KIND_ORG_VERIFIED,
            claims,
            NOW - 10,
            NOW + 86_400,
        )
        .unwrap();
        attestation.sign(&key(200));
        attestation.to_block()
    }

    #[test]
    fn the_key_history_follows_every_change_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root_file = dir.path().join("root.1.cbor");
        std::fs::write(&root_file, root(1)).unwrap();
        let governance = load(&dir.path().join("n"), &root_file);
        assert!(governance.key_history("acme").is_empty());

        // Asked before and after each document arrives: the cached history never hides one.
        assert_eq!(
            governance.offer_document(&verified("acme", 50), NOW),
            GovernanceOutcome::New
        );
        let acme = governance.key_history("acme");
        assert_eq!(acme.len(), 1, "{acme:?}");
        assert!(acme[0].change.contains(&key(50).public().to_did()));
        assert_eq!(acme[0].state, "in force");
        assert!(governance.key_history("globex").is_empty());
        assert_eq!(
            governance.offer_document(&verified("globex", 51), NOW),
            GovernanceOutcome::New
        );
        assert_eq!(governance.key_history("globex").len(), 1);
        // The directory's reading, as `meridian org keys` does it, says the same.
        assert_eq!(
            key_history(&dir.path().join("n").join("governance"), "acme"),
            acme
        );
    }

    #[test]
    fn the_root_history_handed_on_is_bounded() {
        let mut inner = Inner::empty();
        for v in 0..ROOT_HISTORY_MAX + 5 {
            inner.remember_root(vec![v as u8]);
        }
        assert_eq!(inner.root_history.len(), ROOT_HISTORY_MAX);
        assert_eq!(inner.root_history[0], vec![5]);
        assert_eq!(
            inner.root_history.last(),
            Some(&vec![(ROOT_HISTORY_MAX + 4) as u8])
        );
    }

    #[test]
    fn the_acceptance_rule_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let root_file = dir.path().join("root.1.cbor");
        std::fs::write(&root_file, root(1)).unwrap();
        let governance = load(&dir.path().join("n"), &root_file);
        let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://acme.example/a2a","protocolBinding":"JSONRPC"}]}"#;
        let manifest =
            meridian_registry::manifest::ManifestBody::from_card(card, "acme", "eu", NOW)
                .unwrap()
                .sign(&key(50));
        // A publisher that is not a did:key: refused, not waved through.
        let reasons = governance.accept(&manifest, "not-a-did", NOW).unwrap_err();
        assert!(
            matches!(reasons.as_slice(), [Rejection::PublisherInvalid { .. }]),
            "{reasons:?}"
        );
        // A poisoned lock (a panic while it was held): refused too.
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _held = governance.inner.write();
                    panic!("poisoning the governance lock on purpose");
                })
                .join()
        });
        let reasons = governance
            .accept(&manifest, &key(70).did(), NOW)
            .unwrap_err();
        assert!(
            matches!(reasons.as_slice(), [Rejection::Unavailable { .. }]),
            "{reasons:?}"
        );
    }
}
