//! The hub's decisions as one sans-IO state machine, in the manner of quinn-proto and str0m:
//! the driver ([`crate::daemon::state::Hub`]) feeds it what happened with
//! [`HubMachine::handle`]`(now, input)`, asks it what to do ([`HubMachine::plan_blocks`],
//! [`HubMachine::ask_delta`], [`HubMachine::route`], the relay admission checks), and carries
//! out what [`HubMachine::poll`] hands back: keep or forget a block, keep a head or a governance
//! document, forward gossip to the other regions' hubs, wake a waiting request, wake the
//! long-polls, count a metric.
//!
//! It owns every core the hub decides with: the block cache ([`BlockCache`]), the head mirror
//! ([`HeadMirror`]), the governance mirror ([`PolicyMirror`]), routing hints ([`Router`]),
//! delta collapse ([`DeltaBoard`]), the relay's rate limiter ([`Limiter`]), the circuit
//! breakers ([`Breaker`]) and the new-publisher budget ([`NewPublisherBudget`]). No socket, no
//! disk, no clock: time comes in as [`Now`], and its tests run without a runtime.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use meridian_registry::Cid;
use meridian_registry::commit::{Commit, EquivocationProof};
use meridian_registry::ids::Blake3;
use meridian_registry::keys::PublicKey;
use meridian_registry::manifest::Manifest;
use meridian_registry::mst;

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::cache::{BlockCache, CacheError, CacheStats, Lookup, Miss};
use crate::deltas::{Ask, DeltaBlocks, DeltaBoard};
use crate::heads::{HeadMirror, NewPublisherBudget, Offered, Upstream};
use crate::policy::{DocOutcome, PolicyMirror};
use crate::ratelimit::{Decision, Limiter, Rate};
use crate::routing::{Router, Routes};
use crate::wire::{GOSSIP_BYTES_MAX, Gossip, Response};

/// Bytes of commit blocks one heads answer carries at most: a node reads at most 8 MiB of
/// `/v1/heads`, which is JSON with every block in base64 (4/3 of its size) beside governance
/// documents, so commits take at most half of it.
pub const HEADS_ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The time, as the driver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall clock, unix seconds (expiry of heads, governance documents, attestations).
    pub unix: i64,
    /// Monotonic time since the hub started (rate limiter, circuit breakers).
    pub elapsed: Duration,
}

/// What the machine is set up with (from the hub's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// This hub's region.
    pub region: String,
    /// Publishers whose heads the mirror holds at most.
    pub publishers_max: usize,
    /// How far ahead of the hub's clock a commit's creation time may be, in seconds.
    pub clock_skew_secs: i64,
    /// Bytes of blocks the cache holds at most.
    pub cache_bytes_max: u64,
    /// The circuit breakers' settings.
    pub breaker: BreakerConfig,
    /// The relay's rate for a scope the policy names no tier for.
    pub default_rate: Rate,
    /// Node DIDs the operator trusts to name their callers' organisation (`relay.trusted_nodes`).
    pub trusted_nodes: Vec<String>,
    /// New publishers one source may introduce in a minute (without governance).
    pub new_publishers_per_minute: u32,
    /// New publishers one source may introduce in all (without governance).
    pub publishers_per_source_max: u32,
}

/// Something that happened, for [`HubMachine::handle`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A gossip message (a head, a governance document or an equivocation proof) from a node
    /// of this region at client address `source`, or from another region's hub
    /// (`upstream` is then [`Upstream::Hub`]).
    Gossip {
        /// The encoded message.
        bytes: Vec<u8>,
        /// Where the blocks of a gossiped head can be fetched.
        upstream: Upstream,
        /// Whose budget of new publishers a head of an unknown publisher takes from.
        source: String,
    },
    /// A block fetched upstream for `publisher` (when known), to check and cache.
    Fetched {
        /// Its CID.
        cid: Cid,
        /// Its bytes.
        block: Arc<[u8]>,
        /// The publisher whose tree it belongs to.
        publisher: Option<String>,
    },
    /// The fetch of a block ended without it.
    FetchFailed(Cid),
    /// The fetch of the delta `from -> to` ended: its blocks (each already taken in as
    /// [`Input::Fetched`]), or `None` when it failed.
    DeltaEnded {
        /// The delta's base.
        from: Cid,
        /// Its target.
        to: Cid,
        /// Its blocks, if it arrived whole.
        blocks: Option<DeltaBlocks>,
    },
    /// A call to an upstream (a node, another region's hub, an agent) guarded by the breaker
    /// `breaker` ended, well or not.
    UpstreamEnded {
        /// The breaker's name (see [`HubMachine::breaker_allows`]).
        breaker: String,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// A waiting request, to be woken by [`Output::Wake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Waiter {
    /// Waits for a block another request is fetching.
    Block(u64),
    /// Waits for a delta another request is fetching.
    Delta(u64),
}

/// How a head kept on disk is tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// A publisher's head.
    Head,
    /// An equivocation proof.
    Proof,
}

impl HeadKind {
    /// Its one-byte tag on disk.
    pub fn tag(self) -> u8 {
        match self {
            Self::Head => b'H',
            Self::Proof => b'E',
        }
    }
}

/// What the driver is to do, from [`HubMachine::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Keep a head (or proof) on disk under `key`, replacing what is there.
    PersistHead {
        /// The publisher's DID (`#proof` appended for a proof).
        key: String,
        /// Where its blocks are.
        upstream: Upstream,
        /// Head or proof.
        kind: HeadKind,
        /// The block.
        block: Vec<u8>,
    },
    /// Keep a governance document on disk, after those kept before.
    PersistGovernance(Vec<u8>),
    /// Keep a cached block on disk.
    PersistBlock {
        /// Its CID.
        cid: Cid,
        /// Its bytes.
        block: Arc<[u8]>,
    },
    /// Drop a block the cache evicted from disk.
    ForgetBlock(Cid),
    /// Send this gossip message to every other region's hub.
    Forward(Vec<u8>),
    /// Something new arrived: wake the long-polls.
    Changed,
    /// The policy in force changed: re-read the hub directory ([`HubMachine::directory`]).
    DirectoryChanged,
    /// Wake a waiting request.
    Wake(Waiter),
    /// A circuit breaker changed state.
    BreakerChanged {
        /// Its name.
        breaker: String,
        /// Its new state.
        state: BreakerState,
    },
    /// Add to a counter.
    Count {
        /// The series, labels and all.
        name: &'static str,
        /// By how much.
        by: u64,
    },
}

