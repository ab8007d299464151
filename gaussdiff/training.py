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
it. The two trainers run one loop (:func:`_optimise`: warm-up, Adam, clipping, EMA, loss log);
they differ only in how they hold parameters (one module, or K modules stacked under
``torch.vmap``).

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

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Sequence

import torch

from ._checks import check_data, check_int, check_positive
from ._io import atomic_torch_save, atomic_write
from ._version import __version__
from .data import data_fingerprint, load_dataset
from .networks import FRAMEWORKS, NETS, NetworkDenoiser, Preconditioned, build_network
from .conditional import _check_labels
from .schedules import VP

__all__ = ["train_denoiser", "train_ensemble", "load_denoiser", "TrainResult", "TrainSettings", "denoising_loss",
           "training_sigmas", "TRAIN_DEFAULTS", "weights_fingerprint"]


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run, with its default: the one place they are written.

    Construction validates and normalises each value (a bad one raises ``ValueError`` naming
    it), so an instance is always a valid run. ``settings.replace(lr=2e-3)`` gives a changed copy.
    Each field's ``metadata["help"]`` is its one-line description (the command line's help).
    """

    # -- length and randomness
    steps: int = _setting(4000, "optimisation steps (a resumed run continues up to this number)")
    seed: int = _setting(0, "seed of the weights and of the generator of indices, sigmas and noise")
    # -- architecture
    net: str = _setting("mlp", "network: 'mlp' (vectors, or images flattened) or 'unet' (images)")
    width: int | None = _setting(None, "width (default: 256 for the MLP, 32 for the U-Net)")
    depth: int | None = _setting(None, "MLP residual blocks (default: 3)")
    framework: str = _setting("edm", "parameterisation: 'edm', 'vp' or 'flow'")
    sigma_data: float | str = _setting("auto", "EDM's sigma_data ('auto': the standard deviation of the data)")
    # -- optimisation
    batch_size: int = _setting(256, "rows per batch, drawn uniformly with replacement")
    lr: float = _setting(1e-3, "Adam learning rate")
    warmup: int = _setting(100, "steps of the linear learning-rate ramp (0: none)")
    ema: float = _setting(0.999, "EMA decay, in [0, 1)")
    grad_clip: float | None = _setting(1.0, "maximal gradient norm ('none': no clipping)")
    # -- law of sigma (EDM)
    p_mean: float = _setting(-1.2, "mean of ln(sigma) for 'edm'")
    p_std: float = _setting(1.2, "standard deviation of ln(sigma) for 'edm'")
    # -- class-conditional training
    label_dropout: float = _setting(0.1, "share of labels replaced by the 'no label' token, in [0, 1)")
    # -- where, and how often to log and save
    device: str = _setting("cpu", "'cpu' or 'cuda'")
    log_every: int = _setting(50, "steps per loss-history entry (one device sync each)")
    save_every: int = _setting(1000, "steps between resumable states (state.pt)")

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("steps", check_int(self.steps, "steps", minimum=0))
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {NETS}, got {self.net!r}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {self.framework!r}")
        put("batch_size", check_int(self.batch_size, "batch_size"))
        put("warmup", check_int(self.warmup, "warmup", minimum=0))
        put("log_every", check_int(self.log_every, "log_every"))
        put("save_every", check_int(self.save_every, "save_every"))
        put("lr", check_positive(self.lr, "lr"))
        put("ema", _unit_interval(self.ema, "ema"))
        if self.grad_clip is not None:
            put("grad_clip", check_positive(self.grad_clip, "grad_clip"))
        try:
            put("p_mean", float(self.p_mean))
        except (TypeError, ValueError):
            raise ValueError(f"p_mean: expected a number, got {self.p_mean!r}") from None
        put("p_std", check_positive(self.p_std, "p_std"))
        if isinstance(self.sigma_data, str):
            if self.sigma_data != "auto":
                raise ValueError(f"sigma_data: 'auto' or a positive number, got {self.sigma_data!r}")
        else:
            put("sigma_data", check_positive(self.sigma_data, "sigma_data"))
        put("label_dropout", _unit_interval(self.label_dropout, "label_dropout"))
        put("seed", check_int(self.seed, "seed", minimum=0))

    def replace(self, **changes) -> "TrainSettings":
        """A copy with ``changes`` (validated like a new instance)."""
        return dataclasses.replace(self, **changes)


def _unit_interval(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: must be in [0, 1), got {value!r}")
    return v


_DEFAULT = TrainSettings()

#: The defaults of :class:`TrainSettings` as a read-only mapping (derived from it, not a second copy).
TRAIN_DEFAULTS = MappingProxyType(dataclasses.asdict(_DEFAULT))

# Settings that define the run: resuming requires them unchanged (steps may grow).
_IDENTITY = ("data_fingerprint", "data_shape", "net", "width", "depth", "framework", "seed",
             "batch_size", "lr", "warmup", "ema", "grad_clip", "sigma_data", "p_mean", "p_std",
             "device", "num_classes", "label_dropout", "labels_fingerprint", "init_fingerprint")
_FORMAT = 1


def training_sigmas(framework: str, batch: int, *, generator: torch.Generator,
                    p_mean: float = _DEFAULT.p_mean, p_std: float = _DEFAULT.p_std, device=None) -> torch.Tensor:
    r"""Noise levels of one training batch, ``(batch,)`` float32.

    ``"edm"``: :math:`\ln\sigma \sim N(P_{mean}, P_{std}^2)` (EDM Table 1);
    ``"vp"``: :math:`t \sim U(10^{-5}, 1)`, :math:`\sigma = \sigma_{VP}(t)` (EDM's VP setting);
    ``"flow"``: :math:`t \sim U(10^{-4}, 1 - 10^{-4})`, :math:`\sigma = t / (1 - t)`."""
    dev = device if device is not None else generator.device
    if framework == "edm":
        return torch.exp(p_mean + p_std * torch.randn(batch, generator=generator, device=dev))
    u = torch.rand(batch, generator=generator, device=dev)
    if framework == "vp":
        return VP().sigma(1e-5 + (1 - 1e-5) * u)
    if framework == "flow":
        t = 1e-4 + (1 - 2e-4) * u
        return t / (1 - t)
    raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {framework!r}")


def denoising_loss(model: Preconditioned, x0: torch.Tensor, sigma: torch.Tensor,
                   noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    r"""The training loss of ``model`` on one batch: :meth:`Preconditioned.loss
    <gaussdiff.networks.Preconditioned.loss>` (module docstring), the mean over the batch and
    entries of :math:`\|F(c_{in} x, c_{noise}) - (x_0 - c_{skip} x)/c_{out}\|^2`, ``x = x0 + sigma noise``.

    Parameters
    ----------
    x0 : (B, *event_shape) clean data. sigma : (B,). noise : (B, *event_shape) standard normal.
    label : None, or (B,) integers ``0..C`` for a class-conditional model (``C``: no label).
    """
    return model.loss(x0, sigma, noise, label)


@dataclass
class TrainResult:
    """What :func:`train_denoiser` returns.

    Attributes
    ----------
    denoiser : the EMA network as a :class:`~gaussdiff.networks.NetworkDenoiser` (eval mode).
    loss_history : ``{"step": [...], "loss": [...]}``, the mean training loss over each logging
        interval ending at ``step``.
    config : the run's configuration (JSON-able).
    step : steps trained. outdir : the output folder or None. wall_time_s : seconds of this call.
    model : the raw (non-EMA) trained module.
    """

    denoiser: NetworkDenoiser
    loss_history: dict
    config: dict
    step: int
    outdir: Path | None = None
    wall_time_s: float = 0.0
    model: Preconditioned | None = field(default=None, repr=False)


# =============================================================================================
# What both trainers share: the optimiser, the loop, the loss log, the run's configuration
# =============================================================================================

def _resolve_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _with_threads(num_threads, fn):
    """``fn()`` with torch's CPU thread count set to ``num_threads`` (None: unchanged), restored after."""
    if num_threads is None:
        return fn()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(check_int(num_threads, "num_threads"))
    try:
        return fn()
    finally:
        torch.set_num_threads(old_threads)


def _auto_sigma_data(data: torch.Tensor) -> float:
    """``sigma_data="auto"``: the data's standard deviation, rounded to 6 digits, at least 1e-3."""
    return max(round(float(data.std()) if data.numel() > 1 else 0.5, 6), 1e-3)


def _check_checkpoints(checkpoint_steps, steps: int) -> list[int]:
    ckpts = sorted({check_int(s, "checkpoint_steps") for s in checkpoint_steps})
    if ckpts and ckpts[-1] > steps:
        raise ValueError(f"checkpoint_steps: {ckpts[-1]} is beyond steps = {steps}")
    return ckpts


def _adam(params, lr: float) -> torch.optim.Adam:
    try:  # the fused kernel (CPU and CUDA, torch >= 2.4) is ~6x faster for small networks
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch
        return torch.optim.Adam(params, lr=lr)


class _LossLog:
    """Training losses of K models summed on the device and written to their histories once per
    logging interval (the one device sync per interval), with an optional tqdm bar."""

    def __init__(self, histories: list[dict], device, *, progress: bool, total: int, start: int, desc: str):
        self.histories = histories
        self.acc = torch.zeros(len(histories), device=device)
        self.n, self.last = 0, start
        self.bar = None
        if progress and start < total:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, leave=True)

    def add(self, loss: torch.Tensor):
        """Add one step's loss (a scalar, or K losses); call under ``torch.no_grad()``."""
        self.acc += loss.detach()
        self.n += 1

    def flush(self, step: int):
        if not self.n:
            return
        means = [v / self.n for v in self.acc.tolist()]
        for h, v in zip(self.histories, means):
            h["step"].append(step)
            h["loss"].append(v)
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.bar.set_postfix(loss=f"{sum(means) / len(means):.4f}")
        self.acc.zero_()
        self.n, self.last = 0, step

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _optimise(s: TrainSettings, opt: torch.optim.Optimizer, params: list, ema_params: list, *, start: int,
              batch_loss: Callable, clip: Callable, log: _LossLog, after_step: Callable):
    """The loop both trainers run, for steps ``start + 1 .. s.steps``: the learning rate of the
    warm-up ramp (linear over ``s.warmup`` steps, then constant, so a run can be extended), one
    Adam step on ``batch_loss(k)`` (one loss, or K losses whose sum is minimised: the models share
    no parameter, so each gets its own gradient), the gradients clipped by ``clip(s.grad_clip)``,
    the EMA update with decay ``min(s.ema, (1 + k) / (10 + k))`` after step ``k``, the loss into
    ``log``; then ``after_step(step)``."""
    cur_lr = None
    for k in range(start, s.steps):
        new_lr = s.lr * min(1.0, (k + 1) / s.warmup) if s.warmup else s.lr
        if new_lr != cur_lr:
            for g in opt.param_groups:
                g["lr"] = new_lr
            cur_lr = new_lr
        loss = batch_loss(k)
        opt.zero_grad(set_to_none=True)
        (loss if loss.ndim == 0 else loss.sum()).backward()
        if s.grad_clip is not None:
            clip(s.grad_clip)
        opt.step()
        with torch.no_grad():
            beta = min(s.ema, (1 + k) / (10 + k))
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)
            log.add(loss)
        after_step(k + 1)


