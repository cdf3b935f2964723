//! Regional hubs in the simulation: each region's hub host runs the real hub
//! ([`meridian_hub::daemon::state::Hub`]: its verified cache, head mirror, limiter, breakers and
//! delta answers), its real HTTP API (the axum router, served on turmoil TCP) and its real QUIC
//! trunk (quinn over turmoil UDP, certificates pinned to hub keys).
//!
//! What differs from production is only the plumbing at the edges:
//! - nodes link to their hub over the simulation's framed transport (as they link to each
//!   other) instead of HTTP: requests go to [`Hub::answer`], gossip to [`Hub::gossip`], and the
//!   hub pushes every new head down each link where production nodes long-poll for them;
//! - a node names itself the source of its own heads with a `source` frame instead of a
//!   signed `Meridian-Source` URL, and the hub reaches it back over the same link
//!   ([`SimEgress`]);
//! - each region has one echo agent host: the hub reaches every agent URL of its region there.
//!
//! A2A callers (host `caller-{r}`) call agents either through their hub's HTTP relay or
//! directly, over a fresh TCP connection and a real TLS 1.3 handshake (rustls), which is what
//! a call without hubs costs.

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use meridian_hub::daemon::config::HubConfig;
use meridian_hub::daemon::state::{Hub, HubParts};
use meridian_hub::egress::{AgentAnswer, Egress, EgressError};
use meridian_hub::heads::Upstream;
use meridian_hub::wire::Gossip;
use meridian_registry::keys::Keypair;
use quinn::udp::{RecvMeta, Transmit};
use tokio::sync::{mpsc, oneshot};

use crate::federation::{EPOCH_UNIX, World};
use crate::transport::{DIAL_TIMEOUT, Frame, LINK_IDLE_MAX, read_frame, write_frame, write_frames};

/// The port a hub accepts its region's node links on.
pub const HUB_LINK_PORT: u16 = 7100;
/// The UDP port of a hub's QUIC trunk.
pub const HUB_TRUNK_PORT: u16 = 7101;
/// The port of a hub's HTTP API.
pub const HUB_HTTP_PORT: u16 = 7180;
/// The port an agent host answers hubs on (plain, inside the region).
pub const AGENT_PORT: u16 = 7200;
/// The port an agent host answers direct callers on (TLS).
pub const AGENT_TLS_PORT: u16 = 7201;

/// The host name of region `region`'s hub.
pub fn hub_host(region: usize) -> String {
    format!("hub-{region}")
}

/// The host name of region `region`'s echo agent.
pub fn agent_host(region: usize) -> String {
    format!("agent-{region}")
}

/// The host name of region `region`'s A2A caller.
pub fn caller_host(region: usize) -> String {
    format!("caller-{region}")
}

/// The hub key of region `region` (fixed, so runs repeat).
pub fn hub_key(region: usize) -> Keypair {
    let mut secret = [0xa7u8; 32];
    secret[..8].copy_from_slice(&(region as u64).to_be_bytes());
    Keypair::from_secret(&secret)
}

/// The agent hosts' TLS key (fixed).
fn agent_key() -> Keypair {
    Keypair::from_secret(&[0xa9; 32])
}

/// The key of the nodes whose A2A proxies call through the hubs: it signs the caller claims
/// that let a hub rate a call by its organisation (the hubs trust it by configuration).
fn caller_node_key() -> Keypair {
    Keypair::from_secret(&[0xc1; 32])
}

/// Simulated unix time (hubs in the simulation read this clock).
fn sim_unix() -> i64 {
    EPOCH_UNIX + turmoil::sim_elapsed().unwrap_or_default().as_secs() as i64
}

/// A hub's cross-region bytes so far, from its metrics.
pub fn hub_cross_region_bytes(hub: &Hub) -> u64 {
    hub.metrics.counter("meridian_hub_cross_region_bytes_total")
}

