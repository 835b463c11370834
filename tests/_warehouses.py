"""Named warehouses and copies of them on either backend, over tests/_backends.py.

The crash matrix publishes a base warehouse once per backend and gives every test its own
copy: the DuckDB file (and WAL) copied, or a PostgreSQL database created with the base
database as its TEMPLATE (a file-level copy on the server: far cheaper than republishing).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests._backends import (
    ADMIN_URL,
    WAREHOUSE_KINDS,
    _url_for,
    fresh_postgres_url,
    require_postgres,
)

BACKENDS = WAREHOUSE_KINDS


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def warehouse_for(backend: str, directory: Path, name: str = "warehouse") -> Iterator[str]:
    """A new, empty warehouse: DuckDB file `<name>.duckdb` under `directory`, or the URL of a
    fresh PostgreSQL database."""
    if backend == "postgresql":
        with fresh_postgres_url() as url:
            yield url
        return
    if backend != "duckdb":
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    yield str(directory / f"{name}.duckdb")


@contextmanager
def copy_of(source: str, directory: Path, name: str = "copy") -> Iterator[str]:
    """A copy of warehouse `source`: its file and WAL, or a database made from it (nobody
    may be connected to `source` meanwhile); dropped or left in `directory` afterwards."""
    if source.startswith("postgresql://"):
        require_postgres()
        database = f"ecm_t_{uuid.uuid4().hex[:16]}"
        template = source.rpartition("/")[2]
        _admin(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        try:
            yield _url_for(database)
        finally:
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        return
    target = directory / f"{name}.duckdb"
    shutil.copyfile(source, target)
    wal = Path(source + ".wal")
    if wal.exists():
        shutil.copyfile(wal, Path(str(target) + ".wal"))
    yield str(target)
