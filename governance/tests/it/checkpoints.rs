//! Checkpoints: the RFC 6962 vectors, signed notes, witnesses and split views.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use meridian_governance::checkpoint::{
    Checkpoint, CheckpointEquivocation, CheckpointError, Hash, MerkleLog, SignedNote, Witness,
    head_leaf, leaf_hash, verify_consistency, verify_inclusion, verify_subtree_consistency,
    verify_subtree_inclusion,
};

use crate::*;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/rfc6962")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn hash(value: &serde_json::Value) -> Option<Hash> {
    let text = value.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?
        .try_into()
        .ok()
}

fn proof(value: &serde_json::Value) -> Option<Vec<Hash>> {
    match value {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

/// The leaves the vectors were generated from (transparency-dev/merkle's test data).
fn reference_log() -> MerkleLog {
    let mut log = MerkleLog::new();
    for hex in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ] {
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        log.append(&bytes);
    }
    log
}

#[test]
fn rfc6962_inclusion_vectors() {
    let mut files = Vec::new();
    json_files(&vectors().join("inclusion"), &mut files);
    assert!(
        files.len() > 50,
        "only {} inclusion vectors found",
        files.len()
    );
    let log = reference_log();
    let mut generated = 0;
    for file in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let index = v["leafIdx"].as_u64().unwrap();
        let size = v["treeSize"].as_u64().unwrap();
        let result = match (hash(&v["leafHash"]), hash(&v["root"]), proof(&v["proof"])) {
            (Some(leaf), Some(root), Some(path)) => {
                verify_inclusion(&leaf, index, size, &path, &root)
            }
            _ => Err(CheckpointError::InvalidProof(
                "undecodable vector field".into(),
            )),
        };
        assert_eq!(result.is_err(), want_err, "{}: {result:?}", file.display());
        // Our own proofs equal the reference's for every happy path over the reference leaves.
        if !want_err && size <= log.size() && hash(&v["leafHash"]) == log.leaf(index) {
            let ours = log.inclusion_proof(index, size).unwrap();
            assert_eq!(Some(ours), proof(&v["proof"]), "{}", file.display());
            assert_eq!(Some(log.root(size).unwrap()), hash(&v["root"]));
            generated += 1;
        }
    }
    assert!(generated >= 5, "only {generated} happy paths compared");
}

#[test]
fn rfc6962_consistency_vectors() {
    let mut files = Vec::new();
    json_files(&vectors().join("consistency"), &mut files);
    assert!(
        files.len() > 50,
        "only {} consistency vectors found",
        files.len()
    );
    let log = reference_log();
    let mut generated = 0;
    for file in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let size1 = v["size1"].as_u64().unwrap();
        let size2 = v["size2"].as_u64().unwrap();
        let bytes = |value: &serde_json::Value| {
            value
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        };
        let result = match (bytes(&v["root1"]), bytes(&v["root2"]), proof(&v["proof"])) {
            (Some(root1), Some(root2), Some(path)) => {
                verify_consistency(size1, size2, &root1, &root2, &path)
            }
            _ => Err(CheckpointError::InvalidProof(
                "undecodable vector field".into(),
            )),
        };
        assert_eq!(result.is_err(), want_err, "{}: {result:?}", file.display());
        if !want_err
            && size2 <= log.size()
            && size1 > 0
            && hash(&v["root2"]) == log.root(size2).ok()
        {
            let ours = log.consistency_proof(size1, size2).unwrap();
            assert_eq!(Some(ours), proof(&v["proof"]), "{}", file.display());
            generated += 1;
        }
    }
    assert!(generated >= 5, "only {generated} happy paths compared");
}

fn run_vectors(
    dir: &str,
    check: impl Fn(&serde_json::Value) -> Result<(), CheckpointError>,
) -> usize {
    let mut files = Vec::new();
    json_files(&vectors().join(dir), &mut files);
    assert!(files.len() > 50, "only {} vectors in {dir}", files.len());
    let mut happy = 0;
    for file in &files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let result = check(&v);
        assert_eq!(result.is_err(), want_err, "{}: {result:?}", file.display());
        happy += usize::from(!want_err);
    }
    happy
}

fn undecodable() -> CheckpointError {
    CheckpointError::InvalidProof("undecodable vector field".into())
}

#[test]
fn rfc6962_subtree_inclusion_vectors() {
    let happy = run_vectors("subtreeinclusion", |v| {
        let (index, start, end) = (
            v["leafIdx"].as_u64().unwrap(),
            v["start"].as_u64().unwrap(),
            v["end"].as_u64().unwrap(),
        );
        match (hash(&v["leafHash"]), hash(&v["root"]), proof(&v["proof"])) {
            (Some(leaf), Some(root), Some(path)) => {
                verify_subtree_inclusion(&leaf, index, start, end, &path, &root)
            }
            _ => Err(undecodable()),
        }
    });
    assert!(happy >= 10, "{happy}");
}

#[test]
fn rfc6962_subtree_consistency_vectors() {
    let happy = run_vectors("subtreeconsistency", |v| {
        let (start, end, size) = (
            v["start"].as_u64().unwrap(),
            v["end"].as_u64().unwrap(),
            v["size"].as_u64().unwrap(),
        );
        let root = v["root2"]
            .as_str()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
        let subtree = v["root1"]
            .as_str()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
        match (subtree, root, proof(&v["proof"])) {
            (Some(subtree), Some(root), Some(path)) => {
                verify_subtree_consistency(start, end, size, &subtree, &root, &path)
            }
            _ => Err(undecodable()),
        }
    });
    assert!(happy >= 10, "{happy}");
}

