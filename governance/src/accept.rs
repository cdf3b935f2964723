//! The acceptance rule: whether a manifest enters a node's federated view, and why not.
//!
//! One function, [`accept`], so every path into the federated view (an HTTP import, a snapshot
//! from a peer, a block from a hub) decides the same way. It runs after the snapshot itself has
//! verified (hashes, encoding, the publisher's commit chain, signatures); it then asks the
//! governance questions and returns every reason that applies, not only the first.

use meridian_registry::keys::PublicKey;
use meridian_registry::manifest::Manifest;

use crate::attestation::{AttestationSet, OrgStatus};
use crate::policy::PolicyBundle;

/// Why a manifest is kept out of the federated view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `org.verified` attestation for the organisation.
    #[error("organisation `{org}` is not verified")]
    OrgNotVerified {
        /// The organisation.
        org: String,
    },
    /// The organisation's verification was revoked.
    #[error("organisation `{org}`'s verification was revoked")]
    OrgRevoked {
        /// The organisation.
        org: String,
    },
    /// The organisation's verification expired.
    #[error("organisation `{org}`'s verification expired")]
    OrgVerificationExpired {
        /// The organisation.
        org: String,
    },
    /// The manifest is signed by a key that is not bound to its organisation.
    #[error("signing key {key} is not a key of organisation `{org}`")]
    KeyNotBound {
        /// The organisation.
        org: String,
        /// The signing key.
        key: String,
    },
    /// The signing key was revoked or rotated out: it signs nothing any more, whatever time
    /// the manifest claims.
    #[error(
        "signing key {key} was revoked or rotated out (at {revoked_at}); the manifest claims {signed_at}"
    )]
    KeyRevoked {
        /// The signing key.
        key: String,
        /// When it was revoked.
        revoked_at: i64,
        /// The manifest's `updated_at`.
        signed_at: i64,
    },
    /// The policy denies the organisation, or allows only others.
    #[error("policy denies organisation `{org}`")]
    OrgDenied {
        /// The organisation.
        org: String,
    },
    /// The policy denies the agent.
    #[error("policy denies agent `{agent}`")]
    AgentDenied {
        /// The agent key.
        agent: String,
    },
    /// The policy denies the publishing node.
    #[error("policy denies publisher node {node}")]
    NodeDenied {
        /// The node's did:key.
        node: String,
    },
    /// The publishing node's key is not a valid did:key, so nothing about it can be checked.
    #[error("publisher `{publisher}` is not a valid did:key")]
    PublisherInvalid {
        /// What was given as the publisher.
        publisher: String,
    },
    /// The governance state could not be read; the rule fails closed.
    #[error("governance state unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The policy in force has expired, so nothing can be checked against it (freeze protection).
    #[error("the policy in force (version {version}) expired at {expires_at}")]
    PolicyExpired {
        /// Its version.
        version: u64,
        /// Its expiry.
        expires_at: i64,
    },
}

/// What the acceptance rule reads: verified attestations and the policy in force (if any).
#[derive(Debug, Clone, Copy)]
pub struct GovernanceView<'a> {
    /// Attestations that verified under the trusted root.
    pub attestations: &'a AttestationSet,
    /// The policy in force.
    pub policy: Option<&'a PolicyBundle>,
}

/// Decides whether `manifest`, published by `publisher` in a snapshot that verified, enters the
/// federated view at `now`. `Ok(())`, or every reason it does not.
pub fn accept(
    view: GovernanceView<'_>,
    manifest: &Manifest,
    publisher: &PublicKey,
    now: i64,
) -> Result<(), Vec<Rejection>> {
    let mut reasons = Vec::new();
    let org = &manifest.body.org;
    match view.attestations.org_status(org, now) {
        OrgStatus::Unverified => reasons.push(Rejection::OrgNotVerified { org: org.clone() }),
        OrgStatus::Revoked => reasons.push(Rejection::OrgRevoked { org: org.clone() }),
        OrgStatus::Expired => reasons.push(Rejection::OrgVerificationExpired { org: org.clone() }),
        OrgStatus::Verified { keys } => {
            if !keys.contains(&manifest.signer)
                && view.attestations.key_revoked_at(&manifest.signer).is_none()
            {
                reasons.push(Rejection::KeyNotBound {
                    org: org.clone(),
                    key: manifest.signer.to_did(),
                });
            }
        }
    }
    // A revoked or rotated-out key signs nothing, whatever `updated_at` says: the signer
    // chooses that time, and a thief would backdate it.
    if let Some(revoked_at) = view.attestations.key_revoked_at(&manifest.signer) {
        reasons.push(Rejection::KeyRevoked {
            key: manifest.signer.to_did(),
            revoked_at,
            signed_at: manifest.body.updated_at,
        });
    }
    if let Some(policy) = view.policy {
        let body = &policy.body;
        if body.expires_at <= now {
            reasons.push(Rejection::PolicyExpired {
                version: body.version,
                expires_at: body.expires_at,
            });
        }
        if body.denies_org(org) {
            reasons.push(Rejection::OrgDenied { org: org.clone() });
        }
        if body.deny_agents.contains(&manifest.body.agent_id) {
            reasons.push(Rejection::AgentDenied {
                agent: manifest.body.agent_id.clone(),
            });
        }
        let node = publisher.to_did();
        if body.deny_node_keys.contains(&node) {
            reasons.push(Rejection::NodeDenied { node });
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
