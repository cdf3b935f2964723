//! Commit, manifest and tree-node blocks: decoding never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_registry::commit::Commit;
use meridian_registry::ids::{self, Blake3};
use meridian_registry::manifest::Manifest;
use meridian_registry::mst::Mst;

fuzz_target!(|data: &[u8]| {
    if let Ok(commit) = Commit::decode(data) {
        let _ = commit.verify_signature();
    }
    if let Ok(manifest) = Manifest::decode(data) {
        let _ = manifest.verify_signature();
    }
    let cid = ids::dag_cbor_cid(data);
    let block: std::sync::Arc<[u8]> = data.into();
    let _ = Mst::<Blake3>::load(&cid, 1000, &mut |wanted| (*wanted == cid).then(|| block.clone()));
});
