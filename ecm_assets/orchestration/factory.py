"""Build a Dagster asset from a Dataset: lock the input boundary, run the pure transform, stage.

This is the only orchestration code a dataset needs. The asset:
1. takes its owned partitions from the run (one partition or a backfill range),
2. locks the input boundary before any compute: landing files with size and sha256,
   reference snapshots pinned per business date, and the upstream partitions it was handed
   together with the runs that published them,
3. calls the pure transform with parameters bound by name,
4. runs the quality gate on the output before anything is visible: findings become asset
   check evaluations per partition; FAIL_RUN stops here; the accepted rows, quarantined rows,
   blocked partitions and a hold for manual review go to the IO manager,
5. hands rows, rejects and boundary to the publish IO manager, which stages, checks and swaps.

The run manifest records each step: PLANNED when the step starts (a step retry is a new
attempt; one whose run already published succeeds by reporting that publish), INPUT_LOCKED
with the boundary, RUNNING before the transform, FAILED if anything raises; the IO manager
takes it from there to PUBLISHED. The step holds a lease on its attempt, renewed by a
heartbeat, so recovery elsewhere knows it is alive (manifest/lease.py).
"""

import dataclasses
import hashlib
import os
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, nullcontext, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import dagster as dg
import pandas as pd

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.adapters.landing import LandingReadError
from ecm_assets.contracts.boundaries import InputBoundary, PublishedElsewhere
from ecm_assets.contracts.dataset import (
    PROVENANCE_COLUMNS,
    Dataset,
    DatasetContract,
    PartitioningError,
    partition_key,
)
from ecm_assets.contracts.periods import shift
from ecm_assets.contracts.quality import Drift, Severity
from ecm_assets.contracts.registry import contract_for, register
from ecm_assets.contracts.transform import (
    PartitionWindow,
    TransformResult,
    UpstreamRelation,
)
from ecm_assets.manifest.lease import Heartbeat, release
from ecm_assets.manifest.ledger import Manifest, load_manifest, mark_failed, transition
from ecm_assets.manifest.states import RunStatus
from ecm_assets.orchestration.checks import check_evaluations, check_specs
from ecm_assets.orchestration.inputs import (
    ReplayError,
    UpstreamFrame,
    business_days,
    code_fingerprint,
    lock_inputs,
    run_transform,
)
from ecm_assets.orchestration.partitions import partitions_for
from ecm_assets.orchestration.resources import LandingZone, ReferenceStore
from ecm_assets.orchestration.retries import (
    RETRY_POLICY,
    is_transient,
    non_retryable,
    raise_for_retry_policy,
)
from ecm_assets.publish.closed_periods import (
    changed_partitions,
    continues_reviewed_correction,
    guarded_partitions,
    own_closed,
)
from ecm_assets.publish.event_index import published_elsewhere
from ecm_assets.publish.io_manager import (
    UPSTREAM_AS_METADATA,
    AlreadyPublished,
    DuckDBPublishIOManager,
    StagedOutput,
    manifest_locator,
)
from ecm_assets.publish.modes import (
    NON_PUBLISHING_MODES,
    EvaluationResult,
    evaluate_without_publishing,
)
from ecm_assets.publish.outbox import begin_attempt
from ecm_assets.publish.protocol import (
    PublishedPartitions,
    PublishRequest,
    read_partitions,
    upstream_relation,
)
from ecm_assets.publish.versions import closed_partitions, parse_reason
from ecm_assets.validation.gate import Decision, Finding, GateResult, failure_result, judge

IO_MANAGER_KEY = "warehouse_io_manager"
#: Run tags an operator sets from the UI launchpad or `dagster ... --tags`.
RESTATEMENT_TAG = "ecm/restatement_reason"  # authorizes changing a closed period, with a reason
REASON_TAG = "ecm/reason"  # reason code recorded on new versions (LATE_DATA, BUG_FIX, ...)
REPLAY_TAG = "ecm/replay_of"  # recompute from the input boundary a past run recorded
#: Backfill mode (section 19), set from the UI backfill dialog, `ecm impact --launch` or
#: `dagster asset materialize --tags`: replace (default), restatement, dry_run, shadow,
#: compare_only. See docs/runbook.md.
BACKFILL_MODE_TAG = "ecm/backfill_mode"
BACKFILL_MODES = ("replace", "restatement", "dry_run", "shadow", "compare_only")
#: What requested the run (landing_sensor, dependency_sensor, lookback_schedule, impact...).
TRIGGER_TAG = "ecm/trigger"
#: Late-data class the landing sensor gave the change: open_window, lookback, closed_period.
CORRECTION_CLASS_TAG = "ecm/correction_class"
#: "closed_periods": hold for manual review any change this run makes to a closed partition.
REVIEW_TAG = "ecm/review"
#: Concurrency pool of every step that writes a DuckDB warehouse: DuckDB admits one writing
#: process, so dagster.yaml limits this pool to one step at a time across all runs.
WAREHOUSE_POOL = "ecm_duckdb_warehouse"
#: Concurrency pool of every step that writes a PostgreSQL warehouse: many writers (same
#: partition serialized by advisory locks), so dagster.postgres.yaml admits a few at once.
#: pool_for picks one of the two from the warehouse's backend.
POSTGRES_POOL = "ecm_postgres_warehouse"
#: Run tag naming the process working on a run ("host:pid"): how `ecm recover` tells a dead
#: run from a live one in Dagster (operations/runs.py).
WORKER_TAG = "ecm/worker"


