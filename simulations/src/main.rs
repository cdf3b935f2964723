//! `meridian-simulations`: run a scenario for one seed or many, print each run's outcome and
//! figures, and the command that replays any failure.

use clap::Parser;
use meridian_simulations::scenarios::{self, SCENARIOS};

/// Runs Meridian's deterministic simulations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Scenario to run.
    #[arg(long, default_value = "publish-converge")]
    scenario: String,
    /// Run this one seed (the default is 1 unless --seeds is given).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run seeds 1..=N.
    #[arg(long)]
    seeds: Option<u64>,
    /// Print each report as JSON instead of a line.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !SCENARIOS.contains(&args.scenario.as_str()) {
        eprintln!(
            "error: unknown scenario `{}`; known: {}",
            args.scenario,
            SCENARIOS.join(", ")
        );
        return std::process::ExitCode::from(2);
    }
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (1..=n).collect(),
        (None, None) => vec![1],
    };
    let mut failed = Vec::new();
    for seed in seeds {
        let Some(report) = scenarios::run(&args.scenario, seed) else {
            return std::process::ExitCode::from(2);
        };
        if args.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.line());
        }
        if !report.passed() {
            for failure in &report.failures {
                eprintln!("  {failure}");
            }
            failed.push(seed);
        }
    }
    if failed.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("{} failing seed(s); replay with:", failed.len());
    for seed in failed {
        eprintln!(
            "  cargo run -p meridian-simulations --release -- --scenario {} --seed {seed}",
            args.scenario
        );
    }
    std::process::ExitCode::FAILURE
}
