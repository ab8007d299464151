"""Figures of the experiments: the phase sweep and the inverse-problem experiment.

``plot_results(outdir)`` draws a phase sweep from its results folder (finished or partial):
``phase_curves.png`` (metrics against N at the last checkpoint, with error bars and the closed
forms beside the networks), ``phase_diagram.png`` (memorization over N x training step with the
measured tau_mem(N) and, when at least three N have one, the fitted power law
``tau_mem = a N^b`` with its 95 % band) and ``samples.png`` (network A, network B, empirical,
Gaussian from the same noise, and the training image nearest to network A's sample).

``plot_inverse(result, path)`` draws the result of
:func:`gaussdiff.inverse.experiment.run_inverse_experiment`: measurements, truth, exact posterior
means and one sample per sampler side by side, and the posterior-mean error against steps.

Each ``plot_*`` writes its PNG atomically; the ``draw_*`` functions return the open figure (for
a notebook, or a test that inspects its artists) and leave closing it to the caller.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .experiments import read_results, tau_mem, tau_mem_fit
from .experiments.config import cell_key

__all__ = [
    "plot_results",
    "plot_phase_curves",
    "plot_phase_diagram",
    "plot_samples",
    "plot_inverse",
    "draw_phase_curves",
    "draw_phase_diagram",
    "draw_samples",
    "draw_inverse",
]

#: artist ids (``Artist.get_gid()``) of the phase diagram's tau_mem overlays
TAU_POINTS_GID, TAU_FIT_GID, TAU_BAND_GID = "tau_mem", "tau_mem_fit", "tau_mem_fit_band"


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, *, dpi: int) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())


def _plain_log_ticks(axis, values) -> None:
    """Ticks of a log axis at the measured values, written as plain numbers (not 10^k)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    values = sorted({float(v) for v in values})
    axis.set_major_locator(FixedLocator(values))
    axis.set_minor_locator(NullLocator())
    axis.set_ticklabels([f"{v:g}" for v in values])


def _plain_log_format(axis) -> None:
    """Log-axis tick labels as plain numbers (0.03, 0.05) instead of 3x10^-2."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    axis.set_minor_formatter(fmt)


def _groups(rows):
    out = {}
    for r in rows:
        out.setdefault((r["width"], r["framework"]), []).append(r)
    return out


def _combine(vals, ses):
    """Mean over seeds; its error combines the bootstrap errors and the seed-to-seed spread."""
    vals, ses = np.asarray(vals, float), np.asarray(ses, float)
    k = len(vals)
    between = vals.var(ddof=1) if k > 1 else 0.0
    return vals.mean(), float(np.sqrt(np.mean(ses**2) / k + between / k))


def _last_step_table(rows):
    """Per (width, framework): arrays over n at each n's last checkpoint, seeds combined."""
    table = {}
    for key, grp in _groups(rows).items():
        by_n = {}
        for r in grp:
            by_n.setdefault(r["n"], []).append(r)
        ns = sorted(by_n)
        cols = {"n": np.array(ns, float)}
        for name in ("memorization", "reproducibility"):
            vals, errs = [], []
            for n in ns:
                last = max(r["step"] for r in by_n[n])
                sel = [r for r in by_n[n] if r["step"] == last]
                v, e = _combine([r[name] for r in sel], [r[f"{name}_se"] for r in sel])
                vals.append(v)
                errs.append(e)
            cols[name], cols[f"{name}_se"] = np.array(vals), np.array(errs)
        for name in (
            "dist_empirical",
            "dist_empirical_heldout",
            "dist_gaussian",
            "dist_gaussian_heldout",
            "empirical_memorization",
            "gaussian_memorization",
            "gaussian_reproducibility",
            "empirical_reproducibility",
            "similarity_ab",
        ):
            vals = []
            for n in ns:
                last = max(r["step"] for r in by_n[n])
                vals.append(np.mean([r[name] for r in by_n[n] if r["step"] == last]))
            cols[name] = np.array(vals)
        table[key] = cols
    return table


