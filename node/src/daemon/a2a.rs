//! The A2A proxy: `POST /a2a/{org}/{agent}` forwards a JSON-RPC request to the agent and streams
//! its answer back unchanged; `GET /a2a/{org}/{agent}/.well-known/agent-card.json` serves the
//! registered card pointing at the proxy.
//!
//! The proxy connects only to a JSON-RPC endpoint that a verified manifest names, and by default
//! refuses private, loopback and link-local addresses, whether written as IPs or reached through
//! DNS (SSRF); it never follows redirects. It bounds bodies, the wait for the agent's answer and
//! the number of calls at once, and rate-limits callers (GCRA) with the policy's tiers. Methods,
//! status codes, `A2A-Version` and the other end-to-end headers, and SSE framing pass through.

use super::openapi::ErrorBody;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_hub::ratelimit::{Decision, Limiter, Rate};
use meridian_registry::manifest::Manifest;
use meridian_registry::store::BlockStore as _;
use serde_json::Value;

use super::http::{ApiError, NodeState};

/// The header that names the calling organisation's token (stripped before forwarding, so the
/// agent's own `Authorization` passes through untouched).
pub const CALLER_TOKEN_HEADER: &str = "meridian-caller-token";

use meridian_hub::relay::HOP_BY_HOP;
pub use meridian_hub::relay::is_private;

/// The proxy's client, limiter and concurrency bound.
pub struct Proxy {
    client: reqwest::Client,
    /// Reverse proxies whose forwarding headers are believed (`a2a.trusted_proxies`).
    trusted: Vec<meridian_hub::relay::Cidr>,
    /// Decoded manifests by CID ([`MANIFEST_CACHE_MAX`]).
    manifests: Mutex<std::collections::HashMap<String, Arc<Manifest>>>,
    /// For the region's hub, which the operator configured (so no SSRF guard).
    hub_client: reqwest::Client,
    limiter: Mutex<Limiter>,
    slots: Arc<tokio::sync::Semaphore>,
    started: Instant,
}

impl Proxy {
    /// A proxy configured from `[a2a]`.
    pub fn new(config: &super::config::A2aSection) -> anyhow::Result<Self> {
        let client = meridian_hub::relay::agent_client(
            config.allow_private,
            Duration::from_secs(config.connect_timeout_secs),
        )?;
        Ok(Self {
            client,
            trusted: meridian_hub::relay::parse_cidrs(&config.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("a2a.trusted_proxies: {e}"))?,
            manifests: Mutex::new(std::collections::HashMap::new()),
            hub_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(meridian_hub::serve::CLIENT_POOL_IDLE)
                .no_proxy()
                .build()?,
            limiter: Mutex::new(Limiter::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(config.concurrency_max)),
            started: Instant::now(),
        })
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// The manifest of an agent in the federated view (decoded from the store, cached by CID), the
/// publisher that lists it and the manifest's CID.
pub(crate) fn manifest_of(
    state: &NodeState,
    org: &str,
    agent: &str,
) -> Result<(Arc<Manifest>, String, String), ApiError> {
    let agent_id = format!("{org}/{agent}");
    let (cid_text, publisher) = {
        let index = state
            .index
            .read()
            .map_err(|_| ApiError::internal("index lock poisoned"))?;
        let record = index
            .get(&agent_id)
            .ok_or_else(|| super::http::unknown_agent(&index, &agent_id))?;
        (record.manifest.clone(), record.publisher.clone())
    };
    // A manifest is immutable under its CID: decoded once, then shared by every call.
    if let Some(manifest) = state
        .proxy
        .manifests
        .lock()
        .ok()
        .and_then(|cache| cache.get(&cid_text).cloned())
    {
        return Ok((manifest, publisher, cid_text));
    }
    let cid = meridian_registry::ids::parse_cid(&cid_text).map_err(ApiError::internal)?;
    let block = state
        .store
        .get(&cid)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("manifest {cid} missing")))?;
    let manifest = Arc::new(Manifest::decode(&block).map_err(ApiError::internal)?);
    if let Ok(mut cache) = state.proxy.manifests.lock() {
        if cache.len() >= MANIFEST_CACHE_MAX {
            cache.clear();
        }
        cache.insert(cid_text.clone(), manifest.clone());
    }
    Ok((manifest, publisher, cid_text))
}

/// Decoded manifests the proxy keeps (by CID); past it the cache starts over.
pub const MANIFEST_CACHE_MAX: usize = 4096;

