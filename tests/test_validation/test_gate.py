"""The quality gate (ecm_assets.validation.gate) on small hand-built frames.

Every expected number below is worked out by hand from the rules in ecm_assets.contracts.quality
and the routing in the gate: a failed check acts by its severity (INFO recorded, WARN published
with a warning, QUARANTINE_RECORD rows removed, FAIL_PARTITION partition blocked, FAIL_RUN
nothing published, MANUAL_REVIEW everything held), and every window partition reconciles
input = accepted + quarantined + duplicate + blocked.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from ecm_assets.case_sla.contracts import CASE_EVENTS, DAILY_METRICS, MONTHLY_REPORT
from ecm_assets.case_sla.events import parse_case_events
from ecm_assets.case_sla.quality import CASE_EVENTS_QUALITY, MONTHLY_REPORT_QUALITY
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.contracts.quality import (
    ControlTotal,
    Drift,
    Freshness,
    NullRate,
    QualityContract,
    QuarantineRate,
    Referential,
    RowCount,
    Severity,
    TimeBound,
    UniqueKey,
    on_failure,
)
from ecm_assets.contracts.registry import register
from ecm_assets.contracts.transform import PartitionWindow
from ecm_assets.publish.protocol import REJECT_COLUMNS
from ecm_assets.validation.gate import (
    Decision,
    Finding,
    GateInput,
    GateResult,
    evaluate,
    key_checksum,
)
from tests.test_case_sla._frames import BASE_ORG, landing, org_for, org_frame, raw, snapshot, src

D1, D2, D3 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)

_QUARANTINE = on_failure(Severity.QUARANTINE_RECORD)
_FAIL_RUN = on_failure(Severity.FAIL_RUN)

# --------------------------------------------------------------------------- test datasets

#: A small daily dataset of items; its business key is (business_date, item_id).
ITEMS = DatasetContract(
    name="gate_test_items",
    description="Items judged by the gate tests.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("item_id", "VARCHAR", nullable=False),
        Column("code", "VARCHAR"),
        Column("amount", "DOUBLE"),
        Column("event_ts", "TIMESTAMPTZ"),
        Column("source_file", "VARCHAR"),
        Column("source_line", "BIGINT"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "item_id"),
)

#: Upstream events whose counts and sums the totals dataset must reproduce.
SOURCE = DatasetContract(
    name="gate_test_source",
    description="Upstream of the control-total tests.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("event_id", "VARCHAR", nullable=False),
        Column("kind", "VARCHAR"),
        Column("amount", "DOUBLE"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "event_id"),
)

TOTALS = DatasetContract(
    name="gate_test_totals",
    description="Per-unit totals of gate_test_source.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("opened", "BIGINT"),
        Column("amount", "DOUBLE"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
)


@pytest.fixture(autouse=True)
def _registered() -> None:
    """Control totals look their upstream contract up in the registry."""
    for contract in (SOURCE, TOTALS, CASE_EVENTS, DAILY_METRICS, MONTHLY_REPORT):
        register(contract)


class ItemsModel(pa.DataFrameModel):
    """Row rules of the items: `code` (declared first) outranks `amount`."""

    business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    item_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    code: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
    amount: Series[float] = pa.Field(nullable=True, metadata=_QUARANTINE)
    event_ts: Series[Any] = pa.Field(nullable=True, metadata=_FAIL_RUN)
    source_file: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
    source_line: Series[int] = pa.Field(ge=1, metadata=_FAIL_RUN)

    @pa.check("code", name="unknown_code", ignore_na=False, statistics=_QUARANTINE)
    def _code(cls, s: pd.Series) -> pd.Series:
        return s.isin(["A", "B"])

    @pa.check("amount", name="negative_amount", statistics=_QUARANTINE)
    def _amount(cls, s: pd.Series) -> pd.Series:
        return s >= 0

    class Config:
        strict = True


def flag_model(severity: Severity) -> type[pa.DataFrameModel]:
    """A fresh items model whose only row rule (`flagged_code`: code Z) has `severity`."""

    class FlagModel(pa.DataFrameModel):
        business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        item_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        code: Series[Any] = pa.Field(nullable=True, metadata=on_failure(severity))
        amount: Series[float] = pa.Field(nullable=True, metadata=_FAIL_RUN)
        event_ts: Series[Any] = pa.Field(nullable=True, metadata=_FAIL_RUN)
        source_file: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        source_line: Series[int] = pa.Field(ge=1, metadata=_FAIL_RUN)

        @pa.check("code", name="flagged_code", statistics=on_failure(severity))
        def _flag(cls, s: pd.Series) -> pd.Series:
            return s != "Z"

        class Config:
            strict = True

    return FlagModel


Row = tuple[date, str, str | None, float | None, str | None]


def row(
    day: date, item_id: str, code: str | None = "A", amount: float | None = 1.0, at: str = "12:00"
) -> Row:
    """One item row; `at` is the UTC time of day of its event_ts on its business date."""
    return (day, item_id, code, amount, f"{day.isoformat()}T{at}:00Z")


def items(*rows: Row) -> pd.DataFrame:
    """The staged items frame; source_line counts from 2 in the given order."""
    return pd.DataFrame(
        {
            "business_date": pd.to_datetime([r[0] for r in rows]).astype("datetime64[ns]"),
            "item_id": pd.Series([r[1] for r in rows], dtype=object),
            "code": pd.Series([r[2] for r in rows], dtype=object),
            "amount": pd.Series([r[3] for r in rows], dtype="float64"),
            "event_ts": pd.to_datetime([r[4] for r in rows], utc=True),
            "source_file": pd.Series(["items.csv"] * len(rows), dtype=object),
            "source_line": pd.Series(range(2, 2 + len(rows)), dtype="int64"),
        }
    )


def gate(
    data: pd.DataFrame,
    quality: QualityContract,
    *days: date,
    contract: DatasetContract = ITEMS,
    **extra: Any,
) -> GateResult:
    """The gate on `data` for the window of `days`."""
    return evaluate(
        GateInput(
            contract=contract,
            quality=quality,
            window=PartitionWindow(tuple(days)),
            data=data,
            **extra,
        )
    )


def finding(result: GateResult, rule: str, partition: date | None) -> Finding:
    """The single finding of `rule` on `partition`."""
    hits = [f for f in result.findings if f.rule == rule and f.partition == partition]
    assert len(hits) == 1, [f for f in result.findings if f.rule == rule]
    return hits[0]


def part(result: GateResult, day: date) -> dict[str, Any]:
    """The reconciliation record of one partition."""
    return result.reconciliation["per_partition"][day.isoformat()]


def numbers(result: GateResult, day: date, *keys: str) -> tuple[Any, ...]:
    """Selected values of one partition's reconciliation record."""
    return tuple(part(result, day)[k] for k in keys)


def quarantine_rows(result: GateResult) -> list[tuple[Any, ...]]:
    """(partition, source_line, reason, column_name, failure_case) of every quarantined row."""
    q = result.quarantined
    return [
        (
            pd.Timestamp(r.partition_date).date(),
            None if pd.isna(r.source_line) else int(r.source_line),
            r.reason,
            None if pd.isna(r.column_name) else r.column_name,
            None if pd.isna(r.failure_case) else r.failure_case,
        )
        for r in q.itertuples()
    ]


# --------------------------------------------------------------------------- INFO


