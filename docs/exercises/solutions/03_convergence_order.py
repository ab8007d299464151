"""Exercise 03: the exact Gaussian flow as ground truth; convergence orders of Euler and Heun.

On Gaussian data the probability-flow ODE has a closed-form solution (theory (G4)), so the
error of a sampler is measurable exactly. Euler (= DDIM) should be order 1, Heun order 2.
"""

import numpy as np
import torch

import gaussdiff as gd

F64 = torch.float64
STEPS = (16, 32, 64, 128)


def gaussian(d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64)).Q
    lam = torch.logspace(0.5, -1.0, d, dtype=F64)  # eigenvalues 3.16 ... 0.1
    return gd.GaussianDenoiser(torch.randn(d, generator=g, dtype=F64), (Q * lam) @ Q.T)


def errors(sampler, den, x, sigma_max=80.0, sigma_min=0.002):
    exact = den.flow(x, sigma_max, sigma_min)  # (G4), no steps
    out = []
    for n in STEPS:
        sigmas = gd.karras_sigmas(n, sigma_min, sigma_max)[:-1]  # stop at sigma_min
        out.append(float((sampler(den, x, sigmas) - exact).norm(dim=1).max()))
    return out


def order(errs):
    """Least-squares slope of -log(error) against log(steps)."""
    return float(-np.polyfit(np.log(STEPS), np.log(errs), 1)[0])


def solve():
    den = gaussian()
    x = gd.seeded_noise(16, 4, seed=0) * 80.0
    e_euler, e_heun = errors(gd.sample_euler, den, x), errors(gd.sample_heun, den, x)
    # the exact flow agrees with an adaptive high-accuracy ODE solve
    ref = gd.solve_flow(den, x, 80.0, 0.002)
    flow_vs_solver = float((ref - den.flow(x, 80.0, 0.002)).abs().max())
    return {
        "order_euler": order(e_euler),
        "order_heun": order(e_heun),
        "errors_euler": e_euler,
        "errors_heun": e_heun,
        "exact_flow_vs_solve_ivp": flow_vs_solver,
    }


if __name__ == "__main__":
    r = solve()
    print("steps        ", STEPS)
    print("Euler errors ", ["%.2e" % e for e in r["errors_euler"]], "order %.3f" % r["order_euler"])
    print("Heun errors  ", ["%.2e" % e for e in r["errors_heun"]], "order %.3f" % r["order_heun"])
    print("exact flow vs solve_ivp: %.2e" % r["exact_flow_vs_solve_ivp"])
