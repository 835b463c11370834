"""Benchmark the staged, transactional publish against plain DuckDB and the stock IO manager.

    python benchmarks/publish.py [--rows N] [--history-partitions 364]
                                 [--history-rows-per-partition K] [--reps 3]

Cases, all on one deterministic (seeded) daily partition of case events with the
CASE_EVENTS contract's columns and the dtypes parse_case_events produces:

  baseline        duckdb.connect + CREATE TABLE t AS SELECT * FROM df + close
  stock           dg.materialize of a one-asset daily-partitioned definition through
                  dagster_duckdb_pandas.DuckDBPandasIOManager (partition_expr business_date)
  ours            the same dg.materialize through ecm_assets DuckDBPublishIOManager
  ours@365        ours, publishing partition 365 into a table already holding 364 partitions
  stock@365       (informational) the stock manager on the same kind of history

Every measurement (case x repetition) runs in a fresh child process on a fresh DuckDB file
under a temp dir; the history cases get a byte copy of a history template filled once with
DuckDB SQL (not timed). Inside the child: imports, frame generation and a tiny warm-up of the
same code path (separate throwaway file) happen first, then the peak-RSS counter is reset
(`echo 5 > /proc/self/clear_refs`), the operation is timed with perf_counter, and VmHWM is read
from /proc/self/status. "peak RSS" is therefore the child's true resident high-water mark
(Python + pandas frame + DuckDB native memory) during the operation; "op delta" is that peak
minus the RSS just before the operation. The parent also records each child's lifetime
ru_maxrss via os.wait4 (reported in the JSON detail, it includes frame generation).

This is a script, not a test. `--rows 100000` gives a quick run.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Partition 1 of the benchmark's own daily partitions definition; partition 365 is the
#: published one. Dagster only knows partitions up to "now", so the definition starts in the
#: past rather than at ecm_assets' PARTITIONS_START.
BENCH_START = date(2025, 1, 1)


def bench_contract():
    """CASE_EVENTS with the benchmark's own first partition (a contract owns its calendar)."""
    import dataclasses

    from ecm_assets.case_sla.contracts import CASE_EVENTS

    return dataclasses.replace(CASE_EVENTS, start=BENCH_START.isoformat())


REGIONS = ("NORTH", "SOUTH", "EAST", "WEST")
EVENT_TYPES = ("opened", "assigned", "escalated", "resolved", "reopened")
EVENT_TYPE_WEIGHTS = (0.45, 0.37, 0.05, 0.11, 0.02)
PRIORITIES = ("P1", "P2", "P3", "P4")
PRIORITY_WEIGHTS = (0.05, 0.20, 0.45, 0.30)
N_UNITS = 12
FILES_PER_DAY = 4  # events-000..002.csv + events-003.jsonl, as the landing generator writes
WARMUP_ROWS = 200

CASES = {
    "baseline": "plain CTAS",
    "stock": "DuckDBPandasIOManager, first partition",
    "ours": "DuckDBPublishIOManager, first partition",
    "ours@365": "DuckDBPublishIOManager, partition 365",
    "stock@365": "DuckDBPandasIOManager, partition 365",
}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def business_date_for(partition_number: int) -> date:
    return BENCH_START + timedelta(days=partition_number - 1)


