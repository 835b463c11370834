"""Find a code location the way Dagster does, so the `ecm` CLI serves any team's datasets.

A location is named by `-m module`, `-f file.py`, `-w workspace.yaml` (every location in it,
or the one `-l` names), `--definitions module:attribute` / `file.py:attribute`, or by default
`[tool.dagster] module_name` in ./pyproject.toml; without any of them, the shipped
`ecm_assets.definitions`. Its `Definitions` object is the one module-level attribute of that
type (or `defs`). The datasets behind its assets, the warehouse its IO manager publishes to
and its landing and reference roots are read from that object, never guessed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import dagster as dg
import yaml

from ecm_assets.adapters.backends import is_postgres_url
from ecm_assets.contracts.dataset import Dataset
from ecm_assets.contracts.registry import dataset_for
from ecm_assets.orchestration.factory import IO_MANAGER_KEY

SHIPPED_MODULE = "ecm_assets.definitions"


class LocationError(LookupError):
    """The code location cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class Location:
    """One loaded code location: its definitions and the datasets behind its assets."""

    name: str
    defs: dg.Definitions
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def _resource_attr(self, key: str, attr: str) -> str | None:
        resource = (self.defs.resources or {}).get(key)
        return getattr(resource, attr, None)

    @property
    def warehouse(self) -> Path | str | None:
        """The DuckDB file (a Path) or the postgresql:// URL the IO manager publishes to."""
        database = self._resource_attr(IO_MANAGER_KEY, "database")
        if not database:
            return None
        return database if is_postgres_url(database) else Path(database)

    @property
    def landing_root(self) -> Path | None:
        root = self._resource_attr("landing", "root")
        return Path(root) if root else None

    @property
    def reference_root(self) -> Path | None:
        root = self._resource_attr("reference", "root")
        return Path(root) if root else None


def _find_definitions(module: ModuleType, attribute: str | None, where: str) -> dg.Definitions:
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, dg.Definitions):
            raise LocationError(f"{where} has no Definitions object named {attribute!r}")
        return found
    candidates = {k: v for k, v in vars(module).items() if isinstance(v, dg.Definitions)}
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    if "defs" in candidates:
        return candidates["defs"]
    if not candidates:
        raise LocationError(f"{where} defines no module-level dagster Definitions object")
    raise LocationError(
        f"{where} defines several Definitions objects ({', '.join(sorted(candidates))}); "
        "name one with --definitions MODULE:ATTRIBUTE"
    )


