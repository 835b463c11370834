"""Pure transform: raw landing rows -> typed, deduplicated case events plus rejected rows.

Rules, all deterministic for a given set of landing rows:
- Attribution: a row belongs to its UTC event date if it arrived within `lateness_days` of it
  (and not before it); otherwise, or when its timestamp does not parse, to its ingest date,
  where it is rejected. So every raw row is counted in exactly one partition.
- Deduplication: a row is superseded when the same event_id arrives again later, in a file
  the row's partition still reads (ingest date <= partition + lateness). Identical values
  count as a duplicate, changed values as a correction; both are `duplicate` in the identity
  read = kept + rejected + duplicate.
- Rejection here only of rows that cannot become a typed, dated event (malformed line,
  missing event_id, unparseable, out-of-range-year or out-of-horizon timestamp). Timestamps
  are read by the contract's declared TimestampRule (EVENT_TS_RULE). Every other rule
  (missing case_id, unknown type, priority or unit, id shape, a timestamp without a zone) is
  the quality gate's, with its contract severity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ecm_assets.case_sla.contracts import CASE_EVENTS, LANDING_COLUMNS, LATENESS_DAYS
from ecm_assets.case_sla.quality import EVENT_TS_RULE
from ecm_assets.contracts.boundaries import ReferenceSnapshot
from ecm_assets.contracts.quality import JSON_TYPES_COLUMN
from ecm_assets.contracts.transform import (
    REJECT_COLUMNS,
    PartitionWindow,
    ReconciliationError,
    TransformResult,
    attribute_partitions,
    parse_timestamps,
)

COUNT_COLUMNS = ["read", "kept", "rejected", "duplicate", "corrections_applied", "late_arrivals"]


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def _superseded(frame: pd.DataFrame, lateness: pd.Timedelta) -> tuple[pd.Series, pd.Series]:
    """Which rows a later arrival of the same event_id replaces, and whether values changed."""
    superseded = pd.Series(False, index=frame.index)
    changed = pd.Series(False, index=frame.index)
    has_id = ~_blank(frame["event_id"])
    ids = frame.loc[has_id, "event_id"]
    repeated = ids[ids.duplicated(keep=False)].index
    if len(repeated) == 0:
        return superseded, changed
    sub = frame.loc[repeated, ["_arrival", "_ingest_date", "_partition", *LANDING_COLUMNS]]
    sub = sub.reset_index(names="_row")
    pairs = sub.merge(sub, on="event_id", suffixes=("", "_later"))
    pairs = pairs[
        (pairs["_arrival_later"] > pairs["_arrival"])
        & (pairs["_ingest_date_later"] <= pairs["_partition"] + lateness)
    ]
    if pairs.empty:
        return superseded, changed
    # Compare with the latest qualifying arrival: that is the version the partition keeps.
    latest = pairs.sort_values(["_row", "_arrival_later"]).drop_duplicates("_row", keep="last")
    differs = np.zeros(len(latest), dtype=bool)
    for col in LANDING_COLUMNS[1:]:  # event_id is the join key, equal by construction
        a = latest[col].fillna("\0").astype(str).to_numpy()
        b = latest[f"{col}_later"].fillna("\0").astype(str).to_numpy()
        differs |= a != b
    superseded.loc[latest["_row"].to_numpy()] = True
    changed.loc[latest["_row"].to_numpy()] = differs
    return superseded, changed


def _resolve_regions(
    rows: pd.DataFrame, org_hierarchy: Mapping[date, ReferenceSnapshot]
) -> pd.Series:
    """Region of each row's unit at event time, from the snapshot pinned for its date."""
    dates = sorted(d.date() for d in pd.DatetimeIndex(rows["_partition"].unique()))
    parts = []
    for day in dates:
        units = org_hierarchy[day].data
        part = units[["unit_id", "region", "valid_from", "valid_to"]].copy()
        part["_partition"] = pd.Timestamp(day)
        parts.append(part)
    if not parts:
        return pd.Series(pd.NA, index=rows.index, dtype=object)
    hierarchy = pd.concat(parts, ignore_index=True)
    probe = rows[["_partition", "unit_id", "_ts"]].reset_index(names="_row")
    probe["_ts_naive"] = probe["_ts"].dt.tz_convert("UTC").dt.tz_localize(None)
    matched = probe.merge(hierarchy, on=["_partition", "unit_id"], how="inner")
    valid_to = matched["valid_to"].fillna(pd.Timestamp.max)
    matched = matched[
        (matched["valid_from"] <= matched["_ts_naive"]) & (matched["_ts_naive"] < valid_to)
    ]
    ambiguous = matched[matched["_row"].duplicated(keep=False)]
    if not ambiguous.empty:
        first = ambiguous.iloc[0]
        raise ValueError(
            f"org_hierarchy maps unit {first['unit_id']} to several regions at "
            f"{first['_ts_naive']}: overlapping validity intervals in the pinned snapshot"
        )
    return matched.set_index("_row")["region"].reindex(rows.index)


