//! The web console's serving, shared by nodes and hubs, and the hub's own console page.
//!
//! Every console is plain HTML, CSS and one JavaScript module compiled into the binary
//! (nothing fetched from elsewhere; it works offline), drawing its pages from documented JSON
//! endpoints. [`Asset::serve`] serves each file with a strict Content-Security-Policy ([`CSP`]: only
//! this origin's scripts, styles and connections; no inline script; no framing), `nosniff` and
//! `no-referrer`, revalidated by a strong ETag (the file's BLAKE3 hash), so a new binary's
//! console is picked up at once. No page holds a secret.
//!
//! A hub serves its page at `/console/`: its trunks to the other regions with their round-trip
//! times, its block cache, circuit breakers, rate-limit refusals and relays in flight, from
//! `GET /v1/stats` (polled: the hub has no event stream). A node's pages live in the node
//! crate and share [`STYLE`].

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::OnceLock;

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One console file compiled into the binary: its bytes, media type and strong ETag (the
/// first 128 bits of its BLAKE3 hash, computed on first use, not per request).
pub struct Asset {
    body: &'static str,
    media: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    /// A file served as `media`.
    pub const fn new(body: &'static str, media: &'static str) -> Self {
        Self {
            body,
            media,
            etag: OnceLock::new(),
        }
    }

    /// The file with its security headers, or 304 when the client's `If-None-Match` holds its
    /// ETag.
    pub fn serve(&self, headers: &HeaderMap) -> Response {
        let etag = self
            .etag
            .get_or_init(|| format!("\"{}\"", &blake3::hash(self.body.as_bytes()).to_hex()[..32]));
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.media)], self.body).into_response()
        };
        let headers = response.headers_mut();
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if let Ok(value) = HeaderValue::from_str(etag) {
            headers.insert(header::ETAG, value);
        }
        response
    }
}

/// The media type of the consoles' pages.
pub const HTML: &str = "text/html; charset=utf-8";
/// The media type of their scripts (ES modules).
pub const SCRIPT: &str = "text/javascript; charset=utf-8";

/// The consoles' style sheet (light and dark, narrow and wide windows).
pub static STYLE: Asset = Asset::new(include_str!("console/style.css"), "text/css; charset=utf-8");
/// The script module both consoles import (DOM and table helpers).
pub static COMMON: Asset = Asset::new(include_str!("console/common.js"), SCRIPT);
/// The hub console's page.
static HUB_INDEX: Asset = Asset::new(include_str!("console/hub.html"), HTML);
/// Its script.
static HUB_APP: Asset = Asset::new(include_str!("console/hub.js"), SCRIPT);

/// `GET /console/style.css`, for either console.
pub async fn style(headers: HeaderMap) -> Response {
    STYLE.serve(&headers)
}

/// `GET /console/common.js`, for either console.
pub async fn common(headers: HeaderMap) -> Response {
    COMMON.serve(&headers)
}

/// `GET /console`: to the console's page (either console).
pub async fn redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// The hub console's routes: `/console`, `/console/`, `/console/hub.js`, `/console/common.js`,
/// `/console/style.css`.
pub fn hub_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(redirect))
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { HUB_INDEX.serve(&headers) }),
        )
        .route(
            "/console/hub.js",
            get(|headers: HeaderMap| async move { HUB_APP.serve(&headers) }),
        )
        .route("/console/style.css", get(style))
        .route("/console/common.js", get(common))
}
