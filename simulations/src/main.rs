//! `meridian-simulations`: run a scenario (or all of them) for one seed or many, print each
//! run's outcome and figures and the command that replays any failure, and optionally write a
//! report (JSON, markdown and an SVG chart). With `--results FILE` a long run records each run
//! as it finishes and, started again, goes on where it stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use meridian_simulations::results::{self, Appender, ResultsError};
use meridian_simulations::scenarios::{self, Report, SCENARIOS};

/// Runs Meridian's deterministic simulations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Scenario to run, or `all`.
    #[arg(long, default_value = "publish-converge")]
    scenario: String,
    /// Run this one seed (the default is 1 unless --seeds is given).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run N seeds: 1..=N, or from --first-seed on.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first of the --seeds (to split a long run across machines or sessions).
    #[arg(long, default_value_t = 1, requires = "seeds")]
    first_seed: u64,
    /// Runs at once (each run is single-threaded and independent); 0 means one per core.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Print each report as JSON instead of a line.
    #[arg(long)]
    json: bool,
    /// Write report.json, report.md and convergence.svg into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Record each run in this file (JSON lines) as it finishes; runs already recorded there
    /// are not run again, and the summary and --report cover them too. Use it to split a
    /// long run across sessions: start the same command again after a stop.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let all_runs = match selected_runs(&args) {
        Ok(runs) => runs,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut recorded = match &args.results {
        None => results::Recorded::default(),
        Some(path) => match results::read(path) {
            Ok(recorded) => recorded,
            Err(error) => {
                eprintln!("error: {error}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let runs: Vec<(&'static str, u64)> = all_runs
        .iter()
        .filter(|run| !recorded.runs.contains_key(run))
        .copied()
        .collect();
    let appender = match &args.results {
        None => None,
        Some(path) => {
            eprintln!(
                "{}: {} of the {} runs already recorded, {} to run{}",
                path.display(),
                all_runs.len() - runs.len(),
                all_runs.len(),
                runs.len(),
                if matches!(recorded.tail, results::Tail::CutShort { .. }) {
                    " (its last line was cut short and is left out)"
                } else {
                    ""
                }
            );
            match Appender::open(path, &recorded) {
                Ok(appender) => Some(appender),
                Err(error) => {
                    eprintln!("error: {error}");
                    return std::process::ExitCode::from(2);
                }
            }
        }
    };
    let jobs = if args.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.jobs
    }
    .min(runs.len().max(1));
    let started = Instant::now();
    let (new_reports, append_error, mut appender) = run_all(&runs, jobs, appender, args.json);
    let session_secs = started.elapsed().as_secs_f64();
    let new_runs = new_reports.len();
    if let Some(error) = append_error {
        eprintln!("error: {error}; stopped after {new_runs} new runs");
        return std::process::ExitCode::from(2);
    }
    if let Some(Err(error)) = appender.as_mut().map(|a| a.session(session_secs, new_runs)) {
        eprintln!("error: {error}");
        return std::process::ExitCode::from(2);
    }
    // Every run asked for, in order: those recorded before and those made now.
    let mut made: BTreeMap<(&'static str, u64), Report> = new_reports
        .into_iter()
        .map(|report| ((report.scenario, report.seed), report))
        .collect();
    let reports: Vec<Report> = all_runs
        .iter()
        .filter_map(|run| made.remove(run).or_else(|| recorded.runs.remove(run)))
        .collect();
    let wall_secs = recorded.wall_secs + session_secs;
    if let Some(dir) = &args.report {
        if let Err(error) = meridian_simulations::report::write(dir, &reports, wall_secs) {
            eprintln!("error: writing the report to {}: {error}", dir.display());
            return std::process::ExitCode::from(2);
        }
        eprintln!("report written to {}", dir.display());
    }
    verdict(
        &reports,
        wall_secs,
        args.results.is_some().then_some((new_runs, session_secs)),
    )
}

/// Runs `runs` on `jobs` threads, recording each in `appender` as it ends and printing the
/// reports in run order; stops taking runs when one cannot be recorded. Returns the reports
/// made, the recording error if any, and the appender.
fn run_all(
    runs: &[(&'static str, u64)],
    jobs: usize,
    appender: Option<Appender>,
    json: bool,
) -> (Vec<Report>, Option<ResultsError>, Option<Appender>) {
    let appender = std::sync::Mutex::new(appender);
    let append_error: std::sync::Mutex<Option<ResultsError>> = std::sync::Mutex::new(None);
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Report>>> =
        std::sync::Mutex::new((0..runs.len()).map(|_| None).collect());
    let printed = std::sync::Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(scenario, seed)) = runs.get(index) else {
                        return;
                    };
                    let report = scenarios::run(scenario, seed);
                    if let Some(report) = &report {
                        let mut appender = match appender.lock() {
                            Ok(guard) => guard,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        if let Some(Err(error)) = appender.as_mut().map(|a| a.run(report)) {
                            // A run that cannot be recorded would be lost: stop taking runs.
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = append_error.lock() {
                                slot.get_or_insert(error);
                            }
                        }
                    }
                    let mut results = match results.lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    results[index] = report;
                    // Print in run order, whatever order the runs finish in.
                    let mut printed = match printed.lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    while let Some(Some(report)) = results.get(*printed) {
                        if json {
                            println!("{}", report.to_json());
                        } else {
                            println!("{}", report.line());
                        }
                        for failure in &report.failures {
                            eprintln!("  {failure}");
                        }
                        *printed += 1;
                    }
                }
            });
        }
    });
    let new_reports: Vec<Report> = match results.into_inner() {
        Ok(results) => results.into_iter().flatten().collect(),
        Err(poisoned) => poisoned.into_inner().into_iter().flatten().collect(),
    };
    let append_error = match append_error.into_inner() {
        Ok(error) => error,
        Err(poisoned) => poisoned.into_inner(),
    };
    let appender = match appender.into_inner() {
        Ok(appender) => appender,
        Err(poisoned) => poisoned.into_inner(),
    };
    (new_reports, append_error, appender)
}

