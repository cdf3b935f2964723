//! Snapshot verification: every way to fail, produced on purpose and detected.

use std::sync::Arc;

use meridian_registry::car::{CarWriter, Limits};
use meridian_registry::commit::CommitBody;
use meridian_registry::ids;
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::ManifestBody;
use meridian_registry::snapshot::{
    self, BuildError, BuildInput, CardInput, SnapshotError, VerifyOptions, read_car, verify,
};
use meridian_registry::store::{BlockStore, MemoryStore};
use meridian_registry::{Cid, mst::Mst};

use crate::common::*;

fn options() -> VerifyOptions {
    VerifyOptions {
        now: Some(NOW + 10),
        ..VerifyOptions::default()
    }
}

fn verify_bytes(
    bytes: &[u8],
    options: &VerifyOptions,
) -> Result<snapshot::VerifiedSnapshot, SnapshotError> {
    let contents = read_car(bytes, options.limits)?;
    verify(&contents, &MemoryStore::new(), options)
}

/// Writes a CAR with `root` and these blocks, in order.
fn car_of(root: &Cid, blocks: &[(Cid, Arc<[u8]>)]) -> Vec<u8> {
    let mut writer = CarWriter::new(Vec::new(), root).unwrap();
    for (cid, block) in blocks {
        writer.write_block(cid, block).unwrap();
    }
    writer.finish().unwrap()
}

fn all_blocks(snapshot: &snapshot::Snapshot) -> Vec<(Cid, Arc<[u8]>)> {
    let contents = read_car(&car_bytes(snapshot)[..], Limits::DEFAULT).unwrap();
    contents.blocks
}

#[test]
fn valid_snapshot_verifies_and_reports() {
    let snapshot = build(cards(50), None, NOW);
    let verified = verify_bytes(&car_bytes(&snapshot), &options()).unwrap();
    assert_eq!(verified.tree.len(), 50);
    assert_eq!(verified.commit.body.seq, 1);
    assert_eq!(verified.verified_manifests.len(), 50);
    let manifest = snapshot.manifest("acme/agent-7").unwrap().unwrap();
    assert_eq!(manifest.body.card, card("agent-7", "search"));
}

#[test]
fn a_card_dropped_from_a_build_becomes_a_signed_removal_and_can_come_back() {
    let first = build(cards(3), None, NOW);
    let build_with = |cards, previous, now| build_report(cards, Some(previous), now);
    let mut two = cards(3);
    let dropped = two.remove(1);
    let (second, report) = build_with(two.clone(), &first, NOW);
    assert_eq!((report.added, report.changed, report.removed), (0, 0, 1));
    // The tree keeps the agent's key, now naming a removal signed by the organisation.
    assert_eq!(second.tree.len(), 3);
    let removal = second.manifest("acme/agent-1").unwrap().unwrap();
    assert!(removal.is_removal());
    assert_eq!(removal.signer, org_key().public());
    assert!(removal.body.updated_at >= NOW);
    let verified = verify_bytes(&car_bytes(&second), &options()).unwrap();
    assert_eq!(verified.verified_manifests.len(), 3);
    // Building again without the card keeps that removal as it is.
    let (third, report) = build_with(two.clone(), &second, NOW + 1);
    assert_eq!(report.removed, 0);
    assert_eq!(
        third.tree.get(b"acme/agent-1"),
        second.tree.get(b"acme/agent-1")
    );
    // Listed again in the same second, the card is dated after its removal so it wins.
    two.push(dropped);
    let (fourth, report) = build_with(two, &third, removal.body.updated_at);
    assert_eq!((report.added, report.changed), (0, 1));
    let back = fourth.manifest("acme/agent-1").unwrap().unwrap();
    assert!(!back.is_removal());
    assert!(back.body.updated_at > removal.body.updated_at);
}

#[test]
fn a_block_repeated_in_the_car_is_refused() {
    let snapshot = build(cards(5), None, NOW);
    let mut blocks = all_blocks(&snapshot);
    blocks.push(blocks[1].clone());
    let padded = car_of(&snapshot.commit_cid, &blocks);
    let repeated = blocks[1].0;
    let error = read_car(&padded[..], Limits::DEFAULT).unwrap_err();
    assert!(
        matches!(&error, SnapshotError::Car(meridian_registry::car::CarError::DuplicateBlock { cid }) if *cid == repeated),
        "{error:?}"
    );
}

#[test]
fn tampered_block_is_a_hash_mismatch() {
    let snapshot = build(cards(5), None, NOW);
    let mut bytes = car_bytes(&snapshot);
    let last = bytes.len() - 20;
    bytes[last] ^= 0x01;
    let err = verify_bytes(&bytes, &options()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Car(meridian_registry::car::CarError::Block(_))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("hash mismatch"), "{err}");
}

