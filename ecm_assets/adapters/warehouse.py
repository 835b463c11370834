"""DuckDB connections that wait for the single-writer file lock instead of failing a run.

A DuckDB file admits one read-write process at a time, and any other process that has it
open, even read-only (an analyst's shell), holds its lock. Runs, backfill steps and the CLI
all meet here, so a held lock is waited for with capped exponential backoff and jitter until
a deadline: one log line when the wait starts, naming the holder, one when it ends. Past the
deadline WarehouseLockedError names the holder and what to do; the run's retry policy
(orchestration/retries.py) retries it, so a reader that goes away is waited out and one that
stays fails the run in bounded time, never hangs it.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import duckdb

log = logging.getLogger(__name__)

#: Where consumers are told how to read without stalling publishes.
READING_DOC = "docs/publish.md#reading-the-warehouse"


class WarehouseLockedError(RuntimeError):
    """The warehouse file stayed locked by another process past the deadline."""


class WarehouseMissingError(FileNotFoundError):
    """A read-only open of a warehouse file that does not exist (nothing was created)."""


class _Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set lock" in text)


_HOLDER = re.compile(r"held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def lock_holder(exc: BaseException) -> str:
    """The process DuckDB names as the lock holder: its pid and, when this host can see it,
    its command line (a reader's shell, a dagster run...)."""
    match = _HOLDER.search(str(exc))
    if match is None:
        return "another process"
    pid = match.group("pid")
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    except OSError:
        command = match.group("program")
    command = " ".join(command.split())  # one line, whatever the command held
    command = command if len(command) <= 160 else command[:157] + "..."
    return f"PID {pid} ({command})"


@contextmanager
def connect(
    database: str | Path,
    *,
    read_only: bool = False,
    timeout_seconds: float = 120.0,
    logger: _Log | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting while another process holds the file lock.

    A read-only open never creates the file: a warehouse that does not exist is
    WarehouseMissingError (only a publish, a read-write open, creates one).
    """
    path = Path(database)
    out = logger if logger is not None else log
    if read_only:
        if not path.exists():
            raise WarehouseMissingError(f"warehouse {path} does not exist")
        if not path.is_file():
            raise WarehouseMissingError(f"warehouse {path} is not a file")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + timeout_seconds
    delay = 0.05
    attempt = 0
    holder = None
    rng = random.Random()  # jitter only spreads retries; it never touches data
    while True:
        attempt += 1
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            if holder is None:
                holder = lock_holder(exc)
                out.warning(
                    f"warehouse {path} is locked by {holder}; waiting up to "
                    f"{timeout_seconds:.0f}s for it"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out.warning(
                    f"warehouse {path}: gave up waiting for {holder} after "
                    f"{time.monotonic() - started:.1f}s"
                )
                raise WarehouseLockedError(
                    f"warehouse {path} is still locked by another process, {holder}, after "
                    f"{timeout_seconds:.0f}s and {attempt} attempts. DuckDB admits one process "
                    "while another has the file open, even read-only: if that is a reader, "
                    "close its connection (read with short-lived connections, see "
                    f"{READING_DOC}); if it is a run, wait for it or raise "
                    "lock_timeout_seconds. The run's retry policy retries this."
                ) from exc
            time.sleep(min(delay * (1 + rng.random()), remaining, 2.0))
            delay = min(delay * 2, 2.0)
    if holder is not None:
        out.info(
            f"warehouse {path}: lock acquired after waiting {time.monotonic() - started:.1f}s "
            f"for {holder} ({attempt} attempts)"
        )
    try:
        yield conn
    finally:
        conn.close()


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def owned_filter(column: str, sql_type: str = "DATE") -> str:
    """SQL predicate for "column is one of the owned partitions" that DuckDB can prune on.

    The BETWEEN lets zone maps skip row groups of other partitions, so the cost does not grow
    with the partitions already published; list_contains then keeps it exact for gaps (and
    for the keys between two owned list keys). `sql_type` is the column's: DATE, TIMESTAMP
    or VARCHAR (list and hash keys, and partition keys in the ledger tables).
    """
    return f"({column} BETWEEN ? AND ? AND list_contains(?::{sql_type}[], {column}))"


def owned_params(owned: Sequence[date | str]) -> list[object]:
    values = sorted(owned)
    return [values[0], values[-1], values]
