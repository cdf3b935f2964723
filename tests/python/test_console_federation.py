"""The console over a whole federation, in a real browser (Debian's Chromium, headless, through
chromedriver and Selenium): `meridian demo --keep-running` (three regions, six nodes, three
hubs, governance on) is the federation, as the README tells a newcomer to start it.

A newcomer answers "who publishes the echo agent, who vouches for them, did my node get the last
change" by looking; a hub operator reads the trunks, cache and breakers; an admin approves a
registration with a pasted token (the approval co-signed offline with the CLI, never by the
console) and watches a revocation arrive live on another region's node. Screenshots go to
`MERIDIAN_SCREENSHOTS` (default `target/console-screenshots`). Skipped where Chromium,
chromedriver or Selenium is missing (`.ci/run` installs them)."""

import json
import os
import subprocess
import urllib.request

import pytest

from browsing import SHOTS, no_console_errors, wait

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402

BIN = os.environ.get("MERIDIAN_BIN", "meridian")


def post_cbor(url, body, token=None):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/vnd.ipld.dag-cbor"})
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.load(answer)


def cli(work, *args):
    return subprocess.run([BIN, *args], cwd=work, check=True, capture_output=True, text=True).stdout


def node(urls, name):
    return next(n for n in urls["nodes"] if n["name"] == name)


def org_row(driver, org):
    return driver.find_element(By.CSS_SELECTOR, f'#orgs tr[data-org="{org}"]').text


def test_a_newcomer_sees_who_publishes_echo_who_vouches_and_that_the_node_is_current(demo, browser):
    urls = demo.urls
    first = node(urls, "node us-east-1")
    browser.get(first["console"] + "?q=echo")
    result = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, "ol.results li a")))
    # Its organisation is bound to a verified domain: the facet says so.
    verified = browser.find_element(By.CSS_SELECTOR, "nav.facets a[href*='verified=yes']")
    assert verified.text == "yes (1)", verified.text
    result.click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Echo"))
    page = browser.find_element(By.ID, "view").text
    # Who publishes it (acme, on its verified domain) and who vouches (the attestations).
    assert "acme.example" in page
    assert "urn:air:acme.example:acme:echo" in page
    assert "org.verified" in page and "org.domain" in page, page
    # The node checked it now: the acceptance rule's verdict, and the key's history.
    assert browser.find_element(By.ID, "verdict").text.startswith("accepted"), page
    assert "The signing key is one of its current keys" in browser.find_element(By.ID, "signer-key").text
    assert "org.verified: keys [did:key:" in page and "not required here" in page, page
    browser.execute_script('document.querySelector("#view h2:nth-of-type(2)").scrollIntoView();')
    browser.save_screenshot(str(SHOTS / "provenance.png"))
    # Did this node get the last change: every publisher's head is up to date, peers connected.
    browser.get(first["console"] + "?view=federation")
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#heads tr"))
    assert len(rows) == 3, [r.text for r in rows]
    assert all("up to date" in r.text for r in rows), [r.text for r in rows]
    hub = browser.find_element(By.CSS_SELECTOR, 'tr[data-peer="hub"]').text
    assert "connected" in hub and urls["hubs"][1]["http"] in hub, hub
    assert "syncs: median" in browser.find_element(By.ID, "syncs").text
    assert browser.find_element(By.CSS_SELECTOR, "#syncs svg polyline")
    browser.save_screenshot(str(SHOTS / "federation.png"))
    no_console_errors(browser)


def test_a_hub_operator_reads_trunks_cache_and_breakers(demo, browser):
    urls = demo.urls
    hub = urls["hubs"][0]
    browser.get(hub["console"])
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), f"Hub {hub['region']}"))
    trunks = browser.find_elements(By.CSS_SELECTOR, "table")[0].text
    for other in urls["hubs"][1:]:
        assert other["region"] in trunks, trunks
    assert trunks.count(" up ") == 2 and " ms" in trunks, trunks
    cache = browser.find_element(By.ID, "cache").text
    assert "Hit rate" in cache and "hits" in cache and "MiB" in cache, cache
    breakers = browser.find_elements(By.CSS_SELECTOR, "table")[1].text
    assert "hub:" in breakers and "closed" in breakers, breakers
    assert "in flight of at most" in browser.find_element(By.ID, "relays").text
    browser.save_screenshot(str(SHOTS / "hub.png"))
    # On a phone-sized window nothing scrolls sideways.
    browser.set_window_size(390, 844)
    try:
        for page in (hub["console"], urls["nodes"][0]["console"] + "?view=governance"):
            browser.get(page)
            wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#view h1, main h1")))
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
            assert overflow <= 0, f"{page} scrolls sideways by {overflow}px on a phone"
    finally:
        browser.set_window_size(1200, 1000)
    # A hub's console obeys the same policy as a node's.
    with urllib.request.urlopen(hub["console"]) as answer:
        assert "script-src 'self'" in answer.headers["content-security-policy"]
    no_console_errors(browser)


