//! Policy bundles: allow and deny lists, rate-limit tiers and the hub directory.
//!
//! A bundle is versioned, expires, and counts only when a threshold of the `policy` role signed
//! it. [`PolicyState`] holds the newest verified bundle: newer versions replace it, older ones
//! are refused (rollback), and a different bundle with the same version is refused too.

use cid::Cid;
use meridian_registry::cbor::{self, MapReader, Value};
use meridian_registry::keys::{Keypair, PublicKey};

use crate::document::{DocumentError, SignedDocument, text_array, text_list};
use crate::root::{RoleName, TrustedRoot};

/// The `$type` of a policy bundle.
pub const POLICY_TYPE: &str = "meridian.policy.v1";

/// A rate-limit tier: requests per second and burst, for an organisation or a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTier {
    /// `org:<id>` or `region:<name>`.
    pub scope: String,
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// A region's hub in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEntry {
    /// The region it serves.
    pub region: String,
    /// Its QUIC trunk (`host:port`), where other regions' hubs reach it.
    pub address: String,
    /// The key its certificates are pinned to.
    pub key: PublicKey,
    /// Its HTTP API for the region's nodes (`http://host:port` or `https://...`); when absent,
    /// nodes use `http://` + `address` (a hub serving both on one port).
    pub http: Option<String>,
}

impl HubEntry {
    /// The URL the region's nodes reach the hub at.
    pub fn http_url(&self) -> String {
        self.http
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.address))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// What a policy bundle says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyBody {
    /// Grows with every new bundle.
    pub version: u64,
    /// Unix seconds it was issued.
    pub issued_at: i64,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// When not empty, only these organisations are accepted.
    pub allow_orgs: Vec<String>,
    /// Organisations refused.
    pub deny_orgs: Vec<String>,
    /// Agent keys (`{org}/{agent}`) refused.
    pub deny_agents: Vec<String>,
    /// Publisher node keys (did:key) refused.
    pub deny_node_keys: Vec<String>,
    /// Publisher node keys (did:key) whose heads hubs admit (besides nodes with a
    /// `node.verified` attestation). Absent from the encoding when empty, so bundles signed
    /// before the field existed keep their bytes and signatures.
    pub allow_node_keys: Vec<String>,
    /// Rate-limit tiers.
    pub rate_limits: Vec<RateTier>,
    /// The hub directory.
    pub hubs: Vec<HubEntry>,
    /// The federation's ARD registries (nodes' `…/ard/v1` bases), which a node's ARD search
    /// names in `referrals` mode. Absent from the encoding when empty, so bundles signed before
    /// the field existed keep their bytes and signatures.
    pub registries: Vec<String>,
}

impl PolicyBody {
    /// Whether the policy keeps `org` out: it is denied, or an allow list leaves it out.
    pub fn denies_org(&self, org: &str) -> bool {
        let allowed = self.allow_orgs.is_empty() || self.allow_orgs.iter().any(|a| a == org);
        !allowed || self.deny_orgs.iter().any(|d| d == org)
    }

    fn to_value(&self) -> Value {
        let tiers = self
            .rate_limits
            .iter()
            .map(|t| {
                cbor::map([
                    ("scope", Value::Text(t.scope.clone())),
                    ("rps", Value::Integer(i128::from(t.requests_per_second))),
                    ("burst", Value::Integer(i128::from(t.burst))),
                ])
            })
            .collect();
        let hubs = self
            .hubs
            .iter()
            .map(|h| {
                let mut entry = cbor::map([
                    ("region", Value::Text(h.region.clone())),
                    ("address", Value::Text(h.address.clone())),
                    ("key", Value::Text(h.key.to_did())),
                ]);
                // Absent, not null, when unset: bundles signed before the field existed keep
                // their encoding and their signatures.
                if let (Value::Map(map), Some(http)) = (&mut entry, &h.http) {
                    map.insert("http".into(), Value::Text(http.clone()));
                }
                entry
            })
            .collect();
        let mut body = cbor::map([
            ("version", Value::Integer(i128::from(self.version))),
            ("issued_at", Value::Integer(i128::from(self.issued_at))),
            ("expires_at", Value::Integer(i128::from(self.expires_at))),
            ("allow_orgs", text_array(&self.allow_orgs)),
            ("deny_orgs", text_array(&self.deny_orgs)),
            ("deny_agents", text_array(&self.deny_agents)),
            ("deny_node_keys", text_array(&self.deny_node_keys)),
            ("rate_limits", Value::Array(tiers)),
            ("hubs", Value::Array(hubs)),
        ]);
        if let (Value::Map(map), false) = (&mut body, self.allow_node_keys.is_empty()) {
            map.insert("allow_node_keys".into(), text_array(&self.allow_node_keys));
        }
        if let (Value::Map(map), false) = (&mut body, self.registries.is_empty()) {
            map.insert("registries".into(), text_array(&self.registries));
        }
        body
    }

