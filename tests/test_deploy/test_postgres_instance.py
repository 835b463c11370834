"""The shipped dagster.postgres.yaml runs the code location with its instance on PostgreSQL:
`dagster asset materialize` records the run and its materialization in PostgreSQL, and nothing
in DAGSTER_HOME holds run or event storage.

Needs PostgreSQL at 127.0.0.1:5432 (trust auth); skips without it, except when CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

if os.environ.get("CI") == "true":
    import psycopg2  # CI installs the dev extras: a missing driver fails, never skips
else:
    psycopg2 = pytest.importorskip("psycopg2", reason="dagster-postgres is not installed")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": ""}


def _admin():
    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


@pytest.fixture
def instance_db() -> Iterator[str]:
    try:
        admin = _admin()
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc})")
    name = f"ecm_instance_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_demo_partition_materializes_with_the_instance_on_postgres(
    demo_data, instance_db: str, tmp_path: Path
) -> None:
    data_root, _ = demo_data
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": PG["password"],
        "DAGSTER_PG_DB": instance_db,
        "ECM_DATA_DIR": str(data_root),
        "ECM_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }
    done = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "ecm_assets.definitions",
         "--select", "case_events", "--partition", "2026-09-02"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    # The run and its materialization are in PostgreSQL ...
    conn = psycopg2.connect(dbname=instance_db, connect_timeout=5, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
            assert cur.fetchone()[0] == 1
            cur.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
                " AND asset_key = %s AND partition = %s",
                (dg.AssetKey("case_events").to_string(), "2026-09-02"),
            )
            assert cur.fetchone()[0] == 1
    finally:
        conn.close()
    # ... and not in SQLite files under DAGSTER_HOME.
    assert not list(home.rglob("*.db"))


def test_the_postgres_warehouse_pool_limit_is_set_in_the_instance(
    instance_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make dev-postgres` and benchmarks/backfill.py do: the per-pool limit of
    ecm_postgres_warehouse lives in the PostgreSQL instance; unset pools keep default_limit 1."""
    from ecm_assets.orchestration.factory import POSTGRES_POOL, WAREHOUSE_POOL

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.postgres.yaml", home / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": PG["password"],
        "DAGSTER_PG_DB": instance_db,
    }
    done = subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", POSTGRES_POOL, "4"],
        cwd=tmp_path, env={**os.environ, **settings}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert storage.get_concurrency_info(POSTGRES_POOL).slot_count == 4
        limits = {p.name: p.limit for p in storage.get_pool_limits()}
        assert limits == {POSTGRES_POOL: 4}
        assert WAREHOUSE_POOL not in limits
        assert instance.global_op_concurrency_default_limit == 1
