"""The ARD Registry API of a running Meridian node, tested from outside the Rust code with the
standard library only, using the ARD v0.91 specification's own example requests.

The `registry` fixture (conftest.py) starts `meridian demo --keep-running` (a federation on
loopback whose organisations have proved their domains) and reads the node URLs from
`meridian-data/demo/urls.json`; each test checks an endpoint's answers against the shapes the
specification's OpenAPI document gives.
"""

import json
import urllib.error
import urllib.parse
import urllib.request

A2A = "application/a2a-agent-card+json"


def call(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, error.headers, json.loads(raw) if raw else None


def test_the_registry_announces_itself_at_the_well_known_path(registry):
    base = registry.removesuffix("/ard/v1")
    status, _, manifest = call("GET", base + "/.well-known/ard.json")
    assert status == 200
    entry = manifest["entries"][0]
    assert entry["type"] == "application/ai-registry+json"
    assert entry["url"] == registry
    assert entry["identifier"].startswith("urn:air:")


def test_search_with_the_specifications_example_request(registry):
    # ARD v0.91 §5.3.2, the request schema's example.
    request = {
        "query": {
            "text": "find me a flight booking agent",
            "filter": {"type": ["application/a2a-agent-card+json"]},
        },
        "federation": "referrals",
        "pageSize": 5,
    }
    status, _, answer = call("POST", registry + "/search", request)
    assert status == 200, answer
    assert isinstance(answer["results"], list) and len(answer["results"]) <= 5
    assert isinstance(answer["referrals"], list)
    for result in answer["results"]:
        assert isinstance(result["score"], int) and 0 <= result["score"] <= 100
        assert result["type"] == A2A and result["source"] == registry
        assert result["identifier"].startswith("urn:air:")
    # A query that names an agent of the demo finds it first.
    status, _, answer = call("POST", registry + "/search", {"query": {"text": "echo"}})
    assert status == 200
    assert answer["results"][0]["identifier"] == "urn:air:acme.example:acme:echo"


def test_search_errors_use_the_ard_envelope(registry):
    for body in [
        {"query": {"filter": {"type": ["x"]}}},
        {"query": {"text": "x", "filter": {"okf:taxonomy": ["us-gaap"]}}},
        {"query": {"text": "x"}, "pageSize": 1000},
        {"query": {"text": "x"}, "federation": "everywhere"},
    ]:
        status, _, answer = call("POST", registry + "/search", body)
        assert status == 400, body
        assert answer["errorCode"] == "INVALID_ARGUMENT" and answer["message"]


def test_retrieve_by_identifier_with_caching(registry):
    identifier = "urn:air:acme.example:acme:echo"
    url = registry + "/agents/" + urllib.parse.quote(identifier, safe="")
    status, headers, entry = call("GET", url)
    assert status == 200
    assert entry["identifier"] == identifier and entry["type"] == A2A
    assert ("url" in entry) != ("data" in entry), "exactly one of url and data"
    assert entry["trustManifest"]["identity"] == "acme.example"
    assert "score" not in entry and "source" not in entry
    etag = headers.get("ETag")
    assert etag and headers.get("Cache-Control", "").startswith("public")
    status, _, _ = call("GET", url, headers={"If-None-Match": etag})
    assert status == 304
    status, _, answer = call("GET", registry + "/agents/" + urllib.parse.quote("urn:air:acme.example:acme:nobody", safe=""))
    assert status == 404 and answer["errorCode"] == "NOT_FOUND"
    status, _, answer = call("GET", registry + "/agents/not%zzvalid")
    assert status == 400 and answer["errorCode"] == "INVALID_ARGUMENT"


def test_explore_with_the_specifications_example_request(registry):
    # ARD v0.91 §5.3.3, the request schema's example (its attestation filter narrows to nothing
    # here: the demo's organisations carry Meridian's attestations, not SOC 2 reports).
    request = {
        "query": {
            "text": "currency conversion",
            "filter": {"trustManifest.attestations.type": ["SOC2-Type2"]},
        },
        "resultType": {"facets": [{"field": "type"}, {"field": "publisher", "limit": 50}]},
    }
    status, _, answer = call("POST", registry + "/explore", request)
    assert status == 200, answer
    assert answer["resultType"] == "facets"
    assert set(answer["facets"]) == {"type", "publisher"}
    # Over the whole registry: every entry is an A2A agent card of one of three domains.
    request = {"resultType": {"facets": [{"field": "type"}, {"field": "publisher"}]}}
    status, _, answer = call("POST", registry + "/explore", request)
    assert status == 200
    assert answer["facets"]["type"]["buckets"][0]["value"] == A2A
    publishers = {b["value"] for b in answer["facets"]["publisher"]["buckets"]}
    assert publishers == {"acme.example", "globex.example", "initech.example"}


def test_list_with_the_appendix_a_filter(registry):
    query = urllib.parse.urlencode(
        {"filter": "type = 'application/a2a-agent-card+json' AND updatedAfter > '2026-01-01'", "pageSize": 2}
    )
    status, _, answer = call("GET", registry + "/agents?" + query)
    assert status == 200, answer
    assert len(answer["items"]) == 2 and answer["total"] >= 10 and "pageToken" in answer
    status, _, answer = call("GET", registry + "/agents?" + urllib.parse.urlencode({"filter": "owner = 'x'"}))
    assert status == 400 and answer["errorCode"] == "INVALID_ARGUMENT"


def test_referrals_name_the_federations_other_registries_from_its_signed_policy(demo_urls, registry):
    # ARD §5.4 `referrals`: this registry's results, and the other registries it knows; the
    # demo's signed policy lists every node's ARD base.
    status, _, answer = call("POST", registry + "/search", {"query": {"text": "echo"}, "federation": "referrals"})
    assert status == 200
    referred = {r["url"].removesuffix("/search") for r in answer["referrals"]}
    others = {node["ard"] for node in demo_urls["nodes"]} - {registry}
    assert referred == others, answer["referrals"]
    assert all(r["type"] == "application/ai-registry+json" for r in answer["referrals"])
