"""Which partitions a closed period guards: itself and the upstream rows it was computed from.

The rule (docs/lifecycle.md): a closed-period correction is reviewed once, before anything
of the chain changes. A run requested for a correction of a closed period (run tag
`ecm/review=closed_periods`, set by the landing sensor) holds its output for review when it
would change a closed partition or any partition a closed partition downstream was computed
from, whatever the dataset's publish mode. Rejecting it leaves every dataset of the chain
as it was, so the certified period, its upstream and its replay still agree. Approving it
publishes that dataset; the downstream runs that recompute from the approved rows carry the
correction on without a second review.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import duckdb

from ecm_assets.contracts.boundaries import InputBoundary
from ecm_assets.contracts.dataset import DatasetContract, partition_key
from ecm_assets.contracts.periods import last_day
from ecm_assets.contracts.registry import registered_contracts
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.operations.impact import plan_impact
from ecm_assets.publish.versions import closed_partitions

#: Run tag and value of a correction of a closed period (orchestration.factory.REVIEW_TAG).
REVIEW_TAG = "ecm/review"
REVIEW_CLOSED = "closed_periods"


def guarded_partitions(
    conn: duckdb.DuckDBPyConnection,
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
        for d in sorted(set(closed_partitions(conn, contract.name)) & set(partitions)):
            out[d] = f"{contract.name} {partition_key(d)}"
    closed = {
        c.name: closed_partitions(conn, c.name)
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


def continues_reviewed_correction(
    conn: duckdb.DuckDBPyConnection, boundary: InputBoundary, depth: int = 6
) -> bool:
    """Whether the upstream rows a run read come from a closed-period correction a person
    approved, directly or through the correction runs that recomputed from it."""
    for read in boundary.upstream:
        for run_id in read.run_ids:
            for m in load_manifests(conn, run_id=run_id, asset=read.dataset):
                if (m.parameters or {}).get(REVIEW_TAG) != REVIEW_CLOSED:
                    continue
                if (m.outputs or {}).get("approval"):
                    return True
                if (
                    depth
                    and m.input_boundary
                    and continues_reviewed_correction(
                        conn, InputBoundary.from_json(m.input_boundary), depth - 1
                    )
                ):
                    return True
    return False
