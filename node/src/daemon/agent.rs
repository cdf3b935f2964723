//! The node is itself an A2A agent: at `/.well-known/agent-card.json` it serves its own card, and
//! at `POST /a2a` it answers JSON-RPC (A2A v1.0 and v0.3 method names and shapes, streaming,
//! `GetTask`/`tasks/get`, `CancelTask`/`tasks/cancel`) with two skills over the verified
//! federated view: **find agents** (free text and structured filters; the answer is a message
//! with a data part listing the matches with their proxy URLs, ranks and provenance) and
//! **explain an agent** (who published it, who vouches for it, whether it is deprecated or
//! removed). This is the protocol wrapper ARD §5.3.6 allows: an orchestrator that speaks only
//! A2A finds other agents through the node.
//!
//! Every answer is a completed task, kept in a bounded store ([`TASKS_MAX`], [`TASKS_BYTES_MAX`],
//! [`TASK_TTL_SECS`])
//! so `tasks/get` can read it again; a completed task cannot be cancelled.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::http::NodeState;
use super::ranking::{FilterField, RankFilter};

/// Most tasks kept for `tasks/get`; the oldest go first.
pub const TASKS_MAX: usize = 10_000;
/// Most bytes the kept tasks may hold together (requests and answers); the oldest go first,
/// so large requests cannot make the store grow past it.
pub const TASKS_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Longest `contextId` a request may name, in bytes.
pub const CONTEXT_ID_BYTES_MAX: usize = 256;
/// How long a task is kept, in seconds.
pub const TASK_TTL_SECS: i64 = 3600;
/// Most matches one "find agents" answer lists.
pub const MATCHES_MAX: usize = 50;
/// Matches listed when the request names no `limit`.
const MATCHES_DEFAULT: usize = 10;

/// The A2A version a request speaks, from its method names: v1.0 (`SendMessage`, PascalCase,
/// `ROLE_*` and `TASK_STATE_*` enums, parts without `kind`) or v0.3 (`message/send`, `kind`
/// discriminators, lowercase enums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    V1,
    V03,
}

/// What a task did: the request's words and data, and the answer's text and data.
#[derive(Debug, Clone)]
struct TaskRecord {
    id: String,
    context_id: String,
    request_text: String,
    request_data: Value,
    answer_text: String,
    answer_data: Value,
    created_at: i64,
}

impl TaskRecord {
    /// About how many bytes the task holds.
    fn bytes(&self) -> usize {
        let value_bytes = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
        self.id.len()
            + self.context_id.len()
            + self.request_text.len()
            + self.answer_text.len()
            + value_bytes(&self.request_data)
            + value_bytes(&self.answer_data)
    }
}

/// The tasks, oldest first with their sizes, and the bytes they hold together.
#[derive(Debug, Default)]
struct Kept {
    tasks: BTreeMap<String, TaskRecord>,
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

/// The bounded task store: at most [`TASKS_MAX`] tasks and [`TASKS_BYTES_MAX`] bytes.
#[derive(Debug, Default)]
pub struct Tasks {
    kept: Mutex<Kept>,
}

impl Tasks {
    fn insert(&self, task: TaskRecord) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let size = task.bytes();
        kept.order.push_back((task.id.clone(), size));
        kept.bytes += size;
        kept.tasks.insert(task.id.clone(), task);
        while kept.order.len() > TASKS_MAX || kept.bytes > TASKS_BYTES_MAX {
            let Some((oldest, size)) = kept.order.pop_front() else {
                break;
            };
            kept.bytes -= size;
            kept.tasks.remove(&oldest);
        }
    }

    /// How many tasks are kept, and the bytes they hold.
    pub fn usage(&self) -> (usize, usize) {
        self.kept
            .lock()
            .map_or((0, 0), |kept| (kept.tasks.len(), kept.bytes))
    }

    fn get(&self, id: &str, now: i64) -> Option<TaskRecord> {
        let kept = self.kept.lock().ok()?;
        kept.tasks
            .get(id)
            .filter(|t| now - t.created_at < TASK_TTL_SECS)
            .cloned()
    }
}