    fn from_value(value: Value) -> Result<Self, DocumentError> {
        let mut reader = MapReader::new(value)?;
        let mut body = PolicyBody {
            version: reader.u64("version")?,
            issued_at: reader.i64("issued_at")?,
            expires_at: reader.i64("expires_at")?,
            allow_orgs: text_list(reader.take("allow_orgs")?, "allow_orgs")?,
            deny_orgs: text_list(reader.take("deny_orgs")?, "deny_orgs")?,
            deny_agents: text_list(reader.take("deny_agents")?, "deny_agents")?,
            deny_node_keys: text_list(reader.take("deny_node_keys")?, "deny_node_keys")?,
            ..PolicyBody::default()
        };
        if let Some(list) = reader.take_optional("allow_node_keys") {
            body.allow_node_keys = text_list(list, "allow_node_keys")?;
        }
        if let Some(list) = reader.take_optional("registries") {
            body.registries = text_list(list, "registries")?;
        }
        for tier in reader.array("rate_limits")? {
            let mut tier = MapReader::new(tier)?;
            let to_u32 = |n: u64, field: &str| {
                u32::try_from(n).map_err(|_| DocumentError::Invalid(format!("`{field}` too large")))
            };
            body.rate_limits.push(RateTier {
                scope: tier.text("scope")?,
                requests_per_second: to_u32(tier.u64("rps")?, "rps")?,
                burst: to_u32(tier.u64("burst")?, "burst")?,
            });
            tier.finish()?;
        }
        for hub in reader.array("hubs")? {
            let mut hub = MapReader::new(hub)?;
            body.hubs.push(HubEntry {
                region: hub.text("region")?,
                address: hub.text("address")?,
                key: PublicKey::from_did(&hub.text("key")?)
                    .map_err(|e| DocumentError::Invalid(format!("hub key: {e}")))?,
                http: match hub.take_optional("http") {
                    None => None,
                    Some(Value::Text(url)) => Some(url),
                    Some(_) => {
                        return Err(DocumentError::Invalid("hub `http` is not text".into()));
                    }
                },
            });
            hub.finish()?;
        }
        reader.finish()?;
        body.validate()?;
        Ok(body)
    }

    /// Checks the bundle's own rules, reporting every problem found.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let mut problems = Vec::new();
        if self.version == 0 {
            problems.push("`version` starts at 1".to_owned());
        }
        if self.expires_at <= self.issued_at {
            problems.push("`expires_at` is not after `issued_at`".to_owned());
        }
        for (field, list) in [
            ("deny_node_keys", &self.deny_node_keys),
            ("allow_node_keys", &self.allow_node_keys),
        ] {
            for did in list {
                if PublicKey::from_did(did).is_err() {
                    problems.push(format!("`{field}`: `{did}` is not a did:key"));
                }
            }
        }
        for registry in &self.registries {
            if !(registry.starts_with("https://") || registry.starts_with("http://"))
                || registry.len() > 2048
            {
                problems.push(format!(
                    "`registries`: `{registry}` is not an http(s) URL of an ARD registry's base"
                ));
            }
        }
        for tier in &self.rate_limits {
            if !(tier.scope.starts_with("org:") || tier.scope.starts_with("region:")) {
                problems.push(format!(
                    "rate limit scope `{}` is neither org:<id> nor region:<name>",
                    tier.scope
                ));
            }
            if tier.requests_per_second == 0 {
                problems.push(format!(
                    "rate limit `{}` allows 0 requests per second",
                    tier.scope
                ));
            }
        }
        for (index, hub) in self.hubs.iter().enumerate() {
            if self.hubs[..index].iter().any(|h| h.region == hub.region) {
                problems.push(format!("region `{}` has two hubs", hub.region));
            }
            if let Some(http) = &hub.http
                && !(http.starts_with("http://") || http.starts_with("https://"))
            {
                problems.push(format!(
                    "hub of region `{}`: `http` `{http}` is not an http:// or https:// URL",
                    hub.region
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DocumentError::Invalid(problems.join("; ")))
        }
    }
}

/// A signed policy bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBundle {
    /// What it says.
    pub body: PolicyBody,
    /// The signed document.
    pub document: SignedDocument,
}

