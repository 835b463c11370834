"""Landing zone: list the files of an input boundary and read them into raw text rows.

Files live at `<root>/<source>/ingest_date=YYYY-MM-DD/*.csv|*.jsonl`. Every field is kept as
text here; typing, attribution and rejection are business rules and belong to the transform.

The read is columnar: numpy finds the record structure of a file (newlines, quotes, commas),
pyarrow parses the CSV fields and DuckDB the JSON lines, with no per-row Python. Python only
looks at the rare lines that do not parse, so their reason is exact. A file is read in steps
of CHUNK_BYTES, hashed and UTF-8-checked as it goes, so it is never held whole (peak memory
of a read is ~3.5x the landing bytes, most of it the frame returned; docs/benchmarks.md).

Accounting rule (what the count identity counts): every physical line of a file is either
the CSV header, part of exactly one record, or (JSONL only) blank. A record is one line, or
several when an RFC 4180 quoted field holds newlines. A record that does not parse becomes a
row with `_parse_error` and its verbatim text in `_raw_text`, so it is rejected, never lost.
A quote that does not enclose a whole field (RFC 4180) breaks only its own line: when it
would swallow the lines after it, the line holding it is rejected and parsing resumes at the
next line. If the reader ever cannot account for every line, the file fails the run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from ecm_assets.contracts.boundaries import LandingFile
from ecm_assets.contracts.quality import JSON_TYPES_COLUMN

INGEST_DIR = re.compile(r"^ingest_date=(\d{4}-\d{2}-\d{2})$")
SUFFIXES = (".csv", ".jsonl")
#: `_raw_text` holds the verbatim text of a record that did not parse (null otherwise); its
#: lines are `_source_line` .. `_source_line` + its newline count.
#: `_json_types` (JSON_TYPES_COLUMN) lists `;column=type;` of JSON values that were neither
#: strings nor null, for the gate's TextRule.json_types.
META_COLUMNS = [
    "_source_file",
    "_source_line",
    "_ingest_date",
    "_parse_error",
    JSON_TYPES_COLUMN,
    "_raw_text",
]
ROW_META = ["_source_line", "_parse_error", JSON_TYPES_COLUMN, "_raw_text"]
#: The contract's text columns: Arrow-backed, so a large read stays near its byte size, and
#: pandas' own string dtype, so a transform's pandas idioms keep their meaning. On
#: `pd.ArrowDtype(pa.string())`, `pd.to_numeric(errors="coerce")` turns "n/a" into a NaN
#: *value* that `isna()` does not see (and with dtype_backend="numpy_nullable" into another
#: row's number), so a bad value was published as data.
TEXT_DTYPE = pd.StringDtype("pyarrow")
BOM = b"\xef\xbb\xbf"
#: Longest sample of raw content an error message may quote (escaped).
SAMPLE_CHARS = 200
#: A file needing more resynchronisations than this after broken quotes is refused.
MAX_RESYNCS = 100_000

log = logging.getLogger(__name__)


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
        shown = sample(repr(header), SAMPLE_CHARS)
        super().__init__(
            path, f"landing file {path}: header {shown} lacks required column(s) {missing}"
        )
        self.missing = missing


class LandingEncodingError(LandingReadError):
    """A landing file is not UTF-8: no row of it can be trusted."""

    rule = "landing_encoding"


class LandingRefusedError(LandingReadError):
    """An entry of the landing zone must not be read (outside the root, not a regular file)."""


def sample(text: str, limit: int = SAMPLE_CHARS) -> str:
    """A short, escaped excerpt of raw content, safe in an error message or an alert."""
    cut = text[:limit]
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return out + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class SkippedEntry:
    """A landing-zone entry that is not read, and why."""

    path: str
    reason: str
    ingest_date: date | None = None


@dataclass
class LandingListing:
    """What a landing scan found: files to read, names ignored, entries refused."""

    files: list[LandingFile] = field(default_factory=list)
    ignored: list[SkippedEntry] = field(default_factory=list)
    refused: list[SkippedEntry] = field(default_factory=list)

    def raise_for_refused(self) -> None:
        if self.refused:
            first = self.refused[0]
            more = f" (and {len(self.refused) - 1} more)" if len(self.refused) > 1 else ""
            raise LandingRefusedError(
                first.path, f"landing file {first.path} refused: {first.reason}{more}"
            )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in blocks (a landing file is never held whole)."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def _refusal(root: Path, path: Path) -> str | None:
    """Why `path` must not be read, or None: it must resolve to a regular file in the root."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "a dangling or looping symlink"
    if not real.is_relative_to(root):
        return "resolves outside the landing root (symlink); files must live inside it"
    if not real.is_file():
        return "not a regular file"
    return None


