"""Contracts by dataset name, so the IO manager can read any registered dataset's table."""

from __future__ import annotations

from ecm_assets.contracts.dataset import DatasetContract

_CONTRACTS: dict[str, DatasetContract] = {}


def register(contract: DatasetContract) -> None:
    known = _CONTRACTS.get(contract.name)
    if known is not None and known != contract:
        raise ValueError(f"two different contracts are registered as {contract.name!r}")
    _CONTRACTS[contract.name] = contract


def contract_for(name: str) -> DatasetContract:
    try:
        return _CONTRACTS[name]
    except KeyError:
        raise KeyError(
            f"no dataset contract is registered for {name!r}; known: {sorted(_CONTRACTS)}"
        ) from None


def registered_contracts() -> list[DatasetContract]:
    """Every registered contract (the datasets of the loaded definitions), by name."""
    return [_CONTRACTS[name] for name in sorted(_CONTRACTS)]
