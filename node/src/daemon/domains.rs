//! Fetching an organisation's domain proof (`https://<domain>/.well-known/meridian-org.json`,
//! [`meridian_governance::domain`]) over HTTPS: no redirects, no plain HTTP, at most
//! [`DOMAIN_PROOF_BYTES_MAX`] bytes, within a timeout.
//!
//! Two settings serve operators and tests alike, like curl's `--resolve` and `--cacert`: a
//! resolver override (`domain=ip:port`, so a domain reaches a chosen address, loopback in
//! tests) and extra trusted root certificates (PEM), merged with the platform's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use meridian_governance::domain::{DOMAIN_PROOF_BYTES_MAX, DOMAIN_PROOF_PATH, check_domain};

use super::http::{ApiError, NodeState};
use super::openapi::ErrorBody;

/// How long a proof fetch may take by default.
pub const DOMAIN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach domains.
#[derive(Debug, Clone, Default)]
pub struct DomainFetch {
    /// Domains resolved to a fixed address instead of through DNS.
    pub resolve: Vec<(String, SocketAddr)>,
    /// Extra trusted root certificates, PEM (each may hold several).
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// How long the whole fetch may take ([`DOMAIN_FETCH_TIMEOUT`] when zero).
    pub timeout: Duration,
    /// When set, names resolved through DNS (not the overrides) must pass this guard: a node
    /// asked over its API to check a domain does not reach private addresses.
    pub egress: Option<meridian_hub::relay::EgressGuard>,
}

/// Why a proof could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The domain is not a name Meridian binds.
    #[error("{0}")]
    Domain(meridian_governance::domain::DomainError),
    /// An extra root is not a PEM certificate.
    #[error("extra root certificate: {0}")]
    BadRoot(String),
    /// The HTTPS client could not be built.
    #[error("building the HTTPS client: {0}")]
    Client(String),
    /// The domain did not answer (DNS, connection, TLS, timeout).
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL fetched.
        url: String,
        /// What happened.
        reason: String,
    },
    /// It answered with something other than 200 (a redirect is not followed).
    #[error("{url}: HTTP {status} (the proof must be served at this URL itself, no redirect)")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer is larger than a proof can be.
    #[error("{url}: {reason}")]
    Body {
        /// The URL fetched.
        url: String,
        /// What happened.
        reason: String,
    },
}

/// Parses a resolver override `domain=ip:port` (as `--resolve` takes it).
pub fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let (domain, address) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not DOMAIN=IP:PORT"))?;
    let address: SocketAddr = address
        .parse()
        .map_err(|e| format!("`{address}` in `{text}`: {e} (expected IP:PORT)"))?;
    check_domain(domain).map_err(|e| e.to_string())?;
    Ok((domain.to_owned(), address))
}

/// The URL of `domain`'s proof.
pub fn proof_url(domain: &str) -> String {
    format!("https://{domain}{DOMAIN_PROOF_PATH}")
}

impl DomainFetch {
    /// An HTTPS-only client with these settings: no redirect, no proxy, the resolver
    /// overrides, the extra roots, the egress guard, the timeout.
    pub fn client(&self) -> Result<reqwest::Client, FetchError> {
        let timeout = if self.timeout.is_zero() {
            DOMAIN_FETCH_TIMEOUT
        } else {
            self.timeout
        };
        let mut roots = Vec::new();
        for pem in &self.extra_roots_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| FetchError::BadRoot(e.to_string()))?;
            if certificates.is_empty() {
                return Err(FetchError::BadRoot("no certificate in the PEM file".into()));
            }
            roots.extend(certificates);
        }
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .tls_certs_merge(roots);
        if let Some(guard) = &self.egress {
            builder = builder.dns_resolver(guard.resolver());
        }
        for (name, address) in &self.resolve {
            builder = builder.resolve(name, *address);
        }
        builder
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))
    }
}

/// Fetches `domain`'s proof file (its bytes; checking them is the caller's job).
pub async fn fetch_proof(domain: &str, options: &DomainFetch) -> Result<Vec<u8>, FetchError> {
    check_domain(domain).map_err(FetchError::Domain)?;
    let client = options.client()?;
    let url = proof_url(domain);
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| FetchError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status { url, status });
    }
    meridian_hub::relay::read_limited(response, DOMAIN_PROOF_BYTES_MAX)
        .await
        .map_err(|e| FetchError::Body {
            url,
            reason: e.to_string(),
        })
}

