r"""Metrics of denoisers on a noise grid: how two denoisers differ, how linear one is, its best
affine fit, how far its training loss is from the optimum, and its train/held-out error gap.

Each function takes a denoiser ``D(x, sigma)`` and clean points, adds noise drawn from the
``torch.Generator`` it is given at each level of a sigma grid, and returns a
:class:`SigmaProfile` (one value per sigma and their mean) or a small result type built from
them: :func:`denoiser_distance`, :func:`optimum_gap`, :func:`linearity_score`,
:func:`centred_linearity_score`, :func:`linear_distillation`,
:func:`distillation_distance_to_gaussian` and :func:`generalization_gap`. All levels of a grid
are stacked into batched calls of the denoiser (``batch_size`` rows at a time), so a grid of 10
sigmas costs a handful of calls, not 10 loops. Jacobian spectra are in
:mod:`gaussdiff.metrics.jacobians`, metrics of samples in :mod:`gaussdiff.metrics.samples`; all
are re-exported by :mod:`gaussdiff.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import _refuse_bool, as_tensor, check_callable, check_data, check_finite, check_int, check_positive
from ..denoisers import GaussianDenoiser
from ..empirical import EmpiricalDenoiser
from ..training.settings import TrainSettings
from ._common import _WORK, _flat64, _is_number, _same_event


_TRAIN = TrainSettings()  # the trainer's law of sigma is optimum_gap's default

__all__ = [
    "SigmaProfile",
    "LinearDistillation",
    "DistillationComparison",
    "GeneralizationGap",
    "OptimumGap",
    "denoiser_distance",
    "optimum_gap",
    "linearity_score",
    "centred_linearity_score",
    "linear_distillation",
    "distillation_distance_to_gaussian",
    "generalization_gap",
]


# =============================================================================================
# Result types
# =============================================================================================


@dataclass(frozen=True)
class SigmaProfile:
    """A quantity measured at each noise level of a grid.

    Attributes
    ----------
    sigmas : (S,) float64 noise levels, in the order given.
    values : (S,) float64 value at each level.
    """

    sigmas: torch.Tensor
    values: torch.Tensor

    @property
    def mean(self) -> float:
        """The aggregate: the plain mean of ``values`` over the grid."""
        return float(self.values.mean())

    def __sub__(self, other: "SigmaProfile") -> "SigmaProfile":
        if not torch.equal(self.sigmas, other.sigmas):
            raise ValueError("other: profiles on different sigma grids cannot be subtracted")
        return SigmaProfile(self.sigmas, self.values - other.values)


@dataclass(frozen=True)
class LinearDistillation:
    """Least-squares affine fits ``D(x, sigma_s) ~= W_s x + b_s`` (flattened coordinates).

    Attributes
    ----------
    sigmas : (S,) float64 noise levels.
    weight : (S, d, d) float64 ``W_s``.
    bias : (S, d) float64 ``b_s``.
    residual : (S,) relative residual ``sum ||D - (W x + b)||^2 / sum ||D - mean D||^2``
        of each fit on its own points: 0 for an affine denoiser, 1 when no affine map explains
        any of the output's variation.
    """

    sigmas: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    residual: torch.Tensor

    def predict(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The fitted affine denoiser at ``sigmas[index]`` applied to ``x`` (B, *event_shape)."""
        xf = x.reshape(x.shape[0], -1).to(_WORK)
        out = xf @ self.weight[index].T + self.bias[index]
        return out.reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class DistillationComparison:
    """Output of :func:`distillation_distance_to_gaussian`; each field is a :class:`SigmaProfile`.

    Attributes
    ----------
    weight : ``||W_s - J_s||_F / ||J_s||_F``.
    offset : ``||b_s - c_s|| / sqrt(tr Sigma)``.
    output : ``E||(W_s x + b_s) - (J_s x + c_s)||^2 / tr Sigma`` for ``x ~ N(mu, Sigma + sigma^2 I)``.
    """

    weight: SigmaProfile
    offset: SigmaProfile
    output: SigmaProfile


@dataclass(frozen=True)
class GeneralizationGap:
    """Output of :func:`generalization_gap`: per-coordinate denoising MSE on training and
    held-out points; ``gap = heldout - train``."""

    train: SigmaProfile
    heldout: SigmaProfile

    @property
    def gap(self) -> SigmaProfile:
        return self.heldout - self.train


