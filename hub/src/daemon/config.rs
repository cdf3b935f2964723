//! Hub configuration: a TOML file, then `MERIDIAN_*` environment variables, each overriding the
//! one before. Every setting has a default that works on loopback; validation names the setting
//! at fault. [`layered_table`] is shared with the node's configuration.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The config file `meridian hub init` writes: every setting with its default and what it does.
pub const DEFAULT_HUB_CONFIG_TOML: &str = r#"# Meridian hub configuration. Every setting is shown with its default.
# Each can also be set by an environment variable MERIDIAN_<SECTION>_<KEY>,
# e.g. MERIDIAN_HUB_LISTEN=0.0.0.0:7800, which overrides this file.

[hub]
# The region this hub serves (a-z, 0-9, inner -).
region = "local"
# HTTP address for the region's nodes. Port 0 picks a free port; the chosen address is
# logged and written to DATA/http.addr.
listen = "127.0.0.1:7800"
# UDP address of the QUIC trunk to other regions' hubs (written to DATA/trunk.addr).
trunk_listen = "127.0.0.1:7801"
# Bytes of blocks the cache keeps (in memory and on disk); least recently used go first.
cache_bytes_max = 268435456
# Most publishers whose heads the hub mirrors.
publishers_max = 100000
# How far ahead of this hub's clock a head's creation time may be, in seconds.
clock_skew_secs = 300
# How long a long-poll on /v1/heads may wait, at most, in seconds.
long_poll_max_secs = 60
# How long an upstream (node or hub) may take to answer, in seconds.
upstream_timeout_secs = 10
# Consecutive failures that open an upstream's circuit breaker, and how long it stays open.
breaker_failures = 5
breaker_open_secs = 10
# Without a governance root, how many new publishers one client address may introduce by
# gossip: per minute, and in all (a hub with governance admits only the nodes its policy
# admits: allow_node_keys or a node.verified attestation).
new_publishers_per_source_per_minute = 60
publishers_per_source_max = 1000
# How often, in seconds, the hub asks every other region's hub for all it holds (heads,
# governance documents, proofs) and takes in what it lacks; also done at start.
anti_entropy_secs = 15

[http]
# How long a connection may take to send a request head, in seconds; also how long a
# keep-alive connection may sit idle between requests.
header_read_timeout_secs = 10
# How long a request body may take to arrive in full, in seconds (408 past it).
body_read_timeout_secs = 30
# HTTP connections open at once, and from one client address; a connection past either is
# closed at once, so a flood of idle connections cannot take every file descriptor.
connections_max = 4096
connections_per_client_max = 256

[governance]
# The trust root file (a root document, e.g. root.1.cbor from `meridian gov init`). The policy
# bundle it signs gives the hub directory (whose keys the trunk pins) and the rate tiers.
# Empty: no policy mirror; trunk peers come from [trunk] peers only.
root = ""

[trunk]
# Other regions' hubs, used in addition to (and before) the policy's hub directory:
# "region=did:key:...@host:port" entries separated by commas.
peers = ""

[relay]
# Let the relay reach private, loopback and link-local agent addresses (off: SSRF protection).
allow_private = false
# Largest A2A request relayed, in bytes.
body_bytes_max = 1048576
# How long to wait for an agent to start answering, in seconds.
timeout_secs = 30
# Rate for organisations and regions without a tier in the policy: requests per second, burst.
default_rps = 50
default_burst = 100
# Nodes whose signed caller claims are trusted besides those whose heads this hub mirrors
# (did:keys separated by commas): a node that publishes nothing names its callers' organisation
# only if listed here. A call without a trusted claim is rated as anonymous.
trusted_nodes = ""
# Most relayed calls in progress at once (from nodes and from other hubs together, streams
# included); past it a call is refused with 503 and Retry-After.
concurrent_max = 256

[egress]
# Address ranges the hub may reach at node gateways and agent endpoints learned from the
# network even though they are private (a private deployment's networks), comma-separated,
# e.g. "10.20.0.0/16, fd12::/48". Cloud metadata addresses are refused whatever this says.
allow_cidrs = ""

[log]
# "text" or "json".
format = "text"
"#;

