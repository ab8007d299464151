"""One network: :func:`train_denoiser` (resumable from ``outdir``, bit-identical to an
uninterrupted run; class-conditional with ``labels``; fine-tuning with ``init_from``),
:func:`load_denoiser` and the fingerprints that identify a run."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .._checks import check_data, check_int, check_labels
from .._io import atomic_torch_save, atomic_write, make_outdir
from .._procs import deferred_interrupts
from ..data import load_dataset
from ..networks import MLP, NetworkDenoiser, Preconditioned, build_network
from .loop import (
    TrainResult,
    _adam,
    _auto_sigma_data,
    _check_checkpoints,
    _LossLog,
    _optimise,
    _resolve_device,
    _run_config,
    _with_threads,
    training_sigmas,
)
from .settings import _DEFAULT, TrainSettings

__all__ = ["train_denoiser", "load_denoiser", "weights_fingerprint"]

# What a setting added later meant for runs saved before it existed.
_BEFORE_THE_OPTION = {"norm": "group"}

# Settings that define the run: resuming requires them unchanged (steps may grow).
_IDENTITY = (
    "data_fingerprint",
    "data_shape",
    "net",
    "width",
    "depth",
    "norm",
    "framework",
    "seed",
    "batch_size",
    "lr",
    "warmup",
    "ema",
    "grad_clip",
    "sigma_data",
    "p_mean",
    "p_std",
    "device",
    "num_classes",
    "label_dropout",
    "labels_fingerprint",
    "init_fingerprint",
)
_FORMAT = 1


def _ema_name(step: int) -> str:
    return f"ema_{step:07d}.pt"


def train_denoiser(
    data,
    *,
    steps: int = _DEFAULT.steps,
    net: str = _DEFAULT.net,
    width: int | None = _DEFAULT.width,
    depth: int | None = _DEFAULT.depth,
    norm: str = _DEFAULT.norm,
    framework: str = _DEFAULT.framework,
    seed: int = _DEFAULT.seed,
    batch_size: int = _DEFAULT.batch_size,
    lr: float = _DEFAULT.lr,
    warmup: int = _DEFAULT.warmup,
    ema: float = _DEFAULT.ema,
    grad_clip: float | None = _DEFAULT.grad_clip,
    sigma_data=_DEFAULT.sigma_data,
    p_mean: float = _DEFAULT.p_mean,
    p_std: float = _DEFAULT.p_std,
    device=_DEFAULT.device,
    outdir=None,
    checkpoint_steps: Sequence[int] = (),
    save_every: int = _DEFAULT.save_every,
    callback: Callable | None = None,
    progress: bool = True,
    log_every: int = _DEFAULT.log_every,
    num_threads: int | None = None,
    labels=None,
    num_classes: int | None = None,
    label_dropout: float = _DEFAULT.label_dropout,
    init_from=None,
    settings: TrainSettings | None = None,
) -> TrainResult:
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
    norm : the U-Net's normalisation, ``"group"`` (GroupNorm, default) or ``"none"``.
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
    settings : a :class:`TrainSettings` to train with instead of the keyword settings above
        (``steps`` ... ``label_dropout``), which must then be left at their defaults. Every
        default above is :class:`TrainSettings`'s.

    Returns
    -------
    TrainResult with ``.denoiser``, ``.loss_history``, ``.config``.
    """
    given = dict(
        steps=steps,
        net=net,
        width=width,
        depth=depth,
        norm=norm,
        framework=framework,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema=ema,
        grad_clip=grad_clip,
        sigma_data=sigma_data,
        p_mean=p_mean,
        p_std=p_std,
        label_dropout=label_dropout,
        device=device,
        log_every=log_every,
        save_every=save_every,
    )
    return _with_threads(
        num_threads,
        lambda: _train(
            data,
            _settings(settings, given),
            outdir=outdir,
            checkpoint_steps=checkpoint_steps,
            callback=callback,
            progress=progress,
            labels=labels,
            num_classes=num_classes,
            init_from=init_from,
        ),
    )


