//! The peer mesh: the libp2p driver of the sync engine.
//!
//! QUIC (and TCP with noise and yamux as a fallback) carry identify, kademlia (discovery from
//! the configured bootstrap peers), gossipsub (heads, governance documents and equivocation
//! proofs on one topic, each message validated by the engine before it is forwarded) and
//! request-response (block, delta and head requests, with bounded sizes). The node's libp2p
//! identity is its ed25519 node key, so its PeerId and its did:key name the same key.
//!
//! This module only moves bytes and runs imports on the blocking pool; every decision is the
//! engine's ([`crate::sync::Engine`]).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, noise, tcp, yamux};
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::store::BlockStore as _;
use tokio::sync::mpsc;

use super::http::NodeState;
use crate::sync::{self, Engine, ImportReport, Now, PeerInfo, SyncConfig, Verdict};

/// The gossipsub topic of heads, governance documents and equivocation proofs.
pub const TOPIC: &str = "meridian/sync/1";
/// The request-response protocol of block, delta and head requests.
pub const SYNC_PROTOCOL: &str = "/meridian/sync/1";
/// Where the mesh writes the addresses it listens on (one multiaddr with `/p2p/` per line).
pub const MESH_ADDR_FILE: &str = "mesh.addr";
/// Largest request read from a peer.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Commands the rest of the node may queue for the mesh ([`MeshCommand`]); past it an
/// announcement is dropped and counted (the periodic heads exchange carries it later) and a
/// gateway sync request is answered 503.
pub const MESH_COMMANDS_MAX: usize = 1024;
/// Finished imports and hub events queued for the mesh loop.
const MESH_EVENTS_MAX: usize = 256;
/// How long a long-poll of the hub's heads may take: the hub holds it 25 s.
const HUB_POLL_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the node waits for its hub when pushing a head or a document to it.
pub const HUB_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the follower waits before asking again when no hub is configured.
const HUB_ABSENT_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two tries to reach an unreachable hub.
const HUB_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often kademlia looks for more peers.
const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);
/// How often the engine's figures are copied to the metrics.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// How long an idle libp2p connection is kept.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// What the rest of the node tells the mesh.
#[derive(Debug)]
pub enum MeshCommand {
    /// The node published a new head of its own: this commit block.
    Announce(Vec<u8>),
    /// The operator handed the node a governance document it accepted: pass it to peers and
    /// to the hub.
    Govern(Vec<u8>),
    /// A sync wire request that arrived over HTTP (`POST /api/v1/sync`, e.g. from the hub):
    /// answer it from the engine.
    Serve {
        /// The wire request.
        request: Vec<u8>,
        /// Where the wire answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<u8>>,
    },
}

/// Where the engine's inputs come from and its requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A libp2p peer.
    Peer(PeerId),
    /// This region's hub, over HTTP.
    Hub,
    /// A client of the gateway's `POST /api/v1/sync` (answered, never asked).
    Gateway,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Peer(peer) => write!(f, "{peer}"),
            Self::Hub => f.write_str("hub"),
            Self::Gateway => f.write_str("gateway"),
        }
    }
}

/// What the hub follower and hub requests report back to the mesh loop.
enum HubEvent {
    /// The hub answered a poll: it is up, and holds these commits, governance documents and
    /// equivocation proofs.
    Polled {
        /// Commit blocks.
        commits: Vec<Vec<u8>>,
        /// Governance document blocks, in the order to apply them.
        governance: Vec<Vec<u8>>,
        /// Equivocation proof blocks.
        equivocations: Vec<Vec<u8>>,
    },
    /// The hub could not be reached.
    Down(String),
    /// The answer to an engine request.
    Answer(u64, Result<Vec<u8>, String>),
}

/// The hub URL: `mesh.hub`, else the policy's hub directory entry for this node's region.
pub fn hub_url(state: &NodeState) -> Option<String> {
    if !state.config.mesh.hub.is_empty() {
        return Some(state.config.mesh.hub.trim_end_matches('/').to_owned());
    }
    state.governance.hub_url(&state.config.node.region)
}

