//! `meridian demo`, the README's main job, run as a user runs it.

use crate::{expect, json};

#[test]
fn the_demo_federation_converges_calls_across_regions_and_refuses_a_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let report = json(dir, &["demo", "--data", "data", "--agents", "20"]);
    assert_eq!(report["ok"], true, "{report:#}");
    // 3 organisations x 20 sample agents, and the echo agent.
    assert_eq!(report["agents"], 61, "{report:#}");
    let regions = report["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 3);
    for region in regions {
        assert_eq!(region["nodes"].as_array().unwrap().len(), 2, "{region}");
        assert!(
            region["hub"]["did"]
                .as_str()
                .unwrap()
                .starts_with("did:key:")
        );
    }
    // Every call went node -> hub -> trunk -> hub -> agent (checked from the metrics).
    assert!(
        report["relayed_calls"].as_f64().unwrap() >= 21.0,
        "{report:#}"
    );
    let figures = &report["figures"];
    assert!(figures["converge_ms"].as_f64().unwrap() > 0.0);
    assert!(figures["change_cross_region_bytes"].as_f64().unwrap() > 0.0);
    // Each organisation proved its domain over HTTPS, so a node answers as an ARD registry.
    let ard = &report["ard_example"];
    assert_eq!(
        ard["identifier"], "urn:air:acme.example:acme:echo",
        "{report:#}"
    );
    assert!(ard["url"].as_str().unwrap().ends_with("/ard/v1"));
    let refusal = report["forged_manifest_refusal"].as_str().unwrap();
    assert!(refusal.starts_with("422"), "{refusal}");
    // The demo leaves its governance documents and data directories for inspection.
    let demo = dir.join("data/demo");
    assert!(demo.join("governance/root.1.cbor").exists());
    assert!(demo.join("node-us-east-2/node.key").exists());
    // Every node's and hub's URLs, written as soon as the federation was up.
    let urls: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("urls.json")).unwrap()).unwrap();
    let nodes = urls["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{urls:#}");
    for node in nodes {
        let http = node["http"].as_str().unwrap();
        assert!(http.starts_with("http://127.0.0.1:"), "{node}");
        assert_eq!(node["ard"], format!("{http}/ard/v1"));
        assert_eq!(node["console"], format!("{http}/console/"));
        assert!(node["name"].is_string() && node["region"].is_string());
    }
    let hubs = urls["hubs"].as_array().unwrap();
    assert_eq!(hubs.len(), 3, "{urls:#}");
    for hub in hubs {
        let http = hub["http"].as_str().unwrap();
        assert_eq!(hub["console"], format!("{http}/console/"));
    }
    // What an admin needs to try the console's approval flow: each node's admin token and
    // the attest admin's key, readable by the owner only.
    let attest = demo.join("governance/attest.key");
    assert!(attest.exists());
    assert!(demo.join("tokens/node-eu-west-1.admin").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&attest).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the attest key is private");
    }
    expect(
        dir,
        &["gov", "verify", "data/demo/governance/root.1.cbor"],
        0,
    );
}

#[test]
fn demo_options_are_checked_and_the_snapshot_round_trip_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let stderr = expect(dir, &["demo", "--data", "data", "--agents", "0"], 2);
    assert!(stderr.contains("--agents"), "{stderr}");
    let stderr = expect(dir, &["demo", "--agents", "many"], 2);
    assert!(stderr.contains("--agents"), "{stderr}");
    let report = json(dir, &["demo", "--data", "data", "--snapshot"]);
    assert_eq!(report["agents"], 5000, "{report:#}");
}
