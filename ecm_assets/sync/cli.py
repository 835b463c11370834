"""`ecm sync ...` and `ecm demo-source`: the sync commands, registered by ecm_assets.cli."""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path

from ecm_assets.sync.spec import SHIPPED_JOBS_DIR


def _jobs_dir(args: argparse.Namespace) -> Path:
    return Path(args.jobs_dir or os.environ.get("ECM_SYNC_JOBS_DIR") or SHIPPED_JOBS_DIR)


def _warehouse(args: argparse.Namespace) -> Path:
    from ecm_assets.location import default_warehouse

    return Path(args.warehouse) if args.warehouse else default_warehouse()


def cmd_sync(args: argparse.Namespace) -> int:
    from ecm_assets.sync.spec import find_spec, load_specs

    if args.action == "validate":
        specs = load_specs(_jobs_dir(args))
        for spec in specs:
            print(
                f"{spec.path}: {spec.job_id} ok ({spec.job_type}, {spec.partitioning.strategy} "
                f"x {len(spec.partitioning.partition_ids)})"
            )
        return 0
    if args.action == "status":
        from ecm_assets.sync.status import job_status

        specs = [find_spec(_jobs_dir(args), args.job)] if args.job else load_specs(_jobs_dir(args))
        rows = [
            r
            for s in specs
            for r in job_status(s, _warehouse(args), with_source=not args.no_source)
        ]
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
        _warehouse(args),
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
    from ecm_assets.location import default_data_dir as data_dir
    from ecm_assets.sync.demo_source import create_source, write

    url = args.url or f"sqlite:///{data_dir() / 'customer_history.sqlite'}"
    if not args.keep:
        rows = create_source(url, args.rows, seed=args.seed)
        print(f"created customer_history with {rows} rows at {url}")
    if args.simulate_writes:
        stats = write(
            url,
            args.seconds,
            seed=args.seed,
            adversarial=args.adversarial,
            skew=timedelta(seconds=args.skew_seconds),
        )
        print(f"wrote for {args.seconds:g}s: {stats.line()}")
    return 0


def add_sync_commands(sub: argparse._SubParsersAction) -> None:
    """Register `ecm sync` and `ecm demo-source` on the main parser."""
    p = sub.add_parser("sync", help="ECM sync jobs: status (per partition), run, validate")
    p.add_argument("action", choices=["status", "run", "validate"])
    p.add_argument("job", nargs="?", help="job id (default: every job for status)")
    p.add_argument(
        "--jobs-dir",
        help="directory of job specs (default: $ECM_SYNC_JOBS_DIR or the shipped jobs)",
    )
    p.add_argument("--warehouse", help="DuckDB file (default: $ECM_WAREHOUSE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--full",
        action="store_true",
        help="run as full_extraction (reconciles hard deletes and anything older than the overlap)",
    )
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
    p.add_argument("--force", action="store_true", help="run even if dependencies do not hold")
    p.add_argument("--no-source", action="store_true", help="status without asking the source")
    p.set_defaults(func=cmd_sync)

    d = sub.add_parser("demo-source", help="create the demo customer_history source database")
    d.add_argument(
        "--url", help="SQLAlchemy URL (default: sqlite $ECM_DATA_DIR/customer_history.sqlite)"
    )
    d.add_argument("--rows", type=int, default=20_000)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--keep", action="store_true", help="keep the existing table")
    d.add_argument("--simulate-writes", action="store_true", help="keep writing afterwards")
    d.add_argument("--seconds", type=float, default=30, help="how long --simulate-writes runs")
    d.add_argument(
        "--adversarial",
        action="store_true",
        help="equal stamps, long transactions, skewed clock, soft and hard deletes",
    )
    d.add_argument("--skew-seconds", type=float, default=180)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo_source)
