//! The API description, generated from the handlers themselves: each handler carries a
//! `#[utoipa::path]` annotation, and the router is assembled with utoipa-axum from those same
//! handlers ([`super::http::api_router`]), so a route and its documentation cannot part ways.
//! This module adds what no single handler owns (title, security schemes, the error schema),
//! serves the document, and renders the reference page `docs/api.md` from it.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The JSON error every endpoint answers with.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `rollback`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Extra structured detail, or null.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// What the document says beyond the handlers: title, version and security schemes.
pub fn base() -> utoipa::openapi::OpenApi {
    let base = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Meridian node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP gateway of a Meridian node: registry, snapshots, governance, events and the A2A proxy."
        },
        "paths": {},
        "components": {
            "securitySchemes": {
                "orgToken": { "type": "http", "scheme": "bearer", "description": "meridian node token create --org ORG" },
                "adminToken": { "type": "http", "scheme": "bearer", "description": "meridian node token create --admin" }
            }
        }
    });
    // The literal above is a valid document; an empty one is the (unreachable) fallback.
    serde_json::from_value(base).unwrap_or_default()
}

/// The OpenAPI 3.1 document, built once from the annotated handlers.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| super::http::api_router(1, 1).split_for_parts().1)
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn serve() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(document())
}

const TAGS: [&str; 6] = [
    "operations",
    "agents",
    "registry",
    "governance",
    "a2a",
    "ard",
];

/// The reference page, rendered from the document.
pub fn markdown() -> String {
    let doc = serde_json::to_value(document()).unwrap_or_default();
    meridian_hub::apidoc::markdown(
        &doc,
        meridian_hub::apidoc::Page {
            title: "Meridian node API reference",
            intro: "Rendered from the OpenAPI document the node serves at `GET /openapi.json`, which is generated\nfrom the handlers' own annotations; regenerate with\n`MERIDIAN_BLESS=1 cargo test -p meridian-node api_reference`.\n\nErrors are JSON, in the shape of the protocol a route speaks: the ARD routes (`/ard/v1/**`,\n`/.well-known/ard.json`) in ARD's envelope `{\"errorCode\", \"message\"}` (`INVALID_ARGUMENT`,\n`UNAUTHENTICATED`, `NOT_FOUND`, `INTERNAL_ERROR`); the A2A proxy's own refusals of a JSON-RPC\nrequest as a JSON-RPC error with the request's `id` (`code` -32000, or -32600 for a body too\nlarge; `data.reason`, `data.httpStatus`, `data.retryAfterSeconds`; the HTTP status and\n`Retry-After` kept), and its refusals on the HTTP+JSON binding as RFC 9457 problem details;\nan agent's own answers unchanged; everything else in\n`{\"error\": {\"code\", \"message\", \"details\"}}`.\n\nAn agent of this node's region that declares an HTTP+JSON (REST) interface is reached through\n`/a2a/{org}/{agent}/rest/{path}` (GET, POST, PUT, DELETE; `path` such as `v1/message:send`,\n`v1/message:stream` or `v1/tasks/{id}`, the query passed on), which its served card names as\nthat interface's URL; streams pass through as they come. Every response carries `x-request-id`. The public\nreads (ARD, `/api/v1/agents/**`, agent cards) send CORS headers for every origin.\n\nThe ARD Registry API (Agentic Resource Discovery v0.91): an agent is an ARD entry, with the\nidentifier `urn:air:DOMAIN:ORG:AGENT`, once its organisation is bound to DOMAIN by an `org.domain`\nattestation; other agents have none, and `GET /api/v1/agents/{org}/{agent}` says why in\n`provenance.ard`. Search ranks by BM25 over the agents' words (name words weigh more; a word no\nagent has, of five letters or more, matches one typo away, and as the last word the words it\nbegins, at half weight; deprecated agents after active ones) and scores each result 1-100 by the share of the query's weight it\nmatches; `federation` `none`\nanswers from this node's view (which already holds the whole verified federation); `auto`, the\ndefault, also asks the registries in `ard.upstreams` within `ard.federation_budget_ms`, through\nthe SSRF guard, and merges by identifier (this node's entry wins), each result naming its\n`source`; `referrals` lists those registries.",
            tags: &TAGS,
            access: &[
                ("orgToken", "organisation token"),
                ("adminToken", "admin token"),
            ],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_reference_page_matches_the_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
        let checked = meridian_hub::apidoc::check_page(
            &path,
            &markdown(),
            "cargo test -p meridian-node api_reference",
        );
        assert_eq!(checked, Ok(()));
    }

    #[test]
    fn document_is_openapi_3_1_with_security_and_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let operations = meridian_hub::apidoc::operations(&doc);
        assert!(operations >= 24, "{operations} operations");
        assert_eq!(
            doc["paths"]["/api/v1/agents"]["post"]["security"][0]["orgToken"],
            json!([])
        );
        assert!(
            doc["components"]["schemas"]["ErrorBody"].is_object(),
            "{}",
            doc["components"]
        );
        assert!(doc["components"]["securitySchemes"]["adminToken"].is_object());
    }
}
