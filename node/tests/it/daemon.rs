//! `meridian node run` end to end: a real process on an ephemeral port, spoken to over HTTP.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// A running node, stopped (SIGTERM, then kill) when dropped.
pub struct Node {
    child: Child,
    pub address: String,
    /// An admin token created for the test before the node started.
    pub admin: String,
}

impl Node {
    pub fn start(dir: &Path, data: &str, env: &[(&str, &str)]) -> Node {
        let admin = json(dir, &["node", "token", "create", "--admin", "--data", data])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        Node::spawn(
            dir,
            &["node", "run", "--data", data, "--http", "127.0.0.1:0"],
            data,
            env,
            admin,
        )
    }

    /// Starts `meridian ARGS` and waits for `DATA/http.addr` (nodes and hubs both write it).
    pub fn spawn(
        dir: &Path,
        args: &[&str],
        data: &str,
        env: &[(&str, &str)],
        admin: String,
    ) -> Node {
        let _ = std::fs::remove_file(dir.join(data).join("http.addr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
        command
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            // MERIDIAN_TEST_NODE_LOGS=1 shows the processes' logs; otherwise they go to
            // DATA/test.log, shown when the process does not start.
            .stderr(if std::env::var_os("MERIDIAN_TEST_NODE_LOGS").is_some() {
                Stdio::inherit()
            } else {
                std::fs::File::create(dir.join(data).join("test.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from)
            });
        for (key, value) in env {
            command.env(key, value);
        }
        // Waited for in `Drop` (or `stop`), whichever comes first.
        #[allow(clippy::zombie_processes)]
        let mut child = command.spawn().unwrap();
        let addr_file = dir.join(data).join("http.addr");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && !text.trim().is_empty()
            {
                return Node {
                    child,
                    address: text.trim().to_owned(),
                    admin,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let log =
                    std::fs::read_to_string(dir.join(data).join("test.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "meridian {args:?} did not start ({}); its log ends:\n{}",
                    exited.map_or("still running after 30 s".to_owned(), |s| s.to_string()),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one request; returns status, headers (lowercased names) and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no http head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            body = dechunk(&body);
        }
        (status, headers, body)
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request("GET", path, &[], b"");
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn import(&self, car: &[u8]) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request(
            "POST",
            "/api/v1/registry/import",
            &[
                ("content-type", "application/vnd.ipld.car"),
                ("authorization", &format!("Bearer {}", self.admin)),
            ],
            car,
        );
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "node ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn node_serves_imports_searches_exports_and_stops_cleanly() {
    let (_guard, dir) = workspace(30);
    let dir = dir.as_path();
    let first = build(dir, "s1.car", None);
    std::fs::write(
        dir.join("cards/agent-00003.json"),
        card("Agent 3", "translate"),
    )
    .unwrap();
    let second = build(dir, "s2.car", Some("s1.car"));
    let s1 = std::fs::read(dir.join("s1.car")).unwrap();
    let s2 = std::fs::read(dir.join("s2.car")).unwrap();

    expect(dir, &["node", "init", "--data", "node-data"], 0);
    let node = Node::start(
        dir,
        "node-data",
        &[("MERIDIAN_HTTP_IMPORT_BYTES_MAX", "1048576")],
    );
    assert_eq!(node.get_json("/health").1["status"], "ok");
    assert_eq!(node.get_json("/ready").1["status"], "ready");
    let (status, body) = node.get_json("/api/v1/registry/snapshot");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_snapshot"))
    );

    // Import, then the successor; heads and lookups follow.
    let (status, imported) = node.import(&s1);
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["agents"], 30);
    let (status, imported) = node.import(&s2);
    assert_eq!(status, 200, "{imported}");
    assert_eq!(imported["seq"], 2);
    let (_, heads) = node.get_json("/api/v1/registry/heads");
    assert_eq!(heads["heads"][0]["commit"], second["root"]);

    let (status, agent) = node.get_json("/api/v1/agents/acme/agent-3");
    assert_eq!(status, 200, "{agent}");
    assert_eq!(agent["card"]["skills"][0]["id"], "translate");
    assert_eq!(agent["provenance"]["seq"], 2);
    assert_eq!(agent["provenance"]["commit"], second["root"]);

    // Search: by skill, by text, paginated with a stable cursor.
    let (_, found) = node.get_json("/api/v1/agents?skill=translate");
    assert_eq!(found["agents"].as_array().unwrap().len(), 1);
    let (_, found) = node.get_json("/api/v1/agents?q=agent%2012");
    assert_eq!(found["agents"][0]["agent_id"], "acme/agent-12");
    let mut seen = Vec::new();
    let mut path = "/api/v1/agents?org=acme&limit=7".to_owned();
    loop {
        let (status, page) = node.get_json(&path);
        assert_eq!(status, 200, "{page}");
        for agent in page["agents"].as_array().unwrap() {
            seen.push(agent["agent_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/api/v1/agents?org=acme&limit=7&cursor={}",
                    cursor.replace('/', "%2F")
                )
            }
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted), (30, seen.clone()));

    // Blocks are immutable: ETag, long cache, 304 on revalidation.
    let manifest = agent["manifest"]["cid"].as_str().unwrap();
    let (status, headers, block) =
        node.request("GET", &format!("/api/v1/blocks/{manifest}"), &[], b"");
    assert_eq!(status, 200);
    assert!(!block.is_empty());
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert!(
        header(&headers, "cache-control")
            .unwrap()
            .contains("immutable")
    );
    let (status, _, _) = node.request(
        "GET",
        &format!("/api/v1/blocks/{manifest}"),
        &[("if-none-match", &etag)],
        b"",
    );
    assert_eq!(status, 304);

    // Export gives back exactly s2; a delta since s1 imports elsewhere.
    let (status, headers, exported) = node.request("GET", "/api/v1/registry/snapshot", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.ipld.car")
    );
    assert_eq!(exported, s2);
    let since = first["root"].as_str().unwrap();
    let (status, _, delta) = node.request(
        "GET",
        &format!("/api/v1/registry/snapshot?since={since}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(delta.len() < s2.len());
    std::fs::write(dir.join("delta.car"), &delta).unwrap();
    json(
        dir,
        &["snapshot", "import", "s1.car", "--data", "elsewhere"],
    );
    json(
        dir,
        &["snapshot", "import", "delta.car", "--data", "elsewhere"],
    );

    // Bad input: each a precise 4xx, and the node's state is unchanged.
    let (status, body) = node.import(&s1);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("rollback")),
        "{body}"
    );
    let mut tampered = s2.clone();
    let index = tampered.len() - 30;
    tampered[index] ^= 1;
    let (status, body) = node.import(&tampered);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("hash_mismatch")),
        "{body}"
    );
    let (status, body) = node.import(b"not a car");
    assert_eq!(status, 422, "{body}");
    let admin_auth = format!("Bearer {}", node.admin);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/registry/import",
        &[
            ("content-type", "application/json"),
            ("authorization", &admin_auth),
        ],
        &s2,
    );
    assert_eq!(status, 415);
    // Imports need an admin token: none is 401, an organisation's is 403.
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/registry/import",
        &[("content-type", "application/vnd.ipld.car")],
        &s2,
    );
    assert_eq!(status, 401);
    let org_token = json(
        dir,
        &[
            "node",
            "token",
            "create",
            "--org",
            "acme",
            "--data",
            "node-data",
        ],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/registry/import",
        &[
            ("content-type", "application/vnd.ipld.car"),
            ("authorization", &format!("Bearer {org_token}")),
        ],
        &s2,
    );
    assert_eq!(status, 403);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/registry/import",
        &[("content-type", "application/vnd.ipld.car")],
        &vec![0u8; 2 * 1024 * 1024],
    );
    assert_eq!(status, 413);
    assert_eq!(node.get_json("/api/v1/agents/acme/nobody").0, 404);
    assert_eq!(node.get_json("/api/v1/blocks/not-a-cid").0, 400);
    assert_eq!(node.get_json("/api/v1/agents?limit=0").0, 400);
    assert_eq!(node.get_json("/api/v1/agents?surprise=1").0, 400);
    assert_eq!(node.get_json("/nowhere").0, 404);
    let (_, heads_after) = node.get_json("/api/v1/registry/heads");
    assert_eq!(heads_after, heads);

    // Metrics count what happened.
    let (_, headers, metrics) = node.request("GET", "/metrics", &[], b"");
    assert!(header(&headers, "x-request-id").is_some());
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("meridian_http_requests_total{method=\"POST\",route=\"/api/v1/registry/import\",status=\"422\"}"), "{metrics}");
    assert!(metrics.contains("meridian_agents 30"), "{metrics}");
    assert!(
        metrics.contains("meridian_imports_total{outcome=\"rejected\"}"),
        "{metrics}"
    );

