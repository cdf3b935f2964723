//! Attack 2: an organisation rotates a stolen key out; the thief rotates again with the removed
//! key and publishes under it with a backdated `updated_at`. Offline (`snapshot verify --root
//! --attestations`) and on a running node (which now takes rotations over HTTP), the thief's
//! rotation and manifests are refused and the organisation's new key works.

use std::path::Path;

use meridian_tests::*;

use meridian_tests::run_ok as run;

/// A governance root with one key per role, acme verified with `stolen.key`, and two
/// rotations in `attestations/`: acme's (stolen -> fresh) and the thief's (fresh -> thief,
/// signed with the removed key).
fn governance(dir: &Path) {
    one_key_governance(dir);
    for name in ["stolen", "fresh", "thief", "node", "thief-node"] {
        run(dir, &["keys", "generate", "--out", &format!("{name}.key")]);
    }
    std::fs::create_dir_all(dir.join("attestations")).unwrap();
    verify_acme(dir, "stolen.key", "attestations/0-verified.cbor");
    let (stolen, fresh) = (did(dir, "stolen.key"), did(dir, "fresh.key"));
    run(
        dir,
        &[
            "org",
            "rotate-key",
            "--org",
            "acme",
            "--current-key",
            "stolen.key",
            "--add-key",
            "fresh.key",
            "--remove-key",
            &stolen,
            "--out",
            "attestations/1-evict.cbor",
        ],
    );
    // The thief knows only the set it stole from, and signs with the removed key.
    run(
        dir,
        &[
            "org",
            "rotate-key",
            "--org",
            "acme",
            "--current-key",
            "stolen.key",
            "--current-set",
            &fresh,
            "--current-set",
            &stolen,
            "--add-key",
            "thief.key",
            "--remove-key",
            &fresh,
            "--out",
            "thief-rotation.cbor",
        ],
    );
    std::fs::create_dir_all(dir.join("cards")).unwrap();
    std::fs::write(
        dir.join("cards/echo.json"),
        card("echo", "https://acme.example/echo"),
    )
    .unwrap();
}

fn verify(dir: &Path, car: &str) -> serde_json::Value {
    let output = meridian(
        dir,
        &[
            "snapshot",
            "verify",
            car,
            "--root",
            "root.cbor",
            "--attestations",
            "attestations",
            "--json",
        ],
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_stolen_key_does_not_outlive_the_rotation_that_removed_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    governance(dir);
    // The thief's rotation, next to the organisation's, is refused: it names a key set that is
    // not acme's and is signed by a key acme removed.
    std::fs::copy(
        dir.join("thief-rotation.cbor"),
        dir.join("attestations/2-thief.cbor"),
    )
    .unwrap();
    for (org_key, car) in [("stolen.key", "thief.car"), ("fresh.key", "acme.car")] {
        run(
            dir,
            &[
                "snapshot",
                "build",
                "--key",
                "node.key",
                "--org-key",
                org_key,
                "--org",
                "acme",
                "--region",
                "eu-west",
                "--cards",
                "cards",
                "--out",
                car,
            ],
        );
    }
    let thief = verify(dir, "thief.car");
    assert_eq!(
        thief["governance"]["accepted"],
        serde_json::json!([]),
        "{thief}"
    );
    assert!(
        thief["governance"]["rejected"]
            .to_string()
            .contains("revoked or rotated out"),
        "{thief}"
    );
    let honest = verify(dir, "acme.car");
    assert_eq!(
        honest["governance"]["accepted"],
        serde_json::json!(["acme/echo"]),
        "{honest}"
    );
}

#[test]
fn a_running_node_takes_rotations_and_refuses_the_thiefs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    governance(dir);
    let root = dir.join("root.cbor").display().to_string();
    let admin = admin_token(dir, "n");
    let node = Daemon::node(dir, "n", &[("MERIDIAN_GOVERNANCE_ROOT", root.as_str())]);
    let post = |file: &str| {
        let body = std::fs::read(dir.join(file)).unwrap();
        node.request(
            "POST",
            "/api/v1/attestations",
            &[
                ("content-type", "application/vnd.ipld.dag-cbor"),
                ("authorization", &format!("Bearer {admin}")),
            ],
            &body,
        )
    };
    assert_eq!(post("attestations/0-verified.cbor").status, 201);
    // Before the theft is noticed, acme publishes with the key that will be stolen.
    let token = org_token(dir, "n", "acme");
    let key = |file: &str| key_file(dir, file);
    let planner = manifest_block(
        "acme",
        "planner",
        "local",
        "https://acme.example/planner",
        1_800_000_000,
        &key("stolen.key"),
    );
    assert_eq!(publish(&node, &token, &planner).status, 201);
    let rotated = post("attestations/1-evict.cbor");
    assert_eq!(rotated.status, 201, "{:?}", rotated.json());
    assert_eq!(rotated.json()["type"], "key-rotation");
    let refused = post("thief-rotation.cbor");
    assert_eq!(refused.status, 422, "{:?}", refused.json());
    assert!(
        refused.json()["error"]["message"]
            .to_string()
            .contains("current")
    );

    // The agent signed with the removed key left the view; `org resign` brings it back
    // under the new key.
    assert_eq!(node.get("/api/v1/agents/acme/planner").status, 404);
    let resigned = meridian_json(
        dir,
        &[
            "org",
            "resign",
            "--node",
            &node.url(),
            "--token",
            &token,
            "--org",
            "acme",
            "--org-key",
            "fresh.key",
        ],
    );
    assert_eq!(
        resigned["republished"],
        serde_json::json!(["acme/planner"]),
        "{resigned}"
    );
    let planner = node.get("/api/v1/agents/acme/planner").json();
    assert_eq!(
        planner["manifest"]["signer"],
        key("fresh.key").did(),
        "{planner}"
    );
    // Publishing under the removed key, backdated, is refused; under the new key it works.
    let (stolen, fresh) = (key("stolen.key"), key("fresh.key"));
    let backdated = manifest_block(
        "acme",
        "echo",
        "local",
        "https://thief.example/echo",
        1_000,
        &stolen,
    );
    let answer = publish(&node, &token, &backdated);
    assert_eq!(answer.status, 422, "{:?}", answer.json());
    assert!(
        answer.json()["error"]["message"]
            .to_string()
            .contains("rotated out")
    );
    let honest = manifest_block(
        "acme",
        "echo",
        "local",
        "https://acme.example/echo",
        1_800_000_000,
        &fresh,
    );
    assert_eq!(publish(&node, &token, &honest).status, 201);
    // A restart keeps the chain: the rotation was stored.
    node.stop();
    let node = Daemon::node(dir, "n", &[("MERIDIAN_GOVERNANCE_ROOT", root.as_str())]);
    let agent = node.get("/api/v1/agents/acme/echo");
    assert_eq!(agent.status, 200, "{:?}", agent.json());
    assert!(String::from_utf8_lossy(&agent.body).contains("acme.example"));
}
