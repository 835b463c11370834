"""The run state machine, alone and as the ledger enforces it on a real DuckDB file."""

from __future__ import annotations

import itertools
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from ecm_assets.manifest.ledger import (
    Manifest,
    ManifestNotFoundError,
    load_manifest,
    plan,
    status_history,
    transition,
)
from ecm_assets.manifest.states import (
    IN_FLIGHT,
    LEGAL_TRANSITIONS,
    TERMINAL,
    IllegalTransitionError,
    RunStatus,
    check_transition,
)

S = RunStatus
ALL_PAIRS = list(itertools.product(RunStatus, RunStatus))
LEGAL_PAIRS = {(a, b) for a, targets in LEGAL_TRANSITIONS.items() for b in targets}
#: The forward chain a successful run walks; a status never moves backwards along it.
CHAIN = [S.PLANNED, S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.COMMITTING, S.PUBLISHED]
#: A legal ledger path from PLANNED to each status.
PATH_TO: dict[RunStatus, list[RunStatus]] = {
    S.PLANNED: [],
    S.INPUT_LOCKED: [S.INPUT_LOCKED],
    S.RUNNING: [S.INPUT_LOCKED, S.RUNNING],
    S.VALIDATING: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING],
    S.COMMITTING: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.COMMITTING],
    S.PUBLISHED: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.COMMITTING, S.PUBLISHED],
    S.FAILED: [S.FAILED],
    S.UNKNOWN: [S.INPUT_LOCKED, S.RUNNING, S.UNKNOWN],
    S.HELD: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.HELD],
    S.REJECTED: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.HELD, S.REJECTED],
    S.VALIDATED: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.VALIDATED],
    S.SHADOWED: [S.INPUT_LOCKED, S.RUNNING, S.VALIDATING, S.SHADOWED],
}
RUN, ASSET = "run-1", "unit_values"


def _pair_id(pair: tuple[RunStatus, RunStatus]) -> str:
    return f"{pair[0]}->{pair[1]}"


# -- the pure state machine ----------------------------------------------------------------


def test_every_status_has_a_transition_entry() -> None:
    assert set(LEGAL_TRANSITIONS) == set(RunStatus)
    for targets in LEGAL_TRANSITIONS.values():
        assert targets <= set(RunStatus)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_check_transition_accepts_exactly_the_legal_pairs(pair) -> None:
    current, target = pair
    if pair in LEGAL_PAIRS:
        assert check_transition(current, target) is target
        # Plain strings (as read back from the ledger) are accepted too.
        assert check_transition(str(current), str(target)) is target
        return
    with pytest.raises(IllegalTransitionError) as raised:
        check_transition(current, target)
    assert f"from {current} to {target}" in str(raised.value)


def test_illegal_transition_error_lists_what_is_allowed() -> None:
    with pytest.raises(IllegalTransitionError, match="may move to FAILED, RUNNING"):
        check_transition(S.INPUT_LOCKED, S.PUBLISHED)


def test_unknown_status_name_is_refused() -> None:
    with pytest.raises(ValueError):
        check_transition("PLANNED", "DONE")


def test_forward_chain_is_legal_step_by_step() -> None:
    for current, target in itertools.pairwise(CHAIN):
        assert (current, target) in LEGAL_PAIRS


def test_no_status_moves_backwards_or_skips_along_the_chain() -> None:
    for current, target in itertools.product(CHAIN, CHAIN):
        legal = (current, target) in LEGAL_PAIRS
        assert legal == (CHAIN.index(target) == CHAIN.index(current) + 1), (current, target)


def test_manual_review_holds_then_resumes_or_ends() -> None:
    # The gate holds at VALIDATING; approval resumes the normal path, rejection ends it.
    assert LEGAL_TRANSITIONS[S.VALIDATING] >= {S.HELD}
    assert LEGAL_TRANSITIONS[S.HELD] == {S.RUNNING, S.REJECTED, S.FAILED}
    assert S.HELD not in IN_FLIGHT and S.HELD not in TERMINAL
    assert LEGAL_TRANSITIONS[S.REJECTED] == frozenset()


def test_no_status_can_return_to_itself() -> None:
    for status in RunStatus:
        assert (status, status) not in LEGAL_PAIRS


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_states_have_no_exits(status) -> None:
    assert {S.PUBLISHED, S.FAILED, S.REJECTED, S.VALIDATED, S.SHADOWED} == TERMINAL
    assert LEGAL_TRANSITIONS[status] == frozenset()
    for target in RunStatus:
        with pytest.raises(IllegalTransitionError, match=r"nothing \(terminal\)"):
            check_transition(status, target)


