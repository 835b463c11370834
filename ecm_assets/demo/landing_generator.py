"""Deterministic generator of a messy case-event landing zone plus versioned reference data.

The demo needs realistic, reproducible input: late arrivals, duplicates, corrections and a
few malformed rows, so that the validation and recompute paths have something to catch.
Everything is drawn from ``numpy.random.default_rng(seed)``; identical arguments give a
byte-identical tree.

Volume
------
Exactly ``max(1, round(3000 * scale))`` cases are opened on every business date in
``[start, end]``. A case yields ~3.05 lifecycle events when it has time to run its course
(steady-state ~9,200 events/day at ``scale=1.0``), but events dated after ``end`` are
dropped, so short periods and the last days of any period yield fewer. For a one-day period
a case yields ~1.87 events, so ``scale=175`` (525,000 cases) gives ~981,000 events and, with
the injected duplicates and corrections (+1.5% raw lines), ~996,000 landing rows for one day.

Layout (``out_dir`` relative)
-----------------------------
``landing/case_events/ingest_date=YYYY-MM-DD/events-000.csv`` .. ``events-002.csv`` and
``events-003.jsonl`` for every ingest date from ``start`` to ``end + 5 days`` (files are always
written, possibly with no rows); ``reference/org_hierarchy/v000N/{units.csv,snapshot.json}``;
``reference/sla_calendar/v000N/{calendar.json,snapshot.json}``; ``landing/README.txt``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["DEFECT_RATES", "DemoDataSummary", "generate_demo_data"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DAY_SECONDS = 86_400
BASE_CASES_PER_DAY = 3_000
MAX_LATENESS_DAYS = 5
CSV_FILES_PER_DAY = 3
FILES_PER_DAY = CSV_FILES_PER_DAY + 1  # the last file of each ingest day is JSON lines
COLUMNS = ("event_id", "case_id", "event_type", "event_ts", "unit_id", "priority")

EVENT_TYPES = ("opened", "assigned", "escalated", "resolved", "reopened")
UNKNOWN_EVENT_TYPES = ("closed_by_bot", "merged", "spam_flagged")
PRIORITIES = ("P1", "P2", "P3", "P4")
PRIORITY_WEIGHTS = (0.05, 0.20, 0.45, 0.30)
ASSIGN_MEAN_HOURS = (0.5, 2.0, 6.0, 12.0)
SLA_TARGET_HOURS = {"P1": 8, "P2": 24, "P3": 72, "P4": 168}
N_UNITS = 12
UNKNOWN_UNIT = 99
REGIONS = ("NORTH", "SOUTH", "EAST", "WEST")
# Both units start in EAST (round-robin below); the moves must change the region.
REORG_MOVES = {"U03": "WEST", "U07": "NORTH"}

# Lifecycle probabilities; "unresolved" applies to assigned cases so that ~10% of all cases
# (3% never assigned + 7% of the rest) stay open even without end-of-period truncation.
P_NEVER_ASSIGNED = 0.03
P_UNRESOLVED = 0.07
P_ESCALATED = 0.10
P_REOPENED = 0.05
# Work time is lognormal around half the SLA target: ~13-14% of resolutions breach.
WORK_MEDIAN_FRACTION = 0.5
WORK_SIGMA = 0.55
REWORK_MEDIAN_FRACTION = 0.25

P_ARRIVE_SAME_DAY = 0.70
P_ARRIVE_NEXT_DAY = 0.20  # the remaining 10% arrive 2..5 days late, uniformly
P_OFFSET_TIMESTAMP = 0.10
# Offsets (minutes east of UTC) used for the non-UTC rendering of the same instant.
TZ_OFFSET_MINUTES = (0, -480, -300, -210, 60, 120, 330, 420, 540)

# Share of generated (real, post-cut-off) events; counts are round(rate * events).
DEFECT_RATES: dict[str, float] = {
    "duplicate": 0.01,
    "correction": 0.005,
    "missing_case_id": 0.002,
    "bad_timestamp": 0.002,
    "unknown_event_type": 0.002,
    "unknown_unit": 0.002,
}
BAD_TIMESTAMP_TEMPLATES = ("{year}-13-45T25:99:00Z", "not-a-date", "", "{year}-02-30T12:00:00Z")
CORRECTION_SHIFT_SECONDS = (60, 600)

_LIFECYCLE_STEP_TYPES = np.array([0, 1, 2, 3, 4, 3], dtype=np.int64)  # 2nd resolve = "resolved"
_TYPE_TABLE = np.array(EVENT_TYPES + UNKNOWN_EVENT_TYPES)
_UNIT_TABLE = np.array([f"U{i:02d}" for i in range(UNKNOWN_UNIT + 1)])
_PRIORITY_TABLE = np.array(PRIORITIES)
_TZ_SUFFIX_TABLE = np.array(
    ["Z"]
    + [
        f"{'+' if m > 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
        for m in TZ_OFFSET_MINUTES[1:]
    ]
)
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class DemoDataSummary:
    """What was generated, so callers and tests can reconcile counts without re-reading."""

    out_dir: Path
    start: date
    end: date
    landing_files: int
    events_written: int
    injected: dict[str, int]


@dataclass(frozen=True)
class _Events:
    """Column arrays of landing rows; codes stay numeric until the final rendering."""

    event_num: IntArray
    case_num: IntArray  # 0 renders as a missing case_id
    type_code: IntArray  # index into _TYPE_TABLE
    t: IntArray  # seconds since `start` 00:00 UTC
    tz: IntArray  # index into TZ_OFFSET_MINUTES
    bad_ts: IntArray  # -1, or index into BAD_TIMESTAMP_TEMPLATES
    unit: IntArray  # 1..12, or UNKNOWN_UNIT
    prio: IntArray  # index into PRIORITIES
    ingest_day: IntArray  # days since `start`
    file: IntArray  # 0..FILES_PER_DAY-1

    def take(self, idx: IntArray) -> _Events:
        return _Events(**{k: v[idx] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        keys = _Events.__dataclass_fields__.keys()
        return _Events(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in keys})

    def __len__(self) -> int:
        return len(self.event_num)


def generate_demo_data(
    out_dir: Path, start: date, end: date, *, seed: int = 7, scale: float = 1.0
) -> DemoDataSummary:
    """Write the landing zone and reference snapshots for business dates ``start..end``.

    The generated subtrees are removed first so that a rerun yields exactly the same tree.
    """
    if end < start:
        raise ValueError(f"end date {end.isoformat()} is before start date {start.isoformat()}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int (an unseeded run is not reproducible), got {seed!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    out_dir = Path(out_dir)
    n_days = (end - start).days + 1
    cases_per_day = max(1, round(BASE_CASES_PER_DAY * scale))
    if n_days * cases_per_day > 999_999_999:
        raise ValueError("too many cases for 9-digit case ids; lower scale or shorten the period")

    rng = np.random.default_rng(seed)
    events = _simulate_events(rng, n_days, cases_per_day)
    rows, injected = _inject_defects(rng, events)

    landing_dir = out_dir / "landing"
    events_dir = landing_dir / "case_events"
    reference_dir = out_dir / "reference"
    for tree in (events_dir, reference_dir):
        if tree.exists():
            shutil.rmtree(tree)
    landing_files = _write_landing(events_dir, rows, start, n_days)
    _write_reference(reference_dir, start, end)
    summary = DemoDataSummary(
        out_dir=out_dir,
        start=start,
        end=end,
        landing_files=landing_files,
        events_written=len(rows),
        injected=injected,
    )
    _write_readme(landing_dir / "README.txt", summary, seed=seed, scale=scale)
    return summary


def _hours_to_seconds(hours: npt.NDArray[np.float64], minimum: int) -> IntArray:
    """Whole seconds with a floor, so consecutive lifecycle events never share an instant."""
    return np.maximum(minimum, np.rint(hours * 3600.0)).astype(np.int64)


def _simulate_events(rng: np.random.Generator, n_days: int, cases_per_day: int) -> _Events:
    """Simulate every case lifecycle at once and keep the events dated within the period."""
    n = n_days * cases_per_day
    day_start = np.repeat(np.arange(n_days, dtype=np.int64) * DAY_SECONDS, cases_per_day)
    # Sorting keeps cases grouped by day, so case numbers increase with opening time.
    open_t = np.sort(day_start + rng.integers(0, DAY_SECONDS, size=n))
    prio = rng.choice(len(PRIORITIES), size=n, p=PRIORITY_WEIGHTS).astype(np.int64)
    unit = rng.integers(1, N_UNITS + 1, size=n)
    target = np.array([SLA_TARGET_HOURS[p] for p in PRIORITIES], dtype=np.float64)[prio]

    assigned = rng.random(n) >= P_NEVER_ASSIGNED
    assign_mean = np.array(ASSIGN_MEAN_HOURS)[prio]
    assign_t = open_t + _hours_to_seconds(rng.exponential(size=n) * assign_mean, 1)

    resolved = assigned & (rng.random(n) >= P_UNRESOLVED)
    work = rng.lognormal(np.log(WORK_MEDIAN_FRACTION * target), WORK_SIGMA)
    resolve_t = assign_t + _hours_to_seconds(work, 60)

    escalated = assigned & (rng.random(n) < P_ESCALATED)
    # Resolved cases escalate strictly inside (assigned, resolved): the gap is >= 60 s.
    frac = rng.uniform(0.1, 0.9, size=n)
    inside = assign_t + np.maximum(1, np.floor((resolve_t - assign_t) * frac)).astype(np.int64)
    open_ended = assign_t + _hours_to_seconds(rng.exponential(size=n) * 24.0, 60)
    escalate_t = np.where(resolved, inside, open_ended)

    reopened = resolved & (rng.random(n) < P_REOPENED)
    reopen_t = resolve_t + _hours_to_seconds(rng.uniform(1.0, 6.0, size=n), 60)
    rework = rng.lognormal(np.log(REWORK_MEDIAN_FRACTION * target), WORK_SIGMA)
    reresolve_t = reopen_t + _hours_to_seconds(rework, 60)

    masks = [np.ones(n, dtype=bool), assigned, escalated, resolved, reopened, reopened]
    times = [open_t, assign_t, escalate_t, resolve_t, reopen_t, reresolve_t]
    case_idx = np.arange(n, dtype=np.int64)
    t = np.concatenate(times)
    keep = np.concatenate(masks) & (t < n_days * DAY_SECONDS)
    t = t[keep]
    case = np.tile(case_idx, len(times))[keep]
    step = np.repeat(np.arange(len(times), dtype=np.int64), n)[keep]
    order = np.lexsort((step, case, t))
    t, case, step = t[order], case[order], step[order]
    m = len(t)
    if m > 9_999_999_999:
        raise ValueError("too many events for 10-digit event ids")

    u = rng.random(m)
    late = rng.integers(2, MAX_LATENESS_DAYS + 1, size=m)
    lateness = np.where(u < P_ARRIVE_SAME_DAY, 0, np.where(u < 0.9, 1, late)).astype(np.int64)
    tz_pick = rng.integers(1, len(TZ_OFFSET_MINUTES), size=m)
    tz = np.where(rng.random(m) < P_OFFSET_TIMESTAMP, tz_pick, 0).astype(np.int64)
    return _Events(
        event_num=np.arange(1, m + 1, dtype=np.int64),
        case_num=case + 1,
        type_code=_LIFECYCLE_STEP_TYPES[step],
        t=t,
        tz=tz,
        bad_ts=np.full(m, -1, dtype=np.int64),
        unit=unit[case],
        prio=prio[case],
        ingest_day=t // DAY_SECONDS + lateness,
        file=rng.integers(0, FILES_PER_DAY, size=m),
    )


def _inject_defects(rng: np.random.Generator, ev: _Events) -> tuple[_Events, dict[str, int]]:
    """Corrupt disjoint sets of events so every defect count is exactly reconcilable."""
    n = len(ev)
    want = {k: math.floor(rate * n + 0.5) for k, rate in DEFECT_RATES.items()}
    perm = rng.permutation(n)
    event_day = ev.t // DAY_SECONDS
    # A correction needs a strictly later ingest day that is still within the lateness bound.
    can_correct = (ev.ingest_day - event_day)[perm] < MAX_LATENESS_DAYS
    corr_src = perm[np.flatnonzero(can_correct)[: want["correction"]]]
    taken = np.zeros(n, dtype=bool)
    taken[corr_src] = True
    rest = perm[~taken[perm]]
    picked: dict[str, IntArray] = {"correction": corr_src}
    pos = 0
    for key in ("duplicate", "missing_case_id", "bad_timestamp", "unknown_event_type"):
        picked[key] = rest[pos : pos + want[key]]
        pos += want[key]
    picked["unknown_unit"] = rest[pos : pos + want["unknown_unit"]]

    case_num, type_code = ev.case_num.copy(), ev.type_code.copy()
    bad_ts, unit = ev.bad_ts.copy(), ev.unit.copy()
    case_num[picked["missing_case_id"]] = 0
    k = len(picked["bad_timestamp"])
    bad_ts[picked["bad_timestamp"]] = rng.integers(0, len(BAD_TIMESTAMP_TEMPLATES), size=k)
    k = len(picked["unknown_event_type"])
    type_code[picked["unknown_event_type"]] = len(EVENT_TYPES) + rng.integers(
        0, len(UNKNOWN_EVENT_TYPES), size=k
    )
    unit[picked["unknown_unit"]] = UNKNOWN_UNIT
    base = _Events(
        event_num=ev.event_num,
        case_num=case_num,
        type_code=type_code,
        t=ev.t,
        tz=ev.tz,
        bad_ts=bad_ts,
        unit=unit,
        prio=ev.prio,
        ingest_day=ev.ingest_day,
        file=ev.file,
    )

    # Duplicates: same values, another file of the same or a later ingest day.
    src = picked["duplicate"]
    k = len(src)
    src_day = event_day[src]
    src_lateness = ev.ingest_day[src] - src_day
    dup_lateness = rng.integers(src_lateness, MAX_LATENESS_DAYS + 1)
    other_file = (ev.file[src] + rng.integers(1, FILES_PER_DAY, size=k)) % FILES_PER_DAY
    any_file = rng.integers(0, FILES_PER_DAY, size=k)
    dups = base.take(src)
    dups = _replace(
        dups,
        ingest_day=src_day + dup_lateness,
        file=np.where(dup_lateness == src_lateness, other_file, any_file),
    )

    # Corrections: strictly later ingest day, one field changed to another valid value.
    src = picked["correction"]
    k = len(src)
    src_day = event_day[src]
    corr_lateness = rng.integers(ev.ingest_day[src] - src_day + 1, MAX_LATENESS_DAYS + 1)
    corr_file = rng.integers(0, FILES_PER_DAY, size=k)
    kind = rng.integers(0, 3, size=k)
    new_prio = (ev.prio[src] + rng.integers(1, len(PRIORITIES), size=k)) % len(PRIORITIES)
    new_unit = (ev.unit[src] - 1 + rng.integers(1, N_UNITS, size=k)) % N_UNITS + 1
    lo, hi = CORRECTION_SHIFT_SECONDS
    shift = rng.integers(lo, hi + 1, size=k) * rng.choice(np.array([-1, 1]), size=k)
    shifted = ev.t[src] + shift
    shifted = np.where(shifted // DAY_SECONDS == src_day, shifted, ev.t[src] - shift)
    corrs = _replace(
        base.take(src),
        prio=np.where(kind == 0, new_prio, ev.prio[src]),
        unit=np.where(kind == 1, new_unit, ev.unit[src]),
        t=np.where(kind == 2, shifted, ev.t[src]),
        ingest_day=src_day + corr_lateness,
        file=corr_file,
    )

    rows = _Events.concat([base, dups, corrs])
    # Rows within a file are roughly chronological, as an upstream exporter would write them.
    order = np.lexsort((np.arange(len(rows)), rows.t, rows.file, rows.ingest_day))
    injected = {key: len(picked[key]) for key in DEFECT_RATES}
    return rows.take(order), injected


def _replace(ev: _Events, **changes: IntArray) -> _Events:
    fields = dict(ev.__dict__)
    fields.update({k: np.asarray(v, dtype=np.int64) for k, v in changes.items()})
    return _Events(**fields)


def _render(rows: _Events, start: date) -> list[list[str]]:
    """Turn numeric codes into the six landing string columns (vectorized)."""
    event_id = np.strings.add("E", np.strings.zfill(rows.event_num.astype("U10"), 10))
    case_str = np.strings.add("C", np.strings.zfill(rows.case_num.astype("U9"), 9))
    case_id = np.where(rows.case_num == 0, "", case_str)
    base_epoch = (start - _EPOCH).days * DAY_SECONDS
    offset_seconds = np.array(TZ_OFFSET_MINUTES, dtype=np.int64)[rows.tz] * 60
    local = (base_epoch + rows.t + offset_seconds).astype("datetime64[s]")
    ts = np.strings.add(np.datetime_as_string(local, unit="s"), _TZ_SUFFIX_TABLE[rows.tz])
    ts_list: list[str] = ts.tolist()
    for i in np.flatnonzero(rows.bad_ts >= 0).tolist():
        year = (start + timedelta(days=int(rows.t[i] // DAY_SECONDS))).year
        ts_list[i] = BAD_TIMESTAMP_TEMPLATES[rows.bad_ts[i]].format(year=year)
    return [
        event_id.tolist(),
        case_id.tolist(),
        _TYPE_TABLE[rows.type_code].tolist(),
        ts_list,
        _UNIT_TABLE[rows.unit].tolist(),
        _PRIORITY_TABLE[rows.prio].tolist(),
    ]


def _write_landing(events_dir: Path, rows: _Events, start: date, n_days: int) -> int:
    """Write every (ingest day, file) slot, including empty ones, so the layout is fixed."""
    columns = _render(rows, start)
    slot = rows.ingest_day * FILES_PER_DAY + rows.file
    n_ingest_days = n_days + MAX_LATENESS_DAYS
    bounds = np.searchsorted(slot, np.arange(n_ingest_days * FILES_PER_DAY + 1)).tolist()
    written = 0
    for day in range(n_ingest_days):
        day_dir = events_dir / f"ingest_date={(start + timedelta(days=day)).isoformat()}"
        day_dir.mkdir(parents=True, exist_ok=True)
        for f in range(FILES_PER_DAY):
            s = day * FILES_PER_DAY + f
            lo, hi = bounds[s], bounds[s + 1]
            records = zip(*(col[lo:hi] for col in columns), strict=True)
            if f < CSV_FILES_PER_DAY:
                with (day_dir / f"events-{f:03d}.csv").open(
                    "w", encoding="utf-8", newline=""
                ) as fh:
                    writer = csv.writer(fh, lineterminator="\n")
                    writer.writerow(COLUMNS)
                    writer.writerows(records)
            else:
                lines = [
                    json.dumps(dict(zip(COLUMNS, rec, strict=True)), separators=(",", ":")) + "\n"
                    for rec in records
                ]
                with (day_dir / f"events-{f:03d}.jsonl").open(
                    "w", encoding="utf-8", newline=""
                ) as fh:
                    fh.writelines(lines)
            written += 1
    return written


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8", newline="")


def _write_snapshot(
    version_dir: Path,
    name: str,
    version: str,
    published_on: date,
    file: str,
    key_columns: list[str] | None = None,
) -> None:
    """Written after the payload, so a present snapshot.json implies a complete version."""
    meta: dict[str, object] = {
        "name": name,
        "version": version,
        "published_on": published_on.isoformat(),
        "file": file,
    }
    if key_columns:
        meta["key_columns"] = key_columns
    _write_json(version_dir / "snapshot.json", meta)


def _reorg_date(start: date, end: date) -> date:
    """Middle business date of the period (the earlier one when there are two)."""
    return start + timedelta(days=(end - start).days // 2)


def _write_reference(reference_dir: Path, start: date, end: date) -> None:
    """Org hierarchy with one mid-period re-org; an SLA calendar that later gains a holiday."""
    valid_from = (start - timedelta(days=365)).isoformat()
    reorg = _reorg_date(start, end)
    v1_rows = [
        (f"U{i:02d}", REGIONS[(i - 1) % len(REGIONS)], valid_from, "")
        for i in range(1, N_UNITS + 1)
    ]
    v2_rows: list[tuple[str, str, str, str]] = []
    for unit_id, region, frm, _ in v1_rows:
        if unit_id in REORG_MOVES:
            assert REORG_MOVES[unit_id] != region
            v2_rows.append((unit_id, region, frm, reorg.isoformat()))
            v2_rows.append((unit_id, REORG_MOVES[unit_id], reorg.isoformat(), ""))
        else:
            v2_rows.append((unit_id, region, frm, ""))
    org_dir = reference_dir / "org_hierarchy"
    header = ["unit_id", "region", "valid_from", "valid_to"]
    for version, rows, published in (
        ("v0001", v1_rows, start - timedelta(days=7)),
        ("v0002", v2_rows, reorg - timedelta(days=3)),
    ):
        version_dir = org_dir / version
        version_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=header).to_csv(
            version_dir / "units.csv", index=False, lineterminator="\n", encoding="utf-8"
        )
        _write_snapshot(
            version_dir, "org_hierarchy", version, published, "units.csv", ["unit_id", "valid_from"]
        )

    span = (end - start).days
    first_holiday = start + timedelta(days=span // 4)
    second_holiday = start + timedelta(days=(3 * span) // 4)
    if second_holiday <= first_holiday:  # very short periods: keep the holidays distinct
        second_holiday = first_holiday + timedelta(days=1)
    cal_dir = reference_dir / "sla_calendar"
    for version, holidays, published in (
        ("v0001", [first_holiday], start - timedelta(days=7)),
        ("v0002", [first_holiday, second_holiday], reorg),
    ):
        payload = {
            "targets_hours": dict(SLA_TARGET_HOURS),
            "holidays": [h.isoformat() for h in holidays],
        }
        _write_json(cal_dir / version / "calendar.json", payload)
        _write_snapshot(cal_dir / version, "sla_calendar", version, published, "calendar.json")


def _write_readme(path: Path, summary: DemoDataSummary, *, seed: int, scale: float) -> None:
    """Human-facing description; derived only from the arguments, so it is deterministic too."""
    last_ingest = summary.end + timedelta(days=MAX_LATENESS_DAYS)
    rates = "\n".join(
        f"  {key:<20} {rate:.1%} of generated events (this run: {summary.injected[key]})"
        for key, rate in DEFECT_RATES.items()
    )
    text = f"""Demo landing zone (generated; do not edit by hand)
