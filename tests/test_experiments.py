"""The phase sweep: resumable, atomic, parallel and refusing bad grids before training."""

import csv
import json
import os

import numpy as np
import pytest
import torch

import gaussdiff.experiments as ex
from _helpers import TINY_GRID
from gaussdiff.cli import main as cli_main

TINY = TINY_GRID


def _strip(rows):
    """Rows without their wall times (which differ between runs)."""
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_log_checkpoints_and_sizes():
    assert ex.log_checkpoints(4000, 6) == (125, 250, 500, 1000, 2000, 4000)
    assert ex.log_checkpoints(10, 1) == (10,)
    assert ex.default_sizes(896, 5) == (8, 26, 85, 275, 896)


def test_sweep_rows_and_resume(tmp_path):
    rows = ex.run_sweep(TINY, tmp_path, progress=False)
    assert len(rows) == 3 * 2  # sizes x checkpoints
    table = _read_csv(tmp_path / "results.csv")
    assert len(table) == 6
    for col in (
        "n",
        "seed",
        "width",
        "framework",
        "step",
        "memorization",
        "memorization_se",
        "reproducibility",
        "reproducibility_se",
        "dist_empirical",
        "dist_gaussian",
    ):
        assert col in table[0]
    for r in rows:
        assert 0 <= r["memorization"] <= 1 and r["memorization_se"] >= 0
        assert r["empirical_memorization"] == 1.0  # the exact empirical flow copies
        for kind in ("empirical", "gaussian"):  # the closed forms' fractions carry their errors too
            for what in ("memorization", "reproducibility"):
                assert r[f"{kind}_{what}_se"] >= 0 and f"{kind}_{what}_se" in table[0]
        assert r["empirical_memorization_se"] == 0.0  # every sample copies: no spread to resample
        assert r["dist_empirical"] >= 0 and r["dist_gaussian"] >= 0
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["status"] == "finished" and meta["torch_version"] == torch.__version__
    # a rerun skips every finished cell: files untouched, same table
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    again = ex.run_sweep(TINY, tmp_path, progress=False)
    assert again == rows
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    rows_full = ex.run_sweep(TINY, full, progress=False)
    # simulate a crash after the first cell: only its file (and a stray temp file) survive
    ex.run_cell(TINY, TINY.cells()[0], part)
    (part / "cells" / ".n000008_s0_w32_edm.json.123.tmp").write_text("{half")
    rows_part = ex.run_sweep(TINY, part, progress=False)
    assert _strip(rows_part) == _strip(rows_full)
    keys = [(r["n"], r["step"]) for r in _read_csv(part / "results.csv")]
    assert len(keys) == len(set(keys)) == 6


def test_changed_settings_are_refused_or_start_a_separate_run(tmp_path):
    """Issue 16, problem 3: a rerun with settings that change a cell's result is refused, naming
    them; with replace=True the old run moves to superseded/ and the new one starts clean."""
    import dataclasses

    ex.run_sweep(TINY, tmp_path, progress=False)
    changed = dataclasses.replace(TINY, steps=50, sizes=(4, 12))
    with pytest.raises(ValueError, match=r"^outdir: .* other settings \(steps: 40 there, 50 here\)"):
        ex.run_sweep(changed, tmp_path, progress=False)
    assert max(r["step"] for r in ex.read_results(tmp_path)) == 40  # the old run is untouched
    rows = ex.run_sweep(changed, tmp_path, progress=False, replace=True)
    assert max(r["step"] for r in rows) == 50 and {r["n"] for r in rows} == {4, 12}
    (old,) = (tmp_path / "superseded").iterdir()
    assert len(list((old / "cells").glob("*.json"))) == 3 and (old / "results.csv").exists()
    assert {int(r["n"]) for r in _read_csv(tmp_path / "results.csv")} == {4, 12}
    assert {r["n"] for r in ex.read_results(tmp_path)} == {4, 12}


def test_a_new_grid_never_shows_cells_of_the_old_one(tmp_path):
    """A rerun with another grid (same settings) reuses the cells it shares; tables, figures
    and read_results show the new grid only, although the old N = 16 cell stays on disk."""
    import dataclasses

    from gaussdiff.plotting import plot_results

    ex.run_sweep(TINY, tmp_path, progress=False)
    smaller = dataclasses.replace(TINY, sizes=(4, 8))
    ex.run_sweep(smaller, tmp_path, progress=False)
    assert (tmp_path / "cells" / f"{ex.config.cell_key(dict(n=16, seed=0, width=32, framework='edm'))}.json").exists()
    assert {r["n"] for r in ex.read_results(tmp_path)} == {4, 8}
    assert {int(r["n"]) for r in _read_csv(tmp_path / "results.csv")} == {4, 8}
    plot_results(tmp_path)  # draws from read_results: the new grid only


