"""Reconciliation at the edges (issue 10 item 6): blocked rows, derived datasets, rows the
window does not hold. Every count below is worked out by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ecm_assets.contracts.quality import QualityContract, RowCount, Severity
from ecm_assets.contracts.registry import register
from ecm_assets.validation.gate import Decision
from tests.test_validation.test_gate import (
    CONTROLS,
    D1,
    D2,
    D3,
    ITEMS,
    SOURCE,
    TOTALS,
    UPSTREAM,
    ItemsModel,
    finding,
    flag_model,
    gate,
    items,
    part,
    row,
    totals,
)


@pytest.fixture(autouse=True)
def _registered() -> None:
    for contract in (ITEMS, SOURCE, TOTALS):
        register(contract)


def test_range_run_with_a_fail_partition_counts_the_blocked_rows_as_blocked_not_accepted():
    # 09-01: a, b (b flagged: FAIL_PARTITION blocks 09-01); 09-02: c, d published.
    data = items(row(D1, "a"), row(D1, "b", code="Z"), row(D2, "c"), row(D2, "d"))
    result = gate(data, QualityContract(model=flag_model(Severity.FAIL_PARTITION)), D1, D2)

    assert result.decision == Decision.FAIL_PARTITION
    assert set(result.blocked) == {D1}
    assert result.accepted["item_id"].tolist() == ["c", "d"]
    totals_ = result.reconciliation["totals"]
    # accepted_rows is what is published; the withheld rows are counted as blocked.
    assert totals_["accepted_rows"] == len(result.accepted) == 2
    assert totals_["blocked_rows"] == 2
    assert totals_["input_rows"] == 4
    d1 = part(result, D1)
    assert (d1["input"], d1["accepted"], d1["blocked"], d1["quarantined"]) == (2, 0, 2, 0)
    assert d1["identity"] == "input = accepted + quarantined + duplicate + blocked"
    assert d1["identity_holds"] is True
    assert (part(result, D2)["accepted"], part(result, D2)["blocked"]) == (2, 0)
    # The withheld rows are kept with their reason, so they are stored somewhere.
    withheld = result.blocked_rows
    assert [json.loads(r)["item_id"] for r in withheld["original_row"]] == ["a", "b"]
    assert set(withheld["reason"]) == {"partition_blocked"}
    assert (pd.to_datetime(withheld["partition_date"]).dt.date == D1).all()
    assert withheld["failure_case"].iloc[0].startswith("schema:flagged_code")
    assert len(result.rejects) == len(result.quarantined) + 2


def test_blocked_partition_keeps_its_quarantined_rows_apart_from_its_blocked_rows():
    # 09-02 is empty (RowCount blocks it); 09-01 quarantines one row and publishes one.
    data = items(row(D1, "a"), row(D1, "b", code="Z"))
    quality = QualityContract(
        model=ItemsModel, rules=(RowCount(Severity.FAIL_PARTITION, min_rows=2),)
    )
    result = gate(data, quality, D1, D2)
    # 09-01 has 2 staged rows (passes) ... but 1 is quarantined: still published.
    assert set(result.blocked) == {D2}
    assert result.reconciliation["totals"]["blocked_rows"] == 0
    assert result.reconciliation["totals"]["accepted_rows"] == 1


def test_derived_dataset_reconciles_by_control_totals_that_can_fail():
    # 09-02 sums 4.5 where the upstream rows sum 4.0: the reconciliation itself is broken.
    out = totals((D1, "U01", 1, 10.0), (D1, "U02", 1, 7.5), (D2, "U01", 1, 4.5))
    result = gate(out, CONTROLS, D1, D2, contract=TOTALS, upstream={"gate_test_source": UPSTREAM})

    assert part(result, D1)["identity"] == "control totals over the upstream rows"
    assert part(result, D1)["identity_holds"] is True
    assert part(result, D2)["identity_holds"] is False
    assert result.reconciliation["status"] == "BROKEN"
    assert result.decision == Decision.FAIL_RUN


def test_derived_dataset_without_control_totals_is_reported_not_balanced_by_construction():
    out = totals((D1, "U01", 1, 10.0))
    result = gate(
        out, QualityContract(), D1, contract=TOTALS, upstream={"gate_test_source": UPSTREAM}
    )
    rec = finding(result, "reconciliation", None)
    assert (rec.passed, rec.severity) == (False, Severity.WARN)
    assert "declares no control totals" in rec.message
    assert part(result, D1)["identity"] == "none declared (derived dataset)"
    assert result.reconciliation["status"] == "NOT_DECLARED"


def test_row_rule_failure_outside_the_window_is_reported_as_a_finding():
    # The window is 09-01..09-02; row x on 09-03 fails a row rule and lies outside it.
    data = items(row(D1, "a"), row(D2, "b"), row(D3, "x", code="Z"))
    result = gate(data, QualityContract(model=flag_model(Severity.QUARANTINE_RECORD)), D1, D2)

    outside = finding(result, "schema:flagged_code", None)
    assert (outside.passed, outside.failed) == (False, 1)
    assert "outside the run's partitions" in outside.message
    boundary = finding(result, "reconciliation:partition_boundary", None)
    assert (boundary.passed, boundary.severity, boundary.failed) == (False, Severity.FAIL_RUN, 1)
    assert "2026-09-03" in boundary.message
    assert result.decision == Decision.FAIL_RUN


def test_row_with_a_null_partition_value_is_reported_as_a_finding():
    data = items(row(D1, "a"), row(D1, "b"))
    data.loc[1, "business_date"] = pd.NaT
    result = gate(data, QualityContract(), D1)

    boundary = finding(result, "reconciliation:partition_boundary", None)
    assert (boundary.passed, boundary.severity, boundary.failed) == (False, Severity.FAIL_RUN, 1)
    assert "null business_date" in boundary.message
    assert result.decision == Decision.FAIL_RUN


def test_blocked_partition_rows_are_stored_as_evidence_and_published_rows_match_accepted(
    tmp_path,
):
    """Gate to publish: accepted_rows is what readers see, the withheld rows are kept."""
    import duckdb

    from ecm_assets.publish.protocol import BLOCKED_TABLE, PublishRequest, publish_partitions
    from tests.test_publish.test_protocol import AS_OF

    data = items(row(D1, "a"), row(D1, "b", code="Z"), row(D2, "c"), row(D2, "d"), row(D2, "e"))
    result = gate(data, QualityContract(model=flag_model(Severity.FAIL_PARTITION)), D1, D2)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        publish_partitions(
            conn,
            PublishRequest(
                contract=ITEMS,
                owned_partitions=(D1, D2),
                run_id="run-blocked",
                as_of=AS_OF,
                data=result.accepted,
                rejects=result.rejects,
                blocked=result.blocked,
                reconciliation=result.reconciliation,
            ),
        )
        published = conn.execute(f"SELECT count(*) FROM {ITEMS.table}").fetchone()[0]
        kept = conn.execute(
            f"SELECT partition_date, reason, original_row FROM {BLOCKED_TABLE} "
            "WHERE run_id = 'run-blocked' ORDER BY source_line"
        ).fetchall()
    assert published == result.reconciliation["totals"]["accepted_rows"] == 3
    # Kept under the partition key (a day's key is its YYYY-MM-DD text).
    assert [(d, r, json.loads(o)["item_id"]) for d, r, o in kept] == [
        (D1.isoformat(), "partition_blocked", "a"),
        (D1.isoformat(), "partition_blocked", "b"),
    ]
