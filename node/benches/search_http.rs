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
#[path = "common/node.rs"]
mod node;

use load::{CLIENTS, SECONDS, load};
use meridian_node::daemon::http::router;

const AGENTS: usize = 100_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = node::node_over_timed(dir.path(), (0..AGENTS).map(mix::card).collect());
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
