//! Domain binding end to end: an organisation serves its signed proof on its domain
//! (`meridian org bind-domain`), an admin fetches and checks it over HTTPS and writes the
//! `org.domain` attestation (`meridian org verify-domain`), which attest admins sign. The
//! domain is a loopback HTTPS site reached through `--resolve` and trusted through
//! `--ca-cert`; nothing leaves 127.0.0.1.

use meridian_tests::*;

const DOMAIN: &str = "acme.example";
const PROOF_PATH: &str = "/.well-known/meridian-org.json";

/// Governance with acme verified (attestations in `att/`), acme's proof signed by
/// `acme.key` in `meridian-org.json`, and acme's site serving it.
fn bound(dir: &std::path::Path) -> HttpsSite {
    one_key_governance(dir);
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    std::fs::create_dir_all(dir.join("att")).unwrap();
    verify_acme(dir, "acme.key", "att/acme.verified.cbor");
    bind_domain(dir, DOMAIN, "acme.key", &[], "meridian-org.json");
    let site = HttpsSite::start(DOMAIN);
    std::fs::write(dir.join("ca.pem"), site.ca_pem()).unwrap();
    serve_file(&site, dir, "meridian-org.json");
    site
}

/// `meridian org bind-domain` for acme: `domain`, signed with `key`, written to `out`.
fn bind_domain(dir: &std::path::Path, domain: &str, key: &str, extra: &[&str], out: &str) {
    let mut args = vec![
        "org",
        "bind-domain",
        "--org",
        "acme",
        "--domain",
        domain,
        "--key",
        key,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    run_ok(dir, &args);
}

fn serve_file(site: &HttpsSite, dir: &std::path::Path, file: &str) {
    site.serve(
        PROOF_PATH,
        Page {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: std::fs::read(dir.join(file)).unwrap(),
        },
    );
}

/// `meridian org verify-domain acme acme.example` against `site`, with or without its CA.
fn verify_domain(dir: &std::path::Path, site: &HttpsSite, trust_ca: bool) -> std::process::Output {
    let resolve = format!("{DOMAIN}={}", site.address());
    let mut args = vec![
        "--json",
        "org",
        "verify-domain",
        "acme",
        DOMAIN,
        "--root",
        "root.cbor",
        "--attestations",
        "att",
        "--resolve",
        &resolve,
        "--out",
        "acme.domain.cbor",
    ];
    if trust_ca {
        args.extend(["--ca-cert", "ca.pem"]);
    }
    meridian(dir, &args)
}

fn refusal(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "expected a refusal");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn an_admin_checks_a_served_proof_and_issues_the_org_domain_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let site = bound(dir);
    let output = verify_domain(dir, &site, true);
    assert!(output.status.success(), "{}", refusal_text(&output));
    let said: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(said["domain"], DOMAIN);
    assert_eq!(site.requests(), 1);
    // The attestation is unsigned until an attest admin signs it; then it verifies under the
    // root and binds acme to its domain.
    sign_domain_attestation(dir);
    let block = std::fs::read(dir.join("acme.domain.cbor")).unwrap();
    let attestation = meridian_governance::attestation::Attestation::decode(&block).unwrap();
    assert_eq!(attestation.body.kind, "org.domain");
    assert_eq!(
        attestation.body.claims.get("domain"),
        Some(&meridian_registry::cbor::Value::Text(DOMAIN.into()))
    );
    std::fs::copy(
        dir.join("acme.domain.cbor"),
        dir.join("att/acme.domain.cbor"),
    )
    .unwrap();
    let root = std::fs::read(dir.join("root.cbor")).unwrap();
    let root = meridian_governance::root::TrustedRoot::from_chain(
        &[root.as_slice()],
        now(),
        meridian_governance::root::ExpiryCheck::Enforce,
    )
    .unwrap();
    let blocks: Vec<Vec<u8>> = ["att/acme.verified.cbor", "att/acme.domain.cbor"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let refs: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let (set, left_out) =
        meridian_governance::attestation::AttestationSet::from_documents(&refs, &root, now());
    assert!(left_out.is_empty(), "{left_out:?}");
    assert_eq!(set.org_domain("acme", now()), Some(DOMAIN.to_owned()));
    assert_eq!(set.org_domain("globex", now()), None);
}

/// An attest admin signs `acme.domain.cbor` (what `org verify-domain` wrote).
fn sign_domain_attestation(dir: &std::path::Path) {
    run_ok(
        dir,
        &[
            "gov",
            "sign",
            "acme.domain.cbor",
            "--key",
            "attest.key",
            "--root",
            "root.cbor",
        ],
    );
}

fn refusal_text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_proof_the_organisation_did_not_sign_or_that_lists_other_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let site = bound(dir);
    // A thief who controls the web server signs a proof naming acme's keys with its own.
    run_ok(dir, &["keys", "generate", "--out", "thief.key"]);
    let acme = did(dir, "acme.key");
    bind_domain(
        dir,
        DOMAIN,
        "thief.key",
        &["--current-set", &acme],
        "forged.json",
    );
    serve_file(&site, dir, "forged.json");
    let text = refusal(&verify_domain(dir, &site, true));
    assert!(text.contains("threshold"), "{text}");
    assert!(!dir.join("acme.domain.cbor").exists());
    // A proof listing a key set that is not acme's current one (signed before a rotation,
    // say) must be signed again.
    bind_domain(
        dir,
        DOMAIN,
        "acme.key",
        &["--current-set", &acme, "--current-set", "thief.key"],
        "stale.json",
    );
    serve_file(&site, dir, "stale.json");
    let text = refusal(&verify_domain(dir, &site, true));
    assert!(text.contains("current key set"), "{text}");
    // Another organisation's proof, or one for another domain, proves nothing here.
    bind_domain(dir, "other.example", "acme.key", &[], "other.json");
    serve_file(&site, dir, "other.json");
    let text = refusal(&verify_domain(dir, &site, true));
    assert!(text.contains("not `acme.example`"), "{text}");
}

