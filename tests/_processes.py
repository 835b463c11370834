"""Real `dagster-webserver` and `dagster-daemon` processes for end-to-end tests: started on
127.0.0.1 with a free port and a temp DAGSTER_HOME holding the shipped dagster.yaml, always
stopped (process group SIGTERM, then SIGKILL) when the ExitStack closes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        # The webserver answers 500 with the server-side error in the body: show it.
        body = exc.read().decode(errors="replace")[:3000]
        raise AssertionError(f"webserver answered HTTP {exc.code}: {body}") from None
    assert "errors" not in payload, payload
    return payload["data"]


RUNS = """
query { runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


def runs(port: int) -> list[dict]:
    """Every run the instance knows: id, status and tags as a dict."""
    return [
        {
            "id": r["runId"],
            "status": r["status"],
            "tags": {t["key"]: t["value"] for t in r["tags"]},
        }
        for r in graphql(port, RUNS)["runsOrError"]["results"]
    ]


def start(stack: ExitStack, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = stack.enter_context(log.open("w"))
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    stack.callback(stop)
    return proc


#: Creates the SQLite run, event-log and schedule storages of a fresh DAGSTER_HOME.
_INIT = (
    "import dagster as dg\n"
    "with dg.DagsterInstance.get() as i:\n"
    "    i.run_storage, i.event_log_storage, i.schedule_storage\n"
    "    i.get_runs(limit=1)\n"
)


def init_instance(env: dict[str, str], deadline: float) -> None:
    """Create the instance's storages once, before the webserver and the daemon start.

    Both processes create the SQLite schemas of a fresh DAGSTER_HOME on start; started
    together on a loaded machine they race, and the loser dies with "table alembic_version
    already exists" (seen as a test failing to start, or a webserver answering HTTP 500).
    """
    subprocess.run(
        [sys.executable, "-c", _INIT],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=max(30.0, deadline - time.monotonic()),
    )


def start_dagster(
    stack: ExitStack, tmp: Path, extra_env: dict[str, str], deadline: float
) -> tuple[int, dict[str, str]]:
    """Webserver and daemon on the repository's workspace; returns the port once it answers."""
    home = tmp / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), **extra_env}
    init_instance(env, deadline)
    port = free_port()
    web = start(
        stack,
        [
            str(BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
        tmp / "webserver.log",
    )
    start(
        stack, [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, tmp / "daemon.log"
    )
    while True:
        assert web.poll() is None, (tmp / "webserver.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "webserver did not come up"
        try:
            graphql(port, "{ version }")
            return port, env
        except OSError:
            time.sleep(1)
