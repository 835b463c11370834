"""The shipped code location: the case-SLA datasets, as one call of `build_definitions`.

Paths come from the environment so the same code serves the demo, tests and production:
ECM_DATA_DIR (default ./data) holds `landing/` and `reference/`; ECM_WAREHOUSE_URL names the
warehouse the assets publish to, a `postgresql://` URL or a DuckDB file (else ECM_WAREHOUSE,
a DuckDB path, default $ECM_DATA_DIR/warehouse.duckdb);
ECM_DURABLE_STAGING=1 stages in warehouse tables instead of temp tables (docs/publish.md).
ECM_SENSOR_INTERVAL_SECONDS (default 60) paces the sensors; ECM_ALERT_WEBHOOK_URL receives
failure alerts as JSON (docs/runbook.md); ECM_SYNC_JOBS_DIR replaces the shipped sync job
specs (the seed's historical-sync-001 demo, docs/sync.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ecm_assets import build_definitions
from ecm_assets.case_sla.contracts import SCHEDULE_LOOKBACK_DAYS
from ecm_assets.case_sla.datasets import DATASETS
from ecm_assets.location import default_data_dir, default_warehouse
from ecm_assets.sync.spec import SHIPPED_JOBS_DIR


def data_dir() -> Path:
    return default_data_dir()


def warehouse_path() -> Path | str:
    """The DuckDB file (a Path) or the postgresql:// URL the location publishes to."""
    return default_warehouse()


def case_sla_definitions(
    data: Path | None = None, warehouse: str | Path | None = None
) -> dg.Definitions:
    """The case-SLA location; `data` / `warehouse` (a DuckDB path or a postgresql:// URL)
    override the environment (tests)."""
    return build_definitions(
        DATASETS,
        data_dir=data,
        warehouse=warehouse,
        lookback_schedule=[d.contract.name for d in DATASETS if d.contract.grain == "daily"],
        lookback_days=SCHEDULE_LOOKBACK_DAYS,
        monthly_schedule=["case_sla_monthly_report"],
        landing_sensors=["case_events"],
        dependency_sensors=[d.contract.name for d in DATASETS if d.contract.upstream],
        jobs_dir=os.environ.get("ECM_SYNC_JOBS_DIR") or SHIPPED_JOBS_DIR,
    )


defs = case_sla_definitions()
