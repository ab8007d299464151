r"""How closely one image model predicts another: the three agreement measures of the locality
papers, defined once, per image, per noise level and on final samples.

Every measure compares a ``prediction`` (e.g. a closed-form denoiser's output, or its sample)
with a ``target`` (e.g. the trained network's output, or its sample from the same noise), image
by image: each image ``(C, H, W)`` is flattened to ``D = C H W`` entries and compared with its
partner only. With :math:`p, t \in \mathbb{R}^D` one pair, :math:`\bar t` the mean of the ``D``
entries of ``t`` (one number per image: channels and pixels together),

==========================================  ===================================================================  ===========================
measure                                     per image                                                            what the papers report
==========================================  ===================================================================  ===========================
:func:`coefficient_of_determination`        :math:`R^2 = 1 - \|p - t\|^2 / \|t - \bar t\|^2`                      (textbook; not in either)
:func:`pearson_correlation`                 :math:`r = \langle p - \bar p, t - \bar t\rangle / (\|p - \bar p\|\,\|t - \bar t\|)`   median over images (K&G)
:func:`variance_normalised_r2`              :math:`1 - \|p - t\|^2 / (D\, s_t^2)`, :math:`s_t^2 = \|t - \bar t\|^2/(D-1)`  mean over images (L et al.)
==========================================  ===================================================================  ===========================

Sources (read for the definitions, written anew here):

* **Kamb & Ganguli** (ICML 2025), ``henhen724/convolutional_diffusion``
  ``scripts/eval_script.py`` (commit 3e089e2), lines 56-74: each sample and its ELS prediction
  are centred by their own mean over all entries and divided by their norm; the "r²" is the dot
  product of the two, i.e. the Pearson correlation ``r`` of one image pair, **not squared**
  (the axes of their figure say :math:`r^2`); they print :func:`numpy.median` over the samples,
  the "median r²" of the paper. (Their patch-size calibration, ``scripts/scales_calibration.py``,
  uses the *uncentred* cosine of the scores instead; :func:`cosine_similarity` is that one.)
* **Lukoianov et al.** (NeurIPS 2025), ``ottogin/locality-in-diffusion-models``,
  ``src/local_diffusion/metrics.py`` ``calculate_r2_score`` (lines 5-30; the file is not in the
  stored copy of that repository, read in its verbatim copies ``saramilovanova/deep-learning-project``
  commit 38054e1 and ``delvTom/imple_Artem``): per image
  ``1 - sum((x - y)^2) / (var(y) * D)`` with ``torch.var`` (the *unbiased* variance, ``D - 1``
  in its denominator), then the **mean** over images. ``generate.py`` (``evaluate_comparison``)
  calls it as ``calculate_r2_score(analytic_x0, unet_x0)``: the normalising ``y`` is the
  network's image (their docstring calls ``y`` the "predicted images", hence "normalised by the
  prediction's variance"). Call :func:`variance_normalised_r2` ``(closed_form, network)`` for
  their number. Their code replaces a zero variance by 1; here a constant image is refused.

Relations (checked by the tests): :func:`variance_normalised_r2` is
:math:`1 - \tfrac{D-1}{D}(1 - R^2)`, so it lies between :math:`R^2` and 1, above :math:`R^2` by
:math:`(1 - R^2)/D`; :math:`R^2 \le r^2` for every prediction, with equality for the
least-squares affine fit :math:`a + b p` of ``t`` (the fit maximises :math:`R^2` over affine maps
of ``p``, and ``p`` itself is one of them); ``r`` is symmetric and invariant under
:math:`p \to a + b p`, :math:`t \to a' + b' t` (``b, b' > 0``), while :math:`R^2` is not invariant
under a rescaling of ``p`` alone (a prediction of the right pattern at the wrong contrast scores
a high ``r`` and a low :math:`R^2`).

All computations are in float64; the per-image values keep the batch order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_finite, check_int
from ._common import _WORK, _flat64
from .denoisers import SigmaProfile, _check_generator, _check_sigmas, _noise, _on_grid

__all__ = [
    "Agreement",
    "AgreementProfile",
    "AGREEMENT_MEASURES",
    "coefficient_of_determination",
    "pearson_correlation",
    "variance_normalised_r2",
    "cosine_similarity",
    "agreement_measures",
    "agreement_profile",
]


# =============================================================================================
# Result types
# =============================================================================================


@dataclass(frozen=True)
class Agreement:
    """One agreement measure over a batch of image pairs.

    Attributes
    ----------
    measure : the measure's name (a key of :data:`AGREEMENT_MEASURES`).
    values : (B,) float64 value of each image pair, in batch order.
    """

    measure: str
    values: torch.Tensor

    @property
    def mean(self) -> float:
        """Mean over images (Lukoianov et al.'s summary)."""
        return float(self.values.mean())

    @property
    def median(self) -> float:
        """Median over images, the midpoint of the two middle values for an even count, as
        :func:`numpy.median` (Kamb & Ganguli's summary)."""
        return float(torch.quantile(self.values, 0.5))


@dataclass(frozen=True)
class AgreementProfile:
    """Agreement measures at each noise level of a grid (:func:`agreement_profile`).

    Attributes
    ----------
    sigmas : (S,) float64 noise levels, in the order given.
    values : ``{measure: (S, B) float64}`` per-image values at each level.
    """

    sigmas: torch.Tensor
    values: dict

    def at(self, index: int, measure: str) -> Agreement:
        """The :class:`Agreement` of ``measure`` at ``sigmas[index]``."""
        return Agreement(measure, self._get(measure)[index])

    def profile(self, measure: str, summary: str = "median") -> SigmaProfile:
        """``summary`` (``"median"`` or ``"mean"`` over images) of ``measure`` at every level."""
        vals = self._get(measure)
        if summary == "median":
            out = torch.quantile(vals, 0.5, dim=1)
        elif summary == "mean":
            out = vals.mean(1)
        else:
            raise ValueError(f"summary: expected 'median' or 'mean', got {summary!r}")
        return SigmaProfile(self.sigmas, out)

    def _get(self, measure: str) -> torch.Tensor:
        if measure not in self.values:
            raise ValueError(f"measure: expected one of {tuple(self.values)}, got {measure!r}")
        return self.values[measure]


# =============================================================================================
# Input checks
# =============================================================================================


def _pair(prediction, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches as float64 ``(B, D)``, after checking type, shape, device and finiteness."""
    for t, name in ((prediction, "prediction"), (target, "target")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name}: expected real values, got {t.dtype}")
        if t.ndim < 2 or t.shape[0] == 0 or t[0].numel() < 2:
            raise ValueError(
                f"{name}: expected a batch (B, *image_shape) of B >= 1 images with at least 2 "
                f"entries each, got shape {tuple(t.shape)}"
            )
    if tuple(prediction.shape) != tuple(target.shape):
        raise ValueError(
            f"target: expected the shape of prediction {tuple(prediction.shape)}, got {tuple(target.shape)}"
        )
    if prediction.device != target.device:
        raise ValueError(f"prediction is on {prediction.device} but target is on {target.device}; move one of them")
    check_finite(prediction, "prediction")
    check_finite(target, "target")
    return _flat64(prediction), _flat64(target)


def _centred_norm2(x: torch.Tensor, name: str, why: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x - mean per row, ||x - mean||^2 per row)``; a constant row is refused, naming it."""
    c = x - x.mean(1, keepdim=True)
    ss = (c * c).sum(1)
    bad = ss <= 0
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name}: image {i} is constant (zero variance), so {why} is undefined")
    return c, ss


# =============================================================================================
# The measures
# =============================================================================================


def coefficient_of_determination(prediction: torch.Tensor, target: torch.Tensor) -> Agreement:
    r"""The coefficient of determination of each image pair:
    :math:`R^2 = 1 - \sum_j (p_j - t_j)^2 / \sum_j (t_j - \bar t)^2`.

    ``SS_tot`` is taken about the *target* image's own mean :math:`\bar t` (over its ``D``
    entries). 1 for a perfect prediction, 0 for the constant :math:`\bar t`, negative for a
    prediction worse than that; not symmetric, not scale-invariant.

    Parameters
    ----------
    prediction, target : (B, *image_shape) real tensors of one shape, finite; no target image
        may be constant.

    Returns
    -------
    :class:`Agreement` with ``values`` (B,) and ``.mean`` / ``.median`` over images.
    """
    p, t = _pair(prediction, target)
    _, ss_tot = _centred_norm2(t, "target", "R^2 (SS_tot = 0)")
    ss_res = ((p - t) ** 2).sum(1)
    return Agreement("coefficient_of_determination", 1.0 - ss_res / ss_tot)


def pearson_correlation(prediction: torch.Tensor, target: torch.Tensor) -> Agreement:
    r"""Pearson correlation of each image pair, each image centred by its own mean:
    :math:`r = \langle p - \bar p, t - \bar t \rangle / (\|p - \bar p\| \|t - \bar t\|)`.

    What Kamb & Ganguli label "r²" (not squared; they report the median over images, ``.median``).
    Symmetric, in [-1, 1], invariant under positive affine maps of either image.

    Parameters
    ----------
    prediction, target : (B, *image_shape) real tensors of one shape, finite; no image of
        either may be constant.

    Returns
    -------
    :class:`Agreement` with ``values`` (B,) and ``.mean`` / ``.median`` over images.
    """
    p, t = _pair(prediction, target)
    pc, ssp = _centred_norm2(p, "prediction", "the correlation")
    tc, sst = _centred_norm2(t, "target", "the correlation")
    r = (pc * tc).sum(1) / torch.sqrt(ssp * sst)
    return Agreement("pearson_correlation", r.clamp(-1.0, 1.0))  # clamp: rounding only


def variance_normalised_r2(prediction: torch.Tensor, target: torch.Tensor) -> Agreement:
    r"""Lukoianov et al.'s "r2" of each image pair: :math:`1 - \|p - t\|^2 / (D\, s_t^2)` with
    :math:`s_t^2 = \|t - \bar t\|^2 / (D - 1)` the unbiased variance of the target image's
    ``D`` entries. Equals :math:`1 - \tfrac{D-1}{D}(1 - R^2)`.

    Their ``calculate_r2_score(x, y)`` normalises by ``y``'s variance and is called with
    ``y`` the network's image: pass the closed form as ``prediction`` and the network as
    ``target`` to get their number (they report ``.mean``).

    Parameters
    ----------
    prediction, target : (B, *image_shape) real tensors of one shape, finite; no target image
        may be constant (their code silently divides by 1 there).

    Returns
    -------
    :class:`Agreement` with ``values`` (B,) and ``.mean`` / ``.median`` over images.
    """
    p, t = _pair(prediction, target)
    _, ss_tot = _centred_norm2(t, "target", "its variance-normalised r2")
    D = t.shape[1]
    var = ss_tot / (D - 1)
    return Agreement("variance_normalised_r2", 1.0 - ((p - t) ** 2).sum(1) / (var * D))


def cosine_similarity(prediction: torch.Tensor, target: torch.Tensor) -> Agreement:
    r"""Uncentred cosine of each image pair, :math:`\langle p, t\rangle / (\|p\| \|t\|)`: what
    Kamb & Ganguli's patch-size calibration maximises (on scores,
    ``scripts/scales_calibration.py``, ``eval_mode='cos'``). Depends on the origin, unlike
    :func:`pearson_correlation`. No image of either may be all zeros."""
    p, t = _pair(prediction, target)
    for x, name in ((p, "prediction"), (t, "target")):
        bad = (x * x).sum(1) <= 0
        if bool(bad.any()):
            raise ValueError(f"{name}: image {int(torch.nonzero(bad)[0, 0])} is zero, its cosine is undefined")
    c = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1))
    return Agreement("cosine_similarity", c.clamp(-1.0, 1.0))


