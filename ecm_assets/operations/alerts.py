"""Run failure alerts: one readable message per failed run, logged and optionally POSTed.

A failed run is only useful to on-call if the alert says *what* failed (job, asset,
partitions), *why* (a quality gate decision and its rules, or an error), and in which
context (backfill, correction, trigger). The `Alert` record and its rendering are pure so
they can be tested and reused without Dagster; `build_alert` extracts them from a run
failure sensor context; `AlertSink` delivers them; `ecm_run_failure_alert` wires it up.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from ecm_assets.operations.sensors import sensor_interval_seconds

QUALITY_GATE = "quality_gate"
ERROR = "error"
DECISIONS = ("FAIL_RUN", "FAIL_PARTITION", "MANUAL_REVIEW")  # most severe first

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"

ERROR_MAX_LINES = 3
ERROR_MAX_CHARS = 500
SUMMARY_ERROR_MAX_CHARS = 300

_GATE_DESCRIPTION = re.compile(r"quality gate (FAIL_RUN|FAIL_PARTITION|MANUAL_REVIEW)\b")

# --------------------------------------------------------------------------------------
# Pure part: no Dagster below until `build_alert`.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """What on-call needs to act on one failed run, without opening the Dagster UI."""

    job: str
    run_id: str
    partitions: str = ""  # "2026-09-01", "2026-09-01...2026-09-07" or "" (unpartitioned)
    assets: tuple[str, ...] = ()  # asset keys of the failed steps (or of the run, if none)
    kind: str = ERROR  # QUALITY_GATE or ERROR
    decision: str = ""  # FAIL_RUN / FAIL_PARTITION / MANUAL_REVIEW when kind is QUALITY_GATE
    rule: str = ""  # failing rule names, comma separated, when the gate gave them
    error: str = ""  # first line(s) of the error, bounded
    error_class: str = ""  # e.g. "ValueError", "Failure"; "" when unknown
    tags: Mapping[str, str] = field(default_factory=dict)  # ecm/* and dagster/backfill

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able dict, the webhook payload (plus `summary`)."""
        return {
            "job": self.job,
            "run_id": self.run_id,
            "partitions": self.partitions,
            "assets": list(self.assets),
            "kind": self.kind,
            "decision": self.decision,
            "rule": self.rule,
            "error": self.error,
            "error_class": self.error_class,
            "tags": dict(sorted(self.tags.items())),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """One line: what failed, why, where, and the run id to paste into `ecm` commands."""
        what = (
            f"quality gate {self.decision or 'failure'}"
            if self.kind == QUALITY_GATE
            else f"error {self.error_class}".rstrip()
        )
        parts = [f"ecm run FAILED ({what})"]
        parts.append(f"asset={','.join(self.assets)}" if self.assets else "asset=?")
        if self.partitions:
            parts.append(f"partitions={self.partitions}")
        if self.rule:
            parts.append(f"rule={self.rule}")
        parts.append(f"job={self.job}")
        parts.append(f"run={self.run_id}")
        parts.extend(f"{k}={v}" for k, v in sorted(self.tags.items()))
        line = " ".join(parts)
        first = first_lines(self.error, max_lines=1, max_chars=SUMMARY_ERROR_MAX_CHARS)
        return f"{line}: {first}" if first else line


def first_lines(
    text: str, max_lines: int = ERROR_MAX_LINES, max_chars: int = ERROR_MAX_CHARS
) -> str:
    """The first non-empty lines of `text`, bounded, so an alert never carries a stack."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    out = "\n".join(lines[:max_lines])
    truncated = len(lines) > max_lines
    if len(out) > max_chars:
        out, truncated = out[: max_chars - 1].rstrip(), True
    return out + " …" if truncated else out


def partitions_from_tags(tags: Mapping[str, str]) -> str:
    """The run's partitions as a human string: a key, a `start...end` range, or ""."""
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return tags.get(PARTITION_TAG) or start or end or ""


def alert_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags that tell on-call the run's context: ours (ecm/*) and the backfill id."""
    return {k: v for k, v in tags.items() if k.startswith("ecm/") or k == BACKFILL_TAG}


def rule_names(failed_rules: Any) -> list[str]:
    """Distinct rule names, in order, from the gate's `failed_rules` findings (dicts or names)."""
    if isinstance(failed_rules, str):
        try:
            failed_rules = json.loads(failed_rules)
        except ValueError:
            return [failed_rules] if failed_rules else []
    if isinstance(failed_rules, Mapping):
        failed_rules = [failed_rules]
    names: list[str] = []
    for item in failed_rules if isinstance(failed_rules, Iterable) else []:
        name = item.get("rule") if isinstance(item, Mapping) else item
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def most_severe(decisions: Iterable[str]) -> str:
    """FAIL_RUN over FAIL_PARTITION over MANUAL_REVIEW; unknown decisions last."""
    rank = {d: i for i, d in enumerate(DECISIONS)}
    return min((d for d in decisions if d), key=lambda d: rank.get(d, len(rank)), default="")


@dataclass(frozen=True)
class StepFailure:
    """One failed step, reduced to what an alert needs (Dagster-free, so testable alone)."""

    assets: tuple[str, ...]
    error: str
    error_class: str = ""
    decision: str = ""  # set only when the step failed on the quality gate
    rules: tuple[str, ...] = ()


def make_alert(
    job: str,
    run_id: str,
    tags: Mapping[str, str],
    steps: Sequence[StepFailure],
    run_assets: Sequence[str] = (),
    run_error: str = "",
    run_error_class: str = "",
) -> Alert:
    """Combine a run's step failures into one alert; with no step, use the run's own error."""
    gate_steps = [s for s in steps if s.decision]
    decision = most_severe(s.decision for s in gate_steps)
    # The message shown is the one behind the decision reported (else the first error).
    primary = next((s for s in gate_steps if s.decision == decision), steps[0] if steps else None)
    assets: list[str] = []
    for s in steps:
        assets.extend(a for a in s.assets if a not in assets)
    rules: list[str] = []
    for s in gate_steps:
        rules.extend(r for r in s.rules if r not in rules)
    return Alert(
        job=job,
        run_id=run_id,
        partitions=partitions_from_tags(tags),
        assets=tuple(assets or run_assets),
        kind=QUALITY_GATE if gate_steps else ERROR,
        decision=decision,
        rule=", ".join(rules),
        error=first_lines(primary.error if primary else run_error),
        error_class=primary.error_class if primary else run_error_class,
        tags=alert_tags(tags),
    )


# --------------------------------------------------------------------------------------
# Extraction from Dagster events.
# --------------------------------------------------------------------------------------


def _metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The raw value behind a (possibly typed) metadata entry, or None."""
    value = metadata.get(key)
    return getattr(value, "value", value)


def _error_of(error: Any) -> tuple[str, str]:
    """(class, message) of the user's error: Dagster's wrappers unwrapped, class prefix cut."""
    if error is None:
        return "", ""
    while getattr(error, "cause", None) is not None and str(error.cls_name).startswith("Dagster"):
        error = error.cause
    cls_name = str(getattr(error, "cls_name", "") or "")
    message = str(getattr(error, "message", "") or "")
    head, sep, rest = message.partition(": ")
    if sep and cls_name and head.split(".")[-1] == cls_name:
        message = rest
    return cls_name, message


def _step_assets(instance: dg.DagsterInstance | None, run: dg.DagsterRun) -> dict[str, list[str]]:
    """Step key -> asset keys it materializes, from the run's execution plan snapshot."""
    if instance is None or not run.execution_plan_snapshot_id:
        return {}
    try:
        snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    except Exception:
        return {}
    out: dict[str, list[str]] = {}
    for step in snapshot.steps:
        keys = [
            o.properties.asset_key.to_user_string()
            for o in step.outputs
            if o.properties is not None and o.properties.asset_key is not None
        ]
        out[step.key] = list(dict.fromkeys(keys))
    return out


def step_failure_from_event(event: dg.DagsterEvent, assets: Sequence[str]) -> StepFailure:
    """Reduce a STEP_FAILURE event: gate decision and rules from a `dg.Failure`'s metadata."""
    data = event.event_specific_data
    error_class, message = _error_of(getattr(data, "error", None))
    user = getattr(data, "user_failure_data", None)
    decision, rules = "", ()
    if user is not None:  # raised as dg.Failure: the factory's gate or the publish IO manager
        error_class = error_class or "Failure"
        message = user.description or message
        metadata = user.metadata or {}
        decision = str(_metadata_value(metadata, "quality_decision") or "")
        if not decision:  # the IO manager's FAIL_PARTITION carries its decision in the text
            match = _GATE_DESCRIPTION.search(user.description or "")
            decision = match.group(1) if match else ""
        rules = tuple(rule_names(_metadata_value(metadata, "failed_rules")))
    return StepFailure(
        assets=tuple(assets),
        error=message or event.message or "",
        error_class=error_class,
        decision=decision,
        rules=rules,
    )


def alert_from_run(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
    step_events: Sequence[dg.DagsterEvent],
    instance: dg.DagsterInstance | None = None,
) -> Alert:
    """The alert for a failed run, given its failure and step failure events."""
    by_step = _step_assets(instance, run)
    run_assets = sorted(k.to_user_string() for k in (run.asset_selection or ()))
    steps = []
    for event in step_events:
        step_key = event.step_key or ""
        assets = by_step.get(step_key) or (run_assets if len(run_assets) == 1 else [step_key])
        steps.append(step_failure_from_event(event, [a for a in assets if a]))
    failure_data = getattr(failure_event, "event_specific_data", None)
    run_error_class, run_error = _error_of(getattr(failure_data, "error", None))
    if failure_event is not None and failure_event.message:
        # The run-level message ("Run worker failed...") is the best we have before any step.
        run_error = f"{failure_event.message}\n{run_error}" if run_error else failure_event.message
    return make_alert(
        job=run.job_name,
        run_id=run.run_id,
        tags=run.tags,
        steps=steps,
        run_assets=run_assets,
        run_error=run_error or "run failed (no error recorded)",
        run_error_class=run_error_class,
    )


def build_alert(context: dg.RunFailureSensorContext) -> Alert:
    """The alert for the run a failure sensor is looking at; works when no step ran."""
    run = context.dagster_run
    failure_event = context.failure_event
    try:
        step_events = list(context.get_step_failure_events())
    except Exception:  # the event log is unreachable: fall back to what the run event carries
        step_events = []
    if not step_events:
        first = getattr(failure_event.event_specific_data, "first_step_failure_event", None)
        step_events = [first] if first is not None else []
    return alert_from_run(run, failure_event, step_events, context.instance)


def fallback_alert(run: dg.DagsterRun, exc: BaseException) -> Alert:
    """A minimal alert when extraction itself failed: the run must still be reported."""
    return make_alert(
        job=run.job_name,
        run_id=run.run_id,
        tags=run.tags,
        steps=[],
        run_error=f"run failed; building the alert failed too: {type(exc).__name__}: {exc}",
    )


# --------------------------------------------------------------------------------------
# Delivery and the sensor.
# --------------------------------------------------------------------------------------


class AlertSink(dg.ConfigurableResource):
    """Where alerts go: always the log (ERROR), and a webhook when one is configured."""

    webhook_url: str = ""  # empty: log only
    timeout_seconds: float = 5.0

    def send(self, alert: Alert, log: logging.Logger | dg.DagsterLogManager) -> bool:
        """Log the alert, POST it when configured; True if delivered. Never raises."""
        log.error(alert.summary())
        if not self.webhook_url:
            return True
        parsed = urllib.parse.urlsplit(self.webhook_url)
        # Never log the path or query: webhook URLs often embed their secret token there.
        where = f"{parsed.scheme}://{parsed.hostname or '?'}"
        if parsed.scheme not in ("http", "https"):
            log.error(f"alert webhook not sent: unsupported URL scheme in {where!r}")
            return False
        body = json.dumps({**alert.to_json(), "text": alert.summary()}).encode("utf-8")
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except Exception as exc:  # an alert path must never crash the sensor
            log.error(f"alert webhook POST to {where} failed for run {alert.run_id}: {exc!r}")
            return False
        return True


@dg.run_failure_sensor(
    name="ecm_run_failure_alert",
    description="Logs (and POSTs to ECM_ALERT_WEBHOOK_URL) one alert per failed run.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    minimum_interval_seconds=min(30, sensor_interval_seconds()),
)
def ecm_run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertSink) -> None:
    """Alert on every failed run of this code location, quality gate or error alike."""
    try:
        alert = build_alert(context)
    except Exception as exc:  # still alert: a silent failure is the worst outcome
        context.log.exception("building the run failure alert failed")
        alert = fallback_alert(context.dagster_run, exc)
    alerts.send(alert, context.log)
