//! The hub's policy mirror, sans-IO: the governance root versions, the policy bundle in force
//! and the attestations, each verified against the hub's trusted root before it is kept or
//! served, so a node can catch up on governance from its hub alone.
//!
//! Unlike a node, the hub keeps every root version above the one it was configured with, so a
//! node several versions behind can walk the chain. The policy in force gives the hub its rate
//! tiers and the hub directory (the keys its QUIC trunk pins).

use std::collections::BTreeMap;

use meridian_governance::attestation::{
    AddError, Attestation, AttestationSet, KeyRotation, RotationError,
};
use meridian_governance::document::DocumentError;
use meridian_governance::policy::{PolicyBundle, PolicyError, PolicyState};
use meridian_governance::root::{ExpiryCheck, RootDocument, RootError, TrustedRoot};
use meridian_registry::Cid;

/// Most attestations the mirror keeps (a bound on memory from the network).
pub const ATTESTATIONS_MAX: usize = 100_000;

/// What offering a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocOutcome {
    /// It is new and in force.
    New,
    /// The mirror already holds it (or something newer).
    Known,
}

/// The mirror.
#[derive(Debug)]
pub struct PolicyMirror {
    root: TrustedRoot,
    /// Root version blocks accepted after the configured one, oldest first.
    roots: Vec<Vec<u8>>,
    policy: PolicyState,
    attestations: AttestationSet,
    attestation_blocks: BTreeMap<Cid, Vec<u8>>,
    version: u64,
}

/// Why the mirror refused a governance document (or its root).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// The configured root is not a root document.
    #[error("root document: {0}")]
    RootDecode(DocumentError),
    /// A root (configured or offered) does not verify, or does not follow the one in force.
    #[error("root version refused: {0}")]
    Root(RootError),
    /// A policy bundle does not verify under the root, or is older than the one in force.
    #[error("policy refused: {0}")]
    Policy(PolicyError),
    /// An attestation or revocation does not verify.
    #[error("attestation refused: {0}")]
    Attestation(AddError),
    /// A key rotation does not follow the organisation's key chain.
    #[error("key rotation refused: {0}")]
    Rotation(RotationError),
    /// The mirror holds [`ATTESTATIONS_MAX`] attestations already.
    #[error("the hub already keeps {ATTESTATIONS_MAX} attestations")]
    Full,
    /// The bytes are none of the documents a hub mirrors.
    #[error("not a root, policy bundle, attestation or key rotation")]
    Unknown,
}

/// Why the hub does not keep a node's heads ([`PolicyMirror::admits_node`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeRefusal {
    /// No policy is in force yet, so no node is admitted.
    #[error(
        "this hub has no policy in force yet; it admits heads only of nodes the signed policy admits"
    )]
    NoPolicy,
    /// The policy denies the node's key.
    #[error("the policy denies node {0}")]
    Denied(String),
    /// Neither listed in `allow_node_keys` nor attested `node.verified`.
    #[error(
        "node {0} is not admitted: name it in the policy's allow_node_keys or attest it node.verified"
    )]
    NotAdmitted(String),
}

impl PolicyMirror {
    /// A mirror trusting `root` (a root document block, as in a node's `governance.root`).
    /// An expired root is accepted here so that newer versions can still be applied.
    pub fn new(root: &[u8], now: i64) -> Result<Self, MirrorError> {
        let root = RootDocument::decode(root).map_err(MirrorError::RootDecode)?;
        let root = TrustedRoot::bootstrap(root, now, ExpiryCheck::AllowExpiredForRecovery)
            .map_err(MirrorError::Root)?;
        Ok(Self {
            root,
            roots: Vec::new(),
            policy: PolicyState::new(),
            attestations: AttestationSet::new(),
            attestation_blocks: BTreeMap::new(),
            version: 0,
        })
    }

    /// Verifies a governance document (root version, policy bundle, attestation or revocation)
    /// and keeps it.
    pub fn offer(&mut self, block: &[u8], now: i64) -> Result<DocOutcome, MirrorError> {
        if let Ok(next) = RootDocument::decode(block) {
            if next.body.version <= self.root.current().body.version {
                return Ok(DocOutcome::Known);
            }
            self.root.update(next).map_err(MirrorError::Root)?;
            self.roots.push(block.to_vec());
            self.version += 1;
            return Ok(DocOutcome::New);
        }
        if let Ok(bundle) = PolicyBundle::decode(block) {
            let changed = self
                .policy
                .offer(bundle, &self.root, now)
                .map_err(MirrorError::Policy)?;
            if changed {
                self.version += 1;
                return Ok(DocOutcome::New);
            }
            return Ok(DocOutcome::Known);
        }
        if let Ok(attestation) = Attestation::decode(block) {
            let id = attestation.id();
            if self.attestation_blocks.contains_key(&id) {
                return Ok(DocOutcome::Known);
            }
            if self.attestation_blocks.len() >= ATTESTATIONS_MAX {
                return Err(MirrorError::Full);
            }
            self.attestations
                .add(attestation, &self.root, now)
                .map_err(MirrorError::Attestation)?;
            self.attestation_blocks.insert(id, block.to_vec());
            self.version += 1;
            return Ok(DocOutcome::New);
        }
        if let Ok(rotation) = KeyRotation::decode(block) {
            let id = rotation.document.id();
            if self
                .attestations
                .rotations()
                .iter()
                .any(|r| r.document.id() == id)
            {
                return Ok(DocOutcome::Known);
            }
            self.attestations
                .apply_rotation(&rotation, now)
                .map_err(MirrorError::Rotation)?;
            self.version += 1;
            return Ok(DocOutcome::New);
        }
        Err(MirrorError::Unknown)
    }

