"""A SQL transform reads its upstream in the warehouse (UpstreamRelation) exactly as it
reads a plain frame; the relation is one snapshot, and the gate's control totals over it
equal the ones over the frame."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ecm_assets.case_sla.priority_mix import PRIORITY_MIX, priority_mix
from ecm_assets.contracts.dataset import PROVENANCE_COLUMNS
from ecm_assets.contracts.registry import contract_for
from ecm_assets.contracts.transform import PartitionWindow, UpstreamRelation, run_sql
from ecm_assets.definitions import DATASETS  # noqa: F401 - registers the contracts
from ecm_assets.orchestration.inputs import run_transform
from ecm_assets.publish.protocol import upstream_relation
from ecm_assets.validation.gate import judge

WINDOW = PartitionWindow((date(2026, 9, 1), date(2026, 9, 2)))


def _events() -> pd.DataFrame:
    rows = []
    for i in range(40):
        day = date(2026, 8, 31 + i % 3) if i % 3 == 0 else date(2026, 9, i % 3)
        rows.append(
            {
                "event_id": f"E{i:04d}",
                "case_id": f"C{i % 7:03d}",
                "event_type": ["opened", "assigned", "resolved"][i % 3],
                "event_ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=i % 24),
                "business_date": pd.Timestamp(day),
                "unit_id": f"U{i % 4:02d}",
                "region": "EAST",
                "priority": f"P{1 + i % 4}",
                "ingest_date": pd.Timestamp(day),
                "source_file": "case_events/ingest_date=2026-09-01/events-001.csv",
                "source_line": i + 2,
                "run_id": f"run-{i % 2}",
                "as_of": pd.Timestamp("2026-09-03", tz="UTC"),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def warehouse(tmp_path: Path):
    """A warehouse whose main.case_events holds published rows of 08-31..09-02."""
    path = tmp_path / "wh.duckdb"
    contract = contract_for("case_events")
    cols = [(c.name, c.sql_type) for c in contract.columns] + list(PROVENANCE_COLUMNS)
    with duckdb.connect(str(path)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"CREATE TABLE main.case_events ({', '.join(f'{n} {t}' for n, t in cols)})")
        frame = _events()
        conn.register("frame", frame)
        conn.execute(
            f"INSERT INTO main.case_events SELECT {', '.join(n for n, _ in cols)} FROM frame"
        )
    return path


def _frame_of_window(first: date, last: date) -> pd.DataFrame:
    frame = _events()
    days = frame["business_date"].dt.date
    return frame[(days >= first) & (days <= last)].drop(columns=["run_id", "as_of"])


def test_sql_transform_gives_the_same_rows_from_a_relation_as_from_a_frame(warehouse) -> None:
    contract = contract_for("case_events")
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("BEGIN TRANSACTION")
        rel = upstream_relation(conn, contract, WINDOW.first, WINDOW.last)
        from_relation = priority_mix(rel, WINDOW)
        # The transform's temporary views are gone: the table name means the table again.
        assert conn.execute("SELECT count(*) FROM case_events").fetchone()[0] == 40
    from_frame = priority_mix(_frame_of_window(WINDOW.first, WINDOW.last), WINDOW)
    assert len(from_frame) > 0
    pd.testing.assert_frame_equal(from_relation, from_frame)


def test_relation_is_one_snapshot_of_the_upstream(warehouse) -> None:
    """Rows published after the snapshot began are not seen by the run that locked it."""
    contract = contract_for("case_events")
    with duckdb.connect(str(warehouse)) as conn, duckdb.connect(str(warehouse)) as other:
        conn.execute("BEGIN TRANSACTION")
        rel = upstream_relation(conn, contract, WINDOW.first, WINDOW.last)
        before = (len(rel), rel.run_ids(), rel.totals(None))
        other.execute(
            "INSERT INTO main.case_events SELECT * REPLACE ('E9999' AS event_id, "
            "'run-late' AS run_id) FROM main.case_events LIMIT 1 OFFSET 1"
        )
        assert other.execute("SELECT count(*) FROM main.case_events").fetchone()[0] == 41
        fresh = upstream_relation(conn, contract, WINDOW.first, WINDOW.last)
        assert (len(fresh), fresh.run_ids(), fresh.totals(None)) == before
        assert len(rel.df()) == before[0]
        assert "run-late" not in fresh.run_ids()


def test_relation_counts_and_run_ids_per_partition(warehouse) -> None:
    contract = contract_for("case_events")
    frame = _events()
    days = frame["business_date"].dt.date
    with duckdb.connect(str(warehouse)) as conn:
        rel = upstream_relation(conn, contract, date(2026, 8, 31), date(2026, 9, 2))
        for first, last in [(date(2026, 8, 31), date(2026, 9, 2)), (date(2026, 9, 2),) * 2]:
            mask = (days >= first) & (days <= last)
            assert rel.rows(first, last) == int(mask.sum())
            assert rel.run_ids(first, last) == tuple(sorted(frame.loc[mask, "run_id"].unique()))
        assert rel.totals("source_line", (("event_type", "opened"),)) == {
            d: float(v)
            for d, v in frame[frame["event_type"] == "opened"]
            .groupby(days)["source_line"]
            .sum()
            .items()
        }


def test_gate_control_totals_over_a_relation_equal_those_over_the_frame(warehouse) -> None:
    contract = contract_for("case_events")
    frame = _frame_of_window(WINDOW.first, WINDOW.last)
    good = PRIORITY_MIX.transform(frame, WINDOW)
    # One output row dropped: the events_counted control total must fail, the same way.
    broken = good.iloc[1:].reset_index(drop=True)
    decisions = []
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("BEGIN TRANSACTION")
        rel = upstream_relation(conn, contract, WINDOW.first, WINDOW.last)
        for data in (good, broken):
            fixed = dataclasses.replace(PRIORITY_MIX, transform=lambda window, d=data: d)
            result = run_transform(fixed, {"window": WINDOW})
            by_frame = judge(PRIORITY_MIX, WINDOW, result, {"case_events": frame})
            by_relation = judge(PRIORITY_MIX, WINDOW, result, {"case_events": rel})
            assert by_relation.reconciliation == by_frame.reconciliation
            assert by_relation.decision == by_frame.decision
            decisions.append(by_relation.decision)
    assert decisions[0] != decisions[1]


def test_a_never_published_upstream_is_an_empty_typed_relation(tmp_path) -> None:
    contract = contract_for("case_events")
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as conn:
        rel = upstream_relation(conn, contract, WINDOW.first, WINDOW.last)
        assert isinstance(rel, UpstreamRelation)
        assert len(rel) == 0 and rel.run_ids() == ()
        out = run_sql("SELECT count(*) AS n, max(event_ts) AS t FROM case_events", case_events=rel)
    assert out["n"].tolist() == [0]
