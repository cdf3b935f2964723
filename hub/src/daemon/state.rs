//! The running hub: its cores behind locks, its disk, its upstreams (the region's nodes over
//! HTTP, other regions' hubs over the trunk) and the operations that combine them: answering a
//! sync request from the cache, taking in gossip, and relaying an A2A call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use meridian_registry::Cid;
use meridian_registry::ids::Blake3;
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::manifest::Manifest;
use meridian_registry::mst::{self, LookupStep};

use super::config::HubConfig;
use super::store::{HubStore, SledHubStore, StoreError, StoredHead};
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::cache::{BlockCache, Lookup, Miss};
use crate::deltas::{Ask, DeltaBoard};
use crate::egress::{AgentAnswer, Egress, HttpEgress};
use crate::heads::{HeadMirror, Offered, Upstream};
use crate::metrics::Metrics;
use crate::policy::{DocOutcome, PolicyMirror};
use crate::ratelimit::{Decision, Limiter, Rate};
use crate::routing::{Route, Router, Routes};
use crate::trunk::{AllowedKeys, Trunk, TrunkPeer};
use crate::wire::{Gossip, MESSAGE_BYTES_MAX, Request, Response};

/// Bytes of commit blocks one heads answer carries at most: a node reads at most 8 MiB of
/// `/v1/heads`, which is JSON with every block in base64 (4/3 of its size) beside governance
/// documents, so commits take at most half of it.
pub const HEADS_ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most CIDs one sync request may ask for.
pub const BLOCKS_PER_REQUEST_MAX: usize = crate::wire::REQUEST_BLOCKS_MAX;
/// Whether a gateway URL a node vouches for is one the hub will call: `http` or `https`, a
/// host, no user name or password, no query and no fragment (the hub appends `/api/v1/sync`;
/// a query would swallow that and point the hub at any path), at most 512 bytes.
pub fn gateway_url_acceptable(url: &str) -> bool {
    const GATEWAY_URL_BYTES_MAX: usize = 512;
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    url.len() <= GATEWAY_URL_BYTES_MAX
        && matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none()
        && parsed.fragment().is_none()
}

use meridian_sync::claims::source_message;

/// Blocks with their CIDs, as one delta answer.
type Blocks = Vec<(Cid, Arc<[u8]>)>;

struct CacheSlot {
    cache: BlockCache,
    waiters: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

/// The hub.
pub struct Hub {
    /// The configuration in force.
    pub config: HubConfig,
    /// The hub key (its trunk identity).
    pub key: Keypair,
    /// Its did:key.
    pub did: String,
    /// Metrics.
    pub metrics: Metrics,
    /// The trunk to other regions' hubs.
    pub trunk: Trunk,
    /// The hub keys the trunk accepts connections from.
    pub allowed: AllowedKeys,
    cache: Mutex<CacheSlot>,
    heads: Mutex<HeadMirror>,
    policy: Option<RwLock<PolicyMirror>>,
    /// Which publisher each hinted block belongs to (routing of cache misses).
    router: Mutex<Router>,
    /// Kept deltas and the fetches in flight; a waiting ask holds a oneshot receiver, woken
    /// when its sender is dropped.
    deltas: Mutex<DeltaBoard<tokio::sync::oneshot::Sender<()>>>,
    limiter: Mutex<Limiter>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    /// One permit per relayed call in progress (`relay.concurrent_max`).
    relays: Arc<tokio::sync::Semaphore>,
    store: Arc<dyn HubStore>,
    egress: Arc<dyn Egress>,
    /// The SSRF guard for agent endpoints (`relay.allow_private`, `egress.allow_cidrs`).
    guard: crate::relay::EgressGuard,
    changed: tokio::sync::watch::Sender<u64>,
    /// The wall clock (unix seconds), read only through this.
    pub clock: fn() -> i64,
    /// What the HTTP server counts (connections, refusals, timeouts), for `/metrics`.
    pub serve_counters: Arc<crate::serve::ServeCounters>,
    /// New publishers each gossip source may still introduce (without governance).
    new_publishers: Mutex<crate::heads::NewPublisherBudget>,
    started: Instant,
}

fn encode_upstream(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Node(url) => format!("node:{url}"),
        Upstream::Hub(region) => format!("hub:{region}"),
        Upstream::Unknown => String::new(),
    }
}

fn decode_upstream(text: &str) -> Upstream {
    if let Some(url) = text.strip_prefix("node:") {
        Upstream::Node(url.to_owned())
    } else if let Some(region) = text.strip_prefix("hub:") {
        Upstream::Hub(region.to_owned())
    } else {
        Upstream::Unknown
    }
}

/// Why a relayed call did not reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRefusal {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A stable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// For 429: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

