r"""Euler and Heun on a Gaussian, exactly (Pierret & Galerne 2024): labels (P1)-(P5).

For :math:`x_0 \sim N(\mu, \Sigma)` the denoiser (G2) is affine, so every step of
``sample_euler`` / ``sample_heun`` on a sigma grid :math:`\sigma_0 > \dots > \sigma_n` is an affine
map that fixes :math:`\mu` and is diagonal in the eigenbasis of :math:`\Sigma`: in the
eigen-coordinate :math:`y = u_k^T(\hat x - \mu)` of eigenvalue :math:`\lambda`,
:math:`y_{i+1} = a_i(\lambda)\,y_i` with an exact rational factor (:math:`h_i = \sigma_{i+1}-\sigma_i`).

(P1)  Euler (DDIM): :math:`a^{E}_i = 1 + h_i\frac{\sigma_i}{\lambda+\sigma_i^2}
      = \dfrac{\lambda + \sigma_i\sigma_{i+1}}{\lambda + \sigma_i^2}`.

(P2)  Heun (EDM Algorithm 1):
      :math:`a^{H}_i = \dfrac{2\lambda^2 + \lambda\sigma_i^2 + 3\lambda\sigma_{i+1}^2 + 2\sigma_i\sigma_{i+1}^3}
      {2(\lambda+\sigma_i^2)(\lambda+\sigma_{i+1}^2)}` for :math:`\sigma_{i+1} > 0`; on a last step to
      :math:`\sigma_{i+1} = 0` the correction is skipped and :math:`a_i = a^E_i = \lambda/(\lambda+\sigma_i^2)`
      (the step returns the denoiser output).

(P3)  One-step errors against the exact factor (G4)
      :math:`r_i = \sqrt{(\lambda+\sigma_{i+1}^2)/(\lambda+\sigma_i^2)}`:
      :math:`a^E_i - r_i = -\dfrac{\lambda h_i^2}{2(\lambda+\sigma_i^2)^2} + O(h_i^3)` (order 1) and
      :math:`a^H_i - r_i = -\dfrac{\lambda\sigma_i h_i^3}{2(\lambda+\sigma_i^2)^3} + O(h_i^4)` (order 2).

(P4)  A whole run maps :math:`y_0 \mapsto P(\lambda) y_0` with :math:`P = \prod_i a_i(\lambda)`; from
      :math:`\hat x_0 \sim N(m_0, v_0 I)` (``sample_*(D, sigma_0 * noise, ...)``: :math:`m_0 = 0`,
      :math:`v_0 = \sigma_0^2`) the output is Gaussian,
      :math:`N\big(\mu + U\,\mathrm{diag}(P)\,U^T(m_0-\mu),\; U\,\mathrm{diag}(v_0 P^2)\,U^T\big)`. The exact
      flow telescopes, :math:`\prod_i r_i = \sqrt{(\lambda+\sigma_n^2)/(\lambda+\sigma_0^2)}`, which gives
      back (G5).

(P5)  Wasserstein-2 distance between Gaussians with commuting covariances
      :math:`A = U\mathrm{diag}(\alpha)U^T`, :math:`B = U\mathrm{diag}(\beta)U^T`:
      :math:`W_2^2 = |m_A - m_B|^2 + \sum_k(\sqrt{\alpha_k} - \sqrt{\beta_k})^2`, the Bures formula
      :math:`\mathrm{tr}(A + B - 2(A^{1/2}BA^{1/2})^{1/2})` with
      :math:`(A^{1/2}BA^{1/2})^{1/2} = U\mathrm{diag}(\sqrt{\alpha\beta})U^T`. Hence the sampler's error
      :math:`W_2^2 = \sum_k P_k^2\,\delta_k^2 + \sum_k(\sqrt{v_0}\,|P_k| - \sqrt{\lambda_k})^2`,
      :math:`\delta = U^T(m_0 - \mu)`.

Library: ``gaussdiff.sample_euler`` / ``sample_heun`` (what the factors describe),
``gaussdiff.gaussian_sampler_factors`` (P1, P2, P4), ``gaussian_sampler_output`` (P4),
``gaussian_sampler_w2`` (P5).
"""

from __future__ import annotations

import sympy as sp

from ._sym import simplify_difference
from .gaussian import denoiser_factor, flow_ratio

__all__ = [
    "euler_factor",
    "heun_factor",
    "heun_factor_last",
    "sampler_step",
    "local_error",
    "check_P1",
    "check_P2",
    "check_P3",
    "check_P4",
    "check_P5",
]

lam = sp.Symbol("lambda", positive=True)
s_i, s_n, h = sp.symbols("sigma_i sigma_ip1 h", positive=True)
y = sp.Symbol("y", real=True)


def euler_factor(l=lam, a=s_i, b=s_n):
    r"""(P1) :math:`(\lambda + \sigma_i\sigma_{i+1})/(\lambda + \sigma_i^2)`."""
    return (l + a * b) / (l + a**2)


def heun_factor(l=lam, a=s_i, b=s_n):
    r"""(P2) Heun's factor for :math:`\sigma_{i+1} > 0`."""
    return (2 * l**2 + l * a**2 + 3 * l * b**2 + 2 * a * b**3) / (2 * (l + a**2) * (l + b**2))


def heun_factor_last(l=lam, a=s_i):
    r"""(P2) Heun's last step to :math:`\sigma = 0` (no correction): :math:`\lambda/(\lambda+\sigma_i^2)`."""
    return euler_factor(l, a, 0)