/// A JSON-RPC error: code and message.
struct RpcError(i64, String);

impl RpcError {
    fn invalid_params(message: impl Into<String>) -> Self {
        RpcError(-32602, message.into())
    }
}

/// The node's own agent card: its JSON-RPC endpoint (`/a2a`), in the v1.0 and v0.3 forms, and
/// its two skills.
#[utoipa::path(get, path = "/.well-known/agent-card.json", tag = "a2a", responses((status = 200, description = "the node's own A2A agent card: find agents, explain an agent", content_type = "application/json")))]
pub async fn card(State(state): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    let base = match super::a2a::card_base(&state, &headers) {
        Ok(base) => base,
        Err(error) => return error.into_response(),
    };
    let endpoint = format!("{base}/a2a");
    axum::Json(json!({
        "name": "Meridian node",
        "description": "Finds agents in a federation of verified agent registries and explains who publishes and vouches for them. Every answer lists the agents' proxy URLs through this node and the provenance a client can check.",
        "version": env!("CARGO_PKG_VERSION"),
        "provider": { "organization": "Meridian", "url": base },
        "supportedInterfaces": [{ "url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "1.0" }],
        "url": endpoint,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": { "streaming": true, "pushNotifications": false },
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["application/json", "text/plain"],
        "skills": [
            {
                "id": "find-agents",
                "name": "Find agents",
                "description": "Ranked search of the verified federated view. Text, and optionally a data part with filters: org, region, tag, skill, status (active or deprecated), limit (at most 50). The answer's data part lists each match with its rank, score, proxy URL, card URL, status and provenance.",
                "tags": ["discovery", "registry", "search"],
                "examples": ["find an agent that books flights", "translation agents in eu-west"],
            },
            {
                "id": "explain-agent",
                "name": "Explain an agent",
                "description": "Who published an agent, who vouches for its organisation, and whether it is deprecated or removed. Text `explain ORG/NAME`, or a data part {\"skill\": \"explain-agent\", \"agent\": \"ORG/NAME\"}.",
                "tags": ["provenance", "trust"],
                "examples": ["explain acme/echo"],
            },
        ],
    }))
    .into_response()
}

/// The node's own A2A agent (JSON-RPC): `SendMessage`/`message/send`,
/// `SendStreamingMessage`/`message/stream`, `GetTask`/`tasks/get`, `CancelTask`/`tasks/cancel`.
#[utoipa::path(post, path = "/a2a", tag = "a2a", request_body(content = String, content_type = "application/json", description = "a JSON-RPC request"), responses((status = 200, description = "a JSON-RPC answer (a completed task), or an SSE stream of task events for the streaming methods", content_type = "application/json"), (status = 429, description = "over the caller's rate (JSON-RPC error, Retry-After)")))]
pub async fn rpc(
    State(state): State<Arc<NodeState>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return rpc_error(Value::Null, RpcError(-32700, format!("not JSON: {e}"))),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let (Some("2.0"), Some(method)) = (
        request.get("jsonrpc").and_then(Value::as_str),
        request.get("method").and_then(Value::as_str),
    ) else {
        return rpc_error(
            id,
            RpcError(
                -32600,
                "a JSON-RPC 2.0 request names `jsonrpc` and `method`".into(),
            ),
        );
    };
    let client = client.map(|axum::Extension(axum::extract::ConnectInfo(a))| a);
    if let Err(refusal) = super::a2a::admit_node_agent(&state, &headers, client) {
        return refusal.answer(&body);
    }
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let base = super::a2a::card_base(&state, &headers).unwrap_or_default();
    let (flavour, streaming) = match method {
        "SendMessage" => (Flavour::V1, false),
        "SendStreamingMessage" => (Flavour::V1, true),
        "message/send" => (Flavour::V03, false),
        "message/stream" => (Flavour::V03, true),
        "GetTask" | "tasks/get" => {
            let flavour = if method == "GetTask" {
                Flavour::V1
            } else {
                Flavour::V03
            };
            return task_lookup(&state, id, &params, flavour, false);
        }
        "CancelTask" | "tasks/cancel" => {
            let flavour = if method == "CancelTask" {
                Flavour::V1
            } else {
                Flavour::V03
            };
            return task_lookup(&state, id, &params, flavour, true);
        }
        m if m.contains("ushNotification") => {
            return rpc_error(
                id,
                RpcError(-32003, "push notifications are not supported".into()),
            );
        }
        other => {
            return rpc_error(
                id,
                RpcError(
                    -32601,
                    format!("method `{other}` is not one this agent answers"),
                ),
            );
        }
    };
    let task = match answer(&state, &params, &base) {
        Ok(task) => task,
        Err(error) => return rpc_error(id, error),
    };
    state.node_agent.insert(task.clone());
    state.metrics.count("meridian_node_agent_requests_total", 1);
    if streaming {
        return stream(id, &task, flavour);
    }
    let result = match flavour {
        Flavour::V1 => json!({ "task": render_task(&task, flavour, "completed") }),
        Flavour::V03 => render_task(&task, flavour, "completed"),
    };
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

fn rpc_error(id: Value, RpcError(code, message): RpcError) -> Response {
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }))
        .into_response()
}