def pool_for(
    warehouse: str | os.PathLike[str],
) -> str:
    """The Dagster concurrency pool of the steps that write `warehouse`.

    One DuckDB file admits one writing process, so its pool (ecm_duckdb_warehouse) is limited
    to 1 in dagster.yaml. PostgreSQL takes many writers (publishes of one partition
    serialize on advisory locks, disjoint ones run in parallel), so it gets its own pool
    (ecm_postgres_warehouse), which dagster.postgres.yaml limits to a few steps: enough to
    publish in parallel without exhausting the server's connections. Separate names, so a
    deployment's limit for one backend never throttles or over-admits the other.
    """
    kind = open_warehouse(warehouse).kind
    return POSTGRES_POOL if kind == "postgresql" else WAREHOUSE_POOL


def _partition_mapping(
    contract: DatasetContract, upstream: DatasetContract, lookback: int
) -> dg.PartitionMapping | None:
    """How a partition maps to upstream partitions: time to time by the window (with its
    lookback); a list or hash partition reads every partition of an upstream partitioned
    otherwise (its rows are chosen by value), and its own key of one partitioned alike."""
    if contract.is_static:
        if upstream.is_static and upstream.static_keys == contract.static_keys:
            return None
        return dg.AllPartitionMapping()
    if upstream.is_static:
        raise PartitioningError(
            f"dataset {contract.name} ({contract.grain}) reads {upstream.name}, which has "
            f"{upstream.grain} partitions: a time partition cannot say which of its keys it "
            "reads; partition it the same way, or read a time-partitioned upstream"
        )
    if lookback == 0:
        return None
    return dg.TimeWindowPartitionMapping(
        start_offset=-lookback, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


#: Most quality warnings listed on one partition's materialization (all are in the manifest).
LISTED_WARNINGS = 20


def column_schema(contract: DatasetContract) -> dg.TableSchema:
    """The contract's columns (with descriptions and NOT NULL) as Dagster's column schema."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.sql_type,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in contract.columns
        ]
        + [
            dg.TableColumn(name, sql_type, description="provenance: publishing run / input lock")
            for name, sql_type in PROVENANCE_COLUMNS
        ]
    )


def _digest(parts: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def partition_boundary(
    contract: DatasetContract,
    partition: date,
    boundary: InputBoundary,
    kwargs: Mapping[str, object],
    upstream: list[UpstreamFrame],
) -> dict[str, object]:
    """One partition's own input boundary: its landing files (count and digest), the
    reference versions pinned for its days and the upstream runs of the rows it read."""
    out: dict[str, object] = {"partitions": [partition_key(partition)]}
    days = business_days(contract, PartitionWindow((partition,), contract.timezone))
    if contract.landing is not None:
        until = days[-1] + timedelta(days=contract.landing.lateness_days)
        files = [f for f in boundary.landing_files if partition <= f.ingest_date <= until]
        out["landing_files"] = len(files)
        out["landing_digest"] = _digest(sorted(f"{f.path}:{f.sha256}" for f in files))
    for name in contract.reference:
        pinned = kwargs.get(name)
        if isinstance(pinned, Mapping):
            versions = {pinned[d].binding.version for d in days if d in pinned}
            out.setdefault("reference", {})[name] = sorted(versions)  # type: ignore[index]
    reads = []
    for u, up in zip(contract.upstream, upstream, strict=True):
        frame = up.frame
        up_contract = contract_for(u.dataset)
        column = up_contract.partition_column
        if contract.grain in ("daily", "monthly"):
            first = shift(partition, contract.grain, -u.lookback_partitions)
            first_read = max(first, up.first_partition)
            last_read = min(partition, up.last_partition)
            if isinstance(frame, UpstreamRelation):
                # Per-partition counts of the snapshot, computed once (frame.partitions).
                mask = None
                run_ids = list(frame.run_ids(first, days[-1]))
                rows = frame.rows(first, days[-1])
            elif len(frame) and column in frame.columns:
                values = pd.to_datetime(frame[column]).dt.date
                mask = (values >= first) & (values <= days[-1])
            else:
                mask, run_ids, rows = None, [], 0
        elif up_contract.grain == contract.grain and not contract.is_static:
            # hourly of hourly: the same hour (lookback is refused for hourly contracts)
            mask = pd.Series(up_contract.values_of(frame[column]), index=frame.index) == partition
            first_read = last_read = partition
        else:
            # A list or hash partition reads every mapped upstream partition (its rows are
            # chosen by their values, not by time); one of the same keys reads its own key.
            same = contract.is_static and up_contract.static_keys == contract.static_keys
            if same and len(frame):
                mask = frame[column].astype(str) == partition
            else:
                mask = pd.Series(True, index=frame.index)
            first_read, last_read = (
                (partition, partition) if same else (up.first_partition, up.last_partition)
            )
        if mask is not None and not len(frame):
            run_ids, rows = [], 0
        elif mask is not None:  # a frame (a relation counted its rows above)
            run_ids = sorted(frame.loc[mask, "run_id"].dropna().unique().tolist())
            rows = int(mask.sum())
        reads.append(
            {
                "dataset": u.dataset,
                "first_partition": partition_key(first_read),
                "last_partition": partition_key(last_read),
                "rows": rows,
                "run_ids": run_ids,
            }
        )
    if reads:
        out["upstream"] = reads
    return out


def partition_metadata(
    contract: DatasetContract,
    window: PartitionWindow,
    boundary: InputBoundary,
    kwargs: Mapping[str, object],
    upstream: list[UpstreamFrame],
    counts: pd.DataFrame | None,
    gate: GateResult,
) -> dict[date, dict[str, object]]:
    """Each partition's own counts, quality and boundary summary, for its materialization."""
    reconciliation = gate.reconciliation.get("per_partition", {})
    failures: dict[date | None, list[Finding]] = {}
    for f in gate.failures:
        failures.setdefault(f.partition, []).append(f)
    out: dict[date, dict[str, object]] = {}
    for p in window.partitions:
        meta: dict[str, object] = {}
        entry = reconciliation.get(partition_key(p), {})
        # accepted = the published rows, which dagster/row_count already says.
        for name in ("input", "quarantined", "duplicate", "blocked"):
            if name in entry:
                meta[f"{name}_rows"] = dg.MetadataValue.int(int(entry[name]))
        if counts is not None and p in counts.index:
            for name in ("corrections_applied", "late_arrivals"):
                if name in counts.columns:
                    meta[name] = dg.MetadataValue.int(int(counts.loc[p, name]))
        failed = [*failures.get(None, []), *failures.get(p, [])]
        worst = max((f.severity for f in failed), key=lambda s: s.rank, default=None)
        meta["failed_checks"] = dg.MetadataValue.int(len(failed))
        meta["quality"] = str(worst) if worst else "PASSED"
        warned = [f for f in failed if not f.severity.blocks]
        if warned:
            lines = [
                f"- **{f.severity}** `{f.rule}`{'' if f.partition else ' (whole run)'}: {f.message}"
                for f in warned[:LISTED_WARNINGS]
            ]
            if len(warned) > LISTED_WARNINGS:
                lines.append(
                    f"- ... {len(warned) - LISTED_WARNINGS} more of {len(warned)} "
                    "(all of them in the run manifest)"
                )
            meta["quality_warnings"] = dg.MetadataValue.md("\n".join(lines))
        own = partition_boundary(contract, p, boundary, kwargs, upstream)
        own.pop("partitions")  # the event's own partition
        for name in ("landing_files", "landing_digest"):
            if name in own:
                meta[name] = own.pop(name)
        if own:  # reference versions, upstream runs: only when the dataset has them
            meta["input_boundary"] = dg.MetadataValue.json(own)
        out[p] = meta
    return out


#: Most partitions named in one run-log warning line (the count is always exact).
LOGGED_PARTITIONS = 10


def warning_lines(failures: list[Finding]) -> list[str]:
    """One run-log line per non-blocking rule that failed, naming its partitions.

    Each log line is an event the instance stores; one per rule *and* partition made the
    log a large share of a long run's bookkeeping. Each partition's own findings are on its
    materialization and its quality_gate evaluation; every finding is in the manifest.
    """
    by_rule: dict[tuple[str, str], list[Finding]] = {}
    for f in failures:
        if not f.severity.blocks:
            by_rule.setdefault((str(f.severity), f.rule), []).append(f)
    lines = []
    for (severity, rule), found in by_rule.items():
        where = sorted({partition_key(f.partition) if f.partition else "run" for f in found})
        listed = ", ".join(where[:LOGGED_PARTITIONS])
        if len(where) > LOGGED_PARTITIONS:
            listed += f", ... ({len(where)} in all)"
        rows = sum(f.failed for f in found)
        lines.append(
            f"quality {severity} {rule}: {rows} row(s) in {len(where)} partition(s) "
            f"[{listed}]; first: {found[0].message}"
        )
    return lines


def _record_failure(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    asset: str,
    exc: BaseException,
    **fields: object,
) -> None:
    try:
        with warehouse.connect(context) as conn:
            mark_failed(conn, context.run_id, asset, exc, **fields)
    except Exception as ledger_exc:
        context.log.error(f"could not record FAILED in the run manifest: {ledger_exc}")


def _raise_gate_failure(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    asset: str,
    failure: dg.Failure,
    gate: GateResult,
) -> NoReturn:
    """End the run FAILED with the gate's verdict and reconciliation as manifest evidence."""
    _record_failure(
        context,
        warehouse,
        asset,
        failure,
        quality=gate.to_json(),
        reconciliation=gate.reconciliation,
    )
    raise failure


def _judge(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    dataset: Dataset,
    window: PartitionWindow,
    result: TransformResult,
    kwargs: dict[str, object],
    snapshot: Any = None,
) -> GateResult:
    """Run the quality gate on the transform's output, with what the rules need to judge it.

    `snapshot` is the run's open upstream snapshot connection, if it has one: this process
    cannot open the file read-only beside it."""
    contract, quality = dataset.contract, dataset.quality
    published, closed = None, frozenset()
    if any(isinstance(r, Drift) for r in quality.rules) and _exists(warehouse):
        with (
            nullcontext(snapshot)
            if snapshot is not None
            else warehouse.connect(context, read_only=True)
        ) as conn:
            published = read_partitions(
                conn,
                contract,
                window.first,
                window.last,
                partitions=window.partitions if contract.is_static else None,
            )
            closed = frozenset(closed_partitions(conn, contract.name, contract.timezone))
    return judge(dataset, window, result, kwargs, published=published, closed=closed)


def _exists(warehouse: DuckDBPublishIOManager) -> bool:
    """Whether the warehouse was ever published to (a read-only open needs it)."""
    return open_warehouse(warehouse.database).exists()


def _begin_snapshot(conn: Any) -> None:
    """Begin the upstream snapshot's read transaction. DuckDB transactions read one snapshot;
    PostgreSQL's default (READ COMMITTED) gives each statement its own, so the transaction
    asks for one (`snapshot=True`: REPEATABLE READ): every read of the run sees the same
    commits."""
    conn.begin(snapshot=True)


def _end_snapshot(conn: Any) -> None:
    """End the upstream snapshot's read transaction (it wrote nothing)."""
    with suppress(Exception):  # already ended (e.g. by an error): closing follows
        conn.rollback()


def backfill_mode(tags: Mapping[str, str]) -> str:
    """The run's backfill mode; an unknown mode or a restatement without a reason is refused
    before any compute, naming the tag to fix."""
    mode = tags.get(BACKFILL_MODE_TAG) or (
        "restatement" if tags.get(RESTATEMENT_TAG) else "replace"
    )
    if mode not in BACKFILL_MODES:
        raise ValueError(
            f"run tag {BACKFILL_MODE_TAG}={mode!r} is not a backfill mode; use one of "
            f"{', '.join(BACKFILL_MODES)}"
        )
    if mode == "restatement" and not tags.get(RESTATEMENT_TAG):
        raise ValueError(
            f"backfill mode restatement needs the run tag {RESTATEMENT_TAG}=<reason code> "
            "(SOURCE_CORRECTION, BUG_FIX, ...): a restatement always says why"
        )
    review = tags.get(REVIEW_TAG)
    if review not in (None, "", "closed_periods"):
        raise ValueError(f"run tag {REVIEW_TAG}={review!r}: the only value is 'closed_periods'")
    return mode


def review_closed_periods(
    gate: GateResult, window: PartitionWindow, guarded: Mapping[date, str]
) -> GateResult:
    """Hold for a person a run's change to a closed period or to a partition it was computed
    from (`guarded`: partition -> the closed partition it feeds; see _hold_closed_changes).

    The output is computed and judged, then held (MANUAL_REVIEW) instead of replacing
    certified numbers, or the rows they were computed from, unattended (docs/lifecycle.md).
    """
    touched = sorted(d for d in window.partitions if d in guarded and d not in gate.blocked)
    if not touched or gate.decision == Decision.FAIL_RUN:
        return gate
    feeds = ", ".join(
        partition_key(d) if guarded[d].endswith(partition_key(d)) else f"{d} (feeds {guarded[d]})"
        for d in touched
    )
    finding = Finding(
        rule="closed_period_review",
        severity=Severity.MANUAL_REVIEW,
        partition=None,
        passed=False,
        failed=len(touched),
        checked=len(window.partitions),
        message=f"would change closed period(s) or the rows they were computed from: {feeds}; "
        "a person approves or rejects it",
    )
    return dataclasses.replace(
        gate, decision=Decision.MANUAL_REVIEW, findings=[*gate.findings, finding]
    )


def _event_index(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    contract: DatasetContract,
    keys: pd.Series,
    owned: tuple[date, ...],
) -> tuple[PublishedElsewhere, ...]:
    """Where the keys the run reads are published outside its window (contracts/moves.py)."""
    if not _exists(warehouse):
        return ()
    with warehouse.connect(context, read_only=True) as conn:
        return published_elsewhere(conn, contract, keys, owned)


def _hold_closed_changes(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    contract: DatasetContract,
    window: PartitionWindow,
    gate: GateResult,
    boundary: InputBoundary,
    tags: Mapping[str, str],
    snapshot_conn: Any = None,
) -> GateResult:
    """Every run, whatever its tags, is held when it would change a partition a closed period
    was computed from (docs/lifecycle.md); a run tagged REVIEW_TAG also when it would change
    a closed partition of its own dataset (untagged, those follow the restatement rule)."""
    if gate.decision == Decision.FAIL_RUN:
        return gate
    reviewing = tags.get(REVIEW_TAG) == "closed_periods"
    # A relation dataset reads inside its open snapshot (a second, read-only connection to
    # the same file from this process would be refused by DuckDB).
    with (
        nullcontext(snapshot_conn)
        if snapshot_conn is not None
        else warehouse.connect(context, read_only=True)
    ) as conn:
        guarded = {
            p: feeds
            for p, feeds in guarded_partitions(conn, contract, window.partitions).items()
            if p not in gate.blocked and (reviewing or not own_closed(contract, p, feeds))
        }
        if not guarded:
            return gate
        changed = changed_partitions(conn, contract, gate.accepted, guarded)
        guarded = {p: guarded[p] for p in changed}
        if not guarded or continues_reviewed_correction(conn, boundary):
            return gate
    return review_closed_periods(gate, window, guarded)


def _observe(
    context: dg.AssetExecutionContext,
    partition_keys: dict[date, str],
    evaluation: EvaluationResult,
    gate: GateResult,
) -> None:
    """What a non-publishing run found, per partition, where the UI shows it (no
    materialization: nothing consumers read has changed)."""
    diffs = {d.partition: d for d in evaluation.diffs}
    for d, key in partition_keys.items():
        metadata: dict[str, object] = {"backfill_mode": evaluation.mode, "published": False}
        if d in gate.blocked:
            metadata["blocked"] = gate.blocked[d]
        elif d in diffs:
            diff = diffs[d]
            metadata.update(
                staged_rows=dg.MetadataValue.int(diff.staged_rows),
                published_rows=dg.MetadataValue.int(diff.published_rows),
                rows_added=dg.MetadataValue.int(diff.added),
                rows_removed=dg.MetadataValue.int(diff.removed),
                rows_changed=dg.MetadataValue.int(diff.changed),
                identical_to_published=diff.identical,
                staged_checksum=diff.staged_checksum,
                metric_deltas=dg.MetadataValue.json(diff.to_json()["metric_deltas"]),
            )
        if evaluation.shadow_table:
            metadata["shadow_table"] = evaluation.shadow_table
        metadata["manifest"] = manifest_locator(context.run_id, context.asset_key.path[-1])
        context.log_event(
            dg.AssetObservation(asset_key=context.asset_key, partition=key, metadata=metadata)
        )


def build_dataset_asset(dataset: Dataset, pool: str = WAREHOUSE_POOL) -> dg.AssetsDefinition:
    """The asset of one dataset; see the module docstring for what it does per run. `pool`:
    the Dagster concurrency pool of its steps, the warehouse backend's (location.pool_for)."""
    contract = dataset.contract
    partitions = partitions_for(contract)
    register(contract, dataset)
    ins = {
        u.dataset: dg.AssetIn(
            key=u.dataset,
            partition_mapping=_partition_mapping(
                contract, contract_for(u.dataset), u.lookback_partitions
            ),
            # "relation": the IO manager hands over which partitions, the rows stay in DuckDB.
            metadata={UPSTREAM_AS_METADATA: dataset.upstream_as},
        )
        for u in contract.upstream
    }
    resource_keys = {IO_MANAGER_KEY}
    if contract.landing is not None:
        resource_keys.add("landing")
    if contract.reference:
        resource_keys.add("reference")

    # A multi_asset of one asset, so that jobs may select it without its checks (can_subset):
    # the non-publishing mode jobs do, see build_mode_jobs.
    @dg.multi_asset(
        name=contract.name,
        outs={
            contract.name: dg.AssetOut(
                description=contract.description,
                # dry_run, shadow and compare_only publish nothing: no materialization.
                is_required=False,
                io_manager_key=IO_MANAGER_KEY,
                group_name=contract.group,
                code_version=contract.code_version,
                kinds={"postgres" if pool == POSTGRES_POOL else "duckdb", "pandas"},
                tags={"ecm/publish_mode": contract.publish_mode, **contract.tags},
                owners=list(contract.owners) or None,
                metadata={
                    "dagster/table_name": f"{contract.schema}.{contract.name}",
                    "dagster/column_schema": column_schema(contract),
                    "ecm/partition_column": contract.partition_column,
                    "ecm/business_key": ", ".join(contract.business_key),
                    "ecm/publish_mode": contract.publish_mode,
                },
            )
        },
        ins=ins,
        deps=_source_keys(contract),
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=RETRY_POLICY,
        required_resource_keys=resource_keys,
        pool=pool,
        check_specs=check_specs(contract, dataset.quality, partitions),
        can_subset=True,
    )
    def _asset(
        context: dg.AssetExecutionContext, **upstream: pd.DataFrame
    ) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
        warehouse: DuckDBPublishIOManager = getattr(context.resources, IO_MANAGER_KEY)
        keys = tuple(sorted(context.partition_keys))
        window = PartitionWindow(
            tuple(contract.partition_value(k) for k in keys), timezone=contract.timezone
        )
        tags = dict(context.run.tags)
        restatement_reason = tags.get(RESTATEMENT_TAG) or None
        replay_of = tags.get(REPLAY_TAG) or None
        try:
            requested_mode = backfill_mode(tags)
        except ValueError as exc:
            raise non_retryable(exc, f"{contract.name}: bad run tags") from exc
        if requested_mode in NON_PUBLISHING_MODES:
            mode = requested_mode
        else:
            mode = "restatement" if restatement_reason else "replay" if replay_of else "publish"
        manifest = Manifest(
            run_id=context.run_id,
            asset=contract.name,
            code_version=code_fingerprint(dataset),
            mode=mode,
            parameters={k: v for k, v in tags.items() if k.startswith(("ecm/", "dagster/"))},
            output_boundary=[partition_key(d) for d in window.partitions],
        )
        worker = f"{socket.gethostname()}:{os.getpid()}"
        if context.run.tags.get(WORKER_TAG) != worker:
            context.instance.add_run_tags(context.run_id, {WORKER_TAG: worker})
        try:
            with warehouse.connect(context) as conn:
                published = begin_attempt(conn, manifest, context.instance)
        except Exception as exc:
            raise_for_retry_policy(exc, f"{contract.name}: cannot record the run manifest")
        if published is not None:
            # A step retry after this run's attempt committed: the publish stands, and the
            # step succeeds by reporting it again instead of failing "already published".
            context.log.info(
                f"run {context.run_id} already published {contract.name} (attempt "
                f"{published.attempt}); reporting that publish, not recomputing"
            )
            yield from _yield_check_outputs(
                context, {k.name for k in context.selected_asset_check_keys}
            )
            yield dg.Output(AlreadyPublished(published), output_name=contract.name)
            return
        # The lease says "alive" to recovery elsewhere for as long as this attempt works.
        heartbeat = Heartbeat(warehouse.database).start()
        try:
            yield from _attempt(context, upstream, warehouse, manifest, window, keys, tags)
        finally:
            heartbeat.stop()
            release(manifest.run_id, manifest.asset, manifest.attempt)

    def _attempt(
        context: dg.AssetExecutionContext,
        upstream: dict[str, pd.DataFrame],
        warehouse: DuckDBPublishIOManager,
        manifest: Manifest,
        window: PartitionWindow,
        keys: tuple[str, ...],
        tags: dict[str, str],
    ) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
        """Lock inputs, transform, judge, stage: the work of one leased attempt."""
        mode = manifest.mode
        restatement_reason = tags.get(RESTATEMENT_TAG) or None
        replay_of = tags.get(REPLAY_TAG) or None
        # Holds the upstream snapshot connection of a dataset that reads its upstream in the
        # warehouse; closed once the gate has judged, before anything is published.
        snapshot = ExitStack()
        snapshot_conn = None
        try:
            # A bad reason code fails before any compute, listing the valid codes.
            for tag in (RESTATEMENT_TAG, REASON_TAG):
                if tags.get(tag):
                    parse_reason(tags[tag], tag)
            recorded = None
            if replay_of:
                with warehouse.connect(context, read_only=True) as conn:
                    original = load_manifest(conn, replay_of, contract.name)
                if original.input_boundary is None:
                    raise ReplayError(f"run {replay_of} recorded no input boundary")
                recorded = InputBoundary.from_json(original.input_boundary)
            frames = []
            for u in contract.upstream:
                up_contract = contract_for(u.dataset)
                input_values = sorted(
                    up_contract.partition_value(k)
                    for k in context.asset_partition_keys_for_input(u.dataset)
                )
                rows = upstream[u.dataset]
                if isinstance(rows, PublishedPartitions):
                    if snapshot_conn is None:
                        # One read transaction from here to the gate: the boundary's run ids,
                        # the transform and the control totals read the same snapshot.
                        snapshot_conn = snapshot.enter_context(warehouse.connect(context))
                        _begin_snapshot(snapshot_conn)
                        snapshot.callback(_end_snapshot, snapshot_conn)
                    rows = upstream_relation(
                        snapshot_conn, contract_for(u.dataset), rows.first, rows.last
                    )
                frames.append(
                    UpstreamFrame(
                        u.dataset,
                        input_values[0],
                        input_values[-1],
                        rows,
                        keys=tuple(input_values) if up_contract.is_static else (),
                    )
                )
            landing: LandingZone | None = context.resources.landing if contract.landing else None
            reference: ReferenceStore | None = (
                context.resources.reference if contract.reference else None
            )
            boundary, kwargs = lock_inputs(
                dataset,
                window,
                keys,
                landing_root=Path(landing.root) if landing else None,
                reference_root=Path(reference.root) if reference else None,
                upstream=frames,
                locked_at=datetime.now(UTC),
                recorded=recorded,
                published_index=lambda keys, owned: _event_index(
                    context, warehouse, contract, keys, owned
                ),
            )
            with warehouse.connect(context) as conn:
                transition(
                    conn,
                    context.run_id,
                    contract.name,
                    RunStatus.INPUT_LOCKED,
                    input_boundary=boundary.to_json(),
                    input_locked_at=boundary.locked_at,
                )
                transition(
                    conn,
                    context.run_id,
                    contract.name,
                    RunStatus.RUNNING,
                    started_at=datetime.now(UTC),
                )
            for observation in source_observations(contract, boundary):
                context.log_event(observation)
            context.log.info(
                f"input boundary locked: {boundary.snapshot_id}, {len(boundary.landing_files)} "
                f"landing files, reference "
                f"{[f'{b.name}@{b.version}' for b in boundary.reference]}"
                + (f" (replay of run {replay_of})" if replay_of else "")
            )
            for entry in boundary.ignored_landing:
                context.log.warning(f"landing entry {entry.path} ignored: {entry.reason}")
            result = run_transform(dataset, kwargs)
            gate = _judge(context, warehouse, dataset, window, result, kwargs, snapshot_conn)
            if snapshot_conn is not None or _exists(warehouse):
                gate = _hold_closed_changes(
                    context, warehouse, contract, window, gate, boundary, tags, snapshot_conn
                )
        except LandingReadError as exc:
            # The input cannot even be read into rows: the gate's FAIL_RUN, named as such.
            gate = failure_result(contract, dataset.quality, window, exc.rule, str(exc))
        except Exception as exc:
            # Recording FAILED must never replace the run's own error (e.g. with a lock
            # timeout), so the operator always sees what actually went wrong.
            _record_failure(context, warehouse, contract.name, exc)
            if is_transient(exc):
                context.log.warning(f"transient error, the retry policy retries the step: {exc!r}")
            raise_for_retry_policy(exc, f"{contract.name} failed before publishing")
        finally:
            snapshot.close()
        partition_keys = {contract.partition_value(k): k for k in keys}
        # Yielded (not logged) so they reach the event log even when the gate fails the run.
        selected = {k.name for k in context.selected_asset_check_keys}
        # Checks report the published data: a run that publishes nothing reports in its
        # observations and manifest instead.
        publishing = mode not in NON_PUBLISHING_MODES
        for evaluation in check_evaluations(contract, dataset.quality, gate, partition_keys):
            if publishing and evaluation.check_name in selected:
                yield evaluation
        if gate.decision == Decision.FAIL_RUN:
            failure = dg.Failure(
                description=f"quality gate FAIL_RUN for {contract.name}: nothing of this run "
                f"is published.\n{gate.summary()}",
                metadata={
                    "quality_decision": "FAIL_RUN",
                    "failed_rules": dg.MetadataValue.json(
                        [f.to_json() for f in gate.failures if f.severity.blocks]
                    ),
                },
                allow_retries=False,
            )
            _raise_gate_failure(context, warehouse, contract.name, failure, gate)
        for line in warning_lines(gate.failures):
            context.log.warning(line)
        if not publishing:
            yield from _yield_check_outputs(context, selected)
            _evaluate_only(
                context, warehouse, contract, mode, window, boundary, gate, tags, manifest
            )
            return
        staged = StagedOutput(
            contract,
            gate.accepted,
            boundary,
            # Quarantined rows, and the rows of blocked partitions (kept in blocked_rows).
            gate.rejects,
            mode=mode,
            reason=tags.get(REASON_TAG) or None,
            restatement_reason=restatement_reason,
            reconciliation=gate.reconciliation,
            quality=gate.to_json(),
            blocked=dict(gate.blocked),
            hold=gate.decision == Decision.MANUAL_REVIEW,
            partition_metadata=partition_metadata(
                contract, window, boundary, kwargs, frames, result.counts, gate
            ),
            attempt=manifest.attempt,
        )
        yield from _yield_check_outputs(context, selected)
        # No output metadata: a range run's goes on every partition's materialization. The
        # run-level facts (snapshot, decision) are in the run manifest, which each partition
        # links to; each partition says its own quality.
        yield dg.Output(staged, output_name=contract.name)

    return _asset


def _yield_check_outputs(
    context: dg.AssetExecutionContext, selected: set[str]
) -> Iterator[dg.Output]:
    # Per-partition evaluations do not fill the checks' op outputs; these do.
    for output_name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.name in selected:
            yield dg.Output(None, output_name=output_name)


def _evaluate_only(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBPublishIOManager,
    contract: DatasetContract,
    mode: str,
    window: PartitionWindow,
    boundary: InputBoundary,
    gate: GateResult,
    tags: Mapping[str, str],
    manifest: Manifest,
) -> None:
    """dry_run, compare_only, shadow: judge and diff, write the manifest (and the shadow)."""
    partition_keys = {contract.partition_value(k): k for k in context.partition_keys}
    blocked_text = "; ".join(f"{d}: {why}" for d, why in sorted(gate.blocked.items()))
    if set(window.partitions) <= set(gate.blocked):
        failure = dg.Failure(
            description=f"quality gate FAIL_PARTITION ({mode}): every partition of "
            f"{contract.name} would be blocked. {blocked_text}",
            allow_retries=False,
        )
        _raise_gate_failure(context, warehouse, contract.name, failure, gate)
    request = PublishRequest(
        contract=contract,
        owned_partitions=window.partitions,
        run_id=context.run_id,
        as_of=boundary.locked_at,
        data=gate.accepted,
        rejects=gate.quarantined,
        mode=mode,
        reason=tags.get(REASON_TAG) or None,
        restatement_reason=tags.get(RESTATEMENT_TAG) or None,
        input_boundary=boundary.to_json(),
        reconciliation=gate.reconciliation,
        durable_staging=False,
        blocked=dict(gate.blocked),
        quality=gate.to_json(),
        attempt=manifest.attempt,
    )
    try:
        with warehouse.connect(context) as conn:
            evaluation = evaluate_without_publishing(conn, request)
    except Exception as exc:
        raise_for_retry_policy(exc, f"{contract.name} {mode}")
    _observe(context, partition_keys, evaluation, gate)
    changed = [partition_key(d.partition) for d in evaluation.diffs if not d.identical]
    context.log.info(
        f"{mode}: {len(changed)} of {len(evaluation.diffs)} partitions would change "
        f"({', '.join(changed[:10])}{'...' if len(changed) > 10 else ''}); "
        + (
            f"written to {evaluation.shadow_table}"
            if evaluation.shadow_table
            else "nothing published"
        )
        + (
            "; a publish would be held for review"
            if gate.decision == Decision.MANUAL_REVIEW
            else ""
        )
        + (
            f"; closed partitions changed (needs a restatement): "
            f"{[partition_key(d) for d in evaluation.closed_changed]}"
            if evaluation.closed_changed
            else ""
        )
    )
    if gate.blocked:
        raise dg.Failure(
            description=f"quality gate FAIL_PARTITION ({mode}): {contract.name} partitions "
            f"would be blocked: {blocked_text}",
            metadata={
                "blocked_partitions": dg.MetadataValue.json(
                    {partition_key(d): w for d, w in sorted(gate.blocked.items())}
                )
            },
            allow_retries=False,
        )


#: Partition cadence of a time-window partitions definition, for job names.
_CADENCE = {"0 0 * * *": "daily", "0 0 1 * *": "monthly", "0 * * * *": "hourly"}


def mode_job_name(mode: str, assets_def: dg.AssetsDefinition) -> str:
    """The named job that runs an asset in a non-publishing backfill mode."""
    partitions_def = assets_def.partitions_def
    cron = getattr(partitions_def, "cron_schedule", None)
    return f"{mode}_{_CADENCE.get(cron or '', assets_def.key.path[-1])}"


def build_mode_jobs(assets: list[dg.AssetsDefinition]) -> list:
    """One named job per non-publishing mode and partitioning: dry_run_daily, shadow_monthly...

    They make the modes discoverable in the UI (Jobs list; a backfill from the job's
    Partitions tab) and keep their runs honest: the mode is a job tag, so no typo reaches a
    run, and the asset checks are not selected, so a run that publishes nothing never replaces
    the check results of the published data. A backfill of such a job ends "Completed" when
    its runs succeed; a non-publishing run materializes nothing, which an asset backfill of
    the dataset itself would count as failed partitions.
    """
    # A job has one partitions definition: datasets partitioned alike share the jobs.
    groups: dict[dg.PartitionsDefinition | None, list[dg.AssetsDefinition]] = {}
    for a in assets:
        groups.setdefault(a.partitions_def, []).append(a)
    jobs = []
    taken: set[str] = set()
    for members in groups.values():
        names = [a.key.path[-1] for a in members]
        suffix = "" if mode_job_name("", members[0]) not in taken else f"_{names[0]}"
        taken.add(mode_job_name("", members[0]))
        for mode in NON_PUBLISHING_MODES:
            jobs.append(
                dg.define_asset_job(
                    name=mode_job_name(mode, members[0]) + suffix,
                    selection=dg.AssetSelection.assets(*names).without_checks(),
                    partitions_def=members[0].partitions_def,
                    tags={BACKFILL_MODE_TAG: mode, TRIGGER_TAG: f"{mode}_job"},
                    description=_MODE_HELP[mode] + f" Assets: {', '.join(names)}.",
                )
            )
    return jobs


_MODE_HELP = {
    "dry_run": "dry_run: compute, judge and diff against what is published; publish nothing "
    "(the diff is on the asset's observations and in the run manifest).",
    "compare_only": "compare_only: like dry_run, reporting only which partitions would change.",
    "shadow": "shadow: write the candidate output to a shadow table next to the published one "
    "for side-by-side queries; consumers' tables are untouched.",
}


def landing_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", source])


def reference_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["reference", name])


