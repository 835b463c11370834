"""Warehouse connections: lock waits (issue 11 item 6) and idle readers (issue 10 item 11)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from ecm_assets.adapters.warehouse import (
    READING_DOC,
    WarehouseLockedError,
    WarehouseMissingError,
    connect,
)
from ecm_assets.orchestration.retries import is_transient


class Reader:
    """An analyst's idle shell: a separate process with a read-only connection left open."""

    def __init__(self, database: Path, seconds: float) -> None:
        script = textwrap.dedent(
            f"""
            import time
            import duckdb
            conn = duckdb.connect({str(database)!r}, read_only=True)
            print("open", flush=True)
            time.sleep({seconds})
            conn.close()
            """
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready and self.proc.stdout.readline().strip() == "open", self.proc.stderr.read()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    return path


def test_a_lock_wait_logs_one_line_naming_the_holder_and_one_when_it_ends(database: Path):
    reader = Reader(database, seconds=2.5)
    try:
        log = Lines()
        with connect(database, timeout_seconds=30, logger=log) as conn:
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    finally:
        reader.stop()

    # Many retries happened in 2.5 s; two lines say so.
    assert [level for level, _ in log.lines] == ["warning", "info"]
    start, end = log.lines[0][1], log.lines[1][1]
    assert f"PID {reader.proc.pid}" in start and "waiting up to 30s" in start
    assert "lock acquired after waiting" in end and f"PID {reader.proc.pid}" in end


def test_an_idle_reader_past_the_deadline_fails_naming_it_and_what_to_do(database: Path):
    reader = Reader(database, seconds=60)
    try:
        log = Lines()
        with (
            pytest.raises(WarehouseLockedError) as caught,
            connect(database, timeout_seconds=1, logger=log),
        ):
            pass
    finally:
        reader.stop()
    message = str(caught.value)
    # The holder is named by pid and command line (one line, here the reader's script).
    assert f"PID {reader.proc.pid} ({sys.executable} -c import time import duckdb" in message
    assert "\n" not in message
    assert "close its connection" in message and READING_DOC in message
    assert len(log.lines) == 2 and "gave up waiting" in log.lines[1][1]
    # Lock timeouts go through the run's retry policy: the holder may go away.
    assert is_transient(caught.value)


def test_a_read_only_open_never_creates_a_warehouse(tmp_path: Path):
    missing = tmp_path / "typo.duckdb"
    with (
        pytest.raises(WarehouseMissingError, match="does not exist"),
        connect(missing, read_only=True),
    ):
        pass
    assert not missing.exists()
    with (
        pytest.raises(WarehouseMissingError, match="not a file"),
        connect(tmp_path, read_only=True),
    ):
        pass
