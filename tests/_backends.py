"""Warehouse backends for tests: a DuckDB file, or a fresh PostgreSQL database per test.

Tests that prove a publish rule on both backends take `backend` in BACKENDS and open the
warehouse through the seam (`open_warehouse(target)`), never `duckdb.connect`. A PostgreSQL
database is created as `ecm_t_<uuid>` on the server at POSTGRES_URL and dropped WITH (FORCE)
afterwards. An unreachable server skips the test, unless CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

#: The maintenance database of the test server (trust auth, user postgres).
POSTGRES_URL = os.environ.get(
    "ECM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("duckdb", "postgresql")


@lru_cache(maxsize=1)
def _unreachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the server
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(exc).strip()[:200]}"
    return None


def require_postgres() -> None:
    """Skip when the test server is unreachable, except in CI (where it must be there)."""
    reason = _unreachable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def database_url(name: str) -> str:
    """POSTGRES_URL pointed at database `name`."""
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh database `ecm_t_<uuid>` (a copy of `template`'s, given its URL); its URL."""
    require_postgres()
    name = f"ecm_t_{uuid.uuid4().hex[:16]}"
    source = f' TEMPLATE "{urlsplit(template).path.lstrip("/")}"' if template else ""
    _admin(f'CREATE DATABASE "{name}"{source}')
    try:
        yield database_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def warehouse_for(backend: str, directory: Path, name: str = "warehouse") -> Iterator[str]:
    """A new, empty warehouse: a DuckDB file path under `directory`, or a database URL."""
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
        return
    yield str(directory / f"{name}.duckdb")


@contextmanager
def copy_of(source: str, directory: Path, name: str = "copy") -> Iterator[str]:
    """A copy of warehouse `source` (its file and WAL, or a database made from it)."""
    if source.startswith("postgresql://"):
        with postgres_database(template=source) as url:
            yield url
        return
    target = directory / f"{name}.duckdb"
    shutil.copyfile(source, target)
    wal = Path(source + ".wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(target) + ".wal"))
    yield str(target)
