r"""The papers' quantities, each defined once: memorization, reproducibility, denoiser distances,
linearity, linear distillation, Jacobian spectra and the generalization gap.

Every metric takes torch tensors ``(B, *event_shape)`` (samples, training points, held-out
points) and works in float64 internally. Every *fraction* is returned as a :class:`Fraction`
with a seeded bootstrap standard error and 95 % percentile interval; every quantity measured on
a grid of noise levels is returned as a :class:`SigmaProfile` (one value per sigma and their mean).

Cheap use in a sweep
--------------------
The expensive step of the sample metrics is the scan of the training set. Do it once and derive
everything from it::

    dist, idx = nearest_training(samples, train, k=2)           # one exact scan
    mem = memorization_fraction(samples, train, neighbors=(dist, idx))
    nearest_images = train[idx[:, 0]]                             # for sample grids
    sim, _ = max_similarity(samples, train, similarity="cosine")  # one scan per similarity
    within = bootstrap_fraction(sim >= 0.6)                       # memorized_within
    novel = bootstrap_fraction(sim < 0.6)                         # generalization_score
    row = {**mem.as_dict("memorization"), **within.as_dict("memorized_within")}

The denoiser metrics stack all noise levels of a grid into batched calls of the denoiser
(``batch_size`` rows at a time), so a grid of 10 sigmas costs a handful of calls, not 10 loops.

Randomness is always passed in: a ``torch.Generator`` for the noise of the denoiser metrics and
an integer seed (or ``numpy.random.Generator``) for the bootstrap; no global generator is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ._checks import as_tensor, check_data, check_finite, check_int, check_positive
from .kernels import nearest_neighbors

__all__ = [
    # result types
    "Fraction", "SigmaProfile", "ReproducibilityResult", "LinearDistillation", "DistillationComparison",
    "GeneralizationGap", "OptimumGap",
    # uncertainty
    "bootstrap_fraction",
    # samples vs training set
    "nearest_training", "memorized", "memorization_fraction", "memorized_within", "generalization_score",
    "max_similarity", "reproducibility",
    # similarities
    "Similarity", "CentredCosine", "NormalisedL2", "FeatureCosine", "get_similarity",
    # denoisers
    "denoiser_distance", "optimum_gap", "linearity_score", "centred_linearity_score", "linear_distillation",
    "distillation_distance_to_gaussian", "denoiser_jacobian", "jacobian_spectrum", "effective_rank",
    "effective_dimension", "generalization_gap",
]

_WORK = torch.float64


# =============================================================================================
# Result types
# =============================================================================================

@dataclass(frozen=True)
class Fraction:
    """A fraction with its bootstrap uncertainty.

    Attributes
    ----------
    value : the observed share, ``k / n``.
    se : bootstrap standard error (standard deviation of the bootstrap replicates).
    ci_low, ci_high : 95 % percentile bootstrap interval.
    n : number of indicators the share was computed from.
    """

    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int

    def __float__(self) -> float:
        return float(self.value)

    def as_dict(self, prefix: str) -> dict:
        """Flat columns for a results table: ``prefix``, ``prefix_se``, ``prefix_ci_low``,
        ``prefix_ci_high``, ``prefix_n``."""
        return {prefix: self.value, f"{prefix}_se": self.se, f"{prefix}_ci_low": self.ci_low,
                f"{prefix}_ci_high": self.ci_high, f"{prefix}_n": self.n}


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
class ReproducibilityResult:
    """Output of :func:`reproducibility`.

    Attributes
    ----------
    fraction : share of pairs whose similarity is at least the threshold, with its uncertainty.
    mean_similarity : mean similarity over the pairs.
    similarities : (B,) float64 similarity of each pair.
    """

    fraction: Fraction
    mean_similarity: float
    similarities: torch.Tensor


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
# Validation helpers (private)
# =============================================================================================

def _same_event(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(f"{name_b}: expected event shape {tuple(a.shape[1:])} to match {name_a}, "
                         f"got {tuple(b.shape[1:])}")
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move one of them")


def _flat64(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(_WORK)


def _seed_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator: expected a torch.Generator (randomness is passed in, "
                         f"never drawn from the global generator), got {type(generator).__name__}")
    return generator


def _check_sigmas(sigmas, name: str = "sigmas") -> torch.Tensor:
    """Noise levels: a positive float or a 1-D sequence of positive floats, any order."""
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
    gradients; returns float64 ``(M, d)``."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            sb = sigma[start:start + batch_size].to(dtype=x.dtype, device=x.device)
            y = denoiser(xb, sb)
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(xb.shape):
                raise ValueError(f"denoiser: must return a tensor of the input's shape {tuple(xb.shape)}, "
                                 f"got {getattr(y, 'shape', type(y).__name__)}")
            out.append(_flat64(y))
    return torch.cat(out)


def _on_grid(denoiser, points, sigmas, noise, batch_size):
    """Evaluate ``D`` at ``points + sigma_s * noise[s]`` for every level in one batched pass.

    Returns ``(x, D)``: float64 ``(S, B, d)`` noisy inputs and outputs."""
    S, B = sigmas.shape[0], points.shape[0]
    sig = sigmas.to(dtype=points.dtype, device=points.device)
    x = points[None] + sig.reshape(S, *([1] * points.ndim)) * noise          # (S, B, *event)
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
# Bootstrap
# =============================================================================================

def bootstrap_fraction(indicators, *, n_boot: int = 1000, seed=0) -> Fraction:
    r"""A share of 0/1 indicators with its seeded bootstrap standard error and 95 % interval.

    The nonparametric bootstrap resamples the ``n`` indicators with replacement and recomputes
    the share. The number of ones in such a resample is exactly ``Binomial(n, p_hat)``
    distributed, so the replicates are drawn as ``Binomial(n, p_hat) / n`` directly: the same
    distribution as index resampling, at ``O(n_boot)`` cost instead of ``O(n * n_boot)``.

    ``se`` is the standard deviation of the replicates (close to
    :math:`\sqrt{\hat p(1-\hat p)/n}`); ``ci_low``/``ci_high`` are their 2.5 % and 97.5 %
    quantiles (the percentile interval). A share of exactly 0 or 1 has ``se = 0`` and a
    degenerate interval: report ``n`` beside it.

    Parameters
    ----------
    indicators : (n,) booleans or 0/1 numbers (tensor, array or sequence), n >= 1.
    n_boot : number of bootstrap replicates, >= 2.
    seed : integer seed or ``numpy.random.Generator`` (the global numpy state is never used).

    Returns
    -------
    :class:`Fraction`
    """
    if isinstance(indicators, torch.Tensor):
        arr = indicators.detach().cpu().numpy()
    else:
        arr = np.asarray(indicators)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"indicators: expected a non-empty 1-D array of 0/1 values, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isin(arr, (0, 1))):
            raise ValueError("indicators: values must be booleans or 0/1 (NaN and other values refused)")
    n_boot = check_int(n_boot, "n_boot", minimum=2)
    rng = _seed_rng(seed)
    n = int(arr.size)
    k = int(np.count_nonzero(arr))
    p = k / n
    reps = rng.binomial(n, p, size=n_boot) / n
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return Fraction(value=p, se=float(np.std(reps, ddof=1)), ci_low=float(lo), ci_high=float(hi), n=n)


# =============================================================================================
# Similarities
# =============================================================================================

class Similarity:
    """A similarity between two batches of points, pluggable into the sample metrics.

    Subclasses implement ``embed`` (a per-point representation, computed once per point) and
    ``score`` (row-wise) / ``cross`` (all pairs) on embeddings. ``low``/``high`` bound the
    attainable values; thresholds outside are refused.
    """

    name: str = "similarity"
    low: float = -1.0
    high: float = 1.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def cross(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity of ``a`` and ``b`` (B, *event_shape): ``(B,)`` float64."""
        return self.score(self.embed(a), self.embed(b))

    def check_threshold(self, threshold) -> float:
        if isinstance(threshold, (bool, np.bool_)) or not _is_number(threshold):
            raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
        t = float(threshold)
        if not self.low <= t <= self.high:
            raise ValueError(f"threshold: must lie in [{self.low:.4g}, {self.high:.4g}] for the "
                             f"{self.name} similarity, got {threshold!r}")
        return t


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


