"""Benchmark what recording a run in Dagster costs, per partition, against peers in the same run.

    python benchmarks/dagster_overhead.py [--sizes 10,60,180,365] [--cli-partitions 365]
                                          [--real-days 365] [--real-scale 0.05] [--json FILE]

Why: every partition of a range run writes events (materialization, check evaluations,
logs) to the instance's event log; when what is recorded per partition grows with the run
(the whole boundary on every partition) or is one event per rule and partition, Dagster's
bookkeeping, not the work, dominates a long backfill. Goals (issue 14):

1. framework cost per partition on a trivial dataset <= 1.5x a bare Dagster asset's;
2. event bytes per run linear in partitions (a least-squares fit is printed);
3. 365 partitions of a trivial dataset in one `dagster asset materialize` CLI run: the run's
   event log <= 2 MB;
4. a long run of a real dataset (case_events on demo data): wall <= 1.5x the same work done
   without Dagster (lock inputs, transform, gate, publish: the "compute").

Cases, in one process (3. in a child CLI process), each on a fresh DAGSTER_HOME and a fresh
DuckDB file, one single-run backfill range per measurement. The instance is the repo's
dagster.yaml ("shipped": Dagster's SQLite files through ecm_assets' pooled event log) unless
--instance / --real-instances name others ("sqlite" is Dagster's stock default):

  bare      a plain partitioned @dg.asset (single-run backfill policy) that writes one row
            per partition to DuckDB (delete the range, insert) and returns a MaterializeResult
  checked   the bare asset plus one partitioned asset check evaluated on every partition:
            Dagster's own cost for an asset whose every partition shows a check status
  ours      the same rows as a Dataset built by build_dataset_asset: input lock, manifest,
            gate (reconciliation), checks, staged publish, per-partition metadata
  compute   case_events' lock_inputs + run_transform + judge + publish_partitions, no Dagster
  real      case_events materialized by Dagster over the same days, same data

"Cost per partition" is the slope of wall time over the partition count (least squares over
--sizes), which leaves out what a run costs once (process, resources); the totals are printed
too. Event bytes are the serialized EventLogEntry records of the run. There are no assertions
on timing: this is a script; tests/test_benchmarks runs it at toy size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402

from ecm_assets.operations.event_log import home_instance  # noqa: E402

#: First day of the benchmark's own daily partitions: a full year before today fits.
START = date(2025, 1, 1)

#: The trivial dataset and the bare peer, as a module the CLI case loads with `-f`.
DEFINITIONS = '''
"""Trivial dataset (one row per day) and a bare Dagster peer, for dagster_overhead.py."""
import os
import warnings
from datetime import date

import dagster as dg
import duckdb
import pandas as pd

from ecm_assets.contracts.dataset import Column, Dataset, DatasetContract
from ecm_assets.contracts.transform import PartitionWindow
from ecm_assets.orchestration import factory
from ecm_assets.orchestration.factory import IO_MANAGER_KEY
from ecm_assets.publish.io_manager import DuckDBPublishIOManager

DAILY = dg.DailyPartitionsDefinition(start_date="{start}", timezone="UTC")
WAREHOUSE = os.environ["ECM_BENCH_WAREHOUSE"]

CONTRACT = DatasetContract(
    name="bench_trivial",
    description="One row per business date: what the framework costs without any work.",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("value", "BIGINT", nullable=False),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date",),
    start="{start}",
)


def rows(days):
    return pd.DataFrame(
        {{"business_date": pd.to_datetime(days), "value": range(len(days))}}
    )


def trivial(window: PartitionWindow) -> pd.DataFrame:
    return rows(list(window.partitions))


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ours = factory.build_dataset_asset(Dataset(CONTRACT, trivial))


def write_bare(partition_keys) -> dg.MaterializeResult:
    days = sorted(date.fromisoformat(k) for k in partition_keys)
    frame = rows(days)
    with duckdb.connect(WAREHOUSE) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bare (business_date DATE, value BIGINT)")
        conn.execute("BEGIN")
        conn.execute(
            "DELETE FROM bare WHERE business_date BETWEEN ? AND ?", [days[0], days[-1]]
        )
        conn.execute("INSERT INTO bare SELECT * FROM frame")
        conn.execute("COMMIT")
    return dg.MaterializeResult(metadata={{"rows": len(frame)}})


@dg.asset(name="bench_bare", partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
def bare(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return write_bare(context.partition_keys)


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # partitioned asset checks are a preview feature
    PASSES = dg.AssetCheckSpec(
        "passes", asset="bench_bare_checked", partitions_def=DAILY, description="Always passes."
    )


@dg.asset(
    name="bench_bare_checked",
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[PASSES],
)
def bare_checked(context: dg.AssetExecutionContext):
    """The bare asset plus one partitioned check evaluated per partition: what Dagster itself
    costs for an asset whose every partition shows a check status."""
    yield write_bare(context.partition_keys)
    for key in context.partition_keys:
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key, check_name="passes", passed=True, partition=key
        )
    # Per-partition evaluations do not fill the check's op output; this does.
    for output_name in context.assets_def.check_specs_by_output_name:
        yield dg.Output(None, output_name=output_name)


defs = dg.Definitions(
    assets=[ours, bare, bare_checked],
    resources={{IO_MANAGER_KEY: DuckDBPublishIOManager(database=WAREHOUSE)}},
)
'''


def _load_definitions(path: Path) -> dg.Definitions:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_defs_{path.parent.name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


def _keys(n: int, first: date = START) -> tuple[str, str]:
    return first.isoformat(), (first + timedelta(days=n - 1)).isoformat()


#: Trivial-dataset cases, alternated per size: bare peer, bare peer with a per-partition
#: check, ours.
TRIVIAL_CASES = ("bench_bare", "bench_bare_checked", "bench_trivial")

#: The run's console log at WARNING: the script's report is what matters, not DEBUG events.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def _event_bytes(instance: dg.DagsterInstance, run_id: str) -> tuple[int, int]:
    from dagster._serdes import serialize_value

    logs = instance.all_logs(run_id)
    return len(logs), sum(len(serialize_value(e)) for e in logs)


def measure_trivial(work: Path, asset: str, n: int, kind: str = "shipped") -> dict[str, Any]:
    """One single-run range of n partitions of `asset` on a fresh instance (of `kind`, see
    `_instance`) and warehouse."""
    work.mkdir(parents=True, exist_ok=True)
    case = Path(tempfile.mkdtemp(prefix=f"{asset}-{n}-", dir=work))  # one per repeat
    os.environ["ECM_BENCH_WAREHOUSE"] = str(case / "w.duckdb")
    (case / "defs.py").write_text(DEFINITIONS.format(start=START.isoformat()))
    defs = _load_definitions(case / "defs.py")
    assets = [a for a in defs.assets or [] if a.key.path[-1] == asset]  # type: ignore[union-attr]
    (case / "home").mkdir()
    with _instance(kind, case / "home") as instance:
        if instance is None:
            raise RuntimeError(f"instance {kind!r}: PostgreSQL unreachable at {PG_ADMIN}")
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            resources=defs.resources,
            instance=instance,
            tags=_range_tags(*_keys(n)),
            run_config=QUIET,
        )
        wall = time.perf_counter() - started
        assert result.success
        events, size = _event_bytes(instance, result.run_id)
    return {"asset": asset, "partitions": n, "wall": wall, "events": events, "bytes": size}


def measure_cli(work: Path, n: int) -> dict[str, Any]:
    """`dagster asset materialize` of n partitions of the trivial dataset, as operators run it."""
    case = work / f"cli-{n}"
    case.mkdir(parents=True)
    (case / "home").mkdir()
    shutil.copy(REPO / "dagster.yaml", case / "home" / "dagster.yaml")  # as `make` sets it up
    (case / "defs.py").write_text(DEFINITIONS.format(start=START.isoformat()))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(case / "home"),
        "ECM_BENCH_WAREHOUSE": str(case / "w.duckdb"),
        "PYTHONPATH": str(REPO),
    }
    first, last = _keys(n)
    started = time.perf_counter()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-f",
            str(case / "defs.py"),
            "--select",
            "bench_trivial",
            "--partition-range",
            f"{first}...{last}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"CLI run failed: {proc.stderr[-2000:]}")
    runs = case / "home" / "history" / "runs"
    # The run's database and, should a writer have left one, its write-ahead log.
    run_dbs = [p for p in runs.glob("*.db*") if not p.name.startswith("index.db")]
    with home_instance(case / "home") as instance:
        [record] = instance.get_run_records()
        events, size = _event_bytes(instance, record.dagster_run.run_id)
    return {
        "partitions": n,
        "wall": wall,
        "events": events,
        "bytes": size,
        "run_event_log_bytes": sum(p.stat().st_size for p in run_dbs),
        "home_bytes": sum(p.stat().st_size for p in (case / "home").rglob("*") if p.is_file()),
    }


def measure_real(
    work: Path, days: int, scale: float, instances: tuple[str, ...] = ("shipped", "sqlite")
) -> dict[str, Any]:
    """case_events over `days` days: plain compute, then the same through Dagster on each
    instance kind."""
    import dataclasses

    from ecm_assets.case_sla.datasets import DATASETS
    from ecm_assets.contracts.transform import PartitionWindow
    from ecm_assets.demo.landing_generator import generate_demo_data
    from ecm_assets.location import build_definitions
    from ecm_assets.manifest.ledger import Manifest, plan, transition
    from ecm_assets.manifest.states import RunStatus
    from ecm_assets.orchestration.inputs import lock_inputs, run_transform
    from ecm_assets.publish.protocol import PublishRequest, publish_partitions
    from ecm_assets.validation.gate import judge

    # The shipped case_events partitions start with the demo data; the benchmark's copy of
    # the dataset starts `days` days before yesterday, so a long history exists.
    first = datetime.now(UTC).date() - timedelta(days=days)
    [shipped] = [d for d in DATASETS if d.contract.name == "case_events"]
    dataset = dataclasses.replace(
        shipped, contract=dataclasses.replace(shipped.contract, start=first.isoformat())
    )
    data = work / "real-data"
    generate_demo_data(data, first, first + timedelta(days=days - 1), seed=11, scale=scale)
    contract = dataset.contract
    keys = tuple((first + timedelta(days=i)).isoformat() for i in range(days))
    window = PartitionWindow(tuple(contract.partition_value(k) for k in keys))

    started = time.perf_counter()
    boundary, kwargs = lock_inputs(
        dataset,
        window,
        keys,
        landing_root=data / "landing",
        reference_root=data / "reference",
        upstream=[],
        locked_at=datetime.now(UTC),
    )
    result = run_transform(dataset, kwargs)
    gate = judge(dataset, window, result, kwargs)
    owned = tuple(d for d in window.partitions if d not in gate.blocked)
    with duckdb.connect(str(work / "compute.duckdb")) as conn:
        plan(conn, Manifest(run_id="compute", asset=contract.name, code_version="bench"))
        transition(conn, "compute", contract.name, RunStatus.INPUT_LOCKED)
        transition(conn, "compute", contract.name, RunStatus.RUNNING)
        publish_partitions(
            conn,
            PublishRequest(
                contract=contract,
                owned_partitions=owned,
                run_id="compute",
                as_of=boundary.locked_at,
                data=gate.accepted,
                rejects=gate.quarantined,
                input_boundary=boundary.to_json(),
                reconciliation=gate.reconciliation,
                blocked=dict(gate.blocked),
                quality=gate.to_json(),
            ),
        )
    compute = time.perf_counter() - started

    out: dict[str, Any] = {"partitions": days, "rows": len(gate.accepted), "compute": compute}
    for kind in instances:
        defs = build_definitions([dataset], data_dir=data, warehouse=work / f"real-{kind}.duckdb")
        home = work / f"real-home-{kind}"
        home.mkdir()
        with _instance(kind, home) as instance, _event_batches(kind):
            if instance is None:
                out[kind] = None  # PostgreSQL unreachable: said in the report
                continue
            started = time.perf_counter()
            run = dg.materialize(
                [a for a in defs.assets or [] if a.key.path[-1] == "case_events"],  # type: ignore[union-attr]
                resources=defs.resources,
                instance=instance,
                tags=_range_tags(keys[0], keys[-1]),
                run_config=QUIET,
                raise_on_error=False,
            )
            wall = time.perf_counter() - started
            events, size = _event_bytes(instance, run.run_id)
        out[kind] = {"wall": wall, "success": run.success, "events": events, "bytes": size}
    return out


#: Events per batch write on the `postgres-batch` instance (DAGSTER_EVENT_BATCH_SIZE).
EVENT_BATCH_SIZE = "1000"


@contextlib.contextmanager
def _event_batches(kind: str) -> Iterator[None]:
    """`postgres-batch`: Dagster's DAGSTER_EVENT_BATCH_SIZE, so a range run's planned events
    and its per-partition materializations are each written in one statement
    (dagster-postgres implements `store_event_batch`; SQLite stores them one by one)."""
    if kind != "postgres-batch":
        yield
        return
    before = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = EVENT_BATCH_SIZE
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DAGSTER_EVENT_BATCH_SIZE", None)
        else:
            os.environ["DAGSTER_EVENT_BATCH_SIZE"] = before


#: Instance kinds `_instance` makes.
INSTANCE_KINDS = ("shipped", "sqlite", "postgres", "postgres-batch")

#: Where the PostgreSQL instance case creates (and drops) its throwaway database.
PG_ADMIN = os.environ.get("ECM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def _instance(kind: str, home: Path) -> Iterator[dg.DagsterInstance | None]:
    """A fresh instance of one kind:

    shipped         the repo's dagster.yaml: Dagster's SQLite files written through
                    ecm_assets' PooledSqliteEventLogStorage (one open connection per file)
    sqlite          Dagster's default instance: the stock SQLite storage, which opens (and
                    closes) a connection per write
    postgres        dagster-postgres (`dagster.postgres.yaml`), a throwaway database
    postgres-batch  the same with DAGSTER_EVENT_BATCH_SIZE (see `_event_batches`)
    """
    if kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind {kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")
    if kind in ("shipped", "sqlite"):
        if kind == "shipped":
            shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        else:
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with home_instance(home) as instance:
            yield instance
        return
    import uuid

    import psycopg

    name = f"ecm_bench_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        yield None
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://")
            (home / "dagster.yaml").write_text(
                "storage:\n  postgres:\n    postgres_url: " + f"{url}/{name}\n"
                "telemetry:\n  enabled: false\n"
            )
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield instance
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fit(xs: list[int], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b*n, and how much a quadratic term would add."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(x, y, 1)
    predicted = a + b * x
    ss = float(((y - y.mean()) ** 2).sum()) or 1.0
    r2 = 1 - float(((y - predicted) ** 2).sum()) / ss
    quadratic = np.polyfit(x, y, 2)[0] if len(xs) >= 3 else 0.0
    return {"a": float(a), "b": float(b), "r2": r2, "c2": float(quadratic)}


def _best(measure: Callable[[], dict[str, Any]], repeat: int) -> dict[str, Any]:
    runs = [measure() for _ in range(repeat)]
    return min(runs, key=lambda r: r["wall"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,60,180,365")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cli-partitions", type=int, default=365)
    parser.add_argument("--real-days", type=int, default=365)
    parser.add_argument("--real-scale", type=float, default=0.05)
    parser.add_argument(
        "--instance",
        default="shipped",
        choices=INSTANCE_KINDS,
        help="instance kind for the trivial cases (all three peers on the same kind)",
    )
    parser.add_argument(
        "--real-instances",
        default="shipped,sqlite,postgres",
        help="instance kinds for case 4 (postgres and postgres-batch need PostgreSQL; "
        "skipped when unreachable)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    warnings.simplefilter("ignore")
    out: dict[str, Any] = {"sizes": sizes, "instance": args.instance}
    with tempfile.TemporaryDirectory(prefix="ecm-overhead-") as tmp:
        work = Path(tmp)
        # Alternate the cases, so drift on a shared machine hits both alike.
        trivial: dict[str, list[dict[str, Any]]] = {a: [] for a in TRIVIAL_CASES}
        for i, n in enumerate(sizes):
            for asset in TRIVIAL_CASES:
                sub = work / f"r{i}"
                trivial[asset].append(
                    _best(
                        lambda a=asset, n=n, s=sub: measure_trivial(s / a, a, n, args.instance),
                        args.repeat,
                    )
                )
        out["trivial"] = trivial
        slope = {a: fit(sizes, [r["wall"] for r in rs])["b"] for a, rs in trivial.items()}
        out["cost_per_partition"] = slope
        out["cost_ratio"] = slope["bench_trivial"] / slope["bench_bare"]
        out["cost_ratio_checked"] = slope["bench_trivial"] / slope["bench_bare_checked"]
        out["event_bytes_fit"] = fit(sizes, [r["bytes"] for r in trivial["bench_trivial"]])
        out["cli"] = measure_cli(work, args.cli_partitions)
        out["real"] = measure_real(
            work, args.real_days, args.real_scale, tuple(args.real_instances.split(","))
        )
    _report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


def _report(out: dict[str, Any]) -> None:
    print(
        f"trivial dataset, one single-run range per size (best wall, seconds), "
        f"{out['instance']} instance:"
    )
    header = ("partitions", "bare s", "checked s", "ours s", "ours events", "ours bytes")
    print("  " + " ".join(f"{h:>11}" for h in header))
    trivial = out["trivial"]
    for bare, checked, ours in zip(*(trivial[a] for a in TRIVIAL_CASES), strict=True):
        print(
            f"  {ours['partitions']:>11} {bare['wall']:>11.2f} {checked['wall']:>11.2f} "
            f"{ours['wall']:>11.2f} {ours['events']:>11} {ours['bytes']:>11}"
        )
    slope = out["cost_per_partition"]
    print(
        f"1. cost per partition: ours {slope['bench_trivial'] * 1000:.1f} ms, bare "
        f"{slope['bench_bare'] * 1000:.1f} ms: {out['cost_ratio']:.2f}x (goal <= 1.5x); "
        f"bare with one per-partition check {slope['bench_bare_checked'] * 1000:.1f} ms: "
        f"{out['cost_ratio_checked']:.2f}x"
    )
    f = out["event_bytes_fit"]
    print(
        f"2. event bytes per run = {f['a']:.0f} + {f['b']:.0f} x partitions (R^2 {f['r2']:.4f}; "
        f"a quadratic term would add {f['c2']:.3f} x partitions^2)"
    )
    cli = out["cli"]
    print(
        f"3. CLI run of {cli['partitions']} partitions: {cli['wall']:.1f} s, {cli['events']} "
        f"events, {cli['bytes'] / 1e6:.2f} MB serialized, run event log file "
        f"{cli['run_event_log_bytes'] / 1e6:.2f} MB (goal <= 2 MB), DAGSTER_HOME "
        f"{cli['home_bytes'] / 1e6:.2f} MB"
    )
    real = out["real"]
    print(
        f"4. case_events, {real['partitions']} partitions ({real['rows']} rows) in one run, "
        f"compute {real['compute']:.1f} s (goal: wall <= 1.5x compute):"
    )
    for peer, what in (
        ("bench_bare", "a bare Dagster asset"),
        ("bench_bare_checked", "a bare asset with one per-partition check"),
    ):
        floor = out["cost_per_partition"][peer] * real["partitions"]
        print(
            f"   floor: {what} costs {floor:.1f} s for {real['partitions']} partitions beyond "
            f"its work (case 1's slope), so it can do no better than "
            f"{(real['compute'] + floor) / real['compute']:.2f}x here"
        )
    for kind in INSTANCE_KINDS:
        if kind not in real:
            continue
        case = real[kind]
        if case is None:
            print(f"   {kind} instance: not measured (PostgreSQL unreachable at {PG_ADMIN})")
            continue
        print(
            f"   {kind} instance: wall {case['wall']:.1f} s: "
            f"{case['wall'] / real['compute']:.2f}x; {case['events']} events "
            f"({(case['wall'] - real['compute']) / max(case['events'], 1) * 1000:.1f} ms of "
            f"wall beyond compute per event), {case['bytes'] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
