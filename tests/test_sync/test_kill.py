"""SIGKILL a sync at random points, resume each time: the final store equals the source and
no checkpoint ever moves backwards (offset, cursor, status per run and partition; the
completed boundary per partition)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ecm_assets.sync import checkpoints
from ecm_assets.sync.checkpoints import STATUS_ORDER
from ecm_assets.sync.demo_source import create_source, write
from ecm_assets.sync.runner import run_job
from ecm_assets.sync.spec import parse_spec
from ecm_assets.sync.status import verify
from tests.test_sync.conftest import spec_data

KILLS_PER_SOURCE = 11  # x 2 sources >= 20
CHILD = (
    "import sys; from ecm_assets.sync.spec import load_spec; "
    "from ecm_assets.sync.runner import run_job; spec = load_spec(sys.argv[1]); "
    "print('ready', flush=True); run_job(spec, sys.argv[2]); print('done', flush=True)"
)


def _snapshot(wh: Path, job_id: str) -> dict:
    if not wh.exists():
        return {}
    with duckdb.connect(str(wh), read_only=True) as conn:
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


def _kill_loop(url: str, connector: str, tmp_path: Path) -> int:
    create_source(url, 1000)
    data = spec_data(
        url, connector, page_rows=150, source__cursor={"safety_lag": "0.2 s", "overlap": "5 s"}
    )
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(data))
    spec = parse_spec(data, spec_file)
    wh = tmp_path / "wh.duckdb"
    rng = random.Random(20)
    kills = completed = 0
    previous: dict = {}
    previous_bounds: dict = {}
    attempts = 0
    phases: set[str] = set()
    while kills < KILLS_PER_SOURCE and attempts < 4 * KILLS_PER_SOURCE:
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
            time.sleep(rng.uniform(0.0, 1.5))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                kills += 1
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
        f"\n[{connector}] {kills} SIGKILLs, {completed} runs finished between them; "
        f"checkpoint states seen after kills: {sorted(phases)}; store vs source: {counts}"
    )
    assert counts["missing"] == counts["duplicated"] == counts["stale"] == 0
    assert counts["resurrected"] == 0
    return kills


@pytest.mark.timeout(600)
def test_sigkill_resume_sqlite(tmp_path, sqlite_url):
    assert _kill_loop(sqlite_url, "sqlite", tmp_path) >= KILLS_PER_SOURCE


@pytest.mark.timeout(600)
def test_sigkill_resume_postgresql(tmp_path, pg_schema):
    url, _ = pg_schema
    assert _kill_loop(url, "postgresql", tmp_path) >= KILLS_PER_SOURCE
