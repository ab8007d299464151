r"""The exact posteriors of linear inverse problems and the exact posterior denoiser, one class
per kind of prior (Gaussian, Gaussian mixture, empirical).

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
     :math:`D(\hat x, \sigma; y) = \sum_i \mathrm{softmax}_i(\log w_i(y) - |\hat x - x_i|^2/2\sigma^2)\, x_i`
     (the logits of both written once, :func:`empirical_logits`).

:class:`PosteriorDenoiser` is one class per kind of prior, all built by
``PosteriorDenoiser(prior, A, y, sigma_y)``: :class:`GaussianPosteriorDenoiser`,
:class:`MixturePosteriorDenoiser` and :class:`EmpiricalPosteriorDenoiser`. Sampling its
probability-flow ODE (any sampler of :mod:`gaussdiff.sampling`) draws from the exact posterior.
The approximate samplers it is the yardstick for live in :mod:`gaussdiff.inverse.samplers`,
their measurement in :mod:`gaussdiff.inverse.measurement`, the operators in
:mod:`gaussdiff.inverse.operators`.
"""

from __future__ import annotations

import math

import torch

from .._checks import as_tensor, check_finite, check_positive
from ..denoisers import Denoiser, GaussianDenoiser, GaussianMixtureDenoiser
from ..empirical import EmpiricalDenoiser
from .operators import as_operator, check_measurement, check_sigma_y

__all__ = [
    "gaussian_posterior",
    "mixture_posterior",
    "empirical_posterior",
    "PosteriorDenoiser",
    "GaussianPosteriorDenoiser",
    "MixturePosteriorDenoiser",
    "EmpiricalPosteriorDenoiser",
]

_LOG_2PI = math.log(2 * math.pi)


# =============================================================================================
# Exact posteriors
# =============================================================================================


def _psd_inverse(G: torch.Tensor, name: str, *, allow_singular: bool):
    """``(G^+, logdet)`` of symmetric PSD matrices ``(..., m, m)`` by eigendecomposition."""
    e, Q = torch.linalg.eigh(0.5 * (G + G.transpose(-1, -2)))
    tol = e.shape[-1] * torch.finfo(e.dtype).eps * e.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    pos = e > tol
    if not allow_singular and not bool(pos.all()):
        raise ValueError(
            f"{name}: A S A^T + sigma_y^2 I is singular (noise-free measurement of a "
            "direction the prior does not vary in); use sigma_y > 0"
        )
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
    AS = Am @ S  # (K, m, d)
    G = AS @ Am.T + sigma_y**2 * eye_m  # (K, m, m)
    Ginv, logdet = _psd_inverse(G, "sigma_y", allow_singular=allow_singular)
    gain = AS.transpose(1, 2) @ Ginv  # (K, d, m) = S A^T G^-1
    resid = y[:, None, :] - (mu @ Am.T)[None]  # (B, K, m)
    means = mu[None] + torch.einsum("kdm,bkm->bkd", gain, resid)
    IKA = torch.eye(d, dtype=mu.dtype, device=mu.device) - gain @ Am  # (K, d, d)
    C = IKA @ S @ IKA.transpose(1, 2) + sigma_y**2 * gain @ gain.transpose(1, 2)
    C = 0.5 * (C + C.transpose(1, 2))
    quad = torch.einsum("bkm,kmn,bkn->bk", resid, Ginv, resid)
    loglik = -0.5 * (quad + logdet[None] + m * _LOG_2PI)
    return means, C, loglik


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
    sy = check_sigma_y(sigma_y)
    yy = check_measurement(y, op, dtype=torch.float64, device=dev)
    means, C, _ = _linear_gaussian_update(mu, S[None], op.matrix().to(dev), yy, sy, allow_singular=True)
    return means[:, 0].to(dt), C[0].to(dt)


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
    sy = check_sigma_y(sigma_y)
    yy = check_measurement(y, op, dtype=torch.float64, device=prior.device)
    mu = prior.component_means.to(torch.float64)
    means, C, loglik = _linear_gaussian_update(
        mu, prior.component_covariances(dtype=torch.float64), op.matrix().to(prior.device), yy, sy, allow_singular=False
    )
    logw = prior.log_weights.to(torch.float64)[None] + loglik
    return torch.softmax(logw, dim=1), means, C