fn jsonrpc_endpoint(manifest: &Manifest) -> Result<reqwest::Url, ApiError> {
    meridian_hub::relay::jsonrpc_url(manifest).map_err(|why| {
        error(
            StatusCode::BAD_GATEWAY,
            "bad_agent_endpoint",
            why.to_string(),
        )
    })
}

fn check_literal_host(url: &reqwest::Url, allow_private: bool) -> Result<(), ApiError> {
    let guard = meridian_hub::relay::EgressGuard {
        allow_private,
        allow_cidrs: Vec::new(),
    };
    match guard.url_refusal(url) {
        Some(why) => Err(error(
            StatusCode::FORBIDDEN,
            "private_address",
            format!("the agent's endpoint: {why} (a2a.allow_private)"),
        )),
        None => Ok(()),
    }
}

/// Who is calling, for the rate limiter: `org:ORG` with a caller token, otherwise
/// `anonymous:IP` (each client address its own bucket, so one noisy client cannot use up
/// every anonymous caller's rate).
fn caller(
    state: &NodeState,
    headers: &HeaderMap,
    client: Option<std::net::SocketAddr>,
) -> Result<String, ApiError> {
    match headers
        .get(CALLER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(match client {
            Some(address) => format!("anonymous:{}", address.ip()),
            None => "anonymous".to_owned(),
        }),
        Some(token) => state
            .tokens
            .org_for(token.trim())
            .map_err(ApiError::internal)?
            .map(|org| format!("org:{org}"))
            .ok_or_else(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!("unknown or revoked {CALLER_TOKEN_HEADER}"),
                )
            }),
    }
}

fn rate_for(state: &NodeState, caller: &str) -> Rate {
    let default = Rate {
        per_second: state.config.a2a.default_rps,
        burst: state.config.a2a.default_burst,
    };
    let Some(org) = caller.strip_prefix("org:") else {
        return default;
    };
    state
        .governance
        .org_rate(org)
        .map_or(default, |(per_second, burst)| Rate { per_second, burst })
}

fn count(state: &NodeState, outcome: &str) {
    state.metrics.count(
        &format!("meridian_a2a_calls_total{{outcome=\"{outcome}\"}}"),
        1,
    );
}

/// Forward one JSON-RPC call to the agent and stream its answer back (also with a trailing slash).
/// The proxy's own refusals come in JSON-RPC's shape for a JSON-RPC request: `{jsonrpc, id (the
/// request's), error: {code: -32000 (-32600 for a body too large), message, data: {reason,
/// httpStatus, retryAfterSeconds}}}`, with the HTTP status below and `Retry-After` on 429 and
/// 503; for anything else, in Meridian's `{error: {code, message}}`.
#[utoipa::path(post, path = "/a2a/{org}/{agent}", tag = "a2a", params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name"), ("Meridian-Caller-Token" = Option<String>, Header, description = "the calling organisation's token, for its rate tier (not forwarded)")), request_body(content = String, content_type = "application/json", description = "a JSON-RPC request"), responses((status = 200, description = "the agent's answer, streamed (any status passes through)", content_type = "application/json"), (status = 401, description = "bad caller token"), (status = 403, description = "private address refused"), (status = 404, description = "unknown agent"), (status = 410, description = "removed by its organisation"), (status = 413, description = "larger than a2a.body_bytes_max (JSON-RPC code -32600, id null)"), (status = 429, description = "over the caller's rate toward this agent (Retry-After)"), (status = 502, description = "agent unreachable"), (status = 503, description = "too many calls in flight (Retry-After)"), (status = 504, description = "agent timed out")))]
pub async fn call(
    State(state): State<Arc<NodeState>>,
    Path((org, agent)): Path<(String, String)>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.map(|axum::Extension(axum::extract::ConnectInfo(address))| address);
    match forward(&state, (&org, &agent), client, &headers, &body).await {
        Ok(response) => response,
        Err(refusal) => refusal.answer(&body),
    }
}

