"""Build a Dagster asset from a Dataset: lock the input boundary, run the pure transform, stage.

This is the only orchestration code a dataset needs. The asset:
1. takes its owned partitions from the run (one partition or a backfill range),
2. locks the input boundary before any compute: landing files with size and sha256,
   reference snapshots pinned per business date, and the upstream partitions it was handed
   together with the runs that published them,
3. calls the pure transform with parameters bound by name,
4. hands rows, rejects and boundary to the publish IO manager, which stages, checks and swaps.
"""

import inspect
import warnings
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from ecm_assets.case_sla.metrics import month_days
from ecm_assets.contracts.boundaries import InputBoundary, UpstreamRead
from ecm_assets.contracts.dataset import PROVENANCE_COLUMNS, Dataset, DatasetContract
from ecm_assets.contracts.registry import register
from ecm_assets.contracts.transform import PartitionWindow, TransformResult
from ecm_assets.orchestration.partitions import partitions_for
from ecm_assets.orchestration.resources import LandingZone, ReferenceStore
from ecm_assets.publish.io_manager import StagedOutput

IO_MANAGER_KEY = "warehouse_io_manager"
#: Concurrency pool of every step that writes the warehouse: DuckDB admits one writing
#: process, so dagster.yaml limits this pool to one step at a time across all runs.
WAREHOUSE_POOL = "ecm_duckdb_warehouse"


def _partition_mapping(lookback: int) -> dg.TimeWindowPartitionMapping | None:
    if lookback == 0:
        return None
    return dg.TimeWindowPartitionMapping(
        start_offset=-lookback, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def _business_days(contract: DatasetContract, window: PartitionWindow) -> list[date]:
    if contract.grain == "daily":
        return list(window.partitions)
    return [d for month in window.partitions for d in month_days(month)]


def _counts_metadata(counts: pd.DataFrame) -> dict[str, dg.MetadataValue]:
    totals = counts.sum()
    meta: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(int(totals[col]))
        for name, col in (
            ("input_rows", "read"),
            ("rows", "kept"),
            ("rejected_rows", "rejected"),
            ("duplicate_rows", "duplicate"),
            ("corrections_applied", "corrections_applied"),
            ("late_arrivals", "late_arrivals"),
        )
        if col in counts.columns
    }
    table = counts.reset_index()
    table.columns = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    meta["partition_counts"] = dg.MetadataValue.md("\n".join(lines))
    return meta


def build_dataset_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The asset of one dataset; see the module docstring for what it does per run."""
    contract = dataset.contract
    register(contract)
    params = inspect.signature(dataset.transform).parameters
    ins = {
        u.dataset: dg.AssetIn(
            key=u.dataset,
            partition_mapping=_partition_mapping(u.lookback_partitions),
        )
        for u in contract.upstream
    }
    resource_keys = set()
    if contract.landing is not None:
        resource_keys.add("landing")
    if contract.reference:
        resource_keys.add("reference")

    @dg.asset(
        name=contract.name,
        description=contract.description,
        ins=ins,
        partitions_def=partitions_for(contract.grain),
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys=resource_keys,
        group_name=contract.group,
        code_version=contract.code_version,
        kinds={"duckdb", "pandas"},
        pool=WAREHOUSE_POOL,
        tags={"ecm/publish_mode": contract.publish_mode, **contract.tags},
        metadata={
            "ecm/table": f"{contract.schema}.{contract.name}",
            "ecm/partition_column": contract.partition_column,
            "ecm/business_key": ", ".join(contract.business_key),
            "ecm/publish_mode": contract.publish_mode,
        },
    )
    def _asset(context: dg.AssetExecutionContext, **upstream: pd.DataFrame) -> dg.Output:
        window = PartitionWindow(
            tuple(sorted(contract.partition_value(k) for k in context.partition_keys))
        )
        locked_at = datetime.now(UTC)
        kwargs: dict[str, object] = {}
        landing_files = ()
        if contract.landing is not None:
            zone: LandingZone = context.resources.landing
            files = zone.lock_files(
                contract.landing.name,
                window.first,
                window.last + timedelta(days=contract.landing.lateness_days),
            )
            landing_files = tuple(files)
        bindings = {}
        for name in contract.reference:
            store: ReferenceStore = context.resources.reference
            pinned = store.pin(name, _business_days(contract, window))
            kwargs[name] = pinned
            for snapshot in pinned.values():
                bindings[(name, snapshot.binding.version)] = snapshot.binding
        reads = []
        provenance = [n for n, _ in PROVENANCE_COLUMNS]
        for u in contract.upstream:
            frame = upstream[u.dataset]
            keys = sorted(context.asset_partition_keys_for_input(u.dataset))
            reads.append(
                UpstreamRead(
                    dataset=u.dataset,
                    first_partition=date.fromisoformat(keys[0][:10]),
                    last_partition=date.fromisoformat(keys[-1][:10]),
                    rows=len(frame),
                    run_ids=tuple(sorted(frame["run_id"].dropna().unique())),
                )
            )
            kwargs[u.dataset] = frame.drop(columns=[c for c in provenance if c in frame.columns])
        boundary = InputBoundary(
            partitions=tuple(context.partition_keys),
            locked_at=locked_at,
            landing_files=landing_files,
            reference=tuple(bindings[k] for k in sorted(bindings)),
            upstream=tuple(reads),
        )
        context.log.info(
            f"input boundary locked: {boundary.snapshot_id}, {len(landing_files)} landing files, "
            f"reference {[f'{b.name}@{b.version}' for b in boundary.reference]}"
        )
        if contract.landing is not None:
            kwargs["landing"] = context.resources.landing.read(
                landing_files, contract.landing.columns
            )
        kwargs["window"] = window
        result = dataset.transform(**{k: v for k, v in kwargs.items() if k in params})
        if isinstance(result, pd.DataFrame):
            result = TransformResult(data=result)
        counts = result.counts
        if counts is None:
            pcol = pd.to_datetime(result.data[contract.partition_column]).dt.date
            rows = pcol.value_counts().reindex(list(window.partitions), fill_value=0)
            counts = pd.DataFrame({"kept": rows.astype("int64")})
            counts.index.name = "partition"
        metadata = {
            "partitions": dg.MetadataValue.int(len(window.partitions)),
            "snapshot_id": boundary.snapshot_id,
            "input_locked_at": locked_at.isoformat(),
            "landing_files": dg.MetadataValue.int(len(landing_files)),
            "input_boundary": dg.MetadataValue.json(boundary.to_json()),
            **_counts_metadata(counts),
        }
        return dg.Output(
            StagedOutput(contract, result.data, boundary, result.rejects), metadata=metadata
        )

    return _asset


def build_assets(datasets: list[Dataset] | tuple[Dataset, ...]) -> list[dg.AssetsDefinition]:
    # backfill_policy and allow_nonexistent_upstream_partitions are marked beta; we rely on
    # both deliberately, so the warning would only be noise at every code-location load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [build_dataset_asset(d) for d in datasets]
