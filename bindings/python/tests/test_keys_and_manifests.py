"""Keys and manifests: what Python signs, Rust verifies, and the reverse."""

import json
import os
import stat

import pytest

import meridian
from conftest import card


def test_a_key_saved_in_python_is_the_key_the_cli_reads(cli):
    key = meridian.Keypair.generate()
    key.save(cli.cwd / "py.key")
    assert stat.S_IMODE(os.stat(cli.cwd / "py.key").st_mode) == 0o600
    assert cli.run("keys", "show", "py.key").stdout.strip() == key.did
    # And a key the CLI made loads in Python.
    shown = cli.run("keys", "show", "org.key").stdout.strip()
    assert meridian.Keypair.load(cli.cwd / "org.key").did == shown
    with pytest.raises(OSError, match="py.key"):
        key.save(cli.cwd / "py.key")


def test_bad_keys_are_input_errors():
    with pytest.raises(meridian.InputError, match="32 bytes"):
        meridian.Keypair.from_secret(b"short")
    with pytest.raises(meridian.InputError):
        meridian.Keypair.from_key_file("not a key file")
    with pytest.raises(OSError):
        meridian.Keypair.load("/nonexistent/key")
    same = meridian.Keypair.from_secret(bytes(range(32)))
    assert same.did == meridian.Keypair.from_key_file(same.to_key_file()).did


def test_a_manifest_signed_in_python_verifies_and_says_what_it_signed():
    key = meridian.Keypair.generate()
    block = meridian.sign_manifest(card("Helper"), "acme", "eu-west", key, 1_800_000_000)
    manifest = meridian.verify_manifest(block)
    assert manifest["agent_id"] == "acme/helper"
    assert manifest["signer"] == key.did
    assert manifest["region"] == "eu-west"
    assert json.loads(manifest["card"])["name"] == "Helper"
    # JSON text works as well as a dict, and gives the same block.
    text = json.dumps(card("Helper"))
    assert meridian.sign_manifest(text, "acme", "eu-west", key, 1_800_000_000) == meridian.sign_manifest(
        json.loads(text), "acme", "eu-west", key, 1_800_000_000
    )


def test_tampered_and_malformed_manifests_raise_their_own_errors():
    key = meridian.Keypair.generate()
    block = meridian.sign_manifest(card("Helper"), "acme", "eu-west", key, 1)
    # Change the card's text (still a valid card and encoding): the signature no longer holds.
    tampered = block.replace(b"agent Helper", b"agent Helpe!")
    assert tampered != block
    with pytest.raises(meridian.SignatureError):
        meridian.verify_manifest(tampered)
    with pytest.raises(meridian.InputError):
        meridian.verify_manifest(b"\xa1")
    bad_card = {"name": "", "supportedInterfaces": []}
    with pytest.raises(meridian.InputError, match="card"):
        meridian.sign_manifest(bad_card, "acme", "eu-west", key, 1)
    with pytest.raises(meridian.InputError, match="org"):
        meridian.sign_manifest(card("Helper"), "Not An Org", "eu-west", key, 1)


def test_a_removal_signed_in_python_verifies_as_a_removal():
    key = meridian.Keypair.generate()
    block = meridian.sign_removal("acme/helper", "eu-west", key, 1_800_000_100)
    removal = meridian.verify_manifest(block)
    assert removal["removed"] is True
    assert removal["card"] == ""
    assert (removal["agent_id"], removal["org"], removal["signer"]) == ("acme/helper", "acme", key.did)
    assert meridian.verify_manifest(meridian.sign_manifest(card("Helper"), "acme", "eu-west", key, 1))[
        "removed"
    ] is False
    # Flip the date: the signature covers it.
    forged = block.replace((1_800_000_100).to_bytes(4, "big"), (1_900_000_000).to_bytes(4, "big"))
    assert forged != block
    with pytest.raises(meridian.SignatureError):
        meridian.verify_manifest(forged)
    with pytest.raises(meridian.InputError, match="org/name"):
        meridian.sign_removal("helper", "eu-west", key, 1)
