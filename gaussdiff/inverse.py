r"""Linear inverse problems with an exact oracle: operators, exact posteriors, the exact posterior
denoiser, three approximate posterior samplers used in practice, and their measurement against
the exact posterior.

A measurement is :math:`y = A x_0 + \eta`, :math:`\eta \sim N(0, \sigma_y^2 I)`, with
:math:`A` an ``(m, d)`` matrix acting on flattened samples. Because the noisy diffusion state
:math:`\hat x = x_0 + \sigma n` and :math:`y` are conditionally independent given :math:`x_0`,

.. math::  E[x_0 \mid \hat x, y] = \text{the denoiser of the posterior law } p(x_0 \mid y),

so the *posterior denoiser* is a closed-form denoiser whenever the posterior is one of the closed
forms of :mod:`gaussdiff.denoisers` (theory :mod:`theory.inverse`):

(I1) Gaussian prior :math:`N(\mu, \Sigma)`: posterior :math:`N(m_y, C)` with
     :math:`G = A\Sigma A^T + \sigma_y^2 I`, :math:`K = \Sigma A^T G^{-1}`,
     :math:`m_y = \mu + K(y - A\mu)`, :math:`C = \Sigma - K A \Sigma`.

(I2) Posterior denoiser = the stacked linear-Gaussian observation
     :math:`H = [I; A]`, noise :math:`\mathrm{diag}(\sigma^2 I, \sigma_y^2 I)`:
     :math:`D(\hat x, \sigma; y) = m_y + C(C + \sigma^2 I)^{-1}(\hat x - m_y)`.

(I3) Mixture prior :math:`\sum_k \pi_k N(\mu_k, S_k)`: the posterior is the mixture of the
     component posteriors (I1) with weights
     :math:`w_k(y) \propto \pi_k N(y; A\mu_k, A S_k A^T + \sigma_y^2 I)`; its denoiser is (M2) of that
     mixture.

(I4) Empirical prior :math:`\frac1N\sum_i \delta_{x_i}`: posterior weights
     :math:`w_i(y) = \mathrm{softmax}_i(-|y - A x_i|^2 / 2\sigma_y^2)` and
     :math:`D(\hat x, \sigma; y) = \sum_i \mathrm{softmax}_i(\log w_i(y) - |\hat x - x_i|^2/2\sigma^2)\, x_i`.

Sampling the probability-flow ODE of :class:`PosteriorDenoiser` (any sampler of
:mod:`gaussdiff.sampling`) draws from the exact posterior: it is the yardstick against which
:func:`sample_dps`, :func:`sample_pigdm` and :func:`sample_ddrm` are measured
(:func:`measure_posterior_samples`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import as_tensor, check_finite, check_positive, check_sigma_grid
from .denoisers import Denoiser, GaussianDenoiser, GaussianMixtureDenoiser
from .empirical import EmpiricalDenoiser
from .sampling import seeded_noise

__all__ = [
    "LinearOperator", "MatrixOperator", "InpaintOperator", "BlurOperator", "DownsampleOperator",
    "random_projection", "make_operator", "as_operator",
    "gaussian_posterior", "mixture_posterior", "empirical_posterior",
    "PosteriorDenoiser",
    "sample_dps", "sample_pigdm", "sample_ddrm", "run_posterior_sampler", "POSTERIOR_SAMPLERS",
    "measure_posterior_samples", "gaussian_w2",
]

_LOG_2PI = math.log(2 * math.pi)


# =============================================================================================
# Operators
# =============================================================================================

class LinearOperator:
    r"""A linear measurement operator :math:`A: \mathbb R^d \to \mathbb R^m` on flattened samples.

    Subclasses implement ``_forward`` (``(B, d) -> (B, m)``), ``_adjoint`` (``(B, m) -> (B, d)``)
    and ``matrix()``; ``svd()`` defaults to a dense SVD and is overridden where it is cheap.

    ``forward(x)`` / ``A(x)`` accept ``(B, d)`` or ``(B, *event_shape)`` and return ``(B, m)``;
    ``adjoint(y)`` returns ``(B, d)``.
    """

    in_dim: int
    out_dim: int
    dtype: torch.dtype = torch.float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._flat(x, "x")
        return self._forward(x)

    __call__ = forward

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[1] != self.out_dim:
            raise ValueError(f"y: expected shape (B, {self.out_dim}) for this operator, got "
                             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        return self._adjoint(y)

    def _flat(self, x, name):
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError(f"{name}: expected a (B, {self.in_dim}) or (B, *event_shape) tensor")
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"{name}: has {x.shape[1]} entries per sample, the operator expects {self.in_dim}")
        return x

    def matrix(self, *, dtype=torch.float64) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def svd(self):
        r"""``(U (m, r), s (r,), V (d, r))`` with :math:`A = U\,\mathrm{diag}(s)\,V^T`, ``s > 0``
        decreasing (``r`` the numerical rank), in float64. Dense here (``O(m d min(m, d))``)."""
        U, s, Vh = torch.linalg.svd(self.matrix(dtype=torch.float64), full_matrices=False)
        keep = s > s.max() * max(self.out_dim, self.in_dim) * torch.finfo(torch.float64).eps
        return U[:, keep], s[keep], Vh[keep].T

    def __repr__(self):
        return f"{type(self).__name__}(m={self.out_dim}, d={self.in_dim})"


class MatrixOperator(LinearOperator):
    """A dense ``(m, d)`` matrix."""

    def __init__(self, A):
        A = check_finite(as_tensor(A, "A"), "A")
        if A.ndim != 2 or A.shape[0] < 1:
            raise ValueError(f"A: expected an (m, d) matrix, got shape {tuple(A.shape)}")
        self.A = A
        self.out_dim, self.in_dim = A.shape
        self.dtype = A.dtype

    def _forward(self, x):
        return x @ self.A.to(dtype=x.dtype, device=x.device).T

    def _adjoint(self, y):
        return y @ self.A.to(dtype=y.dtype, device=y.device)

    def matrix(self, *, dtype=torch.float64):
        return self.A.to(dtype)


class InpaintOperator(LinearOperator):
    """Keep the entries where ``mask`` is True (rows of the identity): ``m = mask.sum()``.

    SVD: ``U = I_m``, ``s = 1``, ``V`` = the kept columns of ``I_d``."""

    def __init__(self, mask):
        mask = torch.as_tensor(mask).reshape(-1)
        if mask.dtype != torch.bool:
            raise ValueError("mask: expected a boolean tensor")
        if not bool(mask.any()):
            raise ValueError("mask: keeps no entry (m = 0)")
        self.mask = mask
        self.index = torch.nonzero(mask).reshape(-1)
        self.in_dim, self.out_dim = mask.numel(), int(self.index.numel())

    def _forward(self, x):
        return x[:, self.index.to(x.device)]

    def _adjoint(self, y):
        out = y.new_zeros(y.shape[0], self.in_dim)
        out[:, self.index.to(y.device)] = y
        return out

    def matrix(self, *, dtype=torch.float64):
        return torch.eye(self.in_dim, dtype=dtype)[self.index]

    def svd(self):
        return (torch.eye(self.out_dim, dtype=torch.float64), torch.ones(self.out_dim, dtype=torch.float64),
                torch.eye(self.in_dim, dtype=torch.float64)[:, self.index])


def _event_image(event_shape):
    shape = tuple(int(v) for v in event_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"event_shape: blur and down-sampling need images (C, H, W), got {shape}")
    return shape


class BlurOperator(LinearOperator):
    r"""Circular (periodic) Gaussian blur of standard deviation ``std`` pixels, per channel.

    The kernel :math:`g(u, v) \propto e^{-(u^2+v^2)/2\,std^2}`, :math:`|u|, |v| \le \lceil 3\,std\rceil`,
    sums to 1 and is wrapped onto the ``H x W`` torus, so ``A`` is a symmetric block-circulant
    ``(d, d)`` matrix (``A^T = A``), applied by FFT."""

    def __init__(self, event_shape, std: float):
        self.event_shape = _event_image(event_shape)
        self.std = check_positive(std, "std")
        C, H, W = self.event_shape
        self.in_dim = self.out_dim = C * H * W
        r = int(math.ceil(3 * self.std))
        u = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-u ** 2 / (2 * self.std ** 2))
        g2 = g[:, None] * g[None, :]
        g2 = g2 / g2.sum()
        k = torch.zeros(H, W, dtype=torch.float64)
        for i, du in enumerate(range(-r, r + 1)):
            for j, dv in enumerate(range(-r, r + 1)):
                k[du % H, dv % W] += g2[i, j]
        self.kernel = k                                              # periodic kernel on the torus
        self._khat = torch.fft.fft2(k).real                          # real: the kernel is symmetric

    def _apply(self, x):
        C, H, W = self.event_shape
        img = x.reshape(x.shape[0], C, H, W)
        out = torch.fft.ifft2(torch.fft.fft2(img.to(torch.float64)) * self._khat.to(x.device)).real
        return out.reshape(x.shape[0], -1).to(x.dtype)

    _forward = _apply
    _adjoint = _apply

    def matrix(self, *, dtype=torch.float64):
        C, H, W = self.event_shape
        i = torch.arange(H)
        j = torch.arange(W)
        # A[(c, i, j), (c, k, l)] = kernel[(i - k) mod H, (j - l) mod W]
        blk = self.kernel[(i[:, None, None, None] - i[None, None, :, None]) % H,
                          (j[None, :, None, None] - j[None, None, None, :]) % W].reshape(H * W, H * W)
        return torch.block_diag(*([blk] * C)).to(dtype)


class DownsampleOperator(LinearOperator):
    r"""Average over non-overlapping ``factor x factor`` blocks, per channel:
    ``(C, H, W) -> (C, H/f, W/f)``. Its rows are orthogonal with :math:`AA^T = I/f^2`, so the SVD
    is ``U = I``, ``s = 1/f``, ``V = f A^T``."""

    def __init__(self, event_shape, factor: int):
        self.event_shape = _event_image(event_shape)
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"factor: must be a positive integer, got {factor!r}")
        self.factor = f = int(factor)
        C, H, W = self.event_shape
        if H % f or W % f:
            raise ValueError(f"factor: {f} does not divide the image size {H}x{W}")
        self.in_dim, self.out_dim = C * H * W, C * (H // f) * (W // f)

    def _forward(self, x):
        C, H, W = self.event_shape
        f = self.factor
        return x.reshape(-1, C, H // f, f, W // f, f).mean((3, 5)).reshape(x.shape[0], -1)

    def _adjoint(self, y):
        C, H, W = self.event_shape
        f = self.factor
        z = y.reshape(-1, C, H // f, 1, W // f, 1) / (f * f)
        return z.expand(-1, C, H // f, f, W // f, f).reshape(y.shape[0], -1)

    def matrix(self, *, dtype=torch.float64):
        C, H, W = self.event_shape
        f = self.factor
        A = torch.zeros(self.out_dim, C, H, W, dtype=dtype)
        r = 0
        for c in range(C):
            for a in range(H // f):
                for b in range(W // f):
                    A[r, c, a * f:(a + 1) * f, b * f:(b + 1) * f] = 1.0 / (f * f)
                    r += 1
        return A.reshape(self.out_dim, -1)

    def svd(self):
        f = self.factor
        return (torch.eye(self.out_dim, dtype=torch.float64), torch.full((self.out_dim,), 1.0 / f, dtype=torch.float64),
                f * self.matrix().T)


def random_projection(d: int, m: int, *, generator: torch.Generator | None = None,
                      dtype=torch.float64) -> MatrixOperator:
    """A Gaussian random projection: entries ``N(0, 1/m)``, shape ``(m, d)``."""
    for name, v in (("d", d), ("m", m)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    A = torch.randn(int(m), int(d), generator=generator, dtype=torch.float64) / math.sqrt(m)
    return MatrixOperator(A.to(dtype))


def make_operator(spec: str, event_shape, *, seed: int = 0) -> LinearOperator:
    """An operator from a spec: ``inpaint:P`` (keep a random share ``P`` of the pixels, the same
    pixels in every channel), ``blur:STD``, ``down:F``, ``project:M`` (``M`` random Gaussian
    measurements) or ``identity``. Randomness comes from ``seed``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"operator: expected a spec such as inpaint:0.5, blur:2, down:2, project:16, got {spec!r}")
    shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(v) for v in event_shape)
    d = math.prod(shape)
    name, _, arg = spec.strip().partition(":")
    g = torch.Generator().manual_seed(int(seed))
    try:
        if name == "identity":
            return MatrixOperator(torch.eye(d, dtype=torch.float64))
        if name == "inpaint":
            p = float(arg or 0.5)
            if not 0 < p <= 1:
                raise ValueError(f"operator: inpaint share must be in (0, 1], got {p}")
            pix = shape[-2:] if len(shape) >= 2 else shape
            npix = math.prod(pix)
            keep = torch.zeros(npix, dtype=torch.bool)
            keep[torch.randperm(npix, generator=g)[:max(1, round(p * npix))]] = True
            mask = keep.reshape(pix).expand(shape) if len(shape) >= 2 else keep
            return InpaintOperator(mask)
        if name == "blur":
            return BlurOperator(shape, float(arg or 1.0))
        if name == "down":
            return DownsampleOperator(shape, int(arg or 2))
        if name in ("project", "proj"):
            return random_projection(d, int(arg or max(1, d // 4)), generator=g)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(("operator", "factor", "std", "event_shape", "mask", "m:", "d:")):
            raise
        raise ValueError(f"operator: cannot parse {spec!r} ({exc})") from exc
    raise ValueError(f"operator: unknown {name!r}; expected inpaint:P, blur:STD, down:F, project:M or identity")


def as_operator(A, d: int | None = None) -> LinearOperator:
    """``A`` as a :class:`LinearOperator` (a dense ``(m, d)`` tensor/array is wrapped); checks
    that it acts on ``d`` entries."""
    op = A if isinstance(A, LinearOperator) else MatrixOperator(A)
    if d is not None and op.in_dim != d:
        raise ValueError(f"A: acts on {op.in_dim} entries but the prior has dimension {d}")
    return op


# =============================================================================================
# Exact posteriors
# =============================================================================================

def _check_y(y, op: LinearOperator, *, dtype, device) -> torch.Tensor:
    y = check_finite(as_tensor(y, "y", dtype=dtype, device=device), "y")
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2 or y.shape[1] != op.out_dim:
        raise ValueError(f"y: expected shape (B, {op.out_dim}) to match A ({op.out_dim} x {op.in_dim}), "
                         f"got {tuple(y.shape)}")
    return y


def _psd_inverse(G: torch.Tensor, name: str, *, allow_singular: bool):
    """``(G^+, logdet)`` of symmetric PSD matrices ``(..., m, m)`` by eigendecomposition."""
    e, Q = torch.linalg.eigh(0.5 * (G + G.transpose(-1, -2)))
    tol = e.shape[-1] * torch.finfo(e.dtype).eps * e.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    pos = e > tol
    if not allow_singular and not bool(pos.all()):
        raise ValueError(f"{name}: A S A^T + sigma_y^2 I is singular (noise-free measurement of a "
                         "direction the prior does not vary in); use sigma_y > 0")
    inv_e = torch.where(pos, 1.0 / torch.where(pos, e, torch.ones_like(e)), torch.zeros_like(e))
    logdet = torch.where(pos, torch.log(torch.where(pos, e, torch.ones_like(e))), torch.zeros_like(e)).sum(-1)
    return (Q * inv_e[..., None, :]) @ Q.transpose(-1, -2), logdet


def _linear_gaussian_update(mu, S, Am, y, sigma_y, *, allow_singular):
    r"""(I1) for ``K`` Gaussians at once, float64: ``mu (K, d)``, ``S (K, d, d)``, ``Am (m, d)``,
    ``y (B, m)``. Returns posterior means ``(B, K, d)``, covariances ``(K, d, d)`` (Joseph form,
    symmetric PSD by construction) and ``log N(y; A mu_k, A S_k A^T + sigma_y^2 I)`` ``(B, K)``."""
    K, d = mu.shape
    m = Am.shape[0]
    eye_m = torch.eye(m, dtype=mu.dtype, device=mu.device)
    AS = Am @ S                                                        # (K, m, d)
    G = AS @ Am.T + sigma_y ** 2 * eye_m                               # (K, m, m)
    Ginv, logdet = _psd_inverse(G, "sigma_y", allow_singular=allow_singular)
    gain = AS.transpose(1, 2) @ Ginv                                   # (K, d, m) = S A^T G^-1
    resid = y[:, None, :] - (mu @ Am.T)[None]                          # (B, K, m)
    means = mu[None] + torch.einsum("kdm,bkm->bkd", gain, resid)
    IKA = torch.eye(d, dtype=mu.dtype, device=mu.device) - gain @ Am   # (K, d, d)
    C = IKA @ S @ IKA.transpose(1, 2) + sigma_y ** 2 * gain @ gain.transpose(1, 2)
    C = 0.5 * (C + C.transpose(1, 2))
    quad = torch.einsum("bkm,kmn,bkn->bk", resid, Ginv, resid)
    loglik = -0.5 * (quad + logdet[None] + m * _LOG_2PI)
    return means, C, loglik


def _sigma_y(sigma_y) -> float:
    return check_positive(sigma_y, "sigma_y", allow_zero=True)


def gaussian_posterior(mean, cov, A, y, sigma_y):
    r"""(I1) Posterior of :math:`x_0 \sim N(\mu, \Sigma)` given :math:`y = A x_0 + \eta`,
    :math:`\eta \sim N(0, \sigma_y^2 I)`:

    :math:`m_y = \mu + \Sigma A^T (A\Sigma A^T + \sigma_y^2 I)^{-1}(y - A\mu)`,
    :math:`C = \Sigma - \Sigma A^T (A\Sigma A^T + \sigma_y^2 I)^{-1} A\Sigma`
    (computed in the Joseph form, symmetric PSD; a pseudo-inverse when ``sigma_y = 0`` makes
    :math:`A\Sigma A^T` singular).

    Parameters
    ----------
    mean : (d,) or (*event_shape).  cov : (d, d).
    A : (m, d) tensor or a :class:`LinearOperator`.  y : (B, m) (or (m,)).
    sigma_y : measurement noise standard deviation, >= 0.

    Returns
    -------
    means : (B, d).  cov : (d, d).  In the dtype of ``mean`` (computed in float64).
    """
    mean = check_finite(as_tensor(mean, "mean"), "mean")
    dt, dev = mean.dtype, mean.device
    mu = mean.reshape(1, -1).to(torch.float64)
    d = mu.shape[1]
    S = check_finite(as_tensor(cov, "cov", dtype=torch.float64, device=dev), "cov")
    if S.shape != (d, d):
        raise ValueError(f"cov: expected shape ({d}, {d}) to match mean, got {tuple(S.shape)}")
    op = as_operator(A, d)
    sy = _sigma_y(sigma_y)
    yy = _check_y(y, op, dtype=torch.float64, device=dev)
    means, C, _ = _linear_gaussian_update(mu, S[None], op.matrix().to(dev), yy, sy, allow_singular=True)
    return means[:, 0].to(dt), C[0].to(dt)


def _mixture_covs(prior: GaussianMixtureDenoiser) -> torch.Tensor:
    """Dense ``(K, d, d)`` float64 component covariances of a mixture (any ``cov_type``)."""
    if prior._U is None:
        return torch.diag_embed(prior._var.to(torch.float64))
    U, l = prior._U.to(torch.float64), prior._l.to(torch.float64)
    return (U * l[:, None, :]) @ U.transpose(1, 2)


def mixture_posterior(prior: GaussianMixtureDenoiser, A, y, sigma_y):
    r"""(I3) The posterior mixture of a :class:`GaussianMixtureDenoiser` prior: component
    posteriors (I1) with weights :math:`w_k(y) \propto \pi_k N(y; A\mu_k, AS_kA^T + \sigma_y^2 I)`.

    Returns
    -------
    weights : (B, K).  means : (B, K, d).  covs : (K, d, d).  float64.
    """
    if not isinstance(prior, GaussianMixtureDenoiser):
        raise ValueError(f"prior: expected a GaussianMixtureDenoiser, got {type(prior).__name__}")
    op = as_operator(A, prior.dim)
    sy = _sigma_y(sigma_y)
    yy = _check_y(y, op, dtype=torch.float64, device=prior.device)
    mu = prior._mu.to(torch.float64)
    means, C, loglik = _linear_gaussian_update(mu, _mixture_covs(prior), op.matrix().to(prior.device), yy, sy,
                                               allow_singular=False)
    logw = prior._log_w.to(torch.float64)[None] + loglik
    return torch.softmax(logw, dim=1), means, C


def _empirical_points(prior) -> torch.Tensor:
    if isinstance(prior, EmpiricalDenoiser):
        data = prior.data
    else:
        data = prior
    data = as_tensor(data, "prior")
    if data.ndim < 2:
        raise ValueError("prior: expected an EmpiricalDenoiser or an (N, *event_shape) data set")
    return data.reshape(data.shape[0], -1).to(torch.float64)


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|^2`` (float64, clamped at 0): ``(len(a), len(b))``."""
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
    return d2.clamp_min(0)


def empirical_posterior(prior, A, y, sigma_y) -> torch.Tensor:
    r"""(I4) Posterior weights of the empirical prior over its training points:
    :math:`w_i(y) = \mathrm{softmax}_i(-|y - A x_i|^2 / 2\sigma_y^2)`, ``(B, N)`` float64.

    ``prior`` is an :class:`~gaussdiff.EmpiricalDenoiser` or the ``(N, *event_shape)`` data.
    ``sigma_y`` must be > 0 (a noise-free measurement of a finite set has a degenerate
    likelihood)."""
    X = _empirical_points(prior)
    op = as_operator(A, X.shape[1])
    sy = _sigma_y(sigma_y)
    if sy == 0:
        raise ValueError("sigma_y: must be > 0 for an empirical prior (the noise-free likelihood of a "
                         "finite set of points is degenerate)")
    yy = _check_y(y, op, dtype=torch.float64, device=X.device)
    AX = op.forward(X)
    return torch.softmax(-_sqdist(yy, AX) / (2 * sy ** 2), dim=1)


def _eigh_clamped(C: torch.Tensor):
    l, U = torch.linalg.eigh(C)
    scale = l.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(l.dtype).tiny)
    l = torch.where(l < l.shape[-1] * torch.finfo(l.dtype).eps * scale, torch.zeros_like(l), l)
    return l, U


class PosteriorDenoiser(Denoiser):
    r"""The exact posterior denoiser :math:`D(\hat x, \sigma; y) = E[x_0 \mid x_0 + \sigma n = \hat x,\, y]`.

    For a :class:`~gaussdiff.GaussianDenoiser` prior (I1, I2), a
    :class:`~gaussdiff.GaussianMixtureDenoiser` prior (I3) or an
    :class:`~gaussdiff.EmpiricalDenoiser` prior (I4); see the module docstring. Row ``b`` of a
    query batch is denoised given measurement ``y[b]`` (a single row of ``y`` serves every
    query). Sampling its probability-flow ODE draws exactly from the posterior.

    Parameters
    ----------
    prior : GaussianDenoiser, GaussianMixtureDenoiser or EmpiricalDenoiser.
    A : (m, d) tensor or :class:`LinearOperator`.
    y : (B, m) measurements.
    sigma_y : measurement noise, >= 0 (> 0 for the empirical prior).

    Attributes
    ----------
    kind : ``"gaussian"``, ``"mixture"`` or ``"empirical"``.
    weights : posterior weights, ``(B, K)`` components or ``(B, N)`` training points (None for
        a Gaussian prior).
    """

    def __init__(self, prior, A, y, sigma_y):
        if not isinstance(prior, (GaussianDenoiser, GaussianMixtureDenoiser, EmpiricalDenoiser)):
            raise ValueError(f"prior: expected a GaussianDenoiser, GaussianMixtureDenoiser or "
                             f"EmpiricalDenoiser, got {type(prior).__name__}")
        self.prior = prior
        self.event_shape, self.dtype, self.device = prior.event_shape, prior.dtype, prior.device
        d = prior.dim
        self.operator = as_operator(A, d)
        self.sigma_y = _sigma_y(sigma_y)
        self.y = _check_y(y, self.operator, dtype=torch.float64, device=self.device)
        self.weights = None
        if isinstance(prior, GaussianDenoiser):
            self.kind = "gaussian"
            means, C = gaussian_posterior(prior.mean.to(torch.float64), prior.cov.to(torch.float64),
                                          self.operator, self.y, self.sigma_y)
            self._means, self._C = means[:, None], C[None]            # (B, 1, d), (1, d, d)
            self._logw = torch.zeros(means.shape[0], 1, dtype=torch.float64, device=self.device)
        elif isinstance(prior, GaussianMixtureDenoiser):
            self.kind = "mixture"
            self.weights, self._means, self._C = mixture_posterior(prior, self.operator, self.y, self.sigma_y)
            self._logw = torch.log(self.weights)
        else:
            self.kind = "empirical"
            self._X = _empirical_points(prior).to(self.device)
            self.weights = empirical_posterior(self._X, self.operator, self.y, self.sigma_y)
            self._logw = torch.log(self.weights)
        if self.kind != "empirical":
            self._l, self._U = _eigh_clamped(self._C)                  # (K, d), (K, d, d)

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def _rows(self, n: int, t: torch.Tensor) -> torch.Tensor:
        """Per-measurement tensor ``(B, ...)`` matched to a query batch of ``n`` rows."""
        if t.shape[0] == n:
            return t
        if t.shape[0] == 1:
            return t.expand(n, *t.shape[1:])
        raise ValueError(f"x: has {n} rows but there are {t.shape[0]} measurements y; give one query "
                         "per measurement (or a single measurement)")

    # -- the closed forms -------------------------------------------------------------------
    def _terms(self, x, s, want_score=False):
        """Gaussian/mixture: component logits (B, K), component denoisers (B, K, d) and, if asked,
        component scores (B, K, d) (one plain matmul pair per component)."""
        n = x.shape[0]
        means = self._rows(n, self._means)                             # (B, K, d)
        logw = self._rows(n, self._logw)
        s2 = (s ** 2)[:, None]
        logits, dens, scores = [], [], []
        for k in range(means.shape[1]):
            m, U, l = means[:, k], self._U[k], self._l[k]
            coef = (x - m) @ U                                         # (B, d)
            var = l[None] + s2
            logits.append(logw[:, k] - 0.5 * ((coef ** 2 / var).sum(1) + torch.log(var).sum(1)))
            dens.append(m + (coef * (l[None] / var)) @ U.T)
            if want_score:
                scores.append(-(coef / var) @ U.T)
        return (torch.stack(logits, 1), torch.stack(dens, 1),
                torch.stack(scores, 1) if want_score else None)

    def _emp_logits(self, x, s):
        return self._rows(x.shape[0], self._logw) - _sqdist(x, self._X) / (2 * s[:, None] ** 2)

    def _denoise(self, x, s):
        x64, s64 = x.to(torch.float64), s.to(torch.float64)
        if self.kind == "empirical":
            out = torch.softmax(self._emp_logits(x64, s64), 1) @ self._X
        else:
            logit, den, _ = self._terms(x64, s64)
            out = torch.einsum("bk,bkd->bd", torch.softmax(logit, 1), den)
        return out.to(self.dtype)

    def _score(self, x, s):
        if self.kind == "empirical":
            return super()._score(x, s)
        logit, _, score = self._terms(x.to(torch.float64), s.to(torch.float64), want_score=True)
        return torch.einsum("bk,bkd->bd", torch.softmax(logit, 1), score).to(self.dtype)

    def _log_density(self, x, s):
        x64, s64 = x.to(torch.float64), s.to(torch.float64)
        d = x.shape[1]
        if self.kind == "empirical":
            out = torch.logsumexp(self._emp_logits(x64, s64), 1) - 0.5 * d * (_LOG_2PI + 2 * torch.log(s64))
        else:
            logit, _, _ = self._terms(x64, s64)
            out = torch.logsumexp(logit, 1) - 0.5 * d * _LOG_2PI
        return out.to(self.dtype)

    # -- the posterior law itself -----------------------------------------------------------
    def posterior_mean(self) -> torch.Tensor:
        """Exact :math:`E[x_0 \\mid y]`: ``(B, d)`` float64."""
        if self.kind == "empirical":
            return self.weights @ self._X
        return torch.einsum("bk,bkd->bd", torch.exp(self._logw), self._means)

    def posterior_cov(self) -> torch.Tensor:
        """Exact :math:`\\mathrm{Cov}[x_0 \\mid y]`: ``(B, d, d)`` float64 (for a Gaussian prior
        every row has the same covariance :math:`C` of (I1))."""
        mean = self.posterior_mean()
        if self.kind == "empirical":
            diff = self._X[None] - mean[:, None]
            return torch.einsum("bn,bnd,bne->bde", self.weights, diff, diff)
        w = torch.exp(self._logw)
        diff = self._means - mean[:, None]
        return torch.einsum("bk,kde->bde", w, self._C) + torch.einsum("bk,bkd,bke->bde", w, diff, diff)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One exact posterior sample per measurement: ``(B, *event_shape)``."""
        B = self.batch
        if self.kind == "empirical":
            idx = torch.multinomial(self.weights.cpu(), 1, generator=generator)[:, 0].to(self.device)
            out = self._X[idx]
        else:
            k = torch.multinomial(torch.exp(self._logw).cpu(), 1, generator=generator)[:, 0].to(self.device)
            z = torch.randn(B, self.dim, generator=generator, dtype=torch.float64).to(self.device)
            out = self._means[torch.arange(B), k] + torch.einsum("bde,be->bd", self._U[k], z * self._l[k].sqrt())
        return out.to(self.dtype).reshape(B, *self.event_shape)

    def marginal_intervals(self, level: float = 0.9):
        r"""Central credible intervals of every coordinate's exact posterior marginal, at
        ``level``: ``(low, high)``, each ``(B, d)`` float64. Gaussian: normal quantiles; mixture:
        the mixture CDF inverted by bisection (to 1e-12 relative); not for the empirical prior
        (use :meth:`credible_set`)."""
        if self.kind == "empirical":
            raise ValueError("level: marginal intervals of a discrete (empirical) posterior are not "
                             "defined; use credible_set")
        level = check_positive(level, "level")
        if level >= 1:
            raise ValueError(f"level: must be in (0, 1), got {level}")
        w = torch.exp(self._logw)                                       # (B, K)
        mu = self._means                                                # (B, K, d)
        sd = torch.sqrt(torch.diagonal(self._C, dim1=1, dim2=2))[None].expand_as(mu)
        a = (1 - level) / 2
        if self.kind == "gaussian":
            z = float(torch.special.ndtri(torch.tensor(1 - a, dtype=torch.float64)))
            return mu[:, 0] - z * sd[:, 0], mu[:, 0] + z * sd[:, 0]

        def cdf(t):
            zz = (t[:, None] - mu) / sd.clamp_min(1e-300)
            zz = torch.where(sd > 0, zz, torch.where(t[:, None] >= mu, torch.inf, -torch.inf))
            return torch.einsum("bk,bkd->bd", w, torch.special.ndtr(zz))

        out = []
        for q in (a, 1 - a):
            lo = (mu - 9 * sd).amin(1) - 1e-12
            hi = (mu + 9 * sd).amax(1) + 1e-12
            for _ in range(80):
                mid = 0.5 * (lo + hi)
                below = cdf(mid) < q
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            out.append(0.5 * (lo + hi))
        return out[0], out[1]

    def credible_set(self, level: float = 0.9) -> torch.Tensor:
        """Empirical prior: the smallest set of training points whose posterior mass is at least
        ``level``, as a ``(B, N)`` boolean mask."""
        if self.kind != "empirical":
            raise ValueError("level: credible_set is for the empirical prior; use marginal_intervals")
        w, order = torch.sort(self.weights, dim=1, descending=True)
        before = torch.cumsum(w, 1) - w
        keep_sorted = before < level
        mask = torch.zeros_like(keep_sorted)
        mask.scatter_(1, order, keep_sorted)
        return mask

    def flow(self, x: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
        """(G4) applied to the Gaussian posterior ``N(m_y, C)``: the exact probability-flow map of
        this denoiser (Gaussian prior only)."""
        if self.kind != "gaussian":
            raise ValueError("prior: the exact flow map is available for a Gaussian prior only; "
                             "integrate the ODE with sample_heun or solve_flow")
        xf, s0 = self._prepare(x, sigma_from)
        s1 = torch.as_tensor(check_positive(sigma_to, "sigma_to", allow_zero=True), dtype=torch.float64)
        m = self._rows(xf.shape[0], self._means[:, 0])
        l, U = self._l[0], self._U[0]
        ratio = torch.sqrt((l[None] + s1 ** 2) / (l[None] + s0.to(torch.float64)[:, None] ** 2))
        out = m + (((xf.to(torch.float64) - m) @ U) * ratio) @ U.T
        return out.to(self.dtype).reshape(x.shape)


# =============================================================================================
# Approximate posterior samplers used in practice
# =============================================================================================

def _setup(denoiser, x, sigmas, A, y, sigma_y):
    if not callable(denoiser):
        raise ValueError("denoiser: expected a callable D(x, sigma)")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError("x: expected a floating (B, *event_shape) tensor")
    sigmas = check_sigma_grid(sigmas, "sigmas")
    d = math.prod(x.shape[1:])
    op = as_operator(A, d)
    sy = _sigma_y(sigma_y)
    yy = _check_y(y, op, dtype=x.dtype, device=x.device)
    if yy.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"y: has {yy.shape[0]} rows but x has {x.shape[0]}; give one measurement per "
                         "sample (or a single one)")
    return [float(v) for v in sigmas], op, sy, yy.expand(x.shape[0], -1)


def _denoise_vjp(denoiser, x, sigma: float, v_of: Callable):
    r"""``(D(x, sigma), J^T v)`` with ``J = dD/dx`` and ``v = v_of(D)`` (flat ``(B, d)``).

    Uses autograd where the denoiser is differentiable; for an
    :class:`~gaussdiff.EmpiricalDenoiser` (not differentiable) the exact Jacobian (E3)
    :math:`J = \mathrm{Cov}[x_0 \mid x]/\sigma^2` (symmetric) from its posterior weights."""
    B = x.shape[0]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        den = denoiser(xr, sigma)
        if den.requires_grad:
            v = v_of(den.detach().reshape(B, -1))
            (g,) = torch.autograd.grad(den, xr, v.reshape(den.shape))
            return den.detach(), g.reshape(B, -1)
    if isinstance(denoiser, EmpiricalDenoiser):
        X = denoiser.data.reshape(denoiser.data.shape[0], -1).to(torch.float64)
        W = torch.softmax(-_sqdist(x.reshape(B, -1).to(torch.float64), X) / (2 * sigma ** 2), 1)  # (E2) weights
        D = W @ X
        v = v_of(D.to(x.dtype)).to(torch.float64)
        Jv = ((W * (v @ X.T)) @ X - D * (D * v).sum(1, keepdim=True)) / sigma ** 2
        return D.to(x.dtype).reshape(x.shape), Jv.to(x.dtype)
    raise ValueError(f"denoiser: {type(denoiser).__name__} is not differentiable by autograd; DPS and "
                     "PiGDM need its vector-Jacobian product")


def _ancestral(x, den, s_cur, s_next, eta, noise):
    r"""DDIM/DDPM step on the unscaled state (k-diffusion's ancestral step, eta = 1 is the DDPM
    posterior :math:`q(x_{i+1} \mid x_i, \hat x_0)`, eta = 0 is DDIM = Euler)."""
    s_up = min(s_next, eta * math.sqrt(max(0.0, s_next ** 2 * (s_cur ** 2 - s_next ** 2) / s_cur ** 2)))
    s_down = math.sqrt(max(0.0, s_next ** 2 - s_up ** 2))
    out = den + (s_down / s_cur) * (x - den)
    if s_up > 0:
        out = out + s_up * noise()
    return out


def sample_dps(denoiser: Callable, x: torch.Tensor, sigmas, *, A, y, sigma_y: float, zeta: float = 1.0,
               seed: int = 0, start: int = 0, callback: Callable | None = None) -> torch.Tensor:
    r"""Diffusion posterior sampling (Chung, Kim, McCann, Klasky & Ye, ICLR 2023), Algorithm 1
    ("DPS - Gaussian"), with the step size of the authors' code, on any sigma grid and any
    denoiser.

    DPS approximates the posterior score by
    :math:`\nabla \log p(x_i \mid y) \approx s(x_i) + \nabla_{x_i} \log p(y \mid \hat x_0(x_i))`,
    the Gaussian likelihood taken at the posterior mean :math:`\hat x_0 = D` (the paper's
    eq. (16)); Algorithm 1 replaces the likelihood's weight by a step size. Each step is the
    DDPM ancestral step of the unconditional model (Algorithm 1, line 6; here the k-diffusion
    ancestral step with eta = 1, the same DDPM posterior on a sigma grid) followed by the
    gradient step (Algorithm 1, line 7), in the form of the authors' code

    .. math:: x_{i-1} = x'_{i-1} - \zeta\, \nabla_{x_i} \| y - A \hat x_0(x_i) \|_2

    (DPS2022/diffusion-posterior-sampling, ``guided_diffusion/condition_methods.py``, class
    ``PosteriorSampling``: ``norm = torch.linalg.norm(difference)``, ``norm_grad =
    torch.autograd.grad(outputs=norm, inputs=x_prev)[0]``, ``x_t -= norm_grad * self.scale``):
    ``zeta`` is their ``scale``, the *unsquared* residual norm is differentiated. Conversion:
    Algorithm 1 as written, :math:`\zeta_i \nabla \|r\|_2^2` with :math:`\zeta_i = \zeta'/\|r\|`
    (the step-size rule of the paper's Appendix C.2), is :math:`2\zeta' \nabla\|r\|`, i.e. this
    step with ``zeta = 2 zeta'``. The authors' configs use ``scale`` 0.5 for inpainting
    (``configs/inpainting_config.yaml``) and 0.3 for super-resolution and Gaussian deblurring
    (``configs/super_resolution_config.yaml``, ``configs/gaussian_deblur_config.yaml``); the
    default ``zeta = 1.0`` is their code's default (``kwargs.get('scale', 1.0)``): pass the
    config value of the task at hand.

    The norm is taken per sample (the authors' code takes it over the batch tensor and runs
    one image at a time, ``batch_size=1`` in ``sample_condition.py``). The gradient is taken in
    the VP-scaled variable :math:`x_{VP} = \hat x/\sqrt{1+\sigma^2}` of the paper and translated
    to the unscaled state, i.e. multiplied by :math:`\sqrt{(1+\sigma_i^2)(1+\sigma_{i+1}^2)}`.
    The likelihood weight is the heuristic ``zeta``, not :math:`1/2\sigma_y^2`: ``sigma_y`` only
    enters through ``y``. One denoiser evaluation and one vector-Jacobian product per step;
    stochastic (fresh noise of step ``i`` = ``seeded_noise`` stream ``i + 1``).

    Parameters
    ----------
    denoiser : ``D(x, sigma)`` of the prior, differentiable by autograd (or an EmpiricalDenoiser).
    x : (B, *event_shape) start, ``sigmas[0] * noise``.
    sigmas : decreasing grid ending in 0.
    A, y, sigma_y : operator (or (m, d) tensor), (B, m) measurements, noise level.
    zeta : the authors' ``scale`` (step on :math:`\nabla\|r\|`; ``2 zeta'`` of the paper's
        Appendix C.2 rule), default 1.0.

    Returns
    -------
    (B, *event_shape) samples.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    check_positive(zeta, "zeta", allow_zero=True)
    B = x.shape[0]
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):

        def v_of(D):
            r = yy - op.forward(D)
            norm = r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny)
            return -op.adjoint(r) / norm                                # grad of |y - A D| wrt D

        den, grad = _denoise_vjp(denoiser, x, s_cur, v_of)
        noise = lambda: seeded_noise(B, x.shape[1:], seed=seed, start=start, step=i + 1,  # noqa: E731
                                     dtype=x.dtype, device=x.device)
        x_next = _ancestral(x, den, s_cur, s_next, 1.0, noise)
        scale = math.sqrt((1 + s_cur ** 2) * (1 + s_next ** 2))        # VP variable -> unscaled state
        x_next = x_next - (zeta * scale * grad).reshape(x.shape)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den})
        x = x_next
    return x


def sample_pigdm(denoiser: Callable, x: torch.Tensor, sigmas, *, A, y, sigma_y: float, data_var: float = 1.0,
                 eta: float = 0.0, seed: int = 0, start: int = 0, callback: Callable | None = None) -> torch.Tensor:
    r"""Pseudoinverse-guided diffusion (PiGDM; Song, Vahdat, Mardani & Kautz, ICLR 2023), any
    sigma grid and any denoiser.

    PiGDM approximates :math:`p(x_0 \mid x_t) \approx N(\hat x_0, r_t^2 I)`, which gives
    :math:`p_t(y \mid x_t) \approx N(A\hat x_0, r_t^2 AA^T + \sigma_y^2 I)` and the guidance (the
    paper's form for noisy linear measurements)

    .. math:: g = \Big(\big(y - A\hat x_0\big)^T \big(r_t^2 AA^T + \sigma_y^2 I\big)^{-1} A
              \frac{\partial \hat x_0}{\partial x_t}\Big)^T
              \approx \nabla_{x_t} \log p_t(y \mid x_t),

    with :math:`r_t^2 = \sigma^2 v / (v + \sigma^2)`, ``v = data_var`` (the paper's
    :math:`r_t^2 = \sigma_t^2/(1+\sigma_t^2)` for data of unit variance: the exact posterior
    variance of an :math:`N(0, vI)` prior). Here ``g`` is added to the prior score, i.e. the
    conditional denoiser :math:`D + \sigma^2 g` is used in the DDIM step (Euler for ``eta = 0``);
    this is Bayes' rule with weight 1: no extra guidance weight is applied. For an isotropic
    Gaussian prior :math:`N(\mu, vI)` the approximation is exact, and so is the sampler as the
    steps grow. One denoiser evaluation, one VJP and one ``m x m`` solve per step.
    Equation, section and algorithm numbers of the paper are not cited here: they could not be
    checked against its text.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    v = check_positive(data_var, "data_var")
    check_positive(eta, "eta", allow_zero=True)
    Am = op.matrix().to(dtype=torch.float64, device=x.device)
    AAt = Am @ Am.T
    eye = torch.eye(op.out_dim, dtype=torch.float64, device=x.device)
    B = x.shape[0]
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        r2 = s_cur ** 2 * v / (v + s_cur ** 2)
        M = r2 * AAt + sy ** 2 * eye

        def v_of(D):
            r = (yy - op.forward(D)).to(torch.float64)
            return op.adjoint(torch.linalg.solve(M, r.T).T.to(D.dtype))

        den, g = _denoise_vjp(denoiser, x, s_cur, v_of)
        den_y = den + s_cur ** 2 * g.reshape(den.shape)
        noise = lambda: seeded_noise(B, x.shape[1:], seed=seed, start=start, step=i + 1,  # noqa: E731
                                     dtype=x.dtype, device=x.device)
        x_next = _ancestral(x, den_y, s_cur, s_next, eta, noise)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den_y})
        x = x_next
    return x


def sample_ddrm(denoiser: Callable, x: torch.Tensor, sigmas, *, A, y, sigma_y: float, eta: float = 0.85,
                eta_b: float = 1.0, seed: int = 0, start: int = 0, callback: Callable | None = None) -> torch.Tensor:
    r"""Denoising diffusion restoration models (DDRM; Kawar, Elad, Ermon & Song, NeurIPS 2022),
    any sigma grid and any denoiser.

    In the spectral coordinates of :math:`A = U\,\mathrm{diag}(s)\,V^T` (``V`` completed to an
    orthonormal basis), :math:`\bar x = V^T x`, :math:`\bar y_j = (U^T y)_j / s_j` with noise
    :math:`\sigma_y / s_j`. Start: observed coordinates with :math:`\sigma_0 \ge \sigma_y/s_j`
    start at :math:`\bar y_j + \sqrt{\sigma_0^2 - \sigma_y^2/s_j^2}\,\epsilon_j`
    (``epsilon`` = the given start noise ``x / sigma_0``), the others at ``x``. Each step from
    :math:`\sigma_{i}` to :math:`\sigma_{i+1}` with :math:`\bar x_\theta = V^T D(x_i, \sigma_i)`:

    * unobserved (:math:`s_j = 0`): :math:`\bar x_\theta + \sqrt{1-\eta^2}\,\sigma_{i+1}(\bar x_i - \bar x_\theta)/\sigma_i + \eta\sigma_{i+1}\epsilon`;
    * :math:`\sigma_{i+1} < \sigma_y/s_j`: :math:`\bar x_\theta + \sqrt{1-\eta^2}\,\sigma_{i+1}(\bar y - \bar x_\theta)\,s_j/\sigma_y + \eta\sigma_{i+1}\epsilon`;
    * :math:`\sigma_{i+1} \ge \sigma_y/s_j`: :math:`(1-\eta_b)\bar x_\theta + \eta_b\bar y + \sqrt{\sigma_{i+1}^2 - \eta_b^2\sigma_y^2/s_j^2}\,\epsilon`.

    Defaults ``eta = 0.85``, ``eta_b = 1`` are the authors' (bahjat-kawar/ddrm, ``README.md``:
    ``--eta`` default 0.85, ``--etaB`` default 1). Equation and section numbers of the paper are
    not cited here: they could not be checked against its text. One denoiser evaluation per
    step, no gradient; uses ``A.svd()``. Fresh noise of step ``i`` = ``seeded_noise`` stream ``i + 1``.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    for name, val in (("eta", eta), ("eta_b", eta_b)):
        check_positive(val, name, allow_zero=True)
    if eta > 1:
        raise ValueError(f"eta: must be in [0, 1], got {eta}")
    B, d = x.shape[0], math.prod(x.shape[1:])
    U, s, V = (t.to(device=x.device) for t in op.svd())
    r = s.shape[0]
    e, Q = torch.linalg.eigh(torch.eye(d, dtype=torch.float64, device=x.device) - V @ V.T)
    Vf = torch.cat([V, Q[:, e > 0.5]], 1)                              # V completed to a basis of R^d
    ybar = (yy.to(torch.float64) @ U) / s                              # (B, r)
    ny = torch.full((r,), sy, dtype=torch.float64, device=x.device) / s   # sigma_y / s_j
    to_bar = lambda z: z.reshape(B, -1).to(torch.float64) @ Vf          # noqa: E731
    from_bar = lambda zb: (zb @ Vf.T).to(x.dtype).reshape(x.shape)      # noqa: E731

    xb = to_bar(x)
    s0 = sig[0]
    eps0 = xb[:, :r] / s0
    top = s0 >= ny
    xb[:, :r] = torch.where(top[None], ybar + torch.sqrt((s0 ** 2 - ny ** 2).clamp_min(0))[None] * eps0, xb[:, :r])
    x = from_bar(xb)
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        den = denoiser(x, s_cur)
        xt = to_bar(den)
        eps = to_bar(seeded_noise(B, x.shape[1:], seed=seed, start=start, step=i + 1,
                                  dtype=torch.float64, device=x.device))
        c = math.sqrt(1 - eta ** 2)
        new = xt + c * s_next * (xb - xt) / s_cur + eta * s_next * eps            # unobserved
        lo = xt[:, :r] + c * s_next * (ybar - xt[:, :r]) / ny.clamp_min(torch.finfo(torch.float64).tiny) \
            + eta * s_next * eps[:, :r]
        hi = (1 - eta_b) * xt[:, :r] + eta_b * ybar \
            + torch.sqrt((s_next ** 2 - eta_b ** 2 * ny ** 2).clamp_min(0))[None] * eps[:, :r]
        new[:, :r] = torch.where((s_next < ny)[None], lo, hi)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den})
        xb = new
        x = from_bar(xb)
    return x


# =============================================================================================
# Running and measuring samplers against the exact posterior
# =============================================================================================

POSTERIOR_SAMPLERS = ("exact", "dps", "pigdm", "ddrm")


def run_posterior_sampler(name: str, prior, A, y, sigma_y: float, *, steps: int, n_samples: int,
                          seed: int = 0, sigma_max: float = 80.0, sigma_min: float = 0.002, **kwargs):
    r"""Draw ``n_samples`` per measurement with one sampler on the Karras grid of ``steps`` steps.

    ``name``: ``"exact"`` (Heun on the :class:`PosteriorDenoiser`, 2 evaluations per step),
    ``"dps"``, ``"pigdm"`` or ``"ddrm"`` (on the prior's denoiser). Sample ``j`` of measurement
    ``q`` starts from ``seeded_noise`` row ``q * n_samples + j``, the same for every sampler.

    Returns
    -------
    (Q, n_samples, *event_shape) samples, ``Q = len(y)``.
    """
    from .sampling import sample_heun
    from .schedules import karras_sigmas

    if name not in POSTERIOR_SAMPLERS:
        raise ValueError(f"name: expected one of {POSTERIOR_SAMPLERS}, got {name!r}")
    op = as_operator(A, prior.dim)
    yy = _check_y(y, op, dtype=prior.dtype, device=prior.device)
    Q = yy.shape[0]
    yr = yy.repeat_interleave(int(n_samples), 0)
    sigmas = karras_sigmas(int(steps), sigma_min, sigma_max)
    x = seeded_noise(Q * int(n_samples), prior.event_shape, seed=seed, dtype=prior.dtype,
                     device=prior.device) * sigmas[0]
    if name == "exact":
        out = sample_heun(PosteriorDenoiser(prior, op, yr, sigma_y), x, sigmas)
    else:
        fn = {"dps": sample_dps, "pigdm": sample_pigdm, "ddrm": sample_ddrm}[name]
        out = fn(prior, x, sigmas, A=op, y=yr, sigma_y=sigma_y, seed=seed, **kwargs)
    return out.reshape(Q, int(n_samples), *prior.event_shape)


def gaussian_w2(m1, C1, m2, C2) -> torch.Tensor:
    r"""Wasserstein-2 distance between Gaussians (the Bures formula, (P5) without commutation):
    :math:`W_2^2 = |m_1-m_2|^2 + \mathrm{tr}(C_1 + C_2 - 2(C_2^{1/2}C_1C_2^{1/2})^{1/2})`.
    Batched over leading dimensions; float64."""
    m1, m2 = m1.to(torch.float64), m2.to(torch.float64)
    C1, C2 = C1.to(torch.float64), C2.to(torch.float64)

    def sqrtm(M):
        e, Q = torch.linalg.eigh(0.5 * (M + M.transpose(-1, -2)))
        return (Q * e.clamp_min(0).sqrt()[..., None, :]) @ Q.transpose(-1, -2)

    r2 = sqrtm(C2)
    cross = sqrtm(r2 @ C1 @ r2)
    tr = (torch.diagonal(C1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(C2, dim1=-2, dim2=-1).sum(-1)
          - 2 * torch.diagonal(cross, dim1=-2, dim2=-1).sum(-1))
    return torch.sqrt((((m1 - m2) ** 2).sum(-1) + tr).clamp_min(0))


def measure_posterior_samples(samples: torch.Tensor, posterior: PosteriorDenoiser, *, level: float = 0.9) -> dict:
    r"""Measure samples against the exact posterior of each measurement.

    Parameters
    ----------
    samples : (Q, S, *event_shape): ``S`` samples for each of the ``Q`` measurements of
        ``posterior`` (``posterior.y`` has ``Q`` rows).
    level : credible level.

    Returns
    -------
    dict
        Floats averaged over the ``Q`` measurements; the keys are listed under Notes.

    Notes
    -----

    * ``mean_error``: :math:`|\hat m - m_y| / \sqrt{\mathrm{tr}\,C_y}`, the error of the sample mean
    relative to the posterior spread (for the empirical prior, whose posterior can be a single
    point, relative to the prior's spread: ``mean_error_scale``); an exact sampler gives about
    ``mc_floor`` (:math:`1/\sqrt S`, its Monte-Carlo error); much more is bias.
    ``mean_rmse``: the same error in data units, root mean square over coordinates.
    * ``spread_ratio``: :math:`\mathrm{tr}\,\hat C / \mathrm{tr}\,C_y` (1 when the spread is right;
    meaningless when the exact posterior is numerically a point).
    * ``coverage`` and ``coverage_nominal``: share of sample coordinates inside the exact central
    credible interval (Gaussian/mixture prior; nominal = ``level``), or share of samples whose
    nearest training point is in the exact ``level`` credible set (empirical prior; nominal =
    that set's mass, >= ``level``).
    * Gaussian prior: ``w2`` (Bures W2 between the Gaussian fitted to the samples and the exact
    posterior Gaussian) and ``w2_rel`` = ``w2`` / :math:`\sqrt{\mathrm{tr}\,C}`. The fitted
    Gaussian carries a Monte-Carlo error of its own: compare with the ``exact`` sampler's value
    at the same ``S``.
    * empirical prior: ``tv`` total-variation distance between the distribution of the nearest
    training point of the samples and the exact posterior weights.
    """
    if not isinstance(posterior, PosteriorDenoiser):
        raise ValueError("posterior: expected a PosteriorDenoiser")
    Q = posterior.batch
    if not isinstance(samples, torch.Tensor) or samples.shape[0] != Q or samples.ndim < 3:
        raise ValueError(f"samples: expected shape (Q={Q}, S, *event_shape), got "
                         f"{tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__}")
    S = samples.shape[1]
    X = samples.reshape(Q, S, -1).to(torch.float64)
    if X.shape[2] != posterior.dim:
        raise ValueError(f"samples: have {X.shape[2]} entries per sample, the posterior has {posterior.dim}")
    m = posterior.posterior_mean()
    C = posterior.posterior_cov()
    trC = torch.diagonal(C, dim1=1, dim2=2).sum(1)
    mh = X.mean(1)
    Ch = torch.einsum("qsd,qse->qde", X - mh[:, None], X - mh[:, None]) / max(S - 1, 1)
    if posterior.kind == "empirical":
        # a discrete posterior can be (numerically) a single point: scale by the prior's spread
        Xt = posterior._X
        scale = torch.sqrt(((Xt - Xt.mean(0)) ** 2).sum(1).mean()).expand(Q)
        floor = float((trC.sqrt() / scale).mean()) / math.sqrt(S)
    else:
        scale, floor = trC.sqrt(), 1 / math.sqrt(S)
    out = {"n_samples": S, "n_measurements": Q, "mc_floor": floor,
           "mean_error": float(((mh - m).norm(dim=1) / scale).mean()),
           "mean_error_scale": "prior" if posterior.kind == "empirical" else "posterior",
           "mean_rmse": float(((mh - m) ** 2).mean().sqrt()),
           "spread_ratio": float((torch.diagonal(Ch, dim1=1, dim2=2).sum(1) / trC.clamp_min(1e-300)).mean())}
    if posterior.kind == "empirical":
        Xt = posterior._X
        nn = torch.stack([_sqdist(X[q], Xt).argmin(1) for q in range(Q)])          # (Q, S)
        cs = posterior.credible_set(level)
        out["coverage"] = float(torch.gather(cs, 1, nn).double().mean())
        out["coverage_nominal"] = float((posterior.weights * cs).sum(1).mean())
        hist = torch.zeros_like(posterior.weights).scatter_add_(1, nn, torch.ones_like(nn, dtype=torch.float64)) / S
        out["tv"] = float(0.5 * (hist - posterior.weights).abs().sum(1).mean())
    else:
        lo, hi = posterior.marginal_intervals(level)
        inside = (X >= lo[:, None]) & (X <= hi[:, None])
        # coordinates the posterior pins down exactly (zero variance, e.g. constant pixels) have a
        # degenerate interval: left out of the coverage, their number reported
        sd = torch.sqrt(torch.diagonal(C, dim1=1, dim2=2).clamp_min(0))
        live = sd > 1e-8 * sd.amax(1, keepdim=True)
        out["coverage"] = float(inside.double().mul(live[:, None]).sum() / (live.sum() * S))
        out["degenerate_coordinates"] = int((~live).sum())
        out["coverage_nominal"] = float(level)
        if posterior.kind == "gaussian":
            w2 = gaussian_w2(mh, Ch, m, C)
            out["w2"] = float(w2.mean())
            out["w2_rel"] = float((w2 / trC.sqrt()).mean())
    return out