def make_frame(rows: int, business_date: date, seed: int = 20260101):
    """One partition of case events with the dtypes parse_case_events returns.

    Strings are Python objects (object dtype), event_ts is datetime64[ns, UTC], business_date
    and ingest_date are datetime64[ns], source_line is int64; sorted like the transform sorts.
    """
    import numpy as np
    import pandas as pd

    from ecm_assets.case_sla.contracts import CASE_EVENTS

    rng = np.random.default_rng([seed, business_date.toordinal()])
    day_index = (business_date - BENCH_START).days
    # ~10-character ids: E + 10 digits, increasing (the transform sorts by event_id).
    event_num = day_index * 10_000_000 + np.cumsum(rng.integers(1, 4, size=rows))
    event_id = np.strings.add("E", np.strings.zfill(event_num.astype("U10"), 10))
    # ~1.9 events per case, as the demo generator yields for one day.
    n_cases = max(1, int(rows / 1.9))
    case_num = day_index * 1_000_000 + rng.integers(1, n_cases + 1, size=rows)
    case_id = np.strings.add("C", np.strings.zfill(case_num.astype("U9"), 9))
    type_code = rng.choice(len(EVENT_TYPES), size=rows, p=EVENT_TYPE_WEIGHTS)
    seconds = rng.integers(0, 86_400, size=rows)
    midnight = np.datetime64(business_date.isoformat(), "s")
    event_ts = pd.to_datetime(midnight + seconds.astype("timedelta64[s]"), utc=True).as_unit("ns")
    unit = rng.integers(1, N_UNITS + 1, size=rows)
    unit_table = np.array([f"U{i:02d}" for i in range(N_UNITS + 1)], dtype=object)
    region_table = np.array(
        ["?", *(REGIONS[(i - 1) % len(REGIONS)] for i in range(1, N_UNITS + 1))], dtype=object
    )
    prio = rng.choice(len(PRIORITIES), size=rows, p=PRIORITY_WEIGHTS)
    late = np.where(
        rng.random(rows) < 0.7,
        0,
        np.where(rng.random(rows) < 2 / 3, 1, rng.integers(2, 6, size=rows)),
    )
    file_no = rng.integers(0, FILES_PER_DAY, size=rows)
    names = []
    for lateness in range(6):
        ingest = (business_date + timedelta(days=lateness)).isoformat()
        for f in range(FILES_PER_DAY):
            ext = "jsonl" if f == FILES_PER_DAY - 1 else "csv"
            names.append(f"case_events/ingest_date={ingest}/events-{f:03d}.{ext}")
    name_table = np.array(names, dtype=object)
    slot = late * FILES_PER_DAY + file_no
    # Line numbers within each file: csv lines start at 2 (header), jsonl at 1.
    line = pd.Series(np.ones(rows, dtype=np.int64)).groupby(slot).cumsum().to_numpy()
    line = line + (file_no < FILES_PER_DAY - 1)
    day_ns = pd.Timestamp(business_date)
    frame = pd.DataFrame(
        {
            "event_id": event_id.astype(object),
            "case_id": case_id.astype(object),
            "event_type": np.array(EVENT_TYPES, dtype=object)[type_code],
            "event_ts": event_ts,
            "business_date": pd.Series(
                np.full(rows, day_ns.to_datetime64(), dtype="datetime64[ns]")
            ),
            "unit_id": unit_table[unit],
            "region": region_table[unit],
            "priority": np.array(PRIORITIES, dtype=object)[prio],
            "ingest_date": pd.Series(
                (day_ns.to_datetime64() + late.astype("timedelta64[D]")).astype("datetime64[ns]")
            ),
            "source_file": name_table[slot],
            "source_line": line.astype("int64"),
        }
    )
    return frame[CASE_EVENTS.column_names]


# --------------------------------------------------------------------------------------------
# Child side: one measurement per process
# --------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else -1


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _partitions_def():
    import dagster as dg

    return dg.DailyPartitionsDefinition(start_date=BENCH_START.isoformat(), timezone="UTC")


_FRAME = None  # the frame the benchmark assets return (module global: no copy per run)
_IO_SECONDS: list[float] = []


def _stock_assets():
    import dagster as dg

    @dg.asset(
        name="case_events",
        partitions_def=_partitions_def(),
        metadata={"partition_expr": "business_date"},
    )
    def case_events(context):  # returns a pandas DataFrame
        return _FRAME

    return [case_events]


def _ours_assets():
    import dagster as dg

    from ecm_assets.contracts.boundaries import InputBoundary
    from ecm_assets.publish.io_manager import StagedOutput

    @dg.asset(
        name="case_events",
        partitions_def=_partitions_def(),
        io_manager_key="warehouse_io_manager",
    )
    def case_events(context):
        boundary = InputBoundary(partitions=(context.partition_key,), locked_at=datetime.now(UTC))
        return StagedOutput(bench_contract(), _FRAME, boundary)

    return [case_events]


