//! A node over 100,000 agents on loopback, for timing the web console in a browser: builds
//! the benchmarks' corpus (the search benchmark's cards), serves the node's real gateway, prints
//! `serving http://ADDRESS` and runs until its standard input closes.
//!
//! `tests/python/bench_console_first_page.py` runs it and drives Chromium against it; see
//! `docs/benchmarks.md` ("The console at 100,000 agents").
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use std::io::{Read as _, Write as _};

#[path = "common/mix.rs"]
mod mix;
#[path = "common/node.rs"]
mod node;

use meridian_node::daemon::http::router;

const AGENTS: usize = 100_000;

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a mistake worth saying so.
    if let Some(other) = std::env::args().skip(1).find(|a| a != "--bench") {
        eprintln!("console_node takes no arguments (got `{other}`)");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let state = node::node_over_timed(dir.path(), (0..AGENTS).map(mix::card).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("serving http://{}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        // Until the driver closes our standard input.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
    });
}