    // SIGTERM: a clean exit; a restart serves the same data.
    assert!(node.stop().success());
    let node = Node::start(dir, "node-data", &[]);
    assert_eq!(node.get_json("/api/v1/agents/acme/agent-3").0, 200);
    assert!(node.stop().success());
}

#[test]
fn bad_config_fails_fast_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["node", "run", "--data", "d"])
        .env("MERIDIAN_HTTP_LISTEN", "not-an-address")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("http.listen"));
}

pub fn manifest_block(
    org: &str,
    name: &str,
    key: &meridian_registry::keys::Keypair,
    skill: &str,
) -> Vec<u8> {
    meridian_registry::manifest::ManifestBody::from_card(
        &card(name, skill),
        org,
        "eu-west",
        1_800_000_000,
    )
    .unwrap()
    .sign(key)
    .to_block()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn organisations_publish_update_and_delete_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    expect(dir, &["node", "init", "--data", "n"], 0);
    let token = json(
        dir,
        &["node", "token", "create", "--org", "acme", "--data", "n"],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = json(
        dir,
        &["node", "token", "create", "--org", "globex", "--data", "n"],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = Node::start(dir, "n", &[("MERIDIAN_HTTP_BODY_BYTES_MAX", "200000")]);
    let org_key = meridian_registry::keys::Keypair::from_secret(&[42; 32]);
    let auth = format!("Bearer {token}");
    let post = |body: &serde_json::Value, extra: &[(&str, &str)]| {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        headers.extend_from_slice(extra);
        let (status, headers, body) = node.request(
            "POST",
            "/api/v1/agents",
            &headers,
            body.to_string().as_bytes(),
        );
        (
            status,
            headers,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };

    // Auth first.
    let helper = serde_json::json!({ "manifest": b64(&manifest_block("acme", "Helper", &org_key, "search")) });
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[("content-type", "application/json")],
        helper.to_string().as_bytes(),
    );
    assert_eq!(status, 401);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer mrd_nope"),
        ],
        helper.to_string().as_bytes(),
    );
    assert_eq!(status, 401);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {other}")),
        ],
        helper.to_string().as_bytes(),
    );
    assert_eq!(status, 403);

    // Publish, look up, search; the same manifest again changes nothing.
    let (status, _, published) = post(&helper, &[]);
    assert_eq!(status, 201, "{published}");
    assert_eq!(published["seq"], 1);
    assert_eq!(
        node.get_json("/api/v1/agents/acme/helper").1["card"]["name"],
        "Helper"
    );
    assert_eq!(
        node.get_json("/api/v1/agents?skill=search").1["agents"][0]["agent_id"],
        "acme/helper"
    );
    let (status, _, again) = post(&helper, &[]);
    assert_eq!((status, again["seq"].as_u64()), (200, Some(1)));

    // The card form: card text, signer, signature and time, as the org signed them.
    let body = meridian_registry::manifest::ManifestBody::from_card(
        &card("Translator", "translate"),
        "acme",
        "eu-west",
        1_800_000_100,
    )
    .unwrap();
    let manifest = body.sign(&org_key);
    let card_form = serde_json::json!({
        "card": manifest.body.card, "region": "eu-west", "updated_at": 1_800_000_100,
        "signer": org_key.did(), "sig": b64(&manifest.sig),
    });
    let (status, _, published) = post(&card_form, &[]);
    assert_eq!(
        (status, published["seq"].as_u64()),
        (201, Some(2)),
        "{published}"
    );

    // Idempotency: a retry replays; the key with another body is refused.
    let update = serde_json::json!({ "manifest": b64(&manifest_block("acme", "Helper", &org_key, "summarise")) });
    let (status, _, first) = post(&update, &[("idempotency-key", "k1")]);
    assert_eq!(status, 200, "{first}");
    let (status, headers, replay) = post(&update, &[("idempotency-key", "k1")]);
    assert_eq!((status, &replay), (200, &first));
    assert_eq!(header(&headers, "idempotent-replay"), Some("true"));
    let (status, _, conflict) = post(&helper, &[("idempotency-key", "k1")]);
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (422, Some("idempotency_conflict"))
    );
    assert_eq!(
        node.get_json("/api/v1/agents/acme/helper").1["card"]["skills"][0]["id"],
        "summarise"
    );

    // Bad input: precise errors, nothing published.
    let (_, heads_before) = node.get_json("/api/v1/registry/heads");
    let mut forged = meridian_registry::manifest::ManifestBody::from_card(
        &card("Forged", "x"),
        "acme",
        "eu-west",
        1,
    )
    .unwrap()
    .sign(&org_key);
    forged.sig[0] ^= 1;
    let (status, _, body) = post(
        &serde_json::json!({ "manifest": b64(&forged.to_block()) }),
        &[],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("bad_signature"))
    );
    let (status, _, body) = post(
        &serde_json::json!({ "card": "{\"name\": 5}", "signer": org_key.did(), "sig": b64(&[0; 64]), "updated_at": 1 }),
        &[],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_card"))
    );
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        b"{not json",
    );
    assert_eq!(status, 400);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[("content-type", "text/plain"), ("authorization", &auth)],
        b"{}",
    );
    assert_eq!(status, 415);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        &vec![b' '; 300_000],
    );
    assert_eq!(status, 413);
    let (status, _, body) = node.request(
        "PUT",
        "/api/v1/agents/acme/other",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        helper.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert_eq!(node.get_json("/api/v1/registry/heads").1, heads_before);

    // The node's snapshot verifies as the node's own, with both agents.
    let node_did = expect(dir, &["keys", "show", "n/node.key"], 0)
        .trim()
        .to_owned();
    let (_, _, car) = node.request("GET", "/api/v1/registry/snapshot", &[], b"");
    std::fs::write(dir.join("own-1.car"), &car).unwrap();
    let verified = json(
        dir,
        &["snapshot", "verify", "own-1.car", "--publisher", &node_did],
    );
    assert_eq!(verified["agents"], 2);

    // Delete, then a restart keeps the chain going.
    let (status, _, _) = node.request(
        "DELETE",
        "/api/v1/agents/acme/translator",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(node.get_json("/api/v1/agents/acme/translator").0, 404);
    let (status, _, _) = node.request(
        "DELETE",
        "/api/v1/agents/acme/translator",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(status, 404);
    let (status, _, _) = node.request(
        "DELETE",
        "/api/v1/agents/globex/x",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(status, 403);
    assert!(node.stop().success());
    let node = Node::start(dir, "n", &[]);
    let extra = serde_json::json!({ "manifest": b64(&manifest_block("acme", "Scribe", &org_key, "write")) });
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        extra.to_string().as_bytes(),
    );
    assert_eq!(status, 201);
    let (_, _, car) = node.request("GET", "/api/v1/registry/snapshot", &[], b"");
    std::fs::write(dir.join("own-2.car"), &car).unwrap();
    let verified = json(
        dir,
        &["snapshot", "verify", "own-2.car", "--after", "own-1.car"],
    );
    assert_eq!(verified["agents"], 2);
    // helper, translator, helper again, the delete, scribe: five commits.
    assert_eq!(verified["seq"], 5);

    // A revoked token stops working at once.
    let id = json(dir, &["node", "token", "list", "--data", "n"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect(dir, &["node", "token", "revoke", &id, "--data", "n"], 0);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        extra.to_string().as_bytes(),
    );
    assert_eq!(status, 401);
    assert!(node.stop().success());
}

/// Reads SSE events (id, event) from a stream until `count` events arrived.
fn read_events(stream: &mut TcpStream, count: usize) -> Vec<(Option<u64>, String)> {
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    while events.len() < count {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "events did not arrive: {events:?}"
        );
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "stream closed early");
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        events.clear();
        for block in text.split("\n\n") {
            let mut id = None;
            let mut kind = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.trim().parse().ok();
                }
                if let Some(value) = line.strip_prefix("event: ") {
                    kind = Some(value.trim().to_owned());
                }
            }
            if let Some(kind) = kind {
                events.push((id, kind));
            }
        }
    }
    events
}

