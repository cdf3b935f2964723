//! `meridian demo`: the README's main job, a whole federation on loopback.
//!
//! One process starts, with real sockets and the production code paths: a governance root (root,
//! attest and policy keys), three regions each with a hub and two nodes, one organisation per
//! region with sample agents, and a small echo A2A agent. The nodes of a region find each other
//! over the libp2p mesh; regions are joined only by their hubs, whose QUIC trunk is configured by
//! the hub directory of the signed policy bundle. The demo shows the federation converge, calls
//! the echo agent across regions through both hubs, changes one agent and measures how fast and
//! with how many cross-region bytes the change travels, and shows a forged manifest refused. It
//! prints a table of what happened with timings; `--keep-running` leaves it up to explore.
//!
//! Nodes and hubs here are the same [`crate::daemon::serve`] and [`meridian_hub::daemon::serve`]
//! that `meridian node run` and `meridian hub run` drive, each with its own data directory under
//! `DIR/demo`; only the processes are shared. `--snapshot` runs the older offline snapshot round
//! trip instead ([`snapshot`]).

mod domains;
pub mod snapshot;

use meridian_registry::samples::sample_card;
pub use snapshot::DEMO_AGENTS_PER_ORG;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use meridian_governance::attestation::{Attestation, Registration};
use meridian_governance::document::KeySet;
use meridian_governance::policy::{HubEntry, PolicyBody, PolicyBundle, RateTier};
use meridian_governance::root::{RoleName, RootBody, RootDocument};
use meridian_hub::daemon::config::HubConfig;
use meridian_hub::wire::Gossip;
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::ManifestBody;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::command::Report;
use crate::daemon::config::NodeConfig;

/// The demo's regions, and the organisation based in each (it publishes on that region's first
/// node).
pub const DEMO_REGIONS: [(&str, &str); 3] = [
    ("eu-west", "acme"),
    ("us-east", "globex"),
    ("ap-south", "initech"),
];
/// Nodes started in each region.
pub const DEMO_NODES_PER_REGION: usize = 2;
/// Most sample agents per organisation `--agents` accepts.
pub const DEMO_AGENTS_PER_ORG_MAX: usize = 5_000;
/// How long the demo waits for any one thing (a daemon to listen, the federation to converge)
/// before it gives up and says what it was waiting for.
pub const DEMO_WAIT_MAX: Duration = Duration::from_secs(90);
/// How often the demo polls while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Calls made to measure the cross-region call latency (the first one is reported apart).
const CALLS_MEASURED: usize = 20;
/// How long the demo's governance documents are valid, in seconds.
const DOCUMENTS_VALID_SECS: i64 = 30 * 86_400;

/// What `meridian demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The data directory; the demo works in `DATA/demo` and clears it first.
    pub data: PathBuf,
    /// Sample agents each organisation publishes.
    pub agents_per_org: usize,
    /// Leave the federation running (until Ctrl-C) after the report.
    pub keep_running: bool,
    /// Run the offline snapshot round trip instead of the federation.
    pub snapshot_only: bool,
}

/// Runs the demo and reports what happened. `now` is the wall clock in unix seconds.
pub fn run(options: &DemoOptions, now: i64) -> Result<Report> {
    if options.snapshot_only {
        return snapshot::run(&options.data, now);
    }
    if options.agents_per_org == 0 || options.agents_per_org > DEMO_AGENTS_PER_ORG_MAX {
        bail!(
            "--agents must be between 1 and {DEMO_AGENTS_PER_ORG_MAX}, not {}",
            options.agents_per_org
        );
    }
    if std::env::var_os("RUST_LOG").is_some() {
        crate::daemon::init_logging("text");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop, _) = watch::channel(false);
        let mut federation = Federation {
            stop,
            tasks: Vec::new(),
        };
        let outcome = demo(options, now, &mut federation).await;
        if outcome.is_ok() && options.keep_running {
            eprintln!("\nthe federation keeps running; press Ctrl-C to stop it");
            let _ = tokio::signal::ctrl_c().await;
        }
        federation.shut_down().await;
        outcome
    })
}

/// The daemons the demo started, and how to stop them.
struct Federation {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<Result<()>>)>,
}

impl Federation {
    /// A future that resolves when the demo stops the federation.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.stop.subscribe();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }

    /// Fails with the daemon's own error if `name` stopped by itself.
    fn check_running(&self, name: &str) -> Result<()> {
        match self.tasks.iter().find(|(n, _)| n == name) {
            Some((_, task)) if task.is_finished() => {
                bail!("{name} stopped unexpectedly (run with RUST_LOG=info to see why)")
            }
            _ => Ok(()),
        }
    }

    async fn shut_down(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => eprintln!("{name}: {error:#}"),
                Ok(Err(error)) => eprintln!("{name}: {error}"),
                Err(_) => eprintln!("{name} did not stop within 15 s"),
            }
        }
    }
}

/// One row of the report.
struct Step {
    what: String,
    result: String,
    millis: f64,
}

#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    fn record(&mut self, what: &str, started: Instant, result: String) {
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("  {what:<44} {millis:>9.1} ms  {result}");
        self.0.push(Step {
            what: what.to_owned(),
            result,
            millis,
        });
    }
}

