//! How a hub reaches what is not another hub: the sync endpoints of its region's nodes and the
//! A2A endpoints of its region's agents.
//!
//! The hub's driver ([`crate::daemon::state::Hub`]) calls through the [`Egress`] trait, so
//! one hub logic runs in production over HTTP ([`HttpEgress`], reqwest with the SSRF guard) and
//! in the deterministic simulations over simulated sockets. Hubs reach each other over the
//! [`crate::trunk`], which is QUIC in both.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::wire::MESSAGE_BYTES_MAX;

/// An agent's answer as it arrives: status and headers first, then the body in chunks (which
/// pass through the relay unbuffered).
pub struct AgentAnswer {
    /// The HTTP status the agent answered with.
    pub status: u16,
    /// Its headers, as text.
    pub headers: Vec<(String, String)>,
    /// The body, chunk by chunk.
    pub body: BoxStream<'static, Result<Vec<u8>, String>>,
}

impl std::fmt::Debug for AgentAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAnswer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Why a call to a node or an agent got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The URL does not parse.
    #[error("{url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SSRF guard refuses the URL's address.
    #[error("{url}: {why} (relay.allow_private, egress.allow_cidrs)")]
    Refused {
        /// The URL.
        url: String,
        /// Why the guard refuses it.
        why: String,
    },
    /// It could not be reached, or the exchange broke off before an answer.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL (or the simulated host).
        url: String,
        /// What happened.
        reason: String,
    },
    /// A node answered a sync request with an HTTP error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
}

impl EgressError {
    /// An unreachable target, with what happened.
    pub fn unreachable(url: &str, reason: impl std::fmt::Display) -> Self {
        Self::Unreachable {
            url: url.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The hub's way out to nodes and agents.
pub trait Egress: Send + Sync + 'static {
    /// Sends a sync wire request to the node whose gateway is at `gateway` (a URL the node
    /// vouched for) and returns the wire answer, at most [`MESSAGE_BYTES_MAX`] bytes.
    fn node_sync<'a>(
        &'a self,
        gateway: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, EgressError>>;

    /// POSTs an A2A call to an agent's JSON-RPC endpoint `url` with these headers and body.
    /// An error means the agent was not reached (or its answer broke off before its head).
    fn agent_call<'a>(
        &'a self,
        url: &'a str,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<AgentAnswer, EgressError>>;
}

/// Production egress: HTTP to nodes' gateways (`POST {gateway}/api/v1/sync`) and to agents'
/// endpoints, both through the SSRF guard (no redirects, no proxy, private and metadata
/// addresses refused, as literals and at resolution, unless the configuration allows them).
#[derive(Debug, Clone)]
pub struct HttpEgress {
    nodes: reqwest::Client,
    agents: reqwest::Client,
    guard: crate::relay::EgressGuard,
}

impl HttpEgress {
    /// The clients, both behind `guard` (node gateways and agent endpoints are URLs learned
    /// from the network), with no redirects and a 10 s connect timeout. The hub bounds every
    /// call's whole duration itself, whatever the egress.
    pub fn new(guard: crate::relay::EgressGuard) -> reqwest::Result<Self> {
        Ok(Self {
            nodes: guard.client(Duration::from_secs(10))?,
            agents: guard.client(Duration::from_secs(10))?,
            guard,
        })
    }
}

impl HttpEgress {
    /// `url` parsed, if the SSRF guard lets the hub call it.
    fn guarded(&self, url: &str) -> Result<reqwest::Url, EgressError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| EgressError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        match self.guard.url_refusal(&parsed) {
            Some(why) => Err(EgressError::Refused {
                url: url.to_owned(),
                why: why.to_string(),
            }),
            None => Ok(parsed),
        }
    }
}

impl Egress for HttpEgress {
    fn node_sync<'a>(
        &'a self,
        gateway: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, EgressError>> {
        Box::pin(async move {
            let url = format!("{}/api/v1/sync", gateway.trim_end_matches('/'));
            let parsed = self.guarded(&url)?;
            match self.nodes.post(parsed).body(request).send().await {
                Ok(response) if response.status().is_success() => {
                    crate::relay::read_limited(response, MESSAGE_BYTES_MAX)
                        .await
                        .map_err(|e| EgressError::unreachable(&url, e))
                }
                Ok(response) => Err(EgressError::Status {
                    url,
                    status: response.status().as_u16(),
                }),
                Err(error) => Err(EgressError::unreachable(&url, error)),
            }
        })
    }

    fn agent_call<'a>(
        &'a self,
        url: &'a str,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<AgentAnswer, EgressError>> {
        Box::pin(async move {
            let parsed = self.guarded(url)?;
            let mut request = self.agents.post(parsed).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request
                .send()
                .await
                .map_err(|error| EgressError::unreachable(url, error))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()).map_err(|e| e.to_string()))
                .boxed();
            Ok(AgentAnswer {
                status,
                headers,
                body,
            })
        })
    }
}
