//! Publishing: local organisations add, update and delete their agents, and the node signs the
//! next commit of its own registry.
//!
//! The node keeps its own head (commit and tree) in memory and changes it under one lock, so
//! publishes are serialised and each one stores only what changed: the new tree path, the
//! manifest and the commit, in one atomic batch. A request is authorised by a bearer token of the
//! organisation the manifest names; an `Idempotency-Key` makes a retried request safe.

use super::openapi::ErrorBody;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use meridian_registry::Cid;
use meridian_registry::car::Limits;
use meridian_registry::commit::{Commit, CommitBody};
use meridian_registry::keys::{Keypair, PublicKey};
use meridian_registry::manifest::{Manifest, ManifestBody};
use meridian_registry::snapshot::{RegistryTree, Snapshot};
use meridian_registry::store::{BlockStore as _, Head, StoreBatch};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{ApiError, NodeState};
use super::index::AgentRecord;

/// How long the node's own commits stay valid, in seconds.
pub const COMMIT_VALID_SECS: i64 = 7 * 86_400;
/// Idempotency keys remembered (oldest forgotten first).
pub const IDEMPOTENCY_ENTRIES_MAX: usize = 10_000;
/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// The node's own registry head.
#[derive(Debug, Clone)]
pub struct OwnHead {
    /// The signed commit.
    pub commit: Commit,
    /// Its CID.
    pub cid: Cid,
    /// Its tree.
    pub tree: RegistryTree,
}

/// Loads the node's own head from the store, if it has published before.
pub fn load_own(
    state_store: &meridian_registry::store::SledStore,
    did: &str,
) -> anyhow::Result<Option<OwnHead>> {
    let Some(head) = state_store.head(did)? else {
        return Ok(None);
    };
    let snapshot = Snapshot::load(state_store, &head.commit, Limits::DEFAULT)?;
    Ok(Some(OwnHead {
        commit: snapshot.commit,
        cid: snapshot.commit_cid,
        tree: snapshot.tree,
    }))
}

/// Idempotent answers by `(org, key)`: body hash, status and JSON; and their insertion order.
type Answers = (
    HashMap<(String, String), (String, u16, Value)>,
    VecDeque<(String, String)>,
);

/// Write-side state: the node key, its head and remembered idempotent answers.
pub struct Publisher {
    key: Keypair,
    own: Mutex<Option<OwnHead>>,
    answers: Mutex<Answers>,
}