fn open_events(node: &Node, last_event_id: Option<u64>) -> TcpStream {
    let mut stream = TcpStream::connect(&node.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let resume = last_event_id
        .map(|id| format!("last-event-id: {id}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /api/v1/events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

#[test]
fn events_stream_changes_and_resume_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    expect(dir, &["node", "init", "--data", "n"], 0);
    let token = json(
        dir,
        &["node", "token", "create", "--org", "acme", "--data", "n"],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = Node::start(dir, "n", &[]);
    let org_key = meridian_registry::keys::Keypair::from_secret(&[42; 32]);
    let auth = format!("Bearer {token}");
    let publish = |name: &str| {
        let body = serde_json::json!({ "manifest": b64(&manifest_block("acme", name, &org_key, "search")) });
        let (status, _, _) = node.request(
            "POST",
            "/api/v1/agents",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 201);
    };

    let mut stream = open_events(&node, None);
    std::thread::sleep(Duration::from_millis(200));
    publish("One");
    let events = read_events(&mut stream, 2);
    assert_eq!(events[0].1, "agent.added");
    assert_eq!(events[1].1, "head.accepted");
    let last = events[1].0.unwrap();
    assert!(events[0].0.unwrap() < last, "ids are monotonic");
    drop(stream);

    // Missed while disconnected, delivered on resume, in order.
    publish("Two");
    publish("Three");
    let mut stream = open_events(&node, Some(last));
    let events = read_events(&mut stream, 4);
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "agent.added",
            "head.accepted",
            "agent.added",
            "head.accepted"
        ]
    );
    assert_eq!(events[0].0, Some(last + 1));
    // A hostile Last-Event-ID cannot hurt the node.
    let mut top = open_events(&node, Some(u64::MAX));
    top.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut head = [0u8; 15];
    top.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    drop(top);
    // A bad Last-Event-ID is a clear 400.
    let (status, _, _) = node.request(
        "GET",
        "/api/v1/events",
        &[("last-event-id", "yesterday")],
        b"",
    );
    assert_eq!(status, 400);
    drop(stream);
    assert!(node.stop().success());
}

/// A node with governance on (one root key, two attest keys, one policy key) in a workspace,
/// with an admin token, acme's token and a manifest of acme's own to publish.
struct GovernedNode {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    node: Option<Node>,
    admin_auth: String,
    acme_auth: String,
    root_path: String,
    org_key: meridian_registry::keys::Keypair,
    extra: serde_json::Value,
}

impl GovernedNode {
    fn start() -> Self {
        let (temp, dir_buf) = workspace(4);
        let dir = dir_buf.as_path();
        for name in ["r1", "a1", "a2", "p1", "w1"] {
            expect(
                dir,
                &["keys", "generate", "--out", &format!("{name}.key")],
                0,
            );
        }
        expect(
            dir,
            &[
                "gov",
                "init",
                "--root-key",
                "r1.key",
                "--attest-key",
                "a1.key",
                "--attest-key",
                "a2.key",
                "--attest-threshold",
                "2",
                "--policy-key",
                "p1.key",
                "--witness-key",
                "w1.key",
                "--out",
                "root.cbor",
            ],
            0,
        );
        expect(dir, &["gov", "sign", "root.cbor", "--key", "r1.key"], 0);
        build(dir, "s1.car", None);
        expect(dir, &["node", "init", "--data", "n"], 0);
        let token = |args: &[&str]| json(dir, args)["token"].as_str().unwrap().to_owned();
        let admin = token(&["node", "token", "create", "--admin", "--data", "n"]);
        let acme = token(&["node", "token", "create", "--org", "acme", "--data", "n"]);
        let root_path = dir.join("root.cbor").display().to_string();
        let node = Node::start(dir, "n", &[("MERIDIAN_GOVERNANCE_ROOT", &root_path)]);
        assert_eq!(node.get_json("/api/v1/governance/root").1["version"], 1);
        let org_key_text = std::fs::read_to_string(dir.join("org.key")).unwrap();
        let org_key = meridian_registry::keys::Keypair::from_key_file(&org_key_text).unwrap();
        let extra = serde_json::json!({ "manifest": b64(&manifest_block("acme", "Local", &org_key, "search")) });
        GovernedNode {
            _temp: temp,
            dir: dir_buf,
            node: Some(node),
            admin_auth: format!("Bearer {admin}"),
            acme_auth: format!("Bearer {acme}"),
            root_path,
            org_key,
            extra,
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("the node runs")
    }

    /// Posts the document in `file` to `path` with `auth`; the status and the JSON answer.
    fn post_doc(&self, path: &str, file: &str, auth: &str) -> (u16, serde_json::Value) {
        let body = std::fs::read(self.dir.join(file)).unwrap();
        let (status, _, body) = self.node().request(
            "POST",
            path,
            &[
                ("content-type", "application/vnd.ipld.dag-cbor"),
                ("authorization", auth),
            ],
            &body,
        );
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        )
    }
}

/// A named step of [`GOVERNED_STEPS`].
type GovernedStep = (&'static str, fn(&mut GovernedNode));

/// The governance workflow against a running node, step by step: each test runs the steps
/// before its own and is named for what it checks.
const GOVERNED_STEPS: [GovernedStep; 8] = [
    ("unverified_agents_stay_out", unverified_agents_stay_out),
    (
        "registration_is_public_and_review_needs_an_admin",
        registration_is_public_and_review_needs_an_admin,
    ),
    (
        "approval_needs_the_threshold_and_an_admin",
        approval_needs_the_threshold_and_an_admin,
    ),
    ("a_policy_denies_an_agent", a_policy_denies_an_agent),
    ("bad_documents_are_refused", bad_documents_are_refused),
    (
        "a_revoked_key_publishes_nothing",
        a_revoked_key_publishes_nothing,
    ),
    (
        "revoking_the_verification_empties_the_view",
        revoking_the_verification_empties_the_view,
    ),
    (
        "a_missing_root_file_stops_the_node",
        a_missing_root_file_stops_the_node,
    ),
];

/// A governed node after `GOVERNED_STEPS` up to and including `last`.
fn governed_after(last: &str) -> GovernedNode {
    let mut governed = GovernedNode::start();
    for (name, step) in GOVERNED_STEPS {
        step(&mut governed);
        if name == last {
            return governed;
        }
    }
    panic!("no step `{last}`");
}

/// Unverified: imported agents stay out of the view, and publishing is refused with the reason.
fn unverified_agents_stay_out(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let acme_auth = g.acme_auth.clone();
    let extra = &g.extra;
    assert_eq!(
        node.import(&std::fs::read(dir.join("s1.car")).unwrap()).0,
        200
    );
    assert_eq!(
        node.get_json("/api/v1/agents").1["agents"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (status, _, body) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &acme_auth),
        ],
        extra.to_string().as_bytes(),
    );
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("not verified"));
}

/// Registration (public) and review (admin only).
fn registration_is_public_and_review_needs_an_admin(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let admin_auth = g.admin_auth.clone();
    expect(
        dir,
        &[
            "org",
            "request",
            "--org",
            "acme",
            "--domain",
            "acme.example",
            "--contact",
            "ops",
            "--key",
            "org.key",
            "--out",
            "req.cbor",
        ],
        0,
    );
    let body = std::fs::read(dir.join("req.cbor")).unwrap();
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/orgs/registrations",
        &[("content-type", "application/vnd.ipld.dag-cbor")],
        &body,
    );
    assert_eq!(status, 202);
    assert_eq!(node.get_json("/api/v1/orgs/registrations").0, 401);
    let (status, _, listed) = node.request(
        "GET",
        "/api/v1/orgs/registrations",
        &[("authorization", &admin_auth)],
        b"",
    );
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&listed).contains("acme.example"));
}

