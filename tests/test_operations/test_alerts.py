"""Run failure alerts built from real failed in-process runs, and delivered to a local webhook."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import dagster as dg
import pytest

from ecm_assets.operations.alerts import (
    ERROR,
    QUALITY_GATE,
    Alert,
    AlertSink,
    StepFailure,
    build_alert,
    ecm_run_failure_alert,
    first_lines,
    make_alert,
    partitions_from_tags,
)

PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-09-01", end_date="2026-10-01")
FINDING = {
    "rule": "unique_business_key",
    "severity": "FAIL_RUN",
    "partition": "2026-09-02",
    "message": "3 duplicates",
}


@dg.asset(partitions_def=PARTITIONS)
def gated_events() -> None:
    """Fails the way the factory's quality gate fails a run."""
    raise dg.Failure(
        description="quality gate FAIL_RUN for gated_events: nothing of this run is published.\n"
        "unique_business_key: 3 duplicates",
        metadata={
            "quality_decision": "FAIL_RUN",
            "failed_rules": dg.MetadataValue.json([FINDING]),
        },
        allow_retries=False,
    )


@dg.asset(partitions_def=PARTITIONS)
def broken_events() -> None:
    """Fails with a plain bug, not a gate decision."""
    raise ValueError("bad column x")


class BlockingIOManager(dg.ConfigurableIOManager):
    """Fails in handle_output the way the publish IO manager does for FAIL_PARTITION/HOLD."""

    decision: str = "FAIL_PARTITION"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if self.decision == "MANUAL_REVIEW":
            raise dg.Failure(
                description=f"quality gate MANUAL_REVIEW: published_events output of run "
                f"{context.run_id} is HELD, nothing was published (row count dropped 80%).",
                metadata={"held_table": "stg_x", "quality_decision": "MANUAL_REVIEW"},
                allow_retries=False,
            )
        raise dg.Failure(
            description="quality gate FAIL_PARTITION: no partition of published_events was "
            "published. 2026-09-01: late data",
            metadata={"blocked_partitions": dg.MetadataValue.json({"2026-09-01": "late data"})},
            allow_retries=False,
        )

    def load_input(self, context: dg.InputContext) -> Any:
        return None


@dg.asset(partitions_def=PARTITIONS, io_manager_key="blocking_io")
def published_events() -> int:
    """Computes fine; the publish step (IO manager) fails."""
    return 1


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _failure_context(
    instance: dg.DagsterInstance,
    result: dg.ExecuteInProcessResult,
    resources: dict[str, Any] | None = None,
) -> dg.RunFailureSensorContext:
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="ecm_run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources=resources,
    ).for_run_failure()


class _Capture(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.captured.append((self.headers.get("Content-Type"), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[str | None, bytes]]]]:
    """A local webhook on a free port: (url, captured (content type, body) pairs)."""
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    server.captured = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T0K3N"
        yield url, server.captured  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- alerts from real failed runs


def test_quality_gate_failure_names_job_partition_rule_and_decision(
    instance: dg.DagsterInstance,
) -> None:
    result = dg.materialize(
        [gated_events],
        instance=instance,
        partition_key="2026-09-02",
        tags={"ecm/trigger": "schedule", "dagster/backfill": "bf123", "team": "x"},
        raise_on_error=False,
    )
    alert = build_alert(_failure_context(instance, result))

    assert alert.job == result.dagster_run.job_name
    assert alert.run_id == result.run_id
    assert alert.partitions == "2026-09-02"
    assert alert.assets == ("gated_events",)
    assert alert.kind == QUALITY_GATE
    assert alert.decision == "FAIL_RUN"
    assert alert.rule == "unique_business_key"
    assert alert.error.startswith("quality gate FAIL_RUN for gated_events")
    assert alert.tags == {"ecm/trigger": "schedule", "dagster/backfill": "bf123"}
    summary = alert.summary()
    assert "\n" not in summary
    for part in ("FAIL_RUN", "gated_events", "2026-09-02", "unique_business_key", result.run_id):
        assert part in summary


def test_plain_exception_is_an_error_alert_with_the_message(instance: dg.DagsterInstance) -> None:
    result = dg.materialize(
        [broken_events], instance=instance, partition_key="2026-09-03", raise_on_error=False
    )
    alert = build_alert(_failure_context(instance, result))

    assert alert.kind == ERROR
    assert alert.decision == ""
    assert alert.rule == ""
    assert alert.error_class == "ValueError"
    assert alert.error == "bad column x"
    assert alert.assets == ("broken_events",)
    assert alert.partitions == "2026-09-03"
    assert "ValueError" in alert.summary() and "bad column x" in alert.summary()


@pytest.mark.parametrize("decision", ["FAIL_PARTITION", "MANUAL_REVIEW"])
def test_partition_range_run_failed_by_the_publish_io_manager(
    instance: dg.DagsterInstance, decision: str
) -> None:
    result = dg.materialize(
        [published_events],
        instance=instance,
        resources={"blocking_io": BlockingIOManager(decision=decision)},
        tags={
            "dagster/asset_partition_range_start": "2026-09-01",
            "dagster/asset_partition_range_end": "2026-09-07",
            "ecm/backfill_mode": "single_run",
            "ecm/correction_class": "late_data",
        },
        raise_on_error=False,
    )
    alert = build_alert(_failure_context(instance, result))

    assert alert.partitions == "2026-09-01...2026-09-07"
    assert alert.kind == QUALITY_GATE
    assert alert.decision == decision
    assert alert.assets == ("published_events",)
    assert alert.tags == {"ecm/backfill_mode": "single_run", "ecm/correction_class": "late_data"}
    assert alert.error.startswith(f"quality gate {decision}")


