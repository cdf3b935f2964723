//! Names bound to keys when governance is off: which organisation key set may speak for an
//! organisation name on this node.
//!
//! With governance on, the acceptance rule decides (an organisation's agents are signed only by
//! its verified key set). Without it, a node binds an organisation name to the first key that
//! signs for it (trust on first use) and keeps that binding in `DATA/names.json`, so a restart
//! remembers it. A manifest for a bound name signed by another key is a **conflicting claim**:
//! it is kept as evidence (listed by the API and `meridian node names list`, counted in
//! `meridian_name_conflicts_total`, announced as a `name.conflict` event) and never served.
//! Only the operator changes a binding, by pinning a key set (`meridian node names pin|accept`),
//! written to `DATA/name-pins.json`, which the running node re-reads when it changes.
//!
//! Between manifests signed under one bound key set (an organisation whose agents moved between
//! nodes) the index keeps the newer; `updated_at` never decides between different key sets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow};
use serde::{Deserialize, Serialize};

/// The node's learned bindings and held claims, under the data directory.
pub const NAMES_FILE: &str = "names.json";
/// The operator's pinned bindings, under the data directory; they override learned ones.
pub const NAME_PINS_FILE: &str = "name-pins.json";
/// Conflicting claims kept as evidence; past it the oldest is dropped (and counted).
pub const HELD_CLAIMS_MAX: usize = 1024;
/// Keys one binding may list.
pub const BINDING_KEYS_MAX: usize = 16;

/// Which keys may sign an organisation's agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The organisation's keys, as did:key.
    pub keys: BTreeSet<String>,
    /// Unix seconds the binding was made.
    pub bound_at: i64,
    /// `first-use` (learned) or `pinned` (the operator's decision).
    pub how: String,
}

/// A manifest that claimed a bound name with a key outside its binding: evidence, never served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldClaim {
    /// The organisation the claim is for.
    pub org: String,
    /// The agent it claimed.
    pub agent_id: String,
    /// The key that signed it.
    pub signer: String,
    /// The node whose snapshot carried it.
    pub publisher: String,
    /// The manifest's CID.
    pub manifest: String,
    /// Unix seconds it was first seen.
    pub first_seen: i64,
    /// Unix seconds it was last seen.
    pub last_seen: i64,
}

/// What the node has learned: bindings and held claims (`DATA/names.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamesFile {
    /// Bindings by organisation.
    pub bindings: BTreeMap<String, Binding>,
    /// Held claims, oldest first.
    pub held: Vec<HeldClaim>,
    /// Domains this node checked itself, by organisation (governance off).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub domains: BTreeMap<String, DomainBinding>,
}

/// A domain an organisation proved it controls, checked by this node (governance off): the
/// proof served at `https://DOMAIN/.well-known/meridian-org.json` named the organisation and
/// exactly the keys its name is bound to here, signed by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainBinding {
    /// The domain.
    pub domain: String,
    /// The organisation's keys the proof listed; the binding holds only while the name is
    /// bound to exactly these (a rotation suspends it until the next check).
    pub keys: BTreeSet<String>,
    /// Unix seconds the proof expires; the binding lapses then unless a check renews it.
    pub expires_at: i64,
    /// Unix seconds of the last successful check.
    pub checked_at: i64,
}

/// Why a domain could not be bound to an organisation on this node.
#[derive(Debug, thiserror::Error)]
pub enum DomainBindError {
    /// The proof lists other keys than those the name is bound to here.
    #[error(
        "the proof lists other keys than the ones `{org}` is bound to on this node: a domain does not rebind a name; rotate the keys first (a rotation signed by the bound keys), then serve a proof by the new ones"
    )]
    OtherKeys {
        /// The organisation.
        org: String,
    },
    /// The proof does not hold (wrong domain or organisation, expired, bad signatures).
    #[error("{0}")]
    Proof(#[from] meridian_governance::domain::DomainError),
    /// The bindings could not be read or written.
    #[error("{0:#}")]
    Store(#[from] anyhow::Error),
}

/// The operator's decisions (`DATA/name-pins.json`): organisation to key set.
pub type PinsFile = BTreeMap<String, Binding>;

/// What [`Names::check`] decided about one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// The signer is in the name's binding.
    Bound,
    /// The name was free; it is now bound to the signer (trust on first use).
    NewlyBound,
    /// The name is bound to other keys: the claim is held, not served.
    Conflict {
        /// The keys the name is bound to.
        bound: BTreeSet<String>,
        /// Whether this claim was seen for the first time (held just now).
        new: bool,
    },
}

