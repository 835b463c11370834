"""Schedules: the daily lookback recompute and the monthly report, both on UTC business dates.

Business dates are UTC calendar days, so every date computation here converts the tick to UTC
first: a tick presented in any local timezone (or a process whose TZ is not UTC) cannot shift the
dates it requests, and DST transitions cannot fire twice or skip a day. Both schedules are
deployed STOPPED: a freshly deployed code location must not start recomputing published
partitions until an operator switches the schedules on deliberately.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ecm_assets.case_sla.contracts import LATENESS_DAYS, MONTHLY_REPORT, SCHEDULE_LOOKBACK_DAYS
from ecm_assets.case_sla.datasets import DATASETS
from ecm_assets.orchestration.factory import TRIGGER_TAG
from ecm_assets.orchestration.partitions import PARTITIONS_START

#: Run tags by which one run owns a partition range (read by Dagster and the single-run
#: backfill policy of every asset; the same tags `ecm materialize --partition-range` sets).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

#: The daily datasets the lookback schedule recomputes, derived so a new daily dataset joins it.
DAILY_ASSET_KEYS: tuple[dg.AssetKey, ...] = tuple(
    dg.AssetKey(d.contract.name) for d in DATASETS if d.contract.grain == "daily"
)
MONTHLY_REPORT_KEY = dg.AssetKey(MONTHLY_REPORT.name)

#: 01:00 UTC daily: after the day closed, leaving time for the night's landing files.
DAILY_CRON = "0 1 * * *"
#: 03:00 UTC on day LATENESS_DAYS + 1: the last days of the previous month have had their
#: full lateness allowance to land before the month is reported.
MONTHLY_CRON = f"0 3 {LATENESS_DAYS + 1} * *"

_PARTITIONS_START_DATE = date.fromisoformat(PARTITIONS_START)


def _utc_date(tick: datetime) -> date:
    """The UTC calendar date of an aware datetime; naive ones are refused, not guessed."""
    if tick.tzinfo is None or tick.utcoffset() is None:
        raise ValueError(
            f"naive datetime {tick.isoformat()!r}: a schedule tick must be timezone-aware, "
            "since business dates are UTC calendar days and a naive time has no UTC date"
        )
    return tick.astimezone(UTC).date()


def lookback_dates(tick: datetime, days: int) -> list[date]:
    """The `days` UTC business dates before the tick's UTC date, oldest first.

    The tick's own date is excluded: it has not closed yet when the daily run fires.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    today = _utc_date(tick)
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def month_to_report(tick: datetime) -> date:
    """First day of the month before the tick's UTC month: the last month that has closed."""
    first_of_month = _utc_date(tick).replace(day=1)
    return (first_of_month - timedelta(days=1)).replace(day=1)


def lookback_run_request(tick: datetime) -> dg.RunRequest | dg.SkipReason:
    """One run owning the whole lookback range, clipped to the partitions start.

    A single run (not one per date) keeps the range atomic under the single-run backfill
    policy and lets the rolling window read its upstream once.
    """
    dates = [d for d in lookback_dates(tick, SCHEDULE_LOOKBACK_DAYS) if d >= _PARTITIONS_START_DATE]
    if not dates:
        return dg.SkipReason(
            f"lookback range of tick {tick.isoformat()} ends before the partitions start "
            f"{PARTITIONS_START}"
        )
    first, last = dates[0].isoformat(), dates[-1].isoformat()
    return dg.RunRequest(
        run_key=f"lookback:{first}..{last}",
        asset_selection=list(DAILY_ASSET_KEYS),
        tags={
            TRIGGER_TAG: "lookback_schedule",
            PARTITION_RANGE_START_TAG: first,
            PARTITION_RANGE_END_TAG: last,
        },
    )


def monthly_report_run_request(tick: datetime) -> dg.RunRequest | dg.SkipReason:
    """The monthly report of the last closed month, once its late files have landed."""
    month = month_to_report(tick)
    if month < _PARTITIONS_START_DATE:
        return dg.SkipReason(
            f"month {month:%Y-%m} of tick {tick.isoformat()} is before the partitions start "
            f"{PARTITIONS_START}"
        )
    return dg.RunRequest(
        run_key=f"monthly:{month:%Y-%m}",
        asset_selection=[MONTHLY_REPORT_KEY],
        partition_key=month.isoformat(),
        tags={TRIGGER_TAG: "monthly_schedule"},
    )


@dg.schedule(
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    target=list(DAILY_ASSET_KEYS),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"Recompute the {SCHEDULE_LOOKBACK_DAYS} UTC business dates before the tick date in one "
        "run, so files landing late are picked up. Deployed STOPPED: switch on deliberately."
    ),
)
def daily_lookback_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Daily lookback recompute; STOPPED by default so a fresh deployment publishes nothing."""
    return lookback_run_request(context.scheduled_execution_time)


@dg.schedule(
    cron_schedule=MONTHLY_CRON,
    execution_timezone="UTC",
    target=[MONTHLY_REPORT_KEY],
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        f"Report the previous UTC month on day {LATENESS_DAYS + 1}, after its late files landed. "
        "Deployed STOPPED: switch on deliberately."
    ),
)
def monthly_report_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    """Monthly report of the previous month; STOPPED by default like the daily schedule."""
    return monthly_report_run_request(context.scheduled_execution_time)


SCHEDULES: list[dg.ScheduleDefinition] = [daily_lookback_schedule, monthly_report_schedule]
