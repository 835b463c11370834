"""Backfill modes that publish nothing consumers read: dry_run, compare_only and shadow.

A backfill is planned like a release (spec section 19): before replacing history an operator
can compute and judge it (dry_run), see exactly what it would change (compare_only), or keep
a full copy beside the published data to diff at leisure (shadow). All three stage and check
the rows exactly like a publish (contract casts, owned boundary, checksums), diff them per
partition against what consumers read today, and record the verdict in the run manifest,
which ends VALIDATED (dry_run, compare_only) or SHADOWED. Nothing in the consumer schemas,
the quarantine or the version ledger is touched; shadow writes only `ecm_shadow.<dataset>`.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from ecm_assets.adapters.backends import WarehouseConnection, as_connection
from ecm_assets.adapters.warehouse import owned_filter, owned_params, quote_ident
from ecm_assets.contracts.dataset import PROVENANCE_COLUMNS, DatasetContract, partition_key
from ecm_assets.manifest.ledger import ensure_ledger, mark_failed, now, transition
from ecm_assets.manifest.states import RunStatus
from ecm_assets.publish.protocol import (
    PublishError,
    PublishRequest,
    _check_owned_boundary,
    _ddl_columns,
    _ensure_running_manifest,
    _format_checksum,
    _stage_judged,
    _stage_rejects,
    business_checksum_sql,
    contract_typed,
    partition_checksums,
    published_table_exists,
)
from ecm_assets.publish.staging import staging_table_name
from ecm_assets.publish.versions import closed_partitions

#: Schema of shadow outputs: same table names and columns as the published ones.
SHADOW_SCHEMA = "ecm_shadow"
NON_PUBLISHING_MODES = ("dry_run", "compare_only", "shadow")


@dataclass(frozen=True)
class PartitionDiff:
    """How one partition's staged rows differ from the rows consumers read now."""

    partition: date
    staged_rows: int
    published_rows: int
    added: int  # business keys only in the staged rows
    removed: int  # business keys only in the published rows
    changed: int  # same business key, different business columns
    unchanged: int
    staged_checksum: str
    published_checksum: str | None
    #: Sum of each numeric business column, published -> staged, where it moved.
    metric_deltas: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.staged_checksum == self.published_checksum

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": partition_key(self.partition),
            "staged_rows": self.staged_rows,
            "published_rows": self.published_rows,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "identical": self.identical,
            "staged_checksum": self.staged_checksum,
            "published_checksum": self.published_checksum,
            "metric_deltas": {k: list(v) for k, v in self.metric_deltas.items()},
        }


@dataclass(frozen=True)
class EvaluationResult:
    mode: str
    status: RunStatus
    diffs: tuple[PartitionDiff, ...]
    quarantined_rows: int
    business_checksum: str
    #: Closed partitions this output would change: a real publish needs a restatement.
    closed_changed: tuple[date, ...] = ()
    shadow_table: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": str(self.status),
            "business_checksum": self.business_checksum,
            "quarantined_rows": self.quarantined_rows,
            "partitions": [d.to_json() for d in self.diffs],
            "changed_partitions": [
                partition_key(d.partition) for d in self.diffs if not d.identical
            ],
            "closed_partitions_changed": [partition_key(d) for d in self.closed_changed],
            "shadow_table": self.shadow_table,
        }


