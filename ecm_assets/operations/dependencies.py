"""Dependencies as conditions, not fixed delays: the dependency sensors.

A downstream partition P runs when (1) it is stale, i.e. some upstream partition it reads was
published after P's own latest publish (or P was never published), and (2) it is ready: every
upstream partition P is *aligned* with (the same date, or every day of a monthly P's month) is
published and, where the contract sets `max_age_hours`, the upstream change that makes P stale
was published within that window: a change older than that (the sensor was off, the change
sat behind a failed run) is applied deliberately, with a backfill, not silently days later.
Lookback history (P-L..P-1) may be missing: a deployment can start mid-history.

"Published" means an ASSET_MATERIALIZATION in the Dagster instance: the publish protocol emits
one for exactly the published partitions, and `ecm review approve` reports a runless one.

The first half of this module is a pure planner over dates and storage ids (no Dagster, no
clock), the second half the sensors that feed it from the instance. Each sensor's cursor holds
the last upstream storage id it has seen per upstream and the partitions still waiting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from ecm_assets.contracts.dataset import Dataset, DatasetContract, Grain, Upstream
from ecm_assets.contracts.periods import (
    contiguous_ranges,
    last_day,
    partition_of,
    partitions_between,
    shift,
)
from ecm_assets.operations.schedules import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from ecm_assets.orchestration.factory import (
    CORRECTION_CLASS_TAG,
    REASON_TAG,
    RESTATEMENT_TAG,
    REVIEW_TAG,
    TRIGGER_TAG,
)
from ecm_assets.orchestration.partitions import partitions_for

#: TRIGGER_TAG value of every run a dependency sensor requests.
TRIGGER = "dependency_sensor"
#: Most waiting partitions the cursor carries; the oldest are dropped first. Dropping is safe:
#: a waiting partition becomes ready only through a new upstream publish, which re-finds it.
MAX_PENDING = 400
#: Correction classes (set by the landing sensor) from least to most severe; a downstream run
#: triggered by several upstream runs carries the most severe one.
CORRECTION_CLASSES = ("open_window", "lookback", "closed_period")
#: Run tags copied from the upstream runs that triggered a request, so an automated correction
#: of a closed period stays a restatement held for review all the way down. The backfill mode
#: is not copied: non-publishing modes produce no materialization, so they trigger nothing.
PROPAGATED_TAGS = (CORRECTION_CLASS_TAG, RESTATEMENT_TAG, REVIEW_TAG, REASON_TAG)


# -- pure planner ------------------------------------------------------------------------


def _check_grains(downstream: Grain, upstream: Grain) -> None:
    """Finer downstream than upstream (a daily partition of a monthly input) has no use yet."""
    if downstream == "daily" and upstream == "monthly":
        raise ValueError("a daily dataset reading a monthly upstream is not supported")


def aligned(partition: date, grain: Grain, upstream_grain: Grain = "daily") -> list[date]:
    """Upstream partitions a downstream partition directly covers; all must be published."""
    _check_grains(grain, upstream_grain)
    if grain == upstream_grain:
        return [partition]
    return partitions_between(partition, last_day(partition, grain), upstream_grain)


def window(
    partition: date, grain: Grain, upstream: Upstream, upstream_grain: Grain = "daily"
) -> list[date]:
    """Every upstream partition a downstream partition reads: lookback history plus aligned."""
    covered = aligned(partition, grain, upstream_grain)
    first = shift(covered[0], upstream_grain, -upstream.lookback_partitions)
    return partitions_between(first, covered[-1], upstream_grain)


def affected(
    upstream_partition: date, grain: Grain, upstream: Upstream, upstream_grain: Grain = "daily"
) -> list[date]:
    """Downstream partitions whose window contains an upstream partition (d..d+L, or its month)."""
    _check_grains(grain, upstream_grain)
    reach = shift(upstream_partition, upstream_grain, upstream.lookback_partitions)
    return partitions_between(
        partition_of(upstream_partition, grain),
        partition_of(last_day(reach, upstream_grain), grain),
        grain,
    )


@dataclass(frozen=True)
class Candidates:
    """Downstream partitions to evaluate, and those left out because they do not exist yet."""

    partitions: tuple[date, ...]
    incomplete: tuple[date, ...] = ()


def candidates(
    contract: DatasetContract,
    new_upstream: Mapping[str, Iterable[date]],
    pending: Iterable[date],
    last_partition: date | None,
    upstream_grains: Mapping[str, Grain] | None = None,
) -> Candidates:
    """Downstream partitions touched by newly published upstream partitions, plus pending ones.

    Partitions after `last_partition` (the downstream's last existing partition, e.g. the
    current month of a monthly report) are left out, not kept: their aligned upstream cannot
    be published before they exist, and that publish will find them again.
    """
    grains = upstream_grains or {}
    found: set[date] = set(pending)
    for u in contract.upstream:
        for d in new_upstream.get(u.dataset, ()):
            found.update(affected(d, contract.grain, u, grains.get(u.dataset, "daily")))
    if last_partition is None:
        return Candidates((), tuple(sorted(found)))
    return Candidates(
        tuple(sorted(p for p in found if p <= last_partition)),
        tuple(sorted(p for p in found if p > last_partition)),
    )


@dataclass(frozen=True)
class Ready:
    """A stale partition whose aligned upstream is published (and fresh enough)."""

    partition: date
    #: Newest upstream storage id over the partition's windows: the input state it will read.
    newest_input: int
    #: (upstream, storage id) of the window partitions published after this partition was:
    #: the publishes that make it stale, whose runs' tags the request carries.
    triggers: frozenset[tuple[str, int]]


@dataclass(frozen=True)
class Waiting:
    """A stale partition held back until its aligned upstream is published (or fresh)."""

    partition: date
    reason: str


@dataclass(frozen=True)
class Plan:
    """What to do with each candidate partition."""

    ready: tuple[Ready, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    up_to_date: tuple[date, ...] = ()


def _dates(days: Sequence[date], limit: int = 3) -> str:
    shown = ", ".join(d.isoformat() for d in days[:limit])
    return shown + (f" (+{len(days) - limit} more)" if len(days) > limit else "")


def _hours(h: float) -> str:
    return f"{h:.1f}".rstrip("0").rstrip(".")


def plan(
    contract: DatasetContract,
    partitions: Iterable[date],
    upstream_ids: Mapping[str, Mapping[date, int]],
    downstream_ids: Mapping[date, int],
    published_at: Mapping[str, Mapping[date, datetime]],
    now: datetime,
    upstream_grains: Mapping[str, Grain] | None = None,
) -> Plan:
    """Decide for each candidate: ready (stale, aligned upstream published), waiting, or drop.

    `upstream_ids` and `downstream_ids` map partitions to their latest materialization
    storage id (absent: never published); `published_at` maps the storage ids of upstreams
    with a `max_age_hours` to their publish time.
    """
    grains = upstream_grains or {}
    ready: list[Ready] = []
    waiting: list[Waiting] = []
    up_to_date: list[date] = []
    for p in sorted(set(partitions)):
        own = downstream_ids.get(p)
        newest = 0
        triggers: set[tuple[str, int]] = set()
        problems: list[str] = []
        for u in contract.upstream:
            ug = grains.get(u.dataset, "daily")
            ids = upstream_ids.get(u.dataset, {})
            changed: list[tuple[int, date]] = []
            for d in window(p, contract.grain, u, ug):
                sid = ids.get(d)
                if sid is not None:
                    newest = max(newest, sid)
                    if own is None or sid > own:
                        triggers.add((u.dataset, sid))
                        changed.append((sid, d))
            covered = aligned(p, contract.grain, ug)
            missing = [d for d in covered if d not in ids]
            if missing:
                problems.append(f"{u.dataset} {_dates(missing)} not published")
            if u.max_age_hours is not None and changed:
                times = published_at.get(u.dataset, {})
                sid, d = max(changed)
                limit = timedelta(hours=u.max_age_hours)
                if sid not in times or now - times[sid] > limit:
                    age = (
                        f"{_hours((now - times[sid]).total_seconds() / 3600)}h ago"
                        if sid in times
                        else "at an unknown time"
                    )
                    problems.append(
                        f"{u.dataset} {d.isoformat()} last published {age}; contract wants "
                        f"<= {_hours(u.max_age_hours)}h (apply older changes with a backfill)"
                    )
        if own is not None and not triggers:
            up_to_date.append(p)
        elif problems:
            waiting.append(Waiting(p, "; ".join(problems)))
        else:
            ready.append(Ready(p, newest, frozenset(triggers)))
    return Plan(tuple(ready), tuple(waiting), tuple(up_to_date))


def merge_tags(tagged: Iterable[tuple[int, Mapping[str, str]]]) -> dict[str, str]:
    """Propagated tags of a partition from its triggering runs' tags, keyed by storage id.

    The review flag is kept if any run had it, the correction class is the most severe, and a
    restatement or reason code comes from the newest run that set one.
    """
    out: dict[str, str] = {}
    classes: list[str] = []
    for _, tags in sorted(tagged, key=lambda item: item[0]):
        for tag in (RESTATEMENT_TAG, REASON_TAG):
            if tags.get(tag):
                out[tag] = tags[tag]
        if tags.get(REVIEW_TAG):
            out[REVIEW_TAG] = tags[REVIEW_TAG]
        if tags.get(CORRECTION_CLASS_TAG):
            classes.append(tags[CORRECTION_CLASS_TAG])
    if classes:
        rank = {c: i for i, c in enumerate(CORRECTION_CLASSES)}
        out[CORRECTION_CLASS_TAG] = max(classes, key=lambda c: rank.get(c, len(rank)))
    return out


@dataclass(frozen=True)
class DependencyCursor:
    """Last upstream storage id seen per upstream, and the partitions still waiting."""

    last_seen: Mapping[str, int] = field(default_factory=dict)
    pending: tuple[date, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "last_seen": dict(sorted(self.last_seen.items())),
                "pending": [p.isoformat() for p in sorted(self.pending)[-MAX_PENDING:]],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> DependencyCursor:
        """An empty cursor starts from the beginning: only stale partitions are requested."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            return cls(
                {str(k): int(v) for k, v in raw.get("last_seen", {}).items()},
                tuple(date.fromisoformat(p) for p in raw.get("pending", [])),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"dependency sensor cursor {text[:200]!r} is not valid ({exc}); reset the "
                "cursor to empty in the UI to re-evaluate from the beginning"
            ) from exc


