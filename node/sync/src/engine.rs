//! The sync engine: one sans-IO state machine per node that turns "a head was seen" into a
//! verified, imported snapshot, fetching only the blocks the local store lacks.
//!
//! Inputs are method calls ([`Engine::on_gossip`], [`Engine::on_response`], [`Engine::on_timer`],
//! [`Engine::peer_up`], ...), each with the time as an argument; effects come out of
//! [`Engine::poll_output`] as [`Output`] values for the driver to perform. The engine never reads
//! a clock and never touches a socket, so the libp2p driver, the turmoil simulations and the unit
//! tests below all run this same code.
//!
//! How a head becomes a snapshot:
//! 1. a commit block arrives (gossip, or a peer's answer to [`Request::Heads`]); its signature,
//!    size, expiry and seq are checked before anything else happens (and before gossip is
//!    forwarded); two signed commits with one seq become an equivocation proof;
//! 2. the walk starts at the commit's tree root: every block the store lacks is requested, and
//!    every tree node that arrives is hash-checked and decoded to find its children. The store
//!    holds only fully verified snapshots, so a block it has is a subtree it has: an unchanged
//!    subtree is never fetched;
//! 3. when nothing is missing, the commit and the fetched blocks go out as an
//!    [`Output::Import`]; the driver runs the registry's verifier and import (CPU work that
//!    should not run on an event loop) and reports back with [`Engine::import_finished`].
//!
//! Fetches run in parallel up to a bound per peer and in total; a slow, failing or lying source
//! is retried elsewhere with backoff, and penalised. Governance documents travel through the
//! same engine via [`GovernanceHooks`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::commit::{COMMIT_BYTES_MAX, Commit, EquivocationProof};
use meridian_registry::ids::{self, Blake3};
use meridian_registry::mst;
use meridian_registry::snapshot::{self, CarContents, SnapshotError, VerifiedSnapshot};
use meridian_registry::store::{BlockStore, StoreBatch};

use crate::wire::{Gossip, Request, Response};

/// The time as the driver gives it: a monotonic millisecond count for timers and unix seconds
/// for document validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin).
    pub ms: u64,
    /// Unix seconds.
    pub unix: i64,
}

/// Bounds and timings of the engine. The defaults suit a node on a real network.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Most blocks asked for in one request.
    pub blocks_per_request: usize,
    /// Most requests in flight to one peer.
    pub requests_per_peer: usize,
    /// Most requests in flight in total.
    pub requests_total: usize,
    /// How long a request may take before it is retried elsewhere, in milliseconds.
    pub request_timeout_ms: u64,
    /// First retry delay after a failure, in milliseconds; doubles with every attempt.
    pub retry_backoff_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_backoff_max_ms: u64,
    /// Attempts per block before the sync of that head is given up (until it is seen again).
    pub attempts_max: u32,
    /// Most publishers tracked.
    pub publishers_max: usize,
    /// Largest gossip message, in bytes.
    pub gossip_bytes_max: usize,
    /// Largest request or response, in bytes.
    pub message_bytes_max: usize,
    /// How far ahead of our clock a commit's `created_at` may be, in seconds.
    pub clock_skew_secs: i64,
    /// Snapshot limits (agents, blocks, bytes, depth), applied while fetching and at import.
    pub limits: Limits,
    /// A peer whose score falls to this is disconnected and ignored for `ban_ms`.
    pub ban_score: i64,
    /// How long a banned peer is ignored, in milliseconds.
    pub ban_ms: u64,
    /// A penalised peer's score climbs back toward 0 by one point per this many milliseconds,
    /// so an honest peer's rare timeouts never add up to a ban over a long connection.
    pub score_recovery_ms: u64,
    /// How many rejected commit CIDs are remembered so they are not fetched again.
    pub rejected_heads_max: usize,
    /// How many disconnected peers with a bad score or a ban are remembered (so leaving and
    /// coming back does not wipe a peer's record). Past this the least bad are forgotten
    /// first; it bounds what a stream of fresh identities can make the node keep.
    pub peers_remembered_max: usize,
    /// This node's region: peers in it are preferred as sources.
    pub region: Option<String>,
    /// Every this many milliseconds, one connected peer (each in turn) is asked for its heads,
    /// governance documents and equivocation proofs, as on connecting: this repairs what lost
    /// gossip left out when no connection broke (otherwise a node whose links stayed up
    /// through a cut never hears of what spread during it). 0 turns it off.
    pub resync_ms: u64,
    /// Bytes of fetched blocks all syncs together may hold in memory before they are imported.
    /// Past it only the sync that holds the most (of those some peer can serve now) goes on
    /// asking for blocks, the others wait until it is imported; so a snapshot bigger than this
    /// still syncs, and the node holds at most this plus one snapshot (`limits.car_bytes_max`)
    /// plus the answers in flight, plus what a leading sync held when it lost every source.
    pub held_bytes_max: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            blocks_per_request: 512,
            requests_per_peer: 4,
            requests_total: 32,
            request_timeout_ms: 10_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 10_000,
            attempts_max: 8,
            publishers_max: 10_000,
            gossip_bytes_max: super::wire::GOSSIP_BYTES_MAX,
            message_bytes_max: super::wire::MESSAGE_BYTES_MAX,
            clock_skew_secs: 300,
            limits: Limits::DEFAULT,
            ban_score: -100,
            ban_ms: 10 * 60 * 1000,
            score_recovery_ms: 10_000,
            rejected_heads_max: 4096,
            peers_remembered_max: 4096,
            region: None,
            resync_ms: 5_000,
            held_bytes_max: 512 * 1024 * 1024,
        }
    }
}

/// What the driver knows about a connected peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node key as a did:key, when its transport identity proves it.
    pub did: Option<String>,
    /// The peer's region, when known.
    pub region: Option<String>,
}

/// What to do with a gossip message: forward it, drop it quietly, or drop it and blame the
/// sender (gossipsub's accept / ignore / reject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: forward it.
    Accept,
    /// Valid so far: the verdict follows as [`Output::Forward`] with this id once the snapshot
    /// it announces is imported, so a peer that forwards a head can also serve its blocks.
    Defer(u64),
    /// Not forwarded, no blame (a duplicate, stale, or not for us).
    Ignore,
    /// Invalid: not forwarded, and the sender was penalised.
    Reject,
}

/// A peer's misbehaviour, counted in metrics and penalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offense {
    /// Bytes that do not decode as the message they claim to be.
    Malformed,
    /// A message or block over a size limit.
    Oversized,
    /// A signature that does not verify.
    BadSignature,
    /// A block that does not hash to the CID it was sent for.
    TamperedBlock,
    /// A block nobody asked for.
    UnexpectedBlock,
    /// A head older than the accepted one.
    Rollback,
    /// A head that has expired.
    Expired,
    /// The sender itself published two commits with one seq.
    Equivocation,
    /// A snapshot whose blocks all hash right but that fails verification.
    InvalidSnapshot,
    /// A request that got no answer in time.
    Timeout,
}

impl Offense {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Offense::Malformed => "malformed",
            Offense::Oversized => "oversized",
            Offense::BadSignature => "bad_signature",
            Offense::TamperedBlock => "tampered_block",
            Offense::UnexpectedBlock => "unexpected_block",
            Offense::Rollback => "rollback",
            Offense::Expired => "expired",
            Offense::Equivocation => "equivocation",
            Offense::InvalidSnapshot => "invalid_snapshot",
            Offense::Timeout => "timeout",
        }
    }

    /// Score lost. Offenses an honest peer can commit by racing (a stale head, a slow answer)
    /// cost little; proof of dishonesty costs much.
    pub fn penalty(self) -> i64 {
        match self {
            Offense::Rollback | Offense::Expired | Offense::Timeout => 2,
            Offense::UnexpectedBlock => 10,
            Offense::Malformed | Offense::Oversized => 25,
            Offense::BadSignature | Offense::TamperedBlock | Offense::InvalidSnapshot => 50,
            Offense::Equivocation => 100,
        }
    }
}

/// What a governance document did when offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceOutcome {
    /// It verified and changed what the node trusts: forward it.
    New,
    /// Already known.
    Known,
    /// It decodes but is not acceptable here (expired, superseded, not yet verifiable).
    Refused(String),
    /// It is not a governance document at all.
    Malformed(String),
}

/// The node's governance, as the sync engine needs it.
pub trait GovernanceHooks: Send {
    /// Verifies a governance document block against the trust root and applies it.
    fn offer(&mut self, block: &[u8], unix: i64) -> GovernanceOutcome;
    /// Every document a peer that just connected should get, in the order to apply them.
    fn documents(&self) -> Vec<Vec<u8>>;
    /// Whether snapshots of this publisher (a node's did:key) may be mirrored.
    fn publisher_allowed(&self, did: &str) -> bool;
}

/// Governance off: every publisher may be mirrored and no document is accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGovernance;

