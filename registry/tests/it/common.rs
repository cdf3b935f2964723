//! Helpers shared by the registry integration tests.

use std::path::PathBuf;

use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, Snapshot};

/// The shared test vectors from outside the project (`../shared/vectors`).
pub fn vectors_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.join("../../shared/vectors")
}

pub fn read_vector(path: &str) -> serde_json::Value {
    let full = vectors_dir().join(path);
    let text = std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("cannot read vector {}: {e}", full.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn node_key() -> Keypair {
    Keypair::from_secret(&[1; 32])
}

pub fn org_key() -> Keypair {
    Keypair::from_secret(&[2; 32])
}

pub const NOW: i64 = 1_800_000_000;

pub fn card(name: &str, skill: &str) -> String {
    format!(
        r#"{{"name":"{name}","description":"agent {name}","version":"1.0.0","supportedInterfaces":[{{"url":"https://agents.example/{name}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"{skill}","name":"{skill}","tags":["t-{skill}"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
    )
}

pub fn cards(n: usize) -> Vec<CardInput> {
    (0..n)
        .map(|i| CardInput {
            source_name: format!("card-{i}.json"),
            json: card(&format!("agent-{i}"), "search"),
        })
        .collect()
}

pub fn build(cards: Vec<CardInput>, previous: Option<&Snapshot>, now: i64) -> Snapshot {
    build_report(cards, previous, now).0
}

/// [`build`], with what the build changed.
pub fn build_report(
    cards: Vec<CardInput>,
    previous: Option<&Snapshot>,
    now: i64,
) -> (Snapshot, snapshot::BuildReport) {
    snapshot::build(BuildInput {
        node_key: &node_key(),
        org_key: &org_key(),
        org: "acme",
        region: "eu-west",
        cards,
        previous,
        now,
        expires_in_secs: 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap()
}

pub fn car_bytes(snapshot: &Snapshot) -> Vec<u8> {
    snapshot.write_car(Vec::new()).unwrap()
}
