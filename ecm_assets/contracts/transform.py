"""What a pure transform receives and returns; no Dagster, no IO."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

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


def parse_timestamps(values: pd.Series, rule: TimestampRule | None = None) -> ParsedTimestamps:
    """RFC 3339 / ISO 8601 text as UTC instants, vectorized.

    A lowercase `t` or `z` is valid RFC 3339. A value without a zone is read in the rule's
    source_zone when it declares one, else as UTC (the gate's TimestampRule then decides
    whether such a value is data). A date-time whose year lies outside the rule's range is
    `year_out_of_range`, anything else that is not an instant `unparseable`.
    """
    index = values.index
    ts = pd.Series(pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601"), index=index)
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
    ingest = pd.to_datetime(ingest_date).astype("datetime64[ns]")
    ts.index = ingest.index
    event_day = ts.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    event_day = event_day.astype("datetime64[ns]")
    lateness = pd.Timedelta(days=lateness_days)
    in_horizon = ts.notna() & (event_day <= ingest) & (event_day >= ingest - lateness)
    return event_day.where(in_horizon, ingest), in_horizon
