//! What each fuzz target does with its input, in one place: the cargo-fuzz targets in `fuzz/`
//! call these, and `cargo test` replays every committed input under `fuzz/regressions/` through
//! them (`tests/it/fuzz_regressions.rs`), so a crash once found stays fixed without nightly.
//!
//! Every function takes arbitrary bytes and must return without panicking; where a decoder
//! accepts the bytes, its output must encode back to what it accepted (one encoding per value).

use meridian_registry::car::Limits;

/// A fuzz target's body: arbitrary bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their folder under `fuzz/regressions/`.
pub const TARGETS: [(&str, Target); 7] = [
    ("cbor_decode", cbor_decode),
    ("car_snapshot", car_snapshot),
    ("documents", documents),
    ("card_json", card_json),
    ("sync_wire", sync_wire),
    ("hub_bodies", hub_bodies),
    ("governance_documents", governance_documents),
];

/// DAG-CBOR: what decodes re-encodes to the same bytes.
pub fn cbor_decode(data: &[u8]) {
    use meridian_registry::cbor;
    if let Ok(value) = cbor::decode(data) {
        assert_eq!(
            cbor::encode(&value),
            data,
            "accepted a non-canonical encoding"
        );
    }
}

/// A CAR file from the network: reading and full snapshot verification.
pub fn car_snapshot(data: &[u8]) {
    use meridian_registry::snapshot::{self, VerifyOptions};
    let limits = Limits {
        blocks_max: 10_000,
        car_bytes_max: 1 << 20,
        block_bytes_max: 256 * 1024,
        agents_max: 10_000,
        ..Limits::DEFAULT
    };
    if let Ok(contents) = snapshot::read_car(data, limits) {
        let options = VerifyOptions {
            limits,
            threads: 1,
            ..VerifyOptions::default()
        };
        let _ = snapshot::verify(
            &contents,
            &meridian_registry::store::MemoryStore::new(),
            &options,
        );
    }
}

/// Commit, manifest and tree-node blocks.
pub fn documents(data: &[u8]) {
    use meridian_registry::ids::{self, Blake3};
    if let Ok(commit) = meridian_registry::commit::Commit::decode(data) {
        let _ = commit.verify_signature();
    }
    if let Ok(manifest) = meridian_registry::manifest::Manifest::decode(data) {
        let _ = manifest.verify_signature();
    }
    let cid = ids::dag_cbor_cid(data);
    let block: std::sync::Arc<[u8]> = data.into();
    let _ = meridian_registry::mst::Mst::<Blake3>::load(&cid, 1000, &mut |wanted| {
        (*wanted == cid).then(|| block.clone())
    });
}

/// Agent card JSON.
pub fn card_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(card) = meridian_registry::manifest::AgentCard::parse(text)
    {
        let _ = card.agent_id("acme");
    }
}

/// The sync protocol's messages, as peers and hubs exchange them: what decodes encodes back
/// to the same bytes.
pub fn sync_wire(data: &[u8]) {
    use meridian_hub::wire::{Gossip, MESSAGE_BYTES_MAX, Request, Response};
    if let Ok(message) = Gossip::decode(data, MESSAGE_BYTES_MAX) {
        assert_eq!(message.encode(), data, "gossip has two encodings");
    }
    if let Ok(request) = Request::decode(data, MESSAGE_BYTES_MAX) {
        assert_eq!(request.encode(), data, "a request has two encodings");
    }
    if let Ok(response) = Response::decode(data, MESSAGE_BYTES_MAX) {
        assert_eq!(response.encode(), data, "a response has two encodings");
    }
}

/// What a hub's HTTP API reads from a node before anything else: a gossip body (and the head
/// in it), a sync request, and a gateway URL the node vouches for, checked by the SSRF guard.
pub fn hub_bodies(data: &[u8]) {
    use meridian_hub::wire::{GOSSIP_BYTES_MAX, Gossip, MESSAGE_BYTES_MAX, Request};
    if let Ok(Gossip::Head(block)) = Gossip::decode(data, GOSSIP_BYTES_MAX)
        && let Ok(commit) = meridian_registry::commit::Commit::decode(&block)
    {
        let _ = commit.verify_signature();
    }
    let _ = Request::decode(data, MESSAGE_BYTES_MAX);
    if let Ok(text) = std::str::from_utf8(data) {
        if meridian_hub::daemon::state::gateway_url_acceptable(text) {
            let url = meridian_hub::relay::Url::parse(text).expect("an acceptable URL parses");
            assert!(
                url.query().is_none() && url.fragment().is_none() && url.username().is_empty(),
                "gateway URL {text} carries a query, fragment or user"
            );
        }
        if let Ok(url) = meridian_hub::relay::Url::parse(text) {
            let refused = meridian_hub::relay::EgressGuard::default()
                .url_refusal(&url)
                .is_some();
            // Whatever the URL, a literal private or metadata address is never let through.
            if let Some(host) = url.host_str()
                && let Ok(ip) = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                && (meridian_hub::relay::is_private(ip) || meridian_hub::relay::is_metadata(ip))
            {
                assert!(refused, "{ip} passed the guard");
            }
        }
        let _ = meridian_hub::relay::parse_cidrs(text);
    }
}

/// Governance documents: roots, policy bundles, attestations, key rotations, registrations and
/// checkpoint notes.
pub fn governance_documents(data: &[u8]) {
    use meridian_governance::attestation::{Attestation, KeyRotation, Registration};
    use meridian_governance::policy::PolicyBundle;
    use meridian_governance::root::RootDocument;
    if let Ok(root) = RootDocument::decode(data) {
        assert_eq!(root.to_block(), data, "a root has two encodings");
    }
    if let Ok(policy) = PolicyBundle::decode(data) {
        assert_eq!(policy.to_block(), data, "a policy has two encodings");
    }
    if let Ok(attestation) = Attestation::decode(data) {
        assert_eq!(
            attestation.to_block(),
            data,
            "an attestation has two encodings"
        );
    }
    if let Ok(rotation) = KeyRotation::decode(data) {
        assert_eq!(rotation.to_block(), data, "a rotation has two encodings");
    }
    let _ = Registration::decode_and_verify(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = meridian_governance::checkpoint::SignedNote::parse(text);
        let _ = meridian_governance::checkpoint::Checkpoint::parse_body(text);
    }
}