=================================================

Business dates: {summary.start.isoformat()} .. {summary.end.isoformat()} (UTC), seed={seed}, \
scale={scale!r}
Ingest dates:   {summary.start.isoformat()} .. {last_ingest.isoformat()}
Raw rows:       {summary.events_written} in {summary.landing_files} files

case_events/ingest_date=YYYY-MM-DD/
  events-000.csv .. events-002.csv   CSV, header {",".join(COLUMNS)}, UTF-8, LF
  events-003.jsonl                   one JSON object per line, the same six keys, all strings

event_ts is ISO-8601: mostly UTC with "Z"; {P_OFFSET_TIMESTAMP:.0%} of rows carry an equivalent
non-UTC offset (same instant). Events arrive {P_ARRIVE_SAME_DAY:.0%} on their own date,
{P_ARRIVE_NEXT_DAY:.0%} the next day, the rest 2..{MAX_LATENESS_DAYS} days late.

Injected defects (disjoint events):
{rates}

  duplicate:  identical values again in another file, same or later ingest date
  correction: same event_id in a strictly later ingest date with priority, unit_id or
              event_ts (same UTC date) changed; the later ingest date is the truth
  missing_case_id: empty case_id; bad_timestamp: unparseable or empty event_ts;
  unknown_event_type: e.g. {UNKNOWN_EVENT_TYPES[0]}; unknown_unit: {_UNIT_TABLE[UNKNOWN_UNIT]}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
