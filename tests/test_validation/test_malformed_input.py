"""A malformed-input corpus for case_events, run end to end through Dagster.

Every case builds its own data dir: the reference snapshots of a tiny generated demo period
(org_hierarchy, sla_calendar) and hand-written landing files for ingest date 2026-09-01 only,
so the partition 2026-09-01 reads exactly the files written here and every count is worked
out by hand. The asset is materialized in-process (ephemeral instance, private warehouse) and
the outcome is checked from four sides: the Dagster result and its error text, the published
rows, the quarantine tables, and the run manifest's reconciliation
(input = accepted + quarantined + duplicate).

Rules the expected numbers follow (ecm_assets.case_sla.events / quality, landing adapter):
- rows that cannot be typed or dated are rejected at parse (malformed_line,
  unparseable_event_ts, ...) and count as quarantined; the quality gate quarantines rows with
  an unknown event type, priority or unit, or a missing case_id;
- a day quarantining more than 5% of its rows is blocked (FAIL_PARTITION), so the cases that
  expect a publish keep their rejects at or under 5% of the day's rows;
- CSV line numbers are physical (the header is line 1); JSONL lines count blank lines too.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ecm_assets.adapters.landing import LandingReadError, list_landing_files, read_landing_files
from ecm_assets.case_sla.contracts import EVENT_TYPES, LANDING_COLUMNS, PRIORITIES
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.manifest.ledger import Manifest, load_manifests
from ecm_assets.publish.protocol import BLOCKED_TABLE, QUARANTINE_TABLE

PARTITION = "2026-09-01"
DAY = date.fromisoformat(PARTITION)
ASSET = "case_events"
HEADER = list(LANDING_COLUMNS)
#: Landing paths are recorded relative to the landing root.
REL_DIR = f"case_events/ingest_date={PARTITION}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reference snapshots of a two-day demo period; its landing files are not used."""
    root = tmp_path_factory.mktemp("malformed_demo")
    generate_demo_data(root, date(2026, 9, 1), date(2026, 9, 2), seed=23, scale=0.05)
    return root / "reference"


def good_rows(n: int, prefix: str) -> list[dict[str, str]]:
    """n valid events of 2026-09-01; row 0 is at 23:xx, so the day looks complete (fresh)."""
    return [
        {
            "event_id": f"{prefix}{i:04d}",
            "case_id": f"C-{prefix}{i:04d}",
            "event_type": EVENT_TYPES[i % len(EVENT_TYPES)],
            "event_ts": f"{PARTITION}T{23 - i % 24:02d}:{i % 60:02d}:00Z",
            "unit_id": f"U{i % 12 + 1:02d}",
            "priority": PRIORITIES[i % len(PRIORITIES)],
        }
        for i in range(n)
    ]


