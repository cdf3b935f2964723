//! Policy bundles: threshold, expiry, rollback, conflicts and validation.

use meridian_governance::policy::{
    HubEntry, PolicyBody, PolicyBundle, PolicyError, PolicyState, RateTier,
};

use crate::*;

pub fn policy(admins: &Admins, version: u64, deny_orgs: &[&str]) -> PolicyBundle {
    let body = PolicyBody {
        version,
        issued_at: NOW - 10,
        expires_at: NOW + 7 * DAY,
        deny_orgs: deny_orgs.iter().map(|s| s.to_string()).collect(),
        rate_limits: vec![RateTier {
            scope: "org:acme".into(),
            requests_per_second: 50,
            burst: 100,
        }],
        hubs: vec![HubEntry {
            region: "eu-west".into(),
            address: "127.0.0.1:7800".into(),
            key: key(90).public(),
            http: None,
        }],
        ..PolicyBody::default()
    };
    let mut bundle = PolicyBundle::new(body).unwrap();
    bundle.sign(&admins.policy[0]);
    bundle
}

#[test]
fn newer_policy_replaces_older_is_refused() {
    let admins = admins(0);
    let root = trusted(&admins);
    let mut state = PolicyState::new();
    assert!(state.offer(policy(&admins, 2, &[]), &root, NOW).unwrap());
    assert!(!state.offer(policy(&admins, 2, &[]), &root, NOW).unwrap());
    assert!(matches!(
        state.offer(policy(&admins, 1, &[]), &root, NOW),
        Err(PolicyError::Rollback {
            current: 2,
            offered: 1
        })
    ));
    assert!(matches!(
        state.offer(policy(&admins, 2, &["evil"]), &root, NOW),
        Err(PolicyError::Conflict { version: 2 })
    ));
    assert!(
        state
            .offer(policy(&admins, 3, &["evil"]), &root, NOW)
            .unwrap()
    );
    let current = state.current().unwrap();
    assert_eq!(current.body.deny_orgs, vec!["evil".to_owned()]);
    assert_eq!(current.org_tier("acme").unwrap().burst, 100);
    assert_eq!(current.hub("eu-west").unwrap().address, "127.0.0.1:7800");
    let decoded = PolicyBundle::decode(&current.to_block()).unwrap();
    assert_eq!(&decoded, current);
}

#[test]
fn unsigned_wrongly_signed_and_expired_policies_are_refused() {
    let admins = admins(0);
    let root = trusted(&admins);
    let mut unsigned = policy(&admins, 1, &[]);
    unsigned.document.signatures.clear();
    assert!(matches!(
        unsigned.verify(&root, NOW),
        Err(PolicyError::Document { .. })
    ));
    let mut attest_signed = policy(&admins, 1, &[]);
    attest_signed.document.signatures.clear();
    attest_signed.sign(&admins.attest[0]);
    assert!(attest_signed.verify(&root, NOW).is_err());
    assert!(matches!(
        policy(&admins, 1, &[]).verify(&root, NOW + 8 * DAY),
        Err(PolicyError::Expired { .. })
    ));
}