class _UnitCosine(Similarity):
    """Cosine of embeddings normalised to unit length (zero rows stay zero: similarity 0)."""

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, x):
        f = self._features(x)
        norm = f.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, f / norm.clamp_min(torch.finfo(_WORK).tiny), torch.zeros_like(f))

    def score(self, ea, eb):
        return (ea * eb).sum(1)

    def cross(self, ea, eb):
        return ea @ eb.T


class CentredCosine(_UnitCosine):
    r"""Cosine similarity of centred vectors:
    :math:`s(a, b) = \langle a - \bar a, b - \bar b\rangle / (\|a - \bar a\|\,\|b - \bar b\|)`,
    where :math:`\bar a` is the mean of *a's own* coordinates (a scalar per vector).

    The cosine similarity of samples is the measure of Kadkhodaie et al. (ICLR 2024,
    "Generalization in diffusion models arises from geometry-adaptive harmonic
    representations"); centring each vector makes it blind to a uniform brightness offset, so
    two images that differ only in their mean level still count as the same. A constant
    vector centres to zero and gets similarity 0 with everything. Range ``[-1, 1]``.
    """

    name = "cosine"

    def _features(self, x):
        f = _flat64(x)
        return f - f.mean(1, keepdim=True)


class FeatureCosine(_UnitCosine):
    r"""Cosine similarity of user features: :math:`s(a, b) = \cos(\phi(a), \phi(b))`.

    ``feature_map`` takes a batch ``(B, *event_shape)`` and returns ``(B, ...)`` features
    (flattened here). This is how a copy-detection descriptor is plugged in: Zhang et al.
    (2023, "The emergence of reproducibility and consistency in diffusion models") compare SSCD
    descriptors (Pizzi et al. 2022) by cosine. Features are not centred. Range ``[-1, 1]``.
    """

    def __init__(self, feature_map: Callable[[torch.Tensor], torch.Tensor], name: str | None = None):
        if not callable(feature_map):
            raise ValueError(f"feature_map: expected a callable, got {type(feature_map).__name__}")
        self.feature_map = feature_map
        self.name = name or getattr(feature_map, "__name__", "feature cosine")

    def _features(self, x):
        with torch.no_grad():
            f = self.feature_map(x)
        if not isinstance(f, torch.Tensor) or f.ndim < 1 or f.shape[0] != x.shape[0]:
            raise ValueError(f"feature_map: must return a tensor with {x.shape[0]} rows, "
                             f"got {getattr(f, 'shape', type(f).__name__)}")
        f = f.reshape(f.shape[0], -1).to(_WORK)
        return check_finite(f, "feature_map output")


