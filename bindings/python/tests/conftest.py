"""Fixtures: the real `meridian` binary, a workspace of keys and cards, and a running node."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]


def meridian_bin() -> str:
    """`MERIDIAN_BIN`, or the workspace's debug build (built here if missing)."""
    explicit = os.environ.get("MERIDIAN_BIN")
    if explicit:
        return explicit
    path = REPO / "target" / "debug" / "meridian"
    if not path.exists():
        subprocess.run(["cargo", "build", "-p", "meridian-node"], cwd=REPO, check=True)
    return str(path)


class Cli:
    """Runs `meridian` in one directory."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.bin = meridian_bin()

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.bin, *args], cwd=self.cwd, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "panicked" not in done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


def card(name: str, skill: str = "search") -> dict[str, Any]:
    """An A2A v1.0 card."""
    return {
        "name": name,
        "description": f"agent {name}",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": f"https://agents.example/{name}", "protocolBinding": "JSONRPC"}
        ],
        "skills": [{"id": skill, "name": skill, "tags": [skill]}],
    }


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A CLI in a fresh directory holding node.key, org.key and cards/ with five cards."""
    tool = Cli(tmp_path)
    tool.run("keys", "generate", "--out", "node.key")
    tool.run("keys", "generate", "--out", "org.key")
    (tmp_path / "cards").mkdir()
    for i in range(5):
        (tmp_path / "cards" / f"agent-{i}.json").write_text(json.dumps(card(f"Agent {i}")))
    return tool


def build(cli: Cli, out: str, prev: str | None = None, org: str = "acme") -> Any:
    """`meridian snapshot build` of cards/ into `out`."""
    args = ["snapshot", "build", "--key", "node.key", "--org-key", "org.key", "--org", org,
            "--region", "eu-west", "--cards", "cards", "--out", out]
    if prev:
        args += ["--prev", prev]
    return cli.json(*args)


class RunningNode:
    """A `meridian node run` process on loopback."""

    def __init__(self, cli: Cli, data: str) -> None:
        self.cli = cli
        self.data = cli.cwd / data
        cli.run("node", "init", "--data", data)
        env = dict(os.environ, MERIDIAN_HTTP_LISTEN="127.0.0.1:0", MERIDIAN_MESH_ENABLED="false")
        self.process = subprocess.Popen(
            [cli.bin, "node", "run", "--data", data], cwd=cli.cwd, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        address_file = self.data / "http.addr"
        deadline = time.monotonic() + 30
        while not address_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not start: {self.process.stderr.read()!r}")
            time.sleep(0.02)
        self.url = "http://" + address_file.read_text().strip()

    def token(self, org: str | None = None) -> str:
        args = ["node", "token", "create", "--data", str(self.data)]
        args += ["--org", org] if org else ["--admin"]
        return self.cli.json(*args)["token"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def node(cli: Cli) -> Iterator[RunningNode]:
    """A running node with its own data directory."""
    running = RunningNode(cli, "node-data")
    yield running
    running.stop()