# =============================================================================================
# Validation and evaluation helpers (private)
# =============================================================================================


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "generator: expected a torch.Generator (randomness is passed in, "
            f"never drawn from the global generator), got {type(generator).__name__}"
        )
    return generator


def _check_sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    """Noise levels: a positive float or a 1-D sequence of positive floats, any order."""
    _refuse_bool(sigmas, name)
    s = as_tensor(sigmas, name, dtype=_WORK).cpu()
    if s.ndim == 0:
        s = s.reshape(1)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"{name}: expected a float or a non-empty 1-D grid, got shape {tuple(s.shape)}")
    check_finite(s, name)
    if bool((s <= 0).any()):
        raise ValueError(f"{name}: every noise level must be > 0, got min {float(s.min())}")
    return s


def _noise(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn in float64 on the generator's device, then cast like ``like``."""
    n = torch.randn(shape, generator=generator, dtype=_WORK, device=generator.device)
    return n.to(dtype=like.dtype, device=like.device)


def _evaluate(denoiser: Callable, x: torch.Tensor, sigma: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``D(x, sigma)`` with a per-row ``sigma`` (M,), in batches of ``batch_size`` rows, without
    gradients; returns float64 ``(M, d)``. An output that is not finite is refused (a metric of
    NaN is no answer)."""
    check_callable(denoiser, "denoiser")
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            sb = sigma[start : start + batch_size].to(dtype=x.dtype, device=x.device)
            y = denoiser(xb, sb)
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(xb.shape):
                raise ValueError(
                    f"denoiser: must return a tensor of the input's shape {tuple(xb.shape)}, "
                    f"got {getattr(y, 'shape', type(y).__name__)}"
                )
            out.append(_flat64(check_finite(y, "denoiser output")))
    return torch.cat(out)


def _on_grid(denoiser, points, sigmas, noise, batch_size):
    """Evaluate ``D`` at ``points + sigma_s * noise[s]`` for every level in one batched pass.

    Returns ``(x, D)``: float64 ``(S, B, d)`` noisy inputs and outputs."""
    S, B = sigmas.shape[0], points.shape[0]
    sig = sigmas.to(dtype=points.dtype, device=points.device)
    x = points[None] + sig.reshape(S, *([1] * points.ndim)) * noise  # (S, B, *event)
    x = x.reshape(S * B, *points.shape[1:])
    sig_rows = sigmas.repeat_interleave(B)
    y = _evaluate(denoiser, x, sig_rows, batch_size)
    return _flat64(x).reshape(S, B, -1), y.reshape(S, B, -1)


def _cosine_rows(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of float64 ``(..., d)`` tensors; 0 where either row is zero."""
    tiny = torch.finfo(_WORK).tiny
    num = (u * v).sum(-1)
    den = u.norm(dim=-1) * v.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp_min(tiny), torch.zeros_like(num))


# =============================================================================================
# Denoisers compared on a sigma grid
# =============================================================================================


def denoiser_distance(
    d1: Callable,
    d2: Callable,
    points,
    sigmas,
    *,
    generator: torch.Generator,
    normalize: str = "data",
    batch_size: int = 4096,
) -> SigmaProfile:
    r"""Relative mean squared difference of two denoisers on noisy points, per noise level.

    At each :math:`\sigma`, with :math:`x = x_0 + \sigma n`, :math:`x_0` the given points and
    :math:`n \sim N(0, I)` (the *same* noise for both denoisers),

    .. math:: \mathrm{dist}(\sigma) = \frac{E\,\|D_1(x, \sigma) - D_2(x, \sigma)\|^2}{Z}.

    The normaliser ``Z``:

    * ``"data"`` (default): :math:`E\|x_0 - \bar x_0\|^2`, the total variance of the points,
      i.e. the error of the best constant denoiser at :math:`\sigma \to \infty`. It does not
      depend on sigma or on either denoiser, so the profile is comparable across the grid and
      symmetric in ``d1``/``d2``, and it is translation invariant. The alternatives fail at the
      ends of the grid: :math:`E\|D_2\|^2` is dominated by :math:`\|\bar x_0\|^2` (zero for centred
      data, huge for data with a large offset), and :math:`E\|D_2 - E D_2\|^2` vanishes like
      :math:`\sigma^{-4}` at large sigma, where every denoiser returns the mean, so a negligible
      absolute error would read as a huge relative one.
    * ``"reference"``: :math:`E\|D_2(x, \sigma)\|^2`, the textbook relative MSE.
    * ``"none"``: the plain MSE :math:`E\|D_1 - D_2\|^2` (summed over coordinates).

    Call it twice, on training points and on held-out points, to see memorization (e.g. network
    vs empirical denoiser of its own training subset: small on training points at small sigma).

    Parameters
    ----------
    d1, d2 : denoisers ``D(x, sigma)`` (sigma a ``(B,)`` tensor).
    points : (B, *event_shape) clean points, in the dtype/device the denoisers accept.
    sigmas : float or (S,) positive noise levels.
    generator : ``torch.Generator`` for the noise.
    normalize : ``"data"``, ``"reference"`` or ``"none"``.
    batch_size : rows per denoiser call (all levels are stacked into one batch).

    Returns
    -------
    :class:`SigmaProfile` of ``dist`` per sigma; ``.mean`` averages over the grid.
    """
    check_callable(d1, "d1")
    check_callable(d2, "d2")
    points = check_data(points, "points")
    sig = _check_sigmas(sigmas)
    gen = _check_generator(generator)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if normalize not in ("data", "reference", "none"):
        raise ValueError(f"normalize: expected 'data', 'reference' or 'none', got {normalize!r}")
    if normalize == "data":
        if points.shape[0] < 2:
            raise ValueError("points: normalize='data' needs at least 2 points")
        flat = _flat64(points)
        z = float(((flat - flat.mean(0)) ** 2).sum(1).mean())
        if z <= 0:
            raise ValueError(
                "points: all points are equal, their variance cannot normalise the distance "
                "(use normalize='reference' or 'none')"
            )
    noise = _noise((sig.shape[0], *points.shape), gen, points)
    _, y1 = _on_grid(d1, points, sig, noise, batch_size)
    _, y2 = _on_grid(d2, points, sig, noise, batch_size)
    mse = ((y1 - y2) ** 2).sum(-1).mean(-1)  # (S,)
    if normalize == "data":
        vals = mse / z
    elif normalize == "reference":
        ref = (y2**2).sum(-1).mean(-1)
        if bool((ref <= 0).any()):
            raise ValueError("d2: its output is zero at some level, normalize='reference' is undefined")
        vals = mse / ref
    else:
        vals = mse
    return SigmaProfile(sig, vals.cpu())


@dataclass(frozen=True)
class OptimumGap:
    """What :func:`optimum_gap` returns: three training losses on the same draws and the
    denoiser's excess over the optimum.

    Attributes
    ----------
    loss, loss_optimum, loss_gaussian : the denoiser's, the exact empirical optimum's and the
        training set's Gaussian fit's weighted denoising loss (per coordinate, mean over draws).
    excess, excess_se : ``loss - loss_optimum`` (>= 0 up to Monte-Carlo error) and its standard
        error over the paired draws.
    n_draws : the number of ``(x0, sigma, n)`` draws.
    """

    loss: float
    loss_optimum: float
    loss_gaussian: float
    excess: float
    excess_se: float
    n_draws: int

    @property
    def gaussian_share(self) -> float:
        """``excess / (loss_gaussian - loss_optimum)``: 0 at the optimum, 1 at the Gaussian fit."""
        return self.excess / (self.loss_gaussian - self.loss_optimum)


def optimum_gap(
    denoiser: Callable,
    train,
    *,
    generator: torch.Generator,
    n_draws: int = 4096,
    p_mean: float = _TRAIN.p_mean,
    p_std: float = _TRAIN.p_std,
    sigma_data: float | None = None,
    batch_size: int = 4096,
) -> OptimumGap:
    r"""How far a denoiser's *training* loss is from the smallest possible, the exact empirical
    optimum's: a measured "sufficiently trained".

    The loss is EDM's (Karras et al. 2022, eq. 2 and Table 1), the same for every framework,

    .. math:: L(D) = E_{\sigma, x_0, n}\, \lambda(\sigma)\, \|D(x_0 + \sigma n, \sigma) - x_0\|^2 / d,
              \qquad \lambda = \frac{\sigma^2 + \sigma_d^2}{(\sigma \sigma_d)^2},\;
              \ln\sigma \sim N(P_{mean}, P_{std}^2),

    with :math:`x_0` uniform on the training set. Its minimiser over all functions is the
    empirical optimum :class:`~gaussdiff.EmpiricalDenoiser` (for any weighting and any law of
    sigma), so ``loss >= loss_optimum`` up to Monte-Carlo error, and the training set's Gaussian
    fit (:meth:`~gaussdiff.GaussianDenoiser.fit`, the best affine denoiser) sits above it. The
    three are evaluated on the *same* draws, so their differences are precise: ``excess =
    L(D) - L(D_emp)`` says how much training loss is left to lose (0 for a denoiser that has
    reached the optimum), and ``gaussian_share`` sets it against the Gaussian fit's.

    Parameters
    ----------
    denoiser : ``D(x, sigma)`` accepting the training set's dtype (a ``(B,)`` sigma).
    train : (N, *event_shape) its training set (N >= 2).
    generator : ``torch.Generator`` for the draws (indices, sigmas, noise).
    n_draws : number of draws.
    p_mean, p_std : the law of sigma (EDM's defaults).
    sigma_data : EDM's :math:`\sigma_d` (default: the standard deviation of ``train``).
    batch_size : rows per denoiser call.
    """

    train = check_data(train, "train", min_rows=2)
    gen = _check_generator(generator)
    n_draws = check_int(n_draws, "n_draws", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_positive(p_std, "p_std")
    if not math.isfinite(p_mean):
        raise ValueError(f"p_mean: must be finite, got {p_mean!r}")
    sd = float(train.to(_WORK).std()) if sigma_data is None else check_positive(sigma_data, "sigma_data")
    if not sd > 0:
        raise ValueError(
            "train: all its entries are equal, so sigma_data (its standard deviation) is 0; pass sigma_data"
        )
    idx = torch.randint(train.shape[0], (n_draws,), generator=gen, device=gen.device).cpu()
    sigma = torch.exp(p_mean + p_std * torch.randn(n_draws, generator=gen, dtype=_WORK, device=gen.device)).cpu()
    noise = _noise((n_draws, *train.shape[1:]), gen, train).cpu()
    x0 = train.cpu()[idx]
    x = x0 + sigma.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1))) * noise
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
    d = math.prod(train.shape[1:])
    train64 = train.cpu().to(_WORK)
    x64 = x.to(_WORK)

    def per_draw(den, xx):
        out = _evaluate(den, xx.to(train.device), sigma.to(xx.dtype), batch_size).cpu()
        return lam * ((out - _flat64(x0)) ** 2).sum(1) / d

    l_net = per_draw(denoiser, x)
    l_opt = per_draw(EmpiricalDenoiser(train64), x64)
    l_gau = per_draw(GaussianDenoiser.fit(train64), x64)
    diff = l_net - l_opt
    return OptimumGap(
        float(l_net.mean()),
        float(l_opt.mean()),
        float(l_gau.mean()),
        float(diff.mean()),
        float(diff.std() / math.sqrt(n_draws)),
        n_draws,
    )