def test_every_live_state_may_fail_and_unknown_only_resolves() -> None:
    for status in set(RunStatus) - TERMINAL:
        assert S.FAILED in LEGAL_TRANSITIONS[status], status
    # Recovery resolves an unknown commit to what happened; only a human rejects, and a
    # non-publishing run that died simply failed.
    assert LEGAL_TRANSITIONS[S.UNKNOWN] == {S.PUBLISHED, S.FAILED}
    # Only states a dead process can leave behind may be marked UNKNOWN by recovery.
    assert {a for a, b in LEGAL_PAIRS if b == S.UNKNOWN} == IN_FLIGHT - {S.UNKNOWN}


# -- the same rules enforced by the ledger on a DuckDB file --------------------------------


def _planned(database: Path, **fields) -> None:
    with duckdb.connect(str(database)) as conn:
        plan(conn, Manifest(run_id=RUN, asset=ASSET, **fields))


def _walk(database: Path, statuses: list[RunStatus]) -> None:
    with duckdb.connect(str(database)) as conn:
        for status in statuses:
            transition(conn, RUN, ASSET, status)


def _read_state(conn: duckdb.DuckDBPyConnection) -> tuple[RunStatus, datetime, list[tuple]]:
    manifest = load_manifest(conn, RUN, ASSET)
    return manifest.status, manifest.updated_at, [h[:3] for h in status_history(conn, RUN)]


