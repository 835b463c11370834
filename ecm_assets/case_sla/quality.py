"""Quality contracts of the case-SLA datasets: each check with its severity beside it.

Every severity is used on a realistic rule:
- INFO: the share of days without a p90 resolution time is only recorded.
- WARN: a day whose newest event is long before midnight (a feed that may have stopped
  early), and a landing file with columns we do not know.
- QUARANTINE_RECORD: missing case_id, unknown event type or priority, a unit missing
  from the org hierarchy pinned for the event time (referential), ids that are not plain
  identifiers (a JSON object or number, a NUL byte, padding, more than 64 characters) and
  event timestamps without a zone.
- FAIL_PARTITION: an empty business day, and a day quarantining more than 5% of its rows.
- FAIL_RUN: a missing column, a duplicate business key, broken control totals or counts.
- MANUAL_REVIEW: a restatement that moves a closed month's breach count by more than 2%.
"""

from __future__ import annotations

import string
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandera.typing import Series

from ecm_assets.case_sla.contracts import EVENT_TYPES, PRIORITIES
from ecm_assets.contracts.quality import (
    ControlTotal,
    Drift,
    Freshness,
    NullRate,
    QualityContract,
    QuarantineRate,
    Referential,
    RowCount,
    Severity,
    TextRule,
    TimeBound,
    TimestampRule,
    UniqueKey,
    on_failure,
)

#: Share of a day's rows that may be quarantined before the day is not published.
MAX_QUARANTINE_RATE = 0.05
#: How far a restatement may move a closed month's breach count without a human.
MAX_CLOSED_MONTH_BREACH_DRIFT = 0.02

_QUARANTINE = on_failure(Severity.QUARANTINE_RECORD)
_FAIL_RUN = on_failure(Severity.FAIL_RUN)

#: What an id of the case feeds consists of: letters, digits and . _ : -
ID_CHARACTERS = string.ascii_letters + string.digits + "._:-"
ID_MAX_LENGTH = 64
#: event_ts is RFC 3339 with a zone: the feeds declare no source zone, so a value without
#: one is not taken as UTC but quarantined. The transform reads timestamps by this rule.
EVENT_TS_RULE = TimestampRule("event_ts", Severity.QUARANTINE_RECORD, require_zone=True)
#: event_type, priority and unit_id need no text rule: only values of their closed lists
#: (EVENT_TYPES, PRIORITIES, the pinned org hierarchy) are published.
CASE_EVENT_VALUES = (
    *(
        TextRule(c, Severity.QUARANTINE_RECORD, max_length=ID_MAX_LENGTH, characters=ID_CHARACTERS)
        for c in ("event_id", "case_id")
    ),
    EVENT_TS_RULE,
)


def _present(series: pd.Series) -> pd.Series:
    """Not null and not blank (`str(v).strip() != ""`), without a Python pass over every
    value: a string holding a printable non-space ASCII character is present whatever
    Python counts as whitespace; only the other values (rare) are judged by str.strip()."""
    present = series.notna().to_numpy(dtype=bool)
    try:
        text = pa_arrow.array(series, from_pandas=True)
        if not (pa_arrow.types.is_string(text.type) or pa_arrow.types.is_large_string(text.type)):
            raise pa_arrow.ArrowTypeError(str(text.type))
    except (pa_arrow.ArrowInvalid, pa_arrow.ArrowTypeError):
        return series.notna() & (series.astype(str).str.strip() != "")
    visible = pc.match_substring_regex(text, "[!-~]").fill_null(False)
    out = present & np.asarray(visible.to_numpy(zero_copy_only=False), dtype=bool)
    rest = np.flatnonzero(present & ~out)
    if len(rest):
        out[rest] = (series.iloc[rest].astype(str).str.strip() != "").to_numpy(dtype=bool)
    return pd.Series(out, index=series.index)


class CaseEventsModel(pa.DataFrameModel):
    """Row rules of case_events; the transform only rejects rows it cannot type or date."""

    event_id: Series[str] = pa.Field(nullable=False, unique=False, metadata=_FAIL_RUN)
    case_id: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    event_type: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    priority: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    event_ts: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    unit_id: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    # Unresolved only for units the referential rule quarantines.
    region: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    ingest_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    source_file: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    source_line: Series[int] = pa.Field(ge=1, metadata=_FAIL_RUN)

    @pa.check("case_id", name="missing_case_id", ignore_na=False, statistics=_QUARANTINE)
    def _case_id(cls, s: pd.Series) -> pd.Series:
        return _present(s)

    @pa.check("event_type", name="unknown_event_type", ignore_na=False, statistics=_QUARANTINE)
    def _event_type(cls, s: pd.Series) -> pd.Series:
        return s.isin(EVENT_TYPES)

    @pa.check("priority", name="unknown_priority", ignore_na=False, statistics=_QUARANTINE)
    def _priority(cls, s: pd.Series) -> pd.Series:
        return s.isin(PRIORITIES)

    class Config:
        strict = True


