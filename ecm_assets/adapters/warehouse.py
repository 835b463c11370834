"""DuckDB connections that wait for the single-writer file lock instead of failing a run.

A DuckDB file admits one read-write process at a time. Runs, backfill steps and the CLI all
meet here, so a held lock is retried with capped exponential backoff and jitter until a
deadline, then reported with the file and the holder DuckDB names.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)


class WarehouseLockedError(RuntimeError):
    """The warehouse file stayed locked by another process past the deadline."""


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set lock" in text)


@contextmanager
def connect(
    database: str | Path,
    *,
    read_only: bool = False,
    timeout_seconds: float = 120.0,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, retrying while another process holds the file lock."""
    path = Path(database)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    attempt = 0
    rng = random.Random()  # jitter only spreads retries; it never touches data
    while True:
        attempt += 1
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseLockedError(
                    f"warehouse {path} is still locked by another process after "
                    f"{timeout_seconds:.0f}s and {attempt} attempts ({exc}). DuckDB admits one "
                    "writing process: wait for the other run to finish, or raise "
                    "lock_timeout_seconds."
                ) from exc
            sleep = min(delay * (1 + rng.random()), remaining, 2.0)
            if on_retry is not None:
                on_retry(attempt, sleep, exc)
            else:
                log.info(
                    "warehouse %s locked (attempt %d), retrying in %.2fs", path, attempt, sleep
                )
            time.sleep(sleep)
            delay = min(delay * 2, 2.0)
    try:
        yield conn
    finally:
        conn.close()


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def owned_filter(column: str) -> str:
    """SQL predicate for "column is one of the owned dates" that DuckDB can prune on.

    The BETWEEN lets zone maps skip row groups of other dates, so the cost does not grow
    with the partitions already published; list_contains then keeps it exact for gaps.
    """
    return f"({column} BETWEEN ? AND ? AND list_contains(?::DATE[], {column}))"


def owned_params(owned: Sequence[date]) -> list[object]:
    values = sorted(owned)
    return [values[0], values[-1], values]