/// A refusal of the proxy itself (never an agent's answer): the error and, for a 429 or 503,
/// how many seconds to wait.
pub struct Refusal {
    error: ApiError,
    retry_after: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl Refusal {
    /// The refusal in the shape of the caller's protocol: for a JSON-RPC request a JSON-RPC
    /// error with the request's `id` ([`jsonrpc_refusal`]), otherwise Meridian's error shape;
    /// the HTTP status kept, and `Retry-After` when the caller may retry.
    pub fn answer(self, body: &[u8]) -> Response {
        /// The two members a refusal needs, the rest of the request skipped unread.
        #[derive(serde::Deserialize)]
        struct Envelope {
            jsonrpc: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            id: Value,
        }
        let id = serde_json::from_slice::<Envelope>(body)
            .ok()
            .filter(|request| request.jsonrpc.is_some())
            .map(|request| request.id);
        let mut response = match id {
            Some(id) => jsonrpc_refusal(
                id,
                self.error.status(),
                self.error.code(),
                self.error.message(),
                self.retry_after,
            ),
            None => self.error.into_response(),
        };
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl Refusal {
    /// The refusal as the HTTP+JSON binding has errors: RFC 9457 problem details
    /// (`application/problem+json`: `type` about:blank, `title`, `status`, `detail`, and the
    /// extensions `reason` and, when the caller may retry, `retryAfterSeconds`), with
    /// `Retry-After`.
    pub fn problem(self) -> Response {
        let status = self.error.status();
        let mut problem = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.error.message(),
            "reason": self.error.code().to_uppercase(),
        });
        if let Some(seconds) = self.retry_after {
            problem["retryAfterSeconds"] = Value::from(seconds.max(1));
        }
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            problem.to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// The JSON-RPC error answer of a proxy refusal, with HTTP `status`: code -32600 (Invalid
/// Request) for a request too large, otherwise -32000 (a server error JSON-RPC leaves to the
/// implementation: A2A defines none for a proxy's refusals), with `data.reason` (Meridian's
/// code, upper case: `RATE_LIMITED`, `BUSY`, `UNKNOWN_AGENT`, ...), `data.httpStatus` and, when
/// the caller may retry, `data.retryAfterSeconds`. A client reads a 429 or 503 as retryable
/// from the status and `Retry-After`, whatever it makes of the body.
pub fn jsonrpc_refusal(
    id: Value,
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let rpc_code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        -32600
    } else {
        -32000
    };
    let mut data =
        serde_json::json!({ "reason": code.to_uppercase(), "httpStatus": status.as_u16() });
    if let Some(seconds) = retry_after {
        data["retryAfterSeconds"] = Value::from(seconds.max(1));
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": rpc_code, "message": message, "data": data },
    });
    (status, axum::Json(body)).into_response()
}

/// Marks an answer that came from the agent (or the hub's relay): never reshaped.
#[derive(Debug, Clone, Copy)]
struct FromAgent;

/// A refusal made before a proxy handler ran (a body over `a2a.body_bytes_max`, one that broke
/// off, a method not routed), answered by axum in plain text: its status, code and message;
/// `None` for anything else (the agent's own answers above all).
fn refused_before_handler(response: &Response) -> Option<(StatusCode, &'static str, &'static str)> {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if response.extensions().get::<FromAgent>().is_some()
        || !(status.is_client_error() || status.is_server_error())
        || json
    {
        return None;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "the request is larger than a2a.body_bytes_max",
        ),
        StatusCode::REQUEST_TIMEOUT => ("body_timeout", "the request body did not arrive in time"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not carried"),
        _ => ("bad_request", "the request could not be read"),
    };
    Some((status, code, message))
}

/// Middleware of the JSON-RPC endpoints: a refusal made before the handler ran comes back as a
/// JSON-RPC error with a null `id` (the request could not be read), keeping its status.
pub async fn shape_refusals(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    match refused_before_handler(&response) {
        Some((status, code, message)) => jsonrpc_refusal(Value::Null, status, code, message, None),
        None => response,
    }
}

/// Middleware of the HTTP+JSON binding's routes: a refusal made before the handler ran comes
/// back as RFC 9457 problem details, keeping its status.
pub async fn shape_problems(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    match refused_before_handler(&response) {
        Some((status, code, message)) => Refusal::from(error(status, code, message)).problem(),
        None => response,
    }
}

/// The call: the agent's manifest, where to send it, the caller's admission, the request
/// forwarded and the answer streamed back; or the proxy's refusal.
async fn forward(
    state: &Arc<NodeState>,
    (org, agent): (&str, &str),
    client: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    let (manifest, publisher, _) = manifest_of(state, org, agent)?;
    let (hub, url) = destination(state, &manifest, org, agent)?;
    let caller = caller(state, headers, client)?;
    let permit = admit(state, &caller, org, agent)?;
    let target = Target {
        org,
        agent,
        publisher: &publisher,
        region: &manifest.body.region,
        body,
    };
    // `Bytes` clones share the buffer: the body is not copied.
    let request = outgoing(
        state,
        hub.is_some(),
        &url,
        target,
        (&caller, client),
        headers,
        body.clone(),
    );
    let upstream = send(state, request, &url).await?;
    count(
        state,
        if hub.is_some() {
            "relayed"
        } else {
            "forwarded"
        },
    );
    let mut response = stream_back(state, upstream, permit);
    mark_deprecated(&mut response, &manifest);
    Ok(response)
}

/// Whether this node calls the agent itself (its region, or no hub to relay through): the
/// HTTP+JSON binding is carried only then, as the hubs relay JSON-RPC alone.
fn reached_directly(state: &NodeState, manifest: &Manifest) -> bool {
    manifest.body.region == state.config.node.region || super::mesh::hub_url(state).is_none()
}

/// The agent's HTTP+JSON (REST) endpoint, from its verified card: a v1.0 interface with
/// `protocolBinding` HTTP+JSON, or a v0.3 one with that `transport` (or the card's `url` when
/// that is its preferred transport).
fn rest_endpoint(manifest: &Manifest) -> Option<reqwest::Url> {
    let card: Value = serde_json::from_str(&manifest.body.card).ok()?;
    let rest = |binding: Option<&Value>| {
        binding
            .and_then(Value::as_str)
            .is_some_and(|b| b.eq_ignore_ascii_case("HTTP+JSON"))
    };
    let from_list = |list: &str, binding: &str| {
        card.get(list)?
            .as_array()?
            .iter()
            .find(|i| rest(i.get(binding)))?
            .get("url")?
            .as_str()
            .map(str::to_owned)
    };
    let url = from_list("supportedInterfaces", "protocolBinding")
        .or_else(|| from_list("additionalInterfaces", "transport"))
        .or_else(|| {
            rest(card.get("preferredTransport"))
                .then(|| card.get("url")?.as_str().map(str::to_owned))
                .flatten()
        })?;
    reqwest::Url::parse(&url)
        .ok()
        .filter(|u| u.scheme() == "http" || u.scheme() == "https")
}

/// Forward one call of the agent's HTTP+JSON (REST) binding: `METHOD /a2a/{org}/{agent}/rest/{path}`
/// goes to the agent's REST endpoint + `/{path}` with the query, streamed back; for an agent this
/// node reaches directly. Refusals are RFC 9457 problem details, as the binding has them.
pub async fn rest(
    State(state): State<Arc<NodeState>>,
    Path((org, agent, path)): Path<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    method: axum::http::Method,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.map(|axum::Extension(axum::extract::ConnectInfo(address))| address);
    let call = RestCall {
        method: &method,
        path: &path,
        query: query.as_deref(),
    };
    match forward_rest(&state, (&org, &agent), call, client, &headers, &body).await {
        Ok(response) => response,
        Err(refusal) => refusal.problem(),
    }
}

/// One call of the HTTP+JSON binding: its method, path under the binding's base and query.
struct RestCall<'a> {
    method: &'a axum::http::Method,
    path: &'a str,
    query: Option<&'a str>,
}