impl Publisher {
    /// Signs `message` with the node key (a claim the node makes to its hub).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message)
    }

    /// A publisher for the node key, starting from its head in the store.
    pub fn new(key: Keypair, own: Option<OwnHead>) -> Self {
        Self {
            key,
            own: Mutex::new(own),
            answers: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// Reloads the head after a snapshot of the node's own key was imported from outside.
    pub fn reset(&self, own: Option<OwnHead>) {
        if let Ok(mut guard) = self.own.lock() {
            *guard = own;
        }
    }

    /// The CID this node's own registry lists under `agent_id` (a manifest or a removal).
    pub fn own_entry(&self, agent_id: &str) -> Option<Cid> {
        let own = self.own.lock().ok()?;
        own.as_ref()?.tree.get(agent_id.as_bytes())
    }

    /// The node's public key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }
}

enum Change {
    /// A manifest, or a signed removal (tombstone) that takes the agent's place in the tree.
    Put(Box<Manifest>),
    /// The node stops listing the agent (no signature: it binds no other publisher).
    Delete(String),
    /// Re-sign the same tree with a fresh validity window.
    Refresh,
    /// Drop these agents' signed removals dated before the cutoff (Unix seconds): their
    /// retention ran out. An agent whose entry is no longer such a removal is left alone.
    Prune(Vec<String>, i64),
}

/// Applies one change: a new tree, a new signed commit, one atomic store batch, the index.
/// Returns the commit's CID and seq and whether the agent existed before.
fn apply(state: &NodeState, change: Change) -> Result<(Cid, u64, bool), ApiError> {
    let publisher = &state.publisher;
    let mut own = publisher
        .own
        .lock()
        .map_err(|_| ApiError::internal("publish lock poisoned"))?;
    let old_tree = own.as_ref().map(|h| h.tree.clone()).unwrap_or_default();
    let mut tree = old_tree.clone();
    let mut blocks: Vec<(Cid, Arc<[u8]>)> = Vec::new();
    let (agent_id, existed) = change_tree(state, &mut tree, &mut blocks, &change)?;
    let refresh = matches!(change, Change::Refresh);
    if refresh && own.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "nothing_published",
            "this node has published nothing",
        ));
    }
    if let Some(current) = own.as_ref()
        && tree.root_cid() == current.tree.root_cid()
        && !refresh
    {
        // Nothing changed (the same manifest again): no new commit.
        return Ok((current.cid, current.commit.body.seq, existed));
    }
    let now = (state.clock)();
    let (seq, prev) = match own.as_ref() {
        Some(head) => (head.commit.body.seq + 1, Some(head.cid)),
        None => (1, None),
    };
    let commit = CommitBody {
        publisher: publisher.key.public(),
        seq,
        data: tree.root_cid(),
        prev,
        created_at: now,
        expires_at: now + COMMIT_VALID_SECS,
    }
    .sign(&publisher.key)
    .map_err(ApiError::internal)?;
    let (commit_cid, commit_block) = commit.to_block_and_cid();
    blocks.extend(tree.diff(&old_tree).new_nodes);
    blocks.push((commit_cid, commit_block.into()));
    let did = publisher.key.did();
    state
        .store
        .apply(StoreBatch {
            blocks,
            heads: vec![(
                did.clone(),
                Head {
                    commit: commit_cid,
                    seq,
                },
            )],
            equivocations: Vec::new(),
        })
        .map_err(ApiError::internal)?;
    *own = Some(OwnHead {
        commit,
        cid: commit_cid,
        tree,
    });
    let event = index_change(
        state,
        change,
        &agent_id,
        &did,
        (seq, prev, commit_cid),
        |agent| {
            own.as_ref()
                .is_some_and(|h| h.tree.get(agent.as_bytes()).is_some())
        },
    )?;
    if let Some(kind) = event {
        state.events.emit(
            kind,
            json!({ "agent_id": agent_id, "publisher": did, "seq": seq }),
        );
    }
    state.events.emit(
        "head.accepted",
        json!({ "publisher": did, "seq": seq, "commit": commit_cid.to_string() }),
    );
    tracing::info!(agent = %agent_id, seq, commit = %commit_cid, "published");
    if let Ok(Some(block)) = state.store.get(&commit_cid) {
        state.tell_mesh(super::mesh::MeshCommand::Announce(block.to_vec()));
    }
    Ok((commit_cid, seq, existed))
}

/// Takes one applied change into the search index (`listed` says whether the node's new tree
/// still lists an agent); returns the event it makes, if any. `head` is the new seq, the
/// previous commit and the new one.
fn index_change(
    state: &NodeState,
    change: Change,
    agent_id: &str,
    did: &str,
    head: (u64, Option<Cid>, Cid),
    listed: impl Fn(&str) -> bool,
) -> Result<Option<&'static str>, ApiError> {
    let (seq, prev, commit_cid) = head;
    let mut index = state
        .index
        .write()
        .map_err(|_| ApiError::internal("index lock poisoned"))?;
    let event = match change {
        Change::Put(manifest) => {
            let cid = manifest.to_block_and_cid().0;
            index.upsert(AgentRecord::new(&manifest, &cid, did, seq).with_commit(&commit_cid))
        }
        Change::Delete(_) => index.remove(agent_id, did),
        Change::Refresh => None,
        Change::Prune(agents, _) => {
            for agent in agents.iter().filter(|a| !listed(a)) {
                index.remove(agent, did);
            }
            None
        }
    };
    // The index took in the one change on top of the previous head: it now reflects this one.
    if prev.is_some() && index.indexed_commit(did) == prev {
        index.set_indexed_commit(did, commit_cid);
    }
    Ok(event)
}

