"""Partition arithmetic of the two grains, shared by impact analysis, the sensors and the
schedules: one definition of "the month of a day", "n partitions later" and "a run of
consecutive partitions", so they can never disagree. Pure; no Dagster, no clock."""

from __future__ import annotations

import calendar
from collections.abc import Hashable, Iterable, Mapping
from datetime import date, timedelta

from ecm_assets.contracts.dataset import Grain

#: Most partitions one requested run owns (a month of daily partitions).
MAX_RANGE = 31


def partition_of(day: date, grain: Grain) -> date:
    """The partition of this grain that contains `day` (a month start for monthly)."""
    return day if grain == "daily" else day.replace(day=1)


def shift(partition: date, grain: Grain, n: int) -> date:
    """The partition n partitions after (n < 0: before) `partition` of this grain."""
    if grain == "daily":
        return partition + timedelta(days=n)
    months = partition.year * 12 + partition.month - 1 + n
    return date(months // 12, months % 12 + 1, 1)


def last_day(partition: date, grain: Grain) -> date:
    """The last calendar day a partition of this grain covers."""
    if grain == "daily":
        return partition
    return partition.replace(day=calendar.monthrange(partition.year, partition.month)[1])


def partitions_between(first: date, last: date, grain: Grain) -> list[date]:
    """Every partition of this grain from `first` through `last`, inclusive."""
    out: list[date] = []
    p = first
    while p <= last:
        out.append(p)
        p = shift(p, grain, 1)
    return out


def contiguous_ranges(
    partitions: Iterable[date],
    grain: Grain = "daily",
    labels: Mapping[date, Hashable] | None = None,
    cap: int = MAX_RANGE,
) -> list[tuple[date, date]]:
    """Consecutive partitions with the same label as [first, last] ranges of at most `cap`.

    One range becomes one run under the single-run backfill policy; partitions whose runs need
    different tags (a closed-period restatement next to an ordinary update) are split apart.
    """
    labels = labels or {}
    out: list[tuple[date, date]] = []
    size = 0
    for p in sorted(set(partitions)):
        if (
            out
            and p == shift(out[-1][1], grain, 1)
            and labels.get(p) == labels.get(out[-1][0])
            and size < cap
        ):
            out[-1] = (out[-1][0], p)
            size += 1
        else:
            out.append((p, p))
            size = 1
    return out
