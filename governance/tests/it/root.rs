//! The trust root: rotation, and the TUF attacks against it.

use meridian_governance::document::DocumentError;
use meridian_governance::root::{
    ExpiryCheck, RootChainError, RootDocument, RootError, TrustedRoot,
};

use crate::*;

#[test]
fn bootstrap_needs_its_own_threshold() {
    let admins = admins(0);
    let mut once = RootDocument::new(root_body(1, &admins, NOW + DAY)).unwrap();
    once.sign(&admins.root[0]);
    let err = TrustedRoot::bootstrap(once, NOW, ExpiryCheck::Enforce).unwrap_err();
    assert!(
        matches!(
            err,
            RootError::Document {
                error: DocumentError::ThresholdNotMet {
                    valid: 1,
                    threshold: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    // Arbitrary document: no signatures at all.
    let unsigned = RootDocument::new(root_body(1, &admins, NOW + DAY)).unwrap();
    assert!(TrustedRoot::bootstrap(unsigned, NOW, ExpiryCheck::Enforce).is_err());
}

#[test]
fn rotation_needs_old_and_new_thresholds() {
    let old = admins(0);
    let new = admins(100);
    let mut trusted = trusted(&old);

    // Signed only by the new keys: refused (old threshold not met).
    let mut v2 = RootDocument::new(root_body(2, &new, NOW + DAY)).unwrap();
    v2.sign(&new.root[0]);
    v2.sign(&new.root[1]);
    let err = trusted.clone().update(v2.clone()).unwrap_err();
    assert!(err.to_string().contains("trusted version 1"), "{err}");

    // Signed only by the old keys: refused (new threshold not met).
    let mut v2_old_only = RootDocument::new(root_body(2, &new, NOW + DAY)).unwrap();
    v2_old_only.sign(&old.root[0]);
    v2_old_only.sign(&old.root[1]);
    let err = trusted.clone().update(v2_old_only).unwrap_err();
    assert!(err.to_string().contains("new version"), "{err}");

    // Both thresholds: accepted, and the new keys now govern.
    v2.sign(&old.root[1]);
    v2.sign(&old.root[2]);
    trusted.walk([v2], NOW, ExpiryCheck::Enforce).unwrap();
    assert_eq!(trusted.current().body.version, 2);
    assert_eq!(
        trusted
            .role(meridian_governance::root::RoleName::Attest)
            .keys[0],
        new.attest[0].public()
    );
}

#[test]
fn compromised_key_below_threshold_cannot_rotate() {
    let old = admins(0);
    let attacker = admins(200);
    let mut trusted = trusted(&old);
    // The attacker holds one old root key and makes a root with its own keys.
    let mut evil = RootDocument::new(root_body(2, &attacker, NOW + DAY)).unwrap();
    evil.sign(&old.root[2]);
    evil.sign(&attacker.root[0]);
    evil.sign(&attacker.root[1]);
    let err = trusted.update(evil).unwrap_err();
    assert!(
        matches!(
            err,
            RootError::Document {
                error: DocumentError::ThresholdNotMet { valid: 1, .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(trusted.current().body.version, 1);
    // A signature by an old key that does not verify does not count either.
    let mut forged = RootDocument::new(root_body(2, &attacker, NOW + DAY)).unwrap();
    forged.sign(&attacker.root[0]);
    forged.sign(&attacker.root[1]);
    forged.sign(&old.root[0]);
    forged.sign(&old.root[1]);
    for signature in &mut forged.document.signatures {
        if signature.key == old.root[1].public() {
            signature.sig[0] ^= 1;
        }
    }
    assert!(trusted.update(forged).is_err());
}

#[test]
fn rollback_and_skipped_versions_are_refused() {
    let admins = admins(0);
    let mut trusted = trusted(&admins);
    let signed = |version: u64| {
        let mut root = RootDocument::new(root_body(version, &admins, NOW + DAY)).unwrap();
        root.sign(&admins.root[0]);
        root.sign(&admins.root[1]);
        root
    };
    assert!(matches!(
        trusted.update(signed(3)),
        Err(RootError::SkippedVersion {
            trusted: 1,
            offered: 3
        })
    ));
    trusted.update(signed(2)).unwrap();
    assert!(matches!(
        trusted.update(signed(1)),
        Err(RootError::Rollback {
            trusted: 2,
            offered: 1
        })
    ));
    assert!(matches!(
        trusted.update(signed(2)),
        Err(RootError::Rollback { .. })
    ));
    // A chain with a hole stops at the hole and keeps the last good version.
    let mut fresh = crate::trusted(&admins);
    let err = fresh
        .walk([signed(2), signed(4)], NOW, ExpiryCheck::Enforce)
        .unwrap_err();
    assert!(matches!(
        err,
        RootError::SkippedVersion {
            trusted: 2,
            offered: 4
        }
    ));
    assert_eq!(fresh.current().body.version, 2);
}

#[test]
fn expired_root_is_refused_unless_recovery_is_explicit() {
    let admins = admins(0);
    let mut old = RootDocument::new(root_body(1, &admins, NOW - 10)).unwrap();
    old.sign(&admins.root[0]);
    old.sign(&admins.root[1]);
    assert!(matches!(
        TrustedRoot::bootstrap(old.clone(), NOW, ExpiryCheck::Enforce),
        Err(RootError::Expired { .. })
    ));
    let mut recovered =
        TrustedRoot::bootstrap(old, NOW, ExpiryCheck::AllowExpiredForRecovery).unwrap();
    // Recovery: rotate to a fresh root, which then passes the normal check.
    let mut v2 = RootDocument::new(root_body(2, &admins, NOW + DAY)).unwrap();
    v2.sign(&admins.root[0]);
    v2.sign(&admins.root[1]);
    recovered.walk([v2], NOW, ExpiryCheck::Enforce).unwrap();
    recovered.check_fresh(NOW, ExpiryCheck::Enforce).unwrap();
    // An intermediate expired version in a chain is fine; an expired final one is not.
    let mut v3 = RootDocument::new(root_body(3, &admins, NOW - 1)).unwrap();
    v3.sign(&admins.root[0]);
    v3.sign(&admins.root[1]);
    assert!(matches!(
        recovered.walk([v3], NOW, ExpiryCheck::Enforce),
        Err(RootError::Expired { version: 3, .. })
    ));
}

#[test]
fn root_blocks_round_trip_and_refuse_garbage() {
    let admins = admins(0);
    let root = genesis(&admins);
    let block = root.to_block();
    let decoded = RootDocument::decode(&block).unwrap();
    assert_eq!(decoded, root);
    assert_eq!(decoded.id(), root.id());
    // Endless data.
    let huge = vec![0u8; meridian_governance::document::DOCUMENT_BYTES_MAX + 1];
    assert!(matches!(
        RootDocument::decode(&huge),
        Err(DocumentError::TooLarge { .. })
    ));
    // Truncations and bit flips never panic, and never decode to a root that still verifies
    // with a changed body.
    for cut in 0..block.len() {
        assert!(RootDocument::decode(&block[..cut]).is_err());
    }
    for index in 0..block.len() {
        let mut flipped = block.clone();
        flipped[index] ^= 0x04;
        if let Ok(doc) = RootDocument::decode(&flipped)
            && doc.body != root.body
        {
            assert!(
                TrustedRoot::bootstrap(doc, NOW, ExpiryCheck::Enforce).is_err(),
                "flip at {index}"
            );
        }
    }
    // A threshold above the number of keys is refused when building.
    let mut body = root_body(1, &admins, NOW + DAY);
    body.roles
        .get_mut(&meridian_governance::root::RoleName::Policy)
        .unwrap()
        .threshold = 2;
    assert!(RootDocument::new(body).is_err());
}

#[test]
fn a_chain_of_root_blocks_is_trusted_or_names_the_document_at_fault() {
    let admins = admins(0);
    let signed = |version: u64| {
        let mut root = RootDocument::new(root_body(version, &admins, NOW + DAY)).unwrap();
        root.sign(&admins.root[0]);
        root.sign(&admins.root[1]);
        root.to_block()
    };
    let (v1, v2, v3) = (genesis(&admins).to_block(), signed(2), signed(3));
    let trusted = TrustedRoot::from_chain(&[&v1, &v2, &v3], NOW, ExpiryCheck::Enforce).unwrap();
    assert_eq!(trusted.current().body.version, 3);
    let hole = TrustedRoot::from_chain(&[&v1, &v3], NOW, ExpiryCheck::Enforce).unwrap_err();
    assert!(matches!(
        hole,
        RootChainError::Rejected {
            index: 1,
            error: RootError::SkippedVersion { .. }
        }
    ));
    assert_eq!(hole.index(), Some(1));
    assert!(hole.to_string().starts_with("root document #2:"), "{hole}");
    let garbage = TrustedRoot::from_chain(&[&v1, b"\xa0"], NOW, ExpiryCheck::Enforce).unwrap_err();
    assert!(matches!(garbage, RootChainError::Decode { index: 1, .. }));
    assert_eq!(
        TrustedRoot::from_chain(&[], NOW, ExpiryCheck::Enforce).unwrap_err(),
        RootChainError::Empty
    );
    // The newest must be fresh at `now`.
    let expired =
        TrustedRoot::from_chain(&[&v1, &v2], NOW + 2 * DAY, ExpiryCheck::Enforce).unwrap_err();
    assert!(matches!(
        expired,
        RootChainError::Rejected {
            index: 1,
            error: RootError::Expired { .. }
        }
    ));
}
