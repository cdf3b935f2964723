//! Attestations: thresholds, co-signing, expiry, revocation, registration.

use meridian_governance::attestation::{
    Attestation, AttestationError, AttestationSet, KIND_KEY_REVOKED, OrgStatus, Registration,
    Subject,
};
use meridian_governance::document::DocumentError;
use meridian_registry::cbor::Value;

use crate::*;

fn verified_org(admins: &Admins, org: &str, org_key: &Keypair) -> Attestation {
    let registration =
        Registration::create(org, &format!("{org}.example"), "ops@example", &[org_key]).unwrap();
    let mut attestation = registration.approve(NOW - 10, NOW + 30 * DAY).unwrap();
    attestation.sign(&admins.attest[0]);
    attestation.sign(&admins.attest[1]);
    attestation
}

#[test]
fn registration_needs_proof_of_possession() {
    let org_key = key(50);
    let other = key(51);
    let registration = Registration::create(
        "acme",
        "acme.example",
        "ops@acme.example",
        &[&org_key, &other],
    )
    .unwrap();
    let decoded = Registration::decode_and_verify(&registration.to_block()).unwrap();
    assert_eq!(decoded.keys, vec![org_key.public(), other.public()]);
    // Drop one key's signature: the request no longer proves possession of that key.
    let mut partial = registration.clone();
    partial
        .document
        .signatures
        .retain(|s| s.key == org_key.public());
    let err = Registration::decode_and_verify(&partial.to_block()).unwrap_err();
    assert!(
        matches!(
            err,
            DocumentError::ThresholdNotMet {
                valid: 1,
                threshold: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(Registration::create("Not Valid!", "x", "y", &[&org_key]).is_err());
}

#[test]
fn attestation_needs_the_attest_threshold_and_cosigning_reaches_it() {
    let admins = admins(0);
    let root = trusted(&admins);
    let registration = Registration::create("acme", "acme.example", "ops", &[&key(50)]).unwrap();
    let mut attestation = registration.approve(NOW, NOW + DAY).unwrap();
    attestation.sign(&admins.attest[0]);
    let id_before = attestation.id();
    let err = attestation.verify(&root, NOW, 0).unwrap_err();
    assert!(matches!(
        err,
        AttestationError::Document {
            error: DocumentError::ThresholdNotMet { .. },
            ..
        }
    ));
    // A second admin co-signs the same document; its id does not change.
    let mut cosigned = Attestation::decode(&attestation.to_block()).unwrap();
    cosigned.sign(&admins.attest[1]);
    assert_eq!(cosigned.id(), id_before);
    cosigned.verify(&root, NOW, 0).unwrap();
    // Signatures by the root or policy keys do not count for the attest role.
    let mut wrong_role = registration.approve(NOW, NOW + DAY).unwrap();
    wrong_role.sign(&admins.root[0]);
    wrong_role.sign(&admins.policy[0]);
    assert!(wrong_role.verify(&root, NOW, 0).is_err());
}

#[test]
fn expired_and_future_attestations_are_refused() {
    let admins = admins(0);
    let root = trusted(&admins);
    let attestation = verified_org(&admins, "acme", &key(50));
    assert!(matches!(
        attestation.verify(&root, NOW + 31 * DAY, 0),
        Err(AttestationError::Expired { .. })
    ));
    let mut future = Registration::create("acme", "a", "b", &[&key(50)])
        .unwrap()
        .approve(NOW + DAY, NOW + 2 * DAY)
        .unwrap();
    future.sign(&admins.attest[0]);
    future.sign(&admins.attest[1]);
    assert!(matches!(
        future.verify(&root, NOW, 300),
        Err(AttestationError::NotYetValid { .. })
    ));
}

#[test]
fn revocation_withdraws_an_attestation() {
    let admins = admins(0);
    let root = trusted(&admins);
    let org_key = key(50);
    let mut set = AttestationSet::new();
    let verified = verified_org(&admins, "acme", &org_key);
    let id = set.add(verified, &root, NOW).unwrap();
    assert_eq!(
        set.org_status("acme", NOW),
        OrgStatus::Verified {
            keys: vec![org_key.public()]
        }
    );
    let mut revocation =
        Attestation::revocation(id, "domain lapsed", NOW, NOW + 365 * DAY).unwrap();
    revocation.sign(&admins.attest[0]);
    revocation.sign(&admins.attest[1]);
    set.add(revocation, &root, NOW).unwrap();
    assert!(set.is_revoked(&id));
    assert_eq!(set.org_status("acme", NOW), OrgStatus::Revoked);
    assert_eq!(set.org_status("other", NOW), OrgStatus::Unverified);
    assert_eq!(set.org_status("acme", NOW + 40 * DAY), OrgStatus::Revoked);
}

#[test]
fn key_revocation_records_its_time() {
    let admins = admins(0);
    let root = trusted(&admins);
    let org_key = key(50);
    let mut set = AttestationSet::new();
    let claims = [
        ("org".to_owned(), Value::Text("acme".into())),
        (
            "revoked_at".to_owned(),
            Value::Integer(i128::from(NOW - 100)),
        ),
    ]
    .into();
    let mut revoked = Attestation::new(
        Subject::Key(org_key.public()),
        KIND_KEY_REVOKED,
        claims,
        NOW,
        NOW + DAY,
    )
    .unwrap();
    revoked.sign(&admins.attest[0]);
    revoked.sign(&admins.attest[1]);
    set.add(revoked, &root, NOW).unwrap();
    assert_eq!(set.key_revoked_at(&org_key.public()), Some(NOW - 100));
    assert_eq!(set.key_revoked_at(&key(51).public()), None);
}

#[test]
fn mix_and_match_across_roots_is_refused() {
    // Attestations issued under another federation's root do not verify under ours.
    let ours = admins(0);
    let theirs = admins(150);
    let our_root = trusted(&ours);
    let foreign = verified_org(&theirs, "acme", &key(50));
    let mut set = AttestationSet::new();
    assert!(set.add(foreign, &our_root, NOW).is_err());
    assert_eq!(set.org_status("acme", NOW), OrgStatus::Unverified);
}

#[test]
fn malformed_attestations_are_refused() {
    let admins = admins(0);
    let good = verified_org(&admins, "acme", &key(50));
    let block = good.to_block();
    assert_eq!(Attestation::decode(&block).unwrap(), good);
    for cut in 0..block.len() {
        assert!(Attestation::decode(&block[..cut]).is_err());
    }
    // A policy document is not an attestation.
    let root_block = genesis(&admins).to_block();
    assert!(matches!(
        Attestation::decode(&root_block),
        Err(DocumentError::WrongType { .. })
    ));
    // org.verified without keys, and a revocation of a non-CID subject, are refused at build time.
    assert!(
        Attestation::new(
            Subject::Org("acme".into()),
            "org.verified",
            Default::default(),
            NOW,
            NOW + 1
        )
        .is_err()
    );
    assert!(
        Attestation::new(
            Subject::Org("acme".into()),
            "revocation",
            Default::default(),
            NOW,
            NOW + 1
        )
        .is_err()
    );
}

#[test]
fn organisations_rotate_keys_with_a_current_key() {
    use meridian_governance::attestation::{KeyRotation, RotationError};
    let admins = admins(0);
    let root = trusted(&admins);
    let old_key = key(50);
    let new_key = key(52);
    let mut set = AttestationSet::new();
    set.add(verified_org(&admins, "acme", &old_key), &root, NOW)
        .unwrap();
    let current = [old_key.public()];

    // Signed by a stranger: refused.
    let stranger = KeyRotation::create(
        "acme",
        &current,
        &[&key(53)],
        &[&new_key],
        &[old_key.public()],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        set.apply_rotation(&stranger, NOW),
        Err(RotationError::Document { .. })
    ));
    // Without the new key's own signature (no proof of possession): refused.
    let mut no_pop = KeyRotation::create(
        "acme",
        &current,
        &[&old_key],
        &[&new_key],
        &[old_key.public()],
        NOW,
    )
    .unwrap();
    no_pop
        .document
        .signatures
        .retain(|s| s.key == old_key.public());
    let no_pop = KeyRotation::decode(&no_pop.to_block()).unwrap();
    assert!(matches!(
        set.apply_rotation(&no_pop, NOW),
        Err(RotationError::Document { .. })
    ));
    // Removing the only key: refused.
    let empty =
        KeyRotation::create("acme", &current, &[&old_key], &[], &[old_key.public()], NOW).unwrap();
    assert!(matches!(
        set.apply_rotation(&empty, NOW),
        Err(RotationError::NoKeysLeft { .. })
    ));
    // Naming a key set that is not the current one: refused.
    let wrong_prev = KeyRotation::create(
        "acme",
        &[old_key.public(), key(54).public()],
        &[&old_key],
        &[&new_key],
        &[old_key.public()],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        set.apply_rotation(&wrong_prev, NOW),
        Err(RotationError::NotCurrent { .. })
    ));

    // A proper rotation: the new key is bound, the old one out of the set.
    let rotation = KeyRotation::create(
        "acme",
        &current,
        &[&old_key],
        &[&new_key],
        &[old_key.public()],
        NOW,
    )
    .unwrap();
    let rotation = KeyRotation::decode(&rotation.to_block()).unwrap();
    set.apply_rotation(&rotation, NOW).unwrap();
    let OrgStatus::Verified { keys } = set.org_status("acme", NOW) else {
        panic!("not verified")
    };
    assert_eq!(keys, vec![new_key.public()]);
    assert_eq!(set.key_revoked_at(&old_key.public()), Some(NOW));
    // Applied once: the same rotation again no longer names the current set.
    assert!(matches!(
        set.apply_rotation(&rotation, NOW),
        Err(RotationError::NotCurrent { .. })
    ));
    assert_eq!(set.rotations().len(), 1);
    // An unverified org cannot rotate.
    let other = KeyRotation::create(
        "globex",
        &[key(60).public()],
        &[&key(60)],
        &[&key(61)],
        &[],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        set.apply_rotation(&other, NOW),
        Err(RotationError::NotVerified { .. })
    ));
}