def _run_config(s: TrainSettings, data: torch.Tensor, spec, model: Preconditioned, dev, checkpoint_steps, *,
                save_every, num_classes=None, label_dropout=None, labels_fingerprint=None, init_fingerprint=None,
                init_from=None, **extra) -> dict:
    """The JSON-able configuration of one trained model (what ``config.json`` and
    :attr:`TrainResult.config` hold): the settings as resolved for this model and its data."""
    mod = model.net
    return dict(data=spec, data_fingerprint=data_fingerprint(data), data_shape=list(data.shape),
                n=int(data.shape[0]), event_shape=list(data.shape[1:]), net=s.net, width=int(mod.width),
                depth=int(getattr(mod, "depth", 0)) or None, framework=s.framework, seed=s.seed,
                batch_size=s.batch_size, lr=s.lr, warmup=s.warmup, ema=s.ema, grad_clip=s.grad_clip,
                sigma_data=s.sigma_data, p_mean=s.p_mean, p_std=s.p_std, device=str(dev), steps=s.steps,
                checkpoint_steps=checkpoint_steps, save_every=save_every, log_every=s.log_every,
                parameters=sum(p.numel() for p in model.parameters()), num_classes=num_classes,
                label_dropout=label_dropout, labels_fingerprint=labels_fingerprint,
                init_fingerprint=init_fingerprint, init_from=init_from, version=__version__, **extra)