class NormalisedL2(Similarity):
    r"""Normalised Euclidean similarity :math:`s(a, b) = 1 - \|a - b\| / \sqrt{\|a\|^2 + \|b\|^2}`.

    The normaliser is the distance two orthogonal vectors of the same norms would have, so the
    scale matches the cosine: ``s = 1`` for identical vectors, ``s ~= 0`` for independent
    zero-mean vectors (``|a - b|^2 ~= |a|^2 + |b|^2``), and for equal norms
    ``s = 1 - sqrt(1 - cos(a, b))``. It is scale-invariant (``s(ca, cb) = s(a, b)``) but, unlike the
    centred cosine, sensitive to a difference in norm. Range ``[1 - sqrt 2, 1]``; two zero vectors
    have similarity 1. Vectors are used as given (centre the data first if its mean is large).
    """

    name = "l2"
    low = 1.0 - math.sqrt(2.0)
    high = 1.0

    def embed(self, x):
        return _flat64(x)

    @staticmethod
    def _sim(d2, n2):
        tiny = torch.finfo(_WORK).tiny
        return torch.where(n2 > 0, 1.0 - torch.sqrt(d2.clamp_min(0.0) / n2.clamp_min(tiny)),
                           torch.ones_like(d2))

    def score(self, ea, eb):
        return self._sim(((ea - eb) ** 2).sum(1), (ea ** 2).sum(1) + (eb ** 2).sum(1))

    def cross(self, ea, eb):
        na, nb = (ea ** 2).sum(1), (eb ** 2).sum(1)
        d2 = na[:, None] + nb[None] - 2.0 * (ea @ eb.T)
        return self._sim(d2, na[:, None] + nb[None])


