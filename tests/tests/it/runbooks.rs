//! The runbooks, run as written: every `sh` block of a runbook, in order, in one bash shell in
//! an empty directory, with the built `meridian` first on the PATH. A runbook that does not
//! work fails here, so the documents cannot drift from the code.

use std::path::Path;
use std::process::Command;

use meridian_tests::meridian_bin;

/// How long a whole runbook may take.
const RUNBOOK_SECS: &str = "240";

/// The `sh` blocks of a markdown file, in order.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn run_runbook(name: &str, expect_in_output: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/runbooks")
        .join(name);
    let markdown = std::fs::read_to_string(&path).unwrap();
    let blocks = shell_blocks(&markdown);
    assert!(!blocks.is_empty(), "{name} has no sh blocks");
    let dir = tempfile::tempdir().unwrap();
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    std::fs::write(dir.path().join("runbook.sh"), &script).unwrap();
    let bin_dir = meridian_bin().parent().unwrap().to_owned();
    let path_var = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("timeout")
        .args([RUNBOOK_SECS, "bash", "runbook.sh"])
        .current_dir(dir.path())
        .env("PATH", path_var)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "--- {}\n{}\n",
                p.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    assert!(
        output.status.success(),
        "{name} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs:\n{logs}",
        output.status
    );
    for expected in expect_in_output {
        assert!(
            stdout.contains(expected),
            "{name}: `{expected}` not in its output:\n{stdout}"
        );
    }
}

#[test]
fn the_first_federation_runbook_runs_as_written() {
    run_runbook(
        "first-federation.md",
        &[
            r#""result": {"echo": {"message": "hello"}}"#,
            "http://127.0.0.1:27710/a2a/acme/echo",
        ],
    );
}

#[test]
fn shell_blocks_are_found_in_order_and_other_fences_are_not() {
    let markdown = "text\n```sh\necho one\n```\n```text\nnot run\n```\n```sh\necho two\n```\n";
    assert_eq!(shell_blocks(markdown), ["echo one\n", "echo two\n"]);
}
