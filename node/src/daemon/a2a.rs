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
use std::net::{IpAddr, SocketAddr};
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

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Whether an address is off limits for the proxy unless `a2a.allow_private` is set.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves names and refuses any answer that includes a private address.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addresses.iter().any(|a| is_private(a.ip())) {
                let error: Box<dyn std::error::Error + Send + Sync> = format!(
                    "`{host}` resolves to a private address; refused (a2a.allow_private is off)"
                )
                .into();
                return Err(error);
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The proxy's client, limiter and concurrency bound.
pub struct Proxy {
    client: reqwest::Client,
    limiter: Mutex<Limiter>,
    slots: Arc<tokio::sync::Semaphore>,
    started: Instant,
}

impl Proxy {
    /// A proxy configured from `[a2a]`.
    pub fn new(config: &super::config::A2aSection) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .build()?;
        Ok(Self {
            client,
            limiter: Mutex::new(Limiter::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(config.concurrency_max)),
            started: Instant::now(),
        })
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// The manifest of an agent in the federated view.
fn manifest_of(state: &NodeState, org: &str, agent: &str) -> Result<Manifest, ApiError> {
    let agent_id = format!("{org}/{agent}");
    let record = state
        .index
        .read()
        .map_err(|_| ApiError::internal("index lock poisoned"))?
        .get(&agent_id)
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                format!("no agent `{agent_id}`"),
            )
        })?;
    let cid = meridian_registry::ids::parse_cid(&record.manifest).map_err(ApiError::internal)?;
    let block = state
        .store
        .get(&cid)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("manifest {cid} missing")))?;
    Manifest::decode(&block).map_err(ApiError::internal)
}

fn jsonrpc_endpoint(manifest: &Manifest) -> Result<reqwest::Url, ApiError> {
    let card = manifest.card().map_err(ApiError::internal)?;
    let interface = card
        .interfaces
        .iter()
        .find(|i| i.protocol_binding.eq_ignore_ascii_case("JSONRPC"))
        .ok_or_else(|| {
            error(
                StatusCode::BAD_GATEWAY,
                "no_jsonrpc_interface",
                "the agent's card names no JSON-RPC interface",
            )
        })?;
    reqwest::Url::parse(&interface.url).map_err(|e| {
        error(
            StatusCode::BAD_GATEWAY,
            "bad_agent_url",
            format!("`{}`: {e}", interface.url),
        )
    })
}

fn check_literal_host(url: &reqwest::Url, allow_private: bool) -> Result<(), ApiError> {
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok());
    if let Some(ip) = literal
        && !allow_private
        && is_private(ip)
    {
        return Err(error(
            StatusCode::FORBIDDEN,
            "private_address",
            format!(
                "the agent's endpoint {ip} is a private address; refused (a2a.allow_private is off)"
            ),
        ));
    }
    Ok(())
}

