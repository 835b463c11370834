"""Worker process of the concurrency matrix: waits at a file barrier, then publishes or rolls back.

Run as `python -m tests.test_recovery._race SPEC.json`. The spec names the warehouse (a
DuckDB path or a postgresql:// URL), the
barrier directory, the action and its arguments; the outcome (success with its result, or
the exception class and message) is written as JSON to the spec's `result` path. A clean
failure exits 0 too: only a crash of the worker itself exits non-zero.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.publish.protocol import PublishRequest, publish_partitions
from ecm_assets.publish.versions import rollback

COLUMNS = (
    Column("business_date", "DATE", nullable=False),
    Column("unit_id", "VARCHAR", nullable=False),
    Column("value", "BIGINT"),
    Column("note", "VARCHAR"),
)
REPLACE = DatasetContract(
    name="race_values",
    description="replace-mode dataset raced by two processes",
    columns=COLUMNS,
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
)
VERSIONED = DatasetContract(
    name="race_versions",
    description="versioned dataset raced by two processes",
    columns=COLUMNS,
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
    publish_mode="versioned",
)
CONTRACTS = {c.name: c for c in (REPLACE, VERSIONED)}
BARRIER_TIMEOUT = 60.0


def run_rows(run_id: str, partition: date) -> list[tuple]:
    """The business rows a run publishes for a partition: distinct per run, deterministic."""
    seed = zlib.crc32(f"{run_id}/{partition}".encode())
    count = 20 + seed % 40
    return [
        (partition, f"U{i:03d}", (seed + 7 * i) % 100_000, f"{run_id}#{i}") for i in range(count)
    ]


def run_frame(run_id: str, partitions: list[date]) -> pd.DataFrame:
    rows = [r for p in partitions for r in run_rows(run_id, p)]
    return pd.DataFrame(
        {
            "business_date": [r[0] for r in rows],
            "unit_id": [r[1] for r in rows],
            "value": pd.array([r[2] for r in rows], dtype="Int64"),
            "note": [r[3] for r in rows],
        }
    )


def publish_request(
    contract: DatasetContract, run_id: str, partitions: list[date], as_of: datetime
) -> PublishRequest:
    return PublishRequest(
        contract=contract,
        owned_partitions=tuple(partitions),
        run_id=run_id,
        as_of=as_of,
        data=run_frame(run_id, partitions),
    )


def _wait_for(path: Path, deadline: float) -> None:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier: {path} did not appear")
        time.sleep(0.005)


class _WaitLog:
    """Counts the lock waits connect() reports (one warning when a wait starts)."""

    def __init__(self, waits: list[int]) -> None:
        self.waits = waits

    def warning(self, msg: str) -> None:
        if "waiting up to" in msg:
            self.waits.append(1)

    def info(self, msg: str) -> None:
        pass


def _act(spec: dict, lock_waits: list[int]) -> dict:
    contract = CONTRACTS[spec["contract"]]
    partitions = [date.fromisoformat(p) for p in spec["partitions"]]
    with open_warehouse(spec["warehouse"]).connect(
        timeout_seconds=spec.get("lock_timeout", 90.0),
        logger=_WaitLog(lock_waits),
    ) as conn:
        if spec["action"] == "publish":
            as_of = datetime.fromisoformat(spec["as_of"])
            result = publish_partitions(
                conn, publish_request(contract, spec["run_id"], partitions, as_of)
            )
            return {"rows": result.rows, "versions": result.versions}
        if spec["action"] == "rollback":
            old, new = rollback(
                conn, contract, partitions[0], spec["to_version"], actor="race", reason="race"
            )
            return {"from_version": old, "to_version": new}
    raise ValueError(f"unknown action {spec['action']!r}")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    barrier = Path(spec["barrier"])
    deadline = time.monotonic() + BARRIER_TIMEOUT
    (barrier / f"ready-{spec['name']}").touch()
    _wait_for(barrier / "go", deadline)
    if spec.get("after"):  # a forced order: start only once the other worker has finished
        _wait_for(Path(spec["after"]), deadline)
    lock_waits: list[int] = []
    try:
        outcome = {"ok": True, **_act(spec, lock_waits)}
    except Exception as exc:
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    outcome["lock_waits"] = len(lock_waits)  # whether the file lock was found held
    tmp = Path(spec["result"] + ".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.rename(spec["result"])  # atomic: a waiting worker never reads half a result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
