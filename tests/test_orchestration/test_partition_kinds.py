"""Hourly, list and hash datasets as Dagster assets, through the public API: partitions
definitions, a range run of static partitions, each partition's own metadata, and the
published numbers against plain pandas."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from ecm_assets import (
    Column,
    ControlTotal,
    Dataset,
    DatasetContract,
    PartitionWindow,
    QualityContract,
    Upstream,
    build_definitions,
)
from ecm_assets.contracts.dataset import partition_key
from ecm_assets.orchestration.factory import IO_MANAGER_KEY

DAYS = [date(2024, 5, 1) + timedelta(days=i) for i in range(3)]
CUSTOMERS = [f"C{i:02d}" for i in range(23)]
REGIONS = ("north", "south", "east", "west")  # declared order, not sorted

ORDERS = DatasetContract(
    name="orders",
    description="orders per day, generated from the date",
    columns=(
        Column("day", "DATE", nullable=False),
        Column("order_id", "VARCHAR", nullable=False),
        Column("customer_id", "VARCHAR", nullable=False),
        Column("region", "VARCHAR", nullable=False),
        Column("amount", "BIGINT", nullable=False),
    ),
    partition_column="day",
    grain="daily",
    business_key=("day", "order_id"),
    start="2024-05-01",
    end="2024-05-03",
)


def order_rows(day: date) -> pd.DataFrame:
    rows = []
    for i in range(10 + day.day):
        customer = CUSTOMERS[(i * 7 + day.day) % len(CUSTOMERS)]
        region = REGIONS[(i + day.day) % 3]  # "west" never has orders
        rows.append((day, f"{day:%m%d}-{i}", customer, region, (i * 13 + day.day) % 50 + 1))
    return pd.DataFrame(rows, columns=ORDERS.column_names)


def orders(window: PartitionWindow) -> pd.DataFrame:
    return pd.concat([order_rows(d) for d in window.partitions], ignore_index=True)


SPEND = DatasetContract(
    name="customer_spend",
    description="spend per customer, 4 hash buckets of customer_id",
    columns=(
        Column("bucket", "VARCHAR", nullable=False),
        Column("customer_id", "VARCHAR", nullable=False),
        Column("orders", "BIGINT", nullable=False),
        Column("amount", "BIGINT", nullable=False),
    ),
    partition_column="bucket",
    grain="hash",
    hash_key="customer_id",
    hash_buckets=4,
    business_key=("customer_id",),
    upstream=(Upstream("orders"),),
)


def customer_spend(orders: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    mine = orders[pd.Series(SPEND.buckets_of(orders["customer_id"])).isin(window.partitions)]
    out = mine.groupby("customer_id", as_index=False).agg(
        orders=("order_id", "size"), amount=("amount", "sum")
    )
    out.insert(0, "bucket", SPEND.buckets_of(out["customer_id"]))
    return out.astype({"orders": "int64", "amount": "int64"})


REGION_TOTALS = DatasetContract(
    name="region_totals",
    description="amount per region, list partitions",
    columns=(
        Column("region", "VARCHAR", nullable=False),
        Column("orders", "BIGINT", nullable=False),
        Column("amount", "BIGINT", nullable=False),
    ),
    partition_column="region",
    grain="list",
    partition_values=REGIONS,
    business_key=("region",),
    upstream=(Upstream("orders"),),
)


def region_totals(orders: pd.DataFrame, window: PartitionWindow) -> pd.DataFrame:
    mine = orders[orders["region"].isin(window.partitions)]
    out = mine.groupby("region", as_index=False).agg(
        orders=("order_id", "size"), amount=("amount", "sum")
    )
    return out.astype({"orders": "int64", "amount": "int64"})


LOAD = DatasetContract(
    name="hourly_load",
    description="a load figure per wall-clock hour of Jakarta",
    columns=(Column("hour", "TIMESTAMP", nullable=False), Column("load", "BIGINT")),
    partition_column="hour",
    grain="hourly",
    business_key=("hour",),
    start="2024-05-01",
    end="2024-05-01",
    timezone="Asia/Jakarta",
)


def hourly_load(window: PartitionWindow) -> pd.DataFrame:
    # An hour is stored as the UTC instant of its start; its key is Jakarta's wall clock.
    hours = list(window.partitions)
    return pd.DataFrame({"hour": hours, "load": [int(partition_key(h)[11:13]) * 10 for h in hours]})


NY_LOAD = DatasetContract(
    name="ny_load",
    description="readings per hour of New York across the 2026-11-01 fall-back night",
    columns=(
        Column("hour", "TIMESTAMP", nullable=False),
        Column("reading", "BIGINT", nullable=False),
    ),
    partition_column="hour",
    grain="hourly",
    business_key=("hour", "reading"),
    start="2026-11-01",
    end="2026-11-01",
    timezone="America/New_York",
)


def ny_load(window: PartitionWindow) -> pd.DataFrame:
    """Each hour gets (its UTC hour + 1) rows: every partition's count is its own. The hours
    are written as New York times (aware), as a transform in that zone would."""
    rows = pd.DataFrame(
        [(h, i) for h in window.partitions for i in range(h.hour + 1)], columns=["hour", "reading"]
    )
    rows["hour"] = rows["hour"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    return rows


CONTROL = QualityContract(controls=(ControlTotal("amount_control", "amount", "orders", "amount"),))
DATASETS = [
    Dataset(ORDERS, orders),
    Dataset(SPEND, customer_spend, CONTROL),
    Dataset(REGION_TOTALS, region_totals, CONTROL),
    Dataset(LOAD, hourly_load),
    Dataset(NY_LOAD, ny_load),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("kinds")
    defs = build_definitions(DATASETS, data_dir=root)
    instance = dg.DagsterInstance.ephemeral()
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})

    def materialize(select: list[str], key: str | None = None, tags: dict | None = None):
        return dg.materialize(
            assets,
            selection=select,
            partition_key=key,
            tags=tags or {},
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )

    for day in DAYS:
        assert materialize(["orders"], day.isoformat()).success
    database = resources[IO_MANAGER_KEY].database
    return materialize, instance, database, defs


def events(instance: dg.DagsterInstance, asset: str) -> dict[str, dg.AssetMaterialization]:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    out: dict[str, dg.AssetMaterialization] = {}
    for r in reversed(records):  # oldest first: the latest wins
        m = r.asset_materialization
        assert m is not None
        out[m.partition] = m
    return out


def all_orders() -> pd.DataFrame:
    return pd.concat([order_rows(d) for d in DAYS], ignore_index=True)


def test_partitions_definitions_follow_the_contracts(site) -> None:
    _, _, _, defs = site
    graph = defs.resolve_asset_graph()
    keys = {
        name: graph.get(dg.AssetKey(name)).partitions_def.get_partition_keys()
        for name in ("customer_spend", "region_totals", "hourly_load")
    }
    assert keys["customer_spend"] == ["0", "1", "2", "3"]
    assert keys["region_totals"] == list(REGIONS)
    assert len(keys["hourly_load"]) == 24 and keys["hourly_load"][5] == "2024-05-01-05:00"


def test_a_range_run_of_list_partitions_publishes_each_with_its_own_metadata(site) -> None:
    materialize, instance, database, _ = site
    # One run owns north, south and east (the declared order; "south" sorts after "east").
    result = materialize(
        ["region_totals"],
        tags={
            "dagster/asset_partition_range_start": "north",
            "dagster/asset_partition_range_end": "east",
        },
    )
    assert result.success
    want = all_orders().groupby("region").agg(orders=("order_id", "size"), amount=("amount", "sum"))
    with duckdb.connect(database, read_only=True) as conn:
        got = conn.execute("SELECT region, orders, amount, run_id FROM region_totals").df()
    assert set(got["run_id"]) == {result.run_id}
    assert got.set_index("region")[["orders", "amount"]].to_dict() == want.to_dict()
    mats = events(instance, "region_totals")
    assert set(mats) == {"north", "south", "east"}
    for m in mats.values():
        assert m.metadata["dagster/row_count"].value == 1
    checksums = {m.metadata["business_checksum"].value for m in mats.values()}
    assert len(checksums) == 3  # each partition's own, not the run's
    # A key with no orders publishes an empty partition, reconciled against its control.
    assert materialize(["region_totals"], "west").success
    assert events(instance, "region_totals")["west"].metadata["dagster/row_count"].value == 0


def test_hash_buckets_publish_every_customer_once_with_control_totals(site) -> None:
    materialize, instance, database, _ = site
    for bucket in ("0", "1", "2", "3"):
        assert materialize(["customer_spend"], bucket).success, bucket
    frame = all_orders()
    want = frame.groupby("customer_id").agg(orders=("order_id", "size"), amount=("amount", "sum"))
    with duckdb.connect(database, read_only=True) as conn:
        got = conn.execute("SELECT bucket, customer_id, orders, amount FROM customer_spend").df()
    assert sorted(got["customer_id"]) == sorted(want.index)
    assert got.set_index("customer_id")[["orders", "amount"]].sort_index().to_dict() == (
        want.sort_index().to_dict()
    )
    # Buckets computed independently: sha256 of the id, first 8 bytes big-endian, mod 4.
    for customer, bucket in got[["customer_id", "bucket"]].itertuples(index=False):
        digest = hashlib.sha256(customer.encode()).digest()
        assert bucket == str(int.from_bytes(digest[:8], "big") % 4)
    mats = events(instance, "customer_spend")
    per_bucket = got.groupby("bucket").size().to_dict()
    assert {k: m.metadata["dagster/row_count"].value for k, m in mats.items()} == per_bucket


def test_hourly_partitions_publish_wall_clock_hours(site) -> None:
    materialize, instance, database, _ = site
    result = materialize(
        ["hourly_load"],
        tags={
            "dagster/asset_partition_range_start": "2024-05-01-05:00",
            "dagster/asset_partition_range_end": "2024-05-01-07:00",
        },
    )
    assert result.success
    with duckdb.connect(database, read_only=True) as conn:
        rows = conn.execute("SELECT hour, load FROM hourly_load ORDER BY 1").fetchall()
    # Stored: the UTC instants of Jakarta's 05:00..07:00 (UTC+7).
    assert rows == [
        (datetime(2024, 4, 30, 22) + timedelta(hours=i), h * 10)
        for i, h in ((0, 5), (1, 6), (2, 7))
    ]
    assert set(events(instance, "hourly_load")) == {
        "2024-05-01-05:00",
        "2024-05-01-06:00",
        "2024-05-01-07:00",
    }


def test_a_range_run_over_the_fall_back_night_counts_each_hour_by_itself(site) -> None:
    """America/New_York on 2026-11-01 has 25 hours; a run of 00:00..02:00 owns four of them,
    both 01:00 hours included, and each partition's metadata is its own rows (before: the
    contract was refused for its daylight-saving zone)."""
    materialize, instance, database, defs = site
    keys = defs.resolve_asset_graph().get(dg.AssetKey("ny_load")).partitions_def
    keys = keys.get_partition_keys()
    assert len(keys) == 25 and keys[1:3] == ["2026-11-01-01:00", "2026-11-01-01:00-0500"]
    result = materialize(
        ["ny_load"],
        tags={
            "dagster/asset_partition_range_start": "2026-11-01-00:00",
            "dagster/asset_partition_range_end": "2026-11-01-02:00",
        },
    )
    assert result.success
    with duckdb.connect(database, read_only=True) as conn:
        got = dict(conn.execute("SELECT hour, count(*) FROM ny_load GROUP BY 1").fetchall())
    # 00:00 EDT = 04:00 UTC, 01:00 EDT = 05:00, 01:00 EST = 06:00, 02:00 EST = 07:00.
    assert got == {datetime(2026, 11, 1, h): h + 1 for h in (4, 5, 6, 7)}
    counts = {
        k: m.metadata["dagster/row_count"].value for k, m in events(instance, "ny_load").items()
    }
    assert counts == {
        "2026-11-01-00:00": 5,
        "2026-11-01-01:00": 6,
        "2026-11-01-01:00-0500": 7,
        "2026-11-01-02:00": 8,
    }
    # Rerunning the second 01:00 alone leaves the first one's rows and run as they were.
    with duckdb.connect(database, read_only=True) as conn:
        before = dict(
            conn.execute("SELECT hour, any_value(run_id) FROM ny_load GROUP BY 1").fetchall()
        )
    again = materialize(["ny_load"], "2026-11-01-01:00-0500")
    assert again.success
    with duckdb.connect(database, read_only=True) as conn:
        after = dict(
            conn.execute("SELECT hour, any_value(run_id) FROM ny_load GROUP BY 1").fetchall()
        )
    assert after[datetime(2026, 11, 1, 6)] == again.run_id
    assert {h: r for h, r in after.items() if h != datetime(2026, 11, 1, 6)} == {
        h: r for h, r in before.items() if h != datetime(2026, 11, 1, 6)
    }


def test_unknown_static_keys_are_refused_naming_the_valid_ones(site) -> None:
    from ecm_assets.contracts.dataset import PartitionKeyError

    with pytest.raises(PartitionKeyError, match=r"'up' is not a partition; valid: list of 4"):
        REGION_TOTALS.partition_value("up")
    assert Path(site[2]).exists()


def test_time_partitions_cannot_read_a_list_partitioned_upstream() -> None:
    reads_list = DatasetContract(
        name="daily_of_regions",
        description="refused",
        columns=(Column("day", "DATE", nullable=False),),
        partition_column="day",
        grain="daily",
        business_key=("day",),
        upstream=(Upstream("region_totals"),),
        start="2024-05-01",
    )
    with pytest.raises(Exception, match="cannot say which of its keys it reads"):
        build_definitions(
            [*DATASETS, Dataset(reads_list, lambda region_totals, window: region_totals)]
        )


def test_a_dry_run_of_a_list_partition_diffs_without_publishing(site) -> None:
    materialize, _, database, _ = site
    assert materialize(["region_totals"], "south").success
    with duckdb.connect(database, read_only=True) as conn:
        before = conn.execute("SELECT * FROM region_totals ORDER BY region").fetchall()
    result = materialize(["region_totals"], "south", tags={"ecm/backfill_mode": "dry_run"})
    assert result.success
    assert not result.get_asset_materialization_events()
    with duckdb.connect(database, read_only=True) as conn:
        assert conn.execute("SELECT * FROM region_totals ORDER BY region").fetchall() == before


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"lookback_schedule": ["region_totals"]}, r"only daily datasets have a lookback"),
        ({"monthly_schedule": ["hourly_load"]}, r"only monthly datasets are reported monthly"),
        ({"dependency_sensors": ["customer_spend"]}, r"has or reads hash partitions"),
        ({"landing_sensors": ["region_totals"]}, r"declare no landing source"),
    ],
)
def test_schedules_and_sensors_refuse_what_they_cannot_follow(
    option: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        build_definitions(DATASETS, data_dir=tmp_path, **option)