/// A node the demo started.
struct DemoNode {
    name: String,
    region: &'static str,
    did: String,
    url: String,
    admin_token: String,
}

/// A hub the demo started.
struct DemoHub {
    region: &'static str,
    key: Keypair,
    url: String,
    trunk: String,
}

/// The demo's governance: keys and the documents they signed.
struct Governance {
    root_path: PathBuf,
    policy_key: Keypair,
    attest_key: Keypair,
    org_keys: BTreeMap<&'static str, Keypair>,
    attestations: Vec<Attestation>,
}

async fn demo(options: &DemoOptions, now: i64, federation: &mut Federation) -> Result<Report> {
    let dir = fresh_dir(&options.data)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut steps = Steps::default();
    eprintln!(
        "meridian demo: a federation of {} regions on loopback, in {}",
        DEMO_REGIONS.len(),
        dir.display()
    );

    let (governance, hubs, nodes) =
        start_federation(&client, &dir, now, federation, &mut steps).await?;
    announce_urls(&dir, &hubs, &nodes)?;

    let echo = start_echo_agent(federation).await?;
    let expected_agents = publish_step(
        &client,
        &dir,
        &governance,
        (&nodes, &echo),
        options.agents_per_org,
        now,
        &mut steps,
    )
    .await?;

    let converge_ms =
        converge_step(&client, &nodes, expected_agents, federation, &mut steps).await?;
    let ard = ard_example(&client, &nodes, &mut steps).await?;

    let CallFigures {
        relayed_median,
        direct_median,
        relayed_count,
    } = measure_calls(&client, &nodes, &hubs, &echo, &mut steps).await?;

    let (change_ms, change_bytes) = measure_change(
        &client,
        &dir,
        &governance,
        (&nodes, &hubs),
        now,
        federation,
        &mut steps,
    )
    .await?;

    // A manifest signed by a key acme never registered is refused, and nothing changes.
    let started = Instant::now();
    let refusal = forged_publish(&client, &dir, &nodes[0], now).await?;
    steps.record(
        "attack: manifest signed by an unknown key",
        started,
        format!("refused: {}", short(&refusal, 70)),
    );

    let text = summary(
        &steps,
        &dir,
        nodes.len(),
        converge_ms,
        relayed_median,
        change_ms,
    );
    let regions = regions_json(&hubs, &nodes);
    Ok(Report {
        text,
        json: json!({
            "ok": true,
            "dir": dir,
            "regions": regions,
            "agents": expected_agents,
            "converged": true,
            "figures": {
                "converge_ms": converge_ms,
                "a2a_first_call_ms": steps.0.iter().find(|s| s.what.contains("first call")).map(|s| s.millis),
                "a2a_relayed_median_ms": relayed_median,
                "a2a_direct_median_ms": direct_median,
                "change_ms": change_ms,
                "change_cross_region_bytes": change_bytes,
            },
            "relayed_calls": relayed_count,
            "ard_example": ard,
            "forged_manifest_refusal": refusal,
            "steps": steps.0.iter().map(|s| json!({"what": s.what, "result": s.result, "ms": s.millis})).collect::<Vec<_>>(),
        }),
    })
}

/// Publishes every organisation's sample agents and the echo agent at `echo` through the
/// nodes, timed in `steps`; returns how many agents were published.
async fn publish_step(
    client: &reqwest::Client,
    dir: &Path,
    governance: &Governance,
    (nodes, echo): (&[DemoNode], &str),
    agents_per_org: usize,
    now: i64,
    steps: &mut Steps,
) -> Result<usize> {
    let started = Instant::now();
    let published = publish_all(client, dir, governance, nodes, echo, agents_per_org, now).await?;
    let expected_agents = published.len();
    let publish_ms = started.elapsed().as_secs_f64() * 1000.0;
    steps.record(
        "publish: sample agents and an echo agent",
        started,
        format!(
            "{expected_agents} agents, each signed by its organisation ({:.0} publishes/s)",
            expected_agents as f64 / (publish_ms / 1000.0).max(1e-9)
        ),
    );
    Ok(expected_agents)
}

/// Waits until every node holds every publisher's head and all `expected_agents` agents;
/// returns how long it took, timed in `steps`.
async fn converge_step(
    client: &reqwest::Client,
    nodes: &[DemoNode],
    expected_agents: usize,
    federation: &mut Federation,
    steps: &mut Steps,
) -> Result<f64> {
    let started = Instant::now();
    let own_heads = own_heads(client, nodes).await?;
    wait_until(
        federation,
        "every node to hold every head and agent",
        || converged(client, nodes, &own_heads, expected_agents),
    )
    .await?;
    let converge_ms = started.elapsed().as_secs_f64() * 1000.0;
    steps.record(
        "converge: every node sees every agent",
        started,
        format!(
            "{} nodes x {expected_agents} agents, {} publishers' heads agree",
            nodes.len(),
            own_heads.len()
        ),
    );
    Ok(converge_ms)
}

