"""An event re-sent with another date: where it is published, so it is never on two dates.

Pure (no Dagster, no IO). A landing dataset's partition reads the files ingested from its
first day through its last day plus the lateness allowance; within that, the transform
keeps the latest arrival of each key. A key already published on a date outside the run's
window is settled here, by one rule (docs/lifecycle.md, "An event that moves to another
date"):

- the run's row X **supersedes** the published row Y on date R when X arrived later than Y
  (by ingest date, then file) and R's run reads X's file (X's ingest date lies in R's read
  window). The run keeps X; the landing sensor requests R too, and R's run drops Y;
- otherwise Y **stays where it is** (it arrived later, or X came too late for R's run to ever
  read it: a move beyond the lateness window). X is quarantined with the reason
  `event_published_on_other_date`, naming R and Y's file; its partition's counts move it
  from kept to rejected, so the identity read = kept + rejected + duplicate still holds.

The published rows consulted are locked in the input boundary (`published_elsewhere`), so a
replay decides exactly as the run did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ecm_assets.contracts.boundaries import PublishedElsewhere
from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.periods import last_day
from ecm_assets.contracts.transform import REJECT_COLUMNS, PartitionWindow, TransformResult

#: Quarantine reason of a row whose key stays published on another date.
REASON = "event_published_on_other_date"
#: The output column naming each row's landing file (its arrival order and ingest date).
SOURCE_FILE = "source_file"


def event_key(contract: DatasetContract) -> str | None:
    """The column identifying an event across dates, when the rule applies: a landing
    dataset whose business key is the partition plus one column, which the landing files
    carry, and whose rows name their source file."""
    if contract.landing is None:
        return None
    keys = [k for k in contract.business_key if k != contract.partition_column]
    if len(keys) != 1 or SOURCE_FILE not in contract.column_names:
        return None
    if keys[0] not in contract.landing.columns:
        return None
    return keys[0]


def reads_file(contract: DatasetContract, partition: date, ingest: date) -> bool:
    """Whether the run of `partition` reads files of this ingest date."""
    assert contract.landing is not None
    last = last_day(partition, contract.grain) + timedelta(days=contract.landing.lateness_days)
    return partition <= ingest <= last


def settle_moves(
    contract: DatasetContract,
    window: PartitionWindow,
    result: TransformResult,
    elsewhere: Iterable[PublishedElsewhere],
    ingest_of: Mapping[str, date],
) -> TransformResult:
    """Quarantine the output rows whose key stays published on another date (module doc).

    `ingest_of` maps each landing file the run read to its ingest date."""
    key = event_key(contract)
    by_key: dict[str, list[PublishedElsewhere]] = {}
    owned = set(window.partitions)
    for e in elsewhere:
        if e.partition not in owned:
            by_key.setdefault(e.key, []).append(e)
    data = result.data
    if key is None or not by_key or data.empty:
        return result
    keys = data[key].astype(str).to_numpy()
    candidates = np.flatnonzero(pd.Series(keys).isin(by_key).to_numpy())
    if not len(candidates):
        return result
    pcol = contract.partition_column
    parts = pd.to_datetime(data[pcol].iloc[candidates]).dt.date.to_numpy()
    files = data[SOURCE_FILE].iloc[candidates].astype(str).to_numpy()
    stays: list[tuple[int, PublishedElsewhere]] = []
    for pos, k, p, f in zip(candidates, keys[candidates], parts, files, strict=True):
        ingest = ingest_of.get(f)
        for y in by_key[k]:
            if y.partition == p:
                continue
            later = ingest is not None and (ingest, f) > (y.ingest_date, y.source_file)
            if not (later and reads_file(contract, y.partition, ingest)):
                stays.append((int(pos), y))
                break
    if not stays:
        return result
    drop = np.zeros(len(data), dtype=bool)
    drop[[pos for pos, _ in stays]] = True
    rejects = _rejects(contract, result, key, stays, ingest_of)
    counts = result.counts
    if counts is not None:
        counts = counts.copy()
        moved = pd.to_datetime(rejects["partition_date"]).dt.date.value_counts()
        for partition, n in moved.items():
            if "kept" in counts.columns:
                counts.loc[partition, "kept"] -= int(n)
            if "rejected" in counts.columns:
                counts.loc[partition, "rejected"] += int(n)
    all_rejects = (
        rejects
        if result.rejects is None
        else pd.concat([result.rejects[REJECT_COLUMNS], rejects], ignore_index=True)
    )
    source_rows = result.source_rows
    if source_rows is not None:
        source_rows = source_rows[~drop].reset_index(drop=True)
    notes = {**result.notes, "published_on_other_date": len(stays)}
    return replace(
        result,
        data=data[~drop].reset_index(drop=True),
        rejects=all_rejects,
        counts=counts,
        notes=notes,
        source_rows=source_rows,
    )


def _rejects(
    contract: DatasetContract,
    result: TransformResult,
    key: str,
    stays: list[tuple[int, PublishedElsewhere]],
    ingest_of: Mapping[str, date],
) -> pd.DataFrame:
    data = result.data
    rows = []
    for pos, y in stays:
        row = data.iloc[pos]
        if result.source_rows is not None:
            original = result.source_rows.iloc[pos].to_dict()
        else:
            original = row.to_dict()
        original = {c: None if _missing(v) else str(v) for c, v in original.items()}
        file = str(row[SOURCE_FILE])
        ingest = ingest_of.get(file)
        partition = pd.Timestamp(row[contract.partition_column]).date()
        assert contract.landing is not None
        horizon = last_day(y.partition, contract.grain) + timedelta(
            days=contract.landing.lateness_days
        )
        why = (
            "the published row arrived later"
            if ingest is None or (ingest, file) <= (y.ingest_date, y.source_file)
            else f"its run reads files ingested up to {horizon}, this file is of {ingest}"
        )
        rows.append(
            {
                "partition_date": pd.Timestamp(partition),
                "source_file": file,
                "source_line": int(row["source_line"]) if "source_line" in row.index else None,
                "reason": REASON,
                "column_name": key,
                "failure_case": (
                    f"{key} {y.key} stays published on {y.partition} (from {y.source_file}, run "
                    f"{y.run_id}): {why}"
                )[:500],
                "original_row": json.dumps(original, sort_keys=True),
            }
        )
    frame = pd.DataFrame(rows, columns=REJECT_COLUMNS)
    frame["source_line"] = frame["source_line"].astype("Int64")
    return frame


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
