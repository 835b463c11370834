"""The CLI finds a code location the way Dagster does, and names what it cannot load."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecm_assets.cli import main
from ecm_assets.operations.locations import LocationError, load_locations


def test_definitions_option_and_pyproject_default(tmp_path: Path) -> None:
    [loc] = load_locations(definitions="ecm_assets.definitions:defs")
    assert "case_events" in loc.datasets and loc.warehouse is not None
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dagster]\nmodule_name = "ecm_assets.definitions"\ncode_location_name = "x"\n'
    )
    [default] = load_locations(cwd=tmp_path)
    assert default.name == "x" and set(default.datasets) == set(loc.datasets)


def test_a_file_with_a_broken_import_is_one_clean_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "defs.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(LocationError, match="ModuleNotFoundError"):
        load_locations(file=str(tmp_path / "defs.py"))
    assert main(["summary", "-f", str(tmp_path / "defs.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not_a_module_anywhere" in err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"module": "ecm_assets.definitions", "file": "x.py"}, "name the code location once"),
        ({"module": "no_such_module_here"}, "cannot import module 'no_such_module_here'"),
        ({"definitions": "ecm_assets.definitions:nope"}, "no Definitions object named 'nope'"),
        ({"workspace": "missing.yaml"}, "workspace file .* does not exist"),
        ({"module": "ecm_assets.definitions", "location": "other"}, "no code location named"),
    ],
)
def test_bad_location_options_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(LocationError, match=message):
        load_locations(cwd=tmp_path, **kwargs)
