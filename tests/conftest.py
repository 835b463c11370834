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
    """`make` exports DAGSTER_HOME for the developer's instance; tests never write to it."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoDataSummary]:
    """Eight business days of messy landing data at a small scale (~2k events a day)."""
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo_data(root, DEMO_START, DEMO_END, seed=11, scale=0.25)
    return root, summary
