"""A client for any ARD registry (Agentic Resource Discovery v0.91, §5.3): search, explore,
retrieve and list, Meridian's nodes included.

It needs nothing beyond the standard library and knows nothing Meridian-specific: point it at a
registry's base URL (``http://127.0.0.1:7700/ard/v1``), or let :meth:`ArdClient.discover` find
the base from a site's ``/.well-known/ard.json``. A registry's error answers (ARD's envelope
``{"errorCode", "message"}``) raise :class:`ArdError`.

With a Meridian node each entry's ``trustManifest.provenance`` names the publisher, commit,
manifest and signer, which :class:`meridian.NodeClient` and :func:`meridian.verify_manifest`
can check.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator

from ._native import MeridianError

#: Longest answer read into memory, in bytes.
ANSWER_BYTES_MAX = 16 * 1024 * 1024

#: The ARD media type of a registry entry in a well-known manifest.
REGISTRY_TYPE = "application/ai-registry+json"


class ArdError(MeridianError):
    """A registry answered with an error status."""

    def __init__(self, status: int, error_code: str, message: str, url: str) -> None:
        super().__init__(f"{status} {error_code}: {message} ({url})")
        #: The HTTP status.
        self.status = status
        #: ARD's error code (``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNAUTHENTICATED``, ...).
        self.error_code = error_code
        #: The registry's explanation.
        self.message = message
        #: The request's URL.
        self.url = url


class ArdClient:
    """A blocking client for one ARD registry.

    ``url`` is the registry's base (the URL its well-known entry gives); ``token`` a bearer
    token for registries that require one (a Meridian node with ``http.read_auth``);
    ``timeout`` in seconds.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"registry url must be http(s)://host[:port]/path, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def discover(cls, site: str, token: str | None = None, timeout: float = 30.0) -> ArdClient:
        """The registry a site announces in its ``/.well-known/ard.json`` (the first entry of
        type ``application/ai-registry+json``); :class:`ArdError` (404) when it announces none."""
        client = cls(site, token, timeout)
        parsed = urllib.parse.urlparse(site)
        well_known = f"{parsed.scheme}://{parsed.netloc}/.well-known/ard.json"
        _, _, manifest = client._call("GET", well_known)
        for entry in (manifest or {}).get("entries", []):
            if entry.get("type") == REGISTRY_TYPE and isinstance(entry.get("url"), str):
                return cls(entry["url"], token, timeout)
        raise ArdError(404, "NOT_FOUND", "the site announces no ARD registry", well_known)

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                raw = answer.read(ANSWER_BYTES_MAX + 1)
                if len(raw) > ANSWER_BYTES_MAX:
                    raise ArdError(answer.status, "TOO_LARGE", f"answer over {ANSWER_BYTES_MAX} bytes", url)
                return answer.status, dict(answer.headers.items()), json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            if error.code == 304:
                return 304, dict(error.headers.items()), None
            raw = error.read(1024 * 1024)
            code, message = "HTTP_ERROR", raw.decode("utf-8", "replace")
            try:
                envelope = json.loads(raw)
                code = envelope.get("errorCode", code)
                message = envelope.get("message", message)
            except (ValueError, AttributeError):
                pass
            raise ArdError(error.code, code, message, url) from None

    def search(
        self,
        text: str,
        *,
        filter: dict[str, Any] | None = None,
        federation: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of ``POST /search``: ``{"results": [...], "pageToken": ..., "referrals":
        ...}``. ``filter`` maps a field to a value or a list of values (OR within a field, AND
        across fields); ``federation`` is ``none``, ``referrals`` or ``auto``."""
        query: dict[str, Any] = {"text": text}
        if filter:
            query["filter"] = filter
        request: dict[str, Any] = {"query": query}
        for name, value in (("federation", federation), ("pageSize", page_size), ("pageToken", page_token)):
            if value is not None:
                request[name] = value
        return self._call("POST", self.url + "/search", request)[2]

    def search_all(self, text: str, **options: Any) -> Iterator[dict[str, Any]]:
        """Every result of a search, page after page."""
        token = None
        while True:
            page = self.search(text, page_token=token, **options)
            yield from page.get("results", [])
            token = page.get("pageToken")
            if not token:
                return

    def explore(
        self,
        facets: list[str | dict[str, Any]],
        *,
        text: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /explore``: counts of the matching entries by each facet (a field name, or
        ``{"field", "limit", "minCount"}``)."""
        query: dict[str, Any] = {}
        if text:
            query["text"] = text
        if filter:
            query["filter"] = filter
        asked = [{"field": f} if isinstance(f, str) else f for f in facets]
        return self._call("POST", self.url + "/explore", {"query": query, "resultType": {"facets": asked}})[2]

    def get(self, identifier: str, etag: str | None = None) -> dict[str, Any] | None:
        """``GET /agents/{identifier}``: the entry (with its ``ETag`` as ``"_etag"``), or
        ``None`` when ``etag`` still matches (304)."""
        quoted = urllib.parse.quote(identifier, safe="")
        headers = {"If-None-Match": etag} if etag else None
        status, answer_headers, entry = self._call("GET", f"{self.url}/agents/{quoted}", headers=headers)
        if status == 304:
            return None
        tag = {k.lower(): v for k, v in answer_headers.items()}.get("etag")
        if tag is not None and isinstance(entry, dict):
            entry["_etag"] = tag
        return entry

    def list_agents(
        self,
        *,
        filter: str | None = None,
        order_by: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of ``GET /agents``: ``{"items": [...], "total": N, "pageToken": ...}``;
        ``filter`` is ARD's Appendix A expression (``type="..." AND updatedAfter>"..."``)."""
        query = {"filter": filter, "orderBy": order_by, "pageSize": page_size, "pageToken": page_token}
        pairs = {k: str(v) for k, v in query.items() if v is not None}
        url = self.url + "/agents" + ("?" + urllib.parse.urlencode(pairs) if pairs else "")
        return self._call("GET", url)[2]
