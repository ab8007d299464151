r"""Closed-form predictions of the theory: the numbers a paper's formula gives, to compare with runs.

Each function evaluates a result derived and machine-checked in ``theory/`` (label in brackets):

* :func:`speciation_time` (R1), :func:`symmetry_breaking_time` (R2) and :func:`collapse_time` (R3),
  the dynamical regimes of Biroli, Bonnaire, de Bortoli & Mézard (2024), in the OU time of
  :class:`~gaussdiff.schedules.OU` (:math:`\sigma^2 = e^{2t} - 1`);
* :func:`gaussian_sampler_factors` (P1, P2, G4), :func:`gaussian_sampler_output` (P4) and
  :func:`gaussian_sampler_w2` (P5): what ``sample_euler`` / ``sample_heun`` do to Gaussian data,
  exactly, per eigenvalue of the data covariance (Pierret & Galerne 2024).

Scalars come back as python floats, arrays as float64 torch tensors on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import as_tensor, check_finite, check_int, check_positive, check_sigma_grid

__all__ = [
    "speciation_time",
    "symmetry_breaking_time",
    "collapse_time",
    "gaussian_sampler_factors",
    "gaussian_sampler_output",
    "gaussian_sampler_w2",
]

_METHODS = ("euler", "heun", "exact")


def _spectrum(value, name: str) -> torch.Tensor:
    """Eigenvalues from a float, a (d,) array of eigenvalues or a (d, d) covariance matrix."""
    t = check_finite(as_tensor(value, name, dtype=torch.float64).cpu(), name)
    if t.ndim == 0:
        t = t.reshape(1)
    elif t.ndim == 2:
        if t.shape[0] != t.shape[1]:
            raise ValueError(f"{name}: a matrix must be a square covariance, got shape {tuple(t.shape)}")
        t = torch.linalg.eigvalsh(0.5 * (t + t.T))
        tol = 1e-10 * float(t.abs().max())  # round-off of a rank-deficient cov
        t = torch.where((t < 0) & (t >= -tol), torch.zeros_like(t), t)
    elif t.ndim != 1 or t.numel() == 0:
        raise ValueError(
            f"{name}: expected a float, (d,) eigenvalues or a (d, d) covariance, got shape {tuple(t.shape)}"
        )
    if bool((t < 0).any()):
        raise ValueError(f"{name}: eigenvalues must be >= 0 (min {float(t.min()):.3e})")
    return t


# =============================================================================================
# Dynamical regimes (Biroli et al. 2024)
# =============================================================================================


def speciation_time(cov) -> float:
    r"""(R1) Speciation time :math:`t_S = \tfrac12\log\Lambda` (Biroli et al. 2024), in OU time.

    :math:`\Lambda` is the largest eigenvalue of the data covariance; :math:`t_S` is where the signal
    variance along the top principal direction, :math:`\Lambda e^{-2t}`, equals the unit OU noise
    variance. The EDM noise level is ``gd.OU().sigma(t_S)`` :math:`= \sqrt{\Lambda - 1}`.
    Negative when :math:`\Lambda < 1` (no speciation along the OU path).

    Parameters
    ----------
    cov : float :math:`\Lambda` itself, ``(d,)`` eigenvalues, or a ``(d, d)`` covariance matrix.

    Returns
    -------
    float
    """
    L = float(_spectrum(cov, "cov").max())
    if L <= 0:
        raise ValueError("cov: the largest eigenvalue must be > 0")
    return 0.5 * math.log(L)


def symmetry_breaking_time(mean_norm_sq: float, cluster_variance: float) -> float:
    r"""(R2) Exact symmetry-breaking time of the two-cluster model :math:`x_0 = \pm m + \sqrt v z`.

    The OU time at which :math:`\log p_t` along :math:`m` turns from unimodal to bimodal:
    :math:`t^* = \tfrac12\log(|m|^2 + 1 - v)`; it tends to :math:`t_S` of (R1) with
    :math:`\Lambda = |m|^2 + v` as :math:`\Lambda\to\infty`.

    Parameters
    ----------
    mean_norm_sq : :math:`|m|^2`, must exceed ``cluster_variance`` (else the data are unimodal).
    cluster_variance : :math:`v \ge 0`, the variance of each cluster in every direction.
    """
    m2 = check_positive(mean_norm_sq, "mean_norm_sq")
    v = check_positive(cluster_variance, "cluster_variance", allow_zero=True)
    if m2 <= v:
        raise ValueError(
            f"mean_norm_sq: must exceed cluster_variance ({m2} <= {v}): the data law is "
            "unimodal along m and never breaks symmetry"
        )
    return 0.5 * math.log(m2 + 1.0 - v)


def collapse_time(n_train: int, eigenvalues, *, dim: int | None = None, n_clusters: int = 1) -> float:
    r"""(R3) Collapse time of the empirical score (Biroli et al. 2024, random-energy-model argument).

    :math:`t_C` (OU time) solves the entropy condition

    .. math:: \log\frac{N}{K} = \frac12\sum_k \log\Big(1 + \frac{\lambda_k}{\sigma^2}\Big),
              \qquad \sigma^2 = e^{2t} - 1,

    i.e. :math:`\log N` equals the excess entropy :math:`H[p_t] - H[N(0, \Delta_t I)]` of the noised
    data law over one noised training point. For isotropic data (``eigenvalues`` a float
    :math:`v` and ``dim`` :math:`d`) this is :math:`t_C = \tfrac12\log(1 + v/((N/K)^{2/d} - 1))`.
    For :math:`t < t_C` the backward dynamics driven by the empirical score collapses onto the
    training points.

    Assumptions: the data law is Gaussian, or a mixture of ``K = n_clusters`` well-separated
    Gaussian clusters sharing the spectrum ``eigenvalues`` (its entropy is then the cluster's plus
    :math:`\log K`); the result is the leading order for :math:`d\to\infty` at fixed
    :math:`\log N / d`. The paper's large-d statement for the two-cluster model neglects
    :math:`\log 2` against :math:`d`, i.e. ``n_clusters=1``.

    Parameters
    ----------
    n_train : :math:`N`, the number of training points; ``N > n_clusters``.
    eigenvalues : float (isotropic variance, needs ``dim``), ``(d,)`` eigenvalues or ``(d, d)``
        covariance of the data (of one cluster when ``n_clusters > 1``).
    dim : the dimension for a float ``eigenvalues``.
    n_clusters : :math:`K`, see above.

    Returns
    -------
    float, the OU time; ``gd.OU().sigma(t)`` gives the EDM noise level.
    """
    n_train, n_clusters = check_int(n_train, "n_train"), check_int(n_clusters, "n_clusters")
    log_n = math.log(n_train) - math.log(n_clusters)
    if log_n <= 0:
        raise ValueError(f"n_train: must exceed n_clusters = {n_clusters}, got {n_train}")
    scalar = isinstance(eigenvalues, (int, float)) or (np.ndim(eigenvalues) == 0)
    if scalar:
        if dim is None:
            raise ValueError("dim: a positive integer is needed with an isotropic (float) variance")
        dim = check_int(dim, "dim")
        v = check_positive(float(eigenvalues), "eigenvalues")
        sigma2 = v / math.expm1(2.0 * log_n / int(dim))
    else:
        if dim is not None:
            raise ValueError("dim: only with a float (isotropic) variance; the spectrum sets d")
        lam = _spectrum(eigenvalues, "eigenvalues").numpy()
        lam = lam[lam > 0]
        if lam.size == 0:
            raise ValueError("eigenvalues: need at least one > 0")

        def excess(log_s2):
            return 0.5 * float(np.sum(np.log1p(lam * math.exp(-log_s2)))) - log_n

        from scipy.optimize import brentq

        # excess(.) decreases from +inf to -log_n: bracket the root on the log scale
        lo, hi = math.log(float(lam.min())) - 1.0, math.log(float(lam.max())) + 1.0
        while excess(lo) < 0:
            lo -= 10.0
        while excess(hi) > 0:
            hi += 10.0
        sigma2 = math.exp(brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))
    return 0.5 * math.log1p(sigma2)


# =============================================================================================
# Euler / Heun on a Gaussian (Pierret & Galerne 2024)
# =============================================================================================


def gaussian_sampler_factors(eigenvalues, sigmas, method: str = "euler") -> torch.Tensor:
    r"""(P1, P2, G4) Per-step, per-eigenvalue factors :math:`a_i(\lambda_k)` of a sampler on Gaussian data.

    On :math:`N(\mu, U\mathrm{diag}(\lambda)U^T)`, one step from :math:`\sigma_i` to :math:`\sigma_{i+1}`
    multiplies the eigen-coordinate :math:`u_k^T(\hat x - \mu)` by

    * ``"euler"`` (``sample_euler``, DDIM): :math:`(\lambda + \sigma_i\sigma_{i+1})/(\lambda + \sigma_i^2)`;
    * ``"heun"`` (``sample_heun``): :math:`\dfrac{2\lambda^2 + \lambda\sigma_i^2 + 3\lambda\sigma_{i+1}^2 + 2\sigma_i\sigma_{i+1}^3}{2(\lambda+\sigma_i^2)(\lambda+\sigma_{i+1}^2)}`,
      and the Euler factor on a last step to :math:`\sigma = 0`;
    * ``"exact"`` (``GaussianDenoiser.flow``): :math:`\sqrt{(\lambda+\sigma_{i+1}^2)/(\lambda+\sigma_i^2)}`.

    Parameters
    ----------
    eigenvalues : (d,) eigenvalues :math:`\lambda_k \ge 0` (or a (d, d) covariance).
    sigmas : (n+1,) decreasing sigma grid (only the last entry may be 0), as given to the sampler.
    method : ``"euler"``, ``"heun"`` or ``"exact"``.

    Returns
    -------
    (n, d) float64 tensor.
    """
    if method not in _METHODS:
        raise ValueError(f"method: must be one of {_METHODS}, got {method!r}")
    lam = _spectrum(eigenvalues, "eigenvalues")[None, :]
    sig = check_sigma_grid(sigmas, "sigmas").to(dtype=torch.float64, device="cpu")
    a, b = sig[:-1, None], sig[1:, None]
    if method == "exact":
        return torch.sqrt((lam + b**2) / (lam + a**2))
    euler = (lam + a * b) / (lam + a**2)
    if method == "euler":
        return euler
    heun = (2 * lam**2 + lam * a**2 + 3 * lam * b**2 + 2 * a * b**3) / (2 * (lam + a**2) * (lam + b**2))
    return torch.where(b > 0, heun, euler)


def gaussian_sampler_output(eigenvalues, sigmas, method: str = "euler", start_variance=None) -> torch.Tensor:
    r"""(P4) Per-eigenvalue variance of the sampler's output on Gaussian data.

    A run maps :math:`u_k^T(\hat x - \mu)` to :math:`P_k\, u_k^T(\hat x - \mu)`,
    :math:`P_k = \prod_i a_i(\lambda_k)` (see :func:`gaussian_sampler_factors`), so from a start
    with variance :math:`v_0` the output variance is :math:`v_0 P_k^2` along :math:`u_k` (the output
    covariance is :math:`U\mathrm{diag}(v_0P^2)U^T`).

    Parameters
    ----------
    eigenvalues, sigmas, method : as :func:`gaussian_sampler_factors`.
    start_variance : float or (d,) variance of the start along each eigenvector; default
        ``sigmas[0] ** 2`` (the usual ``x = sigmas[0] * noise``).

    Returns
    -------
    (d,) float64 tensor.
    """
    fac = gaussian_sampler_factors(eigenvalues, sigmas, method)
    P = torch.prod(fac, dim=0)
    v0 = _start_variance(start_variance, sigmas, P.shape[0])
    return v0 * P**2


def _start_variance(start_variance, sigmas, d):
    if start_variance is None:
        return torch.full((d,), float(as_tensor(sigmas, "sigmas")[0]) ** 2, dtype=torch.float64)
    v0 = check_finite(as_tensor(start_variance, "start_variance", dtype=torch.float64).cpu(), "start_variance")
    if v0.ndim == 0:
        v0 = v0.expand(d)
    if v0.shape != (d,) or bool((v0 < 0).any()):
        raise ValueError(f"start_variance: expected a float or ({d},) entries, all >= 0")
    return v0


def gaussian_sampler_w2(eigenvalues, sigmas, method: str = "euler", *, start_variance=None, mean_offset=None) -> float:
    r"""(P5) Wasserstein-2 distance between the sampler's output law and the data law :math:`N(\mu, \Sigma)`.

    The output is :math:`N(\mu + U\mathrm{diag}(P)\delta,\; U\mathrm{diag}(v_0P^2)U^T)` and commutes with
    :math:`\Sigma = U\mathrm{diag}(\lambda)U^T`, so

    .. math:: W_2^2 = \sum_k P_k^2\delta_k^2 + \sum_k \big(\sqrt{v_{0,k}}\,|P_k| - \sqrt{\lambda_k}\big)^2 .

    Parameters
    ----------
    eigenvalues, sigmas, method, start_variance : as :func:`gaussian_sampler_output`.
    mean_offset : (d,) :math:`\delta = U^T(m_0 - \mu)`, the start mean relative to the data mean in
        the eigenbasis; default 0. Starting from ``sigmas[0] * noise`` (mean 0) on data of mean
        :math:`\mu` means :math:`\delta = -U^T\mu`.

    Returns
    -------
    float, :math:`W_2` (not squared).
    """
    lam = _spectrum(eigenvalues, "eigenvalues")
    P = torch.prod(gaussian_sampler_factors(lam, sigmas, method), dim=0)
    v0 = _start_variance(start_variance, sigmas, P.shape[0])
    w2 = ((torch.sqrt(v0) * P.abs() - torch.sqrt(lam)) ** 2).sum()
    if mean_offset is not None:
        delta = check_finite(as_tensor(mean_offset, "mean_offset", dtype=torch.float64).cpu(), "mean_offset")
        if delta.shape != P.shape:
            raise ValueError(f"mean_offset: expected {P.shape[0]} entries, got shape {tuple(delta.shape)}")
        w2 = w2 + (P**2 * delta**2).sum()
    return math.sqrt(float(w2))
