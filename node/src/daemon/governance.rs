//! The node's governance endpoints, over the governance state of the protocol crate
//! ([`meridian_sync::governance::Governance`], re-exported here).
//!
//! Governance is on when `governance.root` names a root file. Then every agent must pass the
//! acceptance rule to enter the federated view, and the view is rebuilt whenever attestations,
//! the policy or the root change.

use super::openapi::ErrorBody;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use meridian_governance::attestation::{
    Attestation, KIND_REVOCATION, KeyRotation, Registration, Subject,
};
use meridian_governance::policy::PolicyBundle;
use meridian_governance::root::RootDocument;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{ApiError, NodeState};

pub use meridian_sync::governance::{
    GOVERNANCE_DIR, Governance, GovernanceError, ROOT_HISTORY_MAX,
};

impl From<GovernanceError> for ApiError {
    fn from(error: GovernanceError) -> Self {
        match error {
            GovernanceError::NotConfigured => not_configured(),
            GovernanceError::KeyLogOff => {
                ApiError::new(StatusCode::NOT_FOUND, "key_log_off", error.to_string())
            }
            GovernanceError::Refused(_) => rejected(error),
            other => ApiError::internal(other),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "governance_off",
        "this node has no trust root (set governance.root)",
    )
}

/// Requires an admin bearer token.
pub fn require_admin(state: &NodeState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = super::tokens::bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs an admin `Authorization: Bearer <token>`",
        )
    })?;
    match state
        .tokens
        .lookup(token.trim())
        .map_err(ApiError::internal)?
    {
        Some(record) if record.admin => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint needs an admin token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked token",
        )),
    }
}

fn require_cbor(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if media.starts_with("application/vnd.ipld.dag-cbor")
        || media.starts_with("application/octet-stream")
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the document as application/vnd.ipld.dag-cbor, not `{media}`"),
        ))
    }
}

fn rejected(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "document_rejected",
        error.to_string(),
    )
}

/// Rebuilds the federated view after governance changed.
/// 202: a key-set document kept until its key-log proof arrives.
fn awaiting_key_log(id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "awaiting_key_log", "message": "kept; it takes effect when its key-log proof is posted to /api/v1/governance/key-proofs" })),
    )
        .into_response()
}

/// Passes a governance document the operator handed this node on to its peers and its hub
/// (through the mesh's gossip, which also pushes to the hub). Without the mesh, straight to the
/// hub, when there is one.
fn pass_on(state: &Arc<NodeState>, block: &[u8]) {
    if state.mesh.get().is_some() {
        state.tell_mesh(super::mesh::MeshCommand::Govern(block.to_vec()));
        return;
    }
    let Some(hub) = super::mesh::hub_url(state) else {
        return;
    };
    let body = meridian_hub::wire::Gossip::Governance(block.to_vec()).encode();
    let state = state.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let outcome = match client {
            Ok(client) => client
                .post(format!("{hub}/v1/gossip"))
                .body(body)
                .timeout(super::mesh::HUB_PUSH_TIMEOUT)
                .send()
                .await
                .map(|r| r.status().is_success()),
            Err(error) => Err(error),
        };
        let label = match outcome {
            Ok(true) => "accepted",
            Ok(false) => "refused",
            Err(_) => "failed",
        };
        state.metrics.count(
            &format!("meridian_hub_pushes_total{{outcome=\"{label}\"}}"),
            1,
        );
    });
}

