"""An event re-sent with another date after its old date stopped reading files (issue 10 item 3,
the gap left open): it is never published on two dates, nothing is lost, counts reconcile, and
the decision replays. The steps run in file order on one module-scoped warehouse."""

from __future__ import annotations

from datetime import date

import pytest

from ecm_assets.contracts.moves import REASON
from tests.test_lifecycle._support import (
    BACKENDS,
    backend_env,
    manifest_of,
    needs,
    write_landing_csv,
)

EVENTS = "case_events"


def _event(event_id: str, ts: str) -> dict[str, str]:
    return {
        "event_id": event_id,
        "case_id": f"C{event_id[1:]}",
        "event_type": "opened",
        "event_ts": ts,
        "unit_id": "U01",
        "priority": "P3",
    }


@pytest.fixture(scope="module", params=BACKENDS)
def moved(request, demo_data, tmp_path_factory):
    with backend_env(demo_data[0], tmp_path_factory.mktemp("moved-events"), request.param) as env:
        yield {"env": env, "done": set()}


def _published(env, event_id: str) -> list[tuple]:
    return env.query(
        f"SELECT business_date, run_id FROM main.{EVENTS} WHERE event_id = ? ORDER BY 1",
        [event_id],
    )


def _quarantined(env, event_id: str) -> list[tuple]:
    return env.query(
        # The quarantine keeps partition keys; a daily partition's key is its date.
        "SELECT partition_date::DATE, reason, failure_case FROM ecm_quarantine.rejected_rows "
        "WHERE asset = ? AND original_row LIKE ? ORDER BY 1",
        [EVENTS, f'%"{event_id}"%'],
    )


def _balanced(manifest: dict) -> bool:
    """Every partition's identity input = accepted + quarantined + duplicate holds."""
    entries = manifest["reconciliation"]["per_partition"].values()
    return bool(entries) and all(
        e["identity_holds"] and e["input"] == e["accepted"] + e["quarantined"] + e["duplicate"]
        for e in entries
    )


def test_01_resend_moved_beyond_the_lateness_window_stays_on_its_published_date(moved, capsys):
    env = moved["env"]
    write_landing_csv(
        env.root, date(2026, 9, 2), "moved-a.csv", [_event("EM9000001", "2026-09-02T09:00:00Z")]
    )
    first = env.materialize([EVENTS], partition_key="2026-09-02")
    assert _published(env, "EM9000001") == [(date(2026, 9, 2), first.run_id)]
    # The resend arrives on 09-12, dated 09-12: 09-02 reads files up to 09-07 only, so its
    # run can never drop the old row. Publishing the new one would put E1 on two dates.
    write_landing_csv(
        env.root,
        date(2026, 9, 12),
        "moved-b.csv",
        # With 29 other new events, so 09-12 stays under the quarantine-rate threshold.
        [_event("EM9000001", "2026-09-12T09:00:00Z")]
        + [_event(f"EM90001{i:02d}", "2026-09-12T10:00:00Z") for i in range(29)],
    )

    late = env.materialize([EVENTS], partition_key="2026-09-12")

    assert _published(env, "EM9000001") == [(date(2026, 9, 2), first.run_id)]
    ((day, reason, why),) = _quarantined(env, "EM9000001")
    assert (day, reason) == (date(2026, 9, 12), REASON)
    assert "2026-09-02" in why and "moved-a.csv" in why
    manifest = manifest_of(env, capsys, late.run_id, EVENTS)
    assert manifest["status"] == "PUBLISHED" and _balanced(manifest), manifest["reconciliation"]
    (entry,) = manifest["reconciliation"]["per_partition"].values()
    assert (entry["input"], entry["accepted"], entry["quarantined"]) == (30, 29, 1)
    assert manifest["input_boundary"]["published_elsewhere"][0]["key"] == "EM9000001"
    moved.update(late=late.run_id)
    moved["done"].add("beyond")


def test_02_the_decision_replays_from_the_boundary(moved, capsys):
    env = needs(moved, "beyond")
    code, out, err = env.ecm(
        capsys, "replay", moved["late"], "--asset", EVENTS, "--data", str(env.root)
    )
    assert code == 0, out + err


def test_03_a_move_within_the_window_still_moves_the_event(moved, capsys):
    env = needs(moved, "beyond")
    write_landing_csv(
        env.root, date(2026, 9, 3), "moved-c.csv", [_event("EM9000002", "2026-09-03T09:00:00Z")]
    )
    env.materialize([EVENTS], partition_key="2026-09-03")
    # Re-sent on 09-05 dated 09-05: 09-03 reads files up to 09-08, so it drops the old row
    # when it reruns (the landing sensor requests both dates).
    write_landing_csv(
        env.root, date(2026, 9, 5), "moved-d.csv", [_event("EM9000002", "2026-09-05T09:00:00Z")]
    )
    new = env.materialize([EVENTS], partition_key="2026-09-05")
    old = env.materialize([EVENTS], partition_key="2026-09-03")
    assert _published(env, "EM9000002") == [(date(2026, 9, 5), new.run_id)]
    assert _quarantined(env, "EM9000002") == []
    assert _balanced(manifest_of(env, capsys, old.run_id, EVENTS))


def test_04_published_first_stays_whichever_date_ran_first(moved, capsys):
    """Runs in the other order (the later date published first, e.g. a backfill): the
    earlier row's run finds the later arrival published where it cannot drop it, and
    quarantines its own copy. Still one date, nothing lost."""
    env = needs(moved, "beyond")
    write_landing_csv(
        env.root, date(2026, 9, 4), "moved-e.csv", [_event("EM9000003", "2026-09-04T09:00:00Z")]
    )
    write_landing_csv(
        env.root, date(2026, 9, 13), "moved-f.csv", [_event("EM9000003", "2026-09-13T09:00:00Z")]
    )
    later = env.materialize([EVENTS], partition_key="2026-09-13")
    earlier = env.materialize([EVENTS], partition_key="2026-09-04")
    assert _published(env, "EM9000003") == [(date(2026, 9, 13), later.run_id)]
    ((day, reason, _),) = _quarantined(env, "EM9000003")
    assert (day, reason) == (date(2026, 9, 4), REASON)
    assert _balanced(manifest_of(env, capsys, earlier.run_id, EVENTS))
