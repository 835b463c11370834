"""One sync run: lock a boundary, stage keyset pages, judge, merge each partition atomically.

    PLANNED -> INPUT_LOCKED (boundary captured) -> RUNNING (pages staged, checkpointed)
      -> VALIDATING (spec rules) -> COMMITTING (one transaction per partition) -> PUBLISHED

The manifest is the project's run manifest (asset = the job's asset name); per-partition
progress is the checkpoint ledger. A run killed at any point is resumed by the next call
for the same partitions: same run id, same boundary, same :last_sync; extraction continues
after the last staged page, completed partitions are skipped, the others are merged. A run
the rules aborted is final and never resumed. No Dagster here: the asset, the CLI and the
tests all call `run_job`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ecm_assets.adapters.backends import Warehouse, open_warehouse
from ecm_assets.adapters.warehouse import WarehouseLockedError, quote_ident
from ecm_assets.manifest.ledger import (
    Manifest,
    ensure_ledger,
    load_manifests,
    mark_failed,
    now,
    plan,
    transition,
)
from ecm_assets.manifest.states import IN_FLIGHT, RunStatus
from ecm_assets.publish.failpoints import failpoint
from ecm_assets.sync import checkpoints
from ecm_assets.sync.backend import columns, ensure_schema, in_list, is_duckdb
from ecm_assets.sync.connectors import Boundary, SourceConnector, redacted
from ecm_assets.sync.processors import PROCESSORS
from ecm_assets.sync.sink import (
    MergeResult,
    dedupe_staged,
    ensure_store,
    foreign_rows,
    insert_partitions,
    merge_partition,
    reset_staging,
    stage_keys,
    stage_page,
    store_exists,
    tables_for,
)
from ecm_assets.sync.spec import JobSpec
from ecm_assets.sync.validation import SyncValidationError, judge_run, quality_record
from ecm_assets.validation.gate import Decision, Finding

log = logging.getLogger(__name__)


class DependencyNotMetError(RuntimeError):
    """A job this sync depends on has not succeeded recently enough."""


@dataclass
class SyncResult:
    job_id: str
    run_id: str
    job_type: str
    resumed: bool
    last_sync: Any
    boundary: dict[str, Any]
    pages: int = 0
    rows_extracted: int = 0
    merged: dict[str, MergeResult] = field(default_factory=dict)
    skipped_partitions: list[str] = field(default_factory=list)
    decision: str = ""
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        return sum(m.written for m in self.merged.values())

    @property
    def hard_deleted(self) -> int:
        return sum(m.hard_deleted for m in self.merged.values())


def _resumable(conn: Any, spec: JobSpec) -> Manifest | None:
    """The job's newest run, if a crash or an error (not a rule) left it unfinished."""
    runs = load_manifests(conn, asset=spec.asset_name)
    if not runs:
        return None
    newest = runs[-1]
    if not newest.input_boundary or "boundary" not in newest.input_boundary:
        return None
    if newest.status in IN_FLIGHT or (newest.status == RunStatus.FAILED and newest.quality is None):
        return newest
    return None


def unmet_dependencies(conn: Any, spec: JobSpec, at: datetime | None = None) -> list[str]:
    """Why the spec's dependencies do not hold now (empty: they all hold)."""
    at = at or now()
    problems = []
    for dep in spec.dependencies:
        names = {dep.job, "sync_" + "".join(c if c.isalnum() or c == "_" else "_" for c in dep.job)}
        runs = [m for n in names for m in load_manifests(conn, asset=n)]
        finished = sorted(
            (m for m in runs if m.finished_at is not None), key=lambda m: m.finished_at
        )
        if dep.status == "success" and (not finished or finished[-1].status != RunStatus.PUBLISHED):
            last = finished[-1].status if finished else "no run"
            problems.append(f"{dep.job}: last run is {last}, status success required")
        if dep.window is not None:
            ok = [m for m in finished if m.status == RunStatus.PUBLISHED]
            if not ok or ok[-1].finished_at < at - dep.window:
                when = ok[-1].finished_at.isoformat() if ok else "never"
                problems.append(f"{dep.job}: last success {when}, needed within {dep.window}")
    return problems