def scan_landing_zone(root: Path, source: str, first: date, last: date) -> LandingListing:
    """Files whose ingest date lies in [first, last], in a stable order, with checksums.

    Entries that do not look like landing files (`*.CSV`, `notes.txt`, a stray directory)
    are listed as ignored; entries that must not be read (a symlink out of the root, a FIFO)
    as refused, unread. The landing sensor and the input lock both list through here.
    """
    listing = LandingListing()
    root = Path(root)
    real_root = root.resolve()
    base = root / source
    if not base.is_dir():
        return listing
    for day_dir in sorted(base.iterdir()):
        rel_dir = str(day_dir.relative_to(root))
        match = INGEST_DIR.match(day_dir.name)
        if not match or not day_dir.is_dir():
            listing.ignored.append(SkippedEntry(rel_dir, "not an ingest_date=YYYY-MM-DD directory"))
            continue
        try:
            ingest = date.fromisoformat(match.group(1))
        except ValueError:
            listing.ignored.append(SkippedEntry(rel_dir, "not a calendar date"))
            continue
        if not first <= ingest <= last:
            continue
        refused = _refusal(real_root, day_dir)
        if refused is not None and refused != "not a regular file":
            listing.refused.append(SkippedEntry(rel_dir, refused, ingest))
            continue
        for path in sorted(day_dir.iterdir()):
            rel = str(path.relative_to(root))
            if path.suffix not in SUFFIXES:
                why = f"name does not end in {' or '.join(SUFFIXES)} (case-sensitive)"
                listing.ignored.append(SkippedEntry(rel, why, ingest))
                continue
            if path.is_dir() and not path.is_symlink():
                listing.ignored.append(SkippedEntry(rel, "a directory", ingest))
                continue
            refused = _refusal(real_root, path)
            if refused is not None:
                listing.refused.append(SkippedEntry(rel, refused, ingest))
                continue
            size, digest = _file_digest(path)
            listing.files.append(
                LandingFile(path=rel, ingest_date=ingest, size_bytes=size, sha256=digest)
            )
    return listing


def list_landing_files(root: Path, source: str, first: date, last: date) -> list[LandingFile]:
    """The files of a boundary; refuses the whole listing if an entry must not be read."""
    listing = scan_landing_zone(root, source, first, last)
    listing.raise_for_refused()
    for entry in listing.ignored:
        log.warning("landing entry %s ignored: %s", entry.path, entry.reason)
    return listing.files


def boundary_dates(
    first_partition: date, last_partition: date, lateness_days: int
) -> tuple[date, date]:
    """Ingest dates that may carry events of the given business dates."""
    return first_partition, last_partition + timedelta(days=lateness_days)


# --------------------------------------------------------------------------- reading


#: Bytes read and parsed per step. A file is never held whole: each step's complete records
#: are parsed and its bytes freed. A record longer than a step grows the step (a record is
#: always parsed whole), so only a file that is one huge record is held at once.
CHUNK_BYTES = 1 << 24


class _LockedReader:
    """A locked file read in steps, its sha256 and UTF-8 checked as the bytes go by.

    What the read finds keeps the precedence it had when the whole file was checked before
    parsing: a file that changed since the lock first, then a byte that is not UTF-8, then
    whatever the parse found (`settle`). A leading byte-order mark is tolerated and dropped.
    """

    def __init__(self, root: Path, f: LandingFile) -> None:
        path = Path(root) / f.path
        refused = _refusal(Path(root).resolve(), path)
        if refused is not None:
            raise LandingRefusedError(f.path, f"landing file {f.path} refused: {refused}")
        self.file = f
        self.eof = False
        self._fh = path.open("rb")
        self._hasher = hashlib.sha256()
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._offset = 0
        self._encoding_error: LandingEncodingError | None = None

    def __enter__(self) -> _LockedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def read(self, size: int) -> bytes:
        """The next bytes of the file (b"" and `eof` at its end); raises as soon as the
        bytes read so far are not UTF-8, or at the end when the file changed."""
        first = self._offset == 0
        block = self._fh.read(max(size, len(BOM)) if first else size)
        self._take(block)
        if self._encoding_error is not None:
            self.settle(self._encoding_error)
        if not block:
            self.eof = True
            self._verify()
        if first and block.startswith(BOM):
            block = block[len(BOM) :]
        return block

    def settle(self, error: Exception) -> None:
        """Raise what decides the file after `error` stopped its parse: a changed file, a
        byte that is not UTF-8 anywhere in it, else `error` itself."""
        while block := self._fh.read(1 << 22):
            self._take(block)
        self._take(b"")
        self._verify(cause=error)
        if self._encoding_error is not None and error is not self._encoding_error:
            raise self._encoding_error
        raise error

    def _take(self, block: bytes) -> None:
        self._hasher.update(block)
        off = self._offset
        self._offset += len(block)
        if self._encoding_error is not None:
            return
        pending = len(self._decoder.getstate()[0])
        if block and not pending and block.isascii():
            return  # ASCII is UTF-8; skips building the decoded text
        try:
            self._decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            path = self.file.path
            error = LandingEncodingError(
                path,
                f"landing file {path} is not valid UTF-8 at byte {off - pending + exc.start}: "
                f"{exc.reason}",
            )
            error.__cause__ = exc
            self._encoding_error = error

    def _verify(self, cause: Exception | None = None) -> None:
        digest = self._hasher.hexdigest()
        if digest != self.file.sha256:
            raise LandingFileChangedError(
                f"landing file {self.file.path} changed after the input boundary was locked "
                f"(sha256 {self.file.sha256[:12]}... at lock, {digest[:12]}... now); "
                "rerun to lock a new boundary"
            ) from cause


