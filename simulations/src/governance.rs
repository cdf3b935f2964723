//! The "governance" scenario: governance documents issued during a run (a policy, an
//! organisation's revocation, a root rotation, a policy under the new root that denies the
//! publisher's node key, a second rotation) must take effect on every node, through the same
//! sync engine and the same `Governance` the node daemon uses, including on a node that was
//! down while they spread (it wakes two root versions behind and must follow the chain its
//! peers hand it) and on one whose clock runs ahead within the tolerance; a node whose clock is past
//! the documents' expiry must take none of them; and the denial must stop the federation from
//! mirroring the publisher.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_governance::attestation::{Attestation, Registration};
use meridian_governance::document::KeySet;
use meridian_governance::policy::{PolicyBody, PolicyBundle, RateTier};
use meridian_governance::root::{RoleName, RootBody, RootDocument};
use meridian_registry::Cid;
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::Manifest;
use meridian_registry::store::MemoryStore;
use meridian_sync::SyncConfig;
use meridian_sync::governance::Governance;
use serde_json::json;

use crate::federation::{Rng, World, seed_store};
use crate::runner::{self, Action, Scheduled};
use crate::scenarios::{Report, Topology, publisher_key, registry_chain};

/// How long the scenario's documents are valid, in seconds.
const VALID_SECS: i64 = 30 * 86_400;
/// A clock this far ahead is within the documents' tolerance (they are issued a minute
/// before the run starts).
const CLOCK_SKEW_WITHIN_SECS: i64 = 200;

/// The governance admins' keys.
struct Admins {
    root: Keypair,
    next_root: Keypair,
    third_root: Keypair,
    attest: Keypair,
    policy: Keypair,
    next_policy: Keypair,
    witness: Keypair,
}

fn key(tag: u8) -> Keypair {
    Keypair::from_secret(&[tag; 32])
}

fn root_document(version: u64, root: &Keypair, policy: &Keypair, admins: &Admins) -> RootDocument {
    let one = |key: &Keypair| KeySet {
        keys: vec![key.public()],
        threshold: 1,
    };
    let roles = BTreeMap::from([
        (RoleName::Root, one(root)),
        (RoleName::Attest, one(&admins.attest)),
        (RoleName::Policy, one(policy)),
        (RoleName::Witness, one(&admins.witness)),
    ]);
    let start = crate::federation::EPOCH_UNIX - 60;
    RootDocument::new(RootBody {
        version,
        created_at: start,
        expires_at: start + VALID_SECS,
        roles,
    })
    .unwrap_or_else(|e| panic!("building root v{version}: {e}"))
}

fn policy_bundle(version: u64, key: &Keypair, deny_node_keys: Vec<String>) -> Vec<u8> {
    let start = crate::federation::EPOCH_UNIX - 60;
    let mut bundle = PolicyBundle::new(PolicyBody {
        version,
        issued_at: start,
        expires_at: start + VALID_SECS,
        deny_node_keys,
        rate_limits: vec![RateTier {
            scope: "org:sim".into(),
            requests_per_second: 10,
            burst: 20,
        }],
        ..PolicyBody::default()
    })
    .unwrap_or_else(|e| panic!("building policy v{version}: {e}"));
    bundle.sign(key);
    bundle.to_block()
}

/// The documents of one run, in the order they are issued.
struct Documents {
    root_v1: Vec<u8>,
    verified: Vec<u8>,
    policy_v1: Vec<u8>,
    revocation: Vec<u8>,
    root_v2: Vec<u8>,
    policy_v2: Vec<u8>,
    /// A second rotation (new root key, same policy key): a node that missed both rotations
    /// needs v2 to take v3.
    root_v3: Vec<u8>,
}

