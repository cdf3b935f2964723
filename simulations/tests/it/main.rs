//! The simulations' fast set, run by the normal test command: at least 32 seeds across the
//! scenarios, each failure printed with the command that replays it.
#![allow(clippy::unwrap_used, missing_docs)]

mod cli;
mod faults;
mod hubs;
mod publish_converge;

use meridian_simulations::scenarios::{self, Report};

/// Runs `scenario` for `seeds` and fails with every failing seed and its replay command.
pub fn seeds_pass(scenario: &str, seeds: std::ops::RangeInclusive<u64>) -> Vec<Report> {
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    for seed in seeds {
        let report = scenarios::run(scenario, seed).unwrap();
        println!("{}", report.line());
        if !report.passed() {
            failed.push((seed, report.failures.clone()));
        }
        reports.push(report);
    }
    assert!(
        failed.is_empty(),
        "failing seeds (replay: cargo run -p meridian-simulations --release -- --scenario {scenario} --seed S): {failed:#?}"
    );
    reports
}