/// Applies `change` to `tree`, adding the new manifest's block to `blocks`; returns the agent
/// and whether it was listed before.
fn change_tree(
    state: &NodeState,
    tree: &mut RegistryTree,
    blocks: &mut Vec<(Cid, Arc<[u8]>)>,
    change: &Change,
) -> Result<(String, bool), ApiError> {
    match change {
        Change::Put(manifest) => {
            let (cid, block) = manifest.to_block_and_cid();
            if let Some(current) = tree.get(manifest.body.agent_id.as_bytes())
                && current != cid
            {
                stale_check(state, &current, manifest)?;
            }
            blocks.push((cid, block.into()));
            let existed = tree
                .insert(manifest.body.agent_id.as_bytes(), cid)
                .is_some();
            // The same bound every importer applies: a registry its peers would refuse is not built.
            let max = meridian_registry::car::Limits::DEFAULT.agents_max;
            if tree.len() > max {
                return Err(unprocessable(
                    "too_many_agents",
                    format!(
                        "this node already publishes {max} agents, the most a snapshot may hold"
                    ),
                ));
            }
            Ok((manifest.body.agent_id.clone(), existed))
        }
        Change::Refresh => Ok((String::new(), false)),
        Change::Prune(agents, cutoff) => {
            let mut pruned = Vec::new();
            for agent in agents {
                let Some(current) = tree.get(agent.as_bytes()) else {
                    continue;
                };
                let block = state.store.get(&current).map_err(ApiError::internal)?;
                let expired = block
                    .and_then(|b| Manifest::decode(&b).ok())
                    .is_some_and(|m| m.is_removal() && m.body.updated_at < *cutoff);
                if expired {
                    tree.remove(agent.as_bytes());
                    pruned.push(agent.as_str());
                }
            }
            Ok((pruned.join(", "), !pruned.is_empty()))
        }
        Change::Delete(agent_id) => {
            if tree.remove(agent_id.as_bytes()).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    format!("this node does not publish `{agent_id}`"),
                ));
            }
            Ok((agent_id.clone(), true))
        }
    }
}

/// Refuses to replace the agent's current entry (`current`, a manifest or removal in the node's
/// tree) by an entry that is not newer: a removal older than the manifest it would remove, or a
/// manifest not newer than the removal it would undo. (An older manifest over a newer one is the
/// publisher's own business and stays allowed, as before removals existed.)
fn stale_check(state: &NodeState, current: &Cid, new: &Manifest) -> Result<(), ApiError> {
    let Some(block) = state.store.get(current).map_err(ApiError::internal)? else {
        return Ok(());
    };
    let Ok(current) = Manifest::decode(&block) else {
        return Ok(());
    };
    let (now_at, new_at) = (current.body.updated_at, new.body.updated_at);
    if new.is_removal() && !current.is_removal() && new_at < now_at {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_removal",
            format!(
                "the removal of `{}` is dated {new_at}, before the published manifest ({now_at}): sign it with a later `updated_at`",
                new.body.agent_id
            ),
        ));
    }
    if !new.is_removal() && current.is_removal() && new_at <= now_at {
        return Err(removed_conflict(&new.body.agent_id, now_at, new_at));
    }
    Ok(())
}

fn removed_conflict(agent_id: &str, removed_at: i64, updated_at: i64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "agent_removed",
        format!(
            "`{agent_id}` was removed by its organisation as of {removed_at}; a manifest dated {updated_at} would still be hidden: publish it with `updated_at` after {removed_at}"
        ),
    )
}

/// Re-signs the node's head when less than half its validity is left, so peers never see it
/// expire while the node runs. Returns the new seq when it did.
pub fn refresh_if_due(state: &NodeState) -> Result<Option<u64>, ApiError> {
    let now = (state.clock)();
    let due = state
        .publisher
        .own
        .lock()
        .map_err(|_| ApiError::internal("publish lock poisoned"))?
        .as_ref()
        .is_some_and(|head| head.commit.body.expires_at - now < COMMIT_VALID_SECS / 2);
    if !due {
        return Ok(None);
    }
    let (_, seq, _) = apply(state, Change::Refresh)?;
    tracing::info!(seq, "re-signed the node's head before it expires");
    Ok(Some(seq))
}