/// `[hub]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// The region served.
    pub region: String,
    /// HTTP listen address.
    pub listen: String,
    /// QUIC trunk listen address.
    pub trunk_listen: String,
    /// Cache size bound, bytes.
    pub cache_bytes_max: u64,
    /// Publisher bound.
    pub publishers_max: usize,
    /// Allowed clock skew, seconds.
    pub clock_skew_secs: i64,
    /// Longest long-poll, seconds.
    pub long_poll_max_secs: u64,
    /// Upstream answer timeout, seconds.
    pub upstream_timeout_secs: u64,
    /// Failures that open a breaker.
    pub breaker_failures: u32,
    /// How long a breaker stays open, seconds.
    pub breaker_open_secs: u64,
    /// New publishers one source may introduce per minute (without governance).
    pub new_publishers_per_source_per_minute: u32,
    /// New publishers one source may introduce in all (without governance).
    pub publishers_per_source_max: u32,
    /// Seconds between anti-entropy rounds with the other regions' hubs.
    pub anti_entropy_secs: u64,
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            region: "local".into(),
            listen: "127.0.0.1:7800".into(),
            trunk_listen: "127.0.0.1:7801".into(),
            cache_bytes_max: 256 * 1024 * 1024,
            publishers_max: 100_000,
            clock_skew_secs: 300,
            long_poll_max_secs: 60,
            upstream_timeout_secs: 10,
            breaker_failures: 5,
            breaker_open_secs: 10,
            new_publishers_per_source_per_minute: 60,
            publishers_per_source_max: 1000,
            anti_entropy_secs: 15,
        }
    }
}

/// `[governance]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubGovernanceSection {
    /// Root document file; empty: off.
    pub root: String,
}

/// `[trunk]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkSection {
    /// `region=did@host:port` entries.
    pub peers: String,
}

/// `[relay]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Allow private addresses.
    pub allow_private: bool,
    /// Largest request relayed.
    pub body_bytes_max: usize,
    /// Wait for an agent's answer, seconds.
    pub timeout_secs: u64,
    /// Default rate, per second.
    pub default_rps: u32,
    /// Default burst.
    pub default_burst: u32,
    /// Most relayed calls in progress at once.
    pub concurrent_max: usize,
    /// did:keys of nodes trusted to name their callers' organisation, besides publishers.
    pub trusted_nodes: String,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            allow_private: false,
            body_bytes_max: 1024 * 1024,
            timeout_secs: 30,
            default_rps: 50,
            default_burst: 100,
            concurrent_max: 256,
            trusted_nodes: String::new(),
        }
    }
}

/// `[http]`: what the hub's HTTP clients may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubHttpSection {
    /// Time to send a request head (and idle time between requests), in seconds.
    pub header_read_timeout_secs: u64,
    /// Time for a request body to arrive, in seconds.
    pub body_read_timeout_secs: u64,
    /// Connections open at once.
    pub connections_max: usize,
    /// Connections open at once from one client address.
    pub connections_per_client_max: usize,
}

impl Default for HubHttpSection {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            connections_max: 4096,
            connections_per_client_max: 256,
        }
    }
}

impl HubHttpSection {
    /// The server's connection limits.
    pub fn serve_limits(&self) -> crate::serve::ServeLimits {
        crate::serve::ServeLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: std::time::Duration::from_secs(self.body_read_timeout_secs),
            connections_max: self.connections_max,
            connections_per_client_max: self.connections_per_client_max,
        }
    }
}

/// `[egress]`: where the hub may reach that the SSRF guard would refuse.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSection {
    /// Comma-separated address ranges allowed although private.
    pub allow_cidrs: String,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubLogSection {
    /// `text` or `json`.
    pub format: String,
}

impl Default for HubLogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
        }
    }
}

/// The whole hub configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// `[hub]`
    pub hub: HubSection,
    /// `[http]`
    pub http: HubHttpSection,
    /// `[governance]`
    pub governance: HubGovernanceSection,
    /// `[trunk]`
    pub trunk: TrunkSection,
    /// `[relay]`
    pub relay: RelaySection,
    /// `[egress]`
    pub egress: EgressSection,
    /// `[log]`
    pub log: HubLogSection,
}

