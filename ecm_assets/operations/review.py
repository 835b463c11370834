"""Manual review of held runs: list, approve (publish exactly the held rows), reject.

Approval never recomputes: it publishes the rows the gate judged, after checking that they
still carry the checksum recorded when they were held, through the same staged and
transactional protocol as any run (so the stale-input guard and closed-period rules apply).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecm_assets.contracts.registry import contract_for
from ecm_assets.manifest.ledger import Manifest, load_manifest, load_manifests, transition
from ecm_assets.manifest.states import RunStatus
from ecm_assets.orchestration.factory import REASON_TAG, RESTATEMENT_TAG
from ecm_assets.publish.protocol import (
    PublishError,
    PublishRequest,
    PublishResult,
    business_checksum,
    publish_partitions,
)
from ecm_assets.publish.review import drop_held, held_relations, load_held

if TYPE_CHECKING:
    import dagster as dg

    from ecm_assets.adapters.backends import WarehouseConnection


class ReviewError(RuntimeError):
    """The run cannot be approved or rejected in its current state."""


@dataclass(frozen=True)
class HeldRun:
    run_id: str
    asset: str
    partitions: list[str]
    rows: int
    checksum: str
    reasons: list[str]
    held_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "asset": self.asset,
            "partitions": self.partitions,
            "rows": self.rows,
            "business_checksum": self.checksum,
            "reasons": self.reasons,
            "held_at": self.held_at.isoformat() if self.held_at else None,
        }


def _held(manifest: Manifest) -> HeldRun:
    outputs = manifest.outputs or {}
    reasons = [
        f"{f['rule']} [{f.get('partition') or 'run'}]: {f['message']}"
        for f in (manifest.quality or {}).get("failures", [])
        if f.get("severity") == "MANUAL_REVIEW"
    ]
    return HeldRun(
        run_id=manifest.run_id,
        asset=manifest.asset,
        partitions=list(outputs.get("publishable_partitions", manifest.output_boundary)),
        rows=int(outputs.get("rows", 0)),
        checksum=str(outputs.get("business_checksum", "")),
        reasons=reasons,
        held_at=manifest.updated_at,
    )


def list_held(conn: WarehouseConnection, asset: str | None = None) -> list[HeldRun]:
    return [_held(m) for m in load_manifests(conn, asset=asset, statuses=[RunStatus.HELD])]


def _held_manifest(conn: WarehouseConnection, run_id: str, asset: str | None) -> Manifest:
    manifests = load_manifests(conn, run_id=run_id, asset=asset, statuses=[RunStatus.HELD])
    if not manifests:
        current = load_manifest(conn, run_id, asset)
        raise ReviewError(
            f"run {run_id} {current.asset} is {current.status}, not HELD: only held runs can "
            "be approved or rejected"
        )
    if len(manifests) > 1:
        names = ", ".join(m.asset for m in manifests)
        raise ReviewError(f"run {run_id} holds several assets ({names}); name one with --asset")
    return manifests[0]


def approve(
    conn: WarehouseConnection,
    run_id: str,
    *,
    actor: str,
    note: str,
    asset: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> PublishResult:
    """Publish exactly the held rows of a run, recording who approved them and why.

    With a Dagster `instance`, each published partition is also reported as a runless
    materialization: the approval happens outside any run, and otherwise the UI and the
    materialization sensors would not see the partitions change until their next run.
    """
    if not actor.strip() or not note.strip():
        raise ReviewError("an approval needs an actor and a note saying why")
    manifest = _held_manifest(conn, run_id, asset)
    contract = contract_for(manifest.asset)
    held = _held(manifest)
    held_now = business_checksum(conn, contract, held_relations(contract.name, run_id)[0])
    if held_now != held.checksum:
        raise ReviewError(
            f"run {run_id} {contract.name}: the held rows in "
            f"{held_relations(contract.name, run_id)[0]} have checksum {held_now}, not the "
            f"{held.checksum} recorded when they were judged; they were modified, so they are "
            "not published. Reject the run and rerun it."
        )
    data, rejects = load_held(conn, contract, run_id)
    tags = manifest.parameters or {}
    request = PublishRequest(
        contract=contract,
        owned_partitions=tuple(contract.partition_value(p) for p in held.partitions),
        run_id=run_id,
        as_of=manifest.input_locked_at,
        data=data,
        rejects=rejects,
        mode=manifest.mode or "publish",
        reason=tags.get(REASON_TAG) or None,
        restatement_reason=tags.get(RESTATEMENT_TAG) or None,
        input_boundary=manifest.input_boundary,
        reconciliation=manifest.reconciliation,
        quality={**(manifest.quality or {}), "approved_by": actor, "approval_note": note},
        approval={"actor": actor, "note": note},
    )
    result = publish_partitions(conn, request)
    if result.business_checksum != held.checksum:
        # Checked before publishing; this would mean the round trip changed a value.
        raise PublishError(
            f"run {run_id} {contract.name}: published checksum {result.business_checksum} "
            f"differs from the held checksum {held.checksum}: the held rows were modified"
        )
    if instance is not None:
        report_approval(
            instance, contract.name, held.partitions, result, run_id=run_id, actor=actor, note=note
        )
    return result


def report_approval(
    instance: dg.DagsterInstance,
    asset: str,
    partitions: list[str],
    result: PublishResult,
    *,
    run_id: str,
    actor: str,
    note: str,
) -> None:
    """One runless AssetMaterialization per published partition of an approved run."""
    import dagster as dg

    try:
        for partition in partitions:
            # Held partitions are recorded by their partition keys, as Dagster names them.
            key = partition
            metadata: dict[str, Any] = {
                "run_id": run_id,
                "approved_by": actor,
                "note": note,
                "rows": dg.MetadataValue.int(result.rows_by_partition.get(key, 0)),
                "business_checksum": result.business_checksum,
                "ecm/approval": True,
            }
            if result.versions.get(key) is not None:
                metadata["version"] = dg.MetadataValue.int(int(result.versions[key]))
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=asset, partition=key, metadata=metadata)
            )
    except Exception as exc:
        raise ReviewError(
            f"run {run_id} {asset}: approved and published, but reporting the materialization "
            f"to the Dagster instance failed ({exc}); the UI will catch up on the next run"
        ) from exc


def reject(
    conn: WarehouseConnection,
    run_id: str,
    *,
    actor: str,
    note: str,
    asset: str | None = None,
) -> Manifest:
    """End a held run without publishing; its held rows are dropped, the evidence stays."""
    if not actor.strip() or not note.strip():
        raise ReviewError("a rejection needs an actor and a note saying why")
    manifest = _held_manifest(conn, run_id, asset)
    contract = contract_for(manifest.asset)
    conn.begin()
    try:
        drop_held(conn, contract, run_id)
        transition(
            conn,
            run_id,
            manifest.asset,
            RunStatus.REJECTED,
            detail=f"rejected by {actor}: {note}"[:2000],
            quality={**(manifest.quality or {}), "rejected_by": actor, "rejection_note": note},
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return load_manifest(conn, run_id, manifest.asset)
