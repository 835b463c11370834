"""Stage a run's output, judge it, then replace exactly the owned partitions in one transaction.

The stock DuckDB IO manager deletes and inserts in separate autocommit statements and inserts
by position: a failed insert loses the partition. Here the rows land in a staging table tagged
with the run id first, are checked against the contract and the owned boundary, and only then
does a single transaction delete the owned partitions and insert the staged rows by column name.
Any failure before COMMIT leaves the previously published rows exactly as they were.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import pandas as pd

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.dataset import PROVENANCE_COLUMNS, DatasetContract
from ecm_assets.publish.failpoints import failpoint

log = logging.getLogger(__name__)

STAGING_SCHEMA = "ecm_staging"
QUARANTINE_TABLE = '"ecm_quarantine"."rejected_rows"'
QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("asset", "VARCHAR NOT NULL"),
    ("partition_date", "DATE NOT NULL"),
    ("run_id", "VARCHAR NOT NULL"),
    ("source_file", "VARCHAR"),
    ("source_line", "BIGINT"),
    ("reason", "VARCHAR NOT NULL"),
    ("column_name", "VARCHAR"),
    ("failure_case", "VARCHAR"),
    ("original_row", "VARCHAR"),
)
#: Columns a transform supplies for a rejected row; the protocol adds asset and run_id.
REJECT_COLUMNS = [c for c, _ in QUARANTINE_COLUMNS if c not in ("asset", "run_id")]


class PublishError(RuntimeError):
    """The staged output may not be published; the published data was not touched."""


class OutsideBoundaryError(PublishError):
    """Staged rows carry a partition value the run does not own."""


class SchemaMismatchError(PublishError):
    """Staged or published columns disagree with the dataset contract."""


@dataclass(frozen=True)
class PublishRequest:
    contract: DatasetContract
    owned_partitions: tuple[date, ...]
    run_id: str
    as_of: datetime
    data: pd.DataFrame
    rejects: pd.DataFrame | None = None


@dataclass(frozen=True)
class PublishResult:
    table: str
    rows: int
    rows_by_partition: dict[str, int]
    replaced_rows: int
    quarantined_rows: int
    business_checksum: str
    staging_table: str
    debris_dropped: tuple[str, ...]
    seconds: float


def staging_table_name(contract: DatasetContract, run_id: str) -> str:
    token = re.sub(r"[^0-9a-zA-Z]", "", run_id)[:32]
    return f"{contract.name}__{token}"


def _ddl_columns(contract: DatasetContract) -> list[str]:
    cols = [
        f"{quote_ident(c.name)} {c.sql_type}{'' if c.nullable else ' NOT NULL'}"
        for c in contract.columns
    ]
    cols += [f"{quote_ident(name)} {sql_type} NOT NULL" for name, sql_type in PROVENANCE_COLUMNS]
    return cols


def ensure_quarantine_table(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute('CREATE SCHEMA IF NOT EXISTS "ecm_quarantine"')
    cols = ", ".join(f"{quote_ident(n)} {t}" for n, t in QUARANTINE_COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} ({cols})")


def drop_staging_debris(conn: duckdb.DuckDBPyConnection, contract: DatasetContract) -> list[str]:
    """Drop staging tables of this dataset left by a crashed process.

    The caller holds the warehouse's single-writer lock, so no other process can be
    mid-publish: any staging table of this dataset that exists now is debris.
    """
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
        "AND starts_with(table_name, ?)",
        [STAGING_SCHEMA, f"{contract.name}__"],
    ).fetchall()
    dropped = []
    for (name,) in rows:
        conn.execute(f"DROP TABLE IF EXISTS {quote_ident(STAGING_SCHEMA)}.{quote_ident(name)}")
        dropped.append(name)
    if dropped:
        log.warning("dropped staging debris of crashed runs: %s", ", ".join(dropped))
    return dropped


def check_frame_columns(contract: DatasetContract, frame: pd.DataFrame) -> None:
    expected = contract.column_names
    actual = [str(c) for c in frame.columns]
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        raise SchemaMismatchError(
            f"dataset {contract.name}: output does not match its contract: {'; '.join(parts)}. "
            f"The contract declares {expected}."
        )


def _diagnose_cast(conn: duckdb.DuckDBPyConnection, contract: DatasetContract, view: str) -> str:
    """Name the first column and value that will not convert to the contract type."""
    for c in contract.columns:
        col = quote_ident(c.name)
        row = conn.execute(
            f"SELECT {col}::VARCHAR, __row FROM (SELECT {col}, row_number() OVER () - 1 AS __row "
            f"FROM {view}) WHERE {col} IS NOT NULL AND TRY_CAST({col} AS {c.sql_type}) IS NULL "
            "LIMIT 1"
        ).fetchone()
        if row is not None:
            return f"column {c.name!r} row {row[1]}: value {row[0]!r} is not a valid {c.sql_type}"
        if not c.nullable:
            row = conn.execute(
                f"SELECT __row FROM (SELECT {col}, row_number() OVER () - 1 AS __row FROM {view}) "
                f"WHERE {col} IS NULL LIMIT 1"
            ).fetchone()
            if row is not None:
                return f"column {c.name!r} row {row[0]}: NULL in a NOT NULL column"
    return "no single column could be named"


#: Casts DuckDB performs by rounding or truncating: they must round-trip or be refused.
_LOSSY_TARGETS = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "DATE"}


def _check_lossless(conn: duckdb.DuckDBPyConnection, contract: DatasetContract, view: str) -> None:
    """Refuse values a cast would silently change (1.5 -> BIGINT, 23:30 -> DATE)."""
    source_types = {
        name: dtype for name, dtype, *_ in conn.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
    }
    for c in contract.columns:
        target = _normalise_type(c.sql_type)
        source = _normalise_type(source_types.get(c.name, target))
        if target not in _LOSSY_TARGETS or source == target or source == "VARCHAR":
            continue
        col = quote_ident(c.name)
        row = conn.execute(
            f"SELECT {col}::VARCHAR, __row FROM (SELECT {col}, row_number() OVER () - 1 AS __row "
            f"FROM {view}) WHERE {col} IS NOT NULL AND "
            f"TRY_CAST(TRY_CAST({col} AS {c.sql_type}) AS {source}) IS DISTINCT FROM {col} "
            "LIMIT 1"
        ).fetchone()
        if row is not None:
            raise SchemaMismatchError(
                f"dataset {contract.name}: column {c.name!r} row {row[1]}: value {row[0]!r} "
                f"({source}) would change when stored as {c.sql_type}; nothing was published"
            )


def _stage(conn: duckdb.DuckDBPyConnection, request: PublishRequest, staging: str) -> None:
    contract = request.contract
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STAGING_SCHEMA)}")
    conn.execute(f"CREATE TABLE {staging} ({', '.join(_ddl_columns(contract))})")
    view = "__ecm_staged_frame"
    conn.register(view, request.data)
    try:
        _check_lossless(conn, contract, view)
        names = [*contract.column_names, *(n for n, _ in PROVENANCE_COLUMNS)]
        select = [f"CAST({quote_ident(c.name)} AS {c.sql_type})" for c in contract.columns]
        select += ["?", "?"]
        try:
            conn.execute(
                f"INSERT INTO {staging} ({', '.join(map(quote_ident, names))}) "
                f"SELECT {', '.join(select)} FROM {view}",
                [request.run_id, request.as_of],
            )
        except (duckdb.ConversionException, duckdb.ConstraintException) as exc:
            detail = _diagnose_cast(conn, contract, view)
            raise SchemaMismatchError(
                f"dataset {contract.name}: output rows do not fit the contract ({detail}); "
                f"nothing was published. DuckDB said: {exc}"
            ) from exc
    finally:
        conn.unregister(view)


def _check_owned_boundary(
    conn: duckdb.DuckDBPyConnection, request: PublishRequest, staging: str
) -> None:
    contract = request.contract
    pcol = quote_ident(contract.partition_column)
    owned = sorted(request.owned_partitions)
    offenders = conn.execute(
        f"SELECT {pcol}, count(*) FROM {staging} WHERE NOT list_contains(?::DATE[], {pcol}) "
        f"GROUP BY 1 ORDER BY 1 LIMIT 5",
        [owned],
    ).fetchall()
    if offenders:
        shown = ", ".join(f"{contract.partition_column}={v} ({n} rows)" for v, n in offenders)
        raise OutsideBoundaryError(
            f"dataset {contract.name}: run {request.run_id} owns partitions "
            f"{owned[0].isoformat()}..{owned[-1].isoformat()} ({len(owned)}), but staged rows "
            f"carry {shown}. A run may replace only the partitions it owns; nothing was published."
        )


def _reconcile_table_schema(
    conn: duckdb.DuckDBPyConnection, contract: DatasetContract
) -> list[str]:
    """Create the final table, or apply the one evolution rule: new nullable columns are added.

    Returns the ALTER statements to run inside the publish transaction. A dropped column or
    a changed type is refused: reinterpreting published rows needs an explicit migration.
    """
    existing = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [contract.schema, contract.name],
    ).fetchall()
    if not existing:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(contract.schema)}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {contract.table} ({', '.join(_ddl_columns(contract))})"
        )
        return []
    have = {name: dtype for name, dtype in existing}
    wanted = {c.name: c.sql_type for c in contract.columns}
    wanted.update(dict(PROVENANCE_COLUMNS))
    problems = []
    for name, dtype in have.items():
        if name not in wanted:
            problems.append(f"column {name!r} ({dtype}) is published but no longer in the contract")
        elif _normalise_type(wanted[name]) != _normalise_type(dtype):
            problems.append(f"column {name!r} changed type from {dtype} to {wanted[name]}")
    if problems:
        raise SchemaMismatchError(
            f"table {contract.table} does not match contract {contract.name} v"
            f"{contract.code_version}: {'; '.join(problems)}. Only new nullable columns are "
            "added automatically; migrate the table explicitly (see docs/publish.md)."
        )
    alters = []
    for c in contract.columns:
        if c.name not in have:
            if not c.nullable:
                raise SchemaMismatchError(
                    f"table {contract.table}: new column {c.name!r} is NOT NULL, so published "
                    "rows cannot take it; declare it nullable or migrate explicitly"
                )
            alters.append(
                f"ALTER TABLE {contract.table} ADD COLUMN {quote_ident(c.name)} {c.sql_type}"
            )
    return alters


def _normalise_type(sql_type: str) -> str:
    aliases = {
        "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
        "INT8": "BIGINT",
        "INT": "INTEGER",
        "INT4": "INTEGER",
        "FLOAT8": "DOUBLE",
        "STRING": "VARCHAR",
        "TEXT": "VARCHAR",
        "BOOL": "BOOLEAN",
    }
    upper = sql_type.strip().upper()
    return aliases.get(upper, upper)


def business_checksum_sql(contract: DatasetContract, relation: str, where: str = "") -> str:
    """Order-independent checksum over the business columns of a relation.

    Each row is rendered as text and hashed with md5; the two 64-bit halves are summed.
    Every value is length-prefixed and NULL has its own marker, so no value can shift into
    a neighbouring column or pass for NULL. md5 and the text rendering are stable across
    DuckDB versions, unlike hash().
    """
    parts = []
    for c in contract.column_names:
        text = f"CAST({quote_ident(c)} AS VARCHAR)"
        parts.append(f"coalesce(length({text})::VARCHAR || ':' || {text}, '-')")
    row = f"concat({', '.join(parts)})"
    return (
        f"SELECT count(*), coalesce(sum(md5_number_upper({row})::HUGEINT), 0), "
        f"coalesce(sum(md5_number_lower({row})::HUGEINT), 0) FROM {relation} {where}"
    )


def business_checksum(
    conn: duckdb.DuckDBPyConnection,
    contract: DatasetContract,
    relation: str,
    where: str = "",
    params: Sequence[object] = (),
) -> str:
    count, upper, lower = conn.execute(
        business_checksum_sql(contract, relation, where), list(params)
    ).fetchone()
    return f"n{count}-{int(upper) % (1 << 64):016x}{int(lower) % (1 << 64):016x}"


def _stage_rejects(request: PublishRequest) -> pd.DataFrame | None:
    if request.rejects is None:
        return None
    frame = request.rejects
    missing = [c for c in REJECT_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaMismatchError(
            f"dataset {request.contract.name}: rejected rows lack column(s) {missing}"
        )
    frame = frame[REJECT_COLUMNS].copy()
    frame.insert(0, "asset", request.contract.name)
    frame.insert(2, "run_id", request.run_id)
    owned = {d.isoformat() for d in request.owned_partitions}
    outside = sorted(
        {d.isoformat() for d in pd.to_datetime(frame["partition_date"]).dt.date} - owned
    )
    if outside:
        raise OutsideBoundaryError(
            f"dataset {request.contract.name}: rejected rows are attributed to partitions "
            f"{outside[:5]} that run {request.run_id} does not own"
        )
    return frame


def publish_partitions(conn: duckdb.DuckDBPyConnection, request: PublishRequest) -> PublishResult:
    """Stage, check and atomically replace the owned partitions. See the module docstring."""
    started = time.perf_counter()
    contract = request.contract
    if not request.owned_partitions:
        raise PublishError(f"dataset {contract.name}: a publish must own at least one partition")
    check_frame_columns(contract, request.data)
    rejects = _stage_rejects(request)

    debris = drop_staging_debris(conn, contract)
    staging_name = staging_table_name(contract, request.run_id)
    staging = f"{quote_ident(STAGING_SCHEMA)}.{quote_ident(staging_name)}"
    failpoint("publish.before_staging")
    try:
        _stage(conn, request, staging)
        failpoint("publish.after_staging")
        _check_owned_boundary(conn, request, staging)
        checksum = business_checksum(conn, contract, staging)
        by_partition = {
            d.isoformat(): n
            for d, n in conn.execute(
                f"SELECT {quote_ident(contract.partition_column)}, count(*) FROM {staging} "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
        }
        alters = _reconcile_table_schema(conn, contract)
        ensure_quarantine_table(conn)
        owned = sorted(request.owned_partitions)
        pcol = quote_ident(contract.partition_column)
        names = ", ".join(
            quote_ident(c) for c in [*contract.column_names, *(n for n, _ in PROVENANCE_COLUMNS)]
        )

        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in alters:
                conn.execute(statement)
            failpoint("publish.before_delete")
            replaced = conn.execute(
                f"DELETE FROM {contract.table} WHERE list_contains(?::DATE[], {pcol})", [owned]
            ).fetchone()[0]
            failpoint("publish.after_delete")
            conn.execute(f"INSERT INTO {contract.table} ({names}) SELECT {names} FROM {staging}")
            failpoint("publish.after_insert")
            quarantined = 0
            # The run owns its partitions' quarantine too: rows rejected by an earlier run
            # of these partitions are replaced even when this run rejected nothing.
            conn.execute(
                f"DELETE FROM {QUARANTINE_TABLE} WHERE asset = ? AND "
                "list_contains(?::DATE[], partition_date)",
                [contract.name, owned],
            )
            if rejects is not None:
                conn.register("__ecm_rejects", rejects)
                try:
                    qcols = ", ".join(quote_ident(c) for c, _ in QUARANTINE_COLUMNS)
                    conn.execute(
                        f"INSERT INTO {QUARANTINE_TABLE} ({qcols}) "
                        f"SELECT {qcols} FROM __ecm_rejects"
                    )
                finally:
                    conn.unregister("__ecm_rejects")
                quarantined = len(rejects)
            failpoint("publish.before_commit")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        failpoint("publish.after_commit")
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {staging}")
    return PublishResult(
        table=f"{contract.schema}.{contract.name}",
        rows=sum(by_partition.values()),
        rows_by_partition=by_partition,
        replaced_rows=int(replaced),
        quarantined_rows=quarantined,
        business_checksum=checksum,
        staging_table=f"{STAGING_SCHEMA}.{staging_name}",
        debris_dropped=tuple(debris),
        seconds=time.perf_counter() - started,
    )


def read_partitions(
    conn: duckdb.DuckDBPyConnection,
    contract: DatasetContract,
    first: date,
    last: date,
    *,
    with_provenance: bool = False,
) -> pd.DataFrame:
    """Published rows of partitions [first, last], in a stable order."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [contract.schema, contract.name],
    ).fetchone()[0]
    names = contract.column_names + ([n for n, _ in PROVENANCE_COLUMNS] if with_provenance else [])
    if not exists:
        return empty_frame(contract, with_provenance=with_provenance)
    cols = ", ".join(quote_ident(c) for c in names)
    order = ", ".join(quote_ident(c) for c in contract.business_key)
    pcol = quote_ident(contract.partition_column)
    return conn.execute(
        f"SELECT {cols} FROM {contract.table} WHERE {pcol} BETWEEN ? AND ? ORDER BY {order}",
        [first, last],
    ).df()


_PANDAS_TYPES = {
    "DATE": "datetime64[us]",
    "TIMESTAMPTZ": "datetime64[us, UTC]",
    "BIGINT": "int64",
    "INTEGER": "int32",
    "DOUBLE": "float64",
    "VARCHAR": "object",
    "BOOLEAN": "bool",
}


def empty_frame(contract: DatasetContract, *, with_provenance: bool = False) -> pd.DataFrame:
    cols = [(c.name, c.sql_type) for c in contract.columns]
    if with_provenance:
        cols += list(PROVENANCE_COLUMNS)
    return pd.DataFrame(
        {name: pd.Series(dtype=_PANDAS_TYPES.get(t.upper(), "object")) for name, t in cols}
    )
