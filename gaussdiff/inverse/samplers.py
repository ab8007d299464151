r"""Approximate posterior samplers used in practice, on any sigma grid and any denoiser of the
prior: diffusion posterior sampling (:func:`sample_dps`), pseudoinverse-guided diffusion
(:func:`sample_pigdm`) and denoising diffusion restoration models (:func:`sample_ddrm`), and
:func:`run_posterior_sampler`, which runs any of them, or the exact posterior denoiser of
:mod:`gaussdiff.inverse.posteriors` with Heun, on the same noise.

Each takes ``(denoiser, x, sigmas, *, A, y, sigma_y, ...)`` like the samplers of
:mod:`gaussdiff.sampling` (``x`` the unscaled start ``sigmas[0] * noise``) and draws the fresh
noise of step ``i`` from ``seeded_noise`` stream ``i + 1``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_int, check_positive, check_sigma_grid
from ..empirical import EmpiricalDenoiser
from ..sampling import ancestral_step, sample_heun, seeded_noise
from ..schedules import karras_sigmas
from .operators import as_operator, check_measurement, check_sigma_y
from .posteriors import PosteriorDenoiser, empirical_logits, training_points

__all__ = ["sample_dps", "sample_pigdm", "sample_ddrm", "run_posterior_sampler", "POSTERIOR_SAMPLERS"]


def _setup(denoiser, x, sigmas, A, y, sigma_y):
    if not callable(denoiser):
        raise ValueError("denoiser: expected a callable D(x, sigma)")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError("x: expected a floating (B, *event_shape) tensor")
    sigmas = check_sigma_grid(sigmas, "sigmas")
    d = math.prod(x.shape[1:])
    op = as_operator(A, d)
    sy = check_sigma_y(sigma_y)
    yy = check_measurement(y, op, dtype=x.dtype, device=x.device)
    if yy.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"y: has {yy.shape[0]} rows but x has {x.shape[0]}; give one measurement per sample (or a single one)"
        )
    return [float(v) for v in sigmas], op, sy, yy.expand(x.shape[0], -1)


def _denoise_vjp(denoiser, x, sigma: float, v_of: Callable):
    r"""``(D(x, sigma), J^T v)`` with ``J = dD/dx`` and ``v = v_of(D)`` (flat ``(B, d)``).

    Uses autograd where the denoiser is differentiable; for an
    :class:`~gaussdiff.EmpiricalDenoiser` (not differentiable) the exact Jacobian (E3)
    :math:`J = \mathrm{Cov}[x_0 \mid x]/\sigma^2` (symmetric) from its posterior weights."""
    B = x.shape[0]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        den = denoiser(xr, sigma)
        if den.requires_grad:
            v = v_of(den.detach().reshape(B, -1))
            (g,) = torch.autograd.grad(den, xr, v.reshape(den.shape))
            return den.detach(), g.reshape(B, -1)
    if isinstance(denoiser, EmpiricalDenoiser):
        X = training_points(denoiser)
        W = torch.softmax(empirical_logits(x.reshape(B, -1).to(torch.float64), X, sigma), 1)  # (E2) weights
        D = W @ X
        v = v_of(D.to(x.dtype)).to(torch.float64)
        Jv = ((W * (v @ X.T)) @ X - D * (D * v).sum(1, keepdim=True)) / sigma**2
        return D.to(x.dtype).reshape(x.shape), Jv.to(x.dtype)
    raise ValueError(
        f"denoiser: {type(denoiser).__name__} is not differentiable by autograd; DPS and "
        "PiGDM need its vector-Jacobian product"
    )


def sample_dps(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas,
    *,
    A,
    y,
    sigma_y: float,
    zeta: float = 1.0,
    seed: int = 0,
    start: int = 0,
    callback: Callable | None = None,
) -> torch.Tensor:
    r"""Diffusion posterior sampling (Chung, Kim, McCann, Klasky & Ye, ICLR 2023), Algorithm 1
    ("DPS - Gaussian"), with the step size of the authors' code, on any sigma grid and any
    denoiser.

    DPS approximates the posterior score by
    :math:`\nabla \log p(x_i \mid y) \approx s(x_i) + \nabla_{x_i} \log p(y \mid \hat x_0(x_i))`,
    the Gaussian likelihood taken at the posterior mean :math:`\hat x_0 = D` (the paper's
    eq. (16)); Algorithm 1 replaces the likelihood's weight by a step size. Each step is the
    DDPM ancestral step of the unconditional model (Algorithm 1, line 6; here the k-diffusion
    ancestral step with eta = 1, the same DDPM posterior on a sigma grid) followed by the
    gradient step (Algorithm 1, line 7), in the form of the authors' code

    .. math:: x_{i-1} = x'_{i-1} - \zeta\, \nabla_{x_i} \| y - A \hat x_0(x_i) \|_2

    (DPS2022/diffusion-posterior-sampling, ``guided_diffusion/condition_methods.py``, class
    ``PosteriorSampling``: ``norm = torch.linalg.norm(difference)``, ``norm_grad =
    torch.autograd.grad(outputs=norm, inputs=x_prev)[0]``, ``x_t -= norm_grad * self.scale``):
    ``zeta`` is their ``scale``, the *unsquared* residual norm is differentiated. Conversion:
    Algorithm 1 as written, :math:`\zeta_i \nabla \|r\|_2^2` with :math:`\zeta_i = \zeta'/\|r\|`
    (the step-size rule of the paper's Appendix C.2), is :math:`2\zeta' \nabla\|r\|`, i.e. this
    step with ``zeta = 2 zeta'``. The authors' configs use ``scale`` 0.5 for inpainting
    (``configs/inpainting_config.yaml``) and 0.3 for super-resolution and Gaussian deblurring
    (``configs/super_resolution_config.yaml``, ``configs/gaussian_deblur_config.yaml``); the
    default ``zeta = 1.0`` is their code's default (``kwargs.get('scale', 1.0)``): pass the
    config value of the task at hand.

    The norm is taken per sample (the authors' code takes it over the batch tensor and runs
    one image at a time, ``batch_size=1`` in ``sample_condition.py``). The gradient is taken in
    the VP-scaled variable :math:`x_{VP} = \hat x/\sqrt{1+\sigma^2}` of the paper and translated
    to the unscaled state, i.e. multiplied by :math:`\sqrt{(1+\sigma_i^2)(1+\sigma_{i+1}^2)}`.
    The likelihood weight is the heuristic ``zeta``, not :math:`1/2\sigma_y^2`: ``sigma_y`` only
    enters through ``y``. One denoiser evaluation and one vector-Jacobian product per step;
    stochastic (fresh noise of step ``i`` = ``seeded_noise`` stream ``i + 1``).

    Parameters
    ----------
    denoiser : ``D(x, sigma)`` of the prior, differentiable by autograd (or an EmpiricalDenoiser).
    x : (B, *event_shape) start, ``sigmas[0] * noise``.
    sigmas : decreasing grid ending in 0.
    A, y, sigma_y : operator (or (m, d) tensor), (B, m) measurements, noise level.
    zeta : the authors' ``scale`` (step on :math:`\nabla\|r\|`; ``2 zeta'`` of the paper's
        Appendix C.2 rule), default 1.0.

    Returns
    -------
    (B, *event_shape) samples.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    check_positive(zeta, "zeta", allow_zero=True)
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):

        def v_of(D):
            r = yy - op.forward(D)
            norm = r.norm(dim=1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny)
            return -op.adjoint(r) / norm  # grad of |y - A D| wrt D

        den, grad = _denoise_vjp(denoiser, x, s_cur, v_of)
        x_next = ancestral_step(x, den, s_cur, s_next, 1.0, seed=seed, start=start, step=i + 1)
        scale = math.sqrt((1 + s_cur**2) * (1 + s_next**2))  # VP variable -> unscaled state
        x_next = x_next - (zeta * scale * grad).reshape(x.shape)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den})
        x = x_next
    return x


def sample_pigdm(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas,
    *,
    A,
    y,
    sigma_y: float,
    data_var: float = 1.0,
    eta: float = 0.0,
    seed: int = 0,
    start: int = 0,
    callback: Callable | None = None,
) -> torch.Tensor:
    r"""Pseudoinverse-guided diffusion (PiGDM; Song, Vahdat, Mardani & Kautz, ICLR 2023), any
    sigma grid and any denoiser.

    PiGDM approximates :math:`p(x_0 \mid x_t) \approx N(\hat x_0, r_t^2 I)`, which gives
    :math:`p_t(y \mid x_t) \approx N(A\hat x_0, r_t^2 AA^T + \sigma_y^2 I)` and the guidance (the
    paper's form for noisy linear measurements)

    .. math:: g = \Big(\big(y - A\hat x_0\big)^T \big(r_t^2 AA^T + \sigma_y^2 I\big)^{-1} A
              \frac{\partial \hat x_0}{\partial x_t}\Big)^T
              \approx \nabla_{x_t} \log p_t(y \mid x_t),

    with :math:`r_t^2 = \sigma^2 v / (v + \sigma^2)`, ``v = data_var`` (the paper's
    :math:`r_t^2 = \sigma_t^2/(1+\sigma_t^2)` for data of unit variance: the exact posterior
    variance of an :math:`N(0, vI)` prior). Here ``g`` is added to the prior score, i.e. the
    conditional denoiser :math:`D + \sigma^2 g` is used in the DDIM step (Euler for ``eta = 0``);
    this is Bayes' rule with weight 1: no extra guidance weight is applied. For an isotropic
    Gaussian prior :math:`N(\mu, vI)` the approximation is exact, and so is the sampler as the
    steps grow. One denoiser evaluation, one VJP and one ``m x m`` solve per step.
    Equation, section and algorithm numbers of the paper are not cited here: they could not be
    checked against its text.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    v = check_positive(data_var, "data_var")
    check_positive(eta, "eta", allow_zero=True)
    Am = op.matrix().to(dtype=torch.float64, device=x.device)
    AAt = Am @ Am.T
    eye = torch.eye(op.out_dim, dtype=torch.float64, device=x.device)
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        r2 = s_cur**2 * v / (v + s_cur**2)
        M = r2 * AAt + sy**2 * eye

        def v_of(D):
            r = (yy - op.forward(D)).to(torch.float64)
            return op.adjoint(torch.linalg.solve(M, r.T).T.to(D.dtype))

        den, g = _denoise_vjp(denoiser, x, s_cur, v_of)
        den_y = den + s_cur**2 * g.reshape(den.shape)
        x_next = ancestral_step(x, den_y, s_cur, s_next, eta, seed=seed, start=start, step=i + 1)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den_y})
        x = x_next
    return x


def sample_ddrm(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas,
    *,
    A,
    y,
    sigma_y: float,
    eta: float = 0.85,
    eta_b: float = 1.0,
    seed: int = 0,
    start: int = 0,
    callback: Callable | None = None,
) -> torch.Tensor:
    r"""Denoising diffusion restoration models (DDRM; Kawar, Elad, Ermon & Song, NeurIPS 2022),
    any sigma grid and any denoiser.

    In the spectral coordinates of :math:`A = U\,\mathrm{diag}(s)\,V^T` (``V`` completed to an
    orthonormal basis), :math:`\bar x = V^T x`, :math:`\bar y_j = (U^T y)_j / s_j` with noise
    :math:`\sigma_y / s_j`. Start: observed coordinates with :math:`\sigma_0 \ge \sigma_y/s_j`
    start at :math:`\bar y_j + \sqrt{\sigma_0^2 - \sigma_y^2/s_j^2}\,\epsilon_j`
    (``epsilon`` = the given start noise ``x / sigma_0``), the others at ``x``. Each step from
    :math:`\sigma_{i}` to :math:`\sigma_{i+1}` with :math:`\bar x_\theta = V^T D(x_i, \sigma_i)`:

    * unobserved (:math:`s_j = 0`): :math:`\bar x_\theta + \sqrt{1-\eta^2}\,\sigma_{i+1}(\bar x_i - \bar x_\theta)/\sigma_i + \eta\sigma_{i+1}\epsilon`;
    * :math:`\sigma_{i+1} < \sigma_y/s_j`: :math:`\bar x_\theta + \sqrt{1-\eta^2}\,\sigma_{i+1}(\bar y - \bar x_\theta)\,s_j/\sigma_y + \eta\sigma_{i+1}\epsilon`;
    * :math:`\sigma_{i+1} \ge \sigma_y/s_j`: :math:`(1-\eta_b)\bar x_\theta + \eta_b\bar y + \sqrt{\sigma_{i+1}^2 - \eta_b^2\sigma_y^2/s_j^2}\,\epsilon`.

    Defaults ``eta = 0.85``, ``eta_b = 1`` are the authors' (bahjat-kawar/ddrm, ``README.md``:
    ``--eta`` default 0.85, ``--etaB`` default 1). Equation and section numbers of the paper are
    not cited here: they could not be checked against its text. One denoiser evaluation per
    step, no gradient; uses ``A.svd()``. Fresh noise of step ``i`` = ``seeded_noise`` stream ``i + 1``.
    """
    sig, op, sy, yy = _setup(denoiser, x, sigmas, A, y, sigma_y)
    for name, val in (("eta", eta), ("eta_b", eta_b)):
        check_positive(val, name, allow_zero=True)
    if eta > 1:
        raise ValueError(f"eta: must be in [0, 1], got {eta}")
    B, d = x.shape[0], math.prod(x.shape[1:])
    U, s, V = (t.to(device=x.device) for t in op.svd())
    r = s.shape[0]
    e, Q = torch.linalg.eigh(torch.eye(d, dtype=torch.float64, device=x.device) - V @ V.T)
    Vf = torch.cat([V, Q[:, e > 0.5]], 1)  # V completed to a basis of R^d
    ybar = (yy.to(torch.float64) @ U) / s  # (B, r)
    ny = torch.full((r,), sy, dtype=torch.float64, device=x.device) / s  # sigma_y / s_j
    to_bar = lambda z: z.reshape(B, -1).to(torch.float64) @ Vf  # noqa: E731
    from_bar = lambda zb: (zb @ Vf.T).to(x.dtype).reshape(x.shape)  # noqa: E731

    xb = to_bar(x)
    s0 = sig[0]
    eps0 = xb[:, :r] / s0
    top = s0 >= ny
    xb[:, :r] = torch.where(top[None], ybar + torch.sqrt((s0**2 - ny**2).clamp_min(0))[None] * eps0, xb[:, :r])
    x = from_bar(xb)
    for i, (s_cur, s_next) in enumerate(zip(sig[:-1], sig[1:])):
        den = denoiser(x, s_cur)
        xt = to_bar(den)
        eps = to_bar(
            seeded_noise(B, x.shape[1:], seed=seed, start=start, step=i + 1, dtype=torch.float64, device=x.device)
        )
        c = math.sqrt(1 - eta**2)
        new = xt + c * s_next * (xb - xt) / s_cur + eta * s_next * eps  # unobserved
        lo = (
            xt[:, :r]
            + c * s_next * (ybar - xt[:, :r]) / ny.clamp_min(torch.finfo(torch.float64).tiny)
            + eta * s_next * eps[:, :r]
        )
        hi = (
            (1 - eta_b) * xt[:, :r]
            + eta_b * ybar
            + torch.sqrt((s_next**2 - eta_b**2 * ny**2).clamp_min(0))[None] * eps[:, :r]
        )
        new[:, :r] = torch.where((s_next < ny)[None], lo, hi)
        if callback is not None:
            callback({"i": i, "sigma": s_cur, "x": x, "denoised": den})
        xb = new
        x = from_bar(xb)
    return x


# =============================================================================================
# Running a sampler, exact or approximate, on the same noise
# =============================================================================================

POSTERIOR_SAMPLERS = ("exact", "dps", "pigdm", "ddrm")


def run_posterior_sampler(
    name: str,
    prior,
    A,
    y,
    sigma_y: float,
    *,
    steps: int,
    n_samples: int,
    seed: int = 0,
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    **kwargs,
):
    r"""Draw ``n_samples`` per measurement with one sampler on the Karras grid of ``steps`` steps.

    ``name``: ``"exact"`` (Heun on the :class:`PosteriorDenoiser`, 2 evaluations per step),
    ``"dps"``, ``"pigdm"`` or ``"ddrm"`` (on the prior's denoiser). Sample ``j`` of measurement
    ``q`` starts from ``seeded_noise`` row ``q * n_samples + j``, the same for every sampler.

    Returns
    -------
    (Q, n_samples, *event_shape) samples, ``Q = len(y)``.
    """
    if name not in POSTERIOR_SAMPLERS:
        raise ValueError(f"name: expected one of {POSTERIOR_SAMPLERS}, got {name!r}")
    steps, n_samples = check_int(steps, "steps"), check_int(n_samples, "n_samples")
    op = as_operator(A, prior.dim)
    yy = check_measurement(y, op, dtype=prior.dtype, device=prior.device)
    Q = yy.shape[0]
    yr = yy.repeat_interleave(int(n_samples), 0)
    sigmas = karras_sigmas(int(steps), sigma_min, sigma_max)
    x = (
        seeded_noise(Q * int(n_samples), prior.event_shape, seed=seed, dtype=prior.dtype, device=prior.device)
        * sigmas[0]
    )
    if name == "exact":
        out = sample_heun(PosteriorDenoiser(prior, op, yr, sigma_y), x, sigmas)
    else:
        fn = {"dps": sample_dps, "pigdm": sample_pigdm, "ddrm": sample_ddrm}[name]
        out = fn(prior, x, sigmas, A=op, y=yr, sigma_y=sigma_y, seed=seed, **kwargs)
    return out.reshape(Q, int(n_samples), *prior.event_shape)
