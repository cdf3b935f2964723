"""The web console in a real browser (Debian's Chromium, headless, through chromedriver and
Selenium): search and open an agent, read its provenance, watch a deprecation arrive live on
the federation page, with no error in the browser's console. Screenshots of each page go to
`MERIDIAN_SCREENSHOTS` (default `target/console-screenshots`). Skipped where Chromium,
chromedriver or Selenium is missing (`.ci/run` installs them)."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from browsing import SHOTS, no_console_errors, wait
from daemons import lone_node

pytest.importorskip("selenium.webdriver")
meridian = pytest.importorskip("meridian")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402

BIN = os.environ.get("MERIDIAN_BIN", "meridian")
NOW = int(time.time())


def card(name, description, skill, examples):
    return {
        "name": name, "description": description, "version": "1.0.0",
        "supportedInterfaces": [{"url": f"https://agents.example/{skill}", "protocolBinding": "JSONRPC"}],
        "capabilities": {"streaming": True},
        "skills": [{"id": skill, "name": skill.replace("-", " "), "tags": [skill], "examples": examples}],
        "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node with two of acme's agents, and acme's key and token to change them."""
    work = tmp_path_factory.mktemp("console")
    with lone_node(work) as url:
        token = json.loads(subprocess.run([BIN, "--json", "node", "token", "create", "--org", "acme", "--data", "n"],
                                          cwd=work, check=True, capture_output=True, text=True).stdout)["token"]
        key = meridian.Keypair.generate()
        client = meridian.NodeClient(url, token=token)
        for agent in (card("Flight Booker", "Books flights and finds the cheapest fares", "book-flight",
                           ["book a flight to Tokyo"]),
                      card("Echo", "Repeats what it is told", "echo", ["say hello"])):
            client.publish(meridian.sign_manifest(agent, "acme", "local", key, NOW))
        yield url, client, key


def test_search_then_open_an_agent_and_read_its_provenance(node, browser, tmp_path):
    url, _, key = node
    browser.get(f"{url}/console/?q=flight")
    first = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, "ol.results li a")))
    assert first.text == "Flight Booker"
    # The search box is labelled, and the query stays in it (the page state is the URL).
    assert browser.find_element(By.CSS_SELECTOR, "label[for=q]").text == "Search agents"
    assert browser.find_element(By.ID, "q").get_attribute("value") == "flight"
    # Facets count the matches; a value refines the search, in the URL.
    facet = browser.find_element(By.CSS_SELECTOR, "nav.facets a[href*='org=acme']")
    assert facet.text == "acme (1)"
    browser.save_screenshot(str(SHOTS / "search.png"))
    facet.click()
    wait(browser, lambda d: "org=acme" in d.current_url)
    first = wait(browser, EC.element_to_be_clickable((By.CSS_SELECTOR, "ol.results li a")))
    first.click()
    wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Flight Booker"))
    assert "agent=acme%2Fflight-booker" in browser.current_url
    page = browser.find_element(By.ID, "view").text
    assert key.did in page, "the signing key is shown"
    assert "meridian agent show acme/flight-booker" in page
    assert "book a flight to Tokyo" in page, "the card's examples are rendered"
    assert "null" not in page and "undefined" not in page, page
    browser.save_screenshot(str(SHOTS / "agent.png"))
    no_console_errors(browser)
    verify_it_yourself(browser.find_element(By.CSS_SELECTOR, "#view pre").text, tmp_path)


