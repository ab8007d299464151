r"""Closed-form optimal denoisers: the shared base class, Gaussian and Gaussian mixture
(the empirical denoiser lives in :mod:`gaussdiff.empirical`).

Every class here is a *denoiser* in the sense of :mod:`gaussdiff.schedules`:
``D(x, sigma) = E[x0 | x0 + sigma n = x]`` for a known law of ``x0``, called on a torch batch
``x`` of shape ``(B, *event_shape)`` with ``sigma`` a positive float or a ``(B,)`` tensor. Each
also gives ``score(x, sigma)`` (the gradient of ``log p_sigma``) and
``log_density(x, sigma)`` (the log density of ``p_sigma = p_0 * N(0, sigma^2 I)``), both exact.

Parameters live on one device in one dtype (those of the data given to the constructor); a
query in another dtype or on another device is refused, use ``.to(dtype=..., device=...)``.
Theory labels such as (G2) refer to the derivations in ``theory/``.

Extreme sigma (one treatment for every closed form, :meth:`Denoiser._evaluate`): where
``sigma**2`` is a normal number of the dtype (``1.1e-19 <= sigma <= 1.8e19`` in float32) the
formulas run in the dtype; beyond it, or where an intermediate overflows the dtype, they run on
a float64 copy of the parameters and the result is rounded to the dtype. An output that is not
representable in the dtype (a float32 score ``~ 1/sigma^2`` at ``sigma = 1e-30``) raises
``ValueError`` naming ``sigma``, as does a sigma whose square is not a normal float64
(:func:`~gaussdiff._checks.check_sigma_squared`); nothing returns a silent NaN or inf.
"""

from __future__ import annotations

import copy
import math

import torch

from ._checks import (
    as_tensor,
    check_batch,
    check_data,
    check_finite,
    check_float_dtype,
    check_generator,
    check_int,
    check_positive,
    check_sigma_output,
    check_sigma_values,
    check_sigma_squared,
    sigma_working_dtype,
)
from .schedules import score_from_denoiser

__all__ = ["Denoiser", "GaussianDenoiser", "GaussianMixtureDenoiser"]

_LOG_2PI = math.log(2 * math.pi)