def training_points(prior) -> torch.Tensor:
    """The support of an empirical prior, flattened and in float64: ``(N, d)``; ``prior`` is an
    :class:`~gaussdiff.EmpiricalDenoiser` or its ``(N, *event_shape)`` data."""
    data = prior.data if isinstance(prior, EmpiricalDenoiser) else prior
    data = as_tensor(data, "prior")
    if data.ndim < 2:
        raise ValueError("prior: expected an EmpiricalDenoiser or an (N, *event_shape) data set")
    return data.reshape(data.shape[0], -1).to(torch.float64)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|^2`` (float64, clamped at 0): ``(len(a), len(b))``."""
    d2 = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]
    return d2.clamp_min(0)


def empirical_logits(x: torch.Tensor, points: torch.Tensor, sigma, log_prior=None) -> torch.Tensor:
    r"""The logits of the posterior weights over a finite set of points, the one place
    :mod:`gaussdiff.inverse` writes them: :math:`\log\pi_i - |x - x_i|^2 / 2\sigma^2`, ``(B, N)``;
    their softmax over ``i`` is the weight of point ``i``. (The :class:`~gaussdiff.EmpiricalDenoiser`
    itself streams its weights from exact differences, for its certified accuracy; these dense
    logits use the expanded square, enough for the small exact posteriors here.)

    * (E2) with ``x`` the noisy queries, ``points`` the training points and no ``log_prior``: the
      weights of the empirical denoiser;
    * (I4) with ``x = y``, ``points = A x_i`` and ``sigma = sigma_y``: the weights given the
      measurement;
    * (I4) and (E2) together with ``log_prior`` the measurement's log-weights: the weights of
      the empirical posterior denoiser.

    ``sigma``: a float or a tensor broadcasting against ``(B, N)`` (e.g. ``(B, 1)``).
    """
    logits = -squared_distances(x, points) / (2 * sigma**2)
    return logits if log_prior is None else log_prior + logits


def empirical_posterior(prior, A, y, sigma_y) -> torch.Tensor:
    r"""(I4) Posterior weights of the empirical prior over its training points:
    :math:`w_i(y) = \mathrm{softmax}_i(-|y - A x_i|^2 / 2\sigma_y^2)`, ``(B, N)`` float64.

    ``prior`` is an :class:`~gaussdiff.EmpiricalDenoiser` or the ``(N, *event_shape)`` data.
    ``sigma_y`` must be > 0 (a noise-free measurement of a finite set has a degenerate
    likelihood)."""
    X = training_points(prior)
    op = as_operator(A, X.shape[1])
    sy = check_sigma_y(sigma_y)
    if sy == 0:
        raise ValueError(
            "sigma_y: must be > 0 for an empirical prior (the noise-free likelihood of a "
            "finite set of points is degenerate)"
        )
    yy = check_measurement(y, op, dtype=torch.float64, device=X.device)
    return torch.softmax(empirical_logits(yy, op.forward(X), sy), dim=1)


def _eigh_clamped(C: torch.Tensor):
    l, U = torch.linalg.eigh(C)
    scale = l.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(l.dtype).tiny)
    l = torch.where(l < l.shape[-1] * torch.finfo(l.dtype).eps * scale, torch.zeros_like(l), l)
    return l, U


# =============================================================================================
# The exact posterior denoiser: one class per kind of prior
# =============================================================================================


class PosteriorDenoiser(Denoiser):
    r"""The exact posterior denoiser :math:`D(\hat x, \sigma; y) = E[x_0 \mid x_0 + \sigma n = \hat x,\, y]`.

    For a :class:`~gaussdiff.GaussianDenoiser` prior (I1, I2), a
    :class:`~gaussdiff.GaussianMixtureDenoiser` prior (I3) or an
    :class:`~gaussdiff.EmpiricalDenoiser` prior (I4); see the module docstring.
    ``PosteriorDenoiser(prior, A, y, sigma_y)`` returns the class of that prior:
    :class:`GaussianPosteriorDenoiser`, :class:`MixturePosteriorDenoiser` or
    :class:`EmpiricalPosteriorDenoiser`. Row ``b`` of a query batch is denoised given measurement
    ``y[b]`` (a single row of ``y`` serves every query). Sampling its probability-flow ODE draws
    exactly from the posterior.

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

    kind: str
    prior_type: type
    weights: torch.Tensor | None = None

    def __new__(cls, *args, **kwargs):
        if cls is PosteriorDenoiser:  # pick the class of the prior
            prior = args[0] if args else kwargs.get("prior")
            for sub in (GaussianPosteriorDenoiser, MixturePosteriorDenoiser, EmpiricalPosteriorDenoiser):
                if isinstance(prior, sub.prior_type):
                    cls = sub
                    break
            else:
                raise ValueError(
                    f"prior: expected a GaussianDenoiser, GaussianMixtureDenoiser or "
                    f"EmpiricalDenoiser, got {type(prior).__name__}"
                )
        return super().__new__(cls)

    def __init__(self, prior, A, y, sigma_y):
        if not isinstance(prior, self.prior_type):
            raise ValueError(f"prior: expected a {self.prior_type.__name__}, got {type(prior).__name__}")
        self.prior = prior
        self.event_shape, self.dtype, self.device = prior.event_shape, prior.dtype, prior.device
        self.operator = as_operator(A, prior.dim)
        self.sigma_y = check_sigma_y(sigma_y)
        self.y = check_measurement(y, self.operator, dtype=torch.float64, device=self.device)

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def _rows(self, n: int, t: torch.Tensor) -> torch.Tensor:
        """Per-measurement tensor ``(B, ...)`` matched to a query batch of ``n`` rows."""
        if t.shape[0] == n:
            return t
        if t.shape[0] == 1:
            return t.expand(n, *t.shape[1:])
        raise ValueError(
            f"x: has {n} rows but there are {t.shape[0]} measurements y; give one query "
            "per measurement (or a single measurement)"
        )

    # -- the posterior law itself -----------------------------------------------------------
    def posterior_mean(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Exact :math:`E[x_0 \\mid y]`: ``(B, d)`` float64."""
        raise NotImplementedError

    def posterior_cov(self) -> torch.Tensor:  # pragma: no cover - abstract
        """Exact :math:`\\mathrm{Cov}[x_0 \\mid y]`: ``(B, d, d)`` float64."""
        raise NotImplementedError

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        """One exact posterior sample per measurement: ``(B, *event_shape)``."""
        raise NotImplementedError

    def marginal_intervals(self, level: float = 0.9):  # pragma: no cover - abstract
        """Central credible intervals of every coordinate's posterior marginal (Gaussian and
        mixture priors): ``(low, high)``, each ``(B, d)`` float64."""
        raise NotImplementedError

    def credible_set(self, level: float = 0.9) -> torch.Tensor:
        """Empirical prior only (:meth:`EmpiricalPosteriorDenoiser.credible_set`)."""
        raise ValueError("prior: credible_set is for the empirical prior; use marginal_intervals")

    def flow(self, x: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
        """Gaussian prior only (:meth:`GaussianPosteriorDenoiser.flow`)."""
        raise ValueError(
            "prior: the exact flow map is available for a Gaussian prior only; "
            "integrate the ODE with sample_heun or solve_flow"
        )


def _check_level(level: float) -> float:
    level = check_positive(level, "level")
    if level >= 1:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    return level


class _ComponentPosterior(PosteriorDenoiser):
    """The Gaussian and mixture posteriors: ``K`` Gaussian components ``N(m_k(y), C_k)`` with
    log-weights ``log w_k(y)``, the means ``(B, K, d)``, covariances ``(K, d, d)`` (with their
    eigendecompositions) and log-weights ``(B, K)`` set by the subclass."""

    def _set_components(self, means, C, logw):
        self._means, self._C, self._logw = means, C, logw
        self._l, self._U = _eigh_clamped(C)  # (K, d), (K, d, d)

    def _terms(self, x, s, want_score=False):
        """Component logits (B, K), component denoisers (B, K, d) and, if asked, component scores
        (B, K, d) (one plain matmul pair per component)."""
        n = x.shape[0]
        means = self._rows(n, self._means)  # (B, K, d)
        logw = self._rows(n, self._logw)
        s2 = (s**2)[:, None]
        logits, dens, scores = [], [], []
        for k in range(means.shape[1]):
            m, U, l = means[:, k], self._U[k], self._l[k]
            coef = (x - m) @ U  # (B, d)
            var = l[None] + s2
            logits.append(logw[:, k] - 0.5 * ((coef**2 / var).sum(1) + torch.log(var).sum(1)))
            dens.append(m + (coef * (l[None] / var)) @ U.T)
            if want_score:
                scores.append(-(coef / var) @ U.T)
        return (torch.stack(logits, 1), torch.stack(dens, 1), torch.stack(scores, 1) if want_score else None)

    def _denoise(self, x, s):
        logit, den, _ = self._terms(x.to(torch.float64), s.to(torch.float64))
        return torch.einsum("bk,bkd->bd", torch.softmax(logit, 1), den).to(self.dtype)

    def _score(self, x, s):
        logit, _, score = self._terms(x.to(torch.float64), s.to(torch.float64), want_score=True)
        return torch.einsum("bk,bkd->bd", torch.softmax(logit, 1), score).to(self.dtype)

    def _log_density(self, x, s):
        logit, _, _ = self._terms(x.to(torch.float64), s.to(torch.float64))
        return (torch.logsumexp(logit, 1) - 0.5 * x.shape[1] * _LOG_2PI).to(self.dtype)

    def posterior_mean(self) -> torch.Tensor:
        """Exact :math:`E[x_0 \\mid y]`: ``(B, d)`` float64."""
        return torch.einsum("bk,bkd->bd", torch.exp(self._logw), self._means)

    def posterior_cov(self) -> torch.Tensor:
        """Exact :math:`\\mathrm{Cov}[x_0 \\mid y]`: ``(B, d, d)`` float64 (for a Gaussian prior
        every row has the same covariance :math:`C` of (I1))."""
        mean = self.posterior_mean()
        w = torch.exp(self._logw)
        diff = self._means - mean[:, None]
        return torch.einsum("bk,kde->bde", w, self._C) + torch.einsum("bk,bkd,bke->bde", w, diff, diff)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One exact posterior sample per measurement: ``(B, *event_shape)``."""
        B = self.batch
        k = torch.multinomial(torch.exp(self._logw).cpu(), 1, generator=generator)[:, 0].to(self.device)
        z = torch.randn(B, self.dim, generator=generator, dtype=torch.float64).to(self.device)
        out = self._means[torch.arange(B), k] + torch.einsum("bde,be->bd", self._U[k], z * self._l[k].sqrt())
        return out.to(self.dtype).reshape(B, *self.event_shape)

    def _marginal_sd(self) -> torch.Tensor:
        """Standard deviations of every component's coordinates: ``(K, d)``."""
        return torch.sqrt(torch.diagonal(self._C, dim1=1, dim2=2))


