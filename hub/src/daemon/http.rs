//! The hub's HTTP API toward its region's nodes, and the trunk's request handler.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::routes;

use super::state::{Hub, RelayRefusal};
use crate::heads::Upstream;
use crate::relay::HOP_BY_HOP;
use crate::trunk::{RelayAnswer, RelayHead, TrunkRequest};

/// Header: the did:key of the node whose snapshot lists the agent being called.
pub const PUBLISHER_HEADER: &str = "meridian-publisher";
/// Header: the region the called agent is served from.
pub const REGION_HEADER: &str = "meridian-region";
pub use meridian_sync::claims::{
    CALLER_NODE_HEADER, CALLER_ORG_HEADER, CALLER_SIG_HEADER, CALLER_TIME_HEADER, SOURCE_HEADER,
    SOURCE_SIG_HEADER, caller_claim_headers,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

fn refusal(refused: RelayRefusal) -> Response {
    let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = error(status, refused.code, refused.message);
    if let Some(seconds) = refused.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "alive")))]
async fn health(State(hub): State<Arc<Hub>>) -> Response {
    Json(json!({ "status": "ok", "hub": hub.did, "region": hub.config.hub.region })).into_response()
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "ready, with `warnings` (such as a governance root without a policy yet)"), (status = 503, description = "store unavailable")))]
async fn ready(State(hub): State<Arc<Hub>>) -> Response {
    match hub.flush() {
        Ok(()) => Json(json!({ "status": "ready", "hub": hub.did, "region": hub.config.hub.region, "warnings": hub.warnings() })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "metrics", content_type = "text/plain")))]
async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    hub.publish_cache_metrics();
    let connected = hub
        .trunk
        .regions()
        .iter()
        .filter(|r| hub.trunk.is_connected(r))
        .count();
    let mut gauges = vec![(
        "meridian_hub_trunk_connected",
        "Trunk connections to other regions' hubs that are up.",
        connected as f64,
    )];
    gauges.extend(hub.serve_counters.rows());
    let text = hub.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// What the hub's console shows: trunks with round-trip times, the block cache, circuit
/// breakers, rate-limit refusals by scope and relays in flight (figures since start).
#[utoipa::path(get, path = "/v1/stats", tag = "operations", responses((status = 200, description = "`{region, did, uptime_secs, publishers, governed, policy_version, trunks: [{region, address, key, connected, rtt_ms, failures, retry_in_ms}], cache: {hits, misses, hit_rate, bytes, blocks, capacity_bytes, evicted, rejected, bytes_served}, breakers_total, breakers: [{upstream, state, failures, open_for_ms}] (at most 256: open, then half-open, then by failures in a row), rate_refusals: {SCOPE: count}, relays: {in_flight, max}}`", content_type = "application/json")))]
async fn stats(State(hub): State<Arc<Hub>>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(hub.stats())).into_response()
}

/// A block by CID: immutable, so cacheable forever by anyone.
#[utoipa::path(get, path = "/v1/blocks/{cid}", tag = "federation", params(("cid" = String, Path, description = "block CID")), responses((status = 200, description = "the block", content_type = "application/vnd.ipld.dag-cbor"), (status = 304, description = "not modified"), (status = 400, description = "bad CID"), (status = 404, description = "not found here or upstream")))]
async fn block(
    State(hub): State<Arc<Hub>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Ok(parsed) = meridian_registry::ids::parse_cid(&cid) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_cid",
            format!("`{cid}` is not a CID"),
        );
    };
    let etag = format!("\"{parsed}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    match hub.blocks(&[parsed]).await.into_iter().next() {
        Some((_, bytes)) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.ipld.dag-cbor".to_owned(),
                ),
                (header::ETAG, etag),
                (
                    header::CACHE_CONTROL,
                    "public, max-age=31536000, immutable".to_owned(),
                ),
            ],
            // The cached bytes themselves, not a copy.
            Bytes::from_owner(bytes),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("block {parsed} is neither cached nor available upstream"),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct HeadsQuery {
    /// The cursor of the previous answer.
    after: Option<u64>,
    /// Seconds to wait for a change when nothing is newer than `after`.
    wait: Option<u64>,
}

