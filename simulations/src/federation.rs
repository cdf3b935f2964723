//! A federation of simulated nodes: each turmoil host runs the real sync engine
//! ([`meridian_node::sync::Engine`]) over the framed transport, with its store in memory (the
//! store outlives a host crash, like a disk; the engine does not).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_node::sync::{
    Engine, ImportReport, NoGovernance, Now, Output, PeerInfo, SyncConfig, Verdict, import,
};
use meridian_registry::Cid;
use meridian_registry::snapshot::Snapshot;
use meridian_registry::store::{BlockStore, MemoryStore};
use tokio::sync::mpsc;

use crate::transport::{Frame, read_frame, write_frame};

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

/// What one node is.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its index (and host `node-{index}`).
    pub index: usize,
    /// Its region.
    pub region: String,
    /// The nodes it dials (each link is dialled from one side).
    pub dial: Vec<usize>,
}

/// A command from the scenario to a running node.
#[derive(Debug)]
pub enum Command {
    /// Store this snapshot as the node's own and announce it.
    Publish(Box<Snapshot>),
}

/// What the scenario can see of every node, shared with the hosts.
#[derive(Default)]
pub struct Observed {
    /// Bytes each node has read from its connections.
    pub bytes_in: Vec<u64>,
    /// When (simulated ms) each node imported each commit.
    pub imported: Vec<HashMap<Cid, u64>>,
    /// Command channels of running nodes.
    pub commands: Vec<Option<mpsc::UnboundedSender<Command>>>,
    /// Offenses each node counted, by kind.
    pub offenses: Vec<std::collections::BTreeMap<&'static str, u64>>,
}

/// The federation: specs, stores and observations, shared by the hosts and the scenario.
pub struct World {
    /// Every node.
    pub specs: Vec<NodeSpec>,
    /// Each node's store (survives host crashes).
    pub stores: Vec<MemoryStore>,
    /// Engine configuration for every node.
    pub config: SyncConfig,
    /// Observations.
    pub observed: Mutex<Observed>,
}

impl World {
    /// A world of these nodes, each store starting as a copy of `base`.
    pub fn new(
        specs: Vec<NodeSpec>,
        config: SyncConfig,
        base: &MemoryStore,
    ) -> Result<Arc<Self>, String> {
        let n = specs.len();
        let stores = (0..n)
            .map(|_| base.fork().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            stores,
            specs,
            config,
            observed: Mutex::new(Observed {
                bytes_in: vec![0; n],
                imported: vec![HashMap::new(); n],
                commands: (0..n).map(|_| None).collect(),
                offenses: vec![Default::default(); n],
            }),
        }))
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
}

/// Stores a snapshot's blocks and head in `store` (a publisher's own, or a pre-seeded copy).
pub fn seed_store(store: &dyn BlockStore, snapshot: &Snapshot) -> Result<(), String> {
    store
        .apply(snapshot.store_batch())
        .map_err(|e| e.to_string())
}

/// Simulated time now.
fn now() -> Now {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    Now {
        ms: elapsed.as_millis() as u64,
        unix: EPOCH_UNIX + elapsed.as_secs() as i64,
    }
}

enum Event {
    Up(usize, mpsc::UnboundedSender<Frame>),
    Frame(usize, Frame),
    Down(usize),
}

/// Runs both halves of one connection once the peer is known.
fn attach(
    stream: turmoil::net::TcpStream,
    peer: usize,
    node: usize,
    world: Arc<World>,
    events: mpsc::UnboundedSender<Event>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let _ = events.send(Event::Up(peer, tx));
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut writer, &frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok(Some((frame, bytes))) = read_frame(&mut reader).await {
            world.observe(|o| o.bytes_in[node] += bytes as u64);
            if events.send(Event::Frame(peer, frame)).is_err() {
                break;
            }
        }
        let _ = events.send(Event::Down(peer));
    });
}

