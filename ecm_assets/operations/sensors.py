"""The landing sensor: new or changed landing files become runs of exactly the partitions
they touch, routed by correction class (operations/triggers.py).

Its cursor (the sha256 and partitions of every file seen) is saved by Dagster together with
the run requests of the same tick, and every request carries a run key made of the cursor's
change sequence and the changed files' bytes: a tick repeated after a crash asks for the same
runs, which Dagster launches once, while a later change that restores earlier bytes (v1, v2,
v1) or re-adds a deleted file is a new change event with a new key.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.adapters.warehouse import WarehouseLockedError
from ecm_assets.contracts.dataset import Dataset
from ecm_assets.contracts.periods import contiguous_ranges
from ecm_assets.operations.schedules import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from ecm_assets.operations.triggers import (
    CLOSED_PERIOD,
    LOOKBACK,
    OPEN_WINDOW,
    PublishedIndex,
    change_digest,
    change_run_key,
    classify,
    dump_cursor,
    load_cursor,
    load_sequence,
    scan,
)
from ecm_assets.orchestration.factory import (
    CORRECTION_CLASS_TAG,
    IO_MANAGER_KEY,
    RESTATEMENT_TAG,
    REVIEW_TAG,
    TRIGGER_TAG,
)
from ecm_assets.orchestration.resources import LandingZone
from ecm_assets.publish.io_manager import DuckDBPublishIOManager
from ecm_assets.publish.versions import closed_partitions

#: Reason code of the restatements the sensor requests for closed periods.
CORRECTION_REASON = "SOURCE_CORRECTION"
#: Tag carrying the id of the landing change a run was requested for.
LANDING_CHANGE_TAG = "ecm/landing_change"


def sensor_interval_seconds() -> int:
    """How often the daemon evaluates our sensors (ECM_SENSOR_INTERVAL_SECONDS, default 60)."""
    return int(os.environ.get("ECM_SENSOR_INTERVAL_SECONDS", "60"))


def closed_months(database: str | Path, datasets: list[Dataset]) -> set[date]:
    """Closed months of every versioned monthly dataset, read without blocking writers long.
    `database`: a DuckDB path or a postgresql:// URL."""
    warehouse = open_warehouse(database)
    if not warehouse.exists():
        return set()
    out: set[date] = set()
    with warehouse.connect(read_only=True, timeout_seconds=10) as conn:
        for d in datasets:
            if d.contract.publish_mode == "versioned" and d.contract.grain in ("daily", "monthly"):
                out |= {p.replace(day=1) for p in closed_partitions(conn, d.contract.name)}
    return out


def schedule_running(instance: dg.DagsterInstance, name: str | None) -> bool:
    """Whether the daily lookback schedule is on: only then is a date in its window left to it."""
    if name is None:
        return False
    states = instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
    # Our schedules default to STOPPED, so only an operator's explicit start counts.
    return any(s.name == name and s.status == InstigatorStatus.RUNNING for s in states)


def landing_run_requests(
    dataset: Dataset,
    by_class: dict[str, list[date]],
    change: str,
) -> list[dg.RunRequest]:
    """One run per contiguous range of each class; closed periods become held restatements.

    `change` identifies the change event (`change_run_key`): it prefixes every run key."""
    requests = []
    key = dg.AssetKey(dataset.contract.name)
    for cls in (LOOKBACK, CLOSED_PERIOD):
        for first, last in contiguous_ranges(by_class.get(cls, [])):
            tags = {
                TRIGGER_TAG: "landing_sensor",
                CORRECTION_CLASS_TAG: cls,
                LANDING_CHANGE_TAG: change,
            }
            if cls == CLOSED_PERIOD:
                tags[RESTATEMENT_TAG] = CORRECTION_REASON
                tags[REVIEW_TAG] = "closed_periods"
            partition_key = None
            if first == last:
                partition_key = first.isoformat()
            else:
                tags[PARTITION_RANGE_START_TAG] = first.isoformat()
                tags[PARTITION_RANGE_END_TAG] = last.isoformat()
            requests.append(
                dg.RunRequest(
                    run_key=f"landing:{change}:{cls}:{first.isoformat()}..{last.isoformat()}",
                    asset_selection=[key],
                    partition_key=partition_key,
                    tags=tags,
                )
            )
    return requests


