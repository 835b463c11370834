"""Impact analysis: which partitions of which assets a change to one asset's range reaches.

A change does not stay on its dates: a 30-day window metric of June 15 spills into July 14,
and a monthly report is stale for every month the change touches (spec section 20). The plan
follows the contracts' upstream edges transitively, so a backfill can cover exactly the
affected set. Pure: no Dagster import and no clock; the caller says which partitions exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from ecm_assets.contracts.dataset import Dataset, DatasetContract, Grain, partition_key
from ecm_assets.contracts.periods import last_day, partition_of, partitions_between, shift


@dataclass(frozen=True)
class ImpactEntry:
    """The contiguous partition range of one asset a change reaches, and how it gets there."""

    asset: str
    grain: Grain
    #: First and last impacted partition (a month start for monthly assets).
    first: date
    last: date
    partitions: int
    #: 0 for the changed asset, else the longest edge path from it.
    depth: int
    #: The upstream asset(s) it is reached through; None for the changed asset.
    via: str | None
    why: str

    @property
    def first_key(self) -> str:
        """Dagster partition key of `first` (%Y-%m-%d, or a list/hash key)."""
        return partition_key(self.first)

    @property
    def last_key(self) -> str:
        return partition_key(self.last)

    def to_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "grain": self.grain,
            "first": self.first_key,
            "last": self.last_key,
            "partitions": self.partitions,
            "depth": self.depth,
            "via": self.via,
            "why": self.why,
        }


def count(grain: Grain, first: date, last: date) -> int:
    return len(partitions_between(first, last, grain))


def last_existing(grain: Grain, until: date) -> date:
    """The last partition whose whole window has ended by `until` (a complete month)."""
    return shift(partition_of(until + timedelta(days=1), grain), grain, -1)


def first_existing(grain: Grain, start: date) -> date:
    """The first partition that starts on or after the partitions start."""
    first = partition_of(start, grain)
    return first if first >= start else shift(first, grain, 1)


def _edge(up: Grain, down: Grain, lookback: int, first: date, last: date) -> tuple[date, date, str]:
    """Downstream partitions reading any of upstream [first, last].

    A downstream partition reads the upstream partitions overlapping its window plus
    `lookback` earlier upstream partitions (TimeWindowPartitionMapping(start_offset=-L)),
    so the change reaches every downstream window overlapping [first, end of last + L].
    """
    reach = last_day(shift(last, up, lookback), up)
    lo, hi = partition_of(first, down), partition_of(reach, down)
    unit = "days" if up == "daily" else "months"
    if up == down:
        why = f"window spillover +{lookback} {unit}" if lookback else "same dates"
    elif down == "monthly":
        span = f"{first:%Y-%m}" if lo == hi else f"{first:%Y-%m}..{reach:%Y-%m}"
        why = f"month of {span}" if lo == hi else f"months of {span}"
        if lookback:
            why += f" (lookback +{lookback} {unit})"
    else:
        why = f"days of {first:%Y-%m}..{reach:%Y-%m}"
        if lookback:
            why += f" (lookback +{lookback} {unit})"
    return lo, hi, why


def _topological(contracts: dict[str, DatasetContract]) -> list[str]:
    """Upstream before downstream; ties keep the declaration order."""
    pending = {
        name: {u.dataset for u in c.upstream if u.dataset in contracts}
        for name, c in contracts.items()
    }
    order: list[str] = []
    while pending:
        ready = [name for name, ups in pending.items() if not ups - set(order)]
        if not ready:
            raise ValueError(f"cycle among the dataset contracts: {sorted(pending)}")
        for name in ready:
            order.append(name)
            del pending[name]
    return order


def plan_impact(
    datasets: Iterable[Dataset | DatasetContract],
    asset: str,
    first: date,
    last: date,
    *,
    until: date | None,
    start: date | None = None,
) -> list[ImpactEntry]:
    """Every asset a change to `asset` partitions first..last reaches, in topological order.

    `until` is the last business date whose partitions exist (daily: that day; monthly: the
    months complete by then); None means no upper clip. `start` is an extra lower clip besides
    each contract's own start; partitions outside a contract's start..end and outside these
    clips are not planned: they do not exist.
    """
    contracts = {c.name: c for c in (getattr(d, "contract", d) for d in datasets)}
    if asset not in contracts:
        raise ValueError(f"unknown asset {asset!r}; valid assets: {', '.join(sorted(contracts))}")
    if first > last:
        raise ValueError(f"the changed range {first}..{last} is empty (first after last)")

    def clip(contract: DatasetContract, lo: date, hi: date) -> tuple[date, date] | None:
        grain = contract.grain
        for floor in (start, contract.start):
            if floor is not None:
                lo = max(lo, first_existing(grain, date.fromisoformat(str(floor))))
        if contract.end is not None:
            hi = min(hi, date.fromisoformat(str(contract.end)))
        if until is not None:
            hi = min(hi, last_existing(grain, until))
        return (lo, hi) if lo <= hi else None

    changed = contracts[asset]
    if changed.grain not in ("daily", "monthly"):
        raise ValueError(
            f"impact analysis starts from a daily or monthly dataset; {asset} has "
            f"{changed.grain} partitions ({changed.describe_partitions()})"
        )
    root = clip(changed, partition_of(first, changed.grain), partition_of(last, changed.grain))
    if root is None:
        raise ValueError(
            f"no partition of {asset} in {first}..{last} exists yet "
            f"(partitions {changed.describe_partitions()}, existing through {until or 'now'})"
        )
    reached: dict[str, ImpactEntry] = {
        asset: ImpactEntry(
            asset=asset,
            grain=changed.grain,
            first=root[0],
            last=root[1],
            partitions=count(changed.grain, *root),
            depth=0,
            via=None,
            why="changed",
        )
    }
    for name in _topological(contracts):
        if name == asset:
            continue  # a cycle back to the changed asset is rejected by _topological
        contract = contracts[name]
        via = [u.dataset for u in contract.upstream if u.dataset in reached]
        if via and contract.is_static:
            # Every key reads all of its (time-partitioned) upstream: all of them are reached.
            keys = contract.static_keys
            reached[name] = ImpactEntry(
                asset=name,
                grain=contract.grain,
                first=keys[0],  # type: ignore[arg-type]
                last=keys[-1],  # type: ignore[arg-type]
                partitions=len(keys),
                depth=max(reached[u].depth for u in via) + 1,
                via=", ".join(via),
                why=f"every {contract.grain} partition reads all of {', '.join(via)}",
            )
            continue
        if via and contract.grain == "hourly":
            raise ValueError(
                f"impact analysis plans daily, monthly, list and hash datasets; {name} (reached "
                f"via {', '.join(via)}) has hourly partitions"
            )
        found: list[tuple[date, date, int, str, str]] = []
        for upstream in contract.upstream:
            source = reached.get(upstream.dataset)
            if source is None:
                continue
            lo, hi, why = _edge(
                source.grain,
                contract.grain,
                upstream.lookback_partitions,
                source.first,
                source.last,
            )
            span = clip(contract, lo, hi)
            if span is not None:
                found.append((*span, source.depth + 1, upstream.dataset, why))
        if not found:
            continue
        lo = min(f[0] for f in found)
        hi = max(f[1] for f in found)
        reached[name] = ImpactEntry(
            asset=name,
            grain=contract.grain,
            first=lo,
            last=hi,
            partitions=count(contract.grain, lo, hi),
            depth=max(f[2] for f in found),
            via=", ".join(f[3] for f in found),
            why="; ".join(f"{f[4]} (via {f[3]})" if len(found) > 1 else f[4] for f in found),
        )
    return list(reached.values())
