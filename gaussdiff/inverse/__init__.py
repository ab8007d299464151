r"""Linear inverse problems with an exact oracle.

A measurement is :math:`y = A x_0 + \eta`, :math:`\eta \sim N(0, \sigma_y^2 I)`. For the
closed-form priors of :mod:`gaussdiff.denoisers` and :mod:`gaussdiff.empirical` the posterior,
and the denoiser of the posterior, are exact: they are the yardstick against which the
approximate posterior samplers used in practice are measured. One module per concept, each
public name re-exported here (and flat from :mod:`gaussdiff`):

* :mod:`~gaussdiff.inverse.operators`: the measurement operators ``A`` (dense, inpainting,
  blur, down-sampling, random projection) and :func:`make_operator` for specs such as
  ``inpaint:0.5``;
* :mod:`~gaussdiff.inverse.posteriors`: the exact posteriors (I1-I4) and
  :class:`PosteriorDenoiser`, one class per kind of prior;
* :mod:`~gaussdiff.inverse.samplers`: DPS, PiGDM and DDRM, and :func:`run_posterior_sampler`;
* :mod:`~gaussdiff.inverse.measurement`: samples measured against the exact posterior;
* :mod:`~gaussdiff.inverse.experiment`: the experiment behind ``gaussdiff inverse`` (imported
  on use, not re-exported).
"""

from .operators import (
    LinearOperator,
    MatrixOperator,
    InpaintOperator,
    BlurOperator,
    DownsampleOperator,
    random_projection,
    make_operator,
    as_operator,
)
from .posteriors import (
    gaussian_posterior,
    mixture_posterior,
    empirical_posterior,
    PosteriorDenoiser,
    GaussianPosteriorDenoiser,
    MixturePosteriorDenoiser,
    EmpiricalPosteriorDenoiser,
)
from .samplers import sample_dps, sample_pigdm, sample_ddrm, run_posterior_sampler, POSTERIOR_SAMPLERS
from .measurement import measure_posterior_samples, gaussian_w2

from . import operators, posteriors, samplers, measurement

# The face lists each module's public names, in module order (tests/test_checks.py holds it to that).
__all__: list[str] = []
__all__ += operators.__all__
__all__ += posteriors.__all__
__all__ += samplers.__all__
__all__ += measurement.__all__
