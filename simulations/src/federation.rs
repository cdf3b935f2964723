//! A federation of simulated nodes: each turmoil host runs the real sync engine
//! ([`meridian_sync::Engine`]) over the framed transport, with its store in memory (the
//! store outlives a host crash, like a disk; the engine does not).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_registry::Cid;
use meridian_registry::snapshot::Snapshot;
use meridian_registry::store::{BlockStore, MemoryStore};
use meridian_sync::driver::{Event as DriverEvent, Transport, drive};
use meridian_sync::governance::Governance;
use meridian_sync::{
    Engine, GovernanceHooks, GovernanceOutcome, ImportReport, NoGovernance, Now, PeerInfo,
    SyncConfig, Verdict, import,
};
use tokio::sync::mpsc;

use crate::gossip::GossipRouter;
use crate::transport::{
    DIAL_TIMEOUT, Frame, LINK_IDLE_MAX, REDIAL_BACKOFF_MAX, read_frame, write_frame, write_frames,
};

/// The port every simulated node listens on.
pub const PORT: u16 = 7000;

/// Unix time at the start of every simulation (fixed, so runs repeat).
pub const EPOCH_UNIX: i64 = 1_800_000_000;

/// The host name of node `index`.
pub fn host_name(index: usize) -> String {
    format!("node-{index}")
}

/// A small deterministic random source (SplitMix64): the simulations draw every choice from
/// the seed through it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// How a simulated node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Runs the engine as production does.
    #[default]
    Honest,
    /// Answers every request with one byte flipped near the end (a tampered block, signature
    /// or frame): a peer that lies about what it serves.
    TamperResponses,
    /// Answers honestly, but the scenario makes it gossip lies (forged, rolled-back or
    /// equivocating heads): not counted among the honest nodes.
    Liar,
}

/// What one node is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its index (and host `node-{index}`).
    pub index: usize,
    /// Its region.
    pub region: String,
    /// The nodes it dials (each link is dialled from one side).
    pub dial: Vec<usize>,
    /// Honest or not.
    pub behaviour: Behaviour,
    /// How far this node's wall clock is ahead of true time, in seconds (negative: behind).
    pub clock_offset_secs: i64,
    /// Starts with an empty store: a node that joins the federation during the run (the
    /// scenario keeps it down until it joins).
    pub joins_empty: bool,
    /// Leaves the federation for good during the run: not expected to converge.
    pub leaves: bool,
}

/// A command from the scenario to a running node.
#[derive(Debug)]
pub enum Command {
    /// Store this snapshot as the node's own and announce it.
    Publish(Box<Snapshot>),
    /// Send these bytes as gossip to every link, unchecked: what a misbehaving node does.
    Inject(Vec<u8>),
    /// A governance document an admin hands this node: applied to its governance, then
    /// gossiped on (see [`crate::gossip`]).
    Governance(Vec<u8>),
}

/// Penalties a node records, at most (older ones stay, newer ones are counted only).
pub const PENALTIES_KEPT_MAX: usize = 10_000;

/// Message faults on node links. Neither turmoil's TCP nor real TCP duplicates or reorders
/// bytes inside one connection; what a node can see twice or out of order is whole messages,
/// as a retrying or multi-path transport delivers them. While these faults are on, each frame
/// a node receives (pings aside) is, by a draw from `seed`: delivered twice, held back for up
/// to `delay_max` (so frames sent after it overtake it; it is dropped if its connection is
/// gone by then, as a closed connection's messages are), or delivered as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageFaults {
    /// Received frames delivered twice, per mille.
    pub duplicate_per_mille: u32,
    /// Received frames held back, per mille.
    pub delay_per_mille: u32,
    /// The longest hold.
    pub delay_max: Duration,
    /// Seeds the draws.
    pub seed: u64,
}

/// What happens to one received frame under [`MessageFaults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    Twice,
    Later(Duration),
}

