"""The A2A project's official Python client (`a2a-sdk`, from PyPI) against the demo's nodes:
pointed at a node's root it finds agents through the node's own agent (streamed event by event,
then read again and refused a cancel as the SDK's own error types); pointed at an agent's proxy
URL it gets the agent's answer, from a card that names no URL past the node; an agent's error
comes back byte for byte; and a rate-limit refusal reaches the SDK as a 429 with Retry-After.
Skipped where the SDK is not installed (`.ci/run` installs it)."""

import asyncio
import json
import urllib.request

import pytest

a2a_client = pytest.importorskip("a2a.client")
a2a_types = pytest.importorskip("a2a.types")
from google.protobuf.json_format import MessageToDict  # noqa: E402  (comes with the SDK)


def request(text, message_id="m1"):
    return a2a_types.SendMessageRequest(
        message=a2a_types.Message(
            message_id=message_id, role=a2a_types.Role.ROLE_USER, parts=[a2a_types.Part(text=text)]
        )
    )


def post(url, body):
    call = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    call.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def urls_in(value, found):
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "url" and isinstance(inner, str):
                found.append(inner)
            else:
                urls_in(inner, found)
    elif isinstance(value, list):
        for inner in value:
            urls_in(inner, found)
    return found


def test_a_client_pointed_at_the_node_finds_agents_through_its_own_agent(demo_urls):
    node = demo_urls["nodes"][0]["http"]

    async def run():
        client = await a2a_client.create_client(node)
        events = [MessageToDict(e) async for e in client.send_message(request("echo"))]
        # Streamed: the task working, its artifact, its completion.
        assert [next(iter(e)) for e in events] == ["task", "artifactUpdate", "statusUpdate"], events
        done = events[-1]["statusUpdate"]["status"]
        assert done["state"] == "TASK_STATE_COMPLETED"
        matches = done["message"]["parts"][1]["data"]["matches"]
        assert matches[0]["agentId"] == "acme/echo"
        assert matches[0]["proxyUrl"] == f"{node}/a2a/acme/echo"
        assert matches[0]["provenance"]["publisher"].startswith("did:key:")
        # Read again; a completed task is not cancellable; an unknown one is not found.
        task_id = events[0]["task"]["id"]
        task = await client.get_task(a2a_types.GetTaskRequest(id=task_id))
        assert task.id == task_id and task.status.state == a2a_types.TaskState.TASK_STATE_COMPLETED
        with pytest.raises(a2a_types.TaskNotCancelableError):
            await client.cancel_task(a2a_types.CancelTaskRequest(id=task_id))
        with pytest.raises(a2a_types.TaskNotFoundError):
            await client.get_task(a2a_types.GetTaskRequest(id="no-such-task"))
        await client.close()

    asyncio.run(run())


def test_a_client_pointed_at_a_proxy_url_talks_to_the_agent_and_never_past_the_node(demo_urls):
    node = demo_urls["nodes"][0]["http"]
    proxy = f"{node}/a2a/acme/echo"
    with urllib.request.urlopen(f"{proxy}/.well-known/agent-card.json", timeout=30) as answer:
        card = json.load(answer)
    assert urls_in(card, []) and all(url == proxy for url in urls_in(card, [])), card

    async def run():
        client = await a2a_client.create_client(proxy)
        answers = [MessageToDict(e) async for e in client.send_message(request("hello", "m2"))]
        assert answers[-1]["message"]["parts"][0]["text"] == "echo (SendMessage): hello", answers
        await client.close()

    asyncio.run(run())
    # The agent's own JSON-RPC error comes back exactly as the agent sent it.
    with urllib.request.urlopen(f"{node}/api/v1/agents/acme/echo", timeout=30) as answer:
        direct = json.load(answer)["card"]["supportedInterfaces"][0]["url"]
    wrong = {"jsonrpc": "2.0", "id": 41, "method": "NoSuchMethod", "params": {}}
    assert post(proxy, wrong) == post(direct, wrong)


def test_a_rate_limit_refusal_reaches_the_sdk_as_a_retryable_429(demo_urls):
    node = demo_urls["nodes"][1]["http"]

    async def run():
        client = await a2a_client.create_client(node, client_config=a2a_client.ClientConfig(streaming=False))

        async def one(i):
            try:
                return [e async for e in client.send_message(request("echo", f"r{i}"))]
            except a2a_client.A2AClientError as error:
                return error

        outcomes = await asyncio.gather(*(one(i) for i in range(200)))
        await client.close()
        return [o for o in outcomes if isinstance(o, Exception)]

    refused = asyncio.run(run())
    assert refused, "200 calls at once exceed the default burst of 100"
    cause = refused[0].__cause__
    assert cause.response.status_code == 429
    assert int(cause.response.headers["retry-after"]) >= 1
    body = cause.response.json()
    assert body["error"]["data"]["reason"] == "RATE_LIMITED"
