//! Registry change events, served as Server-Sent Events at `GET /api/v1/events`.
//!
//! Every change gets the next id from one counter, so ids are monotonic. The last
//! [`EVENTS_HISTORY_MAX`] events are kept: a client reconnecting with `Last-Event-ID` gets what it
//! missed, or, when the history no longer reaches back that far, a `history.truncated` event
//! telling it to reload, before the live stream continues.

use super::openapi::ErrorBody;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::http::{ApiError, NodeState};

/// Events kept for reconnecting clients.
pub const EVENTS_HISTORY_MAX: usize = 10_000;
/// Live events buffered per slow client before it is told to reconnect.
pub const EVENTS_LIVE_BUFFER: usize = 1_024;
const _: () = assert!(EVENTS_LIVE_BUFFER <= EVENTS_HISTORY_MAX);

/// One registry change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryEvent {
    /// Monotonic id.
    pub id: u64,
    /// `agent.added`, `agent.changed`, `agent.deprecated`, `agent.removed`, `head.accepted`, or one
    /// of governance's, names' or the mesh's kinds (listed on [`stream`]).
    pub kind: String,
    /// Details.
    pub data: Value,
}

/// The history and the live channel.
pub struct EventLog {
    history: Mutex<(u64, VecDeque<RegistryEvent>)>,
    live: broadcast::Sender<RegistryEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        let (live, _) = broadcast::channel(EVENTS_LIVE_BUFFER);
        Self {
            history: Mutex::new((0, VecDeque::new())),
            live,
        }
    }
}

impl EventLog {
    /// Records an event and sends it to live listeners.
    pub fn emit(&self, kind: &str, data: Value) {
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        history.0 += 1;
        let event = RegistryEvent {
            id: history.0,
            kind: kind.to_owned(),
            data,
        };
        history.1.push_back(event.clone());
        while history.1.len() > EVENTS_HISTORY_MAX {
            history.1.pop_front();
        }
        // Sent while holding the lock, so live order equals id order.
        let _ = self.live.send(event);
    }

    /// The newest id given out so far.
    fn newest(&self) -> u64 {
        self.history.lock().map_or(0, |h| h.0)
    }

    /// Events after `after`, and whether the history still reached back that far.
    fn since(&self, after: u64) -> (Vec<RegistryEvent>, bool, u64) {
        let Ok(history) = self.history.lock() else {
            return (Vec::new(), false, 0);
        };
        let oldest = history.1.front().map_or(history.0 + 1, |e| e.id);
        // `after` comes from the client: no arithmetic on it may overflow.
        let complete = after.saturating_add(1) >= oldest || after >= history.0;
        let events = history.1.iter().filter(|e| e.id > after).cloned().collect();
        (events, complete, history.0)
    }
}

fn to_sse(event: &RegistryEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.clone())
        .data(event.data.to_string())
}

/// Query parameters of the event stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Resume after this id (same as the `Last-Event-ID` header).
    last_event_id: Option<u64>,
}

/// Server-Sent Events of registry changes; resume with Last-Event-ID. The event names:
/// `agent.added`, `agent.changed`, `agent.deprecated`, `agent.removed`, `head.accepted`,
/// `publisher.equivocated`; governance's `root.updated`, `policy.updated`,
/// `attestation.added`, `attestation.revoked`, `org.keys_rotated` (whether an admin posted the
/// document here or it arrived from a peer or the hub), `governance.key_proof`; names' `name.conflict`, `name.domain`;
/// the mesh's `peer.connected`, `peer.disconnected`, `peer.banned` (the hub is the peer `hub`);
/// and `history.truncated` when a resumed stream lost events.
#[utoipa::path(get, path = "/api/v1/events", tag = "registry", params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event"), ("last_event_id" = Option<u64>, Query, description = "the same, as a parameter")), responses((status = 200, description = "the stream", content_type = "text/event-stream"), (status = 400, description = "bad Last-Event-ID", body = ErrorBody), (status = 503, description = "http.sse_subscribers_max clients follow the stream already (Retry-After)", body = ErrorBody)))]
pub async fn stream(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> Result<Response, ApiError> {
    let header_id = match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(|s| s.trim().parse::<u64>()))
    {
        None => None,
        Some(Ok(Ok(id))) => Some(id),
        Some(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "bad_last_event_id",
                "Last-Event-ID must be an event id",
            ));
        }
    };
    let subscribers_max = state.config.http.sse_subscribers_max;
    if state.events.live.receiver_count() >= subscribers_max {
        state
            .metrics
            .count("meridian_events_subscribers_refused_total", 1);
        return Ok(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("{subscribers_max} clients follow the event stream, the most this node takes (http.sse_subscribers_max); retry later"),
        )
        .retry_after(5));
    }
    // Subscribe before reading the history, so nothing falls between the two.
    let receiver = state.events.live.subscribe();
    let resume = header_id.or(params.last_event_id);
    let (backlog, complete, newest) = match resume {
        Some(after) => state.events.since(after),
        None => (Vec::new(), true, state.events.newest()),
    };
    let mut first: Vec<Event> = Vec::new();
    if !complete {
        first.push(
            Event::default()
                .event("history.truncated")
                .data(json!({ "message": "events were lost since your Last-Event-ID; reload the registry, then follow on", "newest": newest }).to_string()),
        );
    }
    let last_sent = backlog.last().map_or(resume.unwrap_or(newest), |e| e.id);
    first.extend(backlog.iter().map(to_sse));
    let initial = futures_util::stream::iter(first.into_iter().map(Ok::<Event, Infallible>));
    let live = futures_util::stream::unfold(
        (receiver, last_sent, false),
        |(mut receiver, last_sent, done)| async move {
            if done {
                return None;
            }
            loop {
                match receiver.recv().await {
                    Ok(event) if event.id <= last_sent => continue,
                    Ok(event) => {
                        let id = event.id;
                        return Some((Ok(to_sse(&event)), (receiver, id, false)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: say so and end; the client resumes from history with Last-Event-ID.
                        let event = Event::default()
                        .event("stream.lagged")
                        .data(json!({ "message": "you fell behind; reconnect with Last-Event-ID", "last_event_id": last_sent }).to_string());
                        return Some((Ok(event), (receiver, last_sent, true)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    Ok(Sse::new(initial.chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_resumes_and_says_when_it_no_longer_reaches_back() {
        let log = EventLog::default();
        for i in 0..5 {
            log.emit("agent.added", json!({ "i": i }));
        }
        let (events, complete, newest) = log.since(2);
        assert!(complete);
        assert_eq!(newest, 5);
        assert_eq!(
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(log.since(5).0.is_empty());
        for i in 0..EVENTS_HISTORY_MAX {
            log.emit("agent.changed", json!({ "i": i }));
        }
        let (events, complete, newest) = log.since(2);
        assert!(!complete, "ids 3..=5 fell out of the history");
        assert_eq!(newest, (EVENTS_HISTORY_MAX + 5) as u64);
        assert_eq!(events.len(), EVENTS_HISTORY_MAX);
        // Exactly at the edge: the oldest kept is id 6, so resuming after 5 loses nothing.
        assert!(log.since(5).1);
        // Ids from the future or at the very top of the range: nothing to send, no overflow.
        let (events, complete, _) = log.since(u64::MAX);
        assert!(events.is_empty() && complete);
    }
}
