"""What the publish rules need from a warehouse backend, and nothing about how it is done.

Every statement the rules run uses `?` placeholders on both backends; a backend translates
them to its driver's style. SQL text that differs between databases (the owned-partition
predicate, temp tables, column types) comes from the connection's `dialect`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class Cursor(Protocol):
    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


class Dialect(abc.ABC):
    """SQL text that differs between backends."""

    name: str

    @staticmethod
    def quote_ident(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    @abc.abstractmethod
    def owned_filter(self, column: str, sql_type: str = "DATE") -> str:
        """Predicate "column is one of the owned partitions"; params from owned_params."""

    @abc.abstractmethod
    def owned_params(self, owned: Sequence[date | str]) -> list[object]: ...

    @abc.abstractmethod
    def sql_type(self, contract_type: str) -> str:
        """The backend's column type for a contract type (DuckDB type names)."""

    @abc.abstractmethod
    def temp_table(self, name: str) -> str:
        """A connection-local table that readers never see and a dead process leaves behind
        nowhere."""

    @abc.abstractmethod
    def in_list(self, column: str, sql_type: str = "VARCHAR") -> str:
        """Predicate "column is in the list given as one parameter" (a Python list)."""

    @abc.abstractmethod
    def latest_attempts(self, table: str) -> str:
        """A subquery of the rows of `table` with the highest `attempt` per (run_id, asset)."""

    def partition_key_sql(self, contract: Any, expr: str) -> str:
        """SQL giving the partition key text of a partition column expression (the ledger's
        spelling: YYYY-MM-DD, YYYY-MM-DD-HH:MM[+-HHMM], or the list/hash key)."""
        return contract.partition_key_sql(expr)

    @abc.abstractmethod
    def index(self, table: str, columns: Sequence[str]) -> str | None:
        """The statement creating (if missing) an index of `table` on quoted `columns`, or
        None where the backend prunes without one (DuckDB's zone maps)."""

    @abc.abstractmethod
    def add_column(self, table: str, column: str, sql_type: str) -> str:
        """The statement adding a nullable column (`column` already quoted)."""


class WarehouseConnection(abc.ABC):
    """One open connection: statements, bulk loads, transactions and partition locks."""

    kind: str
    dialect: Dialect

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Cursor: ...

    @abc.abstractmethod
    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...

    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return self.arrow(sql, params).to_pandas()

    @abc.abstractmethod
    def begin(self, *, snapshot: bool = False) -> None:
        """Start a transaction; with `snapshot`, all its reads see one snapshot."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...

    @abc.abstractmethod
    def lock_partitions(self, asset: str, keys: Sequence[str]) -> AbstractContextManager[None]:
        """Hold the publish lock of each (asset, key) from the call until the block ends:
        publishes of the same partition serialize, disjoint ones do not wait."""

    @abc.abstractmethod
    def ddl_lock(self) -> AbstractContextManager[None]:
        """One writer of shared-table DDL (CREATE ... IF NOT EXISTS, ALTER) at a time."""

    @abc.abstractmethod
    def copy_in(self, table: str, data: pa.Table) -> int:
        """Bulk-load an Arrow table into `table` by column name; the rows written."""

    @abc.abstractmethod
    def table_exists(self, schema: str, name: str) -> bool:
        """Whether a table or view `schema.name` exists."""

    @abc.abstractmethod
    def scratch(self) -> Any:
        """An in-process DuckDB connection living as long as this one, for what runs in
        DuckDB SQL whatever the backend (SQL transforms, checksums); on DuckDB, itself."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Warehouse(abc.ABC):
    """A warehouse a code location publishes to; `connect` opens one connection."""

    kind: str
    #: How many steps may write at once: 1 for one DuckDB file, more for a server.
    default_pool_size: int = 1

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where it is, without secrets (for logs, manifests and the UI)."""

    @abc.abstractmethod
    def connect(
        self,
        *,
        read_only: bool = False,
        timeout_seconds: float = 120.0,
        logger: Log | None = None,
    ) -> AbstractContextManager[WarehouseConnection]: ...

    def exists(self) -> bool:
        """Whether anything was ever published here (a read-only open needs it)."""
        return True
