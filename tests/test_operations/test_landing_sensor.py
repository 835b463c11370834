"""The landing sensor: which partitions a file touches, correction classes, durable cursor and
stable run keys; evaluated in-process against a real instance and a copy of the demo data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.contracts.boundaries import LandingFile
from ecm_assets.contracts.periods import contiguous_ranges
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.operations.triggers import (
    CLOSED_PERIOD,
    LOOKBACK,
    OPEN_WINDOW,
    PublishedIndex,
    change_digest,
    classify,
    file_dates,
    load_cursor,
    next_schedule_date,
    scan,
)
from ecm_assets.orchestration.factory import (
    CORRECTION_CLASS_TAG,
    RESTATEMENT_TAG,
    REVIEW_TAG,
    TRIGGER_TAG,
)
from ecm_assets.publish.versions import ensure_version_ledger
from tests._warehouses import BACKENDS, warehouse_for

SOURCE = CASE_EVENTS.landing
HEADER = "event_id,case_id,event_type,event_ts,unit_id,priority\n"
SENSOR = "case_events__landing_files"


def _write(root: Path, ingest: str, name: str, rows: list[str]) -> Path:
    path = root / "landing" / "case_events" / f"ingest_date={ingest}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def _event(event_id: str, ts: str) -> str:
    return f"{event_id},C{event_id[1:]},opened,{ts},U01,P2"


# -- pure parts --------------------------------------------------------------------------


def test_file_dates_follow_the_transforms_attribution(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "2026-09-10",
        "a.csv",
        [
            _event("E1", "2026-09-10T08:00:00Z"),  # same day
            _event("E2", "2026-09-06T23:59:00Z"),  # 4 days late: its event date
            _event("E3", "2026-08-01T10:00:00Z"),  # beyond lateness: the ingest date
            _event("E4", "not-a-time"),  # unparseable: the ingest date
            _event("E5", "2026-09-07T23:30:00-05:00"),  # 09-08 in UTC
        ],
    )
    (f,) = _files(tmp_path)
    dates, note = file_dates(tmp_path / "landing", SOURCE, f)
    assert dates == (date(2026, 9, 6), date(2026, 9, 8), date(2026, 9, 10))
    assert note == ""


def test_unreadable_file_feeds_its_ingest_date(tmp_path: Path) -> None:
    path = _write(tmp_path, "2026-09-10", "bad.csv", [])
    path.write_bytes(b"event_id,case_id\n\xff\xfe,1\n")
    (f,) = _files(tmp_path)
    dates, note = file_dates(tmp_path / "landing", SOURCE, f)
    assert dates == (date(2026, 9, 10),)
    assert "bad.csv" in note


def _files(root: Path) -> list[LandingFile]:
    from ecm_assets.adapters.landing import list_landing_files

    return list_landing_files(root / "landing", "case_events", date.min, date.max)


def test_scan_sees_new_changed_and_deleted_files_by_content(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    a = _write(tmp_path, "2026-09-10", "a.csv", [_event("E1", "2026-09-09T08:00:00Z")])
    _write(tmp_path, "2026-09-11", "b.csv", [_event("E2", "2026-09-11T08:00:00Z")])
    changes, seen = scan(landing, SOURCE, {})
    assert {(c.path.split("/")[-1], c.kind, c.dates) for c in changes} == {
        ("a.csv", "new", (date(2026, 9, 9),)),
        ("b.csv", "new", (date(2026, 9, 11),)),
    }
    # Same bytes, new mtime: no change.
    os.utime(a, (1_000_000_000, 1_000_000_000))
    assert scan(landing, SOURCE, seen)[0] == []
    # New bytes: the new dates plus the dates the old bytes fed.
    a.write_text(HEADER + _event("E1", "2026-09-08T08:00:00Z") + "\n")
    changes, seen2 = scan(landing, SOURCE, seen)
    assert [(c.kind, c.dates) for c in changes] == [
        ("changed", (date(2026, 9, 8), date(2026, 9, 9)))
    ]
    # Deleted: the dates it fed change too.
    a.unlink()
    changes, seen3 = scan(landing, SOURCE, seen2)
    assert [(c.kind, c.dates) for c in changes] == [
        ("deleted", (date(2026, 9, 8), date(2026, 9, 9)))
    ]
    assert len(seen3) == 1


def test_classes_and_ranges() -> None:
    now = datetime(2026, 9, 12, 15, 0, tzinfo=UTC)  # next tick: 09-13 01:00, covers 09-10..12
    assert next_schedule_date(now) == date(2026, 9, 13)
    assert next_schedule_date(datetime(2026, 9, 12, 0, 30, tzinfo=UTC)) == date(2026, 9, 12)
    kw = dict(now=now, lookback_days=3, closed_months={date(2026, 8, 1)})
    assert classify(date(2026, 9, 10), schedule_running=True, **kw) == OPEN_WINDOW
    assert classify(date(2026, 9, 12), schedule_running=True, **kw) == OPEN_WINDOW
    assert classify(date(2026, 9, 9), schedule_running=True, **kw) == LOOKBACK
    assert classify(date(2026, 9, 11), schedule_running=False, **kw) == LOOKBACK
    assert classify(date(2026, 8, 31), schedule_running=True, **kw) == CLOSED_PERIOD
    with pytest.raises(ValueError, match="naive"):
        next_schedule_date(datetime(2026, 9, 12))
    days = [date(2026, 9, d) for d in (1, 2, 3, 5, 7, 8)]
    assert contiguous_ranges(days) == [
        (date(2026, 9, 1), date(2026, 9, 3)),
        (date(2026, 9, 5), date(2026, 9, 5)),
        (date(2026, 9, 7), date(2026, 9, 8)),
    ]
    assert (
        len(
            contiguous_ranges(
                [date(2026, 1, 1) + timedelta(days=i) for i in range(40)],
                cap=31,
            )
        )
        == 2
    )


# -- the sensor on a real instance ------------------------------------------------------------


@pytest.fixture
def env(demo_data, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(demo_data[0], root)
    warehouse = tmp_path / "warehouse.duckdb"
    defs = build_definitions(root, warehouse)
    with dg.instance_for_test() as instance:
        yield root, warehouse, defs, instance


def _evaluate(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.resolve_sensor_def(SENSOR)
    resources = defs.resources
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in ("landing", "warehouse_io_manager")},
        definitions=defs,
    ) as context:
        result = sensor.evaluate_tick(context)
    return result


def test_first_tick_requests_every_date_once_then_nothing(env) -> None:
    root, _, defs, instance = env
    first = _evaluate(defs, instance, None)
    # The demo's 8 dates plus 09-09 and 09-11, where rows arriving beyond the lateness
    # horizon are attributed (and quarantined): one run per contiguous range.
    ranges = [
        (
            r.tags.get("dagster/asset_partition_range_start", r.partition_key),
            r.tags.get("dagster/asset_partition_range_end", r.partition_key),
        )
        for r in first.run_requests
    ]
    assert ranges == [("2026-09-01", "2026-09-09"), ("2026-09-11", "2026-09-11")]
    request = first.run_requests[0]
    tags = request.tags
    assert request.asset_selection == [dg.AssetKey("case_events")]
    assert tags[TRIGGER_TAG] == "landing_sensor" and tags[CORRECTION_CLASS_TAG] == LOOKBACK
    assert tags["dagster/asset_partition_range_start"] == "2026-09-01"
    assert RESTATEMENT_TAG not in tags
    cursor = first.cursor
    assert len(load_cursor(cursor)) == len(_files(root))

    again = _evaluate(defs, instance, cursor)
    assert again.run_requests == [] and "no new or changed files" in again.skip_message

    # A correction for 09-03 lands: exactly that partition, with a key stable across ticks.
    _write(root, "2026-09-05", "events-fix.csv", [_event("E9700000001", "2026-09-03T09:00:00Z")])
    late = _evaluate(defs, instance, cursor)
    (request,) = late.run_requests
    assert request.partition_key == "2026-09-03"
    repeat = _evaluate(defs, instance, cursor)  # a tick repeated after a crash
    assert [r.run_key for r in repeat.run_requests] == [request.run_key]
    assert _evaluate(defs, instance, late.cursor).run_requests == []


def test_closed_month_requests_a_held_restatement(env) -> None:
    root, warehouse, defs, instance = env
    cursor = _evaluate(defs, instance, None).cursor
    with duckdb.connect(str(warehouse)) as conn:
        ensure_version_ledger(conn)
        conn.execute(
            "INSERT INTO ecm_ledger.closed_partitions VALUES (?, ?, ?, ?, ?)",
            ["case_sla_monthly_report", date(2026, 9, 1), datetime.now(UTC), "alice", "certified"],
        )
    _write(root, "2026-09-06", "events-fix.csv", [_event("E9700000002", "2026-09-04T09:00:00Z")])
    (request,) = _evaluate(defs, instance, cursor).run_requests
    assert request.partition_key == "2026-09-04"
    assert request.tags[CORRECTION_CLASS_TAG] == CLOSED_PERIOD
    assert request.tags[RESTATEMENT_TAG] == "SOURCE_CORRECTION"
    assert request.tags[REVIEW_TAG] == "closed_periods"


def test_change_digest_is_stable_and_content_addressed(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    a = _write(tmp_path, "2026-09-10", "a.csv", [_event("E1", "2026-09-09T08:00:00Z")])
    changes, seen = scan(landing, SOURCE, {})
    assert change_digest(changes, seen) == change_digest(list(reversed(changes)), seen)
    a.write_text(HEADER + _event("E1", "2026-09-09T09:00:00Z") + "\n")
    changes2, seen2 = scan(landing, SOURCE, {})
    assert change_digest(changes2, seen2) != change_digest(changes, seen)


def test_file_flipping_v1_v2_v1_v2_gets_a_new_run_key_for_every_change(env) -> None:
    """Dagster drops a request whose run key it has seen: every change event needs its own."""
    root, _, defs, instance = env
    cursor = _evaluate(defs, instance, None).cursor
    v1 = [_event("E9700000003", "2026-09-03T09:00:00Z")]
    v2 = [_event("E9700000003", "2026-09-03T10:00:00Z")]
    keys = []
    for rows in (v1, v2, v1, v2):
        _write(root, "2026-09-05", "events-flip.csv", rows)
        result = _evaluate(defs, instance, cursor)
        (request,) = result.run_requests
        # The same tick evaluated again (a crash before the cursor was saved): same key.
        assert [r.run_key for r in _evaluate(defs, instance, cursor).run_requests] == [
            request.run_key
        ]
        keys.append(request.run_key)
        cursor = result.cursor
    assert len(set(keys)) == 4, keys


def test_file_deleted_readded_deleted_gets_a_new_run_key_for_every_change(env) -> None:
    root, _, defs, instance = env
    cursor = _evaluate(defs, instance, None).cursor
    keys = []
    for present in (True, False, True, False):
        path = root / "landing" / "case_events" / "ingest_date=2026-09-05" / "events-gone.csv"
        if present:
            row = _event("E9700000004", "2026-09-04T09:00:00Z")
            _write(root, "2026-09-05", "events-gone.csv", [row])
        else:
            path.unlink()
        result = _evaluate(defs, instance, cursor)
        (request,) = result.run_requests
        keys.append(request.run_key)
        cursor = result.cursor
    assert len(set(keys)) == 4, keys


@pytest.fixture(params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The published-row index reads either backend (portable SQL, array parameters)."""
    with warehouse_for(request.param, tmp_path) as target:
        yield target


