"""Zhang, Zhou, Lu, Guo, Wang, Shen & Qu, "The Emergence of Reproducibility and Consistency in
Diffusion Models", ICML 2024 (the arXiv v4 title reads "... Reproducibility and Generalizability
..."): reproducibility also holds for inverse-problem solutions across solvers and for conditional
models across frameworks. Closed-form part: with exact denoisers the claim is checked against
exact answers.

Reproducibility measure. The paper's RP score is the share of same-noise pairs whose SSCD
similarity exceeds 0.6 (huijieZH/Diffusion-Model-Generalizability, ``edm/sscd.py``, ``rpscore``:
``(similarity > threshold).mean()``, strict ``>``, default ``--t 0.6``). SSCD's weights are
downloaded from the internet by that script and cannot be fetched here; this script uses the
share of pairs whose centred cosine similarity of the samples is >= 0.9 instead. The 0.9 and the
shares below (0.95 for exact flows, 0.9 for networks) are our thresholds, not the paper's, fixed
before the runs; for exact flows they are stricter than needed (exact flows from the same noise
score 1.0).

Checks (PASS/FAIL from measured numbers; exit status 1 if any FAIL):

A. inverse problems on the digits (inpainting, sigma_y = 0.1), Gaussian, class-mixture and
   empirical priors: the exact posterior denoiser's probability flow solved by Euler, Heun, an
   adaptive DOP853 solve and (Gaussian) the exact flow map, from the same noise, gives the same
   solution (reproducibility score, centred cosine >= 0.9, at least 0.95);
B. class-conditional closed forms (empirical, Gaussian, guided Gaussian w = 2) sampled with Heun
   in EDM, VP and rectified-flow time from the same noise agree (score at least 0.95), and the
   guided Gaussian samples match the exact guided output law (CFG3).

C. class-conditional networks (MLP with a label embedding, label dropout 0.1) trained in the EDM,
   VP and rectified-flow parameterisations on the same labelled data (a 4-class Gaussian mixture,
   ``gmm:k=4``), sampled with Heun from the same noise with the same labels: edm vs vp and edm vs
   flow reproducible (share at least 0.9), each network reproducing the exact class-conditional
   closed-form sample (share at least 0.9), and a control, the same noise with another label,
   not reproducible (share below 0.5: the label is used);
D. fine-tuning: an MLP trained on classes {0, 1} of that mixture, fine-tuned on classes {2, 3}
   (a data set of the same size), against one trained from scratch on {2, 3} for as many steps:
   D1 reproducible from the same noise (share at least 0.9) while D2 the source model is not
   (below 0.5: fine-tuning moved it). These are the paper's fine-tuning claim (same noise, same
   sample between a fine-tuned model and one trained from scratch).

Findings (reported, not PASS/FAIL): the practical approximate solvers DPS, PiGDM and DDRM run from
the same noise as the exact posterior sampler: their reproducibility against it and against each
other, and their error against the exact posterior (mean error, 90 % coverage, W2 for the
Gaussian prior). DPS runs with the authors' inpainting step size, ``zeta = 0.5`` = ``scale`` of
DPS2022/diffusion-posterior-sampling ``configs/inpainting_config.yaml`` (step
``zeta * grad ||y - A x0_hat||``, see :func:`gaussdiff.sample_dps`); PiGDM and DDRM with their
defaults. D3: the fine-tuned / scratch ratio of the mean distances to the second set's exact
(two-class mixture) denoiser, and to its empirical and Gaussian denoisers (in
``inverse_reproducibility.json`` under ``findings`` and printed); measured 1.09 (fast) and 1.50
(full, 1500 steps) for the exact one under the 2026-11-24 protocol.

Changes from the 2026-11-24 protocol
------------------------------------

* D3 ("fine-tuned / scratch distance to the exact denoiser of classes 2-3 <= 1.5") is now a
  reported finding, no longer a PASS/FAIL check: the 1.5 was a criterion of ours, while the
  paper's fine-tuning claim is about reproducibility (same noise, same sample between the
  fine-tuned and the from-scratch model), which D1 and D2 check. Its JSON entry (and those of
  the other distance ratios) now carries the number under ``value`` instead of a misnamed ``rp``.
* DPS step convention: :func:`gaussdiff.sample_dps` now steps ``zeta * grad ||r||`` (unsquared
  residual norm) as the authors' code does (``guided_diffusion/condition_methods.py``,
  ``PosteriorSampling``: ``x_t -= norm_grad * self.scale``); before, it stepped the paper's
  Algorithm 1 with ``zeta_i = zeta' / ||r||`` (Appendix C.2) and ``zeta' = 1``, i.e. ``zeta = 2``
  in the new convention. This script now passes the authors' inpainting ``scale`` 0.5 (their
  ``configs/inpainting_config.yaml``; the task here is inpainting), a step 4x smaller than before.
  The DPS numbers are findings, so no verdict moves. That scale was set for 1000 DDPM steps
  (their ``configs/diffusion_config.yaml``) on 256x256 colour images; with 20 (fast) or 60
  (full) steps on 8x8 digits the total pull towards ``y`` is weaker, and DPS lands farther from
  the exact posterior than under the old step (fast run, Gaussian prior: same-noise RP against
  the exact posterior sample 0.75 -> 0.125, mean error 0.38 -> 0.86 posterior spreads).
* Citations: the paper's authors, title and venue are given in full (ICML 2024 title; the earlier
  "Zhang et al. (2023)" with a lower-case title); the paper's RP score (SSCD similarity > 0.6,
  from the authors' ``edm/sscd.py``) is stated, and the centred-cosine threshold and shares are
  stated to be ours. No threshold of the checks A-C, D1, D2 changed.

    python validation/inverse_reproducibility.py --outdir out/val_inverse           # ~ minutes
    python validation/inverse_reproducibility.py --outdir out/val_inverse --fast    # < 1 minute
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

import gaussdiff as gd

from gaussdiff._io import atomic_write

THRESHOLD, PASS_SHARE = 0.9, 0.95
PASS_NET, CONTROL_MAX = 0.9, 0.5  # trained networks: PASS share; a control must stay below
DPS_ZETA = 0.5  # DPS step: the authors' inpainting scale (DPS2022 configs/inpainting_config.yaml)


def rp(a, b):
    r = gd.reproducibility(
        a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), similarity="cosine", threshold=THRESHOLD, seed=0
    )
    return {"rp": r.fraction.value, "rp_se": r.fraction.se, "mean_cos": r.mean_similarity}


def _opts(name):
    """Sampler options: DPS with the authors' inpainting step size, the others at their defaults."""
    return {"zeta": DPS_ZETA} if name == "dps" else {}


