r"""Samplers: plain functions ``sample_<name>(denoiser, x, sigmas, ...) -> x``.

``x`` is the *unscaled* state :math:`\hat x` at the first noise level (for a fresh sample,
``sigmas[0] * noise``) and the result is the unscaled state at the last level (the sample when
the grid ends in 0).

Two ways to give the grid:

* ``sigmas`` — a decreasing grid of noise levels ending in 0; the probability-flow ODE is
  integrated in sigma, :math:`d\hat x / d\sigma = (\hat x - D(\hat x, \sigma)) / \sigma`
  (Karras et al. 2022, eq. 3 with :math:`s = 1`, :math:`\sigma(t) = t`). Euler on this grid is
  exactly DDIM.
* ``schedule=`` and ``ts=`` — any :class:`~gaussdiff.schedules.Schedule` and a decreasing grid
  in its own time. The ODE is integrated in that time on the scaled variable
  :math:`x = s(t)\hat x` (EDM Algorithm 1, theory (C5)):
  :math:`dx/dt = (\sigma'/\sigma + s'/s)\, x - (\sigma' s / \sigma)\, D(x / s, \sigma)`.
  The sigma form is this with the EDM schedule (``s = 1``, ``sigma = t``).

All samplers are deterministic given their inputs; the stochastic ones take per-sample seeds
(see :func:`seeded_noise`), so sample ``j`` gets the same noise whatever the batch size.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from ._checks import (
    _refuse_bool,
    as_tensor,
    check_callable,
    check_finite,
    check_int,
    check_positive,
    check_sigma_grid,
    check_state,
)
from .schedules import EDM, Schedule

__all__ = [
    "sample_euler",
    "sample_heun",
    "sample_edm_stochastic",
    "sample_euler_ancestral",
    "ancestral_step",
    "solve_flow",
    "seeded_noise",
]


# ---------------------------------------------------------------------------------------------
# The "same noise" protocol
# ---------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014), vectorised over uint64."""
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_MASK64)
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_MASK64)
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_MASK64)
        return z ^ (z >> np.uint64(31))


def _sample_seeds(seed: int, start: int, n: int, step: int) -> np.ndarray:
    """Generator seeds of rows ``start .. start + n - 1``: a hash of ``(seed, row, step)``."""
    key = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(int(step) & _MASK64))
    rows = np.arange(start, start + n, dtype=np.uint64)
    return _splitmix64(key ^ _splitmix64(rows)) >> np.uint64(1)  # torch seeds are < 2**63


def _check_stream(seed, start, step):
    """The counters of :func:`seeded_noise`: ``seed`` and ``step`` any integers (hashed modulo
    2**64), ``start`` a row index >= 0."""
    return (
        check_int(seed, "seed", minimum=None),
        check_int(start, "start", minimum=0),
        check_int(step, "step", minimum=None),
    )


def _check_event_shape(event_shape) -> tuple:
    """An event shape: an integer or a sequence of integers, each >= 0."""
    items = (event_shape,) if not isinstance(event_shape, (tuple, list, torch.Size)) else tuple(event_shape)
    try:
        return tuple(check_int(v, "event_shape", minimum=0) for v in items)
    except ValueError:
        raise ValueError(
            f"event_shape: expected an integer or a sequence of integers >= 0, got {event_shape!r}"
        ) from None