def _source_keys(contract: DatasetContract) -> list[dg.AssetKey]:
    keys = [landing_asset_key(contract.landing.name)] if contract.landing else []
    return keys + [reference_asset_key(r) for r in contract.reference]


def build_source_assets(datasets: list[Dataset] | tuple[Dataset, ...]) -> list[dg.AssetSpec]:
    """Landing sources and reference datasets as external assets, so lineage starts where the
    data does; every run that locks them records what it saw as their observation."""
    specs: dict[dg.AssetKey, dg.AssetSpec] = {}
    for d in datasets:
        c = d.contract
        if c.landing is not None:
            key = landing_asset_key(c.landing.name)
            specs.setdefault(
                key,
                dg.AssetSpec(
                    key,
                    description=f"Landing files of source {c.landing.name!r} "
                    f"(landing/{c.landing.name}/ingest_date=YYYY-MM-DD/), columns "
                    f"{', '.join(c.landing.columns)}; a file may carry business dates up to "
                    f"{c.landing.lateness_days} days before its ingest date. External: "
                    "written by the source systems, observed by the runs that lock them.",
                    group_name="sources",
                    kinds={"file"},
                    owners=list(c.owners) or None,
                ),
            )
        for name in c.reference:
            key = reference_asset_key(name)
            specs.setdefault(
                key,
                dg.AssetSpec(
                    key,
                    description=f"Reference dataset {name!r}: immutable versioned snapshots "
                    f"(reference/{name}/<version>/), pinned per business date by the runs "
                    "that read them. External: published by its owners.",
                    group_name="sources",
                    kinds={"file"},
                    owners=list(c.owners) or None,
                ),
            )
    return list(specs.values())


