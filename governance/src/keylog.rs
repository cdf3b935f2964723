//! Key transparency: every change of an organisation's key set (its `org.verified`
//! attestation, each key rotation, each `key.revoked`) is a leaf of an append-only Merkle log
//! whose checkpoints the witnesses co-sign, so a key added behind the organisation's back is
//! visible to it and to every monitor.
//!
//! The governance admins append a document's [`key_event_leaf`] to the log and hand out a
//! [`KeyLogProof`]: the document's place in the log and a co-signed checkpoint that includes
//! it. A node configured with `governance.require_key_log` trusts an organisation key only
//! from documents with such a proof; [`KeyChainAudit`] is what a monitor runs over the log's
//! documents in order. Sans-IO like the rest of the crate.

use meridian_registry::Cid;
use meridian_registry::keys::PublicKey;

use crate::attestation::{
    Attestation, AttestationSet, KIND_KEY_REVOKED, KIND_ORG_VERIFIED, KeyRotation, OrgStatus,
    Subject,
};
use crate::checkpoint::{
    Checkpoint, CheckpointError, Hash, NOTE_BYTES_MAX, PROOF_HASHES_MAX, SignedNote, leaf_hash,
    verify_inclusion,
};
use crate::root::TrustedRoot;

/// The first line of a key-log proof.
const PROOF_MAGIC: &str = "meridian key log proof v1";

/// The log leaf of a key-set document: its id (the CID of its signed part, unchanged by
/// co-signatures) under a domain string.
pub fn key_event_leaf(document_id: &Cid) -> Vec<u8> {
    format!("meridian key event v1\n{document_id}\n").into_bytes()
}

/// The id of a key-set document (`org.verified`, `key.revoked`, or a key rotation), or `None`
/// for anything else.
pub fn key_document_id(block: &[u8]) -> Option<(Cid, String)> {
    if let Ok(attestation) = Attestation::decode(block) {
        let org = match (&attestation.body.subject, attestation.body.kind.as_str()) {
            (Subject::Org(org), KIND_ORG_VERIFIED) => org.clone(),
            (Subject::Key(_), KIND_KEY_REVOKED) => match attestation.body.claims.get("org") {
                Some(meridian_registry::cbor::Value::Text(org)) => org.clone(),
                _ => String::new(),
            },
            _ => return None,
        };
        return Some((attestation.id(), org));
    }
    KeyRotation::decode(block)
        .ok()
        .map(|rotation| (rotation.document.id(), rotation.org))
}

/// Where a key-set document stands in the key log: an inclusion proof against a checkpoint
/// the log signed and witnesses co-signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogProof {
    /// The document's id.
    pub document: Cid,
    /// Its leaf index.
    pub index: u64,
    /// The inclusion proof against the checkpoint's tree.
    pub hashes: Vec<Hash>,
    /// The checkpoint, as a signed note with cosignatures.
    pub note: SignedNote,
}

/// Who vouches for a key log: its signing key and origin, and the witnesses whose
/// cosignatures count, with how many are needed.
#[derive(Debug, Clone)]
pub struct KeyLogTrust {
    /// The log's origin line (e.g. `gov.example/keys`).
    pub origin: String,
    /// The log's key.
    pub log_key: PublicKey,
    /// Witnesses by name.
    pub witnesses: Vec<(String, PublicKey)>,
    /// Cosignatures required.
    pub witness_threshold: usize,
}