/// Long-polls the hub's heads and reports what it says, until the receiver goes away.
async fn follow_hub(
    state: Arc<NodeState>,
    client: reqwest::Client,
    events: mpsc::Sender<HubEvent>,
) {
    let mut cursor: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let Some(url) = hub_url(&state) else {
            tokio::time::sleep(HUB_ABSENT_RETRY).await;
            continue;
        };
        let query = match cursor {
            Some(after) => format!("{url}/v1/heads?after={after}&wait=25"),
            None => format!("{url}/v1/heads"),
        };
        let answer = async {
            let response = client
                .get(&query)
                .timeout(HUB_POLL_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let bytes = meridian_hub::relay::read_limited(response, sync::wire::MESSAGE_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string())
        }
        .await;
        match answer {
            Ok(body) => {
                failures = 0;
                let new_cursor = body["cursor"].as_u64();
                if cursor.is_some() && new_cursor == cursor {
                    continue; // the long-poll timed out with nothing new
                }
                cursor = new_cursor;
                let decode = |field: &str| -> Vec<Vec<u8>> {
                    body[field]
                        .as_array()
                        .map(|items| {
                            items
                                .iter()
                                .filter_map(|v| v.as_str())
                                .filter_map(|t| {
                                    base64::engine::general_purpose::STANDARD.decode(t).ok()
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let event = HubEvent::Polled {
                    commits: decode("commits"),
                    governance: decode("governance"),
                    equivocations: decode("equivocations"),
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                cursor = None;
                if events.send(HubEvent::Down(error)).await.is_err() {
                    return;
                }
                let wait = Duration::from_millis(250).saturating_mul(1 << failures.min(7));
                tokio::time::sleep(wait.min(HUB_BACKOFF_MAX)).await;
            }
        }
    }
}

pub use meridian_sync::HUB_CONNECT_HEADS_MAX;

/// Pushes a gossip message to the hub; a head of this node's own carries the gateway URL it
/// can fetch the blocks from, signed with the node key.
async fn push_to_hub(
    state: Arc<NodeState>,
    client: reqwest::Client,
    key: Keypair,
    message: Vec<u8>,
) {
    let Some(url) = hub_url(&state) else {
        return;
    };
    let mut request = client
        .post(format!("{url}/v1/gossip"))
        .body(message.clone());
    if let Ok(sync::wire::Gossip::Head(block)) =
        sync::wire::Gossip::decode(&message, sync::wire::GOSSIP_BYTES_MAX)
        && let Ok(commit) = meridian_registry::commit::Commit::decode(&block)
        && commit.body.publisher == key.public()
        && let Some(gateway) = gateway_url(&state)
    {
        let cid = meridian_registry::ids::dag_cbor_cid(&block);
        let sig = key.sign(&meridian_sync::claims::source_message(&gateway, &cid));
        request = request
            .header(meridian_sync::claims::SOURCE_HEADER, gateway)
            .header(
                meridian_sync::claims::SOURCE_SIG_HEADER,
                base64::engine::general_purpose::STANDARD.encode(sig),
            );
    }
    match request.timeout(HUB_PUSH_TIMEOUT).send().await {
        Ok(response) if response.status().is_success() => {
            state
                .metrics
                .count("meridian_hub_pushes_total{outcome=\"accepted\"}", 1);
        }
        Ok(response) => {
            state
                .metrics
                .count("meridian_hub_pushes_total{outcome=\"refused\"}", 1);
            tracing::warn!(status = %response.status(), "the hub refused a pushed message");
        }
        Err(error) => {
            state
                .metrics
                .count("meridian_hub_pushes_total{outcome=\"failed\"}", 1);
            tracing::debug!(%error, "could not push to the hub");
        }
    }
}

/// The URL the hub can reach this node's gateway at: `http.public_url`, else the bound address.
fn gateway_url(state: &NodeState) -> Option<String> {
    if !state.config.http.public_url.is_empty() {
        return Some(
            state
                .config
                .http
                .public_url
                .trim_end_matches('/')
                .to_owned(),
        );
    }
    state
        .gateway_addr
        .get()
        .map(|addr| format!("http://{addr}"))
}

/// Length-prefixed byte messages, bounded in both directions.
#[derive(Debug, Clone)]
pub struct BytesCodec {
    response_bytes_max: usize,
}

async fn read_bounded<T: futures_util::AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds {max}"),
        ));
    }
    // Grow with what arrives rather than reserve what the prefix claims: a peer that claims
    // 8 MiB and sends nothing holds no memory.
    let mut body = Vec::new();
    futures_util::AsyncReadExt::take(io, len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("message ended after {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

async fn write_bounded<T: futures_util::AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: Vec<u8>,
) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures_util::AsyncRead + Unpin + Send,
    {
        read_bounded(io, REQUEST_BYTES_MAX).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures_util::AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.response_bytes_max).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures_util::AsyncWrite + Unpin + Send,
    {
        write_bounded(io, request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures_util::AsyncWrite + Unpin + Send,
    {
        write_bounded(io, response).await
    }
}

pub use behaviour::{MeshBehaviour, MeshBehaviourEvent};

/// The behaviours in a module of their own: the derive generates `MeshBehaviourEvent`, whose
/// variants (one per behaviour) carry no doc comments.
#[allow(missing_docs)]
mod behaviour {
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{connection_limits, gossipsub, identify, kad, request_response};

    use super::BytesCodec;

    /// The mesh's libp2p behaviours.
    #[derive(NetworkBehaviour)]
    pub struct MeshBehaviour {
        /// Refuses connections past `mesh.connections_max`.
        pub limits: connection_limits::Behaviour,
        /// Peers tell each other their listen addresses.
        pub identify: identify::Behaviour,
        /// Discovery from the bootstrap peers.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Heads, governance documents and equivocation proofs on [`super::TOPIC`].
        pub gossipsub: gossipsub::Behaviour,
        /// Block, delta and head requests on [`super::SYNC_PROTOCOL`].
        pub sync: request_response::Behaviour<BytesCodec>,
    }
}

/// The did:key a PeerId names, when it is an inline ed25519 key (as every Meridian node's is).
pub fn peer_did(peer: &PeerId) -> Option<String> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    PublicKey::from_bytes(&ed.to_bytes())
        .ok()
        .map(|k| k.to_did())
}

/// The libp2p identity of a node key.
pub fn identity(key: &Keypair) -> Result<libp2p::identity::Keypair> {
    let mut secret = key.secret_bytes();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| anyhow::anyhow!("node key as a libp2p identity: {e}"))
}

/// Parses a whitespace- or comma-separated list of multiaddrs, naming the setting at fault.
pub fn parse_addrs(setting: &str, text: &str) -> Result<Vec<Multiaddr>> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Multiaddr>()
                .map_err(|e| anyhow::anyhow!("config {setting}: `{s}` is not a multiaddr: {e}"))
        })
        .collect()
}

