r"""Zhang, Zhou, Liao, Shen, Liu & Qu (2023), "The emergence of reproducibility and
generalizability in diffusion models".

Claim
-----
Diffusion models of different frameworks (EDM, VP eps-prediction, rectified flow) and of
different architectures (MLP, U-Net), trained on the *same* data and sampled from the same noise
with a deterministic sampler, give nearly the same samples. Reproducibility is high in the
memorization regime (all models return the same training point) and in the generalization
regime, with a dip around the transition; memorization turns into generalization as N grows.

Protocol
--------
Digits (8x8). For each N of the grid the first N points of one seeded permutation (nested
subsets) train four networks, each with its own seed: the residual MLP (width 128, 186k
parameters) in the EDM, VP and rectified-flow parameterisations, and the small U-Net (width 8,
24k parameters) in EDM; batch 64, Adam lr 1e-3, EMA 0.999, 3000 steps for all. Every model is sampled from the same 256
noise draws with the same deterministic sampler (Heun, 18 steps on the EDM grid: 35 denoiser
calls), so that the only difference between two samples is the trained model (all networks are
denoisers D(x, sigma) in the EDM convention). Measured at each N:

* memorization fraction of each model (gap ratio 1/3, bootstrap se), and their mean;
* reproducibility (RP) of every pair of models: the share of the 256 shared-noise pairs whose
  centred cosine similarity is at least 0.9 (bootstrap se). The framework RP is the mean over the
  three MLP pairs (EDM-VP, EDM-flow, VP-flow); its se is the mean of their se's (the pairs share
  samples, so this is the perfectly-correlated upper bound). The architecture RP is EDM-MLP vs
  EDM-U-Net.

Findings (no verdict): each model against the exact empirical flow of its training set from the
same noise; RP with each framework's own standard deterministic sampler (EDM Heun-18 on the
EDM grid, VP DDIM-50 = Euler uniform in VP time, rectified flow Euler-50 uniform in t).

Checks (criteria fixed before looking at results; "high" means RP >= 0.6, i.e. at least 60 %
of the noise draws give a pair with cosine >= 0.9)
-----------------------------------------------------------------------------------------
1. memorization regime at the smallest N: mean memorization - 2 se >= 0.5;
2. generalization regime at the largest N: mean memorization + 2 se <= 0.1;
3. framework RP at the smallest N - 2 se >= 0.6;       4. same at the largest N;
5. architecture RP at the smallest N - 2 se >= 0.6;    6. same at the largest N;
7. a dip: the lowest all-pairs mean RP over the intermediate N is below the smaller of the two
   end values by more than 2 (combined) se.

Expected: all PASS. Full mode: N = 4, 12, 40, 1797 (all the digits). Where memorization sets in
depends on training time (its onset grows ~ N: near 1-2k steps at N = 8 for this MLP), so after
3000 steps the transition is expected near N ~ 10-20: N = 4 lies well inside the memorization
regime, 12 and 40 around the transition, 1797 far past it. ~15 min wall on the shared 2-core
machine with 1 thread. The scale is set by time: four sizes, 3000 steps, batch 64, the U-Net at
width 8 (its convolutions cost ~20 ms per step, width 16 twice that) and the MLP at width 128
instead of the package's 256. Fast mode: N = 4, 64, 512, 150 steps, 32 samples, MLP width 32,
U-Net width 8 (same shape; the networks are far from trained, so its verdict is not meaningful).

    python validation/zhang_reproducibility.py --outdir out/val_zhang            # ~15 min
    python validation/zhang_reproducibility.py --outdir out/val_zhang --fast     # ~25 s
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, parse_args, save_figure, set_threads  # noqa: E402

import gaussdiff as gd  # noqa: E402

THRESHOLD = 0.9          # centred cosine of a "same sample" pair
HIGH = 0.6               # "high" reproducibility
MODELS = (("edm-mlp", "mlp", "edm"), ("vp-mlp", "mlp", "vp"), ("flow-mlp", "mlp", "flow"),
          ("edm-unet", "unet", "edm"))
FW_PAIRS = (("edm-mlp", "vp-mlp"), ("edm-mlp", "flow-mlp"), ("vp-mlp", "flow-mlp"))
ARCH_PAIR = ("edm-mlp", "edm-unet")

FULL = dict(sizes=(4, 12, 40, 1797), steps=3000, batch=64, mlp_width=128, unet_width=8, n_samples=256)
FAST = dict(sizes=(4, 64, 512), steps=150, batch=64, mlp_width=32, unet_width=8, n_samples=32)


def rp(a, b, seed=0):
    r = gd.reproducibility(a, b, similarity="cosine", threshold=THRESHOLD, seed=seed)
    return r.fraction.value, r.fraction.se, r.mean_similarity


def native_sample(den, framework, noise):
    """Each framework's own standard deterministic sampler from the same noise (sigma_max = 80)."""
    if framework == "edm":
        return gd.sample_heun(den, noise, gd.karras_sigmas(18).to(noise.dtype))
    sched = gd.VP() if framework == "vp" else gd.RectifiedFlow()
    return gd.sample_euler(den, noise, schedule=sched, ts=sched.time_grid(50))


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    cfg = FAST if args.fast else FULL
    with set_threads(args.threads or 1):
        return _main(args, cfg, args.threads or 1)


