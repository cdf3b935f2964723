//! What a hub reads from a node first: gossip and sync bodies and vouched gateway URLs.
//! The target's body is `meridian_tests::fuzz::hub_bodies`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/hub_bodies/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::hub_bodies(data));
