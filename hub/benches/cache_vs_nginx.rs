//! Cached block `GET`s: the hub against nginx's `proxy_cache`, side by side on loopback.
//!
//! `cargo bench -p meridian-hub --bench cache_vs_nginx` (needs `nginx` and `wrk`, from Debian's
//! packages: `apt-get install nginx-light wrk`). One run:
//! 1. builds a registry snapshot (2,000 agents of about 1 KiB) and serves its blocks from an
//!    origin on loopback that answers both the node gateway's `GET /api/v1/blocks/{cid}` and its
//!    `POST /api/v1/sync`;
//! 2. starts a real hub (`meridian_hub::daemon::serve`), tells it the head and its vouched
//!    source, and warms its cache with one `GET /v1/blocks/{cid}` per block;
//! 3. starts nginx with `proxy_cache` in front of the same origin and warms it the same way
//!    (the second pass must be all `HIT`s);
//! 4. runs `wrk` (2 threads, 64 connections, 10 s) against each, twice, alternating, cycling
//!    through every block, and prints requests/s and the origin requests seen during each run
//!    (0: everything came from the cache).
//!
//! The hub verifies each block against its CID when it caches it, not when it serves it, so
//! both serve from memory; nginx serves from its cache files (the page cache).

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use meridian_hub::daemon::config::HubConfig;
use meridian_hub::daemon::{HubRunOptions, serve};
use meridian_hub::wire::{Gossip, MESSAGE_BYTES_MAX, Request, Response};
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput};

const AGENTS: usize = 2_000;

struct Origin {
    blocks: BTreeMap<Cid, Vec<u8>>,
    requests: AtomicU64,
}