/// What outlives a hub host's crash: its store (sled, as on disk) and its configuration.
pub struct HubSlot {
    /// The region number.
    pub region: usize,
    /// The configuration (trunk peers are filled in when the hub starts).
    pub config: HubConfig,
    /// The hub's store.
    pub db: sled::Db,
    /// A misbehaving hub: every answer it sends its nodes has one byte flipped near the end
    /// (a hub serving wrong blocks).
    pub tamper: std::sync::atomic::AtomicBool,
    /// Per mille of the trunk's outgoing datagrams sent twice (read when the hub starts).
    pub duplicate_per_mille: std::sync::atomic::AtomicU32,
    /// Trunk datagrams sent twice so far.
    pub duplicated: Arc<AtomicU64>,
}

impl HubSlot {
    /// The slot of region `region`'s hub, configured from `template`.
    pub fn new(region: usize, template: &HubConfig) -> Result<Self, String> {
        let mut config = template.clone();
        config.hub.region = format!("region-{region}");
        config.relay.allow_private = true;
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| format!("opening hub {region}'s store: {e}"))?;
        Ok(Self {
            region,
            config,
            db,
            tamper: Default::default(),
            duplicate_per_mille: Default::default(),
            duplicated: Default::default(),
        })
    }
}

/// The hub configuration the simulations start from: the defaults, with upstream waits and
/// breakers scaled to simulated networks (seconds, not tens of seconds).
pub fn sim_hub_config() -> HubConfig {
    let mut config = HubConfig::default();
    config.hub.upstream_timeout_secs = 2;
    config.hub.breaker_open_secs = 1;
    config.relay.timeout_secs = 5;
    config.relay.trusted_nodes = caller_node_key().did();
    config
}

// ---------------------------------------------------------------- quinn over turmoil UDP

type Readable = Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send>>;

/// A quinn socket over a turmoil UDP socket: what lets the real trunk run in simulation.
/// turmoil's UDP has no send buffer to wait for, so the socket is always writable.
///
/// It can also duplicate datagrams (turmoil drops and, with latency jitter, reorders them, but
/// never duplicates): each one sent is sent twice with probability `duplicate_per_mille`/1000,
/// drawn from a seeded source so runs repeat.
struct TurmoilUdp {
    socket: Arc<turmoil::net::UdpSocket>,
    readable: Mutex<Option<Readable>>,
    duplicate_per_mille: u32,
    rng: Mutex<crate::federation::Rng>,
    duplicated: Arc<AtomicU64>,
}

impl std::fmt::Debug for TurmoilUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurmoilUdp").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Writable;