def csv_text(rows: Iterable[Mapping[str, str]], header: Sequence[str] = HEADER) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def jsonl_text(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@dataclass
class Outcome:
    result: dg.ExecuteInProcessResult
    errors: str
    published: pd.DataFrame
    rejected: pd.DataFrame
    blocked: pd.DataFrame
    manifest: Manifest

    @property
    def counts(self) -> dict[str, Any]:
        assert self.manifest.reconciliation is not None
        return self.manifest.reconciliation["per_partition"][PARTITION]

    def check_evaluations(self, name: str) -> list[dg.AssetCheckEvaluation]:
        return [e for e in self.result.get_asset_check_evaluations() if e.check_name == name]

    def assert_reconciles(
        self, *, input: int, accepted: int, quarantined: int, duplicate: int = 0, blocked: int = 0
    ) -> None:
        c = self.counts
        assert (c["input"], c["accepted"], c["quarantined"], c["duplicate"], c["blocked"]) == (
            input,
            accepted,
            quarantined,
            duplicate,
            blocked,
        )
        assert c["input"] == c["accepted"] + c["quarantined"] + c["duplicate"] + c["blocked"]
        assert c["identity_holds"] is True


@dataclass
class Corpus:
    """One isolated data dir with hand-written landing files for PARTITION, and a warehouse."""

    root: Path
    warehouse: Path

    @property
    def day_dir(self) -> Path:
        return self.root / "landing" / REL_DIR

    def write(self, name: str, content: str | bytes) -> str:
        path = self.day_dir / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return f"{REL_DIR}/{name}"

    def table(self, sql: str) -> pd.DataFrame:
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            try:
                return conn.execute(sql, [DAY]).df()
            except duckdb.CatalogException:  # the table was never created: no rows
                return pd.DataFrame()

    def run(self, *, expect_success: bool) -> Outcome:
        defs = build_definitions(self.root, self.warehouse)
        result = dg.materialize(
            list(defs.assets or []),
            selection=[ASSET],
            resources=defs.resources,
            partition_key=PARTITION,
            raise_on_error=False,
        )
        errors = failure_messages(result)
        assert result.success is expect_success, errors or "the run succeeded"
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            manifests = load_manifests(conn, run_id=result.run_id, asset=ASSET)
        assert len(manifests) == 1
        out = Outcome(
            result=result,
            errors=errors,
            published=self.table(
                "SELECT * FROM main.case_events WHERE business_date = ? ORDER BY event_id"
            ),
            rejected=self.table(
                f"SELECT * FROM {QUARANTINE_TABLE} WHERE partition_date = ? "
                "ORDER BY source_file, source_line"
            ),
            blocked=self.table(
                f"SELECT * FROM {BLOCKED_TABLE} WHERE partition_date = ? "
                "ORDER BY source_file, source_line"
            ),
            manifest=manifests[0],
        )
        self.assert_every_line_accounted(out)
        return out

    def assert_every_line_accounted(self, out: Outcome) -> None:
        """Issue 11: each physical line of each file is the header, blank (JSONL), or in a
        record that is published, quarantined (raw text kept if it did not parse), blocked
        or counted as a duplicate; otherwise the run failed naming the file."""
        landing = self.root / "landing"
        try:
            files = list_landing_files(landing, "case_events", DAY, DAY)
            frame = read_landing_files(landing, files, LANDING_COLUMNS)
        except LandingReadError as exc:
            assert not out.result.success
            assert exc.path in out.errors, out.errors
            return
        for account in frame.attrs["landing_files"]:
            assert account["lines"] == (
                account["header_lines"] + account["blank_lines"] + account["lines_in_records"]
            ), account
        stored: dict[tuple[str, int], str | None] = {}
        for table in (out.published, out.rejected, out.blocked):
            if table.empty:
                continue
            originals = table["original_row"] if "original_row" in table else [None] * len(table)
            for key in zip(table["source_file"], table["source_line"], originals, strict=True):
                stored[(key[0], int(key[1]))] = key[2]
        records = list(
            zip(frame["_source_file"], frame["_source_line"], frame["_raw_text"], strict=True)
        )
        assert set(stored) <= {(f, int(line)) for f, line, _ in records}
        missing = [(f, line) for f, line, _ in records if (f, int(line)) not in stored]
        duplicates = out.counts["duplicate"] if out.manifest.reconciliation else 0
        if out.manifest.reconciliation and out.manifest.reconciliation.get("per_partition"):
            assert len(missing) == duplicates, missing
        else:  # nothing was judged: the run failed, naming why
            assert not out.result.success
        for f, line, raw in records:
            if isinstance(raw, str) and (f, int(line)) in stored:
                assert json.loads(stored[(f, int(line))])["_raw_text"] == raw


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every error message of every failed step, with the whole cause chain."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            messages.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(messages)


@pytest.fixture
def corpus(reference_root: Path, tmp_path: Path) -> Corpus:
    root = tmp_path / "data"
    shutil.copytree(reference_root, root / "reference")
    (root / "landing" / REL_DIR).mkdir(parents=True)
    return Corpus(root, tmp_path / "warehouse.duckdb")


def _nothing_published(out: Outcome) -> None:
    assert out.published.empty
    assert out.rejected.empty


# --------------------------------------------------------------------------- 1. wrong types


def test_wrong_types_are_rejected_at_parse_and_the_rest_is_published(corpus: Corpus) -> None:
    rows = good_rows(70, "G")
    rows.append({**good_rows(1, "BADCSV")[0], "event_ts": "not-a-timestamp"})  # line 72
    csv_file = corpus.write("events-000.csv", csv_text(rows))
    records: list[dict[str, Any]] = list(good_rows(25, "J"))
    # Values JSON types as something other than a string: kept as text by the reader.
    records.append({**good_rows(1, "OBJ")[0], "event_ts": {"seconds": 5}})  # line 26
    records.append({**good_rows(1, "ARR")[0], "event_ts": [2026, 9, 1]})  # line 27
    records.append({**good_rows(1, "NUL")[0], "event_ts": None})  # line 28
    records.append({**good_rows(1, "J")[0], "event_id": 4242})  # line 29: a number, not an id
    jsonl_file = corpus.write("events-001.jsonl", jsonl_text(records))

    out = corpus.run(expect_success=True)

    # 70 + 25 good rows; 4 unparseable timestamps; a JSON number as event_id: 5 of 100 <= 5%.
    out.assert_reconciles(input=100, accepted=95, quarantined=5)
    assert len(out.published) == 95
    assert "4242" not in set(out.published["event_id"])  # TextRule json_types=("string",)
    assert out.counts["rejected_at_parse"] == 4
    assert out.counts["quarantined_by_gate"] == 1
    got = out.rejected[["source_file", "source_line", "reason", "column_name", "failure_case"]]
    assert got.values.tolist() == [
        [csv_file, 72, "unparseable_event_ts", "event_ts", "not-a-timestamp"],
        [jsonl_file, 26, "unparseable_event_ts", "event_ts", '{"seconds": 5}'],
        [jsonl_file, 27, "unparseable_event_ts", "event_ts", "[2026, 9, 1]"],
        [jsonl_file, 28, "unparseable_event_ts", "event_ts", None],
        [jsonl_file, 29, "event_id_json_type", "event_id", "4242"],
    ]
    # The original row is kept as evidence: the raw text values, by landing column.
    assert json.loads(out.rejected["original_row"].iloc[0])["event_id"] == "BADCSV0000"
    assert out.manifest.status == "PUBLISHED"
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "QUARANTINE_RECORDS"


# --------------------------------------------------------------------------- 2. missing column


def test_missing_column_fails_the_run_and_publishes_nothing(corpus: Corpus) -> None:
    corpus.write("events-000.csv", csv_text(good_rows(30, "G")))
    no_priority = [c for c in HEADER if c != "priority"]
    rows = [{k: v for k, v in r.items() if k != "priority"} for r in good_rows(5, "M")]
    bad_file = corpus.write("events-001.csv", csv_text(rows, header=no_priority))

    out = corpus.run(expect_success=False)

    assert "quality gate FAIL_RUN for case_events" in out.errors
    assert f"landing file {bad_file}" in out.errors
    assert "lacks required column(s) ['priority']" in out.errors
    # Not even the good file's rows are published.
    _nothing_published(out)
    assert out.manifest.status == "FAILED"
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "FAIL_RUN"
    [failure] = out.manifest.quality["failures"]
    assert (failure["rule"], failure["severity"]) == ("landing_columns", "FAIL_RUN")
    assert bad_file in failure["message"] and "priority" in failure["message"]
    assert out.manifest.reconciliation is not None
    assert out.manifest.reconciliation["status"] == "NOT_REACHED"
    assert "FAIL_RUN" in (out.manifest.status_detail or "")

    [evaluation] = out.check_evaluations("landing_columns")  # one per run
    assert evaluation.passed is False
    assert evaluation.partition is None
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.blocking is True
    [verdict] = out.check_evaluations("quality_gate")  # one per partition
    assert (verdict.passed, verdict.partition) == (False, PARTITION)
    assert verdict.severity == dg.AssetCheckSeverity.ERROR
    assert verdict.metadata["failed_rules"].value["landing_columns"]["severity"] == "FAIL_RUN"
    assert bad_file in (evaluation.description or "")


# --------------------------------------------------------------------------- 3. extra column


def test_extra_columns_are_published_with_a_warning(corpus: Corpus) -> None:
    rows = [{**r, "comment": f"note {i}"} for i, r in enumerate(good_rows(30, "G"))]
    csv_file = corpus.write("events-000.csv", csv_text(rows, header=[*HEADER, "comment"]))
    records = [{**r, "source_system": "legacy"} for r in good_rows(10, "J")]
    jsonl_file = corpus.write("events-001.jsonl", jsonl_text(records))

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=40, accepted=40, quarantined=0)
    assert len(out.published) == 40
    assert "comment" not in out.published.columns
    assert "source_system" not in out.published.columns
    assert out.rejected.empty
    assert out.manifest.status == "PUBLISHED"
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "PUBLISH_WITH_WARNING"
    warnings = [f for f in out.manifest.quality["failures"] if f["rule"] == "landing_columns"]
    assert [(w["severity"], w["partition"], w["sample"]) for w in warnings] == [
        ("WARN", None, ["comment"]),
        ("WARN", None, ["source_system"]),
    ]
    assert csv_file in warnings[0]["message"]
    assert jsonl_file in warnings[1]["message"]

    [evaluation] = out.check_evaluations("landing_columns")
    assert evaluation.passed is False
    assert evaluation.partition is None
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    [verdict] = out.check_evaluations("quality_gate")
    assert (verdict.passed, verdict.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert csv_file in (evaluation.description or "")
    assert jsonl_file in (evaluation.description or "")


# --------------------------------------------------------------------------- 4. empty files


def test_empty_files_next_to_a_good_file_are_harmless(corpus: Corpus) -> None:
    empty = corpus.write("events-000.csv", b"")
    corpus.write("events-001.csv", ",".join(HEADER) + "\n")  # header only
    corpus.write("events-002.jsonl", b"")
    corpus.write("events-003.jsonl", "\n\n   \n")  # blank lines only
    corpus.write("events-004.csv", csv_text(good_rows(25, "G")))
    # Another file repeating G0003 unchanged: a duplicate, superseded by the later copy.
    corpus.write("events-005.jsonl", jsonl_text([*good_rows(4, "G")[3:], *good_rows(5, "J")]))

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=31, accepted=30, quarantined=0, duplicate=1)
    assert len(out.published) == 30
    g3 = out.published[out.published["event_id"] == "G0003"]
    assert g3["source_file"].tolist() == [f"{REL_DIR}/events-005.jsonl"]
    assert out.rejected.empty
    assert out.manifest.status == "PUBLISHED"
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "PUBLISH"
    # The empty files are part of the locked boundary all the same.
    assert out.manifest.input_boundary is not None
    files = {f["path"]: f["size_bytes"] for f in out.manifest.input_boundary["landing_files"]}
    assert len(files) == 6
    assert files[empty] == 0