def test_info_null_rate_is_recorded_and_nothing_is_removed():
    data = items(
        row(D1, "a"),
        row(D1, "b", amount=None),
        row(D1, "c"),
        row(D1, "d"),
        row(D2, "e"),
        row(D2, "f"),
    )
    result = gate(data, QualityContract(rules=(NullRate("amount", Severity.INFO),)), D1, D2)

    assert result.decision == Decision.PUBLISH
    # 1 null of 4 rows on 09-01, none of 2 on 09-02; INFO never fails.
    f1 = finding(result, "null_rate_amount", D1)
    assert (f1.passed, f1.severity, f1.value) == (True, Severity.INFO, 0.25)
    assert (f1.checked, f1.failed) == (4, 0)
    f2 = finding(result, "null_rate_amount", D2)
    assert (f2.passed, f2.value, f2.checked) == (True, 0.0, 2)
    assert result.failures == []
    assert len(result.accepted) == 6
    assert result.quarantined.empty
    assert list(result.quarantined.columns) == REJECT_COLUMNS
    assert result.blocked == {}


def test_null_rate_above_its_cap_warns():
    data = items(row(D1, "a"), row(D1, "b", amount=None), row(D1, "c", amount=None), row(D1, "d"))
    rule = NullRate("amount", Severity.WARN, max_fraction=0.25)
    result = gate(data, QualityContract(rules=(rule,)), D1)
    # 2 of 4 = 50% > 25%.
    f = finding(result, "null_rate_amount", D1)
    assert (f.passed, f.failed, f.value) == (False, 2, 0.5)
    assert f.message == "50.00% nulls in amount, more than 25.00%"
    assert result.decision == Decision.PUBLISH_WITH_WARNING
    assert len(result.accepted) == 4


# --------------------------------------------------------------------------- WARN


def test_stale_partition_is_published_with_a_warning():
    # 09-01: newest event 12:00 -> 12 h before midnight (> 6 h). 09-02: newest 20:00 -> 4 h.
    data = items(
        row(D1, "a", at="08:00"),
        row(D1, "b", at="12:00"),
        row(D2, "c", at="09:00"),
        row(D2, "d", at="20:00"),
    )
    rule = Freshness("event_ts", max_lag=timedelta(hours=6), severity=Severity.WARN)
    result = gate(data, QualityContract(rules=(rule,)), D1, D2)

    assert result.decision == Decision.PUBLISH_WITH_WARNING
    assert len(result.accepted) == 4
    assert result.quarantined.empty
    assert result.blocked == {}
    assert [(f.rule, f.severity, f.partition) for f in result.failures] == [
        ("freshness", Severity.WARN, D1)
    ]
    stale = finding(result, "freshness", D1)
    assert stale.value == 12.0
    assert stale.message == (
        "newest event_ts 2026-09-01 12:00:00+00:00 is 12.0 h before the end of the "
        "partition (max 6.0 h)"
    )
    fresh = finding(result, "freshness", D2)
    assert (fresh.passed, fresh.value) == (True, 4.0)
    # A warning does not block, so it is not in the blocking summary, but the manifest has it.
    assert result.summary() == ""
    assert result.to_json()["failures"][0]["partition"] == "2026-09-01"


def test_unexpected_landing_column_warns():
    data = items(row(D1, "a"))
    issues = [{"file": "items.csv", "extra_columns": ["colour"]}]
    result = gate(data, QualityContract(), D1, landing_issues=issues)
    assert result.decision == Decision.PUBLISH_WITH_WARNING
    f = finding(result, "landing_columns", None)
    assert (f.severity, f.failed, f.sample) == (Severity.WARN, 1, ("colour",))
    assert len(result.accepted) == 1


# --------------------------------------------------------------------------- QUARANTINE_RECORD


def _quarantine_frame() -> pd.DataFrame:
    return items(
        row(D1, "a"),  # line 2: clean
        row(D1, "b", code="Z"),  # line 3: unknown_code
        row(D1, "c", code="Z", amount=-1.0),  # line 4: unknown_code and negative_amount
        row(D1, "d", amount=-3.0),  # line 5: negative_amount
        row(D1, "e", code="B"),  # line 6: clean
        row(D2, "f", code=None),  # line 7: unknown_code (null)
        row(D2, "g"),  # line 8: clean
    )


def test_failing_rows_are_quarantined_once_with_their_first_rule():
    result = gate(_quarantine_frame(), QualityContract(model=ItemsModel), D1, D2)

    assert result.decision == Decision.QUARANTINE_RECORDS
    assert result.blocked == {}
    assert list(result.quarantined.columns) == REJECT_COLUMNS
    # One row per failing input row; row c fails both rules and keeps unknown_code, whose
    # column comes first in the model (lower rank).
    assert quarantine_rows(result) == [
        (D1, 3, "unknown_code", "code", "Z"),
        (D1, 4, "unknown_code", "code", "Z"),
        (D1, 5, "negative_amount", "amount", "-3.0"),
        (D2, 7, "unknown_code", "code", None),
    ]
    assert (result.quarantined["source_file"] == "items.csv").all()
    assert result.accepted["item_id"].tolist() == ["a", "e", "g"]

    # Without source_rows, original_row is the staged row as JSON.
    original = json.loads(result.quarantined.loc[1, "original_row"])
    assert original == {
        "business_date": "2026-09-01 00:00:00",
        "item_id": "c",
        "code": "Z",
        "amount": -1.0,
        "event_ts": "2026-09-01 12:00:00+00:00",
        "source_file": "items.csv",
        "source_line": 4,
    }

    # The findings count every failing row, also the one quarantined by the other rule.
    code_d1 = finding(result, "schema:unknown_code", D1)
    assert (code_d1.passed, code_d1.severity) == (False, Severity.QUARANTINE_RECORD)
    assert (code_d1.failed, code_d1.checked) == (2, 5)
    assert code_d1.sample == ("Z", "Z")
    assert code_d1.message == "2 row(s) failed unknown_code on column code"
    assert finding(result, "schema:unknown_code", D2).failed == 1
    amount_d1 = finding(result, "schema:negative_amount", D1)
    assert (amount_d1.failed, amount_d1.sample) == (2, ("-1.0", "-3.0"))
    assert finding(result, "schema:negative_amount", D2).passed

    assert part(result, D1) | {"business_key_checksum": None} == {
        "input": 5,
        "accepted": 2,
        "quarantined": 3,
        "quarantined_by_gate": 3,
        "rejected_at_parse": 0,
        "duplicate": 0,
        "blocked": 0,
        "identity": "input = accepted + quarantined + duplicate + blocked",
        "identity_holds": True,
        "business_key_checksum": None,
        "control_totals": {},
    }
    assert (part(result, D2)["input"], part(result, D2)["accepted"]) == (2, 1)
    assert part(result, D2)["quarantined"] == 1
    assert result.reconciliation["status"] == "PASSED"
    assert result.reconciliation["totals"] == {
        "input_rows": 7,
        "accepted_rows": 3,
        "quarantined_rows": 4,
        "duplicate_rows": 0,
        "blocked_rows": 0,
    }


def test_quarantined_original_row_comes_from_the_source_rows():
    data = items(row(D1, "a"), row(D1, "b", code="Z"))
    source_rows = pd.DataFrame({"item_id": ["a", "b"], "code": [" a ", "z "]})
    result = gate(data, QualityContract(model=ItemsModel), D1, source_rows=source_rows)
    assert result.quarantined["reason"].tolist() == ["unknown_code"]
    assert json.loads(result.quarantined.loc[0, "original_row"]) == {"item_id": "b", "code": "z "}


def test_frame_check_quarantines_a_row_once():
    class PairModel(pa.DataFrameModel):
        business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        item_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        code: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)
        amount: Series[float] = pa.Field(nullable=True, metadata=_QUARANTINE)

        @pa.dataframe_check(name="amount_without_code", statistics=_QUARANTINE)
        def _pair(cls, df: pd.DataFrame) -> pd.Series:
            return df["code"].notna() | df["amount"].isna()

    data = items(row(D1, "a"), row(D1, "b", code=None), row(D1, "c", code=None, amount=None))
    data = data[["business_date", "item_id", "code", "amount"]]
    result = gate(data, QualityContract(model=PairModel), D1)
    # pandera reports every column of row b; it is still quarantined (and counted) once.
    assert result.quarantined["reason"].tolist() == ["amount_without_code"]
    assert result.quarantined["column_name"].isna().all()
    assert result.accepted["item_id"].tolist() == ["a", "c"]
    assert finding(result, "schema:amount_without_code", D1).failed == 1
    assert part(result, D1)["identity_holds"] is True