/// The mesh's swarm for a node key: the transports and behaviours every Meridian node runs
/// (tests build peers that misbehave on purpose from it, so they speak the real protocols),
/// with at most `connections_max` connections.
pub fn build_swarm(
    key: &Keypair,
    config: &SyncConfig,
    connections_max: u32,
) -> Result<Swarm<MeshBehaviour>> {
    let limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_established(Some(connections_max))
        .with_max_pending_incoming(Some((connections_max / 4).max(8)))
        .with_max_established_per_peer(Some(2));
    let identity = identity(key)?;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validate_messages()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(config.gossip_bytes_max + 1024)
        // Heads are forwarded after their snapshot is imported: keep them that long.
        .history_length(30)
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(crate::sync::wire::gossip_id(&message.data).to_vec())
        })
        // Heads are smaller than gossipsub's default threshold (1,000 bytes): without this,
        // a node gets a full copy from every mesh peer that forwards before hearing from it.
        .idontwant_message_size_threshold(crate::sync::wire::DONT_WANT_BYTES_MIN)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let response_bytes_max = config.message_bytes_max;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .context("setting up TCP")?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(StreamProtocol::new("/meridian/kad/1")),
            );
            kad.set_mode(Some(kad::Mode::Server));
            Ok(MeshBehaviour {
                limits: libp2p::connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/meridian/1".into(),
                    key.public(),
                )),
                kad,
                gossipsub: gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?,
                sync: request_response::Behaviour::with_codec(
                    BytesCodec { response_bytes_max },
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_millis(config.request_timeout_ms)),
                ),
            })
        })
        .map_err(|e| anyhow::anyhow!("building the mesh: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

/// The sync engine's view of the node's governance.
struct NodeGovernance(Arc<NodeState>);

impl sync::GovernanceHooks for NodeGovernance {
    fn offer(&mut self, block: &[u8], unix: i64) -> sync::GovernanceOutcome {
        let outcome = self.0.governance.offer_document(block, unix);
        if outcome == sync::GovernanceOutcome::New {
            super::governance::announce_arrival(&self.0, block);
        }
        outcome
    }
    fn documents(&self) -> Vec<Vec<u8>> {
        self.0.governance.documents()
    }
    fn publisher_allowed(&self, did: &str) -> bool {
        self.0.governance.publisher_allowed(did)
    }
}

/// Most publishers given a lag series of their own (the furthest behind), which bounds the
/// metric's cardinality when many publishers change at once.
pub const LAG_SERIES_MAX: usize = 100;

/// Copies the engine's figures into the node's metrics (once a second, not per event: the
/// lag reads the store).
fn publish_metrics(state: &NodeState, engine: &Engine<Source>, hub_up: bool, now: Now) {
    let stats = engine.stats();
    report_federation(state, engine, hub_up, now);
    for (name, value) in [
        ("meridian_sync_peers", engine.peer_count() as u64),
        ("meridian_sync_blocks_fetched", stats.blocks_fetched),
        ("meridian_sync_bytes_fetched", stats.bytes_fetched),
        ("meridian_sync_held_bytes", stats.held_bytes),
        ("meridian_sync_waiting_memory", stats.syncs_waiting_memory),
    ] {
        state.metrics.set_gauge(name, value);
    }
    let mut behind: Vec<(u64, String)> = engine
        .lag()
        .into_iter()
        .map(|(publisher, accepted, seen)| (seen.saturating_sub(accepted.unwrap_or(0)), publisher))
        .filter(|(lag, _)| *lag > 0)
        .collect();
    state.metrics.set_gauge(
        "meridian_sync_lag_seq",
        behind.iter().map(|(lag, _)| lag).sum(),
    );
    // Per publisher, the furthest behind first, at most LAG_SERIES_MAX series.
    behind.sort_by(|a, b| b.cmp(a));
    behind.truncate(LAG_SERIES_MAX);
    let series: Vec<(String, u64)> = behind
        .into_iter()
        .map(|(lag, publisher)| (format!("publisher=\"{publisher}\""), lag))
        .collect();
    state
        .metrics
        .set_gauge_family("meridian_sync_publisher_lag_seq", &series);
}

/// Hands the federation page what the engine knows now (see [`super::federation`]).
fn report_federation(state: &NodeState, engine: &Engine<Source>, hub_up: bool, now: Now) {
    let stats = engine.stats();
    let peers = engine
        .peer_reports(now)
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "peer": p.peer.to_string(),
                "did": p.info.did,
                "region": p.info.region,
                "connected": p.connected,
                "score": p.score,
                "inflight": p.inflight,
                "banned_for_secs": p.banned_for_ms.map(|ms| ms.div_ceil(1000)),
            })
        })
        .collect();
    let syncs = engine
        .sync_times()
        .map(|t| serde_json::json!({ "publisher": t.publisher, "seq": t.seq, "ms": t.ms, "at": t.at }))
        .collect();
    state.federation.set_report(super::federation::MeshReport {
        at: now.unix,
        peers,
        seen: engine
            .lag()
            .into_iter()
            .map(|(publisher, _, seen)| (publisher, seen))
            .collect(),
        invalid: stats
            .offenses
            .iter()
            .map(|(offense, n)| ((*offense).to_owned(), *n))
            .collect(),
        bans_total: state.metrics.counter("meridian_sync_bans_total"),
        imports: (stats.imports, stats.imports_failed, stats.syncs_abandoned),
        syncs,
        hub_up: hub_url(state).map(|_| hub_up),
    });
}