/// [`rest`]'s call: the agent's REST endpoint (same region, SSRF-checked), the caller's
/// admission, the request forwarded and the answer streamed back.
async fn forward_rest(
    state: &Arc<NodeState>,
    (org, agent): (&str, &str),
    call: RestCall<'_>,
    client: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    let (manifest, _, _) = manifest_of(state, org, agent)?;
    let base = rest_endpoint(&manifest).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "no_rest_interface",
            format!("{org}/{agent} declares no HTTP+JSON interface"),
        )
    })?;
    if !reached_directly(state, &manifest) {
        return Err(error(
            StatusCode::BAD_GATEWAY,
            "rest_not_carried",
            "the HTTP+JSON binding is carried only to agents this node reaches directly (the hubs relay JSON-RPC between regions); use the JSON-RPC interface",
        )
        .into());
    }
    let mut url = base.clone();
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    url.set_path(&format!("{prefix}{}", call.path));
    // URL parsing resolves `..` (and `%2e%2e`, and `\` as a separator): whatever the caller
    // sent, the call stays under the agent's declared base.
    if !url.path().starts_with(&prefix) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the path leaves the agent's HTTP+JSON base",
        )
        .into());
    }
    url.set_query(call.query);
    if let Err(refused) = check_literal_host(&url, state.config.a2a.allow_private) {
        count(state, "refused");
        return Err(refused.into());
    }
    let caller = caller(state, headers, client)?;
    let permit = admit(state, &caller, org, agent)?;
    let method = reqwest::Method::from_bytes(call.method.as_str().as_bytes())
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_method", e.to_string()))?;
    let mut request = state.proxy.client.request(method, url.clone());
    if !body.is_empty() {
        request = request.body(body.clone());
    }
    let request = pass_headers(state, request, headers, client);
    let upstream = send(state, request, &url).await?;
    count(state, "forwarded");
    let mut response = stream_back(state, upstream, permit);
    mark_deprecated(&mut response, &manifest);
    Ok(response)
}