def _install_io_timers() -> None:
    """Time handle_output of both IO managers (the DuckDB work, without run overhead)."""
    from dagster._core.storage.db_io_manager import DbIOManager

    from ecm_assets.publish.io_manager import DuckDBPublishIOManager

    def timed(fn):
        # Our handle_output is a generator (it yields per-partition materializations), so its
        # work happens while Dagster iterates it: time the iteration, and keep the wrapper a
        # generator function so Dagster still recognizes it as one.
        if inspect.isgeneratorfunction(fn):

            def generator_wrapper(self, context, obj):
                started = time.perf_counter()
                try:
                    return (yield from fn(self, context, obj))
                finally:
                    _IO_SECONDS.append(time.perf_counter() - started)

            return generator_wrapper

        def wrapper(self, context, obj):
            started = time.perf_counter()
            try:
                return fn(self, context, obj)
            finally:
                _IO_SECONDS.append(time.perf_counter() - started)

        return wrapper

    DbIOManager.handle_output = timed(DbIOManager.handle_output)
    DuckDBPublishIOManager.handle_output = timed(DuckDBPublishIOManager.handle_output)


def _run_case(case: str, db: str, partition_key: str, instance) -> None:
    import dagster as dg
    import duckdb
    from dagster_duckdb_pandas import DuckDBPandasIOManager

    from ecm_assets.publish.io_manager import DuckDBPublishIOManager

    if case == "baseline":
        df = _FRAME  # noqa: F841 - referenced by name from SQL (replacement scan)
        conn = duckdb.connect(db)
        try:
            conn.execute("CREATE TABLE t AS SELECT * FROM df")
        finally:
            conn.close()
        return
    if case.startswith("stock"):
        assets = _stock_assets()
        resources = {"io_manager": DuckDBPandasIOManager(database=db, schema="main")}
    else:
        assets = _ours_assets()
        resources = {"warehouse_io_manager": DuckDBPublishIOManager(database=db)}
    result = dg.materialize(
        assets, resources=resources, partition_key=partition_key, instance=instance
    )
    if not result.success:
        raise RuntimeError(f"{case}: materialize failed")


def child_main(args: argparse.Namespace) -> None:
    global _FRAME
    import warnings

    import dagster as dg
    import duckdb  # noqa: F401

    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)
    logging.disable(logging.INFO)

    case = args.child
    bdate = business_date_for(args.history_partitions + 1)
    partition_key = bdate.isoformat()
    _install_io_timers()
    instance = dg.DagsterInstance.ephemeral()

    # Warm-up of the same code path on a tiny frame into a throwaway file: lazy imports and
    # Dagster's first-run costs are the same for every case and are not what is measured.
    _FRAME = make_frame(WARMUP_ROWS, bdate, seed=args.seed + 1)
    _run_case(case, str(Path(args.db).with_suffix(".warmup.duckdb")), partition_key, instance)
    _IO_SECONDS.clear()

    t0 = time.perf_counter()
    _FRAME = make_frame(args.rows, bdate, seed=args.seed)
    gen_seconds = time.perf_counter() - t0
    gc.collect()
    reset_ok = _reset_peak_rss()
    rss_before = _status_kb("VmRSS")

    cpu_before = os.times()
    started = time.perf_counter()
    _run_case(case, args.db, partition_key, instance)
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)

    peak = _status_kb("VmHWM")
    if case == "baseline":  # the whole operation is the DuckDB work
        _IO_SECONDS.append(seconds)
    out = {
        "case": case,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "io_seconds": _IO_SECONDS[0],
        "peak_rss_kb": peak,
        "rss_before_kb": rss_before,
        "peak_reset": reset_ok,
        "frame_seconds": gen_seconds,
        "db_bytes": os.path.getsize(args.db),
    }
    Path(args.result).write_text(json.dumps(out))


