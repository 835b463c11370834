"""`ecm manifest`: the durable record of each run, as JSON and for humans."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from tests.test_lifecycle._support import (
    BACKENDS,
    Env,
    backend_env,
    failure_messages,
    materializations,
)

DAY = "2026-09-01"
BAD_DAY = date(2026, 9, 7)
LIFECYCLE = ["PLANNED", "INPUT_LOCKED", "RUNNING", "VALIDATING", "COMMITTING", "PUBLISHED"]
LIFECYCLE_STAMPS = ("planned_at", "input_locked_at", "started_at", "finished_at")


@pytest.fixture(scope="module", params=BACKENDS)
def runs(request, demo_data, tmp_path_factory):
    with backend_env(demo_data[0], tmp_path_factory.mktemp("manifest"), request.param) as env:
        yield _runs(env)


def _runs(env: Env) -> dict:
    ok = env.materialize(["case_events"], partition_key=DAY)
    (meta,) = materializations(ok, "case_events")
    # A landing file without the required `priority` column fails the run that reads it.
    bad_dir = env.root / "landing" / "case_events" / f"ingest_date={BAD_DAY.isoformat()}"
    bad_dir.mkdir(parents=True, exist_ok=True)
    (bad_dir / "events-bad-header.csv").write_text(
        "event_id,case_id,event_type,event_ts,unit_id\n"
        "E9900000301,C990000301,opened,2026-09-07T08:00:00Z,U01\n"
    )
    failed = env.materialize(
        ["case_events"], partition_key=BAD_DAY.isoformat(), expect_success=False
    )
    return {"env": env, "ok": ok.run_id, "meta": meta, "failed": failed}


def _show(env: Env, capsys, run_id: str) -> tuple[dict, list[list]]:
    payload = env.ecm_json(capsys, "manifest", run_id)
    (manifest,) = payload["manifests"]
    return manifest, payload["history"]


def test_manifest_list(runs, capsys) -> None:
    env = runs["env"]
    listed = env.ecm_json(capsys, "manifest")
    by_run = {m["run_id"]: m for m in listed}
    assert set(by_run) == {runs["ok"], runs["failed"].run_id}
    assert by_run[runs["ok"]]["status"] == "PUBLISHED"
    assert by_run[runs["failed"].run_id]["status"] == "FAILED"
    assert all(m["asset"] == "case_events" for m in listed)
    assert env.ecm_json(capsys, "manifest", "--asset", "case_sla_daily_metrics") == []


def test_manifest_of_a_published_run(runs, capsys) -> None:
    env, run_id, meta = runs["env"], runs["ok"], runs["meta"]
    m, _ = _show(env, capsys, run_id)
    assert (m["run_id"], m["asset"], m["status"], m["mode"]) == (
        run_id,
        "case_events",
        "PUBLISHED",
        "publish",
    )
    assert m["code_version"] and "+" in m["code_version"]
    assert m["parameters"]["dagster/partition"] == DAY
    assert m["output_boundary"] == [DAY]
    assert m["status_detail"] is None

    boundary = m["input_boundary"]
    assert boundary["partitions"] == [DAY]
    assert f"run_id={run_id}" in meta["manifest"]  # the partition links its run's evidence
    files = boundary["landing_files"]
    assert len(files) == meta["landing_files"] > 0
    for f in files:
        assert len(f["sha256"]) == 64 and int(f["sha256"], 16) >= 0
        assert f["size_bytes"] > 0 and f["path"].startswith("case_events/ingest_date=")
        assert (env.root / "landing" / f["path"]).is_file()
    assert [(r["name"], r["version"]) for r in boundary["reference"]] == [
        ("org_hierarchy", "v0002")
    ]
    assert all(len(r["sha256"]) == 64 for r in boundary["reference"])

    stamps = [datetime.fromisoformat(m[k]) for k in LIFECYCLE_STAMPS]
    assert stamps == sorted(stamps)
    assert datetime.fromisoformat(boundary["locked_at"]) == stamps[1]

    outputs = m["outputs"]
    assert outputs["table"] == "main.case_events"
    assert outputs["rows"] == meta["dagster/row_count"] > 0
    assert outputs["rows_by_partition"] == {DAY: outputs["rows"]}
    assert outputs["business_checksum"] == meta["business_checksum"]
    assert f":n{outputs['rows']}-" in outputs["business_checksum"]
    assert env.query(
        "SELECT count(*), min(run_id), max(run_id) FROM main.case_events WHERE business_date = ?",
        [date(2026, 9, 1)],
    ) == [(outputs["rows"], run_id, run_id)]


def test_status_history_of_a_published_run(runs, capsys) -> None:
    _, history = _show(runs["env"], capsys, runs["ok"])
    assert all(h[0] == "case_events" for h in history)
    assert [h[2] for h in history] == LIFECYCLE
    assert [h[1] for h in history] == [None, *LIFECYCLE[:-1]]
    times = [datetime.fromisoformat(h[3]) for h in history]
    assert times == sorted(times)


def test_failed_run_names_the_bad_file(runs, capsys) -> None:
    env, result = runs["env"], runs["failed"]
    bad = f"case_events/ingest_date={BAD_DAY.isoformat()}/events-bad-header.csv"
    assert bad in failure_messages(result)
    m, history = _show(env, capsys, result.run_id)
    assert m["status"] == "FAILED"
    assert bad in m["status_detail"] and "priority" in m["status_detail"]
    assert m["finished_at"] is not None and m["outputs"] is None
    assert [h[2] for h in history][-1] == "FAILED"
    assert "PUBLISHED" not in [h[2] for h in history]
    assert not env.query("SELECT * FROM main.case_events WHERE business_date = ?", [BAD_DAY])


def test_human_output_is_readable(runs, capsys) -> None:
    env = runs["env"]
    code, out, err = env.ecm(capsys, "manifest")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "run_id",
        "asset",
        "status",
        "mode",
        "partitions",
        "checksum",
        "planned_at",
    ]
    assert len(lines) == 3
    ok_line = next(line for line in lines if line.startswith(runs["ok"]))
    assert "PUBLISHED" in ok_line and f"{DAY}..{DAY}" in ok_line

    code, out, err = env.ecm(capsys, "manifest", runs["ok"])
    assert code == 0, err
    assert "status history:" in out
    assert "PLANNED -> INPUT_LOCKED" in out and "COMMITTING -> PUBLISHED" in out

    code, out, err = env.ecm(capsys, "manifest", "no-such-run")
    assert code == 2 and "no manifest recorded for run no-such-run" in err
