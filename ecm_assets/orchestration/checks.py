"""Show the quality gate in Dagster: one asset check per rule, evaluated per partition.

Dagster's asset checks run after the IO manager has written, so they cannot be the gate. The
gate decides before publish (ecm_assets.validation.gate); these checks report what it
decided, partition by partition, with WARN for what was published anyway and ERROR for what
was blocked, held or failed.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from datetime import date

import dagster as dg

from ecm_assets.contracts.dataset import DatasetContract
from ecm_assets.contracts.quality import QualityContract
from ecm_assets.validation.gate import Finding, GateResult

_SEVERITY_NOTE = {
    "schema": "row rules of the pandera model; each check's severity is in the model",
    "reconciliation": "input = accepted + quarantined + duplicate + blocked, exactly "
    "(derived datasets: their control totals)",
    "landing_columns": "landing files carry the contract's columns (missing: FAIL_RUN)",
    "landing_encoding": "landing files are UTF-8 (otherwise FAIL_RUN: no row can be trusted)",
}


def check_name(rule: str) -> str:
    """Asset check that reports a finding: pandera rules are grouped under `schema`."""
    return rule.split(":", 1)[0]


def _rule_severities(quality: QualityContract) -> dict[str, str]:
    out: dict[str, str] = {"schema": "per check", "reconciliation": str(quality.reconciliation)}
    out["landing_columns"] = f"missing FAIL_RUN, extra {quality.landing_extra_column}"
    out["landing_encoding"] = "FAIL_RUN"
    for rule in quality.rules:
        out[rule.name] = str(rule.severity)
    for c in quality.controls:
        out[c.name] = str(c.severity)
    for t in quality.time_bounds:
        out[t.name] = str(t.severity)
    for v in quality.values:
        out[v.name] = str(v.severity)
    return out


def check_names(contract: DatasetContract, quality: QualityContract) -> list[str]:
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
        for name in check_names(contract, quality):
            note = _SEVERITY_NOTE.get(name, "")
            specs.append(
                dg.AssetCheckSpec(
                    name,
                    asset=contract.name,
                    description=f"Quality gate rule {name} (severity {severities.get(name)})"
                    + (f": {note}" if note else "")
                    + ". Decided before publish; reported here per partition.",
                    partitions_def=partitions_def,
                    metadata={"ecm/severity": severities.get(name, "")},
                )
            )
    return specs


def _dagster_severity(findings: list[Finding]) -> dg.AssetCheckSeverity:
    failed = [f for f in findings if not f.passed]
    if any(f.severity.blocks for f in failed):
        return dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckSeverity.WARN


def check_evaluations(
    contract: DatasetContract,
    quality: QualityContract,
    gate: GateResult,
    partition_keys: dict[date, str],
) -> list[dg.AssetCheckEvaluation]:
    """One evaluation per check and partition; run-wide findings count for every partition."""
    names = check_names(contract, quality)
    grouped: dict[tuple[str, date], list[Finding]] = defaultdict(list)
    for f in gate.findings:
        targets = [f.partition] if f.partition is not None else list(partition_keys)
        for p in targets:
            if p in partition_keys:
                grouped[(check_name(f.rule), p)].append(f)
    key = dg.AssetKey(contract.name)
    out = []
    for name in names:
        for p, partition_key in partition_keys.items():
            findings = grouped.get((name, p), [])
            if not findings:
                continue
            failed = [f for f in findings if not f.passed]
            worst = max((f.severity for f in failed), key=lambda s: s.rank, default=None)
            metadata: dict[str, dg.MetadataValue] = {
                "gate_severity": dg.MetadataValue.text(str(worst) if worst else "PASSED"),
                "failed_rows": dg.MetadataValue.int(sum(f.failed for f in failed)),
                "checked_rows": dg.MetadataValue.int(max((f.checked for f in findings), default=0)),
            }
            values = [f.value for f in findings if f.value is not None]
            if len(values) == 1:
                metadata["value"] = dg.MetadataValue.float(float(values[0]))
            if failed:
                metadata["rules"] = dg.MetadataValue.json(
                    [
                        {
                            "rule": f.rule,
                            "severity": str(f.severity),
                            "column": f.column,
                            "failed": f.failed,
                            "sample": list(f.sample),
                        }
                        for f in failed
                    ]
                )
                samples = [s for f in failed for s in f.sample]
                metadata["failure_sample"] = dg.MetadataValue.text(", ".join(samples[:10]))
            out.append(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=name,
                    passed=not failed,
                    severity=_dagster_severity(findings),
                    description="; ".join(f"{f.severity} {f.message}" for f in failed)[:1000]
                    or None,
                    metadata=metadata,
                    partition=partition_key,
                    blocking=bool(worst and worst.blocks),
                )
            )
    return out


__all__ = ["check_evaluations", "check_names", "check_specs"]
