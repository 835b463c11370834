"""The warehouse seam: backend choice, the PostgreSQL backend's SQL, bulk paths and locks, and
the same publish contract (checksums included) on DuckDB and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from ecm_assets.adapters.backends import open_warehouse, warehouse_target
from ecm_assets.adapters.backends.duckdb import DuckDBWarehouse
from ecm_assets.adapters.backends.postgres import DIALECT as PG_DIALECT
from ecm_assets.adapters.backends.postgres import PostgresWarehouse, redact, translate
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.manifest.ledger import load_manifests
from ecm_assets.manifest.states import RunStatus
from ecm_assets.publish import protocol
from ecm_assets.publish.failpoints import ENV_VAR
from ecm_assets.publish.protocol import (
    PublishRequest,
    business_checksum,
    publish_partitions,
    read_partitions,
)
from tests._backends import WAREHOUSE_KINDS, fresh_postgres_url
from tests._backends import warehouse_target as backend_target

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)
AS_OF = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)

#: Every column type the checksum must see identically on both backends.
RICH = DatasetContract(
    name="rich_values",
    description="one column of each type",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("amount", "DOUBLE"),
        Column("seen_at", "TIMESTAMPTZ"),
        Column("local_at", "TIMESTAMP"),
        Column("count", "BIGINT"),
        Column("small", "INTEGER"),
        Column("flag", "BOOLEAN"),
        Column("note", "VARCHAR"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
)


def rich_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "business_date": [D1, D1, D1, D2, D2],
            "unit_id": ["U01", "U02", "U03", "U01", "U02"],
            "amount": [0.1, 1e-300, -0.0, 123456789.123456789, None],
            "seen_at": [
                pd.Timestamp("2026-09-01 23:59:59.999999", tz="UTC"),
                pd.Timestamp("2026-09-01 08:00", tz="Europe/Zurich"),
                None,
                pd.Timestamp("1970-01-01", tz="UTC"),
                pd.Timestamp("2026-09-02 00:00:00.000001", tz="UTC"),
            ],
            "local_at": [
                pd.Timestamp("2026-09-01 12:34:56.789"),
                None,
                pd.Timestamp("2000-02-29"),
                pd.Timestamp("2026-09-02"),
                pd.Timestamp("2026-09-02 01:02:03"),
            ],
            "count": pd.array([1, None, -(2**62), 0, 7], dtype="Int64"),
            "small": pd.array([1, 2, None, -3, 2**31 - 1], dtype="Int32"),
            "flag": pd.array([True, False, None, True, False], dtype="boolean"),
            "note": ["plain", "", None, 'quote " comma , newline\nand ü', "%s ? '"],
        }
    )


@pytest.fixture(params=WAREHOUSE_KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with backend_target(request.param, tmp_path) as url:
        yield url


def request_for(
    contract: DatasetContract, data: pd.DataFrame, owned: tuple[date, ...], run_id: str, **kw
) -> PublishRequest:
    return PublishRequest(contract, owned, run_id, AS_OF, data, **kw)


# ------------------------------------------------------------------------ choosing a backend


def test_open_warehouse_picks_the_backend_from_the_target(tmp_path):
    assert isinstance(open_warehouse(tmp_path / "w.duckdb"), DuckDBWarehouse)
    duck = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    assert isinstance(duck, DuckDBWarehouse) and duck.path == tmp_path / "w.duckdb"
    assert duck.kind == "duckdb" and duck.default_pool_size == 1
    pg = open_warehouse("postgresql://etl:s3cret@db.example:5433/wh")
    assert isinstance(pg, PostgresWarehouse) and pg.kind == "postgresql"
    assert pg.default_pool_size > 1
    assert pg.url == "postgresql://etl:***@db.example:5433/wh"
    assert "s3cret" not in pg.url
    assert open_warehouse(pg) is pg


def test_warehouse_target_prefers_the_url_variable(monkeypatch):
    monkeypatch.setenv("ECM_WAREHOUSE", "/tmp/old.duckdb")
    monkeypatch.setenv("ECM_WAREHOUSE_URL", "postgresql://postgres@127.0.0.1/x")
    assert warehouse_target() == "postgresql://postgres@127.0.0.1/x"
    monkeypatch.delenv("ECM_WAREHOUSE_URL")
    assert warehouse_target() == "/tmp/old.duckdb"


def test_placeholders_are_translated_outside_quotes_only():
    assert translate("SELECT ? WHERE a LIKE '%x?' AND b = ?") == (
        "SELECT %s WHERE a LIKE '%%x?' AND b = %s"
    )
    assert translate('SELECT "a?b" FROM t WHERE c = ? AND d % 2 = 0') == (
        'SELECT "a?b" FROM t WHERE c = %s AND d %% 2 = 0'
    )
    assert translate("SELECT 1") == "SELECT 1"


def test_postgres_dialect_maps_duckdb_types():
    dialect = PG_DIALECT
    assert dialect.sql_type("DOUBLE") == "DOUBLE PRECISION"
    assert dialect.sql_type("VARCHAR NOT NULL") == "TEXT NOT NULL"
    assert dialect.sql_type("TIMESTAMPTZ") == "TIMESTAMPTZ"
    assert dialect.sql_type("JSON") == "TEXT"
    assert dialect.owned_filter('"d"') == ('("d" BETWEEN ? AND ? AND "d" = ANY(CAST(? AS DATE[])))')
    assert dialect.temp_table("s") == 'pg_temp."s"'


def test_connection_error_names_the_url_without_its_password():
    warehouse = open_warehouse("postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    with pytest.raises(ConnectionError) as err, warehouse.connect(timeout_seconds=2):
        pass
    assert "postgresql://postgres:***@127.0.0.1:1/nowhere" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


# ------------------------------------------------------------------------ the PostgreSQL side


def test_arrow_reads_round_trip_every_type_exactly():
    with fresh_postgres_url() as url, open_warehouse(url).connect() as conn:
        publish_partitions(conn, request_for(RICH, rich_frame(), (D1, D2), "run-1"))
        table = conn.arrow(
            f"SELECT * FROM {RICH.table} WHERE business_date BETWEEN ? AND ? "
            "ORDER BY business_date, unit_id",
            [D1, D2],
        )
        slow = conn.execute(
            f"SELECT * FROM {RICH.table} ORDER BY business_date, unit_id"
        ).fetch_arrow_table()
    assert table.to_pylist() == slow.to_pylist()
    types = {f.name: str(f.type) for f in table.schema}
    assert types["amount"] == "double" and types["seen_at"] == "timestamp[us, tz=UTC]"
    assert types["local_at"] == "timestamp[us]" and types["small"] == "int32"
    notes = [r["note"] for r in table.to_pylist()]
    assert notes[1] == "" and notes[2] is None
    assert notes[3] == 'quote " comma , newline\nand ü'


def test_read_only_connection_refuses_writes():
    import psycopg

    with fresh_postgres_url() as url:
        warehouse = open_warehouse(url)
        with warehouse.connect() as conn:
            conn.execute("CREATE TABLE t (a BIGINT)")
        with warehouse.connect(read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("INSERT INTO t VALUES (?)", [1])


def _release_later(conn, seconds: float, release) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        release()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_partition_lock_wait_ends_after_the_timeout_naming_the_holder():
    """Like the DuckDB file lock, a PostgreSQL lock wait is bounded by the connection's
    timeout_seconds and says who holds the lock. Before, the wait lasted until the holder let
    go (here after 8 s): the call returned instead of raising."""
    from ecm_assets.adapters.warehouse import WarehouseLockedError

    with fresh_postgres_url() as url:
        warehouse = open_warehouse(url)
        with warehouse.connect() as holder, warehouse.connect(timeout_seconds=1) as waiter:
            pid = holder.raw.info.backend_pid
            lock = "SELECT pg_advisory_{}(hashtext('case_events'), hashtext('2026-09-01'))"
            holder.raw.execute(lock.format("lock"))
            release = _release_later(holder, 8, lambda: holder.raw.execute(lock.format("unlock")))
            started = time.monotonic()
            with (
                pytest.raises(WarehouseLockedError) as err,
                waiter.lock_partitions("case_events", ["2026-09-01"]),
            ):
                pass
            assert time.monotonic() - started < 6
            message = str(err.value)
            assert "partition case_events 2026-09-01" in message
            assert f"server pid {pid} (ecm_assets pid {os.getpid()}" in message
            assert "lock_timeout (1s)" in message
            release.join(timeout=15)
            # The holder let go: the same wait now succeeds.
            with waiter.lock_partitions("case_events", ["2026-09-01"]):
                pass


def test_a_table_lock_wait_ends_after_the_timeout():
    from ecm_assets.adapters.warehouse import WarehouseLockedError

    with fresh_postgres_url() as url:
        warehouse = open_warehouse(url)
        with warehouse.connect() as setup:
            setup.execute("CREATE TABLE t (a BIGINT)")
        with warehouse.connect() as holder, warehouse.connect(timeout_seconds=1) as waiter:
            holder.begin()
            holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            release = _release_later(holder, 8, holder.rollback)
            started = time.monotonic()
            with pytest.raises(WarehouseLockedError, match=r"lock_timeout \(1s\).*FROM t"):
                waiter.execute("SELECT count(*) FROM t")
            assert time.monotonic() - started < 6
            release.join(timeout=15)


# ---------------------------------------------------------------- one contract, two backends


def test_same_frame_gives_identical_checksums_on_both_backends(tmp_path):
    results = {}
    stored = {}
    for kind in WAREHOUSE_KINDS:
        with backend_target(kind, tmp_path) as url, open_warehouse(url).connect() as conn:
            # Published (so _verify_stored passed), then read back and checksummed again.
            results[kind] = publish_partitions(
                conn, request_for(RICH, rich_frame(), (D1, D2), "run-1")
            )
            stored[kind] = {
                d: business_checksum(conn, RICH, RICH.table, "WHERE business_date = ?", [d])
                for d in (D1, D2)
            }
            frame = read_partitions(conn, RICH, D1, D2)
            stored[kind]["frame"] = protocol.frame_checksum(RICH, frame)
    duck, pg = results["duckdb"], results["postgresql"]
    assert duck.checksums_by_partition == pg.checksums_by_partition
    assert duck.business_checksum == pg.business_checksum
    assert duck.rows_by_partition == pg.rows_by_partition == {D1.isoformat(): 3, "2026-09-02": 2}
    assert stored["duckdb"] == stored["postgresql"]
    assert stored["duckdb"][D1] == duck.checksums_by_partition[D1.isoformat()]
    assert stored["duckdb"]["frame"] == duck.business_checksum


def test_upstream_relation_runs_duckdb_sql_transforms_on_both_backends(target):
    from ecm_assets.contracts.transform import run_sql

    with open_warehouse(target).connect() as conn:
        publish_partitions(conn, request_for(RICH, rich_frame(), (D1, D2), "run-1"))
        conn.begin()
        try:
            rel = protocol.upstream_relation(conn, RICH, D1, D2)
            out = run_sql(
                "SELECT business_date, count(*) AS n, sum(amount) AS total FROM rich "
                "GROUP BY 1 ORDER BY 1",
                rich=rel,
            )
            assert rel.run_ids() == ("run-1",)
        finally:
            conn.rollback()
    assert out["n"].tolist() == [3, 2]


def test_held_run_then_approval_publishes_on_both_backends(target):
    from ecm_assets.publish.review import load_held

    with open_warehouse(target).connect() as conn:
        held = publish_partitions(
            conn, request_for(RICH, rich_frame(), (D1, D2), "run-held", hold=True)
        )
        assert held.held
        assert load_manifests(conn, run_id="run-held")[0].status == RunStatus.HELD
        data, _ = load_held(conn, RICH, "run-held")
        assert len(data) == 5
        done = publish_partitions(
            conn,
            request_for(RICH, data, (D1, D2), "run-held", approval={"actor": "ana", "note": "ok"}),
        )
        assert done.business_checksum == held.business_checksum
        assert load_manifests(conn, run_id="run-held")[0].status == RunStatus.PUBLISHED
        assert len(read_partitions(conn, RICH, D1, D2)) == 5


# ------------------------------------------------------------------------ crashes and locks


def _publish_in_child(url: str, failpoint: str, run_id: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.test_adapters.test_backends import RICH, rich_frame, request_for, D2
        from ecm_assets.adapters.backends import open_warehouse
        from ecm_assets.publish.protocol import publish_partitions
        data = rich_frame()
        data = data[data["business_date"] == D2]
        with open_warehouse({url!r}).connect() as conn:
            publish_partitions(conn, request_for(RICH, data.assign(note="crashed"), (D2,),
                               {run_id!r}, durable_staging=True))
        """
    )
    env = {**os.environ, ENV_VAR: f"{failpoint}=kill"}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=120, check=False
    )


