"""Where a run's output waits before it is judged and published: one table per run."""

from __future__ import annotations

import re
from typing import Any

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.dataset import DatasetContract

STAGING_SCHEMA = "ecm_staging"


def staging_table_name(contract: DatasetContract, run_id: str) -> str:
    token = re.sub(r"[^0-9a-zA-Z]", "", run_id)[:32]
    return f"{contract.name}__{token}"


def staging_relation(contract: DatasetContract, run_id: str) -> str:
    return f"{quote_ident(STAGING_SCHEMA)}.{quote_ident(staging_table_name(contract, run_id))}"


def staging_tables(conn: Any, contract: DatasetContract) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
        "AND starts_with(table_name, ?) ORDER BY 1",
        [STAGING_SCHEMA, f"{contract.name}__"],
    ).fetchall()
    return [r[0] for r in rows]


def drop_staging_table(conn: Any, name: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {quote_ident(STAGING_SCHEMA)}.{quote_ident(name)}")