/// One manifest as the name check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The organisation.
    pub org: &'a str,
    /// The agent id.
    pub agent_id: &'a str,
    /// The signing key, as did:key.
    pub signer: &'a str,
    /// The publishing node, as did:key.
    pub publisher: &'a str,
    /// The manifest's CID.
    pub manifest: &'a str,
}

struct Inner {
    learned: NamesFile,
    pins: PinsFile,
    pins_modified: Option<SystemTime>,
    dirty: bool,
}

impl Inner {
    /// The binding of `org` in force: the operator's pin, else what was learned.
    fn bound(&self, org: &str) -> Option<&Binding> {
        self.pins
            .get(org)
            .or_else(|| self.learned.bindings.get(org))
    }
}

/// The running node's name bindings.
pub struct Names {
    names_path: PathBuf,
    pins_path: PathBuf,
    inner: Mutex<Inner>,
    conflicts_total: AtomicU64,
    dropped_total: AtomicU64,
}

fn read_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid names file", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Names {
    /// Loads `DATA/names.json` and `DATA/name-pins.json` (either may be missing).
    pub fn load(data: &Path) -> Result<Self> {
        let names_path = data.join(NAMES_FILE);
        let pins_path = data.join(NAME_PINS_FILE);
        let learned: NamesFile = read_json(&names_path)?;
        let pins: PinsFile = read_json(&pins_path)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                learned,
                pins,
                pins_modified: modified(&pins_path),
                dirty: false,
            }),
            names_path,
            pins_path,
            conflicts_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| anyhow!("the name bindings' lock is poisoned"))
    }

    /// Decides whether `claim`'s signer may speak for its organisation, binding a free name to
    /// it. Fails closed: an error keeps the manifest out.
    pub fn check(&self, claim: Claim<'_>, now: i64) -> Result<NameCheck> {
        let mut inner = self.lock()?;
        let bound = inner.bound(claim.org).map(|b| b.keys.clone());
        match bound {
            Some(keys) if keys.contains(claim.signer) => Ok(NameCheck::Bound),
            Some(keys) => {
                let new = self.hold(&mut inner, claim, now);
                Ok(NameCheck::Conflict { bound: keys, new })
            }
            None => {
                inner.learned.bindings.insert(
                    claim.org.to_owned(),
                    Binding {
                        keys: [claim.signer.to_owned()].into(),
                        bound_at: now,
                        how: "first-use".to_owned(),
                    },
                );
                inner.dirty = true;
                Ok(NameCheck::NewlyBound)
            }
        }
    }

    /// What a local publish asks before it stores a manifest: `None` when `signer` may sign
    /// for `org` (binding a free name to it, first use), or the keys the name is bound to when
    /// it may not. A refused local publish is not held as evidence: the publisher is told.
    pub fn bind_local(
        &self,
        org: &str,
        signer: &str,
        now: i64,
    ) -> Result<Option<BTreeSet<String>>> {
        let mut inner = self.lock()?;
        let bound = inner.bound(org).map(|b| b.keys.clone());
        match bound {
            Some(keys) if keys.contains(signer) => Ok(None),
            Some(keys) => Ok(Some(keys)),
            None => {
                inner.learned.bindings.insert(
                    org.to_owned(),
                    Binding {
                        keys: [signer.to_owned()].into(),
                        bound_at: now,
                        how: "first-use".to_owned(),
                    },
                );
                inner.dirty = true;
                drop(inner);
                self.flush()?;
                Ok(None)
            }
        }
    }

    /// Holds `claim` as evidence; true when it was not held before.
    fn hold(&self, inner: &mut Inner, claim: Claim<'_>, now: i64) -> bool {
        let held = &mut inner.learned.held;
        if let Some(existing) = held.iter_mut().find(|h| {
            h.org == claim.org
                && h.agent_id == claim.agent_id
                && h.signer == claim.signer
                && h.publisher == claim.publisher
        }) {
            if existing.manifest != claim.manifest {
                existing.manifest = claim.manifest.to_owned();
            }
            existing.last_seen = now;
            inner.dirty = true;
            return false;
        }
        self.conflicts_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            org = claim.org,
            agent = claim.agent_id,
            signer = claim.signer,
            publisher = claim.publisher,
            "conflicting claim on a bound name: held as evidence, not served"
        );
        held.push(HeldClaim {
            org: claim.org.to_owned(),
            agent_id: claim.agent_id.to_owned(),
            signer: claim.signer.to_owned(),
            publisher: claim.publisher.to_owned(),
            manifest: claim.manifest.to_owned(),
            first_seen: now,
            last_seen: now,
        });
        if held.len() > HELD_CLAIMS_MAX {
            let excess = held.len() - HELD_CLAIMS_MAX;
            held.drain(..excess);
            self.dropped_total
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
        inner.dirty = true;
        true
    }

    /// Writes `DATA/names.json` if anything changed since the last write.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock()?;
        if !inner.dirty {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&inner.learned)?;
        crate::data::write_file(&self.names_path, &text)?;
        inner.dirty = false;
        Ok(())
    }

    /// Re-reads the pins file if it changed since it was read; true when it did (the caller
    /// then rebuilds the federated view). Held claims of a re-pinned organisation are dropped:
    /// the rebuild holds again those still in conflict.
    pub fn reload_pins_if_changed(&self) -> Result<bool> {
        let now_modified = modified(&self.pins_path);
        let mut inner = self.lock()?;
        if now_modified == inner.pins_modified {
            return Ok(false);
        }
        let pins: PinsFile = read_json(&self.pins_path)?;
        let changed: BTreeSet<String> = pins
            .iter()
            .filter(|(org, binding)| inner.pins.get(*org) != Some(binding))
            .map(|(org, _)| org.clone())
            .chain(
                inner
                    .pins
                    .keys()
                    .filter(|org| !pins.contains_key(*org))
                    .cloned(),
            )
            .collect();
        inner.learned.held.retain(|h| !changed.contains(&h.org));
        inner.pins = pins;
        inner.pins_modified = now_modified;
        inner.dirty = true;
        Ok(true)
    }

    /// Applies an organisation's key rotation without governance: it must name the key set
    /// the name is bound to (`prev`), be signed by one of those keys and by every key it adds,
    /// and leave a key. The binding becomes the rotated set (`how = "rotation"`), so the
    /// removed keys sign nothing here any more. A name the operator pinned changes only by a
    /// new pin.
    pub fn apply_rotation(
        &self,
        rotation: &meridian_governance::attestation::KeyRotation,
        now: i64,
    ) -> Result<Binding> {
        use meridian_governance::document::KeySet;
        use meridian_registry::keys::PublicKey;
        let mut inner = self.lock()?;
        let org = &rotation.org;
        if inner.pins.contains_key(org) {
            return Err(anyhow!(
                "`{org}` is pinned by the operator; change the pin (meridian node names pin)"
            ));
        }
        let bound = inner
            .learned
            .bindings
            .get(org)
            .ok_or_else(|| anyhow!("`{org}` is not bound to any key on this node"))?;
        let keys: Vec<PublicKey> = bound
            .keys
            .iter()
            .map(|did| PublicKey::from_did(did))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("a bound key of `{org}` does not parse: {e}"))?;
        if meridian_governance::attestation::key_set_digest(&keys) != rotation.prev {
            return Err(anyhow!(
                "the rotation replaces a key set that is not the one `{org}` is bound to here"
            ));
        }
        let current = KeySet {
            keys: keys.clone(),
            threshold: 1,
        };
        rotation
            .document
            .verify_threshold(&current, "a key the name is bound to")
            .map_err(|e| anyhow!("key rotation for `{org}`: {e}"))?;
        if !rotation.add.is_empty() {
            let added = KeySet {
                keys: rotation.add.clone(),
                threshold: rotation.add.len(),
            };
            rotation
                .document
                .verify_threshold(&added, "proof of possession (every added key)")
                .map_err(|e| anyhow!("key rotation for `{org}`: {e}"))?;
        }
        let next: BTreeSet<String> = keys
            .iter()
            .chain(&rotation.add)
            .filter(|k| !rotation.remove.contains(k))
            .map(PublicKey::to_did)
            .collect();
        if next.is_empty() {
            return Err(anyhow!("key rotation would leave `{org}` without keys"));
        }
        if next.len() > BINDING_KEYS_MAX {
            return Err(anyhow!(
                "key rotation would bind `{org}` to {} keys; at most {BINDING_KEYS_MAX}",
                next.len()
            ));
        }
        let binding = Binding {
            keys: next,
            bound_at: now,
            how: "rotation".to_owned(),
        };
        inner.learned.bindings.insert(org.clone(), binding.clone());
        // A domain proved by the old keys is suspended until a proof by the new ones is
        // checked: check at once.
        if let Some(domain) = inner.learned.domains.get_mut(org.as_str()) {
            domain.checked_at = 0;
        }
        // Claims by the newly added keys are no conflict any more; the rebuild holds again
        // what still is one.
        inner.learned.held.retain(|h| h.org != *org);
        inner.dirty = true;
        drop(inner);
        self.flush()?;
        Ok(binding)
    }

    /// Checks `proof` (fetched from `domain`) for `org` against the keys the name is bound to
    /// (a free name is bound to the proof's keys, every one of which must have signed) and
    /// records the domain. A domain names one organisation: another organisation's binding to
    /// it is dropped (the domain now serves this one's proof).
    pub fn bind_domain(
        &self,
        org: &str,
        domain: &str,
        proof: &meridian_governance::domain::DomainProof,
        now: i64,
    ) -> Result<DomainBinding, DomainBindError> {
        use meridian_governance::document::KeySet;
        let mut inner = self.lock()?;
        let proof_keys: BTreeSet<String> = proof.keys.iter().map(|k| k.to_did()).collect();
        let bound = inner.bound(org).map(|b| b.keys.clone());
        let current = match &bound {
            Some(keys) if *keys != proof_keys => {
                return Err(DomainBindError::OtherKeys {
                    org: org.to_owned(),
                });
            }
            Some(_) => KeySet {
                keys: proof.keys.clone(),
                threshold: 1,
            },
            // A free name: every key the proof lists must have signed it.
            None => KeySet {
                keys: proof.keys.clone(),
                threshold: proof.keys.len(),
            },
        };
        proof.verify(domain, org, &current, now)?;
        if bound.is_none() {
            if proof_keys.len() > BINDING_KEYS_MAX {
                return Err(anyhow!(
                    "the proof lists {} keys; a binding lists at most {BINDING_KEYS_MAX}",
                    proof_keys.len()
                )
                .into());
            }
            inner.learned.bindings.insert(
                org.to_owned(),
                Binding {
                    keys: proof_keys.clone(),
                    bound_at: now,
                    how: "domain".to_owned(),
                },
            );
        }
        let binding = DomainBinding {
            domain: domain.to_owned(),
            keys: proof_keys,
            expires_at: proof.expires_at,
            checked_at: now,
        };
        inner
            .learned
            .domains
            .retain(|other, b| other == org || b.domain != domain);
        inner
            .learned
            .domains
            .insert(org.to_owned(), binding.clone());
        inner.dirty = true;
        drop(inner);
        self.flush()?;
        Ok(binding)
    }

    /// The binding of `org` in force (the operator's pin, else the one learned), if any.
    pub fn binding(&self, org: &str) -> Result<Option<Binding>> {
        Ok(self.lock()?.bound(org).cloned())
    }

    /// The domain `org` is bound to at `now`: its proof unexpired, and the name still bound to
    /// the keys the proof listed.
    pub fn domain(&self, org: &str, now: i64) -> Option<String> {
        let inner = self.lock().ok()?;
        let binding = inner.learned.domains.get(org)?;
        let keys = inner.bound(org).map(|b| &b.keys)?;
        (binding.expires_at > now && *keys == binding.keys).then(|| binding.domain.clone())
    }

    /// The domains due a check at `now`: last checked `recheck_secs` ago or more, or whose
    /// proof expires within `recheck_secs`.
    pub fn domains_due(&self, now: i64, recheck_secs: i64) -> Vec<(String, String)> {
        let Ok(inner) = self.lock() else {
            return Vec::new();
        };
        inner
            .learned
            .domains
            .iter()
            .filter(|(_, b)| {
                b.checked_at.saturating_add(recheck_secs) <= now
                    || b.expires_at.saturating_sub(recheck_secs) <= now
            })
            .map(|(org, b)| (org.clone(), b.domain.clone()))
            .collect()
    }

    /// Drops `org`'s domain binding if its proof has expired at `now` (a failed check keeps it
    /// until then); true when it did.
    pub fn lapse_domain(&self, org: &str, now: i64) -> Result<bool> {
        let mut inner = self.lock()?;
        let expired = inner
            .learned
            .domains
            .get(org)
            .is_some_and(|b| b.expires_at <= now);
        if expired {
            inner.learned.domains.remove(org);
            inner.dirty = true;
            drop(inner);
            self.flush()?;
        }
        Ok(expired)
    }

    /// Every domain binding, by organisation.
    pub fn domains(&self) -> BTreeMap<String, DomainBinding> {
        self.lock()
            .map(|inner| inner.learned.domains.clone())
            .unwrap_or_default()
    }

    /// Bindings in force (pins over learned) and held claims.
    pub fn snapshot(&self) -> Result<(BTreeMap<String, Binding>, Vec<HeldClaim>)> {
        let inner = self.lock()?;
        let mut bindings = inner.learned.bindings.clone();
        bindings.extend(inner.pins.clone());
        Ok((bindings, inner.learned.held.clone()))
    }

    /// Conflicting claims seen since start, and claims dropped past [`HELD_CLAIMS_MAX`].
    pub fn counters(&self) -> (u64, u64) {
        (
            self.conflicts_total.load(Ordering::Relaxed),
            self.dropped_total.load(Ordering::Relaxed),
        )
    }
}

