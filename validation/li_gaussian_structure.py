"""Li, Dai & Qu (2024), "Understanding generalizability of diffusion models requires rethinking
the hidden Gaussian structure": trained denoisers that generalize are close to the Gaussian
denoiser of their training set.

Claim
-----
1. The linearity of trained denoisers rises with the training-set size N.
2. The linear distillation of a trained denoiser (least-squares affine fit per sigma) approaches
   the ``GaussianDenoiser`` of the training set (empirical mean and covariance) as N grows.
3. Samples of generalizing models resemble the Gaussian denoiser's samples from the same noise.
4. The Gaussian bias is stronger when capacity is small relative to N: a narrow network is
   closer to the Gaussian denoiser than a wide one trained on the same data.
5. An over-parameterised model (wide, small N) is close to the Gaussian early in training, then
   moves to the empirical denoiser as it memorizes.

Protocol
--------
Digits (64 pixels in [-1, 1], flattened), training subsets of N in 16, 64, 256, 896 (fast: 16, 256)
nested by one seeded permutation; EDM MLPs (depth 3) of widths 32 and 256 (fast: 32 and 128),
seeds 0 and 1 (fast: 0), 4000 Adam steps of batch 128 (fast: 300), evaluated at log-spaced
checkpoints. At every checkpoint: the relative denoiser distances (``gaussdiff.denoiser_distance``,
normalised by the data variance, mean over sigma in 0.02..5) to the ``GaussianDenoiser.fit`` and to
the ``EmpiricalDenoiser`` of the training subset, on noisy training points (rows repeated to 128,
fresh noise per row), and the memorization of 128 Heun samples (18 steps). At the last checkpoint
also: the centred linearity score (``centred_linearity_score``, exactly 1 for every affine
denoiser; the paper's own score ``linearity_score`` is not 1 for an affine map with an offset, as
the digits' mean is far from 0, and is recorded beside it) over sigma in 0.05..5; the linear
distillation on >= 512 noisy training points per sigma and its output distance to the Gaussian
denoiser (``distillation_distance_to_gaussian(...).output``, mean over sigma); the centred-cosine
similarity of the network's samples to the exact Gaussian flow's samples from the same noise
(and, for reference, the empirical optimum's). Uncertainties: standard error over seeds
(2 seeds: a rough one) and bootstrap for shares.

PASS criteria (fixed before the runs; wide = the largest width)
---------------------------------------------------------------
1. linearity(wide, largest N) - linearity(wide, smallest N) > 2 se;
2. distillation distance(wide, largest N) <= 0.5 x distillation distance(wide, smallest N);
3. similarity to Gaussian samples(wide, largest N) >= 0.8 and exceeds the smallest N's by 2 se;
4. mean over N of [dist_gaussian(wide) - dist_gaussian(narrow)] > 2 se;
5. for (smallest N, wide): at the checkpoint where dist_gaussian is smallest, dist_gaussian <
   dist_empirical, and at the last checkpoint dist_empirical < dist_gaussian with memorization
   higher than at that early checkpoint.

    python validation/li_gaussian_structure.py --outdir out/val/li_gaussian_structure          # ~15-25 min
    python validation/li_gaussian_structure.py --outdir out/val/li_gaussian_structure --fast   # < 1 min
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, parse_args, save_figure, set_threads  # noqa: E402

import gaussdiff as gd  # noqa: E402
from gaussdiff.experiments import log_checkpoints  # noqa: E402

DIST_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LIN_SIGMAS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _rows(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x`` repeated (cyclically) to ``max(m, len(x))`` rows."""
    reps = math.ceil(m / x.shape[0])
    return x.repeat(reps, 1)[:max(m, x.shape[0])]