/// What the scenario can see of every node, shared with the hosts.
#[derive(Default)]
pub struct Observed {
    /// Bytes each node has read from its connections (pings aside).
    pub bytes_in: Vec<u64>,
    /// The part of `bytes_in` that answered the node's own requests (blocks and heads it
    /// fetched); the rest is gossip and the requests of peers it serves.
    pub bytes_answers: Vec<u64>,
    /// The part of `bytes_in` that asked the node for something (the requests of the peers it
    /// serves).
    pub bytes_requests: Vec<u64>,
    /// When (simulated ms) each node imported each commit.
    pub imported: Vec<HashMap<Cid, u64>>,
    /// Command channels of running nodes.
    pub commands: Vec<Option<mpsc::UnboundedSender<Command>>>,
    /// Offenses each node counted, by kind.
    pub offenses: Vec<BTreeMap<&'static str, u64>>,
    /// Each node's penalties: (peer, offense).
    pub penalties: Vec<Vec<(usize, &'static str)>>,
    /// Publishers each node holds an equivocation proof against.
    pub equivocations: Vec<BTreeSet<String>>,
    /// Times each node's software started (1 + restarts).
    pub starts: Vec<u32>,
    /// When (simulated ms) each node's governance took each document, by the document's CID.
    pub governance_applied: Vec<HashMap<Cid, u64>>,
    /// Bytes nodes received from nodes of other regions (pings aside).
    pub cross_region_node_bytes: u64,
    /// The running hub of each region (`None` while crashed, or without hubs).
    pub hubs: Vec<Option<Arc<meridian_hub::daemon::state::Hub>>>,
    /// Times each hub's software started.
    pub hub_starts: Vec<u32>,
    /// Cross-region bytes of hubs that have since crashed (a running hub's own count is in
    /// its metrics).
    pub hub_cross_region_bytes_retired: u64,
    /// Job channels of running A2A callers, by region.
    pub callers: Vec<Option<mpsc::UnboundedSender<crate::hubs::CallJob>>>,
    /// Finished A2A calls: each job's tag and outcome, in the order they finished.
    pub calls: Vec<(String, crate::hubs::CallOutcome)>,
    /// The message faults in force on node links, with the source of their draws.
    pub message_faults: Option<(MessageFaults, Rng)>,
    /// Frames delivered twice by [`MessageFaults`].
    pub messages_duplicated: u64,
    /// Frames held back by [`MessageFaults`].
    pub messages_delayed: u64,
}

impl Observed {
    /// Puts `faults` in force on every node link (`None` ends them).
    pub fn set_message_faults(&mut self, faults: Option<MessageFaults>) {
        self.message_faults = faults.map(|f| (f, Rng::new(f.seed)));
    }

    fn message_fate(&mut self) -> Fate {
        let Some((faults, rng)) = self.message_faults.as_mut() else {
            return Fate::Deliver;
        };
        let draw = rng.below(1000) as u32;
        if draw < faults.duplicate_per_mille {
            self.messages_duplicated += 1;
            Fate::Twice
        } else if draw < faults.duplicate_per_mille + faults.delay_per_mille {
            let max_ms = faults.delay_max.as_millis().max(1) as usize;
            let hold = Duration::from_millis(1 + rng.below(max_ms) as u64);
            self.messages_delayed += 1;
            Fate::Later(hold)
        } else {
            Fate::Deliver
        }
    }
}

/// The federation: specs, stores and observations, shared by the hosts and the scenario.
pub struct World {
    /// Every node.
    pub specs: Vec<NodeSpec>,
    /// Each node's store (survives host crashes).
    pub stores: Vec<MemoryStore>,
    /// Engine configuration for every node.
    pub config: SyncConfig,
    /// Each node's governance (the node daemon's own type), when the scenario has a trust
    /// root; like the store, it survives crashes.
    pub governance: Vec<Option<Arc<Governance>>>,
    /// Observations.
    pub observed: Mutex<Observed>,
    /// The hubs, one per region (empty: no hubs). Hub `r` is peer `specs.len() + r` to the
    /// engines of its region's nodes.
    pub hubs: Vec<crate::hubs::HubSlot>,
}

impl World {
    /// A world of these nodes, each store starting as a copy of `base`.
    pub fn new(
        specs: Vec<NodeSpec>,
        config: SyncConfig,
        base: &MemoryStore,
    ) -> Result<Arc<Self>, String> {
        let n = specs.len();
        Self::with_governance(specs, config, base, vec![None; n])
    }

