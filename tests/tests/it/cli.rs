//! The command line as an operator meets it: flags that override the config, and mistakes
//! named where they are made.

use meridian_tests::*;

#[test]
fn hub_run_takes_its_addresses_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Daemon::spawn(
        dir.path(),
        &[
            "hub",
            "run",
            "--data",
            "h",
            "--listen",
            "127.0.0.1:0",
            "--trunk-listen",
            "127.0.0.1:0",
        ],
        "h",
        &[],
    );
    assert_eq!(hub.get("/health").status, 200);
    let trunk = std::fs::read_to_string(dir.path().join("h").join("trunk.addr")).unwrap();
    assert!(trunk.trim().starts_with("127.0.0.1:"), "{trunk}");
    // A bad address is named with the flag that gave it.
    let output = meridian(
        dir.path(),
        &["hub", "run", "--data", "h2", "--listen", "nowhere"],
    );
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("--listen") && said.contains("hub.listen"),
        "{said}"
    );
}

#[test]
fn a_mistyped_environment_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(meridian_bin())
        .args(["node", "run", "--data", "n", "--http", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("MERIDIAN_A2A_ALLOW_PRIVAT", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("environment variable MERIDIAN_A2A_ALLOW_PRIVAT is not a setting"),
        "{said}"
    );
}

#[test]
fn output_to_a_reader_that_went_away_is_not_a_crash() {
    // `meridian node token create ... | head -n 1`, as the first-federation runbook does: the
    // reader may close before the second line is written. That is exit 0, not a panic.
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["node", "init", "--data", "n"]);
    for _ in 0..5 {
        let mut child = std::process::Command::new(meridian_bin())
            .args(["node", "token", "create", "--admin", "--data", "n"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
