"""Schedules: the daily lookback recompute and the monthly report, built per location.

A code location says which datasets each schedule runs (`build_definitions(lookback_schedule=,
monthly_schedule=)`); nothing is scheduled implicitly. A schedule ticks in its datasets'
business-day timezone and every date computation converts the tick to that zone first: a tick
presented in any other timezone (or a process whose TZ differs) cannot shift the dates it
requests, and DST transitions cannot fire twice or skip a day. Both schedules are deployed
STOPPED: a freshly deployed code location must not start recomputing published partitions
until an operator switches them on deliberately.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ecm_assets.contracts.dataset import Dataset
from ecm_assets.orchestration.factory import TRIGGER_TAG

#: Run tags by which one run owns a partition range (read by Dagster and the single-run
#: backfill policy of every asset; the same tags `ecm materialize --partition-range` sets).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

LOOKBACK_SCHEDULE = "daily_lookback_schedule"
MONTHLY_SCHEDULE = "monthly_report_schedule"
#: 01:00 business-day time: after the day closed, leaving time for the night's landing files.
DAILY_CRON = "0 1 * * *"


def monthly_cron(lateness_days: int) -> str:
    """03:00 on day lateness_days + 1: the last days of the previous month have had their
    full lateness allowance to land before the month is reported."""
    return f"0 3 {lateness_days + 1} * *"


def _local_date(tick: datetime, timezone: str = "UTC") -> date:
    """The business date of an aware datetime in `timezone`; naive ones are refused."""
    if tick.tzinfo is None or tick.utcoffset() is None:
        raise ValueError(
            f"naive datetime {tick.isoformat()!r}: a schedule tick must be timezone-aware, "
            f"since business dates are {timezone} calendar days and a naive time has none"
        )
    return tick.astimezone(ZoneInfo(timezone)).date()


def lookback_dates(tick: datetime, days: int, timezone: str = "UTC") -> list[date]:
    """The `days` business dates before the tick's business date, oldest first.

    The tick's own date is excluded: it has not closed yet when the daily run fires.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    today = _local_date(tick, timezone)
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def month_to_report(tick: datetime, timezone: str = "UTC") -> date:
    """First day of the month before the tick's month: the last month that has closed."""
    first_of_month = _local_date(tick, timezone).replace(day=1)
    return (first_of_month - timedelta(days=1)).replace(day=1)


def _one_timezone(datasets: Sequence[Dataset], schedule: str) -> str:
    zones = {d.contract.timezone for d in datasets}
    if len(zones) != 1:
        raise ValueError(
            f"{schedule}: datasets {sorted(d.contract.name for d in datasets)} cut their "
            f"business day in different timezones {sorted(zones)}; one schedule ticks in one"
        )
    return zones.pop()


def build_lookback_schedule(
    datasets: Sequence[Dataset], lookback_days: int, name: str = LOOKBACK_SCHEDULE
) -> dg.ScheduleDefinition:
    """One daily schedule recomputing the last `lookback_days` dates of these daily datasets.

    A single run (not one per date) keeps the range atomic under the single-run backfill
    policy and lets a rolling window read its upstream once.
    """
    if not datasets:
        raise ValueError(f"{name}: no datasets to schedule")
    wrong = [d.contract.name for d in datasets if d.contract.grain != "daily"]
    if wrong:
        raise ValueError(f"{name}: only daily datasets have a lookback; not {wrong}")
    if lookback_days < 1:
        raise ValueError(f"{name}: lookback_days must be >= 1, got {lookback_days}")
    timezone = _one_timezone(datasets, name)
    keys = [dg.AssetKey(d.contract.name) for d in datasets]
    start = max(d.contract.start_date for d in datasets)
    ends = [d.contract.end_date for d in datasets if d.contract.end_date is not None]
    end = min(ends) if len(ends) == len(datasets) else None

    def run_request(tick: datetime) -> dg.RunRequest | dg.SkipReason:
        candidates = lookback_dates(tick, lookback_days, timezone)
        dates = [d for d in candidates if d >= start and (end is None or d <= end)]
        d = candidates[-1]
        if not dates:
            where = "ends before the partitions start" if d < start else "starts after their end"
            return dg.SkipReason(
                f"lookback range of tick {tick.isoformat()} {where} "
                f"({start.isoformat()}..{end.isoformat() if end else ''})"
            )
        first, last = dates[0].isoformat(), dates[-1].isoformat()
        return dg.RunRequest(
            run_key=f"lookback:{first}..{last}",
            asset_selection=keys,
            tags={
                TRIGGER_TAG: "lookback_schedule",
                PARTITION_RANGE_START_TAG: first,
                PARTITION_RANGE_END_TAG: last,
            },
        )

    @dg.schedule(
        name=name,
        cron_schedule=DAILY_CRON,
        execution_timezone=timezone,
        target=keys,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Recompute the {lookback_days} {timezone} business dates before the tick date of "
            f"{', '.join(d.contract.name for d in datasets)} in one run, so files landing late "
            "are picked up. Deployed STOPPED: switch on deliberately."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return run_request(context.scheduled_execution_time)

    return _schedule


def build_monthly_schedule(
    datasets: Sequence[Dataset], lateness_days: int, name: str = MONTHLY_SCHEDULE
) -> dg.ScheduleDefinition:
    """One monthly schedule reporting the last closed month of these monthly datasets."""
    if not datasets:
        raise ValueError(f"{name}: no datasets to schedule")
    wrong = [d.contract.name for d in datasets if d.contract.grain != "monthly"]
    if wrong:
        raise ValueError(f"{name}: only monthly datasets are reported monthly; not {wrong}")
    timezone = _one_timezone(datasets, name)
    keys = [dg.AssetKey(d.contract.name) for d in datasets]
    start = max(d.contract.start_date for d in datasets)
    ends = [d.contract.end_date for d in datasets if d.contract.end_date is not None]
    end = min(ends) if len(ends) == len(datasets) else None

    def run_request(tick: datetime) -> dg.RunRequest | dg.SkipReason:
        month = month_to_report(tick, timezone)
        if month < start.replace(day=1) or (end is not None and month > end):
            where = "before the partitions start" if month < start else "after their end"
            return dg.SkipReason(
                f"month {month:%Y-%m} of tick {tick.isoformat()} is {where} "
                f"({start.isoformat()}..{end.isoformat() if end else ''})"
            )
        return dg.RunRequest(
            run_key=f"monthly:{month:%Y-%m}",
            asset_selection=keys,
            partition_key=month.isoformat(),
            tags={TRIGGER_TAG: "monthly_schedule"},
        )

    @dg.schedule(
        name=name,
        cron_schedule=monthly_cron(lateness_days),
        execution_timezone=timezone,
        target=keys,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Report the previous {timezone} month of "
            f"{', '.join(d.contract.name for d in datasets)} on day {lateness_days + 1}, after "
            "its late files landed. Deployed STOPPED: switch on deliberately."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return run_request(context.scheduled_execution_time)

    return _schedule