    /// A world whose nodes have governance: `governance[i]` is node `i`'s (`None`: off).
    pub fn with_governance(
        specs: Vec<NodeSpec>,
        config: SyncConfig,
        base: &MemoryStore,
        governance: Vec<Option<Arc<Governance>>>,
    ) -> Result<Arc<Self>, String> {
        Self::build(specs, config, base, governance, 0, None)
    }

    /// A world of `regions` regions (each with a caller slot), each with a hub configured from
    /// `hub_config` (its region and trunk peers set per hub) when that is given.
    pub fn build(
        specs: Vec<NodeSpec>,
        config: SyncConfig,
        base: &MemoryStore,
        governance: Vec<Option<Arc<Governance>>>,
        regions: usize,
        hub_config: Option<meridian_hub::daemon::config::HubConfig>,
    ) -> Result<Arc<Self>, String> {
        let n = specs.len();
        if governance.len() != n {
            return Err(format!(
                "{} governance slots for {n} nodes",
                governance.len()
            ));
        }
        let stores = specs
            .iter()
            .map(|spec| {
                if spec.joins_empty {
                    Ok(MemoryStore::new())
                } else {
                    base.fork().map_err(|e| e.to_string())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hubs = match hub_config {
            Some(template) => (0..regions)
                .map(|r| crate::hubs::HubSlot::new(r, &template))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let hub_count = hubs.len();
        Ok(Arc::new(Self {
            stores,
            specs,
            config,
            governance,
            hubs,
            observed: Mutex::new(Observed {
                bytes_in: vec![0; n],
                bytes_answers: vec![0; n],
                bytes_requests: vec![0; n],
                imported: vec![HashMap::new(); n],
                commands: (0..n).map(|_| None).collect(),
                offenses: vec![Default::default(); n],
                penalties: vec![Vec::new(); n],
                equivocations: vec![BTreeSet::new(); n],
                starts: vec![0; n],
                governance_applied: vec![HashMap::new(); n],
                cross_region_node_bytes: 0,
                hubs: (0..hub_count).map(|_| None).collect(),
                hub_starts: vec![0; hub_count],
                hub_cross_region_bytes_retired: 0,
                callers: (0..regions).map(|_| None).collect(),
                calls: Vec::new(),
                message_faults: None,
                messages_duplicated: 0,
                messages_delayed: 0,
            }),
        }))
    }

    /// The region number of node `index` (its spec says `region-{r}`).
    pub fn region_of(&self, index: usize) -> Option<usize> {
        self.specs
            .get(index)?
            .region
            .strip_prefix("region-")?
            .parse()
            .ok()
    }

    /// The engine peer id of region `region`'s hub.
    pub fn hub_peer(&self, region: usize) -> usize {
        self.specs.len() + region
    }

    /// The region name of a peer (node or hub).
    pub fn peer_region(&self, peer: usize) -> Option<String> {
        match self.specs.get(peer) {
            Some(spec) => Some(spec.region.clone()),
            None => {
                let r = peer - self.specs.len();
                (r < self.hubs.len()).then(|| format!("region-{r}"))
            }
        }
    }

    /// Where a peer (node or hub) accepts links.
    fn peer_address(&self, peer: usize) -> (String, u16) {
        if peer < self.specs.len() {
            (host_name(peer), PORT)
        } else {
            (
                crate::hubs::hub_host(peer - self.specs.len()),
                crate::hubs::HUB_LINK_PORT,
            )
        }
    }

    /// Cross-region bytes so far: between nodes, and over the trunks between hubs.
    pub fn cross_region_bytes(&self) -> u64 {
        self.observe(|o| {
            let live: u64 = o
                .hubs
                .iter()
                .flatten()
                .map(|hub| crate::hubs::hub_cross_region_bytes(hub))
                .sum();
            o.cross_region_node_bytes + o.hub_cross_region_bytes_retired + live
        })
    }

    /// Runs `f` on the observations.
    pub fn observe<T>(&self, f: impl FnOnce(&mut Observed) -> T) -> T {
        let mut guard = match self.observed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Sends a command to a running node; false if it is not running.
    pub fn command(&self, node: usize, command: Command) -> bool {
        self.observe(|o| {
            o.commands
                .get(node)
                .and_then(|c| c.as_ref())
                .is_some_and(|c| c.send(command).is_ok())
        })
    }

    /// The honest nodes' indexes.
    pub fn honest(&self) -> Vec<usize> {
        self.specs
            .iter()
            .filter(|s| s.behaviour == Behaviour::Honest)
            .map(|s| s.index)
            .collect()
    }

    /// The honest nodes that stay in the federation: every one of them must converge.
    pub fn honest_staying(&self) -> Vec<usize> {
        self.specs
            .iter()
            .filter(|s| s.behaviour == Behaviour::Honest && !s.leaves)
            .map(|s| s.index)
            .collect()
    }
}

/// Stores a snapshot's blocks and head in `store` (a publisher's own, or a pre-seeded copy).
pub fn seed_store(store: &dyn BlockStore, snapshot: &Snapshot) -> Result<(), String> {
    store
        .apply(snapshot.store_batch())
        .map_err(|e| e.to_string())
}

/// Simulated time now, on a clock `offset_secs` ahead of true time.
fn now_with(offset_secs: i64) -> Now {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    Now {
        ms: elapsed.as_millis() as u64,
        unix: EPOCH_UNIX + elapsed.as_secs() as i64 + offset_secs,
    }
}

/// The sync engine's view of a simulated node's governance: the daemon's `Governance`, with
/// every document it takes recorded for the scenario.
struct SimGovernance {
    governance: Arc<Governance>,
    world: Arc<World>,
    index: usize,
}

impl SimGovernance {
    fn take(&self, block: &[u8], unix: i64) -> GovernanceOutcome {
        let outcome = self.governance.offer_document(block, unix);
        if outcome == GovernanceOutcome::New {
            let at = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
            let cid = meridian_registry::ids::dag_cbor_cid(block);
            self.world.observe(|o| {
                o.governance_applied[self.index].entry(cid).or_insert(at);
            });
        }
        outcome
    }
}

impl GovernanceHooks for SimGovernance {
    fn offer(&mut self, block: &[u8], unix: i64) -> GovernanceOutcome {
        self.take(block, unix)
    }
    fn documents(&self) -> Vec<Vec<u8>> {
        self.governance.documents()
    }
    fn publisher_allowed(&self, did: &str) -> bool {
        self.governance.publisher_allowed(did)
    }
}

/// One connection's identity: the peer, and a number that tells a redialled connection from
/// the one it replaces.
type LinkId = (usize, u64);

enum Event {
    Up(LinkId, mpsc::UnboundedSender<Frame>),
    /// A frame read from a connection (or held back by [`MessageFaults`] and read later):
    /// taken only if its connection is still the peer's current one, as a transport
    /// delivers nothing from a connection the node has closed.
    Frame(LinkId, Frame),
    Down(LinkId),
}

/// Runs both halves of one connection once the peer is known; the returned receiver
/// resolves when the connection is gone.
fn attach(
    stream: turmoil::net::TcpStream,
    link: LinkId,
    node: usize,
    world: Arc<World>,
    events: mpsc::UnboundedSender<Event>,
) -> tokio::sync::oneshot::Receiver<()> {
    let (mut reader, mut writer) = stream.into_split();
    let across = world.peer_region(link.0) != world.peer_region(node);
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let _ = events.send(Event::Up(link, tx));
    tokio::spawn(async move { write_frames(&mut writer, &mut rx).await });
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(LINK_IDLE_MAX, read_frame(&mut reader)).await {
                Ok(Ok(Some((Frame::Ping, _)))) => {}
                Ok(Ok(Some((frame, bytes)))) => {
                    let fate = world.observe(|o| {
                        o.bytes_in[node] += bytes as u64;
                        match frame {
                            Frame::Response(..) => o.bytes_answers[node] += bytes as u64,
                            Frame::Request(..) => o.bytes_requests[node] += bytes as u64,
                            _ => {}
                        }
                        if across {
                            o.cross_region_node_bytes += bytes as u64;
                        }
                        o.message_fate()
                    });
                    let sent = match fate {
                        Fate::Deliver => events.send(Event::Frame(link, frame)),
                        Fate::Twice => events
                            .send(Event::Frame(link, frame.clone()))
                            .and_then(|()| events.send(Event::Frame(link, frame))),
                        Fate::Later(hold) => {
                            let events = events.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(hold).await;
                                let _ = events.send(Event::Frame(link, frame));
                            });
                            Ok(())
                        }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                // Closed, broken, or silent for too long.
                _ => break,
            }
        }
        let _ = events.send(Event::Down(link));
        let _ = closed_tx.send(());
    });
    closed_rx
}

/// Whether connection `id` is `peer`'s current link: frames of any other (one the node
/// closed, or one a redial replaced) are dropped.
fn is_current(
    links: &HashMap<usize, (u64, mpsc::UnboundedSender<Frame>)>,
    (peer, id): LinkId,
) -> bool {
    links.get(&peer).is_some_and(|(current, _)| *current == id)
}

/// Dials `peer` and keeps a connection to it: when one closes, dials again with backoff.
async fn keep_dialling(
    index: usize,
    peer: usize,
    world: Arc<World>,
    events: mpsc::UnboundedSender<Event>,
    connections: Arc<std::sync::atomic::AtomicU64>,
) {
    let first = Duration::from_millis(50);
    let mut backoff = first;
    loop {
        let dial = async {
            let (host, port) = world.peer_address(peer);
            let address = SocketAddr::new(turmoil::lookup(host), port);
            let mut stream = turmoil::net::TcpStream::connect(address).await.ok()?;
            write_frame(&mut stream, &Frame::Hello(index as u32))
                .await
                .ok()?;
            match read_frame(&mut stream).await {
                Ok(Some((Frame::Hello(_), _))) => Some(stream),
                _ => None,
            }
        };
        if let Ok(Some(stream)) = tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            backoff = first;
            let id = connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let closed = attach(stream, (peer, id), index, world.clone(), events.clone());
            let _ = closed.await;
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REDIAL_BACKOFF_MAX);
    }
}

/// Flips one byte near the end of `answer` (a misbehaving node's reply).
pub(crate) fn tamper(answer: &mut [u8]) {
    if let Some(byte) = answer.len().checked_sub(3).and_then(|i| answer.get_mut(i)) {
        *byte ^= 0x20;
    }
}

/// The software of one node host: listen, dial, and drive the engine until the host stops.
pub async fn run_node(index: usize, world: Arc<World>) -> turmoil::Result {
    let spec = world.specs[index].clone();
    let offset = spec.clock_offset_secs;
    let store = world.stores[index].clone();
    let (events_tx, events) = mpsc::unbounded_channel::<Event>();
    let (commands_tx, commands) = mpsc::unbounded_channel::<Command>();
    world.observe(|o| {
        o.commands[index] = Some(commands_tx);
        o.starts[index] += 1;
    });
    let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let listener = turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), PORT)).await?;
    {
        let world = world.clone();
        let events = events_tx.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let world = world.clone();
                let events = events.clone();
                let connections = connections.clone();
                // The hello exchange runs on its own so a silent dialer cannot stall accepts.
                tokio::spawn(async move {
                    let hello = async {
                        let Ok(Some((Frame::Hello(peer), _))) = read_frame(&mut stream).await
                        else {
                            return None;
                        };
                        write_frame(&mut stream, &Frame::Hello(index as u32))
                            .await
                            .ok()?;
                        Some(peer as usize)
                    };
                    if let Ok(Some(peer)) = tokio::time::timeout(DIAL_TIMEOUT, hello).await
                        && peer < world.specs.len()
                    {
                        let id = connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _closed = attach(stream, (peer, id), index, world, events);
                    }
                });
            }
        });
    }
    let hub = world
        .region_of(index)
        .filter(|r| *r < world.hubs.len())
        .map(|r| world.hub_peer(r));
    for &peer in spec.dial.iter().chain(hub.iter()) {
        tokio::spawn(keep_dialling(
            index,
            peer,
            world.clone(),
            events_tx.clone(),
            connections.clone(),
        ));
    }
    drop(events_tx);

    let hooks: Box<dyn GovernanceHooks> = match &world.governance[index] {
        Some(governance) => Box::new(SimGovernance {
            governance: governance.clone(),
            world: world.clone(),
            index,
        }),
        None => Box::new(NoGovernance),
    };
    let admin = world.governance[index]
        .clone()
        .map(|governance| SimGovernance {
            governance,
            world: world.clone(),
            index,
        });
    let mut engine: Engine<usize> =
        Engine::new(world.config.clone(), Arc::new(store.clone()), hooks);
    let mut transport = SimTransport {
        index,
        behaviour: spec.behaviour,
        offset,
        config: world.config.clone(),
        world,
        store,
        hub,
        admin,
        links: HashMap::new(),
        router: GossipRouter::new(index),
        events,
        commands,
        pending: VecDeque::new(),
        failure: None,
    };
    drive(&mut engine, &mut transport).await;
    match transport.failure {
        Some(failure) => Err(failure.into()),
        None => Ok(()),
    }
}

