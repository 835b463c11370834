"""A sync run's validation rules, as the project's gate rules and findings.

The spec's rules become the quality contract's own rule types, with the severity its
`on_failure` names (abort_and_alert -> FAIL_RUN, warn -> WARN):
- row_count  -> RowCount: live rows the store will hold once the run is merged;
- null_check -> NullRate per field: nulls among the rows the run extracted;
- freshness  -> Freshness: the newest value of the field against the source clock recorded
  at the run's boundary (recorded, so a resumed run judges exactly as the first attempt).
Findings are the gate's `Finding`; a blocking one fails the run before anything is merged.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.contracts.quality import Freshness, NullRate, RowCount, Severity
from ecm_assets.sync.backend import columns
from ecm_assets.sync.sink import STAGING_SCHEMA, store_exists, store_rows_after_merge, tables_for
from ecm_assets.sync.spec import JobSpec
from ecm_assets.validation.gate import Decision, Finding

SEVERITY = {"abort_and_alert": Severity.FAIL_RUN, "warn": Severity.WARN}


def gate_rules(spec: JobSpec) -> list[RowCount | NullRate | Freshness]:
    severity = SEVERITY[spec.on_failure]
    rules: list[RowCount | NullRate | Freshness] = []
    for rule in spec.rules:
        if rule.type == "row_count":
            rules.append(RowCount(severity, min_rows=rule.min or 0, max_rows=rule.max))
        elif rule.type == "null_check":
            rules += [NullRate(f, severity, max_fraction=rule.threshold) for f in rule.fields]
        else:
            assert rule.field is not None and rule.max_age is not None
            rules.append(Freshness(rule.field, rule.max_age, severity))
    return rules


class SyncValidationError(RuntimeError):
    """The run's validation failed with abort_and_alert: nothing of it was merged."""

    def __init__(self, job_id: str, run_id: str, failures: list[Finding]) -> None:
        lines = "; ".join(f"{f.rule}: {f.message}" for f in failures)
        super().__init__(
            f"quality gate FAIL_RUN: sync job {job_id} run {run_id} aborted before publish: {lines}"
        )
        self.failures = failures


def _staged_has(conn: Any, spec: JobSpec) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ecm_staging' "
            "AND table_name = ?",
            ["sync__" + spec.table],
        ).fetchone()[0]
    )


def judge_run(
    conn: Any,
    spec: JobSpec,
    run_id: str,
    *,
    source_now: str,
    reconcile_deletes: bool,
) -> tuple[Decision, list[Finding]]:
    """Evaluate every rule on the staged run; the decision and one finding per rule."""
    t = tables_for(spec)
    staged = _staged_has(conn, spec)
    findings: list[Finding] = []
    staged_columns = {c for c, _ in columns(conn, STAGING_SCHEMA, "sync__" + spec.table)}
    for rule in gate_rules(spec):
        if isinstance(rule, RowCount):
            if staged:
                rows = store_rows_after_merge(conn, spec, run_id, reconcile_deletes)
            elif store_exists(conn, spec):
                rows = conn.execute(
                    f"SELECT count(*) FROM {t.store} WHERE NOT _deleted"
                ).fetchone()[0]
            else:
                rows = 0
            ok = rows >= rule.min_rows and (rule.max_rows is None or rows <= rule.max_rows)
            findings.append(
                Finding(
                    rule.name,
                    rule.severity,
                    None,
                    ok,
                    0 if ok else 1,
                    1,
                    f"the store would hold {rows} live rows; allowed "
                    f"[{rule.min_rows}, {rule.max_rows or 'no max'}]",
                    value=float(rows),
                )
            )
        elif isinstance(rule, NullRate):
            total = nulls = 0
            if staged:
                col = quote_ident(rule.column)
                if rule.column not in staged_columns:
                    findings.append(
                        Finding(
                            rule.name,
                            Severity.FAIL_RUN,
                            None,
                            False,
                            0,
                            0,
                            f"column {rule.column} is not in the source rows",
                            column=rule.column,
                        )
                    )
                    continue
                total, nulls = conn.execute(
                    f"SELECT count(*), count(*) - count({col}) FROM {t.staging} WHERE _run_id = ?",
                    [run_id],
                ).fetchone()
            share = nulls / total if total else 0.0
            ok = share <= rule.max_fraction
            findings.append(
                Finding(
                    rule.name,
                    rule.severity,
                    None,
                    ok,
                    int(nulls),
                    int(total),
                    f"{nulls} of {total} extracted rows have no {rule.column} "
                    f"({share:.2%}; threshold {rule.max_fraction:.2%})",
                    column=rule.column,
                    value=share,
                )
            )
        else:
            newest = _newest(conn, spec, rule.column, run_id, staged)
            now = pd.Timestamp(source_now)
            now = now.tz_localize("UTC") if now.tzinfo is None else now
            if newest is None:
                ok, age, text = False, None, "no rows, so no freshness"
            else:
                age = now - newest
                ok = age <= pd.Timedelta(rule.max_lag)
                text = (
                    f"newest {rule.column} {newest.isoformat()} is {_human(age)} behind the "
                    f"source clock at the boundary; allowed {_human(rule.max_lag)}"
                )
            findings.append(
                Finding(
                    rule.name,
                    rule.severity,
                    None,
                    ok,
                    0 if ok else 1,
                    1,
                    text,
                    column=rule.column,
                    value=None if age is None else age.total_seconds(),
                )
            )
    blocking = [f for f in findings if not f.passed and f.severity.blocks]
    warned = [f for f in findings if not f.passed]
    decision = (
        Decision.FAIL_RUN
        if blocking
        else Decision.PUBLISH_WITH_WARNING
        if warned
        else Decision.PUBLISH
    )
    return decision, findings


def _newest(conn, spec: JobSpec, column: str, run_id: str, staged: bool) -> pd.Timestamp | None:
    t = tables_for(spec)
    col = quote_ident(column)
    values: list[Any] = []
    if staged:
        values.append(
            conn.execute(
                f"SELECT max({col}) FROM {t.staging} WHERE _run_id = ?", [run_id]
            ).fetchone()[0]
        )
    if store_exists(conn, spec):
        values.append(conn.execute(f"SELECT max({col}) FROM {t.store}").fetchone()[0])
    stamps = [pd.Timestamp(v) for v in values if v is not None]
    stamps = [s.tz_localize("UTC") if s.tzinfo is None else s for s in stamps]
    return max(stamps) if stamps else None


def _human(delta: Any) -> str:
    seconds = (
        pd.Timedelta(delta).total_seconds()
        if not isinstance(delta, timedelta)
        else delta.total_seconds()
    )
    if abs(seconds) >= 3600:
        return f"{seconds / 3600:.1f} h"
    if abs(seconds) >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def quality_record(decision: Decision, findings: list[Finding]) -> dict[str, Any]:
    """The manifest's `quality` field, in the gate's own shape."""
    return {
        "decision": str(decision),
        "blocked_partitions": {},
        "failures": [f.to_json() for f in findings if not f.passed],
        "rules_checked": sorted({f.rule for f in findings}),
        "metrics": {f.rule: f.value for f in findings if f.value is not None},
    }
