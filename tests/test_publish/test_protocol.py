"""The staged, transactional publish protocol, called directly against each backend: a DuckDB
file and a fresh PostgreSQL database (tests/_backends.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.contracts.dataset import Column, DatasetContract
from ecm_assets.publish.failpoints import ENV_VAR, InjectedFault
from ecm_assets.publish.modes import evaluate_without_publishing
from ecm_assets.publish.protocol import (
    QUARANTINE_TABLE,
    REJECT_COLUMNS,
    STAGING_SCHEMA,
    OutsideBoundaryError,
    PublishRequest,
    PublishResult,
    SchemaMismatchError,
    _normalise_type,
    business_checksum,
    publish_partitions,
    upstream_relation,
)
from tests._backends import WAREHOUSE_KINDS, fresh_postgres_url

D1, D2, D3 = date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)
AS_OF = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)

CONTRACT = DatasetContract(
    name="unit_values",
    description="test dataset",
    columns=(
        Column("business_date", "DATE", nullable=False),
        Column("unit_id", "VARCHAR", nullable=False),
        Column("value", "BIGINT"),
    ),
    partition_column="business_date",
    grain="daily",
    business_key=("business_date", "unit_id"),
)

ROWS = [
    (D1, "U01", 10),
    (D1, "U02", 11),
    (D2, "U01", 20),
    (D2, "U02", None),
    (D3, "U01", 30),
]


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "business_date": [r[0] for r in rows],
            "unit_id": [r[1] for r in rows],
            "value": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )


def rows_of(day: date, values: list[tuple[str, int | None]]) -> list[tuple]:
    return [(day, unit, v) for unit, v in values]


def publish(
    conn: duckdb.DuckDBPyConnection,
    data: pd.DataFrame,
    owned: tuple[date, ...],
    run_id: str,
    *,
    contract: DatasetContract = CONTRACT,
    rejects: pd.DataFrame | None = None,
) -> PublishResult:
    return publish_partitions(
        conn,
        PublishRequest(
            contract=contract,
            owned_partitions=owned,
            run_id=run_id,
            as_of=AS_OF,
            data=data,
            rejects=rejects,
        ),
    )


def published(
    conn: duckdb.DuckDBPyConnection, columns: str = "business_date, unit_id, value"
) -> list[tuple]:
    return conn.execute(
        f'SELECT {columns} FROM "main"."unit_values" ORDER BY business_date, unit_id'
    ).fetchall()


def snapshot(conn: duckdb.DuckDBPyConnection, day: date) -> tuple[list[tuple], str]:
    """Rows with provenance and the business checksum of one published partition."""
    rows = conn.execute(
        'SELECT business_date, unit_id, value, run_id, as_of FROM "main"."unit_values" '
        "WHERE business_date = ? ORDER BY unit_id",
        [day],
    ).fetchall()
    checksum = business_checksum(
        conn, CONTRACT, '"main"."unit_values"', "WHERE business_date = ?", [day]
    )
    return rows, checksum


def staging_tables(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
            [STAGING_SCHEMA],
        ).fetchall()
    ]


def rejects_frame(rows: list[tuple[date, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "partition_date": day,
                "source_file": "landing/f.csv",
                "source_line": line,
                "reason": reason,
                "column_name": "value",
                "failure_case": "x",
                "original_row": f"line {line}",
            }
            for day, line, reason in rows
        ],
        columns=REJECT_COLUMNS,
    )


def quarantine(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(
        # The quarantine keeps partition keys; a daily partition's key is its date.
        f"SELECT asset, partition_date::DATE, run_id, source_line, reason FROM {QUARANTINE_TABLE} "
        "ORDER BY partition_date, source_line"
    ).fetchall()


@pytest.fixture(params=WAREHOUSE_KINDS)
def conn(request: pytest.FixtureRequest, tmp_path: Path):
    """A raw DuckDB connection (as unported callers pass one), or a PostgreSQL connection."""
    if request.param == "postgresql":
        with fresh_postgres_url() as url, open_warehouse(url).connect() as connection:
            yield connection
        return
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def seeded(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Partitions D1..D3 published by run-1."""
    publish(conn, frame(ROWS), (D1, D2, D3), "run-1")
    return conn