# --------------------------------------------------------------------------- 5. wrong encoding


def test_latin1_bytes_fail_the_run_naming_file_and_byte_offset(corpus: Corpus) -> None:
    corpus.write("events-000.csv", csv_text(good_rows(30, "G")))
    rows = good_rows(3, "L")
    rows[1]["case_id"] = "café"
    data = csv_text(rows).encode("latin-1")
    offset = data.index(b"\xe9")
    bad_file = corpus.write("events-001.csv", data)

    out = corpus.run(expect_success=False)

    assert f"landing file {bad_file} is not valid UTF-8 at byte {offset}" in out.errors
    _nothing_published(out)
    assert out.manifest.status == "FAILED"
    assert f"not valid UTF-8 at byte {offset}" in (out.manifest.status_detail or "")
    # Reported like a missing column: the gate's FAIL_RUN under its own rule.
    assert out.manifest.quality["decision"] == "FAIL_RUN"
    assert [f["rule"] for f in out.manifest.quality["failures"]] == ["landing_encoding"]


# --------------------------------------------------------------------------- 6. truncated lines


def test_truncated_lines_are_rejected_as_malformed_with_physical_line_numbers(
    corpus: Corpus,
) -> None:
    rows = good_rows(48, "G")
    rows[10]["case_id"] = "C-multi\nline"  # a quoted field over two physical lines (12-13)
    text = csv_text(rows)  # header line 1, rows on lines 2..50
    text += "T1,C-T1,opened\n"  # line 50: cut after three fields
    text += "T2,C-T2,opened,2026-09-01T10:00:00Z,U01,P1,extra\n"  # line 51: one field too many
    csv_file = corpus.write("events-000.csv", text)
    lines = [json.dumps(r) for r in good_rows(48, "J")]  # lines 1..48
    lines.append("")  # line 49: blank, skipped but counted
    cut = json.dumps(good_rows(1, "T3")[0])[:40]
    lines.append(cut)  # line 50: the object is cut off mid-string
    lines.append("[1, 2]")  # line 51: valid JSON, not an object
    jsonl_file = corpus.write("events-001.jsonl", "\n".join(lines) + "\n")

    out = corpus.run(expect_success=True)

    # 95 good rows; 4 malformed lines; a newline inside an id; 5 of 100 = 5% <= 5%.
    out.assert_reconciles(input=100, accepted=95, quarantined=5)
    assert out.counts["rejected_at_parse"] == 4
    got = out.rejected[["source_file", "source_line", "reason", "column_name"]]
    assert got.values.tolist() == [
        [csv_file, 12, "case_id_control_character", "case_id"],
        [csv_file, 51, "malformed_line", None],
        [csv_file, 52, "malformed_line", None],
        [jsonl_file, 50, "malformed_line", None],
        [jsonl_file, 51, "malformed_line", None],
    ]
    try:
        json.loads(cut)
    except ValueError as exc:
        cut_error = f"malformed JSON: {exc}"
    assert out.rejected["failure_case"].tolist() == [
        "C-multi\\nline",  # escaped evidence
        "expected 6 fields, found 3: T1,C-T1,opened",
        "expected 6 fields, found 7: T2,C-T2,opened,2026-09-01T10:00:00Z,U01,P1,extra",
        cut_error,
        "malformed JSON: not a JSON object",
    ]
    assert cut_error.startswith("malformed JSON: Unterminated string")
    # Nothing of a malformed line is trusted as a value, but its text is kept verbatim,
    # with the physical lines it spans.
    assert json.loads(out.rejected["original_row"].iloc[1]) == {
        **dict.fromkeys(HEADER),
        "_raw_text": "T1,C-T1,opened",
        "_source_lines": [51, 51],
    }
    assert json.loads(out.rejected["original_row"].iloc[3])["_raw_text"] == cut


