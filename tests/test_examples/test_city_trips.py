"""The second code location (examples/city_trips): loaded beside the shipped one from one
workspace.yaml, materialized through `dagster asset materialize`, its published numbers
checked against plain pandas over the same input, and every `ecm` command run against it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "city_trips"
BIN = Path(sys.executable).parent
NY = ZoneInfo("America/New_York")
JANUARY = "2019-01-01...2019-01-31"
DAYS = [date(2019, 1, 1) + timedelta(days=i) for i in range(31)]
#: Manhattan, Brooklyn, Queens, Bronx of the example's list partitions (Staten Island and EWR
#: are left unmaterialized).
BOROUGH_RANGE = "Manhattan...Bronx"
ZONES = {  # version -> (effective_from, {zone: borough})
    "v9": ("2018-12-01", {f"Z{i}": "Bronx" for i in range(1, 6)}),
    # Same effective date as v9: v10 wins because 10 > 9 (not because "v10" < "v9" as text).
    "v10": ("2018-12-01", {"Z1": "Manhattan", "Z2": "Brooklyn", "Z3": "Queens", "Z4": "Bronx"}),
    "v11": ("2019-02-01", {"Z1": "Manhattan", "Z2": "Queens", "Z3": "Queens", "Z4": "Bronx"}),
}


def generate(data: Path, seed: int = 11) -> pd.DataFrame:
    """Deterministic landing files and zone snapshots; returns every landing row written."""
    rng = random.Random(seed)
    for version, (effective, zones) in ZONES.items():
        snap = data / "reference" / "zones" / version
        snap.mkdir(parents=True)
        lines = ["zone_id,borough"] + [f"{z},{b}" for z, b in zones.items()]
        (snap / "zones.csv").write_text("\n".join(lines) + "\n")
        meta = {"name": "zones", "version": version, "effective_from": effective}
        meta |= {"file": "zones.csv", "key_columns": ["zone_id"]}
        (snap / "snapshot.json").write_text(json.dumps(meta))
    records = []
    n = 0
    for day in DAYS:
        for _ in range(12):
            n += 1
            # Local New York time; late evenings are the next UTC date.
            local = datetime(day.year, day.month, day.day, tzinfo=NY) + timedelta(
                minutes=rng.choice([rng.randrange(0, 1440), rng.randrange(1320, 1440)])
            )
            fare = f"{rng.randrange(250, 9000) / 100:.2f}"
            zone = rng.choice(["Z1", "Z2", "Z3", "Z4"])
            if n % 37 == 0:
                zone = "Z99"  # not in the zones reference: quarantined by Referential
            if n % 50 == 0:
                fare = "n/a"  # rejected by the transform: bad_fare
            ts = local.astimezone(UTC).isoformat().replace("+00:00", "Z")
            if n % 61 == 0:
                ts = "yesterday"  # unparseable: belongs to its ingest date, rejected
            ingest = local.date() + timedelta(days=rng.choice([0, 0, 0, 1, 2]))
            records.append((f"T{n:05d}", ts, zone, fare, ingest))
            if n % 45 == 0:  # the same trip sent again a day later: a duplicate
                records.append((f"T{n:05d}", ts, zone, fare, ingest + timedelta(days=1)))
    frame = pd.DataFrame(records, columns=["trip_id", "pickup_ts", "zone_id", "fare", "ingest"])
    for ingest, rows in frame.groupby("ingest"):
        folder = data / "landing" / "trips" / f"ingest_date={ingest.isoformat()}"
        folder.mkdir(parents=True)
        rows[["trip_id", "pickup_ts", "zone_id", "fare"]].to_csv(
            folder / "trips.csv", index=False, lineterminator="\n"
        )
    return frame


def expected_daily(frame: pd.DataFrame) -> pd.DataFrame:
    """The published daily numbers computed independently: plain pandas, no ecm_assets."""
    ts = pd.to_datetime(frame["pickup_ts"], utc=True, errors="coerce", format="ISO8601")
    fare = pd.to_numeric(frame["fare"], errors="coerce")
    zones = ZONES["v10"][1]  # the version in force for every January date
    df = frame.assign(day=ts.dt.tz_convert("America/New_York").dt.date, fare=fare)
    df = df[ts.notna() & fare.notna() & frame["zone_id"].isin(list(zones))]
    df = df.sort_values(["ingest"], kind="stable").drop_duplicates(["day", "trip_id"])
    df = df.assign(borough=df["zone_id"].map(zones))
    out = df.groupby(["day", "borough"], as_index=False).agg(
        trips=("trip_id", "size"), fare_total=("fare", "sum")
    )
    return out.sort_values(["day", "borough"]).reset_index(drop=True)


def run(args: list[str], env: dict[str, str], cwd: Path, ok: bool = True):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=420)
    if ok:
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("city_trips")
    data = tmp / "data"
    frame = generate(data)
    home = tmp / "home"
    home.mkdir()
    (tmp / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: ecm_assets.definitions\n"
        "      location_name: ecm_assets\n"
        "  - python_module:\n"
        "      module_name: city_trips.definitions\n"
        "      location_name: city_trips\n"
        f"      working_directory: {EXAMPLE}\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CITY_TRIPS_DATA_DIR": str(data),
        "ECM_DATA_DIR": str(tmp / "case_sla"),
        "PYTHONPATH": str(EXAMPLE),
    }
    env.pop("ECM_WAREHOUSE", None)
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "city_trips.definitions"]
    run(
        [*materialize, "--select", "trips,borough_daily_fares", "--partition-range", JANUARY],
        env,
        EXAMPLE,
    )
    run(
        [*materialize, "--select", "borough_monthly_fares", "--partition", "2019-01-01"],
        env,
        EXAMPLE,
    )
    # List partitions: one run owns four boroughs, in the declared order (not sorted).
    run(
        [*materialize, "--select", "borough_month_totals", "--partition-range", BOROUGH_RANGE],
        env,
        EXAMPLE,
    )
    return tmp, data, frame, env


def test_both_locations_load_from_one_workspace(site) -> None:
    tmp, _, _, env = site
    proc = run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], env, tmp)
    assert "city_trips" in proc.stdout + proc.stderr
    # The two locations publish to different warehouses: a command without an asset asks.
    proc = run([str(BIN / "ecm"), "summary", "-w", "workspace.yaml"], env, tmp, ok=False)
    assert proc.returncode == 2 and "-l LOCATION" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run([str(BIN / "ecm"), "summary", "-w", "workspace.yaml", "-l", "city_trips"], env, tmp)
    assert "main.trips" in proc.stdout and "case_events" not in proc.stdout


def test_published_numbers_match_an_independent_computation(site) -> None:
    _, data, frame, _ = site
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        daily = conn.sql(
            "SELECT business_date AS day, borough, trips, fare_total FROM borough_daily_fares "
            "ORDER BY 1, 2"
        ).df()
        monthly = conn.sql(
            "SELECT borough, trips, fare_total, days_reported FROM borough_monthly_fares ORDER BY 1"
        ).df()
        quarantined = conn.sql(
            "SELECT reason, count(*) AS n FROM ecm_quarantine.rejected_rows "
            "WHERE asset = 'trips' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    want = expected_daily(frame)
    daily["day"] = pd.to_datetime(daily["day"]).dt.date
    got_rows = [tuple(r) for r in daily[["day", "borough", "trips"]].itertuples(index=False)]
    want_rows = [tuple(r) for r in want[["day", "borough", "trips"]].itertuples(index=False)]
    assert got_rows == want_rows, sorted(set(got_rows) ^ set(want_rows))[:10]
    assert (daily["fare_total"] - want["fare_total"]).abs().max() < 1e-6
    by_borough = want.groupby("borough")[["trips", "fare_total"]].sum()
    assert monthly.set_index("borough")["trips"].to_dict() == by_borough["trips"].to_dict()
    days = want.groupby("borough")["day"].nunique().to_dict()
    assert monthly.set_index("borough")["days_reported"].to_dict() == days
    # The list-partitioned totals: one row per borough and month, each borough its own
    # partition published by the one range run.
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        totals = conn.sql(
            "SELECT borough, month, days_with_trips, trips, fare_total, run_id "
            "FROM borough_month_totals ORDER BY 1, 2"
        ).df()
    assert totals["run_id"].nunique() == 1
    assert set(totals["month"].astype(str)) == {"2019-01-01"}
    by_borough_days = want.groupby("borough")["day"].nunique()
    assert totals.set_index("borough")["trips"].to_dict() == by_borough["trips"].to_dict()
    assert totals.set_index("borough")["days_with_trips"].to_dict() == by_borough_days.to_dict()
    fares = totals.set_index("borough")["fare_total"]
    assert (fares - by_borough["fare_total"]).abs().max() < 1e-6
    # Nothing is lost: every defect is quarantined with its reason.
    reasons = dict(quarantined)
    assert reasons["bad_fare"] >= 1 and reasons["unparseable_pickup_ts"] >= 1
    assert any("zone_id" in r for r in reasons), reasons


def test_every_ecm_command_serves_the_example(site) -> None:
    tmp, data, _, env = site
    ecm = [str(BIN / "ecm")]

    def call(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        # From the example's directory: found by [tool.dagster] of its pyproject.toml.
        return run([*ecm, *args], env, EXAMPLE, ok=ok)

    assert "borough_daily_fares" in call("summary").stdout
    manifests = json.loads(call("manifest", "--json").stdout)
    assert {m["asset"] for m in manifests} == {
        "trips",
        "borough_daily_fares",
        "borough_monthly_fares",
        "borough_month_totals",
    }
    totals_run = next(m for m in manifests if m["asset"] == "borough_month_totals")
    assert totals_run["output_boundary"] == ["Bronx", "Brooklyn", "Manhattan", "Queens"]
    # A list partition is a partition argument like a date.
    assert "borough_month_totals" in call("summary").stdout
    assert (
        "Queens: 0 quarantined row(s)"
        in call("quarantine", "borough_month_totals", "Queens").stdout
    )
    assert json.loads(call("versions", "borough_month_totals", "Queens", "--json").stdout) == []
    trips_run = next(m["run_id"] for m in manifests if m["asset"] == "trips")
    assert trips_run in call("manifest", trips_run).stdout
    assert "quarantined row(s)" in call("quarantine", "trips", "2019-01-20").stdout
    versions = json.loads(call("versions", "borough_monthly_fares", "2019-01-01", "--json").stdout)
    assert [v["version"] for v in versions] == [1]
    call("close", "borough_monthly_fares", "2019-01-01", "--by", "tester")
    # A late file changes 2019-01-20; the closed month is restated as version 2.
    late = data / "landing" / "trips" / "ingest_date=2019-01-21"
    late.mkdir(exist_ok=True)
    (late / "late.csv").write_text(
        "trip_id,pickup_ts,zone_id,fare\nT99999,2019-01-20T17:00:00Z,Z1,10.00\n"
    )
    # The month is closed: the upstream change is held until a person approves it.
    held = call("materialize", "--select", "trips", "--partition", "2019-01-20", ok=False)
    assert held.returncode != 0
    (pending,) = json.loads(call("review", "list", "--json").stdout)
    call("review", "approve", pending["run_id"], "--by", "tester", "--note", "late file")
    call("materialize", "--select", "borough_daily_fares", "--partition", "2019-01-20")
    call(
        "materialize",
        "--select",
        "borough_monthly_fares",
        "--partition",
        "2019-01-01",
        "--restatement-reason",
        "SOURCE_CORRECTION",
    )
    versions = json.loads(call("versions", "borough_monthly_fares", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2]
    diff = json.loads(
        call("diff", "borough_monthly_fares", "2019-01-01", "1", "2", "--json").stdout
    )
    assert {d["borough"] for d in diff} == {"Manhattan"}, diff
    call("rollback", "borough_monthly_fares", "2019-01-01", "--to", "1", "--reason", "test")
    replay = json.loads(call("replay", trips_run, "--asset", "trips", "--json").stdout)
    assert replay["matches"] is True
    call("recover")
    impact = json.loads(
        call(
            "impact",
            "trips",
            "--from",
            "2019-03-30",
            "--to",
            "2020-01-01",
            "--until",
            "2020-01-01",
            "--json",
        ).stdout
    )
    # The partitions end with the data: 2019-03-31 daily, 2019-03-01 monthly.
    assert {e["asset"]: e["last"] for e in impact["impact"]} == {
        "trips": "2019-03-31",
        "borough_daily_fares": "2019-03-31",
        "borough_monthly_fares": "2019-03-01",
        # every borough reads every day: all six keys are reached
        "borough_month_totals": "EWR",
    }
    # Unknown assets and partitions: one line naming the valid ones, exit 2, no traceback.
    for args, valid in (
        (
            ("versions", "case_events"),
            "valid assets: borough_daily_fares, borough_month_totals, borough_monthly_fares",
        ),
        (("quarantine", "trips", "2018-12-31"), "valid: daily 2019-01-01..2019-03-31"),
        (("quarantine", "trips", "2019-01-03xyz"), "is not a partition"),
        (("materialize", "--select", "trips", "--partition", "2019-04-01"), "2019-03-31"),
        (("quarantine", "borough_month_totals", "Atlantis"), "valid: list of 6: Manhattan, "),
        (
            (
                "materialize",
                "--select",
                "borough_month_totals",
                "--partition-range",
                "Bronx...Queens",
            ),
            "start after end",
        ),
    ):
        proc = call(*args, ok=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert valid in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # The same location named explicitly, by module and by file.
    assert call("summary", "-m", "city_trips.definitions").returncode == 0
    proc = run([*ecm, "summary", "-f", str(EXAMPLE / "city_trips" / "definitions.py")], env, tmp)
    assert "borough_monthly_fares" in proc.stdout