def verify_it_yourself(box, work):
    """Runs the commands of the page's "verify it yourself" box, as a reader would."""
    lines = [line.split("  #")[0].strip() for line in box.splitlines() if not line.startswith("#")]
    show = next(line for line in lines if line.startswith("meridian agent show"))
    shown = subprocess.run([BIN, "--json", *show.split()[1:]], cwd=work, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["agent_id"] == "acme/flight-booker", shown.stdout
    snapshot = next(line for line in lines if "registry/snapshot" in line).split('"')[1]
    with urllib.request.urlopen(snapshot) as answer:
        (work / "publisher.car").write_bytes(answer.read())
    checked = subprocess.run([BIN, "snapshot", "verify", "publisher.car"], cwd=work, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # The Python lines, run as they stand, beside the downloaded snapshot.
    python = box.splitlines()
    python = "\n".join(python[next(i for i, line in enumerate(python) if line.startswith("# The same in Python")) + 1:])
    assert "import meridian" in python, box
    ran = subprocess.run([sys.executable, "-c", python], cwd=work, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr


def test_a_change_arrives_live_on_the_federation_page(node, browser):
    url, client, key = node
    browser.get(f"{url}/console/?view=federation")
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#heads tr")))
    assert not browser.find_element(By.ID, "search").is_displayed(), "no search form here"
    time.sleep(0.5)  # the event stream connects
    client.deprecate("acme/echo", key)
    event = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, 'li[data-kind="agent.deprecated"]')))
    assert "acme/echo" in event.text
    browser.save_screenshot(str(SHOTS / "live.png"))
    # The agent's page now says so, and names no successor.
    browser.get(f"{url}/console/?agent=acme/echo")
    wait(browser, EC.text_to_be_present_in_element((By.ID, "view"), "Deprecated by its organisation"))
    no_console_errors(browser)


def test_a_phone_sized_window_and_the_keyboard_reach_everything(node, browser):
    url, _, _ = node
    browser.set_window_size(390, 844)
    try:
        for page in ("/console/?q=flight", "/console/?agent=acme/flight-booker", "/console/?view=federation"):
            browser.get(url + page)
            wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "#view h1")))
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
            assert overflow <= 0, f"{page} scrolls sideways by {overflow}px on a phone"
        # From the top of the page, the keyboard alone searches and opens a result.
        browser.get(url + "/console/")
        wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "ol.results li a")))
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        for _ in range(10):
            if browser.switch_to.active_element.get_attribute("id") == "q":
                break
            browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("id") == "q", "Tab reaches the search box"
        browser.switch_to.active_element.send_keys("echo", Keys.ENTER)
        wait(browser, lambda d: "q=echo" in d.current_url)
        link = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "ol.results li a")))
        assert link.text == "Echo"
        for _ in range(30):
            if browser.switch_to.active_element == link:
                break
            browser.switch_to.active_element.send_keys(Keys.TAB)
        assert browser.switch_to.active_element == link, "Tab reaches the first result"
        link.send_keys(Keys.ENTER)
        wait(browser, EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Echo"))
        no_console_errors(browser)
    finally:
        browser.set_window_size(1200, 1000)


def test_results_follow_typing_and_the_page_reads_in_dark_mode(node, browser):
    url, _, _ = node
    browser.get(url + "/console/")
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "ol.results li a")))
    box = browser.find_element(By.ID, "q")
    box.send_keys("flig")
    # No Enter: the results and the URL follow the typing.
    wait(browser, lambda d: "q=flig" in d.current_url)
    first = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "ol.results li a")))
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "ol.results li a").text == "Flight Booker")
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.results li")) == 1, "echo is not a match"
    assert first
    # Typing more is never overwritten by an answer to what was typed before.
    box.send_keys("ht")
    wait(browser, lambda d: "q=flight" in d.current_url)
    assert box.get_attribute("value") == "flight"
    # The status filter applies at once too.
    Select(browser.find_element(By.ID, "status")).select_by_value("deprecated")
    wait(browser, lambda d: "status=deprecated" in d.current_url)
    wait(browser, EC.text_to_be_present_in_element((By.ID, "view"), "No agent matches."))
    # Dark mode: the colour scheme the system asks for.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor;")
        text = browser.execute_script("return getComputedStyle(document.body).color;")
        assert background == "rgb(13, 17, 23)", background
        assert text == "rgb(230, 237, 243)", text
        browser.save_screenshot(str(SHOTS / "search-dark.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    no_console_errors(browser)
