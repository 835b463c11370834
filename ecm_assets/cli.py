"""`ecm`: operator commands around the code location (demo data, warehouse summary)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from ecm_assets.adapters.warehouse import connect, quote_ident


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (YYYY-MM-DD)") from None


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


def warehouse_summary(database: Path) -> list[dict[str, object]]:
    """Partitions, rows and runs of every published table, read-only."""
    from ecm_assets.case_sla.datasets import DATASETS

    rows: list[dict[str, object]] = []
    with connect(database, read_only=True) as conn:
        tables = {
            (s, t)
            for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
            ).fetchall()
        }
        for dataset in DATASETS:
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
                    "first": first.isoformat() if first else None,
                    "last": last.isoformat() if last else None,
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
    from ecm_assets.definitions import warehouse_path

    database = Path(args.warehouse) if args.warehouse else warehouse_path()
    if not database.exists():
        print(f"warehouse {database} does not exist yet: run `make demo` first", file=sys.stderr)
        return 1
    rows = warehouse_summary(database)
    if args.json:
        print(json.dumps({"warehouse": str(database), "tables": rows}, indent=2))
        return 0
    print(f"warehouse: {database}")
    width = max(len(str(r["table"])) for r in rows)
    print(f"{'table':<{width}}  {'partitions':>10}  {'rows':>10}  range")
    for r in rows:
        span = f"{r.get('first')}..{r.get('last')}" if r.get("first") else ""
        print(f"{r['table']!s:<{width}}  {r['partitions']:>10}  {r['rows']:>10}  {span}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write deterministic demo landing + reference data")
    demo.add_argument("--start", type=_date, required=True, help="first business date")
    demo.add_argument("--end", type=_date, required=True, help="last business date (inclusive)")
    demo.add_argument("--out", required=True, help="data directory (landing/ and reference/)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--scale", type=float, default=1.0, help="cases per day x 3000 (175 ~ 1M rows/day)"
    )
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo_data)

    summary = sub.add_parser("summary", help="partitions and rows of every published table")
    summary.add_argument("--warehouse", help="DuckDB file (default: $ECM_WAREHOUSE)")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"ecm {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