/// A simulated node's side of the production driver ([`drive`]): framed connections over
/// turmoil TCP, gossip spread by [`GossipRouter`], imports run inline, and everything the
/// scenario checks recorded in the world's observations.
struct SimTransport {
    index: usize,
    behaviour: Behaviour,
    offset: i64,
    config: SyncConfig,
    world: Arc<World>,
    store: MemoryStore,
    /// The engine peer of this node's regional hub, if it has one.
    hub: Option<usize>,
    admin: Option<SimGovernance>,
    links: HashMap<usize, (u64, mpsc::UnboundedSender<Frame>)>,
    router: GossipRouter,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Events to hand the driver before reading more (a replaced link is down, then up).
    pending: VecDeque<SimEvent>,
    /// Why the host stops with an error.
    failure: Option<String>,
}

type SimEvent = DriverEvent<usize, (usize, Vec<u8>), (usize, u64)>;

impl SimTransport {
    fn deliver(&self, frames: Vec<(usize, Frame)>) {
        for (peer, frame) in frames {
            if let Some((_, link)) = self.links.get(&peer) {
                let _ = link.send(frame);
            }
        }
    }

    fn on_event(&mut self, event: Option<Event>) -> SimEvent {
        let Some(event) = event else {
            return DriverEvent::Stopped;
        };
        match event {
            // A frame of a connection the node closed (a banned peer's, say) or replaced.
            Event::Frame(link, _) if !is_current(&self.links, link) => DriverEvent::Idle,
            Event::Up((peer, id), link) => {
                // A redialled connection replaces the old one.
                let region = self.world.peer_region(peer);
                self.router.peer_up(
                    peer,
                    region != self.world.peer_region(self.index),
                    peer >= self.world.specs.len(),
                );
                let replaced = self.links.insert(peer, (id, link)).is_some();
                // Anti-entropy on connect, as the daemon does: a hub (new, or back with an
                // empty store) learns every head this node holds.
                if self.hub == Some(peer)
                    && let Some((_, link)) = self.links.get(&peer)
                    && let Ok(heads) = self.store.heads()
                {
                    for head in heads.values().take(meridian_sync::HUB_CONNECT_HEADS_MAX) {
                        if let Ok(Some(block)) = self.store.get(&head.commit) {
                            let gossip = meridian_sync::wire::Gossip::Head(block.to_vec());
                            let _ = link.send(Frame::Gossip(gossip.encode()));
                        }
                    }
                }
                let up = DriverEvent::PeerUp(peer, PeerInfo { did: None, region });
                if replaced {
                    self.pending.push_back(up);
                    DriverEvent::PeerDown(peer)
                } else {
                    up
                }
            }
            Event::Down((peer, id)) => {
                // Only the current connection's end matters: an old one closing after a
                // redial replaced it leaves the peer up.
                if is_current(&self.links, (peer, id)) {
                    self.links.remove(&peer);
                    self.router.peer_down(peer);
                    DriverEvent::PeerDown(peer)
                } else {
                    DriverEvent::Idle
                }
            }
            Event::Frame((peer, _), frame) => self.on_frame(peer, frame),
        }
    }