/// `GetTask`/`tasks/get` and `CancelTask`/`tasks/cancel`: the stored task, or
/// -32001 TaskNotFound; a (completed) task cannot be cancelled: -32002 TaskNotCancelable.
fn task_lookup(
    state: &NodeState,
    id: Value,
    params: &Value,
    flavour: Flavour,
    cancel: bool,
) -> Response {
    let Some(task_id) = params.get("id").and_then(Value::as_str) else {
        return rpc_error(id, RpcError::invalid_params("`params.id` names the task"));
    };
    let Some(task) = state.node_agent.get(task_id, (state.clock)()) else {
        return rpc_error(
            id,
            RpcError(
                -32001,
                format!("task `{task_id}` is not known (tasks are kept {TASK_TTL_SECS} s)"),
            ),
        );
    };
    if cancel {
        return rpc_error(
            id,
            RpcError(
                -32002,
                format!("task `{task_id}` is completed: it cannot be cancelled"),
            ),
        );
    }
    let result = render_task(&task, flavour, "completed");
    axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
}

/// The words and data of a message's parts (both part shapes: v1.0 `{text}`/`{data}`, v0.3
/// `{kind, text}`/`{kind, data}`).
fn read_message(message: &Value) -> Result<(String, serde_json::Map<String, Value>), RpcError> {
    let parts = message
        .get("parts")
        .and_then(Value::as_array)
        .ok_or_else(|| RpcError::invalid_params("`params.message.parts` is a list of parts"))?;
    let mut text = Vec::new();
    let mut data = serde_json::Map::new();
    for part in parts {
        if let Some(words) = part.get("text").and_then(Value::as_str) {
            text.push(words.to_owned());
        } else if let Some(object) = part.get("data").and_then(Value::as_object) {
            data.extend(object.clone());
        }
    }
    Ok((text.join(" ").trim().to_owned(), data))
}

