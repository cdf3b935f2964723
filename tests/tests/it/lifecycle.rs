//! An agent's life cycle from the command line: its organisation deprecates it (naming a
//! successor), the signed deprecation travels to a mirror, ranks the agent below every active
//! one and marks its card and calls; a newer version undoes it; `unpublish` withdraws it. The
//! command signs only a manifest it has checked, whatever the node it reads from says.

use std::time::Duration;

use meridian_registry::keys::Keypair;
use meridian_tests::*;

const URL: &str = "https://agents.example/echo";
const T0: i64 = 1_800_000_000;

fn ids(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    answer.json()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap().to_owned())
        .collect()
}

fn deprecate(
    dir: &std::path::Path,
    node: &Daemon,
    key: &str,
    token: &str,
    successor: &str,
) -> std::process::Output {
    meridian(
        dir,
        &[
            "agent",
            "deprecate",
            "acme/echo",
            "--superseded-by",
            successor,
            "--org-key",
            key,
            "--node",
            &node.url(),
            "--token",
            token,
        ],
    )
}

#[test]
fn a_deprecation_travels_to_mirrors_ranks_the_agent_last_and_a_new_version_undoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let acme = Keypair::from_secret(&[41; 32]);
    let thief = Keypair::from_secret(&[42; 32]);
    for (file, key) in [("acme.key", &acme), ("thief.key", &thief)] {
        meridian_registry::files::write_secret(&dir.join(file), key.to_key_file().as_bytes())
            .unwrap();
    }
    let origin = Daemon::node(dir, "origin", &[]);
    let token = org_token(dir, "origin", "acme");
    for name in ["echo", "echo next"] {
        let block = manifest_block("acme", name, "local", URL, T0, &acme);
        assert_eq!(publish(&origin, &token, &block).status, 201);
    }
    let mirror = Daemon::node(
        dir,
        "mirror",
        &[("MERIDIAN_MESH_BOOTSTRAP", mesh_addr(dir, "origin").as_str())],
    );
    mirror.wait_for("the agents mirrored", Duration::from_secs(30), || {
        (mirror.get("/api/v1/agents/acme/echo-next").status == 200).then_some(())
    });
    // Active, the exact name ranks first.
    let ranked = "/api/v1/agents?q=echo&sort=relevance";
    assert_eq!(ids(&mirror.get(ranked)), ["acme/echo", "acme/echo-next"]);

    // Refused before anything is signed: an agent cannot succeed itself.
    let itself = deprecate(dir, &origin, "acme.key", &token, "acme/echo");
    assert_eq!(itself.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&itself.stderr).contains("itself"));
    // A deprecation signed by a key the name is not bound to is refused by the node.
    let stolen = deprecate(dir, &origin, "thief.key", &token, "acme/echo-next");
    assert_eq!(stolen.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stolen.stderr);
    assert!(stderr.contains("409"), "{stderr}");
    assert_eq!(
        origin.get("/api/v1/agents/acme/echo").json()["status"],
        "active"
    );

    let done = deprecate(dir, &origin, "acme.key", &token, "acme/echo-next");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let agent = origin.get("/api/v1/agents/acme/echo").json();
    assert_eq!(agent["status"], "deprecated", "{agent}");
    assert_eq!(agent["superseded_by"], "acme/echo-next");
    assert_eq!(
        agent["updated_at"],
        T0 + 1,
        "after the version it deprecates"
    );

    // It reaches the mirror, signed: deprecated, ranked after the active agent, filterable.
    mirror.wait_for("the deprecation mirrored", Duration::from_secs(30), || {
        (mirror.get("/api/v1/agents/acme/echo").json()["status"] == "deprecated").then_some(())
    });
    assert_eq!(ids(&mirror.get(ranked)), ["acme/echo-next", "acme/echo"]);
    assert_eq!(
        ids(&mirror.get("/api/v1/agents?q=echo&status=active")),
        ["acme/echo-next"]
    );
    assert_eq!(
        ids(&mirror.get("/api/v1/agents?status=deprecated")),
        ["acme/echo"]
    );
    // Facets count every match, not one page.
    let counted = mirror.get("/api/v1/agents?q=echo&sort=relevance&limit=1&facets=status,org");
    assert_eq!(counted.status, 200);
    let facets = &counted.json()["facets"];
    assert_eq!(
        facets["status"],
        serde_json::json!([{ "value": "active", "count": 1 }, { "value": "deprecated", "count": 1 }])
    );
    assert_eq!(
        facets["org"],
        serde_json::json!([{ "value": "acme", "count": 2 }])
    );
    assert_eq!(mirror.get("/api/v1/agents?facets=colour").status, 400);
    let bad = mirror.get("/api/v1/agents?status=gone");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_query");
    // Its card says so, and points to the successor through the node.
    let card = mirror.get("/a2a/acme/echo/.well-known/agent-card.json");
    assert_eq!(card.status, 200);
    assert_eq!(
        card.header("deprecation"),
        Some(format!("@{}", T0 + 1).as_str())
    );
    assert_eq!(
        card.header("link"),
        Some("</a2a/acme/echo-next/.well-known/agent-card.json>; rel=\"successor-version\"")
    );
    assert_eq!(
        mirror
            .get("/a2a/acme/echo-next/.well-known/agent-card.json")
            .header("deprecation"),
        None
    );
    let shown = run_ok(
        dir,
        &["agent", "show", "acme/echo", "--node", &mirror.url()],
    );
    assert!(
        shown.contains("DEPRECATED by its organisation: use acme/echo-next"),
        "{shown}"
    );

    // A newer version of the card is active again, everywhere.
    let again = manifest_block("acme", "echo", "local", URL, T0 + 100, &acme);
    assert_eq!(publish(&origin, &token, &again).status, 200);
    mirror.wait_for("the new version mirrored", Duration::from_secs(30), || {
        (mirror.get("/api/v1/agents/acme/echo").json()["status"] == "active").then_some(())
    });
    assert_eq!(ids(&mirror.get(ranked)), ["acme/echo", "acme/echo-next"]);

    // `unpublish` withdraws it: 410 on the mirror too.
    let removed_at = (T0 + 200).to_string();
    run_ok(
        dir,
        &[
            "agent",
            "unpublish",
            "acme/echo",
            "--region",
            "local",
            "--org-key",
            "acme.key",
            "--updated-at",
            &removed_at,
            "--node",
            &origin.url(),
            "--token",
            &token,
        ],
    );
    mirror.wait_for("the removal mirrored", Duration::from_secs(30), || {
        (mirror.get("/api/v1/agents/acme/echo").status == 410).then_some(())
    });
}

