"""Schedules request UTC business dates whatever the tick's or the process's timezone."""

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._utils.schedules import schedule_execution_time_iterator

from ecm_assets.case_sla.contracts import CASE_EVENTS, LATENESS_DAYS, SCHEDULE_LOOKBACK_DAYS
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.definitions import defs
from ecm_assets.operations.schedules import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    lookback_dates,
    month_to_report,
)
from ecm_assets.orchestration.factory import TRIGGER_TAG
from ecm_assets.orchestration.partitions import partitions_for

#: The case-SLA schedules (the shipped location also schedules its sync jobs: tests/test_sync).
CASE_SLA_SCHEDULES = ("daily_lookback_schedule", "monthly_report_schedule")
SCHEDULES = [s for s in defs.schedules or [] if s.name in CASE_SLA_SCHEDULES]
daily_lookback_schedule = defs.get_schedule_def("daily_lookback_schedule")
monthly_report_schedule = defs.get_schedule_def("monthly_report_schedule")
DAILY = partitions_for(CASE_EVENTS)

DAILY_KEYS = {
    dg.AssetKey(k)
    for k in (
        "case_events",
        "case_sla_daily_metrics",
        "case_sla_rolling_30d",
        "case_priority_mix_daily",
    )
}
MONTHLY_KEY = dg.AssetKey("case_sla_monthly_report")

#: Inside the case-SLA partitions (from 2026-09-01), spans both Europe's DST transitions
#: (2026-10-25, 2027-03-28) and the US's (2026-11-01, 2027-03-14).
DST_SPAN_START = datetime(2026, 10, 1, tzinfo=UTC)
DST_SPAN_END = datetime(2027, 4, 10, tzinfo=UTC)  # exclusive: last tick day is 2027-04-09


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dg.RepositoryDefinition:
    """The real assets and resources with the schedules, so targets resolve against them."""
    root: Path = tmp_path_factory.mktemp("schedules")
    base = build_definitions(root, root / "warehouse.duckdb")
    return dg.Definitions(
        assets=base.assets, resources=base.resources, schedules=SCHEDULES
    ).get_repository_def()


@pytest.fixture(params=["America/New_York", "Europe/Berlin"])
def local_tz(request: pytest.FixtureRequest) -> Iterator[ZoneInfo]:
    """Run the process in a non-UTC local timezone, restoring the original afterwards."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield ZoneInfo(request.param)
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


def _evaluate(
    schedule: dg.ScheduleDefinition,
    tick: datetime,
    repo: dg.RepositoryDefinition,
    instance: dg.DagsterInstance,
) -> ScheduleExecutionData:
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=repo
    )
    return schedule.evaluate_tick(context)


def _ticks(schedule: dg.ScheduleDefinition) -> list[datetime]:
    """Ticks as the scheduler daemon computes them: Dagster's iterator in the execution tz."""
    ticks = []
    for tick in schedule_execution_time_iterator(
        DST_SPAN_START.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    ):
        if tick >= DST_SPAN_END:
            break
        ticks.append(tick)
    return ticks


def _range(request: dg.RunRequest) -> list[date]:
    first = date.fromisoformat(request.tags[PARTITION_RANGE_START_TAG])
    last = date.fromisoformat(request.tags[PARTITION_RANGE_END_TAG])
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- pure functions ----------------------------------------------------------------------------


def test_lookback_dates_spec_example() -> None:
    assert lookback_dates(datetime(2026, 7, 4, 1, tzinfo=UTC), 3) == [
        date(2026, 7, 1),
        date(2026, 7, 2),
        date(2026, 7, 3),
    ]


@pytest.mark.parametrize(
    ("tick", "newest"),
    [
        # 2026-07-04T01:00Z seen from New York is still the evening of 07-03.
        (datetime(2026, 7, 3, 21, tzinfo=ZoneInfo("America/New_York")), date(2026, 7, 3)),
        # Auckland is ahead: local 07-04 11:59 is 07-03 23:59Z, local 12:00 is 07-04 00:00Z.
        (datetime(2026, 7, 4, 11, 59, tzinfo=ZoneInfo("Pacific/Auckland")), date(2026, 7, 2)),
        (datetime(2026, 7, 4, 12, 0, tzinfo=ZoneInfo("Pacific/Auckland")), date(2026, 7, 3)),
        (datetime(2026, 7, 3, 20, tzinfo=timezone(timedelta(hours=-5))), date(2026, 7, 3)),
    ],
)
def test_lookback_dates_use_the_utc_date(tick: datetime, newest: date) -> None:
    assert lookback_dates(tick, 3) == [newest - timedelta(days=n) for n in (2, 1, 0)]


def test_lookback_dates_cross_month_and_year() -> None:
    assert lookback_dates(datetime(2027, 1, 2, 1, tzinfo=UTC), 3) == [
        date(2026, 12, 30),
        date(2026, 12, 31),
        date(2027, 1, 1),
    ]


def test_lookback_days_must_be_positive() -> None:
    with pytest.raises(ValueError, match="days"):
        lookback_dates(datetime(2026, 7, 4, 1, tzinfo=UTC), 0)


