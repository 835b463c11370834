"""Input boundaries: the exact files, upstream partitions and reference versions a run reads.

A boundary is fixed (locked) before compute and recorded with the output, so a rerun or a
backfill can prove it recomputed the same truth.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from ecm_assets.contracts.dataset import PartitionValue, hour_from_key, partition_key


@dataclass(frozen=True)
class LandingFile:
    """One landing file as it was when the boundary was locked."""

    path: str
    ingest_date: date
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class IgnoredLandingEntry:
    """A landing-zone name the boundary did not read (`*.CSV`, `notes.txt`), and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class ReferenceBinding:
    """A pinned reference-data snapshot and the temporal policy that chose it."""

    name: str
    version: str
    published_on: date
    sha256: str
    policy: str


@dataclass(frozen=True)
class ReferenceSnapshot:
    """One pinned reference snapshot, loaded: what a transform receives per business date."""

    binding: ReferenceBinding
    data: Any


@dataclass(frozen=True)
class UpstreamRead:
    """Which upstream partitions were read and which runs had published them."""

    dataset: str
    first_partition: PartitionValue
    last_partition: PartitionValue
    rows: int
    run_ids: tuple[str, ...]
    #: The keys read, for a list or hash upstream (whose keys between first and last are
    #: not all read); empty for time partitions, whose range is contiguous.
    keys: tuple[str, ...] = ()


def partition_from_key(text: str, timezone: str = "UTC") -> PartitionValue:
    """A partition value recorded as its key: a date, an hour (of `timezone`, the dataset's:
    hour keys are its wall-clock hours), else the key itself."""
    try:
        day = date.fromisoformat(text)
    except (TypeError, ValueError):
        day = None
    if day is not None and partition_key(day) == text:
        return day
    hour = hour_from_key(text, timezone)
    return text if hour is None else hour


def _zone_of(dataset: str) -> str:
    """The timezone that names a registered dataset's hours (UTC if it is not registered)."""
    from ecm_assets.contracts.registry import contract_for

    try:
        return contract_for(dataset).timezone
    except KeyError:
        return "UTC"


@dataclass(frozen=True)
class PublishedElsewhere:
    """A business key the run reads that is published now in a partition outside its window:
    the row there, by the file it came from (which orders arrivals). Locked with the input so
    a replay decides the same (contracts/moves.py)."""

    key: str
    partition: date
    source_file: str
    ingest_date: date
    run_id: str


@dataclass(frozen=True)
class InputBoundary:
    """Everything a run reads, fixed at `locked_at` before any compute starts."""

    partitions: tuple[str, ...]
    locked_at: datetime
    landing_files: tuple[LandingFile, ...] = ()
    reference: tuple[ReferenceBinding, ...] = ()
    upstream: tuple[UpstreamRead, ...] = field(default=())
    #: Names in the landing zone that were not read; reported, not part of the snapshot id.
    ignored_landing: tuple[IgnoredLandingEntry, ...] = ()
    #: Keys read that are published on another date, outside the window (the event index).
    published_elsewhere: tuple[PublishedElsewhere, ...] = ()

    @property
    def snapshot_id(self) -> str:
        """A stable id of the content read: identical inputs give the identical id."""
        content = {
            "files": [(f.path, f.sha256) for f in self.landing_files],
            "reference": [(r.name, r.version, r.sha256) for r in self.reference],
            "upstream": [
                (u.dataset, partition_key(u.first_partition), partition_key(u.last_partition))
                + (u.run_ids,)
                + ((u.keys,) if u.keys else ())
                for u in self.upstream
            ],
        }
        if self.published_elsewhere:  # absent from older boundaries: their ids stay the same
            content["published_elsewhere"] = [
                (e.key, e.partition.isoformat(), e.source_file, e.run_id)
                for e in self.published_elsewhere
            ]
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return f"snap-{digest[:16]}"

    def to_json(self) -> dict[str, Any]:
        def encode(value: Any) -> Any:
            if isinstance(value, date | datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: encode(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [encode(v) for v in value]
            return value

        out = {"snapshot_id": self.snapshot_id, **encode(asdict(self))}
        for read, u in zip(out["upstream"], self.upstream, strict=True):
            read["first_partition"] = partition_key(u.first_partition)
            read["last_partition"] = partition_key(u.last_partition)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputBoundary:
        """The boundary a manifest recorded, for a replay of exactly the same inputs."""
        return cls(
            partitions=tuple(data["partitions"]),
            locked_at=datetime.fromisoformat(data["locked_at"]),
            landing_files=tuple(
                LandingFile(
                    f["path"], date.fromisoformat(f["ingest_date"]), f["size_bytes"], f["sha256"]
                )
                for f in data.get("landing_files", [])
            ),
            reference=tuple(
                ReferenceBinding(
                    r["name"],
                    r["version"],
                    date.fromisoformat(r["published_on"]),
                    r["sha256"],
                    r["policy"],
                )
                for r in data.get("reference", [])
            ),
            ignored_landing=tuple(
                IgnoredLandingEntry(e["path"], e["reason"]) for e in data.get("ignored_landing", [])
            ),
            upstream=tuple(
                UpstreamRead(
                    u["dataset"],
                    partition_from_key(u["first_partition"], _zone_of(u["dataset"])),
                    partition_from_key(u["last_partition"], _zone_of(u["dataset"])),
                    u["rows"],
                    tuple(u["run_ids"]),
                    tuple(u.get("keys") or ()),
                )
                for u in data.get("upstream", [])
            ),
            published_elsewhere=tuple(
                PublishedElsewhere(
                    e["key"],
                    date.fromisoformat(e["partition"]),
                    e["source_file"],
                    date.fromisoformat(e["ingest_date"]),
                    e["run_id"],
                )
                for e in data.get("published_elsewhere", [])
            ),
        )
