//! The hub scenarios: the same federation with and without hubs (hub-latency), hubs and nodes
//! crashing while a publisher keeps publishing (hub-churn), and one organisation bursting
//! through a hub while others keep their share (rate-limit). Every hub runs the real hub
//! logic, HTTP API and QUIC trunk ([`crate::hubs`]).

use meridian_registry::Cid;
use meridian_registry::snapshot::Snapshot;
use meridian_registry::store::MemoryStore;
use meridian_sync::SyncConfig;
use serde_json::{Value, json};

use crate::faults::{FAULT_AGENTS, SETTLE_MAX_MS, at, common_checks, failed_to_start, report};
use crate::federation::{Rng, World, seed_store};
use crate::hubs::{CallJob, CallOutcome, Route, sim_hub_config};
use crate::runner::{self, Action, LIES, Outcome, Scheduled, all_imported, check_converged};
use crate::scenarios::{Report, Topology, publisher_key, registry_chain};

/// The agent every scenario calls: agent 0 of the publisher's registry (region 0).
const AGENT: &str = "sim/sim-agent-0";

/// A world on `topology` whose stores all hold `first`; with hubs configured from `hubs`.
fn hub_world(
    topology: &Topology,
    rng: &mut Rng,
    first: &Snapshot,
    hubs: Option<meridian_hub::daemon::config::HubConfig>,
) -> Result<std::sync::Arc<World>, String> {
    let specs = topology.specs(rng);
    let n = specs.len();
    let base = MemoryStore::new();
    seed_store(&base, first)?;
    World::build(
        specs,
        SyncConfig::default(),
        &base,
        vec![None; n],
        topology.regions,
        hubs.filter(|_| topology.hubs),
    )
}

/// A call of the scenario's agent from region `from`'s caller.
fn call(from: usize, route: Route, org: &str, tag: String) -> Action {
    Action::Call(
        from,
        CallJob {
            route,
            caller_org: org.to_owned(),
            agent_region: 0,
            agent: AGENT.to_owned(),
            publisher: publisher_key().did(),
            tag,
        },
    )
}

/// The calls recorded under tags starting with `prefix`.
fn calls(world: &World, prefix: &str) -> Vec<CallOutcome> {
    world.observe(|o| {
        o.calls
            .iter()
            .filter(|(tag, _)| tag.starts_with(prefix))
            .map(|(_, outcome)| outcome.clone())
            .collect()
    })
}

/// Nodes that penalised an honest hub for a lie (hubs only pass on blocks checked against
/// their CIDs).
fn lies_about_hubs(world: &World) -> Vec<String> {
    let n = world.specs.len();
    let honest = |peer: usize| {
        world
            .hubs
            .get(peer - n)
            .is_some_and(|slot| !slot.tamper.load(std::sync::atomic::Ordering::Relaxed))
    };
    world.observe(|o| {
        let mut found = Vec::new();
        for (i, penalties) in o.penalties.iter().enumerate() {
            for (peer, offense) in penalties {
                if *peer >= n && honest(*peer) && LIES.contains(offense) {
                    found.push(format!(
                        "node {i} blamed the hub of region {} for {offense}",
                        peer - n
                    ));
                }
            }
        }
        found.sort();
        found.dedup();
        found
    })
}

/// Every block in every hub's store checked against its CID; returns (blocks checked, problems).
fn check_hub_stores(world: &World) -> (u64, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for slot in &world.hubs {
        let tree = match slot.db.open_tree("blocks") {
            Ok(tree) => tree,
            Err(error) => {
                failures.push(format!("hub {}: store unreadable: {error}", slot.region));
                continue;
            }
        };
        for entry in tree.iter() {
            let Ok((key, value)) = entry else {
                failures.push(format!("hub {}: store unreadable", slot.region));
                break;
            };
            checked += 1;
            let good = Cid::try_from(key.as_ref()).is_ok_and(|cid| {
                value.len() >= 8 && meridian_registry::ids::verify_block(&cid, &value[8..]).is_ok()
            });
            if !good {
                failures.push(format!(
                    "hub {} holds a block that does not match its CID",
                    slot.region
                ));
            }
        }
    }
    (checked, failures)
}

