"""SIGKILL a sync at random points, resume each time: the final store equals the source and
no checkpoint ever moves backwards (offset, cursor, status per run and partition; the
completed boundary per partition)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.sync import checkpoints
from ecm_assets.sync.checkpoints import STATUS_ORDER
from ecm_assets.sync.demo_source import create_source, write
from ecm_assets.sync.runner import run_job
from ecm_assets.sync.spec import parse_spec
from ecm_assets.sync.status import verify
from tests.test_sync.conftest import spec_data

KILLS_PER_SOURCE = 11  # x 2 sources >= 20 on DuckDB
#: The PostgreSQL warehouse variant is leaner (CI time); the 20-kill bar is met above.
KILLS_POSTGRES_WAREHOUSE = 6
CHILD = (
    "import sys; from ecm_assets.sync.spec import load_spec; "
    "from ecm_assets.sync.runner import run_job; spec = load_spec(sys.argv[1]); "
    "print('ready', flush=True); run_job(spec, sys.argv[2]); print('done', flush=True)"
)


def _snapshot(wh: str, job_id: str) -> dict:
    warehouse = open_warehouse(wh)
    if not warehouse.exists():
        return {}
    with warehouse.connect(read_only=True) as conn:
        return {(c.run_id, c.partition): c for c in checkpoints.load_checkpoints(conn, job_id)}


def _forward(before: dict, after: dict) -> None:
    for key, old in before.items():
        new = after.get(key)
        assert new is not None, f"checkpoint {key} disappeared"
        assert new.offset >= old.offset, (key, old.offset, new.offset)
        assert STATUS_ORDER[new.status] >= STATUS_ORDER[old.status], (key, old.status, new.status)
        if old.last_cursor and new.last_cursor:
            assert (str(new.last_cursor[0]), new.last_cursor[1]) >= (
                str(old.last_cursor[0]),
                old.last_cursor[1],
            ), key


def _boundaries(snap: dict) -> dict[str, tuple]:
    done: dict[str, tuple] = {}
    for (_, partition), c in sorted(snap.items(), key=lambda kv: kv[1].timestamp):
        if c.status == "completed" and c.boundary and c.boundary.get("next_updated_at"):
            done[partition] = (str(c.boundary["next_updated_at"]), c.boundary["max_id_at_boundary"])
    return done


def _kill_loop(
    url: str,
    connector: str,
    tmp_path: Path,
    wh: str,
    kills_wanted: int = KILLS_PER_SOURCE,
    max_sleep: float = 1.5,
) -> int:
    create_source(url, 1000)
    data = spec_data(
        url, connector, page_rows=150, source__cursor={"safety_lag": "0.2 s", "overlap": "5 s"}
    )
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(data))
    spec = parse_spec(data, spec_file)
    rng = random.Random(20)
    kills = completed = 0
    previous: dict = {}
    previous_bounds: dict = {}
    attempts = 0
    phases: set[str] = set()
    # The kill lands at a random moment of the run. A run that finished before its kill
    # (a fast or an idle machine) narrows the window, so the kills keep landing, spread over
    # the phases the run really has, however fast it is.
    window = max_sleep
    while kills < kills_wanted and attempts < 6 * kills_wanted:
        attempts += 1
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(spec_file), str(wh)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, window))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                kills += 1
            else:
                window = max(0.05, window * 0.6)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        if child.returncode == 0:
            completed += 1
        else:
            assert child.returncode == -signal.SIGKILL, child.stderr.read()
        snap = _snapshot(wh, spec.job_id)
        if snap:
            newest = max(snap.values(), key=lambda c: c.timestamp).run_id
            phases.add("/".join(sorted({c.status for c in snap.values() if c.run_id == newest})))
        _forward(previous, snap)
        bounds = _boundaries(snap)
        for partition, b in previous_bounds.items():
            assert bounds[partition] >= b, (partition, b, bounds[partition])
        previous, previous_bounds = snap, bounds
        # The source keeps changing between attempts.
        write(url, 0.3, seed=attempts)
    time.sleep(0.3)
    run_job(spec, wh)
    run_job(spec, wh, job_type="full_extraction")
    _forward(previous, _snapshot(wh, spec.job_id))
    counts = verify(spec, wh)
    print(
        f"\n[{connector} -> {open_warehouse(wh).kind}] {kills} SIGKILLs, {completed} runs "
        "finished between them; "
        f"checkpoint states seen after kills: {sorted(phases)}; store vs source: {counts}"
    )
    assert counts["missing"] == counts["duplicated"] == counts["stale"] == 0
    assert counts["resurrected"] == 0
    return kills


@pytest.mark.timeout(600)
def test_sigkill_resume_sqlite(tmp_path, sqlite_url):
    wh = str(tmp_path / "wh.duckdb")
    assert _kill_loop(sqlite_url, "sqlite", tmp_path, wh) >= KILLS_PER_SOURCE


@pytest.mark.timeout(600)
def test_sigkill_resume_postgresql(tmp_path, pg_schema):
    url, _ = pg_schema
    wh = str(tmp_path / "wh.duckdb")
    assert _kill_loop(url, "postgresql", tmp_path, wh) >= KILLS_PER_SOURCE


@pytest.mark.timeout(600)
def test_sigkill_resume_postgresql_warehouse(tmp_path, sqlite_url, pg_warehouse):
    """The same kills and checks with the store, staging and checkpoints in PostgreSQL."""
    # A run on a server spends longer before its first checkpoint (connect, lock, ledger):
    # a wider window lets the fewer kills land in every phase.
    kills = _kill_loop(
        sqlite_url, "sqlite", tmp_path, pg_warehouse, KILLS_POSTGRES_WAREHOUSE, max_sleep=3.0
    )
    assert kills >= KILLS_POSTGRES_WAREHOUSE


# --- SIGKILL inside the merge phase, at named failpoints -------------------------------------
# Random kills rarely land in the merge (it is the short end of a run), so these kills are
# deterministic: ECM_FAILPOINTS=<point>=kill SIGKILLs the child at that point of one bucket.
#   sync.merge.after_merge.<p>    the bucket's MERGE/INSERT ran, its checkpoint not yet
#   sync.merge.before_commit.<p>  everything of the bucket written (and, for the last bucket,
#                                 the manifest PUBLISHED), the transaction not committed
#   sync.merge.after_commit.<p>   right after the bucket's commit
# On a first load all buckets share one INSERT and one transaction: the points fire for each
# bucket inside it (after_merge, before_commit) or after it (after_commit).


def _run_child(spec_file: Path, wh: str, failpoint: str | None) -> int:
    env = dict(os.environ)
    env.pop("ECM_FAILPOINTS", None)
    if failpoint:
        env["ECM_FAILPOINTS"] = f"{failpoint}=kill"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec_file), str(wh)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if failpoint:
        assert child.returncode == -signal.SIGKILL, (failpoint, child.returncode, child.stderr)
    else:
        assert child.returncode == 0, child.stderr[-3000:]
    return child.returncode


def _bucket_state(wh: str, spec, run_id: str) -> dict[str, tuple[str, int, int, int]]:
    """Per partition of the run: (checkpoint status, rows_merged, store rows this run wrote,
    staged rows of the run whose key and version the store does not hold)."""
    from ecm_assets.sync.sink import tables_for

    t = tables_for(spec)
    with open_warehouse(wh).connect(read_only=True) as conn:
        cps = {c.partition: c for c in checkpoints.load_checkpoints(conn, spec.job_id, run_id)}
        written = dict(
            conn.execute(
                f"SELECT _partition, count(*) FROM {t.store} WHERE run_id = ? GROUP BY 1",
                [run_id],
            ).fetchall()
        )
        staged_exists = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_staging' "
            "AND table_name = 'sync__customer_history'"
        ).fetchone()[0]
        unapplied: dict[str, int] = {}
        if staged_exists:
            unapplied = dict(
                conn.execute(
                    f"SELECT s._partition, count(*) FROM {t.staging} s LEFT JOIN {t.store} x "
                    "ON x.id = s.id AND x._version >= s._version WHERE s._run_id = ? AND "
                    "x.id IS NULL GROUP BY 1",
                    [run_id],
                ).fetchall()
            )
    return {
        p: (c.status, c.rows_merged, int(written.get(p, 0)), int(unapplied.get(p, 0)))
        for p, c in cps.items()
    }


def _assert_no_half_bucket(state: dict, expect_completed: set[str]) -> None:
    completed = {p for p, s in state.items() if s[0] == "completed"}
    assert completed == expect_completed, (sorted(completed), sorted(expect_completed))
    for p, (status, merged, written, unapplied) in state.items():
        if status == "completed":
            # Whole: every row the bucket's merge wrote is there, and no staged row is missing.
            assert written == merged and unapplied == 0, (p, state[p])
        else:
            # Untouched: not one row of this run in the bucket.
            assert written == 0, (p, state[p])


def _manifest(wh: str, spec, run_id: str):
    from ecm_assets.manifest.ledger import load_manifests

    with open_warehouse(wh).connect(read_only=True) as conn:
        return next(m for m in load_manifests(conn, asset=spec.asset_name) if m.run_id == run_id)


def _merge_phase_kills(url: str, connector: str, tmp_path: Path, wh: str) -> list[str]:
    from ecm_assets.manifest.states import RunStatus

    create_source(url, 2000)
    data = spec_data(
        url, connector, page_rows=500, source__cursor={"safety_lag": "0.2 s", "overlap": "5 s"}
    )
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(data))
    spec = parse_spec(data, spec_file)
    ids = spec.partitioning.partition_ids
    seen: list[str] = []
    previous: dict = {}

    def step(failpoint: str | None, expect_completed: set[str]) -> str:
        nonlocal previous
        _run_child(spec_file, wh, failpoint)
        snap = _snapshot(wh, spec.job_id)
        _forward(previous, snap)
        previous = snap
        run_id = max(snap.values(), key=lambda c: c.timestamp).run_id
        state = _bucket_state(wh, spec, run_id)
        _assert_no_half_bucket(state, expect_completed)
        seen.append(f"{failpoint or 'resume to the end'}: {len(expect_completed)} buckets merged")
        return run_id

    # First load: every bucket is appended in one transaction, so a kill before its commit
    # leaves no bucket merged and a kill after it leaves all of them (and PUBLISHED).
    r1 = step(f"sync.merge.after_merge.{ids[3]}", set())
    assert step(f"sync.merge.before_commit.{ids[-1]}", set()) == r1
    assert _manifest(wh, spec, r1).status != RunStatus.PUBLISHED
    assert step(f"sync.merge.after_commit.{ids[7]}", set(ids)) == r1
    assert _manifest(wh, spec, r1).status == RunStatus.PUBLISHED

    # An existing store: updates and inserts take the version-aware MERGE path.
    write(url, 0.6, seed=3)
    time.sleep(0.5)
    r2 = step(f"sync.merge.after_merge.{ids[0]}", set())
    assert r2 != r1
    assert step(f"sync.merge.before_commit.{ids[9]}", set(ids[:9])) == r2
    assert step(f"sync.merge.after_commit.{ids[12]}", set(ids[:13])) == r2
    assert step(None, set(ids)) == r2
    assert _manifest(wh, spec, r2).status == RunStatus.PUBLISHED

    counts = verify(spec, wh)
    print(
        f"\n[{connector} -> {open_warehouse(wh).kind}] merge-phase kills: {seen}; "
        f"store vs source: {counts}"
    )
    assert counts["missing"] == counts["duplicated"] == counts["stale"] == 0, counts
    assert counts["resurrected"] == 0, counts
    return seen


@pytest.mark.timeout(600)
def test_sigkill_inside_merge_phase_never_half_applies_a_bucket_sqlite(tmp_path, sqlite_url):
    wh = str(tmp_path / "wh.duckdb")
    assert len(_merge_phase_kills(sqlite_url, "sqlite", tmp_path, wh)) == 7


@pytest.mark.timeout(600)
def test_sigkill_inside_merge_phase_never_half_applies_a_bucket_postgresql(tmp_path, pg_schema):
    url, _ = pg_schema
    wh = str(tmp_path / "wh.duckdb")
    assert len(_merge_phase_kills(url, "postgresql", tmp_path, wh)) == 7


@pytest.mark.timeout(600)
def test_sigkill_inside_merge_phase_never_half_applies_a_bucket_postgresql_warehouse(
    tmp_path, sqlite_url, pg_warehouse
):
    """A killed PostgreSQL transaction is rolled back by the server: no half bucket."""
    assert len(_merge_phase_kills(sqlite_url, "sqlite", tmp_path, pg_warehouse)) == 7
