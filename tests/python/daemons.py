"""A lone `meridian node run` on loopback for the tests of this folder (mesh off), started in
a working directory and stopped with the test module."""

import contextlib
import os
import subprocess
import time

BIN = os.environ.get("MERIDIAN_BIN", "meridian")


@contextlib.contextmanager
def lone_node(work, data="n", **env):
    """Initialises and runs a node in `work/data`; yields its `http://` URL, and stops it.
    `env` adds `MERIDIAN_*` settings (for example `MERIDIAN_A2A_ALLOW_PRIVATE="true"`)."""
    subprocess.run([BIN, "node", "init", "--data", data], cwd=work, check=True, capture_output=True)
    settings = dict(os.environ, MERIDIAN_HTTP_LISTEN="127.0.0.1:0", MERIDIAN_MESH_ENABLED="false", **env)
    process = subprocess.Popen([BIN, "node", "run", "--data", data], cwd=work, env=settings,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = work / data / "http.addr"
        deadline = time.time() + 30
        while not address.exists():
            assert process.poll() is None and time.time() < deadline, "the node did not start"
            time.sleep(0.05)
        yield "http://" + address.read_text().strip()
    finally:
        process.terminate()
        process.wait(timeout=15)