impl GovernanceHooks for NoGovernance {
    fn offer(&mut self, _block: &[u8], _unix: i64) -> GovernanceOutcome {
        GovernanceOutcome::Refused("governance is off on this node".into())
    }
    fn documents(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn publisher_allowed(&self, _did: &str) -> bool {
        true
    }
}

/// An effect for the driver to perform.
#[derive(Debug)]
pub enum Output<P> {
    /// Send `request` to `peer`; answer with [`Engine::on_response`] and the same `id`.
    Request {
        /// The peer.
        peer: P,
        /// The request id.
        id: u64,
        /// The request.
        request: Request,
    },
    /// Publish to every peer (a gossipsub topic).
    Broadcast(Gossip),
    /// Verify and import this snapshot (see [`import`]), then report with
    /// [`Engine::import_finished`].
    Import {
        /// The publisher's did.
        publisher: String,
        /// The commit and every block the store lacks.
        contents: CarContents,
    },
    /// A peer misbehaved; the driver may lower its transport score too.
    Penalise {
        /// The peer.
        peer: P,
        /// What it did.
        offense: Offense,
    },
    /// A peer's score fell to the ban threshold: disconnect it.
    Disconnect {
        /// The peer.
        peer: P,
    },
    /// The verdict on a gossip message answered with [`Verdict::Defer`].
    Forward {
        /// The id [`Verdict::Defer`] carried.
        id: u64,
        /// [`Verdict::Accept`] to forward it; otherwise drop it (`Reject` also blames the
        /// sender).
        verdict: Verdict,
    },
    /// A governance document was accepted (the federated view must be re-checked).
    GovernanceChanged,
    /// A new equivocation proof was stored.
    Equivocation {
        /// The publisher that equivocated.
        publisher: String,
        /// The seq it signed twice.
        seq: u64,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Snapshots imported.
    pub imports: u64,
    /// Snapshots that failed verification or import.
    pub imports_failed: u64,
    /// Syncs given up because blocks stayed unavailable.
    pub syncs_abandoned: u64,
    /// Blocks received and accepted (hash-checked, asked for).
    pub blocks_fetched: u64,
    /// Bytes of those blocks.
    pub bytes_fetched: u64,
    /// Blocks served to peers.
    pub blocks_served: u64,
    /// Bytes served to peers.
    pub bytes_served: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Requests that failed, timed out or came back incomplete.
    pub requests_failed: u64,
    /// Governance documents accepted.
    pub governance_accepted: u64,
    /// Equivocation proofs stored.
    pub equivocations: u64,
    /// Invalid messages and blocks, by offense.
    pub offenses: BTreeMap<&'static str, u64>,
    /// Bytes of fetched blocks the syncs hold now, not yet imported (a gauge).
    pub held_bytes: u64,
    /// Syncs that had blocks to ask for but waited because the held bytes reached
    /// [`SyncConfig::held_bytes_max`], at the last pump (a gauge).
    pub syncs_waiting_memory: u64,
}

/// Verifies `contents` as a successor of the store's head for its publisher and stores it: what
/// a driver does for [`Output::Import`].
pub fn import(
    store: &dyn BlockStore,
    contents: &CarContents,
    unix: i64,
    config: &SyncConfig,
) -> Result<VerifiedSnapshot, SnapshotError> {
    let options = snapshot::VerifyOptions {
        now: Some(unix),
        clock_skew_secs: config.clock_skew_secs,
        limits: config.limits,
        ..snapshot::VerifyOptions::default()
    };
    snapshot::import(store, contents, options)
}

/// The outcome of an [`Output::Import`], reported back with [`Engine::import_finished`].
#[derive(Debug)]
pub struct ImportReport {
    /// The publisher's did.
    pub publisher: String,
    /// The commit that was imported (the contents' root).
    pub commit: Cid,
    /// The new head's seq, or why the import failed.
    pub result: Result<u64, SnapshotError>,
}

struct PeerState {
    info: PeerInfo,
    score: i64,
    inflight: usize,
    banned_until: Option<u64>,
    /// Whether the peer is connected now; a disconnected entry is only a remembered record.
    connected: bool,
    /// When `score` was last brought up to date, in monotonic milliseconds.
    score_at: u64,
}

impl PeerState {
    /// Brings the score up to `now`: it recovers toward 0 with time.
    fn recover(&mut self, now: Now, recovery_ms: u64) {
        let points = now.ms.saturating_sub(self.score_at) / recovery_ms.max(1);
        if points > 0 {
            self.score = self
                .score
                .saturating_add(i64::try_from(points).unwrap_or(i64::MAX))
                .min(0);
            self.score_at = now.ms;
        }
    }
}

/// A head that verified on its own (signature, expiry, seq) and waits to be synced.
#[derive(Clone)]
struct SeenHead<P> {
    cid: Cid,
    seq: u64,
    data: Cid,
    block: Arc<[u8]>,
    sources: Vec<P>,
    /// The gossip message that brought it, waiting for its verdict.
    gossip: Option<u64>,
    /// When this node first saw it (monotonic milliseconds).
    seen_ms: u64,
}

/// A sync in progress: the walk from one head's tree root.
struct Pending<P> {
    head: SeenHead<P>,
    /// Blocks still to request, front first.
    want: VecDeque<Cid>,
    /// Every block the walk reached that the store lacks.
    needed: HashSet<Cid>,
    /// The needed blocks that are tree nodes (the rest are manifests).
    nodes: HashSet<Cid>,
    /// Needed blocks received, hash-checked.
    received: HashMap<Cid, Arc<[u8]>>,
    bytes: u64,
    inflight: usize,
    attempts: HashMap<Cid, u32>,
    /// Peers that failed to deliver, by count; fewer failures are tried first.
    misses: HashMap<P, u32>,
    /// Peers caught lying (tampered blocks): never asked again for this head.
    liars: HashSet<P>,
    /// Peers that are not sources of this head and answered without a single block: they do
    /// not hold it (they may be fetching it too), so they are not asked again unless they
    /// announce it. Their empty answers are not failed attempts.
    lacking: HashSet<P>,
    not_before: u64,
    importing: bool,
    /// Blocks from a delta answer, used by the walk before asking anyone.
    cache: HashMap<Cid, Arc<[u8]>>,
    delta: DeltaState,
    /// Delta questions that went unanswered.
    delta_attempts: u32,
    /// The held commit a delta would start from (a successor sync), kept so the delta can be
    /// asked again when a source comes back.
    delta_base: Option<Cid>,
}

/// The one-round-trip shortcut for a successor of a head the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeltaState {
    /// Ask a source for the delta from this commit before walking.
    Wanted(Cid),
    /// Asked (for the delta from this commit); the walk waits for the answer.
    Asked(Cid),
    /// Walking.
    Done,
}

struct PublisherState<P> {
    pending: Option<Pending<P>>,
    /// The newest head seen while `pending` runs; synced next.
    queued: Option<SeenHead<P>>,
}

struct Inflight<P> {
    peer: P,
    publisher: Option<String>,
    cids: Vec<Cid>,
    deadline: u64,
    delta: bool,
}

enum HeadCheck {
    New,
    Duplicate,
    Stale,
    Denied,
}

/// The sync state machine of one node. `P` names peers (a libp2p `PeerId`, a simulated host).
pub struct Engine<P> {
    config: SyncConfig,
    store: Arc<dyn BlockStore>,
    governance: Box<dyn GovernanceHooks>,
    peers: BTreeMap<P, PeerState>,
    publishers: BTreeMap<String, PublisherState<P>>,
    known_publishers: HashSet<String>,
    requests: HashMap<u64, Inflight<P>>,
    next_id: u64,
    rejected: HashSet<Cid>,
    rejected_order: VecDeque<Cid>,
    outputs: VecDeque<Output<P>>,
    stats: SyncStats,
    /// The latest time an input carried.
    last_ms: u64,
    next_gossip: u64,
    /// When the next resync round is due (set once a peer is up), and whose turn it is.
    next_resync_ms: Option<u64>,
    resync_turn: usize,
    /// Recent delta answers, newest last: every peer asks for the same one.
    deltas: VecDeque<((Cid, Cid), DeltaBlocks)>,
    /// Governance documents refused when offered, oldest first, offered again whenever a
    /// document is accepted: one may only verify after another (a policy signed under a root
    /// version that has not arrived yet, when gossip delivers them out of order).
    governance_waiting: VecDeque<Vec<u8>>,
    /// The latest syncs that ended in an import, newest last (at most [`SYNC_TIMES_KEPT`]).
    sync_times: VecDeque<SyncTime>,
}

/// Syncs kept for [`Engine::sync_times`].
pub const SYNC_TIMES_KEPT: usize = 64;

/// One head synced and imported: how long it took from the moment this node first saw the
/// head (gossip, a heads answer, its hub) to its import being accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTime {
    /// The publisher's did.
    pub publisher: String,
    /// The head's seq.
    pub seq: u64,
    /// Milliseconds from first sight to accepted import.
    pub ms: u64,
    /// When it was accepted, unix seconds.
    pub at: i64,
}

/// One peer as the node's federation page shows it ([`Engine::peer_reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport<P> {
    /// The peer.
    pub peer: P,
    /// What the driver told about it.
    pub info: PeerInfo,
    /// Whether it is connected now (otherwise a remembered score or ban).
    pub connected: bool,
    /// Its score: 0 is neutral, penalties lower it, time brings it back.
    pub score: i64,
    /// Requests to it in flight.
    pub inflight: usize,
    /// While banned, how long the ban has left.
    pub banned_for_ms: Option<u64>,
}

