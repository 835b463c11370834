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
import pyarrow as pa
import pyarrow.compute as pc

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
    """Null or whitespace only; one vectorized pass (no per-row Python for text columns)."""
    try:
        text = pa.array(series, from_pandas=True)
        if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
            raise pa.ArrowTypeError(str(text.type))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = pa.array(series.astype(object).where(series.isna(), series.astype(str)))
    length = pc.utf8_length(pc.utf8_trim_whitespace(text)).fill_null(0)
    return pd.Series(np.asarray(length.to_numpy(zero_copy_only=False)) == 0, index=series.index)


#: Text columns of the output: Arrow strings (int32 offsets). The landing values' Arrow
#: buffers reach the gate and publish without a Python object each, and DuckDB scans this
#: dtype natively (pandas' StringDtype("pyarrow") it converts value by value).
TEXT_DTYPE = pd.ArrowDtype(pa.string())


def _text(values: pd.Series, *, as_str: bool = False) -> pd.Series:
    """The column as Arrow text with its values and nulls unchanged (`as_str`: as
    `astype(str)` would, a null becomes the text "None"/"nan"/"<NA>"). Arrow-backed and
    categorical text are converted in Arrow; anything else goes the old way first."""
    dtype = values.dtype
    arr: pa.Array | pa.ChunkedArray | None = None
    nulls = bool(values.isna().any())
    if as_str and nulls:
        arr = None
    elif isinstance(dtype, pd.StringDtype | pd.ArrowDtype) and hasattr(
        values.array, "__arrow_array__"
    ):
        arr = values.array.__arrow_array__()
    elif isinstance(dtype, pd.CategoricalDtype) and pd.api.types.infer_dtype(
        dtype.categories, skipna=False
    ) in ("string", "empty"):
        categories = pa.array(dtype.categories.to_numpy(dtype=object), type=pa.string())
        codes = pa.array(values.cat.codes.to_numpy(), mask=values.isna().to_numpy())
        arr = categories.take(codes)
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        plain = values.astype(str) if as_str else values.astype(object)
        arr = pa.array(plain.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    return pd.Series(
        pd.arrays.ArrowExtensionArray(arr.cast(pa.string())), index=values.index, name=values.name
    )


def _days(values: pd.Series) -> np.ndarray:
    """Dates as int64 day numbers, for sorting and comparing without objects."""
    return values.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)