def get_similarity(similarity) -> Similarity:
    """``"cosine"`` -> :class:`CentredCosine`, ``"l2"`` -> :class:`NormalisedL2`, a
    :class:`Similarity` as is, any other callable -> :class:`FeatureCosine` of that feature map."""
    if isinstance(similarity, Similarity):
        return similarity
    if isinstance(similarity, str):
        table = {"cosine": CentredCosine, "l2": NormalisedL2}
        if similarity not in table:
            raise ValueError(f"similarity: expected one of {sorted(table)}, a Similarity or a feature "
                             f"map callable, got {similarity!r}")
        return table[similarity]()
    if callable(similarity):
        return FeatureCosine(similarity)
    raise ValueError(f"similarity: expected 'cosine', 'l2', a Similarity or a callable, got {similarity!r}")


# =============================================================================================
# Samples against a training set
# =============================================================================================

def nearest_training(samples, train, k: int = 2):
    """Exact ``k`` nearest training points of each sample (Euclidean), streamed over ``train``.

    A thin validating wrapper over :func:`gaussdiff.kernels.nearest_neighbors`.

    Parameters
    ----------
    samples : (B, *event_shape).
    train : (N, *event_shape), N >= k.
    k : number of neighbours.

    Returns
    -------
    dist : (B, k) float64 distances, ascending.
    idx : (B, k) int64 indices into ``train``.
    """
    samples = check_data(samples, "samples")
    train = check_data(train, "train")
    _same_event(samples, train, "samples", "train")
    k = check_int(k, "k", minimum=1)
    if k > train.shape[0]:
        raise ValueError(f"k: must be at most the number of training points ({train.shape[0]}), got {k}")
    return nearest_neighbors(samples, train, k)


def memorized(samples, train, *, ratio: float = 1 / 3, neighbors=None) -> torch.Tensor:
    r"""Which samples copy a training point, by the nearest-neighbour gap ratio: ``(B,)`` bool.

    A sample :math:`x` is memorized when

    .. math:: \|x - \mathrm{nn}_1(x)\| < \text{ratio} \cdot \|x - \mathrm{nn}_2(x)\|,

    with :math:`\mathrm{nn}_1, \mathrm{nn}_2` its nearest and second-nearest training points
    (Euclidean) and ``ratio = 1/3``: the criterion of Yoon et al. (2023), used by Gu et al. (2023,
    "On memorization in diffusion models") and Bonnaire, Urfin, Biroli & Mezard (2025, "Why
    diffusion models don't memorize"). A sample at distance exactly 0 from a training point
    also counts (otherwise a copy of a point that appears twice in ``train`` would not).

    Parameters
    ----------
    samples : (B, *event_shape) generated samples.
    train : (N, *event_shape) training set, N >= 2.
    ratio : the gap ratio, in (0, 1].
    neighbors : optional ``(dist, idx)`` from ``nearest_training(samples, train, k>=2)`` to skip
        the scan (``train`` is then only used for validation).
    """
    r = check_positive(ratio, "ratio")
    if r > 1:
        raise ValueError(f"ratio: must lie in (0, 1], got {ratio!r}")
    samples = check_data(samples, "samples")
    train = check_data(train, "train")
    _same_event(samples, train, "samples", "train")
    if train.shape[0] < 2:
        raise ValueError(f"train: the gap ratio needs at least 2 training points, got {train.shape[0]}")
    if neighbors is None:
        dist, _ = nearest_neighbors(samples, train, 2)
    else:
        dist = torch.as_tensor(neighbors[0])
        if dist.ndim != 2 or dist.shape[0] != samples.shape[0] or dist.shape[1] < 2:
            raise ValueError(f"neighbors: expected distances of shape ({samples.shape[0]}, k >= 2), "
                             f"got {tuple(dist.shape)}")
    d1, d2 = dist[:, 0].to(_WORK), dist[:, 1].to(_WORK)
    return (d1 < r * d2) | (d1 == 0)