def seeded_noise(
    n: int,
    event_shape: Sequence[int] | int,
    *,
    seed: int = 0,
    start: int = 0,
    step: int = 0,
    dtype=torch.float64,
    device=None,
) -> torch.Tensor:
    """Standard normal noise where row ``j`` depends only on ``(seed, start + j, step)``.

    Each row comes from its own CPU generator (seeded by a SplitMix64 hash of the triple) and is
    then cast and moved, so sample ``j`` gets the same noise whatever the batch it is in, the
    model it feeds, the dtype or the device. ``step`` indexes independent streams (e.g. the
    fresh noise of each step of a stochastic sampler).

    Returns
    -------
    Tensor of shape ``(n, *event_shape)``.
    """
    n = check_int(n, "n", minimum=0)
    seed, start, step = _check_stream(seed, start, step)
    shape = _check_event_shape(event_shape)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    try:
        device = None if device is None else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {exc}") from exc
    g = torch.Generator(device="cpu")
    rows = []
    for row_seed in _sample_seeds(seed, start, int(n), step).tolist():
        g.manual_seed(row_seed)
        rows.append(torch.randn(shape, generator=g, dtype=torch.float64))
    out = torch.stack(rows) if rows else torch.empty((0, *shape), dtype=torch.float64)
    return out.to(dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------
# Grid handling and the ODE right-hand side
# ---------------------------------------------------------------------------------------------


def _grid(sigmas, schedule, ts):
    """Return ``(schedule, ts)`` for either calling form."""
    if schedule is None and ts is None:
        if sigmas is None:
            raise ValueError("sigmas: give a sigma grid, or schedule= and ts=")
        return EDM(), check_sigma_grid(sigmas, "sigmas")
    if sigmas is not None:
        raise ValueError("sigmas: give either sigmas or schedule= with ts=, not both")
    if not isinstance(schedule, Schedule) or ts is None:
        raise ValueError("schedule: needs a Schedule object together with ts= (a decreasing time grid)")
    _refuse_bool(ts, "ts")
    ts = as_tensor(ts, "ts")
    if ts.ndim != 1 or ts.shape[0] < 2 or bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError("ts: must be a strictly decreasing 1-D time grid with at least 2 entries")
    check_finite(ts, "ts")
    sig = schedule.sigma(ts)
    if not bool(torch.isfinite(sig).all()):
        raise ValueError(f"ts: sigma(t) must be finite on the grid, {type(schedule).__name__} gives {sig.tolist()}")
    if bool((sig[:-1] <= 0).any()) or float(sig[-1]) < 0:
        raise ValueError("ts: every time but the last must have sigma(t) > 0")
    return schedule, ts


class _Flow:
    """The scaled-variable probability-flow ODE of one schedule, evaluated with a denoiser."""

    def __init__(self, denoiser, schedule, x_like):
        self.denoiser, self.schedule = denoiser, schedule
        self.dtype, self.device = x_like.dtype, x_like.device

    def coeffs(self, t):
        a, b, sig, s = self.schedule.ode_coefficients(torch.as_tensor(t, dtype=torch.float64))
        return float(a), float(b), float(sig), float(s)

    def sigma(self, t) -> float:
        return float(self.schedule.sigma(torch.as_tensor(t, dtype=torch.float64)))

    def s(self, t) -> float:
        return float(self.schedule.s(torch.as_tensor(t, dtype=torch.float64)))

    def derivative(self, x, t):
        """``(dx/dt, D)`` at scaled state ``x`` and time ``t`` (sigma(t) > 0)."""
        a, b, sig, s = self.coeffs(t)
        denoised = self.denoiser(x / s, sig)
        return a * x - b * denoised, denoised


def _check_sampler(denoiser, x, callback):
    """The arguments every sampler shares: a callable denoiser, a real finite state tensor (its
    event shape and dtype are the denoiser's to check) and a callable callback or None."""
    check_callable(denoiser, "denoiser")
    check_callable(callback, "callback", allow_none=True)
    return check_state(x, "x")


def _run(denoiser, x, sigmas, schedule, ts, callback, second_order: bool):
    x = _check_sampler(denoiser, x, callback)
    schedule, ts = _grid(sigmas, schedule, ts)
    flow = _Flow(denoiser, schedule, x)
    t_list = [float(t) for t in ts]
    x = x * flow.s(t_list[0])  # to the scaled variable
    for i, (t_cur, t_next) in enumerate(zip(t_list[:-1], t_list[1:])):
        h = t_next - t_cur
        d_cur, denoised = flow.derivative(x, t_cur)
        x_next = x + h * d_cur  # Euler step.
        if second_order and flow.sigma(t_next) > 0:  # Heun correction (EDM Alg. 1).
            d_next, _ = flow.derivative(x_next, t_next)
            x_next = x + h * (0.5 * d_cur + 0.5 * d_next)
        if callback is not None:
            callback({"i": i, "t": t_cur, "sigma": flow.sigma(t_cur), "x": x / flow.s(t_cur), "denoised": denoised})
        x = x_next
    return x / flow.s(t_list[-1])


def sample_euler(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas=None,
    *,
    schedule: Schedule | None = None,
    ts=None,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE: order 1, one denoiser evaluation per step.

    On a sigma grid this is DDIM (eta = 0). With ``schedule=``/``ts=`` it steps in that
    framework's own time (e.g. Euler in t for rectified flow).

    Parameters
    ----------
    denoiser : callable ``D(x, sigma)``.
    x : (B, *event_shape) unscaled state at the first level.
    sigmas : (n+1,) decreasing noise levels, ending in 0 for a sample.
    schedule, ts : a :class:`~gaussdiff.schedules.Schedule` and its decreasing time grid,
        in place of ``sigmas``.
    callback : called after every step with a dict ``i, t, sigma, x, denoised``.

    Returns
    -------
    (B, *event_shape) unscaled state at the last level.
    """
    return _run(denoiser, x, sigmas, schedule, ts, callback, second_order=False)


def sample_heun(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas=None,
    *,
    schedule: Schedule | None = None,
    ts=None,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Heun's method (EDM Algorithm 1): order 2, two denoiser evaluations per step and one on a
    final step to sigma = 0 (where the correction is skipped). Arguments as :func:`sample_euler`."""
    return _run(denoiser, x, sigmas, schedule, ts, callback, second_order=True)


def sample_edm_stochastic(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas,
    *,
    seed: int = 0,
    start: int = 0,
    s_churn: float = 40.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.003,
    callback: Callable | None = None,
) -> torch.Tensor:
    r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): at each level in
    ``[s_tmin, s_tmax]`` raise sigma to :math:`\hat\sigma = \sigma(1 + \gamma)`,
    :math:`\gamma = \min(S_{churn}/n, \sqrt2 - 1)`, by adding fresh noise, then take a Heun step
    from :math:`\hat\sigma` to the next level. The fresh noise of step ``i`` for sample ``j`` is
    ``seeded_noise`` row ``start + j`` of stream ``i + 1``, so results do not depend on batching.
    ``s_churn = 0`` recovers :func:`sample_heun`.
    """
    x = _check_sampler(denoiser, x, callback)
    _check_stream(seed, start, 0)
    sigmas = check_sigma_grid(sigmas, "sigmas")
    for name, val in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        check_positive(val, name, allow_zero=True)
    n = len(sigmas) - 1
    sig = [float(v) for v in sigmas]
    for i in range(n):
        s_cur, s_next = sig[i], sig[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s_cur <= s_tmax else 0.0
        s_hat = s_cur * (1 + gamma)
        if gamma > 0:
            eps = seeded_noise(
                x.shape[0], x.shape[1:], seed=seed, start=start, step=i + 1, dtype=x.dtype, device=x.device
            )
            x = x + math.sqrt(s_hat**2 - s_cur**2) * s_noise * eps
        denoised = denoiser(x, s_hat)
        d_cur = (x - denoised) / s_hat
        x_next = x + (s_next - s_hat) * d_cur
        if s_next > 0:
            d_next = (x_next - denoiser(x_next, s_next)) / s_next
            x_next = x + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_next)
        if callback is not None:
            callback({"i": i, "t": s_cur, "sigma": s_cur, "sigma_hat": s_hat, "x": x, "denoised": denoised})
        x = x_next
    return x


def ancestral_step(
    x: torch.Tensor,
    denoised: torch.Tensor,
    s_cur: float,
    s_next: float,
    eta: float,
    *,
    seed: int,
    start: int = 0,
    step: int,
) -> torch.Tensor:
    r"""One ancestral step on the unscaled state from ``s_cur`` to ``s_next`` (k-diffusion's
    ancestral step; the one step of :func:`sample_euler_ancestral` and of the DPS and PiGDM
    samplers of :mod:`gaussdiff.inverse`): a deterministic Euler step down to
    :math:`\sigma_{down} = \sqrt{\sigma_{next}^2 - \sigma_{up}^2}`, then fresh noise of size
    :math:`\sigma_{up} = \min(\sigma_{next}, \eta \sqrt{\sigma_{next}^2(\sigma_{cur}^2 - \sigma_{next}^2)/\sigma_{cur}^2})`,
    ``seeded_noise`` rows ``start ..`` of stream ``step`` (drawn only when :math:`\sigma_{up} > 0`).
    ``eta = 1`` is the DDPM posterior :math:`q(x_{i+1} \mid x_i, \hat x_0)`, ``eta = 0`` is DDIM (= Euler)."""
    check_positive(s_cur, "s_cur")
    if not check_positive(s_next, "s_next", allow_zero=True) <= float(s_cur):
        raise ValueError(f"s_next: an ancestral step goes down in sigma, got s_next = {s_next} > s_cur = {s_cur}")
    check_positive(eta, "eta", allow_zero=True)
    _check_stream(seed, start, step)
    x, denoised = check_state(x, "x"), check_state(denoised, "denoised")
    if denoised.shape != x.shape:
        raise ValueError(f"denoised: expected the shape of x {tuple(x.shape)}, got {tuple(denoised.shape)}")
    s_up = min(s_next, eta * math.sqrt(max(0.0, s_next**2 * (s_cur**2 - s_next**2) / s_cur**2)))
    s_down = math.sqrt(max(0.0, s_next**2 - s_up**2))
    x_next = denoised + (s_down / s_cur) * (x - denoised)
    if s_up > 0:
        x_next = x_next + s_up * seeded_noise(
            x.shape[0], x.shape[1:], seed=seed, start=start, step=step, dtype=x.dtype, device=x.device
        )
    return x_next


def sample_euler_ancestral(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas,
    *,
    eta: float = 1.0,
    seed: int = 0,
    start: int = 0,
    callback: Callable | None = None,
) -> torch.Tensor:
    r"""Ancestral sampling (DDPM-like, k-diffusion's ``sample_euler_ancestral``): from
    :math:`\sigma_i` step deterministically down to
    :math:`\sigma_{down} = \sqrt{\sigma_{i+1}^2 - \sigma_{up}^2}` with
    :math:`\sigma_{up} = \min(\sigma_{i+1}, \eta \sqrt{\sigma_{i+1}^2(\sigma_i^2 - \sigma_{i+1}^2)/\sigma_i^2})`,
    then add fresh noise of size :math:`\sigma_{up}`. ``eta = 0`` is DDIM; ``eta = 1`` is
    DDPM's ancestral sampler. First order: even with an exact denoiser each step is biased
    (the Gaussian reverse kernel is centred on ``E[x0 | x]``, not on ``x0``), a bias that
    vanishes as the steps grow.
    """
    x = _check_sampler(denoiser, x, callback)
    _check_stream(seed, start, 0)
    sigmas = check_sigma_grid(sigmas, "sigmas")
    check_positive(eta, "eta", allow_zero=True)
    sig = [float(v) for v in sigmas]
    for i in range(len(sig) - 1):
        s_cur, s_next = sig[i], sig[i + 1]
        denoised = denoiser(x, s_cur)
        x_next = ancestral_step(x, denoised, s_cur, s_next, eta, seed=seed, start=start, step=i + 1)
        if callback is not None:  # the state at sigma = s_cur, as in the other samplers
            callback({"i": i, "t": s_cur, "sigma": s_cur, "x": x, "denoised": denoised})
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------
# High-accuracy reference
# ---------------------------------------------------------------------------------------------


def solve_flow(
    denoiser: Callable,
    x: torch.Tensor,
    sigma_from: float,
    sigma_to: float,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "DOP853",
    max_batch: int | None = None,
) -> torch.Tensor:
    r"""Reference solution of the probability-flow ODE with scipy's adaptive ``solve_ivp``.

    Integrates :math:`d\hat x/du = \hat x - D(\hat x, e^u)` in :math:`u = \log\sigma` (the
    sigma-ODE times sigma), which keeps the step size uniform across scales, from
    ``sigma_from`` to ``sigma_to`` (both > 0; to reach a sample, apply the denoiser at a small
    final level or use :meth:`GaussianDenoiser.flow`). Computed in float64 on the CPU,
    returned in ``x``'s dtype and device.

    Parameters
    ----------
    rtol, atol : solver tolerances (defaults: DOP853 at 1e-10 / 1e-12).
    max_batch : solve in batches of this many samples (all at once when None).
    """
    from scipy.integrate import solve_ivp

    s0 = check_positive(sigma_from, "sigma_from")
    s1 = check_positive(sigma_to, "sigma_to")
    check_positive(rtol, "rtol")
    check_positive(atol, "atol", allow_zero=True)
    check_callable(denoiser, "denoiser")
    x = check_state(x, "x")
    shape = x.shape
    flat = x.detach().to(torch.float64).cpu().reshape(shape[0], math.prod(shape[1:]))
    out = torch.empty_like(flat)
    step = max(1, shape[0]) if max_batch is None else check_int(max_batch, "max_batch")

    for b0 in range(0, shape[0], step):
        block = flat[b0 : b0 + step]
        bshape = (block.shape[0], *shape[1:])

        def rhs(u, y, bshape=bshape):
            xt = torch.from_numpy(y).reshape(bshape).to(dtype=x.dtype, device=x.device)
            den = denoiser(xt, math.exp(u))
            return y - den.detach().to(torch.float64).cpu().reshape(-1).numpy()

        sol = solve_ivp(
            rhs, (math.log(s0), math.log(s1)), block.reshape(-1).numpy(), method=method, rtol=rtol, atol=atol
        )
        if not sol.success:  # pragma: no cover - scipy failure path
            raise RuntimeError(f"solve_flow: the ODE solver failed: {sol.message}")
        out[b0 : b0 + step] = torch.from_numpy(sol.y[:, -1]).reshape(block.shape)
    return out.reshape(shape).to(dtype=x.dtype, device=x.device)
