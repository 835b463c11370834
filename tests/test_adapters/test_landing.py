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
    LandingRefusedError,
    list_landing_files,
    read_landing_files,
    scan_landing_zone,
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
    assert row["_parse_error"] is None


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


# --------------------------------------------------------------------------- issue 11 item 1


def test_a_lone_quote_breaks_only_its_own_line_and_the_reader_resynchronises(tmp_path):
    rows = [f"e{i},U1,{i}" for i in range(1, 11)]
    rows[3] = '"e4,U1,4'  # line 5 opens a quote that is never closed
    land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\n" + "\n".join(rows) + "\n")

    out = read_all(tmp_path)

    # Every one of the 10 data lines is a row: 9 parsed, the broken one kept verbatim.
    assert list(out["_source_line"]) == list(range(2, 12))
    assert nullable(out["event_id"]) == [f"e{i}" if i != 4 else None for i in range(1, 11)]
    broken = out[out["_parse_error"].notna()]
    assert list(broken["_source_line"]) == [5]
    assert broken["_parse_error"].iloc[0].startswith("broken quote")
    assert broken["_raw_text"].iloc[0] == '"e4,U1,4'
    assert out.attrs["landing_files"][0]["lines"] == 11
    assert out.attrs["landing_files"][0]["records"] == 10


def test_a_stray_quote_later_closed_by_another_line_still_resynchronises(tmp_path):
    text = (
        "event_id,unit_id,value\n"
        'e1,U1,"ok"\n'
        'e2,U1,5" screen\n'  # a quote inside an unquoted field (not RFC 4180)
        "e3,U1,3\n"
        'e4,U1,"multi\nline"\n'  # a legitimate quoted newline after it
        "e5,U1,5\n"
    )
    land(tmp_path, "2026-09-01", "a.csv", text)

    out = read_all(tmp_path)

    assert list(out["_source_line"]) == [2, 3, 4, 5, 7]
    assert nullable(out["event_id"]) == ["e1", None, "e3", "e4", "e5"]
    assert nullable(out["value"]) == ["ok", None, "3", "multi\nline", "5"]
    assert nullable(out["_raw_text"]) == [None, 'e2,U1,5" screen', None, None, None]


def test_a_multiline_record_of_the_wrong_width_is_one_reject_with_its_whole_text(tmp_path):
    land(tmp_path, "2026-09-01", "a.csv", 'event_id,unit_id,value\ne1,"U\n1",1,x\ne2,U1,2\n')

    out = read_all(tmp_path)

    assert list(out["_source_line"]) == [2, 4]
    assert out["_raw_text"].iloc[0] == 'e1,"U\n1",1,x'
    assert out["_parse_error"].iloc[0] == "expected 3 fields, found 4: e1,U\\n1,1,x"


def test_bom_and_crlf_are_handled_and_lines_stay_physical(tmp_path):
    content = '\ufeffevent_id,unit_id,value\r\ne1,U1,"a\r\nb"\r\ne2,U1,2\r\n'.encode()
    land(tmp_path, "2026-09-01", "a.csv", content)

    out = read_all(tmp_path)

    assert nullable(out["event_id"]) == ["e1", "e2"]
    assert nullable(out["value"]) == ["a\r\nb", "2"]
    assert list(out["_source_line"]) == [2, 4]


def test_bom_jsonl_and_blank_lines_are_counted_but_not_rows(tmp_path):
    text = '\ufeff{"event_id": "e1"}\n\n  \n{"event_id": "e2", "unit_id": null}\n'
    land(tmp_path, "2026-09-01", "a.jsonl", text.encode())

    out = read_all(tmp_path)

    assert nullable(out["event_id"]) == ["e1", "e2"]
    assert nullable(out["unit_id"]) == [None, None]
    assert list(out["_source_line"]) == [1, 4]
    account = out.attrs["landing_files"][0]
    assert (account["lines"], account["records"], account["blank_lines"]) == (4, 2, 2)