def memorization_fraction(samples, train, *, ratio: float = 1 / 3, n_boot: int = 1000, seed=0,
                          neighbors=None) -> Fraction:
    """Share of samples that copy a training point (:func:`memorized`), with its bootstrap
    uncertainty (:func:`bootstrap_fraction` with ``n_boot`` and ``seed``).

    Returns
    -------
    :class:`Fraction`
    """
    return bootstrap_fraction(memorized(samples, train, ratio=ratio, neighbors=neighbors),
                              n_boot=n_boot, seed=seed)


def max_similarity(samples, train, *, similarity="cosine", chunk_size: int = 2048):
    """The most similar training point of each sample, streamed over ``train``.

    Parameters
    ----------
    samples : (B, *event_shape).
    train : (N, *event_shape).
    similarity : ``"cosine"`` (centred), ``"l2"`` (normalised), a :class:`Similarity` or a
        feature-map callable (see :func:`get_similarity`).
    chunk_size : training points per chunk (at most a ``(B, chunk_size)`` block is held).

    Returns
    -------
    values : (B,) float64 highest similarity.
    idx : (B,) int64 index of that training point.
    """
    samples = check_data(samples, "samples")
    train = check_data(train, "train")
    _same_event(samples, train, "samples", "train")
    sim = get_similarity(similarity)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    ea = sim.embed(samples)
    best = torch.full((samples.shape[0],), -math.inf, dtype=_WORK, device=samples.device)
    best_i = torch.zeros(samples.shape[0], dtype=torch.long, device=samples.device)
    for start in range(0, train.shape[0], chunk_size):
        block = sim.cross(ea, sim.embed(train[start:start + chunk_size]))     # (B, c)
        val, pos = block.max(1)
        better = val > best
        best = torch.where(better, val, best)
        best_i = torch.where(better, pos + start, best_i)
    return best, best_i


def memorized_within(samples, train, threshold: float, *, similarity="cosine", n_boot: int = 1000,
                     seed=0) -> Fraction:
    r"""Share of samples within a similarity threshold of some training point:
    :math:`\max_i s(x, x_i) \ge \text{threshold}`.

    The similarity-threshold form of memorization: Somepalli et al. (2023) flag SSCD descriptor
    similarity above 0.5 as replication, Zhang et al. (2023) use 0.6, Kadkhodaie et al. (2024)
    look at the cosine similarity to the nearest training image. In pixel space the threshold
    must be calibrated (e.g. on samples of the empirical and of the Gaussian denoiser).

    Parameters
    ----------
    samples : (B, *event_shape).
    train : (N, *event_shape).
    threshold : in the similarity's range (``[-1, 1]`` for cosines).
    similarity : see :func:`get_similarity`.
    n_boot, seed : see :func:`bootstrap_fraction`.

    Returns
    -------
    :class:`Fraction`
    """
    sim = get_similarity(similarity)
    t = sim.check_threshold(threshold)
    values, _ = max_similarity(samples, train, similarity=sim)
    return bootstrap_fraction(values >= t, n_boot=n_boot, seed=seed)


def generalization_score(samples, train, threshold: float, *, similarity="cosine", n_boot: int = 1000,
                         seed=0) -> Fraction:
    r"""Share of samples *not* within the threshold of any training point:
    :math:`\max_i s(x, x_i) < \text{threshold}`; the complement of :func:`memorized_within`
    (Zhang et al. 2023, "The emergence of reproducibility and consistency in diffusion models",
    use it with SSCD similarity and threshold 0.6). Arguments as :func:`memorized_within`.

    Returns
    -------
    :class:`Fraction`
    """
    sim = get_similarity(similarity)
    t = sim.check_threshold(threshold)
    values, _ = max_similarity(samples, train, similarity=sim)
    return bootstrap_fraction(values < t, n_boot=n_boot, seed=seed)


