//! The HTTP server driver that node and hub share: axum's router behind an accept loop that
//! bounds what a client can hold.
//!
//! `axum::serve` has no header-read timeout and no connection caps, so a flood of connections
//! that send a partial header (or nothing) kept every file descriptor busy and `/health` stopped
//! answering. This driver closes a connection that does not complete a request head within
//! [`ServeLimits::header_read_timeout`] (which also bounds how long a keep-alive connection may
//! sit idle between requests), caps connections overall and per client address, and bounds how
//! long a request body may take to arrive ([`body_deadline`]). Every refusal is counted in
//! [`ServeCounters`], which the owner renders into its metrics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// How long Meridian's own HTTP clients keep an idle pooled connection: below the servers'
/// header-read timeout (which also closes idle keep-alive connections), so a client never
/// sends a request on a connection the server is closing.
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(5);

/// Bounds on what HTTP clients can hold, from a daemon's `[http]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a connection may take to send a complete request head, counted from when the
    /// server starts waiting for one (so it also bounds idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full, from the end of its head.
    pub body_read_timeout: Duration,
    /// Connections open at once; past it a new connection is closed at once.
    pub connections_max: usize,
    /// Connections open at once from one client address.
    pub connections_per_client_max: usize,
}

/// Which `[http]` limits are inconsistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A timeout or a connection cap is 0.
    #[error(
        "config http.header_read_timeout_secs, http.body_read_timeout_secs, http.connections_max and http.connections_per_client_max must be above 0"
    )]
    Zero,
    /// More connections per client than in all.
    #[error("config http.connections_per_client_max must be at most http.connections_max")]
    PerClientAboveTotal,
}

impl ServeLimits {
    /// Checks the limits, naming the `[http]` setting at fault (the same names on node and hub).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.header_read_timeout.is_zero()
            || self.body_read_timeout.is_zero()
            || self.connections_max == 0
            || self.connections_per_client_max == 0
        {
            return Err(LimitsError::Zero);
        }
        if self.connections_per_client_max > self.connections_max {
            return Err(LimitsError::PerClientAboveTotal);
        }
        Ok(())
    }
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            connections_max: 4096,
            connections_per_client_max: 256,
        }
    }
}

/// What the server counts, for the owner's `/metrics`.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted since start.
    pub accepted_total: AtomicU64,
    /// Connections closed at once because `connections_max` were open.
    pub refused_total_max: AtomicU64,
    /// Connections closed at once because their client address had `connections_per_client_max`.
    pub refused_total_per_client: AtomicU64,
    /// Connections that ended in an error (a header-read timeout among them).
    pub errors_total: AtomicU64,
    /// Requests whose body did not arrive within `body_read_timeout`.
    pub body_timeouts_total: AtomicU64,
}

impl ServeCounters {
    /// The counters as `(name, help, value)` rows for a Prometheus rendering.
    pub fn rows(&self) -> [(&'static str, &'static str, f64); 6] {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        [
            (
                "meridian_http_connections_open",
                "HTTP connections open now.",
                read(&self.open),
            ),
            (
                "meridian_http_connections_accepted_total",
                "HTTP connections accepted since start.",
                read(&self.accepted_total),
            ),
            (
                "meridian_http_connections_refused_max_total",
                "HTTP connections closed at once: http.connections_max were open.",
                read(&self.refused_total_max),
            ),
            (
                "meridian_http_connections_refused_per_client_total",
                "HTTP connections closed at once: their address had http.connections_per_client_max open.",
                read(&self.refused_total_per_client),
            ),
            (
                "meridian_http_connection_errors_total",
                "HTTP connections ended by an error, header-read timeouts included.",
                read(&self.errors_total),
            ),
            (
                "meridian_http_body_timeouts_total",
                "Requests whose body did not arrive within http.body_read_timeout_secs.",
                read(&self.body_timeouts_total),
            ),
        ]
    }
}

