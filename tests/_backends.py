"""Run a test on each warehouse backend: a DuckDB file, and a fresh PostgreSQL database.

A plain module, shared by the publish, crash, concurrency and lifecycle tests:

    from tests._backends import WAREHOUSE_KINDS, warehouse_target

    @pytest.fixture(params=WAREHOUSE_KINDS)
    def target(request, tmp_path):
        with warehouse_target(request.param, tmp_path) as url:
            yield url

PostgreSQL tests need the server of this project's machines (127.0.0.1:5432, trust auth,
user postgres; ECM_TEST_POSTGRES_URL overrides the admin URL). Each test gets its own
database, `ecm_t_<uuid>`, dropped after it (WITH (FORCE): a killed child may still hold a
session). When the server is unreachable the test skips with the reason, unless CI is
"true": there it fails, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

#: The maintenance database tests create their own databases from.
ADMIN_URL = os.environ.get("ECM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: Parameter ids of a backend matrix.
WAREHOUSE_KINDS = ("duckdb", "postgresql")
warehouse_targets = WAREHOUSE_KINDS  # the name the matrices use


@cache
def _unreachable_reason() -> str | None:
    import psycopg

    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to connect is a reason to skip (or to fail on CI)
        return f"PostgreSQL at {ADMIN_URL} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is unreachable; fail instead when CI=true."""
    reason = _unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests may not skip)")
    pytest.skip(reason)


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    require_postgres()
    name = f"ecm_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def warehouse_target(kind: str, tmp_path: Path) -> Iterator[str]:
    """The warehouse target (for open_warehouse) of a backend kind: a DuckDB file path in
    `tmp_path`, or the URL of a fresh PostgreSQL database."""
    if kind == "duckdb":
        yield str(tmp_path / "warehouse.duckdb")
    elif kind == "postgresql":
        with fresh_postgres_url() as url:
            yield url
    else:
        raise ValueError(f"unknown warehouse kind {kind!r}; use one of {WAREHOUSE_KINDS}")
