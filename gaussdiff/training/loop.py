"""What both trainers share: the law of sigma, the loss, the result type, the optimiser, the
loop (warm-up, Adam, clipping, EMA), the loss log with its progress bar, and the run's
configuration. :mod:`.single` and :mod:`.ensemble` differ only in how they hold parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._checks import check_int
from .._threads import cpu_threads
from .._version import __version__
from ..data import data_fingerprint
from ..networks import FRAMEWORKS, NetworkDenoiser, Preconditioned
from ..schedules import VP
from .settings import _DEFAULT, TrainSettings

__all__ = ["TrainResult", "denoising_loss", "training_sigmas"]


def training_sigmas(
    framework: str,
    batch: int,
    *,
    generator: torch.Generator,
    p_mean: float = _DEFAULT.p_mean,
    p_std: float = _DEFAULT.p_std,
    device=None,
) -> torch.Tensor:
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


def denoising_loss(
    model: Preconditioned, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, label: torch.Tensor | None = None
) -> torch.Tensor:
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
    """What :func:`~gaussdiff.training.train_denoiser` returns (and
    :func:`~gaussdiff.training.train_ensemble`, one per model).

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


def _resolve_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _with_threads(num_threads, fn):
    """``fn()`` with torch's CPU thread count set to ``num_threads`` (None: unchanged), restored after."""
    with cpu_threads(num_threads):
        return fn()


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


def _optimise(
    s: TrainSettings,
    opt: torch.optim.Optimizer,
    params: list,
    ema_params: list,
    *,
    start: int,
    batch_loss: Callable,
    clip: Callable,
    log: _LossLog,
    after_step: Callable,
):
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


def _run_config(
    s: TrainSettings,
    data: torch.Tensor,
    spec,
    model: Preconditioned,
    dev,
    checkpoint_steps,
    *,
    save_every,
    num_classes=None,
    label_dropout=None,
    labels_fingerprint=None,
    init_fingerprint=None,
    init_from=None,
    **extra,
) -> dict:
    """The JSON-able configuration of one trained model (what ``config.json`` and
    :attr:`TrainResult.config` hold): the settings as resolved for this model and its data."""
    mod = model.net
    return dict(
        data=spec,
        data_fingerprint=data_fingerprint(data),
        data_shape=list(data.shape),
        n=int(data.shape[0]),
        event_shape=list(data.shape[1:]),
        net=s.net,
        width=int(mod.width),
        depth=int(getattr(mod, "depth", 0)) or None,
        norm=s.norm,
        framework=s.framework,
        seed=s.seed,
        batch_size=s.batch_size,
        lr=s.lr,
        warmup=s.warmup,
        ema=s.ema,
        grad_clip=s.grad_clip,
        sigma_data=s.sigma_data,
        p_mean=s.p_mean,
        p_std=s.p_std,
        device=str(dev),
        steps=s.steps,
        checkpoint_steps=checkpoint_steps,
        save_every=save_every,
        log_every=s.log_every,
        parameters=sum(p.numel() for p in model.parameters()),
        num_classes=num_classes,
        label_dropout=label_dropout,
        labels_fingerprint=labels_fingerprint,
        init_fingerprint=init_fingerprint,
        init_from=init_from,
        version=__version__,
        **extra,
    )