#[test]
fn tampered_blocks_stop_the_read_at_the_first_in_file_order() {
    // Enough blocks that their hashes are checked on several threads at once.
    let snapshot = build(cards(3000), None, NOW);
    let blocks = all_blocks(&snapshot);
    let header = CarWriter::new(Vec::new(), &snapshot.commit_cid)
        .unwrap()
        .finish()
        .unwrap()
        .len();
    let varint_len = |mut n: usize| {
        let mut len = 1;
        while n >= 0x80 {
            n >>= 7;
            len += 1;
        }
        len
    };
    // The last byte of each block, by its position in the file.
    let mut ends = Vec::new();
    let mut offset = header;
    for (cid, block) in &blocks {
        let section = cid.to_bytes().len() + block.len();
        offset += varint_len(section) + section;
        ends.push(offset - 1);
    }
    let (early, late) = (blocks.len() / 3, blocks.len() - 2);
    let mut bytes = car_bytes(&snapshot);
    bytes[ends[late]] ^= 0x01;
    bytes[ends[early]] ^= 0x01;
    let err = read_car(&bytes[..], Limits::DEFAULT).unwrap_err();
    assert!(
        matches!(
            &err,
            SnapshotError::Car(meridian_registry::car::CarError::Block(_))
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&blocks[early].0.to_string()),
        "the first tampered block must be named: {err}"
    );
}

#[test]
fn wrong_publisher_is_refused() {
    let snapshot = build(cards(3), None, NOW);
    let mut opts = options();
    opts.expected_publisher = Some(Keypair::from_secret(&[77; 32]).public());
    assert!(matches!(
        verify_bytes(&car_bytes(&snapshot), &opts),
        Err(SnapshotError::WrongPublisher { .. })
    ));
}

#[test]
fn forged_commit_signature_is_refused() {
    let snapshot = build(cards(3), None, NOW);
    let mut commit = snapshot.commit.clone();
    commit.sig = Keypair::from_secret(&[66; 32]).sign(&commit.body.signing_bytes());
    let (cid, block) = commit.to_block_and_cid();
    let mut blocks = all_blocks(&snapshot);
    blocks[0] = (cid, block.into());
    let err = verify_bytes(&car_of(&cid, &blocks), &options()).unwrap_err();
    assert!(matches!(err, SnapshotError::BadSignature { .. }), "{err}");
}

