//! Node configuration: a TOML file, `MERIDIAN_*` environment variables, then command-line flags,
//! each overriding the one before. Every setting has a default that works on loopback, and
//! validation names the setting at fault.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The config file `meridian node init` writes: every setting with its default and what it does.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Meridian node configuration. Every setting is shown with its default.
# Each can also be set by an environment variable MERIDIAN_<SECTION>_<KEY>,
# e.g. MERIDIAN_HTTP_LISTEN=0.0.0.0:7700, which overrides this file.

[node]
# The region this node serves its agents from (a-z, 0-9, inner -).
region = "local"
# How long a signed removal (tombstone) this node publishes is kept, in days: lookups answer
# 410 meanwhile, and the removal hides every older copy of the agent on every node. Then it
# is dropped and the agent is unknown (404). 0 keeps removals for ever.
removal_retention_days = 365

[http]
# Address of the HTTP gateway. Port 0 picks a free port; the chosen address is logged
# and written to DATA/http.addr.
listen = "127.0.0.1:7700"
# Largest JSON request body, in bytes.
body_bytes_max = 1048576
# Largest snapshot (CAR) accepted by POST /api/v1/registry/import, in bytes.
import_bytes_max = 1073741824
# On SIGINT/SIGTERM, how long in-flight requests may take to finish, in seconds.
shutdown_grace_secs = 10
# Most results one search page returns.
search_page_max = 500
# Require a valid token (any organisation's, or an admin's) to read the registry API. The
# operations endpoints (/health, /ready, /metrics) and the A2A proxy stay open.
read_auth = false
# The URL clients reach this node at (e.g. https://node.example.org), used in the agent cards
# the A2A proxy serves. Empty: the request's host if allowed_hosts lists it, otherwise the
# gateway's bound address (a node listening on 0.0.0.0 or [::] then needs one of the two).
public_url = ""
# Host names (host or host:port, comma-separated) whose Host header the cards may take as the
# node's URL when public_url is empty; a Host header not listed is never echoed into a card.
allowed_hosts = ""

[a2a]
# Let the proxy reach private, loopback and link-local addresses (off: SSRF protection).
allow_private = false
# Reverse proxies in front of this node (comma-separated CIDRs such as 10.0.0.0/8): only their
# Forwarded and X-Forwarded-* headers pass on to agents; anyone else's are dropped. Either way
# the node adds its own (RFC 7239 Forwarded: for, host, proto; and X-Forwarded-For).
trusted_proxies = ""
# Largest JSON-RPC request forwarded, in bytes.
body_bytes_max = 1048576
# How long to wait for an agent to start answering, in seconds.
timeout_secs = 30
# How long to wait for a connection to an agent, in seconds.
connect_timeout_secs = 10
# Calls forwarded at once (streams included); more get 503 with Retry-After.
concurrency_max = 256
# A streamed answer (SSE) from an agent ends after this many seconds in all, and after this many
# seconds without a byte from the agent.
stream_timeout_secs = 3600
stream_idle_timeout_secs = 300
# Rate for callers without a tier in the policy bundle: requests per second and burst, in one
# bucket per caller (its organisation with a caller token, else its client address) and agent:
# enough for one client running an A2A conformance suite against one agent.
default_rps = 50
default_burst = 100

[ard]
# Other ARD registries (their API bases, e.g. "https://registry.example/ard/v1", comma-separated)
# that POST /ard/v1/search asks in `auto` federation mode and names in `referrals` mode.
# Empty: this node's own view answers (it already holds the whole verified federation).
upstreams = ""
# How long a federated search waits for the upstreams, in milliseconds; a slow or failing
# upstream costs its results, never the answer.
federation_budget_ms = 1000
# Federated searches each client may start per second, and the burst; past them a client's
# searches answer from this node's view alone.
federation_rps = 5
federation_burst = 10
# Let federated searches reach private, loopback and link-local addresses (off: SSRF protection).
allow_private = false

