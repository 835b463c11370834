"""The quality gate through Dagster on the demo data: routing, partial publish, manual review.

The steps run in file order on one module-scoped warehouse, like the restatement tests.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import duckdb
import pytest

from tests.test_lifecycle._support import (
    MONTH,
    failure_messages,
    make_env,
    manifest_of,
    needs,
    write_landing_csv,
)

EVENTS = "case_events"
DAILY = [EVENTS, "case_sla_daily_metrics"]
MONTHLY = "case_sla_monthly_report"


@pytest.fixture(scope="module")
def qa(demo_data, tmp_path_factory):
    env = make_env(demo_data[0], tmp_path_factory.mktemp("quality"))
    return {"env": env, "done": set()}


def _check_evaluations(
    result: dg.ExecuteInProcessResult, name: str, asset: str = EVENTS
) -> dict[str, object]:
    """The evaluations of one asset check of an asset in a run, by partition."""
    out = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if evaluation.check_name == name and evaluation.asset_key.path == [asset]:
                out[evaluation.partition] = evaluation
    return out


def _breaching_cases(prefix: str, n: int) -> list[dict[str, str]]:
    """P1 cases opened on 09-01 and resolved two days later: every one breaches its SLA."""
    events = []
    for i in range(n):
        case = f"C{prefix}{i:06d}"
        base = {"case_id": case, "unit_id": "U01", "priority": "P1"}
        events.append(
            {
                **base,
                "event_id": f"E{prefix}O{i:06d}",
                "event_type": "opened",
                "event_ts": "2026-09-01T01:00:00Z",
            }
        )
        events.append(
            {
                **base,
                "event_id": f"E{prefix}R{i:06d}",
                "event_type": "resolved",
                "event_ts": "2026-09-03T01:00:00Z",
            }
        )
    return events


def test_01_range_run_quarantines_per_partition_and_reconciles(qa, capsys) -> None:
    env = qa["env"]
    result = env.materialize(DAILY, first="2026-09-01", last="2026-09-08")
    manifest = manifest_of(env, capsys, result.run_id, EVENTS)
    assert manifest["status"] == "PUBLISHED"
    assert manifest["quality"]["decision"] == "QUARANTINE_RECORDS"
    per_partition = manifest["reconciliation"]["per_partition"]
    assert len(per_partition) == 8
    for day, entry in per_partition.items():
        assert entry["identity_holds"], day
        assert entry["input"] == entry["accepted"] + entry["quarantined"] + entry["duplicate"]
        published = env.query(
            "SELECT count(*) FROM main.case_events WHERE business_date = ?", [day]
        )[0][0]
        quarantined = env.query(
            "SELECT count(*) FROM ecm_quarantine.rejected_rows WHERE asset = ? AND "
            "partition_date = ?",
            [EVENTS, day],
        )[0][0]
        assert (published, quarantined) == (entry["accepted"], entry["quarantined"]), day
    # Each rule is one check evaluated once per run, listing the partitions it failed;
    # quality_gate is evaluated per partition of the range with that partition's verdict.
    verdicts = _check_evaluations(result, "quality_gate")
    assert sorted(verdicts) == [f"2026-09-0{d}" for d in range(1, 9)]
    [schema] = _check_evaluations(result, "schema").values()
    assert not schema.passed and schema.severity == dg.AssetCheckSeverity.WARN
    failed = schema.metadata["failed_partitions"].value
    assert failed and all(entry["failed"] > 0 for entry in failed.values())
    for day, entry in failed.items():
        assert not verdicts[day].passed
        assert verdicts[day].metadata["failed_rules"].value["schema"]["failed"] == entry["failed"]
    [control] = _check_evaluations(result, "opened_events", "case_sla_daily_metrics").values()
    assert control.passed and control.metadata["partitions_checked"].value == 8
    metrics = _check_evaluations(result, "quality_gate", "case_sla_daily_metrics")
    assert len(metrics) == 8 and all(e.passed for e in metrics.values())

    # `ecm quarantine` lists a partition's rows with the rule that caught each.
    day = "2026-09-03"
    rows = env.ecm_json(capsys, "quarantine", EVENTS, day)
    assert len(rows) == per_partition[day]["quarantined"] > 0
    assert {r["reason"] for r in rows} <= {
        "missing_case_id",
        "unknown_event_type",
        "unknown_priority",
        "unknown_unit_id",
        "unparseable_event_ts",
        "malformed_line",
        "missing_event_id",
        "event_ts_outside_arrival_horizon",
    }
    assert all(r["run_id"] == result.run_id and r["original_row"] for r in rows)
    qa["done"].add("published")


def test_02_blocked_partition_publishes_the_rest_and_stops_downstream(qa, capsys) -> None:
    env = needs(qa, "published")
    before = env.query("SELECT count(*) FROM main.case_events WHERE business_date = '2026-09-08'")
    # 09-09 and 09-10 hold no business events (only unparseable rows land there): empty days.
    result = env.materialize(DAILY, first="2026-09-08", last="2026-09-10", expect_success=False)
    errors = failure_messages(result)
    assert "FAIL_PARTITION" in errors and "2026-09-09" in errors and "2026-09-10" in errors
    assert "row_count" in errors
    # The published partition's materialization is recorded; the blocked ones are not.
    materialized = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == [EVENTS]
    }
    assert materialized == {"2026-09-08"}
    assert (
        env.query("SELECT count(*) FROM main.case_events WHERE business_date = '2026-09-08'")
        == before
    )
    assert env.query(
        "SELECT count(*) FROM main.case_events WHERE business_date >= '2026-09-09'"
    ) == [(0,)]
    # Downstream of the failed step does not run.
    assert not [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["case_sla_daily_metrics"]
    ]
    [row_count] = _check_evaluations(result, "row_count").values()
    assert not row_count.passed and row_count.severity == dg.AssetCheckSeverity.ERROR
    assert set(row_count.metadata["failed_partitions"].value) == {"2026-09-09", "2026-09-10"}
    verdicts = _check_evaluations(result, "quality_gate")
    assert verdicts["2026-09-09"].severity == dg.AssetCheckSeverity.ERROR
    assert "row_count" in verdicts["2026-09-09"].metadata["failed_rules"].value
    assert (
        "row_count"
        not in verdicts["2026-09-08"].metadata.get("failed_rules", dg.MetadataValue.json({})).value
    )
    manifest = manifest_of(env, capsys, result.run_id, EVENTS)
    assert manifest["status"] == "PUBLISHED"
    assert "blocked by the quality gate" in manifest["status_detail"]
    assert set(manifest["outputs"]["blocked_partitions"]) == {"2026-09-09", "2026-09-10"}
    # Their rejected rows are kept as evidence, with the reason the partition was blocked.
    blocked = env.ecm_json(capsys, "quarantine", EVENTS, "2026-09-09", "--blocked")
    assert blocked and all(r["blocked_reason"].startswith("row_count") for r in blocked)


def test_03_closed_month_restatement_beyond_threshold_is_held(qa, capsys) -> None:
    env = needs(qa, "published")
    first = env.materialize([MONTHLY], partition_key=MONTH)
    before = env.query(f"SELECT sum(sla_breached) FROM main.{MONTHLY}")[0][0]
    write_landing_csv(env.root, date(2026, 9, 3), "late-review-1.csv", _breaching_cases("91", 120))
    env.materialize(DAILY, first="2026-09-01", last="2026-09-03")
    # Closed only now: once closed, the upstream rerun itself would be held for review
    # (docs/lifecycle.md); this test is about the report's own drift rule.
    env.ecm_json(capsys, "close", MONTHLY, MONTH, "--by", "alice")
    held = env.materialize(
        [MONTHLY],
        partition_key=MONTH,
        tags={"ecm/restatement_reason": "SOURCE_CORRECTION"},
        expect_success=False,
    )
    errors = failure_messages(held)
    assert "MANUAL_REVIEW" in errors and "HELD" in errors and "ecm review approve" in errors
    manifest = manifest_of(env, capsys, held.run_id, MONTHLY)
    assert manifest["status"] == "HELD"
    assert manifest["quality"]["decision"] == "MANUAL_REVIEW"
    (failure,) = [f for f in manifest["quality"]["failures"] if f["severity"] == "MANUAL_REVIEW"]
    assert failure["rule"] == "drift_sla_breached" and "closed period" in failure["message"]
    # Nothing changed for readers, and no materialization was recorded.
    assert env.query(f"SELECT sum(sla_breached) FROM main.{MONTHLY}")[0][0] == before
    assert not held.get_asset_materialization_events()
    listed = env.ecm_json(capsys, "review", "list")
    assert [h["run_id"] for h in listed] == [held.run_id]
    assert listed[0]["rows"] == manifest["outputs"]["rows"] > 0
    qa.update(held=held.run_id, first=first.run_id, before=before)
    qa["done"].add("held")


def test_04_approve_publishes_exactly_the_held_rows(qa, capsys) -> None:
    env = needs(qa, "held")
    run_id = qa["held"]
    held_rows = env.query(
        f"SELECT * EXCLUDE (run_id, as_of) FROM ecm_review.{MONTHLY}__"
        f"{run_id.replace('-', '')[:32]} ORDER BY region, unit_id"
    )
    code, _, err = env.ecm(capsys, "review", "approve", run_id)
    assert code == 2 and "--note" in err  # a decision needs a reason
    approved = env.ecm_json(
        capsys, "review", "approve", run_id, "--by", "bob", "--note", "late batch verified"
    )
    assert approved["decision"] == "APPROVED" and approved["published_rows"] == len(held_rows)
    columns = ", ".join(f'"{c}"' for c in ("report_month", "region", "unit_id"))
    published = env.query(
        f"SELECT * EXCLUDE (run_id, as_of, version) FROM main.{MONTHLY} ORDER BY {columns}"
    )
    assert published == held_rows
    assert env.query(f"SELECT sum(sla_breached) FROM main.{MONTHLY}")[0][0] == qa["before"] + 120
    manifest = manifest_of(env, capsys, run_id, MONTHLY)
    assert manifest["status"] == "PUBLISHED"
    assert manifest["outputs"]["approval"] == {"actor": "bob", "note": "late batch verified"}
    versions = env.ecm_json(capsys, "versions", MONTHLY, MONTH)
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[-1]["run_id"] == run_id and versions[-1]["reason"] == "SOURCE_CORRECTION"
    assert env.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_review'"
    ) == [(0,)]
    assert env.ecm_json(capsys, "review", "list") == []
    qa["done"].add("approved")


def test_05_reject_ends_the_run_and_publishes_nothing(qa, capsys) -> None:
    env = needs(qa, "approved")
    write_landing_csv(env.root, date(2026, 9, 3), "late-review-2.csv", _breaching_cases("92", 120))
    # The month is closed now: its upstream changes only once a person approved it.
    upstream = env.materialize(
        [EVENTS], first="2026-09-01", last="2026-09-03", expect_success=False
    )
    assert manifest_of(env, capsys, upstream.run_id, EVENTS)["status"] == "HELD"
    env.ecm_json(capsys, "review", "approve", upstream.run_id, "--by", "bob", "--note", "ok")
    env.materialize(DAILY[1:], first="2026-09-01", last="2026-09-03")
    before = env.query(f"SELECT * FROM main.{MONTHLY} ORDER BY region, unit_id")
    held = env.materialize(
        [MONTHLY],
        partition_key=MONTH,
        tags={"ecm/restatement_reason": "SOURCE_CORRECTION"},
        expect_success=False,
    )
    assert manifest_of(env, capsys, held.run_id, MONTHLY)["status"] == "HELD"
    # Held rows edited after the gate judged them are refused, and the run stays HELD.
    held_table = f"ecm_review.{MONTHLY}__{held.run_id.replace('-', '')[:32]}"
    with duckdb.connect(str(env.warehouse)) as conn:
        conn.execute(f"UPDATE {held_table} SET sla_breached = sla_breached + 1")
    code, _, err = env.ecm(
        capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "looks fine"
    )
    assert code == 2 and "modified" in err and "ecm_review" in err
    assert manifest_of(env, capsys, held.run_id, MONTHLY)["status"] == "HELD"
    assert env.query(f"SELECT * FROM main.{MONTHLY} ORDER BY region, unit_id") == before
    rejected = env.ecm_json(
        capsys, "review", "reject", held.run_id, "--by", "carol", "--note", "duplicate feed"
    )
    assert rejected == {"run_id": held.run_id, "decision": "REJECTED", "status": "REJECTED"}
    manifest = manifest_of(env, capsys, held.run_id, MONTHLY)
    assert manifest["status"] == "REJECTED" and "carol" in manifest["status_detail"]
    assert env.query(f"SELECT * FROM main.{MONTHLY} ORDER BY region, unit_id") == before
    # A rejected run cannot be approved afterwards.
    code, _, err = env.ecm(
        capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "changed my mind"
    )
    assert code == 2 and "REJECTED" in err
