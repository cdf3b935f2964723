//! How a hub reaches what is not another hub: the sync endpoints of its region's nodes and the
//! A2A endpoints of its region's agents.
//!
//! The hub's decisions ([`crate::daemon::state::Hub`]) call through the [`Egress`] trait, so
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

/// The hub's way out to nodes and agents.
pub trait Egress: Send + Sync + 'static {
    /// Sends a sync wire request to the node whose gateway is at `gateway` (a URL the node
    /// vouched for) and returns the wire answer, at most [`MESSAGE_BYTES_MAX`] bytes.
    fn node_sync<'a>(
        &'a self,
        gateway: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>>;

    /// POSTs an A2A call to an agent's JSON-RPC endpoint `url` with these headers and body.
    /// An error means the agent was not reached (or its answer broke off before its head).
    fn agent_call<'a>(
        &'a self,
        url: &'a str,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<AgentAnswer, String>>;
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

impl Egress for HttpEgress {
    fn node_sync<'a>(
        &'a self,
        gateway: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let url = format!("{}/api/v1/sync", gateway.trim_end_matches('/'));
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
            if let Some(why) = self.guard.url_refusal(&parsed) {
                return Err(format!(
                    "{url}: {why} (relay.allow_private, egress.allow_cidrs)"
                ));
            }
            match self.nodes.post(parsed).body(request).send().await {
                Ok(response) if response.status().is_success() => {
                    crate::relay::read_limited(response, MESSAGE_BYTES_MAX)
                        .await
                        .map_err(|e| format!("{url}: {e}"))
                }
                Ok(response) => Err(format!("{url}: HTTP {}", response.status())),
                Err(error) => Err(format!("{url}: {error}")),
            }
        })
    }

    fn agent_call<'a>(
        &'a self,
        url: &'a str,
        headers: &'a [(String, String)],
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<AgentAnswer, String>> {
        Box::pin(async move {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
            if let Some(why) = self.guard.url_refusal(&parsed) {
                return Err(format!(
                    "{url}: {why} (relay.allow_private, egress.allow_cidrs)"
                ));
            }
            let mut request = self.agents.post(parsed).body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.map_err(|error| error.to_string())?;
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