async fn reindex_all(state: &Arc<NodeState>) -> Result<(), ApiError> {
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || task_state.reindex_all())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// The trusted root: version, expiry, roles and the document, and the versions trusted before
/// it with their thresholds.
#[utoipa::path(get, path = "/api/v1/governance/root", tag = "governance", responses((status = 200, description = "`{version, created_at, expires_at, id, roles: {ROLE: {keys, threshold}}, history: [{version, id, created_at, expires_at, thresholds: {ROLE: \"T of N\"}}], block}`", content_type = "application/json"), (status = 404, description = "governance off", body = ErrorBody)))]
pub async fn get_root(State(state): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let inner = state.governance.view()?;
    let root = inner.root().ok_or_else(not_configured)?;
    let document = root.current();
    let roles: serde_json::Map<String, Value> = document
        .body
        .roles
        .iter()
        .map(|(name, set)| (name.as_str().to_owned(), json!({ "keys": set.keys.iter().map(|k| k.to_did()).collect::<Vec<_>>(), "threshold": set.threshold })))
        .collect();
    let history: Vec<Value> = inner
        .root_history()
        .iter()
        .filter_map(|block| RootDocument::decode(block).ok())
        .map(|doc| {
            let thresholds: serde_json::Map<String, Value> = doc
                .body
                .roles
                .iter()
                .map(|(name, set)| (name.as_str().to_owned(), json!(format!("{} of {}", set.threshold, set.keys.len()))))
                .collect();
            json!({ "version": doc.body.version, "id": doc.id().to_string(), "created_at": doc.body.created_at, "expires_at": doc.body.expires_at, "thresholds": thresholds })
        })
        .collect();
    Ok(Json(json!({
        "version": document.body.version,
        "created_at": document.body.created_at,
        "expires_at": document.body.expires_at,
        "id": document.id().to_string(),
        "roles": roles,
        "history": history,
        "block": b64(&document.to_block()),
    })))
}

/// Advance the trusted root to its next version.
#[utoipa::path(post, path = "/api/v1/governance/root", tag = "governance", security(("adminToken" = [])), request_body(content = String, content_type = "application/vnd.ipld.dag-cbor", description = "the next root version"), responses((status = 200, description = "accepted", content_type = "application/json"), (status = 403, description = "not an admin token", body = ErrorBody), (status = 422, description = "rejected: rollback, skipped version, threshold, expired", body = ErrorBody)))]
pub async fn post_root(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    require_cbor(&headers)?;
    let next = RootDocument::decode(&body).map_err(rejected)?;
    let version = next.body.version;
    state.governance.apply_root(next, &body, (state.clock)())?;
    pass_on(&state, &body);
    announce(&state, &body);
    reindex_all(&state).await?;
    Ok(Json(json!({ "version": version })))
}

/// The policy bundle in force: allow and deny lists, rate tiers, the hub directory and the
/// registries it names.
#[utoipa::path(get, path = "/api/v1/governance/policy", tag = "governance", responses((status = 200, description = "`{version, issued_at, expires_at, id, allow_orgs, deny_orgs, deny_agents, deny_node_keys, allow_node_keys, rate_limits: [{scope, requests_per_second, burst}], hubs: [{region, address, key, http}], registries, block}`", content_type = "application/json"), (status = 404, description = "none, or governance off", body = ErrorBody)))]
pub async fn get_policy(State(state): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let inner = state.governance.view()?;
    inner.root().ok_or_else(not_configured)?;
    let policy = inner.policy().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_policy",
            "no policy bundle has been received",
        )
    })?;
    Ok(Json(json!({
        "version": policy.body.version,
        "expires_at": policy.body.expires_at,
        "id": policy.id().to_string(),
        "deny_orgs": policy.body.deny_orgs,
        "deny_agents": policy.body.deny_agents,
        "deny_node_keys": policy.body.deny_node_keys,
        "allow_orgs": policy.body.allow_orgs,
        "allow_node_keys": policy.body.allow_node_keys,
        "issued_at": policy.body.issued_at,
        "rate_limits": policy.body.rate_limits.iter().map(|t| json!({ "scope": t.scope, "requests_per_second": t.requests_per_second, "burst": t.burst })).collect::<Vec<_>>(),
        "hubs": policy.body.hubs.iter().map(|h| json!({ "region": h.region, "address": h.address, "key": h.key.to_did(), "http": h.http })).collect::<Vec<_>>(),
        "registries": policy.body.registries,
        "block": b64(&policy.to_block()),
    })))
}

