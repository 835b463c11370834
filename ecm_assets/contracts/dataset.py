"""The dataset contract: the one place a dataset's schema, partitioning and publish mode live.

Everything downstream (staging DDL, the owned-boundary check, input loading, the business
checksum) is derived from the contract, so adding a dataset never touches IO or orchestration.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ecm_assets.contracts.quality import NO_QUALITY, QualityContract

Grain = Literal["hourly", "daily", "monthly", "list", "hash"]
#: Time grains: partitions are periods of the business calendar, from start to end.
TIME_GRAINS = ("hourly", "daily", "monthly")
#: Static kinds: a fixed set of keys (seed 000's list and hash partitioning).
STATIC_GRAINS = ("list", "hash")
#: The partition column's SQL type per grain.
PARTITION_SQL_TYPES = {
    "hourly": "TIMESTAMP",
    "daily": "DATE",
    "monthly": "DATE",
    "list": "VARCHAR",
    "hash": "VARCHAR",
}
#: Key column types whose text is the same in Python (str) and DuckDB (CAST AS VARCHAR).
HASH_KEY_TYPES = ("VARCHAR", "TEXT", "STRING", "BIGINT", "INTEGER", "SMALLINT", "TINYINT")
#: The text form of an hourly partition key (Dagster's HourlyPartitionsDefinition format).
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"
#: Substrings Dagster refuses in a partition key.
_BAD_KEY_PARTS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
PublishMode = Literal["replace", "versioned"]

#: Columns the publish protocol adds to every published row. They are provenance, never
#: business data, so they are excluded from the business checksum.
PROVENANCE_COLUMNS: tuple[tuple[str, str], ...] = (("run_id", "VARCHAR"), ("as_of", "TIMESTAMPTZ"))


class PartitioningError(ValueError):
    """A contract's partitioning (start, end, timezone, grain) is not a valid declaration."""


class PartitionKeyError(ValueError):
    """A partition key is not one of the dataset's partitions; the message names the range."""


class ZonedHour(datetime):
    """An hourly partition value: the UTC instant of the hour's start, naive, exactly as the
    TIMESTAMP partition column stores it (so it compares, hashes and binds as that datetime),
    knowing the contract's zone so that its key is the zone's wall-clock hour. Unambiguous
    where wall-clock hours are not: the two 01:00 hours of a fall-back night are two instants.
    Subclasses per zone (`hour_type`) keep the zone through datetime arithmetic."""

    zone: str = "UTC"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (_zoned_hour, (self.zone, self.replace(tzinfo=None).isoformat()))


@cache
def hour_type(zone: str) -> type[ZonedHour]:
    """The ZonedHour class of one IANA zone."""
    return type(f"ZonedHour[{zone}]", (ZonedHour,), {"zone": zone})


def _zoned_hour(zone: str, iso: str) -> ZonedHour:
    at = datetime.fromisoformat(iso)
    return hour_type(zone)(*at.timetuple()[:6])


def hour_key(utc_start: datetime, zone: str) -> str:
    """Dagster's HourlyPartitionsDefinition key of the hour starting at `utc_start` (naive
    UTC): the zone's wall-clock hour; the second of two equal wall-clock hours (the repeated
    fall-back hour) carries its UTC offset, as Dagster names it ("2026-11-01-01:00-0500")."""
    local = utc_start.replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    key = local.strftime(HOUR_KEY_FORMAT)
    return key + local.strftime("%z") if local.fold else key


def hour_from_key(key: str, zone: str) -> ZonedHour | None:
    """The hour whose key (hour_key) is `key` in `zone`, or None: not an hour key, or a
    wall-clock hour the zone skips (spring-forward)."""
    hour = None
    if isinstance(key, str) and len(key) in (16, 21):
        try:
            hour = datetime.strptime(key[:16], HOUR_KEY_FORMAT)
        except ValueError:
            hour = None
    if hour is None or hour.minute:
        return None
    for fold in (0, 1):
        at = hour.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)
        utc = at.replace(tzinfo=None)
        if hour_key(utc, zone) == key:
            return hour_type(zone)(*utc.timetuple()[:6])
    return None


#: A partition column value: a date (daily, monthly), the hour's start as a ZonedHour (the
#: naive UTC instant; hourly), or the key itself (list, hash).
PartitionValue = date | datetime | str