def sampler_step(method: str, l=lam, a=s_i, b=s_n, yy=y):
    r"""One step of ``gaussdiff.sampling._run`` written out with the scalar denoiser
    :math:`D(y, \sigma) = \lambda y/(\lambda+\sigma^2)` (G2): ``d_cur = (y - D)/sigma_i``, the
    Euler step, and for ``"heun"`` the trapezoidal correction with ``d_next`` at the Euler point."""
    D = lambda z, s: denoiser_factor(l, s) * z  # noqa: E731
    hh = b - a
    d_cur = (yy - D(yy, a)) / a
    y_next = yy + hh * d_cur  # Euler step.
    if method == "heun":
        d_next = (y_next - D(y_next, b)) / b
        y_next = yy + hh * (d_cur / 2 + d_next / 2)  # Heun correction.
    return y_next


def local_error(method: str, order: int):
    r"""(P3) Coefficient-wise series of :math:`a_i - r_i` in :math:`h = \sigma_{i+1}-\sigma_i` up to
    :math:`h^{order}` (:math:`\sigma_{i+1} = \sigma_i + h`)."""
    a = euler_factor() if method == "euler" else heun_factor()
    expr = a.subs(s_n, s_i + h) - flow_ratio(lam, s_i, s_i + h)
    return sp.series(expr, h, 0, order + 1).removeO()


def check_P1():
    """(P1) The sampler's Euler step divided by ``y`` equals :func:`euler_factor`. Returns 0."""
    return simplify_difference(sampler_step("euler") / y, euler_factor())


def check_P2():
    """(P2) The sampler's Heun step divided by ``y`` equals :func:`heun_factor`, and the last
    step (Euler, correction skipped) equals :func:`heun_factor_last`. Returns ``(heun, last)`` (0)."""
    heun = simplify_difference(sampler_step("heun") / y, heun_factor())
    last = simplify_difference(sampler_step("euler", b=0) / y, heun_factor_last())
    return heun, last


def check_P3():
    r"""(P3) The series of :math:`a^E - r` to :math:`h^2` is :math:`-\lambda h^2/2(\lambda+\sigma_i^2)^2`,
    that of :math:`a^H - r` to :math:`h^3` is :math:`-\lambda\sigma_i h^3/2(\lambda+\sigma_i^2)^3`.
    Returns ``(euler, heun)`` (0)."""
    euler = simplify_difference(local_error("euler", 2), -lam * h**2 / (2 * (lam + s_i**2) ** 2))
    heun = simplify_difference(local_error("heun", 3), -lam * s_i * h**3 / (2 * (lam + s_i**2) ** 3))
    return euler, heun


def check_P4():
    r"""(P4) For a 3-step grid the exact factors telescope to :math:`\sqrt{(\lambda+\sigma_3^2)/(\lambda+\sigma_0^2)}`,
    and the output variance of the linear map :math:`y\mapsto Py` from :math:`N(0, v_0)` is
    :math:`v_0P^2` (the Euler product on a symbolic 2-step grid written out).
    Returns ``(telescope, variance)`` (0)."""
    sg = sp.symbols("sigma_0:4", positive=True)
    prod = sp.Mul(*[flow_ratio(lam, sg[i], sg[i + 1]) for i in range(3)])
    telescope = simplify_difference(prod, flow_ratio(lam, sg[0], sg[3]))
    v0 = sp.Symbol("v_0", positive=True)
    y0 = sp.Symbol("y_0", real=True)
    y2 = sampler_step("euler", lam, sg[1], sg[2], sampler_step("euler", lam, sg[0], sg[1], y0))
    P = euler_factor(lam, sg[0], sg[1]) * euler_factor(lam, sg[1], sg[2])
    # Var[c y0] = c^2 v0 with c = d y2 / d y0 (y2 is linear in y0)
    variance = simplify_difference(sp.diff(y2, y0) ** 2 * v0, v0 * P**2)
    return telescope, variance


def check_P5():
    r"""(P5) With :math:`U = R_\theta`, :math:`A = U\mathrm{diag}(\alpha)U^T`, :math:`B = U\mathrm{diag}(\beta)U^T`,
    :math:`A^{1/2} = U\mathrm{diag}(\sqrt\alpha)U^T`: :math:`M = U\mathrm{diag}(\sqrt{\alpha\beta})U^T` satisfies
    :math:`M^2 = A^{1/2}BA^{1/2}` (and is PSD, so it is the square root), and
    :math:`\mathrm{tr}(A + B - 2M) = \sum_k(\sqrt{\alpha_k}-\sqrt{\beta_k})^2`.
    Returns ``(square_root, trace)`` (0)."""
    th = sp.Symbol("theta", real=True)
    al = sp.symbols("alpha_1 alpha_2", positive=True)
    be = sp.symbols("beta_1 beta_2", positive=True)
    U = sp.Matrix([[sp.cos(th), -sp.sin(th)], [sp.sin(th), sp.cos(th)]])
    A = U * sp.diag(*al) * U.T
    B = U * sp.diag(*be) * U.T
    Ah = U * sp.diag(*[sp.sqrt(a) for a in al]) * U.T
    M = U * sp.diag(*[sp.sqrt(a * b) for a, b in zip(al, be)]) * U.T
    square_root = (M * M - Ah * B * Ah).applyfunc(lambda e: sp.simplify(sp.trigsimp(sp.expand(e))))
    trace = simplify_difference(
        sp.trigsimp((A + B - 2 * M).trace()), sum((sp.sqrt(a) - sp.sqrt(b)) ** 2 for a, b in zip(al, be))
    )
    return square_root, trace
