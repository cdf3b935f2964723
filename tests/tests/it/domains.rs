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