def part_a(data, labels, test, cfg, rows, checks, findings, panels):
    """Inverse problems: exact posterior flows across solvers; approximate solvers as findings."""
    op = gd.make_operator(cfg["operator"], data.shape[1:], seed=0)
    sy = cfg["sigma_y"]
    x0 = test[: cfg["n_meas"]]
    y = op(x0) + sy * gd.seeded_noise(x0.shape[0], op.out_dim, seed=99)
    cls = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian", unconditional="marginal")
    priors = {
        "gaussian": gd.GaussianDenoiser.fit(data),
        "mixture": cls.unconditional,
        "empirical": gd.EmpiricalDenoiser(data),
    }
    n = cfg["steps"]
    noise = gd.seeded_noise(x0.shape[0], data.shape[1:], seed=1, dtype=torch.float64)
    for pname, prior in priors.items():
        pdn = gd.PosteriorDenoiser(prior, op, y, sy)
        x = noise * 80.0
        sol = {
            "heun": gd.sample_heun(pdn, x, gd.karras_sigmas(n)),
            "euler": gd.sample_euler(pdn, x, gd.karras_sigmas(4 * n)),
        }
        x_lo = gd.solve_flow(pdn, x, 80.0, 0.002, rtol=1e-8, atol=1e-10)
        sol["dop853"] = pdn(x_lo, 0.002)
        if pname == "gaussian":
            sol["exact_flow"] = pdn.flow(x, 80.0, 0.0)
        for other in [k for k in sol if k != "heun"]:
            r = rp(sol["heun"], sol[other])
            rows.append(dict(part="A", prior=pname, a="heun", b=other, **r))
            checks.append((f"A {pname}: exact posterior flow, heun vs {other}", r["rp"], r["rp"] >= PASS_SHARE))
        # approximate solvers from the same noise (findings)
        approx = {}
        for name, fn in (("dps", gd.sample_dps), ("pigdm", gd.sample_pigdm), ("ddrm", gd.sample_ddrm)):
            approx[name] = fn(prior, x, gd.karras_sigmas(n), A=op, y=y, sigma_y=sy, seed=1, **_opts(name))
            r = rp(sol["heun"], approx[name])
            rows.append(dict(part="A", prior=pname, a="exact", b=name, **r))
            findings.append((f"A {pname}: {name} vs exact posterior sample (same noise)", r["rp"], r["mean_cos"]))
        for a_, b_ in (("dps", "pigdm"), ("dps", "ddrm"), ("pigdm", "ddrm")):
            r = rp(approx[a_], approx[b_])
            rows.append(dict(part="A", prior=pname, a=a_, b=b_, **r))
            findings.append((f"A {pname}: {a_} vs {b_} (same noise)", r["rp"], r["mean_cos"]))
        if pname == "gaussian":
            panels.update(
                y=op.adjoint(y).reshape(x0.shape),
                truth=x0,
                post_mean=pdn.posterior_mean().reshape(x0.shape),
                exact=sol["heun"],
                **approx,
            )
        # error against the exact posterior with several samples per measurement
        q, S = min(3, x0.shape[0]), cfg["n_samples"]
        pq = gd.PosteriorDenoiser(prior, op, y[:q], sy)
        for name in gd.POSTERIOR_SAMPLERS:
            smp = gd.run_posterior_sampler(name, prior, op, y[:q], sy, steps=n, n_samples=S, seed=2, **_opts(name))
            res = gd.measure_posterior_samples(smp, pq)
            rows.append(dict(part="A-error", prior=pname, a=name, b="exact posterior", **res))