def _publish_events(warehouse: str, rows: list[tuple[str, date]]) -> None:
    """A warehouse whose published case_events hold these (event_id, business_date) rows."""
    with open_warehouse(warehouse).connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS main")
        conn.execute("CREATE TABLE main.case_events (event_id VARCHAR, business_date DATE)")
        for row in rows:
            conn.execute("INSERT INTO main.case_events VALUES (?, ?)", list(row))


def test_correction_moving_an_event_to_another_date_requests_the_date_it_leaves(
    tmp_path: Path, warehouse: str
) -> None:
    # E1 was published on 09-10; a file of 09-11 re-sends it dated 09-11. The run must
    # recompute 09-10 too, or E1 stays published in both partitions.
    _publish_events(warehouse, [("E1", date(2026, 9, 10)), ("E2", date(2026, 9, 10))])
    _write(tmp_path, "2026-09-11", "b.csv", [_event("E1", "2026-09-11T08:00:00Z")])
    index = PublishedIndex(warehouse, CASE_EVENTS)
    changes, _ = scan(tmp_path / "landing", SOURCE, {}, index=index)
    assert [c.dates for c in changes] == [(date(2026, 9, 10), date(2026, 9, 11))]
    # Without a published E1 (or without the index) only the new date is touched.
    changes, _ = scan(tmp_path / "landing", SOURCE, {})
    assert [c.dates for c in changes] == [(date(2026, 9, 11),)]