    fn on_frame(&mut self, peer: usize, frame: Frame) -> SimEvent {
        match frame {
            Frame::Gossip(bytes) => {
                // Like gossipsub v1.2: on first sight of a big message every other peer is
                // told at once, before validation, so that peers forwarding it later skip
                // this node.
                let (_, notices) = self.router.on_gossip(peer, &bytes);
                self.deliver(notices);
                DriverEvent::Gossip {
                    from: peer,
                    bytes: bytes.clone(),
                    token: (peer, bytes),
                }
            }
            Frame::DontWant(id) => {
                self.router.on_dont_want(peer, id);
                DriverEvent::Idle
            }
            Frame::IHave(id) => {
                let now = self.now().ms;
                self.router.on_ihave(peer, id, now);
                DriverEvent::Idle
            }
            Frame::IWant(id) => {
                if let Some(frame) = self.router.on_iwant(peer, id) {
                    self.deliver(vec![(peer, frame)]);
                }
                DriverEvent::Idle
            }
            Frame::Request(id, bytes) => DriverEvent::Request {
                from: peer,
                bytes,
                reply: (peer, id),
            },
            Frame::Response(id, bytes) => DriverEvent::Response {
                from: peer,
                id,
                result: Ok(bytes),
            },
            Frame::Hello(_) | Frame::Ping | Frame::Source(_) => DriverEvent::Idle,
        }
    }

