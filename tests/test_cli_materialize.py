"""`dagster asset materialize` as a data engineer runs it in CI: a real subprocess, a temp
DAGSTER_HOME with the shipped dagster.yaml, one partition and then a partition range."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ecm_assets.cli import main as ecm_main

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"


@pytest.fixture
def cli_env(demo_data, tmp_path) -> dict[str, str]:
    root, _ = demo_data
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        ECM_DATA_DIR=str(root),
        ECM_WAREHOUSE=str(tmp_path / "warehouse.duckdb"),
    )
    return env


def _materialize(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(DAGSTER), "asset", "materialize", "-m", "ecm_assets.definitions", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _partitions(warehouse: str, table: str) -> list[str]:
    with duckdb.connect(warehouse, read_only=True) as conn:
        rows = conn.sql(f"SELECT DISTINCT business_date FROM {table} ORDER BY 1").fetchall()
    return [r[0].isoformat() for r in rows]


def test_materialize_one_partition_then_a_range(cli_env) -> None:
    warehouse = cli_env["ECM_WAREHOUSE"]
    _materialize(cli_env, "--select", "case_events", "--partition", "2026-09-02")
    assert _partitions(warehouse, "case_events") == ["2026-09-02"]

    _materialize(
        cli_env,
        "--select",
        "case_events,case_sla_daily_metrics",
        "--partition-range",
        "2026-09-01...2026-09-04",
    )
    days = ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"]
    assert _partitions(warehouse, "case_events") == days
    assert _partitions(warehouse, "case_sla_daily_metrics") == days
    with duckdb.connect(warehouse, read_only=True) as conn:
        runs = conn.sql("SELECT count(DISTINCT run_id) FROM case_events").fetchone()[0]
    assert runs == 1  # the range run replaced 09-02 too: one run owns all four partitions


def test_ecm_summary_reports_tables(cli_env, capsys) -> None:
    _materialize(cli_env, "--select", "case_events", "--partition", "2026-09-03")
    assert ecm_main(["summary", "--warehouse", cli_env["ECM_WAREHOUSE"], "--json"]) == 0
    out = capsys.readouterr().out
    assert '"table": "main.case_events"' in out
    assert '"partitions": 1' in out
