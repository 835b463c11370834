"""Where the warehouse lives: the seam between the publish rules and the database that runs them.

The publish protocol, the ledger, versions, quarantine and recovery say *what* must hold
(stage, judge, swap the owned partitions with the PUBLISHED manifest in one transaction).
A backend says *how* one database does it: its SQL dialect, its locking, its bulk load.

- DuckDB (the embedded default): one file, one writing process at a time; the file lock is
  the publish lock.
- PostgreSQL (the server backend): many writers; publishes of the same (asset, partition)
  serialize on advisory locks held for the whole publish (its checks included), disjoint
  partitions publish in parallel. Whatever must run as DuckDB SQL (checksums, judging the
  staged frame, SQL transforms) runs in an in-process DuckDB over Arrow read from the server,
  so the same rows give the same checksums on both backends.

`open_warehouse` picks the backend from a target: a `postgresql://` URL, or a DuckDB file
path (optionally as `duckdb:///path`). `ECM_WAREHOUSE_URL` names the warehouse of a code
location; `ECM_WAREHOUSE` (a DuckDB path) is the older spelling and still works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecm_assets.adapters.backends.base import Warehouse, WarehouseConnection

#: Environment variable naming the warehouse (a postgresql:// URL or a DuckDB path).
WAREHOUSE_URL_ENV = "ECM_WAREHOUSE_URL"

POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    return str(target).startswith(POSTGRES_SCHEMES)


def open_warehouse(target: str | os.PathLike[str] | Warehouse) -> Warehouse:
    """The warehouse a target names; a Warehouse is returned as it is."""
    if isinstance(target, Warehouse):
        return target
    text = str(target)
    if is_postgres_url(text):
        from ecm_assets.adapters.backends.postgres import PostgresWarehouse

        return PostgresWarehouse(text)
    from ecm_assets.adapters.backends.duckdb import DuckDBWarehouse

    if text.startswith("duckdb:///"):
        # SQLAlchemy's convention: duckdb:///relative/path, duckdb:////absolute/path
        text = text[len("duckdb:///") :]
    return DuckDBWarehouse(Path(text))


def as_connection(conn: Any) -> WarehouseConnection:
    """The seam connection for `conn`: a raw DuckDB connection (callers not yet ported) is
    wrapped, a WarehouseConnection is returned as it is."""
    if isinstance(conn, WarehouseConnection) or hasattr(conn, "dialect"):
        return conn  # a seam connection, or a wrapper of one
    from ecm_assets.adapters.backends.duckdb import DuckDBConnection

    return DuckDBConnection(conn)


def warehouse_target(default: str | os.PathLike[str] | None = None) -> str | None:
    """The configured warehouse: ECM_WAREHOUSE_URL, else ECM_WAREHOUSE, else `default`."""
    for name in (WAREHOUSE_URL_ENV, "ECM_WAREHOUSE"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None if default is None else str(default)


__all__ = [
    "WAREHOUSE_URL_ENV",
    "Warehouse",
    "WarehouseConnection",
    "as_connection",
    "is_postgres_url",
    "open_warehouse",
    "warehouse_target",
]
