"""Stage a run's output, judge it, then replace exactly the owned partitions in one transaction.

The stock DuckDB IO manager deletes and inserts in separate autocommit statements and inserts
by position: a failed insert loses the partition. Here the rows land in a staging table tagged
with the run id first, are checked against the contract and the owned boundary, and only then
does a single transaction delete the owned partitions and insert the staged rows by column name.
Any failure before COMMIT leaves the previously published rows exactly as they were.

Staging is a connection-local temp table by default: readers never see it, a dead process
leaves nothing behind, and the rows are written to the warehouse file once. Durable staging
(a table in schema `ecm_staging`) keeps the staged rows of a crashed run for inspection,
at the cost of a second write.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from ecm_assets.adapters.backends import WarehouseConnection, as_connection
from ecm_assets.adapters.backends.base import Dialect
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.boundaries import partition_from_key
from ecm_assets.contracts.dataset import (
    PROVENANCE_COLUMNS,
    DatasetContract,
    PartitionValue,
    bucket_sql,
    partition_key,
)
from ecm_assets.contracts.transform import REJECT_COLUMNS, UpstreamRelation
from ecm_assets.manifest.lease import liveness
from ecm_assets.manifest.ledger import (
    EVENT_OWED,
    Manifest,
    ensure_ledger,
    load_manifests,
    mark_failed,
    now,
    plan,
    transition,
)
from ecm_assets.manifest.states import TERMINAL, RunStatus
from ecm_assets.publish.failpoints import failpoint
from ecm_assets.publish.recovery import RecoveryResult, recover
from ecm_assets.publish.review import drop_held, hold_staged
from ecm_assets.publish.staging import (
    STAGING_SCHEMA,
    drop_staging_table,
    staging_relation,
    staging_table_name,
    staging_tables,
)
from ecm_assets.publish.versions import (
    EMPTY_CHECKSUM,
    check_closed_partitions,
    ensure_versioned_storage,
    publish_versions,
    refresh_current_view,
    versions_table,
    versions_table_name,
)

log = logging.getLogger(__name__)

QUARANTINE_TABLE = '"ecm_quarantine"."rejected_rows"'
#: Rejected rows of partitions the quality gate blocked: evidence, never replaced.
BLOCKED_TABLE = '"ecm_quarantine"."blocked_rows"'
QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("asset", "VARCHAR NOT NULL"),
    # The partition key (YYYY-MM-DD, YYYY-MM-DD-HH:MM, or a list/hash key); the name stays
    # from when every partition was a date.
    ("partition_date", "VARCHAR NOT NULL"),
    ("run_id", "VARCHAR NOT NULL"),
    ("source_file", "VARCHAR"),
    ("source_line", "BIGINT"),
    ("reason", "VARCHAR NOT NULL"),
    ("column_name", "VARCHAR"),
    ("failure_case", "VARCHAR"),
    ("original_row", "VARCHAR"),
)
BLOCKED_COLUMNS = (*QUARANTINE_COLUMNS, ("blocked_reason", "VARCHAR NOT NULL"))
# A transform supplies REJECT_COLUMNS for a rejected row; the protocol adds asset and run_id.
assert [c for c, _ in QUARANTINE_COLUMNS if c not in ("asset", "run_id")] == REJECT_COLUMNS


class PublishError(RuntimeError):
    """The staged output may not be published; the published data was not touched."""


class OutsideBoundaryError(PublishError):
    """Staged rows carry a partition value the run does not own."""


class SchemaMismatchError(PublishError):
    """Staged or published columns disagree with the dataset contract."""


class StaleInputError(PublishError):
    """The published partition came from a newer input lock than this run's."""


class ClosedPeriodChangedError(PublishError):
    """The output would change rows a closed period was computed from, and was not held."""


class AttemptSettledError(PublishError):
    """The attempt asking to publish was already settled (by recovery) while it computed."""


@dataclass(frozen=True)
class PublishRequest:
    contract: DatasetContract
    owned_partitions: tuple[date, ...]
    run_id: str
    as_of: datetime
    data: pd.DataFrame
    rejects: pd.DataFrame | None = None
    mode: str = "replace"
    reason: str | None = None
    restatement_reason: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    input_boundary: dict[str, Any] | None = None
    reconciliation: dict[str, Any] | None = None
    #: Stage into a table in the warehouse file (kept for forensics if the process dies)
    #: instead of a connection-local temp table (nothing to clean up, one disk write less).
    durable_staging: bool = False
    #: Partitions the quality gate refused (FAIL_PARTITION), with the reason: owned by the
    #: run but left exactly as they are; the rows must not be in `data`.
    blocked: Mapping[date, str] = field(default_factory=dict)
    #: The gate's verdict, recorded in the manifest's `quality` field.
    quality: dict[str, Any] | None = None
    #: MANUAL_REVIEW: validate and keep the staged rows in `ecm_review`, publish nothing.
    hold: bool = False
    #: Set when `ecm review approve` publishes a held run: who approved it and why.
    approval: Mapping[str, str] | None = None
    #: The ledger attempt this output was computed by (set by runs, which plan it): a publish
    #: is refused unless that attempt is still the latest and still live. None: the caller
    #: planned nothing, and the protocol records a new attempt itself.
    attempt: int | None = None

    def __post_init__(self) -> None:
        # Hourly partitions are named by the contract's zone: a plain datetime given for an
        # owned or blocked hour is that hour's UTC start, as stored (ZonedHour).
        c = self.contract
        if c.grain == "hourly":
            object.__setattr__(
                self, "owned_partitions", tuple(map(c.as_hour, self.owned_partitions))
            )
            object.__setattr__(self, "blocked", {c.as_hour(p): w for p, w in self.blocked.items()})


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
    versions: dict[str, int | None] = field(default_factory=dict)
    recoveries: tuple[RecoveryResult, ...] = ()
    held: bool = False
    blocked: tuple[str, ...] = ()
    #: Business checksum of each published partition (ISO date), as the ledger records it.
    checksums_by_partition: dict[str, str] = field(default_factory=dict)


def _ddl_columns(contract: DatasetContract, dialect: Dialect | None = None) -> list[str]:
    """Column definitions of the contract's table; in `dialect`'s types (DuckDB's if None)."""
    typed = dialect.sql_type if dialect is not None else (lambda t: t)
    cols = [
        f"{quote_ident(c.name)} {typed(c.sql_type)}{'' if c.nullable else ' NOT NULL'}"
        for c in contract.columns
    ]
    cols += [
        f"{quote_ident(name)} {typed(sql_type)} NOT NULL" for name, sql_type in PROVENANCE_COLUMNS
    ]
    return cols


