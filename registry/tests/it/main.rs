//! Integration tests of the registry core: conformance vectors, properties, failure paths and
//! the shared store suite.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
mod conformance;
mod golden;
mod memory;
mod properties;
mod snapshots;
mod stores;
