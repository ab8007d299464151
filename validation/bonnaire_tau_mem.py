r"""Bonnaire, Urfin, Biroli & Mezard (2025), "Why diffusion models don't memorize: the role of
implicit dynamical regularization in training".

Claim
-----
Training has two time scales. Good samples appear at a time ``tau_gen`` that does not depend on
the training-set size N; memorization sets in much later, at ``tau_mem`` proportional to N. So
the window ``[tau_gen, tau_mem]`` in which the network generalizes widens linearly with N, and a
network that is small enough for N never memorizes within the training budget.

Protocol
--------
Digits (8x8, scikit-learn), the EDM residual MLP, batch 128, Adam lr 1e-3, EMA 0.999 (the
trainer's defaults). For each N in the grid and each seed, one network is trained on the first N
points of a seeded permutation (the subsets of one seed are nested) for a budget proportional to
N, ``T(N) = 300 N`` steps (tau_mem ~ N needs a budget that grows with N; a pilot run saw the onset
near 1.2k steps at N = 8, so 300 N leaves room for an exponent up to ~1.3 at N = 64: a larger
exponent shows up as tau_mem beyond the budget, reported as censored). At ~20 log-spaced
checkpoints (and step 1) the EMA network

* samples 256 points from one fixed noise (Heun, 18 steps, EDM grid) -> memorization fraction
  (gap ratio 1/3, with bootstrap se);
* gives its held-out denoising loss: the EDM-weighted error
  ``mean_sigma lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2 / d`` with
  ``lambda = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2`` on 256 digits outside every training
  subset, sigma in {0.02, ..., 5} (8 levels) and one fixed noise draw.

Definitions (fixed before running):

* ``tau_mem`` = first training step at which the memorization fraction reaches 0.1 (the onset;
  interpolated in log step between checkpoints, :func:`gaussdiff.experiments.tau_mem`);
* ``tau_gen`` = first step at which the held-out loss has made 90 % of its total drop,
  ``L(t) <= L_min + 0.1 (L(1) - L_min)`` (interpolated in log step);
* exponents: OLS slope of ``log tau`` on ``log N`` over every (N, seed) with a finite tau, with
  its 95 % t-interval (seed-to-seed spread enters through the residuals).

The small network (width 6, 1462 parameters: fewer than the N d = 4096 numbers of the largest
training set) is trained at the largest N with the same budget and seeds.

Checks (PASS/FAIL, criteria fixed before looking at results)
------------------------------------------------------------
1. tau_mem grows linearly: the 95 % interval of the exponent b_mem contains 1 and its lower end
   exceeds 0.5 (an interval too wide to rule out sqrt(N) growth fails).
2. tau_gen stays roughly constant: the 95 % interval of the exponent b_gen lies inside (-0.5, 0.5).
3. the large network does memorize at the largest N within the budget: its final memorization
   fraction (pooled over seeds) minus 2 se is at least 0.1 (otherwise check 4 has no contrast).
4. the small network never memorizes there: its largest memorization fraction over all
   checkpoints (pooled over seeds) plus 2 se stays below 0.1.

Expected: all four PASS. Full mode: N = 8, 16, 32, 64 (a factor 8 in N), 2 seeds, width 128
(large) and 6 (small), ~15 min wall on the shared 2-core machine with 1 thread (the reference
width 256 would take ~3x longer; width 128 still has 45x more parameters than the largest
training set has numbers). A first run with N = 8, 16, 32 only (cut for a time estimate that
proved pessimistic) gave b_mem = 0.95 +- 0.23, 95% CI [0.31, 1.58]: compatible with 1 but too
wide, which is why the range of N matters here.
Fast mode: N = 4, 8, 16, one seed, budget 100 N, 10 checkpoints (same shape, ~25 s; the fit
has 1 degree of freedom, so its verdict is not meaningful).

    python validation/bonnaire_tau_mem.py --outdir out/val_bonnaire            # ~15 min
    python validation/bonnaire_tau_mem.py --outdir out/val_bonnaire --fast     # ~25 s
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
from gaussdiff.experiments import tau_mem  # noqa: E402

MEM_LEVEL = 0.1          # onset level of tau_mem
GEN_DROP = 0.9           # share of the held-out loss drop that defines tau_gen
LOSS_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

FULL = dict(sizes=(8, 16, 32, 64), seeds=(0, 1), steps_per_n=300, checkpoints=20, width=128,
            small_width=6, n_samples=256, n_heldout=256)
FAST = dict(sizes=(4, 8, 16), seeds=(0,), steps_per_n=100, checkpoints=10, width=128,
            small_width=6, n_samples=128, n_heldout=128)


def checkpoint_grid(steps: int, count: int) -> list[int]:
    """Step 1 and ``count`` log-spaced steps from 20 to ``steps``."""
    pts = {1} | {int(round(v)) for v in np.geomspace(20, steps, count)}
    return sorted(p for p in pts if 1 <= p <= steps)


def heldout_loss(den, x0, noise, sigmas, sigma_data) -> float:
    """EDM-weighted denoising loss on held-out points: mean over sigma of
    lambda(sigma) |D(x0 + sigma n, sigma) - x0|^2 / d, lambda = (s^2 + sd^2) / (s sd)^2."""
    tot = 0.0
    d = x0[0].numel()
    with torch.no_grad():
        for k, s in enumerate(sigmas):
            err = (den(x0 + s * noise[k], float(s)) - x0).square().sum() / (x0.shape[0] * d)
            tot += float(err) * (s * s + sigma_data ** 2) / (s * sigma_data) ** 2
    return tot / len(sigmas)


def crossing_down(steps, values, frac):
    """First step where ``values`` has made ``frac`` of its drop from values[0] to its minimum
    (linear interpolation in log step)."""
    v = np.asarray(values, float)
    lo = v.min()
    target = lo + (1 - frac) * (v[0] - lo)
    for i in range(len(v)):
        if v[i] <= target:
            if i == 0:
                return float(steps[0])
            s0, s1, v0, v1 = steps[i - 1], steps[i], v[i - 1], v[i]
            f = (v0 - target) / (v0 - v1)
            return float(math.exp(math.log(s0) + f * (math.log(s1) - math.log(s0))))
    return None


def fit_exponent(ns, taus):
    """OLS slope of log tau on log N with its 95 % t-interval; (b, se, lo, hi)."""
    from scipy import stats
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(taus, float))
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    res = stats.linregress(x, y)
    q = stats.t.ppf(0.975, len(x) - 2)
    return float(res.slope), float(res.stderr), float(res.slope - q * res.stderr), float(res.slope + q * res.stderr)


def run_training(data, heldout, noise_s, noise_l, sigmas, *, n, seed, width, steps, count, threads):
    """Train one network on ``data[:n]`` and evaluate it at its checkpoints."""
    train = data[:n]
    sigma_data = max(round(float(train.std()), 6), 1e-3) if train.numel() > 1 else 0.5
    grid = gd.karras_sigmas(18).float()
    rows = []

    def callback(step, den):
        with torch.no_grad():
            samples = gd.sample_heun(den, noise_s, grid)
        mem = gd.memorization_fraction(samples, train, seed=seed)
        rows.append(dict(n=n, seed=seed, width=width, framework="edm", step=step, memorization=mem.value,
                         memorization_se=mem.se,
                         heldout_loss=heldout_loss(den, heldout, noise_l, sigmas, sigma_data)))

    gd.train_denoiser(train, steps=steps, net="mlp", width=width, framework="edm", seed=seed,
                      batch_size=128, checkpoint_steps=checkpoint_grid(steps, count), callback=callback,
                      progress=False, num_threads=threads)
    return rows


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    cfg = FAST if args.fast else FULL
    with set_threads(args.threads or 1):
        return _main(args, cfg, args.threads or 1)


def _main(args, cfg, threads) -> dict:
    rep = Report("bonnaire_tau_mem",
                 claim="tau_mem grows linearly with N while tau_gen stays constant; a small enough network "
                       "never memorizes at large N within the budget",
                 source="Bonnaire, Urfin, Biroli & Mezard 2025, 'Why diffusion models don't memorize'",
                 expected="b_mem 95% CI contains 1 (low end > 0.5); b_gen CI inside (-0.5, 0.5); small net "
                          "memorization < 0.1 at the largest N while the large net memorizes", args=args)
    data, _, _ = gd.load_dataset("digits")
    rows_all, rows_small = [], []
    sizes, n_max = cfg["sizes"], max(cfg["sizes"])
    for seed in cfg["seeds"]:
        perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(1000 + seed))
        train_pool, heldout = data[perm[:n_max]], data[perm[-cfg["n_heldout"]:]]
        noise_s = gd.seeded_noise(cfg["n_samples"], data.shape[1:], seed=777, dtype=torch.float32) * 80.0
        noise_l = torch.randn((len(LOSS_SIGMAS), *heldout.shape), generator=torch.Generator().manual_seed(99))
        for n in sizes:
            steps = cfg["steps_per_n"] * n
            rows = run_training(train_pool, heldout, noise_s, noise_l, LOSS_SIGMAS, n=n, seed=seed,
                                width=cfg["width"], steps=steps, count=cfg["checkpoints"], threads=threads)
            rows_all += rows
            print(f"   N={n:4d} seed {seed} width {cfg['width']}: {steps} steps, final memorization "
                  f"{fmt(rows[-1]['memorization'], rows[-1]['memorization_se'])}", flush=True)
        rows = run_training(train_pool, heldout, noise_s, noise_l, LOSS_SIGMAS, n=n_max, seed=seed,
                            width=cfg["small_width"], steps=cfg["steps_per_n"] * n_max,
                            count=cfg["checkpoints"], threads=threads)
        rows_small += rows
        print(f"   N={n_max:4d} seed {seed} width {cfg['small_width']}: max memorization "
              f"{max(r['memorization'] for r in rows):.3f}", flush=True)

    # -- time scales per (N, seed) ----------------------------------------------------------
    table = []
    for n in sizes:
        for seed in cfg["seeds"]:
            rs = sorted((r for r in rows_all if r["n"] == n and r["seed"] == seed), key=lambda r: r["step"])
            tm = tau_mem(rs, level=MEM_LEVEL).get((n, cfg["width"], "edm"))
            tg = crossing_down([r["step"] for r in rs], [r["heldout_loss"] for r in rs], GEN_DROP)
            table.append(dict(n=n, seed=seed, tau_mem=tm, tau_gen=tg, budget=cfg["steps_per_n"] * n,
                              final_memorization=rs[-1]["memorization"]))
    print("   N     seed  tau_gen    tau_mem    budget")
    for t in table:
        print(f"   {t['n']:<5d} {t['seed']:<5d} {fmt(t['tau_gen']) if t['tau_gen'] else '-':<10} "
              f"{fmt(t['tau_mem']) if t['tau_mem'] else '> budget':<10} {t['budget']}")
    per_n = []
    for n in sizes:
        row = {"n": n}
        for key in ("tau_mem", "tau_gen"):
            v = [t[key] for t in table if t["n"] == n and t[key]]
            row[key] = float(np.mean(v)) if v else None
            row[key + "_se"] = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
        per_n.append(row)
        print(f"   N={n}: tau_gen {fmt(row['tau_gen'], row['tau_gen_se']) if row['tau_gen'] else '-'}, tau_mem "
              f"{fmt(row['tau_mem'], row['tau_mem_se']) if row['tau_mem'] else '> budget'} (mean +- se over seeds)")
    rep.note("per_n", per_n)
    mem_pts = [(t["n"], t["tau_mem"]) for t in table if t["tau_mem"]]
    gen_pts = [(t["n"], t["tau_gen"]) for t in table if t["tau_gen"]]
    censored = [(t["n"], t["seed"]) for t in table if not t["tau_mem"]]
    b_mem = fit_exponent(*zip(*mem_pts)) if len(mem_pts) >= 3 else (math.nan,) * 4
    b_gen = fit_exponent(*zip(*gen_pts)) if len(gen_pts) >= 3 else (math.nan,) * 4
    rep.note("time_scales", table)
    rep.note("exponent_mem", dict(zip(("b", "se", "ci_low", "ci_high"), b_mem)))
    rep.note("exponent_gen", dict(zip(("b", "se", "ci_low", "ci_high"), b_gen)))
    rep.note("tau_mem_censored", censored)
    rep.note("rows", rows_all)
    rep.note("rows_small", rows_small)

    ci = f"95% CI [{b_mem[2]:.2f}, {b_mem[3]:.2f}]"
    rep.check("exponent of tau_mem vs N", value=b_mem[0], se=b_mem[1],
              passed=(b_mem[2] <= 1.0 <= b_mem[3]) and b_mem[2] > 0.5,
              expected="95% CI contains 1, low end > 0.5",
              note=f"{ci}; {len(mem_pts)} (N, seed) points" + (f"; never reached in {censored}" if censored else ""))
    rep.check("exponent of tau_gen vs N", value=b_gen[0], se=b_gen[1],
              passed=b_gen[2] > -0.5 and b_gen[3] < 0.5, expected="95% CI inside (-0.5, 0.5)",
              note=f"95% CI [{b_gen[2]:.2f}, {b_gen[3]:.2f}]")

    def pooled(rows, step=None):
        """Memorization at ``step`` (None: every step) pooled over seeds: {step: (value, se)}."""
        out = {}
        for s in sorted({r["step"] for r in rows}):
            rs = [r for r in rows if r["step"] == s]
            v = float(np.mean([r["memorization"] for r in rs]))
            se = float(math.sqrt(sum(r["memorization_se"] ** 2 for r in rs)) / len(rs))
            out[s] = (v, se)
        return out

    big = pooled([r for r in rows_all if r["n"] == n_max])
    last = big[max(big)]
    rep.check(f"large net (width {cfg['width']}) memorization at N={n_max}, end of budget", value=last[0],
              se=last[1], passed=last[0] - 2 * last[1] >= MEM_LEVEL, expected=f"- 2 se >= {MEM_LEVEL}")
    small = pooled(rows_small)
    worst_step = max(small, key=lambda s: small[s][0])
    worst = small[worst_step]
    rep.check(f"small net (width {cfg['small_width']}) max memorization at N={n_max} over the budget",
              value=worst[0], se=worst[1], passed=worst[0] + 2 * worst[1] < MEM_LEVEL,
              expected=f"+ 2 se < {MEM_LEVEL}", note=f"at step {worst_step} of {max(small)}")

    fig = plot(rep.outdir / "bonnaire_tau_mem.png", rows_all, rows_small, table, b_mem, b_gen, cfg)
    reasons = []
    if not (b_mem[2] <= 1.0 <= b_mem[3]) or not b_mem[2] > 0.5:
        reasons.append(f"b_mem = {fmt(b_mem[0], b_mem[1])}, 95% CI [{b_mem[2]:.2f}, {b_mem[3]:.2f}] from "
                       f"{len(mem_pts)} (N, seed) points over N = {min(sizes)}..{n_max} (a factor "
                       f"{n_max // min(sizes)} in N, {len(cfg['seeds'])} seed(s)"
                       + (f", tau_mem beyond the budget for {censored}" if censored else "") + ")"
                       + ("; the interval contains 1 but is too wide to exclude sqrt(N) growth: too few N "
                          "and seeds at this scale" if b_mem[2] <= 1.0 <= b_mem[3] else ""))
    if not (b_gen[2] > -0.5 and b_gen[3] < 0.5):
        reasons.append(f"b_gen = {fmt(b_gen[0], b_gen[1])}")
    if last[0] - 2 * last[1] < MEM_LEVEL:
        reasons.append(f"the large network did not memorize at N={n_max} within {cfg['steps_per_n'] * n_max} steps")
    if worst[0] + 2 * worst[1] >= MEM_LEVEL:
        reasons.append(f"the width-{cfg['small_width']} network memorized at N={n_max}")
    if args.fast:
        reasons.append("fast mode: 3 sizes and one seed, the fits have 1 degree of freedom")
    return rep.finish(figures=[fig], reason="; ".join(reasons) if rep.status == "FAIL" else "")


def plot(path, rows, rows_small, table, b_mem, b_gen, cfg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    cmap = plt.get_cmap("viridis")
    sizes = cfg["sizes"]
    for i, n in enumerate(sizes):
        c = cmap(i / max(1, len(sizes) - 1))
        for seed in cfg["seeds"]:
            rs = sorted((r for r in rows if r["n"] == n and r["seed"] == seed), key=lambda r: r["step"])
            st = [r["step"] for r in rs]
            ax[0].errorbar(st, [r["memorization"] for r in rs], yerr=[2 * r["memorization_se"] for r in rs],
                           color=c, lw=1, capsize=2, label=f"N={n}" if seed == cfg["seeds"][0] else None)
            ax[1].plot(st, [r["heldout_loss"] for r in rs], color=c, lw=1,
                       label=f"N={n}" if seed == cfg["seeds"][0] else None)
    for seed in cfg["seeds"]:
        rs = sorted((r for r in rows_small if r["seed"] == seed), key=lambda r: r["step"])
        ax[0].errorbar([r["step"] for r in rs], [r["memorization"] for r in rs],
                       yerr=[2 * r["memorization_se"] for r in rs], color="red", ls="--", lw=1, capsize=2,
                       label=f"N={max(sizes)}, width {cfg['small_width']}" if seed == cfg["seeds"][0] else None)
    ax[0].axhline(MEM_LEVEL, color="gray", ls=":", lw=1)
    ax[0].set(xscale="log", xlabel="training step", ylabel="memorization fraction (+- 2 se)",
              title=f"memorization (width {cfg['width']}; red: width {cfg['small_width']})")
    ax[0].legend(fontsize=7)
    ax[1].set(xscale="log", yscale="log", xlabel="training step", ylabel="held-out EDM-weighted loss",
              title="held-out denoising loss")
    ax[1].legend(fontsize=7)
    for key, b, mk, lab in (("tau_mem", b_mem, "o", "tau_mem"), ("tau_gen", b_gen, "s", "tau_gen")):
        pts = [(t["n"], t[key]) for t in table if t[key]]
        if pts:
            ns, ts = zip(*pts)
            ax[2].plot(ns, ts, mk, label=f"{lab}: exponent {fmt(b[0], b[1])}")
            if not math.isnan(b[0]):
                xs = np.geomspace(min(sizes), max(sizes), 20)
                a = np.exp(np.mean(np.log(ts)) - b[0] * np.mean(np.log(ns)))
                ax[2].plot(xs, a * xs ** b[0], "--", lw=1)
    ax[2].plot(sizes, [cfg["steps_per_n"] * n for n in sizes], "k:", lw=1, label=f"budget {cfg['steps_per_n']} N")
    ax[2].set(xscale="log", yscale="log", xlabel="N", ylabel="training steps", title="time scales")
    ax[2].legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
