"""Trips from landing files, fares per borough and day, a certified monthly report, and
monthly totals partitioned by borough (list partitions).

Business days are New York calendar days (a 23:30 pickup on New Year's Eve belongs to
2018-12-31 whatever its UTC date); the partitions run from 2019-01-01 to 2019-03-31.
"""

import json

import pandas as pd

from ecm_assets import (
    REJECT_COLUMNS,
    Column,
    ControlTotal,
    Dataset,
    DatasetContract,
    LandingSource,
    PartitionWindow,
    QualityContract,
    Referential,
    Severity,
    TransformResult,
    UniqueKey,
    Upstream,
    attribute_partitions,
)

ZONE, START, END = "America/New_York", "2019-01-01", "2019-03-31"
LATENESS_DAYS = 2
LANDING = ("trip_id", "pickup_ts", "zone_id", "fare")

TRIPS = DatasetContract(
    name="trips",
    description="Taxi trips of one New York business day, typed; bad rows quarantined.",
    columns=(
        Column("trip_id", "VARCHAR", nullable=False),
        Column("pickup_ts", "TIMESTAMPTZ", nullable=False),
        Column("business_date", "DATE", nullable=False),
        Column("zone_id", "VARCHAR", nullable=False),
        Column("fare", "DOUBLE", nullable=False),
        Column("source_file", "VARCHAR", nullable=False),
        Column("source_line", "BIGINT", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "trip_id"),
    landing=LandingSource("trips", LATENESS_DAYS, LANDING, time_column="pickup_ts"),
    reference=("zones",),
    group="city_trips",
    start=START,
    end=END,
    timezone=ZONE,
)


def parse_trips(landing: pd.DataFrame, window: PartitionWindow) -> TransformResult:
    """Typed trips of the window; every landing row is kept, rejected or a duplicate."""
    rows = landing.reset_index(drop=True)
    day, in_horizon = attribute_partitions(
        rows["pickup_ts"], rows["_ingest_date"], LATENESS_DAYS, window.timezone
    )
    rows = rows.assign(business_date=day.dt.date, _in_horizon=in_horizon)
    rows = rows[rows["business_date"].isin(window.partitions)]
    ts = pd.to_datetime(rows["pickup_ts"], utc=True, errors="coerce", format="ISO8601")
    fare = pd.to_numeric(rows["fare"], errors="coerce")
    reason = pd.Series(None, index=rows.index, dtype=object)
    column = pd.Series(None, index=rows.index, dtype=object)
    for bad, why, col in (
        (rows["_parse_error"].notna(), "malformed_line", None),
        (ts.isna(), "unparseable_pickup_ts", "pickup_ts"),
        (~rows["_in_horizon"], "pickup_ts_outside_arrival_horizon", "pickup_ts"),
        (fare.isna() | (fare < 0), "bad_fare", "fare"),
    ):
        hit = bad & reason.isna()
        reason[hit], column[hit] = why, col
    ok = reason.isna()
    duplicate = ok & rows.duplicated(["business_date", "trip_id"])  # the first arrival wins
    kept = ok & ~duplicate
    data = pd.DataFrame(
        {
            "trip_id": rows["trip_id"],
            "pickup_ts": ts,
            "business_date": rows["business_date"],
            "zone_id": rows["zone_id"],
            "fare": fare,
            "source_file": rows["_source_file"],
            "source_line": rows["_source_line"],
        }
    )[kept].reset_index(drop=True)
    bad = rows[~ok]
    rejects = pd.DataFrame(
        {
            "partition_date": bad["business_date"],
            "source_file": bad["_source_file"],
            "source_line": bad["_source_line"],
            "reason": reason[~ok],
            "column_name": column[~ok],
            "failure_case": [
                bad.at[i, c] if c else bad.at[i, "_parse_error"] for i, c in column[~ok].items()
            ],
            "original_row": [json.dumps({c: r[c] for c in LANDING}) for _, r in bad.iterrows()],
        },
        columns=REJECT_COLUMNS,
    )
    by_day = rows["business_date"]
    counts = pd.DataFrame(
        {
            "read": by_day.value_counts(),
            "kept": by_day[kept].value_counts(),
            "rejected": by_day[~ok].value_counts(),
            "duplicate": by_day[duplicate].value_counts(),
        }
    )
    counts = counts.reindex(list(window.partitions)).fillna(0).astype("int64")
    source_rows = rows[kept][list(LANDING)].reset_index(drop=True)
    return TransformResult(data, rejects, counts, source_rows=source_rows)


TRIPS_QUALITY = QualityContract(
    rules=(
        Referential(
            "zone_id", reference="zones", key="zone_id", severity=Severity.QUARANTINE_RECORD
        ),
        UniqueKey(Severity.FAIL_RUN, ("business_date", "trip_id")),
    )
)

DAILY = DatasetContract(
    name="borough_daily_fares",
    description="Trips and fares per borough and New York business day (zones as of that day).",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("borough", "VARCHAR", nullable=False),
        Column("trips", "BIGINT", nullable=False),
        Column("fare_total", "DOUBLE", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "borough"),
    upstream=(Upstream("trips"),),
    reference=("zones",),
    group="city_trips",
    start=START,
    end=END,
    timezone=ZONE,
)


def borough_daily(trips: pd.DataFrame, zones: dict, window: PartitionWindow) -> pd.DataFrame:
    """Each day's trips joined to the zone snapshot pinned for that day."""
    frames = []
    for day, group in trips.groupby(pd.to_datetime(trips["business_date"]).dt.date):
        boroughs = zones[day].data.set_index("zone_id")["borough"]
        frames.append(group.assign(borough=group["zone_id"].map(boroughs)))
    joined = pd.concat(frames) if frames else trips.assign(borough=pd.Series(dtype=object))
    out = joined.groupby(["business_date", "borough"], as_index=False).agg(
        trips=("trip_id", "size"), fare_total=("fare", "sum")
    )
    return out.astype({"trips": "int64", "fare_total": "float64"})[DAILY.column_names]


DAILY_QUALITY = QualityContract(
    controls=(
        ControlTotal("trip_count_control", "trips", upstream="trips"),
        ControlTotal("fare_total_control", "fare_total", upstream="trips", upstream_column="fare"),
    )
)

MONTHLY = DatasetContract(
    name="borough_monthly_fares",
    description="Certified monthly trips and fares per borough; every publish is a version.",
    columns=(
        Column("report_month", "DATE", nullable=False),
        Column("borough", "VARCHAR", nullable=False),
        Column("days_reported", "BIGINT", nullable=False),
        Column("trips", "BIGINT", nullable=False),
        Column("fare_total", "DOUBLE", nullable=False),
    ),
    partition_column="report_month",
    grain="monthly",
    business_key=("report_month", "borough"),
    publish_mode="versioned",
    upstream=(Upstream("borough_daily_fares"),),
    group="city_trips",
    start=START,
    end="2019-03-01",
    timezone=ZONE,
)


def borough_monthly(borough_daily_fares: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    daily = borough_daily_fares.assign(
        report_month=pd.to_datetime(borough_daily_fares["business_date"])
        .dt.to_period("M")
        .dt.start_time.dt.date
    )
    out = daily.groupby(["report_month", "borough"], as_index=False).agg(
        days_reported=("business_date", "nunique"),
        trips=("trips", "sum"),
        fare_total=("fare_total", "sum"),
    )
    return out.astype({"days_reported": "int64", "trips": "int64"})[MONTHLY.column_names]


MONTHLY_QUALITY = QualityContract(
    controls=(ControlTotal("trip_count_control", "trips", "borough_daily_fares", "trips"),)
)

BOROUGHS = ("Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR")

BY_BOROUGH = DatasetContract(
    name="borough_month_totals",
    description="Each borough's trips and fares per month of the whole range: one partition "
    "per borough (list partitions), so a borough is recomputed on its own.",
    columns=(
        Column("borough", "VARCHAR", nullable=False),
        Column("month", "DATE", nullable=False),
        Column("days_with_trips", "BIGINT", nullable=False),
        Column("trips", "BIGINT", nullable=False),
        Column("fare_total", "DOUBLE", nullable=False),
    ),
    partition_column="borough",
    grain="list",
    partition_values=BOROUGHS,
    business_key=("borough", "month"),
    upstream=(Upstream("borough_daily_fares"),),  # each borough reads every day
    group="city_trips",
)


def borough_months(borough_daily_fares: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    """The window's boroughs only: a borough partition owns its own rows."""
    daily = borough_daily_fares[borough_daily_fares["borough"].isin(window.partitions)]
    daily = daily.assign(
        month=pd.to_datetime(daily["business_date"]).dt.to_period("M").dt.start_time.dt.date
    )
    out = daily.groupby(["borough", "month"], as_index=False).agg(
        days_with_trips=("business_date", "nunique"),
        trips=("trips", "sum"),
        fare_total=("fare_total", "sum"),
    )
    return out.astype({"days_with_trips": "int64", "trips": "int64"})[BY_BOROUGH.column_names]


BY_BOROUGH_QUALITY = QualityContract(
    # Aligned by the upstream rows' own borough column: each partition's total is checked.
    controls=(ControlTotal("trip_count_control", "trips", "borough_daily_fares", "trips"),)
)

DATASETS = [
    Dataset(TRIPS, parse_trips, TRIPS_QUALITY),
    Dataset(DAILY, borough_daily, DAILY_QUALITY),
    Dataset(MONTHLY, borough_monthly, MONTHLY_QUALITY),
    Dataset(BY_BOROUGH, borough_months, BY_BOROUGH_QUALITY),
]
