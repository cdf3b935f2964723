"""The federation the tests in this folder share: one `meridian demo --keep-running` on
loopback (standard library only), whose organisations have proved their domains; and a headless
Chromium for the console's tests."""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

import browsing

BIN = os.environ.get("MERIDIAN_BIN", "meridian")

#: The running demo: the directory it runs in, its `meridian-data/demo` directory (tokens,
#: governance keys) and its `urls.json`.
Demo = namedtuple("Demo", "work dir urls")


@pytest.fixture(scope="session")
def demo():
    """A running `meridian demo --keep-running`, once its publishing is done."""
    work = tempfile.mkdtemp()
    process = subprocess.Popen(
        [BIN, "demo", "--data", "data", "--agents", "3", "--keep-running"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        for line in process.stderr:
            if "keeps running" in line:
                break
            if time.time() > deadline:
                pytest.fail("the demo did not come up in time")
        else:
            pytest.fail(f"the demo ended early with code {process.wait()}")
        # Keep reading what it prints, so a full pipe never stalls it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        demo_dir = Path(work) / "data" / "demo"
        yield Demo(Path(work), demo_dir, json.loads((demo_dir / "urls.json").read_text()))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def demo_urls(demo):
    """`meridian-data/demo/urls.json` of the running demo: every node's and hub's URLs."""
    return demo.urls


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """Where the browser saves downloads."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    """Headless Chromium through chromedriver and Selenium (skipped where missing)."""
    pytest.importorskip("selenium.webdriver")
    if not browsing.available():
        pytest.skip("Chromium and chromedriver are not installed")
    driver = browsing.driver(downloads)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def registry(demo_urls):
    """The ARD base URL of the demo's first node."""
    return demo_urls["nodes"][0]["ard"]
