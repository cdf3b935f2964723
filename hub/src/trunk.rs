//! The trunk between hubs: one persistent QUIC connection (quinn) to each other region's hub,
//! with every exchange a bidirectional stream on it, so a cross-region call costs one round trip
//! on a warm connection.
//!
//! **Identity.** Each hub presents a self-signed certificate made from its ed25519 hub key, and
//! both ends pin: a hub dialling region R accepts only a certificate whose public key is R's key
//! in the signed hub directory, and a hub accepting a connection accepts only clients whose
//! certificate key is in that directory (mutual TLS 1.3). The TLS handshake signature proves the
//! peer holds the key; nothing else about the certificate (names, dates, issuer) is trusted.
//!
//! **Frames.** One request per stream: `kind:u8 len:u32 payload`, then the answer. A sync
//! request carries the sync wire format (`crate::wire`); gossip carries a wire gossip message;
//! a relay carries a JSON head and the body, and its answer is a JSON head followed by the
//! agent's body streamed until the stream ends (SSE passes through unbuffered).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use meridian_registry::keys::{Keypair, PublicKey};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use serde::{Deserialize, Serialize};

/// The ALPN protocol name of the trunk.
pub const TRUNK_ALPN: &[u8] = b"meridian-trunk/1";
/// Largest answer frame read from the trunk (a sync answer is at most the wire format's limit).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest request frame a hub reads from another (a sync request names at most a few thousand
/// CIDs; a relayed A2A body is bounded by the sending hub's `relay.body_bytes_max`).
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The name every hub certificate carries (pinning is by key, not by name).
pub const CERT_NAME: &str = "meridian-hub";
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a trunk exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrunkError {
    /// No hub is known for the region.
    #[error("no hub known for region `{0}`")]
    UnknownRegion(String),
    /// A recent connection attempt failed; the next is not due yet.
    #[error("hub of region `{region}` unreachable; retrying in {wait:?}")]
    Backoff {
        /// The region.
        region: String,
        /// Time until the next attempt.
        wait: Duration,
    },
    /// Connecting failed.
    #[error("connecting to the hub of `{region}`: {why}")]
    Connect {
        /// The region.
        region: String,
        /// What went wrong.
        why: String,
    },
    /// The stream failed or the peer answered nonsense.
    #[error("trunk stream: {0}")]
    Stream(String),
    /// TLS or certificate setup failed.
    #[error("trunk TLS: {0}")]
    Tls(String),
}

fn stream_error(error: impl std::fmt::Display) -> TrunkError {
    TrunkError::Stream(error.to_string())
}

// ---------------------------------------------------------------- TLS

/// The PKCS#8 (v1) encoding of an ed25519 secret key.
fn pkcs8(key: &Keypair) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&key.secret_bytes());
    der
}

/// A hub's self-signed certificate and its private key, made from the hub key.
pub fn certificate(
    key: &Keypair,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TrunkError> {
    let der = pkcs8(key);
    let pkcs8 = PrivatePkcs8KeyDer::from(der.clone());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| TrunkError::Tls(format!("hub key: {e}")))?;
    let params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    let cert = params
        .self_signed(&pair)
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
    ))
}

/// Why a certificate names no hub key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Not a readable X.509 certificate.
    #[error("unreadable certificate: {0}")]
    Unreadable(String),
    /// The key is not ed25519.
    #[error("the certificate key is not ed25519")]
    NotEd25519,
    /// The ed25519 key is not 32 bytes, or not a valid point.
    #[error("the certificate's ed25519 key is invalid: {0}")]
    Key(String),
}

/// The ed25519 key a certificate carries, or why it carries none.
pub fn certificate_key(cert: &[u8]) -> Result<PublicKey, CertificateError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| CertificateError::Unreadable(e.to_string()))?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return Err(CertificateError::NotEd25519);
    }
    let raw: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CertificateError::Key("not 32 bytes".into()))?;
    PublicKey::from_bytes(&raw).map_err(|e| CertificateError::Key(e.to_string()))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

fn bad_certificate(why: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(why.to_string())),
    )))
}

