"""Benchmark a multi-run backfill of the demo pipeline through a real `dagster-daemon`.

    python benchmarks/backfill.py [--days 60] [--scale 1] [--setups duckdb,postgres,inprocess]
                                  [--assets case_events,...] [--partitions-per-run 1]
                                  [--pool-limit 4] [--timeout 3600] [--json FILE]

Why: DuckDB admits one writing process per file, so every warehouse step sits in the pool
`ecm_duckdb_warehouse` limited to 1 (dagster.yaml) and a multi-run backfill is serial in its
warehouse work. A PostgreSQL warehouse locks per (asset, partition), so its pool
`ecm_postgres_warehouse` can admit N steps at once (issue 16). This measures what that buys on
this machine, against an in-process single run over the same range. Setups, each on the same
demo data (`ecm demo-data`, seed 7) and a fresh instance and warehouse:

  duckdb     (a) DuckDB warehouse file, SQLite instance under a fresh DAGSTER_HOME with the
             shipped dagster.yaml (pool limit 1, 2 runs at a time);
  postgres   (b) PostgreSQL warehouse (ECM_WAREHOUSE_URL, a fresh database) and PostgreSQL
             instance (dagster.postgres.yaml, another fresh database), pool
             `ecm_postgres_warehouse` set to --pool-limit (4) with `dagster instance
             concurrency set`, 4 runs at a time;
  inprocess  (c) `dagster asset materialize --partition-range`: one run owns the whole range
             (the shipped single-run backfill policy), DuckDB warehouse, for reference.

(a) and (b) launch ONE asset backfill of --assets over the range the way the UI does (GraphQL
`launchPartitionBackfill` on a `dagster-webserver`, which is then stopped), then start
`dagster-daemon run`: its backfill daemon requests the runs, the run queue launches them
through the default run launcher, and the daemon's pools gate their warehouse steps. The code
location is the shipped one (ecm_assets.definitions) with the partitioned assets' backfill
policy set to multi_run(--partitions-per-run), so the backfill is multi-run: one run per
partition (and per dependency level: case_sla_rolling_30d waits for 30 days of metrics).

Measured: wall = from starting the daemon to the end of the last run (the backfill daemon
ticks every 30 s, so dependent levels wait up to a tick; that is part of the real cost);
runs per minute; speedup = wall(a) / wall(setup). CPU: the run workers and their step
subprocesses are children of the daemon's code server, which reaps them, so their CPU is the
code server's cutime+cstime (/proc, sampled every 0.5 s, per code-server process). The bound
is that CPU / cores: no schedule on this machine can finish the runs' work faster. Also
printed: CPU of every process the benchmark started, PostgreSQL server CPU over the interval
(the server is shared, so other sessions' queries count too) and the machine's other load.
No assertions on timing: tests/test_benchmarks runs this at toy size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from ecm_assets.operations.graphql import graphql, launch_partition_backfill  # noqa: E402

START = date(2026, 9, 1)
DAILY_ASSETS = "case_events,case_sla_daily_metrics,case_sla_rolling_30d,case_priority_mix_daily"
POSTGRES_POOL = "ecm_postgres_warehouse"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

#: The shipped location with a multi-run backfill policy; written next to each setup's home.
LOCATION = '''
"""The shipped case-SLA location, partitioned assets on multi_run({per_run}) (backfill.py)."""
import dagster as dg

from ecm_assets import definitions as _shipped_module

POLICY = dg.BackfillPolicy.multi_run({per_run})


def _multi(asset):
    if (
        isinstance(asset, dg.AssetsDefinition)
        and asset.is_executable
        and asset.partitions_def is not None
    ):
        return asset.with_attributes(backfill_policy=POLICY)
    return asset


def _build(shipped):
    return dg.Definitions(
        assets=[_multi(a) for a in shipped.assets or []],
        asset_checks=shipped.asset_checks,
        jobs=shipped.jobs,
        schedules=shipped.schedules,
        sensors=shipped.sensors,
        resources=shipped.resources,
        executor=shipped.executor,
        loggers=shipped.loggers,
    )


defs = _build(_shipped_module.defs)
'''

WORKSPACE = """load_from:
  - python_file:
      relative_path: {location}
      working_directory: {cwd}
      location_name: ecm_assets