def _ema_name(step: int) -> str:
    return f"ema_{step:07d}.pt"


# =============================================================================================
# One network
# =============================================================================================

def train_denoiser(data, *, steps: int = _DEFAULT.steps, net: str = _DEFAULT.net, width: int | None = _DEFAULT.width,
                   depth: int | None = _DEFAULT.depth, framework: str = _DEFAULT.framework, seed: int = _DEFAULT.seed,
                   batch_size: int = _DEFAULT.batch_size, lr: float = _DEFAULT.lr, warmup: int = _DEFAULT.warmup,
                   ema: float = _DEFAULT.ema, grad_clip: float | None = _DEFAULT.grad_clip,
                   sigma_data=_DEFAULT.sigma_data, p_mean: float = _DEFAULT.p_mean, p_std: float = _DEFAULT.p_std,
                   device=_DEFAULT.device, outdir=None, checkpoint_steps: Sequence[int] = (),
                   save_every: int = _DEFAULT.save_every, callback: Callable | None = None, progress: bool = True,
                   log_every: int = _DEFAULT.log_every, num_threads: int | None = None, labels=None,
                   num_classes: int | None = None, label_dropout: float = _DEFAULT.label_dropout,
                   init_from=None, settings: TrainSettings | None = None) -> TrainResult:
    r"""Train a small network as a denoiser of ``data`` and return its EMA as a denoiser.

    Each step draws ``batch_size`` training rows uniformly (with replacement), a sigma per row
    (:func:`training_sigmas`) and Gaussian noise, all from one ``torch.Generator`` seeded with
    ``seed`` (saved with the checkpoint), takes an Adam step on :func:`denoising_loss` (learning
    rate ramped linearly over ``warmup`` steps, then constant, so a run can be extended), with
    the gradient norm clipped to ``grad_clip``, and updates the EMA with decay
    ``min(ema, (1 + k) / (10 + k))`` after step ``k``. With ``labels`` the network is
    class-conditional and each step also draws the label-dropout mask from that generator (an
    unconditional run draws exactly what it always drew).

    Parameters
    ----------
    data : (N, *event_shape) training set (tensor or array), or a data spec for
        :func:`gaussdiff.load_dataset`. Must be finite and non-empty.
    steps : total optimisation steps (a resumed run continues up to this number).
    net : ``"mlp"`` (vectors, or images flattened) or ``"unet"`` (images ``(C, H, W)``).
    width, depth : capacity (defaults: MLP width 256 depth 3, U-Net width 32).
    framework : ``"edm"``, ``"vp"`` or ``"flow"`` (see :mod:`gaussdiff.networks`).
    seed : seeds the weights and the generator of indices, sigmas and noise.
    batch_size, lr, warmup, ema, grad_clip : optimisation (``grad_clip=None`` disables it).
    sigma_data : EDM's ``sigma_data``; ``"auto"`` is the standard deviation of ``data``.
    p_mean, p_std : EDM's log-normal law of sigma.
    device : ``"cpu"`` (default) or ``"cuda"``.
    outdir : folder for ``config.json``, ``model.pt``, EMA checkpoints and ``state.pt``; when it
        already holds a run with the same arguments that run is resumed (or returned as it is
        when finished). None trains in memory.
    checkpoint_steps : steps at which to save the EMA weights (``ema_XXXXXXX.pt``, needs
        ``outdir``) and call ``callback``.
    save_every : steps between resumable states (``state.pt``), besides checkpoints and the end.
    callback : ``callback(step, denoiser)`` at each checkpoint step with the EMA denoiser (a
        copy; it stays valid). Steps already passed before a resume are not called again.
    progress : show a tqdm bar with the running loss.
    log_every : steps per loss-history entry (one device sync each).
    num_threads : CPU threads for this call (restored afterwards); None keeps torch's
        setting. On a shared or busy CPU use 1: small networks gain little from a second
        thread and lose up to 10x when threads contend.
    labels : None (unconditional), or ``(N,)`` integer class labels of ``data``: trains a
        class-conditional network ``D(x, sigma, label)``.
    num_classes : classes of the label embedding (default ``max(labels) + 1``, or the source
        model's when fine-tuning); labels must lie in ``0..num_classes-1``.
    label_dropout : probability in ``[0, 1)`` that a row's label is replaced by the "no label"
        token, which trains the unconditional branch ``D(x, sigma)`` used by classifier-free
        A source with labels needs ``labels`` and one without refuses them. Resuming checks that
        the source is the same (a fingerprint of its weights).
    settings : a :class:`TrainSettings` to train with instead of the keyword settings above
        (``steps`` ... ``label_dropout``), which must then be left at their defaults. Every
        default above is :class:`TrainSettings`'s.

    Returns
    -------
    TrainResult with ``.denoiser``, ``.loss_history``, ``.config``.
    """
    given = dict(steps=steps, net=net, width=width, depth=depth, framework=framework, seed=seed,
                 batch_size=batch_size, lr=lr, warmup=warmup, ema=ema, grad_clip=grad_clip, sigma_data=sigma_data,
                 p_mean=p_mean, p_std=p_std, label_dropout=label_dropout, device=device, log_every=log_every,
                 save_every=save_every)
    return _with_threads(num_threads, lambda: _train(
        data, _settings(settings, given), outdir=outdir, checkpoint_steps=checkpoint_steps, callback=callback,
        progress=progress, labels=labels, num_classes=num_classes, init_from=init_from))


