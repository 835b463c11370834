"""Source connectors through SQLAlchemy Core: boundary capture and keyset pages.

Every value reaches the source as a bound parameter; the only SQL text is the spec's own
query, wrapped. The cursor is the composite (cursor column, tiebreaker) with an upper
boundary captured once per run, before the first page, in one read snapshot:

    SELECT * FROM (<spec query>) src
    WHERE (c, t) >  (:after_c, :after_t)          -- omitted on a partition's first page
      AND (c, t) <= (:next_updated_at, :max_id_at_boundary)
    ORDER BY c, t LIMIT :page_rows

SQLite is the embedded default (timestamps stored as text 'YYYY-MM-DD HH:MM:SS[.ffffff]', so
text order is time order); PostgreSQL is the server dialect, where the boundary is also held
below the start of the oldest open write transaction (see docs/sync.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from ecm_assets.sync.spec import SourceSpec, expand_env

#: Lower than any cursor value: the first run and full extractions bind it as :last_sync.
SQLITE_MIN = "0000-01-01 00:00:00"
PG_MIN = datetime(1, 1, 1, tzinfo=UTC)


class SourceError(RuntimeError):
    """The source could not be read as the spec says (connection, query or columns)."""


@dataclass(frozen=True)
class Boundary:
    """The run's upper cursor boundary and the source clock when it was captured."""

    next_updated_at: str | None  # None: the source had no row at or below the candidate
    max_id_at_boundary: Any
    source_now: str
    held_by_open_transaction: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "next_updated_at": self.next_updated_at,
            "max_id_at_boundary": self.max_id_at_boundary,
            "source_now": self.source_now,
            "held_by_open_transaction": self.held_by_open_transaction,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Boundary:
        return cls(
            data.get("next_updated_at"),
            data.get("max_id_at_boundary"),
            data.get("source_now") or "",
            bool(data.get("held_by_open_transaction")),
        )