/// Runs the mesh until `stop` fires: listens, dials the bootstrap peers, and drives the engine.
pub async fn run(
    state: Arc<NodeState>,
    key: Keypair,
    data: &Path,
    commands: mpsc::Receiver<MeshCommand>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mesh = state.config.mesh.clone();
    let sync_config = SyncConfig {
        region: Some(state.config.node.region.clone()),
        publishers_max: mesh.publishers_max,
        request_timeout_ms: mesh.request_timeout_secs.saturating_mul(1000),
        held_bytes_max: mesh.sync_memory_mib.saturating_mul(1024 * 1024),
        ..SyncConfig::default()
    };
    let mut swarm = build_swarm(&key, &sync_config, mesh.connections_max)?;
    let topic = IdentTopic::new(TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| anyhow::anyhow!("subscribing to {TOPIC}: {e}"))?;
    for address in parse_addrs("mesh.listen", &mesh.listen)? {
        swarm
            .listen_on(address.clone())
            .with_context(|| format!("config mesh.listen: cannot listen on {address}"))?;
    }
    for address in parse_addrs("mesh.bootstrap", &mesh.bootstrap)? {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = address.iter().last() {
            swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, address.clone());
        }
        if let Err(error) = swarm.dial(address.clone()) {
            tracing::warn!(%address, %error, "could not dial a bootstrap peer");
        }
    }
    let local = *swarm.local_peer_id();
    let mut engine: Engine<Source> = Engine::new(
        sync_config.clone(),
        Arc::new(state.store.clone()),
        Box::new(NodeGovernance(state.clone())),
    );
    let (imports_tx, imports) = mpsc::channel::<ImportReport>(MESH_EVENTS_MAX);
    // The hub is a destination the operator named (mesh.hub or the signed hub directory), so
    // no SSRF guard; but no redirect either, which would take the node elsewhere.
    let hub_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(meridian_hub::serve::CLIENT_POOL_IDLE)
        .no_proxy()
        .build()
        .context("building the hub client")?;
    let (hub_tx, hub_events) = mpsc::channel::<HubEvent>(MESH_EVENTS_MAX);
    let follower = tokio::spawn(follow_hub(
        state.clone(),
        hub_client.clone(),
        hub_tx.clone(),
    ));
    let addr_file = data.join(MESH_ADDR_FILE);
    let mut transport = MeshTransport {
        started: Instant::now(),
        state,
        key,
        swarm,
        topic,
        local,
        config: sync_config,
        outbound: HashMap::new(),
        imports_tx,
        imports,
        hub_client,
        hub_tx,
        hub_events,
        hub_up: false,
        commands,
        stop,
        listening: Vec::new(),
        addr_file: addr_file.clone(),
        bootstrap_tick: tokio::time::interval(BOOTSTRAP_INTERVAL),
        metrics_due: true,
        metrics_tick: tokio::time::interval(METRICS_INTERVAL),
        pending: std::collections::VecDeque::new(),
    };
    sync::driver::drive(&mut engine, &mut transport).await;
    follower.abort();
    let _ = std::fs::remove_file(&addr_file);
    Ok(())
}