# -- phase curves ------------------------------------------------------------------------------
def draw_phase_curves(rows):
    """The figure of :func:`plot_phase_curves`, returned open."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    table = _last_step_table(rows)
    for (width, fw), c in sorted(table.items()):
        lab = f"network w={width} {fw}"
        axes[0].errorbar(c["n"], c["memorization"], yerr=c["memorization_se"], marker="o", capsize=3, label=lab)
        axes[1].errorbar(
            c["n"], c["reproducibility"], yerr=c["reproducibility_se"], marker="o", capsize=3, label=f"{lab}: A vs B"
        )
        (line,) = axes[2].plot(c["n"], c["dist_empirical"], marker="o", label=f"{lab}: to empirical")
        axes[2].plot(
            c["n"], c["dist_gaussian"], marker="s", ls="--", color=line.get_color(), label=f"{lab}: to Gaussian"
        )
    c = next(iter(table.values()))
    axes[0].plot(c["n"], c["empirical_memorization"], "k:", marker="x", label="empirical denoiser")
    axes[0].plot(c["n"], c["gaussian_memorization"], color="gray", ls=":", marker="+", label="Gaussian denoiser")
    axes[1].plot(c["n"], c["empirical_reproducibility"], "k:", marker="x", label="empirical: A vs B")
    axes[1].plot(c["n"], c["gaussian_reproducibility"], color="gray", ls=":", marker="+", label="Gaussian: A vs B")
    axes[0].set(title="memorization at the last checkpoint", ylabel="fraction (gap ratio < 1/3)", ylim=(-0.05, 1.05))
    axes[1].set(
        title="reproducibility of models on disjoint subsets", ylabel="fraction of similar pairs", ylim=(-0.05, 1.05)
    )
    axes[2].set(title="distance to the closed forms (own subset)", ylabel="relative MSE of the denoiser", yscale="log")
    _plain_log_format(axes[2].yaxis)
    all_n = sorted({float(n) for c in table.values() for n in c["n"]})
    for ax in axes:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, all_n)
        ax.set_xlabel("training-set size N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.85)
    fig.tight_layout()
    return fig


def plot_phase_curves(rows, path):
    """Memorization, reproducibility (with error bars) and the distances to the closed forms
    against N at each N's last checkpoint, written to ``path``."""
    _save(draw_phase_curves(rows), path, dpi=120)


# -- phase diagram -----------------------------------------------------------------------------
def _edges(values):
    """Cell edges on a log axis: geometric midpoints, the outer ones mirrored."""
    v = np.log(np.asarray(sorted(values), float))
    if v.size == 1:
        return np.exp(np.array([v[0] - 0.35, v[0] + 0.35]))
    mid = (v[1:] + v[:-1]) / 2
    return np.exp(np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]]))


