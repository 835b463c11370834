"""The fast ISO 8601 reader gives exactly what pandas' ISO8601 parser gives, value by value."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ecm_assets.contracts.transform import _iso8601_utc

EDGE_CASES = [
    "2026-09-01T10:00:00Z",
    "2026-09-01T10:00:00+05:30",
    "2026-09-01T10:00:00-08:00",
    "2024-02-29T23:59:59Z",
    "2026-02-29T00:00:00Z",
    "2026-13-45T25:99:00Z",
    "not-a-date",
    "",
    None,
    "2026-09-01T10:00:00z",
    "2026-09-01 10:00:00Z",
    "2026-09-01T10:00:00.123Z",
    "2026-09-01T10:00:00+14:00",
    "2026-09-01T10:00:00+23:59",
    "1600-01-01T00:00:00Z",
    "2026-09-01T24:00:00Z",
    "2026-09-01T10:00:60Z",
    "2026-09-01T10:00:00+0530",
    "2026-04-31T10:00:00Z",
    "2000-02-29T12:00:00-00:00",
    "2100-02-29T00:00:00Z",
    "\uff12026-09-01T10:00:00Z",
    "2026-09-01T10:00:00",  # no zone: pandas reads it by the offset of the value before it
    "2026-09-01T10:00:00+05:3x",
]


def _pandas(values: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return pd.Series(pd.DatetimeIndex(parsed).as_unit("ns"))


def test_edge_cases_parse_as_pandas_parses_them() -> None:
    values = pd.Series(EDGE_CASES, dtype=object)
    pd.testing.assert_series_equal(pd.Series(_iso8601_utc(values)), _pandas(values))
    zoned = pd.Series([v for v in EDGE_CASES if v != "2026-09-01T10:00:00"], dtype=object)
    pd.testing.assert_series_equal(pd.Series(_iso8601_utc(zoned)), _pandas(zoned))


def test_random_instants_in_every_offset_parse_as_pandas_parses_them() -> None:
    rng = np.random.default_rng(5)
    seconds = rng.integers(-2_000_000_000, 4_000_000_000, 5000)
    offsets = rng.choice([0, -480, -300, -210, 60, 120, 330, 420, 540, 840, -720], 5000)
    local = (seconds + offsets * 60).astype("datetime64[s]")
    zones = [
        "Z" if o == 0 else f"{'+' if o > 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
        for o in offsets
    ]
    values = pd.Series(np.strings.add(np.datetime_as_string(local, unit="s"), zones).astype(object))
    pd.testing.assert_series_equal(pd.Series(_iso8601_utc(values)), _pandas(values))
