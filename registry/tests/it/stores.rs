//! One suite run against every block store (memory and sled).

use std::sync::Arc;

use meridian_registry::car::Limits;
use meridian_registry::ids;
use meridian_registry::snapshot::{self, Snapshot, VerifyOptions, read_car};
use meridian_registry::store::{
    BlockStore, Head, MemoryStore, PACK_FILE, SledStore, StoreBatch, StoreError,
};

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

    // A batch that lost a race (it carries seq 1 while seq 2 is held) moves nothing: the head
    // stays, and none of the batch's blocks are stored.
    let late: Arc<[u8]> = Arc::from(&b"\xa1\x61c\x03"[..]);
    let late_cid = ids::dag_cbor_cid(&late);
    let err = store
        .apply(StoreBatch {
            blocks: vec![(late_cid, late.clone())],
            heads: vec![(
                node_key().did(),
                Head {
                    commit: first.commit_cid,
                    seq: 1,
                },
            )],
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::HeadNotNewer {
                held: 2,
                offered: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.head(&node_key().did()).unwrap(), Some(head));
    assert!(!store.contains(&late_cid).unwrap());
    // The very same head again is no move at all, and allowed.
    store
        .apply(StoreBatch {
            heads: vec![(node_key().did(), head)],
            ..Default::default()
        })
        .unwrap();
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

fn import_into(store: &SledStore, snap: &Snapshot) {
    let contents = read_car(&car_bytes(snap)[..], Limits::DEFAULT).unwrap();
    snapshot::import(store, &contents, VerifyOptions::default()).unwrap();
}

fn pack_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(PACK_FILE)).unwrap().len()
}

#[test]
fn sled_store_survives_reopen_and_detects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let snap = build(cards(10), None, NOW);
    let stats = {
        let store = SledStore::open(dir.path()).unwrap();
        import_into(&store, &snap);
        store.stats().unwrap()
    };
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.stats().unwrap(),
        stats,
        "the index is rebuilt on open"
    );
    let head = store.head(&node_key().did()).unwrap().unwrap();
    assert_eq!(head.commit, snap.commit_cid);
    let loaded = Snapshot::load(&store, &head.commit, Limits::DEFAULT).unwrap();
    assert_eq!(loaded.tree.len(), 10);
    drop((store, loaded));

    // A flipped bit in the pack is caught when the block is read back.
    let pack_path = dir.path().join(PACK_FILE);
    let mut pack = std::fs::read(&pack_path).unwrap();
    let last = pack.len() - 10;
    pack[last] ^= 0x40;
    std::fs::write(&pack_path, &pack).unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let err = Snapshot::load(&store, &snap.commit_cid, Limits::DEFAULT).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn sled_store_cuts_an_uncommitted_tail_and_refuses_a_short_pack() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(cards(10), None, NOW);
    let second = build(cards(12), Some(&first), NOW + 1);
    {
        let store = SledStore::open(dir.path()).unwrap();
        import_into(&store, &first);
    }
    let committed = pack_len(dir.path());
    // What a process killed after appending, before committing, leaves behind.
    let mut pack = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join(PACK_FILE))
        .unwrap();
    std::io::Write::write_all(&mut pack, &[0xee; 5000]).unwrap();
    drop(pack);
    {
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(pack_len(dir.path()), committed, "the tail is cut on open");
        import_into(&store, &second);
        let loaded = Snapshot::load(&store, &second.commit_cid, Limits::DEFAULT).unwrap();
        assert_eq!(car_bytes(&loaded), car_bytes(&second));
    }
    // A pack shorter than its index lost blocks: the store refuses to open and says where.
    let full = pack_len(dir.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(PACK_FILE))
        .unwrap()
        .set_len(full - 1)
        .unwrap();
    let err = SledStore::open(dir.path())
        .err()
        .expect("a short pack must be refused");
    assert!(err.to_string().contains(PACK_FILE), "{err}");
}

#[test]
fn sled_store_appends_each_block_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let snap = build(cards(20), None, NOW);
    import_into(&store, &snap);
    let (len, stats) = (pack_len(dir.path()), store.stats().unwrap());
    // The same snapshot again, and a batch that repeats a block: nothing new is written.
    import_into(&store, &snap);
    let (cid, block) = snap
        .blocks
        .iter()
        .next()
        .map(|(c, b)| (*c, b.clone()))
        .unwrap();
    store
        .apply(StoreBatch {
            blocks: vec![(cid, block.clone()), (cid, block)],
            ..StoreBatch::default()
        })
        .unwrap();
    assert_eq!(pack_len(dir.path()), len);
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(stats.bytes, len);
}

#[test]
fn sled_store_reads_blocks_of_the_older_inline_layout() {
    // Stores written before the pack file kept blocks in sled under `b` + CID.
    let dir = tempfile::tempdir().unwrap();
    let block: Arc<[u8]> = Arc::from(&b"\xa1\x61a\x05"[..]);
    let cid = ids::dag_cbor_cid(&block);
    {
        let db = sled::open(dir.path()).unwrap();
        let mut key = vec![b'b'];
        key.extend_from_slice(&cid.to_bytes());
        db.insert(key, &block[..]).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert!(store.contains(&cid).unwrap());
    assert_eq!(store.get(&cid).unwrap(), Some(block.clone()));
    assert_eq!(store.stats().unwrap().blocks, 1);
    // New blocks go to the pack beside them.
    let snap = build(cards(3), None, NOW);
    import_into(&store, &snap);
    assert_eq!(store.get(&cid).unwrap(), Some(block));
    assert!(store.contains(&snap.commit_cid).unwrap());
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

#[test]
fn a_store_held_open_elsewhere_is_named_as_in_use_and_opens_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path()).unwrap();
    // A second handle waits a moment for the lock, then says who holds it.
    match SledStore::open(dir.path()) {
        Err(error @ meridian_registry::store::StoreError::Locked(_)) => {
            assert!(error.to_string().contains("in use"), "{error}");
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("the store opened twice"),
    }
    // Released (as when `node init` hands over to `node run` in one process), it opens.
    drop(held);
    SledStore::open(dir.path()).unwrap();
}
