//! Search over the federated view: 100,000 agents of about 1 KiB, the issue's workload.
//!
//! Run with `cargo bench -p meridian-node --bench search`. The index is built in-process from
//! signed manifests exactly as the gateway builds it; each case is one `GET /api/v1/agents` query,
//! and the `relevance_*` cases the scoring of ARD search and `sort=relevance`.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_node::daemon::index::{AgentIndex, AgentRecord, Query};
use meridian_registry::keys::Keypair;
use meridian_registry::manifest::ManifestBody;

fn card(i: usize) -> String {
    let description = format!("Agent {i} answers questions about topic {i}. ").repeat(12);
    let skill = if i.is_multiple_of(1000) {
        "translate"
    } else {
        "search"
    };
    format!(
        r#"{{"name":"Agent {i}","description":"{description}","version":"1.0.{i}","supportedInterfaces":[{{"url":"https://agents.example/a2a/{i}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"{skill}","name":"{skill}","tags":["{skill}","t{}"],"inputModes":["text/plain"],"outputModes":["text/plain"]}}],"defaultInputModes":["text/plain"],"defaultOutputModes":["text/plain"]}}"#,
        i % 100
    )
}

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
        "posting sets and vocabulary of 100,000 agents built in {:?}",
        started.elapsed()
    );
    assert_eq!(index.len(), 100_000);
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
    // Relevance (ARD search and `sort=relevance`): every agent matching any word is scored.
    for (name, text) in [
        ("relevance_rare", "translate questions for me"),
        ("relevance_common", "topic answers"),
        ("relevance_none", "nothing-matches-this"),
    ] {
        group.bench_function(name, |b| b.iter(|| index.relevance(text).len()));
    }
    group.finish();
}

criterion_group!(search, benches);
criterion_main!(search);
