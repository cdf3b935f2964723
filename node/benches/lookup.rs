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
#[path = "common/node.rs"]
mod node;

use load::{CLIENTS, SECONDS, load};

use meridian_node::daemon::config::NodeConfig;
use meridian_node::daemon::http::router;

const AGENTS: usize = 10_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cards = (0..AGENTS)
        .map(|i| format!(r#"{{"name":"Agent {i}","description":"Agent {i} answers questions.","supportedInterfaces":[{{"url":"https://agents.example/{i}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"search","name":"search","tags":["search"]}}]}}"#))
        .collect();
    let state = node::node_over(dir.path(), cards, NodeConfig::default());

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
