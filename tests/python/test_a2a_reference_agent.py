"""A reference agent written with the official A2A SDK (`a2a-sdk[http-server]`), published on
a Meridian node from its own card URL, and driven by the SDK's client twice: directly, and
through the node's proxy URL. Every exchange (send, stream, get, cancel, an unknown task) must
come out the same both ways, except that the proxy's card names the node. Skipped where the
SDK's server side is not installed (`.ci/run` installs it)."""

import asyncio
import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from daemons import lone_node

pytest.importorskip("a2a.server.routes")
uvicorn = pytest.importorskip("uvicorn")
starlette_apps = pytest.importorskip("starlette.applications")
from a2a.client import ClientConfig, create_client  # noqa: E402
from a2a.server.agent_execution import AgentExecutor  # noqa: E402
from a2a.server.request_handlers import DefaultRequestHandler  # noqa: E402
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes  # noqa: E402
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater  # noqa: E402
from a2a import types as a2a  # noqa: E402
from a2a.helpers import new_task_from_user_message  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402

BIN = os.environ.get("MERIDIAN_BIN", "meridian")


class Echo(AgentExecutor):
    """Answers a task with an artifact that repeats the message, then completes it."""

    async def execute(self, context, event_queue):
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.start_work()
        await updater.add_artifact([a2a.Part(text=f"echo: {context.get_user_input()}")], name="echo")
        await updater.complete()

    async def cancel(self, context, event_queue):
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference_agent():
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    card = a2a.AgentCard(
        name="Reference Echo",
        description="The A2A SDK's agent, for the proxy's conformance checks",
        version="1.0.0",
        supported_interfaces=[a2a.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=a2a.AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[a2a.AgentSkill(id="echo", name="echo", description="repeats", tags=["echo"])],
    )
    handler = DefaultRequestHandler(agent_executor=Echo(), task_store=InMemoryTaskStore(), agent_card=card)
    app = starlette_apps.Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "the reference agent did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def run(cwd, *args, **kw):
    return subprocess.run([BIN, *args], cwd=cwd, check=True, capture_output=True, text=True, **kw).stdout


@pytest.fixture(scope="module")
def node(tmp_path_factory, reference_agent):
    """A node with the reference agent published by its organisation, `ref`, from its card URL."""
    work = tmp_path_factory.mktemp("ref-node")
    with lone_node(work, MERIDIAN_A2A_ALLOW_PRIVATE="true") as url:
        run(work, "keys", "generate", "--out", "ref.key")
        token = run(work, "--json", "node", "token", "create", "--org", "ref", "--data", "n")
        token = __import__("json").loads(token)["token"]
        run(work, "agent", "publish", "--card", f"{reference_agent}.well-known/agent-card.json", "--allow-private",
            "--org", "ref", "--region", "local", "--org-key", "ref.key", "--node", url, "--token", token)
        yield url


def shape(value):
    """What an exchange looks like without its ids and times: kinds, states, texts."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()
                if k not in ("id", "taskId", "contextId", "messageId", "artifactId", "timestamp")}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


async def exchanges(url):
    """The same conversation with an agent at `url`, as the SDK's client sees it."""
    seen = {}
    client = await create_client(url, client_config=ClientConfig(streaming=False))
    message = a2a.Message(message_id="m1", role=a2a.Role.ROLE_USER, parts=[a2a.Part(text="hi")])
    sent = [MessageToDict(e) async for e in client.send_message(a2a.SendMessageRequest(message=message))]
    seen["send"] = shape(sent)
    task_id = sent[-1]["task"]["id"]
    seen["get"] = shape(MessageToDict(await client.get_task(a2a.GetTaskRequest(id=task_id))))
    for name, call in (("cancel", client.cancel_task(a2a.CancelTaskRequest(id=task_id))),
                       ("unknown", client.get_task(a2a.GetTaskRequest(id="no-such-task")))):
        try:
            await call
            seen[name] = "answered"
        except Exception as error:  # the SDK's own error type is what is compared
            seen[name] = type(error).__name__
    await client.close()
    streaming = await create_client(url)
    message = a2a.Message(message_id="m2", role=a2a.Role.ROLE_USER, parts=[a2a.Part(text="stream")])
    events = [MessageToDict(e) async for e in streaming.send_message(a2a.SendMessageRequest(message=message))]
    seen["stream"] = shape(events)
    await streaming.close()
    return seen


def test_the_proxy_is_transparent_to_the_sdk(reference_agent, node):
    proxy = f"{node}/a2a/ref/reference-echo"
    direct = asyncio.run(exchanges(reference_agent))
    proxied = asyncio.run(exchanges(proxy))
    assert direct["send"][-1]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert direct["cancel"] == "TaskNotCancelableError" and direct["unknown"] == "TaskNotFoundError"
    assert len(direct["stream"]) >= 2, direct["stream"]
    assert proxied == direct
    # And the proxied conversation did go through the node (its card named only the node).
    with urllib.request.urlopen(f"{node}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    forwarded = [line for line in metrics.splitlines()
                 if line.startswith('meridian_a2a_calls_total{outcome="forwarded"}')]
    assert forwarded and float(forwarded[0].split()[-1]) >= 5, forwarded