/// Why a policy bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Bad document or too few signatures.
    #[error("policy version {version}: {error}")]
    Document {
        /// The version offered.
        version: u64,
        /// Why.
        error: DocumentError,
    },
    /// Expired.
    #[error("policy version {version} expired at {expires_at} (now {now})")]
    Expired {
        /// The version.
        version: u64,
        /// Its expiry.
        expires_at: i64,
        /// The time checked.
        now: i64,
    },
    /// Older than the policy in force.
    #[error("policy rollback: version {offered} offered, version {current} in force")]
    Rollback {
        /// The version in force.
        current: u64,
        /// The version offered.
        offered: u64,
    },
    /// Same version as the policy in force but different content.
    #[error("two different policy bundles claim version {version}")]
    Conflict {
        /// The version.
        version: u64,
    },
}

impl PolicyBundle {
    /// An unsigned bundle with a validated body.
    pub fn new(body: PolicyBody) -> Result<Self, DocumentError> {
        body.validate()?;
        let document = SignedDocument::new(POLICY_TYPE, body.to_value());
        Ok(Self { body, document })
    }

    /// Adds a signature by a policy key.
    pub fn sign(&mut self, key: &Keypair) {
        self.document.sign(key);
    }

    /// Decodes a bundle block; [`PolicyBundle::verify`] checks it.
    pub fn decode(block: &[u8]) -> Result<Self, DocumentError> {
        let document = SignedDocument::decode(block, POLICY_TYPE)?;
        let body = PolicyBody::from_value(document.body.clone())?;
        Ok(Self { body, document })
    }

    /// The block.
    pub fn to_block(&self) -> Vec<u8> {
        self.document.to_block()
    }

    /// The id.
    pub fn id(&self) -> Cid {
        self.document.id()
    }

    /// Checks the policy role's threshold under `root` and expiry at `now`.
    pub fn verify(&self, root: &TrustedRoot, now: i64) -> Result<(), PolicyError> {
        let version = self.body.version;
        self.document
            .verify_threshold(root.role(RoleName::Policy), "policy role")
            .map_err(|error| PolicyError::Document { version, error })?;
        if self.body.expires_at <= now {
            return Err(PolicyError::Expired {
                version,
                expires_at: self.body.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// The rate tier for an organisation, if the bundle sets one.
    pub fn org_tier(&self, org: &str) -> Option<&RateTier> {
        let scope = format!("org:{org}");
        self.body.rate_limits.iter().find(|t| t.scope == scope)
    }

    /// The hub of `region`, if the directory lists one.
    pub fn hub(&self, region: &str) -> Option<&HubEntry> {
        self.body.hubs.iter().find(|h| h.region == region)
    }
}

/// The policy in force: the newest bundle that verified.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    current: Option<PolicyBundle>,
}

impl PolicyState {
    /// No policy yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `bundle` and makes it the policy in force if it is newer. Offering the bundle in
    /// force again is accepted and changes nothing.
    pub fn offer(
        &mut self,
        bundle: PolicyBundle,
        root: &TrustedRoot,
        now: i64,
    ) -> Result<bool, PolicyError> {
        bundle.verify(root, now)?;
        if let Some(current) = &self.current {
            let (current_version, offered) = (current.body.version, bundle.body.version);
            if offered < current_version {
                return Err(PolicyError::Rollback {
                    current: current_version,
                    offered,
                });
            }
            if offered == current_version {
                if current.id() == bundle.id() {
                    return Ok(false);
                }
                return Err(PolicyError::Conflict { version: offered });
            }
        }
        self.current = Some(bundle);
        Ok(true)
    }

    /// The policy in force.
    pub fn current(&self) -> Option<&PolicyBundle> {
        self.current.as_ref()
    }
}