def reproducibility(samples_a, samples_b, *, similarity="cosine", threshold: float = 0.6,
                    n_boot: int = 1000, seed=0) -> ReproducibilityResult:
    r"""Reproducibility of two samplers run from the same noise: the share of pairs
    :math:`(x^A_j, x^B_j)` (row ``j`` of each, same initial noise) with
    :math:`s(x^A_j, x^B_j) \ge \text{threshold}`.

    Zhang et al. (2023, "The emergence of reproducibility and consistency in diffusion models")
    define this RP score with SSCD descriptor cosine and threshold 0.6 (the default here; plug
    SSCD in as a feature map). Kadkhodaie et al. (ICLR 2024) use the cosine similarity of the
    samples of two networks trained on *disjoint* sets, which rises from ~0 to ~1 as they pass
    from memorization to generalization. With the pixel-space ``"cosine"`` default the 0.6
    threshold is a convention, not a calibrated value: check the similarity histogram.

    Parameters
    ----------
    samples_a, samples_b : (B, *event_shape) paired samples.
    similarity : see :func:`get_similarity`.
    threshold : in the similarity's range.
    n_boot, seed : see :func:`bootstrap_fraction`.

    Returns
    -------
    :class:`ReproducibilityResult`
    """
    a = check_data(samples_a, "samples_a")
    b = check_data(samples_b, "samples_b")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"samples_b: expected shape {tuple(a.shape)} to pair row by row with samples_a, "
                         f"got {tuple(b.shape)}")
    _same_event(a, b, "samples_a", "samples_b")
    sim = get_similarity(similarity)
    t = sim.check_threshold(threshold)
    s = sim(a, b)
    frac = bootstrap_fraction(s >= t, n_boot=n_boot, seed=seed)
    return ReproducibilityResult(fraction=frac, mean_similarity=float(s.mean()), similarities=s)


# =============================================================================================
# Denoisers compared on a sigma grid
# =============================================================================================

def denoiser_distance(d1: Callable, d2: Callable, points, sigmas, *, generator: torch.Generator,
                      normalize: str = "data", batch_size: int = 4096) -> SigmaProfile:
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
            raise ValueError("points: all points are equal, their variance cannot normalise the distance "
                             "(use normalize='reference' or 'none')")
    noise = _noise((sig.shape[0], *points.shape), gen, points)
    _, y1 = _on_grid(d1, points, sig, noise, batch_size)
    _, y2 = _on_grid(d2, points, sig, noise, batch_size)
    mse = ((y1 - y2) ** 2).sum(-1).mean(-1)                                   # (S,)
    if normalize == "data":
        vals = mse / z
    elif normalize == "reference":
        ref = (y2 ** 2).sum(-1).mean(-1)
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


def optimum_gap(denoiser: Callable, train, *, generator: torch.Generator, n_draws: int = 4096,
                p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float | None = None,
                batch_size: int = 4096) -> OptimumGap:
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
    from .denoisers import GaussianDenoiser
    from .empirical import EmpiricalDenoiser

    train = check_data(train, "train", min_rows=2)
    gen = _check_generator(generator)
    n_draws = check_int(n_draws, "n_draws", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_positive(p_std, "p_std")
    if not math.isfinite(p_mean):
        raise ValueError(f"p_mean: must be finite, got {p_mean!r}")
    sd = float(train.to(_WORK).std()) if sigma_data is None else check_positive(sigma_data, "sigma_data")
    if not sd > 0:
        raise ValueError("train: all its entries are equal, so sigma_data (its standard deviation) is 0; "
                         "pass sigma_data")
    idx = torch.randint(train.shape[0], (n_draws,), generator=gen, device=gen.device).cpu()
    sigma = torch.exp(p_mean + p_std * torch.randn(n_draws, generator=gen, dtype=_WORK, device=gen.device)).cpu()
    noise = _noise((n_draws, *train.shape[1:]), gen, train).cpu()
    x0 = train.cpu()[idx]
    x = x0 + sigma.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1))) * noise
    lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
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
    return OptimumGap(float(l_net.mean()), float(l_opt.mean()), float(l_gau.mean()), float(diff.mean()),
                      float(diff.std() / math.sqrt(n_draws)), n_draws)


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


