"""Crash recovery with a real process SIGKILLed at every step of the publish protocol.

The old output of case_events 2026-09-03 is published; a late landing file then changes the
partition. A subprocess materializes the partition again and is killed at one failpoint.
Readers must see exactly the old output or exactly the new one, `ecm recover` must settle the
dead run from durable state alone, and a normal rerun must then publish the new output.

The matrix runs on both warehouse backends (tests/_backends.py): a DuckDB file copied per
test, or a PostgreSQL database created per test from the module's base database as template.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.cli import main as ecm
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.manifest.ledger import Manifest, load_manifest, load_manifests, plan, transition
from ecm_assets.manifest.states import IN_FLIGHT, RunStatus
from ecm_assets.publish.failpoints import ENV_VAR
from ecm_assets.publish.protocol import business_checksum
from ecm_assets.publish.staging import STAGING_SCHEMA, staging_table_name
from tests._warehouses import BACKENDS, copy_of, warehouse_for

PARTITION = "2026-09-03"
DAY = date.fromisoformat(PARTITION)
SUBPROCESS_TIMEOUT = 180
LATE_FILE = Path("landing/case_events/ingest_date=2026-09-05/events-900-late.csv")
LATE_EVENT = "E9999999901"
LATE_CSV = (
    "event_id,case_id,event_type,event_ts,unit_id,priority\n"
    f"{LATE_EVENT},C999999901,opened,{PARTITION}T12:00:00Z,U01,P2\n"
)

MATERIALIZE_SCRIPT = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path

    import dagster as dg

    from ecm_assets.definitions import case_sla_definitions as build_definitions

    defs = build_definitions(Path(sys.argv[1]), sys.argv[2])
    dg.materialize(
        list(defs.assets),
        selection=["case_events"],
        resources=defs.resources,
        partition_key={PARTITION!r},
    )
    """
)


@dataclass(frozen=True)
class Output:
    """What a reader sees of the partition: rows, checksum, and the runs that wrote them."""

    rows: int
    checksum: str
    run_ids: frozenset[str]


@dataclass(frozen=True)
class Base:
    data: Path
    warehouse: str  # a DuckDB path or a postgresql:// URL
    old_run: str
    old: Output
    new: Output


def _materialize(data: Path, warehouse: str) -> str:
    defs = build_definitions(data, warehouse)
    result = dg.materialize(
        list(defs.assets or []),
        selection=["case_events"],
        resources=defs.resources,
        partition_key=PARTITION,
    )
    assert result.success
    return result.run_id


def _read_output(warehouse: str) -> Output:
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM main.case_events WHERE business_date = ?", [DAY]
        ).fetchone()[0]
        checksum = business_checksum(
            conn, CASE_EVENTS, "main.case_events", "WHERE business_date = ?", [DAY]
        )
        runs = conn.execute(
            "SELECT DISTINCT run_id FROM main.case_events WHERE business_date = ?", [DAY]
        ).fetchall()
    return Output(rows, checksum, frozenset(r for (r,) in runs))


def _manifest(warehouse: str, run_id: str) -> Manifest:
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        return load_manifest(conn, run_id, "case_events")


def _manifests(warehouse: str) -> list[Manifest]:
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        return load_manifests(conn)


def _staging(warehouse: str) -> list[str]:
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        return [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                [STAGING_SCHEMA],
            ).fetchall()
        ]


def _ecm_json(*argv: str) -> object:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ecm(list(argv))
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


