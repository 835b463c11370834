"""The code location: every dataset's asset, and the resources that bound their IO.

Paths come from the environment so the same code serves the demo, tests and production:
ECM_DATA_DIR (default ./data) holds `landing/` and `reference/`; ECM_WAREHOUSE (default
$ECM_DATA_DIR/warehouse.duckdb) is the DuckDB file the assets publish to;
ECM_DURABLE_STAGING=1 stages in warehouse tables instead of temp tables (docs/publish.md).
ECM_SENSOR_INTERVAL_SECONDS (default 60) paces the sensors; ECM_ALERT_WEBHOOK_URL receives
failure alerts as JSON (docs/runbook.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ecm_assets.case_sla.contracts import SCHEDULE_LOOKBACK_DAYS
from ecm_assets.case_sla.datasets import DATASETS
from ecm_assets.operations.alerts import AlertSink, ecm_run_failure_alert
from ecm_assets.operations.dependencies import build_dependency_sensors
from ecm_assets.operations.schedules import SCHEDULES
from ecm_assets.operations.sensors import build_landing_sensors
from ecm_assets.orchestration.factory import IO_MANAGER_KEY, build_assets, build_mode_jobs
from ecm_assets.orchestration.resources import LandingZone, ReferenceStore
from ecm_assets.publish.io_manager import DuckDBPublishIOManager


def data_dir() -> Path:
    return Path(os.environ.get("ECM_DATA_DIR", "data")).resolve()


def warehouse_path() -> Path:
    return Path(os.environ.get("ECM_WAREHOUSE", str(data_dir() / "warehouse.duckdb"))).resolve()


def build_definitions(data: Path | None = None, warehouse: Path | None = None) -> dg.Definitions:
    data = data or data_dir()
    warehouse = warehouse or warehouse_path()
    assets = build_assets(DATASETS)
    return dg.Definitions(
        assets=assets,
        jobs=build_mode_jobs(assets),
        schedules=SCHEDULES,
        sensors=[
            *build_landing_sensors(list(DATASETS), SCHEDULE_LOOKBACK_DAYS),
            *build_dependency_sensors(DATASETS),
            ecm_run_failure_alert,
        ],
        resources={
            IO_MANAGER_KEY: DuckDBPublishIOManager(
                database=str(warehouse),
                durable_staging=os.environ.get("ECM_DURABLE_STAGING", "0") == "1",
            ),
            "landing": LandingZone(root=str(data / "landing")),
            "reference": ReferenceStore(root=str(data / "reference")),
            # Failed runs are logged; set ECM_ALERT_WEBHOOK_URL to also POST them as JSON.
            "alerts": AlertSink(webhook_url=os.environ.get("ECM_ALERT_WEBHOOK_URL", "")),
        },
    )


defs = build_definitions()