def _state(database: Path) -> tuple[RunStatus, datetime, list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return _read_state(conn)


@pytest.fixture(scope="module")
def ledger_at(tmp_path_factory: pytest.TempPathFactory) -> dict[RunStatus, Path]:
    """One ledger file per status, its manifest walked there along a legal path."""
    root = tmp_path_factory.mktemp("ledgers")
    files = {}
    for status, path in PATH_TO.items():
        database = root / f"{status}.duckdb"
        _planned(database)
        _walk(database, path)
        files[status] = database
    return files


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_ledger_transition_enforces_the_state_machine(tmp_path: Path, ledger_at, pair) -> None:
    current, target = pair
    database = tmp_path / "ledger.duckdb"
    shutil.copyfile(ledger_at[current], database)

    with duckdb.connect(str(database)) as conn:
        status, updated_at, history = _read_state(conn)
        assert status == current
        assert [t for _, _, t in history] == ["PLANNED", *map(str, PATH_TO[current])]
        if pair in LEGAL_PAIRS:
            assert transition(conn, RUN, ASSET, target, detail="step") == target
        else:
            with pytest.raises(IllegalTransitionError, match=f"from {current} to {target}"):
                transition(conn, RUN, ASSET, target, detail="step")
        after_status, after_updated, after_history = _read_state(conn)

    if pair in LEGAL_PAIRS:
        assert after_status == target
        assert after_history == [*history, (ASSET, str(current), str(target))]
    else:
        assert (after_status, after_updated, after_history) == (status, updated_at, history)


def test_refused_ledger_transition_leaves_the_file_unchanged(tmp_path: Path, ledger_at) -> None:
    database = tmp_path / "ledger.duckdb"
    shutil.copyfile(ledger_at[S.COMMITTING], database)
    before = _state(database)

    with duckdb.connect(str(database)) as conn, pytest.raises(IllegalTransitionError):
        transition(conn, RUN, ASSET, S.RUNNING, started_at=datetime.now(UTC))

    # Read back through a fresh connection: what the file holds, not a session's view.
    assert _state(database) == before
    assert before[0] == S.COMMITTING


def test_status_history_records_every_move_in_order(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    with duckdb.connect(str(database)) as conn:
        for status in CHAIN[1:]:
            transition(conn, RUN, ASSET, status, detail=f"to {status}")
        # Another run's moves do not show up in this run's history.
        plan(conn, Manifest(run_id="run-2", asset=ASSET))
        transition(conn, "run-2", ASSET, S.FAILED)
        history = status_history(conn, RUN)

    assert [(a, f, t) for a, f, t, _, _ in history] == [
        (ASSET, None, "PLANNED"),
        *((ASSET, str(f), str(t)) for f, t in itertools.pairwise(CHAIN)),
    ]
    assert [d for *_, d in history] == [None, *(f"to {s}" for s in CHAIN[1:])]
    recorded = [at for _, _, _, at, _ in history]
    assert recorded == sorted(recorded)


def test_replanning_a_failed_run_starts_a_new_attempt_and_keeps_history(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    _walk(database, [S.INPUT_LOCKED, S.FAILED])
    _planned(database)
    status, _, history = _state(database)
    assert status == S.PLANNED
    assert history == [
        (ASSET, None, "PLANNED"),
        (ASSET, "PLANNED", "INPUT_LOCKED"),
        (ASSET, "INPUT_LOCKED", "FAILED"),
        (ASSET, None, "PLANNED"),
    ]


def test_replanning_a_published_run_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    _walk(database, PATH_TO[S.PUBLISHED])
    with pytest.raises(ValueError, match="already published"):
        _planned(database)
    assert _state(database)[0] == S.PUBLISHED


def test_transition_of_unplanned_run_raises_not_found(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "ledger.duckdb")) as conn:
        plan(conn, Manifest(run_id="other", asset=ASSET))
        with pytest.raises(ManifestNotFoundError):
            transition(conn, RUN, ASSET, S.INPUT_LOCKED)


def test_transition_with_unknown_field_raises_and_leaves_status(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    before = _state(database)
    with (
        duckdb.connect(str(database)) as conn,
        pytest.raises(ValueError, match="cannot be set by a transition"),
    ):
        transition(conn, RUN, ASSET, S.INPUT_LOCKED, no_such_field=1)
    assert _state(database) == before


def test_transition_fields_cannot_override_the_checked_status(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    with duckdb.connect(str(database)) as conn:
        with pytest.raises(ValueError):
            transition(conn, RUN, ASSET, S.INPUT_LOCKED, status=str(S.PUBLISHED))
        status, _, history = _read_state(conn)
    # Whatever happens, the manifest may not claim a status its history never reached.
    assert status == history[-1][2]
    assert status in (S.PLANNED, S.INPUT_LOCKED)


def test_load_manifest_round_trips_json_fields(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    locked = datetime(2026, 9, 10, 6, 0, 0, 123456, tzinfo=UTC)
    parameters = {"ecm/reason": "LATE_DATA", "dagster/partition": "2026-09-03"}
    boundary = {
        "partitions": ["2026-09-03"],
        "landing_files": [{"path": "case_events/x.csv", "size_bytes": 10, "sha256": "ab" * 32}],
        "nested": {"none": None, "flag": True, "float": 1.5, "text": "Zürich \u2028 ünïcode"},
    }
    outputs = {"rows": 3, "rows_by_partition": {"2026-09-03": 3}, "versions": None}
    quality = {"checks": [{"name": "not_null", "passed": True}]}
    reconciliation = {"read": 5, "kept": 3, "rejected": 1, "duplicate": 1}
    _planned(
        database,
        code_version="1+abc",
        mode="publish",
        parameters=parameters,
        output_boundary=["2026-09-03", "2026-09-04"],
    )
    with duckdb.connect(str(database)) as conn:
        transition(
            conn, RUN, ASSET, S.INPUT_LOCKED, input_boundary=boundary, input_locked_at=locked
        )
        transition(conn, RUN, ASSET, S.RUNNING)
        transition(conn, RUN, ASSET, S.VALIDATING, quality=quality, reconciliation=reconciliation)
        transition(conn, RUN, ASSET, S.COMMITTING)
        transition(conn, RUN, ASSET, S.PUBLISHED, outputs=outputs)

    with duckdb.connect(str(database), read_only=True) as conn:
        m = load_manifest(conn, RUN)
    assert m.status is S.PUBLISHED
    assert m.parameters == parameters
    assert m.input_boundary == boundary
    assert m.output_boundary == ["2026-09-03", "2026-09-04"]
    assert m.outputs == outputs
    assert m.quality == quality
    assert m.reconciliation == reconciliation
    assert m.input_locked_at == locked
    assert (m.code_version, m.mode) == ("1+abc", "publish")
    as_json = m.to_json()
    assert as_json["status"] == "PUBLISHED"
    assert as_json["input_locked_at"] == m.input_locked_at.isoformat()
    assert as_json["input_boundary"] == boundary


def test_load_manifest_defaults_empty_json_fields(tmp_path: Path) -> None:
    database = tmp_path / "ledger.duckdb"
    _planned(database)
    with duckdb.connect(str(database), read_only=True) as conn:
        m = load_manifest(conn, RUN, ASSET)
    assert (m.parameters, m.output_boundary) == ({}, [])
    assert (m.input_boundary, m.outputs, m.quality, m.reconciliation) == (None, None, None, None)
