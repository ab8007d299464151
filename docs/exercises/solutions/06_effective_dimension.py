"""Exercise 06: effective dimension against sigma.

The trace of the denoiser's Jacobian, ``tr dD/dx = tr Cov[x0 | x] / sigma^2``, counts the
directions the denoiser keeps at noise level sigma. For a Gaussian it is
``sum_k l_k / (l_k + sigma^2)`` (theory (G3)); for the empirical distribution it collapses to 0
at small sigma (one training point carries the posterior) and follows the Gaussian at large
sigma (the posterior is the whole training set).
"""

import torch

import gaussdiff as gd

F64 = torch.float64


def solve():
    d = 16
    iso = gd.GaussianDenoiser(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64))
    eff_iso = float(iso.effective_dim(1.0))  # 16 * 1/(1+1) = 8

    g = torch.Generator().manual_seed(0)
    B = torch.randn(d, 3, generator=g, dtype=F64)
    rank3 = gd.GaussianDenoiser(torch.zeros(d, dtype=F64), B @ B.T)
    eff_rank3 = float(rank3.effective_dim(1e-4))  # -> rank = 3 as sigma -> 0

    # autograd trace of the Jacobian equals the closed form
    x = torch.randn(5, d, generator=g, dtype=F64)
    autograd_trace = gd.effective_dimension(rank3, x, 0.5)
    trace_err = float((autograd_trace - rank3.effective_dim(0.5)).abs().max())

    # the empirical denoiser of N points, at training points + small noise, and at large sigma
    train = torch.randn(200, 4, generator=g, dtype=F64)
    emp, gau = gd.EmpiricalDenoiser(train), gd.GaussianDenoiser.fit(train)
    sigmas = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
    profile = {}
    for s in sigmas:
        q = train[:20] + s * torch.randn(20, 4, generator=g, dtype=F64)
        J = emp.jacobian(q, s)  # (E3) posterior covariance / s^2
        profile[s] = (float(torch.diagonal(J, dim1=1, dim2=2).sum(1).mean()), float(gau.effective_dim(s)))
    return {
        "isotropic_d16_sigma1": eff_iso,
        "rank3_small_sigma": eff_rank3,
        "autograd_trace_err": trace_err,
        "empirical_vs_gaussian": profile,
    }


if __name__ == "__main__":
    r = solve()
    for k, v in r.items():
        if k != "empirical_vs_gaussian":
            print(f"{k:24s} {v:.6g}")
    print("sigma    empirical  gaussian")
    for s, (e, gg) in r["empirical_vs_gaussian"].items():
        print(f"{s:6.2f}  {e:9.4f}  {gg:9.4f}")