def _settings(settings: TrainSettings | None, given: dict) -> TrainSettings:
    """The run's settings: ``settings``, or the keyword arguments ``given`` (one per field)."""
    assert set(given) == {f.name for f in dataclasses.fields(TrainSettings)}
    if settings is None:
        return TrainSettings(**given)
    if not isinstance(settings, TrainSettings):
        raise ValueError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
    changed = [k for k, v in given.items() if v != getattr(_DEFAULT, k)]
    if changed:
        raise ValueError(f"settings: given together with {', '.join(changed)}; put them in the settings "
                         "(settings.replace(...))")
    return settings


def _train(data, s: TrainSettings, *, outdir, checkpoint_steps, callback, progress, labels, num_classes,
           init_from) -> TrainResult:
    t_start = time.perf_counter()
    spec = None
    if isinstance(data, (str, os.PathLike)):
        spec = str(data)
        data = load_dataset(spec)[0]
    data = check_data(data, "data").to(torch.float32)
    checkpoint_steps = _check_checkpoints(checkpoint_steps, s.steps)
    if checkpoint_steps and outdir is None and callback is None:
        raise ValueError("checkpoint_steps: need an outdir (to save them) or a callback")
    event_shape = tuple(data.shape[1:])
    source = source_name = init_fp = None
    if init_from is not None:
        source, source_name = _source_model(init_from)
        s = _fine_tuning_settings(s, source, event_shape)
        if num_classes is not None and num_classes != source.num_classes:
            raise ValueError(f"num_classes: fine-tuning keeps the source model's num_classes = "
                             f"{source.num_classes!r}; got {num_classes!r} (leave it unset)")
        num_classes = source.num_classes
        if num_classes is not None and labels is None:
            raise ValueError(f"labels: the source model is class-conditional ({num_classes} classes); "
                             "fine-tuning it needs labels")
        if num_classes is None and labels is not None:
            raise ValueError("labels: the source model is unconditional; a class-conditional network "
                             "cannot be fine-tuned from it (train one from scratch with labels)")
    label_dropout = None
    if labels is not None:
        lab = torch.as_tensor(labels)
        if lab.ndim != 1 or lab.shape[0] != data.shape[0]:
            raise ValueError(f"labels: expected ({data.shape[0]},) labels, one per row of data, got "
                             f"shape {tuple(lab.shape)}")
        if num_classes is None:
            lab = _check_labels(lab, 2 ** 62, data.shape[0], "labels")   # integers >= 0
            num_classes = int(lab.max()) + 1
        num_classes = check_int(num_classes, "num_classes")
        labels = _check_labels(lab, num_classes, data.shape[0], "labels")
        label_dropout = s.label_dropout
    elif num_classes is not None:
        raise ValueError("num_classes: given without labels; pass labels= to train a class-conditional network")
    if s.sigma_data == "auto":
        s = s.replace(sigma_data=_auto_sigma_data(data))
    dev = _resolve_device(s.device)

    model = build_network(s.net, event_shape, width=s.width, depth=s.depth, framework=s.framework,
                          sigma_data=s.sigma_data, seed=s.seed, num_classes=num_classes)
    if source is not None:
        model.load_state_dict(source.state_dict())
        init_fp = weights_fingerprint(model)
    config = _run_config(s, data, spec, model, dev, checkpoint_steps, save_every=s.save_every,
                         num_classes=num_classes, label_dropout=label_dropout,
                         labels_fingerprint=None if labels is None else _labels_fingerprint(labels),
                         init_fingerprint=init_fp, init_from=source_name)

    model.to(dev)
    ema_model = copy.deepcopy(model)
    for p in ema_model.parameters():
        p.requires_grad_(False)
    opt = _adam(model.parameters(), s.lr)
    gen = torch.Generator(device=dev).manual_seed(s.seed)
    history = {"step": [], "loss": []}
    done, saved_ckpts = 0, []

    outdir = Path(outdir) if outdir is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
        state_file = outdir / "state.pt"
        if state_file.exists():
            state = torch.load(state_file, map_location=dev, weights_only=False)
            old = state["config"]
            diff = [k for k in _IDENTITY if old.get(k) != config.get(k)]
            if diff:
                raise ValueError(
                    f"outdir: {outdir} holds a different run ({', '.join(f'{k}: {old.get(k)!r} there, {config.get(k)!r} here' for k in diff)}); "
                    "use another outdir or remove it")
            if state["step"] > s.steps:
                raise ValueError(f"steps: {outdir} already holds {state['step']} steps, more than "
                                 f"steps = {s.steps}; load an earlier checkpoint with load_denoiser(DIR, step=...)")
            model.load_state_dict(state["model"])
            ema_model.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"].cpu())
            history = state["history"]
            done = int(state["step"])
            saved_ckpts = list(state.get("checkpoints", []))

    params = list(model.parameters())
    N = data.shape[0]
    data_dev = data.to(dev)
    labels_dev = None if labels is None else labels.to(dev)
    ckpt_set = set(checkpoint_steps)

    def ema_denoiser():
        return NetworkDenoiser(copy.deepcopy(ema_model), event_shape, config=config)

    def write_outputs(step):
        if outdir is None:
            return
        meta = {"format": _FORMAT, "config": config, "step": step, "loss_history": history,
                "checkpoints": saved_ckpts, "files": {"final": "model.pt", "state": "state.pt"}}
        atomic_torch_save({"step": step, "model": model.state_dict(), "ema": ema_model.state_dict(),
                           "opt": opt.state_dict(), "gen": gen.get_state(), "history": history,
                           "config": config, "checkpoints": saved_ckpts}, outdir / "state.pt")
        atomic_torch_save({"step": step, "config": config, "ema": ema_model.state_dict()}, outdir / "model.pt")
        atomic_write(outdir / "config.json", json.dumps(meta, indent=2))

    def batch_loss(k):
        idx = torch.randint(N, (s.batch_size,), generator=gen, device=dev)
        x0 = data_dev[idx]
        sigma = training_sigmas(s.framework, s.batch_size, generator=gen, p_mean=s.p_mean, p_std=s.p_std)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        label = None
        if labels_dev is not None:         # label dropout: the "no label" token num_classes
            drop = torch.rand(s.batch_size, generator=gen, device=dev) < label_dropout
            label = torch.where(drop, num_classes, labels_dev[idx])
        return model.loss(x0, sigma, noise, label)

    def after_step(step):
        if step % s.log_every == 0 or step == s.steps or step in ckpt_set or step % s.save_every == 0:
            log.flush(step)
        if step in ckpt_set:
            if outdir is not None:
                atomic_torch_save({"step": step, "config": config, "ema": ema_model.state_dict()},
                                  outdir / _ema_name(step))
                saved_ckpts.append(step)
                write_outputs(step)
            if callback is not None:
                callback(step, ema_denoiser())
        elif step % s.save_every == 0 and step != s.steps:
            write_outputs(step)

    log = _LossLog([history], dev, progress=progress, total=s.steps, start=done,
                   desc=f"train {s.net}/{s.framework}")
    model.train()
    try:
        _optimise(s, opt, params, list(ema_model.parameters()), start=done, batch_loss=batch_loss,
                  clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm), log=log,
                  after_step=after_step)
        if done < s.steps or not (outdir is not None and (outdir / "model.pt").exists()):
            write_outputs(s.steps)
    finally:
        log.close()
    model.eval()
    return TrainResult(denoiser=ema_denoiser(), loss_history=history, config=config, step=s.steps,
                       outdir=outdir, wall_time_s=time.perf_counter() - t_start, model=model)


