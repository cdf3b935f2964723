//! Federation convergence on loopback: real `meridian node run` processes mirroring one fresh
//! large snapshot, against the time one node takes to verify and import it alone.
//!
//! `cargo bench -p meridian-node --bench converge` builds a snapshot of 100,000 agents (cards of
//! about 1 KiB) signed by the publisher node's key, times `meridian snapshot import` of it into
//! an empty store (the baseline), then starts five nodes joined by the mesh, imports the
//! snapshot into the publisher over HTTP, and times until every other node holds it. Set
//! `MERIDIAN_BENCH_AGENTS` and `MERIDIAN_BENCH_NODES` to change the sizes. Every node runs on
//! this machine's cores, so on a small machine the mirrors' verification (every mirror checks
//! every signature) shares the same CPUs; the figures say how many cores there were.
//! `MERIDIAN_BENCH_PIN=1` gives node `i` core `i` alone (and the lone import core 0) with
//! `taskset`, so with no more nodes than cores it measures what separate one-core machines
//! would see.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PUBLISHER: &str = "n0";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `meridian` command, on core `core` alone when `MERIDIAN_BENCH_PIN` is set.
fn command(core: usize) -> Command {
    if std::env::var_os("MERIDIAN_BENCH_PIN").is_some() {
        let mut command = Command::new("taskset");
        command
            .args(["-c", &core.to_string()])
            .arg(env!("CARGO_BIN_EXE_meridian"));
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_meridian"))
    }
}