def test_first_publish_creates_table_with_provenance_and_exact_values(conn):
    result = publish(conn, frame(ROWS), (D1, D2, D3), "run-1")

    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = 'unit_values' ORDER BY ordinal_position"
    ).fetchall()
    expected = [
        ("business_date", "DATE"),
        ("unit_id", "VARCHAR"),
        ("value", "BIGINT"),
        ("run_id", "VARCHAR"),
        ("as_of", "TIMESTAMP WITH TIME ZONE"),
    ]
    if getattr(conn, "kind", "duckdb") == "postgresql":
        expected = [(n, t.lower().replace("varchar", "text")) for n, t in expected]
    assert columns == expected
    assert published(conn) == ROWS
    assert conn.execute('SELECT DISTINCT run_id, as_of FROM "main"."unit_values"').fetchall() == [
        ("run-1", AS_OF)
    ]
    assert result.rows == 5
    assert result.rows_by_partition == {D1.isoformat(): 2, D2.isoformat(): 2, D3.isoformat(): 1}
    assert result.replaced_rows == 0
    assert ":n5-" in result.business_checksum
    assert staging_tables(conn) == []


@pytest.mark.parametrize(
    "point", ["publish.after_delete", "publish.after_insert", "publish.before_commit"]
)
def test_fault_inside_transaction_keeps_published_partitions(seeded, monkeypatch, point):
    conn = seeded
    before = {day: snapshot(conn, day) for day in (D1, D2, D3)}
    monkeypatch.setenv(ENV_VAR, point)

    with pytest.raises(InjectedFault, match=point):
        publish(conn, frame(rows_of(D2, [("U01", 99), ("U09", 98)])), (D2,), "run-2")

    assert {day: snapshot(conn, day) for day in (D1, D2, D3)} == before
    assert before[D2][0][0][3] == "run-1"
    assert staging_tables(conn) == []


