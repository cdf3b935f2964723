//! Two regions joined only by their hubs: real `meridian hub run` and `meridian node run`
//! processes on loopback. Nodes of different regions share no mesh link; everything crosses
//! through the hubs' QUIC trunk.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::a2a::{assert_streams_unbuffered, echo_card, rpc, start_echo_agent};
use crate::daemon::{Node, b64};
use crate::federation::{metric, org_token, publish, wait_for};
use crate::json;

/// A UDP port on loopback, held until the returned socket is dropped (so no other process of
/// the test run takes it between choosing and binding it).
fn reserve_udp_port() -> (u16, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

/// A hub on loopback; `trusted_nodes` may name its callers' organisation.
fn start_hub(
    dir: &Path,
    data: &str,
    region: &str,
    port: u16,
    peers: &str,
    trusted_nodes: &str,
) -> Node {
    let trunk = format!("127.0.0.1:{port}");
    let env = [
        ("MERIDIAN_HUB_REGION", region),
        ("MERIDIAN_HUB_LISTEN", "127.0.0.1:0"),
        ("MERIDIAN_HUB_TRUNK_LISTEN", trunk.as_str()),
        ("MERIDIAN_TRUNK_PEERS", peers),
        ("MERIDIAN_RELAY_ALLOW_PRIVATE", "true"),
        ("MERIDIAN_RELAY_TRUSTED_NODES", trusted_nodes),
    ];
    Node::spawn(
        dir,
        &["hub", "run", "--data", data],
        data,
        &env,
        String::new(),
    )
}

#[test]
fn two_regions_converge_and_call_each_other_through_their_hubs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let hub_a_did = json(
        dir,
        &["hub", "init", "--data", "hub-a", "--region", "eu-west"],
    )["did"]
        .as_str()
        .unwrap()
        .to_owned();
    let hub_b_did = json(
        dir,
        &["hub", "init", "--data", "hub-b", "--region", "us-east"],
    )["did"]
        .as_str()
        .unwrap()
        .to_owned();
    let ((port_a, held_a), (port_b, held_b)) = (reserve_udp_port(), reserve_udp_port());
    let peers_of_a = format!("us-east={hub_b_did}@127.0.0.1:{port_b}");
    let peers_of_b = format!("eu-west={hub_a_did}@127.0.0.1:{port_a}");
    for data in ["a", "b"] {
        json(dir, &["node", "init", "--data", data]);
    }
    // Without governance, a hub honours caller claims only from the nodes its operator lists
    // (mirroring a node's head is not enough: anyone can push one).
    let node_b_did = json(dir, &["keys", "show", "b/node.key"])["did"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(held_a);
    let hub_a = start_hub(dir, "hub-a", "eu-west", port_a, &peers_of_a, "");
    drop(held_b);
    let hub_b = start_hub(dir, "hub-b", "us-east", port_b, &peers_of_b, &node_b_did);
    let token_a = org_token(dir, "a", "acme");
    let url_a = format!("http://{}", hub_a.address);
    let url_b = format!("http://{}", hub_b.address);
    let a = Node::start(
        dir,
        "a",
        &[
            ("MERIDIAN_NODE_REGION", "eu-west"),
            ("MERIDIAN_MESH_HUB", url_a.as_str()),
        ],
    );
    let b = Node::start(
        dir,
        "b",
        &[
            ("MERIDIAN_NODE_REGION", "us-east"),
            ("MERIDIAN_MESH_HUB", url_b.as_str()),
        ],
    );

    // An echo agent of region eu-west, published on a.
    let agent = start_echo_agent();
    let key = meridian_registry::keys::Keypair::from_secret(&[42; 32]);
    let manifest = meridian_registry::manifest::ManifestBody::from_card(
        &echo_card(&agent),
        "acme",
        "eu-west",
        1_800_000_000,
    )
    .unwrap()
    .sign(&key)
    .to_block();
    let (status, _, answer) = a.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token_a}")),
        ],
        serde_json::json!({ "manifest": b64(&manifest) })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));

    // It reaches us-east through hub a, the trunk and hub b.
    let took = wait_for(&b, "acme/echo", "echo");
    eprintln!("eu-west -> us-east through the hubs in {took:?}");
    assert!(metric(&hub_b, "meridian_hub_cross_region_bytes_total") > 0);

    // A call from us-east to the eu-west agent goes b -> hub b -> trunk -> hub a -> agent.
    let (status, _, body) = b.request(
        "POST",
        "/a2a/acme/echo",
        &[("content-type", "application/json")],
        &rpc("message/send"),
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("message/send"), "{body}");
    assert_eq!(
        metric(&b, "meridian_a2a_calls_total{outcome=\"relayed\"}"),
        1
    );
    assert!(metric(&hub_a, "meridian_hub_relayed_total") >= 1);

    // A streaming call crosses the same way, and its SSE events are not held back anywhere on
    // the path: not at node b, hub b, the trunk or hub a.
    assert_streams_unbuffered(&b.address, "/a2a/acme/echo");
    assert!(metric(&hub_a, "meridian_hub_relayed_total") >= 2);

    // A caller organisation counts at the hub only when a node it trusts signed for it: b,
    // listed in hub b's relay.trusted_nodes, relays a call of globex's.
    let token_b = org_token(dir, "b", "globex");
    publish(&b, &token_b, "globex", "Planner", "plan");
    let started = Instant::now();
    while hub_b.get_json("/v1/heads").1["commits"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "b's head never reached hub b"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _, _) = b.request(
        "POST",
        "/a2a/acme/echo",
        &[
            ("content-type", "application/json"),
            ("meridian-caller-token", &token_b),
        ],
        &rpc("message/send"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &hub_b,
            "meridian_hub_caller_claims_total{outcome=\"trusted\"}"
        ),
        1
    );
    let publisher_a = json(dir, &["keys", "show", "a/node.key"])["did"]
        .as_str()
        .unwrap()
        .to_owned();
    // A client talking to the hub directly cannot borrow an organisation's tier: its bare
    // claim is refused and the call is rated as anonymous (it still goes through).
    let (status, _, _) = hub_b.request(
        "POST",
        "/v1/relay/acme/echo",
        &[
            ("content-type", "application/json"),
            ("meridian-publisher", publisher_a.as_str()),
            ("meridian-region", "eu-west"),
            ("meridian-caller-org", "globex"),
        ],
        &rpc("message/send"),
    );
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &hub_b,
            "meridian_hub_caller_claims_total{outcome=\"refused\"}"
        ),
        1
    );

    // An unknown agent is a clear 404 from the far hub, passed back.
    let (status, _, _) = b.request(
        "POST",
        "/a2a/acme/nobody",
        &[("content-type", "application/json")],
        &rpc("message/send"),
    );
    assert_eq!(status, 404);

    // Hub b restarts warm: with node a gone and hub a stopped, it still serves a's head and
    // the blocks it cached, from its own disk.
    let (_, heads) = hub_b.get_json("/v1/heads");
    let commits = heads["commits"].as_array().unwrap().len();
    assert!(commits >= 1, "{heads}");
    drop(a);
    hub_a.stop();
    hub_b.stop();
    let hub_b = start_hub(dir, "hub-b", "us-east", port_b, &peers_of_b, "");
    let (_, heads) = hub_b.get_json("/v1/heads");
    assert_eq!(
        heads["commits"].as_array().unwrap().len(),
        commits,
        "{heads}"
    );
    let manifest_cid = meridian_registry::ids::dag_cbor_cid(&manifest);
    let (status, headers, block) =
        hub_b.request("GET", &format!("/v1/blocks/{manifest_cid}"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(block, manifest);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "cache-control" && v.contains("immutable"))
    );
    // A CID nobody has: 404, not a hang (the upstream is down).
    let started = Instant::now();
    let missing = meridian_registry::ids::dag_cbor_cid(b"\xa1\x61x\x01");
    let (status, _, _) = hub_b.request("GET", &format!("/v1/blocks/{missing}"), &[], b"");
    assert_eq!(status, 404);
    assert!(started.elapsed() < Duration::from_secs(15));
    drop((b, hub_b));
}

#[test]
fn hub_cli_explains_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let stderr = crate::expect(
        dir,
        &["hub", "init", "--data", "h", "--region", "Bad Region"],
        2,
    );
    assert!(stderr.contains("--region"), "{stderr}");
    crate::expect(
        dir,
        &["hub", "init", "--data", "h", "--region", "eu-west"],
        0,
    );
    let config = std::fs::read_to_string(dir.join("h/hub.toml")).unwrap();
    assert!(config.contains("region = \"eu-west\""));
    // A bad setting stops `hub run` at once, naming it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["hub", "run", "--data", "h"])
        .env("MERIDIAN_TRUNK_PEERS", "us-east=not-a-key@127.0.0.1:1")
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("trunk.peers"));
}
