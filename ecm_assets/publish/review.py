"""Held output: what a MANUAL_REVIEW verdict keeps, byte for byte, until a human decides.

The staged rows and their quarantined rows are copied into schema `ecm_review` in the same
transaction that moves the manifest to HELD, so a held run always has its rows and the rows
always have a HELD manifest. Approval publishes exactly these rows (no recompute); the held
tables are dropped in the publishing transaction. Rejection drops them and ends the run.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from ecm_assets.adapters.backends import as_connection
from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.dataset import DatasetContract, partition_key
from ecm_assets.contracts.transform import REJECT_COLUMNS
from ecm_assets.manifest.ledger import transition
from ecm_assets.manifest.states import RunStatus

if TYPE_CHECKING:
    from ecm_assets.publish.protocol import PublishRequest

REVIEW_SCHEMA = "ecm_review"


def held_names(asset: str, run_id: str) -> tuple[str, str]:
    token = re.sub(r"[^0-9a-zA-Z]", "", run_id)[:32]
    return f"{asset}__{token}", f"{asset}__{token}__rejects"


def held_relations(asset: str, run_id: str) -> tuple[str, str]:
    data, rejects = held_names(asset, run_id)
    schema = quote_ident(REVIEW_SCHEMA)
    return f"{schema}.{quote_ident(data)}", f"{schema}.{quote_ident(rejects)}"


def hold_staged(
    conn: Any,
    request: PublishRequest,
    staging: str,
    rejects: pd.DataFrame | None,
    blocked_rejects: pd.DataFrame | None,
    per_partition: dict[date, tuple[int, str]],
    checksum: str,
) -> str:
    """Keep the validated staged rows for review and move the manifest to HELD, atomically."""
    from ecm_assets.publish.protocol import append_rows, keep_blocked_rows  # cyclic at import

    contract: DatasetContract = request.contract
    data_rel, rejects_rel = held_relations(contract.name, request.run_id)
    conn = as_connection(conn)
    conn.begin()
    try:
        with conn.ddl_lock():  # inside the transaction: until it ends
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(REVIEW_SCHEMA)}")
        conn.execute(f"DROP TABLE IF EXISTS {data_rel}")
        conn.execute(f"DROP TABLE IF EXISTS {rejects_rel}")
        conn.execute(f"CREATE TABLE {data_rel} AS SELECT * FROM {staging}")
        conn.execute(
            f'CREATE TABLE {rejects_rel} AS SELECT * FROM "ecm_quarantine"."rejected_rows" '
            "WHERE false"
        )
        if rejects is not None:
            append_rows(conn, rejects_rel, rejects)
        keep_blocked_rows(conn, contract.name, request.run_id, blocked_rejects)
        outputs = {
            "held_table": f"{REVIEW_SCHEMA}.{held_names(contract.name, request.run_id)[0]}",
            "rows": sum(n for n, _ in per_partition.values()),
            "rows_by_partition": {
                partition_key(d): n for d, (n, _) in sorted(per_partition.items())
            },
            "business_checksum": checksum,
            "quarantined_rows": 0 if rejects is None else len(rejects),
            "blocked_partitions": {partition_key(d): w for d, w in sorted(request.blocked.items())},
            "publishable_partitions": [partition_key(d) for d in sorted(request.owned_partitions)],
        }
        reasons = "; ".join(
            f["message"]
            for f in (request.quality or {}).get("failures", [])
            if f.get("severity") == "MANUAL_REVIEW"
        )
        transition(
            conn,
            request.run_id,
            contract.name,
            RunStatus.HELD,
            detail=f"held for manual review: {reasons}"[:2000],
            outputs=outputs,
            quality=request.quality,
            reconciliation=request.reconciliation,
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outputs["held_table"]


def load_held(
    conn: Any, contract: DatasetContract, run_id: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The held business rows (without provenance) and the held quarantined rows."""
    data_rel, rejects_rel = held_relations(contract.name, run_id)
    cols = ", ".join(quote_ident(c) for c in contract.column_names)
    conn = as_connection(conn)
    data = conn.df(f"SELECT {cols} FROM {data_rel}")
    kept = ", ".join(quote_ident(c) for c in REJECT_COLUMNS)
    rejects = conn.df(f"SELECT {kept} FROM {rejects_rel}")
    return data, rejects


def drop_held(conn: Any, contract: DatasetContract, run_id: str) -> None:
    for rel in held_relations(contract.name, run_id):
        conn.execute(f"DROP TABLE IF EXISTS {rel}")
