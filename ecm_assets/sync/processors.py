"""Registered transform processors: pure table -> table steps named by a job spec.

A processor never drops or adds rows and keeps the key, cursor, version and delete columns,
so counts reconcile and the cursor stays exact; it only reshapes values. Pages arrive as
Arrow tables; a processor may work on them directly (`apply_arrow`, no copy) or on pandas
(`apply`, converted there and back), so a user's pandas processor still works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Processor:
    name: str
    apply: Callable[[pd.DataFrame, Mapping[str, Any]], pd.DataFrame]
    config_keys: tuple[str, ...] = ()
    apply_arrow: Callable[[pa.Table, Mapping[str, Any]], pa.Table] | None = None

    def run(self, table: pa.Table, config: Mapping[str, Any]) -> pa.Table:
        """Apply to one page; the row count must not change (counts reconcile)."""
        if self.apply_arrow is not None:
            out = self.apply_arrow(table, config)
        else:
            out = pa.Table.from_pandas(self.apply(table.to_pandas(), config), preserve_index=False)
        if out.num_rows != table.num_rows:
            raise ValueError(
                f"processor {self.name} returned {out.num_rows} rows for {table.num_rows}; "
                "a processor must not add or drop rows"
            )
        return out

    def check_config(self, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - set(self.config_keys))
        if unknown:
            allowed = ", ".join(self.config_keys) or "none"
            raise ValueError(
                f"processor {self.name} has no option {unknown[0]!r}; allowed: {allowed}"
            )
        for key in ("lowercase", "strip", "drop"):
            if key in config and (
                not isinstance(config[key], list)
                or not all(isinstance(c, str) for c in config[key])
            ):
                raise ValueError(f"option {key!r} must be a list of column names")


def _identity(frame: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    return frame


def _customer(frame: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Normalise customer context: trimmed text, lower-cased emails, dropped columns."""
    out = frame.copy(deep=False)
    for column in config.get("strip", []):
        if column in out.columns:
            out[column] = out[column].str.strip()
    for column in config.get("lowercase", []):
        if column in out.columns:
            out[column] = out[column].str.lower()
    drop = [c for c in config.get("drop", []) if c in out.columns]
    return out.drop(columns=drop) if drop else out


def _text_column(table: pa.Table, column: str, option: str) -> pa.ChunkedArray | None:
    values = table.column(column)
    if pa.types.is_null(values.type):
        return None
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise ValueError(
            f"processor customer_transformer option {option!r}: column {column} is "
            f"{values.type}, not text"
        )
    return values


def _customer_arrow(table: pa.Table, config: Mapping[str, Any]) -> pa.Table:
    """`_customer` on Arrow columns (same result, no pandas round-trip)."""
    for option, fn in (("strip", pc.utf8_trim_whitespace), ("lowercase", pc.utf8_lower)):
        for column in config.get(option, []):
            if column in table.column_names:
                values = _text_column(table, column, option)
                if values is not None:
                    i = table.column_names.index(column)
                    table = table.set_column(i, column, fn(values))
    drop = [c for c in config.get("drop", []) if c in table.column_names]
    return table.drop_columns(drop) if drop else table


PROCESSORS: dict[str, Processor] = {
    "identity": Processor("identity", _identity, apply_arrow=lambda table, config: table),
    "customer_transformer": Processor(
        "customer_transformer", _customer, ("strip", "lowercase", "drop"), _customer_arrow
    ),
}


def register_processor(processor: Processor) -> None:
    """Add a processor a spec can name (call before loading the specs)."""
    if processor.name in PROCESSORS and PROCESSORS[processor.name] is not processor:
        raise ValueError(f"a processor named {processor.name!r} is already registered")
    PROCESSORS[processor.name] = processor
