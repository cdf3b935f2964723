//! The Meridian node: the `meridian` binary's library half.
//!
//! Top of the crate graph (`registry` <- `governance` <- `hub` <- `node`). Today it holds the
//! command line ([`cli`]) with the offline tools for keys and snapshots; the daemon (HTTP gateway,
//! peer mesh and sync engine) arrives with issues 4 and 5. The binary reads the wall clock once,
//! in `main`, and passes it down: nothing below reads it.

pub mod cli;
pub mod daemon;
pub mod demo;
pub mod gov_cli;
pub mod sync;
