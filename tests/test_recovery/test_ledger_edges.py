"""Restartability edges of the ledger: approval retries, leases, attempts, debris, PLANNED.

Each test is named after the scenario that went wrong before: a failed approval that could
not be retried, a live run on another host declared dead, a forced recovery whose run then
published anyway, a retry that erased the failed attempt, a debris sweep that dropped a live
run's staging, a PLANNED manifest never settled.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from ecm_assets.contracts.registry import register
from ecm_assets.manifest.lease import LEASE_TABLE, acquire, release
from ecm_assets.manifest.ledger import (
    Manifest,
    load_manifest,
    load_manifests,
    mark_failed,
    plan,
    transition,
)
from ecm_assets.manifest.states import RunStatus
from ecm_assets.operations.review import approve
from ecm_assets.publish.failpoints import ENV_VAR, InjectedFault
from ecm_assets.publish.outbox import begin_attempt
from ecm_assets.publish.protocol import AttemptSettledError, publish_partitions
from ecm_assets.publish.recovery import recover
from ecm_assets.publish.staging import STAGING_SCHEMA, staging_table_name
from tests.test_recovery._race import REPLACE, publish_request

REPO = Path(__file__).resolve().parents[2]
D1, D2 = date(2026, 9, 1), date(2026, 9, 2)
AS_OF = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)
register(REPLACE)


def _hold(warehouse: Path, run_id: str) -> None:
    request = publish_request(REPLACE, run_id, [D1], AS_OF)
    with duckdb.connect(str(warehouse)) as conn:
        publish_partitions(conn, request.__class__(**{**request.__dict__, "hold": True}))
        assert load_manifest(conn, run_id, REPLACE.name).status == RunStatus.HELD


def _visible_runs(warehouse: Path) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        exists = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [REPLACE.name]
        ).fetchone()[0]
        if not exists:
            return set()
        rows = conn.execute(f"SELECT DISTINCT run_id FROM {REPLACE.name}").fetchall()
        return {r for (r,) in rows}


def test_failed_approval_returns_to_held_and_a_second_approve_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "w.duckdb"
    _hold(warehouse, "held-1")
    monkeypatch.setenv(ENV_VAR, "publish.after_delete")
    with duckdb.connect(str(warehouse)) as conn:
        with pytest.raises(InjectedFault):
            approve(conn, "held-1", actor="bob", note="checked")
        manifest = load_manifest(conn, "held-1", REPLACE.name)
        assert manifest.status == RunStatus.HELD
        monkeypatch.delenv(ENV_VAR)
        result = approve(conn, "held-1", actor="bob", note="checked, again")
        assert result.rows > 0
        assert load_manifest(conn, "held-1", REPLACE.name).status == RunStatus.PUBLISHED
    assert _visible_runs(warehouse) == {"held-1"}


APPROVE_SCRIPT = textwrap.dedent(
    """
    import sys
    import duckdb
    from ecm_assets.contracts.registry import register
    from ecm_assets.operations.review import approve
    from tests.test_recovery._race import REPLACE
    register(REPLACE)
    with duckdb.connect(sys.argv[1]) as conn:
        approve(conn, sys.argv[2], actor="bob", note="killed midway")
    """
)


@pytest.mark.parametrize("point", ["publish.after_staging", "publish.before_commit"])
def test_approval_killed_midway_stays_held_and_recover_leaves_it_for_a_new_approve(
    tmp_path: Path, point: str
) -> None:
    """Crash point "during approval": the run is HELD before and after, never lost."""
    warehouse = tmp_path / "w.duckdb"
    _hold(warehouse, "held-2")
    proc = subprocess.run(
        [sys.executable, "-c", APPROVE_SCRIPT, str(warehouse), "held-2"],
        cwd=REPO,
        env={**__import__("os").environ, ENV_VAR: f"{point}=kill", "ECM_DURABLE_STAGING": "1"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with duckdb.connect(str(warehouse)) as conn:
        assert load_manifest(conn, "held-2", REPLACE.name).status == RunStatus.HELD
        assert recover(conn) == []  # HELD waits for a human, not for recovery
        approve(conn, "held-2", actor="bob", note="second try")
        assert load_manifest(conn, "held-2", REPLACE.name).status == RunStatus.PUBLISHED
    assert _visible_runs(warehouse) == {"held-2"}


def _running(conn: duckdb.DuckDBPyConnection, run_id: str, **fields) -> Manifest:
    manifest = plan(
        conn,
        Manifest(run_id=run_id, asset=REPLACE.name, output_boundary=[D1.isoformat()], **fields),
    )
    transition(conn, run_id, REPLACE.name, RunStatus.INPUT_LOCKED)
    transition(conn, run_id, REPLACE.name, RunStatus.RUNNING)
    return manifest


def test_live_run_on_another_host_is_left_alone_until_its_lease_expires(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        _running(conn, "remote", host="other-host", pid=1)
        expires = datetime.now(UTC) + timedelta(minutes=5)
        conn.execute(
            f"INSERT INTO {LEASE_TABLE} VALUES ('remote', ?, 1, 'other-host:1:x', 'other-host', "
            "1, ?, ?)",
            [REPLACE.name, datetime.now(UTC), expires],
        )
        (decision,) = recover(conn)
        assert decision.decision == "STILL_RUNNING" and "valid until" in decision.evidence
        assert load_manifest(conn, "remote", REPLACE.name).status == RunStatus.RUNNING

        conn.execute(f"UPDATE {LEASE_TABLE} SET expires_at = ?", [datetime.now(UTC)])
        (decision,) = recover(conn)
        assert decision.decision == "SAFE_TO_RETRY" and "expired" in decision.evidence
        assert load_manifest(conn, "remote", REPLACE.name).status == RunStatus.FAILED


def test_forced_recovery_of_a_live_attempt_never_lets_its_output_become_visible(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        manifest = _running(conn, "live")
        acquire(conn, manifest)
        assert recover(conn)[0].decision == "STILL_RUNNING"
        assert recover(conn, force=True)[0].decision == "SAFE_TO_RETRY"
        # The live process carries on and asks to publish what attempt 1 computed.
        request = publish_request(REPLACE, "live", [D1], AS_OF)
        with pytest.raises(AttemptSettledError, match="attempt 1 may not publish"):
            publish_partitions(conn, request.__class__(**{**request.__dict__, "attempt": 1}))
        attempts = load_manifests(conn, run_id="live", all_attempts=True)
        assert [(m.attempt, m.status) for m in attempts] == [(1, RunStatus.FAILED)]
        release("live", REPLACE.name, 1)
    assert _visible_runs(warehouse) == set()


def test_step_retry_after_a_failure_is_a_new_attempt_and_the_failed_one_stays(
    tmp_path: Path,
) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        first = Manifest(run_id="r", asset=REPLACE.name, output_boundary=[D1.isoformat()])
        assert begin_attempt(conn, first, None) is None
        mark_failed(conn, "r", REPLACE.name, RuntimeError("boom"))
        release("r", REPLACE.name, 1)
        second = Manifest(run_id="r", asset=REPLACE.name, output_boundary=[D1.isoformat()])
        assert begin_attempt(conn, second, None) is None
        attempts = load_manifests(conn, run_id="r", all_attempts=True)
        assert [(m.attempt, m.status) for m in attempts] == [
            (1, RunStatus.FAILED),
            (2, RunStatus.PLANNED),
        ]
        assert attempts[0].status_detail == "RuntimeError: boom"
        assert load_manifest(conn, "r", REPLACE.name).attempt == 2
        release("r", REPLACE.name, 2)


def test_debris_sweep_keeps_the_staging_of_a_live_run_of_other_partitions(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with duckdb.connect(str(warehouse)) as conn:
            plan(
                conn,
                Manifest(
                    run_id="other",
                    asset=REPLACE.name,
                    output_boundary=[D2.isoformat()],
                    pid=sleeper.pid,
                ),
            )
            transition(conn, "other", REPLACE.name, RunStatus.INPUT_LOCKED)
            transition(conn, "other", REPLACE.name, RunStatus.RUNNING)
            staging = staging_table_name(REPLACE, "other")
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{STAGING_SCHEMA}"')
            conn.execute(f'CREATE TABLE "{STAGING_SCHEMA}"."{staging}" (x INTEGER)')
            conn.execute(f'CREATE TABLE "{STAGING_SCHEMA}"."{REPLACE.name}__deadrun" (x INT)')
            result = publish_partitions(conn, publish_request(REPLACE, "mine", [D1], AS_OF))
            assert result.debris_dropped == (f"{REPLACE.name}__deadrun",)
            tables = {
                t
                for (t,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                    [STAGING_SCHEMA],
                ).fetchall()
            }
            assert staging in tables
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


@pytest.mark.parametrize("left", [RunStatus.PLANNED, RunStatus.INPUT_LOCKED])
def test_manifest_left_planned_by_a_killed_process_is_settled_by_recover_and_by_a_publish(
    tmp_path: Path, left: RunStatus
) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        for run_id in ("dead-1", "dead-2"):
            plan(
                conn,
                Manifest(
                    run_id=run_id,
                    asset=REPLACE.name,
                    output_boundary=[D1.isoformat()],
                    pid=_dead_pid(),
                ),
            )
            if left == RunStatus.INPUT_LOCKED:
                transition(conn, run_id, REPLACE.name, left)
        (decision,) = recover(conn, run_id="dead-1")
        assert (decision.previous_status, decision.decision) == (str(left), "SAFE_TO_RETRY")
        assert load_manifest(conn, "dead-1", REPLACE.name).status == RunStatus.FAILED
        # A later publish of the same partitions settles what dead runs left there.
        result = publish_partitions(conn, publish_request(REPLACE, "later", [D1], AS_OF))
        assert [(r.run_id, r.decision) for r in result.recoveries] == [("dead-2", "SAFE_TO_RETRY")]
        assert load_manifest(conn, "dead-2", REPLACE.name).status == RunStatus.FAILED


def test_heartbeat_renews_the_lease_of_a_working_attempt_and_stops_with_it(
    tmp_path: Path,
) -> None:
    import logging
    from types import SimpleNamespace

    from ecm_assets.manifest.lease import Heartbeat, load_lease
    from ecm_assets.publish.io_manager import DuckDBPublishIOManager

    warehouse = tmp_path / "w.duckdb"
    io = DuckDBPublishIOManager(database=str(warehouse))
    context = SimpleNamespace(log=logging.getLogger("test"))
    with duckdb.connect(str(warehouse)) as conn:
        manifest = _running(conn, "beating")
        acquire(conn, manifest)
        first = load_lease(conn, manifest)
    with Heartbeat(warehouse, interval=0.05):
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while datetime.now(UTC) < deadline:
            # A read-only open in this process never collides with a beat's connection.
            with io.connect(context, read_only=True) as conn:
                renewed = load_lease(conn, manifest)
            if renewed.renewed_at > first.renewed_at:
                break
            time.sleep(0.1)
        assert renewed.renewed_at > first.renewed_at
        assert renewed.expires_at > first.expires_at
    release("beating", REPLACE.name, 1)
    with duckdb.connect(str(warehouse)) as conn:
        # Released: this process no longer works on it, so recovery may settle it at once.
        assert recover(conn)[0].decision == "SAFE_TO_RETRY"
