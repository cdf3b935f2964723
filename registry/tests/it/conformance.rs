//! The atproto conformance vectors (`../shared/vectors/atproto`, CC0).

use base64::Engine as _;
use meridian_registry::Cid;
use meridian_registry::cbor::{self, json};
use meridian_registry::ids::{self, CODEC_DAG_CBOR, Sha256};
use meridian_registry::mst::{self, Mst};

use crate::common::read_vector;

#[test]
fn data_model_fixtures_encode_to_exact_bytes_and_cids() {
    let fixtures = read_vector("atproto/data-model-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert!(!fixtures.is_empty());
    for fixture in fixtures {
        let value = json::record_from_json(&fixture["json"]).unwrap();
        let bytes = cbor::encode(&value);
        let expected = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(fixture["cbor_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, expected, "encoding of {}", fixture["json"]);
        let cid = ids::cid_of::<Sha256>(CODEC_DAG_CBOR, &bytes);
        assert_eq!(cid.to_string(), fixture["cid"].as_str().unwrap());
        // Decoding the expected bytes gives the same value back, and JSON round-trips.
        assert_eq!(cbor::decode(&expected).unwrap(), value);
        assert_eq!(
            json::record_from_json(&json::to_json(&value)).unwrap(),
            value
        );
    }
}

#[test]
fn data_model_invalid_fixtures_are_rejected() {
    let fixtures = read_vector("atproto/data-model-invalid.json");
    for fixture in fixtures.as_array().unwrap() {
        let result = json::record_from_json(&fixture["json"]);
        assert!(
            result.is_err(),
            "accepted invalid fixture: {}",
            fixture["note"]
        );
    }
}

#[test]
fn key_heights() {
    for case in read_vector("atproto/key_heights.json").as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let height = case["height"].as_u64().unwrap() as u32;
        assert_eq!(
            mst::key_layer::<Sha256>(key.as_bytes()),
            height,
            "key {key:?}"
        );
    }
}

#[test]
fn common_prefix() {
    for case in read_vector("atproto/common_prefix.json")
        .as_array()
        .unwrap()
    {
        let left = case["left"].as_str().unwrap();
        let right = case["right"].as_str().unwrap();
        let len = case["len"].as_u64().unwrap() as usize;
        assert_eq!(
            mst::common_prefix_len(left.as_bytes(), right.as_bytes()),
            len
        );
    }
}

fn cid(text: &str) -> Cid {
    Cid::try_from(text).unwrap()
}

#[test]
fn commit_proof_fixtures() {
    let fixtures = read_vector("atproto/commit-proof-fixtures.json");
    let fixtures = fixtures.as_array().unwrap();
    assert_eq!(fixtures.len(), 6);
    for fixture in fixtures {
        let name = fixture["comment"].as_str().unwrap();
        let leaf = cid(fixture["leafValue"].as_str().unwrap());
        let strings = |field: &str| -> Vec<String> {
            fixture[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect()
        };
        let (keys, adds, dels) = (strings("keys"), strings("adds"), strings("dels"));

        // Incremental inserts and a bulk build agree on the root.
        let mut tree = Mst::<Sha256>::new();
        for key in &keys {
            tree.insert(key.as_bytes(), leaf);
        }
        let before = cid(fixture["rootBeforeCommit"].as_str().unwrap());
        assert_eq!(tree.root_cid(), before, "{name}: root before");
        let bulk = Mst::<Sha256>::from_entries(keys.iter().map(|k| (k.as_bytes(), leaf)));
        assert_eq!(bulk.root_cid(), before, "{name}: bulk root before");
        let old = tree.clone();

        for key in &adds {
            tree.insert(key.as_bytes(), leaf);
        }
        for key in &dels {
            tree.remove(key.as_bytes());
        }
        let after = cid(fixture["rootAfterCommit"].as_str().unwrap());
        assert_eq!(tree.root_cid(), after, "{name}: root after");

        // The covering proof is exactly the set of blocks the reference lists.
        let mut proof: Vec<String> = adds
            .iter()
            .chain(&dels)
            .flat_map(|key| tree.covering_proof(key.as_bytes()))
            .map(|(cid, _)| cid.to_string())
            .collect();
        proof.sort();
        proof.dedup();
        let mut expected = strings("blocksInProof");
        expected.sort();
        assert_eq!(proof, expected, "{name}: blocks in proof");

        // Undoing the commit from the new tree gives the old root back.
        let mut undo = tree.clone();
        for key in &adds {
            undo.remove(key.as_bytes());
        }
        for key in &dels {
            undo.insert(key.as_bytes(), leaf);
        }
        assert_eq!(undo.root_cid(), before, "{name}: inverted root");

        // Loading the tree back from its blocks gives the same tree, and the diff is the commit.
        let blocks: std::collections::HashMap<Cid, std::sync::Arc<[u8]>> =
            tree.blocks().into_iter().collect();
        let loaded = Mst::<Sha256>::load(&after, 1000, &mut |c| blocks.get(c).cloned()).unwrap();
        assert_eq!(loaded.entries(), tree.entries());
        let diff = loaded.diff(&old);
        let mut added: Vec<String> = diff
            .added
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect();
        added.sort();
        let mut expected_added: Vec<String> =
            adds.iter().filter(|k| !dels.contains(k)).cloned().collect();
        expected_added.sort();
        assert_eq!(added, expected_added, "{name}: diff added");
    }
}
