"""The dataset contract: the one place a dataset's schema, partitioning and publish mode live.

Everything downstream (staging DDL, the owned-boundary check, input loading, the business
checksum) is derived from the contract, so adding a dataset never touches IO or orchestration.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ecm_assets.contracts.quality import NO_QUALITY, QualityContract

Grain = Literal["daily", "monthly"]
PublishMode = Literal["replace", "versioned"]

#: Columns the publish protocol adds to every published row. They are provenance, never
#: business data, so they are excluded from the business checksum.
PROVENANCE_COLUMNS: tuple[tuple[str, str], ...] = (("run_id", "VARCHAR"), ("as_of", "TIMESTAMPTZ"))


class PartitioningError(ValueError):
    """A contract's partitioning (start, end, timezone, grain) is not a valid declaration."""


class PartitionKeyError(ValueError):
    """A partition key is not one of the dataset's partitions; the message names the range."""


def _iso_date(contract: str, what: str, value: str | date | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        parsed = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != value:
        raise PartitioningError(f"contract {contract}: {what}={value!r} is not a YYYY-MM-DD date")
    return parsed


@dataclass(frozen=True)
class Column:
    """A business column with its warehouse type; NOT NULL is enforced in staging."""

    name: str
    sql_type: str
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True)
class Upstream:
    """A dataset this one reads, and how many earlier partitions each partition needs."""

    dataset: str
    lookback_partitions: int = 0
    #: The dependency sensor starts this dataset's partition only when the aligned upstream
    #: partitions (same date, or every day of the month) were published within this many
    #: hours; None: published at all is enough.
    max_age_hours: float | None = None


@dataclass(frozen=True)
class LandingSource:
    """Raw landing files a dataset reads, and how late a file may still carry a business date."""

    name: str
    lateness_days: int
    columns: tuple[str, ...]
    #: The column whose date (in the contract's timezone) is a row's business date, within
    #: lateness_days of its ingest date; the landing sensor reads it to know which partitions
    #: a file touches.
    time_column: str | None = None


