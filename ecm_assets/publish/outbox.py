"""The outbox: a publish's Dagster materializations are owed until an instance holds them.

The warehouse COMMIT and the Dagster event are two writes; a kill between them would leave
data PUBLISHED that Dagster (its UI, the dependency sensors) never saw. So the transaction
that publishes also marks the manifest `dagster_event = OWED`. Whoever next meets the ledger
with a persistent Dagster instance (`ecm recover`, the next run's step start) settles it:

- a partition whose materialization from this run is in the instance needs nothing;
- a partition that still shows this run's output gets a runless materialization carrying
  the run id and checksum from the manifest;
- a partition that a later run has since replaced gets nothing (reporting the old publish
  now would make Dagster's latest materialization the stale one);

and the manifest is marked DELIVERED. Checking before emitting makes this idempotent: it can
be repeated after a crash at any point. The `ecm_outbox_delivery` sensor
(operations/outbox_sensor.py) does the same on every tick, without a run or a CLI call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ecm_assets.contracts.registry import contract_for
from ecm_assets.manifest.lease import acquire
from ecm_assets.manifest.ledger import (
    EVENT_DELIVERED,
    EVENT_OWED,
    MANIFEST_TABLE,
    Manifest,
    ManifestInFlightError,
    ensure_ledger,
    load_manifests,
    plan,
    set_dagster_event,
)
from ecm_assets.manifest.states import UNSETTLED, RunStatus
from ecm_assets.publish.recovery import Decision, _visible_run_ids, recover

if TYPE_CHECKING:
    import dagster as dg


@dataclass(frozen=True)
class Delivery:
    run_id: str
    asset: str
    attempt: int
    reported: tuple[str, ...]
    already_in_dagster: tuple[str, ...]
    superseded: tuple[str, ...]


def owed(conn: Any) -> list[Manifest]:
    ensure_ledger(conn)
    keys = conn.execute(
        f"SELECT run_id, asset FROM {MANIFEST_TABLE} WHERE dagster_event = ?", [EVENT_OWED]
    ).fetchall()
    out = []
    for run_id, asset in keys:
        out += [
            m
            for m in load_manifests(conn, run_id=run_id, asset=asset, all_attempts=True)
            if m.dagster_event == EVENT_OWED
        ]
    return out


def _in_dagster(instance: dg.DagsterInstance, manifest: Manifest, partition: str) -> bool:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(manifest.asset), asset_partitions=[partition]),
        limit=50,
    ).records
    for record in records:
        entry = record.event_log_entry
        if entry.run_id == manifest.run_id:
            return True
        materialization = entry.asset_materialization
        meta = materialization.metadata if materialization else {}
        value = meta.get("ecm/run_id")
        if value is not None and getattr(value, "value", value) == manifest.run_id:
            return True
    return False


@dataclass(frozen=True)
class OwedPublish:
    """An owed manifest and what the warehouse shows now of its partitions: read under the
    lock, judged against the Dagster instance after it (no lock held while Dagster is asked)."""

    manifest: Manifest
    partitions: tuple[str, ...]
    #: Partition (ISO date) -> the run ids whose rows it shows now.
    visible: dict[str, frozenset[str]]


def read_owed(conn: Any) -> list[OwedPublish]:
    """Every owed publish of a dataset this code location knows, with its visible runs."""
    out = []
    for manifest in owed(conn):
        outputs = manifest.outputs or {}
        blocked = set(outputs.get("blocked_partitions") or {})
        partitions = sorted(
            set(outputs.get("rows_by_partition") or {})
            | {p for p in manifest.output_boundary if p not in blocked}
        )
        try:
            contract = contract_for(manifest.asset)
        except KeyError:
            continue  # not a dataset of this code location: leave it for one that knows it
        shown = _visible_run_ids(conn, contract, partitions)  # by partition key
        visible = {p: frozenset(shown.get(p, set())) for p in partitions}
        out.append(OwedPublish(manifest, tuple(partitions), visible))
    return out


def owed_materializations(
    instance: dg.DagsterInstance, owed_publish: OwedPublish
) -> tuple[list[dg.AssetMaterialization], Delivery]:
    """The runless materializations an owed publish still needs (none for a partition whose
    event the instance holds, or that a later run replaced), and the delivery to record."""
    import dagster as dg

    manifest, outputs = owed_publish.manifest, owed_publish.manifest.outputs or {}
    events, reported, present, superseded = [], [], [], []
    for partition in owed_publish.partitions:
        if _in_dagster(instance, manifest, partition):
            present.append(partition)
            continue
        shown = owed_publish.visible.get(partition, frozenset())
        if shown and manifest.run_id not in shown:
            superseded.append(partition)
            continue
        versions = outputs.get("versions") or {}
        metadata = {
            "ecm/run_id": manifest.run_id,
            "ecm/outbox": True,
            "attempt": dg.MetadataValue.int(manifest.attempt),
            "published_rows": dg.MetadataValue.int(
                int((outputs.get("rows_by_partition") or {}).get(partition, 0))
            ),
            "business_checksum": str(outputs.get("business_checksum", "")),
            "manifest": f"ecm manifest {manifest.run_id} --asset {manifest.asset}",
        }
        if versions.get(partition) is not None:
            metadata["version"] = dg.MetadataValue.int(int(versions[partition]))
        events.append(
            dg.AssetMaterialization(
                asset_key=manifest.asset,
                partition=partition,
                metadata=metadata,
                description=f"published by run {manifest.run_id}; reported from the "
                "ledger's outbox (the run died before Dagster recorded it)",
            )
        )
        reported.append(partition)
    delivery = Delivery(
        manifest.run_id,
        manifest.asset,
        manifest.attempt,
        tuple(reported),
        tuple(present),
        tuple(superseded),
    )
    return events, delivery


def deliver_owed(conn: Any, instance: dg.DagsterInstance) -> list[Delivery]:
    """Settle every owed Dagster event (see the module docstring). Caller holds the lock."""
    if instance.is_ephemeral:
        return []  # an in-memory instance dies with its process: nothing would be delivered
    deliveries = []
    for owed_publish in read_owed(conn):
        events, delivery = owed_materializations(instance, owed_publish)
        for event in events:
            instance.report_runless_asset_event(event)
        manifest = owed_publish.manifest
        set_dagster_event(conn, manifest.run_id, manifest.asset, manifest.attempt, EVENT_DELIVERED)
        deliveries.append(delivery)
    return deliveries


def mark_delivered(conn: Any, emitted: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Mark the given attempts' owed events DELIVERED (those still OWED); the ones marked."""
    ensure_ledger(conn)
    marked = []
    for run_id, asset, attempt in emitted:
        row = conn.execute(
            f"SELECT dagster_event FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ? AND "
            "attempt = ?",
            [run_id, asset, attempt],
        ).fetchone()
        if row is not None and row[0] == EVENT_OWED:
            set_dagster_event(conn, run_id, asset, attempt, EVENT_DELIVERED)
            marked.append((run_id, asset, attempt))
    return marked


