//! Strict DAG-CBOR decoding: never panics, and whatever it accepts re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_registry::cbor;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = cbor::decode(data) {
        assert_eq!(cbor::encode(&value), data, "accepted a non-canonical encoding");
    }
});