/// Refused governance documents kept to offer again (the oldest is dropped beyond this; a
/// document dropped here still arrives with the next heads exchange). Only documents that fit
/// a gossip message are kept, which bounds the bytes held too.
pub const GOVERNANCE_WAITING_MAX: usize = 32;

/// The blocks of one delta answer.
type DeltaBlocks = Arc<Vec<(Cid, Arc<[u8]>)>>;

/// Delta answers kept for the peers that ask next.
const DELTA_CACHE: usize = 8;
/// Sources asked for a delta that did not answer before the walk takes over.
pub const DELTA_ATTEMPTS_MAX: u32 = 3;

impl<P: Clone + Eq + Hash + Ord + Debug> Engine<P> {
    /// An engine over `store` (which it reads; imports go through [`Output::Import`]).
    pub fn new(
        config: SyncConfig,
        store: Arc<dyn BlockStore>,
        governance: Box<dyn GovernanceHooks>,
    ) -> Self {
        let known_publishers = store
            .heads()
            .map(|heads| heads.into_keys().collect())
            .unwrap_or_default();
        Self {
            config,
            store,
            governance,
            peers: BTreeMap::new(),
            publishers: BTreeMap::new(),
            known_publishers,
            requests: HashMap::new(),
            next_id: 1,
            rejected: HashSet::new(),
            rejected_order: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: SyncStats::default(),
            last_ms: 0,
            next_gossip: 1,
            next_resync_ms: None,
            resync_turn: 0,
            deltas: VecDeque::new(),
            governance_waiting: VecDeque::new(),
            sync_times: VecDeque::new(),
        }
    }

    /// Every peer known: connected ones and those remembered for a bad score or a ban.
    pub fn peer_reports(&self, now: Now) -> Vec<PeerReport<P>> {
        self.peers
            .iter()
            .map(|(peer, state)| PeerReport {
                peer: peer.clone(),
                info: state.info.clone(),
                connected: state.connected,
                score: state.score,
                inflight: state.inflight,
                banned_for_ms: state
                    .banned_until
                    .filter(|until| *until > now.ms)
                    .map(|until| until - now.ms),
            })
            .collect()
    }

