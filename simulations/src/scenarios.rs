//! The scenarios: each builds a world from a seed, runs it under turmoil, checks its
//! invariants and reports figures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, Snapshot};
use meridian_registry::store::{BlockStore, MemoryStore};
use meridian_sync::SyncConfig;
use serde_json::{Value, json};

use crate::federation::{Behaviour, Command, NodeSpec, Rng, World, host_name, seed_store};

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// Broken invariants, empty when the run passed.
    pub failures: Vec<String>,
    /// Figures, by name (simulated milliseconds and bytes).
    pub figures: BTreeMap<&'static str, Value>,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line for a terminal: outcome and figures.
    pub fn line(&self) -> String {
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let outcome = if self.passed() { "ok" } else { "FAILED" };
        format!(
            "{} seed={} {outcome} {}",
            self.scenario,
            self.seed,
            figures.join(" ")
        )
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "seed": self.seed,
            "passed": self.passed(),
            "failures": self.failures,
            "figures": self.figures,
        })
    }
}

/// The federation's shape: how many nodes, regions, links and latencies.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Nodes in all.
    pub nodes: usize,
    /// Regions; node `i` is in region `i % regions`.
    pub regions: usize,
    /// Links each node makes inside its region.
    pub links_in_region: usize,
    /// Links each node makes to other regions.
    pub links_across: usize,
    /// One-way latency inside a region.
    pub intra: Duration,
    /// One-way latency between regions.
    pub inter: Duration,
    /// A hub per region (host `hub-{r}`), which every node of the region links to.
    pub hubs: bool,
    /// An echo agent (host `agent-{r}`) and an A2A caller (host `caller-{r}`) per region.
    pub a2a: bool,
}

impl Default for Topology {
    /// 50 nodes in 3 regions, 2 ms inside a region and 80 ms between (the figures).
    fn default() -> Self {
        Self {
            nodes: 50,
            regions: 3,
            links_in_region: 4,
            links_across: 1,
            intra: Duration::from_millis(2),
            inter: Duration::from_millis(80),
            hubs: false,
            a2a: false,
        }
    }
}

impl Topology {
    /// The node specs with links drawn from `rng`: a ring through every node (so the graph
    /// is connected; a ring through each region when there are no links across regions, for
    /// hubs to connect) plus random links inside and across regions.
    pub fn specs(&self, rng: &mut Rng) -> Vec<NodeSpec> {
        let n = self.nodes;
        let region = |i: usize| i % self.regions.max(1);
        let mut links: BTreeSet<(usize, usize)> = BTreeSet::new();
        let add = |a: usize, b: usize, links: &mut BTreeSet<(usize, usize)>| {
            if a != b {
                links.insert((a.min(b), a.max(b)));
            }
        };
        if self.links_across > 0 {
            for i in 0..n {
                add(i, (i + 1) % n, &mut links);
            }
        } else {
            // No links across regions: a ring through each region instead.
            for r in 0..self.regions.max(1) {
                let members = self.region_nodes(r);
                for (k, &i) in members.iter().enumerate() {
                    add(i, members[(k + 1) % members.len()], &mut links);
                }
            }
        }
        for i in 0..n {
            let same: Vec<usize> = (0..n)
                .filter(|&j| j != i && region(j) == region(i))
                .collect();
            let other: Vec<usize> = (0..n).filter(|&j| region(j) != region(i)).collect();
            for _ in 0..self.links_in_region {
                if !same.is_empty() {
                    add(i, same[rng.below(same.len())], &mut links);
                }
            }
            for _ in 0..self.links_across {
                if !other.is_empty() {
                    add(i, other[rng.below(other.len())], &mut links);
                }
            }
        }
        (0..n)
            .map(|i| NodeSpec {
                index: i,
                region: format!("region-{}", region(i)),
                dial: links
                    .iter()
                    .filter(|(a, _)| *a == i)
                    .map(|(_, b)| *b)
                    .collect(),
                behaviour: Behaviour::Honest,
                clock_offset_secs: 0,
                joins_empty: false,
                leaves: false,
            })
            .collect()
    }