/// Prints every node's and hub's HTTP, console and ARD base URLs as soon as the federation is
/// up, and writes them to `DIR/urls.json` (`{"nodes": [{name, region, http, console, ard}],
/// "hubs": [{name, region, http, console}]}`), so a client can be pointed at any of them while
/// the demo runs.
fn announce_urls(dir: &Path, hubs: &[DemoHub], nodes: &[DemoNode]) -> Result<()> {
    let urls = urls_json(hubs, nodes);
    let path = dir.join("urls.json");
    crate::data::write_file(&path, format!("{urls:#}\n").as_bytes())?;
    eprintln!("  the federation is up (URLs in {}):", path.display());
    for node in &urls["nodes"].as_array().cloned().unwrap_or_default() {
        eprintln!(
            "    {:<18} {}   ARD {}   console {}",
            node["name"].as_str().unwrap_or("?"),
            node["http"].as_str().unwrap_or("?"),
            node["ard"].as_str().unwrap_or("?"),
            node["console"].as_str().unwrap_or("?")
        );
    }
    for hub in &urls["hubs"].as_array().cloned().unwrap_or_default() {
        eprintln!(
            "    {:<18} {}   console {}",
            hub["name"].as_str().unwrap_or("?"),
            hub["http"].as_str().unwrap_or("?"),
            hub["console"].as_str().unwrap_or("?")
        );
    }
    eprintln!(
        "  governance: admin tokens in {}, the attest key in {}",
        dir.join("tokens").display(),
        dir.join("governance/attest.key").display()
    );
    Ok(())
}

/// The URLs of [`announce_urls`], as JSON.
fn urls_json(hubs: &[DemoHub], nodes: &[DemoNode]) -> Value {
    json!({
        "nodes": nodes.iter().map(|n| json!({
            "name": n.name,
            "region": n.region,
            "http": n.url,
            "ard": format!("{}{}", n.url, crate::daemon::ard::ARD_BASE),
            "console": format!("{}/console/", n.url),
        })).collect::<Vec<_>>(),
        "hubs": hubs.iter().map(|h| json!({
            "name": format!("hub {}", h.region),
            "region": h.region,
            "http": h.url,
            "console": format!("{}/console/", h.url),
        })).collect::<Vec<_>>(),
    })
}

