//! Golden byte fixtures: a format change must show up as a diff of a committed file.
//! Regenerate on purpose with `MERIDIAN_BLESS=1 cargo test -p meridian-registry golden`.

use std::path::PathBuf;

use meridian_registry::car::Limits;
use meridian_registry::snapshot::{self, CardInput, VerifyOptions};
use meridian_registry::store::MemoryStore;

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_golden(name: &str, actual: &[u8]) {
    let path = fixture(name);
    if std::env::var_os("MERIDIAN_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "missing golden file {} ({e}); bless it on purpose",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} changed: the on-disk/wire format differs from the committed fixture"
    );
}

fn golden_snapshot() -> snapshot::Snapshot {
    let cards = vec![
        CardInput {
            source_name: "a".into(),
            json: card("alpha", "search"),
        },
        CardInput {
            source_name: "b".into(),
            json: card("beta", "translate"),
        },
        CardInput {
            source_name: "c".into(),
            json: r#"{"name":"Gamma Legacy","url":"https://agents.example/gamma","skills":[]}"#
                .into(),
        },
    ];
    build(cards, None, NOW)
}

#[test]
fn snapshot_car_bytes_are_stable() {
    let snapshot = golden_snapshot();
    check_golden("snapshot-v1.car", &car_bytes(&snapshot));
    check_golden("commit-v1.cbor", &snapshot.commit.to_block());
    let manifest = snapshot.manifest("acme/alpha").unwrap().unwrap();
    check_golden("manifest-v1.cbor", &manifest.to_block());
}

#[test]
fn committed_fixture_still_verifies() {
    let bytes = std::fs::read(fixture("snapshot-v1.car")).unwrap();
    let contents = snapshot::read_car(&bytes[..], Limits::DEFAULT).unwrap();
    let verified =
        snapshot::verify(&contents, &MemoryStore::new(), &VerifyOptions::default()).unwrap();
    assert_eq!(verified.tree.len(), 3);
    assert_eq!(verified.commit.body.publisher, node_key().public());
}
