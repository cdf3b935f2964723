//! The HTTP server driver that node and hub share: axum's router behind an accept loop that
//! bounds what a client can hold.
//!
//! `axum::serve` has no header-read timeout and no connection caps, so a flood of connections
//! that send a partial header (or nothing) kept every file descriptor busy and `/health` stopped
//! answering. This driver closes a connection that does not complete a request head within
//! [`ServeLimits::header_read_timeout`] (which also bounds how long a keep-alive connection may
//! sit idle between requests), caps connections per client and overall (at the overall cap a
//! client holding few connections evicts the oldest of the client holding the most, so many
//! addresses holding idle connections cannot lock anyone out), and bounds how long a request
//! body may take to arrive ([`body_deadline`]). Every refusal and eviction is counted in
//! [`ServeCounters`], which the owner renders into its metrics.

use std::collections::{BTreeMap, HashMap};
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
    /// Connections open at once. At the cap a newcomer takes the place of the oldest connection
    /// of the client holding the most, if that client holds at least two more than the
    /// newcomer's; otherwise the newcomer is closed at once.
    pub connections_max: usize,
    /// Connections open at once from one client (an IPv4 address or an IPv6 /64).
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
    /// Connections closed to make room at `connections_max` for a client holding fewer.
    pub evicted_total: AtomicU64,
    /// Connections that ended in an error (a header-read timeout among them).
    pub errors_total: AtomicU64,
    /// Requests whose body did not arrive within `body_read_timeout`.
    pub body_timeouts_total: AtomicU64,
}

