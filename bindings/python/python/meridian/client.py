"""A typed client for a Meridian node's HTTP API (``docs/api.md``), sync and async.

It needs nothing beyond the standard library. :class:`NodeClient` blocks;
:class:`AsyncNodeClient` offers the same methods as coroutines (each request runs in a worker
thread, so an event loop is never blocked) and :meth:`AsyncNodeClient.events` as an async
iterator. A node's error answers (``{"error": {"code", "message"}}``) raise :class:`NodeError`
with the status, code and message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from ._native import MeridianError, verify_manifest

#: Longest answer read into memory, in bytes (a snapshot export can be large; see
#: ``max_bytes`` on :meth:`NodeClient.export_snapshot`).
ANSWER_BYTES_MAX = 64 * 1024 * 1024

#: Largest single event accepted from a stream, in bytes; a bigger one ends the stream with a
#: :class:`NodeError` instead of filling memory.
EVENT_BYTES_MAX = 1024 * 1024

#: How long to wait before reconnecting an event stream, in seconds (doubles up to 30 s).
RECONNECT_DELAY_SECS = 0.5


class NodeError(MeridianError):
    """A node answered with an error status."""

    def __init__(self, status: int, code: str, message: str, url: str) -> None:
        super().__init__(f"{status} {code}: {message} ({url})")
        #: The HTTP status.
        self.status = status
        #: The node's error code (``unknown_agent``, ``rate_limited``, ...).
        self.code = code
        #: The node's explanation.
        self.message = message
        #: The request's URL.
        self.url = url


@dataclass(frozen=True)
class Event:
    """One registry change from ``GET /api/v1/events``."""

    #: The event id; pass it back as ``last_event_id`` to resume after it.
    id: int | None
    #: The kind (``agent.published``, ``agent.deleted``, ``snapshot.imported``, ...).
    event: str
    #: The event's JSON payload.
    data: Any


class NodeClient:
    """A blocking client for one node.

    ``url`` is the node's gateway (``http://127.0.0.1:7700``); ``token`` an organisation's
    (to publish) or an admin's (to import), sent as a bearer token; ``timeout`` in seconds.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"node url must be http(s)://host[:port], not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int = ANSWER_BYTES_MAX,
    ) -> tuple[int, dict[str, str], bytes]:
        url = self.url + path
        if query:
            pairs = {k: str(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        request = urllib.request.Request(url, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                data = answer.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise NodeError(answer.status, "too_large", f"answer over {max_bytes} bytes", url)
                return answer.status, dict(answer.headers.items()), data
        except urllib.error.HTTPError as error:
            raw = error.read(1024 * 1024)
            code, message = "http_error", raw.decode("utf-8", "replace")
            try:
                detail = json.loads(raw)["error"]
                code, message = detail.get("code", code), detail.get("message", message)
            except (ValueError, KeyError, TypeError):
                pass
            raise NodeError(error.code, code, message, url) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, _, data = self._request(method, path, **kwargs)
        return json.loads(data) if data else None

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return self._json("GET", "/health")

    def search(
        self,
        q: str | None = None,
        *,
        skill: str | None = None,
        tag: str | None = None,
        org: str | None = None,
        region: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> dict[str, Any]:
        """One page of ``GET /api/v1/agents``: ``{"agents": [...], "next_cursor": ...}``.

        ``sort="relevance"`` ranks the agents matching any word of ``q`` by relevance, each with
        a ``score`` from 1 to 100 (deprecated agents after every active one); without it every
        word of ``q`` must appear and the order is by agent id. ``status`` is ``"active"`` or
        ``"deprecated"``."""
        query = {"q": q, "skill": skill, "tag": tag, "org": org, "region": region,
                 "status": status, "limit": limit, "cursor": cursor, "sort": sort}
        return self._json("GET", "/api/v1/agents", query=query)

    def search_all(self, q: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every agent matching, page after page."""
        cursor = None
        while True:
            page = self.search(q, cursor=cursor, **filters)
            yield from page.get("agents", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get(self, agent_id: str) -> dict[str, Any]:
        """``GET /api/v1/agents/{org}/{agent}``; raises :class:`NodeError` (404) if unknown."""
        org, _, name = agent_id.partition("/")
        if not org or not name:
            raise ValueError(f"agent id must be org/name, not {agent_id!r}")
        return self._json("GET", f"/api/v1/agents/{_quote(org)}/{_quote(name)}")

    def publish(self, manifest: bytes) -> dict[str, Any]:
        """``POST /api/v1/agents`` with a manifest block from :func:`meridian.sign_manifest`
        (needs the organisation's token)."""
        body = json.dumps({"manifest": base64.b64encode(manifest).decode()}).encode()
        return self._json("POST", "/api/v1/agents", body=body, content_type="application/json")

    def block(self, cid: str) -> bytes:
        """``GET /api/v1/blocks/{cid}``: one block's bytes (check them against ``cid``)."""
        _, _, data = self._request("GET", f"/api/v1/blocks/{_quote(cid)}")
        return data

    def current_manifest(self, agent_id: str) -> tuple[bytes, dict[str, Any]]:
        """The manifest block the node serves for ``agent_id`` and what it says, checked: the
        block must hash to the CID the node names and carry a valid signature
        (:class:`meridian.HashMismatchError` or :class:`meridian.SignatureError` otherwise)."""
        cid = self.get(agent_id)["manifest"]["cid"]
        block = self.block(cid)
        said = verify_manifest(block)
        if said["cid"] != cid:
            from ._native import HashMismatchError

            raise HashMismatchError(f"the node sent a block for {cid} that hashes to {said['cid']}")
        if said["agent_id"] != agent_id or said["removed"]:
            raise MeridianError(f"the node answered for {agent_id} with {said['agent_id']}")
        return block, said

    def deprecate(
        self,
        agent_id: str,
        key: Any,
        *,
        superseded_by: str | None = None,
        updated_at: int | None = None,
    ) -> dict[str, Any]:
        """Deprecates ``agent_id`` (needs the organisation's token): its current manifest,
        read from this node and checked (:meth:`current_manifest`), signed again with ``key``
        (a :class:`meridian.Keypair` of the organisation) as deprecated, naming
        ``superseded_by`` when given, and published. ``updated_at`` defaults to now, and always
        to a time after the current manifest's."""
        from ._native import sign_deprecation

        block, said = self.current_manifest(agent_id)
        at = updated_at if updated_at is not None else max(int(time.time()), said["updated_at"] + 1)
        return self.publish(sign_deprecation(block, key, at, superseded_by))

    def delete(self, agent_id: str, removal: bytes | None = None) -> dict[str, Any] | None:
        """``DELETE /api/v1/agents/{org}/{agent}`` (needs the organisation's token).

        With ``removal`` (a block from :func:`meridian.sign_removal`) the organisation withdraws
        the agent everywhere: the signed removal beats every older manifest on every node.
        Without it this node only stops listing the agent."""
        org, _, name = agent_id.partition("/")
        if not org or not name:
            raise ValueError(f"agent id must be org/name, not {agent_id!r}")
        path = f"/api/v1/agents/{_quote(org)}/{_quote(name)}"
        if removal is None:
            return self._json("DELETE", path)
        body = json.dumps({"manifest": base64.b64encode(removal).decode()}).encode()
        return self._json("DELETE", path, body=body, content_type="application/json")

    def heads(self) -> list[dict[str, Any]]:
        """Every publisher head the node holds (``GET /api/v1/registry/heads``)."""
        return self._json("GET", "/api/v1/registry/heads")["heads"]

    def export_snapshot(
        self,
        publisher: str | None = None,
        since: str | None = None,
        max_bytes: int = ANSWER_BYTES_MAX,
    ) -> bytes:
        """A snapshot as CAR bytes (``GET /api/v1/registry/snapshot``); ``since`` (a commit CID)
        asks for a delta. Check it with :meth:`meridian.Snapshot.open`."""
        _, _, data = self._request(
            "GET", "/api/v1/registry/snapshot",
            query={"publisher": publisher, "since": since}, max_bytes=max_bytes,
        )
        return data

    def import_snapshot(self, car: bytes) -> dict[str, Any]:
        """``POST /api/v1/registry/import`` (needs an admin token); the node verifies it."""
        return self._json(
            "POST", "/api/v1/registry/import", body=car, content_type="application/vnd.ipld.car"
        )

    def events(
        self, last_event_id: int | None = None, *, reconnect: bool = True
    ) -> Iterator[Event]:
        """Registry changes as they happen (``GET /api/v1/events``, Server-Sent Events).

        Starts after ``last_event_id`` when given; when the connection drops it reconnects
        with ``Last-Event-ID`` so no event is missed (``reconnect=False`` ends instead).
        """
        delay = RECONNECT_DELAY_SECS
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            request = urllib.request.Request(self.url + "/api/v1/events", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as stream:
                    delay = RECONNECT_DELAY_SECS
                    for event in _parse_sse(stream):
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
            except urllib.error.HTTPError as error:
                raise NodeError(error.code, "http_error", error.reason, request.full_url) from None
            except (OSError, TimeoutError):
                if not reconnect:
                    raise
            if not reconnect:
                return
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _parse_sse(stream: Any) -> Iterator[Event]:
    """Events of a ``text/event-stream`` body; comments and keep-alives are skipped."""
    event_id: int | None = None
    kind = "message"
    data: list[str] = []
    size = 0
    while True:
        raw = stream.readline(EVENT_BYTES_MAX + 1)
        if not raw:
            return
        size += len(raw)
        if size > EVENT_BYTES_MAX:
            raise NodeError(0, "event_too_large", f"an event over {EVENT_BYTES_MAX} bytes", "")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(id=event_id, event=kind, data=payload)
            kind, data, size = "message", [], 0
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = int(value) if value.isdigit() else None
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


class AsyncNodeClient:
    """The same API as :class:`NodeClient`, as coroutines for asyncio code."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self._sync = NodeClient(url, token=token, timeout=timeout)

    async def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return await asyncio.to_thread(self._sync.health)

    async def search(self, q: str | None = None, **filters: Any) -> dict[str, Any]:
        """One page of ``GET /api/v1/agents``."""
        return await asyncio.to_thread(self._sync.search, q, **filters)

    async def get(self, agent_id: str) -> dict[str, Any]:
        """``GET /api/v1/agents/{org}/{agent}``."""
        return await asyncio.to_thread(self._sync.get, agent_id)

    async def publish(self, manifest: bytes) -> dict[str, Any]:
        """``POST /api/v1/agents``."""
        return await asyncio.to_thread(self._sync.publish, manifest)

    async def deprecate(self, agent_id: str, key: Any, **options: Any) -> dict[str, Any]:
        """:meth:`NodeClient.deprecate`."""
        return await asyncio.to_thread(self._sync.deprecate, agent_id, key, **options)

    async def delete(self, agent_id: str, removal: bytes | None = None) -> dict[str, Any] | None:
        """``DELETE /api/v1/agents/{org}/{agent}``, optionally with a signed removal."""
        return await asyncio.to_thread(self._sync.delete, agent_id, removal)

    async def heads(self) -> list[dict[str, Any]]:
        """Every publisher head the node holds."""
        return await asyncio.to_thread(self._sync.heads)

    async def export_snapshot(self, publisher: str | None = None, since: str | None = None) -> bytes:
        """A snapshot (or a delta ``since`` a commit) as CAR bytes."""
        return await asyncio.to_thread(self._sync.export_snapshot, publisher, since)

    async def import_snapshot(self, car: bytes) -> dict[str, Any]:
        """``POST /api/v1/registry/import`` (admin token)."""
        return await asyncio.to_thread(self._sync.import_snapshot, car)

    async def events(
        self, last_event_id: int | None = None, *, reconnect: bool = True
    ) -> AsyncIterator[Event]:
        """Registry changes as an async iterator, resuming after drops like the sync one."""
        iterator = self._sync.events(last_event_id, reconnect=reconnect)
        done = object()
        try:
            while True:
                event = await asyncio.to_thread(next, iterator, done)
                if event is done:
                    return
                yield event  # type: ignore[misc]
        finally:
            # Between awaits no worker runs the generator, so closing it here is safe; it
            # closes the stream's connection.
            iterator.close()