def draw_phase_diagram(rows):
    """The figure of :func:`plot_phase_diagram`, returned open: one panel per (width,
    framework), memorization (seeds averaged) over training step x N on log axes, the
    measured onsets tau_mem(N) (artist gid ``"tau_mem"``) and, when at least three N have a
    finite one, the fitted line :func:`tau_mem_fit` (gid ``"tau_mem_fit"``) with its band
    (gid ``"tau_mem_fit_band"``)."""
    plt = _plt()
    groups = _groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 4.6), squeeze=False)
    taus = tau_mem(rows)
    for ax, ((width, fw), grp) in zip(axes[0], sorted(groups.items())):
        ns = sorted({r["n"] for r in grp})
        steps = sorted({r["step"] for r in grp})
        grid = np.full((len(ns), len(steps)), np.nan)
        for i, n in enumerate(ns):
            for j, s in enumerate(steps):
                vals = [r["memorization"] for r in grp if r["n"] == n and r["step"] == s]
                if vals:
                    grid[i, j] = np.mean(vals)
        xe, ye = _edges(steps), _edges(ns)
        im = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="magma", shading="flat")
        ax.set_xscale("log"), ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, steps)
        _plain_log_ticks(ax.yaxis, ns)
        ax.tick_params(axis="x", labelrotation=45)
        pts = [(n, taus.get((n, width, fw))) for n in ns]
        finite = [(n, t) for n, t in pts if t is not None]
        if finite:
            ax.plot(
                [t for _, t in finite],
                [n for n, _ in finite],
                "o",
                color="cyan",
                mec="k",
                gid=TAU_POINTS_GID,
                label=r"measured $\tau_{mem}(N)$: memorization reaches 0.5",
            )
        fit = tau_mem_fit([n for n, _ in pts], [t for _, t in pts])
        if fit is not None:
            nn = np.geomspace(ye[0], ye[-1], 100)
            t_fit, lo, hi = fit["band"](nn)
            lo_b, hi_b = fit["b_ci"]
            ax.fill_betweenx(nn, lo, hi, color="cyan", alpha=0.25, lw=0, gid=TAU_BAND_GID, label="95 % band of the fit")
            ax.plot(
                t_fit,
                nn,
                "-",
                color="cyan",
                lw=1.5,
                gid=TAU_FIT_GID,
                label=rf"fit $\tau_{{mem}} \propto N^{{b}}$, b = {fit['b']:.2f} [{lo_b:.2f}, {hi_b:.2f}]",
            )
        note = []
        if len(finite) < len(pts):
            note.append(f"memorization stays < 0.5 at {len(pts) - len(finite)} of {len(pts)} N")
        if fit is None:
            note.append("no power-law fit: it needs 3 N that reach 0.5")
        ax.set_xlim(xe[0], xe[-1]), ax.set_ylim(ye[0], ye[-1])
        # the note goes with the legend in the upper left (large N, early steps: no memorization
        # there, so nothing drawn is covered)
        if finite:
            leg = ax.legend(fontsize=7, loc="upper left", framealpha=0.85, title="\n".join(note) or None)
            leg.get_title().set_fontsize(7)
        elif note:
            ax.text(
                0.02,
                0.98,
                "\n".join(note),
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize=7,
                bbox=dict(facecolor="w", alpha=0.85, lw=0),
            )
        ax.set(xlabel="training step", ylabel="training-set size N", title=f"memorization, w={width} {fw}")
        fig.colorbar(im, ax=ax, label="memorization fraction (gap ratio < 1/3)")
    fig.tight_layout()
    return fig


def plot_phase_diagram(rows, path):
    """Memorization over training step x N with tau_mem(N) and its fitted power law (see
    :func:`draw_phase_diagram`), written to ``path``."""
    _save(draw_phase_diagram(rows), path, dpi=120)


# -- sample grid -------------------------------------------------------------------------------
def _to_image(x):
    """(C, H, W) in [-1, 1] -> displayable array; vectors are shown as a 1-row strip."""
    x = np.asarray(x)
    if x.ndim == 3:
        img = np.transpose(x, (1, 2, 0)) if x.shape[0] == 3 else x[0]
    else:
        img = x.reshape(1, -1)
    return np.clip((img + 1) / 2, 0, 1)


_SAMPLE_ROWS = (
    ("net_a", "network A"),
    ("net_b", "network B"),
    ("empirical", "empirical (A)"),
    ("gaussian", "Gaussian (A)"),
    ("nearest", "nearest to A (train)"),
)