#[test]
fn generated_proofs_verify_for_every_size() {
    let mut log = MerkleLog::new();
    for i in 0..70u32 {
        log.append(&i.to_be_bytes());
    }
    for size in 1..=70 {
        let root = log.root(size).unwrap();
        for index in 0..size {
            let path = log.inclusion_proof(index, size).unwrap();
            verify_inclusion(&log.leaf(index).unwrap(), index, size, &path, &root).unwrap();
        }
        for old in 1..=size {
            let path = log.consistency_proof(old, size).unwrap();
            verify_consistency(old, size, &log.root(old).unwrap(), &root, &path).unwrap();
        }
    }
}

const LOG: &str = "meridian.example/heads";

fn signed_checkpoint(log: &MerkleLog, log_key: &Keypair) -> SignedNote {
    let checkpoint = Checkpoint {
        origin: LOG.into(),
        size: log.size(),
        root: log.root(log.size()).unwrap(),
    };
    SignedNote::sign(&checkpoint.body(), LOG, log_key).unwrap()
}

#[test]
fn notes_round_trip_and_refuse_tampering() {
    let log_key = key(80);
    let mut log = MerkleLog::new();
    log.append(&head_leaf(
        &key(70).public(),
        1,
        &meridian_registry::ids::dag_cbor_cid(b"\xf6"),
    ));
    let note = signed_checkpoint(&log, &log_key);
    let text = note.to_text();
    assert!(
        text.contains("\n\n\u{2014} meridian.example/heads "),
        "{text}"
    );
    let parsed = SignedNote::parse(&text).unwrap();
    parsed.verify(LOG, &log_key.public()).unwrap();
    assert_eq!(Checkpoint::parse_body(&parsed.body).unwrap().size, 1);
    // Wrong key, tampered body, malformed notes.
    assert!(parsed.verify(LOG, &key(81).public()).is_err());
    let tampered = SignedNote::parse(&text.replacen("\n1\n", "\n2\n", 1)).unwrap();
    assert!(tampered.verify(LOG, &log_key.public()).is_err());
    for bad in [
        "",
        "no signatures\n",
        "body\n\n- dash name AAAA\n",
        "body\n\n\u{2014} name !!!\n",
    ] {
        assert!(SignedNote::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Checkpoint::parse_body("origin\n01\nAAAA\n").is_err());
}

#[test]
fn witness_cosigns_consistent_checkpoints_and_refuses_a_fork() {
    let log_key = key(80);
    let witness_key = key(31);
    let mut log = MerkleLog::new();
    for i in 0..5u32 {
        log.append(&i.to_be_bytes());
    }
    let mut witness = Witness::new(
        "witness.example/w1",
        witness_key.clone(),
        LOG,
        log_key.public(),
        None,
    );
    let first = witness
        .cosign(&signed_checkpoint(&log, &log_key), &[], 1000)
        .unwrap();
    assert_eq!(
        first
            .verify_cosignature("witness.example/w1", &witness_key.public())
            .unwrap(),
        1000
    );
    assert!(
        first
            .verify_cosignature("witness.example/w1", &key(32).public())
            .is_err()
    );

    // The log grows: consistent, co-signed.
    let old_size = log.size();
    for i in 5..9u32 {
        log.append(&i.to_be_bytes());
    }
    let proof = log.consistency_proof(old_size, log.size()).unwrap();
    witness
        .cosign(&signed_checkpoint(&log, &log_key), &proof, 1001)
        .unwrap();

    // A forked log (history rewritten) signed by the same key: the witness refuses.
    let mut fork = MerkleLog::new();
    for i in 100..112u32 {
        fork.append(&i.to_be_bytes());
    }
    let fork_note = signed_checkpoint(&fork, &log_key);
    let fake_proof = fork.consistency_proof(log.size(), fork.size()).unwrap();
    let err = witness.cosign(&fork_note, &fake_proof, 1002).unwrap_err();
    assert!(matches!(err, CheckpointError::Inconsistent(_)), "{err}");
    // A smaller checkpoint is refused too, and a note not signed by the log.
    let mut small = MerkleLog::new();
    small.append(b"x");
    assert!(
        witness
            .cosign(&signed_checkpoint(&small, &log_key), &[], 1003)
            .is_err()
    );
    assert!(
        witness
            .cosign(&signed_checkpoint(&log, &key(99)), &[], 1003)
            .is_err()
    );
    assert_eq!(witness.last().unwrap().size, 9);
}

#[test]
fn split_view_is_provable() {
    let log_key = key(80);
    let mut a = MerkleLog::new();
    let mut b = MerkleLog::new();
    for i in 0..4u32 {
        a.append(&i.to_be_bytes());
        b.append(&(i + 1).to_be_bytes());
    }
    let proof = CheckpointEquivocation {
        first: signed_checkpoint(&a, &log_key).to_text(),
        second: signed_checkpoint(&b, &log_key).to_text(),
    };
    assert_eq!(proof.verify(LOG, &log_key.public()).unwrap(), 4);
    assert!(proof.verify(LOG, &key(81).public()).is_err());
    let same = CheckpointEquivocation {
        first: signed_checkpoint(&a, &log_key).to_text(),
        second: signed_checkpoint(&a, &log_key).to_text(),
    };
    assert!(same.verify(LOG, &log_key.public()).is_err());
    let _ = leaf_hash(b"");
}