impl RelayRefusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Why a gossip message was not taken in ([`Hub::gossip`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
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
    /// The document could not be kept.
    #[error("storing the document: {0}")]
    Store(StoreError),
    /// A lock was poisoned by a panic.
    #[error("hub state lock poisoned")]
    Poisoned,
}

/// What taking in a gossiped head did.
enum HeadOutcome {
    /// Kept (true when it is a new head), or nothing new.
    Kept(bool),
    /// It conflicts with the held head of its seq: this proof was kept.
    Equivocation(Vec<u8>),
}

/// What a hub is made of besides its way out: see [`Hub::assemble`].
pub struct HubParts {
    /// The configuration in force.
    pub config: HubConfig,
    /// The hub key.
    pub key: Keypair,
    /// Its store (cache, heads, governance documents); what it holds is reloaded.
    pub store: Arc<dyn HubStore>,
    /// The bound trunk endpoint (it also accepts the other hubs' connections).
    pub endpoint: quinn::Endpoint,
    /// The hub keys the trunk's server verifier accepts (kept equal to the hub directory).
    pub allowed: AllowedKeys,
    /// The wall clock, unix seconds.
    pub clock: fn() -> i64,
}

impl Hub {
    /// Opens the hub's store in `data`, reloads its cache, heads and governance documents, and
    /// binds nothing (the driver binds). `allowed` is the set the trunk's server verifier reads;
    /// the hub keeps it equal to the hub directory. Nodes and agents are reached over HTTP.
    pub fn open(
        config: HubConfig,
        key: Keypair,
        data: &std::path::Path,
        endpoint: quinn::Endpoint,
        allowed: AllowedKeys,
        clock: fn() -> i64,
    ) -> Result<Self> {
        let db = sled::open(data.join("hub.sled"))
            .with_context(|| format!("opening the hub store in {}", data.display()))?;
        let store = SledHubStore::new(db)
            .with_context(|| format!("opening the hub store in {}", data.display()))?;
        let egress = HttpEgress::new(config.egress_guard()?)?;
        Self::assemble(
            HubParts {
                config,
                key,
                store: Arc::new(store),
                endpoint,
                allowed,
                clock,
            },
            Arc::new(egress),
        )
    }

    /// A hub from its parts and a way out to nodes and agents (the simulations pass their
    /// own): reloads what `parts.store` holds, as [`Hub::open`] does.
    pub fn assemble(parts: HubParts, egress: Arc<dyn Egress>) -> Result<Self> {
        let HubParts {
            config,
            key,
            store,
            endpoint,
            allowed,
            clock,
        } = parts;
        let now = clock();
        let policy = if config.governance.root.is_empty() {
            None
        } else {
            let bytes = std::fs::read(&config.governance.root).with_context(|| {
                format!("config governance.root: reading {}", config.governance.root)
            })?;
            Some(RwLock::new(PolicyMirror::new(&bytes, now).map_err(
                |e| anyhow::anyhow!("config governance.root: {e}"),
            )?))
        };
        let (changed, _) = tokio::sync::watch::channel(0);
        let hub = Self {
            did: key.did(),
            trunk: Trunk::new(endpoint, key.clone()),
            key,
            metrics: Metrics::default(),
            allowed,
            cache: Mutex::new(CacheSlot {
                cache: BlockCache::new(config.hub.cache_bytes_max),
                waiters: HashMap::new(),
            }),
            heads: Mutex::new(HeadMirror::new(
                config.hub.publishers_max,
                config.hub.clock_skew_secs,
            )),
            policy,
            router: Mutex::new(Router::new()),
            deltas: Mutex::new(DeltaBoard::new()),
            limiter: Mutex::new(Limiter::new()),
            breakers: Mutex::new(BTreeMap::new()),
            relays: Arc::new(tokio::sync::Semaphore::new(config.relay.concurrent_max)),
            store,
            egress,
            guard: config.egress_guard()?,
            changed,
            clock,
            serve_counters: Arc::default(),
            new_publishers: Mutex::new(crate::heads::NewPublisherBudget::new(
                config.hub.new_publishers_per_source_per_minute,
                config.hub.publishers_per_source_max,
            )),
            started: Instant::now(),
            config,
        };
        hub.reload(now)?;
        hub.apply_directory();
        Ok(hub)
    }

    fn reload(&self, now: i64) -> Result<()> {
        let mut loaded = 0u64;
        {
            let mut slot = self.lock_cache()?;
            for (cid, block) in self.store.blocks()? {
                if slot.cache.preload(&cid, block).is_ok() {
                    loaded += 1;
                } else {
                    self.forget_block(&cid);
                }
            }
            for cid in slot.cache.take_evicted() {
                self.forget_block(&cid);
            }
        }
        for block in self.store.governance()? {
            if let Some(policy) = &self.policy
                && let Ok(mut policy) = policy.write()
                && let Err(error) = policy.offer(&block, now)
            {
                tracing::warn!(%error, "ignoring a stored governance document");
            }
        }
        let mut heads = self.lock_heads()?;
        for stored in self.store.heads()? {
            let upstream = decode_upstream(&stored.upstream);
            // What no longer verifies (an expired head, say: nodes would refuse it anyway) is
            // left out of the mirror.
            let kept = match stored.tag {
                b'E' => heads
                    .offer_equivocation(&stored.block)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                b'H' => heads
                    .offer(&stored.block, upstream, now)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                other => Err(format!("unknown entry kind {other}")),
            };
            if let Err(why) = kept {
                tracing::debug!(%why, "a stored head left out");
            }
        }
        tracing::info!(
            blocks = loaded,
            publishers = heads.len(),
            "hub state reloaded"
        );
        Ok(())
    }

    /// Counts and logs a store failure that the request in progress does not report (a cache
    /// write, an eviction): the hub keeps serving from memory, and the operator sees it in
    /// `meridian_hub_store_errors_total`.
    fn store_failed(&self, what: &str, error: &StoreError) {
        self.metrics.count("meridian_hub_store_errors_total", 1);
        tracing::error!(%error, what, "hub store write failed");
    }

    fn lock_cache(&self) -> Result<std::sync::MutexGuard<'_, CacheSlot>> {
        self.cache
            .lock()
            .map_err(|_| anyhow::anyhow!("cache lock poisoned"))
    }

    fn lock_heads(&self) -> Result<std::sync::MutexGuard<'_, HeadMirror>> {
        self.heads
            .lock()
            .map_err(|_| anyhow::anyhow!("heads lock poisoned"))
    }

    /// Flushes the store.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()?;
        Ok(())
    }

    /// Seconds since the hub started, for the limiter and breakers.
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A receiver that sees the change counter grow whenever a head or governance document
    /// arrives (long-polls wait on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Sets the trunk's peers and the keys it accepts from the policy's hub directory and the
    /// `[trunk] peers` overrides (which win for their region).
    pub fn apply_directory(&self) {
        let mut peers: BTreeMap<String, TrunkPeer> = BTreeMap::new();
        if let Some(policy) = &self.policy
            && let Ok(policy) = policy.read()
            && let Some(bundle) = policy.policy()
        {
            for hub in &bundle.body.hubs {
                if hub.region == self.config.hub.region {
                    continue;
                }
                // The directory's address is the hub's trunk address ("host:port").
                match hub.address.parse() {
                    Ok(addr) => {
                        peers.insert(
                            hub.region.clone(),
                            TrunkPeer {
                                region: hub.region.clone(),
                                addr,
                                key: hub.key,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(region = %hub.region, address = %hub.address, %error, "hub directory address is not host:port")
                    }
                }
            }
        }
        for peer in self.config.trunk_peers().unwrap_or_default() {
            if peer.region != self.config.hub.region {
                peers.insert(
                    peer.region.clone(),
                    TrunkPeer {
                        region: peer.region,
                        addr: peer.addr,
                        key: peer.key,
                    },
                );
            }
        }
        if let Ok(mut allowed) = self.allowed.write() {
            *allowed = peers.values().map(|p| *p.key.as_bytes()).collect();
        }
        self.metrics
            .set_gauge("meridian_hub_trunk_peers", peers.len() as u64);
        self.trunk.set_peers(peers.into_values().collect());
    }

    /// The region a hub key serves, if it is a trunk peer.
    pub fn region_of(&self, key: &PublicKey) -> Option<String> {
        let regions = self.trunk.regions();
        self.config
            .trunk_peers()
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.key == *key)
            .map(|p| p.region)
            .or_else(|| {
                let policy = self.policy.as_ref()?.read().ok()?;
                policy
                    .policy()?
                    .body
                    .hubs
                    .iter()
                    .find(|h| h.key == *key)
                    .map(|h| h.region.clone())
            })
            .filter(|r| regions.contains(r))
    }

    // ------------------------------------------------------------ blocks

    fn forget_block(&self, cid: &Cid) {
        if let Err(error) = self.store.forget_block(cid) {
            self.store_failed("forgetting an evicted block", &error);
        }
    }

    fn persist_block(&self, cid: &Cid, block: &[u8]) {
        if let Err(error) = self.store.put_block(cid, block) {
            self.store_failed("keeping a cached block", &error);
        }
    }

    fn hint(&self, publisher: &str, cids: impl IntoIterator<Item = Cid>) {
        if let Ok(mut router) = self.router.lock() {
            router.hint(publisher, cids);
        }
    }

    /// Records a block fetched upstream: checked against its CID, cached, persisted, its links
    /// hinted to the same publisher; waiters woken.
    fn store_fetched(&self, cid: &Cid, block: Arc<[u8]>, publisher: Option<&str>) -> bool {
        let (result, woken, evicted, held) = match self.lock_cache() {
            Ok(mut slot) => {
                let held = slot.cache.contains(cid);
                let (result, woken) = slot.cache.fetched(cid, block.clone());
                let evicted = slot.cache.take_evicted();
                let senders: Vec<_> = woken
                    .iter()
                    .filter_map(|id| slot.waiters.remove(id))
                    .collect();
                (result, senders, evicted, held)
            }
            Err(_) => return false,
        };
        for sender in woken {
            let _ = sender.send(());
        }
        for gone in evicted {
            self.forget_block(&gone);
        }
        match result {
            Ok(()) if held => true,
            Ok(()) => {
                self.persist_block(cid, &block);
                if let Some(publisher) = publisher
                    && let Ok(links) = mst::node_links::<Blake3>(cid, block)
                {
                    self.hint(
                        publisher,
                        links
                            .subtrees
                            .into_iter()
                            .chain(links.values.into_iter().map(|(_, v)| v)),
                    );
                }
                true
            }
            Err(error) => {
                self.metrics.count("meridian_hub_blocks_rejected_total", 1);
                tracing::warn!(%cid, %error, "upstream served a block that does not match its CID");
                false
            }
        }
    }

    fn fetch_failed(&self, cid: &Cid) {
        if let Ok(mut slot) = self.lock_cache() {
            let woken = slot.cache.fetch_failed(cid);
            for id in woken {
                if let Some(sender) = slot.waiters.remove(&id) {
                    let _ = sender.send(());
                }
            }
        }
    }

    /// Where to fetch `cids` from ([`Router::route`] over the mirrored heads and the trunk's
    /// regions).
    fn route(&self, cids: Vec<Cid>) -> (Vec<Route>, Route) {
        let (Ok(router), Ok(heads)) = (self.router.lock(), self.heads.lock()) else {
            return (Vec::new(), (Vec::new(), cids));
        };
        let Routes { known, unknown } =
            router.route(cids, &heads, &self.trunk.regions(), (self.clock)());
        (known, unknown)
    }

    /// Blocks by CID: from the cache, else fetched upstream (one fetch per CID however many
    /// ask at once), each checked against its CID before it is cached or returned. Absent ones
    /// are left out.
    pub async fn blocks(&self, cids: &[Cid]) -> Vec<(Cid, Arc<[u8]>)> {
        let mut found = Vec::new();
        let mut to_fetch = Vec::new();
        let mut waits = Vec::new();
        if let Ok(mut slot) = self.lock_cache() {
            for cid in cids {
                match slot.cache.lookup(cid) {
                    Lookup::Hit(block) => found.push((*cid, block)),
                    Lookup::Miss(Miss::Fetch) => to_fetch.push(*cid),
                    Lookup::Miss(Miss::Wait(id)) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        slot.waiters.insert(id, tx);
                        waits.push((*cid, rx));
                    }
                    Lookup::Miss(Miss::Busy) => {}
                }
            }
        }
        let (groups, unrouted) = self.route(to_fetch);
        for (upstreams, mut remaining) in groups.into_iter().chain([unrouted]) {
            for (upstream, publisher) in upstreams {
                if remaining.is_empty() {
                    break;
                }
                let got = self
                    .fetch_from(&upstream, publisher.as_deref(), &remaining)
                    .await;
                remaining.retain(|cid| match got.iter().find(|(c, _)| c == cid) {
                    Some((_, block)) => {
                        found.push((*cid, block.clone()));
                        false
                    }
                    None => true,
                });
            }
            for cid in remaining {
                self.fetch_failed(&cid);
            }
        }
        for (cid, rx) in waits {
            let _ = tokio::time::timeout(
                Duration::from_secs(self.config.hub.upstream_timeout_secs),
                rx,
            )
            .await;
            if let Some(block) = self
                .lock_cache()
                .ok()
                .and_then(|mut s| s.cache.cached(&cid))
            {
                found.push((cid, block));
            }
        }
        found
    }

    /// Asks one upstream for blocks; returns those that matched their CIDs (and caches them).
    async fn fetch_from(
        &self,
        upstream: &Upstream,
        publisher: Option<&str>,
        cids: &[Cid],
    ) -> Vec<(Cid, Arc<[u8]>)> {
        let mut got = Vec::new();
        for chunk in cids.chunks(BLOCKS_PER_REQUEST_MAX) {
            let request = Request::Blocks(chunk.to_vec());
            match self.call_upstream(upstream, &request).await {
                Ok(Response::Blocks(blocks)) => {
                    for (cid, block) in blocks {
                        if chunk.contains(&cid)
                            && self.store_fetched(&cid, block.clone(), publisher)
                        {
                            got.push((cid, block));
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(upstream = %encode_upstream(upstream), %error, "block fetch failed");
                }
            }
        }
        got
    }

    fn breaker_allows(&self, name: &str) -> bool {
        let Ok(mut breakers) = self.breakers.lock() else {
            return true;
        };
        let config = BreakerConfig {
            failures_to_open: self.config.hub.breaker_failures.max(1),
            open_for: Duration::from_secs(self.config.hub.breaker_open_secs),
        };
        let breaker = breakers
            .entry(name.to_owned())
            .or_insert_with(|| Breaker::new(config));
        let (allowed, change) = breaker.allow(self.elapsed());
        if let Some(state) = change {
            self.breaker_changed(name, state);
        }
        allowed
    }

    fn breaker_report(&self, name: &str, ok: bool) {
        let now = self.elapsed();
        let change = self.breakers.lock().ok().and_then(|mut breakers| {
            let breaker = breakers.get_mut(name)?;
            if ok {
                breaker.success()
            } else {
                breaker.failure(now)
            }
        });
        if let Some(state) = change {
            self.breaker_changed(name, state);
        }
    }

    fn breaker_changed(&self, name: &str, state: BreakerState) {
        tracing::info!(
            upstream = name,
            state = state.as_str(),
            "circuit breaker changed state"
        );
        self.metrics.count(
            &format!(
                "meridian_hub_breaker_transitions_total{{upstream=\"{name}\",state=\"{}\"}}",
                state.as_str()
            ),
            1,
        );
        let open = matches!(state, BreakerState::Open { .. });
        self.metrics.set_gauge(
            &format!("meridian_hub_breaker_open{{upstream=\"{name}\"}}"),
            u64::from(open),
        );
    }

    /// Sends a sync request to an upstream, through its breaker, and decodes the answer.
    pub async fn call_upstream(
        &self,
        upstream: &Upstream,
        request: &Request,
    ) -> Result<Response, String> {
        let name = encode_upstream(upstream);
        if !self.breaker_allows(&name) {
            return Err(format!("circuit open for {name}"));
        }
        let started = Instant::now();
        let bytes = request.encode();
        let result: Result<Vec<u8>, String> = match upstream {
            Upstream::Node(url) => {
                let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
                match tokio::time::timeout(timeout, self.egress.node_sync(url, bytes)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("{url} did not answer in {timeout:?}")),
                }
            }
            Upstream::Hub(region) => {
                let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
                match tokio::time::timeout(timeout, self.trunk.sync(region, &bytes)).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("hub of {region} did not answer in {timeout:?}")),
                }
            }
            Upstream::Unknown => Err("no upstream known".into()),
        };
        let kind = if matches!(upstream, Upstream::Hub(_)) {
            "hub"
        } else {
            "node"
        };
        self.metrics.observe(
            &format!("meridian_hub_upstream_seconds{{kind=\"{kind}\"}}"),
            started.elapsed(),
        );
        self.metrics.count(
            &format!("meridian_hub_upstream_calls_total{{kind=\"{kind}\"}}"),
            1,
        );
        let decoded = result.and_then(|bytes| {
            if kind == "hub" {
                self.metrics
                    .count("meridian_hub_cross_region_bytes_total", bytes.len() as u64);
            }
            Response::decode(&bytes, MESSAGE_BYTES_MAX).map_err(|e| e.to_string())
        });
        self.breaker_report(&name, decoded.is_ok());
        decoded
    }

    /// Copies the cache's statistics into the metrics' gauges (at scrape time: the hot path
    /// of serving a block does not pay for it).
    pub fn publish_cache_metrics(&self) {
        self.metrics.set_gauge(
            "meridian_hub_relays_in_progress",
            self.relays_in_progress() as u64,
        );
        if let Ok(slot) = self.cache.lock() {
            let stats = slot.cache.stats();
            self.metrics
                .set_gauge("meridian_hub_cache_hits", stats.hits);
            self.metrics
                .set_gauge("meridian_hub_cache_misses", stats.misses);
            self.metrics
                .set_gauge("meridian_hub_cache_bytes_served", stats.bytes_served);
            self.metrics
                .set_gauge("meridian_hub_cache_bytes", stats.bytes);
            self.metrics
                .set_gauge("meridian_hub_cache_blocks", stats.blocks);
            self.metrics
                .set_gauge("meridian_hub_cache_evicted", stats.evicted);
            self.metrics
                .set_gauge("meridian_hub_cache_rejected", stats.rejected);
        }
    }

    // ------------------------------------------------------------ sync answers

    /// Every head, governance document and proof the hub holds, as a sync `Heads` answer.
    ///
    /// Bounded by [`HEADS_ANSWER_BYTES_MAX`] (what a node reads of `/v1/heads`, base64 and all):
    /// heads past it are left out, counted in `meridian_hub_heads_left_out`, and reach nodes
    /// by gossip instead.
    pub fn heads_response(&self) -> Response {
        let now = (self.clock)();
        let (commits, equivocations) = match self.heads.lock() {
            Ok(heads) => {
                let mut used = 0usize;
                let mut commits = Vec::new();
                let all = heads.all(now);
                for head in &all {
                    used += head.block.len();
                    if used > HEADS_ANSWER_BYTES_MAX {
                        break;
                    }
                    commits.push(head.block.to_vec());
                }
                self.metrics.set_gauge(
                    "meridian_hub_heads_left_out",
                    (all.len() - commits.len()) as u64,
                );
                (commits, heads.equivocations().cloned().collect())
            }
            Err(_) => (Vec::new(), Vec::new()),
        };
        Response::Heads {
            commits,
            governance: self.governance_documents(),
            equivocations,
        }
    }

    /// The governance documents in order (empty without a policy mirror).
    pub fn governance_documents(&self) -> Vec<Vec<u8>> {
        self.policy
            .as_ref()
            .and_then(|p| p.read().ok().map(|p| p.documents()))
            .unwrap_or_default()
    }

    /// The policy mirror, if governance is configured.
    pub fn policy(&self) -> Option<&RwLock<PolicyMirror>> {
        self.policy.as_ref()
    }

    /// Answers a sync wire request (from a node over HTTP or a hub over the trunk).
    pub async fn answer(&self, bytes: &[u8]) -> Response {
        let request = match Request::decode(bytes, MESSAGE_BYTES_MAX) {
            Ok(request) => request,
            Err(error) => return Response::Refused(format!("bad request: {error}")),
        };
        match request {
            Request::Heads => self.heads_response(),
            Request::Blocks(cids) => {
                if cids.len() > BLOCKS_PER_REQUEST_MAX {
                    return Response::Refused(format!(
                        "{} blocks asked for; at most {BLOCKS_PER_REQUEST_MAX} per request",
                        cids.len()
                    ));
                }
                let mut blocks = self.blocks(&cids).await;
                let budget = MESSAGE_BYTES_MAX.saturating_sub(1024);
                let mut used = 0;
                blocks.retain(|(_, b)| {
                    used += b.len() + 64;
                    used <= budget
                });
                Response::Blocks(blocks)
            }
            Request::Delta { from, to } => self.delta(from, to).await,
        }
    }

    fn kept_delta(&self, from: Cid, to: Cid) -> Option<Blocks> {
        self.deltas.lock().ok()?.kept(from, to)
    }

    /// A delta between two commits of a mirrored publisher: kept, else asked upstream once
    /// however many ask at once ([`DeltaBoard`]: the region's nodes all ask for the same delta
    /// when a head arrives: one cross-region transfer, not one per node).
    async fn delta(&self, from: Cid, to: Cid) -> Response {
        let mut receiver = None;
        let ask = match self.deltas.lock() {
            Ok(mut board) => board.ask(from, to, || {
                let (tx, rx) = tokio::sync::oneshot::channel();
                receiver = Some(rx);
                tx
            }),
            Err(_) => return Response::Refused("hub state lock poisoned".into()),
        };
        match ask {
            Ask::Kept(blocks) => return Response::Blocks(blocks),
            Ask::Wait => {
                if let Some(rx) = receiver {
                    let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
                    let _ = tokio::time::timeout(timeout, rx).await;
                }
                return match self.kept_delta(from, to) {
                    Some(blocks) => Response::Blocks(blocks),
                    None => Response::Refused(format!(
                        "the delta {from} -> {to} could not be fetched upstream"
                    )),
                };
            }
            Ask::Fetch => {}
        }
        // Whatever happens to this fetch (even this future being dropped), the waiters wake.
        struct Inflight<'a>(&'a Hub, (Cid, Cid));
        impl Drop for Inflight<'_> {
            fn drop(&mut self) {
                if let Ok(mut board) = self.0.deltas.lock() {
                    board.failed(self.1.0, self.1.1);
                }
            }
        }
        let _inflight = Inflight(self, (from, to));
        let head = self.heads.lock().ok().and_then(|h| {
            h.by_cid(&to)
                .map(|h| (h.upstream.clone(), h.publisher.clone()))
        });
        let Some((upstream, publisher)) = head else {
            return Response::Refused(format!("commit {to} is not a head this hub mirrors"));
        };
        match self
            .call_upstream(&upstream, &Request::Delta { from, to })
            .await
        {
            Ok(Response::Blocks(blocks)) => {
                let mut kept = Vec::with_capacity(blocks.len());
                for (cid, block) in blocks {
                    // Every block is checked against its CID and cached (a held one is kept).
                    if !self.store_fetched(&cid, block.clone(), Some(&publisher)) {
                        return Response::Refused("upstream served a wrong block".into());
                    }
                    kept.push((cid, block));
                }
                if let Ok(mut board) = self.deltas.lock() {
                    // Dropping the woken senders wakes the waiting asks.
                    board.fetched(from, to, kept.clone());
                }
                Response::Blocks(kept)
            }
            Ok(other) => other,
            Err(error) => Response::Refused(error),
        }
    }

    // ------------------------------------------------------------ gossip

    /// Takes in a gossip message: a head (with where its blocks are), a governance document or
    /// an equivocation proof. What is new is kept, persisted, announced to long-polls and, when
    /// it came from this region, sent on to the other regions' hubs. Returns whether it was new.
    pub async fn gossip(&self, bytes: &[u8], upstream: Upstream) -> Result<bool, GossipError> {
        self.gossip_from(bytes, upstream, "unknown").await
    }

    /// [`Hub::gossip`] from a node at client address `source`, whose budget of new publishers
    /// a head of an unknown publisher takes from (without governance).
    pub async fn gossip_from(
        &self,
        bytes: &[u8],
        upstream: Upstream,
        source: &str,
    ) -> Result<bool, GossipError> {
        let message =
            Gossip::decode(bytes, crate::wire::GOSSIP_BYTES_MAX).map_err(GossipError::Malformed)?;
        let now = (self.clock)();
        let local = !matches!(upstream, Upstream::Hub(_));
        let new = match &message {
            Gossip::Head(block) => match self.gossiped_head(block, upstream, local, source, now)? {
                HeadOutcome::Kept(new) => new,
                // A proof is announced and forwarded as itself, not as the head that made it.
                HeadOutcome::Equivocation(proof) => {
                    self.notify();
                    if local {
                        self.forward(&Gossip::Equivocation(proof).encode()).await;
                    }
                    return Ok(true);
                }
            },
            Gossip::Governance(block) => self.gossiped_document(block, now)?,
            Gossip::Equivocation(block) => self.gossiped_proof(block)?,
        };
        if new {
            self.notify();
            if local {
                self.forward(bytes).await;
            }
        }
        Ok(new)
    }

    /// A gossiped head: admitted, mirrored and kept when new or when it tells where the
    /// publisher's blocks are.
    fn gossiped_head(
        &self,
        block: &[u8],
        upstream: Upstream,
        local: bool,
        source: &str,
        now: i64,
    ) -> Result<HeadOutcome, GossipError> {
        if let Err(why) = self.admit_head(block, local, source, now) {
            self.metrics
                .count("meridian_hub_heads_total{outcome=\"not_admitted\"}", 1);
            return Err(why);
        }
        let offered = self.heads.lock().map_err(|_| GossipError::Poisoned)?.offer(
            block,
            upstream.clone(),
            now,
        );
        // The mirror has checked the block; what is kept needs its publisher.
        let commit =
            || meridian_registry::commit::Commit::decode(block).map_err(GossipError::Commit);
        match offered {
            Ok(Offered::New) => {
                let commit = commit()?;
                let publisher = commit.body.publisher.to_did();
                self.hint(&publisher, [commit.body.data]);
                self.persist_head(&publisher, &upstream, b'H', block);
                self.metrics
                    .count("meridian_hub_heads_total{outcome=\"new\"}", 1);
                Ok(HeadOutcome::Kept(true))
            }
            Ok(Offered::SourceLearnt) => {
                let publisher = commit()?.body.publisher.to_did();
                self.persist_head(&publisher, &upstream, b'H', block);
                Ok(HeadOutcome::Kept(false))
            }
            Ok(Offered::Duplicate | Offered::Stale) => Ok(HeadOutcome::Kept(false)),
            Ok(Offered::Equivocation(proof)) => {
                self.persist_head(
                    &format!("{}#proof", commit()?.body.publisher.to_did()),
                    &Upstream::Unknown,
                    b'E',
                    &proof,
                );
                self.metrics.count("meridian_hub_equivocations_total", 1);
                Ok(HeadOutcome::Equivocation(proof))
            }
            Err(error) => {
                self.metrics
                    .count("meridian_hub_heads_total{outcome=\"refused\"}", 1);
                Err(GossipError::Head(error))
            }
        }
    }

    /// A gossiped governance document, verified by the policy mirror and kept when new.
    fn gossiped_document(&self, block: &[u8], now: i64) -> Result<bool, GossipError> {
        let Some(policy) = &self.policy else {
            return Err(GossipError::NoGovernance);
        };
        let outcome = policy
            .write()
            .map_err(|_| GossipError::Poisoned)?
            .offer(block, now)
            .map_err(GossipError::Document)?;
        if outcome == DocOutcome::New {
            // Kept in arrival order, which is the order to apply them in.
            self.store.put_governance(block).map_err(|error| {
                self.store_failed("keeping a governance document", &error);
                GossipError::Store(error)
            })?;
            self.apply_directory();
        }
        Ok(outcome == DocOutcome::New)
    }

    /// A gossiped equivocation proof, verified and kept when new.
    fn gossiped_proof(&self, block: &[u8]) -> Result<bool, GossipError> {
        let new = self
            .heads
            .lock()
            .map_err(|_| GossipError::Poisoned)?
            .offer_equivocation(block)
            .map_err(GossipError::Proof)?;
        if new {
            let publisher = meridian_registry::commit::EquivocationProof::decode(block)
                .ok()
                .and_then(|p| p.verify().ok())
                .map(|(k, _)| k.to_did())
                .unwrap_or_default();
            self.persist_head(
                &format!("{publisher}#proof"),
                &Upstream::Unknown,
                b'E',
                block,
            );
        }
        Ok(new)
    }

    fn persist_head(&self, key: &str, upstream: &Upstream, tag: u8, block: &[u8]) {
        let head = StoredHead {
            upstream: encode_upstream(upstream),
            tag,
            block: block.to_vec(),
        };
        if let Err(error) = self.store.put_head(key, &head) {
            self.store_failed("keeping a head", &error);
        }
    }

    /// Sends a gossip message to every other region's hub (concurrently, best effort).
    async fn forward(&self, bytes: &[u8]) {
        let regions = self.trunk.regions();
        let sends = regions.iter().map(|region| async move {
            if !self.breaker_allows(&format!("hub:{region}")) {
                return;
            }
            let result = tokio::time::timeout(
                Duration::from_secs(self.config.hub.upstream_timeout_secs),
                self.trunk.gossip(region, bytes),
            )
            .await;
            let ok = matches!(result, Ok(Ok(_)));
            self.breaker_report(&format!("hub:{region}"), ok);
            if ok {
                self.metrics
                    .count("meridian_hub_cross_region_bytes_total", bytes.len() as u64);
            } else {
                tracing::debug!(%region, "could not forward gossip to a hub");
            }
        });
        futures_util::future::join_all(sends).await;
    }

    /// Checks a node's claim that its gateway at `url` serves the blocks of `commit_block`:
    /// the claim must be signed by the commit's publisher, and the URL must be a plain gateway
    /// URL ([`gateway_url_acceptable`]). Where it points is checked by the SSRF guard when the
    /// hub calls it.
    pub fn vouched_source(&self, commit_block: &[u8], url: &str, sig_b64: &str) -> Upstream {
        let Ok(commit) = meridian_registry::commit::Commit::decode(commit_block) else {
            return Upstream::Unknown;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64.trim()) else {
            return Upstream::Unknown;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
            return Upstream::Unknown;
        };
        let cid = meridian_registry::ids::dag_cbor_cid(commit_block);
        match commit
            .body
            .publisher
            .verify(&source_message(url, &cid), &sig)
        {
            Ok(()) if gateway_url_acceptable(url) => Upstream::Node(url.to_owned()),
            _ => Upstream::Unknown,
        }
    }

    // ------------------------------------------------------------ relay

    /// A place for one relayed call, held until its answer has streamed out, or a refusal
    /// (503, retry in a second) when `relay.concurrent_max` calls are in progress.
    pub fn relay_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RelayRefusal> {
        match self.relays.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) => {
                self.metrics
                    .count("meridian_hub_relays_refused_total{reason=\"busy\"}", 1);
                Err(RelayRefusal {
                    retry_after: Some(1),
                    ..RelayRefusal::new(
                        503,
                        "busy",
                        format!(
                            "{} relayed calls are in progress, the most this hub takes",
                            self.config.relay.concurrent_max
                        ),
                    )
                })
            }
        }
    }

    /// Whether the hub keeps a head in `block`: with governance, only of a node the policy
    /// admits ([`crate::policy::PolicyMirror::admits_node`]); without, a publisher it does not
    /// mirror yet takes one from its source's budget of new publishers (heads relayed by other
    /// hubs, which are pinned to the policy's directory, take none).
    fn admit_head(
        &self,
        block: &[u8],
        local: bool,
        source: &str,
        now: i64,
    ) -> Result<(), GossipError> {
        let commit =
            meridian_registry::commit::Commit::decode(block).map_err(GossipError::Commit)?;
        let publisher = commit.body.publisher.to_did();
        if let Some(policy) = &self.policy {
            return policy
                .read()
                .map_err(|_| GossipError::Poisoned)?
                .admits_node(&publisher, now)
                .map_err(GossipError::NodeNotAdmitted);
        }
        let known = self
            .heads
            .lock()
            .map_err(|_| GossipError::Poisoned)?
            .get(&publisher)
            .is_some();
        if known || !local {
            return Ok(());
        }
        self.new_publishers
            .lock()
            .map_err(|_| GossipError::Poisoned)?
            .take(source, now)
            .map_err(GossipError::Budget)
    }

    /// Anti-entropy with the other regions' hubs: asks each for every head, governance
    /// document and equivocation proof it holds and takes in what is new here, so nothing
    /// published while a trunk was down (or before this hub started) stays stranded. Dials a
    /// region whose trunk is down. Returns how many documents and heads were new.
    pub async fn anti_entropy(&self) -> usize {
        let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
        let request = Request::Heads.encode();
        let mut learned = 0;
        for region in self.trunk.regions() {
            let answer =
                match tokio::time::timeout(timeout, self.trunk.sync(&region, &request)).await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(error)) => {
                        tracing::debug!(%region, %error, "anti-entropy: hub unreachable");
                        continue;
                    }
                    Err(_) => {
                        tracing::debug!(%region, "anti-entropy: hub did not answer in time");
                        continue;
                    }
                };
            let Ok(Response::Heads {
                commits,
                governance,
                equivocations,
            }) = Response::decode(&answer, MESSAGE_BYTES_MAX)
            else {
                tracing::debug!(%region, "anti-entropy: not a heads answer");
                continue;
            };
            // Governance first: the policy decides which heads this hub admits.
            let messages = governance
                .into_iter()
                .map(Gossip::Governance)
                .chain(commits.into_iter().map(Gossip::Head))
                .chain(equivocations.into_iter().map(Gossip::Equivocation));
            for message in messages {
                let upstream = Upstream::Hub(region.clone());
                if let Ok(true) = self.gossip_from(&message.encode(), upstream, &region).await {
                    learned += 1;
                }
            }
        }
        if learned > 0 {
            self.metrics
                .count("meridian_hub_anti_entropy_learned_total", learned as u64);
            tracing::info!(learned, "anti-entropy: took in what other hubs held");
        }
        learned
    }

    /// What the operator should know is probably wrong (also logged at start): a governance
    /// root without a policy in force, so the hub admits no heads and knows no other region.
    pub fn warnings(&self) -> Vec<String> {
        let waiting = self
            .policy
            .as_ref()
            .is_some_and(|policy| policy.read().is_ok_and(|policy| policy.policy().is_none()));
        if waiting {
            vec!["governance.root is set but no policy is in force yet: the hub admits no heads and has no hub directory until one arrives (a node it serves passes it on, or `meridian hub govern`)".to_owned()]
        } else {
            Vec::new()
        }
    }

    /// Whether a node may name its callers' organisation: the signed policy admits it
    /// (`allow_node_keys` or a `node.verified` attestation) or the operator listed it in
    /// `relay.trusted_nodes`. Mirroring a node's head is not enough: anyone can push one.
    pub fn trusts_node(&self, did: &str) -> bool {
        let now = (self.clock)();
        self.config
            .relay
            .trusted_nodes
            .split(',')
            .any(|listed| listed.trim() == did)
            || self.policy.as_ref().is_some_and(|policy| {
                policy
                    .read()
                    .is_ok_and(|policy| policy.admits_node(did, now).is_ok())
            })
    }

    /// Relayed calls in progress.
    pub fn relays_in_progress(&self) -> usize {
        self.config.relay.concurrent_max - self.relays.available_permits()
    }

    /// Applies the rate tier of `scope` (`org:ID` or `region:NAME`, from the policy or the
    /// default) and returns a refusal when it is over.
    pub fn rate_check(&self, scope: &str) -> Result<(), RelayRefusal> {
        let default = Rate {
            per_second: self.config.relay.default_rps,
            burst: self.config.relay.default_burst,
        };
        let rate = self
            .policy
            .as_ref()
            .and_then(|p| p.read().ok())
            .and_then(|p| {
                p.policy()?
                    .body
                    .rate_limits
                    .iter()
                    .find(|t| t.scope == scope)
                    .map(|t| Rate {
                        per_second: t.requests_per_second,
                        burst: t.burst,
                    })
            })
            .unwrap_or(default);
        let decision = self
            .limiter
            .lock()
            .map(|mut l| l.check(scope, rate, self.elapsed()))
            .unwrap_or(Decision::Allow);
        match decision {
            Decision::Allow => {
                self.metrics
                    .count("meridian_hub_limiter_total{decision=\"allow\"}", 1);
                Ok(())
            }
            Decision::Wait(wait) => {
                self.metrics
                    .count("meridian_hub_limiter_total{decision=\"limited\"}", 1);
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
    fn relay_acceptance(&self, manifest: &Manifest, publisher: &str) -> Result<(), RelayRefusal> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let publisher = meridian_registry::keys::PublicKey::from_did(publisher).map_err(|e| {
            RelayRefusal::new(
                400,
                "bad_publisher",
                format!("publisher `{publisher}`: {e}"),
            )
        })?;
        let now = (self.clock)();
        let verdict = policy
            .read()
            .map_err(|_| RelayRefusal::new(500, "internal", "policy lock poisoned"))?
            .accepts(manifest, &publisher, now);
        verdict.map_err(|reasons| {
            self.metrics.count(
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

    /// Finds an agent's manifest in its publisher's snapshot, reading tree nodes through the
    /// cache (every node checked against its CID, the manifest's signature checked).
    pub async fn resolve_agent(
        &self,
        publisher: &str,
        org: &str,
        agent: &str,
    ) -> Result<Manifest, RelayRefusal> {
        let not_found = |why: String| RelayRefusal::new(404, "unknown_agent", why);
        let data = self
            .heads
            .lock()
            .ok()
            .and_then(|h| h.get(publisher).map(|h| h.data))
            .ok_or_else(|| not_found(format!("this hub mirrors no head of {publisher}")))?;
        self.hint(publisher, [data]);
        let key = format!("{org}/{agent}");
        let mut at = data;
        for _ in 0..64 {
            let block = self
                .blocks(&[at])
                .await
                .into_iter()
                .next()
                .map(|(_, b)| b)
                .ok_or_else(|| {
                    RelayRefusal::new(
                        502,
                        "upstream_unavailable",
                        format!("tree node {at} unavailable"),
                    )
                })?;
            match mst::lookup_step::<Blake3>(&at, block, key.as_bytes()) {
                Ok(LookupStep::Found(manifest_cid)) => {
                    let block = self
                        .blocks(&[manifest_cid])
                        .await
                        .into_iter()
                        .next()
                        .map(|(_, b)| b)
                        .ok_or_else(|| {
                            RelayRefusal::new(502, "upstream_unavailable", "manifest unavailable")
                        })?;
                    let manifest = Manifest::decode(&block)
                        .map_err(|e| RelayRefusal::new(502, "bad_manifest", e.to_string()))?;
                    manifest
                        .verify_signature()
                        .map_err(|e| RelayRefusal::new(502, "bad_manifest", e.to_string()))?;
                    if manifest.body.agent_id != key {
                        return Err(RelayRefusal::new(
                            502,
                            "bad_manifest",
                            "manifest names another agent",
                        ));
                    }
                    self.relay_acceptance(&manifest, publisher)?;
                    if manifest.is_removal() {
                        return Err(RelayRefusal::new(
                            410,
                            "agent_removed",
                            format!(
                                "`{key}` was removed by its organisation as of {}",
                                manifest.body.updated_at
                            ),
                        ));
                    }
                    return Ok(manifest);
                }
                Ok(LookupStep::Descend(next)) => at = next,
                Ok(LookupStep::Absent) => {
                    return Err(not_found(format!("{publisher} lists no agent `{key}`")));
                }
                Err(error) => {
                    return Err(RelayRefusal::new(502, "bad_tree", error.to_string()));
                }
            }
        }
        Err(RelayRefusal::new(
            502,
            "bad_tree",
            "tree deeper than 64 levels",
        ))
    }

    /// Calls an agent of this region: the endpoint its verified manifest names, through the
    /// SSRF guard and the endpoint's breaker.
    pub async fn call_agent(
        &self,
        manifest: &Manifest,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<AgentAnswer, RelayRefusal> {
        let url = crate::relay::jsonrpc_url(manifest)
            .map_err(|why| RelayRefusal::new(502, "bad_agent_endpoint", why.to_string()))?;
        if let Some(why) = self.guard.url_refusal(&url) {
            return Err(RelayRefusal::new(
                403,
                "private_address",
                format!(
                    "the agent's endpoint: {why} (set relay.allow_private or egress.allow_cidrs on the hub of the agent's region)"
                ),
            ));
        }
        let breaker = format!("agent:{}", url.host_str().unwrap_or("?"));
        if !self.breaker_allows(&breaker) {
            return Err(RelayRefusal::new(
                503,
                "circuit_open",
                format!("{breaker} failed repeatedly; not called for a while"),
            ));
        }
        let timeout = Duration::from_secs(self.config.relay.timeout_secs);
        let started = Instant::now();
        let result =
            tokio::time::timeout(timeout, self.egress.agent_call(url.as_str(), headers, body))
                .await;
        self.metrics.observe(
            "meridian_hub_upstream_seconds{kind=\"agent\"}",
            started.elapsed(),
        );
        match result {
            Err(_) => {
                self.breaker_report(&breaker, false);
                Err(RelayRefusal::new(
                    504,
                    "agent_timeout",
                    format!("no answer within {timeout:?}"),
                ))
            }
            Ok(Err(error)) => {
                self.breaker_report(&breaker, false);
                Err(RelayRefusal::new(
                    502,
                    "agent_unreachable",
                    format!("{url}: {error}"),
                ))
            }
            Ok(Ok(response)) => {
                self.breaker_report(&breaker, response.status < 500);
                self.metrics.count("meridian_hub_relayed_total", 1);
                Ok(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use meridian_registry::car::Limits;
    use meridian_registry::snapshot::{self, BuildInput, CardInput, Snapshot};

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn now() -> i64 {
        NOW
    }

    /// A node that answers every sync request with `blocks`, slowly, counting the requests;
    /// `tamper` flips a byte of each block first.
    struct FakeNode {
        blocks: Blocks,
        tamper: bool,
        calls: AtomicUsize,
    }

    impl Egress for FakeNode {
        fn node_sync<'a>(
            &'a self,
            _gateway: &'a str,
            _request: Vec<u8>,
        ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                let blocks = self
                    .blocks
                    .iter()
                    .map(|(cid, block)| {
                        let mut block = block.to_vec();
                        if self.tamper
                            && let Some(byte) = block.last_mut()
                        {
                            *byte ^= 1;
                        }
                        (*cid, Arc::from(block))
                    })
                    .collect();
                Ok(Response::Blocks(blocks).encode())
            })
        }

        fn agent_call<'a>(
            &'a self,
            _url: &'a str,
            _headers: &'a [(String, String)],
            _body: Vec<u8>,
        ) -> BoxFuture<'a, Result<AgentAnswer, String>> {
            Box::pin(async { Err("no agents here".to_owned()) })
        }
    }

    fn card(index: usize, skill: &str) -> CardInput {
        CardInput {
            source_name: format!("card-{index}"),
            json: format!(
                r#"{{"name":"agent {index}","description":"d","version":"1.0.0","supportedInterfaces":[{{"url":"https://a.example/{index}","protocolBinding":"JSONRPC"}}],"capabilities":{{}},"skills":[{{"id":"{skill}","name":"{skill}","tags":[]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
            ),
        }
    }

    fn chain(key: &Keypair) -> (Snapshot, Snapshot) {
        let build = |previous: Option<&Snapshot>, skill: &str| {
            snapshot::build(BuildInput {
                node_key: key,
                org_key: key,
                org: "acme",
                region: "eu",
                cards: (0..50)
                    .map(|i| card(i, if i == 0 { skill } else { "s" }))
                    .collect(),
                previous,
                now: NOW - 10,
                expires_in_secs: 86_400,
                limits: Limits::DEFAULT,
            })
            .unwrap()
            .0
        };
        let first = build(None, "a");
        let second = build(Some(&first), "b");
        (first, second)
    }

    /// A hub that reaches its nodes through `egress` and knows `head` came from a node.
    async fn hub_with(egress: Arc<FakeNode>, head: &Snapshot) -> Arc<Hub> {
        hub_configured(egress, head, HubConfig::default()).await
    }

    fn assembled(egress: Arc<FakeNode>, config: HubConfig, store: Arc<dyn HubStore>) -> Hub {
        let key = Keypair::from_secret(&[9; 32]);
        let allowed = AllowedKeys::default();
        let server = crate::trunk::server_config(&key, allowed.clone()).unwrap();
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        Hub::assemble(
            HubParts {
                config,
                key,
                store,
                endpoint,
                allowed,
                clock: now,
            },
            egress,
        )
        .unwrap()
    }

    /// A store whose every write fails (a full or read-only disk); reads find nothing.
    struct BrokenStore;

    impl HubStore for BrokenStore {
        fn put_block(&self, _: &Cid, _: &[u8]) -> Result<(), StoreError> {
            Err(StoreError::Poisoned)
        }
        fn forget_block(&self, _: &Cid) -> Result<(), StoreError> {
            Err(StoreError::Poisoned)
        }
        fn blocks(&self) -> Result<crate::daemon::store::StoredBlocks, StoreError> {
            Ok(Vec::new())
        }
        fn put_head(&self, _: &str, _: &StoredHead) -> Result<(), StoreError> {
            Err(StoreError::Poisoned)
        }
        fn heads(&self) -> Result<Vec<StoredHead>, StoreError> {
            Ok(Vec::new())
        }
        fn put_governance(&self, _: &[u8]) -> Result<(), StoreError> {
            Err(StoreError::Poisoned)
        }
        fn governance(&self) -> Result<Vec<Vec<u8>>, StoreError> {
            Ok(Vec::new())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Err(StoreError::Poisoned)
        }
    }

    #[tokio::test]
    async fn a_failing_store_is_counted_and_the_hub_serves_from_memory() {
        let key = Keypair::from_secret(&[3; 32]);
        let (first, second) = chain(&key);
        let blocks = delta_blocks(&first, &second);
        let node = Arc::new(FakeNode {
            blocks: blocks.clone(),
            tamper: false,
            calls: AtomicUsize::new(0),
        });
        let hub = assembled(node, HubConfig::default(), Arc::new(BrokenStore));
        let gossip = Gossip::Head(second.commit.to_block()).encode();
        let upstream = Upstream::Node("http://node.example".into());
        // The head is mirrored though it could not be kept on disk: counted, not dropped.
        assert!(hub.gossip(&gossip, upstream).await.unwrap());
        assert_eq!(hub.metrics.counter("meridian_hub_store_errors_total"), 1);
        let delta = Request::Delta {
            from: first.commit_cid,
            to: second.commit_cid,
        };
        match hub.answer(&delta.encode()).await {
            Response::Blocks(got) => assert_eq!(got.len(), blocks.len()),
            other => panic!("expected blocks, got {other:?}"),
        }
        assert!(hub.metrics.counter("meridian_hub_store_errors_total") > 1);
        assert!(hub.flush().is_err(), "a failed flush is reported");
    }

    async fn hub_configured(egress: Arc<FakeNode>, head: &Snapshot, config: HubConfig) -> Arc<Hub> {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let hub = assembled(egress, config, Arc::new(SledHubStore::new(db).unwrap()));
        let gossip = Gossip::Head(head.commit.to_block()).encode();
        let upstream = Upstream::Node("http://node.example".into());
        assert!(hub.gossip(&gossip, upstream).await.unwrap());
        Arc::new(hub)
    }

    fn delta_blocks(first: &Snapshot, second: &Snapshot) -> Blocks {
        second
            .blocks
            .iter()
            .filter(|(cid, _)| !first.blocks.contains_key(*cid))
            .map(|(cid, block)| (*cid, Arc::from(block.as_ref())))
            .collect()
    }

    /// A publisher's two snapshots, the blocks the second adds, a node serving them (tampered
    /// or not) and a hub that knows the second head came from that node; with the delta
    /// request between the two.
    async fn setup(tamper: bool) -> (Blocks, Arc<FakeNode>, Arc<Hub>, Vec<u8>) {
        let key = Keypair::from_secret(&[3; 32]);
        let (first, second) = chain(&key);
        let blocks = delta_blocks(&first, &second);
        let node = Arc::new(FakeNode {
            blocks: blocks.clone(),
            tamper,
            calls: AtomicUsize::new(0),
        });
        let hub = hub_with(node.clone(), &second).await;
        let request = Request::Delta {
            from: first.commit_cid,
            to: second.commit_cid,
        }
        .encode();
        (blocks, node, hub, request)
    }

    #[tokio::test]
    async fn an_agent_its_organisation_removed_is_not_relayed_to() {
        let key = Keypair::from_secret(&[3; 32]);
        let (first, _) = chain(&key);
        // The organisation drops agent 7: the next snapshot holds its signed removal.
        let second = snapshot::build(BuildInput {
            node_key: &key,
            org_key: &key,
            org: "acme",
            region: "eu",
            cards: (0..50).filter(|i| *i != 7).map(|i| card(i, "s")).collect(),
            previous: Some(&first),
            now: NOW - 5,
            expires_in_secs: 86_400,
            limits: Limits::DEFAULT,
        })
        .unwrap()
        .0;
        let blocks: Blocks = second
            .blocks
            .iter()
            .map(|(cid, block)| (*cid, Arc::from(block.as_ref())))
            .collect();
        let node = Arc::new(FakeNode {
            blocks,
            tamper: false,
            calls: AtomicUsize::new(0),
        });
        let hub = hub_with(node, &second).await;
        let refused = hub
            .resolve_agent(&key.did(), "acme", "agent-7")
            .await
            .unwrap_err();
        assert_eq!((refused.status, refused.code), (410, "agent_removed"));
        assert!(
            hub.resolve_agent(&key.did(), "acme", "agent-8")
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn concurrent_asks_for_one_delta_make_one_upstream_fetch() {
        let (blocks, node, hub, request) = setup(false).await;
        let asks = (0..8).map(|_| {
            let hub = hub.clone();
            let request = request.clone();
            tokio::spawn(async move { hub.answer(&request).await })
        });
        for answer in futures_util::future::join_all(asks).await {
            match answer.unwrap() {
                Response::Blocks(got) => assert_eq!(got.len(), blocks.len()),
                other => panic!("expected blocks, got {other:?}"),
            }
        }
        assert_eq!(node.calls.load(Ordering::SeqCst), 1);
        // A later ask is served from the delta cache.
        assert!(matches!(hub.answer(&request).await, Response::Blocks(_)));
        assert_eq!(node.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_node_serving_wrong_blocks_gets_nothing_cached_or_served() {
        let (blocks, _node, hub, delta) = setup(true).await;
        assert!(matches!(hub.answer(&delta).await, Response::Refused(_)));
        let cids: Vec<Cid> = blocks.iter().map(|(cid, _)| *cid).collect();
        match hub.answer(&Request::Blocks(cids).encode()).await {
            Response::Blocks(got) => assert!(got.is_empty(), "served {} wrong blocks", got.len()),
            other => panic!("expected blocks, got {other:?}"),
        }
        assert!(hub.metrics.counter("meridian_hub_blocks_rejected_total") >= 1);
        // Nothing wrong was kept: the store holds no block at all.
        assert!(hub.store.blocks().unwrap().is_empty());
    }

    #[tokio::test]
    async fn relays_past_the_limit_are_refused_until_one_ends() {
        let key = Keypair::from_secret(&[3; 32]);
        let (_, second) = chain(&key);
        let node = Arc::new(FakeNode {
            blocks: Vec::new(),
            tamper: false,
            calls: AtomicUsize::new(0),
        });
        let mut config = HubConfig::default();
        config.relay.concurrent_max = 2;
        let hub = hub_configured(node, &second, config).await;
        let first = hub.relay_permit().unwrap();
        let _second = hub.relay_permit().unwrap();
        assert_eq!(hub.relays_in_progress(), 2);
        let refused = hub.relay_permit().unwrap_err();
        assert_eq!(
            (refused.status, refused.code, refused.retry_after),
            (503, "busy", Some(1))
        );
        assert_eq!(
            hub.metrics
                .counter("meridian_hub_relays_refused_total{reason=\"busy\"}"),
            1
        );
        drop(first);
        assert!(
            hub.relay_permit().is_ok(),
            "a place is free again once a call ends"
        );
    }
}
