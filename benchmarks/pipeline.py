"""The case-SLA pipeline through ecm_assets against the same semantics in plain DuckDB SQL.

    python benchmarks/pipeline.py [--days 14] [--scale 20] [--single-day-scale 175]

Both sides run in one invocation on the same generated demo landing zone (`ecm demo-data`'s
generator, `--seed`, `--scale`):

  ours   `dg.materialize` of each asset over the whole range (one run per asset, as a backfill
         with a single-run policy does), through the project's definitions: input boundary
         with sha256, transform, quality gate with quarantine, staged atomic publish, manifest.
  peer   plain DuckDB SQL written for this script: read_csv/read_json over the same files,
         typing, attribution, latest-arrival-wins dedupe, the pinned org join, the contract's
         row rules, delete+insert into a table per asset; daily metrics and the priority mix
         as SQL over the peer's events.

Each (side, asset) runs in a fresh child process: CPU seconds are the child's user+system
time during the operation (all threads), peak RSS is VmHWM reset just before it. After both
sides ran, their business rows are compared in DuckDB (every contract column, floats to 1e-6)
and the rejected rows reason by reason: any difference fails the benchmark (exit code 1), so
it is also a cross-check of the semantics. `--single-day-scale` adds one business date of ~1M
landing rows (case_events only); 0 skips it.

This is a script, not a test: tests/test_benchmarks runs it at toy size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ASSETS = ("case_events", "case_sla_daily_metrics", "case_priority_mix_daily")
LATENESS_DAYS = 5
HISTORY_DAYS = 29  # case_sla_daily_metrics reads 29 days of case_events before each date


# --------------------------------------------------------------------------------------------
# Measuring one operation in a child process
# --------------------------------------------------------------------------------------------


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(operation) -> dict[str, float]:
    import gc

    gc.collect()
    _reset_peak()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    operation()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak_mb": _peak_mb()}


# --------------------------------------------------------------------------------------------
# ours: the project's assets through dg.materialize
# --------------------------------------------------------------------------------------------


def _ours(args: argparse.Namespace) -> dict[str, float]:
    import dagster as dg

    from ecm_assets.definitions import case_sla_definitions as build_definitions

    defs = build_definitions(Path(args.data), Path(args.warehouse))
    assets = list(defs.assets or [])
    tags = {
        "dagster/asset_partition_range_start": args.first,
        "dagster/asset_partition_range_end": args.last,
    }

    def run() -> None:
        result = dg.materialize(assets, selection=[args.asset], resources=defs.resources, tags=tags)
        if not result.success:
            raise SystemExit(f"ours: {args.asset} did not succeed")

    # Imports are not the run: the peer's `import duckdb` happens before its measurement, so
    # the first import of Dagster's storage modules (~1.5 CPU s, paid once per process) does
    # too. The run still creates and tears down its own ephemeral instance inside it.
    with dg.DagsterInstance.ephemeral():
        pass
    return _measure(run)


# --------------------------------------------------------------------------------------------
# peer: the same semantics in plain DuckDB SQL
# --------------------------------------------------------------------------------------------


def _landing_files(data: Path, first: date, last: date, suffix: str) -> list[str]:
    base = data / "landing" / "case_events"
    files = []
    for day_dir in sorted(base.iterdir()):
        if not day_dir.name.startswith("ingest_date="):
            continue
        ingest = date.fromisoformat(day_dir.name.split("=", 1)[1])
        if first <= ingest <= last:
            files += [str(p) for p in sorted(day_dir.iterdir()) if p.suffix == suffix]
    return files


def _reference_sql(conn, data: Path) -> None:
    """Reference snapshots as tables: versions with published_on, units, targets, holidays."""
    units, targets, holidays, versions = [], [], [], []
    for name in ("org_hierarchy", "sla_calendar"):
        for d in sorted((data / "reference" / name).iterdir()):
            meta = json.loads((d / "snapshot.json").read_text())
            versions.append((name, meta["version"], meta["published_on"]))
            if name == "org_hierarchy":
                units.append((meta["version"], str(d / "units.csv")))
            else:
                cal = json.loads((d / "calendar.json").read_text())
                targets += [(meta["version"], p, float(h)) for p, h in cal["targets_hours"].items()]
                holidays += [(meta["version"], h) for h in cal["holidays"]]
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE ref_versions (name VARCHAR, version VARCHAR, "
        "published_on DATE)"
    )
    conn.executemany("INSERT INTO ref_versions VALUES (?, ?, ?)", versions)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE org_units (version VARCHAR, unit_id VARCHAR, "
        "region VARCHAR, valid_from TIMESTAMP, valid_to TIMESTAMP)"
    )
    for version, path in units:
        conn.execute(
            "INSERT INTO org_units SELECT ?, unit_id, region, valid_from::TIMESTAMP, "
            "nullif(valid_to, '')::TIMESTAMP FROM read_csv(?, all_varchar = true)",
            [version, path],
        )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE sla_targets (version VARCHAR, priority VARCHAR, hours DOUBLE)"
    )
    conn.executemany("INSERT INTO sla_targets VALUES (?, ?, ?)", targets)
    conn.execute("CREATE OR REPLACE TEMP TABLE sla_holidays (version VARCHAR, holiday DATE)")
    conn.executemany("INSERT INTO sla_holidays VALUES (?, ?)", holidays)


PEER_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE raw AS
WITH csv AS (
    SELECT *, row_number() OVER () AS rn
    FROM read_csv($csv, header = true, all_varchar = true, filename = true, delim = ',',
                  quote = '"', escape = '"', auto_detect = false, columns = {
                  'event_id': 'VARCHAR', 'case_id': 'VARCHAR', 'event_type': 'VARCHAR',
                  'event_ts': 'VARCHAR', 'unit_id': 'VARCHAR', 'priority': 'VARCHAR'})
), json AS (
    SELECT *, row_number() OVER () AS rn
    FROM read_json($jsonl, format = 'newline_delimited', filename = true, columns = {
                   'event_id': 'VARCHAR', 'case_id': 'VARCHAR', 'event_type': 'VARCHAR',
                   'event_ts': 'VARCHAR', 'unit_id': 'VARCHAR', 'priority': 'VARCHAR'})
), lines AS (
    -- physical line: header is line 1 of a CSV file, no blank lines in the generated files
    SELECT * EXCLUDE (rn), rn - min(rn) OVER (PARTITION BY filename) + 2 AS source_line
    FROM csv
    UNION ALL
    SELECT * EXCLUDE (rn), rn - min(rn) OVER (PARTITION BY filename) + 1 FROM json
)
SELECT *,
    substr(filename, length($landing) + 2) AS source_file,
    regexp_extract(filename, 'ingest_date=(\\d{4}-\\d{2}-\\d{2})', 1)::DATE AS ingest_date,
    TRY_CAST(event_ts AS TIMESTAMPTZ) AS ts
FROM lines;

CREATE OR REPLACE TEMP TABLE attributed AS
WITH dated AS (
    SELECT *, (ts AT TIME ZONE 'UTC')::DATE AS event_day FROM raw
), horizon AS (
    SELECT *, coalesce(ts IS NOT NULL AND event_day <= ingest_date
                       AND event_day >= ingest_date - INTERVAL 5 DAY, false) AS in_horizon
    FROM dated
), parted AS (
    SELECT *, CASE WHEN in_horizon THEN event_day ELSE ingest_date END AS business_date,
        nullif(trim(event_id), '') IS NOT NULL AS has_id
    FROM horizon
)
SELECT *,
    -- latest arrival wins: a row is superseded by a later valid arrival of its event_id in a
    -- file its own partition still reads (ingest date <= business date + lateness)
    has_id AND coalesce(min(CASE WHEN has_id AND in_horizon THEN ingest_date END) OVER (
        PARTITION BY event_id ORDER BY ingest_date, source_file, source_line
        ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
    ) <= business_date + INTERVAL 5 DAY, false) AS superseded
FROM parted
WHERE business_date BETWEEN $first AND $last;

CREATE OR REPLACE TEMP TABLE judged AS
WITH candidates AS (
    SELECT * FROM attributed WHERE NOT superseded
), pinned AS (
    SELECT DISTINCT c.business_date,
        (SELECT max_by(version, published_on) FROM ref_versions v
         WHERE v.name = 'org_hierarchy' AND v.published_on <= c.business_date) AS version
    FROM candidates c
), resolved AS (
    SELECT c.*, u.region
    FROM candidates c JOIN pinned p USING (business_date)
    LEFT JOIN org_units u ON u.version = p.version AND u.unit_id = c.unit_id
        AND u.valid_from <= (c.ts AT TIME ZONE 'UTC')
        AND (c.ts AT TIME ZONE 'UTC') < coalesce(u.valid_to, 'infinity'::TIMESTAMP)
)
SELECT *, CASE
    WHEN NOT has_id THEN 'missing_event_id'
    WHEN ts IS NULL THEN 'unparseable_event_ts'
    WHEN NOT in_horizon THEN 'event_ts_outside_arrival_horizon'
    WHEN nullif(trim(case_id), '') IS NULL THEN 'missing_case_id'
    WHEN event_type IS NULL OR event_type NOT IN
        ('opened', 'assigned', 'escalated', 'resolved', 'reopened') THEN 'unknown_event_type'
    WHEN priority IS NULL OR priority NOT IN ('P1', 'P2', 'P3', 'P4') THEN 'unknown_priority'
    WHEN region IS NULL THEN 'unknown_unit_id'
    END AS reason
FROM resolved;

CREATE TABLE IF NOT EXISTS case_events (
    event_id VARCHAR, case_id VARCHAR, event_type VARCHAR, event_ts TIMESTAMPTZ,
    business_date DATE, unit_id VARCHAR, region VARCHAR, priority VARCHAR, ingest_date DATE,
    source_file VARCHAR, source_line BIGINT);
CREATE TABLE IF NOT EXISTS case_events_rejects (
    business_date DATE, source_file VARCHAR, source_line BIGINT, reason VARCHAR);
BEGIN;
DELETE FROM case_events WHERE business_date BETWEEN $first AND $last;
DELETE FROM case_events_rejects WHERE business_date BETWEEN $first AND $last;
INSERT INTO case_events
    SELECT event_id, case_id, event_type, ts, business_date, unit_id, region, priority,
           ingest_date, source_file, source_line
    FROM judged WHERE reason IS NULL ORDER BY business_date, event_id;
INSERT INTO case_events_rejects
    SELECT business_date, source_file, source_line, reason FROM judged
    WHERE reason IS NOT NULL;
COMMIT;
"""

