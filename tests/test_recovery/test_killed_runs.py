"""Killed CLI runs against a persistent Dagster instance: no stuck run, no leaked pool slot,
no manifest left in flight, no Dagster event lost.

`ecm materialize` runs in its own process group with DAGSTER_HOME set (the shipped
dagster.yaml: the warehouse pool admits one step) and is SIGKILLed, as an operator's
`kill -9 -- -PGID` would. `ecm recover` must then settle the ledger, mark the Dagster run
failed, free its slot and deliver any materialization the ledger's outbox still owes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecm_assets.cli import main as ecm
from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.manifest.ledger import EVENT_DELIVERED, load_manifests
from ecm_assets.manifest.states import UNSETTLED, RunStatus
from ecm_assets.operations.event_log import home_instance
from ecm_assets.orchestration.factory import WAREHOUSE_POOL
from ecm_assets.publish.failpoints import ENV_VAR

REPO = Path(__file__).resolve().parents[2]
FIRST, LAST = "2026-09-01", "2026-09-02"
KILLS = int(os.environ.get("ECM_KILL_TEST_RUNS", "20"))
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("killed_runs")
    data = root / "data"
    generate_demo_data(
        data, date.fromisoformat(FIRST), date.fromisoformat(LAST), seed=5, scale=0.02
    )
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return {"data": data, "home": dagster_home, "root": root}


def _env(home: dict[str, Path], warehouse: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home["home"]),
        "ECM_DATA_DIR": str(home["data"]),
        "ECM_WAREHOUSE": str(warehouse),
        **extra,
    }


def _materialize(home, warehouse: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecm_assets.cli",
            "materialize",
            "--select",
            "case_events",
            "--partition-range",
            f"{FIRST}...{LAST}",
            "--warehouse",
            str(warehouse),
        ],
        cwd=REPO,
        env=_env(home, warehouse, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, killed as a whole
    )


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode, out.decode(errors="replace")


def _recover(home, warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.setenv("DAGSTER_HOME", str(home["home"]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ecm(["recover", "--warehouse", str(warehouse), "--json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def _instance(home) -> AbstractContextManager[dg.DagsterInstance]:
    return home_instance(home["home"])


def _claimed(instance: dg.DagsterInstance) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    return [s.run_id for s in info.claimed_slots]


def _in_progress(instance: dg.DagsterInstance) -> list[str]:
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
    return [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=statuses))]


def _unsettled(warehouse: Path) -> list[tuple[str, str]]:
    if not warehouse.exists():
        return []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return [(m.run_id, str(m.status)) for m in load_manifests(conn) if m.status in UNSETTLED]


def test_kill_after_commit_before_the_dagster_event_is_reported_by_recover(
    home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash point "after commit, before the Dagster event": the outbox delivers it."""
    warehouse = tmp_path / "warehouse.duckdb"
    code, out = _finish(
        _materialize(home, warehouse, **{ENV_VAR: "publish.after_commit=kill"}), RUN_TIMEOUT
    )
    assert code == -signal.SIGKILL, out[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        (manifest,) = load_manifests(conn, asset="case_events")
    assert manifest.status == RunStatus.PUBLISHED and manifest.dagster_event == "OWED"
    with _instance(home) as instance:
        key = dg.AssetKey("case_events")
        before = instance.fetch_materializations(key, limit=100).records
        assert not [r for r in before if r.event_log_entry.run_id == manifest.run_id]
        assert manifest.run_id in _in_progress(instance)
        assert manifest.run_id in _claimed(instance)

    # The next launch does not wait forever behind the dead run's slot: it says who holds
    # it and what to run.
    monkeypatch.setenv("DAGSTER_HOME", str(home["home"]))
    monkeypatch.setenv("ECM_DATA_DIR", str(home["data"]))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = ecm(["materialize", "--select", "case_events", "--partition", FIRST,
                    "--warehouse", str(warehouse)])  # fmt: skip
    assert code == 2
    assert manifest.run_id in err.getvalue() and "ecm recover" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1

    decisions = _recover(home, warehouse, monkeypatch)

    by_decision = {d["decision"]: d for d in decisions}
    assert by_decision["MARKED_FAILED"]["run_id"] == manifest.run_id
    assert "is gone" in by_decision["MARKED_FAILED"]["evidence"]
    assert by_decision["DAGSTER_EVENT_REPORTED"]["run_id"] == manifest.run_id
    with _instance(home) as instance:
        records = instance.fetch_materializations(dg.AssetKey("case_events"), limit=100).records
        reported = {
            r.partition_key
            for r in records
            if getattr(
                r.event_log_entry.asset_materialization.metadata.get("ecm/run_id"), "value", None
            )
            == manifest.run_id
        }
        assert reported == {FIRST, LAST}
        assert instance.get_run_by_id(manifest.run_id).status == dg.DagsterRunStatus.FAILURE
        assert _claimed(instance) == []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        (settled,) = load_manifests(conn, asset="case_events")
    assert settled.dagster_event == EVENT_DELIVERED
    # Delivered once: a second recover reports nothing again.
    assert not [d for d in _recover(home, warehouse, monkeypatch) if "DAGSTER" in d["decision"]]


def test_kill_cli_materialize_at_random_points_then_recover_20_times(
    home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    started = time.monotonic()
    code, out = _finish(_materialize(home, warehouse), RUN_TIMEOUT)
    normal = time.monotonic() - started
    assert code == 0, out[-3000:]
    rng = random.Random(int(os.environ.get("ECM_KILL_TEST_SEED", "20261202")))
    kills = []
    for i in range(KILLS):
        delay = rng.uniform(0.2, normal)
        proc = _materialize(home, warehouse)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        code, out = _finish(proc, RUN_TIMEOUT)
        kills.append((round(delay, 2), code))
        _recover(home, warehouse, monkeypatch)
        with _instance(home) as instance:
            assert _claimed(instance) == [], (i, delay)
            assert _in_progress(instance) == [], (i, delay)
        assert _unsettled(warehouse) == [], (i, delay)
    # The next materialize finishes in its normal time (generously bounded: a shared CI box).
    started = time.monotonic()
    code, out = _finish(_materialize(home, warehouse), max(3 * normal, 60))
    assert code == 0, out[-3000:]
    print(
        f"kill test: {KILLS} kills {kills}; normal run {normal:.1f}s, after: "
        f"{time.monotonic() - started:.1f}s"
    )
    assert sum(c == -signal.SIGKILL for _, c in kills) >= KILLS // 2
