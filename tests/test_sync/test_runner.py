"""Sync runs on a small SQLite source, into each warehouse backend (DuckDB, PostgreSQL):
first load, overlap re-read, version-aware merge,
tombstones, hard-delete reconciliation, abort_and_alert, resume after a failure."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import RunStatus
from ecm_assets.sync import checkpoints
from ecm_assets.sync.demo_source import create_source
from ecm_assets.sync.partitioning import partition_of
from ecm_assets.sync.runner import DependencyNotMetError, run_job
from ecm_assets.sync.status import job_status, verify
from ecm_assets.sync.validation import SyncValidationError
from tests.test_sync.conftest import make_spec


def _exec(url: str, sql: str, **params) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    engine.dispose()


def _clean(counts: dict[str, int]) -> bool:
    return (
        counts["missing"] == counts["duplicated"] == counts["stale"] == 0
        and counts["resurrected"] == 0
    )


def test_first_load_then_incremental_rereads_overlap_without_writes(warehouse, sqlite_url):
    create_source(sqlite_url, 3000)
    spec = make_spec(sqlite_url)
    wh = warehouse
    first = run_job(spec, wh)
    assert first.rows_extracted == 3000 and first.rows_written == 3000
    assert first.pages == 6  # 500-row keyset pages
    assert _clean(verify(spec, wh))
    second = run_job(spec, wh)
    assert second.last_sync < first.boundary["next_updated_at"]  # boundary minus overlap
    assert second.rows_written == 0  # the overlap re-read changes nothing
    with open_warehouse(wh).connect(read_only=True) as conn:
        part, key, run, email = conn.execute(
            "SELECT _partition, customer_id, run_id, email FROM context_store.customer_history "
            "LIMIT 1"
        ).fetchone()
    # The DuckDB bucket expression and the Python one agree; provenance and transform hold.
    assert part == partition_of(spec.partitioning, key)
    assert run == first.run_id and email == email.lower()


def test_updates_soft_and_hard_deletes(warehouse, sqlite_url):
    create_source(sqlite_url, 1000)
    spec = make_spec(sqlite_url, source__cursor={"safety_lag": "0 s", "overlap": "1 s"})
    wh = warehouse
    run_job(spec, wh)
    stamp = "9999-01-01 00:00:00.000000"  # far ahead: after any boundary until the clock gets
    _exec(
        sqlite_url,
        "UPDATE customer_history SET version = version + 1, balance = -1, "
        "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = 10",
    )
    _exec(
        sqlite_url,
        "UPDATE customer_history SET version = version + 1, deleted_at = "
        "strftime('%Y-%m-%d %H:%M:%f', 'now'), updated_at = strftime('%Y-%m-%d %H:%M:%f', "
        "'now') WHERE id = 11",
    )
    _exec(sqlite_url, "DELETE FROM customer_history WHERE id = 12")
    import time

    time.sleep(0.05)
    inc = run_job(spec, wh)
    assert inc.rows_written == 2
    counts = verify(spec, wh)
    assert counts["resurrected"] == 1  # an incremental run cannot see a hard delete
    full = run_job(spec, wh, job_type="full_extraction")
    assert full.hard_deleted == 1 and full.rows_written == 0
    assert _clean(verify(spec, wh))
    with open_warehouse(wh).connect(read_only=True) as conn:
        rows = dict(
            conn.execute(
                "SELECT id, _delete_kind FROM context_store.customer_history "
                "WHERE id IN (10, 11, 12)"
            ).fetchall()
        )
    assert rows == {10: None, 11: "soft", 12: "hard"}
    assert stamp  # documented intent only


def test_older_version_never_overwrites_newer(warehouse, sqlite_url):
    create_source(sqlite_url, 200)
    spec = make_spec(sqlite_url, source__cursor={"safety_lag": "0 s", "overlap": "1 s"})
    wh = warehouse
    run_job(spec, wh)
    # A skewed writer stamps a newer version with an *older* updated_at: the full run reads
    # it, and a replayed old version (version 1, re-stamped) must not win over it.
    _exec(sqlite_url, "UPDATE customer_history SET version = 5, balance = 55 WHERE id = 7")
    run_job(spec, wh, job_type="full_extraction")
    _exec(
        sqlite_url,
        "UPDATE customer_history SET version = 2, balance = 22, updated_at = "
        "strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = 7",
    )
    run_job(spec, wh, job_type="full_extraction")
    with open_warehouse(wh).connect(read_only=True) as conn:
        assert conn.execute(
            "SELECT _version, balance FROM context_store.customer_history WHERE id = 7"
        ).fetchone() == (5, 55.0)


def test_abort_and_alert_fails_before_publish(warehouse, sqlite_url):
    create_source(sqlite_url, 300)
    spec = make_spec(
        sqlite_url,
        validation={"rules": [{"type": "row_count", "min": 1000}], "on_failure": "abort_and_alert"},
    )
    wh = warehouse
    alerts: list[str] = []
    with pytest.raises(SyncValidationError, match=r"quality gate FAIL_RUN.*row_count"):
        run_job(spec, wh, on_alert=alerts.append)
    assert alerts and "300 live rows" in alerts[0]
    with open_warehouse(wh).connect(read_only=True) as conn:
        assert not conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'context_store'"
        ).fetchone()[0]
        (manifest,) = load_manifests(conn, asset=spec.asset_name)
    assert manifest.status == RunStatus.FAILED and manifest.quality["decision"] == "FAIL_RUN"
    # An aborted run is final: the next run starts fresh (and aborts again on the same data).
    with pytest.raises(SyncValidationError):
        run_job(spec, wh)
    with open_warehouse(wh).connect(read_only=True) as conn:
        assert len({m.run_id for m in load_manifests(conn, asset=spec.asset_name)}) == 2


def test_failed_run_resumes_from_checkpoint_without_duplicates(warehouse, sqlite_url):
    create_source(sqlite_url, 2000)
    spec = make_spec(sqlite_url)
    wh = warehouse

    def boom(pages: int) -> None:
        if pages == 2:
            raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        run_job(spec, wh, on_page=boom)
    with open_warehouse(wh).connect(read_only=True) as conn:
        staged = checkpoints.load_checkpoints(conn, spec.job_id)
    assert sum(c.offset for c in staged) == 1000 and {c.status for c in staged} == {"in_progress"}
    resumed = run_job(spec, wh)
    assert resumed.resumed and resumed.run_id == staged[0].run_id
    assert resumed.rows_extracted == 1000  # only the pages after the checkpoint
    assert _clean(verify(spec, wh))
    rows = job_status(spec, wh)
    assert len(rows) == 16 and sum(r["rows"] for r in rows) == 2000
    assert all(r["source_rows_beyond_boundary"] == 0 for r in rows)


def test_dependencies_gate_the_run(warehouse, sqlite_url):
    create_source(sqlite_url, 50)
    spec = make_spec(
        sqlite_url, dependencies=[{"job": "reference-data-sync", "window": "24 hours"}]
    )
    with pytest.raises(DependencyNotMetError, match="reference-data-sync: last success never"):
        run_job(spec, warehouse, check_dependencies=True)
    upstream = make_spec(sqlite_url, job_id="reference-data-sync", sink__table="refdata")
    run_job(upstream, warehouse)
    assert run_job(spec, warehouse, check_dependencies=True).rows_written == 50


def test_hard_delete_reconcile_matches_with_a_null_live_key(warehouse, sqlite_url):
    """Regression: the first load's reconcile (`insert_partitions`) used `NOT IN (live keys)`
    on DuckDB, which tombstones nothing once one live key is NULL; it now shares the NOT
    EXISTS statement with both backends."""
    from datetime import UTC, datetime

    from ecm_assets.sync.sink import tombstone_missing

    spec = make_spec(sqlite_url)
    with open_warehouse(warehouse).connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS context_store")
        conn.execute("CREATE SCHEMA IF NOT EXISTS ecm_staging")
        conn.execute(
            "CREATE TABLE context_store.customer_history (id BIGINT, _partition VARCHAR, "
            "_deleted BOOLEAN, _delete_kind VARCHAR, run_id VARCHAR, _synced_at TIMESTAMPTZ)"
        )
        conn.execute(
            "INSERT INTO context_store.customer_history VALUES (1, '00', false, NULL, 'r', NULL), "
            "(2, '00', false, NULL, 'r', NULL), (3, '01', false, NULL, 'r', NULL)"
        )
        conn.execute(
            "CREATE TABLE ecm_staging.sync_keys__customer_history (key BIGINT, _run_id VARCHAR)"
        )
        conn.execute(
            "INSERT INTO ecm_staging.sync_keys__customer_history VALUES (1, 'r'), (NULL, 'r')"
        )
        hard = tombstone_missing(conn, spec, "r", ["00", "01"], datetime.now(UTC))
        gone = conn.execute(
            "SELECT id FROM context_store.customer_history WHERE _delete_kind = 'hard' ORDER BY id"
        ).fetchall()
    assert hard == {"00": 1, "01": 1} and gone == [(2,), (3,)]


def test_resume_after_the_last_page_still_dedupes_a_key_read_twice(warehouse, sqlite_url):
    """Regression: a row updated during the scan to a cursor still below the boundary is
    read twice in one run. A run stopped after its last page and resumed stages no new page;
    the resumed attempt skipped the dedupe then, and the first load wrote the key twice."""
    create_source(sqlite_url, 2000)
    spec = make_spec(sqlite_url)
    wh = warehouse

    def move_then_stop(pages: int) -> None:
        if pages == 1:
            # The first row in cursor order (read by page 1) moves to a later cursor below
            # the boundary, with a newer version: page 4 reads it again.
            _exec(
                sqlite_url,
                "UPDATE customer_history SET version = version + 1, updated_at = (SELECT "
                "updated_at FROM customer_history ORDER BY updated_at, id LIMIT 1 OFFSET 1700) "
                "WHERE id = (SELECT id FROM customer_history ORDER BY updated_at, id LIMIT 1)",
            )
        if pages == 5:  # 2001 rows read: the last page
            raise ConnectionError("stopped after the last page")

    with pytest.raises(ConnectionError):
        run_job(spec, wh, on_page=move_then_stop)
    resumed = run_job(spec, wh)
    assert resumed.resumed and resumed.pages == 0
    counts = verify(spec, wh)
    assert _clean(counts), counts


def test_a_run_with_nothing_to_stage_publishes(warehouse, sqlite_url):
    """No page staged by any attempt (an empty source): nothing to deduplicate, the run
    still publishes."""
    create_source(sqlite_url, 0)
    spec = make_spec(sqlite_url, validation={"rules": [], "on_failure": "abort_and_alert"})
    result = run_job(spec, warehouse)
    assert result.pages == 0 and result.rows_written == 0
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        (manifest,) = load_manifests(conn, asset=spec.asset_name)
    assert manifest.status == RunStatus.PUBLISHED


def test_pages_are_staged_on_one_duckdb_thread_and_the_setting_is_put_back(
    tmp_path, sqlite_url, monkeypatch
):
    """While a page is read, staging must not take every core from the reader thread; the
    last page and the publish run with the warehouse's own setting again."""
    from ecm_assets.sync import runner

    warehouse = tmp_path / "warehouse.duckdb"  # a DuckDB setting: PostgreSQL stages by COPY
    create_source(sqlite_url, 1500)
    spec = make_spec(sqlite_url)
    seen: dict[str, list[int]] = {"staging": [], "publish": []}

    def threads(conn) -> int:
        return int(conn.execute("SELECT current_setting('threads')").fetchone()[0])

    plan, stage, judge = runner.plan, runner.stage_page, runner.judge_run

    def planning(conn, *args, **kwargs):
        conn.execute("SET threads = 3")  # a warehouse configured by its owner, before pages
        return plan(conn, *args, **kwargs)

    def staging(conn, *args, **kwargs):
        seen["staging"].append(threads(conn))
        return stage(conn, *args, **kwargs)

    def judging(conn, *args, **kwargs):
        seen["publish"].append(threads(conn))
        return judge(conn, *args, **kwargs)

    monkeypatch.setattr(runner, "plan", planning)
    monkeypatch.setattr(runner, "stage_page", staging)
    monkeypatch.setattr(runner, "judge_run", judging)
    result = run_job(spec, warehouse)
    assert result.rows_written == 1500
    # Three 500-row pages: two staged while the next one is read, the last one alone.
    assert seen["staging"] == [1, 1, 3]
    assert seen["publish"] == [3]
