"""What a landing-zone change means: which partitions it touches and how each is handled.

Pure (no Dagster): the landing sensor feeds it the files it sees and the cursor it kept, and
gets back the partitions to recompute, each with its correction class (spec section 12):

- open_window: the next run of the daily lookback schedule recomputes the date anyway, so
  nothing is requested now (only when that schedule is running; else it is a lookback date);
- lookback: a late file or a correction for an earlier, still open date: the affected
  partitions are recomputed now;
- closed_period: the date lies in a month whose certified report is closed: no automatic
  replace; a restatement is requested that is held for manual review.

Files are compared by sha256, not mtime: a file rewritten with the same bytes is no change,
a file whose bytes changed is, whatever its timestamp says. A deleted file changes the dates
it used to carry, which the cursor remembers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.adapters.landing import LandingReadError, read_landing_files, scan_landing_zone
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.boundaries import LandingFile
from ecm_assets.contracts.dataset import DatasetContract, LandingSource
from ecm_assets.contracts.quality import TimestampRule
from ecm_assets.contracts.transform import attribute_partitions

OPEN_WINDOW = "open_window"
LOOKBACK = "lookback"
CLOSED_PERIOD = "closed_period"
#: Business-day time of the daily lookback schedule's tick (its cron is "0 1 * * *").
SCHEDULE_TICK = time(1, 0)


@dataclass(frozen=True)
class SeenFile:
    """What the cursor remembers of a file: its bytes' hash and the partitions it fed."""

    sha256: str
    dates: tuple[date, ...]


@dataclass(frozen=True)
class FileChange:
    path: str
    kind: str  # new, changed, deleted
    dates: tuple[date, ...]
    note: str = ""


def load_cursor(text: str | None) -> dict[str, SeenFile]:
    if not text:
        return {}
    raw = json.loads(text)
    return {
        path: SeenFile(sha, tuple(date.fromisoformat(d) for d in dates))
        for path, (sha, dates) in raw.get("files", {}).items()
    }


def load_sequence(text: str | None) -> int:
    """How many change events the cursor has seen: the next one is numbered one higher."""
    if not text:
        return 0
    return int(json.loads(text).get("sequence", 0))


