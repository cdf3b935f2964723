"""The HTTP client against a real `meridian node run`."""

import asyncio
import time

import pytest

import meridian
from conftest import build, card

NOW = int(time.time())


def publish(client, key, name, skill="search"):
    block = meridian.sign_manifest(card(name, skill), "acme", "local", key, NOW)
    return client.publish(block)


def test_publish_search_get_and_errors(node):
    key = meridian.Keypair.generate()
    client = meridian.NodeClient(node.url, token=node.token("acme"))
    assert client.health()["status"] == "ok"
    # Signed in Python, verified by the node in Rust.
    publish(client, key, "Helper", "translate")
    agent = client.get("acme/helper")
    assert agent["agent_id"] == "acme/helper"
    found = client.search(skill="translate")
    assert [a["agent_id"] for a in found["agents"]] == ["acme/helper"]
    assert [a["agent_id"] for a in client.search_all(org="acme")] == ["acme/helper"]
    # Ranked: any word of q, best first, with a score; the default order needs every word.
    publish(client, key, "Speaker", "speak")
    ranked = client.search("please translate or speak", sort="relevance")["agents"]
    assert {a["agent_id"] for a in ranked} == {"acme/helper", "acme/speaker"}
    assert all(1 <= a["score"] <= 100 for a in ranked)
    assert client.search("translate speak")["agents"] == []
    with pytest.raises(meridian.NodeError) as unsorted:
        client.search("x", sort="newest")
    assert unsorted.value.status == 400
    with pytest.raises(meridian.NodeError) as unknown:
        client.get("acme/nobody")
    assert unknown.value.status == 404
    # No token: refused with the node's reason.
    anonymous = meridian.NodeClient(node.url)
    with pytest.raises(meridian.NodeError) as refused:
        publish(anonymous, key, "Sneaky")
    assert refused.value.status == 401
    with pytest.raises(ValueError):
        meridian.NodeClient("ftp://example")


def test_a_signed_removal_hides_the_agent_and_an_older_copy_cannot_return(node):
    key = meridian.Keypair.generate()
    client = meridian.NodeClient(node.url, token=node.token("acme"))
    old = meridian.sign_manifest(card("Gone"), "acme", "local", key, NOW)
    client.publish(old)
    removal = meridian.sign_removal("acme/gone", "local", key, NOW + 1)
    answer = client.delete("acme/gone", removal=removal)
    assert answer["signed"] is True and answer["removed_at"] == NOW + 1
    with pytest.raises(meridian.NodeError) as gone:
        client.get("acme/gone")
    assert (gone.value.status, gone.value.code) == (410, "agent_removed")
    # The old manifest again: refused, it is older than the removal.
    with pytest.raises(meridian.NodeError) as stale:
        client.publish(old)
    assert (stale.value.status, stale.value.code) == (409, "agent_removed")
    # A newer manifest brings the agent back.
    client.publish(meridian.sign_manifest(card("Gone"), "acme", "local", key, NOW + 2))
    assert client.get("acme/gone")["agent_id"] == "acme/gone"


def test_events_resume_after_the_last_seen_id(node):
    key = meridian.Keypair.generate()
    client = meridian.NodeClient(node.url, token=node.token("acme"), timeout=5)
    publish(client, key, "First")
    publish(client, key, "Second")
    # From the start of the node's history (id 0), then from the first event on.
    events = client.events(last_event_id=0, reconnect=False)
    first = next(e for e in events if e.event.startswith("agent"))
    events.close()
    assert first.id is not None
    publish(client, key, "Third")
    resumed = client.events(last_event_id=first.id, reconnect=False)
    later = []
    for event in resumed:
        if event.event.startswith("agent"):
            later.append(event)
        if len(later) == 2:
            break
    resumed.close()
    assert all(e.id > first.id for e in later)
    assert "acme/second" in str(later[0].data)


