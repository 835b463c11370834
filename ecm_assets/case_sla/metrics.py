"""Pure transforms: case events -> daily SLA metrics -> rolling 30-day totals and monthly reports.

Time to resolution is measured from the case's `opened` event to each `resolved` event. The
SLA clock excludes the holidays of the calendar pinned for the resolution's business date;
a resolution breaches when its SLA hours exceed the target of the case's opening priority.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandas as pd

from ecm_assets.case_sla.contracts import (
    DAILY_METRICS,
    MONTHLY_REPORT,
    ROLLING_30D,
    ROLLING_WINDOW_DAYS,
)
from ecm_assets.contracts.boundaries import ReferenceSnapshot
from ecm_assets.contracts.transform import (  # noqa: F401
    PartitionWindow,
    UpstreamRelation,
    month_days,
    run_sql,
)

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


DAILY_METRICS_SQL = """
WITH events AS (
    SELECT event_id, case_id, event_type, event_ts, business_date::DATE AS business_date,
           unit_id, region, priority
    FROM case_events
), in_window AS (
    SELECT * FROM events WHERE business_date IN (SELECT business_date FROM calendar)
), opened AS (
    -- a case opens at its first "opened" event (by time, then event_id)
    SELECT case_id, arg_min(event_ts, (event_ts, event_id)) AS open_ts,
           arg_min(priority, (event_ts, event_id)) AS open_priority
    FROM events WHERE event_type = 'opened' GROUP BY case_id
), first_assigned AS (
    SELECT case_id, arg_min(event_ts, (event_ts, event_id)) AS ts,
           arg_min(business_date, (event_ts, event_id)) AS business_date,
           arg_min(unit_id, (event_ts, event_id)) AS unit_id,
           arg_min(region, (event_ts, event_id)) AS region
    FROM events WHERE event_type = 'assigned' GROUP BY case_id
), assigned AS (
    SELECT f.business_date, f.unit_id, f.region, count(*) AS cases_first_assigned,
           median((epoch_ns(f.ts) - epoch_ns(o.open_ts))::DOUBLE / 3.6e12)
               FILTER (o.open_ts <= f.ts) AS median_hours
    FROM first_assigned f LEFT JOIN opened o USING (case_id)
    WHERE f.business_date IN (SELECT business_date FROM calendar)
    GROUP BY ALL
), resolved AS (
    SELECT e.event_id, e.business_date, e.unit_id, e.region, e.event_ts, o.open_ts,
           o.open_priority, c.version,
           coalesce(o.open_ts <= e.event_ts, false) AS known,
           (epoch_ns(e.event_ts) - epoch_ns(o.open_ts))::DOUBLE / 3.6e12 AS hours
    FROM in_window e JOIN calendar c USING (business_date)
    LEFT JOIN opened o USING (case_id)
    WHERE e.event_type = 'resolved'
), excluded AS (
    -- hours of [open, resolution] on the holidays of the calendar pinned for the day
    SELECT r.event_id, sum(greatest(0.0, (epoch_ns(least(r.event_ts, h.holiday_end))
               - epoch_ns(greatest(r.open_ts, h.holiday_start)))::DOUBLE / 3.6e12)) AS hours
    FROM resolved r JOIN holidays h ON h.version = r.version
    WHERE r.open_ts IS NOT NULL
    GROUP BY r.event_id
), sla AS (
    SELECT r.business_date, r.unit_id, r.region,
        count(*) FILTER (r.known AND r.hours - coalesce(x.hours, 0.0) > t.hours) AS sla_breached,
        count(*) FILTER (NOT r.known) AS resolved_without_open,
        quantile_cont(r.hours, 0.9) FILTER (r.known) AS p90
    FROM resolved r LEFT JOIN excluded x USING (event_id)
    LEFT JOIN targets t ON t.version = r.version AND t.priority = r.open_priority
    GROUP BY ALL
), counts AS (
    SELECT business_date, unit_id, region,
        count(*) FILTER (event_type = 'opened') AS cases_opened,
        count(*) FILTER (event_type = 'escalated') AS cases_escalated,
        count(*) FILTER (event_type = 'resolved') AS cases_resolved,
        count(*) FILTER (event_type = 'reopened') AS cases_reopened
    FROM in_window
    WHERE unit_id IS NOT NULL AND region IS NOT NULL
    GROUP BY ALL
)
SELECT c.business_date, c.unit_id, c.region, c.cases_opened,
    coalesce(a.cases_first_assigned, 0) AS cases_first_assigned, c.cases_escalated,
    c.cases_resolved, c.cases_reopened, coalesce(s.sla_breached, 0) AS sla_breached,
    coalesce(s.resolved_without_open, 0) AS resolved_without_open,
    round(a.median_hours, 6) AS median_hours_to_first_assignment,
    round(s.p90, 6) AS p90_hours_to_resolution, k.version AS sla_calendar_version
FROM counts c
JOIN calendar k USING (business_date)
LEFT JOIN assigned a USING (business_date, unit_id, region)
LEFT JOIN sla s USING (business_date, unit_id, region)
ORDER BY c.business_date, c.unit_id, c.region
"""


def daily_sla_metrics(
    case_events: pd.DataFrame | UpstreamRelation,
    window: PartitionWindow,
    sla_calendar: Mapping[date, ReferenceSnapshot],
) -> pd.DataFrame:
    """Metrics of each business date in the window, from the events of the preceding history.

    A pure function computed in DuckDB SQL (DAILY_METRICS_SQL): the joins, first-event
    lookups and quantiles run columnar. The asset hands it the published events as an
    UpstreamRelation (read in the warehouse); tests and replays may hand it a plain frame.
    """
    versions = {d: sla_calendar[d] for d in window.partitions}
    calendar = pd.DataFrame(
        {
            "business_date": pd.to_datetime(list(versions)).astype("datetime64[ns]"),
            "version": [s.binding.version for s in versions.values()],
        }
    )
    seen = {s.binding.version: s.data for s in versions.values()}
    targets = pd.DataFrame(
        [(v, p, float(h)) for v, data in seen.items() for p, h in data["targets_hours"].items()],
        columns=["version", "priority", "hours"],
    )
    holidays = pd.DataFrame(
        [
            (v, pd.Timestamp(h, tz="UTC"), pd.Timestamp(h, tz="UTC") + pd.Timedelta(days=1))
            for v, data in seen.items()
            for h in data["holidays"]
        ],
        columns=["version", "holiday_start", "holiday_end"],
    ).astype({"holiday_start": "datetime64[ns, UTC]", "holiday_end": "datetime64[ns, UTC]"})
    out = run_sql(
        DAILY_METRICS_SQL,
        case_events=case_events,
        calendar=calendar,
        targets=targets,
        holidays=holidays,
    )
    out["business_date"] = pd.to_datetime(out["business_date"]).astype("datetime64[ns]")
    count_cols = [c.name for c in DAILY_METRICS.columns if c.sql_type == "BIGINT"]
    out[count_cols] = out[count_cols].astype("int64")
    for col in ("unit_id", "region", "sla_calendar_version"):
        out[col] = out[col].astype(object)
    for col in ("median_hours_to_first_assignment", "p90_hours_to_resolution"):
        out[col] = out[col].astype("float64")
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