fn meridian(dir: &Path, args: &[&str]) -> serde_json::Value {
    let output = command(0)
        .args(args)
        .arg("--json")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "meridian {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A card of about 1 KiB, as in the registry's snapshot benchmark.
fn card(i: usize) -> String {
    let description = format!("Agent {i} answers questions about topic {i}. ").repeat(12);
    format!(
        r#"{{"name":"Agent {i}","description":"{description}","version":"1.0.{i}","provider":{{"organization":"Acme","url":"https://acme.example"}},"supportedInterfaces":[{{"url":"https://agents.acme.example/a2a/{i}","protocolBinding":"JSONRPC"}}],"capabilities":{{"streaming":true}},"skills":[{{"id":"search","name":"search","tags":["search","bench"],"inputModes":["text/plain"],"outputModes":["text/plain"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
    )
}

struct Node {
    child: Child,
    address: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_file(path: &Path, what: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(dir: &Path, data: &str, core: usize, bootstrap: Option<&str>) -> Node {
    let _ = std::fs::remove_file(dir.join(data).join("http.addr"));
    let mut command = command(core);
    command
        .args(["node", "run", "--data", data, "--http", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("MERIDIAN_BENCH_LOGS") {
            // MERIDIAN_BENCH_LOGS=DIR keeps each node's log as DIR/<node>.log.
            Some(logs) => Stdio::from(
                std::fs::File::create(Path::new(&logs).join(format!("{data}.log"))).unwrap(),
            ),
            None => Stdio::null(),
        });
    if let Some(bootstrap) = bootstrap {
        command.env("MERIDIAN_MESH_BOOTSTRAP", bootstrap);
    }
    let child = command.spawn().unwrap();
    let address = wait_for_file(&dir.join(data).join("http.addr"), "http address")
        .trim()
        .to_owned();
    Node { child, address }
}

fn mesh_addr(dir: &Path, data: &str) -> String {
    let started = Instant::now();
    loop {
        let text = wait_for_file(&dir.join(data).join("mesh.addr"), "mesh address");
        if let Some(line) = text.lines().find(|l| l.contains("/quic-v1/")) {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no quic address"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn head_seq(client: &reqwest::Client, node: &Node, publisher: &str) -> Option<u64> {
    let bytes = client
        .get(format!("http://{}/api/v1/registry/heads", node.address))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    body["heads"]
        .as_array()?
        .iter()
        .find(|head| head["publisher"] == publisher)
        .and_then(|head| head["seq"].as_u64())
}

async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> u64 {
    let Ok(response) = client
        .get(format!("http://{}/metrics", node.address))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|line| line.split(' ').next() == Some(name))
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let agents = env_usize("MERIDIAN_BENCH_AGENTS", 100_000);
    let nodes = env_usize("MERIDIAN_BENCH_NODES", 5).max(2);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let temp = tempfile::tempdir().unwrap();
    let dir: PathBuf = temp.path().to_owned();

    let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
    for name in &names {
        meridian(&dir, &["node", "init", "--data", name]);
    }
    meridian(&dir, &["keys", "generate", "--out", "org.key"]);
    let mut cards = std::fs::File::create(dir.join("cards.jsonl")).unwrap();
    for i in 0..agents {
        writeln!(cards, "{}", card(i)).unwrap();
    }
    drop(cards);
    let publisher_key = format!("{PUBLISHER}/node.key");
    let built = meridian(
        &dir,
        &[
            "snapshot",
            "build",
            "--key",
            &publisher_key,
            "--org-key",
            "org.key",
            "--org",
            "acme",
            "--region",
            "eu-west",
            "--cards",
            "cards.jsonl",
            "--out",
            "s.car",
        ],
    );
    let publisher = built["publisher"].as_str().unwrap().to_owned();
    let car = std::fs::read(dir.join("s.car")).unwrap();

    // The baseline: one node verifying and importing the snapshot alone (the whole command).
    let started = Instant::now();
    meridian(&dir, &["snapshot", "import", "s.car", "--data", "baseline"]);
    let alone = started.elapsed().as_secs_f64();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let admin = meridian(
        &dir,
        &["node", "token", "create", "--admin", "--data", PUBLISHER],
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = start(&dir, PUBLISHER, 0, None);
    let bootstrap = mesh_addr(&dir, PUBLISHER);
    let mirrors: Vec<Node> = names[1..]
        .iter()
        .enumerate()
        .map(|(i, name)| start(&dir, name, (i + 1) % cores, Some(&bootstrap)))
        .collect();
    runtime.block_on(async {
        // The mesh is formed when every mirror has a peer.
        let started = Instant::now();
        for node in &mirrors {
            while metric(&client, node, "meridian_sync_peers").await == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "mesh never formed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let started = Instant::now();
    let (imported, published, reached) = runtime.block_on(async {
        // The import answers once the publisher has also indexed the agents for search; the
        // mirrors are watched meanwhile.
        let import = tokio::spawn({
            let client = client.clone();
            let url = format!("http://{}/api/v1/registry/import", first.address);
            async move {
                let response = client
                    .post(url)
                    .header("authorization", format!("Bearer {admin}"))
                    .header("content-type", "application/vnd.ipld.car")
                    .body(car)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "import on the publisher: {}",
                    response.text().await.unwrap_or_default()
                );
                started.elapsed().as_secs_f64()
            }
        });
        let mut reached = vec![None; mirrors.len()];
        let mut published = None;
        while reached.iter().any(Option::is_none) {
            if published.is_none() && head_seq(&client, &first, &publisher).await == Some(1) {
                published = Some(started.elapsed().as_secs_f64());
            }
            for (index, node) in mirrors.iter().enumerate() {
                if reached[index].is_none() && head_seq(&client, node, &publisher).await == Some(1)
                {
                    reached[index] = Some(started.elapsed().as_secs_f64());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the mirrors did not converge in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reached: Vec<f64> = reached.into_iter().flatten().collect();
        // The publisher may answer its import only after its search index is built, and a
        // mirror may hold the head before the publisher's head endpoint was polled again.
        let published = published
            .unwrap_or(f64::MAX)
            .min(reached.iter().copied().fold(f64::MAX, f64::min));
        (import.await.unwrap(), published, reached)
    });
    let converged = reached.iter().copied().fold(0.0, f64::max);
    println!(
        "{agents} agents ({} MB CAR), {nodes} nodes on one machine with {cores} cores{}",
        std::fs::metadata(dir.join("s.car")).unwrap().len() / 1_000_000,
        if std::env::var_os("MERIDIAN_BENCH_PIN").is_some() {
            ", each node (and the lone import) pinned to one core"
        } else {
            ""
        }
    );
    println!("  one node alone, `meridian snapshot import`: {alone:.2} s");
    println!(
        "  publisher's HTTP import answered after      {imported:.2} s (verify, store, index)"
    );
    println!("  publisher's head endpoint showed it after  {published:.2} s");
    for (index, seconds) in reached.iter().enumerate() {
        println!(
            "  n{} holds the snapshot after                {seconds:.2} s ({:.2} s after the publisher)",
            index + 1,
            seconds - published
        );
    }
    println!(
        "  every node converged after {converged:.2} s = {:.2}x the node alone",
        converged / alone
    );
    println!(
        "  the mirrors, from the publisher holding it: {:.2} s = {:.2}x the node alone \
         ({} mirrors sharing {cores} cores)",
        converged - published,
        (converged - published) / alone,
        nodes - 1
    );
    drop((first, mirrors));
}
