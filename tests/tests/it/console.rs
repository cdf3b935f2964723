//! The web console, served by nodes and hubs at `/console/`: the page and its assets come from
//! the binary with a strict Content-Security-Policy and no inline script, revalidate by ETag,
//! hold no secret, and every view is a link. And the JSON endpoints its pages read: a node's
//! federation view and governance (organisations, root history, approval drafts), a hub's
//! statistics.

use meridian_tests::*;

#[test]
fn a_node_serves_its_console_offline_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "c", &[]);
    let moved = node.get("/console");
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("/console/"));

    // Any view is the same page: the query picks what it shows.
    let page = node.get("/console/?q=echo&status=active");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    // Scripts only from the node itself, none inline; nothing from another origin.
    assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("http://") && !html.contains("https://"));
    for label in [
        r#"<label for="q">"#,
        r#"<label for="status">"#,
        r#"lang="en""#,
    ] {
        assert!(html.contains(label), "accessible markup: {label}");
    }

    // The assets revalidate by their strong ETag.
    for (path, media) in [
        ("/console/app.js", "text/javascript"),
        ("/console/common.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let asset = node.get(path);
        assert_eq!(asset.status, 200);
        assert!(asset.header("content-type").unwrap().starts_with(media));
        let etag = asset.header("etag").unwrap().to_owned();
        let again = node.request("GET", path, &[("if-none-match", etag.as_str())], b"");
        assert_eq!(again.status, 304);
        let body = String::from_utf8(asset.body.clone()).unwrap();
        assert!(!body.contains("mrd_"), "no token in {path}");
    }
    // Third-party card text is only ever set as text.
    for path in ["/console/app.js", "/console/common.js"] {
        let script = String::from_utf8(node.get(path).body).unwrap();
        assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
    }
    assert_eq!(node.get("/console/nothing.js").status, 404);
}

#[test]
fn a_hub_serves_its_console_and_the_statistics_it_draws() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(dir, &["hub", "init", "--data", "h", "--region", "local"]);
    let hub = Daemon::hub(dir, "h", &[]);
    let page = hub.get("/console/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/hub.js"></script>"#));
    assert_eq!(hub.get("/console").status, 308);
    for path in [
        "/console/hub.js",
        "/console/common.js",
        "/console/style.css",
    ] {
        let asset = hub.get(path);
        assert_eq!(asset.status, 200, "{path}");
        let etag = asset.header("etag").unwrap().to_owned();
        assert_eq!(
            hub.request("GET", path, &[("if-none-match", etag.as_str())], b"")
                .status,
            304
        );
    }
    // The figures, for a lone hub nobody has called yet.
    let stats = hub.get("/v1/stats");
    assert_eq!(stats.status, 200);
    assert_eq!(stats.header("cache-control"), Some("no-store"));
    let stats = stats.json();
    assert_eq!(stats["region"], "local");
    assert_eq!(stats["did"], did(dir, "h/hub.key"));
    assert_eq!(stats["trunks"], serde_json::json!([]));
    assert_eq!(stats["cache"]["hits"], 0);
    assert!(stats["cache"]["hit_rate"].is_null(), "no lookups: no rate");
    assert!(stats["cache"]["capacity_bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["relays"]["in_flight"], 0);
    assert!(stats["relays"]["max"].as_u64().unwrap() > 0);
    assert_eq!(stats["governed"], false);
    // A block nobody has is a miss, and the page's hit rate counts it.
    let miss = hub.get("/v1/blocks/bafyr4iaetkbgfafhqcaakdy2zc3cehfv3gqtm2g3lt6t5gztwz5rjb6ihq");
    assert_eq!(miss.status, 404);
    let stats = hub.get("/v1/stats").json();
    assert_eq!(stats["cache"]["misses"], 1, "{stats:#}");
    assert_eq!(stats["cache"]["hit_rate"], 0.0);
}

#[test]
fn a_node_reports_its_federation_view() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "n", &[]);
    publish_sample(dir, &node, 7);
    let view = node.wait_for(
        "the mesh's first report",
        std::time::Duration::from_secs(20),
        || {
            let view = node.get("/api/v1/federation").json();
            view["updated_at"].is_i64().then_some(view)
        },
    );
    assert_eq!(view["mesh"], true);
    assert_eq!(view["peers"], serde_json::json!([]), "a lone node");
    let publishers = view["publishers"].as_array().unwrap();
    assert_eq!(publishers.len(), 1, "{view:#}");
    assert_eq!(publishers[0]["publisher"], node_did(&node));
    assert_eq!(publishers[0]["own"], true);
    assert_eq!(publishers[0]["seq"], 1);
    assert_eq!(publishers[0]["lag"], 0);
    assert_eq!(view["invalid_total"], 0);
    assert_eq!(view["bans_total"], 0);
    assert!(view["hub"].is_null(), "no hub configured");
    assert!(view["syncs"].as_array().unwrap().is_empty());

    // Without governance, an agent's provenance is its name's binding.
    let checked = node.get("/api/v1/agents/acme/echo/provenance").json();
    assert_eq!(checked["governance"], false);
    assert_eq!(checked["verdict"]["accepted"], true);
    assert_eq!(
        checked["manifest"],
        node.get("/api/v1/agents/acme/echo").json()["manifest"]["cid"],
        "the manifest the node serves"
    );
    let signer = meridian_registry::keys::Keypair::from_secret(&[7; 32]).did();
    assert_eq!(checked["signer"], signer);
    assert_eq!(checked["keys"]["current"], serde_json::json!([signer]));
    assert_eq!(checked["keys"]["signer_current"], true);
    assert_eq!(checked["keys"]["binding"]["how"], "first-use");
    let unknown = node.get("/api/v1/agents/acme/nobody/provenance");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "unknown_agent");
}