/// On the answers about a deprecated agent (its card and its calls): `Deprecation` (RFC 9745,
/// the date it was deprecated) and, when it names a successor, a `Link` to the successor's
/// card through this node (`rel="successor-version"`), so a client learns to move on.
fn mark_deprecated(response: &mut Response, manifest: &Manifest) {
    let Some(deprecation) = &manifest.body.deprecation else {
        return;
    };
    let headers = response.headers_mut();
    if let Ok(value) = format!("@{}", manifest.body.updated_at).parse() {
        headers.insert("deprecation", value);
    }
    if let Some(successor) = &deprecation.superseded_by
        && let Ok(value) =
            format!("</a2a/{successor}/.well-known/agent-card.json>; rel=\"successor-version\"")
                .parse()
    {
        headers.append(axum::http::header::LINK, value);
    }
}

/// Where a call goes: the agent's JSON-RPC endpoint (SSRF-checked when it is an IP literal), or
/// for an agent of another region this region's hub's relay, when there is one.
fn destination(
    state: &NodeState,
    manifest: &Manifest,
    org: &str,
    agent: &str,
) -> Result<(Option<String>, reqwest::Url), ApiError> {
    let hub = (manifest.body.region != state.config.node.region)
        .then(|| super::mesh::hub_url(state))
        .flatten();
    let url = match &hub {
        Some(hub) => reqwest::Url::parse(&format!("{hub}/v1/relay/{org}/{agent}"))
            .map_err(|e| ApiError::internal(format!("mesh.hub: {e}")))?,
        None => {
            let url = jsonrpc_endpoint(manifest)?;
            if let Err(refused) = check_literal_host(&url, state.config.a2a.allow_private) {
                count(state, "refused");
                return Err(refused);
            }
            url
        }
    };
    Ok((hub, url))
}

/// The caller's rate (one bucket per caller and agent: a caller hammering one agent does not
/// use up its rate toward the others) and a slot among the calls in flight: the permit, or
/// the 429 or 503 answer.
fn admit(
    state: &NodeState,
    caller: &str,
    org: &str,
    agent: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    let rate = rate_for(state, caller);
    let bucket = format!("{caller} {org}/{agent}");
    let decision = {
        let proxy = &state.proxy;
        let now = proxy.started.elapsed();
        proxy
            .limiter
            .lock()
            .map_err(|_| ApiError::internal("limiter lock poisoned"))?
            .check(&bucket, rate, now)
    };
    if let Decision::Wait(wait) = decision {
        count(state, "rate_limited");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(Refusal {
            error: error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("{caller} is over its rate toward {org}/{agent}; retry in {seconds} s"),
            ),
            retry_after: Some(seconds),
        });
    }
    let Ok(permit) = state.proxy.slots.clone().try_acquire_owned() else {
        count(state, "busy");
        return Err(Refusal {
            error: error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many A2A calls in flight; retry shortly",
            ),
            retry_after: Some(1),
        });
    };
    Ok(permit)
}

/// Admits a call to the node's own agent (`POST /a2a`) under the caller's rate, like a call to
/// any agent (its bucket names `meridian/node`).
pub(crate) fn admit_node_agent(
    state: &NodeState,
    headers: &HeaderMap,
    client: Option<std::net::SocketAddr>,
) -> Result<(), Refusal> {
    let caller = caller(state, headers, client)?;
    admit(state, &caller, "meridian", "node").map(drop)
}

use meridian_sync::claims::CallTarget as Target;

/// The request to the agent, or to the hub's relay with the publisher, the region and (for an
/// authenticated caller) this node's signed caller claim over `target` (whose body is `body`); the caller's end-to-end headers pass,
/// hop-by-hop and `Meridian-*` ones do not.
fn outgoing(
    state: &NodeState,
    via_hub: bool,
    url: &reqwest::Url,
    target: Target<'_>,
    (caller, client): (&str, Option<std::net::SocketAddr>),
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let request = if via_hub {
        let mut request = state
            .proxy
            .hub_client
            .post(url.clone())
            .header(
                meridian_hub::daemon::http::PUBLISHER_HEADER,
                target.publisher,
            )
            .header(meridian_hub::daemon::http::REGION_HEADER, target.region);
        if let Some(caller_org) = caller.strip_prefix("org:") {
            // The hub honours the organisation only with this node's signed claim.
            let claim = meridian_sync::claims::CallerClaim {
                caller_org: caller_org.to_owned(),
                node: state.node_did.clone(),
                time: (state.clock)(),
            };
            let message = meridian_sync::claims::caller_claim_message(&claim, target);
            let signature = state.publisher.sign(&message);
            for (name, value) in meridian_sync::claims::caller_claim_headers(&claim, &signature) {
                request = request.header(name, value);
            }
        }
        request.body(body)
    } else {
        state.proxy.client.post(url.clone()).body(body)
    };
    pass_headers(state, request, headers, client)
}

