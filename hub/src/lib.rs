//! A Meridian regional hub: caches snapshot blocks, mirrors heads and governance policy, and
//! relays and rate-limits cross-region federation and A2A calls.
//!
//! Sits between `governance` and `node` in the crate graph. Its cache policy and rate limiter are
//! sans-IO cores with thin axum and quinn drivers. Built so far: [`ratelimit`], the GCRA limiter
//! (also used by the node's A2A proxy), and [`cache`], the verified, size-bounded LRU block cache
//! with miss collapsing. The HTTP and QUIC drivers, persistence and relay are issue 6.

pub mod cache;
pub mod ratelimit;

pub use meridian_governance as governance;
pub use meridian_registry as registry;