def download_draft(browser, downloads, name):
    """Clicks the draft's download link and returns the saved file, as a user would."""
    browser.find_element(By.ID, "draft-file").click()
    saved = downloads / name
    wait(browser, lambda _: saved.exists() and saved.stat().st_size > 0)
    return saved


def upload(browser, path):
    """Chooses `path` in the upload form, submits it and returns the page's verdict."""
    browser.execute_script('document.getElementById("upload-result").textContent = "";')
    browser.find_element(By.ID, "document").send_keys(str(path))
    browser.find_element(By.CSS_SELECTOR, "#upload button").click()
    return wait(browser, lambda d: (lambda text: text not in ("", "Uploading…") and text)(
        d.find_element(By.ID, "upload-result").text))


def test_an_admin_approves_a_registration_and_a_revocation_arrives_live(demo, browser, downloads, tmp_path):
    demo_dir, urls = demo.dir, demo.urls
    eu, us = node(urls, "node eu-west-1"), node(urls, "node us-east-1")
    token = (demo_dir / "tokens" / "node-eu-west-1.admin").read_text().strip()
    # An organisation asks to join (no token: its request proves it holds its key).
    cli(tmp_path, "keys", "generate", "--out", "umbrella.key")
    cli(tmp_path, "org", "request", "--org", "umbrella", "--domain", "umbrella.example",
        "--contact", "ops@umbrella.example", "--key", "umbrella.key", "--out", "umbrella.request.cbor")
    status, _ = post_cbor(f"{eu['http']}/api/v1/orgs/registrations", (tmp_path / "umbrella.request.cbor").read_bytes())
    assert status == 202

    browser.get(eu["console"] + "?view=governance")
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, '#orgs tr[data-org="acme"]')))
    assert browser.find_elements(By.CSS_SELECTOR, '#orgs tr[data-org="umbrella"]') == []
    # A wrong token is refused, and says so.
    browser.find_element(By.ID, "token").send_keys("mrd_not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#admin button").click()
    error = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#registrations .error")))
    assert "Could not list registrations" in error.text
    token_box = browser.find_element(By.ID, "token")
    token_box.clear()
    token_box.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#admin button").click()
    row = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-registration="umbrella"]')))
    assert "pending" in row.text
    row.find_element(By.CSS_SELECTOR, "button[data-draft]").click()
    wait(browser, EC.presence_of_element_located((By.ID, "draft-file")))
    assert "meridian attest cosign umbrella.verified.cbor" in browser.find_element(By.ID, "draft").text
    draft = download_draft(browser, downloads, "umbrella.verified.cbor")
    # Uploaded before any admin signed it: refused, with the reason.
    assert upload(browser, draft).startswith("Refused:"), browser.find_element(By.ID, "upload-result").text
    # The attest admin co-signs offline, with the CLI; the upload then takes effect.
    cli(tmp_path, "attest", "cosign", str(draft), "--key", str(demo_dir / "governance" / "attest.key"))
    result = upload(browser, draft)
    assert result.startswith("Accepted: org.verified"), result
    wait(browser, lambda d: "verified" in org_row(d, "umbrella"))
    wait(browser, lambda d: "approved" in d.find_element(By.CSS_SELECTOR, 'tr[data-registration="umbrella"]').text)
    assert token not in browser.page_source and token not in browser.current_url, "the token stays in memory"
    browser.save_screenshot(str(SHOTS / "governance.png"))
    no_console_errors(browser, [("/api/v1/orgs/registrations", 401), ("/api/v1/attestations", 422)])

    # Another region's node learns the approval from the federation, then a revocation posted
    # on eu-west arrives there live: the open page changes without a reload.
    browser.get(us["console"] + "?view=governance")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#orgs tr[data-org="umbrella"]'), seconds=60)
    assert "verified" in org_row(browser, "umbrella")
    marker = browser.execute_script("window.notReloaded = true; return window.notReloaded;")
    assert marker
    cli(tmp_path, "attest", "revoke", str(draft), "--reason", "asked to leave", "--out", "umbrella.revocation.cbor")
    cli(tmp_path, "attest", "cosign", "umbrella.revocation.cbor", "--key", str(demo_dir / "governance" / "attest.key"))
    status, body = post_cbor(f"{eu['http']}/api/v1/attestations",
                             (tmp_path / "umbrella.revocation.cbor").read_bytes(), token)
    assert status == 201 and body["type"] == "revocation", body
    wait(browser, lambda d: "revoked" in org_row(d, "umbrella"), seconds=60)
    assert browser.execute_script("return window.notReloaded === true;"), "updated live, not reloaded"
    no_console_errors(browser)
