"""The event index: where the keys a run reads are published now, outside its window.

Read over the dataset's own published table (no second copy to keep in step): for each key
of the landing rows a run reads, the partition, source file, ingest date and run of the
published row, for partitions the run does not own. The run locks the answer into its
input boundary; contracts/moves.py decides with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import pandas as pd

from ecm_assets.adapters.backends import as_connection
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.boundaries import PublishedElsewhere
from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.moves import SOURCE_FILE, event_key


def published_elsewhere(
    conn: Any,
    contract: DatasetContract,
    keys: pd.Series,
    owned: Iterable[date],
) -> tuple[PublishedElsewhere, ...]:
    """Published rows of `keys` in partitions other than `owned` (ordered, for the boundary)."""
    key = event_key(contract)
    if key is None or keys.empty:
        return ()
    conn = as_connection(conn)
    if not conn.table_exists(contract.schema, contract.name):
        return ()
    probe = pd.DataFrame({"k": pd.unique(keys.dropna().astype(str).to_numpy())})
    if probe.empty:
        return ()
    pcol = quote_ident(contract.partition_column)
    # The row's file names its ingest date (landing/<source>/ingest_date=YYYY-MM-DD/...);
    # a contract that keeps it as a column says so directly.
    ingest = (
        "t.ingest_date::DATE"
        if "ingest_date" in contract.column_names
        else f"TRY_CAST(regexp_extract(t.{quote_ident(SOURCE_FILE)}, "
        r"'ingest_date=(\d{4}-\d{2}-\d{2})', 1) AS DATE)"
    )
    owned = sorted(set(owned))
    if conn.kind != "duckdb":
        return _published_elsewhere_sql(conn, contract, key, probe["k"].tolist(), owned)
    view = "__ecm_event_index_probe"
    conn.register(view, probe)
    try:
        rows = conn.execute(
            f"SELECT t.{quote_ident(key)}::VARCHAR, t.{pcol}, t.{quote_ident(SOURCE_FILE)}, "
            f"{ingest}, t.run_id FROM {contract.table} t SEMI JOIN {view} p "
            f"ON t.{quote_ident(key)}::VARCHAR = p.k WHERE NOT "
            f"({conn.dialect.owned_filter('t.' + pcol)}) ORDER BY 1, 2, 3",
            conn.dialect.owned_params(owned),
        ).fetchall()
    finally:
        conn.unregister(view)
    return tuple(
        PublishedElsewhere(str(k), p, str(f), i if i is not None else p, str(r))
        for k, p, f, i, r in rows
    )


def _published_elsewhere_sql(
    conn: Any, contract: DatasetContract, key: str, keys: list[str], owned: list[date]
) -> tuple[PublishedElsewhere, ...]:
    """The same probe in portable SQL (PostgreSQL): the keys as one array parameter."""
    pcol = quote_ident(contract.partition_column)
    k = f"CAST(t.{quote_ident(key)} AS VARCHAR)"
    rows = conn.execute(
        f"SELECT {k}, t.{pcol}, t.{quote_ident(SOURCE_FILE)}, t.run_id FROM {contract.table} t "
        f"WHERE {conn.dialect.in_list(k, 'VARCHAR')} AND NOT "
        f"({conn.dialect.owned_filter('t.' + pcol)}) ORDER BY 1, 2, 3",
        [keys, *conn.dialect.owned_params(owned)],
    ).fetchall()
    out = []
    for k_, p, f, r in rows:
        found = _INGEST.search(str(f)) if "ingest_date" not in contract.column_names else None
        ingest = date.fromisoformat(found.group(1)) if found else p
        out.append(PublishedElsewhere(str(k_), p, str(f), ingest, str(r)))
    return tuple(out)


_INGEST = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")
