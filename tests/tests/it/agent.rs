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