def diff_against_published(
    conn: duckdb.DuckDBPyConnection,
    contract: DatasetContract,
    staging: str,
    owned: list[date],
    staged: dict[date, tuple[int, str]],
    *,
    published_rows: str | None = None,
) -> list[PartitionDiff]:
    """Per owned partition: rows added, removed and changed by business key, and metric moves.

    DuckDB SQL on `conn`. `published_rows` names a relation there that already holds the
    published rows of the owned partitions (a copy read from another backend); without it
    the published table on `conn` is read."""
    published: dict[date, tuple[int, str]] = {}
    by_key: dict[date, tuple[int, int, int, int]] = {}
    deltas: dict[date, dict[str, tuple[float, float]]] = {}
    pcol = quote_ident(contract.partition_column)
    numeric = [
        c.name
        for c in contract.columns
        if c.sql_type.upper() in ("BIGINT", "INTEGER", "DOUBLE")
        and c.name not in contract.business_key
    ]
    table = published_rows or contract.table
    if published_rows is not None or published_table_exists(conn, contract):
        if published_rows is None:
            where = f"WHERE {owned_filter(pcol, contract.partition_sql_type)}"
            params = owned_params(owned)
        else:
            where, params = "", []
        sql = business_checksum_sql(contract, table, where, by_partition=True)
        for part, count, first, second in conn.execute(sql, params).fetchall():
            published[contract.as_partition(part)] = (count, _format_checksum(count, first, second))
        key = " AND ".join(
            f"s.{quote_ident(k)} = p.{quote_ident(k)}" for k in contract.business_key
        )
        cols = ", ".join(quote_ident(c) for c in contract.column_names)
        sql = f"""
            WITH s AS (SELECT *, hash({cols}) AS __h FROM {staging}),
                 p AS (SELECT *, hash({cols}) AS __h FROM {table} {where})
            SELECT coalesce(s.{pcol}, p.{pcol}) AS part,
                   count(*) FILTER (WHERE p.__h IS NULL) AS added,
                   count(*) FILTER (WHERE s.__h IS NULL) AS removed,
                   count(*) FILTER (WHERE s.__h <> p.__h) AS changed,
                   count(*) FILTER (WHERE s.__h = p.__h) AS unchanged
            FROM s FULL OUTER JOIN p ON {key}
            GROUP BY 1"""
        for part, added, removed, changed, unchanged in conn.execute(sql, params).fetchall():
            by_key[part] = (added, removed, changed, unchanged)
        if numeric:
            sums = ", ".join(f"sum({quote_ident(c)})::DOUBLE" for c in numeric)
            new = {
                r[0]: r[1:]
                for r in conn.execute(f"SELECT {pcol}, {sums} FROM {staging} GROUP BY 1").fetchall()
            }
            old = {
                r[0]: r[1:]
                for r in conn.execute(
                    f"SELECT {pcol}, {sums} FROM {table} {where} GROUP BY 1", params
                ).fetchall()
            }
            nothing = (None,) * len(numeric)
            for part in set(new) | set(old):
                pairs = zip(numeric, old.get(part, nothing), new.get(part, nothing), strict=True)
                deltas[part] = {
                    name: (float(before or 0.0), float(after or 0.0))
                    for name, before, after in pairs
                    if (before or 0.0) != (after or 0.0)
                }
    out = []
    for d in owned:
        rows, checksum = staged.get(d, (0, None))
        if checksum is None:
            checksum = "empty"
        before = published.get(d)
        added, removed, changed, unchanged = by_key.get(d, (rows, 0, 0, 0))
        out.append(
            PartitionDiff(
                partition=d,
                staged_rows=rows,
                published_rows=before[0] if before else 0,
                added=added,
                removed=removed,
                changed=changed,
                unchanged=unchanged,
                staged_checksum=checksum,
                published_checksum=before[1] if before else None,
                metric_deltas=deltas.get(d, {}),
            )
        )
    return out


def _published_copy(
    conn: WarehouseConnection, judge: duckdb.DuckDBPyConnection, contract: DatasetContract, owned
) -> str | None:
    """The published rows of the owned partitions, read from a non-DuckDB backend as Arrow
    into the in-process DuckDB that judges the run; None when nothing was published yet."""
    if not published_table_exists(conn, contract):
        return None
    pcol = quote_ident(contract.partition_column)
    rows = conn.arrow(
        f"SELECT * FROM {contract.table} WHERE "
        f"{conn.dialect.owned_filter(pcol, contract.partition_sql_type)}",
        conn.dialect.owned_params(owned),
    )
    judge.register("__ecm_published_rows", rows)
    judge.execute(
        "CREATE OR REPLACE TEMP VIEW __ecm_published AS SELECT * FROM "
        + contract_typed(contract, "__ecm_published_rows")
    )
    return "__ecm_published"