/// Why an input was refused ([`HubMachine::handle`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Not a gossip message in the wire format.
    #[error("{0}")]
    Malformed(crate::wire::WireError),
    /// The head's block is not a commit.
    #[error("{0}")]
    Commit(meridian_registry::commit::CommitError),
    /// With governance: the signed policy does not admit the publishing node.
    #[error("{0}")]
    NodeNotAdmitted(crate::policy::NodeRefusal),
    /// Without governance: the source has introduced as many publishers as it may.
    #[error("{0}")]
    Budget(crate::heads::BudgetRefusal),
    /// The head does not verify, is expired, or the mirror is full.
    #[error("{0}")]
    Head(crate::heads::HeadError),
    /// A governance document came to a hub without a trust root.
    #[error("this hub has no governance root configured")]
    NoGovernance,
    /// The governance document was refused.
    #[error("{0}")]
    Document(crate::policy::MirrorError),
    /// The equivocation proof was refused.
    #[error("{0}")]
    Proof(crate::heads::ProofRefusal),
    /// An upstream served a block that does not match its CID, or one too large to cache.
    #[error("upstream served a wrong block: {0}")]
    WrongBlock(CacheError),
}

/// Why a relayed call is not made (the HTTP layer answers with its status and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRefusal {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A stable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// For 429 and 503: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

impl RelayRefusal {
    /// A refusal without a retry hint.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// How a request for blocks is served ([`HubMachine::plan_blocks`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    /// Cached blocks.
    pub found: Vec<(Cid, Arc<[u8]>)>,
    /// Blocks this request fetches ([`HubMachine::route`] says where), reporting each with
    /// [`Input::Fetched`] or [`Input::FetchFailed`].
    pub fetch: Vec<Cid>,
    /// Blocks another request is fetching: wait to be woken, then look with
    /// [`HubMachine::cached`].
    pub wait: Vec<(Cid, Waiter)>,
}

/// How a request for a delta is served ([`HubMachine::ask_delta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaPlan {
    /// Answer with these kept blocks.
    Kept(DeltaBlocks),
    /// Fetch it from `upstream` (the head's), then report with [`Input::DeltaEnded`].
    Fetch {
        /// Where the target head's blocks are.
        upstream: Upstream,
        /// Its publisher.
        publisher: String,
    },
    /// Another request is fetching it: wait, then look with [`HubMachine::kept_delta`].
    Wait(Waiter),
    /// The target is not a head this hub mirrors.
    NotMirrored,
}

/// One hub of the policy's directory, as the policy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Its region.
    pub region: String,
    /// Its trunk address, `host:port`, as signed (the driver parses it).
    pub address: String,
    /// Its hub key.
    pub key: PublicKey,
}

/// What taking in a gossiped head did.
enum HeadOutcome {
    /// Kept (true when it is a new head), or nothing new.
    Kept(bool),
    /// It conflicts with the held head of its seq: this proof was kept.
    Equivocation(Vec<u8>),
}

/// The hub's state and decisions; see the module documentation.
#[derive(Debug)]
pub struct HubMachine {
    settings: Settings,
    cache: BlockCache,
    heads: HeadMirror,
    policy: Option<PolicyMirror>,
    router: Router,
    deltas: DeltaBoard<u64>,
    next_delta_waiter: u64,
    limiter: Limiter,
    breakers: BTreeMap<String, Breaker>,
    /// Relay refusals for rate, by scope (`org:ID`, `region:NAME`), for the stats page.
    rate_refusals: BTreeMap<String, u64>,
    budget: NewPublisherBudget,
    outputs: VecDeque<Output>,
}

/// How many rate scopes [`HubMachine::rate_refusals`] names; refusals of further scopes are
/// counted under `other` (so a caller inventing organisation names cannot grow the map).
pub const RATE_REFUSAL_SCOPES_MAX: usize = 256;

/// One circuit breaker as the stats page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerReport {
    /// The upstream: `hub:REGION`, `node:URL` or `agent:HOST`.
    pub upstream: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Failures in a row.
    pub failures: u32,
    /// For an open breaker, how long until a probe may go.
    pub open_for: Option<Duration>,
}

