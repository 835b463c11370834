"""The server backend: PostgreSQL through psycopg 3.

How the publish rules are done here:
- statements are written with `?` placeholders and translated to psycopg's `%s`;
- a connection is in autocommit outside an explicit `begin()`, so DDL and ledger moves
  before the swap commit on their own, as they do on DuckDB;
- bulk reads are `COPY (query) TO STDOUT` in CSV, parsed by pyarrow with the schema the
  query's result types give (exact for doubles, timestamps, time zones and NULLs);
- bulk staging is `COPY table FROM STDIN` of a CSV that pyarrow writes from an Arrow table,
  never row-by-row INSERT;
- publishes of the same (asset, partition) serialize on session-level advisory locks taken
  in sorted order, held for the whole publish including its checks; disjoint partitions do
  not wait for each other;
- DDL of shared tables (CREATE ... IF NOT EXISTS races in PostgreSQL) runs under one global
  advisory lock.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from ecm_assets.adapters.backends.base import Dialect, Log, Warehouse, WarehouseConnection
from ecm_assets.adapters.warehouse import WarehouseLockedError

log = logging.getLogger(__name__)

#: What to do about a lock wait that ran out (WarehouseLockedError; runs retry it).
_LOCK_ADVICE = (
    "If it is a run, wait for it or raise lock_timeout_seconds; if the session is stuck, end "
    "it with pg_terminate_backend(pid). The run's retry policy retries this."
)

#: The global advisory lock (single bigint key space) around DDL of shared tables.
DDL_LOCK_KEY = 0x45434D5F44444C  # "ECM_DDL"

_TYPES = {
    "DOUBLE": "DOUBLE PRECISION",
    "FLOAT8": "DOUBLE PRECISION",
    "FLOAT": "REAL",
    "FLOAT4": "REAL",
    "VARCHAR": "TEXT",
    "STRING": "TEXT",
    "JSON": "TEXT",  # TEXT, not JSONB: the checksum hashes the exact text that was staged
    "HUGEINT": "NUMERIC(38)",
    "UBIGINT": "NUMERIC(20)",
    "TINYINT": "SMALLINT",
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "BLOB": "BYTEA",
}
_TYPE_HEAD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(.*)$", re.S)
_LENGTH = re.compile(r"^\s*\(\s*\d+\s*\)")


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def libpq_url(url: str) -> str:
    """psycopg's spelling of a URL (SQLAlchemy's postgresql+psycopg:// is accepted too)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def translate(sql: str) -> str:
    """`?` placeholders to `%s`, and a literal `%` to `%%`, outside quotes and comments."""
    if "?" not in sql and "%" not in sql:
        return sql
    out: list[str] = []
    quote: str | None = None
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if quote is not None:
            if ch == "%":
                out.append("%%")
            else:
                out.append(ch)
                if ch == quote:
                    quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


class PostgresDialect(Dialect):
    name = "postgresql"

    def owned_filter(self, column: str, sql_type: str = "DATE") -> str:
        # The range lets a btree (or BRIN) index prune; = ANY keeps it exact for gaps.
        return f"({column} BETWEEN ? AND ? AND {self.in_list(column, sql_type)})"

    def owned_params(self, owned: Sequence[date | str]) -> list[object]:
        values = sorted(owned)
        return [values[0], values[-1], values]

    def in_list(self, column: str, sql_type: str = "VARCHAR") -> str:
        return f"{column} = ANY(CAST(? AS {self.sql_type(sql_type)}[]))"

    def sql_type(self, contract_type: str) -> str:
        match = _TYPE_HEAD.match(contract_type)
        if match is None:
            return contract_type
        head, rest = match.group(1), match.group(2)
        if head.upper() == "DOUBLE" and rest.strip().upper().startswith("PRECISION"):
            return contract_type
        mapped = _TYPES.get(head.upper(), head)
        if mapped == "TEXT":
            # VARCHAR(8): DuckDB ignores the length, so PostgreSQL does too (TEXT takes none).
            rest = _LENGTH.sub("", rest, count=1)
        return mapped + rest

    def temp_table(self, name: str) -> str:
        return f"pg_temp.{self.quote_ident(name)}"

    def latest_attempts(self, table: str) -> str:
        return (
            f"(SELECT DISTINCT ON (run_id, asset) * FROM {table} "
            "ORDER BY run_id, asset, attempt DESC) AS latest"
        )

    def partition_key_sql(self, contract: Any, expr: str) -> str:
        if contract.grain == "hourly":
            return _hour_key_sql(expr, contract.timezone)
        if contract.is_static:
            return expr
        return f"CAST({expr} AS TEXT)"  # a DATE, as YYYY-MM-DD (DateStyle ISO)

    def index(self, table: str, columns: Sequence[str]) -> str | None:
        # A btree on the partition (or ledger) key keeps every owned-partition statement
        # from scanning the partitions already published. Named by a digest: <= 63 chars.
        digest = hashlib.sha1(f"{table}({','.join(columns)})".encode()).hexdigest()[:16]
        return f"CREATE INDEX IF NOT EXISTS ecm_ix_{digest} ON {table} ({', '.join(columns)})"

    def add_column(self, table: str, column: str, sql_type: str) -> str:
        return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {self.sql_type(sql_type)}"


