//! Attack 7: a self-signed snapshot whose tree node is a 1 MiB block of nested array headers,
//! each claiming as many items as there are bytes left. `meridian snapshot verify` must refuse
//! it with exit 1 under an address-space limit far below what the old decoder reserved
//! (6.3 GB), instead of aborting.

use std::process::Command;

use meridian_registry::car::CarWriter;
use meridian_registry::commit::CommitBody;
use meridian_registry::ids::dag_cbor_cid;
use meridian_registry::keys::Keypair;
use meridian_tests::meridian_bin;

const BLOCK_BYTES: usize = 1 << 20;
const ADDRESS_SPACE_BYTES: u64 = 1 << 30;

fn crafted_tree_node() -> Vec<u8> {
    let mut block = vec![0xa2, 0x61, b'e'];
    for _ in 0..60 {
        let claimed = (BLOCK_BYTES - block.len() - 5) as u32;
        block.push(0x9a);
        block.extend_from_slice(&claimed.to_be_bytes());
    }
    block.resize(BLOCK_BYTES, 0x00);
    block
}

#[test]
fn a_crafted_tree_node_is_refused_without_reserving_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node = crafted_tree_node();
    let node_cid = dag_cbor_cid(&node);
    let key = Keypair::from_secret(&[9; 32]);
    let commit = CommitBody {
        publisher: key.public(),
        seq: 1,
        data: node_cid,
        prev: None,
        created_at: 1_800_000_000,
        expires_at: 1_900_000_000,
    }
    .sign(&key)
    .unwrap();
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    let mut writer = CarWriter::new(Vec::new(), &commit_cid).unwrap();
    writer.write_block(&commit_cid, &commit_block).unwrap();
    writer.write_block(&node_cid, &node).unwrap();
    let car = writer.finish().unwrap();
    let path = dir.path().join("crafted.car");
    std::fs::write(&path, car).unwrap();

    let output = Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE_BYTES}"))
        .arg("--")
        .arg(meridian_bin())
        .args(["snapshot", "verify"])
        .arg(&path)
        .output()
        .expect("prlimit (util-linux) runs meridian under an address-space limit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a rejection (exit 1), got {:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("memory allocation"), "{stderr}");
}
