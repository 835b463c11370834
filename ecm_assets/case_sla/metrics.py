"""Pure transforms: case events -> daily SLA metrics -> rolling 30-day totals and monthly reports.

Time to resolution is measured from the case's `opened` event to each `resolved` event. The
SLA clock excludes the holidays of the calendar pinned for the resolution's business date;
a resolution breaches when its SLA hours exceed the target of the case's opening priority.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from ecm_assets.case_sla.contracts import (
    DAILY_METRICS,
    MONTHLY_REPORT,
    ROLLING_30D,
    ROLLING_WINDOW_DAYS,
)
from ecm_assets.contracts.boundaries import ReferenceSnapshot
from ecm_assets.contracts.transform import PartitionWindow, month_days  # noqa: F401

GROUP = ["business_date", "unit_id", "region"]
HOUR = pd.Timedelta(hours=1)


def _hours(delta: pd.Series) -> pd.Series:
    return delta / HOUR


def holiday_hours(start: pd.Series, end: pd.Series, holidays: list[str]) -> pd.Series:
    """Hours of [start, end] that fall on the given UTC holiday dates."""
    total = pd.Series(0.0, index=start.index)
    for day in holidays:
        h_start = pd.Timestamp(day, tz="UTC")
        h_end = h_start + pd.Timedelta(days=1)
        overlap = end.clip(upper=h_end) - start.clip(lower=h_start)
        total += _hours(overlap).clip(lower=0).fillna(0)
    return total


def _case_openings(events: pd.DataFrame) -> pd.DataFrame:
    opened = events[events["event_type"] == "opened"].sort_values(
        ["case_id", "event_ts", "event_id"]
    )
    opened = opened.drop_duplicates("case_id", keep="first")
    return opened.set_index("case_id")[["event_ts", "priority"]].rename(
        columns={"event_ts": "open_ts", "priority": "open_priority"}
    )


def daily_sla_metrics(
    case_events: pd.DataFrame,
    window: PartitionWindow,
    sla_calendar: Mapping[date, ReferenceSnapshot],
) -> pd.DataFrame:
    """Metrics of each business date in the window, from the events of the preceding history."""
    events = case_events.copy()
    events["business_date"] = pd.to_datetime(events["business_date"]).dt.normalize()
    events = events.sort_values(["case_id", "event_ts", "event_id"], kind="stable")
    days = pd.DatetimeIndex([pd.Timestamp(d) for d in window.partitions])
    openings = _case_openings(events)
    in_window = events[events["business_date"].isin(days)]

    counts = in_window.groupby([*GROUP, "event_type"]).size().unstack("event_type", fill_value=0)
    for kind in ("opened", "escalated", "resolved", "reopened"):
        if kind not in counts.columns:
            counts[kind] = 0
    out = pd.DataFrame(
        {
            "cases_opened": counts["opened"],
            "cases_escalated": counts["escalated"],
            "cases_resolved": counts["resolved"],
            "cases_reopened": counts["reopened"],
        },
        index=counts.index,
    )

    # First assignment of each case, counted on the day it happened.
    assigned = events[events["event_type"] == "assigned"].drop_duplicates("case_id", keep="first")
    assigned = assigned[assigned["business_date"].isin(days)].join(openings, on="case_id")
    known = assigned["open_ts"].notna() & (assigned["open_ts"] <= assigned["event_ts"])
    assigned = assigned.assign(
        hours=_hours(assigned["event_ts"] - assigned["open_ts"]).where(known)
    )
    first_assigned = assigned.groupby(GROUP).size()
    median_assign = assigned[known].groupby(GROUP)["hours"].median()

    resolved = in_window[in_window["event_type"] == "resolved"].join(openings, on="case_id")
    known = resolved["open_ts"].notna() & (resolved["open_ts"] <= resolved["event_ts"])
    resolved = resolved.assign(known=known)
    resolved["hours"] = _hours(resolved["event_ts"] - resolved["open_ts"]).where(known)
    versions = {d: sla_calendar[d.date()] for d in days}
    resolved["sla_hours"] = np.nan
    resolved["target"] = np.nan
    for day, snapshot in versions.items():
        on_day = resolved["business_date"] == day
        if not on_day.any():
            continue
        part = resolved[on_day]
        excluded = holiday_hours(part["open_ts"], part["event_ts"], snapshot.data["holidays"])
        resolved.loc[on_day, "sla_hours"] = part["hours"] - excluded
        resolved.loc[on_day, "target"] = part["open_priority"].map(snapshot.data["targets_hours"])
    resolved["breached"] = resolved["known"] & (resolved["sla_hours"] > resolved["target"])
    breached = resolved.groupby(GROUP)["breached"].sum()
    without_open = (~resolved["known"]).groupby([resolved[c] for c in GROUP]).sum()
    p90 = resolved[resolved["known"]].groupby(GROUP)["hours"].quantile(0.9)

    out["cases_first_assigned"] = first_assigned
    out["sla_breached"] = breached
    out["resolved_without_open"] = without_open
    out["median_hours_to_first_assignment"] = median_assign
    out["p90_hours_to_resolution"] = p90
    count_cols = [c.name for c in DAILY_METRICS.columns if c.sql_type == "BIGINT"]
    out[count_cols] = out[count_cols].fillna(0).astype("int64")
    for col in ("median_hours_to_first_assignment", "p90_hours_to_resolution"):
        out[col] = out[col].astype("float64").round(6)
    out = out.reset_index()
    out["sla_calendar_version"] = out["business_date"].map(
        {d: s.binding.version for d, s in versions.items()}
    )
    out = out.sort_values(GROUP, kind="stable").reset_index(drop=True)
    return out[DAILY_METRICS.column_names]


def rolling_30d(case_sla_daily_metrics: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    """30-day totals per unit and region ending on each business date of the window."""
    daily = case_sla_daily_metrics.copy()
    daily["business_date"] = pd.to_datetime(daily["business_date"]).dt.normalize()
    frames = []
    for end in window.partitions:
        end_ts = pd.Timestamp(end)
        start_ts = end_ts - pd.Timedelta(days=ROLLING_WINDOW_DAYS - 1)
        span = daily[(daily["business_date"] >= start_ts) & (daily["business_date"] <= end_ts)]
        if span.empty:
            continue
        agg = span.groupby(["unit_id", "region"]).agg(
            days_with_activity=("business_date", "nunique"),
            cases_opened=("cases_opened", "sum"),
            cases_resolved=("cases_resolved", "sum"),
            sla_breached=("sla_breached", "sum"),
        )
        agg = agg.reset_index()
        agg.insert(0, "window_start", start_ts)
        agg.insert(0, "business_date", end_ts)
        frames.append(agg)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in ROLLING_30D.column_names})
    out = pd.concat(frames, ignore_index=True)
    out["breach_rate"] = _rate(out["sla_breached"], out["cases_resolved"])
    return out.sort_values(["business_date", "unit_id", "region"]).reset_index(drop=True)[
        ROLLING_30D.column_names
    ]


def monthly_report(case_sla_daily_metrics: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    """Per month of the window: totals per region and unit over the month's daily metrics."""
    daily = case_sla_daily_metrics.copy()
    daily["business_date"] = pd.to_datetime(daily["business_date"]).dt.normalize()
    daily["report_month"] = daily["business_date"].dt.to_period("M").dt.to_timestamp()
    months = pd.DatetimeIndex([pd.Timestamp(d) for d in window.partitions])
    daily = daily[daily["report_month"].isin(months)]
    agg = daily.groupby(["report_month", "region", "unit_id"]).agg(
        days_reported=("business_date", "nunique"),
        cases_opened=("cases_opened", "sum"),
        cases_resolved=("cases_resolved", "sum"),
        cases_escalated=("cases_escalated", "sum"),
        cases_reopened=("cases_reopened", "sum"),
        sla_breached=("sla_breached", "sum"),
    )
    out = agg.reset_index()
    out["breach_rate"] = _rate(out["sla_breached"], out["cases_resolved"])
    out = out.astype(
        {c: "int64" for c in MONTHLY_REPORT.column_names if c.startswith(("cases", "sla", "days"))}
    )
    return out.sort_values(["report_month", "region", "unit_id"]).reset_index(drop=True)[
        MONTHLY_REPORT.column_names
    ]


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    rate = numerator.astype("float64") / denominator.where(denominator > 0)
    return rate.round(6)


def _dtype(column: str) -> str:
    if column in ("business_date", "window_start"):
        return "datetime64[ns]"
    if column in ("unit_id", "region"):
        return "object"
    return "float64" if column == "breach_rate" else "int64"
