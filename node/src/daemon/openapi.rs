//! The API description: one table of operations that produces `GET /openapi.json` (OpenAPI 3.1)
//! and the reference page `docs/api.md`. A test calls every operation in the table against a
//! running node, so the description cannot name a route the router lacks.

use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (or any token holder when `http.read_auth` is on, for registry reads).
    Public,
    /// An organisation's token.
    Org,
    /// An admin token.
    Admin,
}

/// One parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// `path`, `query` or `header`.
    pub location: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
}

/// One operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `get`, `post`, `put` or `delete`.
    pub method: &'static str,
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// The group it belongs to.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Its parameters.
    pub params: &'static [Param],
    /// The request body's media type, if it takes one.
    pub request: Option<&'static str>,
    /// The response's media type on success.
    pub response: &'static str,
    /// Status codes and what each means.
    pub statuses: &'static [(u16, &'static str)],
}

const fn path(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "path",
        required: true,
        description,
    }
}

const fn query(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        required: false,
        description,
    }
}

const JSON: &str = "application/json";
const CAR: &str = "application/vnd.ipld.car";
const CBOR: &str = "application/vnd.ipld.dag-cbor";
const AGENT: [Param; 2] = [path("org", "organisation id"), path("agent", "agent name")];

/// Every operation of the gateway.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/health",
        tag: "operations",
        summary: "Liveness",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "alive")],
    },
    Operation {
        method: "get",
        path: "/ready",
        tag: "operations",
        summary: "Readiness: the store is open",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "ready"), (503, "store unavailable")],
    },
    Operation {
        method: "get",
        path: "/metrics",
        tag: "operations",
        summary: "Prometheus metrics",
        access: Access::Public,
        params: &[],
        request: None,
        response: "text/plain",
        statuses: &[(200, "metrics")],
    },
    Operation {
        method: "get",
        path: "/openapi.json",
        tag: "operations",
        summary: "This description",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "OpenAPI 3.1 document")],
    },
    Operation {
        method: "get",
        path: "/api/v1/agents",
        tag: "agents",
        summary: "Search the federated view (stable order, cursor pagination)",
        access: Access::Public,
        params: &[
            query("q", "words that must all appear"),
            query("skill", "skill id"),
            query("tag", "skill tag"),
            query("org", "organisation"),
            query("region", "region"),
            query("input_mode", "input media type"),
            query("output_mode", "output media type"),
            query("cursor", "next_cursor of the previous page"),
            query("limit", "page size (default 50)"),
        ],
        request: None,
        response: JSON,
        statuses: &[
            (200, "a page of agents and next_cursor"),
            (400, "bad query or limit"),
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/agents",
        tag: "agents",
        summary: "Publish an agent: a signed manifest, or the card with signer, signature and time",
        access: Access::Org,
        params: &[Param {
            name: "Idempotency-Key",
            location: "header",
            required: false,
            description: "replays the answer of an earlier identical request",
        }],
        request: Some(JSON),
        response: JSON,
        statuses: &[
            (201, "published"),
            (200, "updated, or unchanged"),
            (400, "malformed JSON"),
            (401, "no or bad token"),
            (403, "token of another organisation"),
            (413, "body too large"),
            (415, "not JSON"),
            (
                422,
                "invalid card, bad signature, refused by governance, idempotency conflict",
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/agents/{org}/{agent}",
        tag: "agents",
        summary: "One agent: card as published, manifest, provenance",
        access: Access::Public,
        params: &AGENT,
        request: None,
        response: JSON,
        statuses: &[(200, "the agent"), (404, "unknown agent")],
    },
    Operation {
        method: "put",
        path: "/api/v1/agents/{org}/{agent}",
        tag: "agents",
        summary: "Publish this agent (the manifest must name it)",
        access: Access::Org,
        params: &AGENT,
        request: Some(JSON),
        response: JSON,
        statuses: &[
            (200, "updated"),
            (201, "published"),
            (401, "no or bad token"),
            (403, "other organisation"),
            (422, "manifest names another agent, or invalid"),
        ],
    },
    Operation {
        method: "delete",
        path: "/api/v1/agents/{org}/{agent}",
        tag: "agents",
        summary: "Stop publishing an agent",
        access: Access::Org,
        params: &AGENT,
        request: None,
        response: JSON,
        statuses: &[
            (200, "removed"),
            (401, "no or bad token"),
            (403, "other organisation"),
            (404, "not published by this node"),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/registry/heads",
        tag: "registry",
        summary: "Every publisher head this node has accepted",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "heads")],
    },
    Operation {
        method: "get",
        path: "/api/v1/registry/snapshot",
        tag: "registry",
        summary: "A publisher's snapshot as a CAR, or a delta since an older commit",
        access: Access::Public,
        params: &[
            query("publisher", "did:key (needed when the node holds several)"),
            query("since", "older commit CID: only what its holder lacks"),
        ],
        request: None,
        response: CAR,
        statuses: &[
            (200, "CAR"),
            (400, "publisher needed, or bad CID"),
            (404, "no such publisher or commit"),
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/registry/import",
        tag: "registry",
        summary: "Verify and import a snapshot or delta, atomically",
        access: Access::Public,
        params: &[],
        request: Some(CAR),
        response: JSON,
        statuses: &[
            (200, "imported"),
            (413, "too large"),
            (415, "not a CAR"),
            (
                422,
                "rejected: rollback, equivocation, expired, bad_signature, hash_mismatch, missing_block, ...",
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/blocks/{cid}",
        tag: "registry",
        summary: "One immutable block (strong ETag, long Cache-Control)",
        access: Access::Public,
        params: &[path("cid", "block CID")],
        request: None,
        response: CBOR,
        statuses: &[
            (200, "the block"),
            (304, "not modified"),
            (400, "bad CID"),
            (404, "unknown block"),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/events",
        tag: "registry",
        summary: "Server-Sent Events of registry changes; resume with Last-Event-ID",
        access: Access::Public,
        params: &[
            Param {
                name: "Last-Event-ID",
                location: "header",
                required: false,
                description: "resume after this event",
            },
            query("last_event_id", "the same, as a parameter"),
        ],
        request: None,
        response: "text/event-stream",
        statuses: &[(200, "the stream"), (400, "bad Last-Event-ID")],
    },
    Operation {
        method: "get",
        path: "/api/v1/attestations",
        tag: "governance",
        summary: "Attestations held (with revocation status)",
        access: Access::Public,
        params: &[query(
            "subject",
            "org:ID, agent:ORG/NAME, key:DID, node:DID or cid:CID",
        )],
        request: None,
        response: JSON,
        statuses: &[(200, "attestations"), (404, "governance off")],
    },
    Operation {
        method: "post",
        path: "/api/v1/attestations",
        tag: "governance",
        summary: "Add an attestation or revocation (verified under the trust root)",
        access: Access::Admin,
        params: &[],
        request: Some(CBOR),
        response: JSON,
        statuses: &[
            (201, "added"),
            (401, "no or bad token"),
            (403, "not an admin token"),
            (415, "not DAG-CBOR"),
            (422, "rejected"),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/governance/root",
        tag: "governance",
        summary: "The trusted root",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "root"), (404, "governance off")],
    },
    Operation {
        method: "post",
        path: "/api/v1/governance/root",
        tag: "governance",
        summary: "The next root version",
        access: Access::Admin,
        params: &[],
        request: Some(CBOR),
        response: JSON,
        statuses: &[
            (200, "accepted"),
            (403, "not an admin token"),
            (
                422,
                "rejected: rollback, skipped version, threshold, expired",
            ),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/governance/policy",
        tag: "governance",
        summary: "The policy in force",
        access: Access::Public,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[(200, "policy"), (404, "none, or governance off")],
    },
    Operation {
        method: "post",
        path: "/api/v1/governance/policy",
        tag: "governance",
        summary: "A newer policy bundle",
        access: Access::Admin,
        params: &[],
        request: Some(CBOR),
        response: JSON,
        statuses: &[
            (200, "accepted (changed: false if already in force)"),
            (403, "not an admin token"),
            (422, "rejected: older, conflicting, threshold, expired"),
        ],
    },
    Operation {
        method: "get",
        path: "/api/v1/orgs/registrations",
        tag: "governance",
        summary: "Pending registration requests",
        access: Access::Admin,
        params: &[],
        request: None,
        response: JSON,
        statuses: &[
            (200, "requests"),
            (401, "no or bad token"),
            (403, "not an admin token"),
        ],
    },
    Operation {
        method: "post",
        path: "/api/v1/orgs/registrations",
        tag: "governance",
        summary: "Submit a registration request (signed by every key it lists)",
        access: Access::Public,
        params: &[],
        request: Some(CBOR),
        response: JSON,
        statuses: &[
            (202, "received"),
            (415, "not DAG-CBOR"),
            (422, "invalid or no proof of possession"),
        ],
    },
    Operation {
        method: "post",
        path: "/a2a/{org}/{agent}",
        tag: "a2a",
        summary: "Forward a JSON-RPC call to the agent; the answer streams back unchanged (also with a trailing slash)",
        access: Access::Public,
        params: &[
            path("org", "organisation id"),
            path("agent", "agent name"),
            Param {
                name: "Meridian-Caller-Token",
                location: "header",
                required: false,
                description: "the calling organisation's token, for its rate tier (not forwarded)",
            },
        ],
        request: Some(JSON),
        response: JSON,
        statuses: &[
            (200, "the agent's answer (any status passes through)"),
            (401, "bad caller token"),
            (403, "private address refused"),
            (404, "unknown agent"),
            (413, "too large"),
            (429, "rate limited (Retry-After)"),
            (502, "agent unreachable"),
            (503, "too many calls in flight (Retry-After)"),
            (504, "agent timed out"),
        ],
    },
    Operation {
        method: "get",
        path: "/a2a/{org}/{agent}/.well-known/agent-card.json",
        tag: "a2a",
        summary: "The agent's card, pointing at this proxy",
        access: Access::Public,
        params: &AGENT,
        request: None,
        response: JSON,
        statuses: &[(200, "card"), (404, "unknown agent")],
    },
];

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let parameters: Vec<Value> = op
            .params
            .iter()
            .map(|p| json!({ "name": p.name, "in": p.location, "required": p.required, "description": p.description, "schema": { "type": "string" } }))
            .collect();
        let mut responses = Map::new();
        for (status, description) in op.statuses {
            let content = if *status < 300 {
                json!({ op.response: {} })
            } else {
                json!({ JSON: { "schema": { "$ref": "#/components/schemas/Error" } } })
            };
            responses.insert(
                status.to_string(),
                json!({ "description": description, "content": content }),
            );
        }
        let mut operation = json!({
            "tags": [op.tag],
            "summary": op.summary,
            "operationId": format!("{}_{}", op.method, op.path.trim_start_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(media) = op.request {
            operation["requestBody"] = json!({ "required": true, "content": { media: {} } });
        }
        match op.access {
            Access::Public => {}
            Access::Org => operation["security"] = json!([{ "orgToken": [] }]),
            Access::Admin => operation["security"] = json!([{ "adminToken": [] }]),
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Meridian node API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "The HTTP gateway of a Meridian node: registry, snapshots, governance, events and the A2A proxy." },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "orgToken": { "type": "http", "scheme": "bearer", "description": "meridian node token create --org ORG" },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "meridian node token create --admin" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" }, "details": {} } } } }
            }
        }
    })
}

/// The reference page, rendered from the same table.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Meridian node API reference\n\nGenerated from the node's operation table (`node/src/daemon/openapi.rs`), the same one\nthat serves `GET /openapi.json`; regenerate with `MERIDIAN_BLESS=1 cargo test -p meridian-node api_reference`.\n\nErrors are JSON: `{\"error\": {\"code\", \"message\", \"details\"}}`. Every response carries `x-request-id`.\n",
    );
    let mut tag = "";
    for op in OPERATIONS {
        if op.tag != tag {
            tag = op.tag;
            out.push_str(&format!("\n## {tag}\n"));
        }
        let access = match op.access {
            Access::Public => "public",
            Access::Org => "organisation token",
            Access::Admin => "admin token",
        };
        out.push_str(&format!(
            "\n### `{} {}`\n\n{}. Access: {access}.",
            op.method.to_uppercase(),
            op.path,
            op.summary
        ));
        if let Some(media) = op.request {
            out.push_str(&format!(" Body: `{media}`."));
        }
        out.push_str(&format!(" Answers `{}`.\n", op.response));
        if !op.params.is_empty() {
            out.push_str("\n| parameter | in | meaning |\n| --- | --- | --- |\n");
            for p in op.params {
                out.push_str(&format!(
                    "| `{}` | {} | {} |\n",
                    p.name, p.location, p.description
                ));
            }
        }
        out.push_str("\n| status | meaning |\n| --- | --- |\n");
        for (status, description) in op.statuses {
            out.push_str(&format!("| {status} | {description} |\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_reference_page_matches_the_table() {
        let page = markdown();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
        if std::env::var_os("MERIDIAN_BLESS").is_some() {
            std::fs::write(&path, &page).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page,
            "docs/api.md is stale: regenerate with MERIDIAN_BLESS=1"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_every_operation() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let count: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(count, OPERATIONS.len());
    }
}