def test_malformed_jsonl_line_keeps_its_raw_text(tmp_path):
    land(tmp_path, "2026-09-01", "a.jsonl", '{"event_id": "e1"}\n{"event_id": "e2",}\n')

    out = read_all(tmp_path)

    assert nullable(out["event_id"]) == ["e1", None]
    assert out["_parse_error"].iloc[1].startswith("malformed JSON")  # Python's JSON rule
    assert out["_raw_text"].iloc[1] == '{"event_id": "e2",}'


def test_read_is_columnar_text(tmp_path):
    land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1\n")

    out = read_all(tmp_path)

    assert all(out[c].dtype == pd.StringDtype("pyarrow") for c in COLUMNS)
    assert str(out["_source_line"].dtype) == "int64"


def test_text_that_is_not_a_number_coerces_to_missing_not_to_a_nan_value(tmp_path):
    """A transform's pandas idioms keep their meaning on the landing frame: "n/a" coerced
    with `pd.to_numeric(errors="coerce")` is missing, so the transform rejects it. (On
    `ArrowDtype(pa.string())` it became a NaN value `isna()` missed, and was published.)"""
    land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1.5\ne2,U1,n/a\n")

    value = pd.to_numeric(read_all(tmp_path)["value"], errors="coerce")

    assert value.isna().tolist() == [False, True]


# --------------------------------------------------------------------------- issue 11 item 3