# -- sensors -----------------------------------------------------------------------------


def sensor_interval_seconds() -> int:
    """How often the daemon evaluates the sensors (ECM_SENSOR_INTERVAL_SECONDS, default 60)."""
    return int(os.environ.get("ECM_SENSOR_INTERVAL_SECONDS", "60"))


def _day(key: str | None) -> date | None:
    try:
        return date.fromisoformat(key[:10]) if key else None
    except ValueError:
        return None


def _latest_ids(
    instance: dg.DagsterInstance,
    asset: str,
    partitions: Iterable[date] | None = None,
    after: int | None = None,
) -> dict[date, int]:
    """Latest materialization storage id per partition (optionally of some, or newer ones)."""
    keys = {p.isoformat() for p in partitions} if partitions is not None else None
    if keys is not None and not keys:
        return {}
    found = instance.get_latest_storage_id_by_partition(
        dg.AssetKey(asset),
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        partitions=keys,
        after_cursor=after,
    )
    return {d: sid for k, sid in found.items() if (d := _day(k)) is not None}


def _records(
    instance: dg.DagsterInstance, asset: str, storage_ids: Iterable[int]
) -> dict[int, dg.EventLogRecord]:
    ids = sorted(set(storage_ids))
    if not ids:
        return {}
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), storage_ids=ids), limit=len(ids)
    )
    return {r.storage_id: r for r in result.records}


