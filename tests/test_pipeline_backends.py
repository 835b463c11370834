"""The case-SLA demo on PostgreSQL publishes exactly what it publishes on DuckDB.

`ecm demo-data` writes a short, messy landing zone; the demo pipeline (the daily datasets
over the range in one run, then the monthly report) runs once into a DuckDB file and once
into a fresh PostgreSQL database, both selected the way an operator does, with
ECM_WAREHOUSE_URL. Every asset's published partitions must carry the same rows and business
checksums on both, per partition and per run as the ledger recorded them, all read through
the warehouse seam.
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.cli import main as ecm
from ecm_assets.contracts.dataset import partition_key
from ecm_assets.contracts.registry import contract_for
from ecm_assets.definitions import case_sla_definitions
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import RunStatus
from ecm_assets.orchestration.factory import POSTGRES_POOL, WAREHOUSE_POOL
from ecm_assets.publish.protocol import business_checksum
from tests._warehouses import warehouse_for

START, END = date(2026, 9, 1), date(2026, 9, 5)
DAILY = ["case_events", "case_sla_daily_metrics", "case_sla_rolling_30d", "case_priority_mix_daily"]
MONTHLY = "case_sla_monthly_report"

#: (asset, partition) -> (rows, business checksum)
Partitions = dict[tuple[str, str], tuple[int, str]]
#: (asset, first partition, last partition) -> (rows, business checksum), from the ledger
Runs = dict[tuple[str, str, str], tuple[int, str]]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_backends")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ecm(
            [
                "demo-data",
                "--start",
                START.isoformat(),
                "--end",
                END.isoformat(),
                "--out",
                str(root),
                "--seed",
                "7",
                "--scale",
                "0.2",
            ]
        )
    assert code == 0, out.getvalue()
    return root


def _run_demo(root: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> dg.Definitions:
    """The demo's runs, with the warehouse chosen by ECM_WAREHOUSE_URL."""
    monkeypatch.setenv("ECM_WAREHOUSE_URL", target)
    defs = case_sla_definitions(root)
    for selection, kwargs in (
        (
            DAILY,
            {
                "tags": {
                    "dagster/asset_partition_range_start": START.isoformat(),
                    "dagster/asset_partition_range_end": END.isoformat(),
                }
            },
        ),
        ([MONTHLY], {"partition_key": START.replace(day=1).isoformat()}),
    ):
        result = dg.materialize(
            list(defs.assets or []), selection=selection, resources=defs.resources, **kwargs
        )
        assert result.success, selection
    return defs


def _published(target: str) -> tuple[Partitions, Runs]:
    """Per-partition rows and checksums of every asset, and the ledger's per-run record."""
    partitions: Partitions = {}
    runs: Runs = {}
    with open_warehouse(target).connect(read_only=True) as conn:
        for m in load_manifests(conn):
            assert m.status == RunStatus.PUBLISHED, (m.asset, m.status, m.status_detail)
            outputs = m.outputs or {}
            boundary = m.output_boundary or []
            runs[(m.asset, boundary[0], boundary[-1])] = (
                int(outputs["rows"]),
                str(outputs["business_checksum"]),
            )
        for asset in [*DAILY, MONTHLY]:
            contract = contract_for(asset)
            pcol = contract.partition_column
            values = conn.execute(
                f'SELECT DISTINCT "{pcol}" FROM {contract.table} ORDER BY 1'
            ).fetchall()
            for (value,) in values:
                where = f'WHERE "{pcol}" = ?'
                (rows,) = conn.execute(
                    f"SELECT count(*) FROM {contract.table} {where}", [value]
                ).fetchone()
                checksum = business_checksum(conn, contract, contract.table, where, [value])
                key = partition_key(contract.as_partition(value))
                partitions[(asset, key)] = (int(rows), checksum)
    return partitions, runs


def test_demo_on_postgresql_publishes_the_checksums_of_duckdb(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = {}
    summaries = {}
    for backend in ("duckdb", "postgresql"):
        with warehouse_for(backend, tmp_path, backend) as target:
            defs = _run_demo(demo_root, monkeypatch, target)
            pools = {
                a.op.pool
                for a in defs.assets or []
                if isinstance(a, dg.AssetsDefinition)
                and any(k.path[-1] in {*DAILY, MONTHLY} for k in a.keys)
            }
            assert pools == {POSTGRES_POOL if backend == "postgresql" else WAREHOUSE_POOL}
            published[backend] = _published(target)
            summaries[backend] = _summary(target)

    duck_parts, duck_runs = published["duckdb"]
    pg_parts, pg_runs = published["postgresql"]
    assets = {asset for asset, _ in duck_parts}
    assert assets == {*DAILY, MONTHLY}
    assert all(rows > 0 for rows, _ in duck_parts.values())
    assert pg_parts == duck_parts
    assert pg_runs == duck_runs
    # `ecm summary --warehouse URL` reads PostgreSQL as it reads the DuckDB file.
    assert summaries["postgresql"] == summaries["duckdb"]


def _summary(target: str) -> list[dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ecm(["summary", "--warehouse", target, "--json"])
    assert code == 0, out.getvalue()
    payload = json.loads(out.getvalue())
    assert payload["warehouse"] == open_warehouse(target).url
    return payload["tables"]
