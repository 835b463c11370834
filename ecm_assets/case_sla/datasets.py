"""The case-SLA datasets: each a contract paired with its pure transform."""

from __future__ import annotations

from ecm_assets.case_sla.contracts import CASE_EVENTS, DAILY_METRICS, MONTHLY_REPORT, ROLLING_30D
from ecm_assets.case_sla.events import parse_case_events
from ecm_assets.case_sla.metrics import daily_sla_metrics, monthly_report, rolling_30d
from ecm_assets.case_sla.priority_mix import PRIORITY_MIX
from ecm_assets.case_sla.quality import (
    CASE_EVENTS_QUALITY,
    DAILY_METRICS_QUALITY,
    MONTHLY_REPORT_QUALITY,
    ROLLING_30D_QUALITY,
)
from ecm_assets.contracts.dataset import Dataset

DATASETS: tuple[Dataset, ...] = (
    Dataset(CASE_EVENTS, parse_case_events, CASE_EVENTS_QUALITY),
    Dataset(DAILY_METRICS, daily_sla_metrics, DAILY_METRICS_QUALITY, upstream_as="relation"),
    Dataset(ROLLING_30D, rolling_30d, ROLLING_30D_QUALITY),
    Dataset(MONTHLY_REPORT, monthly_report, MONTHLY_REPORT_QUALITY),
    PRIORITY_MIX,
)
