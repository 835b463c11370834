"""`ecm sync ...` and `ecm demo-source`: the sync commands, registered by ecm_assets.cli.

Arguments are checked before anything is opened: bad usage exits 2 in one line and creates
no file, no warehouse and no source database (issue 11).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ecm_assets.cli import _echo, _float_between, _int_between, _path, existing_warehouse
from ecm_assets.sync.spec import SHIPPED_JOBS_DIR

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: What a file SQLite made starts with.
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Options that only mean something to some `ecm sync` actions.
_ACTION_OPTIONS = {
    "full": ("--full", {"run"}),
    "partition": ("--partition", {"run"}),
    "force": ("--force", {"run"}),
    "no_source": ("--no-source", {"status"}),
    "warehouse": ("--warehouse", {"run", "status"}),
}


def _job_id(text: str) -> str:
    if not _JOB_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a sync job id")
    return text


def _partition_id(text: str) -> str:
    if not text or len(text) > 200 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a partition id")
    return text


def _finite_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not in [{low:g}, {high:g}]")
        return value

    parse.__name__ = "number"
    return parse


def _jobs_dir(args: argparse.Namespace) -> Path:
    path = Path(args.jobs_dir or os.environ.get("ECM_SYNC_JOBS_DIR") or SHIPPED_JOBS_DIR)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise LookupError(f"sync jobs directory {path} {what}")
    return path


def _warehouse(args: argparse.Namespace) -> str:
    """--warehouse, else ECM_WAREHOUSE_URL, else ECM_WAREHOUSE, else the data directory's
    DuckDB file: a DuckDB path or a postgresql:// URL."""
    from ecm_assets.location import default_warehouse
    from ecm_assets.sync.backend import default_target

    return str(args.warehouse) if args.warehouse else default_target(default_warehouse())


def _duckdb_path(target: str) -> Path | None:
    from ecm_assets.adapters.backends import is_postgres_url

    if is_postgres_url(target):
        return None
    if target.startswith("duckdb:///"):
        from ecm_assets.adapters.backends import open_warehouse

        return open_warehouse(target).path  # type: ignore[attr-defined]
    return Path(target)


def _existing_warehouse(target: str) -> str:
    """A DuckDB file must exist (only a publish creates one); a server is asked when used."""
    path = _duckdb_path(target)
    return target if path is None else str(existing_warehouse(path))


def _run_warehouse(args: argparse.Namespace) -> str:
    """The warehouse a run writes: an existing DuckDB file, or a new one in an existing
    directory (a sync run publishes, so it may create it), or a PostgreSQL database."""
    target = _warehouse(args)
    path = _duckdb_path(target)
    if path is None:
        return target
    if path.exists() or path.is_symlink():
        return str(existing_warehouse(path))
    if not path.parent.is_dir():
        raise LookupError(f"warehouse {path}: directory {path.parent} does not exist")
    return str(path)


def _check_options(args: argparse.Namespace) -> None:
    for attr, (flag, actions) in _ACTION_OPTIONS.items():
        if getattr(args, attr) and args.action not in actions:
            allowed = " or ".join(f"`ecm sync {a}`" for a in sorted(actions))
            raise ValueError(f"{flag} applies to {allowed} only")


def _source_error(url: str, exc: Exception) -> ValueError:
    from ecm_assets.sync.connectors import redacted

    first = (str(exc).splitlines() or [""])[0]
    return ValueError(f"source {redacted(url)}: {type(exc).__name__}: {first}")


def _check_source(spec: Any) -> None:
    """The job's source answers its query, before a run creates or changes the warehouse.

    A SQLite source must already exist: connecting would create an empty database file."""
    import sqlalchemy as sa

    from ecm_assets.sync.connectors import SourceConnector, engine_url

    url = engine_url(spec.source)
    _check_sqlite_file(url, must_exist=True)
    connector = SourceConnector(spec.source)
    try:
        with connector.engine.connect() as conn:
            conn.execute(
                sa.text(f"SELECT * FROM ({spec.source.query}) AS ecm_src LIMIT 0"),
                {"last_sync": connector.minimum},
            )
    except sa.exc.SQLAlchemyError as exc:
        raise _source_error(url, exc) from None
    finally:
        connector.close()