def _fine_tuning_settings(s: TrainSettings, source: Preconditioned, event_shape) -> TrainSettings:
    """The settings of a run fine-tuned from ``source``: its architecture (a setting left at its
    default yields to the source's value; one given otherwise must equal it)."""
    sm = source.net
    src = dict(net="mlp" if type(sm).__name__ == "MLP" else "unet", width=int(sm.width),
               depth=int(getattr(sm, "depth", 0)) or None, framework=source.framework,
               sigma_data=source.sigma_data)
    if src["net"] == "mlp":
        fits = math.prod(event_shape) == sm.dim
    else:
        fits = len(event_shape) == 3 and event_shape[0] == sm.channels and min(event_shape[1:]) == sm.size
    if not fits:
        what = f"{sm.dim} values" if src["net"] == "mlp" else f"{sm.channels}-channel {sm.size} px images"
        raise ValueError(f"init_from: the source model was built for {what}, the data have event "
                         f"shape {event_shape}")
    for k, v in src.items():
        given = getattr(s, k)
        if given != getattr(_DEFAULT, k) and given != v:
            raise ValueError(f"{k}: fine-tuning keeps the source model's {k} = {v!r}; got {given!r} "
                             "(leave it unset)")
    return s.replace(**src)


def load_denoiser(outdir, step: int | None = None, *, device="cpu") -> NetworkDenoiser:
    """The EMA denoiser saved by :func:`train_denoiser` in ``outdir``: the final one, or the
    checkpoint at ``step`` (one of the ``checkpoint_steps`` of the run)."""
    outdir = Path(outdir)
    meta_file = outdir / "config.json"
    if not meta_file.exists():
        raise ValueError(f"outdir: {outdir} holds no trained model (no config.json)")
    meta = json.loads(meta_file.read_text())
    if step is None:
        f = outdir / "model.pt"
    else:
        f = outdir / _ema_name(check_int(step, "step"))
        if not f.exists():
            raise ValueError(f"step: no checkpoint at step {step} in {outdir}; saved steps: "
                             f"{meta.get('checkpoints', [])} (and the final model, step=None)")
    saved = torch.load(f, map_location="cpu", weights_only=False)
    cfg = saved["config"]
    model = build_network(cfg["net"], cfg["event_shape"], width=cfg["width"],
                          depth=cfg["depth"] if cfg["net"] == "mlp" else None,
                          framework=cfg["framework"], sigma_data=cfg["sigma_data"],
                          num_classes=cfg.get("num_classes"))
    model.load_state_dict(saved["ema"])
    model.to(_resolve_device(device))
    cfg = dict(cfg, loaded_step=int(saved["step"]))
    return NetworkDenoiser(model, cfg["event_shape"], config=cfg)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short SHA-1 of a module's parameters and buffers (names, shapes, float32 bytes)."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _labels_fingerprint(labels: torch.Tensor) -> str:
    h = hashlib.sha1(str(tuple(labels.shape)).encode())
    h.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _source_model(init_from):
    """``init_from`` -> (a CPU copy of the source's Preconditioned module, a description)."""
    if isinstance(init_from, (str, os.PathLike)):
        den = load_denoiser(init_from)
        return copy.deepcopy(den.model).cpu(), str(init_from)
    if isinstance(init_from, TrainResult):
        init_from = init_from.denoiser
    if isinstance(init_from, NetworkDenoiser):
        return copy.deepcopy(init_from.model).cpu(), repr(init_from)
    if isinstance(init_from, Preconditioned):
        return copy.deepcopy(init_from).cpu(), "Preconditioned module"
    raise ValueError(f"init_from: expected an outdir of train_denoiser, a NetworkDenoiser, a TrainResult "
                     f"or a Preconditioned module, got {type(init_from).__name__}")


