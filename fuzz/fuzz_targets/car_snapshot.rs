//! A CAR file from the network: reading and full snapshot verification never panic.
//! The target's body is `meridian_tests::fuzz::car_snapshot`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/car_snapshot/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::car_snapshot(data));