fn caller(state: &NodeState, headers: &HeaderMap) -> Result<String, ApiError> {
    match headers
        .get(CALLER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok("anonymous".to_owned()),
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
    state.governance.org_rate(org).unwrap_or(default)
}

fn count(state: &NodeState, outcome: &str) {
    state.metrics.count(
        &format!("meridian_a2a_calls_total{{outcome=\"{outcome}\"}}"),
        1,
    );
}

/// Forward one JSON-RPC call to the agent and stream its answer back (also with a trailing slash).
#[utoipa::path(post, path = "/a2a/{org}/{agent}", tag = "a2a", params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name"), ("Meridian-Caller-Token" = Option<String>, Header, description = "the calling organisation's token, for its rate tier (not forwarded)")), request_body(content = String, content_type = "application/json", description = "a JSON-RPC request"), responses((status = 200, description = "the agent's answer, streamed (any status passes through)", content_type = "application/json"), (status = 401, description = "bad caller token", body = ErrorBody), (status = 403, description = "private address refused", body = ErrorBody), (status = 404, description = "unknown agent", body = ErrorBody), (status = 413, description = "too large", body = ErrorBody), (status = 429, description = "rate limited (Retry-After)", body = ErrorBody), (status = 502, description = "agent unreachable", body = ErrorBody), (status = 503, description = "too many calls in flight (Retry-After)", body = ErrorBody), (status = 504, description = "agent timed out", body = ErrorBody)))]
pub async fn call(
    State(state): State<Arc<NodeState>>,
    Path((org, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let manifest = manifest_of(&state, &org, &agent)?;
    let url = jsonrpc_endpoint(&manifest)?;
    let allow_private = state.config.a2a.allow_private;
    if let Err(refused) = check_literal_host(&url, allow_private) {
        count(&state, "refused");
        return Err(refused);
    }
    let caller = caller(&state, &headers)?;
    let rate = rate_for(&state, &caller);
    let decision = {
        let proxy = &state.proxy;
        let now = proxy.started.elapsed();
        proxy
            .limiter
            .lock()
            .map_err(|_| ApiError::internal("limiter lock poisoned"))?
            .check(&caller, rate, now)
    };
    if let Decision::Wait(wait) = decision {
        count(&state, "rate_limited");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{caller} is over its rate; retry in {seconds} s"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let Ok(permit) = state.proxy.slots.clone().try_acquire_owned() else {
        count(&state, "busy");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many A2A calls in flight; retry shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(response);
    };

    let mut request = state.proxy.client.post(url.clone()).body(body);
    for (name, value) in &headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || lower == "content-length" || lower == CALLER_TOKEN_HEADER
        {
            continue;
        }
        request = request.header(name, value);
    }
    let timeout = Duration::from_secs(state.config.a2a.timeout_secs);
    let upstream = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            count(&state, "timeout");
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "agent_timeout",
                format!("the agent did not answer within {} s", timeout.as_secs()),
            ));
        }
        Ok(Err(failure)) => {
            let refused = format!("{failure:?}").contains("private address");
            count(&state, if refused { "refused" } else { "unreachable" });
            if refused {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "private_address",
                    format!(
                        "{url} resolves to a private address; refused (a2a.allow_private is off)"
                    ),
                ));
            }
            return Err(error(
                StatusCode::BAD_GATEWAY,
                "agent_unreachable",
                format!("could not reach the agent at {url}: {failure}"),
            ));
        }
        Ok(Ok(response)) => response,
    };
    count(&state, "forwarded");
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
    // Stream the body through as it arrives (SSE stays unbuffered); the permit is held until the
    // stream ends, so long streams count against the concurrency bound.
    use futures_util::StreamExt as _;
    let stream = upstream.bytes_stream().map(move |chunk| {
        let _held = &permit;
        chunk.map_err(std::io::Error::other)
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    Ok(response)
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
    let manifest = manifest_of(&state, &org, &agent)?;
    let mut card: Value = serde_json::from_str(&manifest.body.card).map_err(ApiError::internal)?;
    let base = if state.config.http.public_url.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    } else {
        state
            .config
            .http
            .public_url
            .trim_end_matches('/')
            .to_owned()
    };
    let proxy_url = format!("{base}/a2a/{org}/{agent}");
    if let Some(interfaces) = card
        .get_mut("supportedInterfaces")
        .and_then(Value::as_array_mut)
    {
        for interface in interfaces {
            let binding = interface
                .get("protocolBinding")
                .and_then(Value::as_str)
                .unwrap_or("JSONRPC");
            if binding.eq_ignore_ascii_case("JSONRPC") {
                interface["url"] = Value::String(proxy_url.clone());
            }
        }
    } else if card.get("url").is_some() {
        let transport = card
            .get("preferredTransport")
            .and_then(Value::as_str)
            .unwrap_or("JSONRPC");
        if transport.eq_ignore_ascii_case("JSONRPC") {
            card["url"] = Value::String(proxy_url);
        }
    }
    Ok(axum::Json(card).into_response())
}
