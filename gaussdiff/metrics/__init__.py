r"""The papers' quantities, each defined once: memorization, reproducibility, denoiser distances,
linearity, linear distillation, Jacobian spectra and the generalization gap.

Four modules, re-exported here by name (``gd.memorized`` is ``gaussdiff.metrics.memorized``):

* :mod:`gaussdiff.metrics.samples`: metrics of *samples* against the training set or each other
  (memorization, similarities, reproducibility) and the bootstrap of a share;
* :mod:`gaussdiff.metrics.denoisers`: metrics of *denoisers* on a noise grid (distances,
  linearity, linear distillation, the optimum and generalization gaps);
* :mod:`gaussdiff.metrics.jacobians`: Jacobian spectra of denoisers at query points;
* :mod:`gaussdiff.metrics.agreement`: how closely one image (or denoiser output) predicts
  another — R², Pearson correlation, the variance-normalised R² — per image, per sigma and on
  samples from the same noise (comparing a network with the local closed forms).

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

from .samples import (
    Fraction,
    ReproducibilityResult,
    bootstrap_fraction,
    nearest_training,
    memorized,
    memorization_fraction,
    memorized_within,
    generalization_score,
    max_similarity,
    reproducibility,
    Similarity,
    CentredCosine,
    NormalisedL2,
    FeatureCosine,
    get_similarity,
)
from .denoisers import (
    SigmaProfile,
    LinearDistillation,
    DistillationComparison,
    GeneralizationGap,
    OptimumGap,
    denoiser_distance,
    optimum_gap,
    linearity_score,
    centred_linearity_score,
    linear_distillation,
    distillation_distance_to_gaussian,
    generalization_gap,
)
from .jacobians import denoiser_jacobian, jacobian_spectrum, effective_rank, effective_dimension
from .agreement import (
    Agreement,
    AgreementProfile,
    AGREEMENT_MEASURES,
    coefficient_of_determination,
    pearson_correlation,
    variance_normalised_r2,
    cosine_similarity,
    agreement_measures,
    agreement_profile,
)

from . import samples, denoisers, jacobians, agreement

# The face lists each module's public names, in module order (tests/test_checks.py holds it to that).
__all__: list[str] = []
__all__ += samples.__all__
__all__ += denoisers.__all__
__all__ += jacobians.__all__
__all__ += agreement.__all__
