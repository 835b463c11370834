"""What a pure transform receives and returns; no Dagster, no IO."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd


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


def attribute_partitions(
    event_ts: pd.Series, ingest_date: pd.Series, lateness_days: int, timezone: str = "UTC"
) -> tuple[pd.Series, pd.Series]:
    """The partition each landing row belongs to, and whether its timestamp is in horizon.

    A row belongs to its event date in `timezone` (the contract's business day) if it arrived
    within `lateness_days` of it (and not before it); otherwise, or when its timestamp does
    not parse, to its ingest date. Shared by the case-events transform and the landing
    sensor, so the sensor requests exactly the partitions whose rows a file changes.
    """
    ts = pd.to_datetime(event_ts, utc=True, errors="coerce", format="ISO8601")
    ingest = pd.to_datetime(ingest_date).astype("datetime64[ns]")
    event_day = ts.dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    event_day = event_day.astype("datetime64[ns]")
    lateness = pd.Timedelta(days=lateness_days)
    in_horizon = ts.notna() & (event_day <= ingest) & (event_day >= ingest - lateness)
    return event_day.where(in_horizon, ingest), in_horizon