def partition_key(value: PartitionValue) -> str:
    """The partition key of a partition value: what Dagster, the CLI and the ledger name it.
    A plain naive datetime is read as a UTC hour."""
    if isinstance(value, ZonedHour):
        return hour_key(value, value.zone)
    if isinstance(value, datetime):
        return value.strftime(HOUR_KEY_FORMAT)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def hash_bucket(key: Any, buckets: int) -> int:
    """The bucket of one key value: the first 8 bytes of sha256 of its UTF-8 text, read as a
    big-endian unsigned integer, modulo `buckets`. The same in every process, machine and
    DuckDB version (Python's and DuckDB's hash() are neither); the same rule as ecm sync."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def bucket_sql(expr: str, buckets: int) -> str:
    """DuckDB SQL giving hash_bucket(expr, buckets) as a padded partition key."""
    width = len(str(buckets - 1))
    return (
        f"lpad(CAST(CAST(('0x' || left(sha256(CAST({expr} AS VARCHAR)), 16)) AS UBIGINT) "
        f"% {int(buckets)} AS VARCHAR), {width}, '0')"
    )


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
    #: grain="list": the partition keys, a fixed set of categories (e.g. regions); the
    #: partition column (VARCHAR) holds one of them.
    partition_values: tuple[str, ...] = ()
    #: grain="hash": the column whose value decides a row's bucket, and how many buckets.
    #: The partition column (VARCHAR) holds the bucket key, hash_bucket(key, N) zero-padded.
    hash_key: str | None = None
    hash_buckets: int | None = None

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
        wanted = self.partition_sql_type
        if partition.sql_type.upper() != wanted or partition.nullable:
            raise ValueError(
                f"contract {self.name}: partition column {partition.name!r} must be {wanted} "
                f"NOT NULL ({self.grain} partitions)"
            )
        if self.grain == "hash":
            if self.hash_key not in names:
                raise PartitioningError(
                    f"contract {self.name}: hash_key {self.hash_key!r} is not a declared column"
                )
            key = self.column(self.hash_key)
            if key.sql_type.upper() not in HASH_KEY_TYPES or key.nullable:
                raise PartitioningError(
                    f"contract {self.name}: hash_key {key.name!r} is {key.sql_type}"
                    f"{'' if key.nullable is False else ' (nullable)'}; it must be NOT NULL and "
                    f"one of {', '.join(HASH_KEY_TYPES)}, whose text is the same in every engine"
                )
        if self.is_static and self.reference:
            raise PartitioningError(
                f"contract {self.name}: reference snapshots are pinned per business date, and "
                f"{self.grain} partitions have none; join the reference in a time-partitioned "
                "upstream dataset"
            )
        lookback = [u.dataset for u in self.upstream if u.lookback_partitions]
        if lookback and self.grain not in ("daily", "monthly"):
            raise PartitioningError(
                f"contract {self.name}: lookback_partitions (on {lookback}) needs daily or "
                f"monthly partitions, not {self.grain}"
            )
        if self.landing is not None and self.grain not in ("daily", "monthly"):
            raise PartitioningError(
                f"contract {self.name}: reads landing files, so it must be daily or monthly "
                f"(landing files are attributed to business dates), not {self.grain}; stage the "
                "rows in a daily dataset and partition a downstream dataset by hour, list or hash"
            )

    def _validate_partitioning(self) -> None:
        grains = (*TIME_GRAINS, *STATIC_GRAINS)
        if self.grain not in grains:
            raise PartitioningError(
                f"contract {self.name}: grain={self.grain!r}; use one of {', '.join(grains)}"
            )
        if self.grain in STATIC_GRAINS:
            self._validate_static()
            return
        if self.partition_values or self.hash_key is not None or self.hash_buckets is not None:
            raise PartitioningError(
                f"contract {self.name}: partition_values, hash_key and hash_buckets belong to "
                f"grain='list' or 'hash', not {self.grain!r}"
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

    def _validate_static(self) -> None:
        """List and hash partitions: a fixed set of keys, no calendar."""
        where = f"contract {self.name}: {self.grain} partitions"
        for what, value, default in (
            ("start", self.start, None),
            ("end", self.end, None),
            ("timezone", self.timezone, "UTC"),
        ):
            if value != default:
                raise PartitioningError(f"{where} have no calendar; remove {what}={value!r}")
        if self.grain == "list":
            if self.hash_key is not None or self.hash_buckets is not None:
                raise PartitioningError(f"{where} take partition_values, not hash_key/buckets")
            values = self.partition_values
            if isinstance(values, str) or not values:
                raise PartitioningError(
                    f"{where} need partition_values, a non-empty tuple of keys "
                    "(e.g. ('north', 'south'))"
                )
            bad = [
                v
                for v in values
                if not isinstance(v, str)
                or not v
                or v != v.strip()
                or any(part in v for part in _BAD_KEY_PARTS)
            ]
            if bad:
                raise PartitioningError(
                    f"{where}: keys {bad[:5]!r} are not valid (non-empty text, no surrounding "
                    "blanks, no '...' or control characters)"
                )
            seen: set[str] = set()
            dupes = sorted({v for v in values if v in seen or seen.add(v)})
            if dupes:
                raise PartitioningError(f"{where}: duplicate partition_values {dupes}")
            return
        if self.partition_values:
            raise PartitioningError(f"{where} take hash_key and hash_buckets, not partition_values")
        if not self.hash_key:
            raise PartitioningError(
                f"{where} need hash_key, the column whose value decides a row's bucket"
            )
        n = self.hash_buckets
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PartitioningError(f"{where} need hash_buckets, a whole number >= 1 (got {n!r})")

    @property
    def is_static(self) -> bool:
        """List or hash partitions: a fixed set of keys with no calendar."""
        return self.grain in STATIC_GRAINS

    @property
    def partition_sql_type(self) -> str:
        """The SQL type of the partition column (DATE, TIMESTAMP or VARCHAR)."""
        return PARTITION_SQL_TYPES.get(self.grain, "DATE")

    @property
    def static_keys(self) -> tuple[str, ...]:
        """The partition keys of a list or hash dataset, in order; () for time partitions."""
        if self.grain == "list":
            return tuple(self.partition_values)
        if self.grain == "hash":
            n = int(self.hash_buckets or 0)
            width = len(str(n - 1))
            return tuple(str(i).zfill(width) for i in range(n))
        return ()  # time partitions: no fixed set of keys

    def bucket_of(self, key: Any) -> str:
        """The hash partition key of one hash_key value (grain='hash')."""
        return self.static_keys[hash_bucket(key, int(self.hash_buckets or 0))]

    def buckets_of(self, keys: Iterable[Any]) -> list[str]:
        """The hash partition key of each hash_key value, in order (grain='hash')."""
        ids, n = self.static_keys, int(self.hash_buckets or 0)
        return [ids[hash_bucket(k, n)] for k in keys]

    def values_of(self, column: Any) -> list[PartitionValue]:
        """The partition value of each entry of a pandas Series of partition column values
        (dates, timestamps or keys, as a transform writes them), in order; None for nulls."""
        import pandas as pd

        series = pd.Series(column)
        if self.is_static:
            return [None if pd.isna(v) else str(v) for v in series.tolist()]
        if self.grain == "hourly":
            # Stored hours are UTC instants: aware values (any offsets, mixed) are converted,
            # naive ones are UTC already.
            stamps = pd.to_datetime(series, utc=True).dt.tz_localize(None)
            return [None if pd.isna(t) else self.hour(t.to_pydatetime()) for t in stamps]
        stamps = pd.to_datetime(series)
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert(self.timezone).dt.tz_localize(None)
        days = stamps.dt.date
        return days.astype(object).where(stamps.notna(), None).tolist()

    def partition_key_sql(self, expr: str) -> str:
        """DuckDB SQL giving the partition key (text) of a partition column expression."""
        if self.grain == "hourly":
            if self.timezone in ("UTC", "Etc/UTC", "Etc/GMT", "GMT"):
                return f"strftime({expr}, '{HOUR_KEY_FORMAT}')"
            return _hour_key_sql(expr, self.timezone)
        if self.is_static:
            return expr
        return f"CAST({expr} AS VARCHAR)"

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
        if self.grain == "list":
            return f"list of {len(self.partition_values)}: {', '.join(self.partition_values)}"
        if self.grain == "hash":
            keys = self.static_keys
            return f"hash buckets of {self.hash_key}: {keys[0]}..{keys[-1]} ({len(keys)})"
        if self.grain == "hourly":
            first = self.start_date.isoformat() if self.start is not None else "?"
            last = self.end_date.isoformat() if self.end is not None else "open end"
            return (
                f"hourly {first}-00:00..{last + '-23:00' if self.end is not None else last} "
                f"(YYYY-MM-DD-HH:00 wall-clock hours of {self.timezone}; a repeated "
                "daylight-saving hour's second key ends in its UTC offset, e.g. -0500)"
            )
        first = self.start_date.isoformat() if self.start is not None else "?"
        last = self.end_date.isoformat() if self.end is not None else "open end"
        every = "a month start" if self.grain == "monthly" else "every day"
        return f"{self.grain} {first}..{last} ({every}, YYYY-MM-DD, {self.timezone})"

    def partition_value(self, partition_key: str) -> PartitionValue:
        """The partition column value a Dagster partition key owns; the whole key must be one
        of this dataset's partitions (nothing after the date, inside start..end)."""
        if self.is_static:
            if not isinstance(partition_key, str) or partition_key not in self.static_keys:
                raise PartitionKeyError(
                    f"dataset {self.name}: partition key {partition_key!r} is not a partition; "
                    f"valid: {self.describe_partitions()}"
                )
            return partition_key
        if self.grain == "hourly":
            return self._hour_value(partition_key)
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

    def hour(self, utc_start: datetime) -> ZonedHour:
        """The hourly partition value of the hour starting at `utc_start` (naive UTC)."""
        return hour_type(self.timezone)(*utc_start.timetuple()[:6])

    def _hour_value(self, partition_key: str) -> ZonedHour:
        """Key -> the UTC instant of the hour's start: the key's wall-clock hour in the
        contract's zone whose own key it is (the two fall-back 01:00 hours are told apart by
        the second one's offset suffix; a skipped spring-forward hour has no key)."""
        found = hour_from_key(partition_key, self.timezone)
        hour = found.replace(tzinfo=UTC).astimezone(ZoneInfo(self.timezone)) if found else None
        if found is None:
            skipped = ""
            try:
                wall = datetime.strptime(str(partition_key), HOUR_KEY_FORMAT)
            except ValueError:
                wall = None
            if wall is not None and not wall.minute:
                back = wall.replace(tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)
                if hour_key(back.replace(tzinfo=None), self.timezone) != partition_key:
                    skipped = f" ({self.timezone} skips that wall-clock hour: daylight saving)"
            raise PartitionKeyError(
                f"dataset {self.name}: partition key {partition_key!r} is not a partition"
                f"{skipped}; valid: {self.describe_partitions()}"
            )
        start = _iso_date(self.name, "start", self.start)
        end = self.end_date
        day = hour.date()  # the wall-clock date in the contract's zone
        if (start is not None and day < start) or (end is not None and day > end):
            raise PartitionKeyError(
                f"dataset {self.name}: partition {partition_key} is outside its partitions; "
                f"valid: {self.describe_partitions()}"
            )
        return found

    def as_partition(self, value: Any) -> Any:
        """A partition column value read back from the warehouse as this contract's partition
        value: an hour becomes a ZonedHour (named in the contract's zone); others as they are."""
        if self.grain == "hourly" and isinstance(value, datetime):
            return self.as_hour(value)
        return value

    def as_hour(self, value: datetime) -> ZonedHour:
        """An hourly partition value of this contract from a datetime given by a caller: a
        naive one is the UTC start of the hour (as stored), an aware one is converted."""
        if isinstance(value, ZonedHour) and value.zone == self.timezone:
            return value
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return self.hour(value)

    def local_date(self, hour: datetime) -> date:
        """The business date (in the contract's zone) of an hourly partition value."""
        return hour.replace(tzinfo=UTC).astimezone(ZoneInfo(self.timezone)).date()


