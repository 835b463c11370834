"""Show the quality gate in Dagster as asset checks, at a cost linear in partitions.

Dagster's asset checks run after the IO manager has written, so they cannot be the gate. The
gate decides before publish (ecm_assets.validation.gate); these checks report what it
decided, WARN for what was published anyway and ERROR for what was blocked, held or failed.

Recording design (Dagster 1.13 partitioned checks). A partitioned check is planned for every
partition of the run and needs one evaluation per partition, or the UI shows the rest as
"Skipped"; one evaluation per rule *and* partition made check bookkeeping most of a long
backfill. So:

- `quality_gate` is the one partitioned check: one small evaluation per partition (passed,
  or the rules that failed there with their severities), so each partition's status in the UI
  is its own and stays truthful.
- every gate rule is an unpartitioned check with one evaluation per run, whose metadata
  carries the per-partition outcomes (which partitions failed, rows failed).

A run records rules + partitions evaluations instead of rules x partitions. A rule that did
not apply to a run (nothing to compare with, no landing files) passes and says why; runs that
publish nothing (dry_run, compare_only, shadow) record no evaluation, so they never replace
the results of the data that is actually published. Blocking flags follow the severity: a
rule whose failure keeps data from being published is a blocking check.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from datetime import date

import dagster as dg

from ecm_assets.contracts.dataset import DatasetContract, partition_key
from ecm_assets.contracts.quality import QualityContract, Severity
from ecm_assets.validation.gate import Finding, GateResult

#: The partitioned check: every partition's verdict over all rules.
GATE_CHECK = "quality_gate"

_SEVERITY_NOTE = {
    "schema": "row rules of the pandera model; each check's severity is in the model",
    "reconciliation": "input = accepted + quarantined + duplicate + blocked, exactly "
    "(derived datasets: their control totals)",
    "landing_columns": "landing files carry the contract's columns (missing: FAIL_RUN)",
    "landing_encoding": "landing files are UTF-8 (otherwise FAIL_RUN: no row can be trusted)",
}

#: Why a rule that produced no finding in a run passes.
_NOT_APPLICABLE = {
    "landing_columns": "every landing file of the input boundary has the contract's columns",
    "landing_encoding": "every landing file of the input boundary decoded as UTF-8",
}

#: Most partitions listed by name in a run-level evaluation (the count is always exact).
LISTED_PARTITIONS = 100


def check_name(rule: str) -> str:
    """Asset check that reports a finding: pandera rules are grouped under `schema`."""
    return rule.split(":", 1)[0]


def _rule_severities(quality: QualityContract) -> dict[str, tuple[str, bool]]:
    """Each check's severity text and whether a failure of it blocks publishing."""
    out: dict[str, tuple[str, bool]] = {
        # A missing or mistyped column is FAIL_RUN (see on_failure), so schema can block.
        "schema": ("per check", True),
        "reconciliation": (str(quality.reconciliation), Severity(quality.reconciliation).blocks),
        "landing_columns": (f"missing FAIL_RUN, extra {quality.landing_extra_column}", True),
        "landing_encoding": ("FAIL_RUN", True),
    }
    for rule in [*quality.rules, *quality.controls, *quality.time_bounds, *quality.values]:
        out[rule.name] = (str(rule.severity), Severity(rule.severity).blocks)
    return out


def check_names(contract: DatasetContract, quality: QualityContract) -> list[str]:
    """The per-rule (run-level) checks of a dataset."""
    names = quality.rule_names()
    if contract.landing is None:
        names = [n for n in names if not n.startswith("landing_")]
    return names


def check_specs(
    contract: DatasetContract, quality: QualityContract, partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetCheckSpec]:
    severities = _rule_severities(quality)
    specs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # partitioned asset checks are a preview feature
        specs.append(
            dg.AssetCheckSpec(
                GATE_CHECK,
                asset=contract.name,
                description="The quality gate's verdict on this partition over every rule: "
                "passed, or which rules failed here and how severely (a blocking failure "
                "kept the partition from being published). Evaluated once per partition.",
                partitions_def=partitions_def,
                blocking=True,
                metadata={"ecm/severity": "worst of the rules"},
            )
        )
        for name in check_names(contract, quality):
            note = _SEVERITY_NOTE.get(name, "")
            severity, blocks = severities.get(name, ("", False))
            specs.append(
                dg.AssetCheckSpec(
                    name,
                    asset=contract.name,
                    description=f"Quality gate rule {name} (severity {severity})"
                    + (f": {note}" if note else "")
                    + ". Decided before publish; one evaluation per run, listing the "
                    "partitions that failed.",
                    blocking=blocks,
                    metadata={"ecm/severity": severity},
                )
            )
    return specs


def _sample_text(failed: list[Finding]) -> str:
    """The first failing values, blanks shown as such (a blank is a value too)."""
    samples = [s if s.strip() else "(blank)" for f in failed for s in f.sample]
    return ", ".join(samples[:10])