/// Runs the skill the message asks for; the completed task.
fn answer(state: &NodeState, params: &Value, base: &str) -> Result<TaskRecord, RpcError> {
    let message = params
        .get("message")
        .ok_or_else(|| RpcError::invalid_params("`params.message` is the message to answer"))?;
    let (text, data) = read_message(message)?;
    let skill = data
        .get("skill")
        .or_else(|| message.get("metadata").and_then(|m| m.get("skillId")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let explain_target = match skill.as_deref() {
        Some("explain-agent") => data.get("agent").and_then(Value::as_str).map(str::to_owned),
        Some("find-agents") => None,
        _ => text
            .strip_prefix("explain ")
            .map(|rest| rest.trim().to_owned())
            .filter(|rest| rest.split('/').count() == 2 && !rest.contains(' ')),
    };
    let (answer_text, answer_data) = match (skill.as_deref(), explain_target) {
        (Some("explain-agent"), None) => {
            return Err(RpcError::invalid_params(
                "explain-agent needs `agent`: ORG/NAME",
            ));
        }
        (_, Some(agent)) => explain(state, &agent),
        _ => find(state, &text, &data, base)?,
    };
    let context_id = match message.get("contextId").and_then(Value::as_str) {
        Some(id) if id.len() > CONTEXT_ID_BYTES_MAX => {
            return Err(RpcError::invalid_params(format!(
                "`contextId` is longer than {CONTEXT_ID_BYTES_MAX} bytes"
            )));
        }
        Some(id) => id.to_owned(),
        None => new_id(),
    };
    Ok(TaskRecord {
        id: new_id(),
        context_id,
        request_text: text,
        request_data: Value::Object(data),
        answer_text,
        answer_data,
        created_at: (state.clock)(),
    })
}

/// A fresh random id (128 bits, hex).
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: a clock-and-counter id is still unique in this process.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return format!("task-{n:016x}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// "Find agents": ranked search with the data part's filters.
fn find(
    state: &NodeState,
    text: &str,
    data: &serde_json::Map<String, Value>,
    base: &str,
) -> Result<(String, Value), RpcError> {
    let query = data
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or(text)
        .trim()
        .to_owned();
    if query.is_empty() {
        return Err(RpcError::invalid_params(
            "find-agents needs words to look for: text, or `query` in a data part",
        ));
    }
    let limit = data
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(MATCHES_DEFAULT, |n| (n as usize).clamp(1, MATCHES_MAX));
    let filter = find_filter(data)?;
    let now = (state.clock)();
    let index = state
        .index
        .read()
        .map_err(|_| RpcError(-32603, "index lock poisoned".into()))?;
    let ranked = index
        .rank(&query, &filter, 0, limit)
        .map_err(|e| RpcError(-32603, e.to_string()))?;
    let matches: Vec<Value> = ranked
        .hits
        .iter()
        .enumerate()
        .map(|(at, (record, score))| match_json(state, (at + 1, *score), record, base, now))
        .collect();
    let mut lines = vec![format!(
        "{} agent{} match \"{query}\"{}:",
        ranked.total,
        if ranked.total == 1 { "" } else { "s" },
        if ranked.total > matches.len() {
            format!(" (the best {} listed)", matches.len())
        } else {
            String::new()
        }
    )];
    for (record, score) in &ranked.hits {
        lines.push(format!(
            "- {} ({}, score {score}): {}",
            record.agent_id, record.status, record.description
        ));
    }
    if ranked.total == 0 {
        lines = vec![format!("no agent matches \"{query}\"")];
    }
    Ok((
        lines.join("\n"),
        json!({ "query": query, "total": ranked.total, "matches": matches }),
    ))
}

/// The filters of a "find agents" data part: `org`, `region`, `tag`, `skill`, `status`, each a
/// string or a list of strings.
fn find_filter(data: &serde_json::Map<String, Value>) -> Result<RankFilter, RpcError> {
    let mut filter = RankFilter::default();
    for (key, field) in [
        ("org", FilterField::Org),
        ("region", FilterField::Region),
        ("tag", FilterField::Tag),
        ("skill", FilterField::Skill),
        ("status", FilterField::Status),
    ] {
        match data.get(key) {
            None => {}
            Some(Value::String(one)) => {
                filter.any(field, vec![one.clone()]);
            }
            Some(Value::Array(many)) => {
                filter.any(
                    field,
                    many.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                );
            }
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "`{key}` is a string or a list of strings"
                )));
            }
        }
    }
    Ok(filter)
}

/// One match of a "find agents" answer: its rank and score, the agent, its proxy and card URLs
/// through this node, and its provenance.
fn match_json(
    state: &NodeState,
    (rank, score): (usize, u8),
    record: &super::index::AgentRecord,
    base: &str,
    now: i64,
) -> Value {
    let domain = state.org_domain(&record.org, now);
    json!({
        "rank": rank,
        "score": score,
        "agentId": record.agent_id,
        "name": record.name,
        "description": record.description,
        "status": record.status,
        "supersededBy": record.superseded_by,
        "proxyUrl": format!("{base}/a2a/{}", record.agent_id),
        "cardUrl": format!("{base}/a2a/{}/.well-known/agent-card.json", record.agent_id),
        "provenance": {
            "org": record.org,
            "domain": domain,
            "region": record.region,
            "publisher": record.publisher,
            "seq": record.seq,
            "commit": record.commit,
            "manifest": record.manifest,
            "signer": record.signer,
        },
    })
}

