r"""Posterior denoisers of linear inverse problems and the guided Gaussian flow: labels
(I1)-(I4), (CFG1)-(CFG3).

Measurement :math:`y = A x_0 + \eta`, :math:`\eta \sim N(0, \sigma_y^2 I)`; diffusion state
:math:`\hat x = x_0 + \sigma n`. Given :math:`x_0`, :math:`\hat x` and :math:`y` are independent,
so :math:`p(x_0 \mid \hat x, y) \propto p(x_0 \mid y)\,N(\hat x; x_0, \sigma^2 I)`: the posterior
denoiser is the denoiser of the posterior law, and equivalently the posterior of one stacked
linear-Gaussian observation :math:`(\hat x, y) = H x_0 + \text{noise}`, :math:`H = [I; A]`,
noise covariance :math:`\mathrm{diag}(\sigma^2 I, \sigma_y^2 I)`.

(I1)  Gaussian prior :math:`N(\mu, \Sigma)`: posterior :math:`N(m_y, C)`,
      :math:`m_y = \mu + \Sigma A^T G^{-1}(y - A\mu)`, :math:`C = \Sigma - \Sigma A^T G^{-1} A \Sigma
      = (\Sigma^{-1} + A^TA/\sigma_y^2)^{-1}`, :math:`G = A\Sigma A^T + \sigma_y^2 I`. Checked by
      completing the square in 1-D and as a matrix identity for a symbolic 2x2 :math:`\Sigma` and
      a 1x2 :math:`A`.

(I2)  Posterior denoiser: :math:`E[x_0 \mid \hat x, y] = m_y + C(C + \sigma^2 I)^{-1}(\hat x - m_y)`
      equals the stacked-observation posterior mean
      :math:`\mu + \Sigma H^T (H\Sigma H^T + R)^{-1}((\hat x, y) - H\mu)`. Checked in 1-D (completing
      the square with both likelihoods) and for the 2x2 / 1x2 matrices.

(I3)  Mixture prior: evidence :math:`\int N(x_0; \mu_k, \ell_k) N(y; a x_0, \sigma_y^2)\,dx_0 =
      N(y; a\mu_k, a^2\ell_k + \sigma_y^2)` (the lemma), and the joint evidence of
      :math:`(\hat x, y)` factorises as :math:`N(y; a\mu_k, a^2\ell_k+\sigma_y^2)\,N(\hat x; m_k(y), c_k + \sigma^2)`,
      so the responsibilities of the posterior denoiser are (M1) of the posterior mixture with
      weights :math:`w_k(y) \propto \pi_k N(y; a\mu_k, a^2\ell_k+\sigma_y^2)`.

(I4)  Empirical prior: the :math:`\ell \to 0` limit of (I3): :math:`m_k(y) \to x_i`,
      :math:`c_k \to 0`, weights :math:`\propto e^{-(y - a x_i)^2/2\sigma_y^2}`; hence
      :math:`D = \sum_i \mathrm{softmax}_i(-(y-ax_i)^2/2\sigma_y^2 - (\hat x-x_i)^2/2\sigma^2)\,x_i`.

(CFG1) Guided Gaussian denoiser :math:`D_w = (1-w) D_u + w D_c` with commuting covariances; per
      shared eigen-coordinate the homogeneous flow factor
      :math:`\Phi(\sigma_1, \sigma_0) = \big(\tfrac{l_u+\sigma_1^2}{l_u+\sigma_0^2}\big)^{(1-w)/2}
      \big(\tfrac{l_c+\sigma_1^2}{l_c+\sigma_0^2}\big)^{w/2}` solves
      :math:`dz/d\sigma = (z - D_w(z))/\sigma` for equal means.

(CFG2) Different means, :math:`z = \hat x - \mu_c`, :math:`\delta = \mu_u - \mu_c`:
      :math:`z_1 = \Phi z_0 - (1-w)\delta J`, :math:`J = F(\sigma_1)\int_{\sigma_0}^{\sigma_1}\frac{s\,ds}{(l_u+s^2)F(s)}`,
      :math:`F = (l_u+s^2)^{(1-w)/2}(l_c+s^2)^{w/2}` (variation of constants, checked with an
      unevaluated :math:`\int`); for :math:`l_u = l_c`: :math:`J = \Phi - 1`.

(CFG3) Output law from :math:`N(m_0, v_0)`: :math:`N(\Phi m_0 + c, \Phi^2 v_0)`; at ``w = 0`` and
      ``w = 1`` it is (G5) of the unconditional / conditional Gaussian.

Library: ``gaussdiff.gaussian_posterior`` (I1), ``PosteriorDenoiser`` (I2-I4),
``mixture_posterior`` (I3), ``empirical_posterior`` (I4), ``guided_gaussian_flow`` (CFG1, CFG2),
``guided_gaussian_output`` (CFG3).
"""