def _steps(reader: _LockedReader, feed: Any) -> None:
    """Feed a file to `feed(data, cut, final) -> consumed` in steps of whole lines.

    `data[:cut]` ends at a line end (or at the end of the file when `final`); `feed` parses
    the complete records in it and says how many bytes they took; the rest is carried into
    the next step. A step with no complete record reads twice as much next time.
    """
    pending = b""
    step = CHUNK_BYTES
    while True:
        block = reader.read(step)
        final = reader.eof
        data = pending + block if pending else block
        del block, pending
        cut = len(data) if final else data.rfind(b"\n") + 1
        consumed = feed(data, cut, final) if cut else 0
        if final:
            return
        pending = data[consumed:]
        del data
        step = CHUNK_BYTES if consumed else max(CHUNK_BYTES, 2 * len(pending))


@dataclass
class _Lines:
    """Physical lines of a byte buffer: line i is body[start[i]:end[i]], end past its '\\n'."""

    start: np.ndarray
    end: np.ndarray
    newlines: np.ndarray

    @classmethod
    def of(cls, a: np.ndarray) -> _Lines:
        n = len(a)
        nl = np.flatnonzero(a == 10)
        ends = nl + 1
        if n and a[-1] != 10:
            ends = np.append(ends, n)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else ends
        return cls(starts, ends, nl)

    def __len__(self) -> int:
        return len(self.start)


def _text_of(body: bytes, lo: int, hi: int) -> str:
    """A record's verbatim text without its line terminator."""
    text = body[lo:hi].decode("utf-8")
    return text[:-1].removesuffix("\r") if text.endswith("\n") else text


@dataclass
class _Parsed:
    """One file read: contract columns and meta columns as Arrow arrays, plus its accounting."""

    table: pa.Table
    extra: list[str]
    stats: dict[str, Any]


