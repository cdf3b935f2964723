//! The HTTP benchmarks' load: keep-alive clients on loopback, each asking for the next path of
//! a list in turn, for a fixed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Clients asking at once.
pub const CLIENTS: usize = 64;
/// How long each load runs, in seconds.
pub const SECONDS: u64 = 5;

/// Requests per second `CLIENTS` clients got answered by `base`, asking for `paths` in turn
/// (every answer must be a success).
pub async fn load(base: String, paths: Arc<Vec<String>>) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let (client, done, base, paths) =
            (client.clone(), done.clone(), base.clone(), paths.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while Instant::now() < deadline {
                let response = client
                    .get(format!("{base}{}", paths[i % paths.len()]))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                let _ = response.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                i += CLIENTS;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / SECONDS as f64
}