/// A gossip message's handle: its id and the peer it came from, to report the verdict to
/// gossipsub.
type GossipToken = (gossipsub::MessageId, PeerId);

/// Where the answer to a request goes: a libp2p peer's channel, or a gateway caller.
enum MeshReply {
    Peer(request_response::ResponseChannel<Vec<u8>>),
    Gateway(tokio::sync::oneshot::Sender<Vec<u8>>),
}

type MeshEvent = sync::driver::Event<Source, GossipToken, MeshReply>;

/// The node's side of the sync driver: the libp2p swarm for peers, HTTP for the hub, the
/// blocking pool for imports, and the node's metrics, events and index for what the engine
/// decides.
struct MeshTransport {
    started: Instant,
    state: Arc<NodeState>,
    key: Keypair,
    swarm: Swarm<MeshBehaviour>,
    topic: IdentTopic,
    local: PeerId,
    config: SyncConfig,
    outbound: HashMap<OutboundRequestId, (PeerId, u64)>,
    imports_tx: mpsc::Sender<ImportReport>,
    imports: mpsc::Receiver<ImportReport>,
    hub_client: reqwest::Client,
    hub_tx: mpsc::Sender<HubEvent>,
    hub_events: mpsc::Receiver<HubEvent>,
    hub_up: bool,
    commands: mpsc::Receiver<MeshCommand>,
    stop: tokio::sync::watch::Receiver<bool>,
    listening: Vec<Multiaddr>,
    addr_file: std::path::PathBuf,
    bootstrap_tick: tokio::time::Interval,
    /// The engine's figures are copied to the metrics once a second (the lag reads the store).
    metrics_due: bool,
    metrics_tick: tokio::time::Interval,
    /// Events to hand the driver before reading more.
    pending: std::collections::VecDeque<MeshEvent>,
}

