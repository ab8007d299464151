"""Exercise 01: derive and implement the Gaussian denoiser, check it against gaussdiff.

Run from the repository root: ``python docs/exercises/solutions/01_gaussian_denoiser.py``.
"""

import torch

import gaussdiff as gd


def my_gaussian_denoiser(mean, cov, x, sigma):
    """E[x0 | x0 + sigma n = x] for x0 ~ N(mean, cov), by completing the square:
    D(x) = mu + cov (cov + sigma^2 I)^{-1} (x - mu). Rows of ``x`` are queries."""
    d = mean.shape[0]
    A = cov + sigma**2 * torch.eye(d, dtype=cov.dtype)
    return mean + torch.linalg.solve(A, (x - mean).T).T @ cov.T


def monte_carlo_posterior_mean(mean, cov, x, sigma, n=400_000, seed=0):
    """Self-normalised importance sampling of E[x0 | x]: draw x0 from the prior and weight by
    the likelihood N(x; x0, sigma^2 I). An independent route that needs no algebra."""
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(cov)
    x0 = mean + torch.randn(n, mean.shape[0], generator=g, dtype=cov.dtype) @ L.T
    logw = -((x[None] - x0) ** 2).sum(1) / (2 * sigma**2)
    w = torch.softmax(logw, 0)
    return (w[:, None] * x0).sum(0)


def solve():
    g = torch.Generator().manual_seed(0)
    d = 4
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    x = 3 * torch.randn(64, d, generator=g, dtype=torch.float64)
    ref = gd.GaussianDenoiser(mean, cov)
    diffs = [
        float((my_gaussian_denoiser(mean, cov, x, s) - ref(x, s)).abs().max()) for s in (0.01, 0.3, 1.0, 10.0, 1000.0)
    ]

    # a rank-deficient covariance: the formula still holds (cov + sigma^2 I is invertible)
    B = torch.randn(d, 2, generator=g, dtype=torch.float64)
    low = B @ B.T
    diffs_low = [
        float((my_gaussian_denoiser(mean, low, x, s) - gd.GaussianDenoiser(mean, low)(x, s)).abs().max())
        for s in (0.01, 1.0)
    ]

    # a number to check by hand: N(0, 4) in one dimension, sigma = 1, x = 5 -> 4/(4+1) * 5 = 4
    scalar = float(
        gd.GaussianDenoiser(torch.zeros(1, dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64))(
            torch.tensor([[5.0]], dtype=torch.float64), 1.0
        )
    )

    # Monte Carlo posterior mean at one query and sigma = 1
    q = x[:1] / 3
    mc = monte_carlo_posterior_mean(mean, cov, q[0], 1.0)
    mc_err = float((mc - ref(q, 1.0)[0]).abs().max())
    return {
        "max_abs_diff": max(diffs),
        "max_abs_diff_rank_deficient": max(diffs_low),
        "scalar_example": scalar,
        "monte_carlo_abs_err": mc_err,
    }


if __name__ == "__main__":
    for k, v in solve().items():
        print(f"{k:30s} {v:.3e}" if isinstance(v, float) else f"{k:30s} {v}")