def _records(
    a: np.ndarray, lines: _Lines, path: str, final: bool = True, resyncs: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Split lines into CSV records: (first line, last line, broken quote) per record, the
    number of lines they cover, and the resynchronisations so far.

    Outside a quoted field a newline ends a record, and a newline is outside iff an even
    number of quotes precedes it since the record run started. A quote must open a field
    (after a comma or at line start) or close one (before a comma, newline or end); otherwise
    the record's quoting is broken. A broken record over several lines is cut back to its
    first line and parsing restarts at the next line; this costs one numpy pass per window.
    `a` starts at a record start; unless `final` (the end of the file), it ends at a line end
    and a record still open there is left for the next step (the lines it covers are not
    counted), so a file read in steps splits exactly as when read whole.
    """
    n = len(a)
    q = np.flatnonzero(a == 34)
    cr = np.flatnonzero(a == 13)
    n_lines = len(lines)
    if not len(q) and not len(cr):  # the common case: one line, one record
        idx = np.arange(n_lines)
        return idx, idx, np.zeros(n_lines, dtype=bool), n_lines, resyncs
    prev = np.where(q > 0, a[np.maximum(q - 1, 0)], 10)
    nxt = np.where(q + 1 < n, a[np.minimum(q + 1, n - 1)], 10)
    nxt2 = np.where(q + 2 < n, a[np.minimum(q + 2, n - 1)], 10)
    valid_open = np.isin(prev, (44, 10, 34))
    valid_close = np.isin(nxt, (44, 10, 34)) | ((nxt == 13) & (nxt2 == 10))
    q_before_nl = np.searchsorted(q, lines.newlines)
    q_at_line = np.searchsorted(q, lines.start)
    q_before_cr = np.searchsorted(q, cr)
    bare_cr = ~np.where(cr + 1 < n, a[np.minimum(cr + 1, n - 1)] == 10, False)
    firsts: list[np.ndarray] = []
    lasts: list[np.ndarray] = []
    brokens: list[np.ndarray] = []
    line = 0
    window = 4096
    n_nl = len(lines.newlines)
    while line < n_lines:
        k0 = int(q_at_line[line])
        hi = min(n_lines, line + window)
        j = np.arange(line, hi)
        term = np.zeros(len(j), dtype=bool)
        has_nl = j < n_nl
        term[has_nl] = ((q_before_nl[j[has_nl]] - k0) & 1) == 0
        if hi == n_lines and final:
            term[-1] = True  # the end of the file ends the last record
        ends = j[term]
        if not len(ends):
            if hi == n_lines:
                break  # a record still open at the end of this step: the next step has it
            window *= 2
            continue
        starts = np.concatenate([[line], ends[:-1] + 1])
        lo_b, hi_b = lines.start[line], lines.end[ends[-1]]
        broken = np.zeros(len(ends), dtype=bool)
        qi = np.arange(np.searchsorted(q, lo_b), np.searchsorted(q, hi_b))
        if len(qi):
            opener = ((qi - k0) & 1) == 0
            bad = np.where(opener, ~valid_open[qi], ~valid_close[qi])
            rec = np.searchsorted(lines.start[starts], q[qi], side="right") - 1
            broken[rec[bad]] = True
            if final and ends[-1] == n_lines - 1 and hi == n_lines and (len(q) - k0) & 1:
                broken[-1] = True  # a quote still open at the end of the file
        ci = np.arange(np.searchsorted(cr, lo_b), np.searchsorted(cr, hi_b))
        if len(ci):
            outside = ((q_before_cr[ci] - k0) & 1) == 0
            hit = outside & bare_cr[ci]
            rec = np.searchsorted(lines.start[starts], cr[ci], side="right") - 1
            broken[rec[hit]] = True
        multi = np.flatnonzero(broken & (ends > starts))
        if len(multi):
            r = int(multi[0])
            firsts.append(np.append(starts[:r], starts[r]))
            lasts.append(np.append(ends[:r], starts[r]))
            brokens.append(np.append(broken[:r], True))
            line = int(starts[r]) + 1
            resyncs += 1
            window = 4096
            if resyncs > MAX_RESYNCS:
                raise LandingReadError(
                    path,
                    f"landing file {path}: more than {MAX_RESYNCS} broken quotes (the latest "
                    f"at line {line}); the file is refused rather than guessed at",
                )
            continue
        firsts.append(starts)
        lasts.append(ends)
        brokens.append(broken)
        line = int(ends[-1]) + 1
        window = min(window * 2, 1 << 20)
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool), line, resyncs
    return (
        np.concatenate(firsts),
        np.concatenate(lasts),
        np.concatenate(brokens),
        line,
        resyncs,
    )


def _commas_before(a: np.ndarray, *points: np.ndarray) -> list[np.ndarray]:
    """How many commas precede each byte position of each sorted array; one chunked scan."""
    outs = [np.zeros(len(p), dtype=np.int64) for p in points]
    total = 0
    step = 1 << 23
    for off in range(0, len(a), step):
        commas = np.flatnonzero(a[off : off + step] == 44) + off
        for p, out in zip(points, outs, strict=True):
            i0, i1 = np.searchsorted(p, [off, off + step])
            out[i0:i1] = total + np.searchsorted(commas, p[i0:i1])
        total += len(commas)
    for p, out in zip(points, outs, strict=True):
        out[p >= len(a)] = total
    return outs


class _CsvSteps:
    """A CSV file parsed step by step (`_steps`): the header from its first record, then
    each step's records into one Arrow table piece."""

    def __init__(self, names: list[str], path: str) -> None:
        self.names = names
        self.path = path
        self.header: list[str] | None = None
        self.extra: list[str] = []
        self.positions: list[int] = []
        self.pieces: list[pa.Table] = []
        self.line_base = 0
        self.resyncs = 0
        self.stats = {
            "lines": 0,
            "header_lines": 0,
            "blank_lines": 0,  # a blank CSV line is a record of no fields: rejected
            "lines_in_records": 0,
            "records": 0,
            "rejected": 0,
        }

    def feed(self, body: bytes, cut: int, final: bool) -> int:
        a = np.frombuffer(body, dtype=np.uint8, count=cut)
        lines = _Lines.of(a)
        first, last, broken, done, self.resyncs = _records(a, lines, self.path, final, self.resyncs)
        if not done:
            return 0
        consumed = int(lines.end[done - 1])
        a = a[:consumed]
        starts, ends = lines.start[first], lines.end[last]
        del lines
        if self.header is None:
            self._read_header(body, int(starts[0]), int(ends[0]), int(last[0]))
            first, last, broken, starts, ends = (
                first[1:],
                last[1:],
                broken[1:],
                starts[1:],
                ends[1:],
            )
        if len(first):
            self._parse(body, a, first, last, broken, starts, ends)
        self.stats["lines"] += done
        self.line_base += done
        return consumed

    def _read_header(self, body: bytes, lo: int, hi: int, last_line: int) -> None:
        header_text = _text_of(body, lo, hi)
        header = [h.strip() for h in next(csv.reader(io.StringIO(header_text, newline="")), [])]
        missing = [c for c in self.names if c not in header]
        if missing:
            raise LandingSchemaError(self.path, missing, header)
        self.header = header
        self.extra = [h for h in header if h not in self.names]
        self.positions = [header.index(c) for c in self.names]
        self.stats["header_lines"] = self.line_base + last_line + 1

    def _parse(
        self,
        body: bytes,
        a: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        broken: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
    ) -> None:
        assert self.header is not None
        width = len(self.header)
        count = len(first)
        # Fields of each record: commas outside quoted fields, plus one.
        q = np.flatnonzero(a == 34)
        # starts, ends and quote positions are each sorted: one scan counts commas before each.
        at_start, at_end, at_quote = _commas_before(a, starts, ends, q)
        fields = at_end - at_start + 1
        del at_start, at_end
        if len(q):
            rec = np.searchsorted(starts, q, side="right") - 1
            inside = (rec >= 0) & (q < ends[np.maximum(rec, 0)])
            qi = np.flatnonzero(inside)
            rec = rec[qi]
            # Each record's quotes alternate open, close; the first in a record opens.
            rank = qi - np.searchsorted(q, starts[rec])
            openers = qi[(rank & 1) == 0]
            closers = openers + 1
            ok = closers < len(q)
            openers, closers = openers[ok], closers[ok]
            spans = at_quote[closers] - at_quote[openers]
            fields -= np.bincount(rec[(rank & 1) == 0][ok], weights=spans, minlength=count).astype(
                np.int64
            )
        content = ends - starts - (a[np.maximum(ends - 1, 0)] == 10)
        blank = (content == 0) | ((content == 1) & (a[starts] == 13))
        good = ~broken & ~blank & (fields == width)
        del content, blank, fields
        table = _parse_good_csv(
            body, starts, ends, good, width, self.positions, self.names, self.path
        )
        parsed = _assemble(
            body,
            table,
            self.names,
            good,
            broken,
            first + self.line_base,
            starts,
            ends,
            width,
            self.path,
            self.extra,
            stats={},
        )
        self.pieces.append(_large_text(parsed.table, self.names))
        self.stats["lines_in_records"] += int((last - first + 1).sum())
        self.stats["records"] += parsed.stats["records"]
        self.stats["rejected"] += parsed.stats["rejected"]

    def result(self) -> _Parsed:
        names = self.names
        if self.header is None:  # no record at all: an empty file
            empty = _assemble_json(_empty_table(names), names, np.zeros(0, np.int64), [], [])
            stats = {"lines": 0, "records": 0, "header_lines": 0, "blank_lines": 0}
            return _Parsed(_large_text(empty, names), [], stats)
        return _Parsed(_concat(self.pieces, names), self.extra, self.stats)


def _large_text(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """The contract's text columns as large_string, what pandas' Arrow string dtype holds;
    done per piece so the int32 offsets of a piece are freed as soon as it is parsed."""
    for name in names:
        i = table.schema.get_field_index(name)
        if table.schema.field(i).type != pa.large_string():
            table = table.set_column(i, name, table.column(i).cast(pa.large_string()))
    return table


def _concat(pieces: list[pa.Table], names: list[str]) -> pa.Table:
    if not pieces:
        empty = _assemble_json(_empty_table(names), names, np.zeros(0, np.int64), [], [])
        return _large_text(empty, names)
    return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


def _parse_good_csv(
    body: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    good: np.ndarray,
    width: int,
    positions: list[int],
    names: list[str],
    path: str,
) -> pa.Table:
    """pyarrow parses the records that are well-formed RFC 4180 of the header's width."""
    n_good = int(good.sum())
    if n_good == 0:
        return _empty_table(names).select(names)
    # Byte runs of consecutive good records, joined into one buffer for the parser.
    idx = np.flatnonzero(good)
    breaks = np.flatnonzero(np.diff(idx) != 1)
    run_first = np.concatenate([[idx[0]], idx[breaks + 1]])
    run_last = np.concatenate([idx[breaks], [idx[-1]]])
    if len(run_first) == 1:
        data: pa.Buffer | bytes = pa.py_buffer(body)[
            int(starts[run_first[0]]) : int(ends[run_last[0]])
        ]
    else:
        view = memoryview(body)
        data = b"".join(
            view[int(starts[f]) : int(ends[t])] for f, t in zip(run_first, run_last, strict=True)
        )
        if not data.endswith(b"\n"):
            data += b"\n"
    longest = int((ends[good] - starts[good]).max())
    generic = [f"f{i}" for i in range(width)]
    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(
            column_names=generic, block_size=max(1 << 24, 2 * longest + 1024)
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types={g: pa.string() for g in generic},
            include_columns=[generic[p] for p in positions],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,
        ),
    )
    if table.num_rows != n_good:
        raise LandingReadError(
            path,
            f"landing file {path}: the parser returned {table.num_rows} rows for {n_good} "
            "well-formed records, so not every line can be accounted for; the file fails",
        )
    return table.rename_columns(names)


def _empty_table(names: Sequence[str]) -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in names})