# =============================================================================================
# Ensembles: K networks of one architecture trained as one vectorised model
# =============================================================================================

def train_ensemble(datasets, *, seeds, steps: int = _DEFAULT.steps, net: str = _DEFAULT.net,
                   width: int | None = _DEFAULT.width, depth: int | None = _DEFAULT.depth,
                   framework: str = _DEFAULT.framework, batch_size: int = _DEFAULT.batch_size, lr: float = _DEFAULT.lr,
                   warmup: int = _DEFAULT.warmup, ema: float = _DEFAULT.ema, grad_clip: float | None = _DEFAULT.grad_clip,
                   sigma_data=_DEFAULT.sigma_data, p_mean: float = _DEFAULT.p_mean, p_std: float = _DEFAULT.p_std,
                   device=_DEFAULT.device, checkpoint_steps: Sequence[int] = (), callback: Callable | None = None,
                   progress: bool = True, log_every: int = _DEFAULT.log_every,
                   num_threads: int | None = None) -> list[TrainResult]:
    r"""Train ``K = len(datasets)`` networks of one architecture, one per data set, as one
    vectorised model, and return one :class:`TrainResult` per data set.

    Model ``k`` is the run ``train_denoiser(datasets[k], seed=seeds[k], ...)`` with the same
    settings: the same initial weights, its own ``sigma_data`` (``"auto"``: the standard
    deviation of its own data set), and its own ``torch.Generator`` seeded with ``seeds[k]``,
    from which it draws the same indices, sigmas and noise in the same order. Only the
    arithmetic is batched: the parameters of the K networks are stacked
    (``torch.func.stack_module_state``) and one forward and backward pass runs them all
    (``torch.func.functional_call`` under ``torch.vmap``), one fused Adam updates the stacked
    parameters (Adam, the learning-rate warmup and the EMA are elementwise, so stacking changes
    nothing), and the gradient norm is clipped per model, over that model's slice only, so the
    models never interact. Because batched arithmetic sums in another order, the weights agree
    with K separate runs up to the order of floating-point operations (about ``1e-6`` relative
    after 50 steps on a CPU), not bit for bit. The point is a GPU, where one small network
    leaves the device idle: K networks cost about the kernel launches of one. On a CPU it is no
    faster than K separate runs.

    Training is in memory: no ``outdir``, no resume, no class labels, no fine-tuning (use
    :func:`train_denoiser` for those).

    Parameters
    ----------
    datasets : sequence of K >= 1 training sets ``(N_k, *event_shape)`` (tensors, arrays or data
        specs), all with the same event shape; their sizes ``N_k`` may differ.
    seeds : K integers, ``seeds[k]`` seeds model ``k``'s weights and its generator.
    steps, net, width, depth, framework, batch_size, lr, warmup, ema, grad_clip, p_mean, p_std :
        as in :func:`train_denoiser` (defaults: :class:`TrainSettings`), shared by all models.
        ``net="unet"`` is supported (GroupNorm and convolutions vectorise).
    sigma_data : ``"auto"`` (each model: the standard deviation of its own data set), one
        number for all, or a sequence of K numbers.
    device : ``"cpu"`` or ``"cuda"``.
    checkpoint_steps : steps at which ``callback`` is called.
    callback : ``callback(step, denoisers)`` at each checkpoint step, once, with the list of
        the K EMA denoisers (:class:`~gaussdiff.networks.NetworkDenoiser` copies, in the order
        of ``datasets``; they stay valid).
    progress : show one tqdm bar with the running mean loss.
    log_every : steps per loss-history entry (one device sync each).
    num_threads : CPU threads for this call (restored afterwards); None keeps torch's setting.

    Returns
    -------
    list of K :class:`TrainResult`, in the order of ``datasets``, each with its own
    ``.denoiser`` (final EMA), ``.loss_history``, ``.config`` (with ``ensemble`` = K and
    ``ensemble_index`` = k) and ``.model``; ``wall_time_s`` is the whole ensemble's.
    """
    shared = dict(steps=steps, net=net, width=width, depth=depth, framework=framework, batch_size=batch_size,
                  lr=lr, warmup=warmup, ema=ema, grad_clip=grad_clip, p_mean=p_mean, p_std=p_std, device=device,
                  log_every=log_every)
    return _with_threads(num_threads, lambda: _train_ensemble(
        datasets, seeds, sigma_data, shared, checkpoint_steps=checkpoint_steps, callback=callback,
        progress=progress))


