"""`ecm`: operator commands around a code location (any team's: -m, -f, -w, --definitions)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from ecm_assets.adapters.backends import is_postgres_url, open_warehouse
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.dataset import Dataset, DatasetContract, partition_key

# --------------------------------------------------------------------------- bad usage
# One mechanism for every command: argument types that refuse hostile values before a
# command runs, a parser that reports bad usage in one line, and one handler in main() that
# turns any error into one line on stderr (exit 2 for bad usage, 1 for anything else).

#: The longest value echoed back in an error line.
_ECHO_CHARS = 120


def one_line(text: object, limit: int = 400) -> str:
    """`text` as one short printable line: whitespace runs collapsed, control characters
    escaped, cut at `limit` characters."""
    flat = " ".join(str(text)[: limit * 2].split())
    flat = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _echo(text: str) -> str:
    return repr(one_line(text, _ECHO_CHARS))


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit 2, never a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not an ISO date (YYYY-MM-DD)") from None


def _position(contract: DatasetContract, key: str) -> object:
    """Where a partition key lies in its dataset's order: list keys in declared order (as
    Dagster ranges them), others by value."""
    value = contract.partition_value(key)
    return contract.static_keys.index(value) if contract.is_static else value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    """An int argument in [low, high]: no negative limits or 20-digit numbers reach SQL."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not between {low} and {high}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not a number") from None
        if not low < value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not in ({low:g}, {high:g}]")
        return value

    parse.__name__ = "number"
    return parse


def _text(max_chars: int, what: str) -> Callable[[str], str]:
    """Free text (a name, a note, a reason): one line, printable, at most `max_chars`, so
    it cannot break table output or bloat the ledger."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        if len(text) > max_chars:
            raise argparse.ArgumentTypeError(
                f"{what} has {len(text)} characters, more than {max_chars}"
            )
        if not text.isprintable():
            raise argparse.ArgumentTypeError(
                f"{what} {_echo(text)} holds a newline or control character; one line please"
            )
        return text.strip()

    parse.__name__ = what
    return parse


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _run_id(text: str) -> str:
    if not _RUN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a run id")
    return text


def _path(text: str) -> str:
    if not text or "\0" in text or len(text) > 4096:
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not a path")
    return text


def _url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not an http(s) URL")
    return text


_ACTOR = _text(64, "--by")
_NOTE = _text(1000, "note")
_CODE = _text(64, "code")
_VERSION = _int_between(1, 10**9)
#: DuckDB's file header: the magic bytes sit at offset 8.
_DUCKDB_MAGIC = b"DUCK"


def _connect(target: Path | str, **kwargs: object):
    """A connection to the warehouse a path or URL names (adapters/backends)."""
    return open_warehouse(target).connect(**kwargs)  # type: ignore[arg-type]


def existing_warehouse(path: Path | str) -> Path | str:
    """`path` if it is an existing DuckDB file, or a PostgreSQL URL whose server holds a
    warehouse: only a publish creates a warehouse, so every other command refuses a typo, a
    directory or a file that is not DuckDB's, untouched."""
    if is_postgres_url(path):
        warehouse = open_warehouse(path)
        if not warehouse.exists():
            raise LookupError(
                f"warehouse {warehouse.url} holds no published data (only a publish creates "
                "one; check --warehouse or $ECM_WAREHOUSE_URL)"
            )
        return str(path)
    path = Path(path)
    if not path.exists():
        raise LookupError(
            f"warehouse {path} does not exist (only a publish creates one; check --warehouse "
            "or run `make demo`)"
        )
    if not path.is_file():
        raise LookupError(f"warehouse {path} is not a file")
    try:
        with path.open("rb") as fh:
            header = fh.read(12)
    except OSError as exc:
        raise LookupError(f"warehouse {path} cannot be read: {exc.strerror}") from None
    if header[8:12] != _DUCKDB_MAGIC:
        raise LookupError(f"warehouse {path} is not a DuckDB database file")
    return path