def _linearity(denoiser, points, sigmas, generator, alpha, beta, batch_size, centred):
    points = check_data(points, "points", min_rows=2)
    sig = _check_sigmas(sigmas)
    gen = _check_generator(generator)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not _is_number(v):
            raise ValueError(f"{name}: expected a finite number, got {v!r}")
    alpha, beta = float(alpha), float(beta)
    S, B = sig.shape[0], points.shape[0]
    n_terms = 3 if centred else 2
    # Partners: x1 from point i, x2 (and x3) from random other points; fresh noise for each.
    perm2 = torch.randperm(B, generator=gen, device=gen.device).to(points.device)
    perm3 = torch.randperm(B, generator=gen, device=gen.device).to(points.device)
    bases = [points, points[perm2], points[perm3]][:n_terms]
    noisy = []
    ys = []
    for base in bases:
        x, y = _on_grid(denoiser, base, sig, _noise((S, *points.shape), gen, points), batch_size)
        noisy.append(x)
        ys.append(y)
    if centred:
        x1, x2, x3 = noisy
        y1, y2, y3 = ys
        xq = x3 + alpha * (x1 - x3) + beta * (x2 - x3)
    else:
        x1, x2 = noisy
        y1, y2 = ys
        xq = alpha * x1 + beta * x2
    xq_t = xq.reshape(S * B, *points.shape[1:]).to(points.dtype)
    yq = _evaluate(denoiser, xq_t, sig.repeat_interleave(B), batch_size).reshape(S, B, -1)
    if centred:
        u = yq - y3
        v = alpha * (y1 - y3) + beta * (y2 - y3)
        cos = _cosine_rows(u, v)
    else:
        cos = _cosine_rows(yq, alpha * y1 + beta * y2).abs()
    return SigmaProfile(sig, cos.mean(-1).cpu())


