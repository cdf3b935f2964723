//! Attack 3: a key added to an organisation behind its back. With key transparency every
//! key-set document is a leaf of the governance key log; a node with
//! `governance.require_key_log` trusts an organisation key only once a proof that its document
//! is in a witnessed checkpoint arrives, and `meridian checkpoint monitor` raises the alarm
//! when the log shows a key-set change the organisation's previous keys did not sign.

use std::path::Path;

use meridian_tests::*;

const ORIGIN: &str = "gov.example/keys";

/// Appends `document` to the key log, signs and co-signs a new checkpoint, and writes the
/// document's proof to `proof`.
fn log_and_prove(dir: &Path, document: &str, proof: &str) {
    run_ok(
        dir,
        &[
            "checkpoint",
            "append",
            "--log",
            "keys.log",
            "--document",
            document,
        ],
    );
    run_ok(
        dir,
        &[
            "checkpoint",
            "sign",
            "--log",
            "keys.log",
            "--origin",
            ORIGIN,
            "--key",
            "log.key",
            "--out",
            "cp.note",
        ],
    );
    let log_did = did(dir, "log.key");
    let old_size = std::fs::read_to_string(dir.join("w1.state"))
        .ok()
        .and_then(|s| s.lines().nth(1).map(str::to_owned));
    let mut args = vec![
        "checkpoint",
        "cosign",
        "cp.note",
        "--name",
        "w1",
        "--key",
        "w1.key",
        "--log-key",
        &log_did,
        "--state",
        "w1.state",
    ];
    if let Some(old) = &old_size {
        let proof_text = run_ok(
            dir,
            &[
                "checkpoint",
                "prove",
                "--log",
                "keys.log",
                "--old-size",
                old,
            ],
        );
        std::fs::write(dir.join("consistency.txt"), proof_text).unwrap();
        args.extend(["--proof", "consistency.txt"]);
    }
    run_ok(dir, &args);
    run_ok(
        dir,
        &[
            "checkpoint",
            "prove-document",
            "--log",
            "keys.log",
            "--document",
            document,
            "--note",
            "cp.note",
            "--out",
            proof,
        ],
    );
}

#[test]
fn an_organisation_key_counts_only_once_the_key_log_proves_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    one_key_governance(dir);
    for name in ["org", "planted", "log", "w1"] {
        run_ok(dir, &["keys", "generate", "--out", &format!("{name}.key")]);
    }
    verify_acme(dir, "org.key", "verified.cbor");
    log_and_prove(dir, "verified.cbor", "verified.proof");

    let root = dir.join("root.cbor").display().to_string();
    let log_did = did(dir, "log.key");
    let witnesses = format!("w1={}", did(dir, "w1.key"));
    let admin = admin_token(dir, "n");
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_GOVERNANCE_ROOT", root.as_str()),
            ("MERIDIAN_GOVERNANCE_REQUIRE_KEY_LOG", "true"),
            ("MERIDIAN_GOVERNANCE_KEY_LOG_ORIGIN", ORIGIN),
            ("MERIDIAN_GOVERNANCE_KEY_LOG_KEY", log_did.as_str()),
            ("MERIDIAN_GOVERNANCE_KEY_LOG_WITNESSES", witnesses.as_str()),
        ],
    );
    let cbor = "application/vnd.ipld.dag-cbor";
    let held = post_as_admin(
        &node,
        &admin,
        "/api/v1/attestations",
        cbor,
        &std::fs::read(dir.join("verified.cbor")).unwrap(),
    );
    assert_eq!(held.status, 202, "{:?}", held.json());
    assert_eq!(held.json()["status"], "awaiting_key_log");

    // Until the proof arrives acme is not verified here.
    let token = org_token(dir, "n", "acme");
    let key = |file: &str| key_file(dir, file);
    let echo = manifest_block(
        "acme",
        "echo",
        "local",
        "https://acme.example/echo",
        1_800_000_000,
        &key("org.key"),
    );
    assert_eq!(publish(&node, &token, &echo).status, 422);

    // A proof that does not verify (another document's place) is refused.
    let forged = std::fs::read_to_string(dir.join("verified.proof"))
        .unwrap()
        .replace("index 0", "index 1");
    let refused = post_as_admin(
        &node,
        &admin,
        "/api/v1/governance/key-proofs",
        "text/plain",
        forged.as_bytes(),
    );
    assert_eq!(refused.status, 422, "{:?}", refused.json());

    let proof = std::fs::read(dir.join("verified.proof")).unwrap();
    let applied = post_as_admin(
        &node,
        &admin,
        "/api/v1/governance/key-proofs",
        "text/plain",
        &proof,
    );
    assert_eq!(applied.status, 201, "{:?}", applied.json());
    assert_eq!(applied.json()["applied"], true);
    assert_eq!(publish(&node, &token, &echo).status, 201);

    // A key planted behind acme's back (the attest role verifies acme again with another
    // key): the node holds it unlogged, so the planted key signs nothing here...
    verify_acme(dir, "planted.key", "planted.cbor");
    let held = post_as_admin(
        &node,
        &admin,
        "/api/v1/attestations",
        cbor,
        &std::fs::read(dir.join("planted.cbor")).unwrap(),
    );
    assert_eq!(held.status, 202);
    let hijack = manifest_block(
        "acme",
        "echo",
        "local",
        "https://planted.example/echo",
        1_900_000_000,
        &key("planted.key"),
    );
    assert_eq!(publish(&node, &token, &hijack).status, 422);
    // ...and once it is logged to pass a node's check, the monitor sees it.
    std::fs::create_dir_all(dir.join("keydocs")).unwrap();
    std::fs::copy(dir.join("verified.cbor"), dir.join("keydocs/verified.cbor")).unwrap();
    let monitor = |dir: &Path| {
        meridian(
            dir,
            &[
                "checkpoint",
                "monitor",
                "--log",
                "keys.log",
                "--documents",
                "keydocs",
                "--root",
                "root.cbor",
                "--org",
                "acme",
            ],
        )
    };
    let quiet = monitor(dir);
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    log_and_prove(dir, "planted.cbor", "planted.proof");
    std::fs::copy(dir.join("planted.cbor"), dir.join("keydocs/planted.cbor")).unwrap();
    let alarm = monitor(dir);
    assert_eq!(alarm.status.code(), Some(1));
    let said = String::from_utf8_lossy(&alarm.stderr);
    assert!(
        said.contains("without a rotation signed by its previous keys"),
        "{said}"
    );

    // The node's own view of acme's key history, with log positions.
    let history = meridian_json(dir, &["org", "keys", "acme", "--data", "n"]);
    let rows = history["history"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["log"] == "key log leaf 0 of 1" && r["state"] == "in force"),
        "{history}"
    );
    assert!(
        rows.iter()
            .any(|r| r["state"] == "awaiting its key-log proof"),
        "{history}"
    );
}