BEFORE_COMMIT = (
    "publish.before_staging",
    "publish.mid_staging",
    "publish.after_staging",
    "publish.before_delete",
    "publish.after_delete",
    "publish.after_insert",
    "publish.before_commit",
)


@pytest.mark.parametrize("point", [*BEFORE_COMMIT, "publish.after_commit"])
def test_killed_publish_keeps_the_contract_and_releases_its_locks(point):
    """SIGKILL at each publish step on PostgreSQL: before COMMIT the published rows stay
    exactly as they were and the next publish settles the dead run; after COMMIT the run is
    PUBLISHED. Either way the dead session's partition locks are gone."""
    with fresh_postgres_url() as url:
        warehouse = open_warehouse(url)
        with warehouse.connect() as conn:
            publish_partitions(conn, request_for(RICH, rich_frame(), (D1, D2), "run-1"))
            before = read_partitions(conn, RICH, D1, D2, with_provenance=True)
        child = _publish_in_child(url, point, "run-crashed")
        assert child.returncode == -9, child.stderr.decode()
        with warehouse.connect() as conn:
            after = read_partitions(conn, RICH, D1, D2, with_provenance=True)
            crashed = load_manifests(conn, run_id="run-crashed")
            if point not in BEFORE_COMMIT:
                assert crashed[0].status == RunStatus.PUBLISHED
                assert set(after.loc[after["note"] == "crashed", "run_id"]) == {"run-crashed"}
                return
            assert after.equals(before)
            data = rich_frame()
            result = publish_partitions(
                conn, request_for(RICH, data[data["business_date"] == D2], (D2,), "run-3")
            )
            assert conn.lock_waits == []  # the dead session's locks went with it
            assert [r.run_id for r in result.recoveries] == ["run-crashed"]
            assert load_manifests(conn, run_id="run-crashed")[0].status == RunStatus.FAILED
            assert conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_staging'"
            ).fetchone() == (0,)


