"""Event triggers and backfill modes through the real webserver and daemon.

With the shipped dagster.yaml on a temp DAGSTER_HOME: the landing sensor, switched on through
GraphQL, turns the landing zone into runs and published data; a correction file lands and
exactly its partition is recomputed; a broken file fails its run and the failure sensor posts
an alert naming the partition and the rule to a webhook; then a partition backfill launched
through `launchPartitionBackfill` in shadow mode leaves the consumers' table untouched and
fills the shadow table, and the same backfill in replace mode publishes. Every wait is bounded
and both processes are always stopped.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from ecm_assets.adapters.warehouse import connect
from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.operations.graphql import backfill_status, launch_partition_backfill
from ecm_assets.orchestration.factory import BACKFILL_MODE_TAG
from tests._processes import graphql, runs, start_dagster

DEADLINE_SECONDS = 270
SENSOR = "case_events__landing_files"
HEADER = "event_id,case_id,event_type,event_ts,unit_id,priority\n"
CORRECTION = "E9600000001,C960000001,opened,2026-09-02T13:00:00Z,U01,P2\n"

START_SENSOR = """
mutation($s: SensorSelector!) {
  startSensor(sensorSelector: $s) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


class Webhook:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(what: str, deadline: float, probe: Callable[[], Any], logs: Path) -> Any:
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    daemon = (logs / "daemon.log").read_text()[-4000:]
    raise AssertionError(f"timed out waiting for {what}\n--- daemon.log tail ---\n{daemon}")


def _settled(port: int, match: Callable[[dict], bool], count: int = 1) -> list[dict] | None:
    found = [r for r in runs(port) if match(r)]
    if len(found) >= count and all(r["status"] in TERMINAL_RUN for r in found):
        return found
    return None


def _next_landing_run(port: int, seen: set[str]) -> list[dict] | None:
    """The settled landing-sensor run(s) not seen before."""
    return _settled(port, lambda r: r["id"] not in seen and "ecm/landing_change" in r["tags"])


def _query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect(warehouse, read_only=True, timeout_seconds=60) as conn:
        return conn.execute(sql, params or []).fetchall()


def _write(data: Path, ingest: str, name: str, text: str) -> Path:
    path = data / "landing" / "case_events" / f"ingest_date={ingest}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_sensor_runs_alerts_and_shadow_then_replace_backfill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_demo_data(data, date(2026, 9, 1), date(2026, 9, 4), seed=5, scale=0.1)
    warehouse = tmp_path / "warehouse.duckdb"
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ExitStack() as stack:
        hook = stack.enter_context(Webhook())
        port, _ = start_dagster(
            stack,
            tmp_path,
            {
                "ECM_DATA_DIR": str(data),
                "ECM_WAREHOUSE": str(warehouse),
                "ECM_SENSOR_INTERVAL_SECONDS": "3",
                "ECM_ALERT_WEBHOOK_URL": hook.url,
            },
            deadline,
        )
        url = f"http://127.0.0.1:{port}"

        # 1. The operator switches the landing sensor on; it requests every date it finds.
        started = graphql(
            port,
            START_SENSOR,
            {
                "s": {
                    "repositoryLocationName": "ecm_assets",
                    "repositoryName": "__repository__",
                    "sensorName": SENSOR,
                }
            },
        )["startSensor"]
        assert started["__typename"] == "Sensor", started
        first = _wait(
            "the landing sensor's first runs",
            deadline,
            lambda: _settled(port, lambda r: r["tags"].get("ecm/trigger") == "landing_sensor"),
            tmp_path,
        )
        published = {
            d for (d,) in _query(warehouse, "SELECT DISTINCT business_date FROM case_events")
        }
        assert {date(2026, 9, d) for d in range(1, 5)} <= published, (published, first)
        seen = {r["id"] for r in first}

        # 2. A correction for 09-02 lands: exactly that partition is recomputed.
        _write(data, "2026-09-05", "events-correction.csv", HEADER + CORRECTION)
        (fix,) = _wait(
            "the correction's run",
            deadline,
            lambda: _next_landing_run(port, seen),
            tmp_path,
        )
        assert fix["status"] == "SUCCESS", fix
        assert fix["tags"]["dagster/partition"] == "2026-09-02"
        assert fix["tags"]["ecm/correction_class"] == "lookback"
        assert _query(
            warehouse,
            "SELECT business_date, run_id FROM case_events WHERE event_id = 'E9600000001'",
        ) == [(date(2026, 9, 2), fix["id"])]
        seen.add(fix["id"])

        # 3. A file without the priority column: its run fails (FAIL_RUN) and is alerted.
        _write(
            data,
            "2026-09-04",
            "events-broken.csv",
            "event_id,case_id,event_type,event_ts,unit_id\n"
            "E9600000002,C960000002,opened,2026-09-04T09:00:00Z,U01\n",
        )
        (broken,) = _wait(
            "the broken file's run",
            deadline,
            lambda: _next_landing_run(port, seen),
            tmp_path,
        )
        assert broken["status"] == "FAILURE", broken
        seen.add(broken["id"])
        alert = _wait(
            "the failure alert",
            deadline,
            lambda: next((b for b in hook.bodies if b.get("run_id") == broken["id"]), None),
            tmp_path,
        )
        assert alert["partitions"] == "2026-09-04"
        assert "landing_columns" in alert["rule"] and alert["decision"] == "FAIL_RUN", alert
        assert "case_events" in alert["assets"]
        assert not any(r["status"] == "FAILURE" for r in runs(port) if r["id"] == fix["id"])

        # 4. Removing the file recomputes the date it fed, from the files that remain.
        (data / "landing/case_events/ingest_date=2026-09-04/events-broken.csv").unlink()
        (healed,) = _wait(
            "the run after the broken file was removed",
            deadline,
            lambda: _next_landing_run(port, seen),
            tmp_path,
        )
        assert healed["status"] == "SUCCESS" and healed["tags"]["dagster/partition"] == "2026-09-04"

        # 5. A shadow backfill changes nothing consumers read and fills the shadow table.
        before = _query(
            warehouse,
            "SELECT business_date, run_id, count(*) FROM case_events GROUP BY ALL ORDER BY ALL",
        )
        shadow_id = launch_partition_backfill(
            url, {"case_events": ("2026-09-01", "2026-09-03")}, {BACKFILL_MODE_TAG: "shadow"}
        )
        _wait(
            "the shadow backfill",
            deadline,
            lambda: backfill_status(url, shadow_id).startswith(("COMPLETED", "FAILED", "CANCELED")),
            tmp_path,
        )
        shadow_runs = [r for r in runs(port) if r["tags"].get("dagster/backfill") == shadow_id]
        assert shadow_runs and all(r["status"] == "SUCCESS" for r in shadow_runs), shadow_runs
        assert (
            _query(
                warehouse,
                "SELECT business_date, run_id, count(*) FROM case_events GROUP BY ALL ORDER BY ALL",
            )
            == before
        )
        shadow = _query(
            warehouse,
            "SELECT business_date, run_id, count(*) FROM ecm_shadow.case_events GROUP BY ALL "
            "ORDER BY ALL",
        )
        assert [(d, run) for d, run, _ in shadow] == [
            (date(2026, 9, d), shadow_runs[0]["id"]) for d in (1, 2, 3)
        ]
        assert [n for *_, n in shadow] == [n for d, _, n in before if d <= date(2026, 9, 3)]
        assert _query(
            warehouse,
            "SELECT status FROM ecm_ledger.run_manifest WHERE run_id = ?",
            [shadow_runs[0]["id"]],
        ) == [("SHADOWED",)]

        # 6. The same backfill in replace mode publishes.
        replace_id = launch_partition_backfill(
            url, {"case_events": ("2026-09-01", "2026-09-03")}, {BACKFILL_MODE_TAG: "replace"}
        )
        status = _wait(
            "the replace backfill",
            deadline,
            lambda: (
                (s := backfill_status(url, replace_id)).startswith(
                    ("COMPLETED", "FAILED", "CANCELED")
                )
                and s
            ),
            tmp_path,
        )
        assert status == "COMPLETED_SUCCESS", status
        (replace_run,) = [r for r in runs(port) if r["tags"].get("dagster/backfill") == replace_id]
        after = _query(
            warehouse,
            "SELECT business_date, run_id, count(*) FROM case_events WHERE business_date <= ? "
            "GROUP BY ALL ORDER BY ALL",
            [date(2026, 9, 3)],
        )
        assert {run for _, run, _ in after} == {replace_run["id"]}
        assert [n for *_, n in after] == [n for *_, n in shadow]
