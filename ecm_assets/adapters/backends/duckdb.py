"""The embedded default: one DuckDB file, one writing process at a time.

The file lock is the publish lock, so `lock_partitions` has nothing to add; waiting for a held
lock (with backoff and a deadline) is adapters/warehouse.py's `connect`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ecm_assets.adapters import warehouse as duckdb_file
from ecm_assets.adapters.backends.base import Dialect, Log, Warehouse, WarehouseConnection


class DuckDBDialect(Dialect):
    name = "duckdb"

    def owned_filter(self, column: str, sql_type: str = "DATE") -> str:
        return duckdb_file.owned_filter(column, sql_type)

    def owned_params(self, owned: Sequence[date | str]) -> list[object]:
        return duckdb_file.owned_params(owned)

    def sql_type(self, contract_type: str) -> str:
        return contract_type

    def temp_table(self, name: str) -> str:
        return f"temp.main.{self.quote_ident(name)}"

    def in_list(self, column: str, sql_type: str = "VARCHAR") -> str:
        return f"list_contains(?::{sql_type}[], {column})"

    def latest_attempts(self, table: str) -> str:
        return (
            f"(SELECT * FROM {table} "
            "QUALIFY attempt = max(attempt) OVER (PARTITION BY run_id, asset))"
        )

    def index(self, table: str, columns: Sequence[str]) -> str | None:
        return None  # zone maps prune by partition; an ART index would slow every DELETE

    def add_column(self, table: str, column: str, sql_type: str) -> str:
        return f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"


DIALECT = DuckDBDialect()


class DuckDBConnection(WarehouseConnection):
    """A DuckDB connection behind the seam; anything else is DuckDB's own API (`raw`)."""

    kind = "duckdb"
    dialect = DIALECT

    def __init__(self, raw: duckdb.DuckDBPyConnection) -> None:
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return self.raw.execute(sql, params) if params is not None else self.raw.execute(sql)

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self.execute(sql, params).fetch_arrow_table()

    def df(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return self.execute(sql, params).df()

    def scratch(self) -> duckdb.DuckDBPyConnection:
        return self.raw

    def begin(self, *, snapshot: bool = False) -> None:
        self.raw.execute("BEGIN TRANSACTION")  # a DuckDB transaction is always a snapshot

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")

    def lock_partitions(self, asset: str, keys: Sequence[str]) -> AbstractContextManager[None]:
        return nullcontext()  # the open read-write file is already exclusive to this process

    def ddl_lock(self) -> AbstractContextManager[None]:
        return nullcontext()  # one writing process per file

    def copy_in(self, table: str, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        view = "__ecm_copy_in"
        self.raw.register(view, data)
        try:
            cols = ", ".join(self.dialect.quote_ident(c) for c in data.column_names)
            self.raw.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {view}")
        finally:
            self.raw.unregister(view)
        return data.num_rows

    def table_exists(self, schema: str, name: str) -> bool:
        return bool(
            self.raw.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                "AND table_name = ?",
                [schema, name],
            ).fetchone()[0]
        )

    def close(self) -> None:
        self.raw.close()


class DuckDBWarehouse(Warehouse):
    kind = "duckdb"
    default_pool_size = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def url(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def connect(
        self,
        *,
        read_only: bool = False,
        timeout_seconds: float = 120.0,
        logger: Log | None = None,
    ) -> Iterator[DuckDBConnection]:
        with duckdb_file.connect(
            self.path, read_only=read_only, timeout_seconds=timeout_seconds, logger=logger
        ) as raw:
            yield DuckDBConnection(raw)
