"""Resources that fix a run's inputs: the landing zone and the reference-data store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from ecm_assets.adapters.landing import list_landing_files, read_landing_files
from ecm_assets.adapters.reference import pin_snapshots
from ecm_assets.contracts.boundaries import LandingFile, ReferenceSnapshot


class LandingZone(dg.ConfigurableResource):
    """Root of the raw landing files (`<root>/<source>/ingest_date=YYYY-MM-DD/...`)."""

    root: str

    def lock_files(self, source: str, first: date, last: date) -> list[LandingFile]:
        return list_landing_files(Path(self.root), source, first, last)

    def read(self, files: Sequence[LandingFile], columns: Sequence[str]) -> pd.DataFrame:
        return read_landing_files(Path(self.root), files, columns)


class ReferenceStore(dg.ConfigurableResource):
    """Root of the versioned reference snapshots (`<root>/<name>/<version>/`)."""

    root: str

    def pin(self, name: str, business_dates: list[date]) -> dict[date, ReferenceSnapshot]:
        return pin_snapshots(Path(self.root), name, business_dates)