    /// Every host of the federation with its region: nodes, then hubs, agents and callers
    /// when the topology has them.
    pub fn hosts(&self) -> Vec<(String, usize)> {
        let regions = self.regions.max(1);
        let mut hosts: Vec<(String, usize)> = (0..self.nodes)
            .map(|i| (host_name(i), i % regions))
            .collect();
        for r in 0..regions {
            if self.hubs {
                hosts.push((crate::hubs::hub_host(r), r));
            }
            if self.a2a {
                hosts.push((crate::hubs::agent_host(r), r));
                hosts.push((crate::hubs::caller_host(r), r));
            }
        }
        hosts
    }

    /// Sets turmoil's link latencies for every pair of hosts.
    pub fn apply(&self, sim: &turmoil::Sim<'_>) {
        self.set_latencies(sim, self.intra, self.inter);
    }

    /// Sets every link's one-way latency: `intra` inside a region, `inter` between regions.
    pub fn set_latencies(&self, sim: &turmoil::Sim<'_>, intra: Duration, inter: Duration) {
        let hosts = self.hosts();
        for (i, (a, region_a)) in hosts.iter().enumerate() {
            for (b, region_b) in &hosts[i + 1..] {
                let latency = if region_a == region_b { intra } else { inter };
                sim.set_link_latency(a.as_str(), b.as_str(), latency);
            }
        }
    }

    /// The nodes of region `region`.
    pub fn region_nodes(&self, region: usize) -> Vec<usize> {
        (0..self.nodes)
            .filter(|i| i % self.regions.max(1) == region)
            .collect()
    }
}

/// The publisher's key in every scenario.
pub fn publisher_key() -> Keypair {
    Keypair::from_secret(&[0x4d; 32])
}

/// A registry of `agents` agents and its successor with agent 0 changed, built once per
/// process and size (building is the slow part of a run).
pub fn registry(agents: usize) -> Arc<(Snapshot, Snapshot)> {
    static CACHE: Pairs = OnceLock::new();
    pair_once(&CACHE, agents, || {
        let chain = registry_chain(&publisher_key(), agents, 1);
        (chain[0].clone(), chain[1].clone())
    })
}

/// Pairs of snapshots built once per process, by registry size.
type Pairs = OnceLock<Mutex<BTreeMap<usize, Arc<(Snapshot, Snapshot)>>>>;

/// The pair `cache` holds for `agents`, built by `build` the first time.
fn pair_once(
    cache: &'static Pairs,
    agents: usize,
    build: impl FnOnce() -> (Snapshot, Snapshot),
) -> Arc<(Snapshot, Snapshot)> {
    let cache = cache.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = match cache.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    cache
        .entry(agents)
        .or_insert_with(|| Arc::new(build()))
        .clone()
}

/// A publisher's history: a registry of `agents` agents, then `changes` successors, the
/// `k`-th changing agent `k - 1`'s skill, each commit one second after the last. Built once
/// per process, key, size and length.
pub fn registry_chain(key: &Keypair, agents: usize, changes: usize) -> Arc<Vec<Snapshot>> {
    type Chains = BTreeMap<(String, usize, usize), Arc<Vec<Snapshot>>>;
    static CACHE: OnceLock<Mutex<Chains>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = match cache.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    cache
        .entry((key.did(), agents, changes))
        .or_insert_with(|| {
            let mut chain: Vec<Snapshot> = Vec::with_capacity(changes + 1);
            for step in 0..=changes {
                let cards = (0..agents)
                    .map(|i| {
                        let skill = if i < step { "translate" } else { "search" };
                        meridian_registry::samples::sample_card("sim", i, skill)
                    })
                    .collect();
                let (snapshot, _) = snapshot::build(BuildInput {
                    node_key: key,
                    org_key: key,
                    org: "sim",
                    region: "region-0",
                    cards,
                    previous: chain.last(),
                    now: crate::federation::EPOCH_UNIX - 60 + step as i64,
                    expires_in_secs: 7 * 86_400,
                    limits: Limits::DEFAULT,
                })
                .unwrap_or_else(|e| panic!("building the registry, step {step}: {e}"));
                chain.push(snapshot);
            }
            Arc::new(chain)
        })
        .clone()
}

