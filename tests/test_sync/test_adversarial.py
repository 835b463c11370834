"""An adversarial writer process runs while syncs run; afterwards one final sync makes the
store equal the source by key and version: 0 missing, 0 duplicated, 0 stale.

The writer (ecm_assets.sync.demo_source --adversarial) produces rows sharing one
updated_at, updates during scans, long transactions committing after a boundary with an
older updated_at, a clock 3 minutes behind, soft deletes and hard deletes. The incremental
runs use a 0.5 s safety lag and a 5 s overlap, so the skewed writes (180 s behind) are
beyond what the cursor alone can see: the counts printed before the final full extraction
show what an incremental cursor leaves behind, and the final run must close all of it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ecm_assets.sync.demo_source import create_source
from ecm_assets.sync.runner import run_job
from ecm_assets.sync.status import verify
from tests.test_sync.conftest import make_spec

WRITER_SECONDS = 15


def _adversarial(url: str, connector: str, wh: str) -> None:
    create_source(url, 2000)
    spec = make_spec(
        url, connector, page_rows=300, source__cursor={"safety_lag": "0.5 s", "overlap": "5 s"}
    )
    run_job(spec, wh)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecm_assets.sync.demo_source",
            url,
            "--seconds",
            str(WRITER_SECONDS),
            "--adversarial",
            "--skew-seconds",
            "180",
            "--seed",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = 0
    try:
        while writer.poll() is None:
            run_job(spec, wh)
            runs += 1
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    assert writer.returncode == 0, err
    print(f"\n[{connector}] writer: {out.strip()}")
    time.sleep(0.6)  # past the safety lag
    run_job(spec, wh)
    print(f"[{connector}] {runs + 2} incremental runs; store vs source: {verify(spec, wh)}")
    final = run_job(spec, wh, job_type="full_extraction")
    counts = verify(spec, wh)
    print(
        f"[{connector}] final full extraction wrote {final.rows_written}, tombstoned "
        f"{final.hard_deleted}; store vs source: {counts}"
    )
    assert "long_transactions=0" not in out and "skewed_writes=0" not in out
    assert "hard_deletes=0" not in out and "soft_deletes=0" not in out
    assert runs >= 2
    assert counts["missing"] == 0
    assert counts["duplicated"] == 0
    assert counts["stale"] == 0
    assert counts["resurrected"] == 0
    assert counts["source_keys"] > 2000


@pytest.mark.timeout(150)
def test_adversarial_writer_sqlite(tmp_path, sqlite_url):
    _adversarial(sqlite_url, "sqlite", str(tmp_path / "wh.duckdb"))


@pytest.mark.timeout(150)
def test_adversarial_writer_postgresql(tmp_path, pg_schema):
    url, _ = pg_schema
    _adversarial(url, "postgresql", str(tmp_path / "wh.duckdb"))


@pytest.mark.timeout(150)
def test_adversarial_writer_postgresql_warehouse(pg_schema, pg_warehouse):
    """Source and warehouse both on the PostgreSQL server (store, staging, checkpoints)."""
    url, _ = pg_schema
    _adversarial(url, "postgresql", pg_warehouse)
