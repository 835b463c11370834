"""`build_definitions`: a list of datasets becomes one complete Dagster code location.

The one public entry point of the orchestration side: assets with their checks, the publish
IO manager, the landing and reference resources, the failure alert, and only the schedules and
sensors the caller names. Paths default to the environment (ECM_DATA_DIR, ECM_WAREHOUSE_URL or
ECM_WAREHOUSE, ECM_DURABLE_STAGING, ECM_ALERT_WEBHOOK_URL) so one definitions file serves the
demo, tests and production. The warehouse is a DuckDB file path or a `postgresql://` URL
(adapters/backends).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from ecm_assets.adapters.backends import (
    WAREHOUSE_URL_ENV,
    is_postgres_url,
    open_warehouse,
    warehouse_target,
)
from ecm_assets.contracts.dataset import Dataset
from ecm_assets.operations.alerts import AlertSink, ecm_run_failure_alert
from ecm_assets.operations.dependencies import (
    build_dependency_sensors,
    dependency_sensor_name,
    dependency_sensor_refusal,
)
from ecm_assets.operations.outbox_sensor import build_outbox_sensor
from ecm_assets.operations.schedules import (
    LOOKBACK_SCHEDULE,
    MONTHLY_SCHEDULE,
    build_lookback_schedule,
    build_monthly_schedule,
)
from ecm_assets.operations.sensors import build_landing_sensors
from ecm_assets.orchestration.factory import (
    IO_MANAGER_KEY,
    build_assets,
    build_mode_jobs,
    build_source_assets,
    pool_for,
)
from ecm_assets.orchestration.resources import LandingZone, ReferenceStore
from ecm_assets.publish.io_manager import DuckDBPublishIOManager


def default_data_dir() -> Path:
    """ECM_DATA_DIR (default ./data): holds `landing/` and `reference/`."""
    return Path(os.environ.get("ECM_DATA_DIR", "data")).resolve()


def default_warehouse(data_dir: Path | None = None) -> Path | str:
    """Where assets publish: ECM_WAREHOUSE_URL (a `postgresql://` URL or a DuckDB path), else
    ECM_WAREHOUSE (a DuckDB path), else <data_dir>/warehouse.duckdb. A DuckDB file comes back
    as an absolute Path, a server as its URL."""
    base = data_dir or default_data_dir()
    target = warehouse_target(base / "warehouse.duckdb")
    assert target is not None
    resolved = resolve_warehouse(target)
    return resolved if is_postgres_url(resolved) else Path(resolved)


def resolve_warehouse(target: str | os.PathLike[str]) -> str:
    """A warehouse target as one stable string: a URL as given, a DuckDB path made absolute
    (so runs started from another directory publish to the same file)."""
    text = str(target)
    if is_postgres_url(text):
        return text
    if text.startswith("duckdb:///"):
        text = open_warehouse(text).url
    return str(Path(text).resolve())


def _shown_warehouse(database: str) -> str | dg.EnvVar:
    """The IO manager's `database` as the UI's resource page will show it: a URL taken from
    ECM_WAREHOUSE_URL is referenced by the variable's name, so a password in it never reaches
    the UI (Dagster resolves it in each run). Better still, keep passwords out of the URL
    (PGPASSWORD, ~/.pgpass), which libpq reads."""
    if is_postgres_url(database) and os.environ.get(WAREHOUSE_URL_ENV, "").strip() == database:
        return dg.EnvVar(WAREHOUSE_URL_ENV)
    return database


def _named(datasets: dict[str, Dataset], names: Sequence[str], what: str) -> list[Dataset]:
    if isinstance(names, str):
        raise TypeError(f"{what} takes a list of dataset names, not the string {names!r}")
    unknown = [n for n in names if n not in datasets]
    if unknown:
        raise ValueError(f"{what}: unknown datasets {unknown}; known: {sorted(datasets)}")
    return [datasets[n] for n in names]


def build_definitions(
    datasets: Sequence[Dataset],
    *,
    data_dir: str | Path | None = None,
    warehouse: str | os.PathLike[str] | None = None,
    lookback_schedule: Sequence[str] = (),
    lookback_days: int = 3,
    monthly_schedule: Sequence[str] = (),
    landing_sensors: Sequence[str] = (),
    dependency_sensors: Sequence[str] = (),
    alert_webhook_url: str | None = None,
    durable_staging: bool | None = None,
    jobs_dir: str | Path | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """A complete code location for `datasets`.

    Schedules and sensors are opt-in by dataset name; all ship STOPPED:
    - `lookback_schedule`: daily datasets recomputed every night for the `lookback_days`
      business dates before the tick, in one run (`daily_lookback_schedule`);
    - `monthly_schedule`: monthly datasets reported after the previous month closed and its
      late files had time to land (`monthly_report_schedule`);
    - `landing_sensors`: datasets whose new or changed landing files request runs;
    - `dependency_sensors`: datasets started once the upstream partitions they read publish.
    The failure alert and the outbox sensor (`ecm_outbox_delivery`, which reports publishes
    whose run died before Dagster recorded them) are always on; `alert_webhook_url` (default
    $ECM_ALERT_WEBHOOK_URL) also receives each alert as JSON. `jobs_dir`: a directory of ECM
    sync job specs, each merged in as a partitioned sync asset with its schedule (docs/sync.md).
    `warehouse`: a DuckDB file path (or `duckdb:///path`) or a `postgresql://` URL; default
    $ECM_WAREHOUSE_URL, then $ECM_WAREHOUSE, then <data_dir>/warehouse.duckdb. The assets'
    concurrency pool follows the backend (`pool_for`). `executor`: default
    in-process. Every step reads or writes the warehouse and a run is mostly one step (a
    partition of one asset) or a chain of them; a process per step (Dagster's default) costs
    a fresh interpreter that imports dagster, pandas and the location again (~3.5 CPU-s, a
    third of a one-partition run) and buys parallelism only between independent steps of
    one run, which the DuckDB pool (1) forbids anyway. Pass `dg.multiprocess_executor` for
    that parallelism on PostgreSQL.
    """
    by_name: dict[str, Dataset] = {}
    for d in datasets:
        if not isinstance(d, Dataset):
            raise TypeError(f"datasets takes Dataset objects, got {type(d).__name__}")
        if d.contract.name in by_name:
            raise ValueError(f"two datasets are named {d.contract.name!r}")
        by_name[d.contract.name] = d
    for d in by_name.values():
        if not d.contract.is_static:
            d.contract.start_date  # noqa: B018  (raises PartitioningError naming the contract)
    root = Path(data_dir).resolve() if data_dir is not None else default_data_dir()
    database = resolve_warehouse(warehouse if warehouse is not None else default_warehouse(root))
    if durable_staging is None:
        durable_staging = os.environ.get("ECM_DURABLE_STAGING", "0") == "1"
    if alert_webhook_url is None:
        alert_webhook_url = os.environ.get("ECM_ALERT_WEBHOOK_URL", "")

    schedules: list[dg.ScheduleDefinition] = []
    covered: dict[str, str] = {}
    if lookback_schedule:
        nightly = _named(by_name, lookback_schedule, "lookback_schedule")
        schedules.append(build_lookback_schedule(nightly, lookback_days, LOOKBACK_SCHEDULE))
        covered = {d.contract.name: LOOKBACK_SCHEDULE for d in nightly}
    if monthly_schedule:
        monthly = _named(by_name, monthly_schedule, "monthly_schedule")
        lateness = max(
            (d.contract.landing.lateness_days for d in by_name.values() if d.contract.landing),
            default=0,
        )
        schedules.append(build_monthly_schedule(monthly, lateness, MONTHLY_SCHEDULE))
    watched = _named(by_name, landing_sensors, "landing_sensors")
    no_landing = [d.contract.name for d in watched if d.contract.landing is None]
    if no_landing:
        raise ValueError(f"landing_sensors: datasets {no_landing} declare no landing source")
    dependent = _named(by_name, dependency_sensors, "dependency_sensors")
    no_upstream = [d.contract.name for d in dependent if not d.contract.upstream]
    if no_upstream:
        raise ValueError(f"dependency_sensors: datasets {no_upstream} read no upstream dataset")
    grains = {name: d.contract.grain for name, d in by_name.items()}
    for d in dependent:
        refusal = dependency_sensor_refusal(d.contract, grains)
        if refusal:
            raise ValueError(f"dependency_sensors: {refusal}")
    all_datasets = list(by_name.values())
    sensors = [
        *build_landing_sensors(watched, all_datasets, lookback_days, covered),
        *[
            s
            for s in build_dependency_sensors(all_datasets)
            if s.name in {dependency_sensor_name(d.contract) for d in dependent}
        ],
        ecm_run_failure_alert,
        # Always on: owed Dagster events of publishes whose run died after COMMIT.
        build_outbox_sensor(),
    ]
    assets = build_assets(all_datasets, pool=pool_for(database))
    location = dg.Definitions(
        executor=executor if executor is not None else dg.in_process_executor,
        assets=[*build_source_assets(all_datasets), *assets],
        # dry_run_daily, shadow_monthly, ...: the non-publishing backfill modes, by name.
        jobs=build_mode_jobs(assets),
        schedules=schedules,
        sensors=sensors,
        resources={
            IO_MANAGER_KEY: DuckDBPublishIOManager(
                database=_shown_warehouse(database), durable_staging=durable_staging
            ),
            "landing": LandingZone(root=str(root / "landing")),
            "reference": ReferenceStore(root=str(root / "reference")),
            # Failed runs are logged; a webhook URL also receives them as JSON.
            "alerts": AlertSink(webhook_url=alert_webhook_url),
        },
    )
    if jobs_dir is None:
        return location
    from ecm_assets.sync.definitions import build_sync_definitions

    return dg.Definitions.merge(location, build_sync_definitions(jobs_dir, database))