def _prior_unfinished_to_fail(conn, spec: JobSpec, keep: str | None) -> None:
    for m in load_manifests(conn, asset=spec.asset_name, statuses=IN_FLIGHT):
        if m.run_id != keep:
            if m.status == RunStatus.RUNNING or m.status == RunStatus.VALIDATING:
                transition(
                    conn,
                    m.run_id,
                    m.asset,
                    RunStatus.FAILED,
                    finished_at=now(),
                    detail="superseded: a sync of other partitions started fresh",
                )
            elif m.status in (RunStatus.COMMITTING, RunStatus.UNKNOWN):
                if m.status == RunStatus.COMMITTING:
                    transition(
                        conn,
                        m.run_id,
                        m.asset,
                        RunStatus.UNKNOWN,
                        detail="superseded while committing",
                    )
                transition(
                    conn,
                    m.run_id,
                    m.asset,
                    RunStatus.FAILED,
                    finished_at=now(),
                    detail="superseded: partitions it merged keep their checkpoints",
                )


def _tx(conn: Any, work: Callable[[], Any]) -> Any:
    conn.begin()
    try:
        out = work()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return out


def run_job(
    spec: JobSpec,
    warehouse: Path | str | Warehouse,
    *,
    partitions: list[str] | None = None,
    job_type: str | None = None,
    run_id: str | None = None,
    check_dependencies: bool = False,
    on_alert: Callable[[str], None] | None = None,
    on_page: Callable[[int], None] | None = None,
) -> SyncResult:
    """Run (or resume) one sync of `spec` into the warehouse; see the module docstring."""
    started = time.perf_counter()
    wanted = list(partitions or spec.partitioning.partition_ids)
    unknown = [p for p in wanted if p not in spec.partitioning.partition_ids]
    if unknown:
        raise ValueError(
            f"sync job {spec.job_id} has no partition(s) {unknown}; it has "
            f"{spec.partitioning.partition_ids}"
        )
    connector = SourceConnector(spec.source)
    try:
        with open_warehouse(warehouse).connect() as conn:
            duck = is_duckdb(conn)
            if duck:
                conn.execute("SET enable_progress_bar = false")
                # Staged pages are dropped once the run publishes: no WAL checkpoint during
                # the run (it would compress and write them into the file only to free
                # them). The setting belongs to the database instance, so it is put back.
                conn.execute("SET checkpoint_threshold = '1GB'")
            else:
                # Many writers share a server: one run of a job at a time (its staging
                # table is the job's), held for the session, released when it ends; the wait
                # ends after the connection's lock_timeout.
                try:
                    conn.execute(
                        "SELECT pg_advisory_lock(hashtext(?), hashtext(?))",
                        ["ecm_sync", spec.job_id],
                    )
                except WarehouseLockedError:
                    raise WarehouseLockedError(
                        f"sync job {spec.job_id}: another run of it is still running in "
                        f"{conn.advisory_holders('ecm_sync', spec.job_id)}; one run of a job "
                        "at a time. Wait for it, or end a stuck session with "
                        "pg_terminate_backend(pid)."
                    ) from None
            try:
                return _run(
                    conn,
                    spec,
                    connector,
                    wanted,
                    job_type,
                    run_id,
                    check_dependencies,
                    on_alert,
                    on_page,
                    started,
                )
            except (SyncValidationError, DependencyNotMetError):
                raise
            except Exception as exc:
                # Recorded FAILED without a quality verdict: the next call resumes the run.
                for m in load_manifests(conn, asset=spec.asset_name, statuses=IN_FLIGHT)[-1:]:
                    mark_failed(conn, m.run_id, m.asset, exc)
                raise
            finally:
                if duck:
                    conn.execute("RESET checkpoint_threshold")
    finally:
        connector.close()