/// The caller's end-to-end headers onto `request`: hop-by-hop and `Meridian-*` ones left out,
/// forwarding headers only from a trusted reverse proxy; then this hop's forwarding headers.
fn pass_headers(
    state: &NodeState,
    mut request: reqwest::RequestBuilder,
    headers: &HeaderMap,
    client: Option<std::net::SocketAddr>,
) -> reqwest::RequestBuilder {
    let trusted = client.is_some_and(|c| state.proxy.trusted.iter().any(|r| r.contains(c.ip())));
    for (name, value) in headers {
        let lower = name.as_str();
        // `Meridian-*` headers are this hop's (the caller token, and the publisher, region and
        // caller organisation told to the hub above): a caller must not be able to set them.
        // Forwarding headers are believed only from a trusted reverse proxy.
        if HOP_BY_HOP.contains(&lower)
            || lower == "content-length"
            || lower.starts_with("meridian-")
            || (!trusted && FORWARDING_HEADERS.contains(&lower))
        {
            continue;
        }
        request = request.header(name, value);
    }
    forwarded(request, client, headers)
}

/// The headers that say who a request came from and through which proxies.
const FORWARDING_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Adds this hop to the forwarding headers: RFC 7239 `Forwarded` (`for` the caller's address,
/// `host` it asked for, `proto`) and `X-Forwarded-For`, after any a trusted proxy sent.
fn forwarded(
    request: reqwest::RequestBuilder,
    client: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
) -> reqwest::RequestBuilder {
    let Some(client) = client else {
        return request;
    };
    let ip = client.ip();
    let node = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut element = format!("for={node};proto=http");
    if let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b';' && b != b',')
        })
    {
        element.push_str(&format!(";host=\"{host}\""));
    }
    request
        .header("forwarded", element)
        .header("x-forwarded-for", ip.to_string())
}

/// Sends the call, within `a2a.timeout_secs` to the first byte: 504 past it, 403 when the
/// agent's name resolves to a refused address, 502 when it cannot be reached.
async fn send(
    state: &NodeState,
    request: reqwest::RequestBuilder,
    url: &reqwest::Url,
) -> Result<reqwest::Response, ApiError> {
    let timeout = Duration::from_secs(state.config.a2a.timeout_secs);
    match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            count(state, "timeout");
            Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "agent_timeout",
                format!("the agent did not answer within {} s", timeout.as_secs()),
            ))
        }
        Ok(Err(failure)) => {
            let described = format!("{failure:?}");
            let refused =
                described.contains("private address") || described.contains("metadata address");
            count(state, if refused { "refused" } else { "unreachable" });
            if refused {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "private_address",
                    format!(
                        "{url} resolves to a private address; refused (a2a.allow_private is off)"
                    ),
                ));
            }
            Err(error(
                StatusCode::BAD_GATEWAY,
                "agent_unreachable",
                format!("could not reach the agent at {url}: {failure}"),
            ))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// The agent's answer as the caller's: status and end-to-end headers as they came, the body
/// streamed through as it arrives (SSE stays unbuffered). The permit is held until the stream
/// ends, so long streams count against the concurrency bound; the stream ends after
/// `a2a.stream_timeout_secs` in all, or `a2a.stream_idle_timeout_secs` without a byte from the
/// agent, so a silent or endless agent cannot hold a slot for ever.
fn stream_back(
    state: &Arc<NodeState>,
    upstream: reqwest::Response,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) || name.as_str() == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out_headers.append(name, value);
        }
    }
    let stream = bounded_stream(
        upstream.bytes_stream(),
        Duration::from_secs(state.config.a2a.stream_timeout_secs),
        Duration::from_secs(state.config.a2a.stream_idle_timeout_secs),
        state.clone(),
    );
    use futures_util::StreamExt as _;
    let stream = stream.map(move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response.extensions_mut().insert(FromAgent);
    response
}

