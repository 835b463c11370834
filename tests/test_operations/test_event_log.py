"""The pooled SQLite event log (ecm_assets/operations/event_log.py): same files and answers as
Dagster's stock storage, one connection per file, and live run logs still follow a run."""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from ecm_assets.operations import event_log
from ecm_assets.operations.event_log import (
    MAX_OPEN_RUN_FILES,
    PooledSqliteEventLogStorage,
    home_instance,
)

REPO = Path(__file__).resolve().parents[2]
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # partitioned asset checks are a preview feature
    POSITIVE = dg.AssetCheckSpec("positive", asset="numbers", partitions_def=DAILY)


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[POSITIVE],
)
def numbers(context):  # no hint: the module has postponed annotations
    for day, key in enumerate(context.partition_keys, start=1):
        context.add_asset_metadata({"dagster/row_count": day}, partition_key=key)
    yield dg.MaterializeResult()
    for key in context.partition_keys:
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name="positive",
            passed=key != "2026-01-02",
            partition=key,
        )
    yield dg.Output(None, output_name="numbers_positive")


def _entry(run_id: str, message: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level="INFO",
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
    )


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME holding the shipped dagster.yaml (which selects the pooled storage)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_the_shipped_instance_uses_it_and_the_stock_storage_reads_what_it_wrote(home) -> None:
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        result = dg.materialize(
            [numbers],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-01-01",
                "dagster/asset_partition_range_end": "2026-01-03",
            },
        )
        assert result.success
        run_id = result.run_id

    # Dagster's own class, on the same directory (the stock location under DAGSTER_HOME).
    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    try:
        records = stock.fetch_materializations(dg.AssetKey("numbers"), limit=10).records
        rows = {
            r.partition_key: r.asset_materialization.metadata["dagster/row_count"].value
            for r in records
        }
        assert rows == {"2026-01-01": 1, "2026-01-02": 2, "2026-01-03": 3}
        history = stock.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("numbers"), "positive"), limit=10
        )
        passed = {
            h.event.dagster_event.event_specific_data.partition: h.status.value for h in history
        }
        assert passed == {
            "2026-01-01": "SUCCEEDED",
            "2026-01-02": "FAILED",
            "2026-01-03": "SUCCEEDED",
        }
        assert len(stock.get_logs_for_run(run_id)) > 10
    finally:
        stock.dispose()


def test_one_engine_per_file_however_many_writes(tmp_path, monkeypatch) -> None:
    created: list[str] = []
    real = event_log.create_engine

    def counting(url, **kwargs):
        created.append(str(url))
        return real(url, **kwargs)

    monkeypatch.setattr(event_log, "create_engine", counting)
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    try:
        for n in range(50):
            storage.store_event(_entry("run-a", f"line {n}"))
        assert len(storage.get_logs_for_run("run-a")) == 50
        # The index and the run's file: one engine each, not one per write (the stock storage
        # creates one per connection, two or three per event).
        assert sorted(Path(url).name for url in created) == ["index.db", "run-a.db"]
    finally:
        storage.dispose()


def test_run_files_beyond_the_limit_are_closed_and_still_readable(tmp_path) -> None:
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    runs = [f"run-{n}" for n in range(MAX_OPEN_RUN_FILES + 5)]
    try:
        for run_id in runs:
            storage.store_event(_entry(run_id, run_id))
        open_runs = [key for key in storage._engines if key != "index"]
        assert len(open_runs) == MAX_OPEN_RUN_FILES
        assert open_runs == runs[-MAX_OPEN_RUN_FILES:]  # least recently used closed first
        assert [e.user_message for e in storage.get_logs_for_run(runs[0])] == [runs[0]]
    finally:
        storage.dispose()
    assert storage._engines == {}


def test_a_watcher_follows_a_writer_that_keeps_its_connection_open(tmp_path) -> None:
    """Regression: the stock watcher listens to `<run>.db` only; a pooled writer changes only
    `<run>.db-wal` until a checkpoint, so a live run log in the webserver would stand still."""
    writer = PooledSqliteEventLogStorage(str(tmp_path))
    reader = PooledSqliteEventLogStorage(str(tmp_path))
    seen: list[str] = []
    arrived = threading.Event()

    def callback(entry, _cursor):
        seen.append(entry.user_message)
        if len(seen) >= 4:
            arrived.set()

    try:
        writer.store_event(_entry("live", "first"))  # the run's file exists before the watch
        reader.watch("live", None, callback)
        for message in ("second", "third", "fourth"):
            writer.store_event(_entry("live", message))
        assert arrived.wait(timeout=20), f"watcher saw {seen}"
        assert seen == ["first", "second", "third", "fourth"]  # from the start: cursor None
    finally:
        reader.end_watch("live", callback)
        reader.dispose()
        writer.dispose()


def test_wipe_closes_its_files_first(tmp_path) -> None:
    storage = PooledSqliteEventLogStorage(str(tmp_path))
    try:
        storage.store_event(_entry("gone", "x"))
        storage.wipe()
        assert not (tmp_path / "gone.db").exists()
        assert storage.get_logs_for_run("gone") == []
        storage.store_event(_entry("after", "y"))
        assert len(storage.get_logs_for_run("after")) == 1
    finally:
        storage.dispose()


def test_base_dir_defaults_to_dagster_home_and_says_when_it_cannot(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    storage = PooledSqliteEventLogStorage()
    storage.dispose()
    assert (tmp_path / "history" / "runs" / "index.db").exists()
    monkeypatch.delenv("DAGSTER_HOME")
    with pytest.raises(dg.DagsterInvariantViolationError, match="DAGSTER_HOME"):
        PooledSqliteEventLogStorage()


def test_home_instance_opens_a_home_by_path_and_puts_dagster_home_back(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", "/elsewhere")
    with home_instance(home) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.root_directory == str(home)
    assert os.environ["DAGSTER_HOME"] == "/elsewhere"