    fn on_command(&mut self, command: Option<Command>) -> SimEvent {
        match command {
            Some(Command::Publish(snapshot)) => {
                if let Err(error) = seed_store(&self.store, &snapshot) {
                    self.failure = Some(error);
                    return DriverEvent::Stopped;
                }
                let (index, at) = (self.index, self.now().ms);
                self.world.observe(|o| {
                    o.imported[index].insert(snapshot.commit_cid, at);
                });
                let block = snapshot.commit.to_block();
                // The hub learns it may fetch this head's blocks from this node.
                if let Some((_, link)) = self.hub.and_then(|h| self.links.get(&h)) {
                    let head = meridian_sync::wire::Gossip::Head(block.clone());
                    let _ = link.send(Frame::Source(head.encode()));
                }
                DriverEvent::Announce(block)
            }
            // A misbehaving node sends to everyone, whatever they said they have.
            Some(Command::Inject(bytes)) => {
                for (_, link) in self.links.values() {
                    let _ = link.send(Frame::Gossip(bytes.clone()));
                }
                DriverEvent::Idle
            }
            Some(Command::Governance(block)) => {
                let unix = self.now().unix;
                if let Some(admin) = &self.admin
                    && admin.take(&block, unix) == GovernanceOutcome::New
                {
                    let gossip = meridian_sync::wire::Gossip::Governance(block);
                    let frames = self.router.send(None, &gossip.encode());
                    self.deliver(frames);
                }
                DriverEvent::Idle
            }
            None => DriverEvent::Stopped,
        }
    }
}