# --------------------------------------------------------------------------- 7. huge values


HUGE_CASE_ID = "C" * 1_000_000
HUGE_EVENT_ID = "E" * 100_000


def test_huge_values_are_published_or_quarantined_with_short_failure_cases(
    corpus: Corpus,
) -> None:
    rows = good_rows(100, "G")
    rows.append({**good_rows(1, "H")[0], "event_id": HUGE_EVENT_ID})  # line 102
    csv_file = corpus.write("events-000.csv", csv_text(rows))
    records = good_rows(8, "J")
    records.append({**good_rows(1, "K")[0], "case_id": HUGE_CASE_ID})  # line 9
    records.append({**good_rows(1, "U")[0], "unit_id": "U" * 200_000})  # line 10
    records.append({**good_rows(1, "T")[0], "event_ts": "2" * 200_000})  # line 11: bad ts
    jsonl_file = corpus.write("events-001.jsonl", jsonl_text(records))

    out = corpus.run(expect_success=True)

    # 100 + 8 good rows; two ids longer than 64 characters and an unknown unit (gate), one
    # bad timestamp (parse): 4 of 112 quarantined.
    out.assert_reconciles(input=112, accepted=108, quarantined=4)
    assert out.published["case_id"].str.len().max() <= 64
    got = out.rejected[["source_file", "source_line", "reason", "column_name"]]
    assert got.values.tolist() == [
        [csv_file, 102, "event_id_too_long", "event_id"],
        [jsonl_file, 9, "case_id_too_long", "case_id"],
        [jsonl_file, 10, "unknown_unit_id", "unit_id"],
        [jsonl_file, 11, "unparseable_event_ts", "event_ts"],
    ]
    assert out.rejected["failure_case"].tolist() == ["E" * 200, "C" * 200, "U" * 500, "2" * 500]
    # The original row is evidence: kept whole.
    assert json.loads(out.rejected["original_row"].iloc[2])["unit_id"] == "U" * 200_000