@pytest.mark.parametrize(
    ("tick", "month"),
    [
        (datetime(2026, 7, 6, 3, tzinfo=UTC), date(2026, 6, 1)),
        (datetime(2027, 1, 6, 3, tzinfo=UTC), date(2026, 12, 1)),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), date(2026, 2, 1)),
        # 2026-03-01T04:00Z in New York is still February: the UTC month decides.
        (datetime(2026, 2, 28, 23, tzinfo=ZoneInfo("America/New_York")), date(2026, 2, 1)),
    ],
)
def test_month_to_report(tick: datetime, month: date) -> None:
    assert month_to_report(tick) == month


def test_naive_datetimes_are_refused(
    repo: dg.RepositoryDefinition, instance: dg.DagsterInstance
) -> None:
    naive = datetime(2026, 7, 4, 1)
    with pytest.raises(ValueError, match="naive"):
        lookback_dates(naive, 3)
    with pytest.raises(ValueError, match="naive"):
        month_to_report(naive)
    for schedule in SCHEDULES:
        with pytest.raises(dg.DagsterError) as failure:
            _evaluate(schedule, naive, repo, instance)
        assert isinstance(failure.value.__cause__, ValueError)
        assert "naive" in str(failure.value.__cause__)


# --- schedule definitions ----------------------------------------------------------------------


def test_schedule_definitions() -> None:
    assert [s.name for s in SCHEDULES] == ["daily_lookback_schedule", "monthly_report_schedule"]
    assert daily_lookback_schedule.cron_schedule == "0 1 * * *"
    assert monthly_report_schedule.cron_schedule == f"0 3 {LATENESS_DAYS + 1} * *"
    for schedule in SCHEDULES:
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    # Our tag names are Dagster's own, so Dagster reads the range from them.
    assert PARTITION_RANGE_START_TAG == ASSET_PARTITION_RANGE_START_TAG
    assert PARTITION_RANGE_END_TAG == ASSET_PARTITION_RANGE_END_TAG


def test_schedule_targets_resolve_against_the_real_assets(repo: dg.RepositoryDefinition) -> None:
    daily_job = repo.get_job(daily_lookback_schedule.job_name)
    assert set(daily_job.asset_layer.selected_asset_keys) == DAILY_KEYS
    assert daily_job.partitions_def == DAILY
    monthly_job = repo.get_job(monthly_report_schedule.job_name)
    assert set(monthly_job.asset_layer.selected_asset_keys) == {MONTHLY_KEY}


def test_daily_spec_example(repo: dg.RepositoryDefinition, instance: dg.DagsterInstance) -> None:
    data = _evaluate(daily_lookback_schedule, datetime(2026, 10, 4, 1, tzinfo=UTC), repo, instance)
    assert data.skip_message is None
    [request] = data.run_requests
    assert request.run_key == "lookback:2026-10-01..2026-10-03"
    assert set(request.asset_selection) == DAILY_KEYS
    assert request.partition_key is None
    assert request.partition_key_range == dg.PartitionKeyRange("2026-10-01", "2026-10-03")
    assert request.tags[TRIGGER_TAG] == "lookback_schedule"
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-10-01"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-10-03"


@pytest.mark.parametrize(
    ("tick_day", "expected"),
    [
        (date(2026, 8, 30), None),
        (date(2026, 9, 1), None),
        (date(2026, 9, 2), ("2026-09-01", "2026-09-01")),
        (date(2026, 9, 3), ("2026-09-01", "2026-09-02")),
        (date(2026, 9, 4), ("2026-09-01", "2026-09-03")),
        (date(2026, 9, 5), ("2026-09-02", "2026-09-04")),
    ],
)
def test_daily_range_is_clipped_to_the_partitions_start(
    tick_day: date,
    expected: tuple[str, str] | None,
    repo: dg.RepositoryDefinition,
    instance: dg.DagsterInstance,
) -> None:
    tick = datetime(tick_day.year, tick_day.month, tick_day.day, 1, tzinfo=UTC)
    data = _evaluate(daily_lookback_schedule, tick, repo, instance)
    if expected is None:
        assert not data.run_requests
        assert "before the partitions start" in (data.skip_message or "")
        return
    [request] = data.run_requests
    assert request.partition_key_range == dg.PartitionKeyRange(*expected)
    assert request.run_key == f"lookback:{expected[0]}..{expected[1]}"


def test_monthly_request(repo: dg.RepositoryDefinition, instance: dg.DagsterInstance) -> None:
    data = _evaluate(monthly_report_schedule, datetime(2026, 10, 6, 3, tzinfo=UTC), repo, instance)
    [request] = data.run_requests
    assert request.run_key == "monthly:2026-09"
    assert request.partition_key == "2026-09-01"
    assert list(request.asset_selection) == [MONTHLY_KEY]
    assert request.tags[TRIGGER_TAG] == "monthly_schedule"
    assert request.tags["dagster/partition"] == "2026-09-01"


def test_monthly_skips_before_the_partitions_start(
    repo: dg.RepositoryDefinition, instance: dg.DagsterInstance
) -> None:
    data = _evaluate(monthly_report_schedule, datetime(2026, 9, 6, 3, tzinfo=UTC), repo, instance)
    assert not data.run_requests
    assert "before the partitions start" in (data.skip_message or "")


