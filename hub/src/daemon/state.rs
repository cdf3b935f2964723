//! The running hub: the thin async driver of the sans-IO [`HubMachine`]. It reads the clock,
//! holds the machine behind one lock, and carries out what the machine decides: the disk
//! ([`HubStore`]), the region's nodes over HTTP ([`Egress`]), the other regions' hubs over the
//! trunk, the long-polls' wake-ups and the metrics. The decisions themselves (routing, delta
//! collapse, gossip intake, relay admission through the acceptance rule) are the machine's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
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
use crate::breaker::{BreakerConfig, BreakerState};
use crate::egress::{AgentAnswer, Egress, HttpEgress};
use crate::heads::Upstream;
use crate::machine::{
    BlockPlan, DeltaPlan, HeadKind, HubMachine, Input, Now, Output, Refused, Settings, Waiter,
};
use crate::metrics::Metrics;
use crate::policy::PolicyMirror;
use crate::ratelimit::Rate;
use crate::routing::{Route, Routes};
use crate::trunk::{AllowedKeys, Trunk, TrunkError, TrunkPeer};
use crate::wire::{Gossip, MESSAGE_BYTES_MAX, Request, Response, WireError};

pub use crate::machine::{HEADS_ANSWER_BYTES_MAX, RelayRefusal};

/// Most CIDs one sync request may ask for.
pub const BLOCKS_PER_REQUEST_MAX: usize = crate::wire::REQUEST_BLOCKS_MAX;

/// Circuit breakers `GET /v1/stats` lists (the troubled first); `breakers_total` counts all.
pub const STATS_BREAKERS_MAX: usize = 256;
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

/// The machine and the requests waiting on it, under one lock (a waiter is registered in the
/// same critical section that decided it waits, so no wake-up is missed).
struct Core {
    machine: HubMachine,
    waiters: HashMap<Waiter, tokio::sync::oneshot::Sender<()>>,
}

impl Core {
    /// Registers a waiting request; its receiver resolves when the machine wakes it.
    fn wait(&mut self, waiter: Waiter) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.insert(waiter, tx);
        rx
    }
}

/// What the machine decided that is left to the caller once the lock is let go.
#[derive(Default)]
struct Effects {
    /// Gossip to send to the other regions' hubs.
    forward: Vec<Vec<u8>>,
    /// A governance document the machine took in could not be kept on disk.
    document_unkept: Option<StoreError>,
}

/// The blocks one request is fetching. Whatever happens to the request, even its future
/// being dropped when the client goes away, the fetches it did not finish are reported
/// failed, so the next ask for those blocks fetches again instead of waiting on nobody.
struct Fetching<'a> {
    hub: &'a Hub,
    unfinished: Vec<Cid>,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.hub.fetches_failed(&self.unfinished);
    }
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
    core: Mutex<Core>,
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

/// Why a gossip message was not taken in ([`Hub::gossip`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// The hub refused it (malformed, not admitted, not verifying, over a budget...).
    #[error("{0}")]
    Refused(Refused),
    /// A governance document was taken in but could not be kept on disk.
    #[error("storing the document: {0}")]
    Store(StoreError),
}

/// Why a sync request to an upstream (a node of the region or another region's hub) got no
/// answer ([`Hub::call_upstream`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Its circuit breaker is open after repeated failures.
    #[error("circuit open for {0}")]
    CircuitOpen(String),
    /// It did not answer in `hub.upstream_timeout_secs`.
    #[error("{upstream} did not answer in {after:?}")]
    Timeout {
        /// Which upstream.
        upstream: String,
        /// How long the hub waited.
        after: Duration,
    },
    /// The node could not be reached, or answered with an HTTP error.
    #[error("{0}")]
    Node(crate::egress::EgressError),
    /// The other region's hub could not be reached over the trunk.
    #[error("{0}")]
    Trunk(TrunkError),
    /// The head's blocks are nowhere known.
    #[error("no upstream known")]
    Unknown,
    /// The answer is not a sync response.
    #[error("bad answer: {0}")]
    BadAnswer(WireError),
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