impl ServeCounters {
    /// The counters as `(name, help, value)` rows for a Prometheus rendering.
    pub fn rows(&self) -> [(&'static str, &'static str, f64); 7] {
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
                "meridian_http_connections_evicted_total",
                "HTTP connections closed to make room at http.connections_max: the oldest of the client holding the most, for a client holding at least two fewer.",
                read(&self.evicted_total),
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

/// How long an evicted connection that is in the middle of a request may take to finish it
/// before it is dropped. A connection evicted before it sent a complete request head (the
/// starving attacker's kind) or while idle between requests is closed at once.
pub const EVICTION_GRACE: Duration = Duration::from_secs(5);

/// What a per-client cap counts by: an IPv4 address, or an IPv6 /64, the block one subscriber
/// is usually given (counting single IPv6 addresses would let one host open a connection from
/// each of its 2^64 addresses). An IPv4-mapped IPv6 address counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(std::net::Ipv4Addr),
    V6Prefix(u64),
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The open connections, by client, oldest first, each with the sender that evicts it.
#[derive(Default)]
struct SlotTable {
    clients: HashMap<ClientKey, BTreeMap<u64, tokio::sync::oneshot::Sender<()>>>,
    open: usize,
    next_id: u64,
}

/// Open connections per client, released when a connection ends.
///
/// At `connections_max`, a newcomer is not simply refused: if some client holds at least two
/// more connections than the newcomer's client, that client's oldest connection is evicted to
/// make room. Idle connections from many addresses therefore cannot lock out a client that
/// holds few; a client is refused at the cap only when no one holds clearly more than it.
struct ClientSlots {
    table: Mutex<SlotTable>,
}

/// One connection's place, given back on drop (unless it was evicted, which gave it back).
struct Slot {
    slots: Arc<ClientSlots>,
    counters: Arc<ServeCounters>,
    key: ClientKey,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(mut table) = self.slots.table.lock() else {
            return;
        };
        let Some(connections) = table.clients.get_mut(&self.key) else {
            return;
        };
        if connections.remove(&self.id).is_none() {
            return;
        }
        if connections.is_empty() {
            table.clients.remove(&self.key);
        }
        table.open -= 1;
        self.counters
            .open
            .store(table.open as u64, Ordering::Relaxed);
    }
}

impl SlotTable {
    /// Evicts the oldest connection of the client holding the most, if it holds at least two
    /// more than `own` (the newcomer's client); whether a place was freed.
    fn evict_for(&mut self, own: usize) -> bool {
        let Some((&victim, held)) = self
            .clients
            .iter()
            .max_by_key(|(_, connections)| connections.len())
        else {
            return false;
        };
        if held.len() < own + 2 {
            return false;
        }
        let Some(connections) = self.clients.get_mut(&victim) else {
            return false;
        };
        if let Some((_, evict)) = connections.pop_first() {
            // The connection may have ended on its own already; its place is freed either way.
            let _ = evict.send(());
        }
        if connections.is_empty() {
            self.clients.remove(&victim);
        }
        self.open -= 1;
        true
    }
}

impl ClientSlots {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(SlotTable::default()),
        })
    }

    /// A place for a connection from `ip` and the signal that evicts it, or `None` (counted)
    /// when the client is at its cap, or all places are taken and no client holds clearly more.
    fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ServeLimits,
        counters: &Arc<ServeCounters>,
    ) -> Option<(Slot, tokio::sync::oneshot::Receiver<()>)> {
        let key = ClientKey::of(ip);
        let mut table = self.table.lock().ok()?;
        let own = table.clients.get(&key).map_or(0, BTreeMap::len);
        if own >= limits.connections_per_client_max {
            counters
                .refused_total_per_client
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if table.open >= limits.connections_max {
            if !table.evict_for(own) {
                counters.refused_total_max.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            counters.evicted_total.fetch_add(1, Ordering::Relaxed);
        }
        let id = table.next_id;
        table.next_id += 1;
        let (evict, evicted) = tokio::sync::oneshot::channel();
        table.clients.entry(key).or_default().insert(id, evict);
        table.open += 1;
        counters.open.store(table.open as u64, Ordering::Relaxed);
        let slot = Slot {
            slots: self.clone(),
            counters: counters.clone(),
            key,
            id,
        };
        Some((slot, evicted))
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
    let slots = ClientSlots::new();
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
        let Some((slot, evicted)) = slots.take(peer.ip(), &limits, &counters) else {
            drop(stream);
            continue;
        };
        counters.accepted_total.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let counters = counters.clone();
        let closing = closing_rx.clone();
        let app = app.clone();
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, app, limits, closing, evicted, &counters).await;
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

/// Serves one accepted connection until it ends, the server closes, or it is evicted; counts
/// a connection that ends in an error.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    mut closing: tokio::sync::watch::Receiver<bool>,
    mut evicted: tokio::sync::oneshot::Receiver<()>,
    counters: &ServeCounters,
) {
    // Whether a complete request head has arrived: an evicted connection that never sent one
    // is closed at once, one in a request gets [`EVICTION_GRACE`] to finish it.
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = started.clone();
    // Handlers see the client's address as `ConnectInfo` (the A2A proxy keys anonymous
    // callers' rate buckets by it).
    let inner = TowerToHyperService::new(app);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            hyper::service::Service::call(&inner, request)
        });
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
        Ok(()) = &mut evicted => {
            tracing::debug!(%peer, "connection evicted to make room for a client holding fewer");
            if !started.load(Ordering::Relaxed) {
                return;
            }
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(EVICTION_GRACE, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        counters.errors_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%error, %peer, "connection ended with an error");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    const HOLD: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n";

    /// A server on loopback with `limits` (a 60 s header timeout: nothing times out by itself)
    /// and a `/slow` route that answers after 300 ms.
    async fn server(max: usize, per_client: usize) -> (SocketAddr, Arc<ServeCounters>) {
        let app = Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "slow"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ServeLimits {
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            connections_max: max,
            connections_per_client_max: per_client,
        };
        let counters = Arc::new(ServeCounters::default());
        let stop = std::future::pending::<()>();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            counters.clone(),
            stop,
            Duration::from_secs(1),
        ));
        (address, counters)
    }

    /// A connection from `127.0.2.host` that has sent `bytes`.
    async fn connect(address: SocketAddr, host: u8, bytes: &[u8]) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let source = Ipv4Addr::new(127, 0, 2, host);
        socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
        let mut stream = socket.connect(address).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        // The server accepts in order; give it the moment to take this one.
        tokio::time::sleep(Duration::from_millis(30)).await;
        stream
    }

    /// What the server sends until it closes `stream` (panics if it keeps it open 3 s).
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer))
            .await
            .expect("the server closed the connection")
            .map(|_| String::from_utf8_lossy(&answer).into_owned())
            .unwrap_or_default()
    }

    /// Whether the server still holds `stream` open (no EOF within 100 ms).
    async fn held(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte))
            .await
            .is_err()
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn at_the_cap_a_newcomer_evicts_the_oldest_connection_of_the_heaviest_client() {
        let (address, counters) = server(6, 4).await;
        let mut heavy = Vec::new();
        for _ in 0..4 {
            heavy.push(connect(address, 1, HOLD).await);
        }
        let mut light = vec![
            connect(address, 2, HOLD).await,
            connect(address, 2, HOLD).await,
        ];
        assert_eq!(counters.open.load(Ordering::Relaxed), 6);

        // A client holding nothing is served: the heavy client's oldest connection makes room.
        let mut newcomer = connect(address, 3, &get("/health")).await;
        let answer = until_closed(&mut newcomer).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(counters.evicted_total.load(Ordering::Relaxed), 1);
        assert_eq!(
            until_closed(&mut heavy[0]).await,
            "",
            "evicted before a head: no answer"
        );
        for stream in heavy.iter_mut().skip(1).chain(light.iter_mut()) {
            assert!(
                held(stream).await,
                "only the oldest of the heaviest is evicted"
            );
        }

        // Full again (3 + 2 + 1). The light client holds 2 and the heaviest 3: no one holds
        // clearly more, so it is refused, and what it held stays.
        let _third = connect(address, 4, HOLD).await;
        let mut refused = connect(address, 2, HOLD).await;
        assert_eq!(until_closed(&mut refused).await, "");
        assert_eq!(counters.refused_total_max.load(Ordering::Relaxed), 1);
        assert_eq!(counters.evicted_total.load(Ordering::Relaxed), 1);
        for stream in &mut light {
            assert!(held(stream).await);
        }
        assert_eq!(counters.open.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn an_evicted_connection_in_the_middle_of_a_request_finishes_it() {
        let (address, counters) = server(3, 3).await;
        let mut busy = connect(address, 1, &get("/slow")).await;
        let _idle = [
            connect(address, 1, HOLD).await,
            connect(address, 1, HOLD).await,
        ];
        let mut newcomer = connect(address, 2, &get("/health")).await;
        assert!(
            until_closed(&mut newcomer)
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert_eq!(counters.evicted_total.load(Ordering::Relaxed), 1);
        let answer = until_closed(&mut busy).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("slow"), "{answer}");
    }

    #[tokio::test]
    async fn the_per_client_cap_refuses_before_any_eviction() {
        let (address, counters) = server(4, 2).await;
        let _held = [
            connect(address, 1, HOLD).await,
            connect(address, 1, HOLD).await,
        ];
        let mut third = connect(address, 1, HOLD).await;
        assert_eq!(until_closed(&mut third).await, "");
        assert_eq!(counters.refused_total_per_client.load(Ordering::Relaxed), 1);
        assert_eq!(counters.evicted_total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_block() {
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, last));
        assert_eq!(ClientKey::of(host(1)), ClientKey::of(host(0xffff)));
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 8, 0, 0, 0, 1));
        assert_ne!(ClientKey::of(host(1)), ClientKey::of(other));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(
            ClientKey::of(mapped),
            ClientKey::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_ne!(
            ClientKey::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
            ClientKey::of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
    }
}
