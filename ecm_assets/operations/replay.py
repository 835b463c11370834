"""Replay: recompute a past run from its recorded input boundary and compare checksums.

Files that landed after the run are ignored (only the recorded files are read, and each must
still have its recorded sha256); reference snapshots are the recorded versions. Nothing is
published: the answer is whether the business checksum matches the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.contracts.boundaries import InputBoundary
from ecm_assets.contracts.dataset import Dataset
from ecm_assets.contracts.registry import contract_for
from ecm_assets.contracts.transform import PartitionWindow
from ecm_assets.manifest.ledger import load_manifest
from ecm_assets.orchestration.inputs import ReplayError, UpstreamFrame, lock_inputs, run_transform
from ecm_assets.publish.protocol import checksums_comparable, frame_checksum, read_partitions
from ecm_assets.validation.gate import judge


@dataclass(frozen=True)
class ReplayResult:
    run_id: str
    asset: str
    partitions: tuple[str, ...]
    landing_files: int
    original_checksum: str | None
    replay_checksum: str
    rows: int

    @property
    def comparable(self) -> bool:
        return checksums_comparable(self.original_checksum, self.replay_checksum)

    @property
    def matches(self) -> bool:
        return self.comparable and self.original_checksum == self.replay_checksum


def replay_run(
    database: str | Path,
    datasets: dict[str, Dataset],
    run_id: str,
    *,
    asset: str | None = None,
    landing_root: Path,
    reference_root: Path,
) -> ReplayResult:
    with open_warehouse(database).connect(read_only=True) as conn:
        manifest = load_manifest(conn, run_id, asset)
        dataset = datasets.get(manifest.asset)
        if dataset is None:
            raise ReplayError(f"run {run_id} published {manifest.asset}, which is not defined")
        if manifest.input_boundary is None:
            raise ReplayError(f"run {run_id} {manifest.asset} recorded no input boundary")
        recorded = InputBoundary.from_json(manifest.input_boundary)
        contract = dataset.contract
        upstream = []
        for read in recorded.upstream:
            frame = read_partitions(
                conn,
                contract_for(read.dataset),
                read.first_partition,
                read.last_partition,
                with_provenance=True,
            )
            upstream.append(
                UpstreamFrame(read.dataset, read.first_partition, read.last_partition, frame)
            )
    window = PartitionWindow(
        tuple(contract.partition_value(k) for k in recorded.partitions), timezone=contract.timezone
    )
    _, kwargs = lock_inputs(
        dataset,
        window,
        recorded.partitions,
        landing_root=landing_root,
        reference_root=reference_root,
        upstream=upstream,
        locked_at=datetime.now(UTC),
        recorded=recorded,
    )
    result = run_transform(dataset, kwargs)
    # What the run published is what its quality gate accepted, so replay judges the same way.
    accepted = judge(dataset, window, result, kwargs).accepted
    original = (manifest.outputs or {}).get("business_checksum")
    return ReplayResult(
        run_id=run_id,
        asset=manifest.asset,
        partitions=recorded.partitions,
        landing_files=len(recorded.landing_files),
        original_checksum=original,
        replay_checksum=frame_checksum(contract, accepted),
        rows=len(accepted),
    )
