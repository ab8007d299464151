r"""The Gaussian data model: labels (G1)-(G5).

Data :math:`x_0 \sim N(\mu, \Sigma)`, :math:`\Sigma = U\,\mathrm{diag}(\lambda)\,U^T`. Because the
noise :math:`\sigma n` is isotropic, the eigen-coordinates :math:`y = U^T(\hat x - \mu)` are
independent and every result reduces to one eigenvalue :math:`\lambda \ge 0` (symbol ``lam``):

(G1)  :math:`p_\sigma = N(\mu, \Sigma + \sigma^2 I)`; per eigen-coordinate
      :math:`p_\sigma(y) = N(y; 0, \lambda + \sigma^2)`.

(G2)  :math:`D(\hat x, \sigma) = \mu + \Sigma(\Sigma + \sigma^2 I)^{-1}(\hat x - \mu)
      = \mu + U\,\mathrm{diag}\big(\tfrac{\lambda}{\lambda+\sigma^2}\big)U^T(\hat x - \mu)`, with
      posterior covariance :math:`(\Sigma^{-1} + \sigma^{-2} I)^{-1}`, per eigenvalue
      :math:`\lambda\sigma^2/(\lambda+\sigma^2)`. Derived by completing the square, per
      eigenvalue and for a symbolic 2x2 matrix.

(G3)  Score :math:`-(\Sigma + \sigma^2 I)^{-1}(\hat x - \mu) = (D - \hat x)/\sigma^2`; Jacobian
      :math:`U\,\mathrm{diag}(\lambda/(\lambda+\sigma^2))U^T`, whose trace is the effective
      dimension :math:`\sum_k \lambda_k/(\lambda_k+\sigma^2)` (from ``rank`` at
      :math:`\sigma\to0` to 0 at :math:`\sigma\to\infty`).

(G4)  Exact probability-flow solution of :math:`dy/d\sigma = (y - D)/\sigma`:
      :math:`y(\sigma) = y(\sigma_0)\sqrt{(\lambda+\sigma^2)/(\lambda+\sigma_0^2)}`.

(G5)  Output moments of the flow from :math:`\sigma_0` to :math:`\sigma_1` started at
      :math:`y \sim N(m_0, v_0)`: mean :math:`r m_0`, variance :math:`r^2 v_0`,
      :math:`r = \sqrt{(\lambda+\sigma_1^2)/(\lambda+\sigma_0^2)}`. From :math:`v_0 = \sigma_0^2`
      (the usual start :math:`N(0, \sigma_0^2 I)`): :math:`\sigma_0^2(\lambda+\sigma_1^2)/(\lambda+\sigma_0^2)`,
      which tends to :math:`\lambda` as :math:`\sigma_0 \to \infty`; from the exact marginal
      :math:`v_0 = \lambda+\sigma_0^2` it is exactly :math:`\lambda+\sigma_1^2`.

Library: ``GaussianDenoiser`` (``__call__`` G2, ``log_density``/``score`` G1/G3,
``effective_dim``/``jacobian`` G3, ``flow`` G4, ``flow_output_moments`` G5).
"""

from __future__ import annotations

import sympy as sp

from ._sym import gaussian_integral, simplify_difference

__all__ = [
    "lam",
    "sigma",
    "marginal_density",
    "denoiser_factor",
    "posterior_variance",
    "score_factor",
    "flow_ratio",
    "flow_output_variance",
    "gaussian_2x2",
    "denoiser_2x2",
    "check_G1",
    "check_G2",
    "check_G3",
    "check_G4",
    "check_G5",
]

lam = sp.Symbol("lambda", positive=True)  # an eigenvalue (lambda = 0 as a limit)
sigma, sigma0, sigma1 = sp.symbols("sigma sigma_0 sigma_1", positive=True)
y, y0 = sp.symbols("y y_0", real=True)


def marginal_density(l=lam, s=sigma, yy=y):
    r"""(G1) :math:`N(y; 0, \lambda + \sigma^2)`."""
    v = l + s**2
    return sp.exp(-(yy**2) / (2 * v)) / sp.sqrt(2 * sp.pi * v)


def denoiser_factor(l=lam, s=sigma):
    r"""(G2) The shrinkage :math:`\lambda/(\lambda+\sigma^2)`: :math:`D = \mu + U\,\mathrm{diag}(\cdot)\,U^T(\hat x-\mu)`."""
    return l / (l + s**2)


def posterior_variance(l=lam, s=sigma):
    r"""(G2) :math:`\mathrm{Var}[y_0 \mid y] = \lambda\sigma^2/(\lambda+\sigma^2)`."""
    return l * s**2 / (l + s**2)