fn percentile(values: &[u64], q: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}

fn simulation_failures(outcome: &Outcome) -> Vec<String> {
    outcome
        .error
        .iter()
        .map(|e| format!("simulation error: {e}"))
        .collect()
}

// ---------------------------------------------------------------- hub-latency

/// Agents in the hub-latency registry (the figure: a one-agent change in 10,000).
pub const LATENCY_AGENTS: usize = 10_000;
/// Calls each of regions 1 and 2 makes to region 0's agent, once everything is warm.
pub const LATENCY_CALLS: usize = 10;

/// What one variant (with or without hubs) of hub-latency measured.
#[derive(Debug, Default)]
struct Variant {
    failures: Vec<String>,
    converge_ms: Option<u64>,
    head_median_ms: Option<u64>,
    cross_region_bytes: u64,
    trunk_fetches: u64,
    bytes_per_node_max: u64,
    call_ms: Vec<u64>,
}

/// Counters the hub-latency scenario reads before and after the measured change.
#[derive(Debug, Default, Clone)]
struct Counters {
    cross_region_bytes: u64,
    trunk_fetches: u64,
    bytes_in: Vec<u64>,
}

fn counters(world: &World) -> Counters {
    let cross_region_bytes = world.cross_region_bytes();
    world.observe(|o| Counters {
        cross_region_bytes,
        trunk_fetches: o
            .hubs
            .iter()
            .flatten()
            .map(|h| {
                h.metrics
                    .counter("meridian_hub_upstream_calls_total{kind=\"hub\"}")
            })
            .sum(),
        bytes_in: o.bytes_in.clone(),
    })
}

/// The latency run's schedule: change 1 warms the trunks and caches, change 2 at
/// `measured_at` is measured; from `calls_at`, each far region's caller warms the agent path
/// with one call, then makes [`LATENCY_CALLS`] calls 600 ms apart.
fn latency_schedule(
    topology: &Topology,
    chain: &[Snapshot],
    route: Route,
    measured_at: u64,
    calls_at: u64,
) -> Vec<Scheduled> {
    let mut schedule = vec![
        at(2_000, Action::Publish(0, Box::new(chain[1].clone()))),
        at(measured_at, Action::Publish(0, Box::new(chain[2].clone()))),
    ];
    for from in 1..topology.regions {
        schedule.push(at(
            calls_at - 600,
            call(from, route, "caller", format!("warm-{from}")),
        ));
        for k in 0..LATENCY_CALLS {
            schedule.push(at(
                calls_at + 600 * k as u64,
                call(from, route, "caller", format!("call-{from}-{k}")),
            ));
        }
    }
    schedule
}

/// The traffic of the measured change: the counters' growth between `before` and `after`.
fn measured_traffic(
    variant: &mut Variant,
    before: &std::sync::Mutex<Option<Counters>>,
    after: &std::sync::Mutex<Option<Counters>>,
) {
    let (before, after) = (
        before
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_default(),
        after
            .lock()
            .ok()
            .and_then(|a| a.clone())
            .unwrap_or_default(),
    );
    variant.cross_region_bytes = after
        .cross_region_bytes
        .saturating_sub(before.cross_region_bytes);
    variant.trunk_fetches = after.trunk_fetches.saturating_sub(before.trunk_fetches);
    variant.bytes_per_node_max = after
        .bytes_in
        .iter()
        .zip(before.bytes_in.iter().chain(std::iter::repeat(&0)))
        .skip(1)
        .map(|(a, b)| a.saturating_sub(*b))
        .max()
        .unwrap_or(0);
}

