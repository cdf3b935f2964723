//! What the node's A2A proxy and the hub's relay share: the SSRF guard (private addresses are
//! refused, as IP literals and through DNS), the hop-by-hop headers that never pass, the
//! JSON-RPC endpoint a verified manifest names, and a body reader with a size bound for answers
//! from other machines (hubs, nodes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meridian_registry::manifest::Manifest;

/// Headers that belong to one hop and are never forwarded.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// A node's signed claim that a relayed call comes from one of its authenticated callers'
/// organisation: what lets a hub apply that organisation's rate tier. Without a valid claim a
/// hub treats the caller as anonymous, so no client can borrow another organisation's tier.
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

/// The bytes a node signs for a caller claim: the claim, the call's target and a hash of its
/// body, under a domain string of their own.
pub fn caller_claim_message(
    claim: &CallerClaim,
    org: &str,
    agent: &str,
    publisher: &str,
    region: &str,
    body: &[u8],
) -> Vec<u8> {
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
#[allow(clippy::too_many_arguments)]
pub fn verify_caller_claim(
    claim: &CallerClaim,
    signature: &[u8],
    org: &str,
    agent: &str,
    publisher: &str,
    region: &str,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    if (claim.time - now).abs() > CALLER_CLAIM_SKEW_SECS {
        return Err(format!(
            "claim signed at {}, more than {CALLER_CLAIM_SKEW_SECS} s from now ({now})",
            claim.time
        ));
    }
    let key = meridian_registry::keys::PublicKey::from_did(&claim.node)
        .map_err(|e| format!("node `{}`: {e}", claim.node))?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| format!("signature is {} bytes, not 64", signature.len()))?;
    key.verify(
        &caller_claim_message(claim, org, agent, publisher, region, body),
        &signature,
    )
    .map_err(|e| e.to_string())
}

/// Whether an address is off limits unless private addresses are explicitly allowed.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves names and refuses any answer that includes a private address.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addresses.iter().any(|a| is_private(a.ip())) {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    format!("`{host}` resolves to a private address; refused").into();
                return Err(error);
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// An HTTP client for agent endpoints: the SSRF guard on every name it resolves, no redirects,
/// no proxy from the environment.
pub fn agent_client(
    allow_private: bool,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .build()
}

/// The private IP an endpoint URL names literally, if any (names are checked at resolution).
pub fn literal_private(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .filter(|ip| is_private(*ip))
}

/// The JSON-RPC endpoint a manifest's card names, or why it names none usable.
pub fn jsonrpc_url(manifest: &Manifest) -> Result<reqwest::Url, String> {
    let card = manifest.card().map_err(|e| e.to_string())?;
    let interface = card
        .interfaces
        .iter()
        .find(|i| i.protocol_binding.eq_ignore_ascii_case("JSONRPC"))
        .ok_or_else(|| "the agent's card names no JSON-RPC interface".to_owned())?;
    reqwest::Url::parse(&interface.url).map_err(|e| format!("`{}`: {e}", interface.url))
}

/// Reads a response body, refusing one larger than `max` bytes (before allocating it, when the
/// length is announced; as the chunks arrive otherwise).
pub async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if let Some(length) = response.content_length()
        && length > max as u64
    {
        return Err(format!("answer of {length} bytes exceeds {max}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("answer exceeds {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            key.sign(&caller_claim_message(
                claim, "acme", "echo", "did:p", "eu", body,
            ))
        };
        let signature = sign(&claim, &node);
        let check = |claim: &CallerClaim, sig: &[u8], agent: &str, body: &[u8], now: i64| {
            verify_caller_claim(claim, sig, "acme", agent, "did:p", "eu", body, now)
        };
        assert_eq!(
            check(&claim, &signature, "echo", body, claim.time + 30),
            Ok(())
        );
        // Another agent, another body, a stale claim, a forged org, a stranger's signature,
        // a truncated signature: each refused.
        assert!(check(&claim, &signature, "other", body, claim.time).is_err());
        assert!(check(&claim, &signature, "echo", b"{}", claim.time).is_err());
        assert!(check(&claim, &signature, "echo", body, claim.time + 61).is_err());
        let borrowed = CallerClaim {
            caller_org: "acme".into(),
            ..claim.clone()
        };
        assert!(check(&borrowed, &signature, "echo", body, claim.time).is_err());
        let stranger = meridian_registry::keys::Keypair::from_secret(&[5; 32]);
        assert!(check(&claim, &sign(&claim, &stranger), "echo", body, claim.time).is_err());
        assert!(check(&claim, &signature[..63], "echo", body, claim.time).is_err());
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
        let url = reqwest::Url::parse("http://[::1]:80/x").expect("url");
        assert!(literal_private(&url).is_some());
        let url = reqwest::Url::parse("http://example.org/x").expect("url");
        assert!(literal_private(&url).is_none());
    }
}
