"""A landing correction into a closed month (issue 10 item 4): reviewed once, before anything
of the chain changes. The steps run in file order on one module-scoped warehouse."""

from __future__ import annotations

from datetime import date

import pytest

from ecm_assets.case_sla.datasets import DATASETS
from ecm_assets.operations.sensors import landing_run_requests
from ecm_assets.operations.triggers import CLOSED_PERIOD
from tests.test_lifecycle._support import (
    BACKENDS,
    MONTH,
    backend_env,
    failure_messages,
    manifest_of,
    needs,
    write_landing_csv,
)

EVENTS = "case_events"
DAILY_METRICS = "case_sla_daily_metrics"
MONTHLY = "case_sla_monthly_report"
DAY = date(2026, 9, 3)


def _sensor_tags(n: int) -> dict[str, str]:
    """The tags the landing sensor gives the run of a change to DAY in a closed month."""
    events = next(d for d in DATASETS if d.contract.name == EVENTS)
    (request,) = landing_run_requests(events, {CLOSED_PERIOD: [DAY]}, f"digest{n}")
    return dict(request.tags)


def _correction(prefix: str) -> list[dict[str, str]]:
    base = {"case_id": f"C{prefix}000001", "unit_id": "U01", "priority": "P3"}
    return [
        {
            **base,
            "event_id": f"E{prefix}O000001",
            "event_type": "opened",
            "event_ts": "2026-09-03T08:00:00Z",
        }
    ]


@pytest.fixture(scope="module", params=BACKENDS)
def chain(request, demo_data, tmp_path_factory):
    with backend_env(
        demo_data[0], tmp_path_factory.mktemp("closed-upstream"), request.param
    ) as env:
        yield {"env": env, "done": set()}


def _state(env) -> tuple:
    """What readers see of the chain for the closed month."""
    return (
        env.query(
            f"SELECT count(*), min(run_id) FROM main.{EVENTS} WHERE business_date = ?", [DAY]
        ),
        env.query(
            f"SELECT sum(cases_opened), min(run_id) FROM main.{DAILY_METRICS} "
            "WHERE business_date = ?",
            [DAY],
        ),
        env.query(f"SELECT sum(cases_opened), max(version) FROM main.{MONTHLY}"),
    )


def test_01_landing_correction_into_a_closed_month_holds_its_upstream(chain, capsys):
    env = chain["env"]
    env.materialize([EVENTS, DAILY_METRICS], first="2026-09-01", last="2026-09-04")
    certified = env.materialize([MONTHLY], partition_key=MONTH)
    env.ecm_json(capsys, "close", MONTHLY, MONTH, "--by", "alice")
    before = _state(env)
    write_landing_csv(env.root, DAY, "late-closed-1.csv", _correction("81"))

    held = env.materialize(
        [EVENTS], partition_key=DAY.isoformat(), tags=_sensor_tags(1), expect_success=False
    )

    errors = failure_messages(held)
    assert "MANUAL_REVIEW" in errors and f"feeds {MONTHLY} {MONTH}" in errors
    assert manifest_of(env, capsys, held.run_id, EVENTS)["status"] == "HELD"
    # case_events keeps its prior rows: nothing of the chain changed unattended.
    assert _state(env) == before
    chain.update(held=held.run_id, certified=certified.run_id, before=before)
    chain["done"].add("held")


def test_02_rejecting_it_leaves_the_certified_period_and_its_upstream_agreeing(chain, capsys):
    env = needs(chain, "held")
    env.ecm_json(capsys, "review", "reject", chain["held"], "--by", "bob", "--note", "wrong batch")
    assert _state(env) == chain["before"]
    # The certified run can still be replayed from what is published.
    code, out, err = env.ecm(capsys, "replay", chain["certified"], "--asset", MONTHLY)
    assert code == 0, out + err
    chain["done"].add("rejected")