from __future__ import annotations

import sympy as sp

from ._sym import gaussian_integral, simplify_difference
from .gaussian import flow_ratio

__all__ = [
    "posterior_1d",
    "posterior_denoiser_1d",
    "guided_factor",
    "check_I1",
    "check_I2",
    "check_I3",
    "check_I4",
    "check_CFG1",
    "check_CFG2",
    "check_CFG3",
]

x0, xh, y, mu, a = sp.symbols("x_0 xhat y mu a", real=True)
lam, sy, sigma, ell = sp.symbols("lambda sigma_y sigma ell", positive=True)
s0, s1, lu, lc = sp.symbols("sigma_0 sigma_1 l_u l_c", positive=True)
w, z0, delta = sp.symbols("w z_0 delta", real=True)


def posterior_1d(m=mu, l=lam, aa=a, s_y=sy, yy=y):
    r"""(I1) in 1-D: ``(m_y, c)`` with :math:`G = a^2\lambda + \sigma_y^2`,
    :math:`m_y = \mu + \lambda a (y - a\mu)/G`, :math:`c = \lambda - \lambda^2 a^2/G`."""
    G = aa**2 * l + s_y**2
    return m + l * aa * (yy - aa * m) / G, l - l**2 * aa**2 / G


def posterior_denoiser_1d(m=mu, l=lam, aa=a, s_y=sy, yy=y, s=sigma, x=xh):
    r"""(I2) in 1-D: :math:`m_y + c/(c+\sigma^2)(\hat x - m_y)`."""
    my, c = posterior_1d(m, l, aa, s_y, yy)
    return my + c / (c + s**2) * (x - my)


def _square(expr, var):
    """Mean and variance of the Gaussian ``exp(expr)`` in ``var`` (expr quadratic in var)."""
    e = sp.expand(expr)
    A2 = -e.coeff(var, 2)
    B1 = e.coeff(var, 1)
    return B1 / (2 * A2), 1 / (2 * A2)


def check_I1():
    r"""(I1) Completing the square of :math:`-(x_0-\mu)^2/2\lambda - (y - a x_0)^2/2\sigma_y^2` gives
    the gain form; the 2x2 matrix identity :math:`\Sigma - \Sigma A^TG^{-1}A\Sigma = (\Sigma^{-1} + A^TA/\sigma_y^2)^{-1}`
    and the mean :math:`C(\Sigma^{-1}\mu + A^T y/\sigma_y^2)`. Returns four differences (0)."""
    m_sq, v_sq = _square(-((x0 - mu) ** 2) / (2 * lam) - (y - a * x0) ** 2 / (2 * sy**2), x0)
    my, c = posterior_1d()
    s11, s22 = sp.symbols("s11 s22", positive=True)
    s12, a1, a2, m1, m2, y1 = sp.symbols("s12 a1 a2 m1 m2 y1", real=True)
    S = sp.Matrix([[s11, s12], [s12, s22]])
    A = sp.Matrix([[a1, a2]])
    M = sp.Matrix([m1, m2])
    G = A * S * A.T + sp.Matrix([[sy**2]])
    K = S * A.T * G.inv()
    C_gain = S - K * A * S
    C_prec = (S.inv() + A.T * A / sy**2).inv()
    mean_gain = M + K * (sp.Matrix([[y1]]) - A * M)
    mean_prec = C_prec * (S.inv() * M + A.T * sp.Matrix([[y1]]) / sy**2)
    return (
        simplify_difference(m_sq, my),
        simplify_difference(v_sq, c),
        simplify_difference(C_gain, C_prec),
        simplify_difference(mean_gain, mean_prec),
    )