fn documents(admins: &Admins) -> Documents {
    let start = crate::federation::EPOCH_UNIX - 60;
    let mut root_v1 = root_document(1, &admins.root, &admins.policy, admins);
    root_v1.sign(&admins.root);
    let mut root_v2 = root_document(2, &admins.next_root, &admins.next_policy, admins);
    root_v2.sign(&admins.root);
    root_v2.sign(&admins.next_root);
    let mut root_v3 = root_document(3, &admins.third_root, &admins.next_policy, admins);
    root_v3.sign(&admins.next_root);
    root_v3.sign(&admins.third_root);
    let registration =
        Registration::create("sim", "sim.example", "ops@sim.example", &[&publisher_key()])
            .unwrap_or_else(|e| panic!("registration: {e}"));
    let mut verified = registration
        .approve(start, start + VALID_SECS)
        .unwrap_or_else(|e| panic!("approval: {e}"));
    verified.sign(&admins.attest);
    let mut revocation = Attestation::revocation(
        verified.id(),
        "key compromised",
        start + 1,
        start + VALID_SECS,
    )
    .unwrap_or_else(|e| panic!("revocation: {e}"));
    revocation.sign(&admins.attest);
    Documents {
        root_v1: root_v1.to_block(),
        verified: verified.to_block(),
        policy_v1: policy_bundle(1, &admins.policy, Vec::new()),
        revocation: revocation.to_block(),
        root_v2: root_v2.to_block(),
        policy_v2: policy_bundle(2, &admins.next_policy, vec![publisher_key().did()]),
        root_v3: root_v3.to_block(),
    }
}

fn cid(block: &[u8]) -> Cid {
    meridian_registry::ids::dag_cbor_cid(block)
}

fn admins() -> Admins {
    Admins {
        root: key(0x71),
        next_root: key(0x72),
        third_root: key(0x77),
        attest: key(0x73),
        policy: key(0x74),
        next_policy: key(0x75),
        witness: key(0x76),
    }
}

/// Loads the governance of `n` nodes under `dir` from root v1, each knowing that the
/// publisher's organisation is verified.
fn load_nodes(
    dir: &std::path::Path,
    docs: &Documents,
    n: usize,
) -> Result<Vec<Option<Arc<Governance>>>, String> {
    let root_file = dir.join("root.1.cbor");
    std::fs::write(&root_file, &docs.root_v1).map_err(|e| e.to_string())?;
    let now = crate::federation::EPOCH_UNIX;
    (0..n)
        .map(|i| {
            let g = Governance::load(&dir.join(format!("node-{i}")), Some(&root_file), now)
                .map_err(|e| format!("{e:#}"))?;
            match g.offer_document(&docs.verified, now) {
                meridian_sync::GovernanceOutcome::New => Ok(Some(Arc::new(g))),
                other => Err(format!("the org attestation was not taken: {other:?}")),
            }
        })
        .collect()
}

