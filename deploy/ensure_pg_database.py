"""Create the PostgreSQL database a Dagster instance lives in, if it is missing.

`make dev-postgres` runs this before `dagster dev`; dagster-postgres creates its own tables,
but not the database. Connection settings are the instance's: DAGSTER_PG_HOST, DAGSTER_PG_PORT,
DAGSTER_PG_USER, DAGSTER_PG_PASSWORD, DAGSTER_PG_DB.
"""

from __future__ import annotations

import os
import sys

import psycopg2
from psycopg2 import sql


def main() -> int:
    name = os.environ.get("DAGSTER_PG_DB", "ecm_dagster")
    try:
        conn = psycopg2.connect(
            host=os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
            port=int(os.environ.get("DAGSTER_PG_PORT", "5432")),
            user=os.environ.get("DAGSTER_PG_USER", "postgres"),
            password=os.environ.get("DAGSTER_PG_PASSWORD", ""),
            dbname="postgres",
            connect_timeout=5,
        )
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: cannot reach PostgreSQL for the Dagster instance: {first}", file=sys.stderr)
        return 2
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created PostgreSQL database {name!r} for the Dagster instance")
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