def linearity_score(denoiser: Callable, points, sigmas, *, generator: torch.Generator,
                    alpha: float = 1 / math.sqrt(2), beta: float = 1 / math.sqrt(2),
                    batch_size: int = 4096) -> SigmaProfile:
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


def centred_linearity_score(denoiser: Callable, points, sigmas, *, generator: torch.Generator,
                            alpha: float = 1 / math.sqrt(2), beta: float = 1 / math.sqrt(2),
                            batch_size: int = 4096) -> SigmaProfile:
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

def linear_distillation(denoiser: Callable, points, sigmas, *, generator: torch.Generator,
                        n_noise: int = 1, batch_size: int = 4096) -> LinearDistillation:
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
    base = points.repeat(n_noise, *([1] * (points.ndim - 1)))                 # (M, *event)
    x, y = _on_grid(denoiser, base, sig, _noise((S, *base.shape), gen, base), batch_size)  # (S, M, d)
    xm, ym = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    xc, yc = x - xm, y - ym
    driver = "gelsd" if xc.device.type == "cpu" else None
    sol = torch.linalg.lstsq(xc, yc, driver=driver).solution                   # (S, d, d) = W^T
    weight = sol.transpose(1, 2)
    bias = ym[:, 0] - torch.einsum("sij,sj->si", weight, xm[:, 0])
    res = ((yc - xc @ sol) ** 2).sum((1, 2))
    tot = (yc ** 2).sum((1, 2))
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
    from .denoisers import GaussianDenoiser

    if not isinstance(distillation, LinearDistillation):
        raise ValueError(f"distillation: expected a LinearDistillation, got {type(distillation).__name__}")
    if not isinstance(gaussian, GaussianDenoiser):
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
    return DistillationComparison(SigmaProfile(sig, t(w_d)), SigmaProfile(sig, t(o_d)),
                                  SigmaProfile(sig, t(out_d)))


# =============================================================================================
# Jacobians
# =============================================================================================