def linearity_score(
    denoiser: Callable,
    points,
    sigmas,
    *,
    generator: torch.Generator,
    alpha: float = 1 / math.sqrt(2),
    beta: float = 1 / math.sqrt(2),
    batch_size: int = 4096,
) -> SigmaProfile:
    r"""Linearity score of Li, Dai & Qu (NeurIPS 2024, "Understanding generalizability of
    diffusion models requires rethinking the hidden Gaussian structure"), per noise level:

    .. math:: \mathrm{LS}(\sigma) = E_{x_1, x_2 \sim p(x; \sigma)} \left|\left\langle
              \frac{D(\alpha x_1 + \beta x_2)}{\|D(\alpha x_1 + \beta x_2)\|},
              \frac{\alpha D(x_1) + \beta D(x_2)}{\|\alpha D(x_1) + \beta D(x_2)\|}
              \right\rangle\right|,

    the absolute cosine between the output at a combination of inputs and the same combination
    of outputs, :math:`D = D(\cdot, \sigma)`, with :math:`\alpha = \beta = 1/\sqrt2` so that the
    combined input has the same noise level as the inputs. Here :math:`x_1 = x_0 + \sigma n_1`
    and :math:`x_2 = x_0' + \sigma n_2` are noisy versions of a point and of a randomly paired
    other point. (Formula as we read the paper's definition, including its absolute value; the
    authors' notebook also offers pure noise as inputs.)

    It is 1 for a *linear* denoiser but not for an affine one with an offset: for
    :math:`D(x) = W x + c`, :math:`D(\alpha x_1 + \beta x_2) - \alpha D(x_1) - \beta D(x_2) =
    (1 - \alpha - \beta)\,c`. Use :func:`centred_linearity_score` for a score that is 1 for
    every affine denoiser.

    Parameters
    ----------
    denoiser : ``D(x, sigma)``.
    points : (B, *event_shape) clean points, B >= 2.
    sigmas : float or (S,) positive noise levels.
    generator : ``torch.Generator`` for the pairing and the noise.
    alpha, beta : combination weights.
    batch_size : rows per denoiser call.

    Returns
    -------
    :class:`SigmaProfile` of the mean score per sigma.
    """
    return _linearity(denoiser, points, sigmas, generator, alpha, beta, batch_size, centred=False)