def test_03_approving_it_restates_the_chain_without_a_second_review(chain, capsys):
    env = needs(chain, "rejected")
    tags = _sensor_tags(2)
    held = env.materialize([EVENTS], partition_key=DAY.isoformat(), tags=tags, expect_success=False)
    assert manifest_of(env, capsys, held.run_id, EVENTS)["status"] == "HELD"
    env.ecm_json(capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "verified")
    after_events = _state(env)[0]
    assert after_events[0][1] == held.run_id

    # The dependency sensor propagates the correction's tags downstream.
    daily = env.materialize([DAILY_METRICS], partition_key=DAY.isoformat(), tags=tags)
    monthly = env.materialize([MONTHLY], partition_key=MONTH, tags=tags)

    _, metrics, report = _state(env)
    assert metrics[0][1] == daily.run_id
    assert metrics[0][0] == chain["before"][1][0][0] + 1
    assert report[0] == (chain["before"][2][0][0] + 1, 2)
    assert manifest_of(env, capsys, monthly.run_id, MONTHLY)["status"] == "PUBLISHED"
    chain["done"].add("restated")


def test_04_untagged_manual_materialize_of_a_closed_months_upstream_is_held(chain, capsys):
    """The rule holds for every run, not only the landing sensor's: a plain materialize (UI,
    `dagster asset materialize`) that would change a closed month's upstream is held too."""
    env = needs(chain, "restated")
    before = _state(env)
    # Same rows as published: nothing would change, so nothing is held.
    same = env.materialize([EVENTS], partition_key=DAY.isoformat())
    assert manifest_of(env, capsys, same.run_id, EVENTS)["status"] == "PUBLISHED"
    write_landing_csv(env.root, DAY, "late-closed-3.csv", _correction("83"))

    held = env.materialize([EVENTS], partition_key=DAY.isoformat(), expect_success=False)

    errors = failure_messages(held)
    assert "MANUAL_REVIEW" in errors and f"feeds {MONTHLY} {MONTH}" in errors
    assert manifest_of(env, capsys, held.run_id, EVENTS)["status"] == "HELD"
    assert _state(env)[1:] == before[1:]
    assert _state(env)[0][0][0] == before[0][0][0]
    # A downstream run from the still-certified upstream changes nothing and is not held.
    env.materialize([DAILY_METRICS], partition_key=DAY.isoformat())

    # Approving it lets the chain follow without a second review; the closed report itself
    # still changes only as a restatement with a reason.
    env.ecm_json(capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "ok")
    daily = env.materialize([DAILY_METRICS], partition_key=DAY.isoformat())
    assert manifest_of(env, capsys, daily.run_id, DAILY_METRICS)["status"] == "PUBLISHED"
    refused = env.materialize([MONTHLY], partition_key=MONTH, expect_success=False)
    assert "restatement" in failure_messages(refused).lower()
    monthly = env.materialize(
        [MONTHLY], partition_key=MONTH, tags={"ecm/restatement_reason": "SOURCE_CORRECTION"}
    )
    assert manifest_of(env, capsys, monthly.run_id, MONTHLY)["status"] == "PUBLISHED"
    _, metrics, report = _state(env)
    assert metrics[0] == (before[1][0][0] + 1, daily.run_id)
    assert report[0] == (before[2][0][0] + 1, before[2][0][1] + 1)


def test_05_a_period_closed_after_the_run_was_judged_is_still_not_changed(
    chain, capsys, monkeypatch
):
    """The hold is decided when the run is judged; a close that lands between that judgement
    and the publish must not let the change through. The protocol decides the rule again
    under the publish lock, on what is closed and published then."""
    env = needs(chain, "restated")
    before = _state(env)
    write_landing_csv(env.root, DAY, "late-closed-4.csv", _correction("84"))
    # The judgement saw no closed period (as if the month was closed just after it).
    monkeypatch.setattr(
        "ecm_assets.orchestration.factory._hold_closed_changes", lambda *a, **k: a[4]
    )

    refused = env.materialize([EVENTS], partition_key=DAY.isoformat(), expect_success=False)

    errors = failure_messages(refused)
    assert "closed period" in errors and f"feeds {MONTHLY} {MONTH}" in errors
    assert manifest_of(env, capsys, refused.run_id, EVENTS)["status"] == "FAILED"
    assert _state(env) == before