@pytest.fixture(scope="module", params=BACKENDS)
def base(request, demo_data, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    """OLD output published from the demo data; NEW output computed with one late event."""
    root, _ = demo_data
    work = tmp_path_factory.mktemp("crash_base")
    data = work / "data"
    shutil.copytree(root, data)
    with contextlib.ExitStack() as stack:
        warehouse = stack.enter_context(warehouse_for(request.param, work, "old"))
        yield _publish_base(stack, data, work, warehouse)


def _publish_base(stack: contextlib.ExitStack, data: Path, work: Path, warehouse: str) -> Base:
    old_run = _materialize(data, warehouse)
    old = _read_output(warehouse)
    assert old.run_ids == {old_run}
    assert _manifest(warehouse, old_run).outputs["business_checksum"] == old.checksum

    (data / LATE_FILE).write_text(LATE_CSV)
    new_warehouse = stack.enter_context(copy_of(warehouse, work, "new"))
    new_run = _materialize(data, new_warehouse)
    new = _read_output(new_warehouse)
    assert new.run_ids == {new_run}
    assert _manifest(new_warehouse, new_run).outputs["business_checksum"] == new.checksum
    assert new.rows == old.rows + 1
    assert new.checksum != old.checksum
    return Base(data, warehouse, old_run, old, new)


@dataclass(frozen=True)
class Crash:
    point: str
    #: The killed run's manifest status as the crash left it on disk.
    left_status: RunStatus
    #: Whether the killed run's staging table exists after the crash.
    staged: bool
    #: What `ecm recover` decides; None when nothing is in flight (the run committed).
    decision: str | None

    @property
    def committed(self) -> bool:
        return self.decision is None


RUNNING, COMMITTING, PUBLISHED = RunStatus.RUNNING, RunStatus.COMMITTING, RunStatus.PUBLISHED
CRASHES = [
    Crash("publish.before_staging", RUNNING, False, "SAFE_TO_RETRY"),
    Crash("publish.mid_staging", RUNNING, True, "FAILED_CLEANED"),
    Crash("publish.after_staging", RUNNING, True, "FAILED_CLEANED"),
    Crash("publish.before_delete", COMMITTING, True, "FAILED_CLEANED"),
    Crash("publish.after_delete", COMMITTING, True, "FAILED_CLEANED"),
    Crash("publish.after_insert", COMMITTING, True, "FAILED_CLEANED"),
    # PUBLISHED is written inside the transaction: killed before COMMIT, the ledger says
    # COMMITTING, never a PUBLISHED the data does not show.
    Crash("publish.before_commit", COMMITTING, True, "FAILED_CLEANED"),
    Crash("publish.after_commit", PUBLISHED, True, None),
]


def _run_killed(data: Path, warehouse: str, point: str, cwd: Path, durable: bool) -> None:
    env = {
        **os.environ,
        ENV_VAR: f"{point}=kill",
        "ECM_DURABLE_STAGING": "1" if durable else "0",
        "ECM_DATA_DIR": str(data),
        "ECM_WAREHOUSE_URL": warehouse,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", MATERIALIZE_SCRIPT, str(data), str(warehouse)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr.decode(errors="replace")[-3000:]


@pytest.fixture
def warehouse(base: Base, tmp_path: Path) -> Iterator[str]:
    """This test's copy of the base warehouse (old output published)."""
    with copy_of(base.warehouse, tmp_path, "warehouse") as target:
        yield target


@pytest.mark.parametrize("durable", [True, False], ids=["durable-staging", "temp-staging"])
@pytest.mark.parametrize("crash", CRASHES, ids=lambda c: c.point)
def test_sigkill_at_publish_step_then_recover_and_rerun(
    base: Base, warehouse: str, tmp_path: Path, crash: Crash, durable: bool
) -> None:
    if not durable:
        # A temp staging table dies with its process: nothing is left to clean, so every
        # crash before COMMIT is simply safe to retry.
        crash = Crash(
            crash.point,
            crash.left_status,
            False,
            None if crash.committed else "SAFE_TO_RETRY",
        )
    _run_killed(base.data, warehouse, crash.point, tmp_path, durable)

    # The dead run left its manifest where the crash caught it.
    killed = [m for m in _manifests(warehouse) if m.run_id != base.old_run]
    assert len(killed) == 1
    run_id = killed[0].run_id
    assert killed[0].status == crash.left_status
    assert killed[0].pid != os.getpid()
    staging = staging_table_name(CASE_EVENTS, run_id)
    assert (staging in _staging(warehouse)) == crash.staged

    # A reader sees one complete output: the old one, or the new one once committed.
    seen = _read_output(warehouse)
    if crash.committed:
        assert (seen.rows, seen.checksum, seen.run_ids) == (
            base.new.rows,
            base.new.checksum,
            {run_id},
        )
    else:
        assert seen == base.old

    decisions = _ecm_json("recover", "--warehouse", warehouse, "--json")
    if crash.committed:
        # Nothing is in flight: the manifest committed with the data. Only a durable staging
        # table the killed process never dropped is cleaned.
        expected = [(run_id, "DEBRIS_DROPPED")] if durable else []
        assert [(d["run_id"], d["decision"]) for d in decisions] == expected
        assert staging not in _staging(warehouse)
    else:
        assert [(d["run_id"], d["was"], d["decision"]) for d in decisions] == [
            (run_id, str(crash.left_status), crash.decision)
        ]
    if crash.decision == "FAILED_CLEANED":
        assert staging in decisions[0]["evidence"]
    if crash.staged and not crash.committed:
        assert staging not in _staging(warehouse)

    settled = _manifest(warehouse, run_id)
    assert settled.status == (PUBLISHED if crash.committed else RunStatus.FAILED)
    if crash.committed:
        assert settled.outputs["business_checksum"] == base.new.checksum
        assert settled.outputs["rows"] == base.new.rows
    else:
        assert settled.status_detail.startswith("recovery:")
    assert _read_output(warehouse) == seen  # recovery decides; it never touches data
    assert _manifest(warehouse, base.old_run).status == RunStatus.PUBLISHED

    rerun = _materialize(base.data, warehouse)

    assert _read_output(warehouse) == Output(base.new.rows, base.new.checksum, frozenset({rerun}))
    assert _staging(warehouse) == []
    assert _manifest(warehouse, rerun).status == RunStatus.PUBLISHED
    assert _manifest(warehouse, rerun).outputs["business_checksum"] == base.new.checksum
    assert not [m for m in _manifests(warehouse) if m.status in IN_FLIGHT]


def _running_manifest(warehouse: str, run_id: str, pid: int) -> str:
    """A RUNNING manifest of case_events owned by `pid` on this host, with its staging table."""
    with open_warehouse(warehouse).connect() as conn:
        plan(
            conn,
            Manifest(
                run_id=run_id,
                asset="case_events",
                output_boundary=[PARTITION],
                pid=pid,
                host=socket.gethostname(),
            ),
        )
        transition(conn, run_id, "case_events", RunStatus.INPUT_LOCKED)
        transition(conn, run_id, "case_events", RunStatus.RUNNING)
        staging = staging_table_name(CASE_EVENTS, run_id)
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{STAGING_SCHEMA}"')
        conn.execute(f'CREATE TABLE "{STAGING_SCHEMA}"."{staging}" (x INTEGER)')
    return staging


@pytest.mark.parametrize("backend", BACKENDS)
def test_recover_leaves_a_live_running_process_alone_unless_forced(
    tmp_path: Path, backend: str
) -> None:
    with warehouse_for(backend, tmp_path) as warehouse:
        _recover_leaves_live_run_alone(warehouse)


def _recover_leaves_live_run_alone(warehouse: str) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        staging = _running_manifest(warehouse, "run-alive", sleeper.pid)

        decisions = _ecm_json("recover", "--warehouse", warehouse, "--json")
        assert [(d["run_id"], d["was"], d["decision"]) for d in decisions] == [
            ("run-alive", "RUNNING", "STILL_RUNNING")
        ]
        assert str(sleeper.pid) in decisions[0]["evidence"]
        assert _manifest(warehouse, "run-alive").status == RunStatus.RUNNING
        assert _staging(warehouse) == [staging]
        assert sleeper.poll() is None

        forced = _ecm_json("recover", "--warehouse", warehouse, "--json", "--force")
        assert [(d["run_id"], d["was"], d["decision"]) for d in forced] == [
            ("run-alive", "RUNNING", "FAILED_CLEANED")
        ]
        assert _manifest(warehouse, "run-alive").status == RunStatus.FAILED
        assert _staging(warehouse) == []
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
