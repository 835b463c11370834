"""Worked example of adding a dataset: a contract and a pure transform, nothing else.

Daily event counts per priority, read from the published case events.
"""

from __future__ import annotations

import pandas as pd

from ecm_assets import (
    Column,
    ControlTotal,
    Dataset,
    DatasetContract,
    PartitionWindow,
    QualityContract,
    RowCount,
    Severity,
    UniqueKey,
    Upstream,
)

CONTRACT = DatasetContract(
    name="case_priority_mix_daily",
    description="Events and distinct cases per priority and event type for each business date.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("priority", "VARCHAR", nullable=False),
        Column("event_type", "VARCHAR", nullable=False),
        Column("events", "BIGINT", nullable=False),
        Column("cases", "BIGINT", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "priority", "event_type"),
    upstream=(Upstream("case_events"),),
    group="case_sla",
    start="2026-09-01",
)


def priority_mix(case_events: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    """Counts per business date, priority and event type."""
    out = (
        case_events.groupby(["business_date", "priority", "event_type"])
        .agg(events=("event_id", "size"), cases=("case_id", "nunique"))
        .reset_index()
    )
    return out.astype({"events": "int64", "cases": "int64"})[CONTRACT.column_names]


#: Dataset-level rules only: every event of the day is counted exactly once.
QUALITY = QualityContract(
    rules=(RowCount(Severity.WARN, min_rows=1), UniqueKey(Severity.FAIL_RUN)),
    controls=(ControlTotal("events_counted", output_column="events", upstream="case_events"),),
)

PRIORITY_MIX = Dataset(CONTRACT, priority_mix, QUALITY)