# --------------------------------------------------------------------------- every severity


@pytest.mark.parametrize(
    ("severity", "decision", "accepted", "quarantined", "blocked"),
    [
        (Severity.INFO, Decision.PUBLISH, ["a", "b", "c"], [], {}),
        (Severity.WARN, Decision.PUBLISH_WITH_WARNING, ["a", "b", "c"], [], {}),
        (Severity.QUARANTINE_RECORD, Decision.QUARANTINE_RECORDS, ["a", "c"], ["b"], {}),
        (Severity.FAIL_PARTITION, Decision.FAIL_PARTITION, ["c"], [], {D1}),
        (Severity.FAIL_RUN, Decision.FAIL_RUN, ["a", "b", "c"], [], set()),
        (Severity.MANUAL_REVIEW, Decision.MANUAL_REVIEW, ["a", "b", "c"], [], set()),
    ],
)
def test_a_row_rule_is_routed_by_its_severity(
    severity: Severity,
    decision: Decision,
    accepted: list[str],
    quarantined: list[str],
    blocked: set[date],
):
    # Row b on 09-01 fails flagged_code; 09-02 is clean.
    data = items(row(D1, "a"), row(D1, "b", code="Z"), row(D2, "c"))
    result = gate(data, QualityContract(model=flag_model(severity)), D1, D2)

    assert result.decision == decision
    assert result.accepted["item_id"].tolist() == accepted
    got = [json.loads(r)["item_id"] for r in result.quarantined["original_row"]]
    assert got == quarantined
    assert set(result.blocked) == set(blocked)
    failed = finding(result, "schema:flagged_code", D1)
    assert (failed.passed, failed.severity) == (False, severity)
    assert (failed.failed, failed.checked) == (1, 2)
    assert finding(result, "schema:flagged_code", D2).passed
    assert result.worst() == severity
    assert result.worst(D2) is None
    # The counts reconcile whatever the routing.
    assert result.reconciliation["status"] == "PASSED"


# --------------------------------------------------------------------------- FAIL_PARTITION


def test_empty_partition_is_blocked_and_the_other_published():
    data = items(row(D1, "a"), row(D1, "b"))
    rule = RowCount(Severity.FAIL_PARTITION, min_rows=1)
    result = gate(data, QualityContract(rules=(rule,)), D1, D2)

    assert result.decision == Decision.FAIL_PARTITION
    assert result.blocked == {D2: "row_count: 0 row(s), expected [1, ∞]"}
    assert result.accepted["item_id"].tolist() == ["a", "b"]
    assert (pd.to_datetime(result.accepted["business_date"]).dt.date == D1).all()
    f1, f2 = finding(result, "row_count", D1), finding(result, "row_count", D2)
    assert (f1.passed, f1.value) == (True, 2.0)
    assert (f2.passed, f2.value, f2.severity) == (False, 0.0, Severity.FAIL_PARTITION)
    assert part(result, D2) | {"business_key_checksum": None} == {
        "input": 0,
        "accepted": 0,
        "quarantined": 0,
        "quarantined_by_gate": 0,
        "rejected_at_parse": 0,
        "duplicate": 0,
        "blocked": 0,
        "identity": "input = accepted + quarantined + duplicate + blocked",
        "identity_holds": True,
        "business_key_checksum": None,
        "control_totals": {},
    }
    assert part(result, D2)["business_key_checksum"] == "k1:empty"


def test_row_count_above_its_maximum_blocks():
    data = items(row(D1, "a"), row(D1, "b"), row(D1, "c"), row(D2, "d"))
    rule = RowCount(Severity.FAIL_PARTITION, min_rows=1, max_rows=2)
    result = gate(data, QualityContract(rules=(rule,)), D1, D2)
    assert result.blocked == {D1: "row_count: 3 row(s), expected [1, 2]"}
    assert result.accepted["item_id"].tolist() == ["d"]


def test_quarantine_rate_above_the_cap_blocks_only_that_partition():
    # 09-01: 1 of 20 rows quarantined = 5.00%, not more than 5% -> published.
    # 09-02: 1 of 10 rows quarantined = 10.00% -> blocked.
    rows_d1 = [row(D1, f"a{i:02d}") for i in range(19)] + [row(D1, "bad1", code="Z")]
    rows_d2 = [row(D2, f"b{i:02d}") for i in range(9)] + [row(D2, "bad2", code="Z")]
    quality = QualityContract(model=ItemsModel, rules=(QuarantineRate(0.05),))
    result = gate(items(*rows_d1, *rows_d2), quality, D1, D2)

    assert result.decision == Decision.FAIL_PARTITION
    assert result.blocked == {
        D2: "quarantine_rate: 1 of 10 rows quarantined (10.00%), more than 5.00%"
    }
    assert result.accepted["item_id"].tolist() == [f"a{i:02d}" for i in range(19)]
    assert [json.loads(r)["item_id"] for r in result.quarantined["original_row"]] == [
        "bad1",
        "bad2",
    ]
    r1, r2 = finding(result, "quarantine_rate", D1), finding(result, "quarantine_rate", D2)
    assert (r1.passed, r1.value, r1.checked) == (True, 0.05, 20)
    assert (r2.passed, r2.value, r2.failed, r2.checked) == (False, 0.1, 1, 10)
    assert r2.severity == Severity.FAIL_PARTITION
    # The blocked partition's rows that passed the row rules are withheld, not accepted.
    assert numbers(result, D2, "input", "accepted", "blocked") == (10, 0, 9)
    assert part(result, D2)["identity_holds"] is True


# --------------------------------------------------------------------------- FAIL_RUN


def test_missing_column_fails_the_run():
    data = items(row(D1, "a"), row(D1, "b")).drop(columns="code")
    result = gate(data, QualityContract(model=ItemsModel), D1)

    assert result.decision == Decision.FAIL_RUN
    schema = finding(result, "schema", None)
    assert (schema.passed, schema.severity, schema.column) == (False, Severity.FAIL_RUN, "code")
    assert schema.message == "missing_column: column code is missing from the output"
    assert "missing_column" in result.summary()
    assert result.blocked == {}


def test_missing_column_may_be_declared_a_warning():
    class OptionalCodeModel(pa.DataFrameModel):
        business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        item_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        code: Series[Any] = pa.Field(
            nullable=True, metadata=on_failure(Severity.QUARANTINE_RECORD, missing=Severity.WARN)
        )

    data = items(row(D1, "a"))[["business_date", "item_id"]]
    result = gate(data, QualityContract(model=OptionalCodeModel), D1)
    assert result.decision == Decision.PUBLISH_WITH_WARNING
    assert finding(result, "schema", None).severity == Severity.WARN
    assert len(result.accepted) == 1


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (None, "partition column business_date is missing"),
        (ItemsModel, "missing_column: column business_date is missing from the output"),
    ],
)
def test_missing_partition_column_fails_the_run(
    model: type[pa.DataFrameModel] | None, message: str
):
    data = items(row(D1, "a")).drop(columns="business_date")
    result = gate(data, QualityContract(model=model), D1)
    assert result.decision == Decision.FAIL_RUN
    assert finding(result, "schema", None).message == message


def test_missing_partition_column_of_an_empty_frame_fails_the_run():
    data = items(row(D1, "a")).iloc[:0].drop(columns="business_date")
    result = gate(data, QualityContract(), D1)
    assert result.decision == Decision.FAIL_RUN
    assert finding(result, "schema", None).message == "partition column business_date is missing"