def _superseded(
    frame: pd.DataFrame, has_id: pd.Series, valid: pd.Series, lateness_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows a later valid arrival of the same event_id replaces, and whether values changed.

    A row is replaced by the latest later arrival of its event_id that is itself a valid event
    (typed and dated: no parse error, a timestamp that parses, in the arrival horizon) and
    arrived in a file the row's partition still reads (ingest date <= partition + lateness).
    A row that cannot be typed never replaces one that can. Vectorized: event_ids are
    factorized once; rows are ordered by (id code, arrival) with integer sorts only.
    """
    n = len(frame)
    superseded = np.zeros(n, dtype=bool)
    changed = np.zeros(n, dtype=bool)
    codes, _ = pd.factorize(frame["event_id"].where(has_id))
    repeated = np.flatnonzero(
        (codes >= 0) & (np.bincount(codes[codes >= 0])[codes] > 1)
        if (codes >= 0).any()
        else np.zeros(n, dtype=bool)
    )
    if len(repeated) == 0:
        return superseded, changed
    arrival = frame["_arrival"].to_numpy()[repeated]
    code = codes[repeated]
    order = np.lexsort((arrival, code))
    rows = repeated[order]  # frame positions, grouped by event_id, in arrival order
    code = code[order]
    ingest = _days(frame["_ingest_date"])[rows]
    partition = _days(frame["_partition"])[rows]
    ok = valid.to_numpy()[rows]
    # Within a group ingest dates never decrease with arrival, so the qualifying later
    # arrivals of row i are the valid ones in (i, k], k = last row of the group with
    # ingest <= partition_i + lateness: found by one searchsorted over (code, ingest).
    base = min(ingest.min(), partition.min())
    span = int(max(ingest.max(), partition.max()) - base) + lateness_days + 2
    key = code.astype(np.int64) * span + (ingest - base)
    k = (
        np.searchsorted(
            key, code.astype(np.int64) * span + (partition - base + lateness_days), side="right"
        )
        - 1
    )
    positions = np.arange(len(rows))
    last_valid = np.maximum.accumulate(np.where(ok, positions, -1))
    latest = last_valid[k]
    replaced = latest > positions
    if not replaced.any():
        return superseded, changed
    old_rows, new_rows = rows[replaced], rows[latest[replaced]]
    differs = np.zeros(len(old_rows), dtype=bool)
    pairs = np.concatenate([old_rows, new_rows])
    for col in LANDING_COLUMNS[1:]:  # event_id is equal by construction
        values = frame[col].iloc[pairs].to_numpy(dtype=object, na_value="\0").astype(str)
        differs |= values[: len(old_rows)] != values[len(old_rows) :]
    superseded[old_rows] = True
    changed[old_rows] = differs
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
    fast = _regions_by_interval(rows, hierarchy)
    if fast is not None:
        return fast
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


def _regions_by_interval(rows: pd.DataFrame, hierarchy: pd.DataFrame) -> pd.Series | None:
    """What the merge in `_resolve_regions` gives, by integer keys and searchsorted: each
    row's (partition, unit) group of hierarchy rows, scanned interval by interval (a unit
    has a handful), without a merged frame of all rows. None when the hierarchy is not
    the plain case (naive datetime bounds, string units and regions): the merge decides.
    """
    units_h, vf, vt, region_h = (
        hierarchy[c] for c in ("unit_id", "valid_from", "valid_to", "region")
    )
    for bound in (vf, vt):
        if not (isinstance(bound.dtype, np.dtype) and bound.dtype.kind == "M"):
            return None
    if pd.api.types.infer_dtype(units_h, skipna=False) != "string":
        return None
    try:
        regions = pa.array(region_h.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    n = len(rows)
    codes, uniques = pd.factorize(rows["unit_id"])
    unit_h = pd.Index(uniques).get_indexer(pd.Index(units_h.to_numpy(dtype=object)))
    days = _days(rows["_partition"])
    days_h = _days(hierarchy["_partition"])
    span = len(uniques) + 1
    key = np.where(codes >= 0, days * span + codes, -1)
    key_h = np.where(unit_h >= 0, days_h * span + unit_h, -2)
    order_h = np.argsort(key_h, kind="stable")
    sorted_h = key_h[order_h]
    lo = np.searchsorted(sorted_h, key, side="left")
    hi = np.searchsorted(sorted_h, key, side="right")
    ts_utc = rows["_ts"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    ts = ts_utc.to_numpy().view(np.int64)
    ts_ok = ts_utc.notna().to_numpy()
    try:
        from_ns = vf.astype("datetime64[ns]").to_numpy()
        to_ns = vt.astype("datetime64[ns]").to_numpy()
    except (OverflowError, ValueError):  # a bound beyond the ns range: the merge compares it
        return None
    start = from_ns.view(np.int64)
    stop = np.where(np.isnat(to_ns), np.iinfo(np.int64).max, to_ns.view(np.int64))
    start_ok = ~np.isnat(from_ns)
    match = np.full(n, -1, dtype=np.int64)
    hits = np.zeros(n, dtype=np.int64)
    width = int((hi - lo).max()) if n else 0
    for j in range(width):
        rows_j = np.flatnonzero((lo + j < hi) & ts_ok)
        h = order_h[lo[rows_j] + j]
        inside = start_ok[h] & (start[h] <= ts[rows_j]) & (ts[rows_j] < stop[h])
        match[rows_j[inside]] = h[inside]
        hits[rows_j[inside]] += 1
    ambiguous = np.flatnonzero(hits > 1)
    if len(ambiguous):
        first = int(ambiguous[0])
        raise ValueError(
            f"org_hierarchy maps unit {rows['unit_id'].iloc[first]} to several regions at "
            f"{ts_utc.iloc[first]}: overlapping validity intervals in the pinned snapshot"
        )
    picked = regions.take(pa.array(match, mask=match < 0))
    return pd.Series(pd.arrays.ArrowExtensionArray(picked), index=rows.index)


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
    raw = landing.reset_index(drop=True)
    # The reader's file accounts stay on `landing` for the gate; carried along here, pandas
    # would deep-copy them at every operation.
    raw.attrs = {}
    ingest = raw["_ingest_date"]
    if not (ingest.dtype.kind == "M" and getattr(ingest.dtype, "tz", None) is None):
        # (pd.to_datetime of a column that is datetime64 already costs a Python pass.)
        ingest = pd.to_datetime(ingest)
    raw["_ingest_date"] = ingest.astype("datetime64[ns]")
    # Timestamps are parsed once; attribution reuses the parsed values.
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

    has_id = ~_blank(raw["event_id"])
    valid = has_id & raw["_parse_error"].isna() & raw["_ts"].notna() & raw["_in_horizon"]
    raw["_has_id"] = has_id
    raw["_superseded"], raw["_changed"] = _superseded(raw, has_id, valid, lateness_days)

    window_days = pd.DatetimeIndex([pd.Timestamp(d) for d in window.partitions])
    mine = raw[raw["_partition"].isin(window_days).to_numpy()]

    # The first failing check of each row, as a small integer code (0: none); superseded rows
    # are duplicates, never rejects.
    checks = (
        (mine["_parse_error"].notna(), "malformed_line", None, "_parse_error"),
        (~mine["_has_id"], "missing_event_id", "event_id", "event_id"),
        (
            mine["_ts_problem"] == "year_out_of_range",
            "event_ts_year_out_of_range",
            "event_ts",
            "event_ts",
        ),
        (mine["_ts"].isna(), "unparseable_event_ts", "event_ts", "event_ts"),
        (~mine["_in_horizon"], "event_ts_outside_arrival_horizon", "event_ts", "event_ts"),
    )
    superseded_mine = mine["_superseded"].to_numpy(dtype=bool)
    code = np.zeros(len(mine), dtype=np.int8)
    for i, (mask, *_) in enumerate(checks, start=1):
        code[mask.to_numpy(dtype=bool) & (code == 0) & ~superseded_mine] = i
    # Rows with a value the contract does not accept (missing case_id, unknown type, priority
    # or unit) are typed and kept: the quality gate quarantines them by the contract's rules.
    kept_mask = (code == 0) & ~superseded_mine
    # Only the columns the output and its source rows are made of.
    used = [*LANDING_COLUMNS, JSON_TYPES_COLUMN, "_ts", "_partition", "_ingest_date"]
    kept = mine.loc[kept_mask, [*used, "_source_file", "_source_line"]]
    regions = _resolve_regions(kept, org_hierarchy)
    data = pd.DataFrame(
        {
            "event_id": _text(kept["event_id"], as_str=True),
            "case_id": _text(kept["case_id"]),
            "event_type": _text(kept["event_type"]),
            "event_ts": kept["_ts"],
            "business_date": kept["_partition"],
            "unit_id": _text(kept["unit_id"]),
            "region": _text(regions.reindex(kept.index)),
            "priority": _text(kept["priority"]),
            "ingest_date": kept["_ingest_date"],
            "source_file": _text(kept["_source_file"], as_str=True),
            "source_line": kept["_source_line"].astype("int64"),
        }
    )
    order = _output_order(data)
    # The landing values of each output row, so a row the gate quarantines is kept as it
    # arrived, not as it was typed.
    # With the JSON types of the values, which the gate's TextRules judge.
    source_rows = kept[[*LANDING_COLUMNS, JSON_TYPES_COLUMN]].take(order).reset_index(drop=True)
    data = data.take(order).reset_index(drop=True)[CASE_EVENTS.column_names]

    bad_pos = np.flatnonzero(code > 0)
    bad = mine.iloc[bad_pos]
    bad_code = code[bad_pos]
    reason = np.empty(len(bad), dtype=object)
    column = np.full(len(bad), None, dtype=object)
    failure = np.full(len(bad), None, dtype=object)
    for i, (_, why, col, case) in enumerate(checks, start=1):
        hit = np.flatnonzero(bad_code == i)
        reason[hit] = why
        column[hit] = col
        values = bad[case].iloc[hit].to_numpy(dtype=object, na_value=None)
        failure[hit] = [None if v is None else str(v)[:500] for v in values]
    originals = [
        json.dumps(
            {c: None if pd.isna(v) else v for c, v in zip(LANDING_COLUMNS, values, strict=True)},
            sort_keys=True,
        )
        for values in bad[list(LANDING_COLUMNS)].itertuples(index=False, name=None)
    ]
    if "_raw_text" in bad:
        # A line the reader could not parse keeps its verbatim text and line range.
        for i, (raw, line) in enumerate(zip(bad["_raw_text"], bad["_source_line"], strict=True)):
            if not pd.isna(raw):
                row = json.loads(originals[i])
                row["_raw_text"] = raw
                row["_source_lines"] = [int(line), int(line) + raw.count("\n")]
                originals[i] = json.dumps(row, sort_keys=True)
    rejects = pd.DataFrame(
        {
            "partition_date": bad["_partition"],
            "source_file": bad["_source_file"].astype(str),
            "source_line": bad["_source_line"].astype("int64"),
            "reason": pd.Series(reason, index=bad.index, dtype=object),
            "column_name": pd.Series(column, index=bad.index, dtype=object),
            "failure_case": pd.Series(failure, index=bad.index, dtype=object),
            "original_row": originals,
        }
    )[REJECT_COLUMNS]
    rejects = rejects.sort_values(["partition_date", "source_file", "source_line"]).reset_index(
        drop=True
    )

    # Rows per partition of each kind, counted on the partition column alone (selecting
    # whole frames by a mask would copy every column).
    part, kept_part = mine["_partition"], kept["_partition"]
    duplicate = mine["_superseded"].to_numpy(dtype=bool)
    corrected = duplicate & mine["_changed"].to_numpy(dtype=bool)
    late = (kept["_ingest_date"] > kept_part).to_numpy(dtype=bool)
    counts = pd.DataFrame(
        {
            "read": part.value_counts(),
            "kept": kept_part.value_counts(),
            "rejected": part.iloc[bad_pos].value_counts(),
            "duplicate": part[duplicate].value_counts(),
            "corrections_applied": part[corrected].value_counts(),
            "late_arrivals": kept_part[late].value_counts(),
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


def _output_order(data: pd.DataFrame) -> np.ndarray:
    """Positions sorting by (business_date, event_id, source_file), stable; strings are
    compared in Arrow (byte order, as Python orders str), not as Python objects."""
    table = pa.table(
        {
            "d": _days(data["business_date"]),
            "e": pa.array(data["event_id"], type=pa.string(), from_pandas=True),
            "f": pa.array(data["source_file"], type=pa.string(), from_pandas=True),
        }
    )
    keys = [("d", "ascending"), ("e", "ascending"), ("f", "ascending")]
    return pc.sort_indices(table, sort_keys=keys).to_numpy()


def landing_ingest_range(
    window: PartitionWindow, lateness_days: int = LATENESS_DAYS
) -> tuple[date, date]:
    """Ingest dates whose files can carry rows of the window: the landing input boundary."""
    return window.first, window.last + timedelta(days=lateness_days)
