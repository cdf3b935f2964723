//! Real `meridian node run` processes mirroring each other over the libp2p mesh on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::{Node, b64, manifest_block};
use crate::{expect, json};

pub fn org_token(dir: &Path, data: &str, org: &str) -> String {
    json(
        dir,
        &["node", "token", "create", "--org", org, "--data", data],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn mesh_addr(dir: &Path, data: &str) -> String {
    let file = dir.join(data).join("mesh.addr");
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(line) = text.lines().find(|l| l.contains("/quic-v1/"))
        {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no mesh address"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn publish(node: &Node, token: &str, org: &str, name: &str, skill: &str) {
    let key = meridian_registry::keys::Keypair::from_secret(&[42; 32]);
    let body = serde_json::json!({ "manifest": b64(&manifest_block(org, name, &key, skill)) });
    let (status, _, answer) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        body.to_string().as_bytes(),
    );
    assert!(
        status == 201 || status == 200,
        "publish: {status} {}",
        String::from_utf8_lossy(&answer)
    );
}

/// Polls `node` until `agent` is found with `skill`, for up to 30 s.
pub fn wait_for(node: &Node, agent: &str, skill: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = node.get_json(&format!("/api/v1/agents/{agent}"));
        if status == 200 && body.to_string().contains(skill) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{agent} with {skill} never reached {}",
            node.address
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn metric(node: &Node, name: &str) -> u64 {
    let (_, _, body) = node.request("GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name) && l.split(' ').next() == Some(name))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_nodes_mirror_each_other_and_a_restarted_node_catches_up_with_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for data in ["a", "b", "c"] {
        expect(dir, &["node", "init", "--data", data], 0);
    }
    let token_a = org_token(dir, "a", "acme");
    let token_b = org_token(dir, "b", "globex");
    let a = Node::start(dir, "a", &[]);
    let bootstrap = mesh_addr(dir, "a");
    let env = [("MERIDIAN_MESH_BOOTSTRAP", bootstrap.as_str())];
    let b = Node::start(dir, "b", &env);
    let c = Node::start(dir, "c", &env);

    // Published on a: searchable on b and c.
    publish(&a, &token_a, "acme", "Helper", "search");
    wait_for(&b, "acme/helper", "search");
    wait_for(&c, "acme/helper", "search");
    // Published on b: reaches a and c (c knows b only through the mesh, not by config).
    publish(&b, &token_b, "globex", "Planner", "plan");
    wait_for(&a, "globex/planner", "plan");
    wait_for(&c, "globex/planner", "plan");

    // c stops; a publishes more; c restarts and catches up with only the change.
    c.stop();
    for i in 0..20 {
        publish(&a, &token_a, "acme", &format!("Bulk {i}"), "bulk");
    }
    wait_for(&b, "acme/bulk-19", "bulk");
    publish(&a, &token_a, "acme", "Helper", "translate");
    let c = Node::start(dir, "c", &env);
    wait_for(&c, "acme/helper", "translate");
    wait_for(&c, "acme/bulk-19", "bulk");
    // The sync gauges are refreshed once a second.
    let started = Instant::now();
    let mut fetched = metric(&c, "meridian_sync_bytes_fetched");
    while fetched == 0 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        fetched = metric(&c, "meridian_sync_bytes_fetched");
    }
    assert!(fetched > 0, "c fetched nothing");
    // 21 new manifests of ~1 KiB and their tree paths, not a full copy of both registries.
    assert!(fetched < 64 * 1024, "c fetched {fetched} bytes to catch up");
    drop((a, b, c));
}
