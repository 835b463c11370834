"""What the sync needs from a warehouse connection beyond the seam's statements.

The sink, checkpoints and validation run on both backends through `open_warehouse(...)`.
Where the SQL differs (DuckDB's QUALIFY, list parameters, registered Arrow tables; the
PostgreSQL COPY bulk load) they ask here. Candidates for the seam itself (the backends
package): `table_exists`, `columns`, `load_arrow`, `create_table_for`.

Per-row work that DuckDB does in SQL on its own connection (the bucket hash, the staged
columns) runs on PostgreSQL in a process-local in-memory DuckDB over the Arrow page, so
both backends stage byte-identical rows and buckets.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ecm_assets.adapters.backends import is_postgres_url, warehouse_target
from ecm_assets.adapters.warehouse import quote_ident

_local = threading.local()


def default_target(default: str | os.PathLike[str]) -> str:
    """ECM_WAREHOUSE_URL, else ECM_WAREHOUSE, else `default`; a DuckDB path made absolute
    (a code server and its runs may start in other directories)."""
    target = str(warehouse_target(default))
    if is_postgres_url(target):
        return target
    if target.startswith("duckdb:///"):
        return target
    return str(Path(target).resolve())


def is_duckdb(conn: Any) -> bool:
    return getattr(conn, "kind", "duckdb") == "duckdb"


def compute(conn: Any) -> Any:
    """A DuckDB connection that can scan registered Arrow tables: the warehouse's own on
    DuckDB, a per-thread in-memory one otherwise."""
    if is_duckdb(conn):
        return conn
    scratch = getattr(_local, "duckdb", None)
    if scratch is None:
        scratch = duckdb.connect(":memory:")
        scratch.execute("SET enable_progress_bar = false")
        _local.duckdb = scratch
    return scratch


def ensure_schema(conn: Any, name: str) -> None:
    """CREATE SCHEMA IF NOT EXISTS, which races against itself on a server: there it runs
    only when the schema is missing, under the seam's DDL lock."""
    if is_duckdb(conn):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)}")
        return
    found = conn.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [name]
    ).fetchone()[0]
    if not found:
        with conn.ddl_lock():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)}")


def table_exists(conn: Any, schema: str, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND "
            "table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def columns(conn: Any, schema: str, name: str) -> list[tuple[str, str]]:
    """(name, SQL type) of a table's columns, in order."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    ]


def in_list(values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`(?, ?, ...)` and its parameters: a portable IN list (never empty)."""
    values = list(values)
    if not values:
        return "(NULL)", []
    return "(" + ", ".join("?" for _ in values) + ")", values


def pg_type(t: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type (text when unsure: COPY reads it)."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "SMALLINT"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "INTEGER"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "BIGINT"
    if pa.types.is_uint64(t):
        return "NUMERIC(20)"
    if pa.types.is_float32(t):
        return "REAL"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION"
    if pa.types.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    return "VARCHAR"


def create_table_for(conn: Any, table: str, schema: pa.Schema) -> None:
    """An empty PostgreSQL table with the Arrow schema's columns."""
    cols = ", ".join(f"{quote_ident(f.name)} {pg_type(f.type)}" for f in schema)
    conn.execute(f"CREATE TABLE {table} ({cols})")


def load_arrow(conn: Any, table: str, data: pa.Table) -> int:
    """Append an Arrow table to `table` by column name: COPY on PostgreSQL."""
    if is_duckdb(conn):
        conn.register("__ecm_sync_load", data)
        try:
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __ecm_sync_load")
        finally:
            conn.unregister("__ecm_sync_load")
        return data.num_rows
    return int(conn.copy_in(table, data))


def arrow_of(result: Any) -> pa.Table:
    """A DuckDB result as one Arrow table (newer DuckDB returns a lazy reader)."""
    out = result.arrow()
    if isinstance(out, pa.RecordBatchReader):
        out = out.read_all()
    return out
