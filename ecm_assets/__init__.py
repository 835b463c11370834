"""ecm_assets: safe batch recompute for Dagster. The public API a code location uses.

A dataset is a `DatasetContract` (schema, partitioning, publish mode, inputs) plus a pure
transform, optionally with a `QualityContract`; `build_definitions(datasets=[...])` turns a
list of them into a complete `dagster.Definitions`. See docs/datasets.md.

The contract side imports no Dagster; `build_definitions` is loaded on first use so that pure
transforms and their tests stay free of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecm_assets.contracts.dataset import (
    Column,
    Dataset,
    DatasetContract,
    LandingSource,
    PartitioningError,
    PartitionKeyError,
    Upstream,
    hash_bucket,
    partition_key,
)
from ecm_assets.contracts.quality import (
    ControlTotal,
    Drift,
    Freshness,
    NullRate,
    QualityContract,
    QuarantineRate,
    Referential,
    RowCount,
    Severity,
    TimeBound,
    UniqueKey,
)
from ecm_assets.contracts.transform import (
    REJECT_COLUMNS,
    PartitionWindow,
    TransformResult,
    UpstreamRelation,
    attribute_partitions,
    run_sql,
)

if TYPE_CHECKING:
    from ecm_assets.location import build_definitions

__all__ = [
    "REJECT_COLUMNS",
    "Column",
    "ControlTotal",
    "Dataset",
    "DatasetContract",
    "Drift",
    "Freshness",
    "LandingSource",
    "NullRate",
    "PartitionKeyError",
    "PartitionWindow",
    "PartitioningError",
    "QualityContract",
    "QuarantineRate",
    "Referential",
    "RowCount",
    "Severity",
    "TimeBound",
    "TransformResult",
    "UniqueKey",
    "Upstream",
    "UpstreamRelation",
    "attribute_partitions",
    "build_definitions",
    "hash_bucket",
    "partition_key",
    "run_sql",
]


def __getattr__(name: str) -> Any:
    if name == "build_definitions":
        from ecm_assets.location import build_definitions

        return build_definitions
    raise AttributeError(f"module 'ecm_assets' has no attribute {name!r}")
