//! The ARD Registry API on a running node: an organisation bound to its domain has its agents
//! found by ARD search, explore, retrieve and list, with Meridian's proof as the entries'
//! trust manifest; an agent of an organisation without a verified domain has no ARD
//! identifier and Meridian's own API says why.

use meridian_governance::domain::DomainProof;
use meridian_tests::*;

const FLIGHTS: &str = r#"{"name":"Flights","description":"Books flights and finds the cheapest fares","version":"1.2.0","supportedInterfaces":[{"url":"https://agents.example/flights","protocolBinding":"JSONRPC"}],"capabilities":{},"skills":[{"id":"book-flight","name":"Book a flight","tags":["travel"],"examples":["book a flight to Tokyo","find the cheapest fare to Paris"]}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}"#;
const WEATHER: &str = r#"{"name":"Weather","description":"Current weather and forecasts","version":"2.0.0","supportedInterfaces":[{"url":"https://agents.example/weather","protocolBinding":"JSONRPC"}],"capabilities":{},"skills":[{"id":"forecast","name":"Forecast","tags":["weather"],"examples":["what is the wind speed in Chicago"]}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}"#;
const ECHO: &str = r#"{"name":"Echo","description":"Repeats what it is told","version":"1.0.0","supportedInterfaces":[{"url":"https://agents.example/echo","protocolBinding":"JSONRPC"}],"capabilities":{},"skills":[{"id":"echo","name":"Echo","tags":["utility"]}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}"#;

