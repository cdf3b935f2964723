"""Governance documents made with the CLI, verified from Python; the acceptance rule."""

import time

import pytest

import meridian
from conftest import build

NOW = int(time.time())


def did(cli, key):
    return cli.run("keys", "show", key).stdout.strip()


@pytest.fixture
def gov(cli):
    """A root (1 of 1 per role), acme verified, a policy denying acme/agent-2, a checkpoint."""
    for name in ("root", "attest", "policy", "witness", "log"):
        cli.run("keys", "generate", "--out", f"{name}.key")
    cli.run("gov", "init", "--root-key", "root.key", "--attest-key", "attest.key",
            "--policy-key", "policy.key", "--witness-key", "witness.key", "--out", "root.1.cbor")
    cli.run("gov", "sign", "root.1.cbor", "--key", "root.key")
    cli.run("org", "request", "--org", "acme", "--domain", "acme.example", "--contact",
            "ops@acme.example", "--key", "org.key", "--out", "acme.request.cbor")
    cli.run("org", "approve", "acme.request.cbor", "--out", "acme.verified.cbor")
    cli.run("attest", "cosign", "acme.verified.cbor", "--key", "attest.key")
    (cli.cwd / "policy.toml").write_text(
        'version = 1\nexpires_in = "30d"\ndeny_agents = ["acme/agent-2"]\n'
        '[[rate_limits]]\nscope = "org:acme"\nrps = 50\nburst = 100\n'
    )
    cli.run("policy", "sign", "policy.toml", "--key", "policy.key", "--out", "policy.cbor")
    return cli


def test_a_root_chain_verifies_and_an_unsigned_root_does_not(gov):
    root = meridian.verify_root_chain([gov.cwd / "root.1.cbor"], now=NOW)
    assert root["version"] == 1
    assert root["roles"]["attest"]["keys"] == [did(gov, "attest.key")]
    gov.run("gov", "init", "--root-key", "root.key", "--attest-key", "attest.key",
            "--policy-key", "policy.key", "--witness-key", "witness.key", "--out", "unsigned.cbor")
    with pytest.raises(meridian.GovernanceError, match="threshold"):
        meridian.verify_root_chain([gov.cwd / "unsigned.cbor"], now=NOW)
    with pytest.raises(meridian.InputError):
        meridian.verify_root_chain([], now=NOW)


def test_attestations_verify_until_revoked(gov):
    roots = [gov.cwd / "root.1.cbor"]
    seen = meridian.verify_attestation(gov.cwd / "acme.verified.cbor", roots, now=NOW)
    assert seen["subject"] == "org:acme" and seen["type"] == "org.verified"
    gov.run("attest", "revoke", "acme.verified.cbor", "--reason", "key leaked", "--out", "revoke.cbor")
    gov.run("attest", "cosign", "revoke.cbor", "--key", "attest.key")
    with pytest.raises(meridian.RevokedError):
        meridian.verify_attestation(gov.cwd / "acme.verified.cbor", roots, [gov.cwd / "revoke.cbor"], now=NOW)
    # Signed by the wrong key: not by the attest role.
    gov.run("org", "approve", "acme.request.cbor", "--out", "forged.cbor")
    gov.run("attest", "cosign", "forged.cbor", "--key", "policy.key")
    with pytest.raises(meridian.GovernanceError):
        meridian.verify_attestation(gov.cwd / "forged.cbor", roots, now=NOW)
    # Expired by the time given.
    with pytest.raises(meridian.GovernanceError):
        meridian.verify_attestation(gov.cwd / "acme.verified.cbor", roots, now=NOW + 3 * 365 * 86_400)


def test_policy_bundles_verify_and_tampering_is_caught(gov):
    roots = [gov.cwd / "root.1.cbor"]
    policy = meridian.verify_policy(gov.cwd / "policy.cbor", roots, now=NOW)
    assert policy["deny_agents"] == ["acme/agent-2"]
    assert policy["rate_limits"][0] == {"scope": "org:acme", "requests_per_second": 50, "burst": 100}
    data = bytearray((gov.cwd / "policy.cbor").read_bytes())
    data[-3] ^= 0x01
    with pytest.raises(meridian.GovernanceError):
        meridian.verify_policy(bytes(data), roots, now=NOW)


