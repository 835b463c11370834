"""Registered transform processors: pure DataFrame -> DataFrame steps named by a job spec.

A processor never drops or adds rows and keeps the key, cursor, version and delete columns,
so counts reconcile and the cursor stays exact; it only reshapes values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Processor:
    name: str
    apply: Callable[[pd.DataFrame, Mapping[str, Any]], pd.DataFrame]
    config_keys: tuple[str, ...] = ()

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


PROCESSORS: dict[str, Processor] = {
    "identity": Processor("identity", _identity),
    "customer_transformer": Processor(
        "customer_transformer", _customer, ("strip", "lowercase", "drop")
    ),
}


def register_processor(processor: Processor) -> None:
    """Add a processor a spec can name (call before loading the specs)."""
    if processor.name in PROCESSORS and PROCESSORS[processor.name] is not processor:
        raise ValueError(f"a processor named {processor.name!r} is already registered")
    PROCESSORS[processor.name] = processor