impl Transport<usize> for SimTransport {
    type Gossip = (usize, Vec<u8>);
    type Reply = (usize, u64);

    fn now(&self) -> Now {
        now_with(self.offset)
    }

    async fn next_event(&mut self) -> SimEvent {
        if let Some(event) = self.pending.pop_front() {
            return event;
        }
        tokio::select! {
            event = self.events.recv() => self.on_event(event),
            command = self.commands.recv() => self.on_command(command),
        }
    }

    fn request(
        &mut self,
        peer: &usize,
        id: u64,
        request: meridian_sync::wire::Request,
    ) -> Result<(), meridian_sync::driver::SendError> {
        let sent = self
            .links
            .get(peer)
            .is_some_and(|(_, l)| l.send(Frame::Request(id, request.encode())).is_ok());
        if sent {
            Ok(())
        } else {
            Err(meridian_sync::driver::SendError::NotConnected)
        }
    }

    fn broadcast(&mut self, gossip: meridian_sync::wire::Gossip) {
        let frames = self.router.send(None, &gossip.encode());
        self.deliver(frames);
    }

    fn verdict(&mut self, (from, bytes): (usize, Vec<u8>), verdict: Verdict) {
        if verdict == Verdict::Accept {
            let frames = self.router.send(Some(from), &bytes);
            self.deliver(frames);
        }
    }

