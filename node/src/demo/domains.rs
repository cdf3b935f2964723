//! The demo's organisations bound to their domains the way real ones are: each serves its
//! signed proof over HTTPS at `https://ORG.example/.well-known/meridian-org.json`, here from one
//! loopback site with a certificate of the demo's own certificate authority; the demo's admin
//! fetches each proof through the resolver override and that CA (as `meridian org
//! verify-domain --resolve --ca-cert` does), checks it and signs the `org.domain` attestation.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use meridian_governance::attestation::Attestation;
use meridian_governance::document::KeySet;
use meridian_governance::domain::{DOMAIN_PROOF_PATH, DomainProof};
use meridian_registry::keys::Keypair;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::daemon::domains::{DomainFetch, fetch_proof};

/// How long the demo's domain proofs hold, in seconds.
const PROOF_VALID_SECS: i64 = 30 * 86_400;

/// The domain the demo binds `org` to.
pub fn demo_domain(org: &str) -> String {
    format!("{org}.example")
}

/// Serves every organisation's proof, checks it over HTTPS as an admin would, and returns the
/// signed `org.domain` attestations.
pub async fn bind(
    org_keys: &BTreeMap<&'static str, Keypair>,
    attest_key: &Keypair,
    now: i64,
) -> Result<Vec<Attestation>> {
    let mut proofs = BTreeMap::new();
    for (org, key) in org_keys {
        let proof = DomainProof::create(
            org,
            &demo_domain(org),
            &[key.public()],
            &[key],
            now,
            now + PROOF_VALID_SECS,
        )
        .map_err(|e| anyhow!("{org}'s domain proof: {e}"))?;
        proofs.insert(demo_domain(org), proof.to_json());
    }
    let domains: Vec<String> = proofs.keys().cloned().collect();
    let (address, ca_pem, site) = serve(&domains, proofs).await?;
    let fetch = DomainFetch {
        resolve: domains.iter().map(|d| (d.clone(), address)).collect(),
        extra_roots_pem: vec![ca_pem.into_bytes()],
        timeout: std::time::Duration::from_secs(10),
        egress: None,
    };
    let mut attestations = Vec::new();
    for (org, key) in org_keys {
        let domain = demo_domain(org);
        let bytes = fetch_proof(&domain, &fetch)
            .await
            .with_context(|| format!("fetching {domain}'s proof"))?;
        let proof = DomainProof::from_json(&bytes).map_err(|e| anyhow!("{domain}: {e}"))?;
        let current = KeySet {
            keys: vec![key.public()],
            threshold: 1,
        };
        proof
            .verify(&domain, org, &current, now)
            .map_err(|e| anyhow!("{domain}: {e}"))?;
        let mut attestation = proof.attestation(now)?;
        attestation.sign(attest_key);
        attestations.push(attestation);
    }
    site.abort();
    Ok(attestations)
}

/// One HTTPS site on 127.0.0.1 for all `domains`, answering `GET DOMAIN_PROOF_PATH` with the
/// proof of the domain the request's Host names. Returns its address, its CA (PEM) and its
/// task.
async fn serve(
    domains: &[String],
    proofs: BTreeMap<String, String>,
) -> Result<(std::net::SocketAddr, String, tokio::task::JoinHandle<()>)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Meridian demo CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf =
        rcgen::CertificateParams::new(domains.to_vec())?.signed_by(&leaf_key, &ca, &ca_key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let proofs = Arc::new(proofs);
    let site = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, proofs) = (acceptor.clone(), proofs.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = answer(&mut tls, &proofs).await;
                }
            });
        }
    });
    Ok((address, ca.pem(), site))
}

/// Reads one request head and answers it.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    proofs: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let host = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("host").then(|| value.trim())
        })
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("");
    let (status, body) = match proofs.get(host) {
        Some(proof) if path == DOMAIN_PROOF_PATH => ("200 OK", proof.as_str()),
        _ => ("404 Not Found", "not found"),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
