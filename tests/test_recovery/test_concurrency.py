"""Concurrency matrix: two real processes race to publish (or roll back) on one warehouse.

In the style of Delta Lake's conflict tests: each cell starts two workers behind a file
barrier and checks the end state, whatever the interleaving. Every worker either succeeds
or fails cleanly with a named error; every published partition is exactly one run's
complete output; a versioned partition has exactly one PUBLISHED version and the consumer
view shows it; no manifest is left in flight. Besides the free race, each cell is also run
in both forced orders so that both outcomes are checked exactly.

Worker A always locks its input before worker B (as_of T1 < T2).

Every cell runs on both backends (tests/_backends.py): one DuckDB file (one writer at a
time), and a fresh PostgreSQL database (many writers; one partition's publishes serialize
on advisory locks).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import RunStatus
from ecm_assets.publish.protocol import STAGING_SCHEMA, publish_partitions
from ecm_assets.publish.versions import CURRENT, VERSIONS, versions_table
from tests._warehouses import BACKENDS, warehouse_for
from tests.test_recovery._race import REPLACE, VERSIONED, publish_request, run_rows

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)
T0 = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)
T1, T2, T3 = (T0 + timedelta(hours=h) for h in (1, 2, 3))
ORDERS = ["race", "a_first", "b_first"]
WORKER_TIMEOUT = 120.0


@pytest.fixture(params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new warehouse on each backend: a DuckDB path or a PostgreSQL database URL."""
    with warehouse_for(request.param, tmp_path) as target:
        yield target


def _seed(warehouse: str, contract, run_id: str, partitions: list[date], as_of) -> None:
    with open_warehouse(warehouse).connect() as conn:
        publish_partitions(conn, publish_request(contract, run_id, partitions, as_of))