def test_unparseable_resend_does_not_request_the_valid_rows_date(
    tmp_path: Path, warehouse: str
) -> None:
    _publish_events(warehouse, [("E1", date(2026, 9, 10))])
    _write(tmp_path, "2026-09-11", "b.csv", [_event("E1", "not-a-time")])
    changes, _ = scan(
        tmp_path / "landing", SOURCE, {}, index=PublishedIndex(warehouse, CASE_EVENTS)
    )
    assert [c.dates for c in changes] == [(date(2026, 9, 11),)]


def test_resend_beyond_the_old_dates_horizon_does_not_request_it(
    tmp_path: Path, warehouse: str
) -> None:
    # 09-03's run reads files up to 09-08 only: a resend ingested 09-09 cannot supersede the
    # row published there, so recomputing 09-03 would change nothing.
    _publish_events(warehouse, [("E1", date(2026, 9, 3))])
    _write(tmp_path, "2026-09-09", "b.csv", [_event("E1", "2026-09-09T08:00:00Z")])
    changes, _ = scan(
        tmp_path / "landing", SOURCE, {}, index=PublishedIndex(warehouse, CASE_EVENTS)
    )
    assert [c.dates for c in changes] == [(date(2026, 9, 9),)]
    # The sensor says what happens instead: the event stays on 09-03, the resend is
    # quarantined by 09-09's run.
    assert "stay there" in changes[0].note and "event_published_on_other_date" in changes[0].note


def test_scan_reports_ignored_names_and_refuses_symlinks_out_of_the_root_once(
    tmp_path: Path,
) -> None:
    """Issue 11 item 3, through the listing the sensor shares with the input lock."""
    landing = tmp_path / "landing"
    good = _write(tmp_path, "2026-09-10", "a.csv", [_event("E1", "2026-09-10T08:00:00Z")])
    _write(tmp_path, "2026-09-10", "b.CSV", [_event("E2", "2026-09-10T08:00:00Z")])
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (good.parent / "passwd.csv").symlink_to(secret)

    changes, seen = scan(landing, SOURCE, {})

    got = {(c.path.split("/")[-1], c.kind, c.dates) for c in changes}
    assert got == {
        ("a.csv", "new", (date(2026, 9, 10),)),
        ("b.CSV", "ignored", ()),
        ("passwd.csv", "refused", (date(2026, 9, 10),)),  # its run fails naming it
    }
    assert not any("root:x" in c.note for c in changes)
    # Reported once, not on every tick.
    assert scan(landing, SOURCE, seen)[0] == []
