"""Immutable versions with a current pointer, closed periods, rollback and diff.

A versioned dataset keeps every publish of a partition as a new immutable version in
`<table>__versions`; `ecm_ledger.current_versions` points at the current one and the
consumer view `<table>` shows only current rows. Publishing a version inserts its rows and
moves one pointer, so its cost does not grow with the versions already kept. Every earlier
version stays readable for audit, diff and rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pandas as pd

from ecm_assets.adapters.backends import as_connection
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.boundaries import partition_from_key
from ecm_assets.contracts.dataset import (
    PROVENANCE_COLUMNS,
    DatasetContract,
    PartitionValue,
    partition_key,
)
from ecm_assets.manifest.ledger import LEDGER_SCHEMA, now

VERSIONS = f'"{LEDGER_SCHEMA}"."versions"'
CURRENT = f'"{LEDGER_SCHEMA}"."current_versions"'
EVENTS = f'"{LEDGER_SCHEMA}"."version_events"'
CLOSED = f'"{LEDGER_SCHEMA}"."closed_partitions"'


EMPTY_CHECKSUM = "empty:n0"


class Reason(StrEnum):
    INITIAL = "INITIAL"
    RERUN = "RERUN"
    LATE_DATA = "LATE_DATA"
    SOURCE_CORRECTION = "SOURCE_CORRECTION"
    BUG_FIX = "BUG_FIX"
    RESTATEMENT = "RESTATEMENT"
    ROLLBACK = "ROLLBACK"


def parse_reason(code: str, source: str = "reason code") -> Reason:
    """A reason code a run may carry, or an error that lists them.

    ROLLBACK is not one: it names a pointer move by `ecm rollback`, never a publish, so a run
    tagged with it would record a version as a rollback that is none.
    """
    valid = ", ".join(r.value for r in Reason if r is not Reason.ROLLBACK)
    if code == Reason.ROLLBACK:
        raise ValueError(
            f"{source} {code!r} is not a reason a run can publish with: a rollback moves the "
            f"current pointer with `ecm rollback`; use one of {valid}"
        )
    try:
        return Reason(code)
    except ValueError:
        raise ValueError(f"{source} {code!r} is not a reason code; use one of {valid}") from None


class VersionStatus(StrEnum):
    PUBLISHED = "PUBLISHED"  # the current version
    SUPERSEDED = "SUPERSEDED"  # replaced by a later ordinary publish
    RESTATED = "RESTATED"  # replaced by a restatement of a closed period
    ROLLED_BACK = "ROLLED_BACK"  # the pointer was moved back past it


class ClosedPeriodError(RuntimeError):
    """A run would change a closed partition without being a restatement."""


class VersionError(LookupError):
    """A version or partition asked for does not exist."""


def versions_table_name(contract: DatasetContract) -> str:
    return f"{contract.name}__versions"


def versions_table(contract: DatasetContract) -> str:
    return f"{quote_ident(contract.schema)}.{quote_ident(versions_table_name(contract))}"


_LEDGER_TABLES = ("versions", "current_versions", "version_events", "closed_partitions")


def ensure_version_ledger(conn: Any) -> None:
    conn = as_connection(conn)
    if conn.kind != "duckdb" and all(conn.table_exists(LEDGER_SCHEMA, t) for t in _LEDGER_TABLES):
        return  # no DDL on a server when nothing is missing (it would lock the tables)
    with conn.ddl_lock():
        _ensure_version_ledger(conn)


def _ensure_version_ledger(conn: Any) -> None:
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{LEDGER_SCHEMA}"')
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSIONS} (dataset VARCHAR NOT NULL, partition_date VARCHAR "
        "NOT NULL, version BIGINT NOT NULL, run_id VARCHAR NOT NULL, prior_version BIGINT, "
        "reason VARCHAR NOT NULL, status VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL, "
        "rows BIGINT NOT NULL, business_checksum VARCHAR NOT NULL, note VARCHAR)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CURRENT} (dataset VARCHAR NOT NULL, partition_date VARCHAR "
        "NOT NULL, version BIGINT NOT NULL)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {EVENTS} (dataset VARCHAR NOT NULL, "
        "partition_date VARCHAR NOT "
        "NULL, recorded_at TIMESTAMPTZ NOT NULL, action VARCHAR NOT NULL, from_version BIGINT, "
        "to_version BIGINT, run_id VARCHAR, actor VARCHAR, reason VARCHAR)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CLOSED} (dataset VARCHAR NOT NULL, "
        "partition_date VARCHAR NOT "
        "NULL, closed_at TIMESTAMPTZ NOT NULL, closed_by VARCHAR, note VARCHAR)"
    )
    # The ledger keys partitions by their key text (dates, hours, list and hash keys alike).
    from ecm_assets.publish.protocol import widen_partition_column

    for table in ("versions", "current_versions", "version_events", "closed_partitions"):
        widen_partition_column(conn, LEDGER_SCHEMA, table)
    for table in (VERSIONS, CURRENT, CLOSED):
        index = conn.dialect.index(table, ["dataset", "partition_date"])
        if index is not None:
            conn.execute(index)


def _ledger_exists(conn: Any) -> bool:
    return as_connection(conn).table_exists(LEDGER_SCHEMA, "versions")


def check_closed_partitions(
    conn: Any,
    contract: DatasetContract,
    owned: list[PartitionValue],
    checksums: dict[PartitionValue, tuple[int, str]],
    restatement_reason: str | None,
) -> None:
    """Refuse, before anything is committed, a change to a closed partition without a reason."""
    if restatement_reason:
        parse_reason(restatement_reason, "ecm/restatement_reason")
        return
    for partition in owned:
        closed = closed_partition(conn, contract.name, partition)
        if closed is None:
            continue
        current = current_version(conn, contract.name, partition)
        checksum = checksums.get(partition, (0, EMPTY_CHECKSUM))[1]
        if current is not None and _current_checksum(conn, contract, current, checksum) == checksum:
            continue
        raise ClosedPeriodError(
            f"{contract.name} {partition} is closed (since {closed[0]:%Y-%m-%d %H:%M} by "
            f"{closed[1]}) and this run would change it (current version "
            f"{current.version if current else '-'} checksum "
            f"{current.business_checksum if current else '-'}, this run {checksum}). Nothing "
            "was published. To change a closed period, rerun as a restatement with a reason: "
            "run tag ecm/restatement_reason=SOURCE_CORRECTION (or LATE_DATA, BUG_FIX, "
            "RESTATEMENT)"
        )


def _current_checksum(
    conn: Any,
    contract: DatasetContract,
    current: PartitionVersion,
    like: str,
) -> str:
    """The current version's checksum, recomputed from its stored rows if it was recorded
    with another checksum algorithm (a DuckDB upgrade), so the comparison stays exact."""
    from ecm_assets.publish.protocol import business_checksum, checksums_comparable

    if checksums_comparable(current.business_checksum, like):
        return current.business_checksum
    pcol = quote_ident(contract.partition_column)
    return business_checksum(
        conn,
        contract,
        versions_table(contract),
        f"WHERE {pcol} = ? AND version = ?",
        [contract.partition_value(current.partition_date), current.version],
    )


def ensure_versioned_storage(conn: Any, contract: DatasetContract) -> None:
    """Create the versions table and the current-rows view the consumers read."""
    conn = as_connection(conn)
    ensure_version_ledger(conn)
    if (
        conn.kind != "duckdb"
        and conn.table_exists(contract.schema, versions_table_name(contract))
        and conn.table_exists(contract.schema, contract.name)
    ):
        # Only a replace-mode table of that name needs refusing; the view stays as it is.
        kind = conn.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND "
            "table_name = ?",
            [contract.schema, contract.name],
        ).fetchone()
        if kind is not None and kind[0] == "VIEW":
            return
    with conn.ddl_lock():
        _ensure_versioned_storage(conn, contract)


def _ensure_versioned_storage(conn: Any, contract: DatasetContract) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(contract.schema)}")
    kind = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND "
        "table_name = ?",
        [contract.schema, contract.name],
    ).fetchone()
    if kind is not None and kind[0] != "VIEW":
        raise RuntimeError(
            f"{contract.table} is a table published in replace mode, but contract "
            f"{contract.name} is versioned; migrate it explicitly (see docs/lifecycle.md)"
        )
    typed = conn.dialect.sql_type
    cols = [
        f"{quote_ident(c.name)} {typed(c.sql_type)}{'' if c.nullable else ' NOT NULL'}"
        for c in contract.columns
    ]
    cols.append('"version" BIGINT NOT NULL')
    cols += [f"{quote_ident(n)} {typed(t)} NOT NULL" for n, t in PROVENANCE_COLUMNS]
    conn.execute(f"CREATE TABLE IF NOT EXISTS {versions_table(contract)} ({', '.join(cols)})")
    pcol = quote_ident(contract.partition_column)
    index = conn.dialect.index(versions_table(contract), [pcol, '"version"'])
    if index is not None:
        conn.execute(index)
    view = _current_view_sql(conn, contract)
    pcol = quote_ident(contract.partition_column)
    found = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?"
        if conn.kind == "duckdb"
        else "SELECT definition FROM pg_views WHERE schemaname = ? AND viewname = ?",
        [contract.schema, contract.name],
    ).fetchone()
    if found is None or (
        conn.kind == "duckdb" and contract.partition_key_sql(f"d.{pcol}") not in found[0]
    ):
        # New, or written when the pointer's partition was a DATE: (re)defined by key text.
        conn.execute(f"CREATE OR REPLACE VIEW {contract.table} AS {view}")


def _current_view_sql(conn: Any, contract: DatasetContract) -> str:
    pcol = quote_ident(contract.partition_column)
    key = as_connection(conn).dialect.partition_key_sql(contract, f"d.{pcol}")
    return (
        f"SELECT d.* FROM {versions_table(contract)} d JOIN {CURRENT} c ON c.dataset = "
        f"'{contract.name}' AND c.partition_date = {key} AND c.version = d.version"
    )


def refresh_current_view(conn: Any, contract: DatasetContract) -> None:
    """After columns were added to the versions table: PostgreSQL expands `d.*` when a view
    is created, so the view is redefined to show them (DuckDB binds it when read)."""
    conn = as_connection(conn)
    if conn.kind != "duckdb":
        view = _current_view_sql(conn, contract)
        conn.execute(f"CREATE OR REPLACE VIEW {contract.table} AS {view}")


@dataclass(frozen=True)
class PartitionVersion:
    dataset: str
    #: The partition key (the column's name stays from when every partition was a date).
    partition_date: str
    version: int
    run_id: str
    prior_version: int | None
    reason: str
    status: str
    created_at: datetime
    rows: int
    business_checksum: str
    note: str | None


def current_version(conn: Any, dataset: str, partition: PartitionValue) -> PartitionVersion | None:
    if not _ledger_exists(conn):
        return None
    partition = partition_key(partition)
    row = conn.execute(
        f"SELECT v.* FROM {VERSIONS} v JOIN {CURRENT} c USING (dataset, partition_date, version) "
        "WHERE dataset = ? AND partition_date = ?",
        [dataset, partition],
    ).fetchone()
    return None if row is None else PartitionVersion(*row)


def list_versions(
    conn: Any, dataset: str, partition: PartitionValue | None = None
) -> list[PartitionVersion]:
    if not _ledger_exists(conn):
        return []
    where, params = "dataset = ?", [dataset]
    if partition is not None:
        where += " AND partition_date = ?"
        params.append(partition_key(partition))
    rows = conn.execute(
        f"SELECT * FROM {VERSIONS} WHERE {where} ORDER BY partition_date, version", params
    ).fetchall()
    return [PartitionVersion(*r) for r in rows]


def closed_partitions(conn: Any, dataset: str, timezone: str = "UTC") -> list[PartitionValue]:
    """Every closed partition of a dataset (dates, hours of its `timezone`, or keys)."""
    if not _ledger_exists(conn):
        return []
    rows = conn.execute(
        f"SELECT partition_date FROM {CLOSED} WHERE dataset = ? ORDER BY 1", [dataset]
    ).fetchall()
    return [partition_from_key(r[0], timezone) for r in rows]


def closed_partition(conn: Any, dataset: str, partition: PartitionValue):
    if not _ledger_exists(conn):
        return None
    return conn.execute(
        f"SELECT closed_at, closed_by, note FROM {CLOSED} WHERE dataset = ? AND partition_date = ?",
        [dataset, partition_key(partition)],
    ).fetchone()


def close_partition(
    conn: Any,
    contract: DatasetContract,
    partition: PartitionValue,
    *,
    actor: str,
    note: str | None = None,
) -> None:
    """Mark a published partition closed: later changes need a restatement with a reason."""
    partition = partition_key(partition)
    if contract.publish_mode != "versioned":
        raise ValueError(
            f"dataset {contract.name} publishes in replace mode; closed periods need immutable "
            "versions (publish_mode='versioned') so a restatement can keep what it replaces"
        )
    ensure_version_ledger(conn)
    if current_version(conn, contract.name, partition) is None:
        raise VersionError(
            f"{contract.name} {partition} has no published version to close; publish it first"
        )
    if closed_partition(conn, contract.name, partition) is not None:
        raise ValueError(f"{contract.name} {partition} is already closed")
    conn = as_connection(conn)
    conn.begin()
    try:
        conn.execute(
            f"INSERT INTO {CLOSED} VALUES (?, ?, ?, ?, ?)",
            [contract.name, partition, now(), actor, note],
        )
        conn.execute(
            f"INSERT INTO {EVENTS} VALUES (?, ?, ?, 'CLOSE', NULL, NULL, NULL, ?, ?)",
            [contract.name, partition, now(), actor, note],
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def publish_versions(
    conn: Any,
    contract: DatasetContract,
    staging: str,
    owned: list[PartitionValue],
    checksums: dict[PartitionValue, tuple[int, str]],
    *,
    run_id: str,
    reason: str | None,
    restatement_reason: str | None,
) -> dict[str, int | None]:
    """Inside the caller's transaction: one new version per owned partition that changed.

    A closed partition whose staged rows equal its current version is left as it is; one
    that differs is refused unless the run is a restatement with a reason.
    """
    pcol = quote_ident(contract.partition_column)
    names = [*contract.column_names, "version", *(n for n, _ in PROVENANCE_COLUMNS)]
    staged_names = [*contract.column_names, "?", *(n for n, _ in PROVENANCE_COLUMNS)]
    published: dict[str, int | None] = {}
    for value in owned:
        rows, checksum = checksums.get(value, (0, EMPTY_CHECKSUM))
        partition = partition_key(value)  # how the ledger names it
        current = current_version(conn, contract.name, partition)
        closed = closed_partition(conn, contract.name, partition)
        if closed is not None:
            if (
                current is not None
                and _current_checksum(conn, contract, current, checksum) == checksum
            ):
                published[partition] = current.version
                continue
            if not restatement_reason:
                raise ClosedPeriodError(
                    f"{contract.name} {partition} is closed (since {closed[0]:%Y-%m-%d %H:%M} "
                    f"by {closed[1]}) and this run would change it (version "
                    f"{current.version if current else '-'} checksum "
                    f"{current.business_checksum if current else '-'}, new {checksum}). Rerun as "
                    "a restatement with a reason: tag ecm/restatement_reason=SOURCE_CORRECTION "
                    "(or LATE_DATA, BUG_FIX, RESTATEMENT)"
                )
        latest = conn.execute(
            f"SELECT max(version) FROM {VERSIONS} WHERE dataset = ? AND partition_date = ?",
            [contract.name, partition],
        ).fetchone()[0]
        version = (latest or 0) + 1
        if closed is not None:
            why = parse_reason(restatement_reason, "ecm/restatement_reason").value
        elif reason:
            why = parse_reason(reason, "ecm/reason").value
        else:
            why = Reason.INITIAL.value if current is None else Reason.RERUN.value
        conn.execute(
            f"INSERT INTO {versions_table(contract)} ({', '.join(map(quote_ident, names))}) "
            f"SELECT {', '.join(n if n == '?' else quote_ident(n) for n in staged_names)} "
            f"FROM {staging} WHERE {pcol} = ?",
            [version, value],
        )
        if current is not None:
            conn.execute(
                f"UPDATE {VERSIONS} SET status = ? WHERE dataset = ? AND partition_date = ? AND "
                "version = ?",
                [
                    VersionStatus.RESTATED if closed is not None else VersionStatus.SUPERSEDED,
                    contract.name,
                    partition,
                    current.version,
                ],
            )
            conn.execute(
                f"UPDATE {CURRENT} SET version = ? WHERE dataset = ? AND partition_date = ?",
                [version, contract.name, partition],
            )
        else:
            conn.execute(
                f"INSERT INTO {CURRENT} VALUES (?, ?, ?)", [contract.name, partition, version]
            )
        conn.execute(
            f"INSERT INTO {VERSIONS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                contract.name,
                partition,
                version,
                run_id,
                None if current is None else current.version,
                why,
                VersionStatus.PUBLISHED,
                now(),
                rows,
                checksum,
                "restatement of a closed period" if closed is not None else None,
            ],
        )
        conn.execute(
            f"INSERT INTO {EVENTS} VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            [
                contract.name,
                partition,
                now(),
                "RESTATE" if closed is not None else "PUBLISH",
                None if current is None else current.version,
                version,
                run_id,
                why,
            ],
        )
        published[partition] = version
    return published


def rollback(
    conn: Any,
    contract: DatasetContract,
    partition: PartitionValue,
    to_version: int,
    *,
    actor: str,
    reason: str,
) -> tuple[int, int]:
    """Move the pointer back to an earlier version; recorded as an event, nothing is deleted."""
    partition = partition_key(partition)
    ensure_version_ledger(conn)
    conn = as_connection(conn)
    conn.begin()
    try:
        current = current_version(conn, contract.name, partition)
        if current is None:
            raise VersionError(f"{contract.name} {partition} has no published version")
        target = conn.execute(
            f"SELECT version FROM {VERSIONS} WHERE dataset = ? AND partition_date = ? AND "
            "version = ?",
            [contract.name, partition, to_version],
        ).fetchone()
        if target is None:
            known = [v.version for v in list_versions(conn, contract.name, partition)]
            raise VersionError(
                f"{contract.name} {partition} has no version {to_version}; versions: {known}"
            )
        if to_version == current.version:
            raise VersionError(f"{contract.name} {partition} is already at version {to_version}")
        conn.execute(
            f"UPDATE {VERSIONS} SET status = ? WHERE dataset = ? AND partition_date = ? AND "
            "version = ?",
            [VersionStatus.ROLLED_BACK, contract.name, partition, current.version],
        )
        conn.execute(
            f"UPDATE {VERSIONS} SET status = ? WHERE dataset = ? AND partition_date = ? AND "
            "version = ?",
            [VersionStatus.PUBLISHED, contract.name, partition, to_version],
        )
        conn.execute(
            f"UPDATE {CURRENT} SET version = ? WHERE dataset = ? AND partition_date = ?",
            [to_version, contract.name, partition],
        )
        conn.execute(
            f"INSERT INTO {EVENTS} VALUES (?, ?, ?, 'ROLLBACK', ?, ?, NULL, ?, ?)",
            [contract.name, partition, now(), current.version, to_version, actor, reason],
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return current.version, to_version


def diff_versions(
    conn: Any,
    contract: DatasetContract,
    partition: PartitionValue,
    old: int,
    new: int,
) -> pd.DataFrame:
    """Rows and columns that differ between two versions: one row per changed value."""
    known = {v.version for v in list_versions(conn, contract.name, partition)}
    missing = sorted({old, new} - known)
    if missing:
        raise VersionError(
            f"{contract.name} {partition} has no version(s) {missing}; versions: {sorted(known)}"
        )
    # One row per partition (the key is the partition column alone): compare on it.
    key = [k for k in contract.business_key if k != contract.partition_column] or [
        contract.partition_column
    ]
    values = [c for c in contract.column_names if c not in contract.business_key]
    pcol = quote_ident(contract.partition_column)
    table = versions_table(contract)
    key_sql = ", ".join(quote_ident(k) for k in key)
    parts = []
    for col in values:
        q = quote_ident(col)
        parts.append(
            f"SELECT {key_sql}, "
            f"'{col}' AS column_name, a.{q}::VARCHAR AS old_value, b.{q}::VARCHAR AS new_value, "
            "CASE WHEN a.version IS NULL THEN 'added' WHEN b.version IS NULL THEN 'removed' "
            "ELSE 'changed' END AS change "
            f"FROM (SELECT * FROM {table} WHERE {pcol} = ? AND version = ?) a "
            f"FULL JOIN (SELECT * FROM {table} WHERE {pcol} = ? AND version = ?) b "
            f"USING ({key_sql}) WHERE a.{q} IS DISTINCT FROM b.{q}"
        )
    sql = " UNION ALL ".join(parts) + f" ORDER BY {key_sql}, column_name"
    value = contract.partition_value(partition_key(contract.as_partition(partition)))
    return as_connection(conn).df(sql, [value, old, value, new] * len(parts))
