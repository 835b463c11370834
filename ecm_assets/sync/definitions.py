"""Sync job specs -> Dagster definitions: one partitioned asset, a schedule, dependency checks.

Each spec becomes an asset partitioned as the spec says (hash buckets, ranges or list values
as static partitions) with a single-run backfill policy, so one run owns any set of its
partitions; a schedule from its cron that requests every partition in one run, skipping the
tick (with the reason) while the spec's dependencies do not hold; and an external source
asset for the table it reads. The asset body only calls `run_job`: the sync logic has no
Dagster in it.
"""

import os
from pathlib import Path

import dagster as dg

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.orchestration.factory import pool_for
from ecm_assets.orchestration.retries import RETRY_POLICY, raise_for_retry_policy
from ecm_assets.sync.backend import default_target
from ecm_assets.sync.connectors import SourceError
from ecm_assets.sync.runner import DependencyNotMetError, run_job, unmet_dependencies
from ecm_assets.sync.spec import JobSpec, load_specs
from ecm_assets.sync.validation import SyncValidationError

GROUP = "ecm_sync"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partitions_def(spec: JobSpec) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(spec.partitioning.partition_ids)


def _source_key(spec: JobSpec) -> dg.AssetKey:
    return dg.AssetKey(["sync_source", spec.asset_name])


def _build_asset(spec: JobSpec, warehouse: str, specs: dict[str, JobSpec]) -> dg.AssetsDefinition:
    deps: list[dg.AssetKey] = [_source_key(spec)]
    for dep in spec.dependencies:
        if dep.job in specs:
            deps.append(dg.AssetKey(specs[dep.job].asset_name))

    @dg.asset(
        name=spec.asset_name,
        group_name=GROUP,
        partitions_def=partitions_def(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=deps,
        description=spec.description or f"ECM sync job {spec.job_id} ({spec.job_type}).",
        kinds={open_warehouse(warehouse).kind, spec.source.connector},
        retry_policy=RETRY_POLICY,  # a retry resumes the run from its checkpoints
        pool=pool_for(warehouse),
        tags={"ecm/sync_job": spec.job_id.replace(".", "_")},
        metadata={
            "dagster/table_name": f"{spec.store}.{spec.table}",
            "ecm/job_spec": Path(spec.path).name,
            "ecm/partitioning": f"{spec.partitioning.strategy} on {spec.partitioning.key} x "
            f"{len(spec.partitioning.partition_ids)}",
            "ecm/cursor": f"({spec.source.cursor.column}, {spec.source.cursor.tiebreaker})",
        },
    )
    def _sync(context: dg.AssetExecutionContext) -> None:
        """Run or resume the sync for the run's partitions; figures per partition."""
        keys = sorted(context.partition_keys)
        try:
            result = run_job(spec, warehouse, partitions=keys, check_dependencies=True)
        except SyncValidationError as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={
                    "quality_decision": "FAIL_RUN",
                    "failed_rules": ", ".join(f.rule for f in exc.failures),
                },
                allow_retries=False,
            ) from exc
        except DependencyNotMetError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        except SourceError as exc:
            raise dg.Failure(description=f"{spec.job_id}: {exc}") from exc  # retried: resumes
        except Exception as exc:
            raise_for_retry_policy(exc, f"sync {spec.job_id}")
        for key in keys:
            merged = result.merged.get(key)
            context.add_asset_metadata(
                {
                    "dagster/row_count": merged.written if merged else 0,
                    "ecm/rows_staged": merged.staged if merged else 0,
                    "ecm/hard_deleted": merged.hard_deleted if merged else 0,
                    "ecm/skipped": merged is None,
                },
                partition_key=key,
            )
        context.add_output_metadata(
            {
                "ecm/sync_run_id": result.run_id,
                "ecm/resumed": result.resumed,
                "ecm/boundary": dg.MetadataValue.json(result.boundary),
                "ecm/last_sync": str(result.last_sync),
                "ecm/rows_extracted": result.rows_extracted,
                "ecm/quality_decision": result.decision,
            }
        )

    return _sync


def _build_schedule(spec: JobSpec, warehouse: str) -> dg.ScheduleDefinition:
    ids = spec.partitioning.partition_ids
    job = dg.define_asset_job(
        f"{spec.asset_name}_job", selection=[spec.asset_name], partitions_def=partitions_def(spec)
    )

    @dg.schedule(
        name=f"{spec.asset_name}_schedule",
        cron_schedule=spec.schedule or "0 0 * * *",
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Sync {spec.job_id} ({spec.schedule}); skipped while its dependencies "
        "do not hold. Deployed STOPPED.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        wh = open_warehouse(warehouse)
        if spec.dependencies and wh.exists():
            with wh.connect(read_only=True) as conn:
                problems = unmet_dependencies(conn, spec)
            if problems:
                return dg.SkipReason("; ".join(problems))
        tick = context.scheduled_execution_time
        return dg.RunRequest(
            run_key=f"{spec.job_id}:{tick.isoformat() if tick else 'manual'}",
            tags={RANGE_START_TAG: ids[0], RANGE_END_TAG: ids[-1], "ecm/trigger": "sync_schedule"},
        )

    return _schedule


def build_sync_definitions(
    jobs_dir: Path | str, warehouse: Path | str | None = None
) -> dg.Definitions:
    """Definitions for every job spec in `jobs_dir` (validated on load). The warehouse is
    a DuckDB path or a postgresql:// URL; default ECM_WAREHOUSE_URL, then ECM_WAREHOUSE."""
    from ecm_assets.location import default_warehouse

    warehouse = str(warehouse) if warehouse else default_target(default_warehouse())
    specs = load_specs(jobs_dir)
    by_id = {s.job_id: s for s in specs}
    assets: list = []
    schedules = []
    for spec in specs:
        assets.append(
            dg.AssetSpec(
                _source_key(spec),
                group_name=GROUP,
                description=f"Source table read by {spec.job_id} ({spec.source.connector}).",
                kinds={spec.source.connector},
            )
        )
        assets.append(_build_asset(spec, warehouse, by_id))
        if spec.schedule:
            schedules.append(_build_schedule(spec, warehouse))
    return dg.Definitions(assets=assets, schedules=schedules)


def jobs_dir_from_env() -> Path | None:
    value = os.environ.get("ECM_SYNC_JOBS_DIR")
    return Path(value) if value else None