/// A key-log proof (`meridian checkpoint prove-document`): with `governance.require_key_log`,
/// the organisation key documents it proves are applied.
#[utoipa::path(post, path = "/api/v1/governance/key-proofs", tag = "governance", security(("adminToken" = [])), request_body(content = String, content_type = "text/plain", description = "a key-log proof"), responses((status = 201, description = "kept; `applied`: whether held documents took effect", content_type = "application/json"), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "not an admin token", body = ErrorBody), (status = 404, description = "the node does not require the key log", body = ErrorBody), (status = 422, description = "the proof does not verify", body = ErrorBody)))]
pub async fn post_key_proof(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_text",
            "a key-log proof is UTF-8 text",
        )
    })?;
    let (document, applied) = state.governance.apply_key_proof(text, (state.clock)())?;
    state.events.emit(
        "governance.key_proof",
        json!({ "document": document.to_string(), "applied": applied }),
    );
    if applied {
        reindex_all(&state).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "document": document.to_string(), "applied": applied })),
    )
        .into_response())
}

/// Put a newer policy bundle in force.
#[utoipa::path(post, path = "/api/v1/governance/policy", tag = "governance", security(("adminToken" = [])), request_body(content = String, content_type = "application/vnd.ipld.dag-cbor", description = "a policy bundle"), responses((status = 200, description = "accepted (changed: false if already in force)", content_type = "application/json"), (status = 403, description = "not an admin token", body = ErrorBody), (status = 422, description = "rejected: older, conflicting, threshold, expired", body = ErrorBody)))]
pub async fn post_policy(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    require_cbor(&headers)?;
    let bundle = PolicyBundle::decode(&body).map_err(rejected)?;
    let version = bundle.body.version;
    let changed = state
        .governance
        .apply_policy(bundle, &body, (state.clock)())?;
    if changed {
        pass_on(&state, &body);
        announce(&state, &body);
        reindex_all(&state).await?;
    }
    Ok(Json(json!({ "version": version, "changed": changed })))
}

/// Add an attestation or a revocation, verified under the trust root.
#[utoipa::path(post, path = "/api/v1/attestations", tag = "governance", security(("adminToken" = [])), request_body(content = String, content_type = "application/vnd.ipld.dag-cbor", description = "an attestation, a revocation or an organisation's key rotation"), responses((status = 201, description = "added", content_type = "application/json"), (status = 202, description = "kept until its key-log proof arrives (governance.require_key_log)", content_type = "application/json"), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "not an admin token", body = ErrorBody), (status = 415, description = "not DAG-CBOR", body = ErrorBody), (status = 422, description = "rejected", body = ErrorBody)))]
pub async fn post_attestation(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    require_cbor(&headers)?;
    if let Ok(rotation) = KeyRotation::decode(&body)
        && !state.governance.enabled()
    {
        // Without governance a rotation moves the name's binding (trust on first use).
        let id = rotation.document.id().to_string();
        let binding = state
            .names
            .apply_rotation(&rotation, (state.clock)())
            .map_err(|error| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "rejected",
                    format!("{error:#}"),
                )
            })?;
        state.events.emit(
            "org.keys_rotated",
            json!({ "id": id, "org": rotation.org, "keys": binding.keys }),
        );
        reindex_all(&state).await?;
        return Ok((
            StatusCode::CREATED,
            Json(json!({ "id": id, "type": "key-rotation", "org": rotation.org, "keys": binding.keys })),
        )
            .into_response());
    }
    if let Ok(rotation) = KeyRotation::decode(&body) {
        let document = rotation.document.id();
        let id = document.to_string();
        let org = state
            .governance
            .apply_rotation(rotation, &body, (state.clock)())?;
        if state.governance.awaiting_key_log(&document) {
            return Ok(awaiting_key_log(&id));
        }
        pass_on(&state, &body);
        announce(&state, &body);
        reindex_all(&state).await?;
        return Ok((
            StatusCode::CREATED,
            Json(json!({ "id": id, "type": "key-rotation", "org": org })),
        )
            .into_response());
    }
    let attestation = Attestation::decode(&body).map_err(rejected)?;
    let kind = attestation.body.kind.clone();
    let id = state
        .governance
        .apply_attestation(attestation, &body, (state.clock)())?;
    if state.governance.awaiting_key_log(&id) {
        return Ok(awaiting_key_log(&id.to_string()));
    }
    pass_on(&state, &body);
    announce(&state, &body);
    reindex_all(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.to_string(), "type": kind })),
    )
        .into_response())
}

