"""Quality contract of a dataset: a pandera model plus dataset-level rules, each with a severity.

The severity of a check sits beside the check: on a pandera field through
`metadata=on_failure(...)`, on a custom pandera check through `statistics=on_failure(...)`,
and on a dataset-level rule as its `severity` field. The gate (ecm_assets.validation.gate)
routes every failure by that severity; nothing else decides what a failure does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pandera.pandas as pa


class Severity(StrEnum):
    """What a failed check does to its rows, its partition and its run (spec section 18)."""

    INFO = "INFO"  # recorded as a metric
    WARN = "WARN"  # published, with a warning
    QUARANTINE_RECORD = "QUARANTINE_RECORD"  # failing rows quarantined, the rest published
    FAIL_PARTITION = "FAIL_PARTITION"  # that partition is not published
    FAIL_RUN = "FAIL_RUN"  # nothing of the run is published
    MANUAL_REVIEW = "MANUAL_REVIEW"  # the whole output is held for a human

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def blocks(self) -> bool:
        """Whether a failure at this severity keeps data from being published as is."""
        return self.rank >= _RANK[Severity.FAIL_PARTITION]


_RANK = {s: i for i, s in enumerate(Severity)}

#: Key under which a pandera field or check carries its severity.
SEVERITY_KEY = "ecm_severity"


def on_failure(severity: Severity, **extra: Any) -> dict[str, Any]:
    """Severity annotation for `pa.Field(metadata=...)` or a custom check's `statistics=`.

    A field may also set `missing=` (column absent) and `dtype=` (wrong type); both default
    to FAIL_RUN, since they mean the transform or its input broke its contract.
    """
    return {SEVERITY_KEY: Severity(severity), **extra}


@dataclass(frozen=True)
class RowCount:
    """Rows per partition must lie in [min_rows, max_rows]."""

    severity: Severity
    min_rows: int = 1
    max_rows: int | None = None
    name: str = "row_count"


@dataclass(frozen=True)
class NullRate:
    """Share of nulls in a column per partition; INFO records it, a higher severity caps it."""

    column: str
    severity: Severity
    max_fraction: float = 0.0

    @property
    def name(self) -> str:
        return f"null_rate_{self.column}"


@dataclass(frozen=True)
class Freshness:
    """The newest value of `column` in a partition lies within `max_lag` of the partition's end.

    Measured against the business date, not the wall clock, so a rerun judges the same way.
    """

    column: str
    max_lag: timedelta
    severity: Severity
    name: str = "freshness"


@dataclass(frozen=True)
class UniqueKey:
    """No duplicate business key in the output (defaults to the contract's business key)."""

    severity: Severity
    columns: tuple[str, ...] = ()
    name: str = "duplicate_key"


@dataclass(frozen=True)
class Referential:
    """Values of `column` must exist in the reference snapshot pinned for the row's date.

    With `time_column`, the reference row must also be valid at that time
    (`valid_from <= t < valid_to`, an empty valid_to meaning still valid).
    """

    column: str
    reference: str
    key: str
    severity: Severity
    name: str = ""
    time_column: str | None = None
    valid_from: str = "valid_from"
    valid_to: str = "valid_to"

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"referential_{self.column}")


@dataclass(frozen=True)
class Drift:
    """How far the partition total of `column` may move from what is published now.

    `closed_only` limits the rule to closed periods, i.e. restatements.
    """

    column: str
    max_relative_change: float
    severity: Severity
    closed_only: bool = False
    min_absolute_change: float = 0.0

    @property
    def name(self) -> str:
        return f"drift_{self.column}"


@dataclass(frozen=True)
class QuarantineRate:
    """A partition quarantining more than this share of its rows escalates to `severity`."""

    max_fraction: float
    severity: Severity = Severity.FAIL_PARTITION
    name: str = "quarantine_rate"


@dataclass(frozen=True)
class ControlTotal:
    """Sum of `output_column` per partition equals the matching total of an upstream input.

    This is how a derived dataset reconciles with the upstream rows it read (it has no
    `read` count for the count identity); a mismatch fails with `severity`.

    The upstream total sums `upstream_column` (or counts rows when None) over the rows whose
    `upstream_filter` columns equal the given values, per output partition.
    """

    name: str
    output_column: str
    upstream: str
    upstream_column: str | None = None
    upstream_filter: tuple[tuple[str, str], ...] = ()
    severity: Severity = Severity.FAIL_RUN


@dataclass(frozen=True)
class TimeBound:
    """Values of `column` must fall inside the row's own partition (daily day or month)."""

    column: str
    severity: Severity = Severity.FAIL_RUN
    name: str = "event_time_in_partition"


DatasetRule = RowCount | NullRate | Freshness | UniqueKey | Referential | Drift | QuarantineRate


@dataclass(frozen=True)
class QualityContract:
    """All the gate knows about a dataset: its row schema, dataset rules and input rules."""

    model: type[pa.DataFrameModel] | None = None
    rules: tuple[DatasetRule, ...] = ()
    controls: tuple[ControlTotal, ...] = ()
    time_bounds: tuple[TimeBound, ...] = ()
    #: A landing file carrying columns the contract does not know (they are ignored).
    landing_extra_column: Severity = Severity.WARN
    #: Counts that do not reconcile (input != accepted + quarantined + duplicate + blocked).
    reconciliation: Severity = Severity.FAIL_RUN

    def rule_names(self) -> list[str]:
        """Names of every check the gate can report, in a stable order (asset check names)."""
        names: list[str] = []
        if self.model is not None:
            names.append("schema")
        names += [rule.name for rule in self.rules]
        names += [c.name for c in self.controls]
        names += [t.name for t in self.time_bounds]
        names += ["reconciliation", "landing_columns", "landing_encoding"]
        return list(dict.fromkeys(names))


NO_QUALITY = QualityContract()
