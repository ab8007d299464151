r"""Bonnaire, Urfin, Biroli & Mezard (NeurIPS 2025), "Why diffusion models don't memorize: the
role of implicit dynamical regularization in training" (arXiv 2505.17638; authors' code
tbonnair/Why-Diffusion-Models-Don-t-Memorize).

Claim
-----
Training has two time scales. Sample quality becomes good at a time ``tau_gen`` that does not
depend on the training-set size n ("the FID quickly decreases to reach a minimum value on a
timescale tau_gen that does not depend on n ... Beyond this time, the FID remains flat");
memorization starts much later, at ``tau_mem`` proportional to n ("f_mem(tau) is zero until a
later time tau_mem after which it increases"; f_mem(tau)/f_mem(tau_max) collapses against
tau/n). Both scale as 1/W with the network's capacity W (``tau_mem ~ n / W``), so a network
that is small enough for n does not memorize within a given training budget.

The paper's observables
-----------------------
* memorization fraction f_mem: share of generated samples x with
  ``||x - a^mu1|| / ||x - a^mu2|| < k = 1/3`` (nearest / second-nearest training image, eq. 6),
  with a 95 % bootstrap interval (1000 resamples);
* sample quality: FID of the samples against held-out test images (``compute_FID.py``: pytorch_fid
  per checkpoint). Inception's weights cannot be downloaded here, so the stand-in, fixed before
  the run, is the same Frechet formula on the features of a small CNN classifier of the digits
  (:func:`gaussdiff.classifier_frechet_distance`; ``gd.feature_classifier("digits")``, trained
  once, seeded, cached; its held-out accuracy is reported). The pixel Frechet distance
  (:func:`gaussdiff.pixel_frechet_distance`) is reported beside it. The classifier saw 80 % of
  the digits in training (as Inception saw ImageNet), possibly including some reference images.

Protocol
--------
Digits (8x8, scikit-learn, in [-1, 1]). For each n in the grid and each seed, one EDM residual
MLP (width 128) is trained on the first n points of a seeded permutation (nested subsets) for a
budget ``T(n) = 200 n`` steps: Adam lr 1e-3, batch 128, **no EMA and no learning-rate warm-up**
(``ema=0``, ``warmup=0``: the sampled network is the trained one at that step). At step 1 and 20
log-spaced checkpoints up to T(n) the network samples M = 512 points from one fixed noise with
EDM's deterministic Heun sampler (18 steps), and these same M samples give

* f_mem with its 95 % bootstrap interval (gap ratio k = 1/3, 1000 resamples);
* the classifier Frechet distance FD_c and the pixel Frechet distance FD_p against M = 512
  held-out digits (outside every training subset of that seed). Every Frechet distance of this
  script, including the null below, uses M against M points, so its finite-sample bias
  (upwards, ~ 1/M) is the same everywhere.

The null of the Frechet distance (measured from data only, before any training): FD between two
disjoint random subsets of M real digits, over 20 seeded draws: mean ``mu_0`` (the finite-sample
bias: what two sets from the *same* distribution score) and standard deviation ``s_0``. A
tolerance ``tol = mu_0 + 2 s_0`` is the largest FD that sampling noise alone gives in ~97.5 % of
draws: two FD values closer than that are not distinguishable at this sample size.

Definitions (fixed before the full run; written after fast-mode and timing probes only)
---------------------------------------------------------------------------------------
* ``tau_mem`` = the onset of memorization: the first checkpoint from which the 95 % bootstrap
  interval of f_mem excludes 0 at that and every later checkpoint ("zero until tau_mem, after
  which it increases"; with M = 512 the lower bound is > 0 once 4 or more samples are copies,
  f_mem >= 0.008, so a single chance near-copy does not count, and "stays above 0" keeps one
  noisy checkpoint from setting it). Censored (None) when the last checkpoint's interval
  contains 0. The paper's k = 1/3.
* ``tau_gen`` = the first checkpoint at which the Frechet distance reaches the level at which it
  then stays: with ``F_k`` the FD at checkpoint k, ``Fbar_k`` its running median over
  checkpoints k-1, k, k+1 (a single checkpoint of a network without EMA can jump by more than the
  sampling noise), and the final plateau ``P`` = median of F over the last half of the
  checkpoints, ``tau_gen`` = the first checkpoint with ``Fbar_k <= P + tol``. Computed for FD_c
  (the one the checks use) and FD_p (reported beside).
* exponents: OLS slope of ``log tau`` on ``log n`` over every (n, seed) with a finite tau, with
  its 95 % t-interval (seed-to-seed spread enters through the residuals).

The small network (width 6, 1462 parameters, fewer than the n d numbers of the largest training
set) is trained at the largest n with the same budget and seeds.

Checks (PASS/FAIL, criteria fixed before the full run, each from the paper's statements)
----------------------------------------------------------------------------------------
1. tau_mem proportional to n (collapse of f_mem against tau/n; "tau_mem ∝ n"): the 95 % interval
   of the exponent b_mem contains 1 and its lower end exceeds 0.5 (an interval too wide to rule
   out sqrt(n) growth fails).
2. tau_gen independent of n ("a timescale tau_gen that does not depend on n"): the 95 % interval
   of the exponent b_gen (classifier FD) lies inside (-0.5, 0.5).
3. the large network does start memorizing at the largest n within the budget (otherwise check 4
   has no contrast): its final f_mem pooled over seeds satisfies ``- 2 se > 0``.
4. the small network does not ("tau_mem ∝ n / W": a small enough W pushes tau_mem past the
   budget): at every checkpoint of every seed the 95 % bootstrap interval of its f_mem contains
   0 (its tau_mem is censored in every seed); the value shown is its largest f_mem.

Findings (no verdict): tau_gen from the pixel FD and its exponent; the classifier's held-out
accuracy; the FD null (mu_0, s_0); f_mem/f_mem(tau_max) against tau/n (the paper's collapse,
figure); the FD at tau_gen and at the end.

Changes from the 2026-11-24 protocol
------------------------------------
* tau_gen is when sample quality becomes good, measured as in the paper by a Frechet distance of
  samples against held-out images at every checkpoint, read as "reaches its plateau" with a
  tolerance from the FD's own sampling noise. Before, it was 90 % of the drop of the held-out
  denoising loss to its minimum: that minimum marks the onset of overfitting, which moves with n
  (the paper: the test loss's overfitting time scales like tau_mem), so it gave b_gen = 0.43.
* tau_mem is the onset where f_mem stops being zero (the paper's definition), judged by its
  bootstrap interval, instead of f_mem reaching 0.1 (the paper states no level on f_mem).
* No EMA and no learning-rate warm-up ("We do not employ exponential moving average or
  learning-rate warm-up"); before, EMA 0.999 and a 100-step warm-up, inside which the
  2026-11-24 tau_gen values fell. No tau can fall inside a warm-up now. The optimiser stays Adam
  (lr 1e-3): the paper's main runs use SGD with momentum, but its SM A.3 trains with Adam and
  finds the same two time scales ("both tau_gen and tau_mem occur after much fewer steps").
  Batch 128 for every n (the paper's batch is min(n, 512), constant in n for its n >= 512; a
  constant batch keeps "steps" the same unit for every n).
* Sizes n = 24, 48, 96, 192 (were 8, 16, 32, 64): in a probe the classifier FD of a network
  trained on 8 digits never fell below its value at step 20 (samples drawn from 8 digits cannot
  approach the digit distribution), so there is no generalization time to read; the paper's
  n start at 128. Budget 200 n (was 300 n): probes saw the onset near 70-110 n, so 200 n leaves
  ~2x headroom at the cost the larger n allow. 512 samples per checkpoint (was 256) so that
  one sample is 0.2 % of f_mem and the FD's bias and noise are smaller; the paper samples 10 000.
* Check 3 asks for the onset at the largest n (f_mem - 2 se > 0) and check 4 for no onset of the
  small network, both by the tau_mem rule (before: levels of 0.1).
* Sampler unchanged (Heun-18, deterministic; the paper uses deterministic DDIM, 100 steps).

Full mode: n = 24, 48, 96, 192 (a factor 8), 2 seeds, 221 k training steps in all plus 210
checkpoint evaluations and the classifier (~40 s once, then cached): estimated 15-25 min on the
shared 2-core machine with 1 thread. Fast mode: n = 4, 8, 16, one seed, budget 120 n, 8
checkpoints, M = 128, a classifier of 150 steps (cached after its first run), 5.3 k steps (same
shape; ~25 s of CPU; the fit has 1 degree of freedom and such small n have no generalization
phase, so its verdict is not meaningful).

    python validation/bonnaire_tau_mem.py --outdir out/val_bonnaire            # 15-25 min
    python validation/bonnaire_tau_mem.py --outdir out/val_bonnaire --fast     # ~30 s
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, run_script, save_figure  # noqa: E402

import gaussdiff as gd  # noqa: E402

GAP_RATIO = 1 / 3  # the paper's k (eq. 6)
NULL_DRAWS = 20  # pairs of disjoint real subsets for the FD null
NULL_Z = 2.0  # tol = mu_0 + NULL_Z s_0

FULL = dict(
    sizes=(24, 48, 96, 192),
    seeds=(0, 1),
    steps_per_n=200,
    checkpoints=20,
    width=128,
    small_width=6,
    n_samples=512,
    clf_steps=2000,
)
FAST = dict(
    sizes=(4, 8, 16), seeds=(0,), steps_per_n=120, checkpoints=8, width=128, small_width=6, n_samples=128, clf_steps=150
)
TRAIN = dict(batch_size=128, lr=1e-3, warmup=0, ema=0.0)  # no warm-up, no EMA (the paper)


def checkpoint_grid(steps: int, count: int) -> list[int]:
    """Step 1 and ``count`` log-spaced steps from 20 to ``steps``."""
    pts = {1} | {int(round(v)) for v in np.geomspace(20, steps, count)}
    return sorted(p for p in pts if 1 <= p <= steps)


def fd_null(data, clf, m: int) -> dict:
    """FD (classifier and pixel) between two disjoint random subsets of ``m`` real images, over
    NULL_DRAWS seeded draws: mean, sd and the tolerance mean + NULL_Z sd of each."""
    feats = clf.embed(data)
    out = {}
    vals = {"classifier": [], "pixel": []}
    for r in range(NULL_DRAWS):
        p = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(5000 + r))
        a, b = p[:m], p[m : 2 * m]
        vals["classifier"].append(
            gd.frechet_distance(gd.FeatureStats.from_features(feats[a]), gd.FeatureStats.from_features(feats[b]))
        )
        vals["pixel"].append(gd.pixel_frechet_distance(data[a], data[b]))
    for k, v in vals.items():
        mu, sd = float(np.mean(v)), float(np.std(v, ddof=1))
        out[k] = dict(mean=mu, sd=sd, tol=mu + NULL_Z * sd)
    return out


def onset(rows) -> float | None:
    """tau_mem: the first checkpoint from which f_mem's bootstrap lower bound is > 0 at every
    later checkpoint; None when the last one's interval contains 0."""
    rs = sorted(rows, key=lambda r: r["step"])
    if not rs or rs[-1]["memorization_ci_low"] <= 0:
        return None
    i = len(rs) - 1
    while i > 0 and rs[i - 1]["memorization_ci_low"] > 0:
        i -= 1
    return float(rs[i]["step"])