def _main(args, cfg, threads) -> dict:
    rep = Report("zhang_reproducibility",
                 claim="models of different frameworks and architectures trained on the same data give nearly "
                       "the same samples from the same noise, in the memorization and the generalization "
                       "regime, with a dip at the transition",
                 source="Zhang et al. 2023, 'The emergence of reproducibility and generalizability in "
                        "diffusion models'",
                 expected=f"memorization >= 0.5 at small N and <= 0.1 at large N; framework and architecture "
                          f"RP (cosine >= {THRESHOLD}) >= {HIGH} at both ends; a dip in between", args=args)
    data, _, _ = gd.load_dataset("digits")
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    noise = gd.seeded_noise(cfg["n_samples"], data.shape[1:], seed=4242, dtype=torch.float32) * 80.0
    grid = gd.karras_sigmas(18).float()
    results = []
    panels = {}
    for n in cfg["sizes"]:
        train = data[perm[:n]]
        samples, native, mem = {}, {}, {}
        for k, (name, net, fw) in enumerate(MODELS):
            width = cfg["mlp_width"] if net == "mlp" else cfg["unet_width"]
            res = gd.train_denoiser(train, steps=cfg["steps"], net=net, width=width, framework=fw, seed=10 + k,
                                    batch_size=cfg["batch"], progress=False, num_threads=threads)
            with torch.no_grad():
                samples[name] = gd.sample_heun(res.denoiser, noise, grid)
                if net == "mlp":
                    native[name] = native_sample(res.denoiser, fw, noise)
            m = gd.memorization_fraction(samples[name], train, seed=n)
            mem[name] = (m.value, m.se)
            print(f"   N={n:5d} {name:9s}: memorization {fmt(m.value, m.se)} ({res.wall_time_s:.0f} s)", flush=True)
        emp = gd.sample_heun(gd.EmpiricalDenoiser(train.double()), noise.double(), gd.karras_sigmas(18)).float()
        pairs = {f"{a}|{b}": rp(samples[a], samples[b]) for a, b in itertools.combinations(samples, 2)}
        native_pairs = {f"{a}|{b}": rp(native[a], native[b]) for a, b in itertools.combinations(native, 2)}
        vs_emp = {name: rp(s, emp) for name, s in samples.items()}
        fw_vals = [pairs[f"{a}|{b}"] for a, b in FW_PAIRS]
        row = dict(n=n, memorization={k: v for k, v in mem.items()},
                   mean_memorization=float(np.mean([v[0] for v in mem.values()])),
                   mean_memorization_se=float(math.sqrt(sum(v[1] ** 2 for v in mem.values())) / len(mem)),
                   pairs=pairs, native_pairs=native_pairs, vs_empirical=vs_emp,
                   rp_framework=float(np.mean([v[0] for v in fw_vals])),
                   rp_framework_se=float(np.mean([v[1] for v in fw_vals])),
                   rp_architecture=pairs[f"{ARCH_PAIR[0]}|{ARCH_PAIR[1]}"][0],
                   rp_architecture_se=pairs[f"{ARCH_PAIR[0]}|{ARCH_PAIR[1]}"][1],
                   rp_all=float(np.mean([v[0] for v in pairs.values()])),
                   rp_all_se=float(np.mean([v[1] for v in pairs.values()])),
                   empirical_memorization=gd.memorization_fraction(emp, train).value)
        results.append(row)
        panels[n] = {k: v[:8].numpy() for k, v in samples.items()} | {"empirical": emp[:8].numpy()}
        print(f"   N={n:5d}: RP framework {fmt(row['rp_framework'], row['rp_framework_se'])}, architecture "
              f"{fmt(row['rp_architecture'], row['rp_architecture_se'])}, all pairs "
              f"{fmt(row['rp_all'], row['rp_all_se'])}; native samplers "
              + ", ".join(f"{k} {fmt(v[0], v[1])}" for k, v in native_pairs.items())
              + "; vs exact empirical flow " + ", ".join(f"{k} {fmt(v[0], v[1])}" for k, v in vs_emp.items()),
              flush=True)
    rep.note("per_n", results)

    lo, hi = results[0], results[-1]
    n_lo, n_hi = lo["n"], hi["n"]
    rep.check(f"mean memorization at N={n_lo}", value=lo["mean_memorization"], se=lo["mean_memorization_se"],
              passed=lo["mean_memorization"] - 2 * lo["mean_memorization_se"] >= 0.5, expected="- 2 se >= 0.5")
    rep.check(f"mean memorization at N={n_hi}", value=hi["mean_memorization"], se=hi["mean_memorization_se"],
              passed=hi["mean_memorization"] + 2 * hi["mean_memorization_se"] <= 0.1, expected="+ 2 se <= 0.1")
    for r, where in ((lo, "smallest"), (hi, "largest")):
        rep.check(f"framework RP (EDM/VP/flow MLPs) at N={r['n']}", value=r["rp_framework"], se=r["rp_framework_se"],
                  passed=r["rp_framework"] - 2 * r["rp_framework_se"] >= HIGH, expected=f"- 2 se >= {HIGH}")
    for r in (lo, hi):
        rep.check(f"architecture RP (MLP vs U-Net, EDM) at N={r['n']}", value=r["rp_architecture"],
                  se=r["rp_architecture_se"], passed=r["rp_architecture"] - 2 * r["rp_architecture_se"] >= HIGH,
                  expected=f"- 2 se >= {HIGH}")
    mid = results[1:-1]
    dip = min(mid, key=lambda r: r["rp_all"])
    end = min((lo, hi), key=lambda r: r["rp_all"])
    depth = end["rp_all"] - dip["rp_all"]
    depth_se = math.sqrt(end["rp_all_se"] ** 2 + dip["rp_all_se"] ** 2)
    rep.check("dip of the all-pairs RP at intermediate N (smaller end value minus the lowest middle value)",
              value=depth, se=depth_se, passed=depth > 2 * depth_se, expected="> 2 se",
              note=f"lowest middle value {fmt(dip['rp_all'], dip['rp_all_se'])} at N={dip['n']}, "
                   f"end value {fmt(end['rp_all'], end['rp_all_se'])} at N={end['n']}")

    fig = plot(rep.outdir / "zhang_reproducibility.png", results, panels, cfg)
    reasons = [f"{c['what']}: {fmt(c['value'], c['se'])} (expected {c['expected']})"
               for c in rep.checks if c["status"] == "FAIL"]
    if any(c["status"] == "FAIL" and c["what"].startswith("framework RP") for c in rep.checks):
        for r in (lo, hi):         # which pair pulls the framework mean down
            reasons.append(f"framework pairs at N={r['n']}: " + ", ".join(
                f"{a}|{b} {fmt(*r['pairs'][f'{a}|{b}'][:2])}" for a, b in FW_PAIRS)
                + "; memorization " + ", ".join(f"{k} {fmt(*v)}" for k, v in r["memorization"].items()))
    if args.fast:
        reasons.append(f"fast mode: {cfg['steps']} training steps, far from trained")
    return rep.finish(figures=[fig], reason="; ".join(reasons) if rep.status == "FAIL" else "")