def _settings(settings: TrainSettings | None, given: dict) -> TrainSettings:
    """The run's settings: ``settings``, or the keyword arguments ``given`` (one per field)."""
    assert set(given) == {f.name for f in dataclasses.fields(TrainSettings)}
    if settings is None:
        return TrainSettings(**given)
    if not isinstance(settings, TrainSettings):
        raise ValueError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
    changed = [k for k, v in given.items() if v != getattr(_DEFAULT, k)]
    if changed:
        raise ValueError(
            f"settings: given together with {', '.join(changed)}; put them in the settings (settings.replace(...))"
        )
    return settings


def _train(
    data, s: TrainSettings, *, outdir, checkpoint_steps, callback, progress, labels, num_classes, init_from
) -> TrainResult:
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
            raise ValueError(
                f"num_classes: fine-tuning keeps the source model's num_classes = "
                f"{source.num_classes!r}; got {num_classes!r} (leave it unset)"
            )
        num_classes = source.num_classes
        if num_classes is not None and labels is None:
            raise ValueError(
                f"labels: the source model is class-conditional ({num_classes} classes); fine-tuning it needs labels"
            )
        if num_classes is None and labels is not None:
            raise ValueError(
                "labels: the source model is unconditional; a class-conditional network "
                "cannot be fine-tuned from it (train one from scratch with labels)"
            )
    label_dropout = None
    if labels is not None:
        lab = torch.as_tensor(labels)
        if lab.ndim != 1 or lab.shape[0] != data.shape[0]:
            raise ValueError(
                f"labels: expected ({data.shape[0]},) labels, one per row of data, got shape {tuple(lab.shape)}"
            )
        if num_classes is None:
            lab = check_labels(lab, 2**62, data.shape[0], "labels")  # integers >= 0
            num_classes = int(lab.max()) + 1
        num_classes = check_int(num_classes, "num_classes")
        labels = check_labels(lab, num_classes, data.shape[0], "labels")
        label_dropout = s.label_dropout
    elif num_classes is not None:
        raise ValueError("num_classes: given without labels; pass labels= to train a class-conditional network")
    if s.sigma_data == "auto":
        s = s.replace(sigma_data=_auto_sigma_data(data))
    dev = _resolve_device(s.device)

    model = build_network(
        s.net,
        event_shape,
        width=s.width,
        depth=s.depth,
        framework=s.framework,
        sigma_data=s.sigma_data,
        seed=s.seed,
        num_classes=num_classes,
        norm=s.norm,
    )
    if source is not None:
        model.load_state_dict(source.state_dict())
        init_fp = weights_fingerprint(model)
    config = _run_config(
        s,
        data,
        spec,
        model,
        dev,
        checkpoint_steps,
        save_every=s.save_every,
        num_classes=num_classes,
        label_dropout=label_dropout,
        labels_fingerprint=None if labels is None else _labels_fingerprint(labels),
        init_fingerprint=init_fp,
        init_from=source_name,
    )

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
        make_outdir(outdir)
        state_file = outdir / "state.pt"
        if state_file.exists():
            state = _load_file(state_file, ("step", "model", "ema", "opt", "gen", "history", "config"), dev)
            old = state["config"]
            diff = [k for k in _IDENTITY if old.get(k, _BEFORE_THE_OPTION.get(k)) != config.get(k)]
            if diff:
                raise ValueError(
                    f"outdir: {outdir} holds a different run ({', '.join(f'{k}: {old.get(k)!r} there, {config.get(k)!r} here' for k in diff)}); "
                    "use another outdir or remove it"
                )
            if state["step"] > s.steps:
                raise ValueError(
                    f"steps: {outdir} already holds {state['step']} steps, more than "
                    f"steps = {s.steps}; load an earlier checkpoint with load_denoiser(DIR, step=...)"
                )
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
        meta = {
            "format": _FORMAT,
            "config": config,
            "step": step,
            "loss_history": history,
            "checkpoints": saved_ckpts,
            "files": {"final": "model.pt", "state": "state.pt"},
            "status": "finished" if step == s.steps else "running",
        }
        with deferred_interrupts():  # the three files of one step, or none of them (a signal waits)
            atomic_torch_save(
                {
                    "step": step,
                    "model": model.state_dict(),
                    "ema": ema_model.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "history": history,
                    "config": config,
                    "checkpoints": saved_ckpts,
                },
                outdir / "state.pt",
            )
            atomic_torch_save({"step": step, "config": config, "ema": ema_model.state_dict()}, outdir / "model.pt")
            atomic_write(outdir / "config.json", json.dumps(meta, indent=2))

    def batch_loss(k):
        idx = torch.randint(N, (s.batch_size,), generator=gen, device=dev)
        x0 = data_dev[idx]
        sigma = training_sigmas(s.framework, s.batch_size, generator=gen, p_mean=s.p_mean, p_std=s.p_std)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        label = None
        if labels_dev is not None:  # label dropout: the "no label" token num_classes
            drop = torch.rand(s.batch_size, generator=gen, device=dev) < label_dropout
            label = torch.where(drop, num_classes, labels_dev[idx])
        return model.loss(x0, sigma, noise, label)

    def after_step(step):
        if step % s.log_every == 0 or step == s.steps or step in ckpt_set or step % s.save_every == 0:
            log.flush(step)
        if step in ckpt_set:
            if outdir is not None:
                atomic_torch_save(
                    {"step": step, "config": config, "ema": ema_model.state_dict()}, outdir / _ema_name(step)
                )
                saved_ckpts.append(step)
                write_outputs(step)
            if callback is not None:
                callback(step, ema_denoiser())
        elif step % s.save_every == 0 and step != s.steps:
            write_outputs(step)

    log = _LossLog([history], dev, progress=progress, total=s.steps, start=done, desc=f"train {s.net}/{s.framework}")
    model.train()
    try:
        _optimise(
            s,
            opt,
            params,
            list(ema_model.parameters()),
            start=done,
            batch_loss=batch_loss,
            clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm),
            log=log,
            after_step=after_step,
        )
        if done < s.steps or not (outdir is not None and (outdir / "model.pt").exists()):
            write_outputs(s.steps)
    except KeyboardInterrupt:  # the last saved state stays as it is; the same call resumes from it
        with deferred_interrupts():
            _mark_interrupted(outdir)
        raise
    finally:
        log.close()
    model.eval()
    return TrainResult(
        denoiser=ema_denoiser(),
        loss_history=history,
        config=config,
        step=s.steps,
        outdir=outdir,
        wall_time_s=time.perf_counter() - t_start,
        model=model,
    )


