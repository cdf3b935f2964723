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

const TAGS: [&str; 5] = ["operations", "agents", "registry", "governance", "a2a"];
const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

/// The reference page, rendered from the document.
pub fn markdown() -> String {
    let doc = serde_json::to_value(document()).unwrap_or_default();
    let mut out = String::from(
        "# Meridian node API reference\n\nRendered from the OpenAPI document the node serves at `GET /openapi.json`, which is generated\nfrom the handlers' own annotations; regenerate with\n`MERIDIAN_BLESS=1 cargo test -p meridian-node api_reference`.\n\nErrors are JSON: `{\"error\": {\"code\", \"message\", \"details\"}}`. Every response carries `x-request-id`.\n",
    );
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for tag in TAGS {
        out.push_str(&format!("\n## {tag}\n"));
        for (path, item) in &paths {
            for method in METHODS {
                let op = &item[method];
                if op.is_null() || op["tags"][0] != tag {
                    continue;
                }
                let summary = op["summary"]
                    .as_str()
                    .or(op["description"].as_str())
                    .unwrap_or("");
                let access = match op["security"][0]
                    .as_object()
                    .and_then(|s| s.keys().next().cloned())
                    .as_deref()
                {
                    Some("orgToken") => "organisation token",
                    Some("adminToken") => "admin token",
                    _ => "public",
                };
                out.push_str(&format!(
                    "\n### `{} {path}`\n\n{} Access: {access}.",
                    method.to_uppercase(),
                    summary.trim_end_matches('.').to_owned() + "."
                ));
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    let media: Vec<&String> = content.keys().collect();
                    out.push_str(&format!(
                        " Body: `{}`.",
                        media
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join("`, `")
                    ));
                }
                out.push('\n');
                if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                    out.push_str("\n| parameter | in | meaning |\n| --- | --- | --- |\n");
                    for p in params {
                        out.push_str(&format!(
                            "| `{}` | {} | {} |\n",
                            p["name"].as_str().unwrap_or(""),
                            p["in"].as_str().unwrap_or(""),
                            p["description"].as_str().unwrap_or("")
                        ));
                    }
                }
                out.push_str("\n| status | meaning | content |\n| --- | --- | --- |\n");
                if let Some(responses) = op["responses"].as_object() {
                    for (status, response) in responses {
                        let media = response["content"]
                            .as_object()
                            .and_then(|c| c.keys().next().cloned())
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "| {status} | {} | `{media}` |\n",
                            response["description"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_reference_page_matches_the_document() {
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
    fn document_is_openapi_3_1_with_security_and_errors() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| METHODS.iter().filter(|m| !p[**m].is_null()).count())
            .sum();
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
