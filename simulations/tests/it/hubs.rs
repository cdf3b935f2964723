//! The hub scenarios in the fast set: the real hub (cache, head mirror, limiter, HTTP API and
//! QUIC trunk over turmoil UDP) under latency, churn, a lying hub and a burst.

use meridian_simulations::scenarios;

use crate::seeds_pass;

/// With hubs, a new head reaches every node about as fast as over the full mesh, with a
/// fraction of the cross-region bytes and one trunk fetch per far region; a call through warm
/// hubs takes at most half of a direct call over fresh TLS (the scenario checks it).
#[test]
fn hub_latency_holds_for_2_seeds() {
    for report in seeds_pass("hub-latency", 1..=2) {
        let figure = |name: &str| report.figures[name].as_u64().unwrap();
        assert!(
            figure("cross_region_bytes_hubs") * 4 < figure("cross_region_bytes_mesh"),
            "{}",
            report.line()
        );
        // The region's nodes all ask their hub for the same delta: one fetch per far region.
        assert_eq!(figure("trunk_fetches"), 2, "{}", report.line());
        assert!(figure("a2a_hub_p50_ms") * 2 <= figure("a2a_direct_p50_ms"));
    }
}

/// Hubs crash and restart, join late with an empty store or leave for good, and nodes crash
/// and restart, while the publisher publishes; some seeds have a hub that tampers with
/// everything it serves.
#[test]
fn hub_churn_holds_for_6_seeds() {
    let reports = seeds_pass("hub-churn", 1..=6);
    let any = |figure: &str| {
        reports
            .iter()
            .any(|r| r.figures[figure].as_u64().is_some_and(|v| v > 0))
    };
    assert!(
        reports.iter().any(|r| !r.figures["lying_hub"].is_null()),
        "the seeds include a lying hub"
    );
    assert!(any("hubs_joined"), "the seeds include a hub joining");
    assert!(any("hubs_left"), "the seeds include a hub leaving for good");
    for report in &reports {
        let figure = |name: &str| report.figures[name].as_u64().unwrap();
        assert_eq!(
            figure("hub_restarts") + figure("hubs_joined") + figure("hubs_left"),
            3,
            "{}",
            report.line()
        );
        assert!(figure("hub_blocks_checked") > 0);
    }
}

/// One org's burst is limited to its rate; the others keep their share.
#[test]
fn rate_limits_hold_for_4_seeds() {
    for report in seeds_pass("rate-limit", 1..=4) {
        let figure = |name: &str| report.figures[name].as_u64().unwrap();
        assert_eq!(figure("polite_ok"), figure("polite_calls"));
        assert!(figure("greedy_limited") > 0);
        assert!(figure("greedy_ok") > 0);
    }
}

/// A hub run repeats exactly: the trunk's QUIC, the HTTP API and the caches are all driven by
/// simulated time and the seed.
#[test]
fn a_hub_scenario_replays_exactly() {
    let a = scenarios::run("hub-churn", 2).unwrap();
    let b = scenarios::run("hub-churn", 2).unwrap();
    assert!(a.passed(), "{:?}", a.failures);
    assert_eq!(a.figures, b.figures);
}
