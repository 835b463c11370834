"""Versioned datasets at the edges (issue 10 items 1 and 5): the same schema evolution rule as
replace mode, the recorded checksum is that of the rows as stored, and the quarantine is
versioned with the data."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.publish import protocol, versions
from ecm_assets.publish.protocol import (
    PublishError,
    PublishRequest,
    SchemaMismatchError,
    business_checksum,
    publish_partitions,
)
from ecm_assets.publish.quarantine import quarantine_rows
from ecm_assets.publish.versions import close_partition, list_versions, rollback, versions_table
from tests._backends import WAREHOUSE_KINDS, fresh_postgres_url
from tests.test_publish.test_protocol import AS_OF, rejects_frame

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)

VERSIONED = DatasetContract(
    name="unit_amounts",
    description="versioned test dataset",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("value", "BIGINT"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
    publish_mode="versioned",
)


def evolved(*columns: Column, code_version: str = "2") -> DatasetContract:
    return replace(VERSIONED, columns=columns, code_version=code_version)


def frame(rows: list[tuple], columns: tuple[str, ...] = ("business_date", "unit_id", "value")):
    return pd.DataFrame([dict(zip(columns, r, strict=True)) for r in rows], columns=list(columns))


def publish(
    conn: duckdb.DuckDBPyConnection,
    data: pd.DataFrame,
    run_id: str,
    *,
    contract: DatasetContract = VERSIONED,
    owned: tuple[date, ...] = (D1,),
    rejects: pd.DataFrame | None = None,
    restatement_reason: str | None = None,
):
    return publish_partitions(
        conn,
        PublishRequest(
            contract=contract,
            owned_partitions=owned,
            run_id=run_id,
            as_of=AS_OF,
            data=data,
            rejects=rejects,
            restatement_reason=restatement_reason,
        ),
    )


@pytest.fixture(params=WAREHOUSE_KINDS)
def conn(request: pytest.FixtureRequest, tmp_path: Path):
    """A raw DuckDB connection, or a connection to a fresh PostgreSQL database."""
    if request.param == "postgresql":
        with fresh_postgres_url() as url, open_warehouse(url).connect() as connection:
            yield connection
        return
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        yield connection
    finally:
        connection.close()


def current_rows(conn: duckdb.DuckDBPyConnection, columns: str = "unit_id, value"):
    return conn.execute(f"SELECT {columns} FROM main.unit_amounts ORDER BY unit_id").fetchall()


# --------------------------------------------------------------------------- item 1


def test_versioned_bigint_to_double_change_is_refused_by_name_not_rounded(conn):
    publish(conn, frame([(D1, "U01", 1)]), "run-1")
    as_double = evolved(*VERSIONED.columns[:2], Column("value", "DOUBLE"))

    with pytest.raises(SchemaMismatchError, match="column 'value' changed type from BIGINT"):
        publish(conn, frame([(D1, "U01", 1.5)]), "run-2", contract=as_double)

    assert current_rows(conn) == [("U01", 1)]
    assert [v.version for v in list_versions(conn, VERSIONED.name, D1)] == [1]


def test_versioned_new_nullable_column_is_added_and_old_versions_read_null(conn):
    publish(conn, frame([(D1, "U01", 1)]), "run-1")
    with_note = evolved(*VERSIONED.columns, Column("note", "VARCHAR"))
    cols = ("business_date", "unit_id", "value", "note")

    publish(conn, frame([(D1, "U01", 2, "fresh")], cols), "run-2", contract=with_note)

    assert current_rows(conn, "unit_id, value, note, version") == [("U01", 2, "fresh", 2)]
    old = conn.execute(
        f"SELECT value, note FROM {versions_table(VERSIONED)} WHERE version = 1"
    ).fetchall()
    assert old == [(1, None)]


def test_versioned_new_not_null_column_is_refused_by_name(conn):
    publish(conn, frame([(D1, "U01", 1)]), "run-1")
    strict = evolved(*VERSIONED.columns, Column("note", "VARCHAR", nullable=False))
    cols = ("business_date", "unit_id", "value", "note")
    with pytest.raises(SchemaMismatchError, match="new column 'note' is NOT NULL"):
        publish(conn, frame([(D1, "U01", 2, "x")], cols), "run-2", contract=strict)


def test_recorded_version_checksum_is_the_checksum_of_the_rows_as_stored(conn):
    publish(conn, frame([(D1, "U01", 1), (D1, "U02", 2)]), "run-1")
    (v1,) = list_versions(conn, VERSIONED.name, D1)
    stored = business_checksum(
        conn, VERSIONED, versions_table(VERSIONED), "WHERE business_date = ? AND version = 1", [D1]
    )
    assert v1.business_checksum == stored


def test_stored_rows_that_differ_from_the_staged_rows_roll_the_publish_back(conn, monkeypatch):
    publish(conn, frame([(D1, "U01", 1)]), "run-1")
    real = versions.publish_versions

    def storing_something_else(conn, contract, staging, *args, **kwargs):
        published = real(conn, contract, staging, *args, **kwargs)
        # What a narrowing cast or a lossy storage layer would do to the new version.
        conn.execute(f"UPDATE {versions_table(contract)} SET value = value + 1 WHERE version = 2")
        return published

    monkeypatch.setattr(protocol, "publish_versions", storing_something_else)
    with pytest.raises(PublishError, match="stored rows of partition 2026-09-01 do not match"):
        publish(conn, frame([(D1, "U01", 5)]), "run-2")

    assert current_rows(conn) == [("U01", 1)]
    assert [v.version for v in list_versions(conn, VERSIONED.name, D1)] == [1]


def test_replace_mode_verifies_the_stored_rows_too(conn, monkeypatch):
    contract = replace(VERSIONED, name="unit_replaced", publish_mode="replace")
    publish(conn, frame([(D1, "U01", 1)]), "run-1", contract=contract)
    real = conn.execute

    class Tampering:
        """A connection whose INSERT into the published table stores a different value."""

        def __getattr__(self, name):
            return getattr(conn, name)

        def execute(self, sql, *args):
            out = real(sql, *args)
            if sql.startswith('INSERT INTO "main"."unit_replaced"'):
                real('UPDATE "main"."unit_replaced" SET value = 99')
            return out

    with pytest.raises(PublishError, match="do not match the staged rows"):
        publish(Tampering(), frame([(D1, "U01", 5)]), "run-2", contract=contract)
    assert conn.execute('SELECT value FROM "main"."unit_replaced"').fetchall() == [(1,)]


# --------------------------------------------------------------------------- item 5


def reasons(rows: list[dict]) -> list[tuple[str, int]]:
    return [(r["run_id"], r["source_line"]) for r in rows]


def test_rerun_of_a_closed_partition_with_identical_rows_keeps_the_certified_quarantine(conn):
    publish(conn, frame([(D1, "U01", 1)]), "run-1", rejects=rejects_frame([(D1, 7, "bad")]))
    close_partition(conn, VERSIONED, D1, actor="alice")

    publish(conn, frame([(D1, "U01", 1)]), "run-2", rejects=rejects_frame([(D1, 9, "other")]))

    assert [v.version for v in list_versions(conn, VERSIONED.name, D1)] == [1]
    assert reasons(quarantine_rows(conn, VERSIONED, D1)) == [("run-1", 7)]
    # The rerun's own judgement is kept with its run, not shown as the partition's.
    assert reasons(quarantine_rows(conn, VERSIONED, D1, run_id="run-2")) == [("run-2", 9)]


def test_after_restatement_and_rollback_the_quarantine_is_the_current_versions(conn):
    publish(conn, frame([(D1, "U01", 1)]), "run-1", rejects=rejects_frame([(D1, 7, "bad")]))
    close_partition(conn, VERSIONED, D1, actor="alice")
    publish(
        conn,
        frame([(D1, "U01", 2)]),
        "run-2",
        rejects=rejects_frame([(D1, 9, "other")]),
        restatement_reason="SOURCE_CORRECTION",
    )
    assert reasons(quarantine_rows(conn, VERSIONED, D1)) == [("run-2", 9)]

    rollback(conn, VERSIONED, D1, 1, actor="bob", reason="wrong source")

    assert reasons(quarantine_rows(conn, VERSIONED, D1)) == [("run-1", 7)]


# --------------------------------------------------------------------------- smaller


def test_parse_reason_refuses_rollback_as_a_restatement_reason(conn):
    with pytest.raises(ValueError, match="ecm rollback"):
        versions.parse_reason("ROLLBACK", "ecm/restatement_reason")
    publish(conn, frame([(D1, "U01", 1)]), "run-1")
    close_partition(conn, VERSIONED, D1, actor="alice")
    with pytest.raises(ValueError, match="'ROLLBACK' is not a reason a run can publish with"):
        publish(conn, frame([(D1, "U01", 2)]), "run-2", restatement_reason="ROLLBACK")
    assert [v.version for v in list_versions(conn, VERSIONED.name, D1)] == [1]
