//! Decoders reserve memory only for what they have read: a crafted block whose headers claim
//! more items than it holds is decoded in a child process under an address-space limit, which
//! the old decoder (reserving every claimed count at every nesting level) blew through.

use std::sync::Arc;

use meridian_registry::cbor::{self, DecodeError, NESTING_DEPTH_MAX};
use meridian_registry::ids::{Blake3, dag_cbor_cid};
use meridian_registry::mst;

/// The block size the mesh and hubs accept for one block.
const CRAFTED_BLOCK_BYTES: usize = 1 << 20;

/// The address space the child may use: plenty for a test binary, far less than the gigabytes
/// the crafted block made the old decoder reserve.
const CHILD_ADDRESS_SPACE_BYTES: u64 = 768 << 20;

/// Set in the child's environment: decode instead of spawning.
const CHILD_ENV: &str = "MERIDIAN_TEST_CRAFTED_DECODE_CHILD";

/// A tree node `{e: [[[[...]]]], l: null}` whose every nested array claims as many items as
/// there are bytes left in the 1 MiB block, padded so the claims are believable.
fn crafted_tree_node() -> Vec<u8> {
    let mut block = vec![0xa2, 0x61, b'e'];
    for _ in 0..NESTING_DEPTH_MAX - 2 {
        let claimed = (CRAFTED_BLOCK_BYTES - block.len() - 5) as u32;
        block.push(0x9a);
        block.extend_from_slice(&claimed.to_be_bytes());
    }
    block.resize(CRAFTED_BLOCK_BYTES, 0x00);
    block
}

#[test]
fn crafted_counts_do_not_reserve_memory_ahead_of_the_bytes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let block = crafted_tree_node();
        // The innermost array's items are 0x00 (the integer 0) until the bytes run out.
        let error = cbor::decode(&block).unwrap_err();
        assert!(
            matches!(error, DecodeError::Truncated { .. }),
            "unexpected {error:?}"
        );
        let cid = dag_cbor_cid(&block);
        let error = mst::node_links::<Blake3>(&cid, Arc::from(block)).unwrap_err();
        assert!(
            matches!(error, mst::LoadError::NonCanonical { .. }),
            "unexpected {error:?}"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new("prlimit")
        .arg(format!("--as={CHILD_ADDRESS_SPACE_BYTES}"))
        .arg("--")
        .arg(exe)
        .args([
            "--exact",
            "memory::crafted_counts_do_not_reserve_memory_ahead_of_the_bytes",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("prlimit (util-linux) runs the child under an address-space limit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child decoding the crafted block failed ({:?}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
}