class _Pause:
    """A failpoint hook that holds a chosen thread at a point until released, and records
    the order in which threads pass the points."""

    def __init__(self, thread: str, point: str) -> None:
        self.thread, self.point = thread, point
        self.reached = threading.Event()
        self.release = threading.Event()
        self.passed: list[tuple[str, str]] = []

    def __call__(self, name: str) -> None:
        me = threading.current_thread().name
        self.passed.append((me, name))
        if me == self.thread and name == self.point:
            self.reached.set()
            assert self.release.wait(120), "the test never released the paused publish"


def _run(name: str, url: str, request: PublishRequest, out: dict) -> threading.Thread:
    def body() -> None:
        with open_warehouse(url).connect() as conn:
            out[name] = publish_partitions(conn, request)
            out[f"{name}.waits"] = list(conn.lock_waits)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


def _waiting_for_advisory_lock(url: str) -> int:
    with open_warehouse(url).connect() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()[0]


@pytest.mark.parametrize("mode", ["replace", "versioned"])
def test_disjoint_partitions_do_not_wait_and_the_same_partition_serializes(monkeypatch, mode):
    from dataclasses import replace

    contract = RICH if mode == "replace" else replace(RICH, name="rich_versions", publish_mode=mode)
    data = rich_frame()
    day1, day2 = data[data["business_date"] == D1], data[data["business_date"] == D2]
    with fresh_postgres_url() as url:
        with open_warehouse(url).connect() as conn:
            publish_partitions(conn, request_for(contract, data, (D1, D2), "run-seed"))
        pause = _Pause("A", "publish.after_insert")
        monkeypatch.setattr(protocol, "failpoint", pause)
        out: dict = {}

        # Disjoint: A holds D1 and is paused inside its swap transaction (rows deleted and
        # inserted, not committed); B publishes D2 to the end meanwhile.
        a = _run("A", url, request_for(contract, day1, (D1,), "run-a"), out)
        assert pause.reached.wait(120)
        b = _run("B", url, request_for(contract, day2, (D2,), "run-b"), out)
        b.join(120)
        assert not b.is_alive() and out["B.waits"] == []
        assert a.is_alive() and "A" not in out  # A is still inside, holding D1
        pause.release.set()
        a.join(120)
        assert out["A.waits"] == []
        assert pause.passed.index(("B", "publish.after_commit")) < pause.passed.index(
            ("A", "publish.after_commit")
        )

        # Same partition: C holds D1; D waits for it and publishes only after C committed.
        pause = _Pause("C", "publish.after_staging")
        monkeypatch.setattr(protocol, "failpoint", pause)
        c = _run("C", url, request_for(contract, day1, (D1,), "run-c"), out)
        assert pause.reached.wait(120)
        d = _run("D", url, request_for(contract, day1.assign(note="d"), (D1,), "run-d"), out)
        while _waiting_for_advisory_lock(url) == 0:
            assert d.is_alive(), "D finished without waiting for C's partition lock"
            d.join(0.05)
        assert "D" not in out and not any(who == "D" for who, _ in pause.passed)
        pause.release.set()
        c.join(120)
        d.join(120)
        assert out["D.waits"] == [(contract.name, D1.isoformat())]
        assert out["C.waits"] == []
        order = [who for who, point in pause.passed if point == "publish.after_commit"]
        assert order == ["C", "D"]
        first_d = pause.passed.index(("D", "publish.before_staging"))
        assert first_d > pause.passed.index(("C", "publish.after_commit"))
        with open_warehouse(url).connect() as conn:
            rows = read_partitions(conn, contract, D1, D2, with_provenance=True)
        assert set(rows.loc[rows["business_date"] == pd.Timestamp(D1), "run_id"]) == {"run-d"}
        assert set(rows.loc[rows["business_date"] == pd.Timestamp(D2), "run_id"]) == {"run-b"}