"""

#: Creates the instance's storages once, before the webserver and the daemon race to.
INIT = (
    "import dagster as dg\n"
    "with dg.DagsterInstance.get() as i:\n"
    "    i.run_storage, i.event_log_storage, i.schedule_storage\n"
    "    i.get_runs(limit=1)\n"
)


@dataclass
class Result:
    setup: str
    ok: bool
    runs: int
    wall_s: float
    runs_cpu_s: float
    all_cpu_s: float
    postgres_cpu_s: float
    other_cpu_s: float
    cores: int
    first_run_start_s: float | None = None
    max_concurrent_runs_seen: int = 0
    pools_used: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def runs_per_minute(self) -> float:
        return self.runs / (self.wall_s / 60) if self.wall_s > 0 else 0.0

    @property
    def bound_s(self) -> float:
        """Best possible wall: the runs' CPU-seconds spread over every core."""
        return self.runs_cpu_s / self.cores


# --- /proc accounting -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int, float, float] | None:
    """(comm, ppid, session, self CPU s, reaped children CPU s) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()
    # fields after comm: state ppid pgrp session ... utime(11) stime(12) cutime(13) cstime(14)
    return (
        comm,
        int(f[1]),
        int(f[3]),
        (int(f[11]) + int(f[12])) / CLK_TCK,
        (int(f[13]) + int(f[14])) / CLK_TCK,
    )


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _machine_busy_s() -> float:
    """CPU-seconds every core of the machine spent not idle since boot."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in cpu]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def _postgres_cpu_s() -> float:
    """CPU of every PostgreSQL server process, with the backends they reaped."""
    total = 0.0
    for pid in _pids():
        st = _stat(pid)
        if st and st[0] in ("postgres", "postmaster"):
            total += st[3] + st[4]
    return total


class Sampler:
    """Samples the processes of the sessions we started: code servers' reaped-children CPU
    (the run workers), live processes' CPU, and how many run workers are alive at once."""

    def __init__(self) -> None:
        self.sessions: set[int] = set()
        self.code_server_children: dict[int, float] = {}  # code-server pid -> max cutime+cstime
        self.last: dict[int, tuple[str, int, float, float]] = {}  # pid -> comm, ppid, self, kids
        self.workers_seen: set[int] = set()
        self.max_workers = 0
        self._is_code_server: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _code_server(self, pid: int) -> bool:
        if pid not in self._is_code_server:
            cmd = _cmdline(pid)
            self._is_code_server[pid] = " api grpc" in cmd or "code-server" in cmd
        return self._is_code_server[pid]

    def sample(self) -> None:
        seen: dict[int, tuple[str, int, float, float]] = {}
        for pid in _pids():
            st = _stat(pid)
            if st is None or st[2] not in self.sessions:
                continue
            seen[pid] = (st[0], st[1], st[3], st[4])
            if self._code_server(pid):
                self.code_server_children[pid] = max(self.code_server_children.get(pid, 0.0), st[4])
        workers = [p for p, s in seen.items() if s[1] in self.code_server_children]
        self.workers_seen.update(workers)
        self.max_workers = max(self.max_workers, len(workers))
        self.last = seen

    def runs_cpu_s(self) -> float:
        return sum(self.code_server_children.values())

    def all_cpu_s(self) -> float:
        """Every live process of our sessions with what it reaped (exited workers included)."""
        return sum(s[2] + s[3] for s in self.last.values())

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.sample()
            except Exception as exc:  # a sampler error must not hang the benchmark
                print(f"  sampler error: {exc}", file=sys.stderr)


