//! The ARD Registry API (Agentic Resource Discovery v0.91, §5.3) over the node's verified
//! federated view, under `/ard/v1` so nothing collides with Meridian's own `/api/v1`:
//! `POST /search` (ranked, filtered, paged), `POST /explore` (facets), `GET /agents/{identifier}`
//! (one complete entry, with `ETag` and `304`), `GET /agents` (deterministic listing with the
//! Appendix A filter expression), and `GET /.well-known/ard.json`, whose entry for the registry
//! itself lets ARD clients and crawlers find the API. Errors use ARD's envelope
//! (`{"errorCode","message"}`).
//!
//! An agent is an ARD entry when its organisation is bound to a domain (an `org.domain`
//! attestation): its identifier is `urn:air:<domain>:<org>:<agent>`. An agent of an organisation
//! without a verified domain has no identifier (ARD requires the identifier's domain to be a
//! verified identity of its publisher), stays in Meridian's own API, and its `GET
//! /api/v1/agents/{org}/{agent}` says why (`provenance.ard`). Each entry carries Meridian's proof
//! as its `trustManifest`: the bound domain as `identity`, the organisation's attestations, and
//! the publisher, commit and manifest that hold it, so a client can check them with the CLI.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::http::NodeState;
use super::index::{AgentIndex, AgentRecord};
use super::ranking::{FilterField, RANKED_DEPTH_MAX, RankFilter};

/// Where the ARD API is served.
pub const ARD_BASE: &str = "/ard/v1";
/// The media type of an A2A agent card, the `type` of every agent entry.
pub const A2A_CARD_TYPE: &str = "application/a2a-agent-card+json";
/// The media type of a registry entry.
pub const REGISTRY_TYPE: &str = "application/ai-registry+json";
/// Results per search page unless asked (ARD's default).
pub const SEARCH_PAGE_DEFAULT: usize = 10;
/// Entries per list page unless asked (ARD's default).
pub const LIST_PAGE_DEFAULT: usize = 20;
/// The most results or entries one page holds.
pub const PAGE_MAX: usize = 100;
/// Buckets per facet unless asked (ARD's default).
pub const FACET_LIMIT_DEFAULT: usize = 20;
/// Largest ARD request body read.
pub const ARD_BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a retrieved entry may be cached by clients, in seconds.
pub const ENTRY_MAX_AGE_SECS: u64 = 60;
/// The filter keys search and explore understand.
pub const FILTER_KEYS: &[&str] = &[
    "type",
    "tags",
    "capabilities",
    "publisher",
    "version",
    "region",
    "org",
    "status",
    "trustManifest.attestations.type",
];

/// An ARD error: its status, ARD's error code and a message.
#[derive(Debug)]
pub struct ArdError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ArdError {
    /// `400 INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: message.into(),
        }
    }

    /// `500 INTERNAL_ERROR`.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "INTERNAL_ERROR",
            message: message.to_string(),
        }
    }

    /// `401 UNAUTHENTICATED` (with `http.read_auth`, reads need a token).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "UNAUTHENTICATED",
            message: message.into(),
        }
    }
}

impl IntoResponse for ArdError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({ "errorCode": self.code, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::NOT_FOUND {
            // A negative lookup goes stale as the federation changes: revalidate it.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        response
    }
}

/// Whether `path` is a public read that browsers may call from any origin: the ARD API, the
/// well-known manifest, Meridian's agent reads and the agents' cards.
pub fn is_public_read(path: &str) -> bool {
    path.starts_with("/ard/")
        || path == "/.well-known/ard.json"
        || path == "/api/v1/agents"
        || path.starts_with("/api/v1/agents/")
        || (path.starts_with("/a2a/") && path.ends_with("/.well-known/agent-card.json"))
}

/// CORS for the public reads: every origin may read them (they are public and carry no
/// cookies); a preflight `OPTIONS` is answered here.
pub async fn cors(request: Request, next: Next) -> Response {
    if !is_public_read(request.uri().path()) {
        return next.run(request).await;
    }
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, if-none-match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

// ---------------------------------------------------------------- identifiers

/// An ARD identifier, parsed: `urn:air:<domain>:<org>:<agent>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// The publisher's domain.
    pub domain: String,
    /// The namespace: the organisation.
    pub org: String,
    /// The agent's name.
    pub agent: String,
}

impl Identifier {
    /// Parses and validates an identifier (Appendix C: a domain-anchored URN of five parts).
    pub fn parse(text: &str) -> Result<Self, ArdError> {
        let bad = |why: &str| {
            ArdError::invalid(format!(
                "`{}` is not an ARD identifier (urn:air:<domain>:<namespace>:<name>): {why}",
                text.chars().take(200).collect::<String>()
            ))
        };
        let parts: Vec<&str> = text.split(':').collect();
        let [urn, air, domain, namespace, name] = parts.as_slice() else {
            return Err(bad("it has five colon-separated parts"));
        };
        if !urn.eq_ignore_ascii_case("urn") || *air != "air" {
            return Err(bad("it starts with `urn:air:`"));
        }
        meridian_governance::domain::check_domain(domain).map_err(|e| bad(&e.to_string()))?;
        for part in [namespace, name] {
            if part.is_empty()
                || !part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
            {
                return Err(bad(
                    "namespace and name are letters, digits, `-`, `_`, `.` or `~`",
                ));
            }
        }
        Ok(Self {
            domain: (*domain).to_owned(),
            org: (*namespace).to_owned(),
            agent: (*name).to_owned(),
        })
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "urn:air:{}:{}:{}", self.domain, self.org, self.agent)
    }
}

