"""Landing adapter: list the files of a boundary with checksums, read them as raw text rows."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ecm_assets.adapters.landing import (
    META_COLUMNS,
    LandingFileChangedError,
    list_landing_files,
    read_landing_files,
)

SOURCE = "case_events"
COLUMNS = ["event_id", "unit_id", "value"]


def land(root: Path, ingest: str, name: str, content: str | bytes) -> Path:
    path = root / SOURCE / f"ingest_date={ingest}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def nullable(values: pd.Series) -> list[object]:
    """Text values with nulls as None (the frame's text columns are Arrow-backed)."""
    return [None if pd.isna(v) else v for v in values]


def read_all(root: Path, first: str = "2026-09-01", last: str = "2026-09-30") -> pd.DataFrame:
    files = list_landing_files(root, SOURCE, date.fromisoformat(first), date.fromisoformat(last))
    return read_landing_files(root, files, COLUMNS)


def test_list_returns_checksums_and_respects_the_ingest_range(tmp_path):
    for ingest in ("2026-08-31", "2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"):
        land(tmp_path, ingest, "events.csv", f"event_id,unit_id,value\n{ingest},U1,1\n")
    land(tmp_path, "2026-09-02", "more.jsonl", '{"event_id": "j"}\n')
    land(tmp_path, "2026-09-02", "notes.txt", "ignored")
    (tmp_path / SOURCE / "not_an_ingest_dir").mkdir()

    files = list_landing_files(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 3))

    assert [(f.path, f.ingest_date) for f in files] == [
        (f"{SOURCE}/ingest_date=2026-09-01/events.csv", date(2026, 9, 1)),
        (f"{SOURCE}/ingest_date=2026-09-02/events.csv", date(2026, 9, 2)),
        (f"{SOURCE}/ingest_date=2026-09-02/more.jsonl", date(2026, 9, 2)),
        (f"{SOURCE}/ingest_date=2026-09-03/events.csv", date(2026, 9, 3)),
    ]
    for f in files:
        data = (tmp_path / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.size_bytes == len(data)


def test_list_of_a_missing_source_is_empty(tmp_path):
    assert list_landing_files(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 3)) == []


def test_read_refuses_a_file_changed_after_the_lock(tmp_path):
    land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1\n")
    changed = land(tmp_path, "2026-09-01", "b.csv", "event_id,unit_id,value\ne2,U1,1\n")
    files = list_landing_files(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    changed.write_text("event_id,unit_id,value\ne2,U1,2\n")

    with pytest.raises(LandingFileChangedError, match=r"ingest_date=2026-09-01/b\.csv"):
        read_landing_files(tmp_path, files, COLUMNS)


def test_read_keeps_every_field_as_text_with_source_metadata(tmp_path):
    land(tmp_path, "2026-09-02", "a.csv", "value,event_id,unit_id,unused\n007,e1,U1,x\n")

    out = read_all(tmp_path)

    assert list(out.columns) == [*COLUMNS, *META_COLUMNS]
    row = out.iloc[0]
    assert (row["event_id"], row["unit_id"], row["value"]) == ("e1", "U1", "007")
    assert row["_source_file"] == f"{SOURCE}/ingest_date=2026-09-02/a.csv"
    assert row["_source_line"] == 2
    assert row["_ingest_date"] == pd.Timestamp("2026-09-02")
    assert pd.isna(row["_parse_error"])


def test_csv_line_with_wrong_field_count_is_kept_as_a_parse_error(tmp_path):
    land(
        tmp_path,
        "2026-09-01",
        "a.csv",
        "event_id,unit_id,value\ne1,U1,1\ne2,U1\ne3,U1,3,surplus\ne4,U1,4\n",
    )

    out = read_all(tmp_path)

    assert list(out["_source_line"]) == [2, 3, 4, 5]
    assert nullable(out["event_id"]) == ["e1", None, None, "e4"]
    errors = out.set_index("_source_line")["_parse_error"]
    assert errors[3] == "expected 3 fields, found 2: e2,U1"
    assert errors[4] == "expected 3 fields, found 4: e3,U1,3,surplus"
    assert errors[[2, 5]].isna().all()


def test_malformed_jsonl_lines_are_kept_as_parse_errors(tmp_path):
    lines = [
        json.dumps({"event_id": "e1", "unit_id": "U1", "value": 1}),
        '{"event_id": "e2", "unit_id": ',
        "",
        "[1, 2]",
        json.dumps({"event_id": "e5", "unit_id": "U1"}),
    ]
    land(tmp_path, "2026-09-01", "a.jsonl", "\n".join(lines) + "\n")

    out = read_all(tmp_path)

    assert list(out["_source_line"]) == [1, 2, 4, 5]
    assert nullable(out["event_id"]) == ["e1", None, None, "e5"]
    assert nullable(out["value"]) == ["1", None, None, None]
    errors = out.set_index("_source_line")["_parse_error"]
    assert errors[2].startswith("malformed JSON")
    assert errors[4] == "malformed JSON: not a JSON object"
    assert errors[[1, 5]].isna().all()


def test_missing_required_header_column_names_file_and_column(tmp_path):
    land(tmp_path, "2026-09-01", "short.csv", "event_id,unit_id\ne1,U1\n")

    with pytest.raises(ValueError, match=r"short\.csv.*\['value'\]"):
        read_all(tmp_path)


def test_invalid_utf8_names_the_file(tmp_path):
    land(tmp_path, "2026-09-01", "bad.csv", b"event_id,unit_id,value\ne1,U\xff1,1\n")

    with pytest.raises(ValueError, match=r"landing file .*bad\.csv is not valid UTF-8 at byte 27"):
        read_all(tmp_path)


def test_no_files_read_as_an_empty_frame_with_all_columns(tmp_path):
    out = read_landing_files(tmp_path, [], COLUMNS)

    assert out.empty
    assert list(out.columns) == [*COLUMNS, *META_COLUMNS]


def test_csv_source_line_is_the_physical_line_after_a_multiline_field(tmp_path):
    land(tmp_path, "2026-09-01", "a.csv", 'event_id,unit_id,value\ne1,U1,"multi\nline"\ne2,U1\n')

    out = read_all(tmp_path)

    bad = out[out["_parse_error"].notna()]
    assert list(bad["_source_line"]) == [4]


def test_jsonl_value_with_unicode_line_separator_is_one_valid_row(tmp_path):
    record = {"event_id": "e1", "unit_id": "U1", "value": "a\u2028b"}
    land(tmp_path, "2026-09-01", "a.jsonl", json.dumps(record, ensure_ascii=False) + "\n")

    out = read_all(tmp_path)

    assert out["_parse_error"].isna().all()
    assert list(out["value"]) == ["a\u2028b"]