def draw_samples(outdir, *, columns: int = 8, cells=None):
    """The figure of :func:`plot_samples`, returned open, or ``None`` when ``outdir/cells``
    holds no samples. ``cells``: the ``(n, seed, width, framework)`` cells to show (default:
    every cell file), in the order of the files."""
    plt = _plt()
    outdir = Path(outdir)
    files = sorted((outdir / "cells").glob("*.npz"))
    if cells is not None:
        keep = {cell_key(dict(n=n, seed=s, width=w, framework=f)) for n, s, w, f in cells}
        files = [f for f in files if f.stem in keep]
    if not files:
        return None
    k = len(_SAMPLE_ROWS)
    # fixed sizes in inches: a 0.85 in tile, a block of k rows per cell, a gap and a heading
    # above each block, the title and no more above the first
    tile, gap, head, top, left = 0.85, 0.2, 0.3, 0.45, 1.25
    ratios = []
    for i in range(len(files)):
        ratios += ([gap] if i else []) + [head] + [tile] * k
    height = top + sum(ratios) + 0.1
    width = left + columns * tile + 0.1
    fig = plt.figure(figsize=(width, height))
    gs = fig.add_gridspec(
        len(ratios),
        columns,
        height_ratios=ratios,
        left=left / width,
        right=1 - 0.1 / width,
        top=1 - top / height,
        bottom=0.1 / height,
        hspace=0.08,
        wspace=0.08,
    )
    row = 0
    for f_i, f in enumerate(files):
        arr = np.load(f)
        meta = json.loads(f.with_suffix(".json").read_text()) if f.with_suffix(".json").exists() else {}
        cell = meta.get("cell", {})
        row += 1 if f_i else 0
        hax = fig.add_subplot(gs[row, :])
        hax.axis("off")
        label = (
            f"N = {cell['n']}   (seed {cell.get('seed')}, width {cell.get('width')}, {cell.get('framework')})"
            if "n" in cell
            else f.stem
        )
        hax.text(0, 0.1, label, transform=hax.transAxes, fontsize=8, fontweight="bold", va="bottom")
        row += 1
        for name, lab in _SAMPLE_ROWS:
            for c in range(columns):
                ax = fig.add_subplot(gs[row, c])
                ax.axis("off")
                if name in arr and c < arr[name].shape[0]:
                    img = _to_image(arr[name][c])
                    ax.imshow(
                        img,
                        cmap="gray" if img.ndim == 2 else None,
                        vmin=0,
                        vmax=1,
                        interpolation="nearest",
                        aspect="auto" if img.shape[0] == 1 else "equal",
                    )
                if c == 0:
                    ax.text(-0.12, 0.5, lab, transform=ax.transAxes, ha="right", va="center", fontsize=7)
            row += 1
    fig.suptitle(
        "same noise: networks A and B, the closed forms of A's subset, the training image nearest to A's sample",
        fontsize=8,
        y=1 - 0.15 / height,
        va="top",
    )
    return fig


def plot_samples(outdir, path, *, columns: int = 8, cells=None):
    """The sample grid of a sweep (see :func:`draw_samples`) written to ``path``; returns
    whether there was anything to draw."""
    fig = draw_samples(outdir, columns=columns, cells=cells)
    if fig is None:
        return False
    _save(fig, path, dpi=110)
    return True


def plot_results(outdir) -> list[Path]:
    """Redraw every figure of a results folder; returns the paths written."""

    outdir = Path(outdir)
    if not (outdir / "cells").is_dir():
        raise ValueError(f"outdir: {outdir} holds no phase-sweep results (no cells/ folder)")
    rows = read_results(outdir)
    if not rows:
        raise ValueError(f"outdir: {outdir} has no finished cells yet")
    written = []
    for name, fn in (("phase_curves.png", plot_phase_curves), ("phase_diagram.png", plot_phase_diagram)):
        fn(rows, outdir / name)
        written.append(outdir / name)
    cells = sorted({(r["n"], r["seed"], r["width"], r["framework"]) for r in rows})
    if plot_samples(outdir, outdir / "samples.png", cells=cells):
        written.append(outdir / "samples.png")
    return written


