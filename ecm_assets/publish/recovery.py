"""Recovery of runs a dead process left in flight, decided from durable state only.

Only attempts whose lease is dead are touched (manifest/lease.py): a live attempt on another
host is left alone, whatever its pid. `force` overrides the lease; the forced attempt ends
FAILED, and FAILED is terminal: its process, if it was alive after all, is refused at publish
(the request names its attempt), so a FAILED attempt's output never becomes visible.

The decision follows the unknown-commit algorithm: if the run's rows are what readers see,
it was published (the ledger is corrected); if only its staging table exists, the staging
is dropped and the run failed; if the visible data is partly the run's and partly not, a
human must look; if nothing of it exists, a retry is safe. An attempt that died PLANNED or
INPUT_LOCKED never staged anything: it simply failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ecm_assets.adapters.backends import as_connection
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.dataset import DatasetContract, PartitionValue, partition_key
from ecm_assets.contracts.registry import contract_for
from ecm_assets.manifest.lease import liveness
from ecm_assets.manifest.ledger import EVENT_OWED, Manifest, load_manifests, transition
from ecm_assets.manifest.states import TERMINAL, UNSETTLED, RunStatus
from ecm_assets.publish.staging import drop_staging_table, staging_table_name, staging_tables
from ecm_assets.publish.versions import VERSIONS, ensure_version_ledger

#: Manifest modes of ECM sync runs (ecm_assets.sync): they own no date partitions.
SYNC_MODES = frozenset({"incremental", "full_extraction"})


class Decision(StrEnum):
    ALREADY_PUBLISHED = "ALREADY_PUBLISHED"
    FAILED_CLEANED = "FAILED_CLEANED"
    MANUAL_REVIEW_REQUIRED = "MANUAL_REVIEW_REQUIRED"
    SAFE_TO_RETRY = "SAFE_TO_RETRY"
    STILL_RUNNING = "STILL_RUNNING"
    DEBRIS_DROPPED = "DEBRIS_DROPPED"


@dataclass(frozen=True)
class RecoveryResult:
    run_id: str
    asset: str
    previous_status: str
    decision: Decision
    evidence: str


def _visible_run_ids(
    conn: Any,
    contract: DatasetContract,
    partitions: Sequence[PartitionValue],
) -> dict[str, set[str]]:
    """The runs whose rows each partition shows now, by partition key (partitions may be
    given as values or keys)."""
    conn = as_connection(conn)
    owned_filter, owned_params = conn.dialect.owned_filter, conn.dialect.owned_params
    partitions = sorted(partition_key(p) for p in partitions)
    pcol = quote_ident(contract.partition_column)
    if contract.publish_mode == "versioned":
        ensure_version_ledger(conn)
        rows = conn.execute(
            f"SELECT partition_date, run_id FROM {VERSIONS} WHERE dataset = ? AND "
            f"{owned_filter('partition_date', 'VARCHAR')} AND status = 'PUBLISHED'",
            [contract.name, *owned_params(partitions)],
        ).fetchall()
    else:
        if not conn.table_exists(contract.schema, contract.name):
            return {}
        rows = conn.execute(
            f"SELECT DISTINCT {pcol}, run_id FROM {contract.table} WHERE "
            f"{owned_filter(pcol, contract.partition_sql_type)}",
            owned_params([contract.partition_value(p) for p in partitions]),
        ).fetchall()
    seen: dict[str, set[str]] = {}
    for partition, run_id in rows:
        seen.setdefault(partition_key(partition), set()).add(run_id)
    return seen


def recover_manifest(
    conn: Any,
    manifest: Manifest,
    *,
    force: bool = False,
    contract: DatasetContract | None = None,
) -> RecoveryResult:
    """Decide and record the outcome of one in-flight manifest. Caller holds the lock."""
    contract = contract or contract_for(manifest.asset)
    previous = str(manifest.status)

    def result(decision: Decision, evidence: str) -> RecoveryResult:
        return RecoveryResult(manifest.run_id, manifest.asset, previous, decision, evidence)

    if manifest.status not in UNSETTLED:
        return result(Decision.SAFE_TO_RETRY, f"status {previous} is not in flight; nothing to do")
    alive, why = liveness(conn, manifest)
    if alive and not force:
        return result(
            Decision.STILL_RUNNING, f"attempt {manifest.attempt} is alive: {why}; left alone"
        )
    why = f"{why}{' (forced)' if alive else ''}"
    if manifest.status in (RunStatus.PLANNED, RunStatus.INPUT_LOCKED):
        transition(
            conn,
            manifest.run_id,
            manifest.asset,
            RunStatus.FAILED,
            detail=f"recovery: died {previous}, before staging ({why}); nothing to clean",
        )
        return result(Decision.SAFE_TO_RETRY, f"died {previous} before staging: {why}")
    partitions = sorted(manifest.output_boundary)  # partition keys
    visible = _visible_run_ids(conn, contract, partitions)
    mine = [p for p in partitions if visible.get(p) == {manifest.run_id}]
    touched = [p for p in partitions if manifest.run_id in visible.get(p, set())]
    staging = staging_table_name(contract, manifest.run_id)
    staged = staging in staging_tables(conn, contract)

    if touched and len(mine) == len(touched) == len(partitions):
        if manifest.status != RunStatus.UNKNOWN:
            transition(
                conn,
                manifest.run_id,
                manifest.asset,
                RunStatus.UNKNOWN,
                detail="recovery: inspecting durable state",
            )
        transition(
            conn,
            manifest.run_id,
            manifest.asset,
            RunStatus.PUBLISHED,
            detail="recovery: every owned partition shows this run's output",
            dagster_event=EVENT_OWED,
        )
        if staged:
            drop_staging_table(conn, staging)
        return result(
            Decision.ALREADY_PUBLISHED,
            f"all {len(partitions)} owned partitions are this run's output",
        )
    if touched:
        evidence = (
            f"partitions {touched} show this run's rows, "
            f"{[p for p in partitions if p not in mine]} do not fully; data left "
            "untouched"
        )
        if manifest.status != RunStatus.UNKNOWN:
            transition(conn, manifest.run_id, manifest.asset, RunStatus.UNKNOWN, detail=evidence)
        return result(Decision.MANUAL_REVIEW_REQUIRED, evidence)
    if staged:
        drop_staging_table(conn, staging)
        transition(
            conn,
            manifest.run_id,
            manifest.asset,
            RunStatus.FAILED,
            detail=f"recovery: partial staging {staging} dropped; nothing was published",
        )
        return result(Decision.FAILED_CLEANED, f"dropped staging table {staging}; {why}")
    transition(
        conn,
        manifest.run_id,
        manifest.asset,
        RunStatus.FAILED,
        detail=f"recovery: process died before staging ({why}); nothing to clean",
    )
    return result(Decision.SAFE_TO_RETRY, f"no staging and no published rows of this run; {why}")


def recover(
    conn: Any,
    *,
    run_id: str | None = None,
    asset: str | None = None,
    partitions: list[PartitionValue] | None = None,
    exclude_run: str | None = None,
    force: bool = False,
    contract: DatasetContract | None = None,
) -> list[RecoveryResult]:
    """Recover every in-flight manifest matching the filters (overlapping `partitions`)."""
    results = []
    for manifest in load_manifests(conn, run_id=run_id, asset=asset, statuses=UNSETTLED):
        if manifest.run_id == exclude_run:
            continue
        if manifest.mode in SYNC_MODES:
            continue  # a sync run resumes from its checkpoints on its next call (docs/sync.md)
        if partitions is not None and not (
            set(manifest.output_boundary) & {partition_key(p) for p in partitions}
        ):
            continue
        results.append(recover_manifest(conn, manifest, force=force, contract=contract))
    if partitions is None:
        results += _drop_finished_runs_staging(conn, run_id=run_id, asset=asset)
    return results


def _drop_finished_runs_staging(
    conn: Any, *, run_id: str | None, asset: str | None
) -> list[RecoveryResult]:
    """Staging a finished run left behind (a kill after COMMIT, before cleanup)."""
    results = []
    for manifest in load_manifests(conn, run_id=run_id, asset=asset, statuses=TERMINAL):
        try:
            contract = contract_for(manifest.asset)
        except KeyError:
            continue
        name = staging_table_name(contract, manifest.run_id)
        if name in staging_tables(conn, contract):
            drop_staging_table(conn, name)
            results.append(
                RecoveryResult(
                    manifest.run_id,
                    manifest.asset,
                    str(manifest.status),
                    Decision.DEBRIS_DROPPED,
                    f"run is {manifest.status}; dropped its leftover staging {name}",
                )
            )
    return results
