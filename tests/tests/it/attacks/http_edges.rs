//! Smaller holes at the HTTP edge (attacks 8 and 9): a body over the limit, a body that
//! trickles in, a Host header a client chose, a sync request that claims too many blocks, and
//! sync answers that could be asked for without end.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meridian_tests::*;

/// The wire format's kind of a blocks request and of a refusal.
const REQUEST_BLOCKS: u8 = 17;
const REQUEST_HEADS: u8 = 16;
const RESPONSE_REFUSED: u8 = 34;

#[test]
fn a_body_over_the_limit_gets_the_documented_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::node(dir.path(), "n", &[("MERIDIAN_HTTP_BODY_BYTES_MAX", "1024")]);
    let answer = node.request(
        "POST",
        "/api/v1/agents",
        &[("content-type", "application/json")],
        &vec![b' '; 4096],
    );
    assert_eq!(answer.status, 413);
    assert_eq!(
        answer.json()["error"]["code"],
        "body_too_large",
        "{:?}",
        answer
    );
}

#[test]
fn a_body_that_trickles_in_is_cut_off_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::node(
        dir.path(),
        "n",
        &[("MERIDIAN_HTTP_BODY_READ_TIMEOUT_SECS", "1")],
    );
    let mut stream = TcpStream::connect(&node.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /api/v1/agents HTTP/1.1\r\nhost: n\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"manifest\":")
        .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let answer = parse_answer(&raw);
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "body_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(node.metric("meridian_http_body_timeouts_total") >= 1.0);
}

#[test]
fn the_card_never_takes_its_url_from_a_clients_host_header() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "n", &[]);
    publish_sample(dir, &node, 3);
    let answer = node.request(
        "GET",
        "/a2a/acme/echo/.well-known/agent-card.json",
        &[("host", "evil.example")],
        b"",
    );
    assert_eq!(answer.status, 200);
    let card = answer.json();
    let url = card["supportedInterfaces"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(url, format!("http://{}/a2a/acme/echo", node.address));
    assert!(!String::from_utf8_lossy(&answer.body).contains("evil.example"));
}

#[test]
fn a_sync_request_claiming_too_many_blocks_is_refused_unparsed() {
    let dir = tempfile::tempdir().unwrap();
    let node = Daemon::node(dir.path(), "n", &[]);
    // 2,000 claimed CIDs (over the cap of 1,024) followed by bytes that are no CIDs at all.
    let mut request = vec![REQUEST_BLOCKS];
    request.extend_from_slice(&2_000u32.to_be_bytes());
    request.extend(std::iter::repeat_n(0u8, 8_200));
    let answer = node.request(
        "POST",
        "/api/v1/sync",
        &[("content-type", "application/octet-stream")],
        &request,
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.first(), Some(&RESPONSE_REFUSED));
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.contains("2000 items; at most 1024"), "{text}");
    // The malformed request did not get the gateway penalised: a good request still works.
    let heads = node.request("POST", "/api/v1/sync", &[], &[REQUEST_HEADS, 0, 0, 0, 0]);
    assert_eq!(heads.status, 200);
    assert_ne!(heads.body.first(), Some(&RESPONSE_REFUSED));
}

#[test]
fn sync_answers_are_budgeted_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(
        dir,
        "n",
        &[("MERIDIAN_HTTP_SYNC_BYTES_PER_CLIENT_PER_SECOND", "500")],
    );
    publish_sample(dir, &node, 4);
    let mut answered_bytes = 0;
    let mut refused = None;
    for _ in 0..50 {
        let answer = node.request("POST", "/api/v1/sync", &[], &[REQUEST_HEADS, 0, 0, 0, 0]);
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200);
        answered_bytes += answer.body.len();
    }
    let refused = refused.expect("the budget never ran out");
    assert_eq!(refused.json()["error"]["code"], "sync_budget");
    assert!(refused.header("retry-after").is_some());
    // A burst of twice the rate, plus at most one answer started inside the budget.
    assert!(
        answered_bytes <= 1_000 + 1_000,
        "{answered_bytes} bytes answered"
    );
}

#[test]
fn blocks_and_deltas_are_served_from_the_store_off_the_mesh_loop() {
    use meridian_hub::wire::{MESSAGE_BYTES_MAX, Request, Response};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // With the mesh off there is no sync engine at all: what answers comes from the store.
    let node = Daemon::node(dir, "n", &[("MERIDIAN_MESH_ENABLED", "false")]);
    let token = org_token(dir, "n", "acme");
    let key = meridian_registry::keys::Keypair::from_secret(&[8; 32]);
    let mut commits = Vec::new();
    for (at, url) in [
        (1_800_000_000, "https://a.example/1"),
        (1_800_000_100, "https://a.example/2"),
    ] {
        let manifest = manifest_block("acme", "echo", "local", url, at, &key);
        let answer = publish(&node, &token, &manifest);
        assert!(matches!(answer.status, 200 | 201), "{:?}", answer.json());
        let commit = answer.json()["commit"].as_str().unwrap().to_owned();
        commits.push(meridian_registry::ids::parse_cid(&commit).unwrap());
    }
    let delta = Request::Delta {
        from: commits[0],
        to: commits[1],
    };
    let answer = node.request("POST", "/api/v1/sync", &[], &delta.encode());
    assert_eq!(answer.status, 200);
    let Ok(Response::Blocks(blocks)) = Response::decode(&answer.body, MESSAGE_BYTES_MAX) else {
        panic!("not a blocks answer: {:?}", answer.body.first());
    };
    assert_eq!(
        blocks[0].0, commits[1],
        "the delta starts with the new commit"
    );
    let asked = Request::Blocks(vec![commits[0]]);
    let answer = node.request("POST", "/api/v1/sync", &[], &asked.encode());
    let Ok(Response::Blocks(blocks)) = Response::decode(&answer.body, MESSAGE_BYTES_MAX) else {
        panic!("not a blocks answer");
    };
    assert_eq!(blocks.len(), 1);
    // A heads request needs the engine, which is off.
    let answer = node.request("POST", "/api/v1/sync", &[], &Request::Heads.encode());
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"]["code"], "mesh_off");
}
