"""Dependency sensors: a downstream partition runs when the upstream partitions it needs are
published (and fresh enough where the contract says so); the pure planner first, then the
sensors evaluated in-process against a real instance."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ecm_assets.case_sla.contracts import CASE_EVENTS, DAILY_METRICS, MONTHLY_REPORT, ROLLING_30D
from ecm_assets.case_sla.datasets import DATASETS
from ecm_assets.case_sla.priority_mix import PRIORITY_MIX
from ecm_assets.contracts.dataset import Upstream
from ecm_assets.contracts.periods import contiguous_ranges
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.operations.dependencies import (
    TRIGGER,
    Candidates,
    DependencyCursor,
    Ready,
    Waiting,
    affected,
    aligned,
    build_dependency_sensors,
    candidates,
    merge_tags,
    plan,
    window,
)
from ecm_assets.operations.schedules import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from ecm_assets.orchestration.factory import (
    BACKFILL_MODE_TAG,
    CORRECTION_CLASS_TAG,
    REASON_TAG,
    RESTATEMENT_TAG,
    REVIEW_TAG,
    TRIGGER_TAG,
)
from ecm_assets.orchestration.partitions import partitions_for

NOW = datetime(2026, 9, 10, 12, tzinfo=UTC)
EVENTS = "case_events"
METRICS = "case_sla_daily_metrics"


def d(text: str) -> date:
    return date.fromisoformat(text)


def days(first: str, last: str) -> list[date]:
    start, end = d(first), d(last)
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


# -- pure planner ------------------------------------------------------------------------


def test_aligned_window_and_affected_partitions() -> None:
    events = DAILY_METRICS.upstream[0]
    assert aligned(d("2026-09-04"), "daily") == [d("2026-09-04")]
    assert window(d("2026-09-04"), "daily", events) == days("2026-08-06", "2026-09-04")
    assert affected(d("2026-09-04"), "daily", events) == days("2026-09-04", "2026-10-03")
    assert aligned(d("2026-02-01"), "monthly") == days("2026-02-01", "2026-02-28")
    metrics = MONTHLY_REPORT.upstream[0]
    assert window(d("2026-02-01"), "monthly", metrics) == days("2026-02-01", "2026-02-28")
    assert affected(d("2026-02-17"), "monthly", metrics) == [d("2026-02-01")]
    # A lookback crossing a month end reaches the next month's report too.
    assert affected(d("2026-02-27"), "monthly", Upstream(METRICS, 2)) == [
        d("2026-02-01"),
        d("2026-03-01"),
    ]
    with pytest.raises(ValueError, match="not supported"):
        aligned(d("2026-02-01"), "daily", "monthly")


def test_stale_partition_with_published_aligned_upstream_is_ready() -> None:
    ids = {p: i for i, p in enumerate(days("2026-08-06", "2026-09-04"), start=10)}
    result = plan(
        DAILY_METRICS,
        [d("2026-09-04")],
        {EVENTS: ids},
        {},
        {EVENTS: {max(ids.values()): NOW - timedelta(hours=2)}},
        NOW,
    )
    assert result.waiting == () and result.up_to_date == ()
    (ready,) = result.ready
    assert ready.partition == d("2026-09-04")
    assert ready.newest_input == max(ids.values())
    assert ready.triggers == frozenset((EVENTS, i) for i in ids.values())


def test_missing_aligned_upstream_waits_with_a_reason() -> None:
    result = plan(
        DAILY_METRICS,
        [d("2026-09-04")],
        {EVENTS: {d("2026-09-03"): 5}},
        {},
        {EVENTS: {5: NOW}},
        NOW,
    )
    assert result.ready == ()
    assert result.waiting == (Waiting(d("2026-09-04"), "case_events 2026-09-04 not published"),)


def test_aligned_upstream_older_than_max_age_waits() -> None:
    result = plan(
        DAILY_METRICS,
        [d("2026-09-03")],
        {EVENTS: {d("2026-09-03"): 5}},
        {},
        {EVENTS: {5: NOW - timedelta(hours=30)}},
        NOW,
    )
    assert result.waiting == (
        Waiting(
            d("2026-09-03"),
            "case_events 2026-09-03 last published 30h ago; contract wants <= 24h "
            "(apply older changes with a backfill)",
        ),
    )
    # Without a max age (the priority mix reads the same upstream), published is enough.
    result = plan(
        PRIORITY_MIX.contract, [d("2026-09-03")], {EVENTS: {d("2026-09-03"): 5}}, {}, {}, NOW
    )
    assert [r.partition for r in result.ready] == [d("2026-09-03")]


def test_missing_lookback_history_is_fine() -> None:
    """A deployment may start mid-history: only the aligned partition has to exist."""
    result = plan(
        DAILY_METRICS,
        [d("2026-01-01"), d("2026-09-04")],
        {EVENTS: {d("2026-01-01"): 3, d("2026-09-04"): 9}},
        {},
        {EVENTS: {3: NOW, 9: NOW}},
        NOW,
    )
    assert [r.partition for r in result.ready] == [d("2026-01-01"), d("2026-09-04")]


def test_up_to_date_partitions_are_dropped_and_newer_inputs_make_stale() -> None:
    ids = {d("2026-09-03"): 5, d("2026-09-04"): 9}
    published = {EVENTS: dict.fromkeys(ids.values(), NOW)}
    current = plan(DAILY_METRICS, ids, {EVENTS: ids}, {d("2026-09-04"): 10}, published, NOW)
    # 09-04 was published after both inputs; 09-03 has never been published.
    assert current.up_to_date == (d("2026-09-04"),)
    assert [r.partition for r in current.ready] == [d("2026-09-03")]
    # 09-03 republished (id 11) after 09-04 (id 10): 09-04 reads 09-03, so it is stale again,
    # and the trigger is exactly the newer input.
    ids[d("2026-09-03")] = 11
    published[EVENTS][11] = NOW
    again = plan(
        DAILY_METRICS, [d("2026-09-04")], {EVENTS: ids}, {d("2026-09-04"): 10}, published, NOW
    )
    assert again.ready == (Ready(d("2026-09-04"), 11, frozenset({(EVENTS, 11)})),)


def test_group_ranges_are_contiguous_capped_and_split_by_label() -> None:
    parts = [*days("2026-09-01", "2026-09-03"), d("2026-09-05")]
    assert contiguous_ranges(parts, "daily") == [
        (d("2026-09-01"), d("2026-09-03")),
        (d("2026-09-05"), d("2026-09-05")),
    ]
    assert contiguous_ranges(days("2026-01-01", "2026-03-01"), "daily", cap=31) == [
        (d("2026-01-01"), d("2026-01-31")),
        (d("2026-02-01"), d("2026-03-01")),
    ]
    labels = {d("2026-09-02"): "closed", d("2026-09-03"): "closed"}
    assert contiguous_ranges(days("2026-09-01", "2026-09-04"), "daily", labels) == [
        (d("2026-09-01"), d("2026-09-01")),
        (d("2026-09-02"), d("2026-09-03")),
        (d("2026-09-04"), d("2026-09-04")),
    ]
    months = [d("2026-01-01"), d("2026-02-01"), d("2026-04-01")]
    assert contiguous_ranges(months, "monthly") == [
        (d("2026-01-01"), d("2026-02-01")),
        (d("2026-04-01"), d("2026-04-01")),
    ]


def test_monthly_report_needs_every_day_and_a_complete_month() -> None:
    month = days("2026-02-01", "2026-02-28")
    found = candidates(MONTHLY_REPORT, {METRICS: [d("2026-02-10")]}, [], d("2026-01-01"))
    assert found == Candidates((), (d("2026-02-01"),))
    found = candidates(MONTHLY_REPORT, {METRICS: [d("2026-02-10")]}, [], d("2026-02-01"))
    assert found == Candidates((d("2026-02-01"),))
    partial = {p: i for i, p in enumerate(month[:-2], start=1)}
    result = plan(MONTHLY_REPORT, found.partitions, {METRICS: partial}, {}, {}, NOW)
    assert result.waiting == (
        Waiting(d("2026-02-01"), "case_sla_daily_metrics 2026-02-27, 2026-02-28 not published"),
    )
    full = {p: i for i, p in enumerate(month, start=1)}
    result = plan(MONTHLY_REPORT, found.partitions, {METRICS: full}, {}, {}, NOW)
    assert [r.partition for r in result.ready] == [d("2026-02-01")]


def test_candidates_expand_forward_clip_and_keep_pending() -> None:
    found = candidates(
        ROLLING_30D, {METRICS: [d("2026-09-01")]}, [d("2026-08-01")], d("2026-09-05")
    )
    assert found.partitions == (d("2026-08-01"), *days("2026-09-01", "2026-09-05"))
    assert found.incomplete == tuple(days("2026-09-06", "2026-09-30"))


def test_merge_tags_keeps_the_most_severe_correction() -> None:
    merged = merge_tags(
        [
            (7, {CORRECTION_CLASS_TAG: "closed_period", RESTATEMENT_TAG: "SOURCE_CORRECTION"}),
            (9, {CORRECTION_CLASS_TAG: "lookback", REASON_TAG: "LATE_DATA"}),
            (8, {REVIEW_TAG: "closed_periods"}),
            (3, {}),
        ]
    )
    assert merged == {
        CORRECTION_CLASS_TAG: "closed_period",
        RESTATEMENT_TAG: "SOURCE_CORRECTION",
        REVIEW_TAG: "closed_periods",
        REASON_TAG: "LATE_DATA",
    }
    assert merge_tags([]) == {}


def test_cursor_round_trip_and_bad_cursor() -> None:
    cursor = DependencyCursor({EVENTS: 42}, (d("2026-09-04"),))
    assert DependencyCursor.from_json(cursor.to_json()) == cursor
    assert DependencyCursor.from_json(None) == DependencyCursor()
    assert DependencyCursor.from_json("") == DependencyCursor()
    with pytest.raises(ValueError, match="reset the cursor"):
        DependencyCursor.from_json("not json")


# -- sensors on a real instance -----------------------------------------------------------


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _report(instance: dg.DagsterInstance, asset: str, partitions: list[date], **meta: str) -> None:
    for p in partitions:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=asset, partition=p.isoformat(), metadata=meta)
        )


def _sensors(clock: Callable[[], datetime] | None = None) -> dict[str, dg.SensorDefinition]:
    return {s.name: s for s in build_dependency_sensors(DATASETS, clock=clock)}


def _tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def _ranges(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [
        (r.tags[PARTITION_RANGE_START_TAG], r.tags[PARTITION_RANGE_END_TAG])
        for r in result.run_requests or []
    ]


def test_one_stopped_sensor_per_dataset_with_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECM_SENSOR_INTERVAL_SECONDS", "15")
    sensors = _sensors()
    assert set(sensors) == {
        "case_sla_daily_metrics__upstream_ready",
        "case_priority_mix_daily__upstream_ready",
        "case_sla_rolling_30d__upstream_ready",
        "case_sla_monthly_report__upstream_ready",
    }
    for name, sensor in sensors.items():
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        assert sensor.minimum_interval_seconds == 15
        (target,) = sensor.targets
        assert target.resolvable_to_job.selection == dg.AssetSelection.assets(
            name.removesuffix("__upstream_ready")
        )


def test_published_upstream_requests_one_range_once(instance: dg.DagsterInstance) -> None:
    sensor = _sensors()["case_sla_daily_metrics__upstream_ready"]
    first = _tick(sensor, instance)
    assert first.skip_reason is not None
    assert "no new upstream publishes" in str(first.skip_reason.skip_message)

    _report(instance, EVENTS, days("2026-09-01", "2026-09-03"))
    result = _tick(sensor, instance, first.cursor)
    (request,) = result.run_requests or []
    assert request.asset_selection == [dg.AssetKey(METRICS)]
    assert request.tags == {
        TRIGGER_TAG: TRIGGER,
        PARTITION_RANGE_START_TAG: "2026-09-01",
        PARTITION_RANGE_END_TAG: "2026-09-03",
    }
    newest = max(
        instance.get_latest_storage_id_by_partition(
            dg.AssetKey(EVENTS), dg.DagsterEventType.ASSET_MATERIALIZATION
        ).values()
    )
    assert request.run_key == f"{METRICS}:2026-09-01..2026-09-03:{newest}"
    cursor = json.loads(result.cursor or "")
    assert cursor["last_seen"] == {EVENTS: newest}
    # Later days read 09-01..09-03 as history but their own day is not published yet.
    assert cursor["pending"][:2] == ["2026-09-04", "2026-09-05"]

    # A tick repeated after a crash (old cursor) asks for the same run key: launched once.
    repeated = _tick(sensor, instance, first.cursor)
    assert [r.run_key for r in repeated.run_requests or []] == [request.run_key]
    # The next tick with the new cursor requests nothing and says what it waits for.
    after = _tick(sensor, instance, result.cursor)
    assert not after.run_requests
    assert after.skip_reason is not None
    assert "waiting: case_sla_daily_metrics 2026-09-04: case_events 2026-09-04 not published" in (
        str(after.skip_reason.skip_message)
    )

    # Once the downstream is published, those partitions are up to date.
    _report(instance, METRICS, days("2026-09-01", "2026-09-03"))
    again = _tick(sensor, instance, first.cursor)
    assert not again.run_requests

    # The pending day is requested when its own upstream day arrives.
    _report(instance, EVENTS, [d("2026-09-04")])
    later = _tick(sensor, instance, result.cursor)
    assert _ranges(later) == [("2026-09-04", "2026-09-04")]


def test_too_old_upstream_waits_for_the_contract_window(instance: dg.DagsterInstance) -> None:
    sensors = _sensors(clock=lambda: datetime.now(UTC) + timedelta(hours=30))
    _report(instance, EVENTS, [d("2026-09-03")])
    result = _tick(sensors["case_sla_daily_metrics__upstream_ready"], instance)
    assert not result.run_requests
    assert result.skip_reason is not None
    message = str(result.skip_reason.skip_message)
    assert "waiting: case_sla_daily_metrics 2026-09-03: case_events 2026-09-03 last published" in (
        message
    )
    assert "30h ago; contract wants <= 24h" in message
    # The priority mix has no max age on the same upstream: it runs.
    mix = _tick(sensors["case_priority_mix_daily__upstream_ready"], instance)
    assert _ranges(mix) == [("2026-09-03", "2026-09-03")]


def test_monthly_report_waits_for_its_month(instance: dg.DagsterInstance) -> None:
    name = "case_sla_monthly_report__upstream_ready"
    mid_november = _sensors(clock=lambda: datetime(2026, 11, 20, tzinfo=UTC))[name]
    _report(instance, METRICS, days("2026-10-01", "2026-10-30"))
    _report(instance, METRICS, [d("2026-11-05")])
    result = _tick(mid_november, instance)
    assert not result.run_requests
    message = str(result.skip_reason.skip_message if result.skip_reason else "")
    assert "case_sla_monthly_report 2026-11-01 not requested: the period is not complete" in message
    assert "case_sla_daily_metrics 2026-10-31 not published" in message

    _report(instance, METRICS, [d("2026-10-31")])
    result = _tick(mid_november, instance, result.cursor)
    (request,) = result.run_requests or []
    assert request.asset_selection == [dg.AssetKey("case_sla_monthly_report")]
    assert _ranges(result) == [("2026-10-01", "2026-10-01")]

    _report(instance, METRICS, [d("2026-11-06")])
    result = _tick(mid_november, instance, result.cursor)
    assert not result.run_requests
    message = str(result.skip_reason.skip_message if result.skip_reason else "")
    assert message.startswith("case_sla_monthly_report 2026-11-01 not requested")
    assert "no new upstream publishes" not in message


@dg.asset(name=EVENTS, partitions_def=partitions_for(CASE_EVENTS))
def _events_stand_in() -> dg.MaterializeResult:
    """Stands in for case_events: a real run with real tags that publishes one partition."""
    return dg.MaterializeResult()


CLOSED_PERIOD_TAGS = {
    CORRECTION_CLASS_TAG: "closed_period",
    RESTATEMENT_TAG: "SOURCE_CORRECTION",
    REVIEW_TAG: "closed_periods",
    BACKFILL_MODE_TAG: "restatement",
}


def test_closed_period_correction_tags_follow_downstream(instance: dg.DagsterInstance) -> None:
    sensor = _sensors()["case_sla_daily_metrics__upstream_ready"]
    _report(instance, EVENTS, days("2026-09-01", "2026-09-05"))
    _report(instance, METRICS, days("2026-09-01", "2026-09-05"))
    start = _tick(sensor, instance)
    assert not start.run_requests  # all published after their inputs

    _report(instance, EVENTS, [d("2026-09-01")])  # an ordinary republish
    result = dg.materialize(
        [_events_stand_in], instance=instance, partition_key="2026-09-03", tags=CLOSED_PERIOD_TAGS
    )
    assert result.success
    ticked = _tick(sensor, instance, start.cursor)
    by_range = {
        (r.tags[PARTITION_RANGE_START_TAG], r.tags[PARTITION_RANGE_END_TAG]): r
        for r in ticked.run_requests or []
    }
    assert set(by_range) == {("2026-09-01", "2026-09-02"), ("2026-09-03", "2026-09-05")}
    assert CORRECTION_CLASS_TAG not in by_range["2026-09-01", "2026-09-02"].tags
    corrected = by_range["2026-09-03", "2026-09-05"].tags
    assert corrected[CORRECTION_CLASS_TAG] == "closed_period"
    assert corrected[RESTATEMENT_TAG] == "SOURCE_CORRECTION"
    assert corrected[REVIEW_TAG] == "closed_periods"
    assert corrected[TRIGGER_TAG] == TRIGGER
    assert BACKFILL_MODE_TAG not in corrected


def test_approved_runless_publish_carries_the_held_runs_tags(
    instance: dg.DagsterInstance,
) -> None:
    """`ecm review approve` reports a runless event naming the held run in its metadata."""
    held = dg.materialize(
        [_events_stand_in], instance=instance, partition_key="2026-09-02", tags=CLOSED_PERIOD_TAGS
    )
    _report(instance, METRICS, [d("2026-09-02")])  # the downstream is current before approval
    _report(instance, EVENTS, [d("2026-09-02")], run_id=held.run_id)
    ticked = _tick(_sensors()["case_sla_daily_metrics__upstream_ready"], instance)
    (request,) = ticked.run_requests or []
    assert request.tags[RESTATEMENT_TAG] == "SOURCE_CORRECTION"
    assert request.tags[REVIEW_TAG] == "closed_periods"


def test_requests_resolve_against_the_real_code_location(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    base = build_definitions(tmp_path, tmp_path / "warehouse.duckdb")
    sensors = build_dependency_sensors(DATASETS)
    defs = dg.Definitions(assets=base.assets, resources=base.resources, sensors=sensors)
    sensor = defs.get_repository_def().get_sensor_def("case_sla_rolling_30d__upstream_ready")
    _report(instance, METRICS, days("2026-09-01", "2026-09-02"))
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    (request,) = data.run_requests or []
    assert request.asset_selection == [dg.AssetKey("case_sla_rolling_30d")]
    assert request.tags[PARTITION_RANGE_START_TAG] == "2026-09-01"
    assert request.tags[PARTITION_RANGE_END_TAG] == "2026-09-02"


def test_a_fresh_change_to_lookback_history_starts_partitions_whose_own_day_is_old() -> None:
    """max_age judges the change that makes a partition stale, not its whole history: a fresh
    correction of 09-01 recomputes the metrics of 09-02 although case events of 09-02 are old."""
    ids = {d("2026-09-01"): 50, d("2026-09-02"): 7}
    published = {EVENTS: {50: NOW - timedelta(hours=1), 7: NOW - timedelta(days=20)}}
    result = plan(
        DAILY_METRICS, [d("2026-09-02")], {EVENTS: ids}, {d("2026-09-02"): 8}, published, NOW
    )
    assert [r.partition for r in result.ready] == [d("2026-09-02")]
    # The same correction, published 30 hours ago, waits for a deliberate backfill.
    published = {EVENTS: {50: NOW - timedelta(hours=30), 7: NOW - timedelta(days=20)}}
    result = plan(
        DAILY_METRICS, [d("2026-09-02")], {EVENTS: ids}, {d("2026-09-02"): 8}, published, NOW
    )
    (waiting,) = result.waiting
    assert "case_events 2026-09-01 last published 30h ago" in waiting.reason
