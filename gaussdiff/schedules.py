r"""Noise schedules, sigma grids and conversions: the one EDM convention for every framework.

A clean sample ``x0`` is noised as (Karras et al. 2022, eq. 10; theory label (C1))

.. math::  x = s(t)\,(x_0 + \sigma(t)\, n), \qquad n \sim N(0, I),

and every model is a denoiser :math:`D(\hat x, \sigma) = E[x_0 \mid x_0 + \sigma n = \hat x]`
acting on the unscaled variable :math:`\hat x = x / s`. The frameworks differ only in
:math:`s(t)` and :math:`\sigma(t)`:

=====================  ==========================  =================================================
schedule               :math:`s(t)`                :math:`\sigma(t)`
=====================  ==========================  =================================================
:class:`EDM` (VE)      1                           :math:`t`
:class:`VP`            :math:`e^{-\lambda(t)/2}`   :math:`\sqrt{e^{\lambda(t)}-1}`, :math:`\lambda = \tfrac12\beta_d t^2 + \beta_{min} t`
:class:`VPDiscrete`    :math:`\sqrt{\bar\alpha(t)}`  :math:`\sqrt{1/\bar\alpha(t) - 1}` (DDPM, :math:`\lambda=-\log\bar\alpha` piecewise linear)
:class:`OU`            :math:`e^{-t}`              :math:`\sqrt{e^{2t}-1}` (a VP schedule with :math:`\lambda = 2t`)
:class:`RectifiedFlow` :math:`1-t`                 :math:`t/(1-t)`
=====================  ==========================  =================================================

Every schedule gives ``s(t)``, ``sigma(t)``, their derivatives ``ds(t)``, ``dsigma(t)`` and the
inverse ``t_of_sigma(sigma)``. The converters at the bottom of the module translate a denoiser
output into a score, an eps-prediction or a rectified-flow velocity and back (theory (C2)-(C4)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import check_int, check_positive, check_sigma

__all__ = [
    "Schedule",
    "EDM",
    "VP",
    "VPDiscrete",
    "OU",
    "RectifiedFlow",
    "karras_sigmas",
    "vp_sigmas",
    "flow_sigmas",
    "score_from_denoiser",
    "denoiser_from_score",
    "eps_from_denoiser",
    "denoiser_from_eps",
    "velocity_from_denoiser",
    "denoiser_from_velocity",
    "to_d",
    "append_zero",
]


def _t(t, name: str = "t") -> torch.Tensor:
    """``t`` as a tensor (floats as float64), refused when it holds NaN (a NaN time gives NaN
    coefficients, not an error, further down). The NaN test runs on CPU tensors only: on an
    accelerator it would wait for the device at every call of a sampler's loop."""
    if isinstance(t, torch.Tensor):
        out = t
    elif isinstance(t, (bool, np.bool_, str)) or t is None:
        raise ValueError(f"{name}: expected a float or a tensor, got {t!r}")
    else:
        try:
            out = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name}: expected a float or a tensor, got {t!r}") from exc
    if out.device.type == "cpu" and out.is_floating_point() and bool(torch.isnan(out).any()):
        raise ValueError(f"{name}: contains NaN")
    return out


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """``x`` (n,) with a 0 appended: ``(n + 1,)``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 1:
        what = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a 1-D tensor, got {what}")
    return torch.cat([x, x.new_zeros(1)])


class Schedule:
    """Interface of a noise schedule: ``s(t)``, ``sigma(t)``, derivatives and inverse.

    All methods act elementwise on a float or a tensor and return a tensor (float64 for
    python floats).
    """

    def s(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def ds(self, t):
        raise NotImplementedError

    def dsigma(self, t):
        raise NotImplementedError

    def t_of_sigma(self, sigma):
        raise NotImplementedError

    def time_grid(self, n: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
        """``n`` steps uniform in this schedule's own time from ``t(sigma_max)`` to
        ``t(sigma_min)``, then a final step to ``t = 0`` (where ``sigma = 0``): ``(n+1,)``."""
        n = _check_steps(n)
        t_hi = float(self.t_of_sigma(check_positive(sigma_max, "sigma_max")))
        t_lo = float(self.t_of_sigma(check_positive(sigma_min, "sigma_min")))
        if t_lo >= t_hi:
            raise ValueError("sigma_min: must be smaller than sigma_max")
        return append_zero(torch.linspace(t_hi, t_lo, n, dtype=torch.float64))

    def ode_coefficients(self, t):
        r"""Coefficients ``(a, b, sigma, s)`` of the scaled-variable probability-flow ODE

        .. math:: \frac{dx}{dt} = a(t)\, x - b(t)\, D(x / s, \sigma), \quad
                  a = \frac{\sigma'}{\sigma} + \frac{s'}{s}, \quad b = \frac{\sigma' s}{\sigma}

        (Karras et al. 2022, eq. 4 with the denoiser form of the score; theory (C5)).
        """
        sig, s = self.sigma(t), self.s(t)
        dsig, ds = self.dsigma(t), self.ds(t)
        return dsig / sig + ds / s, dsig * s / sig, sig, s


def _check_steps(n) -> int:
    return check_int(n, "n")


@dataclass(frozen=True)
class EDM(Schedule):
    """Variance exploding / EDM: ``s(t) = 1``, ``sigma(t) = t``. Its grid is Karras' rho grid."""

    rho: float = 7.0

    def __post_init__(self):
        check_positive(self.rho, "rho")

    def s(self, t):
        return torch.ones_like(_t(t))

    def sigma(self, t):
        return _t(t).clone()

    def ds(self, t):
        return torch.zeros_like(_t(t))

    def dsigma(self, t):
        return torch.ones_like(_t(t))

    def t_of_sigma(self, sigma):
        return _t(sigma, "sigma").clone()

    def time_grid(self, n, *, sigma_min=0.002, sigma_max=80.0):
        return karras_sigmas(n, sigma_min=sigma_min, sigma_max=sigma_max, rho=self.rho)


class _VPLike(Schedule):
    r"""Variance preserving family: ``s = exp(-lambda/2)``, ``sigma = sqrt(exp(lambda) - 1)``
    for an increasing ``lambda(t)`` with ``lambda(0) = 0``, so that ``s^2 (1 + sigma^2) = 1``."""

    def _lam(self, t):
        raise NotImplementedError

    def _dlam(self, t):
        raise NotImplementedError

    def _lam_inv(self, lam):
        raise NotImplementedError

    def s(self, t):
        return torch.exp(-0.5 * self._lam(_t(t)))

    def sigma(self, t):
        return torch.sqrt(torch.expm1(self._lam(_t(t))))

    def ds(self, t):
        t = _t(t)
        return -0.5 * self._dlam(t) * self.s(t)

    def dsigma(self, t):
        # d/dt sqrt(e^lam - 1) = lam' e^lam / (2 sigma)
        t = _t(t)
        lam = self._lam(t)
        return 0.5 * self._dlam(t) * torch.exp(lam) / torch.sqrt(torch.expm1(lam))

    def t_of_sigma(self, sigma):
        return self._lam_inv(torch.log1p(_t(sigma, "sigma") ** 2))


@dataclass(frozen=True)
class VP(_VPLike):
    """Continuous VP (Song et al. 2021): ``lambda(t) = beta_d t^2 / 2 + beta_min t``, t in [0, 1]."""

    beta_min: float = 0.1
    beta_d: float = 19.9

    def __post_init__(self):
        check_positive(self.beta_min, "beta_min", allow_zero=True)
        check_positive(self.beta_d, "beta_d", allow_zero=True)
        if self.beta_min == 0 and self.beta_d == 0:
            raise ValueError("beta_min, beta_d: at least one must be > 0")

    def _lam(self, t):
        return 0.5 * self.beta_d * t**2 + self.beta_min * t

    def _dlam(self, t):
        return self.beta_d * t + self.beta_min

    def _lam_inv(self, lam):
        if self.beta_d == 0:
            return lam / self.beta_min
        return (torch.sqrt(self.beta_min**2 + 2 * self.beta_d * lam) - self.beta_min) / self.beta_d


@dataclass(frozen=True)
class OU(_VPLike):
    """Ornstein-Uhlenbeck time (Biroli et al. 2024): ``x_t = e^-t x0 + sqrt(1 - e^-2t) n``.

    In EDM form ``s = e^-t`` and ``sigma = sqrt(e^{2t} - 1)``: the VP family with ``lambda = 2t``.
    """

    def _lam(self, t):
        return 2.0 * t

    def _dlam(self, t):
        return torch.full_like(t, 2.0)

    def _lam_inv(self, lam):
        return 0.5 * lam


@dataclass(frozen=True)
class VPDiscrete(_VPLike):
    r"""Discrete DDPM schedule (Ho et al. 2020) made continuous in the step index.

    ``alpha_bar_i = prod_{j <= i} (1 - beta_j)`` for steps ``i = 1..T``; between integer steps
    ``lambda(t) = -log alpha_bar(t)`` is linear, i.e. ``beta`` is piecewise constant. At integer
    ``t = i`` the schedule is exactly DDPM's: ``s = sqrt(alpha_bar_i)``,
    ``sigma = sqrt(1/alpha_bar_i - 1)``; ``t = 0`` is clean data.
    """

    betas: tuple = field(default=None)

    def __post_init__(self):
        betas = self.betas
        if betas is None:
            betas = tuple(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).tolist())
        try:
            betas = tuple(float(b) for b in betas)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"betas: expected a sequence of numbers in (0, 1), got {betas!r}") from exc
        if len(betas) == 0 or any(not (0 < b < 1) for b in betas):
            raise ValueError("betas: need at least one value, each in (0, 1)")
        object.__setattr__(self, "betas", betas)

    @property
    def T(self) -> int:
        return len(self.betas)

    def _table(self, like: torch.Tensor):
        rates = -torch.log1p(-torch.tensor(self.betas, dtype=torch.float64))
        lam = torch.cat([rates.new_zeros(1), torch.cumsum(rates, 0)])
        return rates.to(like.device), lam.to(like.device)

    def alphas_cumprod(self) -> torch.Tensor:
        """``alpha_bar_i`` for ``i = 1..T`` as in DDPM: ``(T,)`` float64."""
        return torch.cumprod(1 - torch.tensor(self.betas, dtype=torch.float64), 0)

    def _lam(self, t):
        rates, lam = self._table(t)
        if bool(torch.isnan(t).any()):  # floor(NaN) would index the table with -2**63
            raise ValueError("t: contains NaN")
        tt = t.to(torch.float64).clamp(0, self.T)
        i = torch.clamp(torch.floor(tt).long(), max=self.T - 1)
        return (lam[i] + (tt - i) * rates[i]).to(t.dtype)

    def _dlam(self, t):
        rates, _ = self._table(t)
        if bool(torch.isnan(t).any()):
            raise ValueError("t: contains NaN")
        tt = t.to(torch.float64).clamp(0, self.T)
        i = torch.clamp(torch.floor(tt).long(), max=self.T - 1)
        return rates[i].to(t.dtype)

    def _lam_inv(self, lam):
        rates, table = self._table(lam)
        if bool(torch.isnan(lam).any()):
            raise ValueError("sigma: contains NaN")
        ll = lam.to(torch.float64)
        i = torch.clamp(torch.searchsorted(table, ll, right=True) - 1, 0, self.T - 1)
        return (i + (ll - table[i]) / rates[i]).to(lam.dtype)

    def time_grid(self, n, *, sigma_min=None, sigma_max=None):
        """DDIM's grid: ``n`` integer steps evenly spaced in ``[1, T]`` (descending), then 0.

        ``sigma_min``/``sigma_max``, when given, restrict the range as in the base class."""
        if sigma_min is not None or sigma_max is not None:
            return super().time_grid(
                n,
                sigma_min=sigma_min or float(self.sigma(1.0)),
                sigma_max=sigma_max or float(self.sigma(float(self.T))),
            )
        n = _check_steps(n)
        if n > self.T:
            raise ValueError(f"n: at most T = {self.T} steps on a discrete schedule, got {n}")
        ts = torch.round(torch.linspace(self.T, 1, n, dtype=torch.float64))
        return append_zero(ts)