def _fine_tuning_settings(s: TrainSettings, source: Preconditioned, event_shape) -> TrainSettings:
    """The settings of a run fine-tuned from ``source``: its architecture (a setting left at its
    default yields to the source's value; one given otherwise must equal it)."""
    sm = source.net
    src = dict(
        net="mlp" if isinstance(sm, MLP) else "unet",
        width=int(sm.width),
        depth=int(getattr(sm, "depth", 0)) or None,
        norm=getattr(sm, "norm_kind", "group"),
        framework=source.framework,
        sigma_data=source.sigma_data,
    )
    if src["net"] == "mlp":
        fits = math.prod(event_shape) == sm.dim
    else:
        fits = len(event_shape) == 3 and event_shape[0] == sm.channels and min(event_shape[1:]) == sm.size
    if not fits:
        what = f"{sm.dim} values" if src["net"] == "mlp" else f"{sm.channels}-channel {sm.size} px images"
        raise ValueError(f"init_from: the source model was built for {what}, the data have event shape {event_shape}")
    for k, v in src.items():
        given = getattr(s, k)
        if given != getattr(_DEFAULT, k) and given != v:
            raise ValueError(f"{k}: fine-tuning keeps the source model's {k} = {v!r}; got {given!r} (leave it unset)")
    return s.replace(**src)


