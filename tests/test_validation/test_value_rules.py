"""Declared value rules (contracts.quality TextRule / TimestampRule) in the quality gate.

Issue 11 item 2: values that are not data (an id that is a JSON object or number, a NUL byte,
50 million characters, padding, a timestamp without a zone) were published as is. Each case
below is quarantined with its own reason, or routed by the severity the rule declares.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import pandas as pd
import pyarrow as pa
import pytest

from ecm_assets.case_sla.contracts import CASE_EVENTS
from ecm_assets.case_sla.events import parse_case_events
from ecm_assets.case_sla.quality import CASE_EVENTS_QUALITY
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.contracts.quality import (
    JSON_TYPES_COLUMN,
    QualityContract,
    Severity,
    TextRule,
    TimestampRule,
)
from ecm_assets.contracts.transform import PartitionWindow, has_zone, parse_timestamps
from ecm_assets.validation.gate import Decision, GateInput, GateResult, evaluate
from tests.test_case_sla._frames import landing, org_for, raw

D2 = date(2026, 9, 2)
WIN = PartitionWindow((D2,))
HUGE = "C" * 50_000_001


def judge(frame: pd.DataFrame, quality: QualityContract = CASE_EVENTS_QUALITY) -> GateResult:
    parsed = parse_case_events(frame, WIN, org_for(D2))
    return evaluate(
        GateInput(
            contract=CASE_EVENTS,
            quality=quality,
            window=WIN,
            data=parsed.data,
            rejects=parsed.rejects,
            counts=parsed.counts,
            reference={"org_hierarchy": org_for(D2)},
            source_rows=parsed.source_rows,
        )
    )


def good(n: int) -> list[dict]:
    return [
        raw(f"G{i:03d}", f"C{i}", event_ts=f"2026-09-02T23:{i % 60:02d}:00Z", line=2 + i)
        for i in range(n)
    ]


def reasons(result: GateResult) -> dict[int, str]:
    q = result.quarantined
    return dict(zip(q["source_line"].astype(int), q["reason"], strict=True))


def with_json_types(row: dict, types: str) -> dict:
    return {**row, JSON_TYPES_COLUMN: types}


def test_hostile_ids_are_quarantined_each_with_its_own_reason():
    rows = good(200)  # 200 good rows, so 7 quarantined stay under the 5% rate
    rows += [
        # A JSON object and a JSON number the reader rendered as text.
        with_json_types(raw("H1", '{"nested": {"deep": 1}}', line=301), ";case_id=object;"),
        with_json_types(raw("4242", "C4242", line=302), ";event_id=integer;"),
        raw("H3", "C\x00x", line=303),
        raw("H4", HUGE, line=304),
        raw("H5", " C5 ", line=305),
        raw("H6", "C6", unit_id="U01 ", line=306),
        raw("H7", "C;drop table", line=307),
    ]
    result = judge(landing(*rows))

    assert reasons(result) == {
        301: "case_id_json_type",
        302: "event_id_json_type",
        303: "case_id_control_character",
        304: "case_id_too_long",
        305: "case_id_untrimmed",
        306: "unknown_unit_id",  # closed lists need no text rule: the referential check
        307: "case_id_characters",
    }
    assert result.decision == Decision.QUARANTINE_RECORDS
    assert len(result.accepted) == 200
    assert not result.accepted["case_id"].str.len().gt(64).any()
    q = result.quarantined.set_index("source_line")
    # Evidence stays short and escaped; the original row keeps the value as it arrived.
    assert q.loc[303, "failure_case"] == "C\\x00x"
    assert len(q.loc[304, "failure_case"]) <= 500
    assert json.loads(q.loc[301, "original_row"])["case_id"] == '{"nested": {"deep": 1}}'
    assert JSON_TYPES_COLUMN not in json.loads(q.loc[301, "original_row"])
    finding = next(f for f in result.findings if f.rule == "case_id_values")
    assert finding.failed == 5 and "case_id_too_long 1" in finding.message
    part = result.reconciliation["per_partition"][D2.isoformat()]
    assert part["input"] == part["accepted"] + part["quarantined"] + part["duplicate"]


def test_timestamp_without_zone_is_quarantined_not_taken_as_utc():
    rows = [*good(40), raw("N1", "C1", event_ts="2026-09-02T10:00:00", line=100)]
    result = judge(landing(*rows))

    assert reasons(result) == {100: "event_ts_without_zone"}
    assert "N1" not in set(result.accepted["event_id"])


def test_lowercase_z_and_t_are_valid_rfc3339():
    rows = [*good(40), raw("L1", "C1", event_ts="2026-09-02t10:00:00z", line=100)]
    result = judge(landing(*rows))

    assert result.quarantined.empty
    got = result.accepted.set_index("event_id").loc["L1", "event_ts"]
    assert got == pd.Timestamp("2026-09-02T10:00:00Z")


@pytest.mark.parametrize(
    "text", ["99999-09-02T10:00:00Z", "0000-09-02T10:00:00Z", "1850-09-02T10:00:00Z"]
)
def test_out_of_range_year_has_its_own_reason(text: str):
    parsed = parse_case_events(
        landing(*good(3), raw("Y1", event_ts=text, line=100)), WIN, org_for(D2)
    )
    rejects = parsed.rejects.set_index("source_line")
    assert rejects.loc[100, "reason"] == "event_ts_year_out_of_range"
    assert parse_case_events(
        landing(raw("Y2", event_ts="2026-13-45T25:99:00Z")), WIN, org_for(D2)
    ).rejects["reason"].tolist() == ["unparseable_event_ts"]


def test_declared_source_zone_reads_naive_timestamps_in_that_zone():
    values = pd.Series(["2026-09-02T10:00:00", "2026-09-02T10:00:00+00:00", None])
    berlin = TimestampRule("event_ts", source_zone="Europe/Berlin")
    parsed = parse_timestamps(values, berlin)
    assert parsed.utc.tolist()[:2] == [
        pd.Timestamp("2026-09-02T08:00:00Z"),
        pd.Timestamp("2026-09-02T10:00:00Z"),
    ]
    assert has_zone(values).tolist() == [False, True, False]

    # With a declared source zone the gate takes zone-less values as data.
    quality = replace(
        CASE_EVENTS_QUALITY,
        values=tuple(
            berlin if isinstance(v, TimestampRule) else v for v in CASE_EVENTS_QUALITY.values
        ),
    )
    rows = [*good(40), raw("N1", "C1", event_ts="2026-09-02T10:00:00", line=100)]
    assert judge(landing(*rows), quality).quarantined.empty


# --------------------------------------------------------------------------- generic rules

ITEMS = DatasetContract(
    name="value_rule_items",
    description="Items judged by the value-rule tests.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("code", "VARCHAR", nullable=False),
        Column("source_file", "VARCHAR"),
        Column("source_line", "BIGINT"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "code"),
)


def items(*codes: str | None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "business_date": pd.Series([pd.Timestamp(D2)] * len(codes), dtype="datetime64[ns]"),
            "code": pd.Series(codes, dtype=object),
            "source_file": pd.Series(["items.csv"] * len(codes), dtype=object),
            "source_line": pd.Series(range(2, 2 + len(codes)), dtype="int64"),
        }
    )


def gate_items(data: pd.DataFrame, *rules: TextRule) -> GateResult:
    return evaluate(GateInput(ITEMS, QualityContract(values=rules), WIN, data, source_rows=None))


def test_length_bounds_and_pattern_are_declared_per_column():
    rule = TextRule("code", min_length=2, max_length=4, pattern=r"[A-Z]+", trim="allow")
    result = gate_items(items("AB", "A", "ABCDE", "ab", None, ""), rule)
    assert reasons(result) == {
        3: "code_too_short",
        4: "code_too_long",
        5: "code_pattern",
        7: "code_too_short",
    }
    assert result.accepted["code"].tolist() == ["AB", None]


@pytest.mark.parametrize(
    "dtype",
    ["object", "string[pyarrow]", pd.ArrowDtype(pa.string())],
    ids=["object", "pandas_string_pyarrow", "arrow_dtype_string"],
)
def test_strip_trims_padding_before_any_rule_judges_it(dtype):
    """Whatever the text's representation: Arrow-backed text from the landing reader was
    once left unstripped, so its padded values were quarantined."""
    rule = TextRule("code", trim="strip", pattern=r"[A-Z]+", severity=Severity.QUARANTINE_RECORD)
    data = items(" AB", "CD\t", "EF", None).astype({"code": dtype})
    result = gate_items(data, rule)
    assert result.quarantined.empty
    assert result.accepted["code"].tolist()[:3] == ["AB", "CD", "EF"]
    assert pd.isna(result.accepted["code"].tolist()[3])
    assert result.accepted["code"].dtype == data["code"].dtype
    finding = next(f for f in result.findings if f.rule == "code_values")
    assert finding.value == 2.0 and "2 value(s) stripped" in finding.message


def test_value_rule_failures_route_by_their_declared_severity():
    rule = TextRule("code", severity=Severity.FAIL_PARTITION, max_length=3)
    result = gate_items(items("AB", "ABCD"), rule)
    assert result.decision == Decision.FAIL_PARTITION
    assert D2 in result.blocked and "code_too_long 1" in result.blocked[D2]
    assert result.accepted.empty

    warn = gate_items(items("AB", "ABCD"), replace(rule, severity=Severity.WARN))
    assert warn.decision == Decision.PUBLISH_WITH_WARNING
    assert len(warn.accepted) == 2


def test_a_typed_timestamp_without_source_text_cannot_pass_unchecked():
    contract = replace(
        ITEMS, name="value_rule_ts", columns=(*ITEMS.columns, Column("at", "TIMESTAMPTZ"))
    )
    data = items("AB").assign(at=pd.to_datetime(["2026-09-02T10:00:00Z"], utc=True))
    result = evaluate(
        GateInput(contract, QualityContract(values=(TimestampRule("at"),)), WIN, data)
    )
    assert result.decision == Decision.FAIL_RUN
    assert "cannot be judged" in result.summary()


def test_bad_rules_fail_when_declared():
    with pytest.raises(ValueError, match="length bounds"):
        TextRule("code", min_length=5, max_length=2)
    with pytest.raises(ValueError, match="json_types"):
        TextRule("code", json_types=("text",))
    with pytest.raises(Exception, match="Nowhere"):
        TimestampRule("at", source_zone="Mars/Nowhere")
