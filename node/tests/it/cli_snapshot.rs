//! The snapshot and keys CLI contract, through the real binary.

use crate::*;

#[test]
fn keys_generate_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let did = expect(path, &["keys", "generate", "--out", "k.key"], 0);
    assert!(did.trim().starts_with("did:key:z6Mk"), "{did}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path.join("k.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let shown = json(path, &["keys", "show", "k.key"]);
    assert_eq!(shown["did"].as_str().unwrap(), did.trim());
    // Never overwrite a key by accident.
    let err = expect(path, &["keys", "generate", "--out", "k.key"], 2);
    assert!(err.contains("--force"), "{err}");
    expect(path, &["keys", "generate", "--out", "k.key", "--force"], 0);
    std::fs::write(path.join("bad.key"), "{\"kind\":\"nope\"}").unwrap();
    let err = expect(path, &["keys", "show", "bad.key"], 2);
    assert!(err.contains("bad.key"), "{err}");
}

#[test]
fn build_verify_inspect_diff_delta_import_export() {
    let (_guard, dir) = workspace(40);
    let first = build(&dir, "s1.car", None);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["agents"], 40);

    let inspect = json(&dir, &["snapshot", "inspect", "s1.car"]);
    for field in [
        "root",
        "data",
        "publisher",
        "seq",
        "agents",
        "blocks",
        "bytes",
    ] {
        assert!(
            !inspect[field].is_null(),
            "inspect lacks {field}: {inspect}"
        );
    }
    assert_eq!(inspect["root"], first["root"]);
    let node_did = expect(&dir, &["keys", "show", "node.key"], 0);
    assert_eq!(inspect["publisher"].as_str().unwrap(), node_did.trim());

    // Change one agent, add one, remove one; the card of the changed one is a v0.3 card.
    std::fs::write(
        dir.join("cards/agent-00003.json"),
        r#"{"name":"Agent 3","url":"https://agents.example/v03","skills":[]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("cards/new.json"), card("Newcomer", "translate")).unwrap();
    std::fs::remove_file(dir.join("cards/agent-00007.json")).unwrap();
    let second = build(&dir, "s2.car", Some("s1.car"));
    assert_eq!(second["seq"], 2);
    assert_eq!(
        (
            second["added"].as_u64(),
            second["changed"].as_u64(),
            second["removed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );

    let verified = json(
        &dir,
        &[
            "snapshot",
            "verify",
            "s2.car",
            "--after",
            "s1.car",
            "--publisher",
            node_did.trim(),
        ],
    );
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["linked"], true);

    let diff = json(&dir, &["snapshot", "diff", "s1.car", "s2.car"]);
    assert_eq!(diff["added"], serde_json::json!(["acme/newcomer"]));
    assert_eq!(diff["removed"], serde_json::json!(["acme/agent-7"]));
    assert_eq!(diff["changed"], serde_json::json!(["acme/agent-3"]));

    let delta = json(
        &dir,
        &["snapshot", "delta", "s1.car", "s2.car", "--out", "d.car"],
    );
    assert!(
        delta["bytes"].as_u64().unwrap() < std::fs::metadata(dir.join("s2.car")).unwrap().len()
    );

    // A delta alone is refused (blocks missing); on top of s1 it imports.
    let err = expect(&dir, &["snapshot", "import", "d.car", "--data", "data"], 1);
    assert!(err.contains("missing block"), "{err}");
    json(&dir, &["snapshot", "import", "s1.car", "--data", "data"]);
    let imported = json(&dir, &["snapshot", "import", "d.car", "--data", "data"]);
    assert_eq!(imported["seq"], 2);
    assert_eq!(
        imported["signatures_checked"], 3,
        "the changed and the new manifest, and agent 7's signed removal"
    );

    // Export gives back exactly s2, and a delta since s1 that imports elsewhere.
    json(
        &dir,
        &["snapshot", "export", "--data", "data", "--out", "e.car"],
    );
    assert_eq!(
        std::fs::read(dir.join("e.car")).unwrap(),
        std::fs::read(dir.join("s2.car")).unwrap()
    );
    let s1_root = first["root"].as_str().unwrap();
    json(
        &dir,
        &[
            "snapshot",
            "export",
            "--data",
            "data",
            "--out",
            "e-delta.car",
            "--since",
            s1_root,
        ],
    );
    json(&dir, &["snapshot", "import", "s1.car", "--data", "other"]);
    json(
        &dir,
        &["snapshot", "import", "e-delta.car", "--data", "other"],
    );

    // Rollback is refused with exit 1, both by verify --after and by import.
    let err = expect(
        &dir,
        &["snapshot", "verify", "s1.car", "--after", "s2.car"],
        1,
    );
    assert!(err.contains("rollback"), "{err}");
    let err = expect(&dir, &["snapshot", "import", "s1.car", "--data", "data"], 1);
    assert!(err.contains("rollback"), "{err}");
    // Wrong publisher.
    let other = expect(&dir, &["keys", "generate", "--out", "other.key"], 0);
    let err = expect(
        &dir,
        &["snapshot", "verify", "s2.car", "--publisher", other.trim()],
        1,
    );
    assert!(err.contains("wrong publisher"), "{err}");
}

#[test]
fn jsonl_cards_and_duplicates() {
    let (_guard, dir) = workspace(0);
    let lines = [card("One", "a"), card("Two", "b"), card("one", "c")].join("\n");
    std::fs::write(dir.join("cards.jsonl"), lines).unwrap();
    let err = expect(
        &dir,
        &[
            "snapshot",
            "build",
            "--key",
            "node.key",
            "--org-key",
            "org.key",
            "--org",
            "acme",
            "--region",
            "eu",
            "--cards",
            "cards.jsonl",
            "--out",
            "s.car",
        ],
        1,
    );
    assert!(
        err.contains("cards.jsonl:1") && err.contains("cards.jsonl:3"),
        "{err}"
    );
    assert!(!dir.join("s.car").exists());
    std::fs::write(
        dir.join("cards.jsonl"),
        [card("One", "a"), card("Two", "b")].join("\n"),
    )
    .unwrap();
    let built = json(
        &dir,
        &[
            "snapshot",
            "build",
            "--key",
            "node.key",
            "--org-key",
            "org.key",
            "--org",
            "acme",
            "--region",
            "eu",
            "--cards",
            "cards.jsonl",
            "--out",
            "s.car",
            "--expires-in",
            "2h",
        ],
    );
    assert_eq!(built["agents"], 2);
    let inspect = json(&dir, &["snapshot", "inspect", "s.car"]);
    let window = inspect["expires_at"].as_i64().unwrap() - inspect["created_at"].as_i64().unwrap();
    assert_eq!(window, 7200);
}

#[test]
fn invalid_card_reports_every_problem_and_the_file() {
    let (_guard, dir) = workspace(2);
    std::fs::write(
        dir.join("cards/broken.json"),
        r#"{"name": 7, "skills": "many"}"#,
    )
    .unwrap();
    let err = expect(
        &dir,
        &[
            "snapshot",
            "build",
            "--key",
            "node.key",
            "--org-key",
            "org.key",
            "--org",
            "acme",
            "--region",
            "eu",
            "--cards",
            "cards",
            "--out",
            "s.car",
        ],
        1,
    );
    assert!(err.contains("broken.json"), "{err}");
    assert!(
        err.contains("`name`") && err.contains("`skills`") && err.contains("supportedInterfaces"),
        "{err}"
    );
}

#[test]
fn malformed_input_is_refused_without_panic() {
    let (_guard, dir) = workspace(5);
    build(&dir, "s.car", None);
    let good = std::fs::read(dir.join("s.car")).unwrap();
    // Truncations, bit flips and garbage: exit 1 with a message, never a panic.
    let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"garbage".to_vec(), vec![0xff; 64]];
    for cut in [1, 10, 40, good.len() / 2, good.len() - 1] {
        cases.push(good[..cut].to_vec());
    }
    for index in [5, 60, good.len() / 3, good.len() - 10] {
        let mut flipped = good.clone();
        flipped[index] ^= 0x10;
        cases.push(flipped);
    }
    for (n, case) in cases.iter().enumerate() {
        let name = format!("bad-{n}.car");
        std::fs::write(dir.join(&name), case).unwrap();
        let output = meridian(&dir, &["snapshot", "verify", &name]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&name),
            "error does not name the file: {stderr}"
        );
    }
    // Usage errors and missing files exit 2.
    expect(&dir, &["snapshot", "verify", "nope.car"], 2);
    expect(&dir, &["snapshot", "build"], 2);
    expect(
        &dir,
        &["snapshot", "export", "--data", "empty", "--out", "x.car"],
        2,
    );
    let err = expect(
        &dir,
        &[
            "snapshot",
            "verify",
            "s.car",
            "--publisher",
            "did:web:example",
        ],
        2,
    );
    assert!(err.contains("--publisher"), "{err}");
}
