"""A contract declares and validates its own partitioning; partition keys are whole keys."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest

from ecm_assets import Column, DatasetContract, PartitioningError, PartitionKeyError
from ecm_assets.contracts.dataset import bucket_sql, hash_bucket, partition_key
from ecm_assets.orchestration.partitions import partitions_for


def contract(**partitioning: object) -> DatasetContract:
    return DatasetContract(
        name="trips",
        description="trips per day",
        columns=(Column("day", "DATE", nullable=False), Column("n", "BIGINT")),
        partition_column="day",
        business_key=("day",),
        **{"grain": "daily", "start": "2019-03-01", **partitioning},
    )


def test_partition_key_with_trailing_text_is_refused() -> None:
    """Regression: only the first 10 characters were parsed, so this key was accepted."""
    with pytest.raises(PartitionKeyError, match=r"'2019-09-03xyz' is not a partition"):
        contract().partition_value("2019-09-03xyz")


@pytest.mark.parametrize("key", ["20190903", "2019-9-3", "2019-09-03 ", "", "2019-02-30"])
def test_keys_that_are_not_iso_dates_are_refused(key: str) -> None:
    with pytest.raises(PartitionKeyError, match=r"valid: daily 2019-03-01\.\.2019-12-31"):
        contract(end="2019-12-31").partition_value(key)


def test_keys_outside_start_and_end_are_refused() -> None:
    c = contract(end="2019-12-31")
    assert c.partition_value("2019-03-01") == date(2019, 3, 1)
    assert c.partition_value("2019-12-31") == date(2019, 12, 31)
    for key in ("2019-02-28", "2020-01-01"):
        with pytest.raises(PartitionKeyError, match="outside its partitions"):
            c.partition_value(key)


def test_monthly_keys_are_month_starts() -> None:
    c = contract(grain="monthly", start="2019-03-01")
    assert c.partition_value("2019-04-01") == date(2019, 4, 1)
    with pytest.raises(PartitionKeyError, match="not a month start"):
        c.partition_value("2019-04-02")


@pytest.mark.parametrize(
    ("partitioning", "message"),
    [
        ({"start": "2019-3-1"}, r"start='2019-3-1' is not a YYYY-MM-DD date"),
        ({"end": "2019-13-01"}, r"end='2019-13-01' is not a YYYY-MM-DD date"),
        ({"end": "2019-01-01"}, r"end=2019-01-01 is before start=2019-03-01"),
        ({"timezone": "Mars/Olympus"}, r"timezone='Mars/Olympus' is not an IANA zone"),
        ({"grain": "weekly"}, r"grain='weekly'"),
        ({"grain": "monthly", "start": "2019-03-15"}, r"monthly start=2019-03-15 .*2019-03-01"),
        ({"start": None, "end": "2019-12-31"}, r"end=2019-12-31 needs a start"),
    ],
)
def test_bad_partitioning_is_named(partitioning: dict[str, object], message: str) -> None:
    with pytest.raises(PartitioningError, match=message):
        contract(**partitioning)


def test_a_contract_without_start_cannot_become_an_asset() -> None:
    c = contract(start=None)
    with pytest.raises(PartitioningError, match="declare where its partitions start"):
        _ = c.start_date


# -- hourly, list and hash partitions ----------------------------------------------------


def text_keyed(**partitioning: object) -> DatasetContract:
    return DatasetContract(
        name="spend",
        description="spend per customer",
        columns=(
            Column("part", "VARCHAR", nullable=False),
            Column("customer_id", "VARCHAR", nullable=False),
            Column("amount", "DOUBLE"),
        ),
        partition_column="part",
        business_key=("customer_id",),
        **partitioning,
    )


@pytest.mark.parametrize(
    ("partitioning", "message"),
    [
        ({"grain": "hash", "hash_buckets": 4}, r"hash partitions need hash_key"),
        ({"grain": "hash", "hash_key": "nope", "hash_buckets": 4}, r"hash_key 'nope' is not a"),
        ({"grain": "hash", "hash_key": "amount", "hash_buckets": 4}, r"'amount' is DOUBLE"),
        ({"grain": "hash", "hash_key": "customer_id", "hash_buckets": 0}, r"whole number >= 1"),
        ({"grain": "hash", "hash_key": "customer_id"}, r"need hash_buckets.*\(got None\)"),
        ({"grain": "hash", "hash_key": "customer_id", "hash_buckets": True}, r"got True"),
        ({"grain": "list"}, r"need partition_values, a non-empty tuple"),
        ({"grain": "list", "partition_values": "north"}, r"need partition_values"),
        ({"grain": "list", "partition_values": ("a", "b", "a")}, r"duplicate .*\['a'\]"),
        ({"grain": "list", "partition_values": ("a", "")}, r"keys \[''\] are not valid"),
        ({"grain": "list", "partition_values": ("a", "b...c")}, r"'b\.\.\.c'"),
        ({"grain": "list", "partition_values": ("a",), "start": "2019-01-01"}, r"remove start"),
        ({"grain": "list", "partition_values": ("a",), "timezone": "Asia/Jakarta"}, "timezone"),
        ({"grain": "list", "partition_values": ("a",), "hash_buckets": 2}, r"not hash_key"),
        ({"grain": "daily", "partition_values": ("a",)}, r"belong to grain='list' or 'hash'"),
    ],
)
def test_bad_static_partitioning_is_named(partitioning: dict[str, object], message: str) -> None:
    with pytest.raises(PartitioningError, match=message):
        text_keyed(**partitioning)


def test_the_partition_column_type_follows_the_grain() -> None:
    with pytest.raises(ValueError, match=r"'day' must be VARCHAR NOT NULL \(list partitions\)"):
        contract(grain="list", partition_values=("a",), start=None)
    with pytest.raises(ValueError, match=r"'day' must be TIMESTAMP NOT NULL \(hourly"):
        contract(grain="hourly")


def hourly(**kw: object) -> DatasetContract:
    return DatasetContract(
        name="meters",
        description="kWh per hour",
        columns=(Column("hour", "TIMESTAMP", nullable=False), Column("kwh", "DOUBLE")),
        partition_column="hour",
        business_key=("hour",),
        **{"grain": "hourly", "start": "2026-01-01", "end": "2026-01-02", **kw},
    )


def test_hourly_keys_are_whole_hours_inside_start_and_end() -> None:
    c = hourly(timezone="Asia/Jakarta")
    # The stored value is the UTC instant of the hour's start (Jakarta is UTC+7).
    assert c.partition_value("2026-01-02-23:00") == datetime(2026, 1, 2, 16)
    for key in ("2026-01-03-00:00", "2025-12-31-23:00"):
        with pytest.raises(PartitionKeyError, match="outside its partitions"):
            c.partition_value(key)
    for key in ("2026-01-01-05:30", "2026-01-01 05:00", "2026-01-01", "2026-01-01-05:00x"):
        with pytest.raises(PartitionKeyError, match=r"valid: hourly 2026-01-01-00:00\.\."):
            c.partition_value(key)
    keys = partitions_for(c).get_partition_keys()
    assert (len(keys), keys[0], keys[-1]) == (48, "2026-01-01-00:00", "2026-01-02-23:00")
    assert all(partition_key(c.partition_value(k)) == k for k in keys)


def test_hourly_partitions_follow_daylight_saving_with_one_key_per_utc_hour() -> None:
    """America/New_York: 2026-03-08 has 23 hours (02:00 is skipped, it has no key) and
    2026-11-01 has 25 (01:00 twice: Dagster names the second '-0500'). Every key maps to its
    own UTC instant and back; before, the contract refused the zone outright."""
    c = hourly(timezone="America/New_York", start="2026-03-08", end="2026-11-01")
    keys = partitions_for(c).get_partition_keys()
    per_day: dict[str, int] = {}
    for k in keys:
        per_day[k[:10]] = per_day.get(k[:10], 0) + 1
    assert per_day["2026-03-08"] == 23 and per_day["2026-11-01"] == 25
    assert set(per_day.values()) == {23, 24, 25}
    assert "2026-03-08-02:00" not in keys
    fall = [k for k in keys if k.startswith("2026-11-01-0")][:4]
    assert fall == [
        "2026-11-01-00:00",
        "2026-11-01-01:00",
        "2026-11-01-01:00-0500",
        "2026-11-01-02:00",
    ]
    values = [c.partition_value(k) for k in keys]
    assert len(set(values)) == len(keys)  # a bijection: no two keys share a stored value
    assert [partition_key(v) for v in values] == keys
    assert values == sorted(values)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(values))
    assert c.partition_value("2026-11-01-01:00") == datetime(2026, 11, 1, 5)  # EDT, UTC-4
    assert c.partition_value("2026-11-01-01:00-0500") == datetime(2026, 11, 1, 6)  # EST
    assert c.partition_value("2026-03-08-03:00") == datetime(2026, 3, 8, 7)
    with pytest.raises(PartitionKeyError, match=r"skips that wall-clock hour"):
        c.partition_value("2026-03-08-02:00")
    for bad in ("2026-11-01-02:00-0500", "2026-11-01-01:00-0400", "2026-07-01-01:00-0400"):
        with pytest.raises(PartitionKeyError, match="is not a partition"):
            c.partition_value(bad)
    # The warehouse names each stored hour with the same key (views, ledger joins).
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t (hour TIMESTAMP)")
    conn.executemany("INSERT INTO t VALUES (?)", [[v] for v in values])
    sql = f"SELECT {c.partition_key_sql('hour')} FROM t ORDER BY hour"
    assert [k for (k,) in conn.execute(sql).fetchall()] == keys
    # values_of: aware values are converted to the UTC instant, naive ones are UTC already.
    import pandas as pd

    zone = ZoneInfo("America/New_York")
    aware = pd.Series(
        [datetime(2026, 11, 1, 1, tzinfo=zone), datetime(2026, 11, 1, 1, fold=1, tzinfo=zone)]
    )
    assert [partition_key(v) for v in c.values_of(aware)] == [
        "2026-11-01-01:00",
        "2026-11-01-01:00-0500",
    ]
    europe = hourly(timezone="Europe/Berlin", start="2026-10-25", end="2026-10-25")
    assert partitions_for(europe).get_partition_keys()[2:5] == [
        "2026-10-25-02:00",
        "2026-10-25-02:00+0100",
        "2026-10-25-03:00",
    ]


def test_list_and_hash_keys_and_their_dagster_partitions() -> None:
    regions = text_keyed(grain="list", partition_values=("north", "south", "east"))
    assert partitions_for(regions).get_partition_keys() == ["north", "south", "east"]
    assert regions.partition_value("east") == "east"
    with pytest.raises(PartitionKeyError, match=r"'west' is not a .*list of 3: north, south"):
        regions.partition_value("west")
    buckets = text_keyed(grain="hash", hash_key="customer_id", hash_buckets=12)
    keys = partitions_for(buckets).get_partition_keys()
    assert keys == [f"{i:02d}" for i in range(12)]
    with pytest.raises(PartitionKeyError, match=r"hash buckets of customer_id: 00\.\.11 \(12\)"):
        buckets.partition_value("12")


#: key -> (bucket of 16, of 7, of 1000). Computed once from sha256 by hand; a change of the
#: algorithm (Python's salted hash(), DuckDB's hash(), another digest or byte order) moves
#: published rows between partitions, so it must fail here first.
BUCKETS = {
    "customer-1": (7, 5, 135),
    "customer-2": (0, 6, 256),
    "Z1": (15, 4, 343),
    "42": (13, 2, 637),
    "Staten Island": (15, 3, 831),
    "Ünïcödé": (6, 0, 574),
    "": (4, 1, 652),
}


def test_hash_buckets_are_a_fixed_function_of_the_key() -> None:
    for key, want in BUCKETS.items():
        assert tuple(hash_bucket(key, n) for n in (16, 7, 1000)) == want, key
    assert hash_bucket(42, 16) == BUCKETS["42"][0]  # an integer key hashes as its text
    c = text_keyed(grain="hash", hash_key="customer_id", hash_buckets=16)
    assert c.buckets_of(list(BUCKETS)) == [f"{v[0]:02d}" for v in BUCKETS.values()]
    # DuckDB computes the same buckets (the publish protocol checks staged rows with it).
    keys = list(BUCKETS)
    with duckdb.connect() as conn:
        got = conn.execute(
            f"SELECT {bucket_sql('k', 16)} FROM unnest(?::VARCHAR[]) WITH ORDINALITY t(k, i) "
            "ORDER BY i",
            [keys],
        ).fetchall()
    assert [g for (g,) in got] == c.buckets_of(keys)


def test_hash_buckets_agree_across_processes() -> None:
    """Python's hash() is salted per process; a bucket must not be."""
    code = (
        "from ecm_assets.contracts.dataset import hash_bucket;"
        "print([hash_bucket(k, 1000) for k in ['customer-1', 'Z1', 'Staten Island']])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "random")
    }
    assert outs == {"[135, 343, 831]"}