#[test]
fn a_stolen_key_does_not_outlive_the_rotation_that_removes_it() {
    use meridian_governance::accept::{GovernanceView, Rejection, accept};
    use meridian_governance::attestation::{KeyRotation, RotationError};
    use meridian_registry::manifest::ManifestBody;
    let admins = admins(0);
    let root = trusted(&admins);
    let (stolen, fresh, thiefs) = (key(50), key(52), key(66));
    let mut set = AttestationSet::new();
    set.add(verified_org(&admins, "acme", &stolen), &root, NOW)
        .unwrap();
    // The organisation rotates the stolen key out.
    let eviction = KeyRotation::create(
        "acme",
        &[stolen.public()],
        &[&stolen],
        &[&fresh],
        &[stolen.public()],
        NOW,
    )
    .unwrap();
    set.apply_rotation(&eviction, NOW).unwrap();
    // The thief rotates again with the removed key, naming the set it knew: refused, twice
    // over (not the current set, and not signed by a current key).
    let counter = KeyRotation::create(
        "acme",
        &[stolen.public()],
        &[&stolen],
        &[&thiefs],
        &[fresh.public()],
        NOW + 10,
    )
    .unwrap();
    assert!(matches!(
        set.apply_rotation(&counter, NOW + 10),
        Err(RotationError::NotCurrent { .. })
    ));
    // Naming the current set does not help: the stolen key is not in it.
    let forged = KeyRotation::create(
        "acme",
        &[fresh.public()],
        &[&stolen],
        &[&thiefs],
        &[fresh.public()],
        NOW + 10,
    )
    .unwrap();
    assert!(matches!(
        set.apply_rotation(&forged, NOW + 10),
        Err(RotationError::Document { .. })
    ));
    // The thief's manifest, backdated to before the rotation, is refused; the organisation's
    // new one is accepted.
    let card = r#"{"name":"Echo","supportedInterfaces":[{"url":"https://acme.example/a2a","protocolBinding":"JSONRPC"}]}"#;
    let sign = |key: &meridian_registry::keys::Keypair, at: i64| {
        ManifestBody::from_card(card, "acme", "eu-west", at)
            .unwrap()
            .sign(key)
    };
    let view = GovernanceView {
        attestations: &set,
        policy: None,
    };
    let node = key(70).public();
    let reasons = accept(view, &sign(&stolen, NOW - 1_000), &node, NOW + 20).unwrap_err();
    assert!(
        matches!(reasons.as_slice(), [Rejection::KeyRevoked { .. }]),
        "{reasons:?}"
    );
    accept(view, &sign(&fresh, NOW + 20), &node, NOW + 20).unwrap();
}