def test_duplicate_business_key_fails_the_run():
    # (09-01, a) twice; "a" again on 09-02 is another key.
    data = items(row(D1, "a"), row(D1, "a", code="B"), row(D1, "b"), row(D2, "a"))
    result = gate(data, QualityContract(rules=(UniqueKey(Severity.FAIL_RUN),)), D1, D2)

    assert result.decision == Decision.FAIL_RUN
    dup = finding(result, "duplicate_key", D1)
    assert (dup.passed, dup.failed, dup.checked) == (False, 1, 3)
    assert dup.column == "business_date,item_id"
    assert dup.sample == ("2026-09-01 00:00:00|a",)
    assert finding(result, "duplicate_key", D2).passed
    assert "FAIL_RUN duplicate_key [2026-09-01]: 1 row(s) repeat business key" in result.summary()


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        # 3 staged rows, but the transform read 5 and accounts for only 3 of them.
        (
            {"read": 5, "kept": 3, "rejected": 0, "duplicate": 0},
            "input 5 != accepted 3 + quarantined 0 + duplicate 0 (transform kept 3, staged 3)",
        ),
        # The counts add up, but the transform says it kept 4 rows and only 3 were staged.
        (
            {"read": 4, "kept": 4, "rejected": 0, "duplicate": 0},
            "input 4 != accepted 3 + quarantined 0 + duplicate 0 (transform kept 4, staged 3)",
        ),
        (
            {"read": 3, "kept": 4, "rejected": 0, "duplicate": 0},
            "input 3 != accepted 3 + quarantined 0 + duplicate 0 (transform kept 4, staged 3)",
        ),
    ],
)
def test_broken_count_identity_fails_the_run(counts: dict[str, int], message: str):
    data = items(row(D1, "a"), row(D1, "b"), row(D1, "c"))
    frame = pd.DataFrame([counts], index=pd.Index([D1], name="partition"))
    result = gate(data, QualityContract(), D1, counts=frame)

    assert result.decision == Decision.FAIL_RUN
    rec = finding(result, "reconciliation", D1)
    assert (rec.passed, rec.severity) == (False, Severity.FAIL_RUN)
    assert rec.message == f"{message}: rows would be lost"
    assert result.reconciliation["status"] == "BROKEN"
    assert part(result, D1)["identity_holds"] is False


def test_matching_counts_reconcile():
    data = items(row(D1, "a"), row(D1, "b"), row(D1, "c"))
    frame = pd.DataFrame(
        [{"read": 3, "kept": 3, "rejected": 0, "duplicate": 0}],
        index=pd.Index([D1], name="partition"),
    )
    result = gate(data, QualityContract(), D1, counts=frame)
    assert result.decision == Decision.PUBLISH
    assert result.reconciliation["status"] == "PASSED"


# --------------------------------------------------------------------------- MANUAL_REVIEW

AUG = date(2026, 8, 1)


def report(*rows: tuple[str, str, int, int]) -> pd.DataFrame:
    """Monthly report rows of August 2026: (region, unit_id, cases_opened, sla_breached)."""
    n = len(rows)
    opened = pd.Series([r[2] for r in rows], dtype="int64")
    breached = pd.Series([r[3] for r in rows], dtype="int64")
    return pd.DataFrame(
        {
            "report_month": pd.Series([pd.Timestamp(AUG)] * n, dtype="datetime64[ns]"),
            "region": pd.Series([r[0] for r in rows], dtype=object),
            "unit_id": pd.Series([r[1] for r in rows], dtype=object),
            "days_reported": pd.Series([31] * n, dtype="int64"),
            "cases_opened": opened,
            "cases_resolved": opened,
            "cases_escalated": pd.Series([0] * n, dtype="int64"),
            "cases_reopened": pd.Series([0] * n, dtype="int64"),
            "sla_breached": breached,
            "breach_rate": breached / opened,
        }
    )


def daily_upstream(frame: pd.DataFrame) -> pd.DataFrame:
    """Daily metrics whose August totals match `frame`: each row split over Aug 3 and Aug 20,
    plus a September row the August partition must not count."""
    rows = []
    for r in frame.itertuples():
        half_o, half_b = r.cases_opened // 2, r.sla_breached // 2
        rows.append(("2026-08-03", half_o, half_b))
        rows.append(("2026-08-20", r.cases_opened - half_o, r.sla_breached - half_b))
    rows.append(("2026-09-01", 1000, 1000))
    return pd.DataFrame(
        {
            "business_date": pd.to_datetime([r[0] for r in rows]).astype("datetime64[ns]"),
            "cases_opened": [r[1] for r in rows],
            "sla_breached": [r[2] for r in rows],
        }
    )


PUBLISHED_AUG = report(("North", "U01", 300, 60), ("South", "U02", 200, 40))  # 100 breaches


@pytest.mark.parametrize(
    ("breaches", "closed", "decision", "drift"),
    [
        # 100 -> 103 breaches (3.0% > 2%) in a closed month: a human must look.
        ((63, 40), True, Decision.MANUAL_REVIEW, (False, 0.03)),
        # Same move, but the month is still open: not a restatement, no drift rule.
        ((63, 40), False, Decision.PUBLISH, None),
        # 100 -> 102 (2.0%, not more than 2%) in a closed month.
        ((61, 41), True, Decision.PUBLISH, (True, 0.02)),
    ],
)
def test_restating_a_closed_month(
    breaches: tuple[int, int],
    closed: bool,
    decision: Decision,
    drift: tuple[bool, float] | None,
):
    new = report(("North", "U01", 300, breaches[0]), ("South", "U02", 200, breaches[1]))
    result = gate(
        new,
        MONTHLY_REPORT_QUALITY,
        AUG,
        contract=MONTHLY_REPORT,
        upstream={"case_sla_daily_metrics": daily_upstream(new)},
        published=PUBLISHED_AUG,
        closed=frozenset({AUG}) if closed else frozenset(),
    )

    assert result.decision == decision
    assert len(result.accepted) == 2
    assert result.blocked == {}
    drifts = [f for f in result.findings if f.rule == "drift_sla_breached"]
    if drift is None:
        assert drifts == []
    else:
        assert [(f.passed, f.value, f.severity) for f in drifts] == [
            (*drift, Severity.MANUAL_REVIEW)
        ]
    if decision == Decision.MANUAL_REVIEW:
        assert result.summary() == (
            "MANUAL_REVIEW drift_sla_breached [2026-08-01]: sla_breached moves from 100 to 103 "
            "(3.0%, more than 2.0%) in a closed period"
        )
    # The monthly control totals sum the August daily rows only.
    assert part(result, AUG)["control_totals"] == {
        "opened_total": {"input": 500.0, "output": 500.0},
        "breached_total": {"input": float(sum(breaches)), "output": float(sum(breaches))},
    }


def test_drift_without_a_published_version_is_not_checked():
    new = report(("North", "U01", 300, 90))
    result = gate(
        new,
        MONTHLY_REPORT_QUALITY,
        AUG,
        contract=MONTHLY_REPORT,
        upstream={"case_sla_daily_metrics": daily_upstream(new)},
        closed=frozenset({AUG}),
    )
    assert result.decision == Decision.PUBLISH
    assert [f for f in result.findings if f.rule == "drift_sla_breached"] == []


def test_drift_below_the_absolute_floor_passes():
    # 10 -> 14 is +40%, but only 4 in absolute terms (floor 5).
    published = items(row(D1, "a", amount=10.0))
    new = items(row(D1, "a", amount=14.0))
    rule = Drift("amount", 0.1, Severity.WARN, min_absolute_change=5)
    result = gate(new, QualityContract(rules=(rule,)), D1, published=published)
    assert result.decision == Decision.PUBLISH
    assert finding(result, "drift_amount", D1).value == 0.4
    wider = gate(
        items(row(D1, "a", amount=16.0)),
        QualityContract(rules=(rule,)),
        D1,
        published=published,
    )
    assert wider.decision == Decision.PUBLISH_WITH_WARNING
    assert finding(wider, "drift_amount", D1).value == 0.6


