"""A 30-partition backfill launched the way the UI launches it, through the real webserver and
daemon with the shipped dagster.yaml, finishes with every partition published and no lock
error: the warehouse pool serializes the steps that share DuckDB's single-writer file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import duckdb
import pytest

from ecm_assets.demo.landing_generator import generate_demo_data

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEADLINE_SECONDS = 240

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
  }
}"""
RUNS = """
query { runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    assert "errors" not in payload, payload
    return payload["data"]


def _start(stack: ExitStack, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
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


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_thirty_partition_ui_backfill_finishes_without_lock_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_demo_data(data, date(2026, 9, 1), date(2026, 9, 30), seed=3, scale=0.1)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ECM_DATA_DIR": str(data),
        "ECM_WAREHOUSE": str(warehouse),
    }
    port = _free_port()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ExitStack() as stack:
        web = _start(
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
            tmp_path / "webserver.log",
        )
        _start(
            stack,
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            env,
            tmp_path / "daemon.log",
        )
        while True:
            assert web.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "webserver did not come up"
            try:
                _graphql(port, "{ version }")
                break
            except OSError:
                time.sleep(1)

        partitions = [f"2026-09-{d:02d}" for d in range(1, 31)]
        launched = _graphql(
            port,
            LAUNCH,
            {
                "params": {
                    "partitionNames": partitions,
                    "assetSelection": [
                        {"path": ["case_events"]},
                        {"path": ["case_sla_daily_metrics"]},
                        {"path": ["case_priority_mix_daily"]},
                    ],
                    "fromFailure": False,
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        status = None
        while time.monotonic() < deadline:
            status = _graphql(port, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if status.get("status") in (
                "COMPLETED",
                "COMPLETED_SUCCESS",
                "COMPLETED_FAILED",
                "FAILED",
                "CANCELED",
            ):
                break
            time.sleep(2)
        runs = _graphql(port, RUNS)["runsOrError"]["results"]
        assert status and status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
            status,
            runs,
            (tmp_path / "daemon.log").read_text()[-3000:],
        )
        assert runs and all(r["status"] == "SUCCESS" for r in runs), runs

    logs = (tmp_path / "daemon.log").read_text() + (tmp_path / "webserver.log").read_text()
    assert "Could not set lock" not in logs
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for table in ("case_events", "case_sla_daily_metrics", "case_priority_mix_daily"):
            days = conn.sql(f"SELECT count(DISTINCT business_date) FROM {table}").fetchone()[0]
            assert days == 30, table
