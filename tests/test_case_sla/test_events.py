"""parse_case_events: attribution, dedup/corrections, validation and counts on tiny frames.

Every expectation below is worked out by hand from the rules in the events module docstring
(lateness = 5 days): a row belongs to its UTC event date when
event_date <= ingest_date <= event_date + 5, otherwise (or unparseable) to its ingest date.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import pandas as pd
import pytest

from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.case_sla.events import COUNT_COLUMNS, landing_ingest_range, parse_case_events
from ecm_assets.case_sla.quality import CASE_EVENTS_QUALITY
from ecm_assets.contracts.quality import QuarantineRate, RowCount
from ecm_assets.contracts.transform import PartitionWindow, TransformResult
from ecm_assets.publish.protocol import REJECT_COLUMNS
from ecm_assets.validation.gate import GateInput, evaluate
from tests.test_case_sla._frames import day, landing, org_for, org_frame, raw, snapshot, src, ts


def judged(frame: pd.DataFrame, win: PartitionWindow, org: dict) -> TransformResult:
    """The transform followed by the gate's row rules: `kept` are the accepted rows and
    `rejected` every quarantined row, whether the parser or the gate caught it. Partition
    rules (row count, quarantine rate) are left out here; tests/test_validation covers them."""
    result = parse_case_events(frame, win, org)
    row_rules = tuple(
        r for r in CASE_EVENTS_QUALITY.rules if not isinstance(r, QuarantineRate | RowCount)
    )
    gate = evaluate(
        GateInput(
            contract=CASE_EVENTS,
            quality=replace(CASE_EVENTS_QUALITY, rules=row_rules),
            window=win,
            data=result.data,
            rejects=result.rejects,
            counts=result.counts,
            reference={"org_hierarchy": org},
            source_rows=result.source_rows,
        )
    )
    rejects = gate.quarantined.sort_values(
        ["partition_date", "source_file", "source_line"], kind="stable"
    ).reset_index(drop=True)
    counts = result.counts.copy()
    for p, entry in gate.reconciliation["per_partition"].items():
        counts.loc[date.fromisoformat(p), "kept"] = entry["accepted"]
        counts.loc[date.fromisoformat(p), "rejected"] = entry["quarantined"]
    return TransformResult(data=gate.accepted, rejects=rejects, counts=counts)


D1, D2, D3, D4 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3), date(2026, 9, 4)


def window(*days: date) -> PartitionWindow:
    return PartitionWindow(tuple(days))


def counts_row(result, partition: date) -> dict[str, int]:
    return {k: int(v) for k, v in result.counts.loc[partition].items()}


def zero_counts(**overrides: int) -> dict[str, int]:
    return {**dict.fromkeys(COUNT_COLUMNS, 0), **overrides}


# --------------------------------------------------------------------------- clean rows


def test_clean_event_is_kept_with_typed_columns():
    frame = landing(raw("E1", "C1", "opened", "2026-09-02T10:00:00Z", "U01", "P2", line=7))
    result = parse_case_events(frame, window(D2), org_for(D2))

    assert list(result.data.columns) == CASE_EVENTS.column_names
    assert len(result.data) == 1
    row = result.data.iloc[0]
    assert row["event_id"] == "E1"
    assert row["case_id"] == "C1"
    assert row["event_type"] == "opened"
    assert row["event_ts"] == ts("2026-09-02T10:00:00")
    assert str(result.data["event_ts"].dt.tz) == "UTC"
    assert row["business_date"] == day("2026-09-02")
    assert row["unit_id"] == "U01"
    # U01: Legacy [2019-01-01, 2026-01-01), North [2026-01-01, open) -> North at 2026-09-02.
    assert row["region"] == "North"
    assert row["priority"] == "P2"
    assert row["ingest_date"] == day("2026-09-02")
    assert row["source_file"] == src("2026-09-02")
    assert row["source_line"] == 7
    assert result.data["source_line"].dtype == "int64"

    assert result.rejects.empty
    assert list(result.rejects.columns) == REJECT_COLUMNS
    assert list(result.counts.index) == [D2]
    assert list(result.counts.columns) == COUNT_COLUMNS
    # read 1 = kept 1 + rejected 0 + duplicate 0; ingest day == event day, so not late.
    assert counts_row(result, D2) == zero_counts(read=1, kept=1)


def test_region_comes_from_the_interval_valid_at_event_time():
    # Legacy interval ends 2026-01-01 (exclusive): an event one second before is Legacy,
    # an event at exactly 2026-01-01T00:00 is North. Both ingested the same day.
    frame = landing(
        raw("E1", event_ts="2025-12-31T23:59:59Z", ingest="2025-12-31", line=2),
        raw("E2", event_ts="2026-01-01T00:00:00Z", ingest="2026-01-01", line=2),
    )
    d_old, d_new = date(2025, 12, 31), date(2026, 1, 1)
    result = parse_case_events(frame, window(d_old, d_new), org_for(d_old, d_new))
    assert result.data[["event_id", "region"]].values.tolist() == [
        ["E1", "Legacy"],
        ["E2", "North"],
    ]


def test_offset_timestamp_is_converted_to_utc_and_attributed_to_the_utc_date():
    # 2026-09-03T02:00+07:00 = 2026-09-03T02:00 - 7h = 2026-09-02T19:00Z -> business date 09-02.
    # Ingested 09-03: 09-02 <= 09-03 <= 09-02 + 5, so within the horizon, and one day late.
    frame = landing(raw(event_ts="2026-09-03T02:00:00+07:00", ingest="2026-09-03"))
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3))

    assert len(result.data) == 1
    assert result.data.loc[0, "event_ts"] == ts("2026-09-02T19:00:00")
    assert result.data.loc[0, "business_date"] == day("2026-09-02")
    assert result.data.loc[0, "ingest_date"] == day("2026-09-03")
    assert counts_row(result, D2) == zero_counts(read=1, kept=1, late_arrivals=1)
    # The ingest date partition does not see it at all.
    assert counts_row(result, D3) == zero_counts()


def test_negative_offset_can_push_an_event_into_the_next_utc_day():
    # 2026-09-01T22:30-03:00 = 2026-09-02T01:30Z -> business date 09-02 (not the local 09-01).
    frame = landing(raw(event_ts="2026-09-01T22:30:00-03:00", ingest="2026-09-02"))
    result = parse_case_events(frame, window(D1, D2), org_for(D1, D2))
    assert result.data["business_date"].tolist() == [day("2026-09-02")]
    assert result.data.loc[0, "event_ts"] == ts("2026-09-02T01:30:00")
    assert counts_row(result, D1) == zero_counts()
    assert counts_row(result, D2) == zero_counts(read=1, kept=1)


# --------------------------------------------------------------------------- dedup


def test_exact_duplicate_in_a_later_file_is_kept_once():
    row = ("E1", "C1", "opened", "2026-09-02T10:00:00Z", "U01", "P1")
    frame = landing(
        raw(*row, ingest="2026-09-02", file="a.csv", line=2),
        raw(*row, ingest="2026-09-03", file="b.csv", line=5),
    )
    result = parse_case_events(frame, window(D2), org_for(D2))

    # The earlier copy is superseded by the later arrival (ingest 09-03 <= 09-02 + 5).
    assert len(result.data) == 1
    assert result.data.loc[0, "source_file"] == src("2026-09-03", "b.csv")
    assert result.data.loc[0, "source_line"] == 5
    assert result.rejects.empty
    c = counts_row(result, D2)
    # Identical values: a duplicate, not a correction. The kept copy arrived on 09-03: late.
    assert c == zero_counts(read=2, kept=1, duplicate=1, late_arrivals=1)
    assert c["read"] == c["kept"] + c["rejected"] + c["duplicate"]  # 2 == 1 + 0 + 1


def test_duplicate_within_one_file_keeps_the_later_line():
    row = ("E1", "C1", "opened", "2026-09-02T10:00:00Z", "U01", "P1")
    frame = landing(raw(*row, line=9), raw(*row, line=3))
    result = parse_case_events(frame, window(D2), org_for(D2))
    assert result.data["source_line"].tolist() == [9]
    assert counts_row(result, D2) == zero_counts(read=2, kept=1, duplicate=1)


def test_correction_within_the_horizon_supersedes_the_original():
    frame = landing(
        raw("E1", "C1", "opened", "2026-09-02T10:00:00Z", "U01", "P3", ingest="2026-09-02"),
        # Same event_id, priority changed, ingested 09-04 <= 09-02 + 5 = 09-07.
        raw("E1", "C1", "opened", "2026-09-02T10:00:00Z", "U01", "P1", ingest="2026-09-04"),
    )
    result = parse_case_events(frame, window(D2), org_for(D2))

    assert result.data["priority"].tolist() == ["P1"]
    assert result.data.loc[0, "ingest_date"] == day("2026-09-04")
    c = counts_row(result, D2)
    assert c == zero_counts(read=2, kept=1, duplicate=1, corrections_applied=1, late_arrivals=1)
    assert c["read"] == c["kept"] + c["rejected"] + c["duplicate"]


def test_correction_on_the_last_day_of_the_horizon_still_supersedes():
    # Ingested 09-07 = 09-02 + 5: still read by the 09-02 partition.
    frame = landing(
        raw(priority="P3", ingest="2026-09-02"),
        raw(priority="P1", ingest="2026-09-07"),
    )
    result = parse_case_events(frame, window(D2), org_for(D2))
    assert result.data["priority"].tolist() == ["P1"]
    assert counts_row(result, D2)["corrections_applied"] == 1


def test_correction_beyond_the_horizon_does_not_supersede():
    # Original: event 09-02, ingested 09-02 -> partition 09-02.
    # Correction: ingested 09-08 > 09-02 + 5 = 09-07, a file partition 09-02 never reads, so by
    # the dedup rule (later ingest date <= partition + lateness) it cannot supersede the
    # original. Its own event date 09-02 is 6 days before its ingest date, so it is attributed
    # to its ingest date 09-08 and rejected there as outside the arrival horizon.
    d8 = date(2026, 9, 8)
    frame = landing(
        raw(priority="P3", ingest="2026-09-02", line=2),
        raw(priority="P1", ingest="2026-09-08", line=4),
    )
    result = parse_case_events(frame, window(D2, d8), org_for(D2, d8))

    assert result.data["priority"].tolist() == ["P3"]
    assert result.data.loc[0, "business_date"] == day("2026-09-02")
    assert counts_row(result, D2) == zero_counts(read=1, kept=1)
    assert counts_row(result, d8) == zero_counts(read=1, rejected=1)
    assert result.rejects[["partition_date", "reason", "source_line"]].values.tolist() == [
        [day("2026-09-08"), "event_ts_outside_arrival_horizon", 4]
    ]


def test_correction_that_moves_the_event_date_counts_as_duplicate_in_the_old_partition():
    # Original attributed to 09-02; the correction (ingest 09-03 <= 09-07) moves event_ts to
    # 09-03, so 09-02 counts a superseded row (a correction) and 09-03 keeps the new version.
    frame = landing(
        raw(event_ts="2026-09-02T10:00:00Z", ingest="2026-09-02"),
        raw(event_ts="2026-09-03T08:00:00Z", ingest="2026-09-03"),
    )
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3))
    assert result.data[["business_date", "event_ts"]].values.tolist() == [
        [day("2026-09-03"), ts("2026-09-03T08:00:00")]
    ]
    assert counts_row(result, D2) == zero_counts(read=1, duplicate=1, corrections_applied=1)
    assert counts_row(result, D3) == zero_counts(read=1, kept=1)


# --------------------------------------------------------------------------- validation


def _reject_rows() -> list[dict]:
    """One row per reject reason, all ingested 09-02, plus one clean row (line 10)."""
    return [
        raw(None, None, None, None, None, None, line=2, error="expected 6 fields, found 4: a,b"),
        raw("", "C1", line=3),
        raw("E3", event_ts="not-a-time", line=4),
        # 2026-08-26 is 7 days before ingest 09-02 (> 5): attributed to the ingest date.
        raw("E4", event_ts="2026-08-26T10:00:00Z", line=5),
        raw("E5", "  ", line=6),
        raw("E6", event_type="closed", line=7),
        raw("E7", priority="P5", line=8),
        raw("E8", unit_id="U99", line=9),
        raw("E9", line=10),
    ]


EXPECTED_REJECTS = [
    # (line, reason, column_name, failure_case)
    (2, "malformed_line", None, "expected 6 fields, found 4: a,b"),
    (3, "missing_event_id", "event_id", ""),
    (4, "unparseable_event_ts", "event_ts", "not-a-time"),
    (5, "event_ts_outside_arrival_horizon", "event_ts", "2026-08-26T10:00:00Z"),
    (6, "missing_case_id", "case_id", "  "),
    (7, "unknown_event_type", "event_type", "closed"),
    (8, "unknown_priority", "priority", "P5"),
    (9, "unknown_unit_id", "unit_id", "U99"),
]


def test_each_reject_reason_with_column_and_failure_case():
    rows = _reject_rows()
    result = judged(landing(*rows), window(D2), org_for(D2))

    rejects = result.rejects
    assert list(rejects.columns) == REJECT_COLUMNS
    got = [
        (
            int(r.source_line),
            r.reason,
            None if pd.isna(r.column_name) else r.column_name,
            None if pd.isna(r.failure_case) else r.failure_case,
        )
        for r in rejects.itertuples()
    ]
    assert got == EXPECTED_REJECTS
    assert (rejects["partition_date"] == day("2026-09-02")).all()
    assert (rejects["source_file"] == src("2026-09-02")).all()

    # original_row is the raw landing values as JSON (null for a malformed line).
    by_line = {r["_source_line"]: r for r in rows}
    for r in rejects.itertuples():
        original = by_line[r.source_line]
        expected = {
            k: original[k]
            for k in ("event_id", "case_id", "event_type", "event_ts", "unit_id", "priority")
        }
        assert json.loads(r.original_row) == expected
    assert json.loads(rejects.loc[0, "original_row"]) == {
        "event_id": None,
        "case_id": None,
        "event_type": None,
        "event_ts": None,
        "unit_id": None,
        "priority": None,
    }

    assert result.data["event_id"].tolist() == ["E9"]
    # 9 rows read = 1 kept + 8 rejected + 0 duplicate.
    assert counts_row(result, D2) == zero_counts(read=9, kept=1, rejected=8)


def test_a_row_keeps_its_first_failing_rule():
    # Blank case_id AND unknown priority AND unknown unit: the case_id rule comes first.
    frame = landing(raw("E1", "", priority="P9", unit_id="U99"))
    result = judged(frame, window(D2), org_for(D2))
    assert result.rejects["reason"].tolist() == ["missing_case_id"]


def test_unparseable_timestamp_is_attributed_to_its_ingest_date():
    frame = landing(raw("E1", event_ts="2026-13-45T99:00:00Z", ingest="2026-09-03"))
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3))
    assert result.rejects[["partition_date", "reason"]].values.tolist() == [
        [day("2026-09-03"), "unparseable_event_ts"]
    ]
    assert counts_row(result, D2) == zero_counts()
    assert counts_row(result, D3) == zero_counts(read=1, rejected=1)


def test_event_after_its_ingest_date_is_outside_the_horizon():
    # Event 09-04 arrives in a file ingested 09-03: "not before it" fails -> ingest date 09-03.
    frame = landing(raw(event_ts="2026-09-04T01:00:00Z", ingest="2026-09-03"))
    result = parse_case_events(frame, window(D3, D4), org_for(D3, D4))
    assert result.rejects[["partition_date", "reason"]].values.tolist() == [
        [day("2026-09-03"), "event_ts_outside_arrival_horizon"]
    ]
    assert counts_row(result, D4) == zero_counts()


# --------------------------------------------------------------------------- window


def test_rows_outside_the_window_are_not_counted_and_counts_are_per_partition():
    frame = landing(
        # -> 09-01 (outside the window)
        raw("A", event_ts="2026-09-01T10:00:00Z", ingest="2026-09-01", line=2),
        # -> 09-01, one day late (outside)
        raw("B", event_ts="2026-09-01T23:00:00Z", ingest="2026-09-02", line=2),
        # -> 09-02 kept
        raw("C", event_ts="2026-09-02T05:00:00Z", ingest="2026-09-02", line=3),
        # -> 09-02 kept, late (ingested 09-03)
        raw("D", event_ts="2026-09-02T22:00:00Z", ingest="2026-09-03", line=2),
        # -> 09-03 kept
        raw("E", event_ts="2026-09-03T01:00:00Z", ingest="2026-09-03", line=3),
        # -> 09-03 rejected: unknown priority
        raw("F", event_ts="2026-09-03T02:00:00Z", priority="PX", ingest="2026-09-03", line=4),
        # event 08-20 is 14 days before ingest 09-03 -> ingest date 09-03, rejected
        raw("G", event_ts="2026-08-20T02:00:00Z", ingest="2026-09-03", line=5),
        # -> 09-04 (outside)
        raw("H", event_ts="2026-09-04T00:30:00Z", ingest="2026-09-04", line=2),
    )
    # The org snapshot is only pinned for the window's dates.
    result = judged(frame, window(D2, D3), org_for(D2, D3))

    assert result.data[["event_id", "business_date"]].values.tolist() == [
        ["C", day("2026-09-02")],
        ["D", day("2026-09-02")],
        ["E", day("2026-09-03")],
    ]
    assert result.rejects[["partition_date", "source_line", "reason"]].values.tolist() == [
        [day("2026-09-03"), 4, "unknown_priority"],
        [day("2026-09-03"), 5, "event_ts_outside_arrival_horizon"],
    ]
    assert list(result.counts.index) == [D2, D3]
    # 09-02: C, D read; both kept; D late.
    assert counts_row(result, D2) == zero_counts(read=2, kept=2, late_arrivals=1)
    # 09-03: E, F, G read; E kept; F, G rejected.
    assert counts_row(result, D3) == zero_counts(read=3, kept=1, rejected=2)


def test_landing_ingest_range_covers_the_lateness_horizon():
    # Last partition 09-03 + 5 days = 09-08.
    assert landing_ingest_range(window(D2, D3)) == (D2, date(2026, 9, 8))


# --------------------------------------------------------------------------- reference data


def test_reorganisation_with_two_pinned_snapshots():
    # v1 (pinned for 09-02): U01 in North, open-ended.
    # v2 (pinned for 09-03): U01 North until 2026-09-03T00:00 (exclusive), East from then.
    v1 = org_frame([("U01", "North", "2026-01-01", None)])
    v2 = org_frame(
        [
            ("U01", "North", "2026-01-01", "2026-09-03"),
            ("U01", "East", "2026-09-03", None),
        ]
    )
    org = {
        D2: snapshot("org_hierarchy", "org-v1", v1),
        D3: snapshot("org_hierarchy", "org-v2", v2),
    }
    frame = landing(
        raw("E1", event_ts="2026-09-02T10:00:00Z", ingest="2026-09-02", line=2),
        raw("E2", event_ts="2026-09-03T00:00:00Z", ingest="2026-09-03", line=2),
        raw("E3", event_ts="2026-09-03T15:00:00Z", ingest="2026-09-03", line=3),
    )
    result = parse_case_events(frame, window(D2, D3), org)
    assert result.data[["event_id", "unit_id", "region"]].values.tolist() == [
        ["E1", "U01", "North"],
        ["E2", "U01", "East"],
        ["E3", "U01", "East"],
    ]


def test_reorganisation_within_one_snapshot_uses_event_time():
    # Same snapshot for both dates: 23:59:59 on 09-02 is before the reorg, 00:00 09-03 after.
    v2 = org_frame(
        [
            ("U01", "North", "2026-01-01", "2026-09-03"),
            ("U01", "East", "2026-09-03", None),
        ]
    )
    frame = landing(
        raw("E1", event_ts="2026-09-02T23:59:59Z", ingest="2026-09-03", line=2),
        raw("E2", event_ts="2026-09-03T00:00:00Z", ingest="2026-09-03", line=3),
    )
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3, data=v2))
    assert result.data[["event_id", "region"]].values.tolist() == [["E1", "North"], ["E2", "East"]]


def test_unit_not_yet_valid_at_event_time_is_unknown():
    # U03 only exists from 2026-09-03: an event on 09-02 cannot be attributed to a region.
    org = org_frame([("U03", "West", "2026-09-03", None)])
    frame = landing(raw(unit_id="U03"))
    result = judged(frame, window(D2), org_for(D2, data=org))
    assert result.rejects["reason"].tolist() == ["unknown_unit_id"]


def test_overlapping_validity_intervals_are_refused():
    org = org_frame(
        [
            ("U01", "North", "2026-01-01", None),
            ("U01", "East", "2026-09-01", None),
        ]
    )
    with pytest.raises(ValueError, match="overlapping validity"):
        parse_case_events(landing(raw()), window(D2), org_for(D2, data=org))


# --------------------------------------------------------------------------- determinism


def _mixed_landing() -> pd.DataFrame:
    return landing(
        raw("E1", "C1", "opened", "2026-09-02T08:00:00Z", "U01", "P2", ingest="2026-09-02", line=2),
        raw(
            "E2", "C1", "assigned", "2026-09-02T09:00:00Z", "U01", "P2", ingest="2026-09-02", line=3
        ),
        raw(
            "E3",
            "C2",
            "opened",
            "2026-09-03T02:00:00+07:00",
            "U02",
            "P1",
            ingest="2026-09-02",
            line=4,
        ),
        raw(None, None, None, None, None, None, ingest="2026-09-02", line=5, error="bad quote"),
        raw(
            "E4", "C2", "resolved", "2026-09-03T11:00:00Z", "U02", "P1", ingest="2026-09-03", line=2
        ),
        # E1 exact duplicate and E2 correction in later files
        raw("E1", "C1", "opened", "2026-09-02T08:00:00Z", "U01", "P2", ingest="2026-09-03", line=3),
        raw(
            "E2", "C1", "assigned", "2026-09-02T09:30:00Z", "U01", "P2", ingest="2026-09-04", line=2
        ),
        raw("E5", "C3", "opened", "2026-09-03T12:00:00Z", "U99", "P3", ingest="2026-09-03", line=4),
        raw("E6", "C3", "opened", "2026-09-03T12:00:00Z", "U01", "P7", ingest="2026-09-03", line=5),
        raw("E7", "C4", "opened", "garbage", "U01", "P1", ingest="2026-09-03", line=6),
        raw(
            "E1",
            "C1",
            "opened",
            "2026-09-02T08:00:00Z",
            "U01",
            "P2",
            ingest="2026-09-03",
            line=7,
            file="b.csv",
        ),
    )


def test_shuffled_input_gives_an_identical_output():
    frame = _mixed_landing()
    org = org_for(D2, D3)
    base = judged(frame, window(D2, D3), org)
    # sanity: the scenario exercises kept, rejected and superseded rows in both partitions
    # 09-02: E1 x3 (2 superseded), E2 x2 (1 superseded, a correction), E3 (19:00Z 09-02), the
    #        malformed line -> read 7, kept 3 (E1, E2, E3), rejected 1, duplicate 3.
    # 09-03: E4 kept; E5 unknown unit, E6 unknown priority, E7 unparseable -> read 4, kept 1.
    assert counts_row(base, D2) == zero_counts(
        read=7, kept=3, rejected=1, duplicate=3, corrections_applied=1, late_arrivals=2
    )
    assert counts_row(base, D3) == zero_counts(read=4, kept=1, rejected=3)
    for seed in range(5):
        shuffled = frame.sample(frac=1, random_state=seed)
        again = judged(shuffled, window(D2, D3), org)
        pd.testing.assert_frame_equal(
            again.data.reset_index(drop=True), base.data.reset_index(drop=True)
        )
        pd.testing.assert_frame_equal(
            again.rejects.reset_index(drop=True), base.rejects.reset_index(drop=True)
        )
        pd.testing.assert_frame_equal(again.counts, base.counts)


def test_each_partition_is_independent_of_the_window_it_is_computed_in():
    # A one-day run of day d reads the files ingested in [d, d + 5]; its rows, rejects and
    # counts must equal day d's slice of the two-day run.
    frame = _mixed_landing()
    whole = parse_case_events(frame, window(D2, D3), org_for(D2, D3))
    for d in (D2, D3):
        first, last = pd.Timestamp(d), pd.Timestamp(d) + pd.Timedelta(days=5)
        sub = frame[(frame["_ingest_date"] >= first) & (frame["_ingest_date"] <= last)]
        one = parse_case_events(sub, window(d), org_for(d))
        pd.testing.assert_frame_equal(
            one.data,
            whole.data[whole.data["business_date"] == first].reset_index(drop=True),
        )
        pd.testing.assert_frame_equal(
            one.rejects,
            whole.rejects[whole.rejects["partition_date"] == first].reset_index(drop=True),
        )
        assert counts_row(one, d) == counts_row(whole, d)


def test_open_ended_hierarchy_as_loaded_from_reference_files():
    # The reference adapter yields an all-NaT valid_to column when no unit ever moved.
    org = org_frame([("U01", "North", "2025-09-01", None), ("U02", "South", "2025-09-01", None)])
    assert org["valid_to"].isna().all()
    frame = landing(raw("E1", unit_id="U02", line=2), raw("E2", unit_id="U01", line=3))
    result = parse_case_events(frame, window(D2), org_for(D2, data=org))
    assert result.data[["event_id", "region"]].values.tolist() == [["E1", "South"], ["E2", "North"]]


# --------------------------------------------------------------------------- moved events


def test_resend_with_unparseable_timestamp_never_supersedes_the_valid_row():
    # E1 dated 09-02 arrives on 09-02; a later file re-sends E1 with a timestamp that does
    # not parse. The resend is rejected (attributed to its ingest date, 09-03) and the valid
    # E1 stays published: a row that cannot be typed must not delete a good one.
    frame = landing(
        raw(event_ts="2026-09-02T10:00:00Z", ingest="2026-09-02"),
        raw(event_ts="2026-13-45T25:99:00Z", ingest="2026-09-03"),
    )
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3))
    assert result.data[["event_id", "business_date"]].values.tolist() == [["E1", day("2026-09-02")]]
    assert result.rejects[["partition_date", "reason"]].values.tolist() == [
        [day("2026-09-03"), "unparseable_event_ts"]
    ]
    assert counts_row(result, D2) == zero_counts(read=1, kept=1)
    assert counts_row(result, D3) == zero_counts(read=1, rejected=1)


def test_resend_outside_the_arrival_horizon_never_supersedes_the_valid_row():
    # The resend's timestamp parses but lies after its ingest date: it is rejected, so it is
    # no valid version of E1 either.
    frame = landing(
        raw(event_ts="2026-09-02T10:00:00Z", ingest="2026-09-02"),
        raw(event_ts="2026-09-20T10:00:00Z", ingest="2026-09-03"),
    )
    result = parse_case_events(frame, window(D2, D3), org_for(D2, D3))
    assert result.data["business_date"].tolist() == [day("2026-09-02")]
    assert counts_row(result, D2) == zero_counts(read=1, kept=1)
    assert counts_row(result, D3) == zero_counts(read=1, rejected=1)


def test_malformed_resend_after_a_valid_correction_keeps_the_correction():
    # E1 (09-02), its valid correction (09-03), then an unparseable resend (09-04): the
    # correction is the latest valid version and stays; the original is superseded by it.
    frame = landing(
        raw(priority="P1", ingest="2026-09-02"),
        raw(priority="P2", ingest="2026-09-03"),
        raw(event_ts="not-a-date", ingest="2026-09-04"),
    )
    result = parse_case_events(frame, window(D2, D3, D4), org_for(D2, D3, D4))
    assert result.data[["event_id", "priority", "ingest_date"]].values.tolist() == [
        ["E1", "P2", day("2026-09-03")]
    ]
    assert counts_row(result, D2) == zero_counts(
        read=2, kept=1, duplicate=1, corrections_applied=1, late_arrivals=1
    )
    assert counts_row(result, D4) == zero_counts(read=1, rejected=1)


def test_regions_by_interval_equal_the_merge(monkeypatch):
    # The integer-key lookup must give what the pandas merge gives, row for row: units
    # missing from the hierarchy, null units, closed and open intervals, bounds at the
    # instant, several partitions with different snapshots.
    import numpy as np

    from ecm_assets.case_sla import events

    rng = np.random.default_rng(5)
    n = 3000
    parts = pd.to_datetime(rng.choice(["2026-09-01", "2026-09-02", "2026-09-03"], n))
    units = rng.choice(["U01", "U02", "U03", "U99", None], n)
    ts = pd.Series(
        pd.to_datetime("2025-12-31T22:00:00Z")
        + pd.to_timedelta(rng.integers(0, 4 * 3600, n), unit="s")
    )
    rows = pd.DataFrame(
        {"_partition": parts, "unit_id": units, "_ts": ts}, index=np.arange(n) * 3 + 7
    )
    rows["unit_id"] = rows["unit_id"].astype(pd.StringDtype("pyarrow"))
    org_a = org_frame(
        [
            ("U01", "Legacy", "2019-01-01 00:00", "2026-01-01 00:00"),
            ("U01", "North", "2026-01-01 00:00", None),
            ("U02", "South", "2025-12-31 23:00", "2026-01-01 01:00"),
        ]
    )
    org_b = org_frame([("U03", "East", "2020-01-01", None), ("U02", "West", "2020-01-01", None)])
    org = {
        date(2026, 9, 1): snapshot("org_hierarchy", "a", org_a),
        date(2026, 9, 2): snapshot("org_hierarchy", "b", org_b),
        date(2026, 9, 3): snapshot("org_hierarchy", "a", org_a),
    }
    fast = events._resolve_regions(rows, org)
    with monkeypatch.context() as m:
        m.setattr(events, "_regions_by_interval", lambda *args: None)
        slow = events._resolve_regions(rows, org)
    assert fast.index.equals(rows.index)
    assert fast.isna().tolist() == slow.isna().tolist()
    assert fast.dropna().tolist() == slow.dropna().tolist()
    assert fast.notna().sum() > n // 10


def test_the_gate_judges_arrow_text_as_it_judged_object_text():
    # parse_case_events hands the gate Arrow-backed text; the same rows as Python objects
    # (what it handed over before) must give the same decision, rows, quarantine and
    # reconciliation.
    import pyarrow as pa

    from ecm_assets.case_sla.events import TEXT_DTYPE

    rows = [
        raw("E1", "C1", "opened", "2026-09-02T08:00:00Z", "U01", "P2", line=2),
        raw("E2", None, "opened", "2026-09-02T08:00:00Z", "U01", "P2", line=3),
        raw("E3", "   ", "opened", "2026-09-02T08:00:00Z", "U01", "P2", line=4),
        raw("E4", "\u00a0", "opened", "2026-09-02T08:00:00Z", "U01", "P2", line=5),
        raw("E5", "C5", "closed", "2026-09-02T08:00:00Z", "U01", "P2", line=6),
        raw("E6", "C6", "opened", "2026-09-02T08:00:00Z", "U99", "P9", line=7),
        raw("E7", "C7", None, "2026-09-02T08:00:00Z", None, None, line=8),
        raw("E8 bad", "C\u00e98", "opened", "2026-09-02T08:00:00Z", "U01", "P2", line=9),
        raw("E" * 80, "C9", "opened", "2026-09-02T08:00:00", "U01", "P2", line=10),
        raw("E10", "C10\x07", "opened", "2026-09-02T08:00:00Z", "U02", "P1", line=11),
    ]
    frame = landing(*rows)
    win, org = window(D2), org_for(D2)
    result = parse_case_events(frame, win, org)
    text = [c for c in result.data.columns if result.data[c].dtype == TEXT_DTYPE]
    assert "event_id" in text and "region" in text
    as_objects = result.data.copy()
    for c in text:
        values = result.data[c].array.__arrow_array__()
        as_objects[c] = pd.Series(pa.chunked_array(values).to_pylist(), dtype=object)

    def judge(data: pd.DataFrame):
        return evaluate(
            GateInput(
                contract=CASE_EVENTS,
                quality=CASE_EVENTS_QUALITY,
                window=win,
                data=data,
                rejects=result.rejects,
                counts=result.counts,
                reference={"org_hierarchy": org},
                source_rows=result.source_rows,
            )
        )

    arrow, objects = judge(result.data), judge(as_objects)
    assert arrow.decision == objects.decision
    assert len(arrow.quarantined) > 5
    pd.testing.assert_frame_equal(arrow.quarantined, objects.quarantined)
    assert arrow.reconciliation == objects.reconciliation
    accepted = arrow.accepted.astype({c: object for c in text})
    pd.testing.assert_frame_equal(
        accepted.where(accepted.notna(), None), objects.accepted, check_dtype=False
    )