/// Drops the signed removals this node publishes whose retention
/// (`node.removal_retention_days`) has run out, in one new commit; their agents are then
/// unknown (404) rather than removed (410). Returns the agents dropped.
pub fn prune_removals_if_due(state: &NodeState) -> Result<Vec<String>, ApiError> {
    let Some(retention) = state.config.node.removal_retention_secs() else {
        return Ok(Vec::new());
    };
    let cutoff = (state.clock)().saturating_sub(retention);
    let did = state.publisher.key.did();
    let expired = state
        .index
        .read()
        .map_err(|_| ApiError::internal("index lock poisoned"))?
        .removals_before(&did, cutoff);
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let before = own_lists(state, &expired)?;
    let (_, seq, _) = apply(state, Change::Prune(expired.clone(), cutoff))?;
    let after = own_lists(state, &expired)?;
    let dropped: Vec<String> = expired
        .into_iter()
        .zip(before.into_iter().zip(after))
        .filter(|(_, (was, is))| *was && !*is)
        .map(|(agent, _)| agent)
        .collect();
    if !dropped.is_empty() {
        state.metrics.count(
            "meridian_removals_expired_total",
            u64::try_from(dropped.len()).unwrap_or(u64::MAX),
        );
        tracing::info!(seq, agents = ?dropped, "dropped signed removals past node.removal_retention_days");
    }
    Ok(dropped)
}

/// Whether this node's own registry lists each of `agents`.
fn own_lists(state: &NodeState, agents: &[String]) -> Result<Vec<bool>, ApiError> {
    let own = state
        .publisher
        .own
        .lock()
        .map_err(|_| ApiError::internal("publish lock poisoned"))?;
    Ok(agents
        .iter()
        .map(|agent| {
            own.as_ref()
                .is_some_and(|h| h.tree.get(agent.as_bytes()).is_some())
        })
        .collect())
}

/// The org a request's bearer token may write for.
pub(crate) fn authorise(state: &NodeState, headers: &HeaderMap) -> Result<String, ApiError> {
    let unauthorised =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorised("this endpoint needs `Authorization: Bearer <token>`"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorised("the Authorization header must be `Bearer <token>`"))?;
    state
        .tokens
        .org_for(token.trim())
        .map_err(ApiError::internal)?
        .ok_or_else(|| unauthorised("unknown or revoked token"))
}

/// A publish request: a signed manifest block, or the card and the organisation's signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// A signed manifest block, base64.
    manifest: Option<String>,
    /// The card JSON text, exactly as signed.
    card: Option<String>,
    /// The region (default: the node's).
    region: Option<String>,
    /// The signed update time.
    updated_at: Option<i64>,
    /// The signing key.
    signer: Option<String>,
    /// The signature, base64.
    sig: Option<String>,
    /// Signed as deprecated (`true`; absent otherwise).
    deprecated: Option<bool>,
    /// A deprecated agent's successor, `org/name`.
    superseded_by: Option<String>,
}