PEER_METRICS_SQL = """
CREATE TABLE IF NOT EXISTS case_sla_daily_metrics (
    business_date DATE, unit_id VARCHAR, region VARCHAR, cases_opened BIGINT,
    cases_first_assigned BIGINT, cases_escalated BIGINT, cases_resolved BIGINT,
    cases_reopened BIGINT, sla_breached BIGINT, resolved_without_open BIGINT,
    median_hours_to_first_assignment DOUBLE, p90_hours_to_resolution DOUBLE,
    sla_calendar_version VARCHAR);
CREATE OR REPLACE TEMP TABLE metrics AS
WITH events AS (
    SELECT * FROM case_events
    WHERE business_date BETWEEN $first::DATE - INTERVAL 29 DAY AND $last
), in_window AS (
    SELECT * FROM events WHERE business_date BETWEEN $first AND $last
), opened AS (
    SELECT case_id, arg_min(event_ts, (event_ts, event_id)) AS open_ts,
           arg_min(priority, (event_ts, event_id)) AS open_priority
    FROM events WHERE event_type = 'opened' GROUP BY case_id
), first_assigned AS (
    SELECT case_id, arg_min(event_ts, (event_ts, event_id)) AS ts,
           arg_min(business_date, (event_ts, event_id)) AS business_date,
           arg_min(unit_id, (event_ts, event_id)) AS unit_id,
           arg_min(region, (event_ts, event_id)) AS region
    FROM events WHERE event_type = 'assigned' GROUP BY case_id
), assign_hours AS (
    SELECT f.business_date, f.unit_id, f.region,
           CASE WHEN o.open_ts <= f.ts THEN epoch(f.ts - o.open_ts) / 3600.0 END AS hours
    FROM first_assigned f LEFT JOIN opened o USING (case_id)
    WHERE f.business_date BETWEEN $first AND $last
), calendar AS (
    SELECT d.business_date, max_by(v.version, v.published_on) AS version
    FROM (SELECT DISTINCT business_date FROM in_window) d
    JOIN ref_versions v ON v.name = 'sla_calendar' AND v.published_on <= d.business_date
    GROUP BY d.business_date
), resolved AS (
    SELECT e.event_id, e.business_date, e.unit_id, e.region, e.event_ts, o.open_ts,
           o.open_priority,
           c.version, o.open_ts IS NOT NULL AND o.open_ts <= e.event_ts AS known
    FROM in_window e JOIN calendar c USING (business_date)
    LEFT JOIN opened o USING (case_id)
    WHERE e.event_type = 'resolved'
), holiday_hours AS (
    SELECT r.event_id, sum(greatest(0, epoch(
        least(r.event_ts, h.holiday::TIMESTAMPTZ + INTERVAL 1 DAY)
        - greatest(r.open_ts, h.holiday::TIMESTAMPTZ)) / 3600.0)) AS excluded
    FROM resolved r JOIN sla_holidays h ON h.version = r.version
    WHERE r.known
    GROUP BY 1
), resolved_sla AS (
    SELECT r.*, t.hours AS target,
        CASE WHEN known THEN epoch(r.event_ts - r.open_ts) / 3600.0 END AS hours,
        CASE WHEN known THEN epoch(r.event_ts - r.open_ts) / 3600.0
             - coalesce(x.excluded, 0) END AS sla_hours
    FROM resolved r
    LEFT JOIN holiday_hours x USING (event_id)
    LEFT JOIN sla_targets t ON t.version = r.version AND t.priority = r.open_priority
), counts AS (
    SELECT business_date, unit_id, region,
        count(*) FILTER (event_type = 'opened') AS cases_opened,
        count(*) FILTER (event_type = 'escalated') AS cases_escalated,
        count(*) FILTER (event_type = 'resolved') AS cases_resolved,
        count(*) FILTER (event_type = 'reopened') AS cases_reopened
    FROM in_window GROUP BY ALL
), assigned AS (
    SELECT business_date, unit_id, region, count(*) AS cases_first_assigned,
           median(hours) AS median_hours
    FROM assign_hours GROUP BY ALL
), sla AS (
    SELECT business_date, unit_id, region,
        count(*) FILTER (known AND sla_hours > target) AS sla_breached,
        count(*) FILTER (NOT known) AS resolved_without_open,
        quantile_cont(hours, 0.9) AS p90
    FROM resolved_sla GROUP BY ALL
)
SELECT c.business_date, c.unit_id, c.region, c.cases_opened,
    coalesce(a.cases_first_assigned, 0) AS cases_first_assigned, c.cases_escalated,
    c.cases_resolved, c.cases_reopened, coalesce(s.sla_breached, 0) AS sla_breached,
    coalesce(s.resolved_without_open, 0) AS resolved_without_open,
    round(a.median_hours, 6) AS median_hours_to_first_assignment,
    round(s.p90, 6) AS p90_hours_to_resolution, k.version AS sla_calendar_version
FROM counts c
JOIN calendar k USING (business_date)
LEFT JOIN assigned a USING (business_date, unit_id, region)
LEFT JOIN sla s USING (business_date, unit_id, region);
BEGIN;
DELETE FROM case_sla_daily_metrics WHERE business_date BETWEEN $first AND $last;
INSERT INTO case_sla_daily_metrics SELECT * FROM metrics ORDER BY business_date, unit_id, region;
COMMIT;
"""

