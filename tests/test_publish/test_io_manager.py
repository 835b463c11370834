"""The publish IO manager inside real in-process Dagster runs on an ephemeral instance."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from ecm_assets.contracts.dataset import Column, Dataset, DatasetContract, Upstream
from ecm_assets.contracts.transform import PartitionWindow
from ecm_assets.orchestration.factory import IO_MANAGER_KEY, build_assets
from ecm_assets.publish.io_manager import DuckDBPublishIOManager

SOURCE = DatasetContract(
    name="iotest_unit_values",
    description="one row per unit and business date",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("value", "BIGINT", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
    group="iotest",
    start="2026-01-01",
)

SUMMARY = DatasetContract(
    name="iotest_lookback_summary",
    description="what each partition read from its upstream lookback window",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("first_read", "DATE", nullable=False),
        Column("last_read", "DATE", nullable=False),
        Column("rows_read", "BIGINT", nullable=False),
        Column("value_sum", "BIGINT", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date",),
    upstream=(Upstream(SOURCE.name, lookback_partitions=2),),
    group="iotest",
    start="2026-01-01",
)


def unit_values(window: PartitionWindow) -> pd.DataFrame:
    rows = [(d, unit, d.day * 10 + i) for d in window.partitions for i, unit in enumerate("AB")]
    return pd.DataFrame(rows, columns=SOURCE.column_names).astype({"value": "int64"})


def lookback_summary(iotest_unit_values: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    dates = pd.to_datetime(iotest_unit_values["business_date"]).dt.date
    return pd.DataFrame(
        {
            "business_date": list(window.partitions),
            "first_read": [dates.min()] * len(window.partitions),
            "last_read": [dates.max()] * len(window.partitions),
            "rows_read": [len(iotest_unit_values)] * len(window.partitions),
            "value_sum": [int(iotest_unit_values["value"].sum())] * len(window.partitions),
        }
    )


SOURCE_ASSET, SUMMARY_ASSET = build_assets(
    [Dataset(SOURCE, unit_values), Dataset(SUMMARY, lookback_summary)]
)

RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2026-09-01",
    "dagster/asset_partition_range_end": "2026-09-05",
}


def run(
    database: Path,
    *,
    assets=(SOURCE_ASSET,),
    selection=None,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    raise_on_error: bool = True,
    instance: dg.DagsterInstance | None = None,
    **io_config,
) -> dg.ExecuteInProcessResult:
    if instance is None:
        with dg.DagsterInstance.ephemeral() as ephemeral:
            return run(
                database,
                assets=assets,
                selection=selection,
                partition_key=partition_key,
                tags=tags,
                raise_on_error=raise_on_error,
                instance=ephemeral,
                **io_config,
            )
    return dg.materialize(
        list(assets),
        instance=instance,
        resources={IO_MANAGER_KEY: DuckDBPublishIOManager(database=str(database), **io_config)},
        partition_key=partition_key,
        tags=tags,
        selection=selection,
        raise_on_error=raise_on_error,
    )


def published(database: Path, contract: DatasetContract) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(
            f"SELECT * FROM {contract.table} ORDER BY {', '.join(contract.business_key)}"
        ).df()


def materializations(result: dg.ExecuteInProcessResult, name: str) -> list[dg.AssetMaterialization]:
    return [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(name)
    ]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)


class LockHolder:
    """A separate process that holds the warehouse's read-write lock for `seconds`."""

    def __init__(self, database: Path, seconds: float) -> None:
        script = textwrap.dedent(
            f"""
            import time
            import duckdb
            conn = duckdb.connect({str(database)!r})
            print("locked", flush=True)
            time.sleep({seconds})
            conn.close()
            """
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )

    def wait_locked(self, timeout: float = 30.0) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "lock holder did not start"
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", f"lock holder failed: {line!r} {self.proc.stderr.read()}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_single_partition_publishes_that_partition_with_metadata(tmp_path):
    database = tmp_path / "w.duckdb"

    result = run(database, partition_key="2026-09-03")

    assert result.success
    rows = published(database, SOURCE)
    assert list(rows["business_date"].dt.date.unique()) == [date(2026, 9, 3)]
    assert list(rows["value"]) == [30, 31]
    assert set(rows["run_id"]) == {result.run_id}
    [mat] = materializations(result, SOURCE.name)
    assert mat.partition == "2026-09-03"
    meta = mat.metadata
    assert meta["dagster/row_count"].value == 2
    assert ":n2-" in meta["business_checksum"].value
    assert f"run_id={result.run_id}" in meta["manifest"].value
    # Run-level facts are in the manifest (linked above), not repeated per partition.
    assert not {"snapshot_id", "ecm/run_id", "manifest_status", "input_boundary"} & set(meta)