/// `meridian agent deprecate acme/echo` reading from `node`, writing the body to `body.json`.
fn deprecate_to_file(node: &str) -> [&str; 9] {
    [
        "agent",
        "deprecate",
        "acme/echo",
        "--org-key",
        "acme.key",
        "--node",
        node,
        "--out",
        "body.json",
    ]
}

/// `meridian agent deprecate` signs nothing a node made up: the block must hash to the CID the
/// node names, be signed by its signer, and be the agent's manifest.
#[test]
fn deprecate_refuses_a_manifest_the_node_made_up() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let acme = Keypair::from_secret(&[41; 32]);
    meridian_registry::files::write_secret(&dir.join("acme.key"), acme.to_key_file().as_bytes())
        .unwrap();
    let echo = manifest_block("acme", "echo", "local", URL, T0, &acme);
    let other = manifest_block("acme", "other", "local", URL, T0, &acme);
    let cid = |block: &[u8]| meridian_registry::ids::dag_cbor_cid(block).to_string();
    // A signature that does not cover the block: the last byte of `sig` flipped is still a
    // well-formed manifest (`sig` is not the last field, so flip inside the signature).
    let forged = {
        let mut manifest = meridian_registry::manifest::Manifest::decode(&echo).unwrap();
        manifest.sig[0] ^= 1;
        manifest.to_block()
    };
    let lie = |named: &[u8], served: &[u8]| {
        let view = serde_json::json!({ "manifest": { "cid": cid(named) } }).to_string();
        fixed_site(vec![
            (
                "/api/v1/agents/acme/echo".into(),
                "application/json",
                view.into_bytes(),
            ),
            (
                format!("/api/v1/blocks/{}", cid(named)),
                "application/octet-stream",
                served.to_vec(),
            ),
        ])
    };
    for (named, served, why) in [
        (&echo, &other, "does not hash to it"),
        (&forged, &forged, "bad signature"),
        (&other, &other, "a manifest of something else"),
    ] {
        let output = meridian(dir, &deprecate_to_file(&lie(named, served)));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{why}: {stderr}");
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert!(!dir.join("body.json").exists(), "{why}: nothing written");
    }
    // The honest answer gives a body to publish.
    run_ok(dir, &deprecate_to_file(&lie(&echo, &echo)));
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("body.json")).unwrap()).unwrap();
    use base64::Engine as _;
    let block = base64::engine::general_purpose::STANDARD
        .decode(body["manifest"].as_str().unwrap())
        .unwrap();
    let manifest = meridian_registry::manifest::Manifest::decode(&block).unwrap();
    manifest.verify_signature().unwrap();
    assert_eq!(
        manifest.lifecycle(),
        meridian_registry::manifest::Lifecycle::Deprecated
    );
    assert_eq!(
        manifest.body.card,
        meridian_registry::manifest::Manifest::decode(&echo)
            .unwrap()
            .body
            .card
    );
}