def _assemble(
    body: bytes,
    table: pa.Table,
    names: list[str],
    good: np.ndarray,
    broken: np.ndarray,
    first: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    width: int,
    path: str,
    extra: list[str],
    stats: dict[str, Any],
) -> _Parsed:
    """All records in line order: parsed ones, and the rest with their reason and raw text."""
    count = len(first)
    bad = np.flatnonzero(~good)
    if len(bad):
        take = np.full(count, -1, dtype=np.int64)
        take[good] = np.arange(int(good.sum()))
        table = table.take(pa.array(take, mask=take < 0))
    errors: list[str | None] = [None] * count
    raws: list[str | None] = [None] * count
    for i in bad:  # only the records that did not parse: their reason, their verbatim text
        raw = _text_of(body, int(starts[i]), int(ends[i]))
        raws[i] = raw
        if broken[i]:
            errors[i] = f"broken quote (a quote must enclose a whole field): {sample(raw)}"
        else:
            found = next(csv.reader(io.StringIO(raw, newline="")), [])
            errors[i] = f"expected {width} fields, found {len(found)}: {sample(','.join(found))}"
    meta = {
        "_source_line": pa.array(first + 1, pa.int64()),
        "_parse_error": pa.array(errors, pa.string()),
        JSON_TYPES_COLUMN: pa.nulls(count, pa.string()),
        "_raw_text": pa.array(raws, pa.string()),
    }
    for key, value in meta.items():
        table = table.append_column(key, value)
    return _Parsed(table, extra, {**stats, "records": count, "rejected": len(bad)})


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