# -- inverse problems --------------------------------------------------------------------------
def draw_inverse(result):
    """The figure of :func:`plot_inverse`, returned open."""
    plt = _plt()
    shown, rows = result.shown, result.rows
    shape = shown["truth"].shape
    samplers = [s for s in result.samplers if s in shown]
    cols = ["y", "truth", "posterior mean"] + samplers
    titles = {"y": r"$A^T y$ (measured)", "truth": "truth", "posterior mean": "exact posterior mean"}
    k = shape[0]
    image = len(shape) == 4
    fig, ax = plt.subplots(
        k + 1,
        len(cols),
        figsize=(1.7 * len(cols) + 0.6, 1.7 * k + 2.8),
        squeeze=False,
        gridspec_kw=dict(height_ratios=[1] * k + [1.6]),
    )
    vals = {c: shown[c].detach().cpu().double().numpy() for c in cols}
    for i in range(k):
        if not image:  # one y range per measurement (A^T y, in other units, keeps its own)
            lo = min(float(vals[c][i].min()) for c in cols[1:])
            hi = max(float(vals[c][i].max()) for c in cols[1:])
            pad = 0.05 * (hi - lo or 1.0)
        for j, c in enumerate(cols):
            a = ax[i, j]
            v = vals[c][i]
            if image and v.shape[0] == 3:
                a.imshow(np.clip(np.transpose(v, (1, 2, 0)) / 2 + 0.5, 0, 1))
            elif image:
                a.imshow(v[0], cmap="gray", vmin=-1, vmax=1)
            else:
                v = v.reshape(-1)
                a.plot(v, marker="." if v.size <= 64 else None, lw=1)
                if c != "y":
                    a.set_ylim(lo - pad, hi + pad)
            a.set_xticks([]), a.set_yticks([])
        ax[i, 0].set_ylabel(f"measurement {i + 1}", fontsize=8)
    for j, c in enumerate(cols):
        ax[0, j].set_title(titles.get(c, f"{c} sample"), fontsize=8)
    gs = ax[k, 0].get_gridspec()
    for a in ax[k]:
        a.remove()
    axe = fig.add_subplot(gs[k, :])
    from matplotlib.lines import Line2D

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    for s_i, name in enumerate(result.samplers):
        for y_i, sy in enumerate(result.sigma_y):
            sel = sorted((r for r in rows if r["sampler"] == name and r["sigma_y"] == sy), key=lambda r: r["steps"])
            axe.plot(
                [r["steps"] for r in sel],
                [r["mean_error"] for r in sel],
                color=colors[s_i % len(colors)],
                ls=styles[y_i % len(styles)],
                marker=markers[y_i % len(markers)],
            )
    floor = axe.axhline(rows[0]["mc_floor"], color="k", ls="--", lw=0.8)
    axe.set_xscale("log"), axe.set_yscale("log")
    steps = sorted({r["steps"] for r in rows})
    _plain_log_ticks(axe.xaxis, steps)
    if len(steps) == 1:
        axe.set_xlim(steps[0] / 1.5, steps[0] * 1.5)
    _plain_log_format(axe.yaxis)
    spread = "prior" if rows[0].get("mean_error_scale") == "prior" else "posterior"
    axe.set_xlabel("sampler steps")
    axe.set_ylabel(f"|sample mean - exact mean|\n/ {spread} spread", fontsize=8)
    axe.set_title(f"posterior-mean error ({rows[0].get('n_samples', '?')} samples per measurement)", fontsize=9)
    axe.grid(alpha=0.3, which="both")
    # one legend entry per sampler (colour) and per sigma_y (line style), beside the axes
    handles = [Line2D([], [], color=colors[i % len(colors)], label=name) for i, name in enumerate(result.samplers)]
    handles += [
        Line2D(
            [],
            [],
            color="gray",
            ls=styles[i % len(styles)],
            marker=markers[i % len(markers)],
            label=f"sigma_y = {sy:g}",
        )
        for i, sy in enumerate(result.sigma_y)
    ]
    handles.append(Line2D([], [], color=floor.get_color(), ls="--", lw=0.8, label="Monte-Carlo floor\n(exact sampler)"))
    fig.tight_layout()
    pos = axe.get_position()
    axe.set_position([pos.x0, pos.y0, pos.width * 0.8, pos.height])
    axe.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def plot_inverse(result, path) -> None:
    """The figure of an inverse-problem experiment (an
    :class:`~gaussdiff.inverse.experiment.InverseExperiment`), written atomically to ``path``:
    one row per measurement with ``A^T y``, the truth, the exact posterior mean and one sample of
    each sampler (vectors: one y range per row), and below them the posterior-mean error of every
    sampler (one colour each) and ``sigma_y`` (one line style each) against the steps, with the
    Monte-Carlo floor."""
    _save(draw_inverse(result), path, dpi=110)