/// The software of one node host: listen, dial, and drive the engine until the host stops.
pub async fn run_node(index: usize, world: Arc<World>) -> turmoil::Result {
    let spec = world.specs[index].clone();
    let store = world.stores[index].clone();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (commands_tx, mut commands) = mpsc::unbounded_channel::<Command>();
    world.observe(|o| o.commands[index] = Some(commands_tx));

    let listener = turmoil::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), PORT)).await?;
    {
        let world = world.clone();
        let events = events_tx.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let hello = read_frame(&mut stream).await;
                let Ok(Some((Frame::Hello(peer), _))) = hello else {
                    continue;
                };
                if write_frame(&mut stream, &Frame::Hello(index as u32))
                    .await
                    .is_err()
                {
                    continue;
                }
                attach(stream, peer as usize, index, world.clone(), events.clone());
            }
        });
    }
    for &peer in &spec.dial {
        let world = world.clone();
        let events = events_tx.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let address = SocketAddr::new(turmoil::lookup(host_name(peer)), PORT);
                if let Ok(mut stream) = turmoil::net::TcpStream::connect(address).await
                    && write_frame(&mut stream, &Frame::Hello(index as u32))
                        .await
                        .is_ok()
                    && let Ok(Some((Frame::Hello(_), _))) = read_frame(&mut stream).await
                {
                    attach(stream, peer, index, world.clone(), events.clone());
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }

    let mut engine: Engine<usize> = Engine::new(
        world.config.clone(),
        Arc::new(store.clone()),
        Box::new(NoGovernance),
    );
    let mut links: HashMap<usize, mpsc::UnboundedSender<Frame>> = HashMap::new();
    let mut deferred: HashMap<u64, (usize, Vec<u8>)> = HashMap::new();
    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Request { peer, id, request } => {
                    let sent = links
                        .get(&peer)
                        .is_some_and(|l| l.send(Frame::Request(id, request.encode())).is_ok());
                    if !sent {
                        engine.on_response(&peer, id, Err("not connected".into()), now());
                    }
                }
                Output::Broadcast(gossip) => {
                    let bytes = gossip.encode();
                    for link in links.values() {
                        let _ = link.send(Frame::Gossip(bytes.clone()));
                    }
                }
                Output::Forward { id, verdict } => {
                    if let Some((from, bytes)) = deferred.remove(&id)
                        && verdict == Verdict::Accept
                    {
                        for (peer, link) in &links {
                            if *peer != from {
                                let _ = link.send(Frame::Gossip(bytes.clone()));
                            }
                        }
                    }
                }
                Output::Import {
                    publisher,
                    contents,
                } => {
                    let at = now();
                    let result = import(&store, &contents, at.unix, engine.config())
                        .map(|v| v.commit.body.seq);
                    if result.is_ok() {
                        world.observe(|o| {
                            o.imported[index].insert(contents.root, at.ms);
                        });
                    }
                    engine.import_finished(
                        ImportReport {
                            publisher,
                            commit: contents.root,
                            result,
                        },
                        at,
                    );
                }
                Output::Disconnect { peer } => {
                    links.remove(&peer);
                }
                Output::Penalise { .. }
                | Output::GovernanceChanged
                | Output::Equivocation { .. } => {}
            }
        }
        let offenses = engine.stats().offenses.clone();
        world.observe(|o| o.offenses[index] = offenses);
        let deadline = engine.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => {
                    let wait = at.saturating_sub(now().ms);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Up(peer, link)) => {
                    links.insert(peer, link);
                    let info = PeerInfo {
                        did: None,
                        region: Some(world.specs[peer].region.clone()),
                    };
                    engine.peer_up(peer, info, now());
                }
                Some(Event::Down(peer)) => {
                    links.remove(&peer);
                    engine.peer_down(&peer, now());
                }
                Some(Event::Frame(peer, frame)) => match frame {
                    Frame::Gossip(bytes) => match engine.on_gossip(&peer, &bytes, now()) {
                        Verdict::Defer(id) => {
                            deferred.insert(id, (peer, bytes));
                        }
                        Verdict::Accept => {
                            for (other, link) in &links {
                                if *other != peer {
                                    let _ = link.send(Frame::Gossip(bytes.clone()));
                                }
                            }
                        }
                        Verdict::Ignore | Verdict::Reject => {}
                    },
                    Frame::Request(id, bytes) => {
                        let answer = engine.on_request(&peer, &bytes, now());
                        if let Some(link) = links.get(&peer) {
                            let _ = link.send(Frame::Response(id, answer));
                        }
                    }
                    Frame::Response(id, bytes) => engine.on_response(&peer, id, Ok(&bytes), now()),
                    Frame::Hello(_) => {}
                },
                None => return Ok(()),
            },
            command = commands.recv() => match command {
                Some(Command::Publish(snapshot)) => {
                    seed_store(&store, &snapshot)?;
                    world.observe(|o| {
                        o.imported[index].insert(snapshot.commit_cid, now().ms);
                    });
                    engine.announce(snapshot.commit.to_block());
                }
                None => return Ok(()),
            },
            () = sleep => engine.on_timer(now()),
        }
    }
}