def _write_shadow(
    conn: WarehouseConnection, contract: DatasetContract, staging: str, owned: list[date]
) -> str:
    """Replace the owned partitions of the shadow table (in the caller's transaction)."""
    shadow = replace(contract, schema=SHADOW_SCHEMA)
    ddl = _ddl_columns(shadow, None if conn.kind == "duckdb" else conn.dialect)
    with conn.ddl_lock():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SHADOW_SCHEMA)}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {shadow.table} ({', '.join(ddl)})")
    pcol = quote_ident(contract.partition_column)
    names = ", ".join(
        quote_ident(c) for c in [*contract.column_names, *(n for n, _ in PROVENANCE_COLUMNS)]
    )
    conn.execute(
        f"DELETE FROM {shadow.table} WHERE {conn.dialect.owned_filter(pcol)}",
        conn.dialect.owned_params(owned),
    )
    conn.execute(f"INSERT INTO {shadow.table} ({names}) SELECT {names} FROM {staging}")
    return f"{SHADOW_SCHEMA}.{contract.name}"


def evaluate_without_publishing(conn: Any, request: PublishRequest) -> EvaluationResult:
    """Stage and check like a publish, diff against what is published, write no consumer data.

    Blocked partitions (FAIL_PARTITION) are judged but neither diffed nor shadowed, exactly
    as a publish would leave them.
    """
    if request.mode not in NON_PUBLISHING_MODES:
        raise PublishError(f"mode {request.mode!r} publishes; use publish_partitions")
    started = time.perf_counter()
    contract = request.contract
    asset, run_id = contract.name, request.run_id
    owned = sorted(d for d in request.owned_partitions if d not in request.blocked)
    if not owned:
        raise PublishError(f"dataset {asset}: every owned partition is blocked; nothing to judge")
    request = replace(request, owned_partitions=tuple(owned))
    rejects = request.rejects
    if rejects is not None and len(rejects):
        days = pd.Series(contract.values_of(rejects["partition_date"]), dtype=object)
        request = replace(request, rejects=rejects[days.isin(set(owned)).to_numpy()])
    rejected = _stage_rejects(request)  # the same boundary check a publish makes
    conn = as_connection(conn)
    ensure_ledger(conn)
    _ensure_running_manifest(conn, request)
    staging = conn.dialect.temp_table(staging_table_name(contract, run_id) + "__" + request.mode)
    in_transaction = False
    local = ExitStack()
    try:
        judge, judged = _stage_judged(conn, replace(request, durable_staging=False), staging, local)
        transition(conn, run_id, asset, RunStatus.VALIDATING)
        _check_owned_boundary(judge, request, judged)
        per_partition, checksum = partition_checksums(judge, contract, judged)
        published_rows = (
            None if conn.kind == "duckdb" else _published_copy(conn, judge, contract, owned)
        )
        diffs = diff_against_published(
            judge, contract, judged, owned, per_partition, published_rows=published_rows
        )
        closed = (
            set(closed_partitions(conn, asset, contract.timezone))
            if contract.publish_mode == "versioned"
            else set()
        )
        closed_changed = tuple(
            d.partition for d in diffs if d.partition in closed and not d.identical
        )
        shadow_table = None
        status = RunStatus.SHADOWED if request.mode == "shadow" else RunStatus.VALIDATED
        conn.begin()
        in_transaction = True
        if request.mode == "shadow":
            shadow_table = _write_shadow(conn, contract, staging, owned)
        result = EvaluationResult(
            mode=request.mode,
            status=status,
            diffs=tuple(diffs),
            quarantined_rows=0 if rejected is None else len(rejected),
            business_checksum=checksum,
            closed_changed=closed_changed,
            shadow_table=shadow_table,
        )
        extra: dict[str, Any] = {}
        if request.quality is not None:
            extra["quality"] = request.quality
        if request.reconciliation is not None:
            extra["reconciliation"] = request.reconciliation
        changed = sum(not d.identical for d in diffs)
        transition(
            conn,
            run_id,
            asset,
            status,
            detail=f"{request.mode}: {changed} of {len(diffs)} partitions would change"
            + (f"; written to {shadow_table}" if shadow_table else "; nothing published"),
            finished_at=now(),
            outputs={
                **result.to_json(),
                "blocked_partitions": {
                    partition_key(d): w for d, w in sorted(request.blocked.items())
                },
            },
            **extra,
        )
        conn.commit()
        in_transaction = False
    except BaseException as exc:
        if in_transaction:
            conn.rollback()
        mark_failed(conn, run_id, asset, exc)
        raise
    finally:
        local.close()
        conn.execute(f"DROP TABLE IF EXISTS {staging}")
    return replace(result, seconds=time.perf_counter() - started)
