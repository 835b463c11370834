"""The quality gate: judge a run's staged output and route every failure by its severity.

Pure: DataFrames and contracts in, a GateResult out; no Dagster, no warehouse. It runs after
the transform and before the publish IO manager makes anything visible, so its decision is
what gets published: the accepted rows, the quarantined rows with their reasons, the
partitions it blocks, or nothing (FAIL_RUN) or everything held (MANUAL_REVIEW).

Evidence: one Finding per rule and partition (the asset checks), and a reconciliation record
per partition (the manifest) whose identity input = accepted + quarantined + duplicate +
blocked must hold exactly, or the run fails; a derived dataset reconciles by its control
totals instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc
from pandas.api.types import infer_dtype, is_datetime64_any_dtype
from pandas.core.util.hashing import combine_hash_arrays
from pandera.errors import SchemaErrors

from ecm_assets.contracts.boundaries import ReferenceSnapshot
from ecm_assets.contracts.dataset import Dataset, DatasetContract, partition_key
from ecm_assets.contracts.quality import (
    JSON_TYPES_COLUMN,
    SEVERITY_KEY,
    Drift,
    Freshness,
    NullRate,
    QualityContract,
    QuarantineRate,
    Referential,
    RowCount,
    Severity,
    TextRule,
    TimestampRule,
    UniqueKey,
)
from ecm_assets.contracts.transform import (
    REJECT_COLUMNS,
    PartitionWindow,
    TransformResult,
    UpstreamRelation,
    has_zone,
    text_array,
)

#: The count identity every partition of a dataset that reports what it read must satisfy.
IDENTITY = "input = accepted + quarantined + duplicate + blocked"
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
        out["partition"] = partition_key(self.partition) if self.partition else None
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
    #: Rows that passed the row rules but lie in a blocked partition (REJECT_COLUMNS, reason
    #: `partition_blocked`): not published, so kept as evidence with the blocking rule.
    blocked_rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REJECT_COLUMNS))

    @property
    def rejects(self) -> pd.DataFrame:
        """Every row that is not published, with its reason: quarantined, then blocked."""
        if not len(self.blocked_rows):
            return self.quarantined
        if not len(self.quarantined):
            return self.blocked_rows
        return pd.concat([self.quarantined, self.blocked_rows], ignore_index=True)

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
            where = partition_key(f.partition) if f.partition else "run"
            lines.append(f"{f.severity} {f.rule} [{where}]: {f.message}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The manifest's `quality` record."""
        return {
            "decision": str(self.decision),
            "blocked_partitions": {
                partition_key(d): why for d, why in sorted(self.blocked.items())
            },
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
    upstream: Mapping[str, pd.DataFrame | UpstreamRelation] = field(default_factory=dict)
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
        #: `Series[str]` columns: pandera checks their dtype element by element in Python.
        self.str_columns = tuple(
            name for name, col in self.schema.columns.items() if str(col.dtype) == "str"
        )
        self._without_dtype: dict[frozenset[str], pa.DataFrameSchema] = {}

    def schema_for(self, data: pd.DataFrame) -> pa.DataFrameSchema:
        """The schema, minus the dtype check of each `Series[str]` column whose values one
        vectorized pass (pandas' C-level infer_dtype) already found to be all strings or
        nulls: pandera's own check of it (`isinstance(x, str)` per element) could only pass.
        A column with any other value keeps pandera's check and its failure cases."""
        done = frozenset(
            name
            for name in self.str_columns
            if name in data.columns
            and pd.api.types.infer_dtype(data[name], skipna=True) in ("string", "empty")
        )
        if not done:
            return self.schema
        if done not in self._without_dtype:
            self._without_dtype[done] = self.schema.update_columns(
                {name: {"dtype": None} for name in done}
            )
        return self._without_dtype[done]

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
            index.schema_for(data).validate(data, lazy=True)
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


def _to_datetime(values: pd.Series, *, utc: bool = False) -> pd.Series:
    """pd.to_datetime(values, utc=utc), without its caching pass (a hash of every value)
    when the column holds datetimes already."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC") if utc else values
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return values.dt.tz_localize("UTC") if utc else values
    return pd.to_datetime(values, utc=utc)


def _partition_dates(contract: DatasetContract, data: pd.DataFrame) -> pd.Series:
    values = _to_datetime(data[contract.partition_column])
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if _at_midnight(values):
        return values  # already normalized: dt.normalize() would return the same values
    return values.dt.normalize()


def _at_midnight(values: pd.Series) -> bool:
    """Whether every value of a naive datetime64 series is NaT or exactly midnight."""
    array = values.to_numpy()
    if array.dtype.kind != "M":
        return False
    unit, count = np.datetime_data(array.dtype)
    per_day = np.timedelta64(1, "D") // np.timedelta64(count, unit)
    ticks = array.view("i8")
    return bool(((ticks % per_day == 0) | np.isnat(array)).all())


def _period_end(contract: DatasetContract, day: date) -> pd.Timestamp:
    """The UTC instant a partition's period ends: the next local midnight (or month start) in
    the contract's business-day zone; an hourly partition is its UTC start plus an hour."""
    start = pd.Timestamp(day)
    if contract.grain == "hourly":  # the hour's UTC start: it ends an hour later, in UTC
        return (start + pd.Timedelta(hours=1)).tz_localize("UTC")
    step = pd.offsets.MonthBegin(1) if contract.grain == "monthly" else pd.Timedelta(days=1)
    end = (start + step).tz_localize(
        contract.timezone, ambiguous=False, nonexistent="shift_forward"
    )
    return end.tz_convert("UTC")


#: json.dumps(..., sort_keys=True, default=str), built once instead of once per value.
_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _json_value(value: Any) -> str:
    """`value` as json.dumps(value, sort_keys=True, default=str) writes it inside a row."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if isinstance(value, pd.Timestamp) or value is pd.NaT:
        return encode_basestring_ascii(str(value))  # what default=str makes of it
    return _JSON.encode(value)


def _json_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
#: Seconds since the epoch of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.
_FOUR_DIGIT_YEARS = (-62135596800, 253402300799)


def _timestamp_strings(values: pd.Series) -> tuple[np.ndarray, list[str]] | None:
    """str() of each value as a Timestamp ("NaT" when missing) for a naive or UTC datetime
    column, formatted with numpy once per distinct value: (codes, texts), the text of row i
    being texts[codes[i]]. None for any other column."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        if str(dtype.tz) != "UTC":
            return None
        suffix = "+00:00"
    elif isinstance(dtype, np.dtype) and dtype.kind == "M":
        suffix = ""
    else:
        return None
    array = values.array
    per_second = _TICKS_PER_SECOND.get(array.unit)
    if per_second is None:
        return None
    codes, distinct = pd.factorize(array.asi8)  # NaT is the smallest int64
    missing = distinct == np.iinfo(np.int64).min
    ticks = np.where(missing, 0, distinct)
    seconds = np.floor_divide(ticks, per_second)
    if len(seconds) and (
        seconds.min() < _FOUR_DIGIT_YEARS[0] or seconds.max() > _FOUR_DIGIT_YEARS[1]
    ):
        return None
    nanos = (ticks - seconds * per_second) * (10**9 // per_second)
    stamps = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    texts = []
    for stamp, ns, na in zip(stamps.tolist(), nanos.tolist(), missing.tolist(), strict=True):
        if na:
            texts.append("NaT")
        elif ns == 0:
            texts.append(f"{stamp[:10]} {stamp[11:]}{suffix}")
        elif ns % 1000 == 0:
            texts.append(f"{stamp[:10]} {stamp[11:]}.{ns // 1000:06d}{suffix}")
        else:
            texts.append(f"{stamp[:10]} {stamp[11:]}.{ns:09d}{suffix}")
    return codes, texts


def _json_column(values: pd.Series) -> list[str]:
    """_json_value of each value of the column, as iterating the column yields them."""
    dtype = values.dtype
    if isinstance(dtype, pd.ArrowDtype | pd.StringDtype) and pd.api.types.is_string_dtype(dtype):
        # Arrow-backed text (the landing reader's): nulls are JSON null, as None would be.
        array = values.to_numpy(dtype=object, na_value=None)
        return [encode_basestring_ascii(v) if v is not None else "null" for v in array]
    if isinstance(dtype, np.dtype):
        if dtype.kind == "O":
            array = values.to_numpy()
            if infer_dtype(array, skipna=False) == "string":
                return list(map(encode_basestring_ascii, array))
            return list(map(_json_value, array))
        if dtype.kind in "iu":
            return [int.__repr__(v) for v in values.tolist()]
        if dtype.kind == "b":
            return ["true" if v else "false" for v in values.tolist()]
        if dtype.kind == "f":
            return [_json_float(v) for v in values.tolist()]
    stamps = _timestamp_strings(values)
    if stamps is not None:
        codes, texts = stamps
        encoded = np.array([encode_basestring_ascii(t) for t in texts], dtype=object)
        return encoded[codes].tolist()
    return [_json_value(v) for v in values]


def _original_rows(frame: pd.DataFrame) -> list[str]:
    """Each row as json.dumps(dict(zip(columns, row)), sort_keys=True, default=str).

    Built column by column (each column converted in one go, its key encoded once), then
    joined per row: the same text as dumping each row's dict, at a fraction of the cost.
    """
    columns = list(frame.columns)
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        return [
            json.dumps(dict(zip(frame.columns, values, strict=True)), sort_keys=True, default=str)
            for values in frame.itertuples(index=False, name=None)
        ]
    if not len(frame):
        return []
    if not columns:
        return ["{}"] * len(frame)
    order = sorted(range(len(columns)), key=columns.__getitem__)
    # One template per frame, '{"a": %s, "b": %s}', filled in once per row.
    template = (
        "{"
        + ", ".join(encode_basestring_ascii(columns[i]).replace("%", "%%") + ": %s" for i in order)
        + "}"
    )
    fields = [_json_column(frame.iloc[:, i]) for i in order]
    return [template % values for values in zip(*fields, strict=True)]


def key_checksum(frame: pd.DataFrame, key: Sequence[str]) -> str:
    """Order-independent sha256 over the sorted hashes of the business keys."""
    if frame.empty:
        return "k1:empty"
    hashes = pd.util.hash_pandas_object(frame[list(key)], index=False).to_numpy()
    return _checksum_of(hashes)


def _checksum_of(hashes: np.ndarray) -> str:
    if not len(hashes):
        return "k1:empty"
    return "k1:" + hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()[:32]


def _key_hashes(
    data: pd.DataFrame, key: Sequence[str], parts: _Parts | None = None
) -> tuple[np.ndarray, bool] | None:
    """Row hashes of `key` equal to hash_pandas_object(frame[key], index=False) for any subset
    `frame` of the rows, computed once for all rows; and whether equal hashes are implied by
    equal keys as DataFrame.duplicated sees them (false for float columns: -0.0 == 0.0).

    None when that cannot be promised: a key column is missing, or an object column holds
    values other than strings (hash_pandas_object factorizes object columns first, so such a
    value's hash may depend on the rows hashed with it). Callers then hash each subset.
    """
    if not key or any(k not in data.columns for k in key) or len(set(key)) != len(key):
        return None
    arrays = []
    exact = True
    for k in key:
        series = data[k]
        dtype = series.dtype
        if parts is not None and k == parts.column:
            # The partition column holds a few distinct days: hash those, then spread them.
            days = np.append(parts.days, np.datetime64("NaT", "ns"))
            arrays.append(pd.util.hash_array(days)[parts.codes])
        elif (isinstance(dtype, np.dtype) and dtype.kind == "O") or _arrow_text(dtype):
            # Arrow-backed text: hash_pandas_object hashes what _values_for_factorize gives,
            # the values as an object array with None for a null, exactly what this hashes.
            values = (
                series.to_numpy()
                if isinstance(dtype, np.dtype)
                else series.to_numpy(object, na_value=None)
            )
            # Without nulls, hashing the strings directly gives what factorizing first gives
            # (the default, much slower for mostly unique keys); nulls hash differently then.
            plain = infer_dtype(values, skipna=False) == "string"
            if not plain and infer_dtype(values, skipna=True) not in ("string", "empty"):
                return None
            arrays.append(pd.util.hash_array(values, categorize=not plain))
        elif isinstance(dtype, pd.DatetimeTZDtype) or (
            isinstance(dtype, np.dtype) and dtype.kind in "biufmM"
        ):
            # What hash_pandas_object hashes: the datetime arrays themselves, else the ndarray.
            values = series.array if dtype.kind in "mM" else series.to_numpy()
            arrays.append(pd.util.hash_array(values))
            exact = exact and dtype.kind != "f"
        else:
            return None
    hashes = combine_hash_arrays(iter(arrays), len(arrays))
    return hashes.astype("uint64", copy=False), exact


def _arrow_text(dtype: Any) -> bool:
    """pandas' Arrow-backed string dtypes (ArrowDtype(string/large_string), string[pyarrow])."""
    if isinstance(dtype, pd.ArrowDtype):
        return pa_arrow.types.is_string(dtype.pyarrow_dtype) or pa_arrow.types.is_large_string(
            dtype.pyarrow_dtype
        )
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"


def _repeated(hashes: np.ndarray) -> np.ndarray:
    """Positions whose hash occurs more than once (candidates for a duplicate key)."""
    ordered = np.sort(hashes)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(hashes, ordered[1:][same]))


class _Parts:
    """The partition of every row, factorized once and shared by the rules and the manifest."""

    def __init__(
        self, contract: DatasetContract, data: pd.DataFrame, window: PartitionWindow
    ) -> None:
        if contract.grain not in ("daily", "monthly"):
            self._by_value(contract, data, window)
            return
        if contract.partition_column in data.columns:
            values = _to_datetime(data[contract.partition_column])
            if getattr(values.dt, "tz", None) is not None:
                values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            values = pd.Series([], dtype="datetime64[ns]")
        raw = values.to_numpy(dtype="datetime64[ns]")
        codes, days, self.runs = _factorize_days(raw)
        normalized = not _at_midnight(pd.Series(days))
        if not normalized:  # as _partition_dates: already normalized
            self.series, self.values = values, raw
        else:
            self.series = values.dt.normalize()
            self.values = self.series.to_numpy(dtype="datetime64[ns]")
            days, inverse = np.unique(pd.DatetimeIndex(days).normalize(), return_inverse=True)
            days = np.asarray(days, dtype="datetime64[ns]")
            codes = np.where(codes >= 0, inverse.reshape(-1)[codes], -1)
            self.runs = None  # two times of one day may lie apart
        self.codes = codes  # index into self.days, -1 for NaT
        self.days = days
        self.dates = [pd.Timestamp(d).date() for d in self.days]
        if self.runs is not None:
            counts, self.has_nat = np.diff(self.runs), False
        else:
            counts = np.bincount(codes[codes >= 0], minlength=len(self.days))
            self.has_nat = bool(len(codes)) and bool((codes < 0).any())
        lookup = self._map_window(window, counts)
        #: Index into window.partitions, -1 for rows outside the window.
        self.window_codes = (
            np.repeat(lookup[:-1], counts) if self.runs is not None else lookup[codes]
        )
        #: The partition column as it is, when self.values are its values (no conversion).
        self.column = (
            contract.partition_column
            if contract.partition_column in data.columns
            and data[contract.partition_column].dtype == np.dtype("datetime64[ns]")
            and not normalized
            else None
        )

    def _by_value(
        self, contract: DatasetContract, data: pd.DataFrame, window: PartitionWindow
    ) -> None:
        """Hourly, list and hash partitions: each row's partition is its column's value (an
        hour, or a key), factorized as it is; nothing is normalized to a day."""
        pcol = contract.partition_column
        column = data[pcol] if pcol in data.columns else pd.Series([], dtype=object)
        if contract.grain == "hourly":
            # Stored hours are UTC instants (ZonedHour): aware values (mixed offsets too, as
            # on a fall-back night) are converted; naive ones are UTC already.
            values = _to_datetime(column, utc=True).dt.tz_localize(None)
            self.series = values.astype("datetime64[ns]")
            self.values = self.series.to_numpy()
            codes, uniques = pd.factorize(self.values)
            self.days = np.asarray(uniques, dtype="datetime64[ns]")
            self.dates = [contract.hour(pd.Timestamp(d).to_pydatetime()) for d in self.days]
        else:
            self.series = column.astype(object).where(column.notna(), None)
            self.values = self.series.to_numpy(dtype=object)
            codes, uniques = pd.factorize(self.values)
            self.days = np.asarray(uniques, dtype=object)
            self.dates = [str(d) for d in self.days]
        self.codes = np.asarray(codes, dtype=np.int64)
        self.runs = None
        self.column = None
        counts = np.bincount(self.codes[self.codes >= 0], minlength=len(self.days))
        self.has_nat = bool(len(self.codes)) and bool((self.codes < 0).any())
        self.window_codes = self._map_window(window, counts)[self.codes]

    def _map_window(self, window: PartitionWindow, counts: np.ndarray) -> np.ndarray:
        """Row counts per partition and the window position of each factorized partition;
        returns that position per code (-1 outside the window, and for code -1 = missing)."""
        self.rows_by_part = {d: int(n) for d, n in zip(self.dates, counts.tolist(), strict=True)}
        position = {p: i for i, p in enumerate(window.partitions)}
        self.day_of_window = np.full(len(window.partitions), -1, dtype=np.int64)
        for k, d in enumerate(self.dates):
            if d in position:
                self.day_of_window[position[d]] = k
        self.size = len(window.partitions)
        return np.array([position.get(d, -1) for d in self.dates] + [-1], dtype=np.int64)

    def groups(self, keep: np.ndarray | None = None) -> list[np.ndarray]:
        """Row positions (ascending) of each window partition, optionally only `keep` rows."""
        if self.runs is not None:  # rows sorted by partition: each one is a range of rows
            out = []
            for k in self.day_of_window.tolist():
                if k < 0:
                    out.append(np.zeros(0, dtype=np.int64))
                    continue
                lo, hi = int(self.runs[k]), int(self.runs[k + 1])
                out.append(np.arange(lo, hi) if keep is None else lo + np.flatnonzero(keep[lo:hi]))
            return out
        return _group(
            self.window_codes if keep is None else np.where(keep, self.window_codes, -1), self.size
        )


def _group(codes: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions (ascending) of each code 0..size-1 (-1: none)."""
    order = np.argsort(codes.astype(np.int16 if size < 2**15 else np.int64), kind="stable")
    counts = np.bincount(codes + 1, minlength=size + 1)
    return np.split(order, np.cumsum(counts)[:-1])[1:]


def _factorize_days(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """pd.factorize(values) (codes, uniques) and, when the values are sorted (as transforms
    write them) the start of each value's run of rows (plus the end), found without hashing."""
    n = len(values)
    if n and not np.isnat(values[0]) and bool((values[1:] >= values[:-1]).all()):
        starts = np.flatnonzero(values[1:] != values[:-1]) + 1
        runs = np.concatenate([[0], starts, [n]])
        codes = np.repeat(np.arange(len(runs) - 1), np.diff(runs))
        return codes, values[runs[:-1]], runs
    codes, days = pd.factorize(values)
    return codes, np.asarray(days, dtype="datetime64[ns]"), None


class _Work:
    """Per-call caches: each timestamp column is converted once, each key hashed once."""

    def __init__(self, data: pd.DataFrame, parts: _Parts) -> None:
        self.data = data
        self.parts = parts
        self._utc: dict[str, pd.Series] = {}
        self._naive: dict[str, pd.Series] = {}
        self._hashes: dict[tuple[str, ...], tuple[np.ndarray, bool] | None] = {}

    def utc(self, column: str) -> pd.Series:
        """pd.to_datetime(data[column], utc=True)."""
        if column not in self._utc:
            self._utc[column] = _to_datetime(self.data[column], utc=True)
        return self._utc[column]

    def naive_utc(self, column: str) -> pd.Series:
        """pd.to_datetime(data[column], utc=True).dt.tz_localize(None)."""
        if column not in self._naive:
            self._naive[column] = self.utc(column).dt.tz_localize(None)
        return self._naive[column]

    def typed(self, column: str) -> bool:
        """Whether the column holds datetimes already, so converting any subset of its rows
        gives the same values as converting them all (no format inference on strings)."""
        return is_datetime64_any_dtype(self.data[column].dtype)

    def key_hashes(self, key: Sequence[str]) -> tuple[np.ndarray, bool] | None:
        key = tuple(key)
        if key not in self._hashes:
            self._hashes[key] = _key_hashes(self.data, key, self.parts)
        return self._hashes[key]


# --------------------------------------------------------------------------- the gate


class _Collector:
    def __init__(self, window: PartitionWindow) -> None:
        self.window = window
        self.findings: list[Finding] = []
        self._batches: list[tuple[np.ndarray, int, str, str | None, Sequence[Any]]] = []
        self._resolved: tuple[np.ndarray, list[tuple[int, str, str | None, str | None]]] | None
        self._resolved = None

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def quarantine_rows(
        self, rows: np.ndarray, rank: int, rule: str, column: str | None, cases: Sequence[Any]
    ) -> None:
        """Remember each row's first failing rule (lowest rank), so it is quarantined once."""
        if len(rows) != len(cases):
            raise ValueError("every quarantined row needs its failure case")
        self._batches.append((np.asarray(rows, dtype=np.int64), rank, rule, column, cases))
        self._resolved = None

    def quarantine(self) -> tuple[np.ndarray, list[tuple[int, str, str | None, str | None]]]:
        """The quarantined rows (ascending) and for each (rank, rule, column, failure case) of
        its lowest-ranked rule; between rules of equal rank, the one reported first."""
        if self._resolved is None:
            batches = [b for b in self._batches if len(b[0])]
            if not batches:
                self._resolved = (np.zeros(0, dtype=np.int64), [])
                return self._resolved
            rows = np.concatenate([b[0] for b in batches])
            ranks = np.concatenate([np.full(len(b[0]), b[1], dtype=np.int64) for b in batches])
            which = np.concatenate(
                [np.full(len(b[0]), i, dtype=np.int64) for i, b in enumerate(batches)]
            )
            where = np.concatenate([np.arange(len(b[0])) for b in batches])
            order = np.lexsort((np.arange(len(rows)), ranks, rows))
            first = np.ones(len(order), dtype=bool)
            first[1:] = rows[order[1:]] != rows[order[:-1]]
            pick = order[first]
            chosen = []
            for b, i in zip(which[pick].tolist(), where[pick].tolist(), strict=True):
                _, rank, rule, column, cases = batches[b]
                chosen.append((rank, rule, column, _short(cases[i])))
            self._resolved = (rows[pick], chosen)
        return self._resolved


def _row_rule_findings(
    col: _Collector,
    parts: _Parts,
    rule: str,
    severity: Severity,
    column: str | None,
    failed_rows: np.ndarray,
    cases: Sequence[Any],
    rank: int,
    message: str,
) -> None:
    """Per-partition findings of a row-level rule, and quarantine when that is its severity."""
    # Positions into failed_rows (and cases) of each window partition's failures, in order.
    by_part = _group(parts.window_codes[failed_rows], parts.size)
    for p, hits in zip(col.window.partitions, by_part, strict=True):
        sample = tuple(str(_short(cases[i])) for i in hits[:SAMPLE_SIZE].tolist())
        col.add(
            Finding(
                rule,
                severity,
                p,
                passed=not len(hits),
                failed=len(hits),
                checked=int(parts.rows_by_part.get(p, 0)),
                message=f"{len(hits)} row(s) {message}" if len(hits) else "",
                column=column,
                sample=sample,
            )
        )
    outside = int((parts.window_codes[failed_rows] < 0).sum())
    if outside:
        # Not lost: reported for the run (the partition_boundary finding fails it).
        col.add(
            Finding(
                rule,
                severity,
                None,
                passed=False,
                failed=outside,
                message=f"{outside} row(s) outside the run's partitions or without a "
                f"partition value {message}",
                column=column,
            )
        )
    if severity == Severity.QUARANTINE_RECORD and len(failed_rows):
        # The quarantine names the check itself (e.g. missing_case_id), not its group.
        reason = rule.removeprefix("schema:")
        col.quarantine_rows(failed_rows, rank, reason, column, cases)


def evaluate(inp: GateInput) -> GateResult:
    """Run every rule of the quality contract on the staged output and route the failures."""
    contract, quality, window = inp.contract, inp.quality, inp.window
    # A new frame with a fresh RangeIndex, sharing the column arrays (nothing writes to them).
    data = inp.data.copy(deep=False)
    data.index = pd.RangeIndex(len(data))
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
    parts = _Parts(contract, data, window)
    rows_by_part = parts.rows_by_part
    if have_partition:
        run_level += _boundary_findings(contract, window, parts)
    # Declared trimming happens before any rule judges the values.
    stripped = _strip_declared(data, quality)

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
    work = _Work(data, parts)
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
        return _result(inp, work, col, run_level, decided_early=True)

    # 2. Declared value rules: text shape, JSON types, timestamp zones.
    for i, rule in enumerate(quality.values):
        if isinstance(rule, TextRule):
            _text_rule(col, inp, work, rule, 1200 + i, stripped.get(rule.column, 0))
        else:
            _timestamp_rule(col, inp, work, rule, 1200 + i, run_level)

    # 3. Dataset-level rules.
    drifts: list[tuple[int, Drift]] = []
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
            inside = parts.window_codes >= 0
            rows_in = np.bincount(parts.window_codes[inside], minlength=parts.size)
            if rule.column in data:
                nulls = data[rule.column].isna().to_numpy()
                nulls_in = np.bincount(parts.window_codes[inside & nulls], minlength=parts.size)
            else:
                nulls_in = rows_in
            for i, p in enumerate(window.partitions):
                n, k = int(rows_in[i]), int(nulls_in[i])
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
            newest = _newest_by_day(work.utc(rule.column), parts)
            for p in window.partitions:
                if p not in newest or pd.isna(newest[p]):
                    continue
                end = _period_end(contract, p)
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
            hashed = work.key_hashes(key)
            if hashed is not None and hashed[1]:
                # Equal keys have equal hashes: only rows sharing a hash can repeat a key, and
                # those few are compared exactly (keep="first" within them = within all rows).
                dup = np.zeros(len(data), dtype=bool)
                candidates = _repeated(hashed[0])
                if len(candidates):
                    dup[candidates] = data.iloc[candidates].duplicated(key, keep="first")
            else:
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
                2000,
                f"repeat business key {tuple(key)}",
            )
        elif isinstance(rule, Referential):
            _referential(col, inp, work, rule)
        elif isinstance(rule, Drift):
            # Judged on the rows that would be published, so once the quarantine is known;
            # its findings keep their place among the others.
            drifts.append((len(col.findings), rule))
        elif isinstance(rule, QuarantineRate):
            pass  # needs the quarantine outcome: applied in _result
    for tb in quality.time_bounds:
        values = work.naive_utc(tb.column)
        if contract.is_static:
            raise ValueError(
                f"dataset {contract.name}: rule {tb.name} bounds {tb.column} by its partition's "
                f"period, but {contract.grain} partitions have none"
            )
        if contract.grain == "hourly":
            # The partition is the UTC instant of the hour's start; values are UTC.
            start = parts.series.to_numpy()
            ts = values.to_numpy()
            bad = ~((ts >= start) & (ts < start + np.timedelta64(1, "h")))
        elif contract.grain == "monthly":
            start = parts.series
            bad = ~((values >= start) & (values < start + pd.offsets.MonthBegin(1))).to_numpy()
        else:
            ts, start = values.to_numpy(), parts.series.to_numpy()
            bad = ~((ts >= start) & (ts < start + np.timedelta64(1, "D")))
        rows = np.flatnonzero(bad)
        _row_rule_findings(
            col,
            parts,
            tb.name,
            tb.severity,
            tb.column,
            rows,
            data[tb.column].iloc[rows].astype(str).tolist(),
            3000,
            f"have {tb.column} outside their partition",
        )
    if drifts:
        publish = np.ones(len(data), dtype=bool)
        publish[col.quarantine()[0]] = False
        for position, rule in reversed(drifts):
            col.findings[position:position] = _drift(inp, work, rule, publish)
    return _result(inp, work, col, run_level, decided_early=False)


def _boundary_findings(
    contract: DatasetContract, window: PartitionWindow, parts: _Parts
) -> list[Finding]:
    """Rows with a null partition value or one outside the run's window: the run cannot own
    them, so it fails here naming them instead of later at the publish boundary."""
    out = []
    pcol = contract.partition_column
    nulls = int((parts.codes < 0).sum()) if parts.has_nat else 0
    if nulls:
        out.append(
            Finding(
                "reconciliation:partition_boundary",
                Severity.FAIL_RUN,
                None,
                passed=False,
                failed=nulls,
                column=pcol,
                message=f"{nulls} row(s) have a null {pcol}: no partition can own them",
            )
        )
    owned = set(window.partitions)
    foreign = {d: n for d, n in parts.rows_by_part.items() if n and d not in owned}
    if foreign:
        days = sorted(foreign)
        out.append(
            Finding(
                "reconciliation:partition_boundary",
                Severity.FAIL_RUN,
                None,
                passed=False,
                failed=sum(foreign.values()),
                column=pcol,
                sample=tuple(partition_key(d) for d in days[:SAMPLE_SIZE]),
                message=f"{sum(foreign.values())} row(s) have {pcol} outside the run's "
                f"partitions {partition_key(window.first)}..{partition_key(window.last)}: "
                + ", ".join(partition_key(d) for d in days[:SAMPLE_SIZE]),
            )
        )
    return out


# --------------------------------------------------------------------------- value rules

#: A control character (C0, DEL, C1), or whitespace at either end (RE2 syntax).
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"
_PADDED = r"^[\s\p{Z}]|[\s\p{Z}]$"
#: First or last UTF-8 byte that may belong to whitespace: ASCII whitespace (as str.isspace
#: sees it) and every non-ASCII byte (candidates, confirmed by _PADDED).
_EDGE_BYTES = np.zeros(256, dtype=bool)
_EDGE_BYTES[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_EDGE_BYTES[0x80:] = True
#: C0 controls, DEL, and 0xC2 (lead byte of the C1 controls U+0080..U+009F).
_CONTROL_BYTES = np.zeros(256, dtype=bool)
_CONTROL_BYTES[:0x20] = True
_CONTROL_BYTES[[0x7F, 0xC2]] = True


def _mask(values: pa_arrow.Array | pa_arrow.ChunkedArray) -> np.ndarray:
    """An Arrow boolean result as a numpy mask, null as False."""
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


class _Text:
    """A text column as one Arrow array plus its raw UTF-8 bytes and offsets, so byte-level
    screens run over the whole column in a numpy pass and regexes only over candidates."""

    def __init__(self, values: pd.Series) -> None:
        self.arr = text_array(values)
        n = len(self.arr)
        _, offsets, data = self.arr.buffers()
        first = self.arr.offset
        self.offsets = np.frombuffer(offsets, dtype=np.int64)[first : first + n + 1]
        self.bytes = (
            np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        )
        self.length = pc.utf8_length(self.arr).fill_null(0).to_numpy(zero_copy_only=False)
        self.present = ~np.asarray(self.arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        self._histogram: np.ndarray | None = None

    def rows_of(self, byte_hits: np.ndarray) -> np.ndarray:
        """Mask of the rows holding any of the byte positions `byte_hits` (a byte mask)."""
        out = np.zeros(len(self.arr), dtype=bool)
        positions = np.flatnonzero(byte_hits)
        if len(positions):
            out[np.searchsorted(self.offsets, positions, side="right") - 1] = True
        return out

    def control_candidates(self) -> np.ndarray:
        """Rows with a C0 control or DEL byte, or a 0xC2 byte (the UTF-8 lead byte of the C1
        controls, and of other Latin-1 characters: candidates, confirmed by _CONTROL)."""
        return self._rows_with(_CONTROL_BYTES)

    def _rows_with(self, table: np.ndarray) -> np.ndarray:
        """Rows holding a byte for which `table` (256 booleans) is True: one lookup pass."""
        b = self.bytes[self.offsets[0] : self.offsets[-1]]
        if self._histogram is None:  # one counting pass answers "any such byte?" for all
            self._histogram = np.bincount(b, minlength=256)
        if not self._histogram[table].any():
            return np.zeros(len(self.arr), dtype=bool)
        return self.rows_of(np.concatenate([np.zeros(self.offsets[0], dtype=bool), table[b]]))

    def padding_candidates(self) -> np.ndarray:
        """Rows whose first or last byte may be whitespace."""
        nonempty = self.offsets[1:] > self.offsets[:-1]
        out = np.zeros(len(self.arr), dtype=bool)
        rows = np.flatnonzero(nonempty)
        if len(rows):
            head = self.bytes[self.offsets[:-1][rows]]
            tail = self.bytes[self.offsets[1:][rows] - 1]
            out[rows] = _EDGE_BYTES[head] | _EDGE_BYTES[tail]
        return out

    def outside_characters(self, characters: str) -> np.ndarray:
        """Candidate rows with a byte outside the allowed set (non-ASCII bytes are candidates
        when the set holds non-ASCII characters; confirmed by a regex on those rows)."""
        allowed = np.zeros(256, dtype=bool)
        allowed[[ord(ch) for ch in characters if ord(ch) < 128]] = True
        if any(ord(ch) >= 128 for ch in characters):
            allowed[0x80:] = True
        return self._rows_with(~allowed)

    def regex(self, rows: np.ndarray, pattern: str) -> np.ndarray:
        """Whether each of `rows` contains a match of the RE2 `pattern`."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        return _mask(pc.match_substring_regex(self.arr.take(pa_arrow.array(rows)), pattern))


def _strip_declared(data: pd.DataFrame, quality: QualityContract) -> dict[str, int]:
    """Strip the columns whose TextRule says trim="strip" (in `data`, a frame of the gate's
    own); how many values each stripping changed."""
    changed: dict[str, int] = {}
    for rule in quality.values:
        if not isinstance(rule, TextRule) or rule.trim != "strip" or rule.column not in data:
            continue
        values = data[rule.column]
        is_object = isinstance(values.dtype, np.dtype) and values.dtype.kind == "O"
        if not (is_object or _is_arrow_text(values.dtype)):
            continue
        text = _Text(values)
        candidates = np.flatnonzero(text.padding_candidates())
        rows = candidates[text.regex(candidates, _PADDED)]
        if len(rows) and is_object:
            sub = text.arr.take(pa_arrow.array(rows))
            column = values.to_numpy(dtype=object, copy=True)
            column[rows] = pc.utf8_trim_whitespace(sub).to_pylist()
            data[rule.column] = pd.Series(column, index=data.index, dtype=object)
        elif len(rows):
            # Arrow-backed text (what the landing reader and case_events hand over) stays
            # Arrow-backed: trimmed where padded, untouched elsewhere, in one vectorized pass.
            mask = np.zeros(len(text.arr), dtype=bool)
            mask[rows] = True
            trimmed = pc.if_else(pa_arrow.array(mask), pc.utf8_trim_whitespace(text.arr), text.arr)
            data[rule.column] = pd.Series(
                pd.arrays.ArrowExtensionArray(trimmed), index=data.index
            ).astype(values.dtype)
        changed[rule.column] = len(rows)
    return changed


def _is_arrow_text(dtype: object) -> bool:
    """pandas' string[pyarrow] or an ArrowDtype of (large) string."""
    if isinstance(dtype, pd.StringDtype):
        return dtype.storage == "pyarrow"
    return isinstance(dtype, pd.ArrowDtype) and (
        pa_arrow.types.is_string(dtype.pyarrow_dtype)
        or pa_arrow.types.is_large_string(dtype.pyarrow_dtype)
    )


def _escaped(values: pd.Series) -> list[str]:
    """Short, escaped samples of failing values: no raw control characters or megabytes."""
    short = values.astype(str).str.slice(0, 200)
    return short.str.encode("unicode_escape").str.decode("ascii").tolist()


def _json_type_failures(inp: GateInput, rule: TextRule, n: int) -> np.ndarray:
    """Rows whose landing value had a JSON type the rule does not allow (e.g. an object
    rendered as text by the reader)."""
    src = inp.source_rows
    bad = np.zeros(n, dtype=bool)
    if src is None or len(src) != n or JSON_TYPES_COLUMN not in src:
        return bad
    types = src[JSON_TYPES_COLUMN]
    typed = np.flatnonzero(types.notna().to_numpy())
    if not len(typed):
        return bad
    found = types.iloc[typed].str.extract(f";{re.escape(rule.column)}=([a-z]+);", expand=False)
    allowed = set(rule.json_types) | ({"integer"} if "number" in rule.json_types else set())
    bad[typed] = (found.notna() & ~found.isin(sorted(allowed))).to_numpy()
    return bad


def _value_findings(
    col: _Collector,
    parts: _Parts,
    rule: str,
    severity: Severity,
    column: str,
    rows: np.ndarray,
    reasons: np.ndarray,
    cases: list[str],
    rank: int,
    note: str = "",
    value: float | None = None,
) -> None:
    """Per-partition findings of a value rule whose failures each carry their own reason
    (quarantined under that reason when that is the rule's severity)."""
    by_part = _group(parts.window_codes[rows], parts.size)
    for p, hits in zip(col.window.partitions, by_part, strict=True):
        what = ""
        if len(hits):
            names, counts = np.unique(reasons[hits].astype(str), return_counts=True)
            what = ", ".join(f"{r} {k}" for r, k in zip(names, counts.tolist(), strict=True))
        col.add(
            Finding(
                rule,
                severity,
                p,
                passed=not len(hits),
                failed=len(hits),
                checked=int(parts.rows_by_part.get(p, 0)),
                message=f"{len(hits)} row(s) fail {rule}: {what}{note}" if len(hits) else note,
                column=column,
                sample=tuple(cases[i] for i in hits[:SAMPLE_SIZE].tolist()),
                value=value,
            )
        )
    if severity == Severity.QUARANTINE_RECORD and len(rows):
        for reason in sorted(set(reasons.tolist())):
            pick = np.flatnonzero(reasons == reason)
            col.quarantine_rows(rows[pick], rank, reason, column, [cases[i] for i in pick])


def _text_rule(
    col: _Collector, inp: GateInput, work: _Work, rule: TextRule, rank: int, stripped: int
) -> None:
    """A TextRule over a whole column: lengths in one Arrow pass, control characters,
    padding and allowed characters as numpy passes over the column's bytes, a pattern in
    one RE2 pass; the reason of each failing row is worked out on those rows only."""
    data, parts = work.data, work.parts
    if rule.column not in data:
        return  # a missing column is the schema's finding
    n = len(data)
    text = _Text(data[rule.column])
    judged = text.present & (text.length > 0)  # empty values: the schema's (missing_*)
    too_long = (
        judged & (text.length > rule.max_length)
        if rule.max_length is not None
        else np.zeros(n, dtype=bool)
    )
    too_short = text.present & (text.length < rule.min_length)
    wrong_type = _json_type_failures(inp, rule, n)
    suspect = too_long | too_short | wrong_type
    if not rule.control_characters:
        suspect |= judged & text.control_candidates()
    if rule.trim == "reject":
        suspect |= judged & text.padding_candidates()
    if rule.characters is not None:
        suspect |= judged & text.outside_characters(rule.characters)
    pattern_ok = None
    if rule.pattern is not None:
        pattern_ok = _mask(pc.match_substring_regex(text.arr, f"^(?:{rule.pattern})$"))
        suspect |= judged & ~pattern_ok
    rows = np.flatnonzero(suspect)
    c = rule.column
    # Exact checks on the candidate rows, in order of precedence: the first one names it.
    checks: list[tuple[str, np.ndarray]] = [(f"{c}_json_type", wrong_type[rows])]
    if not rule.control_characters:
        checks.append((f"{c}_control_character", text.regex(rows, _CONTROL)))
    checks.append((f"{c}_too_long", too_long[rows]))
    checks.append((f"{c}_too_short", too_short[rows]))
    if rule.trim == "reject":
        checks.append((f"{c}_untrimmed", text.regex(rows, _PADDED)))
    if rule.characters is not None:
        allowed = "".join(f"\\x{{{ord(ch):x}}}" for ch in sorted(set(rule.characters)))
        checks.append((f"{c}_characters", text.regex(rows, f"[^{allowed}]")))
    if pattern_ok is not None:
        checks.append((f"{c}_pattern", ~pattern_ok[rows]))
    reasons = np.full(len(rows), "", dtype=object)
    for reason, hit in reversed(checks):
        reasons[hit] = reason
    failing = reasons != ""
    # Empty values are judged by min_length only; a candidate no exact check confirms passes.
    keep = failing & (judged[rows] | too_short[rows])
    rows, reasons = rows[keep], reasons[keep]
    cases = _escaped(data[rule.column].iloc[rows]) if len(rows) else []
    note = f" ({stripped} value(s) stripped of padding)" if stripped else ""
    _value_findings(
        col,
        parts,
        rule.name,
        rule.severity,
        rule.column,
        rows,
        reasons,
        cases,
        rank,
        note,
        float(stripped) if rule.trim == "strip" else None,
    )


def _timestamp_rule(
    col: _Collector,
    inp: GateInput,
    work: _Work,
    rule: TimestampRule,
    rank: int,
    run_level: list[Finding],
) -> None:
    """Timestamps without a zone (when neither allowed nor read in a declared source zone),
    judged on the text as it arrived; typed values whose year is outside the range."""
    data, parts = work.data, work.parts
    if rule.column not in data:
        return
    n = len(data)
    src = inp.source_rows
    if src is not None and len(src) == n and rule.column in src:
        text = src[rule.column]
    elif not is_datetime64_any_dtype(data[rule.column].dtype):
        text = data[rule.column]
    else:
        text = None
    c = rule.column
    bad = np.zeros(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    if is_datetime64_any_dtype(data[c].dtype):
        ts = work.utc(c)
        lo = pd.Timestamp(year=max(rule.min_year, 1678), month=1, day=1, tz="UTC")
        hi = pd.Timestamp(year=min(rule.max_year, 2261) + 1, month=1, day=1, tz="UTC")
        out = (ts.notna() & ((ts < lo) | (ts >= hi))).to_numpy()
        reasons[out] = f"{c}_year_out_of_range"
        bad |= out
    if rule.require_zone and rule.source_zone is None:
        if text is None:
            run_level.append(
                Finding(
                    rule.name,
                    Severity.FAIL_RUN,
                    None,
                    passed=False,
                    column=c,
                    message=f"{c} is typed and no source text was kept: whether its values "
                    "carried a zone cannot be judged (pass source_rows)",
                )
            )
            return
        naive = text.notna().to_numpy() & ~has_zone(text) & ~bad
        reasons[naive] = f"{c}_without_zone"
        bad |= naive
    rows = np.flatnonzero(bad)
    source = text if text is not None else data[c]
    cases = _escaped(source.iloc[rows]) if len(rows) else []
    _value_findings(col, parts, rule.name, rule.severity, c, rows, reasons[rows], cases, rank)


def _referential(col: _Collector, inp: GateInput, work: _Work, rule: Referential) -> None:
    data, parts = work.data, work.parts
    pinned = inp.reference.get(rule.reference)
    if pinned is None:
        raise ValueError(
            f"dataset {inp.contract.name}: rule {rule.name} needs reference "
            f"{rule.reference!r}, which the contract does not pin"
        )
    # Rows are judged against the snapshot pinned for their own business date; dates that
    # share a snapshot version are judged together.
    day_values = np.append(parts.days, np.datetime64("NaT", "ns")) if parts.has_nat else parts.days
    by_version: dict[str, tuple[ReferenceSnapshot, set[date]]] = {}
    for d in sorted({pd.Timestamp(t).date() for t in np.unique(day_values)}):
        if d not in pinned:
            raise ValueError(
                f"dataset {inp.contract.name}: no {rule.reference} snapshot pinned for {d}"
            )
        snap = pinned[d]
        by_version.setdefault(snap.binding.version, (snap, set()))[1].add(d)
    versions = list(by_version.values())
    values = data[rule.column]
    # The rule compares values as strings (astype(str)). Each distinct value is converted and
    # looked up once: `codes` numbers every row's value (-1: null), `keys` are their strings.
    codes, uniques = pd.factorize(values)
    keys = np.asarray(uniques, dtype=object)
    exact = infer_dtype(keys, skipna=False) in ("string", "empty")
    if exact and len(values):
        missing = np.flatnonzero(codes < 0)  # null to factorize: null to notna() as well?
        exact = not values.iloc[missing].notna().any()
    if not exact:  # non-string values: convert each row as the rule defines it
        present = np.flatnonzero(values.notna().to_numpy())
        sub_codes, uniques = pd.factorize(values.iloc[present].astype(str).to_numpy())
        codes = np.full(len(values), -1, dtype=np.int64)
        codes[present] = sub_codes
        keys = np.asarray(uniques, dtype=object)
    key_index = pd.Index(keys, dtype=object)
    n_keys = len(keys)
    # Every (snapshot version, value) pair is one slot: all versions are judged in one pass.
    day_version = np.full(len(parts.days) + 1, -1, dtype=np.int64)
    for v, (_, on_days) in enumerate(versions):
        for k, d in enumerate(parts.dates):
            if (d.date() if isinstance(d, datetime) else d) in on_days:
                day_version[k] = v
    row_version = day_version[parts.codes]
    checked = (row_version >= 0) & (codes >= 0)
    every = bool(checked.all())
    slot = row_version * n_keys + codes
    # The versions with rows to check (a snapshot no row needs is not read).
    if every:  # each day has rows, and all of them are checked
        used = sorted(set(day_version[:-1].tolist()))
    else:
        per_version = np.bincount(
            np.where(checked, row_version + 1, 0), minlength=len(versions) + 1
        )
        used = np.flatnonzero(per_version[1:]).tolist()
    rows = slice(None) if every else np.flatnonzero(checked)
    n_slots = len(versions) * n_keys
    known = np.zeros(len(data), dtype=bool)
    if not used:
        pass
    elif rule.time_column is None:
        allowed = np.zeros(n_slots, dtype=bool)
        for v in used:
            ref = versions[v][0].data
            allowed[v * n_keys : (v + 1) * n_keys] = key_index.isin(
                pd.Index(ref[rule.key].dropna().astype(str).unique())
            )
        known[rows] = allowed[slot[rows]]
    else:
        if work.typed(rule.time_column):
            times = work.naive_utc(rule.time_column).to_numpy()
        else:  # strings: parsed per version as before (format inference is per call)
            times = np.full(len(data), np.datetime64("NaT"), dtype="datetime64[ns]")
            for v in used:
                on = np.flatnonzero(checked & (row_version == v))
                times[on] = (
                    pd.to_datetime(data[rule.time_column].iloc[on], utc=True)
                    .dt.tz_localize(None)
                    .to_numpy()
                )
        # The reference rows of every slot, grouped by slot: a row is known when one of the
        # intervals of its slot holds its time (valid_from <= t < valid_to).
        table_slot, table_from, table_to = [], [], []
        for v in used:
            ref = versions[v][0].data
            code = key_index.get_indexer(ref[rule.key].astype(str).to_numpy())
            kept = code >= 0
            table_slot.append(v * n_keys + code[kept])
            table_from.append(pd.to_datetime(ref[rule.valid_from]).to_numpy()[kept])
            table_to.append(
                pd.to_datetime(ref[rule.valid_to]).fillna(pd.Timestamp.max).to_numpy()[kept]
            )
        t_slot = np.concatenate(table_slot)
        order = np.argsort(t_slot, kind="stable")
        t_slot = t_slot[order]
        t_from, t_to = np.concatenate(table_from)[order], np.concatenate(table_to)[order]
        per_slot = np.bincount(t_slot, minlength=n_slots)
        first = np.cumsum(per_slot) - per_slot
        # Every row against its slot's first interval (a slot without one has NaT bounds,
        # which hold no time), then the few rows whose slot has more intervals.
        has = np.flatnonzero(per_slot)
        slot_from = np.full(n_slots, np.datetime64("NaT"), dtype=t_from.dtype)
        slot_to = np.full(n_slots, np.datetime64("NaT"), dtype=t_to.dtype)
        slot_from[has], slot_to[has] = t_from[first[has]], t_to[first[has]]
        s, t = slot[rows], times[rows]
        hit = (slot_from[s] <= t) & (t < slot_to[s])
        if len(per_slot) and per_slot.max() > 1:
            multi = np.flatnonzero((per_slot > 1)[s])
            m_slot, m_t = s[multi], t[multi]
            for level in range(1, int(per_slot.max())):
                sel = np.flatnonzero(per_slot[m_slot] > level)
                j, ts = first[m_slot[sel]] + level, m_t[sel]
                hit[multi[sel[(t_from[j] <= ts) & (ts < t_to[j])]]] = True
        known[rows] = hit
    rows = np.flatnonzero(~known)
    _row_rule_findings(
        col,
        parts,
        rule.name,
        rule.severity,
        rule.column,
        rows,
        data[rule.column].iloc[rows].tolist(),
        1500,
        f"have a {rule.column} unknown to reference {rule.reference}"
        + (f" at their {rule.time_column}" if rule.time_column else ""),
    )


def _newest_by_day(stamps: pd.Series, parts: _Parts) -> dict[date, pd.Timestamp]:
    """stamps.groupby(day).max() (NaT when a day has none) as {date: Timestamp}."""
    array = stamps.array
    ticks = array.asi8  # NaT is the smallest int64: a maximum skips it unless all are NaT
    codes = parts.codes
    if parts.has_nat:
        ticks, codes = ticks[codes >= 0], codes[codes >= 0]
    newest = np.full(len(parts.days), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(newest, codes, ticks)
    stamps = pd.DatetimeIndex(newest.view(f"datetime64[{array.unit}]")).tz_localize(array.tz)
    return dict(zip(parts.dates, stamps, strict=True))


def _by_day(
    values: pd.Series, days: np.ndarray, hourly: Callable[[datetime], Any] | None = None
) -> dict[Any, Any]:
    """values.groupby(days).sum(), keyed by partition value: a date, an hour (`hourly`) or a
    list/hash key (rows without a partition are left out)."""
    sums = values.groupby(days).sum()
    if days.dtype.kind != "M":
        return dict(sums.items())
    if hourly is not None:
        return {hourly(pd.Timestamp(t).to_pydatetime()): v for t, v in sums.items()}
    return {pd.Timestamp(t).date(): v for t, v in sums.items()}


def _drift(inp: GateInput, work: _Work, rule: Drift, publish: np.ndarray) -> list[Finding]:
    """The partition totals of the rows that would be published (not quarantined) against
    the published version: rows the gate quarantines do not move the metric."""
    published = inp.published
    if published is None or published.empty:
        return []
    if inp.contract.grain in ("daily", "monthly"):
        old_parts = _partition_dates(inp.contract, published).dt.date.to_numpy()
    else:
        old_parts = np.asarray(inp.contract.values_of(published[inp.contract.partition_column]))
    old = published[rule.column].groupby(old_parts).sum()
    hourly = inp.contract.hour if inp.contract.grain == "hourly" else None
    new = _by_day(work.data[rule.column][publish], work.parts.values[publish], hourly)
    findings = []
    for p in inp.window.partitions:
        if p not in old.index or (rule.closed_only and p not in inp.closed):
            continue
        before, after = float(old[p]), float(new.get(p, 0.0))
        change = abs(after - before)
        relative = change / abs(before) if before else (0.0 if change == 0 else float("inf"))
        ok = change <= rule.min_absolute_change or relative <= rule.max_relative_change
        findings.append(
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
    return findings


def _upstream_partitions(
    contract: DatasetContract, upstream: DatasetContract, source: pd.DataFrame, control: str
) -> pd.Series:
    """The partition of `contract` each upstream row counts toward in a control total.

    Time grains align by time (a day's rows to its month). A list or hash dataset reading
    an upstream partitioned otherwise aligns each upstream row by its own values: its
    partition column's value (list) or the bucket of its hash key (hash), which the upstream
    must therefore carry under the same column name.
    """
    if contract.is_static and (
        upstream.grain != contract.grain or upstream.static_keys != contract.static_keys
    ):
        column = contract.partition_column if contract.grain == "list" else contract.hash_key
        assert column is not None
        if column not in source.columns:
            raise ValueError(
                f"dataset {contract.name}: control total {control} sums upstream "
                f"{upstream.name} per {contract.grain} partition, by the upstream's column "
                f"{column!r}, which it does not have"
            )
        if contract.grain == "list":
            return source[column].astype(object).where(source[column].notna(), None)
        return pd.Series(contract.buckets_of(source[column].tolist()), index=source.index)
    if contract.grain not in ("daily", "monthly") and upstream.grain == contract.grain:
        values = upstream.values_of(source[upstream.partition_column])
        if contract.grain == "hourly":
            return pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), index=source.index)
        return pd.Series(values, index=source.index, dtype=object)
    if contract.grain not in ("daily", "monthly"):
        raise ValueError(
            f"dataset {contract.name}: control total {control} cannot align {upstream.grain} "
            f"upstream {upstream.name} to {contract.grain} partitions"
        )
    up_days = _partition_dates(upstream, source)
    return up_days.dt.to_period("M").dt.start_time if contract.grain == "monthly" else up_days


def _control_totals(
    inp: GateInput, accepted: pd.DataFrame, accepted_days: Callable[[], np.ndarray]
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

        hourly = inp.contract.hour if inp.contract.grain == "hourly" else None
        if isinstance(source, UpstreamRelation):
            # Summed where the upstream rows are, in the transform's snapshot.
            totals_in = source.totals(
                ct.upstream_column,
                ct.upstream_filter,
                monthly=inp.contract.grain == "monthly",
            )
        else:
            up_contract = contract_for(ct.upstream)
            mask = np.ones(len(source), dtype=bool)
            for column, value in ct.upstream_filter:
                mask &= (source[column] == value).to_numpy()
            key = _upstream_partitions(inp.contract, up_contract, source, ct.name)
            values = (
                source[ct.upstream_column]
                if ct.upstream_column
                else pd.Series(1, index=source.index)
            )
            totals_in = _by_day(values[mask], key[mask].to_numpy(), hourly)
        totals_out = _by_day(accepted[ct.output_column], accepted_days(), hourly)
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


def _evidence(source_rows: pd.DataFrame) -> pd.DataFrame:
    """The landing values of source_rows, without the reader's meta columns (`_...`)."""
    meta = [c for c in source_rows.columns if isinstance(c, str) and c.startswith("_")]
    return source_rows.drop(columns=meta) if meta else source_rows


def _rows(data: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """data[keep].reset_index(drop=True) with one copy of the rows instead of two."""
    out = data.take(np.flatnonzero(keep))
    out.index = pd.RangeIndex(len(out))
    return out


def _result(
    inp: GateInput,
    work: _Work,
    col: _Collector,
    run_level: list[Finding],
    *,
    decided_early: bool,
) -> GateResult:
    contract, quality, window = inp.contract, inp.quality, inp.window
    data, parts = work.data, work.parts
    rows_by_part = parts.rows_by_part
    parse_rejects = inp.rejects if inp.rejects is not None else pd.DataFrame(columns=REJECT_COLUMNS)
    findings = list(col.findings)

    # Quarantined rows leave the output with their first failing rule as the reason.
    q_rows, chosen = col.quarantine()
    keep: np.ndarray | None = None
    if len(q_rows):
        bad = data.iloc[q_rows]
        gate_q = pd.DataFrame(
            {
                "partition_date": parts.series.iloc[q_rows].to_numpy(),
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
                    _evidence(inp.source_rows).iloc[q_rows]
                    if inp.source_rows is not None and len(inp.source_rows) == len(data)
                    else bad
                ),
            }
        )
        keep = np.ones(len(data), dtype=bool)
        keep[q_rows] = False
        accepted = _rows(data, keep)
    else:
        gate_q = pd.DataFrame(columns=REJECT_COLUMNS)
        accepted = data

    def accepted_days() -> np.ndarray:
        """The partition (datetime64[ns]) of each accepted row."""
        return parts.values if keep is None else parts.values[keep]

    q_codes = parts.window_codes[q_rows]
    gate_q_by_part = dict(
        zip(
            window.partitions,
            np.bincount(q_codes[q_codes >= 0], minlength=parts.size).tolist(),
            strict=True,
        )
    )
    parse_by_part = (
        parse_rejects.groupby(pd.to_datetime(parse_rejects["partition_date"]).dt.date)
        .size()
        .to_dict()
        if inp.contract.grain in ("daily", "monthly") and len(parse_rejects)
        else pd.Series(inp.contract.values_of(parse_rejects["partition_date"]), dtype=object)
        .value_counts()
        .to_dict()
        if len(parse_rejects)
        else {}
    )

    # Reconciliation: exact count identity, control totals, key checksum, time bounds.
    controls: dict[date, dict[str, dict[str, float]]] = {p: {} for p in window.partitions}
    control_findings: list[Finding] = []
    if not decided_early:
        controls, control_findings = _control_totals(inp, accepted, accepted_days)
        findings += control_findings
    counts = inp.counts
    # The count identity is real only when the transform says how many rows it read. A
    # derived dataset (no `read` count, rows computed from upstream) is reconciled by its
    # declared control totals instead, which can fail.
    by_controls = bool(inp.upstream) and (counts is None or "read" not in counts.columns)
    identity = (
        IDENTITY
        if not by_controls
        else "control totals over the upstream rows"
        if quality.controls
        else "none declared (derived dataset)"
    )
    if by_controls and not quality.controls:
        run_level.append(
            Finding(
                "reconciliation",
                Severity.WARN,
                None,
                passed=False,
                message=f"derived dataset {contract.name} declares no control totals: its "
                "output cannot be reconciled with the upstream rows it read (declare "
                "ControlTotal in its quality contract)",
            )
        )
    per_partition: dict[str, Any] = {}
    # The accepted rows of each window partition, as positions in `data`: grouped once
    # instead of a boolean mask and a copy of the rows per partition.
    groups = parts.groups(keep)
    # The business key is hashed once for all rows (and shared with the UniqueKey rule).
    hashed = work.key_hashes(contract.business_key)
    for i, p in enumerate(window.partitions):
        rows = groups[i]
        staged = rows_by_part.get(p, 0)
        gate_q_n = int(gate_q_by_part.get(p, 0))
        parse_n = int(parse_by_part.get(p, 0))
        acc = len(rows)
        if counts is not None and p in counts.index:
            row = counts.loc[p]
            read = int(row.get("read", staged + parse_n))
            duplicate = int(row.get("duplicate", 0))
            kept = int(row.get("kept", staged))
        else:
            read, duplicate, kept = staged + parse_n, 0, staged
        quarantined = parse_n + gate_q_n
        ok = read == acc + quarantined + duplicate and kept == staged
        holds = ok
        if by_controls:
            holds = ok and all(f.passed for f in control_findings if f.partition == p)
        entry: dict[str, Any] = {
            "input": read,
            "accepted": acc,
            "quarantined": quarantined,
            "quarantined_by_gate": gate_q_n,
            "rejected_at_parse": parse_n,
            "duplicate": duplicate,
            "blocked": 0,
            "identity": identity,
            "identity_holds": holds,
            "business_key_checksum": _checksum_of(hashed[0][rows])
            if hashed is not None
            else key_checksum(data.iloc[rows], contract.business_key),
            "control_totals": {k: v for k, v in controls.get(p, {}).items()},
        }
        for tb in quality.time_bounds:
            if tb.column in data and len(rows):
                ts = (
                    work.utc(tb.column).array[rows]
                    if work.typed(tb.column)
                    else pd.to_datetime(data[tb.column].iloc[rows], utc=True)
                )
                entry[f"{tb.column}_min"] = ts.min().isoformat()
                entry[f"{tb.column}_max"] = ts.max().isoformat()
        per_partition[partition_key(p)] = entry
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
    blocked_rows = pd.DataFrame(columns=REJECT_COLUMNS)
    if blocked and len(accepted):
        if inp.contract.is_static:
            days = np.array(list(blocked), dtype=object)
        else:
            days = np.array([np.datetime64(d, "ns") for d in blocked])
        withheld = np.isin(accepted_days(), days)
        if withheld.any():
            blocked_rows = _blocked_rows(inp, accepted, accepted_days(), withheld, keep, blocked)
        accepted = _rows(accepted, ~withheld)
    for d in blocked:
        # Published rows are accepted; the rows of a blocked partition are withheld.
        entry = per_partition.get(partition_key(d))
        if entry is not None:
            entry["blocked"], entry["accepted"] = entry["accepted"], 0
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
        "blocked_rows": sum(v["blocked"] for v in per_partition.values()),
    }
    reconciliation = {
        "identity": identity,
        "status": "NOT_DECLARED"
        if by_controls and not quality.controls
        else "PASSED"
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
        blocked_rows=blocked_rows,
    )


def _blocked_rows(
    inp: GateInput,
    accepted: pd.DataFrame,
    days: np.ndarray,
    withheld: np.ndarray,
    keep: np.ndarray | None,
    blocked: dict[date, str],
) -> pd.DataFrame:
    """The accepted rows of blocked partitions as evidence rows (REJECT_COLUMNS)."""
    rows = accepted.iloc[np.flatnonzero(withheld)]
    static, hourly = inp.contract.is_static, inp.contract.grain == "hourly"
    when = days[withheld] if static else pd.to_datetime(days[withheld])
    codes, uniques = pd.factorize(when)
    reasons = np.array(
        [
            _short(blocked[t if static else t.to_pydatetime() if hourly else t.date()])
            for t in uniques
        ],
        dtype=object,
    )
    source = None
    if inp.source_rows is not None and len(inp.source_rows) == len(inp.data):
        positions = np.arange(len(inp.data)) if keep is None else np.flatnonzero(keep)
        source = inp.source_rows.iloc[positions[np.flatnonzero(withheld)]]
    return pd.DataFrame(
        {
            "partition_date": when if static else when.to_numpy(),
            "source_file": rows["source_file"].astype(str).to_numpy()
            if "source_file" in rows
            else None,
            "source_line": rows["source_line"].astype("int64").to_numpy()
            if "source_line" in rows
            else None,
            "reason": "partition_blocked",
            "column_name": None,
            "failure_case": reasons[codes],
            "original_row": _original_rows(source if source is not None else rows),
        }
    )[REJECT_COLUMNS]


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