# --- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(
    stack: ExitStack, args: list[str], env: dict[str, str], log: Path, cwd: Path
) -> subprocess.Popen:
    """A process in its own session, stopped (SIGTERM, then SIGKILL) when `stack` closes."""
    out = stack.enter_context(log.open("w"))
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    stack.callback(_stop, proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    # Anything left in the session (a code server, a run worker) goes too.
    for pid in _pids():
        st = _stat(pid)
        if st and st[2] == proc.pid:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 30.0)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_admin(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def postgres_reachable(dsn: str) -> str | None:
    """None if PostgreSQL answers at `dsn`, else why not (one line)."""
    try:
        with _pg_admin(dsn):
            return None
    except Exception as exc:  # psycopg.OperationalError, or psycopg missing
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def fresh_databases(dsn: str, names: list[str], keep: bool) -> Iterator[None]:
    from psycopg import sql

    with _pg_admin(dsn) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        if not keep:
            with _pg_admin(dsn) as conn:
                for name in names:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


# --- setups ---------------------------------------------------------------------------------


@dataclass
class Plan:
    days: int
    assets: list[str]
    per_run: int
    pool_limit: int
    timeout: float
    data: Path
    root: Path
    pg_admin_dsn: str
    pg_host: str
    pg_port: int
    pg_user: str
    keep: bool

    @property
    def keys(self) -> tuple[str, str]:
        return START.isoformat(), (START + timedelta(days=self.days - 1)).isoformat()


def _warehouse_rows(warehouse: str, assets: list[str]) -> dict[str, int]:
    """Rows and distinct business dates per asset table, for the cross-check between setups."""
    rows: dict[str, int] = {}
    if warehouse.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(warehouse, connect_timeout=5) as conn:
            for a in assets:
                try:
                    rows[a] = conn.execute(f'SELECT count(*) FROM main."{a}"').fetchone()[0]
                except Exception:
                    conn.rollback()
                    rows[a] = -1
        return rows
    import duckdb

    with duckdb.connect(warehouse, read_only=True) as conn:
        for a in assets:
            try:
                rows[a] = conn.execute(f'SELECT count(*) FROM main."{a}"').fetchone()[0]
            except duckdb.Error:
                rows[a] = -1
    return rows


def daemon_backfill(plan: Plan, setup: str) -> Result:
    """(a) or (b): one asset backfill, multi-run, through a real dagster-daemon."""
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

    work = plan.root / setup
    home = work / "home"
    home.mkdir(parents=True)
    cores = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "ECM_"))}
    env.update(DAGSTER_HOME=str(home), ECM_DATA_DIR=str(plan.data), PYTHONUNBUFFERED="1")
    databases: list[str] = []
    if setup == "duckdb":
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        warehouse = str(work / "warehouse.duckdb")
        env["ECM_WAREHOUSE"] = warehouse
    else:
        shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
        suffix = f"{os.getpid()}"
        instance_db, warehouse_db = f"ecm_bench_instance_{suffix}", f"ecm_bench_wh_{suffix}"
        databases = [instance_db, warehouse_db]
        warehouse = f"postgresql://{plan.pg_user}@{plan.pg_host}:{plan.pg_port}/{warehouse_db}"
        env.update(
            DAGSTER_PG_HOST=plan.pg_host,
            DAGSTER_PG_PORT=str(plan.pg_port),
            DAGSTER_PG_USER=plan.pg_user,
            DAGSTER_PG_PASSWORD="",
            DAGSTER_PG_DB=instance_db,
            ECM_WAREHOUSE_URL=warehouse,
            # The DuckDB path stays set but unused: the URL selects the PostgreSQL backend.
            ECM_WAREHOUSE=str(work / "unused.duckdb"),
        )
    (work / "location.py").write_text(LOCATION.format(per_run=plan.per_run))
    (work / "workspace.yaml").write_text(WORKSPACE.format(location=work / "location.py", cwd=work))
    deadline = time.monotonic() + plan.timeout
    first, last = plan.keys

    with ExitStack() as stack:
        if databases:
            stack.enter_context(fresh_databases(plan.pg_admin_dsn, databases, plan.keep))
        _run([sys.executable, "-c", INIT], env, work, deadline - time.monotonic())
        if setup == "postgres":
            # Per-pool limits live in the instance (UI or CLI), not in dagster.yaml, whose
            # default_limit (1) stays the safe value for any DuckDB pool.
            _run(
                [
                    str(BIN / "dagster"),
                    "instance",
                    "concurrency",
                    "set",
                    POSTGRES_POOL,
                    str(plan.pool_limit),
                ],
                env,
                work,
                deadline - time.monotonic(),
            )

        # Launch the backfill the way the UI does, then stop the webserver: from here on only
        # the daemon and the runs use the machine.
        port = _free_port()
        with ExitStack() as web_stack:
            web = _start(
                web_stack,
                [
                    str(BIN / "dagster-webserver"),
                    "-w",
                    str(work / "workspace.yaml"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                env,
                work / "webserver.log",
                work,
            )
            url = f"http://127.0.0.1:{port}"
            while True:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "webserver did not come up:\n"
                        + (work / "webserver.log").read_text()[-3000:]
                    )
                try:
                    graphql(url, "{ version }", timeout=5)
                    break
                except Exception:
                    time.sleep(1)
            backfill_id = launch_partition_backfill(
                url, {a: (first, last) for a in plan.assets}, {"ecm/benchmark": setup}, timeout=120
            )

        sampler = Sampler()
        pg_before = _postgres_cpu_s()
        busy_before = _machine_busy_s()
        t0 = time.time()
        daemon = _start(
            stack,
            [str(BIN / "dagster-daemon"), "run", "-w", str(work / "workspace.yaml")],
            env,
            work / "daemon.log",
            work,
        )
        sampler.sessions.add(daemon.pid)
        sampler.start()
        stack.callback(sampler.stop)

        # The harness reads the same instance; a PostgreSQL one takes its settings from env.
        # DAGSTER_HOME: the shipped pooled SQLite event log takes its directory from it.
        stack.enter_context(
            _environ(
                {k: v for k, v in env.items() if k.startswith("DAGSTER_PG")}
                | {"DAGSTER_HOME": str(home)}
            )
        )
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        records: list[Any] = []
        status = "?"
        active = {
            DagsterRunStatus.QUEUED,
            DagsterRunStatus.NOT_STARTED,
            DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED,
            DagsterRunStatus.CANCELING,
        }
        target = set(_partition_keys(first, last))
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(
                    "dagster-daemon exited:\n" + (work / "daemon.log").read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{setup}: backfill {backfill_id} not done in {plan.timeout:.0f} s "
                    f"(status {status}, {len(records)} runs)"
                )
            backfill = instance.get_backfill(backfill_id)
            status = backfill.status.value if backfill else "?"
            records = list(
                instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
            )
            running = [r for r in records if r.dagster_run.status in active]
            if status in TERMINAL_BACKFILL and not running:
                break
            if (
                records
                and not running
                and all(
                    target <= set(instance.get_materialized_partitions(dg.AssetKey(a)))
                    for a in plan.assets
                )
            ):
                # Every target partition is published and nothing runs: the work is done; the
                # daemon only marks the backfill complete at its next tick.
                status = status + " (all partitions materialized)"
                break
            time.sleep(1)

        # Run workers may outlive their run's SUCCESS event by a moment; let the code server
        # reap them so their CPU is in its cutime.
        settle = time.monotonic() + 30
        while time.monotonic() < settle:
            sampler.sample()
            if not any(s[1] in sampler.code_server_children for s in sampler.last.values()):
                break
            time.sleep(0.5)
        sampler.sample()
        busy = _machine_busy_s() - busy_before
        pg_cpu = _postgres_cpu_s() - pg_before if setup == "postgres" else 0.0
        ends = [r.end_time for r in records if r.end_time]
        starts = [r.start_time for r in records if r.start_time]
        wall = (max(ends) - t0) if ends else float("nan")
        failed = [
            r.dagster_run.run_id
            for r in records
            if r.dagster_run.status != DagsterRunStatus.SUCCESS
        ]
        pools = sorted(instance.event_log_storage.get_concurrency_keys())
        ours = sampler.all_cpu_s()
        runs_cpu = sampler.runs_cpu_s()
        # Before the stack closes: a PostgreSQL warehouse database is dropped with it.
        rows = _warehouse_rows(warehouse, plan.assets)

    result = Result(
        setup=setup,
        ok=not failed and status.startswith(("COMPLETED", "REQUESTED")),
        runs=len(records),
        wall_s=wall,
        runs_cpu_s=runs_cpu,
        all_cpu_s=ours,
        postgres_cpu_s=pg_cpu,
        other_cpu_s=max(0.0, busy - ours - pg_cpu),
        cores=cores,
        first_run_start_s=(min(starts) - t0) if starts else None,
        max_concurrent_runs_seen=max_overlap(
            [(r.start_time, r.end_time) for r in records if r.start_time and r.end_time]
        ),
        pools_used=pools,
        rows=rows,
        note=f"backfill {status}; {len(failed)} runs not SUCCESS"
        + (
            f"; code-server child processes seen {len(sampler.workers_seen)} "
            f"(run workers and their helpers), at most {sampler.max_workers} at once"
            if sampler.workers_seen
            else ""
        ),
    )
    if failed:
        print((work / "daemon.log").read_text()[-2000:], file=sys.stderr)
    return result


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (a run counts from its start to its end)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        current += step
        best = max(best, current)
    return best


def _partition_keys(first: str, last: str) -> list[str]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def inprocess_range(plan: Plan) -> Result:
    """(c): one `dagster asset materialize` run over the whole range, DuckDB, for reference."""
    work = plan.root / "inprocess"
    home = work / "home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    warehouse = str(work / "warehouse.duckdb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "ECM_"))}
    env.update(
        DAGSTER_HOME=str(home),
        ECM_DATA_DIR=str(plan.data),
        ECM_WAREHOUSE=warehouse,
    )
    first, last = plan.keys
    _run([sys.executable, "-c", INIT], env, work, plan.timeout)
    busy_before = _machine_busy_s()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "ecm_assets.definitions",
            "--select",
            ",".join(plan.assets),
            "--partition-range",
            f"{first}...{last}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=plan.timeout,
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _machine_busy_s() - busy_before
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (work / "materialize.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-3000:], file=sys.stderr)
    return Result(
        setup="inprocess",
        ok=proc.returncode == 0,
        runs=1,
        wall_s=wall,
        runs_cpu_s=cpu,
        all_cpu_s=cpu,
        postgres_cpu_s=0.0,
        other_cpu_s=max(0.0, busy - cpu),
        cores=len(os.sched_getaffinity(0)),
        rows=_warehouse_rows(warehouse, plan.assets),
        note=f"exit {proc.returncode}",
    )


# --- report ---------------------------------------------------------------------------------


LABELS = {
    "duckdb": "(a) daemon, DuckDB, pool 1",
    "postgres": "(b) daemon, PostgreSQL, pool {pool}",
    "inprocess": "(c) one in-process run",
}


def report(results: list[Result], plan: Plan) -> None:
    base = next((r for r in results if r.setup == "duckdb" and r.ok), None)
    cores = results[0].cores if results else 0
    print()
    print(
        f"{plan.days} partitions of {', '.join(plan.assets)}; multi-run = "
        f"{plan.per_run} partition(s) per run; {cores} cores"
    )
    header = (
        "setup",
        "ok",
        "runs",
        "wall s",
        "runs/min",
        "speedup",
        "run CPU s",
        "bound s",
        "best speedup",
        "all CPU s",
        "pg CPU s",
        "other CPU s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        speedup = base.wall_s / r.wall_s if base and r.wall_s > 0 else float("nan")
        best = base.wall_s / r.bound_s if base and r.bound_s > 0 else float("nan")
        print(
            "| "
            + " | ".join(
                [
                    LABELS[r.setup].format(pool=plan.pool_limit),
                    "yes" if r.ok else "NO",
                    str(r.runs),
                    f"{r.wall_s:.1f}",
                    f"{r.runs_per_minute:.1f}",
                    f"{speedup:.2f}x",
                    f"{r.runs_cpu_s:.1f}",
                    f"{r.bound_s:.1f}",
                    f"{best:.2f}x",
                    f"{r.all_cpu_s:.1f}",
                    f"{r.postgres_cpu_s:.1f}",
                    f"{r.other_cpu_s:.1f}",
                ]
            )
            + " |"
        )
    for r in results:
        extra = (
            f"first run started {r.first_run_start_s:.1f} s after the daemon; "
            f"at most {r.max_concurrent_runs_seen} runs at once (run start/end times); "
            f"pools {r.pools_used}; "
            if r.first_run_start_s is not None
            else ""
        )
        print(f"  {r.setup}: {extra}{r.note}; rows {r.rows}")
    print(
        "  bound = run CPU / cores (no schedule finishes the runs' work faster on this machine); "
        "best speedup = wall(a) / bound"
    )
    done = [r for r in results if r.ok]
    if len(done) > 1:
        same = all(r.rows == done[0].rows for r in done)
        print(
            "cross-check: rows per table equal across setups"
            if same
            else f"cross-check: ROWS DIFFER across setups: { {r.setup: r.rows for r in done} }"
        )


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--scale", type=float, default=1.0, help="demo-data --scale")
    parser.add_argument("--setups", default="duckdb,postgres,inprocess")
    parser.add_argument("--assets", default=DAILY_ASSETS)
    parser.add_argument("--partitions-per-run", type=int, default=1)
    parser.add_argument("--pool-limit", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per setup")
    parser.add_argument("--pg-host", default=os.environ.get("ECM_BENCH_PG_HOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=os.environ.get("ECM_BENCH_PG_PORT", 5432))
    parser.add_argument("--pg-user", default=os.environ.get("ECM_BENCH_PG_USER", "postgres"))
    parser.add_argument("--keep", action="store_true", help="keep the work dir and databases")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(setups) - set(LABELS)
    if unknown:
        parser.error(f"unknown setups {sorted(unknown)}; choose from {sorted(LABELS)}")
    root = Path(tempfile.mkdtemp(prefix="ecm_bench_backfill_"))
    plan = Plan(
        days=args.days,
        assets=[a.strip() for a in args.assets.split(",") if a.strip()],
        per_run=args.partitions_per_run,
        pool_limit=args.pool_limit,
        timeout=args.timeout,
        data=root / "data",
        root=root,
        pg_admin_dsn=f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres",
        pg_host=args.pg_host,
        pg_port=args.pg_port,
        pg_user=args.pg_user,
        keep=args.keep,
    )
    results: list[Result] = []
    try:
        first, last = plan.keys
        t = time.monotonic()
        _run(
            [
                str(BIN / "ecm"),
                "demo-data",
                "--start",
                first,
                "--end",
                last,
                "--seed",
                "7",
                "--scale",
                str(args.scale),
                "--out",
                str(plan.data),
            ],
            dict(os.environ),
            root,
            args.timeout,
        )
        print(f"demo data {first}..{last} at --scale {args.scale}: {time.monotonic() - t:.1f} s")
        runners: dict[str, Callable[[], Result]] = {
            "duckdb": lambda: daemon_backfill(plan, "duckdb"),
            "postgres": lambda: daemon_backfill(plan, "postgres"),
            "inprocess": lambda: inprocess_range(plan),
        }
        for setup in setups:
            if setup == "postgres":
                why = postgres_reachable(plan.pg_admin_dsn)
                if why:
                    print(f"{setup}: skipped, PostgreSQL unreachable: {why}")
                    continue
            print(f"{setup}: running ...", flush=True)
            result = runners[setup]()
            print(
                f"{setup}: wall {result.wall_s:.1f} s, {result.runs} runs, "
                f"run CPU {result.runs_cpu_s:.1f} s, {result.note}",
                flush=True,
            )
            results.append(result)
        report(results, plan)
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    finally:
        if args.keep:
            print(f"work dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every daemon and database is cleaned up."""
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    outcome = main()
    raise SystemExit(0 if outcome and all(r.ok for r in outcome) else 1)
