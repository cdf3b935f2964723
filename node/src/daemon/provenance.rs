//! An agent's provenance, checked now: the acceptance rule's verdict on the manifest the node
//! serves (decoded from the store, not taken from the index), the
//! organisation's keys with their history (its verification, rotations and revocations, each
//! with its key-log position when the node requires the key log), or, without governance, the
//! name's binding. `GET /api/v1/agents/{org}/{agent}/provenance`, which the console's agent
//! page shows under "Provenance you can check".

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::http::{ApiError, NodeState};
use super::openapi::ErrorBody;

/// What the acceptance rule checks, in the order it asks (for the verdict's `checks`).
const RULE: [&str; 5] = [
    "the organisation is verified (an unrevoked, unexpired org.verified attestation)",
    "the signing key is one of the organisation's keys",
    "the signing key was not revoked or rotated out",
    "the policy in force denies neither the organisation, the agent nor the publishing node",
    "the policy in force has not expired",
];

/// The acceptance rule's verdict on the agent's manifest, and its organisation's keys and
/// their history.
#[utoipa::path(get, path = "/api/v1/agents/{org}/{agent}/provenance", tag = "agents", params(("org" = String, Path, description = "organisation id"), ("agent" = String, Path, description = "agent name")), responses((status = 200, description = "`{agent_id, manifest, signer, governance, verdict: {accepted, checks, reasons}, keys: {current, threshold, signer_current, binding, history: [{document, change, state, key_log: {index, size}}]}, key_log_required}`", content_type = "application/json"), (status = 404, description = "unknown agent", body = ErrorBody), (status = 410, description = "removed by its organisation", body = ErrorBody)))]
pub async fn provenance(
    State(state): State<Arc<NodeState>>,
    Path((org, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let agent_id = format!("{org}/{name}");
    let (manifest, publisher, cid) = super::a2a::manifest_of(&state, &org, &name)?;
    let signer = manifest.signer.to_did();
    let now = (state.clock)();
    let governed = state.governance.enabled();
    let verdict = match state.governance.accept(&manifest, &publisher, now) {
        Ok(()) if governed => json!({ "accepted": true, "checks": RULE, "reasons": [] }),
        Ok(()) => json!({
            "accepted": true,
            "checks": ["no trust root here: the organisation's name is bound to its keys (on first use, or pinned by the operator), and the manifest carries a valid signature by one of them"],
            "reasons": [],
        }),
        Err(reasons) => json!({
            "accepted": false,
            "checks": RULE,
            "reasons": reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    };
    Ok(Json(json!({
        "agent_id": agent_id,
        "manifest": cid,
        "signer": signer,
        "governance": governed,
        "verdict": verdict,
        "keys": keys(&state, &org, &signer, governed, now)?,
        "key_log_required": state.governance.key_log_required(),
    })))
}

/// The organisation's current keys and their history (governance on), or its name's binding.
fn keys(
    state: &NodeState,
    org: &str,
    signer: &str,
    governed: bool,
    now: i64,
) -> Result<Value, ApiError> {
    if !governed {
        let binding = state.names.binding(org).map_err(ApiError::internal)?;
        let binding = binding.as_ref();
        let current: Vec<&String> = binding.map(|b| b.keys.iter().collect()).unwrap_or_default();
        return Ok(json!({
            "current": current,
            "threshold": null,
            "signer_current": current.iter().any(|k| k.as_str() == signer),
            "binding": binding.map(|b| json!({ "how": b.how, "bound_at": b.bound_at })),
            "history": [],
        }));
    }
    let set = state.governance.org_key_set(org, now);
    let current: Vec<String> = set
        .as_ref()
        .map(|s| s.keys.iter().map(|k| k.to_did()).collect())
        .unwrap_or_default();
    let history: Vec<Value> = state
        .governance
        .key_history(org)
        .into_iter()
        .map(|entry| {
            json!({
                "document": entry.document.to_string(),
                "change": entry.change,
                "state": entry.state,
                "key_log": entry.log.map(|(index, size)| json!({ "index": index, "size": size })),
            })
        })
        .collect();
    Ok(json!({
        "current": current,
        "threshold": set.map(|s| s.threshold),
        "signer_current": current.iter().any(|k| k == signer),
        "binding": null,
        "history": history,
    }))
}