/// An error with its causes, so "error sending request" says why (a certificate, a refusal).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolver_override_names_a_domain_and_an_address() {
        assert_eq!(
            parse_resolve("acme.example=127.0.0.1:8443"),
            Ok(("acme.example".to_owned(), "127.0.0.1:8443".parse().unwrap()))
        );
        for bad in [
            "acme.example",
            "acme.example=127.0.0.1",
            "Acme.example=127.0.0.1:1",
            "acme.example=host:1",
        ] {
            assert!(parse_resolve(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_bad_domain_or_root_is_refused_before_any_connection() {
        let options = DomainFetch::default();
        assert!(matches!(
            fetch_proof("localhost", &options).await,
            Err(FetchError::Domain(_))
        ));
        let options = DomainFetch {
            extra_roots_pem: vec![b"not a certificate".to_vec()],
            ..DomainFetch::default()
        };
        assert!(matches!(
            fetch_proof("acme.example", &options).await,
            Err(FetchError::BadRoot(_))
        ));
    }
}

/// What `POST /api/v1/names/{org}/domain` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindDomainRequest {
    /// The domain whose proof names the organisation.
    pub domain: String,
}

/// Fetches `domain`'s proof and checks it for `org` on this node (governance off): the
/// outcome of a bind or a re-check.
async fn fetch_and_bind(
    state: &NodeState,
    org: &str,
    domain: &str,
) -> Result<super::names::DomainBinding, ApiError> {
    use meridian_governance::domain::DomainProof;
    let bytes = fetch_proof(domain, &state.domain_fetch)
        .await
        .map_err(|e| match e {
            FetchError::Domain(why) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_domain", why.to_string())
            }
            other => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "domain_unreachable",
                other.to_string(),
            ),
        })?;
    let proof = DomainProof::from_json(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_domain_proof",
            format!("{}: {e}", proof_url(domain)),
        )
    })?;
    state
        .names
        .bind_domain(org, domain, &proof, (state.clock)())
        .map_err(|e| match e {
            super::names::DomainBindError::OtherKeys { .. } => {
                ApiError::new(StatusCode::CONFLICT, "name_bound", e.to_string())
            }
            super::names::DomainBindError::Proof(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_domain_proof",
                format!("{}: {why}", proof_url(domain)),
            ),
            super::names::DomainBindError::Store(error) => ApiError::internal(error),
        })
}

/// Binds an organisation to a domain on this node (governance off): the node fetches
/// `https://DOMAIN/.well-known/meridian-org.json` itself and checks that it names the
/// organisation and exactly the keys its name is bound to here, signed by them (a free name is
/// bound to the proof's keys, all of which must sign). The organisation's agents then have ARD
/// identifiers `urn:air:DOMAIN:ORG:AGENT`; the node checks the proof again every
/// `domains.recheck_secs` and before it expires.
#[utoipa::path(post, path = "/api/v1/names/{org}/domain", tag = "registry", security(("orgToken" = []), ("adminToken" = [])), params(("org" = String, Path, description = "organisation id")), request_body(content = String, content_type = "application/json", description = "{\"domain\": \"acme.example\"}"), responses((status = 200, description = "bound: {org, domain, keys, expires_at, checked_at}", content_type = "application/json"), (status = 400, description = "not a domain, or bad JSON", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "another organisation's token", body = ErrorBody), (status = 409, description = "governance is on (an admin verifies domains), or the proof lists other keys than the name is bound to (`name_bound`: rotate first)", body = ErrorBody), (status = 422, description = "the proof does not hold: wrong organisation or domain, expired, bad signatures (`bad_domain_proof`)", body = ErrorBody), (status = 502, description = "the domain did not serve a proof: unreachable, a private address, a redirect, not 200 (`domain_unreachable`)", body = ErrorBody)))]
pub async fn bind_domain(
    State(state): State<Arc<NodeState>>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if super::governance::require_admin(&state, &headers).is_err() {
        let token_org = super::publish::authorise(&state, &headers)?;
        if token_org != org {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("your token speaks for `{token_org}`, not for `{org}`"),
            ));
        }
    }
    if state.governance.enabled() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "governance_on",
            "with governance on an admin checks domains (`meridian org verify-domain`) and the org.domain attestation binds them",
        ));
    }
    let request: BindDomainRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let binding = fetch_and_bind(&state, &org, &request.domain).await?;
    state
        .metrics
        .count("meridian_domain_checks_total{outcome=\"bound\"}", 1);
    state.events.emit(
        "name.domain",
        serde_json::json!({ "org": org, "domain": binding.domain, "expires_at": binding.expires_at }),
    );
    tracing::info!(%org, domain = %binding.domain, expires_at = binding.expires_at, "organisation bound to its domain");
    Ok(Json(serde_json::json!({
        "org": org,
        "domain": binding.domain,
        "keys": binding.keys,
        "expires_at": binding.expires_at,
        "checked_at": binding.checked_at,
    })))
}

