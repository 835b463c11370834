"""A long run logs one warning line per failed rule, not one per rule and partition: each
line is an event the instance stores, and the partitions' own findings are on their
materializations and quality_gate evaluations."""

from __future__ import annotations

from datetime import date, timedelta

from ecm_assets.contracts.quality import Severity
from ecm_assets.orchestration.factory import LOGGED_PARTITIONS, warning_lines
from ecm_assets.validation.gate import Finding

DAY = date(2026, 9, 1)


def _finding(rule: str, severity: Severity, day: date | None, failed: int) -> Finding:
    return Finding(rule, severity, day, passed=False, failed=failed, message=f"{rule} failed")


def test_one_line_per_rule_naming_its_partitions_and_counting_all_rows() -> None:
    days = [DAY + timedelta(days=i) for i in range(40)]
    failures = [_finding("schema:missing_case_id", Severity.QUARANTINE_RECORD, d, 2) for d in days]
    failures += [
        _finding("freshness", Severity.WARN, None, 1),
        _finding("row_count", Severity.FAIL_PARTITION, DAY, 5),  # blocking: not a warning
    ]

    lines = warning_lines(failures)

    assert len(lines) == 2
    schema, freshness = lines
    assert schema.startswith("quality QUARANTINE_RECORD schema:missing_case_id: 80 row(s)")
    assert "in 40 partition(s)" in schema and "(40 in all)" in schema
    assert schema.count("2026-") == LOGGED_PARTITIONS
    assert "first: schema:missing_case_id failed" in schema
    assert (
        freshness
        == "quality WARN freshness: 1 row(s) in 1 partition(s) [run]; first: freshness failed"
    )
    assert not any("row_count" in line for line in lines)


def test_no_failures_no_lines() -> None:
    assert warning_lines([]) == []
