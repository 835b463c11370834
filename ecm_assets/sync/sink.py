"""The upsert sink: staged pages, then a version-aware merge by key into the context store.

Staging is a warehouse table (`ecm_staging.sync__<table>`) whose rows carry the run id, the
partition, the row version and the tombstone flag. A page and its checkpoint commit in one
transaction; a partition's merge, its checkpoint and (for the last one) the run's manifest
commit in another. The merge keeps, per key, the newest version seen by the run and writes
it only where the store holds no row or an older version: a re-read row (overlap, replay)
changes nothing, and an older version never overwrites a newer one. Soft deletes arrive as
ordinary versions with `_deleted`; a full extraction also tombstones keys the source no
longer has (hard deletes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.sync.backend import (
    arrow_of,
    columns,
    compute,
    create_table_for,
    ensure_schema,
    in_list,
    is_duckdb,
    load_arrow,
    table_exists,
)
from ecm_assets.sync.partitioning import partition_sql
from ecm_assets.sync.spec import JobSpec

STAGING_SCHEMA = "ecm_staging"
#: Columns the sync adds to every store row, after the source's own columns.
SYNC_COLUMNS = (
    "_partition",
    "_version",
    "_deleted",
    "_delete_kind",
    "_source_cursor",
    "run_id",
    "_synced_at",
)


@dataclass(frozen=True)
class Tables:
    staging: str
    keys: str
    store: str
    store_schema: str
    store_name: str


def tables_for(spec: JobSpec) -> Tables:
    return Tables(
        staging=f"{quote_ident(STAGING_SCHEMA)}.{quote_ident('sync__' + spec.table)}",
        keys=f"{quote_ident(STAGING_SCHEMA)}.{quote_ident('sync_keys__' + spec.table)}",
        store=f"{quote_ident(spec.store)}.{quote_ident(spec.table)}",
        store_schema=spec.store,
        store_name=spec.table,
    )


def _exists(conn: Any, schema: str, name: str) -> bool:
    return table_exists(conn, schema, name)


def store_exists(conn: Any, spec: JobSpec) -> bool:
    return _exists(conn, spec.store, spec.table)


def reset_staging(conn: Any, spec: JobSpec) -> None:
    """A fresh run starts with empty staging (an unfinished run is resumed, never dropped)."""
    t = tables_for(spec)
    conn.execute(f"DROP TABLE IF EXISTS {t.staging}")
    conn.execute(f"DROP TABLE IF EXISTS {t.keys}")


def _page_select(spec: JobSpec, page: pa.Table) -> tuple[str, list[Any]]:
    """Staging rows of the registered page `__ecm_sync_page` (it has `_partition`)."""
    src = spec.source
    cols = []
    for f in page.schema:
        if f.name == "_partition":
            continue
        q = quote_ident(str(f.name))
        # A column that is NULL on the whole first page must not be typed INTEGER by guess.
        if pa.types.is_null(f.type):
            cols.append(f"CAST({q} AS VARCHAR) AS {q}")
        else:
            cols.append(q)
    version = quote_ident(src.version_column or src.cursor.column)
    if src.deleted_column:
        d = quote_ident(src.deleted_column)
        deleted = (
            f"coalesce({d} IS NOT NULL AND lower(CAST({d} AS VARCHAR)) NOT IN "
            "('0', 'false', 'f', ''), false)"
        )
    else:
        deleted = "false"
    cursor = (
        f"CAST({quote_ident(src.cursor.column)} AS VARCHAR) || '|' || "
        f"CAST({quote_ident(src.cursor.tiebreaker)} AS VARCHAR)"
    )
    select = (
        f"SELECT {', '.join(cols)}, CAST(? AS VARCHAR) AS _run_id, _partition, "
        f"{version} AS _version, {deleted} AS _deleted, {cursor} AS _source_cursor "
        "FROM __ecm_sync_page"
    )
    return select, []


def stage_page(conn: Any, spec: JobSpec, run_id: str, page: pa.Table) -> dict[str, int]:
    """Append one page to staging; rows per partition. Call inside the page transaction.

    The partition is a function of the partition key, so DuckDB computes it once per
    distinct key value (sha256 is the costly part); Arrow maps it back onto the rows and
    orders the page by partition, so each partition's staged rows sit together and its
    merge reads them without reading every other partition's. On PostgreSQL the same
    DuckDB SQL runs in memory over the page and the staged rows are COPYed in."""
    t = tables_for(spec)
    scratch = compute(conn)
    page = _with_partition(scratch, spec, page)
    counts = {
        p.as_py(): int(n.as_py())
        for p, n in zip(*pc.value_counts(page.column("_partition")).flatten(), strict=True)
    }
    unmatched = counts.pop(None, 0)
    if unmatched:
        raise ValueError(
            f"sync job {spec.job_id}: {unmatched} row(s) have a {spec.partitioning.key} "
            f"value no partition names (list partitioning allows "
            f"{list(spec.partitioning.values)})"
        )
    if not is_duckdb(conn):
        _stage_page_copy(conn, spec, run_id, page)
        return counts
    conn.register("__ecm_sync_page", page)
    try:
        select, params = _page_select(spec, page)
        if not _exists(conn, STAGING_SCHEMA, "sync__" + spec.table):
            ensure_schema(conn, STAGING_SCHEMA)
            conn.execute(f"CREATE TABLE {t.staging} AS {select} LIMIT 0", [run_id, *params])
        else:
            _add_new_columns(conn, t.staging, STAGING_SCHEMA, "sync__" + spec.table, page)
        # Staged rows live until the run publishes: written uncompressed (compressing them
        # cost more than twice the write). The setting is the database's, so it is put back
        # at once; the store is compressed as usual.
        conn.execute("SET force_compression = 'uncompressed'")
        try:
            conn.execute(f"INSERT INTO {t.staging} BY NAME {select}", [run_id, *params])
        finally:
            conn.execute("RESET force_compression")
    finally:
        conn.unregister("__ecm_sync_page")
    return counts


def _stage_page_copy(conn: Any, spec: JobSpec, run_id: str, page: pa.Table) -> None:
    """PostgreSQL: the staged columns computed by DuckDB in memory, COPYed into staging."""
    t = tables_for(spec)
    scratch = compute(conn)
    scratch.register("__ecm_sync_page", page)
    try:
        select, params = _page_select(spec, page)
        rows = arrow_of(scratch.execute(select, [run_id, *params]))
    finally:
        scratch.unregister("__ecm_sync_page")
    if not _exists(conn, STAGING_SCHEMA, "sync__" + spec.table):
        ensure_schema(conn, STAGING_SCHEMA)
        create_table_for(conn, t.staging, rows.schema)
        # Each partition's merge reads its own staged rows.
        conn.execute(f"CREATE INDEX ON {t.staging} (_run_id, _partition)")
    else:
        _add_new_columns(conn, t.staging, STAGING_SCHEMA, "sync__" + spec.table, rows)
    load_arrow(conn, t.staging, rows)


def _with_partition(conn: Any, spec: JobSpec, page: pa.Table) -> pa.Table:
    """The page ordered by partition, with a `_partition` column (null: no partition)."""
    part_expr, part_params = partition_sql(spec.partitioning)
    name = spec.partitioning.key
    keys = page.column(name).combine_chunks()
    conn.register("__ecm_sync_keys", pa.table({name: pc.unique(keys)}))
    try:
        found = conn.execute(
            f"SELECT {quote_ident(name)} AS k, {part_expr} AS p FROM __ecm_sync_keys",
            part_params,
        ).arrow()
        if isinstance(found, pa.RecordBatchReader):  # lazy: read it while the keys exist
            found = found.read_all()
    finally:
        conn.unregister("__ecm_sync_keys")
    distinct = found.column("k").combine_chunks()
    if distinct.type != keys.type:
        distinct = distinct.cast(keys.type)
    partition = pc.take(found.column("p").combine_chunks(), pc.index_in(keys, value_set=distinct))
    order = pc.sort_indices(partition)
    return page.take(order).append_column("_partition", partition.take(order))


def _add_new_columns(conn, table: str, schema: str, name: str, page: pa.Table) -> None:
    """A source column that appears later is added as nullable (the project's one rule)."""
    have = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = ?",
            [schema, name],
        ).fetchall()
    }
    for column in page.column_names:
        if str(column) not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(str(column))} VARCHAR")


