//! The A2A proxy end to end: a small echo agent started by the test, reached through real nodes.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::daemon::Node;
use crate::*;

/// A tiny A2A agent on loopback: JSON-RPC calls get an echo of the method, params and the headers
/// it saw; `message/stream` and `SendStreamingMessage` get three SSE events 400 ms apart.
pub fn start_echo_agent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    address
}

fn serve(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut length = 0;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if request_line.is_empty() {
            request_line = line.clone();
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    // The HTTP+JSON binding, under /rest: says what it was asked.
    let mut words = request_line.split_whitespace();
    let (verb, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if target.starts_with("/rest/") {
        let answer = serde_json::json!({ "verb": verb, "target": target, "body": String::from_utf8_lossy(&body) }).to_string();
        let _ = stream.write_all(
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).as_bytes(),
        );
        return;
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let method = request["method"].as_str().unwrap_or("").to_owned();
    let seen = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let seen_all = |name: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        values.join(", ")
    };
    if method == "message/stream" || method == "SendStreamingMessage" {
        // It closes the connection after the stream, and says so: a client must not keep it.
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\na2a-version: 1.0\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        for i in 0..3 {
            let event = format!(
                "id: {i}\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"part\":{i}}}}}\n\n",
                request["id"]
            );
            let _ = stream.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(400));
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        return;
    }
    let answer = serde_json::json!({
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {
            "method": method,
            "params": request["params"],
            "saw_a2a_version": seen("a2a-version"),
            "saw_authorization": seen("authorization"),
            "saw_caller_token": seen("meridian-caller-token"),
            "saw_forwarded": seen_all("forwarded"),
            "saw_x_forwarded_for": seen_all("x-forwarded-for"),
        }
    })
    .to_string();
    let status = if method == "teapot" {
        "418 I'm a teapot"
    } else {
        "200 OK"
    };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\na2a-version: 1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).as_bytes(),
    );
}

/// Makes a streaming call to `path` on the server at `address` and checks that the echo agent's
/// three SSE events pass through unbuffered: the first arrives long before the stream ends.
pub fn assert_streams_unbuffered(address: &str, path: &str) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = rpc("SendStreamingMessage");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut received = Vec::new();
    let mut first_event_at = None;
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        if first_event_at.is_none() && String::from_utf8_lossy(&received).contains("\"part\":0") {
            first_event_at = Some(started.elapsed());
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("text/event-stream"), "{text}");
    for part in 0..3 {
        assert!(text.contains(&format!("\"part\":{part}")), "{text}");
    }
    let first = first_event_at.unwrap_or_else(|| panic!("no event arrived: {text}"));
    assert!(
        first < Duration::from_millis(700) && started.elapsed() >= Duration::from_millis(1100),
        "first event after {first:?}, stream ended after {:?}",
        started.elapsed()
    );
}

pub fn echo_card(agent: &str) -> String {
    format!(
        r#"{{"name":"Echo","description":"echoes","version":"1.0.0","supportedInterfaces":[{{"url":"http://{agent}/","protocolBinding":"JSONRPC"}},{{"url":"http://{agent}/rest","protocolBinding":"HTTP+JSON"}},{{"url":"http://{agent}/grpc","protocolBinding":"GRPC"}}],"signatures":[{{"protected":"eyJhbGciOiJFZERTQSJ9","signature":"c2lnbmVkIGJ5IGFjbWU"}}],"capabilities":{{"streaming":true}},"skills":[{{"id":"echo","name":"echo"}}]}}"#
    )
}

pub fn rpc(method: &str) -> Vec<u8> {
    serde_json::json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": { "message": { "parts": [{ "text": "hi" }] } } })
        .to_string()
        .into_bytes()
}