def test_the_acceptance_rule_gives_every_reason(gov):
    build(gov, "s1.car")
    snapshot = meridian.Snapshot.open(gov.cwd / "s1.car", now=NOW)
    roots = [gov.cwd / "root.1.cbor"]
    verdict = snapshot.accept(roots, [gov.cwd / "acme.verified.cbor"], gov.cwd / "policy.cbor", now=NOW)
    assert verdict["root_version"] == 1 and verdict["policy_version"] == 1
    assert "acme/agent-0" in verdict["accepted"]
    assert list(verdict["rejected"]) == ["acme/agent-2"]
    assert any("policy denies agent" in reason for reason in verdict["rejected"]["acme/agent-2"])
    # Without the attestation nothing is accepted, and the reason says why.
    unverified = snapshot.accept(roots, now=NOW)
    assert unverified["accepted"] == []
    assert all(any("not verified" in r for r in reasons) for reasons in unverified["rejected"].values())
    # A document that does not verify is skipped and reported, not fatal.
    skipped = snapshot.accept(roots, [b"\xa0"], now=NOW)
    assert len(skipped["skipped"]) == 1


def test_checkpoints_verify_with_the_log_key_and_witnesses(gov):
    build(gov, "s1.car")
    gov.run("checkpoint", "append", "--log", "heads.log", "--snapshot", "s1.car")
    gov.run("checkpoint", "sign", "--log", "heads.log", "--origin", "gov.example/heads",
            "--key", "log.key", "--out", "checkpoint.txt")
    note = (gov.cwd / "checkpoint.txt").read_text()
    seen = meridian.verify_checkpoint(note, did(gov, "log.key"))
    assert seen["origin"] == "gov.example/heads" and seen["size"] == 1
    with pytest.raises(meridian.SignatureError):
        meridian.verify_checkpoint(note, did(gov, "witness.key"))
    with pytest.raises(meridian.GovernanceError, match="witness"):
        meridian.verify_checkpoint(note, did(gov, "log.key"), {"w1": did(gov, "witness.key")}, 1)


def test_a_rotated_out_key_signs_nothing_and_a_thiefs_rotation_is_skipped(gov):
    for name in ("fresh", "thief"):
        gov.run("keys", "generate", "--out", f"{name}.key")
    stolen, fresh = did(gov, "org.key"), did(gov, "fresh.key")
    gov.run("org", "rotate-key", "--org", "acme", "--current-key", "org.key", "--add-key", "fresh.key",
            "--remove-key", stolen, "--out", "rotation.cbor")
    gov.run("org", "rotate-key", "--org", "acme", "--current-key", "org.key", "--current-set", fresh,
            "--current-set", stolen, "--add-key", "thief.key", "--remove-key", fresh,
            "--out", "thief.cbor")
    documents = [gov.cwd / "acme.verified.cbor", gov.cwd / "thief.cbor", gov.cwd / "rotation.cbor"]
    roots = [gov.cwd / "root.1.cbor"]
    build(gov, "stolen.car")
    verdict = meridian.Snapshot.open(gov.cwd / "stolen.car", now=NOW).accept(roots, documents, now=NOW)
    assert verdict["accepted"] == []
    assert all(any("rotated out" in r for r in reasons) for reasons in verdict["rejected"].values())
    assert len(verdict["skipped"]) == 1, verdict["skipped"]
    assert verdict["skipped"][0].startswith("document #2:") and "current" in verdict["skipped"][0]
    gov.json("snapshot", "build", "--key", "node.key", "--org-key", "fresh.key", "--org", "acme",
             "--region", "eu-west", "--cards", "cards", "--out", "fresh.car")
    verdict = meridian.Snapshot.open(gov.cwd / "fresh.car", now=NOW).accept(roots, documents, now=NOW)
    assert "acme/agent-0" in verdict["accepted"]


def test_a_policy_names_the_node_keys_hubs_admit(gov):
    gov.run("keys", "generate", "--out", "admitted.key")
    node = did(gov, "admitted.key")
    (gov.cwd / "admit.toml").write_text(f'version = 2\nexpires_in = "30d"\nallow_node_keys = ["{node}"]\n')
    gov.run("policy", "sign", "admit.toml", "--key", "policy.key", "--out", "admit.cbor")
    policy = meridian.verify_policy(gov.cwd / "admit.cbor", [gov.cwd / "root.1.cbor"], now=NOW)
    assert policy["allow_node_keys"] == [node]
    assert meridian.verify_policy(gov.cwd / "policy.cbor", [gov.cwd / "root.1.cbor"], now=NOW)["allow_node_keys"] == []
