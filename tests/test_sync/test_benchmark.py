"""benchmarks/sync.py runs at toy size (the full 1M-row run is in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sync.py"


def test_sync_benchmark_toy_size():
    spec = importlib.util.spec_from_file_location("bench_sync", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--rows", "2000", "--page-rows", "500", "--no-dlt", "--json"])
    assert out["plain"]["rows"] == 2000
    assert out["ours"]["rows"] == 2000
    assert out["ours_vs_plain"] > 0
