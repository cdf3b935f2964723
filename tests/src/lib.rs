//! The harness of Meridian's end-to-end tests: real `meridian` processes (nodes and hubs) on
//! loopback, spoken to over plain HTTP/1.1, and loopback tripwires that record any connection
//! made to them.
//!
//! This crate sits above every other in the workspace and nothing imports it. Its tests
//! (`tests/it/`) reproduce attacks and operator workflows against the built binary, the way a
//! user would meet them; each crate's own tests cover its internals. Every address used is on
//! 127.0.0.0/8.

pub mod fuzz;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon may take to write its address file after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `meridian` binary under test: `MERIDIAN_BIN` if set, otherwise the one in this
/// target directory, brought up to date once per test process with `cargo build` (a no-op
/// when `cargo test --workspace` has just built it), so a test never runs a stale binary.
pub fn meridian_bin() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("MERIDIAN_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("the test binary knows its path");
            // target/PROFILE/deps/it-HASH -> target/PROFILE/meridian
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary lies in target/PROFILE/deps");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "meridian-node",
                    "--bin",
                    "meridian",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "could not build the meridian binary");
            profile_dir.join("meridian")
        })
        .clone()
}

/// Runs `meridian ARGS` in `dir` to completion.
pub fn meridian(dir: &Path, args: &[&str]) -> Output {
    Command::new(meridian_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("meridian runs")
}

/// Runs `meridian ARGS --json` in `dir`, expects exit 0, and parses what it printed.
pub fn meridian_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.push("--json");
    let output = meridian(dir, &full);
    assert!(
        output.status.success(),
        "meridian {full:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// A running `meridian node run` or `meridian hub run`, killed when dropped.
pub struct Daemon {
    child: Child,
    /// The data directory, relative to the test's directory.
    pub data: String,
    /// `host:port` of its HTTP API.
    pub address: String,
}

/// One HTTP answer: status, headers (names lowercased) and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Daemon {
    /// Starts `meridian ARGS` in `dir` with extra environment variables and waits until it
    /// has written `DATA/http.addr`. Its log goes to `DATA/test.log` (shown if it fails to
    /// start) unless `MERIDIAN_TEST_NODE_LOGS` is set.
    pub fn spawn(dir: &Path, args: &[&str], data: &str, env: &[(&str, &str)]) -> Daemon {
        let data_dir = dir.join(data);
        std::fs::create_dir_all(&data_dir).expect("data directory");
        let addr_file = data_dir.join("http.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut command = Command::new(meridian_bin());
        command
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("MERIDIAN_TEST_NODE_LOGS").is_some() {
                Stdio::inherit()
            } else {
                std::fs::File::create(data_dir.join("test.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from)
            });
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("meridian starts");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && !text.trim().is_empty()
            {
                return Daemon {
                    child,
                    data: data.to_owned(),
                    address: text.trim().to_owned(),
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(data_dir.join("test.log")).unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "meridian {args:?} did not start ({exited:?}); its log ends:\n{}",
                    log.lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `meridian node run --data DATA --http 127.0.0.1:0` with `env`.
    pub fn node(dir: &Path, data: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(
            dir,
            &["node", "run", "--data", data, "--http", "127.0.0.1:0"],
            data,
            env,
        )
    }

    /// `meridian hub run --data DATA` on ephemeral loopback ports, with `env`.
    pub fn hub(dir: &Path, data: &str, env: &[(&str, &str)]) -> Daemon {
        let mut all = vec![
            ("MERIDIAN_HUB_LISTEN", "127.0.0.1:0"),
            ("MERIDIAN_HUB_TRUNK_LISTEN", "127.0.0.1:0"),
        ];
        all.extend_from_slice(env);
        Daemon::spawn(dir, &["hub", "run", "--data", data], data, &all)
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends one request (`connection: close`) and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        http_request(&self.address, method, path, headers, body)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], b"")
    }

    /// A value of the Prometheus metric `name` (the first series of that exact name).
    pub fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8_lossy(&self.get("/metrics").body).into_owned();
        text.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?} at {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM and waits for it to exit (killed after 20 s).
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to `address` with `connection: close`.
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let stream = TcpStream::connect(address).expect("connect");
    request_on(stream, address, method, path, headers, body)
}

/// [`http_request`] from the loopback address `source` (any of 127.0.0.0/8), as a second
/// client of a node would come.
pub fn http_request_from(
    source: std::net::IpAddr,
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let target: SocketAddr = address.parse().expect("an ip:port address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind source");
        socket.connect(target).await.expect("connect")
    });
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    request_on(stream, address, method, path, headers, body)
}

fn request_on(
    mut stream: TcpStream,
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {address}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write head");
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&raw)
}

/// Parses a raw HTTP/1.1 answer.
pub fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            break;
        };
        if size == 0 || body.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 2 + size + 2).min(body.len())..];
    }
    out
}

