"""Dagster runs whose worker died: marked failed, and their pool slots freed.

A run killed with SIGKILL stays STARTED in Dagster, and the warehouse pool slot its step
claimed (`ecm_duckdb_warehouse` or `ecm_postgres_warehouse`, factory.pool_for) stays claimed:
every later step of that pool waits forever. The run launcher of a local instance cannot
check a worker's health, so Dagster's run monitoring never notices. `ecm recover` does, from
what the worker left behind:

- the `ecm/worker` run tag (host:pid, set when a step begins its attempt), or else the pid
  on the run's own events, which a local (SQLite) instance always recorded on this host;
- on this host the pid decides; on another host the run's leases decide (alive while any
  of its attempts holds an unexpired lease).

A dead run is reported failed (with the evidence) and its slots are freed. Runs that ended
but still hold slots (their process died before releasing them) are freed too.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.manifest.lease import liveness
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import UNSETTLED
from ecm_assets.orchestration.factory import WAREHOUSE_POOL, WORKER_TAG, pool_for

if TYPE_CHECKING:
    import dagster as dg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettlement:
    run_id: str
    was: str
    decision: str  # MARKED_FAILED, SLOTS_FREED, STILL_RUNNING
    evidence: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str | None, int | None]:
    tag = run.tags.get(WORKER_TAG)
    if tag:
        host, _, pid = tag.rpartition(":")
        return host, int(pid)
    local = type(instance.run_storage).__name__.startswith("Sqlite")
    records = instance.get_records_for_run(run.run_id, limit=50, ascending=False).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return (socket.gethostname() if local else None), int(event.pid)
    return None, None


def run_alive(conn: Any, instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[bool, str]:
    """Whether the run's worker may still be working, and why."""
    manifests = load_manifests(conn, run_id=run.run_id)
    for manifest in manifests:
        alive, why = liveness(conn, manifest)
        if alive and manifest.status in UNSETTLED:
            return True, f"{manifest.asset} attempt {manifest.attempt} is alive: {why}"
    host, pid = _worker(instance, run)
    if host == socket.gethostname() and pid is not None:
        if pid == os.getpid():
            return True, "this process runs it"
        if _pid_alive(pid):
            return True, f"worker process {pid} on {host} is alive"
        return False, f"worker process {pid} on {host} (this host) is gone"
    if pid is None:
        return True, "no worker recorded yet; left alone (use --force)"
    return True, f"worker {pid} runs on host {host}; its leases decide and none expired"


def settle_dagster_runs(
    conn: Any,
    instance: dg.DagsterInstance,
    *,
    run_id: str | None = None,
    force: bool = False,
    pool: str = WAREHOUSE_POOL,
) -> list[RunSettlement]:
    """Mark dead in-progress runs failed and free the pool slots of runs that hold one.

    `conn`: a warehouse connection (ledger and leases); `pool`: the warehouse's pool, named
    in the evidence (slots of every pool a dead run holds are freed)."""
    import dagster as dg
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    holding: set[str] = set()
    if storage.supports_global_concurrency_limits:
        holding = set(storage.get_concurrency_run_ids())
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
    runs = list(instance.get_runs(filters=dg.RunsFilter(statuses=statuses)))
    if holding:
        ended = instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(holding)))
        runs += [r for r in ended if r.status in FINISHED_STATUSES]
    out = []
    for run in runs:
        if run_id is not None and run.run_id != run_id:
            continue
        was = str(run.status.value)
        if run.status in FINISHED_STATUSES:
            storage.free_concurrency_slots_for_run(run.run_id)
            out.append(RunSettlement(run.run_id, was, "SLOTS_FREED", f"run already {was}"))
            continue
        alive, why = run_alive(conn, instance, run)
        if alive and not force:
            out.append(RunSettlement(run.run_id, was, "STILL_RUNNING", why))
            continue
        message = f"ecm recover: the run's worker is gone ({why}{', forced' if alive else ''})"
        instance.report_run_failed(run, message=message)
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run.run_id)
        out.append(
            RunSettlement(run.run_id, was, "MARKED_FAILED", f"{why}; pool slots of {pool} freed")
        )
    return out


def pool_holders(
    conn: Any, instance: dg.DagsterInstance, pool: str = WAREHOUSE_POOL
) -> list[tuple[str, bool, str]]:
    """Runs holding a slot of the warehouse pool: (run_id, alive, why)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    info = storage.get_concurrency_info(pool)
    out = []
    for slot in info.claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        if run is None:
            out.append((slot.run_id, False, "the run no longer exists"))
        elif run.is_finished:
            out.append((slot.run_id, False, f"the run ended {run.status.value}"))
        elif conn is None:
            out.append((slot.run_id, True, "ledger not readable"))
        else:
            out.append((slot.run_id, *run_alive(conn, instance, run)))
    return out


class PoolBlockedError(RuntimeError):
    """The warehouse pool slot is held by a run whose worker is gone: a step would wait forever."""


def refuse_dead_pool_holders(instance: dg.DagsterInstance, database: str | Path) -> None:
    """Before launching: name the run that holds the pool slot, and what to run if it is dead.

    Dagster itself only logs "Step blocked by limit for pool" and waits; a slot of a killed
    run is never released, so the wait would never end.
    """
    warehouse = open_warehouse(database)
    pool = pool_for(database)
    if not warehouse.exists():
        holders = pool_holders(None, instance, pool)
    else:
        with warehouse.connect(read_only=True, timeout_seconds=10) as conn:
            holders = pool_holders(conn, instance, pool)
    dead = [(run_id, why) for run_id, alive, why in holders if not alive]
    if dead:
        run_id, why = dead[0]
        raise PoolBlockedError(
            f"pool {pool} is blocked: its slot is held by run {run_id}, which is "
            f"not running ({why}); run `ecm recover --warehouse {warehouse.url}` to mark it "
            "failed and free the slot, then retry"
        )
    for run_id, _, why in holders:
        log.warning(
            "pool %s slot held by run %s (%s); this run's steps wait for it",
            pool,
            run_id,
            why,
        )
