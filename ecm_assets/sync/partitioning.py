"""Which partition a source row belongs to: hash, range or list on the spec's key.

Hash buckets come from sha256 of the key's UTF-8 text (first 8 bytes, big endian, modulo
N): the same in every process, Python version and machine, and computed the same way in
DuckDB SQL for whole pages (`partition_sql`) and in Python for one key (`partition_of`).
Python's hash() is salted per process and must never decide a bucket.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from typing import Any

from ecm_assets.adapters.warehouse import quote_ident
from ecm_assets.sync.spec import PartitioningSpec


def hash_bucket(key: Any, partitions: int) -> int:
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def partition_of(spec: PartitioningSpec, key: Any) -> str | None:
    """The partition id of one key value (None: a list value no partition names)."""
    ids = spec.partition_ids
    if spec.strategy == "hash":
        return ids[hash_bucket(key, spec.partitions)]
    if spec.strategy == "range":
        return ids[bisect_right(list(spec.bounds), key)]
    text = str(key)
    return text if text in spec.values else None


def partition_sql(spec: PartitioningSpec) -> tuple[str, list[Any]]:
    """A DuckDB expression (and its parameters) giving each row's partition id."""
    col = quote_ident(spec.key)
    ids = spec.partition_ids
    if spec.strategy == "hash":
        width = len(ids[0])
        return (
            f"lpad(CAST(CAST(('0x' || left(sha256(CAST({col} AS VARCHAR)), 16)) AS UBIGINT) "
            f"% {int(spec.partitions)} AS VARCHAR), {width}, '0')",
            [],
        )
    if spec.strategy == "range":
        whens = " ".join(f"WHEN {col} < ? THEN '{ids[i]}'" for i in range(len(spec.bounds)))
        return f"CASE {whens} ELSE '{ids[-1]}' END", list(spec.bounds)
    return (
        f"CASE WHEN list_contains(?::VARCHAR[], CAST({col} AS VARCHAR)) THEN "
        f"CAST({col} AS VARCHAR) END",
        [list(spec.values)],
    )
