//! What the node's A2A proxy and the hub's relay share: the SSRF guard (private addresses are
//! refused, as IP literals and through DNS), the hop-by-hop headers that never pass, the
//! JSON-RPC endpoint a verified manifest names, and a body reader with a size bound for answers
//! from other machines (hubs, nodes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meridian_registry::manifest::Manifest;

/// The URL type the guard and the relay speak (reqwest's, re-exported for callers and tests).
pub use reqwest::Url;

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

/// Whether an address is off limits unless private addresses are explicitly allowed: loopback,
/// private, link-local, shared (CGNAT), benchmarking, reserved, multicast and unspecified
/// ranges, and every IPv6 form that embeds an IPv4 address (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), which a guard that looks
/// only at IPv4 would let through to the embedded address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                // 192.0.0.0/24: IETF protocol assignments.
                || (a == 192 && b == 0 && c == 0)
                // 198.18.0.0/15: benchmarking.
                || (a == 198 && (b == 18 || b == 19))
                // 240.0.0.0/4: reserved.
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            // ::a.b.c.d (IPv4-compatible, deprecated) and 64:ff9b::/96 (NAT64).
            let compatible = segments[..6].iter().all(|s| *s == 0);
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || compatible
                || nat64
                || first == 0x2002
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Cloud metadata services (AWS, GCP and Azure's 169.254.169.254, AWS ECS's 169.254.170.2,
/// Alibaba's 100.100.100.200, Azure's 168.63.129.16, AWS's fd00:ec2::254): refused even where
/// private addresses are allowed, since they hand out the machine's credentials.
pub fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(
            v4.octets(),
            [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200] | [168, 63, 129, 16]
        ),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_metadata(IpAddr::V4(v4)),
            None => v6.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254],
        },
    }
}

/// An address range such as `10.20.0.0/16` or `fd12::/48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why text is not an address range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IP address.
    #[error("`{0}` is not an address range (e.g. 10.0.0.0/8)")]
    Address(String),
    /// The prefix length is not a number up to the address's bits.
    #[error("`{text}`: prefix length must be 0 to {bits}")]
    Prefix {
        /// The range given.
        text: String,
        /// 32 or 128.
        bits: u8,
    },
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| CidrError::Prefix {
                    text: text.to_owned(),
                    bits,
                })?
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (network, ip, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(n.to_bits()), u128::from(i.to_bits()), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        host_bits >= 128 || (network >> host_bits) == (ip >> host_bits)
    }
}

/// Parses a comma-separated list of address ranges (a config value such as
/// `egress.allow_cidrs`); empty entries are skipped.
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, CidrError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::parse)
        .collect()
}

/// The SSRF guard every outgoing request to an address learned from the network passes (an
/// agent's endpoint, a node's gateway URL a pushed head names): private ranges are refused
/// unless allowed, ranges the operator lists are allowed, metadata services never are.
#[derive(Debug, Clone, Default)]
pub struct EgressGuard {
    /// Allow every private range ([`is_private`]); metadata addresses stay refused.
    pub allow_private: bool,
    /// Ranges allowed even when private ranges are not (a private deployment's networks).
    pub allow_cidrs: Vec<Cidr>,
}

impl EgressGuard {
    /// Why `ip` may not be reached, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        if is_metadata(ip) {
            return Some(format!("{ip} is a cloud metadata address; always refused"));
        }
        if self.allow_private || !is_private(ip) || self.allow_cidrs.iter().any(|c| c.contains(ip))
        {
            return None;
        }
        Some(format!("{ip} is a private address; refused"))
    }

    /// Why the IP `url` names literally may not be reached, if it may not (a name is checked
    /// when it resolves, by the client of [`EgressGuard::client`]).
    pub fn url_refusal(&self, url: &reqwest::Url) -> Option<String> {
        let ip = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok())?;
        self.refusal(ip)
    }

    /// A DNS resolver for reqwest that refuses the names this guard refuses (a private,
    /// loopback or link-local address unless allowed): for clients built elsewhere.
    pub fn resolver(&self) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(GuardedResolver {
            guard: self.clone(),
        })
    }

    /// An HTTP client that applies the guard to every name it resolves, follows no redirect
    /// (a redirect would lead it past the guard) and takes no proxy from the environment.
    /// Literal IPs in URLs are not resolved: check them with [`EgressGuard::url_refusal`].
    pub fn client(&self, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(crate::serve::CLIENT_POOL_IDLE)
            .no_proxy()
            .connect_timeout(connect_timeout)
            .build()
    }
}