    /// The latest syncs that ended in an import, oldest first.
    pub fn sync_times(&self) -> impl Iterator<Item = &SyncTime> {
        self.sync_times.iter()
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// How many refused governance documents wait to be offered again.
    pub fn governance_waiting(&self) -> usize {
        self.governance_waiting.len()
    }

    /// The next effect to perform.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// Connected peers that are not banned.
    pub fn peer_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.connected && p.banned_until.is_none())
            .count()
    }

    /// Peers remembered while disconnected (bad scores and bans).
    pub fn remembered_peers(&self) -> usize {
        self.peers.values().filter(|p| !p.connected).count()
    }

    /// A peer's score (0 is neutral; penalties lower it).
    pub fn peer_score(&self, peer: &P) -> Option<i64> {
        self.peers.get(peer).map(|p| p.score)
    }

    /// Whether a peer is banned at `now`.
    pub fn is_banned(&self, peer: &P, now: Now) -> bool {
        self.peers
            .get(peer)
            .and_then(|p| p.banned_until)
            .is_some_and(|until| until > now.ms)
    }

    /// Per publisher: the accepted seq (if any) and the newest seq seen but not yet imported.
    pub fn lag(&self) -> Vec<(String, Option<u64>, u64)> {
        self.publishers
            .iter()
            .filter_map(|(publisher, state)| {
                let seen = state
                    .queued
                    .as_ref()
                    .map(|h| h.seq)
                    .or(state.pending.as_ref().map(|p| p.head.seq))?;
                let accepted = self.store.head(publisher).ok().flatten().map(|h| h.seq);
                Some((publisher.clone(), accepted, seen))
            })
            .collect()
    }

    /// Whether any sync is in progress.
    pub fn is_idle(&self) -> bool {
        self.publishers
            .values()
            .all(|s| s.pending.is_none() && s.queued.is_none())
    }

    /// When [`Engine::on_timer`] should next be called, in monotonic milliseconds.
    pub fn next_deadline(&self) -> Option<u64> {
        let requests = self.requests.values().map(|r| r.deadline);
        // A retry whose time has passed waits for a source or for room, which come with other
        // inputs, not with time.
        let retries = self
            .publishers
            .values()
            .filter_map(|s| s.pending.as_ref())
            .filter(|p| !p.want.is_empty() && !p.importing && p.not_before > self.last_ms)
            .map(|p| p.not_before);
        let resync = self.next_resync_ms.filter(|_| self.config.resync_ms > 0);
        requests.chain(retries).chain(resync).min()
    }

    /// A peer connected: ask it for its heads and governance documents.
    pub fn peer_up(&mut self, peer: P, info: PeerInfo, now: Now) {
        let entry = self.peers.entry(peer.clone()).or_insert(PeerState {
            info: info.clone(),
            score: 0,
            inflight: 0,
            banned_until: None,
            connected: true,
            score_at: now.ms,
        });
        entry.info = info;
        entry.connected = true;
        if entry.banned_until.is_some_and(|until| until > now.ms) {
            self.outputs.push_back(Output::Disconnect { peer });
            return;
        }
        entry.banned_until = None;
        // Syncs this peer is a source of may have backed off while it was unreachable (a
        // partition, a restart): with the peer back, try again now rather than at the
        // backoff's end.
        for state in self.publishers.values_mut() {
            if let Some(pending) = state.pending.as_mut()
                && pending.head.sources.contains(&peer)
            {
                pending.not_before = pending.not_before.min(now.ms);
                // A walk that fell back from an unanswered delta and got nothing yet: the
                // one-round-trip delta is worth asking again.
                if let Some(base) = pending.delta_base
                    && pending.delta == DeltaState::Done
                    && pending.received.is_empty()
                    && pending.inflight == 0
                {
                    pending.want.clear();
                    pending.needed.clear();
                    pending.nodes.clear();
                    pending.delta = DeltaState::Wanted(base);
                    pending.delta_attempts = 0;
                }
            }
        }
        if self.next_resync_ms.is_none() && self.config.resync_ms > 0 {
            self.next_resync_ms = Some(now.ms.saturating_add(self.config.resync_ms));
        }
        self.send(peer, None, Request::Heads, Vec::new(), now);
        self.pump(now);
    }

    /// A peer disconnected: its requests are retried elsewhere. A bad score or a ban is
    /// remembered (within [`SyncConfig::peers_remembered_max`]); a clean record is dropped.
    pub fn peer_down(&mut self, peer: &P, now: Now) {
        let ids: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(request) = self.requests.remove(&id) {
                self.request_unanswered(request, now);
            }
        }
        if let Some(state) = self.peers.get_mut(peer) {
            state.inflight = 0;
            state.connected = false;
            state.recover(now, self.config.score_recovery_ms);
            if state.banned_until.is_none() && state.score >= 0 {
                self.peers.remove(peer);
            }
        }
        self.forget_peers(now);
        self.pump(now);
    }

    /// Keeps the records of disconnected peers within [`SyncConfig::peers_remembered_max`]:
    /// expired bans and the mildest scores go first, the longest bans last.
    fn forget_peers(&mut self, now: Now) {
        let remembered = self.remembered_peers();
        if remembered <= self.config.peers_remembered_max {
            return;
        }
        let mut candidates: Vec<(bool, u64, i64, P)> = self
            .peers
            .iter()
            .filter(|(_, state)| !state.connected)
            .map(|(peer, state)| {
                let until = state.banned_until.filter(|until| *until > now.ms);
                (
                    until.is_some(),
                    until.unwrap_or(0),
                    -state.score,
                    peer.clone(),
                )
            })
            .collect();
        candidates.sort();
        for (_, _, _, peer) in candidates
            .into_iter()
            .take(remembered - self.config.peers_remembered_max)
        {
            self.peers.remove(&peer);
        }
    }

    /// The node published a new head of its own: announce it.
    pub fn announce(&mut self, commit_block: Vec<u8>) {
        if let Ok(commit) = Commit::decode(&commit_block) {
            self.known_publishers.insert(commit.body.publisher.to_did());
        }
        self.outputs
            .push_back(Output::Broadcast(Gossip::Head(commit_block)));
    }

    /// A governance document the node accepted from its operator (an admin endpoint):
    /// broadcast it, so peers and the region's hub take it at once rather than at their next
    /// heads exchange.
    pub fn announce_governance(&mut self, block: Vec<u8>) {
        self.outputs
            .push_back(Output::Broadcast(Gossip::Governance(block)));
    }

    /// A gossip message from `from`: checks it and says whether to forward it.
    pub fn on_gossip(&mut self, from: &P, bytes: &[u8], now: Now) -> Verdict {
        if self.is_banned(from, now) {
            return Verdict::Ignore;
        }
        let gossip = match Gossip::decode(bytes, self.config.gossip_bytes_max) {
            Ok(gossip) => gossip,
            Err(super::wire::WireError::TooLarge { .. }) => {
                self.offense(from, Offense::Oversized, now);
                return Verdict::Reject;
            }
            Err(_) => {
                self.offense(from, Offense::Malformed, now);
                return Verdict::Reject;
            }
        };
        let verdict = match gossip {
            Gossip::Head(block) => self.offer_head(from, &block, false, now),
            Gossip::Governance(block) => self.offer_governance(from, &block, false, now),
            Gossip::Equivocation(block) => self.offer_equivocation(from, &block, false, now),
        };
        self.pump(now);
        verdict
    }

    /// A request from a peer: the answer to send back.
    pub fn on_request(&mut self, from: &P, bytes: &[u8], now: Now) -> Vec<u8> {
        if self.is_banned(from, now) {
            return Response::Refused("banned".into()).encode();
        }
        let request = match Request::decode(bytes, self.config.message_bytes_max) {
            Ok(request) => request,
            Err(error) => {
                self.offense(from, Offense::Malformed, now);
                return Response::Refused(format!("bad request: {error}")).encode();
            }
        };
        self.serve(request).encode()
    }

    /// The answer to a request this engine sent, or the transport's failure to get one.
    pub fn on_response(&mut self, from: &P, id: u64, result: Result<&[u8], String>, now: Now) {
        let Some(request) = self.requests.remove(&id) else {
            return; // timed out already, or not ours
        };
        if request.peer != *from {
            self.requests.insert(id, request);
            return;
        }
        if let Some(state) = self.peers.get_mut(from) {
            state.inflight = state.inflight.saturating_sub(1);
        }
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(_) => {
                self.request_unanswered(request, now);
                self.pump(now);
                return;
            }
        };
        match Response::decode(bytes, self.config.message_bytes_max) {
            Ok(Response::Heads {
                commits,
                governance,
                equivocations,
            }) => self.heads_received(from, &commits, &governance, &equivocations, now),
            Ok(Response::Blocks(blocks)) if request.delta => {
                self.delta_received(from, request, blocks, now);
            }
            Ok(Response::Blocks(blocks)) => self.blocks_received(from, request, blocks, now),
            Ok(Response::Refused(_)) => self.request_failed(request, now),
            Err(super::wire::WireError::TooLarge { .. }) => {
                self.offense(from, Offense::Oversized, now);
                self.request_failed(request, now);
            }
            Err(_) => {
                self.offense(from, Offense::Malformed, now);
                self.request_failed(request, now);
            }
        }
        self.pump(now);
    }

    /// A source's list of what it holds, asked for by the driver rather than by the engine (the
    /// hub's long-poll): judged like an answer to [`Request::Heads`], so a source that is merely
    /// behind is not blamed for old heads.
    pub fn on_heads(
        &mut self,
        from: &P,
        commits: &[Vec<u8>],
        governance: &[Vec<u8>],
        equivocations: &[Vec<u8>],
        now: Now,
    ) {
        self.heads_received(from, commits, governance, equivocations, now);
        self.pump(now);
    }

    fn heads_received(
        &mut self,
        from: &P,
        commits: &[Vec<u8>],
        governance: &[Vec<u8>],
        equivocations: &[Vec<u8>],
        now: Now,
    ) {
        for block in governance {
            self.offer_governance(from, block, true, now);
        }
        for block in equivocations {
            self.offer_equivocation(from, block, true, now);
        }
        for block in commits {
            self.offer_head(from, block, true, now);
        }
    }

    /// Time passed: expire requests and resume retries that were waiting.
    pub fn on_timer(&mut self, now: Now) {
        let expired: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now.ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(request) = self.requests.remove(&id) {
                let peer = request.peer.clone();
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.inflight = state.inflight.saturating_sub(1);
                }
                self.offense(&peer, Offense::Timeout, now);
                self.request_unanswered(request, now);
            }
        }
        self.resync(now);
        self.pump(now);
    }

    /// Asks the next connected peer in turn for its heads when a resync round is due.
    fn resync(&mut self, now: Now) {
        let Some(due) = self.next_resync_ms else {
            return;
        };
        if self.config.resync_ms == 0 || now.ms < due {
            return;
        }
        self.next_resync_ms = Some(now.ms.saturating_add(self.config.resync_ms));
        let peers: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connected && s.banned_until.is_none_or(|until| until <= now.ms))
            .map(|(p, _)| p.clone())
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.resync_turn % peers.len()].clone();
        self.resync_turn = self.resync_turn.wrapping_add(1);
        self.send(peer, None, Request::Heads, Vec::new(), now);
    }

    /// The driver finished an [`Output::Import`].
    pub fn import_finished(&mut self, report: ImportReport, now: Now) {
        let Some(state) = self.publishers.get_mut(&report.publisher) else {
            return;
        };
        let pending = match state.pending.take() {
            Some(p) if p.head.cid == report.commit => p,
            other => {
                state.pending = other;
                return;
            }
        };
        match report.result {
            Ok(_) => {
                self.stats.imports += 1;
                if self.sync_times.len() == SYNC_TIMES_KEPT {
                    self.sync_times.pop_front();
                }
                self.sync_times.push_back(SyncTime {
                    publisher: report.publisher.clone(),
                    seq: pending.head.seq,
                    ms: now.ms.saturating_sub(pending.head.seen_ms),
                    at: now.unix,
                });
                self.known_publishers.insert(report.publisher.clone());
                self.settle(&pending.head, Verdict::Accept);
            }
            Err(SnapshotError::Equivocation { proof, seq, .. }) => {
                self.stats.imports_failed += 1;
                self.settle(&pending.head, Verdict::Ignore);
                self.equivocation_stored(&report.publisher, seq, proof.to_block());
            }
            Err(SnapshotError::Store(_)) => {
                // Our disk failed, not the snapshot: try again when the head is seen again.
                self.stats.imports_failed += 1;
                self.settle(&pending.head, Verdict::Ignore);
            }
            Err(_) => {
                self.stats.imports_failed += 1;
                self.settle(&pending.head, Verdict::Reject);
                self.reject_head(pending.head.cid);
                // The blocks all hashed right, so the publisher signed an invalid snapshot.
                self.blame_publisher(&report.publisher, &pending.head.sources, now);
            }
        }
        self.start_queued(&report.publisher, now);
        self.pump(now);
    }

    fn peer_did(&self, peer: &P) -> Option<&str> {
        self.peers.get(peer).and_then(|p| p.info.did.as_deref())
    }

    fn offense(&mut self, peer: &P, offense: Offense, now: Now) {
        *self.stats.offenses.entry(offense.as_str()).or_default() += 1;
        self.outputs.push_back(Output::Penalise {
            peer: peer.clone(),
            offense,
        });
        if let Some(state) = self.peers.get_mut(peer) {
            state.recover(now, self.config.score_recovery_ms);
            state.score -= offense.penalty();
            if state.score <= self.config.ban_score && state.banned_until.is_none() {
                state.banned_until = Some(now.ms + self.config.ban_ms);
                self.outputs
                    .push_back(Output::Disconnect { peer: peer.clone() });
            }
        }
    }

    fn reject_head(&mut self, cid: Cid) {
        if self.rejected.insert(cid) {
            self.rejected_order.push_back(cid);
            while self.rejected_order.len() > self.config.rejected_heads_max {
                if let Some(old) = self.rejected_order.pop_front() {
                    self.rejected.remove(&old);
                }
            }
        }
    }

    fn serve(&mut self, request: Request) -> Response {
        match request {
            Request::Heads => {
                let heads = self.store.heads().unwrap_or_default();
                let mut commits = Vec::new();
                let mut equivocations = Vec::new();
                // Publishers known only for an equivocation proof (no head of theirs was
                // taken) count too: a peer that missed the proof's gossip gets it here.
                let mut publishers: std::collections::BTreeSet<&str> =
                    heads.keys().map(String::as_str).collect();
                publishers.extend(self.known_publishers.iter().map(String::as_str));
                for publisher in publishers.into_iter().take(self.config.publishers_max) {
                    if let Some(head) = heads.get(publisher)
                        && let Ok(Some(block)) = self.store.get(&head.commit)
                    {
                        commits.push(block.to_vec());
                    }
                    if let Ok(proofs) = self.store.equivocations(publisher) {
                        equivocations.extend(proofs.into_iter().map(|(_, proof)| proof));
                    }
                }
                Response::Heads {
                    commits,
                    governance: self.governance.documents(),
                    equivocations,
                }
            }
            Request::Blocks(cids) => {
                let answer = blocks_answer(&*self.store, &self.config, &cids);
                if let Response::Blocks(blocks) = &answer {
                    self.stats.blocks_served += blocks.len() as u64;
                    self.stats.bytes_served +=
                        blocks.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
                }
                answer
            }
            Request::Delta { from, to } => match self.delta(from, to) {
                Ok(blocks) => {
                    self.stats.blocks_served += blocks.len() as u64;
                    self.stats.bytes_served +=
                        blocks.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
                    Response::Blocks(blocks.to_vec())
                }
                Err(why) => Response::Refused(why.to_string()),
            },
        }
    }

    /// What a holder of commit `from` lacks to reach commit `to`, both in our store
    /// ([`delta_blocks`]), through a small cache: every peer asks for the same one.
    fn delta(&mut self, from: Cid, to: Cid) -> Result<DeltaBlocks, DeltaError> {
        if let Some((_, blocks)) = self.deltas.iter().find(|(key, _)| *key == (from, to)) {
            return Ok(blocks.clone());
        }
        let blocks = Arc::new(delta_blocks(&*self.store, &self.config, from, to)?);
        self.deltas.push_back(((from, to), blocks.clone()));
        if self.deltas.len() > DELTA_CACHE {
            self.deltas.pop_front();
        }
        Ok(blocks)
    }

    /// Checks a commit block on its own and records it as a head to sync. `solicited` heads
    /// (a peer's answer to [`Request::Heads`]) may honestly be old: they are not blamed for it.
    fn offer_head(&mut self, from: &P, block: &[u8], solicited: bool, now: Now) -> Verdict {
        if block.len() > COMMIT_BYTES_MAX {
            self.offense(from, Offense::Oversized, now);
            return Verdict::Reject;
        }
        let Ok(commit) = Commit::decode(block) else {
            self.offense(from, Offense::Malformed, now);
            return Verdict::Reject;
        };
        if commit.verify_signature().is_err() {
            self.offense(from, Offense::BadSignature, now);
            return Verdict::Reject;
        }
        let cid = ids::dag_cbor_cid(block);
        let publisher = commit.body.publisher.to_did();
        if commit.body.expires_at <= now.unix {
            if solicited {
                return Verdict::Ignore;
            }
            self.offense(from, Offense::Expired, now);
            return Verdict::Reject;
        }
        if commit.body.created_at > now.unix.saturating_add(self.config.clock_skew_secs) {
            return Verdict::Ignore;
        }
        match self.check_head(from, &publisher, &commit, cid, block, now) {
            Ok(HeadCheck::New) => {}
            Ok(HeadCheck::Duplicate | HeadCheck::Stale | HeadCheck::Denied) => {
                return Verdict::Ignore;
            }
            Err(Offense::Rollback) if solicited => return Verdict::Ignore,
            Err(offense) => {
                self.offense(from, offense, now);
                return Verdict::Reject;
            }
        }
        let gossip = (!solicited).then(|| {
            self.next_gossip += 1;
            self.next_gossip
        });
        let head = SeenHead {
            cid,
            seq: commit.body.seq,
            data: commit.body.data,
            block: Arc::from(block),
            sources: vec![from.clone()],
            gossip,
            seen_ms: now.ms,
        };
        self.known_publishers.insert(publisher.clone());
        let state = self
            .publishers
            .entry(publisher.clone())
            .or_insert(PublisherState {
                pending: None,
                queued: None,
            });
        if state.pending.is_some() {
            if let Some(old) = state.queued.replace(head) {
                self.settle(&old, Verdict::Ignore);
            }
        } else {
            self.start(&publisher, head, now);
        }
        match gossip {
            Some(id) => Verdict::Defer(id),
            None => Verdict::Accept,
        }
    }

    /// Gives the verdict on the gossip message that brought `head`, if it waits for one.
    fn settle(&mut self, head: &SeenHead<P>, verdict: Verdict) {
        if let Some(id) = head.gossip {
            self.outputs.push_back(Output::Forward { id, verdict });
        }
    }

    fn check_head(
        &mut self,
        from: &P,
        publisher: &str,
        commit: &Commit,
        cid: Cid,
        block: &[u8],
        now: Now,
    ) -> Result<HeadCheck, Offense> {
        if self.rejected.contains(&cid) {
            return Ok(HeadCheck::Duplicate);
        }
        if !self.governance.publisher_allowed(publisher) {
            return Ok(HeadCheck::Denied);
        }
        if !self.known_publishers.contains(publisher)
            && self.known_publishers.len() >= self.config.publishers_max
        {
            return Ok(HeadCheck::Denied);
        }
        let seq = commit.body.seq;
        if let Ok(Some(head)) = self.store.head(publisher) {
            if seq < head.seq {
                return Err(Offense::Rollback);
            }
            if seq == head.seq {
                if cid == head.commit {
                    return Ok(HeadCheck::Duplicate);
                }
                if let Ok(Some(accepted)) = self.store.get(&head.commit) {
                    self.equivocation_found(from, publisher, seq, accepted.to_vec(), block, now);
                }
                return Ok(HeadCheck::Stale);
            }
        }
        let Some(state) = self.publishers.get_mut(publisher) else {
            return Ok(HeadCheck::New);
        };
        if let Some(pending) = state.pending.as_mut()
            && pending.head.cid == cid
        {
            if !pending.head.sources.contains(from) {
                pending.head.sources.push(from.clone());
                // It holds the head now (it announced it): ask it again.
                pending.lacking.remove(from);
                // A source not tried yet (a peer back from a partition, a new connection):
                // the backoff was earned by the others, so ask it now.
                pending.not_before = pending.not_before.min(now.ms);
            }
            return Ok(HeadCheck::Duplicate);
        }
        if let Some(pending) = state.pending.as_mut()
            && seq > pending.head.seq
            && pending.lacking.remove(from)
        {
            // It has moved past the head being fetched: it may well hold its blocks by now
            // (a peer that imported a head announces it only to peers not known to have it).
            pending.not_before = pending.not_before.min(now.ms);
        }
        let seen = state
            .pending
            .as_mut()
            .map(|p| &mut p.head)
            .into_iter()
            .chain(state.queued.as_mut());
        let mut conflict = None;
        let mut newest = 0;
        for head in seen {
            newest = newest.max(head.seq);
            if head.cid == cid {
                if !head.sources.contains(from) {
                    head.sources.push(from.clone());
                }
                return Ok(HeadCheck::Duplicate);
            }
            if head.seq == seq {
                conflict = Some(head.block.to_vec());
            }
        }
        if let Some(first) = conflict {
            self.equivocation_found(from, publisher, seq, first, block, now);
            return Ok(HeadCheck::Stale);
        }
        if seq < newest {
            return Ok(HeadCheck::Stale);
        }
        Ok(HeadCheck::New)
    }

    fn equivocation_found(
        &mut self,
        from: &P,
        publisher: &str,
        seq: u64,
        first: Vec<u8>,
        second: &[u8],
        now: Now,
    ) {
        let proof = EquivocationProof {
            first,
            second: second.to_vec(),
        };
        if self.peer_did(from) == Some(publisher) {
            self.offense(from, Offense::Equivocation, now);
        }
        self.equivocation_stored(publisher, seq, proof.to_block());
    }

    /// Keeps a verified proof (once) and tells every peer.
    /// One proof per publisher is kept: a second adds nothing, and a publisher could otherwise
    /// make proofs without end (one per seq) to fill our store. Publishers count against
    /// `publishers_max` like any other.
    fn equivocation_stored(&mut self, publisher: &str, seq: u64, proof: Vec<u8>) {
        let known = self
            .store
            .equivocations(publisher)
            .map(|proofs| !proofs.is_empty())
            .unwrap_or(true);
        let room = self.known_publishers.contains(publisher)
            || self.known_publishers.len() < self.config.publishers_max;
        if known || !room {
            return;
        }
        self.known_publishers.insert(publisher.to_owned());
        let batch = StoreBatch {
            equivocations: vec![(publisher.to_owned(), seq, proof.clone())],
            ..StoreBatch::default()
        };
        if self.store.apply(batch).is_err() {
            return;
        }
        self.stats.equivocations += 1;
        self.outputs.push_back(Output::Equivocation {
            publisher: publisher.to_owned(),
            seq,
        });
        self.outputs
            .push_back(Output::Broadcast(Gossip::Equivocation(proof)));
    }

    /// Checks and keeps an equivocation proof. Gossip forwarding spreads a proof that came as
    /// gossip; one learnt otherwise is broadcast.
    fn offer_equivocation(&mut self, from: &P, block: &[u8], solicited: bool, now: Now) -> Verdict {
        let Ok(proof) = EquivocationProof::decode(block) else {
            self.offense(from, Offense::Malformed, now);
            return Verdict::Reject;
        };
        let Ok((publisher, seq)) = proof.verify() else {
            self.offense(from, Offense::BadSignature, now);
            return Verdict::Reject;
        };
        let publisher = publisher.to_did();
        let before = self.stats.equivocations;
        self.equivocation_stored(&publisher, seq, block.to_vec());
        if self.stats.equivocations == before {
            return Verdict::Ignore;
        }
        // `equivocation_stored` queued a broadcast; gossip forwarding does that job here.
        if !solicited && let Some(Output::Broadcast(Gossip::Equivocation(_))) = self.outputs.back()
        {
            self.outputs.pop_back();
        }
        Verdict::Accept
    }

    /// Offers a governance document to the node's governance. Gossip forwarding spreads one
    /// that came as gossip and is taken; one learnt otherwise (`solicited`: a peer's answer
    /// to a heads request) is broadcast, or peers that missed its gossip would only learn it
    /// when they next connect to someone who has it.
    fn offer_governance(&mut self, from: &P, block: &[u8], solicited: bool, now: Now) -> Verdict {
        match self.governance.offer(block, now.unix) {
            GovernanceOutcome::New => {
                self.stats.governance_accepted += 1;
                self.outputs.push_back(Output::GovernanceChanged);
                if solicited {
                    self.outputs
                        .push_back(Output::Broadcast(Gossip::Governance(block.to_vec())));
                }
                self.offer_waiting_governance(now);
                Verdict::Accept
            }
            GovernanceOutcome::Known => Verdict::Ignore,
            GovernanceOutcome::Refused(_) => {
                // Only what fits a gossip message waits (heads answers may carry bigger
                // blocks): at most GOVERNANCE_WAITING_MAX x gossip_bytes_max held.
                if block.len() <= self.config.gossip_bytes_max
                    && !self.governance_waiting.iter().any(|b| b == block)
                {
                    if self.governance_waiting.len() >= GOVERNANCE_WAITING_MAX {
                        self.governance_waiting.pop_front();
                    }
                    self.governance_waiting.push_back(block.to_vec());
                }
                Verdict::Ignore
            }
            GovernanceOutcome::Malformed(_) => {
                self.offense(from, Offense::Malformed, now);
                Verdict::Reject
            }
        }
    }

    /// Offers the waiting governance documents again after one was accepted, until a round
    /// takes none; each one taken is announced to every peer, as if it had just arrived.
    fn offer_waiting_governance(&mut self, now: Now) {
        loop {
            let mut took = false;
            for block in std::mem::take(&mut self.governance_waiting) {
                match self.governance.offer(&block, now.unix) {
                    GovernanceOutcome::New => {
                        took = true;
                        self.stats.governance_accepted += 1;
                        self.outputs.push_back(Output::GovernanceChanged);
                        self.outputs
                            .push_back(Output::Broadcast(Gossip::Governance(block)));
                    }
                    GovernanceOutcome::Refused(_) => self.governance_waiting.push_back(block),
                    GovernanceOutcome::Known | GovernanceOutcome::Malformed(_) => {}
                }
            }
            if !took {
                return;
            }
        }
    }

    fn start_queued(&mut self, publisher: &str, now: Now) {
        let Some(state) = self.publishers.get_mut(publisher) else {
            return;
        };
        let Some(next) = state.queued.take() else {
            self.publishers.remove(publisher);
            return;
        };
        let accepted = self.store.head(publisher).ok().flatten();
        if accepted.is_some_and(|h| h.seq >= next.seq) {
            self.publishers.remove(publisher);
            self.settle(&next, Verdict::Ignore);
            return;
        }
        self.start(publisher, next, now);
    }

    fn start(&mut self, publisher: &str, head: SeenHead<P>, now: Now) {
        let mut pending = Pending {
            head,
            want: VecDeque::new(),
            needed: HashSet::new(),
            nodes: HashSet::new(),
            received: HashMap::new(),
            bytes: 0,
            inflight: 0,
            attempts: HashMap::new(),
            misses: HashMap::new(),
            liars: HashSet::new(),
            lacking: HashSet::new(),
            not_before: now.ms,
            importing: false,
            cache: HashMap::new(),
            delta: DeltaState::Done,
            delta_attempts: 0,
            delta_base: None,
        };
        let accepted = self.store.head(publisher).ok().flatten();
        let outcome = match accepted {
            // A successor of what we hold: ask for the delta in one round trip first.
            Some(old) if old.seq < pending.head.seq => {
                pending.delta = DeltaState::Wanted(old.commit);
                pending.delta_base = Some(old.commit);
                Ok(())
            }
            _ => {
                let data = pending.head.data;
                want(&*self.store, &mut pending, data, true)
            }
        };
        let state = self
            .publishers
            .entry(publisher.to_owned())
            .or_insert(PublisherState {
                pending: None,
                queued: None,
            });
        state.pending = Some(pending);
        if let Err(error) = outcome {
            tracing::debug!(%publisher, %error, "store read failed while starting a sync");
        }
        self.maybe_finish(publisher);
    }

    /// Hands a complete walk to the driver for import.
    fn maybe_finish(&mut self, publisher: &str) {
        let Some(pending) = pending_mut(&mut self.publishers, publisher) else {
            return;
        };
        if pending.importing
            || !pending.want.is_empty()
            || pending.inflight > 0
            || pending.delta != DeltaState::Done
        {
            return;
        }
        pending.importing = true;
        let mut blocks = Vec::with_capacity(pending.received.len() + 1);
        blocks.push((pending.head.cid, pending.head.block.clone()));
        let mut bytes = pending.head.block.len() as u64;
        for (cid, block) in pending.received.drain() {
            bytes += block.len() as u64;
            blocks.push((cid, block));
        }
        self.outputs.push_back(Output::Import {
            publisher: publisher.to_owned(),
            contents: CarContents {
                root: pending.head.cid,
                blocks,
                bytes,
            },
        });
    }

    fn abandon(&mut self, publisher: &str, reject: bool, now: Now) {
        let Some(state) = self.publishers.get_mut(publisher) else {
            return;
        };
        if let Some(pending) = state.pending.take() {
            if reject {
                self.reject_head(pending.head.cid);
                self.stats.imports_failed += 1;
                self.settle(&pending.head, Verdict::Reject);
            } else {
                self.stats.syncs_abandoned += 1;
                self.settle(&pending.head, Verdict::Ignore);
            }
            tracing::debug!(%publisher, seq = pending.head.seq, reject, "sync given up");
        }
        self.start_queued(publisher, now);
    }

    /// A request that got no answer at all (timeout, lost connection). A delta question is
    /// asked of another source, up to [`DELTA_ATTEMPTS_MAX`] times, before the walk takes over:
    /// the peer that could not answer (cut off, restarting) says nothing about the delta.
    fn request_unanswered(&mut self, request: Inflight<P>, now: Now) {
        if request.delta
            && let Some(publisher) = request.publisher.as_deref()
            && let Some(pending) = pending_mut(&mut self.publishers, publisher)
            && let DeltaState::Asked(from) = pending.delta
            && pending.delta_attempts < DELTA_ATTEMPTS_MAX
        {
            self.stats.requests_failed += 1;
            pending.delta_attempts += 1;
            pending.delta = DeltaState::Wanted(from);
            pending.inflight = pending.inflight.saturating_sub(1);
            *pending.misses.entry(request.peer).or_default() += 1;
            return;
        }
        self.request_failed(request, now);
    }

    fn request_failed(&mut self, request: Inflight<P>, now: Now) {
        self.stats.requests_failed += 1;
        if request.delta {
            // No shortcut: walk instead.
            self.delta_received(&request.peer.clone(), request, Vec::new(), now);
            return;
        }
        let Some(publisher) = request.publisher else {
            return;
        };
        self.requeue(&publisher, &request.peer, request.cids, now);
    }

    /// A delta answer (or none): its hash-checked blocks seed the walk, which then asks only
    /// for what the answer lacked.
    fn delta_received(
        &mut self,
        from: &P,
        request: Inflight<P>,
        blocks: Vec<(Cid, Arc<[u8]>)>,
        now: Now,
    ) {
        let mut good = HashMap::with_capacity(blocks.len());
        let mut tampered = false;
        for (cid, block) in blocks {
            if block.len() > self.config.limits.block_bytes_max {
                self.offense(from, Offense::Oversized, now);
                continue;
            }
            if ids::verify_block(&cid, &block).is_err() {
                tampered = true;
                continue;
            }
            self.stats.blocks_fetched += 1;
            self.stats.bytes_fetched += block.len() as u64;
            good.insert(cid, block);
        }
        if tampered {
            self.offense(from, Offense::TamperedBlock, now);
        }
        let Some(publisher) = request.publisher else {
            return;
        };
        let Some(pending) = pending_mut(&mut self.publishers, &publisher) else {
            return;
        };
        if !matches!(pending.delta, DeltaState::Asked(_)) {
            return;
        }
        if tampered {
            pending.liars.insert(from.clone());
        }
        pending.inflight = pending.inflight.saturating_sub(1);
        pending.delta = DeltaState::Done;
        pending.cache = good;
        let data = pending.head.data;
        let result = want(&*self.store, pending, data, true)
            .and_then(|()| resolve_cached(&*self.store, &self.config, pending));
        self.walk_result(&publisher, result, now);
    }

    /// After a step of the walk: give up on an invalid snapshot, or import a complete one.
    fn walk_result(&mut self, publisher: &str, result: Result<(), Fatal>, now: Now) {
        match result {
            Ok(()) => self.maybe_finish(publisher),
            Err(Fatal::Invalid(error)) => {
                tracing::debug!(%publisher, %error, "snapshot refused while fetching");
                let sources = self
                    .publishers
                    .get(publisher)
                    .and_then(|s| s.pending.as_ref())
                    .map(|p| p.head.sources.clone())
                    .unwrap_or_default();
                self.blame_publisher(publisher, &sources, now);
                self.abandon(publisher, true, now);
            }
            Err(Fatal::Store(error)) => {
                tracing::warn!(%publisher, %error, "store read failed during sync");
                self.abandon(publisher, false, now);
            }
        }
    }

    /// Penalises those of a head's `sources` that are its publisher: an invalid snapshot whose
    /// blocks all hash right is the publisher's doing, not its forwarders'.
    fn blame_publisher(&mut self, publisher: &str, sources: &[P], now: Now) {
        let culprits: Vec<P> = sources
            .iter()
            .filter(|p| self.peer_did(p) == Some(publisher))
            .cloned()
            .collect();
        for peer in culprits {
            self.offense(&peer, Offense::InvalidSnapshot, now);
        }
    }

    /// Puts blocks back at the front of the queue after a failed attempt, with backoff.
    fn requeue(&mut self, publisher: &str, peer: &P, cids: Vec<Cid>, now: Now) {
        let Some(pending) = pending_mut(&mut self.publishers, publisher) else {
            return;
        };
        pending.inflight = pending.inflight.saturating_sub(1);
        if cids.is_empty() {
            return;
        }
        *pending.misses.entry(peer.clone()).or_default() += 1;
        let mut worst = 0;
        for cid in cids.into_iter().rev() {
            if pending.received.contains_key(&cid) || !pending.needed.contains(&cid) {
                continue;
            }
            let attempts = pending.attempts.entry(cid).or_default();
            *attempts += 1;
            worst = worst.max(*attempts);
            pending.want.push_front(cid);
        }
        if worst > self.config.attempts_max {
            self.abandon(publisher, false, now);
            return;
        }
        if worst > 0 {
            let backoff = self
                .config
                .retry_backoff_ms
                .saturating_mul(1u64 << (worst - 1).min(20))
                .min(self.config.retry_backoff_max_ms);
            pending.not_before = pending.not_before.max(now.ms + backoff);
        }
    }

    fn blocks_received(
        &mut self,
        from: &P,
        request: Inflight<P>,
        blocks: Vec<(Cid, Arc<[u8]>)>,
        now: Now,
    ) {
        let asked: HashSet<Cid> = request.cids.iter().copied().collect();
        let mut got: HashSet<Cid> = HashSet::new();
        let mut good = Vec::with_capacity(blocks.len());
        for (cid, block) in blocks {
            if !asked.contains(&cid) || !got.insert(cid) {
                self.offense(from, Offense::UnexpectedBlock, now);
                continue;
            }
            if block.len() > self.config.limits.block_bytes_max {
                self.offense(from, Offense::Oversized, now);
                continue;
            }
            if ids::verify_block(&cid, &block).is_err() {
                self.offense(from, Offense::TamperedBlock, now);
                if let Some(p) = request
                    .publisher
                    .as_ref()
                    .and_then(|publisher| pending_mut(&mut self.publishers, publisher))
                {
                    p.liars.insert(from.clone());
                }
                got.remove(&cid);
                continue;
            }
            good.push((cid, block));
        }
        let Some(publisher) = request.publisher.clone() else {
            return;
        };
        let missing: Vec<Cid> = request
            .cids
            .iter()
            .filter(|c| !got.contains(c))
            .copied()
            .collect();
        let Some(pending) = pending_mut(&mut self.publishers, &publisher) else {
            return;
        };
        let mut result = Ok(());
        for (cid, block) in good {
            if !pending.needed.contains(&cid) || pending.received.contains_key(&cid) {
                continue;
            }
            self.stats.blocks_fetched += 1;
            self.stats.bytes_fetched += block.len() as u64;
            result = deliver(&*self.store, &self.config, pending, cid, block);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = resolve_cached(&*self.store, &self.config, pending);
        }
        if result.is_ok() {
            if missing.is_empty() {
                pending.inflight = pending.inflight.saturating_sub(1);
                pending.misses.remove(from);
            } else if !got.is_empty() {
                // A partial answer (the peer's size budget, or it holds only part): progress,
                // so the rest goes back in the queue without counting as a failed attempt.
                pending.inflight = pending.inflight.saturating_sub(1);
                for cid in missing.into_iter().rev() {
                    if !pending.received.contains_key(&cid) && pending.needed.contains(&cid) {
                        pending.want.push_front(cid);
                    }
                }
            } else if !pending.head.sources.contains(from) {
                // Not a source and nothing to give: it lacks the head, which is no fault.
                pending.inflight = pending.inflight.saturating_sub(1);
                pending.lacking.insert(from.clone());
                for cid in missing.into_iter().rev() {
                    if !pending.received.contains_key(&cid) && pending.needed.contains(&cid) {
                        pending.want.push_front(cid);
                    }
                }
            } else {
                self.stats.requests_failed += 1;
                self.requeue(&publisher, from, missing, now);
            }
        }
        self.walk_result(&publisher, result, now);
    }

    fn send(
        &mut self,
        peer: P,
        publisher: Option<String>,
        request: Request,
        cids: Vec<Cid>,
        now: Now,
    ) {
        let delta = matches!(request, Request::Delta { .. });
        let id = self.next_id;
        self.next_id += 1;
        if let Some(state) = self.peers.get_mut(&peer) {
            state.inflight += 1;
        }
        self.requests.insert(
            id,
            Inflight {
                peer: peer.clone(),
                publisher,
                cids,
                deadline: now.ms + self.config.request_timeout_ms,
                delta,
            },
        );
        self.stats.requests_sent += 1;
        self.outputs
            .push_back(Output::Request { peer, id, request });
    }

    /// Sends block requests while there is work, sources and room.
    fn pump(&mut self, now: Now) {
        self.last_ms = self.last_ms.max(now.ms);
        self.abandon_stalled(now);
        let publishers: Vec<String> = self.publishers.keys().cloned().collect();
        let favoured = self.favoured_sync(now);
        self.stats.syncs_waiting_memory = 0;
        for publisher in publishers {
            if favoured.as_ref().is_some_and(|f| *f != publisher) {
                if self
                    .publishers
                    .get(&publisher)
                    .and_then(|s| s.pending.as_ref())
                    .is_some_and(|p| {
                        !p.importing && (!p.want.is_empty() || p.delta != DeltaState::Done)
                    })
                {
                    self.stats.syncs_waiting_memory += 1;
                }
                continue;
            }
            if !self.ask_for(&publisher, now) {
                return;
            }
        }
    }

    /// Abandons the syncs no peer can serve while a newer head of their publisher waits.
    fn abandon_stalled(&mut self, now: Now) {
        // A sync that no peer can serve, however long it waits (its sources gone or banned,
        // every other peer known to lack its blocks), while a newer head of the same publisher waits: fetch the newer one,
        // which peers announced and so hold. Without this the newer head waits forever.
        let stalled: Vec<String> = self
            .publishers
            .iter()
            .filter(|(_, s)| s.queued.is_some())
            .filter_map(|(name, s)| s.pending.as_ref().map(|p| (name, p)))
            .filter(|(_, p)| !p.importing && p.inflight == 0 && !self.servable(p, now))
            .map(|(name, _)| name.clone())
            .collect();
        for publisher in stalled {
            self.abandon(&publisher, false, now);
        }
    }

    /// The one sync allowed to ask on when the syncs hold more than `held_bytes_max` (none
    /// when under it); records the bytes held.
    fn favoured_sync(&mut self, now: Now) -> Option<String> {
        // Past the memory cap only the sync holding the most asks on: it only grows, so it
        // keeps the lead until it is imported and its bytes are let go. A sync that no peer
        // can serve (all sources gone; busy ones still count) does not take the lead, so it
        // cannot stall the rest.
        let held: u64 = self
            .publishers
            .values()
            .filter_map(|s| s.pending.as_ref())
            .map(|p| p.bytes)
            .sum();
        self.stats.held_bytes = held;
        (held >= self.config.held_bytes_max)
            .then(|| {
                self.publishers
                    .iter()
                    .filter_map(|(name, s)| s.pending.as_ref().map(|p| (p, name)))
                    .filter(|(p, _)| p.importing || p.inflight > 0 || self.servable(p, now))
                    .map(|(p, name)| (p.bytes, name))
                    .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
                    .map(|(_, name)| name.clone())
            })
            .flatten()
    }

    /// Sends `publisher`'s sync the requests it may make now (a delta, else batches of
    /// blocks); false when the engine's request budget is spent.
    fn ask_for(&mut self, publisher: &str, now: Now) -> bool {
        loop {
            if self.requests.len() >= self.config.requests_total {
                return false;
            }
            let Some(pending) = self
                .publishers
                .get(publisher)
                .and_then(|s| s.pending.as_ref())
            else {
                break;
            };
            let delta_from = match pending.delta {
                DeltaState::Wanted(from) => Some(from),
                DeltaState::Asked(_) => break,
                DeltaState::Done => None,
            };
            if (delta_from.is_none() && pending.want.is_empty())
                || pending.importing
                || pending.not_before > now.ms
            {
                break;
            }
            let Some(peer) = self.choose_source(pending, now) else {
                break;
            };
            if let Some(from) = delta_from {
                let to = pending.head.cid;
                if let Some(pending) = pending_mut(&mut self.publishers, publisher) {
                    pending.delta = DeltaState::Asked(from);
                    pending.inflight += 1;
                }
                self.send(
                    peer,
                    Some(publisher.to_owned()),
                    Request::Delta { from, to },
                    Vec::new(),
                    now,
                );
                break;
            }
            let Some(pending) = pending_mut(&mut self.publishers, publisher) else {
                break;
            };
            let n = pending
                .want
                .len()
                .min(self.config.blocks_per_request.max(1));
            let cids: Vec<Cid> = pending.want.drain(..n).collect();
            pending.inflight += 1;
            self.send(
                peer,
                Some(publisher.to_owned()),
                Request::Blocks(cids.clone()),
                cids,
                now,
            );
        }
        true
    }

    /// Whether `peer` could be asked for the pending head's blocks, busy or not: connected, not
    /// banned, not caught lying about this head and not known to lack it.
    fn may_serve(peer: &P, state: &PeerState, pending: &Pending<P>, now: Now) -> bool {
        state.connected
            && state.banned_until.is_none_or(|until| until <= now.ms)
            && !pending.liars.contains(peer)
            && !pending.lacking.contains(peer)
    }

    /// Whether some peer could serve the pending head now or once it is less busy (a sync
    /// without one cannot progress until a peer announces the head).
    fn servable(&self, pending: &Pending<P>, now: Now) -> bool {
        self.peers
            .iter()
            .any(|(peer, state)| Self::may_serve(peer, state, pending, now))
    }

    /// The best peer to ask for a pending head's blocks: a source of the head before others,
    /// then fewer failures, then the same region, then the least busy.
    fn choose_source(&self, pending: &Pending<P>, now: Now) -> Option<P> {
        let own_region = self.config.region.as_deref();
        self.peers
            .iter()
            .filter(|(peer, state)| {
                state.inflight < self.config.requests_per_peer
                    && Self::may_serve(peer, state, pending, now)
            })
            .min_by_key(|(peer, state)| {
                let known = !pending.head.sources.contains(peer);
                let misses = pending.misses.get(*peer).copied().unwrap_or(0);
                let region = own_region.is_some() && state.info.region.as_deref() != own_region;
                (misses, known, region, state.inflight)
            })
            .map(|(peer, _)| peer.clone())
    }
}

