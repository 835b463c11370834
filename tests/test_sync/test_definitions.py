"""Specs -> Dagster: a partitioned asset per job, a schedule from the cron, dependencies."""

from __future__ import annotations

import json

import dagster as dg

from ecm_assets.sync.definitions import build_sync_definitions
from ecm_assets.sync.spec import SHIPPED_JOBS_DIR


def test_demo_job_definitions(tmp_path):
    defs = build_sync_definitions(SHIPPED_JOBS_DIR, tmp_path / "wh.duckdb")
    asset = defs.get_assets_def("sync_historical_sync_001")
    assert isinstance(asset.partitions_def, dg.StaticPartitionsDefinition)
    assert asset.partitions_def.get_partition_keys() == [f"{i:02d}" for i in range(16)]
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    (schedule,) = defs.get_repository_def().schedule_defs
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_dependencies_become_deps_and_schedule_skips(tmp_path):
    demo = json.loads((SHIPPED_JOBS_DIR / "historical-sync-001.json").read_text())
    upstream = {**demo, "job_id": "customer-extract", "sink": {**demo["sink"], "table": "ce"}}
    downstream = {**demo, "dependencies": [{"job": "customer-extract", "status": "success"}]}
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "a.json").write_text(json.dumps(upstream))
    (tmp_path / "jobs" / "b.json").write_text(json.dumps(downstream))
    wh = tmp_path / "wh.duckdb"
    import duckdb

    from ecm_assets.manifest.ledger import ensure_ledger

    with duckdb.connect(str(wh)) as conn:
        ensure_ledger(conn)
    defs = build_sync_definitions(tmp_path / "jobs", wh)
    asset = defs.get_assets_def("sync_historical_sync_001")
    assert dg.AssetKey("sync_customer_extract") in asset.dependency_keys
    schedule = next(
        s
        for s in defs.get_repository_def().schedule_defs
        if s.name == "sync_historical_sync_001_schedule"
    )
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        result = schedule.evaluate_tick(context)
    assert result.skip_message and "customer-extract: last run is no run" in result.skip_message
