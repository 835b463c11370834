"""The Dagster IO manager that publishes through the staged, transactional protocol.

It owns exactly `context.asset_partition_keys` (one partition or a whole range) and never
writes anything else. Loading reads the mapped upstream partitions, including lookback
windows, with the `run_id` that published each row so the reader can record it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd

from ecm_assets.adapters.backends import Warehouse, open_warehouse
from ecm_assets.contracts.boundaries import InputBoundary
from ecm_assets.contracts.dataset import DatasetContract, partition_key
from ecm_assets.contracts.registry import contract_for
from ecm_assets.manifest.lease import READ_ONLY_GUARD
from ecm_assets.manifest.ledger import MANIFEST_TABLE, Manifest
from ecm_assets.orchestration.retries import raise_for_retry_policy
from ecm_assets.publish.protocol import (
    PublishedPartitions,
    PublishRequest,
    empty_frame,
    publish_partitions,
    read_partitions,
)
from ecm_assets.publish.versions import closed_partition, current_version

#: AssetIn metadata key: "relation" makes load_input hand over PublishedPartitions.
UPSTREAM_AS_METADATA = "ecm/upstream_as"


@dataclass(frozen=True)
class StagedOutput:
    """What an asset hands to publish: its rows, its rejects and the boundary it read."""

    contract: DatasetContract
    data: pd.DataFrame
    input_boundary: InputBoundary
    rejects: pd.DataFrame | None = None
    mode: str = "publish"
    reason: str | None = None
    restatement_reason: str | None = None
    reconciliation: dict[str, Any] | None = None
    #: The quality gate's verdict (manifest evidence).
    quality: dict[str, Any] | None = None
    #: Partitions the gate refused (FAIL_PARTITION) and why; left as they are.
    blocked: dict[date, str] = field(default_factory=dict)
    #: MANUAL_REVIEW: keep the validated rows for `ecm review`, publish nothing.
    hold: bool = False
    #: The ledger attempt that computed this output: only it may publish it.
    attempt: int | None = None

    #: Each partition's own figures (counts, quality, its boundary summary) for its
    #: materialization; run-level evidence stays in the manifest.
    partition_metadata: dict[date, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class AlreadyPublished:
    """A step retry of an attempt that had committed: report the recorded publish again."""

    manifest: Manifest


class DuckDBPublishIOManager(dg.ConfigurableIOManager):
    """Stages, checks and atomically replaces the owned partitions in the warehouse.

    `database` names it: a DuckDB file path (the default backend) or a postgresql:// URL
    (adapters/backends.open_warehouse). `WarehousePublishIOManager` is the same class under
    a name that does not say DuckDB."""

    database: str
    lock_timeout_seconds: float = 120.0
    #: Stage in a warehouse table (kept after a crash, for forensics) instead of a temp table.
    durable_staging: bool = False

    @property
    def warehouse(self) -> Warehouse:
        return open_warehouse(self.database)

    def connect(self, context: Any, *, read_only: bool = False):
        """A warehouse (seam) connection that logs lock waits to the run; used by assets too."""
        warehouse = self.warehouse
        opened = warehouse.connect(
            read_only=read_only,
            timeout_seconds=self.lock_timeout_seconds,
            logger=context.log,
        )
        # DuckDB only: a read-only open must not meet this process's lease heartbeat.
        return _guarded(opened) if read_only and warehouse.kind == "duckdb" else opened

    def handle_output(self, context: dg.OutputContext, obj: StagedOutput) -> Iterator[Any]:
        """Publish what the gate accepted; a blocked partition or a hold fails the step.

        A generator, so that on a partial publish the materializations of exactly the
        published partitions reach the event log before the step fails: Dagster then shows
        those partitions materialized and the blocked ones failed, and downstream stops.
        """
        if isinstance(obj, AlreadyPublished):
            outputs = obj.manifest.outputs or {}
            rows = outputs.get("rows_by_partition") or {}
            contract = contract_for(obj.manifest.asset)
            add_partition_metadata(
                context,
                {
                    key: {
                        "dagster/row_count": dg.MetadataValue.int(
                            int(rows.get(partition_key(contract.partition_value(key)), 0))
                        )
                    }
                    for key in context.asset_partition_keys
                },
            )
            context.add_output_metadata(
                {
                    "run_business_checksum": str(outputs.get("business_checksum", "")),
                    "manifest": manifest_locator(context.run_id, obj.manifest.asset),
                    "attempt": dg.MetadataValue.int(obj.manifest.attempt),
                    "republished": "no: reported from the ledger after a step retry",
                }
            )
            return
        if not isinstance(obj, StagedOutput):
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "assets published by DuckDBPublishIOManager must return a StagedOutput "
                "(build them with ecm_assets.orchestration.factory.build_dataset_asset)"
            )
        contract = obj.contract
        if not context.has_asset_partitions:
            raise ValueError(f"dataset {contract.name} is not partitioned: nothing to own")
        keys = {contract.partition_value(k): k for k in context.asset_partition_keys}
        owned = tuple(sorted(keys))
        request = PublishRequest(
            contract=contract,
            owned_partitions=owned,
            run_id=context.run_id,
            as_of=obj.input_boundary.locked_at,
            data=obj.data,
            rejects=obj.rejects,
            mode=obj.mode,
            reason=obj.reason,
            restatement_reason=obj.restatement_reason,
            input_boundary=obj.input_boundary.to_json(),
            reconciliation=obj.reconciliation,
            durable_staging=self.durable_staging,
            blocked=obj.blocked,
            quality=obj.quality,
            hold=obj.hold,
            attempt=obj.attempt,
        )
        blocked_text = "; ".join(f"{d}: {why}" for d, why in sorted(obj.blocked.items()))
        try:
            with self.connect(context, read_only=False) as conn:
                result = publish_partitions(conn, request)
                versions = (
                    version_metadata(conn, contract, result.versions) if result.versions else {}
                )
        except Exception as exc:
            # Contract, boundary and closed-period refusals fail the same way every time.
            raise_for_retry_policy(exc, f"publish of {contract.name}")
        if obj.blocked and set(owned) <= set(obj.blocked):
            raise dg.Failure(
                description=f"quality gate FAIL_PARTITION: no partition of {contract.name} "
                f"was published. {blocked_text}",
                metadata={
                    "blocked_partitions": dg.MetadataValue.json(_iso(obj.blocked)),
                    **_gate_metadata(obj, "FAIL_PARTITION"),
                },
                allow_retries=False,
            )
        if result.debris_dropped:
            context.log.warning(
                f"dropped staging tables left by crashed runs: {', '.join(result.debris_dropped)}"
            )
        if result.held:
            for d, key in keys.items():
                if d in obj.blocked:
                    continue
                observation = dg.AssetObservation(
                    asset_key=context.asset_key,
                    partition=key,
                    metadata={
                        "status": "HELD for manual review",
                        "held_rows": dg.MetadataValue.int(
                            result.rows_by_partition.get(partition_key(d), 0)
                        ),
                        "held_table": result.staging_table,
                        "approve": f"ecm review approve {context.run_id} --asset "
                        f"{contract.name} --actor NAME --note WHY",
                    },
                )
                context.log_event(observation)
            # Hand the logged events over now: the step fails below, and Dagster only
            # collects an IO manager's events between the items it yields.
            yield from context.consume_events()
            reasons = "; ".join(
                f["message"]
                for f in (obj.quality or {}).get("failures", [])
                if f.get("severity") == "MANUAL_REVIEW"
            )
            raise dg.Failure(
                description=f"quality gate MANUAL_REVIEW: {contract.name} output of run "
                f"{context.run_id} is HELD, nothing was published ({reasons}). Approve with "
                f"`ecm review approve {context.run_id} --asset {contract.name}` or reject with "
                f"`ecm review reject {context.run_id} --asset {contract.name}`."
                + (f" Blocked partitions: {blocked_text}" if blocked_text else ""),
                metadata={
                    "held_table": result.staging_table,
                    **_gate_metadata(obj, "MANUAL_REVIEW"),
                },
                allow_retries=False,
            )
        # Repeated on every partition's materialization (a range run's output metadata goes
        # on each), so only what a partition's reader needs and cannot see elsewhere: the
        # mode, the data's as-of and the link to the run manifest, which holds the run-level
        # evidence (boundary, snapshot, decision, every partition's counts). Not repeated:
        # the run id (the event has it), the table (the asset definition's
        # dagster/table_name), the range (run tags) and "PUBLISHED" (a materialization is).
        metadata: dict[str, Any] = {
            "mode": obj.mode,
            "as_of": obj.input_boundary.locked_at.isoformat(),
            "manifest": manifest_locator(context.run_id, contract.name),
            **(
                {
                    "recovered_runs": dg.MetadataValue.json(
                        [f"{r.run_id}: {r.decision}" for r in result.recoveries]
                    )
                }
                if result.recoveries
                else {}
            ),
        }
        per_partition = {
            d: {
                "dagster/row_count": dg.MetadataValue.int(
                    result.rows_by_partition.get(partition_key(d), 0)
                ),
                "business_checksum": result.checksums_by_partition.get(partition_key(d), ""),
                **obj.partition_metadata.get(d, {}),
                **versions.get(partition_key(d), {}),
            }
            for d in keys
            if d not in obj.blocked
        }
        if obj.blocked:
            for d, key in keys.items():
                if d in obj.blocked:
                    continue
                materialization = dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=key,
                    metadata={
                        **metadata,
                        **per_partition[d],
                        "blocked_partitions": dg.MetadataValue.json(_iso(obj.blocked)),
                    },
                )
                context.log_event(materialization)
            yield from context.consume_events()  # as above: before the step fails
            raise dg.Failure(
                description=f"quality gate FAIL_PARTITION: {contract.name} published "
                f"{len(owned) - len(obj.blocked)} of {len(owned)} partitions; not published: "
                f"{blocked_text}",
                metadata={
                    "blocked_partitions": dg.MetadataValue.json(_iso(obj.blocked)),
                    **_gate_metadata(obj, "FAIL_PARTITION"),
                },
                allow_retries=False,
            )
        add_partition_metadata(context, {key: per_partition[d] for d, key in keys.items()})
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | PublishedPartitions:
        asset_key = context.asset_key
        contract = contract_for(asset_key.path[-1])
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if not keys:
            raise ValueError(
                f"input {asset_key.to_user_string()} maps to no upstream partitions; "
                "check the partition mapping"
            )
        values = sorted(contract.partition_value(k) for k in keys)
        if (context.definition_metadata or {}).get(UPSTREAM_AS_METADATA) == "relation":
            # A SQL transform reads these partitions in the warehouse: nothing is loaded here.
            return PublishedPartitions(contract.name, values[0], values[-1])
        if not self.warehouse.exists():
            context.log.warning(
                f"warehouse {self.warehouse.url} does not exist yet: no upstream rows"
            )
            return empty_frame(contract, with_provenance=True)
        with self.connect(context, read_only=True) as conn:
            return read_partitions(
                conn,
                contract,
                values[0],
                values[-1],
                with_provenance=True,
                partitions=values if contract.is_static else None,
            )


def add_partition_metadata(
    context: dg.OutputContext, metadata_by_key: Mapping[str, Mapping[str, Any]]
) -> None:
    """Give each partition of the run its own materialization metadata.

    Why not `add_asset_metadata(..., partition_key=key)` per key: Dagster 1.13 lists every
    partition of the run's range on each call to check the key, so a range run pays
    partitions x partitions (a 365-day run listed 133,225 keys; ten years, 13 million).
    Here the keys are checked once against the run's own (`asset_partition_keys`), then the
    step's metadata accumulator is updated the way that call updates it. A Dagster without
    that accumulator gets the public call.
    """
    step = context.step_context
    targeted = set(context.asset_partition_keys)
    stray = sorted(set(metadata_by_key) - targeted)
    if stray:
        raise dg.DagsterInvariantViolationError(
            f"metadata for partition(s) {stray} that this run does not target"
        )
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        for key, metadata in metadata_by_key.items():
            step.add_asset_metadata(metadata, partition_key=key)
        return
    for key, metadata in metadata_by_key.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=context.asset_key, partition_key=key, metadata=metadata
        )
    step._metadata_accumulator = accumulator


@contextmanager
def _guarded(opened: Any) -> Iterator[Any]:
    """A read-only connection while no lease heartbeat of this process has the file open."""
    with READ_ONLY_GUARD, opened as conn:
        yield conn


def manifest_locator(run_id: str, asset: str) -> str:
    """Where the run's full evidence is: its manifest row (also `ecm manifest RUN_ID`)."""
    return f"{MANIFEST_TABLE.replace(chr(34), '')} run_id={run_id} asset={asset}"


