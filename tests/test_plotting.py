"""The figures of gaussdiff.plotting, checked on their artists (not pixels): the tau_mem power
law and its band on the phase diagram exactly when at least three N reach tau_mem, the sample
grid without an empty band above its first row and with only the recorded cells, the phase
curves' ticks at the measured N, and the inverse figure's rows and legend."""

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from gaussdiff import plotting as P
from gaussdiff.experiments import tau_mem, tau_mem_fit
from gaussdiff.experiments.config import RESULT_COLUMNS, cell_key
from gaussdiff.inverse.experiment import InverseExperiment

STEPS = (50, 100, 200, 400, 800, 1600)


def _rows(onsets: dict, *, width=256, framework="edm", seeds=(0,)):
    """Phase-sweep rows of every column: memorization of size n rises through 0.5 at step
    ``onsets[n]`` (a logistic in log step; ``None``: stays at 0.1)."""
    rows = []
    for n, tau in onsets.items():
        for seed in seeds:
            for step in STEPS:
                r = {c: 0.1 for c in RESULT_COLUMNS}
                mem = 0.1 if tau is None else 1 / (1 + math.exp(-3 * (math.log(step) - math.log(tau))))
                r.update(n=n, seed=seed, width=width, framework=framework, step=step, memorization=mem)
                r.update(memorization_se=0.02, reproducibility=0.5, reproducibility_se=0.03)
                rows.append(r)
    return rows


def _gids(fig):
    return {a.get_gid() for ax in fig.axes for a in [*ax.lines, *ax.collections] if a.get_gid()}


# -- the tau_mem power law ----------------------------------------------------------------------
def test_tau_mem_fit_matches_an_independent_least_squares(rng):
    """Slope, its standard error and the band of the fitted line against scipy's linregress and
    the covariance s^2 (X^T X)^-1 of a numpy least-squares solve (exact up to rounding: 1e-10)."""
    from scipy import stats

    ns = np.array([8.0, 26.0, 85.0, 276.0, 896.0])
    taus = 40 * ns**0.9 * np.exp(0.2 * rng.standard_normal(ns.size))
    fit = tau_mem_fit(ns, taus)
    x, y = np.log(ns), np.log(taus)
    ref = stats.linregress(x, y)
    assert fit["n_points"] == 5
    assert abs(fit["b"] - ref.slope) < 1e-10 and abs(fit["log_a"] - ref.intercept) < 1e-10
    assert abs(fit["b_se"] - ref.stderr) < 1e-10
    q = stats.t.ppf(0.975, 3)
    assert np.allclose(fit["b_ci"], (ref.slope - q * ref.stderr, ref.slope + q * ref.stderr), rtol=0, atol=1e-10)
    X = np.stack([np.ones_like(x), x], 1)
    coef, res, *_ = np.linalg.lstsq(X, y, rcond=None)
    cov = res[0] / (x.size - 2) * np.linalg.inv(X.T @ X)
    grid = np.array([5.0, 50.0, 2000.0])
    xg = np.stack([np.ones(3), np.log(grid)], 1)
    half = q * np.sqrt(np.einsum("ij,jk,ik->i", xg, cov, xg))
    mid, lo, hi = fit["band"](grid)
    assert np.allclose(np.log(mid), xg @ coef, rtol=0, atol=1e-10)
    assert np.allclose(np.log(lo), xg @ coef - half, rtol=0, atol=1e-10)
    assert np.allclose(np.log(hi), xg @ coef + half, rtol=0, atol=1e-10)


def test_tau_mem_fit_recovers_an_exact_power_law():
    ns = [8, 26, 85, 276]
    fit = tau_mem_fit(ns, [3.0 * n**1.25 for n in ns])
    assert abs(fit["b"] - 1.25) < 1e-10 and abs(fit["log_a"] - math.log(3.0)) < 1e-10
    mid, lo, hi = fit["band"](np.array([10.0, 100.0]))
    assert np.allclose(mid, 3.0 * np.array([10.0, 100.0]) ** 1.25, rtol=1e-10)
    assert np.allclose(lo, mid, rtol=1e-10) and np.allclose(hi, mid, rtol=1e-10)  # no residuals: no width


