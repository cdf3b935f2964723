//! Search over the federated view: 100,000 agents of about 1 KiB, the workload.
//!
//! Run with `cargo bench -p meridian-node --bench search`. The index is built in-process from
//! signed manifests exactly as the gateway builds it; each case is one `GET /api/v1/agents` query,
//! and the `ranked_*` cases the top 10 of ARD search and `sort=relevance`. Before them it prints
//! how long the full index took, its ranked part's size in RAM, the latency percentiles of a mix
//! of 10,000 queries (one to three words from the cards, one in ten misspelt), and how long a
//! one-agent change takes to become searchable.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_node::daemon::index::{AgentIndex, AgentRecord, Query};
use meridian_node::daemon::ranking::RankFilter;
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::ManifestBody;

#[path = "common/mix.rs"]
mod mix;

use mix::card;

fn benches(c: &mut Criterion) {
    let key = Keypair::from_secret(&[3; 32]);
    let records: Vec<AgentRecord> = (0..100_000)
        .map(|i| {
            let org = format!("org-{}", i % 50);
            let manifest = ManifestBody::from_card(&card(i), &org, "eu-west", 1)
                .unwrap()
                .sign(&key);
            let (cid, _) = manifest.to_block_and_cid();
            AgentRecord::new(&manifest, &cid, "did:key:publisher", 1)
        })
        .collect();
    let mut index = AgentIndex::new();
    let commit = meridian_registry::ids::dag_cbor_cid(b"commit");
    let started = std::time::Instant::now();
    index.replace_publisher("did:key:publisher", &commit, records);
    eprintln!(
        "posting sets and ranked index of 100,000 agents built in {:?}; ranked index {} MiB in RAM",
        started.elapsed(),
        index.ranked_bytes() / (1024 * 1024)
    );
    assert_eq!(index.len(), 100_000);
    query_mix(&index);
    one_change(&mut index, &key);
    let query = |edit: &dyn Fn(&mut Query)| {
        let mut q = Query {
            limit: 50,
            ..Query::default()
        };
        edit(&mut q);
        q
    };
    let cases: Vec<(&str, Query)> = vec![
        ("first_page", query(&|_| {})),
        ("org_page", query(&|q| q.org = Some("org-7".into()))),
        ("common_word", query(&|q| q.text = Some("topic".into()))),
        ("rare_skill", query(&|q| q.skill = Some("translate".into()))),
        ("rare_text", query(&|q| q.text = Some("agent 99999".into()))),
        (
            "no_match",
            query(&|q| q.text = Some("nothing-matches-this".into())),
        ),
    ];
    let mut group = c.benchmark_group("search_100k");
    for (name, q) in &cases {
        group.bench_function(*name, |b| b.iter(|| index.search(q).0.len()));
    }
    // Ranked (ARD search and `sort=relevance`): the best 10.
    let none = RankFilter::default();
    for (name, text) in [
        ("ranked_rare", "translate questions for me"),
        ("ranked_common", "topic answers"),
        ("ranked_typo", "qeustions topic"),
        ("ranked_none", "nothing-matches-this"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| index.rank(text, &none, 0, 10).unwrap().hits.len())
        });
    }
    group.finish();
}

/// Latency percentiles of the query mix, top 10 each.
fn query_mix(index: &AgentIndex) {
    let queries = mix::queries(10_000, 100_000);
    let none = RankFilter::default();
    let mut times: Vec<std::time::Duration> = queries
        .iter()
        .map(|q| {
            let started = std::time::Instant::now();
            std::hint::black_box(index.rank(q, &none, 0, 10).unwrap().hits.len());
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    eprintln!(
        "query mix (10,000 queries of 1-3 words, 10% misspelt), top 10: p50 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(99),
        times[times.len() - 1]
    );
}

/// How long one changed agent takes to become searchable: taken in and committed, then found.
fn one_change(index: &mut AgentIndex, key: &Keypair) {
    let card = card(12_345).replacen("about", "about zeppelin", 1);
    let manifest = ManifestBody::from_card(&card, "org-45", "eu-west", 2)
        .unwrap()
        .sign(key);
    let (cid, _) = manifest.to_block_and_cid();
    let started = std::time::Instant::now();
    index.upsert(AgentRecord::new(&manifest, &cid, "did:key:publisher", 2));
    let found = index
        .rank("zeppelin", &RankFilter::default(), 0, 10)
        .unwrap();
    eprintln!(
        "one changed agent searchable after {:?} ({} found)",
        started.elapsed(),
        found.total
    );
}

criterion_group!(search, benches);
criterion_main!(search);