/// The machine's settings from the hub's configuration.
fn settings(config: &HubConfig) -> Settings {
    Settings {
        region: config.hub.region.clone(),
        publishers_max: config.hub.publishers_max,
        clock_skew_secs: config.hub.clock_skew_secs,
        cache_bytes_max: config.hub.cache_bytes_max,
        breaker: BreakerConfig {
            failures_to_open: config.hub.breaker_failures.max(1),
            open_for: Duration::from_secs(config.hub.breaker_open_secs),
        },
        default_rate: Rate {
            per_second: config.relay.default_rps,
            burst: config.relay.default_burst,
        },
        trusted_nodes: config
            .relay
            .trusted_nodes
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        new_publishers_per_minute: config.hub.new_publishers_per_source_per_minute,
        publishers_per_source_max: config.hub.publishers_per_source_max,
    }
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
        let policy = if config.governance.root.is_empty() {
            None
        } else {
            let bytes = std::fs::read(&config.governance.root).with_context(|| {
                format!("config governance.root: reading {}", config.governance.root)
            })?;
            Some(
                PolicyMirror::new(&bytes, clock())
                    .map_err(|e| anyhow::anyhow!("config governance.root: {e}"))?,
            )
        };
        let (changed, _) = tokio::sync::watch::channel(0);
        let hub = Self {
            did: key.did(),
            trunk: Trunk::new(endpoint, key.clone()),
            key,
            metrics: Metrics::default(),
            allowed,
            core: Mutex::new(Core {
                machine: HubMachine::new(settings(&config), policy),
                waiters: HashMap::new(),
            }),
            relays: Arc::new(tokio::sync::Semaphore::new(config.relay.concurrent_max)),
            store,
            egress,
            guard: config.egress_guard()?,
            changed,
            clock,
            serve_counters: Arc::default(),
            started: Instant::now(),
            config,
        };
        hub.reload()?;
        hub.apply_directory();
        Ok(hub)
    }

    /// The time, for the machine: the wall clock and the time since the hub started.
    fn now(&self) -> Now {
        Now {
            unix: (self.clock)(),
            elapsed: self.started.elapsed(),
        }
    }

    /// Runs `step` on the machine under its lock, then carries out what it decided: waiters
    /// are woken, the disk written, metrics counted, long-polls woken. What needs awaiting
    /// (gossip to forward) is returned with the step's value.
    fn drive<T>(&self, step: impl FnOnce(&mut Core) -> T) -> (T, Effects) {
        let (value, outputs, woken) = {
            // The machine leaves its state whole between calls and does not panic on input;
            // a lock poisoned by a panic elsewhere still guards a consistent machine.
            let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
            let value = step(&mut core);
            let mut outputs = Vec::new();
            let mut woken = Vec::new();
            while let Some(output) = core.machine.poll() {
                match output {
                    Output::Wake(waiter) => woken.extend(core.waiters.remove(&waiter)),
                    other => outputs.push(other),
                }
            }
            (value, outputs, woken)
        };
        for sender in woken {
            // A request that stopped waiting has dropped its receiver: nothing to wake.
            let _ = sender.send(());
        }
        let effects = self.carry_out(outputs);
        (value, effects)
    }

    /// Carries out the machine's outputs other than wake-ups.
    fn carry_out(&self, outputs: Vec<Output>) -> Effects {
        let mut effects = Effects::default();
        for output in outputs {
            match output {
                Output::PersistHead {
                    key,
                    upstream,
                    kind,
                    block,
                } => {
                    let head = StoredHead {
                        upstream: encode_upstream(&upstream),
                        tag: kind.tag(),
                        block,
                    };
                    if let Err(error) = self.store.put_head(&key, &head) {
                        self.store_failed("keeping a head", &error);
                    }
                }
                Output::PersistGovernance(block) => {
                    if let Err(error) = self.store.put_governance(&block) {
                        self.store_failed("keeping a governance document", &error);
                        effects.document_unkept = Some(error);
                    }
                }
                Output::PersistBlock { cid, block } => {
                    if let Err(error) = self.store.put_block(&cid, &block) {
                        self.store_failed("keeping a cached block", &error);
                    }
                }
                Output::ForgetBlock(cid) => {
                    if let Err(error) = self.store.forget_block(&cid) {
                        self.store_failed("forgetting an evicted block", &error);
                    }
                }
                Output::Forward(bytes) => effects.forward.push(bytes),
                Output::Changed => self.changed.send_modify(|v| *v += 1),
                Output::DirectoryChanged => self.apply_directory(),
                Output::BreakerChanged { breaker, state } => self.breaker_changed(&breaker, state),
                Output::Count { name, by } => self.metrics.count(name, by),
                // Woken under the lock, in `drive`.
                Output::Wake(_) => {}
            }
        }
        effects
    }

    /// Puts back what the store holds: blocks (checked against their CIDs again), governance
    /// documents in the order kept, then heads and proofs.
    fn reload(&self) -> Result<()> {
        let now = self.now();
        let blocks = self.store.blocks()?;
        let documents = self.store.governance()?;
        let heads = self.store.heads()?;
        let (loaded, _) = self.drive(|core| {
            let mut loaded = 0u64;
            for (cid, block) in blocks {
                loaded += u64::from(core.machine.restore_block(&cid, block));
            }
            for block in documents {
                if let Err(error) = core.machine.restore_document(&block, now) {
                    tracing::warn!(%error, "ignoring a stored governance document");
                }
            }
            for stored in heads {
                let kind = match stored.tag {
                    b'E' => HeadKind::Proof,
                    b'H' => HeadKind::Head,
                    other => {
                        tracing::debug!(tag = other, "a stored head of unknown kind left out");
                        continue;
                    }
                };
                let upstream = decode_upstream(&stored.upstream);
                if let Err(why) = core
                    .machine
                    .restore_head(kind, &stored.block, upstream, now)
                {
                    tracing::debug!(%why, "a stored head left out");
                }
            }
            loaded
        });
        let publishers = self.drive(|core| core.machine.publishers()).0;
        tracing::info!(blocks = loaded, publishers, "hub state reloaded");
        Ok(())
    }

    /// Counts and logs a store failure that the request in progress does not report (a cache
    /// write, an eviction): the hub keeps serving from memory, and the operator sees it in
    /// `meridian_hub_store_errors_total`.
    fn store_failed(&self, what: &str, error: &StoreError) {
        self.metrics.count("meridian_hub_store_errors_total", 1);
        tracing::error!(%error, what, "hub store write failed");
    }

    /// Flushes the store.
    pub fn flush(&self) -> Result<()> {
        self.store.flush()?;
        Ok(())
    }

    /// A receiver that sees the change counter grow whenever a head or governance document
    /// arrives (long-polls wait on it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Sets the trunk's peers and the keys it accepts from the policy's hub directory and the
    /// `[trunk] peers` overrides (which win for their region).
    pub fn apply_directory(&self) {
        let mut peers: BTreeMap<String, TrunkPeer> = BTreeMap::new();
        for hub in self.drive(|core| core.machine.directory()).0 {
            // The directory's address is the hub's trunk address ("host:port").
            match hub.address.parse() {
                Ok(addr) => {
                    peers.insert(
                        hub.region.clone(),
                        TrunkPeer {
                            region: hub.region,
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
                self.drive(|core| core.machine.directory())
                    .0
                    .into_iter()
                    .find(|h| h.key == *key)
                    .map(|h| h.region)
            })
            .filter(|r| regions.contains(r))
    }

    // ------------------------------------------------------------ blocks

    /// Takes in a block fetched upstream; whether it checked against its CID (and may be
    /// served).
    fn take_fetched(&self, cid: &Cid, block: Arc<[u8]>, publisher: Option<&str>) -> bool {
        let input = Input::Fetched {
            cid: *cid,
            block,
            publisher: publisher.map(str::to_owned),
        };
        let now = self.now();
        match self.drive(|core| core.machine.handle(now, input)).0 {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%cid, %error, "upstream served a block that does not match its CID");
                false
            }
        }
    }

    /// Blocks by CID: from the cache, else fetched upstream (one fetch per CID however many
    /// ask at once), each checked against its CID before it is cached or returned. Absent ones
    /// are left out.
    pub async fn blocks(&self, cids: &[Cid]) -> Vec<(Cid, Arc<[u8]>)> {
        let now = self.now();
        let regions = self.trunk.regions();
        let ((mut found, routes, waits, fetching), _) = self.drive(|core| {
            let BlockPlan { found, fetch, wait } = core.machine.plan_blocks(cids);
            let waits: Vec<_> = wait
                .into_iter()
                .map(|(cid, waiter)| (cid, core.wait(waiter)))
                .collect();
            let fetching = fetch.clone();
            let routes = core.machine.route(fetch, &regions, now);
            (found, routes, waits, fetching)
        });
        let mut fetching = Fetching {
            hub: self,
            unfinished: fetching,
        };
        let Routes { known, unknown } = routes;
        for route in known.into_iter().chain([unknown]) {
            found.extend(self.fetch_route(route, &mut fetching.unfinished).await);
        }
        let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
        for (cid, rx) in waits {
            // Woken when the fetch ends either way, or given up on after the timeout.
            let _ = tokio::time::timeout(timeout, rx).await;
            if let Some(block) = self.drive(|core| core.machine.cached(&cid)).0 {
                found.push((cid, block));
            }
        }
        found
    }

    /// Fetches one route's blocks from its upstreams in turn; what none served is reported
    /// failed (its waiters wake and find nothing). Each block that ends either way leaves
    /// `unfinished`.
    async fn fetch_route(
        &self,
        (upstreams, mut remaining): Route,
        unfinished: &mut Vec<Cid>,
    ) -> Blocks {
        let mut found = Vec::new();
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
        self.fetches_failed(&remaining);
        unfinished.retain(|cid| !found.iter().any(|(c, _)| c == cid) && !remaining.contains(cid));
        found
    }

    /// Tells the machine that the fetches of `cids` this request made ended without them.
    fn fetches_failed(&self, cids: &[Cid]) {
        if cids.is_empty() {
            return;
        }
        let now = self.now();
        self.drive(|core| {
            for cid in cids {
                // Reporting a failure refuses nothing.
                let _ = core.machine.handle(now, Input::FetchFailed(*cid));
            }
        });
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
                        if chunk.contains(&cid) && self.take_fetched(&cid, block.clone(), publisher)
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
        let now = self.now();
        self.drive(|core| core.machine.breaker_allows(name, now)).0
    }

    fn breaker_report(&self, name: &str, ok: bool) {
        let now = self.now();
        let input = Input::UpstreamEnded {
            breaker: name.to_owned(),
            ok,
        };
        // Reporting how a call ended refuses nothing.
        let _ = self.drive(|core| core.machine.handle(now, input));
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
    ) -> Result<Response, UpstreamError> {
        let name = encode_upstream(upstream);
        if !self.breaker_allows(&name) {
            return Err(UpstreamError::CircuitOpen(name));
        }
        let started = Instant::now();
        let bytes = request.encode();
        let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
        let timed_out = |upstream: String| UpstreamError::Timeout {
            upstream,
            after: timeout,
        };
        let result = match upstream {
            Upstream::Node(url) => {
                match tokio::time::timeout(timeout, self.egress.node_sync(url, bytes)).await {
                    Ok(result) => result.map_err(UpstreamError::Node),
                    Err(_) => Err(timed_out(url.clone())),
                }
            }
            Upstream::Hub(region) => {
                match tokio::time::timeout(timeout, self.trunk.sync(region, &bytes)).await {
                    Ok(result) => result.map_err(UpstreamError::Trunk),
                    Err(_) => Err(timed_out(format!("hub of {region}"))),
                }
            }
            Upstream::Unknown => Err(UpstreamError::Unknown),
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
            Response::decode(&bytes, MESSAGE_BYTES_MAX).map_err(UpstreamError::BadAnswer)
        });
        self.breaker_report(&name, decoded.is_ok());
        decoded
    }

    /// What the hub's console shows (`GET /v1/stats`): the trunk to each other region with
    /// its round-trip time, the block cache, the circuit breakers, rate-limit refusals by
    /// scope and the relays in flight. Figures since start.
    pub fn stats(&self) -> serde_json::Value {
        let now = self.now();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (cache, breakers, refusals, publishers, policy_version) = self
            .drive(|core| {
                let m = &core.machine;
                (
                    m.cache_stats(),
                    m.breakers(now, STATS_BREAKERS_MAX),
                    m.rate_refusals().clone(),
                    m.publishers(),
                    m.policy_version(),
                )
            })
            .0;
        let lookups = cache.hits + cache.misses;
        let trunks: Vec<serde_json::Value> = self
            .trunk
            .status()
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "region": t.region, "address": t.addr.to_string(), "key": t.key,
                    "connected": t.connected, "rtt_ms": t.rtt.map(ms),
                    "failures": t.failures, "retry_in_ms": t.retry_in.map(ms),
                })
            })
            .collect();
        serde_json::json!({
            "region": self.config.hub.region,
            "did": self.did,
            "uptime_secs": now.elapsed.as_secs(),
            "publishers": publishers,
            "governed": policy_version.is_some(),
            "policy_version": policy_version,
            "trunks": trunks,
            "cache": {
                "hits": cache.hits, "misses": cache.misses,
                "hit_rate": (lookups > 0).then(|| cache.hits as f64 / lookups as f64),
                "bytes": cache.bytes, "blocks": cache.blocks,
                "capacity_bytes": self.config.hub.cache_bytes_max,
                "evicted": cache.evicted, "rejected": cache.rejected,
                "bytes_served": cache.bytes_served,
            },
            "breakers_total": breakers.0,
            "breakers": breakers.1.iter().map(|b| serde_json::json!({
                "upstream": b.upstream, "state": b.state, "failures": b.failures,
                "open_for_ms": b.open_for.map(ms),
            })).collect::<Vec<_>>(),
            "rate_refusals": refusals,
            "relays": {
                "in_flight": self.relays_in_progress(),
                "max": self.config.relay.concurrent_max,
            },
        })
    }

    /// Copies the cache's statistics into the metrics' gauges (at scrape time: the hot path
    /// of serving a block does not pay for it).
    pub fn publish_cache_metrics(&self) {
        self.metrics.set_gauge(
            "meridian_hub_relays_in_progress",
            self.relays_in_progress() as u64,
        );
        let stats = self.drive(|core| core.machine.cache_stats()).0;
        for (name, value) in [
            ("meridian_hub_cache_hits", stats.hits),
            ("meridian_hub_cache_misses", stats.misses),
            ("meridian_hub_cache_bytes_served", stats.bytes_served),
            ("meridian_hub_cache_bytes", stats.bytes),
            ("meridian_hub_cache_blocks", stats.blocks),
            ("meridian_hub_cache_evicted", stats.evicted),
            ("meridian_hub_cache_rejected", stats.rejected),
        ] {
            self.metrics.set_gauge(name, value);
        }
    }

    // ------------------------------------------------------------ sync answers

    /// Every head, governance document and proof the hub holds, as a sync `Heads` answer.
    ///
    /// Bounded by [`HEADS_ANSWER_BYTES_MAX`] (what a node reads of `/v1/heads`, base64 and all):
    /// heads past it are left out, counted in `meridian_hub_heads_left_out`, and reach nodes
    /// by gossip instead.
    pub fn heads_response(&self) -> Response {
        let now = self.now();
        let (answer, left_out) = self.drive(|core| core.machine.heads_answer(now)).0;
        self.metrics
            .set_gauge("meridian_hub_heads_left_out", left_out as u64);
        answer
    }

    /// The governance documents in order (empty without a policy mirror).
    pub fn governance_documents(&self) -> Vec<Vec<u8>> {
        self.drive(|core| core.machine.governance_documents()).0
    }

    /// The governance trust root's block, when the hub has a governance root.
    pub fn governance_root(&self) -> Option<Vec<u8>> {
        self.drive(|core| core.machine.root_block()).0
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

    /// A delta between two commits of a mirrored publisher: kept, else asked upstream once
    /// however many ask at once (the region's nodes all ask for the same delta when a head
    /// arrives: one cross-region transfer, not one per node).
    async fn delta(&self, from: Cid, to: Cid) -> Response {
        let (plan, _) = self.drive(|core| {
            let plan = core.machine.ask_delta(from, to);
            let rx = match plan {
                DeltaPlan::Wait(waiter) => Some(core.wait(waiter)),
                _ => None,
            };
            (plan, rx)
        });
        let (upstream, publisher) = match plan {
            (DeltaPlan::Kept(blocks), _) => return Response::Blocks(blocks),
            (DeltaPlan::NotMirrored, _) => {
                return Response::Refused(format!("commit {to} is not a head this hub mirrors"));
            }
            (DeltaPlan::Wait(_), rx) => {
                if let Some(rx) = rx {
                    let timeout = Duration::from_secs(self.config.hub.upstream_timeout_secs);
                    let _ = tokio::time::timeout(timeout, rx).await;
                }
                return match self.drive(|core| core.machine.kept_delta(from, to)).0 {
                    Some(blocks) => Response::Blocks(blocks),
                    None => Response::Refused(format!(
                        "the delta {from} -> {to} could not be fetched upstream"
                    )),
                };
            }
            (
                DeltaPlan::Fetch {
                    upstream,
                    publisher,
                },
                _,
            ) => (upstream, publisher),
        };
        // Whatever happens to this fetch (even this future being dropped), the machine hears
        // how it ended and the waiters wake.
        struct Inflight<'a> {
            hub: &'a Hub,
            delta: (Cid, Cid),
            blocks: Option<Blocks>,
        }
        impl Drop for Inflight<'_> {
            fn drop(&mut self) {
                let (from, to) = self.delta;
                let input = Input::DeltaEnded {
                    from,
                    to,
                    blocks: self.blocks.take(),
                };
                let now = self.hub.now();
                let _ = self.hub.drive(|core| core.machine.handle(now, input));
            }
        }
        let mut inflight = Inflight {
            hub: self,
            delta: (from, to),
            blocks: None,
        };
        match self
            .call_upstream(&upstream, &Request::Delta { from, to })
            .await
        {
            Ok(Response::Blocks(blocks)) => {
                for (cid, block) in &blocks {
                    // Every block is checked against its CID and cached (a held one is kept).
                    if !self.take_fetched(cid, block.clone(), Some(&publisher)) {
                        return Response::Refused("upstream served a wrong block".into());
                    }
                }
                inflight.blocks = Some(blocks.clone());
                Response::Blocks(blocks)
            }
            Ok(other) => other,
            Err(error) => Response::Refused(error.to_string()),
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
        let now = self.now();
        let input = Input::Gossip {
            bytes: bytes.to_vec(),
            upstream,
            source: source.to_owned(),
        };
        let (taken, effects) = self.drive(|core| core.machine.handle(now, input));
        let new = taken.map_err(GossipError::Refused)?;
        if let Some(error) = effects.document_unkept {
            return Err(GossipError::Store(error));
        }
        for message in effects.forward {
            self.forward(&message).await;
        }
        Ok(new)
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
        self.drive(|core| core.machine.warnings()).0
    }

    /// Whether a node may name its callers' organisation: the signed policy admits it
    /// (`allow_node_keys` or a `node.verified` attestation) or the operator listed it in
    /// `relay.trusted_nodes`. Mirroring a node's head is not enough: anyone can push one.
    pub fn trusts_node(&self, did: &str) -> bool {
        let now = self.now();
        self.drive(|core| core.machine.trusts_node(did, now)).0
    }

    /// Relayed calls in progress.
    pub fn relays_in_progress(&self) -> usize {
        self.config.relay.concurrent_max - self.relays.available_permits()
    }

    /// Applies the rate tier of `scope` (`org:ID` or `region:NAME`, from the policy or the
    /// default) and returns a refusal when it is over.
    pub fn rate_check(&self, scope: &str) -> Result<(), RelayRefusal> {
        let now = self.now();
        self.drive(|core| core.machine.rate_check(scope, now)).0
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
            .drive(|core| {
                let data = core.machine.head_data(publisher)?;
                core.machine.hint(publisher, [data]);
                Some(data)
            })
            .0
            .ok_or_else(|| not_found(format!("this hub mirrors no head of {publisher}")))?;
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
                    let now = self.now();
                    self.drive(|core| core.machine.relay_acceptance(&manifest, publisher, now))
                        .0?;
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
        ) -> BoxFuture<'a, Result<Vec<u8>, crate::egress::EgressError>> {
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
        ) -> BoxFuture<'a, Result<AgentAnswer, crate::egress::EgressError>> {
            Box::pin(async {
                Err(crate::egress::EgressError::unreachable(
                    _url,
                    "no agents here",
                ))
            })
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
    async fn a_fetch_abandoned_midway_leaves_no_block_stuck_in_flight() {
        let key = Keypair::from_secret(&[4; 32]);
        let (first, second) = chain(&key);
        let blocks = delta_blocks(&first, &second);
        let node = Arc::new(FakeNode {
            blocks: blocks.clone(),
            tamper: false,
            calls: AtomicUsize::new(0),
        });
        let hub = hub_with(node.clone(), &second).await;
        let cid = blocks[0].0;
        // A client goes away while the hub fetches for it: its request's future is dropped.
        let abandoned = tokio::time::timeout(Duration::from_millis(10), hub.blocks(&[cid])).await;
        assert!(abandoned.is_err(), "the fake node answers after 50 ms");
        // The next ask fetches again instead of waiting on a fetch nobody is making.
        let got = hub.blocks(&[cid]).await;
        assert_eq!(got.len(), 1);
        assert_eq!(node.calls.load(Ordering::SeqCst), 2);
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