@pytest.mark.parametrize(
    "ns, taus",
    [
        ([8, 26, 85], [100.0, None, 900.0]),  # two finite
        ([8, 26, 85, 276], [100.0, math.nan, math.inf, None]),  # one finite
        ([8, 8, 26], [100.0, 120.0, 300.0]),  # three points, two sizes
        ([], []),
    ],
)
def test_tau_mem_fit_needs_three_sizes(ns, taus):
    assert tau_mem_fit(ns, taus) is None


# -- the phase diagram ------------------------------------------------------------------------
def test_phase_diagram_draws_the_fit_when_three_n_reach_tau_mem():
    rows = _rows({8: 60.0, 26: 190.0, 85: 620.0, 276: None})
    taus = tau_mem(rows)
    assert sum(taus[(n, 256, "edm")] is not None for n in (8, 26, 85)) == 3
    fig = P.draw_phase_diagram(rows)
    try:
        assert {P.TAU_POINTS_GID, P.TAU_FIT_GID, P.TAU_BAND_GID} <= _gids(fig)
        ax = fig.axes[0]
        (points,) = [ln for ln in ax.lines if ln.get_gid() == P.TAU_POINTS_GID]
        assert sorted(points.get_ydata()) == [8, 26, 85]
        assert np.allclose(sorted(points.get_xdata()), sorted(taus[(n, 256, "edm")] for n in (8, 26, 85)))
        (line,) = [ln for ln in ax.lines if ln.get_gid() == P.TAU_FIT_GID]
        fit = tau_mem_fit([8, 26, 85], [taus[(n, 256, "edm")] for n in (8, 26, 85)])
        assert np.allclose(line.get_xdata(), fit["band"](line.get_ydata())[0], rtol=1e-12)
        assert f"b = {fit['b']:.2f}" in line.get_label()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("95 % band" in t for t in labels)
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    finally:
        plt.close(fig)


@pytest.mark.parametrize("onsets, n_points", [({8: 60.0, 26: 190.0, 85: None, 276: None}, 2), ({8: None, 26: None}, 0)])
def test_phase_diagram_has_no_fit_below_three_n(onsets, n_points):
    fig = P.draw_phase_diagram(_rows(onsets))
    try:
        gids = _gids(fig)
        assert P.TAU_FIT_GID not in gids and P.TAU_BAND_GID not in gids
        assert (P.TAU_POINTS_GID in gids) == (n_points > 0)
        ax = fig.axes[0]  # the note is the legend's title when there is a legend, else a text
        legend = ax.get_legend()
        texts = " ".join([t.get_text() for t in ax.texts] + ([legend.get_title().get_text()] if legend else []))
        assert f"< 0.5 at {len(onsets) - n_points} of {len(onsets)} N" in texts and "needs 3 N" in texts
    finally:
        plt.close(fig)


def test_phase_diagram_fits_each_panel_on_its_own():
    rows = _rows({8: 60.0, 26: 190.0, 85: 620.0}, width=256) + _rows({8: 60.0, 26: None, 85: None}, width=32)
    fig = P.draw_phase_diagram(rows)
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        by_title = {ax.get_title(): {ln.get_gid() for ln in ax.lines} for ax in panels}
        assert P.TAU_FIT_GID in by_title["memorization, w=256 edm"]
        assert P.TAU_FIT_GID not in by_title["memorization, w=32 edm"]
    finally:
        plt.close(fig)