/// Governance for a swarm run: the nodes' governance (root v1, the publisher's organisation
/// verified) and the documents admins issue while the faults go on, in order: a policy, a
/// root rotation and a policy signed under the new root. None of them stops the publisher
/// from being mirrored, so the swarm's convergence checks still hold; the `governance`
/// scenario covers revocations and denials.
pub(crate) struct SwarmGovernance {
    /// The nodes' governance directories, removed when the run ends.
    pub _dir: tempfile::TempDir,
    /// Each node's governance.
    pub nodes: Vec<Option<Arc<Governance>>>,
    /// The documents to issue, by name, and whether every honest node must end up holding
    /// it. Policy v1 need not be held: policy v2 supersedes it, and a node that reaches
    /// root v2 before policy v1 rightly refuses v1 (its signer no longer holds the role).
    pub in_motion: Vec<(&'static str, Vec<u8>, bool)>,
}

/// See [`SwarmGovernance`].
pub(crate) fn swarm_governance(n: usize) -> Result<SwarmGovernance, String> {
    let admins = admins();
    let docs = documents(&admins);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nodes = load_nodes(dir.path(), &docs, n)?;
    Ok(SwarmGovernance {
        _dir: dir,
        nodes,
        in_motion: vec![
            ("policy_v1", docs.policy_v1, false),
            ("root_v2", docs.root_v2, true),
            (
                "policy_v2",
                policy_bundle(2, &admins.next_policy, Vec::new()),
                true,
            ),
        ],
    })
}

/// Whether this governance is on root version 2.
pub(crate) fn on_root_v2(governance: &Governance) -> bool {
    governance.root_version() == Some(2)
}

/// The governance run's schedule: each issued document handed, at its time, to a random node
/// other than `[sleeper, skewed, far]` (nodes with true clocks that stay up); `sleeper` down
/// from 2.5 s to 5.5 s, so it catches up when it restarts; then the denied publisher's next
/// head (`denied_head`), which must go nowhere.
fn governance_schedule(
    rng: &mut Rng,
    issued: &[Issued],
    n: usize,
    kept_out: [usize; 3],
    denied_head: &meridian_registry::snapshot::Snapshot,
) -> Vec<Scheduled> {
    let sleeper = kept_out[0];
    // `sleeper` is down while the documents spread and catches up when it restarts; the
    // admins hand documents to nodes with true clocks that stay up.
    let issuer = |rng: &mut Rng| loop {
        let node = rng.below(n);
        if !kept_out.contains(&node) {
            return node;
        }
    };
    let mut schedule: Vec<Scheduled> = issued
        .iter()
        .map(|(_, at_ms, block)| Scheduled {
            at_ms: *at_ms,
            action: Action::Governance(issuer(rng), block.clone()),
        })
        .collect();
    schedule.push(Scheduled {
        at_ms: 2_500,
        action: Action::Crash(sleeper),
    });
    schedule.push(Scheduled {
        at_ms: 5_500,
        action: Action::Restart(sleeper),
    });
    // After the denial has spread, the publisher's next head must go nowhere.
    schedule.push(Scheduled {
        at_ms: 7_000,
        action: Action::Publish(0, Box::new(denied_head.clone())),
    });
    schedule.push(Scheduled {
        at_ms: 9_000,
        action: Action::Wait,
    });
    schedule
}

/// A governance document the admins issue: its name, when (ms) and its block.
type Issued = (&'static str, u64, Vec<u8>);

/// How the issued documents spread: for each, the time it took to reach the last node that
/// stayed up (`*_ms` figures); a failure for a node that never applied one, for the node
/// whose clock is past the documents' expiry (`far`) taking one, and for a node mirroring
/// the denied publisher's new head.
fn spread(
    world: &World,
    issued: &[Issued],
    far: usize,
    sleeper: usize,
    denied_head: &Cid,
    failures: &mut Vec<String>,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut figures = Vec::new();
    world.observe(|o| {
        for ((name, at_ms, block), key) in issued.iter().zip([
            "policy_v1_ms",
            "revocation_ms",
            "root_v2_ms",
            "policy_v2_ms",
            "root_v3_ms",
        ]) {
            let document = cid(block);
            let mut latest = None;
            for (i, applied) in o.governance_applied.iter().enumerate() {
                if i == far {
                    if applied.contains_key(&document) {
                        failures.push(format!(
                            "node {i}, whose clock is past its expiry, took the {name}"
                        ));
                    }
                    continue;
                }
                match applied.get(&document) {
                    Some(&t) if i != sleeper => latest = latest.max(Some(t.saturating_sub(*at_ms))),
                    Some(_) => {}
                    None => failures.push(format!("node {i} never applied the {name}")),
                }
            }
            figures.push((key, json!(latest)));
        }
        for (i, imported) in o.imported.iter().enumerate().skip(1) {
            if imported.contains_key(denied_head) {
                failures.push(format!(
                    "node {i} mirrored a head of a publisher the policy denies"
                ));
            }
        }
    });
    figures
}

/// What every node but `far` must hold at the end: no trust in the denied publisher, no
/// acceptance of the revoked organisation's agents (`first` holds one), root version 3.
fn node_checks(
    world: &World,
    far: usize,
    first: &meridian_registry::snapshot::Snapshot,
    now: i64,
) -> Vec<String> {
    let mut failures = Vec::new();
    let manifest = first
        .blocks
        .values()
        .find_map(|block| Manifest::decode(block).ok());
    let publisher = publisher_key().did();
    for (i, governance) in world.governance.iter().enumerate() {
        let Some(governance) = governance else {
            continue;
        };
        if i == far {
            continue;
        }
        if governance.publisher_allowed(&publisher) {
            failures.push(format!("node {i} still mirrors the denied publisher"));
        }
        if let Some(manifest) = &manifest
            && governance.accept(manifest, &publisher, now + 10).is_ok()
        {
            failures.push(format!(
                "node {i} still accepts agents of the revoked organisation"
            ));
        }
        if governance.root_version() != Some(3) {
            failures.push(format!(
                "node {i} is on root version {:?}, not 3",
                governance.root_version()
            ));
        }
    }
    failures
}

/// "governance": see the module documentation. Figures: the time for each document to reach
/// every node (`*_ms`; the revocation's target is 1 s).
pub fn governance(seed: u64) -> Report {
    const SCENARIO: &str = "governance";
    let mut rng = Rng::new(seed);
    let topology = Topology {
        nodes: 30,
        ..Topology::default()
    };
    let n = topology.nodes;
    let docs = documents(&admins());
    let mut failures = Vec::new();
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => return crate::faults::failed_to_start(SCENARIO, seed, error.to_string()),
    };
    let governance = match load_nodes(dir.path(), &docs, n) {
        Ok(governance) => governance,
        Err(error) => return crate::faults::failed_to_start(SCENARIO, seed, error),
    };
    let now = crate::federation::EPOCH_UNIX;
    let chain = registry_chain(&publisher_key(), 500, 1);
    let mut specs = topology.specs(&mut rng);
    // A node whose clock runs ahead within the tolerance takes every document; one whose
    // clock is past the documents' expiry takes none.
    let picked = crate::faults::pick_nodes(&mut rng, 3, n);
    let (sleeper, skewed, far) = (picked[0], picked[1], picked[2]);
    specs[skewed].clock_offset_secs = CLOCK_SKEW_WITHIN_SECS;
    specs[far].clock_offset_secs = VALID_SECS + 86_400;
    let base = MemoryStore::new();
    if let Err(error) = seed_store(&base, &chain[0]) {
        return crate::faults::failed_to_start(SCENARIO, seed, error);
    }
    let world = match World::with_governance(specs, SyncConfig::default(), &base, governance) {
        Ok(world) => world,
        Err(error) => return crate::faults::failed_to_start(SCENARIO, seed, error),
    };
    let issued = [
        ("policy_v1", 2_000, docs.policy_v1.clone()),
        ("revocation", 3_000, docs.revocation.clone()),
        ("root_v2", 4_000, docs.root_v2.clone()),
        ("policy_v2", 5_000, docs.policy_v2.clone()),
        ("root_v3", 5_200, docs.root_v3.clone()),
    ];
    let schedule = governance_schedule(&mut rng, &issued, n, [sleeper, skewed, far], &chain[1]);
    let cids: Vec<Cid> = issued.iter().map(|(_, _, block)| cid(block)).collect();
    let outcome = runner::run(&world, &topology, seed, schedule, 30_000, |w| {
        w.observe(|o| {
            o.governance_applied
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != far)
                .all(|(_, applied)| cids.iter().all(|c| applied.contains_key(c)))
        })
    });
    if let Some(error) = &outcome.error {
        failures.push(format!("simulation error: {error}"));
    }
    if outcome.done_ms.is_none() {
        failures.push("the documents did not reach every node within 30 s".into());
    }
    let mut figures = spread(
        &world,
        &issued,
        far,
        sleeper,
        &chain[1].commit_cid,
        &mut failures,
    );
    failures.extend(node_checks(&world, far, &chain[0], now));
    figures.push(("sleeper", json!(sleeper)));
    figures.push(("skewed", json!(skewed)));
    figures.push(("far_skewed", json!(far)));
    figures.push(("nodes", json!(n)));
    Report {
        scenario: SCENARIO,
        seed,
        failures,
        figures: figures.into_iter().collect(),
    }
}