def test_non_time_partitions_refuse_what_needs_a_calendar() -> None:
    from ecm_assets import LandingSource, Upstream

    with pytest.raises(PartitioningError, match="must be daily or monthly"):
        hourly(landing=LandingSource("m", 1, ("hour", "kwh"), time_column="hour"))
    with pytest.raises(PartitioningError, match="reference snapshots are pinned per business"):
        text_keyed(grain="list", partition_values=("a",), reference=("zones",))
    with pytest.raises(PartitioningError, match=r"lookback_partitions \(on \['up'\]\) needs"):
        hourly(upstream=(Upstream("up", lookback_partitions=2),))


def test_recorded_hour_keys_read_back_in_their_dataset_zone() -> None:
    """Ledger and manifest rows hold keys; read back, each names its own UTC hour."""
    from ecm_assets.contracts.boundaries import partition_from_key

    zone = "America/New_York"
    first = partition_from_key("2026-11-01-01:00", zone)
    second = partition_from_key("2026-11-01-01:00-0500", zone)
    assert (first, second) == (datetime(2026, 11, 1, 5), datetime(2026, 11, 1, 6))
    assert [partition_key(first), partition_key(second)] == [
        "2026-11-01-01:00",
        "2026-11-01-01:00-0500",
    ]
    assert partition_from_key("2026-03-08-02:00", zone) == "2026-03-08-02:00"  # skipped: no hour
    assert partition_from_key("2026-09-03", zone) == date(2026, 9, 3)