/// Percent-decodes one path segment exactly once (RFC 3986); invalid escapes or UTF-8 are an
/// error.
pub fn percent_decode(segment: &str) -> Result<String, ArdError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ArdError::invalid("invalid percent-encoding in the identifier"))?;
            out.push(hex);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ArdError::invalid("the identifier is not UTF-8"))
}

// ---------------------------------------------------------------- entries

/// What the API knows of each organisation while answering one request.
struct Orgs<'a> {
    state: &'a NodeState,
    now: i64,
    domains: HashMap<String, Option<String>>,
    attestations: HashMap<String, Vec<(String, String)>>,
}

impl<'a> Orgs<'a> {
    fn new(state: &'a NodeState) -> Self {
        Self {
            state,
            now: (state.clock)(),
            domains: HashMap::new(),
            attestations: HashMap::new(),
        }
    }

    /// The organisation's bound domain.
    fn domain(&mut self, org: &str) -> Option<String> {
        let (state, now) = (self.state, self.now);
        self.domains
            .entry(org.to_owned())
            .or_insert_with(|| state.org_domain(org, now))
            .clone()
    }

    /// The organisation's unrevoked attestations: (kind, id).
    fn attestations(&mut self, org: &str) -> Vec<(String, String)> {
        let state = self.state;
        self.attestations
            .entry(org.to_owned())
            .or_insert_with(|| state.governance.org_attestation_kinds(org))
            .clone()
    }
}

/// A ranked entry of this registry and its score (0-100).
type Scored<'r> = (Candidate<'r>, u8);

/// An agent of the view as an ARD entry: its identifier and the record.
struct Candidate<'r> {
    identifier: Identifier,
    record: &'r AgentRecord,
}

fn card_json(record: &AgentRecord) -> Value {
    record
        .card
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null)
}

fn updated_at(record: &AgentRecord) -> String {
    meridian_registry::time::iso8601(record.updated_at)
}

/// The base URL of this node as its cards name it.
fn base_url(state: &NodeState, headers: &HeaderMap) -> Result<String, ArdError> {
    super::a2a::card_base(state, headers).map_err(|_| {
        ArdError::internal(
            "this node cannot name itself (set http.public_url or http.allowed_hosts)",
        )
    })
}

/// A complete ARD entry for the agent.
fn entry(candidate: &Candidate<'_>, orgs: &mut Orgs<'_>, base: &str) -> Value {
    let record = candidate.record;
    let card = card_json(record);
    let examples: Vec<Value> = card["skills"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|skill| skill["examples"].as_array().cloned().unwrap_or_default())
        .filter(Value::is_string)
        .take(5)
        .collect();
    let attestations: Vec<Value> = orgs
        .attestations(&record.org)
        .into_iter()
        .map(|(kind, id)| json!({ "type": kind, "id": id }))
        .collect();
    let mut entry = json!({
        "identifier": candidate.identifier.to_string(),
        "displayName": record.name,
        "type": A2A_CARD_TYPE,
        "url": format!("{base}/a2a/{}/.well-known/agent-card.json", record.agent_id),
        "description": record.description,
        "capabilities": record.skills,
        "tags": record.tags,
        "updatedAt": updated_at(record),
        "trustManifest": {
            "identity": candidate.identifier.domain,
            "trustSchema": {
                "governanceUri": format!("{base}/api/v1/governance/root"),
                "verificationMethods": ["meridian-signed-snapshot"],
            },
            "attestations": attestations,
            "provenance": {
                "org": record.org,
                "region": record.region,
                "publisher": record.publisher,
                "seq": record.seq,
                "commit": record.commit,
                "manifest": record.manifest,
                "signer": record.signer,
            },
        },
    });
    if let Some(version) = card["version"].as_str().filter(|v| !v.is_empty()) {
        entry["version"] = json!(version);
    }
    entry["status"] = json!(record.status);
    if let Some(successor) = &record.superseded_by {
        entry["supersededBy"] = json!(successor_identifier(successor, orgs));
    }
    if !examples.is_empty() {
        entry["representativeQueries"] = Value::Array(examples);
    }
    entry
}

/// A successor's ARD identifier when its organisation is bound to a domain, its agent id
/// (`org/name`) otherwise.
fn successor_identifier(successor: &str, orgs: &mut Orgs<'_>) -> String {
    let Some((org, agent)) = successor.split_once('/') else {
        return successor.to_owned();
    };
    match orgs.domain(org) {
        Some(domain) => Identifier {
            domain,
            org: org.to_owned(),
            agent: agent.to_owned(),
        }
        .to_string(),
        None => successor.to_owned(),
    }
}