class _JsonlSteps:
    """A JSONL file parsed step by step (`_steps`): every line is a record or blank."""

    def __init__(self, names: list[str], path: str) -> None:
        self.names = names
        self.path = path
        self.pieces: list[pa.Table] = []
        self.seen_extra: list[tuple[int, int, str]] = []
        self.line_base = 0
        self.stats = {
            "lines": 0,
            "header_lines": 0,
            "records": 0,
            "lines_in_records": 0,
            "blank_lines": 0,
            "rejected": 0,
        }

    def feed(self, body: bytes, cut: int, final: bool) -> int:
        table, seen_extra, counts = _jsonl_step(body, cut, self.names, self.line_base)
        self.pieces.append(_large_text(table, self.names))
        self.seen_extra += seen_extra
        for key, value in counts.items():
            self.stats[key] += value
        self.line_base += counts["lines"]
        return cut

    def result(self) -> _Parsed:
        if not self.stats["lines"]:
            stats = {"lines": 0, "records": 0, "blank_lines": 0, "header_lines": 0}
            return _Parsed(_concat([], self.names), [], stats)
        extra: dict[str, None] = {}
        for _, _, key in sorted(self.seen_extra, key=lambda t: (t[0], t[1])):
            extra[key] = None
        return _Parsed(_concat(self.pieces, self.names), list(extra), self.stats)