def _run(
    conn, spec, connector, wanted, job_type, run_id, check_dependencies, on_alert, on_page, started
) -> SyncResult:
    ensure_ledger(conn)
    checkpoints.ensure_checkpoints(conn)
    asset = spec.asset_name
    if check_dependencies:
        problems = unmet_dependencies(conn, spec)
        if problems:
            raise DependencyNotMetError(f"sync job {spec.job_id} waits for: " + "; ".join(problems))

    resume = _resumable(conn, spec)
    if resume is not None and sorted(resume.output_boundary) != sorted(wanted):
        resume = None
    if resume is not None:
        run_id = resume.run_id
        ib = resume.input_boundary or {}
        job_type = ib["job_type"]
        boundary = Boundary.from_json(ib["boundary"])
        last_sync = connector.decode(ib["last_sync"])
        log.info("resuming sync %s run %s at its recorded boundary", spec.job_id, run_id)
    else:
        job_type = job_type or spec.job_type
        run_id = run_id or f"sync-{uuid.uuid4().hex[:12]}"
        _prior_unfinished_to_fail(conn, spec, None)
        previous = checkpoints.completed_boundaries(conn, spec.job_id, wanted)
        prev_tops = [
            (b.get("next_updated_at"), b.get("max_id_at_boundary"))
            for p in wanted
            if (b := previous.get(p)) and b.get("next_updated_at") is not None
        ]
        if job_type == "full_extraction" or len(prev_tops) < len(wanted):
            last_sync = connector.minimum
        else:
            # ${previous_job.end_time}: the oldest recorded boundary of these partitions,
            # minus the overlap re-read. Never the wall clock.
            low = connector.decode(min(str(u) for u, _ in prev_tops))
            last_sync = _minus(low, spec.source.cursor.overlap)
        boundary = connector.capture_boundary(last_sync)
        if prev_tops:
            newest = max(prev_tops, key=lambda b: (str(b[0]), b[1]))
            if boundary.next_updated_at is None or (str(boundary.next_updated_at), 0) < (
                str(newest[0]),
                0,
            ):
                # The source clock or its rows went backwards: a boundary never does.
                boundary = Boundary(
                    newest[0], newest[1], boundary.source_now, boundary.held_by_open_transaction
                )
        reset_staging(conn, spec)
    result = SyncResult(
        spec.job_id,
        run_id,
        job_type,
        resume is not None,
        connector.encode(last_sync),
        boundary.to_json(),
    )
    input_boundary = {
        "source": redacted(connector.url),
        "job_type": job_type,
        "last_sync": connector.encode(last_sync),
        "boundary": boundary.to_json(),
        "cursor": [spec.source.cursor.column, spec.source.cursor.tiebreaker],
        "safety_lag_seconds": spec.source.cursor.safety_lag.total_seconds(),
        "overlap_seconds": spec.source.cursor.overlap.total_seconds(),
    }
    plan(
        conn,
        Manifest(
            run_id=run_id,
            asset=asset,
            code_version=None,
            mode=job_type,
            parameters={"job_id": spec.job_id, "spec": spec.path},
            input_boundary=input_boundary,
            output_boundary=wanted,
        ),
    )
    transition(
        conn,
        run_id,
        asset,
        RunStatus.INPUT_LOCKED,
        input_boundary=input_boundary,
        input_locked_at=now(),
    )
    transition(conn, run_id, asset, RunStatus.RUNNING, started_at=now())
    checkpoints.start(conn, spec.job_id, run_id, wanted, boundary.to_json())
    state = {c.partition: c for c in checkpoints.load_checkpoints(conn, spec.job_id, run_id)}
    result.skipped_partitions = [p for p in wanted if state[p].status == "completed"]
    extracting = all(state[p].status == "in_progress" for p in wanted)
    reconcile = job_type == "full_extraction"
    src = spec.source

    if extracting:
        cursors = [state[p].last_cursor for p in wanted if state[p].last_cursor]
        after = max(cursors, key=lambda c: (str(c[0]), c[1])) if cursors else None
        processor = PROCESSORS[spec.processor]

        def fetch(after: tuple[Any, Any] | None) -> tuple[int, tuple[Any, Any] | None, Any]:
            """One keyset page after `after`, transformed: (source rows, its last cursor,
            the page)."""
            raw = connector.read_page(last_sync, boundary, after, spec.page_rows)
            if raw.num_rows == 0:
                return 0, None, None
            last = (
                connector.encode(raw.column(src.cursor.column)[-1].as_py()),
                raw.column(src.cursor.tiebreaker)[-1].as_py(),
            )
            return raw.num_rows, last, processor.run(raw, spec.transform_config)

        # The next page is read (source driver, Arrow, transform: mostly Python) while this
        # one is staged and committed (warehouse: mostly native): the two overlap on two
        # cores. Only committed pages move a checkpoint; a prefetched page is just a read.
        top = (boundary.next_updated_at, boundary.max_id_at_boundary)
        with (
            _warehouse_threads(conn, 1) as all_threads,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecm-sync-read") as reader,
        ):
            pending = reader.submit(fetch, after) if boundary.next_updated_at is not None else None
            while pending is not None:
                read, last, page_table = pending.result()
                pending = None
                if read == 0:
                    break
                # A full page may have more after it, unless it ends at the boundary itself
                # (the keyset's inclusive top): then the next read is known to be empty.
                if read >= spec.page_rows and last != top:
                    pending = reader.submit(fetch, last)
                else:
                    all_threads()  # the last page: nothing is read beside it

                def page(page_table=page_table, last=last) -> int:
                    counts = stage_page(conn, spec, run_id, page_table)
                    dropped = [p for p in counts if p not in wanted]
                    if dropped:
                        among, among_params = in_list(wanted)
                        conn.execute(
                            f"DELETE FROM {tables_for(spec).staging} WHERE _run_id = ? AND "
                            f"_partition NOT IN {among}",
                            [run_id, *among_params],
                        )
                    checkpoints.advance_all(conn, spec.job_id, run_id, wanted, counts, last)
                    return sum(n for p, n in counts.items() if p in wanted)

                try:
                    result.rows_extracted += _tx(conn, page)
                    result.pages += 1
                    if on_page is not None:
                        on_page(result.pages)
                except BaseException:
                    if pending is not None:
                        pending.cancel()
                    raise

        def staged() -> None:
            # Also when this attempt staged no page: an earlier attempt's pages may hold a
            # key read twice (a resume after the last page's commit).
            dedupe_staged(conn, spec, run_id)
            if reconcile:
                stage_keys(conn, spec, run_id, connector.live_keys())
            checkpoints.advance_all(conn, spec.job_id, run_id, wanted, {}, None, "staged")

        _tx(conn, staged)

    transition(conn, run_id, asset, RunStatus.VALIDATING)
    decision, findings = judge_run(
        conn, spec, run_id, source_now=boundary.source_now, reconcile_deletes=reconcile
    )
    result.decision, result.findings = str(decision), findings
    quality = quality_record(decision, findings)
    if decision == Decision.FAIL_RUN:
        error = SyncValidationError(
            spec.job_id, run_id, [f for f in findings if not f.passed and f.severity.blocks]
        )
        transition(
            conn,
            run_id,
            asset,
            RunStatus.FAILED,
            finished_at=now(),
            quality=quality,
            detail=str(error)[:2000],
        )
        if on_alert is not None:
            on_alert(str(error))
        raise error

    transition(conn, run_id, asset, RunStatus.COMMITTING, quality=quality)
    _ensure_staging_shape(conn, spec)
    ensure_store(conn, spec)
    todo = [p for p in wanted if state[p].status != "completed"]
    synced_at = now()

    def outputs() -> dict[str, Any]:
        return {
            "table": f"{spec.store}.{spec.table}",
            "rows_extracted": result.rows_extracted,
            "rows_written": result.rows_written,
            "hard_deleted": result.hard_deleted,
            "partitions_merged": sorted(result.merged),
            "partitions_skipped": result.skipped_partitions,
        }

    if todo and store_exists(conn, spec) and not foreign_rows(conn, spec, run_id):
        # First load: one statement and one transaction for every partition (all or none
        # of them published), instead of one scan and one commit per partition.
        def load_all() -> None:
            merged = insert_partitions(
                conn, spec, run_id, todo, synced_at=synced_at, reconcile_deletes=reconcile
            )
            for partition in todo:
                _failpoints("sync.merge.after_merge", partition)
            for partition in todo:
                checkpoints.advance(
                    conn,
                    spec.job_id,
                    run_id,
                    partition,
                    status="completed",
                    rows_merged=merged[partition].written,
                )
            result.merged.update(merged)
            transition(
                conn, run_id, asset, RunStatus.PUBLISHED, finished_at=now(), outputs=outputs()
            )
            for partition in todo:
                _failpoints("sync.merge.before_commit", partition)

        _tx(conn, load_all)
        for partition in todo:
            _failpoints("sync.merge.after_commit", partition)
        todo = []
        published = True
    else:
        published = False
    last_partition = todo[-1] if todo else None
    for partition in todo:

        def merge(partition: str = partition) -> MergeResult:
            if store_exists(conn, spec):
                merged = merge_partition(
                    conn, spec, run_id, partition, synced_at=synced_at, reconcile_deletes=reconcile
                )
            else:
                merged = MergeResult(partition, 0, 0, 0, 0)
            _failpoints("sync.merge.after_merge", partition)
            checkpoints.advance(
                conn, spec.job_id, run_id, partition, status="completed", rows_merged=merged.written
            )
            result.merged[partition] = merged
            if partition == last_partition:
                transition(
                    conn, run_id, asset, RunStatus.PUBLISHED, finished_at=now(), outputs=outputs()
                )
            _failpoints("sync.merge.before_commit", partition)
            return merged

        _tx(conn, merge)
        _failpoints("sync.merge.after_commit", partition)
    if not todo and not published:
        transition(conn, run_id, asset, RunStatus.PUBLISHED, finished_at=now(), outputs=outputs())
    reset_staging(conn, spec)  # published: its staged rows are no longer evidence of anything
    result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _warehouse_threads(conn: Any, threads: int) -> Iterator[Callable[[], None]]:
    """DuckDB with at most `threads` threads until the yielded `restore()` is called or the
    block ends, then as it was.

    While pages are read, the reader (a Python thread, bound to one core by the GIL) is what
    the sync waits for; DuckDB's default of one thread per core let each page's staging take
    both cores from it (1M rows, best of 5, two A/B rounds: 0.72-0.81x the plain extract
    with it, 0.81-0.98x without; docs/benchmarks.md). Staging a page on one thread still
    ends before the next read does. Once nothing is being read, `restore()` gives DuckDB its
    cores back.
    """
    if not is_duckdb(conn):
        yield lambda: None
        return
    before = int(conn.execute("SELECT current_setting('threads')").fetchone()[0])
    limited = True

    def restore() -> None:
        nonlocal limited
        if limited:
            limited = False
            conn.execute(f"SET threads = {before}")

    conn.execute(f"SET threads = {int(threads)}")
    try:
        yield restore
    finally:
        # After a failed page the connection may refuse statements: the error that got
        # here is the one to report.
        with contextlib.suppress(duckdb.Error):
            restore()


