"""Metrics of samples: does a sample copy a training point, do two samplers agree.

Here live the similarities (:class:`Similarity` and its kinds, :func:`get_similarity`), the
bootstrap of a share (:class:`Fraction`, :func:`bootstrap_fraction`) and every metric that
compares generated samples with the training set or with each other: nearest neighbours and the
gap-ratio memorization (:func:`nearest_training`, :func:`memorized`,
:func:`memorization_fraction`), the similarity-threshold shares (:func:`max_similarity`,
:func:`memorized_within`, :func:`generalization_score`) and :func:`reproducibility`. Metrics of
denoisers are in :mod:`gaussdiff.metrics.denoisers`; both are re-exported by
:mod:`gaussdiff.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .._checks import check_data, check_finite, check_int, check_positive
from ..kernels import nearest_neighbors
from ._common import _WORK, _flat64, _is_number, _same_event

__all__ = [
    "Fraction",
    "ReproducibilityResult",
    "bootstrap_fraction",
    "nearest_training",
    "memorized",
    "memorization_fraction",
    "memorized_within",
    "generalization_score",
    "max_similarity",
    "reproducibility",
    "Similarity",
    "CentredCosine",
    "NormalisedL2",
    "FeatureCosine",
    "get_similarity",
]


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
        return {
            prefix: self.value,
            f"{prefix}_se": self.se,
            f"{prefix}_ci_low": self.ci_low,
            f"{prefix}_ci_high": self.ci_high,
            f"{prefix}_n": self.n,
        }


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


def _seed_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        ok = not isinstance(seed, (bool, np.bool_, str)) and int(seed) == seed and seed >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"seed: expected a non-negative integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


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
        for name, t in (("a", a), ("b", b)):
            if not isinstance(t, torch.Tensor) or t.ndim < 1:
                raise ValueError(
                    f"{name}: expected a (B, *event_shape) tensor, got {getattr(t, 'shape', type(t).__name__)}"
                )
        if a.shape != b.shape:
            raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
        return self.score(self.embed(a), self.embed(b))

    def check_threshold(self, threshold) -> float:
        if isinstance(threshold, (bool, np.bool_)) or not _is_number(threshold):
            raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
        t = float(threshold)
        if not self.low <= t <= self.high:
            raise ValueError(
                f"threshold: must lie in [{self.low:.4g}, {self.high:.4g}] for the "
                f"{self.name} similarity, got {threshold!r}"
            )
        return t


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
            raise ValueError(
                f"feature_map: must return a tensor with {x.shape[0]} rows, got {getattr(f, 'shape', type(f).__name__)}"
            )
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
        return torch.where(n2 > 0, 1.0 - torch.sqrt(d2.clamp_min(0.0) / n2.clamp_min(tiny)), torch.ones_like(d2))

    def score(self, ea, eb):
        return self._sim(((ea - eb) ** 2).sum(1), (ea**2).sum(1) + (eb**2).sum(1))

    def cross(self, ea, eb):
        na, nb = (ea**2).sum(1), (eb**2).sum(1)
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
            raise ValueError(
                f"similarity: expected one of {sorted(table)}, a Similarity or a feature "
                f"map callable, got {similarity!r}"
            )
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
            raise ValueError(
                f"neighbors: expected distances of shape ({samples.shape[0]}, k >= 2), got {tuple(dist.shape)}"
            )
    d1, d2 = dist[:, 0].to(_WORK), dist[:, 1].to(_WORK)
    return (d1 < r * d2) | (d1 == 0)


def memorization_fraction(
    samples, train, *, ratio: float = 1 / 3, n_boot: int = 1000, seed=0, neighbors=None
) -> Fraction:
    """Share of samples that copy a training point (:func:`memorized`), with its bootstrap
    uncertainty (:func:`bootstrap_fraction` with ``n_boot`` and ``seed``).

    Returns
    -------
    :class:`Fraction`
    """
    return bootstrap_fraction(memorized(samples, train, ratio=ratio, neighbors=neighbors), n_boot=n_boot, seed=seed)


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
        block = sim.cross(ea, sim.embed(train[start : start + chunk_size]))  # (B, c)
        val, pos = block.max(1)
        better = val > best
        best = torch.where(better, val, best)
        best_i = torch.where(better, pos + start, best_i)
    return best, best_i


def _within(samples, train, threshold, similarity) -> torch.Tensor:
    """``(B,)`` bool: is each sample's highest similarity to ``train`` at least ``threshold``.

    The one scan behind :func:`memorized_within` (which counts these) and
    :func:`generalization_score` (which counts the others). ``max_similarity`` never returns NaN,
    so ``~within`` is exactly ``max_i s(x, x_i) < threshold``."""
    sim = get_similarity(similarity)
    t = sim.check_threshold(threshold)
    values, _ = max_similarity(samples, train, similarity=sim)
    return values >= t


def memorized_within(samples, train, threshold: float, *, similarity="cosine", n_boot: int = 1000, seed=0) -> Fraction:
    r"""Share of samples within a similarity threshold of some training point:
    :math:`\max_i s(x, x_i) \ge \text{threshold}`.

    The similarity-threshold form of memorization: Somepalli et al. (2023) flag SSCD descriptor
    similarity above 0.5 as replication, Zhang et al. (2023) use 0.6, Kadkhodaie et al. (2024)
    look at the cosine similarity to the nearest training image. In pixel space the threshold
    must be calibrated (e.g. on samples of the empirical and of the Gaussian denoiser).
    :func:`generalization_score` is its complement, counted on the same scan.

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
    return bootstrap_fraction(_within(samples, train, threshold, similarity), n_boot=n_boot, seed=seed)


def generalization_score(
    samples, train, threshold: float, *, similarity="cosine", n_boot: int = 1000, seed=0
) -> Fraction:
    r"""Share of samples *not* within the threshold of any training point:
    :math:`\max_i s(x, x_i) < \text{threshold}` (Zhang et al. 2023, "The emergence of
    reproducibility and consistency in diffusion models", use it with SSCD similarity and
    threshold 0.6). Arguments as :func:`memorized_within`.

    The complement of :func:`memorized_within`: both count the same indicators from one private
    scan, this one their negation, so the values are ``(n - k) / n`` and ``k / n`` (sum 1, same
    ``n``). Each bootstrap is drawn for its own share with the given ``seed``, so ``se`` and the
    interval agree with the complement's only up to bootstrap noise.

    Returns
    -------
    :class:`Fraction`
    """
    return bootstrap_fraction(~_within(samples, train, threshold, similarity), n_boot=n_boot, seed=seed)


def reproducibility(
    samples_a, samples_b, *, similarity="cosine", threshold: float = 0.6, n_boot: int = 1000, seed=0
) -> ReproducibilityResult:
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
        raise ValueError(
            f"samples_b: expected shape {tuple(a.shape)} to pair row by row with samples_a, got {tuple(b.shape)}"
        )
    _same_event(a, b, "samples_a", "samples_b")
    sim = get_similarity(similarity)
    t = sim.check_threshold(threshold)
    s = sim(a, b)
    frac = bootstrap_fraction(s >= t, n_boot=n_boot, seed=seed)
    return ReproducibilityResult(fraction=frac, mean_similarity=float(s.mean()), similarities=s)


# =============================================================================================
