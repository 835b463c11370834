"""The README's "Add your own dataset" example runs exactly as printed."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Add your own dataset", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README 'Add your own dataset' has no python block"
    return blocks[0]


def test_readme_example_runs_as_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example's data_dir="data" is relative
    landing = tmp_path / "data" / "landing" / "meter_readings" / "ingest_date=2024-01-02"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text(
        "meter_id,read_at,kwh\n"
        "M1,2024-01-01T22:30:00Z,1.5\n"  # 23:30 in Berlin: business day 2024-01-01
        "M2,2024-01-02T10:00:00Z,2\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)  # exactly as printed
    defs = namespace["defs"]
    assert isinstance(defs, dg.Definitions)
    assert [s.name for s in defs.sensors] == [
        "meter_readings__landing_files",
        "ecm_run_failure_alert",
        "ecm_outbox_delivery",
    ]
    with dg.instance_for_test() as instance:
        for day in ("2024-01-01", "2024-01-02"):
            result = dg.materialize(
                list(defs.assets), resources=defs.resources, partition_key=day, instance=instance
            )
            assert result.success
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.sql(
            "SELECT business_date::VARCHAR, meter_id, kwh FROM meter_readings ORDER BY 1"
        ).fetchall()
    assert rows == [("2024-01-01", "M1", 1.5), ("2024-01-02", "M2", 2.0)]
