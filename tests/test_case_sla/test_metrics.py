"""Daily SLA metrics, rolling 30-day totals, monthly report and priority mix on tiny frames.

All expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ecm_assets.case_sla.contracts import (
    CASE_EVENTS,
    DAILY_METRICS,
    MONTHLY_REPORT,
    ROLLING_30D,
)
from ecm_assets.case_sla.metrics import (
    daily_sla_metrics,
    holiday_hours,
    month_days,
    monthly_report,
    rolling_30d,
)
from ecm_assets.case_sla.priority_mix import CONTRACT as PRIORITY_MIX_CONTRACT
from ecm_assets.case_sla.priority_mix import priority_mix
from ecm_assets.contracts.transform import PartitionWindow
from tests.test_case_sla._frames import day, snapshot, ts

TARGETS = {"P1": 8, "P2": 24, "P3": 72, "P4": 168}
D1, D2, D3 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)


def calendar(version: str, holidays: list[str] | None = None):
    return snapshot("sla_calendar", version, {"targets_hours": TARGETS, "holidays": holidays or []})


def ev(event_id, case_id, event_type, at, unit="U01", region="North", priority="P1"):
    """One published case event; business_date is the UTC date of event_ts."""
    t = ts(at)
    return {
        "event_id": event_id,
        "case_id": case_id,
        "event_type": event_type,
        "event_ts": t,
        "business_date": t.tz_localize(None).normalize(),
        "unit_id": unit,
        "region": region,
        "priority": priority,
        "ingest_date": t.tz_localize(None).normalize(),
        "source_file": "f.csv",
        "source_line": 2,
    }


def events(*rows) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=CASE_EVENTS.column_names)
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)
    frame["source_line"] = frame["source_line"].astype("int64")
    return frame


N, S = {"unit": "U01", "region": "North"}, {"unit": "U02", "region": "South"}

SCENARIO = events(
    # history before the window: C10 opened 08-31 20:00, resolved 09-01 06:00 = 10 h (P1: 8)
    ev("E00", "C10", "opened", "2026-08-31T20:00", **N, priority="P1"),
    ev("E26", "C10", "resolved", "2026-09-01T06:00", **N, priority="P1"),
    # U01/North
    ev("E01", "C1", "opened", "2026-09-01T08:00", **N, priority="P1"),
    ev("E02", "C1", "assigned", "2026-09-01T10:00", **N, priority="P1"),  # 2 h
    ev("E03", "C1", "resolved", "2026-09-01T14:00", **N, priority="P1"),  # 6 h <= 8
    ev("E04", "C2", "opened", "2026-09-01T09:00", **N, priority="P2"),
    ev("E05", "C2", "assigned", "2026-09-01T13:00", **N, priority="P2"),  # 4 h
    ev("E06", "C2", "escalated", "2026-09-02T01:00", **N, priority="P2"),
    ev("E07", "C2", "resolved", "2026-09-02T15:00", **N, priority="P2"),  # 30 h > 24
    ev("E08", "C3", "opened", "2026-09-02T00:00", **N, priority="P1"),
    ev("E09", "C3", "assigned", "2026-09-02T03:00", **N, priority="P1"),  # 3 h, first
    ev("E10", "C3", "assigned", "2026-09-02T05:00", **N, priority="P1"),  # not first
    ev("E11", "C3", "resolved", "2026-09-02T08:00", **N, priority="P1"),  # 8 h == 8: no breach
    # U02/South
    ev("E12", "C4", "opened", "2026-09-01T12:00", **S, priority="P3"),
    ev("E13", "C4", "assigned", "2026-09-02T12:00", **S, priority="P3"),  # 24 h
    ev("E14", "C4", "resolved", "2026-09-03T10:00", **S, priority="P3"),  # 46 h <= 72
    ev("E15", "C4", "reopened", "2026-09-03T11:00", **S, priority="P3"),
    ev("E16", "C4", "resolved", "2026-09-03T13:00", **S, priority="P3"),  # 49 h <= 72
    ev("E17", "C5", "resolved", "2026-09-03T09:00", **S, priority="P1"),  # no opening known
    ev("E18", "C7", "opened", "2026-09-02T06:00", **S, priority="P3"),
    # 14 h: target is the OPENING priority P3 (72 h), not the P1 on the resolution (8 h)
    ev("E19", "C7", "resolved", "2026-09-02T20:00", **S, priority="P1"),
    ev("E20", "C8", "opened", "2026-09-01T03:00", **S, priority="P4"),
    ev("E21", "C8", "resolved", "2026-09-03T03:00", **S, priority="P4"),  # 48 h <= 168
    ev("E22", "C9", "opened", "2026-09-03T00:00", **S, priority="P2"),
    ev("E24", "C9", "escalated", "2026-09-03T02:00", **S, priority="P2"),
    ev("E23", "C9", "resolved", "2026-09-03T06:00", **S, priority="P2"),  # 6 h <= 24
)

METRIC_COLS = [
    "cases_opened",
    "cases_first_assigned",
    "cases_escalated",
    "cases_resolved",
    "cases_reopened",
    "sla_breached",
    "resolved_without_open",
]


def test_daily_sla_metrics_hand_computed():
    window = PartitionWindow((D1, D2, D3))
    cal = {D1: calendar("cal-a"), D2: calendar("cal-a"), D3: calendar("cal-b")}
    out = daily_sla_metrics(SCENARIO, window, cal)

    assert list(out.columns) == DAILY_METRICS.column_names
    # No row for 08-31 (outside the window) nor for U01 on 09-03 (no activity).
    keys = [(r.business_date, r.unit_id, r.region) for r in out.itertuples()]
    assert keys == [
        (day("2026-09-01"), "U01", "North"),
        (day("2026-09-01"), "U02", "South"),
        (day("2026-09-02"), "U01", "North"),
        (day("2026-09-02"), "U02", "South"),
        (day("2026-09-03"), "U02", "South"),
    ]
    counts = out[METRIC_COLS].values.tolist()
    # columns: opened, first_assigned, escalated, resolved, reopened, breached, without_open
    assert counts == [
        # 09-01 U01: opened C1, C2; first assignments C1, C2; resolved C1 (6 h), C10 (10 h > 8)
        [2, 2, 0, 2, 0, 1, 0],
        # 09-01 U02: opened C4, C8
        [2, 0, 0, 0, 0, 0, 0],
        # 09-02 U01: opened C3; first assignment C3 only; escalated C2; resolved C2 (30 h > 24,
        # breach) and C3 (8 h, not > 8)
        [1, 1, 1, 2, 0, 1, 0],
        # 09-02 U02: opened C7; first assignment C4; resolved C7 (14 h vs P3 72 h)
        [1, 1, 0, 1, 0, 0, 0],
        # 09-03 U02: opened C9; escalated C9; resolved C4 twice, C5, C8, C9; reopened C4;
        # C5 has no opening -> resolved_without_open
        [1, 0, 1, 5, 1, 0, 1],
    ]
    for col in METRIC_COLS:
        assert out[col].dtype == "int64"

    # median hours to first assignment: 09-01 U01 median(2, 4) = 3; 09-02 U01 3; 09-02 U02 24.
    median = out["median_hours_to_first_assignment"].tolist()
    assert median[0] == 3.0
    assert np.isnan(median[1])
    assert median[2] == 3.0
    assert median[3] == 24.0
    assert np.isnan(median[4])

    # p90 (linear): position = 0.9 * (n - 1) in the sorted hours.
    # 09-01 U01 [6, 10]: 6 + 0.9 * (10 - 6) = 9.6
    # 09-02 U01 [8, 30]: 8 + 0.9 * (30 - 8) = 27.8
    # 09-02 U02 [14] -> 14
    # 09-03 U02 [6, 46, 48, 49] (C5 excluded): position 2.7 -> 48 + 0.7 * (49 - 48) = 48.7
    p90 = out["p90_hours_to_resolution"].tolist()
    assert p90[0] == pytest.approx(9.6)
    assert np.isnan(p90[1])
    assert p90[2] == pytest.approx(27.8)
    assert p90[3] == pytest.approx(14.0)
    assert p90[4] == pytest.approx(48.7)

    assert out["sla_calendar_version"].tolist() == ["cal-a", "cal-a", "cal-a", "cal-a", "cal-b"]


def test_resolution_before_the_opening_counts_as_without_open():
    # Resolved 09-02 05:00 but opened later that day: no valid opening before it.
    frame = events(
        ev("E1", "C1", "resolved", "2026-09-02T05:00"),
        ev("E2", "C1", "opened", "2026-09-02T06:00"),
    )
    out = daily_sla_metrics(frame, PartitionWindow((D2,)), {D2: calendar("v")})
    assert out.loc[0, "cases_resolved"] == 1
    assert out.loc[0, "resolved_without_open"] == 1
    assert out.loc[0, "sla_breached"] == 0
    assert np.isnan(out.loc[0, "p90_hours_to_resolution"])


def _p1_case_across_a_holiday() -> pd.DataFrame:
    # Open 09-01 08:00, resolved 09-02 04:00: 16 h on 09-01 + 4 h on 09-02 = 20 h.
    return events(
        ev("E1", "C1", "opened", "2026-09-01T08:00", priority="P1"),
        ev("E2", "C1", "resolved", "2026-09-02T04:00", priority="P1"),
    )


def test_holiday_hours_are_excluded_from_the_sla_clock():
    window = PartitionWindow((D2,))
    # Holiday 09-01 covers 08:00-24:00 of the case = 16 h -> SLA hours 20 - 16 = 4 <= 8.
    with_holiday = daily_sla_metrics(
        _p1_case_across_a_holiday(), window, {D2: calendar("h", ["2026-09-01"])}
    )
    assert with_holiday.loc[0, "sla_breached"] == 0
    # p90 is plain elapsed time, holidays are only removed from the SLA clock.
    assert with_holiday.loc[0, "p90_hours_to_resolution"] == pytest.approx(20.0)
    # No holiday: 20 h > 8 h -> breached.
    without = daily_sla_metrics(_p1_case_across_a_holiday(), window, {D2: calendar("n")})
    assert without.loc[0, "sla_breached"] == 1


def test_holidays_come_from_the_calendar_pinned_for_the_resolution_date():
    # The calendar of the opening date (09-01) lists the holiday, the one of the resolution
    # date (09-02) does not: the resolution's calendar rules -> 20 h > 8 h, breached.
    window = PartitionWindow((D1, D2))
    cal = {D1: calendar("old", ["2026-09-01"]), D2: calendar("new")}
    out = daily_sla_metrics(_p1_case_across_a_holiday(), window, cal)
    assert out[["business_date", "sla_breached", "sla_calendar_version"]].values.tolist() == [
        [day("2026-09-01"), 0, "old"],
        [day("2026-09-02"), 1, "new"],
    ]


def test_holiday_hours_helper():
    start = pd.Series(
        [
            ts("2026-09-01T08:00"),  # [09-01 08:00, 09-02 04:00]: 16 h on 09-01
            ts("2026-09-01T02:00"),  # inside the holiday: 3 h
            ts("2026-08-31T20:00"),  # two holidays: 24 h (09-01) + 6 h (09-02) = 30 h
            ts("2026-09-03T00:00"),  # after the holidays: 0
            pd.NaT,  # unknown start: 0
        ],
        index=[10, 11, 12, 13, 14],
    )
    end = pd.Series(
        [
            ts("2026-09-02T04:00"),
            ts("2026-09-01T05:00"),
            ts("2026-09-02T06:00"),
            ts("2026-09-03T05:00"),
            ts("2026-09-03T05:00"),
        ],
        index=[10, 11, 12, 13, 14],
    )
    start = pd.to_datetime(start, utc=True)
    end = pd.to_datetime(end, utc=True)
    one = holiday_hours(start, end, ["2026-09-01"])
    assert one.tolist() == [16.0, 3.0, 24.0, 0.0, 0.0]
    assert list(one.index) == [10, 11, 12, 13, 14]
    two = holiday_hours(start, end, ["2026-09-01", "2026-09-02"])
    # row 10: 16 h + 4 h (09-02 00:00-04:00) = 20 h; row 12: 24 + 6 = 30 h
    assert two.tolist() == [20.0, 3.0, 30.0, 0.0, 0.0]
    assert holiday_hours(start, end, []).tolist() == [0.0] * 5


# --------------------------------------------------------------------------- rolling 30 days


def daily_row(d: date, unit="U01", region="North", opened=1, resolved=2, breached=1, **kw):
    return {
        "business_date": pd.Timestamp(d),
        "unit_id": unit,
        "region": region,
        "cases_opened": opened,
        "cases_first_assigned": kw.get("first_assigned", 0),
        "cases_escalated": kw.get("escalated", 0),
        "cases_resolved": resolved,
        "cases_reopened": kw.get("reopened", 0),
        "sla_breached": breached,
        "resolved_without_open": 0,
        "median_hours_to_first_assignment": np.nan,
        "p90_hours_to_resolution": np.nan,
        "sla_calendar_version": "v",
    }


def daily_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=DAILY_METRICS.column_names)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def test_rolling_30d_change_moves_that_day_and_the_next_29_only():
    # U01 has opened 1 / resolved 2 / breached 1 every day 08-01..10-15.
    all_days = _days(date(2026, 8, 1), date(2026, 10, 15))
    base = daily_frame(daily_row(d) for d in all_days)
    changed = base.copy()
    hit = changed["business_date"] == pd.Timestamp("2026-09-01")
    # 09-01 becomes opened 10 / resolved 5 / breached 4: +9 / +3 / +3.
    changed.loc[hit, ["cases_opened", "cases_resolved", "sla_breached"]] = [10, 5, 4]

    window = PartitionWindow(tuple(_days(date(2026, 8, 31), date(2026, 10, 1))))
    before = rolling_30d(base, window)
    after = rolling_30d(changed, window)
    assert list(before.columns) == ROLLING_30D.column_names
    assert len(before) == len(after) == 32  # one row per day 08-31..10-01

    for b, a in zip(before.itertuples(), after.itertuples(), strict=True):
        assert a.business_date == b.business_date
        # window_start = business_date - 29 days
        assert b.window_start == b.business_date - pd.Timedelta(days=29)
        # every 30-day window has a full month of data: 30 days, 30 / 60 / 30, rate 0.5
        assert (b.days_with_activity, b.cases_opened, b.cases_resolved, b.sla_breached) == (
            30,
            30,
            60,
            30,
        )
        assert b.breach_rate == pytest.approx(0.5)
        if pd.Timestamp("2026-09-01") <= b.business_date <= pd.Timestamp("2026-09-30"):
            # 09-01 is inside [d - 29, d] for d in 09-01..09-30
            assert (a.cases_opened, a.cases_resolved, a.sla_breached) == (39, 63, 33)
            assert a.breach_rate == pytest.approx(33 / 63, abs=1e-6)
        else:
            # 08-31 (the day before) and 10-01 (window 09-02..10-01) are untouched
            assert (a.cases_opened, a.cases_resolved, a.sla_breached) == (30, 60, 30)
            assert a.breach_rate == pytest.approx(0.5)


def test_rolling_30d_partial_history_and_null_breach_rate():
    daily = daily_frame(
        [
            daily_row(date(2026, 9, 1), opened=2, resolved=4, breached=1),
            daily_row(date(2026, 9, 5), opened=1, resolved=0, breached=0),
            daily_row(date(2026, 9, 4), "U02", "South", opened=3, resolved=0, breached=0),
            # 09-03 - 29 days = 08-05: the first day of the 09-03 window (inclusive)
            daily_row(date(2026, 8, 5), opened=50, resolved=50, breached=50),
            # 08-04 is 30 days before 09-03: outside every window below
            daily_row(date(2026, 8, 4), opened=70, resolved=70, breached=70),
        ]
    )
    out = rolling_30d(daily, PartitionWindow((date(2026, 9, 3), date(2026, 9, 5))))
    assert out[
        [
            "business_date",
            "window_start",
            "unit_id",
            "region",
            "days_with_activity",
            "cases_opened",
            "cases_resolved",
            "sla_breached",
        ]
    ].values.tolist() == [
        # 09-03: window 08-05..09-03 -> U01 08-05 + 09-01: 50+2 = 52, 50+4 = 54, 50+1 = 51
        [day("2026-09-03"), day("2026-08-05"), "U01", "North", 2, 52, 54, 51],
        # 09-05: window 08-07..09-05 -> 09-01 + 09-05 for U01; 09-04 for U02
        [day("2026-09-05"), day("2026-08-07"), "U01", "North", 2, 3, 4, 1],
        [day("2026-09-05"), day("2026-08-07"), "U02", "South", 1, 3, 0, 0],
    ]
    # breach_rate: 51 / 54, 1 / 4, and null when nothing was resolved (0 / 0)
    assert out.loc[0, "breach_rate"] == pytest.approx(51 / 54, abs=1e-6)
    assert out.loc[1, "breach_rate"] == pytest.approx(0.25)
    assert pd.isna(out.loc[2, "breach_rate"])


# --------------------------------------------------------------------------- monthly report


def test_monthly_report_sums_per_month_region_and_unit():
    daily = daily_frame(
        [
            daily_row(date(2026, 9, 1), opened=2, resolved=1, breached=1, escalated=1),
            daily_row(date(2026, 9, 15), opened=3, resolved=4, breached=1, reopened=1),
            daily_row(date(2026, 9, 30), opened=1, resolved=1, breached=0),
            # same unit after a reorg: its own report row
            daily_row(date(2026, 9, 20), "U01", "East", opened=5, resolved=2, breached=2),
            daily_row(date(2026, 9, 10), "U02", "South", opened=1, resolved=0, breached=0),
            # other months: never part of September
            daily_row(date(2026, 8, 31), opened=100, resolved=100, breached=100),
            daily_row(date(2026, 10, 1), opened=100, resolved=100, breached=100),
        ]
    )
    out = monthly_report(daily, PartitionWindow((date(2026, 9, 1),)))
    assert list(out.columns) == MONTHLY_REPORT.column_names
    sep = day("2026-09-01")
    assert out.drop(columns="breach_rate").values.tolist() == [
        # report_month, region, unit, days, opened, resolved, escalated, reopened, breached
        [sep, "East", "U01", 1, 5, 2, 0, 0, 2],
        # North U01: days 09-01, 09-15, 09-30 = 3; opened 2+3+1 = 6; resolved 1+4+1 = 6;
        # escalated 1; reopened 1; breached 1+1+0 = 2
        [sep, "North", "U01", 3, 6, 6, 1, 1, 2],
        [sep, "South", "U02", 1, 1, 0, 0, 0, 0],
    ]
    # 2 / 2 = 1; 2 / 6 = 0.333333; 0 / 0 -> null
    assert out.loc[0, "breach_rate"] == pytest.approx(1.0)
    assert out.loc[1, "breach_rate"] == pytest.approx(2 / 6, abs=1e-6)
    assert pd.isna(out.loc[2, "breach_rate"])
    for col in MONTHLY_REPORT.column_names:
        if col.startswith(("cases", "sla", "days")):
            assert out[col].dtype == "int64"


def test_monthly_report_two_months():
    daily = daily_frame(
        [
            daily_row(date(2026, 9, 30), opened=1, resolved=2, breached=1),
            daily_row(date(2026, 10, 1), opened=4, resolved=4, breached=0),
            daily_row(date(2026, 10, 2), opened=1, resolved=0, breached=0),
        ]
    )
    out = monthly_report(daily, PartitionWindow((date(2026, 9, 1), date(2026, 10, 1))))
    assert out[
        ["report_month", "days_reported", "cases_opened", "cases_resolved"]
    ].values.tolist() == [
        [day("2026-09-01"), 1, 1, 2],
        # October: 10-01 + 10-02 -> 2 days, opened 4 + 1 = 5, resolved 4 + 0 = 4
        [day("2026-10-01"), 2, 5, 4],
    ]


def test_month_days():
    assert month_days(date(2026, 2, 1))[-1] == date(2026, 2, 28)
    assert len(month_days(date(2026, 9, 1))) == 30
    assert len(month_days(date(2026, 12, 1))) == 31


# --------------------------------------------------------------------------- priority mix


def test_priority_mix_counts_events_and_distinct_cases():
    frame = events(
        ev("E1", "C1", "opened", "2026-09-01T01:00", priority="P1"),
        ev("E2", "C2", "opened", "2026-09-01T02:00", priority="P1"),
        ev("E3", "C1", "assigned", "2026-09-01T03:00", priority="P1"),
        ev("E4", "C1", "assigned", "2026-09-01T04:00", priority="P1"),
        ev("E5", "C3", "opened", "2026-09-01T05:00", priority="P2"),
        ev("E6", "C1", "resolved", "2026-09-02T06:00", priority="P1"),
        ev("E7", "C3", "escalated", "2026-09-02T07:00", priority="P2"),
        ev("E8", "C3", "escalated", "2026-09-02T08:00", priority="P2"),
    )
    out = priority_mix(frame, PartitionWindow((D1, D2)))
    assert list(out.columns) == PRIORITY_MIX_CONTRACT.column_names
    assert out.values.tolist() == [
        # (P1, assigned) on 09-01: E3, E4 -> 2 events, 1 case (C1)
        [day("2026-09-01"), "P1", "assigned", 2, 1],
        # (P1, opened): E1 (C1), E2 (C2) -> 2 events, 2 cases
        [day("2026-09-01"), "P1", "opened", 2, 2],
        [day("2026-09-01"), "P2", "opened", 1, 1],
        [day("2026-09-02"), "P1", "resolved", 1, 1],
        # (P2, escalated): E7, E8 -> 2 events, 1 case (C3)
        [day("2026-09-02"), "P2", "escalated", 2, 1],
    ]
    assert out["events"].dtype == "int64"
    assert out["cases"].dtype == "int64"


def test_a_days_metrics_do_not_depend_on_the_window():
    cal = {D1: calendar("cal-a"), D2: calendar("cal-a"), D3: calendar("cal-b")}
    whole = daily_sla_metrics(SCENARIO, PartitionWindow((D1, D2, D3)), cal)
    for d in (D1, D2, D3):
        one = daily_sla_metrics(SCENARIO, PartitionWindow((d,)), {d: cal[d]})
        expected = whole[whole["business_date"] == pd.Timestamp(d)].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, expected)