def score_factor(l=lam, s=sigma):
    r"""(G3) :math:`\partial_y \log p_\sigma(y) = -y/(\lambda+\sigma^2)`: the factor :math:`-1/(\lambda+\sigma^2)`."""
    return -1 / (l + s**2)


def flow_ratio(l=lam, s_from=sigma0, s_to=sigma1):
    r"""(G4) :math:`y(\sigma_{to})/y(\sigma_{from}) = \sqrt{(\lambda+\sigma_{to}^2)/(\lambda+\sigma_{from}^2)}`."""
    return sp.sqrt((l + s_to**2) / (l + s_from**2))


def flow_output_variance(l=lam, s_from=sigma0, s_to=sigma1, v0=None):
    r"""(G5) :math:`v_0 (\lambda+\sigma_1^2)/(\lambda+\sigma_0^2)`, ``v0`` defaulting to :math:`\sigma_0^2`."""
    v0 = s_from**2 if v0 is None else v0
    return v0 * (l + s_to**2) / (l + s_from**2)


def _joint_exponent(l=lam, s=sigma):
    """log of p(y0) p(y | y0) without constants: -y0^2/(2 l) - (y - y0)^2/(2 s^2)."""
    return -(y0**2) / (2 * l) - (y - y0) ** 2 / (2 * s**2)


def check_G1():
    r"""(G1) :math:`\int N(y_0; 0, \lambda) N(y; y_0, \sigma^2)\,dy_0 = N(y; 0, \lambda+\sigma^2)` via the
    Gaussian-integral lemma (exponent :math:`-a y_0^2 + b y_0 + c`), and the :math:`\lambda \to 0`
    limit :math:`N(y; 0, \sigma^2)` (rank-deficient directions). Returns ``(conv, limit)`` (0)."""
    e = sp.expand(_joint_exponent())
    a = -e.coeff(y0, 2)
    b = e.coeff(y0, 1)
    c = e.coeff(y0, 0)
    conv = gaussian_integral(a, b, c) / (2 * sp.pi * sp.sqrt(lam) * sigma)
    limit = sp.limit(marginal_density(), lam, 0) - marginal_density(0)
    return simplify_difference(conv, marginal_density()), sp.simplify(limit)


def check_G2():
    r"""(G2) Completing the square. Per eigenvalue: the joint exponent equals
    :math:`-\frac{P}{2}(y_0 - m)^2 + R(y)` with precision :math:`P = 1/\lambda + 1/\sigma^2`,
    :math:`m = \lambda y/(\lambda+\sigma^2)` (the difference does not depend on :math:`y_0`);
    posterior variance :math:`1/P`. For a symbolic 2x2 :math:`\Sigma` the stationary point of the
    log posterior :math:`-\tfrac12(x_0-\mu)^T\Sigma^{-1}(x_0-\mu) - |\hat x - x_0|^2/2\sigma^2` is
    :math:`\mu + \Sigma(\Sigma+\sigma^2I)^{-1}(\hat x-\mu)` and its Hessian is the constant
    :math:`-(\Sigma^{-1}+\sigma^{-2}I)`; and for :math:`\Sigma = R_\theta\,\mathrm{diag}(\lambda_1,\lambda_2)R_\theta^T`
    the eigen form equals the matrix form.
    Returns ``(square, variance, matrix_mean, matrix_hessian, eigen_form)`` (all 0)."""
    m = denoiser_factor() * y
    P = 1 / lam + 1 / sigma**2
    rest = _joint_exponent() + P / 2 * (y0 - m) ** 2
    square = simplify_difference(sp.diff(rest, y0))  # no y0 left: a perfect square
    variance = simplify_difference(1 / P, posterior_variance())
    mean_m, hess, eig = denoiser_2x2()
    return square, variance, mean_m, hess, eig


def gaussian_2x2() -> dict:
    r"""(G2) The 2x2 matrix case: symbolic :math:`\Sigma = \begin{pmatrix} s_{11} & s_{12}\\ s_{12} & s_{22}\end{pmatrix}`,
    ``denoiser`` :math:`\mu + \Sigma(\Sigma+\sigma^2I)^{-1}(\hat x-\mu)`, ``shrink``
    :math:`\Sigma(\Sigma+\sigma^2I)^{-1}`, ``log_posterior`` in :math:`x_0` (up to constants),
    ``posterior_cov`` :math:`(\Sigma^{-1}+\sigma^{-2}I)^{-1}`; symbols ``S``, ``X``, ``M``, ``Z``
    (:math:`x_0`) and ``entries`` ``(s11, s12, s22)``."""
    a, c = sp.symbols("s11 s22", positive=True)
    b = sp.Symbol("s12", real=True)
    S = sp.Matrix([[a, b], [b, c]])
    X = sp.Matrix(sp.symbols("x1 x2", real=True))
    M = sp.Matrix(sp.symbols("mu1 mu2", real=True))
    Z = sp.Matrix(sp.symbols("z1 z2", real=True))
    I2 = sp.eye(2)
    shrink = S * (S + sigma**2 * I2).inv()
    logpost = -((Z - M).T * S.inv() * (Z - M))[0, 0] / 2 - ((X - Z).T * (X - Z))[0, 0] / (2 * sigma**2)
    return dict(
        S=S,
        X=X,
        M=M,
        Z=Z,
        entries=(a, b, c),
        shrink=shrink,
        denoiser=M + shrink * (X - M),
        log_posterior=logpost,
        posterior_cov=(S.inv() + I2 / sigma**2).inv(),
    )