def stage_keys(conn: Any, spec: JobSpec, run_id: str, keys: pa.Array) -> int:
    """The source's live keys for hard-delete reconciliation (full extraction)."""
    t = tables_for(spec)
    frame = pa.table({"key": keys, "_run_id": pa.repeat(pa.scalar(run_id), len(keys))})
    ensure_schema(conn, STAGING_SCHEMA)
    if not is_duckdb(conn):
        if not _exists(conn, STAGING_SCHEMA, "sync_keys__" + spec.table):
            create_table_for(conn, t.keys, frame.schema)
            conn.execute(f"CREATE INDEX ON {t.keys} (_run_id, key)")
        conn.execute(f"DELETE FROM {t.keys} WHERE _run_id = ?", [run_id])
        load_arrow(conn, t.keys, frame)
        return frame.num_rows
    conn.register("__ecm_sync_keys", frame)
    try:
        if not _exists(conn, STAGING_SCHEMA, "sync_keys__" + spec.table):
            conn.execute(f"CREATE TABLE {t.keys} AS SELECT * FROM __ecm_sync_keys LIMIT 0")
        conn.execute(f"DELETE FROM {t.keys} WHERE _run_id = ?", [run_id])
        conn.execute(f"INSERT INTO {t.keys} SELECT * FROM __ecm_sync_keys")
    finally:
        conn.unregister("__ecm_sync_keys")
    return frame.num_rows