def test_a_symlink_out_of_the_landing_root_is_refused_unread(tmp_path):
    root = tmp_path / "landing"
    land(root, "2026-09-01", "good.csv", "event_id,unit_id,value\ne1,U1,1\n")
    secret = tmp_path / "secret.csv"
    secret.write_text("event_id,unit_id,value\ntop-secret-first-line,U1,1\n")
    (root / SOURCE / "ingest_date=2026-09-01" / "passwd.csv").symlink_to(secret)

    listing = scan_landing_zone(root, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    assert [f.path for f in listing.files] == [f"{SOURCE}/ingest_date=2026-09-01/good.csv"]
    assert [e.path for e in listing.refused] == [f"{SOURCE}/ingest_date=2026-09-01/passwd.csv"]
    with pytest.raises(LandingRefusedError, match=r"passwd\.csv refused: resolves outside") as e:
        list_landing_files(root, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    assert "top-secret" not in str(e.value)


def test_a_file_swapped_for_a_symlink_after_the_lock_is_refused(tmp_path):
    root = tmp_path / "landing"
    path = land(root, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1\n")
    files = list_landing_files(root, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    outside = tmp_path / "outside.csv"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)

    with pytest.raises(LandingRefusedError, match="outside the landing root"):
        read_landing_files(root, files, COLUMNS)


def test_a_symlink_inside_the_root_is_read(tmp_path):
    path = land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1\n")
    (path.parent / "b.csv").symlink_to(path)

    assert len(read_all(tmp_path)) == 2


def test_ignored_names_are_reported_not_skipped_silently(tmp_path, caplog):
    land(tmp_path, "2026-09-01", "a.csv", "event_id,unit_id,value\ne1,U1,1\n")
    land(tmp_path, "2026-09-01", "B.CSV", "event_id,unit_id,value\ne2,U1,1\n")
    land(tmp_path, "2026-09-01", "notes.txt", "x")
    (tmp_path / SOURCE / "stray").mkdir()

    listing = scan_landing_zone(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    assert {e.path: e.reason.split(" (")[0] for e in listing.ignored} == {
        f"{SOURCE}/ingest_date=2026-09-01/B.CSV": "name does not end in .csv or .jsonl",
        f"{SOURCE}/ingest_date=2026-09-01/notes.txt": "name does not end in .csv or .jsonl",
        f"{SOURCE}/stray": "not an ingest_date=YYYY-MM-DD directory",
    }
    with caplog.at_level("WARNING"):
        list_landing_files(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    assert "B.CSV ignored" in caplog.text


def test_a_hostile_header_is_quoted_short_and_escaped(tmp_path):
    land(tmp_path, "2026-09-01", "a.csv", "root:x:0:0:" + "A" * 500 + "\x1b[31m\nx\n")

    with pytest.raises(ValueError) as e:
        read_all(tmp_path)
    message = str(e.value)
    assert "\x1b" not in message and len(message) < 400
    assert "lacks required column(s) ['event_id', 'unit_id', 'value']" in message


def hostile_landing(root: Path) -> None:
    """Files whose records cross any step boundary: quoted fields over several lines, a lone
    quote, CRLF and bare CR, a BOM, blank lines, wrong widths, extra keys, non-string JSON."""
    land(
        root,
        "2026-09-01",
        "a.csv",
        "\ufeffevent_id,unit_id,value,extra\r\n"
        + "".join(f'E{i},U{i % 7},"v{i},\nsecond line",x\r\n' for i in range(40))
        + '"lone,U1,1,x\nE41,U1,1,x\n\nE42,U1\n,,,\nE43,"U\r1",1,x\rE44,U2,2,x\n'
        + 'E45,"a ""quoted"" word",3,x\nE46,U3,"never closed\n',
    )
    land(
        root,
        "2026-09-01",
        "b.jsonl",
        "\ufeff"
        + "".join(
            f'{{"event_id": "J{i}", "unit_id": "U{i % 3}", "value": "{i}", "k{i % 4}": 1}}\n'
            for i in range(30)
        )
        + '\n  \n{"event_id": 7}\n{broken\n[1]\n{"event_id": "J", "value": {"n": [1]}}\n'
        + '{"event_id": "last"}',
    )
    land(root, "2026-09-02", "c.csv", "event_id,unit_id,value\n" + "E,U,1\n" * 25)


def test_a_file_read_in_small_steps_equals_the_file_read_whole(tmp_path, monkeypatch):
    """The reader never holds a file whole: it parses complete records step by step. Records
    that cross a step boundary, the resynchronisation after a lone quote, line numbers, extra
    columns and the line accounting must come out exactly as from one step over the file."""
    from ecm_assets.adapters import landing

    hostile_landing(tmp_path)
    whole = read_all(tmp_path)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.*")) < landing.CHUNK_BYTES
    assert whole["_parse_error"].notna().sum() >= 7  # the hostile lines are there
    for step in (7, 64, 301):
        monkeypatch.setattr(landing, "CHUNK_BYTES", step)
        stepped = read_all(tmp_path)
        pd.testing.assert_frame_equal(stepped, whole)
        assert stepped.attrs == whole.attrs, step


def test_read_in_steps_keeps_the_precedence_changed_then_encoding_then_parse(tmp_path, monkeypatch):
    """A header error in the first step does not hide a byte that is not UTF-8 further on,
    and neither hides a file that changed since the lock: the whole file is still checked."""
    from ecm_assets.adapters import landing
    from ecm_assets.adapters.landing import LandingEncodingError, LandingSchemaError

    monkeypatch.setattr(landing, "CHUNK_BYTES", 64)
    path = land(tmp_path, "2026-09-01", "a.csv", "event_id,value\n" + "E,1\n" * 100)
    with pytest.raises(LandingSchemaError):
        read_all(tmp_path)
    path.write_bytes(path.read_bytes() + b"E,\xff\n")
    with pytest.raises(LandingEncodingError, match=r"at byte 417: invalid start byte"):
        read_all(tmp_path)
    files = list_landing_files(tmp_path, SOURCE, date(2026, 9, 1), date(2026, 9, 1))
    path.write_bytes(path.read_bytes() + b"E,2\n")
    with pytest.raises(LandingFileChangedError):
        read_landing_files(tmp_path, files, COLUMNS)
