"""Replay: recompute a past run from the input boundary its manifest recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest

from tests.test_lifecycle._support import (
    BACKENDS,
    Env,
    backend_env,
    failure_messages,
    manifest_of,
    materializations,
    write_landing_csv,
)

DAY = "2026-09-02"
LATE_EVENT = {
    "event_id": "E9900000101",
    "case_id": "C990000101",
    "event_type": "opened",
    "event_ts": "2026-09-02T09:30:00Z",
    "unit_id": "U02",
    "priority": "P3",
}


@pytest.fixture(params=BACKENDS)
def env(request, demo_data, tmp_path) -> Iterator[Env]:
    with backend_env(demo_data[0], tmp_path, request.param) as env:
        yield env


def _publish_day(env: Env, **kwargs) -> tuple[str, str, dict]:
    """Materialize case_events for DAY: run id, business checksum and materialization metadata."""
    result = env.materialize(["case_events"], partition_key=DAY, **kwargs)
    (meta,) = materializations(result, "case_events")
    return result.run_id, meta["business_checksum"], meta


def _add_late_file(env: Env) -> None:
    write_landing_csv(env.root, date(2026, 9, 4), "events-late-001.csv", [LATE_EVENT])


def test_cli_replay_ignores_files_that_landed_later(env, capsys) -> None:
    run_id, checksum, meta = _publish_day(env)
    _add_late_file(env)

    code, out, err = env.ecm(capsys, "replay", run_id, "--data", str(env.root), "--json")
    assert code == 0, err
    replay = json.loads(out)
    assert replay["run_id"] == run_id and replay["asset"] == "case_events"
    assert replay["matches"] is True
    assert replay["original_checksum"] == replay["replay_checksum"] == checksum
    assert replay["landing_files"] == meta["landing_files"]
    assert replay["partitions"] == f"{DAY}..{DAY}"

    # The late file does change the partition: a fresh run locks it in and differs.
    fresh_run, fresh_checksum, fresh_meta = _publish_day(env)
    assert fresh_checksum != checksum
    assert fresh_meta["landing_files"] == meta["landing_files"] + 1
    assert env.query(
        "SELECT business_date, run_id FROM main.case_events WHERE event_id = ?",
        [LATE_EVENT["event_id"]],
    ) == [(date(2026, 9, 2), fresh_run)]


def test_replay_run_tag_republishes_the_original_output(env, capsys) -> None:
    run_id, checksum, _ = _publish_day(env)
    original = manifest_of(env, capsys, run_id)
    _add_late_file(env)
    _, fresh_checksum, _ = _publish_day(env)
    assert fresh_checksum != checksum

    replay_run, replay_checksum, meta = _publish_day(env, tags={"ecm/replay_of": run_id})
    assert replay_checksum == checksum
    assert meta["mode"] == "replay"
    manifest = manifest_of(env, capsys, replay_run)
    assert (manifest["mode"], manifest["status"]) == ("replay", "PUBLISHED")
    assert manifest["parameters"]["ecm/replay_of"] == run_id
    assert manifest["outputs"]["business_checksum"] == checksum
    recorded = original["input_boundary"]["landing_files"]
    assert recorded and manifest["input_boundary"]["landing_files"] == recorded
    assert all("late" not in f["path"] for f in manifest["input_boundary"]["landing_files"])
    assert manifest["input_boundary"]["reference"] == original["input_boundary"]["reference"]
    # What consumers read is the original output again, published by the replay run.
    assert env.query(
        "SELECT count(*), min(run_id), max(run_id) FROM main.case_events WHERE business_date = ?",
        [date(2026, 9, 2)],
    ) == [(original["outputs"]["rows"], replay_run, replay_run)]
    assert not env.query(
        "SELECT * FROM main.case_events WHERE event_id = ?", [LATE_EVENT["event_id"]]
    )


def test_replay_fails_when_a_recorded_file_was_modified(env, capsys) -> None:
    run_id, _, _ = _publish_day(env)
    files = manifest_of(env, capsys, run_id)["input_boundary"]["landing_files"]
    victim = next(f["path"] for f in files if f["path"].endswith(".csv"))
    path = env.root / "landing" / victim
    assert path.read_text().endswith("\n")
    with path.open("a", newline="") as fh:
        fh.write("E9900000201,C990000201,opened,2026-09-02T11:00:00Z,U03,P1\n")

    code, out, err = env.ecm(capsys, "replay", run_id, "--data", str(env.root), "--json")
    assert code == 2 and out == ""
    assert victim in err and "changed" in err, err

    # The run-tag replay refuses too, and its manifest says why.
    result = env.materialize(
        ["case_events"], partition_key=DAY, tags={"ecm/replay_of": run_id}, expect_success=False
    )
    assert victim in failure_messages(result)
    failed = manifest_of(env, capsys, result.run_id)
    assert failed["status"] == "FAILED" and victim in failed["status_detail"]


def test_replay_of_a_derived_asset_needs_its_upstream_unchanged(env, capsys) -> None:
    result = env.materialize(
        ["case_events", "case_sla_daily_metrics"], first="2026-09-01", last=DAY
    )
    run_id = result.run_id
    daily = materializations(result, "case_sla_daily_metrics")  # one per partition
    # Each partition's materialization shows its own checksum; the run's is in the manifest.
    assert len(daily) == 2 and len({m["business_checksum"] for m in daily}) == 2
    args = ["replay", run_id, "--asset", "case_sla_daily_metrics", "--data", str(env.root)]

    replay = env.ecm_json(capsys, *args)
    assert replay["asset"] == "case_sla_daily_metrics"
    assert replay["matches"] is True
    recorded = manifest_of(env, capsys, run_id, "case_sla_daily_metrics")["outputs"]
    assert replay["original_checksum"] == recorded["business_checksum"]

    # Another run republishes an upstream partition (even with identical rows).
    _publish_day(env)
    code, out, err = env.ecm(capsys, *args, "--json")
    assert code == 2 and out == ""
    assert "upstream case_events" in err and "republished" in err, err
