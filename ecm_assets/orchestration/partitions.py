"""Partition definitions shared by every dataset of a grain; partitions are output boundaries."""

from __future__ import annotations

import dagster as dg

from ecm_assets.contracts.dataset import Grain

#: First business date of every partitioned dataset. Business dates are UTC calendar days.
PARTITIONS_START = "2026-01-01"

DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
MONTHLY = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def partitions_for(grain: Grain) -> dg.TimeWindowPartitionsDefinition:
    return {"daily": DAILY, "monthly": MONTHLY}[grain]