/// Says how many runs failed (with `session`: the runs and seconds of this session, when
/// results are recorded across sessions) and how to replay each failure.
fn verdict(
    reports: &[Report],
    wall_secs: f64,
    session: Option<(usize, f64)>,
) -> std::process::ExitCode {
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    if let Some((new_runs, session_secs)) = session {
        eprintln!(
            "{} runs in {wall_secs:.1} s wall-clock in all ({new_runs} now, in {session_secs:.1} s), {} failed",
            reports.len(),
            failed.len()
        );
    } else {
        eprintln!(
            "{} runs in {wall_secs:.1} s wall-clock, {} failed",
            reports.len(),
            failed.len()
        );
    }
    if failed.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("replay with:");
    for report in failed {
        eprintln!(
            "  cargo run -p meridian-simulations --release -- --scenario {} --seed {}",
            report.scenario, report.seed
        );
    }
    std::process::ExitCode::FAILURE
}

/// The runs the arguments ask for: each scenario named (or all) at each seed, in that order.
fn selected_runs(args: &Args) -> Result<Vec<(&'static str, u64)>, String> {
    let scenarios: Vec<&'static str> = if args.scenario == "all" {
        SCENARIOS.to_vec()
    } else if let Some(known) = SCENARIOS.iter().find(|s| **s == args.scenario) {
        vec![*known]
    } else {
        return Err(format!(
            "unknown scenario `{}`; known: {}, or all",
            args.scenario,
            SCENARIOS.join(", ")
        ));
    };
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => match args.first_seed.checked_add(n.saturating_sub(1)) {
            Some(last) => (args.first_seed..=last).collect(),
            None => {
                return Err(format!(
                    "--first-seed {} plus --seeds {n} overflows",
                    args.first_seed
                ));
            }
        },
        (None, None) => vec![1],
    };
    Ok(scenarios
        .iter()
        .flat_map(|s| seeds.iter().map(move |seed| (*s, *seed)))
        .collect())
}