# --------------------------------------------------------------------------------------------
# Child side: history templates and the step profile
# --------------------------------------------------------------------------------------------


def _history_sql(partitions: int, per_partition: int) -> list[str]:
    """SQL that appends partitions 1..P with K rows each to main.case_events (ours' schema).

    Per-row pieces (K rows) and per-day pieces (P rows) are computed once into temp tables and
    joined onto range(P*K), which keeps the rows of each business date contiguous (as daily
    publishes leave them, so row-group zone maps on business_date are realistic) and keeps
    the per-row work to string concatenation.
    """
    K = per_partition
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    prios = ", ".join(f"'{p}'" for p in PRIORITIES)
    regions = ", ".join(f"'{r}'" for r in REGIONS)
    start = f"DATE '{BENCH_START.isoformat()}'"
    return [
        f"""CREATE TEMP TABLE hist_rows AS SELECT r,
            lpad((r * 2 + 1)::VARCHAR, 7, '0') AS eid,
            lpad(((r * 7919) % {max(1, K // 2)} + 1)::VARCHAR, 6, '0') AS cid,
            [{types}][1 + (r * 31) % 5] AS event_type,
            to_seconds((r * 86399) % 86400) AS ts_offset,
            'U' || lpad((1 + (r * 13) % 12)::VARCHAR, 2, '0') AS unit_id,
            [{regions}][1 + ((r * 13) % 12) % 4] AS region,
            [{prios}][1 + (r * 17) % 4] AS priority,
            ((r * 11) % 3)::INTEGER AS late,
            '/events-00' || ((r * 5) % 3)::VARCHAR || '.csv' AS file_suffix,
            (r // 3 + 2)::BIGINT AS source_line
        FROM range({K}) t(r)""",
        f"""CREATE TEMP TABLE hist_days AS SELECT d,
            {start} + d::INTEGER AS bd,
            'E' || lpad(d::VARCHAR, 3, '0') AS eid_prefix,
            'C' || lpad(d::VARCHAR, 3, '0') AS cid_prefix,
            ({start} + d::INTEGER)::TIMESTAMP AT TIME ZONE 'UTC' AS midnight,
            ['case_events/ingest_date=' || strftime({start} + (d + k)::INTEGER, '%Y-%m-%d')
             for k in range(3)] AS ingest_dirs,
            'hist-run-' || lpad(d::VARCHAR, 3, '0') AS run_id,
            ({start} + d::INTEGER + 1)::TIMESTAMP AT TIME ZONE 'UTC' AS as_of
        FROM range({partitions}) t(d)""",
        f"""INSERT INTO main.case_events SELECT
            eid_prefix || eid, cid_prefix || cid, event_type, midnight + ts_offset, bd,
            unit_id, region, priority, bd + late, ingest_dirs[late + 1] || file_suffix,
            source_line, run_id, as_of
        FROM range({partitions * K}) t(i)
        JOIN hist_days ON hist_days.d = i // {K}
        JOIN hist_rows ON hist_rows.r = i % {K}""",
    ]


def fill_main(args: argparse.Namespace) -> None:
    """Write the history templates: P partitions of K rows, for ours and (copied) for stock."""
    import duckdb

    from ecm_assets.case_sla.contracts import CASE_EVENTS
    from ecm_assets.contracts.dataset import PROVENANCE_COLUMNS

    P, K = args.history_partitions, args.history_rows_per_partition
    timings = {}
    # Ours: the table exactly as the protocol creates it (contract columns + provenance);
    # _reconcile_table_schema refuses a mismatch, so a wrong DDL here would fail the run.
    cols = [
        f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in CASE_EVENTS.columns
    ]
    cols += [f'"{n}" {t} NOT NULL' for n, t in PROVENANCE_COLUMNS]
    started = time.perf_counter()
    conn = duckdb.connect(args.fill_ours)
    conn.execute(f"CREATE TABLE main.case_events ({', '.join(cols)})")
    for statement in _history_sql(P, K):
        conn.execute(statement)
    conn.close()
    timings["ours"] = time.perf_counter() - started
    if args.fill_stock:
        # Stock: the table as the stock type handler creates it from the frame (pandas types:
        # business_date/ingest_date TIMESTAMP_NS, no provenance), holding the same rows.
        started = time.perf_counter()
        df = make_frame(10, business_date_for(1), seed=args.seed)  # noqa: F841 - SQL name
        conn = duckdb.connect()
        conn.execute(f"ATTACH '{args.fill_ours}' AS src (READ_ONLY)")
        conn.execute(f"ATTACH '{args.fill_stock}' AS stock")
        conn.execute("CREATE TABLE stock.main.case_events AS SELECT * FROM df LIMIT 0")
        names = ", ".join(f'"{c}"' for c in CASE_EVENTS.column_names)
        conn.execute(
            f"INSERT INTO stock.main.case_events ({names}) SELECT {names} FROM src.main.case_events"
        )
        conn.execute("DETACH stock")
        conn.execute("DETACH src")
        conn.close()
        timings["stock"] = time.perf_counter() - started
    Path(args.result).write_text(json.dumps(timings))


