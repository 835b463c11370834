"""Contract tests for the demo landing generator: the parser downstream relies on all of this."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ecm_assets.demo.landing_generator import (
    COLUMNS,
    DEFECT_RATES,
    EVENT_TYPES,
    PRIORITIES,
    DemoDataSummary,
    generate_demo_data,
)

START = date(2026, 9, 1)
END = date(2026, 9, 5)
SCALE = 0.05
VALID_UNITS = {f"U{i:02d}" for i in range(1, 13)}

Record = tuple[str, str, str, str, str, str]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_landing(out: Path) -> list[tuple[date, str, Record]]:
    """All raw rows as (ingest date, file name, record), validating the physical format."""
    rows: list[tuple[date, str, Record]] = []
    for day_dir in sorted((out / "landing" / "case_events").iterdir()):
        ingest = date.fromisoformat(day_dir.name.removeprefix("ingest_date="))
        for path in sorted(day_dir.iterdir()):
            raw = path.read_bytes()
            assert b"\r" not in raw
            text = raw.decode("utf-8")
            if path.suffix == ".csv":
                reader = csv.reader(text.splitlines())
                assert next(reader) == list(COLUMNS)
                for rec in reader:
                    assert len(rec) == len(COLUMNS)
                    rows.append((ingest, path.name, tuple(rec)))
            else:
                assert path.suffix == ".jsonl"
                for line in text.splitlines():
                    obj = json.loads(line)
                    assert list(obj) == list(COLUMNS)
                    assert all(isinstance(v, str) for v in obj.values())
                    rows.append((ingest, path.name, tuple(obj[c] for c in COLUMNS)))
    return rows


def _parse_ts(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoDataSummary, list]:
    out = tmp_path_factory.mktemp("demo")
    summary = generate_demo_data(out, START, END, seed=11, scale=SCALE)
    return summary, _read_landing(out)


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path: Path) -> None:
    a = generate_demo_data(tmp_path / "a", START, END, seed=3, scale=SCALE)
    generate_demo_data(tmp_path / "b", START, END, seed=3, scale=SCALE)
    generate_demo_data(tmp_path / "c", START, END, seed=4, scale=SCALE)
    digest_a = _tree_digest(tmp_path / "a")
    assert digest_a == _tree_digest(tmp_path / "b")
    digest_c = _tree_digest(tmp_path / "c")
    assert digest_a.keys() == digest_c.keys()
    assert digest_a != digest_c
    # A rerun into the same directory replaces the generated subtrees with the same content.
    (tmp_path / "a" / "landing" / "case_events" / "stray.csv").write_text("x\n")
    (tmp_path / "a" / "reference" / "stray").mkdir()
    assert generate_demo_data(tmp_path / "a", START, END, seed=3, scale=SCALE) == a
    assert _tree_digest(tmp_path / "a") == digest_a


def test_layout_and_summary(generated: tuple[DemoDataSummary, list], tmp_path: Path) -> None:
    summary, rows = generated
    n_ingest_days = (END - START).days + 1 + 5
    assert summary.landing_files == 4 * n_ingest_days
    assert summary.events_written == len(rows)
    assert set(summary.injected) == set(DEFECT_RATES)
    files = Counter((ingest, name) for ingest, name, _ in rows)
    assert {ingest for ingest, _ in files} <= {
        START + timedelta(days=d) for d in range(n_ingest_days)
    }
    assert {name for _, name in files} == {
        "events-000.csv",
        "events-001.csv",
        "events-002.csv",
        "events-003.jsonl",
    }
    out = summary.out_dir
    for d in range(n_ingest_days):
        day_dir = out / "landing" / "case_events" / f"ingest_date={START + timedelta(days=d)}"
        assert sorted(p.name for p in day_dir.iterdir()) == [
            "events-000.csv",
            "events-001.csv",
            "events-002.csv",
            "events-003.jsonl",
        ]
    assert (out / "landing" / "README.txt").read_text().startswith("Demo landing zone")


def test_field_formats(generated: tuple[DemoDataSummary, list]) -> None:
    _, rows = generated
    offsets = 0
    for _, _, (event_id, case_id, _, ts, unit_id, priority) in rows:
        assert len(event_id) == 11 and event_id[0] == "E" and event_id[1:].isdigit()
        assert case_id == "" or (len(case_id) == 10 and case_id[0] == "C" and case_id[1:].isdigit())
        assert unit_id in VALID_UNITS | {"U99"}
        assert priority in PRIORITIES
        if _parse_ts(ts) is not None:
            assert ts.endswith("Z") or ts[-6] in "+-"
            offsets += not ts.endswith("Z")
    assert 0.05 < offsets / len(rows) < 0.15


def test_injected_counts_match_files(generated: tuple[DemoDataSummary, list]) -> None:
    summary, rows = generated
    inj = summary.injected
    assert all(count > 0 for count in inj.values())
    records = [rec for _, _, rec in rows]
    assert sum(rec[1] == "" for rec in records) == inj["missing_case_id"]
    assert sum(rec[4] == "U99" for rec in records) == inj["unknown_unit"]
    assert sum(rec[2] not in EVENT_TYPES for rec in records) == inj["unknown_event_type"]
    assert sum(_parse_ts(rec[3]) is None for rec in records) == inj["bad_timestamp"]

    counts = Counter(records)
    assert sum(c - 1 for c in counts.values()) == inj["duplicate"]
    versions: dict[str, set[Record]] = defaultdict(set)
    for rec in records:
        versions[rec[0]].add(rec)
    assert sum(len(v) > 1 for v in versions.values()) == inj["correction"]

    n_events = len(versions)
    for key, rate in DEFECT_RATES.items():
        assert inj[key] == int(rate * n_events + 0.5)


def test_duplicates_and_corrections_placement(generated: tuple[DemoDataSummary, list]) -> None:
    _, rows = generated
    seen: dict[str, list[tuple[date, str, Record]]] = defaultdict(list)
    for row in rows:
        seen[row[2][0]].append(row)
    for copies in seen.values():
        if len(copies) == 1:
            continue
        distinct = {rec for _, _, rec in copies}
        if len(distinct) == 1:  # duplicates: never twice in the same file
            assert len({(ingest, name) for ingest, name, _ in copies}) == len(copies)
            continue
        assert len(copies) == 2 and len(distinct) == 2
        (day_a, _, old), (day_b, _, new) = sorted(copies)
        assert day_a < day_b
        changed = [c for c, x, y in zip(COLUMNS, old, new, strict=True) if x != y]
        assert len(changed) == 1 and changed[0] in {"priority", "unit_id", "event_ts"}
        assert new[4] in VALID_UNITS
        old_ts, new_ts = _parse_ts(old[3]), _parse_ts(new[3])
        assert old_ts is not None and new_ts is not None
        assert old_ts.date() == new_ts.date()
        assert abs((new_ts - old_ts).total_seconds()) <= 600


def test_arrival_window(generated: tuple[DemoDataSummary, list]) -> None:
    _, rows = generated
    lateness: Counter[int] = Counter()
    for ingest, _, rec in rows:
        ts = _parse_ts(rec[3])
        if ts is None:
            continue
        assert START <= ts.date() <= END
        days = (ingest - ts.date()).days
        assert 0 <= days <= 5
        lateness[days] += 1
    assert lateness[0] / sum(lateness.values()) == pytest.approx(0.7, abs=0.05)


def test_lifecycle_is_consistent(generated: tuple[DemoDataSummary, list]) -> None:
    _, rows = generated
    by_case: dict[str, set[tuple[str, str]]] = defaultdict(set)
    events: dict[str, set[str]] = defaultdict(set)
    for _, _, rec in rows:
        if rec[1] and rec[4] != "U99":
            by_case[rec[1]].add((rec[4], rec[5]))
        if rec[1]:
            events[rec[1]].add(rec[2])
    # Only corrections may give a case a second unit or priority.
    assert sum(len(v) > 1 for v in by_case.values()) <= len(rows) * 0.01
    assert sum("opened" in kinds for kinds in events.values()) >= 0.99 * len(events)


def test_reference_snapshots(generated: tuple[DemoDataSummary, list]) -> None:
    summary, _ = generated
    ref = summary.out_dir / "reference"
    reorg = date(2026, 9, 3)

    def snapshot(name: str, version: str) -> dict[str, str]:
        return json.loads((ref / name / version / "snapshot.json").read_text())

    assert snapshot("org_hierarchy", "v0001") == {
        "name": "org_hierarchy",
        "version": "v0001",
        "published_on": "2026-08-25",
        "file": "units.csv",
        "key_columns": ["unit_id", "valid_from"],
    }
    assert snapshot("org_hierarchy", "v0002")["published_on"] == "2026-08-31"
    assert snapshot("sla_calendar", "v0001")["published_on"] == "2026-08-25"
    assert snapshot("sla_calendar", "v0002")["published_on"] == reorg.isoformat()

    def units(version: str) -> list[dict[str, str]]:
        path = ref / "org_hierarchy" / version / "units.csv"
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    v1 = units("v0001")
    assert [r["unit_id"] for r in v1] == sorted(VALID_UNITS)
    assert all(r["valid_from"] == "2025-09-01" and r["valid_to"] == "" for r in v1)
    assert {r["region"] for r in v1} == {"NORTH", "SOUTH", "EAST", "WEST"}
    v2 = units("v0002")
    assert len(v2) == 14
    for unit in ("U03", "U07"):
        old, new = [r for r in v2 if r["unit_id"] == unit]
        assert old["valid_to"] == reorg.isoformat() and new["valid_from"] == reorg.isoformat()
        assert new["valid_to"] == "" and old["region"] != new["region"]
    unchanged = [r for r in v2 if r["unit_id"] not in {"U03", "U07"}]
    assert unchanged == [r for r in v1 if r["unit_id"] not in {"U03", "U07"}]

    cal1 = json.loads((ref / "sla_calendar" / "v0001" / "calendar.json").read_text())
    cal2 = json.loads((ref / "sla_calendar" / "v0002" / "calendar.json").read_text())
    targets = {"P1": 8, "P2": 24, "P3": 72, "P4": 168}
    assert cal1["targets_hours"] == targets == cal2["targets_hours"]
    assert cal1["holidays"] == ["2026-09-02"]
    assert cal2["holidays"] == ["2026-09-02", "2026-09-04"]


def test_single_day_period(tmp_path: Path) -> None:
    summary = generate_demo_data(tmp_path, START, START, scale=0.02)
    assert summary.landing_files == 24
    rows = _read_landing(tmp_path)
    parsed = [ts for _, _, rec in rows if (ts := _parse_ts(rec[3])) is not None]
    assert parsed and all(ts.date() == START for ts in parsed)
    v2 = tmp_path / "reference" / "org_hierarchy" / "v0002" / "units.csv"
    assert f"U03,EAST,2025-09-01,{START.isoformat()}" in v2.read_text()
    cal2 = json.loads(
        (tmp_path / "reference" / "sla_calendar" / "v0002" / "calendar.json").read_text()
    )
    assert len(set(cal2["holidays"])) == 2


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"end date 2026-09-01 .*start date 2026-09-05"):
        generate_demo_data(tmp_path, END, START)
    with pytest.raises(ValueError, match="scale"):
        generate_demo_data(tmp_path, START, END, scale=0)
    with pytest.raises(TypeError, match="seed"):
        generate_demo_data(tmp_path, START, END, seed=None)  # type: ignore[arg-type]
    assert not (tmp_path / "landing").exists()