def test_huge_csv_field_is_rejected_or_published_not_a_crash(corpus: Corpus) -> None:
    rows = good_rows(40, "G")
    rows.append({**good_rows(1, "K")[0], "case_id": HUGE_CASE_ID})  # line 42
    corpus.write("events-000.csv", csv_text(rows))

    defs = build_definitions(corpus.root, corpus.warehouse)
    result = dg.materialize(
        list(defs.assets or []),
        selection=[ASSET],
        resources=defs.resources,
        partition_key=PARTITION,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)


def test_huge_values_are_truncated_in_quality_evidence(corpus: Corpus) -> None:
    records = good_rows(40, "J")
    records.append({**good_rows(1, "U")[0], "unit_id": "U" * 200_000})
    corpus.write("events-000.jsonl", jsonl_text(records))

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=41, accepted=40, quarantined=1)
    assert out.manifest.quality is not None
    samples = [s for f in out.manifest.quality["failures"] for s in f["sample"]]
    assert samples and all(len(s) <= 500 for s in samples)
    [evaluation] = out.check_evaluations("unknown_unit_id")
    assert len(evaluation.metadata["failure_sample"].value) <= 500


# --------------------------------------------------------------------------- 8. quarantine rate


def test_day_quarantining_more_than_5_percent_is_blocked(corpus: Corpus) -> None:
    rows = good_rows(10, "G")
    rows[3]["event_type"] = "closed_by_bot"  # line 5
    rows[7]["event_type"] = "merged"  # line 9
    csv_file = corpus.write("events-000.csv", csv_text(rows))

    out = corpus.run(expect_success=False)

    assert "quality gate FAIL_PARTITION" in out.errors
    assert f"{PARTITION}: quarantine_rate: 2 of 10 rows quarantined (20.00%)" in out.errors
    assert out.published.empty
    assert out.rejected.empty  # a blocked day's rejects are evidence in blocked_rows
    rejected = out.blocked[out.blocked["reason"] != "partition_blocked"]
    got = rejected[["source_file", "source_line", "reason", "column_name", "failure_case"]]
    assert got.values.tolist() == [
        [csv_file, 5, "unknown_event_type", "event_type", "closed_by_bot"],
        [csv_file, 9, "unknown_event_type", "event_type", "merged"],
    ]
    # The 8 rows that passed the row rules are withheld with the day, and kept too.
    withheld = out.blocked[out.blocked["reason"] == "partition_blocked"]
    assert sorted(withheld["source_line"]) == [2, 3, 4, 6, 7, 8, 10, 11]
    assert out.blocked["run_id"].unique().tolist() == [out.result.run_id]
    assert all(r.startswith("quarantine_rate: 2 of 10 rows") for r in out.blocked["blocked_reason"])
    out.assert_reconciles(input=10, accepted=0, quarantined=2, blocked=8)
    assert out.manifest.status == "FAILED"
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "FAIL_PARTITION"
    assert list(out.manifest.quality["blocked_partitions"]) == [PARTITION]

    [evaluation] = out.check_evaluations("quarantine_rate")
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["value"].value == pytest.approx(0.2)
    assert evaluation.metadata["failed_partitions"].value[PARTITION]["severity"] == (
        "FAIL_PARTITION"
    )
    [evaluation] = out.check_evaluations("schema")  # pandera rules report under schema
    assert evaluation.passed is False
    assert evaluation.metadata["failed_partitions"].value[PARTITION]["failed"] == 2
    assert evaluation.metadata["failed_rows"].value == 2
    [verdict] = out.check_evaluations("quality_gate")
    assert (verdict.passed, verdict.partition) == (False, PARTITION)
    assert verdict.metadata["blocked"].value.startswith("quarantine_rate")


