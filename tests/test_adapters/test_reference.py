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


# --- generic reference datasets ----------------------------------------------------------------


def publish_zones(root: Path, version: str, effective: str, rows: list[str], **meta) -> Path:
    snap = root / "zones" / version
    snap.mkdir(parents=True)
    (snap / "zones.csv").write_text("zone_id,borough,valid_from\n" + "\n".join(rows) + "\n")
    meta = {"name": "zones", "version": version, "effective_from": effective, **meta}
    (snap / "snapshot.json").write_text(json.dumps(meta))
    return snap


def test_any_name_is_a_reference_dataset_with_keys_and_dates(tmp_path):
    publish_zones(
        tmp_path,
        "v1",
        "2015-01-01",
        ["Z1,Queens,2014-01-01", "Z2,Bronx,2014-01-01"],
        file="zones.csv",
        key_columns=["zone_id"],
    )
    snap = pin_snapshots(tmp_path, "zones", [date(2015, 6, 1)])[date(2015, 6, 1)]
    assert snap.binding.published_on == date(2015, 1, 1)
    assert list(snap.data["zone_id"]) == ["Z1", "Z2"]
    assert str(snap.data["valid_from"].dtype).startswith("datetime64")


def test_versions_sort_by_effective_date_then_numeric_version(tmp_path):
    """Regression: versions compared as text, so v10 sorted before v9."""
    from ecm_assets.adapters.reference import list_versions

    for v in ("v9", "v10", "v2"):
        publish_zones(tmp_path, v, "2015-01-01", [f"Z{v},Queens,2014-01-01"])
    publish_zones(tmp_path, "v1", "2015-02-01", ["Z1,Queens,2014-01-01"])
    assert [v for _, v in list_versions(tmp_path, "zones")] == ["v2", "v9", "v10", "v1"]
    pinned = pin_snapshots(tmp_path, "zones", [date(2015, 1, 15), date(2015, 2, 1)])
    assert pinned[date(2015, 1, 15)].binding.version == "v10"
    assert pinned[date(2015, 2, 1)].binding.version == "v1"


@pytest.mark.parametrize(
    ("meta", "rows", "message"),
    [
        ({"key_columns": ["zone_id"]}, ["Z1,Q,2014-01-01", "Z1,B,2014-01-01"], "not unique"),
        ({"key_columns": ["nope"]}, ["Z1,Q,2014-01-01"], r"columns \['nope'\] are declared"),
        ({}, ["Z1,Q,someday"], r"row 2 column valid_from: 'someday' is not a date"),
        ({"file": "missing.csv"}, ["Z1,Q,2014-01-01"], "file 'missing.csv' is missing"),
    ],
)
def test_malformed_snapshots_name_file_and_field(tmp_path, meta, rows, message):
    from ecm_assets.adapters.reference import ReferenceDataError

    publish_zones(tmp_path, "v1", "2015-01-01", rows, **meta)
    with pytest.raises(ReferenceDataError, match=message):
        pin_snapshots(tmp_path, "zones", [date(2015, 1, 1)])


def test_snapshot_json_without_effective_date_is_named(tmp_path):
    from ecm_assets.adapters.reference import ReferenceDataError

    snap = publish_zones(tmp_path, "v1", "2015-01-01", ["Z1,Q,2014-01-01"])
    (snap / "snapshot.json").write_text(json.dumps({"name": "zones", "version": "v1"}))
    with pytest.raises(ReferenceDataError, match="'effective_from' is missing"):
        pin_snapshots(tmp_path, "zones", [date(2015, 1, 1)])