def denoiser_2x2():
    """(G2) matrix case; see :func:`check_G2`. Returns the three simplified differences."""
    g = gaussian_2x2()
    Z, I2 = g["Z"], sp.eye(2)
    grad = sp.Matrix([sp.diff(g["log_posterior"], z) for z in Z])
    mean_m = simplify_difference(grad.subs(dict(zip(Z, g["denoiser"]))), sp.zeros(2, 1))
    hess = simplify_difference(sp.hessian(g["log_posterior"], list(Z)), -(g["S"].inv() + I2 / sigma**2))
    th = sp.Symbol("theta", real=True)
    l1, l2 = sp.symbols("lambda_1 lambda_2", positive=True)
    R = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    Se = R * sp.diag(l1, l2) * R.T
    eig = R * sp.diag(denoiser_factor(l1), denoiser_factor(l2)) * R.T
    eigen_form = (eig - Se * (Se + sigma**2 * I2).inv()).applyfunc(lambda e: sp.simplify(sp.trigsimp(e)))
    return mean_m, hess, eigen_form


def check_G3():
    r"""(G3) :math:`\partial_y\log N(y;0,\lambda+\sigma^2) = -y/(\lambda+\sigma^2) = (D - y)/\sigma^2`;
    Jacobian :math:`\partial_y D = \lambda/(\lambda+\sigma^2)` (its sum over eigenvalues is the effective
    dimension); its limits 1 at :math:`\sigma\to0` and 0 at :math:`\sigma\to\infty`.
    Returns ``(score, tweedie, jacobian, lim0 - 1, lim_inf)`` (all 0)."""
    score = simplify_difference(sp.diff(sp.log(marginal_density()), y), score_factor() * y)
    tweedie = simplify_difference(score_factor() * y, (denoiser_factor() * y - y) / sigma**2)
    jac = simplify_difference(sp.diff(denoiser_factor() * y, y), denoiser_factor())
    return (score, tweedie, jac, sp.limit(denoiser_factor(), sigma, 0) - 1, sp.limit(denoiser_factor(), sigma, sp.oo))


def check_G4():
    r"""(G4) :math:`y(\sigma) = y_0\sqrt{(\lambda+\sigma^2)/(\lambda+\sigma_0^2)}` solves
    :math:`dy/d\sigma = (y - \tfrac{\lambda}{\lambda+\sigma^2} y)/\sigma` with :math:`y(\sigma_0) = y_0`;
    also for :math:`\lambda = 0` (:math:`y = y_0\sigma/\sigma_0`). Returns ``(ode, initial, ode_rank0)`` (0)."""
    ys = y0 * flow_ratio(lam, sigma0, sigma)
    ode = simplify_difference(sp.diff(ys, sigma), (ys - denoiser_factor() * ys) / sigma)
    initial = simplify_difference(ys.subs(sigma, sigma0), y0)
    ys0 = y0 * sigma / sigma0
    ode0 = simplify_difference(sp.diff(ys0, sigma), (ys0 - denoiser_factor(0) * ys0) / sigma)
    return ode, initial, ode0


def check_G5():
    r"""(G5) The flow is the linear map :math:`y \mapsto r y`, so a start :math:`N(m_0, v_0)` goes to
    :math:`N(r m_0, r^2 v_0)`; checks :math:`r^2\sigma_0^2` against the formula, the exact-marginal start
    (:math:`v_0 = \lambda+\sigma_0^2 \mapsto \lambda+\sigma_1^2`), and
    :math:`\lim_{\sigma_0\to\infty}` of the output variance at :math:`\sigma_1 = 0` being :math:`\lambda`.
    Returns ``(variance, marginal, limit)`` (all 0)."""
    r = flow_ratio()
    variance = simplify_difference(r**2 * sigma0**2, flow_output_variance())
    marginal = simplify_difference(r**2 * (lam + sigma0**2), lam + sigma1**2)
    limit = sp.limit(flow_output_variance(s_to=0), sigma0, sp.oo) - lam
    return variance, marginal, limit
