//! Roots, policy bundles, attestations, key rotations, registrations and checkpoint notes.
//! The target's body is `meridian_tests::fuzz::governance_documents`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/governance_documents/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::governance_documents(data));
