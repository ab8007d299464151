r"""The one EDM convention and the translations between frameworks: labels (C1)-(C6).

Every framework noises a clean sample as (Karras et al. 2022, eq. 10)

(C1)  :math:`x = s(t)\,(x_0 + \sigma(t)\, n)`, :math:`n \sim N(0, I)`,

and is described by the denoiser :math:`D(\hat x, \sigma) = E[x_0 \mid \hat x]` on the unscaled
variable :math:`\hat x = x / s = x_0 + \sigma n`. This module derives

* (C1) that the native forward processes of EDM/VE, VP (continuous and DDPM), OU and rectified
  flow are all of this form, with the :math:`s(t)`, :math:`\sigma(t)` of
  :mod:`gaussdiff.schedules`;
* (C2) score :math:`\leftrightarrow` denoiser (Tweedie (T1)), also in the scaled variable;
* (C3) eps-prediction :math:`\leftrightarrow` denoiser, and DDPM's
  :math:`\epsilon = -\sqrt{1-\bar\alpha}\,\nabla\log p_t`;
* (C4) rectified-flow velocity :math:`\leftrightarrow` denoiser, and that the rectified-flow ODE
  :math:`dx_t/dt = v` is the probability-flow ODE;
* (C5) the scaled-variable PF-ODE
  :math:`dx/dt = (\sigma'/\sigma + s'/s)\,x - (\sigma' s/\sigma)\,D(x/s, \sigma)` is the sigma
  form :math:`d\hat x/d\sigma = (\hat x - D)/\sigma` after the change of variables
  :math:`x = s(t)\hat x(\sigma(t))`;
* (C6) every schedule's derivatives and inverse as :mod:`gaussdiff.schedules` implements them.

Library: ``gaussdiff.schedules`` (``EDM``, ``VP``, ``VPDiscrete``, ``OU``, ``RectifiedFlow``,
``Schedule.ode_coefficients``, ``score_from_denoiser`` ... ``denoiser_from_velocity``).
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ._sym import simplify_difference

__all__ = [
    "schedule",
    "SCHEDULES",
    "check_C1",
    "check_C2",
    "check_C3",
    "check_C4",
    "check_C5",
    "check_C6",
    "conversions",
    "ode_coefficients",
]

t = sp.Symbol("t", positive=True)
sigma = sp.Symbol("sigma", positive=True)
beta_min, beta_d = sp.symbols("beta_min beta_d", positive=True)
# VPDiscrete, on the segment t in [i, i+1]: lambda(t) = L_i + (t - i) r_i, r_i = -log(1 - beta_{i+1})
seg_i = sp.Symbol("i", integer=True, nonnegative=True)
seg_L = sp.Symbol("L_i", nonnegative=True)
seg_rate = sp.Symbol("r_i", positive=True)  # r_i = -log(1 - beta_{i+1}) > 0

SCHEDULES = ("EDM", "VP", "OU", "RectifiedFlow", "VPDiscrete")


def _vp_like(lam, dlam_doc, lam_inv, name):
    s = sp.exp(-lam / 2)
    sig = sp.sqrt(sp.exp(lam) - 1)
    alpha_bar = sp.exp(-lam)
    return dict(
        name=name,
        lam=lam,
        s=s,
        sigma=sig,
        # closed forms exactly as written in gaussdiff.schedules._VPLike
        ds_doc=-dlam_doc / 2 * s,
        dsigma_doc=dlam_doc * sp.exp(lam) / (2 * sp.sqrt(sp.exp(lam) - 1)),
        t_of_sigma=lam_inv.subs("LAM", sp.log(1 + sigma**2)),
        native=(sp.sqrt(alpha_bar), sp.sqrt(1 - alpha_bar)),  # x = sqrt(ab) x0 + sqrt(1-ab) n
    )


@lru_cache(maxsize=None)
def schedule(name: str) -> dict:
    r"""(C1)/(C6) Symbolic schedule ``name`` in :data:`SCHEDULES`.

    Returns a dict with ``s``, ``sigma`` (expressions in ``t``), ``ds``, ``dsigma`` (their
    derivatives by ``sympy.diff``), ``ds_doc``, ``dsigma_doc`` (the closed forms the library
    implements), ``t_of_sigma`` (expression in the symbol ``sigma``), ``native`` (the pair of
    coefficients ``(c_x0, c_n)`` of the framework's own forward process
    :math:`x = c_{x_0} x_0 + c_n n`) and ``params`` (the other symbols).

    * ``EDM``: :math:`s = 1`, :math:`\sigma = t`; native :math:`x_0 + t n`.
    * ``VP``: :math:`s = e^{-\lambda/2}`, :math:`\sigma = \sqrt{e^\lambda - 1}`,
      :math:`\lambda = \beta_d t^2/2 + \beta_{min} t`; native
      :math:`\sqrt{\bar\alpha}x_0 + \sqrt{1-\bar\alpha}\,n`, :math:`\bar\alpha = e^{-\lambda}`.
    * ``OU``: the VP family with :math:`\lambda = 2t`; native :math:`e^{-t}x_0 + \sqrt{1-e^{-2t}}\,n`.
    * ``RectifiedFlow``: :math:`s = 1-t`, :math:`\sigma = t/(1-t)`; native :math:`(1-t)x_0 + t n`.
    * ``VPDiscrete``: the VP family with :math:`\lambda = L_i + (t-i)\,r_i` on the segment
      :math:`[i, i+1]`, :math:`L_i = -\log\bar\alpha_i`, :math:`r_i = -\log(1-\beta_{i+1}) > 0`
      (symbols ``i``, ``L_i``, ``r_i``).
    """
    LAM = sp.Symbol("LAM")
    if name == "EDM":
        out = dict(
            name=name,
            s=sp.Integer(1),
            sigma=t,
            ds_doc=sp.Integer(0),
            dsigma_doc=sp.Integer(1),
            t_of_sigma=sigma,
            native=(sp.Integer(1), t),
            params=(),
        )
    elif name == "VP":
        lam = beta_d * t**2 / 2 + beta_min * t
        out = _vp_like(lam, beta_d * t + beta_min, (sp.sqrt(beta_min**2 + 2 * beta_d * LAM) - beta_min) / beta_d, name)
        out["params"] = (beta_min, beta_d)
    elif name == "OU":
        out = _vp_like(2 * t, sp.Integer(2), LAM / 2, name)
        out["params"] = ()
    elif name == "RectifiedFlow":
        out = dict(
            name=name,
            s=1 - t,
            sigma=t / (1 - t),
            ds_doc=sp.Integer(-1),
            dsigma_doc=1 / (1 - t) ** 2,
            t_of_sigma=sigma / (1 + sigma),
            native=(1 - t, t),
            params=(),
        )
    elif name == "VPDiscrete":
        lam = seg_L + (t - seg_i) * seg_rate
        out = _vp_like(lam, seg_rate, seg_i + (LAM - seg_L) / seg_rate, name)
        out["params"] = (seg_i, seg_L, seg_rate)
    else:
        raise ValueError(f"name: must be one of {SCHEDULES}, got {name!r}")
    out["ds"] = sp.diff(out["s"], t)
    out["dsigma"] = sp.diff(out["sigma"], t)
    return out


def ode_coefficients(name: str):
    r"""(C5) ``(a, b)`` of :math:`dx/dt = a x - b D(x/s, \sigma)`:
    :math:`a = \sigma'/\sigma + s'/s`, :math:`b = \sigma' s / \sigma`, as expressions in ``t``."""
    sc = schedule(name)
    return (sc["dsigma"] / sc["sigma"] + sc["ds"] / sc["s"], sc["dsigma"] * sc["s"] / sc["sigma"])


def _replace_derivative(expr, f, repl):
    """Replace every first derivative of the unknown function ``f`` at an argument ``arg``
    (``Derivative(f(arg), arg)`` or ``Subs(Derivative(f(u), u), u, arg)``) by ``repl(arg)``."""

    def is_df(e):
        if isinstance(e, sp.Subs) and isinstance(e.expr, sp.Derivative) and e.expr.expr.func == f:
            return True
        return isinstance(e, sp.Derivative) and e.expr.func == f and len(e.variables) == 1

    def new(e):
        if isinstance(e, sp.Subs):
            return repl(e.point[0])
        return repl(e.variables[0])

    return expr.replace(is_df, new).doit()


def check_C1() -> dict:
    r"""(C1) Each native forward process equals :math:`s(t)(x_0 + \sigma(t) n)`:
    :math:`s = c_{x_0}` and :math:`s\,\sigma = c_n`; for VPDiscrete also DDPM's recursion
    :math:`\bar\alpha(i+1) = \bar\alpha(i)(1 - \beta_{i+1})`. Returns the differences (all 0)."""
    out = {}
    for name in SCHEDULES:
        sc = schedule(name)
        c_x0, c_n = sc["native"]
        out[name] = (
            simplify_difference(sc["s"], c_x0),
            simplify_difference(sp.expand_power_base(sc["s"] ** 2 * sc["sigma"] ** 2), c_n**2),
        )
    sc = schedule("VPDiscrete")
    ab = sp.exp(-sc["lam"])
    beta = sp.Symbol("beta_ip1", positive=True)
    out["DDPM"] = simplify_difference(
        ab.subs(t, seg_i + 1).subs(seg_rate, -sp.log(1 - beta)), ab.subs(t, seg_i) * (1 - beta)
    )
    return out


def check_C6() -> dict:
    r"""(C6) For every schedule: the library's closed forms of ``ds``, ``dsigma`` equal the
    derivatives, ``sigma(t_of_sigma(sigma)) = sigma``, and for the VP family
    :math:`s^2 (1 + \sigma^2) = 1`. Returns the differences (all 0)."""
    out = {}
    for name in SCHEDULES:
        sc = schedule(name)
        inv = simplify_difference(sp.powsimp(sc["sigma"].subs(t, sc["t_of_sigma"]), force=True), sigma)
        item = [simplify_difference(sc["ds"], sc["ds_doc"]), simplify_difference(sc["dsigma"], sc["dsigma_doc"]), inv]
        if "lam" in sc:
            item.append(simplify_difference(sc["s"] ** 2 * (1 + sc["sigma"] ** 2), 1))
        out[name] = tuple(item)
    return out


# ---------------------------------------------------------------------------------------------
# Conversions (C2)-(C4)
# ---------------------------------------------------------------------------------------------

x, D, score_sym, eps_sym, v_sym, s_sym = sp.symbols("x D score eps v s", real=True)


def conversions() -> dict:
    r"""(C2)-(C4) The parameterisations as functions of the denoiser ``D`` at ``(x, sigma)``.

    * (C2) :math:`\text{score} = (D - \hat x)/\sigma^2`, :math:`D = \hat x + \sigma^2\,\text{score}`;
    * (C3) :math:`\epsilon = E[n \mid \hat x] = (\hat x - D)/\sigma`, :math:`D = \hat x - \sigma\epsilon`;
    * (C4) with :math:`t = \sigma/(1+\sigma)`, :math:`x_t = (1-t) x_0 + t n = \hat x/(1+\sigma)`:
      :math:`v = E[n - x_0 \mid x_t] = (x_t - D)/t`, :math:`D = x_t - t v`.

    The velocity is derived from the posterior means: :math:`E[n\mid x_t] = (\hat x - D)/\sigma`,
    so :math:`v = (\hat x - D)/\sigma - D`; ``velocity_posterior`` holds that form and
    ``velocity`` the library's, and :func:`check_C4` proves them equal.
    """
    tt = sigma / (1 + sigma)
    xt = x / (1 + sigma)
    return dict(
        score=(D - x) / sigma**2,
        denoiser_from_score=x + sigma**2 * score_sym,
        eps=(x - D) / sigma,
        denoiser_from_eps=x - sigma * eps_sym,
        velocity=(xt - D) / tt,
        velocity_posterior=(x - D) / sigma - D,
        denoiser_from_velocity=xt - tt * v_sym,
    )


def check_C2():
    r"""(C2) Round trip score -> denoiser, and the score of the *scaled* variable: with
    :math:`p_t(x) = s^{-1} p_\sigma(x/s)` (1-D),
    :math:`\partial_x \log p_t(x) = (D(x/s) - x/s)/(s\sigma^2)` whenever
    :math:`p_\sigma'/p_\sigma = (D - \hat x)/\sigma^2` (T1). Returns the differences (0)."""
    c = conversions()
    p = sp.Function("p")
    Dfun = sp.Function("D")
    xs = sp.Symbol("x", real=True)
    s = sp.Symbol("s", positive=True)
    logpt = sp.log(p(xs / s) / s)
    dlog = sp.diff(logpt, xs)
    # Tweedie (T1) in the unscaled variable: p'(u) = p(u) (D(u) - u) / sigma^2
    dlog = _replace_derivative(dlog, p, lambda arg: p(arg) * (Dfun(arg) - arg) / sigma**2)
    roundtrip = simplify_difference(c["denoiser_from_score"].subs(score_sym, c["score"]), D)
    scaled = simplify_difference(dlog, (Dfun(xs / s) - xs / s) / (s * sigma**2))
    return roundtrip, scaled


def check_C3():
    r"""(C3) Round trip eps -> denoiser; :math:`E[n \mid \hat x] = (\hat x - E[x_0 \mid \hat x])/\sigma`
    (linearity of the posterior mean applied to :math:`\hat x = x_0 + \sigma n`); and DDPM's
    :math:`\epsilon = -\sqrt{1-\bar\alpha}\,\nabla_{x_t}\log p_t(x_t)` with the scaled score of
    (C2) and :math:`s\sigma = \sqrt{1-\bar\alpha}` of (C1). Returns the differences (0)."""
    c = conversions()
    roundtrip = simplify_difference(c["denoiser_from_eps"].subs(eps_sym, c["eps"]), D)
    posterior = simplify_difference((x - D) / sigma, c["eps"])  # E[n|x] = (x - E[x0|x])/sigma
    sc = schedule("VP")
    s_t, sig_t = sc["s"], sc["sigma"]
    scaled_score = (D - x) / (s_t * sig_t**2)  # (C2), at x_t = s x
    ddpm = simplify_difference(-sc["native"][1] * scaled_score, c["eps"].subs(sigma, sig_t))
    return roundtrip, posterior, ddpm


def check_C4():
    r"""(C4) The library's velocity :math:`(x_t - D)/t` equals the posterior form
    :math:`E[n\mid\cdot] - E[x_0\mid\cdot] = (\hat x - D)/\sigma - D`; the round trip; and the
    rectified-flow ODE :math:`dx_t/dt = v` is (C5) for the RectifiedFlow schedule
    (:math:`a = b = 1/t`). Returns the differences (0)."""
    c = conversions()
    same = simplify_difference(c["velocity"], c["velocity_posterior"])
    roundtrip = simplify_difference(c["denoiser_from_velocity"].subs(v_sym, c["velocity"]), D)
    a, b = ode_coefficients("RectifiedFlow")
    xt = sp.Symbol("x_t", real=True)
    # (C5) in RF time at x_t (note x_hat = x_t / s, sigma = t/(1-t)); v at that point:
    v_at = c["velocity"].subs(x, xt * (1 + sigma)).subs(sigma, t / (1 - t))
    ode = simplify_difference(a * xt - b * D, v_at)
    return same, roundtrip, ode


def check_C5():
    r"""(C5) Change of variables: if :math:`\hat x(\sigma)` solves
    :math:`d\hat x/d\sigma = (\hat x - D(\hat x, \sigma))/\sigma` then
    :math:`x(t) = s(t)\,\hat x(\sigma(t))` solves
    :math:`dx/dt = (\sigma'/\sigma + s'/s)\,x - (\sigma' s/\sigma)\,D(x/s, \sigma)`, for arbitrary
    :math:`s(t)`, :math:`\sigma(t)`; the EDM schedule gives back the sigma form. Returns the
    differences (0)."""
    sf, gf, X = sp.Function("s")(t), sp.Function("sigma")(t), sp.Function("xhat")
    Dfun = sp.Function("D")
    xs = sf * X(gf)
    dxdt = _replace_derivative(sp.diff(xs, t), X, lambda arg: (X(arg) - Dfun(X(arg), arg)) / arg)
    a = sp.diff(gf, t) / gf + sp.diff(sf, t) / sf
    b = sp.diff(gf, t) * sf / gf
    rhs = a * xs - b * Dfun(xs / sf, gf)
    general = simplify_difference(dxdt, rhs)
    a_e, b_e = ode_coefficients("EDM")
    edm = simplify_difference(a_e * x - b_e * D, ((x - D) / sigma).subs(sigma, t))
    return general, edm
