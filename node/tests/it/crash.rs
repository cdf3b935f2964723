//! Killing `meridian snapshot import` at any moment leaves the previous snapshot current,
//! readable, and the store able to take the import again.

use std::process::Command;
use std::time::Duration;

use crate::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn killed_import_leaves_previous_snapshot_intact() {
    let (_guard, dir) = workspace(50);
    let first = build(&dir, "s1.car", None);
    // A large successor, so the import takes long enough to be interrupted.
    for i in 50..6_000 {
        std::fs::write(
            dir.join(format!("cards/agent-{i:05}.json")),
            card(&format!("Agent {i}"), "search"),
        )
        .unwrap();
    }
    let second = build(&dir, "s2.car", Some("s1.car"));
    json(&dir, &["snapshot", "import", "s1.car", "--data", "base"]);

    let mut saw_old = 0;
    let mut saw_new = 0;
    for (attempt, delay_ms) in [0u64, 20, 60, 120, 200, 300, 450, 700].iter().enumerate() {
        let data = format!("data-{attempt}");
        copy_dir(&dir.join("base"), &dir.join(&data));
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["snapshot", "import", "s2.car", "--data", &data])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let _ = child.kill(); // SIGKILL: no destructors, no flush
        let _ = child.wait();

        // The store opens, and its head is either the old or the new snapshot, whole.
        let out = format!("out-{attempt}.car");
        let exported = json(
            &dir,
            &["snapshot", "export", "--data", &data, "--out", &out],
        );
        let root = exported["root"].as_str().unwrap();
        if root == first["root"].as_str().unwrap() {
            saw_old += 1;
            assert_eq!(
                std::fs::read(dir.join(&out)).unwrap(),
                std::fs::read(dir.join("s1.car")).unwrap()
            );
        } else {
            assert_eq!(root, second["root"].as_str().unwrap());
            saw_new += 1;
            assert_eq!(
                std::fs::read(dir.join(&out)).unwrap(),
                std::fs::read(dir.join("s2.car")).unwrap()
            );
        }
        json(&dir, &["snapshot", "verify", &out]);
        // And the import can be done (again) afterwards.
        let output = meridian(&dir, &["snapshot", "import", "s2.car", "--data", &data]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "re-import after a kill failed: {stderr}"
        );
        let head = json(
            &dir,
            &["snapshot", "export", "--data", &data, "--out", &out],
        );
        assert_eq!(
            head["root"].as_str().unwrap(),
            second["root"].as_str().unwrap()
        );
    }
    eprintln!("kills before the commit point: {saw_old}, after: {saw_new}");
    // The early kills must have hit before the commit point.
    assert!(
        saw_old >= 1,
        "no kill landed before the import finished ({saw_new} finished)"
    );
}