/// `meridian node names pin`: binds `org` to `keys` (did:key) in `DATA/name-pins.json`.
pub fn pin(data: &Path, org: &str, keys: &[String], now: i64) -> Result<Binding> {
    meridian_registry::manifest::check_name("org", org).map_err(|e| anyhow!(e))?;
    if keys.is_empty() {
        return Err(anyhow!("name at least one key to pin `{org}` to"));
    }
    if keys.len() > BINDING_KEYS_MAX {
        return Err(anyhow!(
            "{} keys given; a binding lists at most {BINDING_KEYS_MAX}",
            keys.len()
        ));
    }
    for key in keys {
        meridian_registry::keys::PublicKey::from_did(key)
            .with_context(|| format!("`{key}` is not a did:key"))?;
    }
    let path = data.join(NAME_PINS_FILE);
    let mut pins: PinsFile = read_json(&path)?;
    let binding = Binding {
        keys: keys.iter().cloned().collect(),
        bound_at: now,
        how: "pinned".to_owned(),
    };
    pins.insert(org.to_owned(), binding.clone());
    crate::data::write_file(&path, &serde_json::to_vec_pretty(&pins)?)?;
    Ok(binding)
}

/// `meridian node names accept`: pins `org` to the key of the held claim whose signer is
/// `signer`, so that claim's agents are served from now on (and the old key's are held).
pub fn accept(data: &Path, org: &str, signer: &str, now: i64) -> Result<Binding> {
    let learned: NamesFile = read_json(&data.join(NAMES_FILE))?;
    if !learned
        .held
        .iter()
        .any(|h| h.org == org && h.signer == signer)
    {
        return Err(anyhow!(
            "no held claim for `{org}` signed by {signer} in {}",
            data.join(NAMES_FILE).display()
        ));
    }
    pin(data, org, &[signer.to_owned()], now)
}