/// The event a governance document that took effect is announced with, and its data, the same
/// whether an admin posted it here or it arrived from a peer or the hub: `root.updated`,
/// `policy.updated`, `attestation.revoked`, `attestation.added` or `org.keys_rotated`.
fn document_event(block: &[u8]) -> Option<(&'static str, Value)> {
    if let Ok(root) = RootDocument::decode(block) {
        return Some(("root.updated", json!({ "version": root.body.version })));
    }
    if let Ok(policy) = PolicyBundle::decode(block) {
        return Some(("policy.updated", json!({ "version": policy.body.version })));
    }
    if let Ok(attestation) = Attestation::decode(block) {
        let id = attestation.id().to_string();
        let kind = attestation.body.kind;
        let event = if kind == KIND_REVOCATION {
            "attestation.revoked"
        } else {
            "attestation.added"
        };
        return Some((event, json!({ "id": id, "type": kind })));
    }
    KeyRotation::decode(block).ok().map(|rotation| {
        (
            "org.keys_rotated",
            json!({ "id": rotation.document.id().to_string(), "org": rotation.org }),
        )
    })
}

/// Emits [`document_event`]'s event for a document that just took effect.
fn announce(state: &NodeState, block: &[u8]) {
    if let Some((kind, data)) = document_event(block) {
        state.events.emit(kind, data);
    }
}

/// [`announce`] for a document new here that arrived from a peer or the hub, unless it is a
/// key document held for its key-log proof (it takes effect, and is announced as
/// `governance.key_proof`, when the proof comes).
pub(super) fn announce_arrival(state: &NodeState, block: &[u8]) {
    let waiting = meridian_governance::keylog::key_document_id(block)
        .is_some_and(|(id, _)| state.governance.awaiting_key_log(&id));
    if !waiting {
        announce(state, block);
    }
}

/// Query of `GET /api/v1/attestations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    /// `org:ID`, `agent:ORG/NAME`, `key:DID`, `node:DID` or `cid:CID`.
    subject: Option<String>,
}

fn subject_matches(subject: &Subject, wanted: &str) -> bool {
    let text = match subject {
        Subject::Org(org) => format!("org:{org}"),
        Subject::Agent(agent) => format!("agent:{agent}"),
        Subject::Key(key) => format!("key:{}", key.to_did()),
        Subject::Node(key) => format!("node:{}", key.to_did()),
        Subject::Document(cid) => format!("cid:{cid}"),
    };
    text == wanted
}

/// Attestations held, with revocation status, optionally about one subject.
#[utoipa::path(get, path = "/api/v1/attestations", tag = "governance", params(("subject" = Option<String>, Query, description = "org:ID, agent:ORG/NAME, key:DID, node:DID or cid:CID")), responses((status = 200, description = "attestations", content_type = "application/json"), (status = 404, description = "governance off", body = ErrorBody)))]
pub async fn list_attestations(
    State(state): State<Arc<NodeState>>,
    Query(query): Query<AttestationQuery>,
) -> Result<Json<Value>, ApiError> {
    let inner = state.governance.view()?;
    inner.root().ok_or_else(not_configured)?;
    let mut list: Vec<Value> = inner
        .attestations()
        .all()
        .filter(|(_, a)| {
            query
                .subject
                .as_deref()
                .is_none_or(|s| subject_matches(&a.body.subject, s))
        })
        .map(|(id, a)| {
            json!({
                "id": id.to_string(),
                "type": a.body.kind,
                "issued_at": a.body.issued_at,
                "expires_at": a.body.expires_at,
                "revoked": inner.attestations().is_revoked(id),
                "block": b64(&a.to_block()),
            })
        })
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "attestations": list })))
}

