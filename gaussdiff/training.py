r"""Training small denoising networks: one loss for three parameterisations, Adam, EMA,
gradient clipping, resumable checkpoints.

The loss (Karras et al. 2022, eq. 8 with their weighting) is written in terms of the raw
network output ``F`` and the scalings of :meth:`gaussdiff.networks.Preconditioned.scalings`:

.. math:: L = E_{\sigma, x_0, n} \big\| F(c_{in} x, c_{noise}) - (x_0 - c_{skip} x) / c_{out} \big\|^2,
          \qquad x = x_0 + \sigma n,

which equals :math:`\lambda(\sigma) \|D(x, \sigma) - x_0\|^2` with :math:`\lambda = 1/c_{out}^2`.
For ``"edm"`` this is EDM's loss with :math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2) /
(\sigma \sigma_d)^2` and :math:`\ln \sigma \sim N(P_{mean}, P_{std}^2)`; for ``"vp"`` it is the
DDPM noise-prediction loss :math:`\|\epsilon - n\|^2` with :math:`t \sim U(\epsilon_t, 1)` on the
continuous VP schedule; for ``"flow"`` the rectified-flow loss :math:`\|v - (n - x_0)\|^2` with
:math:`t \sim U(0, 1)`. Only the law of sigma differs (:func:`training_sigmas`).

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
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ._checks import check_data, check_int, check_positive
from ._io import atomic_torch_save, atomic_write
from .data import data_fingerprint, load_dataset
from .networks import FRAMEWORKS, NETS, NetworkDenoiser, Preconditioned, build_network
from .conditional import _check_labels
from .schedules import VP

__all__ = ["train_denoiser", "train_ensemble", "load_denoiser", "TrainResult", "denoising_loss", "training_sigmas",
           "TRAIN_DEFAULTS", "weights_fingerprint"]

#: Defaults of :func:`train_denoiser` (also the command line's), in one place.
TRAIN_DEFAULTS = dict(steps=4000, net="mlp", width=None, depth=None, framework="edm", seed=0,
                      batch_size=256, lr=1e-3, warmup=100, ema=0.999, grad_clip=1.0,
                      sigma_data="auto", p_mean=-1.2, p_std=1.2, device="cpu", log_every=50,
                      save_every=1000, label_dropout=0.1)

# Arguments that define the run: resuming requires them unchanged (steps may grow).
_IDENTITY = ("data_fingerprint", "data_shape", "net", "width", "depth", "framework", "seed",
             "batch_size", "lr", "warmup", "ema", "grad_clip", "sigma_data", "p_mean", "p_std",
             "device", "num_classes", "label_dropout", "labels_fingerprint", "init_fingerprint")
_FORMAT = 1


def training_sigmas(framework: str, batch: int, *, generator: torch.Generator,
                    p_mean: float = -1.2, p_std: float = 1.2, device=None) -> torch.Tensor:
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
    r"""Mean over the batch and entries of :math:`\|F(c_{in} x, c_{noise}) - (x_0 - c_{skip} x)/c_{out}\|^2`
    with :math:`x = x_0 + \sigma n` (module docstring); the target is ``x0``'s EDM target, the
    noise ``n`` (VP) or the velocity ``n - x0`` (flow).

    Parameters
    ----------
    x0 : (B, *event_shape) clean data. sigma : (B,). noise : (B, *event_shape) standard normal.
    label : None, or (B,) integers ``0..C`` for a class-conditional model (``C``: no label).
    """
    shape = (-1,) + (1,) * (x0.ndim - 1)
    x = x0 + sigma.reshape(shape) * noise
    c_skip, c_out, c_in, c_noise = model.scalings(sigma)
    target = (x0 - c_skip.reshape(shape) * x) / c_out.reshape(shape)
    out = model._f(c_in.reshape(shape) * x, c_noise, label)
    return (out - target).square().mean()


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


def _resolve_device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _ema_name(step: int) -> str:
    return f"ema_{step:07d}.pt"


def train_denoiser(data, *, steps: int = TRAIN_DEFAULTS["steps"], net: str = "mlp",
                   width: int | None = None, depth: int | None = None, framework: str = "edm",
                   seed: int = 0, batch_size: int = 256, lr: float = 1e-3, warmup: int = 100,
                   ema: float = 0.999, grad_clip: float | None = 1.0, sigma_data="auto",
                   p_mean: float = -1.2, p_std: float = 1.2, device="cpu",
                   outdir=None, checkpoint_steps: Sequence[int] = (), save_every: int = 1000,
                   callback: Callable | None = None, progress: bool = True,
                   log_every: int = 50, num_threads: int | None = None, labels=None,
                   num_classes: int | None = None, label_dropout: float = TRAIN_DEFAULTS["label_dropout"],
                   init_from=None) -> TrainResult:
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
        guidance (ignored without labels).
    init_from : fine-tune: start from a trained model, given as an ``outdir`` of
        :func:`train_denoiser` (its final EMA), a :class:`~gaussdiff.networks.NetworkDenoiser`,
        a :class:`TrainResult` (its EMA denoiser) or a :class:`~gaussdiff.networks.Preconditioned`
        module. The architecture (``net``, ``width``, ``depth``, ``framework``, ``sigma_data``,
        ``num_classes``) is the source's: leave them at their defaults or give the same values.
        Model and EMA start from the source's weights, Adam from zero; ``seed`` seeds the batches.
        A source with labels needs ``labels`` and one without refuses them. Resuming checks that
        the source is the same (a fingerprint of its weights).

    Returns
    -------
    TrainResult with ``.denoiser``, ``.loss_history``, ``.config``.
    """
    if num_threads is None:
        return _train(data, locals())
    old_threads = torch.get_num_threads()
    torch.set_num_threads(check_int(num_threads, "num_threads"))
    try:
        return _train(data, locals())
    finally:
        torch.set_num_threads(old_threads)