AGREEMENT_MEASURES: dict[str, Callable[[torch.Tensor, torch.Tensor], Agreement]] = {
    "coefficient_of_determination": coefficient_of_determination,
    "pearson_correlation": pearson_correlation,
    "variance_normalised_r2": variance_normalised_r2,
    "cosine_similarity": cosine_similarity,
}
_DEFAULT = ("coefficient_of_determination", "pearson_correlation", "variance_normalised_r2")


def _check_measures(measures) -> tuple[str, ...]:
    if isinstance(measures, str):
        measures = (measures,)
    measures = tuple(measures)
    if not measures:
        raise ValueError("measures: expected at least one measure name")
    for m in measures:
        if m not in AGREEMENT_MEASURES:
            raise ValueError(f"measures: expected names from {tuple(AGREEMENT_MEASURES)}, got {m!r}")
    return measures


def agreement_measures(prediction: torch.Tensor, target: torch.Tensor, *, measures=_DEFAULT) -> dict:
    """Several measures of the same image pairs, e.g. final samples of two models from the same
    noise: ``{name: Agreement}`` (default: R², Pearson, variance-normalised r2)."""
    return {m: AGREEMENT_MEASURES[m](prediction, target) for m in _check_measures(measures)}


# =============================================================================================
# Per noise level: two denoisers on the same noisy inputs
# =============================================================================================