#[test]
fn forged_manifest_signature_is_refused_and_named() {
    let org = org_key();
    let mut manifest = ManifestBody::from_card(&card("evil", "x"), "acme", "eu-west", NOW)
        .unwrap()
        .sign(&org);
    manifest.sig = Keypair::from_secret(&[55; 32]).sign(&manifest.signing_bytes());
    let (manifest_cid, manifest_block) = manifest.to_block_and_cid();
    let mut tree = Mst::<ids::Blake3>::new();
    tree.insert(b"acme/evil", manifest_cid);
    let node = node_key();
    let commit = CommitBody {
        publisher: node.public(),
        seq: 1,
        data: tree.root_cid(),
        prev: None,
        created_at: NOW,
        expires_at: NOW + 100,
    }
    .sign(&node)
    .unwrap();
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    let mut blocks = vec![(commit_cid, Arc::from(commit_block))];
    blocks.extend(tree.blocks());
    blocks.push((manifest_cid, manifest_block.into()));
    let err = verify_bytes(&car_of(&commit_cid, &blocks), &options()).unwrap_err();
    assert!(matches!(err, SnapshotError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("acme/evil"), "{err}");
}

/// A snapshot of `n` agents whose manifests at `forged` carry signatures by a stranger's key.
fn snapshot_with_forgeries(n: usize, forged: &[usize]) -> Vec<u8> {
    let org = org_key();
    let stranger = Keypair::from_secret(&[55; 32]);
    let mut tree = Mst::<ids::Blake3>::new();
    let mut manifests = Vec::new();
    for i in 0..n {
        let name = format!("agent-{i:05}");
        let mut manifest = ManifestBody::from_card(&card(&name, "x"), "acme", "eu-west", NOW)
            .unwrap()
            .sign(&org);
        if forged.contains(&i) {
            manifest.sig = stranger.sign(&manifest.signing_bytes());
        }
        let (cid, block) = manifest.to_block_and_cid();
        tree.insert(format!("acme/{name}").as_bytes(), cid);
        manifests.push((cid, Arc::<[u8]>::from(block)));
    }
    let node = node_key();
    let commit = CommitBody {
        publisher: node.public(),
        seq: 1,
        data: tree.root_cid(),
        prev: None,
        created_at: NOW,
        expires_at: NOW + 100,
    }
    .sign(&node)
    .unwrap();
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    let mut blocks = vec![(commit_cid, Arc::from(commit_block))];
    blocks.extend(tree.blocks());
    blocks.extend(manifests);
    car_of(&commit_cid, &blocks)
}

#[test]
fn forged_manifests_in_a_large_snapshot_name_the_first_in_key_order() {
    // Several signature batches, so verifier threads check them while the tree loads; the
    // error must still be the first forgery in key order, whichever thread finds what first.
    let bytes = snapshot_with_forgeries(5000, &[4100, 1300, 2600]);
    for threads in [1, 2, 4, 4, 4] {
        let options = VerifyOptions {
            threads,
            ..options()
        };
        let err = verify_bytes(&bytes, &options).unwrap_err();
        assert!(matches!(err, SnapshotError::BadSignature { .. }), "{err}");
        assert!(
            err.to_string().contains("acme/agent-01300"),
            "threads {threads}: {err}"
        );
    }
    let clean = snapshot_with_forgeries(5000, &[]);
    let verified = verify_bytes(
        &clean,
        &VerifyOptions {
            threads: 2,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(verified.verified_manifests.len(), 5000);
}

#[test]
fn manifest_under_the_wrong_key_is_refused() {
    let manifest = ManifestBody::from_card(&card("real", "x"), "acme", "eu-west", NOW)
        .unwrap()
        .sign(&org_key());
    let (manifest_cid, manifest_block) = manifest.to_block_and_cid();
    let mut tree = Mst::<ids::Blake3>::new();
    tree.insert(b"acme/impostor", manifest_cid);
    let node = node_key();
    let commit = CommitBody {
        publisher: node.public(),
        seq: 1,
        data: tree.root_cid(),
        prev: None,
        created_at: NOW,
        expires_at: NOW + 100,
    }
    .sign(&node)
    .unwrap();
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    let mut blocks = vec![(commit_cid, Arc::from(commit_block))];
    blocks.extend(tree.blocks());
    blocks.push((manifest_cid, manifest_block.into()));
    let err = verify_bytes(&car_of(&commit_cid, &blocks), &options()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::InvalidManifest { .. }),
        "{err}"
    );
}

#[test]
fn non_canonical_manifest_block_is_refused() {
    // The integer 1 in two bytes: valid CBOR, not canonical.
    let bad_block: Arc<[u8]> = Arc::from(&[0x18u8, 0x01][..]);
    let bad_cid = ids::dag_cbor_cid(&bad_block);
    let mut tree = Mst::<ids::Blake3>::new();
    tree.insert(b"acme/x", bad_cid);
    let node = node_key();
    let commit = CommitBody {
        publisher: node.public(),
        seq: 1,
        data: tree.root_cid(),
        prev: None,
        created_at: NOW,
        expires_at: NOW + 100,
    }
    .sign(&node)
    .unwrap();
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    let mut blocks = vec![(commit_cid, Arc::from(commit_block))];
    blocks.extend(tree.blocks());
    blocks.push((bad_cid, bad_block));
    let err = verify_bytes(&car_of(&commit_cid, &blocks), &options()).unwrap_err();
    assert!(err.to_string().contains("non-minimal"), "{err}");
}

#[test]
fn expired_and_future_commits_are_refused() {
    let snapshot = build(cards(3), None, NOW);
    let bytes = car_bytes(&snapshot);
    let mut late = options();
    late.now = Some(NOW + 86_400);
    assert!(matches!(
        verify_bytes(&bytes, &late),
        Err(SnapshotError::Expired { .. })
    ));
    let mut early = options();
    early.now = Some(NOW - 3600);
    assert!(matches!(
        verify_bytes(&bytes, &early),
        Err(SnapshotError::NotYetValid { .. })
    ));
    // Within the skew is fine.
    let mut skewed = options();
    skewed.now = Some(NOW - 60);
    assert!(verify_bytes(&bytes, &skewed).is_ok());
}

#[test]
fn rollback_broken_chain_and_equivocation_are_refused() {
    let first = build(cards(3), None, NOW);
    let second = build(cards(4), Some(&first), NOW + 1);
    let third = build(cards(5), Some(&second), NOW + 2);

    // Rollback: offering seq 2 after accepting seq 3.
    let mut opts = options();
    opts.previous = Some((third.commit_cid, third.commit.clone()));
    assert!(matches!(
        verify_bytes(&car_bytes(&second), &opts),
        Err(SnapshotError::Rollback {
            last_seq: 3,
            seq: 2
        })
    ));

    // Equivocation: another seq 2 on top of the same first.
    let fork = build(cards(6), Some(&first), NOW + 1);
    opts.previous = Some((second.commit_cid, second.commit.clone()));
    let err = verify_bytes(&car_bytes(&fork), &opts).unwrap_err();
    let SnapshotError::Equivocation { proof, seq: 2, .. } = err else {
        panic!("expected equivocation, got {err}");
    };
    assert_eq!(proof.verify().unwrap(), (node_key().public(), 2));

    // Broken chain: seq 3 that does not link to the accepted seq 2.
    let fork_next = build(cards(7), Some(&fork), NOW + 2);
    let err = verify_bytes(&car_bytes(&fork_next), &opts).unwrap_err();
    assert!(
        matches!(err, SnapshotError::BrokenChain { seq: 3, .. }),
        "{err}"
    );

    // The honest successor is accepted and linked.
    let verified = verify_bytes(&car_bytes(&third), &opts).unwrap();
    assert!(verified.linked);
}

#[test]
fn gap_is_linked_through_the_store_or_caught_as_equivocation() {
    let first = build(cards(3), None, NOW);
    let second = build(cards(4), Some(&first), NOW + 1);
    let third = build(cards(5), Some(&second), NOW + 2);
    // A store that saw commit 1 and holds commit 2's block (e.g. from an earlier delta).
    let store = MemoryStore::from(&first);
    store
        .apply(meridian_registry::store::StoreBatch {
            blocks: vec![(second.commit_cid, second.commit.to_block().into())],
            ..Default::default()
        })
        .unwrap();
    let mut opts = options();
    opts.previous = Some((first.commit_cid, first.commit.clone()));
    let contents = read_car(&car_bytes(&third)[..], Limits::DEFAULT).unwrap();
    assert!(verify(&contents, &store, &opts).unwrap().linked);
    // Without commit 2 the gap cannot be linked, and says so.
    let bare = MemoryStore::from(&first);
    assert!(!verify(&contents, &bare, &opts).unwrap().linked);
    // A chain that passes through another commit at seq 1 is an equivocation.
    let other_first = build(cards(9), None, NOW);
    let other_second = build(cards(8), Some(&other_first), NOW + 1);
    let other_third = build(cards(7), Some(&other_second), NOW + 2);
    let store = MemoryStore::from(&first);
    store
        .apply(meridian_registry::store::StoreBatch {
            blocks: vec![
                (
                    other_second.commit_cid,
                    other_second.commit.to_block().into(),
                ),
                (other_first.commit_cid, other_first.commit.to_block().into()),
            ],
            ..Default::default()
        })
        .unwrap();
    let contents = read_car(&car_bytes(&other_third)[..], Limits::DEFAULT).unwrap();
    assert!(matches!(
        verify(&contents, &store, &opts),
        Err(SnapshotError::Equivocation { seq: 1, .. })
    ));
}

#[test]
fn missing_and_unexpected_blocks_are_refused() {
    let snapshot = build(cards(5), None, NOW);
    let mut blocks = all_blocks(&snapshot);
    let removed = blocks.pop().unwrap();
    let err = verify_bytes(&car_of(&snapshot.commit_cid, &blocks), &options()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::MissingBlock { cid } if cid == removed.0),
        "{err}"
    );
    let mut blocks = all_blocks(&snapshot);
    let extra =
        meridian_registry::cbor::encode(&meridian_registry::cbor::Value::Text("junk".into()));
    blocks.push((ids::dag_cbor_cid(&extra), extra.into()));
    let err = verify_bytes(&car_of(&snapshot.commit_cid, &blocks), &options()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnexpectedBlock { .. }),
        "{err}"
    );
}