/// Resolves names and refuses any answer that includes an address the guard refuses.
struct GuardedResolver {
    guard: EgressGuard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(why) = addresses.iter().find_map(|a| guard.refusal(a.ip())) {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    format!("`{host}` resolves to {why}").into();
                return Err(error);
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// An HTTP client for agent endpoints: [`EgressGuard::client`] with private addresses allowed
/// or not.
pub fn agent_client(
    allow_private: bool,
    connect_timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    EgressGuard {
        allow_private,
        allow_cidrs: Vec::new(),
    }
    .client(connect_timeout)
}

/// The private or metadata IP an endpoint URL names literally, if any (names are checked at
/// resolution).
pub fn literal_private(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .filter(|ip| is_private(*ip) || is_metadata(*ip))
}

/// Why a manifest names no usable JSON-RPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The manifest's card does not parse (or it is a removal, which has none).
    #[error("{0}")]
    Card(meridian_registry::manifest::ManifestError),
    /// The card lists no interface with the JSON-RPC binding.
    #[error("the agent's card names no JSON-RPC interface")]
    NoJsonRpc,
    /// The interface's URL is not a URL.
    #[error("`{url}`: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// The JSON-RPC endpoint a manifest's card names, or why it names none usable.
pub fn jsonrpc_url(manifest: &Manifest) -> Result<reqwest::Url, EndpointError> {
    let card = manifest.card().map_err(EndpointError::Card)?;
    let interface = card
        .interfaces
        .iter()
        .find(|i| i.protocol_binding.eq_ignore_ascii_case("JSONRPC"))
        .ok_or(EndpointError::NoJsonRpc)?;
    reqwest::Url::parse(&interface.url).map_err(|e| EndpointError::Url {
        url: interface.url.clone(),
        reason: e.to_string(),
    })
}

/// Why an answer's body was not read ([`read_limited`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The answer announced, or sent, more than the limit.
    #[error("answer exceeds {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The connection failed while reading.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

/// Reads a response body, refusing one larger than `max` bytes (before allocating it, when the
/// length is announced; as the chunks arrive otherwise).
pub async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(ReadError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.254",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["198.17.0.1", "198.20.0.1", "192.0.2.1", "239.0.0.1"] {
            let private = is_private(ip.parse().expect("ip"));
            // 239/8 is multicast (private); the others are ordinary.
            assert_eq!(private, ip.starts_with("239."), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
        let url = reqwest::Url::parse("http://[::1]:80/x").expect("url");
        assert!(literal_private(&url).is_some());
        let url = reqwest::Url::parse("http://example.org/x").expect("url");
        assert!(literal_private(&url).is_none());
    }

    #[test]
    fn metadata_addresses_stay_refused_when_private_ones_are_allowed() {
        let open = EgressGuard {
            allow_private: true,
            allow_cidrs: vec!["169.254.0.0/16".parse().expect("cidr")],
        };
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "168.63.129.16",
            "169.254.170.2",
        ] {
            let why = open.refusal(ip.parse().expect("ip")).expect("refused");
            assert!(why.contains("metadata"), "{ip}: {why}");
        }
        assert_eq!(open.refusal("10.0.0.1".parse().expect("ip")), None);
        let url = reqwest::Url::parse("http://169.254.169.254/latest/meta-data").expect("url");
        assert!(open.url_refusal(&url).is_some());
        assert!(literal_private(&url).is_some());
    }

    #[test]
    fn allowed_ranges_open_only_themselves() {
        let guard = EgressGuard {
            allow_private: false,
            allow_cidrs: parse_cidrs("10.20.0.0/16, fd12::/48,").expect("cidrs"),
        };
        assert_eq!(guard.refusal("10.20.3.4".parse().expect("ip")), None);
        assert_eq!(guard.refusal("fd12::9".parse().expect("ip")), None);
        assert!(guard.refusal("10.21.0.1".parse().expect("ip")).is_some());
        assert!(guard.refusal("127.0.0.1".parse().expect("ip")).is_some());
        assert!(guard.refusal("::127.0.0.1".parse().expect("ip")).is_some());
        assert_eq!(guard.refusal("8.8.8.8".parse().expect("ip")), None);
        let whole: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(whole.contains("10.0.0.1".parse().expect("ip")));
        assert!(!whole.contains("::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("not-an-ip/8".parse::<Cidr>().is_err());
        let single: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(single.contains("127.0.0.1".parse().expect("ip")));
        assert!(!single.contains("127.0.0.2".parse().expect("ip")));
    }
}