async fn origin_block(
    State(origin): State<Arc<Origin>>,
    UrlPath(cid): UrlPath<String>,
) -> axum::response::Response {
    origin.requests.fetch_add(1, Ordering::Relaxed);
    match meridian_registry::ids::parse_cid(&cid)
        .ok()
        .and_then(|c| origin.blocks.get(&c))
    {
        Some(block) => (
            [
                (header::CONTENT_TYPE, "application/vnd.ipld.dag-cbor"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            block.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn origin_sync(
    State(origin): State<Arc<Origin>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    origin.requests.fetch_add(1, Ordering::Relaxed);
    let answer = match Request::decode(&body, MESSAGE_BYTES_MAX) {
        Ok(Request::Blocks(cids)) => Response::Blocks(
            cids.iter()
                .filter_map(|c| Some((*c, Arc::from(origin.blocks.get(c)?.as_slice()))))
                .collect(),
        ),
        Ok(_) => Response::Refused("the origin serves blocks only".into()),
        Err(error) => Response::Refused(error.to_string()),
    };
    answer.encode().into_response()
}

fn card(index: usize) -> CardInput {
    let padding = "x".repeat(700);
    CardInput {
        source_name: format!("card-{index}"),
        json: format!(
            r#"{{"name":"bench agent {index}","description":"{padding}","version":"1.0.0","supportedInterfaces":[{{"url":"https://agents.example/{index}","protocolBinding":"JSONRPC"}}],"capabilities":{{}},"skills":[{{"id":"s","name":"s","tags":["bench"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
        ),
    }
}

fn tool(name: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        bail!(
            "`{name}` is not installed; install nginx and wrk first (apt-get install nginx-light wrk)"
        );
    }
    Ok(())
}

async fn wait_for_file(path: &Path) -> Result<String> {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{} did not appear", path.display())
}

/// GETs every path once; returns how many answers carried `X-Cache-Status: HIT` (nginx).
async fn warm(client: &reqwest::Client, base: &str, paths: &[String]) -> Result<usize> {
    let mut hits = 0;
    for path in paths {
        let response = client.get(format!("{base}{path}")).send().await?;
        if !response.status().is_success() {
            bail!("{base}{path}: HTTP {}", response.status());
        }
        if response
            .headers()
            .get("x-cache-status")
            .is_some_and(|v| v == "HIT")
        {
            hits += 1;
        }
        response.bytes().await?;
    }
    Ok(hits)
}

/// A running nginx, stopped (master and workers) when dropped.
struct Nginx {
    child: Child,
    conf: std::path::PathBuf,
    prefix: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Killing the master alone would leave its workers running: ask it to stop them.
        let stopped = Command::new("nginx")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn start_nginx(dir: &Path, port: u16, origin: SocketAddr) -> Result<Nginx> {
    let cache = dir.join("nginx-cache");
    std::fs::create_dir_all(&cache)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    // As root, nginx's workers would drop to `nobody`, who cannot write the cache directory.
    let user = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        r#"{user}
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    proxy_cache_path {cache} levels=1:2 keys_zone=blocks:32m max_size=1g inactive=1h use_temp_path=off;
    upstream origin {{ server {origin}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /blocks/ {{
            proxy_pass http://origin/api/v1/blocks/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache blocks;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"#,
        dir = dir.display(),
        cache = cache.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(Nginx {
        child,
        conf: path,
        prefix: dir.to_path_buf(),
    })
}

/// Runs wrk against `base` cycling through the paths in `list`; returns requests per second.
fn wrk(dir: &Path, base: &str, list: &Path) -> Result<f64> {
    let script = dir.join("paths.lua");
    std::fs::write(
        &script,
        format!(
            r#"local paths = {{}}
for line in io.lines("{}") do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"#,
            list.display()
        ),
    )?;
    let output = Command::new("wrk")
        .args(["-t2", "-c64", "-d10s", "-s"])
        .arg(&script)
        .arg(base)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw errors against {base}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

async fn run() -> Result<()> {
    tool("nginx")?;
    tool("wrk")?;
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let key = Keypair::from_secret(&[7; 32]);
    let (snap, _) = snapshot::build(BuildInput {
        node_key: &key,
        org_key: &key,
        org: "bench",
        region: "eu",
        cards: (0..AGENTS).map(card).collect(),
        previous: None,
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64,
        expires_in_secs: 365 * 86_400,
        limits: Limits::DEFAULT,
    })?;
    let blocks: BTreeMap<Cid, Vec<u8>> =
        snap.blocks.iter().map(|(c, b)| (*c, b.to_vec())).collect();
    let bytes: usize = blocks.values().map(Vec::len).sum();
    let origin = Arc::new(Origin {
        blocks,
        requests: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/api/v1/blocks/{cid}", axum::routing::get(origin_block))
        .route("/api/v1/sync", axum::routing::post(origin_sync))
        .with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The hub, told the head and that the origin serves its blocks.
    let hub_data = dir.join("hub");
    let mut config = HubConfig::default();
    config.hub.listen = "127.0.0.1:0".into();
    config.hub.trunk_listen = "127.0.0.1:0".into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(serve(
        HubRunOptions {
            data: hub_data.clone(),
            config: None,
            listen: None,
            trunk_listen: None,
        },
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let hub_base = format!(
        "http://{}",
        wait_for_file(&hub_data.join(meridian_hub::daemon::HTTP_ADDR_FILE)).await?
    );
    let client = reqwest::Client::builder().no_proxy().build()?;
    let origin_url = format!("http://{origin_addr}");
    let commit = snap.commit.to_block();
    let sig = key.sign(&meridian_sync::claims::source_message(
        &origin_url,
        &snap.commit_cid,
    ));
    let pushed = client
        .post(format!("{hub_base}/v1/gossip"))
        .header(meridian_sync::claims::SOURCE_HEADER, &origin_url)
        .header(
            meridian_sync::claims::SOURCE_SIG_HEADER,
            base64::engine::general_purpose::STANDARD.encode(sig),
        )
        .body(Gossip::Head(commit).encode())
        .send()
        .await?;
    if !pushed.status().is_success() {
        bail!("the hub refused the head: {}", pushed.text().await?);
    }

    let cids: Vec<String> = snap.blocks.keys().map(Cid::to_string).collect();
    let hub_paths: Vec<String> = cids.iter().map(|c| format!("/v1/blocks/{c}")).collect();
    let nginx_paths: Vec<String> = cids.iter().map(|c| format!("/blocks/{c}")).collect();
    warm(&client, &hub_base, &hub_paths).await?;

    let nginx_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let nginx = start_nginx(dir, nginx_port, origin_addr)?;
    let nginx_base = format!("http://127.0.0.1:{nginx_port}");
    let mut ready = false;
    for _ in 0..100 {
        if client.get(&nginx_base).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("nginx did not start (see {}/logs/error.log)", dir.display());
    }
    warm(&client, &nginx_base, &nginx_paths).await?;
    let hits = warm(&client, &nginx_base, &nginx_paths).await?;
    if hits != nginx_paths.len() {
        bail!(
            "nginx's second pass had {hits} HITs of {}",
            nginx_paths.len()
        );
    }

    let hub_list = dir.join("hub-paths.txt");
    let nginx_list = dir.join("nginx-paths.txt");
    std::fs::write(&hub_list, hub_paths.join("\n") + "\n")?;
    std::fs::write(&nginx_list, nginx_paths.join("\n") + "\n")?;
    println!(
        "{} blocks ({} KiB) cached in both; wrk -t2 -c64 -d10s, cycling through them",
        cids.len(),
        bytes / 1024
    );
    println!(
        "{:<28} {:>12} {:>16}",
        "run", "requests/s", "origin requests"
    );
    let mut best = [0f64; 2];
    for round in 1..=2 {
        for (index, (name, base, list)) in [
            ("hub /v1/blocks", &hub_base, &hub_list),
            ("nginx proxy_cache", &nginx_base, &nginx_list),
        ]
        .into_iter()
        .enumerate()
        {
            let before = origin.requests.load(Ordering::Relaxed);
            let base = base.clone();
            let (dir, list) = (dir.to_path_buf(), list.clone());
            let rate = tokio::task::spawn_blocking(move || wrk(&dir, &base, &list)).await??;
            let fetched = origin.requests.load(Ordering::Relaxed) - before;
            println!(
                "{:<28} {rate:>12.0} {fetched:>16}",
                format!("{name} (round {round})")
            );
            best[index] = best[index].max(rate);
        }
    }
    println!(
        "best: hub {:.0}/s, nginx {:.0}/s: the hub serves {:.2}x nginx's rate",
        best[0],
        best[1],
        best[0] / best[1].max(1.0)
    );
    drop(nginx);
    let _ = stop_tx.send(());
    let _ = hub.await;
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cache_vs_nginx: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("cache_vs_nginx: {error:#}");
        std::process::exit(1);
    }
}