def test_one_run_owns_the_range(instance: dg.DagsterInstance) -> None:
    """The request's tags and selection really launch one run over the range (stub assets)."""
    seen: dict[str, dg.PartitionKeyRange] = {}

    def stub(key: dg.AssetKey) -> dg.AssetsDefinition:
        @dg.asset(key=key, partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
        def _stub(context: dg.AssetExecutionContext) -> None:
            seen[context.asset_key.to_user_string()] = context.partition_key_range

        return _stub

    defs = dg.Definitions(
        assets=[stub(k) for k in sorted(DAILY_KEYS)], schedules=[daily_lookback_schedule]
    )
    [request] = _evaluate(
        daily_lookback_schedule,
        datetime(2026, 10, 4, 1, tzinfo=UTC),
        defs.get_repository_def(),
        instance,
    ).run_requests
    job = defs.get_repository_def().get_job(daily_lookback_schedule.job_name)
    result = job.execute_in_process(
        instance=instance, tags=request.tags, asset_selection=list(request.asset_selection)
    )
    assert result.success
    expected = dg.PartitionKeyRange("2026-10-01", "2026-10-03")
    assert seen == {k.to_user_string(): expected for k in DAILY_KEYS}
    assert len(instance.get_run_records(dg.RunsFilter(run_ids=[result.run_id]))) == 1


# --- DST: every tick of the cron, presented in a non-UTC local timezone ------------------------


def test_daily_ticks_across_dst(
    local_tz: ZoneInfo, repo: dg.RepositoryDefinition, instance: dg.DagsterInstance
) -> None:
    ticks = _ticks(daily_lookback_schedule)
    utc_days = [t.astimezone(UTC).date() for t in ticks]
    first_day = DST_SPAN_START.date()
    last_day = DST_SPAN_END.date() - timedelta(days=1)
    # Exactly one tick per UTC day (no double fire, no missing day), always at 01:00 UTC.
    assert utc_days == _days(first_day, last_day)
    assert {t.astimezone(UTC).time().isoformat() for t in ticks} == {"01:00:00"}
    # The local wall-clock hour moves with DST, so the presentation really is local time.
    presented = [t.astimezone(local_tz) for t in ticks]
    assert len({p.utcoffset() for p in presented}) == 2
    assert datetime.fromtimestamp(ticks[0].timestamp()).hour != 1  # process TZ is not UTC

    newest: Counter[date] = Counter()
    covered: Counter[date] = Counter()
    for tick, shown in zip(ticks, presented, strict=True):
        data = _evaluate(daily_lookback_schedule, shown, repo, instance)
        [request] = data.run_requests
        dates = _range(request)
        assert len(dates) == SCHEDULE_LOOKBACK_DAYS
        assert dates[-1] == tick.astimezone(UTC).date() - timedelta(days=1)
        assert set(request.asset_selection) == DAILY_KEYS
        assert request.tags[TRIGGER_TAG] == "lookback_schedule"
        assert request.run_key == f"lookback:{dates[0]}..{dates[-1]}"
        newest[dates[-1]] += 1
        covered.update(dates)

    window = _days(first_day - timedelta(days=SCHEDULE_LOOKBACK_DAYS), last_day - timedelta(days=1))
    # No date outside the window is requested.
    assert set(covered) == set(window)
    # Every business day is the newest date of exactly one tick.
    assert newest == Counter(_days(first_day - timedelta(days=1), last_day - timedelta(days=1)))
    # Every business day with its whole lookback inside the span is covered exactly N times.
    for day in _days(
        first_day - timedelta(days=1), last_day - timedelta(days=SCHEDULE_LOOKBACK_DAYS)
    ):
        assert covered[day] == SCHEDULE_LOOKBACK_DAYS, day


def test_monthly_ticks_across_dst(
    local_tz: ZoneInfo, repo: dg.RepositoryDefinition, instance: dg.DagsterInstance
) -> None:
    ticks = _ticks(monthly_report_schedule)
    # One tick a month, at 03:00 UTC on day LATENESS_DAYS + 1.
    assert [t.astimezone(UTC) for t in ticks] == [
        datetime(2026 + (m - 1) // 12, (m - 1) % 12 + 1, LATENESS_DAYS + 1, 3, tzinfo=UTC)
        for m in range(10, 17)
    ]
    months: Counter[str] = Counter()
    for tick in ticks:
        data = _evaluate(monthly_report_schedule, tick.astimezone(local_tz), repo, instance)
        [request] = data.run_requests
        assert list(request.asset_selection) == [MONTHLY_KEY]
        assert request.tags[TRIGGER_TAG] == "monthly_schedule"
        assert request.run_key == f"monthly:{request.partition_key[:7]}"
        months[request.partition_key] += 1
    # Each month September..March is requested exactly once, and nothing else.
    expected = [date(2026 + (m - 1) // 12, (m - 1) % 12 + 1, 1) for m in range(9, 16)]
    assert months == Counter(d.isoformat() for d in expected)