class _TimedConnection:
    """Wraps a DuckDB connection and times every execute() by protocol step (profile only)."""

    #: (all needles, label), first match wins; unknown statements are listed as "other".
    STEPS = (
        (('"ecm_ledger"',), "ledger / manifest bookkeeping"),
        (("information_schema",), "catalog lookups"),
        (('CREATE TABLE "ecm_staging"',), "create staging table"),
        (("CREATE TEMP TABLE",), "create staging table"),
        (("CREATE SCHEMA",), "create schemas / tables if missing"),
        (("CREATE TABLE IF NOT EXISTS",), "create schemas / tables if missing"),
        (("DESCRIBE",), "lossless-cast check"),
        (("__row",), "lossless-cast check"),
        (('INSERT INTO "ecm_staging"',), "staging insert (pandas scan + casts + write)"),
        (("INSERT INTO temp.main",), "staging insert (pandas scan + casts, temp table)"),
        (("NOT list_contains",), "owned-boundary check"),
        (("hash(", "GROUP BY"), "business checksum per partition (one pass)"),
        (("md5_number", "GROUP BY"), "business checksum per partition (md5)"),
        (("md5_number",), "business checksum, whole run (md5)"),
        (("as_of >",), "stale-input check"),
        (("GROUP BY 1 ORDER BY 1",), "rows by partition"),
        (("BEGIN",), "begin"),
        (('DELETE FROM "ecm_quarantine"',), "quarantine replace"),
        (('INSERT INTO "ecm_quarantine"',), "quarantine replace"),
        (("DELETE FROM",), "delete owned partitions"),
        (("INSERT INTO",), "insert staged -> final"),
        (("COMMIT",), "commit"),
        (("DROP TABLE",), "drop staging"),
    )

    def __init__(self, conn):
        self._conn = conn
        self.timings: dict[str, float] = {}

    def _label(self, sql: str) -> str:
        for needles, label in self.STEPS:
            if all(n in sql for n in needles):
                return label
        return "other: " + " ".join(sql.split())[:40]

    def execute(self, sql, params=None):
        started = time.perf_counter()
        result = self._conn.execute(sql, params) if params is not None else self._conn.execute(sql)
        label = self._label(sql)
        self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - started
        return result

    def __getattr__(self, name):
        return getattr(self._conn, name)


def profile_main(args: argparse.Namespace) -> None:
    """One publish_partitions call with every SQL step timed, plus the close (checkpoint)."""
    import duckdb

    from ecm_assets.publish.protocol import PublishRequest, publish_partitions

    bdate = business_date_for(args.history_partitions + 1)
    frame = make_frame(args.rows, bdate, seed=args.seed)
    request = PublishRequest(
        contract=bench_contract(),
        owned_partitions=(bdate,),
        run_id="bench-profile-run",
        as_of=datetime.now(UTC),
        data=frame,
    )
    started = time.perf_counter()
    conn = duckdb.connect(args.db)
    proxy = _TimedConnection(conn)
    publish_partitions(proxy, request)
    t_close = time.perf_counter()
    conn.close()
    proxy.timings["close (checkpoint)"] = time.perf_counter() - t_close
    total = time.perf_counter() - started
    Path(args.result).write_text(json.dumps({"total": total, "steps": proxy.timings}))


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


