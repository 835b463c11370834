"""Versioned reference-data snapshots and the pinning rule that makes backfills repeatable.

Any reference dataset a contract names lives under `<root>/<name>/<version>/`: a data file and
a `snapshot.json` beside it, written last so its presence means the version is complete:

    {"name": "zones", "version": "v3", "effective_from": "2015-01-01",
     "file": "zones.csv", "key_columns": ["zone_id"], "date_columns": ["valid_from"]}

`effective_from` (or its older spelling `published_on`) is the first business date the version
applies to; `file` defaults to the one data file in the directory; `.csv` is read as text
columns, `.parquet` as typed, `.json` as a dict (e.g. a calendar) or a list of records.
`key_columns` must identify each row (checked on load); `date_columns` are parsed as dates
(default: `valid_from`/`valid_to` when present, the validity convention `Referential` uses).

A run never reads "latest": for a business date D it binds the newest version effective on or
before D (ties and equal dates ordered by numeric version, so v10 follows v9), so a backfill run
next year picks the same version as the original run did.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from ecm_assets.contracts.boundaries import ReferenceBinding, ReferenceSnapshot

#: Recorded in every input boundary (wording kept from the first releases: "published on" is
#: the effective date).
AS_AT_BUSINESS_DATE = "newest snapshot published on or before the business date"
SNAPSHOT_FILE = "snapshot.json"
VALIDITY_COLUMNS = ("valid_from", "valid_to")
READERS = (".csv", ".parquet", ".json")


class ReferenceDataError(ValueError):
    """A reference snapshot is malformed; the message names its file and field."""


def version_order(version: str) -> tuple[Any, ...]:
    """Numeric runs compare as numbers: v2 < v9 < v10 < v10a."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.findall(r"\d+|\D+", version)
    )


def _meta(path: Path, name: str) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReferenceDataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ReferenceDataError(f"{path}: must be a JSON object")
    if meta.get("name", name) != name:
        raise ReferenceDataError(f"{path}: name {meta['name']!r} is not {name!r}")
    if "version" not in meta:
        raise ReferenceDataError(f"{path}: field 'version' is missing")
    effective = meta.get("effective_from", meta.get("published_on"))
    if effective is None:
        raise ReferenceDataError(f"{path}: field 'effective_from' is missing")
    try:
        meta["_effective"] = date.fromisoformat(str(effective))
    except ValueError:
        raise ReferenceDataError(
            f"{path}: effective_from {effective!r} is not a YYYY-MM-DD date"
        ) from None
    for listed in ("key_columns", "date_columns"):
        value = meta.get(listed, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ReferenceDataError(f"{path}: field {listed!r} must be a list of column names")
    return meta


def _snapshot_dirs(root: Path, name: str) -> list[tuple[date, str, Path, dict[str, Any]]]:
    base = Path(root) / name
    if not base.is_dir():
        raise FileNotFoundError(f"reference data {name!r} not found under {base}")
    found = []
    for d in base.iterdir():
        meta_path = d / SNAPSHOT_FILE
        if not meta_path.is_file():
            continue
        meta = _meta(meta_path, name)
        found.append((meta["_effective"], str(meta["version"]), d, meta))
    return sorted(found, key=lambda c: (c[0], version_order(c[1])))


def _data_file(path: Path, meta: dict[str, Any]) -> Path:
    if meta.get("file"):
        data = path / str(meta["file"])
        if not data.is_file():
            raise ReferenceDataError(f"{path / SNAPSHOT_FILE}: file {meta['file']!r} is missing")
        return data
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != SNAPSHOT_FILE)
    if len(files) != 1:
        raise ReferenceDataError(
            f"{path / SNAPSHOT_FILE}: name the data file with 'file' "
            f"(found {[p.name for p in files]})"
        )
    return files[0]


def _load(path: Path, meta: dict[str, Any]) -> tuple[pd.DataFrame | dict, str]:
    file = _data_file(path, meta)
    raw = file.read_bytes()
    data: pd.DataFrame | dict
    suffix = file.suffix.lower()
    if suffix == ".csv":
        data = pd.read_csv(file, dtype=str, keep_default_na=False)
    elif suffix == ".parquet":
        data = pd.read_parquet(file)
    elif suffix == ".json":
        loaded = json.loads(raw)
        data = loaded if isinstance(loaded, dict) else pd.DataFrame.from_records(loaded)
    else:
        raise ReferenceDataError(f"{file}: reference files are one of {', '.join(READERS)}")
    if isinstance(data, pd.DataFrame):
        data = _typed(file, data, meta)
    return data, hashlib.sha256(raw).hexdigest()


def _typed(file: Path, data: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    declared = meta.get("date_columns")
    dates = declared if declared is not None else [c for c in VALIDITY_COLUMNS if c in data]
    keys = meta.get("key_columns", [])
    missing = [c for c in [*dates, *keys] if c not in data.columns]
    if missing:
        raise ReferenceDataError(f"{file}: columns {missing} are declared but not present")
    for col in dates:
        text = data[col].astype("string").str.strip().replace("", pd.NA)
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        bad = parsed.isna() & text.notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ReferenceDataError(
                f"{file}: row {row + 2} column {col}: {text.iloc[row]!r} is not a date"
            )
        data[col] = parsed
    if keys:
        dup = data.duplicated(subset=keys, keep=False)
        if dup.any():
            first = data.loc[dup, keys].iloc[0].tolist()
            raise ReferenceDataError(
                f"{file}: key_columns {keys} are not unique ({int(dup.sum())} rows share "
                f"keys, e.g. {first})"
            )
    return data


def list_versions(root: Path, name: str) -> list[tuple[date, str]]:
    """Every version of a reference dataset as (effective_from, version), in pinning order."""
    return [(eff, version) for eff, version, _, _ in _snapshot_dirs(root, name)]


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
                f"no {name} snapshot is effective on or before {day.isoformat()} under "
                f"{Path(root) / name}; publish one or backfill from a later date"
            )
        effective, version, path, meta = eligible[-1]
        if version not in loaded:
            data, sha = _load(path, meta)
            loaded[version] = ReferenceSnapshot(
                ReferenceBinding(name, version, effective, sha, AS_AT_BUSINESS_DATE), data
            )
        pinned[day] = loaded[version]
    return pinned