/// An agent's streamed answer, cut off at `total` after it started or after `idle` without a
/// chunk; each cut is counted (`meridian_a2a_calls_total{outcome="stream_timeout"}`) and ends
/// the body with an error, so the client sees the stream break rather than end cleanly.
fn bounded_stream(
    upstream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    total: Duration,
    idle: Duration,
    state: Arc<NodeState>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let deadline = tokio::time::Instant::now() + total;
    futures_util::stream::unfold((Box::pin(upstream), false), move |(mut upstream, done)| {
        let state = state.clone();
        async move {
            use futures_util::StreamExt as _;
            if done {
                return None;
            }
            let next_deadline = deadline.min(tokio::time::Instant::now() + idle);
            match tokio::time::timeout_at(next_deadline, upstream.next()).await {
                Ok(Some(chunk)) => Some((chunk.map_err(std::io::Error::other), (upstream, false))),
                Ok(None) => None,
                Err(_) => {
                    count(&state, "stream_timeout");
                    let why = if tokio::time::Instant::now() >= deadline {
                        "the agent's stream ran past a2a.stream_timeout_secs"
                    } else {
                        "the agent's stream was silent past a2a.stream_idle_timeout_secs"
                    };
                    Some((
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why)),
                        (upstream, true),
                    ))
                }
            }
        }
    })
}

/// The base URL the node's own cards name: `http.public_url`; else the request's host when
/// `http.allowed_hosts` lists it; else the gateway's bound address when that is a specific
/// address (loopback included). A node bound to every interface with neither setting names
/// none: a Host header is the client's to choose, so taking it would let any client make the
/// card point wherever it likes.
pub(crate) fn card_base(state: &NodeState, headers: &HeaderMap) -> Result<String, ApiError> {
    let http = &state.config.http;
    if !http.public_url.is_empty() {
        return Ok(http.public_url.trim_end_matches('/').to_owned());
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host
        && http
            .allowed_hosts
            .split(',')
            .map(str::trim)
            .any(|allowed| !allowed.is_empty() && allowed.eq_ignore_ascii_case(host))
    {
        return Ok(format!("http://{host}"));
    }
    match state.gateway_addr.get() {
        Some(address) if !address.ip().is_unspecified() => Ok(format!("http://{address}")),
        _ => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "public_url_unset",
            "this node listens on every interface without http.public_url or http.allowed_hosts, so it cannot name itself in a card; set one",
        )),
    }
}

/// Where this proxy carries an interface of `binding` (`protocolBinding` in v1.0, `transport`
/// in v0.3): JSON-RPC (the default when none is named) at `proxy_url`, HTTP+JSON at `rest_url`
/// when the node carries it for this agent; `None` for what it does not carry (gRPC).
fn carried<'u>(
    binding: Option<&str>,
    proxy_url: &'u str,
    rest_url: Option<&'u str>,
) -> Option<&'u str> {
    match binding {
        None => Some(proxy_url),
        Some(b) if b.eq_ignore_ascii_case("JSONRPC") => Some(proxy_url),
        Some(b) if b.eq_ignore_ascii_case("HTTP+JSON") => rest_url,
        Some(_) => None,
    }
}

/// Rewrites a card so that no URL in it leads past the node: every interface this proxy
/// carries (JSON-RPC) points at `proxy_url`, in both card versions and in a card that carries
/// both forms (v1.0 `supportedInterfaces`; v0.3 `url` with `preferredTransport` and
/// `additionalInterfaces`); interfaces it cannot carry (gRPC, HTTP+JSON) are left out, a v0.3
/// card whose preferred transport is one of them prefers JSON-RPC through the node instead; and
/// the agent's JWS `signatures`, which covered the card as published, not as served, are
/// dropped (the card handler then signs the served card with the node's key; the signed
/// original stays available from `GET /api/v1/agents/ORG/NAME`).
pub fn rewrite_card(card: &mut Value, proxy_url: &str, rest_url: Option<&str>) {
    let Some(object) = card.as_object_mut() else {
        return;
    };
    let proxy = Value::String(proxy_url.to_owned());
    // v1.0 names an interface's binding `protocolBinding`, v0.3 `transport`.
    for (list, binding) in [
        ("supportedInterfaces", "protocolBinding"),
        ("additionalInterfaces", "transport"),
    ] {
        if let Some(interfaces) = object.get_mut(list).and_then(Value::as_array_mut) {
            interfaces.retain_mut(|interface| {
                let binding = interface.get(binding).and_then(Value::as_str);
                match carried(binding, proxy_url, rest_url) {
                    Some(url) => {
                        interface["url"] = Value::String(url.to_owned());
                        true
                    }
                    None => false,
                }
            });
        }
    }
    if object.contains_key("url") {
        let preferred = object.get("preferredTransport").and_then(Value::as_str);
        match carried(preferred, proxy_url, rest_url) {
            Some(url) => {
                object.insert("url".into(), Value::String(url.to_owned()));
            }
            None => {
                object.insert("url".into(), proxy);
                object.insert("preferredTransport".into(), Value::String("JSONRPC".into()));
            }
        }
    }
    object.remove("signatures");
}