/// Parameters of "publish and converge".
#[derive(Debug, Clone)]
pub struct PublishConverge {
    /// The federation.
    pub topology: Topology,
    /// Agents in the publisher's registry.
    pub agents: usize,
    /// What the publisher changes.
    pub change: Change,
}

/// The one change "publish and converge" makes to agent 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Change {
    /// A new version of its card (another skill).
    #[default]
    NewVersion,
    /// Its organisation deprecates it, naming agent 1 as its successor: the same card,
    /// signed again with `deprecated` and `superseded_by`.
    Deprecate,
}

impl Default for PublishConverge {
    fn default() -> Self {
        Self {
            topology: Topology::default(),
            agents: 10_000,
            change: Change::NewVersion,
        }
    }
}

/// A registry of `agents` agents and its successor in which agent 0 is deprecated in favour
/// of agent 1, built once per process and size.
pub fn deprecation(agents: usize) -> Arc<(Snapshot, Snapshot)> {
    static CACHE: Pairs = OnceLock::new();
    pair_once(&CACHE, agents, || {
        let key = publisher_key();
        let first = registry(agents).0.clone();
        let current = first
            .manifest(DEPRECATED_AGENT)
            .unwrap_or_else(|| panic!("{DEPRECATED_AGENT} is not in the registry"))
            .unwrap_or_else(|e| panic!("{DEPRECATED_AGENT}: {e}"));
        let mut body = current.body.clone();
        body.updated_at += 1;
        let deprecated = body
            .deprecate(Some(SUCCESSOR_AGENT))
            .unwrap_or_else(|e| panic!("deprecating {DEPRECATED_AGENT}: {e}"))
            .sign(&key);
        let second = snapshot::amend(
            &first,
            &key,
            &[deprecated],
            crate::federation::EPOCH_UNIX - 59,
            7 * 86_400,
        )
        .unwrap_or_else(|e| panic!("amending the registry: {e}"));
        (first, second)
    })
}

/// The agent [`Change::Deprecate`] deprecates, and its successor.
pub const DEPRECATED_AGENT: &str = "sim/sim-agent-0";
/// The successor [`Change::Deprecate`] names.
pub const SUCCESSOR_AGENT: &str = "sim/sim-agent-1";

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// "publish-converge": every node holds the publisher's registry; the publisher changes one
/// agent; every node must reach the new head, holding a snapshot that loads and verifies
/// block by block, with no node blaming an honest peer. Reports the time for the last node to
/// import the head, and the bytes each node received for the change.
pub fn publish_converge(seed: u64, params: &PublishConverge) -> Report {
    let mut rng = Rng::new(seed);
    let topology = &params.topology;
    let specs = topology.specs(&mut rng);
    let n = specs.len();
    let config = SyncConfig::default();
    let snapshots = match params.change {
        Change::NewVersion => registry(params.agents),
        Change::Deprecate => deprecation(params.agents),
    };
    let (first, second) = (&snapshots.0, &snapshots.1);
    let mut failures = Vec::new();
    let base = MemoryStore::new();
    if let Err(error) = seed_store(&base, first) {
        failures.push(format!("seeding the stores: {error}"));
    }
    let world = match World::new(specs, config, &base) {
        Ok(world) => world,
        Err(error) => {
            failures.push(format!("copying the stores: {error}"));
            return Report {
                scenario: "publish-converge",
                seed,
                failures,
                figures: BTreeMap::new(),
            };
        }
    };

    let mut sim = crate::runner::simulation(&world, topology, seed, Duration::from_secs(60));

    let outcome: Arc<Mutex<Option<(u64, u64)>>> = Arc::new(Mutex::new(None));
    let bytes_before: Arc<Mutex<Counters>> = Arc::new(Mutex::new(Default::default()));
    publish_and_watch(
        &mut sim,
        world.clone(),
        second.clone(),
        outcome.clone(),
        bytes_before.clone(),
    );
    if let Err(error) = sim.run() {
        failures.push(format!("simulation error: {error}"));
    }

    let mut figures = BTreeMap::new();
    let start = outcome.lock().ok().and_then(|o| *o).map(|(s, _)| s);
    let commit = second.commit_cid;
    failures.extend(holds_the_new_snapshot(&world, second));
    if params.change == Change::Deprecate {
        failures.extend(serves_the_deprecation(&world, second));
    }
    let mut times = Vec::new();
    world.observe(|o| {
        for (i, offenses) in o.offenses.iter().enumerate() {
            if !offenses.is_empty() {
                failures.push(format!("node {i} blamed honest peers: {offenses:?}"));
            }
        }
        if let Some(start) = start {
            times.extend(
                o.imported
                    .iter()
                    .skip(1)
                    .filter_map(|imported| imported.get(&commit))
                    .map(|at| at.saturating_sub(start)),
            );
        }
        let before = bytes_before.lock().map(|b| b.clone()).unwrap_or_default();
        byte_figures(o, &before, &mut figures);
    });
    figures.insert(
        "converge_ms",
        json!(times.iter().max().copied().unwrap_or(0)),
    );
    figures.insert("head_ms_median", json!(median(&mut times.clone())));
    figures.insert(
        "inter_region_rtt_ms",
        json!(2 * topology.inter.as_millis() as u64),
    );
    figures.insert("nodes", json!(n));
    figures.insert("agents", json!(params.agents));
    figures.insert("commit_bytes", json!(second.commit.to_block().len()));
    Report {
        scenario: "publish-converge",
        seed,
        failures,
        figures,
    }
}