/// "Explain an agent": its publisher, its organisation's attestations and domain, and its
/// life-cycle state.
fn explain(state: &NodeState, agent: &str) -> (String, Value) {
    let now = (state.clock)();
    let Ok(index) = state.index.read() else {
        return (
            "the index is unavailable".into(),
            json!({ "agentId": agent, "known": false }),
        );
    };
    let org = agent.split('/').next().unwrap_or_default().to_owned();
    let attestations: Vec<Value> = state
        .governance
        .org_attestation_kinds(&org)
        .into_iter()
        .map(|(kind, id)| json!({ "type": kind, "id": id }))
        .collect();
    let domain = state.org_domain(&org, now);
    if let Some(record) = index.get(agent) {
        let vouched = if attestations.is_empty() {
            "no attestation vouches for its organisation (governance off, or none issued)"
                .to_owned()
        } else {
            let kinds: Vec<&str> = attestations
                .iter()
                .filter_map(|a| a["type"].as_str())
                .collect();
            format!("its organisation holds {}", kinds.join(", "))
        };
        let state_text = match (&record.superseded_by, record.is_deprecated()) {
            (Some(next), true) => format!("deprecated by its organisation in favour of {next}"),
            (None, true) => "deprecated by its organisation".to_owned(),
            _ => "active".to_owned(),
        };
        let text = format!(
            "{agent} ({}) is {state_text}. Published by node {} (seq {}), signed by {}; {vouched}{}.",
            record.name,
            record.publisher,
            record.seq,
            record.signer,
            domain
                .as_deref()
                .map_or_else(String::new, |d| format!("; bound to the domain {d}")),
        );
        let data = json!({
            "agentId": agent, "known": true, "status": record.status,
            "supersededBy": record.superseded_by, "org": org, "domain": domain,
            "publisher": record.publisher, "seq": record.seq, "commit": record.commit,
            "manifest": record.manifest, "signer": record.signer, "attestations": attestations,
        });
        return (text, data);
    }
    if let Some(removal) = index.removal(agent) {
        let text = format!(
            "{agent} was removed by its organisation as of {} (signed removal {}, listed by {}).",
            removal.updated_at, removal.manifest, removal.publisher
        );
        return (
            text,
            json!({ "agentId": agent, "known": true, "status": "removed", "removedAt": removal.updated_at, "removal": removal.manifest, "publisher": removal.publisher }),
        );
    }
    (
        format!("{agent} is not an agent this node knows."),
        json!({ "agentId": agent, "known": false }),
    )
}

/// A part in `flavour`'s shape.
fn part(flavour: Flavour, kind: &str, value: Value) -> Value {
    match flavour {
        Flavour::V1 => json!({ kind: value }),
        Flavour::V03 => json!({ "kind": kind, kind: value }),
    }
}

/// A message in `flavour`'s shape.
fn message(flavour: Flavour, task: &TaskRecord, agent: bool, parts: Vec<Value>) -> Value {
    let role = match (flavour, agent) {
        (Flavour::V1, true) => "ROLE_AGENT",
        (Flavour::V1, false) => "ROLE_USER",
        (Flavour::V03, true) => "agent",
        (Flavour::V03, false) => "user",
    };
    let mut message = json!({
        "messageId": format!("{}-{}", task.id, if agent { "answer" } else { "request" }),
        "role": role,
        "parts": parts,
        "taskId": task.id,
        "contextId": task.context_id,
    });
    if flavour == Flavour::V03 {
        message["kind"] = json!("message");
    }
    message
}

/// A task state in `flavour`'s shape (`completed` or `working`).
fn task_state(flavour: Flavour, state: &str) -> String {
    match flavour {
        Flavour::V1 => format!("TASK_STATE_{}", state.to_uppercase()),
        Flavour::V03 => state.to_owned(),
    }
}