def _check_sqlite_file(url: str, *, must_exist: bool) -> None:
    """A SQLite URL's file: in an existing directory, a SQLite file if it exists (and it
    must when `must_exist`); an in-memory database passes."""
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"{_echo(url)} is not a SQLAlchemy database URL") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if not path.exists():
        if must_exist:
            raise LookupError(f"source database {path} does not exist")
        if not path.parent.is_dir():
            raise LookupError(f"source database {path}: directory {path.parent} does not exist")
        return
    if not path.is_file():
        raise LookupError(f"source database {path} is not a file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise LookupError(f"source database {path} cannot be read: {exc.strerror}") from None
    if header and header != _SQLITE_MAGIC:
        raise LookupError(f"source database {path} is not a SQLite database file")


def cmd_sync(args: argparse.Namespace) -> int:
    from ecm_assets.sync.spec import find_spec, load_specs

    _check_options(args)
    if args.action == "validate":
        specs = [find_spec(_jobs_dir(args), args.job)] if args.job else load_specs(_jobs_dir(args))
        for spec in specs:
            print(
                f"{spec.path}: {spec.job_id} ok ({spec.job_type}, {spec.partitioning.strategy} "
                f"x {len(spec.partitioning.partition_ids)})"
            )
        return 0
    if args.action == "status":
        from ecm_assets.sync.status import job_status

        specs = [find_spec(_jobs_dir(args), args.job)] if args.job else load_specs(_jobs_dir(args))
        warehouse = _existing_warehouse(_warehouse(args))
        rows = [r for s in specs for r in job_status(s, warehouse, with_source=not args.no_source)]
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        cols = (
            "job_id",
            "partition",
            "cursor",
            "last_boundary",
            "rows",
            "source_rows_beyond_boundary",
            "last_checkpoint",
        )
        print("\t".join(cols))
        for r in rows:
            print("\t".join("-" if r[c] is None else str(r[c]) for c in cols))
        return 0
    # run
    from ecm_assets.operations.alerts import Alert, AlertSink
    from ecm_assets.sync.runner import run_job

    if not args.job:
        raise ValueError("ecm sync run needs a JOB id")
    spec = find_spec(_jobs_dir(args), args.job)
    unknown = [p for p in args.partition or [] if p not in spec.partitioning.partition_ids]
    if unknown:
        raise ValueError(
            f"sync job {spec.job_id} has no partition(s) {', '.join(map(_echo, unknown))}; it has "
            f"{', '.join(spec.partitioning.partition_ids)}"
        )
    warehouse = _run_warehouse(args)
    _check_source(spec)
    sink = AlertSink(webhook_url=os.environ.get("ECM_ALERT_WEBHOOK_URL", ""))

    def alert(text: str) -> None:
        import logging

        sink.send(
            Alert(
                job=spec.job_id,
                run_id="-",
                assets=(spec.asset_name,),
                kind="quality_gate",
                decision="FAIL_RUN",
                error=text,
            ),
            logging.getLogger("ecm.sync"),
        )

    result = run_job(
        spec,
        warehouse,
        job_type="full_extraction" if args.full else None,
        partitions=args.partition or None,
        check_dependencies=not args.force,
        on_alert=alert,
    )
    payload = {
        "job_id": result.job_id,
        "run_id": result.run_id,
        "resumed": result.resumed,
        "job_type": result.job_type,
        "last_sync": result.last_sync,
        "boundary": result.boundary,
        "rows_extracted": result.rows_extracted,
        "rows_written": result.rows_written,
        "hard_deleted": result.hard_deleted,
        "partitions_skipped": result.skipped_partitions,
        "decision": result.decision,
        "seconds": round(result.seconds, 3),
    }
    print(
        json.dumps(payload, indent=2, default=str)
        if args.json
        else " ".join(f"{k}={v}" for k, v in payload.items() if k != "boundary")
    )
    return 0


def cmd_demo_source(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from ecm_assets.location import default_data_dir as data_dir
    from ecm_assets.sync.demo_source import create_source, write

    url = args.url
    if url is None:
        url = f"sqlite:///{data_dir() / 'customer_history.sqlite'}"
    if args.url is None and not args.keep:  # the default source's directory: make it
        data_dir().mkdir(parents=True, exist_ok=True)
    _check_sqlite_file(url, must_exist=args.keep)
    try:
        if args.keep:
            _check_table(url)
        else:
            rows = create_source(url, args.rows, seed=args.seed)
            print(f"created customer_history with {rows} rows at {_redacted(url)}")
        if args.simulate_writes:
            stats = write(
                url,
                args.seconds,
                seed=args.seed,
                adversarial=args.adversarial,
                skew=timedelta(seconds=args.skew_seconds),
            )
            print(f"wrote for {args.seconds:g}s: {stats.line()}")
    except (sa.exc.SQLAlchemyError, ImportError) as exc:
        raise _source_error(url, exc) from None
    return 0


def _redacted(url: str) -> str:
    from ecm_assets.sync.connectors import redacted

    return redacted(url)


def _check_table(url: str) -> None:
    """--keep: the customer_history table must already be there."""
    import sqlalchemy as sa

    from ecm_assets.sync.demo_source import TABLE, _engine

    engine = _engine(url)
    try:
        if not sa.inspect(engine).has_table(TABLE):
            raise LookupError(f"--keep: source {_redacted(url)} has no {TABLE} table")
    finally:
        engine.dispose()


def _source_url(text: str) -> str:
    """A SQLite or PostgreSQL SQLAlchemy URL (what the demo source supports)."""
    import sqlalchemy as sa

    if not text or len(text) > 2000 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a database URL")
    try:
        backend = sa.make_url(text).get_backend_name()
    except sa.exc.ArgumentError:
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a database URL") from None
    if backend not in ("sqlite", "postgresql"):
        raise argparse.ArgumentTypeError(
            f"{_echo(text)}: the demo source is SQLite or PostgreSQL, not {backend}"
        )
    return text


def add_sync_commands(sub: argparse._SubParsersAction) -> None:
    """Register `ecm sync` and `ecm demo-source` on the main parser."""
    p = sub.add_parser("sync", help="ECM sync jobs: status (per partition), run, validate")
    p.add_argument("action", choices=["status", "run", "validate"])
    p.add_argument(
        "job", nargs="?", type=_job_id, help="job id (default: every job for status, validate)"
    )
    p.add_argument(
        "--jobs-dir",
        type=_path,
        help="directory of job specs (default: $ECM_SYNC_JOBS_DIR or the shipped jobs)",
    )
    p.add_argument(
        "--warehouse",
        type=_path,
        help="DuckDB file or postgresql:// URL (default: $ECM_WAREHOUSE_URL, $ECM_WAREHOUSE)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--full",
        action="store_true",
        help="run as full_extraction (reconciles hard deletes and anything older than the overlap)",
    )
    p.add_argument(
        "--partition", type=_partition_id, action="append", help="only this partition (repeatable)"
    )
    p.add_argument("--force", action="store_true", help="run even if dependencies do not hold")
    p.add_argument("--no-source", action="store_true", help="status without asking the source")
    p.set_defaults(func=cmd_sync)

    d = sub.add_parser("demo-source", help="create the demo customer_history source database")
    d.add_argument(
        "--url",
        type=_source_url,
        help="SQLAlchemy URL (default: sqlite $ECM_DATA_DIR/customer_history.sqlite)",
    )
    d.add_argument("--rows", type=_int_between(0, 100_000_000), default=20_000)
    d.add_argument("--seed", type=_int_between(0, 2**32 - 1), default=7)
    d.add_argument("--keep", action="store_true", help="keep the existing table")
    d.add_argument("--simulate-writes", action="store_true", help="keep writing afterwards")
    d.add_argument(
        "--seconds",
        type=_float_between(0, 7 * 86400),
        default=30,
        help="how long --simulate-writes runs",
    )
    d.add_argument(
        "--adversarial",
        action="store_true",
        help="equal stamps, long transactions, skewed clock, soft and hard deletes",
    )
    d.add_argument("--skew-seconds", type=_finite_between(-86400, 86400), default=180)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo_source)