/// Every agent of the view that is an ARD entry, in agent id order.
fn candidates<'r>(
    records: impl Iterator<Item = &'r AgentRecord>,
    orgs: &mut Orgs<'_>,
) -> Vec<Candidate<'r>> {
    records
        .filter_map(|record| {
            let domain = orgs.domain(&record.org)?;
            let agent = record.agent_id.split_once('/')?.1.to_owned();
            Some(Candidate {
                identifier: Identifier {
                    domain,
                    org: record.org.clone(),
                    agent,
                },
                record,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- the query model

/// A filter: term path -> accepted values (OR within a key, AND across keys).
type Filter = BTreeMap<String, Vec<String>>;

/// Reads `query.filter`: keys must be ones this registry indexes; a bare scalar is a
/// one-element array.
fn parse_filter(value: Option<&Value>) -> Result<Filter, ArdError> {
    let mut filter = Filter::new();
    let Some(value) = value else {
        return Ok(filter);
    };
    let object = value
        .as_object()
        .ok_or_else(|| ArdError::invalid("`query.filter` is an object"))?;
    for (key, values) in object {
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(ArdError::invalid(format!(
                "this registry cannot filter on `{key}`; it filters on {}",
                FILTER_KEYS.join(", ")
            )));
        }
        let values = match values {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ArdError::invalid(format!("`{key}` values are strings")))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(ArdError::invalid(format!(
                    "`{key}` is a string or an array of strings"
                )));
            }
        };
        filter.insert(key.clone(), values);
    }
    Ok(filter)
}

/// The values an entry has for a filter key.
fn values_of(candidate: &Candidate<'_>, key: &str, orgs: &mut Orgs<'_>) -> Vec<String> {
    let record = candidate.record;
    match key {
        "type" => vec![A2A_CARD_TYPE.to_owned()],
        "tags" => record.tags.clone(),
        "capabilities" => record.skills.clone(),
        "publisher" => vec![candidate.identifier.domain.clone()],
        "version" => Some(record.version.clone())
            .filter(|v| !v.is_empty())
            .into_iter()
            .collect(),
        "region" => vec![record.region.clone()],
        "org" => vec![record.org.clone()],
        "status" => vec![record.status.to_owned()],
        "trustManifest.attestations.type" => orgs
            .attestations(&record.org)
            .into_iter()
            .map(|(kind, _)| kind)
            .collect(),
        _ => Vec::new(),
    }
}

fn matches(candidate: &Candidate<'_>, filter: &Filter, orgs: &mut Orgs<'_>) -> bool {
    filter.iter().all(|(key, wanted)| {
        let have = values_of(candidate, key, orgs);
        wanted.iter().any(|w| have.contains(w))
    })
}

/// Reads a JSON request body (at most [`ARD_BODY_BYTES_MAX`]).
fn body_json(body: &Bytes) -> Result<Value, ArdError> {
    if body.len() > ARD_BODY_BYTES_MAX {
        return Err(ArdError::invalid(format!(
            "the request is {} bytes; at most {ARD_BODY_BYTES_MAX}",
            body.len()
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ArdError::invalid(format!("the request is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ArdError::invalid("the request is a JSON object"));
    }
    Ok(value)
}

/// Refuses members a request schema does not define (ARD's schemas are closed).
fn only_members(value: &Value, allowed: &[&str], what: &str) -> Result<(), ArdError> {
    if let Some(object) = value.as_object()
        && let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str()))
    {
        return Err(ArdError::invalid(format!(
            "`{unknown}` is not a member of {what} ({})",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn page_size(value: Option<&Value>, default: usize) -> Result<usize, ArdError> {
    match value {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=PAGE_MAX as u64).contains(&n) => Ok(n as usize),
            _ => Err(ArdError::invalid(format!(
                "`pageSize` is an integer from 1 to {PAGE_MAX}"
            ))),
        },
    }
}

/// A page token: the offset of the page's first result, opaque to clients.
fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o{offset}"))
}

fn decode_token(token: Option<&str>) -> Result<usize, ArdError> {
    let Some(token) = token else {
        return Ok(0);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix('o')?.parse().ok())
        .ok_or_else(|| ArdError::invalid("`pageToken` is not one this registry gave"))
}

// ---------------------------------------------------------------- search

/// The candidates that pass `filter` and, when given, are in `matching` (the agents a text
/// matches), in agent id order.
fn filtered<'r>(
    candidates: Vec<Candidate<'r>>,
    matching: Option<&std::collections::HashSet<Arc<str>>>,
    filter: &Filter,
    orgs: &mut Orgs<'_>,
) -> Vec<Candidate<'r>> {
    candidates
        .into_iter()
        .filter(|c| matching.is_none_or(|set| set.contains(c.record.agent_id.as_str())))
        .filter(|c| matches(c, filter, orgs))
        .collect()
}

/// The ranked index's filter for an ARD filter: the organisations that can be entries (bound
/// to a domain, and of the publisher domains and attestation types asked for), and the
/// record fields asked for; `None` when no entry of this registry can match (a `type` other
/// than an A2A card's).
fn rank_filter(index: &AgentIndex, filter: &Filter, orgs: &mut Orgs<'_>) -> Option<RankFilter> {
    if let Some(types) = filter.get("type")
        && !types.iter().any(|t| t == A2A_CARD_TYPE)
    {
        return None;
    }
    let allowed: Vec<String> = index
        .orgs()
        .filter(|org| {
            let Some(domain) = orgs.domain(org) else {
                return false;
            };
            let publisher_ok = filter.get("publisher").is_none_or(|p| p.contains(&domain));
            let attested_ok = filter
                .get("trustManifest.attestations.type")
                .is_none_or(|kinds| {
                    orgs.attestations(org)
                        .iter()
                        .any(|(kind, _)| kinds.contains(kind))
                });
            publisher_ok && attested_ok
        })
        .map(str::to_owned)
        .collect();
    let mut ranked = RankFilter::default();
    ranked.any(FilterField::Org, allowed);
    for (key, field) in [
        ("org", FilterField::Org),
        ("region", FilterField::Region),
        ("tags", FilterField::Tag),
        ("capabilities", FilterField::Skill),
        ("status", FilterField::Status),
        ("version", FilterField::Version),
    ] {
        if let Some(values) = filter.get(key) {
            ranked.any(field, values.clone());
        }
    }
    Some(ranked)
}

/// This registry's best entries for `text` and `filter`, the first `depth` of them, each with
/// its score; and how many match in all.
fn ranked_entries<'r>(
    index: &'r AgentIndex,
    text: &str,
    filter: &Filter,
    depth: usize,
    orgs: &mut Orgs<'_>,
) -> Result<(Vec<Scored<'r>>, usize), ArdError> {
    let Some(ranked_filter) = rank_filter(index, filter, orgs) else {
        return Ok((Vec::new(), 0));
    };
    let ranked = index
        .rank(text, &ranked_filter, 0, depth)
        .map_err(|e| ArdError::internal(e.to_string()))?;
    let matched = ranked
        .hits
        .iter()
        .filter_map(|(record, score)| {
            let candidate = candidates(std::iter::once(*record), orgs).pop()?;
            Some((candidate, *score))
        })
        .collect();
    Ok((matched, ranked.total))
}

/// `POST /ard/v1/search`: entries ranked by relevance to `query.text`, filtered, paged.
#[utoipa::path(post, path = "/ard/v1/search", tag = "ard", request_body(content = String, content_type = "application/json", description = "an ARD SearchRequest: {query: {text, filter, @context}, federation, pageSize, pageToken}"), responses((status = 200, description = "{results: [{identifier, displayName, type, url, score, source, ...}], referrals, pageToken}", content_type = "application/json"), (status = 400, description = "INVALID_ARGUMENT: no text, an unknown filter key, a bad page size or token"), (status = 401, description = "UNAUTHENTICATED (with http.read_auth)")))]
pub async fn search(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Bytes,
) -> Result<Response, ArdError> {
    let request = body_json(&body)?;
    only_members(
        &request,
        &["query", "federation", "pageSize", "pageToken"],
        "a search request",
    )?;
    let query = &request["query"];
    only_members(query, &["@context", "text", "filter"], "`query`")?;
    let text = query["text"]
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ArdError::invalid("search needs `query.text`"))?;
    let filter = parse_filter(query.get("filter"))?;
    let federation = match request.get("federation") {
        None => "auto",
        Some(Value::String(mode)) if ["auto", "referrals", "none"].contains(&mode.as_str()) => {
            mode.as_str()
        }
        Some(_) => {
            return Err(ArdError::invalid("`federation` is auto, referrals or none"));
        }
    };
    let size = page_size(request.get("pageSize"), SEARCH_PAGE_DEFAULT)?;
    let offset = decode_token(request["pageToken"].as_str())?;
    let base = base_url(&state, &headers)?;
    let source = format!("{base}{ARD_BASE}");
    let mut orgs = Orgs::new(&state);
    let federation_state = &state.ard;
    let upstream = if federation == "auto" && !federation_state.upstreams.is_empty() {
        let who = client.map_or_else(
            || "unknown".to_owned(),
            |axum::Extension(axum::extract::ConnectInfo(address))| address.ip().to_string(),
        );
        if federation_state.admit(&who, state.started.elapsed()) {
            federation_state
                .ask(query, offset + size, &state.metrics)
                .await
        } else {
            state.metrics.count(
                "meridian_ard_upstream_searches_total{outcome=\"limited\"}",
                1,
            );
            Vec::new()
        }
    } else {
        Vec::new()
    };
    let (page, total) = {
        let index = state
            .index
            .read()
            .map_err(|_| ArdError::internal("index lock poisoned"))?;
        if offset.saturating_add(size) > RANKED_DEPTH_MAX {
            return Err(ArdError::invalid(format!(
                "search pages reach the best {RANKED_DEPTH_MAX} entries; narrow the query"
            )));
        }
        let (matched, here_total) =
            ranked_entries(&index, text, &filter, offset + size, &mut orgs)?;
        // Only the page's entries are built; the rest are an identifier and a score.
        let here = matched.len();
        let merged = merge(&matched, upstream);
        let total = here_total + (merged.len() - here);
        let page: Vec<Value> = merged
            .into_iter()
            .skip(offset)
            .take(size)
            .map(|result| match result {
                Merged::Here(at) => {
                    let (candidate, score) = &matched[at];
                    search_result(candidate, *score, &mut orgs, &base, &source)
                }
                Merged::Upstream(result) => result,
            })
            .collect();
        (page, total)
    };
    let mut answer = json!({ "results": page });
    if offset + size < total {
        answer["pageToken"] = json!(encode_token(offset + size));
    }
    // `auto` with no upstreams is `none` (§5.4): this node's view already holds the whole
    // verified federation. `referrals` names the configured upstreams and the federation's
    // other registries the signed policy lists.
    if federation == "referrals" {
        let mut referrals = federation_state.referrals();
        referrals.extend(policy_referrals(&state, &source));
        answer["referrals"] = Value::Array(referrals);
    }
    Ok(axum::Json(answer).into_response())
}

/// One search result: the selection terms of the entry, its score and this registry as its
/// source.
fn search_result(
    candidate: &Candidate<'_>,
    score: u8,
    orgs: &mut Orgs<'_>,
    base: &str,
    source: &str,
) -> Value {
    let full = entry(candidate, orgs, base);
    json!({
        "identifier": full["identifier"],
        "displayName": full["displayName"],
        "type": full["type"],
        "url": full["url"],
        "description": full["description"],
        "capabilities": full["capabilities"],
        "status": full["status"],
        "score": score,
        "source": source,
    })
}

/// A merged search result: one of this registry's matches (by position) or an upstream's.
enum Merged {
    Here(usize),
    Upstream(Value),
}

/// Merges upstream results into this registry's matches by identifier (this registry's entry
/// wins: it is verified here), ordered by score, this registry's first among equals, and this
/// registry's deprecated entries after every other.
fn merge(matched: &[Scored<'_>], upstream: Vec<Value>) -> Vec<Merged> {
    let mut seen: std::collections::HashSet<String> = matched
        .iter()
        .map(|(candidate, _)| candidate.identifier.to_string())
        .collect();
    let mut merged: Vec<(bool, u64, Merged)> = (0..matched.len())
        .map(|at| {
            let deprecated = matched[at].0.record.is_deprecated();
            (deprecated, u64::from(matched[at].1), Merged::Here(at))
        })
        .collect();
    if upstream.is_empty() {
        // Already in rank order.
        return merged.into_iter().map(|(_, _, m)| m).collect();
    }
    for result in upstream {
        let Some(id) = result["identifier"].as_str().map(str::to_owned) else {
            continue;
        };
        if seen.insert(id) {
            merged.push((
                false,
                result["score"].as_u64().unwrap_or(0),
                Merged::Upstream(result),
            ));
        }
    }
    // A stable sort keeps this registry's results ahead of upstream ones of the same score.
    merged.sort_by_key(|(deprecated, score, _)| (*deprecated, std::cmp::Reverse(*score)));
    merged.into_iter().map(|(_, _, m)| m).collect()
}

/// The registry itself as an ARD entry (in the well-known manifest).
fn registry_entry(state: &NodeState, base: &str) -> Value {
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or(base)
        .split([':', '/'])
        .next()
        .unwrap_or("localhost");
    let namespace = state.config.node.region.clone();
    json!({
        "identifier": format!("urn:air:{}:registry:{namespace}", ard_host(host)),
        "displayName": format!("Meridian node {} ({})", &state.node_did, namespace),
        "type": REGISTRY_TYPE,
        "url": format!("{base}{ARD_BASE}"),
        "description": "A Meridian node: every agent of a federation of registries, each entry signed by its organisation and verified by this node",
    })
}

/// A host as an identifier's domain part: names as they are, an address as a `.invalid`
/// name (an identifier needs a domain; the URL says where the registry is).
/// The federation's ARD registries the signed policy lists, but this one (`own`), as
/// referrals: each the ARD base of another Meridian node over the same verified federation.
fn policy_referrals(state: &NodeState, own: &str) -> Vec<Value> {
    state
        .governance
        .registries()
        .into_iter()
        .map(|base| base.trim_end_matches('/').to_owned())
        .filter(|base| base != own.trim_end_matches('/'))
        .map(|base| {
            let display = format!("Meridian node at {base} (from the federation's signed policy)");
            referral(&base, "meridian", display)
        })
        .collect()
}

/// A registry at the ARD base `base` as a referral: an identifier from its host and `kind`,
/// its name, and its search URL.
fn referral(base: &str, kind: &str, display: String) -> Value {
    let host = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "identifier": format!("urn:air:{}:registry:{kind}", ard_host(&host)),
        "displayName": display,
        "type": REGISTRY_TYPE,
        "url": format!("{base}/search"),
    })
}

fn ard_host(host: &str) -> String {
    if meridian_governance::domain::check_domain(host).is_ok() {
        host.to_owned()
    } else {
        let label: String = host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{}.invalid", label.trim_matches('-'))
    }
}

// ---------------------------------------------------------------- federation

/// Most bytes read of one upstream's search answer.
pub const UPSTREAM_ANSWER_BYTES_MAX: usize = 1024 * 1024;

/// The ARD API's federation with other registries (`[ard]`): the upstreams' API bases, a
/// client behind the SSRF guard, the time budget of a federated search, and how many
/// federated searches each client may start.
pub struct Federation {
    upstreams: Vec<String>,
    client: reqwest::Client,
    guard: meridian_hub::relay::EgressGuard,
    budget: std::time::Duration,
    rate: meridian_hub::ratelimit::Rate,
    limiter: std::sync::Mutex<meridian_hub::ratelimit::Limiter>,
}

impl Federation {
    /// From the `[ard]` settings.
    pub fn new(config: &super::config::ArdSection) -> anyhow::Result<Self> {
        let guard = meridian_hub::relay::EgressGuard {
            allow_private: config.allow_private,
            allow_cidrs: Vec::new(),
        };
        let budget = std::time::Duration::from_millis(config.federation_budget_ms);
        Ok(Self {
            upstreams: config.upstream_urls()?,
            client: guard.client(budget)?,
            guard,
            budget,
            rate: meridian_hub::ratelimit::Rate {
                per_second: config.federation_rps,
                burst: config.federation_burst,
            },
            limiter: std::sync::Mutex::new(meridian_hub::ratelimit::Limiter::new()),
        })
    }

    /// The upstreams as ARD registry referrals.
    fn referrals(&self) -> Vec<Value> {
        self.upstreams
            .iter()
            .map(|url| referral(url, "upstream", format!("ARD registry at {url}")))
            .collect()
    }

    /// Whether `client` may start another federated search now.
    fn admit(&self, client: &str, since_start: std::time::Duration) -> bool {
        self.limiter.lock().is_ok_and(|mut limiter| {
            limiter.check(client, self.rate, since_start)
                == meridian_hub::ratelimit::Decision::Allow
        })
    }

    /// Asks every upstream the same query (with federation `none`, so nothing loops) within
    /// the budget; returns each answer's results, their `source` set to the upstream asked. An upstream that
    /// fails, refuses, is slow or is refused by the SSRF guard costs only its own results.
    async fn ask(
        &self,
        query: &Value,
        size: usize,
        metrics: &meridian_hub::metrics::Metrics,
    ) -> Vec<Value> {
        let request = json!({ "query": query, "federation": "none", "pageSize": size });
        let asks = self.upstreams.iter().map(|url| {
            let request = &request;
            async move {
                let outcome = tokio::time::timeout(self.budget, self.ask_one(url, request)).await;
                let (label, results) = match outcome {
                    Ok(Ok(results)) => ("ok", results),
                    Ok(Err(error)) => {
                        tracing::debug!(upstream = %url, %error, "ARD upstream failed");
                        ("failed", Vec::new())
                    }
                    Err(_) => ("timeout", Vec::new()),
                };
                metrics.count(
                    &format!("meridian_ard_upstream_searches_total{{outcome=\"{label}\"}}"),
                    1,
                );
                results
            }
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn ask_one(&self, url: &str, request: &Value) -> Result<Vec<Value>, String> {
        let target = reqwest::Url::parse(&format!("{url}/search")).map_err(|e| e.to_string())?;
        if let Some(why) = self.guard.url_refusal(&target) {
            return Err(format!("{why} (ard.allow_private)"));
        }
        let response = self
            .client
            .post(target)
            .header(header::CONTENT_TYPE, "application/json")
            .body(request.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = meridian_hub::relay::read_limited(response, UPSTREAM_ANSWER_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let results = answer["results"]
            .as_array()
            .ok_or("the answer has no `results`")?;
        Ok(results
            .iter()
            .filter(|r| r["identifier"].is_string())
            .map(|r| {
                let mut result = r.clone();
                // The result came from this upstream, whatever it claims: an upstream cannot
                // pass its answers off as another registry's.
                result["source"] = json!(url);
                let score = result["score"].as_u64().unwrap_or(0).min(100);
                result["score"] = json!(score);
                result
            })
            .collect())
    }
}

// ---------------------------------------------------------------- explore

/// `POST /ard/v1/explore`: facet counts over the matched set (not one page).
#[utoipa::path(post, path = "/ard/v1/explore", tag = "ard", request_body(content = String, content_type = "application/json", description = "an ARD ExploreRequest: {query, resultType: {facets: [{field, limit, minCount}]}}"), responses((status = 200, description = "{resultType: facets, facets: {FIELD: {buckets: [{value, count}], otherCount}}}", content_type = "application/json"), (status = 400, description = "INVALID_ARGUMENT")))]
pub async fn explore(
    State(state): State<Arc<NodeState>>,
    body: Bytes,
) -> Result<Response, ArdError> {
    let request = body_json(&body)?;
    only_members(&request, &["query", "resultType"], "an explore request")?;
    let query = request.get("query").cloned().unwrap_or(json!({}));
    only_members(&query, &["@context", "text", "filter"], "`query`")?;
    let text = query["text"].as_str().filter(|t| !t.trim().is_empty());
    let filter = parse_filter(query.get("filter"))?;
    let facets = request["resultType"]["facets"]
        .as_array()
        .ok_or_else(|| ArdError::invalid("explore needs `resultType.facets` (an array)"))?;
    let mut asked = Vec::new();
    for facet in facets {
        only_members(facet, &["field", "limit", "minCount"], "a facet")?;
        let field = facet["field"]
            .as_str()
            .ok_or_else(|| ArdError::invalid("a facet needs `field`"))?;
        if !FILTER_KEYS.contains(&field) {
            return Err(ArdError::invalid(format!(
                "this registry cannot aggregate `{field}`; it aggregates {}",
                FILTER_KEYS.join(", ")
            )));
        }
        let number = |name: &str, default: usize| match facet.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| ArdError::invalid(format!("`{name}` is a non-negative integer"))),
        };
        asked.push((
            field.to_owned(),
            number("limit", FACET_LIMIT_DEFAULT)?,
            number("minCount", 1)?,
        ));
    }
    let mut orgs = Orgs::new(&state);
    let mut result = serde_json::Map::new();
    {
        let index = state
            .index
            .read()
            .map_err(|_| ArdError::internal("index lock poisoned"))?;
        let matching = text
            .map(|t| index.matching(t))
            .transpose()
            .map_err(|e| ArdError::internal(e.to_string()))?;
        let candidates = candidates(index.iter(), &mut orgs);
        let matched = filtered(candidates, matching.as_ref(), &filter, &mut orgs);
        for (field, limit, min_count) in asked {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for candidate in &matched {
                let mut values = values_of(candidate, &field, &mut orgs);
                values.sort();
                values.dedup();
                for value in values {
                    *counts.entry(value).or_default() += 1;
                }
            }
            let mut buckets: Vec<(String, usize)> = counts
                .into_iter()
                .filter(|(_, count)| *count >= min_count)
                .collect();
            buckets.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let other: usize = buckets.iter().skip(limit).map(|(_, c)| c).sum();
            let shown: Vec<Value> = buckets
                .into_iter()
                .take(limit)
                .map(|(value, count)| json!({ "value": value, "count": count }))
                .collect();
            let mut facet = json!({ "buckets": shown });
            if other > 0 {
                facet["otherCount"] = json!(other);
            }
            result.insert(field, facet);
        }
    }
    Ok(axum::Json(json!({ "resultType": "facets", "facets": result })).into_response())
}

// ---------------------------------------------------------------- retrieve

/// `GET /ard/v1/agents/{identifier}`: one complete entry, by exact identifier, with
/// `Cache-Control` and an `ETag` (the manifest's CID), `304` on `If-None-Match`.
#[utoipa::path(get, path = "/ard/v1/agents/{identifier}", tag = "ard", params(("identifier" = String, Path, description = "the ARD identifier `urn:air:DOMAIN:ORG:AGENT`, percent-encoded as one segment")), responses((status = 200, description = "the complete ARD entry (ETag, Cache-Control)", content_type = "application/json"), (status = 304, description = "not modified (If-None-Match)"), (status = 400, description = "INVALID_ARGUMENT: bad percent-encoding or not an identifier"), (status = 404, description = "NOT_FOUND")))]
pub async fn retrieve(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ArdError> {
    let raw = uri
        .path()
        .strip_prefix("/ard/v1/agents/")
        .ok_or_else(|| ArdError::invalid("no identifier"))?;
    let identifier = Identifier::parse(&percent_decode(raw)?)?;
    let base = base_url(&state, &headers)?;
    let mut orgs = Orgs::new(&state);
    let unknown = || ArdError::not_found(format!("no entry `{identifier}` in this registry"));
    if orgs.domain(&identifier.org).as_deref() != Some(identifier.domain.as_str()) {
        return Err(unknown());
    }
    let (body, etag) = {
        let index = state
            .index
            .read()
            .map_err(|_| ArdError::internal("index lock poisoned"))?;
        let agent_id = format!("{}/{}", identifier.org, identifier.agent);
        let record = index.get(&agent_id).ok_or_else(unknown)?;
        let candidate = Candidate {
            identifier: identifier.clone(),
            record,
        };
        (
            entry(&candidate, &mut orgs, &base),
            format!("\"{}\"", record.manifest),
        )
    };
    let cache = format!("public, max-age={ENTRY_MAX_AGE_SECS}");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).map_err(ArdError::internal)?,
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(ArdError::internal)?,
    );
    Ok(response)
}

// ---------------------------------------------------------------- list

/// The query of `GET /ard/v1/agents`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    filter: Option<String>,
    order_by: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

/// One clause of the Appendix A filter expression.
#[derive(Debug, PartialEq)]
enum Clause {
    /// `displayName`, case-insensitive: contains.
    DisplayName(String),
    /// `type`: one of.
    Type(Vec<String>),
    /// `publisherId`: the domain, one of.
    Publisher(Vec<String>),
    /// `updatedAfter` / `createdAfter`: unix seconds (Meridian keeps one time per agent).
    After(i64),
}

/// Parses `field = 'value' AND field > 'value'`: `=` for displayName, type and publisherId
/// (comma-separated values are OR), `>` for updatedAfter and createdAfter (ISO 8601).
fn parse_list_filter(text: &str) -> Result<Vec<Clause>, ArdError> {
    let mut clauses = Vec::new();
    for part in split_and(text) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (field, op, value) = ["=", ">"]
            .iter()
            .find_map(|op| {
                let (field, value) = part.split_once(op)?;
                Some((field.trim(), *op, value.trim()))
            })
            .ok_or_else(|| ArdError::invalid(format!("`{part}` is not FIELD = 'VALUE'")))?;
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(value);
        let list = || value.split(',').map(|v| v.trim().to_owned()).collect();
        let clause = match (field, op) {
            ("displayName", "=") => Clause::DisplayName(value.to_lowercase()),
            ("type", "=") => Clause::Type(list()),
            ("publisherId", "=") => Clause::Publisher(list()),
            ("updatedAfter" | "createdAfter", ">" | "=") => Clause::After(
                meridian_registry::time::parse_iso8601(value).ok_or_else(|| {
                    ArdError::invalid(format!("`{value}` is not an ISO 8601 time"))
                })?,
            ),
            _ => {
                return Err(ArdError::invalid(format!(
                    "`{part}`: the filter takes displayName, type and publisherId with `=`, updatedAfter and createdAfter with `>`"
                )));
            }
        };
        clauses.push(clause);
    }
    Ok(clauses)
}

/// Splits on `AND` (any case) outside quotes.
fn split_and(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote: Option<char> = None;
    for word in text.split(' ') {
        if quote.is_none() && word.eq_ignore_ascii_case("and") {
            parts.push(String::new());
            continue;
        }
        for c in word.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                None if c == '\'' || c == '"' => quote = Some(c),
                _ => {}
            }
        }
        if let Some(last) = parts.last_mut() {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    parts
}

/// `GET /ard/v1/agents`: every entry, filtered by the Appendix A expression, ordered by
/// `displayName` or `updatedAt` (`DESC` to reverse; identifier order otherwise), paged.
#[utoipa::path(get, path = "/ard/v1/agents", tag = "ard", params(("filter" = Option<String>, Query, description = "Appendix A: displayName, type, publisherId with `=`; updatedAfter, createdAfter with `>`; AND between"), ("orderBy" = Option<String>, Query, description = "identifier, displayName or updatedAt, then ASC or DESC"), ("pageSize" = Option<usize>, Query, description = "1 to 100, default 20"), ("pageToken" = Option<String>, Query, description = "from the previous page")), responses((status = 200, description = "{items: [ARD entries], total, pageToken}", content_type = "application/json"), (status = 400, description = "INVALID_ARGUMENT")))]
pub async fn list(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ArdError> {
    let Query(params) = params.map_err(|e| ArdError::invalid(e.body_text()))?;
    let clauses = parse_list_filter(params.filter.as_deref().unwrap_or(""))?;
    let size = match params.page_size {
        None => LIST_PAGE_DEFAULT,
        Some(n) if (1..=PAGE_MAX).contains(&n) => n,
        Some(_) => {
            return Err(ArdError::invalid(format!(
                "`pageSize` is from 1 to {PAGE_MAX}"
            )));
        }
    };
    let offset = decode_token(params.page_token.as_deref())?;
    let order = params.order_by.unwrap_or_default();
    let (field, descending) = match order.split_whitespace().collect::<Vec<_>>().as_slice() {
        [] => ("identifier", false),
        [field] => (*field, false),
        [field, dir] if dir.eq_ignore_ascii_case("desc") => (*field, true),
        [field, dir] if dir.eq_ignore_ascii_case("asc") => (*field, false),
        _ => {
            return Err(ArdError::invalid(format!(
                "`orderBy` `{order}` is FIELD [ASC|DESC]"
            )));
        }
    };
    if ![
        "identifier",
        "displayName",
        "name",
        "updatedAt",
        "updated_at",
        "createdAt",
        "created_at",
    ]
    .contains(&field)
    {
        return Err(ArdError::invalid(format!(
            "`orderBy` takes identifier, displayName or updatedAt, not `{field}`"
        )));
    }
    let base = base_url(&state, &headers)?;
    let mut orgs = Orgs::new(&state);
    let (items, total) = {
        let index = state
            .index
            .read()
            .map_err(|_| ArdError::internal("index lock poisoned"))?;
        let mut matched: Vec<Candidate<'_>> = candidates(index.iter(), &mut orgs)
            .into_iter()
            .filter(|c| clauses.iter().all(|clause| list_matches(c, clause)))
            .collect();
        matched.sort_by(|a, b| {
            let ordering = match field {
                "displayName" | "name" => a
                    .record
                    .name
                    .to_lowercase()
                    .cmp(&b.record.name.to_lowercase()),
                "identifier" => std::cmp::Ordering::Equal,
                _ => a.record.updated_at.cmp(&b.record.updated_at),
            }
            .then_with(|| a.identifier.to_string().cmp(&b.identifier.to_string()));
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
        let total = matched.len();
        let items: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(size)
            .map(|c| entry(c, &mut orgs, &base))
            .collect();
        (items, total)
    };
    let mut answer = json!({ "items": items, "total": total });
    if offset + size < total {
        answer["pageToken"] = json!(encode_token(offset + size));
    }
    Ok(axum::Json(answer).into_response())
}

fn list_matches(candidate: &Candidate<'_>, clause: &Clause) -> bool {
    match clause {
        Clause::DisplayName(part) => candidate.record.name.to_lowercase().contains(part),
        Clause::Type(types) => types.iter().any(|t| t == A2A_CARD_TYPE),
        Clause::Publisher(domains) => domains.contains(&candidate.identifier.domain),
        Clause::After(after) => candidate.record.updated_at > *after,
    }
}

// ---------------------------------------------------------------- well-known

/// `GET /.well-known/ard.json`: an ARD manifest whose entry for this registry points ARD
/// clients and crawlers at the API.
#[utoipa::path(get, path = "/.well-known/ard.json", tag = "ard", responses((status = 200, description = "an ARD manifest whose entry (type application/ai-registry+json) points at this node's ARD API", content_type = "application/json")))]
pub async fn well_known(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Response, ArdError> {
    let base = base_url(&state, &headers)?;
    Ok(axum::Json(json!({ "entries": [registry_entry(&state, &base)] })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_five_part_domain_anchored_urns() {
        let id = Identifier::parse("urn:air:acme.example:acme:echo").unwrap();
        assert_eq!(
            (id.domain.as_str(), id.org.as_str(), id.agent.as_str()),
            ("acme.example", "acme", "echo")
        );
        assert_eq!(id.to_string(), "urn:air:acme.example:acme:echo");
        for bad in [
            "urn:air:acme.example:acme",
            "urn:xyz:acme.example:acme:echo",
            "urn:air:localhost:acme:echo",
            "urn:air:acme.example:acme:ec ho",
            "urn:air:acme.example:acme:echo:extra",
            "",
        ] {
            let error = Identifier::parse(bad).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_path_segment_is_percent_decoded_exactly_once() {
        assert_eq!(
            percent_decode("urn%3Aair%3Aacme.example%3Aacme%3Aecho").unwrap(),
            "urn:air:acme.example:acme:echo"
        );
        // Twice-encoded stays encoded once: `%253A` is `%3A`, not `:`.
        assert_eq!(percent_decode("a%253Ab").unwrap(), "a%3Ab");
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("cut%3").is_err());
        assert!(percent_decode("%ff%fe").is_err(), "not UTF-8");
    }

    #[test]
    fn the_list_filter_reads_appendix_a_expressions() {
        let clauses = parse_list_filter(
            "type = 'application/a2a-agent-card+json' AND updatedAfter > '2026-01-01'",
        )
        .unwrap();
        assert_eq!(
            clauses,
            [
                Clause::Type(vec![A2A_CARD_TYPE.to_owned()]),
                Clause::After(1_767_225_600)
            ]
        );
        assert_eq!(
            parse_list_filter("publisherId = 'a.example,b.example'").unwrap(),
            [Clause::Publisher(vec![
                "a.example".into(),
                "b.example".into()
            ])]
        );
        assert_eq!(
            parse_list_filter("displayName = 'Echo AND Co'").unwrap(),
            [Clause::DisplayName("echo and co".into())]
        );
        for bad in ["type ~ 'x'", "owner = 'x'", "updatedAfter > 'yesterday'"] {
            assert!(parse_list_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_take_known_keys_and_scalars_as_one_element_lists() {
        let filter = parse_filter(Some(&json!({"tags": "finance", "type": ["a", "b"]}))).unwrap();
        assert_eq!(filter["tags"], ["finance"]);
        assert_eq!(filter["type"], ["a", "b"]);
        assert!(parse_filter(Some(&json!({"okf:taxonomy": ["x"]}))).is_err());
        assert!(parse_filter(Some(&json!({"tags": 5}))).is_err());
        assert!(parse_filter(Some(&json!(["tags"]))).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(decode_token(Some(&encode_token(30))).unwrap(), 30);
        assert_eq!(decode_token(None).unwrap(), 0);
        assert!(decode_token(Some("eyJwYWdlIjogMn0=")).is_err());
    }
}