def _jsonl_plain(
    body: bytes, cut: int, a: np.ndarray, lines: _Lines, names: list[str]
) -> pa.Table | None:
    """The contract columns of body[:cut] when every line is one plain record, read by
    Arrow's JSON reader in one pass; None when any line might not be (the caller then
    decides line by line, as always).

    Plain: each line starts with "{" and ends with "}" (before "\\n" or "\\r\\n"); Arrow
    parses exactly one object per line (a line's leading "{" can only open a top-level
    object after a line that ended in "}", and strings cannot span lines, so n objects over
    n such lines are one per line); no key beyond the contract's; every value a string or
    null (Arrow refuses a repeated key, a trailing comma, a raw control character in a
    string, and a value of another type); and no \\u escape, so the
    decoded text is plain UTF-8 on every path. Such lines are exactly those the line-by-line
    path takes as well-formed objects of string values, with the same values.
    """
    n = len(lines)
    if not n or body.find(b"\\u", 0, cut) >= 0:
        return None
    end = lines.end - 1  # the last byte of each line, before its "\n"
    end = end - (a[end] == 10)
    end = end - ((a[np.maximum(end, 0)] == 13) & (end > lines.start))
    if not (bool((a[lines.start] == 123).all()) and bool((a[np.maximum(end, 0)] == 125).all())):
        return None
    if bool((end <= lines.start).any()):
        return None
    try:
        table = pajson.read_json(
            pa.BufferReader(pa.py_buffer(body)[:cut]),
            read_options=pajson.ReadOptions(use_threads=False, block_size=cut + 1),
            # All text (no timestamp inference); a key beyond the contract's is an error.
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([(c, pa.string()) for c in names]),
                unexpected_field_behavior="error",
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n or table.column_names != names:
        return None
    return pa.table({c: table.column(c).combine_chunks() for c in names})


def _jsonl_step(
    body: bytes, cut: int, names: list[str], line_base: int
) -> tuple[pa.Table, list[tuple[int, int, str]], dict[str, int]]:
    """Rows of the whole lines in body[:cut]; a key missing from a record is a null value,
    not an error. Also the extra keys seen, by (line, position), and the line counts.

    DuckDB extracts the string values of well-formed objects; a line it cannot take as is
    (malformed, not an object, a non-string value, a repeated key, a trailing comma that
    Python's JSON rejects) is decided by Python's json module, exactly as one line.
    """
    a = np.frombuffer(body, dtype=np.uint8, count=cut)
    # Lines split on "\n" only: JSON allows U+2028 and friends raw inside strings.
    lines = _Lines.of(a)
    n = len(lines)
    plain = _jsonl_plain(body, cut, a, lines, names)
    if plain is not None:
        none: list[str | None] = [None] * n
        counts = {"lines": n, "records": n, "lines_in_records": n, "blank_lines": 0}
        return (
            _assemble_json(plain, names, np.arange(n) + 1 + line_base, none, none, none),
            [],
            {**counts, "rejected": 0},
        )
    offsets = np.append(lines.start, lines.end[-1])
    large = cut >= 1 << 31
    kind = pa.large_string() if large else pa.string()
    offsets_buf = pa.py_buffer(offsets.astype(np.int64 if large else np.int32))
    text = pa.Array.from_buffers(kind, n, [None, offsets_buf, pa.py_buffer(body)])
    lines_tab = pa.table({"line": text, "rn": pa.array(np.arange(n), pa.int64())})
    paths = ", ".join("'$.\"" + c.replace('"', '\\"').replace("'", "''") + "\"'" for c in names)
    cols_list = ", ".join("'" + c.replace("'", "''") + "'" for c in names)
    picks = ", ".join(f'vals[{i + 1}] AS "c{i}"' for i in range(len(names)))
    conn = duckdb.connect()
    try:
        conn.register("lines_tab", lines_tab)
        out = conn.execute(
            f"""
            WITH p AS (
                SELECT rn, line, CASE WHEN json_valid(line) THEN json_type(line) END AS t
                FROM lines_tab
            ), o AS (
                SELECT rn,
                    t = 'OBJECT' AND NOT regexp_matches(line, ',[ \\t\\r\\n]*[}}\\]]') AS obj,
                    CASE WHEN t = 'OBJECT' THEN json_type(line, [{paths}]) END AS types,
                    CASE WHEN t = 'OBJECT' THEN json_extract_string(line, [{paths}]) END AS vals,
                    CASE WHEN t = 'OBJECT' THEN json_keys(line) END AS keys
                FROM p
            ), f AS (
                SELECT *, coalesce(obj
                    AND list_bool_and(list_transform(
                        types, lambda x: x IS NULL OR x IN ('VARCHAR', 'NULL')))
                    AND len(keys) = len(list_distinct(keys)), false) AS fast
                FROM o
            )
            SELECT rn, fast, {picks},
                CASE WHEN fast THEN list_filter(keys, lambda k: NOT list_contains([{cols_list}], k))
                END AS extra
            FROM f ORDER BY rn
            """
        ).fetch_arrow_table()
    finally:
        conn.close()
    fast = out.column("fast").to_numpy(zero_copy_only=False)
    slow = np.flatnonzero(~fast)
    keep = fast.copy()
    values: dict[int, list[str | None]] = {}
    kinds: dict[int, str | None] = {}
    errors: dict[int, str] = {}
    seen_extra: list[tuple[int, int, str]] = []
    known = set(names)
    blank = 0
    for i in slow:  # lines DuckDB could not take as is: Python's json decides, as before
        line = _text_of(body, int(lines.start[i]), int(lines.end[i]))
        if not line.strip():
            blank += 1
            continue
        keep[i] = True
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            errors[i] = f"malformed JSON: {exc}"[:SAMPLE_CHARS]
            continue
        raw_values = [record.get(c) for c in names]
        values[i] = [_text(v) for v in raw_values]
        kinds[i] = _json_types(names, raw_values)
        seen_extra += [
            (line_base + int(i), k, key) for k, key in enumerate(record) if key not in known
        ]
    extras = out.column("extra")
    flat = pa.compute.list_flatten(extras)
    if len(flat):
        parents = pa.compute.list_parent_indices(extras).to_numpy()
        seen_extra += [
            (line_base + int(rn), 0, key) for rn, key in zip(parents, flat.to_pylist(), strict=True)
        ]
    rows = np.flatnonzero(keep)
    table = out.select([f"c{i}" for i in range(len(names))]).rename_columns(names)
    if len(slow):
        patched = sorted({*values, *errors})
        mask = np.zeros(n, dtype=bool)
        mask[patched] = True
        arrays = []
        for j, c in enumerate(names):
            col = table.column(c).combine_chunks()
            if patched:
                fix = pa.array(
                    [values[i][j] if i in values else None for i in patched], pa.string()
                )
                col = pa.compute.replace_with_mask(col, pa.array(mask), fix)
            arrays.append(col)
        table = pa.table(dict(zip(names, arrays, strict=True))).take(pa.array(rows))
    raws: list[str | None] = [None] * len(rows)
    errs: list[str | None] = [None] * len(rows)
    types: list[str | None] = [None] * len(rows)
    if kinds:
        where = {int(r): k for k, r in enumerate(rows)}
        for i, kind in kinds.items():
            types[where[i]] = kind
    if errors:
        where = {int(r): k for k, r in enumerate(rows)}
        for i, message in errors.items():
            errs[where[i]] = message
            raws[where[i]] = _text_of(body, int(lines.start[i]), int(lines.end[i]))
    return (
        _assemble_json(table, names, rows + 1 + line_base, errs, raws, types),
        seen_extra,
        {
            "lines": n,
            "records": len(rows),
            "lines_in_records": len(rows),
            "blank_lines": blank,
            "rejected": len(errors),
        },
    )


def _assemble_json(
    table: pa.Table,
    names: list[str],
    lines: np.ndarray,
    errors: list,
    raws: list,
    types: list | None = None,
) -> pa.Table:
    """The row meta columns appended to a file's contract columns."""
    table = table.append_column("_source_line", pa.array(lines, pa.int64()))
    table = table.append_column("_parse_error", pa.array(errors, pa.string()))
    kinds = pa.array(types if types is not None else [None] * len(lines), pa.string())
    table = table.append_column(JSON_TYPES_COLUMN, kinds)
    return table.append_column("_raw_text", pa.array(raws, pa.string()))


def _check_accounting(path: str, stats: dict[str, Any]) -> None:
    """Every physical line is the header, blank (JSONL), or inside exactly one record."""
    accounted = stats["header_lines"] + stats["blank_lines"] + stats.get("lines_in_records", 0)
    if accounted != stats["lines"]:
        raise LandingReadError(
            path,
            f"landing file {path}: {stats['lines']} lines but only {accounted} accounted for "
            "as header, blank or record lines; the file fails rather than lose lines",
        )
    stats.setdefault("lines_in_records", 0)


def read_landing_files(
    root: Path, files: Sequence[LandingFile], columns: Sequence[str]
) -> pd.DataFrame:
    """Read exactly the locked files, refusing any whose bytes changed since the lock.

    Columns a file carries beyond the contract are ignored and listed in
    `frame.attrs["landing_issues"]`, so the quality gate can report them; how each file's
    lines were accounted for is in `frame.attrs["landing_files"]`.
    """
    names = list(columns)
    tables: list[pa.Table] = []
    issues: list[dict[str, object]] = []
    accounts: list[dict[str, object]] = []
    sources: list[str] = []
    ingests: list[date] = []
    counts: list[int] = []
    for f in files:
        csv_file = f.path.endswith(".csv")
        steps = _CsvSteps(names, f.path) if csv_file else _JsonlSteps(names, f.path)
        with _LockedReader(Path(root), f) as reader:
            try:
                _steps(reader, steps.feed)
                parsed = steps.result()
                _check_accounting(f.path, parsed.stats)
            except LandingFileChangedError:
                raise
            except Exception as exc:  # the file's bytes decide first: changed, not UTF-8
                reader.settle(exc)
                raise
        del steps
        if parsed.extra:
            issues.append({"file": f.path, "extra_columns": parsed.extra})
        accounts.append({"file": f.path, **parsed.stats})
        tables.append(parsed.table.select([*names, *ROW_META]))
        sources.append(f.path)
        ingests.append(f.ingest_date)
        counts.append(parsed.table.num_rows)
        del parsed
    if tables:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    else:
        empty = _assemble_json(_empty_table(names), names, np.zeros(0, np.int64), [], [])
        table = _large_text(empty, names)
    del tables
    # Meta columns first, each Arrow column dropped once converted, so two copies of one
    # never coexist. Meta text is almost always null: plain object columns (None).
    meta: dict[str, Any] = {}
    for column in ROW_META:
        meta[column] = table.column(column).to_pandas()
        table = table.drop_columns([column])
    # Text columns share the Arrow buffers read (large_string is what the dtype holds).
    out = table.to_pandas(types_mapper=lambda t: TEXT_DTYPE if t == pa.large_string() else None)
    del table
    pa.default_memory_pool().release_unused()  # the pool's cache of the freed steps
    # Columns are added in their final order: reordering afterwards would copy them.
    categories = sorted(set(sources))
    order = np.array([categories.index(s) for s in sources], dtype=np.int32)
    out["_source_file"] = pd.Categorical.from_codes(np.repeat(order, counts), categories=categories)
    out["_source_line"] = meta.pop("_source_line").astype("int64", copy=False)
    out["_ingest_date"] = pd.Series(
        np.repeat(np.array([np.datetime64(d, "ns") for d in ingests], "datetime64[ns]"), counts)
        if ingests
        else np.zeros(0, "datetime64[ns]"),
        index=out.index,
    )
    for column in ROW_META[1:]:
        out[column] = meta.pop(column)
    out.attrs["landing_issues"] = issues
    out.attrs["landing_files"] = accounts
    return out