def test_partition_range_publishes_every_partition_in_one_run(tmp_path):
    database = tmp_path / "w.duckdb"

    result = run(database, tags=RANGE_TAGS)

    assert result.success
    rows = published(database, SOURCE)
    assert sorted(rows["business_date"].dt.date.unique()) == [date(2026, 9, d) for d in range(1, 6)]
    assert len(rows) == 10
    assert set(rows["run_id"]) == {result.run_id}
    mats = sorted(materializations(result, SOURCE.name), key=lambda m: m.partition)
    assert sorted(m.partition for m in mats) == [f"2026-09-0{d}" for d in range(1, 6)]
    # Each partition's materialization carries its own figures, not the run's totals.
    assert [m.metadata["dagster/row_count"].value for m in mats] == [2] * 5
    checksums = [m.metadata["business_checksum"].value for m in mats]
    assert len(set(checksums)) == 5 and all(":n2-" in c for c in checksums)
    # What every partition shares is three short values, so bytes stay linear in partitions.
    shared = [k for k in mats[0].metadata if k not in ("dagster/row_count", "business_checksum")]
    assert all(len(m.metadata) == len(mats[0].metadata) for m in mats)
    assert {k for k in shared if len({str(m.metadata[k].value) for m in mats}) == 1} <= {
        "mode",
        "as_of",
        "manifest",
        "quality",
        "failed_checks",
        "input_rows",
        "quarantined_rows",
        "duplicate_rows",
        "blocked_rows",
    }


def test_lookback_input_loads_exactly_the_mapped_upstream_window(tmp_path):
    database = tmp_path / "w.duckdb"
    seeded = run(
        database,
        tags={**RANGE_TAGS, "dagster/asset_partition_range_end": "2026-09-07"},
    )
    assert seeded.success

    result = run(
        database,
        assets=(SOURCE_ASSET, SUMMARY_ASSET),
        selection=[SUMMARY_ASSET],
        partition_key="2026-09-05",
    )

    assert result.success
    summary = published(database, SUMMARY)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["business_date"].date() == date(2026, 9, 5)
    assert (row["first_read"].date(), row["last_read"].date()) == (
        date(2026, 9, 3),
        date(2026, 9, 5),
    )
    assert row["rows_read"] == 6
    assert row["value_sum"] == 30 + 31 + 40 + 41 + 50 + 51
    [mat] = materializations(result, SUMMARY.name)
    [read] = mat.metadata["input_boundary"].value["upstream"]
    assert read["dataset"] == SOURCE.name
    assert (read["first_partition"], read["last_partition"]) == ("2026-09-03", "2026-09-05")
    assert read["run_ids"] == [seeded.run_id]


def test_materialization_waits_for_a_briefly_held_lock(tmp_path):
    database = tmp_path / "w.duckdb"
    holder = LockHolder(database, seconds=8)  # outlasts the run's start on a busy machine
    try:
        holder.wait_locked()

        with dg.DagsterInstance.ephemeral() as instance:
            result = run(
                database, partition_key="2026-09-02", lock_timeout_seconds=60, instance=instance
            )
            messages = [e.user_message for e in instance.all_logs(result.run_id)]

        assert result.success
        # One line when the wait starts (naming the holder), one when it ends: not one a retry.
        waits = [m for m in messages if "waiting up to 60s" in m]
        assert len(waits) == 1 and f"PID {holder.proc.pid}" in waits[0]
        assert len([m for m in messages if "lock acquired after waiting" in m]) == 1
        assert list(published(database, SOURCE)["value"]) == [20, 21]
    finally:
        holder.kill()