/// The sync in progress for `publisher`, if any.
fn pending_mut<'a, P>(
    publishers: &'a mut BTreeMap<String, PublisherState<P>>,
    publisher: &str,
) -> Option<&'a mut Pending<P>> {
    publishers
        .get_mut(publisher)
        .and_then(|s| s.pending.as_mut())
}

/// Why a walk cannot go on.
enum Fatal {
    /// The snapshot is invalid (its blocks hash right, so the publisher made it so).
    Invalid(String),
    /// Our store failed.
    Store(String),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Invalid(why) => write!(f, "invalid snapshot: {why}"),
            Fatal::Store(why) => write!(f, "store: {why}"),
        }
    }
}

/// Adds `cid` to the walk unless the store has it (and so its whole subtree).
fn want<P>(
    store: &dyn BlockStore,
    pending: &mut Pending<P>,
    cid: Cid,
    node: bool,
) -> Result<(), Fatal> {
    if pending.needed.contains(&cid) {
        return Ok(());
    }
    match store.contains(&cid) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(error) => return Err(Fatal::Store(error.to_string())),
    }
    pending.needed.insert(cid);
    if node {
        pending.nodes.insert(cid);
    }
    pending.want.push_back(cid);
    Ok(())
}

/// Takes the blocks the walk wants from the delta cache until it wants only what the cache
/// lacks.
fn resolve_cached<P>(
    store: &dyn BlockStore,
    config: &SyncConfig,
    pending: &mut Pending<P>,
) -> Result<(), Fatal> {
    if pending.cache.is_empty() {
        return Ok(());
    }
    loop {
        let queue = std::mem::take(&mut pending.want);
        let mut rest = VecDeque::with_capacity(queue.len());
        let mut progressed = false;
        for cid in queue {
            match pending.cache.remove(&cid) {
                Some(block) => {
                    deliver(store, config, pending, cid, block)?;
                    progressed = true;
                }
                None => rest.push_back(cid),
            }
        }
        // `deliver` queued the children of what it took; keep them after the rest.
        rest.append(&mut pending.want);
        pending.want = rest;
        if !progressed {
            return Ok(());
        }
    }
}