impl KeyLogProof {
    /// The text form: a magic line, `document`, `index`, one `hash` line per proof hash, a
    /// blank line, then the signed note.
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        let mut out = format!(
            "{PROOF_MAGIC}\ndocument {}\nindex {}\n",
            self.document, self.index
        );
        for hash in &self.hashes {
            out.push_str("hash ");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note.to_text());
        out
    }

    /// Parses [`KeyLogProof::to_text`], bounded in size and hashes.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        use base64::Engine as _;
        let bad = |reason: &str| CheckpointError::Malformed(format!("key log proof: {reason}"));
        if text.len() > NOTE_BYTES_MAX + 8 * 1024 {
            return Err(bad("too large"));
        }
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the note"))?;
        let mut lines = head.lines();
        if lines.next() != Some(PROOF_MAGIC) {
            return Err(bad("not a key log proof"));
        }
        let document = lines
            .next()
            .and_then(|l| l.strip_prefix("document "))
            .and_then(|c| meridian_registry::ids::parse_cid(c).ok())
            .ok_or_else(|| bad("bad `document` line"))?;
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("bad `index` line"))?;
        let mut hashes = Vec::new();
        for line in lines {
            if hashes.len() == PROOF_HASHES_MAX {
                return Err(bad("too many hashes"));
            }
            let hash: Hash = line
                .strip_prefix("hash ")
                .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("bad `hash` line"))?;
            hashes.push(hash);
        }
        Ok(Self {
            document,
            index,
            hashes,
            note: SignedNote::parse(note)?,
        })
    }

    /// Checks the proof: the log's signature on the checkpoint, enough witness cosignatures,
    /// and the document's leaf in the checkpoint's tree. Returns the checkpoint.
    pub fn verify(&self, trust: &KeyLogTrust) -> Result<Checkpoint, CheckpointError> {
        let checkpoint = Checkpoint::parse_body(&self.note.body)?;
        if checkpoint.origin != trust.origin {
            return Err(CheckpointError::Malformed(format!(
                "checkpoint of log `{}`, not `{}`",
                checkpoint.origin, trust.origin
            )));
        }
        self.note.verify(&trust.origin, &trust.log_key)?;
        let cosigned = trust
            .witnesses
            .iter()
            .filter(|(name, key)| self.note.verify_cosignature(name, key).is_ok())
            .count();
        if cosigned < trust.witness_threshold {
            return Err(CheckpointError::MissingSignature {
                name: format!(
                    "{} of {} witnesses ({} co-signed)",
                    trust.witness_threshold,
                    trust.witnesses.len(),
                    cosigned
                ),
            });
        }
        let leaf = leaf_hash(&key_event_leaf(&self.document));
        verify_inclusion(
            &leaf,
            self.index,
            checkpoint.size,
            &self.hashes,
            &checkpoint.root,
        )?;
        Ok(checkpoint)
    }
}

/// One change of an organisation's key set, as an audit of the log sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The log position of the document.
    pub index: u64,
    /// The document's id.
    pub document: Cid,
    /// What it was: `org.verified`, `key-rotation` or `key.revoked`.
    pub kind: String,
    /// The organisation's key set after it.
    pub keys: Vec<String>,
    /// Whether the change was signed by the organisation's previous keys (a rotation), or is
    /// the first verification, or only removes keys (a revocation): a change any monitor must
    /// raise an alarm about is `false`.
    pub authorised: bool,
    /// Why it is not authorised, for the alarm.
    pub problem: Option<String>,
}

/// What a monitor runs: the key-set documents of the log, in log order, applied to one
/// organisation; every change its previous keys did not sign is flagged.
pub struct KeyChainAudit<'a> {
    root: &'a TrustedRoot,
    org: String,
    set: AttestationSet,
    events: Vec<KeyEvent>,
}

impl<'a> KeyChainAudit<'a> {
    /// An audit of `org` under `root`.
    pub fn new(root: &'a TrustedRoot, org: &str) -> Self {
        Self {
            root,
            org: org.to_owned(),
            set: AttestationSet::new(),
            events: Vec::new(),
        }
    }

    fn keys(&self, now: i64) -> Vec<String> {
        match self.set.org_status(&self.org, now) {
            OrgStatus::Verified { keys } => {
                let mut dids: Vec<String> = keys.iter().map(PublicKey::to_did).collect();
                dids.sort();
                dids
            }
            _ => Vec::new(),
        }
    }

    /// Takes in the document at log `index`; documents about other organisations are skipped.
    pub fn offer(&mut self, index: u64, block: &[u8], now: i64) {
        let Some((document, org)) = key_document_id(block) else {
            return;
        };
        if org != self.org {
            return;
        }
        let before = self.keys(now);
        let (kind, outcome): (&str, Result<(), String>) =
            if let Ok(rotation) = KeyRotation::decode(block) {
                (
                    "key-rotation",
                    self.set
                        .apply_rotation(&rotation, now)
                        .map_err(|e| e.to_string()),
                )
            } else if let Ok(attestation) = Attestation::decode(block) {
                let kind = if attestation.body.kind == KIND_ORG_VERIFIED {
                    "org.verified"
                } else {
                    "key.revoked"
                };
                (
                    kind,
                    self.set
                        .add(attestation, self.root, now)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                )
            } else {
                return;
            };
        let after = self.keys(now);
        let problem = match (kind, &outcome) {
            (_, Err(error)) => Some(format!("the document does not verify: {error}")),
            ("org.verified", Ok(())) if !before.is_empty() && after != before => Some(format!(
                "a new verification changed the key set from {before:?} to {after:?}; only a rotation signed by the previous keys may"
            )),
            _ => None,
        };
        self.events.push(KeyEvent {
            index,
            document,
            kind: kind.to_owned(),
            keys: after,
            authorised: problem.is_none(),
            problem,
        });
    }

    /// The key-set changes seen, in log order.
    pub fn events(&self) -> &[KeyEvent] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::Registration;
    use crate::checkpoint::MerkleLog;
    use crate::document::KeySet;
    use crate::root::{RoleName, RootBody, RootDocument};
    use meridian_registry::keys::Keypair;

    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> Keypair {
        Keypair::from_secret(&[seed; 32])
    }