/// Submit an organisation's registration request (no token: it proves possession of its keys).
#[utoipa::path(post, path = "/api/v1/orgs/registrations", tag = "governance", request_body(content = String, content_type = "application/vnd.ipld.dag-cbor", description = "a registration request signed by every key it lists"), responses((status = 202, description = "received", content_type = "application/json"), (status = 415, description = "not DAG-CBOR", body = ErrorBody), (status = 422, description = "invalid or no proof of possession", body = ErrorBody), (status = 503, description = "too many organisations waiting for review (Retry-After)", body = ErrorBody)))]
pub async fn post_registration(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_cbor(&headers)?;
    let registration = Registration::decode_and_verify(&body).map_err(rejected)?;
    let org = registration.org.clone();
    let pending_max = state.config.governance.registrations_pending_max;
    let id = match state
        .governance
        .add_registration(registration, &body, pending_max)
    {
        Ok(id) => id,
        Err(error @ GovernanceError::RegistrationsFull(_)) => {
            return Ok(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registrations_full",
                error.to_string(),
            )
            .retry_after(3600));
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(%org, %id, "registration request received");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "org": org, "status": "pending" })),
    )
        .into_response())
}

/// Registration requests received, for review, each `pending`, `approved` or `rejected` by an
/// attestation held here (`answer`: its id).
#[utoipa::path(get, path = "/api/v1/orgs/registrations", tag = "governance", security(("adminToken" = [])), responses((status = 200, description = "`{registrations: [{id, org, domain, contact, keys, status, answer, block}]}`", content_type = "application/json"), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "not an admin token", body = ErrorBody)))]
pub async fn list_registrations(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let inner = state.governance.view()?;
    let answers = registration_answers(&inner);
    let list: Vec<Value> = inner
        .registrations()
        .iter()
        .map(|(id, r)| {
            let (status, answer) = answers
                .get(id.as_str())
                .map_or(("pending", None), |(kind, answer)| (*kind, Some(answer)));
            json!({ "id": id, "org": r.org, "domain": r.domain, "contact": r.contact, "keys": r.keys.iter().map(|k| k.to_did()).collect::<Vec<_>>(), "status": status, "answer": answer, "block": b64(&r.to_block()) })
        })
        .collect();
    Ok(Json(json!({ "registrations": list })))
}

/// Registrations answered by an attestation held here, by registration id: `approved` (an
/// unrevoked `org.verified` naming it) or `rejected`, with the answer's id.
fn registration_answers(
    inner: &meridian_sync::governance::GovernanceRead<'_>,
) -> std::collections::HashMap<String, (&'static str, String)> {
    use meridian_governance::attestation::KIND_ORG_VERIFIED;
    use meridian_registry::cbor::Value as Cbor;
    let mut answers = std::collections::HashMap::new();
    for (id, attestation) in inner.attestations().all() {
        let status = match attestation.body.kind.as_str() {
            KIND_ORG_VERIFIED => "approved",
            "org.rejected" => "rejected",
            _ => continue,
        };
        if inner.attestations().is_revoked(id) {
            continue;
        }
        if let Some(Cbor::Link(registration)) = attestation.body.claims.get("registration") {
            answers.insert(registration.to_string(), (status, id.to_string()));
        }
    }
    answers
}

/// Query of the approval draft.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// Days the approval stays valid (default 365, at most 3650).
    expires_in_days: Option<u32>,
}

/// The longest approval the console drafts, in days.
pub const APPROVAL_DAYS_MAX: u32 = 3650;

