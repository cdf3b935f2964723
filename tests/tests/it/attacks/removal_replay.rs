//! Attack 1, last part: an organisation withdraws its agent, and another publisher that kept a
//! copy of the old, validly signed manifest lists it again. A signed removal (tombstone)
//! beats every manifest dated at or before it, whoever lists the copy; a removal signed by a
//! key the name is not bound to removes nothing.

use std::time::Duration;

use meridian_registry::keys::Keypair;
use meridian_registry::manifest::ManifestBody;
use meridian_tests::*;

const URL: &str = "https://acme.example/echo";
const T0: i64 = 1_800_000_000;

/// `DELETE /api/v1/agents/{agent}` with a signed removal block.
fn delete_signed(node: &Daemon, token: &str, agent: &str, removal: &[u8]) -> Answer {
    let body = serde_json::json!({ "manifest": b64(removal) }).to_string();
    node.request(
        "DELETE",
        &format!("/api/v1/agents/{agent}"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        body.as_bytes(),
    )
}

fn removal(agent: &str, at: i64, key: &Keypair) -> Vec<u8> {
    ManifestBody::tombstone(agent, "local", at)
        .unwrap()
        .sign(key)
        .to_block()
}

#[test]
fn a_removed_agent_cannot_be_replayed_by_another_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let acme = Keypair::from_secret(&[31; 32]);
    let thief = Keypair::from_secret(&[32; 32]);
    meridian_registry::files::write_secret(&dir.join("acme.key"), acme.to_key_file().as_bytes())
        .unwrap();

    // acme publishes echo and other on its node; a second node keeps a copy of echo's signed
    // manifest and lists it too (valid: the same organisation key).
    let origin = Daemon::node(dir, "origin", &[]);
    let token = org_token(dir, "origin", "acme");
    let echo = manifest_block("acme", "echo", "local", URL, T0, &acme);
    let other = manifest_block("acme", "other", "local", URL, T0, &acme);
    assert_eq!(publish(&origin, &token, &echo).status, 201);
    assert_eq!(publish(&origin, &token, &other).status, 201);
    let replayer = Daemon::node(
        dir,
        "replayer",
        &[("MERIDIAN_MESH_BOOTSTRAP", mesh_addr(dir, "origin").as_str())],
    );
    let replayer_token = org_token(dir, "replayer", "acme");
    assert_eq!(publish(&replayer, &replayer_token, &echo).status, 201);
    let replayer_did = node_did(&replayer);
    origin.wait_for("the replayer's head", Duration::from_secs(30), || {
        origin.get("/api/v1/registry/heads").json()["heads"]
            .as_array()?
            .iter()
            .any(|h| h["publisher"] == replayer_did.as_str())
            .then_some(())
    });

    // acme withdraws echo with the CLI: a removal signed by its key, sent to its node.
    let removed_at = (T0 + 100).to_string();
    let said = meridian_json(
        dir,
        &[
            "agent",
            "remove",
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
    assert_eq!(said["signed"], true, "{said}");
    // Gone on the origin, although the replayer still lists the old manifest...
    let gone = origin.get("/api/v1/agents/acme/echo");
    assert_eq!(gone.status, 410, "{:?}", gone.json());
    assert_eq!(gone.json()["error"]["code"], "agent_removed");
    assert_eq!(
        origin
            .get("/a2a/acme/echo/.well-known/agent-card.json")
            .status,
        410
    );
    assert!(origin.metric("meridian_agents_removed") >= 1.0);
    // ...and gone on the replayer too once the removal reaches it: its own copy is older.
    replayer.wait_for("the removal mirrored", Duration::from_secs(30), || {
        (replayer.get("/api/v1/agents/acme/echo").status == 410).then_some(())
    });
    // The replayer lists its copy again, in a new commit: refused by its own node, and a
    // copy already in its registry stays hidden everywhere.
    let again = publish(&replayer, &replayer_token, &echo);
    assert_eq!(again.status, 409, "{:?}", again.json());
    assert_eq!(again.json()["error"]["code"], "agent_removed");
    let refreshed = manifest_block("acme", "unrelated", "local", URL, T0, &acme);
    assert_eq!(publish(&replayer, &replayer_token, &refreshed).status, 201);
    origin.wait_for("the replayer's new commit", Duration::from_secs(30), || {
        (origin.get("/api/v1/agents/acme/unrelated").status == 200).then_some(())
    });
    assert_eq!(origin.get("/api/v1/agents/acme/echo").status, 410);
    assert!(origin.metric("meridian_manifests_hidden_by_removal_total") >= 1.0);

    // A removal signed by another key removes nothing: refused by a node whose name binding
    // it breaks, and held as evidence by the origin when a rebound node lists it.
    let forged = removal("acme/other", T0 + 200, &thief);
    let refused = delete_signed(&replayer, &replayer_token, "acme/other", &forged);
    assert_eq!(refused.status, 409, "{:?}", refused.json());
    assert_eq!(refused.json()["error"]["code"], "name_bound");
    pin_name(dir, "replayer", "acme", &thief.did());
    replayer.wait_for("the pin applied", Duration::from_secs(15), || {
        (delete_signed(&replayer, &replayer_token, "acme/other", &forged).status == 200)
            .then_some(())
    });
    origin.wait_for("the forged removal held", Duration::from_secs(30), || {
        origin.get("/api/v1/names").json()["held"]
            .as_array()?
            .iter()
            .any(|h| h["signer"] == thief.did().as_str() && h["agent_id"] == "acme/other")
            .then_some(())
    });
    assert_eq!(origin.get("/api/v1/agents/acme/other").status, 200);

    // A stale removal (older than the listed manifest) is refused, not applied.
    let stale = delete_signed(
        &origin,
        &token,
        "acme/other",
        &removal("acme/other", T0 - 1, &acme),
    );
    assert_eq!(stale.status, 409, "{:?}", stale.json());
    assert_eq!(stale.json()["error"]["code"], "stale_removal");
    // A manifest as the body of DELETE is not a removal.
    let wrong = delete_signed(&origin, &token, "acme/other", &other);
    assert_eq!(wrong.status, 422);
    assert_eq!(wrong.json()["error"]["code"], "not_a_removal");

    // acme brings echo back with a newer manifest: served again.
    let back = manifest_block("acme", "echo", "local", URL, T0 + 300, &acme);
    assert_eq!(publish(&origin, &token, &back).status, 200);
    assert_eq!(origin.get("/api/v1/agents/acme/echo").status, 200);
}