def denoiser_jacobian(denoiser: Callable, x: torch.Tensor, sigma, *, max_elements: int = 2 ** 22) -> torch.Tensor:
    r"""Jacobians :math:`J_b = \partial D(x_b, \sigma) / \partial x_b` of any differentiable
    denoiser (network or closed form), by reverse-mode autograd: ``(B, d, d)`` in ``x``'s dtype.

    The denoiser acts on each row independently, so one backward pass through a batch that
    holds ``c`` copies of ``x`` gives ``c`` rows of every Jacobian at once (copy ``j`` carries the
    gradient of output coordinate ``j``). Copies are taken ``c`` at a time so that at most
    ``max_elements`` input entries are in flight. Networks must be in eval mode (no batch
    statistics), or the rows would not be independent.

    Parameters
    ----------
    denoiser : ``D(x, sigma)``.
    x : (B, *event_shape) query points.
    sigma : float or (B,) tensor.
    max_elements : memory bound, in input entries per pass.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    x = check_data(x, "x")
    if not x.is_floating_point():  # pragma: no cover - check_data already promotes
        raise ValueError("x: expected a floating dtype")
    B = x.shape[0]
    d = math.prod(x.shape[1:])
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        if sigma.shape != (B,):
            raise ValueError(f"sigma: expected a float or a ({B},) tensor, got shape {tuple(sigma.shape)}")
        check_finite(sigma, "sigma")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma: must be > 0")
    else:
        check_positive(float(sigma), "sigma")
    max_elements = check_int(max_elements, "max_elements", minimum=1)
    c = max(1, min(d, max_elements // max(1, B * d)))
    J = torch.empty(B, d, d, dtype=x.dtype, device=x.device)
    xf = x.detach().reshape(B, d)
    for j0 in range(0, d, c):
        cj = min(c, d - j0)
        xin = xf[None].expand(cj, B, d).reshape(cj * B, *x.shape[1:]).clone().requires_grad_(True)
        s_in = sigma.repeat(cj) if isinstance(sigma, torch.Tensor) and sigma.ndim > 0 else sigma
        with torch.enable_grad():
            y = denoiser(xin, s_in).reshape(cj, B, d)
            rows = torch.arange(cj, device=x.device)
            picked = y[rows, :, j0 + rows]                     # (cj, B): output coord j0+k of copy k
            (grad,) = torch.autograd.grad(picked.sum(), xin)
        J[:, j0:j0 + cj, :] = grad.reshape(cj, B, d).transpose(0, 1)
    return J


def jacobian_spectrum(denoiser: Callable, x: torch.Tensor, sigma, *, return_jacobian: bool = False,
                      max_elements: int = 2 ** 22):
    r"""Singular values of the denoiser's Jacobian at each query, descending: ``(B, d)``.

    For an exact (MMSE) denoiser the Jacobian is the posterior covariance over
    :math:`\sigma^2`, symmetric positive semi-definite, so these are its eigenvalues; for the
    Gaussian denoiser they are the shrinkage factors :math:`l_k / (l_k + \sigma^2)` (G2).
    Kadkhodaie et al. (2024) read the adaptive bases of networks off these spectra.

    Parameters
    ----------
    denoiser, x, sigma, max_elements : as :func:`denoiser_jacobian`.
    return_jacobian : also return the ``(B, d, d)`` Jacobians.

    Returns
    -------
    (B, d) float64 singular values (and the Jacobians when asked).
    """
    J = denoiser_jacobian(denoiser, x, sigma, max_elements=max_elements)
    sv = torch.linalg.svdvals(J.to(_WORK))
    return (sv, J) if return_jacobian else sv


def effective_rank(singular_values, energy: float = 0.99) -> torch.Tensor:
    r"""Number of leading singular values that hold a share ``energy`` of the squared sum:

    .. math:: r = \min\{k : \textstyle\sum_{i \le k} s_i^2 \ge \text{energy} \cdot \sum_i s_i^2\}

    (``s`` sorted descending here; the "99 % criterion" for ``energy = 0.99``). All-zero
    spectra have rank 0.

    Parameters
    ----------
    singular_values : (..., d) non-negative values.
    energy : in (0, 1].

    Returns
    -------
    (...) int64 tensor.
    """
    e = check_positive(energy, "energy")
    if e > 1:
        raise ValueError(f"energy: must lie in (0, 1], got {energy!r}")
    s = check_finite(as_tensor(singular_values, "singular_values", dtype=_WORK), "singular_values")
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(f"singular_values: expected shape (..., d) with d >= 1, got {tuple(s.shape)}")
    if bool((s < 0).any()):
        raise ValueError("singular_values: must be non-negative")
    p = torch.sort(s, dim=-1, descending=True).values ** 2
    cum = torch.cumsum(p, -1)
    total = cum[..., -1:]
    # Tolerance: a share exactly at the boundary should not fail by one rounding error.
    reached = cum >= (e * total) * (1 - 1e-12)
    rank = torch.where(total[..., 0] > 0, (~reached).sum(-1) + 1, torch.zeros_like(total[..., 0]))
    return rank.to(torch.int64)


def effective_dimension(denoiser: Callable, x: torch.Tensor, sigma, *, max_elements: int = 2 ** 22) -> torch.Tensor:
    r"""Trace of the denoiser's Jacobian at each query, :math:`\mathrm{tr}\,\partial D/\partial x`:
    ``(B,)`` float64.

    For an exact denoiser this is :math:`\mathrm{tr}\,\mathrm{Cov}[x_0 \mid x] / \sigma^2`, and for
    the Gaussian denoiser :math:`\sum_k l_k / (l_k + \sigma^2)`
    (:meth:`GaussianDenoiser.effective_dim`), the number of directions the denoiser keeps.
    Arguments as :func:`denoiser_jacobian`.
    """
    J = denoiser_jacobian(denoiser, x, sigma, max_elements=max_elements)
    return torch.diagonal(J, dim1=1, dim2=2).sum(-1).to(_WORK)


# =============================================================================================
# Generalization gap
# =============================================================================================

def generalization_gap(denoiser: Callable, train, heldout, sigmas, *, generator: torch.Generator,
                       batch_size: int = 4096) -> GeneralizationGap:
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
