//! Governance documents reach the hubs: a node passes on what its operator hands it, an
//! operator can hand them to a hub directly (`meridian hub govern`), and a hub without a policy
//! (or a node whose region the hub directory does not list) says so in `/ready`.

use std::time::Duration;

use meridian_tests::*;

fn warnings(daemon: &Daemon) -> String {
    daemon.get("/ready").json()["warnings"].to_string()
}

#[test]
fn governance_documents_reach_the_hubs_and_mistakes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    one_key_governance(dir);
    let root = dir.join("root.cbor").display().to_string();
    let governed = [("MERIDIAN_GOVERNANCE_ROOT", root.as_str())];
    run_ok(
        dir,
        &["hub", "init", "--data", "hub-a", "--region", "local"],
    );
    run_ok(
        dir,
        &["hub", "init", "--data", "hub-b", "--region", "local"],
    );
    run_ok(dir, &["node", "init", "--data", "n"]);
    let node_did = did(dir, "n/node.key");
    let hub_b_did = did(dir, "hub-b/hub.key");
    let hub_a = Daemon::hub(dir, "hub-a", &governed);
    let hub_b = Daemon::hub(dir, "hub-b", &governed);
    assert!(
        warnings(&hub_a).contains("no policy is in force"),
        "{}",
        warnings(&hub_a)
    );
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "version = 1\nexpires_in = \"30d\"\nallow_node_keys = [\"{node_did}\"]\n[[hubs]]\nregion = \"local\"\naddress = \"127.0.0.1:1\"\nhttp = \"{}\"\nkey = \"{hub_b_did}\"\n",
            hub_b.url()
        ),
    )
    .unwrap();
    run_ok(
        dir,
        &[
            "policy",
            "sign",
            "policy.toml",
            "--key",
            "policy.key",
            "--out",
            "policy.cbor",
        ],
    );

    // An operator hands the policy to hub a directly.
    let said = meridian_json(dir, &["hub", "govern", "--data", "hub-a", "policy.cbor"]);
    assert_eq!(said["documents"][0]["outcome"], "new", "{said}");
    assert_eq!(warnings(&hub_a), "[]");
    std::fs::write(dir.join("junk.cbor"), b"\xa0").unwrap();
    let output = meridian(dir, &["hub", "govern", "--data", "hub-a", "junk.cbor"]);
    assert_eq!(output.status.code(), Some(1));

    // A node passes on what its operator posts: hub b (its region's hub by the directory
    // the policy itself carries, and by mesh.hub here) gets the policy without being told.
    let admin = admin_token(dir, "n");
    let hub_b_url = hub_b.url();
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_GOVERNANCE_ROOT", root.as_str()),
            ("MERIDIAN_MESH_HUB", hub_b_url.as_str()),
        ],
    );
    let posted = post_as_admin(
        &node,
        &admin,
        "/api/v1/governance/policy",
        "application/vnd.ipld.dag-cbor",
        &std::fs::read(dir.join("policy.cbor")).unwrap(),
    );
    assert_eq!(posted.status, 200, "{:?}", posted.json());
    hub_b.wait_for("the policy at hub b", Duration::from_secs(15), || {
        (warnings(&hub_b) == "[]").then_some(())
    });
    assert_eq!(warnings(&node), "[]");

    // A node whose region the directory does not list says so.
    run_ok(dir, &["node", "init", "--data", "typo"]);
    let typo = Daemon::node(
        dir,
        "typo",
        &[
            ("MERIDIAN_GOVERNANCE_ROOT", root.as_str()),
            ("MERIDIAN_NODE_REGION", "eu-wset"),
            ("MERIDIAN_MESH_ENABLED", "false"),
        ],
    );
    let admin = admin_token(dir, "typo");
    let posted = post_as_admin(
        &typo,
        &admin,
        "/api/v1/governance/policy",
        "application/vnd.ipld.dag-cbor",
        &std::fs::read(dir.join("policy.cbor")).unwrap(),
    );
    assert_eq!(posted.status, 200);
    let said = warnings(&typo);
    assert!(
        said.contains("`eu-wset` has no entry in the policy's hub directory"),
        "{said}"
    );
}
