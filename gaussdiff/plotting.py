"""Figures of the experiments: the phase sweep and the inverse-problem experiment.

``plot_results(outdir)`` draws a phase sweep from its results folder (finished or partial):
``phase_curves.png`` (metrics against N at the last checkpoint, with error bars and the closed
forms beside the networks), ``phase_diagram.png`` (memorization over N x training step with the
measured tau_mem(N)) and ``samples.png`` (network A, network B, empirical, Gaussian and the
nearest training image, all from the same noise).

``plot_inverse(result, path)`` draws the result of
:func:`gaussdiff.inverse.experiment.run_inverse_experiment`: measurements, truth, exact posterior
means and one sample per sampler side by side, and the posterior-mean error against steps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .experiments import read_results, tau_mem

__all__ = ["plot_results", "plot_phase_curves", "plot_phase_diagram", "plot_samples", "plot_inverse"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def plot_phase_curves(rows, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (width, fw), c in sorted(_last_step_table(rows).items()):
        lab = f"net w={width} {fw}"
        axes[0].errorbar(c["n"], c["memorization"], yerr=c["memorization_se"], marker="o", capsize=3, label=lab)
        axes[1].errorbar(
            c["n"], c["reproducibility"], yerr=c["reproducibility_se"], marker="o", capsize=3, label=f"{lab} (A vs B)"
        )
        axes[2].plot(c["n"], c["dist_empirical"], marker="o", label=f"{lab}: to empirical")
        axes[2].plot(c["n"], c["dist_gaussian"], marker="s", ls="--", label=f"{lab}: to Gaussian")
    c = next(iter(_last_step_table(rows).values()))
    axes[0].plot(c["n"], c["empirical_memorization"], "k:", marker="x", label="empirical denoiser")
    axes[0].plot(c["n"], c["gaussian_memorization"], color="gray", ls=":", marker="+", label="Gaussian denoiser")
    axes[1].plot(c["n"], c["gaussian_reproducibility"], color="gray", ls=":", marker="+", label="Gaussian A vs B")
    axes[1].plot(c["n"], c["empirical_reproducibility"], "k:", marker="x", label="empirical A vs B")
    axes[0].set(title="memorization (gap ratio 1/3), last checkpoint", ylabel="fraction", ylim=(-0.05, 1.05))
    axes[1].set(title="reproducibility of disjoint-trained models", ylabel="fraction", ylim=(-0.05, 1.05))
    axes[2].set(title="relative MSE to the closed forms (own subset)", ylabel="relative MSE", yscale="log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training-set size N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_phase_diagram(rows, path):

    plt = _plt()
    groups = _groups(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
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
        im = ax.imshow(grid, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="magma")
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=45)
        ax.set_yticks(range(len(ns)), [str(n) for n in ns])
        tx, ty = [], []
        for i, n in enumerate(ns):
            t = taus.get((n, width, fw))
            if t is not None:
                tx.append(np.interp(np.log(t), np.log(steps), np.arange(len(steps))))
                ty.append(i)
        if tx:
            ax.plot(tx, ty, "c-o", label=r"$\tau_{mem}(N)$ (memorization = 0.5)")
            ax.legend(fontsize=8, loc="upper left")
        ax.set(xlabel="training step", ylabel="training-set size N", title=f"memorization, w={width} {fw}")
        fig.colorbar(im, ax=ax, label="memorization fraction")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _to_image(x):
    """(C, H, W) in [-1, 1] -> displayable array; vectors are shown as a 1-row strip."""
    x = np.asarray(x)
    if x.ndim == 3:
        img = np.transpose(x, (1, 2, 0)) if x.shape[0] == 3 else x[0]
    else:
        img = x.reshape(1, -1)
    return np.clip((img + 1) / 2, 0, 1)


def plot_samples(outdir, path, *, columns: int = 8):
    plt = _plt()
    outdir = Path(outdir)
    files = sorted((outdir / "cells").glob("*.npz"))
    if not files:
        return False
    names = ["net_a", "net_b", "empirical", "gaussian", "nearest"]
    labels = ["network A", "network B", "empirical (A)", "Gaussian (A)", "nearest train (A)"]
    fig, axes = plt.subplots(
        len(files) * len(names), columns, figsize=(columns * 0.9, len(files) * len(names) * 0.9 + 0.4), squeeze=False
    )
    for f_i, f in enumerate(files):
        arr = np.load(f)
        meta = json.loads(f.with_suffix(".json").read_text()) if f.with_suffix(".json").exists() else {}
        n = meta.get("cell", {}).get("n", f.stem)
        for r_i, (name, lab) in enumerate(zip(names, labels)):
            row = f_i * len(names) + r_i
            for c in range(columns):
                ax = axes[row, c]
                ax.axis("off")
                if c < arr[name].shape[0]:
                    img = _to_image(arr[name][c])
                    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            axes[row, 0].text(
                -0.3,
                0.5,
                f"N={n}\n{lab}" if r_i == 0 else lab,
                transform=axes[row, 0].transAxes,
                ha="right",
                va="center",
                fontsize=6,
            )
    fig.suptitle("same noise: networks, closed forms, nearest training image", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
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
    if plot_samples(outdir, outdir / "samples.png"):
        written.append(outdir / "samples.png")
    return written


def plot_inverse(result, path) -> None:
    """The figure of an inverse-problem experiment (an
    :class:`~gaussdiff.inverse.experiment.InverseExperiment`), written atomically to ``path``:
    one row per measurement with ``A^T y``, the truth, the exact posterior mean and one sample of
    each sampler, and below them the posterior-mean error of every sampler and ``sigma_y``
    against the steps, with the Monte-Carlo floor."""

    plt = _plt()
    shown, rows = result.shown, result.rows
    shape = shown["truth"].shape
    cols = ["y", "truth", "posterior mean"] + [s for s in result.samplers if s in shown]
    k = shape[0]
    image = len(shape) == 4
    fig, ax = plt.subplots(k + 1, len(cols), figsize=(1.7 * len(cols), 1.7 * k + 2.5), squeeze=False)
    for j, c in enumerate(cols):
        for i in range(k):
            v = shown[c][i].detach().cpu()
            if image:
                ax[i, j].imshow(v[0].numpy(), cmap="gray", vmin=-1, vmax=1)
            else:
                ax[i, j].plot(v.reshape(-1).numpy())
            ax[i, j].set_xticks([]), ax[i, j].set_yticks([])
        ax[0, j].set_title(c if c in ("y", "truth", "posterior mean") else f"{c} sample", fontsize=8)
    gs = ax[k, 0].get_gridspec()
    for a in ax[k]:
        a.remove()
    axe = fig.add_subplot(gs[k, :])
    for name in result.samplers:
        for sy in result.sigma_y:
            sel = [r for r in rows if r["sampler"] == name and r["sigma_y"] == sy]
            axe.plot(
                [r["steps"] for r in sel], [r["mean_error"] for r in sel], marker="o", label=f"{name}, sigma_y={sy:g}"
            )
    axe.axhline(rows[0]["mc_floor"], color="k", ls="--", lw=0.8, label="Monte-Carlo floor")
    axe.set_xscale("log"), axe.set_yscale("log")
    axe.set_xlabel("steps"), axe.set_ylabel("posterior-mean error")
    axe.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