def source_observations(
    contract: DatasetContract, boundary: InputBoundary
) -> list[dg.AssetObservation]:
    """What a run's input lock saw of its sources: files (count, bytes, digest) and the
    reference versions pinned. One observation per source per run."""
    out = []
    if contract.landing is not None:
        files = boundary.landing_files
        out.append(
            dg.AssetObservation(
                asset_key=landing_asset_key(contract.landing.name),
                metadata={
                    "files_seen": dg.MetadataValue.int(len(files)),
                    "bytes_seen": dg.MetadataValue.int(sum(f.size_bytes for f in files)),
                    "files_digest": _digest(sorted(f"{f.path}:{f.sha256}" for f in files)),
                    "ingest_dates": f"{min(f.ingest_date for f in files)}.."
                    f"{max(f.ingest_date for f in files)}"
                    if files
                    else "none",
                    "read_by": contract.name,
                },
            )
        )
    for name in contract.reference:
        versions = sorted({b.version for b in boundary.reference if b.name == name})
        out.append(
            dg.AssetObservation(
                asset_key=reference_asset_key(name),
                metadata={
                    "versions_pinned": ", ".join(versions) or "none",
                    "snapshots": dg.MetadataValue.int(len(versions)),
                    "read_by": contract.name,
                },
            )
        )
    return out


def build_assets(
    datasets: list[Dataset] | tuple[Dataset, ...], pool: str = WAREHOUSE_POOL
) -> list[dg.AssetsDefinition]:
    # backfill_policy and allow_nonexistent_upstream_partitions are marked beta; we rely on
    # both deliberately, so the warning would only be noise at every code-location load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        for d in datasets:  # every contract first: a partition mapping reads its upstream's
            register(d.contract, d)
        return [build_dataset_asset(d, pool) for d in datasets]
