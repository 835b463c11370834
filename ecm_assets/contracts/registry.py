"""Contracts and datasets by name, so the IO manager can read any registered dataset's table
and the `ecm` CLI can find the datasets behind the assets of any code location it loads."""

from __future__ import annotations

from ecm_assets.contracts.dataset import Dataset, DatasetContract

_CONTRACTS: dict[str, DatasetContract] = {}
_DATASETS: dict[str, Dataset] = {}


def register(contract: DatasetContract, dataset: Dataset | None = None) -> None:
    known = _CONTRACTS.get(contract.name)
    if known is not None and known != contract:
        raise ValueError(f"two different contracts are registered as {contract.name!r}")
    _CONTRACTS[contract.name] = contract
    if dataset is not None:
        _DATASETS[contract.name] = dataset


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


def dataset_for(name: str) -> Dataset | None:
    """The dataset an asset of this name was built from, if one was built in this process."""
    return _DATASETS.get(name)
