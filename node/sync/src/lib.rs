//! Meridian's federation protocol, the layer between the data model (`meridian-registry`,
//! `meridian-governance`) and the daemons (`meridian-hub`, `meridian-node`), and what the
//! simulations run:
//!
//! - [`wire`]: the protocol's messages and their bounded byte encoding, spoken between nodes
//!   (libp2p), between a hub and its region's nodes (HTTP) and between hubs (the QUIC trunk);
//! - [`claims`]: what a node signs for its hub (where its blocks are, who is calling) and the
//!   headers that carry it;
//! - [`governance`]: one node's governance state, which the engine consults and the node's
//!   endpoints and the simulations change;
//! - [`driver`]: the one async loop that drives the engine over a [`driver::Transport`]
//!   (libp2p in the node, turmoil in the simulations);
//! - [`engine`]: the sans-IO sync state machine (heads in, verified imports out), driven by the
//!   node's libp2p mesh and by the turmoil simulations alike.
//!
//! Nothing here opens a socket or reads the clock: time comes in as [`Now`], effects go out as
//! [`Output`] values; the driver only waits on tokio's timers.

pub mod claims;
pub mod driver;
pub mod engine;
pub mod governance;
pub mod wire;

pub use engine::{
    Engine, GovernanceHooks, GovernanceOutcome, ImportReport, NoGovernance, Now, Offense, Output,
    PeerInfo, PeerReport, SyncConfig, SyncStats, SyncTime, Verdict, import,
};

/// Heads a node hands its hub when the hub comes (back) up, its own first: enough for a
/// region's share of publishers; the hubs' anti-entropy between themselves carries the rest.
pub const HUB_CONNECT_HEADS_MAX: usize = 256;

#[cfg(test)]
mod tests;