[domains]
# With governance off this node checks an organisation's domain proof itself
# (POST /api/v1/names/ORG/domain), fetching https://DOMAIN/.well-known/meridian-org.json.
# Domains reached at a fixed address instead of through DNS, comma-separated DOMAIN=IP:PORT
# (like curl's --resolve).
resolve = ""
# PEM files of extra trusted root certificates, comma-separated (added to the platform's).
extra_roots = ""
# How often a bound domain's proof is fetched and checked again, in seconds; also this long
# before the proof expires. A failed check keeps the binding until the proof expires.
recheck_secs = 86400

[ingest]
# Publish an organisation's agents from its own site: the node polls these https:// URLs on the
# organisation's bound domain (comma-separated; ARD manifests such as
# https://acme.example/.well-known/ard.json, or A2A cards such as
# https://acme.example/.well-known/agent-card.json), publishes new and changed cards signed
# with the organisation's key, and unpublishes the agents a source no longer lists.
# Empty: off. Each source's last result: GET /api/v1/ingest.
sources = ""
# The organisation, and its key file (which signs what is taken in).
org = ""
org_key = ""
# How often each source is polled, in seconds (requests are conditional: ETag, Last-Modified).
interval_secs = 300

[governance]
# The trust root file (a root document, e.g. root.1.cbor from `meridian gov init`). When set, an
# agent enters this node's federated view only if the acceptance rule accepts it. Empty: off.
root = ""
# Organisations whose registration request may wait for review at once (each keeps its newest).
registrations_pending_max = 1000
# Key transparency: trust an organisation's keys (its org.verified attestation, each key
# rotation) only once a proof that the document is in the governance key log arrives
# (POST /api/v1/governance/key-proofs, made by `meridian checkpoint prove-document`), in a
# checkpoint signed by key_log_key and co-signed by key_log_witness_threshold of the
# key_log_witnesses ("name=did:key:...", comma-separated).
require_key_log = false
key_log_origin = ""
key_log_key = ""
key_log_witnesses = ""
key_log_witness_threshold = 1

[mesh]
# Mirror peers' snapshots over the libp2p mesh (QUIC, TCP fallback).
enabled = true
# Addresses to listen on (multiaddrs, separated by spaces or commas). Port 0 picks a free port;
# the chosen addresses are written to DATA/mesh.addr.
listen = "/ip4/127.0.0.1/udp/0/quic-v1 /ip4/127.0.0.1/tcp/0"
# Peers to start from: multiaddrs ending in /p2p/<peer id> (see another node's DATA/mesh.addr).
bootstrap = ""
# How long a block request may take before it is retried with another peer, in seconds.
request_timeout_secs = 10
# Most publishers mirrored.
publishers_max = 10000
# This region's hub (http://host:port): heads, blocks and governance through it, new heads
# pushed to it, calls to other regions' agents relayed by it. Empty: the hub that the signed
# policy's hub directory lists for this node's region, if any. The mesh keeps working without it.
hub = ""
# Most peer connections at once, and so the most peers; a connection past it is refused (at most
# two per peer, a quarter of it still being set up).
connections_max = 256
# Memory all syncs together may hold in fetched blocks not yet imported, in MiB. Past it only the
# sync holding the most fetches on (one snapshot larger than this still syncs).
sync_memory_mib = 512

[log]
# "text" for people, "json" for log collectors. Verbosity comes from RUST_LOG (default "info").
format = "text"
"#;

/// `[mesh]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSection {
    /// Whether the node joins the peer mesh.
    pub enabled: bool,
    /// Listen multiaddrs, separated by spaces or commas.
    pub listen: String,
    /// Bootstrap peers' multiaddrs (with `/p2p/<peer id>`).
    pub bootstrap: String,
    /// Block request timeout, in seconds.
    pub request_timeout_secs: u64,
    /// Most publishers mirrored.
    pub publishers_max: usize,
    /// The region's hub URL (empty: from the policy's hub directory).
    pub hub: String,
    /// Most peer connections at once (a new connection past it is refused).
    pub connections_max: u32,
    /// MiB of fetched, not yet imported blocks all syncs together may hold.
    pub sync_memory_mib: u64,
}

