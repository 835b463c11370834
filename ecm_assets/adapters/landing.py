"""Landing zone: list the files of an input boundary and read them into raw string rows.

Files live at `<root>/<source>/ingest_date=YYYY-MM-DD/*.csv|*.jsonl`. Every field is kept as
text here; typing, attribution and rejection are business rules and belong to the transform.
A line that cannot be parsed is kept with a `_parse_error` so it is rejected, not lost.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ecm_assets.contracts.boundaries import LandingFile
from ecm_assets.contracts.quality import JSON_TYPES_COLUMN

INGEST_DIR = re.compile(r"^ingest_date=(\d{4}-\d{2}-\d{2})$")
SUFFIXES = (".csv", ".jsonl")
META_COLUMNS = ["_source_file", "_source_line", "_ingest_date", "_parse_error", JSON_TYPES_COLUMN]


class LandingFileChangedError(RuntimeError):
    """A file changed between the input lock and the read: the boundary no longer holds."""


class LandingReadError(ValueError):
    """A landing file cannot be read into rows at all; `rule` names the quality rule."""

    rule = "landing_file"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class LandingSchemaError(LandingReadError):
    """A landing file lacks a column the contract requires."""

    rule = "landing_columns"

    def __init__(self, path: str, missing: list[str], header: list[str]) -> None:
        super().__init__(
            path, f"landing file {path}: header {header} lacks required column(s) {missing}"
        )
        self.missing = missing


class LandingEncodingError(LandingReadError):
    """A landing file is not UTF-8: no row of it can be trusted."""

    rule = "landing_encoding"


#: A single CSV field may be large (free text); the csv module's default cap is 128 KiB and
#: would abort the whole read instead of letting the row be judged.
csv.field_size_limit(1 << 30)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def list_landing_files(root: Path, source: str, first: date, last: date) -> list[LandingFile]:
    """Files whose ingest date lies in [first, last], in a stable order, with checksums."""
    base = Path(root) / source
    files: list[LandingFile] = []
    if not base.is_dir():
        return files
    for day_dir in sorted(base.iterdir()):
        match = INGEST_DIR.match(day_dir.name)
        if not day_dir.is_dir() or not match:
            continue
        ingest = date.fromisoformat(match.group(1))
        if not first <= ingest <= last:
            continue
        for path in sorted(day_dir.iterdir()):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            data = path.read_bytes()
            files.append(
                LandingFile(
                    path=str(path.relative_to(root)),
                    ingest_date=ingest,
                    size_bytes=len(data),
                    sha256=_sha256(data),
                )
            )
    return files


def boundary_dates(
    first_partition: date, last_partition: date, lateness_days: int
) -> tuple[date, date]:
    """Ingest dates that may carry events of the given business dates."""
    return first_partition, last_partition + timedelta(days=lateness_days)


def _rows_from_csv(
    text: str, columns: Sequence[str], path: str
) -> tuple[list[list[object]], list[str]]:
    rows: list[list[object]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return rows, []
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise LandingSchemaError(path, missing, header)
    extra = [h for h in header if h not in columns]
    positions = [header.index(c) for c in columns]
    width = len(header)
    # reader.line_num counts physical lines, so a quoted multi-line field does not shift
    # the line numbers reported for the rows after it.
    start = reader.line_num + 1
    for record in reader:
        line_no, start = start, reader.line_num + 1
        if len(record) != width:
            rows.append(
                [
                    *([None] * len(columns)),
                    line_no,
                    f"expected {width} fields, found {len(record)}: {','.join(record)[:200]}",
                    None,
                ]
            )
            continue
        rows.append([*(record[p] for p in positions), line_no, None, None])
    return rows, extra


def _text(value: object) -> str | None:
    """A JSON value as the text a CSV would carry: strings as is, others as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "object" if isinstance(value, dict) else "array"


def _json_types(columns: Sequence[str], values: Sequence[object]) -> str | None:
    """`;column=type;...` of the values that are neither strings nor null (the gate's
    TextRule.json_types judges them), None when there are none."""
    typed = [
        f"{c}={_json_type(v)}"
        for c, v in zip(columns, values, strict=True)
        if v is not None and not isinstance(v, str)
    ]
    return ";" + ";".join(typed) + ";" if typed else None


def _rows_from_jsonl(text: str, columns: Sequence[str]) -> tuple[list[list[object]], list[str]]:
    """Rows of a JSONL file; a key missing from a record is a null value, not an error."""
    rows: list[list[object]] = []
    known = set(columns)
    extra: dict[str, None] = {}
    # Split on "\n" only: str.splitlines() also breaks on U+2028 and friends, which JSON
    # allows raw inside strings.
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            rows.append([*([None] * len(columns)), line_no, f"malformed JSON: {exc}"[:200], None])
            continue
        values = [record.get(c) for c in columns]
        for key in record:
            if key not in known:
                extra[key] = None
        rows.append([*(_text(v) for v in values), line_no, None, _json_types(columns, values)])
    return rows, list(extra)


def read_landing_files(
    root: Path, files: Sequence[LandingFile], columns: Sequence[str]
) -> pd.DataFrame:
    """Read exactly the locked files, refusing any whose bytes changed since the lock.

    Columns a file carries beyond the contract are ignored and listed in
    `frame.attrs["landing_issues"]`, so the quality gate can report them.
    """
    frames: list[pd.DataFrame] = []
    issues: list[dict[str, object]] = []
    names = [*columns, "_source_line", "_parse_error", JSON_TYPES_COLUMN]
    for f in files:
        data = (Path(root) / f.path).read_bytes()
        if _sha256(data) != f.sha256:
            raise LandingFileChangedError(
                f"landing file {f.path} changed after the input boundary was locked "
                f"(sha256 {f.sha256[:12]}... at lock, {_sha256(data)[:12]}... now); "
                "rerun to lock a new boundary"
            )
        try:
            text = data.decode("utf-8-sig")  # tolerate a byte-order mark
        except UnicodeDecodeError as exc:
            raise LandingEncodingError(
                f.path,
                f"landing file {f.path} is not valid UTF-8 at byte {exc.start}: {exc.reason}",
            ) from exc
        if f.path.endswith(".csv"):
            rows, extra = _rows_from_csv(text, columns, f.path)
        else:
            rows, extra = _rows_from_jsonl(text, columns)
        if extra:
            issues.append({"file": f.path, "extra_columns": extra})
        frame = pd.DataFrame(rows, columns=names, dtype=object)
        frame["_source_file"] = f.path
        frame["_ingest_date"] = pd.Timestamp(f.ingest_date)
        frames.append(frame)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in names})
        empty["_source_file"] = pd.Series(dtype=object)
        empty["_ingest_date"] = pd.Series(dtype="datetime64[ns]")
        out = empty[[*columns, *META_COLUMNS]]
    else:
        out = pd.concat(frames, ignore_index=True)
        out["_source_line"] = out["_source_line"].astype("int64")
        out = out[[*columns, *META_COLUMNS]]
    out.attrs["landing_issues"] = issues
    return out