class Denoiser:
    """Base class: validates and flattens a query batch, then calls ``_denoise`` on ``(B, d)``.

    Subclasses set ``event_shape``, ``dtype`` and ``device`` and implement ``_denoise``
    (and where it exists in closed form ``_log_density``/``_score``). At extreme sigma
    (:meth:`_evaluate`) a subclass either names the parameter tensors its terms need in float64
    (``_float64_params``), or says that its terms take a float64 sigma as they are
    (``_sigma_float64``); any other subclass keeps getting sigma in its own dtype.
    """

    event_shape: tuple
    dtype: torch.dtype
    device: torch.device
    _float64_params: tuple = ()  # parameter tensors cast for the float64 evaluation
    _sigma_float64: bool = False  # the terms compute with a float64 sigma whatever the dtype

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    # -- input handling -------------------------------------------------------------------
    def _prepare(self, x, sigma):
        if isinstance(x, torch.Tensor) and x.device != self.device:  # before check_batch reads the values
            raise ValueError(
                f"x: is on {x.device} but this denoiser lives on {self.device}; move x or call .to(device=...)"
            )
        x = check_batch(x, self.event_shape, "x")
        if x.dtype != self.dtype:
            raise ValueError(
                f"x: has dtype {x.dtype} but this denoiser uses {self.dtype}; cast x or call .to(dtype=...)"
            )
        s = check_sigma_squared(sigma, x.shape[0], dtype=self.dtype, device=self.device)
        return x.reshape(x.shape[0], self.dim), s  # (B, d), also for an empty batch

    # -- extreme sigma: one treatment for every closed form ------------------------------------
    def _evaluate(self, what: str, fn, s: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """``fn(model, s, *args)`` evaluated where it is exact, with its output checked.

        ``s`` (B,) from :func:`~gaussdiff._checks.check_sigma_squared`: in the model's dtype for
        ordinary sigma, where ``fn`` runs on this model unchanged (bit for bit the plain call)
        and its output is returned when finite; in float64 where ``sigma**2`` leaves the dtype's
        normal range, or when that output overflowed inside the dtype (``|x - mu|^2 / sigma^2``
        in float32), in which case ``fn`` runs once more on the float64 copy of the model
        (:meth:`_in_float64`) and the result is rounded to the dtype. An output that still is not
        finite is not representable: ``ValueError`` naming ``sigma`` (``what`` names the output)."""
        if s.dtype == self.dtype:
            out = fn(self, s, *args)
            if self.dtype == torch.float64:
                return check_sigma_output(out, s, what)
            if bool(torch.isfinite(out).all()):
                return out
            s = s.to(torch.float64)
        return check_sigma_output(self._in_float64(fn, s, *args).to(self.dtype), s, what)

    def _in_float64(self, fn, s, *args):
        """``fn`` on the float64 copy of this model (the tensors of ``_float64_params`` cast, not
        recomputed: a float32 eigendecomposition keeps its rank) and float64 ``args``; or on this
        model with the float64 ``s`` (``_sigma_float64``); or, for a denoiser that computes in its
        own dtype only (a network), with ``s`` rounded to it, refused where that rounding
        flushes sigma to 0 or inf."""
        if self._sigma_float64:
            return fn(self, s, *args)
        if not self._float64_params:
            own = s.to(self.dtype)
            bad = ~((own > 0) & torch.isfinite(own))
            if bool(bad.any()):
                v, dt = float(s[torch.nonzero(bad)[0, 0]]), str(self.dtype).removeprefix("torch.")
                way = "underflows" if v < 1 else "overflows"
                raise ValueError(f"sigma: {v:.3g} {way} {dt} (this denoiser computes in {dt}); use float64")
            return fn(self, own, *args)
        wide = self.__dict__.get("_float64_copy")
        if wide is None:
            wide = copy.copy(self)
            for name in self._float64_params:
                t = getattr(self, name, None)
                if t is not None:
                    setattr(wide, name, t.to(torch.float64))
            wide.dtype = torch.float64
            self.__dict__["_float64_copy"] = wide
        return fn(wide, s, *(a.to(torch.float64) for a in args))

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The denoiser ``D(x, sigma)``: same shape as ``x``."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate("denoiser output", lambda m, s, x: m._denoise(x, s), s, xf).reshape(x.shape)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        r"""``grad_x log p_sigma(x)``; by Tweedie (T1) ``(D(x, sigma) - x) / sigma^2``."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate("score", lambda m, s, x: m._score(x, s), s, xf).reshape(x.shape)

    def log_density(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``log p_sigma(x)`` for every query: shape ``(B,)``."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate("log density", lambda m, s, x: m._log_density(x, s), s, xf)

    def _score(self, x, s):
        # (T1); at extreme sigma ``s`` is float64 (_evaluate) and so is the quotient
        return score_from_denoiser(self._denoise(x, s).to(s.dtype), x.to(s.dtype), s)

    def _denoise(self, x, s):  # pragma: no cover - abstract
        raise NotImplementedError

    def _log_density(self, x, s):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no closed-form log density")


# =============================================================================================
# Gaussian
# =============================================================================================


def _eigh_psd(cov: torch.Tensor, name: str, *, rtol: float = 1e-10):
    """Eigendecomposition of a symmetric positive semi-definite matrix (batched).

    Eigenvalues above ``-max(rtol, 4 d eps) * max|l|`` are accepted, with ``eps`` the unit
    roundoff of the matrix's own dtype: ``eigh`` computes each eigenvalue to about
    ``d eps max|l|``, so in float32 a rank-deficient covariance (any data with N <= d) has
    eigenvalues near ``-1e-7 * d * max|l|`` that are rounding, not a negative variance. Anything
    more negative is refused. Eigenvalues below ``d * eps * max|l|`` (the numerical-rank
    tolerance of ``numpy.linalg.matrix_rank``) are round-off of a rank-deficient matrix and are
    set to exactly 0, so that a rank-deficient covariance keeps its rank as ``sigma -> 0``."""
    tol = 1e4 * torch.finfo(cov.dtype).eps * float(cov.abs().max())  # round-off of X^T X, not asymmetry
    if not bool(torch.allclose(cov, cov.transpose(-1, -2), rtol=0.0, atol=tol)):
        raise ValueError(f"{name}: must be symmetric")
    sym = 0.5 * (cov + cov.transpose(-1, -2))
    lam, U = torch.linalg.eigh(sym)
    scale = lam.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
    rtol = max(rtol, 4 * lam.shape[-1] * torch.finfo(lam.dtype).eps)
    if bool((lam < -rtol * scale).any()):
        raise ValueError(f"{name}: is not positive semi-definite (smallest eigenvalue {float(lam.min()):.3e})")
    tol = lam.shape[-1] * torch.finfo(lam.dtype).eps * scale
    return torch.where(lam < tol, torch.zeros_like(lam), lam), U


class GaussianDenoiser(Denoiser):
    r"""The optimal denoiser of a Gaussian ``N(mean, cov)`` (the "hidden Gaussian structure").

    With ``cov = U diag(l) U^T`` (one eigendecomposition, at construction):

    (G2) :math:`D(x, \sigma) = \mu + U \,\mathrm{diag}\big(\tfrac{l}{l + \sigma^2}\big) U^T (x - \mu)`

    (G1) :math:`p_\sigma = N(\mu, \Sigma + \sigma^2 I)`, so ``score = -(Sigma + sigma^2 I)^{-1}(x - mu)``

    Rank-deficient covariances are fine: every formula uses ``l + sigma^2 > 0``.

    Parameters
    ----------
    mean : (*event_shape) or (d,) mean.
    cov : (d, d) symmetric positive semi-definite covariance, ``d = prod(event_shape)``.
    """

    _float64_params = ("mean", "cov", "eigenvalues", "eigenvectors")

    def __init__(self, mean, cov):
        mean = check_finite(check_float_dtype(as_tensor(mean, "mean"), "mean"), "mean")
        if mean.ndim < 1 or mean.numel() == 0:
            raise ValueError(f"mean: expected shape (d,) or an event shape, got {tuple(mean.shape)}")
        cov = check_finite(as_tensor(cov, "cov", dtype=mean.dtype, device=mean.device), "cov")
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"cov: expected shape ({d}, {d}) to match mean, got {tuple(cov.shape)}")
        self.mean = mean
        self.event_shape = tuple(mean.shape)
        self.dtype, self.device = mean.dtype, mean.device
        self.cov = cov
        self.eigenvalues, self.eigenvectors = _eigh_psd(cov, "cov")

    @classmethod
    def fit(cls, data, *, unbiased: bool = False) -> "GaussianDenoiser":
        """The Gaussian with the empirical mean and covariance of ``data`` (N, *event_shape).

        The covariance is normalised by ``N`` (the maximum-likelihood estimate) unless
        ``unbiased=True`` (``N - 1``). Mean and covariance are computed in float64 whatever the
        data's dtype, then stored in it."""
        data = check_float_dtype(check_data(data, "data", min_rows=2 if unbiased else 1), "data")
        flat = data.reshape(data.shape[0], -1).to(torch.float64)
        mu = flat.mean(0)
        centred = flat - mu
        cov = centred.T @ centred / (flat.shape[0] - (1 if unbiased else 0))
        return cls(mu.reshape(data.shape[1:]).to(data.dtype), cov.to(data.dtype))

    def to(self, *, dtype=None, device=None) -> "GaussianDenoiser":
        dtype, device = dtype or self.dtype, device or self.device
        cov = self.cov
        if torch.finfo(dtype).eps < torch.finfo(self.dtype).eps:
            # to a finer dtype: the stored covariance carries this dtype's rounding (eigenvalues
            # near -d eps max|l|), which the finer check would refuse; use its PSD form instead
            U, l = self.eigenvectors.to(dtype), self.eigenvalues.to(dtype)
            cov = (U * l[None]) @ U.T
        return GaussianDenoiser(self.mean.to(dtype=dtype, device=device), cov.to(dtype=dtype, device=device))

    def _shrink(self, s, power=1.0):
        """``(l / (l + s^2))^power`` per query: ``(B, d)``."""
        return (self.eigenvalues[None] / (self.eigenvalues[None] + s[:, None] ** 2)) ** power

    def _coords(self, x):
        return (x - self.mean.reshape(1, -1)) @ self.eigenvectors  # (B, d)

    def _denoise(self, x, s):
        y = self._coords(x) * self._shrink(s)
        return self.mean.reshape(1, -1) + y @ self.eigenvectors.T

    def _score(self, x, s):
        y = self._coords(x) / (self.eigenvalues[None] + s[:, None] ** 2)
        return -(y @ self.eigenvectors.T)

    def _log_density(self, x, s):
        var = self.eigenvalues[None] + s[:, None] ** 2  # (B, d)
        y = self._coords(x)
        return -0.5 * ((y**2 / var).sum(1) + torch.log(var).sum(1) + x.shape[1] * _LOG_2PI)

    def effective_dim(self, sigma) -> torch.Tensor:
        """``sum_k l_k / (l_k + sigma^2)``, the trace of the Jacobian: shape of ``sigma``."""
        s64 = check_sigma_values(sigma, device=self.device)
        if bool((s64 <= 0).any()) or not bool(torch.isfinite(s64).all()):
            raise ValueError("sigma: must be > 0 and finite")
        work = sigma_working_dtype(float(s64.min()), float(s64.max()), self.dtype) if s64.numel() else self.dtype
        if work == self.dtype:
            s = torch.as_tensor(sigma, dtype=self.dtype, device=self.device)
            return (self.eigenvalues / (self.eigenvalues + s[..., None] ** 2)).sum(-1)
        l = self.eigenvalues.to(torch.float64)  # extreme sigma: sigma**2 in float64, a sum in [0, d]
        return (l / (l + s64[..., None] ** 2)).sum(-1).to(self.dtype)

    def jacobian(self, sigma) -> torch.Tensor:
        """``dD/dx = U diag(l / (l + sigma^2)) U^T``: ``(d, d)`` for a float, ``(B, d, d)`` for a tensor."""
        scalar = not isinstance(sigma, torch.Tensor) or sigma.ndim == 0
        s = check_sigma_squared(sigma, 1 if scalar else sigma.shape[0], dtype=self.dtype, device=self.device)
        J = self._evaluate(
            "Jacobian", lambda m, s: torch.einsum("ij,bj,kj->bik", m.eigenvectors, m._shrink(s), m.eigenvectors), s
        )
        return J[0] if scalar else J

    def flow(self, x: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
        r"""(G4) The exact probability-flow map from noise level ``sigma_from`` to ``sigma_to``.

        In the eigenbasis ``y = U^T (x - mu)``:
        :math:`y_k(\sigma_{to}) = y_k(\sigma_{from}) \sqrt{(l_k + \sigma_{to}^2) / (l_k + \sigma_{from}^2)}`.

        ``sigma_from > 0``; ``sigma_to >= 0`` (0 gives the sample). Floats or ``(B,)`` tensors.
        """
        xf, s0 = self._prepare(x, sigma_from)
        s1 = check_sigma_squared(
            sigma_to, xf.shape[0], dtype=self.dtype, device=self.device, name="sigma_to", allow_zero=True
        )
        if s1.dtype != s0.dtype:  # one of the two is extreme: both in float64
            s0 = s0.to(torch.float64)

        def flow_map(m, s0, x, s1):
            l = m.eigenvalues[None]
            ratio = torch.sqrt((l + s1[:, None] ** 2) / (l + s0[:, None] ** 2))
            y = m._coords(x) * ratio
            return m.mean.reshape(1, -1) + y @ m.eigenvectors.T

        return self._evaluate("flow output", flow_map, s0, xf, s1).reshape(x.shape)

    def flow_output_moments(self, sigma_from, sigma_to=0.0, *, start_mean=None):
        r"""(G5) Mean and covariance of ``flow(x, sigma_from, sigma_to)`` for
        ``x ~ N(start_mean, sigma_from^2 I)`` (``start_mean`` defaults to 0).

        The flow is affine, ``x -> mu + A (x - mu)`` with ``A = U diag(r) U^T``,
        ``r = sqrt((l + s1^2) / (l + s0^2))``, so the output is Gaussian with covariance
        ``s0^2 U diag(r^2) U^T``. Returns ``(mean (d,), cov (d, d))``.
        """
        s0 = check_positive(sigma_from, "sigma_from")
        s1 = check_positive(sigma_to, "sigma_to", allow_zero=True)
        wide = sigma_working_dtype(s0, s0, self.dtype, "sigma_from") != self.dtype or (
            s1 > 0 and sigma_working_dtype(s1, s1, self.dtype, "sigma_to") != self.dtype
        )
        l = self.eigenvalues
        mu = self.mean.reshape(-1)
        m0 = (
            torch.zeros_like(mu)
            if start_mean is None
            else as_tensor(start_mean, "start_mean", dtype=self.dtype, device=self.device).reshape(-1)
        )
        if m0.shape != mu.shape:
            raise ValueError(f"start_mean: expected {self.dim} entries, got {m0.numel()}")
        check_finite(m0, "start_mean")
        U = self.eigenvectors
        if wide:  # an extreme sigma: the same formulas in float64 (as Denoiser._evaluate), rounded back
            l, mu, m0, U = (t.to(torch.float64) for t in (l, mu, m0, U))
        r2 = (l + s1**2) / (l + s0**2)
        mean = mu + U @ (torch.sqrt(r2) * (U.T @ (m0 - mu)))
        cov = (U * (s0**2 * r2)) @ U.T
        mean, cov = mean.to(self.dtype), cov.to(self.dtype)
        if wide and not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(cov).all())):
            raise ValueError(
                f"sigma_from, sigma_to: the flow output moments from {s0:.3g} to {s1:.3g} are not "
                f"representable in {str(self.dtype).removeprefix('torch.')} (they overflow); use float64"
            )
        return mean, cov

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples of ``N(mean, cov)``: ``(n, *event_shape)``."""
        n = check_int(n, "n")
        generator = check_generator(generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device="cpu").to(self.device)
        out = self.mean.reshape(1, -1) + (z * self.eigenvalues.sqrt()) @ self.eigenvectors.T
        return out.reshape(int(n), *self.event_shape)


# =============================================================================================
# Gaussian mixture
# =============================================================================================


class GaussianMixtureDenoiser(Denoiser):
    r"""The optimal denoiser of ``sum_k pi_k N(mu_k, S_k)``.

    (M2) :math:`D(x, \sigma) = \sum_k r_k(x, \sigma)\,[\mu_k + S_k (S_k + \sigma^2 I)^{-1}(x - \mu_k)]`

    (M1) :math:`r_k \propto \pi_k\, N(x; \mu_k, S_k + \sigma^2 I)`

    Each ``S_k`` is stored as ``U_k diag(l_k) U_k^T`` (``U_k`` orthonormal, ``r <= d`` columns,
    zero variance off its span) or as a diagonal. Components are streamed in chunks with an
    online log-sum-exp, so ``K`` may be large (e.g. one component per training point).

    Parameters
    ----------
    weights : (K,) non-negative, summing to 1.
    means : (K, *event_shape).
    covs : depends on ``cov_type``:
        ``"full"`` (K, d, d); ``"diag"`` (K, d); ``"isotropic"`` (K,) variances;
        ``"lowrank"`` (K, d, r) factors ``A_k`` with ``S_k = A_k A_k^T``.
    cov_type : one of the above.
    """

    COV_TYPES = ("full", "diag", "isotropic", "lowrank")
    _float64_params = ("weights", "means", "covs", "_mu", "_log_w", "_var", "_U", "_l")

    def __init__(self, weights, means, covs, *, cov_type: str = "full", chunk_size: int = 256):
        means = check_finite(check_float_dtype(as_tensor(means, "means"), "means"), "means")
        if means.ndim < 2 or means.shape[0] == 0:
            raise ValueError(f"means: expected shape (K, *event_shape) with K >= 1, got {tuple(means.shape)}")
        dt, dev = means.dtype, means.device
        K = means.shape[0]
        weights = check_finite(as_tensor(weights, "weights", dtype=dt, device=dev), "weights")
        if weights.shape != (K,):
            raise ValueError(f"weights: expected shape ({K},) to match means, got {tuple(weights.shape)}")
        if bool((weights < 0).any()):
            raise ValueError("weights: must be non-negative")
        if abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights: must sum to 1, got {float(weights.sum()):.8g}")
        if cov_type not in self.COV_TYPES:
            raise ValueError(f"cov_type: must be one of {self.COV_TYPES}, got {cov_type!r}")
        self.event_shape = tuple(means.shape[1:])
        d = math.prod(self.event_shape)
        self.dtype, self.device = dt, dev
        self.weights, self.means, self.cov_type = weights, means, cov_type
        self.chunk_size = check_int(chunk_size, "chunk_size")
        self._mu = means.reshape(K, d)
        self._log_w = torch.log(weights)
        covs = check_finite(as_tensor(covs, "covs", dtype=dt, device=dev), "covs")
        self.covs = covs
        # Internal form: diagonal variances (K, d), or an eigen-basis U (K, d, r) with l (K, r).
        self._U = None
        if cov_type == "isotropic":
            if covs.shape != (K,):
                raise ValueError(f"covs: isotropic variances need shape ({K},), got {tuple(covs.shape)}")
            if bool((covs < 0).any()):
                raise ValueError("covs: variances must be >= 0")
            self._var = covs[:, None].expand(K, d)
        elif cov_type == "diag":
            if covs.shape != (K, d):
                raise ValueError(f"covs: diagonal variances need shape ({K}, {d}), got {tuple(covs.shape)}")
            if bool((covs < 0).any()):
                raise ValueError("covs: variances must be >= 0")
            self._var = covs
        elif cov_type == "full":
            if covs.shape != (K, d, d):
                raise ValueError(f"covs: full covariances need shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
            self._l, self._U = _eigh_psd(covs, "covs")
        else:  # lowrank
            if covs.ndim != 3 or covs.shape[:2] != (K, d):
                raise ValueError(f"covs: low-rank factors need shape ({K}, {d}, r), got {tuple(covs.shape)}")
            U, sv, _ = torch.linalg.svd(covs, full_matrices=False)
            self._U, self._l = U, sv**2

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def smoothed_empirical(cls, data, h: float) -> "GaussianMixtureDenoiser":
        """An isotropic Gaussian of standard deviation ``h >= 0`` on every training point
        (a kernel density estimate); ``h = 0`` is the empirical distribution."""
        data = check_data(data, "data")
        h = check_positive(h, "h", allow_zero=True)
        N = data.shape[0]
        w = torch.full((N,), 1.0 / N, dtype=data.dtype, device=data.device)
        return cls(w, data, torch.full((N,), h * h, dtype=data.dtype, device=data.device), cov_type="isotropic")

    @classmethod
    def molrg(cls, bases, *, weights=None, means=None, scales=None) -> "GaussianMixtureDenoiser":
        r"""Mixture of low-rank Gaussians (MoLRG, Wang et al. 2024): component ``k`` is
        ``x = mu_k + U_k diag(scales_k) a``, ``a ~ N(0, I_r)``, with ``U_k`` (d, r) orthonormal.

        Parameters
        ----------
        bases : (K, d, r) orthonormal bases.
        weights : (K,), default uniform. means : (K, d), default 0. scales : (K, r), default 1.
        """
        bases = check_finite(as_tensor(bases, "bases"), "bases")
        if bases.ndim != 3:
            raise ValueError(f"bases: expected shape (K, d, r), got {tuple(bases.shape)}")
        K, d, r = bases.shape
        gram = bases.transpose(1, 2) @ bases
        if not bool(
            torch.allclose(gram, torch.eye(r, dtype=bases.dtype, device=bases.device).expand(K, r, r), atol=1e-6)
        ):
            raise ValueError("bases: each U_k must have orthonormal columns (U_k^T U_k = I)")
        w = torch.full((K,), 1.0 / K, dtype=bases.dtype, device=bases.device) if weights is None else weights
        mu = torch.zeros(K, d, dtype=bases.dtype, device=bases.device) if means is None else means
        factors = (
            bases
            if scales is None
            else bases * as_tensor(scales, "scales", dtype=bases.dtype, device=bases.device)[:, None, :]
        )
        return cls(w, mu, factors, cov_type="lowrank")

    @classmethod
    def random_molrg(
        cls, d: int, r: int, k: int, *, generator: torch.Generator, dtype=torch.float64
    ) -> "GaussianMixtureDenoiser":
        """A MoLRG with ``k`` random orthonormal ``r``-dimensional subspaces of R^d."""
        d, r, k = check_int(d, "d"), check_int(r, "r"), check_int(k, "k")
        generator = check_generator(generator, allow_none=False)
        if not (1 <= r <= d) or k < 1:
            raise ValueError(f"r, k: need 1 <= r <= d and k >= 1, got d={d}, r={r}, k={k}")
        g = torch.randn(k, d, r, generator=generator, dtype=dtype)
        return cls.molrg(torch.linalg.qr(g).Q)

    def to(self, *, dtype=None, device=None) -> "GaussianMixtureDenoiser":
        kw = dict(dtype=dtype or self.dtype, device=device or self.device)
        return GaussianMixtureDenoiser(
            self.weights.to(**kw),
            self.means.to(**kw),
            self.covs.to(**kw),
            cov_type=self.cov_type,
            chunk_size=self.chunk_size,
        )

    @property
    def n_components(self) -> int:
        return self._mu.shape[0]

    # -- the components, for code that builds on them (e.g. the posteriors of gaussdiff.inverse) --
    @property
    def component_means(self) -> torch.Tensor:
        """The means ``mu_k`` flattened: ``(K, d)`` (a copy: the mixture keeps its own)."""
        return self._mu.clone()

    @property
    def log_weights(self) -> torch.Tensor:
        """``log pi_k``: ``(K,)`` (``-inf`` for a component of weight 0; a copy)."""
        return self._log_w.clone()

    def component_covariances(self, *, dtype=None) -> torch.Tensor:
        """The covariances ``S_k`` as dense matrices, whatever ``cov_type``: ``(K, d, d)``, assembled
        in ``dtype`` (default: the mixture's) from the stored form (a diagonal, or ``U_k diag(l_k) U_k^T``)."""
        dtype = dtype or self.dtype
        if self._U is None:
            return torch.diag_embed(self._var.to(dtype))
        U, l = self._U.to(dtype), self._l.to(dtype)
        return (U * l[:, None, :]) @ U.transpose(1, 2)

    # -- per-chunk component terms ----------------------------------------------------------
    def _chunk_terms(self, x, s, sl):
        """For components ``sl``: log of ``pi_k N(x; mu_k, S_k + s^2 I)`` without the
        ``-d/2 log 2 pi`` constant (B, c), the component denoisers (B, c, d) and the
        component scores (B, c, d)."""
        v = x[:, None, :] - self._mu[None, sl]  # (B, c, d)
        s2 = (s**2)[:, None, None]
        if self._U is None:
            var = self._var[None, sl] + s2  # (B, c, d)
            quad = (v * v / var).sum(-1)
            logdet = torch.log(var).sum(-1)
            den = self._mu[None, sl] + self._var[None, sl] / var * v
            score = -v / var
        else:
            U, l = self._U[sl], self._l[sl]  # (c, d, r), (c, r)
            d, r = U.shape[1], U.shape[2]
            coef = torch.einsum("bcd,cdr->bcr", v, U)  # (B, c, r)
            var = l[None] + s2  # (B, c, r)
            quad = (coef * coef / var).sum(-1)
            logdet = torch.log(var).sum(-1)
            den = self._mu[None, sl] + torch.einsum("cdr,bcr->bcd", U, coef * l[None] / var)
            score = -torch.einsum("cdr,bcr->bcd", U, coef / var)
            if r < d:  # zero variance on the orthogonal complement of span(U_k)
                perp = v - torch.einsum("cdr,bcr->bcd", U, coef)
                quad = quad + (perp * perp).sum(-1) / s2[..., 0]
                logdet = logdet + (d - r) * torch.log(s2[..., 0])
                score = score - perp / s2
        logit = self._log_w[None, sl] - 0.5 * (quad + logdet)
        return logit, den, score

    def _stream(self, x, s, want=("den",)):
        """Online log-sum-exp over component chunks. Returns lse (B,) and the requested
        posterior averages of the component denoisers / scores."""
        B, d = x.shape
        m = torch.full((B,), -torch.inf, dtype=x.dtype, device=x.device)
        z = torch.zeros(B, dtype=x.dtype, device=x.device)
        acc = {k: torch.zeros(B, d, dtype=x.dtype, device=x.device) for k in want}
        K = self.n_components
        step = max(1, min(K, self.chunk_size))
        for start in range(0, K, step):
            logit, den, score = self._chunk_terms(x, s, slice(start, start + step))
            m_new = torch.maximum(m, logit.max(1).values)
            rescale = torch.exp(m - m_new)
            w = torch.exp(logit - m_new[:, None])
            z = z * rescale + w.sum(1)
            for k, val in (("den", den), ("score", score)):
                if k in acc:
                    acc[k] = acc[k] * rescale[:, None] + torch.einsum("bc,bcd->bd", w, val)
            m = m_new
        return m + torch.log(z), {k: a / z[:, None] for k, a in acc.items()}

    def _denoise(self, x, s):
        return self._stream(x, s, ("den",))[1]["den"]

    def _score(self, x, s):
        return self._stream(x, s, ("score",))[1]["score"]

    def _log_density(self, x, s):
        lse, _ = self._stream(x, s, ())
        return lse - 0.5 * x.shape[1] * _LOG_2PI

    def responsibilities(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """(M1) Posterior component probabilities ``r_k(x, sigma)``: ``(B, K)`` (held in full)."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate(
            "responsibilities", lambda m, s, x: torch.softmax(m._chunk_terms(x, s, slice(None))[0], dim=1), s, xf
        )

    def sample(self, n: int, *, generator: torch.Generator | None = None):
        """``n`` exact samples and their component labels: ``((n, *event_shape), (n,))``."""
        n = check_int(n, "n")
        generator = check_generator(generator)
        k = torch.multinomial(self.weights.cpu().to(torch.float64), n, replacement=True, generator=generator)
        d = self.dim
        if self._U is None:
            z = torch.randn(n, d, generator=generator, dtype=self.dtype).to(self.device)
            out = self._mu[k] + z * self._var[k].sqrt()
        else:
            r = self._U.shape[2]
            z = torch.randn(n, r, generator=generator, dtype=self.dtype).to(self.device)
            out = self._mu[k] + torch.einsum("ndr,nr->nd", self._U[k], z * self._l[k].sqrt())
        return out.reshape(n, *self.event_shape), k.to(self.device)