def engine_url(spec: SourceSpec) -> str:
    try:
        url = expand_env(spec.url)
    except KeyError as exc:
        raise SourceError(
            f"source url {spec.url!r} names environment variable {exc} which is not set"
        ) from None
    if spec.connector == "postgresql" and url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """The URL without its password, for manifests and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


class SourceConnector:
    """One spec's source: capture a boundary, read keyset pages, list the live keys."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.url = engine_url(spec)
        kwargs: dict[str, Any] = {}
        if spec.connector == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = sa.create_engine(self.url, **kwargs)
        c, t = spec.cursor.column, spec.cursor.tiebreaker
        self._c, self._t = self._q(c), self._q(t)

    def _q(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def minimum(self) -> Any:
        return SQLITE_MIN if self.spec.connector == "sqlite" else PG_MIN

    # Cursor values travel through JSON (checkpoints, manifests): text on SQLite, ISO text
    # of timestamptz on PostgreSQL; both round-trip exactly (microseconds).
    def encode(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime().astimezone(UTC).isoformat()
        return value

    def decode(self, value: Any) -> Any:
        if value is None or self.spec.connector == "sqlite":
            return value
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    def _wrapped(self) -> str:
        return f"({self.spec.query}) AS ecm_src"

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """One read snapshot: REPEATABLE READ on PostgreSQL, a read transaction on SQLite."""
        try:
            with self.engine.connect() as conn:
                if self.spec.connector == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"source {redacted(self.url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc

    def capture_boundary(self, last_sync: Any) -> Boundary:
        """(next_updated_at, max_id_at_boundary): the newest cursor at least safety_lag behind
        the source clock, and on PostgreSQL also below every open write transaction."""
        lag = self.spec.cursor.safety_lag.total_seconds()
        with self._snapshot() as conn:
            held = False
            if self.spec.connector == "sqlite":
                now = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar()
                candidate = conn.execute(
                    sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now', :lag)"),
                    {"lag": f"-{lag:.3f} seconds"},
                ).scalar()
            else:
                now = conn.execute(sa.text("SELECT clock_timestamp()")).scalar()
                candidate = conn.execute(
                    sa.text("SELECT clock_timestamp() - make_interval(secs => :lag)"),
                    {"lag": lag},
                ).scalar()
                # A transaction that has written but not committed may stamp rows with its
                # start time (now()): keep the boundary below the oldest such start.
                oldest = conn.execute(
                    sa.text(
                        "SELECT min(xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT "
                        "NULL AND pid <> pg_backend_pid()"
                    )
                ).scalar()
                if oldest is not None and oldest <= candidate:
                    candidate = oldest - pd.Timedelta(microseconds=1).to_pytimedelta()
                    held = True
            top = conn.execute(
                sa.text(f"SELECT max({self._c}) FROM {self._wrapped()} WHERE {self._c} <= :cand"),
                {"cand": candidate, "last_sync": last_sync},
            ).scalar()
            if top is None:
                return Boundary(None, None, str(self.encode(now)), held)
            max_id = conn.execute(
                sa.text(f"SELECT max({self._t}) FROM {self._wrapped()} WHERE {self._c} = :top"),
                {"top": top, "last_sync": last_sync},
            ).scalar()
        return Boundary(self.encode(top), max_id, str(self.encode(now)), held)

    def read_page(
        self,
        last_sync: Any,
        boundary: Boundary,
        after: tuple[Any, Any] | None,
        limit: int,
    ) -> pa.Table:
        """The next page in (cursor, tiebreaker) order after `after`, up to the boundary, as
        Arrow columns built straight from the driver's rows (no SQLAlchemy Row, no pandas)."""
        where = [f"({self._c}, {self._t}) <= (:bu, :bt)"]
        params: dict[str, Any] = {
            "last_sync": last_sync,
            "bu": self.decode(boundary.next_updated_at),
            "bt": boundary.max_id_at_boundary,
            "n": limit,
        }
        if after is not None:
            where.append(f"({self._c}, {self._t}) > (:au, :at)")
            params["au"], params["at"] = self.decode(after[0]), after[1]
        sql = (
            f"SELECT * FROM {self._wrapped()} WHERE {' AND '.join(where)} "
            f"ORDER BY {self._c}, {self._t} LIMIT :n"
        )
        with self._snapshot() as conn:
            columns, rows = fetch_rows(conn, sql, params)
        missing = [
            c
            for c in (
                self.spec.key,
                self.spec.cursor.column,
                self.spec.cursor.tiebreaker,
                self.spec.version_column,
                self.spec.deleted_column,
            )
            if c and c not in columns
        ]
        if missing:
            raise SourceError(f"source query returns no column(s) {missing}; it returns {columns}")
        return rows_to_arrow(columns, rows)

    def live_keys(self) -> pa.Array:
        """Every key the source holds now (for hard-delete reconciliation), one snapshot."""
        key = self._q(self.spec.key)
        with self._snapshot() as conn:
            columns, rows = fetch_rows(
                conn, f"SELECT {key} FROM {self._wrapped()}", {"last_sync": self.minimum}
            )
        return rows_to_arrow(columns, rows).column(0).combine_chunks()

    def lag_behind(self, boundary: str | None) -> dict[str, Any]:
        """Rows and cursor the source holds beyond a recorded boundary (operator view)."""
        with self._snapshot() as conn:
            if boundary is None:
                rows = conn.execute(
                    sa.text(f"SELECT count(*), max({self._c}) FROM {self._wrapped()}"),
                    {"last_sync": self.minimum},
                ).one()
            else:
                rows = conn.execute(
                    sa.text(
                        f"SELECT count(*), max({self._c}) FROM {self._wrapped()} "
                        f"WHERE {self._c} > :b"
                    ),
                    {"last_sync": self.minimum, "b": self.decode(boundary)},
                ).one()
        return {"rows_beyond_boundary": int(rows[0]), "source_max_cursor": self.encode(rows[1])}


def fetch_rows(conn: sa.Connection, sql: str, params: dict[str, Any]) -> tuple[list[str], list]:
    """Run `sql` with bound parameters; (column names, the driver's row tuples).

    SQLAlchemy compiles the statement and binds the values; the rows are read from the DBAPI
    cursor itself, because wrapping a million tuples in Row objects costs more than the read.
    """
    result = conn.execute(sa.text(sql), params)
    columns = list(result.keys())
    cursor = getattr(result, "cursor", None)
    rows = cursor.fetchall() if cursor is not None else [tuple(r) for r in result.fetchall()]
    result.close()
    return columns, rows


def rows_to_arrow(columns: list[str], rows: list) -> pa.Table:
    """Driver row tuples as an Arrow table, one typed column per source column.

    A column whose values have no single Arrow type (SQLite stores any type in any column)
    is kept as text rather than refused, JSON values stay JSON text; an all-NULL column has
    Arrow's null type, which staging turns into VARCHAR.
    """
    if not rows:
        return pa.table({c: pa.nulls(0) for c in columns})
    arrays = []
    for values in zip(*rows, strict=True):
        first = next((v for v in values if v is not None), None)
        if isinstance(first, dict | list):
            # json/jsonb: Arrow would infer a struct and add every other row's keys to it.
            arrays.append(pa.array([_as_text(v) for v in values], pa.string()))
            continue
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array([_as_text(v) for v in values], pa.string()))
    return pa.Table.from_arrays(arrays, names=columns)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):  # PostgreSQL json/jsonb: keep it JSON, not a repr
        return json.dumps(value, default=str)
    return str(value)