/// The trunk is TLS 1.3 only.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Accepts exactly one server key.
#[derive(Debug)]
struct PinnedServer {
    expected: PublicKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = certificate_key(end_entity).map_err(bad_certificate)?;
        if key != self.expected {
            return Err(bad_certificate(format!(
                "hub presented key {}, the hub directory pins {}",
                key.to_did(),
                self.expected.to_did()
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

/// The hub keys allowed to connect: those of the signed hub directory, updated in place when
/// a new policy arrives.
pub type AllowedKeys = Arc<RwLock<BTreeSet<[u8; 32]>>>;

/// Accepts clients whose key is in the directory.
#[derive(Debug)]
struct DirectoryClients {
    allowed: AllowedKeys,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DirectoryClients {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = certificate_key(end_entity).map_err(bad_certificate)?;
        let allowed = self
            .allowed
            .read()
            .map_err(|_| bad_certificate("allowed keys lock poisoned"))?;
        if !allowed.contains(key.as_bytes()) {
            return Err(bad_certificate(format!(
                "{} is not a hub in the signed hub directory",
                key.to_did()
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        transport.max_idle_timeout(Some(idle));
    }
    Arc::new(transport)
}

/// The server side: this hub's certificate, clients pinned to `allowed`.
pub fn server_config(
    key: &Keypair,
    allowed: AllowedKeys,
) -> Result<quinn::ServerConfig, TrunkError> {
    let (cert, private) = certificate(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrunkError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(DirectoryClients {
            allowed,
            algorithms: algorithms(),
        }))
        .with_single_cert(vec![cert], private)
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![TRUNK_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The client side toward one hub: this hub's certificate, the server pinned to `expected`.
pub fn client_config(
    key: &Keypair,
    expected: PublicKey,
) -> Result<quinn::ClientConfig, TrunkError> {
    let (cert, private) = certificate(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrunkError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            expected,
            algorithms: algorithms(),
        }))
        .with_client_auth_cert(vec![cert], private)
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![TRUNK_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TrunkError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The hub key a connection's peer proved it holds.
pub fn peer_key(connection: &quinn::Connection) -> Option<PublicKey> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certificate_key(certs.first()?).ok()
}

// ---------------------------------------------------------------- frames

const KIND_SYNC: u8 = 1;
const KIND_GOSSIP: u8 = 2;
const KIND_RELAY: u8 = 3;

/// What a relayed A2A call asks of the hub of the agent's region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHead {
    /// The agent's organisation.
    pub org: String,
    /// The agent's name.
    pub agent: String,
    /// The did:key of the node whose snapshot lists the agent.
    pub publisher: String,
    /// The calling organisation, for the rate tier (as the caller's node vouched).
    pub caller_org: Option<String>,
    /// End-to-end headers to pass on.
    pub headers: Vec<(String, String)>,
}

/// The first part of a relayed call's answer; the body follows on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAnswer {
    /// The HTTP status (the agent's, or the relaying hub's own error).
    pub status: u16,
    /// End-to-end headers.
    pub headers: Vec<(String, String)>,
}

/// A request arriving on the trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkRequest {
    /// A sync wire request.
    Sync(Vec<u8>),
    /// A sync wire gossip message (a head, a governance document, a proof).
    Gossip(Vec<u8>),
    /// An A2A call to relay to an agent of the receiving hub's region.
    Relay(RelayHead, Vec<u8>),
}

async fn write_frame(
    send: &mut quinn::SendStream,
    kind: u8,
    payload: &[u8],
) -> Result<(), TrunkError> {
    let len = u32::try_from(payload.len()).map_err(|_| stream_error("frame too large"))?;
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&len.to_be_bytes());
    send.write_all(&header).await.map_err(stream_error)?;
    send.write_all(payload).await.map_err(stream_error)?;
    Ok(())
}

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<(u8, Vec<u8>), TrunkError> {
    let mut header = [0u8; 5];
    recv.read_exact(&mut header).await.map_err(stream_error)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[1..]);
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(stream_error(format!("frame of {len} bytes exceeds {max}")));
    }
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.map_err(stream_error)?;
    Ok((header[0], payload))
}

/// Reads the request on a stream a peer opened.
pub async fn read_request(recv: &mut quinn::RecvStream) -> Result<TrunkRequest, TrunkError> {
    let (kind, payload) = read_frame(recv, REQUEST_BYTES_MAX).await?;
    match kind {
        KIND_SYNC => Ok(TrunkRequest::Sync(payload)),
        KIND_GOSSIP => Ok(TrunkRequest::Gossip(payload)),
        KIND_RELAY => {
            let head: RelayHead = serde_json::from_slice(&payload)
                .map_err(|e| stream_error(format!("relay head: {e}")))?;
            let (_, body) = read_frame(recv, REQUEST_BYTES_MAX).await?;
            Ok(TrunkRequest::Relay(head, body))
        }
        other => Err(stream_error(format!("unknown frame kind {other}"))),
    }
}

/// Answers a sync or gossip request with one frame and ends the stream.
pub async fn write_answer(send: &mut quinn::SendStream, answer: &[u8]) -> Result<(), TrunkError> {
    write_frame(send, 0, answer).await?;
    send.finish().map_err(stream_error)
}

/// Starts a relay answer: the head, after which the caller writes the body with
/// `send.write_all` and ends with `send.finish()`.
pub async fn write_relay_answer(
    send: &mut quinn::SendStream,
    answer: &RelayAnswer,
) -> Result<(), TrunkError> {
    let head = serde_json::to_vec(answer).map_err(stream_error)?;
    write_frame(send, 0, &head).await
}

// ---------------------------------------------------------------- client

/// Another region's hub, as the hub directory (or a config override) names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkPeer {
    /// Its region.
    pub region: String,
    /// Its trunk (UDP) address.
    pub addr: SocketAddr,
    /// Its hub key.
    pub key: PublicKey,
}

/// The connection to one other region's hub, as [`Trunk::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkStatus {
    /// Its region.
    pub region: String,
    /// Its trunk address.
    pub addr: SocketAddr,
    /// Its hub key, as a did:key.
    pub key: String,
    /// Whether a connection is up now.
    pub connected: bool,
    /// QUIC's smoothed round-trip time on the live connection.
    pub rtt: Option<Duration>,
    /// Failed connection attempts in a row.
    pub failures: u32,
    /// While backing off, how long until the next attempt.
    pub retry_in: Option<Duration>,
}

#[derive(Debug)]
struct Slot {
    peer: TrunkPeer,
    connection: Option<quinn::Connection>,
    failures: u32,
    next_try: Option<Instant>,
}

/// This hub's side of the trunk: connections to other regions' hubs, made on first use, kept,
/// and remade with exponential backoff when they drop.
#[derive(Debug)]
pub struct Trunk {
    endpoint: quinn::Endpoint,
    key: Keypair,
    slots: Mutex<BTreeMap<String, Slot>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Trunk {
    /// A trunk over a bound endpoint (which also accepts the other hubs' connections).
    pub fn new(endpoint: quinn::Endpoint, key: Keypair) -> Self {
        Self {
            endpoint,
            key,
            slots: Mutex::new(BTreeMap::new()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Sets the other regions' hubs; a hub whose address or key changed is reconnected.
    pub fn set_peers(&self, peers: Vec<TrunkPeer>) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let mut next = BTreeMap::new();
        for peer in peers {
            let slot = match slots.remove(&peer.region) {
                Some(slot) if slot.peer == peer => slot,
                Some(slot) => {
                    if let Some(connection) = slot.connection {
                        connection.close(0u32.into(), b"hub directory changed");
                    }
                    Slot {
                        peer: peer.clone(),
                        connection: None,
                        failures: 0,
                        next_try: None,
                    }
                }
                None => Slot {
                    peer: peer.clone(),
                    connection: None,
                    failures: 0,
                    next_try: None,
                },
            };
            next.insert(peer.region, slot);
        }
        for (_, slot) in std::mem::take(&mut *slots) {
            if let Some(connection) = slot.connection {
                connection.close(0u32.into(), b"hub left the directory");
            }
        }
        *slots = next;
    }

    /// The regions with a known hub.
    pub fn regions(&self) -> Vec<String> {
        self.slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every other region's hub and the state of the connection to it, for the stats page.
    pub fn status(&self) -> Vec<TrunkStatus> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        slots
            .values()
            .map(|slot| {
                let live = slot
                    .connection
                    .as_ref()
                    .filter(|c| c.close_reason().is_none());
                TrunkStatus {
                    region: slot.peer.region.clone(),
                    addr: slot.peer.addr,
                    key: slot.peer.key.to_did(),
                    connected: live.is_some(),
                    rtt: live.map(quinn::Connection::rtt),
                    failures: slot.failures,
                    retry_in: slot.next_try.map(|at| at.saturating_duration_since(now)),
                }
            })
            .collect()
    }

    /// Whether the connection to a region is up now.
    pub fn is_connected(&self, region: &str) -> bool {
        self.slots.lock().is_ok_and(|s| {
            s.get(region)
                .and_then(|slot| slot.connection.as_ref())
                .is_some_and(|c| c.close_reason().is_none())
        })
    }

    fn live(&self, region: &str) -> Result<Result<quinn::Connection, TrunkPeer>, TrunkError> {
        let slots = self
            .slots
            .lock()
            .map_err(|_| stream_error("lock poisoned"))?;
        let slot = slots
            .get(region)
            .ok_or_else(|| TrunkError::UnknownRegion(region.to_owned()))?;
        if let Some(connection) = &slot.connection
            && connection.close_reason().is_none()
        {
            return Ok(Ok(connection.clone()));
        }
        if let Some(at) = slot.next_try {
            let now = Instant::now();
            if at > now {
                return Err(TrunkError::Backoff {
                    region: region.to_owned(),
                    wait: at - now,
                });
            }
        }
        Ok(Err(slot.peer.clone()))
    }

    /// The connection to a region's hub, made if need be.
    pub async fn connection(&self, region: &str) -> Result<quinn::Connection, TrunkError> {
        if let Ok(connection) = self.live(region)? {
            return Ok(connection);
        }
        // One dial at a time, so concurrent callers share the new connection.
        let _guard = self.connecting.lock().await;
        let peer = match self.live(region)? {
            Ok(connection) => return Ok(connection),
            Err(peer) => peer,
        };
        let result = async {
            let config = client_config(&self.key, peer.key)?;
            let connecting = self
                .endpoint
                .connect_with(config, peer.addr, CERT_NAME)
                .map_err(|e| TrunkError::Connect {
                    region: region.to_owned(),
                    why: e.to_string(),
                })?;
            connecting.await.map_err(|e| TrunkError::Connect {
                region: region.to_owned(),
                why: e.to_string(),
            })
        }
        .await;
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| stream_error("lock poisoned"))?;
        let slot = slots
            .get_mut(region)
            .ok_or_else(|| TrunkError::UnknownRegion(region.to_owned()))?;
        match result {
            Ok(connection) => {
                slot.connection = Some(connection.clone());
                slot.failures = 0;
                slot.next_try = None;
                Ok(connection)
            }
            Err(error) => {
                slot.failures = slot.failures.saturating_add(1);
                let wait = Duration::from_millis(100)
                    .saturating_mul(1u32 << slot.failures.min(9))
                    .min(BACKOFF_MAX);
                slot.next_try = Some(Instant::now() + wait);
                Err(error)
            }
        }
    }

    async fn exchange(
        &self,
        region: &str,
        kind: u8,
        payload: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TrunkError> {
        let connection = self.connection(region).await?;
        let (mut send, recv) = connection.open_bi().await.map_err(stream_error)?;
        write_frame(&mut send, kind, payload).await?;
        Ok((send, recv))
    }

    /// Sends a sync wire request to a region's hub; returns the wire answer.
    pub async fn sync(&self, region: &str, request: &[u8]) -> Result<Vec<u8>, TrunkError> {
        let (mut send, mut recv) = self.exchange(region, KIND_SYNC, request).await?;
        send.finish().map_err(stream_error)?;
        Ok(read_frame(&mut recv, FRAME_BYTES_MAX).await?.1)
    }

    /// Sends a gossip message to a region's hub; returns its verdict (empty when accepted).
    pub async fn gossip(&self, region: &str, message: &[u8]) -> Result<String, TrunkError> {
        let (mut send, mut recv) = self.exchange(region, KIND_GOSSIP, message).await?;
        send.finish().map_err(stream_error)?;
        let (_, answer) = read_frame(&mut recv, 64 * 1024).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// Relays an A2A call to the hub of the agent's region; returns the answer's head and the
    /// stream its body arrives on.
    pub async fn relay(
        &self,
        region: &str,
        head: &RelayHead,
        body: &[u8],
    ) -> Result<(RelayAnswer, quinn::RecvStream), TrunkError> {
        let head = serde_json::to_vec(head).map_err(stream_error)?;
        let (mut send, mut recv) = self.exchange(region, KIND_RELAY, &head).await?;
        write_frame(&mut send, 0, body).await?;
        send.finish().map_err(stream_error)?;
        let (_, answer) = read_frame(&mut recv, 1024 * 1024).await?;
        let answer: RelayAnswer = serde_json::from_slice(&answer)
            .map_err(|e| stream_error(format!("relay answer: {e}")))?;
        Ok((answer, recv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_the_hub_key() {
        let key = Keypair::from_secret(&[7; 32]);
        let (cert, _) = certificate(&key).expect("certificate");
        assert_eq!(certificate_key(&cert), Ok(key.public()));
        assert!(matches!(
            certificate_key(b"not a certificate"),
            Err(CertificateError::Unreadable(_))
        ));
    }

    async fn endpoint(key: &Keypair, allowed: &AllowedKeys) -> quinn::Endpoint {
        let config = server_config(key, allowed.clone()).expect("server config");
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind")
    }

    #[tokio::test]
    async fn pinned_mutual_tls_and_a_sync_exchange() {
        let a = Keypair::from_secret(&[1; 32]);
        let b = Keypair::from_secret(&[2; 32]);
        let stranger = Keypair::from_secret(&[3; 32]);
        let allowed: AllowedKeys = Arc::new(RwLock::new(
            [*a.public().as_bytes(), *b.public().as_bytes()].into(),
        ));
        let server = endpoint(&b, &allowed).await;
        let server_addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    assert!(peer_key(&connection).is_some());
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        if let Ok(TrunkRequest::Sync(bytes)) = read_request(&mut recv).await {
                            let mut answer = b"echo:".to_vec();
                            answer.extend(bytes);
                            let _ = write_answer(&mut send, &answer).await;
                        }
                    }
                });
            }
        });
        let peer = |key: &Keypair| TrunkPeer {
            region: "b".into(),
            addr: server_addr,
            key: key.public(),
        };
        // The right hub, pinned to the right key: works, and the connection is reused.
        let trunk = Trunk::new(endpoint(&a, &allowed).await, a.clone());
        trunk.set_peers(vec![peer(&b)]);
        assert_eq!(trunk.sync("b", b"hi").await.expect("sync"), b"echo:hi");
        assert_eq!(
            trunk.sync("b", b"again").await.expect("sync"),
            b"echo:again"
        );
        assert!(trunk.is_connected("b"));
        assert!(matches!(
            trunk.sync("nowhere", b"x").await,
            Err(TrunkError::UnknownRegion(_))
        ));
        // Pinned to another key: the server's certificate is refused.
        let wrong = Trunk::new(endpoint(&a, &allowed).await, a.clone());
        wrong.set_peers(vec![peer(&stranger)]);
        assert!(matches!(
            wrong.sync("b", b"x").await,
            Err(TrunkError::Connect { .. })
        ));
        // And the next attempt waits for its backoff.
        assert!(matches!(
            wrong.sync("b", b"x").await,
            Err(TrunkError::Backoff { .. })
        ));
        // A client outside the hub directory is refused by the server.
        let outsider = Trunk::new(endpoint(&stranger, &allowed).await, stranger.clone());
        outsider.set_peers(vec![peer(&b)]);
        assert!(outsider.sync("b", b"x").await.is_err());
    }
}