/// Reads `file` (if given) as a TOML table and overlays every `MERIDIAN_<SECTION>_<KEY>`
/// variable of `env` whose section is in `sections` (numbers and booleans keep their types).
pub fn layered_table(
    file: Option<&Path>,
    env: &[(String, String)],
    sections: &[&str],
) -> Result<toml::Table> {
    let mut table: toml::Table = match file {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?
        }
        Some(path) => bail!("config file {} does not exist", path.display()),
        None => toml::Table::new(),
    };
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("MERIDIAN_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let (section, key) = (section.to_lowercase(), key.to_lowercase());
        if !sections.contains(&section.as_str()) {
            continue;
        }
        let parsed = match (value.parse::<i64>(), value.as_str()) {
            (Ok(n), _) => toml::Value::Integer(n),
            (_, "true") => toml::Value::Boolean(true),
            (_, "false") => toml::Value::Boolean(false),
            _ => toml::Value::String(value.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(inner) => {
                inner.insert(key, parsed);
            }
            _ => bail!("config: `{section}` must be a table"),
        }
    }
    Ok(table)
}

/// Reads `file` and the `MERIDIAN_*` variables of `env` into `T` ([`layered_table`]); an
/// error names where the bad value came from: the environment variable that set it (a
/// mistyped variable is "not a setting", not a problem of the file), else the file.
pub fn load_layered<T: serde::de::DeserializeOwned>(
    file: Option<&Path>,
    env: &[(String, String)],
    sections: &[&str],
) -> Result<T> {
    let table = layered_table(file, env, sections)?;
    toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| {
            let message = error.to_string().replace('\n', " ");
            // The setting at fault: an unknown field's name, or the `section.key` it names.
            let culprit = message
                .split("unknown field `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned);
            let from_env = env.iter().find(|(name, _)| {
                let Some(rest) = name.strip_prefix("MERIDIAN_") else {
                    return false;
                };
                let Some((section, key)) = rest.split_once('_') else {
                    return false;
                };
                let (section, key) = (section.to_lowercase(), key.to_lowercase());
                sections.contains(&section.as_str())
                    && match &culprit {
                        Some(field) => *field == key,
                        None => {
                            message.contains(&format!("{section}.{key}"))
                                || message.contains(&format!("`{key}`"))
                        }
                    }
            });
            match (from_env, file) {
                (Some((name, _)), _) if culprit.is_some() => {
                    anyhow::anyhow!("environment variable {name} is not a setting: {message}")
                }
                (Some((name, value)), _) => {
                    anyhow::anyhow!("environment variable {name}={value:?}: {message}")
                }
                (None, Some(path)) => anyhow::anyhow!("config {}: {message}", path.display()),
                (None, None) => anyhow::anyhow!("config: {message}"),
            }
        })
}

/// One `[trunk] peers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOverride {
    /// The region.
    pub region: String,
    /// The hub key.
    pub key: meridian_registry::keys::PublicKey,
    /// The trunk address.
    pub addr: SocketAddr,
}