/// The deprecation a JSON publish request asks for, applied to `body`.
fn with_deprecation(
    request: &PublishRequest,
    body: ManifestBody,
) -> Result<ManifestBody, ApiError> {
    match (request.deprecated, &request.superseded_by) {
        (None | Some(false), None) => Ok(body),
        (Some(true), successor) => body
            .deprecate(successor.as_deref())
            .map_err(|e| unprocessable("invalid_manifest", e.to_string())),
        (_, Some(_)) => Err(unprocessable(
            "invalid_manifest",
            "`superseded_by` needs `deprecated: true`",
        )),
    }
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn manifest_from_request(state: &NodeState, org: &str, body: &[u8]) -> Result<Manifest, ApiError> {
    let request: PublishRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let block = match (&request.manifest, &request.card) {
        (Some(manifest), None) => b64.decode(manifest).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_base64",
                format!("manifest: {e}"),
            )
        })?,
        (None, Some(card)) => {
            let signer = request.signer.as_deref().ok_or_else(|| {
                unprocessable("missing_field", "`signer` is required with `card`")
            })?;
            let sig = request
                .sig
                .as_deref()
                .ok_or_else(|| unprocessable("missing_field", "`sig` is required with `card`"))?;
            let updated_at = request.updated_at.ok_or_else(|| {
                unprocessable("missing_field", "`updated_at` is required with `card`")
            })?;
            let region = request
                .region
                .clone()
                .unwrap_or_else(|| state.config.node.region.clone());
            let body = ManifestBody::from_card(card, org, &region, updated_at)
                .map_err(|e| unprocessable("invalid_card", e.to_string()))?;
            let body = with_deprecation(&request, body)?;
            let signer = PublicKey::from_did(signer)
                .map_err(|e| unprocessable("bad_signer", e.to_string()))?;
            let sig: [u8; 64] = b64
                .decode(sig)
                .ok()
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| unprocessable("bad_signature", "`sig` is not 64 bytes of base64"))?;
            Manifest { body, signer, sig }.to_block()
        }
        _ => {
            return Err(unprocessable(
                "bad_request",
                "send either `manifest` or `card` with `signer`, `sig` and `updated_at`",
            ));
        }
    };
    let manifest =
        Manifest::decode(&block).map_err(|e| unprocessable("invalid_manifest", e.to_string()))?;
    manifest
        .verify_signature()
        .map_err(|e| unprocessable("bad_signature", e.to_string()))?;
    if manifest.body.org != org {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "your token writes for `{org}`, not for `{}`",
                manifest.body.org
            ),
        ));
    }
    Ok(manifest)
}

/// Refuses what the federated view would refuse anyway: with governance, what the acceptance
/// rule refuses; without, a signer other than the keys the organisation's name is bound to.
fn admissible(state: &NodeState, manifest: &Manifest) -> Result<(), ApiError> {
    let now = (state.clock)();
    if let Err(reasons) = state.governance.accept(manifest, &state.node_did, now) {
        let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
        return Err(unprocessable(
            "not_accepted",
            format!("governance refuses this agent: {}", reasons.join("; ")),
        ));
    }
    if !state.governance.enabled()
        && let Some(bound) = state
            .names
            .bind_local(&manifest.body.org, &manifest.signer.to_did(), now)
            .map_err(ApiError::internal)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_bound",
            format!(
                "organisation `{}` is bound on this node to other keys ({}); the operator can rebind it with `meridian node names pin`",
                manifest.body.org,
                bound.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

/// Replays a remembered answer, refuses a reused key with another body, or runs `work`.
fn idempotent(
    state: &NodeState,
    org: &str,
    headers: &HeaderMap,
    body: &[u8],
    work: impl FnOnce() -> Result<(StatusCode, Value), ApiError>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX => {
            Some(key.to_owned())
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible characters"
                ),
            ));
        }
    };
    let body_hash = blake3::hash(body).to_hex().to_string();
    if let Some(key) = &key {
        let answers = state
            .publisher
            .answers
            .lock()
            .map_err(|_| ApiError::internal("idempotency lock poisoned"))?;
        if let Some((hash, status, value)) = answers.0.get(&(org.to_owned(), key.clone())) {
            if *hash != body_hash {
                return Err(unprocessable(
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            return Ok((
                status,
                [("idempotent-replay", "true")],
                axum::Json(value.clone()),
            )
                .into_response());
        }
    }
    let (status, value) = work()?;
    if let Some(key) = key {
        let mut answers = state
            .publisher
            .answers
            .lock()
            .map_err(|_| ApiError::internal("idempotency lock poisoned"))?;
        let entry = (org.to_owned(), key);
        answers
            .0
            .insert(entry.clone(), (body_hash, status.as_u16(), value.clone()));
        answers.1.push_back(entry);
        while answers.1.len() > IDEMPOTENCY_ENTRIES_MAX {
            if let Some(oldest) = answers.1.pop_front() {
                answers.0.remove(&oldest);
            }
        }
    }
    Ok((status, axum::Json(value)).into_response())
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if media.starts_with("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send application/json, not `{media}`"),
        ))
    }
}

