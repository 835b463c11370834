"""Owed Dagster events delivered on a sensor tick (issue 10 item 9): a real kill "after commit,
before the Dagster event", then `ecm_outbox_delivery` evaluated against the persistent
instance the run used. The daemon's part (record the tick's events, then its cursor) is done
by hand, so each of its failure points can be taken."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.manifest.ledger import EVENT_DELIVERED, EVENT_OWED, load_manifests
from ecm_assets.manifest.states import RunStatus
from ecm_assets.operations.event_log import home_instance
from ecm_assets.operations.outbox_sensor import OUTBOX_SENSOR
from ecm_assets.publish.failpoints import ENV_VAR
from ecm_assets.publish.io_manager import DuckDBPublishIOManager

REPO = Path(__file__).resolve().parents[2]
FIRST, LAST = "2026-09-01", "2026-09-02"
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CLI materialize of case_events SIGKILLed right after its COMMIT."""
    root = tmp_path_factory.mktemp("outbox_sensor")
    data = root / "data"
    generate_demo_data(
        data, date.fromisoformat(FIRST), date.fromisoformat(LAST), seed=5, scale=0.02
    )
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    warehouse = root / "warehouse.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ECM_DATA_DIR": str(data),
        "ECM_WAREHOUSE": str(warehouse),
        ENV_VAR: "publish.after_commit=kill",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecm_assets.cli", "materialize", "--select", "case_events",
         "--partition-range", f"{FIRST}...{LAST}", "--warehouse", str(warehouse)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, out.decode(errors="replace")[-3000:]
    return {"home": home, "warehouse": warehouse, "data": data}


def _sensor() -> dg.SensorDefinition:
    from ecm_assets.definitions import defs

    (sensor,) = [s for s in defs.sensors if s.name == OUTBOX_SENSOR]
    return sensor


def _tick(instance: dg.DagsterInstance, warehouse: Path, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse_io_manager": DuckDBPublishIOManager(database=str(warehouse))},
    )
    return _sensor()(context)


def _manifest(warehouse: Path):
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        (manifest,) = load_manifests(conn, asset="case_events")
    return manifest


def _reported(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.fetch_materializations(dg.AssetKey("case_events"), limit=100).records
    return sorted(
        r.partition_key
        for r in records
        if r.event_log_entry.run_id == run_id
        or getattr(
            r.event_log_entry.asset_materialization.metadata.get("ecm/run_id"), "value", None
        )
        == run_id
    )


def _record(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a tick's result before it saves the cursor."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def test_kill_after_commit_then_a_sensor_tick_delivers_the_materialization_once(killed):
    manifest = _manifest(killed["warehouse"])
    assert manifest.status == RunStatus.PUBLISHED and manifest.dagster_event == EVENT_OWED
    with home_instance(killed["home"]) as instance:
        assert _reported(instance, manifest.run_id) == []

        first = _tick(instance, killed["warehouse"], None)
        assert isinstance(first, dg.SensorResult)
        assert sorted(e.partition for e in first.asset_events) == [FIRST, LAST]
        assert all(e.metadata["ecm/run_id"].value == manifest.run_id for e in first.asset_events)
        # The sensor itself records nothing: until the tick is saved, the event stays owed.
        assert _manifest(killed["warehouse"]).dagster_event == EVENT_OWED

        # A tick that failed before the daemon recorded anything: the next one emits again.
        again = _tick(instance, killed["warehouse"], None)
        assert sorted(e.partition for e in again.asset_events) == [FIRST, LAST]

        _record(instance, again)
        # The daemon died after recording the events, before saving the cursor: the next
        # tick (old cursor) finds them in the instance and emits nothing twice.
        replayed = _tick(instance, killed["warehouse"], None)
        assert isinstance(replayed, dg.SensorResult) and replayed.asset_events == []
        # Its cursor is saved; the tick after it marks the ledger.
        settled = _tick(instance, killed["warehouse"], replayed.cursor)
        assert isinstance(settled, dg.SensorResult) and settled.asset_events == []
        assert _manifest(killed["warehouse"]).dagster_event == EVENT_DELIVERED

        idle = _tick(instance, killed["warehouse"], settled.cursor)
        assert isinstance(idle, dg.SkipReason)
        assert _reported(instance, manifest.run_id) == [FIRST, LAST]  # once each


def test_outbox_sensor_skips_a_tick_while_the_warehouse_is_busy_and_keeps_its_cursor(
    killed, tmp_path: Path
):
    warehouse = tmp_path / "busy.duckdb"
    shutil.copyfile(killed["warehouse"], warehouse)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
         " time.sleep(120)", str(warehouse)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with home_instance(killed["home"]) as instance:
            started = time.monotonic()
            result = _tick(instance, warehouse, '{"emitted":[["r","case_events",1]]}')
            waited = time.monotonic() - started
        assert isinstance(result, dg.SkipReason)
        assert "warehouse busy" in result.skip_message
        assert waited < 60, f"a busy warehouse held the tick {waited:.0f}s"
    finally:
        holder.kill()
        holder.wait(timeout=30)