fn latency_variant(seed: u64, chain: &[Snapshot], hubs: bool) -> Variant {
    let name = if hubs { "with hubs" } else { "without hubs" };
    let topology = Topology {
        hubs,
        a2a: true,
        links_across: if hubs { 0 } else { 1 },
        ..Topology::default()
    };
    let mut rng = Rng::new(seed);
    let world = match hub_world(&topology, &mut rng, &chain[0], Some(sim_hub_config())) {
        Ok(world) => world,
        Err(error) => {
            return Variant {
                failures: vec![format!("{name}: setting up: {error}")],
                ..Variant::default()
            };
        }
    };
    let route = if hubs { Route::Hub } else { Route::DirectTls };
    // Change 1 warms the trunks and caches; change 2 is measured; then, once all is quiet,
    // one call from each far region warms the agent path, and the measured calls follow.
    let measured_at = 5_000;
    let calls_at = 9_000;
    let schedule = latency_schedule(&topology, chain, route, measured_at, calls_at);
    let expected = (topology.regions - 1) * (LATENCY_CALLS + 1);
    let commit = chain[2].commit_cid;
    let everyone: Vec<usize> = (0..topology.nodes).collect();

    // The counters around the measured change are read in the scheduled run's own steps.
    let before = std::sync::Arc::new(std::sync::Mutex::new(None::<Counters>));
    let after = std::sync::Arc::new(std::sync::Mutex::new(None::<Counters>));
    let outcome = {
        let before = before.clone();
        let after = after.clone();
        runner::run_observed(
            &world,
            &topology,
            seed,
            schedule,
            calls_at + 600 * LATENCY_CALLS as u64 + SETTLE_MAX_MS,
            |w, now| {
                let snap = |slot: &std::sync::Mutex<Option<Counters>>| {
                    if let Ok(mut slot) = slot.lock()
                        && slot.is_none()
                    {
                        *slot = Some(counters(w));
                    }
                };
                if now + 1 >= measured_at {
                    snap(&before);
                }
                if now >= calls_at - 700 {
                    snap(&after);
                }
                all_imported(w, &everyone, &commit) && w.observe(|o| o.calls.len()) >= expected
            },
        )
    };
    let mut variant = Variant {
        failures: simulation_failures(&outcome),
        ..Variant::default()
    };
    if outcome.done_ms.is_none() {
        variant.failures.push(format!(
            "{name}: the run did not finish its calls and converge"
        ));
    }
    for failure in check_converged(&world, &everyone, &chain[2]) {
        variant.failures.push(format!("{name}: {failure}"));
    }
    for failure in crate::runner::lies_about_honest_peers(&world)
        .into_iter()
        .chain(lies_about_hubs(&world))
    {
        variant.failures.push(format!("{name}: {failure}"));
    }
    measured_traffic(&mut variant, &before, &after);
    let mut times = world.observe(|o| {
        let start = o.imported[0].get(&commit).copied();
        o.imported
            .iter()
            .skip(1)
            .filter_map(|m| Some(m.get(&commit)?.saturating_sub(start?)))
            .collect::<Vec<u64>>()
    });
    times.sort_unstable();
    variant.converge_ms = times.last().copied();
    variant.head_median_ms = percentile(&times, 0.5);
    for outcome in calls(&world, "") {
        if outcome.status != 200 {
            variant.failures.push(format!(
                "{name}: a call answered {} ({:?})",
                outcome.status, outcome.error
            ));
        }
    }
    variant.call_ms = calls(&world, "call-").iter().map(|c| c.ms).collect();
    variant
}