def _source_run_id(record: dg.EventLogRecord) -> str | None:
    """The run that produced a publish; an approval's runless event names the held run."""
    if record.run_id:
        return record.run_id
    materialization = record.asset_materialization
    value: Any = materialization.metadata.get("run_id") if materialization else None
    value = getattr(value, "value", value)
    return value if isinstance(value, str) and value else None


@dataclass
class _Tags:
    """Propagated tags per upstream run id, looked up once per tick."""

    instance: dg.DagsterInstance
    cache: dict[str, dict[str, str]] = field(default_factory=dict)

    def of(self, run_id: str | None) -> dict[str, str]:
        if not run_id:
            return {}
        if run_id not in self.cache:
            run = self.instance.get_run_by_id(run_id)
            tags = run.tags if run is not None else {}
            self.cache[run_id] = {t: tags[t] for t in PROPAGATED_TAGS if tags.get(t)}
        return self.cache[run_id]


@dataclass(frozen=True)
class Tick:
    """What one evaluation asks for, what it tells the operator, and the next cursor."""

    run_requests: list[dg.RunRequest]
    messages: list[str]
    cursor: DependencyCursor


def evaluate(
    instance: dg.DagsterInstance,
    contract: DatasetContract,
    cursor: DependencyCursor,
    now: datetime,
    upstream_grains: Mapping[str, Grain] | None = None,
) -> Tick:
    """One tick of a dependency sensor, reading publishes from the instance as of `now`."""
    grains = dict(upstream_grains or {})
    last_seen = dict(cursor.last_seen)
    new: dict[str, list[date]] = {}
    for u in contract.upstream:
        found = _latest_ids(instance, u.dataset, after=cursor.last_seen.get(u.dataset))
        new[u.dataset] = sorted(found)
        if found:
            last_seen[u.dataset] = max(last_seen.get(u.dataset, 0), *found.values())
    with dg.partition_loading_context(effective_dt=now):
        last_key = partitions_for(contract).get_last_partition_key()
    found_candidates = candidates(contract, new, cursor.pending, _day(last_key), grains)
    messages: list[str] = []
    if found_candidates.incomplete:
        messages.append(
            f"{contract.name} {_dates(list(found_candidates.incomplete))} not requested: "
            f"the period is not complete yet (last partition {last_key or 'none'})"
        )
    parts = found_candidates.partitions
    if not parts:
        if not any(new.values()):
            seen = ", ".join(
                f"{k} after storage id {v}" for k, v in sorted(cursor.last_seen.items())
            )
            messages.append(f"no new upstream publishes ({seen or 'none published yet'})")
        return Tick([], messages, DependencyCursor(last_seen, ()))

    upstream_ids = {
        u.dataset: _latest_ids(
            instance,
            u.dataset,
            {
                d
                for p in parts
                for d in window(p, contract.grain, u, grains.get(u.dataset, "daily"))
            },
        )
        for u in contract.upstream
    }
    downstream_ids = _latest_ids(instance, contract.name, parts)
    aged = {
        u.dataset: {
            upstream_ids[u.dataset][d]
            for p in parts
            for d in window(p, contract.grain, u, grains.get(u.dataset, "daily"))
            if d in upstream_ids[u.dataset]
        }
        for u in contract.upstream
        if u.max_age_hours is not None
    }
    published_at = {
        name: {
            sid: datetime.fromtimestamp(r.timestamp, UTC)
            for sid, r in _records(instance, name, sids).items()
        }
        for name, sids in aged.items()
    }
    result = plan(contract, parts, upstream_ids, downstream_ids, published_at, now, grains)

    records: dict[str, dict[int, dg.EventLogRecord]] = {
        u.dataset: _records(
            instance,
            u.dataset,
            {sid for r in result.ready for n, sid in r.triggers if n == u.dataset},
        )
        for u in contract.upstream
    }
    tags_of = _Tags(instance)
    propagated: dict[date, dict[str, str]] = {}
    for r in result.ready:
        tagged = [
            (sid, tags_of.of(_source_run_id(records[n][sid])))
            for n, sid in r.triggers
            if sid in records[n]
        ]
        propagated[r.partition] = merge_tags(tagged)
    by_partition = {r.partition: r for r in result.ready}
    ranges = contiguous_ranges(
        by_partition,
        contract.grain,
        labels={p: tuple(sorted(t.items())) for p, t in propagated.items()},
    )
    requests: list[dg.RunRequest] = []
    for first, last in ranges:
        owned = partitions_between(first, last, contract.grain)
        newest = max(by_partition[p].newest_input for p in owned)
        requests.append(
            dg.RunRequest(
                run_key=f"{contract.name}:{first.isoformat()}..{last.isoformat()}:{newest}",
                asset_selection=[dg.AssetKey(contract.name)],
                tags={
                    **propagated[first],
                    TRIGGER_TAG: TRIGGER,
                    PARTITION_RANGE_START_TAG: first.isoformat(),
                    PARTITION_RANGE_END_TAG: last.isoformat(),
                },
            )
        )
    if result.waiting:
        shown = "; ".join(f"{w.partition.isoformat()}: {w.reason}" for w in result.waiting[:5])
        more = len(result.waiting) - 5
        messages.append(
            f"waiting: {contract.name} {shown}" + (f" (+{more} more waiting)" if more > 0 else "")
        )
    if result.up_to_date and not requests and not result.waiting:
        messages.append(
            f"{contract.name} {_dates(list(result.up_to_date))} already up to date with "
            f"{', '.join(u.dataset for u in contract.upstream)}"
        )
    return Tick(
        requests, messages, DependencyCursor(last_seen, tuple(w.partition for w in result.waiting))
    )


