"""Snapshots built by the `meridian` CLI, verified from Python, and every way to fail."""

import time
from pathlib import Path

import pytest

import meridian
from conftest import build, card

NOW = int(time.time())


def test_python_sees_what_the_cli_inspects(cli):
    build(cli, "s1.car")
    expected = cli.json("snapshot", "inspect", "s1.car")
    snapshot = meridian.Snapshot.open(cli.cwd / "s1.car", now=NOW)
    seen = snapshot.inspect()
    for field in ("root", "data", "publisher", "seq", "agents", "blocks"):
        assert seen[field] == expected[field], field
    assert len(snapshot) == 5
    assert snapshot.prev is None
    # From bytes and from a str path too.
    data = (cli.cwd / "s1.car").read_bytes()
    assert meridian.Snapshot.open(data).root == snapshot.root
    assert meridian.Snapshot.open(str(cli.cwd / "s1.car")).root == snapshot.root


def test_agents_lookup_and_diff_match_the_cli(cli):
    build(cli, "s1.car")
    (cli.cwd / "cards" / "agent-0.json").write_text(__import__("json").dumps(card("Agent 0", "translate")))
    (cli.cwd / "cards" / "agent-9.json").write_text(__import__("json").dumps(card("Agent 9")))
    (cli.cwd / "cards" / "agent-4.json").unlink()
    build(cli, "s2.car", prev="s1.car")
    s1 = meridian.Snapshot.open(cli.cwd / "s1.car")
    s2 = meridian.Snapshot.open(cli.cwd / "s2.car", after=s1, now=NOW)
    assert s2.seq == s1.seq + 1 and s2.prev == s1.root
    expected = cli.json("snapshot", "diff", "s1.car", "s2.car")
    diff = s2.diff(s1)
    for field in ("added", "removed", "changed"):
        assert sorted(diff[field]) == sorted(expected[field]), field
    assert diff == {"added": ["acme/agent-9"], "removed": ["acme/agent-4"], "changed": ["acme/agent-0"]}
    ids = [agent["agent_id"] for agent in s2.agents()]
    assert ids == sorted(ids) and "acme/agent-9" in ids
    assert "translate" in s2.get("acme/agent-0")["card"]
    assert s2.get("acme/nobody") is None


def test_a_delta_opens_on_top_of_the_snapshot_it_extends(cli):
    build(cli, "s1.car")
    (cli.cwd / "cards" / "agent-1.json").write_text(__import__("json").dumps(card("Agent 1", "plan")))
    build(cli, "s2.car", prev="s1.car")
    cli.run("snapshot", "delta", "s1.car", "s2.car", "--out", "d.car")
    s1 = meridian.Snapshot.open(cli.cwd / "s1.car")
    delta = meridian.Snapshot.open(cli.cwd / "d.car", after=s1)
    assert len(delta) == 5
    assert "plan" in delta.get("acme/agent-1")["card"]
    # Without its base, the delta lacks blocks.
    with pytest.raises(meridian.MissingBlockError):
        meridian.Snapshot.open(cli.cwd / "d.car")


def test_every_way_to_fail_has_its_exception(cli):
    build(cli, "s1.car")
    build(cli, "s2.car", prev="s1.car")
    s1 = meridian.Snapshot.open(cli.cwd / "s1.car")
    s2 = meridian.Snapshot.open(cli.cwd / "s2.car")
    with pytest.raises(meridian.RollbackError, match="rollback"):
        meridian.Snapshot.open(cli.cwd / "s1.car", after=s2)
    other = meridian.Keypair.generate().did
    with pytest.raises(meridian.WrongPublisherError):
        meridian.Snapshot.open(cli.cwd / "s1.car", publisher=other)
    with pytest.raises(meridian.ExpiredError, match="expired"):
        meridian.Snapshot.open(cli.cwd / "s1.car", now=NOW + 365 * 86_400)
    data = bytearray((cli.cwd / "s1.car").read_bytes())
    data[-1] ^= 0x01
    with pytest.raises(meridian.HashMismatchError):
        meridian.Snapshot.open(bytes(data))
    with pytest.raises(meridian.InvalidSnapshotError, match="truncated"):
        meridian.Snapshot.open((cli.cwd / "s1.car").read_bytes()[:100])
    with pytest.raises(meridian.InputError):
        meridian.Snapshot.open(12345)
    with pytest.raises(meridian.InputError, match="publisher"):
        meridian.Snapshot.open(cli.cwd / "s1.car", publisher="did:key:nonsense")
    with pytest.raises(OSError):
        meridian.Snapshot.open(Path("/nonexistent.car"))
    # Every one of them is a VerificationError, and a MeridianError.
    assert issubclass(meridian.HashMismatchError, meridian.VerificationError)
    assert issubclass(meridian.VerificationError, meridian.MeridianError)
    # The good ones still open.
    assert meridian.Snapshot.open(cli.cwd / "s2.car", after=s1).seq == 2


def test_an_oversized_event_ends_the_stream_with_an_error():
    import io

    from meridian import client

    huge = b"data: " + b"x" * (client.EVENT_BYTES_MAX + 10) + b"\n\n"
    with pytest.raises(meridian.NodeError, match="event_too_large"):
        list(client._parse_sse(io.BytesIO(huge)))
    small = b"id: 3\nevent: agent.published\ndata: {\"a\": 1}\n\n"
    (event,) = list(client._parse_sse(io.BytesIO(small)))
    assert event.id == 3 and event.data == {"a": 1}