@dataclass(frozen=True)
class DatasetContract:
    """Schema, partitioning and publish mode of one partitioned dataset."""

    name: str
    description: str
    columns: tuple[Column, ...]
    partition_column: str
    grain: Grain
    business_key: tuple[str, ...]
    publish_mode: PublishMode = "replace"
    upstream: tuple[Upstream, ...] = ()
    reference: tuple[str, ...] = ()
    landing: LandingSource | None = None
    group: str = "default"
    code_version: str = "1"
    schema: str = "main"
    tags: dict[str, str] = field(default_factory=dict)
    #: First partition (YYYY-MM-DD; a month start for monthly). Required to become an asset:
    #: the partitions start where the data starts.
    start: str | date | None = None
    #: Last partition, inclusive; None: partitions keep coming.
    end: str | date | None = None
    #: IANA name of the zone whose calendar days are the business dates (partition keys,
    #: the landing sensor's date attribution, schedule ticks).
    timezone: str = "UTC"
    #: Who answers for the dataset (Dagster owners: an email or "team:NAME").
    owners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._validate_partitioning()
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"contract {self.name}: duplicate column names in {names}")
        reserved = {name for name, _ in PROVENANCE_COLUMNS} & set(names)
        if reserved:
            raise ValueError(
                f"contract {self.name}: columns {sorted(reserved)} are reserved for provenance"
            )
        for required in (self.partition_column, *self.business_key):
            if required not in names:
                raise ValueError(f"contract {self.name}: column {required!r} is not declared")
        partition = self.column(self.partition_column)
        if partition.sql_type != "DATE" or partition.nullable:
            raise ValueError(
                f"contract {self.name}: partition column {partition.name!r} must be DATE NOT NULL"
            )

    def _validate_partitioning(self) -> None:
        if self.grain not in ("daily", "monthly"):
            raise PartitioningError(
                f"contract {self.name}: grain={self.grain!r}; use 'daily' or 'monthly'"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise PartitioningError(
                f"contract {self.name}: timezone={self.timezone!r} is not an IANA zone name "
                "(e.g. 'UTC', 'Asia/Jakarta')"
            ) from None
        start = _iso_date(self.name, "start", self.start)
        end = _iso_date(self.name, "end", self.end)
        if end is not None and start is None:
            raise PartitioningError(f"contract {self.name}: end={end} needs a start")
        if self.grain == "monthly":
            for what, value in (("start", start), ("end", end)):
                if value is not None and value.day != 1:
                    raise PartitioningError(
                        f"contract {self.name}: monthly {what}={value} is not a month start "
                        f"(use {value.replace(day=1)})"
                    )
        if start is not None and end is not None and end < start:
            raise PartitioningError(f"contract {self.name}: end={end} is before start={start}")

    @property
    def start_date(self) -> date:
        """The first partition; a contract without a start cannot become an asset."""
        start = _iso_date(self.name, "start", self.start)
        if start is None:
            raise PartitioningError(
                f"contract {self.name}: declare where its partitions start, "
                "start='YYYY-MM-DD' (the first business date of its data)"
            )
        return start

    @property
    def end_date(self) -> date | None:
        return _iso_date(self.name, "end", self.end)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def table(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"contract {self.name} has no column {name!r}")

    def describe_partitions(self) -> str:
        """The valid partition keys in words, for error messages."""
        first = self.start_date.isoformat() if self.start is not None else "?"
        last = self.end_date.isoformat() if self.end is not None else "open end"
        every = "a month start" if self.grain == "monthly" else "every day"
        return f"{self.grain} {first}..{last} ({every}, YYYY-MM-DD, {self.timezone})"

    def partition_value(self, partition_key: str) -> date:
        """The partition column value a Dagster partition key owns; the whole key must be one
        of this dataset's partitions (nothing after the date, inside start..end)."""
        value = None
        if isinstance(partition_key, str) and len(partition_key) == 10:
            try:
                value = date.fromisoformat(partition_key)
            except ValueError:
                value = None
        if value is None or value.isoformat() != partition_key:
            raise PartitionKeyError(
                f"dataset {self.name}: partition key {partition_key!r} is not a partition; "
                f"valid: {self.describe_partitions()}"
            )
        if self.grain == "monthly" and value.day != 1:
            raise PartitionKeyError(
                f"dataset {self.name}: monthly partition key {partition_key!r} is not a month "
                f"start; valid: {self.describe_partitions()}"
            )
        start = _iso_date(self.name, "start", self.start)
        end = self.end_date
        if (start is not None and value < start) or (end is not None and value > end):
            raise PartitionKeyError(
                f"dataset {self.name}: partition {partition_key} is outside its partitions; "
                f"valid: {self.describe_partitions()}"
            )
        return value


#: Transform parameters the orchestration layer binds besides upstream and reference names.
BOUND_PARAMETERS = ("window", "landing")


@dataclass(frozen=True)
class Dataset:
    """A contract plus its pure transform: all a new dataset needs to become an asset.

    The transform's parameters are bound by name: `window` (the owned PartitionWindow),
    `landing` (raw rows of the locked landing files), each upstream dataset name (its
    published rows) and each reference name (snapshots pinned per business date).

    `upstream_as="relation"` is for a SQL transform (`run_sql`): each upstream arrives as an
    UpstreamRelation over the published partitions, read inside the warehouse, instead of a
    pandas frame; the same function still takes plain frames in tests and replays.
    """

    contract: DatasetContract
    transform: Callable[..., Any]
    #: The quality gate's rules and their severities; without one only reconciliation runs.
    quality: QualityContract = NO_QUALITY
    #: How upstream rows reach the transform: "frame" (pandas) or "relation" (in DuckDB).
    upstream_as: str = "frame"

    def __post_init__(self) -> None:
        if self.upstream_as not in ("frame", "relation"):
            raise TypeError(
                f"dataset {self.contract.name}: upstream_as must be 'frame' or 'relation', "
                f"not {self.upstream_as!r}"
            )
        bindable = {*BOUND_PARAMETERS, *(u.dataset for u in self.contract.upstream)}
        bindable |= set(self.contract.reference)
        params = inspect.signature(self.transform).parameters
        for name, param in params.items():
            if param.default is not inspect.Parameter.empty:
                continue
            if name not in bindable:
                raise TypeError(
                    f"dataset {self.contract.name}: transform {self.transform.__name__} takes "
                    f"{name!r}, which is neither {BOUND_PARAMETERS} nor an upstream or "
                    f"reference name of the contract ({sorted(bindable - set(BOUND_PARAMETERS))})"
                )
        if "landing" in params and self.contract.landing is None:
            raise TypeError(
                f"dataset {self.contract.name}: transform reads landing files but "
                "the contract declares no landing source"
            )