impl Default for MeshSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "/ip4/127.0.0.1/udp/0/quic-v1 /ip4/127.0.0.1/tcp/0".into(),
            bootstrap: String::new(),
            request_timeout_secs: 10,
            publishers_max: 10_000,
            hub: String::new(),
            connections_max: 256,
            sync_memory_mib: 512,
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// The region this node serves its agents from.
    pub region: String,
    /// How long this node keeps a signed removal (tombstone) it publishes, in days, answering
    /// 410 for the agent; then it drops the removal from its registry and the agent is simply
    /// unknown (404). While kept, a removal hides every older copy of the agent on every node;
    /// once dropped, a publisher that still lists an old copy could serve it again. 0 keeps
    /// removals for ever.
    pub removal_retention_days: u64,
}

/// Default of `node.removal_retention_days`: a year.
pub const REMOVAL_RETENTION_DAYS_DEFAULT: u64 = 365;

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            region: "local".into(),
            removal_retention_days: REMOVAL_RETENTION_DAYS_DEFAULT,
        }
    }
}

impl NodeSection {
    /// How long a removal is kept, in seconds; `None` for ever.
    pub fn removal_retention_secs(&self) -> Option<i64> {
        (self.removal_retention_days > 0).then(|| {
            i64::try_from(self.removal_retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX)
        })
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// The gateway's listen address.
    pub listen: String,
    /// Largest JSON request body, in bytes.
    pub body_bytes_max: usize,
    /// Largest snapshot import body, in bytes.
    pub import_bytes_max: usize,
    /// Drain time on shutdown, in seconds.
    pub shutdown_grace_secs: u64,
    /// Most results one search page returns.
    pub search_page_max: usize,
    /// The node's public URL; empty: an allowed Host, else the bound address.
    pub public_url: String,
    /// Host header values a card may take as the node's URL.
    pub allowed_hosts: String,
    /// Whether reads need a token.
    pub read_auth: bool,
    /// Time to send a request head (and idle time between requests), in seconds.
    pub header_read_timeout_secs: u64,
    /// Time for a request body to arrive, in seconds.
    pub body_read_timeout_secs: u64,
    /// Connections open at once.
    pub connections_max: usize,
    /// Connections open at once from one client address.
    pub connections_per_client_max: usize,
    /// Event stream subscribers at once.
    pub sse_subscribers_max: usize,
    /// Sync answer bytes per client address per second.
    pub sync_bytes_per_client_per_second: u32,
}

impl HttpSection {
    /// The server's connection limits.
    pub fn serve_limits(&self) -> meridian_hub::serve::ServeLimits {
        meridian_hub::serve::ServeLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: std::time::Duration::from_secs(self.body_read_timeout_secs),
            connections_max: self.connections_max,
            connections_per_client_max: self.connections_per_client_max,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7700".into(),
            body_bytes_max: 1024 * 1024,
            import_bytes_max: 1024 * 1024 * 1024,
            shutdown_grace_secs: 10,
            search_page_max: 500,
            public_url: String::new(),
            allowed_hosts: String::new(),
            read_auth: false,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            connections_max: 4096,
            connections_per_client_max: 256,
            sse_subscribers_max: 1024,
            sync_bytes_per_client_per_second: 16 * 1024 * 1024,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
        }
    }
}