class DailyMetricsModel(pa.DataFrameModel):
    business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    unit_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    region: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    cases_opened: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_first_assigned: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_escalated: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_resolved: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_reopened: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    sla_breached: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    resolved_without_open: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    median_hours_to_first_assignment: Series[float] = pa.Field(
        nullable=True, ge=0, metadata=_FAIL_RUN
    )
    p90_hours_to_resolution: Series[float] = pa.Field(nullable=True, ge=0, metadata=_FAIL_RUN)
    sla_calendar_version: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)

    @pa.dataframe_check(name="breaches_within_resolutions", statistics=_FAIL_RUN)
    def _breaches(cls, df: pd.DataFrame) -> pd.Series:
        return df["sla_breached"] <= df["cases_resolved"]

    class Config:
        strict = True


class Rolling30dModel(pa.DataFrameModel):
    business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    window_start: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    unit_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    region: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    days_with_activity: Series[int] = pa.Field(ge=1, le=30, metadata=_FAIL_RUN)
    cases_opened: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_resolved: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    sla_breached: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    breach_rate: Series[float] = pa.Field(nullable=True, ge=0, le=1, metadata=_FAIL_RUN)

    class Config:
        strict = True


class MonthlyReportModel(pa.DataFrameModel):
    report_month: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    region: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    unit_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    days_reported: Series[int] = pa.Field(ge=1, le=31, metadata=_FAIL_RUN)
    cases_opened: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_resolved: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_escalated: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    cases_reopened: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    sla_breached: Series[int] = pa.Field(ge=0, metadata=_FAIL_RUN)
    breach_rate: Series[float] = pa.Field(nullable=True, ge=0, le=1, metadata=_FAIL_RUN)

    class Config:
        strict = True


CASE_EVENTS_QUALITY = QualityContract(
    model=CaseEventsModel,
    rules=(
        Referential(
            "unit_id",
            reference="org_hierarchy",
            key="unit_id",
            severity=Severity.QUARANTINE_RECORD,
            name="unknown_unit_id",
            time_column="event_ts",
        ),
        RowCount(Severity.FAIL_PARTITION, min_rows=1),
        UniqueKey(Severity.FAIL_RUN),
        Freshness("event_ts", max_lag=timedelta(hours=6), severity=Severity.WARN),
        QuarantineRate(MAX_QUARANTINE_RATE, Severity.FAIL_PARTITION),
    ),
    time_bounds=(TimeBound("event_ts"),),
    values=CASE_EVENT_VALUES,
)

DAILY_METRICS_QUALITY = QualityContract(
    model=DailyMetricsModel,
    rules=(
        RowCount(Severity.WARN, min_rows=1),
        UniqueKey(Severity.FAIL_RUN),
        NullRate("p90_hours_to_resolution", Severity.INFO),
        Drift(
            "cases_opened", max_relative_change=0.5, severity=Severity.WARN, min_absolute_change=20
        ),
    ),
    controls=(
        ControlTotal(
            "opened_events",
            output_column="cases_opened",
            upstream="case_events",
            upstream_filter=(("event_type", "opened"),),
        ),
        ControlTotal(
            "resolved_events",
            output_column="cases_resolved",
            upstream="case_events",
            upstream_filter=(("event_type", "resolved"),),
        ),
    ),
)

ROLLING_30D_QUALITY = QualityContract(
    model=Rolling30dModel,
    rules=(RowCount(Severity.WARN, min_rows=1), UniqueKey(Severity.FAIL_RUN)),
)

MONTHLY_REPORT_QUALITY = QualityContract(
    model=MonthlyReportModel,
    rules=(
        RowCount(Severity.WARN, min_rows=1),
        UniqueKey(Severity.FAIL_RUN),
        Drift(
            "sla_breached",
            max_relative_change=MAX_CLOSED_MONTH_BREACH_DRIFT,
            severity=Severity.MANUAL_REVIEW,
            closed_only=True,
        ),
    ),
    controls=(
        ControlTotal(
            "opened_total",
            output_column="cases_opened",
            upstream="case_sla_daily_metrics",
            upstream_column="cases_opened",
        ),
        ControlTotal(
            "breached_total",
            output_column="sla_breached",
            upstream="case_sla_daily_metrics",
            upstream_column="sla_breached",
        ),
    ),
)