def test_lock_held_past_the_timeout_is_retried_then_fails_naming_the_holder(tmp_path):
    database = tmp_path / "w.duckdb"
    holder = LockHolder(database, seconds=120)
    try:
        holder.wait_locked()

        result = run(
            database, partition_key="2026-09-02", lock_timeout_seconds=1, raise_on_error=False
        )

        assert not result.success
        text = failure_text(result)
        assert f"warehouse {database} is still locked by another process, PID" in text
        assert "WarehouseLockedError" in text
        # Lock timeouts go through the asset's retry policy (RETRY_POLICY: 3 retries).
        restarts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
        assert len(restarts) == 3
        assert materializations(result, SOURCE.name) == []
    finally:
        holder.kill()


def test_io_manager_publishes_and_loads_on_a_postgresql_warehouse():
    """The same IO manager, `database` a postgresql:// URL: a range publish, then a lookback
    read of its upstream, with the same rows and checksums as on DuckDB."""
    from ecm_assets.adapters.backends import open_warehouse
    from ecm_assets.manifest.ledger import load_manifests
    from ecm_assets.publish.io_manager import WarehousePublishIOManager
    from ecm_assets.publish.protocol import read_partitions
    from tests._backends import fresh_postgres_url

    assert WarehousePublishIOManager is DuckDBPublishIOManager
    with fresh_postgres_url() as url:
        seeded = run(url, tags={**RANGE_TAGS, "dagster/asset_partition_range_end": "2026-09-07"})
        assert seeded.success
        result = run(
            url,
            assets=(SOURCE_ASSET, SUMMARY_ASSET),
            selection=[SUMMARY_ASSET],
            partition_key="2026-09-05",
        )
        assert result.success
        with open_warehouse(url).connect(read_only=True) as conn:
            summary = read_partitions(conn, SUMMARY, date(2026, 9, 5), date(2026, 9, 5))
            manifests = load_manifests(conn, asset=SOURCE.name)
        assert [m.status for m in manifests] == ["PUBLISHED"]
        row = summary.iloc[0]
        assert (row["first_read"].date(), row["last_read"].date()) == (
            date(2026, 9, 3),
            date(2026, 9, 5),
        )
        assert row["rows_read"] == 6
        assert row["value_sum"] == 30 + 31 + 40 + 41 + 50 + 51


def test_per_partition_metadata_does_not_relist_the_range_per_partition(tmp_path, monkeypatch):
    """Regression: `add_asset_metadata(partition_key=...)` per key lists the run's whole range on
    every call (Dagster 1.13), partitions x partitions keys in a range run. The IO manager
    checks the keys once; each materialization still carries its own figures."""
    listed: list[int] = []
    real = dg.TimeWindowPartitionsDefinition.get_partition_keys_in_range

    def counting(self, *args, **kwargs):
        keys = real(self, *args, **kwargs)
        listed.append(len(keys))
        return keys

    monkeypatch.setattr(dg.TimeWindowPartitionsDefinition, "get_partition_keys_in_range", counting)
    database = tmp_path / "w.duckdb"
    days = 30
    result = run(
        database,
        tags={
            "dagster/asset_partition_range_start": "2026-09-01",
            "dagster/asset_partition_range_end": "2026-09-30",
        },
        selection=[SOURCE.name],
    )
    assert result.success
    mats = materializations(result, SOURCE.name)
    assert sorted(m.metadata["dagster/row_count"].value for m in mats) == [2] * days
    assert len({m.metadata["business_checksum"].value for m in mats}) == days
    # Dagster itself lists the range a few times per run; per partition it would be >= 30
    # listings of 30 keys (900 keys) from the metadata alone.
    assert sum(listed) < days * days, (len(listed), sum(listed))