@pytest.mark.parametrize(
    ("quality", "bad"),
    [
        # Quarantined by a row check of the model (judged before the dataset rules)...
        (
            QualityContract(model=ItemsModel, rules=(Drift("amount", 0.1, Severity.WARN),)),
            row(D1, "b", code="Z", amount=1000.0),
        ),
        # ... or by a time bound, which is judged after them.
        (
            QualityContract(
                rules=(Drift("amount", 0.1, Severity.WARN),),
                time_bounds=(TimeBound("event_ts", severity=Severity.QUARANTINE_RECORD),),
            ),
            (D1, "b", "A", 1000.0, "2026-08-31T23:00:00Z"),
        ),
    ],
)
def test_quarantined_rows_do_not_move_the_drift_metric(quality: QualityContract, bad: Row):
    # Published: 10 + 5 = 15. Staged: the same rows plus one of 1000 the gate quarantines;
    # only the rows that would be published are compared: 15 -> 15.
    published = items(row(D1, "a", amount=10.0), row(D1, "c", amount=5.0))
    data = items(row(D1, "a", amount=10.0), bad, row(D1, "c", amount=5.0))
    result = gate(data, quality, D1, published=published)

    assert [r[1] for r in quarantine_rows(result)] == [3]
    assert result.accepted["item_id"].tolist() == ["a", "c"]
    drift = finding(result, "drift_amount", D1)
    assert (drift.passed, drift.value, drift.message) == (True, 0.0, "")
    assert result.decision == Decision.QUARANTINE_RECORDS


def test_drift_still_sees_a_move_of_the_rows_that_are_published():
    published = items(row(D1, "a", amount=10.0), row(D1, "c", amount=5.0))
    data = items(
        row(D1, "a", amount=20.0), row(D1, "b", code="Z", amount=1000.0), row(D1, "c", amount=5.0)
    )
    rules = (Drift("amount", 0.1, Severity.WARN), RowCount(Severity.WARN))
    result = gate(data, QualityContract(model=ItemsModel, rules=rules), D1, published=published)

    drift = finding(result, "drift_amount", D1)
    assert (drift.passed, drift.value) == (False, 0.666667)
    assert drift.message == "amount moves from 15 to 25 (66.7%, more than 10.0%)"
    # The drift finding keeps its place among the findings: in the order of the rules.
    assert [f.rule for f in result.findings] == [
        "schema:unknown_code",
        "drift_amount",
        "row_count",
        "reconciliation",
    ]
    assert result.decision == Decision.QUARANTINE_RECORDS


# --------------------------------------------------------------------------- reconciliation


def test_reconciliation_counts_parse_rejects_gate_quarantine_and_duplicates():
    # 09-01: 4 staged (b quarantined by the gate), 2 rejected at parse, 1 duplicate -> read 7.
    # 09-02: 2 staged, 1 rejected at parse -> read 3.
    data = items(
        row(D1, "a"), row(D1, "b", code="Z"), row(D1, "c"), row(D1, "d"), row(D2, "e"), row(D2, "f")
    )
    rejects = pd.DataFrame(
        {
            "partition_date": pd.to_datetime(["2026-09-01", "2026-09-01", "2026-09-02"]),
            "source_file": ["items.csv"] * 3,
            "source_line": [20, 21, 22],
            "reason": ["malformed_line", "missing_item_id", "malformed_line"],
            "column_name": [None, "item_id", None],
            "failure_case": ["x", "", "y"],
            "original_row": ["{}", "{}", "{}"],
        }
    )[REJECT_COLUMNS]
    counts = pd.DataFrame(
        {"read": [7, 3], "kept": [4, 2], "rejected": [2, 1], "duplicate": [1, 0]},
        index=pd.Index([D1, D2], name="partition"),
    )
    result = gate(data, QualityContract(model=ItemsModel), D1, D2, rejects=rejects, counts=counts)

    assert result.decision == Decision.QUARANTINE_RECORDS
    keys = ("input", "accepted", "quarantined", "duplicate")
    assert numbers(result, D1, *keys) == (7, 3, 3, 1)
    assert numbers(result, D2, *keys) == (3, 2, 1, 0)
    by_whom = ("quarantined_by_gate", "rejected_at_parse")
    assert numbers(result, D1, *by_whom) == (1, 2)
    assert numbers(result, D2, *by_whom) == (0, 1)
    assert all(part(result, d)["identity_holds"] for d in (D1, D2))
    assert result.reconciliation["totals"] == {
        "input_rows": 10,
        "accepted_rows": 5,
        "quarantined_rows": 4,
        "duplicate_rows": 1,
        "blocked_rows": 0,
    }
    # Parse rejects first, then the gate's.
    assert result.quarantined["reason"].tolist() == [
        "malformed_line",
        "missing_item_id",
        "malformed_line",
        "unknown_code",
    ]
    assert result.metrics["quarantined_rows"] == 4.0


def test_parse_rejects_alone_make_a_quarantine_decision():
    rejects = pd.DataFrame(
        {
            "partition_date": pd.to_datetime(["2026-09-01"]),
            "source_file": ["items.csv"],
            "source_line": [9],
            "reason": ["malformed_line"],
            "column_name": [None],
            "failure_case": ["x"],
            "original_row": ["{}"],
        }
    )
    result = gate(items(row(D1, "a")), QualityContract(), D1, rejects=rejects)
    assert result.decision == Decision.QUARANTINE_RECORDS
    assert (part(result, D1)["input"], part(result, D1)["quarantined"]) == (2, 1)


def test_business_key_checksum_ignores_order_and_sees_a_changed_key():
    rows = [row(D1, "a"), row(D1, "b"), row(D1, "c"), row(D2, "d"), row(D2, "e")]
    base = gate(items(*rows), QualityContract(), D1, D2)
    shuffled = items(*rows).sample(frac=1, random_state=3)
    assert shuffled["item_id"].tolist() != ["a", "b", "c", "d", "e"]
    again = gate(shuffled, QualityContract(), D1, D2)
    changed = gate(items(*rows[:2], row(D1, "x"), *rows[3:]), QualityContract(), D1, D2)

    for d in (D1, D2):
        assert part(base, d)["business_key_checksum"].startswith("k1:")
        assert part(again, d)["business_key_checksum"] == part(base, d)["business_key_checksum"]
    assert part(changed, D1)["business_key_checksum"] != part(base, D1)["business_key_checksum"]
    assert part(changed, D2)["business_key_checksum"] == part(base, D2)["business_key_checksum"]
    assert part(base, D1)["business_key_checksum"] != part(base, D2)["business_key_checksum"]


def test_business_key_checksum_covers_only_accepted_rows():
    clean = gate(items(row(D1, "a"), row(D1, "c")), QualityContract(model=ItemsModel), D1)
    with_bad = gate(
        items(row(D1, "a"), row(D1, "b", code="Z"), row(D1, "c")),
        QualityContract(model=ItemsModel),
        D1,
    )
    assert part(with_bad, D1)["accepted"] == 2
    assert part(with_bad, D1)["business_key_checksum"] == part(clean, D1)["business_key_checksum"]


