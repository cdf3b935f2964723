//! End-to-end tests across crates, against the real `meridian` binary on loopback.
#![allow(clippy::unwrap_used, missing_docs)]

mod agent;
mod anti_entropy;
mod ard;
mod attacks;
mod cli;
mod console;
mod domains;
mod fuzz_regressions;
mod governance_flow;
mod ingest;
mod lifecycle;
mod runbooks;
mod tidy;
mod upgrade;