/// Approval: refused with one signature, and from a non-admin; accepted co-signed.
fn approval_needs_the_threshold_and_an_admin(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let post_doc = |path: &str, file: &str, auth: &str| g.post_doc(path, file, auth);
    let admin_auth = g.admin_auth.clone();
    let acme_auth = g.acme_auth.clone();
    let extra = &g.extra;
    expect(
        dir,
        &["org", "approve", "req.cbor", "--out", "verified.cbor"],
        0,
    );
    expect(
        dir,
        &["attest", "cosign", "verified.cbor", "--key", "a1.key"],
        0,
    );
    assert_eq!(
        post_doc("/api/v1/attestations", "verified.cbor", &admin_auth).0,
        422
    );
    expect(
        dir,
        &["attest", "cosign", "verified.cbor", "--key", "a2.key"],
        0,
    );
    assert_eq!(
        post_doc("/api/v1/attestations", "verified.cbor", &acme_auth).0,
        403
    );
    assert_eq!(
        post_doc("/api/v1/attestations", "verified.cbor", "Bearer nope").0,
        401
    );
    let (status, posted) = post_doc("/api/v1/attestations", "verified.cbor", &admin_auth);
    assert_eq!(status, 201, "{posted}");
    assert_eq!(
        node.get_json("/api/v1/agents").1["agents"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &acme_auth),
        ],
        extra.to_string().as_bytes(),
    );
    assert_eq!(status, 201);
    let (_, agent) = node.get_json("/api/v1/agents/acme/local");
    assert_eq!(agent["provenance"]["attestations"][0], posted["id"]);
    let (_, listed) = node.get_json("/api/v1/attestations?subject=org:acme");
    assert_eq!(listed["attestations"].as_array().unwrap().len(), 1);
}

