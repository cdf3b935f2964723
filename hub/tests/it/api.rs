//! The hub's HTTP API description: the OpenAPI document `GET /openapi.json` serves and the
//! reference page rendered from it (`docs/hub-api.md`).

use meridian_hub::daemon::http::{TAGS, document, markdown};

#[test]
fn hub_api_reference_page_matches_the_document() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/hub-api.md");
    let checked = meridian_hub::apidoc::check_page(
        &path,
        &markdown(),
        "cargo test -p meridian-hub hub_api_reference",
    );
    assert_eq!(checked, Ok(()));
}

#[test]
fn the_document_describes_every_route_under_a_listed_tag() {
    let doc = serde_json::to_value(document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Meridian hub");
    for (path, method) in [
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/v1/stats", "get"),
        ("/v1/blocks/{cid}", "get"),
        ("/v1/heads", "get"),
        ("/v1/sync", "post"),
        ("/v1/gossip", "post"),
        ("/v1/governance", "get"),
        ("/v1/relay/{org}/{agent}", "post"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let tag = operation["tags"][0].as_str().unwrap_or_default();
        assert!(
            TAGS.contains(&tag),
            "{method} {path} has tag `{tag}`, which the page does not list"
        );
    }
    assert_eq!(meridian_hub::apidoc::operations(&doc), 10);
}

#[test]
fn a_stale_page_is_reported_with_the_command_that_regenerates_it() {
    if std::env::var_os("MERIDIAN_BLESS").is_some() {
        return; // blessing writes pages instead of checking them
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("page.md");
    std::fs::write(&path, "old").unwrap();
    let error = meridian_hub::apidoc::check_page(&path, "new", "cargo test -p x y").unwrap_err();
    assert!(matches!(
        error,
        meridian_hub::apidoc::PageError::Stale { .. }
    ));
    assert!(
        error
            .to_string()
            .contains("MERIDIAN_BLESS=1 cargo test -p x y"),
        "{error}"
    );
}