async fn put_agent(
    state: Arc<NodeState>,
    headers: HeaderMap,
    body: Bytes,
    path_id: Option<String>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let org = authorise(&state, &headers)?;
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || {
        idempotent(&task_state, &org, &headers, &body, || {
            let manifest = manifest_from_request(&task_state, &org, &body)?;
            if let Some(path_id) = &path_id
                && *path_id != manifest.body.agent_id
            {
                return Err(unprocessable(
                    "agent_mismatch",
                    format!("the path names `{path_id}` but the manifest is for `{}`", manifest.body.agent_id),
                ));
            }
            if manifest.is_removal() {
                return Err(unprocessable("removal_not_publishable", format!(
                    "this is a signed removal of `{}`: send it with DELETE /api/v1/agents/{}",
                    manifest.body.agent_id, manifest.body.agent_id)));
            }
            let agent_id = manifest.body.agent_id.clone();
            let manifest_cid = manifest.to_block_and_cid().0;
            let (commit, seq, existed) = publish_signed(&task_state, manifest)?;
            let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
            Ok((status, json!({ "agent_id": agent_id, "manifest": manifest_cid.to_string(), "commit": commit.to_string(), "seq": seq })))
        })
    })
    .await
    .map_err(ApiError::internal)?
}

/// Publishes a signed manifest (an agent, a new version, a deprecation, or a removal) as this
/// node's own: refused as the federated view would refuse it, and a manifest the
/// organisation's removal still hides refused too. Returns the commit, its seq and whether the
/// agent was listed before.
pub(crate) fn publish_signed(
    state: &NodeState,
    manifest: Manifest,
) -> Result<(Cid, u64, bool), ApiError> {
    admissible(state, &manifest)?;
    if !manifest.is_removal() {
        let hidden_by = state
            .index
            .read()
            .map_err(|_| ApiError::internal("index lock poisoned"))?
            .removal(&manifest.body.agent_id)
            .map(|r| r.updated_at);
        if let Some(removed_at) = hidden_by
            && removed_at >= manifest.body.updated_at
        {
            return Err(removed_conflict(
                &manifest.body.agent_id,
                removed_at,
                manifest.body.updated_at,
            ));
        }
    }
    apply(state, Change::Put(Box::new(manifest)))
}

/// Publish a new or changed agent: a signed manifest, or the card with its signature.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", security(("orgToken" = [])), params(("Idempotency-Key" = Option<String>, Header, description = "replays the answer of an earlier identical request")), request_body(content = String, content_type = "application/json", description = "Either {manifest: base64 of the signed manifest block} (what `meridian agent sign` prints), or {card, region, updated_at, signer, sig}: `card` the A2A card as a JSON string, `signer` an organisation key as did:key, and `sig` the base64 ed25519 signature by `signer` over the canonical DAG-CBOR map {$type: \"meridian.manifest.v1\", agent_id, org, region, updated_at, card, signer} (every manifest field but `sig`; map keys sorted by length, then bytewise; `agent_id` is `org/` plus the card name's slug). A deprecation (what `meridian agent deprecate` sends) is signed with `deprecated: true` and, optionally, `superseded_by: \"org/name\"` among those fields; in the second form, send them beside `card`."), responses((status = 201, description = "published", content_type = "application/json"), (status = 200, description = "updated, or unchanged", content_type = "application/json"), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "token of another organisation", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 415, description = "not JSON", body = ErrorBody), (status = 409, description = "the organisation name is bound to other keys on this node (`name_bound`), or the organisation removed the agent at or after this manifest's `updated_at` (`agent_removed`)", body = ErrorBody), (status = 422, description = "invalid card, bad signature, refused by governance, idempotency conflict", body = ErrorBody)))]
pub async fn create_agent(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_agent(state, headers, body, None).await
}