def _severity(failed: list[Finding]) -> tuple[Severity | None, dg.AssetCheckSeverity]:
    worst = max((f.severity for f in failed), key=lambda s: s.rank, default=None)
    blocking = worst is not None and worst.blocks
    return worst, dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def _description(failed: list[Finding]) -> str | None:
    return "; ".join(f"{f.severity} {f.message}" for f in failed)[:1000] or None


def _rule_evaluation(
    key: dg.AssetKey, name: str, findings: list[Finding], partitions: list[date]
) -> dg.AssetCheckEvaluation:
    failed = [f for f in findings if not f.passed]
    worst, severity = _severity(failed)
    metadata: dict[str, object] = {
        "gate_severity": str(worst) if worst else "PASSED",
        "partitions_checked": dg.MetadataValue.int(len(partitions)),
        "checked_rows": dg.MetadataValue.int(sum(f.checked for f in findings if f.partition)),
    }
    if not findings:
        return dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=name,
            passed=True,
            metadata=metadata,
            description=_NOT_APPLICABLE.get(name)
            or "passed: the rule did not apply to this run (nothing for it to judge)",
        )
    by_partition: dict[str, dict[str, object]] = {}
    for f in failed:
        where = partition_key(f.partition) if f.partition else "run"
        entry = by_partition.setdefault(where, {"severity": str(f.severity), "failed": 0})
        entry["failed"] = int(entry["failed"]) + f.failed  # type: ignore[call-overload]
        if f.severity.rank > Severity(str(entry["severity"])).rank:
            entry["severity"] = str(f.severity)
        if f.value is not None:
            entry["value"] = f.value
    metadata["failed_rows"] = dg.MetadataValue.int(sum(f.failed for f in failed))
    values = [f.value for f in findings if f.value is not None]
    if len(values) == 1:
        metadata["value"] = dg.MetadataValue.float(float(values[0]))
    if failed:
        metadata["partitions_failed"] = dg.MetadataValue.int(
            len([p for p in by_partition if p != "run"])
        )
        listed = dict(sorted(by_partition.items())[:LISTED_PARTITIONS])
        if len(by_partition) > len(listed):
            listed["(truncated)"] = {"listed": len(listed), "of": len(by_partition)}
        metadata["failed_partitions"] = dg.MetadataValue.json(listed)
        metadata["failure_sample"] = dg.MetadataValue.text(_sample_text(failed))
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=name,
        passed=not failed,
        severity=severity,
        description=_description(failed),
        metadata=metadata,
        blocking=bool(worst and worst.blocks),
    )


def _partition_evaluation(
    key: dg.AssetKey, partition_key: str, failed: list[Finding], blocked: str | None
) -> dg.AssetCheckEvaluation:
    worst, severity = _severity(failed)
    if not failed:
        return dg.AssetCheckEvaluation(
            asset_key=key, check_name=GATE_CHECK, passed=True, partition=partition_key
        )
    rules: dict[str, dict[str, object]] = {}
    for f in failed:
        entry = rules.setdefault(check_name(f.rule), {"severity": str(f.severity), "failed": 0})
        entry["failed"] = int(entry["failed"]) + f.failed  # type: ignore[call-overload]
        if f.severity.rank > Severity(str(entry["severity"])).rank:
            entry["severity"] = str(f.severity)
    metadata: dict[str, object] = {
        "gate_severity": str(worst),
        "failed_rules": dg.MetadataValue.json(rules),
        "failed_rows": dg.MetadataValue.int(sum(f.failed for f in failed if f.partition)),
    }
    if blocked:
        metadata["blocked"] = blocked
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=GATE_CHECK,
        passed=False,
        severity=severity,
        description=_description(failed),
        metadata=metadata,
        partition=partition_key,
        blocking=bool(worst and worst.blocks),
    )


def check_evaluations(
    contract: DatasetContract,
    quality: QualityContract,
    gate: GateResult,
    partition_keys: dict[date, str],
) -> list[dg.AssetCheckEvaluation]:
    """One evaluation per rule for the run, and one `quality_gate` evaluation per partition."""
    key = dg.AssetKey(contract.name)
    partitions = sorted(partition_keys)
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    failed_by_partition: dict[date, list[Finding]] = defaultdict(list)
    for f in gate.findings:
        if f.partition is not None and f.partition not in partition_keys:
            continue
        by_rule[check_name(f.rule)].append(f)
        if not f.passed:
            # A run-wide failure counts against every partition of the run.
            for p in [f.partition] if f.partition is not None else partitions:
                failed_by_partition[p].append(f)
    out = [
        _rule_evaluation(key, name, by_rule.get(name, []), partitions)
        for name in check_names(contract, quality)
    ]
    out += [
        _partition_evaluation(
            key, partition_keys[p], failed_by_partition.get(p, []), gate.blocked.get(p)
        )
        for p in partitions
    ]
    return out


__all__ = ["GATE_CHECK", "check_evaluations", "check_names", "check_specs"]