PEER_MIX_SQL = """
CREATE TABLE IF NOT EXISTS case_priority_mix_daily (
    business_date DATE, priority VARCHAR, event_type VARCHAR, events BIGINT, cases BIGINT);
BEGIN;
DELETE FROM case_priority_mix_daily WHERE business_date BETWEEN $first AND $last;
INSERT INTO case_priority_mix_daily
    SELECT business_date, priority, event_type, count(*), count(DISTINCT case_id)
    FROM case_events WHERE business_date BETWEEN $first AND $last
    GROUP BY ALL ORDER BY ALL;
COMMIT;
"""


def _peer(args: argparse.Namespace) -> dict[str, float]:
    import duckdb

    data = Path(args.data)
    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)

    def run() -> None:
        conn = duckdb.connect(args.warehouse)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            _reference_sql(conn, data)
            params: dict[str, object] = {"first": first, "last": last}
            if args.asset == "case_events":
                last_ingest = last + timedelta(days=LATENESS_DAYS)
                params.update(
                    csv=_landing_files(data, first, last_ingest, ".csv"),
                    jsonl=_landing_files(data, first, last_ingest, ".jsonl"),
                    landing=str(data / "landing"),
                )
                sql = PEER_EVENTS_SQL
            elif args.asset == "case_sla_daily_metrics":
                sql = PEER_METRICS_SQL
            else:
                sql = PEER_MIX_SQL
            for statement in (s.strip() for s in sql.split(";")):
                if statement:
                    used = {k: v for k, v in params.items() if f"${k}" in statement}
                    conn.execute(statement, used)
        finally:
            conn.close()

    return _measure(run)


