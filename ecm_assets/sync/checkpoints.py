"""Checkpoints of sync runs in the warehouse ledger: one row per (job, run, partition).

The row is the seed's checkpoint object (job_id, run_id, partition, offset, timestamp,
status) plus the last cursor staged. It is written in the same warehouse transaction as the
rows it describes (a staged page, a partition's merge), so after a kill the checkpoint and
the warehouse always agree. A checkpoint only moves forward: a write that would lower its
offset, cursor or status raises instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ecm_assets.manifest.ledger import LEDGER_SCHEMA, now
from ecm_assets.sync.backend import ensure_schema, in_list, is_duckdb, table_exists

CHECKPOINT_TABLE = f'"{LEDGER_SCHEMA}"."sync_checkpoint"'
#: in_progress: pages are being staged; staged: extraction and validation input complete;
#: completed: merged into the store (the partition is published for this run).
STATUS_ORDER = {"in_progress": 0, "staged": 1, "completed": 2}


class CheckpointRegressionError(RuntimeError):
    """A checkpoint write would move a partition's progress backwards."""


@dataclass(frozen=True)
class Checkpoint:
    job_id: str
    run_id: str
    partition: str
    offset: int
    last_cursor: tuple[Any, Any] | None
    status: str
    rows_merged: int
    timestamp: datetime
    boundary: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "partition": self.partition,
            "offset": self.offset,
            "last_cursor": list(self.last_cursor) if self.last_cursor else None,
            "status": self.status,
            "rows_merged": self.rows_merged,
            "timestamp": self.timestamp.isoformat(),
            "boundary": self.boundary,
        }


def ensure_checkpoints(conn: Any) -> None:
    """The checkpoint table; on a server, DDL only when it is missing, under the DDL lock
    (a no-op CREATE ... IF NOT EXISTS still races with a concurrent one)."""
    if is_duckdb(conn):
        _create_checkpoints(conn)
        return
    if table_exists(conn, LEDGER_SCHEMA, "sync_checkpoint"):
        return
    with conn.ddl_lock():
        _create_checkpoints(conn)


def _create_checkpoints(conn: Any) -> None:
    ensure_schema(conn, LEDGER_SCHEMA)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (job_id VARCHAR NOT NULL, run_id VARCHAR "
        'NOT NULL, partition VARCHAR NOT NULL, "offset" BIGINT NOT NULL, last_cursor VARCHAR, '
        "status VARCHAR NOT NULL, rows_merged BIGINT NOT NULL DEFAULT 0, "
        '"timestamp" TIMESTAMPTZ NOT NULL, boundary VARCHAR, '
        "PRIMARY KEY (job_id, run_id, partition))"
    )


def _row(r: tuple) -> Checkpoint:
    cursor = json.loads(r[4]) if r[4] else None
    return Checkpoint(
        r[0],
        r[1],
        r[2],
        int(r[3]),
        tuple(cursor) if cursor else None,
        r[5],
        int(r[6]),
        r[7],
        json.loads(r[8]) if r[8] else None,
    )


def load_checkpoints(conn: Any, job_id: str, run_id: str | None = None) -> list[Checkpoint]:
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND "
        "table_name = 'sync_checkpoint'",
        [LEDGER_SCHEMA],
    ).fetchone()[0]
    if not exists:
        return []
    sql = (
        f'SELECT job_id, run_id, partition, "offset", last_cursor, status, rows_merged, '
        f'"timestamp", boundary FROM {CHECKPOINT_TABLE} WHERE job_id = ?'
    )
    params: list[Any] = [job_id]
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    return [
        _row(r) for r in conn.execute(sql + ' ORDER BY "timestamp", partition', params).fetchall()
    ]


def _cursor_key(cursor: tuple[Any, Any] | None) -> tuple:
    return () if cursor is None else (str(cursor[0]), cursor[1])


def start(
    conn: Any,
    job_id: str,
    run_id: str,
    partitions: list[str],
    boundary: dict[str, Any],
) -> None:
    """Create the run's checkpoints (offset 0, in_progress, the run's boundary); existing
    ones are kept, so a resumed run continues where it stopped."""
    stamp = now()
    for p in partitions:
        conn.execute(
            f"INSERT INTO {CHECKPOINT_TABLE} VALUES (?, ?, ?, 0, NULL, 'in_progress', 0, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [job_id, run_id, p, stamp, json.dumps(boundary, default=str)],
        )


def completed_boundaries(
    conn: Any, job_id: str, partitions: list[str]
) -> dict[str, dict[str, Any]]:
    """Per partition, the boundary of its newest completed checkpoint (its last sync)."""
    if is_duckdb(conn):
        rows = conn.execute(
            f"SELECT partition, boundary FROM {CHECKPOINT_TABLE} WHERE job_id = ? AND status = "
            "'completed' AND list_contains(?::VARCHAR[], partition) QUALIFY row_number() OVER "
            '(PARTITION BY partition ORDER BY "timestamp" DESC) = 1',
            [job_id, partitions],
        ).fetchall()
    else:
        among, params = in_list(partitions)
        rows = conn.execute(
            "SELECT partition, boundary FROM (SELECT partition, boundary, row_number() OVER "
            '(PARTITION BY partition ORDER BY "timestamp" DESC) AS rn FROM '
            f"{CHECKPOINT_TABLE} WHERE job_id = ? AND status = 'completed' AND partition IN "
            f"{among}) AS q WHERE rn = 1",
            [job_id, *params],
        ).fetchall()
    return {p: json.loads(b) for p, b in rows if b}