/// Policy: one agent denied.
fn a_policy_denies_an_agent(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let post_doc = |path: &str, file: &str, auth: &str| g.post_doc(path, file, auth);
    let admin_auth = g.admin_auth.clone();
    std::fs::write(
        dir.join("policy.toml"),
        "version = 1\ndeny_agents = [\"acme/agent-1\"]\n",
    )
    .unwrap();
    expect(
        dir,
        &[
            "policy",
            "sign",
            "policy.toml",
            "--key",
            "p1.key",
            "--out",
            "policy.cbor",
        ],
        0,
    );
    assert_eq!(
        post_doc("/api/v1/governance/policy", "policy.cbor", &admin_auth).0,
        200
    );
    assert_eq!(node.get_json("/api/v1/agents/acme/agent-1").0, 404);
    assert_eq!(node.get_json("/api/v1/governance/policy").1["version"], 1);
}

/// Bad documents.
fn bad_documents_are_refused(g: &mut GovernedNode) {
    let node = g.node();
    let post_doc = |path: &str, file: &str, auth: &str| g.post_doc(path, file, auth);
    let admin_auth = g.admin_auth.clone();
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/attestations",
        &[
            ("content-type", "application/json"),
            ("authorization", &admin_auth),
        ],
        b"{}",
    );
    assert_eq!(status, 415);
    let (status, _, _) = node.request(
        "POST",
        "/api/v1/attestations",
        &[
            ("content-type", "application/vnd.ipld.dag-cbor"),
            ("authorization", &admin_auth),
        ],
        b"garbage",
    );
    assert_eq!(status, 422);
    assert_eq!(
        post_doc("/api/v1/governance/root", "root.cbor", &admin_auth).0,
        422,
        "root rollback"
    );
}

