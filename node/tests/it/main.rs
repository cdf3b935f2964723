//! End-to-end tests of the `meridian` binary: the CLI contract, exit codes, and crash safety.
#![allow(clippy::unwrap_used, missing_docs)]

mod a2a;
mod cli_snapshot;
mod crash;
mod daemon;
mod demo;
mod federation;
mod governance;
mod hubs;
mod misbehaving;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the real `meridian` binary in `dir`.
pub fn meridian(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Runs and expects `code`; returns stdout. Never a panic message on stderr.
pub fn expect(dir: &Path, args: &[&str], code: i32) -> String {
    let output = meridian(dir, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "meridian {args:?} panicked: {stderr}"
    );
    assert_eq!(
        output.status.code(),
        Some(code),
        "meridian {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    if code != 0 {
        return stderr;
    }
    stdout
}

pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.push("--json");
    serde_json::from_str(&expect(dir, &full, 0)).unwrap()
}

pub fn card(name: &str, skill: &str) -> String {
    format!(
        r#"{{"name":"{name}","description":"agent {name}","supportedInterfaces":[{{"url":"https://agents.example/{name}","protocolBinding":"JSONRPC"}}],"skills":[{{"id":"{skill}","name":"{skill}","tags":["{skill}"]}}]}}"#
    )
}

/// A temp dir with node and org keys and a `cards/` directory of `n` cards.
pub fn workspace(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    expect(&path, &["keys", "generate", "--out", "node.key"], 0);
    expect(&path, &["keys", "generate", "--out", "org.key"], 0);
    std::fs::create_dir(path.join("cards")).unwrap();
    for i in 0..n {
        std::fs::write(
            path.join(format!("cards/agent-{i:05}.json")),
            card(&format!("Agent {i}"), "search"),
        )
        .unwrap();
    }
    (dir, path)
}

pub fn build(dir: &Path, out: &str, prev: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "snapshot",
        "build",
        "--key",
        "node.key",
        "--org-key",
        "org.key",
        "--org",
        "acme",
        "--region",
        "eu-west",
        "--cards",
        "cards",
        "--out",
        out,
    ];
    if let Some(prev) = prev {
        args.extend(["--prev", prev]);
    }
    json(dir, &args)
}
