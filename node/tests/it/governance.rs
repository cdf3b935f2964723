//! The governance commands end to end, in the order the runbook gives them.

use crate::*;

fn did(dir: &Path, key: &str) -> String {
    expect(dir, &["keys", "show", key], 0).trim().to_owned()
}

/// A named step of [`STEPS`].
type Step = (&'static str, fn(&Path));

/// The governance workflow of the runbook, step by step: each test runs the steps before its
/// own (they are quick command-line calls) and is named for what it checks, so a failure says
/// which step broke.
const STEPS: [Step; 7] = [
    ("bootstrap_root", bootstrap_root),
    ("approve_organisation", approve_organisation),
    ("sign_policy", sign_policy),
    (
        "verify_snapshot_with_governance",
        verify_snapshot_with_governance,
    ),
    ("revoke_organisation_key", revoke_organisation_key),
    ("rotate_root", rotate_root),
    ("witness_checkpoints", witness_checkpoints),
];

/// A workspace with the governance keys, after running `STEPS` up to and including `last`.
fn after(last: &str) -> (tempfile::TempDir, PathBuf) {
    let (temp, dir) = workspace(3);
    for name in [
        "root1", "root2", "root3", "attest1", "attest2", "policy1", "witness1", "log", "root4",
    ] {
        expect(
            &dir,
            &["keys", "generate", "--out", &format!("{name}.key")],
            0,
        );
    }
    for (name, step) in STEPS {
        step(&dir);
        if name == last {
            return (temp, dir);
        }
    }
    panic!("no step `{last}`");
}

/// Bootstrap: version 1, signed by two of three root admins.
fn bootstrap_root(dir: &Path) {
    expect(
        dir,
        &[
            "gov",
            "init",
            "--root-key",
            "root1.key",
            "--root-key",
            "root2.key",
            "--root-key",
            "root3.key",
            "--root-threshold",
            "2",
            "--attest-key",
            "attest1.key",
            "--attest-key",
            "attest2.key",
            "--attest-threshold",
            "2",
            "--policy-key",
            "policy1.key",
            "--witness-key",
            "witness1.key",
            "--out",
            "root.1.cbor",
        ],
        0,
    );
    let err = expect(dir, &["gov", "verify", "root.1.cbor"], 1);
    assert!(err.contains("threshold"), "{err}");
    expect(
        dir,
        &["gov", "sign", "root.1.cbor", "--key", "root1.key"],
        0,
    );
    expect(
        dir,
        &["gov", "sign", "root.1.cbor", "--key", "root2.key"],
        0,
    );
    assert_eq!(json(dir, &["gov", "verify", "root.1.cbor"])["version"], 1);
}

/// Organisation: request with proof of possession, approval co-signed by two attest admins.
fn approve_organisation(dir: &Path) {
    expect(
        dir,
        &[
            "org",
            "request",
            "--org",
            "acme",
            "--domain",
            "acme.example",
            "--contact",
            "ops@acme.example",
            "--key",
            "org.key",
            "--out",
            "acme.request.cbor",
        ],
        0,
    );
    std::fs::create_dir(dir.join("attestations")).unwrap();
    expect(
        dir,
        &[
            "org",
            "approve",
            "acme.request.cbor",
            "--out",
            "attestations/acme.verified.cbor",
        ],
        0,
    );
    expect(
        dir,
        &[
            "attest",
            "cosign",
            "attestations/acme.verified.cbor",
            "--key",
            "attest1.key",
        ],
        0,
    );
    let err = expect(
        dir,
        &[
            "attest",
            "verify",
            "attestations/acme.verified.cbor",
            "--root",
            "root.1.cbor",
        ],
        1,
    );
    assert!(err.contains("threshold"), "{err}");
    expect(
        dir,
        &[
            "attest",
            "cosign",
            "attestations/acme.verified.cbor",
            "--key",
            "attest2.key",
        ],
        0,
    );
    json(
        dir,
        &[
            "attest",
            "verify",
            "attestations/acme.verified.cbor",
            "--root",
            "root.1.cbor",
        ],
    );
}

/// Policy from TOML.
fn sign_policy(dir: &Path) {
    std::fs::write(dir.join("policy.toml"), format!(
        "version = 1\nexpires_in = \"30d\"\ndeny_agents = [\"acme/agent-2\"]\n[[rate_limits]]\nscope = \"org:acme\"\nrps = 50\nburst = 100\n[[hubs]]\nregion = \"eu-west\"\naddress = \"127.0.0.1:7800\"\nkey = \"{}\"\n",
        did(dir, "witness1.key"))).unwrap();
    expect(
        dir,
        &[
            "policy",
            "sign",
            "policy.toml",
            "--key",
            "policy1.key",
            "--out",
            "policy.cbor",
        ],
        0,
    );
    json(
        dir,
        &["policy", "verify", "policy.cbor", "--root", "root.1.cbor"],
    );
    std::fs::write(dir.join("bad.toml"), "version = 1\nsurprise = true\n").unwrap();
    let err = expect(
        dir,
        &[
            "policy",
            "sign",
            "bad.toml",
            "--key",
            "policy1.key",
            "--out",
            "bad.cbor",
        ],
        1,
    );
    assert!(err.contains("surprise"), "{err}");
}

/// A snapshot verified with governance: the denied agent is named with its rule.
fn verify_snapshot_with_governance(dir: &Path) {
    build(dir, "s1.car", None);
    let report = json(
        dir,
        &[
            "snapshot",
            "verify",
            "s1.car",
            "--root",
            "root.1.cbor",
            "--attestations",
            "attestations",
            "--policy",
            "policy.cbor",
        ],
    );
    let governance = &report["governance"];
    assert_eq!(
        governance["accepted"].as_array().unwrap().len(),
        2,
        "{governance}"
    );
    let reasons = governance["rejected"]["acme/agent-2"].to_string();
    assert!(reasons.contains("policy denies agent"), "{reasons}");
}

/// Revoking the org key (from the past) rejects every agent it signed after that time.
fn revoke_organisation_key(dir: &Path) {
    let org_did = did(dir, "org.key");
    expect(
        dir,
        &[
            "org",
            "revoke-key",
            "--org",
            "acme",
            "--key",
            &org_did,
            "--revoked-at",
            "1000",
            "--out",
            "attestations/acme.key-revoked.cbor",
        ],
        0,
    );
    expect(
        dir,
        &[
            "attest",
            "cosign",
            "attestations/acme.key-revoked.cbor",
            "--key",
            "attest1.key",
        ],
        0,
    );
    expect(
        dir,
        &[
            "attest",
            "cosign",
            "attestations/acme.key-revoked.cbor",
            "--key",
            "attest2.key",
        ],
        0,
    );
    let report = json(
        dir,
        &[
            "snapshot",
            "verify",
            "s1.car",
            "--root",
            "root.1.cbor",
            "--attestations",
            "attestations",
        ],
    );
    assert_eq!(
        report["governance"]["accepted"].as_array().unwrap().len(),
        0
    );
    assert!(
        report["governance"]["rejected"]
            .to_string()
            .contains("revoked or rotated out (at 1000)")
    );
    std::fs::remove_file(dir.join("attestations/acme.key-revoked.cbor")).unwrap();
}

/// Root rotation: replace root3 by root4; needs old and new thresholds.
fn rotate_root(dir: &Path) {
    expect(
        dir,
        &[
            "gov",
            "rotate",
            "--current",
            "root.1.cbor",
            "--root-key",
            "root1.key",
            "--root-key",
            "root2.key",
            "--root-key",
            "root4.key",
            "--root-threshold",
            "2",
            "--out",
            "root.2.cbor",
        ],
        0,
    );
    expect(
        dir,
        &["gov", "sign", "root.2.cbor", "--key", "root4.key"],
        0,
    );
    // root3 leaves the root role in version 2: it signs as a key of version 1, which it
    // names; without that the signature would not count, and is refused.
    let err = expect(
        dir,
        &["gov", "sign", "root.2.cbor", "--key", "root3.key"],
        1,
    );
    assert!(err.contains("--root root.N.cbor"), "{err}");
    expect(
        dir,
        &[
            "gov",
            "sign",
            "root.2.cbor",
            "--key",
            "root3.key",
            "--root",
            "root.1.cbor",
        ],
        0,
    );
    // A key of another role on a root: refused, or signed with --force and a warning.
    let err = expect(
        dir,
        &["gov", "sign", "root.2.cbor", "--key", "policy1.key"],
        1,
    );
    assert!(err.contains("is not a root key"), "{err}");
    std::fs::copy(dir.join("root.2.cbor"), dir.join("scratch.cbor")).unwrap();
    let said = expect(
        dir,
        &[
            "gov",
            "sign",
            "scratch.cbor",
            "--key",
            "policy1.key",
            "--force",
        ],
        0,
    );
    assert!(said.contains("warning: signed anyway"), "{said}");
    // A policy bundle checked against the root: an attest key is not a policy key.
    let err = expect(
        dir,
        &[
            "gov",
            "sign",
            "policy.cbor",
            "--key",
            "attest1.key",
            "--root",
            "root.1.cbor",
        ],
        1,
    );
    assert!(err.contains("`policy` role"), "{err}");
    let err = expect(dir, &["gov", "verify", "root.1.cbor", "root.2.cbor"], 1);
    assert!(err.contains("threshold"), "{err}");
    expect(
        dir,
        &["gov", "sign", "root.2.cbor", "--key", "root1.key"],
        0,
    );
    assert_eq!(
        json(dir, &["gov", "verify", "root.1.cbor", "root.2.cbor"])["version"],
        2
    );
    let err = expect(
        dir,
        &["gov", "verify", "root.1.cbor", "root.2.cbor", "root.1.cbor"],
        1,
    );
    assert!(err.contains("rollback"), "{err}");
}

/// Checkpoints: append heads, sign, witness co-signs, verify with the witness threshold.
fn witness_checkpoints(dir: &Path) {
    json(
        dir,
        &[
            "checkpoint",
            "append",
            "--log",
            "heads.log",
            "--snapshot",
            "s1.car",
        ],
    );
    expect(
        dir,
        &[
            "checkpoint",
            "sign",
            "--log",
            "heads.log",
            "--origin",
            "gov.example/heads",
            "--key",
            "log.key",
            "--out",
            "cp.1.note",
        ],
        0,
    );
    let log_did = did(dir, "log.key");
    expect(
        dir,
        &[
            "checkpoint",
            "cosign",
            "cp.1.note",
            "--name",
            "witness.example/w1",
            "--key",
            "witness1.key",
            "--log-key",
            &log_did,
            "--state",
            "witness.state",
        ],
        0,
    );
    build(dir, "s2.car", Some("s1.car"));
    json(
        dir,
        &[
            "checkpoint",
            "append",
            "--log",
            "heads.log",
            "--snapshot",
            "s2.car",
        ],
    );
    expect(
        dir,
        &[
            "checkpoint",
            "sign",
            "--log",
            "heads.log",
            "--origin",
            "gov.example/heads",
            "--key",
            "log.key",
            "--out",
            "cp.2.note",
        ],
        0,
    );
    let proof = expect(
        dir,
        &[
            "checkpoint",
            "prove",
            "--log",
            "heads.log",
            "--old-size",
            "1",
        ],
        0,
    );
    std::fs::write(dir.join("proof.txt"), proof).unwrap();
    expect(
        dir,
        &[
            "checkpoint",
            "cosign",
            "cp.2.note",
            "--name",
            "witness.example/w1",
            "--key",
            "witness1.key",
            "--log-key",
            &log_did,
            "--state",
            "witness.state",
            "--proof",
            "proof.txt",
        ],
        0,
    );
    let witness = format!("witness.example/w1={}", did(dir, "witness1.key"));
    let verified = json(
        dir,
        &[
            "checkpoint",
            "verify",
            "cp.2.note",
            "--log-key",
            &log_did,
            "--witness",
            &witness,
            "--witness-threshold",
            "1",
        ],
    );
    assert_eq!(verified["size"], 2);
    // A rewritten log: the witness refuses to co-sign it.
    std::fs::write(
        dir.join("forged.log"),
        "00".repeat(32) + "\n" + &"11".repeat(32) + "\n" + &"22".repeat(32) + "\n",
    )
    .unwrap();
    expect(
        dir,
        &[
            "checkpoint",
            "sign",
            "--log",
            "forged.log",
            "--origin",
            "gov.example/heads",
            "--key",
            "log.key",
            "--out",
            "cp.forged.note",
        ],
        0,
    );
    let forged_proof = expect(
        dir,
        &[
            "checkpoint",
            "prove",
            "--log",
            "forged.log",
            "--old-size",
            "2",
        ],
        0,
    );
    std::fs::write(dir.join("forged-proof.txt"), forged_proof).unwrap();
    let err = expect(
        dir,
        &[
            "checkpoint",
            "cosign",
            "cp.forged.note",
            "--name",
            "witness.example/w1",
            "--key",
            "witness1.key",
            "--log-key",
            &log_did,
            "--state",
            "witness.state",
            "--proof",
            "forged-proof.txt",
        ],
        1,
    );
    assert!(err.contains("witness refuses"), "{err}");
    let err = expect(
        dir,
        &[
            "checkpoint",
            "verify",
            "cp.1.note",
            "--log-key",
            &log_did,
            "--witness",
            &witness,
            "--witness-threshold",
            "2",
        ],
        1,
    );
    assert!(err.contains("witness cosignatures"), "{err}");
}

#[test]
fn a_root_counts_once_its_threshold_of_root_admins_signed() {
    let (_guard, _dir) = after("bootstrap_root");
}

#[test]
fn an_organisation_is_approved_by_the_attest_threshold() {
    let (_guard, _dir) = after("approve_organisation");
}

#[test]
fn a_policy_is_signed_from_toml() {
    let (_guard, _dir) = after("sign_policy");
}

#[test]
fn a_snapshot_verified_with_governance_names_the_rule_that_rejects_an_agent() {
    let (_guard, _dir) = after("verify_snapshot_with_governance");
}

#[test]
fn revoking_an_organisation_key_rejects_what_it_signed_after() {
    let (_guard, _dir) = after("revoke_organisation_key");
}

#[test]
fn a_root_rotation_needs_the_old_and_new_thresholds_and_never_goes_back() {
    let (_guard, _dir) = after("rotate_root");
}

#[test]
fn checkpoints_are_witnessed_and_a_rewritten_log_is_refused() {
    let (_guard, _dir) = after("witness_checkpoints");
}

#[test]
fn a_corrupt_checkpoint_log_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    expect(path, &["keys", "generate", "--out", "log.key"], 0);
    // 64 bytes, but multi-byte characters: slicing it as hex must not panic.
    std::fs::write(path.join("heads.log"), format!("a{}b\n", "é".repeat(31))).unwrap();
    let err = expect(
        path,
        &[
            "checkpoint",
            "sign",
            "--log",
            "heads.log",
            "--origin",
            "o.example/log",
            "--key",
            "log.key",
            "--out",
            "cp.note",
        ],
        2,
    );
    assert!(err.contains("heads.log:1"), "{err}");
    std::fs::write(path.join("heads.log"), "zz\n").unwrap();
    expect(
        path,
        &["checkpoint", "prove", "--log", "heads.log", "--index", "0"],
        2,
    );
}

#[test]
fn a_threshold_is_required_with_several_keys_and_a_low_one_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for name in ["r1", "r2", "a1", "p1", "w1"] {
        expect(
            dir,
            &["keys", "generate", "--out", &format!("{name}.key")],
            0,
        );
    }
    fn init<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "gov",
            "init",
            "--root-key",
            "r1.key",
            "--root-key",
            "r2.key",
            "--attest-key",
            "a1.key",
            "--policy-key",
            "p1.key",
            "--witness-key",
            "w1.key",
            "--out",
            "root.cbor",
        ];
        args.extend_from_slice(extra);
        args
    }
    let err = expect(dir, &init(&[]), 2);
    assert!(err.contains("--root-threshold is required with 2"), "{err}");
    let err = expect(dir, &init(&["--root-threshold", "3"]), 2);
    assert!(err.contains("between 1 and the 2"), "{err}");
    let said = expect(dir, &init(&["--root-threshold", "1"]), 0);
    assert!(
        said.contains("warning: role `root` needs 1 of its 2 keys"),
        "{said}"
    );
    let said = expect(dir, &init(&["--root-threshold", "2"]), 0);
    assert!(!said.contains("warning"), "{said}");
}