# --------------------------------------------------------------------------------------------
# The cross-check: the peer's business rows must equal ours
# --------------------------------------------------------------------------------------------

KEYS = {
    "case_events": ("business_date", "event_id"),
    "case_sla_daily_metrics": ("business_date", "unit_id", "region"),
    "case_priority_mix_daily": ("business_date", "priority", "event_type"),
}


def cross_check(ours: Path, peer: Path, first: date, last: date, assets) -> list[str]:
    """Differences between the two warehouses' business rows and rejects (empty: equal)."""
    import duckdb

    from ecm_assets.case_sla.datasets import DATASETS

    contracts = {d.contract.name: d.contract for d in DATASETS}
    problems: list[str] = []
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{ours}' AS ours (READ_ONLY)")
    conn.execute(f"ATTACH '{peer}' AS peer (READ_ONLY)")
    window = f"business_date BETWEEN DATE '{first}' AND DATE '{last}'"
    for asset in assets:
        contract = contracts[asset]
        cols = contract.column_names
        keys = KEYS[asset]
        differs = " OR ".join(
            f"abs(o.{c} - p.{c}) > 1e-6 OR (o.{c} IS NULL) <> (p.{c} IS NULL)"
            if col.sql_type == "DOUBLE"
            else f"o.{c} IS DISTINCT FROM p.{c}"
            for col in contract.columns
            for c in [col.name]
        )
        on = " AND ".join(f"o.{k} = p.{k}" for k in keys)
        sql = (
            f"SELECT {', '.join(f'coalesce(o.{k}, p.{k})' for k in keys)}, "
            f"o.{keys[-1]} IS NULL AS only_peer, p.{keys[-1]} IS NULL AS only_ours "
            f"FROM (SELECT {', '.join(cols)} FROM ours.main.{asset} WHERE {window}) o "
            f"FULL JOIN (SELECT {', '.join(cols)} FROM peer.main.{asset} WHERE {window}) p "
            f"ON {on} WHERE o.{keys[-1]} IS NULL OR p.{keys[-1]} IS NULL OR {differs}"
        )
        rows = conn.execute(sql).fetchall()
        total = conn.execute(f"SELECT count(*) FROM ours.main.{asset} WHERE {window}").fetchone()
        if rows:
            problems.append(f"{asset}: {len(rows)} rows differ, e.g. {rows[:3]}")
        elif total[0] == 0:
            problems.append(f"{asset}: no rows published, nothing was compared")
    if "case_events" in assets:
        ours_rejects = dict(
            conn.execute(
                "SELECT reason, count(*) FROM (SELECT asset, partition_date, reason FROM "
                "ours.ecm_quarantine.rejected_rows UNION ALL SELECT asset, partition_date, "
                "reason FROM ours.ecm_quarantine.blocked_rows) WHERE asset = 'case_events' "
                # the quarantine keeps partition keys: a day's key is its YYYY-MM-DD text
                f"AND partition_date BETWEEN '{first}' AND '{last}' GROUP BY 1"
            ).fetchall()
        )
        peer_rejects = dict(
            conn.execute(
                f"SELECT reason, count(*) FROM peer.main.case_events_rejects WHERE {window} "
                "GROUP BY 1"
            ).fetchall()
        )
        if ours_rejects != peer_rejects:
            problems.append(f"rejects by reason differ: ours {ours_rejects}, peer {peer_rejects}")
    conn.close()
    return problems


