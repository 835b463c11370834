"""The quality gate: judge a run's staged output and route every failure by its severity.

Pure: DataFrames and contracts in, a GateResult out; no Dagster, no warehouse. It runs after
the transform and before the publish IO manager makes anything visible, so its decision is
what gets published: the accepted rows, the quarantined rows with their reasons, the
partitions it blocks, or nothing (FAIL_RUN) or everything held (MANUAL_REVIEW).

Evidence: one Finding per rule and partition (the asset checks), and a reconciliation record
per partition (the manifest) whose identity input = accepted + quarantined + duplicate must
hold exactly, or the run fails.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from ecm_assets.contracts.boundaries import ReferenceSnapshot
from ecm_assets.contracts.dataset import Dataset, DatasetContract
from ecm_assets.contracts.quality import (
    SEVERITY_KEY,
    Drift,
    Freshness,
    NullRate,
    QualityContract,
    QuarantineRate,
    Referential,
    RowCount,
    Severity,
    UniqueKey,
)
from ecm_assets.contracts.transform import REJECT_COLUMNS, PartitionWindow, TransformResult

#: How many failure cases a finding keeps as a sample.
SAMPLE_SIZE = 5


class Decision(StrEnum):
    """The gate's verdict on a run (spec section 18, QualityAction)."""

    PUBLISH = "PUBLISH"
    PUBLISH_WITH_WARNING = "PUBLISH_WITH_WARNING"
    QUARANTINE_RECORDS = "QUARANTINE_RECORDS"
    FAIL_PARTITION = "FAIL_PARTITION"
    FAIL_RUN = "FAIL_RUN"
    MANUAL_REVIEW = "MANUAL_REVIEW"


@dataclass(frozen=True)
class Finding:
    """The outcome of one rule on one partition (None: the whole run)."""

    rule: str
    severity: Severity
    partition: date | None
    passed: bool
    failed: int = 0
    checked: int = 0
    message: str = ""
    column: str | None = None
    sample: tuple[str, ...] = ()
    value: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["severity"] = str(self.severity)
        out["partition"] = self.partition.isoformat() if self.partition else None
        out["sample"] = list(self.sample)
        return out