def _failpoints(point: str, partition: str) -> None:
    """The publish protocol's failpoints (ECM_FAILPOINTS), for any bucket or one bucket:
    `sync.merge.before_commit` or `sync.merge.before_commit.03`."""
    failpoint(point)
    failpoint(f"{point}.{partition}")


def _ensure_staging_shape(conn: Any, spec: JobSpec) -> None:
    """A run that staged no page still merges (hard deletes): give it an empty staging."""
    t = tables_for(spec)
    has = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_staging' AND "
        "table_name = ?",
        ["sync__" + spec.table],
    ).fetchone()[0]
    if not has and store_exists(conn, spec):
        ensure_schema(conn, "ecm_staging")
        own = [
            quote_ident(c)
            for c, _ in columns(conn, spec.store, spec.table)
            if c not in ("_delete_kind", "run_id", "_synced_at")
        ]
        conn.execute(
            f"CREATE TABLE {t.staging} AS SELECT {', '.join(own)}, "
            f"CAST(NULL AS VARCHAR) AS _run_id FROM {t.store} LIMIT 0"
        )


def _minus(value: Any, delta) -> Any:
    if isinstance(value, datetime):
        return value - delta
    # SQLite text timestamps: shift in the same text format.
    stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00")) - delta
    text = stamp.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text
