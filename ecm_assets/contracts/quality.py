"""Quality contract of a dataset: a pandera model plus dataset-level rules, each with a severity.

The severity of a check sits beside the check: on a pandera field through
`metadata=on_failure(...)`, on a custom pandera check through `statistics=on_failure(...)`,
and on a dataset-level rule as its `severity` field. The gate (ecm_assets.validation.gate)
routes every failure by that severity; nothing else decides what a failure does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

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


#: JSON types a JSONL landing value can have (`integer` is a number without a fraction).
JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array")
#: Meta column of raw landing rows: the JSON type of every value that was not a string or
#: null, as `;column=type;...` (null when all were), so the gate can judge JSON types after
#: the reader turned such values into text.
JSON_TYPES_COLUMN = "_json_types"


@dataclass(frozen=True)
class TextRule:
    """What a text value must look like to be published (spec: bad values never pass as data).

    Nulls and empty strings are the schema's business (nullable, missing_* checks); every
    other value is judged, first failure wins, each with its own quarantine reason:
    `<column>_json_type` (a JSONL value of another JSON type, e.g. an object rendered as
    text), `<column>_control_character` (NUL or another C0/C1 control), `<column>_too_long` /
    `<column>_too_short`, `<column>_untrimmed` (leading or trailing whitespace, with
    trim="reject"), `<column>_characters` (a character outside `characters`) and
    `<column>_pattern` (the whole value must match `pattern`).
    With trim="strip" padded values are stripped before any rule judges them.
    """

    column: str
    severity: Severity = Severity.QUARANTINE_RECORD
    min_length: int = 0
    max_length: int | None = None
    #: The characters a value may consist of (`<column>_characters` otherwise); checked on
    #: the bytes of the whole column at once, so much cheaper than an equivalent pattern.
    characters: str | None = None
    #: A regular expression the whole value must match (RE2 syntax, no backreferences).
    pattern: str | None = None
    trim: Literal["reject", "strip", "allow"] = "reject"
    control_characters: bool = False
    #: JSON types a value may have in a JSONL file; CSV values are always strings.
    json_types: tuple[str, ...] = ("string",)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.column}_values")
        if self.min_length < 0 or (
            self.max_length is not None and self.max_length < max(self.min_length, 1)
        ):
            raise ValueError(
                f"rule {self.name}: length bounds [{self.min_length}, {self.max_length}] are empty"
            )
        if self.trim not in ("reject", "strip", "allow"):
            raise ValueError(f"rule {self.name}: trim must be reject, strip or allow")
        unknown = set(self.json_types) - set(JSON_TYPES)
        if unknown or not self.json_types:
            raise ValueError(
                f"rule {self.name}: json_types {self.json_types} are not among {JSON_TYPES}"
            )
        if self.pattern is not None:
            re.compile(self.pattern)  # a typo fails at import, not in a run
        if self.characters is not None and not self.characters:
            raise ValueError(f"rule {self.name}: characters must not be empty")


@dataclass(frozen=True)
class TimestampRule:
    """How the text timestamps of a landing column are read and which ones are data.

    RFC 3339 / ISO 8601 with a zone (`Z`, `z` or an offset) is read as that instant. A value
    without a zone is read in `source_zone` when the source declares one; otherwise, with
    require_zone, it fails this rule (`<column>_without_zone`) instead of being taken as UTC.
    Years outside [min_year, max_year] are `<column>_year_out_of_range`, not unparseable.
    """

    column: str
    severity: Severity = Severity.QUARANTINE_RECORD
    require_zone: bool = True
    #: IANA zone of values that carry no offset (e.g. "Europe/Berlin"); None: none declared.
    source_zone: str | None = None
    min_year: int = 1900
    max_year: int = 2200
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.column}_zone")
        if self.min_year > self.max_year:
            raise ValueError(f"rule {self.name}: min_year {self.min_year} > {self.max_year}")
        if self.source_zone is not None:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.source_zone)  # an unknown zone fails at import, not in a run


ValueRule = TextRule | TimestampRule

DatasetRule = RowCount | NullRate | Freshness | UniqueKey | Referential | Drift | QuarantineRate


@dataclass(frozen=True)
class QualityContract:
    """All the gate knows about a dataset: its row schema, dataset rules and input rules."""

    model: type[pa.DataFrameModel] | None = None
    rules: tuple[DatasetRule, ...] = ()
    controls: tuple[ControlTotal, ...] = ()
    time_bounds: tuple[TimeBound, ...] = ()
    #: Declared value rules per column: text shape and timestamp zones.
    values: tuple[ValueRule, ...] = ()
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
        names += [v.name for v in self.values]
        names += ["reconciliation", "landing_columns", "landing_encoding"]
        return list(dict.fromkeys(names))

    def timestamp_rule(self, column: str | None) -> TimestampRule | None:
        """The declared reading of a timestamp column (None: RFC 3339 read as it is)."""
        for rule in self.values:
            if isinstance(rule, TimestampRule) and rule.column == column:
                return rule
        return None


NO_QUALITY = QualityContract()