def _train_ensemble(datasets, seeds, sigma_data, shared: dict, *, checkpoint_steps, callback,
                    progress) -> list[TrainResult]:
    from torch.func import functional_call, stack_module_state

    t_start = time.perf_counter()
    if isinstance(datasets, torch.Tensor) or not isinstance(datasets, Sequence) or isinstance(datasets, str):
        raise ValueError("datasets: expected a list of K training sets (one per model), got "
                         f"{type(datasets).__name__}")
    if len(datasets) < 1:
        raise ValueError("datasets: give at least one training set")
    K = len(datasets)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != K:
        got = len(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else repr(seeds)
        raise ValueError(f"seeds: expected one seed per data set ({K}), got {got}")
    seeds = [check_int(s, "seeds", minimum=0) for s in seeds]
    specs, data = [], []
    for i, d in enumerate(datasets):
        spec = None
        if isinstance(d, (str, os.PathLike)):
            spec = str(d)
            d = load_dataset(spec)[0]
        data.append(check_data(d, f"datasets[{i}]").to(torch.float32))
        specs.append(spec)
    event_shape = tuple(data[0].shape[1:])
    for i, d in enumerate(data):
        if tuple(d.shape[1:]) != event_shape:
            raise ValueError(f"datasets: every data set needs the same event shape; datasets[0] has "
                             f"{event_shape}, datasets[{i}] has {tuple(d.shape[1:])}")
    s = TrainSettings(**shared)
    checkpoint_steps = _check_checkpoints(checkpoint_steps, s.steps)
    if checkpoint_steps and callback is None:
        raise ValueError("checkpoint_steps: need a callback (train_ensemble saves no files)")
    if isinstance(sigma_data, str):
        if sigma_data != "auto":
            raise ValueError(f"sigma_data: 'auto', a number or {K} numbers, got {sigma_data!r}")
        sds = [_auto_sigma_data(d) for d in data]
    elif isinstance(sigma_data, Sequence):
        if len(sigma_data) != K:
            raise ValueError(f"sigma_data: expected one value per data set ({K}), got {len(sigma_data)}")
        sds = list(sigma_data)
    else:
        sds = [sigma_data] * K
    per_model = [s.replace(seed=seed, sigma_data=sd) for seed, sd in zip(seeds, sds)]   # validates each
    dev = _resolve_device(s.device)

    models = [build_network(m.net, event_shape, width=m.width, depth=m.depth, framework=m.framework,
                            sigma_data=m.sigma_data, seed=m.seed) for m in per_model]
    configs = [_run_config(m, data[k], specs[k], models[k], dev, checkpoint_steps, save_every=None, ensemble=K,
                           ensemble_index=k) for k, m in enumerate(per_model)]

    # The stacked weights (K, ...) as leaves, a weightless copy of the network to call them.
    params, buffers = stack_module_state([m.net for m in models])
    names = list(params)
    params = {n: p.detach().to(dev).requires_grad_(True) for n, p in params.items()}
    buffers = {n: b.to(dev) for n, b in buffers.items()}
    ema_params = {n: p.detach().clone() for n, p in params.items()}
    plist = [params[n] for n in names]
    shell = copy.deepcopy(models[0].net).to("meta")

    def one(p, b, x, c_noise):
        return functional_call(shell, (p, b), (x, c_noise))

    batched = torch.vmap(one)
    try:   # a layer without a vmap rule would fail here, before any training
        with torch.no_grad():
            batched(params, buffers, torch.zeros((K, 1) + event_shape, device=dev), torch.zeros(K, 1, device=dev))
    except Exception as exc:  # pragma: no cover - every built-in network vectorises
        raise ValueError(f"net: {s.net!r} cannot be vectorised with torch.vmap ({exc}); "
                         "train the models separately with train_denoiser") from exc

    opt = _adam(plist, s.lr)
    gens = [torch.Generator(device=dev).manual_seed(seed) for seed in seeds]
    sizes = [int(d.shape[0]) for d in data]
    offsets = torch.tensor([0] + sizes[:-1], device=dev).cumsum(0)[:, None]       # (K, 1)
    data_all = torch.cat(data).to(dev)
    # per-model sigma_data, (K, 1) float64: Preconditioned.scalings rounds it to float32 as it
    # rounds a single model's Python float
    sd = torch.tensor(sds, dtype=torch.float64, device=dev)[:, None]
    histories = [{"step": [], "loss": []} for _ in range(K)]
    ckpt_set = set(checkpoint_steps)

    def denoisers():
        out = []
        for k in range(K):
            m = copy.deepcopy(models[k])
            with torch.no_grad():
                for n, p in m.net.named_parameters():
                    p.copy_(ema_params[n][k])
            out.append(NetworkDenoiser(m.to(dev), event_shape, config=configs[k]))
        return out

    def batch_loss(k):
        # each model draws from its own generator exactly what train_denoiser draws
        idx, sig, noi = [], [], []
        for j in range(K):
            idx.append(torch.randint(sizes[j], (s.batch_size,), generator=gens[j], device=dev))
            sig.append(training_sigmas(s.framework, s.batch_size, generator=gens[j], p_mean=s.p_mean, p_std=s.p_std))
            noi.append(torch.randn((s.batch_size,) + event_shape, generator=gens[j], device=dev))
        x0 = data_all[torch.stack(idx) + offsets]                      # (K, B, *event)
        return models[0].loss(x0, torch.stack(sig), torch.stack(noi), sigma_data=sd,
                              f=lambda x, c_noise: batched(params, buffers, x, c_noise))   # (K,)

    def clip(max_norm):                  # clip_grad_norm_, each model over its own slices
        views = [[p.grad[j] for p in plist] for j in range(K)]
        norms = torch.stack(torch._foreach_norm([v for vs in views for v in vs])).reshape(K, -1)
        coef = torch.clamp(max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6), max=1.0)
        for j in range(K):
            torch._foreach_mul_(views[j], coef[j])

    def after_step(step):
        if step % s.log_every == 0 or step == s.steps or step in ckpt_set:
            log.flush(step)
        if step in ckpt_set:
            callback(step, denoisers())

    log = _LossLog(histories, dev, progress=progress, total=s.steps, start=0,
                   desc=f"train {K} x {s.net}/{s.framework}")
    try:
        _optimise(s, opt, plist, [ema_params[n] for n in names], start=0, batch_loss=batch_loss, clip=clip,
                  log=log, after_step=after_step)
    finally:
        log.close()

    wall = time.perf_counter() - t_start
    final = denoisers()
    results = []
    for k in range(K):
        raw = copy.deepcopy(models[k])
        with torch.no_grad():
            for n, p in raw.net.named_parameters():
                p.copy_(params[n][k].detach())
        results.append(TrainResult(denoiser=final[k], loss_history=histories[k], config=configs[k],
                                   step=s.steps, outdir=None, wall_time_s=wall, model=raw.to(dev).eval()))
    return results