impl HubConfig {
    /// Loads `file`, overlays `MERIDIAN_*` variables from `env`, and validates.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Self> {
        let config: HubConfig = load_layered(
            file,
            env,
            &[
                "hub",
                "http",
                "governance",
                "trunk",
                "relay",
                "egress",
                "log",
            ],
        )?;
        config.validate()?;
        Ok(config)
    }

    /// The SSRF guard for what the hub reaches at addresses learned from the network:
    /// `relay.allow_private` and `egress.allow_cidrs`.
    pub fn egress_guard(&self) -> Result<crate::relay::EgressGuard> {
        let allow_cidrs = crate::relay::parse_cidrs(&self.egress.allow_cidrs)
            .map_err(|problem| anyhow::anyhow!("config egress.allow_cidrs: {problem}"))?;
        Ok(crate::relay::EgressGuard {
            allow_private: self.relay.allow_private,
            allow_cidrs,
        })
    }

    /// Checks every setting, naming the first one at fault.
    pub fn validate(&self) -> Result<()> {
        meridian_registry::manifest::check_name("region", &self.hub.region)
            .map_err(|problem| anyhow::anyhow!("config hub.region: {problem}"))?;
        self.listen_addr()?;
        self.trunk_addr()?;
        self.trunk_peers()?;
        if self.hub.cache_bytes_max < 1024 * 1024 {
            bail!("config hub.cache_bytes_max must be at least 1048576");
        }
        if self.hub.anti_entropy_secs == 0 {
            bail!("config hub.anti_entropy_secs must be above 0");
        }
        if self.hub.new_publishers_per_source_per_minute == 0
            || self.hub.publishers_per_source_max == 0
        {
            bail!(
                "config hub.new_publishers_per_source_per_minute and hub.publishers_per_source_max must be above 0"
            );
        }
        if self.hub.publishers_max == 0 {
            bail!("config hub.publishers_max must be above 0");
        }
        for did in self
            .relay
            .trusted_nodes
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            if let Err(error) = meridian_registry::keys::PublicKey::from_did(did) {
                bail!("config relay.trusted_nodes: `{did}` is not a did:key: {error}");
            }
        }
        self.egress_guard()?;
        self.http
            .serve_limits()
            .validate()
            .map_err(|problem| anyhow::anyhow!(problem))?;
        if self.relay.concurrent_max == 0 {
            bail!("config relay.concurrent_max must be above 0");
        }
        if self.relay.default_rps == 0 {
            bail!("config relay.default_rps must be above 0");
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!("config log.format must be \"text\" or \"json\"");
        }
        Ok(())
    }

    /// `hub.listen` parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.hub.listen.parse().map_err(|e| {
            anyhow::anyhow!(
                "config hub.listen: `{}` is not host:port ({e})",
                self.hub.listen
            )
        })
    }

    /// `hub.trunk_listen` parsed.
    pub fn trunk_addr(&self) -> Result<SocketAddr> {
        self.hub.trunk_listen.parse().map_err(|e| {
            anyhow::anyhow!(
                "config hub.trunk_listen: `{}` is not host:port ({e})",
                self.hub.trunk_listen
            )
        })
    }

    /// `trunk.peers` parsed.
    pub fn trunk_peers(&self) -> Result<Vec<PeerOverride>> {
        self.trunk
            .peers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let bad = |why: &str| {
                    anyhow::anyhow!(
                        "config trunk.peers: `{entry}` {why} (expected region=did:key:...@host:port)"
                    )
                };
                let (region, rest) = entry.split_once('=').ok_or_else(|| bad("has no `=`"))?;
                let (did, addr) = rest.split_once('@').ok_or_else(|| bad("has no `@`"))?;
                let key = meridian_registry::keys::PublicKey::from_did(did)
                    .map_err(|e| bad(&format!("has a bad key: {e}")))?;
                let addr = addr
                    .parse()
                    .map_err(|e| bad(&format!("has a bad address: {e}")))?;
                Ok(PeerOverride {
                    region: region.to_owned(),
                    key,
                    addr,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_parse_and_env_overrides() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("hub.toml");
        std::fs::write(&file, DEFAULT_HUB_CONFIG_TOML).expect("write");
        let config = HubConfig::load(
            Some(&file),
            &env(&[
                ("MERIDIAN_HUB_REGION", "eu-west"),
                ("MERIDIAN_HUB_CACHE_BYTES_MAX", "2000000"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.hub.region, "eu-west");
        assert_eq!(config.hub.cache_bytes_max, 2_000_000);
        assert_eq!(config.relay.default_rps, 50);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |pairs: &[(&str, &str)]| {
            HubConfig::load(None, &env(pairs))
                .expect_err("invalid")
                .to_string()
        };
        assert!(err(&[("MERIDIAN_HUB_LISTEN", "nowhere")]).contains("hub.listen"));
        assert!(err(&[("MERIDIAN_HUB_REGION", "Bad Region")]).contains("hub.region"));
        assert!(err(&[("MERIDIAN_TRUNK_PEERS", "eu=nokey@1.2.3.4:5")]).contains("trunk.peers"));
        assert!(err(&[("MERIDIAN_HUB_SURPRISE", "1")]).contains("surprise"));
        assert!(err(&[("MERIDIAN_HUB_CACHE_BYTES_MAX", "10")]).contains("cache_bytes_max"));
    }
}
