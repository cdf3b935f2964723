//! Strict DAG-CBOR decoding: never panics, and whatever it accepts re-encodes to the same bytes.
//! The target's body is `meridian_tests::fuzz::cbor_decode`, which `cargo test` also runs over the
//! committed inputs in `fuzz/regressions/cbor_decode/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| meridian_tests::fuzz::cbor_decode(data));