/// Takes in one hash-checked block the walk needed, and walks on from a tree node.
fn deliver<P>(
    store: &dyn BlockStore,
    config: &SyncConfig,
    pending: &mut Pending<P>,
    cid: Cid,
    block: Arc<[u8]>,
) -> Result<(), Fatal> {
    pending.bytes += block.len() as u64;
    if pending.bytes > config.limits.car_bytes_max {
        return Err(Fatal::Invalid(format!(
            "snapshot exceeds {} bytes",
            config.limits.car_bytes_max
        )));
    }
    if pending.needed.len() > config.limits.blocks_max {
        return Err(Fatal::Invalid(format!(
            "snapshot exceeds {} blocks",
            config.limits.blocks_max
        )));
    }
    if pending.nodes.contains(&cid) {
        let links = mst::node_links::<Blake3>(&cid, block.clone())
            .map_err(|e| Fatal::Invalid(e.to_string()))?;
        for subtree in links.subtrees {
            want(store, pending, subtree, true)?;
        }
        for (_, manifest) in links.values {
            want(store, pending, manifest, false)?;
        }
    }
    pending.received.insert(cid, block);
    Ok(())
}

/// The answer to a blocks request from the store alone: the blocks it holds of those asked
/// for, in order, within one message's byte budget (absent ones are left out; the asker
/// tries elsewhere). Reads only, so a driver may run it off the engine's loop.
pub fn blocks_answer(store: &dyn BlockStore, config: &SyncConfig, cids: &[Cid]) -> Response {
    let most = config.blocks_per_request.max(1024);
    if cids.len() > most {
        return Response::Refused(format!(
            "{} blocks asked for; at most {most} per request",
            cids.len()
        ));
    }
    let budget = config.message_bytes_max.saturating_sub(1024);
    let mut used = 0usize;
    let mut blocks = Vec::new();
    for cid in cids {
        let Ok(Some(block)) = store.get(cid) else {
            continue;
        };
        let size = block.len() + 64;
        if used + size > budget {
            break;
        }
        used += size;
        blocks.push((*cid, block));
    }
    Response::Blocks(blocks)
}