#[test]
fn the_governance_page_reads_organisations_root_history_and_drafts_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Governance off: the endpoints say so.
    let plain = Daemon::node(dir, "plain", &[]);
    let off = plain.get("/api/v1/governance/orgs");
    assert_eq!(off.status, 404);
    assert_eq!(off.json()["error"]["code"], "governance_off");
    drop(plain);

    one_key_governance(dir);
    let root = dir.join("root.cbor").display().to_string();
    run_ok(dir, &["node", "init", "--data", "g"]);
    let admin = admin_token(dir, "g");
    let acme_token = org_token(dir, "g", "acme");
    let node = Daemon::node(dir, "g", &[("MERIDIAN_GOVERNANCE_ROOT", root.as_str())]);
    let history = node.get("/api/v1/governance/root").json()["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history[0]["version"], 1);
    assert_eq!(history[0]["thresholds"]["attest"], "1 of 1");
    assert_eq!(
        node.get("/api/v1/governance/orgs").json()["orgs"],
        serde_json::json!([])
    );

    // umbrella asks to join; an admin drafts its approval.
    run_ok(dir, &["keys", "generate", "--out", "umbrella.key"]);
    run_ok(
        dir,
        &[
            "org",
            "request",
            "--org",
            "umbrella",
            "--domain",
            "umbrella.example",
            "--contact",
            "ops@umbrella.example",
            "--key",
            "umbrella.key",
            "--out",
            "umbrella.request.cbor",
        ],
    );
    let request = std::fs::read(dir.join("umbrella.request.cbor")).unwrap();
    let sent = node.request(
        "POST",
        "/api/v1/orgs/registrations",
        &[("content-type", "application/vnd.ipld.dag-cbor")],
        &request,
    );
    assert_eq!(sent.status, 202);
    let id = sent.json()["id"].as_str().unwrap().to_owned();
    let draft_path = format!("/api/v1/orgs/registrations/{id}/approval");
    let as_admin = |path: &str, token: &str| {
        node.request(
            "GET",
            path,
            &[("authorization", &format!("Bearer {token}"))],
            b"",
        )
    };
    // Only an admin drafts, for a registration held here, with a sane expiry.
    assert_eq!(node.get(&draft_path).status, 401);
    let refused = as_admin(&draft_path, &acme_token);
    assert_eq!(
        refused.status, 403,
        "an organisation's token is not an admin's"
    );
    let unknown = as_admin("/api/v1/orgs/registrations/bafynothing/approval", &admin);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "unknown_registration");
    for bad in ["0", "3651"] {
        let answer = as_admin(&format!("{draft_path}?expires_in_days={bad}"), &admin);
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.json()["error"]["code"], "bad_expiry");
    }
    let draft = as_admin(&format!("{draft_path}?expires_in_days=30"), &admin);
    assert_eq!(draft.status, 200);
    assert_eq!(
        draft.header("content-disposition"),
        Some(r#"attachment; filename="umbrella.verified.cbor""#)
    );
    std::fs::write(dir.join("umbrella.verified.cbor"), &draft.body).unwrap();
    // Unsigned, the draft is refused; co-signed by the attest admin, it takes effect.
    let unsigned = post_as_admin(
        &node,
        &admin,
        "/api/v1/attestations",
        "application/vnd.ipld.dag-cbor",
        &draft.body,
    );
    assert_eq!(unsigned.status, 422, "{:?}", unsigned.json());
    let listed = |node: &Daemon| {
        node.request(
            "GET",
            "/api/v1/orgs/registrations",
            &[("authorization", &format!("Bearer {admin}"))],
            b"",
        )
        .json()["registrations"][0]
            .clone()
    };
    assert_eq!(listed(&node)["status"], "pending");
    run_ok(
        dir,
        &[
            "attest",
            "cosign",
            "umbrella.verified.cbor",
            "--key",
            "attest.key",
        ],
    );
    let signed = std::fs::read(dir.join("umbrella.verified.cbor")).unwrap();
    let added = post_as_admin(
        &node,
        &admin,
        "/api/v1/attestations",
        "application/vnd.ipld.dag-cbor",
        &signed,
    );
    assert_eq!(added.status, 201, "{:?}", added.json());
    let approval = added.json()["id"].clone();
    let registration = listed(&node);
    assert_eq!(registration["status"], "approved");
    assert_eq!(registration["answer"], approval);
    let orgs = node.get("/api/v1/governance/orgs").json()["orgs"].clone();
    assert_eq!(orgs[0]["org"], "umbrella");
    assert_eq!(orgs[0]["status"], "verified");
    assert_eq!(orgs[0]["keys"][0], did(dir, "umbrella.key"));
    assert_eq!(orgs[0]["denied"], false);
    let until = orgs[0]["verified_until"].as_i64().unwrap();
    let issued = orgs[0]["attestations"][0]["issued_at"].as_i64().unwrap();
    assert_eq!(until - issued, 30 * 86_400, "the expiry asked for");

    // umbrella publishes; the agent page's checked provenance: the rule's verdict, the keys
    // and their history.
    let token = org_token(dir, "g", "umbrella");
    let key = key_file(dir, "umbrella.key");
    let manifest = manifest_block(
        "umbrella",
        "shield",
        "local",
        "https://agents.example/shield",
        1_800_000_000,
        &key,
    );
    assert_eq!(publish(&node, &token, &manifest).status, 201);
    let checked = node.get("/api/v1/agents/umbrella/shield/provenance").json();
    assert_eq!(checked["governance"], true);
    assert_eq!(checked["verdict"]["accepted"], true, "{checked:#}");
    assert_eq!(checked["verdict"]["checks"].as_array().unwrap().len(), 5);
    assert_eq!(checked["keys"]["current"], serde_json::json!([key.did()]));
    assert_eq!(checked["keys"]["threshold"], 1);
    assert_eq!(checked["keys"]["signer_current"], true);
    let history = checked["keys"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{checked:#}");
    assert_eq!(history[0]["document"], approval);
    assert_eq!(
        history[0]["change"],
        format!("org.verified: keys [{}]", key.did())
    );
    assert_eq!(history[0]["state"], "in force");
    assert!(history[0]["key_log"].is_null());
    assert_eq!(checked["key_log_required"], false);
}
