"""The public API and `build_definitions`: a list of datasets becomes a complete location."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import ecm_assets
from ecm_assets import Column, Dataset, DatasetContract, LandingSource, PartitionWindow, Upstream
from ecm_assets.case_sla.datasets import DATASETS

PUBLIC = {
    "Column",
    "ControlTotal",
    "Dataset",
    "DatasetContract",
    "LandingSource",
    "PartitionWindow",
    "QualityContract",
    "Referential",
    "RowCount",
    "Severity",
    "TransformResult",
    "UniqueKey",
    "Upstream",
    "build_definitions",
}


def test_public_names_import_from_the_package() -> None:
    assert set(ecm_assets.__all__) >= PUBLIC
    for name in ecm_assets.__all__:
        assert getattr(ecm_assets, name) is not None


def test_the_contract_side_imports_no_dagster() -> None:
    code = "import sys, ecm_assets; from ecm_assets import Dataset; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _kept(window: PartitionWindow) -> pd.DataFrame:
    return pd.DataFrame({"day": list(window.partitions), "n": 1})


SRC = Dataset(
    DatasetContract(
        name="loc_src",
        description="source",
        columns=(Column("day", "DATE", nullable=False), Column("n", "BIGINT")),
        partition_column="day",
        grain="daily",
        business_key=("day",),
        start="2015-01-01",
        end="2015-12-31",
        timezone="Asia/Jakarta",
        landing=LandingSource("loc_src", 2, ("day",), "day"),
    ),
    _kept,
)
DOWN = Dataset(
    DatasetContract(
        name="loc_down",
        description="downstream",
        columns=(Column("day", "DATE", nullable=False), Column("n", "BIGINT")),
        partition_column="day",
        grain="daily",
        business_key=("day",),
        upstream=(Upstream("loc_src"),),
        start="2015-01-01",
        timezone="Asia/Jakarta",
    ),
    lambda loc_src, window: loc_src,
)


def test_nothing_is_scheduled_or_sensed_unless_named(tmp_path: Path) -> None:
    defs = ecm_assets.build_definitions([SRC, DOWN], data_dir=tmp_path)
    assert list(defs.schedules or []) == []
    assert [s.name for s in defs.sensors or []] == ["ecm_run_failure_alert", "ecm_outbox_delivery"]
    repo = defs.get_repository_def()
    # The datasets, and the landing source they read as an external asset.
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == {
        "landing/loc_src",
        "loc_src",
        "loc_down",
    }
    assert set(defs.resources or {}) == {"warehouse_io_manager", "landing", "reference", "alerts"}
    assert defs.resources["warehouse_io_manager"].database == str(tmp_path / "warehouse.duckdb")
    src = repo.assets_defs_by_key[dg.AssetKey("loc_src")].partitions_def
    assert src.timezone == "Asia/Jakarta"
    keys = src.get_partition_keys()
    assert (keys[0], keys[-1], len(keys)) == ("2015-01-01", "2015-12-31", 365)


def test_opted_in_schedules_and_sensors_follow_the_contract(tmp_path: Path) -> None:
    defs = ecm_assets.build_definitions(
        [SRC, DOWN],
        data_dir=tmp_path,
        warehouse=tmp_path / "w.duckdb",
        lookback_schedule=["loc_src", "loc_down"],
        lookback_days=2,
        landing_sensors=["loc_src"],
        dependency_sensors=["loc_down"],
    )
    [schedule] = defs.schedules
    assert (schedule.name, schedule.execution_timezone) == (
        "daily_lookback_schedule",
        "Asia/Jakarta",
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert {s.name for s in defs.sensors} == {
        "loc_src__landing_files",
        "loc_down__upstream_ready",
        "ecm_run_failure_alert",
        "ecm_outbox_delivery",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookback_schedule": ["nope"]}, r"lookback_schedule: unknown datasets \['nope'\]"),
        ({"landing_sensors": ["loc_down"]}, r"\['loc_down'\] declare no landing source"),
        ({"dependency_sensors": ["loc_src"]}, r"\['loc_src'\] read no upstream"),
        ({"monthly_schedule": ["loc_src"]}, r"only monthly datasets"),
        ({"landing_sensors": "loc_src"}, r"list of dataset names"),
    ],
)
def test_bad_opt_ins_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        ecm_assets.build_definitions([SRC, DOWN], data_dir=tmp_path, **kwargs)


def test_datasets_without_start_or_twice_are_refused(tmp_path: Path) -> None:
    import dataclasses

    contract = dataclasses.replace(SRC.contract, start=None, end=None)
    no_start = dataclasses.replace(SRC, contract=contract)
    with pytest.raises(ValueError, match="declare where its partitions start"):
        ecm_assets.build_definitions([no_start], data_dir=tmp_path)
    with pytest.raises(ValueError, match="two datasets are named 'loc_src'"):
        ecm_assets.build_definitions([SRC, SRC], data_dir=tmp_path)


def test_the_shipped_location_is_one_call() -> None:
    from ecm_assets.definitions import defs

    names = {d.contract.name for d in DATASETS}
    assert {
        k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()
    } >= names
    keys = defs.get_repository_def().assets_defs_by_key[dg.AssetKey("case_events")]
    # The demo's partitions start where its data starts (2026-09-01), so the UI shows them filled.
    assert keys.partitions_def.get_first_partition_key() == "2026-09-01"


PG_URL = "postgresql://ecm@db.example:5432/warehouse"


def _pools_and_database(defs: dg.Definitions) -> tuple[set[str | None], str]:
    from ecm_assets.orchestration.factory import IO_MANAGER_KEY

    pools = {a.op.pool for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}
    return pools, (defs.resources or {})[IO_MANAGER_KEY].database


def test_the_warehouse_is_a_path_or_a_url_and_picks_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecm_assets.orchestration.factory import POSTGRES_POOL, WAREHOUSE_POOL, pool_for

    assert pool_for(tmp_path / "w.duckdb") == WAREHOUSE_POOL
    assert pool_for(f"duckdb:///{tmp_path}/w.duckdb") == WAREHOUSE_POOL
    assert pool_for(PG_URL) == POSTGRES_POOL

    by_path = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path, warehouse="w.duckdb")
    assert _pools_and_database(by_path) == ({WAREHOUSE_POOL}, str(Path("w.duckdb").resolve()))
    by_url = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path, warehouse=PG_URL)
    assert _pools_and_database(by_url) == ({POSTGRES_POOL}, PG_URL)
    # The sync jobs' assets write the same warehouse, so they share its pool.
    jobs = Path(ecm_assets.__file__).parent / "sync" / "jobs"
    with_sync = ecm_assets.build_definitions(
        DATASETS, data_dir=tmp_path, warehouse=PG_URL, jobs_dir=jobs
    )
    assert _pools_and_database(with_sync) == ({POSTGRES_POOL}, PG_URL)

    # ECM_WAREHOUSE_URL wins over ECM_WAREHOUSE, and is the default of the shipped location.
    monkeypatch.setenv("ECM_WAREHOUSE", str(tmp_path / "old.duckdb"))
    default = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path)
    assert _pools_and_database(default) == ({WAREHOUSE_POOL}, str(tmp_path / "old.duckdb"))
    monkeypatch.setenv("ECM_WAREHOUSE_URL", PG_URL)
    default = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path)
    pools, database = _pools_and_database(default)
    assert pools == {POSTGRES_POOL}
    assert isinstance(database, dg.EnvVar) and database.get_value() == PG_URL


def test_steps_run_in_the_run_process_unless_the_caller_picks_an_executor(
    tmp_path: Path,
) -> None:
    """No second interpreter per step (it re-imports the location); jobs inherit it."""
    for warehouse in ("w.duckdb", PG_URL):
        defs = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path, warehouse=warehouse)
        assert defs.executor is dg.in_process_executor
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.executor_def is dg.in_process_executor
    chosen = ecm_assets.build_definitions(
        DATASETS, data_dir=tmp_path, warehouse=PG_URL, executor=dg.multiprocess_executor
    )
    assert chosen.executor is dg.multiprocess_executor


def test_a_password_in_ecm_warehouse_url_never_reaches_the_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI's resource page shows resource config: the URL is referenced by the variable."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    secret = "postgresql://ecm:s3cret-pw@db.example:5432/warehouse"
    monkeypatch.setenv("ECM_WAREHOUSE_URL", secret)
    defs = ecm_assets.build_definitions(DATASETS, data_dir=tmp_path)
    repo = defs.get_repository_def()
    snap = RepositorySnap.from_def(repo)
    assert "s3cret-pw" not in repr(snap.resources)
    assert "ECM_WAREHOUSE_URL" in repr(snap.resources)


def test_ecm_reports_an_unreachable_postgresql_warehouse_in_one_line(capsys) -> None:
    from ecm_assets.cli import main

    code = main(["manifest", "--warehouse", "postgresql://ecm:secret@127.0.0.1:1/nowhere"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "127.0.0.1:1" in err, err
    assert "secret" not in err


def test_ecm_reads_the_warehouse_url_the_location_takes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The URL reaches the location as dg.EnvVar; the CLI must read its value, not fail."""
    from ecm_assets.cli import main
    from tests._backends import fresh_postgres_url

    with fresh_postgres_url() as url:
        monkeypatch.setenv("ECM_WAREHOUSE_URL", url)
        monkeypatch.setenv("ECM_DATA_DIR", str(tmp_path))
        code = main(["summary", "--json"])
        out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["warehouse"] == url