def test_dry_run_and_shadow_diff_identically_on_both_backends(tmp_path):
    from ecm_assets.publish.modes import evaluate_without_publishing

    changed = rich_frame()
    changed.loc[0, "amount"] = 0.2  # U01 of D1 changes
    changed = changed[changed["unit_id"] != "U03"]  # U03 of D1 is removed
    diffs = {}
    for kind in WAREHOUSE_KINDS:
        with backend_target(kind, tmp_path) as url, open_warehouse(url).connect() as conn:
            publish_partitions(conn, request_for(RICH, rich_frame(), (D1, D2), "run-1"))
            before = read_partitions(conn, RICH, D1, D2, with_provenance=True)
            dry = evaluate_without_publishing(
                conn, request_for(RICH, changed, (D1, D2), "run-dry", mode="dry_run")
            )
            shadow = evaluate_without_publishing(
                conn, request_for(RICH, changed, (D1, D2), "run-shadow", mode="shadow")
            )
            assert read_partitions(conn, RICH, D1, D2, with_provenance=True).equals(before)
            shadowed = conn.execute('SELECT count(*) FROM "ecm_shadow"."rich_values"').fetchone()[0]
            assert shadowed == 4
            assert load_manifests(conn, run_id="run-shadow")[0].status == RunStatus.SHADOWED
            diffs[kind] = [d.to_json() for d in dry.diffs], shadow.business_checksum
    assert diffs["duckdb"] == diffs["postgresql"]
    d1 = diffs["duckdb"][0][0]
    assert (d1["added"], d1["removed"], d1["changed"], d1["unchanged"]) == (0, 1, 1, 1)


