//! Property tests: round trips and corruption for the codec, the tree, CAR files and commits.

use std::collections::BTreeMap;

use meridian_registry::car::{CarReader, CarWriter, Limits};
use meridian_registry::cbor::{self, Value};
use meridian_registry::commit::{Commit, CommitBody};
use meridian_registry::ids::{self, Blake3};
use meridian_registry::keys::Keypair;
use meridian_registry::mst::Mst;
use proptest::prelude::*;

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Integer(i128::from(n))),
        any::<u64>().prop_map(|n| Value::Integer(i128::from(n))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ".{0,20}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|data| Value::Link(ids::dag_cbor_cid(&data))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..8).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cbor_round_trips(value in value_strategy()) {
        let bytes = cbor::encode(&value);
        prop_assert_eq!(cbor::decode(&bytes).unwrap(), value.clone());
        // Canonical: re-encoding what was decoded gives the same bytes.
        prop_assert_eq!(cbor::encode(&cbor::decode(&bytes).unwrap()), bytes);
    }

    #[test]
    fn cbor_corruption_never_panics(value in value_strategy(), flip in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
        let bytes = cbor::encode(&value);
        let mut flipped = bytes.clone();
        let index = flip % flipped.len();
        flipped[index] ^= 1 << bit;
        // Either refused, or accepted as a canonical encoding of some other value.
        if let Ok(other) = cbor::decode(&flipped) {
            prop_assert_eq!(cbor::encode(&other), flipped);
        }
        let cut = cut % bytes.len();
        prop_assert!(cbor::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn cbor_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(value) = cbor::decode(&bytes) {
            prop_assert_eq!(cbor::encode(&value), bytes);
        }
    }

    #[test]
    fn mst_matches_a_sorted_map_and_ignores_insert_order(
        ops in proptest::collection::vec((0u16..300, any::<bool>()), 1..200)
    ) {
        let leaf = |n: u16| ids::dag_cbor_cid(&n.to_be_bytes());
        let mut model: BTreeMap<Vec<u8>, meridian_registry::Cid> = BTreeMap::new();
        let mut tree = Mst::<Blake3>::new();
        for (n, insert) in ops {
            let key = format!("org/agent-{n}").into_bytes();
            if insert {
                model.insert(key.clone(), leaf(n));
                tree.insert(&key, leaf(n));
            } else {
                prop_assert_eq!(tree.remove(&key), model.remove(&key));
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        prop_assert_eq!(tree.entries(), expected.clone());
        // The same set, built in one go from reversed input, has the same root.
        let bulk = Mst::<Blake3>::from_entries(expected.iter().rev().cloned());
        prop_assert_eq!(bulk.root_cid(), tree.root_cid());
        // And it loads back from its blocks.
        let blocks: std::collections::HashMap<_, _> = tree.blocks().into_iter().collect();
        let loaded = Mst::<Blake3>::load(&tree.root_cid(), 10_000, &mut |c| blocks.get(c).cloned()).unwrap();
        prop_assert_eq!(loaded.entries(), expected);
    }

    #[test]
    fn car_round_trips_and_detects_bit_flips(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..10), flip in any::<usize>(), bit in 0u8..8) {
        let blocks: Vec<(meridian_registry::Cid, Vec<u8>)> = blocks
            .into_iter()
            .map(|data| {
                let block = cbor::encode(&Value::Bytes(data));
                (ids::dag_cbor_cid(&block), block)
            })
            .collect();
        let mut writer = CarWriter::new(Vec::new(), &blocks[0].0).unwrap();
        for (cid, block) in &blocks {
            writer.write_block(cid, block).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let read_all = |bytes: &[u8]| -> Result<Vec<(meridian_registry::Cid, Vec<u8>)>, meridian_registry::car::CarError> {
            let mut reader = CarReader::new(bytes, Limits::DEFAULT)?;
            let mut out = Vec::new();
            while let Some(block) = reader.next_block()? {
                out.push(block);
            }
            Ok(out)
        };
        prop_assert_eq!(read_all(&bytes).unwrap(), blocks.clone());
        let mut flipped = bytes.clone();
        let index = flip % flipped.len();
        flipped[index] ^= 1 << bit;
        // A flipped bit is either refused or (when it hits a length) changes what is read;
        // it never yields a block that does not match its CID.
        if let Ok(read) = read_all(&flipped) {
            for (cid, block) in read {
                prop_assert!(ids::verify_block(&cid, &block).is_ok());
            }
        }
    }

    #[test]
    fn commit_bit_flips_are_caught(flip in any::<usize>(), bit in 0u8..8, seq in 1u64..1000) {
        let key = Keypair::from_secret(&[4; 32]);
        let prev = (seq > 1).then(|| ids::dag_cbor_cid(b"\xf6"));
        let commit = CommitBody {
            publisher: key.public(),
            seq,
            data: ids::dag_cbor_cid(b"\xf5"),
            prev,
            created_at: 10,
            expires_at: 20,
        }
        .sign(&key)
        .unwrap();
        let block = commit.to_block();
        prop_assert_eq!(Commit::decode(&block).unwrap(), commit);
        let mut flipped = block.clone();
        let index = flip % flipped.len();
        flipped[index] ^= 1 << bit;
        match Commit::decode(&flipped) {
            Err(_) => {}
            Ok(decoded) => prop_assert!(decoded.verify_signature().is_err()),
        }
    }
}