def test_snapshot_export_verifies_in_python_and_import_needs_an_admin(node, cli):
    key = meridian.Keypair.generate()
    client = meridian.NodeClient(node.url, token=node.token("acme"))
    publish(client, key, "Helper")
    car = client.export_snapshot()
    snapshot = meridian.Snapshot.open(car, now=NOW)
    assert snapshot.get("acme/helper") is not None
    # A snapshot built offline by the CLI, imported over HTTP by an admin.
    build(cli, "s1.car")
    offline = (cli.cwd / "s1.car").read_bytes()
    with pytest.raises(meridian.NodeError) as forbidden:
        client.import_snapshot(offline)
    assert forbidden.value.status == 403
    admin = meridian.NodeClient(node.url, token=node.token())
    admin.import_snapshot(offline)
    publishers = {head["publisher"] for head in admin.heads()}
    assert meridian.Snapshot.open(offline).publisher in publishers
    # Tampered bytes are refused by the node.
    tampered = bytearray(offline)
    tampered[-1] ^= 0x01
    with pytest.raises(meridian.NodeError) as rejected:
        admin.import_snapshot(bytes(tampered))
    assert rejected.value.status == 422


def test_the_async_client_does_the_same(node):
    key = meridian.Keypair.generate()

    async def main():
        client = meridian.AsyncNodeClient(node.url, token=node.token("acme"), timeout=5)
        assert (await client.health())["status"] == "ok"
        block = meridian.sign_manifest(card("Async"), "acme", "local", key, NOW)
        await client.publish(block)
        assert (await client.get("acme/async"))["agent_id"] == "acme/async"
        async for event in client.events(last_event_id=0, reconnect=False):
            if event.event.startswith("agent"):
                return event
        return None

    event = asyncio.run(main())
    assert event is not None and "acme/async" in str(event.data)


def test_an_organisation_deprecates_an_agent_that_stays_listed_but_ranks_last(node):
    key = meridian.Keypair.generate()
    client = meridian.NodeClient(node.url, token=node.token("acme"))
    publish(client, key, "Echo", "echo")
    publish(client, key, "Echo Next", "echo")
    ranked = lambda: [a["agent_id"] for a in client.search("echo", sort="relevance")["agents"]]  # noqa: E731
    assert ranked() == ["acme/echo", "acme/echo-next"]

    # The current manifest, checked, signed again as deprecated and published.
    answer = client.deprecate("acme/echo", key, superseded_by="acme/echo-next")
    assert answer["agent_id"] == "acme/echo"
    agent = client.get("acme/echo")
    assert (agent["status"], agent["superseded_by"]) == ("deprecated", "acme/echo-next")
    assert agent["updated_at"] == NOW + 1
    assert ranked() == ["acme/echo-next", "acme/echo"]
    assert [a["agent_id"] for a in client.search(status="active")["agents"]] == ["acme/echo-next"]
    block, said = client.current_manifest("acme/echo")
    assert (said["status"], said["superseded_by"]) == ("deprecated", "acme/echo-next")

    # Offline: the same from a card, and the refusals.
    offline = meridian.verify_manifest(
        meridian.sign_manifest(card("Old"), "acme", "local", key, NOW, deprecated=True)
    )
    assert (offline["status"], offline["superseded_by"]) == ("deprecated", None)
    with pytest.raises(meridian.InputError, match="deprecated=True"):
        meridian.sign_manifest(card("Old"), "acme", "local", key, NOW, superseded_by="acme/x")
    with pytest.raises(meridian.InputError, match="itself"):
        meridian.sign_deprecation(block, key, NOW + 5, superseded_by="acme/echo")
    with pytest.raises(meridian.InputError, match="not after"):
        meridian.sign_deprecation(block, key, NOW + 1)
    tampered = bytearray(block)
    tampered[-1] ^= 1
    with pytest.raises(meridian.MeridianError):
        meridian.sign_deprecation(bytes(tampered), key, NOW + 5)
    with pytest.raises(meridian.NodeError) as bad:
        client.search(status="gone")
    assert bad.value.status == 400
