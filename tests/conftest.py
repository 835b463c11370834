"""Shared fixtures: a small deterministic demo landing zone, generated once per session."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ecm_assets.demo.landing_generator import DemoDataSummary, generate_demo_data

DEMO_START = date(2026, 9, 1)
DEMO_END = date(2026, 9, 8)


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make` exports DAGSTER_HOME, ECM_DATA_DIR and ECM_WAREHOUSE(_URL) for the developer's
    demo; tests never read or write them (a test that wants one sets it itself)."""
    for name in ("DAGSTER_HOME", "ECM_DATA_DIR", "ECM_WAREHOUSE", "ECM_WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_leaked_defs_state_storage() -> None:
    """Dagster keeps the current instance's defs-state storage in a ContextVar. After
    Playwright's greenlet loop (tests/test_ui.py) the main context can be left holding the
    storage of a disposed instance, and every later in-process materialize then fails with
    "undefined DagsterInstance weakref". No test starts with one."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoDataSummary]:
    """Eight business days of messy landing data at a small scale (~2k events a day)."""
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo_data(root, DEMO_START, DEMO_END, seed=11, scale=0.25)
    return root, summary
