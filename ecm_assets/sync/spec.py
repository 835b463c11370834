"""Sync job specs: the ECM batch protocol's job object, loaded from JSON and validated.

A spec keeps the seed's shape (job_id, job_type, source, transform, sink, schedule,
parameters, partitioning, checkpoint, validation, dependencies) and adds only what a correct
sync needs: the source `url`, the merge `key`, the `cursor` columns with their safety lag and
overlap, an optional row `version` column, the soft-delete column and the sink `table`.
Every error names the file, the field and the values it allows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

JOB_TYPES = ("full_extraction", "incremental")
CONNECTORS = ("sqlite", "postgresql")
SINK_MODES = ("upsert",)
STRATEGIES = ("hash", "range", "list")
RULE_TYPES = ("row_count", "null_check", "freshness")
ON_FAILURE = ("abort_and_alert", "warn")
LAST_SYNC_SOURCES = ("${previous_job.end_time}",)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?|d|days?)\s*$"
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CRON_FIELD = re.compile(r"^[\d*/,\-]+$")


class SpecError(ValueError):
    """A job spec is invalid: says which file, which field, and what is allowed."""

    def __init__(self, path: Path | str, field_name: str, problem: str) -> None:
        super().__init__(f"{path}: field {field_name!r}: {problem}")
        self.path, self.field, self.problem = str(path), field_name, problem


@dataclass(frozen=True)
class CursorSpec:
    """The composite cursor (column, tiebreaker) and the margins that guard it."""

    column: str = "updated_at"
    tiebreaker: str = "id"
    #: The upper boundary stays this far behind the source clock: rows in commits still open
    #: (or stamped by a writer slightly behind) land below a later boundary, not this one.
    safety_lag: timedelta = timedelta(seconds=5)
    #: Each run re-reads this far below the previous boundary; the version-aware upsert makes
    #: the re-read free of duplicates. It closes commits later than the lag and clock skew.
    overlap: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class SourceSpec:
    connector: str
    url: str
    query: str
    key: str
    cursor: CursorSpec
    version_column: str | None = None
    deleted_column: str | None = None


@dataclass(frozen=True)
class PartitioningSpec:
    strategy: str
    key: str
    partitions: int = 1
    bounds: tuple[Any, ...] = ()  # range: ascending split points
    values: tuple[str, ...] = ()  # list: the categories

    @property
    def partition_ids(self) -> list[str]:
        """Partition keys in a stable order (also the Dagster static partition keys)."""
        if self.strategy == "hash":
            width = len(str(self.partitions - 1))
            return [str(i).zfill(width) for i in range(self.partitions)]
        if self.strategy == "range":
            edges = ["min", *map(str, self.bounds), "max"]
            return [f"{edges[i]}..{edges[i + 1]}" for i in range(len(edges) - 1)]
        return list(self.values)


@dataclass(frozen=True)
class RuleSpec:
    type: str
    min: int | None = None
    max: int | None = None
    fields: tuple[str, ...] = ()
    threshold: float = 0.0
    field: str | None = None
    max_age: timedelta | None = None


@dataclass(frozen=True)
class DependencySpec:
    job: str
    window: timedelta | None = None
    status: str | None = None


@dataclass(frozen=True)
class JobSpec:
    path: str
    job_id: str
    job_type: str
    source: SourceSpec
    processor: str
    transform_config: Mapping[str, Any]
    store: str
    table: str
    mode: str
    schedule: str | None
    partitioning: PartitioningSpec
    page_rows: int
    rules: tuple[RuleSpec, ...]
    on_failure: str
    dependencies: tuple[DependencySpec, ...]
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def asset_name(self) -> str:
        """Dagster asset key: the job id as an identifier (historical-sync-001 -> ...)."""
        return "sync_" + re.sub(r"[^A-Za-z0-9_]", "_", self.job_id)


def parse_duration(text: Any, path: Path | str, field_name: str) -> timedelta:
    """'24 hours', '5 s', '15 minutes', or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return timedelta(seconds=float(text))
    match = _DURATION.match(str(text)) if isinstance(text, str) else None
    if match is None:
        raise SpecError(
            path,
            field_name,
            f"{text!r} is not a duration; use e.g. '500 ms', '30 seconds', '15 minutes', "
            "'24 hours', '1 day'",
        )
    unit = match.group(2)
    unit = "ms" if unit.startswith("ms") or unit.startswith("milli") else unit[0]
    return timedelta(seconds=float(match.group(1)) * _UNITS[unit])