impl quinn::UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for TurmoilUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len());
        for datagram in transmit.contents.chunks(segment.max(1)) {
            self.socket.try_send_to(datagram, transmit.destination)?;
            if self.duplicate_per_mille > 0
                && lock(&self.rng).below(1000) < self.duplicate_per_mille as usize
            {
                self.duplicated.fetch_add(1, Ordering::Relaxed);
                self.socket.try_send_to(datagram, transmit.destination)?;
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut readable = match self.readable.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        loop {
            if readable.is_none() {
                match self.socket.try_recv_from(buf) {
                    Ok((len, addr)) => {
                        *slot = RecvMeta {
                            addr,
                            len,
                            stride: len,
                            ecn: None,
                            dst_ip: None,
                        };
                        return Poll::Ready(Ok(1));
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
            let wait = readable.get_or_insert_with(|| {
                let socket = self.socket.clone();
                Box::pin(async move { socket.readable().await })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    *readable = None;
                    result?;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// A quinn endpoint on a turmoil UDP socket. quinn's stock tokio runtime already follows
/// turmoil's clock; `seed` fixes quinn's own randomness (and the duplication draws) so runs
/// repeat.
fn trunk_endpoint(
    socket: turmoil::net::UdpSocket,
    server: quinn::ServerConfig,
    seed: u64,
    slot: &HubSlot,
) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    config.rng_seed(Some(bytes));
    let socket = Arc::new(TurmoilUdp {
        socket: Arc::new(socket),
        readable: Mutex::new(None),
        duplicate_per_mille: slot.duplicate_per_mille.load(Ordering::Relaxed),
        rng: Mutex::new(crate::federation::Rng::new(seed)),
        duplicated: slot.duplicated.clone(),
    });
    quinn::Endpoint::new_with_abstract_socket(
        config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

// ---------------------------------------------------------------- HTTP on turmoil TCP

/// The hub's axum router served on a turmoil listener.
struct SimListener(turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

// ---------------------------------------------------------------- egress

/// A hub's way out in the simulation: to its region's nodes over their links, to its region's
/// agent host over TCP.
pub struct SimEgress {
    region: usize,
    links: Mutex<HashMap<usize, (u64, mpsc::UnboundedSender<Frame>)>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The node a simulated gateway URL names (`sim://node-{i}`).
fn node_of(gateway: &str) -> Option<usize> {
    gateway.strip_prefix("sim://node-")?.parse().ok()
}

impl SimEgress {
    fn answered(&self, id: u64, bytes: Vec<u8>) {
        if let Some(waiter) = lock(&self.pending).remove(&id) {
            let _ = waiter.send(bytes);
        }
    }
}

impl Egress for SimEgress {
    fn node_sync<'a>(
        &'a self,
        gateway: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, EgressError>> {
        Box::pin(async move {
            let node = node_of(gateway).ok_or_else(|| EgressError::BadUrl {
                url: gateway.to_owned(),
                reason: "not a simulated node".to_owned(),
            })?;
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&self.pending).insert(id, tx);
            // The hub bounds the wait (its upstream timeout drops this future): the pending
            // entry goes whenever this ends.
            struct Pending<'a>(&'a SimEgress, u64);
            impl Drop for Pending<'_> {
                fn drop(&mut self) {
                    lock(&self.0.pending).remove(&self.1);
                }
            }
            let _pending = Pending(self, id);
            let sent = lock(&self.links)
                .get(&node)
                .is_some_and(|(_, link)| link.send(Frame::Request(id, request)).is_ok());
            if !sent {
                return Err(EgressError::unreachable(gateway, "not linked to this hub"));
            }
            rx.await.map_err(|_| {
                EgressError::unreachable(gateway, "the link closed before it answered")
            })
        })
    }

    fn agent_call<'a>(
        &'a self,
        url: &'a str,
        _headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<AgentAnswer, EgressError>> {
        Box::pin(async move {
            let address = SocketAddr::new(turmoil::lookup(agent_host(self.region)), AGENT_PORT);
            let mut stream = turmoil::net::TcpStream::connect(address)
                .await
                .map_err(|e| EgressError::unreachable(url, e))?;
            let answer = echo_exchange(&mut stream, body)
                .await
                .map_err(|e| EgressError::unreachable(url, e))?;
            Ok(AgentAnswer {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Box::pin(futures_util::stream::once(async move { Ok(answer) })),
            })
        })
    }
}

/// Sends one request frame and reads its answer.
async fn echo_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    write_frame(stream, &Frame::Request(0, body))
        .await
        .map_err(|e| e.to_string())?;
    match read_frame(stream).await {
        Ok(Some((Frame::Response(_, answer), _))) => Ok(answer),
        Ok(_) => Err("the agent closed without answering".into()),
        Err(error) => Err(error.to_string()),
    }
}

// ---------------------------------------------------------------- the hub host

/// Serves one node's link: its requests, gossip and source claims go to the hub; the hub's
/// requests go back on it; every head, governance document and proof the hub holds is pushed
/// down it as it arrives.
fn serve_link(
    hub: Arc<Hub>,
    egress: Arc<SimEgress>,
    stream: turmoil::net::TcpStream,
    node: usize,
    link_id: u64,
    tamper: bool,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    lock(&egress.links).insert(node, (link_id, tx.clone()));
    tokio::spawn(async move { write_frames(&mut writer, &mut rx).await });
    let push = {
        let hub = hub.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut changes = hub.subscribe();
            let mut sent: HashSet<Vec<u8>> = HashSet::new();
            loop {
                if let meridian_hub::wire::Response::Heads {
                    commits,
                    governance,
                    equivocations,
                } = hub.heads_response()
                {
                    let messages = governance
                        .into_iter()
                        .map(Gossip::Governance)
                        .chain(commits.into_iter().map(Gossip::Head))
                        .chain(equivocations.into_iter().map(Gossip::Equivocation));
                    for message in messages {
                        let bytes = message.encode();
                        if sent.insert(bytes.clone()) && tx.send(Frame::Gossip(bytes)).is_err() {
                            return;
                        }
                    }
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    tokio::spawn(async move {
        // Until the link closes, breaks, or is silent for too long.
        while let Ok(Ok(Some((frame, _)))) =
            tokio::time::timeout(LINK_IDLE_MAX, read_frame(&mut reader)).await
        {
            match frame {
                Frame::Request(id, bytes) => {
                    let hub = hub.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut answer = hub.answer(&bytes).await.encode();
                        if tamper {
                            crate::federation::tamper(&mut answer);
                        }
                        let _ = tx.send(Frame::Response(id, answer));
                    });
                }
                Frame::Gossip(bytes) => {
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        let _ = hub.gossip(&bytes, Upstream::Unknown).await;
                    });
                }
                Frame::Source(bytes) => {
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        let source = Upstream::Node(format!("sim://node-{node}"));
                        let _ = hub.gossip(&bytes, source).await;
                    });
                }
                Frame::Response(id, bytes) => egress.answered(id, bytes),
                // The hub pushes heads from its own state, not by forwarding gossip: nodes
                // send it every message in full, and its notices have nothing to suppress.
                Frame::Hello(_)
                | Frame::Ping
                | Frame::DontWant(_)
                | Frame::IHave(_)
                | Frame::IWant(_) => {}
            }
        }
        push.abort();
        let mut links = lock(&egress.links);
        if links.get(&node).is_some_and(|(id, _)| *id == link_id) {
            links.remove(&node);
        }
    });
}

/// Starts what the hub daemon runs beside its links to nodes: anti-entropy, the trunk's
/// accept loop and the HTTP API.
async fn spawn_hub_services(hub: &Arc<Hub>, endpoint: quinn::Endpoint) -> turmoil::Result {
    // Anti-entropy with the other regions' hubs, as the daemon runs it: at start, then every
    // hub.anti_entropy_secs of simulated time.
    {
        let hub = hub.clone();
        let period = std::time::Duration::from_secs(hub.config.hub.anti_entropy_secs);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                hub.anti_entropy().await;
            }
        });
    }

    {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        meridian_hub::daemon::http::serve_trunk_connection(hub, connection).await;
                    }
                });
            }
        });
    }
    {
        let listener =
            turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), HUB_HTTP_PORT)).await?;
        let router = meridian_hub::daemon::http::router(hub.clone());
        tokio::spawn(async move {
            let _ = axum::serve(SimListener(listener), router).await;
        });
    }
    Ok(())
}

