"""validation/benchmarks/gpu_check.py without a GPU: its CPU dry run, the runner's budgets and
error isolation, the float64 two-pass reference against the exact empirical denoiser, and its
argument errors. The full dry run (every part, ~2 minutes on 2 cores) is marked slow."""

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gaussdiff as gd

SCRIPT = Path(__file__).resolve().parents[1] / "validation" / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the runner ------------------------------------------------------------------------------
def test_a_failing_part_does_not_hide_the_others(gc, monkeypatch):
    monkeypatch.setattr(gc, "MIN_PART_S", 0.1)  # so that the late part may have a 0.2 s budget

    def ok(ctx, budget):
        return {"status": "ok", "value": 1}

    def broken(ctx, budget):
        raise RuntimeError("boom")

    def slow(ctx, budget):
        raise gc.OverBudget("time budget spent after 3 denoiser evaluations")

    def late(ctx, budget):  # returns ok but past its budget
        time.sleep(budget + 0.05)
        return {"status": "ok"}

    seen = []
    parts = {"a": ok, "b": broken, "c": slow, "d": late, "e": ok}
    budgets = {"a": 30.0, "b": 30.0, "c": 30.0, "d": 0.2, "e": 30.0}
    res = gc.run_parts(parts, budgets, {}, total_budget=200.0, write=lambda r: seen.append(list(r)))
    assert [res[k]["status"] for k in "abcde"] == ["ok", "error", "timeout", "timeout", "ok"]
    assert res["a"]["value"] == 1 and "RuntimeError: boom" in res["b"]["error"] and "boom" in res["b"]["traceback"]
    assert "3 denoiser evaluations" in res["c"]["error"]
    assert seen == [list("abcde"[: i + 1]) for i in range(5)]  # the JSON rewritten after every part
    assert all(res[k]["budget_s"] == budgets[k] for k in "abcde")


def test_the_total_budget_skips_what_does_not_fit(gc):
    got = {}

    def part(ctx, budget):
        got.setdefault("budgets", []).append(budget)
        time.sleep(0.3)
        return {"status": "ok"}

    total = gc.RESERVE_S + gc.MIN_PART_S + 0.2  # room for one part only
    res = gc.run_parts({"x": part, "y": part}, {"x": 100.0, "y": 100.0}, {}, total_budget=total)
    assert res["x"]["status"] == "ok" and res["y"]["status"] == "skipped"
    assert res["y"]["reason"] == "total time budget spent"
    assert got["budgets"][0] <= total - gc.RESERVE_S  # capped by what was left, not its 100 s