def ensure_store(conn: Any, spec: JobSpec) -> None:
    """Create the context-store table from the staged columns, or add new ones."""
    t = tables_for(spec)
    if not _exists(conn, STAGING_SCHEMA, "sync__" + spec.table):
        return
    ensure_schema(conn, spec.store)
    staged = columns(conn, STAGING_SCHEMA, "sync__" + spec.table)
    if not store_exists(conn, spec):
        own = [
            quote_ident(c) for c, _ in staged if c not in ("_run_id", "_deleted", "_source_cursor")
        ]
        conn.execute(
            f"CREATE TABLE {t.store} AS SELECT {', '.join(own)}, "
            "_deleted, CAST(NULL AS VARCHAR) AS _delete_kind, _source_cursor, "
            "CAST(NULL AS VARCHAR) AS run_id, CAST(NULL AS TIMESTAMPTZ) AS _synced_at "
            f"FROM {t.staging} LIMIT 0"
        )
        if not is_duckdb(conn):
            # The merge joins on the key; hard-delete reconciliation reads one partition.
            conn.execute(f"CREATE INDEX ON {t.store} ({quote_ident(spec.source.key)})")
            conn.execute(f"CREATE INDEX ON {t.store} (_partition)")
        return
    have = {c for c, _ in columns(conn, spec.store, spec.table)}
    for name, dtype in staged:
        if name not in have and name != "_run_id":
            conn.execute(f"ALTER TABLE {t.store} ADD COLUMN {quote_ident(name)} {dtype}")


