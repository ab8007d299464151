r"""Dynamical regimes of diffusion (Biroli, Bonnaire, de Bortoli & Mézard 2024): labels (R1)-(R3).

Time is the Ornstein-Uhlenbeck time of the paper, :math:`x_t = e^{-t}x_0 + \sqrt{\Delta_t}\,n`,
:math:`\Delta_t = 1 - e^{-2t}`; in the EDM convention (C1) this is ``gaussdiff.OU``:
:math:`s = e^{-t}`, :math:`\sigma^2 = e^{2t} - 1`. Going backwards from pure noise, the generative
dynamics meets first a *speciation* time :math:`t_S` (the classes separate) and later a
*collapse* time :math:`t_C < t_S` (trajectories are captured by single training points when the
score is the empirical one).

(R1)  Speciation time :math:`t_S = \tfrac12\log\Lambda`, :math:`\Lambda` the largest eigenvalue of
      the data covariance: the time at which the signal variance along the top principal
      direction, :math:`\Lambda e^{-2t}`, equals the unit variance of the OU noise (the paper's
      linear-stability criterion). In EDM noise level: :math:`\sigma_S^2 = \Lambda - 1`.

(R2)  Exact symmetry breaking for the two-cluster model :math:`x_0 = \pm m + \sqrt v\,z`
      (equal weights, :math:`z\sim N(0, I_d)`), whose covariance :math:`mm^T + vI` has
      :math:`\Lambda = |m|^2 + v`. Along :math:`u = m/|m|`, with :math:`\Gamma_t = ve^{-2t} + \Delta_t`,
      :math:`\log p_t(q) = -q^2/2\Gamma_t + \log\cosh(q|m|e^{-t}/\Gamma_t) + \text{const}`;
      its curvature at :math:`q = 0` is :math:`-1/\Gamma_t + |m|^2e^{-2t}/\Gamma_t^2`, which changes
      sign (unimodal :math:`\to` bimodal) at
      :math:`t^* = \tfrac12\log(|m|^2 + 1 - v) = \tfrac12\log(\Lambda + 1 - 2v)` (needs
      :math:`|m|^2 > v`). :math:`t^* - t_S = \tfrac12\log(1 + (1-2v)/\Lambda) \to 0` as
      :math:`\Lambda \to \infty` (the paper's large-d regime :math:`|m|^2 \propto d`), so (R1) is the
      leading-order form of (R2).

(R3)  Collapse time from the random-energy-model argument. With :math:`N = e^{\alpha d}` training
      points the empirical :math:`p^e_t = \frac1N\sum_i N(e^{-t}x_i, \Delta_t I)` still reproduces
      :math:`p_t` while :math:`\log N` exceeds the *excess entropy*
      :math:`H[p_t] - H[N(0, \Delta_t I)]`; the trajectories condense on training points (a glass
      transition of the REM) when the two are equal. For Gaussian data with covariance
      eigenvalues :math:`\lambda_k`, :math:`H[p_t] = \tfrac12\sum_k\log 2\pi e(\lambda_k e^{-2t}+\Delta_t)`, so
      :math:`t_C` solves

      .. math:: \log N = \tfrac12\sum_k \log\Big(1 + \frac{\lambda_k e^{-2t}}{\Delta_t}\Big)
                       = \tfrac12\sum_k \log\Big(1 + \frac{\lambda_k}{\sigma^2}\Big),\quad \sigma^2 = e^{2t}-1,

      and for isotropic data (:math:`\lambda_k = v`, :math:`k = 1..d`)
      :math:`t_C = \tfrac12\log\big(1 + v/(N^{2/d} - 1)\big)`, :math:`\sigma_C^2 = v/(N^{2/d}-1)`.
      Assumptions: :math:`d\to\infty` with :math:`\alpha = \log N/d` fixed (finite-d corrections
      are not included); the entropy is that of the noised *population* law. For the two-cluster
      model use the within-cluster spectrum: the mixing entropy (at most :math:`\log 2`) is
      :math:`O(1)`, negligible against :math:`O(d)`; ``gaussdiff.collapse_time(...,
      n_clusters=2)`` keeps it in the well-separated form :math:`\log(N/2)`.

Library: ``gaussdiff.speciation_time`` (R1), ``gaussdiff.symmetry_breaking_time`` (R2),
``gaussdiff.collapse_time`` (R3), ``gaussdiff.OU`` for the time <-> sigma map.
"""

from __future__ import annotations

import sympy as sp

from ._sym import simplify_difference

__all__ = [
    "t",
    "Lambda",
    "speciation_time",
    "symmetry_breaking_time",
    "collapse_time_isotropic",
    "excess_entropy",
    "check_R1",
    "check_R2",
    "check_R3",
]

