r"""Kadkhodaie, Guth, Simoncelli & Mallat (2024, ICLR), "Generalization in diffusion models
arises from geometry-adaptive harmonic representations".

Claim
-----
Two networks trained on *disjoint* training sets of size N, sampled from the same noise, return
their own training images when N is small and nearly the same new images when N is large: the
two models converge to the same density. The N at which this happens depends on the network's
capacity and on the complexity of the images ("the amount of data needed to cross this phase
transition depends on both the image complexity and the neural network capacity").

Protocol
--------
:func:`gaussdiff.experiments.run_sweep` on two data sets, the scikit-learn digits (8x8, 1797
images) and non-overlapping 8x8 patches of the natural photographs shipped with scikit-learn,
scikit-image, PyWavelets and matplotlib (``patches:size=8``, ~119k distinct patches), each with
two widths of the EDM residual MLP. Each cell (N, width) draws two disjoint subsets of size N
(one seeded permutation), trains one network on each (4000 steps, batch 128, Adam lr 1e-3, EMA
0.999) and samples both from the same 256 noise draws (Heun, 18 steps). Measured per cell:

* memorization: share of the 2 x 256 samples whose nearest training point of their own subset is
  less than 1/3 the distance of the second nearest (bootstrap se);
* reproducibility (RP): share of the 256 shared-noise pairs whose centred cosine is >= 0.9.

The transition size ``N*`` is where RP first reaches 0.5, interpolated linearly in log N between
grid points (``N* <= N_min`` when the first point is already above, "> N_max" when never reached).
Its uncertainty: 4000 parametric-bootstrap draws of every RP point from its Jeffreys posterior
``Beta(k + 1/2, n - k + 1/2)``, giving a distribution of log N*. ``N*_mem`` (memorization falling
below 0.5) is reported beside it.

Data complexity is fixed before running, not read off the results: the natural-image patches are
taken as the more complex data (continuous grey levels, edges and textures of every orientation,
position and contrast from many photographs, against ten pen-stroke classes on a 17-level grid),
so the prediction is N*(patches) > N*(digits). Their covariance spectra do not order them (21
principal components hold 90 % of the variance of each, once every image's own mean is removed),
so this ordering is an assumption of the check, stated here.

Checks (criteria fixed before looking at results)
-------------------------------------------------
For each data set and width:
  (a) own training images at the smallest N: memorization - 2 se >= 0.5;
  (b) the same new samples at the largest N: RP - 2 se >= 0.5.
For each data set, capacity: N*(large width) > N*(small width) in at least 97.5 % of the bootstrap
draws (one-sided 97.5 % confidence).
For each width, complexity: N*(patches) > N*(digits) in at least 97.5 % of the draws.
A draw where neither curve reaches 0.5 counts as not ordered (an unmeasured N* fails).

Expected: all PASS. Full mode: widths 32 and 128 (16k and 186k parameters), digits N = 8, 20,
52, 133, 338, 898 (the most two disjoint subsets allow), patches the same plus 2300 and 5900,
4000 steps, one seed; ~15 min wall on the shared 2-core machine with 1 thread (the package's
width 256 would take ~3x longer). A smaller run (widths 16 and 64, 3000 steps, N from 4) showed
why the scale matters: those networks never memorized by the gap ratio even at N = 4 (at most
0.15), so the small-N regime of the claim was not reached. Fast mode: N = 4, 32, 256, widths 16
and 64, 120 steps, 32 samples (same shape; the networks are far from trained, so its verdict is
not meaningful).

    python validation/kadkhodaie_disjoint.py --outdir out/val_kadkhodaie            # ~15 min
    python validation/kadkhodaie_disjoint.py --outdir out/val_kadkhodaie --fast     # ~30 s
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, parse_args, save_figure  # noqa: E402

from gaussdiff.experiments import PhaseConfig, run_sweep  # noqa: E402

LEVEL = 0.5              # RP (or 1 - memorization) level that defines N*
THRESHOLD = 0.9          # centred cosine of a "same sample" pair
N_BOOT = 4000

_DIGITS = (8, 20, 52, 133, 338, 898)
FULL = dict(data={"digits": _DIGITS, "patches:size=8": _DIGITS + (2300, 5900)}, widths=(32, 128), steps=4000,
            n_samples=256, dist_points=128)
FAST = dict(data={"digits": (4, 32, 256), "patches:size=8": (4, 32, 256)}, widths=(16, 64), steps=120,
            n_samples=32, dist_points=8)
LABEL = {"digits": "digits", "patches:size=8": "patches"}


def crossing(ns, values, level=LEVEL):
    """First N where ``values`` reaches ``level`` (linear in log N); ns[0] if already there,
    inf if never."""
    for i, v in enumerate(values):
        if v >= level:
            if i == 0:
                return float(ns[0])
            v0 = values[i - 1]
            f = (level - v0) / (v - v0)
            return float(math.exp(math.log(ns[i - 1]) + f * (math.log(ns[i]) - math.log(ns[i - 1]))))
    return math.inf


def crossing_draws(ns, values, counts, rng, level=LEVEL):
    """Bootstrap draws of the crossing: every point from Beta(k + 1/2, n - k + 1/2)."""
    k = np.rint(np.asarray(values) * np.asarray(counts))
    draws = rng.beta(k + 0.5, np.asarray(counts) - k + 0.5, size=(N_BOOT, len(ns)))
    return np.array([crossing(ns, d, level) for d in draws])


def describe(nstar, draws, n_max):
    if math.isinf(nstar):
        return f"> {n_max}"
    fin = np.log10(draws[np.isfinite(draws)])
    share = np.isfinite(draws).mean()
    lo, hi = (np.quantile(fin, [0.025, 0.975]) if fin.size else (math.nan, math.nan))
    hi_txt = f"{10 ** hi:.0f}" if share >= 0.975 else f"> {n_max}"
    return f"{nstar:.0f} (95% [{10 ** lo:.0f}, {hi_txt}])"


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    cfg = FAST if args.fast else FULL
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or 1)
    try:
        return _main(args, cfg)
    finally:
        torch.set_num_threads(old_threads)


def _main(args, cfg) -> dict:
    rep = Report("kadkhodaie_disjoint",
                 claim="two models trained on disjoint sets give their own training images at small N and the "
                       "same new samples at large N; the transition N grows with capacity and data complexity",
                 source="Kadkhodaie, Guth, Simoncelli & Mallat 2024 (ICLR), 'Generalization in diffusion models "
                        "arises from geometry-adaptive harmonic representations'",
                 expected="memorization >= 0.5 at the smallest N and RP >= 0.5 at the largest N for every data set "
                          "and width; N* larger for the larger width and for the patches than for the digits",
                 args=args)
    rng = np.random.default_rng(2024)
    curves = {}
    for data, sizes in cfg["data"].items():
        config = PhaseConfig(data=data, sizes=tuple(sizes), seeds=(0,), widths=tuple(cfg["widths"]),
                             frameworks=("edm",), net="mlp", steps=cfg["steps"], checkpoints=1, batch_size=128,
                             n_samples=cfg["n_samples"], dist_points=cfg["dist_points"], threshold=THRESHOLD)
        rows = run_sweep(config, rep.outdir / f"sweep_{LABEL[data]}", workers=1, progress=False)
        for w in cfg["widths"]:
            rs = sorted((r for r in rows if r["width"] == w and r["step"] == cfg["steps"]), key=lambda r: r["n"])
            ns = [r["n"] for r in rs]
            c = dict(ns=ns, rp=[r["reproducibility"] for r in rs], rp_se=[r["reproducibility_se"] for r in rs],
                     mem=[r["memorization"] for r in rs], mem_se=[r["memorization_se"] for r in rs],
                     sim=[r["similarity_ab"] for r in rs])
            c["nstar"] = crossing(ns, c["rp"])
            c["draws"] = crossing_draws(ns, c["rp"], [cfg["n_samples"]] * len(ns), rng)
            c["nstar_mem"] = crossing(ns, [1 - m for m in c["mem"]])
            c["draws_mem"] = crossing_draws(ns, [1 - m for m in c["mem"]], [2 * cfg["n_samples"]] * len(ns), rng)
            curves[(LABEL[data], w)] = c
            print(f"   {LABEL[data]:8s} width {w:4d}: " + ", ".join(
                f"N={n} mem {fmt(m, ms)} RP {fmt(r, s)}" for n, m, ms, r, s in
                zip(ns, c["mem"], c["mem_se"], c["rp"], c["rp_se"])), flush=True)
            print(f"      N* (RP >= {LEVEL}) = {describe(c['nstar'], c['draws'], ns[-1])}; "
                  f"N*_mem (memorization < {LEVEL}) = {describe(c['nstar_mem'], c['draws_mem'], ns[-1])}", flush=True)

    # -- (a), (b): the two regimes --------------------------------------------------------
    for (name, w), c in curves.items():
        rep.check(f"{name} width {w}: memorization at N={c['ns'][0]}", value=c["mem"][0], se=c["mem_se"][0],
                  passed=c["mem"][0] - 2 * c["mem_se"][0] >= 0.5, expected="- 2 se >= 0.5")
    for (name, w), c in curves.items():
        rep.check(f"{name} width {w}: reproducibility at N={c['ns'][-1]}", value=c["rp"][-1], se=c["rp_se"][-1],
                  passed=c["rp"][-1] - 2 * c["rp_se"][-1] >= 0.5, expected="- 2 se >= 0.5",
                  note=f"mean cosine {c['sim'][-1]:.3f}")

    # -- capacity and complexity: ordered N* ------------------------------------------------
    def ordered(big, small, what):
        cb, cs = curves[big], curves[small]
        db, ds = cb["draws"], cs["draws"]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = float(np.mean(db > ds))                           # inf > finite counts; inf > inf does not
            ratio = np.log10(db / ds)
        fin = ratio[np.isfinite(ratio)]
        point = (math.log10(cb["nstar"] / cs["nstar"])
                 if math.isfinite(cb["nstar"]) and math.isfinite(cs["nstar"]) else math.nan)
        rep.check(what, value=point, se=float(fin.std()) if fin.size > 1 else None, passed=share >= 0.975,
                  expected="N* ordered in >= 97.5% of bootstrap draws",
                  note=f"log10 N* ratio; ordered in {100 * share:.1f}% of draws; N* "
                       f"{describe(cb['nstar'], db, cb['ns'][-1])} vs {describe(cs['nstar'], ds, cs['ns'][-1])}")

    w_small, w_big = min(cfg["widths"]), max(cfg["widths"])
    for name in ("digits", "patches"):
        ordered((name, w_big), (name, w_small), f"{name}: N*(width {w_big}) > N*(width {w_small}) (capacity)")
    for w in (w_small, w_big):
        ordered(("patches", w), ("digits", w), f"width {w}: N*(patches) > N*(digits) (complexity)")

    rep.note("curves", {f"{k[0]}_w{k[1]}": {kk: (None if isinstance(vv, float) and math.isinf(vv) else vv)
                                            for kk, vv in v.items() if kk not in ("draws", "draws_mem")}
                        for k, v in curves.items()})
    fig = plot(rep.outdir / "kadkhodaie_disjoint.png", curves, cfg)
    reasons = [f"{c['what']}: {fmt(c['value'], c['se'])}" + (f" ({c['note']})" if c["note"] else "")
               for c in rep.checks if c["status"] == "FAIL"]
    if args.fast:
        reasons.append(f"fast mode: {cfg['steps']} training steps, far from trained")
    return rep.finish(figures=[fig], reason="; ".join(reasons) if rep.status == "FAIL" else "")


def plot(path, curves, cfg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = dict(zip(sorted(cfg["widths"]), ("tab:blue", "tab:red")))
    for ax, name in zip(axes, ("digits", "patches")):
        for w in cfg["widths"]:
            c = curves[(name, w)]
            ax.errorbar(c["ns"], c["rp"], yerr=[2 * s for s in c["rp_se"]], color=colors[w], marker="o", capsize=3,
                        label=f"RP (cos >= {THRESHOLD}), width {w}")
            ax.errorbar(c["ns"], c["mem"], yerr=[2 * s for s in c["mem_se"]], color=colors[w], marker="s", ls="--",
                        capsize=3, label=f"memorization, width {w}")
            if math.isfinite(c["nstar"]):
                ax.axvline(c["nstar"], color=colors[w], ls=":", lw=1)
        ax.axhline(LEVEL, color="gray", lw=0.8)
        ax.set(xscale="log", xlabel="N (each of two disjoint training sets)", ylabel="share (+- 2 se)",
               ylim=(-0.05, 1.05), title=f"{name}: disjoint-set models from the same noise (dotted: N*)")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