def _hour_key_sql(expr: str, zone: str) -> str:
    """PostgreSQL SQL of hour_key(expr, zone) for a TIMESTAMP of UTC instants: the local
    wall-clock hour, with the offset appended to the repeated hour of a fall-back night
    (the same text contracts/dataset.py's DuckDB SQL and partition_key give)."""
    z = zone.replace("'", "''")

    def local(e: str) -> str:
        return f"(({e}) AT TIME ZONE 'UTC' AT TIME ZONE '{z}')"

    key = f"to_char({local(expr)}, 'YYYY-MM-DD-HH24:MI')"
    if zone in ("UTC", "Etc/UTC", "Etc/GMT", "GMT"):
        return key
    minutes = f"CAST(extract(epoch FROM ({local(expr)} - ({expr}))) / 60 AS BIGINT)"
    suffix = (
        f"(CASE WHEN {minutes} < 0 THEN '-' ELSE '+' END || "
        f"lpad(CAST(abs({minutes}) / 60 AS TEXT), 2, '0') || "
        f"lpad(CAST(abs({minutes}) % 60 AS TEXT), 2, '0'))"
    )
    earlier = local(f"({expr}) - INTERVAL '1 hour'")
    repeated = f"({local(expr)} - {earlier}) < INTERVAL '1 hour'"
    return f"({key} || CASE WHEN {repeated} THEN {suffix} ELSE '' END)"


DIALECT = PostgresDialect()

# Result type OIDs to Arrow types; anything else is read as text.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    25: pa.string(),
    1043: pa.string(),
    1042: pa.string(),
    19: pa.string(),
    114: pa.string(),
    3802: pa.string(),
}


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """A frame with the dtypes DuckDB's `.df()` gives (dates as datetime64, nullable ints as
    floats), so readers see the same frame on both backends."""
    with duckdb.connect() as local:
        return local.from_arrow(table).df()