/// The scenario's client: once the mesh has formed (2 s), records every node's byte counters
/// in `bytes_before`, publishes `second` on node 0, and records in `outcome` when it did and
/// when every node had imported it (or 20 s passed).
fn publish_and_watch(
    sim: &mut turmoil::Sim<'_>,
    world: Arc<World>,
    second: Snapshot,
    outcome: Arc<Mutex<Option<(u64, u64)>>>,
    bytes_before: Arc<Mutex<Counters>>,
) {
    sim.client("scenario", async move {
        // Let the mesh form and the first head exchanges finish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(mut slot) = bytes_before.lock() {
            *slot = world.observe(|o| {
                (
                    o.bytes_in.clone(),
                    o.bytes_answers.clone(),
                    o.bytes_requests.clone(),
                )
            });
        }
        let start = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        let commit = second.commit_cid;
        world.command(0, Command::Publish(Box::new(second)));
        let deadline = start + 20_000;
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
            let done = world.observe(|o| o.imported.iter().all(|m| m.contains_key(&commit)));
            if done || now > deadline {
                if let Ok(mut slot) = outcome.lock() {
                    *slot = Some((start, now));
                }
                return Ok(());
            }
        }
    });
}

/// Bytes each node had received, answered with and been asked for, by node.
type Counters = (Vec<u64>, Vec<u64>, Vec<u64>);

/// Whether every node holds the new head and every block of its snapshot (the store holds
/// only verified blocks); a failure for each that does not.
fn holds_the_new_snapshot(world: &World, second: &Snapshot) -> Vec<String> {
    let publisher = publisher_key().did();
    let commit = second.commit_cid;
    let mut failures = Vec::new();
    for (i, store) in world.stores.iter().enumerate() {
        match store.head(&publisher) {
            Ok(Some(head)) if head.commit == commit => {}
            other => failures.push(format!(
                "node {i} holds {other:?}, not the new head {commit}"
            )),
        }
        // Every block of the new snapshot is held (the store holds only verified blocks).
        let missing = second
            .blocks
            .keys()
            .filter(|cid| !store.contains(cid).unwrap_or(false))
            .count();
        if missing > 0 {
            failures.push(format!(
                "node {i} lacks {missing} blocks of the new snapshot"
            ));
        }
    }
    failures
}