def _spawn(extra: list[str], result: Path, args: argparse.Namespace) -> tuple[dict, int]:
    """Run this script as a child; return its JSON result and lifetime ru_maxrss (kB)."""
    cmd = [
        sys.executable,
        str(HERE),
        "--rows",
        str(args.rows),
        "--history-partitions",
        str(args.history_partitions),
        "--history-rows-per-partition",
        str(args.history_rows_per_partition),
        "--seed",
        str(args.seed),
        "--result",
        str(result),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(output)
        raise SystemExit(f"child {extra} failed with exit code {proc.returncode}")
    return json.loads(result.read_text()), usage.ru_maxrss


def _versions() -> dict[str, str]:
    import dagster
    import dagster_duckdb_pandas
    import duckdb
    import numpy
    import pandas

    return {
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "dagster": dagster.__version__,
        "dagster-duckdb-pandas": dagster_duckdb_pandas.__version__,
    }


def _code_fingerprint() -> str:
    """Short sha256 of the publish package's files: which code these numbers belong to."""
    import hashlib

    files = sorted((ROOT / "ecm_assets" / "publish").glob("*.py"))
    return ", ".join(
        f"{f.name} {hashlib.sha256(f.read_bytes()).hexdigest()[:8]}"
        for f in files
        if f.name != "__init__.py"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"MemTotal:\s+(\d+)", text).group(1)) / 1024 / 1024
    except (OSError, AttributeError):
        return float("nan")