/// The software of region `region`'s hub host: the trunk, the HTTP API and the node links,
/// until the host stops. Its store survives a crash; everything else starts again.
pub async fn run_hub(region: usize, world: Arc<World>) -> turmoil::Result {
    let slot = world
        .hubs
        .get(region)
        .ok_or_else(|| format!("no hub slot for region {region}"))?;
    let key = hub_key(region);
    let mut config = slot.config.clone();
    config.trunk.peers = (0..world.hubs.len())
        .filter(|&r| r != region)
        .map(|r| {
            let ip = turmoil::lookup(hub_host(r));
            format!("region-{r}={}@{ip}:{HUB_TRUNK_PORT}", hub_key(r).did())
        })
        .collect::<Vec<_>>()
        .join(",");
    let starts = world.observe(|o| {
        o.hub_starts[region] += 1;
        o.hub_starts[region]
    });
    let allowed = meridian_hub::trunk::AllowedKeys::default();
    let server = meridian_hub::trunk::server_config(&key, allowed.clone())?;
    let socket =
        turmoil::net::UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), HUB_TRUNK_PORT)).await?;
    let endpoint = trunk_endpoint(
        socket,
        server,
        (region as u64) << 32 | u64::from(starts),
        slot,
    )?;
    let egress = Arc::new(SimEgress {
        region,
        links: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
    });
    let hub = Arc::new(Hub::assemble(
        HubParts {
            config,
            key,
            store: Arc::new(meridian_hub::daemon::store::SledHubStore::new(
                slot.db.clone(),
            )?),
            endpoint: endpoint.clone(),
            allowed,
            clock: sim_unix,
        },
        egress.clone(),
    )?);
    world.observe(|o| o.hubs[region] = Some(hub.clone()));
    spawn_hub_services(&hub, endpoint).await?;
    let listener =
        turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), HUB_LINK_PORT)).await?;
    let peer_id = world.hub_peer(region) as u32;
    let mut link_ids = 0u64;
    loop {
        let (mut stream, _) = listener.accept().await?;
        link_ids += 1;
        let link_id = link_ids;
        let hub = hub.clone();
        let egress = egress.clone();
        let nodes = world.specs.len();
        let tamper = slot.tamper.load(Ordering::Relaxed);
        tokio::spawn(async move {
            let hello = async {
                let Ok(Some((Frame::Hello(node), _))) = read_frame(&mut stream).await else {
                    return None;
                };
                write_frame(&mut stream, &Frame::Hello(peer_id))
                    .await
                    .ok()?;
                Some(node as usize)
            };
            if let Ok(Some(node)) = tokio::time::timeout(DIAL_TIMEOUT, hello).await
                && node < nodes
            {
                serve_link(hub, egress, stream, node, link_id, tamper);
            }
        });
    }
}