def ensure_quarantine_table(conn: Any) -> None:
    conn = as_connection(conn)
    if conn.kind != "duckdb" and all(
        conn.table_exists("ecm_quarantine", t) for t in ("rejected_rows", "blocked_rows")
    ):
        return  # no DDL on a server when nothing is missing (it would lock the tables)
    with conn.ddl_lock():
        conn.execute('CREATE SCHEMA IF NOT EXISTS "ecm_quarantine"')
        cols = ", ".join(f"{quote_ident(n)} {t}" for n, t in QUARANTINE_COLUMNS)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} ({cols})")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {BLOCKED_TABLE} ({cols}, blocked_reason VARCHAR NOT NULL)"
        )
        for table in ("rejected_rows", "blocked_rows"):
            widen_partition_column(conn, "ecm_quarantine", table)
        for table in (QUARANTINE_TABLE, BLOCKED_TABLE):
            index = conn.dialect.index(table, ["asset", "partition_date"])
            if index is not None:
                conn.execute(index)


def widen_partition_column(conn: Any, schema: str, table: str) -> None:
    """Migrate a ledger table written when every partition was a date: its partition_date
    column becomes the partition key as text; a date keeps its YYYY-MM-DD text."""
    found = conn.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = ? AND "
        "table_name = ? AND column_name = 'partition_date'",
        [schema, table],
    ).fetchone()
    if found is not None and str(found[0]).upper() == "DATE":
        conn.execute(
            f"ALTER TABLE {quote_ident(schema)}.{quote_ident(table)} "
            "ALTER COLUMN partition_date SET DATA TYPE VARCHAR"
        )


def append_rows(
    conn: Any,
    table: str,
    frame: pd.DataFrame,
    types: Sequence[tuple[str, str]] = QUARANTINE_COLUMNS,
) -> int:
    """Insert a frame into a table by column name; the number of rows written.

    DuckDB scans the frame itself; another backend gets it bulk-loaded as Arrow, cast to the
    table's (DuckDB) `types` by an in-process DuckDB first, as DuckDB would cast it."""
    if frame is None or not len(frame):
        return 0
    conn = as_connection(conn)
    if conn.kind != "duckdb":
        return conn.copy_in(table, frame_to_arrow(frame, types))
    view = "__ecm_append_rows"
    conn.register(view, frame)
    try:
        cols = ", ".join(quote_ident(c) for c in frame.columns)
        conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {view}")
    finally:
        conn.unregister(view)
    return len(frame)


def frame_to_arrow(frame: pd.DataFrame, types: Sequence[tuple[str, str]]) -> pa.Table:
    """A frame as Arrow, its columns cast to their DuckDB `types` (those named) by DuckDB."""
    wanted = {n: t.replace(" NOT NULL", "") for n, t in types}
    select = ", ".join(
        f"CAST({quote_ident(c)} AS {wanted[c]}) AS {quote_ident(c)}"
        if c in wanted
        else quote_ident(c)
        for c in map(str, frame.columns)
    )
    with duckdb.connect() as local:
        local.execute("SET TimeZone = 'UTC'")
        local.register("__ecm_frame", frame)
        return local.execute(f"SELECT {select} FROM __ecm_frame").fetch_arrow_table()


def keep_blocked_rows(conn: Any, asset: str, run_id: str, frame: pd.DataFrame | None) -> None:
    """Evidence of a run's blocked partitions; a retry of the run replaces its own rows."""
    if frame is None:
        return
    conn.execute(f"DELETE FROM {BLOCKED_TABLE} WHERE asset = ? AND run_id = ?", [asset, run_id])
    append_rows(conn, BLOCKED_TABLE, frame, BLOCKED_COLUMNS)


def _split_blocked(request: PublishRequest) -> tuple[PublishRequest, pd.DataFrame | None]:
    """Rejected rows of blocked partitions go to `blocked_rows`, kept as evidence of the run;
    the partition's own quarantine stays with the rows that are still published."""
    if not request.blocked or request.rejects is None or not len(request.rejects):
        return request, None
    days = pd.Series(request.contract.values_of(request.rejects["partition_date"]), dtype=object)
    in_blocked = days.isin(set(request.blocked)).to_numpy()
    if not in_blocked.any():
        return request, None
    blocked = request.rejects[in_blocked].copy()
    blocked["blocked_reason"] = [request.blocked[d] for d in days[in_blocked]]
    blocked["partition_date"] = [partition_key(d) for d in days[in_blocked]]
    blocked = blocked[[*REJECT_COLUMNS, "blocked_reason"]]
    blocked.insert(0, "asset", request.contract.name)
    blocked.insert(2, "run_id", request.run_id)
    return replace(request, rejects=request.rejects[~in_blocked]), blocked


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


#: The in-process DuckDB table a non-DuckDB backend judges its staged rows in.
JUDGE_TABLE = "temp.main.__ecm_judge"


def _stage_judged(
    conn: WarehouseConnection, request: PublishRequest, staging: str, stack: ExitStack
) -> tuple[duckdb.DuckDBPyConnection, str]:
    """Stage the rows in `staging`; where they can be judged in DuckDB SQL (the owned
    boundary, the checksums): a DuckDB warehouse judges its staging table itself; another
    backend casts and checks the frame in an in-process DuckDB, exactly as DuckDB does,
    bulk-loads that copy into its staging table and judges the local copy."""
    if conn.kind == "duckdb":
        _stage(conn.raw, request, staging)
        return conn.raw, staging
    contract = request.contract
    ddl = ", ".join(_ddl_columns(contract, conn.dialect))
    if request.durable_staging:
        with conn.ddl_lock():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STAGING_SCHEMA)}")
        conn.execute(f"CREATE TABLE {staging} ({ddl})")
    else:
        conn.execute(f"CREATE TEMP TABLE {staging} ({ddl})")
    local = stack.enter_context(duckdb.connect())
    local.execute("SET TimeZone = 'UTC'")
    _stage(local, replace(request, durable_staging=False), JUDGE_TABLE)
    conn.copy_in(staging, local.execute(f"SELECT * FROM {JUDGE_TABLE}").fetch_arrow_table())
    return local, JUDGE_TABLE