    fn respond(&mut self, (peer, id): (usize, u64), mut answer: Vec<u8>) {
        if self.behaviour == Behaviour::TamperResponses {
            tamper(&mut answer);
        }
        if let Some((_, link)) = self.links.get(&peer) {
            let _ = link.send(Frame::Response(id, answer));
        }
    }

    fn import(
        &mut self,
        publisher: String,
        contents: meridian_registry::snapshot::CarContents,
    ) -> Option<ImportReport> {
        let at = self.now();
        let result =
            import(&self.store, &contents, at.unix, &self.config).map(|v| v.commit.body.seq);
        if result.is_ok() {
            let index = self.index;
            self.world.observe(|o| {
                o.imported[index].insert(contents.root, at.ms);
            });
        }
        Some(ImportReport {
            publisher,
            commit: contents.root,
            result,
        })
    }

    // Like the daemon's `disconnect_peer_id`: the connection closes (its frames still in
    // flight are dropped) and both the router and the engine see the peer go.
    fn disconnect(&mut self, peer: &usize) -> bool {
        if self.links.remove(peer).is_some() {
            self.router.peer_down(*peer);
            true
        } else {
            false
        }
    }

    fn penalised(&mut self, peer: &usize, offense: meridian_sync::Offense) {
        let index = self.index;
        self.world.observe(|o| {
            if o.penalties[index].len() < PENALTIES_KEPT_MAX {
                o.penalties[index].push((*peer, offense.as_str()));
            }
        });
    }

    fn equivocation(&mut self, publisher: String, _seq: u64) {
        let index = self.index;
        self.world.observe(|o| {
            o.equivocations[index].insert(publisher);
        });
    }

    fn observe(&mut self, engine: &Engine<usize>) {
        let offenses = engine.stats().offenses.clone();
        let index = self.index;
        self.world.observe(|o| o.offenses[index] = offenses);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.router.next_deadline()
    }

    fn on_timer(&mut self, now_ms: u64) {
        let frames = self.router.on_timer(now_ms);
        self.deliver(frames);
    }
}