// ---------------------------------------------------------------- agents

/// Answers one connection's requests with an echo: the JSON-RPC body back, wrapped.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    while let Ok(Some((Frame::Request(id, body), _))) = read_frame(&mut stream).await {
        let mut answer = br#"{"jsonrpc":"2.0","id":1,"result":"#.to_vec();
        answer.extend_from_slice(if body.is_empty() { b"null" } else { &body });
        answer.push(b'}');
        if write_frame(&mut stream, &Frame::Response(id, answer))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn agent_tls() -> Result<rustls::ServerConfig, String> {
    let (cert, private) =
        meridian_hub::trunk::certificate(&agent_key()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .map_err(|e| e.to_string())
}

/// The software of region `region`'s echo agent host: plain for its hub, TLS for direct
/// callers.
pub async fn run_agent(region: usize) -> turmoil::Result {
    let _ = region;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(agent_tls()?));
    let secure =
        turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), AGENT_TLS_PORT)).await?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = secure.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(stream) = tls.accept(stream).await {
                    echo(stream).await;
                }
            });
        }
    });
    let plain = turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), AGENT_PORT)).await?;
    loop {
        let (stream, _) = plain.accept().await?;
        tokio::spawn(echo(stream));
    }
}

// ---------------------------------------------------------------- callers

/// How an A2A call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the caller's hub's HTTP relay (and the trunk, for another region's agent).
    Hub,
    /// Straight to the agent's host: a fresh TCP connection and TLS 1.3 handshake.
    DirectTls,
}

/// One A2A call for a caller host to make.
#[derive(Debug)]
pub struct CallJob {
    /// How.
    pub route: Route,
    /// The calling organisation (the hub's rate limits are per org).
    pub caller_org: String,
    /// The agent's region.
    pub agent_region: usize,
    /// The agent's key, `org/agent`.
    pub agent: String,
    /// The did:key of the publisher listing the agent.
    pub publisher: String,
    /// A label the outcome is recorded under (in [`crate::federation::Observed::calls`]).
    pub tag: String,
}

/// What one call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The HTTP status (200 for a direct call that got its answer; 0 when nothing came).
    pub status: u16,
    /// `Retry-After`, seconds, on a 429.
    pub retry_after: Option<u64>,
    /// Simulated milliseconds from start to the whole answer.
    pub ms: u64,
    /// What went wrong, if the call failed below HTTP.
    pub error: Option<String>,
}