def dedupe_staged(conn: Any, spec: JobSpec, run_id: str) -> int:
    """Keep one staged row per key (its newest version): a row updated during the scan can
    be read twice. One pass when there is nothing to drop."""
    t = tables_for(spec)
    if not _exists(conn, STAGING_SCHEMA, "sync__" + spec.table):
        return 0  # no page staged by any attempt of the run
    key = quote_ident(spec.source.key)
    total, distinct = conn.execute(
        f"SELECT count(*), count(DISTINCT {key}) FROM {t.staging} WHERE _run_id = ?", [run_id]
    ).fetchone()
    if total == distinct:
        return 0
    if not is_duckdb(conn):
        return int(
            conn.execute(
                f"DELETE FROM {t.staging} WHERE ctid IN (SELECT rid FROM (SELECT ctid AS rid, "
                f"row_number() OVER (PARTITION BY {key} ORDER BY _version DESC, _source_cursor "
                f'COLLATE "C" DESC) AS rn FROM {t.staging} WHERE _run_id = ?) AS q WHERE rn > 1)',
                [run_id],
            ).fetchone()[0]
        )
    return int(
        conn.execute(
            f"DELETE FROM {t.staging} WHERE rowid IN (SELECT rid FROM (SELECT rowid AS rid, "
            f"row_number() OVER (PARTITION BY {key} ORDER BY _version DESC, _source_cursor "
            f"DESC) AS rn FROM {t.staging} WHERE _run_id = ?) WHERE rn > 1)",
            [run_id],
        ).fetchone()[0]
    )


@dataclass(frozen=True)
class MergeResult:
    partition: str
    staged: int
    written: int
    unchanged: int
    hard_deleted: int


def foreign_rows(conn: Any, spec: JobSpec, run_id: str) -> bool:
    """Whether the store holds a row this run did not insert (or a hard-delete tombstone):
    without one, no staged key can be in the store and rows are appended, not merged."""
    t = tables_for(spec)
    return bool(
        conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {t.store} WHERE run_id IS DISTINCT FROM ? OR "
            "_delete_kind = 'hard')",
            [run_id],
        ).fetchone()[0]
    )


def insert_partitions(
    conn: Any,
    spec: JobSpec,
    run_id: str,
    partitions: list[str],
    *,
    synced_at: Any,
    reconcile_deletes: bool,
) -> dict[str, MergeResult]:
    """First load (no `foreign_rows`): every staged row of `partitions` appended in one
    statement; call inside the one transaction that completes all their checkpoints.
    The same rows as one `merge_partition` per partition, without 16 scans and commits."""
    t = tables_for(spec)
    staged_columns = [
        c for c, _ in columns(conn, STAGING_SCHEMA, "sync__" + spec.table) if c != "_run_id"
    ]
    names = ", ".join(quote_ident(c) for c in staged_columns)
    values = ", ".join("s." + quote_ident(c) for c in staged_columns)
    among, among_params = in_list(partitions)
    staged = dict(
        conn.execute(
            f"SELECT _partition, count(*) FROM {t.staging} WHERE _run_id = ? AND _partition IN "
            f"{among} GROUP BY _partition",
            [run_id, *among_params],
        ).fetchall()
    )
    duck = is_duckdb(conn)
    if duck:
        # The store's row order means nothing: let DuckDB write it in parallel.
        conn.execute("SET preserve_insertion_order = false")
    try:
        conn.execute(
            f"INSERT INTO {t.store} ({names}, _delete_kind, run_id, _synced_at) SELECT "
            f"{values}, CASE WHEN s._deleted THEN 'soft' END, CAST(? AS VARCHAR), CAST(? AS "
            f"TIMESTAMPTZ) FROM {t.staging} s WHERE s._run_id = ? AND s._partition IN {among}",
            [run_id, synced_at, run_id, *among_params],
        )
    finally:
        if duck:
            conn.execute("RESET preserve_insertion_order")
    hard = tombstone_missing(conn, spec, run_id, partitions, synced_at) if reconcile_deletes else {}
    return {
        p: MergeResult(p, int(staged.get(p, 0)), int(staged.get(p, 0)), 0, hard.get(p, 0))
        for p in partitions
    }