/// `[a2a]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct A2aSection {
    /// Whether the proxy may reach private addresses.
    pub allow_private: bool,
    /// Address ranges of reverse proxies in front of this node, comma-separated CIDRs: only
    /// from them are a caller's `Forwarded` and `X-Forwarded-*` headers passed on (and added
    /// to); from anyone else they are dropped and the node's own stand alone.
    pub trusted_proxies: String,
    /// Largest request forwarded, in bytes.
    pub body_bytes_max: usize,
    /// Wait for the agent's answer to start, in seconds.
    pub timeout_secs: u64,
    /// Wait for a connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Calls at once.
    pub concurrency_max: usize,
    /// Whole life of a streamed answer, in seconds.
    pub stream_timeout_secs: u64,
    /// Silence that ends a streamed answer, in seconds.
    pub stream_idle_timeout_secs: u64,
    /// Default requests per second per caller.
    pub default_rps: u32,
    /// Default burst per caller.
    pub default_burst: u32,
}

impl Default for A2aSection {
    fn default() -> Self {
        Self {
            allow_private: false,
            trusted_proxies: String::new(),
            body_bytes_max: 1024 * 1024,
            timeout_secs: 30,
            connect_timeout_secs: 10,
            concurrency_max: 256,
            stream_timeout_secs: 3600,
            stream_idle_timeout_secs: 300,
            default_rps: 50,
            default_burst: 100,
        }
    }
}

/// `[domains]`: how this node reaches organisations' domains to check their proofs itself
/// (governance off; with governance on an admin checks them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainsSection {
    /// Domains reached at a fixed address instead of through DNS, comma-separated
    /// `DOMAIN=IP:PORT` (like curl's `--resolve`).
    pub resolve: String,
    /// PEM files of extra trusted root certificates, comma-separated.
    pub extra_roots: String,
    /// How often a bound domain's proof is fetched and checked again, in seconds (also: this
    /// long before it expires).
    pub recheck_secs: u64,
}

/// Default of `domains.recheck_secs`: a day.
pub const DOMAIN_RECHECK_SECS_DEFAULT: u64 = 86_400;

impl Default for DomainsSection {
    fn default() -> Self {
        Self {
            resolve: String::new(),
            extra_roots: String::new(),
            recheck_secs: DOMAIN_RECHECK_SECS_DEFAULT,
        }
    }
}

impl DomainsSection {
    /// The fetch settings: the resolver overrides parsed and the extra roots read.
    pub fn fetch(&self) -> Result<super::domains::DomainFetch> {
        let resolve = split_list(&self.resolve)
            .map(|entry| {
                super::domains::parse_resolve(entry)
                    .map_err(|problem| anyhow::anyhow!("config domains.resolve: {problem}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let extra_roots_pem = split_list(&self.extra_roots)
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("config domains.extra_roots: reading `{path}`: {e}")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(super::domains::DomainFetch {
            resolve,
            extra_roots_pem,
            timeout: std::time::Duration::ZERO,
            egress: Some(meridian_hub::relay::EgressGuard {
                allow_private: false,
                allow_cidrs: Vec::new(),
            }),
        })
    }
}

/// The non-empty, trimmed entries of a comma-separated setting.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// `[ingest]`: publish an organisation's agents from its own site (ARD §5.2), with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// The organisation whose agents are taken in (it must be bound to a domain).
    pub org: String,
    /// The organisation's key file, which signs what is taken in.
    pub org_key: String,
    /// `https://` URLs on the organisation's domain, comma-separated: ARD manifests
    /// (`/.well-known/ard.json`) or A2A cards (`/.well-known/agent-card.json`). Empty: off.
    pub sources: String,
    /// How often each source is polled, in seconds.
    pub interval_secs: u64,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            org: String::new(),
            org_key: String::new(),
            sources: String::new(),
            interval_secs: 300,
        }
    }
}

impl IngestSection {
    /// The source URLs.
    pub fn source_urls(&self) -> Vec<String> {
        split_list(&self.sources).map(str::to_owned).collect()
    }