impl MeshTransport {
    fn on_swarm(&mut self, event: SwarmEvent<MeshBehaviourEvent>) -> MeshEvent {
        use sync::driver::Event;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with_p2p(self.local).unwrap_or_else(|a| a);
                tracing::info!(address = %full, "mesh listening");
                self.listening.push(full);
                let text: String = self.listening.iter().map(|a| format!("{a}\n")).collect();
                if let Err(error) = crate::data::write_file(&self.addr_file, text.as_bytes()) {
                    tracing::warn!(?error, "could not write {}", self.addr_file.display());
                }
                Event::Idle
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                let info = PeerInfo {
                    did: peer_did(&peer_id),
                    region: None,
                };
                self.state.events.emit(
                    "peer.connected",
                    serde_json::json!({ "peer": peer_id.to_string(), "did": info.did }),
                );
                Event::PeerUp(Source::Peer(peer_id), info)
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.state.events.emit(
                    "peer.disconnected",
                    serde_json::json!({ "peer": peer_id.to_string(), "did": peer_did(&peer_id) }),
                );
                Event::PeerDown(Source::Peer(peer_id))
            }
            SwarmEvent::Behaviour(MeshBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for address in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, address);
                }
                Event::Idle
            }
            SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => Event::Gossip {
                from: Source::Peer(propagation_source),
                bytes: message.data,
                token: (message_id, propagation_source),
            },
            SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Event::Request {
                    from: Source::Peer(peer),
                    bytes: request,
                    reply: MeshReply::Peer(channel),
                },
                request_response::Message::Response {
                    request_id,
                    response,
                } => match self.outbound.remove(&request_id) {
                    Some((peer, id)) => Event::Response {
                        from: Source::Peer(peer),
                        id,
                        result: Ok(response),
                    },
                    None => Event::Idle,
                },
            },
            SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => match self.outbound.remove(&request_id) {
                Some((peer, id)) => Event::Response {
                    from: Source::Peer(peer),
                    id,
                    result: Err(error.to_string()),
                },
                None => Event::Idle,
            },
            _ => Event::Idle,
        }
    }

    fn on_command(&mut self, command: MeshCommand) -> MeshEvent {
        use sync::driver::Event;
        match command {
            MeshCommand::Announce(block) => Event::Announce(block),
            MeshCommand::Govern(block) => Event::Govern(block),
            MeshCommand::Serve { request, reply } => {
                // The gateway's callers are anonymous HTTP clients, all one source to the
                // engine: a malformed request is refused here, so that no client can get the
                // gateway source penalised (and with it the hub's fetches).
                match sync::wire::Request::decode(&request, sync::wire::MESSAGE_BYTES_MAX) {
                    Err(error) => {
                        let refused =
                            sync::wire::Response::Refused(format!("bad request: {error}"));
                        let _ = reply.send(refused.encode());
                        Event::Idle
                    }
                    Ok(_) => Event::Request {
                        from: Source::Gateway,
                        bytes: request,
                        reply: MeshReply::Gateway(reply),
                    },
                }
            }
        }
    }

    fn on_hub(&mut self, event: HubEvent) -> MeshEvent {
        use sync::driver::Event;
        let state = self.state.clone();
        match event {
            HubEvent::Polled {
                commits,
                governance,
                equivocations,
            } => {
                state.metrics.set_gauge("meridian_hub_up", 1);
                // Judged like a peer's answer to a heads request: a hub that is merely behind
                // is not blamed for old heads.
                let heads = Event::Heads {
                    from: Source::Hub,
                    commits,
                    governance,
                    equivocations,
                };
                if self.hub_up {
                    return heads;
                }
                self.hub_up = true;
                let hub = hub_url(&state).unwrap_or_default();
                tracing::info!(%hub, "hub reachable: syncing through it too");
                state.events.emit(
                    "peer.connected",
                    serde_json::json!({ "peer": "hub", "url": hub }),
                );
                self.hand_heads_to_hub();
                self.pending.push_back(heads);
                let info = PeerInfo {
                    did: None,
                    region: Some(state.config.node.region.clone()),
                };
                Event::PeerUp(Source::Hub, info)
            }
            HubEvent::Down(error) => {
                state.metrics.set_gauge("meridian_hub_up", 0);
                if !self.hub_up {
                    return Event::Idle;
                }
                self.hub_up = false;
                let hub = hub_url(&state).unwrap_or_default();
                tracing::warn!(%hub, %error, "hub unreachable: the mesh carries on without it");
                state.events.emit(
                    "peer.disconnected",
                    serde_json::json!({ "peer": "hub", "url": hub, "error": error }),
                );
                Event::PeerDown(Source::Hub)
            }
            HubEvent::Answer(id, result) => Event::Response {
                from: Source::Hub,
                id,
                result,
            },
        }
    }

    /// Anti-entropy on connect: the hub may have started (or lost its store) after the heads
    /// this node holds were published; hand it them, its own first (with the gateway URL it
    /// serves blocks at).
    fn hand_heads_to_hub(&self) {
        let state = &self.state;
        let Ok(heads) = state.store.heads() else {
            return;
        };
        let own = heads.get(&state.node_did).copied();
        let others = heads
            .iter()
            .filter(|(publisher, _)| **publisher != state.node_did)
            .map(|(_, head)| *head);
        for head in own.into_iter().chain(others).take(HUB_CONNECT_HEADS_MAX) {
            if let Ok(Some(block)) = state.store.get(&head.commit) {
                tokio::spawn(push_to_hub(
                    state.clone(),
                    self.hub_client.clone(),
                    self.key.clone(),
                    sync::wire::Gossip::Head(block.to_vec()).encode(),
                ));
            }
        }
    }
}