def test_run_failing_before_any_step_still_alerts(instance: dg.DagsterInstance) -> None:
    run = instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="0b5e7a2e-0000-4000-8000-000000000001",
            tags={"dagster/partition": "2026-09-04", "ecm/trigger": "sensor"},
            asset_selection=frozenset({dg.AssetKey("case_events")}),
            status=dg.DagsterRunStatus.STARTED,
        )
    )
    event = instance.report_run_failed(run, message="Run worker failed unexpectedly (exit 137).")
    context = dg.build_run_status_sensor_context(
        sensor_name="ecm_run_failure_alert",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=event,
    ).for_run_failure()

    alert = build_alert(context)

    assert context.get_step_failure_events() == []
    assert alert.kind == ERROR
    assert alert.job == "__ASSET_JOB"
    assert alert.partitions == "2026-09-04"
    assert alert.assets == ("case_events",)
    assert "Run worker failed unexpectedly" in alert.error
    assert alert.tags == {"ecm/trigger": "sensor"}


def test_sensor_posts_the_alert_to_the_webhook(
    instance: dg.DagsterInstance,
    webhook: tuple[str, list[tuple[str | None, bytes]]],
) -> None:
    url, captured = webhook
    result = dg.materialize(
        [gated_events], instance=instance, partition_key="2026-09-02", raise_on_error=False
    )
    context = _failure_context(instance, result, resources={"alerts": AlertSink(webhook_url=url)})

    assert ecm_run_failure_alert(context) is None

    assert len(captured) == 1
    content_type, body = captured[0]
    assert content_type == "application/json"
    payload = json.loads(body)
    assert payload["run_id"] == result.run_id
    assert payload["job"] == result.dagster_run.job_name
    assert payload["partitions"] == "2026-09-02"
    assert payload["assets"] == ["gated_events"]
    assert payload["kind"] == QUALITY_GATE
    assert payload["decision"] == "FAIL_RUN"
    assert payload["rule"] == "unique_business_key"
    assert payload["text"] == payload["summary"]  # Slack-style webhooks display `text`


def test_sensor_declares_its_resource_and_loads_in_definitions() -> None:
    assert ecm_run_failure_alert.name == "ecm_run_failure_alert"
    assert ecm_run_failure_alert.default_status == dg.DefaultSensorStatus.RUNNING
    assert ecm_run_failure_alert.required_resource_keys == {"alerts"}
    dg.Definitions.validate_loadable(
        dg.Definitions(sensors=[ecm_run_failure_alert], resources={"alerts": AlertSink()})
    )


# ---------------------------------------------------------------- delivery


def _alert() -> Alert:
    return make_alert(
        job="__ASSET_JOB",
        run_id="r1",
        tags={"dagster/partition": "2026-09-01"},
        steps=[StepFailure(assets=("case_events",), error="boom", error_class="RuntimeError")],
    )


def test_webhook_receives_the_json(webhook: tuple[str, list[tuple[str | None, bytes]]]) -> None:
    url, captured = webhook
    assert AlertSink(webhook_url=url).send(_alert(), logging.getLogger("test_alerts")) is True
    payload = json.loads(captured[0][1])
    assert payload["assets"] == ["case_events"]
    assert payload["error"] == "boom"
    assert payload["error_class"] == "RuntimeError"


def test_unreachable_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sink = AlertSink(
        webhook_url=f"http://127.0.0.1:{_closed_port()}/hooks/SECRET", timeout_seconds=2
    )
    with caplog.at_level(logging.ERROR, logger="test_alerts"):
        assert sink.send(_alert(), logging.getLogger("test_alerts")) is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("ecm run FAILED" in m for m in messages)
    assert any("webhook POST to http://127.0.0.1 failed" in m for m in messages)
    assert not any("SECRET" in m for m in messages)


def test_empty_webhook_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="test_alerts"):
        assert AlertSink().send(_alert(), logging.getLogger("test_alerts")) is True
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


# ---------------------------------------------------------------- the pure part


def test_partitions_from_tags() -> None:
    assert partitions_from_tags({}) == ""
    assert partitions_from_tags({"dagster/partition": "2026-09-01"}) == "2026-09-01"
    range_tags = {
        "dagster/asset_partition_range_start": "2026-09-01",
        "dagster/asset_partition_range_end": "2026-09-07",
    }
    assert partitions_from_tags(range_tags) == "2026-09-01...2026-09-07"
    same = {**range_tags, "dagster/asset_partition_range_end": "2026-09-01"}
    assert partitions_from_tags(same) == "2026-09-01"


def test_error_text_is_bounded() -> None:
    assert first_lines("a\n\n b \nc\nd") == "a\nb\nc …"
    assert len(first_lines("x" * 5000)) <= 502
    alert = make_alert("j", "r", {}, [StepFailure(assets=("a",), error="line1\n" + "y" * 5000)])
    assert "\n" not in alert.summary() and len(alert.summary()) < 500


def test_most_severe_decision_and_rules_of_all_gate_steps_win() -> None:
    alert = make_alert(
        "j",
        "r",
        {},
        [
            StepFailure(assets=("a",), error="oops", error_class="KeyError"),
            StepFailure(assets=("b",), error="held", decision="MANUAL_REVIEW"),
            StepFailure(assets=("c",), error="dup", decision="FAIL_RUN", rules=("r1", "r2")),
        ],
    )
    assert alert.kind == QUALITY_GATE
    assert alert.decision == "FAIL_RUN"
    assert alert.rule == "r1, r2"
    assert alert.assets == ("a", "b", "c")
    assert alert.error == "dup"  # the message behind the reported decision
    assert json.loads(json.dumps(alert.to_json()))["assets"] == ["a", "b", "c"]
