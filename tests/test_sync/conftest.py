"""Sync test sources (a small SQLite customer_history, or a PostgreSQL schema per test) and
warehouses (a DuckDB file, or a fresh PostgreSQL database per test)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecm_assets.sync.spec import SHIPPED_JOBS_DIR, JobSpec, parse_spec
from tests._backends import (
    WAREHOUSE_KINDS,
    fresh_postgres_url,
    require_postgres,
    warehouse_target,
)

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def make_spec(
    url: str, connector: str = "sqlite", table: str = "customer_history", **overrides
) -> JobSpec:
    return parse_spec(spec_data(url, connector, table, **overrides), f"<test spec {table}>")


def spec_data(
    url: str, connector: str = "sqlite", table: str = "customer_history", **overrides
) -> dict:
    """The demo spec pointed at a test source; `a__b=v` overrides field a.b."""
    data = json.loads((SHIPPED_JOBS_DIR / "historical-sync-001.json").read_text())
    data["source"]["url"] = url
    data["source"]["connector"] = connector
    data["source"]["query"] = f"SELECT * FROM {table} WHERE updated_at >= :last_sync"
    data["checkpoint"] = {"every_rows": overrides.pop("page_rows", 500)}
    for key, value in overrides.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return data


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.sqlite'}"


def _pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            return None
    except Exception as exc:  # any failure to connect means: not here
        return str(exc).splitlines()[0]


def _need_pg() -> None:
    """The server (tests/_backends.py) and its `test` database, where sources live."""
    require_postgres()
    why = _pg_reachable()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL database test at 127.0.0.1:5432 is required in CI: {why}")
        pytest.skip(f"PostgreSQL database test at 127.0.0.1:5432 is not reachable: {why}")


@pytest.fixture
def pg_warehouse() -> Iterator[str]:
    """A postgresql:// warehouse URL: a fresh database ecm_t_<uuid>, dropped afterwards."""
    with fresh_postgres_url() as url:
        yield url


@pytest.fixture(params=WAREHOUSE_KINDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The sync's warehouse on each backend: a DuckDB file, or a fresh PostgreSQL database."""
    with warehouse_target(request.param, tmp_path) as target:
        yield target


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(url, schema): a fresh schema on the local PostgreSQL, dropped afterwards."""
    _need_pg()
    import psycopg

    schema = f"ecm_sync_{uuid.uuid4().hex[:10]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url, schema
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def read(warehouse: str, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of one query on the warehouse, read-only, on either backend."""
    from ecm_assets.adapters.backends import open_warehouse

    with open_warehouse(warehouse).connect(read_only=True) as conn:
        return conn.execute(sql, params).fetchall()
