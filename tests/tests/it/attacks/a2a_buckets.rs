//! Attack 9: every anonymous A2A caller of a node shared one rate bucket, so one noisy client
//! used up everyone's rate. Buckets are now per client address and agent.

use std::net::{IpAddr, Ipv4Addr};

use meridian_registry::keys::Keypair;
use meridian_tests::*;

const RPC: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#;

fn call(node: &Daemon, source: u8, agent: &str) -> u16 {
    http_request_from(
        IpAddr::V4(Ipv4Addr::new(127, 0, 2, source)),
        &node.address,
        "POST",
        &format!("/a2a/acme/{agent}"),
        &[("content-type", "application/json")],
        RPC,
    )
    .status
}

#[test]
fn one_noisy_anonymous_caller_does_not_use_up_the_others_rate() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // The agents' endpoint is a loopback listener that hangs up: each call that gets through
    // the limiter answers 502, each that does not answers 429.
    let tripwire = Tripwire::start();
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_A2A_ALLOW_PRIVATE", "true"),
            ("MERIDIAN_A2A_DEFAULT_RPS", "1"),
            ("MERIDIAN_A2A_DEFAULT_BURST", "2"),
        ],
    );
    let token = org_token(dir, "n", "acme");
    let key = Keypair::from_secret(&[5; 32]);
    let endpoint = format!("http://{}/a2a", tripwire.address);
    for agent in ["echo", "other"] {
        let manifest = manifest_block("acme", agent, "local", &endpoint, 1_800_000_000, &key);
        assert_eq!(publish(&node, &token, &manifest).status, 201);
    }
    // The noisy client spends its burst of two on echo, then waits (a slow machine may refill
    // a token between calls, so it gets a few more tries to hit the limit).
    assert_eq!(call(&node, 1, "echo"), 502);
    assert_eq!(call(&node, 1, "echo"), 502);
    assert!(
        (0..5).any(|_| call(&node, 1, "echo") == 429),
        "the noisy client was never limited"
    );
    // Another anonymous client still gets through to echo, and the noisy one to another agent.
    assert_eq!(call(&node, 2, "echo"), 502);
    assert_eq!(call(&node, 1, "other"), 502);
    assert!(node.metric("meridian_a2a_calls_total{outcome=\"rate_limited\"}") >= 1.0);
}
