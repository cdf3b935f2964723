//! Runs a world under a schedule of faults: the part every fault scenario shares.
//!
//! A scenario builds a [`World`], a [`Topology`] and a list of [`Scheduled`] actions
//! (publishes, injected gossip, partitions, repairs, crashes, restarts, link failure rates,
//! duplicated and reordered messages);
//! [`run`] steps turmoil one tick at a time, applies each action when its simulated time
//! comes, and stops when every action is done and the scenario's `done` condition holds, or
//! at the deadline. Checks that several scenarios share ([`check_converged`],
//! [`lies_about_honest_peers`]) live here too.

use std::sync::Arc;
use std::time::Duration;

use meridian_registry::snapshot::Snapshot;
use meridian_registry::store::BlockStore as _;

use crate::federation::{Command, World, host_name, run_node};
use crate::scenarios::Topology;

/// Something that happens to the federation.
#[derive(Debug)]
pub enum Action {
    /// A node publishes this snapshot as its own.
    Publish(usize, Box<Snapshot>),
    /// A node sends these gossip bytes to all its links, unchecked.
    Inject(usize, Vec<u8>),
    /// Messages between the two sets of nodes are dropped, both ways.
    Partition(Vec<usize>, Vec<usize>),
    /// Messages from the first set to the second are dropped.
    PartitionOneway(Vec<usize>, Vec<usize>),
    /// Undoes partitions between the two sets (both ways).
    Repair(Vec<usize>, Vec<usize>),
    /// The node's software stops (its store survives, as a disk would).
    Crash(usize),
    /// The node's software starts again.
    Restart(usize),
    /// Every link drops a message with this probability (0 for none).
    FailRate(f64),
    /// Node links duplicate and hold back messages like this (`None` ends it).
    MessageFaults(Option<crate::federation::MessageFaults>),
    /// Links between regions take this much longer than the topology says (zero ends a
    /// spike).
    LatencySpike(Duration),
    /// Region `r`'s hub stops (its store survives).
    CrashHub(usize),
    /// Region `r`'s hub starts again.
    RestartHub(usize),
    /// A governance admin hands this document to a node, which applies and gossips it.
    Governance(usize, Vec<u8>),
    /// The trunk links between hubs drop this fraction of datagrams and delay each by its
    /// latency plus up to this jitter (so datagrams overtake each other).
    TrunkFaults(f64, Duration),
    /// Region `r`'s caller makes this A2A call.
    Call(usize, crate::hubs::CallJob),
    /// Nothing: keeps the run going at least until its time (to watch for what must not
    /// happen).
    Wait,
}

/// An action at a simulated time, in milliseconds from the start.
#[derive(Debug)]
pub struct Scheduled {
    /// When.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The simulated millisecond at which `done` first held after the last action, if it did.
    pub done_ms: Option<u64>,
    /// The simulated millisecond the last action was applied.
    pub last_action_ms: u64,
    /// An error from turmoil or a host, if any.
    pub error: Option<String>,
    /// Crashes applied.
    pub crashes: usize,
}

fn hosts(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|&i| host_name(i)).collect()
}

fn pairs(a: &[usize], b: &[usize]) -> Vec<(String, String)> {
    let b = hosts(b);
    hosts(a)
        .into_iter()
        .flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone())))
        .collect()
}

/// A turmoil simulation of `world` on `topology`: one host per node running [`run_node`], one
/// per hub, agent and caller the world and topology have,
/// 1 ms ticks, the seed for turmoil's own randomness, and `duration` at most.
pub fn simulation(
    world: &Arc<World>,
    topology: &Topology,
    seed: u64,
    duration: Duration,
) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(duration)
        .tick_duration(Duration::from_millis(1))
        .rng_seed(seed)
        .build();
    for i in 0..world.specs.len() {
        let world = world.clone();
        sim.host(host_name(i), move || run_node(i, world.clone()));
    }
    for r in 0..world.hubs.len() {
        let world = world.clone();
        sim.host(crate::hubs::hub_host(r), move || {
            crate::hubs::run_hub(r, world.clone())
        });
    }
    if topology.a2a {
        for r in 0..topology.regions {
            sim.host(crate::hubs::agent_host(r), move || {
                crate::hubs::run_agent(r)
            });
            let world = world.clone();
            sim.host(crate::hubs::caller_host(r), move || {
                crate::hubs::run_caller(r, world.clone())
            });
        }
    }
    topology.apply(&sim);
    sim
}

/// Runs `world` on `topology` under `schedule` until `done` holds after the last action, or
/// until `deadline_ms` of simulated time. `done` is checked every simulated millisecond.
pub fn run(
    world: &Arc<World>,
    topology: &Topology,
    seed: u64,
    schedule: Vec<Scheduled>,
    deadline_ms: u64,
    done: impl Fn(&World) -> bool,
) -> Outcome {
    run_observed(world, topology, seed, schedule, deadline_ms, |w, _| done(w))
}