def _in_arrival_order(frame: pd.DataFrame, keys: list[str]) -> bool:
    if len(frame) < 2:
        return True
    ingest, source, line = (frame[k].to_numpy() for k in keys)
    same_day = ingest[1:] == ingest[:-1]
    same_file = same_day & (source[1:] == source[:-1])
    ordered = (ingest[1:] > ingest[:-1]) | (same_day & (source[1:] > source[:-1]))
    ordered |= same_file & (line[1:] > line[:-1])
    return bool(ordered.all())


def parse_case_events(
    landing: pd.DataFrame,
    window: PartitionWindow,
    org_hierarchy: Mapping[date, ReferenceSnapshot],
    lateness_days: int = LATENESS_DAYS,
) -> TransformResult:
    """Typed, deduplicated events of the window's business dates; see the module docstring."""
    lateness = pd.Timedelta(days=lateness_days)
    raw = landing.reset_index(drop=True).copy()
    raw["_ingest_date"] = pd.to_datetime(raw["_ingest_date"]).astype("datetime64[ns]")
    parsed = parse_timestamps(raw["event_ts"], EVENT_TS_RULE)
    raw["_ts"] = parsed.utc
    raw["_ts_problem"] = parsed.problem
    raw["_partition"], raw["_in_horizon"] = attribute_partitions(
        raw["event_ts"], raw["_ingest_date"], lateness_days, parsed=parsed
    )
    if JSON_TYPES_COLUMN not in raw.columns:
        raw[JSON_TYPES_COLUMN] = None
    # Arrival order: ingest day, then file name, then line. The landing reader already yields
    # rows in that order, so the sort is skipped when it would change nothing.
    keys = ["_ingest_date", "_source_file", "_source_line"]
    if _in_arrival_order(raw, keys):
        raw["_arrival"] = np.arange(len(raw))
    else:
        order = raw.sort_values(keys, kind="stable").index
        raw["_arrival"] = pd.Series(np.arange(len(raw)), index=order).reindex(raw.index)

    superseded, changed = _superseded(raw, lateness)
    raw["_superseded"] = superseded
    raw["_changed"] = changed

    window_days = pd.DatetimeIndex([pd.Timestamp(d) for d in window.partitions])
    mine = raw[raw["_partition"].isin(window_days)].copy()

    reason = pd.Series(pd.NA, index=mine.index, dtype=object)
    column = pd.Series(pd.NA, index=mine.index, dtype=object)
    failure = pd.Series(pd.NA, index=mine.index, dtype=object)

    def reject(mask: pd.Series, why: str, col: str | None, case: pd.Series | None) -> None:
        hit = mask & reason.isna() & ~mine["_superseded"]
        reason[hit] = why
        column[hit] = col
        if case is not None:
            failure[hit] = case[hit]

    reject(mine["_parse_error"].notna(), "malformed_line", None, mine["_parse_error"])
    reject(_blank(mine["event_id"]), "missing_event_id", "event_id", mine["event_id"])
    out_of_range = mine["_ts_problem"] == "year_out_of_range"
    reject(out_of_range, "event_ts_year_out_of_range", "event_ts", mine["event_ts"])
    reject(mine["_ts"].isna(), "unparseable_event_ts", "event_ts", mine["event_ts"])
    reject(~mine["_in_horizon"], "event_ts_outside_arrival_horizon", "event_ts", mine["event_ts"])
    # Rows with a value the contract does not accept (missing case_id, unknown type, priority
    # or unit) are typed and kept: the quality gate quarantines them by the contract's rules.
    candidates = reason.isna() & ~mine["_superseded"]
    regions = _resolve_regions(mine[candidates], org_hierarchy)
    mine["region"] = regions.reindex(mine.index)

    kept_mask = reason.isna() & ~mine["_superseded"]
    kept = mine[kept_mask]
    data = pd.DataFrame(
        {
            "event_id": kept["event_id"].astype(str),
            "case_id": kept["case_id"].astype(object),
            "event_type": kept["event_type"].astype(object),
            "event_ts": kept["_ts"],
            "business_date": kept["_partition"],
            "unit_id": kept["unit_id"].astype(object),
            "region": kept["region"].astype(object),
            "priority": kept["priority"].astype(object),
            "ingest_date": kept["_ingest_date"],
            "source_file": kept["_source_file"].astype(str),
            "source_line": kept["_source_line"].astype("int64"),
        }
    )
    data = data.sort_values(["business_date", "event_id", "source_file"], kind="stable")
    # The landing values of each output row, so a row the gate quarantines is kept as it
    # arrived, not as it was typed.
    # With the JSON types of the values, which the gate's TextRules judge.
    source_rows = kept.loc[data.index, [*LANDING_COLUMNS, JSON_TYPES_COLUMN]].reset_index(drop=True)
    data = data.reset_index(drop=True)[CASE_EVENTS.column_names]

    bad = mine[reason.notna()]
    originals = [
        json.dumps(dict(zip(LANDING_COLUMNS, values, strict=True)), sort_keys=True)
        for values in bad[list(LANDING_COLUMNS)].itertuples(index=False, name=None)
    ]
    rejects = pd.DataFrame(
        {
            "partition_date": bad["_partition"],
            "source_file": bad["_source_file"].astype(str),
            "source_line": bad["_source_line"].astype("int64"),
            "reason": reason[bad.index].astype(str),
            "column_name": column[bad.index],
            "failure_case": failure[bad.index].map(lambda v: None if pd.isna(v) else str(v)[:500]),
            "original_row": originals,
        }
    )[REJECT_COLUMNS]
    rejects = rejects.sort_values(["partition_date", "source_file", "source_line"]).reset_index(
        drop=True
    )

    counts = pd.DataFrame(
        {
            "read": mine.groupby("_partition").size(),
            "kept": kept.groupby("_partition").size(),
            "rejected": bad.groupby("_partition").size(),
            "duplicate": mine[mine["_superseded"]].groupby("_partition").size(),
            "corrections_applied": mine[mine["_superseded"] & mine["_changed"]]
            .groupby("_partition")
            .size(),
            "late_arrivals": kept[kept["_ingest_date"] > kept["_partition"]]
            .groupby("_partition")
            .size(),
        }
    )
    counts = counts.reindex(window_days).fillna(0).astype("int64")
    counts.index = pd.Index([d.date() for d in window_days], name="partition")
    counts = counts[COUNT_COLUMNS]
    broken = counts[counts["read"] != counts["kept"] + counts["rejected"] + counts["duplicate"]]
    if not broken.empty:
        day = broken.index[0]
        row = broken.iloc[0]
        raise ReconciliationError(
            f"case_events {day}: read {row['read']} != kept {row['kept']} + rejected "
            f"{row['rejected']} + duplicate {row['duplicate']}; nothing is published"
        )
    return TransformResult(data=data, rejects=rejects, counts=counts, source_rows=source_rows)


def landing_ingest_range(
    window: PartitionWindow, lateness_days: int = LATENESS_DAYS
) -> tuple[date, date]:
    """Ingest dates whose files can carry rows of the window: the landing input boundary."""
    return window.first, window.last + timedelta(days=lateness_days)