def build_landing_sensor(
    dataset: Dataset,
    all_datasets: list[Dataset],
    lookback_days: int,
    lookback_schedule: str | None = None,
) -> dg.SensorDefinition:
    """The sensor of one dataset that reads landing files.

    `lookback_schedule` names the schedule that recomputes this dataset's last
    `lookback_days` dates, if any: while it runs, dates in its window are left to it.
    """
    contract = dataset.contract
    source = contract.landing
    if source is None:
        raise ValueError(f"dataset {contract.name} reads no landing files")

    @dg.sensor(
        name=f"{contract.name}__landing_files",
        description=(
            f"New or changed files under landing/{source.name}/ (by sha256) request runs of "
            f"exactly the {contract.name} partitions they touch: dates the running lookback "
            "schedule will recompute are left to it, older open dates are recomputed now. "
            "A date in a closed month is recomputed as a correction held for manual review "
            f"at {contract.name} itself: its rows, and everything computed from them up to "
            "the closed report, stay as certified until a person approves (then the "
            "downstream runs restate the chain without a second review) or rejects it. "
            "A resend of an event already published on another date also requests that date "
            "when its run still reads the file (it drops the old row); a resend that came "
            "later than the old date's lateness window leaves the event where it is published "
            "and is quarantined by its new date's run (event_published_on_other_date)."
        ),
        asset_selection=[dg.AssetKey(contract.name)],
        minimum_interval_seconds=sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        landing: LandingZone,
        warehouse_io_manager: DuckDBPublishIOManager,
    ) -> dg.SensorResult | dg.SkipReason:
        seen = load_cursor(context.cursor)
        time_rule = dataset.quality.timestamp_rule(source.time_column)
        index = PublishedIndex(warehouse_io_manager.database, contract)
        try:
            changes, remembered = scan(
                Path(landing.root), source, seen, contract.timezone, time_rule, index
            )
        except WarehouseLockedError as exc:
            return dg.SkipReason(f"warehouse busy, superseded rows unknown; retrying: {exc}")
        if not changes:
            return dg.SkipReason(f"no new or changed files under landing/{source.name}")
        try:
            closed = closed_months(warehouse_io_manager.database, all_datasets)
        except WarehouseLockedError as exc:
            # Nothing is lost: the cursor stays, the next tick sees the same changes.
            return dg.SkipReason(f"warehouse busy, closed periods unknown; retrying: {exc}")
        now = datetime.now(UTC)
        running = schedule_running(context.instance, lookback_schedule)
        by_class: dict[str, list[date]] = {}
        touched = sorted({d for c in changes for d in c.dates})
        start, end = contract.start_date, contract.end_date
        outside = [d for d in touched if d < start or (end is not None and d > end)]
        if outside:
            context.log.warning(
                f"{contract.name} has no partitions for dates {', '.join(map(str, outside))} "
                f"({contract.describe_partitions()}); their rows are not requested"
            )
        for day in (d for d in touched if d not in set(outside)):
            cls = classify(
                day,
                now=now,
                lookback_days=lookback_days,
                closed_months=closed,
                schedule_running=running,
                timezone=contract.timezone,
            )
            by_class.setdefault(cls, []).append(day)
        sequence = load_sequence(context.cursor) + 1
        change = change_run_key(sequence, change_digest(changes, remembered))
        for c in changes:
            context.log.info(
                f"{c.kind} landing file {c.path}: partitions "
                f"{', '.join(d.isoformat() for d in c.dates)}" + (f" ({c.note})" if c.note else "")
            )
        for cls, days in by_class.items():
            context.log.info(f"{cls}: {', '.join(d.isoformat() for d in days)}")
        if by_class.get(OPEN_WINDOW):
            context.log.info(
                f"left to {lookback_schedule} (running): "
                f"{', '.join(d.isoformat() for d in by_class[OPEN_WINDOW])}"
            )
        return dg.SensorResult(
            run_requests=landing_run_requests(dataset, by_class, change),
            cursor=dump_cursor(remembered, sequence),
        )

    return _sensor


def build_landing_sensors(
    watched: list[Dataset],
    all_datasets: list[Dataset],
    lookback_days: int,
    lookback_schedule: dict[str, str] | None = None,
) -> list[dg.SensorDefinition]:
    """One landing sensor per watched dataset; each must read landing files.

    `lookback_schedule` maps a dataset name to the lookback schedule that covers it.
    """
    covered = lookback_schedule or {}
    return [
        build_landing_sensor(d, all_datasets, lookback_days, covered.get(d.contract.name))
        for d in watched
    ]


assert IO_MANAGER_KEY == "warehouse_io_manager", "the sensor's resource parameter names it"