    /// Grows with every document kept.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every document, in the order to apply them: root versions, then the policy, then the
    /// attestations, then key rotations in the order they were applied.
    pub fn documents(&self) -> Vec<Vec<u8>> {
        let mut documents = self.roots.clone();
        documents.extend(self.policy.current().map(PolicyBundle::to_block));
        documents.extend(self.attestation_blocks.values().cloned());
        documents.extend(
            self.attestations
                .rotations()
                .iter()
                .map(KeyRotation::to_block),
        );
        documents
    }

    /// The newest root version's block.
    pub fn root_block(&self) -> Vec<u8> {
        self.root.current().to_block()
    }

    /// The trusted root.
    pub fn root(&self) -> &TrustedRoot {
        &self.root
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<&PolicyBundle> {
        self.policy.current()
    }

    /// Whether the hub keeps heads of the node `did` (and honours its callers' claims): the
    /// policy in force names it in `allow_node_keys`, or an unrevoked, unexpired
    /// `node.verified` attestation vouches for it; never when the policy denies it. Without a
    /// policy in force no node is admitted. `Err` says why not.
    pub fn admits_node(&self, did: &str, now: i64) -> Result<(), NodeRefusal> {
        let Some(policy) = self.policy.current() else {
            return Err(NodeRefusal::NoPolicy);
        };
        let body = &policy.body;
        if body.deny_node_keys.iter().any(|d| d == did) {
            return Err(NodeRefusal::Denied(did.to_owned()));
        }
        if body.allow_node_keys.iter().any(|d| d == did) {
            return Ok(());
        }
        let attested = meridian_registry::keys::PublicKey::from_did(did).is_ok_and(|key| {
            let subject = meridian_governance::attestation::Subject::Node(key);
            self.attestations
                .about(&subject)
                .any(|(_, attestation, revoked)| {
                    !revoked
                        && attestation.body.kind
                            == meridian_governance::attestation::KIND_NODE_VERIFIED
                        && attestation.body.issued_at <= now
                        && now < attestation.body.expires_at
                })
        });
        if attested {
            Ok(())
        } else {
            Err(NodeRefusal::NotAdmitted(did.to_owned()))
        }
    }

    /// The acceptance rule over what the mirror holds: whether `manifest`, published by the
    /// node `publisher`, is in the federated view, so the relay calls only agents a node would
    /// list (a revoked organisation's agents stay uncallable through hubs too).
    pub fn accepts(
        &self,
        manifest: &meridian_registry::manifest::Manifest,
        publisher: &meridian_registry::keys::PublicKey,
        now: i64,
    ) -> Result<(), Vec<meridian_governance::accept::Rejection>> {
        let view = meridian_governance::accept::GovernanceView {
            attestations: &self.attestations,
            policy: self.policy.current(),
        };
        meridian_governance::accept::accept(view, manifest, publisher, now)
    }

    /// The attestation blocks, by id.
    pub fn attestations(&self) -> impl Iterator<Item = (&Cid, &Vec<u8>)> {
        self.attestation_blocks.iter()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use meridian_governance::attestation::{Attestation, KIND_NODE_VERIFIED, Subject};
    use meridian_governance::document::KeySet;
    use meridian_governance::policy::{PolicyBody, PolicyBundle};
    use meridian_governance::root::{RoleName, RootBody, RootDocument};
    use meridian_registry::keys::Keypair;

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    pub(crate) fn key(seed: u8) -> Keypair {
        Keypair::from_secret(&[seed; 32])
    }

    /// A mirror over a root whose every role is one key: root 1, attest 2, policy 3, witness 4.
    pub(crate) fn mirror() -> PolicyMirror {
        let role = |seed| KeySet {
            keys: vec![key(seed).public()],
            threshold: 1,
        };
        let roles: BTreeMap<RoleName, KeySet> = [
            (RoleName::Root, role(1)),
            (RoleName::Attest, role(2)),
            (RoleName::Policy, role(3)),
            (RoleName::Witness, role(4)),
        ]
        .into();
        let mut root = RootDocument::new(RootBody {
            version: 1,
            created_at: NOW - DAY,
            expires_at: NOW + 365 * DAY,
            roles,
        })
        .expect("root");
        root.sign(&key(1));
        PolicyMirror::new(&root.to_block(), NOW).expect("mirror")
    }

    /// A policy document of `version`, signed by the policy key, edited by `edit`.
    pub(crate) fn policy(version: u64, edit: impl FnOnce(&mut PolicyBody)) -> Vec<u8> {
        let mut body = PolicyBody {
            version,
            issued_at: NOW - 10,
            expires_at: NOW + DAY,
            ..PolicyBody::default()
        };
        edit(&mut body);
        let mut bundle = PolicyBundle::new(body).expect("policy");
        bundle.sign(&key(3));
        bundle.to_block()
    }

    #[test]
    fn heads_are_admitted_only_from_nodes_the_policy_admits() {
        let (listed, attested, stranger) = (key(50).did(), key(51).did(), key(52).did());
        let mut mirror = mirror();
        assert_eq!(mirror.admits_node(&listed, NOW), Err(NodeRefusal::NoPolicy));
        let allow = vec![listed.clone()];
        mirror
            .offer(&policy(1, |b| b.allow_node_keys = allow), NOW)
            .expect("policy kept");
        assert_eq!(mirror.admits_node(&listed, NOW), Ok(()));
        assert_eq!(
            mirror.admits_node(&stranger, NOW),
            Err(NodeRefusal::NotAdmitted(stranger.clone()))
        );
        // A node.verified attestation admits a node the list does not name.
        assert_eq!(
            mirror.admits_node(&attested, NOW),
            Err(NodeRefusal::NotAdmitted(attested.clone()))
        );
        let mut vouched = Attestation::new(
            Subject::Node(key(51).public()),
            KIND_NODE_VERIFIED,
            BTreeMap::new(),
            NOW - 10,
            NOW + DAY,
        )
        .expect("attestation");
        vouched.sign(&key(2));
        mirror
            .offer(&vouched.to_block(), NOW)
            .expect("attestation kept");
        assert_eq!(mirror.admits_node(&attested, NOW), Ok(()));
        // ...until it expires.
        assert_eq!(
            mirror.admits_node(&attested, NOW + 2 * DAY),
            Err(NodeRefusal::NotAdmitted(attested.clone()))
        );
        // A deny wins over the list.
        let both = vec![listed.clone()];
        let deny = vec![listed.clone()];
        mirror
            .offer(
                &policy(2, |b| {
                    b.allow_node_keys = both;
                    b.deny_node_keys = deny;
                }),
                NOW,
            )
            .expect("policy kept");
        assert_eq!(
            mirror.admits_node(&listed, NOW),
            Err(NodeRefusal::Denied(listed.clone()))
        );
    }

    #[test]
    fn the_relay_acceptance_rule_follows_the_mirrored_attestations() {
        use meridian_governance::attestation::Registration;
        use meridian_registry::manifest::ManifestBody;
        let mut mirror = mirror();
        let org_key = key(60);
        let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://acme.example/a2a","protocolBinding":"JSONRPC"}]}"#;
        let manifest = ManifestBody::from_card(card, "acme", "eu-west", NOW)
            .expect("card")
            .sign(&org_key);
        let publisher = key(70).public();
        let reasons = mirror.accepts(&manifest, &publisher, NOW).unwrap_err();
        assert!(
            matches!(
                reasons.as_slice(),
                [meridian_governance::accept::Rejection::OrgNotVerified { .. }]
            ),
            "{reasons:?}"
        );
        let registration =
            Registration::create("acme", "acme.example", "ops", &[&org_key]).expect("request");
        let mut verified = registration.approve(NOW - 10, NOW + DAY).expect("approval");
        verified.sign(&key(2));
        mirror.offer(&verified.to_block(), NOW).expect("kept");
        assert_eq!(mirror.accepts(&manifest, &publisher, NOW), Ok(()));
        // Revoked: the relay refuses the organisation's agents again.
        let mut revocation =
            Attestation::revocation(verified.id(), "fraud", NOW, NOW + DAY).expect("revocation");
        revocation.sign(&key(2));
        mirror.offer(&revocation.to_block(), NOW).expect("kept");
        let reasons = mirror.accepts(&manifest, &publisher, NOW).unwrap_err();
        assert!(
            matches!(
                reasons.as_slice(),
                [meridian_governance::accept::Rejection::OrgRevoked { .. }]
            ),
            "{reasons:?}"
        );
    }
}
