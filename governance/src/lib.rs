//! Governance for a Meridian federation: the trust root, organisation verification,
//! attestations, policy bundles and checkpoints.
//!
//! Sits above `registry` in the crate graph (`registry` <- `governance` <- `hub` <- `node`) and,
//! like it, is sans-IO: documents are verified offline with time passed in. This crate is not
//! built yet (issue 3); until then it only re-exports the registry types governance documents
//! will be made of, so the crate graph is in place.

pub use meridian_registry as registry;