#[test]
fn size_limits_are_enforced() {
    let snapshot = build(cards(20), None, NOW);
    let bytes = car_bytes(&snapshot);
    let limited = |limits: Limits| {
        let mut opts = options();
        opts.limits = limits;
        verify_bytes(&bytes, &opts)
    };
    let err = limited(Limits {
        agents_max: 19,
        ..Limits::DEFAULT
    })
    .unwrap_err();
    assert!(err.to_string().contains("more than 19 keys"), "{err}");
    let err = limited(Limits {
        blocks_max: 10,
        ..Limits::DEFAULT
    })
    .unwrap_err();
    assert!(err.to_string().contains("limit of 10"), "{err}");
    let err = limited(Limits {
        car_bytes_max: 2000,
        ..Limits::DEFAULT
    })
    .unwrap_err();
    assert!(err.to_string().contains("total bytes"), "{err}");
    let err = limited(Limits {
        block_bytes_max: 100,
        ..Limits::DEFAULT
    })
    .unwrap_err();
    assert!(err.to_string().contains("section bytes"), "{err}");
    let depth = snapshot.tree.depth();
    assert!(depth >= 1, "20 keys should reach layer 1");
    let err = limited(Limits {
        tree_depth_max: depth - 1,
        ..Limits::DEFAULT
    })
    .unwrap_err();
    assert!(err.to_string().contains("tree depth"), "{err}");
    assert!(
        limited(Limits {
            tree_depth_max: depth,
            ..Limits::DEFAULT
        })
        .is_ok()
    );
    // At the limit exactly, it passes.
    assert!(
        limited(Limits {
            agents_max: 20,
            ..Limits::DEFAULT
        })
        .is_ok()
    );
}

