"""The quarantine of a partition as it belongs to the data readers see.

Rejected and blocked rows are kept per (asset, partition, run): the run that judged them. The
quarantine *of a partition* is that of the run whose rows are current: in replace mode the
publishing run replaces its partitions' quarantine, so what is stored is current; in
versioned mode every version keeps its own, and the current version's run selects it. A
rerun that leaves a closed partition's version as it is therefore never replaces its
certified quarantine, and a rollback shows the quarantine of the version rolled back to.
"""

from __future__ import annotations

from typing import Any

from ecm_assets.adapters.backends import as_connection
from ecm_assets.contracts.dataset import DatasetContract, PartitionValue, partition_key
from ecm_assets.publish.protocol import BLOCKED_TABLE, QUARANTINE_TABLE
from ecm_assets.publish.versions import current_version


def _exists(conn: Any, table: str) -> bool:
    return as_connection(conn).table_exists("ecm_quarantine", table)


def quarantine_rows(
    conn: Any,
    contract: DatasetContract,
    partition: PartitionValue,
    *,
    blocked: bool = False,
    run_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Rejected rows of a partition: the current version's, or those of `run_id`.

    Blocked rows belong to runs that did not publish the partition, so without `run_id`
    every run's blocked rows are listed, each with its run.
    """
    table = BLOCKED_TABLE if blocked else QUARANTINE_TABLE
    if not _exists(conn, "blocked_rows" if blocked else "rejected_rows"):
        return []
    where, params = "asset = ? AND partition_date = ?", [contract.name, partition_key(partition)]
    if run_id is None and not blocked and contract.publish_mode == "versioned":
        current = current_version(conn, contract.name, partition)
        if current is None:
            return []
        run_id = current.run_id
    if run_id is not None:
        where += " AND run_id = ?"
        params.append(run_id)
    cursor = conn.execute(
        f"SELECT * FROM {table} WHERE {where} "
        "ORDER BY run_id, source_file, source_line, reason LIMIT ?",
        [*params, limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
