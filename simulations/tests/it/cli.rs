//! The `meridian-simulations` command line: a long run recorded with `--results` stops and
//! goes on where it stopped, and a results file it cannot read stops it without harm.

use std::path::Path;
use std::process::{Command, Output};

fn simulations(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian-simulations"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The run lines (not the per-invocation time records) of a results file.
fn run_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|value| value.get("scenario").is_some())
        .collect()
}

#[test]
fn a_run_recorded_in_a_results_file_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("runs.jsonl");
    let results_arg = results.to_str().unwrap();
    let base = ["--scenario", "rate-limit", "--jobs", "2", "--results"];

    let first = simulations(&[&base[..], &[results_arg, "--seeds", "2"]].concat());
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("0 of the 2 runs already recorded, 2 to run"));
    // Runs are recorded as they finish, so in any order.
    let mut seeds: Vec<u64> = run_lines(&results)
        .iter()
        .map(|run| run["seed"].as_u64().unwrap())
        .collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [1, 2]);

    // Asked for three seeds, it runs only the third, and reports on all three.
    let report_dir = dir.path().join("report");
    let second = simulations(
        &[
            &base[..],
            &[
                results_arg,
                "--seeds",
                "3",
                "--report",
                report_dir.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let stderr = text(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 of the 3 runs already recorded, 1 to run"),
        "{stderr}"
    );
    assert!(stderr.contains("3 runs in"), "{stderr}");
    assert_eq!(text(&second.stdout).lines().count(), 1);
    assert!(text(&second.stdout).starts_with("rate-limit seed=3 ok"));
    assert_eq!(run_lines(&results).len(), 3);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 3);
    assert!(report["wall_secs"].as_f64().unwrap() > 0.0);

    // A failure recorded earlier is not forgotten by a later invocation.
    let recorded: Vec<String> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            if value["seed"] == 1 {
                value["passed"] = false.into();
                value["failures"] = serde_json::json!(["node 3 lags"]);
            }
            format!("{value}\n")
        })
        .collect();
    std::fs::write(&results, recorded.concat()).unwrap();
    let third = simulations(&[&base[..], &[results_arg, "--seeds", "3"]].concat());
    let stderr = text(&third.stderr);
    assert_eq!(third.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("3 of the 3 runs already recorded, 0 to run"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--scenario rate-limit --seed 1"),
        "{stderr}"
    );
}

#[test]
fn a_results_file_it_cannot_read_stops_the_run_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("runs.jsonl");
    let garbage = "{\"wall_secs\": 1.5, \"runs\": 1}\nthis is not a run\n";
    std::fs::write(&results, garbage).unwrap();
    let output = simulations(&[
        "--scenario",
        "rate-limit",
        "--seeds",
        "1",
        "--results",
        results.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("runs.jsonl, line 2: not JSON"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), garbage);
}
