//! Agent card JSON from publishers: parsing never panics.
//! The target's body is `meridian_tests::fuzz::card_json`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/card_json/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::card_json(data));