_WAREHOUSE_HELP = (
    "DuckDB file or postgresql:// URL (default: the location's, else $ECM_WAREHOUSE_URL, "
    "then $ECM_WAREHOUSE)"
)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ecm_assets.demo.landing_generator import generate_demo_data

    summary = generate_demo_data(
        Path(args.out), args.start, args.end, seed=args.seed, scale=args.scale
    )
    if args.json:
        print(
            json.dumps(
                {
                    "out_dir": str(summary.out_dir),
                    "start": summary.start.isoformat(),
                    "end": summary.end.isoformat(),
                    "landing_files": summary.landing_files,
                    "events_written": summary.events_written,
                    "injected": summary.injected,
                },
                indent=2,
            )
        )
    else:
        print(
            f"wrote {summary.events_written} landing rows in {summary.landing_files} files for "
            f"{summary.start}..{summary.end} under {summary.out_dir}"
        )
        print("injected defects: " + ", ".join(f"{k}={v}" for k, v in summary.injected.items()))
    return 0


def warehouse_summary(
    database: Path | str, datasets: list[Dataset] | None = None
) -> list[dict[str, object]]:
    """Partitions, rows and runs of every published table of these datasets, read-only."""
    if datasets is None:
        from ecm_assets.case_sla.datasets import DATASETS

        datasets = list(DATASETS)
    rows: list[dict[str, object]] = []
    with _connect(database, read_only=True) as conn:
        tables = {
            (s, t)
            for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
        for dataset in datasets:
            c = dataset.contract
            if (c.schema, c.name) not in tables:
                rows.append({"table": f"{c.schema}.{c.name}", "partitions": 0, "rows": 0})
                continue
            pcol = quote_ident(c.partition_column)
            n_parts, n_rows, first, last, runs = conn.execute(
                f"SELECT count(DISTINCT {pcol}), count(*), min({pcol}), max({pcol}), "
                f"count(DISTINCT run_id) FROM {c.table}"
            ).fetchone()
            rows.append(
                {
                    "table": f"{c.schema}.{c.name}",
                    "partitions": n_parts,
                    "rows": n_rows,
                    "first": partition_key(c.as_partition(first)) if first is not None else None,
                    "last": partition_key(c.as_partition(last)) if last is not None else None,
                    "runs": runs,
                }
            )
        if ("ecm_quarantine", "rejected_rows") in tables:
            for asset, n, n_parts in conn.execute(
                "SELECT asset, count(*), count(DISTINCT partition_date) "
                'FROM "ecm_quarantine"."rejected_rows" GROUP BY 1 ORDER BY 1'
            ).fetchall():
                rows.append(
                    {
                        "table": f"ecm_quarantine.rejected_rows[{asset}]",
                        "partitions": n_parts,
                        "rows": n,
                    }
                )
    return rows


def cmd_summary(args: argparse.Namespace) -> int:
    database = _warehouse(args)
    rows = warehouse_summary(database, list(_datasets(args).values()))
    if args.json:
        print(json.dumps({"warehouse": open_warehouse(database).url, "tables": rows}, indent=2))
        return 0
    print(f"warehouse: {open_warehouse(database).url}")
    width = max(len(str(r["table"])) for r in rows)
    print(f"{'table':<{width}}  {'partitions':>10}  {'rows':>10}  range")
    for r in rows:
        span = f"{r.get('first')}..{r.get('last')}" if r.get("first") else ""
        print(f"{r['table']!s:<{width}}  {r['partitions']:>10}  {r['rows']:>10}  {span}")
    return 0


def _locations(args: argparse.Namespace) -> list:
    """The code locations the command serves (loaded once per command)."""
    from ecm_assets.operations.locations import load_locations

    if getattr(args, "_locations", None) is None:
        args._locations = load_locations(
            module=getattr(args, "module_name", None),
            file=getattr(args, "python_file", None),
            workspace=getattr(args, "workspace", None),
            definitions=getattr(args, "definitions", None),
            location=getattr(args, "location", None),
        )
    return args._locations


def _warehouse(args: argparse.Namespace) -> Path | str:
    """The existing warehouse the command reads or changes (existing_warehouse)."""
    return existing_warehouse(_warehouse_path(args))


def _warehouse_path(args: argparse.Namespace) -> Path | str:
    """--warehouse (a DuckDB path or a postgresql:// URL), else the one warehouse the
    location's IO manager publishes to."""
    if getattr(args, "warehouse", None):
        return args.warehouse if is_postgres_url(args.warehouse) else Path(args.warehouse)
    asset = getattr(args, "asset", None)
    locations = _locations(args)
    if asset:
        from ecm_assets.operations.locations import datasets_of

        found = datasets_of(locations).get(asset)
        if found is not None and found[0].warehouse is not None:
            return found[0].warehouse
    warehouses = {loc.warehouse for loc in locations if loc.warehouse is not None}
    if len(warehouses) > 1:
        raise LookupError(
            "the code locations publish to different warehouses "
            f"({', '.join(f'{loc.name}: {loc.warehouse}' for loc in locations)}); "
            "choose one with -l LOCATION or --warehouse"
        )
    if warehouses:
        return warehouses.pop()
    from ecm_assets.location import default_warehouse

    return default_warehouse()


def _datasets(args: argparse.Namespace) -> dict[str, Dataset]:
    from ecm_assets.operations.locations import datasets_of

    return {name: d for name, (_, d) in datasets_of(_locations(args)).items()}


def _dataset(args: argparse.Namespace, name: str) -> Dataset:
    datasets = _datasets(args)
    if name not in datasets:
        raise LookupError(
            f"unknown asset {name!r}; valid assets: {', '.join(sorted(datasets)) or '(none)'}"
        )
    return datasets[name]


def _emit(args: argparse.Namespace, payload: object, table: list[dict[str, object]]) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return
    if not table:
        print("(none)")
        return
    columns = list(table[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in table)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in table:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def cmd_manifest(args: argparse.Namespace) -> int:
    from ecm_assets.manifest.ledger import load_manifests, status_history

    _datasets(args)
    with _connect(_warehouse(args), read_only=True) as conn:
        manifests = load_manifests(conn, run_id=args.run_id, asset=args.asset)
        if args.run_id and not manifests:
            raise LookupError(f"no manifest recorded for run {args.run_id}")
        history = status_history(conn, args.run_id) if args.run_id else []
    if args.run_id and not args.json:
        for m in manifests:
            print(json.dumps(m.to_json(), indent=2, default=str))
        print("status history:")
        for asset, old, new, at, detail in history:
            print(f"  {at:%Y-%m-%d %H:%M:%S} {asset}: {old or '-'} -> {new} {detail or ''}")
        return 0
    payload = [m.to_json() for m in manifests]
    if args.run_id:
        payload = {"manifests": payload, "history": [list(h) for h in history]}
    table = [
        {
            "run_id": m.run_id,
            "asset": m.asset,
            "status": str(m.status),
            "mode": m.mode,
            "partitions": f"{m.output_boundary[0]}..{m.output_boundary[-1]}"
            if m.output_boundary
            else "",
            "checksum": (m.outputs or {}).get("business_checksum", ""),
            "planned_at": f"{m.planned_at:%Y-%m-%d %H:%M:%S}" if m.planned_at else "",
        }
        for m in manifests
    ]
    _emit(args, payload, table)
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    from ecm_assets.publish.versions import close_partition

    contract = _dataset(args, args.asset).contract
    partition = contract.partition_value(args.partition)
    with _connect(_warehouse(args)) as conn:
        close_partition(conn, contract, partition, actor=args.by, note=args.note)
    _emit(
        args,
        {"asset": contract.name, "partition": partition_key(partition), "closed": True},
        [{"asset": contract.name, "partition": partition_key(partition), "closed_by": args.by}],
    )
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from ecm_assets.publish.versions import list_versions

    contract = _dataset(args, args.asset).contract
    partition = contract.partition_value(args.partition) if args.partition else None
    with _connect(_warehouse(args), read_only=True) as conn:
        versions = list_versions(conn, contract.name, partition)
    rows = [
        {
            "partition": v.partition_date,
            "version": v.version,
            "status": v.status,
            "reason": v.reason,
            "prior": v.prior_version if v.prior_version is not None else "",
            "rows": v.rows,
            "checksum": v.business_checksum,
            "run_id": v.run_id,
            "created_at": f"{v.created_at:%Y-%m-%d %H:%M:%S}",
        }
        for v in versions
    ]
    _emit(args, rows, rows)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from ecm_assets.publish.versions import diff_versions

    contract = _dataset(args, args.asset).contract
    partition = contract.partition_value(args.partition)
    with _connect(_warehouse(args), read_only=True) as conn:
        diff = diff_versions(conn, contract, partition, args.old, args.new)
    rows = diff.astype(object).where(diff.notna(), None).to_dict(orient="records")
    _emit(args, rows, rows)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from ecm_assets.publish.versions import rollback

    contract = _dataset(args, args.asset).contract
    partition = contract.partition_value(args.partition)
    with _connect(_warehouse(args)) as conn:
        old, new = rollback(conn, contract, partition, args.to, actor=args.by, reason=args.reason)
    row = {
        "asset": contract.name,
        "partition": partition_key(partition),
        "from_version": old,
        "to_version": new,
    }
    _emit(args, row, [row])
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from ecm_assets.manifest.ledger import load_manifests
    from ecm_assets.publish.recovery import recover

    _datasets(args)
    with _connect(_warehouse(args)) as conn, ExitStack() as stack:
        results = recover(conn, run_id=args.run_id, force=args.force)
        rows = [
            {
                "run_id": r.run_id,
                "asset": r.asset,
                "was": r.previous_status,
                "decision": str(r.decision),
                "evidence": r.evidence,
            }
            for r in results
        ]
        if os.environ.get("DAGSTER_HOME"):
            # Dagster's side of a dead run: its STARTED status and its pool slot, then the
            # materializations the ledger's outbox still owes the instance.
            import dagster as dg

            from ecm_assets.operations.runs import settle_dagster_runs
            from ecm_assets.orchestration.factory import pool_for
            from ecm_assets.publish.outbox import deliver_owed

            instance = stack.enter_context(dg.DagsterInstance.get())
            settled = settle_dagster_runs(
                conn,
                instance,
                run_id=args.run_id,
                force=args.force,
                pool=pool_for(_warehouse(args)),
            )
            for s in settled:
                rows.append(
                    {
                        "run_id": s.run_id,
                        "asset": "(dagster run)",
                        "was": s.was,
                        "decision": s.decision,
                        "evidence": s.evidence,
                    }
                )
            for d in deliver_owed(conn, instance):
                rows.append(
                    {
                        "run_id": d.run_id,
                        "asset": d.asset,
                        "was": "PUBLISHED",
                        "decision": "DAGSTER_EVENT_REPORTED" if d.reported else "OUTBOX_SETTLED",
                        "evidence": f"reported {list(d.reported)}, already in Dagster "
                        f"{list(d.already_in_dagster)}, superseded {list(d.superseded)}",
                    }
                )
        # An unknown run id is refused as `ecm manifest` refuses it (after Dagster's side:
        # a run killed before it planned a manifest still has a run to settle there).
        if args.run_id and not rows and not load_manifests(conn, run_id=args.run_id):
            raise LookupError(f"no manifest recorded for run {args.run_id}")
    _emit(args, rows, rows)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ecm_assets.location import default_data_dir
    from ecm_assets.operations.replay import replay_run

    datasets = _datasets(args)
    landing_root = reference_root = None
    if args.data:
        landing_root, reference_root = Path(args.data) / "landing", Path(args.data) / "reference"
    else:
        for loc in _locations(args):
            landing_root = landing_root or loc.landing_root
            reference_root = reference_root or loc.reference_root
    result = replay_run(
        _warehouse(args),
        datasets,
        args.run_id,
        asset=args.asset,
        landing_root=landing_root or default_data_dir() / "landing",
        reference_root=reference_root or default_data_dir() / "reference",
    )
    row = {
        "run_id": result.run_id,
        "asset": result.asset,
        "partitions": f"{result.partitions[0]}..{result.partitions[-1]}",
        "landing_files": result.landing_files,
        "rows": result.rows,
        "original_checksum": result.original_checksum,
        "replay_checksum": result.replay_checksum,
        "matches": result.matches,
        "comparable": result.comparable,
    }
    _emit(args, row, [row])
    return 0 if result.matches else 3


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Rows the gate or the parser rejected for one partition, with the rule that caught them:
    those of the current version (or of --run), judged with the rows readers see."""
    from ecm_assets.publish.quarantine import quarantine_rows

    contract = _dataset(args, args.asset).contract
    partition = contract.partition_value(args.partition)
    with _connect(_warehouse(args), read_only=True) as conn:
        rows = quarantine_rows(
            conn,
            contract,
            partition,
            blocked=args.blocked,
            run_id=args.run,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    by_reason: dict[str, int] = {}
    for r in rows:
        by_reason[str(r["reason"])] = by_reason.get(str(r["reason"]), 0) + 1
    print(
        f"{contract.name} {partition_key(partition)}: {len(rows)} quarantined row(s)"
        + (f" (first {args.limit})" if len(rows) == args.limit else "")
        + (": " + ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())) if rows else "")
    )
    table_rows = [
        {
            "run_id": str(r["run_id"])[:8],
            "source": f"{r['source_file']}:{r['source_line']}" if r["source_file"] else "",
            "reason": r["reason"],
            "column": r["column_name"] or "",
            "failure_case": str(r["failure_case"] or "")[:40],
        }
        for r in rows
    ]
    if table_rows:
        _emit(args, rows, table_rows)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """Held runs: list them, approve one (publish exactly its rows) or reject it."""
    from ecm_assets.operations.review import approve, list_held, reject

    _datasets(args)
    if args.action == "list":
        with _connect(_warehouse(args), read_only=True) as conn:
            held = list_held(conn, args.asset)
        payload = [h.to_json() for h in held]
        table = [
            {
                "run_id": h.run_id,
                "asset": h.asset,
                "partitions": ",".join(h.partitions),
                "rows": h.rows,
                "reasons": "; ".join(h.reasons)[:80],
            }
            for h in held
        ]
        _emit(args, payload, table)
        return 0
    if not args.run_id:
        raise ValueError(f"ecm review {args.action} needs a RUN_ID")
    if not args.note:
        raise ValueError(f"ecm review {args.action} needs --note saying why")
    with _connect(_warehouse(args)) as conn, ExitStack() as stack:
        if args.action == "approve":
            # Approval publishes outside any Dagster run: report it to the instance so the
            # UI shows the partitions materialized and materialization sensors fire.
            instance = None
            if os.environ.get("DAGSTER_HOME"):
                import dagster as dg

                instance = stack.enter_context(dg.DagsterInstance.get())
            result = approve(
                conn,
                args.run_id,
                actor=args.by,
                note=args.note,
                asset=args.asset,
                instance=instance,
            )
            row = {
                "run_id": args.run_id,
                "decision": "APPROVED",
                "published_rows": result.rows,
                "business_checksum": result.business_checksum,
                "versions": result.versions or "",
            }
        else:
            manifest = reject(conn, args.run_id, actor=args.by, note=args.note, asset=args.asset)
            row = {"run_id": args.run_id, "decision": "REJECTED", "status": str(manifest.status)}
    _emit(args, row, [row])
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Like `dagster asset materialize`, plus the run tags that steer a run's lifecycle."""
    import dagster as dg

    from ecm_assets.location import resolve_warehouse
    from ecm_assets.operations.locations import datasets_of
    from ecm_assets.orchestration.factory import (
        BACKFILL_MODE_TAG,
        IO_MANAGER_KEY,
        REASON_TAG,
        REPLAY_TAG,
        RESTATEMENT_TAG,
    )
    from ecm_assets.publish.io_manager import DuckDBPublishIOManager

    found = datasets_of(_locations(args))
    selected = [a.strip() for a in args.select.split(",") if a.strip()]
    for name in selected:
        if name not in found:
            raise LookupError(
                f"unknown asset {name!r}; valid assets: {', '.join(sorted(found)) or '(none)'}"
            )
    homes = {found[name][0].name for name in selected}
    if len(homes) > 1:
        raise ValueError(f"--select spans code locations {sorted(homes)}; select from one")
    location = found[selected[0]][0]
    defs = location.defs
    resources = dict(defs.resources or {})
    if args.warehouse:
        io = resources.get(IO_MANAGER_KEY)
        resources[IO_MANAGER_KEY] = DuckDBPublishIOManager(
            database=resolve_warehouse(args.warehouse),
            durable_staging=bool(getattr(io, "durable_staging", False)),
        )

    tags: dict[str, str] = {}
    for item in args.tag or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--tag {item!r} is not KEY=VALUE")
        tags[key] = value
    for key, value in (
        (RESTATEMENT_TAG, args.restatement_reason),
        (REASON_TAG, args.reason),
        (REPLAY_TAG, args.replay_of),
        (BACKFILL_MODE_TAG, args.mode),
    ):
        if value:
            tags[key] = value
    partition_key = None
    if args.partition_range:
        first, sep, last = args.partition_range.partition("...")
        if not sep:
            raise ValueError(f"--partition-range {args.partition_range!r} is not START...END")
        for name in selected:
            contract = found[name][1].contract
            if _position(contract, first) > _position(contract, last):
                raise ValueError(f"--partition-range {args.partition_range!r}: start after end")
        tags["dagster/asset_partition_range_start"] = first
        tags["dagster/asset_partition_range_end"] = last
    else:
        partition_key = args.partition
        for name in selected:
            found[name][1].contract.partition_value(partition_key)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    if instance is not None:
        from ecm_assets.operations.runs import refuse_dead_pool_holders

        refuse_dead_pool_holders(instance, resources[IO_MANAGER_KEY].database)
    result = dg.materialize(
        list(defs.assets or []),
        selection=selected,
        resources=resources,
        partition_key=partition_key,
        tags=tags,
        instance=instance,
        raise_on_error=False,
    )
    row = {"run_id": result.run_id, "success": result.success, "tags": tags}
    _emit(args, row, [{"run_id": result.run_id, "success": result.success}])
    return 0 if result.success else 1


def cmd_impact(args: argparse.Namespace) -> int:
    """Assets and partition ranges a change reaches; with --launch, one backfill of them all."""
    from ecm_assets.operations.graphql import launch_partition_backfill
    from ecm_assets.operations.impact import plan_impact
    from ecm_assets.orchestration.factory import (
        BACKFILL_MODE_TAG,
        BACKFILL_MODES,
        REASON_TAG,
        RESTATEMENT_TAG,
        TRIGGER_TAG,
    )

    if args.mode not in BACKFILL_MODES:
        raise ValueError(f"--mode {args.mode!r} is not one of {', '.join(BACKFILL_MODES)}")
    if args.mode == "restatement" and not args.restatement_reason:
        raise ValueError("--mode restatement needs --restatement-reason CODE")
    last = args.to or args.first
    # The last partition that exists: yesterday UTC, a business day being complete.
    until = args.until or datetime.now(UTC).date() - timedelta(days=1)
    plan = plan_impact(
        list(_datasets(args).values()),
        args.asset,
        args.first,
        last,
        until=until,
    )
    total = sum(e.partitions for e in plan)
    backfill_id = None
    tags: dict[str, str] = {}
    if args.launch:
        tags = {BACKFILL_MODE_TAG: args.mode, TRIGGER_TAG: "impact"}
        if args.reason:
            tags[REASON_TAG] = args.reason
        if args.restatement_reason:
            tags[RESTATEMENT_TAG] = args.restatement_reason
        ranges = {e.asset: (e.first_key, e.last_key) for e in plan}
        backfill_id = launch_partition_backfill(args.url, ranges, tags)
    payload = {
        "asset": args.asset,
        "first": args.first.isoformat(),
        "last": last.isoformat(),
        "until": until.isoformat(),
        "impact": [e.to_json() for e in plan],
        "assets": len(plan),
        "partitions": total,
        "backfill_id": backfill_id,
        "tags": tags,
    }
    table = [
        {
            "asset": e.asset,
            "first": e.first_key,
            "last": e.last_key,
            "partitions": e.partitions,
            "why": e.why,
        }
        for e in plan
    ]
    _emit(args, payload, table)
    if not args.json:
        print(f"total: {len(plan)} assets, {total} partitions (existing through {until})")
        if backfill_id:
            print(f"launched backfill {backfill_id} at {args.url} with tags {tags}")
    return 0


def _location_options() -> argparse.ArgumentParser:
    """How a command finds its code location: the same options as `dagster`."""
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_argument_group(
        "code location (default: [tool.dagster] of ./pyproject.toml, else ecm_assets.definitions)"
    )
    where.add_argument("-m", "--module-name", help="Python module with the Definitions")
    where.add_argument("-f", "--python-file", help="Python file with the Definitions")
    where.add_argument("-w", "--workspace", help="workspace.yaml (every location in it)")
    where.add_argument("-l", "--location", help="the one location of the workspace to use")
    where.add_argument(
        "--definitions", help="MODULE:ATTRIBUTE or FILE.py:ATTRIBUTE of a Definitions object"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ecm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    location = _location_options()

    demo = sub.add_parser("demo-data", help="write deterministic demo landing + reference data")
    demo.add_argument("--start", type=_date, required=True, help="first business date")
    demo.add_argument("--end", type=_date, required=True, help="last business date (inclusive)")
    demo.add_argument(
        "--out", type=_path, required=True, help="data directory (landing/ and reference/)"
    )
    demo.add_argument("--seed", type=_int_between(0, 2**32 - 1), default=7)
    demo.add_argument(
        "--scale",
        type=_float_between(0, 1000),
        default=1.0,
        help="cases per day x 3000 (175 ~ 1M rows/day)",
    )
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo_data)

    summary = sub.add_parser(
        "summary", help="partitions and rows of every published table", parents=[location]
    )
    summary.add_argument("--warehouse", type=_path, help=_WAREHOUSE_HELP)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=cmd_summary)

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, parents=[location])
        p.add_argument("--warehouse", type=_path, help=_WAREHOUSE_HELP)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    p = command("materialize", cmd_materialize, "materialize assets with lifecycle run tags")
    p.add_argument(
        "--select", type=_text(2000, "--select"), required=True, help="comma-separated asset keys"
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--partition")
    target.add_argument("--partition-range", help="START...END (one run owns the range)")
    p.add_argument(
        "--restatement-reason", type=_CODE, help="change a closed period (SOURCE_CORRECTION...)"
    )
    p.add_argument(
        "--reason", type=_CODE, help="reason code of new versions (LATE_DATA, BUG_FIX...)"
    )
    p.add_argument(
        "--replay-of", type=_run_id, help="recompute from the input boundary of this run"
    )
    p.add_argument(
        "--mode",
        choices=("replace", "restatement", "dry_run", "shadow", "compare_only"),
        help="backfill mode (docs/runbook.md); default replace",
    )
    p.add_argument(
        "--tag", type=_text(300, "--tag"), action="append", help="extra run tag KEY=VALUE"
    )
    p = command("manifest", cmd_manifest, "list run manifests, or show one run's manifest")
    p.add_argument("run_id", type=_run_id, nargs="?")
    p.add_argument("--asset")
    p = command("close", cmd_close, "close a published partition of a versioned asset")
    p.add_argument("asset")
    p.add_argument("partition")
    p.add_argument(
        "--by", type=_ACTOR, default=os.environ.get("USER", "operator"), help="who closes it"
    )
    p.add_argument("--note", type=_NOTE)
    p = command("versions", cmd_versions, "list the versions of a versioned asset")
    p.add_argument("asset")
    p.add_argument("partition", nargs="?")
    p = command("diff", cmd_diff, "rows and metrics that differ between two versions")
    p.add_argument("asset")
    p.add_argument("partition")
    p.add_argument("old", type=_VERSION)
    p.add_argument("new", type=_VERSION)
    p = command("rollback", cmd_rollback, "move a partition's current pointer back")
    p.add_argument("asset")
    p.add_argument("partition")
    p.add_argument("--to", type=_VERSION, required=True, help="version to make current")
    p.add_argument("--reason", type=_NOTE, required=True)
    p.add_argument("--by", type=_ACTOR, default=os.environ.get("USER", "operator"))
    p = command("recover", cmd_recover, "settle runs a dead process left in flight")
    p.add_argument("run_id", type=_run_id, nargs="?")
    p.add_argument(
        "--force", action="store_true", help="treat a RUNNING run as dead even if its pid is alive"
    )
    p = command("quarantine", cmd_quarantine, "rows quarantined for one partition, with reasons")
    p.add_argument("asset")
    p.add_argument("partition")
    p.add_argument("--limit", type=_int_between(1, 1_000_000), default=1000)
    p.add_argument(
        "--blocked", action="store_true", help="rows of partitions the quality gate blocked"
    )
    p.add_argument(
        "--run", type=_run_id, help="the rows one run judged (default: the current version's)"
    )
    p = command("review", cmd_review, "runs held for manual review: list, approve, reject")
    p.add_argument("action", choices=["list", "approve", "reject"])
    p.add_argument("run_id", type=_run_id, nargs="?")
    p.add_argument("--asset")
    p.add_argument("--note", type=_NOTE, help="why (required to approve or reject)")
    p.add_argument(
        "--by", type=_ACTOR, default=os.environ.get("USER", "operator"), help="who decides"
    )
    p = command("impact", cmd_impact, "partitions a change reaches downstream; --launch backfills")
    p.add_argument("asset", help="the changed asset")
    p.add_argument("--from", dest="first", type=_date, required=True, help="first changed date")
    p.add_argument("--to", type=_date, help="last changed date (default: --from)")
    p.add_argument("--until", type=_date, help="last existing business date (default: yesterday)")
    p.add_argument("--launch", action="store_true", help="launch one backfill of the impact")
    p.add_argument(
        "--url", type=_url, default="http://127.0.0.1:3000", help="Dagster webserver URL"
    )
    p.add_argument(
        "--mode", default="replace", help="backfill mode: replace (default), restatement, ..."
    )
    p.add_argument(
        "--reason", type=_CODE, help="reason code of new versions (LATE_DATA, BUG_FIX...)"
    )
    p.add_argument("--restatement-reason", type=_CODE, help="required by --mode restatement")
    p = command("replay", cmd_replay, "recompute a run from its recorded input boundary")
    p.add_argument("run_id", type=_run_id)
    p.add_argument("--asset")
    p.add_argument("--data", type=_path, help="data directory (default: $ECM_DATA_DIR)")
    from ecm_assets.sync.cli import add_sync_commands

    add_sync_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr: exit 2 for bad usage and
    refused input, 1 for anything unexpected (ECM_DEBUG=1 shows its traceback)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage, already reported in one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Dagster's preview/beta notes are not errors
            return int(args.func(args))
    except KeyboardInterrupt:
        print(f"ecm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("ECM_DEBUG") == "1":
            raise
        usage = isinstance(exc, _USAGE_ERRORS) or type(exc).__module__.startswith(
            ("duckdb", "psycopg", "dagster")
        )
        what = one_line(exc) if usage else f"{type(exc).__name__}: {one_line(exc)}"
        print(f"ecm {args.command}: {what or type(exc).__name__}", file=sys.stderr)
        return 2 if usage else 1


#: Errors that mean the command was asked something it refuses (bad usage, unknown names,
#: missing or locked files, refused state changes); they exit 2.
_USAGE_ERRORS = (ValueError, LookupError, OSError, RuntimeError, TypeError)


if __name__ == "__main__":
    sys.exit(main())
