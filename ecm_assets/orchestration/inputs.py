"""Fix a run's input boundary and bind the transform's inputs; shared by runs and replays.

Kept free of Dagster so `ecm replay` recomputes a past run with exactly the code path the
asset used, from the boundary its manifest recorded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from ecm_assets.adapters.landing import read_landing_files, scan_landing_zone
from ecm_assets.adapters.reference import pin_snapshots
from ecm_assets.contracts.boundaries import (
    IgnoredLandingEntry,
    InputBoundary,
    PublishedElsewhere,
    UpstreamRead,
)
from ecm_assets.contracts.dataset import (
    PROVENANCE_COLUMNS,
    Dataset,
    DatasetContract,
    PartitionValue,
)
from ecm_assets.contracts.moves import event_key, settle_moves
from ecm_assets.contracts.transform import (
    PartitionWindow,
    TransformResult,
    UpstreamRelation,
    month_days,
)

#: Where lock_inputs hands run_transform the locked event index (not a transform argument).
MOVES_KWARG = "__published_elsewhere"
#: (landing keys, owned partitions) -> the published rows of those keys outside the window.
PublishedIndexLookup = Callable[[pd.Series, tuple[date, ...]], Iterable[PublishedElsewhere]]


class ReplayError(RuntimeError):
    """A recorded input boundary can no longer be read exactly as it was."""


@dataclass(frozen=True)
class UpstreamFrame:
    """Published upstream rows a run was handed, with their provenance columns: a frame, or
    an UpstreamRelation read in the warehouse (datasets with `upstream_as="relation"`)."""

    dataset: str
    first_partition: PartitionValue
    last_partition: PartitionValue
    frame: pd.DataFrame | UpstreamRelation
    #: The keys read, for a list or hash upstream.
    keys: tuple[str, ...] = ()


def business_days(contract: DatasetContract, window: PartitionWindow) -> list[date]:
    """The business dates a window covers (reference snapshots are pinned per date); list
    and hash partitions cover none."""
    if contract.grain == "daily":
        return list(window.partitions)
    if contract.grain == "hourly":
        return sorted({contract.local_date(hour) for hour in window.partitions})
    if contract.is_static:
        return []
    return [d for month in window.partitions for d in month_days(month)]


def lock_inputs(
    dataset: Dataset,
    window: PartitionWindow,
    partition_keys: tuple[str, ...],
    *,
    landing_root: Path | None,
    reference_root: Path | None,
    upstream: list[UpstreamFrame],
    locked_at: datetime,
    recorded: InputBoundary | None = None,
    published_index: PublishedIndexLookup | None = None,
) -> tuple[InputBoundary, dict[str, object]]:
    """The input boundary and the transform's bound arguments.

    Without `recorded`, the boundary is what exists now: landing files with their sha256,
    reference snapshots pinned per business date. With `recorded` (a replay), exactly the
    recorded files and reference versions are used, and upstream must still be the rows the
    recorded runs published.

    `published_index` answers where the keys of the landing rows are published outside the
    window (publish/event_index.py); its answer is locked in the boundary, and a replay uses
    the recorded one. The transform's output is then settled by contracts/moves.py.
    """
    contract = dataset.contract
    kwargs: dict[str, object] = {"window": window}
    files = ()
    ignored: tuple[IgnoredLandingEntry, ...] = ()
    if contract.landing is not None:
        if landing_root is None:
            raise ValueError(f"dataset {contract.name} reads landing files: no landing root")
        if recorded is not None:
            files = recorded.landing_files
            ignored = recorded.ignored_landing
        else:
            listing = scan_landing_zone(
                landing_root,
                contract.landing.name,
                window.first,
                window.last + timedelta(days=contract.landing.lateness_days),
            )
            listing.raise_for_refused()  # e.g. a symlink out of the root: never read
            files = tuple(listing.files)
            ignored = tuple(IgnoredLandingEntry(e.path, e.reason) for e in listing.ignored)
    bindings = {}
    for name in contract.reference:
        if reference_root is None:
            raise ValueError(f"dataset {contract.name} reads reference {name}: no reference root")
        only = None
        if recorded is not None:
            only = {b.version for b in recorded.reference if b.name == name}
        pinned = pin_snapshots(reference_root, name, business_days(contract, window), only)
        if recorded is not None:
            recorded_sha = {(b.name, b.version): b.sha256 for b in recorded.reference}
            for snap in pinned.values():
                key = (name, snap.binding.version)
                if recorded_sha.get(key) not in (None, snap.binding.sha256):
                    raise ReplayError(
                        f"reference {name} {snap.binding.version} changed since it was recorded "
                        f"(sha256 {recorded_sha[key][:12]}... then, {snap.binding.sha256[:12]}... "
                        "now): snapshots must be immutable"
                    )
        kwargs[name] = pinned
        for snapshot in pinned.values():
            bindings[(name, snapshot.binding.version)] = snapshot.binding
    reads = []
    provenance = [n for n, _ in PROVENANCE_COLUMNS]
    for up in upstream:
        if isinstance(up.frame, UpstreamRelation):
            run_ids = up.frame.run_ids()
        else:
            run_ids = tuple(sorted(up.frame["run_id"].dropna().unique())) if len(up.frame) else ()
        read = UpstreamRead(
            up.dataset, up.first_partition, up.last_partition, len(up.frame), run_ids, up.keys
        )
        if recorded is not None:
            then = {u.dataset: u for u in recorded.upstream}.get(up.dataset)
            if then is not None and then.run_ids != run_ids:
                raise ReplayError(
                    f"upstream {up.dataset} {up.first_partition}..{up.last_partition} was "
                    f"republished since the recorded run: it read runs {list(then.run_ids)}, "
                    f"now {list(run_ids)}; the exact input is no longer published"
                )
        reads.append(read)
        if isinstance(up.frame, UpstreamRelation):
            kwargs[up.dataset] = up.frame  # its select() already leaves provenance out
        else:
            kwargs[up.dataset] = up.frame.drop(columns=[c for c in provenance if c in up.frame])
    elsewhere: tuple[PublishedElsewhere, ...] = ()
    if contract.landing is not None:
        rows = read_landing_files(landing_root, files, contract.landing.columns)
        kwargs["landing"] = rows
        key = event_key(contract)
        if recorded is not None:
            elsewhere = recorded.published_elsewhere
        elif published_index is not None and key is not None and key in rows.columns:
            elsewhere = tuple(published_index(rows[key], window.partitions))
        if key is not None:
            kwargs[MOVES_KWARG] = (elsewhere, {f.path: f.ingest_date for f in files})
    boundary = InputBoundary(
        partitions=partition_keys,
        locked_at=locked_at,
        landing_files=files,
        ignored_landing=ignored,
        reference=tuple(bindings[k] for k in sorted(bindings)),
        upstream=tuple(reads),
        published_elsewhere=elsewhere,
    )
    return boundary, kwargs


def run_transform(dataset: Dataset, kwargs: dict[str, object]) -> TransformResult:
    """Call the pure transform with the arguments its signature names."""
    params = inspect.signature(dataset.transform).parameters
    window = kwargs["window"]
    assert isinstance(window, PartitionWindow)
    result = dataset.transform(**{k: v for k, v in kwargs.items() if k in params})
    if isinstance(result, pd.DataFrame):
        result = TransformResult(data=result)
    if MOVES_KWARG in kwargs:
        elsewhere, ingest_of = kwargs[MOVES_KWARG]  # type: ignore[misc]
        result = settle_moves(dataset.contract, window, result, elsewhere, ingest_of)
    if result.counts is None:
        contract = dataset.contract
        column = result.data[contract.partition_column]
        if contract.grain in ("daily", "monthly"):
            rows = pd.to_datetime(column).dt.date.value_counts()
            rows = rows.reindex(list(window.partitions), fill_value=0)
        else:  # hours and keys, counted as the values they are
            seen = Counter(contract.values_of(column))
            rows = pd.Series([seen.get(p, 0) for p in window.partitions], index=window.partitions)
        counts = pd.DataFrame({"kept": rows.astype("int64")})
        counts.index.name = "partition"
        result = TransformResult(result.data, result.rejects, counts, result.notes)
    return result


def code_fingerprint(dataset: Dataset) -> str:
    """Contract code version plus a hash of the transform's source, for the manifest."""
    try:
        source = inspect.getsource(dataset.transform)
    except (OSError, TypeError):
        source = dataset.transform.__qualname__
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{dataset.contract.code_version}+{digest}"