/// The agent's card, with its JSON-RPC interfaces pointing at this proxy.
///
/// Otherwise clients would read the agent's own URL and bypass the node.
#[utoipa::path(get, path = "/a2a/{org}/{agent}/.well-known/agent-card.json", tag = "a2a", params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name")), responses((status = 200, description = "card", content_type = "application/json"), (status = 404, description = "unknown agent", body = ErrorBody)))]
pub async fn card(
    State(state): State<Arc<NodeState>>,
    Path((org, agent)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (manifest, _, _) = manifest_of(&state, &org, &agent)?;
    let mut card: Value = serde_json::from_str(&manifest.body.card).map_err(ApiError::internal)?;
    let base = card_base(&state, &headers)?;
    let proxy_url = format!("{base}/a2a/{org}/{agent}");
    let rest_url = (reached_directly(&state, &manifest) && rest_endpoint(&manifest).is_some())
        .then(|| format!("{proxy_url}/rest"));
    let signed = card.get("signatures").is_some();
    rewrite_card(&mut card, &proxy_url, rest_url.as_deref());
    if signed {
        // Served with the node's own signature over the card as served.
        super::jws::sign_card(&state, &mut card, &base);
    }
    let mut response = axum::Json(card).into_response();
    mark_deprecated(&mut response, &manifest);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every URL in a served card, wherever it sits.
    fn urls(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    match inner {
                        Value::String(s) if key == "url" => out.push(s.clone()),
                        other => urls(other, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| urls(i, out)),
            _ => {}
        }
    }

    #[test]
    fn no_url_in_a_served_card_leads_past_the_node() {
        let proxy = "https://node.example/a2a/acme/echo";
        let v1 = json!({
            "name": "Echo",
            "supportedInterfaces": [
                { "url": "https://agent.example/rpc", "protocolBinding": "JSONRPC" },
                { "url": "https://agent.example/grpc", "protocolBinding": "GRPC" },
                { "url": "https://agent.example/rest", "protocolBinding": "HTTP+JSON" },
            ],
            "signatures": [{ "protected": "x", "signature": "y" }],
        });
        let v03 = json!({
            "name": "Echo",
            "url": "https://agent.example/grpc",
            "preferredTransport": "GRPC",
            "additionalInterfaces": [
                { "url": "https://agent.example/rpc", "transport": "JSONRPC" },
                { "url": "https://agent.example/grpc", "transport": "GRPC" },
            ],
        });
        let both = json!({
            "name": "Echo",
            "url": "https://agent.example/rpc",
            "supportedInterfaces": [{ "url": "https://agent.example/rpc" }],
        });
        for mut card in [v1, v03, both] {
            rewrite_card(&mut card, proxy, None);
            let mut found = Vec::new();
            urls(&card, &mut found);
            assert!(!found.is_empty(), "{card}");
            assert!(found.iter().all(|u| u == proxy), "{card}");
            assert!(
                card.get("signatures").is_none(),
                "the agent's signatures covered another card"
            );
            if let Some(preferred) = card.get("preferredTransport") {
                assert_eq!(preferred, "JSONRPC", "{card}");
            }
        }
    }

    /// A buffered answer's JSON body.
    fn body_json(response: Response) -> Value {
        let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            1 << 16,
        ))
        .unwrap()
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_refusal_speaks_json_rpc_to_a_json_rpc_request() {
        let refusal = || Refusal {
            error: error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down"),
            retry_after: Some(2),
        };
        let request = br#"{"jsonrpc":"2.0","id":"req-9","method":"SendMessage"}"#;
        let answer = refusal().answer(request);
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "2");
        let body = body_json(answer);
        assert_eq!(body["id"], "req-9");
        assert_eq!(body["error"]["code"], -32000);
        assert_eq!(body["error"]["data"]["reason"], "RATE_LIMITED");
        assert_eq!(body["error"]["data"]["retryAfterSeconds"], 2);
        // Anything else gets Meridian's shape.
        let plain = refusal().answer(b"not json");
        assert_eq!(body_json(plain)["error"]["code"], "rate_limited");
    }
}