impl sync::driver::Transport<Source> for MeshTransport {
    type Gossip = GossipToken;
    type Reply = MeshReply;

    fn now(&self) -> Now {
        Now {
            ms: self.started.elapsed().as_millis() as u64,
            unix: (self.state.clock)(),
        }
    }

    async fn next_event(&mut self) -> MeshEvent {
        use sync::driver::Event;
        if let Some(event) = self.pending.pop_front() {
            return event;
        }
        tokio::select! {
            event = self.swarm.select_next_some() => self.on_swarm(event),
            Some(report) = self.imports.recv() => Event::Imported(Box::new(report)),
            Some(command) = self.commands.recv() => self.on_command(command),
            Some(event) = self.hub_events.recv() => self.on_hub(event),
            _ = self.bootstrap_tick.tick() => {
                let _ = self.swarm.behaviour_mut().kad.bootstrap();
                Event::Idle
            }
            _ = self.metrics_tick.tick() => {
                self.metrics_due = true;
                Event::Idle
            }
            _ = self.stop.changed() => Event::Stopped,
        }
    }

    fn request(
        &mut self,
        peer: &Source,
        id: u64,
        request: sync::wire::Request,
    ) -> Result<(), sync::driver::SendError> {
        match peer {
            Source::Peer(peer) => {
                let rid = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(peer, request.encode());
                self.outbound.insert(rid, (*peer, id));
                Ok(())
            }
            Source::Hub => {
                let client = self.hub_client.clone();
                let tx = self.hub_tx.clone();
                let url = hub_url(&self.state);
                let timeout = Duration::from_millis(self.config.request_timeout_ms);
                tokio::spawn(async move {
                    let result = async {
                        let url = url.ok_or_else(|| "no hub".to_owned())?;
                        let response = client
                            .post(format!("{url}/v1/sync"))
                            .body(request.encode())
                            .timeout(timeout)
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        if !response.status().is_success() {
                            return Err(format!("HTTP {}", response.status()));
                        }
                        meridian_hub::relay::read_limited(response, sync::wire::MESSAGE_BYTES_MAX)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    let _ = tx.send(HubEvent::Answer(id, result)).await;
                });
                Ok(())
            }
            Source::Gateway => Err(sync::driver::SendError::NotAFetchSource),
        }
    }

    fn broadcast(&mut self, gossip: sync::wire::Gossip) {
        let kind = gossip.kind();
        tokio::spawn(push_to_hub(
            self.state.clone(),
            self.hub_client.clone(),
            self.key.clone(),
            gossip.encode(),
        ));
        if let Err(error) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), gossip.encode())
        {
            tracing::debug!(%error, kind, "gossip not published");
        }
    }

    fn verdict(&mut self, (message_id, source): GossipToken, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore | Verdict::Defer(_) => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &source, acceptance);
    }

    fn respond(&mut self, reply: MeshReply, answer: Vec<u8>) {
        match reply {
            MeshReply::Peer(channel) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, answer);
            }
            MeshReply::Gateway(reply) => {
                let _ = reply.send(answer);
            }
        }
    }

    fn import(
        &mut self,
        publisher: String,
        contents: meridian_registry::snapshot::CarContents,
    ) -> Option<ImportReport> {
        tracing::debug!(%publisher, blocks = contents.blocks.len(), bytes = contents.bytes, "fetched a snapshot: importing");
        let task_state = self.state.clone();
        let tx = self.imports_tx.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let unix = (task_state.clock)();
            let commit = contents.root;
            let result = sync::import(&task_state.store, &contents, unix, &config)
                .map(|v| v.commit.body.seq);
            match &result {
                Ok(seq) => {
                    task_state
                        .metrics
                        .count("meridian_sync_imports_total{outcome=\"accepted\"}", 1);
                    tracing::info!(%publisher, seq, %commit, "mirrored a snapshot");
                    if let Err(error) = task_state.index_head(&publisher) {
                        tracing::warn!(%publisher, ?error, "reindex after sync failed");
                    }
                }
                Err(error) => {
                    task_state
                        .metrics
                        .count("meridian_sync_imports_total{outcome=\"rejected\"}", 1);
                    tracing::warn!(%publisher, %commit, %error, "mirrored snapshot refused");
                }
            }
            let _ = tx.blocking_send(ImportReport {
                publisher,
                commit,
                result,
            });
        });
        None
    }

    fn disconnect(&mut self, peer: &Source) -> bool {
        self.state.metrics.count("meridian_sync_bans_total", 1);
        tracing::warn!(%peer, "peer banned: disconnecting");
        let did = match peer {
            Source::Peer(id) => peer_did(id),
            _ => None,
        };
        self.state.events.emit(
            "peer.banned",
            serde_json::json!({ "peer": peer.to_string(), "did": did }),
        );
        if let Source::Peer(peer) = peer {
            let _ = self.swarm.disconnect_peer_id(*peer);
        }
        // The engine hears when the connection has closed.
        false
    }

    fn penalised(&mut self, peer: &Source, offense: sync::Offense) {
        self.state.metrics.count(
            &format!(
                "meridian_sync_invalid_total{{kind=\"{}\"}}",
                offense.as_str()
            ),
            1,
        );
        tracing::info!(%peer, offense = offense.as_str(), "peer penalised");
    }

    fn equivocation(&mut self, publisher: String, seq: u64) {
        self.state
            .metrics
            .count("meridian_sync_equivocations_total", 1);
        self.state.events.emit(
            "publisher.equivocated",
            serde_json::json!({ "publisher": publisher, "seq": seq }),
        );
        tracing::warn!(%publisher, seq, "equivocation proven and kept");
    }

    fn governance_changed(&mut self) {
        let task_state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(heads) = task_state.store.heads() {
                for publisher in heads.keys() {
                    let _ = task_state.reindex(publisher);
                }
            }
        });
    }

    fn observe(&mut self, engine: &Engine<Source>) {
        if std::mem::take(&mut self.metrics_due) {
            let now = sync::driver::Transport::now(self);
            publish_metrics(&self.state, engine, self.hub_up, now);
        }
    }
}
