"""Backfill modes end to end on the demo data: dry_run, compare_only and shadow change nothing
consumers read and say exactly what a replace would change; replace then does it; a closed
month corrected automatically is held for review. Steps run in file order on one warehouse."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.orchestration.factory import (
    BACKFILL_MODE_TAG,
    RESTATEMENT_TAG,
    REVIEW_TAG,
    TRIGGER_TAG,
)
from tests.test_lifecycle._support import (
    MONTH,
    Env,
    failure_messages,
    make_env,
    manifest_of,
    materializations,
    needs,
    write_landing_csv,
)

EVENTS = "case_events"
FIRST, LAST = "2026-09-01", "2026-09-08"
LATE_EVENT = {
    "event_id": "E9800000001",
    "case_id": "C980000001",
    "event_type": "opened",
    "event_ts": "2026-09-03T11:00:00Z",
    "unit_id": "U01",
    "priority": "P3",
}
BUSINESS = ", ".join(CASE_EVENTS.column_names)


@pytest.fixture(scope="module")
def bf(demo_data, tmp_path_factory):
    env = make_env(demo_data[0], tmp_path_factory.mktemp("backfill_modes"))
    return {"env": env, "done": set()}


def _published(env: Env) -> list[tuple]:
    return env.query(
        f"SELECT {BUSINESS}, run_id FROM main.{EVENTS} ORDER BY business_date, event_id"
    )


def _quarantine(env: Env) -> list[tuple]:
    return env.query(
        "SELECT run_id, partition_date, reason FROM ecm_quarantine.rejected_rows "
        "WHERE asset = ? ORDER BY ALL",
        [EVENTS],
    )


def _observations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_OBSERVATION":
            obs = event.event_specific_data.asset_observation
            if obs.asset_key.path != [EVENTS]:
                continue  # what the input lock saw of the sources (landing/..., reference/...)
            out[obs.partition] = {k: v.value for k, v in obs.metadata.items()}
    return out


def test_01_publish_then_a_late_file_lands(bf) -> None:
    env = bf["env"]
    env.materialize([EVENTS], first=FIRST, last=LAST)
    bf["published"] = _published(env)
    bf["quarantine"] = _quarantine(env)
    write_landing_csv(env.root, date(2026, 9, 4), "events-late-correction.csv", [LATE_EVENT])
    bf["done"].add("published")


@pytest.mark.parametrize("mode", ["dry_run", "compare_only"])
def test_02_dry_run_and_compare_only_write_nothing_but_the_manifest(bf, capsys, mode) -> None:
    env = needs(bf, "published")
    result = env.materialize([EVENTS], first=FIRST, last=LAST, tags={BACKFILL_MODE_TAG: mode})

    assert materializations(result, EVENTS) == []  # consumers' data did not change
    assert _published(env) == bf["published"]
    assert _quarantine(env) == bf["quarantine"]
    assert env.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_shadow'"
    ) == [(0,)]

    manifest = manifest_of(env, capsys, result.run_id, EVENTS)
    assert manifest["status"] == "VALIDATED" and manifest["mode"] == mode
    outputs = manifest["outputs"]
    assert outputs["changed_partitions"] == ["2026-09-03"]
    by_day = {p["partition"]: p for p in outputs["partitions"]}
    assert len(by_day) == 8
    changed = by_day["2026-09-03"]
    assert (changed["added"], changed["removed"], changed["changed"]) == (1, 0, 0)
    assert changed["staged_rows"] == changed["published_rows"] + 1
    assert all(p["identical"] for d, p in by_day.items() if d != "2026-09-03")
    assert manifest["quality"]["decision"]  # the gate judged it, and the verdict is kept

    observed = _observations(result)
    assert sorted(observed) == [f"2026-09-0{d}" for d in range(1, 9)]
    assert observed["2026-09-03"]["rows_added"] == 1
    assert observed["2026-09-03"]["published"] is False
    assert observed["2026-09-02"]["identical_to_published"] is True


def test_03_shadow_writes_only_the_shadow_schema(bf, capsys) -> None:
    env = needs(bf, "published")
    result = env.materialize([EVENTS], first=FIRST, last=LAST, tags={BACKFILL_MODE_TAG: "shadow"})

    assert materializations(result, EVENTS) == []
    assert _published(env) == bf["published"]
    assert _quarantine(env) == bf["quarantine"]
    shadow = env.query(
        f"SELECT {BUSINESS} FROM ecm_shadow.{EVENTS} ORDER BY business_date, event_id"
    )
    assert len(shadow) == len(bf["published"]) + 1
    assert {r[0] for r in shadow} - {r[0] for r in bf["published"]} == {LATE_EVENT["event_id"]}
    assert {r[-1] for r in env.query(f"SELECT run_id FROM ecm_shadow.{EVENTS}")} == {result.run_id}
    manifest = manifest_of(env, capsys, result.run_id, EVENTS)
    assert manifest["status"] == "SHADOWED"
    assert manifest["outputs"]["shadow_table"] == f"ecm_shadow.{EVENTS}"
    assert _observations(result)["2026-09-05"]["shadow_table"] == f"ecm_shadow.{EVENTS}"
    bf["shadow_rows"] = shadow
    bf["done"].add("shadow")


def test_04_replace_publishes_what_shadow_showed(bf, capsys) -> None:
    env = needs(bf, "shadow")
    result = env.materialize([EVENTS], first=FIRST, last=LAST, tags={BACKFILL_MODE_TAG: "replace"})
    assert len(materializations(result, EVENTS)) == 8  # one per published partition
    assert [r[:-1] for r in _published(env)] == bf["shadow_rows"]
    assert manifest_of(env, capsys, result.run_id, EVENTS)["status"] == "PUBLISHED"


def _restarts(result: dg.ExecuteInProcessResult) -> int:
    return sum(e.event_type_value == "STEP_RESTARTED" for e in result.all_events)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({BACKFILL_MODE_TAG: "overwrite"}, "is not a backfill mode"),
        ({BACKFILL_MODE_TAG: "restatement"}, RESTATEMENT_TAG),
        ({REVIEW_TAG: "sometimes"}, REVIEW_TAG),
    ],
)
def test_05_bad_mode_tags_fail_before_compute_and_are_not_retried(bf, tags, expected) -> None:
    env = needs(bf, "published")
    result = env.materialize([EVENTS], partition_key=FIRST, tags=tags, expect_success=False)
    text = failure_messages(result)
    assert expected in text, text
    assert _restarts(result) == 0


def test_06_automated_correction_of_a_closed_month_is_held_for_review(bf, capsys) -> None:
    env = needs(bf, "published")
    monthly = "case_sla_monthly_report"
    env.materialize(["case_sla_daily_metrics"], first=FIRST, last=LAST)
    env.materialize([monthly], partition_key=MONTH)
    # A correction for a day of the month, recomputed upstream (before the close: after it,
    # the upstream run itself would be held, see test_closed_upstream) ...
    more = dict(LATE_EVENT, event_id="E9800000002", case_id="C980000002", event_type="opened")
    write_landing_csv(env.root, date(2026, 9, 5), "events-closed-correction.csv", [more])
    env.materialize([EVENTS, "case_sla_daily_metrics"], first=FIRST, last=LAST)
    assert env.ecm_json(capsys, "close", monthly, MONTH, "--by", "alice")["closed"]
    versions_before = env.ecm_json(capsys, "versions", monthly, MONTH)
    # ... and the restatement the landing sensor requests for the closed month.
    result = env.materialize(
        [monthly],
        partition_key=MONTH,
        tags={
            RESTATEMENT_TAG: "SOURCE_CORRECTION",
            REVIEW_TAG: "closed_periods",
            TRIGGER_TAG: "landing_sensor",
        },
        expect_success=False,
    )
    assert "MANUAL_REVIEW" in failure_messages(result)
    assert _restarts(result) == 0
    manifest = manifest_of(env, capsys, result.run_id, monthly)
    assert manifest["status"] == "HELD"
    rules = {f["rule"] for f in manifest["quality"]["failures"]}
    assert "closed_period_review" in rules
    assert env.ecm_json(capsys, "versions", monthly, MONTH) == versions_before
    held = env.ecm_json(capsys, "review", "list")
    assert any(h["run_id"] == result.run_id for h in held), held


def test_07_ecm_materialize_sets_the_mode_tag(bf, capsys, monkeypatch) -> None:
    env = needs(bf, "published")
    monkeypatch.setenv("ECM_DATA_DIR", str(env.root))
    before = _published(env)
    payload = env.ecm_json(
        capsys, "materialize", "--select", EVENTS, "--partition", "2026-09-02", "--mode", "dry_run"
    )
    assert payload["success"] and payload["tags"] == {BACKFILL_MODE_TAG: "dry_run"}
    assert _published(env) == before
    assert manifest_of(env, capsys, payload["run_id"], EVENTS)["status"] == "VALIDATED"