def check_I2():
    r"""(I2) 1-D: completing the square with both likelihoods (prior, :math:`\hat x`, :math:`y`)
    gives the denoiser of the posterior law; stacked 2x1 observation :math:`H = [1; a]`,
    :math:`R = \mathrm{diag}(\sigma^2, \sigma_y^2)` gives the same. Returns ``(square, stacked)`` (0)."""
    m_sq, _ = _square(
        -((x0 - mu) ** 2) / (2 * lam) - (y - a * x0) ** 2 / (2 * sy**2) - (xh - x0) ** 2 / (2 * sigma**2), x0
    )
    D = posterior_denoiser_1d()
    H = sp.Matrix([[1], [a]])
    R = sp.diag(sigma**2, sy**2)
    obs = sp.Matrix([xh, y])
    stacked = mu + (lam * H.T * (H * lam * H.T + R).inv() * (obs - H * mu))[0, 0]
    return simplify_difference(m_sq, D), simplify_difference(stacked, D)


def check_I3():
    r"""(I3) Evidence by the lemma, and the factorisation of the joint evidence of
    :math:`(\hat x, y)` for one component. Returns ``(evidence, factorisation)`` (0)."""

    def normal(v, m, var):
        return sp.exp(-((v - m) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)

    e = sp.expand(-((x0 - mu) ** 2) / (2 * ell) - (y - a * x0) ** 2 / (2 * sy**2))
    ev = gaussian_integral(-e.coeff(x0, 2), e.coeff(x0, 1), e.coeff(x0, 0)) / (2 * sp.pi * sp.sqrt(ell) * sy)
    evidence = simplify_difference(sp.log(ev), sp.log(normal(y, a * mu, a**2 * ell + sy**2)))
    e2 = sp.expand(e - (xh - x0) ** 2 / (2 * sigma**2))
    joint = gaussian_integral(-e2.coeff(x0, 2), e2.coeff(x0, 1), e2.coeff(x0, 0)) / (
        (2 * sp.pi) ** sp.Rational(3, 2) * sp.sqrt(ell) * sy * sigma
    )
    my, c = posterior_1d(mu, ell)
    fact = normal(y, a * mu, a**2 * ell + sy**2) * normal(xh, my, c + sigma**2)
    return evidence, simplify_difference(
        sp.expand_log(sp.log(joint), force=True), sp.expand_log(sp.log(fact), force=True)
    )


def check_I4():
    r"""(I4) :math:`\ell \to 0`: posterior mean :math:`\to x_i` (here :math:`\mu`), variance
    :math:`\to 0`, log evidence :math:`\to -(y-a\mu)^2/2\sigma_y^2 + \text{const}`, and the posterior
    denoiser of one component :math:`\to \mu`. Returns four differences (0)."""
    my, c = posterior_1d(mu, ell)
    logev = -((y - a * mu) ** 2) / (2 * (a**2 * ell + sy**2)) - sp.log(a**2 * ell + sy**2) / 2
    return (
        sp.limit(my, ell, 0) - mu,
        sp.limit(c, ell, 0),
        sp.simplify(sp.limit(logev, ell, 0) - (-((y - a * mu) ** 2) / (2 * sy**2) - sp.log(sy**2) / 2)),
        sp.simplify(sp.limit(posterior_denoiser_1d(mu, ell), ell, 0) - mu),
    )


def guided_factor(l_u=lu, l_c=lc, ww=w, a0=s0, a1=s1):
    r"""(CFG1) :math:`\Phi = ((l_u+\sigma_1^2)/(l_u+\sigma_0^2))^{(1-w)/2}((l_c+\sigma_1^2)/(l_c+\sigma_0^2))^{w/2}`."""
    ww = sp.S(ww)
    return ((l_u + a1**2) / (l_u + a0**2)) ** ((1 - ww) / 2) * ((l_c + a1**2) / (l_c + a0**2)) ** (ww / 2)


def _guided_rhs(z, s, dmu=0):
    """``(z - (D_w - mu_c)) / s`` for the guided denoiser in one eigen-coordinate, ``z = x - mu_c``."""
    Du = delta + lu / (lu + s**2) * (z - delta)  # D_u - mu_c
    Dc = lc / (lc + s**2) * z  # D_c - mu_c
    return (z - ((1 - w) * Du + w * Dc)) / s


def check_CFG1():
    r"""(CFG1) :math:`z = \Phi(\sigma, \sigma_0) z_0` solves the guided ODE with :math:`\delta = 0`,
    :math:`z(\sigma_0) = z_0`; at ``w = 0`` :math:`\Phi` is (G4). Returns three differences (0)."""
    z = guided_factor(a1=sigma) * z0
    ode = sp.simplify((sp.diff(z, sigma) - _guided_rhs(z, sigma).subs(delta, 0)) / z0)
    init = sp.simplify(z.subs(sigma, s0) - z0)
    g4 = simplify_difference(guided_factor(ww=0), flow_ratio(lu, s0, s1))
    return ode, init, g4


def check_CFG2():
    r"""(CFG2) Variation of constants with :math:`K(\sigma) = \int_{\sigma_0}^{\sigma} s/((l_u+s^2)F(s))ds`
    left unevaluated (only :math:`K' ` and :math:`K(\sigma_0) = 0` are used):
    :math:`z = \Phi z_0 - (1-w)\delta F(\sigma) K(\sigma)` solves the ODE; for :math:`l_u = l_c = l`
    the integral is :math:`\Phi - 1`. Returns ``(ode, equal_eigenvalues)`` (0)."""
    F = lambda s: (lu + s**2) ** ((1 - w) / 2) * (lc + s**2) ** (w / 2)  # noqa: E731
    K = sp.Function("K")(sigma)
    z = F(sigma) / F(s0) * z0 - (1 - w) * delta * F(sigma) * K
    dz = sp.diff(z, sigma).subs(sp.Derivative(K, sigma), sigma / ((lu + sigma**2) * F(sigma)))
    ode = sp.simplify(sp.powsimp(sp.expand(dz - _guided_rhs(z, sigma)), force=True))
    l, s = sp.symbols("l s", positive=True)
    Fl = sp.sqrt(l + s**2)
    integral = sp.sqrt(l + s1**2) * sp.integrate(s / ((l + s**2) * Fl), (s, s0, s1))
    equal = simplify_difference(integral, flow_ratio(l, s0, s1) - 1)
    return ode, equal


def check_CFG3():
    r"""(CFG3) The output variance :math:`\Phi^2 v_0` is (G5) at ``w = 0`` (unconditional) and
    ``w = 1`` (conditional); the output mean at ``w = 1`` is :math:`\mu_c + \Phi(m_0 - \mu_c)`.
    Returns three differences (0)."""
    v0 = sp.Symbol("v_0", positive=True)
    from .gaussian import flow_output_variance

    var0 = simplify_difference(guided_factor(ww=0) ** 2 * v0, flow_output_variance(lu, s0, s1, v0))
    var1 = simplify_difference(guided_factor(ww=1) ** 2 * v0, flow_output_variance(lc, s0, s1, v0))
    # mean at w = 1: the delta term carries the factor (1 - w)
    z1 = guided_factor(ww=1) * z0 - (1 - 1) * delta
    mean1 = simplify_difference(z1, flow_ratio(lc, s0, s1) * z0)
    return var0, var1, mean1