def test_an_unreadable_cell_is_recomputed_and_named(tmp_path):
    """A cell file cut short (a disk error) does not block resume: it is recomputed; reading
    the folder before that names the file."""
    rows = ex.run_sweep(TINY, tmp_path, progress=False)
    bad = sorted((tmp_path / "cells").glob("*.json"))[0]
    bad.write_text(bad.read_text()[:50])
    with pytest.raises(ValueError, match=f"^cells: {bad} is unreadable"):
        ex.read_results(tmp_path)
    again = ex.run_sweep(TINY, tmp_path, progress=False)
    assert _strip(again) == _strip(rows)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is unreadable"):
        ex.read_results(tmp_path)


def test_results_files_are_identical_between_two_runs(tmp_path):
    """Wall times live in timings.csv, so results.csv and tau_mem.csv compare bit for bit."""
    ex.run_sweep(TINY, tmp_path / "a", progress=False)
    ex.run_sweep(TINY, tmp_path / "b", progress=False)
    for name in ("results.csv", "tau_mem.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(_read_csv(tmp_path / "a" / "timings.csv")) == 3


def test_parallel_workers_give_the_same_table(tmp_path):
    serial = ex.run_sweep(TINY, tmp_path / "serial", progress=False)
    par = ex.run_sweep(TINY, tmp_path / "par", workers=2, progress=False)
    assert _strip(serial) == _strip(par)


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            rows = ex.run_sweep(TINY, tmp_path, dask_scheduler=client, progress=False)
    serial = ex.run_sweep(TINY, tmp_path / "serial", progress=False)
    assert _strip(rows) == _strip(serial)


def test_tau_mem_interpolates_in_log_step():
    rows = [dict(n=8, width=1, framework="edm", step=s, memorization=m) for s, m in ((100, 0.0), (400, 1.0))]
    assert ex.tau_mem(rows)[(8, 1, "edm")] == pytest.approx(200.0)
    rows = [dict(n=8, width=1, framework="edm", step=100, memorization=0.2)]
    assert ex.tau_mem(rows)[(8, 1, "edm")] is None


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(sizes=(8, 4)), "sizes"),
        (dict(sizes=(8, 150)), "sizes"),  # 2N > 200 points
        (dict(frameworks=("ddpm",)), "frameworks"),
        (dict(data="no-such-set"), "spec"),
        (dict(widths=(0,)), "widths"),
    ],
)
def test_bad_grid_refused_before_training(tmp_path, change, name, monkeypatch):
    import dataclasses

    import gaussdiff.experiments.cell as cell

    for trainer in ("train_denoiser", "train_ensemble"):
        monkeypatch.setattr(cell, trainer, lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ValueError, match=name):
        ex.run_sweep(dataclasses.replace(TINY, **change), tmp_path, progress=False)


def test_unwritable_outdir(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="outdir"):
        ex.run_sweep(TINY, target / "sub", progress=False)


