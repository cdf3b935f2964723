//! A node for the HTTP benchmarks: a store holding one publisher's snapshot of `cards`
//! (organisation `acme`, region `local`), imported and indexed as a running node does.

use std::sync::Arc;

use meridian_node::daemon::config::NodeConfig;
use meridian_node::daemon::http::NodeState;
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, VerifyOptions};
use meridian_registry::store::SledStore;

/// The benchmarks' fixed clock.
pub fn clock() -> i64 {
    1_800_000_100
}

/// A node over `cards` in `dir`, configured by `config`.
pub fn node_over(dir: &std::path::Path, cards: Vec<String>, config: NodeConfig) -> Arc<NodeState> {
    let (built, _) = snapshot::build(BuildInput {
        node_key: &Keypair::from_secret(&[1; 32]),
        org_key: &Keypair::from_secret(&[2; 32]),
        org: "acme",
        region: "local",
        cards: cards
            .into_iter()
            .map(|json| CardInput {
                source_name: String::new(),
                json,
            })
            .collect(),
        previous: None,
        now: clock() - 10,
        expires_in_secs: 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap();
    let store = SledStore::open(&dir.join("store")).unwrap();
    let contents =
        snapshot::read_car(&built.write_car(Vec::new()).unwrap()[..], Limits::DEFAULT).unwrap();
    snapshot::import(&store, &contents, VerifyOptions::default()).unwrap();
    Arc::new(NodeState::new(store, config, Keypair::from_secret(&[9; 32]), dir, clock).unwrap())
}

/// [`node_over`] with the default configuration, saying on standard error how long building,
/// importing and indexing `cards` took.
#[allow(dead_code)] // not every benchmark that includes this module times its node
pub fn node_over_timed(dir: &std::path::Path, cards: Vec<String>) -> Arc<NodeState> {
    let agents = cards.len();
    let started = std::time::Instant::now();
    let state = node_over(dir, cards, NodeConfig::default());
    eprintln!(
        "node started over {agents} agents (snapshot built and imported, index built) in {:?}",
        started.elapsed()
    );
    state
}
