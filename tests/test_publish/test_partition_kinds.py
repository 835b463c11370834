"""The shared publish protocol on hourly (TIMESTAMP), list and hash (text key) partitions:
replace, quarantine, versions, rollback and recovery key on the partition, whatever its kind,
and a ledger written when every partition was a DATE is migrated, not misread."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.cli import main as cli_main
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.contracts.registry import register
from ecm_assets.publish.protocol import (
    QUARANTINE_TABLE,
    REJECT_COLUMNS,
    OutsideBoundaryError,
    PublishRequest,
    PublishResult,
    ensure_quarantine_table,
    publish_partitions,
    read_partitions,
)
from ecm_assets.publish.quarantine import quarantine_rows
from ecm_assets.publish.recovery import recover
from ecm_assets.publish.versions import (
    close_partition,
    current_version,
    diff_versions,
    ensure_version_ledger,
    list_versions,
    rollback,
)
from tests._backends import WAREHOUSE_KINDS, fresh_postgres_url

AS_OF = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)
HOURLY = DatasetContract(
    name="meter_hour_readings",
    description="readings per wall-clock hour (Asia/Jakarta has no DST)",
    columns=(
        Column("hour", "TIMESTAMP", nullable=False),
        Column("meter", "VARCHAR", nullable=False),
        Column("kwh", "DOUBLE"),
    ),
    partition_column="hour",
    grain="hourly",
    business_key=("hour", "meter"),
    start="2026-09-01",
    timezone="Asia/Jakarta",
)
# Jakarta's 05:00..07:00 on 2026-09-01: stored as the UTC instants 22:00..00:00.
H5, H6, H7 = (HOURLY.partition_value(f"2026-09-01-0{h}:00") for h in (5, 6, 7))
REGIONS = DatasetContract(
    name="region_versions",
    description="totals per region",
    columns=(Column("region", "VARCHAR", nullable=False), Column("total", "BIGINT")),
    partition_column="region",
    grain="list",
    partition_values=("north", "south", "east", "west"),
    business_key=("region",),
    publish_mode="versioned",
)
CUSTOMERS = DatasetContract(
    name="customer_buckets",
    description="customers hash-bucketed by id",
    columns=(
        Column("bucket", "VARCHAR", nullable=False),
        Column("customer_id", "VARCHAR", nullable=False),
        Column("spend", "BIGINT"),
    ),
    partition_column="bucket",
    grain="hash",
    hash_key="customer_id",
    hash_buckets=4,
    business_key=("customer_id",),
)


@pytest.fixture(params=WAREHOUSE_KINDS)
def conn(request: pytest.FixtureRequest, tmp_path: Path):
    """A raw DuckDB connection, or a connection to a fresh PostgreSQL database."""
    if request.param == "postgresql":
        with fresh_postgres_url() as url, open_warehouse(url).connect() as c:
            yield c
        return
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as c:
        yield c


def publish(
    conn: duckdb.DuckDBPyConnection,
    contract: DatasetContract,
    data: pd.DataFrame,
    owned: tuple,
    run_id: str,
    rejects: pd.DataFrame | None = None,
) -> PublishResult:
    return publish_partitions(
        conn, PublishRequest(contract, owned, run_id, AS_OF, data, rejects=rejects)
    )


def rejects(rows: list[tuple[object, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "partition_date": p,
                "source_file": "f.csv",
                "source_line": line,
                "reason": "bad",
                "column_name": None,
                "failure_case": "x",
                "original_row": "{}",
            }
            for p, line in rows
        ],
        columns=REJECT_COLUMNS,
    )


def customers(ids: list[str], spend: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {"bucket": CUSTOMERS.buckets_of(ids), "customer_id": ids, "spend": [spend] * len(ids)}
    )


def test_hourly_partitions_replace_only_their_own_hours_and_keep_quarantine_by_hour(conn):
    data = pd.DataFrame(
        {"hour": [H5, H5, H6, H7], "meter": ["a", "b", "a", "a"], "kwh": [1.0, 2.0, 3.0, 4.0]}
    )
    result = publish(conn, HOURLY, data, (H5, H6, H7), "run-1", rejects([(H6, 9)]))
    assert result.rows_by_partition == {
        "2026-09-01-05:00": 2,
        "2026-09-01-06:00": 1,
        "2026-09-01-07:00": 1,
    }
    # A rerun of one hour replaces that hour only (and its quarantine).
    again = pd.DataFrame({"hour": [H6], "meter": ["z"], "kwh": [9.0]})
    result = publish(conn, HOURLY, again, (H6,), "run-2")
    assert result.replaced_rows == 1
    rows = conn.execute("SELECT hour, meter FROM meter_hour_readings ORDER BY 1, 2").fetchall()
    assert rows == [(H5, "a"), (H5, "b"), (H6, "z"), (H7, "a")]
    assert quarantine_rows(conn, HOURLY, H6) == []
    # A row of an hour the run does not own is refused, naming the hour by its key.
    with pytest.raises(OutsideBoundaryError, match=r"hour=2026-09-01-07:00 \(1 rows\)"):
        stray = pd.DataFrame({"hour": [H7], "meter": ["q"], "kwh": [0.0]})
        publish(conn, HOURLY, stray, (H6,), "r3")


def test_hourly_rejects_are_kept_under_the_hour_key(conn):
    data = pd.DataFrame({"hour": [H5], "meter": ["a"], "kwh": [1.0]})
    publish(conn, HOURLY, data, (H5, H6), "run-1", rejects([(H6, 3), (H6, 4)]))
    rows = quarantine_rows(conn, HOURLY, H6)
    assert [(r["partition_date"], r["source_line"]) for r in rows] == [
        ("2026-09-01-06:00", 3),
        ("2026-09-01-06:00", 4),
    ]


def test_list_partitions_publish_versions_quarantine_close_and_roll_back(conn):
    register(REGIONS)
    first = pd.DataFrame({"region": ["north", "west"], "total": [10, 40]})
    result = publish(conn, REGIONS, first, ("north", "west"), "run-1", rejects([("north", 7)]))
    assert result.versions == {"north": 1, "west": 1}
    # The keys between two owned keys (east, south sort between north and west... or not)
    # are never touched: publish a key that sorts between the owned ones later.
    publish(conn, REGIONS, pd.DataFrame({"region": ["south"], "total": [20]}), ("south",), "run-2")
    second = pd.DataFrame({"region": ["north", "west"], "total": [11, 40]})
    result = publish(conn, REGIONS, second, ("north", "west"), "run-3")
    assert result.versions == {"north": 2, "west": 2}
    assert conn.execute("SELECT region, total FROM region_versions ORDER BY 1").fetchall() == [
        ("north", 11),
        ("south", 20),
        ("west", 40),
    ]
    assert [v.version for v in list_versions(conn, "region_versions", "north")] == [1, 2]
    assert current_version(conn, "region_versions", "south").run_id == "run-2"
    diff = diff_versions(conn, REGIONS, "north", 1, 2)
    assert diff[["column_name", "old_value", "new_value"]].values.tolist() == [
        ["total", "10", "11"]
    ]
    # Versioned quarantine belongs to the current version's run: run-3 rejected nothing.
    assert quarantine_rows(conn, REGIONS, "north") == []
    rollback(conn, REGIONS, "north", 1, actor="test", reason="bad totals")
    assert conn.execute("SELECT total FROM region_versions WHERE region = 'north'").fetchone() == (
        10,
    )
    assert [r["source_line"] for r in quarantine_rows(conn, REGIONS, "north")] == [7]
    close_partition(conn, REGIONS, "west", actor="test")
    with pytest.raises(Exception, match="west is closed"):
        publish(conn, REGIONS, pd.DataFrame({"region": ["west"], "total": [1]}), ("west",), "r4")
    # Only the owned keys are read back, not the keys that sort between them.
    read = read_partitions(conn, REGIONS, "north", "west", partitions=["north", "west"])
    assert read["region"].tolist() == ["north", "west"]


def test_hash_partitions_replace_their_bucket_and_refuse_a_row_in_the_wrong_bucket(conn):
    ids = [f"C{i:03d}" for i in range(40)]
    data = customers(ids)
    buckets = tuple(sorted(set(data["bucket"])))
    assert buckets == ("0", "1", "2", "3")
    result = publish(conn, CUSTOMERS, data, buckets, "run-1")
    assert sum(result.rows_by_partition.values()) == 40
    # Recompute bucket "2" alone: only its customers are replaced.
    in_two = [c for c in ids if CUSTOMERS.bucket_of(c) == "2"]
    result = publish(conn, CUSTOMERS, customers(in_two, spend=5), ("2",), "run-2")
    assert result.replaced_rows == len(in_two)
    got = dict(conn.execute("SELECT customer_id, spend FROM customer_buckets").fetchall())
    assert got == {c: 5 if c in in_two else 1 for c in ids}
    # A transform that puts a customer in another bucket than its key hashes to is refused.
    wrong = customers([in_two[0]])
    wrong["bucket"] = "3"
    with pytest.raises(OutsideBoundaryError, match=rf"customer_id='{in_two[0]}'.*bucket '2'"):
        publish(conn, CUSTOMERS, wrong, ("3",), "run-3")


def test_recovery_reads_list_and_hourly_partitions_by_key(conn):
    register(HOURLY)
    data = pd.DataFrame({"hour": [H5], "meter": ["a"], "kwh": [1.0]})
    publish(conn, HOURLY, data, (H5,), "run-1")
    # Nothing left in flight: recovery of these partitions finds nothing to settle.
    assert recover(conn, asset="meter_hour_readings", partitions=[H5], contract=HOURLY) == []


def test_a_ledger_written_with_date_partitions_is_migrated_to_keys(conn):
    """Regression: the ledger tables had partition_date DATE, so a list key could not be
    stored; a warehouse written by that version keeps its rows, now keyed by their text."""
    conn.execute('CREATE SCHEMA "ecm_quarantine"')
    conn.execute(
        f"CREATE TABLE {QUARANTINE_TABLE} (asset VARCHAR NOT NULL, partition_date DATE NOT "
        "NULL, run_id VARCHAR NOT NULL, source_file VARCHAR, source_line BIGINT, reason "
        "VARCHAR NOT NULL, column_name VARCHAR, failure_case VARCHAR, original_row VARCHAR)"
    )
    conn.execute(
        f"INSERT INTO {QUARANTINE_TABLE} VALUES ('old', DATE '2026-09-01', 'r', 'f', 1, 'bad', "
        "NULL, NULL, NULL)"
    )
    conn.execute('CREATE SCHEMA "ecm_ledger"')
    conn.execute(
        'CREATE TABLE "ecm_ledger"."current_versions" (dataset VARCHAR NOT NULL, '
        "partition_date DATE NOT NULL, version BIGINT NOT NULL)"
    )
    conn.execute(
        "INSERT INTO \"ecm_ledger\".\"current_versions\" VALUES ('old', DATE '2026-09-01', 3)"
    )
    ensure_quarantine_table(conn)
    ensure_version_ledger(conn)
    assert conn.execute(f"SELECT partition_date FROM {QUARANTINE_TABLE}").fetchall() == [
        ("2026-09-01",)
    ]
    assert conn.execute(
        'SELECT partition_date, version FROM "ecm_ledger"."current_versions"'
    ).fetchall() == [("2026-09-01", 3)]
    # And a list key now fits beside it.
    publish(conn, REGIONS, pd.DataFrame({"region": ["east"], "total": [1]}), ("east",), "run-1")
    assert current_version(conn, "region_versions", "east").version == 1
    assert current_version(conn, "old", date(2026, 9, 1)) is None  # no versions row: no join


# -- hourly partitions across daylight saving (America/New_York) -------------------------

NY = DatasetContract(
    name="ny_hour_readings",
    description="readings per hour of New York, which repeats 01:00 on 2026-11-01",
    columns=(
        Column("hour", "TIMESTAMP", nullable=False),
        Column("meter", "VARCHAR", nullable=False),
        Column("kwh", "DOUBLE"),
    ),
    partition_column="hour",
    grain="hourly",
    business_key=("hour", "meter"),
    start="2026-03-01",
    end="2026-11-30",
    timezone="America/New_York",
)
#: The two 01:00 hours of the fall-back night: 05:00 and 06:00 UTC.
EDT1, EST1 = NY.partition_value("2026-11-01-01:00"), NY.partition_value("2026-11-01-01:00-0500")


def test_the_repeated_fall_back_hour_is_two_partitions_each_with_its_own_rows(conn, tmp_path):
    """Before: the contract refused America/New_York hourly. Each 01:00 hour publishes and
    is replaced on its own, and its quarantine is kept and shown under its own key."""
    assert (datetime(2026, 11, 1, 5), datetime(2026, 11, 1, 6)) == (EDT1, EST1)
    data = pd.DataFrame(
        {"hour": [EDT1, EDT1, EST1], "meter": ["a", "b", "a"], "kwh": [1.0, 2.0, 3.0]}
    )
    result = publish(conn, NY, data, (EDT1, EST1), "run-1", rejects([(EDT1, 4), (EST1, 5)]))
    assert result.rows_by_partition == {"2026-11-01-01:00": 2, "2026-11-01-01:00-0500": 1}
    # Replacing the second 01:00 never touches the first.
    again = pd.DataFrame({"hour": [EST1], "meter": ["z"], "kwh": [9.0]})
    result = publish(conn, NY, again, (EST1,), "run-2")
    assert result.replaced_rows == 1
    rows = conn.execute("SELECT hour, meter, run_id FROM ny_hour_readings ORDER BY 1, 2")
    assert rows.fetchall() == [
        (datetime(2026, 11, 1, 5), "a", "run-1"),
        (datetime(2026, 11, 1, 5), "b", "run-1"),
        (datetime(2026, 11, 1, 6), "z", "run-2"),
    ]
    assert [r["source_line"] for r in quarantine_rows(conn, NY, EDT1)] == [4]
    assert quarantine_rows(conn, NY, EST1) == []
    # Rows of the other 01:00 are outside a run owning one of them, named by their key.
    with pytest.raises(OutsideBoundaryError, match=r"hour=2026-11-01-01:00 \(1 rows\)"):
        stray = pd.DataFrame({"hour": [EDT1], "meter": ["q"], "kwh": [0.0]})
        publish(conn, NY, stray, (EST1,), "run-3")
    # Rows given as aware datetimes land in the hour they name.
    zone = ZoneInfo("America/New_York")
    aware = pd.DataFrame(
        {"hour": [datetime(2026, 11, 1, 1, fold=1, tzinfo=zone)], "meter": ["y"], "kwh": [1.0]}
    )
    assert publish(conn, NY, aware, (EST1,), "run-4").rows_by_partition == {
        "2026-11-01-01:00-0500": 1
    }
    if getattr(conn, "kind", "duckdb") != "duckdb":
        return  # the CLI part below reads the DuckDB file
    conn.close()

    # The ecm CLI accepts and shows both keys (and names the skipped spring hour).
    warehouse = tmp_path / "warehouse.duckdb"
    defs = tmp_path / "ny_defs.py"
    defs.write_text(
        "from ecm_assets import Dataset, build_definitions\n"
        "from tests.test_publish.test_partition_kinds import NY\n"
        "defs = build_definitions([Dataset(NY, lambda window: None)], "
        f"data_dir={str(tmp_path / 'data')!r}, warehouse={str(warehouse)!r})\n"
    )
    where = ["--warehouse", str(warehouse), "--definitions", f"{defs}:defs"]
    for key, want in (("2026-11-01-01:00", 1), ("2026-11-01-01:00-0500", 0)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(["quarantine", "ny_hour_readings", key, *where]) == 0
        assert out.getvalue().startswith(f"ny_hour_readings {key}: {want} quarantined row(s)")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli_main(["quarantine", "ny_hour_readings", "2026-03-08-02:00", *where]) == 2
    assert "skips that wall-clock hour" in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["summary", "--json", *where]) == 0
    tables = json.loads(out.getvalue())["tables"]
    (table,) = [t for t in tables if t["table"] == "main.ny_hour_readings"]
    assert (table["partitions"], table["first"], table["last"]) == (
        2,
        "2026-11-01-01:00",
        "2026-11-01-01:00-0500",
    )