def test_crash_after_staging_leaves_debris_that_a_rerun_drops(tmp_path, conn):
    if getattr(conn, "kind", "duckdb") != "duckdb":
        pytest.skip("DuckDB file reopened here; PostgreSQL: tests/test_adapters/test_backends.py")
    publish(conn, frame(ROWS), (D1, D2, D3), "run-1")
    conn.close()
    database = tmp_path / "w.duckdb"
    script = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, date, datetime
        import duckdb
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_protocol import CONTRACT, frame, D2
        from ecm_assets.publish.protocol import PublishRequest, publish_partitions
        conn = duckdb.connect({str(database)!r})
        publish_partitions(conn, PublishRequest(
            CONTRACT, (D2,), "run-crashed", datetime.now(UTC),
            frame([(D2, "U01", 77)]), durable_staging=True,
        ))
        """
    )
    env = {**os.environ, ENV_VAR: "publish.after_staging=kill"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -9, stderr.decode()

    with duckdb.connect(str(database)) as reopened:
        assert staging_tables(reopened) == ["unit_values__runcrashed"]
        assert published(reopened) == ROWS

        result = publish(reopened, frame(rows_of(D2, [("U01", 21)])), (D2,), "run-3")

        # The crashed run's manifest is settled first: its staging is dropped as evidence of
        # a failed run, so no anonymous debris is left for the generic sweep.
        assert [(r.run_id, r.decision) for r in result.recoveries] == [
            ("run-crashed", "FAILED_CLEANED")
        ]
        assert result.debris_dropped == ()
        assert staging_tables(reopened) == []
        assert published(reopened) == [ROWS[0], ROWS[1], (D2, "U01", 21), ROWS[4]]


def test_fault_after_staging_then_rerun_succeeds_without_debris(seeded, monkeypatch):
    conn = seeded
    monkeypatch.setenv(ENV_VAR, "publish.after_staging")
    with pytest.raises(InjectedFault):
        publish(conn, frame(rows_of(D2, [("U01", 99)])), (D2,), "run-2")
    assert published(conn) == ROWS

    monkeypatch.delenv(ENV_VAR)
    result = publish(conn, frame(rows_of(D2, [("U01", 99)])), (D2,), "run-3")

    assert published(conn) == [ROWS[0], ROWS[1], (D2, "U01", 99), ROWS[4]]
    assert staging_tables(conn) == []
    assert set(result.debris_dropped) <= {"unit_values__run2"}


def test_rerun_of_same_frame_is_idempotent(seeded):
    conn = seeded
    first = snapshot(conn, D1)
    again = publish(conn, frame(ROWS), (D1, D2, D3), "run-2")
    rerun = snapshot(conn, D1)

    assert published(conn) == ROWS
    assert conn.execute('SELECT count(*) FROM "main"."unit_values"').fetchone() == (5,)
    assert again.replaced_rows == 5
    assert rerun[1] == first[1]
    assert again.business_checksum == business_checksum(conn, CONTRACT, '"main"."unit_values"')
    assert {r[3] for r in rerun[0]} == {"run-2"}


def test_reordered_columns_are_inserted_by_name(conn):
    data = frame(ROWS)[["value", "unit_id", "business_date"]]

    publish(conn, data, (D1, D2, D3), "run-1")

    assert published(conn) == ROWS


@pytest.mark.parametrize(
    ("mutate", "column", "kind"),
    [
        (lambda f: f.drop(columns=["value"]), "value", "missing"),
        (lambda f: f.assign(extra_col=1), "extra_col", "unexpected"),
    ],
    ids=["missing", "extra"],
)
def test_missing_or_extra_column_is_refused(seeded, mutate, column, kind):
    conn = seeded
    with pytest.raises(SchemaMismatchError, match=rf"{kind} column\(s\) \['{column}'\]"):
        publish(conn, mutate(frame(rows_of(D2, [("U01", 1)]))), (D2,), "run-2")
    assert published(conn) == ROWS
    assert staging_tables(conn) == []


def test_unconvertible_value_names_column_and_row(seeded):
    conn = seeded
    data = pd.DataFrame(
        {
            "business_date": [D2, D2, D2],
            "unit_id": ["U01", "U02", "U03"],
            "value": ["1", "2", "abc"],
        }
    )
    with pytest.raises(SchemaMismatchError) as err:
        publish(conn, data, (D2,), "run-2")
    assert "column 'value' row 2" in str(err.value)
    assert "'abc'" in str(err.value)
    assert published(conn) == ROWS
    assert staging_tables(conn) == []


def test_null_in_not_null_column_names_column(seeded):
    conn = seeded
    data = pd.DataFrame({"business_date": [D2, D2], "unit_id": ["U01", None], "value": [1, 2]})
    with pytest.raises(SchemaMismatchError) as err:
        publish(conn, data, (D2,), "run-2")
    assert "column 'unit_id' row 1: NULL in a NOT NULL column" in str(err.value)
    assert published(conn) == ROWS


def test_row_outside_owned_partitions_is_refused(seeded):
    conn = seeded
    before = {day: snapshot(conn, day) for day in (D1, D2, D3)}
    data = frame([(D2, "U01", 1), (D3, "U01", 2)])

    with pytest.raises(OutsideBoundaryError, match="business_date=2026-09-03"):
        publish(conn, data, (D2,), "run-2")

    assert {day: snapshot(conn, day) for day in (D1, D2, D3)} == before
    assert staging_tables(conn) == []


def test_empty_frame_empties_the_owned_partition(seeded):
    conn = seeded
    result = publish(conn, frame([]), (D2,), "run-2")

    assert result.rows == 0
    assert result.replaced_rows == 2
    assert published(conn) == [ROWS[0], ROWS[1], ROWS[4]]


def test_range_publish_replaces_exactly_the_owned_dates(seeded):
    conn = seeded
    d4 = date(2026, 9, 4)
    data = frame([(D2, "U05", 5), (D3, "U06", 6), (d4, "U07", 7)])

    result = publish(conn, data, (D2, D3, d4), "run-2")

    assert result.replaced_rows == 3
    assert published(conn) == [ROWS[0], ROWS[1], *data.itertuples(index=False, name=None)]
    assert {r[0] for r in published(conn, "business_date, run_id") if r[1] == "run-1"} == {D1}


def test_new_nullable_column_is_added_and_old_rows_get_null(seeded):
    conn = seeded
    evolved = DatasetContract(
        name=CONTRACT.name,
        description=CONTRACT.description,
        columns=(*CONTRACT.columns, Column("note", "VARCHAR")),
        partition_column=CONTRACT.partition_column,
        grain=CONTRACT.grain,
        business_key=CONTRACT.business_key,
        code_version="2",
    )
    data = frame(rows_of(D2, [("U01", 5)])).assign(note="fresh")

    publish(conn, data, (D2,), "run-2", contract=evolved)

    assert published(conn, "business_date, unit_id, value, note") == [
        (*ROWS[0], None),
        (*ROWS[1], None),
        (D2, "U01", 5, "fresh"),
        (*ROWS[4], None),
    ]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            (
                Column("business_date", "DATE", nullable=False),
                Column("unit_id", "VARCHAR", nullable=False),
                Column("value", "VARCHAR"),
            ),
            "column 'value' changed type from BIGINT to VARCHAR",
        ),
        (
            (
                Column("business_date", "DATE", nullable=False),
                Column("unit_id", "VARCHAR", nullable=False),
            ),
            "column 'value' (BIGINT) is published but no longer in the contract",
        ),
    ],
    ids=["type-change", "dropped-column"],
)
def test_incompatible_schema_change_is_refused(seeded, columns, message):
    conn = seeded
    before = {day: snapshot(conn, day) for day in (D1, D2, D3)}
    changed = DatasetContract(
        name=CONTRACT.name,
        description=CONTRACT.description,
        columns=columns,
        partition_column="business_date",
        grain="daily",
        business_key=("business_date", "unit_id"),
        code_version="2",
    )
    data = pd.DataFrame(
        {
            c.name: {"business_date": [D2], "unit_id": ["U01"], "value": ["7"]}[c.name]
            for c in columns
        }
    )

    with pytest.raises(SchemaMismatchError) as err:
        publish(conn, data, (D2,), "run-2", contract=changed)

    assert message in str(err.value)
    assert {day: snapshot(conn, day) for day in (D1, D2, D3)} == before
    assert staging_tables(conn) == []


def test_rejects_are_replaced_per_owned_partition(conn):
    publish(
        conn,
        frame(ROWS),
        (D1, D2, D3),
        "run-1",
        rejects=rejects_frame([(D1, 3, "bad"), (D2, 4, "bad"), (D2, 5, "dup")]),
    )
    assert quarantine(conn) == [
        ("unit_values", D1, "run-1", 3, "bad"),
        ("unit_values", D2, "run-1", 4, "bad"),
        ("unit_values", D2, "run-1", 5, "dup"),
    ]

    result = publish(
        conn,
        frame(rows_of(D2, [("U01", 1)])),
        (D2,),
        "run-2",
        rejects=rejects_frame([(D2, 9, "late")]),
    )

    assert result.quarantined_rows == 1
    assert quarantine(conn) == [
        ("unit_values", D1, "run-1", 3, "bad"),
        ("unit_values", D2, "run-2", 9, "late"),
    ]


def test_fault_before_commit_keeps_old_quarantine_rows(conn, monkeypatch):
    publish(conn, frame(ROWS), (D1, D2, D3), "run-1", rejects=rejects_frame([(D2, 4, "bad")]))
    before = quarantine(conn)
    monkeypatch.setenv(ENV_VAR, "publish.before_commit")

    with pytest.raises(InjectedFault):
        publish(
            conn,
            frame(rows_of(D2, [("U01", 1)])),
            (D2,),
            "run-2",
            rejects=rejects_frame([(D2, 9, "late")]),
        )

    assert quarantine(conn) == before == [("unit_values", D2, "run-1", 4, "bad")]
    assert published(conn) == ROWS


def test_rejects_for_a_partition_not_owned_are_refused(seeded):
    conn = seeded
    with pytest.raises(OutsideBoundaryError, match="2026-09-03"):
        publish(
            conn,
            frame(rows_of(D2, [("U01", 1)])),
            (D2,),
            "run-2",
            rejects=rejects_frame([(D3, 1, "bad")]),
        )
    assert published(conn) == ROWS


def test_added_column_is_rolled_back_with_a_failed_publish(seeded, monkeypatch):
    conn = seeded
    evolved = DatasetContract(
        name=CONTRACT.name,
        description=CONTRACT.description,
        columns=(*CONTRACT.columns, Column("note", "VARCHAR")),
        partition_column=CONTRACT.partition_column,
        grain=CONTRACT.grain,
        business_key=CONTRACT.business_key,
        code_version="2",
    )
    monkeypatch.setenv(ENV_VAR, "publish.before_commit")

    with pytest.raises(InjectedFault):
        publish(
            conn,
            frame(rows_of(D2, [("U01", 5)])).assign(note="x"),
            (D2,),
            "run-2",
            contract=evolved,
        )

    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = 'unit_values'"
    ).fetchall()
    assert ("note",) not in columns
    assert published(conn) == ROWS


def test_fractional_value_in_bigint_column_is_refused(conn):
    data = pd.DataFrame({"business_date": [D1], "unit_id": ["U01"], "value": [1.5]})

    with pytest.raises(SchemaMismatchError, match="column 'value'"):
        publish(conn, data, (D1,), "run-1")


def test_timestamp_with_a_time_in_a_date_column_is_refused(conn):
    data = pd.DataFrame(
        {
            "business_date": [pd.Timestamp("2026-09-01 23:30")],
            "unit_id": ["U01"],
            "value": [1],
        }
    )

    with pytest.raises(SchemaMismatchError, match=r"column 'business_date'.*would change"):
        publish(conn, data, (D1,), "run-1")


def test_a_publish_without_rejects_clears_the_partitions_old_quarantine(conn):
    rejects = pd.DataFrame(
        {
            "partition_date": [pd.Timestamp(D1)],
            "source_file": ["f.csv"],
            "source_line": [2],
            "reason": ["missing_case_id"],
            "column_name": ["case_id"],
            "failure_case": [None],
            "original_row": ["{}"],
        }
    )
    data = pd.DataFrame({"business_date": [pd.Timestamp(D1)], "unit_id": ["U01"], "value": [1]})
    publish(conn, data, (D1,), "run-1", rejects=rejects)
    assert conn.execute('SELECT count(*) FROM "ecm_quarantine"."rejected_rows"').fetchone() == (1,)

    publish(conn, data, (D1,), "run-2")

    assert conn.execute('SELECT count(*) FROM "ecm_quarantine"."rejected_rows"').fetchone() == (0,)


@pytest.mark.parametrize(
    ("sql_type", "values"),
    [
        ("DECIMAL(12,2)", ["10.25", "-3.50"]),
        ("NUMERIC(9)", ["7", "8"]),
        ("HUGEINT", [2**70, -(2**70)]),
        ("UBIGINT", [2**63 + 5, 1]),
        ("VARCHAR(8)", ["abc", "defgh"]),
    ],
)
def test_a_parameterised_or_mapped_type_republishes_unchanged(conn, sql_type, values):
    """The schema check reads the published column back in the warehouse's own spelling
    (PostgreSQL: `numeric` with a precision, HUGEINT stored as NUMERIC(38)); a second publish
    of the same contract is not a type change."""
    contract = DatasetContract(
        name="typed_values",
        description="test dataset",
        columns=(
            Column("business_date", "DATE", nullable=False),
            Column("unit_id", "VARCHAR", nullable=False),
            Column("amount", sql_type),
        ),
        partition_column="business_date",
        grain="daily",
        business_key=("business_date", "unit_id"),
    )
    from decimal import Decimal

    cast = Decimal if "DECIMAL" in sql_type or "NUMERIC" in sql_type else (lambda v: v)
    data = pd.DataFrame(
        {
            "business_date": [D1, D1],
            "unit_id": ["U01", "U02"],
            "amount": pd.Series([cast(v) for v in values], dtype=object),
        }
    )
    publish(conn, data, (D1,), "run-1", contract=contract)
    # compare_only reads the published rows back the same way: nothing changed.
    compared = evaluate_without_publishing(
        conn,
        PublishRequest(
            contract=contract,
            owned_partitions=(D1,),
            run_id="run-compare",
            as_of=AS_OF,
            data=data,
            mode="compare_only",
        ),
    )
    [diff] = compared.diffs
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (0, 0, 0, 2)
    assert diff.published_checksum == diff.staged_checksum
    # A SQL transform reading it as its upstream sees the contract type on every backend.
    upstream = upstream_relation(conn, contract, D1, D1)
    described = dict(
        (name, dtype)
        for name, dtype, *_ in upstream.conn.execute(f"DESCRIBE {upstream.select()}").fetchall()
    )
    assert _normalise_type(described["amount"]) == _normalise_type(sql_type)
    publish(conn, data, (D1,), "run-2", contract=contract)  # raised SchemaMismatchError
    got = conn.execute('SELECT amount FROM "main"."typed_values" ORDER BY unit_id').fetchall()
    assert [str(v) for (v,) in got] == [str(cast(v)) for v in values]
