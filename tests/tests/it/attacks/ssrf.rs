//! Attack 5: a node advertises a gateway URL that points at a loopback service (with a query
//! that would swallow the path the hub appends), pushes its head to the hub, and asks the hub
//! for a block, hoping the hub calls that URL. The hub must call nothing: a tripwire listener
//! on loopback records every connection.

use std::time::Duration;

use meridian_tests::*;

/// Runs the attack with the node advertising `public_url` (`{TRIP}` is replaced by the
/// tripwire's address) and checks the tripwire saw nothing.
fn hub_calls_nothing_for(public_url_template: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let tripwire = Tripwire::start();
    let hub = Daemon::hub(dir, "hub", &[("MERIDIAN_RELAY_ALLOW_PRIVATE", "false")]);
    let public_url = public_url_template.replace("{TRIP}", &tripwire.address.to_string());
    let node = Daemon::node(
        dir,
        "node",
        &[
            ("MERIDIAN_MESH_HUB", hub.url().as_str()),
            ("MERIDIAN_HTTP_PUBLIC_URL", public_url.as_str()),
        ],
    );
    let manifest = publish_sample(dir, &node, 7);
    hub.wait_for(
        "the node's head at the hub",
        Duration::from_secs(30),
        || {
            let heads = hub.get("/v1/heads").json();
            (!heads["commits"].as_array()?.is_empty()).then_some(())
        },
    );
    // Ask the hub for a block it does not hold: it may only fetch it from a permitted source.
    let cid = meridian_registry::ids::dag_cbor_cid(&manifest);
    let answer = hub.get(&format!("/v1/blocks/{cid}"));
    assert_ne!(
        answer.status, 200,
        "the hub fetched the block from {public_url}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tripwire.hits(),
        0,
        "the hub connected to {public_url}, which the node named"
    );
    drop(node);
}

#[test]
fn a_gateway_url_with_a_query_is_never_called() {
    hub_calls_nothing_for("http://{TRIP}/internal/secret?x=");
}

#[test]
fn a_gateway_url_on_loopback_is_refused_by_the_guard() {
    hub_calls_nothing_for("http://{TRIP}");
}