/// The task's status (`completed` with the answer, or `working`).
fn status(task: &TaskRecord, flavour: Flavour, state: &str) -> Value {
    let mut status = json!({
        "state": task_state(flavour, state),
        "timestamp": meridian_registry::time::iso8601(task.created_at),
    });
    if state == "completed" {
        status["message"] = message(
            flavour,
            task,
            true,
            vec![
                part(flavour, "text", json!(task.answer_text)),
                part(flavour, "data", task.answer_data.clone()),
            ],
        );
    }
    status
}

/// The task's artifact: the answer's data.
fn artifact(task: &TaskRecord, flavour: Flavour) -> Value {
    json!({
        "artifactId": format!("{}-result", task.id),
        "name": "result",
        "parts": [part(flavour, "data", task.answer_data.clone())],
    })
}

/// The task in `flavour`'s shape, in `state` (`completed`: with its answer and artifact).
fn render_task(task: &TaskRecord, flavour: Flavour, state: &str) -> Value {
    let mut request_parts = Vec::new();
    if !task.request_text.is_empty() {
        request_parts.push(part(flavour, "text", json!(task.request_text)));
    }
    if task.request_data.as_object().is_some_and(|d| !d.is_empty()) {
        request_parts.push(part(flavour, "data", task.request_data.clone()));
    }
    let mut rendered = json!({
        "id": task.id,
        "contextId": task.context_id,
        "status": status(task, flavour, state),
        "history": [message(flavour, task, false, request_parts)],
    });
    if state == "completed" {
        rendered["artifacts"] = json!([artifact(task, flavour)]);
    }
    if flavour == Flavour::V03 {
        rendered["kind"] = json!("task");
    }
    rendered
}

/// The streaming answer (SSE), event by event: the task working, its artifact, and its
/// completion (final).
fn stream(id: Value, task: &TaskRecord, flavour: Flavour) -> Response {
    let working = render_task(task, flavour, "working");
    let (first, artifact_event, done) = match flavour {
        Flavour::V1 => (
            json!({ "task": working }),
            json!({ "artifactUpdate": { "taskId": task.id, "contextId": task.context_id, "artifact": artifact(task, flavour), "lastChunk": true } }),
            json!({ "statusUpdate": { "taskId": task.id, "contextId": task.context_id, "status": status(task, flavour, "completed"), "final": true } }),
        ),
        Flavour::V03 => (
            working,
            json!({ "kind": "artifact-update", "taskId": task.id, "contextId": task.context_id, "artifact": artifact(task, flavour), "lastChunk": true }),
            json!({ "kind": "status-update", "taskId": task.id, "contextId": task.context_id, "status": status(task, flavour, "completed"), "final": true }),
        ),
    };
    let events: String = [first, artifact_event, done]
        .into_iter()
        .map(|result| {
            format!(
                "data: {}\n\n",
                json!({ "jsonrpc": "2.0", "id": id, "result": result })
            )
        })
        .collect();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from(events),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: usize, payload: usize) -> TaskRecord {
        TaskRecord {
            id: format!("t{id}"),
            context_id: "c".into(),
            request_text: "x".repeat(payload),
            request_data: Value::Null,
            answer_text: String::new(),
            answer_data: Value::Null,
            created_at: 0,
        }
    }

    #[test]
    fn large_requests_cannot_grow_the_task_store_past_its_bytes() {
        let tasks = Tasks::default();
        // 100 requests of 1 MiB each: only the newest that fit in the budget are kept.
        for id in 0..100 {
            tasks.insert(task(id, 1024 * 1024));
        }
        let (count, bytes) = tasks.usage();
        assert!(bytes <= TASKS_BYTES_MAX, "{bytes}");
        assert!(count < 40 && count > 0, "{count}");
        assert!(tasks.get("t99", 0).is_some());
        assert!(tasks.get("t0", 0).is_none(), "the oldest went first");
        // And by count, small ones.
        for id in 100..100 + TASKS_MAX + 5 {
            tasks.insert(task(id, 1));
        }
        assert_eq!(tasks.usage().0, TASKS_MAX);
        // A task past its time is not read.
        assert!(
            tasks
                .get(&format!("t{}", 100 + TASKS_MAX), TASK_TTL_SECS)
                .is_none()
        );
    }
}
