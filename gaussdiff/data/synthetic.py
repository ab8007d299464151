r"""Synthetic laws with a known population denoiser: a Gaussian with a chosen spectrum, mixtures of
isotropic or low-rank Gaussians, the symmetric two-Gaussian model, the uniform sphere.

Each generator is seeded by an integer (its own ``torch.Generator``; no global generator is
touched) and returns float32 samples ``(n, d)``; all but :func:`sphere_data` also return the
exact denoiser of the law (a :class:`~gaussdiff.GaussianDenoiser` or
:class:`~gaussdiff.GaussianMixtureDenoiser` in float64), which :func:`~gaussdiff.load_dataset`
puts in ``info["truth"]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_int, check_positive
from ..denoisers import GaussianDenoiser, GaussianMixtureDenoiser

__all__ = ["gaussian_data", "gmm_data", "molrg_data", "two_gaussians_data", "sphere_data"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_int(seed, "seed", minimum=None))


def _random_rotation(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


def gaussian_data(n: int, d: int, *, spectrum=None, alpha: float = 1.0, rotate: bool = True, seed: int = 0):
    r"""``n`` samples of ``N(0, C)`` in ``R^d`` with eigenvalues ``spectrum`` (default the power
    law ``l_k = k^{-alpha}``, ``k = 1..d``), in a random orthonormal basis when ``rotate``.

    Returns ``(samples (n, d) float32, truth GaussianDenoiser float64)``."""

    d = check_int(d, "d")
    if spectrum is None:
        if not math.isfinite(float(alpha)):
            raise ValueError(f"alpha: must be finite, got {alpha!r}")
        lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-float(alpha))
    else:
        lam = torch.as_tensor(np.asarray(spectrum, dtype=np.float64))
        if lam.shape != (d,) or bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
            raise ValueError(f"spectrum: expected {d} finite non-negative eigenvalues")
    g = _gen(seed)
    U = _random_rotation(d, g) if rotate else torch.eye(d, dtype=torch.float64)
    truth = GaussianDenoiser(torch.zeros(d, dtype=torch.float64), (U * lam) @ U.T)
    return truth.sample(check_int(n, "n"), generator=g).float(), truth


def gmm_data(n: int, d: int, k: int, *, sep: float = 3.0, std: float = 1.0, seed: int = 0):
    """``n`` samples of an equal-weight mixture of ``k`` isotropic Gaussians ``N(mu_j, std^2 I)``
    with means drawn as ``sep`` times random unit vectors of ``R^d``.

    Returns ``(samples (n, d), component labels (n,), truth GaussianMixtureDenoiser)``."""

    d, k = check_int(d, "d"), check_int(k, "k")
    sep, std = check_positive(sep, "sep", allow_zero=True), check_positive(std, "std", allow_zero=True)
    g = _gen(seed)
    mu = torch.randn(k, d, generator=g, dtype=torch.float64)
    mu = float(sep) * mu / mu.norm(dim=1, keepdim=True)
    truth = GaussianMixtureDenoiser(
        torch.full((k,), 1.0 / k, dtype=torch.float64),
        mu,
        torch.full((k,), float(std) ** 2, dtype=torch.float64),
        cov_type="isotropic",
    )
    x, lab = truth.sample(check_int(n, "n"), generator=g)
    return x.float(), lab, truth


def molrg_data(n: int, d: int, r: int, k: int, *, seed: int = 0):
    """``n`` samples of a mixture of ``k`` low-rank Gaussians (random ``r``-dim subspaces of
    ``R^d``, Wang et al. 2024). Returns ``(samples, labels, truth)``."""

    g = _gen(seed)
    truth = GaussianMixtureDenoiser.random_molrg(check_int(d, "d"), check_int(r, "r"), check_int(k, "k"), generator=g)
    x, lab = truth.sample(check_int(n, "n"), generator=g)
    return x.float(), lab, truth


def two_gaussians_data(n: int, d: int, *, mu: float = 1.0, std: float = 1.0, seed: int = 0):
    r"""The symmetric two-Gaussian model of Biroli et al. (2024): ``x = +-m + std z`` with equal
    weights, ``m = mu * (1, ..., 1)`` (so ``|m|^2 = mu^2 d``) and ``z ~ N(0, I_d)``.

    Returns ``(samples (n, d), sign labels in {0, 1} (n,), truth GaussianMixtureDenoiser)``."""

    d = check_int(d, "d")
    if not math.isfinite(float(mu)):
        raise ValueError(f"mu: must be finite, got {mu!r}")
    check_positive(std, "std", allow_zero=True)
    m = torch.full((d,), float(mu), dtype=torch.float64)
    truth = GaussianMixtureDenoiser(
        torch.tensor([0.5, 0.5], dtype=torch.float64),
        torch.stack([m, -m]),
        torch.full((2,), float(std) ** 2, dtype=torch.float64),
        cov_type="isotropic",
    )
    x, lab = truth.sample(check_int(n, "n"), generator=_gen(seed))
    return x.float(), lab, truth


def sphere_data(n: int, d: int = 2, *, radius: float = 1.0, noise: float = 0.0, seed: int = 0):
    """``n`` points uniform on the sphere of ``radius`` in ``R^d`` (``d = 2``: a circle), plus
    optional isotropic Gaussian ``noise``: ``(n, d)`` float32."""
    d = check_int(d, "d")
    if d < 2:
        raise ValueError(f"d: a sphere needs d >= 2, got {d}")
    g = _gen(seed)
    z = torch.randn(check_int(n, "n"), d, generator=g, dtype=torch.float64)
    x = check_positive(radius, "radius") * z / z.norm(dim=1, keepdim=True)
    if noise:
        x = x + float(check_positive(noise, "noise", allow_zero=True)) * torch.randn(
            x.shape, generator=g, dtype=torch.float64
        )
    return x.float()