def tombstone_missing(
    conn: Any, spec: JobSpec, run_id: str, partitions: list[str], synced_at: Any
) -> dict[str, int]:
    """Hard deletes of a full extraction: store rows of `partitions` whose key is not among
    the run's staged live keys become tombstones; per partition, how many. NOT EXISTS on
    both backends: NOT IN matches nothing once a live key is
    NULL."""
    t = tables_for(spec)
    key = quote_ident(spec.source.key)
    among, among_params = in_list(partitions)
    hard: dict[str, int] = {}
    for (partition,) in conn.execute(
        f"UPDATE {t.store} AS x SET _deleted = true, _delete_kind = 'hard', run_id = ?, "
        f"_synced_at = ? WHERE x._partition IN {among} AND coalesce(x._delete_kind, '') "
        f"<> 'hard' AND NOT EXISTS (SELECT 1 FROM {t.keys} AS k WHERE k._run_id = ? AND "
        f"k.key = x.{key}) RETURNING x._partition",
        [run_id, synced_at, *among_params, run_id],
    ).fetchall():
        hard[partition] = hard.get(partition, 0) + 1
    return hard


def merge_partition(
    conn: Any,
    spec: JobSpec,
    run_id: str,
    partition: str,
    *,
    synced_at: Any,
    reconcile_deletes: bool,
) -> MergeResult:
    """Version-aware upsert of one partition's staged rows (deduplicated by
    `dedupe_staged`); call inside the partition's transaction."""
    t = tables_for(spec)
    key = quote_ident(spec.source.key)
    staged_columns = [
        c for c, _ in columns(conn, STAGING_SCHEMA, "sync__" + spec.table) if c != "_run_id"
    ]
    staged_rows = f"FROM {t.staging} s WHERE s._run_id = ? AND s._partition = ?"
    staged = conn.execute(f"SELECT count(*) {staged_rows}", [run_id, partition]).fetchone()[0]
    kind = "CASE WHEN s._deleted THEN 'soft' END"
    names = ", ".join(quote_ident(c) for c in staged_columns)
    values = ", ".join("s." + quote_ident(c) for c in staged_columns)
    bind = {"run": run_id, "at": synced_at, "part": partition}
    # First load: when every stored row was inserted or replaced by this run's own merges
    # of other partitions, no staged key of this partition is in the store (staging holds
    # one row per key across all partitions), so there is no version to compare and the
    # rows are appended. A hard-delete tombstone is the one write of a key that was not
    # staged, so any tombstone of this run also takes the MERGE path.
    foreign = foreign_rows(conn, spec, run_id)
    if not is_duckdb(conn):
        written = _merge_postgres(conn, spec, run_id, partition, synced_at, staged_columns, foreign)
    elif not foreign:
        written = conn.execute(
            f"INSERT INTO {t.store} ({names}, _delete_kind, run_id, _synced_at) SELECT "
            f"{values}, {kind}, CAST($run AS VARCHAR), CAST($at AS TIMESTAMPTZ) FROM "
            f"{t.staging} s WHERE s._run_id = $run AND s._partition = $part",
            bind,
        ).fetchone()[0]
    else:
        # One statement: keys the store has never seen are inserted; keys it holds at an
        # older version are replaced; an equal or newer version stays (a re-read changes
        # nothing).
        sets = ", ".join(
            f"{quote_ident(c)} = s.{quote_ident(c)}" for c in staged_columns if c != spec.source.key
        )
        written = conn.execute(
            f"MERGE INTO {t.store} AS x USING (SELECT * EXCLUDE (_run_id), "
            "CAST($run AS VARCHAR) AS __run_id, CAST($at AS TIMESTAMPTZ) AS __synced_at FROM "
            f"{t.staging} WHERE _run_id = $run AND _partition = $part) AS s ON "
            f"x.{key} = s.{key} WHEN MATCHED AND s._version > x._version THEN UPDATE SET "
            f"{sets}, _delete_kind = {kind}, run_id = s.__run_id, _synced_at = s.__synced_at "
            f"WHEN NOT MATCHED THEN INSERT ({names}, _delete_kind, run_id, _synced_at) VALUES "
            f"({values}, {kind}, s.__run_id, s.__synced_at)",
            bind,
        ).fetchone()[0]
    hard = (
        sum(tombstone_missing(conn, spec, run_id, [partition], synced_at).values())
        if reconcile_deletes
        else 0
    )
    written = int(written)
    return MergeResult(partition, int(staged), written, int(staged) - written, int(hard))