@pytest.mark.parametrize("with_nulls", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_business_key_checksum_is_key_checksum_of_the_accepted_rows(
    with_nulls: bool, shuffle: bool
):
    # Keys hashed once for all rows give what key_checksum gives on each partition's
    # accepted rows, with null keys or not, partitions in order or interleaved.
    rows = [
        row(D1, "a"),
        row(D2, "b"),
        row(D1, "c"),
        (D1, "q", "A", 1.0, "2026-08-31T23:00:00Z"),  # quarantined by the time bound
        row(D2, "d"),
        row(D1, "e"),
    ]
    if with_nulls:
        rows += [row(D1, None), row(D2, None)]  # type: ignore[arg-type]
    data = items(*rows)
    if shuffle:
        data = data.sample(frac=1, random_state=7)
    bound = TimeBound("event_ts", severity=Severity.QUARANTINE_RECORD)
    result = gate(data, QualityContract(time_bounds=(bound,)), D1, D2)

    assert result.accepted["item_id"].tolist().count("q") == 0
    for d in (D1, D2):
        accepted = result.accepted[result.accepted["business_date"] == pd.Timestamp(d)]
        assert part(result, d)["business_key_checksum"] == key_checksum(
            accepted, ITEMS.business_key
        )


def test_duplicate_keys_are_the_rows_dataframe_duplicated_finds():
    # 0.0 and -0.0 are one key, and so are two missing amounts.
    data = items(
        row(D1, "a", amount=0.0),
        row(D1, "b", amount=-0.0),
        row(D1, "c", amount=None),
        row(D1, "d", amount=None),
        row(D2, "e", amount=0.0),
    )
    rule = UniqueKey(Severity.WARN, columns=("business_date", "amount"))
    result = gate(data, QualityContract(rules=(rule,)), D1, D2)

    assert data.duplicated(["business_date", "amount"]).tolist() == [0, 1, 0, 1, 0]
    assert finding(result, "duplicate_key", D1).failed == 2
    assert finding(result, "duplicate_key", D2).passed


def test_original_row_is_the_json_of_the_source_row():
    # Every kind of value a source row may hold, written as json.dumps(row, sort_keys=True,
    # default=str) writes it.
    source = pd.DataFrame(
        {
            "text": ["b", 'q"\u00e9\u2028\\'],
            "missing": [None, float("nan")],
            "count": pd.Series([3, -1], dtype="int64"),
            "ratio": [0.1, float("-inf")],
            "flag": [True, False],
            "at": pd.to_datetime(["2026-09-01T12:00:00.123456789Z", None], utc=True),
            "day": pd.to_datetime(
                ["2026-09-01 00:00:00", "2026-09-01 00:00:00.5"], format="ISO8601"
            ),
            "local": pd.to_datetime(
                ["2026-09-01T12:00Z", "2026-03-01T12:00Z"], utc=True
            ).tz_convert("Europe/Paris"),
            "other": pd.Series([{"k": [1, None]}, np.int64(7)], dtype=object),
        }
    )
    data = items(row(D1, "a", code="Z"), row(D1, "b", code="Z"))
    result = gate(data, QualityContract(model=ItemsModel), D1, source_rows=source)

    assert result.quarantined["original_row"].tolist() == [
        json.dumps(dict(zip(source.columns, values, strict=True)), sort_keys=True, default=str)
        for values in source.itertuples(index=False, name=None)
    ]


def source(*rows: tuple[str, str, str, float]) -> pd.DataFrame:
    """Upstream rows (business_date, event_id, kind, amount)."""
    return pd.DataFrame(
        {
            "business_date": pd.to_datetime([r[0] for r in rows]).astype("datetime64[ns]"),
            "event_id": [r[1] for r in rows],
            "kind": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
        }
    )


def totals(*rows: tuple[date, str, int, float]) -> pd.DataFrame:
    """Totals rows (business_date, unit_id, opened, amount)."""
    return pd.DataFrame(
        {
            "business_date": pd.to_datetime([r[0] for r in rows]).astype("datetime64[ns]"),
            "unit_id": [r[1] for r in rows],
            "opened": pd.Series([r[2] for r in rows], dtype="int64"),
            "amount": pd.Series([r[3] for r in rows], dtype="float64"),
        }
    )


CONTROLS = QualityContract(
    controls=(
        ControlTotal(
            "opened_events",
            output_column="opened",
            upstream="gate_test_source",
            upstream_filter=(("kind", "opened"),),
        ),
        ControlTotal(
            "amount_total",
            output_column="amount",
            upstream="gate_test_source",
            upstream_column="amount",
        ),
    )
)
# 09-01: 2 opened events, amounts 10 + 5 + 2.5 = 17.5; 09-02: 1 opened, 4.0.
# 09-03 lies outside the window and must not be counted.
UPSTREAM = source(
    ("2026-09-01", "e1", "opened", 10.0),
    ("2026-09-01", "e2", "opened", 5.0),
    ("2026-09-01", "e3", "closed", 2.5),
    ("2026-09-02", "e4", "opened", 4.0),
    ("2026-09-03", "e5", "opened", 100.0),
)


def test_control_totals_that_match_pass():
    out = totals((D1, "U01", 1, 10.0), (D1, "U02", 1, 7.5), (D2, "U01", 1, 4.0))
    result = gate(out, CONTROLS, D1, D2, contract=TOTALS, upstream={"gate_test_source": UPSTREAM})

    assert result.decision == Decision.PUBLISH
    assert part(result, D1)["control_totals"] == {
        "opened_events": {"input": 2.0, "output": 2.0},
        "amount_total": {"input": 17.5, "output": 17.5},
    }
    assert part(result, D2)["control_totals"] == {
        "opened_events": {"input": 1.0, "output": 1.0},
        "amount_total": {"input": 4.0, "output": 4.0},
    }
    assert all(f.passed for f in result.findings if f.rule in ("opened_events", "amount_total"))


def test_control_total_mismatch_fails_the_run():
    out = totals((D1, "U01", 1, 10.0), (D1, "U02", 1, 7.5), (D2, "U01", 1, 4.5))
    result = gate(out, CONTROLS, D1, D2, contract=TOTALS, upstream={"gate_test_source": UPSTREAM})

    assert result.decision == Decision.FAIL_RUN
    assert [(f.rule, f.partition) for f in result.failures] == [("amount_total", D2)]
    bad = finding(result, "amount_total", D2)
    assert (bad.severity, bad.value) == (Severity.FAIL_RUN, 4.5)
    assert bad.message == "control total amount_total: input 4 != output 4.5 (sum of amount)"
    assert part(result, D2)["control_totals"]["amount_total"] == {"input": 4.0, "output": 4.5}
    # A derived dataset is reconciled by its control totals: this one does not reconcile.
    assert result.reconciliation["status"] == "BROKEN"


def test_control_total_needs_its_upstream():
    out = totals((D1, "U01", 2, 17.5))
    with pytest.raises(ValueError, match="needs upstream 'gate_test_source'"):
        gate(out, CONTROLS, D1, contract=TOTALS)


def test_time_bound_fails_for_a_value_outside_the_rows_partition():
    # The partition 09-01 is [09-01T00:00Z, 09-02T00:00Z): 23:59:59 is in, midnight is out.
    data = items(
        row(D1, "a", at="00:00"),
        row(D1, "b", at="23:59"),
        (D1, "c", "A", 1.0, "2026-09-02T00:00:00Z"),
        row(D2, "d"),
    )
    result = gate(data, QualityContract(time_bounds=(TimeBound("event_ts"),)), D1, D2)

    assert result.decision == Decision.FAIL_RUN
    bound = finding(result, "event_time_in_partition", D1)
    assert (bound.passed, bound.severity) == (False, Severity.FAIL_RUN)
    assert (bound.failed, bound.checked) == (1, 3)
    assert bound.sample == ("2026-09-02 00:00:00+00:00",)
    assert bound.message == "1 row(s) have event_ts outside their partition"
    assert finding(result, "event_time_in_partition", D2).passed
    # The reconciliation records the range of the accepted rows' times per partition.
    assert part(result, D1)["event_ts_min"] == "2026-09-01T00:00:00+00:00"
    assert part(result, D1)["event_ts_max"] == "2026-09-02T00:00:00+00:00"


def test_time_bound_may_quarantine_instead():
    data = items(row(D1, "a"), (D1, "b", "A", 1.0, "2026-08-31T23:00:00Z"))
    bound = TimeBound("event_ts", severity=Severity.QUARANTINE_RECORD)
    result = gate(data, QualityContract(time_bounds=(bound,)), D1)
    assert result.decision == Decision.QUARANTINE_RECORDS
    assert quarantine_rows(result) == [
        (D1, 3, "event_time_in_partition", "event_ts", "2026-08-31 23:00:00+00:00")
    ]
    assert result.accepted["item_id"].tolist() == ["a"]


# --------------------------------------------------------------------------- referential


def codes(*values: str) -> pd.DataFrame:
    return pd.DataFrame({"code": list(values)})


def test_referential_without_time_column_checks_key_membership():
    # 09-01 is judged against v1 (A, B), 09-02 against v2 (A only).
    reference = {
        "codes": {
            D1: snapshot("codes", "codes-v1", codes("A", "B")),
            D2: snapshot("codes", "codes-v2", codes("A")),
        }
    }
    rule = Referential("code", reference="codes", key="code", severity=Severity.QUARANTINE_RECORD)
    data = items(
        row(D1, "a", code="A"),  # line 2
        row(D1, "b", code="B"),  # line 3: known in v1
        row(D1, "c", code="Q"),  # line 4: unknown
        row(D2, "d", code="A"),  # line 5
        row(D2, "e", code="B"),  # line 6: B is gone from v2
        row(D2, "f", code=None),  # line 7: a null is no known key either
    )
    result = gate(data, QualityContract(rules=(rule,)), D1, D2, reference=reference)

    assert result.decision == Decision.QUARANTINE_RECORDS
    assert quarantine_rows(result) == [
        (D1, 4, "referential_code", "code", "Q"),
        (D2, 6, "referential_code", "code", "B"),
        (D2, 7, "referential_code", "code", None),
    ]
    assert result.accepted["item_id"].tolist() == ["a", "b", "d"]
    ref1 = finding(result, "referential_code", D1)
    assert (ref1.failed, ref1.checked) == (1, 3)
    assert ref1.message == "1 row(s) have a code unknown to reference codes"
    assert finding(result, "referential_code", D2).failed == 2


def test_referential_needs_a_snapshot_for_every_date():
    rule = Referential("code", reference="codes", key="code", severity=Severity.FAIL_RUN)
    data = items(row(D1, "a"), row(D2, "b"))
    reference = {"codes": {D1: snapshot("codes", "codes-v1", codes("A"))}}
    with pytest.raises(ValueError, match="no codes snapshot pinned for 2026-09-02"):
        gate(data, QualityContract(rules=(rule,)), D1, D2, reference=reference)
    with pytest.raises(ValueError, match="needs reference 'codes'"):
        gate(data, QualityContract(rules=(rule,)), D1, D2)


# --------------------------------------------------------------------------- case_events

#: U03 only exists from 2026-09-03.
ORG = pd.concat([BASE_ORG, org_frame([("U03", "West", "2026-09-03", None)])], ignore_index=True)


def _case_events_landing() -> pd.DataFrame:
    """09-02: one good row and five the gate quarantines. 09-03: twenty good rows, an exact
    duplicate of one of them in a later file, and an unparseable timestamp."""
    rows = [
        raw("E1", event_ts="2026-09-02T20:00:00Z", line=2),
        raw("E2", None, event_ts="2026-09-02T20:01:00Z", line=3),
        raw("E3", event_type="closed", event_ts="2026-09-02T20:02:00Z", line=4),
        raw("E4", priority="P5", event_ts="2026-09-02T20:03:00Z", line=5),
        raw("E5", unit_id="U99", event_ts="2026-09-02T20:04:00Z", line=6),
        raw("E6", unit_id="U03", event_ts="2026-09-02T20:05:00Z", line=7),
    ]
    rows += [
        raw(
            f"F{i:02d}",
            f"C{i}",
            event_ts=f"2026-09-03T20:{i:02d}:00Z",
            ingest="2026-09-03",
            line=i + 2,
        )
        for i in range(20)
    ]
    rows.append(raw("F00", "C0", event_ts="2026-09-03T20:00:00Z", ingest="2026-09-04", line=2))
    rows.append(raw("G1", event_ts="garbage", ingest="2026-09-03", line=30))
    return landing(*rows)


def test_case_events_path_quarantines_by_the_contract_rules():
    win = PartitionWindow((D2, D3))
    org = org_for(D2, D3, data=ORG)
    parsed = parse_case_events(_case_events_landing(), win, org)
    result = evaluate(
        GateInput(
            contract=CASE_EVENTS,
            quality=CASE_EVENTS_QUALITY,
            window=win,
            data=parsed.data,
            rejects=parsed.rejects,
            counts=parsed.counts,
            reference={"org_hierarchy": org},
            source_rows=parsed.source_rows,
        )
    )

    assert quarantine_rows(result) == [
        (D3, 30, "unparseable_event_ts", "event_ts", "garbage"),
        (D2, 3, "missing_case_id", "case_id", None),
        (D2, 4, "unknown_event_type", "event_type", "closed"),
        (D2, 5, "unknown_priority", "priority", "P5"),
        (D2, 6, "unknown_unit_id", "unit_id", "U99"),
        (D2, 7, "unknown_unit_id", "unit_id", "U03"),
    ]
    gate_q = result.quarantined[result.quarantined["reason"] != "unparseable_event_ts"]
    assert (gate_q["source_file"] == src("2026-09-02")).all()
    # original_row holds the landing values, not the typed ones.
    assert json.loads(gate_q.iloc[-1]["original_row"]) == {
        "event_id": "E6",
        "case_id": "C1",
        "event_type": "opened",
        "event_ts": "2026-09-02T20:05:00Z",
        "unit_id": "U03",
        "priority": "P1",
    }

    # 09-02 quarantines 5 of 6 rows (> 5%): blocked. 09-03: 1 of 22 (4.55%): published.
    assert result.decision == Decision.FAIL_PARTITION
    assert result.blocked == {
        D2: "quarantine_rate: 5 of 6 rows quarantined (83.33%), more than 5.00%"
    }
    assert result.accepted["event_id"].tolist() == [f"F{i:02d}" for i in range(20)]
    assert result.accepted.loc[0, "source_file"] == src("2026-09-04")

    per_day = {
        d: tuple(part(result, d)[k] for k in ("input", "accepted", "quarantined", "duplicate"))
        for d in (D2, D3)
    }
    assert per_day == {D2: (6, 0, 5, 0), D3: (22, 20, 1, 1)}
    assert numbers(result, D2, "blocked") == (1,)
    for d in (D2, D3):
        p = part(result, d)
        assert p["input"] == p["accepted"] + p["quarantined"] + p["duplicate"] + p["blocked"]
        assert p["identity_holds"] is True
    assert numbers(result, D2, "quarantined_by_gate", "rejected_at_parse") == (5, 0)
    assert numbers(result, D3, "quarantined_by_gate", "rejected_at_parse") == (0, 1)
    assert result.reconciliation["status"] == "PASSED"
    # The other rules of the contract pass on both days.
    for rule in ("row_count", "duplicate_key", "freshness", "event_time_in_partition"):
        assert finding(result, rule, D2).passed and finding(result, rule, D3).passed, rule


def test_case_events_without_the_quarantine_rate_publishes_the_good_rows():
    win = PartitionWindow((D2, D3))
    org = org_for(D2, D3, data=ORG)
    parsed = parse_case_events(_case_events_landing(), win, org)
    rules = tuple(r for r in CASE_EVENTS_QUALITY.rules if not isinstance(r, QuarantineRate))
    result = evaluate(
        GateInput(
            contract=CASE_EVENTS,
            quality=replace(CASE_EVENTS_QUALITY, rules=rules),
            window=win,
            data=parsed.data,
            rejects=parsed.rejects,
            counts=parsed.counts,
            reference={"org_hierarchy": org},
            source_rows=parsed.source_rows,
        )
    )
    assert result.decision == Decision.QUARANTINE_RECORDS
    assert result.accepted["event_id"].tolist() == ["E1", *[f"F{i:02d}" for i in range(20)]]
    assert result.accepted.loc[0, "region"] == "North"


# --------------------------------------------------------------------------- the record


def test_result_json_and_summary_name_the_blocking_rule_and_partition():
    data = items(row(D1, "a"))
    quality = QualityContract(
        rules=(
            RowCount(Severity.FAIL_PARTITION, min_rows=1),
            Freshness("event_ts", max_lag=timedelta(hours=1), severity=Severity.WARN),
        )
    )
    result = gate(data, quality, D1, D2)

    record = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert record["decision"] == "FAIL_PARTITION"
    assert record["blocked_partitions"] == {"2026-09-02": "row_count: 0 row(s), expected [1, ∞]"}
    assert [(f["rule"], f["severity"], f["partition"]) for f in record["failures"]] == [
        ("row_count", "FAIL_PARTITION", "2026-09-02"),
        ("freshness", "WARN", "2026-09-01"),
    ]
    assert record["rules_checked"] == ["freshness", "reconciliation", "row_count"]
    assert record["metrics"]["failed_checks"] == 2.0
    assert record["metrics"]["input_rows"] == 1.0
    # Only the blocking failure is in the summary, with its rule and partition.
    assert result.summary() == "FAIL_PARTITION row_count [2026-09-02]: 0 row(s), expected [1, ∞]"
    json.dumps(result.reconciliation)


# --------------------------------------------------------------------------- known gaps


def test_a_row_check_that_cannot_run_does_not_publish_unchecked_rows():
    class StrictCodeModel(pa.DataFrameModel):
        business_date: Series[Any] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        item_id: Series[str] = pa.Field(nullable=False, metadata=_FAIL_RUN)
        code: Series[Any] = pa.Field(nullable=True, metadata=_QUARANTINE)

        @pa.check("code", name="blank_code", ignore_na=False, statistics=_QUARANTINE)
        def _blank(cls, s: pd.Series) -> pd.Series:
            return s.str.strip() != ""  # raises on a non-string column

    # A code column that arrived as numbers: the check raises instead of judging any row.
    data = pd.DataFrame(
        {
            "business_date": pd.to_datetime(["2026-09-01", "2026-09-01"]),
            "item_id": ["a", "b"],
            "code": [1.0, float("nan")],
        }
    )
    result = gate(data, QualityContract(model=StrictCodeModel), D1)
    assert result.decision == Decision.FAIL_RUN


def test_str_columns_keep_pandera_failure_cases_without_its_per_element_pass():
    """A `Series[str]` column whose values are all strings (or null) skips pandera's
    element-wise dtype check; one with any other value is still judged by pandera."""
    from ecm_assets.case_sla.quality import CaseEventsModel
    from ecm_assets.validation.gate import _schema_index, validate_with_pandera

    good = _events_for_str_check()
    assert validate_with_pandera(CaseEventsModel, good).empty
    index = _schema_index(CaseEventsModel)
    assert index.schema_for(good).columns["event_id"].dtype is None
    assert index.schema_for(good).columns["source_file"].dtype is None
    bad = good.copy()
    bad.loc[1, "event_id"] = 12345
    assert index.schema_for(bad).columns["event_id"].dtype is not None
    failures = validate_with_pandera(CaseEventsModel, bad)
    assert failures[["row", "rule"]].values.tolist() == [[1, "event_id:dtype"]]


def _events_for_str_check() -> pd.DataFrame:
    ts = pd.Timestamp("2026-09-01T10:00:00Z")
    return pd.DataFrame(
        {
            "event_id": ["E0000000001", "E0000000002", "E0000000003"],
            "case_id": ["C000000001", "C000000003", "C000000002"],
            "event_type": ["opened", "assigned", "resolved"],
            "event_ts": [ts, ts, ts],
            "business_date": pd.to_datetime(["2026-09-01"] * 3),
            "unit_id": ["U01"] * 3,
            "region": ["EAST"] * 3,
            "priority": ["P1", "P2", "P3"],
            "ingest_date": pd.to_datetime(["2026-09-01"] * 3),
            "source_file": ["case_events/ingest_date=2026-09-01/events-000.csv"] * 3,
            "source_line": [2, 3, 4],
        }
    )[CASE_EVENTS.column_names]


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]"])
def test_missing_case_id_means_what_str_strip_means(dtype):
    """The vectorized presence check equals `notna() & str(v).strip() != ""` on Python's
    whitespace (NBSP, U+2003 and the \\x1c-\\x1f separators are blank; RE2's \\s is not)."""
    from ecm_assets.case_sla.quality import _present

    values = ["C1", " ", "\xa0", "\x1c", "", None, " x ", "\u2003", "é", "\xa0é\xa0", "\t\n"]
    series = pd.Series(values, dtype=dtype)
    expected = series.notna() & (series.astype(str).str.strip() != "")
    assert _present(series).tolist() == expected.tolist()
    assert _present(series).tolist().count(True) == 4


