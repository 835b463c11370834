"""Restatement of a closed month, end to end: publish, close, refuse, restate, diff, rollback.

The steps run in file order on one module-scoped warehouse; each step records that it
passed, and a later step that needs it is skipped (not failed) when it did not.
"""

from __future__ import annotations

from datetime import date

import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.case_sla.contracts import MONTHLY_REPORT
from ecm_assets.publish.protocol import business_checksum
from ecm_assets.publish.versions import Reason
from tests.test_lifecycle._support import (
    BACKENDS,
    MONTH,
    Env,
    backend_env,
    failure_messages,
    manifest_of,
    materializations,
    needs,
    region_of,
    write_landing_csv,
)

MONTHLY = "case_sla_monthly_report"
DAILY = ["case_events", "case_sla_daily_metrics"]
VERSIONS_TABLE = f"main.{MONTHLY}__versions"
LATE_EVENT = {
    "event_id": "E9900000001",
    "case_id": "C990000001",
    "event_type": "opened",
    "event_ts": "2026-09-03T10:00:00Z",
    "unit_id": "U01",
    "priority": "P2",
}
BUSINESS = ", ".join(MONTHLY_REPORT.column_names)


@pytest.fixture(scope="module", params=BACKENDS)
def lc(request, demo_data, tmp_path_factory):
    with backend_env(demo_data[0], tmp_path_factory.mktemp("restatement"), request.param) as env:
        yield {"env": env, "done": set()}


def _versions(env: Env, capsys) -> dict[int, dict]:
    rows = env.ecm_json(capsys, "versions", MONTHLY, MONTH)
    assert all(r["partition"] == MONTH for r in rows)
    return {r["version"]: r for r in rows}


def _view_rows(env: Env) -> list[tuple]:
    return env.query(f"SELECT {BUSINESS}, version FROM main.{MONTHLY} ORDER BY region, unit_id")


def _version_rows(env: Env, version: int) -> list[tuple]:
    return env.query(
        f"SELECT {BUSINESS}, version FROM {VERSIONS_TABLE} WHERE version = ? "
        "ORDER BY region, unit_id",
        [version],
    )


def _stored_rows(env: Env) -> int:
    return env.query(f"SELECT count(*) FROM {VERSIONS_TABLE}")[0][0]


def test_01_initial_publish_is_version_1(lc, capsys) -> None:
    env = lc["env"]
    env.materialize(DAILY, first="2026-09-01", last="2026-09-08")
    result = env.materialize([MONTHLY], partition_key=MONTH)

    versions = _versions(env, capsys)
    assert list(versions) == [1]
    v1 = versions[1]
    assert (v1["status"], v1["reason"], v1["prior"]) == ("PUBLISHED", "INITIAL", "")
    assert v1["run_id"] == result.run_id and v1["rows"] > 0
    (meta,) = materializations(result, MONTHLY)
    assert meta["business_checksum"] == v1["checksum"]

    # The consumer reads a view over the current version, and can see which version it reads.
    assert env.query(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = 'main' AND "
        "table_name = ?",
        [MONTHLY],
    ) == [("VIEW",)]
    columns = env.columns("main", MONTHLY)
    assert "version" in columns
    view = _view_rows(env)
    assert len(view) == v1["rows"]
    assert {r[-1] for r in view} == {1}
    assert view == _version_rows(env, 1)
    lc["v1"] = v1
    lc["done"].add("initial")


def test_02_close_month(lc, capsys) -> None:
    env = needs(lc, "initial")
    closed = env.ecm_json(capsys, "close", MONTHLY, MONTH, "--by", "alice")
    assert closed == {"asset": MONTHLY, "partition": MONTH, "closed": True}
    rows = env.query(
        "SELECT closed_by FROM ecm_ledger.closed_partitions WHERE dataset = ? AND "
        "partition_date = ?",
        [MONTHLY, MONTH],
    )
    assert rows == [("alice",)]
    assert env.query(
        "SELECT action, actor FROM ecm_ledger.version_events WHERE dataset = ? AND "
        "action = 'CLOSE'",
        [MONTHLY],
    ) == [("CLOSE", "alice")]
    lc["done"].add("closed")

    code, out, err = env.ecm(capsys, "close", MONTHLY, MONTH, "--by", "alice")
    assert code == 2 and out == ""
    assert "already closed" in err and MONTHLY in err and MONTH in err

    code, _, err = env.ecm(capsys, "close", "case_sla_daily_metrics", "2026-09-03", "--by", "alice")
    assert code == 2
    assert "closed periods need" in err and "versioned" in err, err
    assert "case_sla_daily_metrics" in err


def test_03_unchanged_rerun_of_closed_month_adds_no_version(lc, capsys) -> None:
    env = needs(lc, "closed")
    result = env.materialize([MONTHLY], partition_key=MONTH)
    (meta,) = materializations(result, MONTHLY)
    assert meta["business_checksum"] == lc["v1"]["checksum"]
    assert meta["version"] == 1
    versions = _versions(env, capsys)
    assert list(versions) == [1] and versions[1]["status"] == "PUBLISHED"
    assert manifest_of(env, capsys, result.run_id)["status"] == "PUBLISHED"


