//! The fast set of publish-and-converge runs that the normal test command runs.

use meridian_simulations::scenarios::{Change, PublishConverge, publish_converge};

/// 16 seeds of the scenario: 50 nodes in 3 regions, one change in a 10,000-agent
/// registry. Every node must converge on the new head with a snapshot that verifies, having
/// fetched no more than the change.
#[test]
fn publish_converge_holds_for_16_seeds() {
    let params = PublishConverge::default();
    let mut failed = Vec::new();
    for seed in 1..=16 {
        let report = publish_converge(seed, &params);
        println!("{}", report.line());
        // What a node fetches for a one-agent change (its answers; gossip aside) stays within
        // 8 KiB: the changed path and manifest, each fetched once.
        let answers = report.figures["answer_bytes_per_node_max"]
            .as_u64()
            .unwrap();
        assert!(
            answers <= 8 * 1024,
            "seed {seed}: {answers} bytes of answers"
        );
        if !report.passed() {
            failed.push((seed, report.failures));
        }
    }
    assert!(
        failed.is_empty(),
        "failing seeds (replay: cargo run -p meridian-simulations --release -- --scenario publish-converge --seed S): {failed:?}"
    );
}

/// The same seed gives the same figures.
#[test]
fn a_seed_replays_exactly() {
    let params = PublishConverge {
        agents: 500,
        ..PublishConverge::default()
    };
    let a = publish_converge(7, &params);
    let b = publish_converge(7, &params);
    assert!(a.passed(), "{:?}", a.failures);
    assert_eq!(a.figures, b.figures);
}

/// The topology again, the change this time a deprecation of agent 0 naming agent 1
/// as its successor: every node must hold the organisation's signed deprecation at the new
/// head, having fetched no more than the change.
#[test]
fn a_deprecation_reaches_every_node() {
    let params = PublishConverge {
        change: Change::Deprecate,
        ..PublishConverge::default()
    };
    for seed in 1..=4 {
        let report = publish_converge(seed, &params);
        println!("{}", report.line());
        assert!(report.passed(), "seed {seed}: {:?}", report.failures);
        let answers = report.figures["answer_bytes_per_node_max"]
            .as_u64()
            .unwrap();
        assert!(
            answers <= 8 * 1024,
            "seed {seed}: {answers} bytes of answers"
        );
    }
}
