//! Governance tests: every attack TUF defends against, reproduced and refused, plus
//! attestations, policy and the acceptance rule.
#![allow(clippy::unwrap_used, missing_docs)]

mod acceptance;
mod attestations;
mod checkpoints;
mod policy;
mod root;

use std::collections::BTreeMap;

use meridian_governance::document::KeySet;
use meridian_governance::root::{ExpiryCheck, RoleName, RootBody, RootDocument, TrustedRoot};
use meridian_registry::keys::Keypair;

pub const NOW: i64 = 1_800_000_000;
pub const DAY: i64 = 86_400;

pub fn key(seed: u8) -> Keypair {
    Keypair::from_secret(&[seed; 32])
}

/// Admin keys: root 1..=3 (threshold 2), attest 11..=12 (threshold 2), policy 21 (1), witness 31 (1).
pub struct Admins {
    pub root: Vec<Keypair>,
    pub attest: Vec<Keypair>,
    pub policy: Vec<Keypair>,
    pub witness: Vec<Keypair>,
}

pub fn admins(offset: u8) -> Admins {
    Admins {
        root: (1..=3).map(|i| key(i + offset)).collect(),
        attest: (11..=12).map(|i| key(i + offset)).collect(),
        policy: vec![key(21 + offset)],
        witness: vec![key(31 + offset)],
    }
}

pub fn set(keys: &[Keypair], threshold: usize) -> KeySet {
    KeySet {
        keys: keys.iter().map(|k| k.public()).collect(),
        threshold,
    }
}

pub fn root_body(version: u64, admins: &Admins, expires_at: i64) -> RootBody {
    let roles: BTreeMap<RoleName, KeySet> = [
        (RoleName::Root, set(&admins.root, 2)),
        (RoleName::Attest, set(&admins.attest, 2)),
        (RoleName::Policy, set(&admins.policy, 1)),
        (RoleName::Witness, set(&admins.witness, 1)),
    ]
    .into();
    RootBody {
        version,
        created_at: NOW - DAY,
        expires_at,
        roles,
    }
}

/// Version 1 signed by two of its three root keys.
pub fn genesis(admins: &Admins) -> RootDocument {
    let mut root = RootDocument::new(root_body(1, admins, NOW + 365 * DAY)).unwrap();
    root.sign(&admins.root[0]);
    root.sign(&admins.root[1]);
    root
}

pub fn trusted(admins: &Admins) -> TrustedRoot {
    TrustedRoot::bootstrap(genesis(admins), NOW, ExpiryCheck::Enforce).unwrap()
}