fn agent_client_tls() -> Result<tokio_rustls::TlsConnector, String> {
    let (cert, _) = meridian_hub::trunk::certificate(&agent_key()).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

async fn hub_connection(region: usize) -> Result<Sender, String> {
    let address = SocketAddr::new(turmoil::lookup(hub_host(region)), HUB_HTTP_PORT);
    let stream = turmoil::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to the hub: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call_through_hub(
    region: usize,
    idle: &tokio::sync::Mutex<Vec<Sender>>,
    job: &CallJob,
) -> Result<(u16, Option<u64>), String> {
    use http_body_util::BodyExt as _;
    let reused = idle.lock().await.pop();
    let mut sender = match reused {
        Some(sender) if !sender.is_closed() => sender,
        _ => hub_connection(region).await?,
    };
    let (org, agent) = job
        .agent
        .split_once('/')
        .ok_or_else(|| format!("`{}` is not org/agent", job.agent))?;
    let body: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#;
    let node = caller_node_key();
    let claim = meridian_sync::claims::CallerClaim {
        caller_org: job.caller_org.clone(),
        node: node.did(),
        time: sim_unix(),
    };
    let agent_region = format!("region-{}", job.agent_region);
    let target = meridian_sync::claims::CallTarget {
        org,
        agent,
        publisher: &job.publisher,
        region: &agent_region,
        body,
    };
    let signature = node.sign(&meridian_sync::claims::caller_claim_message(&claim, target));
    let mut request = hyper::Request::post(format!("/v1/relay/{org}/{agent}"))
        .header("host", hub_host(region))
        .header("content-type", "application/json")
        .header(meridian_hub::daemon::http::PUBLISHER_HEADER, &job.publisher)
        .header(meridian_hub::daemon::http::REGION_HEADER, &agent_region);
    for (name, value) in meridian_sync::claims::caller_claim_headers(&claim, &signature) {
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    idle.lock().await.push(sender);
    Ok((status, retry_after))
}

async fn call_direct(
    tls: &tokio_rustls::TlsConnector,
    job: &CallJob,
) -> Result<(u16, Option<u64>), String> {
    let address = SocketAddr::new(
        turmoil::lookup(agent_host(job.agent_region)),
        AGENT_TLS_PORT,
    );
    let stream = turmoil::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to the agent: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(meridian_hub::trunk::CERT_NAME)
        .map_err(|e| e.to_string())?;
    let mut stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    echo_exchange(
        &mut stream,
        br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#.to_vec(),
    )
    .await?;
    Ok((200, None))
}

/// The software of region `region`'s A2A caller: makes the calls the scenario hands it, each
/// on its own task, and reports how each went.
pub async fn run_caller(region: usize, world: Arc<World>) -> turmoil::Result {
    let (tx, mut jobs) = mpsc::unbounded_channel::<CallJob>();
    world.observe(|o| {
        if let Some(slot) = o.callers.get_mut(region) {
            *slot = Some(tx);
        }
    });
    let tls = agent_client_tls()?;
    let idle: Arc<tokio::sync::Mutex<Vec<Sender>>> = Arc::default();
    while let Some(job) = jobs.recv().await {
        let tls = tls.clone();
        let idle = idle.clone();
        let world = world.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = match job.route {
                Route::Hub => call_through_hub(region, &idle, &job).await,
                Route::DirectTls => call_direct(&tls, &job).await,
            };
            let ms = started.elapsed().as_millis() as u64;
            let outcome = match result {
                Ok((status, retry_after)) => CallOutcome {
                    status,
                    retry_after,
                    ms,
                    error: None,
                },
                Err(error) => CallOutcome {
                    status: 0,
                    retry_after: None,
                    ms,
                    error: Some(error),
                },
            };
            world.observe(|o| o.calls.push((job.tag.clone(), outcome)));
        });
    }
    Ok(())
}
