"""Biroli, Bonnaire, de Bortoli & Mezard (2024), "Dynamical regimes of diffusion models":
speciation and collapse of the exact empirical flow on two symmetric Gaussians.

Claim
-----
For data ``x0 = +-m + z`` (two equally weighted Gaussians, ``m = mu (1, ..., 1)``, ``z ~ N(0, I_d)``)
and the Ornstein-Uhlenbeck forward process (OU time ``t``, EDM noise ``sigma^2 = e^{2t} - 1``) the
backward dynamics driven by the *empirical* score of N training points has two times:

* speciation at ``t_S = 1/2 log Lambda`` (Lambda the largest eigenvalue of the data covariance,
  here ``d mu^2 + 1``): above it a trajectory has not chosen its class, below it it has;
* collapse at ``t_C`` (``gaussdiff.predictions.collapse_time``, theory (R3)): below it the
  trajectory is attracted to a single training point. The paper's large-d formula for isotropic
  cluster variance ``v = 1`` is ``t_C = 1/2 log(1 + v / (N^{2/d} - 1))``: ``t_C`` falls as N grows
  at fixed d and rises with d at fixed N; ``t_C < t_S`` when N is not too large.

Protocol
--------
For every dimension d and training-set size N (full: d in 8, 16, 32, 64, N in 100, 1000, 10000;
fast: d in 8, 32, N in 100, 1000), draw N training points (``mu = 1``), start ``B`` trajectories
from the same seeded noise at ``sigma = 80`` and integrate the probability-flow ODE of the exact
``EmpiricalDenoiser`` with Heun's method on the Karras grid (full: 160 steps, B = 128; fast: 96,
B = 96), all in float64. At every grid level, from the exact posterior weights
``w_i(x, sigma) = softmax_i(-|x - x_i|^2 / 2 sigma^2)`` of the trajectory's state:

* collapse indicator: ``max_i w_i > 1/2`` (one training point carries the posterior). The
  *measured* ``t_C`` is the OU time at which the share of collapsed trajectories crosses 1/2
  (linear interpolation on the grid);
* class commitment: ``phi = P^2 + (1 - P)^2`` with ``P = sum_{i in class +} w_i``, the exact
  probability that two clones of the trajectory, continued with the empirical backward SDE, end
  in the same class (the paper's cloning observable; it goes from 1/2 at large t to 1). The
  *measured* speciation time is where the mean of ``phi`` crosses 0.75. For the population (N ->
  infinity, |m|^2 >> 1) that crossing is at ``t_S + 0.081`` (quadrature, printed).

Uncertainties: bootstrap over trajectories (200 replicates). A cross-check of the collapse time
on exact samples of the noised empirical law (``x = x_i + sigma n``, no ODE discretisation) is
recorded beside it. Three versions of (R3) are reported: the paper's isotropic formula
(``n_clusters = 1``, cluster variance 1), the two-cluster entropy (``n_clusters = 2``) and the
full covariance spectrum treated as one Gaussian. The PASS criteria use the paper's formula.

PASS criteria (fixed before the runs)
-------------------------------------
1. speciation: for every d (largest N), ``|t_S,measured - t_S| <= 0.3``;
2. speciation scaling: slope of measured against predicted ``t_S`` across d in [0.8, 1.2];
3. collapse: median over all (d, N) cells of ``|t_C,measured - t_C| / t_C <= 0.2``;
4. collapse trend: measured ``t_C`` decreases with N at every d (no violation);
5. ordering: ``t_C,measured < t_S,measured`` in every cell.

    python validation/biroli_regimes.py --outdir out/val/biroli_regimes          # full, minutes
    python validation/biroli_regimes.py --outdir out/val/biroli_regimes --fast   # seconds
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

LEVEL_SPEC, LEVEL_COLLAPSE, N_BOOT = 0.75, 0.5, 200


def population_phi_offset() -> float:
    """OU-time offset of the population crossing ``E phi = 0.75`` from ``t_S`` (|m|^2 >> 1).

    With ``r = |m|^2 e^{-2t}``, ``P = sigmoid(2 r + 2 sqrt(r) z)`` and ``phi(r) = E[P^2 + (1-P)^2]``;
    the crossing is at ``r*`` and ``t = t_S - 1/2 log r*``."""
    from scipy.optimize import brentq

    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()

    def phi(r):
        p = 1.0 / (1.0 + np.exp(-(2 * r + 2 * np.sqrt(r) * z)))
        return float((w * (p ** 2 + (1 - p) ** 2)).sum())

    r_star = brentq(lambda r: phi(r) - LEVEL_SPEC, 1e-4, 20.0)
    return -0.5 * math.log(r_star)


def crossing(t: np.ndarray, v: np.ndarray, level: float) -> float:
    """OU time where ``v`` (sampled along decreasing ``t``) first reaches ``level`` from below,
    by linear interpolation; nan when it never does."""
    above = v >= level
    if not above.any():
        return float("nan")
    k = int(np.argmax(above))
    if k == 0:
        return float(t[0])
    t0, t1, v0, v1 = t[k - 1], t[k], v[k - 1], v[k]
    return float(t0 + (level - v0) * (t1 - t0) / (v1 - v0)) if v1 != v0 else float(t1)


def boot_crossing(t, per_traj, level, rng, reduce):
    """Crossing of ``reduce(per_traj[:, sel])`` and its bootstrap se over trajectories."""
    B = per_traj.shape[1]
    val = crossing(t, reduce(per_traj), level)
    reps = [crossing(t, reduce(per_traj[:, rng.integers(0, B, B)]), level) for _ in range(N_BOOT)]
    reps = np.asarray(reps)
    reps = reps[np.isfinite(reps)]
    return val, float(reps.std(ddof=1)) if reps.size > 1 else float("nan")


def weights(x: torch.Tensor, train: torch.Tensor, sigma: float) -> torch.Tensor:
    """Posterior weights (B, N) in float64. The GEMM form of the squared distances loses about
    ``1e-16 |x|^2`` absolute, i.e. ``< 1e-12`` in the logits at the levels where the crossings lie."""
    d2 = ((x * x).sum(1, keepdim=True) + (train * train).sum(1)[None] - 2.0 * x @ train.T).clamp_min(0.0)
    return torch.softmax(-d2 / (2.0 * sigma * sigma), dim=1)


def run_cell(d: int, n: int, cfg: dict, seed: int):
    train, lab, _ = gd.two_gaussians_data(n, d, mu=cfg["mu"], std=1.0, seed=seed)
    train = train.double()
    plus = lab == 0
    den = gd.EmpiricalDenoiser(train)
    sigmas = gd.karras_sigmas(cfg["steps"], sigma_max=80.0).double()
    x = gd.seeded_noise(cfg["B"], d, seed=1000 + d) * float(sigmas[0])
    ts, collapsed, phis = [], [], []

    def record(info):
        s = float(info["sigma"])
        w = weights(info["x"], train, s)
        p = w[:, plus].sum(1)
        ts.append(0.5 * math.log1p(s * s))
        collapsed.append((w.max(1).values > 0.5).double().numpy())
        phis.append((p ** 2 + (1 - p) ** 2).numpy())

    with torch.no_grad():
        gd.sample_heun(den, x, sigmas, callback=record)
    t = np.asarray(ts)
    col, phi = np.stack(collapsed), np.stack(phis)            # (steps, B)

    # cross-check: exact samples of the noised empirical law at the same levels, no ODE
    g = torch.Generator().manual_seed(seed + 7)
    idx = torch.randint(0, n, (cfg["B"],), generator=g)
    col_fwd = []
    for s in sigmas[:-1].tolist():
        xs = train[idx] + s * torch.randn(cfg["B"], d, generator=g, dtype=torch.float64)
        col_fwd.append((weights(xs, train, s).max(1).values > 0.5).double().numpy())
    col_fwd = np.stack(col_fwd)
    return dict(t=t, collapsed=col, phi=phi, collapsed_fwd=col_fwd,
                lam_train=float(torch.linalg.eigvalsh(torch.cov(train.T)).max()))


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    set_threads(args.threads or 1)
    fast = args.fast
    cfg = dict(dims=(8, 32) if fast else (8, 16, 32, 64), sizes=(100, 1000) if fast else (100, 1000, 10000),
               B=96 if fast else 128, steps=96 if fast else 160, mu=1.0)
    rep = Report("biroli_regimes",
                 claim="exact empirical flow on two Gaussians: speciation at t_S = 1/2 log Lambda, "
                       "collapse at t_C of the entropy criterion (R3), as d and N vary",
                 source="Biroli, Bonnaire, de Bortoli & Mezard 2024", args=args,
                 expected="|t_S,meas - t_S| <= 0.3 for every d, slope in [0.8, 1.2]; median relative "
                          "error of t_C <= 0.2; t_C falls with N; t_C < t_S")
    rng = np.random.default_rng(0)
    offset = population_phi_offset()
    print(f"   population crossing of E phi = {LEVEL_SPEC}: t_S + {offset:.3f}")
    cells, curves = [], {}
    for d in cfg["dims"]:
        lam = d * cfg["mu"] ** 2 + 1.0
        t_s = gd.speciation_time(lam)
        for n in cfg["sizes"]:
            out = run_cell(d, n, cfg, seed=d * 100003 + n)
            t = out["t"]
            tc, tc_se = boot_crossing(t, out["collapsed"], LEVEL_COLLAPSE, rng, lambda a: a.mean(1))
            tc_f, tc_f_se = boot_crossing(t, out["collapsed_fwd"], LEVEL_COLLAPSE, rng, lambda a: a.mean(1))
            tsm, tsm_se = boot_crossing(t, out["phi"], LEVEL_SPEC, rng, lambda a: a.mean(1))
            pred = {"paper": gd.collapse_time(n, 1.0, dim=d),
                    "two_clusters": gd.collapse_time(n, np.ones(d), n_clusters=2),
                    "full_spectrum": gd.collapse_time(n, np.array([lam] + [1.0] * (d - 1)))}
            cell = dict(d=d, n=n, t_S=t_s, t_S_train=gd.speciation_time(out["lam_train"]),
                        t_spec=tsm, t_spec_se=tsm_se, t_C=tc, t_C_se=tc_se, t_C_forward=tc_f,
                        t_C_forward_se=tc_f_se, **{f"t_C_pred_{k}": v for k, v in pred.items()})
            cells.append(cell)
            curves[(d, n)] = (t, out["collapsed"].mean(1), out["phi"].mean(1))
            print(f"   d={d:3d} N={n:6d}: t_S {t_s:.3f} measured {fmt(tsm, tsm_se)} | t_C pred "
                  f"{pred['paper']:.3f} (2-cluster {pred['two_clusters']:.3f}, full {pred['full_spectrum']:.3f}) "
                  f"measured {fmt(tc, tc_se)} (forward-noised {fmt(tc_f, tc_f_se)})")
    rep.note("cells", cells)
    rep.note("config", cfg)
    rep.note("population_crossing_offset", offset)

    # 1-2 speciation, at the largest N of every d
    big = [c for c in cells if c["n"] == max(cfg["sizes"])]
    dev = [abs(c["t_spec"] - c["t_S"]) for c in big]
    worst = big[int(np.nanargmax(dev))]
    rep.check("speciation: max_d |t_S,meas - 1/2 log Lambda| (largest N)", value=max(dev), se=worst["t_spec_se"],
              passed=bool(np.all(np.asarray(dev) <= 0.3)), expected="<= 0.3 (population offset "
              f"{offset:.3f})")
    xs, ys = np.array([c["t_S"] for c in big]), np.array([c["t_spec"] for c in big])
    ses = np.array([c["t_spec_se"] for c in big])
    slope, slope_se = _slope(xs, ys, ses, rng)
    rep.check("speciation: slope of measured on predicted t_S across d", value=slope, se=slope_se,
              passed=0.8 <= slope <= 1.2, expected="in [0.8, 1.2]")
    # 3-5 collapse
    rel = np.array([abs(c["t_C"] - c["t_C_pred_paper"]) / c["t_C_pred_paper"] for c in cells])
    rel_b = [np.median(rel[rng.integers(0, len(rel), len(rel))]) for _ in range(N_BOOT)]
    med = float(np.median(rel))
    rep.check("collapse: median |t_C,meas - t_C| / t_C over (d, N)", value=med, se=float(np.std(rel_b, ddof=1)),
              passed=med <= 0.2, expected="<= 0.2",
              note="per cell: " + ", ".join(f"d{c['d']}/N{c['n']}: {c['t_C']:.3f} vs {c['t_C_pred_paper']:.3f}"
                                            for c in cells))
    viol = 0
    for d in cfg["dims"]:
        row = [c["t_C"] for c in cells if c["d"] == d]
        viol += int(sum(not (b < a) for a, b in zip(row, row[1:])))
    rep.check("collapse: violations of 't_C falls as N grows' (per d)", value=viol, passed=viol == 0, expected="0")
    n_order = sum(int(not (c["t_C"] < c["t_spec"])) for c in cells)
    rep.check("ordering: cells with t_C,meas >= t_S,meas", value=n_order, passed=n_order == 0, expected="0")
    for k in ("two_clusters", "full_spectrum"):
        r = [abs(c["t_C"] - c[f"t_C_pred_{k}"]) / c[f"t_C_pred_{k}"] for c in cells]
        rep.note(f"collapse_median_rel_error_{k}", float(np.median(r)))
        print(f"   (finding) median relative error of t_C against the {k} version of (R3): {np.median(r):.3f}")

    fig = _figure(cells, curves, cfg, rep.outdir / "biroli_regimes.png")
    reason = _reason(rep, cells, cfg)
    return rep.finish(figures=[fig], reason=reason)


def _reason(rep, cells, cfg) -> str:
    """Why the failed checks failed, in measured numbers."""
    failed = [c["what"] for c in rep.checks if c["status"] == "FAIL"]
    parts = []
    if any(w.startswith("collapse: median") for w in failed):
        ratios = {d: np.median([c["t_C"] / c["t_C_pred_paper"] for c in cells if c["d"] == d]) for d in cfg["dims"]}
        parts.append("measured t_C / paper's t_C per d: " + ", ".join(f"d={d}: {r:.2f}" for d, r in ratios.items())
                     + " - the empirical flow collapses later (larger t) than the leading-order large-d "
                       "formula (R3), by a margin that shrinks as d grows (a finite-d correction)")
    if any(w.startswith("speciation") for w in failed):
        offs = ", ".join(f"d={c['d']}: {c['t_spec'] - c['t_S']:+.2f}" for c in cells if c["n"] == max(cfg["sizes"]))
        parts.append(f"speciation crossing minus 1/2 log Lambda: {offs}")
    if failed and not parts:
        parts.append("failed: " + "; ".join(failed))
    return "; ".join(parts)


def _slope(x, y, se, rng):
    if len(x) < 2:
        return float("nan"), float("nan")
    slope = float(np.polyfit(x, y, 1)[0])
    reps = [np.polyfit(x, y + rng.normal(0, np.nan_to_num(se, nan=0.0)), 1)[0] for _ in range(N_BOOT)]
    return slope, float(np.std(reps, ddof=1))


def _figure(cells, curves, cfg, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    nmax = max(cfg["sizes"])
    for i, d in enumerate(cfg["dims"]):
        t, _, phi = curves[(d, nmax)]
        t_s = gd.speciation_time(d * cfg["mu"] ** 2 + 1.0)
        ax[0].plot(t - t_s, phi, color=f"C{i}", label=f"d={d}")
    ax[0].axvline(0, color="k", lw=0.8, ls="--")
    ax[0].axhline(LEVEL_SPEC, color="grey", lw=0.6)
    ax[0].set_xlim(-3, 3)
    ax[0].set_xlabel("t - 1/2 log Lambda (OU time)")
    ax[0].set_ylabel("class commitment phi (cloning probability)")
    ax[0].set_title(f"speciation, N = {nmax}")
    ax[0].legend(fontsize=7)
    for i, d in enumerate(cfg["dims"]):
        for j, n in enumerate(cfg["sizes"]):
            t, col, _ = curves[(d, n)]
            c = [x for x in cells if x["d"] == d and x["n"] == n][0]
            ax[1].plot(t, col, color=f"C{i}", ls=["-", "--", ":", "-."][j % 4], lw=1,
                       label=f"d={d} N={n}")
            ax[1].axvline(c["t_C_pred_paper"], color=f"C{i}", lw=0.5, ls=["-", "--", ":", "-."][j % 4])
    ax[1].axhline(LEVEL_COLLAPSE, color="grey", lw=0.6)
    ax[1].set_xscale("log")
    ax[1].set_xlim(0.01, 5)
    ax[1].set_xlabel("OU time t")
    ax[1].set_ylabel("share of trajectories with max_i w_i > 1/2")
    ax[1].set_title("collapse (vertical lines: predicted t_C)")
    ax[1].legend(fontsize=6, ncol=2)
    pred = np.array([c["t_C_pred_paper"] for c in cells])
    ax[2].errorbar(pred, [c["t_C"] for c in cells], yerr=[c["t_C_se"] for c in cells], fmt="o", label="t_C (flow)")
    ax[2].errorbar(pred, [c["t_C_forward"] for c in cells], yerr=[c["t_C_forward_se"] for c in cells], fmt="x",
                   label="t_C (forward-noised)")
    ax[2].errorbar([c["t_S"] for c in cells], [c["t_spec"] for c in cells], yerr=[c["t_spec_se"] for c in cells],
                   fmt="s", mfc="none", label="t_S (phi = 0.75)")
    lim = [0, max(max(pred), max(c["t_S"] for c in cells)) * 1.1]
    ax[2].plot(lim, lim, "k--", lw=0.8)
    ax[2].set_xlabel("predicted")
    ax[2].set_ylabel("measured (OU time, +- bootstrap se)")
    ax[2].legend(fontsize=7)
    ax[2].set_title("measured against predicted")
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
