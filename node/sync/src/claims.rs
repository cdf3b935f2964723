//! What a node signs for its hub, and how the hub checks it: the protocol's signed claims and
//! the HTTP headers that carry them.
//!
//! - A **source claim**: with a new head a node pushes to its hub, the gateway URL it serves
//!   that head's blocks at, signed by the publisher's key ([`source_message`]), so a hub fetches
//!   blocks only from where the publisher itself said.
//! - A **caller claim**: on a relayed A2A call, the calling organisation as the caller's node
//!   authenticated it ([`CallerClaim`]), so a hub applies that organisation's rate tier. Without
//!   a valid claim from a node the hub trusts, the caller is anonymous: no client can borrow
//!   another organisation's tier.

use base64::Engine as _;
use meridian_registry::Cid;

/// Header: the gateway URL a node serves its blocks at (with a gossiped head).
pub const SOURCE_HEADER: &str = "meridian-source";
/// Header: the publisher's signature over [`source_message`] (base64).
pub const SOURCE_SIG_HEADER: &str = "meridian-source-sig";
/// The domain string a node signs to vouch for its gateway as the source of its blocks.
pub const SOURCE_DOMAIN: &str = "meridian.hub.source.v1";

/// What a node signs to tell its hub where the blocks of `commit` are.
pub fn source_message(url: &str, commit: &Cid) -> Vec<u8> {
    format!("{SOURCE_DOMAIN}\n{url}\n{commit}").into_bytes()
}

/// Header: the calling organisation, as the caller's node vouches.
pub const CALLER_ORG_HEADER: &str = "meridian-caller-org";
/// Header: the node vouching for the caller organisation (a did:key).
pub const CALLER_NODE_HEADER: &str = "meridian-caller-node";
/// Header: when the node signed the caller claim (unix seconds).
pub const CALLER_TIME_HEADER: &str = "meridian-caller-time";
/// Header: the node's signature over the caller claim (base64; see [`caller_claim_message`]).
pub const CALLER_SIG_HEADER: &str = "meridian-caller-sig";

/// A node's signed claim that a relayed call comes from one of its authenticated callers'
/// organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerClaim {
    /// The calling organisation.
    pub caller_org: String,
    /// The node vouching for it, as a did:key.
    pub node: String,
    /// When the node signed, unix seconds.
    pub time: i64,
}

/// How far a caller claim's time may be from the hub's clock, in seconds: the window in which
/// a captured claim could be replayed (for the same agent, the same body).
pub const CALLER_CLAIM_SKEW_SECS: i64 = 60;

/// Why a caller claim does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// Signed too far from the checker's clock.
    #[error("claim signed at {signed}, more than {CALLER_CLAIM_SKEW_SECS} s from now ({now})")]
    Skew {
        /// When it says it was signed.
        signed: i64,
        /// The checker's time.
        now: i64,
    },
    /// The node is not a did:key.
    #[error("node `{node}`: {reason}")]
    Node {
        /// The node named.
        node: String,
        /// Why it is not a key.
        reason: String,
    },
    /// The signature is not 64 bytes.
    #[error("signature is {0} bytes, not 64")]
    SignatureLength(usize),
    /// The signature does not verify (another call, body, time or organisation, or another
    /// signer).
    #[error("{0}")]
    Signature(meridian_registry::keys::KeyError),
}

/// The relayed call a caller claim is bound to: the agent, the node whose snapshot lists it,
/// its region and the request body.
#[derive(Debug, Clone, Copy)]
pub struct CallTarget<'a> {
    /// The agent's organisation.
    pub org: &'a str,
    /// The agent's name.
    pub agent: &'a str,
    /// The did:key of the node listing the agent.
    pub publisher: &'a str,
    /// The agent's region.
    pub region: &'a str,
    /// The request body.
    pub body: &'a [u8],
}

/// The bytes a node signs for a caller claim: the claim, the call's target and a hash of its
/// body, under a domain string of their own.
pub fn caller_claim_message(claim: &CallerClaim, target: CallTarget<'_>) -> Vec<u8> {
    let CallTarget {
        org,
        agent,
        publisher,
        region,
        body,
    } = target;
    format!(
        "meridian relay caller v1\n{}\n{}\n{}\n{org}/{agent}\n{publisher}\n{region}\n{}",
        claim.caller_org,
        claim.node,
        claim.time,
        blake3::hash(body).to_hex()
    )
    .into_bytes()
}