def evaluate(net, train, refs, noise, sigmas, *, full: bool, seed: int) -> dict:
    emp, gau, x_gauss, x_emp = refs
    pts = _rows(train, 128)
    s64 = torch.tensor(DIST_SIGMAS, dtype=torch.float64)
    out = {}
    for name, ref in (("dist_gaussian", gau), ("dist_empirical", emp)):
        g = torch.Generator().manual_seed(seed)
        out[name] = gd.denoiser_distance(net, ref, pts, s64, generator=g).mean
    with torch.no_grad():
        x_net = gd.sample_heun(net, noise, sigmas)
    mem = gd.memorization_fraction(x_net, train, seed=seed)
    out["memorization"], out["memorization_se"] = mem.value, mem.se
    if full:
        g = torch.Generator().manual_seed(seed + 1)
        lin = torch.tensor(LIN_SIGMAS, dtype=torch.float64)
        out["linearity_centred"] = gd.centred_linearity_score(net, pts, lin, generator=g).mean
        out["linearity_paper"] = gd.linearity_score(net, pts, lin, generator=g).mean
        dist = gd.linear_distillation(net, train, s64, generator=g, n_noise=math.ceil(512 / train.shape[0]))
        cmp = gd.distillation_distance_to_gaussian(dist, gau)
        out["distill_gaussian"] = cmp.output.mean
        out["distill_weight"] = cmp.weight.mean
        out["distill_residual"] = float(dist.residual.mean())
        cos = gd.get_similarity("cosine")
        out["similarity_gaussian"] = float(cos(x_net, x_gauss).mean())
        out["similarity_gaussian_empirical_ref"] = float(cos(x_emp, x_gauss).mean())
        out["samples"] = x_net[:8]
    return out


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    set_threads(args.threads or 1)
    fast = args.fast
    cfg = dict(sizes=(16, 256) if fast else (16, 64, 256, 896), widths=(32, 128) if fast else (32, 256),
               seeds=(0,) if fast else (0, 1), steps=300 if fast else 4000, checkpoints=3 if fast else 6,
               n_samples=64 if fast else 128, sample_steps=18, batch_size=128)
    rep = Report("li_gaussian_structure",
                 claim="generalizing denoisers carry the hidden Gaussian structure: linearity and closeness "
                       "to the Gaussian denoiser grow with N, more so for small capacity; wide models pass "
                       "near the Gaussian early in training before memorizing",
                 source="Li, Dai & Qu 2024", args=args,
                 expected="linearity rises with N; distillation distance to Gaussian halves from smallest to "
                          "largest N; similarity to Gaussian samples >= 0.8 at largest N; narrow closer to "
                          "Gaussian than wide; wide small-N model Gaussian-like early, empirical-like late")
    data, _, _ = gd.load_dataset("digits")
    data = data.reshape(data.shape[0], -1)
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    sigmas = gd.karras_sigmas(cfg["sample_steps"]).double()
    noise = gd.seeded_noise(cfg["n_samples"], data.shape[1], seed=12345) * float(sigmas[0])
    ckpts = log_checkpoints(cfg["steps"], cfg["checkpoints"])
    records = []                                    # one per (n, width, seed, step)
    for n in cfg["sizes"]:
        train = data[perm[:n]].double()
        emp, gau = gd.EmpiricalDenoiser(train), gd.GaussianDenoiser.fit(train)
        with torch.no_grad():
            x_gauss = gau.flow(noise, float(sigmas[0]), 0.0)
            x_emp = gd.sample_heun(emp, noise, sigmas)
        refs = (emp, gau, x_gauss, x_emp)
        for width in cfg["widths"]:
            for seed in cfg["seeds"]:
                def cb(step, den, n=n, width=width, seed=seed, train=train, refs=refs):
                    r = evaluate(den, train, refs, noise, sigmas, full=step == ckpts[-1], seed=seed)
                    records.append(dict(n=n, width=width, seed=seed, step=step, **r))

                gd.train_denoiser(train.float(), steps=cfg["steps"], width=width, seed=seed,
                                  batch_size=cfg["batch_size"], checkpoint_steps=ckpts, callback=cb,
                                  progress=False, num_threads=args.threads or 1)
                r = records[-1]
                print(f"   N={n:4d} width={width:4d} seed={seed}: dist_gauss {r['dist_gaussian']:.4f} "
                      f"dist_emp {r['dist_empirical']:.4f} mem {r['memorization']:.2f} "
                      f"LS_c {r['linearity_centred']:.4f} LS {r['linearity_paper']:.4f} "
                      f"distill->G {r['distill_gaussian']:.4f} sim_G {r['similarity_gaussian']:.3f} "
                      f"(optimum {r['similarity_gaussian_empirical_ref']:.3f})")

    def agg(key, n, width, step=ckpts[-1]):
        v = np.array([r[key] for r in records if r["n"] == n and r["width"] == width and r["step"] == step])
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        return float(v.mean()), se

    def se0(se):
        return 0.0 if not np.isfinite(se) else se

    wide, narrow = max(cfg["widths"]), min(cfg["widths"])
    n_lo, n_hi = min(cfg["sizes"]), max(cfg["sizes"])
    table = {f"N{n}_w{w}": {k: agg(k, n, w) for k in ("linearity_centred", "linearity_paper", "distill_gaussian",
                                                        "similarity_gaussian", "dist_gaussian", "dist_empirical",
                                                        "memorization", "similarity_gaussian_empirical_ref")}
             for n in cfg["sizes"] for w in cfg["widths"]}
    rep.note("table_last_checkpoint", table)
    rep.note("config", cfg)
    rep.note("records", [{k: v for k, v in r.items() if k != "samples"} for r in records])

    (l_hi, l_hi_se), (l_lo, l_lo_se) = agg("linearity_centred", n_hi, wide), agg("linearity_centred", n_lo, wide)
    diff_se = math.hypot(se0(l_hi_se), se0(l_lo_se))
    rep.check(f"1 linearity (centred) rise, width {wide}: N={n_hi} minus N={n_lo}", value=l_hi - l_lo, se=diff_se,
              passed=(l_hi - l_lo) > 2 * diff_se and l_hi > l_lo, expected="> 2 se",
              note=f"N={n_lo}: {fmt(l_lo, l_lo_se)}, N={n_hi}: {fmt(l_hi, l_hi_se)}")
    (d_hi, d_hi_se), (d_lo, d_lo_se) = agg("distill_gaussian", n_hi, wide), agg("distill_gaussian", n_lo, wide)
    ratio = d_hi / d_lo
    ratio_se = ratio * math.hypot(se0(d_hi_se) / d_hi, se0(d_lo_se) / d_lo)
    rep.check(f"2 distillation distance to Gaussian, width {wide}: N={n_hi} / N={n_lo}", value=ratio, se=ratio_se,
              passed=ratio <= 0.5, expected="<= 0.5",
              note=f"N={n_lo}: {fmt(d_lo, d_lo_se)}, N={n_hi}: {fmt(d_hi, d_hi_se)}")
    (s_hi, s_hi_se), (s_lo, s_lo_se) = agg("similarity_gaussian", n_hi, wide), agg("similarity_gaussian", n_lo, wide)
    s_diff_se = math.hypot(se0(s_hi_se), se0(s_lo_se))
    rep.check(f"3 similarity of samples to the Gaussian's (same noise), width {wide}, N={n_hi}", value=s_hi,
              se=s_hi_se, passed=s_hi >= 0.8 and (s_hi - s_lo) > 2 * s_diff_se,
              expected=f">= 0.8 and above N={n_lo} by 2 se",
              note=f"N={n_lo}: {fmt(s_lo, s_lo_se)}; optimum at N={n_hi}: "
                   f"{agg('similarity_gaussian_empirical_ref', n_hi, wide)[0]:.3f}")
    diffs = []
    for n in cfg["sizes"]:
        for seed in cfg["seeds"]:
            g = {w: [r["dist_gaussian"] for r in records if r["n"] == n and r["width"] == w and r["seed"] == seed
                     and r["step"] == ckpts[-1]][0] for w in (wide, narrow)}
            diffs.append(g[wide] - g[narrow])
    diffs = np.array(diffs)
    rng = np.random.default_rng(0)
    boot = [diffs[rng.integers(0, len(diffs), len(diffs))].mean() for _ in range(1000)]
    d_mean, d_se = float(diffs.mean()), float(np.std(boot, ddof=1))
    rep.check(f"4 capacity: mean over N, seeds of dist_gaussian(w{wide}) - dist_gaussian(w{narrow})", value=d_mean,
              se=d_se, passed=d_mean > 2 * d_se, expected="> 2 se (narrow closer to the Gaussian)",
              note="per N: " + ", ".join(f"N{n}: w{narrow} {agg('dist_gaussian', n, narrow)[0]:.4f} / w{wide} "
                                         f"{agg('dist_gaussian', n, wide)[0]:.4f}" for n in cfg["sizes"]))
    traj = {s: agg_step(records, n_lo, wide, s) for s in ckpts}
    s_min = min(ckpts, key=lambda s: traj[s]["dist_gaussian"])
    early, final = traj[s_min], traj[ckpts[-1]]
    ok5 = (early["dist_gaussian"] < early["dist_empirical"] and final["dist_empirical"] < final["dist_gaussian"]
           and final["memorization"] > early["memorization"])
    rep.check(f"5 early training (N={n_lo}, width {wide}): dist_gaussian / dist_empirical at step {s_min}",
              value=early["dist_gaussian"] / early["dist_empirical"], passed=ok5,
              expected="< 1 early, and > 1 at the end with memorization rising",
              note=f"end (step {ckpts[-1]}): dist_gaussian / dist_empirical "
                   f"{final['dist_gaussian'] / final['dist_empirical']:.3g}, memorization "
                   f"{early['memorization']:.2f} -> {final['memorization']:.2f}")
    rep.note("early_training_trajectory", {str(s): v for s, v in traj.items()})

    fig = _figure(records, cfg, ckpts, traj, rep.outdir / "li_gaussian_structure.png")
    failed = [c["what"].split()[0] for c in rep.checks if c["status"] == "FAIL"]
    reason = "" if not failed else (f"claims {', '.join(failed)} not reproduced with the measured numbers above"
                                    + (" (fast mode: 300 training steps, tiny models)" if fast else ""))
    return rep.finish(figures=[fig], reason=reason)