def agreement_profile(
    model: Callable,
    reference: Callable,
    x0,
    sigmas,
    *,
    generator: torch.Generator,
    measures=_DEFAULT,
    batch_size: int = 4096,
) -> AgreementProfile:
    r"""The agreement of two denoisers at each noise level, on the *same* noisy inputs.

    At each :math:`\sigma_s`, :math:`x = x_0 + \sigma_s n_s` with :math:`n_s \sim N(0, I)` drawn
    from ``generator`` (one draw per level, shared by both denoisers); the measures compare
    ``model(x, sigma)`` (the prediction, e.g. a closed form) with ``reference(x, sigma)`` (the
    target, e.g. the trained network), image by image.

    Parameters
    ----------
    model, reference : denoisers ``D(x, sigma)`` (sigma a ``(B,)`` tensor).
    x0 : (B, *image_shape) clean points (held-out images), in the dtype/device both accept.
    sigmas : float or (S,) positive noise levels.
    generator : ``torch.Generator`` for the noise (on the device of the noise to draw).
    measures : names from :data:`AGREEMENT_MEASURES` (default: R², Pearson, variance-normalised r2).
    batch_size : rows per denoiser call (all levels are stacked into one batch).

    Returns
    -------
    :class:`AgreementProfile`: ``values[measure]`` (S, B); ``.profile(measure, "median")`` a
    :class:`~gaussdiff.metrics.SigmaProfile`.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise ValueError(f"x0: expected a floating torch.Tensor, got {getattr(x0, 'dtype', type(x0).__name__)}")
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0: expected a batch (B, *image_shape), got shape {tuple(x0.shape)}")
    check_finite(x0, "x0")
    sig = _check_sigmas(sigmas)
    gen = _check_generator(generator)
    batch_size = check_int(batch_size, "batch_size")
    names = _check_measures(measures)
    noise = _noise((sig.shape[0], *x0.shape), gen, x0)
    _, y_model = _on_grid(model, x0, sig, noise, batch_size)  # float64 (S, B, D)
    _, y_ref = _on_grid(reference, x0, sig, noise, batch_size)
    values = {m: torch.empty(sig.shape[0], x0.shape[0], dtype=_WORK) for m in names}
    for s in range(sig.shape[0]):
        for m in names:
            try:
                values[m][s] = AGREEMENT_MEASURES[m](y_model[s], y_ref[s]).values.cpu()
            except ValueError as exc:
                who = str(exc).replace("prediction:", "model:", 1).replace("target:", "reference:", 1)
                raise ValueError(f"{who} (output at sigma = {float(sig[s]):.4g})") from None
    return AgreementProfile(sig, values)