def centred_linearity_score(
    denoiser: Callable,
    points,
    sigmas,
    *,
    generator: torch.Generator,
    alpha: float = 1 / math.sqrt(2),
    beta: float = 1 / math.sqrt(2),
    batch_size: int = 4096,
) -> SigmaProfile:
    r"""Linearity score on differences, exactly 1 for every affine denoiser.

    With a third noisy point :math:`x_3` as the origin, compare the response to a combination
    of displacements with the combination of responses:

    .. math:: u = D(x_3 + \alpha(x_1 - x_3) + \beta(x_2 - x_3)) - D(x_3), \qquad
              v = \alpha\,(D(x_1) - D(x_3)) + \beta\,(D(x_2) - D(x_3)),

    .. math:: \mathrm{LS_c}(\sigma) = E\,\langle u, v\rangle / (\|u\|\,\|v\|).

    For :math:`D(x) = W x + c` the offset cancels and :math:`u = v = W(\alpha(x_1 - x_3) +
    \beta(x_2 - x_3))`, so the score is 1 up to rounding whatever ``W``, ``c``, ``alpha``,
    ``beta``. The cosine is signed (no absolute value as in :func:`linearity_score`): a
    response opposite to the linear prediction should score -1, not 1. A pair with ``u`` or
    ``v`` zero scores 0. Arguments and return as :func:`linearity_score`; each sigma costs four
    denoiser evaluations per point.
    """
    return _linearity(denoiser, points, sigmas, generator, alpha, beta, batch_size, centred=True)


