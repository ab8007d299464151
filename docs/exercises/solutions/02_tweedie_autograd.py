"""Exercise 02: Tweedie's formula by automatic differentiation.

The score of the noisy law is the gradient of its log density; Tweedie says it equals
``(D(x, sigma) - x) / sigma^2``. Check it with autograd on closed forms whose log density is
exact, and check the second-order identity ``dD/dx = Cov[x0 | x] / sigma^2`` (its trace is the
effective dimension) against the Gaussian closed form.
"""

import torch

import gaussdiff as gd

F64 = torch.float64


def autograd_score(denoiser, x, sigma):
    """grad_x log p_sigma(x) by autograd of ``denoiser.log_density``."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(denoiser.log_density(x, sigma).sum(), x)
    return grad


def tweedie_score(denoiser, x, sigma):
    return (denoiser(x, sigma) - x) / sigma**2


def solve():
    g = torch.Generator().manual_seed(1)
    d = 3
    A = torch.randn(d, d, generator=g, dtype=F64)
    gauss = gd.GaussianDenoiser(torch.randn(d, generator=g, dtype=F64), A @ A.T + 0.2 * torch.eye(d, dtype=F64))
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor([0.3, 0.7], dtype=F64),
        torch.tensor([[2.0, 0.0, 0.0], [-1.0, 1.0, 0.5]], dtype=F64),
        torch.tensor([[0.5, 0.2, 0.1], [0.1, 1.0, 0.3]], dtype=F64),
        cov_type="diag",
    )
    x = 2 * torch.randn(32, d, generator=g, dtype=F64)
    rel = {}
    for name, den in (("gaussian", gauss), ("mixture", mix)):
        errs = []
        for sigma in (0.1, 0.5, 2.0, 10.0):
            a, t = autograd_score(den, x, sigma), tweedie_score(den, x, sigma)
            errs.append(float((a - t).norm() / a.norm()))
        rel[name] = max(errs)

    # second order: the Jacobian of D by autograd, its trace = effective dimension
    sigma = 0.7
    J = gd.denoiser_jacobian(gauss, x[:4], sigma)  # (4, d, d) by autograd
    trace = torch.diagonal(J, dim1=1, dim2=2).sum(1)
    eff = float(gauss.effective_dim(sigma))
    # symmetric 1-d mixture: by symmetry D(0, sigma) = 0 exactly
    sym = gd.GaussianMixtureDenoiser(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.tensor([[-1.0], [1.0]], dtype=F64),
        torch.tensor([0.2, 0.2], dtype=F64),
        cov_type="isotropic",
    )
    return {
        "tweedie_rel_err_gaussian": rel["gaussian"],
        "tweedie_rel_err_mixture": rel["mixture"],
        "jacobian_trace_vs_effective_dim": float((trace - eff).abs().max()),
        "effective_dim": eff,
        "symmetric_mixture_D_at_0": float(sym(torch.zeros(1, 1, dtype=F64), 0.5).abs()),
    }


if __name__ == "__main__":
    for k, v in solve().items():
        print(f"{k:34s} {v:.3e}")