def test_outbox_and_lease_heartbeat_on_postgresql():
    from ecm_assets.manifest.lease import Heartbeat, acquire, load_lease, release
    from ecm_assets.manifest.ledger import Manifest, plan
    from ecm_assets.publish.outbox import mark_delivered, owed

    with fresh_postgres_url() as url:
        warehouse = open_warehouse(url)
        with warehouse.connect() as conn:
            publish_partitions(conn, request_for(RICH, rich_frame(), (D1, D2), "run-1"))
            assert [(m.run_id, m.asset) for m in owed(conn)] == [("run-1", RICH.name)]
            assert mark_delivered(conn, [("run-1", RICH.name, 1)]) == [("run-1", RICH.name, 1)]
            assert owed(conn) == []
            manifest = plan(conn, Manifest(run_id="run-2", asset=RICH.name))
            acquire(conn, manifest)
            first = load_lease(conn, manifest)
        assert first is not None
        try:
            with Heartbeat(url, interval=0.05):
                renewed = first
                for _ in range(2400):  # a safety net against a hang, not a timing assertion
                    with warehouse.connect(read_only=True) as conn:
                        renewed = load_lease(conn, manifest)
                    if renewed.renewed_at != first.renewed_at:
                        break
                    threading.Event().wait(0.05)
        finally:
            release(manifest.run_id, manifest.asset, manifest.attempt)
        assert renewed.expires_at > first.expires_at


def test_versioned_hourly_view_keys_the_fall_back_hours_alike_on_both_backends(tmp_path):
    """The current-rows view joins the pointer by key text; on PostgreSQL that text comes
    from its own SQL and must equal DuckDB's, including the repeated fall-back hour."""
    from dataclasses import replace

    from tests.test_publish.test_partition_kinds import EDT1, EST1, NY

    contract = replace(NY, name="ny_versions", publish_mode="versioned")
    data = pd.DataFrame(
        {"hour": [EDT1, EDT1, EST1], "meter": ["a", "b", "a"], "kwh": [1.0, 2.0, 3.0]}
    )
    seen = {}
    for kind in WAREHOUSE_KINDS:
        with backend_target(kind, tmp_path) as url, open_warehouse(url).connect() as conn:
            result = publish_partitions(conn, request_for(contract, data, (EDT1, EST1), "run-1"))
            assert set(result.versions) == {"2026-11-01-01:00", "2026-11-01-01:00-0500"}
            seen[kind] = conn.execute(
                f"SELECT hour, meter, kwh, version FROM {contract.table} ORDER BY 1, 2"
            ).fetchall()
    assert seen["duckdb"] == seen["postgresql"] and len(seen["duckdb"]) == 3
