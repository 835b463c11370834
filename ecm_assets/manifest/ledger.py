"""The run manifest ledger: tables in the warehouse, so a publish and its ledger entry commit
together and can never disagree.

One manifest per (run, asset, attempt). A FAILED attempt is terminal and stays as it is: a retry
under the same Dagster run id (a step retry) is a new attempt with the next number, the way
Spring Batch keeps one JobInstance and a new JobExecution per try. Readers get the latest
attempt of each (run, asset) unless they ask for all of them. Every status change is appended
to `status_history`, so the ledger shows when each state was entered, not only the last one.

Liveness is a lease, not a pid: the process that owns an attempt renews `run_lease` while it
works (publish/lease.py); recovery treats an attempt as alive while its lease is unexpired,
unless the attempt's own host proves its process is gone.

The outbox: `dagster_event` is set to OWED in the transaction that publishes, and cleared
only once the Dagster instance is known to hold the materialization (publish/outbox.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ecm_assets.adapters.backends import as_connection
from ecm_assets.manifest.states import TERMINAL, RunStatus, check_transition

log = logging.getLogger(__name__)

LEDGER_SCHEMA = "ecm_ledger"
MANIFEST_TABLE = f'"{LEDGER_SCHEMA}"."run_manifest"'
HISTORY_TABLE = f'"{LEDGER_SCHEMA}"."status_history"'
LEASE_TABLE = f'"{LEDGER_SCHEMA}"."run_lease"'
#: Outbox values of `dagster_event`: the publish owes Dagster its materialization events.
EVENT_OWED = "OWED"
EVENT_DELIVERED = "DELIVERED"

_JSON_FIELDS = (
    "parameters",
    "input_boundary",
    "output_boundary",
    "outputs",
    "quality",
    "reconciliation",
)
_TIME_FIELDS = ("planned_at", "input_locked_at", "started_at", "finished_at")
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("asset", "VARCHAR NOT NULL"),
    ("attempt", "INTEGER NOT NULL DEFAULT 1"),
    ("code_version", "VARCHAR"),
    ("mode", "VARCHAR"),
    ("parameters", "VARCHAR"),
    ("input_boundary", "VARCHAR"),
    ("output_boundary", "VARCHAR"),
    ("planned_at", "TIMESTAMPTZ"),
    ("input_locked_at", "TIMESTAMPTZ"),
    ("started_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    ("outputs", "VARCHAR"),
    ("quality", "VARCHAR"),
    ("reconciliation", "VARCHAR"),
    ("status", "VARCHAR NOT NULL"),
    ("status_detail", "VARCHAR"),
    ("pid", "BIGINT"),
    ("host", "VARCHAR"),
    ("updated_at", "TIMESTAMPTZ NOT NULL"),
    ("dagster_event", "VARCHAR"),
)
#: Columns added after the first ledger was written: added in place to older ledgers.
_ADDED_COLUMNS = ("attempt", "dagster_event")


#: Fields only the state machine itself writes.
_MANAGED_FIELDS = frozenset({"run_id", "asset", "attempt", "status", "status_detail", "updated_at"})


class ManifestNotFoundError(LookupError):
    """No manifest is recorded for the run (and asset) asked for."""


class ManifestInFlightError(RuntimeError):
    """A new attempt was asked for while the latest attempt is not settled."""


@dataclass
class Manifest:
    """Durable evidence of one run of one asset."""

    run_id: str
    asset: str
    attempt: int = 1
    status: RunStatus = RunStatus.PLANNED
    code_version: str | None = None
    mode: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    input_boundary: dict[str, Any] | None = None
    output_boundary: list[str] = field(default_factory=list)
    planned_at: datetime | None = None
    input_locked_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    reconciliation: dict[str, Any] | None = None
    status_detail: str | None = None
    pid: int | None = None
    host: str | None = None
    updated_at: datetime | None = None
    #: Outbox: OWED while the Dagster materialization of a publish may be missing.
    dagster_event: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, _ in _COLUMNS:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        out["status"] = str(self.status)
        return out


def now() -> datetime:
    """Wall clock for ledger timestamps only: provenance, never business data."""
    return datetime.now(UTC)


def ensure_ledger(conn: Any) -> None:
    conn = as_connection(conn)
    if conn.kind != "duckdb" and _ledger_current(conn):
        # A server backend: no DDL when nothing is missing. Even a no-op ALTER or CREATE
        # INDEX IF NOT EXISTS locks its table, and would wait for every open publish.
        return
    with conn.ddl_lock():
        _ensure_ledger(conn)


def _ledger_current(conn: Any) -> bool:
    if not all(
        conn.table_exists(LEDGER_SCHEMA, t) for t in ("run_manifest", "status_history", "run_lease")
    ):
        return False
    present = {
        (table, name)
        for table, name in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE "
            "table_schema = ? AND table_name IN ('run_manifest', 'status_history')",
            [LEDGER_SCHEMA],
        ).fetchall()
    }
    wanted = {("run_manifest", n) for n in _ADDED_COLUMNS} | {("status_history", "attempt")}
    return wanted <= present


def _ensure_ledger(conn: Any) -> None:
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{LEDGER_SCHEMA}"')
    cols = ", ".join(f'"{n}" {t}' for n, t in _COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} ({cols})")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (run_id VARCHAR NOT NULL, asset VARCHAR "
        "NOT NULL, from_status VARCHAR, to_status VARCHAR NOT NULL, "
        "recorded_at TIMESTAMPTZ NOT NULL, detail VARCHAR, attempt INTEGER)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (run_id VARCHAR NOT NULL, asset VARCHAR NOT "
        "NULL, attempt INTEGER NOT NULL, owner VARCHAR NOT NULL, host VARCHAR, pid BIGINT, "
        "renewed_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"
    )
    present = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = 'run_manifest'",
            [LEDGER_SCHEMA],
        ).fetchall()
    }
    types = dict(_COLUMNS)
    for name in _ADDED_COLUMNS:
        if name not in present:
            sql_type = types[name].replace(" NOT NULL", "")
            conn.execute(conn.dialect.add_column(MANIFEST_TABLE, f'"{name}"', sql_type))
    conn.execute(f"ALTER TABLE {HISTORY_TABLE} ADD COLUMN IF NOT EXISTS attempt INTEGER")
    for table, columns in (
        (MANIFEST_TABLE, ["run_id", "asset", "attempt"]),
        (HISTORY_TABLE, ["run_id"]),
        (LEASE_TABLE, ["run_id", "asset", "attempt"]),
    ):
        index = conn.dialect.index(table, columns)
        if index is not None:
            conn.execute(index)


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else json.dumps(value, sort_keys=True, default=str)
    if name == "status" and value is not None:
        return str(value)
    return value


def plan(conn: Any, manifest: Manifest) -> Manifest:
    """Record a new attempt as PLANNED: attempt 1 of a new run, or the next attempt of a run
    whose latest attempt ended without publishing. A FAILED attempt is never changed."""
    ensure_ledger(conn)
    manifest.status = RunStatus.PLANNED
    manifest.planned_at = manifest.planned_at or now()
    manifest.updated_at = manifest.planned_at
    manifest.pid = manifest.pid or os.getpid()
    manifest.host = manifest.host or socket.gethostname()
    manifest.dagster_event = None
    existing = conn.execute(
        f"SELECT attempt, status FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ? "
        "ORDER BY attempt DESC LIMIT 1",
        [manifest.run_id, manifest.asset],
    ).fetchone()
    manifest.attempt = 1
    if existing is not None:
        attempt, status = int(existing[0] or 1), RunStatus(existing[1])
        if status == RunStatus.PUBLISHED:
            raise ValueError(
                f"run {manifest.run_id} already published {manifest.asset}; a new publish needs "
                "a new run"
            )
        if status == RunStatus.HELD:
            raise ManifestInFlightError(
                f"run {manifest.run_id} {manifest.asset} attempt {attempt} is HELD for review; "
                "approve or reject it (`ecm review`)"
            )
        if status not in TERMINAL:
            # The caller decided the earlier attempt is over (runs settle it through
            # recovery first, and refuse while its lease is alive): it ends FAILED.
            transition(
                conn,
                manifest.run_id,
                manifest.asset,
                RunStatus.FAILED,
                detail=f"superseded by attempt {attempt + 1} of the same run",
                finished_at=now(),
            )
        # Dagster re-executes a failed step under the same run id: a new attempt, the
        # failed one stays as evidence.
        manifest.attempt = attempt + 1
    names = [n for n, _ in _COLUMNS]
    conn.execute(
        f"INSERT INTO {MANIFEST_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [_encode(n, getattr(manifest, n)) for n in names],
    )
    _history(
        conn,
        manifest.run_id,
        manifest.asset,
        None,
        RunStatus.PLANNED,
        None if manifest.attempt == 1 else f"attempt {manifest.attempt}",
        manifest.attempt,
    )
    return manifest


def _history(conn, run_id, asset, from_status, to_status, detail, attempt) -> None:
    conn.execute(
        f"INSERT INTO {HISTORY_TABLE} (run_id, asset, from_status, to_status, recorded_at, "
        "detail, attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            asset,
            None if from_status is None else str(from_status),
            str(to_status),
            now(),
            detail,
            attempt,
        ],
    )


def transition(
    conn: Any,
    run_id: str,
    asset: str,
    target: RunStatus,
    *,
    detail: str | None = None,
    **fields: Any,
) -> RunStatus:
    """Move the latest attempt of a manifest to `target`, refusing illegal moves; records
    fields and history."""
    row = conn.execute(
        f"SELECT status, attempt FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ? "
        "ORDER BY attempt DESC LIMIT 1",
        [run_id, asset],
    ).fetchone()
    if row is None:
        raise ManifestNotFoundError(f"no manifest for run {run_id} asset {asset}")
    current, attempt = RunStatus(row[0]), int(row[1] or 1)
    check_transition(current, target)
    settable = {n for n, _ in _COLUMNS} - _MANAGED_FIELDS
    unknown = set(fields) - settable
    if unknown:
        raise ValueError(
            f"fields {sorted(unknown)} cannot be set by a transition: status, identity and "
            "timestamps of the change are managed by the state machine"
        )
    assignments = {"status": str(target), "status_detail": detail, "updated_at": now(), **fields}
    sets = ", ".join(f'"{k}" = ?' for k in assignments)
    conn.execute(
        f"UPDATE {MANIFEST_TABLE} SET {sets} WHERE run_id = ? AND asset = ? AND attempt = ?",
        [*(_encode(k, v) for k, v in assignments.items()), run_id, asset, attempt],
    )
    _history(conn, run_id, asset, current, target, detail, attempt)
    return target


def set_dagster_event(conn: Any, run_id: str, asset: str, attempt: int, value: str | None) -> None:
    """Outbox bookkeeping on one attempt; no status change."""
    conn.execute(
        f"UPDATE {MANIFEST_TABLE} SET dagster_event = ? WHERE run_id = ? AND asset = ? AND "
        "attempt = ?",
        [value, run_id, asset, attempt],
    )


def _decode(row: Mapping[str, Any]) -> Manifest:
    values = dict(row)
    for name in _JSON_FIELDS:
        if values.get(name) is not None:
            values[name] = json.loads(values[name])
    values["output_boundary"] = values.get("output_boundary") or []
    values["parameters"] = values.get("parameters") or {}
    values["status"] = RunStatus(values["status"])
    values["attempt"] = int(values.get("attempt") or 1)
    return Manifest(**values)


def load_manifests(
    conn: Any,
    *,
    run_id: str | None = None,
    asset: str | None = None,
    statuses: Iterable[RunStatus] | None = None,
    all_attempts: bool = False,
) -> list[Manifest]:
    """The latest attempt of each (run, asset) matching the filters; every attempt with
    `all_attempts`. Status filters apply to the latest attempt."""
    conn = as_connection(conn)
    if not conn.table_exists(LEDGER_SCHEMA, "run_manifest"):
        return []
    ensure_ledger_columns(conn)
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    if asset is not None:
        where.append("asset = ?")
        params.append(asset)
    if statuses is not None:
        wanted = [str(s) for s in statuses]
        where.append(conn.dialect.in_list("status", "VARCHAR"))
        params.append(wanted)
    source = MANIFEST_TABLE if all_attempts else conn.dialect.latest_attempts(MANIFEST_TABLE)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cursor = conn.execute(
        f"SELECT * FROM {source} {clause} ORDER BY planned_at, asset, attempt", params
    )
    names = [d[0] for d in cursor.description]
    return [_decode(dict(zip(names, r, strict=True))) for r in cursor.fetchall()]


def load_manifest(conn: Any, run_id: str, asset: str | None = None) -> Manifest:
    found = load_manifests(conn, run_id=run_id, asset=asset)
    if not found:
        raise ManifestNotFoundError(
            f"no manifest recorded for run {run_id}" + (f" and asset {asset}" if asset else "")
        )
    if len(found) > 1:
        assets = ", ".join(m.asset for m in found)
        raise ManifestNotFoundError(
            f"run {run_id} has manifests for several assets ({assets}); name the asset"
        )
    return found[0]


def ensure_ledger_columns(conn: Any) -> None:
    """Reading a ledger written before `attempt` existed: add the columns if the file is
    writable; a read-only reader of such a ledger sees every row as attempt 1."""
    present = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = 'run_manifest'",
            [LEDGER_SCHEMA],
        ).fetchall()
    }
    if all(name in present for name in _ADDED_COLUMNS):
        return
    try:
        ensure_ledger(conn)
    except Exception as exc:  # a read-only connection (DuckDB or PostgreSQL)
        raise RuntimeError(
            "the run ledger predates attempts and outbox columns; open it once read-write "
            f"(e.g. `ecm recover`) to upgrade it: {exc}"
        ) from exc


def status_history(conn: Any, run_id: str) -> list[tuple]:
    return conn.execute(
        f"SELECT asset, from_status, to_status, recorded_at, detail FROM {HISTORY_TABLE} "
        "WHERE run_id = ? ORDER BY recorded_at",
        [run_id],
    ).fetchall()


def mark_failed(
    conn: Any,
    run_id: str,
    asset: str,
    exc: BaseException,
    **fields: Any,
) -> None:
    """Record FAILED with the error, unless the run already ended; never masks `exc`."""
    try:
        current = load_manifests(conn, run_id=run_id, asset=asset)
        if current and current[0].status not in TERMINAL:
            transition(
                conn,
                run_id,
                asset,
                RunStatus.FAILED,
                finished_at=now(),
                detail=f"{type(exc).__name__}: {exc}"[:2000],
                **fields,
            )
    except Exception:  # the run's own error matters more than the ledger note
        log.exception("could not record FAILED for run %s %s", run_id, asset)