const FLIGHTS_ID: &str = "urn:air:acme.example:acme:flights";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A governed node with acme verified and its three agents published (not yet bound to a
/// domain); `acme.domain.cbor` holds acme's signed `org.domain` attestation to post.
fn node_with_acme(dir: &std::path::Path) -> (Daemon, String) {
    one_key_governance(dir);
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    verify_acme(dir, "acme.key", "acme.verified.cbor");
    let acme = key_file(dir, "acme.key");
    let proof = DomainProof::create(
        "acme",
        "acme.example",
        &[acme.public()],
        &[&acme],
        now() - 10,
        now() + 30 * 86_400,
    )
    .unwrap();
    let attestation = proof.attestation(now() - 10).unwrap();
    std::fs::write(dir.join("acme.domain.cbor"), attestation.to_block()).unwrap();
    run_ok(
        dir,
        &[
            "attest",
            "cosign",
            "acme.domain.cbor",
            "--key",
            "attest.key",
        ],
    );
    let root = dir.join("root.cbor").display().to_string();
    let admin = admin_token(dir, "n");
    let node = Daemon::node(dir, "n", &[("MERIDIAN_GOVERNANCE_ROOT", root.as_str())]);
    post_attestation(&node, &admin, dir, "acme.verified.cbor");
    let token = org_token(dir, "n", "acme");
    for card in [FLIGHTS, WEATHER, ECHO] {
        let manifest =
            meridian_registry::manifest::ManifestBody::from_card(card, "acme", "local", now() - 5)
                .unwrap()
                .sign(&acme)
                .to_block();
        let answer = publish(&node, &token, &manifest);
        assert_eq!(answer.status, 201, "{:?}", answer.json());
    }
    (node, admin)
}

fn post_attestation(node: &Daemon, admin: &str, dir: &std::path::Path, file: &str) {
    let body = std::fs::read(dir.join(file)).unwrap();
    let answer = post_as_admin(
        node,
        admin,
        "/api/v1/attestations",
        "application/vnd.ipld.dag-cbor",
        &body,
    );
    assert_eq!(answer.status, 201, "{file}: {:?}", answer.json());
}

fn post_json(node: &Daemon, path: &str, body: serde_json::Value) -> Answer {
    node.request(
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn search(node: &Daemon, body: serde_json::Value) -> serde_json::Value {
    let answer = post_json(node, "/ard/v1/search", body);
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    answer.json()
}

fn ids(results: &serde_json::Value) -> Vec<String> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn agents_become_ard_entries_once_their_organisation_is_bound_to_a_domain() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (node, admin) = node_with_acme(dir);
    // Not bound yet: no identifier, and Meridian's API says why.
    let agent = node.get("/api/v1/agents/acme/flights").json();
    assert!(
        agent["provenance"]["ard"]["identifier"].is_null(),
        "{agent}"
    );
    assert!(
        agent["provenance"]["ard"]["why"]
            .as_str()
            .unwrap()
            .contains("org.domain")
    );
    let none = search(&node, serde_json::json!({"query": {"text": "flights"}}));
    assert_eq!(none["results"], serde_json::json!([]));

    post_attestation(&node, &admin, dir, "acme.domain.cbor");
    let agent = node.get("/api/v1/agents/acme/flights").json();
    assert_eq!(agent["provenance"]["ard"]["identifier"], FLIGHTS_ID);
    assert_eq!(agent["provenance"]["domain"], "acme.example");

    // A request the way an orchestrator words it finds the flight agent first.
    let found = search(
        &node,
        serde_json::json!({"query": {"text": "find me a flight booking agent"}, "federation": "none"}),
    );
    let results = found["results"].as_array().unwrap();
    assert_eq!(results[0]["identifier"], FLIGHTS_ID, "{found}");
    assert_eq!(results[0]["type"], "application/a2a-agent-card+json");
    let score = results[0]["score"].as_u64().unwrap();
    assert!((1..=100).contains(&score), "{score}");
    assert!(results[0]["source"].as_str().unwrap().ends_with("/ard/v1"));
    assert!(
        results[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/a2a/acme/flights/.well-known/agent-card.json")
    );
    // The card URL serves the card.
    let card_path = results[0]["url"]
        .as_str()
        .unwrap()
        .split_once("/a2a/")
        .unwrap()
        .1;
    assert_eq!(node.get(&format!("/a2a/{card_path}")).status, 200);

    // Filters: OR within a key, AND across keys; the registry's own type only.
    let travel = search(
        &node,
        serde_json::json!({"query": {"text": "fares weather", "filter": {"tags": ["travel", "weather"]}}}),
    );
    assert_eq!(ids(&travel["results"]).len(), 2, "{travel}");
    let both = search(
        &node,
        serde_json::json!({"query": {"text": "fares weather", "filter": {"tags": "travel", "version": ["2.0.0"]}}}),
    );
    assert_eq!(both["results"], serde_json::json!([]));
    let mcp = search(
        &node,
        serde_json::json!({"query": {"text": "weather", "filter": {"type": ["application/mcp-server-card+json"]}}}),
    );
    assert_eq!(mcp["results"], serde_json::json!([]));
    let attested = search(
        &node,
        serde_json::json!({"query": {"text": "weather", "filter": {"trustManifest.attestations.type": ["org.domain"], "publisher": "acme.example"}}}),
    );
    assert_eq!(
        ids(&attested["results"]),
        ["urn:air:acme.example:acme:weather"]
    );

    // Pages.
    let first = search(
        &node,
        serde_json::json!({"query": {"text": "fares weather repeats"}, "pageSize": 2}),
    );
    assert_eq!(first["results"].as_array().unwrap().len(), 2);
    let token = first["pageToken"].as_str().unwrap();
    let second = search(
        &node,
        serde_json::json!({"query": {"text": "fares weather repeats"}, "pageSize": 2, "pageToken": token}),
    );
    assert_eq!(second["results"].as_array().unwrap().len(), 1);
    assert!(second.get("pageToken").is_none());

    // Meridian's own search ranks the same way when asked; without `sort` it keeps its
    // documented filters and order (every word must appear).
    let ranked = node
        .get("/api/v1/agents?q=find%20me%20a%20flight%20booking%20agent&sort=relevance")
        .json();
    assert_eq!(ranked["agents"][0]["agent_id"], "acme/flights", "{ranked}");
    assert!(ranked["agents"][0]["score"].as_u64().unwrap() >= 1);
    let strict = node.get("/api/v1/agents?q=flight%20booking").json();
    assert_eq!(strict["agents"], serde_json::json!([]));
    let page = node
        .get("/api/v1/agents?q=fares%20weather%20repeats&sort=relevance&limit=2")
        .json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = node
        .get(&format!(
            "/api/v1/agents?q=fares%20weather%20repeats&sort=relevance&limit=2&cursor={cursor}"
        ))
        .json();
    assert_eq!(rest["agents"].as_array().unwrap().len(), 1);
    for (path, code) in [
        ("/api/v1/agents?sort=relevance", "bad_query"),
        ("/api/v1/agents?q=x&sort=newest", "bad_sort"),
        (
            "/api/v1/agents?q=x&sort=relevance&cursor=acme%2Fecho",
            "bad_cursor",
        ),
    ] {
        let refused = node.get(path);
        assert_eq!(refused.status, 400, "{path}");
        assert_eq!(refused.json()["error"]["code"], code, "{path}");
    }

    // The node knows no other registry: referrals are an empty list.
    let referred = search(
        &node,
        serde_json::json!({"query": {"text": "weather"}, "federation": "referrals"}),
    );
    assert_eq!(referred["referrals"], serde_json::json!([]));
}

#[test]
fn retrieve_list_explore_and_the_well_known_manifest_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (node, admin) = node_with_acme(dir);
    post_attestation(&node, &admin, dir, "acme.domain.cbor");

    let path = "/ard/v1/agents/urn%3Aair%3Aacme.example%3Aacme%3Aflights";
    let entry = node.get(path);
    assert_eq!(entry.status, 200, "{:?}", entry.json());
    let body = entry.json();
    assert_eq!(body["identifier"], FLIGHTS_ID);
    assert_eq!(body["version"], "1.2.0");
    assert_eq!(body["representativeQueries"][0], "book a flight to Tokyo");
    assert_eq!(body["trustManifest"]["identity"], "acme.example");
    let kinds: Vec<&str> = body["trustManifest"]["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"org.verified") && kinds.contains(&"org.domain"),
        "{kinds:?}"
    );
    assert!(
        body.get("score").is_none(),
        "retrieve carries no search fields"
    );
    let etag = entry.header("etag").unwrap().to_owned();
    assert!(entry.header("cache-control").unwrap().contains("max-age"));
    let again = node.request("GET", path, &[("if-none-match", &etag)], b"");
    assert_eq!(again.status, 304);

    let ard_error = |answer: &Answer, status: u16, code: &str| {
        assert_eq!(answer.status, status, "{:?}", answer.json());
        assert_eq!(answer.json()["errorCode"], code);
        assert!(answer.json()["message"].is_string());
    };
    ard_error(
        &node.get("/ard/v1/agents/urn%3Aair%3Aacme.example%3Aacme%3Anobody"),
        404,
        "NOT_FOUND",
    );
    ard_error(
        &node.get("/ard/v1/agents/urn%3Aair%3Aother.example%3Aacme%3Aflights"),
        404,
        "NOT_FOUND",
    );
    ard_error(
        &node.get("/ard/v1/agents/not-an-identifier"),
        400,
        "INVALID_ARGUMENT",
    );
    ard_error(
        &node.get("/ard/v1/agents/urn%3Aair%3Aacme.example%3Aacme%3Af%zz"),
        400,
        "INVALID_ARGUMENT",
    );
    ard_error(
        &post_json(&node, "/ard/v1/search", serde_json::json!({"query": {}})),
        400,
        "INVALID_ARGUMENT",
    );
    ard_error(
        &post_json(
            &node,
            "/ard/v1/search",
            serde_json::json!({"query": {"text": "x", "filter": {"okf:taxonomy": ["us-gaap"]}}}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    ard_error(
        &post_json(
            &node,
            "/ard/v1/search",
            serde_json::json!({"query": {"text": "x"}, "pageSize": 1000}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    ard_error(
        &node.request(
            "POST",
            "/ard/v1/search",
            &[("content-type", "application/json")],
            b"{not json",
        ),
        400,
        "INVALID_ARGUMENT",
    );

    // List: Appendix A filters, order and pages.
    let listed = node
        .get("/ard/v1/agents?orderBy=displayName%20DESC&pageSize=2")
        .json();
    assert_eq!(listed["total"], 3);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Weather", "Flights"]);
    assert!(listed["pageToken"].is_string());
    let echo = node
        .get("/ard/v1/agents?filter=displayName%20%3D%20%27echo%27")
        .json();
    assert_eq!(echo["total"], 1, "{echo}");
    ard_error(
        &node.get("/ard/v1/agents?filter=owner%20%3D%20%27x%27"),
        400,
        "INVALID_ARGUMENT",
    );

    // Explore: facets over the whole matched set.
    let explored = post_json(
        &node,
        "/ard/v1/explore",
        serde_json::json!({"resultType": {"facets": [{"field": "type"}, {"field": "tags", "limit": 1}]}}),
    );
    assert_eq!(explored.status, 200, "{:?}", explored.json());
    let facets = &explored.json()["facets"];
    assert_eq!(facets["type"]["buckets"][0]["count"], 3);
    assert_eq!(facets["tags"]["buckets"].as_array().unwrap().len(), 1);
    assert_eq!(facets["tags"]["otherCount"], 2);

    // The registry announces itself, and browsers may read it from any origin.
    let manifest = node.get("/.well-known/ard.json").json();
    assert_eq!(
        manifest["entries"][0]["type"],
        "application/ai-registry+json"
    );
    assert!(
        manifest["entries"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/ard/v1")
    );
    let preflight = node.request(
        "OPTIONS",
        "/ard/v1/search",
        &[("origin", "https://app.example")],
        b"",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        node.get("/api/v1/agents/acme/echo")
            .header("access-control-allow-origin"),
        Some("*")
    );
    assert_eq!(
        node.get("/metrics").header("access-control-allow-origin"),
        None
    );
}

#[test]
fn a_node_federates_search_with_upstream_registries_within_its_guard_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (upstream, admin) = node_with_acme(dir);
    post_attestation(&upstream, &admin, dir, "acme.domain.cbor");
    // A second registry that knows acme's agents only through its upstreams: the first node,
    // and one that takes connections and never answers.
    let silent = Tripwire::start();
    let upstreams = format!("{}/ard/v1,http://{}/ard/v1", upstream.url(), silent.address);
    let env = [
        ("MERIDIAN_ARD_UPSTREAMS", upstreams.as_str()),
        ("MERIDIAN_ARD_ALLOW_PRIVATE", "true"),
        ("MERIDIAN_ARD_FEDERATION_BUDGET_MS", "1500"),
    ];
    let node = Daemon::node(dir, "b", &env);
    let query = serde_json::json!({"query": {"text": "book a flight"}});
    // `none` asks nobody.
    let mut alone = query.clone();
    alone["federation"] = serde_json::json!("none");
    assert_eq!(search(&node, alone)["results"], serde_json::json!([]));
    assert_eq!(silent.hits(), 0);
    // `auto` (the default) asks both; the silent one costs only its own results.
    let started = std::time::Instant::now();
    let merged = search(&node, query.clone());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let results = merged["results"].as_array().unwrap();
    assert_eq!(results[0]["identifier"], FLIGHTS_ID, "{merged}");
    assert!(
        results[0]["source"]
            .as_str()
            .unwrap()
            .starts_with(&upstream.url()),
        "{merged}"
    );
    assert!(silent.hits() >= 1);
    assert_eq!(
        node.metric("meridian_ard_upstream_searches_total{outcome=\"ok\"}"),
        1.0
    );
    let slow_or_failed = node.metric("meridian_ard_upstream_searches_total{outcome=\"timeout\"}")
        + node.metric("meridian_ard_upstream_searches_total{outcome=\"failed\"}");
    assert_eq!(slow_or_failed, 1.0);
    // `referrals` names both upstreams.
    let mut referred = query.clone();
    referred["federation"] = serde_json::json!("referrals");
    let referrals = search(&node, referred)["referrals"].clone();
    assert_eq!(referrals.as_array().unwrap().len(), 2, "{referrals}");
    assert_eq!(
        referrals[0]["url"],
        format!("{}/ard/v1/search", upstream.url())
    );
    node.stop();

    // Without ard.allow_private the guard refuses a loopback upstream: nothing is sent.
    let guarded = Tripwire::start();
    let upstreams = format!("http://{}/ard/v1", guarded.address);
    let node = Daemon::node(dir, "c", &[("MERIDIAN_ARD_UPSTREAMS", upstreams.as_str())]);
    assert_eq!(search(&node, query)["results"], serde_json::json!([]));
    assert_eq!(guarded.hits(), 0);
    assert_eq!(
        node.metric("meridian_ard_upstream_searches_total{outcome=\"failed\"}"),
        1.0
    );
}

/// An ARD upstream on loopback that answers every search with `answer`.
fn fake_upstream(answer: serde_json::Value) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let body = answer.to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

#[test]
fn an_upstream_cannot_pass_its_results_off_as_another_registrys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let liar = fake_upstream(serde_json::json!({"results": [
        {"identifier": "urn:air:bank.example:bank:payments", "displayName": "Payments",
         "type": "application/a2a-agent-card+json", "url": "https://evil.example/card.json",
         "score": 1000, "source": "https://registry.bank.example/ard/v1"},
        {"displayName": "no identifier"},
        "not an object"
    ]}));
    let upstreams = format!("http://{liar}/ard/v1");
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_ARD_UPSTREAMS", upstreams.as_str()),
            ("MERIDIAN_ARD_ALLOW_PRIVATE", "true"),
        ],
    );
    let answer = search(&node, serde_json::json!({"query": {"text": "payments"}}));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{answer}");
    // Marked with where it really came from, its score kept within 0-100.
    assert_eq!(results[0]["source"], upstreams);
    assert_eq!(results[0]["score"], 100);
}

#[test]
fn with_read_auth_the_ard_routes_need_a_token_and_refuse_in_ards_shape() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "n", &[("MERIDIAN_HTTP_READ_AUTH", "true")]);
    let refused = post_json(
        &node,
        "/ard/v1/search",
        serde_json::json!({"query": {"text": "x"}}),
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["errorCode"], "UNAUTHENTICATED");
    let refused = node.get("/api/v1/agents");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "unauthorized");
    // A browser's preflight needs no token.
    assert_eq!(
        node.request("OPTIONS", "/ard/v1/search", &[], b"").status,
        204
    );
    let admin = admin_token(dir, "n");
    let allowed = node.request(
        "POST",
        "/ard/v1/search",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {admin}")),
        ],
        br#"{"query":{"text":"x"}}"#,
    );
    assert_eq!(allowed.status, 200, "{:?}", allowed.json());
}

/// A deprecated agent stays an ARD entry, says so (`status`, `supersededBy` as the successor's
/// identifier), ranks after every active match and can be filtered out.
#[test]
fn a_deprecated_agent_says_so_in_ard_and_ranks_after_the_active_ones() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (node, admin) = node_with_acme(dir);
    post_attestation(&node, &admin, dir, "acme.domain.cbor");
    let query = serde_json::json!({"query": {"text": "cheapest flights fares forecasts"}});
    assert_eq!(ids(&search(&node, query.clone())["results"])[0], FLIGHTS_ID);

    let token = org_token(dir, "n", "acme");
    let node_url = node.url();
    run_ok(
        dir,
        &[
            "agent",
            "deprecate",
            "acme/flights",
            "--superseded-by",
            "acme/weather",
            "--org-key",
            "acme.key",
            "--node",
            &node_url,
            "--token",
            &token,
        ],
    );
    let weather = "urn:air:acme.example:acme:weather";
    let entry = node.get("/ard/v1/agents/urn%3Aair%3Aacme.example%3Aacme%3Aflights");
    assert_eq!(entry.status, 200);
    assert_eq!(entry.json()["status"], "deprecated");
    assert_eq!(entry.json()["supersededBy"], weather);
    let ranked = search(&node, query);
    assert_eq!(ids(&ranked["results"]), [weather, FLIGHTS_ID], "{ranked}");
    assert_eq!(ranked["results"][1]["status"], "deprecated");
    let active = search(
        &node,
        serde_json::json!({"query": {"text": "flights", "filter": {"status": "active"}}}),
    );
    assert_eq!(active["results"], serde_json::json!([]));
}