/// "hub-latency": the same federation (50 nodes, 3 regions, 2 ms inside and 80 ms between),
/// workload and seed with a hub per region (nodes link only inside their region) and without
/// hubs (nodes also link across regions). Reports time-to-converge, cross-region bytes and
/// upstream trunk fetches for a one-agent change in a 10,000-agent registry, and the latency
/// of A2A calls from the far regions: through warm hubs, and direct over a fresh TLS
/// connection. Fails if a variant does not converge, a call fails, or a call through warm
/// hubs takes more than half of a direct one (median).
pub fn hub_latency(seed: u64) -> Report {
    const SCENARIO: &str = "hub-latency";
    let chain = registry_chain(&publisher_key(), LATENCY_AGENTS, 2);
    let with = latency_variant(seed, &chain, true);
    let without = latency_variant(seed, &chain, false);
    let mut failures: Vec<String> = with
        .failures
        .iter()
        .chain(&without.failures)
        .cloned()
        .collect();
    let hub_p50 = percentile(&with.call_ms, 0.5);
    let direct_p50 = percentile(&without.call_ms, 0.5);
    if let (Some(hub), Some(direct)) = (hub_p50, direct_p50)
        && hub * 2 > direct
    {
        failures.push(format!(
            "a call through warm hubs took {hub} ms (median), more than half of a direct call's {direct} ms"
        ));
    }
    let figure = |v: Option<u64>| v.map_or(Value::Null, |v| json!(v));
    report(
        SCENARIO,
        seed,
        failures,
        [
            ("converge_ms_hubs", figure(with.converge_ms)),
            ("converge_ms_mesh", figure(without.converge_ms)),
            ("head_ms_median_hubs", figure(with.head_median_ms)),
            ("head_ms_median_mesh", figure(without.head_median_ms)),
            ("cross_region_bytes_hubs", json!(with.cross_region_bytes)),
            ("cross_region_bytes_mesh", json!(without.cross_region_bytes)),
            ("trunk_fetches", json!(with.trunk_fetches)),
            ("bytes_per_node_max_hubs", json!(with.bytes_per_node_max)),
            ("bytes_per_node_max_mesh", json!(without.bytes_per_node_max)),
            ("a2a_hub_p50_ms", figure(hub_p50)),
            ("a2a_hub_p90_ms", figure(percentile(&with.call_ms, 0.9))),
            ("a2a_direct_p50_ms", figure(direct_p50)),
            (
                "a2a_direct_p90_ms",
                figure(percentile(&without.call_ms, 0.9)),
            ),
            ("commit_bytes", json!(chain[2].commit.to_block().len())),
        ],
    )
}

// ---------------------------------------------------------------- hub-churn

/// What happens to one region's hub in a hub-churn run (drawn from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubFate {
    /// Crashes once and starts again with its store (comes back warm).
    Restarts,
    /// Is not there when the run starts and joins mid-run with an empty store.
    Joins,
    /// Crashes and never comes back: its region's nodes carry on over the mesh.
    Leaves,
}

impl HubFate {
    /// The fate of each of `regions` hubs: half restart, a quarter join late, a quarter leave
    /// for good; a lying hub always restarts (it must be there to be caught).
    pub fn draw(rng: &mut Rng, regions: usize, liar: Option<usize>) -> Vec<Self> {
        (0..regions)
            .map(|region| match rng.below(4) {
                _ if liar == Some(region) => Self::Restarts,
                2 => Self::Joins,
                3 => Self::Leaves,
                _ => Self::Restarts,
            })
            .collect()
    }

    /// Whether the hub is running when the run ends.
    pub fn up_at_end(self) -> bool {
        self != Self::Leaves
    }
}

/// Whether the heads a hub persisted include the commit `commit` (read from its store, as a
/// restarted hub would).
fn hub_holds_head(slot: &crate::hubs::HubSlot, commit: &Cid) -> bool {
    let Ok(tree) = slot.db.open_tree("heads") else {
        return false;
    };
    tree.iter().flatten().any(|(_, value)| {
        // upstream '\n' tag block
        value
            .iter()
            .position(|b| *b == b'\n')
            .and_then(|split| value.get(split + 2..))
            .is_some_and(|block| meridian_registry::ids::dag_cbor_cid(block) == *commit)
    })
}

/// Schedules each hub's fate (restart, late first start, or leaving for good) and four node
/// crashes and restarts, at times drawn from `rng`.
fn schedule_churn(rng: &mut Rng, fates: &[HubFate], n: usize, schedule: &mut Vec<Scheduled>) {
    for (region, fate) in fates.iter().enumerate() {
        let down = 1_500 + rng.below(6_500) as u64;
        let up = down + 300 + rng.below(2_000) as u64;
        match fate {
            HubFate::Restarts => {
                schedule.push(at(down, Action::CrashHub(region)));
                schedule.push(at(up, Action::RestartHub(region)));
            }
            // Down before its software first runs: the hub starts for the first time later,
            // with the empty store a new hub has: between the first change and a while after
            // the last (8 s), so in some runs everything was published before it could be
            // reached, and only anti-entropy with the other hubs (and its nodes handing it
            // their heads) brings it the last head.
            HubFate::Joins => {
                schedule.push(at(0, Action::CrashHub(region)));
                schedule.push(at(
                    1_000 + rng.below(8_500) as u64,
                    Action::RestartHub(region),
                ));
            }
            HubFate::Leaves => schedule.push(at(down, Action::CrashHub(region))),
        }
    }
    for node in crate::faults::pick_nodes(rng, 4, n) {
        let down = 2_000 + rng.below(6_000) as u64;
        schedule.push(at(down, Action::Crash(node)));
        schedule.push(at(
            down + 200 + rng.below(1_500) as u64,
            Action::Restart(node),
        ));
    }
}

