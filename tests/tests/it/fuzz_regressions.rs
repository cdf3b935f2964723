//! Every input committed under `fuzz/regressions/TARGET/` (a minimised corpus, and every crash
//! a fuzzing run found) goes through its target again, so `cargo test` keeps each fixed
//! without nightly or cargo-fuzz.

use std::path::PathBuf;

use meridian_tests::fuzz::TARGETS;

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("regressions")
}

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let root = regressions();
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("no regression corpus for {target} at {}", dir.display());
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
            replayed += 1;
        }
    }
    println!("replayed {replayed} fuzz inputs");
}

#[test]
fn every_fuzz_target_has_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml"),
    )
    .unwrap();
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no target {target}"
        );
    }
}
