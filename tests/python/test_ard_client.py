"""`meridian.ArdClient`, the Python package's client for any ARD registry, against the demo's
nodes: it finds the registry from a site's well-known manifest, searches page by page, explores
facets, retrieves with an ETag and lists with the Appendix A filter; errors arrive as
`ArdError` with ARD's code. Skipped where the package is not installed (the rest of this folder
needs only the standard library)."""

import pytest

meridian = pytest.importorskip("meridian")


def test_the_client_finds_the_registry_a_node_announces(demo_urls, registry):
    client = meridian.ArdClient.discover(demo_urls["nodes"][0]["http"])
    assert client.url == registry
    with pytest.raises(meridian.ArdError) as none:
        meridian.ArdClient.discover(demo_urls["hubs"][0]["http"])
    assert none.value.status == 404


def test_search_explore_retrieve_and_list(registry):
    client = meridian.ArdClient(registry)
    first = client.search("agent", page_size=1)
    assert len(first["results"]) == 1 and first.get("pageToken")
    every = list(client.search_all("agent", page_size=2))
    identifiers = [r["identifier"] for r in every]
    assert len(identifiers) == len(set(identifiers)) > 2
    assert all(r["status"] in ("active", "deprecated") for r in every)

    facets = client.explore(["org", {"field": "region", "limit": 1}])
    assert {b["value"] for b in facets["facets"]["org"]["buckets"]} >= {"acme"}

    entry = client.get(identifiers[0])
    assert entry["identifier"] == identifiers[0]
    assert client.get(identifiers[0], etag=entry["_etag"]) is None  # 304: unchanged

    page = client.list_agents(filter='type = "application/a2a-agent-card+json"', order_by="identifier ASC", page_size=2)
    assert [i["identifier"] for i in page["items"]] == sorted(i["identifier"] for i in page["items"])


def test_errors_carry_ards_code(registry):
    client = meridian.ArdClient(registry)
    with pytest.raises(meridian.ArdError) as unknown:
        client.get("urn:air:acme.example:acme:nobody")
    assert (unknown.value.status, unknown.value.error_code) == (404, "NOT_FOUND")
    with pytest.raises(meridian.ArdError) as bad:
        client.search("echo", filter={"colour": "blue"})
    assert (bad.value.status, bad.value.error_code) == (400, "INVALID_ARGUMENT")
    with pytest.raises(ValueError):
        meridian.ArdClient("ftp://example")
