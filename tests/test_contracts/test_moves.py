"""The moved-event rule as a pure function (contracts/moves.py): which copy of a re-sent event
is kept when the other is already published on a date outside the run's window."""

from __future__ import annotations

from datetime import date

from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.case_sla.events import parse_case_events
from ecm_assets.contracts.boundaries import PublishedElsewhere
from ecm_assets.contracts.moves import REASON, settle_moves
from ecm_assets.contracts.transform import PartitionWindow
from tests.test_case_sla._frames import landing, org_for, raw, src

D12 = date(2026, 9, 12)


def _run(event_ts: str, ingest: str, published: PublishedElsewhere):
    """The 09-12 run over one file with E1 (and E2), with E1 published elsewhere."""
    frame = landing(
        raw("E1", event_ts=event_ts, ingest=ingest, line=2),
        raw("E2", case_id="C2", event_ts="2026-09-12T11:00:00Z", ingest=ingest, line=3),
    )
    window = PartitionWindow((D12,))
    result = parse_case_events(frame, window, org_for(D12))
    ingest_of = {src(ingest): date.fromisoformat(ingest)}
    return result, settle_moves(CASE_EVENTS, window, result, [published], ingest_of)


def test_resend_beyond_the_old_dates_window_is_quarantined_and_counts_still_reconcile():
    old = PublishedElsewhere("E1", date(2026, 9, 2), src("2026-09-02"), date(2026, 9, 2), "r1")
    before, after = _run("2026-09-12T10:00:00Z", "2026-09-12", old)
    assert sorted(before.data["event_id"]) == ["E1", "E2"]
    assert list(after.data["event_id"]) == ["E2"]
    assert len(after.source_rows) == len(after.data)
    (reject,) = after.rejects[after.rejects["reason"] == REASON].to_dict("records")
    assert "2026-09-02" in reject["failure_case"] and "r1" in reject["failure_case"]
    assert "up to 2026-09-07" in reject["failure_case"]
    counts = after.counts.loc[D12]
    assert (counts["read"], counts["kept"], counts["rejected"]) == (2, 1, 1)
    assert counts["read"] == counts["kept"] + counts["rejected"] + counts["duplicate"]


def test_resend_the_old_date_still_reads_is_kept_there_it_drops_the_old_row():
    # Published on 09-08 from a file of 09-08; the resend of 09-12 is read by 09-08's run
    # (09-08 + 5 days >= 09-12), which drops the old row when the sensor requests it.
    old = PublishedElsewhere("E1", date(2026, 9, 8), src("2026-09-08"), date(2026, 9, 8), "r1")
    before, after = _run("2026-09-12T10:00:00Z", "2026-09-12", old)
    assert sorted(after.data["event_id"]) == ["E1", "E2"]
    assert after.counts.equals(before.counts)


def test_copy_older_than_the_published_one_never_replaces_it():
    # The published copy (on 09-20, from a file of 09-20) arrived after this run's file.
    newer = PublishedElsewhere("E1", date(2026, 9, 20), src("2026-09-20"), date(2026, 9, 20), "r9")
    _, after = _run("2026-09-12T10:00:00Z", "2026-09-12", newer)
    assert list(after.data["event_id"]) == ["E2"]
    assert "arrived later" in after.rejects["failure_case"].iloc[-1]