#[test]
fn a_key_chain_applies_in_one_order_whatever_order_its_files_come_in() {
    use meridian_governance::attestation::KeyRotation;
    let admins = admins(0);
    let root = trusted(&admins);
    let (first, second, third) = (key(50), key(51), key(52));
    let verified = verified_org(&admins, "acme", &first).to_block();
    let one = KeyRotation::create(
        "acme",
        &[first.public()],
        &[&first],
        &[&second],
        &[first.public()],
        NOW,
    )
    .unwrap()
    .to_block();
    let two = KeyRotation::create(
        "acme",
        &[second.public()],
        &[&second],
        &[&third],
        &[second.public()],
        NOW,
    )
    .unwrap()
    .to_block();
    let (set, skipped) = AttestationSet::from_documents(&[&verified, &two, &one], &root, NOW);
    assert!(skipped.is_empty(), "{skipped:?}");
    let OrgStatus::Verified { keys } = set.org_status("acme", NOW) else {
        panic!("not verified")
    };
    assert_eq!(keys, vec![third.public()]);
    // A link missing: the later rotation is reported, not applied.
    let (set, skipped) = AttestationSet::from_documents(&[&verified, &two], &root, NOW);
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].reason.contains("not its current one"),
        "{skipped:?}"
    );
    let OrgStatus::Verified { keys } = set.org_status("acme", NOW) else {
        panic!("not verified")
    };
    assert_eq!(keys, vec![first.public()]);
}

#[test]
fn an_older_attestation_set_cannot_undo_a_revocation() {
    // Rollback of the attestation set: a peer that replays the set from before the revocation
    // (the org.verified attestation alone) does not bring the organisation back.
    let admins = admins(0);
    let root = trusted(&admins);
    let org_key = key(50);
    let verified = verified_org(&admins, "acme", &org_key);
    let mut set = AttestationSet::new();
    let id = set.add(verified.clone(), &root, NOW).unwrap();
    let mut revocation = Attestation::revocation(id, "fraud", NOW, NOW + DAY).unwrap();
    revocation.sign(&admins.attest[0]);
    revocation.sign(&admins.attest[1]);
    set.add(revocation, &root, NOW).unwrap();
    let replayed = Attestation::decode(&verified.to_block()).unwrap();
    set.add(replayed, &root, NOW + 10).unwrap();
    assert_eq!(set.org_status("acme", NOW + 10), OrgStatus::Revoked);
}