def _race(tmp_path: Path, warehouse: str, a: dict, b: dict, order: str) -> dict[str, dict]:
    """Start workers A and B together behind a file barrier; return their outcomes."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    specs = {"A": dict(a), "B": dict(b)}
    for name, spec in specs.items():
        spec.update(
            name=name,
            warehouse=str(warehouse),
            barrier=str(barrier),
            result=str(tmp_path / f"result-{name}.json"),
        )
    if order == "a_first":
        specs["B"]["after"] = specs["A"]["result"]
    elif order == "b_first":
        specs["A"]["after"] = specs["B"]["result"]
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for name, spec in specs.items():
            path = tmp_path / f"spec-{name}.json"
            path.write_text(json.dumps(spec, default=str))
            logs[name] = (tmp_path / f"worker-{name}.log").open("wb")
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "tests.test_recovery._race", str(path)],
                cwd=REPO,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + WORKER_TIMEOUT
        while not all((barrier / f"ready-{n}").exists() for n in specs):
            for name, proc in procs.items():
                assert proc.poll() is None, _log(tmp_path, name)
            assert time.monotonic() < deadline, "workers never reached the barrier"
            time.sleep(0.01)
        (barrier / "go").touch()
        for name, proc in procs.items():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, _log(tmp_path, name)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        for fh in logs.values():
            fh.close()
    return {name: json.loads(Path(spec["result"]).read_text()) for name, spec in specs.items()}


def _log(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"worker-{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def _first_publisher(conn: Any, *run_ids: str) -> str:
    """Which of the runs entered the protocol first: manifests are planned under the lock."""
    planned = {m.run_id: m.planned_at for m in load_manifests(conn) if m.run_id in run_ids}
    return min(planned, key=planned.__getitem__)


def _assert_ledger_settled(conn: Any, expected: dict[str, RunStatus]) -> None:
    manifests = {m.run_id: m for m in load_manifests(conn)}
    assert {r: m.status for r, m in manifests.items()} == expected
    for m in manifests.values():
        if m.status == RunStatus.FAILED:
            assert m.status_detail.startswith("StaleInputError"), m.status_detail
    staged = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
        [STAGING_SCHEMA],
    ).fetchall()
    assert staged == []


def _assert_stale_failure(outcome: dict) -> None:
    assert outcome["ok"] is False
    assert outcome["error"] == "StaleInputError"
    assert "refusing to replace newer output with older" in outcome["message"]


def _replace_partition(conn: Any, day: date) -> tuple[set[str], list]:
    rows = conn.execute(
        f"SELECT business_date, unit_id, value, note, run_id FROM {REPLACE.table} "
        "WHERE business_date = ? ORDER BY unit_id",
        [day],
    ).fetchall()
    return {r[-1] for r in rows}, [r[:-1] for r in rows]


def _assert_replace_output(conn: Any, day: date, run_id: str) -> None:
    runs, rows = _replace_partition(conn, day)
    assert runs == {run_id}
    assert rows == run_rows(run_id, day)


def _versions(conn: Any, day: date) -> dict[int, tuple[str, str]]:
    rows = conn.execute(
        f"SELECT version, run_id, status FROM {VERSIONS} WHERE dataset = ? AND "
        "partition_date = ? ORDER BY version",
        [VERSIONED.name, day.isoformat()],
    ).fetchall()
    return {v: (run, status) for v, run, status in rows}


def _assert_current_version(conn: Any, day: date, version: int, run_id: str) -> None:
    published = [v for v, (_, s) in _versions(conn, day).items() if s == "PUBLISHED"]
    assert published == [version]
    pointer = conn.execute(
        f"SELECT version FROM {CURRENT} WHERE dataset = ? AND partition_date = ?",
        [VERSIONED.name, day.isoformat()],
    ).fetchall()
    assert pointer == [(version,)]
    shown = conn.execute(
        f"SELECT business_date, unit_id, value, note, run_id, version FROM {VERSIONED.table} "
        "WHERE business_date = ? ORDER BY unit_id",
        [day],
    ).fetchall()
    assert {(r[4], r[5]) for r in shown} == {(run_id, version)}
    assert [r[:4] for r in shown] == run_rows(run_id, day)
    kept = conn.execute(
        f"SELECT count(*) FROM {versions_table(VERSIONED)} WHERE business_date = ? AND version = ?",
        [day, version],
    ).fetchone()[0]
    assert kept == len(shown)


def _publish(run_id: str, contract, partitions: list[date], as_of: datetime) -> dict:
    return {
        "action": "publish",
        "contract": contract.name,
        "run_id": run_id,
        "partitions": [p.isoformat() for p in partitions],
        "as_of": as_of.isoformat(),
    }


@pytest.mark.parametrize("order", ORDERS)
def test_same_partition_replace_vs_replace(tmp_path: Path, warehouse: str, order: str) -> None:
    _seed(warehouse, REPLACE, "run-0", [D1, D2], T0)

    out = _race(
        tmp_path,
        warehouse,
        _publish("run-A", REPLACE, [D2], T1),
        _publish("run-B", REPLACE, [D2], T2),
        order,
    )

    with open_warehouse(warehouse).connect(read_only=True) as conn:
        first = _first_publisher(conn, "run-A", "run-B")
        assert first == {"a_first": "run-A", "b_first": "run-B"}.get(order, first)
        # The newer input lock wins either way; the older one may not overwrite it.
        assert out["B"]["ok"] is True
        if first == "run-A":
            assert out["A"]["ok"] is True
        else:
            _assert_stale_failure(out["A"])
        _assert_replace_output(conn, D2, "run-B")
        _assert_replace_output(conn, D1, "run-0")
        _assert_ledger_settled(
            conn,
            {
                "run-0": RunStatus.PUBLISHED,
                "run-A": RunStatus.PUBLISHED if out["A"]["ok"] else RunStatus.FAILED,
                "run-B": RunStatus.PUBLISHED,
            },
        )


@pytest.mark.parametrize("order", ORDERS)
def test_different_partitions_replace_vs_replace(
    tmp_path: Path, warehouse: str, order: str
) -> None:
    _seed(warehouse, REPLACE, "run-0", [D1, D2, D3], T0)

    out = _race(
        tmp_path,
        warehouse,
        _publish("run-A", REPLACE, [D1], T1),
        _publish("run-B", REPLACE, [D2], T2),
        order,
    )

    assert (out["A"]["ok"], out["B"]["ok"]) == (True, True)
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        _assert_replace_output(conn, D1, "run-A")
        _assert_replace_output(conn, D2, "run-B")
        _assert_replace_output(conn, D3, "run-0")
        _assert_ledger_settled(
            conn,
            {
                "run-0": RunStatus.PUBLISHED,
                "run-A": RunStatus.PUBLISHED,
                "run-B": RunStatus.PUBLISHED,
            },
        )


@pytest.mark.parametrize("order", ORDERS)
def test_same_partition_versioned_vs_versioned(tmp_path: Path, warehouse: str, order: str) -> None:
    _seed(warehouse, VERSIONED, "run-0", [D1], T0)

    out = _race(
        tmp_path,
        warehouse,
        _publish("run-A", VERSIONED, [D1], T1),
        _publish("run-B", VERSIONED, [D1], T2),
        order,
    )

    with open_warehouse(warehouse).connect(read_only=True) as conn:
        first = _first_publisher(conn, "run-A", "run-B")
        assert first == {"a_first": "run-A", "b_first": "run-B"}.get(order, first)
        assert out["B"]["ok"] is True
        if first == "run-A":
            assert out["A"]["ok"] is True
            assert out["A"]["versions"] == {D1.isoformat(): 2}
            expected_versions = {
                1: ("run-0", "SUPERSEDED"),
                2: ("run-A", "SUPERSEDED"),
                3: ("run-B", "PUBLISHED"),
            }
        else:
            _assert_stale_failure(out["A"])
            expected_versions = {1: ("run-0", "SUPERSEDED"), 2: ("run-B", "PUBLISHED")}
        current = max(expected_versions)
        assert out["B"]["versions"] == {D1.isoformat(): current}
        assert _versions(conn, D1) == expected_versions
        _assert_current_version(conn, D1, current, "run-B")
        _assert_ledger_settled(
            conn,
            {
                "run-0": RunStatus.PUBLISHED,
                "run-A": RunStatus.PUBLISHED if out["A"]["ok"] else RunStatus.FAILED,
                "run-B": RunStatus.PUBLISHED,
            },
        )


@pytest.mark.parametrize("order", ORDERS)
def test_versioned_publish_vs_rollback(tmp_path: Path, warehouse: str, order: str) -> None:
    _seed(warehouse, VERSIONED, "run-0", [D1], T0)
    _seed(warehouse, VERSIONED, "run-1", [D1], T1)

    out = _race(
        tmp_path,
        warehouse,
        _publish("run-A", VERSIONED, [D1], T2),
        {
            "action": "rollback",
            "contract": VERSIONED.name,
            "partitions": [D1.isoformat()],
            "to_version": 1,
        },
        order,
    )

    # Both succeed in either order; the order decides which version ends current.
    assert (out["A"]["ok"], out["B"]["ok"]) == (True, True), out
    assert out["A"]["versions"] == {D1.isoformat(): 3}
    publish_first = out["B"]["from_version"] == 3
    assert publish_first == {"a_first": True, "b_first": False}.get(order, publish_first)
    assert out["B"]["to_version"] == 1
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        if publish_first:
            assert _versions(conn, D1) == {
                1: ("run-0", "PUBLISHED"),
                2: ("run-1", "SUPERSEDED"),
                3: ("run-A", "ROLLED_BACK"),
            }
            _assert_current_version(conn, D1, 1, "run-0")
        else:
            assert out["B"]["from_version"] == 2
            assert _versions(conn, D1) == {
                1: ("run-0", "SUPERSEDED"),
                2: ("run-1", "ROLLED_BACK"),
                3: ("run-A", "PUBLISHED"),
            }
            _assert_current_version(conn, D1, 3, "run-A")
        _assert_ledger_settled(
            conn,
            {
                "run-0": RunStatus.PUBLISHED,
                "run-1": RunStatus.PUBLISHED,
                "run-A": RunStatus.PUBLISHED,
            },
        )
