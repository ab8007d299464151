"""Exercise 07: the speciation time of two Gaussians (Biroli, Bonnaire, de Bortoli & Mezard 2024).

Data ``x0 = +-m + sqrt(v) z`` with equal weights. Running the OU process
``x_t = e^-t x0 + sqrt(1 - e^-2t) n`` backwards, the noisy law along ``m`` is unimodal at large
``t`` and becomes bimodal at the symmetry-breaking time ``t*``: trajectories then commit to a
class ("speciation"). Find ``t*`` numerically from the exact mixture denoiser and compare with
``gd.symmetry_breaking_time`` and the speciation time ``t_S = log(Lambda)/2`` of
``gd.speciation_time``.
"""

import math

import torch
from scipy.optimize import brentq

import gaussdiff as gd

F64 = torch.float64


def curvature_sign_at_zero(mix, direction, sigma):
    """u^T Hess log p_sigma(0) u * sigma^2 = u^T J_D(0) u - 1 (second-order Tweedie, (T3)):
    negative while the law is unimodal along u, positive once it is bimodal."""
    J = gd.denoiser_jacobian(mix, torch.zeros(1, direction.numel(), dtype=F64), sigma)[0]
    return float(direction @ J @ direction) - 1.0


def solve(d=16, mu=1.0, v=1.0, n_samples=20_000):
    m = torch.full((d,), mu, dtype=F64)
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor([0.5, 0.5], dtype=F64), torch.stack([m, -m]), torch.tensor([v, v], dtype=F64), cov_type="isotropic"
    )
    u = m / m.norm()
    # the root in log sigma of the curvature: unimodal above, bimodal below
    log_sigma = brentq(
        lambda ls: curvature_sign_at_zero(mix, u, math.exp(ls)), math.log(0.05), math.log(50.0), xtol=1e-14
    )
    ou = gd.OU()
    t_star_numeric = float(ou.t_of_sigma(math.exp(log_sigma)))  # sigma^2 = e^{2t} - 1
    m2 = float(m @ m)
    t_star_formula = gd.symmetry_breaking_time(m2, v)
    # speciation time from the exact covariance m m^T + v I (top eigenvalue |m|^2 + v) ...
    cov = torch.outer(m, m) + v * torch.eye(d, dtype=F64)
    t_s = gd.speciation_time(cov)
    # ... and from a sample of the data, as one would on a real data set
    x, _ = mix.sample(n_samples, generator=torch.Generator().manual_seed(0))
    t_s_sample = gd.speciation_time(torch.cov(x.T))
    return {
        "t_star_numeric": t_star_numeric,
        "t_star_formula": t_star_formula,
        "t_S": t_s,
        "t_S_from_samples": t_s_sample,
        "Lambda": m2 + v,
    }


if __name__ == "__main__":
    for k, val in solve().items():
        print(f"{k:18s} {val:.10f}")