/// A loopback listener that counts every connection made to it and answers none: what an
/// SSRF test points the code at, then checks saw nothing.
pub struct Tripwire {
    /// Where it listens.
    pub address: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    /// Listens on 127.0.0.1 on a free port, in a background thread.
    pub fn start() -> Tripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tripwire");
        let address = listener.local_addr().expect("tripwire address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Tripwire { address, hits }
    }

    /// Connections made to it so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Base64 (standard alphabet, padded).
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An A2A card whose JSON-RPC endpoint is `url`.
pub fn card(name: &str, url: &str) -> String {
    serde_json::json!({
        "name": name,
        "description": format!("agent {name}"),
        "supportedInterfaces": [{ "url": url, "protocolBinding": "JSONRPC" }],
        "skills": [{ "id": "echo", "name": "echo", "tags": ["echo"] }],
    })
    .to_string()
}

/// A manifest block for `org/name` in `region`, signed by `key`, updated at `updated_at`.
pub fn manifest_block(
    org: &str,
    name: &str,
    region: &str,
    url: &str,
    updated_at: i64,
    key: &meridian_registry::keys::Keypair,
) -> Vec<u8> {
    meridian_registry::manifest::ManifestBody::from_card(&card(name, url), org, region, updated_at)
        .expect("valid card")
        .sign(key)
        .to_block()
}

/// Runs `meridian ARGS` in `dir` and expects success; returns what it printed.
pub fn run_ok(dir: &Path, args: &[&str]) -> String {
    let output = meridian(dir, args);
    assert!(
        output.status.success(),
        "meridian {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A governance root in `dir` with one key per role (`root.key`, `attest.key`, `policy.key`,
/// `witness.key`, every threshold 1), signed, as `root.cbor`.
pub fn one_key_governance(dir: &Path) {
    for name in ["root", "attest", "policy", "witness"] {
        run_ok(dir, &["keys", "generate", "--out", &format!("{name}.key")]);
    }
    run_ok(
        dir,
        &[
            "gov",
            "init",
            "--root-key",
            "root.key",
            "--root-threshold",
            "1",
            "--attest-key",
            "attest.key",
            "--attest-threshold",
            "1",
            "--policy-key",
            "policy.key",
            "--witness-key",
            "witness.key",
            "--out",
            "root.cbor",
        ],
    );
    run_ok(dir, &["gov", "sign", "root.cbor", "--key", "root.key"]);
}

/// acme's `org.verified` attestation at `out`, for the key file `key`: a registration request
/// signed by the key, approved, and co-signed by `attest.key` (of [`one_key_governance`]).
pub fn verify_acme(dir: &Path, key: &str, out: &str) {
    run_ok(
        dir,
        &[
            "org",
            "request",
            "--org",
            "acme",
            "--domain",
            "acme.example",
            "--contact",
            "ops@acme.example",
            "--key",
            key,
            "--out",
            "acme.request.cbor",
        ],
    );
    run_ok(dir, &["org", "approve", "acme.request.cbor", "--out", out]);
    run_ok(dir, &["attest", "cosign", out, "--key", "attest.key"]);
}

/// The key pair in a key file under `dir`.
pub fn key_file(dir: &Path, file: &str) -> meridian_registry::keys::Keypair {
    let text = std::fs::read_to_string(dir.join(file)).expect("key file");
    meridian_registry::keys::Keypair::from_key_file(&text).expect("a key file")
}

/// The did:key of a key file (`meridian keys show`).
pub fn did(dir: &Path, key_file: &str) -> String {
    meridian_json(dir, &["keys", "show", key_file])["did"]
        .as_str()
        .expect("keys show prints a did")
        .to_owned()
}

/// Creates an admin token in `DATA`.
pub fn admin_token(dir: &Path, data: &str) -> String {
    meridian_json(dir, &["node", "token", "create", "--admin", "--data", data])["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// POSTs `body` of media type `media` to `path` with an admin bearer token.
pub fn post_as_admin(node: &Daemon, admin: &str, path: &str, media: &str, body: &[u8]) -> Answer {
    node.request(
        "POST",
        path,
        &[
            ("content-type", media),
            ("authorization", &format!("Bearer {admin}")),
        ],
        body,
    )
}

/// Creates a publish token for `org` in `DATA`.
pub fn org_token(dir: &Path, data: &str, org: &str) -> String {
    meridian_json(
        dir,
        &["node", "token", "create", "--org", org, "--data", data],
    )["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Binds organisation `org` on node data directory `data` to `key` (a did:key) with
/// `meridian node names pin`, as an operator does; a running node applies it within seconds.
pub fn pin_name(dir: &Path, data: &str, org: &str, key: &str) {
    meridian_json(
        dir,
        &["node", "names", "pin", org, "--key", key, "--data", data],
    );
}

/// Publishes a manifest block through a node's API with an organisation token; returns the
/// answer.
pub fn publish(node: &Daemon, token: &str, manifest: &[u8]) -> Answer {
    let body = serde_json::json!({ "manifest": b64(manifest) }).to_string();
    node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        body.as_bytes(),
    )
}

/// Publishes `acme/echo` (signed by a key made from `seed`, endpoint on `agents.example`)
/// through `node`, with a new token of `DATA`; returns the manifest block.
pub fn publish_sample(dir: &Path, node: &Daemon, seed: u8) -> Vec<u8> {
    let token = org_token(dir, &node.data, "acme");
    let key = meridian_registry::keys::Keypair::from_secret(&[seed; 32]);
    let manifest = manifest_block(
        "acme",
        "echo",
        "local",
        "https://agents.example/echo",
        1_800_000_000,
        &key,
    );
    let answer = publish(node, &token, &manifest);
    assert_eq!(answer.status, 201, "publish: {:?}", answer.json());
    manifest
}

/// The first QUIC multiaddr in `DATA/mesh.addr`, waiting for the node to write it.
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
            started.elapsed() < START_TIMEOUT,
            "no mesh address in {data}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node's own did:key (from `/ready`).
pub fn node_did(node: &Daemon) -> String {
    node.get("/ready").json()["node"]
        .as_str()
        .expect("/ready names the node")
        .to_owned()
}

/// One answer an [`HttpsSite`] gives for a path. A 200 page with an `ETag` header answers a
/// request whose `If-None-Match` names that tag with 304 and no body.
#[derive(Debug, Clone)]
pub struct Page {
    /// The status.
    pub status: u16,
    /// Extra headers (`Location`, say).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A website on loopback serving HTTPS for one domain, with a certificate issued by a test
/// certificate authority of its own (give its PEM, [`HttpsSite::ca_pem`], as an extra trusted
/// root): what an organisation's domain looks like to Meridian in tests, reached through a
/// resolver override. It answers pages set with [`HttpsSite::serve`] (404 otherwise) and
/// counts the requests it took.
pub struct HttpsSite {
    address: SocketAddr,
    ca_pem: String,
    pages: Arc<std::sync::Mutex<std::collections::HashMap<String, Page>>>,
    requests: Arc<AtomicUsize>,
}

impl HttpsSite {
    /// A site for `domain` on 127.0.0.1 (a new test CA and certificate every time).
    pub fn start(domain: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Meridian test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec![domain.to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let pages: Arc<std::sync::Mutex<std::collections::HashMap<String, Page>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (pages.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, served, counted) = (config.clone(), served.clone(), counted.clone());
                std::thread::spawn(move || {
                    let _ = answer_tls(stream, config, &served, &counted);
                });
            }
        });
        Self {
            address,
            ca_pem: ca.pem(),
            pages,
            requests,
        }
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Answers `path` with `page` from now on.
    pub fn serve(&self, path: &str, page: Page) {
        self.pages
            .lock()
            .expect("pages")
            .insert(path.to_owned(), page);
    }

    /// Requests it has answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves one TLS connection: reads one request head and answers it from `pages`.
fn answer_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    pages: &std::sync::Mutex<std::collections::HashMap<String, Page>>,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if tls.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let page = pages.lock().expect("pages").get(&path).cloned();
    let mut page = page.unwrap_or(Page {
        status: 404,
        headers: Vec::new(),
        body: b"not found".to_vec(),
    });
    // A page with an ETag answers a request that names it with 304 and no body.
    let etag = page
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
        .map(|(_, value)| value.clone());
    let asked = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("if-none-match")
            .then(|| value.trim().to_owned())
    });
    if page.status == 200 && etag.is_some() && etag == asked {
        page.status = 304;
        page.body.clear();
    }
    let mut answer = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        page.status,
        page.body.len()
    );
    for (name, value) in &page.headers {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    tls.write_all(answer.as_bytes())?;
    tls.write_all(&page.body)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}

/// A plain-HTTP site on 127.0.0.1 that answers each `(path, content type, body)` with 200 and
/// anything else with 404, one request per connection: a node or registry that says exactly
/// what a test makes it say (a lying one, say). Returns its base URL.
pub fn fixed_site(pages: Vec<(String, &'static str, Vec<u8>)>) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 8192];
            let read = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..read]);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let page = pages.iter().find(|(p, _, _)| *p == path);
            let (status, media, body) = match page {
                Some((_, media, body)) => ("200 OK", *media, body.as_slice()),
                None => ("404 Not Found", "text/plain", b"not found".as_slice()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: {media}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    format!("http://{address}")
}
