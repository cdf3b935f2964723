//! The hub's policy mirror, sans-IO: the governance root versions, the policy bundle in force
//! and the attestations, each verified against the hub's trusted root before it is kept or
//! served, so a node can catch up on governance from its hub alone.
//!
//! Unlike a node, the hub keeps every root version above the one it was configured with, so a
//! node several versions behind can walk the chain. The policy in force gives the hub its rate
//! tiers and the hub directory (the keys its QUIC trunk pins).

use std::collections::BTreeMap;

use meridian_governance::attestation::{Attestation, AttestationSet};
use meridian_governance::policy::{PolicyBundle, PolicyState};
use meridian_governance::root::{ExpiryCheck, RootDocument, TrustedRoot};
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

impl PolicyMirror {
    /// A mirror trusting `root` (a root document block, as in a node's `governance.root`).
    /// An expired root is accepted here so that newer versions can still be applied.
    pub fn new(root: &[u8], now: i64) -> Result<Self, String> {
        let root = RootDocument::decode(root).map_err(|e| format!("root document: {e}"))?;
        let root = TrustedRoot::bootstrap(root, now, ExpiryCheck::AllowExpiredForRecovery)
            .map_err(|e| format!("root document: {e}"))?;
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
    pub fn offer(&mut self, block: &[u8], now: i64) -> Result<DocOutcome, String> {
        if let Ok(next) = RootDocument::decode(block) {
            if next.body.version <= self.root.current().body.version {
                return Ok(DocOutcome::Known);
            }
            self.root
                .update(next)
                .map_err(|e| format!("root version refused: {e}"))?;
            self.roots.push(block.to_vec());
            self.version += 1;
            return Ok(DocOutcome::New);
        }
        if let Ok(bundle) = PolicyBundle::decode(block) {
            let changed = self
                .policy
                .offer(bundle, &self.root, now)
                .map_err(|e| format!("policy refused: {e}"))?;
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
                return Err(format!(
                    "the hub already keeps {ATTESTATIONS_MAX} attestations"
                ));
            }
            self.attestations
                .add(attestation, &self.root, now)
                .map_err(|e| format!("attestation refused: {e}"))?;
            self.attestation_blocks.insert(id, block.to_vec());
            self.version += 1;
            return Ok(DocOutcome::New);
        }
        Err("not a root, policy bundle or attestation".into())
    }

    /// Grows with every document kept.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every document, in the order to apply them: root versions, then the policy, then the
    /// attestations.
    pub fn documents(&self) -> Vec<Vec<u8>> {
        let mut documents = self.roots.clone();
        documents.extend(self.policy.current().map(PolicyBundle::to_block));
        documents.extend(self.attestation_blocks.values().cloned());
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

    /// The attestation blocks, by id.
    pub fn attestations(&self) -> impl Iterator<Item = (&Cid, &Vec<u8>)> {
        self.attestation_blocks.iter()
    }
}