/// Why a delta cannot be answered ([`delta_blocks`]); the peer is told why and fetches blocks
/// one by one instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The store failed to read.
    #[error("{0}")]
    Store(#[from] meridian_registry::store::StoreError),
    /// A commit or manifest of the delta is not held here.
    #[error("{what} {cid} is not held here")]
    NotHeld {
        /// `commit` or `manifest`.
        what: &'static str,
        /// Its CID.
        cid: Cid,
    },
    /// A held commit does not decode.
    #[error("{0}")]
    Commit(meridian_registry::commit::CommitError),
    /// `to` is not a later commit of `from`'s publisher.
    #[error("not a successor of the same publisher")]
    NotSuccessor,
    /// A registry tree of the two commits does not load.
    #[error("{0}")]
    Tree(mst::LoadError),
    /// The delta is larger than one message.
    #[error("the delta is larger than one message; fetch blocks instead")]
    TooLarge,
}

/// Every block a holder of commit `from` lacks to reach commit `to` (both in `store`, one
/// publisher, `to` newer): the new commit, the tree nodes on changed paths and the changed
/// manifests, or why not (more than one message holds, not successors, missing blocks).
/// Reads only, so a driver may run it off the engine's loop.
pub fn delta_blocks(
    store: &dyn BlockStore,
    config: &SyncConfig,
    from: Cid,
    to: Cid,
) -> Result<Vec<meridian_registry::car::SharedBlock>, DeltaError> {
    let commit = |cid: &Cid| -> Result<(Arc<[u8]>, Commit), DeltaError> {
        let block = store.get(cid)?.ok_or(DeltaError::NotHeld {
            what: "commit",
            cid: *cid,
        })?;
        let commit = Commit::decode(&block).map_err(DeltaError::Commit)?;
        Ok((block, commit))
    };
    let (_, old) = commit(&from)?;
    let (new_block, new) = commit(&to)?;
    if old.body.publisher != new.body.publisher || old.body.seq >= new.body.seq {
        return Err(DeltaError::NotSuccessor);
    }
    let mut get = |cid: &Cid| store.get(cid).ok().flatten();
    let limits = config.limits;
    let load = |root: &Cid, get: &mut dyn FnMut(&Cid) -> Option<Arc<[u8]>>| {
        snapshot::RegistryTree::load_with_depth(root, limits.agents_max, limits.tree_depth_max, get)
            .map_err(DeltaError::Tree)
    };
    let old_tree = load(&old.body.data, &mut get)?;
    let new_tree = load(&new.body.data, &mut get)?;
    let diff = new_tree.diff(&old_tree);
    let budget = config.message_bytes_max.saturating_sub(1024);
    let mut used = new_block.len();
    let mut blocks = vec![(to, new_block)];
    let manifests = diff
        .added
        .iter()
        .map(|(_, cid)| *cid)
        .chain(diff.changed.iter().map(|(_, _, cid)| *cid));
    let mut all: Vec<(Cid, Arc<[u8]>)> = diff.new_nodes;
    for cid in manifests {
        let block = store.get(&cid)?.ok_or(DeltaError::NotHeld {
            what: "manifest",
            cid,
        })?;
        all.push((cid, block));
    }
    for (cid, block) in all {
        used += block.len() + 64;
        if used > budget {
            return Err(DeltaError::TooLarge);
        }
        blocks.push((cid, block));
    }
    Ok(blocks)
}