/// Whether every node's copy of the deprecated agent, read from its own store at the new
/// head, is the organisation's signed deprecation naming its successor.
fn serves_the_deprecation(world: &World, second: &Snapshot) -> Vec<String> {
    let Some(cid) = second.tree.get(DEPRECATED_AGENT.as_bytes()) else {
        return vec![format!("the new snapshot does not list {DEPRECATED_AGENT}")];
    };
    let mut failures = Vec::new();
    for (i, store) in world.stores.iter().enumerate() {
        let manifest = match store.get(&cid) {
            Ok(Some(block)) => meridian_registry::manifest::Manifest::decode(&block),
            other => {
                failures.push(format!("node {i} lacks the deprecation {cid}: {other:?}"));
                continue;
            }
        };
        match manifest {
            Ok(m)
                if m.verify_signature().is_ok()
                    && m.lifecycle() == meridian_registry::manifest::Lifecycle::Deprecated
                    && m.body
                        .deprecation
                        .as_ref()
                        .and_then(|d| d.superseded_by.as_deref())
                        == Some(SUCCESSOR_AGENT) => {}
            other => failures.push(format!(
                "node {i} holds {other:?} for {DEPRECATED_AGENT}, not its signed deprecation"
            )),
        }
    }
    failures
}

/// The bytes figures since `before` (max and median per node): everything a node received
/// (gossip, answers, the requests of peers it served); what it received for its own copy of
/// the change (all but those requests); the requests it served; the answers to its own
/// requests alone (what it fetched).
fn byte_figures(
    o: &crate::federation::Observed,
    before: &Counters,
    figures: &mut BTreeMap<&'static str, serde_json::Value>,
) {
    let (before, answers_before, requests_before) = before;
    let since = |now: &[u64], before: &[u64]| -> Vec<u64> {
        now.iter()
            .enumerate()
            .skip(1)
            .map(|(i, b)| b.saturating_sub(before.get(i).copied().unwrap_or(0)))
            .collect()
    };
    // Everything a node received (gossip, answers, the requests of peers it served); what
    // it received for its own copy of the change (all but those requests); and the
    // answers to its own requests alone: what it fetched.
    let all = since(&o.bytes_in, before);
    let served = since(&o.bytes_requests, requests_before);
    let own: Vec<u64> = all
        .iter()
        .zip(&served)
        .map(|(all, served)| all - served)
        .collect();
    for (key_max, key_median, mut bytes) in [
        ("bytes_per_node_max", "bytes_per_node_median", all),
        ("own_bytes_per_node_max", "own_bytes_per_node_median", own),
        (
            "request_bytes_per_node_max",
            "request_bytes_per_node_median",
            served,
        ),
        (
            "answer_bytes_per_node_max",
            "answer_bytes_per_node_median",
            since(&o.bytes_answers, answers_before),
        ),
    ] {
        figures.insert(key_max, json!(bytes.iter().max().copied().unwrap_or(0)));
        figures.insert(key_median, json!(median(&mut bytes)));
    }
}

/// Scenario names this build knows.
pub const SCENARIOS: &[&str] = &[
    "publish-converge",
    "partition-heal",
    "churn",
    "byzantine",
    "swarm",
    "governance",
    "hub-latency",
    "hub-churn",
    "rate-limit",
];

/// Runs one scenario by name with its default parameters.
pub fn run(name: &str, seed: u64) -> Option<Report> {
    match name {
        "publish-converge" => Some(publish_converge(seed, &PublishConverge::default())),
        "partition-heal" => Some(crate::faults::partition_heal(seed)),
        "churn" => Some(crate::faults::churn(seed)),
        "byzantine" => Some(crate::faults::byzantine(seed)),
        "swarm" => Some(crate::faults::swarm(seed)),
        "governance" => Some(crate::governance::governance(seed)),
        "hub-latency" => Some(crate::hub_scenarios::hub_latency(seed)),
        "hub-churn" => Some(crate::hub_scenarios::hub_churn(seed)),
        "rate-limit" => Some(crate::hub_scenarios::rate_limit(seed)),
        _ => None,
    }
}