def test_phase_curves_tick_the_measured_sizes(tmp_path):
    rows = _rows({8: 60.0, 26: None, 85: None}, seeds=(0, 1))
    fig = P.draw_phase_curves(rows)
    try:
        for ax in fig.axes:
            assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "26", "85"]
    finally:
        plt.close(fig)
    P.plot_phase_curves(rows, tmp_path / "c.png")
    P.plot_phase_diagram(rows, tmp_path / "d.png")
    for name in ("c.png", "d.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the sample grid -------------------------------------------------------------------------
def _cells(outdir, sizes, shape):
    rng = np.random.default_rng(0)
    (outdir / "cells").mkdir()
    for n in sizes:
        cell = dict(n=n, seed=0, width=32, framework="edm")
        arrs = {k: rng.uniform(-1, 1, (8, *shape)) for k in ("net_a", "net_b", "empirical", "gaussian", "nearest")}
        np.savez(outdir / "cells" / f"{cell_key(cell)}.npz", **arrs)
        (outdir / "cells" / f"{cell_key(cell)}.json").write_text(json.dumps({"cell": cell}))


@pytest.mark.parametrize("shape", [(1, 8, 8), (6,)])
def test_sample_grid_starts_below_its_title(tmp_path, shape):
    """The old grid kept matplotlib's default top margin (12 % of a figure 18 in tall: ~2 in
    of white above the first row); the title and the first heading now take under 0.9 in."""
    _cells(tmp_path, (4, 16, 64), shape)
    fig = P.draw_samples(tmp_path, columns=4, cells=[(4, 0, 32, "edm"), (64, 0, 32, "edm")])
    try:
        height = fig.get_size_inches()[1]
        images = [ax for ax in fig.axes if ax.images]
        assert len(images) == 2 * 5 * 4  # the two recorded cells only, 5 rows of 4
        top_gap = (1 - max(ax.get_position().y1 for ax in images)) * height
        assert top_gap < 0.9
        headings = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("N = ")]
        assert [h.split()[2] for h in headings] == ["4", "64"]
        if len(shape) == 1:  # vectors: strips that fill their tile
            assert images[0].get_aspect() == "auto"
    finally:
        plt.close(fig)
    assert P.plot_samples(tmp_path, tmp_path / "s.png", columns=2)
    assert not P.plot_samples(tmp_path, tmp_path / "none.png", cells=[(5, 0, 32, "edm")])
    assert not (tmp_path / "none.png").exists()


# -- the inverse figure -----------------------------------------------------------------------
def _inverse_result(shape, samplers=("exact", "dps"), sigma_y=(0.05, 0.2), steps=(10, 30)):
    g = torch.Generator().manual_seed(0)
    shown = {c: torch.randn(3, *shape, generator=g) for c in ("y", "truth", "posterior mean", *samplers)}
    shown["y"] = 5 * shown["y"]  # A^T y in other units
    rows = [
        dict(sampler=s, sigma_y=sy, steps=n, mean_error=0.2 + 1 / n, mc_floor=0.22, n_samples=20)
        for sy in sigma_y
        for n in steps
        for s in samplers
    ]
    return InverseExperiment(rows=rows, shown=shown, samplers=samplers, sigma_y=sigma_y)


def test_inverse_figure_vectors_share_a_range_per_row(tmp_path):
    res = _inverse_result((8,))
    fig = P.draw_inverse(res)
    try:
        rows = {}
        for ax in fig.axes:
            if ax.get_xlabel() == "sampler steps":
                continue
            rows.setdefault(round(ax.get_position().y0, 6), []).append(ax)
        assert len(rows) == 3 and all(len(r) == 5 for r in rows.values())
        for row in rows.values():
            row.sort(key=lambda a: a.get_position().x0)
            assert len({a.get_ylim() for a in row[1:]}) == 1  # truth, mean, samples: one range
        (err,) = [ax for ax in fig.axes if ax.get_xlabel() == "sampler steps"]
        assert len(err.lines) == 2 * 2 + 1  # sampler x sigma_y, and the floor
        assert [t.get_text() for t in err.get_xticklabels()] == ["10", "30"]
        legend = [t.get_text() for t in err.get_legend().get_texts()]
        assert legend[:4] == ["exact", "dps", "sigma_y = 0.05", "sigma_y = 0.2"]
    finally:
        plt.close(fig)
    P.plot_inverse(_inverse_result((1, 8, 8), steps=(30,)), tmp_path / "inverse.png")
    assert (tmp_path / "inverse.png").read_bytes()[:4] == b"\x89PNG"