def dump_cursor(seen: Mapping[str, SeenFile], sequence: int = 0) -> str:
    return json.dumps(
        {
            "files": {
                p: [f.sha256, [d.isoformat() for d in f.dates]] for p, f in sorted(seen.items())
            },
            "sequence": sequence,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class PublishedIndex:
    """Business key -> partition of the published rows (the dataset's own table): where a
    re-sent row lives now, so a file that moves it to another date also requests the date
    it leaves, and that partition's run drops the superseded row."""

    database: str | Path  # a DuckDB path or a postgresql:// URL
    contract: DatasetContract

    @property
    def key_column(self) -> str | None:
        keys = [k for k in self.contract.business_key if k != self.contract.partition_column]
        return keys[0] if len(keys) == 1 else None

    def _probe(
        self, keys: pd.Series, ingest: pd.Series, select: str, condition: str, days: int
    ) -> list[tuple]:
        """`SELECT {select}` over the published rows holding one of `keys`, joined to each
        key's ingest date as `p`, WHERE `condition` (t: the table); [] without a table."""
        warehouse = open_warehouse(self.database)
        if self.key_column is None or keys.empty or not warehouse.exists():
            return []
        # The probe travels as two array parameters zipped by unnest: portable SQL (DuckDB
        # and PostgreSQL), no DataFrame registered on the connection.
        probe_keys = keys.astype(str).tolist()
        probe_ingest = [d.date() for d in pd.to_datetime(ingest)]
        table = f"{quote_ident(self.contract.schema)}.{quote_ident(self.contract.name)}"
        key, part = quote_ident(self.key_column), quote_ident(self.contract.partition_column)
        with warehouse.connect(read_only=True, timeout_seconds=10) as conn:
            exists = conn.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = ? AND table_name = ?",
                [self.contract.schema, self.contract.name],
            ).fetchone()[0]
            if not exists:
                return []
            return conn.execute(
                f"SELECT {select.format(part=part)} FROM {table} t "
                "JOIN (SELECT unnest(?::VARCHAR[]) AS k, unnest(?::DATE[]) AS ingest) p "
                f"ON CAST(t.{key} AS VARCHAR) = p.k WHERE {condition.format(part=part)}",
                [probe_keys, probe_ingest, days],
            ).fetchall()

    def superseded_dates(self, keys: pd.Series, ingest: pd.Series, lateness_days: int) -> set[date]:
        """Published partitions holding one of `keys` whose run still reads a file of that
        ingest date (ingest <= partition + lateness): those rows are superseded by it."""
        rows = self._probe(
            keys,
            ingest,
            "DISTINCT t.{part}",
            "p.ingest::DATE <= t.{part} + ?::INTEGER",
            lateness_days,
        )
        return {r[0] for r in rows}

    def stays(self, keys: pd.Series, ingest: pd.Series, lateness_days: int) -> int:
        """How many of `keys` are published on a date whose run can no longer read a file of
        that ingest date: those rows stay, and the resend is quarantined (contracts/moves.py)."""
        rows = self._probe(
            keys,
            ingest,
            "count(DISTINCT p.k)",
            "p.ingest::DATE > t.{part} + ?::INTEGER",
            lateness_days,
        )
        return int(rows[0][0]) if rows else 0


def file_dates(
    root: Path,
    source: LandingSource,
    file: LandingFile,
    timezone: str = "UTC",
    time_rule: TimestampRule | None = None,
    index: PublishedIndex | None = None,
) -> tuple[tuple[date, ...], str]:
    """The partitions a file's rows belong to, by the same attribution the transform uses,
    plus (with `index`) the partitions of the published rows its valid rows supersede.

    A file that cannot be read at all feeds its ingest date: the run for that date fails on
    it with an error naming the file, which is how the operator learns of it. A row whose
    timestamp does not parse supersedes nothing (the transform rejects it), so it adds no
    date of another row.
    """
    if source.time_column is None:
        return (file.ingest_date,), "no time column: ingest date"
    key = index.key_column if index is not None else None
    columns = [source.time_column, *([key] if key and key != source.time_column else [])]
    try:
        rows = read_landing_files(root, [file], columns)
    except LandingReadError as exc:
        return (file.ingest_date,), f"unreadable ({exc}); its ingest date fails on it"
    if rows.empty:
        return (file.ingest_date,), "no rows"
    partition, in_horizon = attribute_partitions(
        rows[source.time_column],
        rows["_ingest_date"],
        source.lateness_days,
        timezone,
        time_rule,
    )
    days = {d.date() for d in pd.to_datetime(partition).dropna()}
    note = ""
    if index is not None and key:
        valid = in_horizon & rows["_parse_error"].isna() & rows[key].notna()
        keys, ingest = rows.loc[valid, key], rows.loc[valid, "_ingest_date"]
        days |= index.superseded_dates(keys, ingest, source.lateness_days)
        stays = index.stays(keys, ingest, source.lateness_days)
        if stays:
            note = (
                f"{stays} event(s) re-sent later than the lateness window of the date they are "
                "published on: they stay there, and the resend is quarantined as "
                "event_published_on_other_date"
            )
    return tuple(sorted(days) or [file.ingest_date]), note


def scan(
    root: Path,
    source: LandingSource,
    seen: Mapping[str, SeenFile],
    timezone: str = "UTC",
    time_rule: TimestampRule | None = None,
    index: PublishedIndex | None = None,
) -> tuple[list[FileChange], dict[str, SeenFile]]:
    """New, changed and deleted files since `seen`, and what to remember now; timestamps
    are read by the dataset's declared `time_rule`, as the transform reads them. With
    `index`, a file's dates include those of the published rows it supersedes."""
    listing = scan_landing_zone(root, source.name, date.min, date.max)
    current = {f.path: f for f in listing.files}
    changes: list[FileChange] = []
    remembered: dict[str, SeenFile] = {}
    # Names not read are reported once (and again if their reason changes): an ignored name
    # touches no partition; a refused entry (a symlink out of the root) is never read, and
    # requests its ingest date, whose run fails naming it.
    skipped = [("ignored", e) for e in listing.ignored] + [("refused", e) for e in listing.refused]
    for kind, entry in skipped:
        marker = f"{kind}:{entry.reason}"
        dates = (entry.ingest_date,) if kind == "refused" and entry.ingest_date else ()
        before = seen.get(entry.path)
        remembered[entry.path] = SeenFile(marker, dates)
        if before is None or before.sha256 != marker:
            changes.append(FileChange(entry.path, kind, dates, entry.reason))
    for path, f in current.items():
        before = seen.get(path)
        if before is not None and before.sha256 == f.sha256:
            remembered[path] = before
            continue
        dates, note = file_dates(root, source, f, timezone, time_rule, index)
        kind = "new" if before is None else "changed"
        if before is not None:  # a changed file also changes the dates it used to feed
            dates = tuple(sorted(set(dates) | set(before.dates)))
        changes.append(FileChange(path, kind, dates, note))
        remembered[path] = SeenFile(f.sha256, dates)
    for path, before in seen.items():
        if path not in current and path not in remembered:
            changes.append(FileChange(path, "deleted", before.dates))
    return changes, remembered


def next_schedule_date(now: datetime, timezone: str = "UTC") -> date:
    """The business date (in `timezone`) of the daily schedule's next tick at or after `now`."""
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive; pass an aware datetime")
    local = now.astimezone(ZoneInfo(timezone))
    return local.date() if local.time() < SCHEDULE_TICK else local.date() + timedelta(days=1)


def classify(
    day: date,
    *,
    now: datetime,
    lookback_days: int,
    closed_months: Iterable[date],
    schedule_running: bool,
    timezone: str = "UTC",
) -> str:
    """The correction class of a changed partition (see the module docstring)."""
    if day.replace(day=1) in set(closed_months):
        return CLOSED_PERIOD
    next_tick = next_schedule_date(now, timezone)
    if schedule_running and day >= next_tick - timedelta(days=lookback_days):
        return OPEN_WINDOW
    return LOOKBACK


def change_digest(changes: Iterable[FileChange], seen: Mapping[str, SeenFile]) -> str:
    """A stable id of a set of changes: the same files with the same bytes give the same id.

    Not unique over time (a file flipped back to earlier bytes repeats it): run keys pair it
    with the cursor's change sequence (`change_run_key`)."""
    parts = sorted(
        f"{c.kind}:{c.path}:{seen[c.path].sha256 if c.path in seen else '-'}" for c in changes
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def change_run_key(sequence: int, digest: str) -> str:
    """The id of one change event: the cursor's sequence number, then the changed bytes.

    Dagster launches a run key once and silently drops a repeat. The sequence is counted in
    the cursor, which Dagster saves with the tick's requests, so the same tick evaluated again
    (a crash before the cursor was saved) gives the same key, and every later change event,
    even one that restores bytes seen before, gives a new one.
    """
    return f"{sequence}:{digest}"
