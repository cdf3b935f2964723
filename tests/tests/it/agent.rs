//! Publishing from the command line: `meridian agent sign` makes the body the publish API
//! takes, `meridian agent publish` signs and posts it.

use meridian_tests::*;

#[test]
fn an_agent_card_is_signed_and_published_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    std::fs::write(
        dir.join("echo.json"),
        card("echo", "https://acme.example/echo"),
    )
    .unwrap();
    let node = Daemon::node(dir, "n", &[]);
    let token = org_token(dir, "n", "acme");
    let manifest_args = [
        "--card",
        "echo.json",
        "--org",
        "acme",
        "--region",
        "local",
        "--org-key",
        "acme.key",
    ];
    // The body, as curl would send it.
    let mut sign = vec![
        "agent",
        "sign",
        "--updated-at",
        "1800000000",
        "--out",
        "body.json",
    ];
    sign.extend_from_slice(&manifest_args);
    run_ok(dir, &sign);
    let body = std::fs::read(dir.join("body.json")).unwrap();
    let answer = node.request(
        "POST",
        "/api/v1/agents",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        &body,
    );
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    // A newer version, published directly.
    let url = node.url();
    let mut publish = vec![
        "agent",
        "publish",
        "--node",
        url.as_str(),
        "--token",
        token.as_str(),
    ];
    publish.extend_from_slice(&manifest_args);
    let published = meridian_json(dir, &publish);
    assert_eq!(published["agent_id"], "acme/echo");
    assert_eq!(published["seq"], 2);
    // A card that is not one is refused before anything is sent (exit 1, the file named).
    std::fs::write(dir.join("bad.json"), r#"{"name": 5}"#).unwrap();
    let output = meridian(
        dir,
        &[
            "agent",
            "sign",
            "--card",
            "bad.json",
            "--org",
            "acme",
            "--region",
            "local",
            "--org-key",
            "acme.key",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.json"));
    // A wrong token is a refusal with the node's reason.
    let mut wrong = vec![
        "agent",
        "publish",
        "--node",
        url.as_str(),
        "--token",
        "mrd_nope",
    ];
    wrong.extend_from_slice(&manifest_args);
    let output = meridian(dir, &wrong);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}

/// Serves `body` as `GET /card.json` (and 404 for anything else) on loopback; returns its
/// address and the number of requests it answered.
fn card_site(
    body: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 2048];
            let n = stream.read(&mut head).unwrap_or(0);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let found = String::from_utf8_lossy(&head[..n]).starts_with("GET /card.json ");
            let (status, body) = if found {
                ("200 OK", body.as_str())
            } else {
                ("404 Not Found", "")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (address, served)
}

#[test]
fn a_card_is_fetched_from_its_url_through_the_ssrf_guard() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    let (address, served) = card_site(card("echo", "https://acme.example/echo"));
    let url = format!("http://{address}/card.json");
    let sign = |card: &str, extra: &[&str]| {
        let mut args = vec![
            "--json",
            "agent",
            "sign",
            "--card",
            card,
            "--org",
            "acme",
            "--region",
            "local",
            "--org-key",
            "acme.key",
        ];
        args.extend_from_slice(extra);
        meridian(dir, &args)
    };
    // The guard refuses a loopback address unless told otherwise: nothing is sent.
    let refused = sign(&url, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("--allow-private"));
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Allowed: the card is fetched and signed like a file.
    let signed = sign(&url, &["--allow-private"]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(said["agent_id"], "acme/echo");
    // A missing card is an error naming the status.
    let missing = sign(
        &format!("http://{address}/nothing.json"),
        &["--allow-private"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("HTTP 404"));
}
