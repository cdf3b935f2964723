//! The web console's first pages, served by a node at `/console/`: the page and its assets come
//! from the binary with a strict Content-Security-Policy and no inline script, revalidate by
//! ETag, hold no secret, and every view is a link (`?q=`, `?agent=`, `?view=federation`).

use meridian_tests::*;

#[test]
fn a_node_serves_its_console_offline_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(dir, "c", &[]);
    let moved = node.get("/console");
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), Some("/console/"));

    // Any view is the same page: the query picks what it shows.
    let page = node.get("/console/?q=echo&status=active");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.header("content-security-policy").unwrap();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    // Scripts only from the node itself, none inline; nothing from another origin.
    assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("http://") && !html.contains("https://"));
    for label in [
        r#"<label for="q">"#,
        r#"<label for="status">"#,
        r#"lang="en""#,
    ] {
        assert!(html.contains(label), "accessible markup: {label}");
    }

    // The assets revalidate by their strong ETag.
    for (path, media) in [
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let asset = node.get(path);
        assert_eq!(asset.status, 200);
        assert!(asset.header("content-type").unwrap().starts_with(media));
        let etag = asset.header("etag").unwrap().to_owned();
        let again = node.request("GET", path, &[("if-none-match", etag.as_str())], b"");
        assert_eq!(again.status, 304);
        let body = String::from_utf8(asset.body.clone()).unwrap();
        assert!(!body.contains("mrd_"), "no token in {path}");
    }
    let script = String::from_utf8(node.get("/console/app.js").body).unwrap();
    // Third-party card text is only ever set as text.
    assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
    assert_eq!(node.get("/console/nothing.js").status, 404);
}
