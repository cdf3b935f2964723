//! Fetching an organisation's domain proof (`https://<domain>/.well-known/meridian-org.json`,
//! [`meridian_governance::domain`]) over HTTPS: no redirects, no plain HTTP, at most
//! [`DOMAIN_PROOF_BYTES_MAX`] bytes, within a timeout.
//!
//! Two settings serve operators and tests alike, like curl's `--resolve` and `--cacert`: a
//! resolver override (`domain=ip:port`, so a domain reaches a chosen address, loopback in
//! tests) and extra trusted root certificates (PEM), merged with the platform's.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_governance::domain::{DOMAIN_PROOF_BYTES_MAX, DOMAIN_PROOF_PATH, check_domain};

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

/// Fetches `domain`'s proof file (its bytes; checking them is the caller's job).
pub async fn fetch_proof(domain: &str, options: &DomainFetch) -> Result<Vec<u8>, FetchError> {
    check_domain(domain).map_err(FetchError::Domain)?;
    let timeout = if options.timeout.is_zero() {
        DOMAIN_FETCH_TIMEOUT
    } else {
        options.timeout
    };
    let mut roots = Vec::new();
    for pem in &options.extra_roots_pem {
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
    for (name, address) in &options.resolve {
        builder = builder.resolve(name, *address);
    }
    let client = builder
        .build()
        .map_err(|e| FetchError::Client(e.to_string()))?;
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
fn error_chain(error: &dyn std::error::Error) -> String {
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
