"""The city-trips code location: one call of `ecm_assets.build_definitions`.

The data ended in March 2019, so no nightly lookback or monthly schedule is asked for; new
landing files still start runs, and downstream datasets follow their upstream.
"""

import os

from city_trips.datasets import DATASETS
from ecm_assets import build_definitions

defs = build_definitions(
    DATASETS,
    data_dir=os.environ.get("CITY_TRIPS_DATA_DIR", "data"),
    landing_sensors=["trips"],
    dependency_sensors=["borough_daily_fares", "borough_monthly_fares"],
)