def build_dependency_sensor(
    dataset: Dataset,
    upstream_grains: Mapping[str, Grain],
    clock: Callable[[], datetime] | None = None,
) -> dg.SensorDefinition:
    """The `<asset>__upstream_ready` sensor of one dataset; STOPPED until an operator starts it."""
    contract = dataset.contract
    grains = {u.dataset: upstream_grains[u.dataset] for u in contract.upstream}
    for g in grains.values():
        _check_grains(contract.grain, g)
    now_of = clock or (lambda: datetime.now(UTC))
    names = ", ".join(
        u.dataset + (f" (published within {_hours(u.max_age_hours)}h)" if u.max_age_hours else "")
        for u in contract.upstream
    )

    @dg.sensor(
        name=dependency_sensor_name(contract),
        target=[dg.AssetKey(contract.name)],
        minimum_interval_seconds=sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Run {contract.name} partitions once the upstream partitions they read are "
            f"published: {names}. Deployed STOPPED: switch on deliberately."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = evaluate(
            context.instance,
            contract,
            DependencyCursor.from_json(context.cursor),
            now_of(),
            grains,
        )
        for message in tick.messages:
            context.log.info(message)
        cursor = tick.cursor.to_json()
        if tick.run_requests:
            return dg.SensorResult(run_requests=tick.run_requests, cursor=cursor)
        return dg.SensorResult(skip_reason=" | ".join(tick.messages), cursor=cursor)

    return _sensor


def dependency_sensor_name(contract: DatasetContract) -> str:
    return f"{contract.name}__upstream_ready"


def build_dependency_sensors(
    datasets: Sequence[Dataset], clock: Callable[[], datetime] | None = None
) -> list[dg.SensorDefinition]:
    """One dependency sensor per dataset that reads other datasets; `clock` is for tests."""
    grains: dict[str, Grain] = {d.contract.name: d.contract.grain for d in datasets}
    for d in datasets:
        unknown = [u.dataset for u in d.contract.upstream if u.dataset not in grains]
        if unknown:
            raise ValueError(f"dataset {d.contract.name}: upstream {unknown} are not datasets")
    return [
        build_dependency_sensor(d, grains, clock)
        for d in datasets
        if d.contract.upstream and not dependency_sensor_refusal(d.contract, grains)
    ]


def dependency_sensor_refusal(contract: DatasetContract, grains: Mapping[str, Grain]) -> str:
    """Why a dataset gets no dependency sensor ("" if it can): the sensor follows daily and
    monthly partitions, aligned by date, only."""
    kinds = {contract.grain, *(grains.get(u.dataset, "daily") for u in contract.upstream)}
    other = sorted(kinds - {"daily", "monthly"})
    if not other:
        return ""
    return (
        f"{contract.name} has or reads {'/'.join(other)} partitions; the dependency sensor "
        "aligns daily and monthly partitions by date only. Run it with `ecm materialize` "
        "(list and hash datasets: every key at once, e.g. --partition FIRST...LAST) or a "
        "schedule of your own"
    )