def _merge_postgres(
    conn: Any,
    spec: JobSpec,
    run_id: str,
    partition: str,
    synced_at: Any,
    columns: list[str],
    foreign: bool,
) -> int:
    """PostgreSQL 15's MERGE (or a plain INSERT on a first load), `?` parameters in order."""
    t = tables_for(spec)
    key = quote_ident(spec.source.key)
    kind = "CASE WHEN s._deleted THEN 'soft' END"
    names = ", ".join(quote_ident(c) for c in columns)
    values = ", ".join("s." + quote_ident(c) for c in columns)
    if not foreign:
        return int(
            conn.execute(
                f"INSERT INTO {t.store} ({names}, _delete_kind, run_id, _synced_at) SELECT "
                f"{values}, {kind}, CAST(? AS VARCHAR), CAST(? AS TIMESTAMPTZ) FROM "
                f"{t.staging} s WHERE s._run_id = ? AND s._partition = ?",
                [run_id, synced_at, run_id, partition],
            ).fetchone()[0]
        )
    sets = ", ".join(
        f"{quote_ident(c)} = s.{quote_ident(c)}" for c in columns if c != spec.source.key
    )
    return int(
        conn.execute(
            f"MERGE INTO {t.store} AS x USING (SELECT {names}, CAST(? AS VARCHAR) AS __run_id, "
            f"CAST(? AS TIMESTAMPTZ) AS __synced_at FROM {t.staging} WHERE _run_id = ? AND "
            f"_partition = ?) AS s ON x.{key} = s.{key} WHEN MATCHED AND s._version > "
            f"x._version THEN UPDATE SET {sets}, _delete_kind = {kind}, run_id = s.__run_id, "
            f"_synced_at = s.__synced_at WHEN NOT MATCHED THEN INSERT ({names}, _delete_kind, "
            f"run_id, _synced_at) VALUES ({values}, {kind}, s.__run_id, s.__synced_at)",
            [run_id, synced_at, run_id, partition],
        ).fetchone()[0]
    )


def store_rows_after_merge(conn: Any, spec: JobSpec, run_id: str, reconcile_deletes: bool) -> int:
    """Live rows the store will hold once every staged partition is merged (row_count)."""
    t = tables_for(spec)
    key = quote_ident(spec.source.key)
    union = [
        f"SELECT {key} AS k, _version AS v, _deleted AS d, 1 AS pri FROM {t.staging} "
        "WHERE _run_id = ?"
    ]
    params: list[Any] = [run_id]
    if store_exists(conn, spec):
        union.append(f"SELECT {key}, _version, _deleted, 0 FROM {t.store}")
    live = ""
    if reconcile_deletes:
        live = f" AND k IN (SELECT key FROM {t.keys} WHERE _run_id = ?)"
        params.append(run_id)
    if not is_duckdb(conn):
        return int(
            conn.execute(
                f"SELECT count(*) FROM (SELECT k, d, row_number() OVER (PARTITION BY k ORDER "
                f"BY v DESC, pri DESC) AS rn FROM ({' UNION ALL '.join(union)}) AS u) AS q "
                f"WHERE rn = 1 AND NOT d{live}",
                params,
            ).fetchone()[0]
        )
    return int(
        conn.execute(
            f"SELECT count(*) FROM (SELECT k, d FROM ({' UNION ALL '.join(union)}) QUALIFY "
            f"row_number() OVER (PARTITION BY k ORDER BY v DESC, pri DESC) = 1) WHERE NOT d"
            f"{live}",
            params,
        ).fetchone()[0]
    )