def parent_main(args: argparse.Namespace) -> None:
    wall_started = time.perf_counter()
    cases = [c for c in CASES if c != "stock@365" or args.stock_history]
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = sorted(set(wanted) - set(CASES))
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
        cases = [c for c in cases if c in wanted]
    tmp = Path(tempfile.mkdtemp(prefix="ecm-publish-bench-", dir=args.tmp_dir))
    P, K, N = args.history_partitions, args.history_rows_per_partition, args.rows
    bdate = business_date_for(P + 1)
    first_rows_note = f"partition {P + 1} = business_date {bdate.isoformat()}"
    print("ecm_assets publish benchmark")
    for name, version in _versions().items():
        print(f"  {name:<22}{version}")
    print(f"  {'cores (os.cpu_count)':<22}{os.cpu_count()}  ({_cpu_model()})")
    print(f"  {'affinity cores':<22}{len(os.sched_getaffinity(0))}")
    print(f"  {'memory':<22}{_mem_total_gb():.1f} GiB")
    print(f"  {'ecm_assets/publish':<22}{_code_fingerprint()}")
    print(f"  {'rows':<22}{N:,} ({first_rows_note})")
    print(f"  {'history':<22}{P} partitions x K={K:,} rows = {P * K:,} rows")
    print(f"  {'repetitions':<22}best of {args.reps}, each in a fresh process and DuckDB file")
    print(f"  {'temp dir':<22}{tmp}")
    load_start = os.getloadavg()
    print(f"  {'load average':<22}{' '.join(f'{x:.2f}' for x in load_start)} (1/5/15 min) at start")
    if load_start[0] > 0.5:
        print("  WARNING: the machine is busy; timings include contention from other processes")
    print(flush=True)

    results: dict[str, list[dict]] = {c: [] for c in cases}
    try:
        templates = {}
        if any(c.endswith("@365") for c in cases):
            templates = {"ours@365": tmp / "history-ours.duckdb"}
            extra = ["--fill-ours", str(templates["ours@365"])]
            if args.stock_history:
                templates["stock@365"] = tmp / "history-stock.duckdb"
                extra += ["--fill-stock", str(templates["stock@365"])]
            fill, _ = _spawn(extra, tmp / "fill.json", args)
            sizes = ", ".join(
                f"{k} {v:.1f}s / {templates[k + '@365'].stat().st_size / 2**20:,.0f} MiB"
                for k, v in fill.items()
            )
            print(f"history fill (DuckDB SQL from range(), not timed below): {sizes}", flush=True)

        for rep in range(args.reps):
            for case in cases:
                db = tmp / f"{case.replace('@', '_at_')}-rep{rep}.duckdb"
                if case in templates:
                    shutil.copyfile(templates[case], db)
                out, lifetime_kb = _spawn(
                    ["--child", case, "--db", str(db)], tmp / f"{db.stem}.json", args
                )
                out["lifetime_maxrss_kb"] = lifetime_kb
                results[case].append(out)
                io = f" io {out['io_seconds']:.2f}s cpu {out['cpu_seconds']:.2f}s"
                print(
                    f"  rep {rep + 1} {case:<10} {out['seconds']:7.2f}s{io}  "
                    f"peak {out['peak_rss_kb'] / 1024:7.0f} MB  "
                    f"(before {out['rss_before_kb'] / 1024:.0f} MB, "
                    f"child lifetime {lifetime_kb / 1024:.0f} MB)",
                    flush=True,
                )
                for path in (db, db.with_suffix(".warmup.duckdb")):
                    path.unlink(missing_ok=True)

        profiles = {}
        if args.profile:
            for case in ("ours", "ours@365"):
                if case not in cases:
                    continue
                db = tmp / f"profile-{case.replace('@', '_at_')}.duckdb"
                if case in templates:
                    shutil.copyfile(templates[case], db)
                profiles[case], _ = _spawn(
                    ["--profile-child", "--db", str(db)], tmp / f"{db.stem}.json", args
                )
                db.unlink(missing_ok=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    reset_ok = all(r["peak_reset"] for rs in results.values() for r in rs)
    best = {c: min(rs, key=lambda r: r["seconds"]) for c, rs in results.items()}
    best_io = {c: min(r["io_seconds"] for r in rs) for c, rs in results.items()}
    best_cpu = {c: min(r["cpu_seconds"] for r in rs) for c, rs in results.items()}
    peak = {c: max(r["peak_rss_kb"] for r in rs) / 1024 for c, rs in results.items()}
    delta = {
        c: max(r["peak_rss_kb"] - r["rss_before_kb"] for r in rs) / 1024
        for c, rs in results.items()
    }

    print()
    print(f"Results: {N:,} rows, best of {args.reps} (seconds), peak RSS = max over repetitions")
    header = (
        f"| {'case':<10} | {'what':<40} | {'seconds':>7} | {'handle_output s':>15} "
        f"| {'CPU s':>6} | {'peak RSS MB':>11} | {'op delta MB':>11} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for c in cases:
        io = f"{best_io[c]:.2f}"
        print(
            f"| {c:<10} | {CASES[c]:<40} | {best[c]['seconds']:7.2f} | {io:>15} "
            f"| {best_cpu[c]:6.2f} | {peak[c]:11.0f} | {delta[c]:11.0f} |"
        )

    def ratio_row(label, num, den, goal, basis="seconds"):
        if num not in best or den not in best:
            return
        if basis == "io":
            value = best_io[num] / best_io[den]
        elif basis == "cpu":
            value = best_cpu[num] / best_cpu[den]
        elif basis == "rss":
            value = peak[num] / peak[den]
        else:
            value = best[num]["seconds"] / best[den]["seconds"]
        verdict = "-" if goal is None else ("PASS" if value <= goal else "MISS")
        goal_s = "-" if goal is None else f"<= {goal:.1f}x"
        print(f"| {label:<48} | {value:6.2f}x | {goal_s:>8} | {verdict:<5} |")

    print()
    print(f"| {'ratio':<48} | {'value':>7} | {'goal':>8} | {'':<5} |")
    print(f"|{'-' * 50}|{'-' * 9}|{'-' * 10}|{'-' * 7}|")
    ratio_row("ours / stock (materialize wall time)", "ours", "stock", 1.0)
    ratio_row("ours / stock (handle_output only)", "ours", "stock", 1.0, "io")
    ratio_row("ours / stock (CPU seconds of the operation)", "ours", "stock", 1.0, "cpu")
    ratio_row("ours / stock (peak RSS)", "ours", "stock", None, "rss")
    ratio_row("ours / baseline (materialize vs plain CTAS)", "ours", "baseline", None)
    ratio_row("ours / baseline (handle_output vs plain CTAS)", "ours", "baseline", None, "io")
    ratio_row("ours partition-365 / first (materialize)", "ours@365", "ours", 1.2)
    ratio_row("ours partition-365 / first (handle_output)", "ours@365", "ours", 1.2, "io")
    ratio_row("ours partition-365 / first (CPU seconds)", "ours@365", "ours", 1.2, "cpu")
    ratio_row("stock partition-365 / first (informational)", "stock@365", "stock", None)

    print()
    print(
        "seconds: dg.materialize() wall time for stock/ours (both via dg.materialize with an "
        "ephemeral instance,\n  in-process executor, after a warm-up run in the same process), "
        "connect+CTAS+close for baseline.\n"
        "handle_output s: time inside the IO manager's handle_output (connect, SQL, close) only.\n"
        "CPU s: user+system CPU seconds of the child process during the operation (all threads);\n"
        "  less sensitive than wall time to other processes competing for the cores."
    )
    how = (
        "VmHWM from /proc/self/status of a fresh child process, reset via /proc/self/clear_refs "
        "just before the operation"
        if reset_ok
        else "VmHWM of a fresh child process over its whole life (clear_refs reset unavailable)"
    )
    print(
        f"peak RSS: {how}; it includes the interpreter, imports and the {N:,}-row frame "
        "(see 'op delta': peak minus RSS right before the operation)."
    )

    if profiles:
        print()
        print("Where the time goes inside publish_partitions (one call, direct, seconds):")
        labels = []
        for prof in profiles.values():
            for label in prof["steps"]:
                if label not in labels:
                    labels.append(label)
        names = list(profiles)
        print(f"| {'step':<46} | " + " | ".join(f"{n:>9}" for n in names) + " |")
        print(f"|{'-' * 48}|" + "|".join("-" * 11 for _ in names) + "|")
        for label in labels:
            cells = " | ".join(f"{profiles[n]['steps'].get(label, 0.0):9.3f}" for n in names)
            print(f"| {label:<46} | {cells} |")
        totals = " | ".join(f"{profiles[n]['total']:9.3f}" for n in names)
        print(f"| {'total (connect .. close)':<46} | {totals} |")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "versions": _versions(),
                    "cores": os.cpu_count(),
                    "rows": N,
                    "history": {"partitions": P, "rows_per_partition": K},
                    "results": results,
                    "profiles": profiles,
                },
                indent=2,
            )
        )
    load_end = os.getloadavg()
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in load_end)} (1/5/15 min)")
    print(f"total benchmark wall time: {time.perf_counter() - wall_started:.0f}s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the partition")
    parser.add_argument(
        "--history-partitions", type=int, default=364, help="partitions already published"
    )
    parser.add_argument(
        "--history-rows-per-partition",
        type=int,
        default=25_000,
        help="K: rows per history partition (default 25,000: 9.1M rows; the fill of both "
        "templates takes ~40 s on 2 cores)",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case (best of)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument(
        "--cases", default=None, help=f"comma-separated subset of {', '.join(CASES)} (default all)"
    )
    parser.add_argument(
        "--no-stock-history",
        dest="stock_history",
        action="store_false",
        help="skip the informational stock@365 case (and its history fill)",
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the step profile"
    )
    parser.add_argument("--tmp-dir", default=None, help="parent of the temp dir (default: system)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the DuckDB files")
    parser.add_argument("--json", default=None, help="also write raw results to this file")
    # Internal: child modes.
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fill-ours", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fill-stock", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--db", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args)
    elif args.profile_child:
        profile_main(args)
    elif args.fill_ours:
        fill_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
