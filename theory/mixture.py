r"""Gaussian mixtures and the empirical distribution: labels (M1), (M2), (E1)-(E3).

Data :math:`x_0 \sim \sum_k \pi_k N(\mu_k, S_k)`. Conditioning on the component :math:`k`,
(G1) gives :math:`\hat x \mid k \sim N(\mu_k, S_k + \sigma^2 I)`, hence by Bayes and the tower
rule

(M1)  :math:`r_k(\hat x, \sigma) = P(k \mid \hat x) = \dfrac{\pi_k N(\hat x; \mu_k, S_k+\sigma^2 I)}{\sum_j \pi_j N(\hat x; \mu_j, S_j+\sigma^2 I)}`
      (a softmax of :math:`\log\pi_k - \tfrac12 (\hat x-\mu_k)^T(S_k+\sigma^2I)^{-1}(\hat x-\mu_k) - \tfrac12\log\det(S_k+\sigma^2 I)`);

(M2)  :math:`D(\hat x, \sigma) = \sum_k r_k\,[\mu_k + S_k(S_k+\sigma^2I)^{-1}(\hat x - \mu_k)]`
      (each bracket is the component's Gaussian denoiser (G2)).

The empirical distribution :math:`\frac1N\sum_i \delta_{x_i}` is the mixture with
:math:`\pi_i = 1/N`, :math:`\mu_i = x_i`, :math:`S_i = h^2 I` in the limit :math:`h \to 0`
(every expression is continuous in :math:`h` at 0 since :math:`\sigma > 0`; the error is
:math:`O(h^2)`):

(E1)  :math:`\log p_\sigma(\hat x) = \mathrm{logsumexp}_i(-|\hat x-x_i|^2/2\sigma^2) - \log N - \tfrac d2\log(2\pi\sigma^2)`;

(E2)  :math:`D(\hat x, \sigma) = \sum_i \mathrm{softmax}_i(-|\hat x-x_i|^2/2\sigma^2)\,x_i`;

(E3)  :math:`\partial D/\partial\hat x = \mathrm{Cov}[x_0\mid\hat x]/\sigma^2
      = \big(\sum_i w_i x_i x_i^T - D D^T\big)/\sigma^2` (the empirical case of (T3)).

The symbolic checks are in 1-D with K = 2 components of generic weights, means and variances
(M1, M2), 1-D with N = 3 points (E1, E2) and 2-D with N = 2 points (E3).

Library: ``GaussianMixtureDenoiser`` (``responsibilities`` M1, ``__call__`` M2,
``smoothed_empirical``), ``EmpiricalDenoiser`` (``log_density`` E1, ``__call__`` E2,
``jacobian`` E3).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ._sym import simplify_difference
from .gaussian import denoiser_factor, marginal_density

__all__ = ["mixture_1d", "empirical_1d", "empirical_2d", "check_M1", "check_M2", "check_E1", "check_E2", "check_E3"]

x = sp.Symbol("x", real=True)
sigma, h = sp.symbols("sigma h", positive=True)


@lru_cache(maxsize=None)
def mixture_1d(K: int = 2) -> dict:
    r"""A generic 1-D mixture of ``K`` Gaussians noised at ``sigma``.

    Returns ``p`` (:math:`\sum_k \pi_k N(x; \mu_k, \ell_k+\sigma^2)`), ``resp`` (M1, list),
    ``logits`` (the softmax form, list), ``denoiser`` (M2), ``tweedie`` (:math:`x + \sigma^2\partial_x\log p`)
    and the symbols ``pi``, ``mu``, ``ell``."""
    pi = sp.symbols(f"pi_1:{K + 1}", positive=True)
    mu = sp.symbols(f"mu_1:{K + 1}", real=True)
    ell = sp.symbols(f"ell_1:{K + 1}", positive=True)
    comps = [pk * marginal_density(lk, sigma, x - mk) for pk, mk, lk in zip(pi, mu, ell)]
    p = sp.Add(*comps)
    resp = [c / p for c in comps]
    logits = [
        sp.log(pk) - (x - mk) ** 2 / (2 * (lk + sigma**2)) - sp.log(lk + sigma**2) / 2
        for pk, mk, lk in zip(pi, mu, ell)
    ]
    den = sp.Add(*[r * (mk + denoiser_factor(lk) * (x - mk)) for r, mk, lk in zip(resp, mu, ell)])
    return dict(
        p=p, resp=resp, logits=logits, denoiser=den, tweedie=x + sigma**2 * sp.diff(sp.log(p), x), pi=pi, mu=mu, ell=ell
    )


@lru_cache(maxsize=None)
def empirical_1d(N: int = 3) -> dict:
    r"""(E1)/(E2) for ``N`` generic 1-D points: ``log_density``, ``denoiser``, ``weights`` and the
    symbols ``pts``."""
    pts = sp.symbols(f"x_1:{N + 1}", real=True)
    e = [sp.exp(-((x - xi) ** 2) / (2 * sigma**2)) for xi in pts]
    Z = sp.Add(*e)
    return dict(
        log_density=sp.log(Z) - sp.log(N) - sp.log(2 * sp.pi * sigma**2) / 2,
        denoiser=sp.Add(*[ei * xi for ei, xi in zip(e, pts)]) / Z,
        weights=[ei / Z for ei in e],
        pts=pts,
    )


def check_M1():
    r"""(M1) Bayes responsibilities equal the softmax of the library's logits and sum to 1
    (1-D, K = 2). Returns ``(softmax, total)`` (0)."""
    m = mixture_1d(2)
    ex = [sp.exp(lg) for lg in m["logits"]]
    softmax = simplify_difference(m["resp"][0], ex[0] / (ex[0] + ex[1]))
    total = simplify_difference(m["resp"][0] + m["resp"][1], 1)
    return softmax, total


def check_M2():
    r"""(M2) The mixture denoiser equals Tweedie (T1) applied to the mixture density,
    :math:`\hat x + \sigma^2\partial_x\log p_\sigma` (1-D, K = 2, generic parameters). Returns 0."""
    m = mixture_1d(2)
    return simplify_difference(m["denoiser"], m["tweedie"])


def _smoothed_empirical(N: int):
    """The mixture with pi = 1/N, mu_i = x_i, ell_i = h^2, in the symbols of empirical_1d(N)."""
    m = mixture_1d(N)
    pts = empirical_1d(N)["pts"]
    sub = {**{p: sp.Rational(1, N) for p in m["pi"]}, **dict(zip(m["mu"], pts)), **{l: h**2 for l in m["ell"]}}
    return {k: (v.subs(sub) if isinstance(v, sp.Basic) else v) for k, v in m.items() if k in ("p", "denoiser")}


def check_E1():
    r"""(E1) :math:`\lim_{h\to0}\log p_\sigma` of the smoothed empirical mixture (1-D, N = 3) equals
    the empirical log density. Returns 0."""
    sm = _smoothed_empirical(3)
    lim = sp.log(sm["p"]).subs(h, 0)  # continuous at h = 0 because sigma > 0
    return simplify_difference(
        sp.expand_log(lim, force=True), sp.expand_log(empirical_1d(3)["log_density"], force=True)
    )


def check_E2():
    r"""(E2) :math:`\lim_{h\to0}` of the smoothed empirical denoiser (1-D, N = 2 and 3) is the
    softmax-weighted mean of the points, and the error is :math:`O(h^2)` (N = 2: the first-order
    term of the series in :math:`h` vanishes). Returns ``(limit_N3, limit_N2, first_order)`` (0)."""
    sm3 = _smoothed_empirical(3)
    lim3 = simplify_difference(sm3["denoiser"].subs(h, 0), empirical_1d(3)["denoiser"])
    sm2 = _smoothed_empirical(2)
    lim2 = simplify_difference(sp.limit(sm2["denoiser"], h, 0), empirical_1d(2)["denoiser"])
    first = simplify_difference(sp.diff(sm2["denoiser"], h).subs(h, 0))
    return lim3, lim2, first


@lru_cache(maxsize=None)
def empirical_2d() -> dict:
    r"""(E2)/(E3) in 2-D with two generic points ``P = [p_1, p_2]`` at query ``X``: ``weights``,
    ``denoiser`` (2x1), ``jacobian`` (:math:`\partial D/\partial\hat x`, by differentiation) and
    ``posterior_cov`` (:math:`\sum_i w_i p_ip_i^T - DD^T`)."""
    X = sp.Matrix(sp.symbols("u1 u2", real=True))
    P = [sp.Matrix(sp.symbols("p11 p12", real=True)), sp.Matrix(sp.symbols("p21 p22", real=True))]
    e = [sp.exp(-((X - p).T * (X - p))[0, 0] / (2 * sigma**2)) for p in P]
    Z = e[0] + e[1]
    w = [ei / Z for ei in e]
    D = w[0] * P[0] + w[1] * P[1]
    cov = w[0] * P[0] * P[0].T + w[1] * P[1] * P[1].T - D * D.T
    return dict(X=X, P=P, weights=w, denoiser=D, jacobian=D.jacobian(X), posterior_cov=cov)


def check_E3():
    r"""(E3) In 2-D with N = 2 generic points (:func:`empirical_2d`), the Jacobian of the empirical
    denoiser equals the posterior covariance over :math:`\sigma^2`. Returns a zero 2x2 matrix."""
    e = empirical_2d()
    return simplify_difference(e["jacobian"], e["posterior_cov"] / sigma**2)
