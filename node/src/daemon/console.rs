//! The node's web console at `/console/`: plain HTML and one JavaScript module compiled into
//! the binary, drawing its pages from the node's documented JSON API and its event stream
//! (served with the shared style sheet and security headers of [`meridian_hub::console`]).
//! The page state lives in the URL (`/console/?q=echo`, `/console/?agent=acme/echo`,
//! `/console/?view=federation`, `/console/?view=governance`), so every page is a link.
//!
//! The governance page never holds a governance key: it drafts approval documents for
//! `meridian attest cosign` and uploads what admins co-signed offline, with an admin token the
//! user pastes and the page keeps in memory only.

use axum::http::HeaderMap;
use axum::response::Response;
use meridian_hub::console::{Asset, HTML, SCRIPT};

pub use meridian_hub::console::{common, redirect, style};

/// The console's page.
static INDEX: Asset = Asset::new(include_str!("console/index.html"), HTML);
/// Its script.
static APP: Asset = Asset::new(include_str!("console/app.js"), SCRIPT);

/// `GET /console/`: the page (every view; the query picks one).
pub async fn index(headers: HeaderMap) -> Response {
    INDEX.serve(&headers)
}

/// `GET /console/app.js`.
pub async fn app(headers: HeaderMap) -> Response {
    APP.serve(&headers)
}
