"""Which partitions a closed period guards: itself and the upstream rows it was computed from.

The rule (docs/lifecycle.md): a change to a closed period is reviewed once, before anything
of the chain changes. Every run, whatever its tags (a landing-sensor correction, a schedule,
a dependency-sensor run, a manual materialize from the UI or the CLI), holds its output for
review when it would change a partition a closed partition downstream was computed from,
whatever the dataset's publish mode; a run requested as a correction of a closed period
(run tag `ecm/review=closed_periods`, set by the landing sensor) is also held when it would
change the closed partition itself. "Would change": the rows it would publish differ from
the rows published now (business checksum); a rerun that reproduces them publishes as usual.
Rejecting a held run leaves every dataset of the chain as it was, so the certified period,
its upstream and its replay still agree. Approving it publishes that dataset; the downstream
runs that recompute from the approved rows carry the correction on without a second review.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

import pandas as pd

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.boundaries import InputBoundary
from ecm_assets.contracts.dataset import DatasetContract, partition_key
from ecm_assets.contracts.periods import last_day
from ecm_assets.contracts.registry import registered_contracts
from ecm_assets.manifest.ledger import Manifest, load_manifests
from ecm_assets.operations.impact import plan_impact
from ecm_assets.publish.versions import closed_partitions

#: Run tag and value of a correction of a closed period (orchestration.factory.REVIEW_TAG).
REVIEW_TAG = "ecm/review"
REVIEW_CLOSED = "closed_periods"
#: The quality finding a held closed-period change carries (orchestration.factory).
REVIEW_RULE = "closed_period_review"


def guarded_partitions(
    conn: Any,
    contract: DatasetContract,
    partitions: Iterable[date],
    contracts: Iterable[DatasetContract] | None = None,
) -> dict[date, str]:
    """The given partitions a closed period guards, each with the closed partition it feeds.

    Downstream reach follows the contracts' upstream edges and lookbacks as `ecm impact`
    does, so a day that a 30-day window of a closed month reads is guarded too.
    """
    partitions = sorted(set(partitions))
    known = list(contracts) if contracts is not None else registered_contracts()
    if contract.name not in {c.name for c in known}:
        known.append(contract)
    out: dict[date, str] = {}
    if contract.publish_mode == "versioned":
        for d in sorted(
            set(closed_partitions(conn, contract.name, contract.timezone)) & set(partitions)
        ):
            out[d] = f"{contract.name} {partition_key(d)}"
    closed = {
        c.name: closed_partitions(conn, c.name, c.timezone)
        for c in known
        if c.publish_mode == "versioned" and c.name != contract.name
    }
    if not any(closed.values()) or contract.grain not in ("daily", "monthly"):
        return out  # impact analysis starts from daily and monthly datasets only
    for p in partitions:
        if p in out:
            continue
        reach = plan_impact(known, contract.name, p, last_day(p, contract.grain), until=None)
        for entry in reach[1:]:
            hits = [
                d
                for d in closed.get(entry.asset, ())
                if entry.grain in ("list", "hash") or entry.first <= d <= entry.last
            ]
            if hits:
                out[p] = f"{entry.asset} {partition_key(min(hits))}"
                break
    return out


def own_closed(contract: DatasetContract, partition: date, feeds: str) -> bool:
    """Whether a guarded partition is guarded as a closed partition of the dataset itself
    (not as the upstream of another): those follow the restatement rule unless a run asks
    for review."""
    return feeds == f"{contract.name} {partition_key(partition)}"


def changed_partitions(
    conn: Any,
    contract: DatasetContract,
    accepted: pd.DataFrame,
    partitions: Iterable[date],
) -> list[date]:
    """The partitions whose rows `accepted` would change: its business checksum of the
    partition differs from the published one (what readers see now)."""
    from ecm_assets.publish.protocol import (
        business_checksum,
        frame_checksum,
        published_table_exists,
    )

    exists = published_table_exists(conn, contract)
    pcol = quote_ident(contract.partition_column)
    column = accepted[contract.partition_column]
    values = (
        pd.to_datetime(column).dt.date
        if contract.grain in ("daily", "monthly")
        else pd.Series(contract.values_of(column), index=accepted.index, dtype=object)
    )
    out = []
    for p in sorted(set(partitions)):
        new = frame_checksum(contract, accepted[(values == p).to_numpy()])
        old = (
            business_checksum(conn, contract, contract.table, f"WHERE {pcol} = ?", [p])
            if exists
            else None
        )
        if new != old:
            out.append(p)
    return out


def _approved_review(manifest: Manifest) -> bool:
    """A held change to a closed period (or its upstream) that a person approved."""
    if not (manifest.outputs or {}).get("approval"):
        return False
    if (manifest.parameters or {}).get(REVIEW_TAG) == REVIEW_CLOSED:
        return True
    failures = (manifest.quality or {}).get("failures") or []
    return any(f.get("rule") == REVIEW_RULE for f in failures)


def continues_reviewed_correction(
    conn: Any,
    boundary: InputBoundary,
    depth: int = 6,
    seen: set[tuple[str, str]] | None = None,
) -> bool:
    """Whether the upstream rows a run read come from a closed-period change a person
    approved, directly or through the runs that recomputed from it (whatever their tags)."""
    seen = set() if seen is None else seen
    for read in boundary.upstream:
        for run_id in read.run_ids:
            if (run_id, read.dataset) in seen:
                continue
            seen.add((run_id, read.dataset))
            for m in load_manifests(conn, run_id=run_id, asset=read.dataset):
                if _approved_review(m):
                    return True
                if (
                    depth
                    and m.input_boundary
                    and continues_reviewed_correction(
                        conn, InputBoundary.from_json(m.input_boundary), depth - 1, seen
                    )
                ):
                    return True
    return False
