//! The HTTP API reference pages (`docs/api.md` for the node, `docs/hub-api.md` for the hub),
//! rendered from the OpenAPI documents the daemons serve at `GET /openapi.json`, which are
//! generated from the handlers' own annotations: a route and its documentation come from one
//! place, and a test fails when a page is stale.

use serde_json::Value;

/// What a reference page says beyond the document.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The page's first heading.
    pub title: &'a str,
    /// The paragraphs under it (markdown).
    pub intro: &'a str,
    /// The tags, in the order their sections appear; operations of other tags are left out.
    pub tags: &'a [&'a str],
    /// Security scheme names and how the page calls them (`("orgToken", "organisation token")`);
    /// an operation with none is public.
    pub access: &'a [(&'a str, &'a str)],
}

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

/// How many operations `document` (an OpenAPI document as JSON) describes.
pub fn operations(document: &Value) -> usize {
    document["paths"].as_object().map_or(0, |paths| {
        paths
            .values()
            .map(|p| METHODS.iter().filter(|m| !p[**m].is_null()).count())
            .sum()
    })
}

/// The reference page of `document`: per tag, each operation with its access, body media
/// types, parameters and responses.
pub fn markdown(document: &Value, page: Page<'_>) -> String {
    let mut out = format!("# {}\n\n{}\n", page.title, page.intro.trim_end());
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    for tag in page.tags {
        out.push_str(&format!("\n## {tag}\n"));
        for (path, item) in &paths {
            for method in METHODS {
                let op = &item[method];
                if op.is_null() || op["tags"][0] != *tag {
                    continue;
                }
                operation(&mut out, method, path, op, page.access);
            }
        }
    }
    out
}

fn operation(out: &mut String, method: &str, path: &str, op: &Value, access: &[(&str, &str)]) {
    let summary = op["summary"]
        .as_str()
        .or(op["description"].as_str())
        .unwrap_or("");
    let scheme = op["security"][0]
        .as_object()
        .and_then(|s| s.keys().next().cloned());
    let access = scheme
        .and_then(|scheme| access.iter().find(|(name, _)| *name == scheme))
        .map_or("public", |(_, label)| *label);
    out.push_str(&format!(
        "\n### `{} {path}`\n\n{} Access: {access}.",
        method.to_uppercase(),
        summary.trim_end_matches('.').to_owned() + "."
    ));
    if let Some(content) = op["requestBody"]["content"].as_object() {
        let media: Vec<&str> = content.keys().map(String::as_str).collect();
        out.push_str(&format!(" Body: `{}`.", media.join("`, `")));
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
            let media = if media.is_empty() {
                "-".to_owned()
            } else {
                format!("`{media}`")
            };
            out.push_str(&format!(
                "| {status} | {} | {media} |\n",
                response["description"].as_str().unwrap_or("")
            ));
        }
    }
}

/// Compares `page` with the committed file at `path`, or writes it there when
/// `MERIDIAN_BLESS` is set; `Err` says the page is stale and how to regenerate it.
pub fn check_page(path: &std::path::Path, page: &str, regenerate: &str) -> Result<(), PageError> {
    if std::env::var_os("MERIDIAN_BLESS").is_some() {
        return std::fs::write(path, page).map_err(|e| PageError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        });
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == page {
        Ok(())
    } else {
        Err(PageError::Stale {
            path: path.display().to_string(),
            regenerate: regenerate.to_owned(),
        })
    }
}

/// Why [`check_page`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PageError {
    /// The committed page differs from the rendered one.
    #[error("{path} is stale: regenerate with `MERIDIAN_BLESS=1 {regenerate}`")]
    Stale {
        /// The page.
        path: String,
        /// The command that regenerates it (after `MERIDIAN_BLESS=1`).
        regenerate: String,
    },
    /// Blessing could not write the page.
    #[error("{path}: {reason}")]
    Write {
        /// The page.
        path: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_lists_each_operation_under_its_tag_with_its_access() {
        let document = serde_json::json!({
            "paths": {
                "/a": {
                    "get": {"tags": ["one"], "summary": "Reads a", "responses": {"200": {"description": "ok", "content": {"application/json": {}}}}},
                    "post": {"tags": ["two"], "description": "Writes a.", "security": [{"token": []}],
                             "parameters": [{"name": "x", "in": "query", "description": "an x"}],
                             "requestBody": {"content": {"application/json": {}}},
                             "responses": {"201": {"description": "made"}}}
                },
                "/hidden": {"get": {"tags": ["other"], "responses": {}}}
            }
        });
        let page = markdown(
            &document,
            Page {
                title: "T",
                intro: "Intro.",
                tags: &["one", "two"],
                access: &[("token", "a token")],
            },
        );
        assert!(page.starts_with("# T\n\nIntro.\n"), "{page}");
        assert!(
            page.contains("### `GET /a`\n\nReads a. Access: public.\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "### `POST /a`\n\nWrites a. Access: a token. Body: `application/json`.\n"
            ),
            "{page}"
        );
        assert!(page.contains("| `x` | query | an x |"), "{page}");
        assert!(page.contains("| 200 | ok | `application/json` |"), "{page}");
        assert!(page.contains("| 201 | made | - |"), "{page}");
        assert!(!page.contains("/hidden"), "other tags are left out");
        assert_eq!(operations(&document), 3);
    }
}
