"""A run launched by the daemon is SIGKILLed while it holds the warehouse pool slot.

The shipped dagster.yaml on a temp DAGSTER_HOME: the queued run coordinator, the pool
`ecm_duckdb_warehouse` with one slot, run monitoring. Run A (a backfill of two case_events
partitions) is launched through the webserver, dequeued by `dagster-daemon run` and started
by the code server. While its step holds the slot, A's process tree is SIGKILLed: its run
worker and step processes (they share the daemon's process group, so the group itself is
left alone). Run B (another partition) is then launched; it queues behind the slot A's
dead step still holds.

Then, without anyone running `ecm recover`: the code server reports A failed, run
monitoring frees the slot A still holds, and B completes. `ecm recover` afterwards settles
A's manifests in the ledger, so none is left PLANNED, RUNNING or COMMITTING. Every wait is
bounded; the webserver and the daemon are always stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from ecm_assets.cli import main as ecm
from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import UNSETTLED
from ecm_assets.operations.event_log import home_instance
from ecm_assets.operations.graphql import launch_partition_backfill
from ecm_assets.orchestration.factory import WAREHOUSE_POOL
from tests._processes import graphql, start_dagster

#: Run monitoring polls every 30 s and frees a dead run's slots 60 s after it ended; a
#: loaded CI box gets several times that.
DEADLINE_SECONDS = 600


def _wait(
    what: str, deadline: float, probe: Callable[[], Any], logs: Path, poll: float = 0.5
) -> Any:
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(poll)
    daemon = (logs / "daemon.log").read_text()[-4000:]
    raise AssertionError(f"timed out waiting for {what}\n--- daemon.log tail ---\n{daemon}")


DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { required healthy } } } }"


def _daemons_healthy(port: int) -> bool:
    statuses = graphql(port, DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return all(s["healthy"] for s in statuses if s["required"])


def _runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def _claimed(instance: dg.DagsterInstance) -> list[str]:
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    return [s.run_id for s in info.claimed_slots]


def _run_processes(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    """The live processes of a run: every pid on its events (run worker, step processes)
    that is a spawned worker, plus their children. The code server and the daemon, which
    share the group, are never in it."""
    pids = {
        record.event_log_entry.dagster_event.pid
        for record in instance.get_records_for_run(run_id, limit=1000).records
        if record.event_log_entry.dagster_event is not None
        and record.event_log_entry.dagster_event.pid
    }
    found: set[int] = set()
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            if b"multiprocessing" in cmdline.read_bytes():
                found.add(pid)
    children: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid in found:
                children.add(int(stat.parent.name))
    return sorted(found | children)


def _unsettled(warehouse: Path) -> list[tuple[str, str, str]]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return [
            (m.run_id, m.asset, str(m.status))
            for m in load_manifests(conn)
            if m.status in UNSETTLED
        ]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds processes in /proc")
def test_a_daemon_run_killed_holding_the_pool_slot_frees_it_and_the_next_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    warehouse = tmp_path / "warehouse.duckdb"
    # Large enough that A's step holds the slot for several seconds.
    generate_demo_data(data, date(2026, 9, 1), date(2026, 9, 3), seed=5, scale=1.5)
    deadline = time.monotonic() + DEADLINE_SECONDS
    env = {"ECM_DATA_DIR": str(data), "ECM_WAREHOUSE": str(warehouse)}
    with ExitStack() as stack:
        port, _ = start_dagster(stack, tmp_path, env, deadline)
        url = f"http://127.0.0.1:{port}"
        home = tmp_path / "home"
        # Opened once the daemon is up: opening the instance while the daemon still creates
        # its SQLite storage races the schema migration.
        _wait("the daemon to be healthy", deadline, lambda: _daemons_healthy(port), tmp_path)
        instance = stack.enter_context(home_instance(home))

        a_backfill = launch_partition_backfill(
            url, {"case_events": ("2026-09-01", "2026-09-02")}, {}
        )
        a = _wait("run A to be launched", deadline, lambda: _runs(instance, a_backfill), tmp_path)[
            0
        ]
        _wait(
            "run A to hold the warehouse pool slot",
            deadline,
            lambda: a.run_id in _claimed(instance) or instance.get_run_by_id(a.run_id).is_finished,
            tmp_path,
            poll=0.1,
        )
        assert a.run_id in _claimed(instance), "run A finished before its slot was seen"
        victims = _wait(
            "run A's processes", deadline, lambda: _run_processes(instance, a.run_id), tmp_path
        )
        assert a.run_id in _claimed(instance), "run A released its slot before it was killed"
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        # The next run queues behind the slot the dead step still holds.
        b_backfill = launch_partition_backfill(
            url, {"case_events": ("2026-09-03", "2026-09-03")}, {}
        )
        b = _wait("run B to be submitted", deadline, lambda: _runs(instance, b_backfill), tmp_path)[
            0
        ]

        # Nobody runs `ecm recover`: the code server reports A failed and run monitoring
        # (the shipped dagster.yaml) frees the slot A's dead step still holds.
        _wait(
            "run A to be reported failed",
            deadline,
            lambda: instance.get_run_by_id(a.run_id).status == dg.DagsterRunStatus.FAILURE,
            tmp_path,
        )
        _wait(
            "run monitoring to free A's pool slot",
            deadline,
            lambda: a.run_id not in _claimed(instance),
            tmp_path,
        )
        finished = _wait(
            "run B to finish",
            deadline,
            lambda: (run := instance.get_run_by_id(b.run_id)).is_finished and run,
            tmp_path,
        )
        assert finished.status == dg.DagsterRunStatus.SUCCESS, (
            tmp_path / "daemon.log"
        ).read_text()[-3000:]
        assert _claimed(instance) == []

        # The ledger's side: `ecm recover` settles whatever A's attempt left in flight.
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert ecm(["recover", "--warehouse", str(warehouse), "--json"]) == 0, out.getvalue()
        decisions = json.loads(out.getvalue())
        # What A left depends on where the kill landed (nothing, or an attempt in flight that
        # recover settles); of any other run (B) only an owed event already in Dagster.
        others = {d["decision"] for d in decisions if d["run_id"] != a.run_id}
        assert others <= {"OUTBOX_SETTLED"}, decisions
        assert _unsettled(warehouse) == []
        with duckdb.connect(str(warehouse), read_only=True) as conn:
            published = conn.execute(
                "SELECT DISTINCT business_date::VARCHAR FROM case_events ORDER BY 1"
            ).fetchall()
        assert ("2026-09-03",) in published