class GaussianPosteriorDenoiser(_ComponentPosterior):
    r"""The posterior denoiser of a :class:`~gaussdiff.GaussianDenoiser` prior: (I2) on the
    posterior :math:`N(m_y, C)` of (I1). Built by ``PosteriorDenoiser(prior, A, y, sigma_y)``."""

    kind = "gaussian"
    prior_type = GaussianDenoiser

    def __init__(self, prior, A, y, sigma_y):
        super().__init__(prior, A, y, sigma_y)
        means, C = gaussian_posterior(
            prior.mean.to(torch.float64), prior.cov.to(torch.float64), self.operator, self.y, self.sigma_y
        )
        self._set_components(
            means[:, None],
            C[None],  # (B, 1, d), (1, d, d)
            torch.zeros(means.shape[0], 1, dtype=torch.float64, device=self.device),
        )

    def marginal_intervals(self, level: float = 0.9):
        """Central credible intervals of every coordinate's exact posterior marginal, at
        ``level``, from normal quantiles: ``(low, high)``, each ``(B, d)`` float64."""
        a = (1 - _check_level(level)) / 2
        mu, sd = self._means[:, 0], self._marginal_sd()[0]
        z = float(torch.special.ndtri(torch.tensor(1 - a, dtype=torch.float64)))
        return mu - z * sd, mu + z * sd

    def flow(self, x: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
        """(G4) applied to the Gaussian posterior ``N(m_y, C)``: the exact probability-flow map of
        this denoiser."""
        xf, s0 = self._prepare(x, sigma_from)
        s1 = torch.as_tensor(check_positive(sigma_to, "sigma_to", allow_zero=True), dtype=torch.float64)
        m = self._rows(xf.shape[0], self._means[:, 0])
        l, U = self._l[0], self._U[0]
        ratio = torch.sqrt((l[None] + s1**2) / (l[None] + s0.to(torch.float64)[:, None] ** 2))
        out = m + (((xf.to(torch.float64) - m) @ U) * ratio) @ U.T
        return out.to(self.dtype).reshape(x.shape)


class MixturePosteriorDenoiser(_ComponentPosterior):
    r"""The posterior denoiser of a :class:`~gaussdiff.GaussianMixtureDenoiser` prior: (M2) of
    the posterior mixture of (I3). Built by ``PosteriorDenoiser(prior, A, y, sigma_y)``."""

    kind = "mixture"
    prior_type = GaussianMixtureDenoiser

    def __init__(self, prior, A, y, sigma_y):
        super().__init__(prior, A, y, sigma_y)
        self.weights, means, C = mixture_posterior(prior, self.operator, self.y, self.sigma_y)
        self._set_components(means, C, torch.log(self.weights))

    def marginal_intervals(self, level: float = 0.9):
        r"""Central credible intervals of every coordinate's exact posterior marginal, at
        ``level``: ``(low, high)``, each ``(B, d)`` float64, the mixture CDF inverted by bisection
        (to 1e-12 relative)."""
        a = (1 - _check_level(level)) / 2
        w = torch.exp(self._logw)  # (B, K)
        mu = self._means  # (B, K, d)
        sd = self._marginal_sd()[None].expand_as(mu)

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


class EmpiricalPosteriorDenoiser(PosteriorDenoiser):
    r"""The posterior denoiser of an :class:`~gaussdiff.EmpiricalDenoiser` prior (I4): a softmax
    over the training points of the measurement's log-weights plus the (E2) logits of the query.
    Built by ``PosteriorDenoiser(prior, A, y, sigma_y)``; ``sigma_y`` must be > 0."""

    kind = "empirical"
    prior_type = EmpiricalDenoiser

    def __init__(self, prior, A, y, sigma_y):
        super().__init__(prior, A, y, sigma_y)
        self.points = training_points(prior).to(self.device)  # (N, d) float64
        self.weights = empirical_posterior(self.points, self.operator, self.y, self.sigma_y)
        self._logw = torch.log(self.weights)

    def _logits(self, x, s):
        return empirical_logits(x, self.points, s[:, None], self._rows(x.shape[0], self._logw))

    def _denoise(self, x, s):
        return (torch.softmax(self._logits(x.to(torch.float64), s.to(torch.float64)), 1) @ self.points).to(self.dtype)

    def _log_density(self, x, s):
        s64 = s.to(torch.float64)
        d = x.shape[1]
        out = torch.logsumexp(self._logits(x.to(torch.float64), s64), 1) - 0.5 * d * (_LOG_2PI + 2 * torch.log(s64))
        return out.to(self.dtype)

    def posterior_mean(self) -> torch.Tensor:
        """Exact :math:`E[x_0 \\mid y]`: ``(B, d)`` float64."""
        return self.weights @ self.points

    def posterior_cov(self) -> torch.Tensor:
        """Exact :math:`\\mathrm{Cov}[x_0 \\mid y]`: ``(B, d, d)`` float64."""
        diff = self.points[None] - self.posterior_mean()[:, None]
        return torch.einsum("bn,bnd,bne->bde", self.weights, diff, diff)

    def sample(self, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One exact posterior sample (a training point) per measurement: ``(B, *event_shape)``."""
        idx = torch.multinomial(self.weights.cpu(), 1, generator=generator)[:, 0].to(self.device)
        return self.points[idx].to(self.dtype).reshape(self.batch, *self.event_shape)

    def marginal_intervals(self, level: float = 0.9):
        """Not defined for a discrete posterior: use :meth:`credible_set`."""
        raise ValueError(
            "prior: marginal intervals of a discrete (empirical) posterior are not defined; use credible_set"
        )

    def credible_set(self, level: float = 0.9) -> torch.Tensor:
        """The smallest set of training points whose posterior mass is at least ``level``, as a
        ``(B, N)`` boolean mask."""
        w, order = torch.sort(self.weights, dim=1, descending=True)
        before = torch.cumsum(w, 1) - w
        keep_sorted = before < level
        mask = torch.zeros_like(keep_sorted)
        mask.scatter_(1, order, keep_sorted)
        return mask