def _mark_interrupted(outdir) -> None:
    """``config.json``'s status set to "interrupted" (its step and files are the last saved ones)."""
    meta_file = None if outdir is None else Path(outdir) / "config.json"
    if meta_file is None or not meta_file.is_file():
        return
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):  # pragma: no cover - written atomically by this module
        return
    meta["status"] = "interrupted"
    atomic_write(meta_file, json.dumps(meta, indent=2))


def _load_file(path: Path, keys, device="cpu") -> dict:
    """A ``.pt`` file written by :func:`train_denoiser`, with the entries ``keys``; a truncated,
    corrupt or foreign file is a ``ValueError`` naming it."""
    try:
        saved = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ...
        raise ValueError(
            f"{path}: cannot be read as a saved training file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is truncated or corrupt, "
            "retrain or remove it"
        ) from None
    missing = [k for k in keys if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"{path}: not a file saved by train_denoiser (lacks {', '.join(missing)})")
    return saved


def load_denoiser(outdir, step: int | None = None, *, device="cpu") -> NetworkDenoiser:
    """The EMA denoiser saved by :func:`train_denoiser` in ``outdir``: the final one, or the
    checkpoint at ``step`` (one of the ``checkpoint_steps`` of the run). A missing, truncated or
    corrupt file, or weights that do not fit the recorded architecture, raise ``ValueError``
    naming the file."""
    outdir = Path(outdir)
    meta_file = outdir / "config.json"
    if not meta_file.is_file():
        raise ValueError(f"outdir: {outdir} holds no trained model (no config.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{meta_file}: cannot be read as JSON ({exc}); it is truncated or corrupt") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file}: not a config.json written by train_denoiser")
    if step is None:
        f = outdir / "model.pt"
    else:
        f = outdir / _ema_name(check_int(step, "step"))
        if not f.exists():
            raise ValueError(
                f"step: no checkpoint at step {step} in {outdir}; saved steps: "
                f"{meta.get('checkpoints', [])} (and the final model, step=None)"
            )
    if not f.is_file():
        raise ValueError(f"{f}: missing (the run in {outdir} saved no model there)")
    saved = _load_file(f, ("step", "config", "ema"))
    cfg = saved["config"]
    try:
        model = build_network(
            cfg["net"],
            cfg["event_shape"],
            width=cfg["width"],
            depth=cfg["depth"] if cfg["net"] == "mlp" else None,
            framework=cfg["framework"],
            sigma_data=cfg["sigma_data"],
            num_classes=cfg.get("num_classes"),
            norm=cfg.get("norm", _BEFORE_THE_OPTION["norm"]),
        )
        model.load_state_dict(saved["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{f}: its weights do not fit the architecture recorded with them (another network's file?): {why}"
        ) from None
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
        try:
            den = load_denoiser(init_from)
        except ValueError as exc:  # name the argument the caller gave
            raise ValueError(f"init_from: {str(exc).removeprefix('outdir: ')}") from None
        return copy.deepcopy(den.model).cpu(), str(init_from)
    if isinstance(init_from, TrainResult):
        init_from = init_from.denoiser
    if isinstance(init_from, NetworkDenoiser):
        return copy.deepcopy(init_from.model).cpu(), repr(init_from)
    if isinstance(init_from, Preconditioned):
        return copy.deepcopy(init_from).cpu(), "Preconditioned module"
    raise ValueError(
        f"init_from: expected an outdir of train_denoiser, a NetworkDenoiser, a TrainResult "
        f"or a Preconditioned module, got {type(init_from).__name__}"
    )
