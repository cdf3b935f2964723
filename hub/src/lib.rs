//! A Meridian regional hub: caches snapshot blocks, mirrors heads and governance policy, and
//! relays and rate-limits cross-region federation and A2A calls.
//!
//! Sits between `sync` (the federation protocol) and `node` in the crate graph. The decisions are
//! one sans-IO state machine, [`machine`] (`handle(now, input)` / `poll() -> output`, tested
//! without sockets), built from cores: [`cache`] (verified, size-bounded LRU with miss
//! collapsing), [`heads`] (newest verified head per publisher), [`policy`] (verified governance
//! mirror), [`routing`] (where a cache miss is fetched), [`deltas`] (one upstream fetch per delta however
//! many nodes ask), [`ratelimit`] (GCRA) and [`breaker`]
//! (circuit breaker per upstream). [`wire`] is the sync protocol's message format (from
//! `meridian-sync`), which hubs speak with their region's nodes as the node mesh does.
//! The drivers are [`trunk`] (QUIC between hubs, certificates pinned to hub keys) and
//! [`daemon`] (`meridian hub run`: the thin async driver of the machine, the HTTP API,
//! persistence, relay and metrics); [`egress`] is
//! how the hub reaches nodes and agents (HTTP in production, simulated sockets in the
//! simulations). [`console`] is the web console's serving, shared with nodes, and the hub's
//! own console page.

pub mod apidoc;
pub mod breaker;
pub mod cache;
pub mod console;
pub mod daemon;
pub mod deltas;
pub mod egress;
pub mod heads;
pub mod machine;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod relay;
pub mod routing;
pub mod serve;
pub mod trunk;
/// The sync protocol's messages, from the protocol crate (`meridian-sync`).
pub use meridian_sync::wire;

pub use meridian_governance as governance;
pub use meridian_registry as registry;