/// `meridian node names list`: the bindings in force and the held claims, from the files.
pub fn list(data: &Path) -> Result<(BTreeMap<String, Binding>, Vec<HeldClaim>)> {
    let learned: NamesFile = read_json(&data.join(NAMES_FILE))?;
    let pins: PinsFile = read_json(&data.join(NAME_PINS_FILE))?;
    let mut bindings = learned.bindings;
    bindings.extend(pins);
    Ok((bindings, learned.held))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim<'a>(signer: &'a str, agent: &'a str) -> Claim<'a> {
        Claim {
            org: "acme",
            agent_id: agent,
            signer,
            publisher: "did:key:publisher",
            manifest: "bafy",
        }
    }

    #[test]
    fn first_signer_binds_and_another_key_is_held_not_bound() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        assert_eq!(
            names.check(claim("did:key:a", "acme/echo"), 1).unwrap(),
            NameCheck::NewlyBound
        );
        assert_eq!(
            names.check(claim("did:key:a", "acme/other"), 2).unwrap(),
            NameCheck::Bound
        );
        assert!(matches!(
            names.check(claim("did:key:thief", "acme/echo"), 3).unwrap(),
            NameCheck::Conflict { bound, new: true } if bound.contains("did:key:a")
        ));
        // Seen again: one held claim, counted once.
        names.check(claim("did:key:thief", "acme/echo"), 4).unwrap();
        let (_, held) = names.snapshot().unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].last_seen, 4);
        assert_eq!(names.counters().0, 1);
        // Persisted: a restart keeps the binding and the evidence.
        names.flush().unwrap();
        let again = Names::load(dir.path()).unwrap();
        assert!(matches!(
            again.check(claim("did:key:thief", "acme/echo"), 5).unwrap(),
            NameCheck::Conflict { .. }
        ));
        assert_eq!(again.snapshot().unwrap().1.len(), 1);
    }

    #[test]
    fn a_pin_overrides_the_learned_binding_and_clears_its_held_claims() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        let (a, b) = (
            meridian_registry::keys::Keypair::from_secret(&[1; 32]).did(),
            meridian_registry::keys::Keypair::from_secret(&[2; 32]).did(),
        );
        names.check(claim(&a, "acme/echo"), 1).unwrap();
        names.check(claim(&b, "acme/echo"), 2).unwrap();
        names.flush().unwrap();
        accept(dir.path(), "acme", &b, 3).unwrap();
        assert!(names.reload_pins_if_changed().unwrap());
        assert!(!names.reload_pins_if_changed().unwrap());
        assert!(names.snapshot().unwrap().1.is_empty());
        assert_eq!(
            names.check(claim(&b, "acme/echo"), 4).unwrap(),
            NameCheck::Bound
        );
        assert!(matches!(
            names.check(claim(&a, "acme/echo"), 5).unwrap(),
            NameCheck::Conflict { .. }
        ));
    }

    #[test]
    fn a_local_publish_binds_a_free_name_and_is_refused_on_a_bound_one() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        assert_eq!(names.bind_local("acme", "did:key:a", 1).unwrap(), None);
        assert_eq!(names.bind_local("acme", "did:key:a", 2).unwrap(), None);
        let refused = names.bind_local("acme", "did:key:b", 3).unwrap();
        assert_eq!(refused, Some(["did:key:a".to_owned()].into()));
        // Bound and written at once; a refused local publish is not evidence.
        assert!(
            Names::load(dir.path())
                .unwrap()
                .snapshot()
                .unwrap()
                .0
                .contains_key("acme")
        );
        assert!(names.snapshot().unwrap().1.is_empty());
        assert!(matches!(
            names.check(claim("did:key:b", "acme/echo"), 4).unwrap(),
            NameCheck::Conflict { .. }
        ));
    }

    #[test]
    fn a_rotation_signed_by_the_bound_key_moves_the_binding() {
        use meridian_governance::attestation::KeyRotation;
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        let (old, new, thief) = (
            meridian_registry::keys::Keypair::from_secret(&[1; 32]),
            meridian_registry::keys::Keypair::from_secret(&[2; 32]),
            meridian_registry::keys::Keypair::from_secret(&[3; 32]),
        );
        assert_eq!(names.bind_local("acme", &old.did(), 1).unwrap(), None);
        // Signed by a key the name is not bound to: refused.
        let forged = KeyRotation::create(
            "acme",
            &[old.public()],
            &[&thief],
            &[&thief],
            &[old.public()],
            2,
        )
        .unwrap();
        let error = names.apply_rotation(&forged, 2).unwrap_err();
        assert!(error.to_string().contains("bound to"), "{error:#}");
        let rotation = KeyRotation::create(
            "acme",
            &[old.public()],
            &[&old],
            &[&new],
            &[old.public()],
            2,
        )
        .unwrap();
        let binding = names.apply_rotation(&rotation, 2).unwrap();
        assert_eq!(binding.keys, [new.did()].into());
        assert_eq!(binding.how, "rotation");
        // Applied once; again it names a set the name is no longer bound to.
        assert!(names.apply_rotation(&rotation, 3).is_err());
        assert_eq!(
            names.bind_local("acme", &old.did(), 4).unwrap(),
            Some([new.did()].into())
        );
        // Persisted.
        let again = Names::load(dir.path()).unwrap();
        assert_eq!(again.bind_local("acme", &new.did(), 5).unwrap(), None);
    }

    #[test]
    fn accepting_a_claim_that_was_never_held_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = meridian_registry::keys::Keypair::from_secret(&[1; 32]).did();
        let error = accept(dir.path(), "acme", &key, 1).unwrap_err();
        assert!(error.to_string().contains("no held claim"), "{error:#}");
        let error = pin(dir.path(), "acme", &["not-a-key".to_owned()], 1).unwrap_err();
        assert!(error.to_string().contains("not a did:key"), "{error:#}");
        assert!(pin(dir.path(), "acme", &[], 1).is_err());
    }

    #[test]
    fn held_claims_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        names.check(claim("did:key:a", "acme/x"), 0).unwrap();
        for i in 0..HELD_CLAIMS_MAX + 5 {
            let agent = format!("acme/a{i}");
            names.check(claim("did:key:b", &agent), 1).unwrap();
        }
        assert_eq!(names.snapshot().unwrap().1.len(), HELD_CLAIMS_MAX);
        assert_eq!(names.counters().1, 5);
    }

    #[test]
    fn a_domain_binds_only_the_keys_the_name_is_bound_to_and_lapses_when_its_proof_expires() {
        use meridian_governance::domain::DomainProof;
        use meridian_registry::keys::Keypair;
        let dir = tempfile::tempdir().unwrap();
        let names = Names::load(dir.path()).unwrap();
        let (acme, thief, other) = (
            Keypair::from_secret(&[1; 32]),
            Keypair::from_secret(&[2; 32]),
            Keypair::from_secret(&[3; 32]),
        );
        let proof = |org: &str, keys: &[&Keypair], signers: &[&Keypair], expires: i64| {
            let public: Vec<_> = keys.iter().map(|k| k.public()).collect();
            DomainProof::create(org, "acme.example", &public, signers, 100, expires).unwrap()
        };
        // A free name: every listed key must sign; then the name is bound to them.
        let half = proof("acme", &[&acme, &other], &[&acme], 1_000);
        assert!(matches!(
            names.bind_domain("acme", "acme.example", &half, 200),
            Err(DomainBindError::Proof(_))
        ));
        assert!(names.domain("acme", 200).is_none());
        names.bind_local("acme", &acme.did(), 150).unwrap();
        // Bound to acme's key: a proof by another key does not rebind it.
        let stolen = proof("acme", &[&thief], &[&thief], 1_000);
        assert!(matches!(
            names.bind_domain("acme", "acme.example", &stolen, 200),
            Err(DomainBindError::OtherKeys { .. })
        ));
        let good = proof("acme", &[&acme], &[&acme], 1_000);
        names
            .bind_domain("acme", "acme.example", &good, 200)
            .unwrap();
        assert_eq!(names.domain("acme", 200).as_deref(), Some("acme.example"));
        // Written to names.json: a restart keeps it.
        let reloaded = Names::load(dir.path()).unwrap();
        assert_eq!(
            reloaded.domain("acme", 200).as_deref(),
            Some("acme.example")
        );
        // Due for a check after recheck_secs, or that long before it expires.
        assert!(names.domains_due(250, 100).is_empty());
        assert_eq!(names.domains_due(300, 100).len(), 1);
        assert_eq!(names.domains_due(901, 100).len(), 1);
        // A failed check keeps it until the proof expires; then it lapses.
        assert!(!names.lapse_domain("acme", 999).unwrap());
        assert!(
            names.domain("acme", 1_000).is_none(),
            "expired proofs bind nothing"
        );
        assert!(names.lapse_domain("acme", 1_000).unwrap());
        assert!(names.domains().is_empty());
        // One domain, one organisation: the domain now serving globex's proof moves to it.
        names
            .bind_domain("acme", "acme.example", &good, 200)
            .unwrap();
        let globex = proof("globex", &[&other], &[&other], 1_000);
        names
            .bind_domain("globex", "acme.example", &globex, 300)
            .unwrap();
        assert!(names.domain("acme", 300).is_none());
        assert_eq!(names.domain("globex", 300).as_deref(), Some("acme.example"));
    }
}
