//! What this node knows of the federation, for operators: its peers and their standing, how
//! far behind each publisher it is, the invalid messages and bans it saw, and how long its
//! latest syncs took. The mesh writes a fresh [`FederationView`] once a second (from the sync
//! engine); `GET /api/v1/federation` serves it with the heads the store holds, and the event
//! stream carries `peer.connected`, `peer.disconnected` and `peer.banned` as they happen.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use meridian_registry::store::BlockStore as _;
use serde_json::{Value, json};

use super::http::{ApiError, NodeState};
use super::openapi::ErrorBody;

/// Publishers whose acceptance time is remembered (the newest acceptances win).
const ACCEPTED_KEPT_MAX: usize = 100_000;

/// The mesh's latest report and when each publisher's head was accepted here.
#[derive(Default)]
pub struct FederationView {
    report: RwLock<Option<MeshReport>>,
    accepted_at: RwLock<BTreeMap<String, i64>>,
}

/// What the mesh reports once a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshReport {
    /// When it was made, unix seconds.
    pub at: i64,
    /// Peers known: `{peer, did, region, connected, score, inflight, banned_for_secs}`.
    pub peers: Vec<Value>,
    /// Per publisher being synced: the newest seq seen but not yet imported.
    pub seen: BTreeMap<String, u64>,
    /// Invalid messages and blocks since start, by offense.
    pub invalid: BTreeMap<String, u64>,
    /// Peers banned since start.
    pub bans_total: u64,
    /// Snapshots imported, refused and given up since start.
    pub imports: (u64, u64, u64),
    /// The latest syncs: `{publisher, seq, ms, at}`, oldest first.
    pub syncs: Vec<Value>,
    /// Whether the hub answered its last poll (`None` without a hub).
    pub hub_up: Option<bool>,
}

impl FederationView {
    /// Keeps the mesh's latest report.
    pub fn set_report(&self, report: MeshReport) {
        if let Ok(mut slot) = self.report.write() {
            *slot = Some(report);
        }
    }

    /// Notes that `publisher`'s head was accepted at `at` (unix seconds).
    pub fn accepted(&self, publisher: &str, at: i64) {
        if let Ok(mut map) = self.accepted_at.write() {
            if map.len() >= ACCEPTED_KEPT_MAX && !map.contains_key(publisher) {
                let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(p, _)| p.clone());
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
            map.insert(publisher.to_owned(), at);
        }
    }

    /// The latest report, if the mesh has made one.
    pub fn report(&self) -> Option<MeshReport> {
        self.report.read().ok().and_then(|r| r.clone())
    }

    fn accepted_at(&self, publisher: &str) -> Option<i64> {
        self.accepted_at.read().ok()?.get(publisher).copied()
    }
}

/// Peers and their state, per-publisher heads with lag, invalid messages and bans, and the
/// latest sync times.
#[utoipa::path(get, path = "/api/v1/federation", tag = "registry", responses((status = 200, description = "`{mesh, updated_at, hub, peers: [{peer, did, region, connected, score, inflight, banned_for_secs}], publishers: [{publisher, own, seq, commit, accepted_at, seen_seq, lag}], invalid: {OFFENSE: count}, invalid_total, bans_total, imports: {accepted, refused, abandoned}, syncs: [{publisher, seq, ms, at}]}`; `mesh` is false (and the mesh's figures empty) when this node runs without its mesh", content_type = "application/json"), (status = 500, description = "the store could not be read", body = ErrorBody)))]
pub async fn status(State(state): State<Arc<NodeState>>) -> Result<Json<Value>, ApiError> {
    let heads = state.store.heads().map_err(ApiError::internal)?;
    let report = state.federation.report();
    let seen = report.as_ref().map(|r| &r.seen);
    let mut publishers: Vec<Value> = heads
        .iter()
        .map(|(publisher, head)| {
            let seen_seq = seen.and_then(|s| s.get(publisher)).copied();
            json!({
                "publisher": publisher,
                "own": *publisher == state.node_did,
                "seq": head.seq,
                "commit": head.commit.to_string(),
                "accepted_at": state.federation.accepted_at(publisher),
                "seen_seq": seen_seq,
                "lag": seen_seq.map_or(0, |s| s.saturating_sub(head.seq)),
            })
        })
        .collect();
    // Publishers seen but never accepted here yet.
    for (publisher, seq) in seen.into_iter().flatten() {
        if !heads.contains_key(publisher) {
            publishers.push(json!({
                "publisher": publisher, "own": false, "seq": null, "commit": null,
                "accepted_at": null, "seen_seq": seq, "lag": seq,
            }));
        }
    }
    let report = report.unwrap_or_default();
    let hub = super::mesh::hub_url(&state).map(|url| json!({ "url": url, "up": report.hub_up }));
    Ok(Json(json!({
        "mesh": state.config.mesh.enabled,
        "updated_at": (report.at > 0).then_some(report.at),
        "hub": hub,
        "peers": report.peers,
        "publishers": publishers,
        "invalid_total": report.invalid.values().sum::<u64>(),
        "invalid": report.invalid,
        "bans_total": report.bans_total,
        "imports": { "accepted": report.imports.0, "refused": report.imports.1, "abandoned": report.imports.2 },
        "syncs": report.syncs,
    })))
}
