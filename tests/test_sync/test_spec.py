"""Job specs: the shipped demo loads; every invalid field is named with its allowed values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ecm_assets.sync.partitioning import hash_bucket, partition_of
from ecm_assets.sync.spec import SHIPPED_JOBS_DIR, SpecError, load_spec, load_specs, parse_spec

DEMO = json.loads((SHIPPED_JOBS_DIR / "historical-sync-001.json").read_text())


def test_shipped_demo_is_the_seed_example():
    (spec,) = load_specs(SHIPPED_JOBS_DIR)
    assert spec.job_id == "historical-sync-001"
    assert spec.schedule == "0 2 * * *"
    assert spec.partitioning.strategy == "hash" and spec.partitioning.key == "customer_id"
    assert spec.partitioning.partition_ids == [f"{i:02d}" for i in range(16)]
    assert spec.mode == "upsert" and spec.store == "context_store"
    assert [r.type for r in spec.rules] == ["row_count", "null_check", "freshness"]
    assert spec.on_failure == "abort_and_alert"


def _broken(path: str, value, tmp_path: Path) -> SpecError:
    data = copy.deepcopy(DEMO)
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is KeyError:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    file = tmp_path / "job.json"
    file.write_text(json.dumps(data))
    with pytest.raises(SpecError) as info:
        load_spec(file)
    assert str(file) in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        ("job_type", "streaming", "job_type", "full_extraction, incremental"),
        ("source.connector", "oracle", "source.connector", "sqlite, postgresql"),
        ("sink.mode", "append", "sink.mode", "upsert"),
        ("partitioning.strategy", "round_robin", "partitioning.strategy", "hash, range, list"),
        ("partitioning.partitions", 0, "partitioning.partitions", ">= 1"),
        ("validation.on_failure", "ignore", "validation.on_failure", "abort_and_alert, warn"),
        ("validation.rules.0.type", "uniqueness", "validation.rules[0].type", "row_count"),
        ("validation.rules.2.max_age", "a while", "validation.rules[2].max_age", "24 hours"),
        ("parameters.last_sync", "now()", "parameters.last_sync", "previous_job.end_time"),
        ("schedule", "daily", "schedule", "cron"),
        ("source.query", "SELECT * FROM t", "source.query", ":last_sync"),
        ("source.key", KeyError, "source.key", "required"),
        ("transform.processor", "nope", "transform.processor", "customer_transformer"),
        ("dependencies", [{"job": "x"}], "dependencies[0]", "window"),
    ],
)
def test_invalid_fields_are_named(tmp_path, path, value, field, says):
    error = _broken(path, value, tmp_path)
    assert error.field == field
    assert says in str(error)


def test_unknown_field_and_bad_json(tmp_path):
    file = tmp_path / "j.json"
    file.write_text(json.dumps({**DEMO, "retries": 3}))
    with pytest.raises(SpecError, match=r"'retries'.*allowed fields"):
        load_spec(file)
    file.write_text("{not json")
    with pytest.raises(SpecError, match="line 1"):
        load_spec(file)


def test_duplicate_job_ids_rejected(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(DEMO))
    with pytest.raises(SpecError, match="already defined"):
        load_specs(tmp_path)


def test_dependencies_range_and_list_partitioning():
    data = {
        **DEMO,
        "dependencies": [
            {"job": "reference-data-sync", "window": "24 hours"},
            {"job": "customer-extract", "status": "success"},
        ],
    }
    spec = parse_spec(data)
    assert spec.dependencies[0].window.total_seconds() == 86400
    assert spec.dependencies[1].status == "success"
    ranged = parse_spec(
        {**DEMO, "partitioning": {"strategy": "range", "key": "customer_id", "bounds": [100, 1000]}}
    )
    assert ranged.partitioning.partition_ids == ["min..100", "100..1000", "1000..max"]
    assert partition_of(ranged.partitioning, 99) == "min..100"
    assert partition_of(ranged.partitioning, 100) == "100..1000"
    listed = parse_spec(
        {
            **DEMO,
            "partitioning": {"strategy": "list", "key": "segment", "values": ["retail", "smb"]},
        }
    )
    assert partition_of(listed.partitioning, "smb") == "smb"
    assert partition_of(listed.partitioning, "other") is None


def test_hash_bucket_is_stable_sha256_not_python_hash():
    # Fixed values: a change of the function would move every row to another bucket.
    assert [hash_bucket(k, 16) for k in (1, 2, 123, "abc")] == [
        int(__import__("hashlib").sha256(str(k).encode()).hexdigest()[:16], 16) % 16
        for k in (1, 2, 123, "abc")
    ]
    assert hash_bucket(123, 16) == 13