    fn root() -> TrustedRoot {
        let one = |seed| KeySet {
            keys: vec![key(seed).public()],
            threshold: 1,
        };
        let mut document = RootDocument::new(RootBody {
            version: 1,
            created_at: NOW - 60,
            expires_at: NOW + 86_400,
            roles: [
                (RoleName::Root, one(1)),
                (RoleName::Attest, one(2)),
                (RoleName::Policy, one(3)),
                (RoleName::Witness, one(4)),
            ]
            .into(),
        })
        .expect("root");
        document.sign(&key(1));
        TrustedRoot::bootstrap(document, NOW, crate::root::ExpiryCheck::Enforce).expect("trusted")
    }

    fn verified(org_key: &Keypair) -> Vec<u8> {
        let mut attestation = Registration::create("acme", "acme.example", "ops", &[org_key])
            .expect("request")
            .approve(NOW - 10, NOW + 86_400)
            .expect("approval");
        attestation.sign(&key(2));
        attestation.to_block()
    }

    fn trust() -> KeyLogTrust {
        KeyLogTrust {
            origin: "gov.example/keys".into(),
            log_key: key(5).public(),
            witnesses: vec![("w1".into(), key(6).public())],
            witness_threshold: 1,
        }
    }

    /// A log of `blocks`, its checkpoint signed by the log key and co-signed by w1, and the
    /// proof for the block at `index`.
    fn proof(blocks: &[Vec<u8>], index: usize) -> KeyLogProof {
        let mut log = MerkleLog::new();
        for block in blocks {
            log.append(&key_event_leaf(
                &key_document_id(block).expect("key document").0,
            ));
        }
        let checkpoint = Checkpoint {
            origin: "gov.example/keys".into(),
            size: log.size(),
            root: log.root(log.size()).expect("root"),
        };
        let note = SignedNote::sign(&checkpoint.body(), "gov.example/keys", &key(5)).expect("note");
        let mut witness = crate::checkpoint::Witness::new(
            "w1",
            key(6),
            "gov.example/keys",
            key(5).public(),
            None,
        );
        let note = witness.cosign(&note, &[], 1).expect("cosigned");
        KeyLogProof {
            document: key_document_id(&blocks[index]).expect("key document").0,
            index: index as u64,
            hashes: log
                .inclusion_proof(index as u64, log.size())
                .expect("proof"),
            note,
        }
    }

    #[test]
    fn a_logged_document_proves_its_place_and_a_forged_proof_does_not() {
        let blocks = vec![verified(&key(50)), verified(&key(51))];
        let proof = proof(&blocks, 1);
        let parsed = KeyLogProof::parse(&proof.to_text()).expect("round trip");
        assert_eq!(parsed, proof);
        assert_eq!(parsed.verify(&trust()).expect("verifies").size, 2);
        // Another document at that place: refused.
        let mut other = proof.clone();
        other.document = key_document_id(&blocks[0]).expect("key document").0;
        assert!(matches!(
            other.verify(&trust()),
            Err(CheckpointError::InvalidProof(_))
        ));
        // Without the witness threshold: refused.
        let mut stricter = trust();
        stricter.witnesses.push(("w2".into(), key(7).public()));
        stricter.witness_threshold = 2;
        assert!(matches!(
            proof.verify(&stricter),
            Err(CheckpointError::MissingSignature { .. })
        ));
        // Signed by another log key: refused.
        let mut stranger = trust();
        stranger.log_key = key(9).public();
        assert!(proof.verify(&stranger).is_err());
        assert!(KeyLogProof::parse("meridian key log proof v1\ndocument x\n\nnote").is_err());
    }

    #[test]
    fn a_monitor_flags_a_key_set_changed_behind_the_organisations_back() {
        let root = root();
        let (first, fresh, planted) = (key(50), key(51), key(52));
        let rotation = KeyRotation::create(
            "acme",
            &[first.public()],
            &[&first],
            &[&fresh],
            &[first.public()],
            NOW,
        )
        .expect("rotation")
        .to_block();
        let mut audit = KeyChainAudit::new(&root, "acme");
        audit.offer(0, &verified(&first), NOW);
        audit.offer(1, &rotation, NOW);
        // The attest role verifies acme again with a key the organisation never held.
        audit.offer(2, &verified(&planted), NOW);
        let events = audit.events();
        assert_eq!(events.len(), 3);
        assert!(events[0].authorised && events[1].authorised);
        assert_eq!(events[1].keys, vec![fresh.did()]);
        assert!(!events[2].authorised);
        assert!(
            events[2]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("only a rotation")),
            "{:?}",
            events[2]
        );
    }
}