/// With governance on: fetches the proof of every organisation's attested domain and checks it
/// against the organisation's current key set. A proof that contradicts the attestation (the
/// domain now names another organisation or other keys, or its signatures fail) suspends the
/// domain on this node until a check passes again; a domain that cannot be reached keeps it
/// (the attestation's own expiry bounds it). Counted in `meridian_domain_checks_total`.
async fn recheck_attested(state: &Arc<NodeState>) {
    use meridian_governance::domain::DomainProof;
    let now = (state.clock)();
    let recheck = i64::try_from(state.config.domains.recheck_secs).unwrap_or(i64::MAX);
    let due = attested_due(state, now, recheck);
    for (org, domain) in due {
        let verdict = match fetch_proof(&domain, &state.domain_fetch).await {
            Err(error) => Err(Err(error.to_string())),
            Ok(bytes) => {
                let keys = state.governance.org_key_set(&org, now);
                match (DomainProof::from_json(&bytes), keys) {
                    (Ok(proof), Some(keys)) => proof
                        .verify(&domain, &org, &keys, now)
                        .map_err(|e| Ok(e.to_string())),
                    (Err(e), _) => Err(Ok(e.to_string())),
                    (_, None) => Err(Err("the organisation is not verified".to_owned())),
                }
            }
        };
        let outcome = settle_attested(state, &org, &domain, verdict);
        state.metrics.count(
            &format!("meridian_domain_checks_total{{outcome=\"{outcome}\"}}"),
            1,
        );
    }
}

/// The organisations with an attested domain whose last check is `recheck` seconds old (or
/// that were never checked), marking them checked now.
fn attested_due(state: &NodeState, now: i64, recheck: i64) -> Vec<(String, String)> {
    let orgs: Vec<String> = match state.index.read() {
        Ok(index) => index.orgs().map(str::to_owned).collect(),
        Err(_) => return Vec::new(),
    };
    let Ok(mut checked) = state.domains_checked.lock() else {
        return Vec::new();
    };
    let due: Vec<(String, String)> = orgs
        .into_iter()
        .filter_map(|org| Some((org.clone(), state.governance.org_domain(&org, now)?)))
        .filter(|(org, _)| checked.get(org).is_none_or(|at| now - *at >= recheck))
        .collect();
    for (org, _) in &due {
        checked.insert(org.clone(), now);
    }
    due
}

/// Records a check's verdict: `Ok` renews, `Err(Ok(why))` (the proof contradicts) suspends,
/// `Err(Err(why))` (nothing to judge) leaves the domain as it was. Returns the outcome.
fn settle_attested(
    state: &NodeState,
    org: &str,
    domain: &str,
    verdict: Result<(), Result<String, String>>,
) -> &'static str {
    let Ok(mut suspended) = state.suspended_domains.lock() else {
        return "failed";
    };
    match verdict {
        Ok(()) => {
            suspended.remove(org);
            "renewed"
        }
        Err(Ok(why)) => {
            tracing::warn!(%org, %domain, %why, "the domain's proof contradicts its org.domain attestation: suspended on this node");
            suspended.insert(org.to_owned(), why);
            "contradicted"
        }
        Err(Err(why)) => {
            tracing::warn!(%org, %domain, %why, "domain check failed; the attestation stands");
            "failed"
        }
    }
}

/// Checks again every domain binding that is due (governance off), renewing it from the
/// domain's current proof; a binding whose check fails lapses when its proof expires.
/// Counted in `meridian_domain_checks_total{outcome}`.
pub async fn recheck_domains(state: Arc<NodeState>, poll: Duration) {
    let mut ticks = tokio::time::interval(poll);
    loop {
        ticks.tick().await;
        if state.governance.enabled() {
            recheck_attested(&state).await;
            continue;
        }
        let now = (state.clock)();
        let recheck = i64::try_from(state.config.domains.recheck_secs).unwrap_or(i64::MAX);
        for (org, domain) in state.names.domains_due(now, recheck) {
            let outcome = match fetch_and_bind(&state, &org, &domain).await {
                Ok(_) => "renewed",
                Err(error) => {
                    tracing::warn!(%org, %domain, error = %error.message(), "domain check failed");
                    match state.names.lapse_domain(&org, (state.clock)()) {
                        Ok(true) => {
                            tracing::warn!(%org, %domain, "domain binding lapsed: its proof expired");
                            "lapsed"
                        }
                        _ => "failed",
                    }
                }
            };
            state.metrics.count(
                &format!("meridian_domain_checks_total{{outcome=\"{outcome}\"}}"),
                1,
            );
        }
    }
}
