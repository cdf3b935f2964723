//! Attack 1: a second publisher claims an organisation's agent with its own key and a newer
//! `updated_at`. Without governance, the first node binds the name to the first key it saw
//! and holds the attacker's claim as evidence; only the operator can rebind it.

use std::time::Duration;

use meridian_registry::keys::Keypair;
use meridian_tests::*;

const HONEST_URL: &str = "https://honest.example/echo";
const ATTACKER_URL: &str = "https://attacker.example/echo";

#[test]
fn another_publisher_cannot_take_over_an_organisations_agent() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let honest_key = Keypair::from_secret(&[11; 32]);
    let thief_key = Keypair::from_secret(&[66; 32]);

    // Node keys chosen so that the attacker's did sorts first: a node rebuilding its view
    // from scratch must still bind acme to what it published itself, not to the first
    // publisher in order.
    let mut node_keys = [
        Keypair::from_secret(&[21; 32]),
        Keypair::from_secret(&[22; 32]),
    ];
    node_keys.sort_by_key(Keypair::did);
    for (data, node_key) in [("attacker", &node_keys[0]), ("honest", &node_keys[1])] {
        std::fs::create_dir_all(dir.join(data)).unwrap();
        meridian_registry::files::write_secret(
            &dir.join(data).join("node.key"),
            node_key.to_key_file().as_bytes(),
        )
        .unwrap();
    }

    // The honest node publishes acme/echo, signed by acme's key.
    let honest = Daemon::node(dir, "honest", &[]);
    let token = org_token(dir, "honest", "acme");
    let manifest = manifest_block(
        "acme",
        "echo",
        "local",
        HONEST_URL,
        1_800_000_000,
        &honest_key,
    );
    assert_eq!(publish(&honest, &token, &manifest).status, 201);
    let honest_mesh = mesh_addr(dir, "honest");

    // The attacker's node publishes acme/echo under its own "acme" key, newer, while alone...
    let attacker = Daemon::node(dir, "attacker", &[]);
    let attacker_did = node_did(&attacker);
    let attacker_token = org_token(dir, "attacker", "acme");
    let forged = manifest_block(
        "acme",
        "echo",
        "local",
        ATTACKER_URL,
        1_900_000_000,
        &thief_key,
    );
    assert_eq!(publish(&attacker, &attacker_token, &forged).status, 201);
    attacker.stop();
    // ...then joins the honest node's mesh.
    let attacker = Daemon::node(
        dir,
        "attacker",
        &[("MERIDIAN_MESH_BOOTSTRAP", honest_mesh.as_str())],
    );
    honest.wait_for(
        "the attacker's head mirrored",
        Duration::from_secs(30),
        || {
            let heads = honest.get("/api/v1/registry/heads").json();
            heads["heads"]
                .as_array()?
                .iter()
                .any(|h| h["publisher"] == attacker_did.as_str())
                .then_some(())
        },
    );

    // The honest node still serves the honest agent; the claim is held and counted.
    let names = honest.wait_for("the claim held", Duration::from_secs(10), || {
        let names = honest.get("/api/v1/names").json();
        (!names["held"].as_array()?.is_empty()).then_some(names)
    });
    let agent = honest.get("/api/v1/agents/acme/echo");
    assert_eq!(agent.status, 200);
    let text = String::from_utf8_lossy(&agent.body).into_owned();
    assert!(
        text.contains(HONEST_URL) && !text.contains(ATTACKER_URL),
        "{text}"
    );
    let held = &names["held"][0];
    assert_eq!(held["agent_id"], "acme/echo");
    assert_eq!(held["signer"], thief_key.did());
    assert_eq!(held["publisher"], attacker_did);
    assert_eq!(
        names["bindings"]["acme"]["keys"][0],
        serde_json::json!(honest_key.did())
    );
    assert!(honest.metric("meridian_name_conflicts_total") >= 1.0);
    // The A2A card the proxy serves is the honest one too.
    let card = honest.get("/a2a/acme/echo/.well-known/agent-card.json");
    assert_eq!(card.status, 200);

    // A view rebuilt from scratch (no binding file: a restart after losing it, or the first
    // start after an upgrade) binds acme to the node's own publication again.
    honest.stop();
    std::fs::remove_file(dir.join("honest").join("names.json")).unwrap();
    let honest = Daemon::node(dir, "honest", &[("MERIDIAN_MESH_BOOTSTRAP", "")]);
    let agent = honest.get("/api/v1/agents/acme/echo");
    assert!(
        String::from_utf8_lossy(&agent.body).contains(HONEST_URL),
        "{:?}",
        agent.json()
    );

    // Only the operator rebinds a name: accepting the held claim makes the node serve it.
    let listed = meridian_json(dir, &["node", "names", "list", "--data", "honest"]);
    assert_eq!(listed["held"][0]["signer"], thief_key.did());
    meridian_json(
        dir,
        &[
            "node",
            "names",
            "accept",
            "acme",
            "--signer",
            &thief_key.did(),
            "--data",
            "honest",
        ],
    );
    honest.wait_for("the accepted claim served", Duration::from_secs(15), || {
        let agent = honest.get("/api/v1/agents/acme/echo");
        String::from_utf8_lossy(&agent.body)
            .contains(ATTACKER_URL)
            .then_some(())
    });
    drop(attacker);
}