def _train(data, kw) -> TrainResult:
    (steps, net, width, depth, framework, seed, batch_size, lr, warmup, ema, grad_clip, sigma_data,
     p_mean, p_std, device, outdir, checkpoint_steps, save_every, callback, progress, log_every) = (
        kw[k] for k in ("steps", "net", "width", "depth", "framework", "seed", "batch_size", "lr",
                        "warmup", "ema", "grad_clip", "sigma_data", "p_mean", "p_std", "device",
                        "outdir", "checkpoint_steps", "save_every", "callback", "progress",
                        "log_every"))
    labels, num_classes, label_dropout, init_from = (kw[k] for k in ("labels", "num_classes",
                                                                     "label_dropout", "init_from"))
    t_start = time.perf_counter()
    spec = None
    if isinstance(data, (str, os.PathLike)):
        spec = str(data)
        data = load_dataset(spec)[0]
    data = check_data(data, "data").to(torch.float32)
    steps = check_int(steps, "steps", minimum=0)
    if net not in NETS:
        raise ValueError(f"net: must be one of {NETS}, got {net!r}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {framework!r}")
    batch_size = check_int(batch_size, "batch_size")
    warmup = check_int(warmup, "warmup", minimum=0)
    log_every = check_int(log_every, "log_every")
    save_every = check_int(save_every, "save_every")
    lr = check_positive(lr, "lr")
    ema = float(ema)
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema: the decay must be in [0, 1), got {ema!r}")
    if grad_clip is not None:
        grad_clip = check_positive(grad_clip, "grad_clip")
    p_std = check_positive(p_std, "p_std")
    checkpoint_steps = sorted({check_int(s, "checkpoint_steps") for s in checkpoint_steps})
    if checkpoint_steps and checkpoint_steps[-1] > steps:
        raise ValueError(f"checkpoint_steps: {checkpoint_steps[-1]} is beyond steps = {steps}")
    if checkpoint_steps and outdir is None and callback is None:
        raise ValueError("checkpoint_steps: need an outdir (to save them) or a callback")
    event_shape = tuple(data.shape[1:])
    source = None
    if init_from is not None:
        source, source_name = _source_model(init_from)
        sm = source.net
        src = dict(net="mlp" if type(sm).__name__ == "MLP" else "unet", width=int(sm.width),
                   depth=int(getattr(sm, "depth", 0)) or None, framework=source.framework,
                   sigma_data=source.sigma_data, num_classes=source.num_classes)
        if src["net"] == "mlp":
            fits = math.prod(event_shape) == sm.dim
        else:
            fits = len(event_shape) == 3 and event_shape[0] == sm.channels and min(event_shape[1:]) == sm.size
        if not fits:
            what = f"{sm.dim} values" if src["net"] == "mlp" else f"{sm.channels}-channel {sm.size} px images"
            raise ValueError(f"init_from: the source model was built for {what}, the data have event "
                             f"shape {event_shape}")
        given = dict(net=net, width=width, depth=depth, framework=framework, sigma_data=sigma_data,
                     num_classes=num_classes)
        defaults = dict(net="mlp", width=None, depth=None, framework="edm", sigma_data="auto", num_classes=None)
        for k, v in given.items():
            if v != defaults[k] and v != src[k]:     # a default yields to the source's value
                raise ValueError(f"{k}: fine-tuning keeps the source model's {k} = {src[k]!r}; got {v!r} "
                                 "(leave it unset)")
        net, width, depth, framework = src["net"], src["width"], src["depth"], src["framework"]
        sigma_data, num_classes = src["sigma_data"], src["num_classes"]
        if num_classes is not None and labels is None:
            raise ValueError(f"labels: the source model is class-conditional ({num_classes} classes); "
                             "fine-tuning it needs labels")
        if num_classes is None and labels is not None:
            raise ValueError("labels: the source model is unconditional; a class-conditional network "
                             "cannot be fine-tuned from it (train one from scratch with labels)")
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
        label_dropout = float(label_dropout)
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout: must be in [0, 1), got {label_dropout!r}")
    elif num_classes is not None and init_from is None:
        raise ValueError("num_classes: given without labels; pass labels= to train a class-conditional network")
    else:
        label_dropout = None
    if sigma_data == "auto":
        sigma_data = float(data.std()) if data.numel() > 1 else 0.5
        sigma_data = max(round(sigma_data, 6), 1e-3)
    sigma_data = check_positive(sigma_data, "sigma_data")
    dev = _resolve_device(device)

    model = build_network(net, event_shape, width=width, depth=depth, framework=framework,
                          sigma_data=sigma_data, seed=seed, num_classes=num_classes)
    init_fp = None
    if source is not None:
        model.load_state_dict(source.state_dict())
        init_fp = weights_fingerprint(model)
    mod = model.net
    config = dict(data=spec, data_fingerprint=data_fingerprint(data), data_shape=list(data.shape),
                  n=int(data.shape[0]), event_shape=list(event_shape), net=net,
                  width=int(mod.width), depth=int(getattr(mod, "depth", 0)) or None,
                  framework=framework, seed=int(seed), batch_size=batch_size, lr=lr, warmup=warmup,
                  ema=ema, grad_clip=grad_clip, sigma_data=sigma_data, p_mean=float(p_mean),
                  p_std=p_std, device=str(dev), steps=steps, checkpoint_steps=checkpoint_steps,
                  save_every=save_every, log_every=log_every,
                  parameters=sum(p.numel() for p in model.parameters()),
                  num_classes=num_classes, label_dropout=label_dropout,
                  labels_fingerprint=None if labels is None else _labels_fingerprint(labels),
                  init_fingerprint=init_fp, init_from=None if source is None else source_name)
    from . import __version__
    config["version"] = __version__

    model.to(dev)
    ema_model = copy.deepcopy(model)
    for p in ema_model.parameters():
        p.requires_grad_(False)
    try:  # the fused kernel (CPU and CUDA, torch >= 2.4) is ~6x faster for small networks
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
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
            if state["step"] > steps:
                raise ValueError(f"steps: {outdir} already holds {state['step']} steps, more than "
                                 f"steps = {steps}; load an earlier checkpoint with load_denoiser(DIR, step=...)")
            model.load_state_dict(state["model"])
            ema_model.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"].cpu())
            history = state["history"]
            done = int(state["step"])
            saved_ckpts = list(state.get("checkpoints", []))

    params = [p for p in model.parameters()]
    ema_params = [p for p in ema_model.parameters()]
    N = data.shape[0]
    data_dev = data.to(dev)
    labels_dev = None if labels is None else labels.to(dev)

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

    bar = None
    if progress and done < steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=done, desc=f"train {net}/{framework}", unit="step",
                   dynamic_ncols=True, leave=True)
    acc = torch.zeros((), device=dev)
    acc_n, last_flush = 0, done
    ckpt_set = set(checkpoint_steps)
    cur_lr = None

    def flush(step):
        nonlocal acc_n, last_flush
        if acc_n:
            mean = float(acc) / acc_n                         # the one device sync per interval
            history["step"].append(step)
            history["loss"].append(mean)
            if bar is not None:
                bar.update(step - last_flush)
                bar.set_postfix(loss=f"{mean:.4f}")
            acc.zero_()
            acc_n, last_flush = 0, step

    model.train()
    try:
        for k in range(done, steps):
            # Learning rate: linear ramp over `warmup` steps, then constant (depends on k only).
            new_lr = lr * min(1.0, (k + 1) / warmup) if warmup else lr
            if new_lr != cur_lr:
                for g in opt.param_groups:
                    g["lr"] = new_lr
                cur_lr = new_lr
            idx = torch.randint(N, (batch_size,), generator=gen, device=dev)
            x0 = data_dev[idx]
            sigma = training_sigmas(framework, batch_size, generator=gen, p_mean=p_mean, p_std=p_std)
            noise = torch.randn(x0.shape, generator=gen, device=dev)
            label = None
            if labels_dev is not None:         # label dropout: the "no label" token num_classes
                drop = torch.rand(batch_size, generator=gen, device=dev) < label_dropout
                label = torch.where(drop, num_classes, labels_dev[idx])
            loss = denoising_loss(model, x0, sigma, noise, label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            with torch.no_grad():
                beta = min(ema, (1 + k) / (10 + k))
                torch._foreach_lerp_(ema_params, params, 1.0 - beta)
                acc += loss.detach()
            acc_n += 1
            step = k + 1
            if step % log_every == 0 or step == steps or step in ckpt_set or step % save_every == 0:
                flush(step)
            if step in ckpt_set:
                if outdir is not None:
                    atomic_torch_save({"step": step, "config": config, "ema": ema_model.state_dict()},
                                 outdir / _ema_name(step))
                    saved_ckpts.append(step)
                    write_outputs(step)
                if callback is not None:
                    callback(step, ema_denoiser())
            elif step % save_every == 0 and step != steps:
                write_outputs(step)
        if done < steps or not (outdir is not None and (outdir / "model.pt").exists()):
            write_outputs(steps)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return TrainResult(denoiser=ema_denoiser(), loss_history=history, config=config, step=steps,
                       outdir=outdir, wall_time_s=time.perf_counter() - t_start, model=model)


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

def train_ensemble(datasets, *, seeds, steps: int = TRAIN_DEFAULTS["steps"], net: str = "mlp",
                   width: int | None = None, depth: int | None = None, framework: str = "edm",
                   batch_size: int = 256, lr: float = 1e-3, warmup: int = 100, ema: float = 0.999,
                   grad_clip: float | None = 1.0, sigma_data="auto", p_mean: float = -1.2,
                   p_std: float = 1.2, device="cpu", checkpoint_steps: Sequence[int] = (),
                   callback: Callable | None = None, progress: bool = True, log_every: int = 50,
                   num_threads: int | None = None) -> list[TrainResult]:
    r"""Train ``K = len(datasets)`` networks of one architecture, one per data set, as one
    vectorised model, and return one :class:`TrainResult` per data set.

    Model ``k`` is exactly the run ``train_denoiser(datasets[k], seed=seeds[k], ...)`` with the
    same settings: the same initial weights, its own ``sigma_data`` (``"auto"``: the standard
    deviation of its own data set), and its own ``torch.Generator`` seeded with ``seeds[k]``,
    from which it draws the same indices, sigmas and noise in the same order. Only the
    arithmetic is batched: the parameters of the K networks are stacked
    (``torch.func.stack_module_state``) and one forward and backward pass runs them all
    (``torch.func.functional_call`` under ``torch.vmap``), one fused Adam updates the stacked
    parameters (Adam, the learning-rate warmup and the EMA are elementwise, so stacking changes
    nothing), and the gradient norm is clipped per model, over that model's slice only, so the
    models never interact. The result agrees with K separate runs up to the order of
    floating-point operations (about ``1e-6`` relative on the weights after 50 steps on a
    CPU). The point is a GPU, where one small network leaves the device idle: K networks cost
    about the kernel launches of one. On a CPU it is no faster than K separate runs.

    Training is in memory: no ``outdir``, no resume, no class labels, no fine-tuning (use
    :func:`train_denoiser` for those).

    Parameters
    ----------
    datasets : sequence of K >= 1 training sets ``(N_k, *event_shape)`` (tensors, arrays or data
        specs), all with the same event shape; their sizes ``N_k`` may differ.
    seeds : K integers, ``seeds[k]`` seeds model ``k``'s weights and its generator.
    steps, net, width, depth, framework, batch_size, lr, warmup, ema, grad_clip, p_mean, p_std :
        as in :func:`train_denoiser`, shared by all models. ``net="unet"`` is supported
        (GroupNorm and convolutions vectorise).
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
    kw = dict(locals())
    if num_threads is None:
        return _train_ensemble(kw)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(check_int(num_threads, "num_threads"))
    try:
        return _train_ensemble(kw)
    finally:
        torch.set_num_threads(old_threads)


def _ensemble_scalings(base: Preconditioned, sigma: torch.Tensor, sd: torch.Tensor, sd2: torch.Tensor):
    """:meth:`Preconditioned.scalings` for ``(K, B)`` sigmas and a per-model ``sigma_data``
    (``sd``, ``sd2 = float32(sd ** 2)``: ``(K, 1)``), with the same float32 arithmetic as the
    Python-float ``sigma_data`` of a single model."""
    if base.framework == "edm":
        r = torch.rsqrt(sigma ** 2 + sd2)
        return sd2 * r ** 2, sigma * sd * r, r, torch.log(sigma) / 4
    return base.scalings(sigma)                      # vp and flow: elementwise, no sigma_data


def _train_ensemble(kw) -> list[TrainResult]:
    from torch.func import functional_call, stack_module_state

    t_start = time.perf_counter()
    datasets, seeds = kw["datasets"], kw["seeds"]
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
    steps = check_int(kw["steps"], "steps", minimum=0)
    net, framework = kw["net"], kw["framework"]
    if net not in NETS:
        raise ValueError(f"net: must be one of {NETS}, got {net!r}")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {framework!r}")
    batch_size = check_int(kw["batch_size"], "batch_size")
    warmup = check_int(kw["warmup"], "warmup", minimum=0)
    log_every = check_int(kw["log_every"], "log_every")
    lr = check_positive(kw["lr"], "lr")
    ema = float(kw["ema"])
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema: the decay must be in [0, 1), got {ema!r}")
    grad_clip = kw["grad_clip"]
    if grad_clip is not None:
        grad_clip = check_positive(grad_clip, "grad_clip")
    p_mean, p_std = float(kw["p_mean"]), check_positive(kw["p_std"], "p_std")
    checkpoint_steps = sorted({check_int(s, "checkpoint_steps") for s in kw["checkpoint_steps"]})
    if checkpoint_steps and checkpoint_steps[-1] > steps:
        raise ValueError(f"checkpoint_steps: {checkpoint_steps[-1]} is beyond steps = {steps}")
    callback = kw["callback"]
    if checkpoint_steps and callback is None:
        raise ValueError("checkpoint_steps: need a callback (train_ensemble saves no files)")
    sigma_data = kw["sigma_data"]
    if isinstance(sigma_data, str):
        if sigma_data != "auto":
            raise ValueError(f"sigma_data: 'auto', a number or {K} numbers, got {sigma_data!r}")
        sds = [max(round(float(d.std()) if d.numel() > 1 else 0.5, 6), 1e-3) for d in data]
    elif isinstance(sigma_data, Sequence):
        if len(sigma_data) != K:
            raise ValueError(f"sigma_data: expected one value per data set ({K}), got {len(sigma_data)}")
        sds = list(sigma_data)
    else:
        sds = [sigma_data] * K
    sds = [check_positive(s, "sigma_data") for s in sds]
    dev = _resolve_device(kw["device"])
    width, depth = kw["width"], kw["depth"]

    models = [build_network(net, event_shape, width=width, depth=depth, framework=framework,
                            sigma_data=sd, seed=s) for sd, s in zip(sds, seeds)]
    mod = models[0].net
    from . import __version__
    configs = []
    for k in range(K):
        configs.append(dict(
            data=specs[k], data_fingerprint=data_fingerprint(data[k]), data_shape=list(data[k].shape),
            n=int(data[k].shape[0]), event_shape=list(event_shape), net=net, width=int(mod.width),
            depth=int(getattr(mod, "depth", 0)) or None, framework=framework, seed=seeds[k],
            batch_size=batch_size, lr=lr, warmup=warmup, ema=ema, grad_clip=grad_clip,
            sigma_data=sds[k], p_mean=p_mean, p_std=p_std, device=str(dev), steps=steps,
            checkpoint_steps=checkpoint_steps, save_every=None, log_every=log_every,
            parameters=sum(p.numel() for p in models[k].parameters()), num_classes=None,
            label_dropout=None, labels_fingerprint=None, init_fingerprint=None, init_from=None,
            version=__version__, ensemble=K, ensemble_index=k))

    # The stacked weights (K, ...) as leaves, a weightless copy of the network to call them.
    params, buffers = stack_module_state([m.net for m in models])
    names = list(params)
    params = {n: p.detach().to(dev).requires_grad_(True) for n, p in params.items()}
    buffers = {n: b.to(dev) for n, b in buffers.items()}
    ema_params = {n: p.detach().clone() for n, p in params.items()}
    plist = [params[n] for n in names]
    elist = [ema_params[n] for n in names]
    shell = copy.deepcopy(mod).to("meta")
    base = models[0]

    def one(p, b, x, c_noise):
        return functional_call(shell, (p, b), (x, c_noise))

    batched = torch.vmap(one)
    try:   # a layer without a vmap rule would fail here, before any training
        with torch.no_grad():
            batched(params, buffers, torch.zeros((K, 1) + event_shape, device=dev), torch.zeros(K, 1, device=dev))
    except Exception as exc:  # pragma: no cover - every built-in network vectorises
        raise ValueError(f"net: {net!r} cannot be vectorised with torch.vmap ({exc}); "
                         "train the models separately with train_denoiser") from exc

    try:
        opt = torch.optim.Adam(plist, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch
        opt = torch.optim.Adam(plist, lr=lr)
    gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
    sizes = [int(d.shape[0]) for d in data]
    offsets = torch.tensor([0] + sizes[:-1], device=dev).cumsum(0)[:, None]       # (K, 1)
    data_all = torch.cat(data).to(dev)
    sd = torch.tensor(sds, dtype=torch.float32, device=dev)[:, None]
    sd2 = torch.tensor([s ** 2 for s in sds], dtype=torch.float32, device=dev)[:, None]
    shape = (K, batch_size) + (1,) * len(event_shape)
    histories = [{"step": [], "loss": []} for _ in range(K)]

    def denoisers():
        out = []
        for k in range(K):
            m = copy.deepcopy(models[k])
            with torch.no_grad():
                for n, p in m.net.named_parameters():
                    p.copy_(ema_params[n][k])
            out.append(NetworkDenoiser(m.to(dev), event_shape, config=configs[k]))
        return out

    bar = None
    if kw["progress"] and steps:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"train {K} x {net}/{framework}", unit="step", dynamic_ncols=True, leave=True)
    acc = torch.zeros(K, device=dev)
    acc_n, last_flush = 0, 0
    ckpt_set = set(checkpoint_steps)
    cur_lr = None

    def flush(step):
        nonlocal acc_n, last_flush
        if acc_n:
            means = [v / acc_n for v in acc.tolist()]       # the one device sync per interval
            for h, v in zip(histories, means):
                h["step"].append(step)
                h["loss"].append(v)
            if bar is not None:
                bar.update(step - last_flush)
                bar.set_postfix(loss=f"{sum(means) / K:.4f}")
            acc.zero_()
            acc_n, last_flush = 0, step

    try:
        for k in range(steps):
            new_lr = lr * min(1.0, (k + 1) / warmup) if warmup else lr
            if new_lr != cur_lr:
                for g in opt.param_groups:
                    g["lr"] = new_lr
                cur_lr = new_lr
            # each model draws from its own generator exactly what train_denoiser draws
            idx, sig, noi = [], [], []
            for j in range(K):
                idx.append(torch.randint(sizes[j], (batch_size,), generator=gens[j], device=dev))
                sig.append(training_sigmas(framework, batch_size, generator=gens[j], p_mean=p_mean, p_std=p_std))
                noi.append(torch.randn((batch_size,) + event_shape, generator=gens[j], device=dev))
            x0 = data_all[torch.stack(idx) + offsets]                      # (K, B, *event)
            sigma, noise = torch.stack(sig), torch.stack(noi)
            # denoising_loss, per model
            x = x0 + sigma.reshape(shape) * noise
            c_skip, c_out, c_in, c_noise = _ensemble_scalings(base, sigma, sd, sd2)
            target = (x0 - c_skip.reshape(shape) * x) / c_out.reshape(shape)
            out = batched(params, buffers, c_in.reshape(shape) * x, c_noise)
            losses = (out - target).square().reshape(K, -1).mean(1)          # (K,)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()          # models share nothing: d(sum)/d(theta_k) = dL_k/d(theta_k)
            if grad_clip is not None:        # clip_grad_norm_, each model over its own slices
                views = [[p.grad[j] for p in plist] for j in range(K)]
                norms = torch.stack(torch._foreach_norm([v for vs in views for v in vs])).reshape(K, -1)
                coef = torch.clamp(grad_clip / (torch.linalg.vector_norm(norms, dim=1) + 1e-6), max=1.0)
                for j in range(K):
                    torch._foreach_mul_(views[j], coef[j])
            opt.step()
            with torch.no_grad():
                beta = min(ema, (1 + k) / (10 + k))
                torch._foreach_lerp_(elist, plist, 1.0 - beta)
                acc += losses.detach()
            acc_n += 1
            step = k + 1
            if step % log_every == 0 or step == steps or step in ckpt_set:
                flush(step)
            if step in ckpt_set:
                callback(step, denoisers())
    finally:
        if bar is not None:
            bar.close()

    wall = time.perf_counter() - t_start
    final = denoisers()
    results = []
    for k in range(K):
        raw = copy.deepcopy(models[k])
        with torch.no_grad():
            for n, p in raw.net.named_parameters():
                p.copy_(params[n][k].detach())
        results.append(TrainResult(denoiser=final[k], loss_history=histories[k], config=configs[k],
                                   step=steps, outdir=None, wall_time_s=wall, model=raw.to(dev).eval()))
    return results
