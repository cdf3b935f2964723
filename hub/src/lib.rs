//! A Meridian regional hub: caches snapshot blocks, mirrors heads and governance policy, and
//! relays and rate-limits cross-region federation and A2A calls.
//!
//! Sits between `governance` and `node` in the crate graph. Its cache policy and rate limiter are
//! to be sans-IO cores with thin axum and quinn drivers. Not built yet (issue 6); until then it
//! only names its dependencies so the crate graph is in place.

pub use meridian_governance as governance;
pub use meridian_registry as registry;
