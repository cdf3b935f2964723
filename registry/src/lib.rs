//! The registry core of Meridian: everything a node needs to describe its agents as a signed,
//! content-addressed snapshot, and to check a snapshot from anyone else.
//!
//! This crate is the bottom of the crate graph (`registry` <- `governance` <- `hub` <- `node`).
//! It is sans-IO: it never opens a socket and never reads the clock (time is an argument).
//! The layers, bottom up:
//!
//! - [`cbor`]: strict canonical DAG-CBOR, the one encoding of every document;
//! - [`ids`]: CIDs (BLAKE3 for Meridian data, SHA-256 for the atproto vectors) and block checks;
//! - [`keys`]: ed25519 keys named by `did:key`;
//! - [`mst`]: the Merkle Search Tree mapping agent keys to manifest CIDs;
//! - [`manifest`]: A2A Agent Cards in signed envelopes;
//! - [`commit`]: signed snapshot commits and equivocation proofs;
//! - [`car`]: streaming CAR v1 reading and writing with limits;
//! - [`store`]: block stores (memory and sled) with atomic batches;
//! - [`time`]: unix seconds to and from ISO 8601 text;
//! - [`snapshot`]: build, verify, delta, export and import.

pub mod car;
pub mod cbor;
pub mod commit;
pub mod files;
pub mod ids;
mod json_view;
pub mod keys;
pub mod manifest;
pub mod mst;
pub mod samples;
pub mod snapshot;
pub mod store;
pub mod time;

pub use cid::Cid;
