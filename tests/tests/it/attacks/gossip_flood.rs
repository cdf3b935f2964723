//! Attack 4: heads of thousands of random keys pushed to a hub's `/v1/gossip`. Without
//! governance one client address may introduce only so many new publishers; with governance
//! the hub keeps heads only of node keys the signed policy admits. Either way `/v1/heads`
//! stays small and the refusals are counted.

use std::path::Path;

use meridian_hub::wire::Gossip;
use meridian_registry::commit::CommitBody;
use meridian_registry::keys::Keypair;
use meridian_tests::*;

/// A signed head (seq 1, empty tree) of the node key made from `seed`, as gossip.
fn head_gossip(seed: u32) -> Vec<u8> {
    let mut secret = [7u8; 32];
    secret[..4].copy_from_slice(&seed.to_be_bytes());
    let key = Keypair::from_secret(&secret);
    let empty_tree =
        meridian_registry::ids::dag_cbor_cid(&[0xa2, 0x61, b'e', 0x80, 0x61, b'l', 0xf6]);
    let commit = CommitBody {
        publisher: key.public(),
        seq: 1,
        data: empty_tree,
        prev: None,
        created_at: now() - 10,
        expires_at: now() + 3_600,
    }
    .sign(&key)
    .unwrap();
    Gossip::Head(commit.to_block()).encode()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn push(hub: &Daemon, body: &[u8]) -> Answer {
    hub.request(
        "POST",
        "/v1/gossip",
        &[("content-type", "application/octet-stream")],
        body,
    )
}

#[test]
fn one_client_cannot_fill_a_hub_with_heads_of_random_keys() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Daemon::hub(
        dir.path(),
        "hub",
        &[("MERIDIAN_HUB_NEW_PUBLISHERS_PER_SOURCE_PER_MINUTE", "50")],
    );
    let mut kept = 0;
    let mut refused = 0;
    for seed in 0..300 {
        let answer = push(&hub, &head_gossip(seed));
        match answer.status {
            200 => kept += 1,
            422 => {
                refused += 1;
                let message = answer.json()["error"]["message"].to_string();
                assert!(message.contains("this minute"), "{message}");
            }
            other => panic!("unexpected {other}: {:?}", answer.json()),
        }
    }
    assert_eq!((kept, refused), (50, 250));
    let heads = hub.get("/v1/heads").json();
    assert_eq!(heads["commits"].as_array().unwrap().len(), 50);
    assert_eq!(
        hub.metric("meridian_hub_heads_total{outcome=\"not_admitted\"}"),
        250.0
    );
    // A head of a publisher the hub already mirrors still moves on (no new publisher).
    assert_eq!(push(&hub, &head_gossip(0)).status, 200);
}

/// A governance root (one key per role) and a signed policy admitting the node key `admitted`.
fn governance(dir: &Path, admitted: &str) {
    one_key_governance(dir);
    std::fs::write(
        dir.join("policy.toml"),
        format!("version = 1\nexpires_in = \"30d\"\nallow_node_keys = [\"{admitted}\"]\n"),
    )
    .unwrap();
    run_ok(
        dir,
        &[
            "policy",
            "sign",
            "policy.toml",
            "--key",
            "policy.key",
            "--out",
            "policy.cbor",
        ],
    );
}

#[test]
fn a_hub_with_governance_keeps_heads_only_of_admitted_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut admitted_secret = [7u8; 32];
    admitted_secret[..4].copy_from_slice(&1u32.to_be_bytes());
    let admitted = Keypair::from_secret(&admitted_secret).did();
    governance(dir, &admitted);
    let root = dir.join("root.cbor").display().to_string();
    let hub = Daemon::hub(dir, "hub", &[("MERIDIAN_GOVERNANCE_ROOT", root.as_str())]);
    // Before the policy arrives the hub admits nobody, and says so.
    let early = push(&hub, &head_gossip(1));
    assert_eq!(early.status, 422);
    assert!(
        early.json()["error"]["message"]
            .to_string()
            .contains("no policy")
    );
    let policy = std::fs::read(dir.join("policy.cbor")).unwrap();
    let answer = push(&hub, &Gossip::Governance(policy).encode());
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    // The admitted node's head is kept; a hundred strangers' are not.
    assert_eq!(push(&hub, &head_gossip(1)).status, 200);
    for seed in 2..102 {
        let answer = push(&hub, &head_gossip(seed));
        assert_eq!(answer.status, 422);
        assert!(
            answer.json()["error"]["message"]
                .to_string()
                .contains("not admitted")
        );
    }
    let heads = hub.get("/v1/heads").json();
    assert_eq!(heads["commits"].as_array().unwrap().len(), 1);
    assert_eq!(
        hub.metric("meridian_hub_heads_total{outcome=\"not_admitted\"}"),
        101.0
    );
}
