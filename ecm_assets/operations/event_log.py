"""Dagster's SQLite event log, with one open connection per database file.

Why: Dagster 1.13's `SqliteEventLogStorage` builds a SQLAlchemy engine, opens a SQLite
connection, commits and closes it for every write, two or three times per event (the run's
file, then the cross-run index). Closing the last connection of a WAL database checkpoints it,
and a fresh engine compiles every statement again. A run stores about three events per
partition (planned, materialization, the partition's check evaluation), so on a long range
run that bookkeeping, not the work, set the wall time (docs/benchmarks.md, "Dagster overhead").

This storage keeps Dagster's files, schema and semantics (it *is* `SqliteEventLogStorage`,
same directory, same databases, readable by the stock class) and changes only the connection
handling:

- one engine and one connection per database file, reused under the storage's own lock (the
  stock class already serialises every connection of a process on that lock);
- at most `MAX_OPEN_RUN_FILES` run files stay open (least recently used are closed), so a
  webserver that browses thousands of runs does not hold thousands of files;
- `has_table` remembers the tables it has seen instead of opening a new engine per call;
- live run logs still follow a run: a writer that keeps its connection open writes to the
  `-wal` file, so the watcher follows both files (the stock one watches only `<run>.db`).

Durability is SQLite's default (`synchronous=FULL`: every commit is on disk), as before.

Use it in `$DAGSTER_HOME/dagster.yaml` (the shipped `dagster.yaml` does):

    event_log_storage:
      module: ecm_assets.operations.event_log
      class: PooledSqliteEventLogStorage

`base_dir` is optional: by default the stock location, `$DAGSTER_HOME/history/runs`, so an
existing instance keeps its history.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

#: Run files kept open besides the index; the least recently used is closed beyond this.
MAX_OPEN_RUN_FILES = 8

#: Seconds a connection waits on a database another process is writing (Dagster's value).
BUSY_TIMEOUT_SECONDS = 30


@contextmanager
def home_instance(home: str | os.PathLike[str]) -> Iterator[dg.DagsterInstance]:
    """The instance of the DAGSTER_HOME directory `home`, opened as `dagster` commands open
    theirs: with DAGSTER_HOME set (this storage takes its directory from it), put back after.

    For scripts and tests that open an instance by path (`DagsterInstance.from_config(path)`
    has no DAGSTER_HOME to give this storage)."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = os.fspath(home)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before


def default_base_dir() -> str:
    """Where Dagster's default instance keeps its event logs: `$DAGSTER_HOME/history/runs`."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise dg.DagsterInvariantViolationError(
            "event_log_storage PooledSqliteEventLogStorage (dagster.yaml) has no `base_dir` "
            "and DAGSTER_HOME is not set: set DAGSTER_HOME to the instance directory, or "
            "give `base_dir` under the storage's `config:`"
        )
    return os.path.join(home, "history", "runs")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` that reuses one connection per database file (see module)."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables: set[str] = set()
        super().__init__(base_dir or default_base_dir(), inst_data)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(base_dir=config_value.get("base_dir"), inst_data=inst_data)

    def _engine_for(self, shard: str) -> Engine:
        """The shard's open engine, created (and its schema initialised) on first use."""
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(
            create_db_conn_string(self._base_dir, shard),
            poolclass=StaticPool,  # one connection, reused; the storage lock serialises it
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        runs = [key for key in self._engines if key != INDEX_SHARD_NAME]
        for stale in runs[: max(0, len(runs) - MAX_OPEN_RUN_FILES)]:
            self._engines.pop(stale).dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock, self._engine_for(shard).connect() as conn, conn.begin():
            yield conn

    def has_table(self, table_name: str) -> bool:
        # Dagster asks before writing each asset event. Tables are only ever added (by
        # migrations), so a table once seen stays; a miss asks the stock way (its own
        # short-lived connection, no lock: callers may already hold the storage lock).
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def _close_all(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def upgrade(self) -> None:
        self._close_all()  # migrations open their own connections
        self._tables.clear()
        super().upgrade()

    def wipe(self) -> None:
        self._close_all()  # files are about to be deleted
        self._tables.clear()
        super().wipe()

    def watch(self, run_id: str, cursor: str | None, callback: Any) -> None:
        from watchdog.observers import Observer

        if not self._obs:
            self._obs = Observer()
            self._obs.start()
        watchdog = _RunFileWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (
            watchdog,
            self._obs.schedule(watchdog, self._base_dir, recursive=True),
        )

    def dispose(self) -> None:
        self._close_all()
        super().dispose()


class _RunFileWatchdog(SqliteEventLogStorageWatchdog):
    """Follows a run's database and its write-ahead log: a writer that keeps its connection
    open (this storage, in the run's process) changes only `<run>.db-wal` until a checkpoint."""

    def __init__(self, storage: SqliteEventLogStorage, run_id: str, callback: Any, cursor: Any):
        super().__init__(storage, run_id, callback, cursor)
        self._files = [self._log_path, f"{self._log_path}-wal"]

    @property
    def patterns(self) -> list[str]:
        return self._files

    def on_modified(self, event: Any) -> None:
        self._process_log()
