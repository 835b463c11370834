"""Contracts of the case-SLA datasets: schema, partitions, publish mode, inputs."""

from __future__ import annotations

from ecm_assets.contracts.dataset import Column, DatasetContract, LandingSource, Upstream

EVENT_TYPES = ("opened", "assigned", "escalated", "resolved", "reopened")
PRIORITIES = ("P1", "P2", "P3", "P4")
#: Landing columns every case-event file must carry.
LANDING_COLUMNS = ("event_id", "case_id", "event_type", "event_ts", "unit_id", "priority")
#: A file may carry events up to this many days after their business date.
LATENESS_DAYS = 5
#: A case's history is looked up this many days back when its resolution is measured.
CASE_HISTORY_DAYS = 30
ROLLING_WINDOW_DAYS = 30
#: The daily schedule recomputes this many business days before its tick date (lookback).
SCHEDULE_LOOKBACK_DAYS = 3
#: Who answers for the case-SLA datasets (shown as owners in the Dagster UI).
OWNERS = ("team:enforcement-analytics",)
#: Daily metrics start only from case events published within this many hours.
UPSTREAM_MAX_AGE_HOURS = 24.0
#: First business date of the case-SLA data (the demo generates from here): the partitions
#: start where the data starts, so the UI shows the whole range filled.
PARTITIONS_START = "2026-09-01"

CASE_EVENTS = DatasetContract(
    name="case_events",
    description=(
        "Case events of one business date (UTC) from the locked landing snapshot: parsed, "
        "typed, deduplicated, corrections applied; bad rows quarantined with a reason."
    ),
    columns=(
        Column("event_id", "VARCHAR", nullable=False, description="source event id (unique)"),
        Column("case_id", "VARCHAR", nullable=False, description="enforcement case"),
        Column(
            "event_type",
            "VARCHAR",
            nullable=False,
            description="opened, assigned, escalated, resolved or reopened",
        ),
        Column("event_ts", "TIMESTAMPTZ", nullable=False, description="when it happened (UTC)"),
        Column("business_date", "DATE", nullable=False, description="UTC date of event_ts"),
        Column("unit_id", "VARCHAR", nullable=False, description="unit handling the case"),
        Column("region", "VARCHAR", nullable=False, description="owning region at event time"),
        Column("priority", "VARCHAR", nullable=False, description="P1 (highest) to P4"),
        Column("ingest_date", "DATE", nullable=False, description="landing date of its file"),
        Column("source_file", "VARCHAR", nullable=False, description="landing file it came from"),
        Column("source_line", "BIGINT", nullable=False, description="physical line in that file"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "event_id"),
    landing=LandingSource("case_events", LATENESS_DAYS, LANDING_COLUMNS, "event_ts"),
    reference=("org_hierarchy",),
    group="case_sla",
    start=PARTITIONS_START,
    owners=OWNERS,
)

DAILY_METRICS = DatasetContract(
    name="case_sla_daily_metrics",
    description=(
        "Daily SLA metrics per unit and region (region as at event time): opened, resolved, "
        "breached, median hours to first assignment, p90 hours to resolution."
    ),
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("region", "VARCHAR", nullable=False),
        Column("cases_opened", "BIGINT", nullable=False),
        Column("cases_first_assigned", "BIGINT", nullable=False),
        Column("cases_escalated", "BIGINT", nullable=False),
        Column("cases_resolved", "BIGINT", nullable=False),
        Column("cases_reopened", "BIGINT", nullable=False),
        Column("sla_breached", "BIGINT", nullable=False),
        Column("resolved_without_open", "BIGINT", nullable=False),
        Column("median_hours_to_first_assignment", "DOUBLE"),
        Column("p90_hours_to_resolution", "DOUBLE"),
        Column("sla_calendar_version", "VARCHAR", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id", "region"),
    upstream=(
        Upstream(
            "case_events",
            lookback_partitions=CASE_HISTORY_DAYS - 1,
            max_age_hours=UPSTREAM_MAX_AGE_HOURS,
        ),
    ),
    reference=("sla_calendar",),
    group="case_sla",
    start=PARTITIONS_START,
    owners=OWNERS,
)

ROLLING_30D = DatasetContract(
    name="case_sla_rolling_30d",
    description=(
        "30-day rolling SLA totals per unit and region ending on each business date; a change "
        "to one day moves the next 29."
    ),
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("window_start", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("region", "VARCHAR", nullable=False),
        Column("days_with_activity", "BIGINT", nullable=False),
        Column("cases_opened", "BIGINT", nullable=False),
        Column("cases_resolved", "BIGINT", nullable=False),
        Column("sla_breached", "BIGINT", nullable=False),
        Column("breach_rate", "DOUBLE"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id", "region"),
    upstream=(Upstream("case_sla_daily_metrics", lookback_partitions=ROLLING_WINDOW_DAYS - 1),),
    group="case_sla",
    start=PARTITIONS_START,
    owners=OWNERS,
)

MONTHLY_REPORT = DatasetContract(
    name="case_sla_monthly_report",
    description="Closed-period monthly SLA report per region and unit.",
    columns=(
        Column("report_month", "DATE", nullable=False),
        Column("region", "VARCHAR", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("days_reported", "BIGINT", nullable=False),
        Column("cases_opened", "BIGINT", nullable=False),
        Column("cases_resolved", "BIGINT", nullable=False),
        Column("cases_escalated", "BIGINT", nullable=False),
        Column("cases_reopened", "BIGINT", nullable=False),
        Column("sla_breached", "BIGINT", nullable=False),
        Column("breach_rate", "DOUBLE"),
    ),
    partition_column="report_month",
    grain="monthly",
    # The certified closed-period output: every publish is kept as an immutable version.
    publish_mode="versioned",
    business_key=("report_month", "region", "unit_id"),
    upstream=(Upstream("case_sla_daily_metrics"),),
    group="case_sla",
    start=PARTITIONS_START,
    owners=OWNERS,
)