# --------------------------------------------------------------------------- 9. hostile values


def test_hostile_values_are_quarantined_by_the_declared_value_rules(corpus: Corpus) -> None:
    """Issue 11 item 2: each of these was published as valid data."""
    rows = good_rows(150, "G")
    rows.append({**good_rows(1, "N")[0], "case_id": "C-N\x000"})  # line 152: NUL byte
    rows.append({**good_rows(1, "P")[0], "case_id": "  C-P0000 "})  # line 153: padded
    rows.append({**good_rows(1, "Z")[0], "event_ts": f"{PARTITION}T10:00:00"})  # 154: no zone
    rows.append({**good_rows(1, "L")[0], "event_ts": f"{PARTITION}t10:00:00z"})  # 155: valid
    rows.append({**good_rows(1, "Y")[0], "event_ts": "99999-09-01T10:00:00Z"})  # 156
    csv_file = corpus.write("events-000.csv", csv_text(rows))
    records: list[dict[str, Any]] = list(good_rows(10, "J"))
    records.append({**good_rows(1, "O")[0], "case_id": {"nested": {"deep": 1}}})  # line 11
    records.append({**good_rows(1, "M")[0], "case_id": 12345})  # line 12
    jsonl_file = corpus.write("events-001.jsonl", jsonl_text(records))

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=167, accepted=161, quarantined=6)
    assert "L0000" in set(out.published["event_id"])
    got = out.rejected[["source_file", "source_line", "reason"]].values.tolist()
    assert got == [
        [csv_file, 152, "case_id_control_character"],
        [csv_file, 153, "case_id_untrimmed"],
        [csv_file, 154, "event_ts_without_zone"],
        [csv_file, 156, "event_ts_year_out_of_range"],
        [jsonl_file, 11, "case_id_json_type"],
        [jsonl_file, 12, "case_id_json_type"],
    ]
    assert not out.published["case_id"].str.contains("\x00|^ | $|nested").any()
    [evaluation] = out.check_evaluations("case_id_values")
    assert evaluation.passed is False


