"""The event index: where the keys a run reads are published now, outside its window.

Read over the dataset's own published table (no second copy to keep in step): for each key
of the landing rows a run reads, the partition, source file, ingest date and run of the
published row, for partitions the run does not own. The run locks the answer into its
input boundary; contracts/moves.py decides with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import duckdb
import pandas as pd

from ecm_assets.adapters.warehouse import owned_filter, owned_params, quote_ident
from ecm_assets.contracts.boundaries import PublishedElsewhere
from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.moves import SOURCE_FILE, event_key


def published_elsewhere(
    conn: duckdb.DuckDBPyConnection,
    contract: DatasetContract,
    keys: pd.Series,
    owned: Iterable[date],
) -> tuple[PublishedElsewhere, ...]:
    """Published rows of `keys` in partitions other than `owned` (ordered, for the boundary)."""
    key = event_key(contract)
    if key is None or keys.empty:
        return ()
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [contract.schema, contract.name],
    ).fetchone()[0]
    if not exists:
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
    view = "__ecm_event_index_probe"
    conn.register(view, probe)
    try:
        rows = conn.execute(
            f"SELECT t.{quote_ident(key)}::VARCHAR, t.{pcol}, t.{quote_ident(SOURCE_FILE)}, "
            f"{ingest}, t.run_id FROM {contract.table} t SEMI JOIN {view} p "
            f"ON t.{quote_ident(key)}::VARCHAR = p.k WHERE NOT ({owned_filter('t.' + pcol)}) "
            "ORDER BY 1, 2, 3",
            owned_params(owned),
        ).fetchall()
    finally:
        conn.unregister(view)
    return tuple(
        PublishedElsewhere(str(k), p, str(f), i if i is not None else p, str(r))
        for k, p, f, i, r in rows
    )