def version_metadata(
    conn: Any, contract: DatasetContract, published: dict[str, int | None]
) -> dict[str, dict[str, Any]]:
    """A versioned partition's current and prior version, status and restatement reason."""
    out: dict[str, dict[str, Any]] = {}
    for iso in published:
        current = current_version(conn, contract.name, iso)
        if current is None:
            continue
        closed = closed_partition(conn, contract.name, current.partition_date)
        entry: dict[str, Any] = {
            "version": dg.MetadataValue.int(current.version),
            "prior_version": dg.MetadataValue.int(current.prior_version)
            if current.prior_version is not None
            else "none (first version)",
            "version_status": str(current.status),
            "period": f"closed by {closed[1]} at {closed[0]:%Y-%m-%d %H:%M} UTC"
            if closed
            else "open",
            "version_reason": str(current.reason),
        }
        if current.note:  # a restatement of a closed period records why
            entry["restatement_reason"] = f"{current.reason} ({current.note})"
        out[iso] = entry
    return out


def _iso(blocked: dict[date, str]) -> dict[str, str]:
    return {partition_key(d): why for d, why in sorted(blocked.items())}


def _gate_metadata(obj: StagedOutput, decision: str) -> dict[str, Any]:
    """The decision and the rules behind it, for alerts and the UI."""
    failures = [f for f in (obj.quality or {}).get("failures", []) if f.get("severity") == decision]
    return {"quality_decision": decision, "failed_rules": dg.MetadataValue.json(failures)}


#: The IO manager under a backend-neutral name (DuckDB file or PostgreSQL URL).
WarehousePublishIOManager = DuckDBPublishIOManager
