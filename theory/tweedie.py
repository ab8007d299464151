r"""Tweedie's formula and its second-order companion: labels (T1)-(T3).

Let :math:`\hat x = x_0 + \sigma n` with :math:`n \sim N(0, I)` independent of
:math:`x_0 \sim p_0`, so :math:`p_\sigma = p_0 * \varphi_\sigma` with the Gaussian kernel
:math:`\varphi_\sigma(z) = (2\pi\sigma^2)^{-d/2} e^{-|z|^2/2\sigma^2}`.

(T1)  :math:`\nabla \log p_\sigma(\hat x) = (E[x_0 \mid \hat x] - \hat x)/\sigma^2`
      (Robbins 1956, Efron 2011), i.e. :math:`D = \hat x + \sigma^2 \nabla\log p_\sigma`.

(T2)  General Gaussian convolution: for :math:`\hat x = x_0 + n`, :math:`n \sim N(0, C)`,
      :math:`E[x_0 \mid \hat x] = \hat x + C\,\nabla \log p(\hat x)`.

(T3)  Second order: :math:`\partial E[x_0\mid\hat x]/\partial\hat x = \mathrm{Cov}[x_0 \mid \hat x]/\sigma^2
      = I + \sigma^2 \nabla^2 \log p_\sigma` (the Jacobian of an optimal denoiser is a posterior
      covariance, symmetric positive semi-definite).

Proof pattern. Differentiating under the integral,
:math:`\nabla p(\hat x) = \int p_0(x_0)\, \nabla_{\hat x}\varphi(\hat x - x_0)\, dx_0`, so each
result reduces to an identity of the Gaussian kernel, which sympy proves
(``kernel`` entries of the checks), followed by dividing by :math:`p`. Each result is also
checked exactly on a generic discrete prior :math:`p_0 = \sum_k w_k \delta_{a_k}` (symbolic
weights and atoms), where the integrals are finite sums.

Library: ``Denoiser.score`` / ``score_from_denoiser`` (T1), ``GaussianDenoiser.jacobian`` and
``EmpiricalDenoiser.jacobian`` (T3).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ._sym import simplify_difference

__all__ = ["discrete_prior_1d", "general_2d", "check_T1", "check_T2", "check_T3", "kernel_1d", "kernel_general"]

x, x0 = sp.symbols("x x_0", real=True)
sigma = sp.Symbol("sigma", positive=True)


def kernel_1d(z, s=sigma):
    r""":math:`\varphi_s(z) = e^{-z^2/2s^2}/\sqrt{2\pi s^2}`."""
    return sp.exp(-(z**2) / (2 * s**2)) / sp.sqrt(2 * sp.pi * s**2)


def kernel_general(z: sp.Matrix, C: sp.Matrix):
    r""":math:`\varphi_C(z) = \det(2\pi C)^{-1/2} e^{-z^T C^{-1} z/2}`."""
    return sp.exp(-(z.T * C.inv() * z)[0, 0] / 2) / sp.sqrt((2 * sp.pi) ** z.shape[0] * C.det())


@lru_cache(maxsize=None)
def discrete_prior_1d(K: int = 3) -> dict:
    r"""A generic 1-D discrete prior :math:`p_0 = \sum_k w_k \delta_{a_k}` noised at ``sigma``.

    Returns ``p`` (:math:`p_\sigma(x) = \sum_k w_k \varphi_\sigma(x - a_k)`), ``score``
    (:math:`\partial_x \log p_\sigma`, by differentiation), ``posterior_mean``
    (:math:`\sum_k w_k a_k\varphi_\sigma(x - a_k)/p_\sigma`), ``posterior_var``, and the symbols
    ``w``, ``a``."""
    w = sp.symbols(f"w_1:{K + 1}", positive=True)
    a = sp.symbols(f"a_1:{K + 1}", real=True)
    terms = [wk * kernel_1d(x - ak) for wk, ak in zip(w, a)]
    p = sp.Add(*terms)
    mean = sp.Add(*[t * ak for t, ak in zip(terms, a)]) / p
    second = sp.Add(*[t * ak**2 for t, ak in zip(terms, a)]) / p
    return dict(p=p, score=sp.diff(sp.log(p), x), posterior_mean=mean, posterior_var=second - mean**2, w=w, a=a)


def check_T1():
    r"""(T1) Returns ``(kernel, discrete)``: the kernel identity
    :math:`\partial_{\hat x}\varphi_\sigma(\hat x - x_0) = \frac{x_0 - \hat x}{\sigma^2}\varphi_\sigma`
    and Tweedie on a generic 3-atom prior, both 0."""
    kernel = simplify_difference(sp.diff(kernel_1d(x - x0), x), (x0 - x) / sigma**2 * kernel_1d(x - x0))
    pr = discrete_prior_1d(3)
    discrete = simplify_difference(pr["score"], (pr["posterior_mean"] - x) / sigma**2)
    return kernel, discrete


@lru_cache(maxsize=None)
def general_2d() -> dict:
    r"""(T2) 2-D objects: symbolic covariance :math:`C = \begin{pmatrix} c_{11} & c_{12} \\ c_{12} & c_{22}\end{pmatrix}`,
    the unnormalised kernel ``phi(z)`` :math:`= e^{-z^TC^{-1}z/2}` (its normalisation does not depend
    on :math:`\hat x`), and for a generic 2-atom prior :math:`w_1\delta_{a_1} + w_2\delta_{a_2}`:
    ``p``, ``posterior_mean``, ``score`` (:math:`\nabla\log p`), ``tweedie``
    (:math:`\hat x + C\nabla\log p`); symbols ``C``, ``X``, ``X0``, ``w``, ``A``."""
    c11, c22 = sp.symbols("c11 c22", positive=True)
    c12 = sp.Symbol("c12", real=True)
    C = sp.Matrix([[c11, c12], [c12, c22]])
    X = sp.Matrix(sp.symbols("x1 x2", real=True))
    X0 = sp.Matrix(sp.symbols("y1 y2", real=True))
    Ci = C.inv()
    phi = lambda z: sp.exp(-(z.T * Ci * z)[0, 0] / 2)  # noqa: E731
    w = sp.symbols("w1 w2", positive=True)
    A = [sp.Matrix(sp.symbols("a11 a12", real=True)), sp.Matrix(sp.symbols("a21 a22", real=True))]
    terms = [w[0] * phi(X - A[0]), w[1] * phi(X - A[1])]
    p = terms[0] + terms[1]
    mean = (terms[0] * A[0] + terms[1] * A[1]) / p
    score = sp.Matrix([sp.diff(sp.log(p), xi) for xi in X])
    return dict(C=C, X=X, X0=X0, phi=phi, p=p, posterior_mean=mean, score=score, tweedie=X + C * score, w=w, A=A)


def check_T2():
    r"""(T2) Returns ``(kernel, discrete)`` for :func:`general_2d`:
    :math:`\nabla\varphi_C(\hat x - x_0) = C^{-1}(x_0 - \hat x)\varphi_C` and
    :math:`E[x_0\mid\hat x] - (\hat x + C\nabla\log p)` on the 2-atom prior; zero vectors."""
    g = general_2d()
    X, X0, C, phi = g["X"], g["X0"], g["C"], g["phi"]
    grad = sp.Matrix([sp.diff(phi(X - X0), xi) for xi in X])
    kernel = simplify_difference(grad, C.inv() * (X0 - X) * phi(X - X0))
    discrete = simplify_difference(g["posterior_mean"], g["tweedie"])
    return kernel, discrete


def check_T3():
    r"""(T3) Returns ``(kernel, discrete, hessian)``:
    :math:`\partial^2_{\hat x}\varphi_\sigma = \big((x_0-\hat x)^2/\sigma^4 - 1/\sigma^2\big)\varphi_\sigma`;
    on a generic 3-atom prior :math:`\partial_{\hat x} E[x_0\mid\hat x] = \mathrm{Var}[x_0\mid\hat x]/\sigma^2`
    and :math:`= 1 + \sigma^2\,\partial^2\log p_\sigma`; all 0."""
    kernel = simplify_difference(
        sp.diff(kernel_1d(x - x0), x, 2), ((x0 - x) ** 2 / sigma**4 - 1 / sigma**2) * kernel_1d(x - x0)
    )
    pr = discrete_prior_1d(3)
    dmean = sp.diff(pr["posterior_mean"], x)
    discrete = simplify_difference(dmean, pr["posterior_var"] / sigma**2)
    hessian = simplify_difference(dmean, 1 + sigma**2 * sp.diff(pr["score"], x))
    return kernel, discrete, hessian
