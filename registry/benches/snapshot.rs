//! Snapshot throughput on the issue's workload: 100,000 agents with cards of about 1 KiB.
//!
//! Run with `cargo bench -p meridian-registry --bench snapshot`. Set `MERIDIAN_BENCH_AGENTS`
//! to change the registry size. Besides criterion's timings it prints the agents/s figures and
//! the size of a one-change delta and the number of blocks the change touched.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_registry::car::Limits;
use meridian_registry::keys::Keypair;
use meridian_registry::snapshot::{self, BuildInput, CardInput, Snapshot, VerifyOptions};
use meridian_registry::store::{MemoryStore, SledStore};

const NOW: i64 = 1_800_000_000;

fn agents() -> usize {
    std::env::var("MERIDIAN_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// A card of about 1 KiB.
fn card(i: usize, skill: &str) -> CardInput {
    let description = format!("Agent {i} answers questions about topic {i}. ").repeat(12);
    let json = format!(
        r#"{{"name":"Agent {i}","description":"{description}","version":"1.0.{i}","provider":{{"organization":"Acme","url":"https://acme.example"}},"supportedInterfaces":[{{"url":"https://agents.acme.example/a2a/{i}","protocolBinding":"JSONRPC"}}],"capabilities":{{"streaming":true}},"skills":[{{"id":"{skill}","name":"{skill}","tags":["{skill}","bench"],"inputModes":["text/plain"],"outputModes":["text/plain"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#
    );
    CardInput {
        source_name: format!("card-{i}"),
        json,
    }
}

fn build(
    cards: Vec<CardInput>,
    previous: Option<&Snapshot>,
    now: i64,
) -> (Snapshot, snapshot::BuildReport) {
    snapshot::build(BuildInput {
        node_key: &Keypair::from_secret(&[1; 32]),
        org_key: &Keypair::from_secret(&[2; 32]),
        org: "acme",
        region: "eu-west",
        cards,
        previous,
        now,
        expires_in_secs: 86_400,
        limits: Limits::DEFAULT,
    })
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let n = agents();
    let started = Instant::now();
    let (full, _) = build((0..n).map(|i| card(i, "search")).collect(), None, NOW);
    let car = full.write_car(Vec::new()).unwrap();
    println!(
        "built {n} agents in {:.2}s: car {} bytes, {} bytes/agent, tree depth {}",
        started.elapsed().as_secs_f64(),
        car.len(),
        car.len() / n,
        full.tree.depth()
    );

    // One change: blocks touched and delta size.
    let mut cards: Vec<CardInput> = (0..n).map(|i| card(i, "search")).collect();
    cards[n / 2] = card(n / 2, "translate");
    let started = Instant::now();
    let (next, report) = build(cards, Some(&full), NOW + 1);
    let build_seconds = started.elapsed().as_secs_f64();
    let (delta, _) = next.write_delta(&full.tree, Vec::new()).unwrap();
    println!(
        "one change: {} new blocks (tree depth {}), delta {} bytes, rebuild {build_seconds:.2}s",
        report.new_blocks,
        next.tree.depth(),
        delta.len()
    );

    let options = VerifyOptions {
        now: Some(NOW + 10),
        ..VerifyOptions::default()
    };
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(format!("verify_{n}_agents"), |b| {
        b.iter(|| {
            let contents = snapshot::read_car(&car[..], Limits::DEFAULT).unwrap();
            snapshot::verify(&contents, &MemoryStore::new(), &options).unwrap()
        })
    });
    group.bench_function(format!("import_sled_{n}_agents"), |b| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = SledStore::open(dir.path()).unwrap();
                (dir, store)
            },
            |(dir, store)| {
                let contents = snapshot::read_car(&car[..], Limits::DEFAULT).unwrap();
                snapshot::import(&store, &contents, options.clone()).unwrap();
                // Returned, so closing sled and deleting the directory happen outside the timing.
                (dir, store)
            },
        )
    });
    group.finish();
}

criterion_group!(snapshot_benches, benches);
criterion_main!(snapshot_benches);