/// Publish this agent (the manifest must name it).
#[utoipa::path(put, path = "/api/v1/agents/{org}/{agent}", tag = "agents", security(("orgToken" = [])), params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name")), request_body(content = String, content_type = "application/json", description = "as for POST /api/v1/agents"), responses((status = 200, description = "updated", content_type = "application/json"), (status = 201, description = "published", content_type = "application/json"), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "other organisation", body = ErrorBody), (status = 409, description = "name bound to other keys, or the agent was removed after this manifest's date", body = ErrorBody), (status = 422, description = "manifest names another agent, or invalid", body = ErrorBody)))]
pub async fn update_agent(
    State(state): State<Arc<NodeState>>,
    Path((org, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    put_agent(state, headers, body, Some(format!("{org}/{agent}"))).await
}

/// Remove an agent: with a signed removal in the body, the organisation withdraws it everywhere;
/// without a body, this node only stops listing it.
#[utoipa::path(delete, path = "/api/v1/agents/{org}/{agent}", tag = "agents", security(("orgToken" = [])), params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name"), ("Idempotency-Key" = Option<String>, Header, description = "replays the answer of an earlier identical request")), request_body(content = String, content_type = "application/json", description = "Optional. {manifest: base64 of a signed removal block} (what `meridian agent remove --out` writes): a manifest with `removed: true`, an empty `card` and the agent's `agent_id`, signed by an organisation key. The removal takes the agent's place in this node's registry and beats every manifest of the agent with an older or equal `updated_at` on every node, whoever lists it, so a copy elsewhere cannot bring the agent back. Without a body the node only stops listing the agent; another publisher's copy may then still be served."), responses((status = 200, description = "removed", content_type = "application/json"), (status = 400, description = "malformed JSON", body = ErrorBody), (status = 401, description = "no or bad token", body = ErrorBody), (status = 403, description = "other organisation", body = ErrorBody), (status = 404, description = "unsigned removal of an agent this node does not list", body = ErrorBody), (status = 409, description = "the removal is older than the listed manifest, or the name is bound to other keys", body = ErrorBody), (status = 422, description = "not a signed removal of this agent, bad signature, or refused by governance", body = ErrorBody)))]
pub async fn delete_agent(
    State(state): State<Arc<NodeState>>,
    Path((org, agent)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token_org = authorise(&state, &headers)?;
    if token_org != org {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your token writes for `{token_org}`, not for `{org}`"),
        ));
    }
    let signed = !body.iter().all(u8::is_ascii_whitespace);
    if signed {
        require_json(&headers)?;
    }
    let agent_id = format!("{org}/{agent}");
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let request = [agent_id.as_bytes(), b"\n", &body].concat();
        idempotent(&task_state, &token_org, &headers, &request, || {
            if !signed {
                let (commit, seq, _) = apply(&task_state, Change::Delete(agent_id.clone()))?;
                return Ok((StatusCode::OK, json!({ "agent_id": agent_id, "deleted": true, "signed": false, "commit": commit.to_string(), "seq": seq })));
            }
            let removal = manifest_from_request(&task_state, &token_org, &body)?;
            if !removal.is_removal() || removal.body.agent_id != agent_id {
                return Err(unprocessable("not_a_removal", format!(
                    "the body must be a signed removal of `{agent_id}` (`meridian agent remove --out`), not {} of `{}`",
                    if removal.is_removal() { "a removal" } else { "a manifest" }, removal.body.agent_id)));
            }
            let removal_cid = removal.to_block_and_cid().0;
            let removed_at = removal.body.updated_at;
            let (commit, seq, _) = publish_signed(&task_state, removal)?;
            Ok((StatusCode::OK, json!({ "agent_id": agent_id, "deleted": true, "signed": true, "removal": removal_cid.to_string(), "removed_at": removed_at, "commit": commit.to_string(), "seq": seq })))
        })
    })
    .await
    .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::daemon::config::NodeConfig;

    static NOW: AtomicI64 = AtomicI64::new(1_800_000_000);

    fn clock() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn the_head_is_re_signed_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = meridian_registry::store::SledStore::open(&dir.path().join("store")).unwrap();
        let key = Keypair::from_secret(&[7; 32]);
        let state = NodeState::new(store, NodeConfig::default(), key, dir.path(), clock).unwrap();
        assert!(
            refresh_if_due(&state).unwrap().is_none(),
            "nothing published yet"
        );
        let org = Keypair::from_secret(&[8; 32]);
        let card = r#"{"name":"A","supportedInterfaces":[{"url":"https://a.example/x"}]}"#;
        let manifest = ManifestBody::from_card(card, "acme", "local", clock())
            .unwrap()
            .sign(&org);
        apply(&state, Change::Put(Box::new(manifest))).unwrap();
        assert!(refresh_if_due(&state).unwrap().is_none(), "fresh head");
        NOW.fetch_add(COMMIT_VALID_SECS / 2 + 1, Ordering::SeqCst);
        assert_eq!(refresh_if_due(&state).unwrap(), Some(2));
        assert!(refresh_if_due(&state).unwrap().is_none());
        let head = state.store.head(&state.node_did).unwrap().unwrap();
        assert_eq!(head.seq, 2);
        let own = load_own(&state.store, &state.node_did).unwrap().unwrap();
        assert_eq!(own.commit.body.expires_at, clock() + COMMIT_VALID_SECS);
        assert_eq!(own.tree.len(), 1);
    }

    static LATER: AtomicI64 = AtomicI64::new(1_800_000_000);

    fn later() -> i64 {
        LATER.load(Ordering::SeqCst)
    }

    #[test]
    fn a_removal_is_kept_for_its_retention_then_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = meridian_registry::store::SledStore::open(&dir.path().join("store")).unwrap();
        let key = Keypair::from_secret(&[7; 32]);
        let mut config = NodeConfig::default();
        config.node.removal_retention_days = 1;
        let state = NodeState::new(store, config, key, dir.path(), later).unwrap();
        let org = Keypair::from_secret(&[8; 32]);
        let t = later();
        let put = |name: &str, at: i64| {
            let card = format!(
                r#"{{"name":"{name}","supportedInterfaces":[{{"url":"https://a.example/x"}}]}}"#
            );
            let body = ManifestBody::from_card(&card, "acme", "local", at).unwrap();
            apply(&state, Change::Put(Box::new(body.sign(&org)))).unwrap();
        };
        let remove = |agent: &str, at: i64| {
            let body = ManifestBody::tombstone(agent, "local", at).unwrap();
            apply(&state, Change::Put(Box::new(body.sign(&org)))).unwrap();
        };
        put("gone", t);
        put("kept", t);
        put("back", t);
        remove("acme/gone", t + 1);
        remove("acme/back", t + 1);
        put("back", t + 2);
        let gone = |state: &NodeState| state.index.read().unwrap().removal("acme/gone").is_some();
        assert!(gone(&state));
        LATER.fetch_add(3_600, Ordering::SeqCst);
        assert!(
            prune_removals_if_due(&state).unwrap().is_empty(),
            "within a day: kept (410)"
        );
        LATER.fetch_add(86_400, Ordering::SeqCst);
        assert_eq!(prune_removals_if_due(&state).unwrap(), ["acme/gone"]);
        assert!(
            !gone(&state),
            "past its retention: unknown (404), not removed (410)"
        );
        assert_eq!(state.metrics.counter("meridian_removals_expired_total"), 1);
        let own = load_own(&state.store, &state.node_did).unwrap().unwrap();
        assert!(own.tree.get(b"acme/gone").is_none());
        assert!(own.tree.get(b"acme/kept").is_some() && own.tree.get(b"acme/back").is_some());
        let seq = own.commit.body.seq;
        assert!(prune_removals_if_due(&state).unwrap().is_empty());
        // A prune naming an agent that is listed (not a removal) leaves it alone, and makes
        // no commit.
        apply(&state, Change::Prune(vec!["acme/kept".into()], i64::MAX)).unwrap();
        let own = load_own(&state.store, &state.node_did).unwrap().unwrap();
        assert_eq!(own.commit.body.seq, seq);
        assert!(own.tree.get(b"acme/kept").is_some());
    }
}