/// A revoked org key: publishing with it is refused with the reason, and its agents leave the view.
fn a_revoked_key_publishes_nothing(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let post_doc = |path: &str, file: &str, auth: &str| g.post_doc(path, file, auth);
    let admin_auth = g.admin_auth.clone();
    let acme_auth = g.acme_auth.clone();
    let org_key = &g.org_key;
    let org_did = expect(dir, &["keys", "show", "org.key"], 0)
        .trim()
        .to_owned();
    expect(
        dir,
        &[
            "org",
            "revoke-key",
            "--org",
            "acme",
            "--key",
            &org_did,
            "--revoked-at",
            "1000",
            "--out",
            "key-revoked.cbor",
        ],
        0,
    );
    expect(
        dir,
        &["attest", "cosign", "key-revoked.cbor", "--key", "a1.key"],
        0,
    );
    expect(
        dir,
        &["attest", "cosign", "key-revoked.cbor", "--key", "a2.key"],
        0,
    );
    assert_eq!(
        post_doc("/api/v1/attestations", "key-revoked.cbor", &admin_auth).0,
        201
    );
    let late =
        serde_json::json!({ "manifest": b64(&manifest_block("acme", "Late", org_key, "search")) });
    let (status, _, body) = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &acme_auth),
        ],
        late.to_string().as_bytes(),
    );
    assert_eq!(status, 422);
    assert!(
        String::from_utf8_lossy(&body).contains("revoked or rotated out (at 1000)"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(node.get_json("/api/v1/agents/acme/local").0, 404);
}

/// Revoking the verification empties acme's part of the view, and survives a restart.
fn revoking_the_verification_empties_the_view(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let node = g.node();
    let post_doc = |path: &str, file: &str, auth: &str| g.post_doc(path, file, auth);
    let admin_auth = g.admin_auth.clone();
    let root_path = g.root_path.clone();
    expect(
        dir,
        &[
            "attest",
            "revoke",
            "verified.cbor",
            "--reason",
            "test",
            "--out",
            "revocation.cbor",
        ],
        0,
    );
    expect(
        dir,
        &["attest", "cosign", "revocation.cbor", "--key", "a1.key"],
        0,
    );
    expect(
        dir,
        &["attest", "cosign", "revocation.cbor", "--key", "a2.key"],
        0,
    );
    assert_eq!(
        post_doc("/api/v1/attestations", "revocation.cbor", &admin_auth).0,
        201
    );
    assert_eq!(
        node.get_json("/api/v1/agents").1["agents"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let node = g.node.take().expect("the node runs");
    assert!(node.stop().success());
    let node = Node::start(dir, "n", &[("MERIDIAN_GOVERNANCE_ROOT", &root_path)]);
    assert_eq!(
        node.get_json("/api/v1/agents").1["agents"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(node.get_json("/api/v1/governance/policy").1["version"], 1);
    assert!(node.stop().success());
}

/// A missing root file is refused at startup, naming the setting.
fn a_missing_root_file_stops_the_node(g: &mut GovernedNode) {
    let dir = g.dir.clone();
    let dir = dir.as_path();
    let output = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["node", "run", "--data", "n", "--http", "127.0.0.1:0"])
        .env("MERIDIAN_GOVERNANCE_ROOT", "/nonexistent/root.cbor")
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("governance.root"));
}

#[test]
fn an_unverified_organisations_agents_stay_out_of_the_view() {
    governed_after("unverified_agents_stay_out");
}

#[test]
fn anyone_may_ask_to_register_and_only_an_admin_reviews() {
    governed_after("registration_is_public_and_review_needs_an_admin");
}

#[test]
fn an_approval_counts_with_the_attest_threshold_from_an_admin() {
    governed_after("approval_needs_the_threshold_and_an_admin");
}

#[test]
fn a_policy_keeps_a_denied_agent_out() {
    governed_after("a_policy_denies_an_agent");
}

#[test]
fn malformed_documents_and_a_root_rollback_are_refused() {
    governed_after("bad_documents_are_refused");
}

#[test]
fn a_revoked_organisation_key_publishes_nothing() {
    governed_after("a_revoked_key_publishes_nothing");
}

#[test]
fn revoking_the_verification_empties_the_view_across_a_restart() {
    governed_after("revoking_the_verification_empties_the_view");
}

#[test]
fn a_missing_root_file_stops_the_node_naming_the_setting() {
    governed_after("a_missing_root_file_stops_the_node");
}

#[test]
fn reads_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    expect(dir, &["node", "init", "--data", "n"], 0);
    let token = json(
        dir,
        &["node", "token", "create", "--org", "acme", "--data", "n"],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = Node::start(dir, "n", &[("MERIDIAN_HTTP_READ_AUTH", "true")]);
    assert_eq!(node.get_json("/api/v1/agents").0, 401);
    assert_eq!(node.get_json("/api/v1/registry/heads").0, 401);
    let (status, _, _) = node.request(
        "GET",
        "/api/v1/agents",
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(status, 200);
    // Operations endpoints stay open for probes and scrapers.
    assert_eq!(node.get_json("/health").0, 200);
    assert_eq!(node.request("GET", "/metrics", &[], b"").0, 200);
    assert!(node.stop().success());
}

#[test]
fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Node::start(dir, "n", &[]);
    let (status, doc) = node.get_json("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let cid = meridian_registry::ids::dag_cbor_cid(b"\xf6").to_string();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            let op = &item[method];
            if op.is_null() {
                continue;
            }
            let streams = op["responses"]["200"]["content"]["text/event-stream"].is_object();
            if streams {
                continue; // a stream never ends; the events test covers it
            }
            let concrete = path
                .replace("{org}", "acme")
                .replace("{agent}", "x")
                .replace("{cid}", &cid);
            let (status, _, body) = node.request(&method.to_uppercase(), &concrete, &[], b"");
            let text = String::from_utf8_lossy(&body);
            assert!(
                status != 405 && !text.contains("no such endpoint"),
                "{method} {path} is documented but not routed ({status})"
            );
            checked += 1;
        }
    }
    assert!(checked > 20);
    assert!(node.stop().success());
}

#[test]
fn registration_requests_are_bounded() {
    use meridian_governance::attestation::Registration;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Node::start(
        dir,
        "n",
        &[("MERIDIAN_GOVERNANCE_REGISTRATIONS_PENDING_MAX", "3")],
    );
    let post = |org: &str, seed: u8| {
        let key = meridian_registry::keys::Keypair::from_secret(&[seed; 32]);
        let request = Registration::create(org, "x.example", "ops", &[&key]).unwrap();
        node.request(
            "POST",
            "/api/v1/orgs/registrations",
            &[("content-type", "application/vnd.ipld.dag-cbor")],
            &request.to_block(),
        )
    };
    for (i, org) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(post(org, i as u8 + 1).0, 202);
    }
    // A newer request replaces the organisation's older one, even at the limit.
    assert_eq!(post("a", 9).0, 202);
    // A fourth organisation waits for room.
    let (status, headers, _) = post("d", 4);
    assert_eq!(status, 503);
    assert!(headers.iter().any(|(k, _)| k == "retry-after"));
    let admin = format!("Bearer {}", node.admin);
    let (_, _, body) = node.request(
        "GET",
        "/api/v1/orgs/registrations",
        &[("authorization", &admin)],
        b"",
    );
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let orgs: Vec<&str> = listed["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs.len(), 3, "{orgs:?}");
    let files = std::fs::read_dir(dir.join("n/governance/registrations"))
        .unwrap()
        .count();
    assert_eq!(files, 3, "the replaced request's file is gone too");
    assert!(node.stop().success());
}

#[test]
fn an_imported_successor_updates_only_what_changed_and_every_provenance() {
    let (_guard, dir) = workspace(4);
    build(&dir, "s1.car", None);
    // Next: agent 1 changes, agent 2 goes, agent 9 arrives; agents 0 and 3 stay.
    std::fs::write(
        dir.join("cards/agent-00001.json"),
        card("Agent 1", "translate"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("cards/agent-00002.json")).unwrap();
    std::fs::write(dir.join("cards/agent-00009.json"), card("Agent 9", "plan")).unwrap();
    build(&dir, "s2.car", Some("s1.car"));
    json(
        &dir,
        &["snapshot", "delta", "s1.car", "s2.car", "--out", "d.car"],
    );
    expect(&dir, &["node", "init", "--data", "node-data"], 0);
    let node = Node::start(&dir, "node-data", &[]);
    let (status, body) = node.import(&std::fs::read(dir.join("s1.car")).unwrap());
    assert_eq!(status, 200, "{body}");
    let mut events = open_events(&node, None);
    let (status, body) = node.import(&std::fs::read(dir.join("d.car")).unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["signatures_checked"], 3,
        "only the two new manifests and agent 2's signed removal: {body}"
    );

    let agent = |id: &str| node.get_json(&format!("/api/v1/agents/{id}"));
    assert_eq!(
        agent("acme/agent-1").1["card"]["skills"][0]["id"],
        "translate"
    );
    assert_eq!(agent("acme/agent-2").0, 410, "removed by its organisation");
    assert_eq!(agent("acme/agent-9").1["card"]["skills"][0]["id"], "plan");
    for unchanged in ["acme/agent-0", "acme/agent-3"] {
        let (status, body) = agent(unchanged);
        assert_eq!(status, 200);
        assert_eq!(
            body["provenance"]["seq"], 2,
            "{unchanged} names the new head: {body}"
        );
    }
    let (_, found) = node.get_json("/api/v1/agents?skill=search");
    let found: Vec<&str> = found["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["acme/agent-0", "acme/agent-3"]);
    // One event per agent that changed, then the head: nothing for the two that stayed.
    let kinds: Vec<String> = read_events(&mut events, 4)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    let names = |kind: &str| kinds.iter().filter(|t| t.contains(kind)).count();
    assert_eq!(
        (
            names("agent.changed"),
            names("agent.removed"),
            names("agent.added"),
            names("head.accepted")
        ),
        (1, 1, 1, 1),
        "{kinds:?}"
    );
}
