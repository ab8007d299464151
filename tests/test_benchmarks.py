"""Smoke tests of the benchmark scripts (tiny sizes): they run and report consistent numbers."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "validation" / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_training_smoke(tmp_path):
    res = _load("bench_training").main(
        ["--outdir", str(tmp_path), "--steps", "30", "--batch-size", "8", "--width", "16"]
    )
    assert res["full_ms_per_step"] > 0 and res["bare_ms_per_step"] > 0
    assert abs(res["ratio_full_over_bare"] - res["full_ms_per_step"] / res["bare_ms_per_step"]) < 1e-12
    assert json.loads((tmp_path / "bench_training.json").read_text())["width"] == 16


def test_bench_local_smoke(tmp_path):
    res = _load("bench_local").main(["--quick", "--outdir", str(tmp_path), "--threads", "1"])
    (row,) = res["rows"]
    assert row["ours_s"] > 0 and row["gemm_s"] > 0 and row["naive_s"] > 0
    assert abs(row["ours_over_naive"] - row["naive_s"] / row["ours_s"]) < 1e-12
    assert abs(row["ours_over_gemm"] - row["gemm_s"] / row["ours_s"]) < 1e-12
    assert row["max_abs_diff_vs_naive"] < 1e-3  # the naive route runs in float32
    assert json.loads((tmp_path / "bench_local.json").read_text())["rows"][0]["k"] == 3
