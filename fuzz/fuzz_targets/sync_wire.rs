//! The sync protocol's gossip, requests and answers: decoding never panics and is canonical.
//! The target's body is `meridian_tests::fuzz::sync_wire`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/sync_wire/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::sync_wire(data));
