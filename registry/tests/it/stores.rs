//! One suite run against every block store (memory and sled).

use std::sync::Arc;

use meridian_registry::car::Limits;
use meridian_registry::ids;
use meridian_registry::snapshot::{self, Snapshot, VerifyOptions, read_car};
use meridian_registry::store::{BlockStore, Head, MemoryStore, SledStore, StoreBatch, StoreError};

use crate::common::*;

fn suite(store: &dyn BlockStore) {
    // Blocks round-trip and are hash-checked on the way in.
    let block: Arc<[u8]> = Arc::from(&b"\xa1\x61a\x01"[..]);
    let cid = ids::dag_cbor_cid(&block);
    assert_eq!(store.get(&cid).unwrap(), None);
    store
        .apply(StoreBatch {
            blocks: vec![(cid, block.clone())],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.get(&cid).unwrap(), Some(block.clone()));
    assert!(store.contains(&cid).unwrap());

    // A batch with one bad block is refused whole.
    let good: Arc<[u8]> = Arc::from(&b"\xa1\x61b\x02"[..]);
    let good_cid = ids::dag_cbor_cid(&good);
    let err = store
        .apply(StoreBatch {
            blocks: vec![(good_cid, good.clone()), (cid, good.clone())],
            heads: vec![(
                "did:key:x".into(),
                Head {
                    commit: cid,
                    seq: 1,
                },
            )],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!store.contains(&good_cid).unwrap());
    assert_eq!(store.head("did:key:x").unwrap(), None);

    // Snapshots import, export and re-load.
    let first = build(cards(30), None, NOW);
    let second = build(cards(31), Some(&first), NOW + 1);
    let options = VerifyOptions {
        now: Some(NOW + 2),
        ..VerifyOptions::default()
    };
    for snap in [&first, &second] {
        let contents = read_car(&car_bytes(snap)[..], Limits::DEFAULT).unwrap();
        snapshot::import(store, &contents, options.clone()).unwrap();
    }
    let head = store.head(&node_key().did()).unwrap().unwrap();
    assert_eq!(
        head,
        Head {
            commit: second.commit_cid,
            seq: 2
        }
    );
    assert_eq!(store.heads().unwrap().len(), 1);
    let loaded = Snapshot::load(store, &head.commit, Limits::DEFAULT).unwrap();
    assert_eq!(loaded.tree.entries(), second.tree.entries());
    assert_eq!(car_bytes(&loaded), car_bytes(&second));
    let (_, manifest_cid) = second.tree.entries()[0].clone();
    assert!(store.is_verified(&manifest_cid).unwrap());
    // 31 manifests, two commits, the tree nodes and the first test block.
    assert!(store.stats().unwrap().blocks > 31 + 2 + 1);
}

#[test]
fn memory_store_suite() {
    suite(&MemoryStore::new());
}

#[test]
fn sled_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&SledStore::open(dir.path()).unwrap());
}

#[test]
fn sled_store_survives_reopen_and_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let snap = build(cards(10), None, NOW);
    {
        let store = SledStore::open(dir.path()).unwrap();
        let contents = read_car(&car_bytes(&snap)[..], Limits::DEFAULT).unwrap();
        snapshot::import(&store, &contents, VerifyOptions::default()).unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let head = store.head(&node_key().did()).unwrap().unwrap();
    assert_eq!(head.commit, snap.commit_cid);
    let loaded = Snapshot::load(&store, &head.commit, Limits::DEFAULT).unwrap();
    assert_eq!(loaded.tree.len(), 10);
}

#[test]
fn a_forked_memory_store_is_independent() {
    let store = MemoryStore::new();
    let block: Arc<[u8]> = Arc::from(&b"\xa1avb1"[..]);
    let cid = ids::dag_cbor_cid(&block);
    store
        .apply(StoreBatch {
            blocks: vec![(cid, block)],
            heads: vec![(
                "did:key:a".into(),
                Head {
                    commit: cid,
                    seq: 1,
                },
            )],
            equivocations: Vec::new(),
        })
        .unwrap();
    let fork = store.fork().unwrap();
    assert!(fork.contains(&cid).unwrap());
    fork.apply(StoreBatch {
        heads: vec![(
            "did:key:a".into(),
            Head {
                commit: cid,
                seq: 2,
            },
        )],
        ..StoreBatch::default()
    })
    .unwrap();
    assert_eq!(store.head("did:key:a").unwrap().unwrap().seq, 1);
    assert_eq!(fork.head("did:key:a").unwrap().unwrap().seq, 2);
}
