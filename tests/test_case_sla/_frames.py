"""Small hand-built frames shared by the case-SLA tests (no code under test is used here)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from ecm_assets.adapters.landing import META_COLUMNS
from ecm_assets.case_sla.contracts import LANDING_COLUMNS
from ecm_assets.contracts.boundaries import ReferenceBinding, ReferenceSnapshot

SHA = "0" * 64


def snapshot(name: str, version: str, data: Any, published_on: date = date(2026, 1, 1)):
    """A pinned reference snapshot built directly, as the runtime would hand it over."""
    binding = ReferenceBinding(name, version, published_on, SHA, "latest_published_on_or_before")
    return ReferenceSnapshot(binding, data)


def org_frame(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    """Org hierarchy rows (unit_id, region, valid_from, valid_to or None for open-ended)."""
    return pd.DataFrame(
        {
            "unit_id": [r[0] for r in rows],
            "region": [r[1] for r in rows],
            "valid_from": pd.to_datetime([r[2] for r in rows]).astype("datetime64[ns]"),
            "valid_to": pd.to_datetime([r[3] for r in rows]).astype("datetime64[ns]"),
        }
    )


#: U01 was in "Legacy" until 2026 (a closed interval the lookup must skip), North since.
BASE_ORG = org_frame(
    [
        ("U01", "Legacy", "2019-01-01", "2026-01-01"),
        ("U01", "North", "2026-01-01", None),
        ("U02", "South", "2020-01-01", None),
    ]
)


def org_for(*days: date, data: pd.DataFrame = BASE_ORG, version: str = "org-v1"):
    return {d: snapshot("org_hierarchy", version, data) for d in days}


def raw(
    event_id: str | None = "E1",
    case_id: str | None = "C1",
    event_type: str | None = "opened",
    event_ts: str | None = "2026-09-02T10:00:00Z",
    unit_id: str | None = "U01",
    priority: str | None = "P1",
    *,
    ingest: str = "2026-09-02",
    file: str = "a.csv",
    line: int = 2,
    error: str | None = None,
) -> dict[str, Any]:
    """One raw landing row: the six landing columns as text plus the landing meta columns."""
    return {
        "event_id": event_id,
        "case_id": case_id,
        "event_type": event_type,
        "event_ts": event_ts,
        "unit_id": unit_id,
        "priority": priority,
        "_source_file": f"case_events/ingest_date={ingest}/{file}",
        "_source_line": line,
        "_ingest_date": pd.Timestamp(ingest),
        "_parse_error": error,
    }


def landing(*rows: dict[str, Any]) -> pd.DataFrame:
    """The frame read_landing_files returns: object columns, int lines, datetime64 ingest."""
    frame = pd.DataFrame(list(rows), columns=[*LANDING_COLUMNS, *META_COLUMNS])
    for col in [*LANDING_COLUMNS, "_source_file", "_parse_error"]:
        frame[col] = frame[col].astype(object)
    frame["_source_line"] = frame["_source_line"].astype("int64")
    frame["_ingest_date"] = frame["_ingest_date"].astype("datetime64[ns]")
    return frame


def src(ingest: str, file: str = "a.csv") -> str:
    return f"case_events/ingest_date={ingest}/{file}"


def ts(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


def day(value: str) -> pd.Timestamp:
    return pd.Timestamp(value)
