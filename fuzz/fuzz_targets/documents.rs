//! Commit, manifest and tree-node blocks: decoding never panics.
//! The target's body is `meridian_tests::fuzz::documents`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/documents/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::documents(data));