def test_cli_phase_curve_and_plot(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(
        [
            "phase-curve",
            "--data",
            "gmm:k=2,d=4,n=200",
            "--sizes",
            "4,8,16",
            "--steps",
            "40",
            "--widths",
            "32",
            "--checkpoints",
            "2",
            "--samples",
            "16",
            "--workers",
            "1",
            "--no-progress",
            "--outdir",
            str(out),
        ]
    )
    assert code == 0
    with open(out / "tau_mem.csv") as f:  # 40 steps lie inside the 100-step warm-up: every tau is flagged
        taus = list(csv.DictReader(f))
    assert taus and all(r["inside_warmup"] == ("" if r["tau_mem"] == "" else "1") for r in taus)
    for name in ("results.csv", "tau_mem.csv", "config.json", "phase_curves.png", "phase_diagram.png"):
        assert (out / name).exists(), name
    assert "memorization" in capsys.readouterr().out
    os.remove(out / "phase_curves.png")
    assert cli_main(["plot", str(out)]) == 0
    assert (out / "phase_curves.png").exists()


def test_cli_refuses_bad_sizes(tmp_path, capsys):
    code = cli_main(["phase-curve", "--sizes", "64,32", "--outdir", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "sizes" in capsys.readouterr().err
    code = cli_main(["phase-curve", "--sizes", "8,1000", "--outdir", str(tmp_path / "x"), "--no-progress"])
    assert code == 2


def test_phase_curve_quick_end_to_end(tmp_path):
    """The README's main job in --quick mode on the default digits: the same shape, < 2 minutes."""
    out = tmp_path / "quick"
    code = cli_main(["phase-curve", "--quick", "--no-progress", "--outdir", str(out)])
    assert code == 0
    table = _read_csv(out / "results.csv")
    sizes = sorted({int(r["n"]) for r in table})
    assert len(sizes) >= 4
    assert (out / "samples.png").exists() and (out / "phase_diagram.png").exists()


# ---------------------------------------------------------------------------------------------
# transition_size: N* from a logistic fit across all N
# ---------------------------------------------------------------------------------------------


def test_transition_size_recovers_an_exact_logistic():
    ns = np.array([8, 20, 52, 133, 338, 898])
    n = np.full(6, 1000.0)
    p = 1 / (1 + np.exp(-1.3 * (np.log(ns) - np.log(75.0))))
    fit = ex.transition_size(ns, p * n, n, n_boot=200)  # fractional counts: the MLE is exact
    assert fit.n_star == pytest.approx(75.0, rel=1e-8) and fit.slope == pytest.approx(1.3, rel=1e-8)
    assert fit.inside_grid and fit.ci[0] < 75.0 < fit.ci[1]
    down = ex.transition_size(ns, n - p * n, n, increasing=False, n_boot=200)
    assert down.n_star == pytest.approx(75.0, rel=1e-8)
    # the wrong direction gives no crossing
    assert np.isnan(ex.transition_size(ns, p * n, n, increasing=False, n_boot=50).n_star)


def test_transition_size_is_not_fooled_by_a_non_monotone_point():
    ns = [8, 20, 52, 133, 338, 898]
    k = [10, 140, 20, 150, 230, 250]  # a lucky point at N=20 would fool a first crossing
    fit = ex.transition_size(ns, k, [256] * 6, n_boot=300)
    assert 52 < fit.n_star < 133 and fit.ci[0] < fit.n_star < fit.ci[1]


def test_transition_size_bad_input():
    with pytest.raises(ValueError, match="ns: need at least two distinct"):
        ex.transition_size([8, 8], [1, 2], [4, 4])
    with pytest.raises(ValueError, match="successes"):
        ex.transition_size([8, 16], [5, 2], [4, 4])
    with pytest.raises(ValueError, match="level"):
        ex.transition_size([8, 16], [1, 2], [4, 4], level=1.0)


def test_transition_size_edges():
    # a share that never moves has no crossing
    assert np.isnan(ex.transition_size([10, 100, 1000], [0, 0, 0], [1000, 10, 1], n_boot=20).n_star)
    assert np.isnan(ex.transition_size([10, 100, 1000], [5, 5, 5], [5, 5, 5], n_boot=20).n_star)
    # a perfect jump between two sizes is flagged: N* lies between them, its interval is degenerate
    fit = ex.transition_size([10, 100, 1000], [0, 10, 10], [10] * 3, n_boot=50)
    assert fit.separated and 10 < fit.n_star < 100
    fit = ex.transition_size([10, 100, 1000], [10, 0, 0], [10] * 3, increasing=False, n_boot=50)
    assert fit.separated and 10 < fit.n_star < 100
    assert not ex.transition_size([8, 20, 52], [10, 140, 250], [256] * 3, n_boot=50).separated
    with pytest.raises(ValueError, match="ns: sizes must be finite and > 0"):
        ex.transition_size([0, 10], [1, 2], [4, 4])


def test_cli_demo_reports_the_package_memorization(tmp_path, capsys):
    """``gaussdiff demo`` reports gd.memorization_fraction (gap ratio 1/3, bootstrap se): the
    empirical denoiser's samples copy training points, the Gaussian's do not."""
    assert cli_main(["demo", "--n-train", "16", "--samples", "64", "--steps", "20", "--outdir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "demo.json").read_text())
    assert res["empirical"]["memorization"] == 1.0 and res["gaussian"]["memorization"] < 0.5
    assert 0 <= res["gaussian"]["memorization_se"] < 0.1
    assert "memorization" in capsys.readouterr().out