#[test]
fn duplicate_cards_name_both_sources() {
    let mut input = cards(3);
    input.push(CardInput {
        source_name: "again.json".into(),
        json: card("agent-1", "other"),
    });
    let err = snapshot::build(BuildInput {
        node_key: &node_key(),
        org_key: &org_key(),
        org: "acme",
        region: "eu-west",
        cards: input,
        previous: None,
        now: NOW,
        expires_in_secs: 100,
        limits: Limits::DEFAULT,
    })
    .unwrap_err();
    assert!(matches!(err, BuildError::Duplicate { .. }));
    let text = err.to_string();
    assert!(
        text.contains("card-1.json") && text.contains("again.json"),
        "{text}"
    );
}

#[test]
fn one_change_touches_log_n_blocks_and_the_delta_is_small() {
    let n = 5_000;
    let old = build(cards(n), None, NOW);
    let mut changed = cards(n);
    changed[1234].json = card("agent-1234", "translate");
    let (new, report) = snapshot::build(BuildInput {
        node_key: &node_key(),
        org_key: &org_key(),
        org: "acme",
        region: "eu-west",
        cards: changed,
        previous: Some(&old),
        now: NOW + 5,
        expires_in_secs: 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap();
    assert_eq!((report.added, report.changed, report.removed), (0, 1, 0));
    // New blocks: the commit, the manifest, and one node per layer on the path.
    let depth = new.tree.depth() as usize;
    assert!(
        report.new_blocks <= depth + 3,
        "{} new blocks for depth {depth}",
        report.new_blocks
    );
    let (delta, diff) = new.write_delta(&old.tree, Vec::new()).unwrap();
    assert_eq!(diff.changed.len(), 1);
    assert!(delta.len() <= 8 * 1024, "delta is {} bytes", delta.len());

    // The delta imports on top of the old snapshot, not on its own.
    let store = MemoryStore::from(&old);
    let contents = read_car(&delta[..], Limits::DEFAULT).unwrap();
    let verified = snapshot::import(&store, &contents, options()).unwrap();
    assert_eq!(verified.verified_manifests.len(), 1);
    assert_eq!(verified.reused_manifests, n - 1);
    assert_eq!(store.head(&node_key().did()).unwrap().unwrap().seq, 2);
    let err = verify(&contents, &MemoryStore::new(), &options()).unwrap_err();
    assert!(matches!(err, SnapshotError::MissingBlock { .. }), "{err}");
}

#[test]
fn failed_import_changes_nothing_and_equivocation_is_kept() {
    let first = build(cards(3), None, NOW);
    let second = build(cards(4), Some(&first), NOW + 1);
    let store = MemoryStore::new();
    let import = |snap: &snapshot::Snapshot| {
        let contents = read_car(&car_bytes(snap)[..], Limits::DEFAULT).unwrap();
        snapshot::import(&store, &contents, options())
    };
    import(&first).unwrap();
    import(&second).unwrap();
    let stats = store.stats().unwrap();
    // Rollback: nothing changes.
    assert!(matches!(
        import(&first),
        Err(SnapshotError::Rollback { .. })
    ));
    assert_eq!(store.stats().unwrap(), stats);
    // Equivocation: head unchanged, proof kept.
    let fork = build(cards(5), Some(&first), NOW + 1);
    assert!(matches!(
        import(&fork),
        Err(SnapshotError::Equivocation { .. })
    ));
    let publisher = node_key().did();
    assert_eq!(
        store.head(&publisher).unwrap().unwrap().commit,
        second.commit_cid
    );
    assert_eq!(store.equivocations(&publisher).unwrap().len(), 1);
    assert_eq!(store.stats().unwrap(), stats);
}