def expand_env(text: str) -> str:
    """${NAME} and ${NAME:-default} from the environment; ECM_DATA_DIR defaults to ./data."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        if name == "ECM_DATA_DIR" and default is None:
            default = str(Path("data").resolve())
        value = os.environ.get(name, default)
        if value is None:
            raise KeyError(name)
        return value

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(:-([^}]*))?\}", sub, text)


class _Reader:
    """Typed access to one spec's fields, each error naming the file and dotted field."""

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, name: str, problem: str) -> SpecError:
        return SpecError(self.path, name, problem)

    def obj(self, data: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail(name, f"must be an object, got {type(data).__name__}")
        return data

    def get(self, data: Mapping[str, Any], key: str, prefix: str, *, required: bool = True):
        name = f"{prefix}.{key}" if prefix else key
        if key not in data or data[key] is None:
            if required:
                raise self.fail(name, "is required")
            return None
        return data[key]

    def string(self, data, key, prefix, *, required=True, choices=None, ident=False):
        name = f"{prefix}.{key}" if prefix else key
        value = self.get(data, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"{value!r} is not allowed; allowed values: {', '.join(choices)}")
        if ident and not _IDENT.match(value):
            raise self.fail(name, f"{value!r} is not a column name (letters, digits, _)")
        return value

    def integer(self, data, key, prefix, *, required=True, minimum=None):
        name = f"{prefix}.{key}" if prefix else key
        value = self.get(data, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(name, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {value}")
        return value


def _cron(reader: _Reader, value: Any) -> str | None:
    if value is None or value == "manual":
        return None
    if not isinstance(value, str) or len(value.split()) != 5:
        raise reader.fail(
            "schedule", f"{value!r} is not a 5-field cron expression (e.g. '0 2 * * *') or 'manual'"
        )
    for part in value.split():
        if not _CRON_FIELD.match(part):
            raise reader.fail("schedule", f"cron field {part!r} in {value!r} is not valid")
    return value


def parse_spec(data: Any, path: Path | str = "<spec>") -> JobSpec:
    """Validate one spec object (already parsed from JSON)."""
    r = _Reader(path)
    data = r.obj(data, "(root)")
    known = {
        "job_id", "job_type", "description", "source", "transform", "sink", "schedule",
        "parameters", "partitioning", "checkpoint", "validation", "dependencies",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise r.fail(unknown[0], f"is not a spec field; allowed fields: {', '.join(sorted(known))}")
    job_id = r.string(data, "job_id", "")
    if not _JOB_ID.match(job_id):
        raise r.fail("job_id", f"{job_id!r}: use letters, digits, '-', '_' and '.'")
    job_type = r.string(data, "job_type", "", choices=JOB_TYPES)

    src = r.obj(r.get(data, "source", ""), "source")
    connector = r.string(src, "connector", "source", choices=CONNECTORS)
    url = r.string(src, "url", "source")
    query = r.string(src, "query", "source")
    if ":last_sync" not in query:
        raise r.fail(
            "source.query",
            "must filter on the :last_sync parameter (bound, never "
            "formatted into the SQL), e.g. 'WHERE updated_at >= :last_sync'",
        )
    if re.search(r"\b(limit|order\s+by)\b", query, re.IGNORECASE):
        raise r.fail(
            "source.query",
            "must not ORDER BY or LIMIT: the sync pages it by its (cursor, tiebreaker) keyset",
        )
    key = r.string(src, "key", "source", ident=True)
    cur = r.obj(src.get("cursor") or {}, "source.cursor")
    cursor = CursorSpec(
        column=r.string(cur, "column", "source.cursor", required=False, ident=True) or "updated_at",
        tiebreaker=r.string(cur, "tiebreaker", "source.cursor", required=False, ident=True) or key,
        safety_lag=parse_duration(
            cur.get("safety_lag", "5 seconds"), path, "source.cursor.safety_lag"
        ),
        overlap=parse_duration(cur.get("overlap", "15 minutes"), path, "source.cursor.overlap"),
    )
    source = SourceSpec(
        connector=connector,
        url=url,
        query=query,
        key=key,
        cursor=cursor,
        version_column=r.string(src, "version_column", "source", required=False, ident=True),
        deleted_column=r.string(src, "deleted_column", "source", required=False, ident=True),
    )
    extra = sorted(
        set(src)
        - {"connector", "url", "query", "key", "cursor", "version_column", "deleted_column"}
    )
    if extra:
        raise r.fail(
            f"source.{extra[0]}",
            "is not a source field; allowed: connector, url, "
            "query, key, cursor, version_column, deleted_column",
        )

    tr = r.obj(r.get(data, "transform", ""), "transform")
    from ecm_assets.sync.processors import PROCESSORS

    processor = r.string(tr, "processor", "transform", choices=sorted(PROCESSORS))
    config = r.obj(tr.get("config") or {}, "transform.config")
    try:
        PROCESSORS[processor].check_config(config)
    except ValueError as exc:
        raise r.fail("transform.config", str(exc)) from None

    sink = r.obj(r.get(data, "sink", ""), "sink")
    store = r.string(sink, "store", "sink", ident=True)
    mode = r.string(sink, "mode", "sink", choices=SINK_MODES)
    table = r.string(sink, "table", "sink", required=False, ident=True) or re.sub(
        r"[^A-Za-z0-9_]", "_", job_id
    )

    params = r.obj(data.get("parameters") or {}, "parameters")
    last_sync = params.get("last_sync", LAST_SYNC_SOURCES[0])
    if last_sync not in LAST_SYNC_SOURCES:
        raise r.fail(
            "parameters.last_sync",
            f"{last_sync!r} is not allowed; allowed values: "
            f"{', '.join(LAST_SYNC_SOURCES)} (the previous run's recorded boundary, "
            "never the wall clock)",
        )

    part = r.obj(r.get(data, "partitioning", ""), "partitioning")
    strategy = r.string(part, "strategy", "partitioning", choices=STRATEGIES)
    pkey = r.string(part, "key", "partitioning", ident=True)
    if strategy == "hash":
        partitioning = PartitioningSpec(
            strategy, pkey, r.integer(part, "partitions", "partitioning", minimum=1)
        )
    elif strategy == "range":
        bounds = part.get("bounds")
        if not isinstance(bounds, list) or not bounds:
            raise r.fail(
                "partitioning.bounds",
                "range partitioning needs a non-empty list of ascending split points",
            )
        if sorted(bounds) != bounds or len(set(bounds)) != len(bounds):
            raise r.fail("partitioning.bounds", f"{bounds!r} must be strictly ascending")
        partitioning = PartitioningSpec(strategy, pkey, len(bounds) + 1, bounds=tuple(bounds))
    else:
        values = part.get("values")
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and re.match(r"^[A-Za-z0-9_.-]+$", v) for v in values)
        ):
            raise r.fail(
                "partitioning.values",
                "list partitioning needs a list of category "
                "strings (letters, digits, '_', '-', '.')",
            )
        if len(set(values)) != len(values):
            raise r.fail("partitioning.values", f"{values!r} repeats a value")
        partitioning = PartitioningSpec(strategy, pkey, len(values), values=tuple(values))

    ck = r.obj(data.get("checkpoint") or {}, "checkpoint")
    page_rows = r.integer(ck, "every_rows", "checkpoint", required=False, minimum=1) or 50_000

    val = r.obj(data.get("validation") or {}, "validation")
    on_failure = (
        r.string(val, "on_failure", "validation", required=False, choices=ON_FAILURE)
        or "abort_and_alert"
    )
    rules_raw = val.get("rules") or []
    if not isinstance(rules_raw, list):
        raise r.fail("validation.rules", "must be a list of rule objects")
    rules = []
    for i, raw in enumerate(rules_raw):
        prefix = f"validation.rules[{i}]"
        raw = r.obj(raw, prefix)
        kind = r.string(raw, "type", prefix, choices=RULE_TYPES)
        if kind == "row_count":
            lo = r.integer(raw, "min", prefix, required=False, minimum=0)
            hi = r.integer(raw, "max", prefix, required=False, minimum=0)
            if lo is None and hi is None:
                raise r.fail(f"{prefix}.min", "row_count needs min and/or max")
            if lo is not None and hi is not None and lo > hi:
                raise r.fail(f"{prefix}.max", f"max {hi} is below min {lo}")
            rules.append(RuleSpec(kind, min=lo, max=hi))
        elif kind == "null_check":
            fields = raw.get("fields")
            if (
                not isinstance(fields, list)
                or not fields
                or not all(isinstance(f, str) and _IDENT.match(f) for f in fields)
            ):
                raise r.fail(f"{prefix}.fields", "must be a non-empty list of column names")
            threshold = raw.get("threshold", 0)
            if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
                raise r.fail(f"{prefix}.threshold", f"{threshold!r}: a fraction in [0, 1]")
            rules.append(RuleSpec(kind, fields=tuple(fields), threshold=float(threshold)))
        else:
            column = r.string(raw, "field", prefix, ident=True)
            age = parse_duration(r.get(raw, "max_age", prefix), path, f"{prefix}.max_age")
            rules.append(RuleSpec(kind, field=column, max_age=age))

    deps_raw = data.get("dependencies") or []
    if not isinstance(deps_raw, list):
        raise r.fail("dependencies", "must be a list of {job, window} or {job, status} objects")
    deps = []
    for i, raw in enumerate(deps_raw):
        prefix = f"dependencies[{i}]"
        raw = r.obj(raw, prefix)
        job = r.string(raw, "job", prefix)
        window = raw.get("window")
        status = r.string(raw, "status", prefix, required=False, choices=("success",))
        if window is None and status is None:
            raise r.fail(prefix, "needs a window (e.g. '24 hours') and/or status 'success'")
        deps.append(
            DependencySpec(
                job,
                None if window is None else parse_duration(window, path, f"{prefix}.window"),
                status,
            )
        )

    return JobSpec(
        path=str(path),
        job_id=job_id,
        job_type=job_type,
        source=source,
        processor=processor,
        transform_config=dict(config),
        store=store,
        table=table,
        mode=mode,
        schedule=_cron(r, data.get("schedule")),
        partitioning=partitioning,
        page_rows=page_rows,
        rules=tuple(rules),
        on_failure=on_failure,
        dependencies=tuple(deps),
        description=str(data.get("description") or ""),
        raw=data,
    )


def load_spec(path: Path | str) -> JobSpec:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(
            path, "(root)", f"is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_spec(data, path)


def load_specs(jobs_dir: Path | str) -> list[JobSpec]:
    """Every *.json spec of a directory, sorted by file name; job ids must be unique."""
    jobs_dir = Path(jobs_dir)
    if not jobs_dir.is_dir():
        raise FileNotFoundError(f"sync jobs directory {jobs_dir} does not exist")
    specs: list[JobSpec] = []
    seen: dict[str, str] = {}
    for path in sorted(jobs_dir.glob("*.json")):
        spec = load_spec(path)
        if spec.job_id in seen:
            raise SpecError(
                path, "job_id", f"{spec.job_id!r} is already defined in {seen[spec.job_id]}"
            )
        seen[spec.job_id] = str(path)
        specs.append(spec)
    return specs


def find_spec(jobs_dir: Path | str, job_id: str) -> JobSpec:
    specs = load_specs(jobs_dir)
    for spec in specs:
        if spec.job_id == job_id:
            return spec
    raise LookupError(
        f"no sync job {job_id!r} in {jobs_dir}; known: "
        f"{', '.join(s.job_id for s in specs) or 'none'}"
    )


#: The shipped jobs (the seed's historical-sync-001 demo).
SHIPPED_JOBS_DIR = Path(__file__).parent / "jobs"