@dataclass(frozen=True)
class RectifiedFlow(Schedule):
    """Rectified flow / flow matching: ``x_t = (1 - t) x0 + t n``, so ``s = 1 - t``,
    ``sigma = t / (1 - t)`` and ``t = sigma / (1 + sigma)``."""

    def s(self, t):
        return 1.0 - _t(t)

    def sigma(self, t):
        t = _t(t)
        return t / (1.0 - t)

    def ds(self, t):
        return -torch.ones_like(_t(t))

    def dsigma(self, t):
        return 1.0 / (1.0 - _t(t)) ** 2

    def t_of_sigma(self, sigma):
        sigma = _t(sigma, "sigma")
        return sigma / (1.0 + sigma)

    def time_grid(self, n, *, sigma_min=0.002, sigma_max=80.0):
        """Uniform in ``t`` from ``t(sigma_max)`` down to 0 (``n`` steps); ``sigma_min`` unused."""
        n = _check_steps(n)
        t_hi = float(self.t_of_sigma(check_positive(sigma_max, "sigma_max")))
        return torch.linspace(t_hi, 0.0, n + 1, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Sigma grids (decreasing, ending in 0)
# ---------------------------------------------------------------------------------------------


def _check_grid_dtype(dtype, device):
    """A grid's dtype is a real floating torch dtype; its device one torch knows."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    try:
        return dtype, None if device is None else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {exc}") from exc


def _grid_in(grid64: torch.Tensor, dtype, device, names: str) -> torch.Tensor:
    """A float64 sigma grid (ending in 0) cast to ``dtype``, refused, naming the arguments that
    set it, where the formula or the cast leaves a grid no sampler can use: a level that is not
    finite (``sigma_max = 1e6`` in float16) or levels that round to 0 or to one another
    (``sigma_min = 1e-8`` in float16)."""
    g = grid64.to(dtype=dtype)
    finite = bool(torch.isfinite(g).all())
    if not finite or bool((g[:-1] <= 0).any()) or bool((g[1:] >= g[:-1]).any()):
        dt = str(dtype).removeprefix("torch.")
        why = "a level is not finite (overflow)" if not finite else "levels round to 0 or to one another"
        raise ValueError(f"{names}: the grid is not strictly decreasing and positive in {dt} ({why})")
    return g.to(device=device)


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    r"""EDM's grid (Karras et al. 2022, eq. 5):
    :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`,
    ``i = 0..n-1``, with a 0 appended.

    Returns
    -------
    Tensor of shape ``(n + 1,)``, strictly decreasing, last entry 0.
    """
    n = _check_steps(n)
    sigma_min = check_positive(sigma_min, "sigma_min")
    sigma_max = check_positive(sigma_max, "sigma_max")
    rho = check_positive(rho, "rho")
    if sigma_min >= sigma_max and n > 1:
        raise ValueError("sigma_min: must be smaller than sigma_max")
    dtype, device = _check_grid_dtype(dtype, device)
    if n == 1:
        return _grid_in(torch.tensor([sigma_max, 0.0], dtype=torch.float64), dtype, device, "sigma_max")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _grid_in(append_zero((hi + ramp * (lo - hi)) ** rho), dtype, device, "sigma_min, sigma_max")


def vp_sigmas(
    n: int, beta_min: float = 0.1, beta_d: float = 19.9, eps_s: float = 1e-3, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """The VP grid of EDM Table 1: ``t`` uniform from 1 to ``eps_s`` (``n`` points), mapped to
    sigma, then 0 appended: ``(n + 1,)``."""
    n = _check_steps(n)
    eps_s = check_positive(eps_s, "eps_s")
    if eps_s >= 1 and n > 1:
        raise ValueError(f"eps_s: must be < 1 (the grid runs from t = 1 down to eps_s), got {eps_s}")
    dtype, device = _check_grid_dtype(dtype, device)
    ts = torch.linspace(1.0, eps_s, n, dtype=torch.float64)
    return _grid_in(append_zero(VP(beta_min, beta_d).sigma(ts)), dtype, device, "beta_min, beta_d, eps_s")


def flow_sigmas(n: int, sigma_max: float = 80.0, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Rectified-flow grid: ``t`` uniform from ``t(sigma_max)`` to 0, as sigmas: ``(n + 1,)``."""
    sched = RectifiedFlow()
    dtype, device = _check_grid_dtype(dtype, device)
    return _grid_in(sched.sigma(sched.time_grid(n, sigma_max=sigma_max)), dtype, device, "sigma_max")


# ---------------------------------------------------------------------------------------------
# Conversions between a denoiser and the other parameterisations, all on the unscaled x_hat
# ---------------------------------------------------------------------------------------------


def _bc(sigma, x: torch.Tensor, other, other_name: str, *, allow_zero: bool = False) -> torch.Tensor:
    """Broadcast a float or ``(B,)`` sigma against ``x`` of shape ``(B, ...)``, after checking
    the arguments of a conversion: ``x`` and ``other`` (the tensor converted) torch tensors of
    one shape, sigma > 0 (``>= 0`` where the formula does not divide by it) and finite."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(other, torch.Tensor):
        raise ValueError(f"{other_name}: expected a torch.Tensor, got {type(other).__name__}")
    if other.shape != x.shape:
        raise ValueError(f"{other_name}: expected the shape of x {tuple(x.shape)}, got {tuple(other.shape)}")
    batch = x.shape[0] if x.ndim else 1
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        if sigma.numel() not in (1, batch) or sigma.numel() != sigma.shape[0]:
            raise ValueError(f"sigma: expected a float or a ({batch},) tensor, got shape {tuple(sigma.shape)}")
        check_sigma(sigma.reshape(-1), sigma.numel(), dtype=None, device=sigma.device, allow_zero=allow_zero)
        return sigma.to(dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    check_sigma(sigma, 1, dtype=None, device=None, allow_zero=allow_zero)
    return torch.as_tensor(float(sigma), dtype=x.dtype, device=x.device)


def score_from_denoiser(denoised, x, sigma):
    """(C2) Tweedie: ``score = (D - x) / sigma^2``."""
    sig = _bc(sigma, x, denoised, "denoised")
    return (denoised - x) / sig**2


def denoiser_from_score(score, x, sigma):
    """(C2) ``D = x + sigma^2 score``."""
    sig = _bc(sigma, x, score, "score", allow_zero=True)
    return x + sig**2 * score


def eps_from_denoiser(denoised, x, sigma):
    """(C3) ``eps = (x - D) / sigma``, the posterior mean of the noise ``n``."""
    sig = _bc(sigma, x, denoised, "denoised")
    return (x - denoised) / sig


def denoiser_from_eps(eps, x, sigma):
    """(C3) ``D = x - sigma eps``."""
    sig = _bc(sigma, x, eps, "eps", allow_zero=True)
    return x - sig * eps


def velocity_from_denoiser(denoised, x, sigma):
    """(C4) Rectified-flow velocity ``v = E[n - x0 | x_t]`` on ``x_t = (1-t) x0 + t n``.

    With ``t = sigma / (1 + sigma)`` and ``x_t = x / (1 + sigma)``: ``v = (x_t - D) / t``."""
    sig = _bc(sigma, x, denoised, "denoised")
    t = sig / (1 + sig)
    return (x / (1 + sig) - denoised) / t


def denoiser_from_velocity(v, x, sigma):
    """(C4) ``D = x_t - t v`` with ``x_t = x / (1 + sigma)`` and ``t = sigma / (1 + sigma)``."""
    sig = _bc(sigma, x, v, "v", allow_zero=True)
    return x / (1 + sig) - sig / (1 + sig) * v


def to_d(x, sigma, denoised):
    """Derivative of the probability-flow ODE in sigma: ``dx/dsigma = (x - D) / sigma``."""
    sig = _bc(sigma, x, denoised, "denoised")
    return (x - denoised) / sig