@dataclass
class GateResult:
    decision: Decision
    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    blocked: dict[date, str]
    findings: list[Finding]
    reconciliation: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def worst(self, partition: date | None = None) -> Severity | None:
        hits = [
            f.severity
            for f in self.failures
            if partition is None or f.partition in (None, partition)
        ]
        return max(hits, key=lambda s: s.rank) if hits else None

    def summary(self) -> str:
        """One line per blocking failure, naming the rule, partition and what failed."""
        lines = []
        for f in self.failures:
            if not f.severity.blocks:
                continue
            where = f.partition.isoformat() if f.partition else "run"
            lines.append(f"{f.severity} {f.rule} [{where}]: {f.message}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The manifest's `quality` record."""
        return {
            "decision": str(self.decision),
            "blocked_partitions": {d.isoformat(): why for d, why in sorted(self.blocked.items())},
            "failures": [f.to_json() for f in self.failures],
            "rules_checked": sorted({f.rule for f in self.findings}),
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class GateInput:
    contract: DatasetContract
    quality: QualityContract
    window: PartitionWindow
    data: pd.DataFrame
    rejects: pd.DataFrame | None = None
    counts: pd.DataFrame | None = None
    reference: Mapping[str, Mapping[date, ReferenceSnapshot]] = field(default_factory=dict)
    upstream: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    #: Rows published now for the window's partitions (for drift); None when never published.
    published: pd.DataFrame | None = None
    closed: frozenset[date] = frozenset()
    #: Problems the landing reader noticed, e.g. {"file": ..., "extra_columns": [...]}.
    landing_issues: Sequence[Mapping[str, Any]] = ()
    #: The input values of each row of `data` (same order), for quarantined rows' original_row.
    source_rows: pd.DataFrame | None = None


# --------------------------------------------------------------------------- pandera


@dataclass(frozen=True)
class _CheckRef:
    rule: str
    column: str | None
    severity: Severity
    rank: int


def _severity(meta: Any, key: str = SEVERITY_KEY, default: Severity = Severity.FAIL_RUN):
    if isinstance(meta, Mapping) and meta.get(key) is not None:
        return Severity(meta[key])
    return default


class _SchemaIndex:
    """Maps pandera failure cases back to the rule, column and severity the model declares."""

    def __init__(self, model: type[pa.DataFrameModel]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.schema = model.to_schema()
        self.column_checks: dict[tuple[str, int], _CheckRef] = {}
        self.column_meta: dict[str, Any] = {}
        rank = 0
        for name, column in self.schema.columns.items():
            meta = column.metadata or {}
            self.column_meta[name] = meta
            for i, chk in enumerate(column.checks):
                sev = _severity(chk.statistics, default=_severity(meta))
                self.column_checks[(name, i)] = _CheckRef(
                    chk.name or f"{name}:{chk}", name, sev, rank
                )
                rank += 1
        self.frame_checks = {
            i: _CheckRef(chk.name or f"check_{i}", None, _severity(chk.statistics), 1000 + i)
            for i, chk in enumerate(self.schema.checks)
        }
        self.columns_rank = {name: 500 + i for i, name in enumerate(self.schema.columns)}

    def resolve(self, context: str, column: Any, check: str, number: Any, case: Any) -> _CheckRef:
        has_number = number is not None and not (isinstance(number, float) and np.isnan(number))
        if context == "DataFrameSchema" and has_number:
            return self.frame_checks[int(number)]
        if context == "Column" and has_number and (column, int(number)) in self.column_checks:
            return self.column_checks[(column, int(number))]
        meta = self.column_meta.get(column, {})
        rank = self.columns_rank.get(column, 900)
        if check == "not_nullable":
            sev = _severity(meta, "nullable", _severity(meta))
            return _CheckRef(f"{column}:not_nullable", column, sev, rank)
        if check.startswith("dtype("):
            return _CheckRef(f"{column}:dtype", column, _severity(meta, "dtype"), rank)
        if check == "column_in_dataframe":
            missing = str(case)
            sev = _severity(self.column_meta.get(missing, {}), "missing")
            return _CheckRef("missing_column", missing, sev, -1)
        if check == "column_in_schema":
            return _CheckRef("unexpected_column", str(case), Severity.FAIL_RUN, -1)
        return _CheckRef(f"{column}:{check}", column, _severity(meta), rank)


_SCHEMA_INDEX: dict[type, _SchemaIndex] = {}


def _schema_index(model: type[pa.DataFrameModel]) -> _SchemaIndex:
    if model not in _SCHEMA_INDEX:
        _SCHEMA_INDEX[model] = _SchemaIndex(model)
    return _SCHEMA_INDEX[model]


def validate_with_pandera(model: type[pa.DataFrameModel], data: pd.DataFrame) -> pd.DataFrame:
    """Pandera lazy validation; the failure cases, each tagged with rule, column and severity.

    Row-level failures carry the row's position in `row`; schema-level ones (a missing
    column, a wrong dtype, a check that could not run) carry row = -1.
    """
    index = _schema_index(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            index.schema.validate(data, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return pd.DataFrame(
            columns=["row", "rule", "column", "severity", "rank", "failure_case", "check"]
        )
    refs = [
        index.resolve(ctx, col, str(chk), num, case)
        for ctx, col, chk, num, case in cases[
            ["schema_context", "column", "check", "check_number", "failure_case"]
        ].itertuples(index=False, name=None)
    ]
    rows = cases["index"].map(lambda v: -1 if v is None or pd.isna(v) else int(v))
    return pd.DataFrame(
        {
            "row": rows.to_numpy(dtype="int64"),
            "rule": [r.rule for r in refs],
            "column": [r.column for r in refs],
            "severity": [r.severity for r in refs],
            "rank": [r.rank for r in refs],
            "failure_case": cases["failure_case"].map(_short).to_numpy(),
            "check": cases["check"].astype(str).to_numpy(),
        }
    )


def _short(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)[:500]


# --------------------------------------------------------------------------- helpers


def _partition_dates(contract: DatasetContract, data: pd.DataFrame) -> pd.Series:
    values = pd.to_datetime(data[contract.partition_column])
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.dt.normalize()


def _period_end(contract: DatasetContract, day: date) -> pd.Timestamp:
    start = pd.Timestamp(day)
    if contract.grain == "monthly":
        return start + pd.offsets.MonthBegin(1)
    return start + pd.Timedelta(days=1)


def _original_rows(frame: pd.DataFrame) -> list[str]:
    return [
        json.dumps(dict(zip(frame.columns, values, strict=True)), sort_keys=True, default=str)
        for values in frame.itertuples(index=False, name=None)
    ]


def key_checksum(frame: pd.DataFrame, key: Sequence[str]) -> str:
    """Order-independent sha256 over the sorted hashes of the business keys."""
    if frame.empty:
        return "k1:empty"
    hashes = pd.util.hash_pandas_object(frame[list(key)], index=False).to_numpy()
    return "k1:" + hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()[:32]


# --------------------------------------------------------------------------- the gate


class _Collector:
    def __init__(self, window: PartitionWindow) -> None:
        self.window = window
        self.findings: list[Finding] = []
        self.quarantine: dict[int, tuple[int, str, str | None, str | None]] = {}

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def quarantine_rows(
        self, rows: np.ndarray, rank: int, rule: str, column: str | None, cases: Sequence[Any]
    ) -> None:
        """Remember each row's first failing rule (lowest rank), so it is quarantined once."""
        for row, case in zip(rows.tolist(), cases, strict=True):
            current = self.quarantine.get(row)
            if current is None or rank < current[0]:
                self.quarantine[row] = (rank, rule, column, _short(case))


def _row_rule_findings(
    col: _Collector,
    parts: pd.Series,
    rule: str,
    severity: Severity,
    column: str | None,
    failed_rows: np.ndarray,
    cases: Sequence[Any],
    checked_by_part: Mapping[date, int],
    rank: int,
    message: str,
) -> None:
    """Per-partition findings of a row-level rule, and quarantine when that is its severity."""
    failed_parts = (
        parts.iloc[failed_rows].dt.date if len(failed_rows) else pd.Series([], dtype=object)
    )
    by_part: dict[date, list[int]] = {}
    for pos, p in enumerate(failed_parts.tolist()):
        by_part.setdefault(p, []).append(pos)
    for p in col.window.partitions:
        hits = by_part.get(p, [])
        sample = tuple(str(_short(cases[i])) for i in hits[:SAMPLE_SIZE])
        col.add(
            Finding(
                rule,
                severity,
                p,
                passed=not hits,
                failed=len(hits),
                checked=int(checked_by_part.get(p, 0)),
                message=f"{len(hits)} row(s) {message}" if hits else "",
                column=column,
                sample=sample,
            )
        )
    if severity == Severity.QUARANTINE_RECORD and len(failed_rows):
        # The quarantine names the check itself (e.g. missing_case_id), not its group.
        reason = rule.removeprefix("schema:")
        col.quarantine_rows(failed_rows, rank, reason, column, cases)


def evaluate(inp: GateInput) -> GateResult:
    """Run every rule of the quality contract on the staged output and route the failures."""
    contract, quality, window = inp.contract, inp.quality, inp.window
    data = inp.data.reset_index(drop=True)
    col = _Collector(window)
    run_level: list[Finding] = []

    for issue in inp.landing_issues:
        extra = list(issue.get("extra_columns", []))
        if extra:
            run_level.append(
                Finding(
                    "landing_columns",
                    quality.landing_extra_column,
                    None,
                    passed=False,
                    failed=len(extra),
                    message=f"landing file {issue['file']} has unexpected column(s) {extra}, "
                    "which are ignored",
                    sample=tuple(extra[:SAMPLE_SIZE]),
                )
            )

    have_partition = contract.partition_column in data.columns
    parts = (
        _partition_dates(contract, data)
        if have_partition
        else pd.Series([], dtype="datetime64[ns]")
    )
    rows_by_part = (
        {d.date(): int(n) for d, n in parts.value_counts().items()} if have_partition else {}
    )

    # 1. The pandera model: row-level checks route by severity, schema-level ones fail.
    if quality.model is not None:
        cases = validate_with_pandera(quality.model, data)
        schema_level = cases[cases["row"] < 0]
        for (rule, column, severity), grp in schema_level.groupby(
            ["rule", "column", "severity"], sort=False, dropna=False
        ):
            sample = tuple(str(c) for c in grp["failure_case"].head(SAMPLE_SIZE))
            column = None if pd.isna(column) else column
            where = f"column {column}" if column else "the frame"
            if rule == "missing_column":
                what = f"column {column} is missing from the output"
            else:
                what = f"{where}: {grp['check'].iloc[0]} failed: {sample[:1]}"
                # A row check that could not run checked no row: nothing may pass unchecked,
                # whatever the check's own severity.
                severity = Severity.FAIL_RUN
            run_level.append(
                Finding(
                    "schema",
                    Severity(severity),
                    None,
                    passed=False,
                    failed=len(grp),
                    message=f"{rule}: {what}",
                    column=column,
                    sample=sample,
                )
            )
        row_level = cases[cases["row"] >= 0]
        # A data-frame check reports every column of a failing row: count the row once.
        row_level = row_level.drop_duplicates(["row", "rule"])
        if have_partition:
            for (rule, column, severity, rank), grp in row_level.groupby(
                ["rule", "column", "severity", "rank"], sort=True, dropna=False
            ):
                column = None if pd.isna(column) else column
                _row_rule_findings(
                    col,
                    parts,
                    f"schema:{rule}",
                    Severity(severity),
                    column,
                    grp["row"].to_numpy(),
                    grp["failure_case"].tolist(),
                    rows_by_part,
                    int(rank),
                    f"failed {rule}" + (f" on column {column}" if column else ""),
                )
            if row_level.empty:
                for p in window.partitions:
                    col.add(
                        Finding(
                            "schema", Severity.INFO, p, passed=True, checked=rows_by_part.get(p, 0)
                        )
                    )

    # Findings of schema-level failures (missing columns...) stop here: rules below need data.
    fatal = [f for f in run_level if f.severity == Severity.FAIL_RUN]
    if not have_partition:
        data = data.iloc[0:0]  # rows that cannot be placed in a partition are judged by none
    if fatal or not have_partition:
        if not have_partition and not fatal:
            run_level.append(
                Finding(
                    "schema",
                    Severity.FAIL_RUN,
                    None,
                    passed=False,
                    message=f"partition column {contract.partition_column} is missing",
                )
            )
        return _result(inp, data, parts, col, run_level, rows_by_part, decided_early=True)

    # 2. Dataset-level rules.
    for rule in quality.rules:
        if isinstance(rule, RowCount):
            for p in window.partitions:
                n = rows_by_part.get(p, 0)
                ok = n >= rule.min_rows and (rule.max_rows is None or n <= rule.max_rows)
                band = f"[{rule.min_rows}, {rule.max_rows if rule.max_rows is not None else '∞'}]"
                col.add(
                    Finding(
                        rule.name,
                        rule.severity,
                        p,
                        passed=ok,
                        failed=0 if ok else 1,
                        checked=n,
                        value=float(n),
                        message="" if ok else f"{n} row(s), expected {band}",
                    )
                )
        elif isinstance(rule, NullRate):
            nulls = data[rule.column].isna() if rule.column in data else None
            for p in window.partitions:
                mask = parts.to_numpy() == np.datetime64(p, "ns")
                n = int(mask.sum())
                k = int(nulls[mask].sum()) if nulls is not None else n
                frac = k / n if n else 0.0
                ok = rule.severity == Severity.INFO or frac <= rule.max_fraction
                col.add(
                    Finding(
                        rule.name,
                        rule.severity,
                        p,
                        passed=ok,
                        failed=0 if ok else k,
                        checked=n,
                        column=rule.column,
                        value=round(frac, 6),
                        message=""
                        if ok
                        else f"{frac:.2%} nulls in {rule.column}, "
                        f"more than {rule.max_fraction:.2%}",
                    )
                )
        elif isinstance(rule, Freshness):
            newest = pd.to_datetime(data[rule.column], utc=True).groupby(parts.to_numpy()).max()
            newest.index = [pd.Timestamp(t).date() for t in newest.index]
            for p in window.partitions:
                if p not in newest.index or pd.isna(newest[p]):
                    continue
                end = _period_end(contract, p).tz_localize("UTC")
                lag = end - newest[p]
                ok = lag <= pd.Timedelta(rule.max_lag)
                hours = lag / pd.Timedelta(hours=1)
                col.add(
                    Finding(
                        rule.name,
                        rule.severity,
                        p,
                        passed=ok,
                        failed=0 if ok else 1,
                        column=rule.column,
                        value=round(float(hours), 3),
                        message=""
                        if ok
                        else f"newest {rule.column} {newest[p]} is "
                        f"{hours:.1f} h before the end of the partition (max "
                        f"{pd.Timedelta(rule.max_lag) / pd.Timedelta(hours=1):.1f} h)",
                    )
                )
        elif isinstance(rule, UniqueKey):
            key = list(rule.columns or contract.business_key)
            dup = data.duplicated(key, keep="first").to_numpy()
            rows = np.flatnonzero(dup)
            cases = [
                "|".join(str(v) for v in values)
                for values in data.iloc[rows][key].itertuples(index=False, name=None)
            ]
            _row_rule_findings(
                col,
                parts,
                rule.name,
                rule.severity,
                ",".join(key),
                rows,
                cases,
                rows_by_part,
                2000,
                f"repeat business key {tuple(key)}",
            )
        elif isinstance(rule, Referential):
            _referential(col, inp, data, parts, rule, rows_by_part)
        elif isinstance(rule, Drift):
            _drift(col, inp, data, parts, rule)
        elif isinstance(rule, QuarantineRate):
            pass  # needs the quarantine outcome: applied in _result
    for tb in quality.time_bounds:
        values = pd.to_datetime(data[tb.column], utc=True).dt.tz_localize(None)
        start = parts
        if contract.grain == "monthly":
            end = start + pd.offsets.MonthBegin(1)
        else:
            end = start + pd.Timedelta(days=1)
        bad = ~((values >= start) & (values < end))
        rows = np.flatnonzero(bad.to_numpy())
        _row_rule_findings(
            col,
            parts,
            tb.name,
            tb.severity,
            tb.column,
            rows,
            data[tb.column].iloc[rows].astype(str).tolist(),
            rows_by_part,
            3000,
            f"have {tb.column} outside their partition",
        )
    return _result(inp, data, parts, col, run_level, rows_by_part, decided_early=False)


def _referential(
    col: _Collector,
    inp: GateInput,
    data: pd.DataFrame,
    parts: pd.Series,
    rule: Referential,
    rows_by_part: Mapping[date, int],
) -> None:
    pinned = inp.reference.get(rule.reference)
    if pinned is None:
        raise ValueError(
            f"dataset {inp.contract.name}: rule {rule.name} needs reference "
            f"{rule.reference!r}, which the contract does not pin"
        )
    # Rows are judged against the snapshot pinned for their own business date; dates that
    # share a snapshot version are judged together.
    day_values = parts.to_numpy(dtype="datetime64[ns]")
    by_version: dict[str, tuple[ReferenceSnapshot, set[date]]] = {}
    for d in sorted({pd.Timestamp(t).date() for t in np.unique(day_values)}):
        if d not in pinned:
            raise ValueError(
                f"dataset {inp.contract.name}: no {rule.reference} snapshot pinned for {d}"
            )
        snap = pinned[d]
        by_version.setdefault(snap.binding.version, (snap, set()))[1].add(d)
    known = np.zeros(len(data), dtype=bool)
    values = data[rule.column]
    for snap, on_days in by_version.values():
        ref = snap.data
        on = np.isin(day_values, np.array([np.datetime64(d, "ns") for d in on_days]))
        rows = np.flatnonzero(on & values.notna().to_numpy())
        if not len(rows):
            continue
        if rule.time_column is None:
            keys = pd.Index(ref[rule.key].dropna().astype(str).unique())
            known[rows] = values.iloc[rows].astype(str).isin(keys).to_numpy()
            continue
        probe = pd.DataFrame(
            {
                "_row": rows,
                "_key": values.iloc[rows].astype(str).to_numpy(),
                "_t": pd.to_datetime(data[rule.time_column].iloc[rows], utc=True)
                .dt.tz_localize(None)
                .to_numpy(),
            }
        )
        table = pd.DataFrame(
            {
                "_key": ref[rule.key].astype(str).to_numpy(),
                "_from": pd.to_datetime(ref[rule.valid_from]).to_numpy(),
                "_to": pd.to_datetime(ref[rule.valid_to]).fillna(pd.Timestamp.max).to_numpy(),
            }
        )
        matched = probe.merge(table, on="_key", how="inner")
        matched = matched[(matched["_from"] <= matched["_t"]) & (matched["_t"] < matched["_to"])]
        known[matched["_row"].to_numpy()] = True
    rows = np.flatnonzero(~known)
    _row_rule_findings(
        col,
        parts,
        rule.name,
        rule.severity,
        rule.column,
        rows,
        data[rule.column].iloc[rows].tolist(),
        rows_by_part,
        1500,
        f"have a {rule.column} unknown to reference {rule.reference}"
        + (f" at their {rule.time_column}" if rule.time_column else ""),
    )


def _drift(
    col: _Collector, inp: GateInput, data: pd.DataFrame, parts: pd.Series, rule: Drift
) -> None:
    published = inp.published
    if published is None or published.empty:
        return
    old_parts = _partition_dates(inp.contract, published).dt.date
    old = published[rule.column].groupby(old_parts.to_numpy()).sum()
    new = data[rule.column].groupby(parts.dt.date.to_numpy()).sum()
    for p in inp.window.partitions:
        if p not in old.index or (rule.closed_only and p not in inp.closed):
            continue
        before, after = float(old[p]), float(new.get(p, 0.0))
        change = abs(after - before)
        relative = change / abs(before) if before else (0.0 if change == 0 else float("inf"))
        ok = change <= rule.min_absolute_change or relative <= rule.max_relative_change
        col.add(
            Finding(
                rule.name,
                rule.severity,
                p,
                passed=ok,
                failed=0 if ok else 1,
                column=rule.column,
                value=round(relative, 6) if np.isfinite(relative) else None,
                message=""
                if ok
                else f"{rule.column} moves from {before:g} to "
                f"{after:g} ({relative:.1%}, more than {rule.max_relative_change:.1%})"
                + (" in a closed period" if p in inp.closed else ""),
            )
        )


def _control_totals(
    inp: GateInput, accepted: pd.DataFrame, accepted_parts: pd.Series
) -> tuple[dict[date, dict[str, dict[str, float]]], list[Finding]]:
    out: dict[date, dict[str, dict[str, float]]] = {p: {} for p in inp.window.partitions}
    findings: list[Finding] = []
    for ct in inp.quality.controls:
        source = inp.upstream.get(ct.upstream)
        if source is None:
            raise ValueError(
                f"dataset {inp.contract.name}: control total {ct.name} needs upstream "
                f"{ct.upstream!r}, which the asset does not read"
            )
        from ecm_assets.contracts.registry import contract_for

        up_contract = contract_for(ct.upstream)
        up_days = _partition_dates(up_contract, source)
        mask = np.ones(len(source), dtype=bool)
        for column, value in ct.upstream_filter:
            mask &= (source[column] == value).to_numpy()
        key = (
            up_days.dt.to_period("M").dt.start_time if inp.contract.grain == "monthly" else up_days
        )
        values = (
            source[ct.upstream_column] if ct.upstream_column else pd.Series(1, index=source.index)
        )
        totals_in = values[mask].groupby(key[mask].dt.date.to_numpy()).sum()
        totals_out = accepted[ct.output_column].groupby(accepted_parts.dt.date.to_numpy()).sum()
        for p in inp.window.partitions:
            t_in, t_out = float(totals_in.get(p, 0)), float(totals_out.get(p, 0))
            ok = abs(t_in - t_out) <= 1e-9 * max(1.0, abs(t_in))
            out[p][ct.name] = {"input": t_in, "output": t_out}
            findings.append(
                Finding(
                    ct.name,
                    ct.severity,
                    p,
                    passed=ok,
                    failed=0 if ok else 1,
                    column=ct.output_column,
                    value=t_out,
                    message=""
                    if ok
                    else f"control total {ct.name}: input {t_in:g} != "
                    f"output {t_out:g} (sum of {ct.output_column})",
                )
            )
    return out, findings


def _result(
    inp: GateInput,
    data: pd.DataFrame,
    parts: pd.Series,
    col: _Collector,
    run_level: list[Finding],
    rows_by_part: Mapping[date, int],
    *,
    decided_early: bool,
) -> GateResult:
    contract, quality, window = inp.contract, inp.quality, inp.window
    parse_rejects = inp.rejects if inp.rejects is not None else pd.DataFrame(columns=REJECT_COLUMNS)
    findings = list(col.findings)

    # Quarantined rows leave the output with their first failing rule as the reason.
    q_rows = np.array(sorted(col.quarantine), dtype="int64")
    if len(q_rows):
        chosen = [col.quarantine[r] for r in q_rows.tolist()]
        bad = data.iloc[q_rows]
        gate_q = pd.DataFrame(
            {
                "partition_date": parts.iloc[q_rows].to_numpy(),
                "source_file": bad["source_file"].astype(str).to_numpy()
                if "source_file" in bad
                else None,
                "source_line": bad["source_line"].astype("int64").to_numpy()
                if "source_line" in bad
                else None,
                "reason": [c[1] for c in chosen],
                "column_name": [c[2] for c in chosen],
                "failure_case": [c[3] for c in chosen],
                "original_row": _original_rows(
                    inp.source_rows.iloc[q_rows]
                    if inp.source_rows is not None and len(inp.source_rows) == len(data)
                    else bad
                ),
            }
        )
        keep = np.ones(len(data), dtype=bool)
        keep[q_rows] = False
        accepted = data[keep].reset_index(drop=True)
        accepted_parts = parts[keep].reset_index(drop=True)
    else:
        gate_q = pd.DataFrame(columns=REJECT_COLUMNS)
        accepted, accepted_parts = data, parts
    gate_q_by_part = (
        gate_q.groupby(pd.to_datetime(gate_q["partition_date"]).dt.date).size().to_dict()
        if len(gate_q)
        else {}
    )
    parse_by_part = (
        parse_rejects.groupby(pd.to_datetime(parse_rejects["partition_date"]).dt.date)
        .size()
        .to_dict()
        if len(parse_rejects)
        else {}
    )

    # Reconciliation: exact count identity, control totals, key checksum, time bounds.
    controls: dict[date, dict[str, dict[str, float]]] = {p: {} for p in window.partitions}
    if not decided_early:
        controls, control_findings = _control_totals(inp, accepted, accepted_parts)
        findings += control_findings
    counts = inp.counts
    per_partition: dict[str, Any] = {}
    accepted_by_part = (
        {d.date(): int(n) for d, n in accepted_parts.value_counts().items()}
        if len(accepted)
        else {}
    )
    accepted_days = accepted_parts.to_numpy(dtype="datetime64[ns]")
    for p in window.partitions:
        staged = rows_by_part.get(p, 0)
        gate_q_n = int(gate_q_by_part.get(p, 0))
        parse_n = int(parse_by_part.get(p, 0))
        acc = accepted_by_part.get(p, 0)
        if counts is not None and p in counts.index:
            row = counts.loc[p]
            read = int(row.get("read", staged + parse_n))
            duplicate = int(row.get("duplicate", 0))
            kept = int(row.get("kept", staged))
        else:
            read, duplicate, kept = staged + parse_n, 0, staged
        quarantined = parse_n + gate_q_n
        ok = read == acc + quarantined + duplicate and kept == staged
        # Compare raw datetime64 values: converting a million timestamps to Python dates
        # per partition was most of the gate's cost.
        mask = accepted_days == np.datetime64(p, "ns") if len(accepted) else np.zeros(0, bool)
        part_rows = accepted[mask] if len(accepted) else accepted
        entry: dict[str, Any] = {
            "input": read,
            "accepted": acc,
            "quarantined": quarantined,
            "quarantined_by_gate": gate_q_n,
            "rejected_at_parse": parse_n,
            "duplicate": duplicate,
            "identity": "input = accepted + quarantined + duplicate",
            "identity_holds": ok,
            "business_key_checksum": key_checksum(part_rows, contract.business_key),
            "control_totals": {k: v for k, v in controls.get(p, {}).items()},
        }
        for tb in quality.time_bounds:
            if tb.column in part_rows and len(part_rows):
                ts = pd.to_datetime(part_rows[tb.column], utc=True)
                entry[f"{tb.column}_min"] = ts.min().isoformat()
                entry[f"{tb.column}_max"] = ts.max().isoformat()
        per_partition[p.isoformat()] = entry
        findings.append(
            Finding(
                "reconciliation",
                quality.reconciliation,
                p,
                passed=ok,
                failed=0 if ok else 1,
                checked=read,
                value=float(acc),
                message=""
                if ok
                else f"input {read} != accepted {acc} + quarantined "
                f"{quarantined} + duplicate {duplicate} (transform kept {kept}, staged "
                f"{staged}): rows would be lost",
            )
        )
        for rule in quality.rules:
            if isinstance(rule, QuarantineRate):
                rate = quarantined / read if read else 0.0
                passed = rate <= rule.max_fraction
                findings.append(
                    Finding(
                        rule.name,
                        rule.severity,
                        p,
                        passed=passed,
                        failed=0 if passed else quarantined,
                        checked=read,
                        value=round(rate, 6),
                        message=""
                        if passed
                        else f"{quarantined} of {read} rows "
                        f"quarantined ({rate:.2%}), more than {rule.max_fraction:.2%}",
                    )
                )

    findings += run_level
    failures = [f for f in findings if not f.passed]
    blocked: dict[date, str] = {}
    if any(f.severity == Severity.FAIL_RUN for f in failures):
        decision = Decision.FAIL_RUN
    else:
        for f in failures:
            if f.severity == Severity.FAIL_PARTITION:
                targets = [f.partition] if f.partition else list(window.partitions)
                for p in targets:
                    blocked.setdefault(p, f"{f.rule}: {f.message}")
        if any(f.severity == Severity.MANUAL_REVIEW for f in failures):
            decision = Decision.MANUAL_REVIEW
        elif blocked:
            decision = Decision.FAIL_PARTITION
        elif any(f.severity == Severity.QUARANTINE_RECORD for f in failures) or len(parse_rejects):
            decision = Decision.QUARANTINE_RECORDS
        elif any(f.severity == Severity.WARN for f in failures):
            decision = Decision.PUBLISH_WITH_WARNING
        else:
            decision = Decision.PUBLISH
    if blocked and len(accepted):
        keep = ~accepted_parts.dt.date.isin(set(blocked)).to_numpy()
        accepted = accepted[keep].reset_index(drop=True)
    quarantined = pd.concat(
        [f for f in (parse_rejects[REJECT_COLUMNS], gate_q[REJECT_COLUMNS]) if len(f)]
        or [gate_q[REJECT_COLUMNS]],
        ignore_index=True,
    )
    totals = {
        "input_rows": sum(v["input"] for v in per_partition.values()),
        "accepted_rows": sum(v["accepted"] for v in per_partition.values()),
        "quarantined_rows": sum(v["quarantined"] for v in per_partition.values()),
        "duplicate_rows": sum(v["duplicate"] for v in per_partition.values()),
    }
    reconciliation = {
        "identity": "input = accepted + quarantined + duplicate",
        "status": "PASSED"
        if all(v["identity_holds"] for v in per_partition.values())
        else "BROKEN",
        "totals": totals,
        "per_partition": per_partition,
    }
    metrics = {k: float(v) for k, v in totals.items()}
    metrics["failed_checks"] = float(len(failures))
    return GateResult(
        decision=decision,
        accepted=accepted,
        quarantined=quarantined,
        blocked=blocked,
        findings=findings,
        reconciliation=reconciliation,
        metrics=metrics,
    )


def judge(
    dataset: Dataset,
    window: PartitionWindow,
    result: TransformResult,
    inputs: Mapping[str, Any],
    *,
    published: pd.DataFrame | None = None,
    closed: frozenset[date] = frozenset(),
) -> GateResult:
    """The gate on a transform's result, given the inputs the transform was called with."""
    contract = dataset.contract
    landing = inputs.get("landing")
    return evaluate(
        GateInput(
            contract=contract,
            quality=dataset.quality,
            window=window,
            data=result.data,
            rejects=result.rejects,
            counts=result.counts,
            reference={n: inputs[n] for n in contract.reference},
            upstream={u.dataset: inputs[u.dataset] for u in contract.upstream},
            published=published,
            closed=closed,
            source_rows=result.source_rows,
            landing_issues=landing.attrs.get("landing_issues", [])
            if isinstance(landing, pd.DataFrame)
            else (),
        )
    )


def failure_result(
    contract: DatasetContract,
    quality: QualityContract,
    window: PartitionWindow,
    rule: str,
    message: str,
    severity: Severity = Severity.FAIL_RUN,
) -> GateResult:
    """The gate's verdict when the input could not even be read into rows (e.g. a landing
    file lacks a required column): the run fails naming the rule, and nothing is published."""
    finding = Finding(rule, severity, None, passed=False, failed=1, message=message)
    return GateResult(
        decision=Decision.FAIL_RUN,
        accepted=pd.DataFrame(columns=contract.column_names),
        quarantined=pd.DataFrame(columns=REJECT_COLUMNS),
        blocked={},
        findings=[finding],
        reconciliation={"status": "NOT_REACHED", "identity": None, "per_partition": {}},
    )


__all__ = [
    "Decision",
    "Finding",
    "GateInput",
    "GateResult",
    "evaluate",
    "failure_result",
    "judge",
    "key_checksum",
    "validate_with_pandera",
]