def _stage(conn: duckdb.DuckDBPyConnection, request: PublishRequest, staging: str) -> None:
    contract = request.contract
    if request.durable_staging:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STAGING_SCHEMA)}")
        conn.execute(f"CREATE TABLE {staging} ({', '.join(_ddl_columns(contract))})")
    else:
        conn.execute(f"CREATE TEMP TABLE {staging} ({', '.join(_ddl_columns(contract))})")
    failpoint("publish.mid_staging")
    view = "__ecm_staged_frame"
    conn.register(view, request.data)
    try:
        _check_lossless(conn, contract, view)
        names = [*contract.column_names, *(n for n, _ in PROVENANCE_COLUMNS)]
        select = [f"CAST({quote_ident(c.name)} AS {c.sql_type})" for c in contract.columns]
        select += ["?", "?"]
        # Row order in staging carries no meaning (readers sort by business key); letting
        # DuckDB insert out of order lets it parallelize the pandas scan.
        conn.execute("SET preserve_insertion_order = false")
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
        conn.execute("RESET preserve_insertion_order")
        conn.unregister(view)


def _check_owned_boundary(
    conn: duckdb.DuckDBPyConnection, request: PublishRequest, staging: str
) -> None:
    contract = request.contract
    pcol = quote_ident(contract.partition_column)
    owned = sorted(request.owned_partitions)
    offenders = conn.execute(
        f"SELECT {pcol}, count(*) FROM {staging} WHERE NOT "
        f"list_contains(?::{contract.partition_sql_type}[], {pcol}) GROUP BY 1 ORDER BY 1 LIMIT 5",
        [owned],
    ).fetchall()
    if offenders:
        shown = ", ".join(
            f"{contract.partition_column}={partition_key(contract.as_partition(v))} ({n} rows)"
            for v, n in offenders
        )
        raise OutsideBoundaryError(
            f"dataset {contract.name}: run {request.run_id} owns partitions "
            f"{partition_key(owned[0])}..{partition_key(owned[-1])} ({len(owned)}), but staged "
            f"rows carry {shown}. A run may replace only the partitions it owns; nothing was "
            "published."
        )
    if contract.grain == "hash":
        # A row's bucket is decided by its key, never by the transform: a bucket column that
        # disagrees would put the key in two partitions.
        assert contract.hash_key is not None and contract.hash_buckets is not None
        key = quote_ident(contract.hash_key)
        wrong = conn.execute(
            f"SELECT {key}::VARCHAR, {pcol}, {bucket_sql(key, contract.hash_buckets)}, count(*) "
            f"OVER () FROM {staging} WHERE {pcol} <> {bucket_sql(key, contract.hash_buckets)} "
            "LIMIT 1"
        ).fetchone()
        if wrong is not None:
            raise OutsideBoundaryError(
                f"dataset {contract.name}: {wrong[3]} staged row(s) carry a bucket their "
                f"{contract.hash_key} does not hash to, e.g. {contract.hash_key}={wrong[0]!r} in "
                f"{contract.partition_column}={wrong[1]!r}, which belongs in bucket {wrong[2]!r} "
                "(sha256 of the key's UTF-8 text, first 8 bytes big-endian, mod "
                f"{contract.hash_buckets}; contract.buckets_of computes it); nothing was published"
            )


