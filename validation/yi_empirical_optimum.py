"""Yi, Sun & Li (2023), "On the generalization of diffusion model": the empirical optimum's
deterministic sampler returns training points; a trained network that generalizes differs from
it by a small denoising error.

Claim
-----
(A) The deterministic sampler driven by the empirical-optimal denoiser (``EmpiricalDenoiser``)
    returns training points: the distance of its output to the nearest training point goes to 0
    as the number of steps grows. Rate (derived here, leading order): Euler (DDIM) with ``n``
    steps uniform in sigma from ``sigma_max`` to 0 ends with ``x_0 = D(x, sigma_max / n)``, a
    softmax average of training points; once ``x`` sits in the basin of training point ``i``
    (nearest other training point at distance ``delta_i``),
    ``|x_0 - x_i| ~ delta_i exp(-delta_i^2 n^2 / (2 sigma_max^2))``, i.e.
    ``-log(dist / delta_i) / (delta_i^2 n^2 / 2 sigma_max^2) -> 1`` (corrections O(sigma_last/delta)).
(B) A plug-in estimate of the mutual information between generated samples and the training
    set is close to log N for the empirical optimum and far lower for a generalizing network.
(C) "Though obtained through sufficient training, there still exists a slight difference between
    them [the trained model and the empirical optimum], which is critical to making the diffusion
    model generalizable" (the paper's abstract): a *sufficiently trained* network's samples are
    new (memorization near 0, MI far below log N) while the optimum's are copies.

Mutual-information estimator (B)
--------------------------------
Quantise a sample ``x`` against the training set ``S = {x_1..x_N}``: ``Z(x) = j`` when ``x``
reproduces ``x_j`` (nearest training point ``x_j`` and ``|x - x_j| < |x - nn_2(x)| / 3``, the
package's memorization criterion), else ``Z(x) = 0`` ("new"). ``Z`` is the channel from samples
to training indices, ``I(X; Z) = H(Z) - H(Z | X) = H(Z)`` because ``Z`` is a function of ``X``,
and ``0 <= I <= log(N + 1)``: it is ``log N`` when every sample copies a training point and the
copies cover the training set uniformly, ``0`` when no sample copies one. The plug-in estimate
is the entropy of the empirical frequencies of ``Z`` over ``B`` samples. Its bias: it
*underestimates* ``H(Z)`` by about ``(K - 1) / (2B)`` nats (Miller & Madow 1955; K the number of
occupied cells), so ``B >> N`` is needed; both the raw and the Miller-Madow corrected values are
reported, with a bootstrap standard error over samples. Unequal basins of the deterministic flow
put even the exact optimum a little below log N (a property of the sampler, not a bias).

Protocol
--------
Digits (64 pixels in [-1, 1], flattened), N training points (full 896, fast 128) chosen by a
seeded permutation, held-out points from the rest. (A) Euler with n = 1, 2, 4, ..., 1024 (fast
up to 512) uniform steps from sigma_max = 80, B_A samples from seeded noise; the output's
distance to its training point is computed from the last step's exact posterior weights,
``|sum_{j != i} w_j (x_j - x_i)|``, which float64 would round to 0 below ~1e-16. (B, C) Heun on
the Karras grid (40 steps) from the same noise for the optimum and an EDM MLP (width 256, batch
128) trained on the same N points to a measured condition (``_common.train_to_plateau``: 1500
steps, then doublings up to 24000 while the excess of its EDM training loss over the exact
optimum's, ``gaussdiff.optimum_gap`` on 2048 fixed draws, still shrinks by more than 10 % per
doubling; fast: 150 -> 300 steps); B = 4000 samples (fast 512). The optimum gap of the final
network (its training loss, the optimum's and the Gaussian fit's on the same draws) is recorded. Denoiser distances
(``gaussdiff.denoiser_distance``, relative MSE normalised by the data variance, mean over
sigma in 0.02..5) on 128 noisy training points, 3 noise seeds (mean +- se).

PASS criteria (fixed before the runs)
-------------------------------------
A1. median distance / delta at the largest n < 1e-6;  A2. memorization at the largest n >= 0.95;
A3. median rate ratio at the largest n in [0.8, 1.2];
B1. MI(optimum) >= 0.9 log N (Miller-Madow);  B2. MI(network) <= 0.25 log N;
C1. the network is sufficiently trained: its excess training loss has plateaued within the budget
    (``train_to_plateau`` stops with "plateau");
C2. memorization(network) <= 0.1 and memorization(optimum) >= 0.9.
The thresholds 0.9 log N, 0.25 log N, 0.1 and 0.9 are ours (the paper's statements are "all highly
related to the training set" and "generalizable"); they are unchanged from 2026-11-24.

Findings (no verdict): how large the "slight difference" is — the network's excess training loss
over the optimum (absolute, relative to the optimum's loss, and as a share of the Gaussian fit's
excess) and the denoiser distance ratio dist_empirical(network) / dist(Gaussian, empirical). The
paper gives no number for "slight", so none is invented here.

Changes from the 2026-11-24 protocol
------------------------------------
* C1 "dist_empirical(network) <= dist(Gaussian, empirical) / 3" is removed: the 1/3 was ours, and
  the paper only says the difference is "slight"; the distance ratio is kept as a finding beside
  the training-loss gap, the quantity the paper's "sufficient training" is about.
* "Sufficiently trained" is measured, not assumed: the network trains until its training loss
  stops approaching the exact empirical optimum's (a plateau, the same rule as
  ``zhang_reproducibility``), and the new C1 checks that it got there; the 2026-11-24 network was
  trained a fixed 4000 steps chosen for time, and was closer to the Gaussian denoiser than to the
  optimum, so the review could not call it sufficiently trained in the paper's sense.

    python validation/yi_empirical_optimum.py --outdir out/val/yi_empirical_optimum
    python validation/yi_empirical_optimum.py --outdir out/val/yi_empirical_optimum --fast
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, parse_args, save_figure, set_threads, train_to_plateau  # noqa: E402

import gaussdiff as gd  # noqa: E402

SIGMA_MAX = 80.0
DIST_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _boot_median(v: np.ndarray, rng, n_boot=500) -> float:
    return float(np.std([np.median(v[rng.integers(0, len(v), len(v))]) for _ in range(n_boot)], ddof=1))


def part_a(train, cfg, rng):
    """Euler with n uniform sigma steps: distance of the output to its training point."""
    den = gd.EmpiricalDenoiser(train)
    d_tt = torch.cdist(train, train, compute_mode="donot_use_mm_for_euclid_dist")
    d_tt.fill_diagonal_(float("inf"))
    delta = d_tt.min(1).values
    noise = gd.seeded_noise(cfg["B_A"], train.shape[1], seed=11) * SIGMA_MAX
    rows = []
    for n in cfg["steps_A"]:
        sig = torch.linspace(SIGMA_MAX, 0.0, n + 1, dtype=torch.float64)
        last = {}

        def cb(info, n=n):
            if info["i"] == n - 1:
                last["x"], last["sigma"] = info["x"].clone(), float(info["sigma"])

        with torch.no_grad():
            x0 = gd.sample_euler(den, noise, sig, callback=cb)
        # exact distance of D(x_last, sigma_last) to its leading training point, from log-weights
        d2 = torch.cdist(last["x"], train, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        logw = -d2 / (2 * last["sigma"] ** 2)
        logw = logw - torch.logsumexp(logw, 1, keepdim=True)
        i_star = logw.argmax(1)
        w = logw.exp()
        w[torch.arange(len(i_star)), i_star] = 0.0
        diff = (w[:, :, None] * (train[None] - train[i_star][:, None, :])).sum(1)
        dist = diff.norm(dim=1)
        dl = delta[i_star]
        pred = dl**2 * n**2 / (2 * SIGMA_MAX**2)
        ratio = (-torch.log(dist.clamp_min(1e-300) / dl) / pred).numpy()
        rel = (dist / dl).numpy()
        mem = gd.memorization_fraction(x0, train, seed=0)
        hits = torch.bincount(i_star, minlength=train.shape[0])
        rows.append(
            dict(
                n=n,
                sigma_last=SIGMA_MAX / n,
                median_rel_dist=float(np.median(rel)),
                median_rel_dist_se=_boot_median(rel, rng),
                median_log10_rel_dist=float(np.median(np.log10(np.maximum(rel, 1e-300)))),
                rate_ratio=float(np.median(ratio)),
                rate_ratio_se=_boot_median(ratio, rng),
                memorization=mem.value,
                memorization_se=mem.se,
                distinct_points=int((hits > 0).sum()),
                stored_sample_nn_dist=float(torch.cdist(x0, train).min(1).values.median()),
            )
        )
        r = rows[-1]
        print(
            f"   n={n:5d}: median dist/delta {r['median_rel_dist']:.3e} (log10 {r['median_log10_rel_dist']:.1f}), "
            f"rate ratio {fmt(r['rate_ratio'], r['rate_ratio_se'])}, memorization {fmt(mem.value, mem.se)}, "
            f"{r['distinct_points']} distinct training points"
        )
    return rows, float(delta.median())


def plugin_mi(samples, train, seed=0, n_boot=300):
    """Plug-in ``H(Z)`` of the copy quantiser (docstring): raw, Miller-Madow, bootstrap se."""
    dist, idx = gd.nearest_training(samples, train, k=2)
    copy = (dist[:, 0] < dist[:, 1] / 3) | (dist[:, 0] == 0)
    z = torch.where(copy, idx[:, 0] + 1, torch.zeros_like(idx[:, 0])).numpy()
    B = len(z)

    def ent(v):
        c = np.bincount(v, minlength=train.shape[0] + 1)
        p = c[c > 0] / B
        return float(-(p * np.log(p)).sum()), int((c > 0).sum())

    h, k = ent(z)
    rng = np.random.default_rng(seed)
    reps = [ent(z[rng.integers(0, B, B)])[0] for _ in range(n_boot)]
    return dict(
        raw=h,
        mm=h + (k - 1) / (2 * B),
        se=float(np.std(reps, ddof=1)),
        occupied=k,
        copy_share=float(copy.double().mean()),
    )


def distances(den_a, den_b, pts, n_rep=3):
    vals = []
    for r in range(n_rep):
        g = torch.Generator().manual_seed(100 + r)
        prof = gd.denoiser_distance(den_a, den_b, pts, torch.tensor(DIST_SIGMAS, dtype=torch.float64), generator=g)
        vals.append(prof.values.numpy())
    v = np.stack(vals)  # (rep, S)
    means = v.mean(1)
    return float(means.mean()), float(means.std(ddof=1) / math.sqrt(n_rep)), v.mean(0)


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    set_threads(args.threads or 1)
    fast = args.fast
    cfg = dict(
        N=128 if fast else 896,
        B_A=128 if fast else 256,
        steps_A=tuple(2**k for k in range(0, 10 if fast else 11)),
        B=512 if fast else 4000,
        heun_steps=40,
        start=150 if fast else 1500,
        max_steps=300 if fast else 24000,
        width=256,
    )
    rep = Report(
        "yi_empirical_optimum",
        claim="the empirical optimum's deterministic sampler returns training points (MI ~ log N); "
        "a generalizing network differs from it by a small denoising error",
        source="Yi, Sun & Li 2023, 'On the generalization of diffusion model' (arXiv 2305.14712)",
        args=args,
        expected="dist -> 0 at rate exp(-delta^2 n^2 / 2 sigma_max^2); MI(optimum) >= 0.9 log N, "
        "MI(network) <= 0.25 log N; the network's training loss plateaued (sufficiently "
        "trained) and its memorization <= 0.1",
    )
    rng = np.random.default_rng(0)
    data, _, _ = gd.load_dataset("digits")
    data = data.reshape(data.shape[0], -1).double()
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    train, held = data[perm[: cfg["N"]]], data[perm[cfg["N"] :]]
    logn = math.log(cfg["N"])

    # (A) the rate
    rows, delta_med = part_a(train, cfg, rng)
    rep.note("rate_table", rows)
    last = rows[-1]
    rep.check(
        f"A1 median distance / nn spacing at n = {last['n']}",
        value=last["median_rel_dist"],
        se=last["median_rel_dist_se"],
        passed=last["median_rel_dist"] < 1e-6,
        expected="< 1e-6",
    )
    rep.check(
        f"A2 memorization at n = {last['n']}",
        value=last["memorization"],
        se=last["memorization_se"],
        passed=last["memorization"] >= 0.95,
        expected=">= 0.95",
    )
    rep.check(
        f"A3 rate: -log(dist/delta) / (delta^2 n^2 / 2 sigma_max^2) at n = {last['n']}",
        value=last["rate_ratio"],
        se=last["rate_ratio_se"],
        passed=0.8 <= last["rate_ratio"] <= 1.2,
        expected="in [0.8, 1.2]",
    )

    # (B, C) the optimum, a trained network and held-out data from the same noise
    sigmas = gd.karras_sigmas(cfg["heun_steps"]).double()
    noise = gd.seeded_noise(cfg["B"], train.shape[1], seed=12) * float(sigmas[0])
    emp, gau = gd.EmpiricalDenoiser(train), gd.GaussianDenoiser.fit(train)
    with torch.no_grad():
        x_emp = gd.sample_heun(emp, noise, sigmas)
    res, history, stopped = train_to_plateau(
        train.float(),
        outdir=rep.outdir / "network",
        start=cfg["start"],
        max_steps=cfg["max_steps"],
        tol=0.1,
        width=cfg["width"],
        batch_size=128,
        seed=0,
        num_threads=args.threads or 1,
    )
    print(
        f"   network: {res.step} steps ({stopped}); excess training loss over the optimum "
        + ", ".join(f"{h['step']}: {h['excess']:.4f}" for h in history)
    )
    rep.note("training", {"steps": res.step, "stopped": stopped, "history": history})
    net = res.denoiser
    with torch.no_grad():
        x_net = gd.sample_heun(net, noise, sigmas)
    mi = {
        "optimum": plugin_mi(x_emp, train),
        "network": plugin_mi(x_net, train),
        "held-out data": plugin_mi(held[: cfg["B"]], train),
    }
    for k, v in mi.items():
        print(
            f"   MI plug-in {k:14s}: {v['raw']:.3f} (Miller-Madow {v['mm']:.3f}) +- {v['se']:.3f} nats, "
            f"log N = {logn:.3f}; copies {v['copy_share']:.3f}, {v['occupied']} cells"
        )
    rep.note("mutual_information", mi)
    rep.note("log_n", logn)
    rep.check(
        "B1 MI(optimum) / log N (Miller-Madow)",
        value=mi["optimum"]["mm"] / logn,
        se=mi["optimum"]["se"] / logn,
        passed=mi["optimum"]["mm"] >= 0.9 * logn,
        expected=">= 0.9",
    )
    rep.check(
        "B2 MI(network) / log N (Miller-Madow)",
        value=mi["network"]["mm"] / logn,
        se=mi["network"]["se"] / logn,
        passed=mi["network"]["mm"] <= 0.25 * logn,
        expected="<= 0.25",
    )

    pts = train[:128]
    d_ne, d_ne_se, prof_ne = distances(net, emp, pts)
    d_ge, d_ge_se, prof_ge = distances(gau, emp, pts)
    d_ng, d_ng_se, prof_ng = distances(net, gau, pts)
    mem_net = gd.memorization_fraction(x_net, train, seed=0)
    mem_emp = gd.memorization_fraction(x_emp, train, seed=0)
    print(
        f"   dist_empirical(network) {fmt(d_ne, d_ne_se)}, dist(Gaussian, empirical) {fmt(d_ge, d_ge_se)}, "
        f"dist_gaussian(network) {fmt(d_ng, d_ng_se)}; memorization network {fmt(mem_net.value, mem_net.se)}, "
        f"optimum {fmt(mem_emp.value, mem_emp.se)}"
    )
    rep.note(
        "distances",
        dict(
            sigmas=list(DIST_SIGMAS),
            net_emp=prof_ne.tolist(),
            gauss_emp=prof_ge.tolist(),
            net_gauss=prof_ng.tolist(),
            dist_empirical=d_ne,
            dist_empirical_se=d_ne_se,
            gauss_emp_mean=d_ge,
            gauss_emp_se=d_ge_se,
            dist_gaussian=d_ng,
            dist_gaussian_se=d_ng_se,
        ),
    )
    rep.note(
        "memorization", dict(network=mem_net.value, network_se=mem_net.se, optimum=mem_emp.value, optimum_se=mem_emp.se)
    )
    ratio = d_ne / d_ge
    ratio_se = ratio * math.sqrt((d_ne_se / d_ne) ** 2 + (d_ge_se / d_ge) ** 2)
    h = history[-1]
    slight = {
        "excess_training_loss": h["excess"],
        "excess_se": h["excess_se"],
        "excess_over_optimum_loss": h["excess"] / h["loss_optimum"],
        "gaussian_share": h["gaussian_share"],
        "loss": h["loss"],
        "loss_optimum": h["loss_optimum"],
        "loss_gaussian": h["loss_gaussian"],
        "distance_ratio": ratio,
        "distance_ratio_se": ratio_se,
    }
    rep.note("slight_difference", slight)
    print(
        f"   the 'slight difference' (finding): excess training loss {fmt(h['excess'], h['excess_se'])} "
        f"= {slight['excess_over_optimum_loss']:.2f} x the optimum's loss = {h['gaussian_share']:.2f} x the "
        f"Gaussian fit's excess; dist_empirical / dist(Gaussian, empirical) {fmt(ratio, ratio_se)}"
    )
    rep.check(
        "C1 network sufficiently trained (excess training loss plateaued within the budget)",
        value=h["excess"],
        se=h["excess_se"],
        passed=stopped == "plateau",
        expected=f"plateau before {cfg['max_steps']} steps",
        note=f"{res.step} steps, {stopped}",
    )
    rep.check(
        "C2 memorization(network) [optimum beside it]",
        value=mem_net.value,
        se=mem_net.se,
        passed=mem_net.value <= 0.1 and mem_emp.value >= 0.9,
        expected=f"<= 0.1 (optimum {mem_emp.value:.3f} +- {mem_emp.se:.2g}, needs >= 0.9)",
    )

    fig = _figure(
        rows, mi, logn, (prof_ne, prof_ge, prof_ng), (x_emp, x_net, train), rep.outdir / "yi_empirical_optimum.png"
    )
    failed = [c["what"].split()[0] for c in rep.checks if c["status"] == "FAIL"]
    reason = (
        ""
        if not failed
        else (
            f"failed {', '.join(failed)} with the measured numbers above"
            + (" (fast mode: the network is trained 300 steps at most)" if fast else "")
        )
    )
    return rep.finish(figures=[fig], reason=reason)


def _figure(rows, mi, logn, profs, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    n = np.array([r["n"] for r in rows])
    ax[0].plot(n, [max(r["median_rel_dist"], 1e-300) for r in rows], "o-", label="measured (median)")
    ax[0].set_xscale("log"), ax[0].set_yscale("log")
    ax[0].set_ylim(1e-40, 10)
    ax[0].set_xlabel("Euler steps n (uniform in sigma)")
    ax[0].set_ylabel("distance to training point / nn spacing")
    ax[0].set_title("(A) the optimum returns training points")
    ax0b = ax[0].twinx()
    ax0b.errorbar(
        n,
        [r["memorization"] for r in rows],
        yerr=[r["memorization_se"] for r in rows],
        color="C1",
        fmt="s--",
        ms=3,
        label="memorization",
    )
    ax0b.set_ylabel("memorization", color="C1")
    ax[1].errorbar(n, [r["rate_ratio"] for r in rows], yerr=[r["rate_ratio_se"] for r in rows], fmt="o-")
    ax[1].axhline(1, color="k", ls="--", lw=0.8)
    ax[1].axhspan(0.8, 1.2, color="grey", alpha=0.2)
    ax[1].set_xscale("log")
    ax[1].set_ylim(-1, 2)
    ax[1].set_xlabel("Euler steps n")
    ax[1].set_ylabel("-log(dist/delta) / (delta^2 n^2 / 2 sigma_max^2)")
    ax[1].set_title("(A) rate: measured / predicted exponent")
    names = list(mi)
    ax[2].bar(range(3), [mi[k]["mm"] for k in names], yerr=[mi[k]["se"] for k in names], color=["C3", "C0", "C2"])
    ax[2].axhline(logn, color="k", ls="--", label="log N")
    ax[2].set_xticks(range(3))
    ax[2].set_xticklabels(names)
    ax[2].set_ylabel("plug-in I(samples; training set) [nats]")
    ax[2].set_title("(B) mutual information")
    ax[2].legend()
    s = np.array(DIST_SIGMAS)
    for p, lab in zip(profs, ("network vs empirical", "Gaussian vs empirical", "network vs Gaussian")):
        ax[3].plot(s, p, "o-", label=lab)
    ax[3].set_xscale("log"), ax[3].set_yscale("log")
    ax[3].set_xlabel("sigma")
    ax[3].set_ylabel("relative MSE on noisy training points")
    ax[3].set_title("(C) denoiser distances")
    ax[3].legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