/// Carries out one scheduled action on the simulation (crashes are counted in `outcome`).
fn apply(
    sim: &mut turmoil::Sim<'_>,
    world: &Arc<World>,
    topology: &Topology,
    action: Action,
    outcome: &mut Outcome,
) {
    match action {
        Action::Publish(node, snapshot) => {
            world.command(node, Command::Publish(snapshot));
        }
        Action::Inject(node, bytes) => {
            world.command(node, Command::Inject(bytes));
        }
        Action::Partition(a, b) => {
            for (x, y) in pairs(&a, &b) {
                sim.partition(x, y);
            }
        }
        Action::PartitionOneway(a, b) => {
            for (x, y) in pairs(&a, &b) {
                sim.partition_oneway(x, y);
            }
        }
        Action::Repair(a, b) => {
            for (x, y) in pairs(&a, &b) {
                sim.repair(x.clone(), y.clone());
                sim.repair_oneway(x.clone(), y.clone());
                sim.repair_oneway(y, x);
            }
        }
        Action::Crash(node) => {
            outcome.crashes += 1;
            world.observe(|o| o.commands[node] = None);
            sim.crash(host_name(node));
        }
        Action::Restart(node) => sim.bounce(host_name(node)),
        Action::CrashHub(region) => {
            outcome.crashes += 1;
            world.observe(|o| {
                if let Some(hub) = o.hubs.get_mut(region).and_then(Option::take) {
                    o.hub_cross_region_bytes_retired += crate::hubs::hub_cross_region_bytes(&hub);
                }
            });
            sim.crash(crate::hubs::hub_host(region));
        }
        Action::RestartHub(region) => sim.bounce(crate::hubs::hub_host(region)),
        Action::FailRate(rate) => sim.set_fail_rate(rate),
        Action::MessageFaults(faults) => world.observe(|o| o.set_message_faults(faults)),
        Action::LatencySpike(extra) => {
            topology.set_latencies(sim, topology.intra, topology.inter + extra);
        }
        Action::Governance(node, block) => {
            world.command(node, Command::Governance(block));
        }
        Action::TrunkFaults(loss, jitter) => {
            for a in 0..world.hubs.len() {
                for b in a + 1..world.hubs.len() {
                    let (x, y) = (crate::hubs::hub_host(a), crate::hubs::hub_host(b));
                    sim.set_link_fail_rate(x.as_str(), y.as_str(), loss);
                    sim.set_link_max_message_latency(x, y, topology.inter + jitter);
                }
            }
        }
        Action::Call(region, job) => world.observe(|o| {
            if let Some(Some(caller)) = o.callers.get(region) {
                let _ = caller.send(job);
            }
        }),
        Action::Wait => {}
    }
}

/// [`run`], with `done` also told the simulated millisecond, so it can watch (and record)
/// the world as the run goes, not only decide when it is over.
pub fn run_observed(
    world: &Arc<World>,
    topology: &Topology,
    seed: u64,
    mut schedule: Vec<Scheduled>,
    deadline_ms: u64,
    done: impl Fn(&World, u64) -> bool,
) -> Outcome {
    let mut sim = simulation(
        world,
        topology,
        seed,
        Duration::from_millis(deadline_ms + 1_000),
    );
    schedule.sort_by_key(|s| s.at_ms);
    let mut schedule = schedule.into_iter().peekable();
    let mut outcome = Outcome::default();
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while let Some(next) = schedule.next_if(|s| s.at_ms <= now) {
            outcome.last_action_ms = now;
            apply(&mut sim, world, topology, next.action, &mut outcome);
        }
        let finished = done(world, now);
        if schedule.peek().is_none() && finished {
            outcome.done_ms = Some(now);
            return outcome;
        }
        if now > deadline_ms {
            return outcome;
        }
        if let Err(error) = sim.step() {
            outcome.error = Some(error.to_string());
            return outcome;
        }
    }
}

/// Whether every node in `nodes` has imported (or published) `commit`.
pub fn all_imported(world: &World, nodes: &[usize], commit: &meridian_registry::Cid) -> bool {
    world.observe(|o| nodes.iter().all(|&i| o.imported[i].contains_key(commit)))
}

/// Checks that every node in `nodes` holds `snapshot` as the publisher's head, with every
/// one of its blocks (stores hold only verified blocks); returns the problems found.
pub fn check_converged(world: &World, nodes: &[usize], snapshot: &Snapshot) -> Vec<String> {
    let mut failures = Vec::new();
    let publisher = snapshot.commit.body.publisher.to_did();
    for &i in nodes {
        let store = &world.stores[i];
        match store.head(&publisher) {
            Ok(Some(head)) if head.commit == snapshot.commit_cid => {}
            other => failures.push(format!(
                "node {i} holds {other:?}, not the head {}",
                snapshot.commit_cid
            )),
        }
        let missing = snapshot
            .blocks
            .keys()
            .filter(|cid| !store.contains(cid).unwrap_or(false))
            .count();
        if missing > 0 {
            failures.push(format!("node {i} lacks {missing} blocks of the snapshot"));
        }
    }
    failures
}

/// Offenses that only a liar commits (slowness, stale heads and expiry can happen to anyone).
pub const LIES: &[&str] = &[
    "malformed",
    "oversized",
    "bad_signature",
    "tampered_block",
    "unexpected_block",
    "invalid_snapshot",
    "equivocation",
];

/// Honest nodes that some honest node penalised for a lie, with what it said they did.
pub fn lies_about_honest_peers(world: &World) -> Vec<String> {
    let honest = world.honest();
    world.observe(|o| {
        let mut found = Vec::new();
        for &i in &honest {
            for (peer, offense) in &o.penalties[i] {
                if honest.contains(peer) && LIES.contains(offense) {
                    found.push(format!("node {i} blamed honest node {peer} for {offense}"));
                }
            }
        }
        found.sort();
        found.dedup();
        found
    })
}