def begin_attempt(
    conn: Any, manifest: Manifest, instance: dg.DagsterInstance | None
) -> Manifest | None:
    """Start a run step's attempt: settle the outbox, then plan and lease a new attempt.

    Returns the manifest instead when this run already published the asset (a step retry
    after COMMIT): the step then reports that publish and succeeds. An unsettled earlier
    attempt of the same run (its process died, or this process left it) is recovered first;
    one that is still alive elsewhere makes plan() refuse.
    """
    if instance is not None:
        deliver_owed(conn, instance)
    ensure_ledger(conn)
    latest = load_manifests(conn, run_id=manifest.run_id, asset=manifest.asset)
    if latest and latest[0].status == RunStatus.PUBLISHED:
        return latest[0]
    if latest and latest[0].status in UNSETTLED:
        for result in recover(conn, run_id=manifest.run_id, asset=manifest.asset):
            if result.decision in (Decision.STILL_RUNNING, Decision.MANUAL_REVIEW_REQUIRED):
                raise ManifestInFlightError(
                    f"run {manifest.run_id} {manifest.asset}: an earlier attempt is not over "
                    f"({result.decision}: {result.evidence}); see `ecm recover {manifest.run_id}`"
                )
    plan(conn, manifest)
    acquire(conn, manifest)
    return None
