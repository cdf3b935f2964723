//! The hub's integration tests: its HTTP API as documented.
#![allow(clippy::unwrap_used, missing_docs)]

mod api;