    fn validate(&self) -> Result<()> {
        let sources = self.source_urls();
        if sources.is_empty() {
            return Ok(());
        }
        meridian_registry::manifest::check_name("org", &self.org)
            .map_err(|problem| anyhow::anyhow!("config ingest.org: {problem}"))?;
        if self.org_key.is_empty() {
            bail!(
                "config ingest.org_key: the organisation's key file is needed to sign what is taken in"
            );
        }
        for source in sources {
            let url = reqwest::Url::parse(&source)
                .map_err(|e| anyhow::anyhow!("config ingest.sources: `{source}`: {e}"))?;
            if url.scheme() != "https" {
                bail!("config ingest.sources: `{source}` is not an https:// URL");
            }
        }
        if self.interval_secs == 0 {
            bail!("config ingest.interval_secs must be above 0");
        }
        Ok(())
    }
}

/// `[ard]`: the ARD Registry API's federation with other registries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArdSection {
    /// Other ARD registries' API bases, comma-separated.
    pub upstreams: String,
    /// How long a federated search waits for the upstreams, in milliseconds.
    pub federation_budget_ms: u64,
    /// Federated searches per client per second.
    pub federation_rps: u32,
    /// Their burst.
    pub federation_burst: u32,
    /// Whether federated searches may reach private addresses.
    pub allow_private: bool,
}

impl Default for ArdSection {
    fn default() -> Self {
        Self {
            upstreams: String::new(),
            federation_budget_ms: 1000,
            federation_rps: 5,
            federation_burst: 10,
            allow_private: false,
        }
    }
}

impl ArdSection {
    /// The upstream API bases, each an http(s) URL without a trailing slash.
    pub fn upstream_urls(&self) -> Result<Vec<String>> {
        self.upstreams
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                let parsed = reqwest::Url::parse(u)
                    .map_err(|e| anyhow::anyhow!("config ard.upstreams: `{u}`: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    bail!("config ard.upstreams: `{u}` is not an http:// or https:// URL");
                }
                Ok(u.trim_end_matches('/').to_owned())
            })
            .collect()
    }
}

/// `[governance]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernanceSection {
    /// The trust root file; empty turns governance off.
    pub root: String,
    /// Organisations with a registration request waiting at once.
    pub registrations_pending_max: usize,
    /// Trust organisation keys only from documents proven in the key log.
    pub require_key_log: bool,
    /// The key log's origin line.
    pub key_log_origin: String,
    /// The key log's did:key.
    pub key_log_key: String,
    /// Witnesses of the key log, `name=did` comma-separated.
    pub key_log_witnesses: String,
    /// Witness cosignatures a key-log checkpoint needs.
    pub key_log_witness_threshold: usize,
}

impl GovernanceSection {
    /// Who vouches for the key log, when `require_key_log` is on.
    pub fn key_log_trust(&self) -> Result<Option<meridian_governance::keylog::KeyLogTrust>> {
        if !self.require_key_log {
            return Ok(None);
        }
        if self.key_log_origin.is_empty() {
            bail!("config governance.key_log_origin is needed with governance.require_key_log");
        }
        let log_key =
            meridian_registry::keys::PublicKey::from_did(&self.key_log_key).map_err(|e| {
                anyhow::anyhow!("config governance.key_log_key: `{}`: {e}", self.key_log_key)
            })?;
        let mut witnesses = Vec::new();
        for entry in self
            .key_log_witnesses
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (name, did) = entry.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "config governance.key_log_witnesses: `{entry}` is not name=did:key"
                )
            })?;
            let key = meridian_registry::keys::PublicKey::from_did(did.trim()).map_err(|e| {
                anyhow::anyhow!("config governance.key_log_witnesses: `{did}`: {e}")
            })?;
            witnesses.push((name.trim().to_owned(), key));
        }
        if self.key_log_witness_threshold > witnesses.len() {
            bail!(
                "config governance.key_log_witness_threshold is {} but only {} witnesses are listed",
                self.key_log_witness_threshold,
                witnesses.len()
            );
        }
        Ok(Some(meridian_governance::keylog::KeyLogTrust {
            origin: self.key_log_origin.clone(),
            log_key,
            witnesses,
            witness_threshold: self.key_log_witness_threshold,
        }))
    }
}

