//! The Meridian node: the `meridian` binary's library half.
//!
//! Top of the crate graph (`registry` <- `governance` <- `hub` <- `node`). It holds the command
//! line ([`cli`], [`gov_cli`]) with the offline tools, the node daemon ([`daemon`]: HTTP gateway,
//! A2A proxy, governance endpoints, the libp2p mesh), the sans-IO sync engine ([`sync`]) and the
//! federation demo ([`demo`]). The binary reads the wall clock once per command, in `main` (the
//! daemon through `daemon::wall_clock`), and passes it down.

pub mod agent_cli;
pub mod agent_read;
pub mod cli;
pub mod command;
pub mod daemon;
pub mod data;
pub mod demo;
pub mod gov_cli;
pub mod progress;
/// The federation protocol: the sync engine and wire messages (`meridian-sync`).
pub use meridian_sync as sync;
