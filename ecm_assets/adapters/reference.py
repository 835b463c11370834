"""Versioned reference-data snapshots and the pinning rule that makes backfills repeatable.

Each snapshot is a directory `<root>/<name>/<version>/` with `snapshot.json`
(`{"name", "version", "published_on"}`) and its data file. A run never reads "latest": for a
business date D it binds the newest snapshot published on or before D, so a backfill run next
year picks the same version as the original run did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from datetime import date
from pathlib import Path

import pandas as pd

from ecm_assets.contracts.boundaries import ReferenceBinding, ReferenceSnapshot

AS_AT_BUSINESS_DATE = "newest snapshot published on or before the business date"


def _snapshot_dirs(root: Path, name: str) -> list[tuple[date, str, Path]]:
    base = Path(root) / name
    if not base.is_dir():
        raise FileNotFoundError(f"reference data {name!r} not found under {base}")
    found = []
    for d in sorted(base.iterdir()):
        meta_path = d / "snapshot.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        found.append((date.fromisoformat(meta["published_on"]), meta["version"], d))
    return sorted(found)


def _load(name: str, path: Path) -> tuple[pd.DataFrame | dict, str]:
    digest = hashlib.sha256()
    data: pd.DataFrame | dict
    if name == "org_hierarchy":
        raw = (path / "units.csv").read_bytes()
        digest.update(raw)
        data = pd.read_csv(path / "units.csv", dtype=str, keep_default_na=False)
        for col in ("valid_from", "valid_to"):
            data[col] = pd.to_datetime(data[col].replace("", None), format="%Y-%m-%d")
    elif name == "sla_calendar":
        raw = (path / "calendar.json").read_bytes()
        digest.update(raw)
        data = json.loads(raw)
    else:
        raise ValueError(f"unknown reference dataset {name!r}")
    return data, digest.hexdigest()


def pin_snapshots(
    root: Path,
    name: str,
    business_dates: list[date],
    only_versions: Collection[str] | None = None,
) -> dict[date, ReferenceSnapshot]:
    """For each business date, the snapshot that was current on that date.

    `only_versions` restricts the choice to versions a recorded boundary used (replay).
    """
    candidates = _snapshot_dirs(root, name)
    if only_versions is not None:
        candidates = [c for c in candidates if c[1] in set(only_versions)]
    loaded: dict[str, ReferenceSnapshot] = {}
    pinned: dict[date, ReferenceSnapshot] = {}
    for day in business_dates:
        eligible = [c for c in candidates if c[0] <= day]
        if not eligible:
            raise LookupError(
                f"no {name} snapshot was published on or before {day.isoformat()} under "
                f"{Path(root) / name}; publish one or backfill from a later date"
            )
        published_on, version, path = eligible[-1]
        if version not in loaded:
            data, sha = _load(name, path)
            loaded[version] = ReferenceSnapshot(
                ReferenceBinding(name, version, published_on, sha, AS_AT_BUSINESS_DATE), data
            )
        pinned[day] = loaded[version]
    return pinned
