"""The run manifest ledger: tables in the warehouse, so a publish and its ledger entry commit
together and can never disagree.

One manifest per (run, asset). Every status change is appended to `status_history`, so the
ledger shows when each state was entered, not only the last one.
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

import duckdb

from ecm_assets.manifest.states import TERMINAL, RunStatus, check_transition

log = logging.getLogger(__name__)

LEDGER_SCHEMA = "ecm_ledger"
MANIFEST_TABLE = f'"{LEDGER_SCHEMA}"."run_manifest"'
HISTORY_TABLE = f'"{LEDGER_SCHEMA}"."status_history"'

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
)


#: Fields only the state machine itself writes.
_MANAGED_FIELDS = frozenset({"run_id", "asset", "status", "status_detail", "updated_at"})


class ManifestNotFoundError(LookupError):
    """No manifest is recorded for the run (and asset) asked for."""


@dataclass
class Manifest:
    """Durable evidence of one run of one asset."""

    run_id: str
    asset: str
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


def ensure_ledger(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{LEDGER_SCHEMA}"')
    cols = ", ".join(f'"{n}" {t}' for n, t in _COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} ({cols})")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (run_id VARCHAR NOT NULL, asset VARCHAR "
        "NOT NULL, from_status VARCHAR, to_status VARCHAR NOT NULL, "
        "recorded_at TIMESTAMPTZ NOT NULL, detail VARCHAR)"
    )


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else json.dumps(value, sort_keys=True, default=str)
    if name == "status" and value is not None:
        return str(value)
    return value


def plan(conn: duckdb.DuckDBPyConnection, manifest: Manifest) -> Manifest:
    """Record a new run as PLANNED. A rerun of the same Dagster run id starts a new attempt."""
    ensure_ledger(conn)
    manifest.status = RunStatus.PLANNED
    manifest.planned_at = manifest.planned_at or now()
    manifest.updated_at = manifest.planned_at
    manifest.pid = manifest.pid or os.getpid()
    manifest.host = manifest.host or socket.gethostname()
    existing = conn.execute(
        f"SELECT status FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ?",
        [manifest.run_id, manifest.asset],
    ).fetchone()
    if existing is not None:
        if RunStatus(existing[0]) == RunStatus.PUBLISHED:
            raise ValueError(
                f"run {manifest.run_id} already published {manifest.asset}; a new publish needs "
                "a new run"
            )
        # Dagster re-executes a failed step under the same run id: that attempt replaces the
        # manifest, and the history keeps both.
        conn.execute(
            f"DELETE FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ?",
            [manifest.run_id, manifest.asset],
        )
    names = [n for n, _ in _COLUMNS]
    conn.execute(
        f"INSERT INTO {MANIFEST_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [_encode(n, getattr(manifest, n)) for n in names],
    )
    _history(conn, manifest.run_id, manifest.asset, None, RunStatus.PLANNED, None)
    return manifest


def _history(conn, run_id, asset, from_status, to_status, detail) -> None:
    conn.execute(
        f"INSERT INTO {HISTORY_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
        [
            run_id,
            asset,
            None if from_status is None else str(from_status),
            str(to_status),
            now(),
            detail,
        ],
    )


def transition(
    conn: duckdb.DuckDBPyConnection,
    run_id: str,
    asset: str,
    target: RunStatus,
    *,
    detail: str | None = None,
    **fields: Any,
) -> RunStatus:
    """Move a manifest to `target`, refusing illegal moves; records fields and history."""
    row = conn.execute(
        f"SELECT status FROM {MANIFEST_TABLE} WHERE run_id = ? AND asset = ?", [run_id, asset]
    ).fetchone()
    if row is None:
        raise ManifestNotFoundError(f"no manifest for run {run_id} asset {asset}")
    current = RunStatus(row[0])
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
        f"UPDATE {MANIFEST_TABLE} SET {sets} WHERE run_id = ? AND asset = ?",
        [*(_encode(k, v) for k, v in assignments.items()), run_id, asset],
    )
    _history(conn, run_id, asset, current, target, detail)
    return target


def _decode(row: Mapping[str, Any]) -> Manifest:
    values = dict(row)
    for name in _JSON_FIELDS:
        if values.get(name) is not None:
            values[name] = json.loads(values[name])
    values["output_boundary"] = values.get("output_boundary") or []
    values["parameters"] = values.get("parameters") or {}
    values["status"] = RunStatus(values["status"])
    return Manifest(**values)


def load_manifests(
    conn: duckdb.DuckDBPyConnection,
    *,
    run_id: str | None = None,
    asset: str | None = None,
    statuses: Iterable[RunStatus] | None = None,
) -> list[Manifest]:
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND "
        "table_name = 'run_manifest'",
        [LEDGER_SCHEMA],
    ).fetchone()[0]
    if not exists:
        return []
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    if asset is not None:
        where.append("asset = ?")
        params.append(asset)
    if statuses is not None:
        wanted = [str(s) for s in statuses]
        where.append("list_contains(?::VARCHAR[], status)")
        params.append(wanted)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cursor = conn.execute(
        f"SELECT * FROM {MANIFEST_TABLE} {clause} ORDER BY planned_at, asset", params
    )
    names = [d[0] for d in cursor.description]
    return [_decode(dict(zip(names, r, strict=True))) for r in cursor.fetchall()]


def load_manifest(
    conn: duckdb.DuckDBPyConnection, run_id: str, asset: str | None = None
) -> Manifest:
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


def status_history(conn: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple]:
    return conn.execute(
        f"SELECT asset, from_status, to_status, recorded_at, detail FROM {HISTORY_TABLE} "
        "WHERE run_id = ? ORDER BY recorded_at",
        [run_id],
    ).fetchall()


def mark_failed(
    conn: duckdb.DuckDBPyConnection,
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