/// What hub churn must leave: the lying hub (if any) caught, every hub's store verified,
/// each hub started as often as its fate says, a hub that joined late holding the last head.
/// Returns the hub blocks checked.
fn hub_churn_checks(
    world: &World,
    liar: Option<usize>,
    fates: &[HubFate],
    last: &Cid,
    failures: &mut Vec<String>,
) -> u64 {
    if let Some(region) = liar {
        let hub = world.hub_peer(region);
        let caught = world.observe(|o| {
            o.penalties.iter().any(|p| {
                p.iter()
                    .any(|(peer, offense)| *peer == hub && LIES.contains(offense))
            })
        });
        if !caught {
            failures.push(format!("nobody caught the lying hub of region {region}"));
        }
    }
    let (checked, problems) = check_hub_stores(world);
    failures.extend(problems);
    let starts = world.observe(|o| o.hub_starts.clone());
    for (region, fate) in fates.iter().enumerate() {
        let expected = match fate {
            HubFate::Restarts => 2,
            HubFate::Joins | HubFate::Leaves => 1,
        };
        if starts.get(region) != Some(&expected) {
            failures.push(format!(
                "the hub of region {region} ({fate:?}) started {:?} times, {expected} expected",
                starts.get(region)
            ));
        }
        if *fate == HubFate::Joins && !hub_holds_head(&world.hubs[region], last) {
            failures.push(format!(
                "the hub that joined region {region} does not hold the last head"
            ));
        }
    }
    checked
}

