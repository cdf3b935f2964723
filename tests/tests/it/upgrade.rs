//! A data directory written by the previous release (before name bindings, key chains and the
//! new HTTP limits) opens with this one: its agents are served, its token still publishes, and
//! its organisation is bound to the key that signed the agents it already held.

use std::process::Command;

use meridian_tests::*;

const FIXTURE: &str = "node-data-e03b249.tar.gz";

#[test]
fn a_data_directory_of_the_previous_release_opens_and_keeps_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURE);
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "could not unpack {}", fixture.display());
    let node = Daemon::node(dir, "node-data", &[]);
    for agent in ["acme/echo", "acme/planner"] {
        let answer = node.get(&format!("/api/v1/agents/{agent}"));
        assert_eq!(answer.status, 200, "{agent}: {:?}", answer.json());
    }
    let org_key = meridian_registry::keys::Keypair::from_key_file(
        &std::fs::read_to_string(dir.join("acme.key")).unwrap(),
    )
    .unwrap();
    // The name was bound, on this first start, to the key that signed what the node held.
    let names = node.get("/api/v1/names").json();
    assert_eq!(
        names["bindings"]["acme"]["keys"],
        serde_json::json!([org_key.did()]),
        "{names}"
    );
    // The old token publishes under that key; another key is refused for the bound name.
    let token = std::fs::read_to_string(dir.join("token.txt")).unwrap();
    let update = manifest_block(
        "acme",
        "echo",
        "local",
        "https://acme.example/echo-2",
        1_800_000_100,
        &org_key,
    );
    assert_eq!(publish(&node, token.trim(), &update).status, 200);
    let stranger = meridian_registry::keys::Keypair::from_secret(&[77; 32]);
    let other = manifest_block(
        "acme",
        "echo",
        "local",
        "https://other.example/echo",
        1_900_000_000,
        &stranger,
    );
    assert_eq!(publish(&node, token.trim(), &other).status, 409);
    // The store kept its history: the node's head moved on from the fixture's seq 2.
    let heads = node.get("/api/v1/registry/heads").json();
    assert_eq!(heads["heads"][0]["seq"], 3, "{heads}");
}
