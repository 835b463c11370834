"""Shared helpers of the lifecycle tests: a private copy of the demo data, runs, CLI calls.

Every lifecycle scenario runs on both warehouse backends (BACKENDS): its Env's warehouse is a
DuckDB file or a fresh PostgreSQL database, always read through the seam (`open_warehouse`).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.cli import main
from ecm_assets.definitions import case_sla_definitions as build_definitions
from tests._warehouses import BACKENDS, warehouse_for

__all__ = ["BACKENDS"]

EVENTS_DIR = Path("landing") / "case_events"
MONTH = "2026-09-01"


@dataclass
class Env:
    """One isolated copy of the demo landing zone and its own warehouse."""

    root: Path
    warehouse: str  # a DuckDB path or a postgresql:// URL
    defs: dg.Definitions

    def materialize(
        self,
        selection: list[str],
        *,
        partition_key: str | None = None,
        first: str | None = None,
        last: str | None = None,
        tags: dict[str, str] | None = None,
        expect_success: bool = True,
    ) -> dg.ExecuteInProcessResult:
        run_tags = dict(tags or {})
        if first is not None:
            run_tags["dagster/asset_partition_range_start"] = first
            run_tags["dagster/asset_partition_range_end"] = last or first
        result = dg.materialize(
            list(self.defs.assets or []),
            selection=selection,
            resources=self.defs.resources,
            partition_key=partition_key,
            tags=run_tags or None,
            raise_on_error=False,
        )
        if expect_success:
            assert result.success, failure_messages(result)
        else:
            assert not result.success, "the run was expected to fail but succeeded"
        return result

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with open_warehouse(self.warehouse).connect(read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def frame(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with open_warehouse(self.warehouse).connect(read_only=True) as conn:
            return conn.df(sql, params or [])

    def columns(self, schema: str, table: str) -> list[str]:
        """Column names of a table or view, in order (information_schema: both backends)."""
        return [
            name
            for (name,) in self.query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                "AND table_name = ? ORDER BY ordinal_position",
                [schema, table],
            )
        ]

    def ecm(self, capsys, *args: str) -> tuple[int, str, str]:
        """Run `ecm <args> --warehouse W`; returns exit code, stdout and stderr."""
        capsys.readouterr()  # drop whatever the runs logged before
        code = main([*args, "--warehouse", self.warehouse])
        out, err = capsys.readouterr()
        return code, out, err

    def ecm_json(self, capsys, *args: str) -> Any:
        code, out, err = self.ecm(capsys, *args, "--json")
        assert code == 0, f"ecm {' '.join(args)} exited {code}: {err}"
        return json.loads(out)


def needs(state: dict[str, Any], *steps: str) -> Env:
    """The shared Env of an ordered scenario, or a skip naming the earlier steps that failed.

    Scenario modules keep `{"env": Env, "done": set()}` in a module fixture; each step adds its
    name to `done` when it passed, so a later step that builds on it skips instead of failing
    for a reason that is not its own."""
    missing = [s for s in steps if s not in state["done"]]
    if missing:
        pytest.skip(f"needs earlier step(s) {missing} to have passed")
    return state["env"]


def make_env(demo_root: Path, tmp: Path) -> Env:
    """A private copy of the demo data and a new DuckDB warehouse."""
    root = tmp / "data"
    shutil.copytree(demo_root, root)
    warehouse = str(tmp / "warehouse.duckdb")
    return Env(root, warehouse, build_definitions(root, warehouse))


@contextmanager
def backend_env(demo_root: Path, tmp: Path, backend: str) -> Iterator[Env]:
    """A private copy of the demo data and a new warehouse on `backend` (dropped after)."""
    root = tmp / "data"
    shutil.copytree(demo_root, root)
    with warehouse_for(backend, tmp) as warehouse:
        yield Env(root, warehouse, build_definitions(root, warehouse))


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every error message of every failed step, with the whole cause chain."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            messages.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(messages)


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dict[str, Any]]:
    """Metadata of each materialization of `asset`, values unwrapped."""
    return [
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(asset)
    ]


def landing_header(root: Path) -> list[str]:
    """The header every CSV landing file of case_events carries (asserted identical)."""
    headers = set()
    for path in (root / EVENTS_DIR).rglob("*.csv"):
        with path.open(newline="") as fh:
            headers.add(tuple(next(csv.reader(fh))))
    assert len(headers) == 1, f"landing CSV files disagree on their header: {headers}"
    return list(headers.pop())


def landing_text(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((root / EVENTS_DIR).rglob("events-*")))


def write_landing_csv(root: Path, ingest: date, name: str, events: list[dict[str, str]]) -> Path:
    """A new CSV landing file with the exact header of the existing ones."""
    header = landing_header(root)
    existing = landing_text(root)
    for event in events:
        assert event["event_id"] not in existing and event["case_id"] not in existing
    path = root / EVENTS_DIR / f"ingest_date={ingest.isoformat()}" / name
    assert not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(events)
    return path


def region_of(root: Path, unit: str, on: date) -> str:
    """The unit's region on a date, read straight from the org_hierarchy snapshots."""
    snapshots = []
    for snap in (root / "reference" / "org_hierarchy").iterdir():
        meta = json.loads((snap / "snapshot.json").read_text())
        snapshots.append((date.fromisoformat(meta["published_on"]), snap))
    pinned = max((s for s in snapshots if s[0] <= on), key=lambda s: s[0])[1]
    with (pinned / "units.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            start = date.fromisoformat(row["valid_from"])
            end = date.fromisoformat(row["valid_to"]) if row["valid_to"] else date.max
            if row["unit_id"] == unit and start <= on < end:
                return row["region"]
    raise LookupError(f"unit {unit} has no region on {on}")


def manifest_of(env: Env, capsys, run_id: str, asset: str | None = None) -> dict[str, Any]:
    args = ["manifest", run_id] + (["--asset", asset] if asset else [])
    payload = env.ecm_json(capsys, *args)
    assert len(payload["manifests"]) == 1, payload
    return payload["manifests"][0]
