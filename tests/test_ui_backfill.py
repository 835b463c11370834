"""A 30-partition backfill launched the way the UI launches it, through the real webserver and
daemon with the shipped dagster.yaml, finishes with every partition published and no lock
error: the warehouse pool serializes the steps that share DuckDB's single-writer file."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import duckdb
import pytest

from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.operations.graphql import backfill_status
from tests._processes import graphql, runs, start_dagster

#: Two runs and the daemon's ~30 s backfill ticks; generous, the machine may be shared.
DEADLINE_SECONDS = 600

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


@pytest.mark.timeout(DEADLINE_SECONDS + 60)
def test_thirty_partition_ui_backfill_finishes_without_lock_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_demo_data(data, date(2026, 9, 1), date(2026, 9, 30), seed=3, scale=0.1)
    warehouse = tmp_path / "warehouse.duckdb"
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ExitStack() as stack:
        port, _ = start_dagster(
            stack,
            tmp_path,
            {"ECM_DATA_DIR": str(data), "ECM_WAREHOUSE": str(warehouse)},
            deadline,
        )

        partitions = [f"2026-09-{d:02d}" for d in range(1, 31)]
        launched = graphql(
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
            status = backfill_status(f"http://127.0.0.1:{port}", backfill_id)
            if status.startswith(("COMPLETED", "FAILED", "CANCELED")):
                break
            time.sleep(2)
        launched_runs = runs(port)
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (
            status,
            launched_runs,
            (tmp_path / "daemon.log").read_text()[-3000:],
        )
        assert launched_runs and all(r["status"] == "SUCCESS" for r in launched_runs), launched_runs

    logs = (tmp_path / "daemon.log").read_text() + (tmp_path / "webserver.log").read_text()
    assert "Could not set lock" not in logs
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for table in ("case_events", "case_sla_daily_metrics", "case_priority_mix_daily"):
            days = conn.sql(f"SELECT count(DISTINCT business_date) FROM {table}").fetchone()[0]
            assert days == 30, table