# --------------------------------------------------------------------------- 10. broken quotes


def test_a_lone_quote_loses_no_row_and_keeps_the_line_verbatim(corpus: Corpus) -> None:
    """Issue 11 item 1: row 4 of a 10-row CSV starts with a lone quote. It used to swallow
    lines 5-11 into one malformed record: 6 rows neither published nor quarantined."""
    rows = good_rows(10, "Q")
    text = csv_text(rows).splitlines(keepends=True)
    text[4] = '"' + text[4]  # line 5 (row 4) opens a quote that never closes
    broken = text[4].rstrip("\n")
    csv_file = corpus.write("events-000.csv", "".join(text))
    corpus.write("events-001.csv", csv_text(good_rows(30, "G")))

    out = corpus.run(expect_success=True)

    # 40 lines of data: 39 rows published, the broken line quarantined: 1 of 40 <= 5%.
    out.assert_reconciles(input=40, accepted=39, quarantined=1)
    assert {f"Q{i:04d}" for i in range(10)} - set(out.published["event_id"]) == {"Q0003"}
    [reject] = out.rejected.to_dict("records")
    assert (reject["source_file"], reject["source_line"]) == (csv_file, 5)
    assert reject["reason"] == "malformed_line"
    assert reject["failure_case"].startswith("broken quote")
    original = json.loads(reject["original_row"])
    assert (original["_raw_text"], original["_source_lines"]) == (broken, [5, 5])


def test_malformed_jsonl_line_is_quarantined_with_its_raw_text(corpus: Corpus) -> None:
    lines = [json.dumps(r) for r in good_rows(30, "J")]
    lines[9] = lines[9][:-1] + ","  # line 10: a trailing comma, cut before its brace
    jsonl_file = corpus.write("events-000.jsonl", "\n".join(lines) + "\n")

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=30, accepted=29, quarantined=1)
    [reject] = out.rejected.to_dict("records")
    assert (reject["source_file"], reject["source_line"]) == (jsonl_file, 10)
    assert json.loads(reject["original_row"])["_raw_text"] == lines[9]


# --------------------------------------------------------------------------- 11. landing names


def test_a_symlink_out_of_the_landing_root_fails_the_run_without_echoing_it(
    corpus: Corpus, tmp_path: Path
) -> None:
    """Issue 11 item 3: `passwd.csv -> /etc/passwd` was read and its first line quoted."""
    corpus.write("events-000.csv", csv_text(good_rows(30, "G")))
    outside = tmp_path / "passwd"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (corpus.day_dir / "passwd.csv").symlink_to(outside)

    out = corpus.run(expect_success=False)

    assert f"landing file {REL_DIR}/passwd.csv refused: resolves outside" in out.errors
    assert "root:x" not in out.errors
    assert "root:x" not in (out.manifest.status_detail or "")
    _nothing_published(out)
    assert out.manifest.quality is not None
    assert out.manifest.quality["decision"] == "FAIL_RUN"


def test_ignored_names_are_recorded_in_the_input_boundary(corpus: Corpus) -> None:
    corpus.write("events-000.csv", csv_text(good_rows(30, "G")))
    corpus.write("events-001.CSV", csv_text(good_rows(5, "U")))
    corpus.write("notes.txt", "operator notes")

    out = corpus.run(expect_success=True)

    out.assert_reconciles(input=30, accepted=30, quarantined=0)
    assert out.manifest.input_boundary is not None
    ignored = {e["path"] for e in out.manifest.input_boundary["ignored_landing"]}
    assert ignored == {f"{REL_DIR}/events-001.CSV", f"{REL_DIR}/notes.txt"}
