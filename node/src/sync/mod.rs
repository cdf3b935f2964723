//! Federation sync: how a node mirrors its peers' signed snapshots.
//!
//! - [`wire`]: the protocol's messages and their bounded byte encoding (re-exported from
//!   `meridian-hub`, which speaks the same protocol to its region's nodes);
//! - [`engine`]: the sans-IO sync state machine (heads in, verified imports out).
//!
//! Drivers move the engine's messages: the libp2p mesh in the daemon, and the turmoil
//! transport in `meridian-simulations`.

pub mod engine;
pub use meridian_hub::wire;

pub use engine::{
    Engine, GovernanceHooks, GovernanceOutcome, ImportReport, NoGovernance, Now, Offense, Output,
    PeerInfo, SyncConfig, SyncStats, Verdict, import,
};

#[cfg(test)]
mod tests;