NY_HOURS = DatasetContract(
    name="ny_meter_hours",
    description="readings per hour of New York",
    columns=(
        Column("hour", "TIMESTAMP", nullable=False),
        Column("meter", "VARCHAR", nullable=False),
        Column("event_ts", "TIMESTAMP", nullable=False),
    ),
    partition_column="hour",
    grain="hourly",
    business_key=("hour", "meter"),
    start="2026-11-01",
    end="2026-11-01",
    timezone="America/New_York",
)


def test_freshness_of_each_fall_back_hour_is_measured_against_its_own_end():
    """The two 01:00 hours of New York's fall-back night end at 06:00 and 07:00 UTC; each
    partition's findings are its own and carry its own key."""
    edt, est = (NY_HOURS.partition_value(k) for k in ("2026-11-01-01:00", "2026-11-01-01:00-0500"))
    data = pd.DataFrame(
        {
            "hour": [edt, edt, est],
            "meter": ["a", "b", "a"],
            "event_ts": pd.to_datetime(
                ["2026-11-01 05:10", "2026-11-01 05:50", "2026-11-01 06:10"]
            ),
        }
    )
    rule = Freshness("event_ts", max_lag=timedelta(minutes=30), severity=Severity.WARN)
    result = gate(data, QualityContract(rules=(rule,)), edt, est, contract=NY_HOURS)
    assert len(result.accepted) == 3
    first, second = finding(result, "freshness", edt), finding(result, "freshness", est)
    assert (first.passed, round(first.value, 3)) == (True, round(10 / 60, 3))
    assert (second.passed, round(second.value, 3)) == (False, round(50 / 60, 3))
    assert [f["partition"] for f in result.to_json()["failures"]] == ["2026-11-01-01:00-0500"]


def test_freshness_of_a_daily_partition_ends_at_local_midnight_of_its_zone():
    """A Jakarta business day ends at 17:00 UTC: an event at 23:00 local time is an hour
    before the end of its partition, not eight (it was measured against UTC midnight)."""
    jakarta = replace(ITEMS, name="gate_test_items_jakarta", timezone="Asia/Jakarta")
    data = items(row(D1, "a", at="16:00"))
    rule = Freshness("event_ts", max_lag=timedelta(hours=6), severity=Severity.WARN)
    result = gate(data, QualityContract(rules=(rule,)), D1, contract=jakarta)
    fresh = finding(result, "freshness", D1)
    assert (fresh.passed, fresh.value) == (True, 1.0)
