//! Agent lookup throughput against a bare axum handler, same machine, same run.
//!
//! `cargo bench -p meridian-node --bench lookup` starts, on loopback, (1) the node's real gateway
//! over a sled store holding 10,000 published agents and (2) a bare axum handler returning a
//! JSON body of the same size, then drives each with the same load (64 keep-alive clients for 5
//! seconds) and prints requests per second and the ratio. The load generator shares the machine's
//! cores with the server in both runs alike.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

#[path = "common/load.rs"]
mod load;

use load::{CLIENTS, SECONDS, load};

use meridian_node::daemon::config::NodeConfig;
use meridian_node::daemon::http::{NodeState, router};
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, VerifyOptions};
use meridian_registry::store::SledStore;

const AGENTS: usize = 10_000;

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
                json: format!(r#"{{"name":"Agent {i}","description":"Agent {i} answers questions.","supportedInterfaces":[{{"url":"https://agents.example/{i}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"search","name":"search","tags":["search"]}}]}}"#),
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

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let paths: Arc<Vec<String>> = Arc::new(
            (0..AGENTS)
                .map(|i| format!("/api/v1/agents/acme/agent-{i}"))
                .collect(),
        );
        let node_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node_base = format!("http://{}", node_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(node_listener, router(state)).await.unwrap() });
        // A sample answer, so the bare handler returns the same number of bytes.
        let sample = reqwest::get(format!("{node_base}{}", paths[0]))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let bare_body: &'static [u8] = Box::leak(sample.to_vec().into_boxed_slice());
        let bare = axum::Router::new().route(
            "/api/v1/agents/{org}/{agent}",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    bare_body,
                )
            }),
        );
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_base = format!("http://{}", bare_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(bare_listener, bare).await.unwrap() });

        let bare_rps = load(bare_base, paths.clone()).await;
        let node_rps = load(node_base, paths).await;
        println!(
            "response body: {} bytes; {CLIENTS} keep-alive clients, {SECONDS} s each",
            bare_body.len()
        );
        println!("bare axum handler: {bare_rps:>9.0} requests/s");
        println!("node agent lookup: {node_rps:>9.0} requests/s");
        println!("ratio: {:.0}% (target >= 70%)", 100.0 * node_rps / bare_rps);
    });
}
