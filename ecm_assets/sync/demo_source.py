"""The demo source: a `customer_history` table in SQLite (or PostgreSQL) and a writer.

`create_source` builds the table with `rows` customers' history rows. `write` keeps writing
to it, as `ecm demo-source --simulate-writes` does; `adversarial=True` adds everything that
breaks naive cursors: many rows sharing one updated_at, updates while a sync scans, long
transactions that commit after a boundary with an older updated_at, a writer whose clock is
minutes behind, soft deletes and hard deletes. Row versions only grow (version + 1 per
change), which is what lets the sink's merge be version-aware.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

SEGMENTS = ("retail", "smb", "enterprise", "public")
TABLE = "customer_history"


def _engine(url: str) -> sa.Engine:
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    return sa.create_engine(url, **kwargs)


def _is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def stamp(engine: sa.Engine, at: datetime) -> Any:
    """A timestamp as the source stores it: text on SQLite, timestamptz on PostgreSQL."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f") if _is_sqlite(engine) else at


def create_source(
    url: str,
    rows: int = 10_000,
    *,
    seed: int = 7,
    table: str = TABLE,
    start: datetime | None = None,
) -> int:
    """(Re)create the table with `rows` rows; history timestamps spread over 30 days."""
    engine = _engine(url)
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(days=30, minutes=1)
    q = engine.dialect.identifier_preparer.quote(table)
    ts = "TEXT" if _is_sqlite(engine) else "TIMESTAMPTZ"
    with engine.begin() as conn:
        if _is_sqlite(engine):
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q}")
        conn.exec_driver_sql(
            f"CREATE TABLE {q} (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, name TEXT, "
            f"email TEXT, segment TEXT, balance DOUBLE PRECISION, updated_at {ts} NOT NULL, "
            f"version BIGINT NOT NULL, deleted_at {ts})"
        )
        conn.exec_driver_sql(f"CREATE INDEX {table}_cursor ON {q} (updated_at, id)")
        span = 30 * 86400
        placeholder = "?" if _is_sqlite(engine) else "%s"
        insert = f"INSERT INTO {q} VALUES ({', '.join([placeholder] * 7)}, 1, NULL)"
        batch = []
        for i in range(1, rows + 1):
            cust = rng.randrange(1, max(2, rows // 4))
            at = start + timedelta(seconds=span * i / max(rows, 1))
            batch.append(
                (
                    i,
                    cust,
                    f" Customer {cust} ",
                    f"Customer{cust}@Example.COM",
                    rng.choice(SEGMENTS),
                    round(rng.uniform(0, 10_000), 2),
                    stamp(engine, at),
                )
            )
            if len(batch) == 50_000:
                conn.exec_driver_sql(insert, batch)
                batch = []
        if batch:
            conn.exec_driver_sql(insert, batch)
    engine.dispose()
    return rows


@dataclass
class WriteStats:
    updates: int = 0
    inserts: int = 0
    equal_stamp_rows: int = 0
    long_transactions: int = 0
    skewed_writes: int = 0
    soft_deletes: int = 0
    hard_deletes: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"updates={self.updates} inserts={self.inserts} "
            f"equal_updated_at_rows={self.equal_stamp_rows} "
            f"long_transactions={self.long_transactions} skewed_writes={self.skewed_writes} "
            f"soft_deletes={self.soft_deletes} hard_deletes={self.hard_deletes}"
        )


def write(
    url: str,
    seconds: float,
    *,
    seed: int = 11,
    adversarial: bool = False,
    skew: timedelta = timedelta(minutes=3),
    table: str = TABLE,
    long_seconds: float = 1.5,
    stop: threading.Event | None = None,
) -> WriteStats:
    """Keep changing the source for `seconds` (or until `stop`)."""
    engine = _engine(url)
    rng = random.Random(seed)
    stats = WriteStats()
    q = engine.dialect.identifier_preparer.quote(table)
    with engine.connect() as conn:
        next_id = int(conn.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {q}")).scalar()) + 1
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def pick(conn) -> int | None:
        top = next_id - 1
        for _ in range(5):
            rid = rng.randrange(1, max(2, top + 1))
            if conn.execute(sa.text(f"SELECT 1 FROM {q} WHERE id = :i"), {"i": rid}).first():
                return rid
        return None

    def update(conn, rid: int, at: datetime, deleted: bool = False) -> None:
        conn.execute(
            sa.text(
                f"UPDATE {q} SET balance = :b, segment = :s, version = version + 1, "
                f"updated_at = :u{', deleted_at = :u' if deleted else ''} WHERE id = :i"
            ),
            {
                "b": round(rng.uniform(0, 10_000), 2),
                "s": rng.choice(SEGMENTS),
                "u": stamp(engine, at),
                "i": rid,
            },
        )

    def long_transactions() -> None:
        """Open a transaction, stamp rows with its start time, commit seconds later."""
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            with engine.begin() as conn:
                at = datetime.now(UTC)
                with lock:
                    rids = [pick(conn) for _ in range(3)]
                for rid in rids:
                    if rid is not None:
                        update(conn, rid, at)
                time.sleep(long_seconds)
            with lock:
                stats.long_transactions += 1
            time.sleep(0.2)

    sidecar = None
    if adversarial and not _is_sqlite(engine):
        # PostgreSQL: a second session holds long transactions open while the main writer
        # keeps committing. SQLite has one writer: its long transactions run inline below.
        sidecar = threading.Thread(target=long_transactions, daemon=True)
        sidecar.start()
    tick = 0
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        tick += 1
        skewed = adversarial and tick % 5 == 0
        at = datetime.now(UTC) - (skew if skewed else timedelta(0))
        with engine.begin() as conn, lock:
            op = rng.random()
            if op < 0.25:
                rows = [
                    {"id": next_id + k, "c": rng.randrange(1, 5000), "u": stamp(engine, at)}
                    for k in range(5)
                ]
                conn.execute(
                    sa.text(
                        f"INSERT INTO {q} VALUES (:id, :c, 'New customer', 'new@example.com', "
                        "'retail', 0, :u, 1, NULL)"
                    ),
                    rows,
                )
                next_id += 5
                stats.inserts += 5
            elif adversarial and op < 0.40:
                # Many rows share one updated_at (and a scan may stop in their middle).
                for _ in range(20):
                    rid = pick(conn)
                    if rid is not None:
                        update(conn, rid, at)
                        stats.equal_stamp_rows += 1
            elif adversarial and op < 0.47:
                rid = pick(conn)
                if rid is not None:
                    update(conn, rid, at, deleted=True)
                    stats.soft_deletes += 1
            elif adversarial and op < 0.52:
                rid = pick(conn)
                if rid is not None:
                    conn.execute(sa.text(f"DELETE FROM {q} WHERE id = :i"), {"i": rid})
                    stats.hard_deletes += 1
            else:
                for _ in range(3):
                    rid = pick(conn)
                    if rid is not None:
                        update(conn, rid, at)
                        stats.updates += 1
            if skewed:
                stats.skewed_writes += 1
        if adversarial and _is_sqlite(engine) and tick % 40 == 0:
            with engine.begin() as conn:
                at = datetime.now(UTC)
                with lock:
                    rid = pick(conn)
                    if rid is not None:
                        update(conn, rid, at)
                time.sleep(long_seconds)
            stats.long_transactions += 1
        time.sleep(0.002)
    if sidecar is not None:
        sidecar.join(timeout=long_seconds + 5)
    engine.dispose()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecm_assets.sync.demo_source")
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--adversarial", action="store_true")
    parser.add_argument("--skew-seconds", type=float, default=180)
    parser.add_argument("--table", default=TABLE)
    args = parser.parse_args(argv)
    stats = write(
        args.url,
        args.seconds,
        seed=args.seed,
        adversarial=args.adversarial,
        skew=timedelta(seconds=args.skew_seconds),
        table=args.table,
    )
    print(stats.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
