"""The code location loads, and its asset graph matches the reviewed snapshot.

A refactor that changes keys, deps, partitions, mappings, groups or tags shows up here.
Regenerate deliberately with `ECM_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from ecm_assets.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(pdef: dg.PartitionsDefinition | None) -> dict[str, str] | None:
    if pdef is None:
        return None
    if isinstance(pdef, dg.StaticPartitionsDefinition):
        return {"type": "StaticPartitionsDefinition", "keys": ",".join(pdef.get_partition_keys())}
    assert isinstance(pdef, dg.TimeWindowPartitionsDefinition)
    return {
        "type": type(pdef).__name__,
        "start": pdef.start.isoformat(),
        "timezone": pdef.timezone,
        "cron": pdef.cron_schedule,
    }


def _mapping(mapping: dg.PartitionMapping | None) -> dict[str, object] | None:
    if mapping is None:
        return None
    if isinstance(mapping, dg.TimeWindowPartitionMapping):
        return {
            "type": "TimeWindowPartitionMapping",
            "start_offset": mapping.start_offset,
            "end_offset": mapping.end_offset,
        }
    return {"type": type(mapping).__name__}


def graph_snapshot() -> dict[str, object]:
    out: dict[str, object] = {}
    for assets_def in defs.assets or []:
        if isinstance(assets_def, dg.AssetSpec):
            continue  # external source tables (sync jobs): not materialized here
        assert isinstance(assets_def, dg.AssetsDefinition)
        for key in sorted(assets_def.keys, key=lambda k: k.to_user_string()):
            spec = assets_def.specs_by_key[key]
            deps = {}
            for dep in spec.deps:
                deps[dep.asset_key.to_user_string()] = _mapping(dep.partition_mapping)
            out[key.to_user_string()] = {
                "deps": dict(sorted(deps.items())),
                "partitions": _partitions(assets_def.partitions_def),
                "group": spec.group_name,
                "tags": dict(sorted(spec.tags.items())),
                "kinds": sorted(spec.kinds),
                "code_version": spec.code_version,
                "checks": sorted(k.name for k in assets_def.check_keys if k.asset_key == key),
                "backfill_policy": str(assets_def.backfill_policy.policy_type)
                if assets_def.backfill_policy
                else None,
                "pool": assets_def.op.pool,
                "has_description": bool(spec.description),
                "metadata": {
                    k: str(v) for k, v in sorted(spec.metadata.items()) if k.startswith("ecm/")
                },
            }
    return dict(sorted(out.items()))


def test_definitions_load_and_validate() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "case_events",
        "case_sla_daily_metrics",
        "case_sla_rolling_30d",
        "case_sla_monthly_report",
        "case_priority_mix_daily",
        "sync_historical_sync_001",
        "sync_source/sync_historical_sync_001",
        # External source assets: lineage starts at the landing files and reference data.
        "landing/case_events",
        "reference/org_hierarchy",
        "reference/sla_calendar",
    }
    upstream = graph.get(dg.AssetKey("case_events")).parent_keys
    assert upstream == {
        dg.AssetKey(["landing", "case_events"]),
        dg.AssetKey(["reference", "org_hierarchy"]),
    }


def test_asset_graph_matches_snapshot() -> None:
    current = graph_snapshot()
    if os.environ.get("ECM_UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "asset graph changed: review, then ECM_UPDATE_SNAPSHOTS=1"


def test_every_asset_is_described_and_partitioned() -> None:
    for name, entry in graph_snapshot().items():
        assert entry["has_description"], name
        assert entry["partitions"] is not None, name
        assert entry["backfill_policy"] is not None, name


def test_operations_are_deployed_with_safe_defaults() -> None:
    """Event triggers and schedules ship stopped (an operator turns them on); only the failure
    alert and the outbox delivery run from the first deploy. Every asset carries the retry
    policy."""
    sensors = {s.name: s.default_status for s in defs.sensors or []}
    assert sensors == {
        "case_events__landing_files": dg.DefaultSensorStatus.STOPPED,
        "case_sla_daily_metrics__upstream_ready": dg.DefaultSensorStatus.STOPPED,
        "case_sla_rolling_30d__upstream_ready": dg.DefaultSensorStatus.STOPPED,
        "case_sla_monthly_report__upstream_ready": dg.DefaultSensorStatus.STOPPED,
        "case_priority_mix_daily__upstream_ready": dg.DefaultSensorStatus.STOPPED,
        "ecm_run_failure_alert": dg.DefaultSensorStatus.RUNNING,
        "ecm_outbox_delivery": dg.DefaultSensorStatus.RUNNING,
    }
    schedules = {s.name: (s.cron_schedule, s.execution_timezone) for s in defs.schedules or []}
    assert schedules == {
        "daily_lookback_schedule": ("0 1 * * *", "UTC"),
        "monthly_report_schedule": ("0 3 6 * *", "UTC"),
        "sync_historical_sync_001_schedule": ("0 2 * * *", "UTC"),
    }
    for asset in defs.assets or []:
        if isinstance(asset, dg.AssetSpec):
            continue
        assert isinstance(asset, dg.AssetsDefinition)
        policy = asset.node_def.retry_policy
        assert policy is not None and policy.backoff == dg.Backoff.EXPONENTIAL, asset.key
