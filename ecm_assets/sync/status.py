"""Operator view of sync jobs: per partition, the cursor, last boundary, rows in the store,
lag behind the source, and the last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ecm_assets.adapters.backends import Warehouse, open_warehouse
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.sync import checkpoints
from ecm_assets.sync.connectors import SourceConnector, SourceError
from ecm_assets.sync.partitioning import partition_of
from ecm_assets.sync.sink import store_exists, tables_for
from ecm_assets.sync.spec import JobSpec


def _source_beyond(spec: JobSpec, low: Any) -> list[tuple[Any, Any]] | str:
    """(partition key, cursor) of source rows past the lowest boundary, or why not known."""
    connector = SourceConnector(spec.source)
    try:
        c = connector._q(spec.source.cursor.column)
        k = connector._q(spec.partitioning.key)
        where = "" if low is None else f" WHERE {c} > :b"
        with connector.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT {k}, {c} FROM ({spec.source.query}) AS ecm_src{where}"),
                {"last_sync": connector.minimum, "b": connector.decode(low)},
            ).fetchall()
        return [(r[0], connector.encode(r[1])) for r in rows]
    except (sa.exc.SQLAlchemyError, SourceError) as exc:
        return f"source unreachable: {str(exc).splitlines()[0][:200]}"
    finally:
        connector.close()


def job_status(
    spec: JobSpec, warehouse: Path | str | Warehouse, *, with_source: bool = True
) -> list[dict]:
    ids = spec.partitioning.partition_ids
    rows_by_part: dict[str, int] = {}
    newest: dict[str, checkpoints.Checkpoint] = {}
    done: dict[str, dict[str, Any]] = {}
    wh = open_warehouse(warehouse)
    if wh.exists():
        with wh.connect(read_only=True) as conn:
            for cp in checkpoints.load_checkpoints(conn, spec.job_id):
                newest[cp.partition] = cp  # ordered by timestamp: the last one wins
            done = checkpoints.completed_boundaries(conn, spec.job_id, ids) if newest else {}
            if store_exists(conn, spec):
                t = tables_for(spec)
                rows_by_part = dict(
                    conn.execute(
                        f"SELECT _partition, count(*) FILTER (WHERE NOT _deleted) FROM {t.store} "
                        "GROUP BY 1"
                    ).fetchall()
                )
    tops = [b.get("next_updated_at") for b in done.values() if b.get("next_updated_at")]
    beyond: list[tuple[Any, Any]] | str = []
    if with_source:
        low = None if len(tops) < len(ids) else min(str(t) for t in tops)
        beyond = _source_beyond(spec, low)
    out = []
    for p in ids:
        cp = newest.get(p)
        boundary = done.get(p, {})
        top = boundary.get("next_updated_at")
        if isinstance(beyond, str):
            lag: Any = beyond
        elif not with_source:
            lag = None
        else:
            lag = sum(
                1
                for key, cur in beyond
                if partition_of(spec.partitioning, key) == p
                and (top is None or str(cur) > str(top))
            )
        out.append(
            {
                "job_id": spec.job_id,
                "partition": p,
                "cursor": list(cp.last_cursor) if cp and cp.last_cursor else None,
                "last_boundary": None
                if not boundary
                else [boundary.get("next_updated_at"), boundary.get("max_id_at_boundary")],
                "rows": int(rows_by_part.get(p, 0)),
                "source_rows_beyond_boundary": lag,
                "last_checkpoint": None
                if cp is None
                else f"{cp.run_id} {cp.status} offset={cp.offset} at {cp.timestamp.isoformat()}",
            }
        )
    return out


__all__ = ["job_status", "quote_ident"]


def verify(spec: JobSpec, warehouse: Path | str | Warehouse) -> dict[str, int]:
    """Compare the store with the source by key and version, right now.

    missing: a live source key the store lacks; duplicated: a key held twice; stale: a key
    whose version or tombstone differs; resurrected: a key the source no longer has that the
    store still shows live.
    """
    import pandas as pd

    src = spec.source
    connector = SourceConnector(src)
    try:
        version = connector._q(src.version_column or src.cursor.column)
        deleted = (
            f", {connector._q(src.deleted_column)} IS NOT NULL" if src.deleted_column else ", false"
        )
        with connector.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT {connector._q(src.key)}, {version}{deleted} FROM "
                    f"({src.query}) AS ecm_src"
                ),
                {"last_sync": connector.minimum},
            ).fetchall()
    finally:
        connector.close()
    source = pd.DataFrame.from_records(rows, columns=["k", "v", "d"])
    source["v"] = source["v"].map(connector.encode).astype(str)
    source["d"] = source["d"].astype(bool)
    t = tables_for(spec)
    with open_warehouse(warehouse).connect(read_only=True) as conn:
        store = conn.df(
            f"SELECT {quote_ident(src.key)} AS k, CAST(_version AS VARCHAR) AS v, _deleted AS d "
            f"FROM {t.store}"
        )
    if not len(store):
        store = pd.DataFrame({"k": [], "v": [], "d": []})
    if src.version_column is None and len(store):
        store["v"] = store["v"].astype(str)
    dup = int(store["k"].duplicated().sum())
    store1 = store.drop_duplicates("k", keep="last")
    merged = source.merge(store1, on="k", how="left", suffixes=("_src", "_store"), indicator=True)
    missing = int((merged["_merge"] == "left_only").sum())
    both = merged[merged["_merge"] == "both"]
    stale = int(((both["v_src"] != both["v_store"]) | (both["d_src"] != both["d_store"])).sum())
    gone = store1[~store1["k"].isin(source["k"])]
    resurrected = int((~gone["d"].astype(bool)).sum())
    return {
        "source_keys": len(source),
        "store_keys": int(store1.shape[0]),
        "missing": missing,
        "duplicated": dup,
        "stale": stale,
        "resurrected": resurrected,
        "hard_deleted_tombstones": int(gone["d"].astype(bool).sum()),
    }