def business_checksums(ours: Path, first: date, last: date, assets) -> dict[str, str]:
    """Our published business checksum per asset over the range, and one of our rejects.

    Printed so that two runs of the benchmark (before and after a change) can be compared:
    the same input must give the same checksums.
    """
    import duckdb

    from ecm_assets.case_sla.datasets import DATASETS
    from ecm_assets.publish.protocol import business_checksum

    contracts = {d.contract.name: d.contract for d in DATASETS}
    out: dict[str, str] = {}
    with duckdb.connect(str(ours), read_only=True) as conn:
        for asset in assets:
            out[asset] = business_checksum(
                conn, contracts[asset], asset, "WHERE business_date BETWEEN ? AND ?", (first, last)
            )
        if "case_events" in assets:
            count, first_hash, second_hash = conn.execute(
                "SELECT count(*), coalesce(sum(hash(c)::HUGEINT), 0), "
                "coalesce(sum(hash(c, 'ecm')::HUGEINT), 0) FROM (SELECT (partition_date, "
                "source_file, source_line, reason, column_name, failure_case, original_row) "
                "AS c FROM ecm_quarantine.rejected_rows WHERE asset = 'case_events' UNION ALL "
                "SELECT (partition_date, source_file, source_line, reason, column_name, "
                "failure_case, original_row) FROM ecm_quarantine.blocked_rows "
                "WHERE asset = 'case_events')"
            ).fetchone()
            out["case_events rejects"] = (
                f"n{count}-{int(first_hash) % (1 << 64):016x}{int(second_hash) % (1 << 64):016x}"
            )
    return out


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def _spawn(side: str, asset: str, data: Path, warehouse: Path, first: date, last: date) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as fh:
        result = Path(fh.name)
    cmd = [
        sys.executable,
        str(HERE),
        "--child",
        side,
        "--asset",
        asset,
        "--data",
        str(data),
        "--warehouse",
        str(warehouse),
        "--first",
        first.isoformat(),
        "--last",
        last.isoformat(),
        "--result",
        str(result),
    ]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{side} {asset} failed with exit code {proc.returncode}")
    out = json.loads(result.read_text())
    result.unlink()
    return out