def part_b(data, labels, cfg, rows, checks):
    """Conditional closed forms across frameworks (EDM, VP, rectified flow) from the same noise."""
    n, B = cfg["steps"], cfg["n_cond"]
    lab = torch.arange(B) % int(labels.max() + 1)
    noise = gd.seeded_noise(B, data.shape[1:], seed=3, dtype=torch.float64) * 80.0
    emp = gd.ClassConditionalDenoiser.from_data(data, labels, kind="empirical")
    gau = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian")
    models = {"empirical": emp.conditioned(lab), "gaussian": gau.conditioned(lab)}
    c0 = gau.class_denoisers[0]
    models["guided-gaussian(w=2, class 0)"] = gd.GuidedDenoiser(gau.unconditional, c0, 2.0)
    for mname, den in models.items():
        out = {}
        for fw, sched in (("edm", gd.EDM()), ("vp", gd.VP()), ("flow", gd.RectifiedFlow())):
            if fw == "vp":  # EDM Table 1's VP grid: t uniform from t(80) to eps_s = 1e-3, then 0
                t_hi = float(sched.t_of_sigma(torch.tensor(80.0, dtype=torch.float64)))
                ts = torch.cat(
                    [torch.linspace(t_hi, 1e-3, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
                )
            else:
                ts = sched.time_grid(n, sigma_max=80.0)
            out[fw] = gd.sample_heun(den, noise, schedule=sched, ts=ts)
        for other in ("vp", "flow"):
            r = rp(out["edm"], out[other])
            rows.append(dict(part="B", prior=mname, a="edm", b=other, **r))
            checks.append((f"B {mname}: heun edm vs {other}", r["rp"], r["rp"] >= PASS_SHARE))
        if mname.startswith("guided"):
            # samples of the guided flow vs its exact output law (CFG3), through the exact map
            P, c = gd.guided_gaussian_flow(c0, gau.unconditional, 2.0, 80.0, 0.002)
            want = noise.reshape(B, -1) @ P.T + c
            errs = []
            for k in (2 * n, 4 * n):  # Heun on the Karras grid ending at 0.002: order 2
                got = gd.sample_heun(den, noise, gd.karras_sigmas(k)[:-1]).reshape(B, -1)
                errs.append(float((got - want).norm(dim=1).max() / want.norm(dim=1).max()))
            err = errs[1]
            ok = errs[1] < errs[0] / 3 and errs[1] < 5e-3
            rows.append(
                dict(
                    part="B",
                    prior=mname,
                    a="heun",
                    b="exact guided flow (CFG3)",
                    rel_err=err,
                    rel_err_half_steps=errs[0],
                )
            )
            checks.append(
                (
                    f"B {mname}: heun ({4 * n} steps, order-2 convergence from {2 * n}) vs exact guided "
                    "flow map, max rel err",
                    err,
                    ok,
                )
            )


def _labelled_mixture(cfg):
    x, lab, _ = gd.load_dataset(cfg["cond_data"])
    return x, lab


def part_c(cfg, rows, checks):
    """Class-conditional networks across frameworks (EDM, VP, rectified flow), same noise, same label."""
    x, lab = _labelled_mixture(cfg)
    C, B = int(lab.max()) + 1, cfg["n_net_samples"]
    kw = dict(
        steps=cfg["net_steps"],
        width=cfg["net_width"],
        depth=2,
        batch_size=128,
        lr=2e-3,
        seed=0,
        label_dropout=0.1,
        progress=False,
        num_threads=1,
    )
    nets = {fw: gd.train_denoiser(x, labels=lab, framework=fw, **kw).denoiser for fw in ("edm", "vp", "flow")}
    L = torch.arange(B) % C
    noise = gd.seeded_noise(B, x.shape[1:], seed=4, dtype=torch.float64) * 80.0
    sig = gd.karras_sigmas(cfg["steps"])
    out = {fw: gd.sample_heun(d.conditioned(L), noise, sig) for fw, d in nets.items()}
    exact = gd.ClassConditionalDenoiser.from_data(x.double(), lab, kind="gaussian")  # (G2) per class
    out["exact"] = gd.sample_heun(exact.conditioned(L), noise, gd.karras_sigmas(3 * cfg["steps"]))
    out["edm, other label"] = gd.sample_heun(nets["edm"].conditioned((L + 1) % C), noise, sig)
    tag = f"C conditional MLP ({cfg['cond_data']}, {cfg['net_steps']} steps)"
    for a_, b_ in (("edm", "vp"), ("edm", "flow"), ("vp", "flow")):
        r = rp(out[a_], out[b_])
        rows.append(dict(part="C", prior="cond-net", a=a_, b=b_, **r))
        checks.append((f"{tag}: {a_} vs {b_}, same noise and label", r["rp"], r["rp"] >= PASS_NET))
    for fw in ("edm", "vp", "flow"):
        r = rp(out[fw], out["exact"])
        rows.append(dict(part="C", prior="cond-net", a=fw, b="exact class-conditional", **r))
        checks.append((f"{tag}: {fw} vs exact class-conditional flow", r["rp"], r["rp"] >= PASS_NET))
    r = rp(out["edm"], out["edm, other label"])
    rows.append(dict(part="C", prior="cond-net", a="edm", b="edm, other label", **r))
    checks.append((f"{tag}: control, edm with another label (must be < {CONTROL_MAX})", r["rp"], r["rp"] < CONTROL_MAX))


def part_d(cfg, rows, checks, findings):
    """Fine-tuned vs from-scratch models on a second class subset of the same size."""
    x, lab = _labelled_mixture(cfg)
    a, b = x[lab < 2], x[lab >= 2]
    m = min(a.shape[0], b.shape[0])
    a, b, lab_b = a[:m], b[:m], lab[lab >= 2][:m]
    kw = dict(width=cfg["net_width"], depth=2, batch_size=128, lr=2e-3, progress=False, num_threads=1)
    src = gd.train_denoiser(a, steps=cfg["net_steps"], seed=0, **kw)
    ft = gd.train_denoiser(b, steps=cfg["ft_steps"], seed=1, init_from=src, **kw)
    sc = gd.train_denoiser(b, steps=cfg["ft_steps"], seed=1, **kw)
    B = cfg["n_net_samples"]
    noise = gd.seeded_noise(B, x.shape[1:], seed=5, dtype=torch.float64) * 80.0
    sig = gd.karras_sigmas(cfg["steps"])
    out = {
        k: gd.sample_heun(r_.denoiser, noise, sig) for k, r_ in (("fine-tuned", ft), ("scratch", sc), ("source", src))
    }
    tag = f"D fine-tuned ({cfg['net_steps']} steps on classes 0-1, then {cfg['ft_steps']} on 2-3) vs scratch ({cfg['ft_steps']})"
    r = rp(out["fine-tuned"], out["scratch"])
    rows.append(dict(part="D", prior="finetune", a="fine-tuned", b="scratch", **r))
    checks.append((f"{tag}: same noise", r["rp"], r["rp"] >= PASS_NET))
    r = rp(out["source"], out["scratch"])
    rows.append(dict(part="D", prior="finetune", a="source (classes 0-1)", b="scratch", **r))
    checks.append(
        (f"{tag}: control, source model vs scratch (must be < {CONTROL_MAX})", r["rp"], r["rp"] < CONTROL_MAX)
    )
    bd = b.double()
    refs = {
        "exact (2-class mixture)": gd.ClassConditionalDenoiser.from_data(
            bd, lab_b - 2, kind="gaussian", unconditional="marginal"
        ).unconditional,
        "empirical": gd.EmpiricalDenoiser(bd),
        "gaussian": gd.GaussianDenoiser.fit(bd),
    }
    grid = torch.tensor([0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64)
    pts = bd[:256]
    dist = {}
    for rname, ref in refs.items():
        for k, r_ in (("fine-tuned", ft), ("scratch", sc)):
            dist[(rname, k)] = gd.denoiser_distance(
                r_.denoiser, ref, pts, grid, generator=torch.Generator().manual_seed(6)
            ).mean
            rows.append(dict(part="D-distance", prior="finetune", a=k, b=rname, dist=dist[(rname, k)]))
    # D3, a finding (a check "<= 1.5" of ours under the 2026-11-24 protocol; the paper's claim is D1/D2)
    for rname in refs:
        findings.append(
            (
                f"D3 distance to the {rname} denoiser of classes 2-3, fine-tuned / scratch",
                dist[(rname, "fine-tuned")] / dist[(rname, "scratch")],
                float("nan"),
            )
        )


def figure(panels, rows, outdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["y", "truth", "post_mean", "exact", "dps", "pigdm", "ddrm"]
    k = min(4, panels["truth"].shape[0])
    fig, ax = plt.subplots(k + 1, len(names), figsize=(1.6 * len(names), 1.6 * (k + 1) + 1.5))
    for j, nm in enumerate(names):
        for i in range(k):
            img = panels[nm][i].reshape(-1, *panels[nm].shape[-2:])[0].detach().numpy()
            ax[i, j].imshow(img, cmap="gray", vmin=-1, vmax=1)
            ax[i, j].axis("off")
        ax[0, j].set_title(nm.replace("post_mean", "E[x0|y]"), fontsize=8)
    gs = ax[k, 0].get_gridspec()
    for a in ax[k]:
        a.remove()
    bar = fig.add_subplot(gs[k, :])
    sel = [r for r in rows if r["part"] in ("A", "B", "C", "D") and "rp" in r]
    bar.bar(range(len(sel)), [r["rp"] for r in sel], yerr=[r["rp_se"] for r in sel], color="C0")
    bar.axhline(PASS_SHARE, color="k", lw=0.8, ls="--")
    bar.set_xticks(range(len(sel)))
    bar.set_xticklabels([f"{r['prior'][:9]}:{r['a']}/{r['b']}" for r in sel], rotation=90, fontsize=5)
    bar.set_ylabel("reproducibility")
    fig.tight_layout()
    path = outdir / "inverse_reproducibility.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--fast", action="store_true", help="small sizes (used by the tests)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = dict(
        operator="inpaint:0.5",
        sigma_y=0.1,
        n_train=120 if args.fast else 600,
        n_meas=8 if args.fast else 32,
        steps=20 if args.fast else 60,
        n_samples=32 if args.fast else 200,
        n_cond=10 if args.fast else 50,
        cond_data="gmm:k=4,d=8,n=2000,seed=1" if args.fast else "gmm:k=4,d=16,n=4000,seed=1",
        net_steps=300 if args.fast else 3000,
        ft_steps=200 if args.fast else 1500,
        net_width=64 if args.fast else 128,
        n_net_samples=100 if args.fast else 400,
    )
    data, labels, _ = gd.load_dataset("digits")
    data = data.to(torch.float64)
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = perm[: cfg["n_train"]], perm[cfg["n_train"] :]
    train, lab, test = data[train_idx], labels[train_idx], data[test_idx]
    rows, checks, findings, panels = [], [], [], {}
    part_a(train, lab, test, cfg, rows, checks, findings, panels)
    part_b(train, lab, cfg, rows, checks)
    part_c(cfg, rows, checks)
    part_d(cfg, rows, checks, findings)
    args.outdir.mkdir(parents=True, exist_ok=True)
    fig = figure(panels, rows, args.outdir)
    keys = sorted({k for r in rows for k in r})
    with open(args.outdir / "inverse_reproducibility.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    result = {
        "config": cfg,
        "version": gd.__version__,
        "rows": rows,
        "checks": [dict(name=n_, value=v, verdict="PASS" if ok else "FAIL") for n_, v, ok in checks],
        "findings": [
            dict(name=n_, value=v) if math.isnan(c) else dict(name=n_, rp=v, mean_cos=c) for n_, v, c in findings
        ],
        "dps_zeta": DPS_ZETA,
        "wall_time_s": time.time() - t0,
    }
    atomic_write(args.outdir / "inverse_reproducibility.json", json.dumps(result, indent=2, default=float))
    print(f"reproducibility threshold: centred cosine >= {THRESHOLD}; PASS when the share is >= {PASS_SHARE}")
    for n_, v, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {n_}: {v:.4g}")
    print(
        f"findings (approximate solvers, same noise as the exact posterior sampler, DPS zeta {DPS_ZETA}; "
        "D3 fine-tuned vs scratch):"
    )
    for n_, v, c in findings:
        print(f"        {n_}: RP {v:.3f}, mean cosine {c:.3f}" if not math.isnan(c) else f"        {n_}: {v:.3f}")
    print(
        "error of each sampler against the exact posterior "
        f"({cfg['steps']} steps, {cfg['n_samples']} samples per measurement, sigma_y {cfg['sigma_y']}):"
    )
    for r in rows:
        if r["part"] == "A-error":
            extra = (
                f", W2/sqrt(tr C) {r['w2_rel']:.3f}" if "w2_rel" in r else f", TV {r['tv']:.3f}" if "tv" in r else ""
            )
            print(
                f"        {r['prior']:9s} {r['a']:6s} mean error {r['mean_error']:.3f} (/{r['mean_error_scale']} spread; exact-sampler floor {r['mc_floor']:.3f}), "
                f"coverage {r['coverage']:.3f} (nominal {r['coverage_nominal']:.3f})"
                + ("" if "tv" in r else f", spread ratio {r['spread_ratio']:.2f}")
                + extra
            )
    print("fine-tuned vs scratch: mean relative distance over sigma in [0.05, 5] to the second set's denoisers:")
    for r in rows:
        if r["part"] == "D-distance":
            print(f"        {r['a']:10s} vs {r['b']:24s} {r['dist']:.4g}")
    print(f"wrote {args.outdir}/inverse_reproducibility.json, .csv and {fig.name} in {time.time() - t0:.0f} s")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