#[test]
fn a_site_that_is_not_trusted_redirects_or_lacks_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let site = bound(dir);
    // A certificate no trusted root issued.
    let text = refusal(&verify_domain(dir, &site, false));
    assert!(
        text.contains("certificate") || text.contains("Unknown"),
        "{text}"
    );
    // A redirect is not followed (the proof must be on the domain itself).
    site.serve(
        PROOF_PATH,
        Page {
            status: 302,
            headers: vec![("location".into(), "https://127.0.0.1:1/elsewhere".into())],
            body: Vec::new(),
        },
    );
    let text = refusal(&verify_domain(dir, &site, true));
    assert!(text.contains("HTTP 302"), "{text}");
    // Not there at all, or not a proof.
    site.serve(
        PROOF_PATH,
        Page {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    assert!(refusal(&verify_domain(dir, &site, true)).contains("HTTP 404"));
    site.serve(
        PROOF_PATH,
        Page {
            status: 200,
            headers: Vec::new(),
            body: b"<html>".to_vec(),
        },
    );
    assert!(refusal(&verify_domain(dir, &site, true)).contains("not a Meridian domain proof"));
    // An organisation the attestations do not verify.
    let resolve = format!("{DOMAIN}={}", site.address());
    let text = refusal(&meridian(
        dir,
        &[
            "org",
            "verify-domain",
            "globex",
            DOMAIN,
            "--root",
            "root.cbor",
            "--attestations",
            "att",
            "--resolve",
            &resolve,
            "--ca-cert",
            "ca.pem",
            "--out",
            "g.cbor",
        ],
    ));
    assert!(text.contains("not verified"), "{text}");
}

/// Without governance the node checks a proof itself (`POST /api/v1/names/ORG/domain`): only a
/// proof by the keys the name is bound to binds the domain (a domain does not rebind a name),
/// the binding gives the organisation's agents ARD identifiers, and the node keeps checking it:
/// renewed while the proof is served, kept through a failed check, lapsed when it expires.
#[test]
fn without_governance_a_node_checks_the_proof_itself_and_keeps_checking_it() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_ok(dir, &["keys", "generate", "--out", "acme.key"]);
    run_ok(dir, &["keys", "generate", "--out", "thief.key"]);
    bind_domain(
        dir,
        DOMAIN,
        "acme.key",
        &["--expires-in", "12s"],
        "acme-proof.json",
    );
    bind_domain(dir, DOMAIN, "thief.key", &[], "thief-proof.json");
    let site = HttpsSite::start(DOMAIN);
    std::fs::write(dir.join("ca.pem"), site.ca_pem()).unwrap();
    let resolve = format!("{DOMAIN}={}", site.address());
    let roots = dir.join("ca.pem").display().to_string();
    let node = Daemon::node(
        dir,
        "n",
        &[
            ("MERIDIAN_DOMAINS_RESOLVE", resolve.as_str()),
            ("MERIDIAN_DOMAINS_EXTRA_ROOTS", roots.as_str()),
            ("MERIDIAN_DOMAINS_RECHECK_SECS", "1"),
        ],
    );
    let token = org_token(dir, "n", "acme");
    let acme = key_file(dir, "acme.key");
    let echo = manifest_block(
        "acme",
        "echo",
        "local",
        "https://agents.example/echo",
        now(),
        &acme,
    );
    assert_eq!(
        publish(&node, &token, &echo).status,
        201,
        "binds acme to its key"
    );
    let ask = |token: Option<&str>, domain: &str| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let body = serde_json::json!({ "domain": domain }).to_string();
        node.request(
            "POST",
            "/api/v1/names/acme/domain",
            &headers,
            body.as_bytes(),
        )
    };
    let code = |answer: &Answer| {
        answer.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };

    // Nothing served yet; no token; another organisation's token; not a domain.
    let missing = ask(Some(&token), DOMAIN);
    assert_eq!(
        (missing.status, code(&missing).as_str()),
        (502, "domain_unreachable")
    );
    assert_eq!(ask(None, DOMAIN).status, 401);
    let globex = org_token(dir, "n", "globex");
    assert_eq!(ask(Some(&globex), DOMAIN).status, 403);
    let bad = ask(Some(&token), "localhost");
    assert_eq!((bad.status, code(&bad).as_str()), (400, "bad_domain"));
    // A thief who controls the web server serves a proof by its own key: refused, the name
    // stays bound to acme's key.
    serve_file(&site, dir, "thief-proof.json");
    let stolen = ask(Some(&token), DOMAIN);
    assert_eq!((stolen.status, code(&stolen).as_str()), (409, "name_bound"));
    assert!(
        stolen.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rotate")
    );
    let agent = node.get("/api/v1/agents/acme/echo").json();
    assert!(agent["provenance"]["ard"]["identifier"].is_null());
    let verified_facet = |node: &Daemon| {
        node.get("/api/v1/agents?facets=verified").json()["facets"]["verified"].clone()
    };
    assert_eq!(
        verified_facet(&node),
        serde_json::json!([{ "value": "no", "count": 1 }])
    );
    let only = |node: &Daemon, verified: &str| {
        node.get(&format!("/api/v1/agents?verified={verified}"))
            .json()["agents"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((only(&node, "yes"), only(&node, "no")), (0, 1));

    // acme's own proof binds the domain: the agent gets its ARD identifier.
    serve_file(&site, dir, "acme-proof.json");
    let bound = ask(Some(&token), DOMAIN);
    assert_eq!(bound.status, 200, "{:?}", bound.json());
    assert_eq!(bound.json()["domain"], DOMAIN);
    let identifier = "urn:air:acme.example:acme:echo";
    let agent = node.get("/api/v1/agents/acme/echo").json();
    assert_eq!(agent["provenance"]["ard"]["identifier"], identifier);
    // Now verified: the facet and the filter say so, in both search orders.
    assert_eq!(
        verified_facet(&node),
        serde_json::json!([{ "value": "yes", "count": 1 }])
    );
    assert_eq!((only(&node, "yes"), only(&node, "no")), (1, 0));
    let ranked = node
        .get("/api/v1/agents?q=echo&sort=relevance&verified=yes")
        .json();
    assert_eq!(ranked["agents"][0]["agent_id"], "acme/echo", "{ranked:#}");
    let ranked = node
        .get("/api/v1/agents?q=echo&sort=relevance&verified=no")
        .json();
    assert_eq!(ranked["agents"], serde_json::json!([]));
    let bad = node.get("/api/v1/agents?verified=maybe");
    assert_eq!((bad.status, code(&bad).as_str()), (400, "bad_query"));
    assert_eq!(
        node.get("/ard/v1/agents/urn%3Aair%3Aacme.example%3Aacme%3Aecho")
            .status,
        200
    );
    assert_eq!(
        node.get("/api/v1/names").json()["domains"]["acme"]["domain"],
        DOMAIN
    );

    // Checked again while served (renewed), then kept through failed checks until the proof
    // expires, then lapsed.
    node.wait_for("a renewal", Duration::from_secs(15), || {
        (node.metric("meridian_domain_checks_total{outcome=\"renewed\"}") >= 1.0).then_some(())
    });
    site.serve(
        PROOF_PATH,
        Page {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    node.wait_for("a failed check", Duration::from_secs(15), || {
        (node.metric("meridian_domain_checks_total{outcome=\"failed\"}") >= 1.0).then_some(())
    });
    node.wait_for("the lapse", Duration::from_secs(30), || {
        (node.metric("meridian_domain_checks_total{outcome=\"lapsed\"}") >= 1.0).then_some(())
    });
    let agent = node.get("/api/v1/agents/acme/echo").json();
    assert!(
        agent["provenance"]["ard"]["identifier"].is_null(),
        "{agent}"
    );
    assert!(
        node.get("/api/v1/names").json()["domains"]
            .get("acme")
            .is_none()
    );
}

/// With governance on the node still checks each attested domain's own proof: a proof that
/// contradicts the attestation (the domain now serves other keys) suspends the domain's ARD
/// identifiers on this node until a check passes again; a domain that does not answer leaves
/// the attestation standing.
#[test]
fn with_governance_a_contradicting_proof_suspends_an_attested_domain() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let site = bound(dir);
    assert!(verify_domain(dir, &site, true).status.success());
    sign_domain_attestation(dir);
    run_ok(dir, &["keys", "generate", "--out", "thief.key"]);
    bind_domain(dir, DOMAIN, "thief.key", &[], "thief-proof.json");
    let root = dir.join("root.cbor").display().to_string();
    let resolve = format!("{DOMAIN}={}", site.address());
    let roots = dir.join("ca.pem").display().to_string();
    let node = Daemon::node(
        dir,
        "g",
        &[
            ("MERIDIAN_GOVERNANCE_ROOT", root.as_str()),
            ("MERIDIAN_DOMAINS_RESOLVE", resolve.as_str()),
            ("MERIDIAN_DOMAINS_EXTRA_ROOTS", roots.as_str()),
            ("MERIDIAN_DOMAINS_RECHECK_SECS", "1"),
        ],
    );
    let admin = admin_token(dir, "g");
    for file in ["att/acme.verified.cbor", "acme.domain.cbor"] {
        let body = std::fs::read(dir.join(file)).unwrap();
        let answer = post_as_admin(
            &node,
            &admin,
            "/api/v1/attestations",
            "application/vnd.ipld.dag-cbor",
            &body,
        );
        assert_eq!(answer.status, 201, "{file}: {:?}", answer.json());
    }
    let token = org_token(dir, "g", "acme");
    let acme = key_file(dir, "acme.key");
    let echo = manifest_block(
        "acme",
        "echo",
        "local",
        "https://agents.example/echo",
        now(),
        &acme,
    );
    assert_eq!(publish(&node, &token, &echo).status, 201);
    let identifier =
        || node.get("/api/v1/agents/acme/echo").json()["provenance"]["ard"]["identifier"].clone();
    let checks = |outcome: &str| {
        node.metric(&format!(
            "meridian_domain_checks_total{{outcome=\"{outcome}\"}}"
        ))
    };
    node.wait_for("a passing check", Duration::from_secs(15), || {
        (checks("renewed") >= 1.0).then_some(())
    });
    assert_eq!(identifier(), "urn:air:acme.example:acme:echo");

    // The domain changes hands: its proof now lists another key. Suspended here.
    serve_file(&site, dir, "thief-proof.json");
    node.wait_for("the contradiction", Duration::from_secs(15), || {
        (checks("contradicted") >= 1.0).then_some(())
    });
    node.wait_for("the suspension", Duration::from_secs(5), || {
        identifier().is_null().then_some(())
    });
    // The domain stops answering: nothing to judge, nothing changes.
    site.serve(
        PROOF_PATH,
        Page {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    node.wait_for("a failed check", Duration::from_secs(15), || {
        (checks("failed") >= 1.0).then_some(())
    });
    assert!(identifier().is_null());
    // acme's own proof again: the identifier comes back.
    serve_file(&site, dir, "meridian-org.json");
    node.wait_for("the identifier back", Duration::from_secs(15), || {
        (identifier() == "urn:air:acme.example:acme:echo").then_some(())
    });
}