def _import_module(name: str, working_directory: Path | None) -> ModuleType:
    if working_directory is not None and str(working_directory) not in sys.path:
        sys.path.insert(0, str(working_directory))
    try:
        loaded = sys.modules.get(name)
        # A location reads its paths from the environment when it is built: load it afresh
        # for each command, as a new `ecm` process would, not from a stale import.
        return importlib.reload(loaded) if loaded is not None else importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise LocationError(f"cannot import module {name!r}: {exc}") from None
    except Exception as exc:  # the user's code failed to load: one line, not a traceback
        raise LocationError(f"loading module {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(path: Path, working_directory: Path | None) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise LocationError(f"definitions file {path} does not exist")
    if working_directory is not None and str(working_directory) not in sys.path:
        sys.path.insert(0, str(working_directory))
    name = f"_ecm_location_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LocationError(f"cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed to load: one line, not a traceback
        del sys.modules[name]
        raise LocationError(f"loading {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _location(name: str, defs: dg.Definitions) -> Location:
    keys = defs.get_repository_def().asset_graph.get_all_asset_keys()
    datasets = {}
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        dataset = dataset_for(key.to_user_string())
        if dataset is not None:
            datasets[dataset.contract.name] = dataset
    return Location(name, defs, datasets)


def from_module(name: str, attribute: str | None = None, cwd: Path | None = None) -> Location:
    module = _import_module(name, cwd)
    return _location(name, _find_definitions(module, attribute, f"module {name}"))


def from_file(path: Path, attribute: str | None = None, cwd: Path | None = None) -> Location:
    module = _import_file(path, cwd or path.resolve().parent)
    return _location(path.stem, _find_definitions(module, attribute, f"file {path}"))


def from_workspace(path: Path) -> list[Location]:
    """Every location a workspace.yaml loads (python_module, python_file, python_package)."""
    if not path.is_file():
        raise LocationError(f"workspace file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LocationError(f"workspace file {path} is not YAML: {exc}") from None
    base = path.resolve().parent
    out: list[Location] = []
    for entry in raw.get("load_from") or []:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise LocationError(f"{path}: load_from entry {entry!r} is not understood")
        kind, spec = next(iter(entry.items()))
        spec = {"module_name": spec, "relative_path": spec} if isinstance(spec, str) else spec
        cwd = base / spec["working_directory"] if spec.get("working_directory") else base
        attribute = spec.get("attribute")
        if kind in ("python_module", "python_package"):
            module = spec.get("module_name") or spec.get("package_name")
            loc = from_module(module, attribute, cwd)
        elif kind == "python_file":
            loc = from_file(base / spec["relative_path"], attribute, cwd)
        else:
            raise LocationError(f"{path}: load_from kind {kind!r} is not supported by ecm")
        out.append(Location(spec.get("location_name") or loc.name, loc.defs, loc.datasets))
    if not out:
        raise LocationError(f"workspace file {path} loads no code location")
    return out


def from_pyproject(cwd: Path) -> Location | None:
    """The location `[tool.dagster] module_name` of ./pyproject.toml names, if any."""
    pyproject = cwd / "pyproject.toml"
    if not pyproject.is_file():
        return None
    config = tomllib.loads(pyproject.read_text()).get("tool", {}).get("dagster", {})
    module = config.get("module_name")
    if not module:
        return None
    loc = from_module(module, config.get("attribute"), cwd)
    return Location(config.get("code_location_name") or loc.name, loc.defs, loc.datasets)


def load_locations(
    *,
    module: str | None = None,
    file: str | None = None,
    workspace: str | None = None,
    definitions: str | None = None,
    location: str | None = None,
    cwd: Path | None = None,
) -> list[Location]:
    """The locations the CLI options name (see the module docstring for the order)."""
    cwd = cwd or Path.cwd()
    given = [o for o in (module, file, workspace, definitions) if o]
    if len(given) > 1:
        raise LocationError("name the code location once: one of -m, -f, -w or --definitions")
    if definitions:
        target, _, attribute = definitions.partition(":")
        if target.endswith(".py"):
            found = [from_file(cwd / target, attribute or None)]
        else:
            found = [from_module(target, attribute or None, cwd)]
    elif module:
        found = [from_module(module, None, cwd)]
    elif file:
        found = [from_file(cwd / file)]
    elif workspace:
        found = from_workspace(cwd / workspace)
    else:
        default = from_pyproject(cwd)
        found = [default] if default is not None else [from_module(SHIPPED_MODULE)]
    if location is not None:
        chosen = [loc for loc in found if loc.name == location]
        if not chosen:
            raise LocationError(
                f"no code location named {location!r}; locations: "
                f"{', '.join(loc.name for loc in found)}"
            )
        found = chosen
    return found


def datasets_of(locations: Sequence[Location]) -> dict[str, tuple[Location, Dataset]]:
    """Every dataset of these locations by name; one name in two locations is refused."""
    out: dict[str, tuple[Location, Dataset]] = {}
    for loc in locations:
        for name, dataset in loc.datasets.items():
            if name in out:
                raise LocationError(
                    f"dataset {name!r} is defined in locations {out[name][0].name!r} and "
                    f"{loc.name!r}; choose one with -l LOCATION"
                )
            out[name] = (loc, dataset)
    return out