def test_junit_counts(gc, tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="5" failures="1" errors="1" skipped="2">'
        '<testcase classname="tests.test_a" name="t1"/>'
        '<testcase classname="tests.test_a" name="t2"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_a" name="t3"><error message="y"/></testcase>'
        '<testcase classname="tests.test_a" name="t4"><skipped/></testcase>'
        '<testcase classname="tests.test_a" name="t5"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    c = gc.junit_counts(xml)
    assert (c["tests"], c["passed"], c["failed"], c["errors"], c["skipped"]) == (5, 1, 1, 1, 2)
    assert c["failed_names"] == ["tests.test_a::t2", "tests.test_a::t3"]


# -- the reference and the data -------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 30.0, 1e3])
def test_two_pass_reference_is_the_exact_posterior_mean(gc, gen, sigma):
    """float64: the two-pass reference from exact differences and the package's empirical
    denoiser are two routes to one number (exact up to rounding: 1e-10 of the data's scale)."""
    y = torch.randn(300, 12, generator=gen, dtype=torch.float64) * 3 + 5  # uncentred
    x = y[:7] + sigma * torch.randn(7, 12, generator=gen, dtype=torch.float64)
    ref = gc.TwoPassReference(y, elements=7 * 12 * 50)  # several chunks
    want = gd.EmpiricalDenoiser(y, backend="torch")(x, sigma)
    got = ref(x, sigma)
    assert got.dtype == torch.float64
    assert float((got - want).abs().max()) < 1e-10 * float(y.abs().max())
    per_row = torch.full((7,), sigma, dtype=torch.float64)  # a (B,) sigma gives the same
    assert torch.equal(ref(x, per_row), got)


def test_spectrum_and_synthetic_data(gc, monkeypatch):
    monkeypatch.setattr(gc, "find_spectrum", lambda path=None: None)
    lam, src = gc.spectrum(64)
    assert "synthetic" in src and lam.shape == (64,)
    assert abs(lam.sum() - 760.0) < 1e-9 and np.all(np.diff(lam) < 0)
    x = gc.synthetic_data(20000, 64, lam=lam, device=torch.device("cpu"), seed=3)
    assert x.shape == (20000, 64) and x.dtype == torch.float32
    # the total variance is tr(Q diag(lam) Q^T) = sum(lam); sampling error of 20000 rows ~ 1 %
    assert abs(float(x.double().var(0).sum()) / 760.0 - 1) < 0.05
    assert torch.equal(x, gc.synthetic_data(20000, 64, lam=lam, device=torch.device("cpu"), seed=3))


def test_cifar_spectrum_when_shared(gc, shared_dir):
    path = Path(shared_dir) / "data" / gc.SPECTRUM_FILE
    if not path.exists():
        pytest.skip("no CIFAR-10 spectrum in ../shared/data")
    lam, src = gc.spectrum(3072, str(path))
    assert "CIFAR-10" in src and lam.shape == (3072,) and lam[0] == lam.max() and lam.min() >= 0
    small, src = gc.spectrum(48, str(path))
    assert "resampled" in src and small[0] == lam[0] and small[-1] == lam[-1]


# -- the script ---------------------------------------------------------------------------------
def test_dry_run_of_the_sampling_part(gc, tmp_path):
    out = gc.main(["--cpu-dry-run", "--only", "cifar_sampling", "--outdir", str(tmp_path)])
    stored = json.loads((tmp_path / "gpu_check.json").read_text())
    r = stored["results"]["cifar_sampling"]
    assert out["results"]["cifar_sampling"]["status"] == r["status"] == "ok"
    assert stored["meta"]["mode"] == "cpu-dry-run" and stored["meta"]["device"] == "cpu"
    assert r["evaluations"] == 35  # Heun, 18 steps: 17 x 2 + 1
    # float32 against the float64 reference: the denoiser per evaluation to float32 rounding
    # (its inputs reach |x| ~ 80 at sigma_max, so 1e-5 of the data's spread is a few ulps there)
    assert r["per_evaluation_max_err_rel_spread"] < 1e-5
    assert r["reference"]["same_nearest_point"] == r["reference"]["of"] == 4
    # an exact empirical denoiser memorizes: every sample ends on a training point
    assert r["nn_distance"]["max_rel_spread"] < 1e-4 and r["memorization"]["value"] == 1.0


def test_argument_errors(gc, tmp_path, capsys):
    for argv, word in (
        (["--only", "nope"], "--only"),
        (["--total-budget", "3"], "--total-budget"),
        (["--spectrum", str(tmp_path / "missing.npy")], "--spectrum"),
    ):
        with pytest.raises(SystemExit) as exc:
            gc.main(["--cpu-dry-run", "--outdir", str(tmp_path), *argv])
        assert exc.value.code == 2 and word in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gc.main(["--outdir", str(tmp_path)])
        assert "--cpu-dry-run" in capsys.readouterr().err


@pytest.mark.slow
def test_full_cpu_dry_run(gc, tmp_path):
    """Every part at tiny sizes on the CPU (~2 minutes on 2 shared cores)."""
    out = gc.main(["--cpu-dry-run", "--outdir", str(tmp_path)])
    res = out["results"]
    assert {k: r["status"] for k, r in res.items()} == dict.fromkeys(gc.PARTS, "ok")
    cuda = res["tests"]["selections"]["cuda"]
    assert cuda["tests"] > 0 and cuda["skipped"] == cuda["tests"] and cuda["failed"] == 0
    assert {r["backend"] for r in res["bench_empirical"]["rows"]} == {"numba", "torch"}
    assert all(r["max_err_rel_spread"] < 1e-5 for r in res["bench_empirical"]["rows"])
    assert res["phase_curve"]["cells_finished"] == res["phase_curve"]["cells_planned"] == 2
    assert json.loads((tmp_path / "gpu_check.json").read_text())["results"].keys() == res.keys()