#[test]
fn invalid_policy_lists_every_problem() {
    let body = PolicyBody {
        version: 0,
        issued_at: NOW,
        expires_at: NOW - 1,
        deny_node_keys: vec!["not-a-key".into()],
        rate_limits: vec![RateTier {
            scope: "team:x".into(),
            requests_per_second: 0,
            burst: 1,
        }],
        ..PolicyBody::default()
    };
    let err = PolicyBundle::new(body).unwrap_err().to_string();
    for needle in ["version", "expires_at", "not-a-key", "team:x", "0 requests"] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[test]
fn a_hub_directory_entry_may_name_its_http_api_apart_from_its_trunk() {
    let admins = admins(0);
    let root = trusted(&admins);
    // Without `http` the entry encodes as before (so older bundles keep their ids) and nodes
    // use the address.
    let plain = policy(&admins, 1, &[]);
    let entry = plain.hub("eu-west").unwrap();
    assert_eq!(entry.http_url(), "http://127.0.0.1:7800");
    assert!(!plain.to_block().windows(4).any(|w| w == b"http"));
    // With it, nodes use it; it survives signing, encoding and verification.
    let mut body = plain.body.clone();
    body.version = 2;
    body.hubs[0].address = "127.0.0.1:7801".into();
    body.hubs[0].http = Some("https://hub.eu-west.example/".into());
    let mut bundle = PolicyBundle::new(body.clone()).unwrap();
    bundle.sign(&admins.policy[0]);
    let decoded = PolicyBundle::decode(&bundle.to_block()).unwrap();
    decoded.verify(&root, NOW).unwrap();
    let entry = decoded.hub("eu-west").unwrap();
    assert_eq!(
        (entry.address.as_str(), entry.http_url()),
        ("127.0.0.1:7801", "https://hub.eu-west.example".to_owned())
    );
    // Anything but an http(s) URL is refused with the region named.
    body.hubs[0].http = Some("ftp://hub".into());
    let err = PolicyBundle::new(body).unwrap_err().to_string();
    assert!(
        err.contains("eu-west") && err.contains("ftp://hub"),
        "{err}"
    );
}

#[test]
fn admitted_node_keys_are_optional_in_the_encoding_and_checked() {
    let admins = admins(0);
    let root = trusted(&admins);
    // Absent when empty: bundles signed before the field existed keep their bytes and ids.
    let plain = policy(&admins, 1, &[]);
    assert!(
        !plain
            .to_block()
            .windows(b"allow_node_keys".len())
            .any(|w| w == b"allow_node_keys")
    );
    let mut body = plain.body.clone();
    body.version = 2;
    body.allow_node_keys = vec![key(70).did()];
    let mut bundle = PolicyBundle::new(body.clone()).unwrap();
    bundle.sign(&admins.policy[0]);
    let decoded = PolicyBundle::decode(&bundle.to_block()).unwrap();
    decoded.verify(&root, NOW).unwrap();
    assert_eq!(decoded.body.allow_node_keys, vec![key(70).did()]);
    // A key that is not a did:key is named.
    body.allow_node_keys = vec!["node-7".into()];
    let err = PolicyBundle::new(body).unwrap_err().to_string();
    assert!(
        err.contains("allow_node_keys") && err.contains("node-7"),
        "{err}"
    );
}

#[test]
fn the_federations_registries_are_optional_in_the_encoding_and_checked() {
    let admins = admins(0);
    let root = trusted(&admins);
    // Absent when empty: bundles signed before the field existed keep their bytes and ids.
    let plain = policy(&admins, 1, &[]);
    assert!(
        !plain
            .to_block()
            .windows(b"registries".len())
            .any(|w| w == b"registries")
    );
    let mut body = plain.body.clone();
    body.version = 2;
    body.registries = vec!["https://node-b.example/ard/v1".into()];
    let mut bundle = PolicyBundle::new(body.clone()).unwrap();
    bundle.sign(&admins.policy[0]);
    let decoded = PolicyBundle::decode(&bundle.to_block()).unwrap();
    decoded.verify(&root, NOW).unwrap();
    assert_eq!(decoded.body.registries, body.registries);
    // A registry changed in the signed bytes breaks the signature.
    let mut block = bundle.to_block();
    let at = block
        .windows(b"node-b".len())
        .position(|w| w == b"node-b")
        .unwrap();
    block[at..at + 6].copy_from_slice(b"evil-x");
    let tampered = PolicyBundle::decode(&block);
    assert!(tampered.is_err() || tampered.unwrap().verify(&root, NOW).is_err());
    // Only http(s) URLs.
    body.registries = vec!["ftp://node-c.example".into()];
    let err = PolicyBundle::new(body).unwrap_err().to_string();
    assert!(
        err.contains("registries") && err.contains("ftp://"),
        "{err}"
    );
}