/// "hub-churn": 30 nodes in 3 regions, each region with a hub, nodes also linked across
/// regions (the mesh the nodes fall back to). The publisher publishes four changes while each
/// hub, by a draw from the seed, crashes and restarts once (its store survives, so it comes
/// back warm), joins late with an empty store (sometimes after the last change), or leaves
/// for good; four nodes crash and
/// restart, and the trunk between hubs loses, reorders and duplicates datagrams; in one run of
/// three, one hub also tampers with every answer it gives its nodes.
/// After the faults every node must hold the last change with every block (nothing from the
/// lying hub gets in; the nodes of a hub that left get it over the mesh), nobody may blame an
/// honest node or hub for a lie, the lying hub must be caught, a hub that joined must hold the
/// last head, and every block in every hub's store must match its CID.
pub fn hub_churn(seed: u64) -> Report {
    const SCENARIO: &str = "hub-churn";
    let mut rng = Rng::new(seed);
    let topology = Topology {
        nodes: 30,
        hubs: true,
        ..Topology::default()
    };
    let chain = registry_chain(&publisher_key(), FAULT_AGENTS, 4);
    let world = match hub_world(&topology, &mut rng, &chain[0], Some(sim_hub_config())) {
        Ok(world) => world,
        Err(error) => return failed_to_start(SCENARIO, seed, error),
    };
    let n = topology.nodes;
    // One run in three, one hub lies: every answer it gives its nodes is tampered with.
    let liar = (rng.below(3) == 0).then(|| rng.below(topology.regions));
    if let Some(region) = liar {
        world.hubs[region]
            .tamper
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // Between hubs, the trunk's datagrams are lost (2%), reordered (up to 40 ms of jitter on
    // 80 ms) and duplicated (2%): QUIC must carry the hubs' traffic through all three.
    for slot in &world.hubs {
        slot.duplicate_per_mille
            .store(20, std::sync::atomic::Ordering::Relaxed);
    }
    let mut schedule: Vec<Scheduled> = (1..=4)
        .map(|k| {
            at(
                2_000 * k as u64,
                Action::Publish(0, Box::new(chain[k].clone())),
            )
        })
        .collect();
    schedule.push(at(
        0,
        Action::TrunkFaults(0.02, std::time::Duration::from_millis(40)),
    ));
    let fates = HubFate::draw(&mut rng, topology.regions, liar);
    schedule_churn(&mut rng, &fates, n, &mut schedule);
    let last = chain[4].commit_cid;
    let everyone: Vec<usize> = (0..n).collect();
    let outcome = runner::run(
        &world,
        &topology,
        seed,
        schedule,
        10_500 + SETTLE_MAX_MS,
        |w| {
            all_imported(w, &everyone, &last)
                && w.observe(|o| {
                    o.hubs
                        .iter()
                        .zip(&fates)
                        .all(|(hub, fate)| hub.is_some() == fate.up_at_end())
                })
                && fates.iter().enumerate().all(|(region, fate)| {
                    *fate != HubFate::Joins || hub_holds_head(&w.hubs[region], &last)
                })
        },
    );
    let legit: Vec<Cid> = chain.iter().map(|s| s.commit_cid).collect();
    let mut failures = common_checks(&world, &outcome, &chain[4], &legit);
    failures.extend(lies_about_hubs(&world));
    let checked = hub_churn_checks(&world, liar, &fates, &last, &mut failures);
    let count = |wanted: HubFate| fates.iter().filter(|f| **f == wanted).count();
    let hub_restarts = count(HubFate::Restarts);
    report(
        SCENARIO,
        seed,
        failures,
        [
            (
                "converge_after_churn_ms",
                crate::faults::settle_ms(&outcome),
            ),
            // A hub that joins late is held down from the start; that is not a crash.
            ("crashes", json!(outcome.crashes - count(HubFate::Joins))),
            ("hub_restarts", json!(hub_restarts)),
            ("hubs_joined", json!(count(HubFate::Joins))),
            ("hubs_left", json!(count(HubFate::Leaves))),
            ("lying_hub", liar.map_or(Value::Null, |r| json!(r))),
            (
                "trunk_datagrams_duplicated",
                json!(
                    world
                        .hubs
                        .iter()
                        .map(|s| s.duplicated.load(std::sync::atomic::Ordering::Relaxed))
                        .sum::<u64>()
                ),
            ),
            ("hub_blocks_checked", json!(checked)),
            ("cross_region_bytes", json!(world.cross_region_bytes())),
            ("nodes", json!(n)),
        ],
    )
}

// ---------------------------------------------------------------- rate-limit

/// The relay's default rate in the rate-limit scenario (per org and per region, per second).
pub const RATE_PER_SECOND: u32 = 20;
/// Its burst.
pub const RATE_BURST: u32 = 10;
/// Calls the greedy org makes in one second.
pub const GREEDY_CALLS: usize = 200;

/// What the limiter must do: every polite call answered, every greedy call answered or
/// refused with 429 and a Retry-After, greedy limited, and never more of its calls through in
/// its one-second burst than GCRA allows. Returns greedy's calls through and refused.
fn limiter_checks(
    greedy: &[CallOutcome],
    polite_calls: &[CallOutcome],
    failures: &mut Vec<String>,
) -> (usize, usize) {
    let greedy_ok = greedy.iter().filter(|c| c.status == 200).count();
    let greedy_limited = greedy.iter().filter(|c| c.status == 429).count();
    for c in polite_calls {
        if c.status != 200 {
            failures.push(format!(
                "a polite org's call answered {} ({:?})",
                c.status, c.error
            ));
        }
    }
    for c in greedy {
        match c.status {
            200 => {}
            429 if c.retry_after.is_some_and(|s| s >= 1) => {}
            429 => failures.push("a 429 without Retry-After".into()),
            other => failures.push(format!("a greedy call answered {other} ({:?})", c.error)),
        }
    }
    // GCRA over the burst's one second: the burst, plus one per 1/rate, plus one for the edge.
    let allowed = RATE_BURST as usize + RATE_PER_SECOND as usize + 1;
    if greedy_ok > allowed {
        failures.push(format!(
            "greedy got {greedy_ok} calls through in one second; its limit allows {allowed}"
        ));
    }
    if greedy_limited == 0 {
        failures.push("greedy was never limited".into());
    }
    (greedy_ok, greedy_limited)
}

/// "rate-limit": a hub per region, 6 nodes, the relay limited to 20 calls/s with a burst of
/// 10 per org and per calling region. Org `greedy` in region 2 fires 200 calls at region 0's
/// agent within one second while orgs `polite-a` and `polite-b` in region 1 call at 4/s each.
/// Every polite call must get through; greedy gets at most its rate (plus burst), and every
/// refusal is a 429 with a `Retry-After`.
pub fn rate_limit(seed: u64) -> Report {
    const SCENARIO: &str = "rate-limit";
    let mut rng = Rng::new(seed);
    let topology = Topology {
        nodes: 6,
        hubs: true,
        a2a: true,
        links_across: 0,
        ..Topology::default()
    };
    let chain = registry_chain(&publisher_key(), 200, 1);
    let mut config = sim_hub_config();
    config.relay.default_rps = RATE_PER_SECOND;
    config.relay.default_burst = RATE_BURST;
    let world = match hub_world(&topology, &mut rng, &chain[0], Some(config)) {
        Ok(world) => world,
        Err(error) => return failed_to_start(SCENARIO, seed, error),
    };
    let burst_at = 3_000u64;
    let spacing = 1_000 / GREEDY_CALLS as u64;
    // The seed shifts the polite callers' phase against the burst.
    let phase = rng.below(125) as u64;
    let mut schedule = vec![
        at(1_000, Action::Publish(0, Box::new(chain[1].clone()))),
        at(2_500, call(1, Route::Hub, "warmup", "warm".into())),
    ];
    for k in 0..GREEDY_CALLS as u64 {
        schedule.push(at(
            burst_at + k * spacing + rng.below(spacing as usize) as u64,
            call(2, Route::Hub, "greedy", format!("greedy-{k}")),
        ));
    }
    let mut polite = 0;
    for (index, org) in ["polite-a", "polite-b"].into_iter().enumerate() {
        for k in 0..8u64 {
            let when = burst_at + phase + 125 * index as u64 + 250 * k;
            schedule.push(at(when, call(1, Route::Hub, org, format!("{org}-{k}"))));
            polite += 1;
        }
    }
    let expected = 1 + GREEDY_CALLS + polite;
    let outcome = runner::run(&world, &topology, seed, schedule, 15_000, |w| {
        w.observe(|o| o.calls.len()) >= expected
    });
    let mut failures = simulation_failures(&outcome);
    if outcome.done_ms.is_none() {
        failures.push("not every call finished".into());
    }
    let greedy = calls(&world, "greedy-");
    let polite_calls = calls(&world, "polite-");
    let (greedy_ok, greedy_limited) = limiter_checks(&greedy, &polite_calls, &mut failures);
    let polite_ms: Vec<u64> = polite_calls.iter().map(|c| c.ms).collect();
    let limited_ms: Vec<u64> = greedy
        .iter()
        .filter(|c| c.status == 429)
        .map(|c| c.ms)
        .collect();
    let figure = |v: Option<u64>| v.map_or(Value::Null, |v| json!(v));
    report(
        SCENARIO,
        seed,
        failures,
        [
            ("greedy_calls", json!(greedy.len())),
            ("greedy_ok", json!(greedy_ok)),
            ("greedy_limited", json!(greedy_limited)),
            ("polite_calls", json!(polite_calls.len())),
            (
                "polite_ok",
                json!(polite_calls.iter().filter(|c| c.status == 200).count()),
            ),
            ("polite_p50_ms", figure(percentile(&polite_ms, 0.5))),
            ("polite_max_ms", figure(percentile(&polite_ms, 1.0))),
            ("limited_p50_ms", figure(percentile(&limited_ms, 0.5))),
        ],
    )
}
