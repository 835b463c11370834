"""Transient source errors are retried by Dagster's retry policy (exponential backoff with
jitter); bad input, a failed gate and contract violations fail once, never retried."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

import ecm_assets.orchestration.inputs as inputs
from ecm_assets.adapters.landing import LandingFileChangedError, LandingReadError
from ecm_assets.definitions import case_sla_definitions as build_definitions
from ecm_assets.orchestration.retries import RETRY_POLICY, is_transient, non_retryable
from tests.test_lifecycle._support import failure_messages

PARTITION = "2026-09-02"


def _events(result: dg.ExecuteInProcessResult, kind: str) -> int:
    return sum(e.event_type_value == kind for e in result.all_events)


@pytest.fixture
def defs(demo_data, tmp_path: Path) -> dg.Definitions:
    root = tmp_path / "data"
    shutil.copytree(demo_data[0], root)
    return build_definitions(root, tmp_path / "warehouse.duckdb")


def _run(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets or []),
        selection=["case_events"],
        resources=defs.resources,
        partition_key=PARTITION,
        raise_on_error=False,
    )


def test_policy_is_exponential_with_jitter() -> None:
    assert RETRY_POLICY.max_retries == 3
    assert RETRY_POLICY.backoff == dg.Backoff.EXPONENTIAL
    assert RETRY_POLICY.jitter == dg.Jitter.PLUS_MINUS


def test_a_briefly_unreadable_source_is_retried_and_then_published(defs, monkeypatch) -> None:
    real = inputs.read_landing_files
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError(13, "Permission denied (file held by the copy job)")
        return real(*args, **kwargs)

    monkeypatch.setattr(inputs, "read_landing_files", flaky)
    result = _run(defs)
    assert result.success, failure_messages(result)
    assert calls["n"] == 2
    assert _events(result, "STEP_UP_FOR_RETRY") == 1
    assert len(result.get_asset_materialization_events()) == 1


def test_bad_input_fails_once_and_is_not_retried(defs, monkeypatch) -> None:
    def unreadable(*args, **kwargs):
        raise LandingReadError("x.csv", "landing file x.csv is not valid UTF-8 at byte 3")

    monkeypatch.setattr(inputs, "read_landing_files", unreadable)
    result = _run(defs)
    assert not result.success
    assert "FAIL_RUN" in failure_messages(result)
    assert _events(result, "STEP_UP_FOR_RETRY") == 0


def test_a_programming_or_contract_error_is_not_retried(defs, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise KeyError("column 'unit_id' missing after a refactor")

    monkeypatch.setattr(inputs, "read_landing_files", broken)
    result = _run(defs)
    assert not result.success
    text = failure_messages(result)
    assert "KeyError" in text and "unit_id" in text
    assert _events(result, "STEP_UP_FOR_RETRY") == 0


def test_is_transient_walks_the_cause_chain() -> None:
    assert is_transient(PermissionError("locked"))
    assert is_transient(TimeoutError())
    assert is_transient(LandingFileChangedError("still being written"))
    try:
        try:
            raise ConnectionResetError("share went away")
        except OSError as inner:
            raise RuntimeError("read failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(ValueError("bad"))
    failure = non_retryable(ValueError("bad column x"), "case_events")
    assert not failure.allow_retries and "ValueError: bad column x" in failure.description


def test_step_retry_of_an_attempt_that_already_committed_succeeds_idempotently(
    defs, monkeypatch
) -> None:
    """A transient error after COMMIT retries the step; the retry reports the publish."""
    import duckdb

    from ecm_assets.manifest.ledger import load_manifests
    from ecm_assets.publish.failpoints import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "publish.after_commit=timeout")
    result = _run(defs)
    assert result.success, failure_messages(result)
    assert _events(result, "STEP_UP_FOR_RETRY") == 1
    assert _events(result, "ASSET_MATERIALIZATION") == 1
    database = defs.resources["warehouse_io_manager"].database
    with duckdb.connect(database, read_only=True) as conn:
        attempts = load_manifests(conn, run_id=result.run_id, all_attempts=True)
    assert [(m.attempt, str(m.status)) for m in attempts] == [(1, "PUBLISHED")]
