"""The federation the tests in this folder share: one `meridian demo --keep-running` on
loopback (standard library only), whose organisations have proved their domains."""

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

BIN = os.environ.get("MERIDIAN_BIN", "meridian")


@pytest.fixture(scope="session")
def demo_urls():
    """`meridian-data/demo/urls.json` of a running demo: every node's and hub's URLs."""
    work = tempfile.mkdtemp()
    demo = subprocess.Popen(
        [BIN, "demo", "--data", "data", "--agents", "3", "--keep-running"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        for line in demo.stderr:
            if "keeps running" in line:
                break
            if time.time() > deadline:
                pytest.fail("the demo did not come up in time")
        else:
            pytest.fail(f"the demo ended early with code {demo.wait()}")
        with open(os.path.join(work, "data", "demo", "urls.json")) as f:
            yield json.load(f)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()


@pytest.fixture(scope="session")
def registry(demo_urls):
    """The ARD base URL of the demo's first node."""
    return demo_urls["nodes"][0]["ard"]
