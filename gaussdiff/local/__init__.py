r"""Local closed-form denoisers: at each pixel, a posterior over training *patches* (or over
training images seen through a per-pixel mask) instead of over whole training images — the
analytic denoisers that predict what generalizing convolutional networks produce.

Every variant is a :class:`~gaussdiff.Denoiser` ``D(x, sigma)`` on images ``(B, C, H, W)`` in the
package's convention (``x = x0 + sigma n``), in float32 and float64, on any torch device. With
``P_p(x)`` the ``k x k`` patch (all channels, ``k = 2r + 1``) of ``x`` centred at pixel ``p``,
padded by ``padding``, the patch variants compute

.. math:: D(x, \sigma)_p = \sum_{P \in \mathcal C(p)}
          \mathrm{softmax}_P\Big(-\frac{\|P_p(x) - P\|^2}{2\sigma^2}\Big)\, \mathrm{centre}(P)

and differ only in the candidate set ``C(p)`` (``N`` training images ``x_i``):

=======  ==========================================================  =========================  ============================
label    at pixel ``p = (i, j)``                                     name                       class
=======  ==========================================================  =========================  ============================
(L1)     ``C(p) = {P_p(x_i)}``, training images padded like the      LS, local score            ``PatchDenoiser(variant="ls")``
         query: ``N`` candidates per pixel
(L2)     every ``k x k`` window lying fully inside a training        ELS, equivariant local     ``PatchDenoiser(variant="els")``
         image, ``N (H-k+1)(W-k+1)``, the same set at every pixel    score (translation-
                                                                     equivariant)
(L3)     ``P_q(x_i)``, ``q = (i', j')``: ``i' = i`` on a border row  bbELS, boundary-broken     ``PatchDenoiser(variant="bbels")``
         (``i < r`` or ``i >= H - r``), else any interior row; the   ELS
         same for columns
(L4)     ``k = 1``: the per-pixel marginal posterior (pooled over    1 x 1 patches              any of the three
         all pixels for ELS and bbELS); the density factorises
(L5)     LS, zero padding, ``k >= 2 max(H, W) - 1``: every patch     = ``EmpiricalDenoiser``    ``PatchDenoiser(variant="ls")``
         holds the whole image, so (L1) is the empirical (E2)
(W1-3)   softmax over the ``N`` training images of the distance      data-driven locality       ``WienerMaskDenoiser``
         at the entries the thresholded, row-normalised Wiener
         filter ``Sigma (Sigma + sigma^2 I)^-1`` of the data links
         to ``p``; output the posterior mean of ``x_{i,p}``
=======  ==========================================================  =========================  ============================

When each applies. (L5) and the empirical denoiser memorize; (L1) is what a network with a
``k x k`` receptive field and position information can at best do; (L2) adds translation
equivariance (a fully convolutional network without position information) and creates new
images by mixing patches from different places; (L3) is (L2) for a network whose zero padding
lets border pixels know where they are — Kamb & Ganguli (ICML 2025, "An analytic theory of
creativity in convolutional diffusion models") find its outputs match trained U-Nets with a
median Pearson correlation ("r²" there) of about 0.94-0.96. The patch size may depend on sigma
(:class:`PatchSizeSchedule`, or :func:`calibrate_patch_size` against a trained network, as they
calibrate). (W1-3) takes the locality from the data instead of from the architecture: Lukoianov
et al. (NeurIPS 2025, "Locality in image diffusion models emerges from data statistics").

Modules: :mod:`gaussdiff.local.patches` ((L1)-(L5), how they are computed, the calibration) and
:mod:`gaussdiff.local.masks` ((W1)-(W3), with every choice the paper leaves open). Compare a
network with any of them with :mod:`gaussdiff.metrics.agreement`.

Score and density: the score is Tweedie's ``(D - x) / sigma^2`` for every variant; it is the
gradient of a log density only for (L4) and (L5) (elsewhere the local score is not a gradient
field and ``log_density`` raises ``NotImplementedError``).
"""

from .patches import PatchDenoiser, PatchSizeSchedule, calibrate_patch_size
from .masks import WienerMaskDenoiser, wiener_masks

from . import patches, masks

__all__: list[str] = []
__all__ += patches.__all__
__all__ += masks.__all__
