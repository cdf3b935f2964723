//! Anti-entropy: an agent published before the other region's hub existed reaches that
//! region once its hub comes up, without being published again.

use std::time::{Duration, Instant};

use meridian_registry::keys::Keypair;
use meridian_tests::*;

/// A UDP port on loopback, held until the returned socket is dropped (so no other process of
/// the test run takes it meanwhile).
fn reserve_udp_port() -> (u16, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

#[test]
fn what_was_published_before_a_trunk_came_up_crosses_it_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(
        dir,
        &["hub", "init", "--data", "hub-a", "--region", "eu-west"],
    );
    run_ok(
        dir,
        &["hub", "init", "--data", "hub-b", "--region", "us-east"],
    );
    let ((port_a, held_a), (port_b, held_b)) = (reserve_udp_port(), reserve_udp_port());
    let (did_a, did_b) = (did(dir, "hub-a/hub.key"), did(dir, "hub-b/hub.key"));
    let trunk_a = format!("127.0.0.1:{port_a}");
    let trunk_b = format!("127.0.0.1:{port_b}");
    let peers_of_a = format!("us-east={did_b}@{trunk_b}");
    let peers_of_b = format!("eu-west={did_a}@{trunk_a}");
    let hub = |data: &str, region: &str, trunk: &str, peers: &str| {
        Daemon::hub(
            dir,
            data,
            &[
                ("MERIDIAN_HUB_REGION", region),
                ("MERIDIAN_HUB_TRUNK_LISTEN", trunk),
                ("MERIDIAN_TRUNK_PEERS", peers),
                ("MERIDIAN_RELAY_ALLOW_PRIVATE", "true"),
                ("MERIDIAN_HUB_ANTI_ENTROPY_SECS", "2"),
            ],
        )
    };
    // Region eu-west publishes while us-east has no hub at all.
    drop(held_a);
    let hub_a = hub("hub-a", "eu-west", &trunk_a, &peers_of_a);
    let hub_a_url = hub_a.url();
    let a = Daemon::node(
        dir,
        "a",
        &[
            ("MERIDIAN_NODE_REGION", "eu-west"),
            ("MERIDIAN_MESH_HUB", hub_a_url.as_str()),
        ],
    );
    let token = org_token(dir, "a", "acme");
    let key = Keypair::from_secret(&[12; 32]);
    let manifest = manifest_block(
        "acme",
        "echo",
        "eu-west",
        "https://acme.example/echo",
        1_800_000_000,
        &key,
    );
    assert_eq!(publish(&a, &token, &manifest).status, 201);
    hub_a.wait_for("a's head at hub a", Duration::from_secs(20), || {
        let heads = hub_a.get("/v1/heads").json();
        (!heads["commits"].as_array()?.is_empty()).then_some(())
    });
    // us-east comes up afterwards: its hub learns a's head from hub a's trunk, and its node
    // fetches the agent through it.
    let started = Instant::now();
    // Held until now: hub b starts seconds after its port was chosen, and other tests bind
    // loopback ports meanwhile.
    drop(held_b);
    let hub_b = hub("hub-b", "us-east", &trunk_b, &peers_of_b);
    let hub_b_url = hub_b.url();
    let b = Daemon::node(
        dir,
        "b",
        &[
            ("MERIDIAN_NODE_REGION", "us-east"),
            ("MERIDIAN_MESH_HUB", hub_b_url.as_str()),
        ],
    );
    b.wait_for("the agent in us-east", Duration::from_secs(30), || {
        (b.get("/api/v1/agents/acme/echo").status == 200).then_some(())
    });
    println!(
        "published before the trunk came up; in us-east {:?} after its hub started",
        started.elapsed()
    );
    assert!(hub_b.metric("meridian_hub_anti_entropy_learned_total") >= 1.0);
}
