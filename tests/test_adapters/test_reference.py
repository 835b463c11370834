"""Reference snapshots: a business date binds the newest snapshot published on or before it."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest

from ecm_assets.adapters.reference import AS_AT_BUSINESS_DATE, pin_snapshots


def publish_calendar(root: Path, version: str, published_on: str, holidays: list[str]) -> bytes:
    snap = root / "sla_calendar" / version
    snap.mkdir(parents=True)
    meta = {"name": "sla_calendar", "version": version, "published_on": published_on}
    (snap / "snapshot.json").write_text(json.dumps(meta))
    raw = json.dumps({"targets_hours": {"P1": 8}, "holidays": holidays}).encode()
    (snap / "calendar.json").write_bytes(raw)
    return raw


def publish_units(root: Path, version: str, published_on: str, units: list[str]) -> None:
    snap = root / "org_hierarchy" / version
    snap.mkdir(parents=True)
    meta = {"name": "org_hierarchy", "version": version, "published_on": published_on}
    (snap / "snapshot.json").write_text(json.dumps(meta))
    lines = ["unit_id,region,valid_from,valid_to"]
    lines += [f"{u},NORTH,2025-09-01," for u in units]
    (snap / "units.csv").write_text("\n".join(lines) + "\n")


def test_each_date_pins_the_newest_snapshot_published_on_or_before_it(tmp_path):
    raw1 = publish_calendar(tmp_path, "v0001", "2026-08-25", ["2026-09-16"])
    raw2 = publish_calendar(tmp_path, "v0002", "2026-09-28", ["2026-09-16", "2026-10-16"])
    publish_calendar(tmp_path, "v0003", "2026-12-01", [])

    days = [date(2026, 8, 25), date(2026, 9, 27), date(2026, 9, 28), date(2026, 10, 5)]
    pinned = pin_snapshots(tmp_path, "sla_calendar", days)

    assert [pinned[d].binding.version for d in days] == ["v0001", "v0001", "v0002", "v0002"]
    v1, v2 = pinned[days[0]].binding, pinned[days[2]].binding
    assert (v1.published_on, v1.sha256) == (date(2026, 8, 25), hashlib.sha256(raw1).hexdigest())
    assert (v2.published_on, v2.sha256) == (date(2026, 9, 28), hashlib.sha256(raw2).hexdigest())
    assert v1.policy == AS_AT_BUSINESS_DATE
    assert pinned[days[3]].data["holidays"] == ["2026-09-16", "2026-10-16"]
    assert pinned[days[0]] is pinned[days[1]]


def test_pinning_follows_published_on_not_the_directory_order(tmp_path):
    publish_calendar(tmp_path, "a-late", "2026-09-20", ["late"])
    publish_calendar(tmp_path, "z-early", "2026-09-01", ["early"])

    pinned = pin_snapshots(tmp_path, "sla_calendar", [date(2026, 9, 10), date(2026, 9, 20)])

    assert pinned[date(2026, 9, 10)].binding.version == "z-early"
    assert pinned[date(2026, 9, 20)].binding.version == "a-late"


def test_org_hierarchy_snapshot_loads_units_with_parsed_validity(tmp_path):
    publish_units(tmp_path, "v0001", "2026-08-25", ["U01", "U02"])

    snapshot = pin_snapshots(tmp_path, "org_hierarchy", [date(2026, 9, 1)])[date(2026, 9, 1)]

    units = snapshot.data
    assert list(units["unit_id"]) == ["U01", "U02"]
    assert str(units["valid_from"].dtype).startswith("datetime64")
    assert units["valid_to"].isna().all()


def test_a_date_before_every_snapshot_raises_naming_the_date(tmp_path):
    publish_calendar(tmp_path, "v0001", "2026-08-25", [])

    with pytest.raises(LookupError, match=r"sla_calendar.*on or before 2026-08-24"):
        pin_snapshots(tmp_path, "sla_calendar", [date(2026, 9, 1), date(2026, 8, 24)])


def test_unknown_reference_name_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="'sla_calendar'"):
        pin_snapshots(tmp_path, "sla_calendar", [date(2026, 9, 1)])