def _utc_wall_time(data: pa.Table) -> pa.Table:
    """Time-zone-aware timestamps as their UTC wall time: the session's TimeZone is UTC, so
    PostgreSQL reads the same instant, and pyarrow writes naive timestamps ~15x faster."""
    for i, f in enumerate(data.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            naive = data.column(i).cast(pa.int64()).cast(pa.timestamp(f.type.unit))
            data = data.set_column(i, f.name, naive)
    return data


class PostgresResult:
    """A finished statement: rows like DuckDB's (a DML statement's row is its row count)."""

    def __init__(self, cursor: psycopg.Cursor) -> None:
        self.cursor = cursor

    @property
    def description(self) -> Any:
        return self.cursor.description

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        if self.cursor.description is None:
            return (self.cursor.rowcount,)
        return self.cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self.cursor.description is None:
            return [(self.cursor.rowcount,)]
        return self.cursor.fetchall()

    def fetch_arrow_table(self) -> pa.Table:
        desc = self.cursor.description or []
        rows = self.cursor.fetchall()
        names = [d.name for d in desc]
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
        arrays = [
            pa.array(list(col), type=_ARROW_TYPES.get(d.type_code))
            if d.type_code in _ARROW_TYPES
            else pa.array([None if v is None else str(v) for v in col], type=pa.string())
            for d, col in zip(desc, columns, strict=True)
        ]
        return pa.table(arrays, names=names)

    def arrow(self) -> pa.Table:
        return self.fetch_arrow_table()

    def df(self) -> pd.DataFrame:
        return to_pandas(self.fetch_arrow_table())


_TRANSACTION_CONTROL = {
    "BEGIN": "begin",
    "BEGIN TRANSACTION": "begin",
    "COMMIT": "commit",
    "ROLLBACK": "rollback",
}


class PostgresConnection(WarehouseConnection):
    """One psycopg connection behind the seam; `raw` is psycopg's own API."""

    kind = "postgresql"
    dialect = DIALECT

    def __init__(self, raw: psycopg.Connection, url: str, logger: Log | None = None) -> None:
        self.raw = raw
        self.url = url
        self.log = logger if logger is not None else log
        #: Partition locks this connection had to wait for: (asset, key), in order.
        self.lock_waits: list[tuple[str, str]] = []
        self._in_transaction = False
        self._scratch: duckdb.DuckDBPyConnection | None = None

    def scratch(self) -> duckdb.DuckDBPyConnection:
        if self._scratch is None:
            self._scratch = duckdb.connect()
            self._scratch.execute("SET TimeZone = 'UTC'")
        return self._scratch

    # statements -------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PostgresResult:
        control = _TRANSACTION_CONTROL.get(" ".join(sql.split()).upper().rstrip(";"))
        if control is not None and params is None:
            # Callers written for DuckDB spell transactions as statements: keep the state.
            getattr(self, control)()
            return PostgresResult(self.raw.cursor())
        cursor = self.raw.cursor()
        try:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(translate(sql), list(params))
        except psycopg.errors.LockNotAvailable:
            raise WarehouseLockedError(
                f"warehouse {self.url}: a lock this statement needs was held by another "
                f"session for longer than lock_timeout ({self._lock_timeout()}): "
                f"{' '.join(sql.split())[:120]}. {_LOCK_ADVICE}"
            ) from None
        return PostgresResult(cursor)

    def _lock_timeout(self) -> str:
        with suppress(psycopg.Error):
            row = self.raw.execute("SHOW lock_timeout").fetchone()
            if row:
                return str(row[0])
        return "?"

    def advisory_holders(self, first: str, second: str) -> str:
        """Who holds the advisory lock (hashtext(first), hashtext(second)): pid, application,
        state and for how long, for an error a person can act on."""
        try:
            rows = self.raw.execute(
                "SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), "
                "coalesce(a.state, '?'), "
                "extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::int "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.classid::bigint = (hashtext(%s)::bigint & 4294967295) "
                "AND l.objid::bigint = (hashtext(%s)::bigint & 4294967295) "
                "AND l.pid <> pg_backend_pid()",
                [first, second],
            ).fetchall()
        except psycopg.Error:  # e.g. inside an aborted transaction: say less, not nothing
            return "another session"
        if not rows:
            return "another session (gone by now)"
        return ", ".join(
            f"server pid {pid} ({app}, {state}, for {seconds} s)"
            for pid, app, state, seconds in rows
        )

    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return to_pandas(self.arrow(sql, params))

    def arrow(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """A large read: COPY (query) TO STDOUT as CSV, parsed by pyarrow with the schema the
        query's result types give."""
        query = translate(sql) if params is not None else sql
        args = list(params) if params is not None else None
        with self.raw.cursor() as cursor:
            cursor.execute(f"SELECT * FROM ({query}) AS __ecm_q LIMIT 0", args)
            desc = cursor.description or []
            buffer = io.BytesIO()
            with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", args) as copy:
                for chunk in copy:
                    buffer.write(chunk)
        names = [d.name for d in desc]
        fields = [pa.field(d.name, _ARROW_TYPES.get(d.type_code, pa.string())) for d in desc]
        schema = pa.schema(fields)
        if buffer.tell() == 0:
            return schema.empty_table()
        buffer.seek(0)
        table = pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=schema,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        return table.cast(schema) if table.schema != schema else table

    def copy_in(self, table: str, data: pa.Table) -> int:
        """Bulk-load an Arrow table into `table` by column name with COPY FROM STDIN."""
        if data.num_rows == 0:
            return 0
        out = io.BytesIO()
        pacsv.write_csv(_utc_wall_time(data), out, pacsv.WriteOptions(include_header=False))
        cols = ", ".join(self.dialect.quote_ident(c) for c in data.column_names)
        statement = f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)"
        with self.raw.cursor() as cursor, cursor.copy(statement) as copy:
            view = out.getbuffer()
            step = 1 << 20
            for start in range(0, len(view), step):
                copy.write(view[start : start + step])
            del view
        return data.num_rows

    # transactions -----------------------------------------------------------------------
    def begin(self, *, snapshot: bool = False) -> None:
        """Start a transaction; `snapshot`: every read in it sees one snapshot (REPEATABLE
        READ; read committed otherwise, which a publish wants: it never fails on another
        writer's commit)."""
        self.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" if snapshot else "BEGIN")
        self._in_transaction = True

    def commit(self) -> None:
        self.raw.execute("COMMIT")
        self._in_transaction = False

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK")
        self._in_transaction = False

    # locks ------------------------------------------------------------------------------
    @contextmanager
    def lock_partitions(self, asset: str, keys: Sequence[str]) -> Iterator[None]:
        """Session-level advisory lock per (asset, key), taken in sorted order (no deadlock
        between two publishes of overlapping ranges) and held until the block ends."""
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                got = self.raw.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", [asset, key]
                ).fetchone()
                if not (got and got[0]):
                    self.lock_waits.append((asset, key))
                    self.log.info(
                        f"partition {asset} {key} is being published by another run; waiting"
                    )
                    try:
                        self.raw.execute(
                            "SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", [asset, key]
                        )
                    except psycopg.errors.LockNotAvailable:
                        raise WarehouseLockedError(
                            f"partition {asset} {key} is still being published by "
                            f"{self.advisory_holders(asset, key)} after lock_timeout "
                            f"({self._lock_timeout()}). {_LOCK_ADVICE}"
                        ) from None
                taken.append(key)
            yield
        finally:
            for key in reversed(taken):
                try:
                    self.raw.execute(
                        "SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", [asset, key]
                    )
                except psycopg.Error:  # the session is gone: its locks went with it
                    break

    @contextmanager
    def ddl_lock(self) -> Iterator[None]:
        """One DDL writer of shared tables at a time (CREATE ... IF NOT EXISTS is not safe
        against itself in PostgreSQL); inside a transaction the lock lasts until its end."""
        scoped = self._in_transaction or self.raw.info.transaction_status != 0
        try:
            self.raw.execute(
                f"SELECT {'pg_advisory_xact_lock' if scoped else 'pg_advisory_lock'}(%s)",
                [DDL_LOCK_KEY],
            )
        except psycopg.errors.LockNotAvailable:
            raise WarehouseLockedError(
                f"warehouse {self.url}: another session kept the shared-table DDL lock "
                f"(advisory key {DDL_LOCK_KEY}) longer than lock_timeout "
                f"({self._lock_timeout()}). {_LOCK_ADVICE}"
            ) from None
        if scoped:
            yield
            return
        try:
            yield
        finally:
            with suppress(psycopg.Error):
                self.raw.execute("SELECT pg_advisory_unlock(%s)", [DDL_LOCK_KEY])

    def table_exists(self, schema: str, name: str) -> bool:
        row = self.raw.execute(
            "SELECT to_regclass(%s) IS NOT NULL",
            [f"{self.dialect.quote_ident(schema)}.{self.dialect.quote_ident(name)}"],
        ).fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
        self.raw.close()


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database as the warehouse: many writers at once."""

    kind = "postgresql"
    default_pool_size = 4

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        return redact(self._url)

    @property
    def dsn(self) -> str:
        return libpq_url(self._url)

    def exists(self) -> bool:
        return True

    @contextmanager
    def connect(
        self,
        *,
        read_only: bool = False,
        timeout_seconds: float = 120.0,
        logger: Log | None = None,
    ) -> Iterator[PostgresConnection]:
        try:
            raw = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, int(min(timeout_seconds, 30))),
                # Named, so a lock holder in an error or pg_stat_activity says who it is.
                application_name=f"ecm_assets pid {os.getpid()}",
                # Every lock wait (a partition's advisory lock, a table lock, a sync job's
                # lock) ends after timeout_seconds, as the DuckDB file lock's wait does.
                options=f"-c lock_timeout={max(1, int(timeout_seconds * 1000))} "
                "-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3 "
                # DuckDB's default schema first: unqualified names mean the same on both.
                "-c search_path=main,public"
                + (" -c default_transaction_read_only=on" if read_only else ""),
            )
        except psycopg.OperationalError as exc:
            detail = str(exc).replace(self._url, self.url).strip().splitlines()
            raise ConnectionError(
                f"cannot connect to the warehouse {self.url}: {detail[0] if detail else exc}"
            ) from None
        conn = PostgresConnection(raw, self.url, logger)
        try:
            yield conn
        finally:
            with suppress(psycopg.Error):
                conn.close()
