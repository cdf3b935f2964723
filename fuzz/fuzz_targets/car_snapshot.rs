//! A CAR file from the network: reading and full snapshot verification never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_registry::car::Limits;
use meridian_registry::snapshot::{self, VerifyOptions};
use meridian_registry::store::MemoryStore;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        blocks_max: 10_000,
        car_bytes_max: 1 << 20,
        block_bytes_max: 256 * 1024,
        agents_max: 10_000,
        ..Limits::DEFAULT
    };
    if let Ok(contents) = snapshot::read_car(data, limits) {
        let options = VerifyOptions {
            limits,
            threads: 1,
            ..VerifyOptions::default()
        };
        let _ = snapshot::verify(&contents, &MemoryStore::new(), &options);
    }
});
