//! Ranked searches per second over HTTP: the node's real gateway over a store of 100,000
//! agents, asked `GET /api/v1/agents?q=...&sort=relevance&limit=10` for the search benchmark's
//! query mix (one to three words from the cards, one in ten misspelt) by 64 keep-alive
//! clients for 5 seconds, on loopback; the load generator shares the machine's two cores.
//!
//! Run with `cargo bench -p meridian-node --bench search_http`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

#[path = "common/load.rs"]
mod load;
#[path = "common/mix.rs"]
mod mix;

use load::{CLIENTS, SECONDS, load};
use meridian_node::daemon::config::NodeConfig;
use meridian_node::daemon::http::{NodeState, router};
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, VerifyOptions};
use meridian_registry::store::SledStore;

const AGENTS: usize = 100_000;

fn clock() -> i64 {
    1_800_000_100
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (built, _) = snapshot::build(BuildInput {
        node_key: &Keypair::from_secret(&[1; 32]),
        org_key: &Keypair::from_secret(&[2; 32]),
        org: "acme",
        region: "eu-west",
        cards: (0..AGENTS)
            .map(|i| CardInput {
                source_name: String::new(),
                json: mix::card(i),
            })
            .collect(),
        previous: None,
        now: clock() - 10,
        expires_in_secs: 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap();
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    let contents =
        snapshot::read_car(&built.write_car(Vec::new()).unwrap()[..], Limits::DEFAULT).unwrap();
    snapshot::import(&store, &contents, VerifyOptions::default()).unwrap();
    let started = std::time::Instant::now();
    let state = Arc::new(
        NodeState::new(
            store,
            NodeConfig::default(),
            Keypair::from_secret(&[9; 32]),
            dir.path(),
            clock,
        )
        .unwrap(),
    );
    println!(
        "node started over {AGENTS} agents (index built) in {:?}",
        started.elapsed()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let paths: Arc<Vec<String>> = Arc::new(
            mix::queries(10_000, AGENTS)
                .into_iter()
                .map(|q| {
                    let q: String = q.split(' ').collect::<Vec<_>>().join("+");
                    format!("/api/v1/agents?q={q}&sort=relevance&limit=10")
                })
                .collect(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        let rps = load(base, paths).await;
        println!("{CLIENTS} keep-alive clients, {SECONDS} s: {rps:>7.0} ranked searches/s (target >= 2,000)");
    });
}