def _hour_key_sql(expr: str, zone: str) -> str:
    """DuckDB SQL of hour_key(expr, zone) for a TIMESTAMP of UTC instants (needs ICU)."""
    z = zone.replace("'", "''")

    def local(e: str) -> str:
        return f"timezone('{z}', timezone('UTC', {e}))"

    minutes = f"CAST(epoch({local(expr)} - {expr}) // 60 AS BIGINT)"
    suffix = (
        f"(CASE WHEN {minutes} < 0 THEN '-' ELSE '+' END || "
        f"lpad(CAST(abs({minutes}) // 60 AS VARCHAR), 2, '0') || "
        f"lpad(CAST(abs({minutes}) % 60 AS VARCHAR), 2, '0'))"
    )
    # The wall clock advanced less than an hour over the last hour: this wall-clock hour
    # was already shown (fall-back), so this is the repeated hour's second key.
    repeated = f"({local(expr)} - {local(f'({expr} - INTERVAL 1 HOUR)')}) < INTERVAL 1 HOUR"
    return (
        f"(strftime({local(expr)}, '{HOUR_KEY_FORMAT}') || "
        f"CASE WHEN {repeated} THEN {suffix} ELSE '' END)"
    )


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
        if self.upstream_as == "relation" and self.contract.grain not in ("daily", "monthly"):
            raise PartitioningError(
                f"dataset {self.contract.name}: upstream_as='relation' reads upstream by date "
                f"range; {self.contract.grain} datasets read their upstream as frames"
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