def test_04_correction_without_reason_is_refused(lc, capsys) -> None:
    env = needs(lc, "closed")
    write_landing_csv(env.root, date(2026, 9, 5), "events-correction-001.csv", [LATE_EVENT])
    # The closed month's upstream changes only after review, whoever launched the run.
    held = env.materialize(["case_events"], partition_key="2026-09-03", expect_success=False)
    assert manifest_of(env, capsys, held.run_id, "case_events")["status"] == "HELD"
    env.ecm_json(capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "late file")
    corrected = env.materialize(["case_sla_daily_metrics"], partition_key="2026-09-03")
    assert materializations(corrected, "case_sla_daily_metrics")
    assert env.query(
        "SELECT business_date, unit_id, priority FROM main.case_events WHERE event_id = ?",
        [LATE_EVENT["event_id"]],
    ) == [(date(2026, 9, 3), "U01", "P2")]
    lc["done"].add("corrected")

    result = env.materialize([MONTHLY], partition_key=MONTH, expect_success=False)
    messages = failure_messages(result)
    assert "ClosedPeriodError" in messages
    assert f"{MONTHLY} {MONTH} is closed" in messages
    assert "ecm/restatement_reason" in messages
    assert not materializations(result, MONTHLY)

    versions = _versions(env, capsys)
    assert list(versions) == [1] and versions[1]["status"] == "PUBLISHED"
    assert _view_rows(env) == _version_rows(env, 1)
    manifest = manifest_of(env, capsys, result.run_id)
    assert manifest["status"] == "FAILED"
    assert manifest["status_detail"].startswith("ClosedPeriodError")
    assert f"{MONTH} is closed" in manifest["status_detail"]
    assert "ecm/restatement_reason" in manifest["status_detail"]


def test_05_restatement_with_reason_publishes_version_2(lc, capsys) -> None:
    env = needs(lc, "corrected")
    result = env.materialize(
        [MONTHLY], partition_key=MONTH, tags={"ecm/restatement_reason": "SOURCE_CORRECTION"}
    )
    versions = _versions(env, capsys)
    assert list(versions) == [1, 2]
    v1, v2 = versions[1], versions[2]
    assert (v2["status"], v2["reason"], v2["prior"]) == ("PUBLISHED", "SOURCE_CORRECTION", 1)
    assert v2["run_id"] == result.run_id
    assert v1["status"] == "RESTATED"
    assert v2["checksum"] != v1["checksum"]

    (meta,) = materializations(result, MONTHLY)
    assert meta["version"] == 2
    assert meta["business_checksum"] == v2["checksum"]
    manifest = manifest_of(env, capsys, result.run_id)
    assert (manifest["mode"], manifest["status"]) == ("restatement", "PUBLISHED")
    assert manifest["parameters"]["ecm/restatement_reason"] == "SOURCE_CORRECTION"
    assert manifest["outputs"]["versions"] == {MONTH: 2}

    assert {r[-1] for r in _view_rows(env)} == {2}
    assert env.query(
        "SELECT action, from_version, to_version, run_id, reason FROM ecm_ledger.version_events "
        "WHERE dataset = ? AND action = 'RESTATE'",
        [MONTHLY],
    ) == [("RESTATE", 1, 2, result.run_id, "SOURCE_CORRECTION")]
    lc["v2"] = v2
    lc["done"].add("restated")


def test_06_diff_shows_exactly_the_late_event(lc, capsys) -> None:
    env = needs(lc, "restated")
    region = region_of(env.root, "U01", date(2026, 9, 3))
    # N from version 1's stored rows, not from the package's diff.
    (n,) = env.query(
        f"SELECT cases_opened FROM {VERSIONS_TABLE} WHERE version = 1 AND unit_id = 'U01' AND "
        "region = ?",
        [region],
    )[0]
    # Cross-check N + 1 against the published events the report is built from.
    (opened,) = env.query(
        "SELECT count(*) FROM main.case_events WHERE event_type = 'opened' AND unit_id = 'U01' "
        "AND region = ? AND business_date BETWEEN DATE '2026-09-01' AND DATE '2026-09-30'",
        [region],
    )[0]
    assert opened == n + 1

    diff = env.ecm_json(capsys, "diff", MONTHLY, MONTH, "1", "2")
    assert diff == [
        {
            "region": region,
            "unit_id": "U01",
            "column_name": "cases_opened",
            "old_value": str(n),
            "new_value": str(n + 1),
            "change": "changed",
        }
    ]