impl HubMachine {
    /// A machine with nothing mirrored; `policy` is the governance mirror when the hub has a
    /// trust root.
    pub fn new(settings: Settings, policy: Option<PolicyMirror>) -> Self {
        Self {
            cache: BlockCache::new(settings.cache_bytes_max),
            heads: HeadMirror::new(settings.publishers_max, settings.clock_skew_secs),
            router: Router::new(),
            deltas: DeltaBoard::new(),
            next_delta_waiter: 1,
            limiter: Limiter::new(),
            breakers: BTreeMap::new(),
            rate_refusals: BTreeMap::new(),
            budget: NewPublisherBudget::new(
                settings.new_publishers_per_minute,
                settings.publishers_per_source_max,
            ),
            policy,
            settings,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing the driver is to do, in the order the machine decided them.
    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Takes in what happened. `Ok(true)` when it brought something new (a head, a document,
    /// a proof, a block not cached before).
    pub fn handle(&mut self, now: Now, input: Input) -> Result<bool, Refused> {
        match input {
            Input::Gossip {
                bytes,
                upstream,
                source,
            } => self.gossip(&bytes, upstream, &source, now.unix),
            Input::Fetched {
                cid,
                block,
                publisher,
            } => self.fetched(&cid, block, publisher.as_deref()),
            Input::FetchFailed(cid) => {
                for id in self.cache.fetch_failed(&cid) {
                    self.outputs.push_back(Output::Wake(Waiter::Block(id)));
                }
                Ok(false)
            }
            Input::DeltaEnded { from, to, blocks } => {
                let woken = match blocks {
                    Some(blocks) => self.deltas.fetched(from, to, blocks),
                    None => self.deltas.failed(from, to),
                };
                for id in woken {
                    self.outputs.push_back(Output::Wake(Waiter::Delta(id)));
                }
                Ok(false)
            }
            Input::UpstreamEnded { breaker, ok } => {
                let change = self.breakers.get_mut(&breaker).and_then(|b| {
                    if ok {
                        b.success()
                    } else {
                        b.failure(now.elapsed)
                    }
                });
                if let Some(state) = change {
                    self.outputs
                        .push_back(Output::BreakerChanged { breaker, state });
                }
                Ok(false)
            }
        }
    }

    // ------------------------------------------------------------ restart

    /// Puts back a block the hub kept on disk; one that no longer checks against its CID is
    /// forgotten ([`Output::ForgetBlock`]). Returns whether it was kept.
    pub fn restore_block(&mut self, cid: &Cid, block: Arc<[u8]>) -> bool {
        let kept = self.cache.preload(cid, block).is_ok();
        if !kept {
            self.outputs.push_back(Output::ForgetBlock(*cid));
        }
        self.take_evicted();
        kept
    }

    /// Puts back a kept governance document (they come in the order they were kept).
    pub fn restore_document(&mut self, block: &[u8], now: Now) -> Result<(), Refused> {
        let policy = self.policy.as_mut().ok_or(Refused::NoGovernance)?;
        policy
            .offer(block, now.unix)
            .map(|_| ())
            .map_err(Refused::Document)
    }

    /// Puts back a kept head or proof; what no longer verifies (an expired head, say: nodes
    /// would refuse it anyway) is refused and left out.
    pub fn restore_head(
        &mut self,
        kind: HeadKind,
        block: &[u8],
        upstream: Upstream,
        now: Now,
    ) -> Result<(), Refused> {
        match kind {
            HeadKind::Proof => self
                .heads
                .offer_equivocation(block)
                .map(|_| ())
                .map_err(Refused::Proof),
            HeadKind::Head => self
                .heads
                .offer(block, upstream, now.unix)
                .map(|_| ())
                .map_err(Refused::Head),
        }
    }

    // ------------------------------------------------------------ blocks

    fn take_evicted(&mut self) {
        for cid in self.cache.take_evicted() {
            self.outputs.push_back(Output::ForgetBlock(cid));
        }
    }

    /// Checks a fetched block against its CID, caches and persists it, hints its links to
    /// its publisher, and wakes whoever waits for it.
    fn fetched(
        &mut self,
        cid: &Cid,
        block: Arc<[u8]>,
        publisher: Option<&str>,
    ) -> Result<bool, Refused> {
        let held = self.cache.contains(cid);
        let (result, woken) = self.cache.fetched(cid, block.clone());
        for id in woken {
            self.outputs.push_back(Output::Wake(Waiter::Block(id)));
        }
        self.take_evicted();
        if let Err(error) = result {
            self.count("meridian_hub_blocks_rejected_total", 1);
            return Err(Refused::WrongBlock(error));
        }
        if held {
            return Ok(false);
        }
        if let Some(publisher) = publisher
            && let Ok(links) = mst::node_links::<Blake3>(cid, block.clone())
        {
            self.router.hint(
                publisher,
                links
                    .subtrees
                    .into_iter()
                    .chain(links.values.into_iter().map(|(_, v)| v)),
            );
        }
        self.outputs
            .push_back(Output::PersistBlock { cid: *cid, block });
        Ok(true)
    }

    /// Splits a request for blocks into what is cached, what this request fetches, and what
    /// it waits for (a block too many already wait for is left out).
    pub fn plan_blocks(&mut self, cids: &[Cid]) -> BlockPlan {
        let mut plan = BlockPlan::default();
        for cid in cids {
            match self.cache.lookup(cid) {
                Lookup::Hit(block) => plan.found.push((*cid, block)),
                Lookup::Miss(Miss::Fetch) => plan.fetch.push(*cid),
                Lookup::Miss(Miss::Wait(id)) => plan.wait.push((*cid, Waiter::Block(id))),
                Lookup::Miss(Miss::Busy) => {}
            }
        }
        plan
    }

    /// A cached block (counted as a hit), without registering a fetch.
    pub fn cached(&mut self, cid: &Cid) -> Option<Arc<[u8]>> {
        self.cache.cached(cid)
    }

    /// Where to fetch `cids` from ([`Router::route`] over the mirrored heads and the other
    /// regions the trunk reaches).
    pub fn route(&self, cids: Vec<Cid>, regions: &[String], now: Now) -> Routes {
        self.router.route(cids, &self.heads, regions, now.unix)
    }

    /// Records that `cids` belong to `publisher` (where to fetch them on a miss).
    pub fn hint(&mut self, publisher: &str, cids: impl IntoIterator<Item = Cid>) {
        self.router.hint(publisher, cids);
    }

    /// The cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    // ------------------------------------------------------------ deltas

    /// A request for the delta `from -> to`: kept, waited for, or fetched from the target
    /// head's upstream by this request (one cross-region transfer however many nodes ask).
    pub fn ask_delta(&mut self, from: Cid, to: Cid) -> DeltaPlan {
        let id = self.next_delta_waiter;
        match self.deltas.ask(from, to, || id) {
            Ask::Kept(blocks) => DeltaPlan::Kept(blocks),
            Ask::Wait => {
                self.next_delta_waiter += 1;
                DeltaPlan::Wait(Waiter::Delta(id))
            }
            Ask::Fetch => match self.heads.by_cid(&to) {
                Some(head) => DeltaPlan::Fetch {
                    upstream: head.upstream.clone(),
                    publisher: head.publisher.clone(),
                },
                None => {
                    self.deltas.failed(from, to);
                    DeltaPlan::NotMirrored
                }
            },
        }
    }

    /// The kept answer for the delta `from -> to`, if any.
    pub fn kept_delta(&self, from: Cid, to: Cid) -> Option<DeltaBlocks> {
        self.deltas.kept(from, to)
    }

    // ------------------------------------------------------------ heads and gossip

    /// Every head, governance document and proof the hub holds, as a sync `Heads` answer,
    /// bounded by [`HEADS_ANSWER_BYTES_MAX`]; also how many heads were left out (they reach
    /// nodes by gossip instead).
    pub fn heads_answer(&self, now: Now) -> (Response, usize) {
        let mut used = 0usize;
        let mut commits = Vec::new();
        let all = self.heads.all(now.unix);
        for head in &all {
            used += head.block.len();
            if used > HEADS_ANSWER_BYTES_MAX {
                break;
            }
            commits.push(head.block.to_vec());
        }
        let left_out = all.len() - commits.len();
        let answer = Response::Heads {
            commits,
            governance: self.governance_documents(),
            equivocations: self.heads.equivocations().cloned().collect(),
        };
        (answer, left_out)
    }

    /// The root of the tree a mirrored publisher's head commits to.
    pub fn head_data(&self, publisher: &str) -> Option<Cid> {
        self.heads.get(publisher).map(|h| h.data)
    }

    /// Publishers mirrored.
    pub fn publishers(&self) -> usize {
        self.heads.len()
    }

    fn count(&mut self, name: &'static str, by: u64) {
        self.outputs.push_back(Output::Count { name, by });
    }

    /// A gossip message: what is new is kept, announced to long-polls and, when it came from
    /// this region, forwarded to the other regions' hubs.
    fn gossip(
        &mut self,
        bytes: &[u8],
        upstream: Upstream,
        source: &str,
        now: i64,
    ) -> Result<bool, Refused> {
        let message = Gossip::decode(bytes, GOSSIP_BYTES_MAX).map_err(Refused::Malformed)?;
        let local = !matches!(upstream, Upstream::Hub(_));
        let new = match &message {
            Gossip::Head(block) => match self.gossiped_head(block, upstream, local, source, now)? {
                HeadOutcome::Kept(new) => new,
                // A proof is announced and forwarded as itself, not as the head that made it.
                HeadOutcome::Equivocation(proof) => {
                    self.outputs.push_back(Output::Changed);
                    if local {
                        self.outputs
                            .push_back(Output::Forward(Gossip::Equivocation(proof).encode()));
                    }
                    return Ok(true);
                }
            },
            Gossip::Governance(block) => self.gossiped_document(block, now)?,
            Gossip::Equivocation(block) => self.gossiped_proof(block)?,
        };
        if new {
            self.outputs.push_back(Output::Changed);
            if local {
                self.outputs.push_back(Output::Forward(bytes.to_vec()));
            }
        }
        Ok(new)
    }

    /// A gossiped head: admitted, mirrored and kept when new or when it tells where the
    /// publisher's blocks are.
    fn gossiped_head(
        &mut self,
        block: &[u8],
        upstream: Upstream,
        local: bool,
        source: &str,
        now: i64,
    ) -> Result<HeadOutcome, Refused> {
        if let Err(why) = self.admit_head(block, local, source, now) {
            self.count("meridian_hub_heads_total{outcome=\"not_admitted\"}", 1);
            return Err(why);
        }
        let offered = self.heads.offer(block, upstream.clone(), now);
        // The mirror has checked the block; what is kept needs its publisher.
        let publisher = || {
            Commit::decode(block)
                .map(|c| c.body)
                .map_err(Refused::Commit)
        };
        let persist =
            |key: String, upstream: Upstream, kind: HeadKind, block: &[u8]| Output::PersistHead {
                key,
                upstream,
                kind,
                block: block.to_vec(),
            };
        match offered {
            Ok(Offered::New) => {
                let body = publisher()?;
                let did = body.publisher.to_did();
                self.router.hint(&did, [body.data]);
                self.outputs
                    .push_back(persist(did, upstream, HeadKind::Head, block));
                self.count("meridian_hub_heads_total{outcome=\"new\"}", 1);
                Ok(HeadOutcome::Kept(true))
            }
            Ok(Offered::SourceLearnt) => {
                let did = publisher()?.publisher.to_did();
                self.outputs
                    .push_back(persist(did, upstream, HeadKind::Head, block));
                Ok(HeadOutcome::Kept(false))
            }
            Ok(Offered::Duplicate | Offered::Stale) => Ok(HeadOutcome::Kept(false)),
            Ok(Offered::Equivocation(proof)) => {
                let key = format!("{}#proof", publisher()?.publisher.to_did());
                self.outputs
                    .push_back(persist(key, Upstream::Unknown, HeadKind::Proof, &proof));
                self.count("meridian_hub_equivocations_total", 1);
                Ok(HeadOutcome::Equivocation(proof))
            }
            Err(error) => {
                self.count("meridian_hub_heads_total{outcome=\"refused\"}", 1);
                Err(Refused::Head(error))
            }
        }
    }

    /// Whether the hub keeps a head in `block`: with governance, only of a node the policy
    /// admits ([`PolicyMirror::admits_node`]); without, a publisher it does not mirror yet
    /// takes one from its source's budget of new publishers (heads relayed by other hubs,
    /// which are pinned to the policy's directory, take none).
    fn admit_head(
        &mut self,
        block: &[u8],
        local: bool,
        source: &str,
        now: i64,
    ) -> Result<(), Refused> {
        let commit = Commit::decode(block).map_err(Refused::Commit)?;
        let publisher = commit.body.publisher.to_did();
        if let Some(policy) = &self.policy {
            return policy
                .admits_node(&publisher, now)
                .map_err(Refused::NodeNotAdmitted);
        }
        if self.heads.get(&publisher).is_some() || !local {
            return Ok(());
        }
        self.budget.take(source, now).map_err(Refused::Budget)
    }

    /// A gossiped governance document, verified by the policy mirror and kept when new.
    fn gossiped_document(&mut self, block: &[u8], now: i64) -> Result<bool, Refused> {
        let policy = self.policy.as_mut().ok_or(Refused::NoGovernance)?;
        let outcome = policy.offer(block, now).map_err(Refused::Document)?;
        if outcome == DocOutcome::New {
            // Kept in arrival order, which is the order to apply them in.
            self.outputs
                .push_back(Output::PersistGovernance(block.to_vec()));
            self.outputs.push_back(Output::DirectoryChanged);
        }
        Ok(outcome == DocOutcome::New)
    }

    /// A gossiped equivocation proof, verified and kept when new.
    fn gossiped_proof(&mut self, block: &[u8]) -> Result<bool, Refused> {
        let new = self
            .heads
            .offer_equivocation(block)
            .map_err(Refused::Proof)?;
        if new {
            let publisher = EquivocationProof::decode(block)
                .ok()
                .and_then(|p| p.verify().ok())
                .map(|(k, _)| k.to_did())
                .unwrap_or_default();
            self.outputs.push_back(Output::PersistHead {
                key: format!("{publisher}#proof"),
                upstream: Upstream::Unknown,
                kind: HeadKind::Proof,
                block: block.to_vec(),
            });
        }
        Ok(new)
    }

    // ------------------------------------------------------------ governance

    /// Whether the hub has a governance root.
    pub fn governed(&self) -> bool {
        self.policy.is_some()
    }

    /// The governance documents in the order to apply them (empty without governance).
    pub fn governance_documents(&self) -> Vec<Vec<u8>> {
        self.policy
            .as_ref()
            .map(PolicyMirror::documents)
            .unwrap_or_default()
    }

    /// The version of the policy bundle in force: `None` without governance, `Some(0)` with a
    /// root but no policy yet.
    pub fn policy_version(&self) -> Option<u64> {
        self.policy
            .as_ref()
            .map(|p| p.policy().map_or(0, |b| b.body.version))
    }

    /// The trust root's block, when the hub has one.
    pub fn root_block(&self) -> Option<Vec<u8>> {
        self.policy.as_ref().map(PolicyMirror::root_block)
    }

    /// The other regions' hubs the policy in force names (empty without one).
    pub fn directory(&self) -> Vec<DirectoryEntry> {
        let Some(bundle) = self.policy.as_ref().and_then(PolicyMirror::policy) else {
            return Vec::new();
        };
        bundle
            .body
            .hubs
            .iter()
            .filter(|hub| hub.region != self.settings.region)
            .map(|hub| DirectoryEntry {
                region: hub.region.clone(),
                address: hub.address.clone(),
                key: hub.key,
            })
            .collect()
    }

    /// What the operator should know is probably wrong: a governance root without a policy
    /// in force, so the hub admits no heads and knows no other region.
    pub fn warnings(&self) -> Vec<String> {
        if self.policy.as_ref().is_some_and(|p| p.policy().is_none()) {
            vec!["governance.root is set but no policy is in force yet: the hub admits no heads and has no hub directory until one arrives (a node it serves passes it on, or `meridian hub govern`)".to_owned()]
        } else {
            Vec::new()
        }
    }

    // ------------------------------------------------------------ relay admission

    /// Whether a node may name its callers' organisation: the signed policy admits it
    /// (`allow_node_keys` or a `node.verified` attestation) or the operator listed it in
    /// `relay.trusted_nodes`. Mirroring a node's head is not enough: anyone can push one.
    pub fn trusts_node(&self, did: &str, now: Now) -> bool {
        self.settings.trusted_nodes.iter().any(|t| t == did)
            || self
                .policy
                .as_ref()
                .is_some_and(|p| p.admits_node(did, now.unix).is_ok())
    }

    /// Applies the rate tier of `scope` (`org:ID` or `region:NAME`, from the policy or the
    /// default): a 429 refusal, with when to retry, when it is over.
    pub fn rate_check(&mut self, scope: &str, now: Now) -> Result<(), RelayRefusal> {
        let rate = self
            .policy
            .as_ref()
            .and_then(PolicyMirror::policy)
            .and_then(|p| {
                p.body
                    .rate_limits
                    .iter()
                    .find(|t| t.scope == scope)
                    .map(|t| Rate {
                        per_second: t.requests_per_second,
                        burst: t.burst,
                    })
            })
            .unwrap_or(self.settings.default_rate);
        match self.limiter.check(scope, rate, now.elapsed) {
            Decision::Allow => {
                self.count("meridian_hub_limiter_total{decision=\"allow\"}", 1);
                Ok(())
            }
            Decision::Wait(wait) => {
                self.count("meridian_hub_limiter_total{decision=\"limited\"}", 1);
                let named = self.rate_refusals.contains_key(scope)
                    || self.rate_refusals.len() < RATE_REFUSAL_SCOPES_MAX;
                let key = if named { scope } else { "other" };
                *self.rate_refusals.entry(key.to_owned()).or_default() += 1;
                let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                Err(RelayRefusal {
                    retry_after: Some(seconds),
                    ..RelayRefusal::new(
                        429,
                        "rate_limited",
                        format!("{scope} is over its rate; retry in {seconds} s"),
                    )
                })
            }
        }
    }

    /// With governance, the acceptance rule over the mirrored attestations and policy: the
    /// relay calls only agents a node would list (403 `not_accepted` with the reasons).
    pub fn relay_acceptance(
        &mut self,
        manifest: &Manifest,
        publisher: &str,
        now: Now,
    ) -> Result<(), RelayRefusal> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let publisher = PublicKey::from_did(publisher).map_err(|e| {
            RelayRefusal::new(
                400,
                "bad_publisher",
                format!("publisher `{publisher}`: {e}"),
            )
        })?;
        let verdict = policy.accepts(manifest, &publisher, now.unix);
        verdict.map_err(|reasons| {
            self.count(
                "meridian_hub_relays_refused_total{reason=\"not_accepted\"}",
                1,
            );
            let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            RelayRefusal::new(
                403,
                "not_accepted",
                format!("governance refuses this agent: {}", reasons.join("; ")),
            )
        })
    }

    /// How many upstreams have a circuit breaker, and at most `most` of those breakers, the
    /// troubled first (open, then half-open, then by failures in a row; ties by name). Every
    /// relayed agent host has one, so the list a stats request builds is bounded.
    pub fn breakers(&self, now: Now, most: usize) -> (usize, Vec<BreakerReport>) {
        let rank = |breaker: &Breaker| {
            let trouble = match breaker.state() {
                BreakerState::Open { .. } => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Closed => 2,
            };
            (trouble, std::cmp::Reverse(breaker.failures()))
        };
        let mut all: Vec<(&String, &Breaker)> = self.breakers.iter().collect();
        all.sort_by_key(|(name, breaker)| (rank(breaker), *name));
        let shown = all
            .into_iter()
            .take(most)
            .map(|(upstream, breaker)| {
                let state = breaker.state();
                BreakerReport {
                    upstream: upstream.clone(),
                    state: state.as_str(),
                    failures: breaker.failures(),
                    open_for: match state {
                        BreakerState::Open { until } => Some(until.saturating_sub(now.elapsed)),
                        _ => None,
                    },
                }
            })
            .collect();
        (self.breakers.len(), shown)
    }

    /// Relay calls refused for rate since start, by scope (at most
    /// [`RATE_REFUSAL_SCOPES_MAX`] scopes, then `other`).
    pub fn rate_refusals(&self) -> &BTreeMap<String, u64> {
        &self.rate_refusals
    }

    /// Whether a call through the breaker `breaker` may be made now (an open breaker refuses
    /// until its time is up, then lets one probe through). Report how it ended with
    /// [`Input::UpstreamEnded`].
    pub fn breaker_allows(&mut self, breaker: &str, now: Now) -> bool {
        let config = self.settings.breaker;
        let (allowed, change) = self
            .breakers
            .entry(breaker.to_owned())
            .or_insert_with(|| Breaker::new(config))
            .allow(now.elapsed);
        if let Some(state) = change {
            self.outputs.push_back(Output::BreakerChanged {
                breaker: breaker.to_owned(),
                state,
            });
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use meridian_governance::policy::{HubEntry, PolicyBody};
    use meridian_registry::commit::CommitBody;
    use meridian_registry::keys::Keypair;
    use meridian_registry::manifest::ManifestBody;

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn at(secs: u64) -> Now {
        Now {
            unix: NOW + secs as i64,
            elapsed: Duration::from_secs(secs),
        }
    }

    fn key(seed: u8) -> Keypair {
        Keypair::from_secret(&[seed; 32])
    }

    fn settings() -> Settings {
        Settings {
            region: "eu".into(),
            publishers_max: 100,
            clock_skew_secs: 300,
            cache_bytes_max: 1 << 20,
            breaker: BreakerConfig {
                failures_to_open: 2,
                open_for: Duration::from_secs(10),
            },
            default_rate: Rate {
                per_second: 1,
                burst: 2,
            },
            trusted_nodes: vec![key(40).did()],
            new_publishers_per_minute: 2,
            publishers_per_source_max: 10,
        }
    }

    fn machine() -> HubMachine {
        HubMachine::new(settings(), None)
    }

    /// A commit of `key` at `seq` over a tree root made from `tree`.
    fn commit(key: &Keypair, seq: u64, tree: u8) -> Vec<u8> {
        CommitBody {
            publisher: key.public(),
            seq,
            data: meridian_registry::ids::dag_cbor_cid(&[tree]),
            prev: (seq > 1).then(|| meridian_registry::ids::dag_cbor_cid(&[tree, 0])),
            created_at: NOW - 10,
            expires_at: NOW + DAY,
        }
        .sign(key)
        .unwrap()
        .to_block()
    }

    fn gossip(message: Gossip, upstream: Upstream, source: &str) -> Input {
        Input::Gossip {
            bytes: message.encode(),
            upstream,
            source: source.into(),
        }
    }

    fn node() -> Upstream {
        Upstream::Node("http://127.0.0.1:7001".into())
    }

    fn drain(machine: &mut HubMachine) -> Vec<Output> {
        std::iter::from_fn(|| machine.poll()).collect()
    }

    #[test]
    fn a_new_head_from_the_region_is_kept_announced_and_forwarded_and_a_repeat_does_nothing() {
        let mut hub = machine();
        let head = commit(&key(1), 1, 1);
        let input = gossip(Gossip::Head(head.clone()), node(), "10.0.0.1");
        assert!(hub.handle(at(0), input.clone()).unwrap());
        let outputs = drain(&mut hub);
        assert!(outputs.contains(&Output::PersistHead {
            key: key(1).did(),
            upstream: node(),
            kind: HeadKind::Head,
            block: head.clone(),
        }));
        assert!(outputs.contains(&Output::Changed));
        assert!(outputs.contains(&Output::Forward(Gossip::Head(head.clone()).encode())));
        assert_eq!(
            hub.head_data(&key(1).did()),
            Some(meridian_registry::ids::dag_cbor_cid(&[1]))
        );
        // The same head again: nothing new, nothing to do.
        assert!(!hub.handle(at(1), input).unwrap());
        assert_eq!(drain(&mut hub), Vec::new());
    }

    #[test]
    fn a_head_relayed_by_another_regions_hub_is_not_forwarded_back() {
        let mut hub = machine();
        let head = commit(&key(1), 1, 1);
        let input = gossip(Gossip::Head(head), Upstream::Hub("us".into()), "us");
        assert!(hub.handle(at(0), input).unwrap());
        let outputs = drain(&mut hub);
        assert!(outputs.contains(&Output::Changed));
        assert!(!outputs.iter().any(|o| matches!(o, Output::Forward(_))));
    }

    #[test]
    fn one_source_introduces_new_publishers_only_within_its_budget() {
        let mut hub = machine();
        for seed in 1..=2 {
            let input = gossip(
                Gossip::Head(commit(&key(seed), 1, seed)),
                node(),
                "10.0.0.1",
            );
            assert!(hub.handle(at(0), input).unwrap());
        }
        let third = gossip(Gossip::Head(commit(&key(3), 1, 3)), node(), "10.0.0.1");
        assert!(matches!(
            hub.handle(at(0), third.clone()),
            Err(Refused::Budget(crate::heads::BudgetRefusal::PerMinute {
                count: 2,
                ..
            }))
        ));
        assert!(drain(&mut hub).contains(&Output::Count {
            name: "meridian_hub_heads_total{outcome=\"not_admitted\"}",
            by: 1
        }));
        // Another source has its own budget; a known publisher's next head takes none; and
        // heads relayed by other hubs take none.
        assert!(
            hub.handle(
                at(0),
                gossip(Gossip::Head(commit(&key(3), 1, 3)), node(), "10.0.0.2")
            )
            .unwrap()
        );
        assert!(
            hub.handle(
                at(0),
                gossip(Gossip::Head(commit(&key(1), 2, 9)), node(), "10.0.0.1")
            )
            .unwrap()
        );
        assert!(
            hub.handle(
                at(0),
                gossip(
                    Gossip::Head(commit(&key(4), 1, 4)),
                    Upstream::Hub("us".into()),
                    "us"
                )
            )
            .unwrap()
        );
        // A minute later the first source may introduce again.
        assert!(
            hub.handle(
                at(60),
                gossip(Gossip::Head(commit(&key(5), 1, 5)), node(), "10.0.0.1")
            )
            .unwrap()
        );
    }

    #[test]
    fn two_heads_of_one_seq_become_a_proof_that_is_kept_and_forwarded_as_itself() {
        let mut hub = machine();
        let honest = commit(&key(1), 1, 1);
        let forked = commit(&key(1), 1, 2);
        assert!(
            hub.handle(at(0), gossip(Gossip::Head(honest), node(), "a"))
                .unwrap()
        );
        drain(&mut hub);
        assert!(
            hub.handle(at(0), gossip(Gossip::Head(forked), node(), "a"))
                .unwrap()
        );
        let outputs = drain(&mut hub);
        let proof = outputs
            .iter()
            .find_map(|o| match o {
                Output::PersistHead {
                    key: stored,
                    kind: HeadKind::Proof,
                    block,
                    ..
                } if *stored == format!("{}#proof", key(1).did()) => Some(block.clone()),
                _ => None,
            })
            .expect("the proof is kept");
        assert!(outputs.contains(&Output::Forward(
            Gossip::Equivocation(proof.clone()).encode()
        )));
        let (answer, _) = hub.heads_answer(at(0));
        match answer {
            Response::Heads { equivocations, .. } => {
                assert_eq!(equivocations, std::slice::from_ref(&proof))
            }
            other => panic!("expected heads, got {other:?}"),
        }
        // The proof gossiped on its own is nothing new now.
        assert!(
            !hub.handle(at(0), gossip(Gossip::Equivocation(proof), node(), "a"))
                .unwrap()
        );
    }

    #[test]
    fn malformed_gossip_and_bad_heads_are_refused_with_their_reason() {
        let mut hub = machine();
        let garbage = Input::Gossip {
            bytes: vec![0xff; 8],
            upstream: node(),
            source: "a".into(),
        };
        assert!(matches!(
            hub.handle(at(0), garbage),
            Err(Refused::Malformed(_))
        ));
        let mut tampered = commit(&key(1), 1, 1);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            hub.handle(at(0), gossip(Gossip::Head(tampered), node(), "a")),
            Err(Refused::Commit(_) | Refused::Head(_))
        ));
        // An expired head: the hub's clock is past its expiry.
        let head = gossip(Gossip::Head(commit(&key(2), 1, 2)), node(), "a");
        assert!(matches!(
            hub.handle(at(2 * DAY as u64), head),
            Err(Refused::Head(crate::heads::HeadError::Expired { .. }))
        ));
        // A governance document to a hub without a trust root.
        assert!(matches!(
            hub.handle(
                at(0),
                gossip(Gossip::Governance(vec![1, 2, 3]), node(), "a")
            ),
            Err(Refused::NoGovernance)
        ));
        assert_eq!(hub.publishers(), 0);
    }

    #[test]
    fn one_fetch_per_block_the_waiters_woken_and_a_wrong_block_refused_uncached() {
        let mut hub = machine();
        let block: Arc<[u8]> = Arc::from(&b"a block"[..]);
        let cid = meridian_registry::ids::dag_cbor_cid(&block);
        let first = hub.plan_blocks(&[cid]);
        assert_eq!(first.fetch, [cid]);
        let second = hub.plan_blocks(&[cid]);
        let [(_, waiter)] = second.wait.as_slice() else {
            panic!("the second request waits: {second:?}");
        };
        // A wrong block: refused, counted, not cached; the waiter wakes to find nothing.
        let wrong = Input::Fetched {
            cid,
            block: Arc::from(&b"another block"[..]),
            publisher: None,
        };
        assert!(matches!(
            hub.handle(at(0), wrong),
            Err(Refused::WrongBlock(CacheError::Mismatch(_)))
        ));
        let outputs = drain(&mut hub);
        assert!(outputs.contains(&Output::Wake(*waiter)));
        assert!(outputs.contains(&Output::Count {
            name: "meridian_hub_blocks_rejected_total",
            by: 1
        }));
        assert_eq!(hub.cached(&cid), None);
        // Fetched again, right this time: cached, kept on disk, served from memory after.
        assert_eq!(hub.plan_blocks(&[cid]).fetch, [cid]);
        let right = Input::Fetched {
            cid,
            block: block.clone(),
            publisher: None,
        };
        assert!(hub.handle(at(0), right.clone()).unwrap());
        assert!(drain(&mut hub).contains(&Output::PersistBlock {
            cid,
            block: block.clone()
        }));
        assert_eq!(hub.plan_blocks(&[cid]).found, [(cid, block)]);
        // A block already held is no news and not written again.
        assert!(!hub.handle(at(0), right).unwrap());
        assert_eq!(drain(&mut hub), Vec::new());
    }

    #[test]
    fn a_failed_fetch_wakes_its_waiters_and_the_next_request_fetches_again() {
        let mut hub = machine();
        let cid = meridian_registry::ids::dag_cbor_cid(b"x");
        hub.plan_blocks(&[cid]);
        let waiting = hub.plan_blocks(&[cid]).wait;
        assert!(!hub.handle(at(0), Input::FetchFailed(cid)).unwrap());
        assert_eq!(drain(&mut hub), [Output::Wake(waiting[0].1)]);
        assert_eq!(hub.plan_blocks(&[cid]).fetch, [cid]);
    }

    #[test]
    fn one_upstream_fetch_per_delta_however_many_ask_and_none_for_an_unknown_head() {
        let mut hub = machine();
        let head = commit(&key(1), 1, 1);
        let to = meridian_registry::ids::dag_cbor_cid(&head);
        let from = meridian_registry::ids::dag_cbor_cid(b"older");
        hub.handle(at(0), gossip(Gossip::Head(head), node(), "a"))
            .unwrap();
        drain(&mut hub);
        assert_eq!(
            hub.ask_delta(from, to),
            DeltaPlan::Fetch {
                upstream: node(),
                publisher: key(1).did()
            }
        );
        let DeltaPlan::Wait(waiter) = hub.ask_delta(from, to) else {
            panic!("the second ask waits");
        };
        let blocks: DeltaBlocks = vec![(from, Arc::from(&b"b"[..]))];
        let ended = Input::DeltaEnded {
            from,
            to,
            blocks: Some(blocks.clone()),
        };
        hub.handle(at(0), ended).unwrap();
        assert_eq!(drain(&mut hub), [Output::Wake(waiter)]);
        assert_eq!(hub.kept_delta(from, to), Some(blocks.clone()));
        assert_eq!(hub.ask_delta(from, to), DeltaPlan::Kept(blocks));
        // A head the hub does not mirror: refused, and nothing is left in flight.
        let unknown = meridian_registry::ids::dag_cbor_cid(b"unknown");
        assert_eq!(hub.ask_delta(from, unknown), DeltaPlan::NotMirrored);
        assert_eq!(hub.ask_delta(from, unknown), DeltaPlan::NotMirrored);
    }

    #[test]
    fn the_relay_rate_refuses_past_the_burst_with_when_to_retry() {
        let mut hub = machine();
        assert_eq!(hub.rate_check("org:acme", at(0)), Ok(()));
        assert_eq!(hub.rate_check("org:acme", at(0)), Ok(()));
        let refused = hub.rate_check("org:acme", at(0)).unwrap_err();
        assert_eq!(
            (refused.status, refused.code, refused.retry_after),
            (429, "rate_limited", Some(1))
        );
        // Another scope has its own bucket; a second later the first may call again.
        assert_eq!(hub.rate_check("org:globex", at(0)), Ok(()));
        assert_eq!(hub.rate_check("org:acme", at(1)), Ok(()));
    }

    #[test]
    fn the_breakers_reported_are_bounded_and_the_troubled_come_first() {
        let mut hub = machine();
        let fail = |hub: &mut HubMachine, name: &str| {
            assert!(hub.breaker_allows(name, at(0)));
            let ended = Input::UpstreamEnded {
                breaker: name.into(),
                ok: false,
            };
            hub.handle(at(0), ended).unwrap();
        };
        // Many healthy agent hosts (a publisher decides how many), one failing once, one open.
        for n in 0..50 {
            assert!(hub.breaker_allows(&format!("agent:host-{n:02}.example"), at(0)));
        }
        fail(&mut hub, "agent:flaky.example");
        fail(&mut hub, "node:http://127.0.0.1:7001");
        fail(&mut hub, "node:http://127.0.0.1:7001");
        let (total, shown) = hub.breakers(at(1), 5);
        assert_eq!(total, 52);
        let names: Vec<&str> = shown.iter().map(|b| b.upstream.as_str()).collect();
        assert_eq!(
            names,
            [
                "node:http://127.0.0.1:7001",
                "agent:flaky.example",
                "agent:host-00.example",
                "agent:host-01.example",
                "agent:host-02.example"
            ]
        );
        assert_eq!(shown[0].state, "open");
        assert!(shown[0].open_for.is_some());
        assert_eq!((shown[1].state, shown[1].failures), ("closed", 1));
    }

    #[test]
    fn a_breaker_opens_after_failures_and_lets_a_probe_through_when_its_time_is_up() {
        let mut hub = machine();
        let name = "node:http://127.0.0.1:7001";
        for _ in 0..2 {
            assert!(hub.breaker_allows(name, at(0)));
            let ended = Input::UpstreamEnded {
                breaker: name.into(),
                ok: false,
            };
            hub.handle(at(0), ended).unwrap();
        }
        assert!(matches!(
            drain(&mut hub).as_slice(),
            [Output::BreakerChanged {
                state: BreakerState::Open { .. },
                ..
            }]
        ));
        assert!(!hub.breaker_allows(name, at(5)));
        assert!(hub.breaker_allows(name, at(11)));
        assert!(matches!(
            drain(&mut hub).as_slice(),
            [Output::BreakerChanged {
                state: BreakerState::HalfOpen,
                ..
            }]
        ));
        let ended = Input::UpstreamEnded {
            breaker: name.into(),
            ok: true,
        };
        hub.handle(at(11), ended).unwrap();
        assert!(matches!(
            drain(&mut hub).as_slice(),
            [Output::BreakerChanged {
                state: BreakerState::Closed,
                ..
            }]
        ));
    }

    /// A governed machine over the policy tests' root (every role one key: root 1, attest 2,
    /// policy 3, witness 4).
    fn governed() -> HubMachine {
        HubMachine::new(settings(), Some(crate::policy::tests::mirror()))
    }

    fn policy(edit: impl FnOnce(&mut PolicyBody)) -> Vec<u8> {
        crate::policy::tests::policy(1, edit)
    }

    #[test]
    fn a_governed_hub_admits_heads_of_policy_nodes_and_learns_its_directory_from_the_policy() {
        let mut hub = governed();
        assert_eq!(hub.warnings().len(), 1, "no policy in force yet");
        let head = gossip(Gossip::Head(commit(&key(50), 1, 1)), node(), "a");
        assert!(matches!(
            hub.handle(at(0), head.clone()),
            Err(Refused::NodeNotAdmitted(
                crate::policy::NodeRefusal::NoPolicy
            ))
        ));
        let document = policy(|b| {
            b.allow_node_keys = vec![key(50).did()];
            b.hubs = ["eu", "us"]
                .iter()
                .map(|region| HubEntry {
                    region: (*region).into(),
                    address: format!("127.0.0.1:{}", if *region == "eu" { 9001 } else { 9002 }),
                    key: key(if *region == "eu" { 80 } else { 81 }).public(),
                    http: None,
                })
                .collect();
        });
        assert!(
            hub.handle(
                at(0),
                gossip(Gossip::Governance(document.clone()), node(), "a")
            )
            .unwrap()
        );
        let outputs = drain(&mut hub);
        assert!(outputs.contains(&Output::PersistGovernance(document.clone())));
        assert!(outputs.contains(&Output::DirectoryChanged));
        assert_eq!(
            hub.directory(),
            [DirectoryEntry {
                region: "us".into(),
                address: "127.0.0.1:9002".into(),
                key: key(81).public()
            }]
        );
        assert_eq!(hub.governance_documents(), [document]);
        assert!(hub.warnings().is_empty());
        assert!(hub.handle(at(0), head).unwrap());
        let stranger = gossip(Gossip::Head(commit(&key(51), 1, 2)), node(), "a");
        assert!(matches!(
            hub.handle(at(0), stranger),
            Err(Refused::NodeNotAdmitted(
                crate::policy::NodeRefusal::NotAdmitted(_)
            ))
        ));
        // The policy admits node 50 to name its callers; the operator's list adds node 40.
        assert!(hub.trusts_node(&key(50).did(), at(0)));
        assert!(hub.trusts_node(&key(40).did(), at(0)));
        assert!(!hub.trusts_node(&key(51).did(), at(0)));
    }

    #[test]
    fn a_governed_hub_relays_only_to_agents_the_acceptance_rule_admits() {
        let mut hub = governed();
        let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://acme.example/a2a","protocolBinding":"JSONRPC"}]}"#;
        let manifest = ManifestBody::from_card(card, "acme", "eu", NOW)
            .unwrap()
            .sign(&key(60));
        let refused = hub
            .relay_acceptance(&manifest, &key(70).did(), at(0))
            .unwrap_err();
        assert_eq!((refused.status, refused.code), (403, "not_accepted"));
        let refused = hub
            .relay_acceptance(&manifest, "not a did", at(0))
            .unwrap_err();
        assert_eq!((refused.status, refused.code), (400, "bad_publisher"));
        // Without governance the relay takes any agent a node lists.
        assert_eq!(
            machine().relay_acceptance(&manifest, &key(70).did(), at(0)),
            Ok(())
        );
    }

    #[test]
    fn restored_state_is_checked_again() {
        let mut hub = machine();
        let block: Arc<[u8]> = Arc::from(&b"kept"[..]);
        let cid = meridian_registry::ids::dag_cbor_cid(&block);
        assert!(hub.restore_block(&cid, block));
        let other = meridian_registry::ids::dag_cbor_cid(b"other");
        assert!(!hub.restore_block(&other, Arc::from(&b"rotten"[..])));
        assert_eq!(drain(&mut hub), [Output::ForgetBlock(other)]);
        let head = commit(&key(1), 1, 1);
        assert!(
            hub.restore_head(HeadKind::Head, &head, node(), at(0))
                .is_ok()
        );
        assert!(matches!(
            hub.restore_head(
                HeadKind::Head,
                &commit(&key(2), 1, 1),
                node(),
                at(2 * DAY as u64)
            ),
            Err(Refused::Head(crate::heads::HeadError::Expired { .. }))
        ));
        assert!(matches!(
            hub.restore_document(b"doc", at(0)),
            Err(Refused::NoGovernance)
        ));
        assert_eq!(hub.publishers(), 1);
    }
}
