"""Leases: how recovery tells a live attempt from a dead one without trusting pid + hostname.

The process working on an attempt holds a lease row in `ecm_ledger.run_lease` and renews it
(a heartbeat thread, plus every time it opens the ledger). An attempt is alive while its lease
is unexpired, wherever it runs. It is dead when the lease expired, or when the attempt's own
host proves it: the same host, and the pid is gone (or is this very process, which no longer
works on that attempt). A pid on another host proves nothing either way, so only the lease
decides there.

The lease lives in its own table so a heartbeat never writes the manifest row a publish
transaction is changing (DuckDB would abort one of them on the conflict).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from ecm_assets.adapters.backends import as_connection, is_postgres_url, open_warehouse
from ecm_assets.manifest.ledger import LEASE_TABLE, Manifest, ensure_ledger, now

log = logging.getLogger(__name__)

#: Env var: seconds a lease lasts without a renewal (default 300).
LEASE_SECONDS_ENV = "ECM_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 300.0
#: This process, as a lease owner: host, pid and a random part (pids are reused).
PROCESS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
#: Attempts this process is working on right now: (run_id, asset, attempt).
_ACTIVE: set[tuple[str, str, int]] = set()
_ACTIVE_LOCK = threading.Lock()
#: Held by this process's read-only warehouse connections (publish/io_manager.py): DuckDB
#: refuses a read-only open of a file this process has open read-write, so a heartbeat
#: skips its beat instead of making such an open fail.
READ_ONLY_GUARD = threading.Lock()


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_SECONDS_ENV, DEFAULT_LEASE_SECONDS))


@dataclass(frozen=True)
class Lease:
    owner: str
    host: str | None
    pid: int | None
    renewed_at: datetime
    expires_at: datetime


def acquire(conn: Any, manifest: Manifest) -> None:
    """This process owns `manifest`'s attempt from now on (called right after plan())."""
    ensure_ledger(conn)
    at = now()
    conn.execute(
        f"DELETE FROM {LEASE_TABLE} WHERE run_id = ? AND asset = ? AND attempt = ?",
        [manifest.run_id, manifest.asset, manifest.attempt],
    )
    conn.execute(
        f"INSERT INTO {LEASE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            manifest.run_id,
            manifest.asset,
            manifest.attempt,
            PROCESS_OWNER,
            socket.gethostname(),
            os.getpid(),
            at,
            at + timedelta(seconds=lease_seconds()),
        ],
    )
    with _ACTIVE_LOCK:
        _ACTIVE.add((manifest.run_id, manifest.asset, manifest.attempt))


def release(run_id: str, asset: str, attempt: int) -> None:
    """This process stopped working on the attempt (the row is left: it expires)."""
    with _ACTIVE_LOCK:
        _ACTIVE.discard((run_id, asset, attempt))


def renew(conn: Any) -> int:
    """Extend every lease this process holds for an attempt it still works on."""
    with _ACTIVE_LOCK:
        active = sorted(_ACTIVE)
    if not active:
        return 0
    at = now()
    for run_id, asset, attempt in active:
        conn.execute(
            f"UPDATE {LEASE_TABLE} SET renewed_at = ?, expires_at = ? WHERE run_id = ? AND "
            "asset = ? AND attempt = ? AND owner = ?",
            [at, at + timedelta(seconds=lease_seconds()), run_id, asset, attempt, PROCESS_OWNER],
        )
    return len(active)


def load_lease(conn: Any, manifest: Manifest) -> Lease | None:
    if not as_connection(conn).table_exists("ecm_ledger", "run_lease"):
        return None
    row = conn.execute(
        f"SELECT owner, host, pid, renewed_at, expires_at FROM {LEASE_TABLE} WHERE run_id = ? "
        "AND asset = ? AND attempt = ?",
        [manifest.run_id, manifest.asset, manifest.attempt],
    ).fetchone()
    return None if row is None else Lease(*row)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def liveness(conn: Any, manifest: Manifest) -> tuple[bool, str]:
    """Whether the attempt may still be worked on, and the evidence for the verdict."""
    lease = load_lease(conn, manifest)
    host = lease.host if lease else manifest.host
    pid = lease.pid if lease else manifest.pid
    here = host == socket.gethostname()
    key = (manifest.run_id, manifest.asset, manifest.attempt)
    if here and pid == os.getpid() and (lease is None or lease.owner == PROCESS_OWNER):
        with _ACTIVE_LOCK:
            working = key in _ACTIVE
        return working, ("this process is working on it" if working else "this process left it")
    if here and pid is not None and not _pid_alive(pid):
        return False, f"process {pid} on {host} (its host, this one) is gone"
    if lease is None:
        # Ledgers written before leases: only the attempt's own host can tell.
        if here and pid is not None:
            return True, f"process {pid} on {host} is alive (no lease recorded)"
        return False, f"no lease recorded and host {host} is not this host"
    at = now()
    if lease.expires_at > at:
        return True, (
            f"lease of {lease.owner} renewed {lease.renewed_at.isoformat()} is valid until "
            f"{lease.expires_at.isoformat()}"
        )
    return False, (
        f"lease of {lease.owner} expired at {lease.expires_at.isoformat()} (last renewed "
        f"{lease.renewed_at.isoformat()})"
    )


class Heartbeat:
    """Renews this process's leases every `interval` seconds from a daemon thread.

    A renewal that finds the warehouse held by another process is skipped, not waited for:
    the lease is long enough to outlast a lock holder (the lock wait of every writer is
    bounded by its lock timeout, far below the lease).
    """

    def __init__(self, database: str | Path, interval: float | None = None) -> None:
        #: A DuckDB path or a postgresql:// URL (adapters/backends.open_warehouse).
        self.database = str(database)
        self.interval = interval if interval is not None else max(lease_seconds() / 5, 0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecm-lease-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not READ_ONLY_GUARD.acquire(blocking=False):
                continue  # a read-only connection of this process is open: next beat
            try:
                if is_postgres_url(self.database):
                    with open_warehouse(self.database).connect(timeout_seconds=5) as conn:
                        renew(conn)
                else:
                    with duckdb.connect(self.database) as raw:
                        renew(raw)
            except (duckdb.Error, OSError, RuntimeError) as exc:
                # held by another process, or the server is away: the next beat tries again
                log.debug("lease heartbeat skipped: %s", exc)
            finally:
                READ_ONLY_GUARD.release()
