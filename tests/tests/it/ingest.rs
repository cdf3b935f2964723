//! Ingestion from an organisation's own site (ARD §5.2): a node holding acme's key polls
//! acme's `/.well-known/ard.json` on its bound domain (a loopback HTTPS site reached through
//! `domains.resolve`), publishes the A2A cards it lists, skips other entry types, reports a bad
//! entry without letting it change anything, asks conditionally, publishes a changed card again,
//! unpublishes an agent the manifest drops, and keeps everything when the document is bad.

use std::time::Duration;

use meridian_tests::*;

const DOMAIN: &str = "acme.example";
const SOURCE: &str = "https://acme.example/.well-known/ard.json";

fn page(etag: &str, body: String) -> Page {
    Page {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("etag".into(), format!("\"{etag}\"")),
        ],
        body: body.into_bytes(),
    }
}

fn manifest(entries: &[(&str, &str)]) -> String {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(kind, url)| serde_json::json!({ "type": kind, "url": url, "displayName": url }))
        .collect();
    serde_json::json!({ "entries": entries }).to_string()
}

fn report(node: &Daemon) -> serde_json::Value {
    node.get("/api/v1/ingest").json()["sources"][0].clone()
}

#[test]
fn a_node_publishes_what_the_organisations_site_lists_and_follows_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    run_ok(
        dir,
        &[
            "org",
            "bind-domain",
            "--org",
            "acme",
            "--domain",
            DOMAIN,
            "--key",
            "acme.key",
            "--out",
            "proof.json",
        ],
    );
    let site = HttpsSite::start(DOMAIN);
    std::fs::write(dir.join("ca.pem"), site.ca_pem()).unwrap();
    site.serve(
        "/.well-known/meridian-org.json",
        page(
            "p",
            std::fs::read_to_string(dir.join("proof.json")).unwrap(),
        ),
    );
    let a2a = "application/a2a-agent-card+json";
    site.serve(
        "/cards/echo.json",
        page("e1", card("Echo", "https://acme.example/a2a/echo")),
    );
    site.serve(
        "/cards/weather.json",
        page("w1", card("Weather", "https://acme.example/a2a/weather")),
    );
    site.serve("/cards/broken.json", page("b1", "{\"name\": 7}".into()));
    let listed = manifest(&[
        (a2a, "/cards/echo.json"),
        (a2a, "../cards/weather.json"),
        ("application/mcp-server+json", "/mcp/tools.json"),
        (a2a, "/cards/missing.json"),
        (a2a, "/cards/broken.json"),
    ]);
    site.serve("/.well-known/ard.json", page("m1", listed));
    let resolve = format!("{DOMAIN}={}", site.address());
    let roots = dir.join("ca.pem").display().to_string();
    let key = dir.join("acme.key").display().to_string();
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_DOMAINS_RESOLVE", resolve.as_str()),
            ("MERIDIAN_DOMAINS_EXTRA_ROOTS", roots.as_str()),
            ("MERIDIAN_INGEST_ORG", "acme"),
            ("MERIDIAN_INGEST_ORG_KEY", key.as_str()),
            ("MERIDIAN_INGEST_SOURCES", SOURCE),
            ("MERIDIAN_INGEST_INTERVAL_SECS", "1"),
        ],
    );
    // Not bound to its domain yet: nothing is read.
    node.wait_for("a first poll", Duration::from_secs(15), || {
        let errors = report(&node)["errors"].to_string();
        errors.contains("not bound to a domain").then_some(())
    });
    assert_eq!(node.get("/api/v1/agents/acme/echo").status, 404);

    let token = org_token(dir, "n", "acme");
    let bound = node.request(
        "POST",
        "/api/v1/names/acme/domain",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        br#"{"domain":"acme.example"}"#,
    );
    assert_eq!(bound.status, 200, "{:?}", bound.json());
    // The poll that publishes them reports when it is done with every entry.
    node.wait_for("the cards published", Duration::from_secs(20), || {
        let published = node.metric("meridian_ingest_entries_total{result=\"published\"}");
        (published == 2.0 && report(&node)["outcome"] != "failed").then_some(())
    });
    assert_eq!(node.get("/api/v1/agents/acme/weather").status, 200);
    // The last poll: a first read, or a 304 that reads the listed cards again, conditionally.
    let first = report(&node);
    assert_eq!(first["url"], SOURCE);
    assert!(
        first["outcome"] == "ok" || first["outcome"] == "unchanged",
        "{first}"
    );
    assert_eq!(first["skipped"], 1, "{first}");
    let errors = first["errors"].to_string();
    assert!(
        errors.contains("missing.json: HTTP 404") && errors.contains("broken.json"),
        "{errors}"
    );
    let echo = node.get("/api/v1/agents/acme/echo").json();
    assert_eq!(
        echo["manifest"]["signer"],
        did(dir, "acme.key"),
        "signed with acme's key"
    );
    assert_eq!(
        echo["provenance"]["ard"]["identifier"],
        "urn:air:acme.example:acme:echo"
    );

    // Unchanged documents are asked for conditionally: 304, nothing published.
    node.wait_for("a conditional poll", Duration::from_secs(15), || {
        (report(&node)["outcome"] == "unchanged").then_some(())
    });
    let seq = |node: &Daemon| node.get("/api/v1/registry/heads").json()["heads"][0]["seq"].as_u64();
    let before = seq(&node);

    // The site changes: echo's card is new, weather is gone from the manifest.
    let new_echo = card("Echo", "https://acme.example/a2a/echo-v2");
    site.serve("/cards/echo.json", page("e2", new_echo));
    site.serve(
        "/.well-known/ard.json",
        page("m2", manifest(&[(a2a, "/cards/echo.json")])),
    );
    node.wait_for("weather unpublished", Duration::from_secs(20), || {
        (node.get("/api/v1/agents/acme/weather").status == 410).then_some(())
    });
    node.wait_for("echo's new card", Duration::from_secs(20), || {
        let agent = node.get("/api/v1/agents/acme/echo").json();
        (agent["card"]["supportedInterfaces"][0]["url"] == "https://acme.example/a2a/echo-v2")
            .then_some(())
    });
    assert!(seq(&node) > before);
    assert!(node.metric("meridian_ingest_entries_total{result=\"removed\"}") >= 1.0);

    // A document that is not a manifest changes nothing.
    site.serve(
        "/.well-known/ard.json",
        page("m3", "<html>oops</html>".into()),
    );
    node.wait_for("the bad document reported", Duration::from_secs(15), || {
        (report(&node)["outcome"] == "failed").then_some(())
    });
    assert!(report(&node)["errors"].to_string().contains("not JSON"));
    assert_eq!(
        node.get("/api/v1/agents/acme/echo").status,
        200,
        "nothing removed"
    );
}
