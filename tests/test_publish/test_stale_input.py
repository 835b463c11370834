"""The stale-input guard compares what was read (upstream run ids) with what is published now."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ecm_assets.contracts.registry import register
from ecm_assets.publish.protocol import StaleInputError, publish_partitions
from tests.test_recovery._race import REPLACE, publish_request

DERIVED = dataclasses.replace(REPLACE, name="race_derived", description="reads race_values")
D1 = date(2026, 9, 1)
T0 = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)
register(REPLACE)
register(DERIVED)


def _derived_request(run_id: str, read_runs: list[str], as_of: datetime):
    boundary = {
        "partitions": [D1.isoformat()],
        "locked_at": as_of.isoformat(),
        "upstream": [
            {
                "dataset": REPLACE.name,
                "first_partition": D1.isoformat(),
                "last_partition": D1.isoformat(),
                "rows": 1,
                "run_ids": read_runs,
            }
        ],
    }
    request = publish_request(DERIVED, run_id, [D1], as_of)
    return dataclasses.replace(request, input_boundary=boundary)


def test_run_that_read_older_upstream_with_a_newer_clock_cannot_overwrite(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        publish_partitions(conn, publish_request(REPLACE, "up-1", [D1], T0))
        # The slow run reads upstream up-1 ... upstream is republished by up-2 meanwhile, and
        # a fresh run reads up-2 and publishes the derived partition.
        publish_partitions(conn, publish_request(REPLACE, "up-2", [D1], T0 + timedelta(hours=1)))
        publish_partitions(conn, _derived_request("fresh", ["up-2"], T0 + timedelta(hours=2)))
        # The slow run's lock time is the newest of all (another host's clock, or a lock
        # wait), yet it read superseded input: refused, the fresh output stays.
        slow = _derived_request("slow", ["up-1"], T0 + timedelta(hours=5))
        with pytest.raises(StaleInputError, match=r"read race_values .* runs \['up-1'\]"):
            publish_partitions(conn, slow)
        runs = conn.execute("SELECT DISTINCT run_id FROM race_derived").fetchall()
        assert runs == [("fresh",)]


def test_run_that_read_current_upstream_publishes_even_with_an_older_clock(
    tmp_path: Path,
) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        publish_partitions(conn, publish_request(REPLACE, "up-1", [D1], T0))
        publish_partitions(conn, _derived_request("first", ["up-1"], T0 + timedelta(hours=3)))
        # A clock behind by hours is no reason to refuse output of the current upstream.
        publish_partitions(conn, _derived_request("second", ["up-1"], T0 + timedelta(hours=1)))
        runs = conn.execute("SELECT DISTINCT run_id FROM race_derived").fetchall()
        assert runs == [("second",)]
