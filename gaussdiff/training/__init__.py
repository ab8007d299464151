r"""Training small denoising networks: one loss for three parameterisations, Adam, EMA,
gradient clipping, resumable checkpoints.

The loss (Karras et al. 2022, eq. 8 with their weighting) is :meth:`Preconditioned.loss
<gaussdiff.networks.Preconditioned.loss>`, written in terms of the raw network output ``F``
and the scalings of :meth:`~gaussdiff.networks.Preconditioned.scalings`:

.. math:: L = E_{\sigma, x_0, n} \big\| F(c_{in} x, c_{noise}) - (x_0 - c_{skip} x) / c_{out} \big\|^2,
          \qquad x = x_0 + \sigma n,

which equals :math:`\lambda(\sigma) \|D(x, \sigma) - x_0\|^2` with :math:`\lambda = 1/c_{out}^2`.
For ``"edm"`` this is EDM's loss with :math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2) /
(\sigma \sigma_d)^2` and :math:`\ln \sigma \sim N(P_{mean}, P_{std}^2)`; for ``"vp"`` it is the
DDPM noise-prediction loss :math:`\|\epsilon - n\|^2` with :math:`t \sim U(\epsilon_t, 1)` on the
continuous VP schedule; for ``"flow"`` the rectified-flow loss :math:`\|v - (n - x_0)\|^2` with
:math:`t \sim U(0, 1)`. Only the law of sigma differs (:func:`training_sigmas`).

Every setting of a run and its default lives in one frozen, validated :class:`TrainSettings`;
:func:`train_denoiser`, :func:`train_ensemble` and the command line read their defaults from
it. The two trainers run one loop (warm-up, Adam, clipping, EMA, loss log); they differ only in
how they hold parameters (one module, or K modules stacked under ``torch.vmap``).

============  ==================================================================================
module        what lives there
============  ==================================================================================
settings      :class:`TrainSettings` (every setting and its default), ``TRAIN_DEFAULTS``
loop          what both trainers share: :func:`training_sigmas`, :func:`denoising_loss`,
              :class:`TrainResult`, the optimiser, the loop, the loss log, the run's configuration
single        one network: :func:`train_denoiser`, :func:`load_denoiser`, :func:`weights_fingerprint`
ensemble      K networks as one vectorised model: :func:`train_ensemble`
============  ==================================================================================

The layers point down: ``settings`` <- ``loop`` <- ``single``, ``ensemble``; this face imports
them all and none of them imports it.

``train_denoiser(data, steps=..., outdir=DIR)`` writes ``DIR/config.json`` (configuration, loss
history, checkpoints), ``DIR/model.pt`` (final EMA weights), ``DIR/ema_XXXXXXX.pt`` at the
requested checkpoint steps and ``DIR/state.pt`` (everything needed to resume: weights, EMA,
Adam moments, the generator of the data indices, sigmas and noise). Calling it again with the
same arguments and more ``steps`` continues the run; the result is bit-identical to an
uninterrupted run on the same device. :func:`load_denoiser` gives back the trained denoiser.

Class-conditional training (``labels=``): the network takes a label embedding and each row's
label is replaced by the "no label" token with probability ``label_dropout`` (Ho & Salimans
2022), so that one network learns both ``D(x, sigma, label)`` and ``D(x, sigma)`` for
classifier-free guidance. Fine-tuning (``init_from=``): the run starts from the weights (the
EMA) of a trained model, with a fresh optimiser, and otherwise trains like any run.
"""

from .settings import TrainSettings, TRAIN_DEFAULTS
from .loop import TrainResult, denoising_loss, training_sigmas
from .single import train_denoiser, load_denoiser, weights_fingerprint
from .ensemble import train_ensemble

from . import settings, loop, single, ensemble

# The face lists each module's public names, in module order (tests/test_checks.py holds it to that).
__all__: list[str] = []
__all__ += settings.__all__
__all__ += loop.__all__
__all__ += single.__all__
__all__ += ensemble.__all__