def running_median(v) -> np.ndarray:
    """Median over each point and its two neighbours (one neighbour at the ends)."""
    v = np.asarray(v, float)
    return np.array([np.median(v[max(0, i - 1) : i + 2]) for i in range(len(v))])


def plateau_time(steps, fd, tol):
    """tau_gen: the first checkpoint whose running median of the FD is within ``tol`` of the
    final plateau P (median of the last half of the checkpoints). Returns (tau, P)."""
    fd = np.asarray(fd, float)
    plateau = float(np.median(fd[len(fd) // 2 :]))
    med = running_median(fd)
    for s, v in zip(steps, med):
        if v <= plateau + tol:
            return float(s), plateau
    return None, plateau


def fit_exponent(ns, taus):
    """OLS slope of log tau on log n with its 95 % t-interval; (b, se, lo, hi)."""
    from scipy import stats

    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(taus, float))
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    res = stats.linregress(x, y)
    q = stats.t.ppf(0.975, len(x) - 2)
    return float(res.slope), float(res.stderr), float(res.slope - q * res.stderr), float(res.slope + q * res.stderr)


def run_training(train, ref, ref_feats, clf, noise, *, n, seed, width, steps, count, threads):
    """Train one network on ``train`` (n points) and evaluate it at its checkpoints."""
    grid = gd.karras_sigmas(18).float()
    rows = []

    def callback(step, den):
        with torch.no_grad():
            samples = gd.sample_heun(den, noise, grid)
        mem = gd.memorization_fraction(samples, train, ratio=GAP_RATIO, n_boot=1000, seed=seed)
        fd_c = gd.frechet_distance(gd.FeatureStats.from_features(clf.embed(samples)), ref_feats)
        rows.append(
            dict(
                n=n,
                seed=seed,
                width=width,
                framework="edm",
                step=step,
                **mem.as_dict("memorization"),
                fd_classifier=fd_c,
                fd_pixel=gd.pixel_frechet_distance(samples, ref),
            )
        )

    gd.train_denoiser(
        train,
        steps=steps,
        net="mlp",
        width=width,
        framework="edm",
        seed=seed,
        checkpoint_steps=checkpoint_grid(steps, count),
        callback=callback,
        progress=False,
        num_threads=threads,
        **TRAIN,
    )
    return rows


def main(argv=None) -> dict:
    return run_script(__doc__, argv, full=FULL, fast=FAST, body=_main)


def _main(args, cfg, threads) -> dict:
    rep = Report(
        "bonnaire_tau_mem",
        claim="tau_mem grows linearly with N while tau_gen (sample quality, Frechet distance) "
        "stays constant; a small enough network never memorizes at large N within the budget",
        source="Bonnaire, Urfin, Biroli & Mezard 2025, 'Why diffusion models don't memorize'",
        expected="b_mem 95% CI contains 1 (low end > 0.5); b_gen CI inside (-0.5, 0.5); the large net "
        "starts memorizing at the largest N, the small net does not",
        args=args,
    )
    data, _, _ = gd.load_dataset("digits")
    m = cfg["n_samples"]
    clf = gd.feature_classifier("digits", steps=cfg["clf_steps"], num_threads=threads)
    null = fd_null(data, clf, m)
    print(
        f"   classifier: held-out accuracy {clf.accuracy:.3f} ({cfg['clf_steps']} steps); FD null "
        f"(M={m} vs {m} real): classifier {null['classifier']['mean']:.3g} +- {null['classifier']['sd']:.2g} "
        f"-> tol {null['classifier']['tol']:.3g}; pixel {null['pixel']['mean']:.3g} +- "
        f"{null['pixel']['sd']:.2g} -> tol {null['pixel']['tol']:.3g}",
        flush=True,
    )
    rep.note("classifier_accuracy", clf.accuracy)
    rep.note("classifier_steps", cfg["clf_steps"])
    rep.note("fd_null", null)
    rep.note("training", dict(TRAIN, optimizer="adam", sampler="heun-18", n_samples=m))

    rows_all, rows_small = [], []
    sizes, n_max = cfg["sizes"], max(cfg["sizes"])
    noise = gd.seeded_noise(m, data.shape[1:], seed=777, dtype=torch.float32) * 80.0
    for seed in cfg["seeds"]:
        perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(1000 + seed))
        pool, ref = data[perm[:n_max]], data[perm[-m:]]
        ref_feats = gd.FeatureStats.from_features(clf.embed(ref))
        for n, width in [(n, cfg["width"]) for n in sizes] + [(n_max, cfg["small_width"])]:
            steps = cfg["steps_per_n"] * n
            rows = run_training(
                pool[:n],
                ref,
                ref_feats,
                clf,
                noise,
                n=n,
                seed=seed,
                width=width,
                steps=steps,
                count=cfg["checkpoints"],
                threads=threads,
            )
            (rows_all if width == cfg["width"] else rows_small).extend(rows)
            print(
                f"   N={n:4d} seed {seed} width {width:3d}: {steps} steps, final f_mem "
                f"{fmt(rows[-1]['memorization'], rows[-1]['memorization_se'])}, max f_mem "
                f"{max(r['memorization'] for r in rows):.3f}, final FD_c {rows[-1]['fd_classifier']:.3g}",
                flush=True,
            )

    # -- time scales per (N, seed) ----------------------------------------------------------
    table = []
    for n in sizes:
        for seed in cfg["seeds"]:
            rs = sorted((r for r in rows_all if r["n"] == n and r["seed"] == seed), key=lambda r: r["step"])
            st = [r["step"] for r in rs]
            tg, plat = plateau_time(st, [r["fd_classifier"] for r in rs], null["classifier"]["tol"])
            tgp, platp = plateau_time(st, [r["fd_pixel"] for r in rs], null["pixel"]["tol"])
            table.append(
                dict(
                    n=n,
                    seed=seed,
                    tau_mem=onset(rs),
                    tau_gen=tg,
                    tau_gen_pixel=tgp,
                    fd_plateau=plat,
                    fd_pixel_plateau=platp,
                    budget=cfg["steps_per_n"] * n,
                    final_memorization=rs[-1]["memorization"],
                    final_fd=rs[-1]["fd_classifier"],
                )
            )
    print("   N     seed  tau_gen(FD_c) tau_gen(FD_p) tau_mem    budget  FD_c plateau")
    for t in table:
        print(
            f"   {t['n']:<5d} {t['seed']:<5d} {fmt(t['tau_gen']) if t['tau_gen'] else '-':<13} "
            f"{fmt(t['tau_gen_pixel']) if t['tau_gen_pixel'] else '-':<13} "
            f"{fmt(t['tau_mem']) if t['tau_mem'] else '> budget':<10} {t['budget']:<7d} {t['fd_plateau']:.3g}"
        )
    rep.note("time_scales", table)

    def fit(key):
        pts = [(t["n"], t[key]) for t in table if t[key]]
        return (fit_exponent(*zip(*pts)) if len(pts) >= 3 else (math.nan,) * 4), pts

    b_mem, mem_pts = fit("tau_mem")
    b_gen, gen_pts = fit("tau_gen")
    b_genp, _ = fit("tau_gen_pixel")
    censored = [(t["n"], t["seed"]) for t in table if not t["tau_mem"]]
    rep.note("exponent_mem", dict(zip(("b", "se", "ci_low", "ci_high"), b_mem)))
    rep.note("exponent_gen", dict(zip(("b", "se", "ci_low", "ci_high"), b_gen)))
    rep.note("exponent_gen_pixel", dict(zip(("b", "se", "ci_low", "ci_high"), b_genp)))
    rep.note("tau_mem_censored", censored)
    rep.note("rows", rows_all)
    rep.note("rows_small", rows_small)
    print(
        f"   finding: tau_gen from the pixel FD: exponent {fmt(b_genp[0], b_genp[1])}, 95% CI "
        f"[{b_genp[2]:.2f}, {b_genp[3]:.2f}]"
    )

    rep.check(
        "exponent of tau_mem vs N",
        value=b_mem[0],
        se=b_mem[1],
        passed=(b_mem[2] <= 1.0 <= b_mem[3]) and b_mem[2] > 0.5,
        expected="95% CI contains 1, low end > 0.5",
        note=f"95% CI [{b_mem[2]:.2f}, {b_mem[3]:.2f}]; {len(mem_pts)} (N, seed) points"
        + (f"; no onset within the budget for {censored}" if censored else ""),
    )
    rep.check(
        "exponent of tau_gen vs N",
        value=b_gen[0],
        se=b_gen[1],
        passed=b_gen[2] > -0.5 and b_gen[3] < 0.5,
        expected="95% CI inside (-0.5, 0.5)",
        note=f"95% CI [{b_gen[2]:.2f}, {b_gen[3]:.2f}]; {len(gen_pts)} (N, seed) points; classifier FD",
    )

    big = [r for r in rows_all if r["n"] == n_max]
    last_step = max(r["step"] for r in big)
    last = [r for r in big if r["step"] == last_step]
    v = float(np.mean([r["memorization"] for r in last]))
    se = float(math.sqrt(sum(r["memorization_se"] ** 2 for r in last)) / len(last))
    rep.check(
        f"large net (width {cfg['width']}) f_mem at N={n_max}, end of budget",
        value=v,
        se=se,
        passed=v - 2 * se > 0,
        expected="- 2 se > 0",
    )
    worst = max(rows_small, key=lambda r: r["memorization"])
    small_ok = all(r["memorization_ci_low"] <= 0 for r in rows_small)
    rep.check(
        f"small net (width {cfg['small_width']}) max f_mem at N={n_max} over the budget",
        value=worst["memorization"],
        se=worst["memorization_se"],
        passed=small_ok,
        expected="95% bootstrap interval contains 0 at every checkpoint (no onset)",
        note=f"largest at step {worst['step']} of {max(r['step'] for r in rows_small)}, seed {worst['seed']}",
    )

    fig = plot(rep.outdir / "bonnaire_tau_mem.png", rows_all, rows_small, table, b_mem, b_gen, null, cfg)
    reasons = []
    if not ((b_mem[2] <= 1.0 <= b_mem[3]) and b_mem[2] > 0.5):
        reasons.append(
            f"b_mem = {fmt(b_mem[0], b_mem[1])}, 95% CI [{b_mem[2]:.2f}, {b_mem[3]:.2f}] from "
            f"{len(mem_pts)} (N, seed) points over N = {min(sizes)}..{n_max}"
            + (f", no onset within the budget for {censored}" if censored else "")
        )
    if not (b_gen[2] > -0.5 and b_gen[3] < 0.5):
        reasons.append(f"b_gen = {fmt(b_gen[0], b_gen[1])}, 95% CI [{b_gen[2]:.2f}, {b_gen[3]:.2f}]")
    if not v - 2 * se > 0:
        reasons.append(
            f"the large network did not start memorizing at N={n_max} within {cfg['steps_per_n'] * n_max} steps"
        )
    if not small_ok:
        reasons.append(f"the width-{cfg['small_width']} network started memorizing at N={n_max}")
    if args.fast:
        reasons.append("fast mode: 3 sizes and one seed, the fits have 1 degree of freedom")
    return rep.finish(figures=[fig], reason="; ".join(reasons) if rep.status == "FAIL" else "")


def plot(path, rows, rows_small, table, b_mem, b_gen, null, cfg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    cmap = plt.get_cmap("viridis")
    sizes = cfg["sizes"]
    for i, n in enumerate(sizes):
        c = cmap(i / max(1, len(sizes) - 1))
        for seed in cfg["seeds"]:
            rs = sorted((r for r in rows if r["n"] == n and r["seed"] == seed), key=lambda r: r["step"])
            st = np.array([r["step"] for r in rs], float)
            f = np.array([r["memorization"] for r in rs])
            lab = f"N={n}" if seed == cfg["seeds"][0] else None
            ax[0].errorbar(
                st,
                f,
                yerr=[
                    f - [r["memorization_ci_low"] for r in rs],
                    np.array([r["memorization_ci_high"] for r in rs]) - f,
                ],
                color=c,
                lw=1,
                capsize=2,
                label=lab,
            )
            ax[1].plot(st / n, f / f[-1] if f[-1] > 0 else f, color=c, lw=1, label=lab)
            ax[2].plot(st, [r["fd_classifier"] for r in rs], color=c, lw=1, label=lab)
    for seed in cfg["seeds"]:
        rs = sorted((r for r in rows_small if r["seed"] == seed), key=lambda r: r["step"])
        ax[0].plot(
            [r["step"] for r in rs],
            [r["memorization"] for r in rs],
            color="red",
            ls="--",
            lw=1,
            label=f"N={max(sizes)}, width {cfg['small_width']}" if seed == cfg["seeds"][0] else None,
        )
    ax[0].set(
        xscale="log",
        xlabel="training step",
        ylabel="f_mem (95% bootstrap interval)",
        title=f"memorization (width {cfg['width']}; red: width {cfg['small_width']})",
    )
    ax[0].legend(fontsize=7)
    ax[1].set(xscale="log", xlabel="step / N", ylabel="f_mem / f_mem(end)", title="the paper's collapse")
    ax[1].legend(fontsize=7)
    ax[2].axhline(null["classifier"]["mean"], color="gray", ls=":", lw=1, label="real vs real (null mean)")
    ax[2].set(
        xscale="log",
        yscale="log",
        xlabel="training step",
        ylabel="classifier Frechet distance",
        title="sample quality against held-out digits",
    )
    ax[2].legend(fontsize=7)
    for key, b, mk, lab in (("tau_mem", b_mem, "o", "tau_mem"), ("tau_gen", b_gen, "s", "tau_gen")):
        pts = [(t["n"], t[key]) for t in table if t[key]]
        if pts:
            ns, ts = zip(*pts)
            ax[3].plot(ns, ts, mk, label=f"{lab}: exponent {fmt(b[0], b[1])}")
            if not math.isnan(b[0]):
                xs = np.geomspace(min(sizes), max(sizes), 20)
                a = np.exp(np.mean(np.log(ts)) - b[0] * np.mean(np.log(ns)))
                ax[3].plot(xs, a * xs ** b[0], "--", lw=1)
    ax[3].plot(sizes, [cfg["steps_per_n"] * n for n in sizes], "k:", lw=1, label=f"budget {cfg['steps_per_n']} N")
    ax[3].set(xscale="log", yscale="log", xlabel="N", ylabel="training steps", title="time scales")
    ax[3].legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