/// Every publisher's head, the governance documents and equivocation proofs; with `after` and
/// `wait`, a long-poll that answers as soon as something changes.
#[utoipa::path(get, path = "/v1/heads", tag = "federation", params(("after" = Option<u64>, Query, description = "cursor of the previous answer"), ("wait" = Option<u64>, Query, description = "seconds to wait for a change")), responses((status = 200, description = "{cursor, commits, governance, equivocations} (base64 blocks)")))]
async fn heads(State(hub): State<Arc<Hub>>, Query(query): Query<HeadsQuery>) -> Response {
    let mut changes = hub.subscribe();
    let wait = Duration::from_secs(
        query
            .wait
            .unwrap_or(0)
            .min(hub.config.hub.long_poll_max_secs),
    );
    // Wait only when the caller is up to date: a cursor from before a hub restart (larger than
    // the current one) gets an answer at once.
    if let Some(after) = query.after
        && *changes.borrow() == after
        && !wait.is_zero()
    {
        let _ = tokio::time::timeout(wait, changes.wait_for(|v| *v > after)).await;
    }
    let cursor = *changes.borrow();
    let crate::wire::Response::Heads {
        commits,
        governance,
        equivocations,
    } = hub.heads_response()
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected answer",
        );
    };
    Json(json!({
        "cursor": cursor,
        "commits": commits.iter().map(|b| b64(b)).collect::<Vec<_>>(),
        "governance": governance.iter().map(|b| b64(b)).collect::<Vec<_>>(),
        "equivocations": equivocations.iter().map(|b| b64(b)).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// The sync protocol over HTTP: a wire request in, a wire answer out.
#[utoipa::path(post, path = "/v1/sync", tag = "federation", request_body(content = String, content_type = "application/octet-stream", description = "a sync wire request"), responses((status = 200, description = "the wire answer", content_type = "application/octet-stream")))]
async fn sync(State(hub): State<Arc<Hub>>, body: Bytes) -> Response {
    let answer = hub.answer(&body).await;
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        answer.encode(),
    )
        .into_response()
}

/// A node's gossip: its new head (with `Meridian-Source` and `Meridian-Source-Sig` saying where
/// its blocks are), a governance document or an equivocation proof.
#[utoipa::path(post, path = "/v1/gossip", tag = "federation", request_body(content = String, content_type = "application/octet-stream", description = "a sync wire gossip message"), responses((status = 200, description = "{new}"), (status = 422, description = "refused")))]
async fn gossip(
    State(hub): State<Arc<Hub>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = client.map_or_else(
        || "unknown".to_owned(),
        |axum::Extension(axum::extract::ConnectInfo(address))| address.ip().to_string(),
    );
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let upstream = match (
        text(SOURCE_HEADER),
        text(SOURCE_SIG_HEADER),
        crate::wire::Gossip::decode(&body, crate::wire::GOSSIP_BYTES_MAX),
    ) {
        (Some(url), Some(sig), Ok(crate::wire::Gossip::Head(block))) => {
            hub.vouched_source(&block, url, sig)
        }
        _ => Upstream::Unknown,
    };
    match hub.gossip_from(&body, upstream, &source).await {
        Ok(new) => Json(json!({ "new": new })).into_response(),
        Err(why) => error(StatusCode::UNPROCESSABLE_ENTITY, "refused", why.to_string()),
    }
}

/// The governance documents the hub mirrors, in the order to apply them.
#[utoipa::path(get, path = "/v1/governance", tag = "governance", responses((status = 200, description = "{root, documents} (base64 blocks)"), (status = 404, description = "no governance root configured")))]
async fn governance(State(hub): State<Arc<Hub>>) -> Response {
    let Some(root) = hub.governance_root() else {
        return error(
            StatusCode::NOT_FOUND,
            "governance_off",
            "this hub has no governance root",
        );
    };
    Json(json!({
        "root": b64(&root),
        "documents": hub.governance_documents().iter().map(|b| b64(b)).collect::<Vec<_>>(),
    }))
    .into_response()
}

fn relay_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !HOP_BY_HOP.contains(&name)
                && name != "content-length"
                && !name.starts_with("meridian-")
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn response_from(status: u16, headers: &[(String, String)], body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || name == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Relays an A2A call to an agent: of this region directly, of another region through that
/// region's hub over the trunk. The answer streams back unbuffered.
#[utoipa::path(post, path = "/v1/relay/{org}/{agent}", tag = "a2a", params(("org" = String, Path, description = "organisation"), ("agent" = String, Path, description = "agent name"), ("Meridian-Publisher" = String, Header, description = "did:key of the node listing the agent"), ("Meridian-Region" = String, Header, description = "the agent's region"), ("Meridian-Caller-Org" = Option<String>, Header, description = "calling organisation, honoured only with a valid signed claim by a trusted node"), ("Meridian-Caller-Node" = Option<String>, Header, description = "did:key of the node vouching for the caller organisation"), ("Meridian-Caller-Time" = Option<i64>, Header, description = "when the node signed, unix seconds"), ("Meridian-Caller-Sig" = Option<String>, Header, description = "the node's signature over the claim, base64")), request_body(content = String, content_type = "application/json", description = "a JSON-RPC request"), responses((status = 200, description = "the agent's answer (any status passes through)"), (status = 400, description = "missing headers"), (status = 404, description = "unknown agent"), (status = 429, description = "rate limited (Retry-After)"), (status = 502, description = "agent or hub unreachable"), (status = 503, description = "circuit open")))]
async fn relay(
    State(hub): State<Arc<Hub>>,
    Path((org, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(publisher), Some(region)) = (text(PUBLISHER_HEADER), text(REGION_HEADER)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "Meridian-Publisher and Meridian-Region are required",
        );
    };
    let target = meridian_sync::claims::CallTarget {
        org: &org,
        agent: &agent,
        publisher: &publisher,
        region: &region,
        body: &body,
    };
    let caller_org = trusted_caller(&hub, &headers, target);
    let scope = caller_org
        .as_deref()
        .map_or_else(|| "org:anonymous".to_owned(), |o| format!("org:{o}"));
    if let Err(refused) = hub.rate_check(&scope) {
        return refusal(refused);
    }
    let permit = match hub.relay_permit() {
        Ok(permit) => permit,
        Err(refused) => return refusal(refused),
    };
    let forwarded = relay_headers(&headers);
    if region == hub.config.hub.region {
        return call_here(&hub, &publisher, &org, &agent, &forwarded, body, permit).await;
    }
    let head = RelayHead {
        org,
        agent,
        publisher,
        caller_org,
        headers: forwarded,
    };
    relay_to_region(&hub, &region, &head, &body, permit).await
}

/// The calling organisation, when the request carries a caller claim signed by a node this hub
/// trusts (counted either way); `None` rates the call as anonymous.
fn trusted_caller(
    hub: &Hub,
    headers: &HeaderMap,
    target: meridian_sync::claims::CallTarget<'_>,
) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let claim = meridian_sync::claims::CallerClaim {
        caller_org: text(CALLER_ORG_HEADER)?,
        node: text(CALLER_NODE_HEADER).unwrap_or_default(),
        time: text(CALLER_TIME_HEADER)
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
    };
    let checked = text(CALLER_SIG_HEADER)
        .and_then(|sig| base64::engine::general_purpose::STANDARD.decode(sig).ok())
        .filter(|_| !claim.node.is_empty())
        .ok_or_else(|| "no signed claim from a node".to_owned())
        .and_then(|sig| {
            meridian_sync::claims::verify_caller_claim(&claim, &sig, target, (hub.clock)())
                .map_err(|e| e.to_string())
        })
        .and_then(|()| {
            if hub.trusts_node(&claim.node) {
                Ok(())
            } else {
                Err(format!("node {} is not trusted here", claim.node))
            }
        });
    match checked {
        Ok(()) => {
            hub.metrics
                .count("meridian_hub_caller_claims_total{outcome=\"trusted\"}", 1);
            Some(claim.caller_org)
        }
        Err(why) => {
            hub.metrics
                .count("meridian_hub_caller_claims_total{outcome=\"refused\"}", 1);
            tracing::info!(%why, "caller claim refused: the call is rated as anonymous");
            None
        }
    }
}

/// Calls an agent of this hub's region (its manifest found in the publisher's verified tree);
/// the relay's place is held until the answer has streamed out.
async fn call_here(
    hub: &Hub,
    publisher: &str,
    org: &str,
    agent: &str,
    forwarded: &[(String, String)],
    body: Bytes,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let manifest = match hub.resolve_agent(publisher, org, agent).await {
        Ok(manifest) => manifest,
        Err(refused) => return refusal(refused),
    };
    match hub.call_agent(&manifest, forwarded, body.to_vec()).await {
        Ok(answer) => {
            let stream = answer.body.map(move |chunk| {
                let _held = &permit;
                chunk.map_err(std::io::Error::other)
            });
            response_from(answer.status, &answer.headers, Body::from_stream(stream))
        }
        Err(refused) => refusal(refused),
    }
}

/// Relays a call over the trunk to the hub of `region`; the place is held (inside the
/// stream's state) until the answer has streamed out.
async fn relay_to_region(
    hub: &Hub,
    region: &str,
    head: &RelayHead,
    body: &Bytes,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let started = Instant::now();
    let result = hub.trunk.relay(region, head, body).await;
    hub.metrics.observe(
        "meridian_hub_upstream_seconds{kind=\"relay\"}",
        started.elapsed(),
    );
    match result {
        Ok((answer, recv)) => {
            hub.metrics
                .count("meridian_hub_cross_region_bytes_total", body.len() as u64);
            let stream =
                futures_util::stream::unfold((recv, permit), |(mut recv, permit)| async move {
                    match recv.read_chunk(64 * 1024, true).await {
                        Ok(Some(chunk)) => {
                            Some((Ok::<_, std::io::Error>(chunk.bytes), (recv, permit)))
                        }
                        Ok(None) => None,
                        Err(error) => Some((Err(std::io::Error::other(error)), (recv, permit))),
                    }
                });
            response_from(answer.status, &answer.headers, Body::from_stream(stream))
        }
        Err(why) => error(
            StatusCode::BAD_GATEWAY,
            "hub_unreachable",
            format!("hub:{region}: {why}"),
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn observe(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    hub.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The documented routes.
fn api(relay_limit: usize) -> utoipa_axum::router::OpenApiRouter<Arc<Hub>> {
    let (schemas, paths, relay_route) = routes!(relay);
    let relay_route = (
        schemas,
        paths,
        relay_route.layer(DefaultBodyLimit::max(relay_limit)),
    );
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(stats))
        .routes(routes!(block))
        .routes(routes!(heads))
        .routes(routes!(sync))
        .routes(routes!(gossip))
        .routes(routes!(governance))
        .routes(relay_route)
}

/// Names the hub's OpenAPI document.
fn describe(openapi: &mut utoipa::openapi::OpenApi) {
    openapi.info.title = "Meridian hub".into();
    openapi.info.description =
        Some("A regional hub: block cache, head and policy mirror, A2A relay.".into());
}

/// The hub's OpenAPI 3.1 document, as `GET /openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut openapi) = api(1).split_for_parts();
    describe(&mut openapi);
    openapi
}

/// The tags of the hub's API, in the order `docs/hub-api.md` lists them.
pub const TAGS: [&str; 4] = ["operations", "federation", "governance", "a2a"];

/// The hub's API reference page (`docs/hub-api.md`), rendered from [`document`].
pub fn markdown() -> String {
    let doc = serde_json::to_value(document()).unwrap_or_default();
    crate::apidoc::markdown(
        &doc,
        crate::apidoc::Page {
            title: "Meridian hub API reference",
            intro: "Rendered from the OpenAPI document a hub serves at `GET /openapi.json`, which is generated from\nthe handlers' own annotations; regenerate with\n`MERIDIAN_BLESS=1 cargo test -p meridian-hub hub_api_reference`.\n\nA hub speaks to the nodes of its region over this API (the sync wire format on `/v1/sync` and\n`/v1/gossip`), and to other regions' hubs over its QUIC trunk. Errors are JSON:\n`{\"error\": {\"code\", \"message\"}}`.",
            tags: &TAGS,
            access: &[],
        },
    )
}

/// The hub's router, `/openapi.json` included.
pub fn router(hub: Arc<Hub>) -> Router {
    let (documented, mut openapi) = api(hub.config.relay.body_bytes_max).split_for_parts();
    describe(&mut openapi);
    let openapi = Arc::new(openapi);
    documented
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .merge(crate::console::hub_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(crate::wire::MESSAGE_BYTES_MAX))
        .layer(middleware::from_fn(crate::serve::json_errors))
        .layer(middleware::from_fn({
            let limits = hub.config.http.serve_limits();
            let counters = hub.serve_counters.clone();
            move |request, next| {
                crate::serve::body_deadline(limits, counters.clone(), request, next)
            }
        }))
        .layer(middleware::from_fn_with_state(hub.clone(), observe))
        .with_state(hub)
}

// ---------------------------------------------------------------- trunk side

async fn relay_from_trunk(
    hub: &Hub,
    from: &str,
    head: RelayHead,
    body: Vec<u8>,
    send: &mut quinn::SendStream,
) -> Result<(), crate::trunk::TrunkError> {
    let refused = |r: RelayRefusal| {
        (
            RelayAnswer {
                status: r.status,
                headers: vec![("content-type".into(), "application/json".into())]
                    .into_iter()
                    .chain(
                        r.retry_after
                            .map(|s| ("retry-after".to_owned(), s.to_string())),
                    )
                    .collect(),
            },
            serde_json::to_vec(&json!({ "error": { "code": r.code, "message": r.message } }))
                .unwrap_or_default(),
        )
    };
    let checked = hub.rate_check(&format!("region:{from}")).and_then(|()| {
        hub.rate_check(&format!(
            "org:{}",
            head.caller_org.as_deref().unwrap_or("anonymous")
        ))
    });
    // Held until this function returns, after the answer has streamed back over the trunk.
    let (_permit, checked) = match checked.and_then(|()| hub.relay_permit()) {
        Ok(permit) => (Some(permit), Ok(())),
        Err(refusal) => (None, Err(refusal)),
    };
    let outcome = match checked {
        Err(r) => Err(r),
        Ok(()) => match hub
            .resolve_agent(&head.publisher, &head.org, &head.agent)
            .await
        {
            Err(r) => Err(r),
            Ok(manifest) => hub.call_agent(&manifest, &head.headers, body).await,
        },
    };
    match outcome {
        Err(r) => {
            let (answer, body) = refused(r);
            crate::trunk::write_relay_answer(send, &answer).await?;
            send.write_all(&body)
                .await
                .map_err(|e| crate::trunk::TrunkError::Stream(e.to_string()))?;
        }
        Ok(response) => {
            let answer = RelayAnswer {
                status: response.status,
                headers: response.headers,
            };
            crate::trunk::write_relay_answer(send, &answer).await?;
            let mut stream = response.body;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| crate::trunk::TrunkError::Stream(e.to_string()))?;
                send.write_all(&chunk)
                    .await
                    .map_err(|e| crate::trunk::TrunkError::Stream(e.to_string()))?;
            }
        }
    }
    send.finish()
        .map_err(|e| crate::trunk::TrunkError::Stream(e.to_string()))
}

/// Serves one trunk connection from another region's hub until it closes.
pub async fn serve_trunk_connection(hub: Arc<Hub>, connection: quinn::Connection) {
    let Some(key) = crate::trunk::peer_key(&connection) else {
        connection.close(1u32.into(), b"no hub key");
        return;
    };
    let Some(region) = hub.region_of(&key) else {
        connection.close(1u32.into(), b"not a hub of the directory");
        return;
    };
    tracing::info!(%region, "trunk connection from a hub");
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let hub = hub.clone();
        let region = region.clone();
        tokio::spawn(async move {
            let result = match crate::trunk::read_request(&mut recv).await {
                Ok(TrunkRequest::Sync(bytes)) => {
                    let answer = hub.answer(&bytes).await.encode();
                    crate::trunk::write_answer(&mut send, &answer).await
                }
                Ok(TrunkRequest::Gossip(bytes)) => {
                    let verdict = match hub.gossip(&bytes, Upstream::Hub(region.clone())).await {
                        Ok(_) => String::new(),
                        Err(why) => why.to_string(),
                    };
                    crate::trunk::write_answer(&mut send, verdict.as_bytes()).await
                }
                Ok(TrunkRequest::Relay(head, body)) => {
                    relay_from_trunk(&hub, &region, head, body, &mut send).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                tracing::debug!(%region, %error, "trunk stream failed");
            }
        });
    }
}