t = sp.Symbol("t", positive=True)
Lambda = sp.Symbol("Lambda", positive=True)
m2, v, q = sp.Symbol("m2", positive=True), sp.Symbol("v", positive=True), sp.Symbol("q", real=True)
N, d, lam = sp.symbols("N d lambda", positive=True)


def speciation_time(L=Lambda):
    r"""(R1) :math:`t_S = \tfrac12\log\Lambda`."""
    return sp.log(L) / 2


def symmetry_breaking_time(mean_norm2=m2, var=v):
    r"""(R2) :math:`t^* = \tfrac12\log(|m|^2 + 1 - v)`."""
    return sp.log(mean_norm2 + 1 - var) / 2


def excess_entropy(l=lam, tt=t):
    r"""(R3) Per eigenvalue: :math:`\tfrac12\log(1 + \lambda e^{-2t}/\Delta_t)`."""
    return sp.log(1 + l * sp.exp(-2 * tt) / (1 - sp.exp(-2 * tt))) / 2


def collapse_time_isotropic(n=N, dim=d, var=v):
    r"""(R3) :math:`t_C = \tfrac12\log(1 + v/(N^{2/d} - 1))`."""
    return sp.log(1 + var / (n ** (2 / dim) - 1)) / 2


def check_R1():
    r"""(R1) :math:`t_S` is the root of :math:`\Lambda e^{-2t} = 1` (sympy ``solve``), and
    :math:`\sigma(t_S)^2 = \Lambda - 1` for the OU schedule. Returns ``(root, sigma2)`` (0)."""
    roots = sp.solve(sp.Eq(Lambda * sp.exp(-2 * t), 1), t)
    root = simplify_difference(roots[0], speciation_time()) if len(roots) == 1 else sp.Symbol("no_unique_root")
    sigma2 = simplify_difference(sp.exp(2 * speciation_time()) - 1, Lambda - 1)
    return root, sigma2


def check_R2():
    r"""(R2) The top eigenvalue of :math:`mm^T + vI` (2-D instance) is :math:`|m|^2+v`; the curvature of
    :math:`\log p_t` along :math:`u` at 0 is :math:`-1/\Gamma + |m|^2e^{-2t}/\Gamma^2` and vanishes at
    :math:`t^*`; :math:`t^* - t_S \to 0` as :math:`\Lambda\to\infty`.
    Returns ``(eigen, curvature, at_tstar, limit)`` (all 0)."""
    a, b = sp.symbols("m_1 m_2", real=True)
    M = sp.Matrix([a, b])
    cov = M * M.T + v * sp.eye(2)
    eigen = simplify_difference(cov * M, (a**2 + b**2 + v) * M)
    mn = sp.sqrt(m2)
    gam = v * sp.exp(-2 * t) + 1 - sp.exp(-2 * t)
    logp = sp.log(sp.exp(-((q - mn * sp.exp(-t)) ** 2) / (2 * gam)) + sp.exp(-((q + mn * sp.exp(-t)) ** 2) / (2 * gam)))
    curv = sp.diff(logp, q, 2).subs(q, 0)
    formula = -1 / gam + m2 * sp.exp(-2 * t) / gam**2
    curvature = simplify_difference(curv, formula)
    at_tstar = simplify_difference(formula.subs(t, symmetry_breaking_time()))
    limit = sp.limit(symmetry_breaking_time(Lambda - v, v) - speciation_time(), Lambda, sp.oo)
    return eigen, curvature, at_tstar, limit


def check_R3():
    r"""(R3) Excess entropy: :math:`\tfrac12\log 2\pi e(\lambda e^{-2t}+\Delta_t) - \tfrac12\log 2\pi e\Delta_t`
    equals :func:`excess_entropy` and :math:`\tfrac12\log(1+\lambda/\sigma^2)` at :math:`\sigma^2 = e^{2t}-1`;
    the isotropic :math:`t_C` solves :math:`\log N = d\cdot\text{excess}(v, t)`.
    Returns ``(entropy, sigma_form, root)`` (all 0)."""
    delta = 1 - sp.exp(-2 * t)
    H = lambda var: sp.log(2 * sp.pi * sp.E * var) / 2  # noqa: E731
    # compare exp(2 * .) of both sides (the logs are of positive quantities)
    entropy = simplify_difference(
        sp.exp(2 * (H(lam * sp.exp(-2 * t) + delta) - H(delta))), sp.exp(2 * excess_entropy())
    )
    sigma_form = simplify_difference(sp.exp(2 * excess_entropy()), 1 + lam / (sp.exp(2 * t) - 1))
    tc = collapse_time_isotropic()
    # log N = d * excess(v, t_C)  <=>  N^{2/d} = exp(2 excess) = 1 + v / sigma_C^2
    root = simplify_difference(sp.exp(2 * excess_entropy(v, tc)), N ** (2 / d))
    return entropy, sigma_form, root
