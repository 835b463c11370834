"""What a pure transform receives and returns; no Dagster, no IO."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ecm_assets.contracts.quality import TimestampRule


@dataclass(frozen=True)
class PartitionWindow:
    """The partitions a run owns, as partition-column values (dates), in order."""

    partitions: tuple[date, ...]
    #: The zone whose calendar days the partitions are (the contract's timezone).
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not self.partitions:
            raise ValueError("a partition window needs at least one partition")
        if list(self.partitions) != sorted(set(self.partitions)):
            raise ValueError(f"partitions must be unique and ordered: {self.partitions}")

    @property
    def first(self) -> date:
        return self.partitions[0]

    @property
    def last(self) -> date:
        return self.partitions[-1]


#: Columns of a rejected row, as a transform or the quality gate hands it to publish.
REJECT_COLUMNS = [
    "partition_date",
    "source_file",
    "source_line",
    "reason",
    "column_name",
    "failure_case",
    "original_row",
]


@dataclass(frozen=True)
class TransformResult:
    """Accepted rows, rejected rows (with reasons) and the per-partition counts that reconcile.

    `counts` is indexed by partition date with at least the columns `read`, `kept`,
    `rejected` and `duplicate`, where read == kept + rejected + duplicate.
    """

    data: pd.DataFrame
    rejects: pd.DataFrame | None = None
    counts: pd.DataFrame | None = None
    notes: dict[str, int] = field(default_factory=dict)
    #: The input values each output row came from (same order as `data`), kept as the
    #: `original_row` of a row the quality gate quarantines.
    source_rows: pd.DataFrame | None = None


class ReconciliationError(RuntimeError):
    """Counts do not reconcile: rows would be silently lost, so nothing may be published."""


def month_days(month_start: date) -> list[date]:
    """Business dates of a monthly partition."""
    nxt = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return [month_start + timedelta(days=i) for i in range((nxt - month_start).days)]


#: An RFC 3339 zone at the end of a timestamp: Z, z, +HH:MM, +HHMM or +HH.
_ZONE_SUFFIX = r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)\s*$"
#: The year of an ISO 8601 date-time, however many digits it has.
_LEADING_YEAR = r"^\s*([+-]?[0-9]{1,12})-"


def text_array(values: pd.Series) -> pa.Array:
    """The column as an Arrow large_string array (nulls kept), for vectorized text rules;
    non-string values become their str()."""
    if isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype) and hasattr(
        values.array, "__arrow_array__"
    ):
        # Arrow-backed text already: its buffers, without a Python object per value.
        arrow = values.array.__arrow_array__()
        if isinstance(arrow, pa.ChunkedArray):
            arrow = arrow.combine_chunks()
        if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type):
            return arrow.cast(pa.large_string())
    try:
        return pa.array(values.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = values.astype(object).where(values.isna(), values.astype(str))
        return pa.array(text.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)


def has_zone(values: pd.Series) -> np.ndarray:
    """Whether each value ends in an RFC 3339 zone (False for nulls): a value whose last
    byte is Z or z has one; the others are judged by one RE2 pass over just those."""
    arr = text_array(values)
    n = len(arr)
    _, offsets, data = arr.buffers()
    ends = np.frombuffer(offsets, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    out = np.zeros(n, dtype=bool)
    if data is None or not n:
        return out
    raw = np.frombuffer(data, dtype=np.uint8)
    nonempty = ends[1:] > ends[:-1]
    last = np.zeros(n, dtype=np.uint8)
    last[nonempty] = raw[ends[1:][nonempty] - 1]
    out[(last == ord("Z")) | (last == ord("z"))] = True
    rest = np.flatnonzero(nonempty & ~out)
    if len(rest):
        hit = pc.match_substring_regex(arr.take(pa.array(rest)), _ZONE_SUFFIX)
        out[rest] = np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return out


@dataclass(frozen=True)
class ParsedTimestamps:
    """Text timestamps read as instants, and why the ones that are not, are not."""

    utc: pd.Series  # datetime64[ns, UTC]; NaT where `problem` says why (or the value is null)
    #: None, "unparseable" or "year_out_of_range", per value.
    problem: pd.Series


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])


def _iso8601_utc(values: pd.Series) -> pd.DatetimeIndex:
    """`pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")`, with the
    canonical shapes `YYYY-MM-DDTHH:MM:SSZ` and `...SS+HH:MM` read from the Arrow bytes by
    integer arithmetic; every other value (and any that fails the strict checks: digits,
    month, day of month, hour, minute, second, year 1700-2200) is parsed by pandas, so the
    result is the same instant or NaT that pandas alone would give."""
    n = len(values)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    done = np.zeros(n, dtype=bool)
    arr = text_array(values) if n else None
    data_buf = arr.buffers()[2] if arr is not None else None
    if arr is not None and data_buf is not None and data_buf.size:
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8)
        lengths = np.diff(offsets)
        valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero(valid & ((lengths == 20) | (lengths == 25)))
        if len(rows):
            starts = offsets[rows]
            # Zero bytes past the end: a 20-byte last value may be probed up to byte 24.
            padded = np.concatenate([data, np.zeros(25, dtype=np.uint8)])

            def byte(i: int) -> np.ndarray:  # the i-th byte of each candidate, as uint8
                return padded[starts + i]

            def digit(i: int) -> np.ndarray:
                return byte(i).astype(np.int32) - 48

            digits = {i: digit(i) for i in _DIGITS}
            long = lengths[rows] == 25
            ok = np.ones(len(rows), dtype=bool)
            for value in digits.values():
                ok &= (value >= 0) & (value <= 9)
            ok &= (byte(4) == 45) & (byte(7) == 45) & (byte(10) == 84)  # - - T
            ok &= (byte(13) == 58) & (byte(16) == 58)  # : :
            b19 = byte(19)
            short_zone = b19 == 90  # Z
            sign = np.where(b19 == 43, 1, np.where(b19 == 45, -1, 0)).astype(np.int64)
            zd = [digit(i) for i in (20, 21, 23, 24)]
            long_zone = (sign != 0) & (byte(22) == 58)
            for value in zd:
                long_zone &= (value >= 0) & (value <= 9)
            ok &= np.where(long, long_zone, short_zone)
            d = digits
            year = (d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3]).astype(np.int64)
            month = (d[5] * 10 + d[6]).astype(np.int64)
            day = (d[8] * 10 + d[9]).astype(np.int64)
            hour, minute, second = ((d[i] * 10 + d[i + 1]).astype(np.int64) for i in (11, 14, 17))
            oh = np.where(long, zd[0] * 10 + zd[1], 0).astype(np.int64)
            om = np.where(long, zd[2] * 10 + zd[3], 0).astype(np.int64)
            leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
            ok &= (year >= 1700) & (year <= 2200) & (month >= 1) & (month <= 12)
            month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + ((month == 2) & leap)
            ok &= (day >= 1) & (day <= month_days) & (hour <= 23) & (minute <= 59)
            ok &= (second <= 59) & (oh <= 14) & (om <= 59)
            # days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm
            y = year - (month <= 2)
            era = y // 400
            yoe = y - era * 400
            doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
            doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
            days = era * 146097 + doe - 719468
            seconds = days * 86400 + hour * 3600 + minute * 60 + second
            seconds -= np.where(long, sign * (oh * 3600 + om * 60), 0)
            good = rows[ok]
            out[good] = seconds[ok] * 1_000_000_000
            done[good] = True
    result = pd.DatetimeIndex(out.view("datetime64[ns]")).tz_localize("UTC")
    rest = np.flatnonzero(~done & values.notna().to_numpy())
    if len(rest) == 0:
        return result
    parsed = pd.to_datetime(values.iloc[rest], utc=True, errors="coerce", format="ISO8601")
    if bool((pd.Series(parsed).notna().to_numpy() & ~has_zone(values.iloc[rest])).any()):
        # pandas reads a value without a zone by the offset of the value before it: only the
        # whole column gives exactly its result then.
        return pd.DatetimeIndex(
            pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        ).as_unit("ns")
    merged = pd.Series(result)
    merged.iloc[rest] = pd.DatetimeIndex(parsed).as_unit("ns")
    return pd.DatetimeIndex(merged)


def parse_timestamps(values: pd.Series, rule: TimestampRule | None = None) -> ParsedTimestamps:
    """RFC 3339 / ISO 8601 text as UTC instants, vectorized.

    A lowercase `t` or `z` is valid RFC 3339. A value without a zone is read in the rule's
    source_zone when it declares one, else as UTC (the gate's TimestampRule then decides
    whether such a value is data). A date-time whose year lies outside the rule's range is
    `year_out_of_range`, anything else that is not an instant `unparseable`.
    """
    index = values.index
    ts = pd.Series(_iso8601_utc(values), index=index)
    present = values.notna().to_numpy()
    failed = np.flatnonzero(present & ts.isna().to_numpy())
    if len(failed):
        # RFC 3339 allows "t" and "z" in lower case; only the few failures are re-read.
        again = values.iloc[failed].astype(str).str.upper()
        ts.iloc[failed] = pd.to_datetime(again, utc=True, errors="coerce", format="ISO8601")
    min_year = rule.min_year if rule is not None else 1
    max_year = rule.max_year if rule is not None else 9999
    problem = pd.Series(None, index=index, dtype=object)
    if rule is not None and rule.source_zone is not None:
        naive = np.flatnonzero(ts.notna().to_numpy() & ~has_zone(values))
        if len(naive):
            wall = ts.iloc[naive].dt.tz_localize(None)
            local = wall.dt.tz_localize(rule.source_zone, ambiguous="NaT", nonexistent="NaT")
            ts.iloc[naive] = local.dt.tz_convert("UTC")
    lo = pd.Timestamp(year=max(min_year, 1678), month=1, day=1, tz="UTC")
    hi = pd.Timestamp(year=min(max_year, 2261) + 1, month=1, day=1, tz="UTC")
    outside = ts.notna() & ((ts < lo) | (ts >= hi))
    if rule is not None and bool(outside.any()):
        problem[outside] = "year_out_of_range"
        ts[outside] = pd.NaT
    failed = np.flatnonzero(present & ts.isna().to_numpy() & problem.isna().to_numpy())
    if len(failed):
        years = pd.to_numeric(
            values.iloc[failed].astype(str).str.extract(_LEADING_YEAR, expand=False),
            errors="coerce",
        )
        out_of_range = (years < min_year) | (years > max_year)
        problem.iloc[failed] = np.where(out_of_range.to_numpy(), "year_out_of_range", "unparseable")
    return ParsedTimestamps(utc=ts, problem=problem)


def attribute_partitions(
    event_ts: pd.Series,
    ingest_date: pd.Series,
    lateness_days: int,
    timezone: str = "UTC",
    rule: TimestampRule | None = None,
    parsed: ParsedTimestamps | None = None,
) -> tuple[pd.Series, pd.Series]:
    """The partition each landing row belongs to, and whether its timestamp is in horizon.

    A row belongs to its event date in `timezone` (the contract's business day) if it arrived
    within `lateness_days` of it (and not before it); otherwise, or when its timestamp does
    not parse, to its ingest date. Shared by the case-events transform and the landing
    sensor (both read timestamps by the same declared rule), so the sensor requests exactly
    the partitions whose rows a file changes.
    """
    ts = (parsed or parse_timestamps(event_ts, rule)).utc
    if ingest_date.dtype == np.dtype("datetime64[ns]"):
        ingest = ingest_date  # pd.to_datetime of it would cost a Python pass
    else:
        ingest = pd.to_datetime(ingest_date).astype("datetime64[ns]")
    ts.index = ingest.index
    lateness = pd.Timedelta(days=lateness_days)
    if timezone == "UTC" and isinstance(ts.dtype, pd.DatetimeTZDtype):
        # The UTC day of an instant is its nanoseconds floored to a day: no calendar pass.
        nanos = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("ns").asi8
        present = nanos != np.iinfo(np.int64).min
        day_ns = 86_400 * 1_000_000_000
        floored = np.where(present, nanos // day_ns * day_ns, nanos)
        event_day = pd.Series(floored.view("datetime64[ns]"), index=ingest.index)
    else:
        event_day = ts.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
        event_day = event_day.astype("datetime64[ns]")
    in_horizon = ts.notna() & (event_day <= ingest) & (event_day >= ingest - lateness)
    return event_day.where(in_horizon, ingest), in_horizon


@dataclass(frozen=True)
class UpstreamRelation:
    """Published upstream partitions [first, last], read where they are stored.

    What a dataset declared with `upstream_as="relation"` receives for each upstream instead
    of a pandas frame: `run_sql` reads it inside the warehouse, so the rows are never copied
    into Python. `conn` holds one open transaction, so the input boundary's run ids, the
    transform and the gate's control totals all read the same snapshot of the upstream.
    """

    dataset: str
    conn: Any  # duckdb.DuckDBPyConnection, inside BEGIN TRANSACTION
    #: SQL of the published rows of the window: contract columns plus run_id and as_of.
    source: str
    columns: tuple[str, ...]
    partition_column: str
    first: date
    last: date

    def select(self) -> str:
        """The rows as the transform sees them: contract columns, no provenance."""
        cols = ", ".join(_ident(c) for c in self.columns)
        return f"SELECT {cols} FROM ({self.source}) AS up"

    @cached_property
    def partitions(self) -> pd.DataFrame:
        """Rows and distinct run ids per upstream partition date (one scan, cached)."""
        pcol = _ident(self.partition_column)
        frame = self.conn.execute(
            f"SELECT {pcol}::DATE AS partition, count(*) AS rows, "
            "list(DISTINCT run_id ORDER BY run_id) FILTER (run_id IS NOT NULL) AS run_ids "
            f"FROM ({self.source}) AS up WHERE {pcol} IS NOT NULL GROUP BY ALL ORDER BY 1"
        ).df()
        frame["partition"] = pd.to_datetime(frame["partition"]).dt.date
        return frame

    def __len__(self) -> int:
        return int(self.partitions["rows"].sum())

    def run_ids(self, first: date | None = None, last: date | None = None) -> tuple[str, ...]:
        """Distinct run ids of the rows of partitions [first, last] (all by default)."""
        parts = self.partitions
        mask = np.ones(len(parts), dtype=bool)
        if first is not None:
            mask &= (parts["partition"] >= first).to_numpy()
        if last is not None:
            mask &= (parts["partition"] <= last).to_numpy()
        ids: set[str] = set()
        for values in parts.loc[mask, "run_ids"]:
            if values is not None:
                ids.update(str(v) for v in values)
        return tuple(sorted(ids))

    def rows(self, first: date, last: date) -> int:
        parts = self.partitions
        mask = (parts["partition"] >= first) & (parts["partition"] <= last)
        return int(parts.loc[mask, "rows"].sum())

    def totals(
        self,
        column: str | None,
        filters: tuple[tuple[str, str], ...] = (),
        *,
        monthly: bool = False,
    ) -> dict[date, float]:
        """sum(column) (count(*) when None) per partition date, or per month start, of the
        rows whose `filters` columns equal the given values: a control total's input side."""
        if column is None and not filters and not monthly:
            # A row count per partition: the snapshot's partition summary already has it.
            parts = self.partitions
            return {d: float(n) for d, n in zip(parts["partition"], parts["rows"], strict=True)}
        pcol = _ident(self.partition_column)
        day = f"date_trunc('month', {pcol}::DATE)::DATE" if monthly else f"{pcol}::DATE"
        value = f"sum({_ident(column)})" if column else "count(*)"
        where = " AND ".join(f"{_ident(c)} = ?" for c, _ in filters) or "true"
        rows = self.conn.execute(
            f"SELECT {day} AS d, {value} FROM ({self.source}) AS up "
            f"WHERE {where} AND {pcol} IS NOT NULL GROUP BY 1",
            [v for _, v in filters],
        ).fetchall()
        return {pd.Timestamp(d).date(): float(v or 0) for d, v in rows}

    def df(self) -> pd.DataFrame:
        """The rows as a pandas frame, for code that needs one (costs the copy this avoids)."""
        return self.conn.execute(self.select()).df()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_sql(query: str, **relations: pd.DataFrame | UpstreamRelation) -> pd.DataFrame:
    """Run a SQL transform over its inputs (session time zone UTC).

    Each keyword names a relation the query reads (`FROM case_events`): a plain frame, or an
    UpstreamRelation (published upstream rows). With frames only the query runs in an
    in-memory DuckDB; with an UpstreamRelation it runs in the warehouse, inside the
    relation's snapshot, with the frames registered beside it, and the upstream rows never
    leave DuckDB. Either way it is a pure function: same inputs, same rows out, testable
    with plain frames and no warehouse; DuckDB runs the joins, sorts and aggregates
    columnar and on every core.
    """
    import duckdb  # imported here: pandas-only transforms need no DuckDB at import time

    in_warehouse = [r for r in relations.values() if isinstance(r, UpstreamRelation)]
    if not in_warehouse:
        with duckdb.connect() as conn:
            conn.execute("SET TimeZone = 'UTC'")
            for name, frame in relations.items():
                conn.register(name, frame)
            return conn.execute(query).df()
    conn = in_warehouse[0].conn
    if any(r.conn is not conn for r in in_warehouse):
        raise ValueError("run_sql: upstream relations of different warehouse connections")
    zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    conn.execute("SET TimeZone = 'UTC'")
    made: list[tuple[str, bool]] = []
    try:
        for name, rel in relations.items():
            if isinstance(rel, UpstreamRelation):
                conn.execute(f"CREATE OR REPLACE TEMP VIEW {_ident(name)} AS {rel.select()}")
                made.append((name, True))
            else:
                conn.register(name, rel)
                made.append((name, False))
        return conn.execute(query).df()
    finally:
        for name, is_view in made:
            if is_view:
                conn.execute(f"DROP VIEW IF EXISTS temp.main.{_ident(name)}")
            else:
                conn.unregister(name)
        conn.execute(f"SET TimeZone = '{zone}'")
