"""Every script under benchmarks/ runs at toy size, so none can silently break again.

The numbers are not asserted (timings belong to the scripts' ratios against their peers);
what is asserted is that each script runs to the end and reports, and that the pipeline
benchmark's semantic cross-check (the SQL peer's business rows equal ours) passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
#: One day of one asset: the daemon path end to end (webserver launch, daemon, run queue,
#: pool) in about a minute; the backfill daemon's 30 s tick is most of it.
BACKFILL_TOY = ["--days", "1", "--scale", "0.02", "--assets", "case_events", "--timeout", "300"]
TOY_ARGS = {
    "backfill.py": [*BACKFILL_TOY, "--setups", "duckdb,inprocess"],
    "dagster_overhead.py": [
        "--sizes",
        "1,3",
        "--repeat",
        "2",  # each repetition in its own directory (it once reused the first one's)
        "--cli-partitions",
        "3",
        "--real-days",
        "2",
        "--real-scale",
        "0.02",
        "--real-instances",
        "shipped,sqlite,postgres,postgres-batch",
    ],
    "landing_memory.py": ["--rows", "2000"],
    "sync.py": ["--rows", "2000", "--page-rows", "500", "--no-dlt", "--repeat", "2"],
    "pipeline.py": ["--days", "2", "--scale", "0.05", "--single-day-scale", "0.05"],
    "gate.py": [
        "--rows",
        "3000",
        "--days",
        "2",
        "--repeat",
        "1",
        "--no-memory",
        "--profile",
        "never",
    ],
    "publish.py": [
        "--rows",
        "500",
        "--history-partitions",
        "2",
        "--history-rows-per-partition",
        "50",
        "--reps",
        "1",
        "--cases",
        "baseline,ours,ours@365",
        "--no-profile",
    ],
}


def test_every_benchmark_has_a_toy_size() -> None:
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == sorted(TOY_ARGS)


@pytest.mark.parametrize("script", sorted(TOY_ARGS))
def test_benchmark_runs_at_toy_size(script: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *TOY_ARGS[script]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    if script == "dagster_overhead.py":
        assert "event bytes per run = " in output and "CLI run of 3 partitions" in output
        assert "postgres-batch instance" in output, output
        assert "shipped instance" in output and "   sqlite instance" in output, output
    if script == "pipeline.py":
        assert output.count("cross-check: business rows and rejects equal") == 2, output
        assert "| range | case_priority_mix_daily |" in output
    if script == "sync.py":
        assert "ours/plain = " in output, output
    if script == "backfill.py":
        assert "| (a) daemon, DuckDB, pool 1 | yes | 1 |" in output, output
        assert "| (c) one in-process run | yes | 1 |" in output, output
        assert "cross-check: rows per table equal across setups" in output, output
    if script == "landing_memory.py":
        assert "read CPU ours / DuckDB read_csv:" in output and "memory: peak delta" in output


def test_backfill_benchmark_postgres_setup_at_toy_size(tmp_path: Path) -> None:
    """Setup (b): PostgreSQL warehouse and instance, pool ecm_postgres_warehouse, through the
    daemon. Needs PostgreSQL at 127.0.0.1:5432; skips without it, except when CI=true."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from backfill import postgres_reachable
    finally:
        sys.path.remove(str(BENCHMARKS))
    why = postgres_reachable("postgresql://postgres@127.0.0.1:5432/postgres")
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432: {why}")
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {why}")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "backfill.py"), *BACKFILL_TOY, "--setups", "postgres"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "| (b) daemon, PostgreSQL, pool 4 | yes | 1 |" in output, output
    assert "pools ['ecm_postgres_warehouse']" in output, output


def test_backfill_counts_runs_at_once_from_their_start_and_end() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from backfill import max_overlap
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert max_overlap([]) == 0
    assert max_overlap([(0, 2), (1, 3), (2, 4), (5, 6)]) == 2  # one ends as the next starts
    assert max_overlap([(0, 10), (1, 9), (2, 8), (3, 4)]) == 4
