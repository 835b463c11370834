"""The case-SLA datasets: each a contract paired with its pure transform."""

from __future__ import annotations

from ecm_assets.case_sla.contracts import CASE_EVENTS, DAILY_METRICS, MONTHLY_REPORT, ROLLING_30D
from ecm_assets.case_sla.events import parse_case_events
from ecm_assets.case_sla.metrics import daily_sla_metrics, monthly_report, rolling_30d
from ecm_assets.case_sla.priority_mix import PRIORITY_MIX
from ecm_assets.contracts.dataset import Dataset

DATASETS: tuple[Dataset, ...] = (
    Dataset(CASE_EVENTS, parse_case_events),
    Dataset(DAILY_METRICS, daily_sla_metrics),
    Dataset(ROLLING_30D, rolling_30d),
    Dataset(MONTHLY_REPORT, monthly_report),
    PRIORITY_MIX,
)
