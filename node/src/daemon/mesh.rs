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
use futures_util::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, noise, tcp, yamux};
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::store::BlockStore as _;
use tokio::sync::mpsc;

use super::http::NodeState;
use crate::sync::{self, Engine, ImportReport, Now, Output, PeerInfo, SyncConfig, Verdict};

/// The gossipsub topic of heads, governance documents and equivocation proofs.
pub const TOPIC: &str = "meridian/sync/1";
/// The request-response protocol of block, delta and head requests.
pub const SYNC_PROTOCOL: &str = "/meridian/sync/1";
/// Where the mesh writes the addresses it listens on (one multiaddr with `/p2p/` per line).
pub const MESH_ADDR_FILE: &str = "mesh.addr";
/// Largest request read from a peer.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// What the rest of the node tells the mesh.
#[derive(Debug)]
pub enum MeshCommand {
    /// The node published a new head of its own: this commit block.
    Announce(Vec<u8>),
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
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
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

/// The mesh's libp2p behaviours.
#[derive(NetworkBehaviour)]
struct MeshBehaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<BytesCodec>,
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

fn build_swarm(key: &Keypair, config: &SyncConfig) -> Result<Swarm<MeshBehaviour>> {
    let identity = identity(key)?;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validate_messages()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(config.gossip_bytes_max + 1024)
        // Heads are forwarded after their snapshot is imported: keep them that long.
        .history_length(30)
        .message_id_fn(|message: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
        })
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
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// The sync engine's view of the node's governance.
struct NodeGovernance(Arc<NodeState>);

impl sync::GovernanceHooks for NodeGovernance {
    fn offer(&mut self, block: &[u8], unix: i64) -> sync::GovernanceOutcome {
        self.0.governance.offer_document(block, unix)
    }
    fn documents(&self) -> Vec<Vec<u8>> {
        self.0.governance.documents()
    }
    fn publisher_allowed(&self, did: &str) -> bool {
        self.0.governance.publisher_allowed(did)
    }
}

/// Copies the engine's figures into the node's metrics (once a second, not per event: the
/// lag reads the store).
fn publish_metrics(state: &NodeState, engine: &Engine<PeerId>) {
    state
        .metrics
        .set_gauge("meridian_sync_peers", engine.peer_count() as u64);
    let stats = engine.stats();
    state
        .metrics
        .set_gauge("meridian_sync_blocks_fetched", stats.blocks_fetched);
    state
        .metrics
        .set_gauge("meridian_sync_bytes_fetched", stats.bytes_fetched);
    let lag: u64 = engine
        .lag()
        .iter()
        .map(|(_, accepted, seen)| seen.saturating_sub(accepted.unwrap_or(0)))
        .sum();
    state.metrics.set_gauge("meridian_sync_lag_seq", lag);
}

/// Runs the mesh until `stop` fires: listens, dials the bootstrap peers, and drives the engine.
pub async fn run(
    state: Arc<NodeState>,
    key: Keypair,
    data: &Path,
    mut commands: mpsc::UnboundedReceiver<MeshCommand>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mesh = state.config.mesh.clone();
    let sync_config = SyncConfig {
        region: Some(state.config.node.region.clone()),
        publishers_max: mesh.publishers_max,
        request_timeout_ms: mesh.request_timeout_secs * 1000,
        ..SyncConfig::default()
    };
    let mut swarm = build_swarm(&key, &sync_config)?;
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
    let mut engine: Engine<PeerId> = Engine::new(
        sync_config.clone(),
        Arc::new(state.store.clone()),
        Box::new(NodeGovernance(state.clone())),
    );
    let started = Instant::now();
    let clock = state.clock;
    let now = move || Now {
        ms: started.elapsed().as_millis() as u64,
        unix: clock(),
    };
    let (imports_tx, mut imports) = mpsc::unbounded_channel::<ImportReport>();
    let mut outbound: HashMap<OutboundRequestId, (PeerId, u64)> = HashMap::new();
    let mut deferred: HashMap<u64, (gossipsub::MessageId, PeerId)> = HashMap::new();
    let mut listening: Vec<Multiaddr> = Vec::new();
    let addr_file = data.join(MESH_ADDR_FILE);
    let mut bootstrap_tick = tokio::time::interval(Duration::from_secs(30));
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Request { peer, id, request } => {
                    let rid = swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, request.encode());
                    outbound.insert(rid, (peer, id));
                }
                Output::Broadcast(gossip) => {
                    let kind = gossip.kind();
                    if let Err(error) = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), gossip.encode())
                    {
                        tracing::debug!(%error, kind, "gossip not published");
                    }
                }
                Output::Forward { id, verdict } => {
                    if let Some((message_id, source)) = deferred.remove(&id) {
                        let acceptance = match verdict {
                            Verdict::Accept => MessageAcceptance::Accept,
                            Verdict::Reject => MessageAcceptance::Reject,
                            Verdict::Ignore | Verdict::Defer(_) => MessageAcceptance::Ignore,
                        };
                        swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(&message_id, &source, acceptance);
                    }
                }
                Output::Import {
                    publisher,
                    contents,
                } => {
                    let task_state = state.clone();
                    let tx = imports_tx.clone();
                    let config = sync_config.clone();
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
                                if let Err(error) = task_state.reindex(&publisher) {
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
                        let _ = tx.send(ImportReport {
                            publisher,
                            commit,
                            result,
                        });
                    });
                }
                Output::Penalise { peer, offense } => {
                    state.metrics.count(
                        &format!(
                            "meridian_sync_invalid_total{{kind=\"{}\"}}",
                            offense.as_str()
                        ),
                        1,
                    );
                    tracing::info!(%peer, offense = offense.as_str(), "peer penalised");
                }
                Output::Disconnect { peer } => {
                    tracing::warn!(%peer, "peer banned: disconnecting");
                    let _ = swarm.disconnect_peer_id(peer);
                }
                Output::GovernanceChanged => {
                    let task_state = state.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Ok(heads) = task_state.store.heads() {
                            for publisher in heads.keys() {
                                let _ = task_state.reindex(publisher);
                            }
                        }
                    });
                }
                Output::Equivocation { publisher, seq } => {
                    state.metrics.count("meridian_sync_equivocations_total", 1);
                    state.events.emit(
                        "publisher.equivocated",
                        serde_json::json!({ "publisher": publisher, "seq": seq }),
                    );
                    tracing::warn!(%publisher, seq, "equivocation proven and kept");
                }
            }
        }
        let wait = engine
            .next_deadline()
            .map(|at| Duration::from_millis(at.saturating_sub(now().ms)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    let full = address.with_p2p(local).unwrap_or_else(|a| a);
                    tracing::info!(address = %full, "mesh listening");
                    listening.push(full);
                    let text: String = listening.iter().map(|a| format!("{a}\n")).collect();
                    if let Err(error) = crate::cli::write_file(&addr_file, text.as_bytes()) {
                        tracing::warn!(?error, "could not write {}", addr_file.display());
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if num_established.get() == 1 => {
                    let info = PeerInfo { did: peer_did(&peer_id), region: None };
                    engine.peer_up(peer_id, info, now());
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    engine.peer_down(&peer_id, now());
                }
                SwarmEvent::Behaviour(MeshBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for address in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, address);
                    }
                }
                SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message_id, message })) => {
                    let acceptance = match engine.on_gossip(&propagation_source, &message.data, now()) {
                        Verdict::Accept => Some(MessageAcceptance::Accept),
                        Verdict::Ignore => Some(MessageAcceptance::Ignore),
                        Verdict::Reject => Some(MessageAcceptance::Reject),
                        Verdict::Defer(id) => {
                            deferred.insert(id, (message_id.clone(), propagation_source));
                            None
                        }
                    };
                    if let Some(acceptance) = acceptance {
                        swarm.behaviour_mut().gossipsub.report_message_validation_result(&message_id, &propagation_source, acceptance);
                    }
                }
                SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(request_response::Event::Message { peer, message, .. })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let answer = engine.on_request(&peer, &request, now());
                        let _ = swarm.behaviour_mut().sync.send_response(channel, answer);
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some((peer, id)) = outbound.remove(&request_id) {
                            engine.on_response(&peer, id, Ok(&response), now());
                        }
                    }
                },
                SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(request_response::Event::OutboundFailure { request_id, error, .. })) => {
                    if let Some((peer, id)) = outbound.remove(&request_id) {
                        engine.on_response(&peer, id, Err(error.to_string()), now());
                    }
                }
                _ => {}
            },
            Some(report) = imports.recv() => engine.import_finished(report, now()),
            Some(command) = commands.recv() => match command {
                MeshCommand::Announce(block) => engine.announce(block),
            },
            _ = bootstrap_tick.tick() => {
                let _ = swarm.behaviour_mut().kad.bootstrap();
            }
            _ = metrics_tick.tick() => publish_metrics(&state, &engine),
            () = tokio::time::sleep(wait) => engine.on_timer(now()),
            _ = stop.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&addr_file);
    Ok(())
}