/// Checks a caller claim's signature (by the node key it names) and its time against `now`.
/// Whether the hub trusts that node is the caller's decision.
pub fn verify_caller_claim(
    claim: &CallerClaim,
    signature: &[u8],
    target: CallTarget<'_>,
    now: i64,
) -> Result<(), ClaimError> {
    if (claim.time - now).abs() > CALLER_CLAIM_SKEW_SECS {
        return Err(ClaimError::Skew {
            signed: claim.time,
            now,
        });
    }
    let key = meridian_registry::keys::PublicKey::from_did(&claim.node).map_err(|e| {
        ClaimError::Node {
            node: claim.node.clone(),
            reason: e.to_string(),
        }
    })?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| ClaimError::SignatureLength(signature.len()))?;
    key.verify(&caller_claim_message(claim, target), &signature)
        .map_err(ClaimError::Signature)
}

/// The request headers that carry a signed caller claim to a hub's relay.
pub fn caller_claim_headers(
    claim: &CallerClaim,
    signature: &[u8; 64],
) -> [(&'static str, String); 4] {
    [
        (CALLER_ORG_HEADER, claim.caller_org.clone()),
        (CALLER_NODE_HEADER, claim.node.clone()),
        (CALLER_TIME_HEADER, claim.time.to_string()),
        (
            CALLER_SIG_HEADER,
            base64::engine::general_purpose::STANDARD.encode(signature),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(agent: &'a str, body: &'a [u8]) -> CallTarget<'a> {
        CallTarget {
            org: "acme",
            agent,
            publisher: "did:p",
            region: "eu",
            body,
        }
    }

    #[test]
    fn caller_claims_bind_node_call_body_and_time() {
        let node = meridian_registry::keys::Keypair::from_secret(&[4; 32]);
        let claim = CallerClaim {
            caller_org: "globex".into(),
            node: node.did(),
            time: 1_800_000_000,
        };
        let body = br#"{"jsonrpc":"2.0"}"#;
        let sign = |claim: &CallerClaim, key: &meridian_registry::keys::Keypair| {
            key.sign(&caller_claim_message(claim, call("echo", body)))
        };
        let signature = sign(&claim, &node);
        let check = |claim: &CallerClaim, sig: &[u8], agent: &str, body: &[u8], now: i64| {
            verify_caller_claim(claim, sig, call(agent, body), now)
        };
        assert_eq!(
            check(&claim, &signature, "echo", body, claim.time + 30),
            Ok(())
        );
        // Another agent, another body, a forged org, a stranger's signature: the signature
        // fails; a stale claim and a truncated signature fail before it is checked.
        let bad_signature = |result: Result<(), ClaimError>| {
            assert!(
                matches!(result, Err(ClaimError::Signature(_))),
                "{result:?}"
            )
        };
        bad_signature(check(&claim, &signature, "other", body, claim.time));
        bad_signature(check(&claim, &signature, "echo", b"{}", claim.time));
        assert_eq!(
            check(&claim, &signature, "echo", body, claim.time + 61),
            Err(ClaimError::Skew {
                signed: claim.time,
                now: claim.time + 61
            })
        );
        let borrowed = CallerClaim {
            caller_org: "acme".into(),
            ..claim.clone()
        };
        bad_signature(check(&borrowed, &signature, "echo", body, claim.time));
        let stranger = meridian_registry::keys::Keypair::from_secret(&[5; 32]);
        bad_signature(check(
            &claim,
            &sign(&claim, &stranger),
            "echo",
            body,
            claim.time,
        ));
        assert_eq!(
            check(&claim, &signature[..63], "echo", body, claim.time),
            Err(ClaimError::SignatureLength(63))
        );
        let unnamed = CallerClaim {
            node: "not-a-did".into(),
            ..claim.clone()
        };
        assert!(matches!(
            check(&unnamed, &signature, "echo", body, claim.time),
            Err(ClaimError::Node { .. })
        ));
        let headers = caller_claim_headers(&claim, &signature);
        assert_eq!(headers[0], (CALLER_ORG_HEADER, "globex".to_owned()));
        assert_eq!(headers[2].1, claim.time.to_string());
    }

    #[test]
    fn a_source_claim_names_the_url_and_the_commit() {
        let commit = meridian_registry::ids::dag_cbor_cid(b"\xf6");
        let message = source_message("http://127.0.0.1:7700", &commit);
        assert_eq!(
            String::from_utf8(message).unwrap(),
            format!("{SOURCE_DOMAIN}\nhttp://127.0.0.1:7700\n{commit}")
        );
    }
}