def agg_step(records, n, width, step):
    sel = [r for r in records if r["n"] == n and r["width"] == width and r["step"] == step]
    return {k: float(np.mean([r[k] for r in sel])) for k in ("dist_gaussian", "dist_empirical", "memorization")}


def _figure(records, cfg, ckpts, traj, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 5, figsize=(22, 4.2))
    last = [r for r in records if r["step"] == ckpts[-1]]
    for i, w in enumerate(cfg["widths"]):
        for j, (key, lab) in enumerate((("linearity_centred", "centred linearity score"),
                                        ("distill_gaussian", "distillation distance to Gaussian"),
                                        ("similarity_gaussian", "cosine to Gaussian samples"),
                                        ("dist_gaussian", "dist_gaussian (relative MSE)"))):
            m, s = [], []
            for n in cfg["sizes"]:
                v = np.array([r[key] for r in last if r["n"] == n and r["width"] == w])
                m.append(v.mean())
                s.append(v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0)
            ax[j].errorbar(cfg["sizes"], m, yerr=s, fmt="o-", color=f"C{i}", label=f"width {w}")
            ax[j].set_xscale("log")
            ax[j].set_xlabel("N")
            ax[j].set_ylabel(lab)
    for j in (1, 3):
        ax[j].set_yscale("log")
    m_ref = [np.mean([r["similarity_gaussian_empirical_ref"] for r in last if r["n"] == n]) for n in cfg["sizes"]]
    ax[2].plot(cfg["sizes"], m_ref, "k--", label="empirical optimum")
    for a in ax[:4]:
        a.legend(fontsize=7)
    ax[0].set_title("1: linearity rises with N")
    ax[1].set_title("2: distilled linear map -> Gaussian")
    ax[2].set_title("3: samples vs Gaussian samples")
    ax[3].set_title("4: capacity and the Gaussian bias")
    st = list(traj)
    ax[4].plot(st, [traj[s]["dist_gaussian"] for s in st], "o-", label="dist_gaussian")
    ax[4].plot(st, [traj[s]["dist_empirical"] for s in st], "s-", label="dist_empirical")
    ax[4].set_xscale("log"), ax[4].set_yscale("log")
    ax[4].set_xlabel("training step")
    ax[4].set_ylabel("relative MSE")
    ax4b = ax[4].twinx()
    ax4b.plot(st, [traj[s]["memorization"] for s in st], "k:", label="memorization")
    ax4b.set_ylabel("memorization")
    ax[4].legend(fontsize=7, loc="lower left")
    ax[4].set_title(f"5: N={min(cfg['sizes'])}, width {max(cfg['widths'])} over training")
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