def plot(path, results, panels, cfg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig = plt.figure(figsize=(14, 7.5))
    gs = fig.add_gridspec(2, 2 * len(ns))
    ax0 = fig.add_subplot(gs[0, :len(ns)])
    for name, *_ in MODELS:
        v = [r["memorization"][name] for r in results]
        ax0.errorbar(ns, [a for a, _ in v], yerr=[2 * b for _, b in v], marker="o", capsize=3, label=name)
    ax0.set(xscale="log", xlabel="N (same training set for every model)", ylabel="memorization (+- 2 se)",
            ylim=(-0.05, 1.05), title="memorization -> generalization")
    ax0.legend(fontsize=8)
    ax1 = fig.add_subplot(gs[0, len(ns):])
    for key, lab in (("rp_framework", "frameworks (EDM/VP/flow MLP)"), ("rp_architecture", "MLP vs U-Net (EDM)"),
                     ("rp_all", "all pairs")):
        ax1.errorbar(ns, [r[key] for r in results], yerr=[2 * r[key + "_se"] for r in results], marker="o",
                     capsize=3, label=lab)
    ax1.axhline(HIGH, color="gray", ls=":", lw=1)
    ax1.set(xscale="log", xlabel="N", ylabel=f"RP: share with cosine >= {THRESHOLD} (+- 2 se)", ylim=(-0.05, 1.05),
            title="reproducibility across models from the same noise")
    ax1.legend(fontsize=8)
    names = [m[0] for m in MODELS] + ["empirical"]
    for j, n in enumerate(ns):
        ax = fig.add_subplot(gs[1, 2 * j:2 * j + 2])
        rows = [np.concatenate([panels[n][k][i, 0] for i in range(min(6, panels[n][k].shape[0]))], axis=1)
                for k in names]
        ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([4 + 8 * i for i in range(len(names))])
        ax.set_yticklabels(names if j == 0 else [""] * len(names), fontsize=7)
        ax.set_title(f"N={n}: same noise, each row a model", fontsize=8)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
