"""Worked example of adding a dataset: a contract and a pure transform, nothing else.

Daily event counts per priority, read from the published case events. The transform is SQL
(`run_sql`): declared `upstream_as="relation"`, it reads the published events inside the
warehouse; a test calls the same function with a plain frame. A pandas function works the
same way (with the default `upstream_as="frame"`).
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
from ecm_assets.contracts.transform import UpstreamRelation, run_sql

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
    owners=("team:enforcement-analytics",),
)


#: A SQL transform: the same pure-function contract, the work done by DuckDB. GROUP BY keeps
#: null keys where pandas' groupby drops them, hence the filter.
PRIORITY_MIX_SQL = """
SELECT business_date::DATE AS business_date, priority, event_type, count(*) AS events,
       count(DISTINCT case_id) AS cases
FROM case_events
WHERE business_date IS NOT NULL AND priority IS NOT NULL AND event_type IS NOT NULL
GROUP BY ALL
ORDER BY ALL
"""


def priority_mix(
    case_events: pd.DataFrame | UpstreamRelation, window: PartitionWindow
) -> pd.DataFrame:
    """Counts per business date, priority and event type."""
    out = run_sql(PRIORITY_MIX_SQL, case_events=case_events)
    out["business_date"] = pd.to_datetime(out["business_date"]).astype("datetime64[ns]")
    out = out.astype({"priority": object, "event_type": object})
    return out.astype({"events": "int64", "cases": "int64"})[CONTRACT.column_names]


#: Dataset-level rules only: every event of the day is counted exactly once.
QUALITY = QualityContract(
    rules=(RowCount(Severity.WARN, min_rows=1), UniqueKey(Severity.FAIL_RUN)),
    controls=(ControlTotal("events_counted", output_column="events", upstream="case_events"),),
)

PRIORITY_MIX = Dataset(CONTRACT, priority_mix, QUALITY, upstream_as="relation")