/// Open connections per client address, released when a connection ends.
struct ClientSlots {
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place, given back on drop.
struct Slot {
    slots: Arc<ClientSlots>,
    counters: Arc<ServeCounters>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut map) = self.slots.per_client.lock()
            && let Some(count) = map.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ClientSlots {
    fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ServeLimits,
        counters: &Arc<ServeCounters>,
    ) -> Option<Slot> {
        let mut map = self.per_client.lock().ok()?;
        if counters.open.load(Ordering::Relaxed) >= limits.connections_max as u64 {
            counters.refused_total_max.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let count = map.entry(ip).or_insert(0);
        if *count >= limits.connections_per_client_max {
            counters
                .refused_total_per_client
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        counters.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            slots: self.clone(),
            counters: counters.clone(),
            ip,
        })
    }
}

/// Serves `app` on `listener` under `limits` until `stop` resolves, then lets requests in
/// progress finish for at most `grace`. Sets `TCP_NODELAY` on every connection: streamed
/// answers are written in pieces, and with Nagle's algorithm each small piece after the first
/// waits for the peer's delayed ACK (~40 ms on Linux).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    counters: Arc<ServeCounters>,
    stop: impl std::future::Future<Output = ()> + Send,
    grace: Duration,
) {
    let slots = Arc::new(ClientSlots {
        per_client: Mutex::new(HashMap::new()),
    });
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: back off a
                    // little instead of spinning, and go on.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(slot) = slots.take(peer.ip(), &limits, &counters) else {
            drop(stream);
            continue;
        };
        counters.accepted_total.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        // Handlers see the client's address as `ConnectInfo` (the A2A proxy keys anonymous
        // callers' rate buckets by it).
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                hyper::service::Service::call(&inner, request)
            },
        );
        let mut closing = closing_rx.clone();
        let counters = counters.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                counters.errors_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish within the grace period; stopping anyway"
        );
        connections.abort_all();
    }
}

/// The slowest upload a body is given time for beyond `body_read_timeout`: a declared body of
/// N bytes may take N / this many seconds more (a 1 GiB snapshot import, 17 minutes).
pub const BODY_RATE_MIN_BYTES_PER_SEC: u64 = 1024 * 1024;

/// Middleware: the request body must arrive in full within `body_read_timeout` of the
/// request's head, plus the time its declared length takes at [`BODY_RATE_MIN_BYTES_PER_SEC`];
/// a body still trickling in then is cut off and the client gets a JSON 408 (`body_timeout`),
/// whatever the handler made of the cut body. Counts each cut.
pub async fn body_deadline(
    limits: ServeLimits,
    counters: Arc<ServeCounters>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let allowance =
        limits.body_read_timeout + Duration::from_secs(declared / BODY_RATE_MIN_BYTES_PER_SEC);
    let deadline = tokio::time::Instant::now() + allowance;
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let stream = body.into_data_stream();
    let flag = timed_out.clone();
    let timed = futures_util::stream::unfold((stream, false), move |(mut stream, done)| {
        let flag = flag.clone();
        async move {
            if done {
                return None;
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(chunk)) => Some((chunk, (stream, false))),
                Ok(None) => None,
                Err(_) => {
                    flag.store(true, Ordering::Relaxed);
                    let error = axum::Error::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body did not arrive in time",
                    ));
                    Some((Err(error), (stream, true)))
                }
            }
        }
    });
    let request = Request::from_parts(parts, Body::from_stream(timed));
    let response = next.run(request).await;
    if timed_out.load(Ordering::Relaxed) {
        counters.body_timeouts_total.fetch_add(1, Ordering::Relaxed);
        return refusal(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!(
                "the request body did not arrive within {} s",
                allowance.as_secs()
            ),
        );
    }
    response
}

/// Middleware: the answers axum's extractors give before a handler runs (413 for a body over
/// the limit, 400 for one that broke off) are plain text; this turns them into the JSON error
/// shape both daemons document, keeping the status. Answers relayed from agents
/// ([`PASS_THROUGH_PREFIXES`]) pass unchanged: the proxy is transparent.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if PASS_THROUGH_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&bytes).trim().to_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    refusal(status, code, &message)
}

/// Paths whose answers come from agents (the node's A2A proxy, the hub's relay): never
/// rewritten.
pub const PASS_THROUGH_PREFIXES: [&str; 2] = ["/a2a/", "/v1/relay/"];

/// The answer for a request refused before it reached a handler, in the JSON error shape both
/// daemons use.
pub fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        serde_json::json!({ "error": { "code": code, "message": message, "details": null } });
    (status, axum::Json(body)).into_response()
}