/// The unsigned `org.verified` attestation approving a registration, as `meridian org approve`
/// writes it: attest admins co-sign it offline (`meridian attest cosign`) and upload the result
/// to `POST /api/v1/attestations`. The node signs nothing.
#[utoipa::path(get, path = "/api/v1/orgs/registrations/{id}/approval", tag = "governance", security(("adminToken" = [])), params(("id" = String, Path, description = "the registration's id"), ("expires_in_days" = Option<u32>, Query, description = "days the approval stays valid (default 365, at most 3650)")), responses((status = 200, description = "the unsigned approval, to co-sign", content_type = "application/vnd.ipld.dag-cbor"), (status = 400, description = "bad expiry", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "not an admin token", body = ErrorBody), (status = 404, description = "no such registration, or governance off", body = ErrorBody)))]
pub async fn draft_approval(
    State(state): State<Arc<NodeState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(query): Query<ApprovalQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let days = query.expires_in_days.unwrap_or(365);
    if days == 0 || days > APPROVAL_DAYS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_expiry",
            format!("expires_in_days must be 1 to {APPROVAL_DAYS_MAX}"),
        ));
    }
    let inner = state.governance.view()?;
    inner.root().ok_or_else(not_configured)?;
    let registration = inner.registrations().get(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_registration",
            format!("no registration request `{id}` is held here"),
        )
    })?;
    let now = (state.clock)();
    let approval = registration
        .approve(now, now + i64::from(days) * 86_400)
        .map_err(rejected)?;
    let file = format!(
        "attachment; filename=\"{}.verified.cbor\"",
        registration.org
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.ipld.dag-cbor".to_owned(),
            ),
            (header::CONTENT_DISPOSITION, file),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        approval.to_block(),
    )
        .into_response())
}

/// Every organisation an attestation held here is about, with its status under the trust
/// root (`verified`, `revoked`, `expired` or `unverified`), whether the policy in force denies
/// it, its bound domain and current keys, and the attestations about it.
#[utoipa::path(get, path = "/api/v1/governance/orgs", tag = "governance", responses((status = 200, description = "`{orgs: [{org, status, denied, domain, keys, verified_until, attestations: [{id, type, issued_at, expires_at, revoked}]}]}`", content_type = "application/json"), (status = 404, description = "governance off", body = ErrorBody)))]
pub async fn list_orgs(State(state): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    use meridian_governance::attestation::{KIND_ORG_VERIFIED, OrgStatus};
    let inner = state.governance.view()?;
    inner.root().ok_or_else(not_configured)?;
    let now = (state.clock)();
    let set = inner.attestations();
    let orgs: std::collections::BTreeSet<&str> = set
        .all()
        .filter_map(|(_, a)| match &a.body.subject {
            Subject::Org(org) => Some(org.as_str()),
            _ => None,
        })
        .collect();
    let policy = inner.policy();
    let list: Vec<Value> = orgs
        .into_iter()
        .map(|org| {
            let (status, keys) = match set.org_status(org, now) {
                OrgStatus::Verified { keys } => ("verified", keys.iter().map(|k| k.to_did()).collect()),
                OrgStatus::Revoked => ("revoked", Vec::new()),
                OrgStatus::Expired => ("expired", Vec::new()),
                OrgStatus::Unverified => ("unverified", Vec::new()),
            };
            let denied = policy.is_some_and(|p| p.body.denies_org(org));
            let subject = Subject::Org(org.to_owned());
            let mut attestations: Vec<Value> = set
                .about(&subject)
                .map(|(id, a, revoked)| json!({ "id": id.to_string(), "type": a.body.kind, "issued_at": a.body.issued_at, "expires_at": a.body.expires_at, "revoked": revoked }))
                .collect();
            attestations.sort_by_key(|a| a["issued_at"].as_i64());
            let verified_until = set
                .about(&subject)
                .filter(|(_, a, revoked)| !revoked && a.body.kind == KIND_ORG_VERIFIED && a.body.expires_at > now)
                .map(|(_, a, _)| a.body.expires_at)
                .max();
            json!({ "org": org, "status": status, "denied": denied, "domain": set.org_domain(org, now), "keys": keys, "verified_until": verified_until, "attestations": attestations })
        })
        .collect();
    Ok(Json(json!({ "orgs": list })))
}