impl Default for GovernanceSection {
    fn default() -> Self {
        Self {
            root: String::new(),
            registrations_pending_max: 1000,
            require_key_log: false,
            key_log_origin: String::new(),
            key_log_key: String::new(),
            key_log_witnesses: String::new(),
            key_log_witness_threshold: 1,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`
    pub node: NodeSection,
    /// `[http]`
    pub http: HttpSection,
    /// `[a2a]`
    pub a2a: A2aSection,
    /// `[ard]`
    pub ard: ArdSection,
    /// `[domains]`
    pub domains: DomainsSection,
    /// `[ingest]`
    pub ingest: IngestSection,
    /// `[governance]`
    pub governance: GovernanceSection,
    /// `[log]`
    pub log: LogSection,
    /// `[mesh]`
    pub mesh: MeshSection,
}

impl NodeConfig {
    /// Loads `file` (if given and present), overlays `MERIDIAN_*` variables from `env`, and validates.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Self> {
        let config: NodeConfig = meridian_hub::daemon::config::load_layered(
            file,
            env,
            &[
                "node",
                "http",
                "log",
                "governance",
                "a2a",
                "ard",
                "domains",
                "ingest",
                "mesh",
            ],
        )?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting, naming the first one at fault.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        meridian_registry::manifest::check_name("region", &self.node.region)
            .map_err(|problem| anyhow::anyhow!("config node.region: {problem}"))?;
        if self.node.removal_retention_days > 36_500 {
            bail!(
                "config node.removal_retention_days is {}; at most 36500 (0 keeps removals for ever)",
                self.node.removal_retention_days
            );
        }
        let hub = &self.mesh.hub;
        if !(hub.is_empty() || hub.starts_with("http://") || hub.starts_with("https://")) {
            bail!(
                "config mesh.hub: `{}` is not an http:// or https:// URL",
                self.mesh.hub
            );
        }
        if self.http.body_bytes_max == 0 {
            bail!("config http.body_bytes_max must be above 0");
        }
        if self.http.import_bytes_max < self.http.body_bytes_max {
            bail!("config http.import_bytes_max must be at least http.body_bytes_max");
        }
        if self.http.search_page_max == 0 || self.http.search_page_max > 10_000 {
            bail!("config http.search_page_max must be between 1 and 10000");
        }
        let http = &self.http;
        http.serve_limits()
            .validate()
            .map_err(|problem| anyhow::anyhow!(problem))?;
        if http.sse_subscribers_max == 0 || http.sync_bytes_per_client_per_second == 0 {
            bail!(
                "config http.sse_subscribers_max and http.sync_bytes_per_client_per_second must be above 0"
            );
        }
        self.ard.upstream_urls()?;
        self.domains.fetch()?;
        self.ingest.validate()?;
        if self.domains.recheck_secs == 0 {
            bail!("config domains.recheck_secs must be above 0");
        }
        if self.ard.federation_budget_ms == 0 || self.ard.federation_budget_ms > 60_000 {
            bail!("config ard.federation_budget_ms must be between 1 and 60000");
        }
        if self.ard.federation_rps == 0 || self.ard.federation_burst == 0 {
            bail!("config ard.federation_rps and ard.federation_burst must be above 0");
        }
        let a2a = &self.a2a;
        meridian_hub::relay::parse_cidrs(&a2a.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("config a2a.trusted_proxies: {e}"))?;
        if a2a.stream_timeout_secs == 0 || a2a.stream_idle_timeout_secs == 0 {
            bail!(
                "config a2a.stream_timeout_secs and a2a.stream_idle_timeout_secs must be above 0"
            );
        }
        if a2a.timeout_secs == 0 || a2a.connect_timeout_secs == 0 {
            bail!("config a2a.timeout_secs and a2a.connect_timeout_secs must be above 0");
        }
        if a2a.concurrency_max == 0
            || a2a.default_rps == 0
            || a2a.default_burst == 0
            || a2a.body_bytes_max == 0
        {
            bail!(
                "config a2a.concurrency_max, a2a.default_rps, a2a.default_burst and a2a.body_bytes_max must be above 0"
            );
        }
        let url = &self.http.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            bail!("config http.public_url must start with http:// or https://");
        }
        self.governance.key_log_trust()?;
        super::mesh::parse_addrs("mesh.listen", &self.mesh.listen)?;
        super::mesh::parse_addrs("mesh.bootstrap", &self.mesh.bootstrap)?;
        if self.mesh.request_timeout_secs == 0
            || self.mesh.publishers_max == 0
            || self.mesh.connections_max == 0
            || self.mesh.sync_memory_mib == 0
        {
            bail!(
                "config mesh.request_timeout_secs, mesh.publishers_max, mesh.connections_max and mesh.sync_memory_mib must be above 0"
            );
        }
        if self.mesh.sync_memory_mib > 1 << 30 {
            bail!(
                "config mesh.sync_memory_mib is {} MiB; at most {} (a petabyte)",
                self.mesh.sync_memory_mib,
                1u64 << 30
            );
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!(
                "config log.format is `{}`; use `text` or `json`",
                self.log.format
            );
        }
        Ok(())
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.http.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "config http.listen: `{}` is not an address like 127.0.0.1:7700",
                self.http.listen
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_env_layer_up() {
        let default_file: NodeConfig = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(default_file, NodeConfig::default());
        let env = vec![
            ("MERIDIAN_HTTP_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "MERIDIAN_HTTP_IMPORT_BYTES_MAX".to_owned(),
                "2000000".to_owned(),
            ),
            ("MERIDIAN_NODE_REGION".to_owned(), "eu-west".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = NodeConfig::load(None, &env).unwrap();
        assert_eq!(config.http.listen, "127.0.0.1:0");
        assert_eq!(config.http.import_bytes_max, 2_000_000);
        assert_eq!(config.node.region, "eu-west");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            NodeConfig::load(None, &env).unwrap_err().to_string()
        };
        assert!(err(&[("MERIDIAN_HTTP_LISTEN", "nowhere")]).contains("http.listen"));
        assert!(err(&[("MERIDIAN_NODE_REGION", "Not A Region")]).contains("node.region"));
        assert!(err(&[("MERIDIAN_LOG_FORMAT", "xml")]).contains("log.format"));
        assert!(err(&[("MERIDIAN_MESH_SYNC_MEMORY_MIB", "0")]).contains("mesh.sync_memory_mib"));
        assert!(
            err(&[("MERIDIAN_MESH_SYNC_MEMORY_MIB", "18446744073709551615")])
                .contains("mesh.sync_memory_mib")
        );
        assert!(err(&[("MERIDIAN_HTTP_SURPRISE", "1")]).contains("surprise"));
        // A mistyped variable is named as such, not blamed on a config file.
        let mistyped = err(&[("MERIDIAN_A2A_ALLOW_PRIVAT", "true")]);
        assert!(
            mistyped.contains("environment variable MERIDIAN_A2A_ALLOW_PRIVAT is not a setting"),
            "{mistyped}"
        );
        // A bad setting in the file names the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[http]\nsurprise = 1\n").unwrap();
        let in_file = NodeConfig::load(Some(&file), &[]).unwrap_err().to_string();
        assert!(
            in_file.contains(&file.display().to_string()) && in_file.contains("surprise"),
            "{in_file}"
        );
        let bad_value = err(&[("MERIDIAN_HTTP_BODY_BYTES_MAX", "many")]);
        assert!(
            bad_value.contains("MERIDIAN_HTTP_BODY_BYTES_MAX"),
            "{bad_value}"
        );
        assert!(err(&[("MERIDIAN_HTTP_BODY_BYTES_MAX", "many")]).contains("body_bytes_max"));
    }
}