#[test]
fn a_local_publish_under_another_key_for_a_bound_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "n", &[]);
    let token = org_token(dir, "n", "acme");
    let first = Keypair::from_secret(&[1; 32]);
    let other = Keypair::from_secret(&[2; 32]);
    let manifest = manifest_block("acme", "echo", "local", HONEST_URL, 1_800_000_000, &first);
    assert_eq!(publish(&node, &token, &manifest).status, 201);
    let forged = manifest_block("acme", "echo", "local", ATTACKER_URL, 1_900_000_000, &other);
    let refused = publish(&node, &token, &forged);
    assert_eq!(refused.status, 409, "{:?}", refused.json());
    assert_eq!(refused.json()["error"]["code"], "name_bound");
    let agent = node.get("/api/v1/agents/acme/echo");
    assert!(String::from_utf8_lossy(&agent.body).contains(HONEST_URL));
    // A pin by the operator changes who may sign.
    pin_name(dir, "n", "acme", &other.did());
    node.wait_for("the pin applied", Duration::from_secs(15), || {
        matches!(publish(&node, &token, &forged).status, 200 | 201).then_some(())
    });
}

#[test]
fn without_governance_a_name_moves_only_by_a_rotation_its_bound_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for name in ["k1", "k2", "thief"] {
        run_ok(dir, &["keys", "generate", "--out", &format!("{name}.key")]);
    }
    let key = |file: &str| key_file(dir, file);
    let admin = admin_token(dir, "n");
    let node = Daemon::node(dir, "n", &[]);
    let token = org_token(dir, "n", "acme");
    let first = manifest_block(
        "acme",
        "echo",
        "local",
        HONEST_URL,
        1_800_000_000,
        &key("k1.key"),
    );
    assert_eq!(publish(&node, &token, &first).status, 201);
    let post = |file: &str| {
        node.request(
            "POST",
            "/api/v1/attestations",
            &[
                ("content-type", "application/vnd.ipld.dag-cbor"),
                ("authorization", &format!("Bearer {admin}")),
            ],
            &std::fs::read(dir.join(file)).unwrap(),
        )
    };
    // The thief's rotation, signed by a key the name is not bound to: refused.
    let k1 = key("k1.key").did();
    run_ok(
        dir,
        &[
            "org",
            "rotate-key",
            "--org",
            "acme",
            "--current-key",
            "thief.key",
            "--current-set",
            &k1,
            "--current-set",
            &key("thief.key").did(),
            "--add-key",
            "thief.key",
            "--remove-key",
            &k1,
            "--out",
            "thief.cbor",
        ],
    );
    let refused = post("thief.cbor");
    assert_eq!(refused.status, 422, "{:?}", refused.json());
    // acme's own rotation k1 -> k2.
    run_ok(
        dir,
        &[
            "org",
            "rotate-key",
            "--org",
            "acme",
            "--current-key",
            "k1.key",
            "--add-key",
            "k2.key",
            "--remove-key",
            &k1,
            "--out",
            "rotation.cbor",
        ],
    );
    let rotated = post("rotation.cbor");
    assert_eq!(rotated.status, 201, "{:?}", rotated.json());
    assert_eq!(
        rotated.json()["keys"],
        serde_json::json!([key("k2.key").did()])
    );
    // The removed key signs nothing here any more; the new one does.
    let late = manifest_block(
        "acme",
        "echo",
        "local",
        ATTACKER_URL,
        1_900_000_000,
        &key("k1.key"),
    );
    assert_eq!(publish(&node, &token, &late).status, 409);
    let moved = manifest_block(
        "acme",
        "echo",
        "local",
        HONEST_URL,
        1_800_000_200,
        &key("k2.key"),
    );
    assert!(matches!(publish(&node, &token, &moved).status, 200 | 201));
    let names = node.get("/api/v1/names").json();
    assert_eq!(names["bindings"]["acme"]["how"], "rotation", "{names}");
}