def _rows(warehouse: Path, asset: str, first: date, last: date) -> int:
    """Published upstream events a derived asset reads (its window plus lookback)."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        lo = first - timedelta(days=HISTORY_DAYS) if asset == "case_sla_daily_metrics" else first
        return conn.execute(
            "SELECT count(*) FROM case_events WHERE business_date BETWEEN ? AND ?", [lo, last]
        ).fetchone()[0]


def _landing_rows(data: Path, first: date, last: date) -> int:
    import duckdb

    csv = _landing_files(data, first, last + timedelta(days=LATENESS_DAYS), ".csv")
    jsonl = _landing_files(data, first, last + timedelta(days=LATENESS_DAYS), ".jsonl")
    conn = duckdb.connect()
    n = conn.execute(
        "SELECT (SELECT count(*) FROM read_csv($c, header = true, all_varchar = true, "
        "auto_detect = false, columns = {'event_id': 'VARCHAR', 'case_id': 'VARCHAR', "
        "'event_type': 'VARCHAR', 'event_ts': 'VARCHAR', 'unit_id': 'VARCHAR', "
        "'priority': 'VARCHAR'})) + (SELECT count(*) FROM read_json($j, format = "
        "'newline_delimited', columns = {'event_id': 'VARCHAR'}))",
        {"c": csv, "j": jsonl},
    ).fetchone()[0]
    conn.close()
    return n


def run_scenario(
    label: str, tmp: Path, args: argparse.Namespace, days: int, scale: float, assets
) -> tuple[list[dict], list[str]]:
    from ecm_assets.demo.landing_generator import generate_demo_data

    first = date.fromisoformat(args.start)
    last = first + timedelta(days=days - 1)
    data = tmp / label / "data"
    started = time.perf_counter()
    summary = generate_demo_data(data, first, last, seed=args.seed, scale=scale)
    print(
        f"\n[{label}] {days} day(s) from {first} at --scale {scale}: "
        f"{summary.events_written:,} landing rows in {summary.landing_files} files "
        f"(generated in {time.perf_counter() - started:.1f}s)"
    )
    ours_db, peer_db = tmp / label / "ours.duckdb", tmp / label / "peer.duckdb"
    results = []
    for asset in assets:
        ours = _spawn("ours", asset, data, ours_db, first, last)
        peer = _spawn("peer", asset, data, peer_db, first, last)
        if asset == "case_events":
            rows = _landing_rows(data, first, last)
        else:
            rows = _rows(ours_db, asset, first, last)
        for side, m in (("ours", ours), ("peer", peer)):
            print(
                f"  {asset:<24} {side:<4} wall {m['wall']:7.2f}s  cpu {m['cpu']:7.2f}s  "
                f"peak {m['peak_mb']:7.0f} MB  {rows / m['wall']:>10,.0f} rows/s"
            )
        results.append(
            {"scenario": label, "asset": asset, "rows": rows, "ours": ours, "peer": peer}
        )
    problems = cross_check(ours_db, peer_db, first, last, assets)
    print(f"  cross-check: {'business rows and rejects equal' if not problems else 'DIFFERS'}")
    for p in problems:
        print(f"    {p}")
    checksums = business_checksums(ours_db, first, last, assets)
    for name, checksum in checksums.items():
        print(f"  business checksum {name}: {checksum}")
    for r in results:
        r["business_checksum"] = checksums[r["asset"]]
    if "case_events" in assets:
        results[0]["rejects_checksum"] = checksums["case_events rejects"]
    return results, problems


TARGETS = {
    ("range", "case_events"): 1.0,
    ("range", "case_sla_daily_metrics"): 1.5,
    ("range", "case_priority_mix_daily"): 1.5,
    ("single_day", "case_events"): 1.2,
}


def report(results: list[dict]) -> None:
    print(
        "\n| scenario | asset | rows | ours CPU s | peer CPU s | CPU ratio | target | "
        "ours wall s | peer wall s | wall ratio | ours peak MB | peer peak MB | "
        "ours rows/s | peer rows/s |"
    )
    print("|---" * 14 + "|")
    for r in results:
        o, p = r["ours"], r["peer"]
        target = TARGETS.get((r["scenario"], r["asset"]))
        ratio = o["cpu"] / p["cpu"] if p["cpu"] else float("inf")
        verdict = "-" if target is None else f"<= {target}x {'PASS' if ratio <= target else 'MISS'}"
        print(
            f"| {r['scenario']} | {r['asset']} | {r['rows']:,} | {o['cpu']:.2f} | {p['cpu']:.2f} "
            f"| {ratio:.2f}x | {verdict} | {o['wall']:.2f} | {p['wall']:.2f} | "
            f"{o['wall'] / p['wall']:.2f}x | {o['peak_mb']:.0f} | {p['peak_mb']:.0f} | "
            f"{r['rows'] / o['wall']:,.0f} | {r['rows'] / p['wall']:,.0f} |"
        )


def parent_main(args: argparse.Namespace) -> int:
    import dagster
    import duckdb
    import pandas

    print("ecm_assets pipeline benchmark: ours (dg.materialize) vs plain DuckDB SQL peer")
    print(
        f"  python {platform.python_version()}, duckdb {duckdb.__version__}, pandas "
        f"{pandas.__version__}, dagster {dagster.__version__}, cores {os.cpu_count()}, "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="ecm-pipeline-bench-", dir=args.tmp_dir))
    results, problems = [], []
    r, p = run_scenario("range", tmp, args, args.days, args.scale, ASSETS)
    results += r
    problems += p
    if args.single_day_scale > 0:
        r, p = run_scenario("single_day", tmp, args, 1, args.single_day_scale, ("case_events",))
        results += r
        problems += p
    report(results)
    print(
        "\nCPU s: user+system seconds of the child during the operation (all threads); wall: "
        "elapsed; peak: VmHWM of the child, reset before the operation; rows/s: input rows "
        "(landing rows for case_events, published upstream events read otherwise) / wall."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept under {tmp}")
    if problems:
        print("FAILED: the peer's business rows differ from ours")
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14, help="business dates in the range")
    parser.add_argument("--scale", type=float, default=20.0, help="demo generator scale")
    parser.add_argument(
        "--single-day-scale", type=float, default=175.0, help="one ~1M-row day; 0 skips it"
    )
    parser.add_argument("--start", default="2026-09-01", help="first business date")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tmp-dir", default=None, help="parent of the temp dir")
    parser.add_argument("--keep-tmp", action="store_true", help="keep data and warehouses")
    parser.add_argument("--json", default=None, help="also write raw results to this file")
    for hidden in ("--child", "--asset", "--data", "--warehouse", "--first", "--last", "--result"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        measured = _ours(args) if args.child == "ours" else _peer(args)
        Path(args.result).write_text(json.dumps(measured))
        return 0
    return parent_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