# =============================================================================================
# Linear distillation and the hidden Gaussian structure
# =============================================================================================


def linear_distillation(
    denoiser: Callable, points, sigmas, *, generator: torch.Generator, n_noise: int = 1, batch_size: int = 4096
) -> LinearDistillation:
    r"""The best affine approximation of a denoiser at each noise level, by least squares.

    At each :math:`\sigma`, on :math:`M = B \cdot n_{noise}` noisy inputs :math:`x_m = x_0 +
    \sigma n_m`, solve in closed form

    .. math:: (W_\sigma, b_\sigma) = \arg\min_{W, b} \sum_m \|D(x_m, \sigma) - W x_m - b\|^2,

    via the centred normal problem :math:`\tilde X W^T = \tilde Y` (:math:`\tilde X, \tilde Y`
    the centred inputs and outputs, solved by ``torch.linalg.lstsq``; the minimum-norm solution
    when :math:`M \le d`) and :math:`b = \bar y - W \bar x`. This is the minimiser of the linear
    models Li, Dai & Qu (2024) train by gradient descent to match a network ("linear
    distillation"); they find it close to the Gaussian denoiser of the training set (compare
    with :func:`distillation_distance_to_gaussian`). An affine denoiser is recovered exactly
    when the inputs span :math:`R^d` (:math:`M \ge d + 1`).

    Parameters
    ----------
    denoiser : ``D(x, sigma)``.
    points : (B, *event_shape) clean points (training points, to match the paper).
    sigmas : float or (S,) positive noise levels.
    generator : ``torch.Generator`` for the noise.
    n_noise : noisy copies of each point (raise it so that ``B * n_noise > d``).
    batch_size : rows per denoiser call.

    Returns
    -------
    :class:`LinearDistillation` with ``weight`` (S, d, d), ``bias`` (S, d), ``residual`` (S,).
    """
    points = check_data(points, "points")
    sig = _check_sigmas(sigmas)
    gen = _check_generator(generator)
    n_noise = check_int(n_noise, "n_noise", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    S = sig.shape[0]
    base = points.repeat(n_noise, *([1] * (points.ndim - 1)))  # (M, *event)
    x, y = _on_grid(denoiser, base, sig, _noise((S, *base.shape), gen, base), batch_size)  # (S, M, d)
    xm, ym = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    xc, yc = x - xm, y - ym
    driver = "gelsd" if xc.device.type == "cpu" else None
    sol = torch.linalg.lstsq(xc, yc, driver=driver).solution  # (S, d, d) = W^T
    weight = sol.transpose(1, 2)
    bias = ym[:, 0] - torch.einsum("sij,sj->si", weight, xm[:, 0])
    res = ((yc - xc @ sol) ** 2).sum((1, 2))
    tot = (yc**2).sum((1, 2))
    residual = torch.where(tot > 0, res / tot.clamp_min(torch.finfo(_WORK).tiny), torch.zeros_like(res))
    return LinearDistillation(sigmas=sig, weight=weight.cpu(), bias=bias.cpu(), residual=residual.cpu())


def distillation_distance_to_gaussian(distillation: LinearDistillation, gaussian) -> DistillationComparison:
    r"""How far a linear distillation is from the Gaussian denoiser of the training set.

    The Gaussian denoiser :math:`N(\mu, \Sigma)` is affine, :math:`D_G(x) = J_\sigma x + c_\sigma`
    with :math:`J_\sigma = U \mathrm{diag}(l / (l + \sigma^2)) U^T` and
    :math:`c_\sigma = \mu - J_\sigma \mu` (theory (G2)). Per level, with
    :math:`\Delta = W_\sigma - J_\sigma`, :math:`\delta = b_\sigma - c_\sigma`:

    * ``weight``: :math:`\|\Delta\|_F / \|J_\sigma\|_F`;
    * ``offset``: :math:`\|\delta\| / \sqrt{\mathrm{tr}\,\Sigma}` (the data scale: :math:`c_\sigma`
      itself vanishes for centred data);
    * ``output``: the relative MSE of the two affine denoisers under the Gaussian's own noisy
      marginal :math:`x \sim N(\mu, \Sigma + \sigma^2 I)`, in closed form:
      :math:`[\mathrm{tr}(\Delta(\Sigma + \sigma^2 I)\Delta^T) + \|\Delta\mu + \delta\|^2] / \mathrm{tr}\,\Sigma`
      (the ``"data"`` normalisation of :func:`denoiser_distance`).

    Parameters
    ----------
    distillation : output of :func:`linear_distillation`.
    gaussian : a :class:`~gaussdiff.GaussianDenoiser`, or training data ``(N, *event_shape)``
        to fit one with :meth:`GaussianDenoiser.fit`.

    Returns
    -------
    :class:`DistillationComparison`
    """

    if not isinstance(distillation, LinearDistillation):
        raise ValueError(f"distillation: expected a LinearDistillation, got {type(distillation).__name__}")
    if not isinstance(gaussian, GaussianDenoiser):
        if callable(gaussian):  # another denoiser: it has no eigenbasis to compare with
            raise ValueError(
                f"gaussian: expected a GaussianDenoiser or training data (N, *event_shape), got {type(gaussian).__name__}"
            )
        gaussian = GaussianDenoiser.fit(check_data(gaussian, "gaussian"))
    d = distillation.weight.shape[-1]
    if gaussian.dim != d:
        raise ValueError(f"gaussian: has dimension {gaussian.dim} but the distillation has {d}")
    U = gaussian.eigenvectors.to(_WORK).cpu()
    lam = gaussian.eigenvalues.to(_WORK).cpu()
    mu = gaussian.mean.reshape(-1).to(_WORK).cpu()
    cov = (U * lam) @ U.T
    tr = float(lam.sum())
    if tr <= 0:
        raise ValueError("gaussian: has zero covariance, the distances are undefined")
    w_d, o_d, out_d = [], [], []
    eye = torch.eye(d, dtype=_WORK)
    for s, W, b in zip(distillation.sigmas.tolist(), distillation.weight, distillation.bias):
        J = (U * (lam / (lam + s * s))) @ U.T
        c = mu - J @ mu
        delta_w, delta_b = W - J, b - c
        w_d.append(float(delta_w.norm() / J.norm()))
        o_d.append(float(delta_b.norm()) / math.sqrt(tr))
        quad = float(torch.trace(delta_w @ (cov + s * s * eye) @ delta_w.T))
        out_d.append((quad + float(((delta_w @ mu + delta_b) ** 2).sum())) / tr)
    sig = distillation.sigmas
    t = lambda v: torch.tensor(v, dtype=_WORK)  # noqa: E731
    return DistillationComparison(SigmaProfile(sig, t(w_d)), SigmaProfile(sig, t(o_d)), SigmaProfile(sig, t(out_d)))


# =============================================================================================
# Generalization gap
# =============================================================================================


def generalization_gap(
    denoiser: Callable, train, heldout, sigmas, *, generator: torch.Generator, batch_size: int = 4096
) -> GeneralizationGap:
    r"""Denoising error on training points against held-out points, per noise level.

    .. math:: \mathrm{MSE}(\sigma) = \frac1d\,E_{x_0}\,E_n\,\|D(x_0 + \sigma n, \sigma) - x_0\|^2

    (per coordinate), on ``train`` and on ``heldout``; ``gap = heldout - train``. A memorizing
    denoiser (the empirical one) has a large positive gap at small sigma; a generalizing one
    has a gap near 0 at every sigma.

    Parameters
    ----------
    denoiser : ``D(x, sigma)``.
    train, heldout : (N, *event_shape) and (M, *event_shape) clean points.
    sigmas : float or (S,) positive noise levels.
    generator : ``torch.Generator`` for the noise (drawn for ``train`` first, then ``heldout``).
    batch_size : rows per denoiser call.

    Returns
    -------
    :class:`GeneralizationGap` with ``train``, ``heldout`` and ``gap`` profiles.
    """
    train = check_data(train, "train")
    heldout = check_data(heldout, "heldout")
    _same_event(train, heldout, "train", "heldout")
    sig = _check_sigmas(sigmas)
    gen = _check_generator(generator)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    out = []
    for pts in (train, heldout):
        _, y = _on_grid(denoiser, pts, sig, _noise((sig.shape[0], *pts.shape), gen, pts), batch_size)
        x0 = _flat64(pts)[None]
        out.append(SigmaProfile(sig, ((y - x0) ** 2).mean((1, 2)).cpu()))
    return GeneralizationGap(train=out[0], heldout=out[1])