def _reconcile_table_schema(
    conn: WarehouseConnection,
    contract: DatasetContract,
    *,
    table_name: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Create the final table, or apply the one evolution rule: new nullable columns are added.

    Returns the ALTER statements to run inside the publish transaction. A dropped column or
    a changed type is refused: reinterpreting published rows needs an explicit migration.
    The same rule holds for the versions table of a versioned dataset (`table_name`, with
    its `version` column in `extra`): every version shares its columns.
    """
    name = table_name or contract.name
    table = f"{quote_ident(contract.schema)}.{quote_ident(name)}"
    existing = [
        (column, _with_precision(dtype, precision, scale))
        for column, dtype, precision, scale in conn.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [contract.schema, name],
        ).fetchall()
    ]
    if not existing and table_name is None:
        ddl = _ddl_columns(contract, None if conn.kind == "duckdb" else conn.dialect)
        index = conn.dialect.index(contract.table, [quote_ident(contract.partition_column)])
        with conn.ddl_lock():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(contract.schema)}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {contract.table} ({', '.join(ddl)})")
            if index is not None:
                conn.execute(index)
        return []
    # Named in DuckDB's spelling on every backend (PostgreSQL says "bigint", "text").
    have = {
        column: dtype if conn.kind == "duckdb" else _normalise_type(dtype)
        for column, dtype in existing
    }
    wanted = {c.name: c.sql_type for c in contract.columns}
    wanted.update(dict(PROVENANCE_COLUMNS))
    wanted.update(dict(extra))
    problems = []
    for column, dtype in have.items():
        if column not in wanted:
            problems.append(
                f"column {column!r} ({dtype}) is published but no longer in the contract"
            )
        elif _normalise_type(conn.dialect.sql_type(wanted[column])) != _normalise_type(dtype):
            problems.append(f"column {column!r} changed type from {dtype} to {wanted[column]}")
    if problems:
        raise SchemaMismatchError(
            f"table {table} does not match contract {contract.name} v"
            f"{contract.code_version}: {'; '.join(problems)}. Only new nullable columns are "
            "added automatically; migrate the table explicitly (see docs/publish.md)."
        )
    alters = []
    for c in contract.columns:
        if c.name not in have:
            if not c.nullable:
                raise SchemaMismatchError(
                    f"table {table}: new column {c.name!r} is NOT NULL, so published "
                    "rows cannot take it; declare it nullable or migrate explicitly"
                )
            alters.append(conn.dialect.add_column(table, quote_ident(c.name), c.sql_type))
    return alters


def _with_precision(dtype: str, precision: int | None, scale: int | None) -> str:
    """PostgreSQL names a NUMERIC(12,2) column `numeric` and gives its precision apart."""
    if dtype.strip().upper() in ("NUMERIC", "DECIMAL") and precision is not None:
        return f"DECIMAL({int(precision)},{int(scale or 0)})"
    return dtype


_DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")
_SIZED_TEXT = re.compile(r"^(?:VARCHAR|CHARACTER VARYING|TEXT|STRING)\s*\(\s*\d+\s*\)$")


def _normalise_type(sql_type: str) -> str:
    """One spelling per type, so a published column read back (in DuckDB's or PostgreSQL's
    words) compares equal to the contract type it was created from."""
    upper = " ".join(sql_type.strip().upper().split())
    decimal = _DECIMAL.match(upper)
    if decimal:
        # DuckDB's DECIMAL without a width is DECIMAL(18,3); NUMERIC(9) is DECIMAL(9,0).
        width, scale = decimal.groups()
        return f"DECIMAL({width or 18},{scale or (0 if width else 3)})"
    if _SIZED_TEXT.match(upper):
        return "VARCHAR"  # neither warehouse keeps a VARCHAR's length (see sql_type)
    aliases = {
        "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
        "INT8": "BIGINT",
        "INT": "INTEGER",
        "INT4": "INTEGER",
        "FLOAT8": "DOUBLE",
        "STRING": "VARCHAR",
        "TEXT": "VARCHAR",
        "BOOL": "BOOLEAN",
        # PostgreSQL's information_schema spellings
        "CHARACTER VARYING": "VARCHAR",
        "DOUBLE PRECISION": "DOUBLE",
        "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP",
        "REAL": "FLOAT",
        "FLOAT4": "FLOAT",
    }
    return aliases.get(upper, upper)


#: How checksums are computed. DuckDB's hash() is fast (the checksum must not dominate a
#: publish) but only promised stable within a DuckDB version, so every checksum carries this
#: tag and checksums with different tags are never compared as if equal.
CHECKSUM_ALGORITHM = "h" + ".".join(duckdb.__version__.split(".")[:2])


def business_checksum_sql(
    contract: DatasetContract, relation: str, where: str = "", *, by_partition: bool = False
) -> str:
    """Order-independent checksum over the business columns of a relation.

    Two 64-bit row hashes (the second salted) are summed, so row order does not matter,
    duplicated rows count, and a value moved to another column changes the result.
    """
    cols = ", ".join(quote_ident(c) for c in contract.column_names)
    sums = (
        f"count(*), coalesce(sum(hash({cols})::HUGEINT), 0), "
        f"coalesce(sum(hash({cols}, 'ecm')::HUGEINT), 0)"
    )
    if by_partition:
        pcol = quote_ident(contract.partition_column)
        return f"SELECT {pcol}, {sums} FROM {relation} {where} GROUP BY 1"
    return f"SELECT {sums} FROM {relation} {where}"


@contextmanager
def checksum_source(
    conn: Any, contract: DatasetContract, relation: str, where: str = "", params: Sequence = ()
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str, str, list]]:
    """Where DuckDB can compute the checksum of `relation` `where`: on a DuckDB warehouse,
    the relation itself; on another backend, its rows read as Arrow into an in-process DuckDB,
    so the same rows give the same checksum on every backend. Yields (DuckDB connection,
    relation, where, params)."""
    conn = as_connection(conn)
    if conn.kind == "duckdb":
        yield conn.raw, relation, where, list(params)
        return
    cols = [*contract.column_names]
    if contract.partition_column not in cols:
        cols.append(contract.partition_column)
    rows = conn.arrow(
        f"SELECT {', '.join(map(quote_ident, cols))} FROM {relation} {where}", list(params)
    )
    with duckdb.connect() as local:
        local.execute("SET TimeZone = 'UTC'")
        local.register("__ecm_checksum_rows", rows)
        yield local, contract_typed(contract, "__ecm_checksum_rows"), "", []


def contract_typed(contract: DatasetContract, relation: str) -> str:
    """`relation` (rows read back from a non-DuckDB warehouse, registered in DuckDB) with each
    contract column cast back to its contract type, as it was staged and hashed: PostgreSQL
    stores HUGEINT as NUMERIC(38) and returns a NUMERIC in its own Arrow type, and DuckDB's
    hash() sees the type. A value the backend changed (1.5 stored as 2) stays changed after
    the cast. Other columns (provenance) pass through."""
    casts = ", ".join(
        f"CAST({quote_ident(c.name)} AS {c.sql_type}) AS {quote_ident(c.name)}"
        for c in contract.columns
    )
    return f"(SELECT * REPLACE ({casts}) FROM {relation}) AS {quote_ident(relation + '_typed')}"


def business_checksum(
    conn: Any,
    contract: DatasetContract,
    relation: str,
    where: str = "",
    params: Sequence[object] = (),
) -> str:
    with checksum_source(conn, contract, relation, where, params) as (db, rel, cond, args):
        count, first, second = db.execute(
            business_checksum_sql(contract, rel, cond), args
        ).fetchone()
    return _format_checksum(count, first, second)


def _format_checksum(count: int, first: int, second: int) -> str:
    return (
        f"{CHECKSUM_ALGORITHM}:n{count}-{int(first) % (1 << 64):016x}{int(second) % (1 << 64):016x}"
    )


def checksums_comparable(a: str | None, b: str | None) -> bool:
    """Whether two checksums were computed the same way (same algorithm tag)."""
    return bool(a and b and a.split(":", 1)[0] == b.split(":", 1)[0])


def partition_checksums(
    conn: duckdb.DuckDBPyConnection, contract: DatasetContract, relation: str
) -> tuple[dict[date, tuple[int, str]], str]:
    """Row count and checksum of each partition, and of all of them, in one pass."""
    out: dict[date, tuple[int, str]] = {}
    total = [0, 0, 0]
    sql = business_checksum_sql(contract, relation, by_partition=True)
    for partition, count, first, second in conn.execute(sql).fetchall():
        out[contract.as_partition(partition)] = (count, _format_checksum(count, first, second))
        total = [total[0] + count, total[1] + int(first), total[2] + int(second)]
    return out, _format_checksum(*total)


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
    owned = {partition_key(d) for d in request.owned_partitions}
    keys = [
        None if v is None else partition_key(v)
        for v in request.contract.values_of(frame["partition_date"])
    ]
    frame["partition_date"] = keys
    outside = sorted({k for k in keys if k is not None} - owned)
    if outside:
        raise OutsideBoundaryError(
            f"dataset {request.contract.name}: rejected rows are attributed to partitions "
            f"{outside[:5]} that run {request.run_id} does not own"
        )
    return frame


def _ensure_running_manifest(conn: Any, request: PublishRequest) -> None:
    """The run's manifest, moved to RUNNING; created here when the caller planned none."""
    asset = request.contract.name
    found = load_manifests(conn, run_id=request.run_id, asset=asset)
    if request.attempt is not None:
        current = found[0] if found else None
        if current is None or current.attempt != request.attempt or current.status in TERMINAL:
            where = (
                "no manifest"
                if current is None
                else f"attempt {current.attempt} is {current.status} ({current.status_detail})"
            )
            raise AttemptSettledError(
                f"run {request.run_id} {asset} attempt {request.attempt} may not publish: "
                f"{where}. A settled attempt never publishes; a retry is a new attempt."
            )
    if not found or found[0].status in TERMINAL:
        plan(
            conn,
            Manifest(
                run_id=request.run_id,
                asset=asset,
                code_version=request.contract.code_version,
                mode=request.mode,
                parameters=dict(request.parameters),
                input_boundary=request.input_boundary,
                output_boundary=[partition_key(d) for d in sorted(request.owned_partitions)],
            ),
        )
        status = RunStatus.PLANNED
    else:
        status = found[0].status
    if request.approval is not None:
        if status != RunStatus.HELD:
            raise PublishError(
                f"run {request.run_id} {asset}: manifest is {status}, not HELD; only held "
                "output can be approved"
            )
        # HELD -> RUNNING -> ... -> PUBLISHED happens inside the publishing transaction
        # (_approval_transitions): a failed approval leaves the run HELD, retryable.
        return
    if status == RunStatus.PLANNED:
        transition(
            conn,
            request.run_id,
            asset,
            RunStatus.INPUT_LOCKED,
            input_boundary=request.input_boundary,
            input_locked_at=request.as_of,
        )
        status = RunStatus.INPUT_LOCKED
    if status == RunStatus.INPUT_LOCKED:
        transition(conn, request.run_id, asset, RunStatus.RUNNING, started_at=now())
        status = RunStatus.RUNNING
    if status != RunStatus.RUNNING:
        raise PublishError(
            f"run {request.run_id} {asset}: manifest is {status}, expected RUNNING; run "
            f"`ecm recover {request.run_id}` first"
        )


def _approval_transitions(conn: duckdb.DuckDBPyConnection, request: PublishRequest) -> None:
    """The moves a run makes before its commit, made by an approval inside its transaction."""
    assert request.approval is not None
    who = request.approval.get("actor", "?")
    run_id, asset = request.run_id, request.contract.name
    transition(
        conn,
        run_id,
        asset,
        RunStatus.RUNNING,
        detail=f"approved by {who}: {request.approval.get('note', '')}"[:2000],
    )
    transition(conn, run_id, asset, RunStatus.VALIDATING)
    transition(conn, run_id, asset, RunStatus.COMMITTING)


def _verify_stored(
    conn: WarehouseConnection,
    contract: DatasetContract,
    owned: list[date],
    staged: dict[date, tuple[int, str]],
    versions: Mapping[str, int | None],
) -> None:
    """Inside the publish transaction: the rows now stored for each owned partition have the
    checksum taken from staging, which is the one recorded. A cast or storage layer that
    changed a value (1.5 stored as 2) rolls the publish back instead of certifying it."""
    pcol = quote_ident(contract.partition_column)
    dialect = conn.dialect
    if contract.publish_mode == "versioned":
        stored: dict[date, tuple[int, str]] = {}
        table = versions_table(contract)
        for partition in owned:
            version = versions.get(partition_key(partition))
            if version is None:
                continue
            where = f"WHERE {pcol} = ? AND version = ?"
            with checksum_source(conn, contract, table, where, [partition, version]) as (
                db,
                rel,
                cond,
                args,
            ):
                n, a, b = db.execute(business_checksum_sql(contract, rel, cond), args).fetchone()
            stored[partition] = (n, _format_checksum(n, a, b))
    else:
        where = f"WHERE {dialect.owned_filter(pcol, contract.partition_sql_type)}"
        with checksum_source(
            conn, contract, contract.table, where, dialect.owned_params(owned)
        ) as (db, rel, cond, args):
            sql = business_checksum_sql(contract, rel, cond, by_partition=True)
            stored = {
                contract.as_partition(p): (n, _format_checksum(n, a, b))
                for p, n, a, b in db.execute(sql, args).fetchall()
            }
    for partition in owned:
        if contract.publish_mode == "versioned" and versions.get(partition_key(partition)) is None:
            continue
        want = staged.get(partition, (0, EMPTY_CHECKSUM))
        got = stored.get(partition, (0, EMPTY_CHECKSUM))
        if want[0] == 0 and got[0] == 0:
            continue
        if got != want:
            raise PublishError(
                f"dataset {contract.name}: the stored rows of partition {partition} do not match "
                f"the staged rows ({got[0]} rows, checksum {got[1]}; staged {want[0]} rows, "
                f"{want[1]}): a value changed on the way into the table; nothing was published"
            )


def _check_not_stale(conn: WarehouseConnection, request: PublishRequest, owned: list[date]) -> None:
    """Refuse to publish output computed from inputs that are no longer what is published.

    Checked under the warehouse lock, against what was read, not against a clock: every
    upstream range the input boundary locked names the runs whose rows it read; if those
    partitions now show other runs (upstream was republished since), this output is stale.
    A dataset that reads no upstream (only landing files) has no published input to compare,
    so its runs are ordered by their input lock time: the later publisher of a partition
    fails cleanly instead of silently winning with staler inputs.
    """
    contract = request.contract
    reads = (request.input_boundary or {}).get("upstream") or []
    for read in reads:
        _check_upstream_unchanged(conn, request, read)
    if reads:
        return
    exists = published_table_exists(conn, contract)
    if not exists:
        return
    pcol = quote_ident(contract.partition_column)
    newer = conn.execute(
        f"SELECT {pcol}, run_id, as_of FROM {contract.table} WHERE "
        f"{conn.dialect.owned_filter(pcol, contract.partition_sql_type)} AND as_of > ? AND "
        "run_id <> ? ORDER BY as_of DESC LIMIT 1",
        [*conn.dialect.owned_params(owned), request.as_of, request.run_id],
    ).fetchone()
    if newer is not None:
        raise StaleInputError(
            f"dataset {contract.name} partition {partition_key(contract.as_partition(newer[0]))}"
            f" was published by run "
            f"{newer[1]} from an input locked at {newer[2].isoformat()}, after this run's input "
            "lock "
            f"({request.as_of.isoformat()}); refusing to replace newer output with older. "
            "Rerun to lock a fresh input boundary."
        )


def _check_upstream_unchanged(
    conn: WarehouseConnection, request: PublishRequest, read: Mapping[str, Any]
) -> None:
    from ecm_assets.contracts.registry import contract_for

    try:
        upstream = contract_for(read["dataset"])
    except KeyError:
        return  # not a dataset of this code location: nothing to compare against
    first, last = read["first_partition"], read["last_partition"]
    now_ids: tuple[str, ...] = ()
    if published_table_exists(conn, upstream):
        pcol = quote_ident(upstream.partition_column)
        keys = list(read.get("keys") or ())

        def value(key: str) -> PartitionValue:  # as recorded, even if outside start..end now
            return key if upstream.is_static else partition_from_key(key, upstream.timezone)

        where, params = f"{pcol} BETWEEN ? AND ?", [value(first), value(last)]
        if keys:  # static upstream: exactly the keys read, not those between them
            where += f" AND {conn.dialect.in_list(pcol, upstream.partition_sql_type)}"
            params.append(keys)
        now_ids = tuple(
            sorted(
                r
                for (r,) in conn.execute(
                    f"SELECT DISTINCT run_id FROM {upstream.table} WHERE {where}", params
                ).fetchall()
            )
        )
    then = tuple(sorted(read.get("run_ids") or ()))
    if now_ids != then:
        raise StaleInputError(
            f"dataset {request.contract.name}: run {request.run_id} read {upstream.name} "
            f"{first}..{last} as published by runs {list(then)}, but it is now published by "
            f"{list(now_ids)}; refusing to publish output of superseded input. Rerun to read "
            "the current upstream."
        )


def _check_closed_upstream(
    conn: WarehouseConnection,
    request: PublishRequest,
    owned: Sequence[PartitionValue],
    per_partition: Mapping[PartitionValue, tuple[int, str]],
) -> None:
    """Under the publish lock, the closed-period rule once more (publish/closed_periods.py).

    A run decides to hold a change for review when it is judged; a period closed between that
    judgement and this publish would otherwise be changed underneath its certified numbers.
    Here the rule is decided on what is closed and published now, against the staged rows.
    """
    from ecm_assets.contracts.boundaries import InputBoundary
    from ecm_assets.publish.closed_periods import (
        continues_reviewed_correction,
        guarded_partitions,
        own_closed,
    )

    contract = request.contract
    guarded = {
        p: feeds
        for p, feeds in guarded_partitions(conn, contract, owned).items()
        if not own_closed(contract, p, feeds)  # its own closed partitions: restatement rule
    }
    if not guarded:
        return
    exists = published_table_exists(conn, contract)
    pcol = quote_ident(contract.partition_column)
    changed = []
    for p in sorted(guarded):
        now = (
            business_checksum(conn, contract, contract.table, f"WHERE {pcol} = ?", [p])
            if exists
            else None
        )
        staged = per_partition.get(p, (0, _format_checksum(0, 0, 0)))[1]
        if staged != now:
            changed.append(p)
    if not changed:
        return
    if request.input_boundary and continues_reviewed_correction(
        conn, InputBoundary.from_json(request.input_boundary)
    ):
        return
    feeds = "; ".join(f"{partition_key(p)} feeds {guarded[p]}" for p in changed)
    raise ClosedPeriodChangedError(
        f"dataset {contract.name}: run {request.run_id} would change rows a closed period was "
        f"computed from ({feeds}), and it was not held for review (the period was closed "
        "after the run was judged, or the caller skipped the check). Nothing was published; "
        "rerun it to have the change held for review."
    )


def _record_all_blocked(
    conn: WarehouseConnection,
    request: PublishRequest,
    blocked_rejects: pd.DataFrame | None,
    started: float,
) -> PublishResult:
    """Every owned partition was blocked: keep the evidence, publish nothing, end FAILED."""
    contract, run_id = request.contract, request.run_id
    ensure_ledger(conn)
    _ensure_running_manifest(conn, request)
    ensure_quarantine_table(conn)
    reasons = "; ".join(f"{d}: {w}" for d, w in sorted(request.blocked.items()))
    conn.begin()
    try:
        keep_blocked_rows(conn, contract.name, run_id, blocked_rejects)
        transition(
            conn,
            run_id,
            contract.name,
            RunStatus.FAILED,
            detail=f"quality gate blocked every partition: {reasons}"[:2000],
            finished_at=now(),
            quality=request.quality,
            reconciliation=request.reconciliation,
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return PublishResult(
        table=f"{contract.schema}.{contract.name}",
        rows=0,
        rows_by_partition={},
        replaced_rows=0,
        quarantined_rows=0,
        business_checksum="",
        staging_table="",
        debris_dropped=(),
        seconds=time.perf_counter() - started,
        blocked=tuple(partition_key(d) for d in sorted(request.blocked)),
    )


def publish_partitions(conn: Any, request: PublishRequest) -> PublishResult:
    """Stage, judge and atomically publish the owned partitions; see the module docstring.

    The run's manifest moves RUNNING -> VALIDATING -> COMMITTING -> PUBLISHED, and
    PUBLISHED is written in the same transaction that makes the data visible. The whole
    publish, its checks included, runs under the backend's lock of the owned partitions
    (DuckDB: the file lock; PostgreSQL: an advisory lock per partition).
    """
    conn = as_connection(conn)
    contract = request.contract
    if not request.owned_partitions:
        raise PublishError(f"dataset {contract.name}: a publish must own at least one partition")
    keys = [partition_key(d) for d in request.owned_partitions]
    with conn.lock_partitions(contract.name, keys):
        return _publish_locked(conn, request)


def _publish_locked(conn: WarehouseConnection, request: PublishRequest) -> PublishResult:
    started = time.perf_counter()
    contract = request.contract
    check_frame_columns(contract, request.data)
    request, blocked_rejects = _split_blocked(request)
    if request.blocked:
        # Partitions the gate refused stay as they are: the run publishes the rest only.
        publishable = tuple(d for d in request.owned_partitions if d not in request.blocked)
        request = replace(request, owned_partitions=publishable)
        if not publishable:
            return _record_all_blocked(conn, request, blocked_rejects, started)
    rejects = _stage_rejects(request)
    owned = sorted(request.owned_partitions)
    asset, run_id = contract.name, request.run_id

    ensure_ledger(conn)
    _ensure_running_manifest(conn, request)
    approving = request.approval is not None
    # The same check `ecm recover` runs: settle what dead runs left on these partitions.
    recoveries = recover(conn, asset=asset, partitions=owned, exclude_run=run_id, contract=contract)
    staging_name = staging_table_name(contract, run_id)
    staging = (
        staging_relation(contract, run_id)
        if request.durable_staging
        else conn.dialect.temp_table(staging_name)
    )
    debris = []
    for name in _debris_tables(conn, contract, staging_name):
        drop_staging_table(conn, name)
        debris.append(name)
    if debris:
        log.warning("dropped staging debris of crashed runs: %s", ", ".join(debris))

    in_transaction = False
    local = ExitStack()
    try:
        failpoint("publish.before_staging")
        judge, judged = _stage_judged(conn, request, staging, local)
        failpoint("publish.after_staging")
        if not approving:
            transition(conn, run_id, asset, RunStatus.VALIDATING)
        _check_owned_boundary(judge, request, judged)
        per_partition, checksum = partition_checksums(judge, contract, judged)
        by_partition = {partition_key(d): per_partition[d][0] for d in sorted(per_partition)}
        versioned = contract.publish_mode == "versioned"
        if versioned:
            ensure_versioned_storage(conn, contract)
            check_closed_partitions(
                conn, contract, owned, per_partition, request.restatement_reason
            )
            alters = _reconcile_table_schema(
                conn,
                contract,
                table_name=versions_table_name(contract),
                extra=(("version", "BIGINT"),),
            )
        else:
            alters = _reconcile_table_schema(conn, contract)
        _check_not_stale(conn, request, owned)
        if not request.hold and not approving:
            _check_closed_upstream(conn, request, owned, per_partition)
        ensure_quarantine_table(conn)
        if request.hold:
            held = hold_staged(
                conn, request, staging, rejects, blocked_rejects, per_partition, checksum
            )
            return PublishResult(
                table=f"{contract.schema}.{contract.name}",
                rows=0,
                rows_by_partition=by_partition,
                replaced_rows=0,
                quarantined_rows=0 if rejects is None else len(rejects),
                business_checksum=checksum,
                staging_table=held,
                debris_dropped=tuple(debris),
                seconds=time.perf_counter() - started,
                recoveries=tuple(recoveries),
                held=True,
            )
        if not approving:
            transition(conn, run_id, asset, RunStatus.COMMITTING)
        pcol = quote_ident(contract.partition_column)
        names = ", ".join(
            quote_ident(c) for c in [*contract.column_names, *(n for n, _ in PROVENANCE_COLUMNS)]
        )

        conn.begin()
        in_transaction = True
        if approving:
            _approval_transitions(conn, request)
        versions: dict[str, int | None] = {}
        replaced = 0
        for statement in alters:
            conn.execute(statement)
        if alters and versioned:
            refresh_current_view(conn, contract)
        if versioned:
            versions = publish_versions(
                conn,
                contract,
                staging,
                owned,
                per_partition,
                run_id=run_id,
                reason=request.reason,
                restatement_reason=request.restatement_reason,
            )
            failpoint("publish.after_delete")
        else:
            failpoint("publish.before_delete")
            replaced = conn.execute(
                f"DELETE FROM {contract.table} WHERE "
                f"{conn.dialect.owned_filter(pcol, contract.partition_sql_type)}",
                conn.dialect.owned_params(owned),
            ).fetchone()[0]
            failpoint("publish.after_delete")
            # A range is written in date order so zone maps keep pruning by partition.
            order = f" ORDER BY {pcol}" if len(owned) > 1 else ""
            conn.execute(
                f"INSERT INTO {contract.table} ({names}) SELECT {names} FROM {staging}{order}"
            )
        # What readers now see must be exactly what was staged and judged.
        _verify_stored(conn, contract, owned, per_partition, versions)
        # Quarantine belongs to the run that judged it (docs/publish.md). Replace mode: the
        # run owns its partitions' quarantine, so an earlier run's rows are replaced even when
        # this run rejected nothing. Versioned: every version keeps its own (a retry of this
        # run replaces its own rows); the current version's run selects what is shown.
        own_run = " AND run_id = ?" if versioned else ""
        conn.execute(
            f"DELETE FROM {QUARANTINE_TABLE} WHERE asset = ? AND "
            f"{conn.dialect.owned_filter('partition_date', 'VARCHAR')}{own_run}",
            [
                asset,
                *conn.dialect.owned_params([partition_key(d) for d in owned]),
                *([run_id] if versioned else []),
            ],
        )
        quarantined = 0 if rejects is None else append_rows(conn, QUARANTINE_TABLE, rejects)
        keep_blocked_rows(conn, asset, run_id, blocked_rejects)
        if request.approval is not None:
            drop_held(conn, contract, run_id)
        failpoint("publish.after_insert")
        outputs = {
            "table": f"{contract.schema}.{contract.name}",
            "publish_mode": contract.publish_mode,
            "rows": sum(by_partition.values()),
            "rows_by_partition": by_partition,
            "business_checksum": checksum,
            "versions": versions or None,
            "replaced_rows": int(replaced),
            "quarantined_rows": quarantined,
            "blocked_partitions": {partition_key(d): w for d, w in sorted(request.blocked.items())},
            "approval": dict(request.approval) if request.approval else None,
        }
        detail = None
        if request.blocked:
            detail = (
                f"published {len(owned)} of {len(owned) + len(request.blocked)} partitions; "
                f"blocked by the quality gate: "
                + "; ".join(f"{d}: {w}" for d, w in sorted(request.blocked.items()))
            )[:2000]
        extra: dict[str, Any] = {}
        if request.quality is not None:
            extra["quality"] = request.quality
        if request.reconciliation is not None:
            extra["reconciliation"] = request.reconciliation
        transition(
            conn,
            run_id,
            asset,
            RunStatus.PUBLISHED,
            detail=detail,
            finished_at=now(),
            outputs=outputs,
            # The outbox: Dagster is owed this publish's materializations until an instance
            # is seen to hold them (publish/outbox.py), whatever happens after COMMIT.
            dagster_event=EVENT_OWED,
            **extra,
        )
        failpoint("publish.before_commit")  # after the ledger write
        conn.commit()
        in_transaction = False
        failpoint("publish.after_commit")
    except BaseException as exc:
        if in_transaction:
            conn.rollback()
        if not approving:  # a failed approval rolled back to HELD: approve again
            mark_failed(conn, run_id, asset, exc)
        raise
    finally:
        local.close()
        conn.execute(f"DROP TABLE IF EXISTS {staging}")
    return PublishResult(
        table=f"{contract.schema}.{contract.name}",
        rows=sum(by_partition.values()),
        rows_by_partition=by_partition,
        replaced_rows=int(replaced),
        quarantined_rows=quarantined,
        business_checksum=checksum,
        staging_table=(
            f"{STAGING_SCHEMA}.{staging_name}"
            if request.durable_staging
            else conn.dialect.temp_table(staging_name).replace(
                quote_ident(staging_name), staging_name
            )
        ),
        debris_dropped=tuple(debris),
        seconds=time.perf_counter() - started,
        versions=versions,
        recoveries=tuple(recoveries),
        blocked=tuple(partition_key(d) for d in sorted(request.blocked)),
        checksums_by_partition={
            partition_key(d): per_partition[d][1] for d in sorted(per_partition)
        },
    )


def _debris_tables(conn: Any, contract: DatasetContract, own: str) -> list[str]:
    """Durable staging tables that no live attempt will use again: this run's own leftover,
    and those of settled or dead runs. A live run of other partitions keeps its staging."""
    owners = {
        staging_table_name(contract, m.run_id): m for m in load_manifests(conn, asset=contract.name)
    }
    out = []
    for name in staging_tables(conn, contract):
        manifest = owners.get(name)
        keep = (
            name != own
            and manifest is not None
            and manifest.status not in TERMINAL
            and (manifest.status == RunStatus.HELD or liveness(conn, manifest)[0])
        )
        if not keep:
            out.append(name)
    return out


def published_table_exists(conn: Any, contract: DatasetContract) -> bool:
    """Whether the table (or, for versioned datasets, the view) consumers read exists yet."""
    return as_connection(conn).table_exists(contract.schema, contract.name)


def read_partitions(
    conn: Any,
    contract: DatasetContract,
    first: PartitionValue,
    last: PartitionValue,
    *,
    with_provenance: bool = False,
    partitions: Sequence[PartitionValue] | None = None,
) -> pd.DataFrame:
    """Published rows of partitions [first, last] (only `partitions` of them, when given: list
    and hash keys between two read keys are not read), in a stable order."""
    conn = as_connection(conn)
    exists = published_table_exists(conn, contract)
    names = contract.column_names + ([n for n, _ in PROVENANCE_COLUMNS] if with_provenance else [])
    if not exists:
        return empty_frame(contract, with_provenance=with_provenance)
    cols = ", ".join(quote_ident(c) for c in names)
    order = ", ".join(quote_ident(c) for c in contract.business_key)
    pcol = quote_ident(contract.partition_column)
    where, params = f"{pcol} BETWEEN ? AND ?", [first, last]
    if partitions is not None:
        where += f" AND {conn.dialect.in_list(pcol, contract.partition_sql_type)}"
        params.append(sorted(partitions))
    return conn.df(f"SELECT {cols} FROM {contract.table} WHERE {where} ORDER BY {order}", params)


@dataclass(frozen=True)
class PublishedPartitions:
    """What the IO manager hands a dataset that reads its upstream in the warehouse
    (`upstream_as="relation"`): which published partitions, not their rows. The asset
    opens them as an UpstreamRelation inside its own snapshot (`upstream_relation`)."""

    dataset: str
    first: date
    last: date


def upstream_relation(
    conn: Any, contract: DatasetContract, first: date, last: date
) -> UpstreamRelation:
    """Published rows of partitions [first, last] as an UpstreamRelation on `conn` (the
    caller holds the transaction that makes every read of it one snapshot).

    SQL transforms are DuckDB SQL: on another backend the rows are read once as Arrow into
    the connection's in-process DuckDB (`scratch`), and the relation lives there."""
    conn = as_connection(conn)
    names = contract.column_names + [n for n, _ in PROVENANCE_COLUMNS]
    pcol = quote_ident(contract.partition_column)
    exists = published_table_exists(conn, contract)
    if conn.kind != "duckdb" and exists:
        cols = ", ".join(quote_ident(c) for c in names)
        rows = conn.arrow(
            f"SELECT {cols} FROM {contract.table} WHERE {pcol} BETWEEN ? AND ?", [first, last]
        )
        local = conn.scratch()
        name = f"__ecm_upstream_{contract.name}"
        local.register(name, rows)
        return UpstreamRelation(
            contract.name,
            local,
            # In contract types, so a SQL transform sees what it would see on DuckDB.
            f"SELECT {cols} FROM {contract_typed(contract, name)}",
            tuple(contract.column_names),
            contract.partition_column,
            first,
            last,
        )
    conn = conn.scratch()  # DuckDB: the warehouse connection itself
    if exists:
        catalog = conn.execute("SELECT current_database()").fetchone()[0]
        # Catalog-qualified: the transform's temp view of the same name must not shadow it.
        table = f"{quote_ident(catalog)}.{contract.table}"
        cols = ", ".join(quote_ident(c) for c in names)
        source = (
            f"SELECT {cols} FROM {table} WHERE {pcol} BETWEEN DATE '{first.isoformat()}' "
            f"AND DATE '{last.isoformat()}'"
        )
    else:  # never published: no rows, the contract's types
        types = {c.name: c.sql_type for c in contract.columns} | dict(PROVENANCE_COLUMNS)
        cols = ", ".join(f"CAST(NULL AS {types[n]}) AS {quote_ident(n)}" for n in names)
        source = f"SELECT {cols} WHERE false"
    return UpstreamRelation(
        contract.name,
        conn,
        source,
        tuple(contract.column_names),
        contract.partition_column,
        first,
        last,
    )


_PANDAS_TYPES = {
    "DATE": "datetime64[us]",
    "TIMESTAMP": "datetime64[us]",
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


def frame_checksum(contract: DatasetContract, frame: pd.DataFrame) -> str:
    """The business checksum a publish of `frame` would record, computed without publishing."""
    check_frame_columns(contract, frame)
    with duckdb.connect() as conn:
        request = PublishRequest(contract, (date.min,), "checksum", datetime.min, frame)
        staging = "temp.main.checksum_frame"
        _stage(conn, request, staging)
        return business_checksum(conn, contract, staging)