def test_07_rollback_to_version_1(lc, capsys) -> None:
    env = needs(lc, "restated")
    row = env.ecm_json(
        capsys, "rollback", MONTHLY, MONTH, "--to", "1", "--reason", "wrong file", "--by", "bob"
    )
    assert row == {"asset": MONTHLY, "partition": MONTH, "from_version": 2, "to_version": 1}
    assert _view_rows(env) == _version_rows(env, 1)
    versions = _versions(env, capsys)
    assert versions[1]["status"] == "PUBLISHED" and versions[2]["status"] == "ROLLED_BACK"
    assert env.query(
        "SELECT from_version, to_version, actor, reason, run_id FROM ecm_ledger.version_events "
        "WHERE dataset = ? AND action = 'ROLLBACK'",
        [MONTHLY],
    ) == [(2, 1, "bob", "wrong file", None)]
    lc["done"].add("rolled_back")

    code, out, err = env.ecm(
        capsys, "rollback", MONTHLY, MONTH, "--to", "9", "--reason", "typo", "--by", "bob"
    )
    assert code == 2 and out == ""
    assert "has no version 9" in err and "[1, 2]" in err, err
    assert _view_rows(env) == _version_rows(env, 1)  # nothing moved
    assert len(env.query("SELECT * FROM ecm_ledger.version_events WHERE action = 'ROLLBACK'")) == 1


def _publish_once_more(env: Env, capsys, expected_version: int, reason: str) -> None:
    """A restatement: it must add exactly one version's rows and touch no stored row."""
    stored_before = _stored_rows(env)
    kept_before = env.query(f"SELECT * FROM {VERSIONS_TABLE} ORDER BY version, region, unit_id")
    result = env.materialize(
        [MONTHLY], partition_key=MONTH, tags={"ecm/restatement_reason": reason}
    )
    (meta,) = materializations(result, MONTHLY)
    assert meta["version"] == expected_version
    new_rows = _version_rows(env, expected_version)
    assert len(new_rows) == meta["dagster/row_count"] > 0
    assert _stored_rows(env) == stored_before + len(new_rows)
    kept_after = env.query(
        f"SELECT * FROM {VERSIONS_TABLE} WHERE version < ? ORDER BY version, region, unit_id",
        [expected_version],
    )
    assert kept_after == kept_before
    assert _view_rows(env) == new_rows


def test_08_publish_adds_one_version_of_rows_whatever_is_kept(lc, capsys) -> None:
    env = needs(lc, "rolled_back")
    # Two versions kept: version 3 (restating version 1, the current one after the rollback).
    _publish_once_more(env, capsys, 3, "LATE_DATA")
    versions = _versions(env, capsys)
    assert versions[3]["prior"] == 1 and versions[3]["reason"] == "LATE_DATA"
    assert versions[1]["status"] == "RESTATED"
    # Three versions kept: roll back again (moves a pointer, stores nothing), then version 4.
    stored = _stored_rows(env)
    env.ecm_json(capsys, "rollback", MONTHLY, MONTH, "--to", "1", "--reason", "again")
    assert _stored_rows(env) == stored
    _publish_once_more(env, capsys, 4, "BUG_FIX")

    # Every version stays readable: its stored rows match the rows and checksum listed.
    versions = _versions(env, capsys)
    assert list(versions) == [1, 2, 3, 4]
    assert [versions[v]["status"] for v in (1, 2, 3, 4)] == [
        "RESTATED",
        "ROLLED_BACK",
        "ROLLED_BACK",
        "PUBLISHED",
    ]
    for number, version in versions.items():
        assert version["rows"] == len(_version_rows(env, number)) > 0
        assert f":n{version['rows']}-" in version["checksum"]
        with open_warehouse(env.warehouse).connect(read_only=True) as conn:
            relation = f"(SELECT * FROM {VERSIONS_TABLE} WHERE version = {number}) AS v"
            assert business_checksum(conn, MONTHLY_REPORT, relation) == version["checksum"]
    # Same inputs, same output: versions 2..4 carry the corrected data, version 1 the original.
    assert versions[2]["checksum"] == versions[3]["checksum"] == versions[4]["checksum"]
    assert versions[1]["checksum"] == lc["v1"]["checksum"]
    total = sum(v["rows"] for v in versions.values())
    assert _stored_rows(env) == total


def _unknown_reason_attempt(lc, capsys) -> dict:
    if "unknown_reason" not in lc:
        env = lc["env"]
        before = _versions(env, capsys)
        result = env.materialize(
            [MONTHLY],
            partition_key=MONTH,
            tags={"ecm/restatement_reason": "TYPO_REASON"},
            expect_success=False,
        )
        lc["unknown_reason"] = {
            "before": before,
            "after": _versions(env, capsys),
            "messages": failure_messages(result),
            "manifest": manifest_of(env, capsys, result.run_id),
        }
    return lc["unknown_reason"]


def test_09_unknown_restatement_reason_is_refused(lc, capsys) -> None:
    needs(lc, "corrected")
    attempt = _unknown_reason_attempt(lc, capsys)
    assert attempt["after"] == attempt["before"]
    assert "TYPO_REASON" in attempt["messages"]
    assert attempt["manifest"]["status"] == "FAILED"
    assert "TYPO_REASON" in attempt["manifest"]["status_detail"]


def test_10_unknown_restatement_reason_message_lists_valid_codes(lc, capsys) -> None:
    needs(lc, "corrected")
    messages = _unknown_reason_attempt(lc, capsys)["messages"]
    for code in (Reason.SOURCE_CORRECTION, Reason.LATE_DATA, Reason.BUG_FIX, Reason.RESTATEMENT):
        assert code.value in messages, messages
