//! The acceptance rule, one case per reason.

use meridian_governance::accept::{GovernanceView, Rejection, accept};
use meridian_governance::attestation::{
    Attestation, AttestationSet, KIND_KEY_REVOKED, Registration, Subject,
};
use meridian_governance::policy::{PolicyBody, PolicyBundle};
use meridian_registry::cbor::Value;
use meridian_registry::manifest::{Manifest, ManifestBody};

use crate::*;

const CARD: &str = r#"{"name":"Helper","supportedInterfaces":[{"url":"https://acme.example/a2a","protocolBinding":"JSONRPC"}]}"#;

struct World {
    admins: Admins,
    root: meridian_governance::root::TrustedRoot,
    set: AttestationSet,
    org_key: Keypair,
    node: Keypair,
}

fn world() -> World {
    let admins = admins(0);
    let root = trusted(&admins);
    let org_key = key(50);
    let mut set = AttestationSet::new();
    let registration = Registration::create("acme", "acme.example", "ops", &[&org_key]).unwrap();
    let mut verified = registration.approve(NOW - 100, NOW + 30 * DAY).unwrap();
    verified.sign(&admins.attest[0]);
    verified.sign(&admins.attest[1]);
    set.add(verified, &root, NOW).unwrap();
    World {
        admins,
        root,
        set,
        org_key,
        node: key(70),
    }
}

fn manifest(org: &str, signer: &Keypair, updated_at: i64) -> Manifest {
    ManifestBody::from_card(CARD, org, "eu-west", updated_at)
        .unwrap()
        .sign(signer)
}

fn check(
    world: &World,
    policy: Option<&PolicyBundle>,
    manifest: &Manifest,
) -> Result<(), Vec<Rejection>> {
    let view = GovernanceView {
        attestations: &world.set,
        policy,
    };
    accept(view, manifest, &world.node.public(), NOW)
}

fn policy(world: &World, edit: impl FnOnce(&mut PolicyBody)) -> PolicyBundle {
    let mut body = PolicyBody {
        version: 1,
        issued_at: NOW - 10,
        expires_at: NOW + DAY,
        ..PolicyBody::default()
    };
    edit(&mut body);
    let mut bundle = PolicyBundle::new(body).unwrap();
    bundle.sign(&world.admins.policy[0]);
    bundle
}

#[test]
fn verified_org_with_bound_key_is_accepted() {
    let world = world();
    let good = manifest("acme", &world.org_key, NOW);
    check(&world, None, &good).unwrap();
    check(&world, Some(&policy(&world, |_| {})), &good).unwrap();
}

#[test]
fn unverified_org_and_unbound_key_are_rejected() {
    let world = world();
    let stranger = manifest("globex", &key(60), NOW);
    assert_eq!(
        check(&world, None, &stranger),
        Err(vec![Rejection::OrgNotVerified {
            org: "globex".into()
        }])
    );
    let wrong_key = manifest("acme", &key(61), NOW);
    let reasons = check(&world, None, &wrong_key).unwrap_err();
    assert!(
        matches!(reasons.as_slice(), [Rejection::KeyNotBound { .. }]),
        "{reasons:?}"
    );
}

#[test]
fn a_revoked_org_key_signs_nothing_whatever_time_it_claims() {
    let mut world = world();
    let claims = [
        ("org".to_owned(), Value::Text("acme".into())),
        (
            "revoked_at".to_owned(),
            Value::Integer(i128::from(NOW - 50)),
        ),
    ]
    .into();
    let mut revoked = Attestation::new(
        Subject::Key(world.org_key.public()),
        KIND_KEY_REVOKED,
        claims,
        NOW,
        NOW + DAY,
    )
    .unwrap();
    revoked.sign(&world.admins.attest[0]);
    revoked.sign(&world.admins.attest[1]);
    world.set.add(revoked, &world.root, NOW).unwrap();
    // A thief holding the key backdates `updated_at`: before or after the revocation, both
    // are refused.
    for claimed in [NOW - 60, NOW - 40] {
        let reasons = check(&world, None, &manifest("acme", &world.org_key, claimed)).unwrap_err();
        assert!(
            matches!(reasons.as_slice(), [Rejection::KeyRevoked { revoked_at, .. }] if *revoked_at == NOW - 50),
            "{reasons:?}"
        );
    }
}

#[test]
fn revoked_attestation_rejects_the_org() {
    let mut world = world();
    let id = *world.set.all().next().unwrap().0;
    let mut revocation = Attestation::revocation(id, "compromised", NOW, NOW + DAY).unwrap();
    revocation.sign(&world.admins.attest[0]);
    revocation.sign(&world.admins.attest[1]);
    world.set.add(revocation, &world.root, NOW).unwrap();
    let reasons = check(&world, None, &manifest("acme", &world.org_key, NOW)).unwrap_err();
    assert_eq!(reasons, vec![Rejection::OrgRevoked { org: "acme".into() }]);
}

#[test]
fn policy_denials_each_reject_and_all_reasons_are_reported() {
    let world = world();
    let good = manifest("acme", &world.org_key, NOW);
    let denied_org = policy(&world, |b| b.deny_orgs = vec!["acme".into()]);
    assert_eq!(
        check(&world, Some(&denied_org), &good),
        Err(vec![Rejection::OrgDenied { org: "acme".into() }])
    );
    let allow_other = policy(&world, |b| b.allow_orgs = vec!["globex".into()]);
    assert!(check(&world, Some(&allow_other), &good).is_err());
    let denied_agent = policy(&world, |b| b.deny_agents = vec!["acme/helper".into()]);
    assert_eq!(
        check(&world, Some(&denied_agent), &good),
        Err(vec![Rejection::AgentDenied {
            agent: "acme/helper".into()
        }])
    );
    let denied_node = policy(&world, |b| b.deny_node_keys = vec![world.node.did()]);
    assert!(matches!(
        check(&world, Some(&denied_node), &good)
            .unwrap_err()
            .as_slice(),
        [Rejection::NodeDenied { .. }]
    ));
    // Several reasons at once, all reported.
    let everything = policy(&world, |b| {
        b.deny_orgs = vec!["acme".into()];
        b.deny_agents = vec!["acme/helper".into()];
        b.deny_node_keys = vec![world.node.did()];
    });
    assert_eq!(
        check(&world, Some(&everything), &good).unwrap_err().len(),
        3
    );
}

#[test]
fn expired_policy_and_expired_verification_reject() {
    let world = world();
    let good = manifest("acme", &world.org_key, NOW);
    let stale = policy(&world, |b| {
        b.issued_at = NOW - 2 * DAY;
        b.expires_at = NOW - DAY;
    });
    assert!(matches!(
        check(&world, Some(&stale), &good).unwrap_err().as_slice(),
        [Rejection::PolicyExpired { .. }]
    ));
    let view = GovernanceView {
        attestations: &world.set,
        policy: None,
    };
    let later = accept(view, &good, &world.node.public(), NOW + 31 * DAY).unwrap_err();
    assert_eq!(
        later,
        vec![Rejection::OrgVerificationExpired { org: "acme".into() }]
    );
}
