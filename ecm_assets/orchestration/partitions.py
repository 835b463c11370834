"""The Dagster partitions of a dataset, derived from its contract; partitions are output
boundaries, so they start where the dataset's data starts and end where it ends."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.periods import shift


def partitions_for(contract: DatasetContract) -> dg.PartitionsDefinition:
    """Hourly, daily or monthly partitions from the contract's start through its end
    (inclusive), cut at midnight of its business-day timezone; static partitions of the
    list's keys or the hash buckets. Equal contracts give equal definitions."""
    if contract.is_static:
        return dg.StaticPartitionsDefinition(list(contract.static_keys))
    start = contract.start_date
    end = contract.end_date
    # Dagster's end_date is exclusive: the partition after the contract's last one.
    end_exclusive = None
    if contract.grain == "hourly":
        return dg.HourlyPartitionsDefinition(
            start_date=f"{start.isoformat()}-00:00",
            end_date=None if end is None else f"{(end + timedelta(days=1)).isoformat()}-00:00",
            timezone=contract.timezone,
        )
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