#[test]
fn proxy_forwards_calls_and_streams_and_guards_the_edges() {
    let agent = start_echo_agent();
    let (_guard, dir) = workspace(0);
    let dir = dir.as_path();
    std::fs::write(dir.join("cards/echo.json"), echo_card(&agent)).unwrap();
    build(dir, "s.car", None);
    let car = std::fs::read(dir.join("s.car")).unwrap();
    let caller = json(
        dir,
        &[
            "node", "token", "create", "--org", "globex", "--data", "open",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let node = Node::start(dir, "open", &[("MERIDIAN_A2A_ALLOW_PRIVATE", "true")]);
    assert_eq!(node.import(&car).0, 200);
    let headers = [
        ("content-type", "application/json"),
        ("a2a-version", "1.0"),
        ("authorization", "Bearer agent-secret"),
        ("meridian-caller-token", caller.as_str()),
        // A caller cannot pass itself off as someone else to the agent.
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-for", "6.6.6.6"),
    ];

    // A call: same answer as from the agent, end-to-end headers through, our token stripped.
    let (status, response_headers, body) =
        node.request("POST", "/a2a/acme/echo", &headers, &rpc("SendMessage"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["method"], "SendMessage");
    assert_eq!(answer["result"]["saw_a2a_version"], "1.0");
    assert_eq!(answer["result"]["saw_authorization"], "Bearer agent-secret");
    assert!(answer["result"]["saw_caller_token"].is_null());
    let host = node.address.to_string();
    assert_eq!(
        answer["result"]["saw_forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{host}\"")
    );
    assert_eq!(answer["result"]["saw_x_forwarded_for"], "127.0.0.1");
    assert!(
        response_headers
            .iter()
            .any(|(k, v)| k == "a2a-version" && v == "1.0")
    );
    // Trailing slash, v0.3 method names and the agent's own status codes.
    let (status, _, body) = node.request("POST", "/a2a/acme/echo/", &headers, &rpc("message/send"));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["result"]["method"],
        "message/send"
    );
    assert_eq!(
        node.request("POST", "/a2a/acme/echo", &headers, &rpc("teapot"))
            .0,
        418
    );

    // Streaming: SSE passes through unbuffered; the first event arrives long before the last.
    assert_streams_unbuffered(&node.address, "/a2a/acme/echo");

    // The card points at the proxy: JSON-RPC and HTTP+JSON through it, gRPC left out.
    let (status, card) = node.get_json("/a2a/acme/echo/.well-known/agent-card.json");
    assert_eq!(status, 200);
    let proxy = format!("http://{}/a2a/acme/echo", node.address);
    let interfaces: Vec<(String, String)> = card["supportedInterfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["protocolBinding"].as_str().unwrap().to_owned(),
                i["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        interfaces,
        [
            ("JSONRPC".to_owned(), proxy.clone()),
            ("HTTP+JSON".to_owned(), format!("{proxy}/rest"))
        ]
    );
    // The agent signed its card; the card as served is signed by the node (JWS, EdDSA over the
    // JCS form without `signatures`, kid its did:key), whose key is at /.well-known/jwks.json.
    let signature = &card["signatures"][0];
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected: serde_json::Value = serde_json::from_slice(
        &b64.decode(signature["protected"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(protected["alg"], "EdDSA");
    let (_, jwks) = node.get_json("/.well-known/jwks.json");
    assert_eq!(jwks["keys"][0]["kid"], protected["kid"]);
    let key =
        meridian_registry::keys::PublicKey::from_did(protected["kid"].as_str().unwrap()).unwrap();
    assert_eq!(
        b64.encode(key.as_bytes()),
        jwks["keys"][0]["x"].as_str().unwrap()
    );
    let sig: [u8; 64] = b64
        .decode(signature["signature"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let input =
        meridian_node::daemon::jws::signing_input(signature["protected"].as_str().unwrap(), &card);
    key.verify(&input, &sig).unwrap();
    let mut tampered = card.clone();
    tampered["name"] = serde_json::json!("Evil");
    let input = meridian_node::daemon::jws::signing_input(
        signature["protected"].as_str().unwrap(),
        &tampered,
    );
    assert!(
        key.verify(&input, &sig).is_err(),
        "the signature covers the served card"
    );
    // The HTTP+JSON binding through the proxy: paths, queries, methods and bodies as sent.
    let (status, _, body) = node.request(
        "POST",
        "/a2a/acme/echo/rest/v1/message:send",
        &headers,
        b"{\"message\":{}}",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let saw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (saw["verb"].as_str(), saw["target"].as_str()),
        (Some("POST"), Some("/rest/v1/message:send"))
    );
    assert_eq!(saw["body"], "{\"message\":{}}");
    let (status, _, body) = node.request(
        "GET",
        "/a2a/acme/echo/rest/v1/tasks/t-1?historyLength=2",
        &headers,
        b"",
    );
    assert_eq!(status, 200);
    let saw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(saw["target"], "/rest/v1/tasks/t-1?historyLength=2");
    // A path that climbs out of the binding's base is refused before the agent is called,
    // however it is spelt.
    for climb in [
        "%2e%2e/admin",
        "v1/%2E%2e/../../admin",
        "..%5C..%5Cadmin",
        "v1/../../admin",
    ] {
        let (status, _, body) = node.request(
            "GET",
            &format!("/a2a/acme/echo/rest/{climb}"),
            &headers,
            b"",
        );
        assert_eq!(status, 400, "{climb}: {}", String::from_utf8_lossy(&body));
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["reason"], "BAD_PATH", "{climb}");
    }
    // A refusal on this binding is a problem document.
    let (status, response_headers, body) =
        node.request("GET", "/a2a/acme/nobody/rest/v1/tasks/t", &headers, b"");
    assert_eq!(status, 404);
    assert!(
        response_headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/problem+json")
    );
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (problem["status"].as_u64(), problem["reason"].as_str()),
        (Some(404), Some("UNKNOWN_AGENT"))
    );
    let (status, response_headers, _) = node.request(
        "POST",
        "/a2a/acme/echo/rest/v1/message:send",
        &headers,
        &vec![b' '; 2 * 1024 * 1024],
    );
    assert_eq!(status, 413);
    assert!(
        response_headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/problem+json")
    );

    // Edges: unknown agent, oversized body, bad caller token; the proxy's refusals of a
    // JSON-RPC request are JSON-RPC errors with its id (null when it could not be read).
    let (status, _, body) = node.request("POST", "/a2a/acme/nobody", &headers, &rpc("SendMessage"));
    assert_eq!(status, 404);
    let refusal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (refusal["jsonrpc"].as_str(), refusal["id"].as_i64()),
        (Some("2.0"), Some(7))
    );
    assert_eq!(refusal["error"]["code"], -32000);
    assert_eq!(refusal["error"]["data"]["reason"], "UNKNOWN_AGENT");
    let (status, _, body) = node.request(
        "POST",
        "/a2a/acme/echo",
        &headers,
        &vec![b' '; 2 * 1024 * 1024],
    );
    assert_eq!(status, 413);
    let refusal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(refusal["id"].is_null(), "{refusal}");
    assert_eq!(refusal["error"]["code"], -32600);
    assert_eq!(refusal["error"]["data"]["reason"], "BODY_TOO_LARGE");
    assert_eq!(
        node.request(
            "POST",
            "/a2a/acme/echo",
            &[("meridian-caller-token", "mrd_nope")],
            &rpc("SendMessage")
        )
        .0,
        401
    );
    assert!(node.stop().success());

    // SSRF: by default the proxy refuses loopback endpoints.
    let guarded = Node::start(dir, "guarded", &[]);
    assert_eq!(guarded.import(&car).0, 200);
    let (status, _, body) = guarded.request(
        "POST",
        "/a2a/acme/echo",
        &[("content-type", "application/json")],
        &rpc("SendMessage"),
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("private"));
    assert!(guarded.stop().success());

    // Rate limit: one per second, burst one; the second call at once gets 429 with Retry-After.
    let limited = Node::start(
        dir,
        "limited",
        &[
            ("MERIDIAN_A2A_ALLOW_PRIVATE", "true"),
            ("MERIDIAN_A2A_DEFAULT_RPS", "1"),
            ("MERIDIAN_A2A_DEFAULT_BURST", "1"),
            ("MERIDIAN_A2A_TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
    );
    assert_eq!(limited.import(&car).0, 200);
    // From a trusted reverse proxy, its forwarding headers pass, with this hop after them.
    let (status, _, body) = limited.request(
        "POST",
        "/a2a/acme/echo",
        &[
            ("content-type", "application/json"),
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "198.51.100.7"),
        ],
        &rpc("SendMessage"),
    );
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let forwarded = answer["result"]["saw_forwarded"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        forwarded.starts_with("for=198.51.100.7, for=127.0.0.1;proto=http"),
        "{forwarded}"
    );
    assert_eq!(
        answer["result"]["saw_x_forwarded_for"],
        "198.51.100.7, 127.0.0.1"
    );
    let (status, headers, body) = limited.request(
        "POST",
        "/a2a/acme/echo",
        &[("content-type", "application/json")],
        &rpc("SendMessage"),
    );
    assert_eq!(status, 429);
    let refusal: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(refusal["id"], 7);
    assert_eq!(refusal["error"]["data"]["reason"], "RATE_LIMITED");
    assert_eq!(refusal["error"]["data"]["retryAfterSeconds"], 1);
    assert!(
        headers.iter().any(|(k, v)| k == "retry-after" && v == "1"),
        "{headers:?}"
    );
    let (_, _, metrics) = limited.request("GET", "/metrics", &[], b"");
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("meridian_a2a_calls_total{outcome=\"rate_limited\"} 1")
    );
    assert!(limited.stop().success());
}

#[test]
fn people_search_show_and_call_agents_from_the_command_line() {
    let agent = start_echo_agent();
    let (_guard, dir) = workspace(0);
    let dir = dir.as_path();
    std::fs::write(dir.join("cards/echo.json"), echo_card(&agent)).unwrap();
    std::fs::write(dir.join("cards/planner.json"), card("Planner", "plan")).unwrap();
    build(dir, "s.car", None);
    let car = std::fs::read(dir.join("s.car")).unwrap();
    let node = Node::start(dir, "open", &[("MERIDIAN_A2A_ALLOW_PRIVATE", "true")]);
    assert_eq!(node.import(&car).0, 200);
    let url = format!("http://{}", node.address);

    let found = json(dir, &["agent", "search", "echoes", "--node", &url]);
    assert_eq!(found["agents"][0]["agent_id"], "acme/echo", "{found}");
    let ranked = json(
        dir,
        &[
            "agent",
            "search",
            "plan",
            "or",
            "echoes",
            "--relevance",
            "--node",
            &url,
        ],
    );
    assert_eq!(ranked["agents"].as_array().unwrap().len(), 2, "{ranked}");
    assert!(ranked["agents"][0]["score"].as_u64().is_some());
    let text = String::from_utf8(
        meridian(dir, &["agent", "search", "nothing-like-it", "--node", &url]).stdout,
    )
    .unwrap();
    assert!(text.contains("no agent matches"), "{text}");

    let shown =
        String::from_utf8(meridian(dir, &["agent", "show", "acme/echo", "--node", &url]).stdout)
            .unwrap();
    assert!(shown.contains("acme/echo: Echo 1.0.0"), "{shown}");
    assert!(shown.contains("ARD identifier: none"), "{shown}");
    let unknown = expect(dir, &["agent", "show", "acme/nobody", "--node", &url], 1);
    assert!(unknown.contains("404"), "{unknown}");
    assert!(expect(dir, &["agent", "show", "not-an-id", "--node", &url], 1).contains("ORG/NAME"));

    // The card says v1.0: the call is SendMessage, and the echo comes back as the answer.
    let called = json(
        dir,
        &["agent", "call", "acme/echo", "hello there", "--node", &url],
    );
    assert_eq!(called["result"]["method"], "SendMessage", "{called}");
    assert_eq!(
        called["result"]["params"]["message"]["parts"][0]["text"],
        "hello there"
    );
    let printed = String::from_utf8(
        meridian(
            dir,
            &["agent", "call", "acme/echo", "hello there", "--node", &url],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(printed.trim(), "hello there");
}

/// POSTs a JSON-RPC request to the node's own agent; the answer's JSON.
fn ask(node: &Node, body: serde_json::Value) -> serde_json::Value {
    let (status, _, answer) = node.request(
        "POST",
        "/a2a",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    serde_json::from_slice(&answer).unwrap()
}

#[test]
fn the_node_is_an_a2a_agent_that_finds_and_explains_agents() {
    let agent = start_echo_agent();
    let (_guard, dir) = workspace(0);
    let dir = dir.as_path();
    std::fs::write(dir.join("cards/echo.json"), echo_card(&agent)).unwrap();
    build(dir, "s.car", None);
    let car = std::fs::read(dir.join("s.car")).unwrap();
    let node = Node::start(dir, "own", &[]);
    assert_eq!(node.import(&car).0, 200);
    let base = format!("http://{}", node.address);

    // Its card, at the host root where A2A clients look.
    let (status, card) = node.get_json("/.well-known/agent-card.json");
    assert_eq!(status, 200);
    assert_eq!(card["supportedInterfaces"][0]["url"], format!("{base}/a2a"));
    assert_eq!(card["url"], format!("{base}/a2a"));
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(skills, ["find-agents", "explain-agent"]);

    // v1.0: a completed task whose answer lists the match with its proxy URL and provenance.
    let found = ask(
        &node,
        serde_json::json!({
            "jsonrpc": "2.0", "id": "q1", "method": "SendMessage",
            "params": { "message": { "messageId": "m1", "role": "ROLE_USER", "parts": [{ "text": "echo" }] } },
        }),
    );
    assert_eq!(found["id"], "q1");
    let task = &found["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{found}");
    let answer = &task["status"]["message"];
    assert_eq!(answer["role"], "ROLE_AGENT");
    let data = &answer["parts"][1]["data"];
    assert_eq!(data["matches"][0]["agentId"], "acme/echo", "{data}");
    assert_eq!(data["matches"][0]["rank"], 1);
    assert_eq!(
        data["matches"][0]["proxyUrl"],
        format!("{base}/a2a/acme/echo")
    );
    assert!(
        data["matches"][0]["provenance"]["publisher"]
            .as_str()
            .unwrap()
            .starts_with("did:key:")
    );
    assert!(
        answer["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains("acme/echo")
    );

    // Read again, and not cancellable once completed; an unknown task is not found.
    let task_id = task["id"].as_str().unwrap();
    let again = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": { "id": task_id } }),
    );
    assert_eq!(again["result"]["id"], task_id);
    let cancel = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": { "id": task_id } }),
    );
    assert_eq!(cancel["error"]["code"], -32002);
    let unknown = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": { "id": "nope" } }),
    );
    assert_eq!(unknown["error"]["code"], -32001);

    // v0.3: `kind` discriminators and lowercase states; explain with a data part.
    let explained = ask(
        &node,
        serde_json::json!({
            "jsonrpc": "2.0", "id": 5, "method": "message/send",
            "params": { "message": { "kind": "message", "messageId": "m2", "role": "user", "parts": [
                { "kind": "data", "data": { "skill": "explain-agent", "agent": "acme/echo" } } ] } },
        }),
    );
    let result = &explained["result"];
    assert_eq!(
        (result["kind"].as_str(), result["status"]["state"].as_str()),
        (Some("task"), Some("completed"))
    );
    let parts = &result["status"]["message"]["parts"];
    assert_eq!(parts[0]["kind"], "text");
    assert!(
        parts[0]["text"].as_str().unwrap().contains("is active"),
        "{parts}"
    );
    assert_eq!(parts[1]["data"]["status"], "active");
    assert_eq!(parts[1]["data"]["known"], true);

    // Streaming: the task, its artifact, then its completion, event by event.
    let (status, headers, body) = node.request(
        "POST",
        "/a2a",
        &[("content-type", "application/json")],
        serde_json::json!({ "jsonrpc": "2.0", "id": 6, "method": "SendStreamingMessage",
            "params": { "message": { "messageId": "m3", "role": "ROLE_USER", "parts": [{ "text": "echo" }] } } })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["result"]["task"]["status"]["state"],
        "TASK_STATE_WORKING"
    );
    assert_eq!(events[2]["result"]["statusUpdate"]["final"], true);

    // What it does not do, in JSON-RPC's words.
    let missing = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 7, "method": "tasks/resubscribe", "params": {} }),
    );
    assert_eq!(missing["error"]["code"], -32601);
    let long_context = "c".repeat(300);
    let refused = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 9, "method": "SendMessage",
            "params": { "message": { "messageId": "m9", "role": "ROLE_USER", "contextId": long_context, "parts": [{ "text": "echo" }] } } }),
    );
    assert_eq!(
        refused["error"]["code"], -32602,
        "an oversized contextId is not stored"
    );
    let empty = ask(
        &node,
        serde_json::json!({ "jsonrpc": "2.0", "id": 8, "method": "SendMessage", "params": {} }),
    );
    assert_eq!(empty["error"]["code"], -32602);
    let (_, _, garbage) = node.request(
        "POST",
        "/a2a",
        &[("content-type", "application/json")],
        b"{nope",
    );
    let garbage: serde_json::Value = serde_json::from_slice(&garbage).unwrap();
    assert_eq!(garbage["error"]["code"], -32700);
    assert!(node.stop().success());
}