/// Searches one node as an ARD registry for the echo agent: the organisations are bound to
/// their domains, so their agents are ARD entries any ARD client can find.
async fn ard_example(
    client: &reqwest::Client,
    nodes: &[DemoNode],
    steps: &mut Steps,
) -> Result<Value> {
    let node = nodes.first().context("no node")?;
    let base = format!("{}{}", node.url, crate::daemon::ard::ARD_BASE);
    let started = Instant::now();
    let text = client
        .post(format!("{base}/search"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({ "query": { "text": "echo" }, "pageSize": 1 }).to_string())
        .send()
        .await
        .context("the ARD search")?
        .text()
        .await
        .context("the ARD search's answer")?;
    let answer: Value = serde_json::from_str(&text)
        .with_context(|| format!("the ARD search's answer is not JSON: {text}"))?;
    let first = &answer["results"][0];
    let identifier = first["identifier"]
        .as_str()
        .with_context(|| format!("the ARD search found no echo agent: {answer}"))?;
    steps.record(
        "ard: search a node as an ARD registry",
        started,
        format!("`echo` -> {identifier} (score {})", first["score"]),
    );
    Ok(json!({ "url": base, "query": "echo", "identifier": identifier, "score": first["score"] }))
}

/// `DATA/demo`, emptied (a previous demo's files removed) and created.
pub(crate) fn fresh_dir(data: &Path) -> Result<PathBuf> {
    let dir = data.join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// One agent changes in ap-south: how long until every node sees it, and how many bytes
/// crossed regions for it (all hubs, both ways).
async fn measure_change(
    client: &reqwest::Client,
    dir: &Path,
    governance: &Governance,
    (nodes, hubs): (&[DemoNode], &[DemoHub]),
    now: i64,
    federation: &mut Federation,
    steps: &mut Steps,
) -> Result<(f64, f64)> {
    let bytes_before = cross_region_bytes(client, hubs).await?;
    let publisher = nodes
        .iter()
        .find(|n| n.region == "ap-south")
        .context("no ap-south node")?;
    let started = Instant::now();
    let changed = publish_one(
        client,
        dir,
        publisher,
        governance,
        "initech",
        "ap-south",
        &sample_card("initech", 7, "translate").json,
        now + 1,
    )
    .await?;
    wait_until(federation, "the change to reach every node", || {
        everyone_sees(client, nodes, &changed, "translate")
    })
    .await?;
    let change_ms = started.elapsed().as_secs_f64() * 1000.0;
    let change_bytes = cross_region_bytes(client, hubs).await? - bytes_before;
    steps.record(
        "change: one ap-south agent updated",
        started,
        format!(
            "{changed} on every node; {change_bytes:.0} bytes crossed regions (all hubs, both ways)"
        ),
    );
    Ok((change_ms, change_bytes))
}

/// Governance (root, verified organisations), the hubs and nodes of every region, and the
/// policy with the hub directory on all of them, trunks up: each step timed in `steps`.
async fn start_federation(
    client: &reqwest::Client,
    dir: &Path,
    now: i64,
    federation: &mut Federation,
    steps: &mut Steps,
) -> Result<(Governance, Vec<DemoHub>, Vec<DemoNode>)> {
    let started = Instant::now();
    let mut governance = governance(dir, now)?;
    steps.record(
        "governance: root v1, 3 organisations verified",
        started,
        format!(
            "root, attest, policy and witness roles; {}",
            DEMO_REGIONS.map(|(_, org)| org).join(", ")
        ),
    );
    let started = Instant::now();
    let bound = domains::bind(&governance.org_keys, &governance.attest_key, now).await?;
    governance.attestations.extend(bound);
    steps.record(
        "domains: each organisation proves its domain",
        started,
        format!(
            "proofs fetched over HTTPS (loopback, demo CA) and attested: {}",
            DEMO_REGIONS
                .map(|(_, org)| domains::demo_domain(org))
                .join(", ")
        ),
    );

    let started = Instant::now();
    let hubs = start_hubs(dir, &governance, federation).await?;
    let nodes = start_nodes(dir, &governance, &hubs, now, federation).await?;
    steps.record(
        "start: 3 hubs and 6 nodes",
        started,
        format!(
            "hubs {}",
            hubs.iter()
                .map(|h| format!("{} {}", h.region, h.url))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    let started = Instant::now();
    let policy = policy(&governance, &hubs, &nodes, now)?;
    distribute_governance(client, &governance, &policy, &nodes, &hubs).await?;
    wait_for_trunks(client, &hubs, federation).await?;
    steps.record(
        "governance: policy with the hub directory",
        started,
        format!(
            "on {} nodes and {} hubs; trunks pinned to the directory's keys",
            nodes.len(),
            hubs.len()
        ),
    );
    Ok((governance, hubs, nodes))
}

/// The demo's closing table and its headline figures.
fn summary(
    steps: &Steps,
    dir: &Path,
    nodes: usize,
    converge_ms: f64,
    relayed_median: f64,
    change_ms: f64,
) -> String {
    let total: f64 = steps.0.iter().map(|s| s.millis).sum();
    let mut text = format!("\n{:<44} {:>12}\n", "step", "time");
    for step in &steps.0 {
        text.push_str(&format!("{:<44} {:>9.1} ms\n", step.what, step.millis));
    }
    text.push_str(&format!("{:<44} {total:>9.1} ms\n\n", "total"));
    text.push_str(&format!(
        "converged in {converge_ms:.0} ms; a cross-region call takes {relayed_median:.2} ms through warm hubs; \
         one change reached all {} nodes in {change_ms:.0} ms\n",
        nodes
    ));
    text.push_str(&format!(
        "data directories are in {}; try `meridian demo --keep-running` and curl a node's /api/v1/agents",
        dir.display()
    ));
    text
}

/// What the demo measured of A2A calls.
struct CallFigures {
    /// Median milliseconds of a call through both regions' hubs.
    relayed_median: f64,
    /// Median milliseconds of a call straight to the agent.
    direct_median: f64,
    /// Calls the caller's node counted as relayed.
    relayed_count: f64,
}

/// Calls the eu-west echo agent from a us-east node (node -> hub -> trunk -> hub -> agent):
/// once cold, then [`CALLS_MEASURED`] times warm and as many times straight to the agent,
/// and checks from the metrics that the calls went through the hubs.
async fn measure_calls(
    client: &reqwest::Client,
    nodes: &[DemoNode],
    hubs: &[DemoHub],
    echo: &str,
    steps: &mut Steps,
) -> Result<CallFigures> {
    let caller = nodes
        .iter()
        .find(|n| n.region == "us-east")
        .context("no us-east node")?;
    let call_url = format!("{}/a2a/acme/echo", caller.url);
    let started = Instant::now();
    let answer = call(client, &call_url).await?;
    steps.record(
        "a2a: us-east -> eu-west echo, first call",
        started,
        format!(
            "through hub us-east and hub eu-west: {}",
            short(&answer, 60)
        ),
    );
    let started = Instant::now();
    let mut relayed = Vec::with_capacity(CALLS_MEASURED);
    for _ in 0..CALLS_MEASURED {
        let one = Instant::now();
        call(client, &call_url).await?;
        relayed.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let mut direct = Vec::with_capacity(CALLS_MEASURED);
    for _ in 0..CALLS_MEASURED {
        let one = Instant::now();
        call(client, echo).await?;
        direct.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let (relayed_median, direct_median) = (median(&mut relayed), median(&mut direct));
    let relayed_count = metric(
        client,
        &caller.url,
        "meridian_a2a_calls_total{outcome=\"relayed\"}",
    )
    .await?;
    let far_hub = hubs
        .iter()
        .find(|h| h.region == "eu-west")
        .context("no eu-west hub")?;
    let far_hub_relayed = metric(client, &far_hub.url, "meridian_hub_relayed_total").await?;
    if relayed_count < (CALLS_MEASURED + 1) as f64 || far_hub_relayed < (CALLS_MEASURED + 1) as f64
    {
        bail!(
            "the calls did not go through the hubs: the us-east node relayed {relayed_count}, the eu-west hub {far_hub_relayed}"
        );
    }
    steps.record(
        "a2a: warm trunk, median of 20 calls",
        started,
        format!(
            "{relayed_median:.2} ms through the hubs, {direct_median:.2} ms straight to the agent"
        ),
    );
    Ok(CallFigures {
        relayed_median,
        direct_median,
        relayed_count,
    })
}

/// Each region's organisation, hub and nodes, for the demo's JSON report.
fn regions_json(hubs: &[DemoHub], nodes: &[DemoNode]) -> Vec<Value> {
    DEMO_REGIONS
        .iter()
        .map(|(region, org)| {
            json!({
                "region": region,
                "org": org,
                "hub": hubs.iter().find(|h| h.region == *region).map(|h| json!({
                    "did": h.key.did(), "url": h.url, "trunk": h.trunk,
                })),
                "nodes": nodes.iter().filter(|n| n.region == *region).map(|n| json!({
                    "name": n.name, "did": n.did, "url": n.url,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Keys, the root document (written to `DIR/governance/root.1.cbor`) and one verified
/// organisation per region.
fn governance(dir: &Path, now: i64) -> Result<Governance> {
    let gov_dir = dir.join("governance");
    std::fs::create_dir_all(&gov_dir)?;
    let root_key = Keypair::generate()?;
    let attest_key = Keypair::generate()?;
    let policy_key = Keypair::generate()?;
    let witness_key = Keypair::generate()?;
    let one = |key: &Keypair| KeySet {
        keys: vec![key.public()],
        threshold: 1,
    };
    let roles = BTreeMap::from([
        (RoleName::Root, one(&root_key)),
        (RoleName::Attest, one(&attest_key)),
        (RoleName::Policy, one(&policy_key)),
        (RoleName::Witness, one(&witness_key)),
    ]);
    let mut root = RootDocument::new(RootBody {
        version: 1,
        created_at: now,
        expires_at: now + DOCUMENTS_VALID_SECS,
        roles,
    })?;
    root.sign(&root_key);
    // The attest admin's key, so the console's approval flow can be tried on the demo
    // (`meridian attest cosign ORG.verified.cbor --key DIR/governance/attest.key`).
    crate::data::write_secret_file(
        &gov_dir.join("attest.key"),
        attest_key.to_key_file().as_bytes(),
    )?;
    let root_path = gov_dir.join("root.1.cbor");
    std::fs::write(&root_path, root.to_block())
        .with_context(|| format!("writing {}", root_path.display()))?;
    let mut org_keys = BTreeMap::new();
    let mut attestations = Vec::new();
    for (_, org) in DEMO_REGIONS {
        let key = Keypair::generate()?;
        let registration = Registration::create(
            org,
            &format!("{org}.example"),
            &format!("ops@{org}.example"),
            &[&key],
        )?;
        let mut attestation = registration.approve(now, now + DOCUMENTS_VALID_SECS)?;
        attestation.sign(&attest_key);
        std::fs::write(
            gov_dir.join(format!("{org}.verified.cbor")),
            attestation.to_block(),
        )?;
        org_keys.insert(org, key);
        attestations.push(attestation);
    }
    Ok(Governance {
        root_path,
        policy_key,
        attest_key,
        org_keys,
        attestations,
    })
}

/// The policy bundle: the hub directory (each hub's trunk address and key), the node keys whose
/// heads the hubs admit, and a rate tier.
fn policy(
    governance: &Governance,
    hubs: &[DemoHub],
    nodes: &[DemoNode],
    now: i64,
) -> Result<PolicyBundle> {
    let mut bundle = PolicyBundle::new(PolicyBody {
        version: 1,
        issued_at: now,
        expires_at: now + DOCUMENTS_VALID_SECS,
        rate_limits: vec![RateTier {
            scope: "region:us-east".into(),
            requests_per_second: 200,
            burst: 400,
        }],
        hubs: hubs
            .iter()
            .map(|hub| HubEntry {
                region: hub.region.to_owned(),
                address: hub.trunk.clone(),
                key: hub.key.public(),
                http: Some(hub.url.clone()),
            })
            .collect(),
        allow_node_keys: nodes.iter().map(|node| node.did.clone()).collect(),
        registries: nodes
            .iter()
            .map(|node| format!("{}{}", node.url, crate::daemon::ard::ARD_BASE))
            .collect(),
        ..PolicyBody::default()
    })?;
    bundle.sign(&governance.policy_key);
    Ok(bundle)
}

/// Reads `file` once a daemon has written it (its bound address), failing if `name` stopped.
async fn wait_for_file(federation: &Federation, name: &str, file: &Path) -> Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Some(line) = text.lines().find(|l| !l.trim().is_empty())
        {
            return Ok(line.trim().to_owned());
        }
        federation.check_running(name)?;
        if started.elapsed() > DEMO_WAIT_MAX {
            bail!("{name} did not write {} in time", file.display());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn start_hubs(
    dir: &Path,
    governance: &Governance,
    federation: &mut Federation,
) -> Result<Vec<DemoHub>> {
    let mut hubs = Vec::new();
    for (region, _) in DEMO_REGIONS {
        let data = dir.join(format!("hub-{region}"));
        meridian_hub::daemon::init(&data, Some(region))?;
        let key = meridian_hub::daemon::load_key(&data)?;
        let mut config = HubConfig::default();
        config.hub.region = region.into();
        config.hub.listen = "127.0.0.1:0".into();
        config.hub.trunk_listen = "127.0.0.1:0".into();
        config.governance.root = governance.root_path.display().to_string();
        // The echo agent listens on loopback.
        config.relay.allow_private = true;
        let name = format!("hub {region}");
        let options = meridian_hub::daemon::HubRunOptions {
            data: data.clone(),
            config: None,
            listen: None,
            trunk_listen: None,
        };
        let stop = federation.stopped();
        federation.tasks.push((
            name.clone(),
            tokio::spawn(meridian_hub::daemon::serve(options, config, stop)),
        ));
        let http = wait_for_file(
            federation,
            &name,
            &data.join(meridian_hub::daemon::HTTP_ADDR_FILE),
        )
        .await?;
        let trunk = wait_for_file(
            federation,
            &name,
            &data.join(meridian_hub::daemon::TRUNK_ADDR_FILE),
        )
        .await?;
        hubs.push(DemoHub {
            region,
            key,
            url: format!("http://{http}"),
            trunk,
        });
    }
    Ok(hubs)
}

async fn start_nodes(
    dir: &Path,
    governance: &Governance,
    hubs: &[DemoHub],
    now: i64,
    federation: &mut Federation,
) -> Result<Vec<DemoNode>> {
    let mut nodes = Vec::new();
    for (region, _) in DEMO_REGIONS {
        let hub = hubs
            .iter()
            .find(|h| h.region == region)
            .context("a region without a hub")?;
        let mut bootstrap = String::new();
        for index in 1..=DEMO_NODES_PER_REGION {
            let name = format!("node {region}-{index}");
            let data = dir.join(format!("node-{region}-{index}"));
            let did = crate::daemon::init(&data)?;
            let (admin_token, _) = crate::daemon::tokens::create(&data, None, now)?;
            // For the console's governance page (an admin pastes it there).
            let tokens = dir.join("tokens");
            std::fs::create_dir_all(&tokens)?;
            crate::data::write_secret_file(
                &tokens.join(format!("node-{region}-{index}.admin")),
                admin_token.as_bytes(),
            )?;
            let mut config = NodeConfig::default();
            config.node.region = region.into();
            config.http.listen = "127.0.0.1:0".into();
            config.http.shutdown_grace_secs = 2;
            config.governance.root = governance.root_path.display().to_string();
            config.a2a.allow_private = true;
            config.mesh.hub = hub.url.clone();
            // The second node of a region finds the first over the mesh; regions meet only
            // through their hubs.
            config.mesh.bootstrap = bootstrap.clone();
            config.validate().with_context(|| name.clone())?;
            let (state, key) = crate::daemon::open(&data, &config)?;
            let stop = federation.stopped();
            let task_state = state.clone();
            let task_data = data.clone();
            federation.tasks.push((
                name.clone(),
                tokio::spawn(async move {
                    crate::daemon::serve(task_state, key, &task_data, &config, stop).await
                }),
            ));
            let started = Instant::now();
            let address = loop {
                if let Some(address) = state.gateway_addr.get() {
                    break *address;
                }
                federation.check_running(&name)?;
                if started.elapsed() > DEMO_WAIT_MAX {
                    bail!("{name} did not start listening in time");
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            };
            let mesh = wait_for_file(federation, &name, &data.join("mesh.addr")).await?;
            if index == 1 {
                let text = std::fs::read_to_string(data.join("mesh.addr")).unwrap_or(mesh);
                bootstrap = text
                    .lines()
                    .find(|l| l.contains("/quic-v1/"))
                    .or_else(|| text.lines().next())
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
            }
            nodes.push(DemoNode {
                name,
                region,
                did,
                url: format!("http://{address}"),
                admin_token,
            });
        }
    }
    Ok(nodes)
}

/// Gives every node (admin API) and every hub (gossip) the attestations and the policy, as a
/// governance admin would.
async fn distribute_governance(
    client: &reqwest::Client,
    governance: &Governance,
    policy: &PolicyBundle,
    nodes: &[DemoNode],
    hubs: &[DemoHub],
) -> Result<()> {
    let mut documents: Vec<(&str, Vec<u8>)> = governance
        .attestations
        .iter()
        .map(|a| ("/api/v1/attestations", a.to_block()))
        .collect();
    documents.push(("/api/v1/governance/policy", policy.to_block()));
    for node in nodes {
        for (path, block) in &documents {
            let response = client
                .post(format!("{}{path}", node.url))
                .bearer_auth(&node.admin_token)
                .header("content-type", "application/vnd.ipld.dag-cbor")
                .body(block.clone())
                .send()
                .await
                .with_context(|| format!("{}: POST {path}", node.name))?;
            expect_success(response, &format!("{}: POST {path}", node.name)).await?;
        }
    }
    for hub in hubs {
        for (_, block) in &documents {
            let response = client
                .post(format!("{}/v1/gossip", hub.url))
                .body(Gossip::Governance(block.clone()).encode())
                .send()
                .await
                .with_context(|| format!("hub {}: POST /v1/gossip", hub.region))?;
            expect_success(response, &format!("hub {}: POST /v1/gossip", hub.region)).await?;
        }
    }
    Ok(())
}

/// Waits until every hub has the other regions' hubs as trunk peers (from the policy).
async fn wait_for_trunks(
    client: &reqwest::Client,
    hubs: &[DemoHub],
    federation: &Federation,
) -> Result<()> {
    let others = (hubs.len() - 1) as f64;
    wait_until(federation, "the hubs to take their trunk peers", || async {
        for hub in hubs {
            if metric(client, &hub.url, "meridian_hub_trunk_peers").await? < others {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// `GET url`, answered with JSON.
async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    expect_success(response, &format!("GET {url}")).await
}

async fn expect_success(response: reqwest::Response, what: &str) -> Result<Value> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what}: {status}: {body}");
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The echo agent: answers a message (A2A v1.0 `SendMessage`, or v0.3 `message/send`) with a
/// message that repeats its method and text, in that version's shape; any other method is
/// not found (-32601). Returns its URL.
async fn start_echo_agent(federation: &mut Federation) -> Result<String> {
    use axum::Json;
    use axum::routing::post;
    async fn echo(Json(request): Json<Value>) -> Json<Value> {
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = request.get("method").and_then(Value::as_str).unwrap_or("?");
        let text = request
            .pointer("/params/message/parts/0/text")
            .and_then(Value::as_str)
            .unwrap_or("");
        let said = format!("echo ({method}): {text}");
        let result = match method {
            "SendMessage" => json!({ "message": {
                "role": "ROLE_AGENT", "messageId": "echo-1", "parts": [{ "text": said }],
            } }),
            "message/send" => json!({
                "kind": "message", "role": "agent", "messageId": "echo-1",
                "parts": [{ "kind": "text", "text": said }],
            }),
            other => {
                return Json(json!({ "jsonrpc": "2.0", "id": id, "error": {
                    "code": -32601, "message": format!("method `{other}` is not one this agent answers"),
                } }));
            }
        };
        Json(json!({ "jsonrpc": "2.0", "id": id, "result": result }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the echo agent")?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route("/", post(echo));
    let stop = federation.stopped();
    federation.tasks.push((
        "echo agent".into(),
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .context("echo agent")
        }),
    ));
    Ok(format!("http://{address}/"))
}

fn echo_card(url: &str) -> String {
    json!({
        "name": "Echo",
        "description": "Repeats what it is sent; the demo's A2A agent.",
        "version": "1.0.0",
        "provider": { "organization": "acme" },
        "supportedInterfaces": [{ "url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0" }],
        "capabilities": { "streaming": false },
        "skills": [{ "id": "echo", "name": "echo", "tags": ["echo", "demo"] }],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    })
    .to_string()
}

/// Each organisation publishes its sample agents on its region's first node, the three regions
/// at once; acme also publishes the echo agent. Returns every agent id published.
async fn publish_all(
    client: &reqwest::Client,
    dir: &Path,
    governance: &Governance,
    nodes: &[DemoNode],
    echo: &str,
    agents_per_org: usize,
    now: i64,
) -> Result<Vec<String>> {
    let mut jobs = Vec::new();
    for (region, org) in DEMO_REGIONS {
        let node = nodes
            .iter()
            .find(|n| n.region == region)
            .context("a region without nodes")?;
        let mut cards: Vec<String> = (0..agents_per_org)
            .map(|index| sample_card(org, index, "search").json)
            .collect();
        if org == "acme" {
            cards.push(echo_card(echo));
        }
        jobs.push(async move {
            let mut ids = Vec::with_capacity(cards.len());
            for card in &cards {
                ids.push(publish_one(client, dir, node, governance, org, region, card, now).await?);
            }
            Ok::<_, anyhow::Error>(ids)
        });
    }
    let mut ids = Vec::new();
    for result in futures_util::future::join_all(jobs).await {
        ids.extend(result?);
    }
    Ok(ids)
}

/// Signs `card` with `org`'s key and publishes it on `node`; returns the agent id.
#[allow(clippy::too_many_arguments)]
async fn publish_one(
    client: &reqwest::Client,
    dir: &Path,
    node: &DemoNode,
    governance: &Governance,
    org: &str,
    region: &str,
    card: &str,
    updated_at: i64,
) -> Result<String> {
    let key = governance
        .org_keys
        .get(org)
        .with_context(|| format!("no key for {org}"))?;
    let body = ManifestBody::from_card(card, org, region, updated_at)?;
    let agent_id = body.agent_id.clone();
    let block = body.sign(key).to_block();
    let response = post_manifest(client, dir, node, org, &block, updated_at)
        .await
        .with_context(|| format!("{}: publishing {agent_id}", node.name))?;
    expect_success(response, &format!("{}: publishing {agent_id}", node.name)).await?;
    Ok(agent_id)
}

/// `POST /api/v1/agents` on `node` with a signed manifest block, under `org`'s token.
async fn post_manifest(
    client: &reqwest::Client,
    dir: &Path,
    node: &DemoNode,
    org: &str,
    block: &[u8],
    now: i64,
) -> Result<reqwest::Response> {
    let token = org_token(dir, node, org, now)?;
    let body = json!({ "manifest": base64::engine::general_purpose::STANDARD.encode(block) });
    Ok(client
        .post(format!("{}/api/v1/agents", node.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?)
}

/// The publishing token of `org` on `node`, made on first use and kept in `DIR/tokens/`.
fn org_token(dir: &Path, node: &DemoNode, org: &str, now: i64) -> Result<String> {
    let file = dir
        .join("tokens")
        .join(format!("{}.{org}", node.name.replace(' ', "-")));
    if let Ok(token) = std::fs::read_to_string(&file) {
        return Ok(token);
    }
    let data = dir.join(node.name.replace(' ', "-"));
    let (token, _) = crate::daemon::tokens::create(&data, Some(org), now)?;
    std::fs::create_dir_all(dir.join("tokens"))?;
    crate::data::write_secret_file(&file, token.as_bytes())?;
    Ok(token)
}

/// A manifest for acme signed by a key acme never registered, published with acme's own token:
/// the node must refuse it. Returns the refusal.
async fn forged_publish(
    client: &reqwest::Client,
    dir: &Path,
    node: &DemoNode,
    now: i64,
) -> Result<String> {
    let stranger = Keypair::generate()?;
    let card = sample_card("acme", 0, "phishing").json;
    let block = ManifestBody::from_card(&card, "acme", node.region, now + 2)?
        .sign(&stranger)
        .to_block();
    let response = post_manifest(client, dir, node, "acme", &block, now)
        .await
        .context("publishing the forged manifest")?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        bail!("a manifest signed by an unknown key was accepted: {body}");
    }
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message").or(Some(e)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or(body);
    Ok(format!("{} {message}", status.as_u16()))
}

/// The head each node publishes itself (publishers are the nodes that published).
async fn own_heads(
    client: &reqwest::Client,
    nodes: &[DemoNode],
) -> Result<BTreeMap<String, String>> {
    let mut heads = BTreeMap::new();
    for node in nodes {
        for (publisher, commit) in heads_of(client, node).await? {
            if publisher == node.did {
                heads.insert(publisher, commit);
            }
        }
    }
    if heads.len() != DEMO_REGIONS.len() {
        bail!(
            "expected {} publishing nodes, found {}",
            DEMO_REGIONS.len(),
            heads.len()
        );
    }
    Ok(heads)
}

async fn heads_of(client: &reqwest::Client, node: &DemoNode) -> Result<BTreeMap<String, String>> {
    let answer = get_json(client, &format!("{}/api/v1/registry/heads", node.url)).await?;
    Ok(answer["heads"]
        .as_array()
        .map(|heads| {
            heads
                .iter()
                .filter_map(|h| {
                    Some((
                        h["publisher"].as_str()?.to_owned(),
                        h["commit"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Agents in a node's federated view, counted page by page.
async fn count_agents(client: &reqwest::Client, node: &DemoNode) -> Result<usize> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/agents?limit=500", node.url);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = get_json(client, &url).await?;
        count += page["agents"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(count),
        }
    }
}

async fn converged(
    client: &reqwest::Client,
    nodes: &[DemoNode],
    own: &BTreeMap<String, String>,
    agents: usize,
) -> Result<bool> {
    for node in nodes {
        let heads = heads_of(client, node).await?;
        if own.iter().any(|(p, c)| heads.get(p) != Some(c)) {
            return Ok(false);
        }
        if count_agents(client, node).await? != agents {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn everyone_sees(
    client: &reqwest::Client,
    nodes: &[DemoNode],
    agent: &str,
    skill: &str,
) -> Result<bool> {
    for node in nodes {
        let response = client
            .get(format!("{}/api/v1/agents/{agent}", node.url))
            .send()
            .await
            .with_context(|| format!("{}: lookup", node.name))?;
        if !response.status().is_success() {
            return Ok(false);
        }
        let body = response.text().await.unwrap_or_default();
        if !body.contains(&format!("\"{skill}\"")) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Polls `check` until it says yes, failing after [`DEMO_WAIT_MAX`] or when a daemon stopped.
async fn wait_until<F, Fut>(federation: &Federation, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        for (name, _) in &federation.tasks {
            federation.check_running(name)?;
        }
        if started.elapsed() > DEMO_WAIT_MAX {
            bail!("gave up after {DEMO_WAIT_MAX:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One A2A v1.0 `SendMessage` call; returns the echoed text.
async fn call(client: &reqwest::Client, url: &str) -> Result<String> {
    let request = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": { "message": { "role": "ROLE_USER", "messageId": "demo-1", "parts": [{ "text": "hello across regions" }] } },
    });
    let response = client
        .post(url)
        .header("A2A-Version", "1.0")
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let answer = expect_success(response, &format!("calling {url}")).await?;
    answer
        .pointer("/result/message/parts/0/text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{url} answered without an echo: {answer}"))
}

/// One value of a Prometheus metric (0 when absent).
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .with_context(|| format!("{base}/metrics"))?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum())
}

async fn cross_region_bytes(client: &reqwest::Client, hubs: &[DemoHub]) -> Result<f64> {
    let mut total = 0.0;
    for hub in hubs {
        total += metric(client, &hub.url, "meridian_hub_cross_region_bytes_total").await?;
    }
    Ok(total)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max).collect::<String>() + "…"
    }
}
