"""The Dagster partitions of a dataset, derived from its contract; partitions are output
boundaries, so they start where the dataset's data starts and end where it ends."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.periods import shift


def partitions_for(contract: DatasetContract) -> dg.TimeWindowPartitionsDefinition:
    """Daily or monthly partitions from the contract's start through its end (inclusive), cut
    at midnight of its business-day timezone. Equal contracts give equal definitions."""
    start = contract.start_date
    end = contract.end_date
    # Dagster's end_date is exclusive: the partition after the contract's last one.
    end_exclusive = None
    if end is not None:
        end_exclusive = (
            (end + timedelta(days=1)) if contract.grain == "daily" else shift(end, "monthly", 1)
        ).isoformat()
    if contract.grain == "daily":
        return dg.DailyPartitionsDefinition(
            start_date=start.isoformat(), end_date=end_exclusive, timezone=contract.timezone
        )
    return dg.MonthlyPartitionsDefinition(
        start_date=start.isoformat(), end_date=end_exclusive, timezone=contract.timezone
    )