def advance(
    conn: Any,
    job_id: str,
    run_id: str,
    partition: str,
    *,
    added_rows: int = 0,
    last_cursor: tuple[Any, Any] | None = None,
    status: str | None = None,
    rows_merged: int | None = None,
) -> None:
    """Move one checkpoint forward; call inside the transaction that did the work."""
    row = conn.execute(
        f'SELECT "offset", last_cursor, status FROM {CHECKPOINT_TABLE} WHERE job_id = ? AND '
        "run_id = ? AND partition = ?",
        [job_id, run_id, partition],
    ).fetchone()
    if row is None:
        raise CheckpointRegressionError(
            f"no checkpoint for {job_id} run {run_id} partition {partition}; start() it first"
        )
    old_cursor = tuple(json.loads(row[1])) if row[1] else None
    new_cursor = last_cursor if last_cursor is not None else old_cursor
    new_status = status or row[2]
    if (
        added_rows < 0
        or STATUS_ORDER[new_status] < STATUS_ORDER[row[2]]
        or (
            old_cursor is not None
            and new_cursor is not None
            and _cursor_key(new_cursor) < _cursor_key(old_cursor)
        )
    ):
        raise CheckpointRegressionError(
            f"checkpoint {job_id}/{run_id}/{partition} would move backwards: offset "
            f"{row[0]}+{added_rows}, cursor {old_cursor} -> {new_cursor}, status {row[2]} -> "
            f"{new_status}"
        )
    conn.execute(
        f'UPDATE {CHECKPOINT_TABLE} SET "offset" = "offset" + ?, last_cursor = ?, status = ?, '
        'rows_merged = coalesce(?, rows_merged), "timestamp" = ? WHERE job_id = ? AND '
        "run_id = ? AND partition = ?",
        [
            added_rows,
            None if new_cursor is None else json.dumps(list(new_cursor), default=str),
            new_status,
            rows_merged,
            now(),
            job_id,
            run_id,
            partition,
        ],
    )


def advance_all(
    conn: Any,
    job_id: str,
    run_id: str,
    partitions: list[str],
    added: dict[str, int],
    last_cursor: tuple[Any, Any] | None,
    status: str | None = None,
) -> None:
    """One page staged: every partition's checkpoint records the same scan cursor, with the
    same forward-only rule as `advance`, in one read and one write for all partitions."""
    among, among_params = in_list(partitions)
    rows = conn.execute(
        f'SELECT partition, "offset", last_cursor, status FROM {CHECKPOINT_TABLE} WHERE '
        f"job_id = ? AND run_id = ? AND partition IN {among}",
        [job_id, run_id, *among_params],
    ).fetchall()
    have = {r[0]: r for r in rows}
    absent = [p for p in partitions if p not in have]
    if absent:
        raise CheckpointRegressionError(
            f"no checkpoint for {job_id} run {run_id} partition(s) {absent}; start() them first"
        )
    for p in partitions:
        _, offset, cursor, old_status = have[p]
        old_cursor = tuple(json.loads(cursor)) if cursor else None
        new_cursor = last_cursor if last_cursor is not None else old_cursor
        new_status = status or old_status
        if (
            added.get(p, 0) < 0
            or STATUS_ORDER[new_status] < STATUS_ORDER[old_status]
            or (
                old_cursor is not None
                and new_cursor is not None
                and _cursor_key(new_cursor) < _cursor_key(old_cursor)
            )
        ):
            raise CheckpointRegressionError(
                f"checkpoint {job_id}/{run_id}/{p} would move backwards: offset "
                f"{offset}+{added.get(p, 0)}, cursor {old_cursor} -> {new_cursor}, status "
                f"{old_status} -> {new_status}"
            )
    cursor_text = None if last_cursor is None else json.dumps(list(last_cursor), default=str)
    if not is_duckdb(conn):
        stamp = now()
        for p in partitions:
            conn.execute(
                f'UPDATE {CHECKPOINT_TABLE} SET "offset" = "offset" + ?, last_cursor = '
                "coalesce(CAST(? AS VARCHAR), last_cursor), status = coalesce(CAST(? AS "
                'VARCHAR), status), "timestamp" = ? WHERE job_id = ? AND run_id = ? AND '
                "partition = ?",
                [int(added.get(p, 0)), cursor_text, status, stamp, job_id, run_id, p],
            )
        return
    # Named parameters: DuckDB binds an UPDATE ... FROM's positional ones in its own order.
    conn.execute(
        f'UPDATE {CHECKPOINT_TABLE} AS c SET "offset" = c."offset" + a.added, last_cursor = '
        "coalesce(CAST($cursor AS VARCHAR), c.last_cursor), status = coalesce(CAST($status "
        'AS VARCHAR), c.status), "timestamp" = CAST($at AS TIMESTAMPTZ) FROM (SELECT '
        "unnest($parts::VARCHAR[]) AS partition, unnest($added::BIGINT[]) AS added) AS a "
        "WHERE c.job_id = $job AND c.run_id = $run AND c.partition = a.partition",
        {
            "cursor": cursor_text,
            "status": status,
            "at": now(),
            "parts": partitions,
            "added": [int(added.get(p, 0)) for p in partitions],
            "job": job_id,
            "run": run_id,
        },
    )
