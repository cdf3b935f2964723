//! Governance for a Meridian federation: who vouches for whom.
//!
//! Sits above `registry` in the crate graph (`registry` <- `governance` <- `hub` <- `node`) and,
//! like it, is sans-IO: every document verifies offline with time passed in. The pieces:
//!
//! - [`document`]: multi-signed documents with role thresholds;
//! - [`root`]: the TUF-style trust root and its version chain;
//! - [`attestation`]: attestations, revocations and organisation registration;
//! - [`domain`]: an organisation's proof that it controls a domain, and its attestation;
//! - [`policy`]: policy bundles (allow/deny lists, rate tiers, hub directory);
//! - [`accept`](mod@accept): the acceptance rule for the federated view;
//! - [`checkpoint`]: the RFC 6962 log of publisher heads, C2SP signed checkpoints and witnesses.
//!
//! The command line for all of it lives in the node crate (`meridian gov|org|attest|policy|checkpoint`).

pub mod accept;
pub mod attestation;
pub mod checkpoint;
pub mod document;
pub mod domain;
pub mod keylog;
pub mod policy;
pub mod root;

pub use meridian_registry as registry;
