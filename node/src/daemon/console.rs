//! The web console, served by every node at `/console/`: plain HTML, CSS and one JavaScript
//! module compiled into the binary (nothing fetched from elsewhere; it works offline), drawing
//! its pages from the node's documented JSON API and its event stream. The page state lives in
//! the URL (`/console/?q=echo`, `/console/?agent=acme/echo`, `/console/?view=federation`), so
//! every page is a link.
//!
//! Every answer carries a strict Content-Security-Policy (only this origin's scripts, styles
//! and connections; no inline script; no framing), `nosniff` and `no-referrer`. The assets are
//! revalidated with strong ETags (their BLAKE3 hash), so a new binary's console is picked up at
//! once. No page holds a secret.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// The console's page.
const INDEX: &str = include_str!("console/index.html");
/// Its script (an ES module).
const APP: &str = include_str!("console/app.js");
/// Its style sheet (light and dark).
const STYLE: &str = include_str!("console/style.css");

/// The Content-Security-Policy of every console answer.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /console`: to the console's page.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the page (every view; the query picks one).
pub async fn index(headers: HeaderMap) -> Response {
    asset(&headers, INDEX, "text/html; charset=utf-8")
}

/// `GET /console/app.js`.
pub async fn app(headers: HeaderMap) -> Response {
    asset(&headers, APP, "text/javascript; charset=utf-8")
}

/// `GET /console/style.css`.
pub async fn style(headers: HeaderMap) -> Response {
    asset(&headers, STYLE, "text/css; charset=utf-8")
}

/// One asset with its security headers, revalidated by a strong ETag (304 when the client has
/// it).
fn asset(headers: &HeaderMap, body: &'static str, media: &'static str) -> Response {
    let etag = format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..32]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, media)], body).into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}
