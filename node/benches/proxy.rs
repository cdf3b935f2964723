//! The A2A proxy's overhead: a small JSON-RPC call to an echo agent written in Rust, directly
//! and through the node's proxy, on loopback.
//!
//! `cargo bench -p meridian-node --bench proxy` prints, for each path, the median and p99 latency
//! of 2,000 sequential calls (the added latency is the difference of the medians), then the rate
//! 64 keep-alive clients get in 5 seconds. To pin the agent and the client to a core each as the
//! issue asks, run it as `taskset -c 0,1 cargo bench ...`: the agent runs on its own
//! single-threaded runtime on one thread, the node and the client on the other runtime.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/node.rs"]
mod node;

use meridian_node::daemon::config::NodeConfig;
use meridian_node::daemon::http::{NodeState, router};

const CALLS: usize = 2_000;
const CLIENTS: usize = 64;
const SECONDS: u64 = 5;
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"hi"}]}}}"#;

/// The echo agent on its own thread and single-threaded runtime; its URL.
fn start_agent() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    axum::Json(serde_json::json!({ "jsonrpc": "2.0", "id": request["id"], "result": { "message": { "role": "ROLE_AGENT", "messageId": "r", "parts": [{ "text": "hi" }] } } }))
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}/", rx.recv().unwrap())
}

/// A node over a store holding the echo agent (its endpoint on loopback, allowed).
fn node_state(dir: &std::path::Path, agent: &str) -> Arc<NodeState> {
    let card = format!(
        r#"{{"name":"Echo","description":"echo","supportedInterfaces":[{{"url":"{agent}","protocolBinding":"JSONRPC"}}],"skills":[]}}"#
    );
    let mut config = NodeConfig::default();
    config.a2a.allow_private = true;
    // The benchmark measures the proxy, not the rate limiter's refusals.
    config.a2a.default_rps = 1_000_000;
    config.a2a.default_burst = 1_000_000;
    node::node_over(dir, vec![card], config)
}

/// One small JSON-RPC call to `url`, answered with success and read whole.
async fn call(client: &reqwest::Client, url: &str) {
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let _ = answer.bytes().await.unwrap();
}

/// Median and p99 of `CALLS` sequential calls to `url`.
async fn latency(client: &reqwest::Client, url: &str) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        call(client, url).await;
        times.push(started.elapsed());
    }
    times.sort();
    (times[CALLS / 2], times[CALLS * 99 / 100])
}

/// Calls per second `CLIENTS` keep-alive clients get from `url` in `SECONDS`.
async fn rate(client: &reqwest::Client, url: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, done) = (client.clone(), url.to_owned(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    call(&client, &url).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / SECONDS as f64
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent();
    let state = node_state(dir.path(), &agent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _ = state.gateway_addr.set(address);
        let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let proxied = format!("http://{address}/a2a/acme/echo");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .unwrap();
        let (direct_median, direct_p99) = latency(&client, &agent).await;
        let (proxy_median, proxy_p99) = latency(&client, &proxied).await;
        println!("sequential calls ({CALLS}): direct median {direct_median:?} p99 {direct_p99:?}; through the proxy median {proxy_median:?} p99 {proxy_p99:?}");
        println!(
            "added latency (median): {:?} (target <= 0.5 ms)",
            proxy_median.saturating_sub(direct_median)
        );
        let direct_rate = rate(&client, &agent).await;
        let proxy_rate = rate(&client, &proxied).await;
        println!("{CLIENTS} keep-alive clients, {SECONDS} s: direct {direct_rate:.0} calls/s, through the proxy {proxy_rate:.0} calls/s");
        println!(
            "ratio: {:.0}% of the direct rate (target >= 70%)",
            100.0 * proxy_rate / direct_rate
        );
    });
}
