"""K networks of one architecture, one per data set, trained as one vectorised model
(:func:`train_ensemble`): the same draws as K runs of :func:`~gaussdiff.training.train_denoiser`,
one forward and backward pass for all of them."""

from __future__ import annotations

import copy
import os
import time
from typing import Callable, Sequence

import torch

from .._checks import check_data, check_int
from ..data import load_dataset
from ..networks import NetworkDenoiser, build_network
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

__all__ = ["train_ensemble"]


def train_ensemble(
    datasets,
    *,
    seeds,
    steps: int = _DEFAULT.steps,
    net: str = _DEFAULT.net,
    width: int | None = _DEFAULT.width,
    depth: int | None = _DEFAULT.depth,
    norm: str = _DEFAULT.norm,
    framework: str = _DEFAULT.framework,
    batch_size: int = _DEFAULT.batch_size,
    lr: float = _DEFAULT.lr,
    warmup: int = _DEFAULT.warmup,
    ema: float = _DEFAULT.ema,
    grad_clip: float | None = _DEFAULT.grad_clip,
    sigma_data=_DEFAULT.sigma_data,
    p_mean: float = _DEFAULT.p_mean,
    p_std: float = _DEFAULT.p_std,
    device=_DEFAULT.device,
    checkpoint_steps: Sequence[int] = (),
    callback: Callable | None = None,
    progress: bool = True,
    log_every: int = _DEFAULT.log_every,
    num_threads: int | None = None,
) -> list[TrainResult]:
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
    steps, net, width, depth, norm, framework, batch_size, lr, warmup, ema, grad_clip, p_mean, p_std :
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
    shared = dict(
        steps=steps,
        net=net,
        width=width,
        depth=depth,
        norm=norm,
        framework=framework,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        ema=ema,
        grad_clip=grad_clip,
        p_mean=p_mean,
        p_std=p_std,
        device=device,
        log_every=log_every,
    )
    return _with_threads(
        num_threads,
        lambda: _train_ensemble(
            datasets, seeds, sigma_data, shared, checkpoint_steps=checkpoint_steps, callback=callback, progress=progress
        ),
    )


def _train_ensemble(
    datasets, seeds, sigma_data, shared: dict, *, checkpoint_steps, callback, progress
) -> list[TrainResult]:
    from torch.func import functional_call, stack_module_state

    t_start = time.perf_counter()
    if isinstance(datasets, torch.Tensor) or not isinstance(datasets, Sequence) or isinstance(datasets, str):
        raise ValueError(f"datasets: expected a list of K training sets (one per model), got {type(datasets).__name__}")
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
            raise ValueError(
                f"datasets: every data set needs the same event shape; datasets[0] has "
                f"{event_shape}, datasets[{i}] has {tuple(d.shape[1:])}"
            )
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
    per_model = [s.replace(seed=seed, sigma_data=sd) for seed, sd in zip(seeds, sds)]  # validates each
    dev = _resolve_device(s.device)

    models = [
        build_network(
            m.net,
            event_shape,
            width=m.width,
            depth=m.depth,
            framework=m.framework,
            sigma_data=m.sigma_data,
            seed=m.seed,
            norm=m.norm,
        )
        for m in per_model
    ]
    configs = [
        _run_config(
            m, data[k], specs[k], models[k], dev, checkpoint_steps, save_every=None, ensemble=K, ensemble_index=k
        )
        for k, m in enumerate(per_model)
    ]

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
    try:  # a layer without a vmap rule would fail here, before any training
        with torch.no_grad():
            batched(params, buffers, torch.zeros((K, 1) + event_shape, device=dev), torch.zeros(K, 1, device=dev))
    except Exception as exc:  # pragma: no cover - every built-in network vectorises
        raise ValueError(
            f"net: {s.net!r} cannot be vectorised with torch.vmap ({exc}); "
            "train the models separately with train_denoiser"
        ) from exc

    opt = _adam(plist, s.lr)
    gens = [torch.Generator(device=dev).manual_seed(seed) for seed in seeds]
    sizes = [int(d.shape[0]) for d in data]
    offsets = torch.tensor([0] + sizes[:-1], device=dev).cumsum(0)[:, None]  # (K, 1)
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
        x0 = data_all[torch.stack(idx) + offsets]  # (K, B, *event)
        return models[0].loss(
            x0,
            torch.stack(sig),
            torch.stack(noi),
            sigma_data=sd,
            f=lambda x, c_noise: batched(params, buffers, x, c_noise),
        )  # (K,)

    def clip(max_norm):  # clip_grad_norm_, each model over its own slices
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

    log = _LossLog(histories, dev, progress=progress, total=s.steps, start=0, desc=f"train {K} x {s.net}/{s.framework}")
    try:
        _optimise(
            s,
            opt,
            plist,
            [ema_params[n] for n in names],
            start=0,
            batch_loss=batch_loss,
            clip=clip,
            log=log,
            after_step=after_step,
        )
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
        results.append(
            TrainResult(
                denoiser=final[k],
                loss_history=histories[k],
                config=configs[k],
                step=s.steps,
                outdir=None,
                wall_time_s=wall,
                model=raw.to(dev).eval(),
            )
        )
    return results
